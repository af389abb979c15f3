//! Stage `tts`: one clause of normalized text → [`Speech`] (PCM plus a phoneme and a word timeline on
//! the audio's own sample clock, with phoneme spans that sum exactly to the audio length).
//!
//! - [`Synthesizer`] is the boundary: `synthesize(clause) -> Speech`. The real one is [`PiperVoice`]
//!   (a Piper/VITS voice on ONNX Runtime, whose graph is edited at load to output the per-phoneme
//!   durations and to take its noise from a seeded RNG: see [`onnx`] and [`piper`]); the fake one is
//!   [`FakeSynthesizer`] (a tone and a fixed phoneme table) for unit tests of the stages around it.
//! - [`timing`] maps phonemes to voice ids and the voice's durations back to timelines.
//! - [`EspeakPhonemizer`] (re-exported from [`crate::phonemize`]) runs `espeak-ng` as a subprocess.
//!
//! Threading: a synthesizer is used from one thread at a time (`&mut self`). [`SynthWorker`] runs one
//! on a dedicated std thread, fed by a bounded channel, and hands back speech clause by clause in order.
//! ONNX Runtime gets one intra-op thread by default.

pub mod fake;
pub mod kokoro;
pub mod onnx;
pub mod piper;
pub mod route;
pub mod select;
pub mod timing;
pub mod wav;
mod worker;

pub use crate::phonemize::EspeakPhonemizer;
pub use fake::FakeSynthesizer;
pub use kokoro::{KokoroOptions, KokoroVoice};
pub use piper::{PiperVoice, Speaker, VoiceConfig, VoiceOptions};
pub use route::Router;
pub use select::{VoiceChoice, load_voice, voice_files, voice_languages};
pub use worker::SynthWorker;

use crate::phonemize::PhonemizeError;
use crate::speech::Speech;
use crate::time::{Timed, Timeline};
use std::path::PathBuf;

/// Errors from the voice.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("nothing to say: the text is empty")]
    Empty,
    #[error("nothing speakable in {0:?}")]
    Unspeakable(String),
    #[error("voice {name} not found at {}: run `idol fetch` (the pinned voice) or `idol fetch --voice PATH/{name}.onnx` (your own)", path.display())]
    VoiceMissing { path: PathBuf, name: String },
    #[error("voice {name} at {} is unreadable or corrupt ({message}): run `idol fetch` (the pinned voice) or `idol fetch --voice PATH/{name}.onnx` (your own) to reinstall it", path.display())]
    VoiceCorrupt {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error("bad speaker: {0}")]
    BadSpeaker(String),
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error(transparent)]
    Phonemize(#[from] PhonemizeError),
    #[error("the synthesis thread has stopped")]
    WorkerGone,
}

/// Text clause → speech. Implementations keep state (the voice, the noise stream position), so calls
/// take `&mut self`; clauses of one render are synthesized in order.
pub trait Synthesizer: Send {
    /// The sample rate of the speech this synthesizer makes.
    fn sample_rate(&self) -> u32;

    /// Whether this voice reads text as written: its front ends read numbers, symbols and marks
    /// themselves (Kokoro's Japanese and Mandarin), so callers hand it the clause as it is and its
    /// words' [`crate::speech::Word::src`] index that text. When false (Piper) callers normalize the
    /// clause first ([`crate::text::normalize`]).
    fn reads_written_text(&self) -> bool {
        false
    }

    /// Restart the voice's noise at clause 0 of `seed` (to render again from the same start); voices
    /// with no noise (Kokoro) ignore it.
    fn set_seed(&mut self, seed: u64) {
        let _ = seed;
    }

    /// Speak the next clauses in this style: `length_scale` (`None`: the pace the voice was loaded
    /// with) and `emphasis` 0..=1 (livelier pitch and timing where the voice has noise to widen).
    fn set_style(&mut self, length_scale: Option<f32>, emphasis: f32) {
        let _ = (length_scale, emphasis);
    }
    /// One clause of normalized text (a sentence or part of one) → speech.
    fn synthesize(&mut self, clause: &str) -> Result<Speech, TtsError>;

    /// Like [`Synthesizer::synthesize`], handing the audio to `on_audio` in order as it is made, so
    /// playback can start before the clause is done. The returned speech holds all of it. The default
    /// hands over the whole clause at once.
    fn synthesize_streaming(
        &mut self,
        clause: &str,
        on_audio: &mut dyn FnMut(&[f32]),
    ) -> Result<Speech, TtsError> {
        let speech = self.synthesize(clause)?;
        on_audio(&speech.pcm);
        Ok(speech)
    }

    /// Synthesize a clause so its first audio can be played before the rest exists: `on_head` may be
    /// called once with the first piece (a [`Speech`] of its own, timelines cut at its end) and the
    /// clause's plan (its whole phoneme and word timelines, known from the durations, with silence of
    /// its full length in place of the audio not made yet); then the rest is returned on its own
    /// timeline. When `on_head` is not called, the returned speech is the whole clause (the default).
    fn synthesize_head_first(
        &mut self,
        clause: &str,
        on_head: &mut dyn FnMut(Speech, Speech),
    ) -> Result<Speech, TtsError> {
        let _ = on_head;
        self.synthesize(clause)
    }
}

impl<S: Synthesizer + ?Sized> Synthesizer for Box<S> {
    fn sample_rate(&self) -> u32 {
        (**self).sample_rate()
    }
    fn reads_written_text(&self) -> bool {
        (**self).reads_written_text()
    }
    fn set_seed(&mut self, seed: u64) {
        (**self).set_seed(seed)
    }
    fn set_style(&mut self, length_scale: Option<f32>, emphasis: f32) {
        (**self).set_style(length_scale, emphasis)
    }
    fn synthesize(&mut self, clause: &str) -> Result<Speech, TtsError> {
        (**self).synthesize(clause)
    }
    fn synthesize_streaming(
        &mut self,
        clause: &str,
        on_audio: &mut dyn FnMut(&[f32]),
    ) -> Result<Speech, TtsError> {
        (**self).synthesize_streaming(clause, on_audio)
    }
    fn synthesize_head_first(
        &mut self,
        clause: &str,
        on_head: &mut dyn FnMut(Speech, Speech),
    ) -> Result<Speech, TtsError> {
        (**self).synthesize_head_first(clause, on_head)
    }
}

/// Append `next` to `speech`, shifting its timelines to start where `speech` ends. Both must have the
/// same sample rate (speech from one synthesizer does).
pub fn append(speech: &mut Speech, next: Speech) {
    let offset = speech.pcm.len() as u64;
    speech.pcm.extend_from_slice(&next.pcm);
    let phonemes = std::mem::replace(&mut speech.phonemes, Timeline::new(1).expect("rate"));
    speech.phonemes = concat(phonemes, next.phonemes.shift(offset));
    let words = std::mem::replace(&mut speech.words, Timeline::new(1).expect("rate"));
    speech.words = concat(words, next.words.shift(offset));
}

fn concat<T>(a: Timeline<T>, b: Timeline<T>) -> Timeline<T> {
    let rate = a.rate();
    let mut items: Vec<Timed<T>> = a.into_items();
    items.extend(b.into_items());
    Timeline::from_items(rate, items).expect("appended spans start where the first speech ends")
}

/// Empty speech at `rate` (to append clauses to).
pub fn empty_speech(rate: u32) -> Speech {
    Speech {
        pcm: Vec::new(),
        sample_rate: rate,
        phonemes: Timeline::new(rate.max(1)).expect("non-zero rate"),
        words: Timeline::new(rate.max(1)).expect("non-zero rate"),
    }
}

/// `ms` of silence at `rate`, covered by one pause phoneme `_` (a `<break/>`: the face rests and the
/// timeline stays exact).
pub fn silence(rate: u32, ms: u32) -> Speech {
    silence_samples(
        rate,
        crate::time::SampleTime::from_millis(ms as u64, rate).get(),
    )
}

/// `n` samples of silence at `rate`, covered by one pause phoneme `_`.
pub fn silence_samples(rate: u32, n: u64) -> Speech {
    let mut s = empty_speech(rate);
    s.pcm = vec![0.0; n as usize];
    if n > 0 {
        s.phonemes
            .push(Timed::new(
                crate::time::TimeRange::at(crate::time::SampleTime::ZERO, n),
                crate::speech::Phoneme::new("_"),
            ))
            .expect("first item");
    }
    s
}
