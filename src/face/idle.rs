//! The idle layer: blinks, saccades, breathing and head micro-motion, as pure functions of
//! `(seed, absolute time)`.
//!
//! Input: the face's seed and the absolute session time in seconds (sample / rate). Output: lid
//! closure, gaze direction, breath phase and head angles. Nothing here keeps state, so any range of
//! any session can be rendered on its own and two renders of overlapping ranges agree exactly; the
//! live server can call the solver once per utterance and once per idle stretch and the eyes, breath
//! and head move on without a seam.
//!
//! # Event schedules from hashed time slots
//!
//! Time is cut into fixed slots; each slot's events come from `splitmix64(seed, layer, slot)`:
//!
//! - Blinks: 1.7 s slots. A slot holds a blink with probability 0.55 at a uniform offset (so intervals
//!   vary from a fraction of a second to several seconds, mean about 3 s, as people blink 15–20 times a
//!   minute); one blink in eight is a double blink. The lid curve closes in 75 ms (ease-in), holds
//!   30 ms and opens in 150 ms (ease-out), the asymmetry of a natural blink. A blink never crosses its
//!   slot, so one slot decides each instant.
//! - Saccades: slots of 0.9 s whose start is jittered by up to 0.45 s (so starts stay ordered). Each
//!   slot fixates a hashed target (a third of them back to the centre); the eyes jump there in 45 ms
//!   and hold. The look-at target, when set, is the centre the saccades scatter around.
//! - Breathing: a sine of seeded period (3.6–4.6 s) and phase.
//! - Head micro-motion: per axis, two sines of seeded frequency (0.07–0.25 Hz) and phase.
//!
//! Phases are computed in f64 and reduced before the f32 `sin`, so a session of days keeps full
//! precision. Allocation-free.

const BLINK_SLOT: f64 = 1.7;
const BLINK_CLOSE: f64 = 0.075;
const BLINK_HOLD: f64 = 0.03;
const BLINK_OPEN: f64 = 0.15;
const BLINK_LEN: f64 = BLINK_CLOSE + BLINK_HOLD + BLINK_OPEN;
const DOUBLE_GAP: f64 = 0.32;
const GAZE_SLOT: f64 = 0.9;
const SACCADE: f64 = 0.045;
const TAU: f64 = std::f64::consts::TAU;

#[inline]
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A reproducible uniform in [0, 1) for (seed, layer, slot, draw).
#[inline]
fn unit(seed: u64, layer: u64, slot: i64, draw: u64) -> f64 {
    let h = splitmix(
        seed ^ splitmix(layer.wrapping_mul(0x1000_0000_01B3) ^ (slot as u64))
            ^ draw.wrapping_mul(0xA24B_AED4_963E_E407),
    );
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The idle layer of one face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Idle {
    seed: u64,
    breath_period: f64,
    breath_phase: f64,
    /// Per axis (yaw, pitch, roll): two (frequency Hz, phase) pairs.
    head: [[(f64, f64); 2]; 3],
}

/// What the idle layer says at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct IdleState {
    /// 0 open .. 1 closed.
    pub blink: f32,
    /// Radians, + to the character's left / up.
    pub gaze_yaw: f32,
    pub gaze_pitch: f32,
    /// 0 (exhaled) .. 1 (inhaled).
    pub breath: f32,
    /// Degrees.
    pub head_yaw: f32,
    pub head_pitch: f32,
    pub head_roll: f32,
}

impl Idle {
    pub fn new(seed: u64) -> Idle {
        let u = |i: u64| unit(seed, 7, -1, i);
        let mut head = [[(0.0, 0.0); 2]; 3];
        for (a, axis) in head.iter_mut().enumerate() {
            for (k, comp) in axis.iter_mut().enumerate() {
                let i = (a * 2 + k) as u64;
                *comp = (0.07 + 0.18 * u(10 + i), TAU * u(20 + i));
            }
        }
        Idle {
            seed,
            breath_period: 3.6 + u(1),
            breath_phase: TAU * u(2),
            head,
        }
    }

    /// Lid closure from blinks at absolute time `t` seconds.
    #[inline]
    pub fn blink(&self, t: f64) -> f32 {
        let slot = (t / BLINK_SLOT).floor();
        let s = slot as i64;
        if unit(self.seed, 1, s, 0) >= 0.55 {
            return 0.0;
        }
        let double = unit(self.seed, 1, s, 1) < 0.125;
        let span = BLINK_LEN + if double { DOUBLE_GAP } else { 0.0 };
        let start = slot * BLINK_SLOT + unit(self.seed, 1, s, 2) * (BLINK_SLOT - span);
        let mut x = t - start;
        if double && x >= DOUBLE_GAP {
            x -= DOUBLE_GAP;
        }
        lid(x) as f32
    }

    /// The fixation target of gaze slot `s` (yaw, pitch radians around the centre).
    #[inline]
    fn fixation(&self, s: i64) -> (f64, f64) {
        if unit(self.seed, 2, s, 0) < 0.33 {
            return (0.0, 0.0);
        }
        let yaw = (unit(self.seed, 2, s, 1) * 2.0 - 1.0) * 0.22;
        let pitch = (unit(self.seed, 2, s, 2) * 2.0 - 1.0) * 0.1;
        (yaw, pitch)
    }

    #[inline]
    fn slot_start(&self, s: i64) -> f64 {
        s as f64 * GAZE_SLOT + unit(self.seed, 3, s, 0) * GAZE_SLOT * 0.5
    }

    /// Gaze at absolute time `t` (radians), scattered around the centre with `spread` (0..1).
    #[inline]
    pub fn gaze(&self, t: f64, spread: f64) -> (f32, f32) {
        let mut s = (t / GAZE_SLOT).floor() as i64;
        if t < self.slot_start(s) {
            s -= 1;
        }
        let start = self.slot_start(s);
        let (y1, p1) = self.fixation(s);
        let (y0, p0) = self.fixation(s - 1);
        let x = ((t - start) / SACCADE).clamp(0.0, 1.0);
        let k = x * x * (3.0 - 2.0 * x);
        (
            ((y0 + (y1 - y0) * k) * spread) as f32,
            ((p0 + (p1 - p0) * k) * spread) as f32,
        )
    }

    /// Breath phase 0..1 at absolute time `t`.
    #[inline]
    pub fn breath(&self, t: f64) -> f32 {
        let ph = (t / self.breath_period).fract() * TAU + self.breath_phase;
        (0.5 - 0.5 * (ph as f32).cos()).clamp(0.0, 1.0)
    }

    /// Head micro-motion (degrees yaw, pitch, roll) at absolute time `t`, `energy` scaling it.
    #[inline]
    pub fn head(&self, t: f64, energy: f32) -> (f32, f32, f32) {
        const AMP: [f32; 3] = [1.8, 1.1, 0.9];
        let mut out = [0.0f32; 3];
        for (a, axis) in self.head.iter().enumerate() {
            let mut v = 0.0;
            for &(f, ph) in axis {
                let x = ((t * f).fract() * TAU + ph) as f32;
                v += x.sin();
            }
            out[a] = 0.5 * v * AMP[a] * energy;
        }
        (out[0], out[1], out[2])
    }

    /// Everything at once.
    #[inline]
    pub fn at(&self, t: f64, gaze_spread: f64, energy: f32) -> IdleState {
        let (gy, gp) = self.gaze(t, gaze_spread);
        let (hy, hp, hr) = self.head(t, energy);
        let breath = self.breath(t);
        IdleState {
            blink: self.blink(t),
            gaze_yaw: gy,
            gaze_pitch: gp,
            breath,
            head_yaw: hy,
            head_pitch: hp + 0.6 * (breath - 0.5),
            head_roll: hr,
        }
    }
}

/// The lid curve of one blink, `x` seconds after it starts: 0 open .. 1 closed.
#[inline]
fn lid(x: f64) -> f64 {
    if !(0.0..BLINK_LEN).contains(&x) {
        0.0
    } else if x < BLINK_CLOSE {
        let u = x / BLINK_CLOSE;
        u * u
    } else if x < BLINK_CLOSE + BLINK_HOLD {
        1.0
    } else {
        let u = (x - BLINK_CLOSE - BLINK_HOLD) / BLINK_OPEN;
        (1.0 - u) * (1.0 - u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blinks_at_natural_rate_and_are_pure() {
        let idle = Idle::new(42);
        let mut blinks = 0;
        let mut prev = 0.0;
        let dt = 0.005;
        for i in 0..(600.0 / dt) as usize {
            let b = idle.blink(i as f64 * dt);
            if b >= 0.99 && prev < 0.99 {
                blinks += 1;
            }
            prev = b;
        }
        // 10 minutes: people blink 8-25 times a minute.
        assert!((80..=250).contains(&blinks), "{blinks}");
        assert_eq!(
            Idle::new(42).at(1234.5, 1.0, 1.0),
            idle.at(1234.5, 1.0, 1.0)
        );
        assert_ne!(
            Idle::new(43).at(1234.5, 1.0, 1.0),
            idle.at(1234.5, 1.0, 1.0)
        );
    }

    #[test]
    fn gaze_is_continuous_except_saccades() {
        let idle = Idle::new(1);
        let mut prev = idle.gaze(0.0, 1.0);
        for i in 1..100_000 {
            let g = idle.gaze(i as f64 * 0.001, 1.0);
            // A saccade moves at most 0.44 rad over 45 ms: < 0.02 rad per ms.
            assert!((g.0 - prev.0).abs() < 0.02 && (g.1 - prev.1).abs() < 0.02);
            prev = g;
        }
    }
}
