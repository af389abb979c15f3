//! A fake [`Synthesizer`] for unit tests of the stages around the voice: each letter of each word is a
//! "phoneme" (its lowercase letter; the first vowel of a word carries primary stress) lasting a fixed
//! time, punctuation is a fixed silence `_`, and the audio is a sine tone under phonemes and zeros under
//! silence. Deterministic and instant; the timeline invariants of [`Speech`] hold exactly.

use super::{Synthesizer, TtsError};
use crate::speech::{Phoneme, Speech, Stress, Word};
use crate::time::{SampleTime, TimeRange, Timed, Timeline};

/// Tone + fixed phoneme table.
#[derive(Debug, Clone)]
pub struct FakeSynthesizer {
    pub sample_rate: u32,
    /// Length of each letter-phoneme, in samples.
    pub phoneme_len: u64,
    /// Length of the pause for punctuation, in samples.
    pub pause_len: u64,
    /// Tone frequency in Hz.
    pub tone_hz: f32,
}

impl Default for FakeSynthesizer {
    fn default() -> Self {
        FakeSynthesizer {
            sample_rate: 22050,
            phoneme_len: 1764, // 80 ms
            pause_len: 4410,   // 200 ms
            tone_hz: 220.0,
        }
    }
}

impl Synthesizer for FakeSynthesizer {
    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn synthesize(&mut self, clause: &str) -> Result<Speech, TtsError> {
        if clause.trim().is_empty() {
            return Err(TtsError::Empty);
        }
        let rate = self.sample_rate;
        let mut phonemes = Vec::new();
        let mut words = Vec::new();
        let mut t = SampleTime::ZERO;
        for raw in clause.split_whitespace() {
            let letters: Vec<char> = raw.chars().filter(|c| c.is_alphanumeric()).collect();
            if !letters.is_empty() {
                let start = t;
                let mut stressed = false;
                for c in letters {
                    let sym: String = c.to_lowercase().collect();
                    let vowel = "aeiou".contains(sym.as_str());
                    let stress = if vowel && !stressed {
                        stressed = true;
                        Stress::Primary
                    } else {
                        Stress::None
                    };
                    phonemes.push(Timed::new(
                        TimeRange::at(t, self.phoneme_len),
                        Phoneme::stressed(sym, stress),
                    ));
                    t += self.phoneme_len;
                }
                let text: String = raw.chars().filter(|c| !c.is_ascii_punctuation()).collect();
                let range = TimeRange::new(start, t).expect("ordered");
                words.push(Timed::new(range, Word::new(text)));
            }
            if raw.ends_with(|c: char| c.is_ascii_punctuation()) {
                phonemes.push(Timed::new(
                    TimeRange::at(t, self.pause_len),
                    Phoneme::new("_"),
                ));
                t += self.pause_len;
            }
        }
        if words.is_empty() {
            return Err(TtsError::Unspeakable(clause.to_string()));
        }
        let step = std::f32::consts::TAU * self.tone_hz / rate as f32;
        let mut pcm = vec![0f32; t.get() as usize];
        for p in &phonemes {
            if !p.value.is_silence() {
                for i in p.start().get()..p.end().get() {
                    pcm[i as usize] = 0.3 * (step * i as f32).sin();
                }
            }
        }
        let phonemes = Timeline::from_items(rate, phonemes).expect("ordered");
        let words = Timeline::from_items(rate, words).expect("ordered");
        Ok(Speech {
            pcm,
            sample_rate: rate,
            phonemes,
            words,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_speech_is_valid() {
        let mut f = FakeSynthesizer::default();
        let s = f.synthesize("Hi there, you!").unwrap();
        s.validate().unwrap();
        assert_eq!(s.words.len(), 3);
        assert_eq!(
            s.phonemes.items()[1].value,
            Phoneme::stressed("i", Stress::Primary)
        );
        assert!(matches!(f.synthesize("  "), Err(TtsError::Empty)));
        assert!(matches!(f.synthesize("!!"), Err(TtsError::Unspeakable(_))));
    }
}
