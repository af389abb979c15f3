//! What a render makes: a [`Performance`] (one sample clock: PCM, timelines, captions, events,
//! frames) and the placed lines, captions and events in it.

use super::pcm::SparsePcm;
use crate::face::Frames;
use crate::speech::{Cue, Phoneme, Word};
use crate::time::{SampleTime, TimeRange, Timeline};

/// A line as placed on the performance timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedLine {
    pub index: usize,
    pub id: Option<String>,
    pub range: TimeRange,
    /// The text without tags (the transcript for a recorded line; may be empty).
    pub text: String,
    pub recorded: bool,
}

/// One caption: a sentence (or a recorded line's transcript) over its audio.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionCue {
    pub line: usize,
    pub range: TimeRange,
    pub text: String,
}

/// What an event is.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptEventKind {
    LineStart {
        id: Option<String>,
        text: String,
        end: SampleTime,
        recorded: bool,
    },
    LineEnd {
        id: Option<String>,
    },
    Emotion {
        name: String,
        intensity: f32,
    },
    Action {
        name: String,
        intensity: f32,
    },
    Break {
        millis: u32,
    },
    LookAt {
        target: String,
        /// Degrees; `None` for free gaze.
        angles: Option<(f32, f32)>,
    },
    /// A pass-through event from `[[event]]`.
    Event {
        name: String,
        data: serde_json::Value,
    },
}

/// An event of the performance at its sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptEvent {
    pub at: SampleTime,
    /// The line it belongs to (0-based), if any.
    pub line: Option<usize>,
    pub kind: ScriptEventKind,
}

/// A rendered performance.
#[derive(Debug, Clone)]
pub struct Performance {
    pub rate: u32,
    pub fps: u32,
    pub seed: u64,
    /// The audio: the lines' samples on the performance's timeline, the gaps between them silence
    /// that is never materialized (see [`SparsePcm`]).
    pub pcm: SparsePcm,
    pub phonemes: Timeline<Phoneme>,
    pub words: Timeline<Word>,
    pub lines: Vec<PlacedLine>,
    pub captions: Vec<CaptionCue>,
    /// Emotion and action cues on the performance timeline, as the face used them.
    pub cues: Vec<Cue>,
    /// Every event in (sample, script) order.
    pub events: Vec<ScriptEvent>,
    pub frames: Frames,
    /// Things the user should know (skipped sentences, recorded lines without lip sync).
    pub warnings: Vec<String>,
}

impl Performance {
    pub fn duration_secs(&self) -> f64 {
        self.pcm.len() as f64 / self.rate as f64
    }
}
