//! The Kokoro voice on the real model (voices/kokoro-v1.0.int8.onnx, the jf_alpha style table) with the
//! real Japanese dictionary and the Mandarin front end: audio of plausible length, phoneme timelines
//! that cover it exactly, determinism, and the face closing the lips on m/b/p in both languages.

use crate::common;
use idol::face::{Face, FaceConfig, Rig, Segment};
use idol::phonemize::japanese::JapanesePhonemizer;
use idol::phonemize::kokoro::{HanAs, KokoroPhonemizer};
use idol::phonemize::{PhonToken, Phonemize};
use idol::speech::Speech;
use idol::time::{SampleTime, TimeRange};
use idol::tts::kokoro::{KokoroFiles, SAMPLE_RATE};
use idol::tts::{KokoroOptions, KokoroVoice, Synthesizer};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

fn front() -> Arc<KokoroPhonemizer> {
    static F: OnceLock<Arc<KokoroPhonemizer>> = OnceLock::new();
    F.get_or_init(|| {
        let home = common::home();
        let ja = JapanesePhonemizer::load(&home.ja_dictionary()).expect("load the dictionary");
        Arc::new(KokoroPhonemizer::new(Some(ja), None, HanAs::Mandarin))
    })
    .clone()
}

fn voice() -> MutexGuard<'static, KokoroVoice> {
    static V: OnceLock<Mutex<KokoroVoice>> = OnceLock::new();
    V.get_or_init(|| {
        let home = common::home();
        Mutex::new(
            KokoroVoice::load(
                &KokoroFiles::in_home(&home),
                &home.ort_library(),
                front(),
                &KokoroOptions::default(),
            )
            .expect("load the Kokoro voice"),
        )
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

fn check_timelines(s: &Speech) {
    s.validate().expect("phonemes cover the audio exactly");
    let n = s.pcm.len() as u64;
    assert_eq!(s.phonemes.span().unwrap().start().get(), 0);
    assert_eq!(s.phonemes.span().unwrap().end().get(), n);
    for p in s.phonemes.iter() {
        assert!(!p.range.is_empty(), "empty phoneme span {p:?}");
    }
    for w in s.words.iter() {
        assert!(w.end() > w.start() && w.end().get() <= n, "word {w:?}");
    }
}

/// Seconds of audio per spoken mora/syllable must be speech-like: 60..400 ms each.
fn plausible(s: &Speech, syllables: usize) {
    let secs = s.pcm.len() as f64 / SAMPLE_RATE as f64;
    let per = secs / syllables as f64;
    assert!(
        (0.06..0.4).contains(&per),
        "{secs:.2} s for {syllables} syllables"
    );
    let peak = s.pcm.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(peak > 0.05, "silent audio (peak {peak})");
}

#[test]
fn japanese_speech_has_exact_timings() {
    let mut v = voice();
    // み-ん-な こ-ん-ば-ん-は: 8 morae, plus the pause of the comma.
    let s = v.synthesize("みんな、こんばんは！").unwrap();
    check_timelines(&s);
    plausible(&s, 8);
    let symbols: Vec<&str> = s.phonemes.iter().map(|p| p.value.symbol.as_str()).collect();
    // The moraic n before b is an m (a lip closure), as is み's m.
    assert!(symbols.contains(&"mʲ"), "{symbols:?}");
    assert!(symbols.contains(&"m"), "{symbols:?}");
    assert!(symbols.contains(&"b"), "{symbols:?}");
    assert_eq!(s.words.len(), 2, "{:?}", s.words);
    // Kanji read through the dictionary.
    let s = v
        .synthesize("今日は本当にありがとうございました。")
        .unwrap();
    check_timelines(&s);
    plausible(&s, 17);
}

#[test]
fn mandarin_speech_has_exact_timings() {
    let mut v = voice();
    // 大家好，欢迎来到直播间！ 10 syllables.
    let s = v.synthesize("大家好，欢迎来到直播间！").unwrap();
    check_timelines(&s);
    plausible(&s, 10);
    let symbols: Vec<&str> = s.phonemes.iter().map(|p| p.value.symbol.as_str()).collect();
    // 播 is an unaspirated p (written p), 直 a retroflex affricate.
    assert!(symbols.contains(&"p"), "{symbols:?}");
    assert!(symbols.contains(&"ꭧ"), "{symbols:?}");
}

#[test]
fn the_same_text_gives_the_same_bytes() {
    let mut v = voice();
    let a = v.synthesize("猫が好きです。").unwrap();
    let b = v.synthesize("猫が好きです。").unwrap();
    assert_eq!(a.pcm, b.pcm);
    assert_eq!(a.phonemes, b.phonemes);
}

#[test]
fn the_face_closes_on_m_b_p_in_both_languages() {
    let mut v = voice();
    let face = Face::new(Rig::builtin("arkit52").unwrap(), FaceConfig::default()).unwrap();
    for text in ["みんな、ばんごはんはパンです。", "妈妈不怕爸爸买面包。"]
    {
        let s = v.synthesize(text).unwrap();
        let frames = face
            .render(&Segment {
                range: TimeRange::new(SampleTime::ZERO, SampleTime(s.pcm.len() as u64)).unwrap(),
                phonemes: &s.phonemes,
                words: Some(&s.words),
                cues: &[],
            })
            .unwrap();
        let ch = |name: &str| frames.channels().iter().position(|x| x == name).unwrap();
        let (jaw, close) = (ch("jawOpen"), ch("mouthClose"));
        let period = (SAMPLE_RATE / FaceConfig::default().fps) as u64;
        let mut seen = 0;
        for p in s.phonemes.iter() {
            let sym = p.value.symbol.as_str();
            if !matches!(sym.chars().next(), Some('m' | 'b' | 'p')) {
                continue;
            }
            let (lo, hi) = (
                p.start().get().saturating_sub(period / 2),
                p.end().get() + period / 2,
            );
            let closed = (0..frames.len()).any(|i| {
                let f = frames.get(i).unwrap();
                (lo..=hi).contains(&f.at.get()) && f.weights[jaw] - f.weights[close] < 0.05
            });
            assert!(
                closed,
                "{text}: lips never close during `{sym}` at {}",
                p.range
            );
            seen += 1;
        }
        // み, ば, パ; 妈 妈 不 怕 爸 爸 买 面 包.
        assert!(seen >= 3, "{text}: only {seen} bilabials");
    }
}

#[test]
fn japanese_front_end_reads_the_dictionary() {
    let f = front();
    let ipa = |t: &str| -> String {
        f.phonemize(t)
            .unwrap()
            .iter()
            .map(|t| match t {
                PhonToken::Word { ipa, .. } => ipa.clone(),
                PhonToken::Punct(c) => c.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    // 東京 by its pronunciation: long vowels (kana in the clause make its Han Japanese).
    let tokyo = ipa("東京へ行きます");
    assert!(tokyo.starts_with("toːkʲoː"), "{tokyo}");
    // Han alone goes to the Mandarin front end.
    assert!(ipa("東京").contains('→'), "{}", ipa("東京"));
    // The topic particle は is read わ.
    assert!(ipa("今日は").ends_with("βa"), "{}", ipa("今日は"));
    // Digits read as Japanese numbers.
    assert!(
        ipa("300円です").starts_with("sambʲakɯ"),
        "{}",
        ipa("300円です")
    );
}

/// Every word's place slices the clause to the word's own text, the places run forward without
/// overlapping, and together they cover every letter and digit of the clause (nothing spoken is
/// unplaced, nothing written is lost).
fn check_places(clause: &str, words: &[(String, Option<std::ops::Range<usize>>)]) {
    let mut last = 0;
    let mut covered = vec![false; clause.len()];
    for (text, src) in words {
        let r = src
            .clone()
            .unwrap_or_else(|| panic!("{clause:?}: {text:?} has no place"));
        assert_eq!(&clause[r.clone()], text, "{clause:?}: {r:?}");
        assert!(
            r.start >= last,
            "{clause:?}: {text:?} at {r:?} overlaps the word before"
        );
        last = r.end;
        covered[r].iter_mut().for_each(|c| *c = true);
    }
    for (at, c) in clause.char_indices() {
        if c.is_alphanumeric() {
            assert!(covered[at], "{clause:?}: {c:?} at {at} is in no word");
        }
    }
}

#[test]
fn words_point_back_into_the_clause() {
    let home = common::home();
    let ja = JapanesePhonemizer::load(&home.ja_dictionary()).unwrap();
    let en: Arc<dyn Phonemize> = Arc::new(idol::phonemize::EnglishPhonemizer::load(&home).unwrap());
    let f = KokoroPhonemizer::new(Some(ja), Some(en), HanAs::Mandarin);
    for clause in [
        // Japanese: kanji, kana, a full-width number and a year, a geminate joining words.
        "今日は２０２６年12月7日、みんなでカラオケに行っちゃおう！",
        // Mandarin: a year read digit by digit, a percentage, a decimal.
        "我们在2026年有50%的机会，一起去北京吧！价格是3.5元。",
        // Mixed: Latin words and a number inside a Mandarin and a Japanese clause.
        "我喜欢 Rust 语言，它有 42 个 crates。",
        "Hello みんな、今日も配信するよ! 10 minutes",
    ] {
        let words: Vec<(String, Option<std::ops::Range<usize>>)> = f
            .phonemize_located(clause)
            .unwrap()
            .into_iter()
            .filter_map(|l| match l.token {
                PhonToken::Word { text, .. } => Some((text, l.src)),
                PhonToken::Punct(_) => None,
            })
            .collect();
        check_places(clause, &words);
    }
    // The spoken words carry the places through the voice.
    let mut v = voice();
    for clause in [
        "みんな、12時にまた会おうね。",
        "大家好，今天是2026年12月7日！",
    ] {
        let s = v.synthesize(clause).unwrap();
        let words: Vec<_> = s
            .words
            .iter()
            .map(|w| (w.value.text.clone(), w.value.src.clone()))
            .collect();
        check_places(clause, &words);
    }
}

/// `idol say … --voice jf_alpha` end to end: Japanese and Mandarin each come out as speech, phoneme
/// timings and frames, and the frames close the lips on every m/b/p (jawOpen no more than
/// mouthClose, within half a frame of the phoneme).
#[test]
fn say_with_kokoro_closes_the_lips_in_both_languages() {
    let home = common::home();
    let dir = tempfile::tempdir().unwrap();
    for (k, text) in ["みんな、ばんごはんはパンです。", "妈妈不怕爸爸买面包。"]
        .iter()
        .enumerate()
    {
        let out = dir.path().join(format!("o{k}"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_idol"))
            .arg("--home")
            .arg(home.root())
            .args(["say", text, "--voice", "jf_alpha", "--fps", "60", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ph: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("phonemes.json")).unwrap()).unwrap();
        assert_eq!(ph["sample_rate"], SAMPLE_RATE);
        let jsonl = std::fs::read_to_string(out.join("frames.jsonl")).unwrap();
        let mut lines = jsonl.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        let channels: Vec<String> = serde_json::from_value(header["channels"].clone()).unwrap();
        let ch = |n: &str| channels.iter().position(|c| c == n).unwrap();
        let (jaw, close) = (ch("jawOpen"), ch("mouthClose"));
        let frames: Vec<(u64, Vec<f32>)> = lines
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["sample"].as_u64().unwrap(),
                    serde_json::from_value(v["weights"].clone()).unwrap(),
                )
            })
            .collect();
        let samples = ph["samples"].as_u64().unwrap();
        assert_eq!(
            frames.len() as u64,
            SampleTime::frames_in(samples, SAMPLE_RATE, 60)
        );
        let half = (SAMPLE_RATE / 60 / 2) as u64;
        let mut seen = 0;
        for p in ph["phonemes"]["items"].as_array().unwrap() {
            let sym = p["symbol"].as_str().unwrap();
            if !matches!(sym.chars().next(), Some('m' | 'b' | 'p')) {
                continue;
            }
            let (s, e) = (p["start"].as_u64().unwrap(), p["end"].as_u64().unwrap());
            let closed = frames.iter().any(|(at, w)| {
                (s.saturating_sub(half)..=e + half).contains(at) && w[jaw] - w[close] < 0.05
            });
            assert!(
                closed,
                "{text}: lips never close during `{sym}` at {s}..{e}"
            );
            seen += 1;
        }
        assert!(seen >= 3, "{text}: only {seen} bilabials");
    }
}

/// The voice runs the model cut in two (front, then the decoder on the frames); on all the frames
/// that is the uncut graph's audio, bit for bit.
#[test]
fn the_cut_model_speaks_like_the_whole_graph() {
    use idol::tts::kokoro::{encode, read_style_table, read_vocab};
    use ort::value::Tensor;
    let home = common::home();
    let files = KokoroFiles::in_home(&home);
    let tokens = front().phonemize("今日は本当にありがとう。").unwrap();
    let mine = voice().synthesize_tokens(&tokens).unwrap();
    let vocab = read_vocab(&files.vocab).unwrap();
    let ids = encode(&tokens, &vocab).ids;
    let (rows, styles) = read_style_table(&files.voices, "jf_alpha").unwrap();
    let row = (ids.len() - 2).clamp(1, rows) - 1;
    let env = idol::tts::piper::ort_environment(&home.ort_library()).unwrap();
    let mut whole = ort::session::Session::builder(&env)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_file(&files.model)
        .unwrap();
    let n = ids.len();
    let style = styles[row * 256..(row + 1) * 256].to_vec();
    let inputs: Vec<(String, ort::session::SessionInputValue<'static>)> = vec![
        (
            "tokens".into(),
            Tensor::from_array(([1usize, n], ids)).unwrap().into(),
        ),
        (
            "style".into(),
            Tensor::from_array(([1usize, 256], style)).unwrap().into(),
        ),
        (
            "speed".into(),
            Tensor::from_array(([1usize], vec![1.0f32])).unwrap().into(),
        ),
    ];
    let out = whole.run(inputs).unwrap();
    let audio = out["audio"].try_extract_tensor::<f32>().unwrap().1.to_vec();
    assert_eq!(audio.len(), mine.pcm.len());
    assert!(
        audio == mine.pcm,
        "the cut model's audio differs from the graph's"
    );
}

/// Head first: the head is the clause's first frames, the plan is the whole clause's timelines,
/// head + rest are exactly as long as the clause spoken whole with the same timelines, the rest
/// is the whole clause's audio after a 10 ms seam, and the head is close to it.
#[test]
fn head_first_gives_the_first_frames_early_and_the_rest_exactly() {
    use idol::tts::kokoro::{HEAD_FRAMES, SEAM};
    let mut v = voice();
    let hop = v.hop() as usize;
    for clause in [
        "みんな、今日も一緒に楽しく歌いましょうね。",
        "大家好，欢迎来到直播间！",
    ] {
        let whole = v.synthesize(clause).unwrap();
        let mut heads = Vec::new();
        let rest = v
            .synthesize_head_first(clause, &mut |head, plan| heads.push((head, plan)))
            .unwrap();
        assert_eq!(heads.len(), 1, "{clause}: one head");
        let (head, plan) = heads.pop().unwrap();
        check_timelines(&head);
        check_timelines(&rest);
        assert_eq!(head.pcm.len(), HEAD_FRAMES * hop);
        assert_eq!(plan.pcm.len(), whole.pcm.len());
        assert_eq!(
            plan.phonemes, whole.phonemes,
            "{clause}: the plan is the clause's"
        );
        assert_eq!(plan.words, whole.words);
        let mut joined = head.clone();
        idol::tts::append(&mut joined, rest.clone());
        assert_eq!(joined.pcm.len(), whole.pcm.len());
        // Exact durations: head and rest are the whole clause's timelines cut where the head ends.
        let at = head.pcm.len();
        let (mut p, mut w) = (whole.phonemes.clone(), whole.words.clone());
        let (p_rest, w_rest) = (
            p.split_off(SampleTime(at as u64)),
            w.split_off(SampleTime(at as u64)),
        );
        assert_eq!(head.phonemes, p, "{clause}: exact durations");
        assert_eq!(rest.phonemes, p_rest, "{clause}: exact durations");
        assert_eq!(head.words, w);
        assert_eq!(rest.words, w_rest);
        assert_eq!(
            &joined.pcm[at + SEAM..],
            &whole.pcm[at + SEAM..],
            "{clause}: the rest is the whole clause's audio"
        );
        // The head: the decoder on a window, close to the whole clause's start.
        let diff = joined.pcm[..at + SEAM]
            .iter()
            .zip(&whole.pcm)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let peak = whole.pcm.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(
            diff < 0.1 * peak,
            "{clause}: head differs by {diff} (peak {peak})"
        );
        // Deterministic: the same bytes again.
        let mut again = Vec::new();
        let rest2 = v
            .synthesize_head_first(clause, &mut |h, _| again.push(h))
            .unwrap();
        assert_eq!(again[0].pcm, head.pcm);
        assert_eq!(rest2.pcm, rest.pcm);
    }
    // At a fast pace the leading pause is shorter than a head: spoken whole, no head.
    v.set_style(Some(0.4), 0.0);
    let mut called = false;
    let s = v
        .synthesize_head_first("はい、そうです。", &mut |_, _| called = true)
        .unwrap();
    let whole = v.synthesize("はい、そうです。").unwrap();
    v.set_style(None, 0.0);
    assert!(!called);
    assert_eq!(s.pcm, whole.pcm);
}

/// `idol lipsync --transcript` speaks the transcript with the configured voice: with `[voice] model
/// = "jf_alpha"` a Japanese transcript is spoken by Kokoro and aligned to a recording of it (here
/// another voice of the table, jf_gongitsune, says it), and the mouth closes on its m/b/p.
#[test]
fn lipsync_aligns_a_japanese_transcript_with_the_kokoro_voice() {
    let home = common::home();
    let dir = tempfile::tempdir().unwrap();
    let text = "みんな、ばんごはんはパンです。";
    let take = dir.path().join("take");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_idol"))
        .arg("--home")
        .arg(home.root())
        .args(["say", text, "--voice", "jf_gongitsune", "--out"])
        .arg(&take)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let config = dir.path().join("ja.toml");
    std::fs::write(&config, "[voice]\nmodel = \"jf_alpha\"\n").unwrap();
    let lipsync = |transcript: &str, out: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_idol"))
            .arg("--home")
            .arg(home.root())
            .arg("--config")
            .arg(&config)
            .arg("lipsync")
            .arg(take.join("speech.wav"))
            .args(["--transcript", transcript, "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    let out = dir.path().join("frames.tsv");
    let o = lipsync(text, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("does not seem to say"), "{err}");
    // Rhubarb cues: closed lips (A) for the m, the b and the p.
    let tsv = std::fs::read_to_string(&out).unwrap();
    let shapes: Vec<&str> = tsv.lines().filter_map(|l| l.split('\t').nth(1)).collect();
    assert!(
        shapes.iter().filter(|s| **s == "A").count() >= 3,
        "{shapes:?}"
    );
    // A transcript the take does not say: a warning, and the mouth from the audio alone.
    let o = lipsync(
        "きょうはとてもさむいので、あたたかいおちゃをのみたいです。",
        &dir.path().join("wrong.tsv"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("does not seem to say"), "{err}");
}

/// `idol fetch` with only `[voice] model = "jf_alpha"` configured installs (here: verifies) the
/// Kokoro model, its vocabulary and voice table and the Japanese dictionary, and `idol check`
/// lists them.
#[test]
fn fetch_and_check_cover_a_kokoro_voice() {
    let home = common::home();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ja.toml");
    std::fs::write(&config, "[voice]\nmodel = \"jf_alpha\"\n").unwrap();
    for cmd in ["fetch", "check"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_idol"))
            .arg("--home")
            .arg(home.root())
            .arg("--config")
            .arg(&config)
            .arg(cmd)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{cmd}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        for asset in ["kokoro-v1.0", "kokoro-vocab", "kokoro-voices-ja"] {
            assert!(out.contains(asset), "{cmd} does not list {asset}: {out}");
        }
    }
}
