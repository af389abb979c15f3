//! Stage `script`: scripted performances for studios. A hand-written TOML script (lines with inline
//! emotion/action tags and breaks, per-line rate and emphasis, timing, look-at targets, recorded audio
//! lines, pass-through events) becomes one performance on one sample clock.
//!
//! - [`parse`]: TOML text → [`Script`], every problem a [`ScriptError`] with file:line:column, the
//!   dotted field and what is valid. Format reference: `docs/scripts.md`.
//! - [`voice`]: the [`LineVoice`] lines are spoken with and the [`LipSync`] recorded takes use;
//!   [`performance`]: what a render makes.
//! - [`render`]: [`Script`] → [`Performance`] (PCM, phoneme and word timelines, captions, cues,
//!   events and face frames) offline, through a [`LineVoice`] (the Piper voice in production) and the
//!   face solver. Recorded lines take their mouth from an alignment file, or from a pluggable
//!   [`LipSync`] provider (audio-driven lip sync), or stay closed with a warning.
//! - [`output`]: the files of `idol render` (WAV, frames JSONL and Live Link CSV, SRT, WebVTT,
//!   events JSONL), written into a temporary folder beside the target and moved in only when all of
//!   them are complete.
//! - [`live`]: a rendered performance as the live pipeline's [`crate::perform::Event`]s in sample order,
//!   and a player that paces them by the wall clock to [`crate::perform::Sink`]s (`idol perform`).
//!
//! Input: script text and the files it names (recorded audio, alignments), resolved relative to the
//! script's folder. Output: a [`Performance`]; with a seed, byte-identical from run to run (the voice's
//! noise is seeded per clause, the face's idle layer is a pure function of seed and absolute sample, and
//! every writer formats numbers the same way).
//!
//! Threading: parsing and planning are pure; a render runs on the caller's thread (the voice is driven
//! clause by clause, the face is solved once over the whole performance); the live player runs on the
//! caller's thread and only sleeps between releases.

mod line;
pub mod live;
pub mod output;
pub mod parse;
pub mod pcm;
pub mod performance;
pub mod render;
pub mod voice;

pub use output::{Body, OutputError, write_dir};
pub use parse::{
    Anchor, Defaults, Line, LineKind, Look, PassEvent, Pos, Script, ScriptError, Timing,
};
pub use pcm::SparsePcm;
pub use render::{
    AudioLipSync, CaptionCue, LineVoice, LipSync, Performance, PiperLineVoice, PlacedLine,
    RenderError, RenderOptions, ScriptEvent, ScriptEventKind, Style, SynthLineVoice, render,
};
