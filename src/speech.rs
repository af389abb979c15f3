//! The values that cross stage boundaries: what the voice said and when ([`Speech`], [`Phoneme`],
//! [`Word`]) and the emotion/action cues that ride along with the text ([`Cue`]).
//!
//! These are plain data: the stages that make them (text, tts) and the stages that read them (face,
//! perform, sinks) all depend on this module and on [`crate::time`], never on each other.

use crate::time::{SampleTime, Timeline};
use serde::{Deserialize, Serialize};

/// Lexical stress of a phoneme (vowels carry it; consonants are `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stress {
    #[default]
    None,
    Primary,
    Secondary,
}

/// One phoneme as the voice spoke it: an IPA symbol as Piper/espeak-ng write it (`ɡ` is U+0261), or an
/// ARPAbet symbol (`AA1`), or `_`/silence. The face maps either to visemes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phoneme {
    pub symbol: String,
    #[serde(default, skip_serializing_if = "is_no_stress")]
    pub stress: Stress,
}

fn is_no_stress(s: &Stress) -> bool {
    *s == Stress::None
}

impl Phoneme {
    pub fn new(symbol: impl Into<String>) -> Self {
        Phoneme {
            symbol: symbol.into(),
            stress: Stress::None,
        }
    }

    pub fn stressed(symbol: impl Into<String>, stress: Stress) -> Self {
        Phoneme {
            symbol: symbol.into(),
            stress,
        }
    }

    /// Silence or a pause (`_`, `sil`, `sp`, `pau`, empty, or punctuation).
    pub fn is_silence(&self) -> bool {
        matches!(
            self.symbol.as_str(),
            "" | "_" | "sil" | "sp" | "spn" | "pau" | "SIL" | "<p:>" | " "
        ) || self
            .symbol
            .chars()
            .all(|c| c.is_ascii_punctuation() || c.is_whitespace())
    }
}

/// One word as spoken, with its text as written in the clause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Word {
    pub text: String,
    /// Where the word is in the clause text the voice was given (byte range), when the voice knows
    /// it: cues written in that text are placed by it ([`crate::text::cue_sample`]). Voices whose
    /// words are normalized forms of the text (Piper: "42" → "forty two") leave it `None`, and cues
    /// are placed by counting spoken words instead. Not part of any output format.
    #[serde(skip)]
    pub src: Option<std::ops::Range<usize>>,
}

impl Word {
    /// A word with no known place in the clause text.
    pub fn new(text: impl Into<String>) -> Word {
        Word {
            text: text.into(),
            src: None,
        }
    }
}

/// The languages a voice can be routed by (`[voice.languages]` in idol.toml and a persona card):
/// Japanese, Mandarin, English.
pub const VOICE_LANGUAGES: [&str; 3] = ["ja", "zh", "en"];

/// What a cue asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CueKind {
    /// A mood that lasts until the next emotion cue (`[happy]`).
    Emotion,
    /// A one-shot gesture (`<wave>`, `<nod>`).
    Action,
}

/// An emotion or action cue at a point on the timeline (or, before synthesis, at a text offset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cue {
    pub kind: CueKind,
    pub name: String,
    /// 0..=1.
    pub intensity: f32,
    pub at: SampleTime,
}

/// Synthesized speech: PCM and what was said when. Invariant (checked by [`Speech::validate`]): the
/// phoneme timeline is contiguous, starts at 0 and ends exactly at `pcm.len()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Speech {
    /// Mono samples in -1..=1.
    pub pcm: Vec<f32>,
    pub sample_rate: u32,
    pub phonemes: Timeline<Phoneme>,
    pub words: Timeline<Word>,
}

/// A broken [`Speech`] invariant.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpeechError {
    #[error("phoneme timeline is at {timeline} Hz but audio is at {audio} Hz")]
    RateMismatch { timeline: u32, audio: u32 },
    #[error("phoneme timeline has gaps or does not start at sample 0")]
    NotContiguous,
    #[error("phonemes cover {covered} samples but the audio has {audio}")]
    LengthMismatch { covered: u64, audio: u64 },
}

impl Speech {
    pub fn duration_secs(&self) -> f64 {
        self.pcm.len() as f64 / self.sample_rate as f64
    }

    pub fn validate(&self) -> Result<(), SpeechError> {
        if self.phonemes.rate() != self.sample_rate {
            return Err(SpeechError::RateMismatch {
                timeline: self.phonemes.rate(),
                audio: self.sample_rate,
            });
        }
        let audio = self.pcm.len() as u64;
        let Some(span) = self.phonemes.span() else {
            return if audio == 0 {
                Ok(())
            } else {
                Err(SpeechError::LengthMismatch { covered: 0, audio })
            };
        };
        if span.start() != SampleTime::ZERO || !self.phonemes.is_contiguous() {
            return Err(SpeechError::NotContiguous);
        }
        if span.end().get() != audio {
            return Err(SpeechError::LengthMismatch {
                covered: span.end().get(),
                audio,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{TimeRange, Timed};

    #[test]
    fn speech_validates_coverage() {
        let mut ph = Timeline::new(100).unwrap();
        ph.push(Timed::new(
            TimeRange::at(SampleTime(0), 4),
            Phoneme::new("h"),
        ))
        .unwrap();
        ph.push(Timed::new(
            TimeRange::at(SampleTime(4), 6),
            Phoneme::stressed("ɛ", Stress::Primary),
        ))
        .unwrap();
        let mut s = Speech {
            pcm: vec![0.0; 10],
            sample_rate: 100,
            phonemes: ph,
            words: Timeline::new(100).unwrap(),
        };
        assert_eq!(s.validate(), Ok(()));
        s.pcm.push(0.0);
        assert_eq!(
            s.validate(),
            Err(SpeechError::LengthMismatch {
                covered: 10,
                audio: 11
            })
        );
        assert!(Phoneme::new("_").is_silence() && Phoneme::new(",").is_silence());
        assert!(!Phoneme::new("m").is_silence());
    }
}
