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
pub use phonetics::{MouthShape, Viseme};
pub use rig::{Channel, Curve, Rig, RigError};
pub use solver::{Face, FaceConfig, Layers, Prepared, Scratch, Segment};

use crate::time::SampleTime;
use glam::Quat;
use serde::{Deserialize, Serialize};

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

/// Where one eye looks: radians, yaw + to the character's left, pitch + up.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EyeGaze {
    pub yaw: f32,
    pub pitch: f32,
}

/// One frame's rig weights, checked: as many as the rig has channels, each finite and clamped to its
/// channel's range.
#[derive(Debug, Clone, PartialEq)]
pub struct MorphWeights(Vec<f32>);

impl MorphWeights {
    pub fn new(rig: &Rig, mut weights: Vec<f32>) -> Result<MorphWeights, FaceError> {
        if weights.len() != rig.len() {
            return Err(FaceError::WrongLength {
                rig: rig.name.clone(),
                expected: rig.len(),
                got: weights.len(),
            });
        }
        for (i, (w, c)) in weights.iter_mut().zip(&rig.channels).enumerate() {
            if !w.is_finite() {
                return Err(FaceError::NotFinite {
                    index: i,
                    channel: c.name.clone(),
                });
            }
            *w = w.clamp(c.min, c.max);
        }
        Ok(MorphWeights(weights))
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.0
    }
}

/// One owned frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The sample this frame describes.
    pub at: SampleTime,
    pub weights: MorphWeights,
    pub head: Quat,
    /// Left eye, right eye.
    pub gaze: [EyeGaze; 2],
}

/// A borrowed frame inside [`Frames`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRef<'a> {
    pub at: SampleTime,
    pub weights: &'a [f32],
    pub head: Quat,
    pub gaze: [EyeGaze; 2],
}

/// A block of frames for one rig, stored column-wise (one allocation per segment, not per frame).
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    rig: String,
    channels: Vec<String>,
    rate: u32,
    fps: u32,
    pub(crate) stamps: Vec<SampleTime>,
    pub(crate) weights: Vec<f32>,
    pub(crate) heads: Vec<Quat>,
    pub(crate) gaze: Vec<[EyeGaze; 2]>,
    /// The canonical vectors ([`canon::COUNT`] per frame) the weights were retargeted from, kept only
    /// when made with [`Frames::with_canonical`] (live serving retargets them to other rigs).
    pub(crate) canon: Option<Vec<f32>>,
}

impl Frames {
    pub fn new(rig: &Rig, rate: u32, fps: u32) -> Frames {
        Frames {
            rig: rig.name.clone(),
            channels: rig.channel_names().map(str::to_string).collect(),
            rate,
            fps,
            stamps: Vec::new(),
            weights: Vec::new(),
            heads: Vec::new(),
            gaze: Vec::new(),
            canon: None,
        }
    }

    /// Frames that also keep each frame's canonical vector (see [`Frames::canonical`]).
    pub fn with_canonical(rig: &Rig, rate: u32, fps: u32) -> Frames {
        Frames {
            canon: Some(Vec::new()),
            ..Frames::new(rig, rate, fps)
        }
    }

    /// The canonical vector frame `i` was retargeted from; `None` when these frames do not keep them.
    pub fn canonical(&self, i: usize) -> Option<&[f32; canon::COUNT]> {
        let c = self.canon.as_ref()?;
        c.get(i * canon::COUNT..(i + 1) * canon::COUNT)?
            .try_into()
            .ok()
    }

    /// Store frame `len() - 1`'s canonical vector, when these frames keep them.
    pub(crate) fn push_canonical(&mut self, c: &[f32; canon::COUNT]) {
        if let Some(v) = &mut self.canon {
            v.extend_from_slice(c);
        }
    }

    pub(crate) fn reserve(&mut self, n: usize) {
        self.stamps.reserve(n);
        self.weights.reserve(n * self.channels.len());
        self.heads.reserve(n);
        self.gaze.reserve(n);
        if let Some(c) = &mut self.canon {
            c.reserve(n * canon::COUNT);
        }
    }

    pub fn rig(&self) -> &str {
        &self.rig
    }

    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn fps(&self) -> u32 {
        self.fps
    }

    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }

    pub fn clear(&mut self) {
        self.stamps.clear();
        self.weights.clear();
        self.heads.clear();
        self.gaze.clear();
        if let Some(c) = &mut self.canon {
            c.clear();
        }
    }

    pub fn get(&self, i: usize) -> Option<FrameRef<'_>> {
        let n = self.channels.len();
        Some(FrameRef {
            at: *self.stamps.get(i)?,
            weights: &self.weights[i * n..(i + 1) * n],
            head: self.heads[i],
            gaze: self.gaze[i],
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = FrameRef<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("in range"))
    }

    /// The weights of channel `name` over all frames.
    pub fn channel(&self, name: &str) -> Option<Vec<f32>> {
        let c = self.channels.iter().position(|x| x == name)?;
        let n = self.channels.len();
        Some(self.weights.iter().skip(c).step_by(n).copied().collect())
    }

    /// Frame `i` as an owned, checked [`Frame`].
    pub fn to_frame(&self, i: usize, rig: &Rig) -> Result<Option<Frame>, FaceError> {
        let Some(f) = self.get(i) else {
            return Ok(None);
        };
        Ok(Some(Frame {
            at: f.at,
            weights: MorphWeights::new(rig, f.weights.to_vec())?,
            head: f.head,
            gaze: f.gaze,
        }))
    }
}
