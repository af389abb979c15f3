//! Band-limited resampling with a Kaiser-windowed sinc, evaluated as a polyphase filter bank.
//!
//! Algorithm: output sample `n` sits at input position `t = n * from / to`. With `g = gcd(from, to)`,
//! `t = (n * (from/g)) / (to/g)` is an integer part `i` plus one of `to/g` exact fractional phases, so
//! the interpolation kernel is tabulated once per phase (when there are at most `MAX_PHASES` of them;
//! otherwise it is evaluated on the fly for each output sample). The kernel is an ideal low-pass
//! `c * sinc(c * x)` with cutoff `c = min(1, to/from) * ROLLOFF` (in cycles per input sample relative
//! to Nyquist), so downsampling removes what would alias; it is windowed by a Kaiser window (beta 8.6,
//! stop band about -90 dB) over `ZEROS` zero crossings each side of the centre, and each phase is
//! normalised to unit DC gain. Samples beyond either end of the input count as zero. The output has
//! exactly `round(len * to / from)` samples, so a resampled line keeps its duration to the sample.

const ZEROS: usize = 24;
const ROLLOFF: f64 = 0.94;
const KAISER_BETA: f64 = 8.6;
const MAX_PHASES: u64 = 4096;

/// Resample mono `input` from `from` Hz to `to` Hz (windowed-sinc, polyphase). The result has exactly
/// `round(input.len() * to / from)` samples. Equal rates return a copy; a zero rate returns an empty
/// vector.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == 0 || to == 0 || input.is_empty() {
        return Vec::new();
    }
    if from == to {
        return input.to_vec();
    }
    let out_len = output_len(input.len(), from, to);
    let g = gcd(from as u64, to as u64);
    let step = from as u64 / g; // input advance per output sample, in units of 1/phases
    let phases = to as u64 / g;
    let cutoff = (to as f64 / from as f64).min(1.0) * ROLLOFF;
    // Kernel half width in input samples.
    let half = (ZEROS as f64 / cutoff).ceil() as usize;
    let taps = 2 * half;
    let i0_beta = bessel_i0(KAISER_BETA);
    let kernel = |x: f64| -> f64 {
        let r = x / half as f64;
        if r.abs() >= 1.0 {
            return 0.0;
        }
        let w = bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / i0_beta;
        cutoff * sinc(cutoff * x) * w
    };
    // Taps for fractional position `frac` (0..1): input samples i - half + 1 ..= i + half, where the
    // output lies at i + frac. Normalised to unit sum.
    let fill = |frac: f64, dst: &mut [f32]| {
        let mut sum = 0.0f64;
        let mut tmp = Vec::with_capacity(taps);
        for k in 0..taps {
            let offset = k as f64 - (half as f64 - 1.0); // input index relative to i
            let v = kernel(offset - frac);
            sum += v;
            tmp.push(v);
        }
        let norm = if sum.abs() > 1e-12 { 1.0 / sum } else { 1.0 };
        for (d, v) in dst.iter_mut().zip(tmp) {
            *d = (v * norm) as f32;
        }
    };
    let table: Option<Vec<f32>> = (phases <= MAX_PHASES).then(|| {
        let mut t = vec![0.0f32; phases as usize * taps];
        for (p, row) in t.chunks_exact_mut(taps).enumerate() {
            fill(p as f64 / phases as f64, row);
        }
        t
    });
    let mut scratch = vec![0.0f32; taps];
    let len = input.len() as i64;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len as u64 {
        let pos = n as u128 * step as u128;
        let i = (pos / phases as u128) as i64;
        let phase = (pos % phases as u128) as u64;
        let coeffs: &[f32] = match &table {
            Some(t) => &t[phase as usize * taps..(phase as usize + 1) * taps],
            None => {
                fill(phase as f64 / phases as f64, &mut scratch);
                &scratch
            }
        };
        let first = i - (half as i64 - 1);
        let acc = if first >= 0 && first + taps as i64 <= len {
            let window = &input[first as usize..first as usize + taps];
            dot(window, coeffs)
        } else {
            let mut acc = 0.0f32;
            for (k, c) in coeffs.iter().enumerate() {
                let j = first + k as i64;
                if (0..len).contains(&j) {
                    acc += input[j as usize] * c;
                }
            }
            acc
        };
        out.push(acc);
    }
    out
}

/// `round(len * to / from)`, exactly.
fn output_len(len: usize, from: u32, to: u32) -> usize {
    let num = len as u128 * to as u128;
    ((2 * num + from as u128) / (2 * from as u128)) as usize
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four accumulators let the compiler vectorise without reassociating a single sum.
    let mut acc = [0.0f32; 4];
    let chunks = a.len() / 4;
    for c in 0..chunks {
        for l in 0..4 {
            acc[l] += a[c * 4 + l] * b[c * 4 + l];
        }
    }
    let mut s = acc[0] + acc[1] + acc[2] + acc[3];
    for k in chunks * 4..a.len() {
        s += a[k] * b[k];
    }
    s
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Modified Bessel function of the first kind, order 0 (power series; converges fast for beta < 20).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    fn sine(freq: f32, rate: u32, secs: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| 0.5 * (2.0 * PI * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    /// Amplitude and phase of `freq` in `x` by projection on sin/cos (away from the edges).
    fn tone(x: &[f32], freq: f32, rate: u32) -> (f32, f32) {
        let (a, b) = (x.len() / 10, x.len() * 9 / 10);
        let (mut s, mut c) = (0.0f64, 0.0f64);
        for (i, &v) in x.iter().enumerate().take(b).skip(a) {
            let w = 2.0 * std::f64::consts::PI * freq as f64 * i as f64 / rate as f64;
            s += v as f64 * w.sin();
            c += v as f64 * w.cos();
        }
        let n = (b - a) as f64;
        let amp = 2.0 * (s * s + c * c).sqrt() / n;
        (amp as f32, c.atan2(s) as f32)
    }

    fn residual(x: &[f32], freq: f32, rate: u32) -> f32 {
        let (a, b) = (x.len() / 10, x.len() * 9 / 10);
        let mut err = 0.0f64;
        for (i, &v) in x.iter().enumerate().take(b).skip(a) {
            let want =
                0.5 * (2.0 * std::f64::consts::PI * freq as f64 * i as f64 / rate as f64).sin();
            err = err.max((v as f64 - want).abs());
        }
        err as f32
    }

    #[test]
    fn exact_output_length() {
        assert_eq!(resample(&[0.0; 44100], 44100, 16000).len(), 16000);
        assert_eq!(resample(&[0.0; 1000], 44100, 22050).len(), 500);
        assert_eq!(resample(&[0.0; 3], 44100, 22050).len(), 2); // 1.5 rounds up
        assert_eq!(resample(&[0.0; 1001], 16000, 22050).len(), 1380); // 1379.503
        assert_eq!(resample(&[0.0; 1000], 16000, 22050).len(), 1378); // 1378.125
        assert_eq!(resample(&[0.0; 7], 48000, 48000).len(), 7);
        assert!(resample(&[], 8000, 16000).is_empty());
        assert!(resample(&[1.0], 0, 16000).is_empty());
    }

    #[test]
    fn sine_keeps_frequency_and_amplitude() {
        for (from, to, f) in [
            (44100, 16000, 440.0),
            (16000, 22050, 1000.0),
            (48000, 22050, 3000.0),
            (22050, 44100, 5000.0),
            (44101, 16000, 700.0), // prime-ish ratio: kernel evaluated on the fly
        ] {
            let x = sine(f, from, 0.5);
            let y = resample(&x, from, to);
            let (amp, _) = tone(&y, f, to);
            assert!(
                (amp - 0.5).abs() < 0.005,
                "{from}->{to} {f} Hz: amplitude {amp}"
            );
            let err = residual(&y, f, to);
            assert!(err < 0.005, "{from}->{to} {f} Hz: max error {err}");
        }
    }

    #[test]
    fn downsampling_removes_what_would_alias() {
        // 7 kHz at 44.1 kHz is above the 4 kHz Nyquist of 8 kHz: it must vanish, not fold to 1 kHz.
        let x = sine(7000.0, 44100, 0.5);
        let y = resample(&x, 44100, 8000);
        let (amp, _) = tone(&y, 1000.0, 8000);
        assert!(amp < 0.002, "alias at 1 kHz with amplitude {amp}");
        let peak = y[y.len() / 10..y.len() * 9 / 10]
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(peak < 0.01, "peak {peak}");
    }
}
