//! Fakes of the stages the pipeline drives, for unit tests, integration tests of the server and
//! benchmarks. Never used by the product (`idol serve` builds the real stages).
//!
//! - [`ToneVoice`]: a tone whose loudness follows a fixed letter → phoneme table; exact word timings.
//! - [`JawFace`]: ARKit-52 frames with `jawOpen` from the phoneme under each frame, blinks while idle.
//! - [`ScriptedGenerator`]: replies from a list, streamed in small pieces, honouring cancellation.

use super::{FaceControl, FaceSolver, Frame, StageError, Voice};
use crate::persona::{
    CancelToken, ChatMessage, FinishReason, GenOutcome, GenParams, PersonaError, TextGenerator,
};
use crate::speech::{Cue, Phoneme, Speech, Word};
use crate::time::{SampleTime, TimeRange, Timed, Timeline};
use std::sync::Arc;
use std::time::Duration;

/// The ARKit-52 channel names the fake face drives (the face solver's canonical list).
pub use crate::face::canon::ARKIT as ARKIT52;

/// A voice that says each letter as a fixed-length phoneme: vowels as a loud 220 Hz tone, other
/// letters quieter, a short pause between words and a longer one after punctuation.
#[derive(Debug, Clone)]
pub struct ToneVoice {
    rate: u32,
    vowel: u64,
    consonant: u64,
    gap: u64,
    /// Simulated synthesis time per clause.
    pub delay: Duration,
    /// Speak head first ([`Voice::speak_head_first`]) with a head of this many samples, cut
    /// anywhere (inside a word too, as a vocoder chunk is); `None` speaks whole clauses.
    pub head: Option<u64>,
}

impl ToneVoice {
    pub fn new(rate: u32) -> Self {
        ToneVoice {
            rate,
            vowel: rate as u64 * 60 / 1000,
            consonant: rate as u64 * 40 / 1000,
            gap: rate as u64 * 30 / 1000,
            delay: Duration::ZERO,
            head: None,
        }
    }

    /// Speak head first with heads of `samples` samples.
    pub fn with_head(mut self, samples: u64) -> Self {
        self.head = Some(samples);
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

fn is_vowel(c: char) -> bool {
    matches!(c.to_ascii_lowercase(), 'a' | 'e' | 'i' | 'o' | 'u' | 'y')
}

impl Voice for ToneVoice {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn speak(&mut self, clause: &str) -> Result<Speech, StageError> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let mut phonemes = Timeline::new(self.rate).expect("rate > 0");
        let mut words = Timeline::new(self.rate).expect("rate > 0");
        let mut pcm: Vec<f32> = Vec::new();
        let push = |pcm: &mut Vec<f32>, ph: &str, len: u64, amp: f32| {
            let start = pcm.len() as u64;
            for i in 0..len {
                let t = (start + i) as f32 / self.rate as f32;
                pcm.push(amp * (2.0 * std::f32::consts::PI * 220.0 * t).sin());
            }
            Timed::new(TimeRange::at(SampleTime(start), len), Phoneme::new(ph))
        };
        for word in clause.split_whitespace() {
            let letters: String = word.chars().filter(|c| c.is_alphanumeric()).collect();
            if !letters.is_empty() {
                let w0 = pcm.len() as u64;
                for c in letters.chars() {
                    let (len, amp) = if is_vowel(c) {
                        (self.vowel, 0.5)
                    } else {
                        (self.consonant, 0.15)
                    };
                    let ph = push(&mut pcm, &c.to_ascii_lowercase().to_string(), len, amp);
                    phonemes.push(ph).expect("in order");
                }
                let text = word
                    .trim_matches(|c: char| !c.is_alphanumeric())
                    .to_string();
                words
                    .push(Timed::new(
                        TimeRange::new(SampleTime(w0), SampleTime(pcm.len() as u64))
                            .expect("ordered"),
                        Word::new(text),
                    ))
                    .expect("in order");
            }
            let pause = if word.ends_with([',', '.', '!', '?', ';', ':']) {
                self.gap * 3
            } else {
                self.gap
            };
            let ph = push(&mut pcm, "_", pause, 0.0);
            phonemes.push(ph).expect("in order");
        }
        Ok(Speech {
            pcm,
            sample_rate: self.rate,
            phonemes,
            words,
        })
    }

    fn speak_head_first(
        &mut self,
        clause: &str,
        on_head: &mut dyn FnMut(Speech, Speech),
    ) -> Result<Speech, StageError> {
        let whole = self.speak(clause)?;
        let Some(cut) = self.head.filter(|&h| h > 0 && h < whole.pcm.len() as u64) else {
            return Ok(whole);
        };
        let plan = Speech {
            pcm: vec![0.0; whole.pcm.len()],
            ..whole.clone()
        };
        let mut head = whole;
        let at = SampleTime(cut);
        let rest = Speech {
            pcm: head.pcm.split_off(cut as usize),
            sample_rate: self.rate,
            phonemes: head.phonemes.split_off(at),
            words: head.words.split_off(at),
        };
        on_head(head, plan);
        Ok(rest)
    }
}

/// A face that opens the jaw for the phoneme under each frame (vowels wide, consonants a little,
/// silence closed), smiles while `happy`, and blinks every two seconds while idle.
#[derive(Debug, Clone)]
pub struct JawFace {
    rate: u32,
    fps: u32,
    channels: Vec<String>,
    jaw: usize,
    smile: [usize; 2],
    blink: [usize; 2],
    happy: f32,
}

impl JawFace {
    pub fn arkit(rate: u32, fps: u32) -> Self {
        let channels: Vec<String> = ARKIT52.iter().map(|s| s.to_string()).collect();
        let idx = |n: &str| ARKIT52.iter().position(|c| *c == n).expect("ARKit name");
        JawFace {
            rate,
            fps,
            jaw: idx("jawOpen"),
            smile: [idx("mouthSmileLeft"), idx("mouthSmileRight")],
            blink: [idx("eyeBlinkLeft"), idx("eyeBlinkRight")],
            channels,
            happy: 0.0,
        }
    }

    /// The jaw value the face gives a phoneme symbol.
    pub fn jaw_for(symbol: &str) -> f32 {
        match symbol {
            "_" | "" => 0.0,
            s if s.chars().all(is_vowel) => 0.7,
            _ => 0.2,
        }
    }

    fn frame(&self, at: SampleTime, jaw: f32, blink: f32) -> Frame {
        let mut weights = vec![0.0; self.channels.len()];
        weights[self.jaw] = jaw;
        for i in self.smile {
            weights[i] = self.happy;
        }
        for i in self.blink {
            weights[i] = blink;
        }
        let t = at.as_secs_f64(self.rate) as f32;
        Frame::new(
            at,
            crate::face::MorphWeights::unit(weights).expect("finite weights"),
            glam::Quat::from_rotation_z(0.05 * (t * 0.7).sin()),
            Default::default(),
        )
    }
}

impl FaceSolver for JawFace {
    fn channels(&self) -> &[String] {
        &self.channels
    }

    fn rig(&self) -> &str {
        "arkit52"
    }

    fn frames(&mut self, s0: SampleTime, speech: &Speech, cues: &[Cue]) -> Vec<Frame> {
        if let Some(c) = cues.iter().rev().find(|c| c.name == "happy") {
            self.happy = c.intensity;
        }
        let n = SampleTime::frames_in(speech.pcm.len() as u64, self.rate, self.fps);
        (0..n)
            .map(|k| {
                let rel = SampleTime::frame_offset(k, self.rate, self.fps);
                let jaw = speech
                    .phonemes
                    .at(SampleTime(rel))
                    .map_or(0.0, |p| Self::jaw_for(&p.value.symbol));
                self.frame(s0.frame(k, self.rate, self.fps), jaw, 0.0)
            })
            .collect()
    }

    fn idle(&mut self, range: TimeRange) -> Vec<Frame> {
        let mut k = (range.start().get() as u128 * self.fps as u128 / self.rate as u128) as u64;
        k = k.saturating_sub(1);
        let mut out = vec![];
        loop {
            let at = SampleTime::ZERO.frame(k, self.rate, self.fps);
            if at >= range.end() {
                break;
            }
            if at >= range.start() {
                let blink = if k % (2 * self.fps as u64) < 6 {
                    1.0
                } else {
                    0.0
                };
                out.push(self.frame(at, 0.0, blink));
            }
            k += 1;
        }
        out
    }

    fn set(&mut self, control: &FaceControl) {
        if let FaceControl::Emotion { name, intensity } = control {
            self.happy = if name == "happy" { *intensity } else { 0.0 };
        }
    }
}

/// A text generator that answers from a script, in small pieces, optionally slowly.
#[derive(Debug, Clone)]
pub struct ScriptedGenerator {
    replies: Vec<String>,
    next: usize,
    /// Characters per streamed piece.
    pub piece: usize,
    /// Pause before each piece (simulated decoding time).
    pub delay: Duration,
    /// Every message list it was asked to answer, in order.
    pub seen: Arc<parking_lot::Mutex<Vec<Vec<ChatMessage>>>>,
}

impl ScriptedGenerator {
    pub fn new<S: Into<String>>(replies: impl IntoIterator<Item = S>) -> Self {
        ScriptedGenerator {
            replies: replies.into_iter().map(Into::into).collect(),
            next: 0,
            piece: 3,
            delay: Duration::ZERO,
            seen: Arc::default(),
        }
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl TextGenerator for ScriptedGenerator {
    fn generate(
        &mut self,
        messages: &[ChatMessage],
        _params: &GenParams,
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenOutcome, PersonaError> {
        self.seen.lock().push(messages.to_vec());
        let reply = self
            .replies
            .get(self.next % self.replies.len().max(1))
            .cloned()
            .unwrap_or_default();
        self.next += 1;
        let chars: Vec<char> = reply.chars().collect();
        let mut text = String::new();
        let mut finish = FinishReason::Stop;
        for piece in chars.chunks(self.piece.max(1)) {
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay);
            }
            if cancel.is_cancelled() {
                finish = FinishReason::Cancelled;
                break;
            }
            let p: String = piece.iter().collect();
            text.push_str(&p);
            if !on_text(&p) {
                finish = FinishReason::Cancelled;
                break;
            }
        }
        Ok(GenOutcome {
            completion_tokens: text.chars().count().div_ceil(self.piece.max(1)),
            text,
            finish,
            prompt_tokens: 0,
            prompt_tokens_evaluated: 0,
        })
    }
}

/// A conversation for a persona named Mika with the default card: no examples, no memory, no rate
/// limit, the default reply shaping (the stages' persona in tests).
pub fn conversation() -> crate::persona::conversation::Conversation {
    crate::persona::conversation::Conversation::new(
        crate::persona::card::PersonaCard::named("Mika"),
        None,
        4096,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_voice_speech_is_valid_and_words_are_timed() {
        let s = ToneVoice::new(22050).speak("Hi there, you.").unwrap();
        s.validate().unwrap();
        let w: Vec<&str> = s.words.iter().map(|w| w.value.text.as_str()).collect();
        assert_eq!(w, ["Hi", "there", "you"]);
    }

    #[test]
    fn idle_frames_are_on_the_global_grid() {
        let mut f = JawFace::arkit(22050, 60);
        let a = f.idle(TimeRange::at(SampleTime(0), 1000));
        let b = f.idle(TimeRange::at(SampleTime(1000), 1000));
        let stamps: Vec<u64> = a.iter().chain(&b).map(|f| f.at.get()).collect();
        let want: Vec<u64> = (0..6)
            .map(|k| SampleTime::frame_offset(k, 22050, 60))
            .collect();
        assert_eq!(stamps, want);
    }
}

/// A random tagged text for property tests of the speaking paths, and what it asks for.
#[derive(Debug, Clone, Default)]
pub struct TaggedText {
    /// The text: words, emotion and action tags, stage directions and breaks, space-separated.
    pub text: String,
    /// The written words, in order (punctuation attached, as written).
    pub words: Vec<&'static str>,
    /// Each emotion or action (stage directions naming a gesture included): the number of words
    /// written before it, and its name.
    pub cues: Vec<(usize, String)>,
    /// Each break: the number of words written before it, and its length in milliseconds.
    pub breaks: Vec<(usize, u32)>,
}

impl TaggedText {
    /// The text `items` describe: `(0..=3, k)` a word, `(4 | 5, k)` a tag, `(6, k)` a break of
    /// `100 * (k + 1)` ms, anything else a stage direction that names no gesture (`k < 6`).
    pub fn generate(items: &[(u8, usize)]) -> TaggedText {
        const WORDS: [&str; 6] = ["hello", "there,", "friends.", "yes!", "okay", "why?"];
        const TAGS: [(&str, &str); 6] = [
            ("[happy]", "happy"),
            ("[sad:0.5]", "sad"),
            ("<nod>", "nod"),
            ("<wave/>", "wave"),
            ("*waves*", "wave"),
            ("(laughs)", "laugh"),
        ];
        let mut t = TaggedText::default();
        for &(kind, k) in items {
            match kind {
                0..=3 => {
                    t.words.push(WORDS[k]);
                    t.text.push_str(WORDS[k]);
                }
                4 | 5 => {
                    t.text.push_str(TAGS[k].0);
                    t.cues.push((t.words.len(), TAGS[k].1.to_string()));
                }
                6 => {
                    let ms = 100 * (k as u32 + 1);
                    t.text.push_str(&format!("<break time=\"{ms}ms\"/>"));
                    t.breaks.push((t.words.len(), ms));
                }
                _ => t.text.push_str("(looks away)"),
            }
            t.text.push(' ');
        }
        t
    }

    /// The text streamed into `seg` in pieces of `cuts` characters (then 7 at a time), as an LLM
    /// streams a reply: the clauses that come out.
    pub fn stream_into(
        &self,
        seg: &mut crate::text::TextSegmenter,
        cuts: &[usize],
    ) -> Vec<crate::text::ClauseText> {
        let chars: Vec<char> = self.text.chars().collect();
        let mut out = vec![];
        let mut at = 0;
        for c in cuts.iter().chain(std::iter::repeat(&7)) {
            if at >= chars.len() {
                break;
            }
            let end = (at + c).min(chars.len());
            out.extend(seg.push(&chars[at..end].iter().collect::<String>()));
            at = end;
        }
        out.extend(seg.finish());
        out
    }
}
