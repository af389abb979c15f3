//! Stage `text`: what the persona (or an operator, or chat) wrote → clauses ready to speak, with the
//! inline cues that ride along.
//!
//! Input: text, whole or as streamed pieces cut anywhere. Output: [`Clause`]s (clean text, byte span,
//! what ended it, the [`TextCue`]s inside it) and, per clause, [`normalize()`]d text for the phonemizer.
//!
//! - [`tags`]: streaming parser for `[happy]`, `[sad:0.5]`, `<wave>`, `<break time="300ms"/>`.
//! - [`segment`]: sentences and clauses, whole or incremental, so the first clause of a reply can be
//!   spoken before the sentence ends.
//! - [`normalize`](mod@normalize) ([`normalize()`](fn@normalize)): numbers, money, times, abbreviations, symbols, URLs, emoji, repeated
//!   punctuation, ALL CAPS → plain words and prosody punctuation.
//! - [`numbers`]: numbers as words.
//! - [`utterance`]: tagged text → [`ClauseText`]s with their cues on words and their pauses (the
//!   one reading every speaking path uses), and [`place_cues`], the one rule that puts a spoken
//!   clause's cues on its samples.
//!
//! Threading: everything here is pure functions or plain state owned by one stream; no locks.

pub mod normalize;
pub mod numbers;
pub mod segment;
pub mod tags;
pub mod utterance;

pub use normalize::{cue_sample, normalize, spoken_word_offsets, words_before};
pub use segment::{
    Boundary, Clause, ClauseSegmenter, ClauseStream, Segment, SegmenterConfig, split_clauses,
    split_sentences,
};
pub use tags::{CueEvent, TagEvent, TagParser, TextCue};
pub use utterance::{ClauseText, TextSegmenter, WordCue, place_cues};
