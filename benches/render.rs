//! Offline render benchmark: a 60-second script (spoken lines with tags and breaks, gaps, an `at`
//! line, look-at changes, pass-through events) rendered with the real Piper voice (one ONNX Runtime
//! thread) and the face solver at 60 fps, then formatted into the six output files in memory.
//!
//! `cargo bench --bench render [-- --runs N]`
//!
//! Prints, per run and as medians: the performance's length, wall time, process CPU time (all threads,
//! from /proc/self/stat, so a machine shared with other builds shows as wall > CPU), and the speed as a
//! multiple of real time by wall and by CPU. The voice is loaded once, outside the timing; each run
//! restarts its noise at the same seed, so each run renders the same bytes.

use idol::assets::Home;
use idol::face::Rig;
use idol::phonemize::EnglishPhonemizer;
use idol::script::{self, PiperLineVoice, RenderOptions, Script};
use idol::tts::{PiperVoice, VoiceOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const LINES: &[&str] = &[
    "[happy] Hi everyone, and welcome back to the stream! <wave>",
    "Today we are going to build a tiny synthesizer from scratch.",
    "It will have two oscillators, a filter, and an envelope. <break time=\"400ms\"/> That is all we need.",
    "[relaxed] First, let's talk about what an oscillator actually does.",
    "It repeats a shape over and over, a few hundred times every second.",
    "[surprised] Oh, somebody in the chat already built one last week! <nod>",
    "That is amazing, thank you for sharing it with all of us.",
    "[happy:0.6] Alright, let's open the editor and write the first few lines.",
    "We start with a phase that goes from zero to one, then wraps around.",
    "Multiply it by two pi, take the sine, and there is our first tone. <break time=\"300ms\"/> Listen.",
    "[sad:0.4] It sounds a bit thin on its own, doesn't it?",
    "So we add a second oscillator, slightly detuned, and the sound gets wider.",
    "[happy] Much better! <tilt> Now the filter.",
    "A low pass filter lets the low frequencies through and softens the rest.",
    "We will sweep its cutoff with the envelope, so every note opens and closes.",
    "Thanks for hanging out, and see you next time! <wave>",
];

fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux)");
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn script_text() -> String {
    let mut s = String::from(
        "[script]\nseed = 42\nfps = 60\ngap = \"600ms\"\ntail = \"1s\"\n\n[targets]\nchat = { yaw = -22, pitch = -12 }\n",
    );
    for (i, l) in LINES.iter().enumerate() {
        s.push_str(&format!(
            "\n[[line]]\nid = \"l{i}\"\ntext = {}\n",
            toml_str(l)
        ));
        if i % 4 == 1 {
            s.push_str("look_at = \"chat\"\n");
        } else if i % 4 == 3 {
            s.push_str("look_at = \"camera\"\n");
        }
        if i % 5 == 2 {
            s.push_str(&format!(
                "[[event]]\nname = \"camera\"\nline = \"l{i}\"\noffset = \"250ms\"\ndata = {{ shot = \"close\" }}\n"
            ));
        }
    }
    s
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(5usize);
    let home = Home::from_manifest_dir();
    let options = VoiceOptions {
        seed: 42,
        ..VoiceOptions::default()
    };
    let ph = Arc::new(EnglishPhonemizer::load(&home).expect("phonemizer"));
    let voice = PiperVoice::load(
        &home.path("voices/en_US-joe-medium.onnx"),
        &home.ort_library(),
        ph,
        &options,
    )
    .expect("voice");
    let script = Script::parse(
        &script_text(),
        Path::new("bench.script.toml"),
        Path::new("."),
    )
    .expect("bench script");
    let rig = Rig::builtin("arkit52").expect("rig");
    let (mut walls, mut cpus, mut lens) = (Vec::new(), Vec::new(), Vec::new());
    let mut first: Option<Vec<(&str, Vec<u8>)>> = None;
    let mut line_voice = PiperLineVoice::new(voice, &options);
    for run in 0..runs {
        // Restart the noise at the seed: every run renders the same performance.
        line_voice.reseed(42);
        let c0 = cpu_secs();
        let t0 = Instant::now();
        let perf = script::render(
            &script,
            &mut line_voice,
            RenderOptions {
                rig: rig.clone(),
                fps: 60,
                seed: 42,
                rate: None,
                lipsync: None,
                progress: None,
                budget: idol::budget::Budget::default(),
            },
        )
        .expect("render");
        let (files, _) = script::output::files(&perf).expect("files");
        let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (*n, b.to_bytes())).collect();
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs() - c0;
        let len = perf.duration_secs();
        println!(
            "run {run}: {len:.1} s performance, {} frames, wall {wall:.2} s ({:.1}x real time), CPU {cpu:.2} s ({:.1}x)",
            perf.frames.len(),
            len / wall,
            len / cpu
        );
        match &first {
            None => first = Some(files),
            Some(f) => assert!(*f == files, "run {run} rendered different bytes"),
        }
        walls.push(wall);
        cpus.push(cpu);
        lens.push(len);
    }
    let (w, c, l) = (median(walls), median(cpus), median(lens));
    println!();
    println!(
        "| performance | runs | wall (median) | × real time (wall) | CPU (median) | × real time (CPU) |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {l:.1} s, {} lines, 60 fps arkit52 | {runs} | {w:.2} s | {:.1}x | {c:.2} s | {:.1}x |",
        LINES.len(),
        l / w,
        l / c
    );
}
