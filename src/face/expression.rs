//! The expression layer: emotion cues become weights with attack/release envelopes; action cues
//! become one-shot gestures. What each name does is data: the [`Catalogue`] (`gesture.rs`,
//! `rigs/gestures/builtin.toml`, plus the rig's own expressions and gestures).
//!
//! Input: the segment's cues (`Cue { kind, name, intensity, at }`) and the face's catalogue. Output,
//! at any instant: a weight per emotion, and the gestures' head, gaze and eyelid offsets, with their
//! canonical weights added into the frame's canonical vector.
//!
//! # Envelopes
//!
//! An emotion cue at time t₀ with intensity I holds until the next emotion cue at t₁:
//!
//! ```text
//!   w(t) = I · ease((t − t₀) / attack) · (1 − ease((t − t₁) / release))     (second factor only for t ≥ t₁)
//! ```
//!
//! with `ease` a clamped smoothstep; attack and release are per-face settings (0.3 s and 0.5 s by
//! default). A new emotion therefore cross-fades with the old one; `neutral` only releases. Cues before
//! the segment start count (the live server passes the mood in force), so consecutive segments agree.
//!
//! # Actions
//!
//! A gesture of duration d starting at t₀ adds, for each of its tracks, `I · motion(x) · pose` with
//! `x` the track's share of `(t − t₀) / d` (see `gesture.rs` for the motions). Names the catalogue
//! does not know animate nothing here (the cue still reaches engines; cards and scripts are checked
//! for them when they are loaded).
//!
//! Evaluation is allocation-free and uses a cursor like the mouth track.

use super::canon;
use super::coarticulate::ramp;
pub use super::gesture::{Catalogue, Shape};
use crate::speech::{Cue, CueKind};
use crate::time::SampleTime;

/// Most emotions one face knows (the catalogue's and the rig's).
pub const MAX: usize = 32;

/// The built-in emotions: the VRM presets in [`canon::EMOTIONS`] order, then the catalogue's others.
pub fn presets() -> Vec<Shape> {
    Catalogue::builtin().emotions.clone()
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Emo {
    t: f32,
    /// Emotion index, or `None` for neutral.
    expr: Option<u8>,
    intensity: f32,
}

/// A built-in action, by its place in the built-in catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action(pub usize);

impl Action {
    /// A built-in action by name or alias (`shake_head`, `Wave`...).
    pub fn parse(name: &str) -> Option<Action> {
        Catalogue::builtin().action(name).map(Action)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Act {
    t: f32,
    gesture: u16,
    intensity: f32,
}

/// What the expression layer adds at one instant (besides canonical weights).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ExprState {
    pub weights: [f32; MAX],
    /// Degrees.
    pub head_yaw: f32,
    pub head_pitch: f32,
    pub head_roll: f32,
    /// Radians.
    pub gaze_yaw: f32,
    pub gaze_pitch: f32,
    /// Eyelid closure by gestures, left and right.
    pub lids: [f32; 2],
}

/// Cursors for allocation-free sweeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExprCursor {
    emo: usize,
    act: usize,
    last_t: f32,
}

/// A segment's cues, prepared.
#[derive(Debug, Clone)]
pub struct Cues {
    emos: Vec<Emo>,
    acts: Vec<Act>,
    attack: f32,
    release: f32,
    longest: f32,
}

impl Cues {
    /// Sort and resolve cues against `catalogue`. Cue times are made relative to `origin` (seconds at
    /// `rate`); cues before the origin count with negative times.
    pub fn new(
        cues: &[Cue],
        catalogue: &Catalogue,
        origin: SampleTime,
        rate: u32,
        attack: f32,
        release: f32,
    ) -> Cues {
        let rel = |s: SampleTime| ((s.get() as f64 - origin.get() as f64) / rate as f64) as f32;
        let mut emos = Vec::new();
        let mut acts = Vec::new();
        for c in cues {
            let intensity = if c.intensity.is_finite() {
                c.intensity.clamp(0.0, 1.0)
            } else {
                0.0
            };
            match c.kind {
                CueKind::Emotion => {
                    let expr = catalogue.emotion(&c.name).filter(|&i| i < MAX);
                    if expr.is_none() && !c.name.eq_ignore_ascii_case("neutral") {
                        log::debug!("face: unknown emotion `{}` treated as neutral", c.name);
                    }
                    emos.push(Emo {
                        t: rel(c.at),
                        expr: expr.map(|i| i as u8),
                        intensity,
                    });
                }
                CueKind::Action => match catalogue.action(&c.name) {
                    Some(g) => acts.push(Act {
                        t: rel(c.at),
                        gesture: g as u16,
                        intensity,
                    }),
                    None => log::debug!("face: action `{}` has no gesture", c.name),
                },
            }
        }
        emos.sort_by(|a, b| a.t.total_cmp(&b.t));
        acts.sort_by(|a, b| a.t.total_cmp(&b.t));
        Cues {
            emos,
            acts,
            attack: attack.max(1e-3),
            release: release.max(1e-3),
            longest: catalogue.longest(),
        }
    }

    /// Emotion weights and gesture offsets at `t` seconds from the origin; gestures' canonical
    /// weights are added into `canon`.
    #[inline]
    pub fn eval(
        &self,
        t: f32,
        catalogue: &Catalogue,
        cur: &mut ExprCursor,
        out: &mut ExprState,
        canon: &mut [f32; canon::COUNT],
    ) {
        *out = ExprState::default();
        if t < cur.last_t {
            *cur = ExprCursor::default();
        }
        cur.last_t = t;
        // Emotions: skip those fully released before t.
        let e = &self.emos;
        while cur.emo + 1 < e.len() && e[cur.emo + 1].t + self.release < t {
            cur.emo += 1;
        }
        for j in cur.emo..e.len() {
            let c = e[j];
            if c.t > t {
                break;
            }
            let Some(x) = c.expr else { continue };
            let mut w = c.intensity * ramp((t - c.t) / self.attack);
            if let Some(n) = e.get(j + 1)
                && t >= n.t
            {
                w *= 1.0 - ramp((t - n.t) / self.release);
            }
            let slot = &mut out.weights[x as usize];
            *slot = (*slot + w).min(1.0);
        }
        // Actions.
        let a = &self.acts;
        while cur.act < a.len() && a[cur.act].t + self.longest < t {
            cur.act += 1;
        }
        for c in &a[cur.act..] {
            if c.t > t {
                break;
            }
            let Some(g) = catalogue.actions.get(c.gesture as usize) else {
                continue;
            };
            let x = (t - c.t) / g.duration;
            if x >= 1.0 {
                continue;
            }
            for tr in &g.tracks {
                let m = c.intensity * tr.motion.at((x - tr.from) / (tr.to - tr.from));
                if m == 0.0 {
                    continue;
                }
                let p = &tr.pose;
                out.head_yaw += m * p.head[0];
                out.head_pitch += m * p.head[1];
                out.head_roll += m * p.head[2];
                out.gaze_yaw += m * p.gaze[0];
                out.gaze_pitch += m * p.gaze[1];
                for k in 0..2 {
                    out.lids[k] = out.lids[k].max(m * p.lids[k]);
                }
                for &(i, w) in &p.weights {
                    canon[i] += m * w;
                }
            }
        }
    }
}

/// Index of `surprised` in the preset list (blinks are suppressed by it).
pub const SURPRISED: usize = 3;
/// Index of `happy`.
pub const HAPPY: usize = 0;
/// Index of `sad`.
pub const SAD: usize = 1;

/// The first canonical index of the emotion weights, re-exported for the solver.
pub const EMOTION_BASE: usize = canon::EMOTION_BASE;

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(kind: CueKind, name: &str, i: f32, at: u64) -> Cue {
        Cue {
            kind,
            name: name.into(),
            intensity: i,
            at: SampleTime(at),
        }
    }

    #[test]
    fn envelopes_attack_hold_and_cross_fade() {
        let cat = Catalogue::builtin();
        let cues = [
            cue(CueKind::Emotion, "happy", 0.8, 1000),
            cue(CueKind::Emotion, "sad", 1.0, 3000),
            cue(CueKind::Emotion, "neutral", 1.0, 5000),
        ];
        let c = Cues::new(&cues, cat, SampleTime(0), 1000, 0.3, 0.5);
        let mut cur = ExprCursor::default();
        let mut s = ExprState::default();
        let mut canon = [0.0f32; canon::COUNT];
        c.eval(0.5, cat, &mut cur, &mut s, &mut canon);
        assert_eq!(s.weights[HAPPY], 0.0);
        c.eval(1.15, cat, &mut cur, &mut s, &mut canon);
        assert!(s.weights[HAPPY] > 0.2 && s.weights[HAPPY] < 0.6);
        c.eval(2.0, cat, &mut cur, &mut s, &mut canon);
        assert!((s.weights[HAPPY] - 0.8).abs() < 1e-6);
        c.eval(3.25, cat, &mut cur, &mut s, &mut canon);
        assert!(s.weights[HAPPY] > 0.0 && s.weights[SAD] > 0.0);
        c.eval(4.0, cat, &mut cur, &mut s, &mut canon);
        assert_eq!(s.weights[HAPPY], 0.0);
        assert!((s.weights[SAD] - 1.0).abs() < 1e-6);
        c.eval(6.0, cat, &mut cur, &mut s, &mut canon);
        assert_eq!(s.weights[SAD], 0.0);
    }
}
