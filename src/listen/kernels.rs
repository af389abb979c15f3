//! The few numeric kernels Whisper's network needs on plain f32 rows: a matrix product (the `gemm`
//! crate, the same GEMM candle's CPU backend calls, here without candle's tensor bookkeeping), and
//! layer norm, GELU (erf) and softmax with AVX2 + FMA where the CPU has them. The elementwise
//! kernels are written with intrinsics because the dev profile builds idol itself at opt-level 1,
//! where the compiler does not vectorize loops.

use gemm::Parallelism;

/// `c[i·ldc + j] = (acc ? c[i·ldc + j] : 0) + scale · Σ_l a[i·lda + l] · b[l·b_rs + j·b_cs]` for
/// `i < m`, `j < n`, `l < k`. Panics if a slice is too short for the extents it is given.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    threads: usize,
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    ldc: usize,
    acc: bool,
    a: &[f32],
    lda: usize,
    (b, b_rs, b_cs): (&[f32], usize, usize),
    scale: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * ldc + n <= c.len(), "matmul: output too short");
    if k == 0 {
        if !acc {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        (m - 1) * lda + k <= a.len(),
        "matmul: left operand too short"
    );
    assert!(
        (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
        "matmul: right operand too short"
    );
    let par = if threads > 1 && m * n * k >= 1 << 18 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: every element read or written lies within the slices (checked above); `c` is
    // borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            acc,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(target_arch = "x86_64")]
fn have_avx2() -> bool {
    use std::sync::OnceLock;
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    })
}

/// Layer norm of each `d`-wide row of `x` into `out` (same shape), ε = 1e-5.
pub fn layer_norm(x: &[f32], d: usize, gamma: &[f32], beta: &[f32], out: &mut [f32]) {
    assert!(
        gamma.len() == d && beta.len() == d && out.len() == x.len() && x.len().is_multiple_of(d)
    );
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        #[cfg(target_arch = "x86_64")]
        if have_avx2() && d.is_multiple_of(8) {
            // SAFETY: AVX2 and FMA are present; the row lengths are equal and a multiple of 8.
            unsafe { avx2::layer_norm_row(row, gamma, beta, o) };
            continue;
        }
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + 1e-5).sqrt();
        for i in 0..d {
            o[i] = (row[i] - mean) * inv * gamma[i] + beta[i];
        }
    }
}

/// `x ← GELU(x)`, the exact (erf) form Whisper was trained with.
pub fn gelu(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if have_avx2() {
        let (head, tail) = x.split_at_mut(x.len() / 8 * 8);
        // SAFETY: AVX2 and FMA are present; `head` is a whole number of 8-lane vectors.
        unsafe { avx2::gelu(head) };
        tail.iter_mut().for_each(|v| *v = gelu_one(*v));
        return;
    }
    x.iter_mut().for_each(|v| *v = gelu_one(*v));
}

/// Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), the same formula as the vector kernel.
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let p = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_7) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - p * (-a * a).exp();
    y.copysign(x)
}

fn gelu_one(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Softmax of `row` in place; returns nothing, the row sums to 1.
pub fn softmax(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if have_avx2() {
        // SAFETY: AVX2 and FMA are present.
        unsafe { avx2::softmax(row) };
        return;
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// e^x for 8 lanes (Cephes' polynomial; relative error about 2e-7), inputs clamped to ±88.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
            _mm256_set1_ps(88.3),
        );
        let fx = _mm256_floor_ps(_mm256_fmadd_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
            _mm256_set1_ps(0.5),
        ));
        let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
        let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), x);
        let mut y = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(c));
        }
        let x2 = _mm256_mul_ps(x, x);
        y = _mm256_fmadd_ps(y, x2, _mm256_add_ps(x, _mm256_set1_ps(1.0)));
        let n = _mm256_cvtps_epi32(fx);
        let pow2 = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23);
        _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn layer_norm_row(x: &[f32], g: &[f32], b: &[f32], o: &mut [f32]) {
        unsafe {
            let d = x.len();
            let (mut s, mut s2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut i = 0;
            while i < d {
                let v = _mm256_loadu_ps(x.as_ptr().add(i));
                s = _mm256_add_ps(s, v);
                i += 8;
            }
            let mean = hsum(s) / d as f32;
            let m = _mm256_set1_ps(mean);
            i = 0;
            while i < d {
                let v = _mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), m);
                s2 = _mm256_fmadd_ps(v, v, s2);
                i += 8;
            }
            let inv = _mm256_set1_ps(1.0 / (hsum(s2) / d as f32 + 1e-5).sqrt());
            i = 0;
            while i < d {
                let v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), m), inv);
                let r = _mm256_fmadd_ps(
                    v,
                    _mm256_loadu_ps(g.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                );
                _mm256_storeu_ps(o.as_mut_ptr().add(i), r);
                i += 8;
            }
        }
    }

    /// GELU over a whole number of 8-lane vectors.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu(x: &mut [f32]) {
        unsafe {
            let sign = _mm256_set1_ps(-0.0);
            let one = _mm256_set1_ps(1.0);
            let half = _mm256_set1_ps(0.5);
            for c in x.chunks_exact_mut(8) {
                let v = _mm256_loadu_ps(c.as_ptr());
                let z = _mm256_mul_ps(v, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
                let a = _mm256_andnot_ps(sign, z);
                let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.327_591_1), a, one));
                let mut p = _mm256_set1_ps(1.061_405_4);
                for k in [-1.453_152_1, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
                    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(k));
                }
                p = _mm256_mul_ps(p, t);
                let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
                let y = _mm256_fnmadd_ps(p, e, one);
                // erf(z) carries z's sign
                let erf = _mm256_or_ps(y, _mm256_and_ps(sign, z));
                let r = _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, erf));
                _mm256_storeu_ps(c.as_mut_ptr(), r);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax(row: &mut [f32]) {
        unsafe {
            let n = row.len();
            let body = n / 8 * 8;
            let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut i = 0;
            while i < body {
                mv = _mm256_max_ps(mv, _mm256_loadu_ps(row.as_ptr().add(i)));
                i += 8;
            }
            let mut max = hmax(mv);
            for &v in &row[body..] {
                max = max.max(v);
            }
            let m = _mm256_set1_ps(max);
            let mut sv = _mm256_setzero_ps();
            i = 0;
            while i < body {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row.as_ptr().add(i)), m));
                _mm256_storeu_ps(row.as_mut_ptr().add(i), e);
                sv = _mm256_add_ps(sv, e);
                i += 8;
            }
            let mut sum = hsum(sv);
            for v in &mut row[body..] {
                *v = (*v - max).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            let iv = _mm256_set1_ps(inv);
            i = 0;
            while i < body {
                let p = row.as_mut_ptr().add(i);
                _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), iv));
                i += 8;
            }
            for v in &mut row[body..] {
                *v *= inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_kernels_match_the_scalar_formulas() {
        let xs: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.013).collect();
        let mut g = xs.clone();
        gelu(&mut g);
        for (x, y) in xs.iter().zip(&g) {
            // against the textbook erf GELU in f64
            let want = 0.5 * *x as f64 * (1.0 + libm_erf(*x as f64 / std::f64::consts::SQRT_2));
            assert!(
                (*y as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{x}: {y} vs {want}"
            );
        }
        let mut s = xs.clone();
        softmax(&mut s);
        let max = xs.iter().copied().fold(f32::MIN, f32::max) as f64;
        let total: f64 = xs.iter().map(|v| (*v as f64 - max).exp()).sum();
        for (x, y) in xs.iter().zip(&s) {
            let want = (*x as f64 - max).exp() / total;
            assert!(
                (*y as f64 - want).abs() <= 1e-6 * want + 1e-12,
                "{x}: {y} vs {want}"
            );
        }
        let d = 384;
        let x: Vec<f32> = (0..2 * d)
            .map(|i| ((i * 37) % 101) as f32 * 0.1 - 3.0)
            .collect();
        let gm: Vec<f32> = (0..d).map(|i| 1.0 + i as f32 * 0.001).collect();
        let bt: Vec<f32> = (0..d).map(|i| i as f32 * -0.002).collect();
        let mut o = vec![0.0; 2 * d];
        layer_norm(&x, d, &gm, &bt, &mut o);
        for r in 0..2 {
            let row = &x[r * d..(r + 1) * d];
            let mean = row.iter().map(|v| *v as f64).sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            for i in 0..d {
                let want =
                    (row[i] as f64 - mean) / (var + 1e-5).sqrt() * gm[i] as f64 + bt[i] as f64;
                assert!((o[r * d + i] as f64 - want).abs() < 1e-4, "{want}");
            }
        }
    }

    /// erf in f64 by its series (|x| < 3) and continued fraction beyond: the test's reference.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let y = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = k as f64 / 2.0 / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        y.copysign(x)
    }

    #[test]
    fn matmul_agrees_with_the_definition() {
        let (m, n, k) = (5, 7, 9);
        let a: Vec<f32> = (0..m * 11).map(|i| (i % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.5).collect();
        let mut c = vec![1.0; m * 8];
        // b(l, j) = b[j·k + l]: a transposed weight
        matmul(1, (m, n, k), &mut c, 8, true, &a, 11, (&b, 1, k), 2.0);
        for i in 0..m {
            for j in 0..n {
                let want: f32 =
                    (0..k).map(|l| a[i * 11 + l] * b[j * k + l]).sum::<f32>() * 2.0 + 1.0;
                assert_eq!(c[i * 8 + j], want);
            }
            assert_eq!(c[i * 8 + 7], 1.0);
        }
    }
}
