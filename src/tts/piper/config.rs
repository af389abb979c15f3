//! A Piper voice's `NAME.onnx.json` as idol reads it (checked at load), and the options a command
//! loads a voice with (speaker, scales, seed, threads).

use crate::tts::TtsError;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The `.onnx.json` fields idol reads.
#[derive(Debug, Clone, Deserialize)]
pub struct VoiceConfig {
    pub audio: AudioConfig,
    #[serde(default)]
    pub espeak: Option<EspeakConfig>,
    #[serde(default)]
    pub inference: InferenceConfig,
    pub phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default = "one")]
    pub num_speakers: u32,
    #[serde(default)]
    pub speaker_id_map: HashMap<String, i64>,
    #[serde(default)]
    pub phoneme_type: Option<String>,
    #[serde(default)]
    pub language: Option<LanguageConfig>,
}

/// The voice's language as Piper writes it (`"code": "en_US"`).
#[derive(Debug, Clone, Deserialize)]
pub struct LanguageConfig {
    pub code: String,
}

impl VoiceConfig {
    /// The language the voice speaks, as a base ISO 639-1 code (`en`): from `language.code`, else
    /// the espeak voice (`en-us`, `cmn` → `zh`); `None` when the config says neither.
    pub fn language(&self) -> Option<String> {
        let code = match (&self.language, &self.espeak) {
            (Some(l), _) => l.code.clone(),
            (None, Some(e)) => e.voice.clone(),
            _ => return None,
        };
        let base = code
            .split(['_', '-'])
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match base.as_str() {
            "cmn" | "yue" => "zh".to_string(),
            _ => base,
        })
    }
}

/// The languages the voice `voice` (`NAME.onnx`, its `NAME.onnx.json` beside it) speaks; empty when
/// its config cannot be read or does not say.
pub fn voice_languages(voice: &Path) -> Vec<String> {
    let json_path = PathBuf::from(format!("{}.json", voice.display()));
    crate::budget::read_text(&json_path, crate::budget::MAX_TEXT_FILE_BYTES)
        .ok()
        .and_then(|j| serde_json::from_str::<VoiceConfig>(&j).ok())
        .and_then(|c| c.language())
        .into_iter()
        .collect()
}

fn one() -> u32 {
    1
}

/// The sample rates a voice may have (Piper's voices are 16000 and 22050 Hz).
pub const VOICE_RATES: std::ops::RangeInclusive<u32> = 8_000..=96_000;

impl VoiceConfig {
    /// Check what serde cannot: a sample rate, scales and maps a voice can really have. The message
    /// names the field and what is allowed (the caller adds the file).
    pub fn validate(&self) -> Result<(), String> {
        let rate = self.audio.sample_rate;
        if !VOICE_RATES.contains(&rate) {
            return Err(format!(
                "audio.sample_rate is {rate}; allowed {}..={} Hz",
                VOICE_RATES.start(),
                VOICE_RATES.end()
            ));
        }
        let inf = &self.inference;
        for (name, v, lo, hi) in [
            ("inference.length_scale", inf.length_scale, 0.1, 10.0),
            ("inference.noise_scale", inf.noise_scale, 0.0, 5.0),
            ("inference.noise_w", inf.noise_w, 0.0, 5.0),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!("{name} is {v}; allowed {lo}..={hi}"));
            }
        }
        if self.phoneme_id_map.is_empty() || self.phoneme_id_map.len() > 4096 {
            return Err(format!(
                "phoneme_id_map has {} entries; allowed 1..=4096",
                self.phoneme_id_map.len()
            ));
        }
        for (k, ids) in &self.phoneme_id_map {
            if ids.is_empty() || ids.len() > 16 || ids.iter().any(|&i| !(0..65536).contains(&i)) {
                return Err(format!(
                    "phoneme_id_map[{k:?}] is {ids:?}; each phoneme maps to 1..=16 ids in 0..65536"
                ));
            }
        }
        if !(1..=65536).contains(&self.num_speakers) {
            return Err(format!(
                "num_speakers is {}; allowed 1..=65536",
                self.num_speakers
            ));
        }
        let n = i64::from(self.num_speakers);
        if let Some((name, id)) = self
            .speaker_id_map
            .iter()
            .find(|(_, id)| !(0..n).contains(*id))
        {
            return Err(format!(
                "speaker_id_map[{name:?}] is {id}; allowed 0..{n} (num_speakers)"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AudioConfig {
    pub sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EspeakConfig {
    pub voice: String,
}

/// Inference defaults of a voice.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct InferenceConfig {
    #[serde(default = "noise_scale")]
    pub noise_scale: f32,
    #[serde(default = "length_scale")]
    pub length_scale: f32,
    #[serde(default = "noise_w")]
    pub noise_w: f32,
}

fn noise_scale() -> f32 {
    0.667
}
fn length_scale() -> f32 {
    1.0
}
fn noise_w() -> f32 {
    0.8
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            noise_scale: noise_scale(),
            length_scale: length_scale(),
            noise_w: noise_w(),
        }
    }
}

/// Which speaker of a multi-speaker voice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speaker {
    Id(i64),
    Name(String),
}

impl std::str::FromStr for Speaker {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<i64>() {
            Ok(id) => Speaker::Id(id),
            Err(_) => Speaker::Name(s.to_string()),
        })
    }
}

/// How to load and run a voice.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceOptions {
    /// ONNX Runtime intra-op threads (default 1).
    pub threads: usize,
    /// Overrides of the voice's inference defaults.
    pub noise_scale: Option<f32>,
    pub length_scale: Option<f32>,
    pub noise_w: Option<f32>,
    pub speaker: Option<Speaker>,
    pub seed: u64,
    /// Run the flow span by span where the graph allows (default): a first chunk then costs the same
    /// for any clause length. `false` keeps the flow in the front (whole clause at once); the audio is
    /// the same either way (for comparisons, see `benches/tts.rs`).
    pub split_flow: bool,
}

impl Default for VoiceOptions {
    fn default() -> Self {
        VoiceOptions {
            threads: 1,
            noise_scale: None,
            length_scale: None,
            noise_w: None,
            speaker: None,
            seed: 0,
            split_flow: true,
        }
    }
}

pub(super) fn resolve_speaker(s: &Speaker, config: &VoiceConfig) -> Result<i64, TtsError> {
    match s {
        Speaker::Id(id) if *id >= 0 && (*id as u64) < u64::from(config.num_speakers) => Ok(*id),
        Speaker::Id(id) => Err(TtsError::BadSpeaker(format!(
            "speaker {id} is out of range: the voice has {} speakers (0..{})",
            config.num_speakers, config.num_speakers
        ))),
        Speaker::Name(n) => config.speaker_id_map.get(n).copied().ok_or_else(|| {
            let mut names: Vec<&String> = config.speaker_id_map.keys().collect();
            names.sort();
            TtsError::BadSpeaker(format!("no speaker named {n:?}; the voice has {names:?}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(audio: &str, inference: &str) -> VoiceConfig {
        serde_json::from_str(&format!(
            r#"{{"audio": {audio}, "inference": {inference}, "num_speakers": 1,
                "phoneme_id_map": {{"_": [0], "^": [1], "$": [2], "a": [14]}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn voice_configs_that_cannot_be_true_are_refused() {
        let ok = r#"{"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8}"#;
        assert_eq!(config(r#"{"sample_rate": 22050}"#, ok).validate(), Ok(()));
        let e = config(r#"{"sample_rate": 4294967295}"#, ok)
            .validate()
            .unwrap_err();
        assert!(e.contains("audio.sample_rate is 4294967295"), "{e}");
        let e = config(r#"{"sample_rate": 0}"#, ok).validate().unwrap_err();
        assert!(e.contains("allowed 8000..=96000 Hz"), "{e}");
        let e = config(
            r#"{"sample_rate": 22050}"#,
            r#"{"noise_scale": 0.667, "length_scale": -1, "noise_w": 0.8}"#,
        )
        .validate()
        .unwrap_err();
        assert!(e.contains("inference.length_scale is -1"), "{e}");
        let mut c = config(r#"{"sample_rate": 22050}"#, ok);
        c.phoneme_id_map.insert("b".into(), vec![]);
        assert!(c.validate().unwrap_err().contains("phoneme_id_map[\"b\"]"));
        let mut c = config(r#"{"sample_rate": 22050}"#, ok);
        c.speaker_id_map.insert("x".into(), 3);
        assert!(c.validate().unwrap_err().contains("speaker_id_map"));
    }
}
