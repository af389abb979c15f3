//! Step 5 of the mouth chain: phones → a continuous mouth pose (dominance blending).
//!
//! # The mouth chain
//!
//! Lip-sync is a chain of pure steps, each in its own file, each taking a timeline and giving one:
//!
//! 1. `visemes.rs`: `Timeline<Phoneme>` → `Timeline<Phone>`. Each IPA/ARPAbet symbol becomes one or
//!    more phones with articulatory targets (jaw, rounding, funnel, spreading, lower-lip tuck,
//!    tongue), a dominance per target and an Oculus viseme. Diphthongs and clusters are split.
//! 2. `timing.rs`: gaps become explicit silence; bilabials shorter than the minimum closure are
//!    widened (mostly into the phone before) so the lips meet visibly at any frame rate.
//! 3. `stress.rs`: vowel jaw opening scaled by stress.
//! 4. `anticipate.rs`: lip rounding spreads back over the consonants before a rounded vowel.
//! 5. this file: the timeline becomes a [`Track`] that can be evaluated at any instant.
//!
//! # Dominance blending (after Cohen & Massaro, 1993)
//!
//! Every phone i has, for every articulatory parameter p, a target T(i,p) and a dominance magnitude
//! α(i,p). Its influence at time t falls off with the distance d from t to the phone's span (zero
//! inside the span, so a long vowel reaches its target fully; the original model used the distance to
//! the centre, which never lets a vowel reach its target and makes speech mushy):
//!
//! ```text
//!   g(i,t) = max(0, exp(-d / τ(i)) - ε) / (1 - ε)        τ(i) = clamp(0.35 · dur(i), 15 ms, 50 ms)
//!   P(p,t) = Σ α(i,p) · g(i,t) · T(i,p)  /  Σ α(i,p) · g(i,t)
//! ```
//!
//! Inside its span a phone's dominance keeps growing with depth, g = exp(min(depth / τ, 2)), so the
//! middle of a long vowel belongs to the vowel while its edges blend with the neighbours.
//!
//! τ is 30 % longer before a phone than after it (anticipation is stronger than carry-over in
//! speech). ε = 0.02 cuts the tail to zero at about 4 τ so only a handful of neighbours are visited
//! per frame. Silence before the first and after the last phone is an infinitely long silent phone,
//! so the mouth comes to rest and segments join continuously.
//!
//! Consonants are weakly dominant in jaw and lips (the vowels show through them), strongly dominant
//! in the gesture that defines them (tuck for f v, tongue for θ ð, funnel for ʃ ʒ). The viseme mix
//! (for Oculus/VRM outputs) is blended the same way with its own dominance, bilabials counting twice.
//!
//! Lip closure does not come from blending, which would average a 20 ms /b/ away. Each bilabial
//! instead imposes a closure floor: 1 inside its (widened) span, easing in over 25 ms before it and out
//! over 15 ms after it; the closure is the maximum of the floors. The solver then closes the lips
//! whatever the jaw and the expression are doing.
//!
//! Evaluation is allocation-free: a [`Cursor`] remembers where the last frame was, so a monotone
//! sweep visits each phone a constant number of times.

use super::phonetics::{Phone, Viseme, param};
use crate::time::{SampleTime, Timeline};

const EPS: f32 = 0.02;
const REACH: f32 = 3.92; // ln(1/EPS): g is zero beyond REACH·τ
const ANTICIPATION: f32 = 1.3;
/// Inside its span a phone's dominance grows up to e² (reached 2 τ deep).
const DEPTH_CAP: f32 = 2.0;
const CLOSE_IN: f32 = 0.025;
const CLOSE_OUT: f32 = 0.015;

#[derive(Debug, Clone, Copy)]
struct Seg {
    start: f32,
    end: f32,
    tau_before: f32,
    tau_after: f32,
    tau_before_inv: f32,
    tau_after_inv: f32,
    target: [f32; param::COUNT],
    alpha: [f32; param::COUNT],
    viseme: Viseme,
    bilabial: bool,
}

/// The mouth of one utterance segment, ready to be evaluated at any time (seconds from its origin).
#[derive(Debug, Clone)]
pub struct Track {
    origin: SampleTime,
    rate: u32,
    segs: Vec<Seg>,
    /// The longest reach of any phone, before or after it, in seconds.
    reach: f32,
}

/// Where the last evaluation was; keeps a monotone sweep O(1) per frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor {
    lo: usize,
    last_t: f32,
}

/// The mouth at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MouthPose {
    pub jaw: f32,
    pub round: f32,
    pub funnel: f32,
    pub spread: f32,
    pub tuck: f32,
    pub tongue: f32,
    /// 0..1: lips pressed together.
    pub closure: f32,
    /// Oculus-15 mix, sums to 1.
    pub visemes: [f32; Viseme::COUNT],
    /// 1 - weight of silence: how much the mouth is speaking.
    pub speech: f32,
}

impl Track {
    /// Build from a contiguous phone timeline; times are measured from `origin`.
    pub fn new(phones: &Timeline<Phone>, origin: SampleTime) -> Track {
        let rate = phones.rate();
        let secs = |s: SampleTime| (s.get() as f64 - origin.get() as f64) as f32 / rate as f32;
        let mut segs = Vec::with_capacity(phones.len() + 2);
        let sil = |start: f32, end: f32| {
            let p = Phone::silence();
            Seg {
                start,
                end,
                tau_before: 0.05,
                tau_after: 0.04,
                tau_before_inv: 1.0 / 0.05,
                tau_after_inv: 1.0 / 0.04,
                target: p.target,
                alpha: p.dominance,
                viseme: Viseme::Sil,
                bilabial: false,
            }
        };
        let first = phones.items().first().map_or(0.0, |p| secs(p.start()));
        segs.push(sil(-1.0e9, first));
        for it in phones {
            let (start, end) = (secs(it.start()), secs(it.end()));
            let tau = (0.35 * (end - start)).clamp(0.015, 0.05);
            let p = &it.value;
            segs.push(Seg {
                start,
                end,
                tau_before: tau * ANTICIPATION,
                tau_after: tau,
                tau_before_inv: 1.0 / (tau * ANTICIPATION),
                tau_after_inv: 1.0 / tau,
                target: p.target,
                alpha: p.dominance,
                viseme: p.viseme,
                bilabial: p.bilabial,
            });
        }
        let last = segs.last().map_or(0.0, |s| s.end).max(first);
        segs.push(sil(last, 1.0e9));
        let reach = segs
            .iter()
            .map(|s| s.tau_before.max(s.tau_after) * REACH)
            .fold(CLOSE_IN, f32::max);
        Track {
            origin,
            rate,
            segs,
            reach,
        }
    }

    pub fn origin(&self) -> SampleTime {
        self.origin
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Seconds from the origin to the end of the last phone.
    pub fn speech_end(&self) -> f32 {
        self.segs[self.segs.len() - 1].start
    }

    /// The pose at `t` seconds from the origin.
    #[inline]
    pub fn eval(&self, t: f32, cur: &mut Cursor, out: &mut MouthPose) {
        let segs = &self.segs[..];
        if t < cur.last_t || cur.lo >= segs.len() {
            cur.lo = segs.partition_point(|s| s.end + self.reach < t);
        }
        while cur.lo + 1 < segs.len() && segs[cur.lo].end + self.reach < t {
            cur.lo += 1;
        }
        cur.last_t = t;
        let mut num = [0.0f32; param::COUNT];
        let mut den = [0.0f32; param::COUNT];
        let mut vis = [0.0f32; Viseme::COUNT];
        let mut closure = 0.0f32;
        for s in &segs[cur.lo..] {
            if s.start - self.reach > t {
                break;
            }
            let g = if t < s.start {
                (((s.start - t) * -s.tau_before_inv).exp() - EPS).max(0.0) * (1.0 / (1.0 - EPS))
            } else if t > s.end {
                (((t - s.end) * -s.tau_after_inv).exp() - EPS).max(0.0) * (1.0 / (1.0 - EPS))
            } else {
                // Inside its span a phone grows more dominant with depth, so long phones settle.
                let depth = (t - s.start).min(s.end - t);
                (depth * s.tau_after_inv).min(DEPTH_CAP).exp()
            };
            if s.bilabial {
                let c = if t < s.start {
                    ramp(1.0 - (s.start - t) / CLOSE_IN)
                } else if t > s.end {
                    ramp(1.0 - (t - s.end) / CLOSE_OUT)
                } else {
                    1.0
                };
                closure = closure.max(c);
            }
            if g <= 0.0 {
                continue;
            }
            for p in 0..param::COUNT {
                let w = s.alpha[p] * g;
                num[p] += w * s.target[p];
                den[p] += w;
            }
            vis[s.viseme as usize] += s.alpha[param::VIS] * g;
        }
        let val = |p: usize| if den[p] > 0.0 { num[p] / den[p] } else { 0.0 };
        out.jaw = val(param::JAW);
        out.round = val(param::ROUND);
        out.funnel = val(param::FUNNEL);
        out.spread = val(param::SPREAD);
        out.tuck = val(param::TUCK);
        out.tongue = val(param::TONGUE);
        out.closure = closure;
        let vsum = den[param::VIS];
        if vsum > 0.0 {
            let inv = 1.0 / vsum;
            for (o, v) in out.visemes.iter_mut().zip(vis) {
                *o = v * inv;
            }
        } else {
            out.visemes = [0.0; Viseme::COUNT];
            out.visemes[0] = 1.0;
        }
        out.speech = 1.0 - out.visemes[Viseme::Sil as usize];
    }
}

/// Smoothstep of a clamped value.
#[inline]
pub fn ramp(x: f32) -> f32 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::phonetics::ipa;
    use crate::time::{TimeRange, Timed};

    fn track(items: &[(&str, u64, u64)]) -> Track {
        let tl = Timeline::from_items(
            1000,
            items
                .iter()
                .map(|(s, a, b)| {
                    Timed::new(
                        TimeRange::new(SampleTime(*a), SampleTime(*b)).unwrap(),
                        ipa(s).unwrap(),
                    )
                })
                .collect(),
        )
        .unwrap();
        Track::new(&tl, SampleTime(0))
    }

    #[test]
    fn long_vowels_reach_their_targets_and_silence_rests() {
        let t = track(&[("ɑ", 100, 400), ("i", 400, 700)]);
        let mut c = Cursor::default();
        let mut p = MouthPose::default();
        t.eval(0.25, &mut c, &mut p);
        assert!((p.jaw - 0.75).abs() < 0.03, "{}", p.jaw);
        assert!(p.visemes[Viseme::Aa as usize] > 0.9);
        t.eval(0.55, &mut c, &mut p);
        assert!((p.jaw - 0.22).abs() < 0.03, "{}", p.jaw);
        t.eval(2.0, &mut c, &mut p);
        assert!(p.jaw.abs() < 1e-6 && p.speech.abs() < 1e-6);
        // Random access agrees with the sweep.
        let mut c2 = Cursor::default();
        let mut q = MouthPose::default();
        t.eval(0.25, &mut c2, &mut q);
        t.eval(0.25, &mut c, &mut p);
        assert_eq!(p, q);
    }

    #[test]
    fn short_bilabial_closes_fully() {
        let t = track(&[("ɑ", 0, 100), ("b", 100, 108), ("ɑ", 108, 200)]);
        let mut c = Cursor::default();
        let mut p = MouthPose::default();
        t.eval(0.104, &mut c, &mut p);
        assert_eq!(p.closure, 1.0);
        t.eval(0.05, &mut c, &mut p);
        assert_eq!(p.closure, 0.0);
    }
}
