//! Sink throughput and release latency:
//!
//! 1. VMC: ARKit-52 frames through [`VmcSink`] (resample, OSC encode into bundles, UDP send to a
//!    local socket), frames per second of wall time and of this thread's CPU time.
//! 2. Gate release latency: a [`GateRunner`] on the mock audio device's clock; the clock is advanced
//!    to each frame's stamp and the time until the sink has the frame is recorded (the gate wakes
//!    every 5 ms, so this is bounded by the wake period plus scheduling).
//!
//! `cargo bench --bench sinks -- [frames]` (default 20000).

use idol::face::{EyeGaze, Frame, MorphWeights, Rig};
use idol::sink::audio::AudioOut;
use idol::sink::vmc::{BlendNames, VmcOptions, VmcSink};
use idol::sink::{FrameSink, GateRunner, SinkError};
use idol::time::SampleTime;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RATE: u32 = 22050;
const FPS: u32 = 60;

fn frame(n: usize, k: u64) -> Frame {
    let t = k as f32 / FPS as f32;
    Frame::new(
        SampleTime::ZERO.frame(k, RATE, FPS),
        MorphWeights::unit(
            (0..n)
                .map(|c| 0.5 + 0.5 * (t * 3.1 + c as f32 * 0.7).sin())
                .collect(),
        )
        .expect("finite"),
        glam::Quat::from_rotation_y(0.2 * t.sin()),
        [EyeGaze {
            yaw: 0.1 * t.sin(),
            pitch: 0.05,
        }; 2],
    )
}

/// CPU seconds of the calling thread.
fn thread_cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let v = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (v(11) + v(12)) / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Notes when each frame arrives.
struct Stamp(Arc<parking_lot::Mutex<Vec<(u64, Instant)>>>);

impl FrameSink for Stamp {
    fn frame(
        &mut self,
        _channels: &[String],
        frame: &idol::face::FrameRef<'_>,
    ) -> Result<(), SinkError> {
        self.0.lock().push((frame.at.get(), Instant::now()));
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let frames: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let rig = Rig::builtin("arkit52").unwrap();
    let channels: Vec<String> = rig.channel_names().map(str::to_string).collect();
    let n = channels.len();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "sinks: load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // 1. VMC encode + send.
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = rx.local_addr().unwrap();
    rx.set_nonblocking(true).unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut got = 0u64;
        let quiet = Instant::now();
        let mut last = quiet;
        while last.elapsed() < Duration::from_millis(500) {
            match rx.recv(&mut buf) {
                Ok(_) => {
                    got += 1;
                    last = Instant::now();
                }
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
        got
    });
    let mut vmc = VmcSink::new(VmcOptions {
        target,
        rate: FPS,
        sample_rate: RATE,
        names: BlendNames::AsRig,
    })
    .unwrap();
    let input: Vec<Frame> = (0..frames).map(|k| frame(n, k)).collect();
    let (w0, c0) = (Instant::now(), thread_cpu());
    for f in &input {
        vmc.frame(&channels, &f.as_ref()).unwrap();
    }
    let (wall, cpu) = (w0.elapsed().as_secs_f64(), thread_cpu() - c0);
    let datagrams = drain.join().unwrap();
    println!(
        "VMC ARKit-52 at {FPS} Hz: {frames} ticks in {wall:.3} s wall ({:.0} ticks/s, {:.0}x real time), \
         {cpu:.2} s CPU ({:.0} ticks/s of CPU); {datagrams} datagrams received",
        frames as f64 / wall,
        frames as f64 / wall / FPS as f64,
        frames as f64 / cpu.max(1e-9),
    );

    // 2. Gate release latency on the mock device's clock.
    let (audio, mut dev) = AudioOut::mock(RATE, RATE).unwrap();
    let got = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let gate = GateRunner::spawn(audio.clock(), vec![Box::new(Stamp(got.clone()))]);
    let names: Arc<[String]> = channels.clone().into();
    let m = 300u64;
    for k in 1..=m {
        gate.push(names.clone(), frame(n, k));
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut reached = vec![];
    let mut played = 0u64;
    for k in 1..=m {
        let at = SampleTime::ZERO.frame(k, RATE, FPS).get();
        dev.pull((at - played) as usize);
        played = at;
        reached.push((at, Instant::now()));
        // Real time between frames, as a device would.
        std::thread::sleep(Duration::from_micros(16_667));
    }
    std::thread::sleep(Duration::from_millis(50));
    drop(gate);
    let got = got.lock().clone();
    let mut lat: Vec<f64> = reached
        .iter()
        .filter_map(|(at, t)| {
            got.iter()
                .find(|(s, _)| s == at)
                .map(|(_, r)| r.saturating_duration_since(*t).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "gate release latency (clock reaches the stamp → sink has the frame), {} of {m} frames: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().unwrap()
    );
}
