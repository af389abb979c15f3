//! A small persistent compute pool for the llama forward pass.
//!
//! The caller's thread and `size - 1` pool threads share a job of `total` chunks (a chunk is one piece
//! of work the caller defines: a range of matrix rows, a group of attention heads). Chunks are claimed
//! dynamically, so a thread that is not running (its core taken by another process) simply claims
//! nothing and the others do its share; the result never depends on who ran which chunk, because every
//! chunk writes its own outputs and computes them the same way whoever runs it.
//!
//! Claiming: one 64-bit word holds the job's generation (24 bits), how many pool threads may take part
//! (8 bits), its chunk count (16 bits) and the next unclaimed chunk (16 bits). A thread claims with a compare-and-swap that succeeds only while
//! the generation is unchanged and chunks are left, so a thread that was descheduled mid-claim can
//! never take a chunk of a later job. A claimed chunk pins the job: the caller waits until every chunk
//! has finished before it returns (and before it publishes the next job), so the job's closure, which
//! borrows the caller's stack, outlives every use.
//!
//! Waiting, bounded: an idle pool thread spins on the claim word for at most [`SPIN`] (the gaps
//! between the matrix products of one token are a few microseconds), then parks until the next job
//! wakes it; the caller, once it has claimed everything it can, spins the same bounded time for the
//! chunks still running elsewhere and then parks until the last one finishes. Nobody spins without
//! limit, so a machine whose cores are busy elsewhere degrades to about one thread's speed instead of
//! collapsing (spin-waiting threads that were descheduled are what makes OpenMP pools collapse there).
//!
//! Threading: `run` is called from one thread at a time (the engine's); the pool threads are private.

use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle thread spins before it parks.
const SPIN: Duration = Duration::from_micros(60);

type Task = dyn Fn(usize, usize) + Sync;

struct Job {
    /// The job's closure with its lifetime erased (see the module docs for why it stays alive).
    f: *const Task,
    /// The caller, to wake when the last chunk finishes.
    owner: Thread,
}

struct Shared {
    /// generation << 40 | helpers << 32 | total << 16 | next
    claim: AtomicU64,
    /// Chunks finished in the current job.
    done: AtomicUsize,
    /// Written by the caller before it publishes a job, read by threads holding a chunk of it.
    job: UnsafeCell<Option<Job>>,
    /// Per pool thread: parked (or about to park).
    sleeping: Vec<AtomicBool>,
    /// The caller parks (or is about to) until `done` reaches the job's total.
    owner_waiting: AtomicBool,
    /// A chunk panicked.
    panicked: AtomicBool,
    quit: AtomicBool,
}

// SAFETY: `job` is written only by the caller while no chunk is claimed (between jobs) and read only
// by threads holding a claimed chunk of the current job; the claim word's SeqCst accesses order them.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A pool of `size` threads counting the caller's (see the module docs).
pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    handles: Vec<Thread>,
    generation: u32,
}

const fn helpers_of(w: u64) -> usize {
    ((w >> 32) & 0xff) as usize
}
const fn total_of(w: u64) -> usize {
    ((w >> 16) & 0xffff) as usize
}
const fn next_of(w: u64) -> usize {
    (w & 0xffff) as usize
}

impl Pool {
    /// The caller's thread plus `size - 1` pool threads named `idol-llm-N`.
    pub fn new(size: usize) -> std::io::Result<Pool> {
        let n = size.max(1) - 1;
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
            owner_waiting: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            quit: AtomicBool::new(false),
        });
        let mut pool = Pool {
            shared: shared.clone(),
            threads: Vec::with_capacity(n),
            handles: Vec::with_capacity(n),
            generation: 0,
        };
        for i in 0..n {
            let sh = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("idol-llm-{}", i + 1))
                .spawn(move || worker(&sh, i))?;
            pool.handles.push(t.thread().clone());
            pool.threads.push(t);
        }
        Ok(pool)
    }

    /// Threads counting the caller's.
    pub fn size(&self) -> usize {
        self.threads.len() + 1
    }

    /// Run `f(chunk, thread)` for every chunk in `0..total` on up to `threads` threads (the caller's
    /// is thread 0; at most 256); returns when all have finished. `thread` is below `self.size()`, and no two chunks
    /// run on the same `thread` at once. A panic in a chunk is re-raised here.
    pub fn run(&mut self, threads: usize, total: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        let helpers = threads.min(self.size()).clamp(1, 256) - 1;
        if helpers == 0 || total <= 1 {
            (0..total).for_each(|c| f(c, 0));
            return;
        }
        assert!(total < 0x10000, "too many chunks");
        let sh = &*self.shared;
        // SAFETY: no chunk of the previous job is held (it finished before `run` returned), so no
        // thread reads the slot now; the lifetime is erased only for the duration of this call.
        unsafe {
            let f: *const Task = std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &Task>(f);
            *sh.job.get() = Some(Job {
                f,
                owner: std::thread::current(),
            });
        }
        sh.done.store(0, Relaxed);
        self.generation = self.generation.wrapping_add(1) & 0xff_ffff;
        let word =
            ((self.generation as u64) << 40) | ((helpers as u64) << 32) | ((total as u64) << 16);
        sh.claim.store(word, SeqCst);
        for (i, s) in sh.sleeping.iter().enumerate().take(helpers) {
            if s.load(SeqCst) {
                self.handles[i].unpark();
            }
        }
        // our share, claimed like everyone else's (a panic is held until the others are done: they
        // borrow `f`)
        let mut failed = None;
        while let Some(c) = claim(sh, 0) {
            if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c, 0))) {
                failed.get_or_insert(e);
            }
            sh.done.fetch_add(1, SeqCst);
        }
        // wait for the chunks still running elsewhere: spin a little, then park
        let t0 = Instant::now();
        let mut k = 0u32;
        while sh.done.load(SeqCst) < total {
            k = k.wrapping_add(1);
            if !k.is_multiple_of(64) || t0.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            sh.owner_waiting.store(true, SeqCst);
            if sh.done.load(SeqCst) < total {
                std::thread::park_timeout(Duration::from_millis(5));
            }
            sh.owner_waiting.store(false, SeqCst);
        }
        if let Some(e) = failed {
            sh.panicked.store(false, SeqCst);
            std::panic::resume_unwind(e);
        }
        if sh.panicked.swap(false, SeqCst) {
            panic!("a compute thread panicked");
        }
    }
}

/// Claim the next chunk of the current job for thread `me`, if any is left and `me` takes part.
fn claim(sh: &Shared, me: usize) -> Option<usize> {
    let mut w = sh.claim.load(SeqCst);
    loop {
        if next_of(w) >= total_of(w) || me > helpers_of(w) {
            return None;
        }
        match sh.claim.compare_exchange_weak(w, w + 1, SeqCst, SeqCst) {
            Ok(_) => return Some(next_of(w)),
            Err(now) => w = now,
        }
    }
}

fn worker(sh: &Shared, i: usize) {
    let me = i + 1;
    let mut idle_since: Option<Instant> = None;
    let mut k = 0u32;
    loop {
        if sh.quit.load(Relaxed) {
            return;
        }
        if let Some(c) = claim(sh, me) {
            idle_since = None;
            // SAFETY: holding chunk `c` of the current job pins it (module docs).
            let (f, owner) = unsafe {
                let job = (*sh.job.get()).as_ref().expect("a job is published");
                (&*job.f, job.owner.clone())
            };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c, me))).is_err() {
                sh.panicked.store(true, SeqCst);
            }
            let total = total_of(sh.claim.load(SeqCst));
            if sh.done.fetch_add(1, SeqCst) + 1 == total && sh.owner_waiting.load(SeqCst) {
                owner.unpark();
            }
            continue;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        k = k.wrapping_add(1);
        if !k.is_multiple_of(64) || since.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        sh.sleeping[i].store(true, SeqCst);
        let w = sh.claim.load(SeqCst);
        if (next_of(w) >= total_of(w) || me > helpers_of(w)) && !sh.quit.load(SeqCst) {
            std::thread::park();
        }
        sh.sleeping[i].store(false, SeqCst);
        idle_since = None;
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.quit.store(true, SeqCst);
        for h in &self.handles {
            h.unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_chunk_runs_once_on_any_thread_count() {
        let mut pool = Pool::new(3).unwrap();
        for threads in [1, 2, 3, 5] {
            for total in [0, 1, 2, 7, 100] {
                let hits: Vec<AtomicU32> = (0..total).map(|_| AtomicU32::new(0)).collect();
                for _ in 0..50 {
                    pool.run(threads, total, &|c, t| {
                        assert!(t < threads.min(3));
                        hits[c].fetch_add(1, Relaxed);
                    });
                }
                assert!(hits.iter().all(|h| h.load(Relaxed) == 50));
            }
        }
    }

    #[test]
    fn survives_idle_gaps_and_reports_panics() {
        let mut pool = Pool::new(2).unwrap();
        let sum = AtomicUsize::new(0);
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(2)); // the pool thread parks
            pool.run(2, 16, &|c, _| {
                sum.fetch_add(c, Relaxed);
            });
        }
        assert_eq!(sum.load(Relaxed), 3 * 120);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(2, 64, &|c, _| assert!(c != 40, "chunk 40"))
        }));
        assert!(r.is_err());
        // and the pool still works afterwards
        let n = AtomicUsize::new(0);
        pool.run(2, 64, &|_, _| {
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.load(Relaxed), 64);
    }
}
