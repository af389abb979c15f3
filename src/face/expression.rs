//! The expression layer: emotion cues become weights with attack/release envelopes; action cues
//! become one-shot gestures.
//!
//! Input: the segment's cues (`Cue { kind, name, intensity, at }`), the expression vocabulary (VRM
//! presets happy, sad, angry, surprised, relaxed, `neutral` which releases everything, and the rig's
//! custom expressions). Output, at any instant: a weight per expression and the gesture offsets.
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
//! `nod` (head down and back, 0.6 s), `shake` (two yaw swings, 0.9 s), `tilt` (roll, 1.2 s), `wink`
//! (left lid, 0.45 s) and `blink` (both lids, 0.25 s), scaled by intensity. Unknown action names are
//! ignored.
//!
//! Evaluation is allocation-free and uses a cursor like the mouth track.

use super::canon::{self, ak};
use super::coarticulate::ramp;
use crate::speech::{Cue, CueKind};
use crate::time::SampleTime;

/// Most expressions one face knows (5 presets + custom).
pub const MAX: usize = 16;

/// One expression: canonical weights at full intensity, plus head pitch in degrees.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub name: String,
    pub weights: Vec<(usize, f32)>,
    pub head_pitch: f32,
}

/// The built-in presets, in [`canon::EMOTIONS`] order.
pub fn presets() -> Vec<Shape> {
    use ak::*;
    let s = |name: &str, head_pitch: f32, w: &[(usize, f32)]| Shape {
        name: name.to_string(),
        weights: w.to_vec(),
        head_pitch,
    };
    vec![
        s(
            "happy",
            2.0,
            &[
                (mouthSmileLeft, 0.75),
                (mouthSmileRight, 0.75),
                (cheekSquintLeft, 0.55),
                (cheekSquintRight, 0.55),
                (eyeSquintLeft, 0.35),
                (eyeSquintRight, 0.35),
                (browOuterUpLeft, 0.15),
                (browOuterUpRight, 0.15),
                (mouthDimpleLeft, 0.2),
                (mouthDimpleRight, 0.2),
            ],
        ),
        s(
            "sad",
            -5.0,
            &[
                (browInnerUp, 0.75),
                (browDownLeft, 0.15),
                (browDownRight, 0.15),
                (mouthFrownLeft, 0.55),
                (mouthFrownRight, 0.55),
                (mouthShrugLower, 0.25),
                (eyeBlinkLeft, 0.18),
                (eyeBlinkRight, 0.18),
                (eyeLookDownLeft, 0.1),
                (eyeLookDownRight, 0.1),
            ],
        ),
        s(
            "angry",
            -2.0,
            &[
                (browDownLeft, 0.85),
                (browDownRight, 0.85),
                (noseSneerLeft, 0.35),
                (noseSneerRight, 0.35),
                (eyeSquintLeft, 0.35),
                (eyeSquintRight, 0.35),
                (mouthFrownLeft, 0.3),
                (mouthFrownRight, 0.3),
                (mouthPressLeft, 0.25),
                (mouthPressRight, 0.25),
                (jawForward, 0.1),
            ],
        ),
        s(
            "surprised",
            3.0,
            &[
                (browInnerUp, 0.85),
                (browOuterUpLeft, 0.8),
                (browOuterUpRight, 0.8),
                (eyeWideLeft, 0.7),
                (eyeWideRight, 0.7),
                (jawOpen, 0.25),
                (mouthFunnel, 0.15),
            ],
        ),
        s(
            "relaxed",
            0.0,
            &[
                (eyeBlinkLeft, 0.3),
                (eyeBlinkRight, 0.3),
                (mouthSmileLeft, 0.25),
                (mouthSmileRight, 0.25),
                (cheekSquintLeft, 0.1),
                (cheekSquintRight, 0.1),
            ],
        ),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Emo {
    t: f32,
    /// Expression index, or `None` for neutral.
    expr: Option<u8>,
    intensity: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nod,
    Shake,
    Tilt,
    Wink,
    Blink,
}

impl Action {
    pub fn parse(name: &str) -> Option<Action> {
        Some(match name.to_ascii_lowercase().as_str() {
            "nod" => Action::Nod,
            "shake" | "headshake" => Action::Shake,
            "tilt" => Action::Tilt,
            "wink" => Action::Wink,
            "blink" => Action::Blink,
            _ => return None,
        })
    }

    fn duration(self) -> f32 {
        match self {
            Action::Nod => 0.6,
            Action::Shake => 0.9,
            Action::Tilt => 1.2,
            Action::Wink => 0.45,
            Action::Blink => 0.25,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Act {
    t: f32,
    action: Action,
    intensity: f32,
}

/// What the expression layer adds at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ExprState {
    pub weights: [f32; MAX],
    /// Degrees.
    pub head_yaw: f32,
    pub head_pitch: f32,
    pub head_roll: f32,
    pub wink_left: f32,
    pub blink: f32,
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
}

impl Cues {
    /// Sort and resolve cues; `names` is the expression vocabulary (presets then custom). Cue times are
    /// made relative to `origin` (seconds at `rate`); cues before the origin count with negative times.
    pub fn new(
        cues: &[Cue],
        names: &[String],
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
            let lname = c.name.to_ascii_lowercase();
            match c.kind {
                CueKind::Emotion => {
                    let expr = names.iter().position(|n| n.eq_ignore_ascii_case(&lname));
                    if expr.is_none() && lname != "neutral" {
                        log::debug!("face: unknown emotion `{}` treated as neutral", c.name);
                    }
                    emos.push(Emo {
                        t: rel(c.at),
                        expr: expr.map(|i| i as u8),
                        intensity,
                    });
                }
                CueKind::Action => match Action::parse(&lname) {
                    Some(action) => acts.push(Act {
                        t: rel(c.at),
                        action,
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
        }
    }

    /// Emotion weights, gestures at `t` seconds from the origin.
    #[inline]
    pub fn eval(&self, t: f32, cur: &mut ExprCursor, out: &mut ExprState) {
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
        while cur.act < a.len() && a[cur.act].t + 1.5 < t {
            cur.act += 1;
        }
        for c in &a[cur.act..] {
            if c.t > t {
                break;
            }
            let x = (t - c.t) / c.action.duration();
            if x >= 1.0 {
                continue;
            }
            let bump = (std::f32::consts::PI * x).sin();
            let i = c.intensity;
            match c.action {
                Action::Nod => {
                    out.head_pitch -= 9.0 * i * bump * bump;
                }
                Action::Shake => {
                    out.head_yaw += 12.0 * i * (4.0 * std::f32::consts::PI * x).sin() * bump;
                }
                Action::Tilt => out.head_roll += 8.0 * i * bump,
                Action::Wink => out.wink_left = out.wink_left.max(i * bump.sqrt()),
                Action::Blink => out.blink = out.blink.max(i * bump.sqrt()),
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
        let names: Vec<String> = presets().into_iter().map(|s| s.name).collect();
        let cues = [
            cue(CueKind::Emotion, "happy", 0.8, 1000),
            cue(CueKind::Emotion, "sad", 1.0, 3000),
            cue(CueKind::Emotion, "neutral", 1.0, 5000),
        ];
        let c = Cues::new(&cues, &names, SampleTime(0), 1000, 0.3, 0.5);
        let mut cur = ExprCursor::default();
        let mut s = ExprState::default();
        c.eval(0.5, &mut cur, &mut s);
        assert_eq!(s.weights[HAPPY], 0.0);
        c.eval(1.15, &mut cur, &mut s);
        assert!(s.weights[HAPPY] > 0.2 && s.weights[HAPPY] < 0.6);
        c.eval(2.0, &mut cur, &mut s);
        assert!((s.weights[HAPPY] - 0.8).abs() < 1e-6);
        c.eval(3.25, &mut cur, &mut s);
        assert!(s.weights[HAPPY] > 0.0 && s.weights[SAD] > 0.0);
        c.eval(4.0, &mut cur, &mut s);
        assert_eq!(s.weights[HAPPY], 0.0);
        assert!((s.weights[SAD] - 1.0).abs() < 1e-6);
        c.eval(6.0, &mut cur, &mut s);
        assert_eq!(s.weights[SAD], 0.0);
    }
}
