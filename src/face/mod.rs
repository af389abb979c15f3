//! face: the facial-rig solver. Phonemes and moods become blendshape frames on the sample clock.
//!
//! Stage: after tts, before perform/sinks. Input: a [`Segment`]: a span of the session timeline, its
//! `Timeline<Phoneme>` (IPA as Piper/espeak write it, or ARPAbet; absolute sample times), optional
//! word timings and the emotion/action [`Cue`](crate::speech::Cue)s; plus a [`Rig`] and a
//! [`FaceConfig`] (fps, seed, layers, look-at). Output: [`Frames`], one per `SampleTime::frame(k)` of
//! the segment: one weight per rig channel in rig order (clamped to the rig's ranges), the head
//! rotation as a `glam::Quat`, and yaw/pitch per eye.
//!
//! Layers: the mouth chain (`visemes` → `timing` → `stress` → `anticipate` → `coarticulate`, one pure
//! timeline step per file, algorithm in `coarticulate.rs`), the expression layer (`expression.rs`),
//! what each emotion and action tag does is data (`gesture.rs`, `rigs/gestures/builtin.toml`),
//! the idle layer (`idle.rs`, a pure function of seed and absolute time, so segments join without a
//! seam), composed in `solver.rs` and retargeted by the rig (`rig.rs`, rigs as data in `rigs/*.toml`).
//! Readers for phoneme files are in `read.rs`, writers (JSONL, Live Link Face CSV, Rhubarb TSV) in
//! `write.rs`.
//!
//! Threading: everything here is plain data and pure functions; a [`Face`] is `Send + Sync` and can
//! be shared. The solver is cheap (well over a million frames per second on one core, see
//! `docs/benchmarks.md`) and runs inline where a speech segment becomes frames; evaluating a frame
//! does not allocate.

mod anticipate;
pub mod canon;
mod coarticulate;
pub mod expression;
mod frame;
pub mod from_audio;
pub mod gesture;
pub mod idle;
pub mod phonetics;
pub mod read;
pub mod rig;
mod solver;
mod stress;
mod timing;
mod visemes;
pub mod write;

pub use coarticulate::{Cursor, MouthPose, Track};
pub use frame::{EyeGaze, Frame, FrameRef, Frames, MorphWeights, Retargets};
pub use phonetics::{MouthShape, Viseme};
pub use rig::{Channel, Curve, Rig, RigError};
pub use solver::{Face, FaceConfig, Layers, Prepared, Scratch, Segment};

/// Errors of the face stage.
#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    #[error(transparent)]
    Rig(#[from] RigError),
    #[error("frame rate must be positive (got 0)")]
    ZeroFps,
    #[error("phoneme timeline is at {timeline} Hz but the audio is at {audio} Hz")]
    RateMismatch { timeline: u32, audio: u32 },
    #[error("{0} expressions defined, at most {1} are supported")]
    TooManyExpressions(usize, usize),
    #[error("rig `{rig}` has {expected} channels but {got} weights were given")]
    WrongLength {
        rig: String,
        expected: usize,
        got: usize,
    },
    #[error("weight {index} (`{channel}`) is not a finite number")]
    NotFinite { index: usize, channel: String },
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error("{0}")]
    Write(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
