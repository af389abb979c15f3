//! Whisper speech recognition on candle, from a CTranslate2 model (see [`super::ctranslate2`]).
//!
//! Greedy decoding without timestamps, one 30-second window at a time: the prompt is
//! `<|startoftranscript|>` (then the language and `<|transcribe|>` for a multilingual model) and
//! `<|notimestamps|>`; every special token but `<|endoftext|>` is suppressed, as are the model's
//! `suppress_ids` (from its `config.json`), and at the first step its `suppress_ids_begin` (a
//! blank, or an end before any word). A window ends at `<|endoftext|>` or after 224 tokens (half
//! the decoder's context, as Whisper's own sampler); a longer clip is cut into 30-second windows.
//! The words come from the model's `tokenizer.json` (byte-level BPE) with special tokens skipped.

use super::ctranslate2::{Ct2Error, Ct2Model};
use super::mel;
use super::net::{Net, NetError};
use candle_core::Device;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    #[error(transparent)]
    Model(#[from] Ct2Error),
    #[error("{path}: {what}: delete it and run `idol fetch`")]
    Files { path: PathBuf, what: String },
    #[error(
        "the Whisper model does not know language `{0}` (it is English-only, or not a language code)"
    )]
    Language(String),
    #[error("Whisper failed: {0}")]
    Run(String),
}

/// The files of one CTranslate2 Whisper model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhisperFiles {
    /// `model.bin`.
    pub model: PathBuf,
    /// `tokenizer.json` (Hugging Face tokenizers format).
    pub tokenizer: PathBuf,
    /// CTranslate2's `config.json` (`suppress_ids`, `suppress_ids_begin`, `lang_ids`).
    pub config: PathBuf,
}

impl WhisperFiles {
    /// The installed files of a pinned model (`tiny.en` or `base`) under `models/`.
    pub fn pinned(home: &crate::assets::Home, name: &str) -> WhisperFiles {
        WhisperFiles {
            model: home.path(format!("models/whisper-{name}.bin")),
            tokenizer: home.path(format!("models/whisper-{name}-tokenizer.json")),
            config: home.path(format!("models/whisper-{name}-config.json")),
        }
    }

    /// A faster-whisper style folder (`model.bin`, `tokenizer.json`, `config.json`).
    pub fn folder(dir: &Path) -> WhisperFiles {
        WhisperFiles {
            model: dir.join("model.bin"),
            tokenizer: dir.join("tokenizer.json"),
            config: dir.join("config.json"),
        }
    }

    pub fn all(&self) -> Vec<PathBuf> {
        vec![
            self.model.clone(),
            self.tokenizer.clone(),
            self.config.clone(),
        ]
    }
}

#[derive(Debug, serde::Deserialize)]
struct Ct2Config {
    #[serde(default)]
    suppress_ids: Vec<u32>,
    #[serde(default)]
    suppress_ids_begin: Vec<u32>,
    #[serde(default)]
    lang_ids: Vec<u32>,
}

/// One decoded window or utterance.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Segment {
    /// Seconds from the start of the audio.
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// A loaded Whisper model, ready to transcribe 16 kHz mono audio.
pub struct Whisper {
    net: Net,
    tokenizer: tokenizers::Tokenizer,
    filters: Vec<f32>,
    n_mels: usize,
    prompt: Vec<u32>,
    eot: u32,
    /// Per vocabulary id: never chosen.
    suppress: Vec<bool>,
    suppress_begin: Vec<u32>,
    /// The model writes more than English (it has language tokens).
    multilingual: bool,
    sample_len: usize,
    /// Encode only the clip's frames and a margin instead of the whole 30 s window.
    short_windows: bool,
}

/// Frames of silence kept after the clip when windows are shortened (1 s).
pub const SHORT_WINDOW_MARGIN: usize = 100;

impl std::fmt::Debug for Whisper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whisper")
            .field("n_mels", &self.n_mels)
            .field("prompt", &self.prompt)
            .field("multilingual", &self.multilingual)
            .finish()
    }
}

impl Whisper {
    /// Load a model; `language` (an ISO 639-1 code) is forced for a multilingual model and must
    /// be `en` (or absent) for an English-only one.
    pub fn load(files: &WhisperFiles, language: Option<&str>) -> Result<Whisper, WhisperError> {
        let ct2 = Ct2Model::load(&files.model)?;
        let cfg = ct2.whisper_config()?;
        let tensors = ct2.whisper_tensors(&Device::Cpu)?;
        let enc_pos = ct2
            .get("encoder/position_encodings/encodings")
            .map(|v| v.to_f32())
            .unwrap_or_default();
        drop(ct2);
        let net =
            Net::new(tensors, &cfg, enc_pos).map_err(|NetError(what)| WhisperError::Files {
                path: files.model.clone(),
                what,
            })?;
        let tokenizer = tokenizers::Tokenizer::from_file(&files.tokenizer).map_err(|e| {
            WhisperError::Files {
                path: files.tokenizer.clone(),
                what: e.to_string(),
            }
        })?;
        let config_err = |what: String| WhisperError::Files {
            path: files.config.clone(),
            what,
        };
        let src = std::fs::read_to_string(&files.config).map_err(|e| config_err(e.to_string()))?;
        let c2: Ct2Config = serde_json::from_str(&src).map_err(|e| config_err(e.to_string()))?;
        let id = |tok: &str| -> Result<u32, WhisperError> {
            tokenizer
                .token_to_id(tok)
                .ok_or_else(|| WhisperError::Files {
                    path: files.tokenizer.clone(),
                    what: format!("no token {tok}"),
                })
        };
        let sot = id("<|startoftranscript|>")?;
        let eot = id("<|endoftext|>")?;
        let no_ts = id("<|notimestamps|>")?;
        let multilingual = !c2.lang_ids.is_empty() && cfg.vocab_size >= 51865;
        let mut prompt = vec![sot];
        if multilingual {
            let lang = language.unwrap_or("en");
            let tok = tokenizer
                .token_to_id(&format!("<|{lang}|>"))
                .filter(|t| c2.lang_ids.contains(t))
                .ok_or_else(|| WhisperError::Language(lang.to_string()))?;
            prompt.push(tok);
            prompt.push(id("<|transcribe|>")?);
        } else if let Some(l) = language
            && l != "en"
        {
            return Err(WhisperError::Language(l.to_string()));
        }
        prompt.push(no_ts);
        // Everything from <|endoftext|> up is a special token (language, task, timestamps).
        let mut suppress: Vec<bool> = (0..cfg.vocab_size as u32).map(|t| t > eot).collect();
        for &t in &c2.suppress_ids {
            if let Some(s) = suppress.get_mut(t as usize) {
                *s = true;
            }
        }
        Ok(Whisper {
            filters: mel::mel_filters(cfg.num_mel_bins),
            n_mels: cfg.num_mel_bins,
            sample_len: cfg.max_target_positions / 2,
            net,
            tokenizer,
            prompt,
            eot,
            suppress,
            suppress_begin: c2.suppress_ids_begin,
            multilingual,
            short_windows: false,
        })
    }

    /// Encode only a window's audio and [`SHORT_WINDOW_MARGIN`] frames of what follows, not the
    /// whole 30 s. The encoder's cost falls with the length, but Whisper was trained on whole
    /// windows: on the bench's clips tiny.en then misheard a name and looped on another
    /// (docs/benchmarks.md), so nothing turns this on by default.
    pub fn set_short_windows(&mut self, on: bool) {
        self.short_windows = on;
    }

    pub fn multilingual(&self) -> bool {
        self.multilingual
    }

    /// Transcribe 16 kHz mono audio: one segment per 30-second window that has words.
    pub fn transcribe(&mut self, pcm: &[f32]) -> Result<Vec<Segment>, WhisperError> {
        let (spec, frames) = mel::log_mel(pcm, &self.filters, self.n_mels);
        let audio_frames = pcm.len().div_ceil(mel::HOP);
        let mut out = vec![];
        let mut from = 0;
        while from < audio_frames.max(1) {
            let len = if self.short_windows {
                // Even: the second convolution halves it.
                ((audio_frames - from.min(audio_frames) + SHORT_WINDOW_MARGIN).div_ceil(2) * 2)
                    .min(mel::N_FRAMES)
            } else {
                mel::N_FRAMES
            };
            let window = mel::pad_frames(&spec, self.n_mels, frames, from, len);
            let text = self.decode_window(window, len)?;
            let end = (from + mel::N_FRAMES).min(audio_frames);
            if !text.is_empty() {
                out.push(Segment {
                    start: from as f64 * mel::HOP as f64 / mel::SAMPLE_RATE as f64,
                    end: end as f64 * mel::HOP as f64 / mel::SAMPLE_RATE as f64,
                    text,
                });
            }
            from += mel::N_FRAMES;
        }
        Ok(out)
    }

    /// The words of 16 kHz mono audio, windows joined by a space.
    pub fn text(&mut self, pcm: &[f32]) -> Result<String, WhisperError> {
        let segs = self.transcribe(pcm)?;
        Ok(segs
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" "))
    }

    /// Greedy decoding of one `n_mels × len` window; the text, trimmed.
    fn decode_window(&mut self, window: Vec<f32>, len: usize) -> Result<String, WhisperError> {
        let features = self.net.encode(&window, len);
        let mut state = self.net.decoder(&features);
        let mut feed = self.prompt.clone();
        let mut words = vec![];
        for step in 0..self.sample_len {
            if state.len + feed.len() > self.net.text_ctx {
                break;
            }
            let logits = self.net.step(&mut state, &feed);
            let mut best = None;
            for (t, &v) in logits.iter().enumerate() {
                if self.suppress.get(t).copied().unwrap_or(true)
                    || (step == 0 && self.suppress_begin.contains(&(t as u32)))
                {
                    continue;
                }
                if best.is_none_or(|(_, b)| v > b) {
                    best = Some((t as u32, v));
                }
            }
            let Some((next, _)) = best else { break };
            if next == self.eot {
                break;
            }
            words.push(next);
            feed = vec![next];
        }
        let text = self
            .tokenizer
            .decode(&words, true)
            .map_err(|e| WhisperError::Run(e.to_string()))?;
        Ok(text.trim().to_string())
    }
}
