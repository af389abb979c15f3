//! `idol lipsync`: render a phoneme timeline file, or a recording, to face frames (JSONL, Live Link
//! Face CSV or Rhubarb-style TSV mouth cues).
//!
//! The input ([`LipsyncInput`]) is either `--phonemes FILE` (TextGrid, .lab, JSON) or a positional
//! AUDIO file (WAV, MP3, FLAC, Ogg/Vorbis) whose phonemes are derived from the audio itself
//! (`idol::face::from_audio`), or, with a `--transcript`, from that text spoken by idol's own
//! voice and aligned to the recording (`idol::align`). The output is written atomically.

use super::Env;
use super::wiring::settings::{Said, Settings, Source};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use idol::face::from_audio::{self, AudioLipsyncOptions, SynthAlignOptions};
use idol::face::read::{self, PhonemeFile};
use idol::face::{EyeGaze, Face, FaceConfig, Layers, Rig, Segment, expression, write};
use idol::phonemize::EnglishPhonemizer;
use idol::speech::{Cue, CueKind};
use idol::time::{SampleTime, TimeRange};
use idol::tts::{Speaker, VoiceOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Where the phonemes come from.
#[derive(Debug, Clone, Args)]
pub struct LipsyncInput {
    /// A recording (WAV, MP3, FLAC or Ogg/Vorbis): the mouth follows the audio itself.
    #[arg(value_name = "AUDIO", conflicts_with = "phonemes")]
    pub audio: Option<PathBuf>,
    /// What the recording says: spoken by the voice, then aligned to the recording, whose mouth then
    /// follows the voice's phones at the recording's times (needs the voice and the phonemizer,
    /// `idol fetch`). A transcript the recording does not say is reported, and the audio alone used.
    #[arg(long, value_name = "TEXT", requires = "audio")]
    pub transcript: Option<String>,
    /// Phoneme timeline: a Praat .TextGrid, an HTK/HTS .lab, or an idol JSON Timeline<Phoneme>.
    #[arg(long, value_name = "FILE")]
    pub phonemes: Option<PathBuf>,
    /// TextGrid tier holding the phones (default: a tier named phone(s)/phoneme(s), else the first).
    #[arg(long, value_name = "NAME")]
    pub tier: Option<String>,
    /// Sample rate that TextGrid/.lab times are converted at (JSON timelines carry their own).
    #[arg(long, default_value_t = 48000)]
    pub rate: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    /// One JSON object per frame after a header line.
    Jsonl,
    /// Live Link Face CSV (needs the arkit52 rig).
    Csv,
    /// Rhubarb-style mouth cues (A-H, X).
    Tsv,
}

#[derive(Debug, Clone, Args)]
pub struct LipsyncArgs {
    #[command(flatten)]
    pub input: LipsyncInput,
    /// Rig: arkit52, vrm, live2d, oculus15, a rigs/NAME.toml in the idol home, or a path to a .toml
    /// (default: `[face] rig` of idol.toml, else arkit52).
    #[arg(long)]
    pub rig: Option<String>,
    /// Frames per second (default: `[face] fps` of idol.toml, else 60).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub fps: Option<u32>,
    /// Output file (`-` for stdout); the format follows the extension unless --format says.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    #[arg(long, value_enum)]
    pub format: Option<OutFormat>,
    /// Seed of the idle layer (blinks, gaze, head motion): same seed, same bytes (default: `[face]
    /// seed` of idol.toml, else 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Emotion or action cue, repeatable: NAME@SECONDS[:INTENSITY], e.g. happy@0.2:0.8, nod@1.1.
    #[arg(long = "cue", value_name = "CUE")]
    pub cues: Vec<String>,
    /// Where the eyes rest, degrees: YAW,PITCH (+ to the character's left / up).
    #[arg(long, value_name = "YAW,PITCH", allow_hyphen_values = true)]
    pub look_at: Option<String>,
    /// Turn off blinks, saccades, breathing and head micro-motion.
    #[arg(long)]
    pub no_idle: bool,
    /// Turn off speech-linked head nods.
    #[arg(long)]
    pub no_nods: bool,
}

/// Parses `NAME@SECONDS[:INTENSITY]`; `moods` are the emotions the face animates (an action is one
/// of `nod`, `shake`, `tilt`, `wink`, `blink`). A name the face does not know is refused: on the
/// command line it can only be a typo.
fn parse_cue(s: &str, rate: u32, moods: &[String]) -> Result<Cue> {
    let (name, rest) = s.split_once('@').with_context(|| {
        format!("cue `{s}`: write NAME@SECONDS[:INTENSITY], e.g. happy@0.5:0.8")
    })?;
    let (secs, intensity) = match rest.split_once(':') {
        Some((a, b)) => (
            a,
            b.parse::<f32>()
                .ok()
                .filter(|i| i.is_finite())
                .with_context(|| {
                    format!("cue `{s}`: bad intensity `{b}`: write a number from 0 to 1")
                })?,
        ),
        None => (rest, 1.0),
    };
    let secs: f64 = secs
        .parse()
        .with_context(|| format!("cue `{s}`: bad time"))?;
    let at = SampleTime::from_secs_f64(secs, rate).with_context(|| format!("cue `{s}`"))?;
    let kind = if expression::Action::parse(name).is_some() {
        CueKind::Action
    } else if moods.iter().any(|m| m.eq_ignore_ascii_case(name)) {
        CueKind::Emotion
    } else {
        bail!(
            "cue `{s}`: the face knows no `{name}`: use an emotion ({}) or an action ({})",
            moods.join(", "),
            idol::face::gesture::Catalogue::builtin()
                .names()
                .1
                .join(", ")
        );
    };
    Ok(Cue {
        kind,
        name: name.to_string(),
        intensity: intensity.clamp(0.0, 1.0),
        at,
    })
}

/// Parses `--look-at YAW,PITCH` in degrees, each finite and within -90..=90.
fn parse_look_at(s: &str) -> Result<EyeGaze> {
    let (y, p) = s
        .split_once(',')
        .with_context(|| format!("--look-at `{s}`: write YAW,PITCH in degrees"))?;
    let deg = |v: &str, what: &str| -> Result<f32> {
        v.trim()
            .parse::<f32>()
            .ok()
            .filter(|d| d.is_finite() && d.abs() <= 90.0)
            .with_context(|| {
                format!("--look-at `{s}`: the {what} `{v}` must be degrees within -90..=90")
            })
    };
    Ok(EyeGaze {
        yaw: deg(y, "yaw")?.to_radians(),
        pitch: deg(p, "pitch")?.to_radians(),
    })
}

/// Run in the idol home: rigs are looked up under its `rigs/` first; rig, fps and seed default to
/// idol.toml's `[face]` section.
pub fn run(env: &Env, args: &LipsyncArgs) -> Result<ExitCode> {
    // The library's warnings (a truncated or damaged recording, skipped packets) go to stderr
    // unless RUST_LOG says otherwise: without a logger they were dropped.
    super::init_logger();
    let config = env.config()?;
    let settings = Settings::resolve(
        &config,
        &[(
            Source::Flags,
            Said {
                rig: args.rig.as_deref(),
                fps: args.fps,
                seed: args.seed,
                ..Said::default()
            },
        )],
    )?;
    let (rig_name, fps, seed) = (settings.rig, settings.fps, settings.face_seed);
    let home = &env.home;
    let file: PhonemeFile = match (&args.input.audio, &args.input.phonemes) {
        (Some(audio), _) => from_audio(env, audio, args.input.transcript.as_deref())?,
        (None, Some(path)) => {
            let file = read::read_path(path, args.input.rate, args.input.tier.as_deref())?;
            // An empty file once gave a header and no frames, and exit 0.
            if file.end == SampleTime::ZERO {
                bail!(
                    "{} holds no timed phones (it lasts 0 s): nothing to lip-sync",
                    path.display()
                );
            }
            file
        }
        (None, None) => bail!(
            "nothing to lip-sync: give an AUDIO file (WAV, MP3, FLAC, Ogg) or --phonemes FILE (a \
             .TextGrid, .lab or .json timeline)"
        ),
    };
    let rate = file.phonemes.rate();
    let rigs_dir = home.path("rigs");
    let rig = Rig::find(&rig_name, Some(rigs_dir.as_path()))?;
    let look_at = args.look_at.as_deref().map(parse_look_at).transpose()?;
    let config = FaceConfig {
        fps,
        seed,
        layers: Layers {
            idle: !args.no_idle,
            nods: !args.no_nods,
            ..Layers::default()
        },
        look_at,
        ..FaceConfig::default()
    };
    let mut moods: Vec<String> = expression::presets().into_iter().map(|p| p.name).collect();
    moods.extend(rig.expressions.iter().map(|e| e.name.clone()));
    moods.push("neutral".into());
    let face = Face::new(rig, config)?;
    let cues = args
        .cues
        .iter()
        .map(|c| parse_cue(c, rate, &moods))
        .collect::<Result<Vec<_>>>()?;
    let seg = Segment {
        range: TimeRange::new(SampleTime::ZERO, file.end)?,
        phonemes: &file.phonemes,
        words: file.words.as_ref(),
        cues: &cues,
    };
    let prep = face.prepare(&seg)?;
    if !prep.unknown.is_empty() {
        eprintln!(
            "warning: unknown phoneme symbols (treated as transparent): {}",
            prep.unknown.join(" ")
        );
    }
    let format = match args.format {
        Some(f) => f,
        None => format_from_ext(&args.out),
    };
    let mut bytes = Vec::new();
    match format {
        OutFormat::Tsv => write::rhubarb_tsv(&prep, file.end, &mut bytes)?,
        OutFormat::Jsonl | OutFormat::Csv => {
            let mut frames = idol::face::Frames::new(face.rig(), rate, fps);
            face.render_into(&prep, 0..prep.frame_count(), &mut frames);
            if format == OutFormat::Csv {
                write::live_link_csv(&frames, true, &mut bytes)?;
            } else {
                write::jsonl(&frames, Some(seed), true, &mut bytes)?;
            }
        }
    }
    if args.out.as_os_str() == "-" {
        std::io::stdout().lock().write_all(&bytes)?;
    } else {
        idol::tts::wav::write_atomic(&args.out, &bytes)
            .with_context(|| format!("cannot write {}", args.out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Phonemes from a recording: decode, then derive them from the audio or, with a transcript, align
/// the transcript spoken by idol's own voice to it (`idol::align`). A transcript the recording does
/// not seem to say is reported and the audio alone is used.
fn from_audio(env: &Env, path: &Path, transcript: Option<&str>) -> Result<PhonemeFile> {
    let audio = idol::audio::decode_file(path)?;
    let end = SampleTime(audio.samples.len() as u64);
    if let Some(text) = transcript {
        let config = env.config()?;
        let home = &env.home;
        // The configured voice (idol.toml's `[voice]`, languages routed as for `idol say`): a
        // Kokoro voice speaks a Japanese or Mandarin transcript, a Piper voice an English one.
        let vc = &config.voice;
        let choice = idol::perform::adapters::config_voice_choice(vc, None);
        let mut files = idol::tts::voice_files(home, &choice);
        files.extend(EnglishPhonemizer::files(home));
        super::wiring::ensure_assets(env, &files)?;
        let phonemizer = Arc::new(
            EnglishPhonemizer::load(home)
                .context("--transcript needs the English phonemizer: run `idol fetch`")?,
        );
        let options = VoiceOptions {
            speaker: vc
                .speaker
                .as_deref()
                .map(|s| s.parse::<Speaker>().expect("infallible")),
            seed: vc.seed,
            ..VoiceOptions::default()
        };
        let mut voice = idol::tts::load_voice(home, &choice, &options, phonemizer)
            .context("--transcript speaks the text with the voice first")?;
        let aligned = idol::align::align_transcript(
            voice.as_mut(),
            &audio.samples,
            audio.sample_rate,
            text,
            &SynthAlignOptions::default(),
        )
        .with_context(|| format!("aligning --transcript {text:?} to {}", path.display()))?;
        if !aligned.mismatch {
            return Ok(PhonemeFile {
                phonemes: aligned.phonemes,
                words: Some(aligned.words),
                end,
            });
        }
        eprintln!(
            "warning: {} does not seem to say the --transcript (it matches the text spoken by the \
             voice no better than the voice played backwards: contrast {:.2}, {:.0} % of its \
             sounds bent out of pace); the mouth follows the audio alone. Check the transcript.",
            path.display(),
            aligned.contrast,
            aligned.bent * 100.0
        );
    }
    let phonemes = from_audio::phonemes_from_audio(
        &audio.samples,
        audio.sample_rate,
        &AudioLipsyncOptions::default(),
    )
    .with_context(|| format!("lip sync of {}", path.display()))?;
    Ok(PhonemeFile {
        phonemes,
        words: None,
        end,
    })
}

fn format_from_ext(p: &Path) -> OutFormat {
    match p
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("csv") => OutFormat::Csv,
        Some("tsv") | Some("txt") => OutFormat::Tsv,
        _ => OutFormat::Jsonl,
    }
}
