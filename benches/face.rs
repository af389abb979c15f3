//! Face solver throughput: frames per second on one core for the ARKit-52 rig with every layer on
//! (speech coarticulation, emotion envelopes and gestures, blinks, saccades, breathing, head motion,
//! speech-linked nods), evaluated into a reused buffer as the live server does, and the same through
//! `render_into` (column block) for offline renders. Goal: at least 1,000,000 frames/s.
//!
//! Two clocks: wall time (criterion's default) and this thread's CPU time (from
//! `/proc/thread-self/schedstat`, nanoseconds on CPU), which stays meaningful on a shared, loaded
//! machine where wall time also counts the time other processes hold the core. The kernel updates
//! that counter at scheduler ticks, so it is only used where one sample spans many milliseconds.
//!
//! Run: `cargo bench --bench face`. Figures go to docs/benchmarks.md (face section).

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idol::face::read;
use idol::face::{Face, FaceConfig, Frames, Rig, Scratch, Segment};
use idol::speech::{Cue, CueKind};
use idol::time::{SampleTime, TimeRange, Timed, Timeline};
use std::hint::black_box;
use std::path::Path;

fn utterance() -> (Timeline<idol::speech::Phoneme>, u64) {
    // The mary fixture repeated to 30 s: a long utterance with real phone timing.
    let f = read::read_path(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mary.TextGrid"),
        48000,
        None,
    )
    .unwrap();
    let len = f.end.get();
    let mut items = Vec::new();
    for r in 0..16u64 {
        for it in f.phonemes.iter() {
            items.push(Timed::new(it.range.shift(r * len), it.value.clone()));
        }
    }
    (Timeline::from_items(48000, items).unwrap(), 16 * len)
}

/// Nanoseconds this thread has spent on a CPU.
struct CpuTime;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux) is needed for the CPU-time clock")
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns() - i
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e3, "µs cpu")
        } else {
            (1e6, "ms cpu")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n)
            | Throughput::Bytes(n)
            | Throughput::BytesDecimal(n)
            | Throughput::Bits(n) => *n as f64,
        };
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v / 1e6);
        "M/s cpu"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn bench<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let (phonemes, len) = utterance();
    let rate = 48000;
    let mut cues = Vec::new();
    for (i, name) in ["happy", "surprised", "sad", "angry", "relaxed", "neutral"]
        .iter()
        .enumerate()
    {
        cues.push(Cue {
            kind: CueKind::Emotion,
            name: name.to_string(),
            intensity: 0.8,
            at: SampleTime(i as u64 * 4 * rate),
        });
        cues.push(Cue {
            kind: CueKind::Action,
            name: "nod".into(),
            intensity: 0.5,
            at: SampleTime(i as u64 * 4 * rate + rate),
        });
    }
    let face = Face::new(Rig::builtin("arkit52").unwrap(), FaceConfig::default()).unwrap();
    // The segment starts late in a session, as in the live server.
    let s0 = 1_000_000;
    let cues: Vec<Cue> = cues
        .into_iter()
        .map(|c| Cue {
            at: SampleTime(c.at.get() + s0),
            ..c
        })
        .collect();
    let phonemes = phonemes.shift(s0);
    let seg = Segment {
        range: TimeRange::at(SampleTime(s0), len),
        phonemes: &phonemes,
        words: None,
        cues: &cues,
    };
    let prep = face.prepare(&seg).unwrap();
    let n = prep.frame_count();
    let mut g = c.benchmark_group(format!("face_{clock}"));
    g.throughput(Throughput::Elements(n));
    g.bench_function("arkit52_all_layers_eval", |b| {
        let mut out = vec![0.0f32; face.rig().len()];
        b.iter(|| {
            let mut scratch = Scratch::default();
            for k in 0..n {
                let at = prep.origin().frame(k, rate as u32, 60);
                let r = face.eval(&prep, at, &mut scratch, &mut out);
                black_box((&out, r));
            }
        })
    });
    g.bench_function("arkit52_all_layers_render_into", |b| {
        let mut frames = Frames::new(face.rig(), rate as u32, 60);
        b.iter(|| {
            frames.clear();
            face.render_into(&prep, 0..n, &mut frames);
            black_box(frames.len());
        })
    });
    g.finish();
    // Preparing a segment takes well under a scheduler tick, below the CPU clock's resolution.
    if clock == "wall" {
        let mut g = c.benchmark_group(format!("face_prepare_{clock}"));
        g.throughput(Throughput::Elements(n));
        g.bench_function("arkit52_prepare_30s", |b| {
            b.iter(|| black_box(face.prepare(&seg).unwrap()))
        });
        g.finish();
    }
}

fn bench_wall(c: &mut Criterion) {
    bench(c, "wall");
}

fn bench_cpu(c: &mut Criterion<CpuTime>) {
    bench(c, "cpu");
}

criterion_group!(wall, bench_wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(CpuTime);
    targets = bench_cpu
}
criterion_main!(wall, cpu);
