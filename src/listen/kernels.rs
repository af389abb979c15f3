//! The few numeric kernels Whisper's network needs on plain f32 rows: a matrix product (the `gemm`
//! crate, the same GEMM candle's CPU backend calls, here without candle's tensor bookkeeping), and
//! layer norm, GELU (erf) and softmax with AVX2 + FMA where the CPU has them. The elementwise
//! kernels are written with intrinsics because the dev profile builds idol itself at opt-level 1,
//! where the compiler does not vectorize loops.
//!
//! The encoder's and the decoder's products go through [`matmul_packed`], idol's own AVX2 + FMA
//! kernel over a right operand packed once ([`Packed`]: the weights at load, an attention head's
//! keys and values once per head). The `gemm` crate is as fast in a release build, but in the dev
//! profile its dependencies keep debug assertions, and then the standard library's checks on every
//! `ptr::add` and `copy_nonoverlapping` in its micro-kernel cost 1.7x (measured); this kernel's
//! inner loop has none (aligned lanes read by value, pointers advanced with `wrapping_add`).

use gemm::Parallelism;

/// The checks both products make on `c` and `a`; `true` when nothing is left to compute (an empty
/// output, or `k = 0`: `c` cleared unless accumulating).
fn trivial(
    (m, n, k): (usize, usize, usize),
    (c, ldc): (&mut [f32], usize),
    acc: bool,
    (a, lda): (&[f32], usize),
) -> bool {
    if m == 0 || n == 0 {
        return true;
    }
    assert!((m - 1) * ldc + n <= c.len(), "matmul: output too short");
    if k == 0 {
        if !acc {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return true;
    }
    assert!(
        (m - 1) * lda + k <= a.len(),
        "matmul: left operand too short"
    );
    false
}

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
    if trivial((m, n, k), (c, ldc), acc, (a, lda)) {
        return;
    }
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

/// Columns of a packed panel.
const NR: usize = 16;
/// Rows of `c` one kernel call computes.
#[cfg(target_arch = "x86_64")]
const MR: usize = 6;
/// Depth of one pass (a panel's `KC × NR` slice, 16 KB, stays in L1).
#[cfg(target_arch = "x86_64")]
const KC: usize = 256;
/// Rows of `a` one pass walks over a panel (`MC × KC`, 72 KB, stays in L2).
#[cfg(target_arch = "x86_64")]
const MC: usize = 72;

/// Eight lanes aligned for one vector load.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Lanes([f32; 8]);

/// A right operand `k × n` packed once for [`matmul_packed`]: panels of 16 columns, each `k × 16`
/// row-major, the last one padded with zeros.
pub struct Packed {
    data: Vec<Lanes>,
    k: usize,
    n: usize,
}

impl Packed {
    /// An empty operand (`0 × 0`), to [`Packed::pack`] into later.
    pub fn empty() -> Packed {
        Packed {
            data: vec![],
            k: 0,
            n: 0,
        }
    }

    /// `b(l, j) = b[l·b_rs + j·b_cs]` for `l < k`, `j < n`. Panics if `b` is too short.
    pub fn new(kn: (usize, usize), b: (&[f32], usize, usize)) -> Packed {
        let mut p = Packed::empty();
        p.pack(kn, b);
        p
    }

    /// As [`Packed::new`], reusing this operand's memory.
    pub fn pack(&mut self, (k, n): (usize, usize), (b, b_rs, b_cs): (&[f32], usize, usize)) {
        assert!(
            k == 0 || n == 0 || (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
            "pack: operand too short"
        );
        let panels = n.div_ceil(NR);
        self.data.clear();
        self.data.resize(panels * k * NR / 8, Lanes([0.0; 8]));
        self.k = k;
        self.n = n;
        for p in 0..panels {
            let cols = NR.min(n - p * NR);
            let dst = lanes_mut(&mut self.data[p * k * NR / 8..(p + 1) * k * NR / 8]);
            if b_rs == 1 {
                for j in 0..cols {
                    let src = &b[(p * NR + j) * b_cs..];
                    for l in 0..k {
                        dst[l * NR + j] = src[l];
                    }
                }
            } else {
                for l in 0..k {
                    let src = &b[l * b_rs + p * NR * b_cs..];
                    for j in 0..cols {
                        dst[l * NR + j] = src[j * b_cs];
                    }
                }
            }
        }
    }

    /// `(k, n)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// `b(l, j)`.
    pub fn get(&self, l: usize, j: usize) -> f32 {
        assert!(l < self.k && j < self.n);
        let i = (j / NR) * self.k * NR + l * NR + j % NR;
        self.data[i / 8].0[i % 8]
    }
}

fn lanes_mut(l: &mut [Lanes]) -> &mut [f32] {
    // SAFETY: `Lanes` is eight f32 and nothing else (repr(C), 32 bytes).
    unsafe { std::slice::from_raw_parts_mut(l.as_mut_ptr() as *mut f32, l.len() * 8) }
}

/// `c[i·ldc + j] = (acc ? c[i·ldc + j] : 0) + scale · Σ_l a[i·lda + l] · b(l, j)` for `i < m` and
/// every column `j` of the packed `b` (`k × n`). Single-threaded. Panics if a slice is too short.
pub fn matmul_packed(
    m: usize,
    (c, ldc): (&mut [f32], usize),
    acc: bool,
    (a, lda): (&[f32], usize),
    b: &Packed,
    scale: f32,
) {
    let (k, n) = (b.k, b.n);
    if trivial((m, n, k), (c, ldc), acc, (a, lda)) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if have_avx2() {
        // SAFETY: AVX2 and FMA are present; every row and column touched lies within the slices
        // (checked above), and `c` is borrowed mutably, so it overlaps neither operand.
        unsafe {
            avx2::gemm(
                (m, n, k),
                (c.as_mut_ptr(), ldc),
                acc,
                (a.as_ptr(), lda),
                b.data.as_ptr() as *const f32,
                scale,
            )
        };
        return;
    }
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for l in 0..k {
                s += a[i * lda + l] * b.get(l, j);
            }
            let o = &mut c[i * ldc + j];
            *o = if acc { *o + scale * s } else { scale * s };
        }
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

    /// [`super::matmul_packed`] on raw pointers: `b` is the packed panels (see `super::Packed`).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm(
        (m, n, k): (usize, usize, usize),
        (c, ldc): (*mut f32, usize),
        acc: bool,
        (a, lda): (*const f32, usize),
        b: *const f32,
        scale: f32,
    ) {
        use super::{KC, MC, MR, NR};
        let panels = n.div_ceil(NR);
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            // after the first pass, each pass adds to what the ones before wrote
            let load = acc || k0 > 0;
            let mut m0 = 0;
            while m0 < m {
                let mc = MC.min(m - m0);
                for p in 0..panels {
                    let cols = NR.min(n - p * NR);
                    let bp = b.wrapping_add(p * k * NR + k0 * NR);
                    let mut r = m0;
                    while r < m0 + mc {
                        let rows = MR.min(m0 + mc - r);
                        let ap = a.wrapping_add(r * lda + k0);
                        let cp = (c.wrapping_add(r * ldc + p * NR), ldc);
                        // SAFETY: rows r..r+rows, columns p·16..+cols and depth k0..k0+kc lie
                        // within the operands (the caller's contract).
                        unsafe {
                            match rows {
                                6 => kernel::<6>(kc, (ap, lda), bp, cp, cols, load, scale),
                                5 => kernel::<5>(kc, (ap, lda), bp, cp, cols, load, scale),
                                4 => kernel::<4>(kc, (ap, lda), bp, cp, cols, load, scale),
                                3 => kernel::<3>(kc, (ap, lda), bp, cp, cols, load, scale),
                                2 => kernel::<2>(kc, (ap, lda), bp, cp, cols, load, scale),
                                _ => kernel::<1>(kc, (ap, lda), bp, cp, cols, load, scale),
                            }
                        }
                        r += rows;
                    }
                }
                m0 += mc;
            }
            k0 += kc;
        }
    }

    /// `R` rows × 16 columns of `c` over `kc` steps of the depth (`b`: a panel's 16-wide rows,
    /// 32-byte aligned); only the first `cols` columns are written.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn kernel<const R: usize>(
        kc: usize,
        (a, lda): (*const f32, usize),
        b: *const f32,
        (c, ldc): (*mut f32, usize),
        cols: usize,
        load: bool,
        scale: f32,
    ) {
        use super::{Lanes, NR};
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            let mut rows = [a; R];
            for (r, p) in rows.iter_mut().enumerate() {
                *p = a.wrapping_add(r * lda);
            }
            let mut bp = b as *const Lanes;
            for _ in 0..kc {
                // read by value: no check per load in builds with debug assertions
                let b0: __m256 = std::mem::transmute((*bp).0);
                let b1: __m256 = std::mem::transmute((*bp.wrapping_add(1)).0);
                for r in 0..R {
                    let av = _mm256_broadcastss_ps(_mm_load_ss(rows[r]));
                    acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
                    rows[r] = rows[r].wrapping_add(1);
                }
                bp = bp.wrapping_add(2);
            }
            let s = _mm256_set1_ps(scale);
            for (r, acc) in acc.iter().enumerate() {
                let cp = c.wrapping_add(r * ldc);
                let (mut v0, mut v1) = (_mm256_mul_ps(acc[0], s), _mm256_mul_ps(acc[1], s));
                if cols == NR {
                    if load {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cp));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cp.wrapping_add(8)));
                    }
                    _mm256_storeu_ps(cp, v0);
                    _mm256_storeu_ps(cp.wrapping_add(8), v1);
                } else {
                    let mut t = [0.0f32; NR];
                    _mm256_storeu_ps(t.as_mut_ptr(), v0);
                    _mm256_storeu_ps(t.as_mut_ptr().wrapping_add(8), v1);
                    for (j, v) in t.iter().enumerate().take(cols) {
                        let o = cp.wrapping_add(j);
                        *o = if load { *o + v } else { *v };
                    }
                }
            }
        }
    }

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
    fn packed_matmul_agrees_with_the_definition() {
        let val = |i: usize, s: usize| (((i + s) * 7919 % 1009) as f32 - 504.0) * 0.001;
        // rows and columns off the kernel's 6 × 16 tile, a depth over one pass, and m = 1
        for (m, n, k) in [
            (7, 19, 300),
            (1, 33, 5),
            (13, 16, 257),
            (1, 40, 600),
            (20, 3, 64),
        ] {
            let (lda, ldc) = (k + 3, n + 2);
            let a: Vec<f32> = (0..m * lda).map(|i| val(i, 1)).collect();
            // b(l, j) = bt[j·k + l] (a weight `out × in`) and the same as rows (b[l·n + j])
            let bt: Vec<f32> = (0..n * k).map(|i| val(i, 2)).collect();
            let rows: Vec<f32> = (0..k * n).map(|i| bt[(i % n) * k + i / n]).collect();
            let c0: Vec<f32> = (0..m * ldc).map(|i| val(i, 3)).collect();
            let mut c = c0.clone();
            matmul_packed(
                m,
                (&mut c, ldc),
                true,
                (&a, lda),
                &Packed::new((k, n), (&bt, 1, k)),
                0.5,
            );
            let mut c2 = c0.clone();
            let p = Packed::new((k, n), (&rows, n, 1));
            matmul_packed(m, (&mut c2, ldc), true, (&a, lda), &p, 0.5);
            assert_eq!(c, c2);
            let mut c3 = c0.clone();
            matmul_packed(m, (&mut c3, ldc), false, (&a, lda), &p, 0.5);
            for i in 0..m {
                for j in 0..n {
                    let s: f64 = (0..k)
                        .map(|l| a[i * lda + l] as f64 * bt[j * k + l] as f64)
                        .sum();
                    let want = c0[i * ldc + j] as f64 + 0.5 * s;
                    assert!((c[i * ldc + j] as f64 - want).abs() < 1e-5, "{m}x{n}x{k}");
                    assert!((c3[i * ldc + j] as f64 - 0.5 * s).abs() < 1e-5);
                    assert_eq!(p.get(k - 1, j), bt[j * k + k - 1]);
                }
                // columns past n are not touched
                assert_eq!(
                    c[i * ldc + n..i * ldc + ldc],
                    c0[i * ldc + n..i * ldc + ldc]
                );
            }
        }
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
