//! Prompt batches on AVX-512 VNNI for the weight formats where llama.cpp itself leaves its `vec_dot`
//! order for batches (Q5_0 and Q8_0 go through tinyBLAS there, Q4_K through repacked 8x8 blocks) and
//! Q6_K with them: the formats of Qwen2.5's Q4_K_M file. On these formats our logits are close to
//! llama.cpp's, not the same floats, whichever order we pick (see `llama`), so the batch product is
//! free to take the order that is fastest here; Q4_0/Q4_1 batches (SmolLM2) keep `quant`'s exact
//! kernels.
//!
//! The product is a small GEMM. The activation rows (already quantized by `quant`: Q8_0 blocks of 32,
//! or Q8_K super-blocks of 256) are repacked in tiles of 16 tokens so that one 512-bit register holds
//! 4 consecutive quants of each of the 16 tokens, offset by 128 to unsigned bytes (`vpdpbusd` multiplies
//! unsigned by signed bytes). A weight row is unpacked once per call into plain signed bytes (with its
//! scales as f32 and, per scale group, `-128 * sum(w)`, which cancels the offset), and each 4 weight
//! bytes are broadcast against a register of 16 tokens: one `vpdpbusd` does 64 multiply-adds, 4 weight
//! rows times 2 tiles of tokens keep 8 integer and 8 float accumulators in registers.
//!
//! Per token and weight row, the result is (the scalar [`reference`] does exactly this):
//! for each scale group `g` of the row in order (a 32-value block; a 16-value half for Q6_K), the exact
//! integer dot `i_g` of its quants, then `acc = fma(f32(i_g), w_scale_g * a_scale_g, acc)`; for Q4_K,
//! after each super-block's 8 groups, its minimums: `acc = fma(f32(sum_j m_j * asum_j), -dmin * a_scale,
//! acc)` with `asum_j` the sum of the 32 activation quants under minimum `j`. Weight scales are
//! `d` (Q8_0, Q5_0) or `d * scale_g` (Q4_K, Q6_K; exact in f32). The integer sums are the same
//! integers as llama.cpp's; only the float accumulation order differs.

use super::quant::{self, Acts, ActsK, MatJob, QK, QK_K, WType};

/// Tokens per activation tile (the lanes of a 512-bit register of 32-bit sums).
pub const TILE: usize = 16;
/// Bytes of one 32-value block of one tile: 8 registers of quants, then the 16 tokens' scales (f32).
const BLOCK: usize = 8 * 64 + 64;
/// Bytes of one super-block's minimum sums in one tile (Q8_K only): 4 registers of i16 pairs.
const MINS: usize = 4 * 64;
/// Batches of at least this many tokens take the GEMM.
pub const MIN_TOKENS: usize = 8;

/// Whether this CPU runs the GEMM's kernel (elsewhere batches keep `quant`'s kernels).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        quant::have_vnni()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the GEMM multiplies weights of format `t`.
pub fn handles(t: WType) -> bool {
    matches!(
        t,
        WType::Q5_0 | WType::Q5_0R | WType::Q8_0 | WType::Q4K | WType::Q6K
    )
}

/// Activation rows repacked in tiles of [`TILE`] tokens (see the module docs), from Q8_0 blocks or
/// from Q8_K super-blocks. Reused across calls.
#[derive(Default)]
pub struct Packed {
    data: Vec<u8>,
    mins: Vec<u8>,
    /// Rows packed (0: none).
    pub n: usize,
    /// 32-value blocks per row.
    nb: usize,
    /// Packed from Q8_K (scales per 256, minimum sums present).
    k: bool,
}

impl Packed {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the x86-64 kernels only
    fn tiles(&self) -> usize {
        self.n.div_ceil(TILE)
    }

    fn reset(&mut self, n: usize, nb: usize, k: bool) {
        self.n = n;
        self.nb = nb;
        self.k = k;
        let tiles = n.div_ceil(TILE);
        self.data.clear();
        self.data.resize(tiles * nb * BLOCK, 0);
        self.mins.clear();
        if k {
            self.mins.resize(tiles * (nb / 8) * MINS, 0);
        }
    }

    /// Sets token `c`'s quants of block `b` (signed) and its scale.
    fn put_block(&mut self, c: usize, b: usize, q: &[i8], d: f32) {
        let base = ((c / TILE) * self.nb + b) * BLOCK;
        let t = c % TILE;
        for (kk, q4) in q.chunks_exact(4).enumerate() {
            let o = base + 64 * kk + 4 * t;
            for (i, v) in q4.iter().enumerate() {
                self.data[o + i] = (*v as u8) ^ 0x80;
            }
        }
        let o = base + 512 + 4 * t;
        self.data[o..o + 4].copy_from_slice(&d.to_le_bytes());
    }

    /// Packs the Q8_0 rows of `acts` (its group layout).
    pub fn pack_q8_0(&mut self, acts: &Acts) {
        self.reset(acts.n, acts.nb, false);
        for c in 0..acts.n {
            for b in 0..acts.nb {
                let (d, _, q) = acts.block(c, b);
                let q: [i8; QK] = std::array::from_fn(|i| q[i] as i8);
                self.put_block(c, b, &q, d);
            }
        }
    }

    /// Packs the Q8_K rows of `acts.k`, with the sums of each 32 quants for Q4_K's minimums.
    pub fn pack_q8_k(&mut self, ak: &ActsK) {
        self.reset(ak.n, ak.nb * (QK_K / QK), true);
        for c in 0..ak.n {
            for sb in 0..ak.nb {
                let blk = c * ak.nb + sb;
                let d = ak.d[blk];
                let qs = &ak.qs[QK_K * blk..QK_K * (blk + 1)];
                for j in 0..QK_K / QK {
                    self.put_block(c, 8 * sb + j, &qs[QK * j..QK * (j + 1)], d);
                }
                let bs = &ak.bsums[16 * blk..16 * (blk + 1)];
                let o = ((c / TILE) * ak.nb + sb) * MINS + 4 * (c % TILE);
                for jp in 0..4 {
                    let s0 = bs[4 * jp] + bs[4 * jp + 1];
                    let s1 = bs[4 * jp + 2] + bs[4 * jp + 3];
                    let at = o + 64 * jp;
                    self.mins[at..at + 2].copy_from_slice(&s0.to_le_bytes());
                    self.mins[at + 2..at + 4].copy_from_slice(&s1.to_le_bytes());
                }
            }
        }
    }

    /// Token `c`'s quant `i` (signed), scale of block `b`, and minimum sum `j` of super-block `sb`.
    fn quant(&self, c: usize, i: usize) -> i32 {
        let (b, k) = (i / QK, i % QK);
        let o = ((c / TILE) * self.nb + b) * BLOCK + 64 * (k / 4) + 4 * (c % TILE) + k % 4;
        (self.data[o] ^ 0x80) as i8 as i32
    }
    fn scale(&self, c: usize, b: usize) -> f32 {
        let o = ((c / TILE) * self.nb + b) * BLOCK + 512 + 4 * (c % TILE);
        f32::from_le_bytes(self.data[o..o + 4].try_into().unwrap())
    }
    fn min_sum(&self, c: usize, sb: usize, j: usize) -> i32 {
        let o =
            ((c / TILE) * (self.nb / 8) + sb) * MINS + 64 * (j / 2) + 4 * (c % TILE) + 2 * (j % 2);
        i16::from_le_bytes([self.mins[o], self.mins[o + 1]]) as i32
    }
}

/// Weight rows unpacked for the kernel: signed bytes, per scale group the scale (f32) and
/// `-128 * sum(w)`, and for Q4_K per super-block the minimums (i16 pairs) and `-dmin`.
#[derive(Default)]
struct Panel {
    q: Vec<i8>,
    scale: Vec<f32>,
    init: Vec<i32>,
    mins: Vec<i32>,
    dmin: Vec<f32>,
    /// Values per row.
    cols: usize,
    /// Scale groups per row.
    groups: usize,
    /// Byte strides of `q` per row, per 32-value block and per 4-value step, and element strides of
    /// `scale` and `init` per row and per group: row-major (`cols, 32, 4`, `groups, 1`), or 16 rows
    /// interleaved as `repack` stores Q5_0 (`4, 512, 64`, `1, 16`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    // used by the x86-64 kernels only
    strides: ([usize; 3], [usize; 2]),
}

impl Panel {
    fn new(t: WType, rows: usize, cols: usize) -> Panel {
        let groups = if t == WType::Q6K {
            cols / 16
        } else {
            cols / QK
        };
        let sbs = if t == WType::Q4K { cols / QK_K } else { 0 };
        Panel {
            q: vec![0; rows * cols],
            scale: vec![0.0; rows * groups],
            init: vec![0; rows * groups],
            mins: vec![0; rows * sbs * 4],
            dmin: vec![0.0; rows * sbs],
            cols,
            groups,
            strides: ([cols, QK, 4], [groups, 1]),
        }
    }

    /// A panel of 16 interleaved rows of a repacked Q5_0 matrix (filled by the kernel's `unpack16`).
    #[cfg(target_arch = "x86_64")]
    fn interleaved(cols: usize) -> Panel {
        let mut p = Panel::new(WType::Q5_0, super::repack::ROWS, cols);
        p.strides = ([4, 16 * QK, 64], [1, 16]);
        p
    }

    /// Panel row `r`'s scales (`d * scale_j`), minimum pairs and `-dmin` of Q4_K super-block `sb`
    /// (`wb`, its 144 bytes): shared by the scalar and the vector unpack.
    fn q4k_meta(&mut self, r: usize, sb: usize, wb: &[u8]) {
        let sbs = self.cols / QK_K;
        let (d, dmin) = (quant::f16_at(wb, 0), quant::f16_at(wb, 2));
        let (sc, mn) = quant::q4k_scales(&wb[4..16]);
        let scale = &mut self.scale[r * self.groups + 8 * sb..][..8];
        for (o, c) in scale.iter_mut().zip(sc) {
            *o = d * c as f32;
        }
        for jp in 0..4 {
            self.mins[(r * sbs + sb) * 4 + jp] =
                (mn[2 * jp] as u32 | (mn[2 * jp + 1] as u32) << 16) as i32;
        }
        self.dmin[r * sbs + sb] = -dmin;
    }

    /// Unpacks row `wr` of matrix `w` (format `t`, `row_bytes` per row) into panel row `r`.
    fn unpack(&mut self, t: WType, w: &[u8], row_bytes: usize, wr: usize, r: usize) {
        let cols = self.cols;
        if t == WType::Q5_0R {
            let groups = self.groups;
            super::repack::row(
                w,
                cols,
                wr,
                &mut self.q[r * cols..(r + 1) * cols],
                &mut self.scale[r * groups..(r + 1) * groups],
            );
            self.finish(r);
            return;
        }
        let w = &w[wr * row_bytes..(wr + 1) * row_bytes];
        let q = &mut self.q[r * cols..(r + 1) * cols];
        let scale = &mut self.scale[r * self.groups..(r + 1) * self.groups];
        match t {
            WType::Q8_0 | WType::Q5_0 => {
                for (b, wb) in w.chunks_exact(t.block_bytes()).enumerate() {
                    let qb = &mut q[QK * b..QK * (b + 1)];
                    if t == WType::Q8_0 {
                        qb.iter_mut()
                            .zip(&wb[2..34])
                            .for_each(|(o, v)| *o = *v as i8);
                    } else {
                        let mut v = [0i32; QK];
                        quant::q5_0_values(wb, &mut v);
                        qb.iter_mut().zip(v).for_each(|(o, v)| *o = v as i8);
                    }
                    scale[b] = quant::f16_at(wb, 0);
                }
            }
            WType::Q4K => {
                for (sb, wb) in w.chunks_exact(t.block_bytes()).enumerate() {
                    let qb = &mut self.q[r * cols + QK_K * sb..][..QK_K];
                    for j in 0..4 {
                        for l in 0..32 {
                            let v = wb[16 + 32 * j + l];
                            qb[64 * j + l] = (v & 15) as i8;
                            qb[64 * j + 32 + l] = (v >> 4) as i8;
                        }
                    }
                    self.q4k_meta(r, sb, wb);
                }
            }
            WType::Q6K => {
                for (sb, wb) in w.chunks_exact(t.block_bytes()).enumerate() {
                    let mut v = [0i32; QK_K];
                    quant::q6k_values(wb, &mut v);
                    let d = quant::f16_at(wb, 208);
                    q[QK_K * sb..QK_K * (sb + 1)]
                        .iter_mut()
                        .zip(v)
                        .for_each(|(o, v)| *o = (v - 32) as i8);
                    for j in 0..16 {
                        scale[16 * sb + j] = d * wb[192 + j] as i8 as f32;
                    }
                }
            }
            _ => unreachable!("not a GEMM format"),
        }
        self.finish(r);
    }

    /// Panel row `r`'s `-128 * sum(w)` per scale group.
    fn finish(&mut self, r: usize) {
        let (cols, gl) = (self.cols, self.cols / self.groups);
        let q = &self.q[r * cols..(r + 1) * cols];
        let init = &mut self.init[r * self.groups..(r + 1) * self.groups];
        for (g, o) in init.iter_mut().enumerate() {
            *o = -128
                * q[gl * g..gl * (g + 1)]
                    .iter()
                    .map(|&v| v as i32)
                    .sum::<i32>();
        }
    }
}

/// The scalar reference: row `r` of `job`'s weights times packed token `c`, in the kernel's order.
pub fn reference(job: &MatJob, r: usize, p: &Packed, c: usize) -> f32 {
    let t = job.t;
    let cols = p.nb * QK;
    let mut panel = Panel::new(t, 1, cols);
    panel.unpack(t, job.w, job.row_bytes, r, 0);
    let gl = cols / panel.groups;
    let mut acc = 0f32;
    for g in 0..panel.groups {
        let dot: i32 = (0..gl)
            .map(|i| panel.q[g * gl + i] as i32 * p.quant(c, g * gl + i))
            .sum();
        let b = g * gl / QK;
        acc = (dot as f32).mul_add(panel.scale[g] * p.scale(c, b), acc);
        if t == WType::Q4K && (g + 1) % 8 == 0 {
            let sb = g / 8;
            let mut m = 0i32;
            for jp in 0..4 {
                let pair = panel.mins[sb * 4 + jp] as u32;
                m += (pair & 0xffff) as i32 * p.min_sum(c, sb, 2 * jp)
                    + (pair >> 16) as i32 * p.min_sum(c, sb, 2 * jp + 1);
            }
            acc = (m as f32).mul_add(panel.dmin[sb] * p.scale(c, b), acc);
        }
    }
    acc
}

/// Rows `r0..r1` of `job`'s weights times every packed token (`job`'s activations unused):
/// `out[c * stride + r - r0]`. Runs the AVX-512 VNNI kernel where the CPU has it, the scalar
/// reference otherwise (the same floats).
///
/// # Safety
/// `out[c * stride + r - r0]` must be valid for writes for every packed token `c` and `r0 <= r < r1`,
/// and nothing else may access those elements during the call.
pub unsafe fn run(job: &MatJob, p: &Packed, r0: usize, r1: usize, out: *mut f32, stride: usize) {
    let (t, w, row_bytes) = (job.t, job.w, job.row_bytes);
    assert!(handles(t) && p.k == t.is_k() && p.n > 0);
    assert_eq!(p.nb * QK / t.block_len() * t.block_bytes(), row_bytes);
    assert!(r0 <= r1 && r1 * row_bytes <= w.len());
    #[cfg(target_arch = "x86_64")]
    if quant::have_vnni() {
        // SAFETY: the CPU has the features; bounds as asserted and promised.
        unsafe { x86::run(t, w, row_bytes, p, r0, r1, out, stride) };
        return;
    }
    for r in r0..r1 {
        for c in 0..p.n {
            // SAFETY: the caller's promise.
            unsafe { *out.add(c * stride + r - r0) = reference(job, r, p, c) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, MINS, Packed, Panel, TILE, WType};
    use std::arch::x86_64::*;

    macro_rules! unroll {
        ($i:ident in [$($n:literal),*] $body:block) => {
            $( { const $i: usize = $n; $body } )*
        };
    }

    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512i {
        unsafe { _mm512_maskz_loadu_epi8(!0, p as *const i8) }
    }

    /// `$mr` panel rows (from `r`) times `$nt` token tiles (`a`, `m`: each tile's blocks and minimum
    /// sums); one 16-token register of results per row and tile.
    macro_rules! tile {
        ($name:ident, $mr:literal, $rows:tt, $nt:literal, $tiles:tt) => {
            #[inline(always)]
            unsafe fn $name<const HALF: bool, const MIN: bool>(
                p: &Panel,
                r: usize,
                a: [*const u8; $nt],
                m: [*const u8; $nt],
            ) -> [[__m512; $nt]; $mr] {
                unsafe {
                    let (qs, gst) = p.strides;
                    let nb = p.cols / 32;
                    let subs = if HALF { 2 } else { 1 };
                    let steps = 8 / subs;
                    let mut fa = [[_mm512_setzero_ps(); $nt]; $mr];
                    let mut q = [std::ptr::null::<u8>(); $mr];
                    let mut gi = [std::ptr::null::<i32>(); $mr];
                    let mut gs = [std::ptr::null::<f32>(); $mr];
                    unroll!(R in $rows {
                        q[R] = p.q.as_ptr().add((r + R) * qs[0]) as *const u8;
                        gi[R] = p.init.as_ptr().add((r + R) * gst[0]);
                        gs[R] = p.scale.as_ptr().add((r + R) * gst[0]);
                    });
                    for b in 0..nb {
                        let mut da = [_mm512_setzero_ps(); $nt];
                        unroll!(T in $tiles {
                            da[T] = _mm512_castsi512_ps(load(a[T].add(b * BLOCK + 512)));
                        });
                        for h in 0..subs {
                            let g = b * subs + h;
                            let mut ia = [[_mm512_setzero_si512(); $nt]; $mr];
                            unroll!(R in $rows {
                                let init = _mm512_set1_epi32(*gi[R].add(g * gst[1]));
                                unroll!(T in $tiles {
                                    ia[R][T] = init;
                                });
                            });
                            for s in 0..steps {
                                let kk = h * steps + s;
                                let mut av = [_mm512_setzero_si512(); $nt];
                                unroll!(T in $tiles {
                                    av[T] = load(a[T].add(b * BLOCK + 64 * kk));
                                });
                                unroll!(R in $rows {
                                    let w = _mm512_set1_epi32(
                                        (q[R].add(qs[1] * b + qs[2] * kk) as *const i32)
                                            .read_unaligned(),
                                    );
                                    unroll!(T in $tiles {
                                        ia[R][T] = _mm512_dpbusd_epi32(ia[R][T], av[T], w);
                                    });
                                });
                            }
                            unroll!(R in $rows {
                                let ws = _mm512_set1_ps(*gs[R].add(g * gst[1]));
                                unroll!(T in $tiles {
                                    fa[R][T] = _mm512_fmadd_ps(
                                        _mm512_cvtepi32_ps(ia[R][T]),
                                        _mm512_mul_ps(ws, da[T]),
                                        fa[R][T],
                                    );
                                });
                            });
                        }
                        if MIN && b % 8 == 7 {
                            let sb = b / 8;
                            let sbs = nb / 8;
                            let mut ms = [[_mm512_setzero_si512(); $nt]; $mr];
                            for jp in 0..4 {
                                let mut av = [_mm512_setzero_si512(); $nt];
                                unroll!(T in $tiles {
                                    av[T] = load(m[T].add(sb * MINS + 64 * jp));
                                });
                                unroll!(R in $rows {
                                    let w = _mm512_set1_epi32(*p.mins.as_ptr().add(((r + R) * sbs + sb) * 4 + jp));
                                    unroll!(T in $tiles {
                                        ms[R][T] = _mm512_dpwssd_epi32(ms[R][T], av[T], w);
                                    });
                                });
                            }
                            unroll!(R in $rows {
                                let dm = _mm512_set1_ps(*p.dmin.as_ptr().add((r + R) * sbs + sb));
                                unroll!(T in $tiles {
                                    fa[R][T] = _mm512_fmadd_ps(
                                        _mm512_cvtepi32_ps(ms[R][T]),
                                        _mm512_mul_ps(dm, da[T]),
                                        fa[R][T],
                                    );
                                });
                            });
                        }
                    }
                    fa
                }
            }
        };
    }

    tile!(tile_4x2, 4, [0, 1, 2, 3], 2, [0, 1]);
    tile!(tile_4x1, 4, [0, 1, 2, 3], 1, [0]);
    tile!(tile_1x2, 1, [0], 2, [0, 1]);
    tile!(tile_1x1, 1, [0], 1, [0]);

    /// Writes tile results: `v[i][j]` holds output column `rr + i` (rows counted from the job's
    /// `r0`) for tokens `TILE * (tile + j)..`, skipping the padding past `n`.
    #[inline(always)]
    unsafe fn put<const MR: usize, const NT: usize>(
        v: [[__m512; NT]; MR],
        rr: usize,
        tile: usize,
        n: usize,
        out: *mut f32,
        stride: usize,
    ) {
        unsafe {
            for (i, row) in v.iter().enumerate() {
                for (j, x) in row.iter().enumerate() {
                    let mut s = [0f32; TILE];
                    _mm512_mask_storeu_ps(s.as_mut_ptr(), !0, *x);
                    for (t, x) in s.iter().enumerate() {
                        let c = TILE * (tile + j) + t;
                        if c < n {
                            *out.add(c * stride + rr + i) = *x;
                        }
                    }
                }
            }
        }
    }

    /// Rows `16 * group..` of a repacked Q5_0 matrix into an interleaved panel: signed values, the
    /// scales as f32 and `-128 * sum(w)` per block (the layout is `repack`'s).
    #[inline(always)]
    unsafe fn unpack16(p: &mut Panel, w: &[u8], group: usize) {
        use super::super::repack::GROUP_BLOCK;
        let nb = p.cols / 32;
        assert!((group + 1) * nb * GROUP_BLOCK <= w.len() && p.q.len() >= 16 * p.cols);
        unsafe {
            let (m4, sixteen, ones) = (
                _mm512_set1_epi8(15),
                _mm512_set1_epi8(16),
                _mm512_set1_epi8(1),
            );
            let q = p.q.as_mut_ptr() as *mut u8;
            for b in 0..nb {
                let o = w.as_ptr().add((group * nb + b) * GROUP_BLOCK);
                let mut sum = _mm512_setzero_si512();
                for pair in 0..4 {
                    let v = load(o.add(96 + 64 * pair));
                    let k0 = (o.add(32 + 16 * pair) as *const u64).read_unaligned();
                    let k1 = (o.add(40 + 16 * pair) as *const u64).read_unaligned();
                    let lo = _mm512_and_si512(v, m4);
                    let hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                    let lo = _mm512_sub_epi8(_mm512_mask_add_epi8(lo, k0, lo, sixteen), sixteen);
                    let hi = _mm512_sub_epi8(_mm512_mask_add_epi8(hi, k1, hi, sixteen), sixteen);
                    _mm512_mask_storeu_epi8(q.add(512 * b + 128 * pair) as *mut i8, !0, lo);
                    _mm512_mask_storeu_epi8(q.add(512 * b + 128 * pair + 64) as *mut i8, !0, hi);
                    sum = _mm512_dpbusd_epi32(sum, ones, lo);
                    sum = _mm512_dpbusd_epi32(sum, ones, hi);
                }
                let init = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 7));
                _mm512_mask_storeu_epi32(p.init.as_mut_ptr().add(16 * b), !0, init);
                let d = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(!0, o as *const i16));
                _mm512_mask_storeu_ps(p.scale.as_mut_ptr().add(16 * b), !0, d);
            }
        }
    }

    #[inline(always)]
    unsafe fn f16(p: *const u8) -> f32 {
        unsafe {
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                (p as *const u16).read_unaligned() as i32,
            )))
        }
    }

    /// Sum of 32 unsigned bytes.
    #[inline(always)]
    unsafe fn sum32(v: __m256i) -> i32 {
        unsafe {
            let s = _mm256_sad_epu8(v, _mm256_setzero_si256());
            let s = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            (_mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1)) as i32
        }
    }

    /// `Panel::unpack` with vector instructions for the formats in GGUF order (the same values).
    #[inline(always)]
    unsafe fn unpack_row(p: &mut Panel, t: WType, w: &[u8], r: usize) {
        let cols = p.cols;
        assert!(w.len() == cols / t.block_len() * t.block_bytes() && p.q.len() >= (r + 1) * cols);
        unsafe {
            let q = (p.q.as_mut_ptr() as *mut u8).add(r * cols);
            let scale = p.scale.as_mut_ptr().add(r * p.groups);
            let init = p.init.as_mut_ptr().add(r * p.groups);
            let wp = w.as_ptr();
            let m4 = _mm256_set1_epi8(15);
            let flip = _mm256_set1_epi8(-128);
            match t {
                WType::Q8_0 => {
                    for b in 0..cols / 32 {
                        let wb = wp.add(34 * b);
                        let v = _mm256_lddqu_si256(wb.add(2) as *const __m256i);
                        _mm256_storeu_si256(q.add(32 * b) as *mut __m256i, v);
                        *scale.add(b) = f16(wb);
                        // the bytes offset to unsigned sum to sum(w) + 128 * 32
                        *init.add(b) = -128 * (sum32(_mm256_xor_si256(v, flip)) - 128 * 32);
                    }
                }
                WType::Q4K => {
                    for sb in 0..cols / 256 {
                        let wb = wp.add(144 * sb);
                        for j in 0..4 {
                            let v = _mm256_lddqu_si256(wb.add(16 + 32 * j) as *const __m256i);
                            let lo = _mm256_and_si256(v, m4);
                            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                            let o = q.add(256 * sb + 64 * j);
                            _mm256_storeu_si256(o as *mut __m256i, lo);
                            _mm256_storeu_si256(o.add(32) as *mut __m256i, hi);
                            *init.add(8 * sb + 2 * j) = -128 * sum32(lo);
                            *init.add(8 * sb + 2 * j + 1) = -128 * sum32(hi);
                        }
                        p.q4k_meta(r, sb, &w[144 * sb..144 * (sb + 1)]);
                    }
                }
                WType::Q6K => {
                    let thirty_two = _mm256_set1_epi8(32);
                    for sb in 0..cols / 256 {
                        let wb = wp.add(210 * sb);
                        let d = f16(wb.add(208));
                        for h in 0..2 {
                            let vals = super::super::quant::x86::q6k_half(wb, h);
                            for (k, v) in vals.iter().enumerate() {
                                let at = 256 * sb + 128 * h + 32 * k;
                                _mm256_storeu_si256(
                                    q.add(at) as *mut __m256i,
                                    _mm256_sub_epi8(*v, thirty_two),
                                );
                                // two groups of 16: sums of the unsigned values, less 32 each
                                let s = _mm256_sad_epu8(*v, _mm256_setzero_si256());
                                let lo = _mm256_castsi256_si128(s);
                                let hi = _mm256_extracti128_si256(s, 1);
                                let g = at / 16;
                                *init.add(g) = -128
                                    * ((_mm_cvtsi128_si64(lo) + _mm_extract_epi64(lo, 1)) as i32
                                        - 32 * 16);
                                *init.add(g + 1) = -128
                                    * ((_mm_cvtsi128_si64(hi) + _mm_extract_epi64(hi, 1)) as i32
                                        - 32 * 16);
                            }
                        }
                        for k in 0..16 {
                            *scale.add(16 * sb + k) = d * *wb.add(192 + k) as i8 as f32;
                        }
                    }
                }
                _ => unreachable!("Q5_0 layers are repacked; others unpack in `Panel::unpack`"),
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        t: WType,
        w: &[u8],
        row_bytes: usize,
        p: &Packed,
        r0: usize,
        r1: usize,
        out: *mut f32,
        stride: usize,
    ) {
        match t {
            WType::Q6K => unsafe { go::<true, false>(t, w, row_bytes, p, r0, r1, out, stride) },
            WType::Q4K => unsafe { go::<false, true>(t, w, row_bytes, p, r0, r1, out, stride) },
            _ => unsafe { go::<false, false>(t, w, row_bytes, p, r0, r1, out, stride) },
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn go<const HALF: bool, const MIN: bool>(
        t: WType,
        w: &[u8],
        row_bytes: usize,
        p: &Packed,
        r0: usize,
        r1: usize,
        out: *mut f32,
        stride: usize,
    ) {
        const MR: usize = 4;
        let cols = p.nb * 32;
        let tiles = p.tiles();
        let at = |tile: usize| p.data.as_ptr().wrapping_add(tile * p.nb * BLOCK);
        let mt = |tile: usize| p.mins.as_ptr().wrapping_add(tile * (p.nb / 8) * MINS);
        let interleaved = t == WType::Q5_0R;
        let mut panel = if interleaved {
            assert!(r0.is_multiple_of(16) && r1.is_multiple_of(16));
            Panel::interleaved(cols)
        } else {
            Panel::new(t, MR, cols)
        };
        let mut r = r0;
        while r < r1 {
            let mr = (r1 - r).min(MR);
            // the panel row of weight row r
            let pr = if interleaved {
                if r.is_multiple_of(16) {
                    // SAFETY: rows r..r + 16 are in bounds (asserted by `run`).
                    unsafe { unpack16(&mut panel, w, r / 16) };
                }
                r % 16
            } else {
                for i in 0..mr {
                    if t == WType::Q5_0 {
                        panel.unpack(t, w, row_bytes, r + i, i);
                    } else {
                        let row = &w[(r + i) * row_bytes..(r + i + 1) * row_bytes];
                        // SAFETY: the row's bytes and panel row i are in bounds (asserted inside).
                        unsafe { unpack_row(&mut panel, t, row, i) };
                    }
                }
                0
            };
            let rr = r - r0;
            // SAFETY (all below): panel rows < mr, tiles < p.tiles(); outputs the caller's promise.
            unsafe {
                let mut tl = 0;
                while tl + 2 <= tiles {
                    let (a, m) = ([at(tl), at(tl + 1)], [mt(tl), mt(tl + 1)]);
                    if mr == MR {
                        put(
                            tile_4x2::<HALF, MIN>(&panel, pr, a, m),
                            rr,
                            tl,
                            p.n,
                            out,
                            stride,
                        );
                    } else {
                        for i in 0..mr {
                            put(
                                tile_1x2::<HALF, MIN>(&panel, pr + i, a, m),
                                rr + i,
                                tl,
                                p.n,
                                out,
                                stride,
                            );
                        }
                    }
                    tl += 2;
                }
                if tl < tiles {
                    let (a, m) = ([at(tl)], [mt(tl)]);
                    if mr == MR {
                        put(
                            tile_4x1::<HALF, MIN>(&panel, pr, a, m),
                            rr,
                            tl,
                            p.n,
                            out,
                            stride,
                        );
                    } else {
                        for i in 0..mr {
                            put(
                                tile_1x1::<HALF, MIN>(&panel, pr + i, a, m),
                                rr + i,
                                tl,
                                p.n,
                                out,
                                stride,
                            );
                        }
                    }
                }
            }
            r += mr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::llm::quant::dequant_row;
    use crate::persona::llm::quant::tests::{lcg, weights};

    /// Repacked Q5_0 (16 rows interleaved) gives the same floats as the same rows in GGUF order.
    #[test]
    fn gemm_on_repacked_q5_0_equals_gguf_order() {
        let mut seed = 9;
        let (rows, cols, n) = (48, 256, 21);
        let w = weights(WType::Q5_0, rows, cols, &mut seed);
        let rp = crate::persona::llm::repack::repack(&w, rows, cols);
        let x: Vec<f32> = (0..cols * n).map(|_| lcg(&mut seed) * 3.0).collect();
        let mut acts = Acts::default();
        acts.quantize_for(&x, cols, &[WType::Q5_0R]);
        let mut p = Packed::default();
        p.pack_q8_0(&acts);
        let rb = cols / QK * 22;
        let job = |t, w| MatJob {
            t,
            w,
            row_bytes: rb,
            acts: &acts,
        };
        let (plain, packed) = (job(WType::Q5_0, &w[..]), job(WType::Q5_0R, &rp[..]));
        for (r0, r1) in [(0, rows), (16, 32)] {
            let m = r1 - r0;
            let (mut a, mut b) = (vec![f32::NAN; n * m], vec![f32::NAN; n * m]);
            // SAFETY: both hold n rows of m.
            unsafe {
                run(&plain, &p, r0, r1, a.as_mut_ptr(), m);
                run(&packed, &p, r0, r1, b.as_mut_ptr(), m);
            }
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert_eq!(x.to_bits(), y.to_bits(), "rows {r0}..{r1}: {i}");
                let (c, r) = (i / m, r0 + i % m);
                assert_eq!(y.to_bits(), reference(&packed, r, &p, c).to_bits());
            }
        }
    }

    /// The kernel gives the scalar reference's floats exactly for every tile shape (row tails, an odd
    /// tile, padding, a row range inside the matrix), and the reference is the product of the
    /// dequantized weights and activations up to f32 rounding.
    #[test]
    fn gemm_equals_reference_and_dequantized() {
        let mut seed = 5;
        for t in [WType::Q5_0, WType::Q8_0, WType::Q4K, WType::Q6K] {
            for n in [8, 16, 37] {
                let (rows, cols) = (11, 512);
                let w = weights(t, rows, cols, &mut seed);
                let x: Vec<f32> = (0..cols * n).map(|_| lcg(&mut seed) * 3.0).collect();
                let mut acts = Acts::default();
                acts.quantize_for(&x, cols, &[t]);
                let mut p = Packed::default();
                if t.is_k() {
                    p.pack_q8_k(&acts.k);
                } else {
                    p.pack_q8_0(&acts);
                }
                let rb = cols / t.block_len() * t.block_bytes();
                let job = MatJob {
                    t,
                    w: &w,
                    row_bytes: rb,
                    acts: &acts,
                };
                for (r0, r1) in [(0, rows), (3, 10)] {
                    let m = r1 - r0;
                    let mut out = vec![f32::NAN; n * m];
                    // SAFETY: out holds n rows of m.
                    unsafe { run(&job, &p, r0, r1, out.as_mut_ptr(), m) };
                    for c in 0..n {
                        for r in r0..r1 {
                            let wr = &w[r * rb..(r + 1) * rb];
                            let want = reference(&job, r, &p, c);
                            assert_eq!(
                                out[c * m + r - r0].to_bits(),
                                want.to_bits(),
                                "{t:?} n={n} rows {r0}..{r1}: row {r} act {c}"
                            );
                            let mut deq = vec![0f32; cols];
                            dequant_row(t, wr, &mut deq);
                            let exact: f64 = (0..cols)
                                .map(|i| {
                                    deq[i] as f64 * p.quant(c, i) as f64 * p.scale(c, i / QK) as f64
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
                // and it agrees with the exact `vec_dot` kernels up to float order
                let mut out = vec![0f32; n * rows];
                job.run_with(quant::Kernel::Scalar, 0, rows, &mut out, rows);
                let mut g = vec![0f32; n * rows];
                // SAFETY: g holds n rows of `rows`.
                unsafe { run(&job, &p, 0, rows, g.as_mut_ptr(), rows) };
                for (a, b) in out.iter().zip(&g) {
                    assert!(
                        (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                        "{t:?}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
