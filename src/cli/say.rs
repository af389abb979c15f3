//! `idol say "Hello everyone!" --out DIR`: speak text with a Piper voice and write `DIR/speech.wav`
//! (16-bit PCM) and `DIR/phonemes.json` (phoneme and word timelines on the audio's sample clock), both
//! atomically. With `--seed`, the output is byte-identical from run to run.

use super::Env;
use anyhow::{Context, bail};
use clap::Args;
use idol::assets::Home;
use idol::phonemize::{EnglishPhonemizer, Phonemize};
use idol::speech::{Phoneme, Word};
use idol::time::Timeline;
use idol::tts::{self, EspeakPhonemizer, PiperVoice, Speaker, SynthWorker, VoiceOptions};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct SayArgs {
    /// What to say.
    pub text: String,
    /// Output folder (created if missing) for speech.wav and phonemes.json.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Voice: a name under voices/ (en_US-joe-medium) or a path to NAME.onnx (default: [voice] model).
    #[arg(long)]
    pub voice: Option<String>,
    /// Speaker of a multi-speaker voice: an id or a name from the voice's speaker_id_map.
    #[arg(long)]
    pub speaker: Option<String>,
    /// Length scale: 1.0 is the voice's pace, 1.2 slower, 0.8 faster.
    #[arg(long)]
    pub rate: Option<f32>,
    /// Seed for the voice's noise; the same seed gives byte-identical output (default: [voice] seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Noise scale (default: the voice's); 0 with --noise-w 0 gives the voice's mean rendering.
    #[arg(long)]
    pub noise_scale: Option<f32>,
    /// Duration noise width (default: the voice's).
    #[arg(long)]
    pub noise_w: Option<f32>,
    /// Rig to solve face frames for (frames.jsonl), once the face stage is present.
    #[arg(long)]
    pub rig: Option<String>,
    /// Face frames per second for frames.jsonl.
    #[arg(long)]
    pub fps: Option<u32>,
    /// Phonemize with the espeak-ng program instead of the built-in English phonemizer.
    #[arg(long)]
    pub espeak: bool,
    /// ONNX Runtime threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Serialize)]
struct PhonemesFile<'a> {
    text: &'a str,
    voice: String,
    seed: u64,
    sample_rate: u32,
    samples: usize,
    phonemes: &'a Timeline<Phoneme>,
    words: &'a Timeline<Word>,
}

/// The voice file for `--voice`: a path (anything with a `/` or ending in `.onnx`) or a name in voices/.
pub fn voice_path(home: &Home, voice: Option<&str>, configured: &Path) -> PathBuf {
    match voice {
        None => home.path(configured),
        Some(v) if v.contains('/') || v.ends_with(".onnx") => home.path(v),
        Some(name) => home.path(format!("voices/{name}.onnx")),
    }
}

/// Sentences ready for the voice (Piper speaks one at a time): inline cue tags taken out, segmented,
/// normalized (numbers, abbreviations, symbols → words).
fn sentences(text: &str) -> Vec<String> {
    let mut stream = idol::text::ClauseStream::new(idol::text::SegmenterConfig {
        sentences_only: true,
        max_clause_words: usize::MAX,
        ..Default::default()
    });
    let mut clauses = stream.push(text);
    clauses.extend(stream.finish());
    clauses
        .into_iter()
        .map(|c| idol::text::normalize(&c.segment.text))
        .map(|s| s.trim().to_string())
        .filter(|s| s.chars().any(|c| c.is_alphanumeric()))
        .collect()
}

pub fn run(env: &Env, args: &SayArgs) -> anyhow::Result<ExitCode> {
    // Warnings (skipped characters, skipped clauses) go to stderr unless RUST_LOG says otherwise.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let config = env.config()?;
    let home = &env.home;
    let clauses = sentences(&args.text);
    if clauses.is_empty() {
        bail!("nothing to say: the text {:?} has no words", args.text);
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        bail!("--rate must be a positive length scale (1.0 = the voice's pace), got {r}");
    }
    if args.rig.is_some() || args.fps.is_some() {
        log::warn!("--rig/--fps: this build has no face stage yet, so frames.jsonl is not written");
    }
    let vc = &config.voice;
    let seed = args.seed.unwrap_or(vc.seed);
    let voice = voice_path(home, args.voice.as_deref(), &vc.model);
    let ort_lib = home.ort_library();
    let options = VoiceOptions {
        threads: args.threads,
        length_scale: args.rate.or(vc.length_scale),
        noise_scale: args.noise_scale.or(vc.noise_scale),
        noise_w: args.noise_w.or(vc.noise_w),
        speaker: args
            .speaker
            .as_deref()
            .or(vc.speaker.as_deref())
            .map(|s| s.parse::<Speaker>().expect("infallible")),
        seed,
    };
    let phonemizer: Arc<dyn Phonemize> = if args.espeak {
        Arc::new(EspeakPhonemizer::default())
    } else {
        Arc::new(EnglishPhonemizer::load(home).context("loading the English phonemizer")?)
    };
    let voice_for_thread = voice.clone();
    let mut worker = SynthWorker::spawn(
        move || PiperVoice::load(&voice_for_thread, &ort_lib, phonemizer, &options),
        4,
    )?;
    let rate = worker.sample_rate();
    let mut speech = tts::empty_speech(rate);
    let mut pending = 0usize;
    let mut spoken_any = false;
    let mut answer =
        |worker: &SynthWorker, speech: &mut idol::speech::Speech| -> anyhow::Result<()> {
            let s = worker.recv().context("the synthesis thread stopped")?;
            match s.speech {
                Ok(sp) => {
                    tts::append(speech, sp);
                    spoken_any = true;
                }
                Err(tts::TtsError::Unspeakable(_) | tts::TtsError::Phonemize(_)) => {
                    log::warn!("skipped {:?}: nothing speakable", s.clause)
                }
                Err(e) => return Err(e).with_context(|| format!("synthesizing {:?}", s.clause)),
            }
            Ok(())
        };
    for c in &clauses {
        if pending == 4 {
            answer(&worker, &mut speech)?;
            pending -= 1;
        }
        worker.submit(c.clone())?;
        pending += 1;
    }
    worker.close();
    for _ in 0..pending {
        answer(&worker, &mut speech)?;
    }
    if !spoken_any {
        bail!("nothing speakable in {:?}", args.text);
    }
    speech
        .validate()
        .context("internal error: speech timeline")?;
    write_outputs(&args.out, &args.text, &voice, seed, &speech)?;
    eprintln!(
        "wrote {} ({:.2} s, {} phonemes, {} words) and {}",
        args.out.join("speech.wav").display(),
        speech.duration_secs(),
        speech.phonemes.len(),
        speech.words.len(),
        args.out.join("phonemes.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_outputs(
    out: &Path,
    text: &str,
    voice: &Path,
    seed: u64,
    speech: &idol::speech::Speech,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let wav = out.join("speech.wav");
    tts::wav::write_wav(&wav, &speech.pcm, speech.sample_rate)
        .with_context(|| format!("writing {}", wav.display()))?;
    let file = PhonemesFile {
        text,
        voice: voice
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".onnx").to_string())
            .unwrap_or_default(),
        seed,
        sample_rate: speech.sample_rate,
        samples: speech.pcm.len(),
        phonemes: &speech.phonemes,
        words: &speech.words,
    };
    let json = out.join("phonemes.json");
    let mut bytes = serde_json::to_vec_pretty(&file)?;
    bytes.push(b'\n');
    tts::wav::write_atomic(&json, &bytes).with_context(|| format!("writing {}", json.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sentences() {
        let s = sentences("[happy] Hello everyone! How are you? Dr. Brown has 3 cats.");
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(s[0].starts_with("Hello everyone"), "{s:?}");
        assert!(
            s[2].contains("three") && s[2].to_lowercase().contains("doctor"),
            "{s:?}"
        );
        assert!(sentences("  !! ").is_empty());
    }
}
