//! GGML block formats and the integer dot products of the llama fast path.
//!
//! Weights stay in their GGUF block layout. A matrix product first quantizes each activation row once,
//! block by block (32 values), to the format llama.cpp pairs with the weight type: Q8_1 for Q4_1 weights
//! (scale `d` and `s = d * sum(q)`), Q8_0 for Q4_0 and Q8_0 weights. Every block dot product is then an
//! exact integer sum of 32 products, kept as 8 lanes of 4 products each, converted to f32 and multiplied
//! by the product of the two block scales into 8 f32 accumulators (fused multiply-add); the accumulators
//! are summed pairwise at the end (lanes 0+4, 1+5, ..., then halves), and for Q4_1 the block minimum
//! contributes `m * s` (a product, then a sum, in block order) in a separate scalar sum added last. That
//! is the operation order of llama.cpp's x86 `vec_dot_q4_1_q8_1`, so for the same inputs the results are
//! the same floats. Scales are f16 in both formats (the activation scales are rounded to f16 as llama.cpp
//! stores them, then kept here as f32 so the kernels load them without conversion); `d0 * d1` of two f16
//! values is exact in f32.
//!
//! Quantizing a block: `amax = max |x|`, `d = amax / 127`, `q = round_half_even(x * (127 / amax))`.
//!
//! Activation layout: rows are quantized in groups of `G` rows (1 for a single token, 4 for a batch;
//! the last group padded with zero rows). Per group and block: `G` scales `d` (f32), `G` sums `s` (f32),
//! then the `G` rows' 32 quants each, so one 16-byte load gives the 4 sums and one broadcast each scale.
//!
//! Kernels (AVX2 with FMA and F16C, chosen at run time; the scalar kernel computes the same lanes in the
//! same order, is the portable fallback and the reference in the unit tests): a single token runs 4
//! weight rows at a time against the one activation row (each activation block is loaded once for the 4
//! rows; decode is bound by reading the weights); a batch runs a tile of weight rows times one group of
//! 4 activation rows with every accumulator in a register (4 × 4 where AVX-512VL gives 32 vector
//! registers, 2 × 4 on plain AVX2), so each unpacked weight block serves 4 tokens and each activation
//! block 2-4 weight rows. The tile loops are unrolled by macro, not left to the optimizer, so the
//! accumulators stay in registers even in the lightly optimized dev profile.

use half::f16;

/// ggml type ids used here.
pub const GGML_F32: u32 = 0;
pub const GGML_F16: u32 = 1;
pub const GGML_Q4_0: u32 = 2;
pub const GGML_Q4_1: u32 = 3;
pub const GGML_Q5_0: u32 = 6;
pub const GGML_Q8_0: u32 = 8;
pub const GGML_Q4_K: u32 = 12;
pub const GGML_Q6_K: u32 = 14;

pub const QK: usize = 32;
/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// A weight format the fast path can multiply with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WType {
    Q4_0,
    Q4_1,
    Q8_0,
    Q5_0,
    Q4K,
    Q6K,
    /// Q5_0 repacked at load, 16 rows interleaved (`repack`); never in a file.
    Q5_0R,
}

impl WType {
    pub fn from_ggml(t: u32) -> Option<WType> {
        match t {
            GGML_Q4_0 => Some(WType::Q4_0),
            GGML_Q4_1 => Some(WType::Q4_1),
            GGML_Q8_0 => Some(WType::Q8_0),
            GGML_Q5_0 => Some(WType::Q5_0),
            GGML_Q4_K => Some(WType::Q4K),
            GGML_Q6_K => Some(WType::Q6K),
            _ => None,
        }
    }
    /// Bytes per block (`block_len` weights).
    pub fn block_bytes(self) -> usize {
        match self {
            WType::Q4_0 => 18,
            WType::Q4_1 => 20,
            WType::Q8_0 => 34,
            WType::Q5_0 | WType::Q5_0R => 22,
            WType::Q4K => 144,
            WType::Q6K => 210,
        }
    }
    /// Weights per block: 32, or 256 for the K-quants.
    pub fn block_len(self) -> usize {
        if self.is_k() { QK_K } else { QK }
    }
    /// A K-quant, multiplied with Q8_K activations (the others take Q8_0/Q8_1 ones).
    pub fn is_k(self) -> bool {
        matches!(self, WType::Q4K | WType::Q6K)
    }
}

/// Bytes of one row's block in the activation layout: `d` and `s` (f32), 32 quants.
pub const ABLOCK: usize = 40;

#[inline]
pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

#[inline]
fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Quantized activation rows (see the module docs for the layout). Reused across calls.
#[derive(Default)]
pub struct Acts {
    pub data: Vec<u8>,
    /// Rows quantized (without the padding).
    pub n: usize,
    /// Rows per group: 1 or 4.
    pub g: usize,
    /// Blocks per row.
    pub nb: usize,
    /// The same rows as Q8_K, for K-quant weights (filled by `quantize_for` when one needs it).
    pub k: ActsK,
    /// The Q8_0 rows repacked for the batch GEMM (`quantize_for`, batches of Q5_0/Q8_0 weights).
    pub packed: super::gemm::Packed,
    /// The Q8_K rows repacked for the batch GEMM (`quantize_for`, batches of Q4_K/Q6_K weights).
    pub packed_k: super::gemm::Packed,
}

/// Activation rows quantized to Q8_K (llama.cpp's `quantize_row_q8_K`): per 256 values an f32 scale,
/// 256 quants and the 16 sums of each 16 quants. Rows are contiguous.
#[derive(Default)]
pub struct ActsK {
    pub d: Vec<f32>,
    pub bsums: Vec<i16>,
    pub qs: Vec<i8>,
    /// Rows quantized.
    pub n: usize,
    /// Super-blocks per row.
    pub nb: usize,
}

impl ActsK {
    /// Quantize the `d`-long rows of `x` (`d` a multiple of 256).
    pub fn quantize(&mut self, x: &[f32], d: usize) {
        debug_assert!(d.is_multiple_of(QK_K) && x.len().is_multiple_of(d));
        let n = x.len() / d;
        let nb = d / QK_K;
        self.n = n;
        self.nb = nb;
        self.d.clear();
        self.d.resize(n * nb, 0.0);
        self.bsums.clear();
        self.bsums.resize(n * nb * 16, 0);
        self.qs.clear();
        self.qs.resize(n * d, 0);
        for (b, xb) in x.chunks_exact(QK_K).enumerate() {
            // the first value of the largest magnitude, with its sign
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in xb {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                continue;
            }
            let iscale = -127.0 / max;
            let q = &mut self.qs[b * QK_K..(b + 1) * QK_K];
            for (o, v) in q.iter_mut().zip(xb) {
                *o = ((iscale * v).round_ties_even() as i32).min(127) as i8;
            }
            for (j, s) in self.bsums[b * 16..(b + 1) * 16].iter_mut().enumerate() {
                *s = q[16 * j..16 * (j + 1)].iter().map(|&v| v as i16).sum();
            }
            self.d[b] = 1.0 / iscale;
        }
    }
}

impl Acts {
    /// Quantize the rows of `x` for weights of the given types: to Q8_0/Q8_1 blocks if any is not a
    /// K-quant, to Q8_K if any is.
    pub fn quantize_for(&mut self, x: &[f32], d: usize, types: &[WType]) {
        if types.iter().any(|t| !t.is_k()) {
            self.quantize(x, d);
        }
        if types.iter().any(|t| t.is_k()) {
            self.k.quantize(x, d);
        }
        self.n = x.len() / d;
        self.packed.n = 0;
        self.packed_k.n = 0;
        let repacked = types.contains(&WType::Q5_0R);
        if (self.n >= super::gemm::MIN_TOKENS || (repacked && self.n > 1))
            && super::gemm::available()
        {
            if types.iter().any(|t| !t.is_k() && super::gemm::handles(*t)) {
                let mut p = std::mem::take(&mut self.packed);
                p.pack_q8_0(self);
                self.packed = p;
            }
            if types.iter().any(|t| t.is_k()) {
                self.packed_k.pack_q8_k(&self.k);
            }
        }
    }

    /// Quantize the `d`-long rows of `x` (`d` a multiple of 32), in groups of 4 rows when there is more
    /// than one row.
    pub fn quantize(&mut self, x: &[f32], d: usize) {
        debug_assert!(d.is_multiple_of(QK) && x.len().is_multiple_of(d));
        let n = x.len() / d;
        self.packed.n = 0;
        self.packed_k.n = 0;
        let g = if n > 1 { 4 } else { 1 };
        let nb = d / QK;
        self.n = n;
        self.g = g;
        self.nb = nb;
        self.data.clear();
        self.data.resize(n.div_ceil(g) * nb * g * ABLOCK, 0);
        for (c, row) in x.chunks_exact(d).enumerate() {
            for (b, xb) in row.chunks_exact(QK).enumerate() {
                let base = ((c / g) * nb + b) * g * ABLOCK;
                let lane = c % g;
                let (dv, sv) = quantize_block(
                    xb,
                    &mut self.data[base + 8 * g + QK * lane..base + 8 * g + QK * (lane + 1)],
                );
                self.data[base + 4 * lane..base + 4 * lane + 4].copy_from_slice(&dv.to_le_bytes());
                self.data[base + 4 * (g + lane)..base + 4 * (g + lane) + 4]
                    .copy_from_slice(&sv.to_le_bytes());
            }
        }
    }

    /// Bytes of one group's blocks.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the x86-64 kernels only
    fn group_bytes(&self) -> usize {
        self.nb * self.g * ABLOCK
    }

    /// `(d, s, quants)` of row `c`, block `b`.
    pub(super) fn block(&self, c: usize, b: usize) -> (f32, f32, &[u8]) {
        let (g, lane) = (self.g, c % self.g);
        let base = ((c / g) * self.nb + b) * g * ABLOCK;
        let q = base + 8 * g + QK * lane;
        (
            f32_at(&self.data, base + 4 * lane),
            f32_at(&self.data, base + 4 * (g + lane)),
            &self.data[q..q + QK],
        )
    }
}

/// One block as llama.cpp's `quantize_row_q8_1` does it: returns `d` and `s = d * sum(q)`, both rounded
/// to f16 (as stored there) and widened back to f32.
fn quantize_block(xb: &[f32], q: &mut [u8]) -> (f32, f32) {
    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (o, v) in q.iter_mut().zip(xb) {
        let v = (v * id).round_ties_even() as i32;
        sum += v;
        *o = v as i8 as u8;
    }
    (
        f16::from_f32(d).to_f32(),
        f16::from_f32(d * sum as f32).to_f32(),
    )
}

/// Pairwise sum of 8 accumulators in the order of llama.cpp's `hsum_float_8`.
#[inline]
fn hsum8(a: &[f32; 8]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Scalar reference dot product of one weight row (`w`, GGUF blocks) with activation row `c`.
pub fn dot_scalar(t: WType, w: &[u8], acts: &Acts, c: usize) -> f32 {
    let bb = t.block_bytes();
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for i in 0..acts.nb {
        let wb = &w[i * bb..(i + 1) * bb];
        let (da, sa, qa) = acts.block(c, i);
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
                summs += f16_at(wb, 2) * sa;
            }
            WType::Q8_0 => {
                for j in 0..32 {
                    qx[j] = wb[2 + j] as i8 as i32;
                }
            }
            WType::Q5_0R => unreachable!("repacked rows go through `repack`"),
            WType::Q5_0 => q5_0_values(wb, &mut qx),
            WType::Q4K | WType::Q6K => unreachable!("K-quants take `dot_k_scalar`"),
        }
        let d = d0 * da;
        for (l, acc) in acc.iter_mut().enumerate() {
            let mut s = 0i32;
            for k in 0..4 {
                s += qx[4 * l + k] * (qa[4 * l + k] as i8 as i32);
            }
            *acc = d.mul_add(s as f32, *acc);
        }
    }
    hsum8(&acc) + summs
}

/// The 32 signed values (-16..15) of a Q5_0 block: 4 low bits from the nibbles, the fifth from `qh`.
pub(super) fn q5_0_values(wb: &[u8], qx: &mut [i32; 32]) {
    let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
    for j in 0..16 {
        let lo = (wb[6 + j] & 15) as u32 | ((qh >> j) & 1) << 4;
        let hi = (wb[6 + j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        qx[j] = lo as i32 - 16;
        qx[j + 16] = hi as i32 - 16;
    }
}

/// The 6-bit scales and minimums of a Q4_K super-block's 8 sub-blocks.
pub(super) fn q4k_scales(sc: &[u8]) -> ([i32; 8], [i32; 8]) {
    let (mut d, mut m) = ([0i32; 8], [0i32; 8]);
    for j in 0..8 {
        if j < 4 {
            d[j] = (sc[j] & 63) as i32;
            m[j] = (sc[j + 4] & 63) as i32;
        } else {
            d[j] = ((sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4)) as i32;
            m[j] = ((sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)) as i32;
        }
    }
    (d, m)
}

/// The 256 unsigned 6-bit values (0..63, stored offset by 32) of a Q6_K super-block, in order.
pub(super) fn q6k_values(wb: &[u8], q: &mut [i32; QK_K]) {
    let (ql, qh) = (&wb[..128], &wb[128..192]);
    for h in 0..2 {
        let (ql, qh, q) = (&ql[64 * h..], &qh[32 * h..], &mut q[128 * h..]);
        for l in 0..32 {
            q[l] = (ql[l] & 15) as i32 | ((qh[l] & 3) as i32) << 4;
            q[l + 32] = (ql[l + 32] & 15) as i32 | (((qh[l] >> 2) & 3) as i32) << 4;
            q[l + 64] = (ql[l] >> 4) as i32 | (((qh[l] >> 4) & 3) as i32) << 4;
            q[l + 96] = (ql[l + 32] >> 4) as i32 | (((qh[l] >> 6) & 3) as i32) << 4;
        }
    }
}

/// Scalar reference dot product of one K-quant weight row with Q8_K activation row `c`, in the order
/// of llama.cpp's x86 `vec_dot_q4_K_q8_K` / `vec_dot_q6_K_q8_K`: per super-block an exact integer sum
/// in each of 8 lanes (lane `k` holds the products of bytes `4k..4k+4` of every 32-value chunk, times
/// their sub-block scales; for Q6_K minus `32 * scale * bsum` of sub-blocks `2k`, `2k+1`), converted
/// to f32 and fused-multiply-added with `d_act * d_weight` into 8 accumulators summed pairwise at the
/// end; Q4_K's minimums go through a separate 4-lane accumulator (`-d_act * dmin` times the integer
/// sums of `min * bsum` over sub-block pairs), reduced pairwise and added last.
pub fn dot_k_scalar(t: WType, w: &[u8], acts: &ActsK, c: usize) -> f32 {
    let bb = t.block_bytes();
    let mut acc = [0f32; 8];
    let mut acc_m = [0f32; 4];
    for i in 0..acts.nb {
        let wb = &w[i * bb..(i + 1) * bb];
        let blk = c * acts.nb + i;
        let ad = acts.d[blk];
        let bs = &acts.bsums[16 * blk..16 * (blk + 1)];
        let q8 = &acts.qs[QK_K * blk..QK_K * (blk + 1)];
        let mut sumi = [0i32; 8];
        match t {
            WType::Q4K => {
                let d = ad * f16_at(wb, 0);
                let dmin = -ad * f16_at(wb, 2);
                let (sc, mn) = q4k_scales(&wb[4..16]);
                for (l, a) in acc_m.iter_mut().enumerate() {
                    let s0 = bs[4 * l] as i32 + bs[4 * l + 1] as i32;
                    let s1 = bs[4 * l + 2] as i32 + bs[4 * l + 3] as i32;
                    let prod = mn[2 * l] * s0 + mn[2 * l + 1] * s1;
                    *a = dmin.mul_add(prod as f32, *a);
                }
                let qs = &wb[16..144];
                for j in 0..4 {
                    for (k, s) in sumi.iter_mut().enumerate() {
                        let (mut lo, mut hi) = (0i32, 0i32);
                        for b in 4 * k..4 * k + 4 {
                            let q = qs[32 * j + b];
                            lo += (q & 15) as i32 * q8[64 * j + b] as i32;
                            hi += (q >> 4) as i32 * q8[64 * j + 32 + b] as i32;
                        }
                        *s += sc[2 * j] * lo + sc[2 * j + 1] * hi;
                    }
                }
                for (a, s) in acc.iter_mut().zip(sumi) {
                    *a = d.mul_add(s as f32, *a);
                }
            }
            WType::Q6K => {
                let d = ad * f16_at(wb, 208);
                let sc: Vec<i32> = wb[192..208].iter().map(|&v| v as i8 as i32).collect();
                let mut q = [0i32; QK_K];
                q6k_values(wb, &mut q);
                for ch in 0..8 {
                    for (k, s) in sumi.iter_mut().enumerate() {
                        let mut p = 0i32;
                        for b in 4 * k..4 * k + 4 {
                            p += q[32 * ch + b] * q8[32 * ch + b] as i32;
                        }
                        *s += sc[2 * ch + k / 4] * p;
                    }
                }
                for (k, s) in sumi.iter_mut().enumerate() {
                    *s -=
                        32 * (bs[2 * k] as i32 * sc[2 * k] + bs[2 * k + 1] as i32 * sc[2 * k + 1]);
                }
                for (a, s) in acc.iter_mut().zip(sumi) {
                    *a = d.mul_add(s as f32, *a);
                }
            }
            _ => unreachable!("not a K-quant"),
        }
    }
    hsum8(&acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
}

/// Dequantize one row of GGUF blocks into f32.
pub fn dequant_row(t: WType, w: &[u8], out: &mut [f32]) {
    let bb = t.block_bytes();
    if t.is_k() {
        for (wb, ob) in w.chunks_exact(bb).zip(out.chunks_exact_mut(QK_K)) {
            dequant_k(t, wb, ob);
        }
        return;
    }
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
            WType::Q5_0 => {
                let mut q = [0i32; 32];
                q5_0_values(wb, &mut q);
                for (o, v) in ob.iter_mut().zip(q) {
                    *o = v as f32 * d;
                }
            }
            WType::Q4K | WType::Q6K => unreachable!("handled above"),
            WType::Q5_0R => unreachable!("repacked rows are read with `repack::row`"),
        }
    }
}

/// One K-quant super-block as llama.cpp's `dequantize_row_q4_K` / `_q6_K` compute it.
fn dequant_k(t: WType, wb: &[u8], ob: &mut [f32]) {
    match t {
        WType::Q4K => {
            let (d, dmin) = (f16_at(wb, 0), f16_at(wb, 2));
            let (sc, mn) = q4k_scales(&wb[4..16]);
            let qs = &wb[16..144];
            for j in 0..4 {
                let (d1, m1) = (d * sc[2 * j] as f32, dmin * mn[2 * j] as f32);
                let (d2, m2) = (d * sc[2 * j + 1] as f32, dmin * mn[2 * j + 1] as f32);
                for l in 0..32 {
                    let q = qs[32 * j + l];
                    ob[64 * j + l] = d1 * (q & 15) as f32 - m1;
                    ob[64 * j + 32 + l] = d2 * (q >> 4) as f32 - m2;
                }
            }
        }
        WType::Q6K => {
            let d = f16_at(wb, 208);
            let mut q = [0i32; QK_K];
            q6k_values(wb, &mut q);
            for (i, (o, v)) in ob.iter_mut().zip(q).enumerate() {
                let sc = wb[192 + i / 16] as i8 as f32;
                *o = d * sc * (v - 32) as f32;
            }
        }
        _ => unreachable!("not a K-quant"),
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

/// Whether AVX-512VL/BW is there too (the same kernels then get 32 vector registers).
#[cfg(target_arch = "x86_64")]
pub(super) fn have_avx512() -> bool {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ONCE.get_or_init(|| {
        have_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bw")
    })
}

/// Whether AVX-512 VNNI is there too (`vpdpbusd` for the integer dots).
#[cfg(target_arch = "x86_64")]
pub(super) fn have_vnni() -> bool {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ONCE.get_or_init(|| have_avx512() && is_x86_feature_detected!("avx512vnni"))
}

/// A weight matrix (`row_bytes` per row, GGUF blocks) times quantized activation rows.
pub struct MatJob<'a> {
    pub t: WType,
    pub w: &'a [u8],
    pub row_bytes: usize,
    pub acts: &'a Acts,
}

/// The kernel families, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    Avx2,
    Avx512,
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel this CPU can run.
    pub fn available() -> Vec<Kernel> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut v = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if have_avx2() {
                v.push(Kernel::Avx2);
            }
            if have_avx512() {
                v.push(Kernel::Avx512);
            }
            if have_vnni() {
                v.push(Kernel::Avx512Vnni);
            }
        }
        v
    }

    /// The fastest kernel this CPU can run.
    pub fn best() -> Kernel {
        static ONCE: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *ONCE.get_or_init(|| *Kernel::available().last().unwrap_or(&Kernel::Scalar))
    }
}

impl MatJob<'_> {
    /// Rows `r0..r1` of the product for every activation row `c`: `out[c * out_stride + r - r0]`.
    pub fn run(&self, r0: usize, r1: usize, out: &mut [f32], out_stride: usize) {
        self.run_with(Kernel::best(), r0, r1, out, out_stride)
    }

    /// `run` with a given kernel (panics if the CPU lacks it).
    pub fn run_with(&self, k: Kernel, r0: usize, r1: usize, out: &mut [f32], out_stride: usize) {
        assert!(self.acts.n == 0 || (self.acts.n - 1) * out_stride + (r1 - r0) <= out.len());
        // SAFETY: the output bounds were asserted just above.
        unsafe { self.run_raw(k, r0, r1, out.as_mut_ptr(), out_stride) }
    }

    /// `run_with` into raw memory, so that threads can fill disjoint rows of one output in place.
    ///
    /// # Safety
    /// `out[c * out_stride + r - r0]` must be valid for writes for every activation row `c` and
    /// `r0 <= r < r1`, and nothing else may access those elements during the call.
    pub unsafe fn run_raw(
        &self,
        k: Kernel,
        r0: usize,
        r1: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        assert!(r0 <= r1 && r1 * self.row_bytes <= self.w.len());
        assert!(Kernel::available().contains(&k), "{k:?} not available");
        if self.t == WType::Q5_0R {
            // interleaved rows: one token through `repack`'s kernel, batches through the GEMM
            if self.acts.n > 1 && self.acts.packed.n == self.acts.n {
                // SAFETY: the caller's promise, as for every kernel here.
                unsafe { super::gemm::run(self, &self.acts.packed, r0, r1, out, out_stride) };
            } else {
                let cols = self.row_bytes / self.t.block_bytes() * QK;
                // SAFETY: as above.
                unsafe { super::repack::run(self.w, cols, self.acts, r0, r1, out, out_stride) };
            }
            return;
        }
        if k == Kernel::Avx512Vnni && super::gemm::handles(self.t) {
            let p = if self.t.is_k() {
                &self.acts.packed_k
            } else {
                &self.acts.packed
            };
            if p.n > 0 && p.n == self.acts.n {
                // SAFETY: the caller's promise, as for every kernel here.
                unsafe { super::gemm::run(self, p, r0, r1, out, out_stride) };
                return;
            }
        }
        if self.t.is_k() {
            let ak = &self.acts.k;
            assert_eq!(ak.nb * self.t.block_bytes(), self.row_bytes);
            assert!(ak.d.len() >= ak.n * ak.nb && ak.qs.len() >= ak.n * ak.nb * QK_K);
            #[cfg(target_arch = "x86_64")]
            if k != Kernel::Scalar {
                // SAFETY: AVX2 is there (every non-scalar kernel implies it); bounds as above.
                unsafe { x86::run_k_avx2(self, r0, r1, out, out_stride) };
                return;
            }
            for r in r0..r1 {
                let wr = &self.w[r * self.row_bytes..(r + 1) * self.row_bytes];
                for c in 0..ak.n {
                    // SAFETY: the caller's promise.
                    unsafe { *out.add(c * out_stride + r - r0) = dot_k_scalar(self.t, wr, ak, c) };
                }
            }
            return;
        }
        assert_eq!(self.acts.nb * self.t.block_bytes(), self.row_bytes);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU features were checked; the weight bounds were asserted above, the output's
        // are the caller's promise.
        unsafe {
            match k {
                Kernel::Scalar => {}
                Kernel::Avx2 => return x86::run_avx2(self, r0, r1, out, out_stride),
                Kernel::Avx512 => return x86::run_avx512(self, r0, r1, out, out_stride),
                Kernel::Avx512Vnni => return x86::run_vnni(self, r0, r1, out, out_stride),
            }
        }
        for r in r0..r1 {
            let wr = &self.w[r * self.row_bytes..(r + 1) * self.row_bytes];
            for c in 0..self.acts.n {
                // SAFETY: the caller's promise.
                unsafe { *out.add(c * out_stride + r - r0) = dot_scalar(self.t, wr, self.acts, c) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{ABLOCK, ActsK, MatJob, QK_K, WType, q4k_scales};
    use std::arch::x86_64::*;

    /// Repeat `$body` with `$i` bound to each constant in turn (the unrolling is ours, not the
    /// optimizer's, so arrays indexed by `$i` become registers at any optimization level).
    macro_rules! unroll {
        ($i:ident in [$($n:literal),*] $body:block) => {
            $( { const $i: usize = $n; $body } )*
        };
    }

    #[inline(always)]
    unsafe fn hsum(x: __m256) -> f32 {
        unsafe {
            let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
            r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            r = _mm_add_ss(r, _mm_movehdup_ps(r));
            _mm_cvtss_f32(r)
        }
    }

    /// The two f16 at `p` (a weight block's `d` and, for Q4_1, `m`) as the low two f32 lanes.
    #[inline(always)]
    unsafe fn two_f16(p: *const u8) -> __m128 {
        unsafe { _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned())) }
    }

    const fn wt(k: u8) -> WType {
        match k {
            0 => WType::Q4_0,
            1 => WType::Q4_1,
            3 => WType::Q5_0,
            _ => WType::Q8_0,
        }
    }

    /// 32 weights of block `p` as bytes (unsigned for Q4_1, signed otherwise).
    #[inline(always)]
    unsafe fn load_w<const K: u8>(p: *const u8) -> __m256i {
        unsafe {
            match wt(K) {
                WType::Q4_0 | WType::Q4_1 => {
                    let off = if K == 0 { 2 } else { 4 };
                    let q = _mm_lddqu_si128(p.wrapping_add(off) as *const __m128i);
                    let m = _mm_set1_epi8(15);
                    let lo = _mm_and_si128(q, m);
                    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
                    let v = _mm256_set_m128i(hi, lo);
                    if K == 0 {
                        _mm256_sub_epi8(v, _mm256_set1_epi8(8))
                    } else {
                        v
                    }
                }
                WType::Q8_0 => _mm256_lddqu_si256(p.wrapping_add(2) as *const __m256i),
                WType::Q5_0 => {
                    // nibbles as Q4_0, then 0xF0 (-16) or'ed into each byte whose fifth bit is clear
                    let q = _mm_lddqu_si128(p.wrapping_add(6) as *const __m128i);
                    let m = _mm_set1_epi8(15);
                    let lo = _mm_and_si128(q, m);
                    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
                    let v = _mm256_set_m128i(hi, lo);
                    let qh = (p.wrapping_add(2) as *const i32).read_unaligned();
                    let spread = _mm256_shuffle_epi8(
                        _mm256_set1_epi32(qh),
                        _mm256_setr_epi64x(
                            0,
                            0x0101_0101_0101_0101,
                            0x0202_0202_0202_0202,
                            0x0303_0303_0303_0303,
                        ),
                    );
                    let set = _mm256_cmpeq_epi8(
                        _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe)),
                        _mm256_set1_epi64x(-1),
                    );
                    _mm256_or_si256(v, _mm256_andnot_si256(set, _mm256_set1_epi8(-16)))
                }
                WType::Q4K | WType::Q6K => unreachable!("K-quants have their own kernels"),
                WType::Q5_0R => unreachable!("repacked rows go through `repack`"),
            }
        }
    }

    // Loads go through `lddqu` and masked loads: the plain `loadu` intrinsics copy through a stack slot
    // with a checked `copy_nonoverlapping`, which the dev profile does not optimize away.

    /// 8 lanes of 4-product integer sums of weight bytes `x` and activation bytes `y`, as f32 (`V`: with
    /// AVX-512 VNNI's `vpdpbusd`, one instruction for the same integers).
    #[inline(always)]
    unsafe fn lanes<const K: u8, const V: bool>(x: __m256i, y: __m256i) -> __m256 {
        unsafe {
            let (x, y) = if K == 1 {
                (x, y)
            } else {
                (_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
            };
            if V {
                _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y))
            } else {
                let p16 = _mm256_maddubs_epi16(x, y);
                _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
            }
        }
    }

    /// (`d`, `s`) of an activation block as the low two lanes.
    #[inline(always)]
    unsafe fn two_f32(p: *const u8) -> __m128 {
        unsafe { _mm_castsi128_ps(_mm_loadl_epi64(p as *const __m128i)) }
    }

    /// `$nr` weight rows (from `w`, `row_bytes` apart) times one activation row (`a`, group size 1).
    /// Pointers advance by wrapping adds: no per-block index arithmetic (checked in dev builds).
    macro_rules! row_tile {
        ($name:ident, $nr:literal, $rows:tt) => {
            #[inline(always)]
            unsafe fn $name<const K: u8, const V: bool>(
                w: *const u8,
                row_bytes: usize,
                a: *const u8,
                nb: usize,
            ) -> [f32; $nr] {
                unsafe {
                    let bb = wt(K).block_bytes();
                    let mut acc = [_mm256_setzero_ps(); $nr];
                    let mut summs = [_mm_setzero_ps(); $nr];
                    let mut wp = [w; $nr];
                    unroll!(R in $rows {
                        wp[R] = w.wrapping_add(R * row_bytes);
                    });
                    // the next tile's weights, one slice per block step
                    let mut pf = w.wrapping_add($nr * row_bytes);
                    let mut ap = a;
                    for _ in 0..nb {
                        let ads = two_f32(ap);
                        let y = _mm256_lddqu_si256(ap.wrapping_add(8) as *const __m256i);
                        ap = ap.wrapping_add(ABLOCK);
                        _mm_prefetch(pf as *const i8, _MM_HINT_T0);
                        pf = pf.wrapping_add($nr * bb);
                        unroll!(R in $rows {
                            let p = wp[R];
                            wp[R] = p.wrapping_add(bb);
                            let x = load_w::<K>(p);
                            let prod = _mm_mul_ps(two_f16(p), ads);
                            if K == 1 {
                                summs[R] = _mm_add_ss(summs[R], _mm_movehdup_ps(prod));
                            }
                            acc[R] = _mm256_fmadd_ps(
                                _mm256_broadcastss_ps(prod),
                                lanes::<K, V>(x, y),
                                acc[R],
                            );
                        });
                    }
                    let mut out = [0f32; $nr];
                    unroll!(R in $rows {
                        out[R] = hsum(acc[R]) + _mm_cvtss_f32(summs[R]);
                    });
                    out
                }
            }
        };
    }

    row_tile!(row4, 4, [0, 1, 2, 3]);
    row_tile!(row1, 1, [0]);

    /// `$nr` weight rows times one group of 4 activation rows; 4 × `$nr` accumulators.
    macro_rules! batch_tile {
        ($name:ident, $nr:literal, $rows:tt) => {
            #[inline(always)]
            unsafe fn $name<const K: u8, const V: bool>(
                w: *const u8,
                row_bytes: usize,
                a: *const u8,
                nb: usize,
            ) -> [[f32; 4]; $nr] {
                unsafe {
                    let bb = wt(K).block_bytes();
                    let mut acc = [[_mm256_setzero_ps(); 4]; $nr];
                    let mut summs = [_mm_setzero_ps(); $nr];
                    let mut wp = [w; $nr];
                    unroll!(R in $rows {
                        wp[R] = w.wrapping_add(R * row_bytes);
                    });
                    let mut ap = a;
                    for _ in 0..nb {
                        let s4 = _mm_castsi128_ps(_mm_lddqu_si128(ap.wrapping_add(16) as *const __m128i));
                        let mut y = [_mm256_setzero_si256(); 4];
                        let mut da = [_mm256_setzero_ps(); 4];
                        unroll!(C in [0, 1, 2, 3] {
                            da[C] = _mm256_set1_ps(
                                (ap.wrapping_add(4 * C) as *const f32).read_unaligned(),
                            );
                            y[C] = _mm256_lddqu_si256(ap.wrapping_add(32 + 32 * C) as *const __m256i);
                        });
                        ap = ap.wrapping_add(4 * ABLOCK);
                        unroll!(R in $rows {
                            let p = wp[R];
                            wp[R] = p.wrapping_add(bb);
                            let x = load_w::<K>(p);
                            let wdm = two_f16(p);
                            if K == 1 {
                                // m * s for the 4 activation rows: a product, then a sum
                                let m = _mm_permute_ps(wdm, 0b0101_0101);
                                summs[R] = _mm_add_ps(summs[R], _mm_mul_ps(m, s4));
                            }
                            let dw = _mm256_broadcastss_ps(wdm);
                            unroll!(C in [0, 1, 2, 3] {
                                acc[R][C] = _mm256_fmadd_ps(
                                    _mm256_mul_ps(dw, da[C]),
                                    lanes::<K, V>(x, y[C]),
                                    acc[R][C],
                                );
                            });
                        });
                    }
                    let mut out = [[0f32; 4]; $nr];
                    unroll!(R in $rows {
                        let mut s = [0f32; 4];
                        _mm_storeu_ps(s.as_mut_ptr(), summs[R]);
                        unroll!(C in [0, 1, 2, 3] {
                            out[R][C] = hsum(acc[R][C]) + s[C];
                        });
                    });
                    out
                }
            }
        };
    }

    /// The batch tile with 512-bit registers (AVX-512 VNNI): each register holds the 8 accumulator lanes
    /// of two activation rows side by side, so one `vpdpbusd` serves two tokens. Every lane sees the
    /// same operations in the same order as in the 256-bit tile, so the results are the same floats.
    macro_rules! batch_tile_zmm {
        ($name:ident, $nr:literal, $rows:tt) => {
            #[inline(always)]
            unsafe fn $name<const K: u8, const V: bool>(
                w: *const u8,
                row_bytes: usize,
                a: *const u8,
                nb: usize,
            ) -> [[f32; 4]; $nr] {
                unsafe {
                    let bb = wt(K).block_bytes();
                    let mut acc = [[_mm512_setzero_ps(); 2]; $nr];
                    let mut summs = [_mm_setzero_ps(); $nr];
                    let mut wp = [w; $nr];
                    unroll!(R in $rows {
                        wp[R] = w.wrapping_add(R * row_bytes);
                    });
                    let idx = [
                        _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                        _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2),
                    ];
                    let mut ap = a;
                    for _ in 0..nb {
                        let d4 = _mm512_castps128_ps512(_mm_castsi128_ps(_mm_lddqu_si128(ap as *const __m128i)));
                        let s4 = _mm_castsi128_ps(_mm_lddqu_si128(ap.wrapping_add(16) as *const __m128i));
                        let mut y = [_mm512_setzero_si512(); 2];
                        let mut da = [_mm512_setzero_ps(); 2];
                        unroll!(C in [0, 1] {
                            da[C] = _mm512_permutexvar_ps(idx[C], d4);
                            y[C] = _mm512_maskz_loadu_epi8(!0, ap.wrapping_add(32 + 64 * C) as *const i8);
                        });
                        ap = ap.wrapping_add(4 * ABLOCK);
                        unroll!(R in $rows {
                            let p = wp[R];
                            wp[R] = p.wrapping_add(bb);
                            let x = load_w::<K>(p);
                            let x = _mm512_inserti64x4(_mm512_castsi256_si512(x), x, 1);
                            let wdm = two_f16(p);
                            if K == 1 {
                                let m = _mm_permute_ps(wdm, 0b0101_0101);
                                summs[R] = _mm_add_ps(summs[R], _mm_mul_ps(m, s4));
                            }
                            let dw = _mm512_broadcastss_ps(wdm);
                            unroll!(C in [0, 1] {
                                let (xs, ys) = if K == 1 {
                                    (x, y[C])
                                } else {
                                    (
                                        _mm512_abs_epi8(x),
                                        _mm512_mask_sub_epi8(
                                            y[C],
                                            _mm512_movepi8_mask(x),
                                            _mm512_setzero_si512(),
                                            y[C],
                                        ),
                                    )
                                };
                                acc[R][C] = _mm512_fmadd_ps(
                                    _mm512_mul_ps(dw, da[C]),
                                    _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(
                                        _mm512_setzero_si512(),
                                        xs,
                                        ys,
                                    )),
                                    acc[R][C],
                                );
                            });
                        });
                    }
                    let mut out = [[0f32; 4]; $nr];
                    unroll!(R in $rows {
                        let mut s = [0f32; 4];
                        _mm_storeu_ps(s.as_mut_ptr(), summs[R]);
                        unroll!(C in [0, 1] {
                            let v = acc[R][C];
                            let lo = _mm512_castps512_ps256(v);
                            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
                            out[R][2 * C] = hsum(lo) + s[2 * C];
                            out[R][2 * C + 1] = hsum(hi) + s[2 * C + 1];
                        });
                    });
                    out
                }
            }
        };
    }

    batch_tile_zmm!(batch_z4, 4, [0, 1, 2, 3]);
    batch_tile!(batch3, 3, [0, 1, 2]);
    batch_tile!(batch2, 2, [0, 1]);
    batch_tile!(batch1, 1, [0]);

    /// Writes a tile result: `v[i][j]` is weight row `r + i`, activation row `c + j`, skipping padding.
    ///
    /// # Safety
    /// As `MatJob::run_raw`.
    #[inline(always)]
    unsafe fn put<const NR: usize, const NC: usize>(
        v: &[[f32; NC]; NR],
        r: usize,
        c: usize,
        n_act: usize,
        r0: usize,
        out: *mut f32,
        stride: usize,
    ) {
        for (i, row) in v.iter().enumerate() {
            for (j, x) in row.iter().enumerate() {
                if c + j < n_act {
                    // SAFETY: the caller's promise.
                    unsafe { *out.wrapping_add((c + j) * stride + r + i - r0) = *x };
                }
            }
        }
    }

    macro_rules! runner {
        ($name:ident, $features:literal, $big:ident, $nbig:literal, $v:literal) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(job: &MatJob, r0: usize, r1: usize, out: *mut f32, stride: usize) {
                unsafe {
                    match job.t {
                        WType::Q4_0 => go::<0>(job, r0, r1, out, stride),
                        WType::Q4_1 => go::<1>(job, r0, r1, out, stride),
                        WType::Q8_0 => go::<2>(job, r0, r1, out, stride),
                        WType::Q5_0 => go::<3>(job, r0, r1, out, stride),
                        WType::Q4K | WType::Q6K => unreachable!("K-quants run `run_k_avx2`"),
                        WType::Q5_0R => unreachable!("repacked rows go through `repack`"),
                    }
                }
                #[inline(always)]
                unsafe fn go<const K: u8>(
                    job: &MatJob,
                    r0: usize,
                    r1: usize,
                    out: *mut f32,
                    stride: usize,
                ) {
                    let acts = job.acts;
                    let (nb, rb) = (acts.nb, job.row_bytes);
                    let w = job.w.as_ptr();
                    let a = acts.data.as_ptr();
                    let gb = acts.group_bytes();
                    // SAFETY (all calls below): rows < r1 and groups < n / g are in bounds (asserted
                    // by `MatJob::run_raw`), and so are the outputs (its caller's promise).
                    unsafe {
                        if acts.g == 1 {
                            for c in 0..acts.n {
                                let ac = a.add(c * gb);
                                let mut r = r0;
                                while r + 4 <= r1 {
                                    let v = row4::<K, $v>(w.add(r * rb), rb, ac, nb);
                                    for (i, x) in v.iter().enumerate() {
                                        *out.wrapping_add(c * stride + r + i - r0) = *x;
                                    }
                                    r += 4;
                                }
                                while r < r1 {
                                    *out.wrapping_add(c * stride + r - r0) =
                                        row1::<K, $v>(w.add(r * rb), rb, ac, nb)[0];
                                    r += 1;
                                }
                            }
                            return;
                        }
                        let groups = acts.n.div_ceil(4);
                        let mut r = r0;
                        while r + $nbig <= r1 {
                            for g in 0..groups {
                                let v = $big::<K, $v>(w.add(r * rb), rb, a.add(g * gb), nb);
                                put(&v, r, 4 * g, acts.n, r0, out, stride);
                            }
                            r += $nbig;
                        }
                        while r < r1 {
                            for g in 0..groups {
                                let v = batch1::<K, $v>(w.add(r * rb), rb, a.add(g * gb), nb);
                                put(&v, r, 4 * g, acts.n, r0, out, stride);
                            }
                            r += 1;
                        }
                    }
                }
            }
        };
    }

    runner!(run_avx2, "avx2,fma,f16c", batch2, 2, false);

    /// K-quant rows `r0..r1` times every Q8_K activation row, one weight row at a time (it stays in
    /// cache for the batch's tokens). Same lanes and order as `dot_k_scalar`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn run_k_avx2(job: &MatJob, r0: usize, r1: usize, out: *mut f32, stride: usize) {
        let ak = &job.acts.k;
        for r in r0..r1 {
            let w = job.w[r * job.row_bytes..(r + 1) * job.row_bytes].as_ptr();
            let mut c = 0;
            // four activation rows at a time share each unpacked weight chunk
            while c + 4 <= ak.n {
                // SAFETY: as below.
                unsafe {
                    let v = match job.t {
                        WType::Q4K => dot4_q4k(w, ak, c),
                        WType::Q6K => dot4_q6k(w, ak, c),
                        _ => unreachable!(),
                    };
                    for (j, x) in v.iter().enumerate() {
                        *out.add((c + j) * stride + r - r0) = *x;
                    }
                }
                c += 4;
            }
            for c in c..ak.n {
                // SAFETY: the row's bytes and the activation row are in bounds (asserted by
                // `MatJob::run_raw`); the output is the caller's promise.
                unsafe {
                    let v = match job.t {
                        WType::Q4K => dot_q4k(w, ak, c),
                        WType::Q6K => dot_q6k(w, ak, c),
                        _ => unreachable!(),
                    };
                    *out.add(c * stride + r - r0) = v;
                }
            }
        }
    }

    /// The 128 values (0..63, unsigned) of half `h` of a Q6_K super-block at `wb`, as 4 registers of 32
    /// in value order.
    #[inline(always)]
    pub(in crate::persona::llm) unsafe fn q6k_half(wb: *const u8, h: usize) -> [__m256i; 4] {
        unsafe {
            let m15 = _mm256_set1_epi8(15);
            let b1 = _mm256_lddqu_si256(wb.add(64 * h) as *const __m256i);
            let b2 = _mm256_lddqu_si256(wb.add(64 * h + 32) as *const __m256i);
            let bh = _mm256_lddqu_si256(wb.add(128 + 32 * h) as *const __m256i);
            [
                _mm256_or_si256(
                    _mm256_and_si256(b1, m15),
                    _mm256_slli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(3)), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(b2, m15),
                    _mm256_slli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(12)), 2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(b1, 4), m15),
                    _mm256_and_si256(bh, _mm256_set1_epi8(48)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(b2, 4), m15),
                    _mm256_srli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(-64)), 2),
                ),
            ]
        }
    }

    #[inline(always)]
    unsafe fn f16_at(p: *const u8) -> f32 {
        unsafe { _mm_cvtss_f32(two_f16(p)) }
    }

    #[inline(always)]
    unsafe fn dot_q4k(w: *const u8, ak: &ActsK, c: usize) -> f32 {
        unsafe {
            let m4 = _mm256_set1_epi8(15);
            let mut acc = _mm256_setzero_ps();
            let mut acc_m = _mm_setzero_ps();
            for i in 0..ak.nb {
                let wb = w.add(i * 144);
                let blk = c * ak.nb + i;
                let ad = ak.d[blk];
                let d = ad * f16_at(wb);
                let dmin = -ad * f16_at(wb.add(2));
                let (sc, mn) = q4k_scales(std::slice::from_raw_parts(wb.add(4), 12));
                let bs = &ak.bsums[16 * blk..16 * (blk + 1)];
                let mut prod = [0i32; 4];
                for (l, p) in prod.iter_mut().enumerate() {
                    let s0 = bs[4 * l] as i32 + bs[4 * l + 1] as i32;
                    let s1 = bs[4 * l + 2] as i32 + bs[4 * l + 3] as i32;
                    *p = mn[2 * l] * s0 + mn[2 * l + 1] * s1;
                }
                let prod = _mm_setr_epi32(prod[0], prod[1], prod[2], prod[3]);
                acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
                let q8 = ak.qs[QK_K * blk..QK_K * (blk + 1)].as_ptr() as *const u8;
                let mut sumi = _mm256_setzero_si256();
                unroll!(J in [0, 1, 2, 3] {
                    let q4 = _mm256_lddqu_si256(wb.add(16 + 32 * J) as *const __m256i);
                    let lo = _mm256_and_si256(q4, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                    let y0 = _mm256_lddqu_si256(q8.add(64 * J) as *const __m256i);
                    let y1 = _mm256_lddqu_si256(q8.add(64 * J + 32) as *const __m256i);
                    let p0 = _mm256_madd_epi16(
                        _mm256_set1_epi16(sc[2 * J] as i16),
                        _mm256_maddubs_epi16(lo, y0),
                    );
                    let p1 = _mm256_madd_epi16(
                        _mm256_set1_epi16(sc[2 * J + 1] as i16),
                        _mm256_maddubs_epi16(hi, y1),
                    );
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
                });
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
            acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
            hsum(acc) + _mm_cvtss_f32(acc_m)
        }
    }

    /// `dot_q4k` for activation rows `c..c + 4`, each with its own accumulators (the same floats).
    #[inline(always)]
    unsafe fn dot4_q4k(w: *const u8, ak: &ActsK, c: usize) -> [f32; 4] {
        unsafe {
            let m4 = _mm256_set1_epi8(15);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut acc_m = [_mm_setzero_ps(); 4];
            let nb = ak.nb;
            for i in 0..nb {
                let wb = w.add(i * 144);
                let (sc, mn) = q4k_scales(std::slice::from_raw_parts(wb.add(4), 12));
                let (wd, wmin) = (f16_at(wb), f16_at(wb.add(2)));
                let mut sumi = [_mm256_setzero_si256(); 4];
                let mut q8 = [std::ptr::null::<u8>(); 4];
                unroll!(C in [0, 1, 2, 3] {
                    let blk = (c + C) * nb + i;
                    q8[C] = ak.qs.as_ptr().add(QK_K * blk) as *const u8;
                    let bs = &ak.bsums[16 * blk..16 * (blk + 1)];
                    let mut prod = [0i32; 4];
                    for (l, p) in prod.iter_mut().enumerate() {
                        let s0 = bs[4 * l] as i32 + bs[4 * l + 1] as i32;
                        let s1 = bs[4 * l + 2] as i32 + bs[4 * l + 3] as i32;
                        *p = mn[2 * l] * s0 + mn[2 * l + 1] * s1;
                    }
                    let prod = _mm_setr_epi32(prod[0], prod[1], prod[2], prod[3]);
                    let dmin = -ak.d[blk] * wmin;
                    acc_m[C] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[C]);
                });
                unroll!(J in [0, 1, 2, 3] {
                    let q4 = _mm256_lddqu_si256(wb.add(16 + 32 * J) as *const __m256i);
                    let lo = _mm256_and_si256(q4, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                    let (sl, sh) = (
                        _mm256_set1_epi16(sc[2 * J] as i16),
                        _mm256_set1_epi16(sc[2 * J + 1] as i16),
                    );
                    unroll!(C in [0, 1, 2, 3] {
                        let y0 = _mm256_lddqu_si256(q8[C].add(64 * J) as *const __m256i);
                        let y1 = _mm256_lddqu_si256(q8[C].add(64 * J + 32) as *const __m256i);
                        let p0 = _mm256_madd_epi16(sl, _mm256_maddubs_epi16(lo, y0));
                        let p1 = _mm256_madd_epi16(sh, _mm256_maddubs_epi16(hi, y1));
                        sumi[C] = _mm256_add_epi32(sumi[C], _mm256_add_epi32(p0, p1));
                    });
                });
                unroll!(C in [0, 1, 2, 3] {
                    let d = ak.d[(c + C) * nb + i] * wd;
                    acc[C] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[C]), acc[C]);
                });
            }
            let mut out = [0f32; 4];
            unroll!(C in [0, 1, 2, 3] {
                let mut m = acc_m[C];
                m = _mm_add_ps(m, _mm_movehl_ps(m, m));
                m = _mm_add_ss(m, _mm_movehdup_ps(m));
                out[C] = hsum(acc[C]) + _mm_cvtss_f32(m);
            });
            out
        }
    }

    /// `dot_q6k` for activation rows `c..c + 4`, each with its own accumulators (the same floats).
    #[inline(always)]
    unsafe fn dot4_q6k(w: *const u8, ak: &ActsK, c: usize) -> [f32; 4] {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            let nb = ak.nb;
            for i in 0..nb {
                let wb = w.add(i * 210);
                let wd = f16_at(wb.add(208));
                let scales = _mm_lddqu_si128(wb.add(192) as *const __m128i);
                let sc16 = _mm256_cvtepi8_epi16(scales);
                let sc = std::slice::from_raw_parts(wb.add(192) as *const i8, 16);
                let mut sumi = [_mm256_setzero_si256(); 4];
                let mut q8 = [std::ptr::null::<u8>(); 4];
                unroll!(C in [0, 1, 2, 3] {
                    let blk = (c + C) * nb + i;
                    q8[C] = ak.qs.as_ptr().add(QK_K * blk) as *const u8;
                    let bsums = _mm256_lddqu_si256(ak.bsums[16 * blk..].as_ptr() as *const __m256i);
                    sumi[C] = _mm256_sub_epi32(
                        sumi[C],
                        _mm256_slli_epi32(_mm256_madd_epi16(bsums, sc16), 5),
                    );
                });
                unroll!(H in [0, 1] {
                    let q = q6k_half(wb, H);
                    unroll!(T in [0, 1, 2, 3] {
                        let ch = 4 * H + T;
                        let scale = _mm256_set_m128i(
                            _mm_set1_epi16(sc[2 * ch + 1] as i16),
                            _mm_set1_epi16(sc[2 * ch] as i16),
                        );
                        unroll!(C in [0, 1, 2, 3] {
                            let y = _mm256_lddqu_si256(q8[C].add(32 * ch) as *const __m256i);
                            sumi[C] = _mm256_add_epi32(
                                sumi[C],
                                _mm256_madd_epi16(scale, _mm256_maddubs_epi16(q[T], y)),
                            );
                        });
                    });
                });
                unroll!(C in [0, 1, 2, 3] {
                    let d = ak.d[(c + C) * nb + i] * wd;
                    acc[C] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[C]), acc[C]);
                });
            }
            let mut out = [0f32; 4];
            unroll!(C in [0, 1, 2, 3] {
                out[C] = hsum(acc[C]);
            });
            out
        }
    }

    #[inline(always)]
    unsafe fn dot_q6k(w: *const u8, ak: &ActsK, c: usize) -> f32 {
        unsafe {
            let mut acc = _mm256_setzero_ps();
            for i in 0..ak.nb {
                let wb = w.add(i * 210);
                let blk = c * ak.nb + i;
                let d = ak.d[blk] * f16_at(wb.add(208));
                let scales = _mm_lddqu_si128(wb.add(192) as *const __m128i);
                let bsums = _mm256_lddqu_si256(ak.bsums[16 * blk..].as_ptr() as *const __m256i);
                let corr =
                    _mm256_slli_epi32(_mm256_madd_epi16(bsums, _mm256_cvtepi8_epi16(scales)), 5);
                let sc = std::slice::from_raw_parts(wb.add(192) as *const i8, 16);
                let q8 = ak.qs[QK_K * blk..QK_K * (blk + 1)].as_ptr() as *const u8;
                let mut sumi = _mm256_setzero_si256();
                unroll!(H in [0, 1] {
                    let q = q6k_half(wb, H);
                    unroll!(T in [0, 1, 2, 3] {
                        let ch = 4 * H + T;
                        let y = _mm256_lddqu_si256(q8.add(32 * ch) as *const __m256i);
                        let scale = _mm256_set_m128i(
                            _mm_set1_epi16(sc[2 * ch + 1] as i16),
                            _mm_set1_epi16(sc[2 * ch] as i16),
                        );
                        sumi = _mm256_add_epi32(
                            sumi,
                            _mm256_madd_epi16(scale, _mm256_maddubs_epi16(q[T], y)),
                        );
                    });
                });
                sumi = _mm256_sub_epi32(sumi, corr);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum(acc)
        }
    }
    runner!(
        run_avx512,
        "avx2,fma,f16c,avx512f,avx512vl,avx512bw",
        batch3,
        3,
        false
    );
    runner!(
        run_vnni,
        "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni",
        batch_z4,
        4,
        true
    );
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::persona::llm) fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    /// `rows` x `cols` random weights of any format the kernels take (finite, small scales).
    pub(in crate::persona::llm) fn weights(
        t: WType,
        rows: usize,
        cols: usize,
        seed: &mut u64,
    ) -> Vec<u8> {
        if t.is_k() {
            random_k_weights(t, rows, cols, seed)
        } else {
            random_weights(t, rows, cols, seed)
        }
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

    fn random_k_weights(t: WType, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let mut w = Vec::new();
        for _ in 0..rows * cols / QK_K {
            let mut b: Vec<u8> = (0..t.block_bytes())
                .map(|_| (lcg(seed) * 127.0) as i8 as u8)
                .collect();
            let f = |v: f32| f16::from_f32(v).to_bits().to_le_bytes();
            match t {
                WType::Q4K => {
                    b[0..2].copy_from_slice(&f(0.001 + lcg(seed).abs() * 0.002));
                    b[2..4].copy_from_slice(&f(lcg(seed).abs() * 0.002));
                }
                _ => b[208..210].copy_from_slice(&f(0.001 + lcg(seed).abs() * 0.002)),
            }
            w.extend_from_slice(&b);
        }
        w
    }

    /// The K-quant kernels give the scalar reference's floats exactly, and the scalar reference is
    /// the dequantized row times the dequantized Q8_K activations up to f32 rounding.
    #[test]
    fn k_quants_simd_equals_scalar_and_dequantized() {
        let mut seed = 11;
        for (t, n) in [WType::Q4K, WType::Q6K]
            .into_iter()
            .flat_map(|t| [(t, 1), (t, 5)])
        {
            let (rows, cols) = (7, 512);
            let w = random_k_weights(t, rows, cols, &mut seed);
            let x: Vec<f32> = (0..cols * n).map(|_| lcg(&mut seed) * 3.0).collect();
            let mut acts = Acts::default();
            acts.quantize_for(&x, cols, &[t]);
            let rb = cols / QK_K * t.block_bytes();
            let job = MatJob {
                t,
                w: &w,
                row_bytes: rb,
                acts: &acts,
            };
            for k in Kernel::available() {
                let mut out = vec![f32::NAN; n * rows];
                job.run_with(k, 0, rows, &mut out, rows);
                for c in 0..n {
                    for r in 0..rows {
                        let wr = &w[r * rb..(r + 1) * rb];
                        let want = dot_k_scalar(t, wr, &acts.k, c);
                        assert_eq!(
                            out[c * rows + r].to_bits(),
                            want.to_bits(),
                            "{k:?} {t:?} n={n} row {r} act {c}"
                        );
                        let mut deq = vec![0f32; cols];
                        dequant_row(t, wr, &mut deq);
                        let exact: f64 = (0..cols)
                            .map(|i| {
                                let blk = c * acts.k.nb + i / QK_K;
                                deq[i] as f64
                                    * (acts.k.qs[c * cols + i] as f64 * acts.k.d[blk] as f64)
                            })
                            .sum();
                        let mag: f64 = (0..cols)
                            .map(|i| (deq[i] * x[c * cols + i]).abs() as f64)
                            .sum();
                        assert!(
                            (exact - want as f64).abs() <= 1e-4 * mag + 1e-4,
                            "{t:?} row {r} act {c}: {want} vs {exact}"
                        );
                    }
                }
            }
        }
    }

    /// Every kernel shape (single row, batch tiles with padded groups, row tails, a row range that
    /// starts inside the matrix) gives the scalar reference's floats exactly.
    #[test]
    fn simd_equals_scalar_bit_for_bit() {
        let mut seed = 7;
        for (t, n) in [WType::Q4_0, WType::Q4_1, WType::Q8_0, WType::Q5_0]
            .into_iter()
            .flat_map(|t| [(t, 1), (t, 6), (t, 8), (t, 3)])
        {
            let (rows, cols) = (13, 96);
            let w = random_weights(t, rows, cols, &mut seed);
            let x: Vec<f32> = (0..cols * n).map(|_| lcg(&mut seed) * 3.0).collect();
            let mut acts = Acts::default();
            acts.quantize(&x, cols);
            let job = MatJob {
                t,
                w: &w,
                row_bytes: cols / QK * t.block_bytes(),
                acts: &acts,
            };
            for (k, (r0, r1)) in Kernel::available()
                .into_iter()
                .flat_map(|k| [(k, (0, rows)), (k, (1, rows)), (k, (5, 11))])
            {
                let m = r1 - r0;
                let mut out = vec![f32::NAN; n * m];
                job.run_with(k, r0, r1, &mut out, m);
                for c in 0..n {
                    for r in r0..r1 {
                        let wr = &w[r * job.row_bytes..(r + 1) * job.row_bytes];
                        assert_eq!(
                            out[c * m + r - r0].to_bits(),
                            dot_scalar(t, wr, &acts, c).to_bits(),
                            "{k:?} {t:?} n={n} rows {r0}..{r1}: row {r}, act {c}"
                        );
                    }
                }
            }
            // and the integer dot is within the activation rounding bound of the f32 dot
            let mut out = vec![0f32; n * rows];
            job.run(0, rows, &mut out, rows);
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
                (exact - out[0]).abs() <= bound * 1.01 + 1e-2,
                "{t:?} n={n}: {exact} vs {} (bound {bound})",
                out[0]
            );
        }
    }
}
