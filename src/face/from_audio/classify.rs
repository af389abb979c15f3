//! Frame scores and the Viterbi decode: features in, one [`VisemeClass`] per 10 ms frame out.
//!
//! Each frame gets a log score per class from soft (logistic) evidence:
//! - *closure*: the frame is well below the loudest frame within ±150 ms (a stop's closure, a nasal's
//!   murmur between vowels, a pause), or close to the utterance's floor, or 28 dB under its loud
//!   level, and it carries no frication;
//! - *frication*: more than about a third of the power above 4 kHz, clear of the noise floor;
//!   sibilants (s, sh) are loud and centred high, f/v/th weak and flat;
//! - *tongue* consonants (n, l, d): voiced, a few dB under the neighbouring vowels, a low spectral
//!   centroid and a low first formant;
//! - *vowels*: the first three formants after speaker normalisation (all formants divided by the
//!   ratio of the utterance's median F1+F2+F3 to that of an adult male voice, about 4450 Hz, when it
//!   is higher) are scored against one Gaussian prototype per class, placed from the classic
//!   American English vowel measurements (Peterson & Barney 1952, men): open (ɑ æ ʌ: F1 700,
//!   F2 1250), mid (ɛ ə: 520, 1650), spread (i ɪ: 330, 2100), rounded (u ʊ o ɔ: 450, 900) or a low
//!   F3 close to F2, the mark of r-colouring, which also counts against the other vowels.
//!
//! A Viterbi pass over the frames with a fixed cost per class change then picks the best class
//! sequence, which suppresses single-frame flicker and makes every segment at least a few frames long
//! unless the evidence for it is strong.

use super::VisemeClass;
use super::features::FrameFeatures;

/// Utterance-level statistics used to normalise the frame evidence.
#[derive(Debug, Clone, Copy)]
pub struct Norm {
    /// Loud speech level (dB, 95th percentile of frame energy).
    pub peak: f32,
    /// Floor (dB): the quiet end of the recording, at most 50 dB under the peak.
    pub floor: f32,
    /// Formant scale of this speaker relative to an adult male voice.
    pub scale: f32,
}

fn percentile(v: &mut [f32], q: f32) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[((v.len() - 1) as f32 * q).round() as usize]
}

fn sig(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Norm {
    pub fn of(feats: &[FrameFeatures]) -> Norm {
        let mut e: Vec<f32> = feats.iter().map(|f| f.energy_db).collect();
        let peak = percentile(&mut e, 0.95);
        let floor = percentile(&mut e, 0.05).max(peak - 50.0).min(peak - 20.0);
        let mut sums: Vec<f32> = feats
            .iter()
            .filter(|f| {
                f.energy_db > peak - 12.0 && f.voicing > 0.7 && f.formants.iter().all(|&x| x > 0.0)
            })
            .map(|f| f.formants.iter().sum())
            .collect();
        let scale = if sums.len() >= 5 {
            // Only ever scale up (higher voices): a short line full of r, l and back vowels has a low
            // median without a longer vocal tract.
            (percentile(&mut sums, 0.5) / 4450.0).clamp(1.0, 1.4)
        } else {
            1.0
        };
        Norm { peak, floor, scale }
    }
}

/// Log scores per class for every frame.
pub fn scores(
    feats: &[FrameFeatures],
    norm: &Norm,
    drop_db: f32,
    under_peak_db: f32,
) -> Vec<[f32; VisemeClass::COUNT]> {
    const RADIUS: usize = 15; // ±150 ms
    let n = feats.len();
    // Loudest frame nearby, for the local energy drop.
    let local_max: Vec<f32> = (0..n)
        .map(|k| {
            let (a, b) = (k.saturating_sub(RADIUS), (k + RADIUS + 1).min(n));
            feats[a..b]
                .iter()
                .map(|f| f.energy_db)
                .fold(f32::MIN, f32::max)
        })
        .collect();
    let eps = 1e-4f32;
    feats
        .iter()
        .zip(&local_max)
        .map(|(f, &lmax)| {
            let drop = lmax.min(norm.peak) - f.energy_db;
            let above_floor = f.energy_db - norm.floor;
            let mut quiet = sig((drop - drop_db) / 2.0)
                .max(sig((6.0 - above_floor) / 2.0))
                .max(sig((norm.peak - 28.0 - f.energy_db) / 2.5));
            if under_peak_db > 0.0 {
                quiet *= sig((norm.peak - under_peak_db - f.energy_db) / 2.0);
            }
            let audible = sig((above_floor - 8.0) / 2.0);
            let fric = sig((f.high - 0.35) / 0.07) * audible;
            let strong = sig((f.centroid - 3500.0) / 400.0) * sig((14.0 - drop) / 2.5);
            let voiced = sig((f.voicing - 0.6) / 0.08);
            let sonorant = (1.0 - quiet) * (1.0 - fric);

            let s = norm.scale;
            let [f1, f2, f3] = f.formants.map(|x| x / s);
            let has = f1 > 0.0 && f2 > 0.0;
            let proto = |m1: f32, s1: f32, m2: f32, s2: f32| -> f32 {
                if !has {
                    return -2.0;
                }
                let (a, b) = ((f1 - m1) / s1, (f2 - m2) / s2);
                -0.5 * (a * a + b * b)
            };
            let rhotic = if f3 > 0.0 {
                sig((1950.0 - f3) / 120.0) * sig((650.0 - (f3 - f2)) / 120.0)
            } else {
                0.0
            };
            let murmur = sig((260.0 - f.centroid) / 40.0) * sig((drop - 4.0) / 1.5) * voiced;

            let mut out = [0.0f32; VisemeClass::COUNT];
            out[VisemeClass::Closed as usize] = (quiet * (1.0 - fric) + eps).ln();
            out[VisemeClass::Sibilant as usize] = (fric * strong + eps).ln();
            out[VisemeClass::Dental as usize] = (fric * (1.0 - strong) + eps).ln();
            out[VisemeClass::Tongue as usize] = (sonorant * murmur + eps).ln()
                + if has {
                    proto(300.0, 90.0, 1100.0, 400.0)
                } else {
                    0.0
                };
            let vowel = (sonorant * (1.0 - 0.7 * murmur) + eps).ln();
            // A low F3 close to F2 is r-colouring: evidence for the rounded class (r, er) and
            // against the others.
            let plain = (1.0 - 0.8 * rhotic).ln();
            out[VisemeClass::Open as usize] = vowel + plain + proto(700.0, 110.0, 1250.0, 350.0);
            out[VisemeClass::Mid as usize] = vowel + plain + proto(520.0, 90.0, 1650.0, 300.0);
            out[VisemeClass::Spread as usize] = vowel + plain + proto(330.0, 80.0, 2100.0, 300.0);
            out[VisemeClass::Rounded as usize] =
                vowel + proto(450.0, 120.0, 900.0, 180.0).max((rhotic + eps).ln());
            out
        })
        .collect()
}

/// The best class sequence under `scores` with `switch` log-cost per change of class.
pub fn viterbi(scores: &[[f32; VisemeClass::COUNT]], switch: f32) -> Vec<VisemeClass> {
    let n = scores.len();
    if n == 0 {
        return Vec::new();
    }
    const K: usize = VisemeClass::COUNT;
    let mut back = vec![[0u8; K]; n];
    let mut cost = scores[0];
    for t in 1..n {
        let (best_i, best) = cost
            .iter()
            .copied()
            .enumerate()
            .fold((0, f32::MIN), |m, (i, c)| if c > m.1 { (i, c) } else { m });
        let mut next = [0.0f32; K];
        for j in 0..K {
            let (from, v) = if cost[j] >= best - switch {
                (j, cost[j])
            } else {
                (best_i, best - switch)
            };
            back[t][j] = from as u8;
            next[j] = v + scores[t][j];
        }
        cost = next;
    }
    let mut j = (0..K)
        .max_by(|&a, &b| cost[a].total_cmp(&cost[b]))
        .unwrap_or(0);
    let mut out = vec![VisemeClass::Closed; n];
    for t in (0..n).rev() {
        out[t] = VisemeClass::ALL[j];
        j = back[t][j] as usize;
    }
    out
}
