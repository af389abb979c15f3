//! Audio lip sync: speed as a multiple of real time, and accuracy against the phone alignments of the
//! two fixture recordings (frame-level, 100 fps, the face's own phone → viseme tables as reference).
//!
//! Measured per input: `decode_file` + `phonemes_from_audio` (resample to 16 kHz, features, class
//! scores, Viterbi, phones), repeated, medians of wall time and of this thread's CPU time (from
//! `/proc/thread-self/schedstat`; it stays meaningful on a shared, loaded machine). Inputs: the two
//! fixtures (1.2 s and 1.9 s) and mary repeated to 30 s. Accuracy is printed for audio alone and, when
//! the phonemizer models are installed, with the transcript.
//!
//! Run: `cargo bench --bench audiolip` (or, without a release build of the dependencies,
//! `CARGO_PROFILE_DEV_OPT_LEVEL=3 cargo bench --profile dev --bench audiolip`). Figures go to
//! docs/benchmarks.md ("Audio lip sync").

use idol::audio;
use idol::face::from_audio::{
    self, AudioLipsyncOptions, agreement, frame_classes, phonemes_from_audio,
};
use idol::face::read;
use idol::phonemize::{EnglishPhonemizer, Phonemize};
use idol::time::SampleTime;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Nanoseconds this thread has spent on a CPU.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn speed(name: &str, pcm: &[f32], rate: u32, runs: usize) {
    let opts = AudioLipsyncOptions::default();
    let secs = pcm.len() as f64 / rate as f64;
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (t, c) = (Instant::now(), thread_cpu_ns());
        black_box(phonemes_from_audio(black_box(pcm), rate, &opts).unwrap());
        wall.push(t.elapsed().as_secs_f64());
        cpu.push((thread_cpu_ns() - c) as f64 * 1e-9);
    }
    let (w, c) = (median(&mut wall), median(&mut cpu));
    println!(
        "{name:<22} {secs:6.2} s audio  wall {:8.2} ms ({:6.0}x real time)  cpu {:8.2} ms ({:6.0}x)",
        w * 1e3,
        secs / w,
        c * 1e3,
        secs / c.max(1e-9)
    );
}

fn main() {
    // Decode speed (WAV, the fixture), then lip sync speed.
    let mut wall = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        black_box(audio::decode_file(data("mary.wav")).unwrap());
        wall.push(t.elapsed().as_secs_f64());
    }
    println!(
        "decode mary.wav (1.87 s): {:.3} ms",
        median(&mut wall) * 1e3
    );

    let bobby = audio::decode_file(data("bobby.wav")).unwrap();
    let mary = audio::decode_file(data("mary.wav")).unwrap();
    speed("bobby.wav", &bobby.samples, bobby.sample_rate, 21);
    speed("mary.wav", &mary.samples, mary.sample_rate, 21);
    let long: Vec<f32> = mary
        .samples
        .iter()
        .copied()
        .cycle()
        .take(mary.sample_rate as usize * 30)
        .collect();
    speed("mary x16 (30 s)", &long, mary.sample_rate, 7);
    let p22 = audio::resample(&long, mary.sample_rate, 22050);
    speed("mary x16 at 22.05 kHz", &p22, 22050, 7);

    // Accuracy.
    let phonemizer = EnglishPhonemizer::load(&idol::assets::Home::from_manifest_dir()).ok();
    for (wav, tg, text) in [
        (
            "bobby.wav",
            "bobby_phones.TextGrid",
            "Bobby ripped the ledger.",
        ),
        ("mary.wav", "mary.TextGrid", "Mary rolled the barrel."),
    ] {
        let a = audio::decode_file(data(wav)).unwrap();
        let end = SampleTime(a.samples.len() as u64);
        let reference = read::read_path(&data(tg), a.sample_rate, None).unwrap();
        let want = frame_classes(&reference.phonemes, end, 100);
        let mut modes = vec![("audio only", AudioLipsyncOptions::default())];
        if let Some(p) = &phonemizer {
            modes.push((
                "with transcript",
                AudioLipsyncOptions {
                    transcript: Some(from_audio::transcript_phones(&p.phonemize(text).unwrap())),
                    ..AudioLipsyncOptions::default()
                },
            ));
        }
        for (mode, opts) in modes {
            let tl = phonemes_from_audio(&a.samples, a.sample_rate, &opts).unwrap();
            let acc = agreement(&frame_classes(&tl, end, 100), &want);
            println!(
                "{wav:<10} {mode:<16} {} frames: open/closed {:.1} %, viseme class {:.1} %",
                acc.frames,
                acc.open_closed * 100.0,
                acc.class * 100.0
            );
        }
    }
}
