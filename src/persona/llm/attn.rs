//! The float side of the llama fast path done in llama.cpp's CPU operation order: one head's attention
//! over the f16 KV cache, the SwiGLU activation and the exponential both use.
//!
//! Stage: called by `llama::LlamaModel::forward` per head or per group of query heads that share a KV
//! head ([`attend_group`]), per layer; input f32 rows and the f16 cache (as `u16` bits), output f32
//! rows. No state, no threads: callers may run heads in parallel.
//!
//! Why this order matters: the logits of SmolLM2 move by up to 0.7 when attention is computed "the
//! obvious way" in f32 instead of in llama.cpp's order (several greedy steps are decided by less than
//! 0.02), so the fast path reproduces llama.cpp's non-flash-attention graph (llama-cpp-python's default)
//! operation by operation; measured against its intermediate tensors, every attention output is the
//! same float:
//!
//! 1. Scores `K·q`: the query is rounded to f16 (ggml converts the f32 side of an f16 matrix product to
//!    f16), each product of two f16 values is exact in f32, and the sum order is that of the kernel
//!    llama.cpp picks, which depends on the number of tokens in the batch (see [`AttnKernel`]). Each
//!    score is then multiplied by `1/sqrt(head_dim)`.
//! 2. Softmax: maximum subtracted, [`expf`] (ggml's vectorised exponential, not libm's), the sum of
//!    each 16 consecutive values reduced as one 512-bit vector and added into an f64 total, then every
//!    value multiplied by `(1 / total)` rounded to f32. The probabilities are then rounded to f16
//!    (again the f32 side of an f16 product): this rounding is the largest single difference to an f32
//!    attention.
//! 3. Output `Σ p_t v_t`: f16 probabilities times the f16 values, summed in the same kernel-dependent
//!    order over the positions (llama.cpp stores V transposed, so each output element is one dot
//!    product over positions). llama.cpp pads the cache view to a multiple of 256 positions with zero
//!    probabilities; zeros change no sum, so only the lane a position falls in matters.
//!
//! The two kernels, as "slots" (partial sums that each take every `slots`-th element in order, with
//! one fused multiply-add per element, then folded): the batch kernel (llamafile's tinyBLAS F16 GEMM,
//! used for two or more tokens) keeps 16 slots folded by the 512-bit horizontal sum (lanes `i + 8`
//! onto `i`, then `i + 4`, then `i + 2`, then `1`); the single-token kernel (`ggml_vec_dot_f16`, four
//! 16-lane accumulators over 64-element steps) keeps 64 slots, folds accumulator 2 onto 0 and 3 onto 1,
//! then 1 onto 0, then the same 16-lane sum; elements past the last full 64 are added in f64.
//!
//! [`expf`] is ggml's AVX-512 `ggml_v_expf` (the build that produced the reference has AVX-512; its
//! AVX2 variant is a different polynomial): `n = round(x·log2 e)`, a two-step Cody-Waite reduction, a
//! degree-5 polynomial, then `j·2^n`, with 0 or infinity past `|n| > 192`. The AVX2 kernels here
//! compute the same lanes with the same fused operations.

use half::f16;

/// Which llama.cpp kernel computes an f16 matrix product, chosen by the number of tokens evaluated
/// together (llama.cpp only uses tinyBLAS for two or more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKernel {
    /// Two or more tokens: tinyBLAS, one 16-lane accumulator per output.
    Batch,
    /// One token: `ggml_vec_dot_f16`, four 16-lane accumulators.
    Single,
    /// The f32 reference mode (tests): query and probabilities kept in f32, libm `exp`, every sum
    /// in position order; close to llama.cpp with an F32 cache, not bit-exact to anything.
    Reference,
}

impl AttnKernel {
    /// The kernel for a batch of `n` tokens.
    pub fn for_batch(n: usize) -> AttnKernel {
        if n >= 2 {
            AttnKernel::Batch
        } else {
            AttnKernel::Single
        }
    }

    /// Partial sums kept for a dot product of length `len` (tinyBLAS needs a multiple of 16, else
    /// llama.cpp falls back to the single-token kernel).
    fn slots(self, len: usize) -> usize {
        match self {
            AttnKernel::Batch if len.is_multiple_of(16) => 16,
            AttnKernel::Reference => 1,
            _ => 64,
        }
    }

    /// The query as the kernel reads it: rounded to f16, except in the reference mode.
    pub fn round_query(self, q: &[f32], out: &mut [f32]) {
        for (o, v) in out.iter_mut().zip(q) {
            *o = match self {
                AttnKernel::Reference => *v,
                _ => f16::from_f32(*v).to_f32(),
            };
        }
    }
}

/// The 512-bit horizontal sum: halves added lane by lane down to one value.
#[inline]
fn reduce16(a: &[f32; 16]) -> f32 {
    let mut t = [0f32; 8];
    for i in 0..8 {
        t[i] = a[i] + a[i + 8];
    }
    let u = [t[0] + t[4], t[1] + t[5], t[2] + t[6], t[3] + t[7]];
    (u[0] + u[2]) + (u[1] + u[3])
}

/// Fold 16 or 64 slots to the final sum (see the module docs).
#[inline]
fn fold(s: &[f32]) -> f32 {
    let mut l = [0f32; 16];
    if s.len() == 1 {
        return s[0];
    } else if s.len() == 16 {
        l.copy_from_slice(s);
    } else {
        for i in 0..16 {
            l[i] = (s[i] + s[32 + i]) + (s[16 + i] + s[48 + i]);
        }
    }
    reduce16(&l)
}

/// Dot product of `x` (f32 values that are f16-exact) with the f16 row `y`, in `kernel`'s order.
pub fn dot_f16(kernel: AttnKernel, x: &[f32], y: &[u16]) -> f32 {
    let n = x.len();
    let slots = kernel.slots(n);
    let full = n - n % slots;
    let mut s = [0f32; 64];
    for e in 0..full {
        let v = f16::from_bits(y[e]).to_f32();
        s[e % slots] = x[e].mul_add(v, s[e % slots]);
    }
    let r = fold(&s[..slots]);
    if full == n {
        return r;
    }
    let mut r = r as f64;
    for e in full..n {
        r += (x[e] * f16::from_bits(y[e]).to_f32()) as f64;
    }
    r as f32
}

/// ggml's vectorised `exp` (AVX-512 variant), one lane.
pub fn expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(EXP_LOG2E, r);
    let n = z - r;
    let b = (-n).mul_add(EXP_LN2_LO, (-n).mul_add(EXP_LN2_HI, x));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    let u = b * b;
    let j = EXP_C[4]
        .mul_add(b, EXP_C[3])
        .mul_add(u, EXP_C[2].mul_add(b, EXP_C[1]))
        .mul_add(u, EXP_C[0].mul_add(b, 1.0));
    // scalef: j * 2^n, rounded once (exact in f64, then one rounding to f32)
    (j as f64 * 2f64.powi(n as i32)) as f32
}

const EXP_LOG2E: f32 = f32::from_bits(0x3fb8_aa3b); // 0x1.715476p+0
const EXP_LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0x1.62e4p-1
const EXP_LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 0x1.7f7d1cp-20
/// Polynomial coefficients of `b`, `b^2`, ..., `b^5` (0x1.ffffecp-1, 0x1.fffdb6p-2, 0x1.555e66p-3,
/// 0x1.573e2ep-5, 0x1.0e4020p-7).
const EXP_C: [f32; 5] = [
    f32::from_bits(0x3f7f_fff6),
    f32::from_bits(0x3eff_fedb),
    f32::from_bits(0x3e2a_af33),
    f32::from_bits(0x3d2b_9f17),
    f32::from_bits(0x3c07_2010),
];

/// `g = silu(g) * u` with `silu(x) = x / (1 + expf(0 - x))`, as ggml's fused SwiGLU.
pub fn swiglu(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::quant::have_avx2() {
        // SAFETY: features checked; the kernel stays within both slices.
        done = unsafe { simd::swiglu(g, u) };
    }
    for (g, u) in g[done..].iter_mut().zip(&u[done..]) {
        *g = *g / (1.0 + expf(0.0 - *g)) * u;
    }
}

/// `x = expf(x - mx)` on up to 16 values; returns their 16-lane sum (missing lanes are zeros).
fn exp_chunk(chunk: &mut [f32], mx: f32) -> f32 {
    let mut lanes = [0f32; 16];
    for (l, s) in lanes.iter_mut().zip(chunk.iter_mut()) {
        *s = expf(*s - mx);
        *l = *s;
    }
    reduce16(&lanes)
}

/// Reusable buffers of [`attend`].
#[derive(Default)]
pub struct AttnScratch {
    scores: Vec<f32>,
    slots: Vec<f32>,
}

/// One head's attention for one query `q` (f32 values already rounded to f16): against the first
/// `len` cached keys (`kv.0`, row `t` at `t * stride + off`) and values (`kv.1`, same layout), into
/// `out` (see the module docs for the order of operations).
#[allow(clippy::too_many_arguments)]
pub fn attend(
    kernel: AttnKernel,
    q: &[f32],
    kv: (&[u16], &[u16]),
    (stride, off): (usize, usize),
    len: usize,
    scale: f32,
    sc: &mut AttnScratch,
    out: &mut [f32],
) {
    let hd = q.len();
    assert!(len > 0 && out.len() == hd);
    assert!((len - 1) * stride + off + hd <= kv.0.len().min(kv.1.len()));
    let simd_ok = simd_ok(kernel, hd);
    sc.scores.resize(len, 0.0);
    probs(
        kernel,
        simd_ok,
        q,
        kv.0,
        (stride, off),
        scale,
        &mut sc.scores,
    );
    // 3. weighted values: slot `t % slots` accumulates position t; then fold per output element
    // (the first position of each slot stores its product, exact for two f16 values, so no zeroing)
    let slots = kernel.slots(len.next_multiple_of(256));
    let used = slots.min(len);
    sc.slots.resize(slots * hd, 0.0);
    if simd_ok {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; `slots` holds `slots * hd` values.
        unsafe {
            simd::weighted(
                &sc.scores,
                kv.1.as_ptr().add(off),
                stride,
                slots,
                &mut sc.slots,
            )
        };
    } else {
        for (t, p) in sc.scores.iter().enumerate() {
            let vr = &kv.1[t * stride + off..t * stride + off + hd];
            let acc = &mut sc.slots[(t % slots) * hd..(t % slots + 1) * hd];
            for (a, v) in acc.iter_mut().zip(vr) {
                let v = f16::from_bits(*v).to_f32();
                *a = if t < slots { p * v } else { p.mul_add(v, *a) };
            }
        }
    }
    sc.slots[used * hd..].fill(0.0);
    fold_slots(simd_ok, &sc.slots, slots, out);
}

/// Cache lengths from which [`attend_group`] shares the value rows (below, the per-head kernels are
/// as fast: measured 0.55 vs 0.71 ms per step for 9 heads x 30 layers at 17 positions).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the x86-64 kernels only
const GROUP_MIN_LEN: usize = 128;

/// [`attend`] for the `q.len() / hd` query heads that share one KV head (grouped-query attention),
/// queries and outputs one head after another: with AVX-512, 2 to 4 heads and at least
/// [`GROUP_MIN_LEN`] positions, each cached value row is converted once and multiplied into all the
/// heads' sums (the scores stay per head: their rows are then still in cache). Every output is the
/// same float as [`attend`] gives for its head alone.
#[allow(clippy::too_many_arguments)]
// Elsewhere than x86-64 the early return is the whole body.
#[cfg_attr(not(target_arch = "x86_64"), allow(clippy::needless_return))]
pub fn attend_group(
    kernel: AttnKernel,
    q: &[f32],
    hd: usize,
    kv: (&[u16], &[u16]),
    (stride, off): (usize, usize),
    len: usize,
    scale: f32,
    sc: &mut AttnScratch,
    out: &mut [f32],
) {
    let g = q.len() / hd;
    assert!(len > 0 && g > 0 && q.len() == g * hd && out.len() == q.len());
    assert!((len - 1) * stride + off + hd <= kv.0.len().min(kv.1.len()));
    #[cfg(target_arch = "x86_64")]
    let wide = (2..=4).contains(&g)
        && len >= GROUP_MIN_LEN
        && simd_ok(kernel, hd)
        && super::quant::have_avx512();
    #[cfg(not(target_arch = "x86_64"))]
    let wide = false;
    if !wide {
        for (qh, oh) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
            attend(kernel, qh, kv, (stride, off), len, scale, sc, oh);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        sc.scores.resize(g * len, 0.0);
        for (qh, p) in q.chunks_exact(hd).zip(sc.scores.chunks_exact_mut(len)) {
            probs(kernel, true, qh, kv.0, (stride, off), scale, p);
        }
        let slots = kernel.slots(len.next_multiple_of(256));
        let used = slots.min(len);
        sc.slots.resize(g * slots * hd, 0.0);
        // SAFETY: AVX-512 checked; every row read is in bounds (asserted above), `slots` holds
        // `g * slots * hd` values.
        unsafe {
            let v = kv.1.as_ptr().add(off);
            let (p, a) = (&sc.scores[..], &mut sc.slots[..]);
            match g {
                2 => simd::weighted_group::<2>(p, len, v, stride, slots, hd, a),
                3 => simd::weighted_group::<3>(p, len, v, stride, slots, hd, a),
                _ => simd::weighted_group::<4>(p, len, v, stride, slots, hd, a),
            }
        }
        for (acc, oh) in sc
            .slots
            .chunks_exact_mut(slots * hd)
            .zip(out.chunks_exact_mut(hd))
        {
            acc[used * hd..].fill(0.0);
            fold_slots(true, acc, slots, oh);
        }
    }
}

/// The largest head the AVX2 score kernel holds the query of (larger heads take the scalar path,
/// same floats).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the x86-64 kernels only
const MAX_HD: usize = 512;

/// Whether the AVX2 kernels take a head of `hd` values in `kernel`'s order.
fn simd_ok(kernel: AttnKernel, hd: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::quant::have_avx2()
            && hd.is_multiple_of(64)
            && hd <= MAX_HD
            && kernel != AttnKernel::Reference
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kernel, hd);
        false
    }
}

/// Steps 1 and 2 for one query: `scores[t]` becomes the (f16-rounded) probability of position `t`
/// for the keys `k` (row `t` at `t * stride + off`), `t < scores.len()`.
fn probs(
    kernel: AttnKernel,
    simd_ok: bool,
    q: &[f32],
    k: &[u16],
    (stride, off): (usize, usize),
    scale: f32,
    scores: &mut [f32],
) {
    let hd = q.len();
    assert!((scores.len() - 1) * stride + off + hd <= k.len());
    // 1. scores
    if simd_ok {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features checked; every row read is in bounds (asserted above).
        unsafe {
            simd::scores(kernel, q, k.as_ptr().add(off), stride, scale, scores)
        };
    } else {
        for (t, s) in scores.iter_mut().enumerate() {
            *s = dot_f16(kernel, q, &k[t * stride + off..t * stride + off + hd]) * scale;
        }
    }
    softmax(kernel, simd_ok, scores);
}

/// Step 2 on one head's scores: they become its probabilities, rounded to f16.
fn softmax(kernel: AttnKernel, simd_ok: bool, scores: &mut [f32]) {
    let mut mx = f32::NEG_INFINITY;
    #[cfg(target_arch = "x86_64")]
    if simd_ok {
        // SAFETY: features checked.
        mx = unsafe { simd::max(scores) };
    }
    if !simd_ok {
        mx = scores.iter().fold(mx, |m, v| m.max(*v));
    }
    let mut total = 0f64;
    for chunk in scores.chunks_mut(16) {
        #[cfg(target_arch = "x86_64")]
        if simd_ok && chunk.len() == 16 {
            // SAFETY: features checked; the chunk has 16 values.
            if let Some(sum) = unsafe { simd::exp16(chunk, mx) } {
                total += sum as f64;
                continue;
            }
        }
        if kernel == AttnKernel::Reference {
            for s in chunk.iter_mut() {
                *s = (*s - mx).exp();
                total += *s as f64;
            }
        } else {
            total += exp_chunk(chunk, mx) as f64;
        }
    }
    let inv = (1.0 / total) as f32;
    #[cfg(target_arch = "x86_64")]
    if simd_ok {
        // SAFETY: features checked.
        unsafe { simd::normalize(scores, inv) };
    }
    if !simd_ok {
        for s in scores.iter_mut() {
            *s *= inv;
            if kernel != AttnKernel::Reference {
                *s = f16::from_f32(*s).to_f32();
            }
        }
    }
}

/// `out[j]` = the fold of the `slots` partial sums `acc[s * hd + j]` (`hd = out.len()`).
fn fold_slots(simd_ok: bool, acc: &[f32], slots: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd_ok {
        // SAFETY: features checked; `acc` holds `slots * hd` values (asserted inside).
        unsafe { simd::fold_rows(acc, slots, out) };
        return;
    }
    let _ = simd_ok;
    let hd = out.len();
    let mut lane = [0f32; 64];
    for (j, o) in out.iter_mut().enumerate() {
        for (s, l) in lane[..slots].iter_mut().enumerate() {
            *l = acc[s * hd + j];
        }
        *o = fold(&lane[..slots]);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{AttnKernel, EXP_C, EXP_LN2_HI, EXP_LN2_LO, EXP_LOG2E, MAX_HD};
    use std::arch::x86_64::*;

    /// `$body` once for each `$j` in 0..8, as constants (registers stay registers at any opt-level).
    macro_rules! unroll8 {
        ($j:ident $body:block) => {
            unroll8!(@ $j $body 0 1 2 3 4 5 6 7)
        };
        (@ $j:ident $body:block $($n:literal)*) => {
            $( { const $j: usize = $n; $body } )*
        };
    }

    /// The 16-lane sum of `lo` (lanes 0-7) and `hi` (lanes 8-15), as `reduce16`.
    #[inline(always)]
    unsafe fn reduce16(lo: __m256, hi: __m256) -> f32 {
        unsafe { reduce8(_mm256_add_ps(lo, hi)) }
    }

    /// The rest of `reduce16` once lanes `i` and `i + 8` are added.
    #[inline(always)]
    unsafe fn reduce8(a: __m256) -> f32 {
        unsafe {
            let mut r = _mm_add_ps(_mm256_extractf128_ps(a, 1), _mm256_castps256_ps128(a));
            r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            r = _mm_add_ss(r, _mm_movehdup_ps(r));
            _mm_cvtss_f32(r)
        }
    }

    // Loads go through `lddqu`: the plain `loadu` intrinsics copy through a stack slot with a
    // pointer check when debug assertions are on (the dev profile), several times slower.
    #[inline(always)]
    unsafe fn load8h(p: *const u16) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_lddqu_si128(p as *const __m128i)) }
    }

    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        unsafe { _mm256_castsi256_ps(_mm256_lddqu_si256(p as *const __m256i)) }
    }

    /// `scores[t] = q · k_t` for the rows `k_t = k + t * stride`; `q.len()` a multiple of 64.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores(
        kernel: AttnKernel,
        q: &[f32],
        k: *const u16,
        stride: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        unsafe {
            let single = kernel != AttnKernel::Batch;
            match q.len() {
                64 => scores_n::<8>(single, q, k, stride, scale, scores),
                128 => scores_n::<16>(single, q, k, stride, scale, scores),
                256 => scores_n::<32>(single, q, k, stride, scale, scores),
                hd => {
                    // other multiples of 64: the query from a stack copy instead of registers
                    let mut qv = [_mm256_setzero_ps(); MAX_HD / 8];
                    for (j, v) in qv[..hd / 8].iter_mut().enumerate() {
                        *v = load8(q.as_ptr().add(8 * j));
                    }
                    scores_rows(single, &qv[..hd / 8], k, stride, scale, scores)
                }
            }
        }
    }

    /// One score before its horizontal sum, as 8 lanes (lane `i` + lane `i + 8` of the kernel's 16
    /// already added): `q.len()` blocks of 8 elements (a multiple of 8).
    #[inline(always)]
    unsafe fn row_lanes(single: bool, q: &[__m256], kr: *const u16) -> __m256 {
        unsafe {
            let b = q.len();
            if single {
                // four 16-lane accumulators over 64-element steps: (a0,a1), (a2,a3), (a4,a5), (a6,a7)
                let mut a = [_mm256_setzero_ps(); 8];
                let mut j = 0;
                while j < b {
                    unroll8!(M {
                        a[M] = _mm256_fmadd_ps(q[j + M], load8h(kr.wrapping_add(8 * (j + M))), a[M]);
                    });
                    j += 8;
                }
                let lo = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
                let hi = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
                _mm256_add_ps(lo, hi)
            } else {
                // one 16-lane accumulator: lanes 0-7 in `lo`, 8-15 in `hi`
                let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut j = 0;
                while j < b {
                    lo = _mm256_fmadd_ps(q[j], load8h(kr.wrapping_add(8 * j)), lo);
                    hi = _mm256_fmadd_ps(q[j + 1], load8h(kr.wrapping_add(8 * (j + 1))), hi);
                    j += 2;
                }
                _mm256_add_ps(lo, hi)
            }
        }
    }

    /// The rest of [`reduce16`] for eight rows at once: `a[p]` holds row `p`'s 8 lanes; returns
    /// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))` of each row, rows in lane order (the same
    /// additions as the one-row sum, transposed).
    #[inline(always)]
    unsafe fn reduce8x8(a: &[__m256; 8]) -> __m256 {
        unsafe {
            // c[k] = [l_i + l_{i+4} of row k | of row k + 4]
            let c: [__m256; 4] = std::array::from_fn(|k| {
                _mm256_add_ps(
                    _mm256_permute2f128_ps::<0x20>(a[k], a[k + 4]),
                    _mm256_permute2f128_ps::<0x31>(a[k], a[k + 4]),
                )
            });
            // g: [r0 + r2, r1 + r3] of rows 0, 1 | 4, 5; h: of rows 2, 3 | 6, 7
            let g = _mm256_add_ps(
                _mm256_shuffle_ps::<0x44>(c[0], c[1]),
                _mm256_shuffle_ps::<0xEE>(c[0], c[1]),
            );
            let h = _mm256_add_ps(
                _mm256_shuffle_ps::<0x44>(c[2], c[3]),
                _mm256_shuffle_ps::<0xEE>(c[2], c[3]),
            );
            _mm256_add_ps(
                _mm256_shuffle_ps::<0x88>(g, h),
                _mm256_shuffle_ps::<0xDD>(g, h),
            )
        }
    }

    /// [`scores`] for `q.len() == 8 * B`: the query held in registers.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scores_n<const B: usize>(
        single: bool,
        q: &[f32],
        k: *const u16,
        stride: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        unsafe {
            let qv: [__m256; B] = std::array::from_fn(|j| load8(q.as_ptr().add(8 * j)));
            scores_rows(single, &qv, k, stride, scale, scores)
        }
    }

    /// [`scores`] with the query as 8-lane blocks, eight rows per step.
    #[inline(always)]
    unsafe fn scores_rows(
        single: bool,
        qv: &[__m256],
        k: *const u16,
        stride: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        unsafe {
            let sv = _mm256_set1_ps(scale);
            let n = scores.len();
            let mut t = 0;
            while t + 8 <= n {
                let mut a = [_mm256_setzero_ps(); 8];
                unroll8!(P {
                    a[P] = row_lanes(single, qv, k.wrapping_add((t + P) * stride));
                });
                _mm256_storeu_ps(scores.as_mut_ptr().add(t), _mm256_mul_ps(reduce8x8(&a), sv));
                t += 8;
            }
            while t < n {
                let a = row_lanes(single, qv, k.wrapping_add(t * stride));
                scores[t] = reduce8(a) * scale;
                t += 1;
            }
        }
    }

    /// `acc[(t % slots)] += p[t] * v_t` for the rows `v_t = v + t * stride` (f16), in order of `t`
    /// (the first `slots` positions store their product); `acc` holds `slots` rows of `hd` values, `hd`
    /// a multiple of 64.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted(p: &[f32], v: *const u16, stride: usize, slots: usize, acc: &mut [f32]) {
        unsafe {
            let hd = acc.len() / slots;
            let ap = acc.as_mut_ptr();
            // Slot by slot, 64 outputs at a time held in 8 registers: the same products and sums in
            // the same order as position by position, without reloading the slot from memory.
            let mut jb = 0;
            while jb < hd {
                for s in 0..slots.min(p.len()) {
                    let mut t = s;
                    let a = _mm256_set1_ps(p[t]);
                    let vr = v.wrapping_add(t * stride + jb);
                    let mut o = [_mm256_setzero_ps(); 8];
                    unroll8!(J {
                        o[J] = _mm256_mul_ps(a, load8h(vr.wrapping_add(8 * J)));
                    });
                    t += slots;
                    while t < p.len() {
                        let a = _mm256_set1_ps(p[t]);
                        let vr = v.wrapping_add(t * stride + jb);
                        unroll8!(J {
                            o[J] = _mm256_fmadd_ps(a, load8h(vr.wrapping_add(8 * J)), o[J]);
                        });
                        t += slots;
                    }
                    let dst = ap.wrapping_add(s * hd + jb);
                    unroll8!(J {
                        _mm256_storeu_ps(dst.wrapping_add(8 * J), o[J]);
                    });
                }
                jb += 64;
            }
        }
    }

    /// `$body` once for each `$j` in 0..4, as constants.
    macro_rules! unroll4 {
        ($j:ident $body:block) => {{
            const $j: usize = 0;
            $body
        }
        {
            const $j: usize = 1;
            $body
        }
        {
            const $j: usize = 2;
            $body
        }
        {
            const $j: usize = 3;
            $body
        }};
    }

    /// [`weighted`] for `G` heads at once (AVX-512): `p` holds each head's `len` probabilities one
    /// after another, `acc` each head's `slots` rows of `hd` values. Each value row (64 values, four
    /// 16-lane registers) is converted once and multiplied into all `G` heads' sums; per head the
    /// same products and sums in the same order as [`weighted`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
    pub unsafe fn weighted_group<const G: usize>(
        p: &[f32],
        len: usize,
        v: *const u16,
        stride: usize,
        slots: usize,
        hd: usize,
        acc: &mut [f32],
    ) {
        unsafe {
            assert!(p.len() >= G * len && acc.len() >= G * slots * hd && hd.is_multiple_of(64));
            let ap = acc.as_mut_ptr();
            let pp = p.as_ptr();
            let load16h = |q: *const u16| _mm512_cvtph_ps(_mm256_lddqu_si256(q as *const __m256i));
            let mut jb = 0;
            while jb < hd {
                for s in 0..slots.min(len) {
                    let mut t = s;
                    let vr = v.wrapping_add(t * stride + jb);
                    let mut vv = [_mm512_setzero_ps(); 4];
                    unroll4!(J {
                        vv[J] = load16h(vr.wrapping_add(16 * J));
                    });
                    let mut o = [[_mm512_setzero_ps(); 4]; G];
                    for (h, o) in o.iter_mut().enumerate() {
                        let a = _mm512_set1_ps(*pp.add(h * len + t));
                        unroll4!(J {
                            o[J] = _mm512_mul_ps(a, vv[J]);
                        });
                    }
                    t += slots;
                    while t < len {
                        let vr = v.wrapping_add(t * stride + jb);
                        unroll4!(J {
                            vv[J] = load16h(vr.wrapping_add(16 * J));
                        });
                        for (h, o) in o.iter_mut().enumerate() {
                            let a = _mm512_set1_ps(*pp.add(h * len + t));
                            unroll4!(J {
                                o[J] = _mm512_fmadd_ps(a, vv[J], o[J]);
                            });
                        }
                        t += slots;
                    }
                    for (h, o) in o.iter().enumerate() {
                        let dst = ap.add((h * slots + s) * hd + jb);
                        unroll4!(J {
                            _mm512_storeu_ps(dst.add(16 * J), o[J]);
                        });
                    }
                }
                jb += 64;
            }
        }
    }

    /// `expf` on 8 lanes; `None` when a lane needs the scalar path (`2^n` not a normal f32).
    #[inline(always)]
    unsafe fn expf8(x: __m256) -> Option<__m256> {
        unsafe {
            let r = _mm256_set1_ps(f32::from_bits(0x4b40_0000));
            let z = _mm256_fmadd_ps(x, _mm256_set1_ps(EXP_LOG2E), r);
            let n = _mm256_sub_ps(z, r);
            let b = _mm256_fnmadd_ps(
                n,
                _mm256_set1_ps(EXP_LN2_LO),
                _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), x),
            );
            let out_of_range = _mm256_or_ps(
                _mm256_cmp_ps(n, _mm256_set1_ps(-126.0), _CMP_LT_OQ),
                _mm256_cmp_ps(n, _mm256_set1_ps(127.0), _CMP_GT_OQ),
            );
            // NaN lanes fail both comparisons: send them to the scalar path too
            let nan = _mm256_cmp_ps(n, n, _CMP_UNORD_Q);
            if _mm256_movemask_ps(_mm256_or_ps(out_of_range, nan)) != 0 {
                return None;
            }
            let u = _mm256_mul_ps(b, b);
            let c = |i: usize| _mm256_set1_ps(EXP_C[i]);
            let j = _mm256_fmadd_ps(
                _mm256_fmadd_ps(
                    _mm256_fmadd_ps(c(4), b, c(3)),
                    u,
                    _mm256_fmadd_ps(c(2), b, c(1)),
                ),
                u,
                _mm256_fmadd_ps(c(0), b, _mm256_set1_ps(1.0)),
            );
            // 2^n for integral n in [-126, 127], exact; one rounding in the product, as scalef
            let e = _mm256_slli_epi32(
                _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
                23,
            );
            Some(_mm256_mul_ps(j, _mm256_castsi256_ps(e)))
        }
    }

    /// The largest value (order does not matter for a maximum).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn max(x: &[f32]) -> f32 {
        unsafe {
            let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut i = 0;
            while i + 8 <= x.len() {
                m = _mm256_max_ps(m, _mm256_loadu_ps(x.as_ptr().add(i)));
                i += 8;
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), m);
            lanes
                .iter()
                .chain(&x[i..])
                .fold(f32::NEG_INFINITY, |a, b| a.max(*b))
        }
    }

    /// `x = f16(x * inv)` as f32 values (round to nearest even, as F16C does).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn normalize(x: &mut [f32], inv: f32) {
        unsafe {
            let s = _mm256_set1_ps(inv);
            let mut i = 0;
            while i + 8 <= x.len() {
                let p = x.as_mut_ptr().add(i);
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_mul_ps(
                    _mm256_loadu_ps(p),
                    s,
                ));
                _mm256_storeu_ps(p, _mm256_cvtph_ps(h));
                i += 8;
            }
            for v in &mut x[i..] {
                *v = half::f16::from_f32(*v * inv).to_f32();
            }
        }
    }

    /// `out[j] = fold(acc[0][j], ..., acc[slots-1][j])` for `slots` of 16 or 64 rows, 8 `j` at a time
    /// (the same lane additions as `super::fold`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn fold_rows(acc: &[f32], slots: usize, out: &mut [f32]) {
        unsafe {
            let hd = out.len();
            assert!(
                acc.len() >= slots * hd && hd.is_multiple_of(8) && (slots == 16 || slots == 64)
            );
            let row = |s: usize, j: usize| _mm256_loadu_ps(acc.as_ptr().add(s * hd + j));
            let mut j = 0;
            while j < hd {
                let mut l = [_mm256_setzero_ps(); 16];
                for (i, l) in l.iter_mut().enumerate() {
                    *l = if slots == 16 {
                        row(i, j)
                    } else {
                        _mm256_add_ps(
                            _mm256_add_ps(row(i, j), row(32 + i, j)),
                            _mm256_add_ps(row(16 + i, j), row(48 + i, j)),
                        )
                    };
                }
                let mut t = [_mm256_setzero_ps(); 8];
                for i in 0..8 {
                    t[i] = _mm256_add_ps(l[i], l[i + 8]);
                }
                let u = [
                    _mm256_add_ps(t[0], t[4]),
                    _mm256_add_ps(t[1], t[5]),
                    _mm256_add_ps(t[2], t[6]),
                    _mm256_add_ps(t[3], t[7]),
                ];
                let r = _mm256_add_ps(_mm256_add_ps(u[0], u[2]), _mm256_add_ps(u[1], u[3]));
                _mm256_storeu_ps(out.as_mut_ptr().add(j), r);
                j += 8;
            }
        }
    }

    /// `x = expf(x - mx)` on 16 values and their 16-lane sum, as `exp_chunk`; `None` (nothing
    /// written) when a lane needs the scalar path.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn exp16(x: &mut [f32], mx: f32) -> Option<f32> {
        unsafe {
            let m = _mm256_set1_ps(mx);
            let p = x.as_mut_ptr();
            let lo = expf8(_mm256_sub_ps(_mm256_loadu_ps(p), m))?;
            let hi = expf8(_mm256_sub_ps(_mm256_loadu_ps(p.add(8)), m))?;
            _mm256_storeu_ps(p, lo);
            _mm256_storeu_ps(p.add(8), hi);
            Some(reduce16(lo, hi))
        }
    }

    /// SwiGLU on the leading multiple of 8 elements; returns how many were done.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn swiglu(g: &mut [f32], u: &[f32]) -> usize {
        unsafe {
            let n = g.len() - g.len() % 8;
            let mut i = 0;
            while i < n {
                let x = _mm256_loadu_ps(g.as_ptr().add(i));
                let neg = _mm256_sub_ps(_mm256_setzero_ps(), x);
                match expf8(neg) {
                    Some(e) => {
                        let s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
                        _mm256_storeu_ps(
                            g.as_mut_ptr().add(i),
                            _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr().add(i))),
                        );
                    }
                    None => {
                        for k in i..i + 8 {
                            g[k] = g[k] / (1.0 + super::expf(0.0 - g[k])) * u[k];
                        }
                    }
                }
                i += 8;
            }
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded generator of values in [-0.5, 0.5) (a 64-bit LCG's top 24 bits).
    fn uniform(mut seed: u64) -> impl FnMut() -> f32 {
        move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        }
    }

    /// Keys (values times 4) and values of a cache of `n` f16 elements each.
    fn f16_cache(r: &mut impl FnMut() -> f32, n: usize) -> (Vec<u16>, Vec<u16>) {
        let k = (0..n).map(|_| f16::from_f32(r() * 4.0).to_bits()).collect();
        let v = (0..n).map(|_| f16::from_f32(r()).to_bits()).collect();
        (k, v)
    }

    #[test]
    fn expf_is_close_to_exp_and_saturates() {
        for i in -1700..=1700 {
            let x = i as f32 * 0.05;
            let (a, b) = (expf(x), x.exp());
            assert!((a - b).abs() <= b * 4e-7, "{x}: {a} vs {b}");
        }
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf(-200.0), 0.0);
        assert_eq!(expf(200.0), f32::INFINITY);
        assert_eq!(expf(0.0), 1.0);
    }

    #[test]
    fn swiglu_simd_equals_scalar_bit_for_bit() {
        let mut u = uniform(7);
        let mut r = || u() * 40.0;
        let mut g: Vec<f32> = (0..1037).map(|_| r()).collect();
        g[3] = -100.0; // past the vector range of 2^n
        g[11] = 95.0;
        let u: Vec<f32> = (0..1037).map(|_| r()).collect();
        let want: Vec<f32> = g
            .iter()
            .zip(&u)
            .map(|(g, u)| g / (1.0 + expf(0.0 - g)) * u)
            .collect();
        swiglu(&mut g, &u);
        for (i, (a, b)) in g.iter().zip(&want).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{i}");
        }
    }

    /// The SIMD attention kernels give the scalar kernels' floats, for both llama.cpp kernels.
    #[test]
    fn attend_simd_equals_scalar_bit_for_bit() {
        for hd in [64, 128, 192, 256] {
            attend_simd_equals_scalar(hd);
        }
    }

    /// The grouped kernel gives each head the floats of its own [`attend`], for every group size.
    #[test]
    fn attend_group_equals_attend_per_head_bit_for_bit() {
        let (hd, len) = (64, 300);
        let mut r = uniform(5);
        let (k, v) = f16_cache(&mut r, len * hd);
        let q: Vec<f32> = (0..5 * hd)
            .map(|_| f16::from_f32(r() * 4.0).to_f32())
            .collect();
        for kernel in [AttnKernel::Batch, AttnKernel::Single] {
            for g in 1..=5 {
                for n in [1, 13, 64, 65, 128, 300] {
                    let mut sc = AttnScratch::default();
                    let mut out = vec![0f32; g * hd];
                    let q = &q[..g * hd];
                    attend_group(
                        kernel,
                        q,
                        hd,
                        (&k, &v),
                        (hd, 0),
                        n,
                        0.125,
                        &mut sc,
                        &mut out,
                    );
                    for h in 0..g {
                        let mut want = vec![0f32; hd];
                        let qh = &q[h * hd..(h + 1) * hd];
                        attend(kernel, qh, (&k, &v), (hd, 0), n, 0.125, &mut sc, &mut want);
                        for (j, (a, b)) in out[h * hd..].iter().zip(&want).enumerate() {
                            assert_eq!(a.to_bits(), b.to_bits(), "{kernel:?} g={g} n={n} {h} {j}");
                        }
                    }
                }
            }
        }
    }

    fn attend_simd_equals_scalar(hd: usize) {
        let (stride, len) = (3 * hd, 300);
        let mut r = uniform(11);
        let (k, v) = f16_cache(&mut r, len * stride);
        let q: Vec<f32> = (0..hd).map(|_| f16::from_f32(r() * 4.0).to_f32()).collect();
        for kernel in [AttnKernel::Batch, AttnKernel::Single] {
            for n in [1, 5, 8, 13, 64, 65, 300] {
                let mut sc = AttnScratch::default();
                let mut out = vec![0f32; hd];
                attend(
                    kernel,
                    &q,
                    (&k, &v),
                    (stride, hd),
                    n,
                    0.125,
                    &mut sc,
                    &mut out,
                );
                // scalar reference
                let mut scores: Vec<f32> = (0..n)
                    .map(|t| dot_f16(kernel, &q, &k[t * stride + hd..t * stride + 2 * hd]) * 0.125)
                    .collect();
                let mx = scores.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                let mut total = 0f64;
                for c in scores.chunks_mut(16) {
                    let mut l = [0f32; 16];
                    for (l, s) in l.iter_mut().zip(c.iter_mut()) {
                        *s = expf(*s - mx);
                        *l = *s;
                    }
                    total += reduce16(&l) as f64;
                }
                let inv = (1.0 / total) as f32;
                let p: Vec<f32> = scores
                    .iter()
                    .map(|s| f16::from_f32(s * inv).to_f32())
                    .collect();
                let slots = kernel.slots(256);
                for (j, o) in out.iter().enumerate() {
                    let mut s = vec![0f32; slots];
                    for (t, pt) in p.iter().enumerate() {
                        let vv = f16::from_bits(v[t * stride + hd + j]).to_f32();
                        s[t % slots] = pt.mul_add(vv, s[t % slots]);
                    }
                    assert_eq!(
                        o.to_bits(),
                        fold(&s).to_bits(),
                        "{kernel:?} hd={hd} n={n} j={j}"
                    );
                }
            }
        }
    }
}
