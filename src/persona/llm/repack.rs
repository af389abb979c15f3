//! Q5_0 matrices repacked at load, 16 rows interleaved, for decoding on AVX-512 VNNI.
//!
//! A decoded token multiplies every weight once, so its speed is how fast the weights are unpacked
//! (Q5_0 is most of Qwen2.5 Q4_K_M: every 896-wide projection). In GGUF order each 32-value block of a
//! row needs a dozen instructions to become bytes, for 32 multiply-adds. Interleaving 16 rows turns one
//! 64-byte load into 4 values of each of the 16 rows, ready for one `vpdpbusd` against 4 activation
//! bytes broadcast (the same trick as llama.cpp's repacked Q4_0/Q4_K, done our way): about 45
//! instructions per 512 multiply-adds instead of 320. The layout has the size of the GGUF blocks
//! (22 bytes per row and block), per group of 16 rows and per block of 32 columns, 352 bytes:
//!
//! - the 16 rows' scales (f16), in row order;
//! - for each 4-column step `k` (8 of them), a 64-bit mask: bit `4 * row + i` is the fifth bit of
//!   value `4k + i` of that row;
//! - for each pair of steps `(2p, 2p + 1)`, 64 bytes: byte `4 * row + i` holds value `4 * 2p + i` of
//!   the row in its low nibble and value `4 * (2p + 1) + i` in its high nibble.
//!
//! Values are kept unsigned (`q + 16`, 0..31); the product subtracts `16 * sum(activation quants)` of
//! each block in integers, so each block's dot is the same exact integer as with signed values. Per
//! row and token: `acc = fma(f32(dot_b), d_b * a_b, acc)` over the blocks in order, which is the
//! batch GEMM's order for Q5_0 (see `gemm`), so a token gives the same floats alone or in a batch.

use super::quant::{self, Acts, QK, WType};

/// Rows per interleaved group.
pub const ROWS: usize = 16;
/// Bytes of one group's block of 32 columns.
pub const GROUP_BLOCK: usize = ROWS * 22;

/// Whether a Q5_0 matrix of `rows` rows is repacked on this CPU.
pub fn wanted(t: WType, rows: usize) -> bool {
    t == WType::Q5_0 && rows.is_multiple_of(ROWS) && super::gemm::available()
}

/// The interleaved layout of a Q5_0 matrix (`rows` a multiple of 16, GGUF row-major blocks).
pub fn repack(data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let nb = cols / QK;
    let rb = nb * 22;
    assert!(rows.is_multiple_of(ROWS) && data.len() == rows * rb);
    let mut out = vec![0u8; data.len()];
    for (gb, o) in out.chunks_exact_mut(GROUP_BLOCK).enumerate() {
        let (g, b) = (gb / nb, gb % nb);
        let mut masks = [0u64; 8];
        for row in 0..ROWS {
            let wb = &data[(g * ROWS + row) * rb + 22 * b..][..22];
            o[2 * row..2 * row + 2].copy_from_slice(&wb[..2]);
            let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]) as u64;
            for (k, m) in masks.iter_mut().enumerate() {
                *m |= ((qh >> (4 * k)) & 15) << (4 * row);
            }
            // value j's low 4 bits: byte j of qs for j < 16, its high nibble for j >= 16
            let nib = |j: usize| {
                if j < 16 {
                    wb[6 + j] & 15
                } else {
                    wb[6 + j - 16] >> 4
                }
            };
            for p in 0..4 {
                for i in 0..4 {
                    o[96 + 64 * p + 4 * row + i] = nib(8 * p + i) | nib(8 * p + 4 + i) << 4;
                }
            }
        }
        for (k, m) in masks.iter().enumerate() {
            o[32 + 8 * k..40 + 8 * k].copy_from_slice(&m.to_le_bytes());
        }
    }
    out
}

/// Row `r`'s values (`-16..15`) and block scales, from the interleaved layout.
pub fn row(data: &[u8], cols: usize, r: usize, q: &mut [i8], d: &mut [f32]) {
    let nb = cols / QK;
    let (g, row) = (r / ROWS, r % ROWS);
    for b in 0..nb {
        let o = &data[(g * nb + b) * GROUP_BLOCK..(g * nb + b + 1) * GROUP_BLOCK];
        d[b] = quant::f16_at(o, 2 * row);
        for j in 0..QK {
            let (k, i) = (j / 4, j % 4);
            let byte = o[96 + 64 * (k / 2) + 4 * row + i];
            let lo = if k % 2 == 0 { byte & 15 } else { byte >> 4 };
            let hi = (o[32 + 8 * k + (4 * row + i) / 8] >> ((4 * row + i) % 8)) & 1;
            q[QK * b + j] = (lo | hi << 4) as i8 - 16;
        }
    }
}

/// The scalar reference: row `r` times activation row `c` of `acts` (Q8_0 blocks), in the kernel's
/// order.
pub fn reference(data: &[u8], cols: usize, r: usize, acts: &Acts, c: usize) -> f32 {
    let nb = cols / QK;
    let (mut q, mut d) = (vec![0i8; cols], vec![0f32; nb]);
    row(data, cols, r, &mut q, &mut d);
    let mut acc = 0f32;
    for b in 0..nb {
        let (da, _, aq) = acts.block(c, b);
        let dot: i32 = (0..QK)
            .map(|i| q[QK * b + i] as i32 * aq[i] as i8 as i32)
            .sum();
        acc = (dot as f32).mul_add(d[b] * da, acc);
    }
    acc
}

/// Rows `r0..r1` (multiples of 16) of an interleaved matrix times the one activation row of `acts`
/// (`out[r - r0]`), or every row of a batch with the reference (batches normally go through `gemm`).
///
/// # Safety
/// `out[c * stride + r - r0]` must be valid for writes for every activation row `c` and `r0 <= r < r1`,
/// and nothing else may access those elements during the call.
pub unsafe fn run(
    data: &[u8],
    cols: usize,
    acts: &Acts,
    r0: usize,
    r1: usize,
    out: *mut f32,
    stride: usize,
) {
    assert!(r0.is_multiple_of(ROWS) && r1.is_multiple_of(ROWS) && r0 <= r1);
    assert!(r1 / ROWS * (cols / QK) * GROUP_BLOCK <= data.len() && acts.nb * QK == cols);
    #[cfg(target_arch = "x86_64")]
    if acts.n == 1 && acts.g == 1 && super::gemm::available() {
        // SAFETY: the CPU has the features; bounds as asserted and promised.
        unsafe { x86::gemv(data, cols, acts, r0, r1, out) };
        return;
    }
    for r in r0..r1 {
        for c in 0..acts.n {
            // SAFETY: the caller's promise.
            unsafe { *out.add(c * stride + r - r0) = reference(data, cols, r, acts, c) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Acts, GROUP_BLOCK, QK, ROWS};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
    pub unsafe fn gemv(data: &[u8], cols: usize, acts: &Acts, r0: usize, r1: usize, out: *mut f32) {
        let nb = cols / QK;
        // per block: the activation scale and -16 * the sum of its quants (the unsigned offset)
        let mut da = vec![0f32; nb];
        let mut init = vec![0i32; nb];
        for b in 0..nb {
            let (d, _, q) = acts.block(0, b);
            da[b] = d;
            init[b] = -16 * q.iter().map(|&v| v as i8 as i32).sum::<i32>();
        }
        let a = acts.data.as_ptr();
        unsafe {
            let m4 = _mm512_set1_epi8(15);
            let sixteen = _mm512_set1_epi8(16);
            for g in r0 / ROWS..r1 / ROWS {
                let mut acc = _mm512_setzero_ps();
                let gp = data.as_ptr().add(g * nb * GROUP_BLOCK);
                for b in 0..nb {
                    let o = gp.add(b * GROUP_BLOCK);
                    _mm_prefetch(o.add(4 * GROUP_BLOCK) as *const i8, _MM_HINT_T0);
                    _mm_prefetch(o.add(4 * GROUP_BLOCK + 128) as *const i8, _MM_HINT_T0);
                    _mm_prefetch(o.add(4 * GROUP_BLOCK + 256) as *const i8, _MM_HINT_T0);
                    // the activation block's quants start 8 bytes in (after d and s)
                    let aq = a.add(b * super::quant::ABLOCK + 8);
                    let mut isum = _mm512_set1_epi32(*init.get_unchecked(b));
                    for p in 0..4 {
                        let v = _mm512_maskz_loadu_epi8(!0, o.add(96 + 64 * p) as *const i8);
                        let lo = _mm512_and_si512(v, m4);
                        let hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                        let k0 = (o.add(32 + 16 * p) as *const u64).read_unaligned();
                        let k1 = (o.add(40 + 16 * p) as *const u64).read_unaligned();
                        let lo = _mm512_mask_add_epi8(lo, k0, lo, sixteen);
                        let hi = _mm512_mask_add_epi8(hi, k1, hi, sixteen);
                        let x0 = _mm512_set1_epi32((aq.add(8 * p) as *const i32).read_unaligned());
                        let x1 =
                            _mm512_set1_epi32((aq.add(8 * p + 4) as *const i32).read_unaligned());
                        isum = _mm512_dpbusd_epi32(isum, lo, x0);
                        isum = _mm512_dpbusd_epi32(isum, hi, x1);
                    }
                    let dw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(!0, o as *const i16));
                    acc = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(isum),
                        _mm512_mul_ps(dw, _mm512_set1_ps(*da.get_unchecked(b))),
                        acc,
                    );
                }
                _mm512_mask_storeu_ps(out.add(g * ROWS - r0), !0, acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::llm::quant::tests::{lcg, weights};

    /// Repacking keeps every value and scale; the kernel gives the reference's floats, which are the
    /// dequantized product up to f32 rounding and the batch GEMM's floats for the same token.
    #[test]
    fn repacked_q5_0_keeps_values_and_matches_reference() {
        let mut seed = 3;
        let (rows, cols) = (48, 256);
        let nb = cols / QK;
        let w = weights(WType::Q5_0, rows, cols, &mut seed);
        let rp = repack(&w, rows, cols);
        let (mut q, mut d) = (vec![0i8; cols], vec![0f32; nb]);
        let mut deq = vec![0f32; cols];
        for r in 0..rows {
            row(&rp, cols, r, &mut q, &mut d);
            quant::dequant_row(WType::Q5_0, &w[r * nb * 22..(r + 1) * nb * 22], &mut deq);
            for i in 0..cols {
                assert_eq!(q[i] as f32 * d[i / QK], deq[i], "row {r} col {i}");
            }
        }
        let x: Vec<f32> = (0..cols).map(|_| lcg(&mut seed) * 3.0).collect();
        let mut acts = Acts::default();
        acts.quantize(&x, cols);
        for (r0, r1) in [(0, rows), (16, 32)] {
            let mut out = vec![f32::NAN; r1 - r0];
            // SAFETY: out holds r1 - r0 values.
            unsafe { run(&rp, cols, &acts, r0, r1, out.as_mut_ptr(), r1 - r0) };
            for r in r0..r1 {
                let want = reference(&rp, cols, r, &acts, 0);
                assert_eq!(
                    out[r - r0].to_bits(),
                    want.to_bits(),
                    "rows {r0}..{r1}: row {r}"
                );
                quant::dequant_row(WType::Q5_0, &w[r * nb * 22..(r + 1) * nb * 22], &mut deq);
                let exact: f64 = (0..cols)
                    .map(|i| {
                        let (da, _, aq) = acts.block(0, i / QK);
                        deq[i] as f64 * (aq[i % QK] as i8 as f64 * da as f64)
                    })
                    .sum();
                let mag: f64 = (0..cols).map(|i| (deq[i] * x[i]).abs() as f64).sum();
                assert!((exact - want as f64).abs() <= 1e-4 * mag + 1e-4);
            }
        }
    }
}
