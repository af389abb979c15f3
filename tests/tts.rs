//! The voice on the real Piper voice (voices/en_US-joe-medium.onnx) and ONNX Runtime library.

use crate::common;
use idol::phonemize::{EnglishPhonemizer, Phonemize};
use idol::speech::{Speech, Stress};
use idol::tts::{PiperVoice, Synthesizer, TtsError, VoiceOptions, wav};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The built-in English phonemizer, loaded once.
fn english() -> Arc<dyn Phonemize> {
    static P: OnceLock<Arc<EnglishPhonemizer>> = OnceLock::new();
    P.get_or_init(|| {
        Arc::new(EnglishPhonemizer::load(&common::home()).expect("load the phonemizer"))
    })
    .clone()
}

fn load(options: &VoiceOptions) -> Result<PiperVoice, TtsError> {
    let home = common::home();
    PiperVoice::load(&home.voice(), &home.ort_library(), english(), options)
}

/// One loaded voice shared by the tests (loading takes about a second).
fn voice(seed: u64) -> MutexGuard<'static, PiperVoice> {
    static VOICE: OnceLock<Mutex<PiperVoice>> = OnceLock::new();
    let v =
        VOICE.get_or_init(|| Mutex::new(load(&VoiceOptions::default()).expect("load the voice")));
    let mut g = v.lock().unwrap_or_else(|e| e.into_inner());
    let inf = g.config().inference;
    g.set_scales(inf.noise_scale, inf.length_scale, inf.noise_w);
    g.set_seed(seed);
    g
}

fn check_timelines(s: &Speech) {
    s.validate().expect("phonemes cover the audio exactly");
    assert!(!s.pcm.is_empty());
    let n = s.pcm.len() as u64;
    assert_eq!(s.phonemes.span().unwrap().end().get(), n);
    for p in s.phonemes.iter() {
        assert!(!p.range.is_empty(), "empty phoneme span {p:?}");
    }
    assert!(s.words.is_contiguous() || s.words.len() > 1);
    let mut prev_end = 0;
    for w in s.words.iter() {
        assert!(
            w.start().get() >= prev_end && w.end() > w.start(),
            "word {w:?}"
        );
        assert!(w.end().get() <= n);
        // Every word starts and ends on a phoneme boundary.
        assert!(s.phonemes.iter().any(|p| p.start() == w.start()));
        assert!(s.phonemes.iter().any(|p| p.end() == w.end()));
        prev_end = w.end().get();
    }
}

#[test]
fn durations_sum_to_the_sample_count() {
    let mut v = voice(1);
    let hop = v.hop();
    assert_eq!(hop, 256);
    let s = v
        .synthesize("Hello everyone, welcome back to the stream!")
        .unwrap();
    assert_eq!(s.sample_rate, 22050);
    check_timelines(&s);
    // The voice's durations are whole frames: every phoneme span but the last is a multiple of the hop.
    assert_eq!(s.pcm.len() as u64 % hop, 0);
    for p in s.phonemes.iter() {
        assert_eq!(p.range.len() % hop, 0, "{p:?}");
    }
    let words: Vec<_> = s.words.iter().map(|w| w.value.text.as_str()).collect();
    assert_eq!(
        words,
        [
            "Hello", "everyone", "welcome", "back", "to", "the", "stream"
        ]
    );
    let syms: Vec<_> = s.phonemes.iter().map(|p| p.value.symbol.as_str()).collect();
    assert!(
        syms.starts_with(&["h", "ə", "l", "oʊ"]) || syms.starts_with(&["_", "h", "ə", "l", "oʊ"]),
        "{syms:?}"
    );
    assert!(syms.contains(&"_"), "the comma makes a pause: {syms:?}");
    assert!(s.phonemes.iter().any(|p| p.value.stress == Stress::Primary));
    assert!(
        s.phonemes
            .iter()
            .any(|p| p.value.stress == Stress::Secondary)
    );
}

#[test]
fn same_seed_same_bytes_and_different_seeds_differ() {
    let text = "Thanks for the follow, you are amazing.";
    let a = voice(7).synthesize(text).unwrap();
    let b = voice(7).synthesize(text).unwrap();
    let c = voice(8).synthesize(text).unwrap();
    let (wa, wb, wc) = (
        wav::wav_bytes(&a.pcm, a.sample_rate),
        wav::wav_bytes(&b.pcm, b.sample_rate),
        wav::wav_bytes(&c.pcm, c.sample_rate),
    );
    assert_eq!(wa, wb);
    assert_eq!(a.phonemes, b.phonemes);
    assert_ne!(wa, wc);
    // Consecutive clauses of one render use different noise streams.
    let mut v = voice(7);
    let first = v.synthesize(text).unwrap();
    let second = v.synthesize(text).unwrap();
    assert_eq!(first.pcm, a.pcm);
    assert_ne!(second.pcm, a.pcm);
}

#[test]
fn noise_free_synthesis_ignores_the_seed() {
    let mut v = voice(1);
    v.set_scales(0.0, 1.0, 0.0);
    let a = v.synthesize("Good evening, chat.").unwrap();
    v.set_seed(99);
    let b = v.synthesize("Good evening, chat.").unwrap();
    assert_eq!(a.pcm, b.pcm);
    check_timelines(&a);
}

#[test]
fn length_scale_slows_speech_down() {
    let mut v = voice(3);
    let normal = v
        .synthesize("This is a test of the speaking rate.")
        .unwrap();
    v.set_seed(3);
    v.set_scales(0.667, 1.5, 0.8);
    let slow = v
        .synthesize("This is a test of the speaking rate.")
        .unwrap();
    check_timelines(&slow);
    assert!(slow.pcm.len() as f64 > 1.3 * normal.pcm.len() as f64);
}

#[test]
fn a_sixty_word_paragraph_renders() {
    let text = "Welcome back to the stream, everyone. Today we are going to build a tiny house in the \
                forest, decorate it with lanterns, and then go fishing by the river until the sun goes \
                down. If you have any ideas for the garden, write them in the chat and I will try my best \
                to make them happen. Remember to stay hydrated and be kind to each other.";
    assert!(text.split_whitespace().count() >= 60);
    let s = voice(5).synthesize(text).unwrap();
    check_timelines(&s);
    assert!(s.duration_secs() > 12.0, "{} s", s.duration_secs());
    assert!(s.words.len() >= 60);
    let peak = s.pcm.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(peak > 0.1 && peak <= 1.0, "peak {peak}");
}

#[test]
fn empty_and_unspeakable_text_are_errors() {
    use idol::phonemize::PhonToken;
    let mut v = voice(1);
    assert!(matches!(v.synthesize("   "), Err(TtsError::Empty)));
    let e = v.synthesize("... !!! ---").unwrap_err();
    assert!(e.to_string().contains("nothing speakable"), "{e}");
    // Symbols the voice has no id for are skipped (with a warning); the rest is spoken.
    let word = |text: &str, ipa: &str| PhonToken::Word {
        text: text.into(),
        ipa: ipa.into(),
    };
    let s = v
        .synthesize_tokens(&[word("hello", "həl☃ˈoʊ"), word("there", "ðˈɛɹ")])
        .unwrap();
    assert_eq!(s.words.len(), 2);
    assert!(!s.phonemes.iter().any(|p| p.value.symbol.contains('☃')));
    let e = v.synthesize_tokens(&[word("x", "☃☃")]).unwrap_err();
    assert!(e.to_string().contains("nothing speakable"), "{e}");
}

#[test]
fn missing_voice_names_its_path_and_the_fix() {
    let home = common::home();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody-here.onnx");
    let e = PiperVoice::load(
        &path,
        &home.ort_library(),
        english(),
        &VoiceOptions::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("idol fetch --voice PATH/nobody-here.onnx"),
        "{msg}"
    );
}

#[test]
fn corrupt_voice_names_its_path_and_the_fix() {
    let home = common::home();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.onnx");
    std::fs::write(&path, b"\x0a\xff\xff not a model").unwrap();
    std::fs::copy(
        home.path("voices/en_US-joe-medium.onnx.json"),
        dir.path().join("broken.onnx.json"),
    )
    .unwrap();
    let load = || {
        PiperVoice::load(
            &path,
            &home.ort_library(),
            english(),
            &VoiceOptions::default(),
        )
    };
    let msg = load().unwrap_err().to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("idol fetch --voice PATH/broken.onnx"), "{msg}");
    // A truncated real model (valid protobuf prefix cut mid-field) fails the same way.
    let real = std::fs::read(home.voice()).unwrap();
    std::fs::write(&path, &real[..real.len() / 2]).unwrap();
    let msg = load().unwrap_err().to_string();
    assert!(
        msg.contains("broken.onnx") && msg.contains("idol fetch"),
        "{msg}"
    );
    // A corrupt config names the config.
    std::fs::write(dir.path().join("broken.onnx.json"), b"{").unwrap();
    let msg = load().unwrap_err().to_string();
    assert!(msg.contains("broken.onnx.json"), "{msg}");
}

#[test]
fn speaker_options_are_checked() {
    let e = load(&VoiceOptions {
        speaker: Some(idol::tts::Speaker::Id(3)),
        ..VoiceOptions::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("single speaker"), "{e}");
}

#[test]
fn head_first_pieces_join_into_the_chunked_clause() {
    use idol::tts::piper::StreamOptions;
    let text = "The first words go out while the rest of this clause is still being made.";
    let chunked = voice(5)
        .synthesize_chunked(text, StreamOptions::default(), &mut |_| {})
        .unwrap();
    let mut head = None;
    let rest = voice(5)
        .synthesize_head_first(text, StreamOptions::default(), &mut |h, plan| {
            head = Some((h, plan))
        })
        .unwrap();
    let (head, plan) = head.expect("a clause longer than the first chunk has a head");
    head.validate().unwrap();
    rest.validate().unwrap();
    // The pieces are the chunked clause, cut in two: the same samples, and timelines that join.
    let a = head.pcm.len();
    assert!(a > 0 && a < chunked.pcm.len());
    assert_eq!(a + rest.pcm.len(), chunked.pcm.len());
    assert_eq!(head.pcm[..], chunked.pcm[..a]);
    assert_eq!(rest.pcm[..], chunked.pcm[a..]);
    // The plan (known before any audio) is the clause's timelines.
    assert_eq!(plan.pcm.len(), chunked.pcm.len());
    assert_eq!(plan.words, chunked.words);
    assert_eq!(plan.phonemes, chunked.phonemes);
    let mut joined = head.clone();
    idol::tts::append(&mut joined, rest.clone());
    // A phoneme across the cut is in both pieces; everything else lines up exactly.
    let starts = |s: &idol::speech::Speech| -> Vec<u64> {
        s.phonemes.iter().map(|p| p.start().get()).collect()
    };
    let mut want = starts(&chunked);
    want.sort();
    let got: std::collections::BTreeSet<u64> = starts(&joined).into_iter().collect();
    assert!(want.iter().all(|s| got.contains(s)));
    assert!(got.contains(&(a as u64)));
}

/// Signal-to-noise ratio of `other` against `reference`, in dB.
fn snr_db(reference: &[f32], other: &[f32]) -> f64 {
    let err: f64 = reference
        .iter()
        .zip(other)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum();
    let sig: f64 = reference.iter().map(|x| f64::from(*x).powi(2)).sum();
    10.0 * (sig / err.max(1e-30)).log10()
}

#[test]
fn chunked_decoding_matches_the_whole_clause() {
    use idol::tts::piper::StreamOptions;
    let text = "Streaming audio should sound the same as the whole clause, seam by seam.";
    let whole = voice(11).synthesize(text).unwrap();
    for (options, min_snr) in [
        (StreamOptions::default(), 90.0),
        (
            StreamOptions {
                first_frames: 10,
                chunk_frames: 30,
                context_frames: 16,
            },
            100.0,
        ),
    ] {
        let mut chunks = Vec::new();
        let streamed = voice(11)
            .synthesize_chunked(text, options, &mut |c| chunks.push(c.len()))
            .unwrap();
        assert!(chunks.len() > 2, "{chunks:?}");
        assert_eq!(chunks.iter().sum::<usize>(), whole.pcm.len());
        assert_eq!(streamed.phonemes, whole.phonemes);
        let s = snr_db(&whole.pcm, &streamed.pcm);
        assert!(s > min_snr, "{options:?}: SNR {s:.1} dB");
        eprintln!("{options:?}: SNR {s:.1} dB");
    }
}

/// The joe voice's flow is cut out of the front (VITS: four coupling layers of four kernel-5
/// convolutions, so 32 frames of context either side), and a long clause spoken head first gives the
/// whole clause's audio: its head from a flow run over the head's span only, its rest from a second.
#[test]
fn head_first_runs_the_flow_on_the_head_span_only() {
    let text = "I have been playing these games since the very early days of video games, and I still love them.";
    let whole = voice(5).synthesize(text).unwrap();
    let mut v = voice(5);
    assert_eq!(v.flow_reach(), Some(32));
    let mut head = None;
    let rest = v
        .synthesize_head_first(
            text,
            idol::tts::piper::StreamOptions::default(),
            &mut |h, _plan| head = Some(h),
        )
        .unwrap();
    let head = head.expect("a long clause has a head");
    assert_eq!(head.pcm.len() + rest.pcm.len(), whole.pcm.len());
    let joined: Vec<f32> = head.pcm.iter().chain(&rest.pcm).copied().collect();
    let snr = snr_db(&whole.pcm, &joined);
    assert!(snr > 90.0, "SNR {snr:.1} dB");
}

/// A truncated ONNX Runtime library (an interrupted copy) is refused with its path before it is
/// loaded: loading it once killed `idol say` with SIGBUS and no message at all. (ELF: Linux's.)
#[cfg(target_os = "linux")]
#[test]
fn truncated_runtime_library_is_named_not_a_crash() {
    let home = common::home();
    let real = std::fs::read(home.ort_library()).unwrap();
    idol::tts::piper::check_elf_complete(&home.ort_library()).expect("the real library is whole");
    let dir = tempfile::tempdir().unwrap();
    for sub in ["models", "voices"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    for rel in [
        idol::assets::CMUDICT,
        idol::assets::G2P_WEIGHTS,
        idol::assets::DEFAULT_VOICE,
        "voices/en_US-joe-medium.onnx.json",
    ] {
        std::os::unix::fs::symlink(home.path(rel), dir.path().join(rel)).unwrap();
    }
    let lib = dir.path().join(idol::assets::ORT_LIBRARY);
    std::fs::write(&lib, &real[..real.len() / 3]).unwrap();
    let e = idol::tts::piper::check_elf_complete(&lib).unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_idol"))
        .arg("--home")
        .arg(dir.path())
        .args(["say", "Hello.", "--out"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // An exit code, not a signal.
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "exit {:?}: {err}",
        out.status
    );
    assert!(
        err.contains("libonnxruntime.so.1.32.0") && err.contains("idol fetch"),
        "{err}"
    );
}

/// `idol say` refuses voice settings outside idol.toml's ranges before speaking (a NaN noise width
/// once failed inside ONNX Runtime with a Reshape error; a negative or huge noise was taken), refuses
/// an --out that is a file before speaking, and no longer claims that frames.jsonl is not written
/// when --fps is given.
#[test]
fn say_checks_its_arguments_first() {
    let home = common::home();
    let dir = tempfile::tempdir().unwrap();
    let say = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_idol"))
            .arg("--home")
            .arg(home.root())
            .arg("say")
            .args(args)
            .output()
            .unwrap()
    };
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    for (args, expect) in [
        (
            &["Hi.", "--noise-w", "nan"][..],
            "--noise-w must be within 0..=5",
        ),
        (
            &["Hi.", "--noise-scale", "-1"][..],
            "--noise-scale must be within 0..=5",
        ),
        (
            &["Hi.", "--noise-scale", "1e9"][..],
            "--noise-scale must be within 0..=5",
        ),
        (
            &["Hi.", "--rate", "1000"][..],
            "--rate must be within 0.1..=10",
        ),
        (&["Hi.", "--fps", "0"][..], "1..=1000"),
    ] {
        let o = say(&[args, &["--out", out_s]].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    let file = dir.path().join("a_file");
    std::fs::write(&file, "x").unwrap();
    let o = say(&["Hi.", "--out", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is a file: name a folder"), "{err}");
    let o = say(&["Hi.", "--fps", "30", "--out", out_s]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("not written"), "{err}");
    assert!(out.join("frames.jsonl").exists());
}
