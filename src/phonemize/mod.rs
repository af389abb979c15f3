//! Stage `phonemize`: normalized English text → phonemes in the IPA conventions Piper voices were trained
//! with (espeak-ng en-us). Input: one clause of normalized text. Output: [`PhonToken`]s, one per word or
//! prosody-shaping punctuation mark. Pure and cheap per call; the loaded dictionary and G2P weights are
//! shared read-only.
//!
//! Implementations: [`EnglishPhonemizer`] (CMUdict + the g2p-en GRU on candle, pure Rust, the default)
//! and [`EspeakPhonemizer`] (the `espeak-ng` program as a subprocess, for other languages).

pub mod arpabet;
pub mod english;
pub mod espeak;
pub mod g2p;
pub mod japanese;
pub mod kokoro;
pub mod mandarin;
pub mod mecab;

pub use english::{CmuDict, EnglishPhonemizer, Source};
pub use espeak::EspeakPhonemizer;
pub use g2p::G2p;

/// One token of a phonemized clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhonToken {
    /// A word as written and its IPA, espeak-ng style: stress marks `ˈ`/`ˌ` before the stressed vowel,
    /// `ɡ` as U+0261, no zero-width joiners (e.g. "hello" → `həlˈoʊ`).
    Word { text: String, ipa: String },
    /// Punctuation that shapes prosody, kept for the voice: `, . ! ? ; :` (the English phonemizer
    /// writes a dash as `,` and an ellipsis as `.`, so every mark has a Piper phoneme id).
    Punct(char),
}

/// Errors from phonemization.
#[derive(Debug, thiserror::Error)]
pub enum PhonemizeError {
    #[error("nothing speakable in {0:?}")]
    Unspeakable(String),
    #[error("{path}: {message}")]
    Load {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

/// A token and where it was read from in the text given to the phonemizer (a byte range), when the
/// front end knows it: a word's range is the text it was read from (`42` for the words a number is read
/// as), so cues written in the text can be placed on the word spoken there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub token: PhonToken,
    pub src: Option<std::ops::Range<usize>>,
}

impl Located {
    /// A token with no known place in the text.
    pub fn unplaced(token: PhonToken) -> Located {
        Located { token, src: None }
    }
}

/// Text → phoneme tokens. The real implementation is the CMUdict + GRU phonemizer; espeak-ng (a
/// subprocess, when installed) is an optional alternative; tests of other stages may use a fake.
pub trait Phonemize: Send + Sync {
    fn phonemize(&self, text: &str) -> Result<Vec<PhonToken>, PhonemizeError>;

    /// Like [`Phonemize::phonemize`], with each token's place in `text`. Front ends that segment the
    /// text themselves (Japanese, Mandarin) know it; the default knows none.
    fn phonemize_located(&self, text: &str) -> Result<Vec<Located>, PhonemizeError> {
        Ok(self
            .phonemize(text)?
            .into_iter()
            .map(Located::unplaced)
            .collect())
    }
}
