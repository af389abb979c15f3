//! Stage `perform`: the live pipeline on the one sample clock.
//!
//! Input: chat turns and operator lines ([`PerformHandle::chat`], [`PerformHandle::say`]), barge-in
//! ([`PerformHandle::interrupt`]) and face controls ([`PerformHandle::set`]). Output: [`Event`]s
//! (`Audio`, `Frame`, `Caption`, `Cue`, `State`, `Error`), every one stamped with its sample on one session
//! timeline, delivered in sample order to [`Sink`]s.
//!
//! ```text
//!  chat ─► persona thread ─ TextGenerator tokens ─► Segmenter ─► clauses ─┐
//!                                                                         ▼
//!                      voice thread ─ Voice::speak(clause) ─► Speech ─────┐
//!                                                                         ▼
//!  conductor thread ─ Director: place on the session timeline, FaceSolver frames, pace by the wall
//!                     clock ─► Event::{Audio, Frame, Caption, Cue, State} ─► sinks
//! ```
//!
//! The stages are reached through small traits defined here ([`Voice`], [`FaceSolver`], [`Segmenter`],
//! and [`crate::persona::TextGenerator`]), so this module depends on no concrete model; adapters wrap the
//! real text, tts and face stages. [`testing`] holds fakes for tests and benchmarks only.
//!
//! Threading: three std threads (persona, voice, conductor), each owning its stage, joined by channels.
//! The voice works on clause n+1 while clause n is heard. The conductor owns the [`Director`] (a pure,
//! synchronous state machine that turns scheduled speech into events) and the [`FaceSolver`] (cheap, run
//! inline when a clause is placed); it wakes every few milliseconds, advances the timeline to the wall
//! clock plus a small lead, and hands the events to the sinks, which must not block (the WebSocket hub
//! only enqueues). Nothing here uses tokio. An in-process model gets the voice's core while the voice is
//! idle (its `ThreadBudget`, see `runtime`).

pub mod adapters;
pub mod director;
pub mod metrics;
pub mod offline;
pub mod pause;
pub mod rig_face;
pub mod runtime;
pub mod segment;
pub mod testing;

/// The text stage's clauses, as the pipeline takes them ([`crate::text::utterance`]).
pub use crate::text::{ClauseText, WordCue};
/// The session clock (in [`crate::time`]).
pub use crate::time::SessionClock;
pub use director::{Director, DirectorConfig, RenderedPiece};
pub use metrics::Metrics;
pub use runtime::{PerformConfig, PerformHandle, Performer, SessionInfo};
pub use segment::SimpleSegmenter;

use crate::face::Frame;
use crate::speech::{Cue, Speech, Word};
use crate::time::{SampleTime, TimeRange, Timed};
use serde::{Deserialize, Serialize};

/// Identifies one utterance (one reply or one `say`) on a session; 0 means "none" (idle frames).
pub type UtteranceId = u32;

/// An error from a stage, as the pipeline reports it.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The voice could not speak a clause (the clause is skipped). Its text includes the cause's,
    /// so it exposes no `source()`: a chain printed in full would say the cause twice.
    #[error("voice: {0}")]
    Voice(crate::tts::TtsError),
    #[error("voice returned audio at {got} Hz but the session runs at {want} Hz")]
    RateMismatch { got: u32, want: u32 },
    #[error("voice returned inconsistent speech: {0}")]
    BadSpeech(crate::speech::SpeechError),
    /// A script given to the performance (`perform`) could not be rendered; the same rule.
    #[error("script: {0}")]
    Script(Box<dyn std::error::Error + Send + Sync>),
    /// An utterance would run past `[limits] utterance_secs`; the rest of it is dropped.
    #[error("{0}; the rest of it was dropped")]
    OverBudget(crate::budget::OverBudget),
}

/// The voice stage as the pipeline drives it. Adapter target: `idol::tts::Synthesizer`.
///
/// Called on the voice thread only, one clause at a time. `speak` must return [`Speech`] at
/// [`Voice::sample_rate`] whose phoneme timeline covers the audio exactly ([`Speech::validate`]), and
/// the words it spoke (used for captions and for the heard text after a barge-in).
pub trait Voice: Send {
    /// The rate of every [`Speech`] this voice returns; it becomes the session's sample rate.
    fn sample_rate(&self) -> u32;
    fn speak(&mut self, clause: &str) -> Result<Speech, StageError>;
    /// Speak a clause so its first audio can be placed before the rest is made: `on_head` may be
    /// called once with the first piece (a [`Speech`] of its own) and the clause's plan (its whole
    /// timelines over silence of its length); the rest is then returned on its own timeline. Without a call to `on_head` the
    /// returned speech is the whole clause (the default, which is [`Voice::speak`]).
    fn speak_head_first(
        &mut self,
        clause: &str,
        on_head: &mut dyn FnMut(Speech, Speech),
    ) -> Result<Speech, StageError> {
        let _ = on_head;
        self.speak(clause)
    }
}

/// The face stage as the pipeline drives it. Adapter target: `idol::face`.
///
/// Called on the conductor thread only. Stamps are session samples at the voice's rate: build the
/// solver for [`Voice::sample_rate`] and [`PerformConfig::fps`], which the pipeline uses for the frame
/// grid it checks frames against.
pub trait FaceSolver: Send {
    /// The rig's channel names, in the order of [`Frame::weights`].
    fn channels(&self) -> &[String];
    /// The rig's name as clients select it (`arkit52`, `vrm`, ...).
    fn rig(&self) -> &str;
    /// Whether the frames carry [`Frame::canon`], the canonical vector their weights were
    /// retargeted from (then `idol serve` can give each client a rig of its own). Default: no.
    fn canonical(&self) -> bool {
        false
    }
    /// Frames for `speech` placed at session sample `s0`: frame `k` stamped `s0.frame(k, rate, fps)` for
    /// `k in 0..SampleTime::frames_in(speech.pcm.len(), rate, fps)`, so the frames cover exactly the
    /// audio. `cues` are on the session timeline. Frames outside the speech are dropped by the caller.
    fn frames(&mut self, s0: SampleTime, speech: &Speech, cues: &[Cue]) -> Vec<Frame>;
    /// Frames while nothing is said (blinks, breathing, gaze): those of the session's global frame grid
    /// (`SampleTime::ZERO.frame(k, rate, fps)`) that lie inside `range`.
    fn idle(&mut self, range: TimeRange) -> Vec<Frame>;
    /// A standing control (mood, gaze target) that applies from now on. Default: ignored.
    fn set(&mut self, _control: &FaceControl) {}
}

/// Standing face controls a client can set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "control")]
pub enum FaceControl {
    /// A mood until the next one (`neutral` clears it); intensity 0..=1.
    Emotion { name: String, intensity: f32 },
    /// Where the eyes and head look, in radians: yaw positive to the idol's left, pitch positive up.
    LookAt { yaw: f32, pitch: f32 },
}

/// Streaming clause splitter. Adapter target: `idol::text::ClauseStream`.
///
/// Called on the persona thread. `push` receives reply text in pieces cut anywhere and returns the
/// clauses completed so far; `finish` returns the rest and resets the splitter for the next reply.
pub trait Segmenter: Send {
    fn push(&mut self, piece: &str) -> Vec<ClauseText>;
    fn finish(&mut self) -> Vec<ClauseText>;
}

/// A span of PCM on the session timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    pub utterance: UtteranceId,
    pub start: SampleTime,
    /// Mono samples in -1..=1 at the session rate.
    pub pcm: Vec<f32>,
}

impl AudioChunk {
    pub fn range(&self) -> TimeRange {
        TimeRange::at(self.start, self.pcm.len() as u64)
    }
}

/// A face frame and the utterance it belongs to (0 while idle).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameEvent {
    pub utterance: UtteranceId,
    pub frame: Frame,
}

/// A clause's text and its words on the session timeline, sent when its audio starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Caption {
    pub utterance: UtteranceId,
    pub text: String,
    pub range: TimeRange,
    pub words: Vec<Timed<Word>>,
}

/// An emotion or action cue on the session timeline (utterance 0 for a cue set while idle).
#[derive(Debug, Clone, PartialEq)]
pub struct CueEvent {
    pub utterance: UtteranceId,
    pub cue: Cue,
}

/// A viewer's chat message that an utterance answers, sent once the persona's guards accepted it
/// (a refused message is never echoed, so an overlay cannot show it).
#[derive(Debug, Clone, PartialEq)]
pub struct AskedEvent {
    pub utterance: UtteranceId,
    /// Who wrote it, as the chat named them (may be empty).
    pub user: String,
    /// Where it came from: `ws` (a WebSocket client or the viewer), or the relay's platform
    /// (`twitch`, `bilibili`, `generic`).
    pub source: String,
    pub text: String,
    /// The release horizon when it was accepted (like `thinking`).
    pub at: SampleTime,
}

/// What the idol is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PerformState {
    Idle,
    /// A reply is being generated; nothing of it is audible yet.
    Thinking,
    Speaking,
    /// An utterance was cut (barge-in); `heard` says what was heard. Followed by the next state.
    Interrupted,
}

/// A change of [`PerformState`], at the sample it takes effect.
#[derive(Debug, Clone, PartialEq)]
pub struct StateEvent {
    pub state: PerformState,
    pub utterance: Option<UtteranceId>,
    pub at: SampleTime,
    /// For `Interrupted`: the words whose span started before the cut.
    pub heard: Option<String>,
}

/// What the pipeline emits, in sample order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Audio(AudioChunk),
    Frame(FrameEvent),
    Caption(Caption),
    Cue(CueEvent),
    State(StateEvent),
    /// The chat an utterance answers (see [`AskedEvent`]).
    Asked(AskedEvent),
    /// A stage failed on one clause or reply; the session goes on.
    Error {
        utterance: UtteranceId,
        message: String,
    },
}

impl Event {
    /// The sample the event is stamped with (`None` for errors).
    pub fn at(&self) -> Option<SampleTime> {
        match self {
            Event::Audio(a) => Some(a.start),
            Event::Frame(f) => Some(f.frame.at),
            Event::Caption(c) => Some(c.range.start()),
            Event::Cue(c) => Some(c.cue.at),
            Event::State(s) => Some(s.at),
            Event::Asked(a) => Some(a.at),
            Event::Error { .. } => None,
        }
    }
}

/// How an utterance ended, for the persona's memory: `text` is exactly what was heard.
#[derive(Debug, Clone, PartialEq)]
pub struct UtteranceRecord {
    pub utterance: UtteranceId,
    /// The whole text when it completed; the words heard before the cut when interrupted.
    pub text: String,
    pub interrupted: bool,
    /// The cut sample, when interrupted.
    pub cut: Option<SampleTime>,
}

/// Receives events. Called on the conductor thread in sample order; must not block (queue and return).
pub trait Sink: Send {
    fn event(&mut self, event: &Event);
}

/// A sink that keeps every event (file renders, tests).
#[derive(Debug, Clone, Default)]
pub struct Recorder(pub std::sync::Arc<parking_lot::Mutex<Vec<Event>>>);

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().clone()
    }
}

impl Sink for Recorder {
    fn event(&mut self, event: &Event) {
        self.0.lock().push(event.clone());
    }
}

/// The stages a performance drives. The product builds real ones from the config; tests pass fakes.
pub struct Stages {
    /// The persona's conversation: every chat goes through it (guards, shaping, memory).
    pub persona: crate::persona::conversation::Conversation,
    pub generator: Box<dyn crate::persona::TextGenerator>,
    pub segmenter: Box<dyn Segmenter>,
    pub voice: Box<dyn Voice>,
    pub face: Box<dyn FaceSolver>,
}
