//! Voice benchmark: real-time factor and time to first audio, one ONNX Runtime thread, side by side
//! with piper-tts (same voice, same sentences) measured in the same run via
//! `/work/shared/anchors/piper_bench.py` (env `IDOL_ANCHORS`, python from `IDOL_ANCHORS_PY`, default
//! `~/.cache/idol-anchors/venv/bin/python`). Prints medians and ratios as a markdown table.
//!
//! `cargo bench --bench tts [-- --runs N]`
//!
//! Measured for idol: time to first audio of a 6-word first clause when the whole clause is decoded at
//! once and when it is decoded in chunks (`synthesize_chunked`), both including phonemization (the
//! built-in English phonemizer; piper-tts uses espeak-ng in-process); RTF over all sentences (whole
//! clauses). The sentences are not normalized here, as piper-tts does not normalize either.

use idol::assets::Home;
use idol::phonemize::{EnglishPhonemizer, Phonemize};
use idol::tts::piper::StreamOptions;
use idol::tts::{PiperVoice, Synthesizer, VoiceOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

const FIRST_CLAUSE: (&str, &str) = ("c6", "Welcome back to the stream, everyone!");

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn sentences(anchors: &std::path::Path) -> Vec<(String, String)> {
    let mut out = vec![(FIRST_CLAUSE.0.to_string(), FIRST_CLAUSE.1.to_string())];
    if let Ok(tsv) = std::fs::read_to_string(anchors.join("sentences.tsv")) {
        for line in tsv.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let mut parts = line.split('\t');
            if let (Some(id), Some(text)) = (parts.next(), parts.next()) {
                out.push((id.to_string(), text.to_string()));
            }
        }
    }
    out
}

struct Piper {
    ttfa_ms: f64,
    rtf: f64,
}

fn run_piper(
    anchors: &std::path::Path,
    voice: &std::path::Path,
    tsv: &std::path::Path,
    runs: usize,
) -> Option<Piper> {
    let py = std::env::var_os("IDOL_ANCHORS_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/idol-anchors/venv/bin/python")
        });
    if !py.exists() {
        eprintln!(
            "piper-tts venv not found at {}: skipping the reference",
            py.display()
        );
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let json = dir.path().join("piper.json");
    let status = std::process::Command::new(&py)
        .arg(anchors.join("piper_bench.py"))
        .args(["--voice", &voice.display().to_string()])
        .args(["--sentences", &tsv.display().to_string()])
        .args(["--runs", &runs.to_string(), "--threads", "1"])
        .args(["--out", &dir.path().join("wav").display().to_string()])
        .args(["--json", &json.display().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        eprintln!("piper_bench.py failed: {status}");
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).ok()?).ok()?;
    let t = &v["threads"]["1"];
    Some(Piper {
        ttfa_ms: t["per_sentence"][FIRST_CLAUSE.0]["ttfa_ms"]["median"].as_f64()?,
        rtf: t["rtf_all_sentences"]["median"].as_f64()?,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(9usize);
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let home = Home::from_manifest_dir();
    let anchors = PathBuf::from(
        std::env::var("IDOL_ANCHORS").unwrap_or_else(|_| "/work/shared/anchors".into()),
    );
    let sents = sentences(&anchors);
    let tsv_dir = tempfile::tempdir().expect("temp dir");
    let tsv = tsv_dir.path().join("sentences.tsv");
    let body: String = sents.iter().map(|(id, t)| format!("{id}\t{t}\n")).collect();
    std::fs::write(&tsv, body).expect("write sentences");

    let phonemizer: Arc<EnglishPhonemizer> =
        Arc::new(EnglishPhonemizer::load(&home).expect("load the phonemizer (run `idol fetch`)"));
    let mut voice = PiperVoice::load(
        &home.voice(),
        &home.ort_library(),
        phonemizer.clone(),
        &VoiceOptions::default(),
    )
    .expect("load the voice (run `idol fetch`)");
    // Warm-up.
    for (_, t) in &sents {
        voice.synthesize(t).expect("synthesize");
    }
    let (mut ttfa_whole, mut ttfa_stream, mut rtf_all, mut phonemize) =
        (vec![], vec![], vec![], vec![]);
    let mut ttfa_tokens = vec![];
    let tokens = phonemizer.phonemize(FIRST_CLAUSE.1).expect("phonemize");
    for _ in 0..runs {
        let t0 = Instant::now();
        phonemizer.phonemize(FIRST_CLAUSE.1).expect("phonemize");
        phonemize.push(t0.elapsed().as_secs_f64() * 1e3);

        let t0 = Instant::now();
        voice.synthesize(FIRST_CLAUSE.1).expect("synthesize");
        ttfa_whole.push(t0.elapsed().as_secs_f64() * 1e3);

        let t0 = Instant::now();
        let mut first = None;
        voice
            .synthesize_chunked(FIRST_CLAUSE.1, StreamOptions::default(), &mut |_| {
                first.get_or_insert(t0.elapsed().as_secs_f64() * 1e3);
            })
            .expect("synthesize");
        ttfa_stream.push(first.unwrap_or(f64::NAN));

        let t0 = Instant::now();
        let mut first = None;
        voice
            .synthesize_tokens_chunked(&tokens, StreamOptions::default(), &mut |_| {
                first.get_or_insert(t0.elapsed().as_secs_f64() * 1e3);
            })
            .expect("synthesize");
        ttfa_tokens.push(first.unwrap_or(f64::NAN));

        let (mut secs, mut audio) = (0.0, 0.0);
        for (_, t) in &sents {
            let t0 = Instant::now();
            let s = voice.synthesize(t).expect("synthesize");
            secs += t0.elapsed().as_secs_f64();
            audio += s.duration_secs();
        }
        rtf_all.push(secs / audio);
    }
    let ttfa_tokens = median(ttfa_tokens);
    let idol = (
        median(ttfa_whole),
        median(ttfa_stream),
        median(rtf_all),
        median(phonemize),
    );
    let piper = run_piper(&anchors, &home.voice(), &tsv, runs);
    println!("\nvoice: en_US-joe-medium, 1 intra-op thread, {runs} runs, medians");
    println!(
        "first clause: {:?} ({} sentences for RTF)\n",
        FIRST_CLAUSE.1,
        sents.len()
    );
    println!("| measure | idol | piper-tts | idol / piper |");
    println!("|---|---|---|---|");
    let (pt, pr) = piper
        .as_ref()
        .map(|p| (p.ttfa_ms, p.rtf))
        .unwrap_or((f64::NAN, f64::NAN));
    println!(
        "| RTF (all sentences, whole clauses) | {:.3} | {:.3} | {:.2}x |",
        idol.2,
        pr,
        idol.2 / pr
    );
    println!(
        "| first audio, whole clause (ms) | {:.1} | {:.1} | {:.2}x |",
        idol.0,
        pt,
        idol.0 / pt
    );
    println!(
        "| first audio, chunked decode (ms) | {:.1} | {:.1} | {:.2}x |",
        idol.1,
        pt,
        idol.1 / pt
    );
    println!(
        "| first audio, chunked, from phonemes (ms) | {ttfa_tokens:.1} | {pt:.1} | {:.2}x |",
        ttfa_tokens / pt
    );
    println!("| built-in phonemizer (ms) | {:.1} | | |", idol.3);
}
