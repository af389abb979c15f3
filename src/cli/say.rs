//! `idol say "Hello everyone!" --out DIR`: speak text with a Piper voice and write `DIR/speech.wav`
//! (16-bit PCM) and `DIR/phonemes.json` (phoneme and word timelines on the audio's sample clock), both
//! atomically, and `DIR/frames.jsonl` (face frames for the rig, stamped with the sample they describe).
//! With `--seed`, the output is byte-identical from run to run.
//!
//! `--play` also plays the speech on the local audio device (`[sinks.audio]` device, or the system
//! default; the paced null output with one warning when there is none) and sends the frames to the
//! face sinks `[sinks]` enables (VMC, VTube Studio), released by the device's played-sample counter so
//! the face matches what is heard.
//!
//! The text goes through the same stages as a live reply: cue tags (`[happy]`, `<wave>`,
//! `<break time="300ms"/>`) are pulled out, the rest is split into clauses and normalized, the pure-Rust
//! phonemizer and the Piper voice speak each clause, and the face solver turns the phonemes and cues
//! into frames.

use super::Env;
use super::wiring::live::play;
use super::wiring::settings::{Said, Settings, Source};
use anyhow::{Context, bail};
use clap::Args;
use idol::face::{Face, FaceConfig, Frames, Rig, Segment, write};
use idol::phonemize::{EnglishPhonemizer, Phonemize};
use idol::speech::{Phoneme, Word};
use idol::time::{SampleTime, TimeRange, Timeline};
use idol::tts::{self, SynthWorker};
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
    /// Voice: a name under voices/ (en_US-joe-medium), a path to NAME.onnx, or a Kokoro voice
    /// (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo; Japanese and Mandarin)
    /// (default: [voice] model).
    #[arg(long)]
    pub voice: Option<String>,
    /// Speaker of a multi-speaker voice: an id or a name from the voice's speaker_id_map.
    #[arg(long)]
    pub speaker: Option<String>,
    /// Length scale: 1.0 is the voice's pace, 1.2 slower, 0.8 faster.
    #[arg(long, allow_hyphen_values = true)]
    pub rate: Option<f32>,
    /// Seed for the voice's noise; the same seed gives byte-identical output (default: [voice] seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Noise scale (default: the voice's); 0 with --noise-w 0 gives the voice's mean rendering.
    #[arg(long, allow_hyphen_values = true)]
    pub noise_scale: Option<f32>,
    /// Duration noise width (default: the voice's).
    #[arg(long, allow_hyphen_values = true)]
    pub noise_w: Option<f32>,
    /// Rig to solve face frames for in frames.jsonl (default: [face] rig).
    #[arg(long)]
    pub rig: Option<String>,
    /// Face frames per second for frames.jsonl (default: [face] fps).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub fps: Option<u32>,
    /// Phonemize with the espeak-ng program instead of the built-in phonemizer (for comparison).
    #[arg(long)]
    pub espeak: bool,
    /// ONNX Runtime threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Also play the speech on the audio device and drive the face sinks [sinks] enables.
    #[arg(long)]
    pub play: bool,
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

pub fn run(env: &Env, args: &SayArgs) -> anyhow::Result<ExitCode> {
    // Warnings (skipped characters, skipped clauses) go to stderr unless RUST_LOG says otherwise.
    super::init_logger();
    let config = env.config()?;
    let home = &env.home;
    // Tags out, then sentences (Piper speaks best a sentence at a time), cut at their breaks: the
    // text stage every speaking path shares.
    let clauses = idol::perform::offline::sentences(&args.text);
    if !clauses.iter().any(|c| !c.text.is_empty()) {
        bail!("nothing to say: the text {:?} has no words", args.text);
    }
    // Flags over idol.toml, each flag held to the range idol.toml's value is (a NaN or negative
    // noise once reached ONNX Runtime and failed there with a Reshape error).
    let settings = Settings::resolve(
        &config,
        &[(
            Source::Flags,
            Said {
                voice: args.voice.as_deref(),
                speaker: args.speaker.as_deref(),
                voice_seed: args.seed,
                rate: args.rate,
                noise_scale: args.noise_scale,
                noise_w: args.noise_w,
                rig: args.rig.as_deref(),
                fps: args.fps,
                ..Said::default()
            },
        )],
    )?;
    // The utterance limit: its breaks are checked before the voice loads, its speech as it comes.
    let budget = config.limits;
    let over =
        |e: idol::budget::OverBudget| anyhow::anyhow!("{e} (`idol say` speaks one utterance)");
    budget
        .check(
            idol::budget::Budgeted::Utterance,
            idol::text::TagParser::break_millis(&args.text),
            1000,
        )
        .map_err(over)?;
    // Checked before the voice speaks, not after.
    if args.out.exists() && !args.out.is_dir() {
        bail!(
            "--out {} is a file: name a folder (created if missing) for speech.wav, phonemes.json and frames.jsonl",
            args.out.display()
        );
    }
    let Settings {
        choice,
        voice: mut options,
        rig,
        fps,
        face_seed,
        ..
    } = settings;
    options.threads = args.threads;
    let seed = options.seed;
    let voice_label = tts::select::VoiceSpec::parse(home, &choice.voice).label();
    // What the voice and the phonemizer will load, fetched first where missing (first use).
    let mut files = tts::voice_files(home, &choice);
    if !args.espeak {
        files.extend(EnglishPhonemizer::files(home));
    }
    super::wiring::ensure_assets(env, &files)?;
    let phonemizer: Arc<dyn Phonemize> = if args.espeak {
        Arc::new(idol::phonemize::EspeakPhonemizer::new("en-us")?)
    } else {
        Arc::new(EnglishPhonemizer::load(home)?)
    };
    let face = Face::new(
        Rig::find(&rig, Some(home.rigs_dir().as_path()))?,
        FaceConfig {
            fps,
            seed: face_seed,
            ..FaceConfig::default()
        },
    )?;
    let home_for_thread = home.clone();
    let mut worker = SynthWorker::spawn(
        move || tts::load_voice(&home_for_thread, &choice, &options, phonemizer),
        4,
    )?;
    // Kokoro's front ends read numbers and marks in their own language.
    let written = worker.reads_written_text();
    let rate = worker.sample_rate();
    let spoken = idol::perform::offline::speak_clauses(
        &clauses,
        rate,
        |text| {
            worker.submit(if written {
                text.to_string()
            } else {
                idol::text::normalize(text)
            })?;
            let s = worker.recv().context("the synthesis thread stopped")?;
            match s.speech {
                Ok(sp) => Ok(Some(sp)),
                Err(
                    tts::TtsError::Unspeakable(_)
                    | tts::TtsError::Phonemize(_)
                    | tts::TtsError::Empty,
                ) => {
                    log::warn!("skipped {:?}: nothing speakable", s.clause);
                    Ok(None)
                }
                Err(e) => Err(e).with_context(|| format!("synthesizing {:?}", s.clause)),
            }
        },
        |len| {
            budget
                .check(idol::budget::Budgeted::Utterance, len, rate)
                .map_err(over)
        },
    )?;
    worker.close();
    let idol::perform::offline::Spoken {
        speech,
        cues,
        said_anything,
    } = spoken;
    if !said_anything {
        bail!("nothing speakable in {:?}", args.text);
    }
    speech
        .validate()
        .context("internal error: speech timeline")?;
    let end = SampleTime(speech.pcm.len() as u64);
    let segment = Segment {
        range: TimeRange::new(SampleTime::ZERO, end)?,
        phonemes: &speech.phonemes,
        words: Some(&speech.words),
        cues: &cues,
    };
    let prepared = face.prepare(&segment)?;
    // Canonical vectors kept, so `--play` can give each face sink its own rig.
    let mut frames = Frames::with_canonical(face.rig(), rate, fps);
    face.render_into(&prepared, 0..prepared.frame_count(), &mut frames);
    let mut jsonl = Vec::new();
    write::jsonl(&frames, Some(face_seed), true, &mut jsonl)?;
    write_outputs(&args.out, &args.text, &voice_label, seed, &speech)?;
    let frames_path = args.out.join("frames.jsonl");
    tts::wav::write_atomic(&frames_path, &jsonl)
        .with_context(|| format!("writing {}", frames_path.display()))?;
    eprintln!(
        "wrote {} ({:.2} s, {} phonemes, {} words), {} and {} ({} frames, rig {})",
        args.out.join("speech.wav").display(),
        speech.duration_secs(),
        speech.phonemes.len(),
        speech.words.len(),
        args.out.join("phonemes.json").display(),
        frames_path.display(),
        frames.len(),
        frames.rig()
    );
    if args.play {
        play(
            env,
            &config.sinks,
            true,
            &speech.pcm,
            speech.sample_rate,
            &frames,
            &cues,
        )?;
    }
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
    fn silence_is_covered_by_a_pause() {
        let s = tts::silence(22050, 100);
        assert_eq!(s.pcm.len(), 2205);
        s.validate().unwrap();
    }
}
