//! The host's voice on the real models: Whisper (CTranslate2 weights converted for candle) on real
//! recordings, Silero VAD on them with silence around, and a served idol answering a host utterance.

use crate::common::{data, home};
use idol::listen::{Whisper, WhisperFiles, word_error_rate};

/// Real recordings and what is said in them (tests/data, see its licences).
pub const FIXTURES: [(&str, &str); 3] = [
    ("bobby.wav", "Bobby ripped the ledger."),
    ("mary.wav", "Mary rolled the barrel."),
    (
        "arctic_a0009.wav",
        "He turned sharply, and faced Gregson across the table.",
    ),
];

/// A fixture as 16 kHz mono.
pub fn pcm16k(name: &str) -> Vec<f32> {
    let a = idol::audio::decode_file(data(name)).unwrap();
    idol::audio::resample(&a.samples, a.sample_rate, 16_000)
}

/// What faster-whisper 1.2.1 (CTranslate2, float32, greedy, no timestamps) writes for each fixture
/// with the same tiny.en weights (benches/listen.rs prints both).
const REFERENCE_TRANSCRIPTS: [&str; 3] = [
    "Bobby ripped the ledger.",
    "Mary rolled the barrel.",
    "He turned sharply and faced Gregson across the table.",
];

#[test]
fn whisper_tiny_en_transcribes_real_speech() {
    let home = home();
    let mut w = Whisper::load(&WhisperFiles::pinned(&home, "tiny.en"), None).unwrap();
    for ((wav, reference), want) in FIXTURES.into_iter().zip(REFERENCE_TRANSCRIPTS) {
        let text = w.text(&pcm16k(wav)).unwrap();
        eprintln!(
            "{wav}: {text:?} (WER {:.2})",
            word_error_rate(reference, &text)
        );
        // The same words, to the punctuation, as the CTranslate2 reference on these weights.
        assert_eq!(text, want, "{wav}");
    }
}

/// idol's own Whisper network (f32 rows, a KV cache) against candle's implementation of the same
/// model on the same converted weights and the same 30 s window: the encoder's output and the
/// first decoding step's logits agree to rounding (candle's GELU is the tanh approximation, ours
/// the erf form both Whisper and CTranslate2 use, so they are close, not equal), and the greedy
/// token after the prompt is the same.
#[test]
fn whisper_network_agrees_with_candles_whisper() {
    use candle_core::{Device, IndexOp, Tensor};
    use idol::listen::ctranslate2::Ct2Model;
    use idol::listen::mel;
    let home = home();
    let files = WhisperFiles::pinned(&home, "tiny.en");
    let ct2 = Ct2Model::load(&files.model).unwrap();
    let cfg = ct2.whisper_config().unwrap();
    let tensors = ct2.whisper_tensors(&Device::Cpu).unwrap();
    let pos = ct2
        .get("encoder/position_encodings/encodings")
        .unwrap()
        .to_f32();
    let net = idol::listen::net::Net::new(tensors.clone(), &cfg, pos).unwrap();
    let embed = tensors["model.decoder.embed_tokens.weight"].clone();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &Device::Cpu);
    let mut model =
        candle_transformers::models::whisper::model::Whisper::load(&vb, cfg.clone()).unwrap();
    let pcm = pcm16k("mary.wav");
    let filters = mel::mel_filters(cfg.num_mel_bins);
    let (spec, frames) = mel::log_mel(&pcm, &filters, cfg.num_mel_bins);
    let window = mel::pad_frames(&spec, cfg.num_mel_bins, frames, 0, mel::N_FRAMES);
    let ours = net.encode(&window, mel::N_FRAMES);
    let input =
        Tensor::from_vec(window, (1, cfg.num_mel_bins, mel::N_FRAMES), &Device::Cpu).unwrap();
    let theirs = model.encoder.forward(&input, true).unwrap();
    let flat: Vec<f32> = theirs.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(flat.len(), ours.len());
    let diff = flat
        .iter()
        .zip(&ours)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = flat.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let mean_diff = flat
        .iter()
        .zip(&ours)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / flat.len() as f32;
    let mean_abs = flat.iter().map(|v| v.abs()).sum::<f32>() / flat.len() as f32;
    eprintln!(
        "encoder: max |difference| {diff} (values up to {scale}), mean {mean_diff} (mean |value| {mean_abs})"
    );
    // Four layers of GELU erf vs tanh (and positions CTranslate2 stored vs computed) apart: close
    // on average, a few values further; the decoder's choice below is what must agree.
    assert!(mean_diff <= 0.02 * mean_abs, "{mean_diff} of {mean_abs}");
    assert!(diff <= 0.15 * scale, "{diff} of {scale}");
    let tok = tokenizers::Tokenizer::from_file(&files.tokenizer).unwrap();
    let prompt = ["<|startoftranscript|>", "<|notimestamps|>"].map(|t| tok.token_to_id(t).unwrap());
    let mut st = net.decoder(&ours);
    let logits = net.step(&mut st, &prompt);
    let tokens = Tensor::new(&prompt[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let hidden = model.decoder.forward(&tokens, &theirs, true).unwrap();
    let want: Vec<f32> = hidden
        .i((0, prompt.len() - 1))
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .matmul(&embed.t().unwrap())
        .unwrap()
        .i(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    let ldiff = want
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!(
        "first step logits: max |difference| {ldiff}, argmax {} vs {}",
        argmax(&logits),
        argmax(&want)
    );
    assert_eq!(argmax(&logits), argmax(&want));
    assert!(ldiff < 0.1, "{ldiff}");
    // The cache: feeding the prompt one token at a time gives the same logits as all at once.
    let mut st1 = net.decoder(&ours);
    net.step(&mut st1, &prompt[..1]);
    let one = net.step(&mut st1, &prompt[1..]);
    let cdiff = one
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(cdiff < 1e-3, "{cdiff}");
}

fn silence(secs: f64) -> Vec<f32> {
    vec![0.0; (secs * 16_000.0) as usize]
}

fn host_options() -> idol::listen::host::HostOptions {
    let home = home();
    idol::listen::host::HostOptions {
        whisper: WhisperFiles::pinned(&home, "tiny.en"),
        language: None,
        vad_model: home.path(idol::listen::SILERO_VAD),
        ort_library: home.ort_library(),
        segmenter: idol::listen::vad::SegmenterConfig::default(),
        short_windows: false,
    }
}

#[test]
fn silero_vad_finds_the_speech_between_silences() {
    let opts = host_options();
    // 1 s of silence, arctic_a0009 (speech 0.13..2.925 s by its labels), 1.5 s, mary, 1 s.
    let arctic = pcm16k("arctic_a0009.wav");
    let mary = pcm16k("mary.wav");
    let mut pcm = silence(1.0);
    pcm.extend(&arctic);
    pcm.extend(silence(1.5));
    let mary_at = pcm.len() as f64 / 16_000.0;
    pcm.extend(&mary);
    pcm.extend(silence(1.0));
    let vad = idol::listen::vad::SileroVad::load(&opts.vad_model, &opts.ort_library).unwrap();
    let spans = idol::listen::vad::speech_spans(vad, opts.segmenter, &pcm).unwrap();
    let secs: Vec<(f64, f64)> = spans
        .iter()
        .map(|(s, e, _)| (*s as f64 / 16_000.0, *e as f64 / 16_000.0))
        .collect();
    eprintln!("spans {secs:?}");
    assert_eq!(secs.len(), 2, "{secs:?}");
    // The labelled speech, with the pre-roll (0.2 s) and a chunk's slack around it.
    let (s, e) = secs[0];
    assert!((1.13 - 0.3..=1.13 + 0.1).contains(&s), "{s}");
    assert!((3.925 - 0.15..=3.925 + 0.3).contains(&e), "{e}");
    let (s, e) = secs[1];
    let mary_end = mary_at + mary.len() as f64 / 16_000.0;
    assert!(
        s >= mary_at - 0.25 && e <= mary_end + 0.1,
        "{s}..{e} vs {mary_at}..{mary_end}"
    );
    assert!(e - s >= 0.8, "mary's words are most of her clip");
    // Each span's audio is exactly its samples.
    for (s, e, clip) in &spans {
        assert_eq!(clip.len() as u64, e - s);
    }
}

/// A served idol (tone voice, scripted persona) is talking; the host speaks over it from a
/// recording played as the microphone: the idol is cut at one sample, the host's words arrive as
/// a chat from source `host`, and the idol answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_idol_is_cut_off_by_the_host_and_answers_the_words() {
    use crate::serve::{In, LONG, connect, next, reply, send};
    use idol::listen::host::{FileInput, HostVoice, PerformHost};
    use idol::server::protocol::Binary;
    use serde_json::json;
    let opts = host_options();
    let server = crate::serve::start(&[LONG, "Sure."]);
    let (mut ws, _) = connect(&server).await;
    send(&mut ws, json!({"type":"chat","text":"tell me everything"})).await;
    let utt = reply(&mut ws).await["utterance"].as_u64().unwrap();
    let mut msgs = vec![];
    // A second of the reply first, then the host talks.
    let mut sent = 0u64;
    while sent < crate::serve::RATE as u64 {
        let m = next(&mut ws).await;
        if let In::Bin(Binary::Audio { utterance, pcm, .. }) = &m
            && *utterance as u64 == utt
        {
            sent += pcm.len() as u64;
        }
        msgs.push(m);
    }
    let mut host = silence(0.3);
    host.extend(pcm16k("arctic_a0009.wav"));
    host.extend(silence(1.0));
    let voice = HostVoice::start(
        &opts,
        Box::new(FileInput::from_pcm(host, true)),
        Box::new(PerformHost {
            handle: server.perform().clone(),
            user: "host".into(),
            barge_in: true,
        }),
    )
    .unwrap();
    // Until the host's chat is answered (its reply spoken and idle).
    let mut asked: Option<serde_json::Value> = None;
    let mut answer_audio = 0usize;
    let mut answering = false;
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(120), next(&mut ws))
            .await
            .expect("the host's chat is answered");
        match &m {
            In::Json(v) if v["type"] == "asked" && v["source"] == "host" => asked = Some(v.clone()),
            In::Json(v)
                if asked
                    .as_ref()
                    .is_some_and(|a| a["utterance"] == v["utterance"])
                    && v["state"] == "speaking" =>
            {
                answering = true;
            }
            In::Json(v) if answering && v["type"] == "state" && v["state"] == "idle" => {
                msgs.push(m);
                break;
            }
            In::Bin(Binary::Audio { utterance, pcm, .. })
                if asked
                    .as_ref()
                    .is_some_and(|a| a["utterance"].as_u64() == Some(*utterance as u64)) =>
            {
                answer_audio += pcm.len();
            }
            In::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
        msgs.push(m);
    }
    voice.join().unwrap();
    let asked = asked.unwrap();
    assert_eq!(asked["user"], "host");
    let text = asked["text"].as_str().unwrap();
    let wer = word_error_rate(FIXTURES[2].1, text);
    assert!(wer <= 0.35, "{text:?}: WER {wer}");
    assert!(answer_audio > 0, "the idol answered aloud");
    // The first reply was cut at one sample: its audio ends exactly there, none comes after.
    let cut_at = msgs
        .iter()
        .position(|m| {
            matches!(m, In::Json(v) if v["state"] == "interrupted" && v["utterance"].as_u64() == Some(utt))
        })
        .expect("the host's speech interrupted the idol");
    let In::Json(cut) = &msgs[cut_at] else {
        unreachable!()
    };
    let cut = cut["sample"].as_u64().unwrap();
    let last = msgs
        .iter()
        .filter_map(|m| match m {
            In::Bin(Binary::Audio {
                utterance,
                start,
                pcm,
                ..
            }) if *utterance as u64 == utt => Some(*start + pcm.len() as u64),
            _ => None,
        })
        .max()
        .unwrap();
    assert_eq!(last, cut);
    let heard = msgs[cut_at..]
        .iter()
        .find_map(|m| match m {
            In::Json(v) if v["state"] == "interrupted" => v["heard"].as_str().map(str::to_string),
            _ => None,
        })
        .unwrap_or_default();
    assert!(
        heard.split_whitespace().count() + 2 < LONG.split_whitespace().count(),
        "cut while speaking: heard {heard:?}"
    );
}
