//! The face's frames. [`Frame`] is the one owned frame every stage after the face passes on (the live
//! pipeline's events, the sinks' gates, the wire's encoder and decoder); [`FrameRef`] borrows one from
//! a [`Frames`] block (stored column-wise) or a [`Frame`]; [`MorphWeights`] are a frame's weights,
//! checked; [`Retargets`] are one frame's weights in other rigs, each retargeted once.
//!
//! The invariant the types keep: a frame's weights are finite and within their channels' ranges. They
//! are made checked ([`MorphWeights::new`] against a rig, [`MorphWeights::unit`] for 0..=1 channels), or
//! by the face itself (the solver and [`Rig::retargeted`] clamp to the rig), and a [`FrameRef`] can only
//! be made here, from one of those.

use super::{FaceError, Rig, canon};
use crate::time::SampleTime;
use glam::Quat;
use serde::{Deserialize, Serialize};

/// Where one eye looks: radians, yaw + to the character's left, pitch + up.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EyeGaze {
    pub yaw: f32,
    pub pitch: f32,
}

/// One frame's rig weights, checked: each finite and within its channel's range.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MorphWeights(Vec<f32>);

impl MorphWeights {
    /// `weights` for `rig`: as many as it has channels, each finite, clamped to its channel's range.
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

    /// `weights` for channels that all range over 0..=1 (a rig known only by its channel names, as a
    /// decoded wire frame's or a test's): each finite, clamped to 0..=1.
    pub fn unit(mut weights: Vec<f32>) -> Result<MorphWeights, FaceError> {
        for (i, w) in weights.iter_mut().enumerate() {
            if !w.is_finite() {
                return Err(FaceError::NotFinite {
                    index: i,
                    channel: format!("#{i}"),
                });
            }
            *w = w.clamp(0.0, 1.0);
        }
        Ok(MorphWeights(weights))
    }

    /// Weights the face made and clamped to the rig itself.
    pub(crate) fn clamped(weights: Vec<f32>) -> MorphWeights {
        debug_assert!(weights.iter().all(|w| w.is_finite()));
        MorphWeights(weights)
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.0
    }

    /// These weights become `a + (b - a) t` (`t` in 0..=1): between two checked frames of one rig,
    /// so each stays within its channel's range.
    pub(crate) fn set_between(&mut self, a: &[f32], b: &[f32], t: f32) {
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.0.clear();
        self.0
            .extend(a.iter().zip(b).map(|(&x, &y)| x + (y - x) * t));
    }
}

impl PartialEq<Vec<f32>> for MorphWeights {
    fn eq(&self, other: &Vec<f32>) -> bool {
        self.0 == *other
    }
}

impl PartialEq<MorphWeights> for Vec<f32> {
    fn eq(&self, other: &MorphWeights) -> bool {
        *self == other.0
    }
}

impl<'a> IntoIterator for &'a MorphWeights {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::ops::Deref for MorphWeights {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

/// One owned frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The sample this frame describes.
    pub at: SampleTime,
    /// One weight per rig channel, in the rig's order.
    pub weights: MorphWeights,
    pub head: Quat,
    /// Left eye, right eye.
    pub gaze: [EyeGaze; 2],
    /// The canonical vector ([`canon`]) the weights were retargeted from, when the face kept it:
    /// [`Frame::retargeted`] gives the frame in any rig.
    pub canon: Option<Box<[f32; canon::COUNT]>>,
}

impl Frame {
    /// A frame with no canonical vector.
    pub fn new(at: SampleTime, weights: MorphWeights, head: Quat, gaze: [EyeGaze; 2]) -> Frame {
        Frame {
            at,
            weights,
            head,
            gaze,
            canon: None,
        }
    }

    /// This frame becomes a copy of `f`, reusing its allocations.
    pub fn set_from(&mut self, f: &FrameRef<'_>) {
        self.at = f.at;
        self.weights.0.clear();
        self.weights.0.extend_from_slice(f.weights);
        self.head = f.head;
        self.gaze = f.gaze;
        match (&mut self.canon, f.canon) {
            (Some(mine), Some(c)) => **mine = *c,
            (mine, c) => *mine = c.map(|c| Box::new(*c)),
        }
    }

    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef {
            at: self.at,
            weights: &self.weights,
            head: self.head,
            gaze: self.gaze,
            canon: self.canon.as_deref(),
            _checked: (),
        }
    }
}

impl From<&FrameRef<'_>> for Frame {
    fn from(f: &FrameRef<'_>) -> Frame {
        Frame {
            at: f.at,
            weights: MorphWeights(f.weights.to_vec()),
            head: f.head,
            gaze: f.gaze,
            canon: f.canon.map(|c| Box::new(*c)),
        }
    }
}

/// A borrowed frame, inside [`Frames`] or of a [`Frame`].
// The private field keeps its making inside this module (its weights come from checked ones), which
// `#[non_exhaustive]` would not: that binds other crates only.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRef<'a> {
    pub at: SampleTime,
    pub weights: &'a [f32],
    pub head: Quat,
    pub gaze: [EyeGaze; 2],
    pub canon: Option<&'a [f32; canon::COUNT]>,
    /// Only this module makes one: its weights come from checked ones.
    _checked: (),
}

impl FrameRef<'_> {
    /// This frame with other weights (the same frame in another rig), without a canonical vector.
    pub fn with_weights(&self, weights: MorphWeights) -> Frame {
        Frame {
            at: self.at,
            weights,
            head: self.head,
            gaze: self.gaze,
            canon: None,
        }
    }
}

/// One frame's weights in other rigs, each retargeted from its canonical vector on first use and kept
/// (a frame goes to many clients and sinks, a handful of rigs among them: a linear search).
pub struct Retargets<'f, 'r> {
    canon: Option<&'f [f32; canon::COUNT]>,
    done: Vec<(&'r str, MorphWeights)>,
    /// Retargetings done so far.
    pub count: u64,
}

impl<'f, 'r> Retargets<'f, 'r> {
    pub fn new(canon: Option<&'f [f32; canon::COUNT]>) -> Self {
        Retargets {
            canon,
            done: Vec::new(),
            count: 0,
        }
    }

    /// The frame's weights in `rig`; `None` when the frame has no canonical vector.
    pub fn get(&mut self, rig: &'r Rig) -> Option<&MorphWeights> {
        let c = self.canon?;
        let k = match self.done.iter().position(|(n, _)| *n == rig.name) {
            Some(k) => k,
            None => {
                self.done.push((&rig.name, rig.retargeted(c)));
                self.count += 1;
                self.done.len() - 1
            }
        };
        Some(&self.done[k].1)
    }
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
            canon: self.canonical(i),
            _checked: (),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = FrameRef<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("in range"))
    }

    /// Frame `i`, owned (with its canonical vector when these frames keep them).
    pub fn frame(&self, i: usize) -> Option<Frame> {
        self.get(i).map(|f| Frame::from(&f))
    }

    /// The weights of channel `name` over all frames.
    pub fn channel(&self, name: &str) -> Option<Vec<f32>> {
        let c = self.channels.iter().position(|x| x == name)?;
        let n = self.channels.len();
        Some(self.weights.iter().skip(c).step_by(n).copied().collect())
    }
}
