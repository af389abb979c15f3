//! Voice benchmark: real-time factor and time to first audio, one ONNX Runtime thread, side by side
//! with piper-tts (same voice, same sentences) measured in the same run via
//! `/work/shared/anchors/piper_bench.py` (env `IDOL_ANCHORS`, python from `IDOL_ANCHORS_PY`, default
//! `~/.cache/idol-anchors/venv/bin/python`). Prints medians and ratios as a markdown table.
//!
//! `cargo bench --bench tts [-- --runs N] [--heads-only | --interleaved-only]`
//!
//! Measured for idol: time to first audio of a 6-word first clause when the whole clause is decoded at
//! once and when it is decoded in chunks (`synthesize_chunked`), both including phonemization (the
//! built-in English phonemizer; piper-tts uses espeak-ng in-process); RTF over all sentences (whole
//! clauses). The sentences are not normalized here, as piper-tts does not normalize either.
//!
//! Then an interleaved comparison for a shared, noisy machine: a piper-tts co-process (voice loaded by
//! the anchor's own `load_voice`, same session options) and idol synthesize the same sentence one
//! after the other, alternating which goes first, so both see the same load; each side records wall
//! time and its synthesis thread's CPU time (one intra-op thread runs on the calling thread). The
//! ratio is taken per repetition over all sentences, and its median is reported.

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
    if args.iter().any(|a| a == "--heads-only") {
        head_by_length(&home, phonemizer.clone(), &mut voice, runs);
        return;
    }
    if args.iter().any(|a| a == "--interleaved-only") {
        interleaved(&anchors, &home, &mut voice, &sents, runs);
        return;
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
    head_by_length(&home, phonemizer.clone(), &mut voice, runs);
    interleaved(&anchors, &home, &mut voice, &sents, runs);
}

/// First clauses of growing length, spoken head first (what the live runtime does with a reply's
/// first clause): time to the head's audio, wall and the synthesis thread's CPU (one intra-op thread
/// runs on the calling thread), with the flow run span by span (default) and whole (the flow in the
/// front), in the same run, alternating.
fn head_by_length(
    home: &Home,
    phonemizer: Arc<EnglishPhonemizer>,
    voice: &mut PiperVoice,
    runs: usize,
) {
    const CLAUSES: [&str; 4] = [
        "Oh my gosh,",
        "I have got a ton of amazing music in there.",
        "That would be my favourite song from the summer tour, the one we sang together,",
        "I have been playing these games since the very early days of video games, back when the whole family crowded around one little television,",
    ];
    let mut whole_flow = PiperVoice::load(
        &home.voice(),
        &home.ort_library(),
        phonemizer,
        &VoiceOptions {
            split_flow: false,
            ..VoiceOptions::default()
        },
    )
    .expect("load the voice");
    println!(
        "\nfirst audio of a first clause spoken head first (16-frame head), by clause length; medians of {runs}:\n"
    );
    println!(
        "| clause words | frames | flow span by span: wall / CPU ms | flow whole: wall / CPU ms | CPU ratio |"
    );
    println!("|---|---|---|---|---|");
    for text in CLAUSES {
        whole_flow.synthesize(text).expect("warm up");
        voice.synthesize(text).expect("warm up");
        let head = |v: &mut PiperVoice| -> (f64, f64, usize) {
            let (t0, c0) = (Instant::now(), thread_cpu());
            let mut at = None;
            let hop = v.hop().max(1) as usize;
            let rest = v
                .synthesize_head_first(text, StreamOptions::default(), &mut |_, plan| {
                    // the plan spans the whole clause
                    at = Some((
                        t0.elapsed().as_secs_f64() * 1e3,
                        (thread_cpu() - c0) * 1e3,
                        plan.pcm.len() / hop,
                    ));
                })
                .expect("synthesize");
            at.unwrap_or((f64::NAN, f64::NAN, rest.pcm.len() / hop))
        };
        let (mut split, mut whole) = ((vec![], vec![]), (vec![], vec![]));
        let mut frames = 0;
        for r in 0..runs {
            let order = if r % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for s in order {
                let (w, c, f) = if s {
                    head(voice)
                } else {
                    head(&mut whole_flow)
                };
                frames = f;
                let d = if s { &mut split } else { &mut whole };
                d.0.push(w);
                d.1.push(c);
            }
        }
        let (sw, sc, ww, wc) = (
            median(split.0),
            median(split.1),
            median(whole.0),
            median(whole.1),
        );
        println!(
            "| {} | {frames} | {sw:.1} / {sc:.1} | {ww:.1} / {wc:.1} | {:.2}x |",
            text.split_whitespace().count(),
            sc / wc
        );
    }
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    let mut ts = std::mem::MaybeUninit::<[i64; 2]>::uninit();
    // SAFETY: clock_gettime writes a timespec (two i64 on x86-64 Linux) into the buffer.
    unsafe {
        unsafe extern "C" {
            fn clock_gettime(clock: i32, tp: *mut [i64; 2]) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        if clock_gettime(CLOCK_THREAD_CPUTIME_ID, ts.as_mut_ptr()) != 0 {
            return f64::NAN;
        }
        let [s, ns] = ts.assume_init();
        s as f64 + ns as f64 * 1e-9
    }
}

const PIPER_COPROCESS: &str = r#"
import sys, json, time
sys.path.insert(0, sys.argv[1])
from piper_bench import load_voice, synth
voice = load_voice(sys.argv[2], 1)
for s in ("Warm up.", "The voice is ready."):
    synth(voice, s)
print("ready", flush=True)
for line in sys.stdin:
    text = line.rstrip("\n")
    c0 = time.thread_time()
    ttfa, total, dur, _ = synth(voice, text)
    cpu = time.thread_time() - c0
    print(json.dumps({"wall": total, "cpu": cpu, "audio": dur}), flush=True)
"#;

fn interleaved(
    anchors: &std::path::Path,
    home: &Home,
    voice: &mut PiperVoice,
    sents: &[(String, String)],
    runs: usize,
) {
    use std::io::{BufRead, BufReader, Write};
    let py = std::env::var_os("IDOL_ANCHORS_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/idol-anchors/venv/bin/python")
        });
    let Ok(mut child) = std::process::Command::new(&py)
        .arg("-c")
        .arg(PIPER_COPROCESS)
        .arg(anchors)
        .arg(home.voice())
        .env_remove("GLIBC_TUNABLES")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!(
            "could not start {}: no interleaved comparison",
            py.display()
        );
        return;
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    match lines.next() {
        Some(Ok(l)) if l == "ready" => {}
        other => {
            eprintln!("piper co-process did not start: {other:?}");
            return;
        }
    }
    let mut piper_once = |text: &str| -> Option<(f64, f64, f64)> {
        writeln!(stdin, "{text}").ok()?;
        let line = lines.next()?.ok()?;
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        Some((
            v["wall"].as_f64()?,
            v["cpu"].as_f64()?,
            v["audio"].as_f64()?,
        ))
    };
    let mut idol_once = |text: &str| -> (f64, f64, f64) {
        let (t0, c0) = (Instant::now(), thread_cpu());
        let s = voice.synthesize(text).expect("synthesize");
        (
            t0.elapsed().as_secs_f64(),
            thread_cpu() - c0,
            s.duration_secs(),
        )
    };
    let (mut wall_ratio, mut cpu_ratio) = (vec![], vec![]);
    let (mut idol_cpu_rtf, mut piper_cpu_rtf) = (vec![], vec![]);
    for r in 0..runs {
        let (mut iw, mut ic, mut ia) = (0.0, 0.0, 0.0);
        let (mut pw, mut pc, mut pa) = (0.0, 0.0, 0.0);
        for (i, (_, text)) in sents.iter().enumerate() {
            let piper_first = (r + i) % 2 == 0;
            let mut p = None;
            if piper_first {
                p = piper_once(text);
            }
            let (w, c, a) = idol_once(text);
            if !piper_first {
                p = piper_once(text);
            }
            let Some((w2, c2, a2)) = p else {
                eprintln!("piper co-process failed");
                return;
            };
            (iw, ic, ia) = (iw + w, ic + c, ia + a);
            (pw, pc, pa) = (pw + w2, pc + c2, pa + a2);
        }
        wall_ratio.push((iw / ia) / (pw / pa));
        cpu_ratio.push((ic / ia) / (pc / pa));
        idol_cpu_rtf.push(ic / ia);
        piper_cpu_rtf.push(pc / pa);
    }
    drop(child.kill());
    println!("\ninterleaved, sentence by sentence, {runs} repetitions, medians:\n");
    println!("| measure | idol | piper-tts | idol / piper |");
    println!("|---|---|---|---|");
    println!(
        "| RTF on CPU time (all sentences) | {:.3} | {:.3} | {:.2}x |",
        median(idol_cpu_rtf),
        median(piper_cpu_rtf),
        median(cpu_ratio)
    );
    println!(
        "| RTF on wall time, ratio per repetition | | | {:.2}x |",
        median(wall_ratio)
    );
}
