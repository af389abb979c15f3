//! The local audio device: plays the voice and keeps the master clock.
//!
//! Input: audio blocks `(start: SampleTime, &[f32])`, mono PCM at the timeline rate (22050 Hz for the
//! default voice), pushed from any thread with [`AudioOut::push`]. Output: sound on a cpal output
//! device, and the [`Clock`]: the number of timeline samples the device has played, an `AtomicU64`
//! that releases frames to the other sinks (see [`super::FrameGate`]).
//!
//! Threads and the callback: blocks travel over a channel to a thread of this module (the owner),
//! which owns the cpal stream. The owner feeds a lock-free SPSC ring ([`ring`]) a few milliseconds
//! ahead of the device, converting to the device's rate on the way (linear interpolation) and filling
//! gaps between blocks with silence. The device callback only pops samples from the ring, writes them
//! to every channel and adds the played count to the clock: it never locks, allocates, logs or waits.
//! When the ring runs dry the callback plays silence and the clock still advances, so the clock is
//! real time while the idol is idle, and a block that arrives after its start has passed loses its
//! late head (counted in [`AudioOut::late_samples`]): the producer should stamp new speech a little
//! ahead of [`Clock::played`].
//!
//! The device going away (unplugged, the sound server restarting) makes cpal report an error; the
//! owner then drops the stream, keeps the clock running with the paced null output and tries to
//! rebuild the stream every two seconds.
//!
//! No device: with no usable output (servers, CI, this project's build machines) the owner runs a
//! paced null output instead: it sleeps 10 ms at a time and advances the clock by the real time that
//! passed, discarding the samples. One warning says so; it never spins.
//!
//! Tests and benches use the mock backend ([`AudioOut::mock`]): nothing runs by itself; each
//! [`MockDevice::pull`] feeds the ring and renders exactly the requested frames with the same code
//! as the device callback, deterministically.

pub mod ring;

use super::SinkError;
use crate::time::SampleTime;
use crossbeam_channel::{Receiver, Sender};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The master clock (lives in [`crate::time`]: the live pipeline reads it too).
pub use crate::time::Clock;

/// What an [`AudioOut`] plays on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A cpal output device, by name.
    Device(String),
    /// The paced null output (no usable device).
    Null,
    /// The mock backend of tests.
    Mock,
}

/// Settings of an [`AudioOut`].
#[derive(Debug, Clone)]
pub struct AudioOptions {
    /// The timeline's sample rate (the voice's rate).
    pub rate: u32,
    /// The output device's name (as `idol devices` lists it); `None` is the system default.
    pub device: Option<String>,
    /// How far ahead of the device the ring is kept full, in milliseconds (default 100).
    pub ahead_ms: u32,
}

impl AudioOptions {
    pub fn new(rate: u32) -> AudioOptions {
        AudioOptions {
            rate,
            device: None,
            ahead_ms: 100,
        }
    }

    pub fn from_config(c: &crate::config::AudioConfig, rate: u32) -> AudioOptions {
        AudioOptions {
            device: c.device.clone().filter(|d| d != "default"),
            ..AudioOptions::new(rate)
        }
    }
}

enum Cmd {
    Block(u64, Vec<f32>),
    Cut(u64),
    Stop,
}

/// Plays audio blocks on the device and keeps the [`Clock`]; see the module docs.
pub struct AudioOut {
    tx: Sender<Cmd>,
    clock: Clock,
    late: Arc<AtomicU64>,
    backend: Backend,
    device_rate: u32,
    thread: Option<JoinHandle<()>>,
}

impl AudioOut {
    /// Open the configured (or default) output device, or fall back to the paced null output with
    /// one warning when there is none.
    pub fn open(opts: &AudioOptions) -> Result<AudioOut, SinkError> {
        if opts.rate == 0 {
            return Err(SinkError::ZeroRate);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let clock = Clock::default();
        let late = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let o = opts.clone();
        let (c2, l2) = (clock.clone(), late.clone());
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || owner(o, rx, c2, l2, ready_tx))
            .map_err(|e| SinkError::Audio(format!("could not start the audio thread: {e}")))?;
        let (backend, device_rate) = ready_rx
            .recv()
            .map_err(|_| SinkError::Audio("the audio thread ended while starting".into()))?;
        Ok(AudioOut {
            tx,
            clock,
            late,
            backend,
            device_rate,
            thread: Some(thread),
        })
    }

    /// The paced null output, whatever devices exist.
    pub fn null(rate: u32) -> Result<AudioOut, SinkError> {
        let mut o = AudioOptions::new(rate);
        o.device = Some(NULL_DEVICE.into());
        AudioOut::open(&o)
    }

    /// The mock backend: a device at `device_rate` that plays only when the test pulls.
    pub fn mock(rate: u32, device_rate: u32) -> Result<(AudioOut, MockDevice), SinkError> {
        if rate == 0 || device_rate == 0 {
            return Err(SinkError::ZeroRate);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let clock = Clock::default();
        let late = Arc::new(AtomicU64::new(0));
        let (prod, cons) = ring::ring((device_rate as usize / 10).max(64));
        let feeder = Feeder::new(rx, prod, clock.clone(), late.clone(), rate, device_rate);
        let renderer = Renderer::new(cons, clock.clone(), rate, device_rate);
        Ok((
            AudioOut {
                tx,
                clock,
                late,
                backend: Backend::Mock,
                device_rate,
                thread: None,
            },
            MockDevice { feeder, renderer },
        ))
    }

    /// Queue a block of mono samples at the timeline rate that should start sounding at `start`.
    pub fn push(&self, start: SampleTime, pcm: &[f32]) {
        let _ = self.tx.send(Cmd::Block(start.get(), pcm.to_vec()));
    }

    /// Drop every queued sample at or after `at` (a barge-in cut).
    pub fn cut(&self, at: SampleTime) {
        let _ = self.tx.send(Cmd::Cut(at.get()));
    }

    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn device_rate(&self) -> u32 {
        self.device_rate
    }

    /// Timeline samples dropped because their block came after they should have been heard.
    pub fn late_samples(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }
}

impl Drop for AudioOut {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The mock backend's device end; see [`AudioOut::mock`].
pub struct MockDevice {
    feeder: Feeder,
    renderer: Renderer,
}

impl MockDevice {
    /// Play `frames` device frames (mono) and return them.
    pub fn pull(&mut self, frames: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; frames];
        let step = (self.feeder.prod.capacity() / 2).max(1);
        for chunk in out.chunks_mut(step) {
            self.feeder.top_up();
            self.renderer.render(chunk, 1);
        }
        out
    }
}

/// The name of the thread that owns the stream (or runs the paced null output).
pub const THREAD_NAME: &str = "idol-audio";

/// The device name that asks for the paced null output.
pub const NULL_DEVICE: &str = "null";

/// The callback's state: pops the ring, advances the clock. No locks, no allocation.
struct Renderer {
    cons: ring::Consumer,
    played: Clock,
    rate: u64,
    device_rate: u64,
    frac: u64,
}

impl Renderer {
    fn new(cons: ring::Consumer, clock: Clock, rate: u32, device_rate: u32) -> Renderer {
        Renderer {
            cons,
            played: clock,
            rate: rate as u64,
            device_rate: device_rate as u64,
            frac: 0,
        }
    }

    /// Fill `out` (interleaved, `channels` per frame) and count the frames as played.
    #[inline]
    fn render<T: cpal::FromSample<f32> + Copy>(&mut self, out: &mut [T], channels: usize) {
        let channels = channels.max(1);
        let mut frames = 0u64;
        for frame in out.chunks_mut(channels) {
            let x = self.cons.pop().unwrap_or(0.0);
            let s = T::from_sample_(x);
            for o in frame {
                *o = s;
            }
            frames += 1;
        }
        self.advance(frames);
    }

    #[inline]
    fn advance(&mut self, device_frames: u64) {
        let num = device_frames * self.rate + self.frac;
        self.frac = num % self.device_rate;
        self.played.advance(num / self.device_rate);
    }
}

struct Block {
    start: u64,
    pcm: Vec<f32>,
    /// Device samples of this block already written.
    done: u64,
}

/// The owner's side of the ring: blocks in, device-rate samples out, gaps as silence.
struct Feeder {
    rx: Receiver<Cmd>,
    prod: ring::Producer,
    clock: Clock,
    late: Arc<AtomicU64>,
    rate: u32,
    device_rate: u32,
    queue: VecDeque<Block>,
    /// Timeline position of the next sample written to the ring.
    next: u64,
    scratch: Vec<f32>,
    stopped: bool,
}

impl Feeder {
    fn new(
        rx: Receiver<Cmd>,
        prod: ring::Producer,
        clock: Clock,
        late: Arc<AtomicU64>,
        rate: u32,
        device_rate: u32,
    ) -> Feeder {
        Feeder {
            rx,
            prod,
            clock,
            late,
            rate,
            device_rate,
            queue: VecDeque::new(),
            next: 0,
            scratch: vec![0.0; 512],
            stopped: false,
        }
    }

    fn to_device(&self, t: u64) -> u64 {
        SampleTime(t).rescale(self.rate, self.device_rate).get()
    }

    fn to_timeline(&self, d: u64) -> u64 {
        SampleTime(d).rescale(self.device_rate, self.rate).get()
    }

    fn receive(&mut self) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Block(start, pcm) => {
                    if !pcm.is_empty() {
                        self.queue.push_back(Block {
                            start,
                            pcm,
                            done: 0,
                        })
                    }
                }
                Cmd::Cut(at) => {
                    self.queue.retain(|b| b.start < at);
                    if let Some(b) = self.queue.back_mut() {
                        let keep = (at - b.start) as usize;
                        b.pcm.truncate(keep);
                    }
                }
                Cmd::Stop => self.stopped = true,
            }
        }
    }

    /// Move what is due into the ring, as far as it has room.
    fn top_up(&mut self) {
        self.receive();
        loop {
            let free = self.prod.free();
            if free == 0 {
                return;
            }
            let Some(b) = self.queue.front() else {
                return;
            };
            // Where the next ring sample will sound on the timeline.
            let played = self.clock.played().get();
            let continuing = self.prod.capacity() - free > 0;
            let pos = if continuing {
                self.next
            } else {
                self.next.max(played)
            };
            let (start, len) = (b.start, b.pcm.len() as u64);
            let dev_len = self.to_device(len);
            if pos < start {
                // Silence up to the block.
                let gap = self.to_device(start - pos).min(free as u64).max(1) as usize;
                let n = gap.min(self.scratch.len());
                self.scratch[..n].fill(0.0);
                let w = self.prod.push(&self.scratch[..n]) as u64;
                self.next = if w as usize == gap && self.to_device(start - pos) <= w {
                    start
                } else {
                    pos + self.to_timeline(w)
                };
                continue;
            }
            // Skip what is already past.
            let due = self.to_device(pos - start);
            let b = self.queue.front_mut().expect("front exists");
            // (Only at a block's start or after an underrun: mid-block, `next` is exact and the
            // round trip through the two rates could invent a skipped sample.)
            if (b.done == 0 || !continuing) && due > b.done {
                let skip = due.min(dev_len) - b.done;
                self.late.fetch_add(
                    SampleTime(skip).rescale(self.device_rate, self.rate).get(),
                    Ordering::Relaxed,
                );
                b.done += skip;
            }
            if b.done >= dev_len {
                self.queue.pop_front();
                continue;
            }
            // Resample into scratch and push.
            let n = ((dev_len - b.done) as usize)
                .min(free)
                .min(self.scratch.len());
            let ratio = self.rate as f64 / self.device_rate as f64;
            for i in 0..n {
                let x = (b.done + i as u64) as f64 * ratio;
                let j = x.floor() as usize;
                let f = (x - j as f64) as f32;
                let a = b.pcm[j.min(b.pcm.len() - 1)];
                let c = b.pcm[(j + 1).min(b.pcm.len() - 1)];
                self.scratch[i] = a + (c - a) * f;
            }
            let w = self.prod.push(&self.scratch[..n]) as u64;
            b.done += w;
            let done = b.done;
            self.next = start + SampleTime(done).rescale(self.device_rate, self.rate).get();
            if done >= dev_len {
                self.next = start + len;
                self.queue.pop_front();
            }
        }
    }
}

/// The audio host idol plays through on this system: cpal's default host, WASAPI on Windows,
/// CoreAudio on macOS, ALSA on Linux. Devices, their names and the played-sample clock all come from it.
pub fn host_name() -> &'static str {
    cpal::default_host().id().name()
}

/// Output devices of the default host ([`host_name`]): (name, default config as text, whether it is
/// the default).
pub fn list_devices() -> Result<Vec<(String, String, bool)>, SinkError> {
    use cpal::traits::{DeviceTrait, HostTrait};
    let host = cpal::default_host();
    let default = host.default_output_device().and_then(|d| d.name().ok());
    let devices = host
        .output_devices()
        .map_err(|e| SinkError::Audio(format!("could not list output devices: {e}")))?;
    let mut out = Vec::new();
    for d in devices {
        let name = d.name().unwrap_or_else(|_| "<unnamed>".into());
        let cfg = match d.default_output_config() {
            Ok(c) => format!(
                "{} Hz, {} ch, {:?}",
                c.sample_rate().0,
                c.channels(),
                c.sample_format()
            ),
            Err(e) => format!("unusable: {e}"),
        };
        let is_default = default.as_deref() == Some(name.as_str());
        out.push((name, cfg, is_default));
    }
    Ok(out)
}

/// A running cpal stream and the flag its error callback raises.
struct DeviceStream {
    _stream: cpal::Stream,
    failed: Arc<AtomicBool>,
    name: String,
    rate: u32,
}

/// Open `want` (or the default device) with a callback reading the ring.
///
/// # Safety
/// No other consumer of `shared` may be alive (the previous stream is dropped first).
unsafe fn build_stream(
    want: Option<&str>,
    shared: &ring::Shared,
    clock: &Clock,
    rate: u32,
) -> Result<DeviceStream, String> {
    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    let host = cpal::default_host();
    let device = match want {
        None => host.default_output_device(),
        Some(w) => host
            .output_devices()
            .ok()
            .and_then(|mut ds| ds.find(|d| d.name().is_ok_and(|n| n == w))),
    };
    let Some(device) = device else {
        return Err(match want {
            None => "no default output device".into(),
            Some(w) => format!("no output device named {w:?} (see `idol devices`)"),
        });
    };
    let name = device.name().unwrap_or_else(|_| "<unnamed>".into());
    let supported = device
        .default_output_config()
        .map_err(|e| format!("output device {name:?} is not usable: {e}"))?;
    let config = supported.config();
    let channels = config.channels as usize;
    let device_rate = config.sample_rate.0;
    let failed = Arc::new(AtomicBool::new(false));
    let f2 = failed.clone();
    let err_cb = move |_e: cpal::StreamError| f2.store(true, Ordering::Release);
    // SAFETY: the caller guarantees this is the only live consumer.
    let cons = unsafe { shared.consumer() };
    let mut r = Renderer::new(cons, clock.clone(), rate, device_rate);
    let stream = match supported.sample_format() {
        cpal::SampleFormat::F32 => device.build_output_stream(
            &config,
            move |out: &mut [f32], _| r.render(out, channels),
            err_cb,
            None,
        ),
        cpal::SampleFormat::I16 => device.build_output_stream(
            &config,
            move |out: &mut [i16], _| r.render(out, channels),
            err_cb,
            None,
        ),
        cpal::SampleFormat::I32 => device.build_output_stream(
            &config,
            move |out: &mut [i32], _| r.render(out, channels),
            err_cb,
            None,
        ),
        cpal::SampleFormat::U16 => device.build_output_stream(
            &config,
            move |out: &mut [u16], _| r.render(out, channels),
            err_cb,
            None,
        ),
        other => {
            return Err(format!(
                "output device {name:?} wants {other:?} samples, which idol does not write"
            ));
        }
    }
    .map_err(|e| format!("could not open output device {name:?}: {e}"))?;
    stream
        .play()
        .map_err(|e| format!("output device {name:?} would not start: {e}"))?;
    Ok(DeviceStream {
        _stream: stream,
        failed,
        name,
        rate: device_rate,
    })
}

/// The null output's pacing: 10 ms sleeps, the clock advanced by the real time that passed.
struct NullPacer {
    renderer: Renderer,
    started: Instant,
    rendered: u64,
    scratch: Vec<f32>,
}

impl NullPacer {
    fn new(renderer: Renderer) -> NullPacer {
        NullPacer {
            renderer,
            started: Instant::now(),
            rendered: 0,
            scratch: vec![0.0; 4096],
        }
    }

    fn step(&mut self) {
        let due = (self.started.elapsed().as_nanos() * self.renderer.device_rate as u128
            / 1_000_000_000) as u64;
        while self.rendered < due {
            let n = ((due - self.rendered) as usize).min(self.scratch.len());
            self.renderer.render(&mut self.scratch[..n], 1);
            self.rendered += n as u64;
        }
    }
}

const NULL_RATE: u32 = 48_000;
const TICK: Duration = Duration::from_millis(10);
const RETRY: Duration = Duration::from_secs(2);

fn owner(
    opts: AudioOptions,
    rx: Receiver<Cmd>,
    clock: Clock,
    late: Arc<AtomicU64>,
    ready: Sender<(Backend, u32)>,
) {
    let cap = (opts.ahead_ms.max(10) as usize * 48).next_power_of_two();
    let (prod, shared) = ring::ring_shared(cap);
    let forced_null = opts.device.as_deref() == Some(NULL_DEVICE);
    // SAFETY: no stream exists yet.
    let first = if forced_null {
        Err("the null output was asked for".to_string())
    } else {
        unsafe { build_stream(opts.device.as_deref(), &shared, &clock, opts.rate) }
    };
    let device_rate = first.as_ref().map(|d| d.rate).unwrap_or(NULL_RATE);
    let mut feeder = Feeder::new(rx, prod, clock.clone(), late, opts.rate, device_rate);
    let mut stream: Option<DeviceStream> = None;
    let mut null: Option<NullPacer> = None;
    match first {
        Ok(d) => {
            log::info!("audio: playing on {:?} at {} Hz", d.name, d.rate);
            let _ = ready.send((Backend::Device(d.name.clone()), d.rate));
            stream = Some(d);
        }
        Err(why) => {
            if !forced_null {
                log::warn!(
                    "audio: {why}; playing to a paced null output instead (the clock runs in real time, nothing is heard)"
                );
            }
            // SAFETY: no stream exists.
            let cons = unsafe { shared.consumer() };
            null = Some(NullPacer::new(Renderer::new(
                cons,
                clock.clone(),
                opts.rate,
                NULL_RATE,
            )));
            let _ = ready.send((Backend::Null, NULL_RATE));
        }
    }
    // A device that existed once is retried after it goes away; a machine without one is not polled.
    let mut retry_at: Option<Instant> = None;
    loop {
        feeder.top_up();
        if feeder.stopped {
            return;
        }
        if let Some(d) = &stream
            && d.failed.load(Ordering::Acquire)
        {
            log::warn!(
                "audio: output device {:?} went away; the clock continues on a paced null output while it is retried",
                d.name
            );
            stream = None;
            // SAFETY: the old stream (and its consumer) was just dropped.
            let cons = unsafe { shared.consumer() };
            feeder.device_rate = NULL_RATE;
            null = Some(NullPacer::new(Renderer::new(
                cons,
                clock.clone(),
                opts.rate,
                NULL_RATE,
            )));
            retry_at = Some(Instant::now() + RETRY);
        }
        if let Some(at) = retry_at
            && Instant::now() >= at
        {
            // Drop the null pacer's consumer before the stream takes its own.
            let saved = null.take();
            drop(saved);
            // SAFETY: no stream and no null pacer hold a consumer now.
            match unsafe { build_stream(opts.device.as_deref(), &shared, &clock, opts.rate) } {
                Ok(d) => {
                    log::info!("audio: back on {:?} at {} Hz", d.name, d.rate);
                    feeder.device_rate = d.rate;
                    stream = Some(d);
                    retry_at = None;
                }
                Err(_) => {
                    // SAFETY: build_stream dropped its consumer with the failed stream.
                    let cons = unsafe { shared.consumer() };
                    null = Some(NullPacer::new(Renderer::new(
                        cons,
                        clock.clone(),
                        opts.rate,
                        NULL_RATE,
                    )));
                    retry_at = Some(Instant::now() + RETRY);
                }
            }
        }
        if let Some(n) = &mut null {
            n.step();
        }
        std::thread::sleep(if null.is_some() { TICK } else { TICK / 2 });
    }
}
