//! How a script's lines are voiced: the [`LineVoice`] a render speaks spoken lines with (the Piper
//! voice with a per-line [`Style`], or any [`crate::tts::Synthesizer`]), and the [`LipSync`] provider
//! that gives a recorded line's take its phonemes.

use crate::speech::{Phoneme, Speech};
use crate::time::Timeline;
use crate::tts::{PiperVoice, Synthesizer, TtsError, VoiceOptions};

/// How a line is to be spoken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Style {
    /// Length scale; `None` keeps the voice's (or the script's default).
    pub length_scale: Option<f32>,
    /// 0..=1.
    pub emphasis: f32,
}

/// The voice as a script render drives it: one normalized sentence at a time (as written for a
/// voice that reads it so), with a style.
pub trait LineVoice {
    fn sample_rate(&self) -> u32;
    fn speak(&mut self, sentence: &str, style: Style) -> Result<Speech, TtsError>;
    /// Whether sentences are given as written ([`Synthesizer::reads_written_text`]), not normalized.
    fn reads_written_text(&self) -> bool {
        false
    }
}

/// The script's voice (any [`Synthesizer`]: Piper, Kokoro, a router by language) with per-line length
/// scale and emphasis ([`Synthesizer::set_style`]: Piper's emphasis widens its noise scales by up to
/// 50%, livelier pitch and timing).
pub struct PiperLineVoice {
    voice: Box<dyn Synthesizer>,
}

impl PiperLineVoice {
    /// Wrap a loaded Piper voice; `options` are the ones it was loaded with (their overrides are the
    /// base scales), and its noise restarts at clause 0 of `options.seed`.
    pub fn new(voice: PiperVoice, options: &VoiceOptions) -> Self {
        Self::from_voice(Box::new(voice), options.seed)
    }

    /// Wrap any loaded voice ([`crate::tts::load_voice`]); its noise restarts at clause 0 of `seed`.
    pub fn from_voice(mut voice: Box<dyn Synthesizer>, seed: u64) -> Self {
        voice.set_seed(seed);
        PiperLineVoice { voice }
    }

    /// The voice, to keep for another script ([`PiperLineVoice::from_voice`] reseeds it).
    pub fn into_inner(self) -> Box<dyn Synthesizer> {
        self.voice
    }

    /// Restart the noise streams at clause 0 of `seed` (to render again from the same start).
    pub fn reseed(&mut self, seed: u64) {
        self.voice.set_seed(seed);
    }
}

impl LineVoice for PiperLineVoice {
    fn sample_rate(&self) -> u32 {
        self.voice.sample_rate()
    }

    fn speak(&mut self, sentence: &str, style: Style) -> Result<Speech, TtsError> {
        self.voice.set_style(style.length_scale, style.emphasis);
        self.voice.synthesize(sentence)
    }

    fn reads_written_text(&self) -> bool {
        self.voice.reads_written_text()
    }
}

/// Any [`Synthesizer`] as a line voice that ignores the style (the fake voice in unit tests).
pub struct SynthLineVoice<S>(pub S);

impl<S: Synthesizer> LineVoice for SynthLineVoice<S> {
    fn sample_rate(&self) -> u32 {
        self.0.sample_rate()
    }
    fn speak(&mut self, sentence: &str, _style: Style) -> Result<Speech, TtsError> {
        self.0.synthesize(sentence)
    }
}

/// Audio-driven lip sync for recorded lines without an alignment file: the take (mono, at the
/// performance's rate) and its transcript (tags removed), if any → a phoneme timeline starting at 0
/// (IPA or ARPAbet symbols, gaps allowed), at `rate`.
pub trait LipSync {
    fn phonemes(
        &mut self,
        audio: &[f32],
        rate: u32,
        transcript: Option<&str>,
    ) -> Result<Timeline<Phoneme>, crate::face::from_audio::FromAudioError>;
}

/// [`LipSync`] from the audio itself (`crate::face::from_audio`): spectral classes decoded to phones,
/// aligned to the transcript's expected phones when a transcript and a phonemizer are given.
pub struct AudioLipSync {
    phonemizer: Option<std::sync::Arc<dyn crate::phonemize::Phonemize>>,
    options: crate::face::from_audio::AudioLipsyncOptions,
}

impl AudioLipSync {
    /// `phonemizer` turns a transcript into the phones to align (without one, transcripts are ignored
    /// and the audio alone decides).
    pub fn new(phonemizer: Option<std::sync::Arc<dyn crate::phonemize::Phonemize>>) -> Self {
        AudioLipSync {
            phonemizer,
            options: Default::default(),
        }
    }
}

impl LipSync for AudioLipSync {
    fn phonemes(
        &mut self,
        audio: &[f32],
        rate: u32,
        transcript: Option<&str>,
    ) -> Result<Timeline<Phoneme>, crate::face::from_audio::FromAudioError> {
        let mut opts = self.options.clone();
        if let (Some(text), Some(ph)) = (transcript, &self.phonemizer) {
            // A transcript the phonemizer cannot read leaves the audio alone to decide.
            if let Ok(tokens) = ph.phonemize(text) {
                opts.transcript = Some(crate::face::from_audio::transcript_phones(&tokens));
            }
        }
        crate::face::from_audio::phonemes_from_audio(audio, rate, &opts)
    }
}
