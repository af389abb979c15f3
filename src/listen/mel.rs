//! Whisper's input: the log-mel spectrogram of 16 kHz audio, computed here (no filter file).
//!
//! 400-sample periodic Hann window, hop 160 (10 ms), the signal reflected by 200 samples at each end
//! (a centred STFT), the power spectrum's 201 bins through the Slaney mel filterbank (Slaney's
//! mel scale: linear to 1 kHz, logarithmic above; each triangle scaled to equal area), log10 of it
//! floored at 1e-10, then floored again at 8 below the clip's loudest value and mapped by
//! `(x + 4) / 4`. As faster-whisper does, 160 zero samples are appended before the transform and
//! the last frame is dropped, so a clip of N samples gives `(N + 160) / 160` frames; windows
//! shorter than 30 s are then padded with zeros to 3000 frames ([`pad_frames`]).

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

pub const SAMPLE_RATE: u32 = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// Frames in Whisper's 30-second window.
pub const N_FRAMES: usize = 3000;

fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        mel * f_sp
    }
}

/// The Slaney mel filterbank: `n_mels` rows of `N_FFT / 2 + 1` weights, row-major.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let bins = N_FFT / 2 + 1;
    let nyquist = SAMPLE_RATE as f64 / 2.0;
    let top = hz_to_mel(nyquist);
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(top * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut w = vec![0f32; n_mels * bins];
    for m in 0..n_mels {
        let (lo, mid, hi) = (edges[m], edges[m + 1], edges[m + 2]);
        let area = 2.0 / (hi - lo);
        for k in 0..bins {
            let f = k as f64 * SAMPLE_RATE as f64 / N_FFT as f64;
            let rise = (f - lo) / (mid - lo);
            let fall = (hi - f) / (hi - mid);
            w[m * bins + k] = (rise.min(fall).max(0.0) * area) as f32;
        }
    }
    w
}

/// The log-mel spectrogram of `pcm` (16 kHz mono): `n_mels` rows of frames, row-major, and the
/// frame count.
pub fn log_mel(pcm: &[f32], filters: &[f32], n_mels: usize) -> (Vec<f32>, usize) {
    let bins = N_FFT / 2 + 1;
    let half = N_FFT / 2;
    // The clip with 160 zeros appended, then reflected by 200 samples at each end.
    let mut x: Vec<f32> = pcm.to_vec();
    x.extend(std::iter::repeat_n(0.0, HOP));
    let n = x.len();
    let reflect = |i: isize| -> f32 {
        // numpy's "reflect": the edge sample is not repeated.
        let n = n as isize;
        if n == 1 {
            return x[0];
        }
        let period = 2 * (n - 1);
        let mut j = i.rem_euclid(period);
        if j >= n {
            j = period - j;
        }
        x[j as usize]
    };
    let frames = n / HOP; // 1 + n / HOP frames, the last dropped
    let window: Vec<f32> = (0..N_FFT)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos() as f32)
        .collect();
    let fft = FftPlanner::<f32>::new().plan_fft_forward(N_FFT);
    let mut buf = vec![Complex::new(0.0f32, 0.0); N_FFT];
    let mut scratch = vec![Complex::new(0.0f32, 0.0); fft.get_inplace_scratch_len()];
    let mut power = vec![0f32; bins];
    let mut mel = vec![0f32; n_mels * frames];
    for t in 0..frames {
        let start = (t * HOP) as isize - half as isize;
        for (i, c) in buf.iter_mut().enumerate() {
            let s = start + i as isize;
            let v = if s >= 0 && (s as usize) < n {
                x[s as usize]
            } else {
                reflect(s)
            };
            *c = Complex::new(v * window[i], 0.0);
        }
        fft.process_with_scratch(&mut buf, &mut scratch);
        for (p, c) in power.iter_mut().zip(&buf[..bins]) {
            *p = c.norm_sqr();
        }
        for m in 0..n_mels {
            let row = &filters[m * bins..(m + 1) * bins];
            let e: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
            mel[m * frames + t] = e.max(1e-10).log10();
        }
    }
    let top = mel.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in mel.iter_mut() {
        *v = (v.max(top - 8.0) + 4.0) / 4.0;
    }
    (mel, frames)
}

/// Frames `[from, from + len)` of a spectrogram with `frames` columns, zero-padded past its end:
/// one window of the encoder's input, `n_mels × len` (`len` = [`N_FRAMES`]: the 30-second window).
pub fn pad_frames(mel: &[f32], n_mels: usize, frames: usize, from: usize, len: usize) -> Vec<f32> {
    let mut out = vec![0f32; n_mels * len];
    let take = frames.saturating_sub(from).min(len);
    for m in 0..n_mels {
        let src = &mel[m * frames + from..m * frames + from + take];
        out[m * len..m * len + take].copy_from_slice(src);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filterbank_rows_peak_in_order_and_cover_the_band() {
        let w = mel_filters(80);
        let bins = N_FFT / 2 + 1;
        let peaks: Vec<usize> = (0..80)
            .map(|m| {
                let row = &w[m * bins..(m + 1) * bins];
                (0..bins)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap()
            })
            .collect();
        assert!(peaks.windows(2).all(|p| p[0] <= p[1]), "{peaks:?}");
        assert!(peaks[79] > 180, "top band near Nyquist");
        // Slaney scale: 1 kHz is mel 15.
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-9);
        assert!((mel_to_hz(hz_to_mel(6000.0)) - 6000.0).abs() < 1e-6);
    }

    #[test]
    fn a_tone_lights_the_band_around_its_frequency() {
        let pcm: Vec<f32> = (0..16000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin() * 0.5)
            .collect();
        let w = mel_filters(80);
        let (mel, frames) = log_mel(&pcm, &w, 80);
        assert_eq!(frames, (16000 + 160) / 160);
        let t = frames / 2;
        let loudest = (0..80)
            .max_by(|&a, &b| mel[a * frames + t].total_cmp(&mel[b * frames + t]))
            .unwrap();
        let centre = mel_to_hz(hz_to_mel(8000.0) * (loudest + 1) as f64 / 81.0);
        assert!(
            (centre - 1000.0).abs() < 120.0,
            "band {loudest} at {centre} Hz"
        );
    }
}
