//! GGML block formats and the integer dot products of the llama fast path.
//!
//! Weights stay in their GGUF block layout. A matrix-vector product first quantizes the activation row
//! once, block by block (32 values), to the format llama.cpp pairs with the weight type: Q8_1 for Q4_1
//! weights (scale `d` and `s = d * sum(q)`), Q8_0 for Q4_0 and Q8_0 weights. Every block dot product is
//! then an exact integer sum of 32 products, kept as 8 lanes of 4 products each, converted to f32 and
//! multiplied by the product of the two block scales into 8 f32 accumulators (fused multiply-add); the
//! accumulators are summed pairwise at the end (lanes 0+4, 1+5, ..., then halves), and for Q4_1 the block
//! minimum contributes `m * s` in a separate scalar sum. That is exactly the operation order of llama.cpp's
//! x86 kernels, so the results are bit-identical to its f32 results for the same inputs, which is why our
//! greedy decoding reproduces its token ids. Scales are f16; `d0 * d1` of two f16 values is exact in f32.
//!
//! Quantizing a block: `amax = max |x|`, `d = amax / 127`, `q = round_half_even(x * (127 / amax))`.
//!
//! The AVX2 kernels (with FMA and F16C) are chosen at run time; the scalar kernels compute the same lanes
//! in the same order and are the portable fallback (and the reference in the unit tests).

use half::f16;

/// ggml type ids used here.
pub const GGML_F32: u32 = 0;
pub const GGML_F16: u32 = 1;
pub const GGML_Q4_0: u32 = 2;
pub const GGML_Q4_1: u32 = 3;
pub const GGML_Q8_0: u32 = 8;

pub const QK: usize = 32;

/// A weight format the fast path can multiply with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WType {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl WType {
    pub fn from_ggml(t: u32) -> Option<WType> {
        match t {
            GGML_Q4_0 => Some(WType::Q4_0),
            GGML_Q4_1 => Some(WType::Q4_1),
            GGML_Q8_0 => Some(WType::Q8_0),
            _ => None,
        }
    }
    /// Bytes per block of 32 weights.
    pub fn block_bytes(self) -> usize {
        match self {
            WType::Q4_0 => 18,
            WType::Q4_1 => 20,
            WType::Q8_0 => 34,
        }
    }
    /// The activation format it is paired with.
    pub fn act(self) -> AType {
        match self {
            WType::Q4_1 => AType::Q8_1,
            _ => AType::Q8_0,
        }
    }
}

/// Activation formats. Both are stored as 36-byte blocks here (`d`, `s`, 32 × i8); Q8_0 leaves `s` unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AType {
    Q8_0,
    Q8_1,
}

pub const ABLOCK: usize = 36;

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Quantize `x` (length a multiple of 32) into `out` (36 bytes per block).
pub fn quantize_act(x: &[f32], out: &mut Vec<u8>) {
    debug_assert_eq!(x.len() % QK, 0);
    let nb = x.len() / QK;
    out.clear();
    out.resize(nb * ABLOCK, 0);
    for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(ABLOCK)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (j, v) in xb.iter().enumerate() {
            let q = (v * id).round_ties_even() as i32;
            sum += q;
            ob[4 + j] = q as i8 as u8;
        }
        ob[0..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        ob[2..4].copy_from_slice(&f16::from_f32(d * sum as f32).to_bits().to_le_bytes());
    }
}

/// Pairwise sum of 8 accumulators in the order of llama.cpp's `hsum_float_8`.
#[inline]
fn hsum8(a: &[f32; 8]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Scalar reference dot product of one weight row (`w`, GGUF blocks) with a quantized activation row.
pub fn dot_scalar(t: WType, w: &[u8], a: &[u8]) -> f32 {
    let nb = a.len() / ABLOCK;
    let bb = t.block_bytes();
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for i in 0..nb {
        let wb = &w[i * bb..(i + 1) * bb];
        let ab = &a[i * ABLOCK..(i + 1) * ABLOCK];
        let mut qx = [0i32; 32];
        let d0 = f16_at(wb, 0);
        match t {
            WType::Q4_0 => {
                for j in 0..16 {
                    qx[j] = (wb[2 + j] & 15) as i32 - 8;
                    qx[j + 16] = (wb[2 + j] >> 4) as i32 - 8;
                }
            }
            WType::Q4_1 => {
                for j in 0..16 {
                    qx[j] = (wb[4 + j] & 15) as i32;
                    qx[j + 16] = (wb[4 + j] >> 4) as i32;
                }
                summs += f16_at(wb, 2) * f16_at(ab, 2);
            }
            WType::Q8_0 => {
                for j in 0..32 {
                    qx[j] = wb[2 + j] as i8 as i32;
                }
            }
        }
        let d = d0 * f16_at(ab, 0);
        for (l, acc) in acc.iter_mut().enumerate() {
            let mut s = 0i32;
            for k in 0..4 {
                s += qx[4 * l + k] * (ab[4 + 4 * l + k] as i8 as i32);
            }
            *acc = d.mul_add(s as f32, *acc);
        }
    }
    hsum8(&acc) + summs
}

/// Dequantize one row of GGUF blocks into f32.
pub fn dequant_row(t: WType, w: &[u8], out: &mut [f32]) {
    let bb = t.block_bytes();
    for (wb, ob) in w.chunks_exact(bb).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(wb, 0);
        match t {
            WType::Q4_0 => {
                for j in 0..16 {
                    ob[j] = ((wb[2 + j] & 15) as i32 - 8) as f32 * d;
                    ob[j + 16] = ((wb[2 + j] >> 4) as i32 - 8) as f32 * d;
                }
            }
            WType::Q4_1 => {
                let m = f16_at(wb, 2);
                for j in 0..16 {
                    ob[j] = ((wb[4 + j] & 15) as f32).mul_add(d, m);
                    ob[j + 16] = ((wb[4 + j] >> 4) as f32).mul_add(d, m);
                }
            }
            WType::Q8_0 => {
                for j in 0..32 {
                    ob[j] = (wb[2 + j] as i8 as f32) * d;
                }
            }
        }
    }
}

/// Whether the AVX2 kernels can run here.
pub fn have_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ONCE.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[r * out_stride + c] = dot(w row r0 + r, act row c)` for `rows` weight rows and all activation rows.
/// `w` holds whole weight rows of `row_bytes` each; `acts` holds activation rows of `act_bytes` each.
pub struct MatJob<'a> {
    pub t: WType,
    pub w: &'a [u8],
    pub row_bytes: usize,
    pub acts: &'a [u8],
    pub act_bytes: usize,
}

impl MatJob<'_> {
    /// Compute rows `r0..r1` of the product for every activation row `c`, writing `out[c][r - r0]`
    /// into `out` laid out as `n_act` rows of `out_stride`, starting at column `r0`.
    pub fn run(&self, r0: usize, r1: usize, out: &mut [f32], out_stride: usize) {
        let n_act = self.acts.len() / self.act_bytes;
        #[cfg(target_arch = "x86_64")]
        if have_avx2() {
            // SAFETY: the CPU features were checked above.
            unsafe { avx2::run(self, r0, r1, n_act, out, out_stride) };
            return;
        }
        for r in r0..r1 {
            let wr = &self.w[r * self.row_bytes..(r + 1) * self.row_bytes];
            for c in 0..n_act {
                let a = &self.acts[c * self.act_bytes..(c + 1) * self.act_bytes];
                out[c * out_stride + r - r0] = dot_scalar(self.t, wr, a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{ABLOCK, MatJob, WType};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(x: __m256) -> f32 {
        unsafe {
            let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
            r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            r = _mm_add_ss(r, _mm_movehdup_ps(r));
            _mm_cvtss_f32(r)
        }
    }

    /// Two f16 at `p` (little endian) as the low two f32 lanes.
    #[inline(always)]
    unsafe fn two_f16(p: *const u8) -> __m128 {
        unsafe { _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned())) }
    }

    /// 32 weights of block `p` as bytes (unsigned for Q4_1, signed otherwise), and its f16 scale pair.
    #[inline(always)]
    unsafe fn load_w(t: WType, p: *const u8) -> __m256i {
        unsafe {
            match t {
                WType::Q4_0 | WType::Q4_1 => {
                    let off = if t == WType::Q4_0 { 2 } else { 4 };
                    let q = _mm_loadu_si128(p.add(off) as *const __m128i);
                    let m = _mm_set1_epi8(15);
                    let lo = _mm_and_si128(q, m);
                    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
                    let v = _mm256_set_m128i(hi, lo);
                    if t == WType::Q4_0 {
                        _mm256_sub_epi8(v, _mm256_set1_epi8(8))
                    } else {
                        v
                    }
                }
                WType::Q8_0 => _mm256_loadu_si256(p.add(2) as *const __m256i),
            }
        }
    }

    /// 8 lanes of 4-product integer sums of weight bytes `x` and activation bytes `y`.
    #[inline(always)]
    unsafe fn lanes(t: WType, x: __m256i, y: __m256i) -> __m256 {
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let p16 = if t == WType::Q4_1 {
                _mm256_maddubs_epi16(x, y)
            } else {
                _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
            };
            _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones))
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn run(
        job: &MatJob,
        r0: usize,
        r1: usize,
        n_act: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        unsafe {
            match job.t {
                WType::Q4_0 => run_t::<0>(job, r0, r1, n_act, out, stride),
                WType::Q4_1 => run_t::<1>(job, r0, r1, n_act, out, stride),
                WType::Q8_0 => run_t::<2>(job, r0, r1, n_act, out, stride),
            }
        }
    }

    const fn wt(k: u8) -> WType {
        match k {
            0 => WType::Q4_0,
            1 => WType::Q4_1,
            _ => WType::Q8_0,
        }
    }

    /// `NR` weight rows times `NC` activation rows; all accumulators stay in registers. Each unpacked
    /// weight block is used `NC` times, each activation block `NR` times.
    #[inline(always)]
    unsafe fn micro<const K: u8, const NR: usize, const NC: usize>(
        wrows: [*const u8; NR],
        acts: [*const u8; NC],
        nb: usize,
    ) -> [[f32; NC]; NR] {
        unsafe {
            let t = wt(K);
            let bb = t.block_bytes();
            let mut acc = [[_mm256_setzero_ps(); NC]; NR];
            let mut summs = [[0f32; NC]; NR];
            let mut wp = wrows;
            let mut ap = acts;
            for _ in 0..nb {
                let mut ys = [_mm256_setzero_si256(); NC];
                let mut ads = [_mm_setzero_ps(); NC];
                for c in 0..NC {
                    ads[c] = two_f16(ap[c]);
                    ys[c] = _mm256_loadu_si256(ap[c].add(4) as *const __m256i);
                    ap[c] = ap[c].add(ABLOCK);
                }
                if NC == 1 {
                    // decode streams the weights once: fetch the next rows' blocks ahead
                    for p in wp.iter() {
                        _mm_prefetch(p.wrapping_add(NR * nb * bb) as *const i8, _MM_HINT_T0);
                    }
                }
                for r in 0..NR {
                    let x = load_w(t, wp[r]);
                    let wdm = two_f16(wp[r]);
                    wp[r] = wp[r].add(bb);
                    for c in 0..NC {
                        let prod = _mm_mul_ps(wdm, ads[c]);
                        if K == 1 {
                            summs[r][c] += _mm_cvtss_f32(_mm_movehdup_ps(prod));
                        }
                        let d = _mm256_broadcastss_ps(prod);
                        acc[r][c] = _mm256_fmadd_ps(d, lanes(t, x, ys[c]), acc[r][c]);
                    }
                }
            }
            let mut out = [[0f32; NC]; NR];
            for r in 0..NR {
                for c in 0..NC {
                    out[r][c] = hsum(acc[r][c]) + summs[r][c];
                }
            }
            out
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<const K: u8, const NR: usize, const NC: usize>(
        job: &MatJob,
        r: usize,
        c: usize,
        r0: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        let nb = job.act_bytes / ABLOCK;
        let w = job.w.as_ptr();
        let a = job.acts.as_ptr();
        let wrows: [*const u8; NR] =
            std::array::from_fn(|k| w.wrapping_add((r + k) * job.row_bytes));
        let arows: [*const u8; NC] =
            std::array::from_fn(|k| a.wrapping_add((c + k) * job.act_bytes));
        // SAFETY: the caller keeps r + NR <= rows and c + NC <= n_act.
        let v = unsafe { micro::<K, NR, NC>(wrows, arows, nb) };
        for (i, row) in v.iter().enumerate() {
            for (j, x) in row.iter().enumerate() {
                out[(c + j) * stride + r + i - r0] = *x;
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_t<const K: u8>(
        job: &MatJob,
        r0: usize,
        r1: usize,
        n_act: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        unsafe {
            let mut c = 0;
            while c + 4 <= n_act {
                let mut r = r0;
                while r + 2 <= r1 {
                    block::<K, 2, 4>(job, r, c, r0, out, stride);
                    r += 2;
                }
                if r < r1 {
                    block::<K, 1, 4>(job, r, c, r0, out, stride);
                }
                c += 4;
            }
            while c < n_act {
                let mut r = r0;
                while r + 4 <= r1 {
                    block::<K, 4, 1>(job, r, c, r0, out, stride);
                    r += 4;
                }
                while r < r1 {
                    block::<K, 1, 1>(job, r, c, r0, out, stride);
                    r += 1;
                }
                c += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    fn random_weights(t: WType, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let mut w = Vec::new();
        for _ in 0..rows * cols / QK {
            let mut b = vec![0u8; t.block_bytes()];
            b[0..2].copy_from_slice(
                &f16::from_f32(0.01 + lcg(seed).abs() * 0.02)
                    .to_bits()
                    .to_le_bytes(),
            );
            let off = match t {
                WType::Q4_1 => {
                    b[2..4]
                        .copy_from_slice(&f16::from_f32(lcg(seed) * 0.1).to_bits().to_le_bytes());
                    4
                }
                _ => 2,
            };
            for v in b[off..].iter_mut() {
                *v = (lcg(seed) * 127.0) as i8 as u8;
            }
            w.extend_from_slice(&b);
        }
        w
    }

    #[test]
    fn simd_equals_scalar_bit_for_bit() {
        let mut seed = 7;
        for (t, n) in [WType::Q4_0, WType::Q4_1, WType::Q8_0]
            .into_iter()
            .flat_map(|t| [(t, 1), (t, 6)])
        {
            let (rows, cols) = (13, 96);
            let w = random_weights(t, rows, cols, &mut seed);
            let x: Vec<f32> = (0..cols * n).map(|_| lcg(&mut seed) * 3.0).collect();
            let mut acts = Vec::new();
            let mut q = Vec::new();
            for row in x.chunks(cols) {
                quantize_act(row, &mut q);
                acts.extend_from_slice(&q);
            }
            let job = MatJob {
                t,
                w: &w,
                row_bytes: cols / QK * t.block_bytes(),
                acts: &acts,
                act_bytes: cols / QK * ABLOCK,
            };
            let mut out = vec![0f32; n * rows];
            job.run(0, rows, &mut out, rows);
            for c in 0..n {
                for r in 0..rows {
                    let wr = &w[r * job.row_bytes..(r + 1) * job.row_bytes];
                    let a = &acts[c * job.act_bytes..(c + 1) * job.act_bytes];
                    assert_eq!(
                        out[c * rows + r].to_bits(),
                        dot_scalar(t, wr, a).to_bits(),
                        "{t:?}"
                    );
                }
            }
            // and the integer dot is within the activation rounding bound of the f32 dot
            let mut deq = vec![0f32; cols];
            dequant_row(t, &w[..job.row_bytes], &mut deq);
            let exact: f32 = deq.iter().zip(&x[..cols]).map(|(a, b)| a * b).sum();
            let bound: f32 = deq
                .chunks(QK)
                .zip(x[..cols].chunks(QK))
                .map(|(wb, xb)| {
                    let d = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                    wb.iter().map(|w| w.abs() * d * 0.5).sum::<f32>()
                })
                .sum();
            assert!(
                (exact - out[0]).abs() <= bound * 1.01 + 1e-3,
                "{t:?} n={n}: {exact} vs {} (bound {bound})",
                out[0]
            );
        }
    }
}
