//! A lock-free single-producer single-consumer ring of `f32` samples.
//!
//! Algorithm: a power-of-two buffer and two monotonically increasing `usize` counters, `head` (samples
//! ever written, advanced only by the producer) and `tail` (samples ever read, advanced only by the
//! consumer). The producer writes into `[head, tail + cap)` and then publishes with a release store of
//! `head`; the consumer reads `[tail, head)` after an acquire load of `head`, then frees the space with
//! a release store of `tail`. Indices are taken modulo the capacity, so each slot is touched by exactly
//! one side at a time. Neither side ever blocks, locks or allocates.

use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Inner {
    buf: Box<[UnsafeCell<f32>]>,
    mask: usize,
    head: AtomicUsize,
    tail: AtomicUsize,
}

// SAFETY: slots are accessed by one side at a time, as the module docs explain: the producer only
// touches free slots, the consumer only published ones, and the counters hand slots over with
// release/acquire ordering.
unsafe impl Sync for Inner {}
unsafe impl Send for Inner {}

/// The writing end.
pub struct Producer {
    inner: Arc<Inner>,
}

/// The reading end (moved into the audio callback).
pub struct Consumer {
    inner: Arc<Inner>,
}

/// A ring holding at least `min_capacity` samples.
pub fn ring(min_capacity: usize) -> (Producer, Consumer) {
    let cap = min_capacity.max(2).next_power_of_two();
    let inner = Arc::new(Inner {
        buf: (0..cap).map(|_| UnsafeCell::new(0.0)).collect(),
        mask: cap - 1,
        head: AtomicUsize::new(0),
        tail: AtomicUsize::new(0),
    });
    (
        Producer {
            inner: inner.clone(),
        },
        Consumer { inner },
    )
}

/// The consumer side kept by an owner that hands a fresh [`Consumer`] to each new audio stream.
pub struct Shared {
    inner: Arc<Inner>,
}

/// A ring and a [`Shared`] consumer side.
pub fn ring_shared(min_capacity: usize) -> (Producer, Shared) {
    let (p, c) = ring(min_capacity);
    (p, Shared { inner: c.inner })
}

impl Shared {
    /// A consumer of the ring.
    ///
    /// # Safety
    /// At most one consumer may be alive at a time: drop the previous one (with its stream) first.
    pub unsafe fn consumer(&self) -> Consumer {
        Consumer {
            inner: self.inner.clone(),
        }
    }
}

impl Producer {
    /// Free slots.
    pub fn free(&self) -> usize {
        let head = self.inner.head.load(Ordering::Relaxed);
        let tail = self.inner.tail.load(Ordering::Acquire);
        self.inner.buf.len() - (head - tail)
    }

    pub fn capacity(&self) -> usize {
        self.inner.buf.len()
    }

    /// Write as many of `data` as fit; returns how many were written.
    pub fn push(&mut self, data: &[f32]) -> usize {
        let n = data.len().min(self.free());
        let head = self.inner.head.load(Ordering::Relaxed);
        for (i, &x) in data[..n].iter().enumerate() {
            // SAFETY: slot head+i is free (n <= free), so the consumer does not read it.
            unsafe { *self.inner.buf[(head + i) & self.inner.mask].get() = x };
        }
        self.inner.head.store(head + n, Ordering::Release);
        n
    }
}

impl Consumer {
    /// Samples ready to read.
    pub fn available(&self) -> usize {
        let tail = self.inner.tail.load(Ordering::Relaxed);
        self.inner.head.load(Ordering::Acquire) - tail
    }

    /// Read one sample, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<f32> {
        let tail = self.inner.tail.load(Ordering::Relaxed);
        if self.inner.head.load(Ordering::Acquire) == tail {
            return None;
        }
        // SAFETY: slot `tail` is published (tail < head) and the producer does not write it until
        // tail moves past it.
        let x = unsafe { *self.inner.buf[tail & self.inner.mask].get() };
        self.inner.tail.store(tail + 1, Ordering::Release);
        Some(x)
    }

    /// Drop everything queued (a barge-in cut).
    pub fn clear(&mut self) {
        let head = self.inner.head.load(Ordering::Acquire);
        self.inner.tail.store(head, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_passes_samples_in_order_across_threads() {
        let (mut p, mut c) = ring(64);
        let n = 100_000;
        let writer = std::thread::spawn(move || {
            let mut i = 0;
            while i < n {
                let chunk: Vec<f32> = (i..(i + 17).min(n)).map(|x| x as f32).collect();
                let w = p.push(&chunk);
                i += w;
                if w == 0 {
                    std::thread::yield_now();
                }
            }
        });
        let mut next = 0;
        while next < n {
            match c.pop() {
                Some(x) => {
                    assert_eq!(x, next as f32);
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        writer.join().unwrap();
        assert_eq!(c.available(), 0);
    }
}
