//! `idol listen`: what idol hears. A recording (any format and rate `idol lipsync` reads) or the
//! microphone, cut into utterances by Silero VAD and transcribed by Whisper; the models are
//! fetched on first use.

use super::Env;
use idol::listen::host::{self, AudioInput, HostEvents, HostOptions, HostVoice};
use idol::listen::vad::{SileroVad, speech_spans};
use idol::listen::{Segment, Whisper};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// The recording to transcribe; without one, the microphone (`[mic] device`, else the
    /// default input) until Ctrl-C.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// One JSON object: the text and each utterance's start, end (seconds) and text.
    #[arg(long)]
    pub json: bool,
    /// Transcribe the whole recording in 30-second windows, without speech detection.
    #[arg(long)]
    pub no_vad: bool,
    /// The Whisper model: `tiny.en` or `base` (default: `[mic] model`, else `tiny.en`).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// The language for a multilingual model (ISO 639-1, e.g. `ja`).
    #[arg(long, value_name = "CODE")]
    pub language: Option<String>,
}

struct Print;

impl HostEvents for Print {
    fn speech_started(&mut self) {
        eprintln!("(speech)");
    }
    fn utterance(&mut self, text: &str, _heard: host::Heard) {
        println!("{text}");
    }
}

pub fn run(env: &Env, args: &ListenArgs) -> anyhow::Result<ExitCode> {
    let config = env.config()?;
    let mut mic = config.mic.clone().unwrap_or_else(|| {
        idol::config::Config::from_toml_str("[mic]\nenabled = true\n", &env.config_path)
            .ok()
            .and_then(|c| c.mic)
            .expect("[mic] defaults are valid")
    });
    if let Some(m) = &args.model {
        if !idol::config::WHISPER_MODELS.contains(&m.as_str()) {
            anyhow::bail!(
                "--model {m}: not a pinned Whisper model; use {}",
                idol::config::WHISPER_MODELS.join(" or ")
            );
        }
        mic.model = m.clone();
    }
    if args.language.is_some() {
        mic.language = args.language.clone();
    }
    let opts = HostOptions::from_config(&env.home, &mic);
    super::wiring::ensure_assets(env, &opts.files())?;
    let Some(file) = &args.file else {
        let input: Box<dyn AudioInput> = match &mic.file {
            Some(f) => Box::new(host::FileInput::open(&env.home.path(f), true)?),
            None => host::open_microphone(mic.device.as_deref())?,
        };
        eprintln!("listening (Ctrl-C stops)");
        let voice = HostVoice::start(&opts, input, Box::new(Print))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    while voice.running() {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                } => {}
            }
        });
        voice.join()?;
        return Ok(ExitCode::SUCCESS);
    };
    let audio = idol::audio::decode_file(file)?;
    let pcm = idol::audio::resample(&audio.samples, audio.sample_rate, 16_000);
    let mut whisper = Whisper::load(&opts.whisper, opts.language.as_deref())?;
    whisper.set_short_windows(opts.short_windows);
    let segments: Vec<Segment> = if args.no_vad {
        whisper.transcribe(&pcm)?
    } else {
        let vad = SileroVad::load(&opts.vad_model, &opts.ort_library)?;
        let mut out = vec![];
        for (start, end, clip) in speech_spans(vad, opts.segmenter, &pcm)? {
            let text = host::spoken_words(&whisper.text(&clip)?);
            if !text.is_empty() {
                out.push(Segment {
                    start: start as f64 / 16_000.0,
                    end: end as f64 / 16_000.0,
                    text,
                });
            }
        }
        out
    };
    let text = segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "file": file.display().to_string(),
                "model": mic.model,
                "seconds": audio.duration_secs(),
                "text": text,
                "segments": segments,
            })
        );
    } else if text.is_empty() {
        eprintln!("(no speech found)");
    } else {
        for s in &segments {
            println!("[{:7.2} → {:7.2}] {}", s.start, s.end, s.text);
        }
    }
    Ok(ExitCode::SUCCESS)
}
