//! Forced alignment of a recording to its transcript, by synthesis: the transcript is spoken by
//! idol's own voice (whose phone and word times are exact, they come from the model's durations)
//! and that speech is aligned to the recording (`face::from_audio::synth`: cepstral features, banded
//! dynamic time warping, boundaries carried over and refined, pauses carved out).
//!
//! Layer: above `tts` (it speaks) and `face` (it aligns); the face layer itself never loads a voice.
//! Used by `idol lipsync AUDIO --transcript TEXT` and `benches/audiolip.rs`.

use crate::face::from_audio::{
    FromAudioError, SynthAlignOptions, SynthAlignment, align_to_synthesis,
};
use crate::speech::Speech;
use crate::tts::{self, Synthesizer, TtsError};

/// Errors of transcript alignment.
#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    #[error("the transcript has nothing the voice can speak: give the words the recording says")]
    NothingToSay,
    #[error("speaking the transcript")]
    Voice(#[source] TtsError),
    #[error(transparent)]
    Align(#[from] FromAudioError),
}

/// The transcript spoken by `voice`, one sentence at a time (Piper speaks best a sentence at a time;
/// normalised first, so numbers and abbreviations are spoken as a reader would). Sentences with
/// nothing speakable are skipped.
pub fn speak_transcript(voice: &mut dyn Synthesizer, text: &str) -> Result<Speech, AlignError> {
    let mut speech = tts::empty_speech(voice.sample_rate());
    for sentence in crate::text::segment::split_sentences(text) {
        // A voice that reads text as written (Kokoro) gets it as it is; others normalized.
        let clause = if voice.reads_written_text() {
            sentence.text.clone()
        } else {
            crate::text::normalize(&sentence.text)
        };
        match voice.synthesize(&clause) {
            Ok(s) => tts::append(&mut speech, s),
            Err(TtsError::Empty | TtsError::Unspeakable(_)) => {}
            Err(e) => return Err(AlignError::Voice(e)),
        }
    }
    if speech.words.is_empty() {
        return Err(AlignError::NothingToSay);
    }
    Ok(speech)
}

/// Align `pcm` (mono, `sample_rate` Hz) to `text`: speak it with `voice`, then carry the voice's
/// phones and words over to the recording. Check [`SynthAlignment::mismatch`] before trusting it.
pub fn align_transcript(
    voice: &mut dyn Synthesizer,
    pcm: &[f32],
    sample_rate: u32,
    text: &str,
    opts: &SynthAlignOptions,
) -> Result<SynthAlignment, AlignError> {
    let synth = speak_transcript(voice, text)?;
    Ok(align_to_synthesis(pcm, sample_rate, &synth, opts)?)
}
