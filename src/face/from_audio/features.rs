//! Frame features for audio lip sync, at 16 kHz, one frame every 10 ms over a 25 ms Hamming window.
//!
//! Per frame: log energy (dB), zero-crossing rate, the share of power above 4 kHz and below 1 kHz, the
//! spectral centroid, a voicing score (the normalised autocorrelation peak for pitch periods of
//! 2.5-16 ms), 13 MFCCs (26 mel bands 100-7600 Hz, DCT-II of the log band energies), and the first
//! three formants from a 16th-order LPC model (autocorrelation method, Levinson-Durbin, on the
//! pre-emphasised frame; the poles are the roots of the predictor polynomial found with the
//! Durand-Kerner iteration; a pole is a formant when it lies above 150 Hz with a bandwidth under
//! 500 Hz); each formant track is then median-filtered over five frames.

pub const RATE: u32 = 16_000;
pub const HOP: usize = 160;
pub const WIN: usize = 400;
const NFFT: usize = 512;
const LPC_ORDER: usize = 16;
const MEL_BANDS: usize = 26;
pub const N_MFCC: usize = 13;

/// The features of one 10 ms frame.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FrameFeatures {
    /// Mean power in dB (full scale 0 dB).
    pub energy_db: f32,
    /// Zero crossings per sample (0..1).
    pub zcr: f32,
    /// Share of the power above 4 kHz.
    pub high: f32,
    /// Share of the power below 1 kHz.
    pub low: f32,
    /// Spectral centroid, Hz.
    pub centroid: f32,
    /// Normalised autocorrelation peak in the pitch range (0..1).
    pub voicing: f32,
    /// F1, F2, F3 in Hz (0 when the LPC model has no such pole).
    pub formants: [f32; 3],
    pub mfcc: [f32; N_MFCC],
}

/// What alignment reads of one 10 ms frame ([`Analyzer::cepstra`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cepstrum {
    /// Mean power in dB (full scale 0 dB).
    pub energy_db: f32,
    /// Power between 300 Hz and 3 kHz (dB): the formants of vowels, nasals and approximants, and
    /// not the voice bar under a voiced closure, so it falls at every closure of the vocal tract.
    pub sonorant_db: f32,
    /// Power under 300 Hz (dB): the voice bar of a voiced closure, and most of a nasal's murmur.
    pub low_db: f32,
    pub mfcc: [f32; N_MFCC],
}

/// Reusable analysis state (window, mel filters, FFT twiddles).
pub struct Analyzer {
    window: Vec<f32>,
    mel: Vec<(usize, Vec<f32>)>,
    dct: Vec<[f32; MEL_BANDS]>,
    twiddles: Vec<(f32, f32)>,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self::new()
    }
}

impl Analyzer {
    pub fn new() -> Analyzer {
        let window = (0..WIN)
            .map(|i| 0.54 - 0.46 * (2.0 * std::f32::consts::PI * i as f32 / (WIN - 1) as f32).cos())
            .collect();
        let hz_to_mel = |f: f32| 2595.0 * (1.0 + f / 700.0).log10();
        let mel_to_hz = |m: f32| 700.0 * (10f32.powf(m / 2595.0) - 1.0);
        let (lo, hi) = (hz_to_mel(100.0), hz_to_mel(7600.0));
        let edges: Vec<f32> = (0..MEL_BANDS + 2)
            .map(|i| {
                mel_to_hz(lo + (hi - lo) * i as f32 / (MEL_BANDS + 1) as f32) * NFFT as f32
                    / RATE as f32
            })
            .collect();
        let mel = (0..MEL_BANDS)
            .map(|b| {
                let (l, c, r) = (edges[b], edges[b + 1], edges[b + 2]);
                let first = l.ceil() as usize;
                let last = (r.floor() as usize).min(NFFT / 2);
                let w = (first..=last)
                    .map(|k| {
                        let k = k as f32;
                        if k <= c {
                            (k - l) / (c - l)
                        } else {
                            (r - k) / (r - c)
                        }
                        .max(0.0)
                    })
                    .collect();
                (first, w)
            })
            .collect();
        let dct = (0..N_MFCC)
            .map(|i| {
                let mut row = [0.0f32; MEL_BANDS];
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (std::f32::consts::PI * i as f32 * (j as f32 + 0.5) / MEL_BANDS as f32)
                        .cos();
                }
                row
            })
            .collect();
        let twiddles = (0..NFFT / 2)
            .map(|k| {
                let a = -2.0 * std::f32::consts::PI * k as f32 / NFFT as f32;
                (a.cos(), a.sin())
            })
            .collect();
        Analyzer {
            window,
            mel,
            dct,
            twiddles,
        }
    }

    /// Features of every frame of `pcm` (16 kHz): frame `k` is centred on sample `k * HOP`.
    pub fn analyze(&self, pcm: &[f32]) -> Vec<FrameFeatures> {
        let n = pcm.len().div_ceil(HOP);
        let mut frame = vec![0.0f32; WIN];
        let mut re = vec![0.0f32; NFFT];
        let mut im = vec![0.0f32; NFFT];
        let mut power = vec![0.0f32; NFFT / 2 + 1];
        let mut out: Vec<FrameFeatures> = (0..n)
            .map(|k| {
                let centre = (k * HOP) as i64;
                for (i, f) in frame.iter_mut().enumerate() {
                    let j = centre - (WIN / 2) as i64 + i as i64;
                    *f = if j >= 0 && (j as usize) < pcm.len() {
                        pcm[j as usize]
                    } else {
                        0.0
                    };
                }
                self.frame(&frame, &mut re, &mut im, &mut power)
            })
            .collect();
        smooth_formants(&mut out);
        out
    }

    /// Energy, band energies and MFCCs only, for every frame of `pcm` (16 kHz), on the same frame
    /// grid as [`Analyzer::analyze`]: what alignment needs, without the formant and voicing analysis
    /// (which costs some twenty times more).
    pub fn cepstra(&self, pcm: &[f32]) -> Vec<Cepstrum> {
        let n = pcm.len().div_ceil(HOP);
        let mut frame = vec![0.0f32; WIN];
        let mut re = vec![0.0f32; NFFT];
        let mut im = vec![0.0f32; NFFT];
        let mut power = vec![0.0f32; NFFT / 2 + 1];
        (0..n)
            .map(|k| {
                let centre = (k * HOP) as i64;
                for (i, f) in frame.iter_mut().enumerate() {
                    let j = centre - (WIN / 2) as i64 + i as i64;
                    *f = if j >= 0 && (j as usize) < pcm.len() {
                        pcm[j as usize]
                    } else {
                        0.0
                    };
                }
                let mean = frame.iter().sum::<f32>() / WIN as f32;
                let ms = frame.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / WIN as f32;
                re.fill(0.0);
                im.fill(0.0);
                for i in 0..WIN {
                    re[i] = (frame[i] - mean) * self.window[i];
                }
                fft(&mut re, &mut im, &self.twiddles);
                let (mut low, mut son) = (0.0f32, 0.0f32);
                for (k, p) in power.iter_mut().enumerate() {
                    *p = re[k] * re[k] + im[k] * im[k];
                    let hz = k as f32 * RATE as f32 / NFFT as f32;
                    if hz < 300.0 {
                        low += *p;
                    } else if hz < 3000.0 {
                        son += *p;
                    }
                }
                // Per sample of the frame, like the energy (the window's own gain aside).
                let db = |e: f32| 10.0 * (e / (NFFT * WIN) as f32 + 1e-10).log10();
                Cepstrum {
                    energy_db: 10.0 * (ms + 1e-10).log10(),
                    sonorant_db: db(son),
                    low_db: db(low),
                    mfcc: self.mfcc(&power),
                }
            })
            .collect()
    }

    fn mfcc(&self, power: &[f32]) -> [f32; N_MFCC] {
        let mut bands = [0.0f32; MEL_BANDS];
        for (b, (first, w)) in bands.iter_mut().zip(&self.mel) {
            let e: f32 = w
                .iter()
                .enumerate()
                .map(|(i, w)| w * power[first + i])
                .sum();
            *b = (e + 1e-8).ln();
        }
        let mut mfcc = [0.0f32; N_MFCC];
        for (m, row) in mfcc.iter_mut().zip(&self.dct) {
            *m = row.iter().zip(&bands).map(|(a, b)| a * b).sum();
        }
        mfcc
    }

    fn frame(&self, x: &[f32], re: &mut [f32], im: &mut [f32], power: &mut [f32]) -> FrameFeatures {
        let mean = x.iter().sum::<f32>() / x.len() as f32;
        let ms = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / x.len() as f32;
        let energy_db = 10.0 * (ms + 1e-10).log10();
        let crossings = x
            .windows(2)
            .filter(|w| (w[0] - mean >= 0.0) != (w[1] - mean >= 0.0))
            .count();
        let zcr = crossings as f32 / (x.len() - 1) as f32;

        // Spectrum of the windowed frame.
        re.fill(0.0);
        im.fill(0.0);
        for i in 0..WIN {
            re[i] = (x[i] - mean) * self.window[i];
        }
        fft(re, im, &self.twiddles);
        let mut total = 0.0f32;
        let (mut high, mut low, mut moment) = (0.0f32, 0.0f32, 0.0f32);
        for (k, p) in power.iter_mut().enumerate() {
            *p = re[k] * re[k] + im[k] * im[k];
            let hz = k as f32 * RATE as f32 / NFFT as f32;
            total += *p;
            moment += *p * hz;
            if hz >= 4000.0 {
                high += *p;
            }
            if hz < 1000.0 {
                low += *p;
            }
        }
        let total = total.max(1e-12);
        let mfcc = self.mfcc(power);

        FrameFeatures {
            energy_db,
            zcr,
            high: high / total,
            low: low / total,
            centroid: moment / total,
            voicing: voicing(x, mean),
            formants: formants(x, &self.window),
            mfcc,
        }
    }
}

/// Median of five frames for each formant track (over the frames where it was found): LPC picks a
/// spurious pole now and then, which shifts the numbering for one frame.
fn smooth_formants(feats: &mut [FrameFeatures]) {
    let raw: Vec<[f32; 3]> = feats.iter().map(|f| f.formants).collect();
    for (k, f) in feats.iter_mut().enumerate() {
        if raw[k][0] == 0.0 {
            continue;
        }
        for i in 0..3 {
            let mut v: Vec<f32> = raw[k.saturating_sub(2)..(k + 3).min(raw.len())]
                .iter()
                .map(|r| r[i])
                .filter(|&x| x > 0.0)
                .collect();
            if v.is_empty() {
                continue;
            }
            v.sort_by(f32::total_cmp);
            f.formants[i] = v[v.len() / 2];
        }
    }
}

/// Normalised autocorrelation peak for lags of 2.5-16 ms (pitch 62-400 Hz).
fn voicing(x: &[f32], mean: f32) -> f32 {
    let (min_lag, max_lag) = (RATE as usize / 400, RATE as usize / 62);
    let n = x.len();
    let mut best = 0.0f32;
    for lag in min_lag..=max_lag.min(n / 2) {
        let (mut xy, mut xx, mut yy) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n - lag {
            let a = x[i] - mean;
            let b = x[i + lag] - mean;
            xy += a * b;
            xx += a * a;
            yy += b * b;
        }
        let r = xy / (xx * yy).sqrt().max(1e-9);
        best = best.max(r);
    }
    best
}

/// F1-F3 from the LPC poles of the pre-emphasised, windowed frame.
fn formants(x: &[f32], window: &[f32]) -> [f32; 3] {
    let mut y = [0.0f64; WIN];
    for i in 0..WIN {
        let prev = if i > 0 { x[i - 1] } else { x[0] };
        y[i] = ((x[i] - 0.97 * prev) * window[i]) as f64;
    }
    let mut r = [0.0f64; LPC_ORDER + 1];
    for (lag, rv) in r.iter_mut().enumerate() {
        *rv = (0..WIN - lag).map(|i| y[i] * y[i + lag]).sum();
    }
    if r[0] <= 1e-12 {
        return [0.0; 3];
    }
    r[0] *= 1.0 + 1e-6; // white-noise correction keeps the recursion stable
    let Some(a) = levinson(&r) else {
        return [0.0; 3];
    };
    let roots = poly_roots(&a);
    let mut found: Vec<f32> = roots
        .iter()
        .filter(|z| z.1 > 0.0)
        .filter_map(|&(re, im)| {
            let mag = (re * re + im * im).sqrt();
            let freq = im.atan2(re) * RATE as f64 / (2.0 * std::f64::consts::PI);
            let bw = -(mag.ln()) * RATE as f64 / std::f64::consts::PI;
            (freq > 150.0 && freq < 5000.0 && bw < 500.0).then_some(freq as f32)
        })
        .collect();
    found.sort_by(f32::total_cmp);
    let mut out = [0.0f32; 3];
    for (o, f) in out.iter_mut().zip(found) {
        *o = f;
    }
    out
}

/// Levinson-Durbin: predictor polynomial `1 + a1 z^-1 + ... + ap z^-p`.
fn levinson(r: &[f64; LPC_ORDER + 1]) -> Option<[f64; LPC_ORDER + 1]> {
    let mut a = [0.0f64; LPC_ORDER + 1];
    a[0] = 1.0;
    let mut err = r[0];
    for i in 1..=LPC_ORDER {
        let mut acc = r[i];
        for j in 1..i {
            acc += a[j] * r[i - j];
        }
        let k = -acc / err;
        if !k.is_finite() || k.abs() >= 1.0 {
            return None;
        }
        let prev = a;
        for j in 1..i {
            a[j] = prev[j] + k * prev[i - j];
        }
        a[i] = k;
        err *= 1.0 - k * k;
        if err <= 0.0 {
            return None;
        }
    }
    Some(a)
}

type C = (f64, f64);

fn cmul(a: C, b: C) -> C {
    (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0)
}

fn cdiv(a: C, b: C) -> C {
    let d = b.0 * b.0 + b.1 * b.1;
    if d == 0.0 {
        return (f64::INFINITY, 0.0);
    }
    ((a.0 * b.0 + a.1 * b.1) / d, (a.1 * b.0 - a.0 * b.1) / d)
}

/// Roots of `z^p + a1 z^(p-1) + ... + ap` (the predictor polynomial times `z^p`), Durand-Kerner.
fn poly_roots(a: &[f64; LPC_ORDER + 1]) -> [C; LPC_ORDER] {
    let p = LPC_ORDER;
    let eval = |z: C| {
        let mut v: C = (1.0, 0.0);
        for &c in &a[1..] {
            v = cmul(v, z);
            v.0 += c;
        }
        v
    };
    let mut z = [(0.0, 0.0); LPC_ORDER];
    // Start on a circle of radius 0.9 at angles that avoid symmetry.
    for (i, zi) in z.iter_mut().enumerate() {
        let ang = 2.0 * std::f64::consts::PI * i as f64 / p as f64 + 0.4;
        *zi = (0.9 * ang.cos(), 0.9 * ang.sin());
    }
    for _ in 0..200 {
        let mut change = 0.0f64;
        for i in 0..p {
            let mut den: C = (1.0, 0.0);
            for j in 0..p {
                if i != j {
                    den = cmul(den, (z[i].0 - z[j].0, z[i].1 - z[j].1));
                }
            }
            let step = cdiv(eval(z[i]), den);
            if step.0.is_finite() && step.1.is_finite() {
                z[i] = (z[i].0 - step.0, z[i].1 - step.1);
                change = change.max(step.0.abs() + step.1.abs());
            }
        }
        if change < 1e-9 {
            break;
        }
    }
    z
}

/// In-place radix-2 FFT of length `NFFT`.
fn fft(re: &mut [f32], im: &mut [f32], tw: &[(f32, f32)]) {
    let n = re.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let step = n / len;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (wr, wi) = tw[k * step];
                let (a, b) = (start + k, start + k + len / 2);
                let tr = re[b] * wr - im[b] * wi;
                let ti = re[b] * wi + im[b] * wr;
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
        len <<= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_finds_a_tone() {
        let a = Analyzer::new();
        let mut re: Vec<f32> = (0..NFFT)
            .map(|i| (2.0 * std::f32::consts::PI * 32.0 * i as f32 / NFFT as f32).cos())
            .collect();
        let mut im = vec![0.0; NFFT];
        fft(&mut re, &mut im, &a.twiddles);
        let peak = (0..NFFT / 2)
            .max_by(|&x, &y| re[x].hypot(im[x]).total_cmp(&re[y].hypot(im[y])))
            .unwrap();
        assert_eq!(peak, 32);
    }

    #[test]
    fn lpc_finds_resonances() {
        // A pulse train through two resonators at 700 and 1200 Hz: F1 and F2 come back near them.
        let mut x = vec![0.0f32; 4000];
        for i in (0..x.len()).step_by(133) {
            x[i] = 1.0;
        }
        for (f, bw) in [(700.0f64, 80.0f64), (1200.0, 90.0)] {
            let r = (-std::f64::consts::PI * bw / RATE as f64).exp();
            let th = 2.0 * std::f64::consts::PI * f / RATE as f64;
            let (a1, a2) = (-2.0 * r * th.cos(), r * r);
            let (mut y1, mut y2) = (0.0f64, 0.0f64);
            for v in x.iter_mut() {
                let y = *v as f64 - a1 * y1 - a2 * y2;
                y2 = y1;
                y1 = y;
                *v = y as f32;
            }
        }
        let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        x.iter_mut().for_each(|v| *v /= peak * 2.0);
        let feats = Analyzer::new().analyze(&x);
        let f = feats[12].formants;
        assert!((f[0] - 700.0).abs() < 80.0, "{f:?}");
        assert!((f[1] - 1200.0).abs() < 100.0, "{f:?}");
        assert!(feats[12].voicing > 0.8);
    }
}
