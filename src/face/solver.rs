//! The solver: one utterance segment (or idle stretch) becomes frames on the sample clock.
//!
//! [`Face::prepare`] runs the mouth chain (see `coarticulate.rs`) and resolves the cues once per
//! segment; [`Face::eval`] then computes any frame in constant time without allocating, and
//! [`Face::render`] / [`Face::render_into`] sweep all of them into a [`Frames`] block. Per frame:
//!
//! 1. mouth pose from the dominance track (jaw, rounding, funnel, spreading, tuck, tongue, closure,
//!    viseme mix, speech activity);
//! 2. expression weights and gestures from the cue envelopes;
//! 3. idle blinks, gaze, breath and head motion from `(seed, absolute time)`;
//! 4. composition into the canonical channels. Expressions add to the mouth but are damped where they
//!    fight articulation while speaking (jaw, funnel, pucker, press), smiles give way to rounding, and
//!    lip closure is applied last (`mouthClose = closure · jawOpen`, jaw raised), so no mood silences
//!    the mouth or holds it open through a /b/. Blinks start from the expression's resting lid, are
//!    damped by surprise, and widened eyes narrow while the lid passes;
//! 5. the rig maps the canonical channels to its own (weights, curve, clamp).
//!
//! Frame k of a segment starting at s0 is stamped `s0 + round(k · rate / fps)`
//! ([`SampleTime::frame`]), and the segment has [`SampleTime::frames_in`] frames.

use super::canon::{self, ak};
use super::coarticulate::{Cursor, MouthPose, Track};
use super::expression::{self, Catalogue, Cues, ExprCursor, ExprState};
use super::idle::Idle;
use super::phonetics::{Phone, PhoneClass};
use super::rig::Rig;
use super::{EyeGaze, FaceError, Frames, anticipate, stress, timing, visemes};
use crate::speech::{Cue, Phoneme, Speech, Stress, Word};
use crate::time::{SampleTime, TimeRange, Timeline};
use glam::{EulerRot, Quat};

/// Which layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    pub speech: bool,
    pub expression: bool,
    pub idle: bool,
    pub nods: bool,
}

impl Default for Layers {
    fn default() -> Self {
        Layers {
            speech: true,
            expression: true,
            idle: true,
            nods: true,
        }
    }
}

/// Settings of one face.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceConfig {
    pub fps: u32,
    pub seed: u64,
    pub layers: Layers,
    /// Where the eyes rest (radians, + to the character's left / up); `None` looks ahead.
    pub look_at: Option<EyeGaze>,
    /// Emotion attack and release times, seconds.
    pub attack: f32,
    pub release: f32,
    /// Shortest lip closure for p/b/m, seconds (also at least one frame).
    pub min_closure: f32,
}

impl Default for FaceConfig {
    fn default() -> Self {
        FaceConfig {
            fps: 60,
            seed: 0,
            layers: Layers::default(),
            look_at: None,
            attack: 0.3,
            release: 0.5,
            min_closure: 0.05,
        }
    }
}

/// One segment to solve: a span of the session timeline and what happens in it.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// `[start, end)` in samples at `phonemes.rate()`.
    pub range: TimeRange,
    /// Phonemes with absolute sample times (may be empty for an idle stretch).
    pub phonemes: &'a Timeline<Phoneme>,
    /// Optional word timings (speech-linked nods prefer one per word).
    pub words: Option<&'a Timeline<Word>>,
    /// Emotion and action cues with absolute sample times, including the mood in force before
    /// `range.start()` so consecutive segments agree.
    pub cues: &'a [Cue],
}

/// A speech-linked nod: start time (seconds from the segment origin) and depth (degrees).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Nod {
    t: f32,
    depth: f32,
}

const NOD_LEN: f32 = 0.38;

/// A segment ready to evaluate.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub(crate) origin: SampleTime,
    pub(crate) rate: u32,
    pub(crate) frames: u64,
    pub(crate) track: Track,
    pub(crate) cues: Cues,
    nods: Vec<Nod>,
    /// The phones after the timing steps (for Rhubarb cues and tests).
    pub phones: Timeline<Phone>,
    /// Symbols the phone tables did not know.
    pub unknown: Vec<String>,
}

impl Prepared {
    pub fn frame_count(&self) -> u64 {
        self.frames
    }

    pub fn origin(&self) -> SampleTime {
        self.origin
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }
}

/// Per-sweep state; reuse it across frames for O(1) work per frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scratch {
    mouth: Cursor,
    expr: ExprCursor,
    nod: usize,
}

/// A face: a rig, settings and the gesture catalogue (the built-in one with the rig's own).
#[derive(Debug, Clone)]
pub struct Face {
    rig: Rig,
    config: FaceConfig,
    catalogue: Catalogue,
    idle: Idle,
}

impl Face {
    pub fn new(rig: Rig, config: FaceConfig) -> Result<Face, FaceError> {
        if config.fps == 0 {
            return Err(FaceError::ZeroFps);
        }
        let catalogue = Catalogue::builtin().with_rig(&rig);
        if catalogue.emotions.len() > expression::MAX {
            return Err(FaceError::TooManyExpressions(
                catalogue.emotions.len(),
                expression::MAX,
            ));
        }
        let idle = Idle::new(config.seed);
        Ok(Face {
            rig,
            config,
            catalogue,
            idle,
        })
    }

    /// The emotions and gestures this face animates (the built-in catalogue with the rig's own).
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    pub fn rig(&self) -> &Rig {
        &self.rig
    }

    pub fn config(&self) -> &FaceConfig {
        &self.config
    }

    /// Run the mouth chain and resolve cues for one segment.
    pub fn prepare(&self, seg: &Segment<'_>) -> Result<Prepared, FaceError> {
        let rate = seg.phonemes.rate();
        let origin = seg.range.start();
        let frames = SampleTime::frames_in(seg.range.len(), rate, self.config.fps);
        // At least the configured closure and 1.2 frames, so a frame always lands inside a closure.
        let frame_len = rate as f64 / self.config.fps as f64;
        let min_closure =
            ((self.config.min_closure as f64 * rate as f64).max(1.2 * frame_len)).round() as u64;
        let (phones, unknown) = visemes::phones(seg.phonemes);
        let phones = timing::retime(phones, min_closure);
        let phones = stress::apply(phones);
        let phones = anticipate::apply(phones);
        let track = Track::new(&phones, origin);
        let cues = Cues::new(
            seg.cues,
            &self.catalogue,
            origin,
            rate,
            self.config.attack,
            self.config.release,
        );
        let nods = nods(&phones, seg.words, origin);
        Ok(Prepared {
            origin,
            rate,
            frames,
            track,
            cues,
            nods,
            phones,
            unknown,
        })
    }

    /// The frames of one synthesized utterance played from session sample `start`: its phoneme and
    /// word timelines (which start at 0) are moved to `start`, and the segment covers its audio
    /// exactly. `cues` carry session times, including the mood in force before `start`. The frames
    /// keep their canonical vectors ([`Frames::canonical`]) so a live server can retarget them.
    pub fn render_speech(
        &self,
        speech: &Speech,
        start: SampleTime,
        cues: &[Cue],
    ) -> Result<Frames, FaceError> {
        if speech.phonemes.rate() != speech.sample_rate {
            return Err(FaceError::RateMismatch {
                timeline: speech.phonemes.rate(),
                audio: speech.sample_rate,
            });
        }
        let phonemes = speech.phonemes.clone().shift(start.get());
        let words = speech.words.clone().shift(start.get());
        let prep = self.prepare(&Segment {
            range: TimeRange::at(start, speech.pcm.len() as u64),
            phonemes: &phonemes,
            words: Some(&words),
            cues,
        })?;
        let mut out = Frames::with_canonical(&self.rig, prep.rate, self.config.fps);
        self.render_into(&prep, 0..prep.frames, &mut out);
        Ok(out)
    }

    /// All frames of a segment.
    pub fn render(&self, seg: &Segment<'_>) -> Result<Frames, FaceError> {
        let prep = self.prepare(seg)?;
        let mut out = Frames::new(&self.rig, prep.rate, self.config.fps);
        self.render_into(&prep, 0..prep.frames, &mut out);
        Ok(out)
    }

    /// Append frames `range` of a prepared segment to `out` (which must be for this face's rig).
    pub fn render_into(&self, prep: &Prepared, range: std::ops::Range<u64>, out: &mut Frames) {
        let n = self.rig.len();
        let count = range.end.saturating_sub(range.start) as usize;
        out.reserve(count);
        let mut scratch = Scratch::default();
        let mut c = [0.0f32; canon::COUNT];
        for k in range {
            let at = prep.origin.frame(k, prep.rate, self.config.fps);
            let base = out.weights.len();
            out.weights.resize(base + n, 0.0);
            let (head, gaze) =
                self.eval_canonical(prep, at, &mut scratch, &mut out.weights[base..], &mut c);
            out.stamps.push(at);
            out.heads.push(head);
            out.gaze.push(gaze);
            out.push_canonical(&c);
        }
    }

    /// One frame at sample `at`: rig weights into `out` (length = rig channels), head rotation and
    /// per-eye gaze returned. Allocation-free; pass the same `scratch` for consecutive frames.
    #[inline]
    pub fn eval(
        &self,
        prep: &Prepared,
        at: SampleTime,
        scratch: &mut Scratch,
        out: &mut [f32],
    ) -> (Quat, [EyeGaze; 2]) {
        let mut c = [0.0f32; canon::COUNT];
        self.eval_canonical(prep, at, scratch, out, &mut c)
    }

    /// [`Face::eval`], also leaving the canonical vector the weights were retargeted from in `c`
    /// (for retargeting the same frame to other rigs with [`Rig::retarget`]).
    #[inline]
    pub fn eval_canonical(
        &self,
        prep: &Prepared,
        at: SampleTime,
        scratch: &mut Scratch,
        out: &mut [f32],
        c: &mut [f32; canon::COUNT],
    ) -> (Quat, [EyeGaze; 2]) {
        // `canonical` adds into some channels: start from zero, as `eval` does.
        *c = [0.0; canon::COUNT];
        let (head, gaze) = self.canonical(prep, at, scratch, c);
        self.rig.retarget(c, out);
        (head, gaze)
    }

    /// The frame at sample `at`, with its canonical vector (allocates: for a few frames at a time,
    /// as an idle face makes them; blocks of frames go through [`Face::render`]).
    pub fn frame(&self, prep: &Prepared, at: SampleTime, scratch: &mut Scratch) -> super::Frame {
        let mut c = Box::new([0.0f32; canon::COUNT]);
        let (head, gaze) = self.canonical(prep, at, scratch, &mut c);
        super::Frame {
            at,
            weights: self.rig.retargeted(&c),
            head,
            gaze,
            canon: Some(c),
        }
    }

    /// The canonical channel vector at sample `at`.
    pub fn canonical(
        &self,
        prep: &Prepared,
        at: SampleTime,
        scratch: &mut Scratch,
        c: &mut [f32; canon::COUNT],
    ) -> (Quat, [EyeGaze; 2]) {
        let layers = self.config.layers;
        let t_abs = at.get() as f64 / prep.rate as f64;
        let t = ((at.get() as f64 - prep.origin.get() as f64) / prep.rate as f64) as f32;

        // 1. Mouth.
        let mut m = MouthPose::default();
        if layers.speech {
            prep.track.eval(t, &mut scratch.mouth, &mut m);
        } else {
            m.visemes[0] = 1.0;
        }
        // 2. Expression.
        let mut e = ExprState::default();
        if layers.expression {
            prep.cues
                .eval(t, &self.catalogue, &mut scratch.expr, &mut e, c);
        }
        let mut head_expr = [0.0f32; 3];
        let mut gaze_expr = [0.0f32; 2];
        for (w, s) in e.weights.iter().zip(&self.catalogue.emotions) {
            if *w > 0.0 {
                for &(i, x) in &s.weights {
                    c[i] += w * x;
                }
                for (h, x) in head_expr.iter_mut().zip(s.head) {
                    *h += w * x;
                }
                for (g, x) in gaze_expr.iter_mut().zip(s.gaze) {
                    *g += w * x;
                }
            }
        }
        let ew = |i: usize| e.weights[i];
        // 3. Idle.
        let energy = 1.0 + 0.7 * m.speech;
        let spread = if self.config.look_at.is_some() {
            0.4
        } else {
            1.0
        };
        let idle = if layers.idle {
            self.idle.at(t_abs, spread, energy)
        } else {
            Default::default()
        };

        // 4. Compose: mouth. Expression mouth channels that fight articulation are damped in speech.
        let damp = 1.0 - 0.6 * m.speech;
        for i in [
            ak::jawOpen,
            ak::mouthFunnel,
            ak::mouthPucker,
            ak::mouthPressLeft,
            ak::mouthPressRight,
            ak::mouthRollLower,
            ak::mouthRollUpper,
            ak::mouthShrugLower,
            ak::mouthShrugUpper,
        ] {
            c[i] *= damp;
        }
        let lips_round = m.round.max(0.0);
        for i in [ak::mouthSmileLeft, ak::mouthSmileRight] {
            c[i] = c[i] * (1.0 - 0.7 * lips_round) + 0.12 * m.spread;
        }
        let closure = m.closure;
        let jaw = ((m.jaw + c[ak::jawOpen]) * (1.0 - 0.6 * closure)).clamp(0.0, 1.0);
        c[ak::jawOpen] = jaw;
        c[ak::mouthClose] = closure * jaw;
        c[ak::mouthPucker] = (c[ak::mouthPucker] + 0.85 * m.round).min(1.0);
        c[ak::mouthFunnel] = (c[ak::mouthFunnel] + 0.7 * m.funnel).min(1.0);
        let open = 1.0 - closure;
        for i in [ak::mouthStretchLeft, ak::mouthStretchRight] {
            c[i] += 0.35 * m.spread * open;
        }
        c[ak::mouthRollLower] += 0.6 * m.tuck;
        c[ak::mouthShrugUpper] += 0.15 * m.tuck;
        for i in [ak::mouthUpperUpLeft, ak::mouthUpperUpRight] {
            c[i] += 0.25 * m.tuck * open;
        }
        for i in [ak::mouthLowerDownLeft, ak::mouthLowerDownRight] {
            c[i] += 0.5 * (m.jaw - 0.25).max(0.0) * open;
        }
        for i in [ak::mouthPressLeft, ak::mouthPressRight] {
            c[i] += 0.3 * closure;
        }
        c[ak::tongueOut] += 0.35 * m.tongue;
        for (v, w) in m.visemes.iter().enumerate() {
            c[canon::VISEME_BASE + v] = *w;
        }
        // The presets' own weights, plus what other emotions and gestures lend them.
        for (k, w) in e.weights.iter().take(canon::EMOTIONS.len()).enumerate() {
            let slot = &mut c[canon::EMOTION_BASE + k];
            *slot = (*slot + *w).clamp(0.0, 1.0);
        }

        // Eyes: blink from the resting lid, damped by surprise; wide eyes narrow as the lid passes.
        let suppress = 1.0 - 0.85 * ew(expression::SURPRISED);
        let blink = idle.blink * suppress;
        let look = self.config.look_at.unwrap_or_default();
        let gaze_yaw = look.yaw + idle.gaze_yaw + gaze_expr[0] + e.gaze_yaw;
        let gaze_pitch = look.pitch + idle.gaze_pitch + gaze_expr[1] + e.gaze_pitch;
        let down = (-gaze_pitch / 0.44).clamp(0.0, 1.0);
        for (lid, wide, gesture) in [
            (ak::eyeBlinkLeft, ak::eyeWideLeft, e.lids[0]),
            (ak::eyeBlinkRight, ak::eyeWideRight, e.lids[1]),
        ] {
            let rest = (c[lid] + 0.2 * down).min(1.0);
            let b = blink.max(gesture.min(1.0));
            c[lid] = rest + (1.0 - rest) * b;
            c[wide] *= 1.0 - b;
        }
        // Eye look channels: 30 degrees of yaw and 25 of pitch are full scale.
        let yaw_n = (gaze_yaw / 0.52).clamp(-1.0, 1.0);
        let pitch_n = (gaze_pitch / 0.44).clamp(-1.0, 1.0);
        let (left_side, right_side) = (yaw_n.max(0.0), (-yaw_n).max(0.0));
        c[ak::eyeLookOutLeft] += left_side;
        c[ak::eyeLookInLeft] += right_side;
        c[ak::eyeLookInRight] += left_side;
        c[ak::eyeLookOutRight] += right_side;
        for i in [ak::eyeLookUpLeft, ak::eyeLookUpRight] {
            c[i] += pitch_n.max(0.0);
        }
        for i in [ak::eyeLookDownLeft, ak::eyeLookDownRight] {
            c[i] += (-pitch_n).max(0.0);
        }

        // Head: idle motion + nods + gestures + expression posture + a share of the look-at.
        let mut nod = 0.0;
        if layers.nods {
            let nods = &prep.nods[..];
            while scratch.nod < nods.len() && nods[scratch.nod].t + NOD_LEN < t {
                scratch.nod += 1;
            }
            if scratch.nod > 0 && nods[scratch.nod - 1].t + NOD_LEN >= t {
                scratch.nod = 0;
            }
            for n in &nods[scratch.nod..] {
                if n.t > t {
                    break;
                }
                let x = (t - n.t) / NOD_LEN;
                if x < 1.0 {
                    let b = (std::f32::consts::PI * x).sin();
                    nod -= n.depth * b * b;
                }
            }
        }
        let yaw = idle.head_yaw + e.head_yaw + head_expr[0] + 0.3 * look.yaw.to_degrees();
        let pitch =
            idle.head_pitch + nod + e.head_pitch + head_expr[1] + 0.3 * look.pitch.to_degrees();
        let roll = idle.head_roll + e.head_roll + head_expr[2];
        c[canon::HEAD_YAW] = yaw;
        c[canon::HEAD_PITCH] = pitch;
        c[canon::HEAD_ROLL] = roll;
        c[canon::EYE_YAW] = yaw_n;
        c[canon::EYE_PITCH] = pitch_n;
        c[canon::BREATH] = idle.breath;
        c[canon::MOUTH_OPEN] = (1.4 * jaw * open).min(1.0);
        let smile = 0.5 * (c[ak::mouthSmileLeft] + c[ak::mouthSmileRight]);
        let frown = 0.5 * (c[ak::mouthFrownLeft] + c[ak::mouthFrownRight]);
        c[canon::MOUTH_FORM] = (smile - frown - 0.5 * m.round).clamp(-1.0, 1.0);
        c[canon::BLINK] = 0.5 * (c[ak::eyeBlinkLeft] + c[ak::eyeBlinkRight]);
        c[canon::SPEECH] = m.speech;
        // ARKit channels are 0..1.
        for v in &mut c[..canon::VISEME_BASE] {
            *v = v.clamp(0.0, 1.0);
        }

        // Head rotation: Y up, face looking along +Z; yaw about +Y (to the character's left), pitch up
        // is a negative rotation about +X, roll about +Z (toward the character's right).
        let head = Quat::from_euler(
            EulerRot::YXZ,
            yaw.to_radians(),
            -pitch.to_radians(),
            roll.to_radians(),
        );
        // Slight vergence: each eye turns 1 degree inward.
        const VERGE: f32 = 0.0175;
        let gaze = [
            EyeGaze {
                yaw: gaze_yaw - VERGE,
                pitch: gaze_pitch,
            },
            EyeGaze {
                yaw: gaze_yaw + VERGE,
                pitch: gaze_pitch,
            },
        ];
        (head, gaze)
    }
}

/// Speech-linked nods: one at each primary-stressed vowel (half depth for secondary), at most one per
/// word when words are given and never closer than 0.45 s. Without stress marks, vowels longer than
/// 120 ms nod lightly.
fn nods(phones: &Timeline<Phone>, words: Option<&Timeline<Word>>, origin: SampleTime) -> Vec<Nod> {
    let rate = phones.rate() as f64;
    let rel = |s: SampleTime| ((s.get() as f64 - origin.get() as f64) / rate) as f32;
    let any_stress = phones
        .iter()
        .any(|p| p.value.class == PhoneClass::Vowel && p.value.stress != Stress::None);
    let mut out: Vec<Nod> = Vec::new();
    let mut last_word: Option<usize> = None;
    for p in phones {
        if p.value.class != PhoneClass::Vowel {
            continue;
        }
        let depth = match (any_stress, p.value.stress) {
            (true, Stress::Primary) => 2.2,
            (true, Stress::Secondary) => 1.1,
            (true, Stress::None) => continue,
            (false, _) if p.range.len() as f64 > 0.12 * rate => 1.2,
            (false, _) => continue,
        };
        if let Some(w) = words {
            let idx = w.items().partition_point(|x| x.end() <= p.start());
            if last_word == Some(idx) {
                continue;
            }
            last_word = Some(idx);
        }
        let t = rel(p.start()) - 0.06;
        if out.last().is_some_and(|n| t - n.t < 0.45) {
            continue;
        }
        out.push(Nod { t, depth });
    }
    out
}
