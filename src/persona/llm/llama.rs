//! Our own forward pass for `llama` and `qwen2` GGUF files whose matrices are Q4_0, Q4_1, Q5_0, Q8_0,
//! Q4_K or Q6_K (SmolLM2, Qwen2.5 Q4_K_M and most small files of the two families); anything else goes
//! through candle-transformers. qwen2 differs from llama in three places: Q, K and V projections have
//! f32 biases (added to the projection's output, as ggml's separate `add`), rotary pairs are
//! `(i, i + d/2)` (GPT-NeoX layout) instead of adjacent values, and the rope base (1e6) and norm epsilon
//! come from the `qwen2.*` metadata; the output matrix is tied to the embedding when the file has no
//! `output.weight`, as for llama.
//!
//! Exactness for the K-quants and Q5_0 (Qwen2.5 Q4_K_M): activations are quantized as llama.cpp does
//! (Q8_K for Q4_K/Q6_K, Q8_0 for Q5_0/Q8_0), so every block's integer dot is the same integer as
//! llama.cpp's. llama.cpp itself does not sum those in one order on this file: it repacks Q4_K
//! matrices into 8x8 interleaved blocks (`REPACK`) and runs prompt batches of Q5_0/Q8_0 through
//! tinyBLAS (`LLAMAFILE`). Here a single token's K-quant and Q8_0 rows follow llama.cpp's x86
//! `vec_dot` lanes (see `quant`); the layers' Q5_0 matrices are repacked at load, 16 rows
//! interleaved, and a token sums their blocks in order (`repack`); batches of all four formats go
//! through `gemm` in the same block order. So on Qwen our logits are close to llama.cpp's (checked by
//! `tests/llm_qwen.rs` against a fixture) but not the same floats, unlike SmolLM2 Q4_1 below.
//!
//! Which llama.cpp we reproduce, and how exactly: llama.cpp's CPU backend as llama-cpp-python 0.3.36
//! runs it by default (flash attention off, f16 K and V cache, prompt in one batch), built for an x86
//! CPU with AVX-512. On SmolLM2 Q4_1 our logits are the same floats as llama.cpp's at every layer, for
//! the prompt batch and for each decoded token (checked tensor by tensor against llama.cpp's own
//! intermediate tensors; `tests/llm.rs` checks the logits and all 32 greedy ids of the fixture). That
//! takes reproducing each operation's order, not only its formula, because greedy decoding has steps
//! decided by 0.014 logits and f32 attention alone moves logits by 0.7:
//!
//! - embedding row: the Q4_1 block dequantized as `q * d + m` (one fused multiply-add);
//! - RMS norm: squares summed in f64, `mean` rounded to f32, `x * (1/sqrt(mean + eps))`, then times the
//!   weight (a separate multiply, as ggml's `rms_norm` then `mul`);
//! - projections: each input row quantized once to Q8_1/Q8_0 and integer block dot products in
//!   llama.cpp's `vec_dot` order (see `quant`; llama.cpp has no repacked or tinyBLAS path for Q4_1, so
//!   a batch uses the same dot product as a single token);
//! - rotary embedding, "normal" (adjacent pairs) layout: `theta_i = pos * base^(-2i/d)` by repeated
//!   multiplication from libm's `powf`, libm `cosf`/`sinf`, and each rotated value with its first
//!   product fused (`fma(x0, cos, -(x1 * sin))`, as GCC contracts ggml's expression);
//! - attention (see `attn`): the query and the probabilities rounded to f16, sums in the order of the
//!   kernel llama.cpp picks for the batch size (tinyBLAS for two or more tokens, `ggml_vec_dot_f16`
//!   for one), softmax with ggml's vectorised `exp` and an f64 total;
//! - feed-forward: `silu(gate) * up` with the same `exp` (ggml's fused SwiGLU), then the down
//!   projection; residual adds in f32; the final norm and the output matrix (tied to the embedding when
//!   the file has no `output.weight`) give the logits of the last token.
//!
//! Known limits of the exactness: llama.cpp splits a prompt into batches of `n_batch` (512 there, 256
//! here; only a batch of exactly one token changes kernel); other CPUs (AVX2 only, ARM) make llama.cpp
//! itself use other orders; the reference mode (`reference_f32`, tests) keeps attention in f32.
//!
//! A prompt is evaluated as one batch (each unpacked weight block is reused for up to 4 tokens); the KV
//! cache (f16, each KV head's positions contiguous) can be truncated to any length, which is what the
//! prefix cache needs.
//!
//! Threading: one compute thread by default. With `threads > 1` the model owns a [`Pool`] of that many
//! threads (the caller's counts) and, per forward step, uses as many of them as its [`ThreadBudget`]
//! allows then: the Q, K and V projections run as one job split by rows, so do the gate and up
//! projections (each chunk applies SwiGLU to its own rows), the output and down projections and the
//! logits; attention is split by (token, KV group) or, when those would spread unevenly over the
//! threads, by (token, head). Every chunk writes its own outputs in place and
//! computes them exactly as one thread would, so the logits are the same floats at any thread count.
//! Norms, rotary embedding and activation quantization stay on the caller's thread (they are small).

use super::attn::{self, AttnKernel, AttnScratch};
use super::pool::Pool;
use super::quant::{self, Acts, Kernel, MatJob, QK, WType};
use super::repack;
use super::{GgufFile, ThreadBudget, load_err};
use crate::persona::PersonaError;
use half::f16;
use std::sync::Mutex;

/// A quantized matrix: `rows` output rows of `cols` inputs, GGUF blocks.
pub struct QMat {
    pub t: WType,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

impl QMat {
    fn row_bytes(&self) -> usize {
        self.cols / self.t.block_len() * self.t.block_bytes()
    }
}

#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub eps: f32,
    pub rope_base: f32,
    pub rope_dim: usize,
    pub vocab: usize,
    pub train_ctx: usize,
    /// Rotary pairs `(i, i + rope_dim / 2)` (GPT-NeoX layout, qwen2) instead of adjacent ones (llama).
    pub neox: bool,
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMat,
    wk: QMat,
    wv: QMat,
    /// Q, K and V biases (qwen2), added to the projections' f32 outputs.
    bias: Option<[Vec<f32>; 3]>,
    wo: QMat,
    ffn_norm: Vec<f32>,
    gate: QMat,
    up: QMat,
    down: QMat,
    /// f16 bits, `[kv head][position][head dim]` with room for `ctx` positions per head.
    k_cache: Vec<u16>,
    /// As `k_cache`.
    v_cache: Vec<u16>,
}

/// Scratch buffers, reused across calls.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    acts: Acts,
    rope: Vec<(f32, f32)>,
    /// Per compute thread: attention buffers and the f16-rounded query.
    attn: Vec<Mutex<(AttnScratch, Vec<f32>)>>,
}

pub struct LlamaModel {
    pub cfg: LlamaConfig,
    tok_embd: QMat,
    output: Option<QMat>,
    out_norm: Vec<f32>,
    layers: Vec<Layer>,
    ctx: usize,
    n_past: usize,
    pool: Option<Pool>,
    budget: ThreadBudget,
    s: Scratch,
    /// Reference mode: f32 activations times dequantized weights (slow; for tests).
    pub reference_f32: bool,
}

/// Which GGUF files this engine takes: architecture `llama` (no Q/K/V biases) or `qwen2` (with them),
/// every matrix Q4_0, Q4_1, Q5_0, Q8_0, Q4_K or Q6_K, no rope scaling tensor.
pub fn supports(g: &GgufFile, arch: &str) -> bool {
    if arch != "llama" && arch != "qwen2" {
        return false;
    }
    let ok = |name: &str| g.ggml_type(name).and_then(WType::from_ggml).is_some();
    g.has("token_embd.weight")
        && ok("token_embd.weight")
        && (!g.has("output.weight") || ok("output.weight"))
        && !g.has("rope_freqs.weight")
        && g.has("blk.0.attn_q.weight")
        && (0..g.u32_md(&format!("{arch}.block_count")).unwrap_or(0) as usize).all(|i| {
            [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ]
            .iter()
            .all(|n| ok(&format!("blk.{i}.{n}.weight")))
        })
        && (arch == "qwen2" || !g.has("blk.0.attn_q.bias"))
}

impl LlamaModel {
    /// Load with a pool of `threads` compute threads, of which `budget` says how many to use per step.
    pub fn load(
        g: &mut GgufFile,
        ctx: usize,
        threads: usize,
        budget: ThreadBudget,
    ) -> Result<Self, PersonaError> {
        let arch = g
            .str_md("general.architecture")
            .unwrap_or_else(|| "llama".into());
        let md = |k: &str| {
            g.u32_md(&format!("{arch}.{k}"))
                .map(|v| v as usize)
                .ok_or_else(|| load_err(&g.path, format!("missing metadata `{arch}.{k}`")))
        };
        let n_layer = md("block_count")?;
        let d_model = md("embedding_length")?;
        let n_head = md("attention.head_count")?;
        let n_kv_head = g
            .u32_md(&format!("{arch}.attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(n_head);
        let d_ff = md("feed_forward_length")?;
        let head_dim = g
            .u32_md(&format!("{arch}.attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(d_model / n_head);
        let cfg = LlamaConfig {
            n_layer,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            d_ff,
            eps: g
                .f32_md(&format!("{arch}.attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            rope_base: g
                .f32_md(&format!("{arch}.rope.freq_base"))
                .unwrap_or(10000.0),
            rope_dim: g
                .u32_md(&format!("{arch}.rope.dimension_count"))
                .map(|v| v as usize)
                .unwrap_or(head_dim),
            vocab: 0,
            train_ctx: g
                .u32_md(&format!("{arch}.context_length"))
                .map(|v| v as usize)
                .unwrap_or(4096),
            neox: arch == "qwen2",
        };
        if !n_head.is_multiple_of(n_kv_head)
            || !head_dim.is_multiple_of(2)
            || !d_model.is_multiple_of(QK)
            || !d_ff.is_multiple_of(QK)
        {
            return Err(load_err(&g.path, "unsupported llama shape".into()));
        }
        let qmat = |g: &mut GgufFile, name: &str| -> Result<QMat, PersonaError> {
            let (t, dims, data) = g.raw(name)?;
            let t = WType::from_ggml(t)
                .ok_or_else(|| load_err(&g.path, format!("tensor {name}: unsupported type")))?;
            if !dims[0].is_multiple_of(t.block_len()) {
                return Err(load_err(
                    &g.path,
                    format!(
                        "tensor {name}: {} columns is not whole {t:?} blocks",
                        dims[0]
                    ),
                ));
            }
            Ok(QMat {
                t,
                cols: dims[0],
                rows: dims.get(1).copied().unwrap_or(1),
                data,
            })
        };
        let tok_embd = qmat(g, "token_embd.weight")?;
        let output = if g.has("output.weight") {
            Some(qmat(g, "output.weight")?)
        } else {
            None
        };
        let out_norm = g.f32_tensor("output_norm.weight")?;
        let kv_len = ctx * n_kv_head * head_dim;
        let mut layers = Vec::with_capacity(n_layer);
        // the layers' Q5_0 matrices, interleaved for the decode kernel where the CPU runs it
        let qmat = |g: &mut GgufFile, name: &str| -> Result<QMat, PersonaError> {
            let mut m = qmat(g, name)?;
            if repack::wanted(m.t, m.rows) {
                m.data = repack::repack(&m.data, m.rows, m.cols);
                m.t = WType::Q5_0R;
            }
            Ok(m)
        };
        for i in 0..n_layer {
            let p = |n: &str| format!("blk.{i}.{n}.weight");
            layers.push(Layer {
                attn_norm: g.f32_tensor(&p("attn_norm"))?,
                wq: qmat(g, &p("attn_q"))?,
                wk: qmat(g, &p("attn_k"))?,
                wv: qmat(g, &p("attn_v"))?,
                bias: if g.has(&format!("blk.{i}.attn_q.bias")) {
                    let mut b = |n: &str| g.f32_tensor(&format!("blk.{i}.{n}.bias"));
                    let (bq, bk, bv) = (b("attn_q"), b("attn_k"), b("attn_v"));
                    Some([bq?, bk?, bv?])
                } else {
                    None
                },
                wo: qmat(g, &p("attn_output"))?,
                ffn_norm: g.f32_tensor(&p("ffn_norm"))?,
                gate: qmat(g, &p("ffn_gate"))?,
                up: qmat(g, &p("ffn_up"))?,
                down: qmat(g, &p("ffn_down"))?,
                k_cache: vec![0; kv_len],
                v_cache: vec![0; kv_len],
            });
        }
        let mut cfg = cfg;
        cfg.vocab = output.as_ref().unwrap_or(&tok_embd).rows;
        let pool =
            if threads > 1 {
                Some(Pool::new(threads).map_err(|e| {
                    PersonaError::Other(format!("cannot start compute threads: {e}"))
                })?)
            } else {
                None
            };
        let scratch = Scratch {
            attn: (0..threads.max(1))
                .map(|_| Mutex::new((AttnScratch::default(), vec![0f32; n_head * head_dim])))
                .collect(),
            ..Scratch::default()
        };
        Ok(LlamaModel {
            cfg,
            tok_embd,
            output,
            out_norm,
            layers,
            ctx,
            n_past: 0,
            pool,
            budget,
            s: scratch,
            reference_f32: false,
        })
    }

    pub fn ctx(&self) -> usize {
        self.ctx
    }

    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Forget everything after the first `n` cached positions.
    pub fn truncate(&mut self, n: usize) {
        self.n_past = self.n_past.min(n);
    }

    /// Evaluate `tokens` after the cached ones; returns the logits of the last token.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, PersonaError> {
        if tokens.is_empty() {
            return Err(PersonaError::Generation("no tokens to evaluate".into()));
        }
        if self.n_past + tokens.len() > self.ctx {
            return Err(PersonaError::Generation(format!(
                "context full: {} cached + {} new tokens > {} (drop older turns)",
                self.n_past,
                tokens.len(),
                self.ctx
            )));
        }
        let mut logits = Vec::new();
        for chunk in tokens.chunks(256) {
            logits = self.forward_chunk(chunk)?;
        }
        Ok(logits)
    }

    fn forward_chunk(&mut self, tokens: &[u32]) -> Result<Vec<f32>, PersonaError> {
        let c = &self.cfg;
        let (n, d, hd) = (tokens.len(), c.d_model, c.head_dim);
        let dq = c.n_head * hd;
        let dkv = c.n_kv_head * hd;
        let s = &mut self.s;
        // embeddings
        s.x.resize(n * d, 0.0);
        let erb = self.tok_embd.row_bytes();
        for (i, &t) in tokens.iter().enumerate() {
            let t = t as usize;
            if t >= self.tok_embd.rows {
                return Err(PersonaError::Generation(format!(
                    "token id {t} out of range"
                )));
            }
            quant::dequant_row(
                self.tok_embd.t,
                &self.tok_embd.data[t * erb..(t + 1) * erb],
                &mut s.x[i * d..(i + 1) * d],
            );
        }
        // rotary tables for these positions
        let half = c.rope_dim / 2;
        s.rope.clear();
        let theta_scale = c.rope_base.powf(-2.0 / c.rope_dim as f32);
        for i in 0..n {
            let mut theta = (self.n_past + i) as f32;
            for _ in 0..half {
                s.rope.push((theta.cos(), theta.sin()));
                theta *= theta_scale;
            }
        }
        s.h.resize(n * d, 0.0);
        s.q.resize(n * dq, 0.0);
        s.k.resize(n * dkv, 0.0);
        s.v.resize(n * dkv, 0.0);
        s.att.resize(n * dq, 0.0);
        s.o.resize(n * d, 0.0);
        s.g.resize(n * c.d_ff, 0.0);
        s.u.resize(n * c.d_ff, 0.0);
        let threads = self.budget.get();
        let mut pool = Par {
            pool: self.pool.as_mut(),
            threads,
        };
        let rf = self.reference_f32;
        let scale = 1.0 / (hd as f32).sqrt();
        let group = c.n_head / c.n_kv_head;
        let ctx = self.ctx;
        for l in self.layers.iter_mut() {
            rms_norm(&s.x, &l.attn_norm, c.eps, d, &mut s.h);
            s.acts.quantize_for(&s.h, d, &[l.wq.t, l.wk.t, l.wv.t]);
            if rf {
                for (w, out) in [(&l.wq, &mut s.q), (&l.wk, &mut s.k), (&l.wv, &mut s.v)] {
                    matmul_f32(w, &s.h, out);
                }
            } else {
                pool.matmul(
                    &mut [
                        (&l.wq, &mut s.q[..]),
                        (&l.wk, &mut s.k[..]),
                        (&l.wv, &mut s.v[..]),
                    ],
                    &s.acts,
                    None,
                );
            }
            if let Some([bq, bk, bv]) = &l.bias {
                for (out, b) in [(&mut s.q, bq), (&mut s.k, bk), (&mut s.v, bv)] {
                    for row in out.chunks_exact_mut(b.len()) {
                        row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
                    }
                }
            }
            let rope_fn: fn(&mut [f32], &[(f32, f32)]) =
                if c.neox { apply_rope_neox } else { apply_rope };
            for i in 0..n {
                let rope = &s.rope[i * half..(i + 1) * half];
                for hq in s.q[i * dq..(i + 1) * dq].chunks_exact_mut(hd) {
                    rope_fn(hq, rope);
                }
                for hk in s.k[i * dkv..(i + 1) * dkv].chunks_exact_mut(hd) {
                    rope_fn(hk, rope);
                }
                // cache layout [kv head][position][head dim]: a head's rows are contiguous
                let pos = self.n_past + i;
                for kvh in 0..c.n_kv_head {
                    let (src, dst) = (i * dkv + kvh * hd, (kvh * ctx + pos) * hd);
                    to_f16(&s.k[src..src + hd], &mut l.k_cache[dst..dst + hd]);
                    to_f16(&s.v[src..src + hd], &mut l.v_cache[dst..dst + hd]);
                }
            }
            // attention, one chunk per (token, KV group) or per (token, head)
            {
                let kernel = if rf {
                    AttnKernel::Reference
                } else {
                    AttnKernel::for_batch(n)
                };
                let per = if grouped_chunks(n * c.n_kv_head, pool.threads()) {
                    group
                } else {
                    1
                };
                let att = Out(s.att.as_mut_ptr(), s.att.len());
                let (q, kc, vc, attn) = (&s.q, &l.k_cache, &l.v_cache, &s.attn);
                let n_past = self.n_past;
                let chunks = c.n_head / per;
                pool.run(n * chunks, &|chunk, t| {
                    let (i, h) = (chunk / chunks, chunk % chunks * per);
                    let mut guard = attn[t].lock().unwrap_or_else(|e| e.into_inner());
                    let (scratch, qh) = &mut *guard;
                    let (at, w) = (i * dq + h * hd, per * hd);
                    kernel.round_query(&q[at..at + w], &mut qh[..w]);
                    // SAFETY: each chunk owns the outputs of its `per` heads of its token.
                    let out = unsafe { att.slice(at, w) };
                    attn::attend_group(
                        kernel,
                        &qh[..w],
                        hd,
                        (kc, vc),
                        (hd, (h / group) * ctx * hd),
                        n_past + i + 1,
                        scale,
                        scratch,
                        out,
                    );
                });
            }
            s.acts.quantize_for(&s.att, dq, &[l.wo.t]);
            if rf {
                matmul_f32(&l.wo, &s.att, &mut s.o);
            } else {
                pool.matmul(&mut [(&l.wo, &mut s.o[..])], &s.acts, None);
            }
            s.x.iter_mut().zip(&s.o).for_each(|(x, o)| *x += o);
            // feed-forward
            rms_norm(&s.x, &l.ffn_norm, c.eps, d, &mut s.h);
            s.acts.quantize_for(&s.h, d, &[l.gate.t, l.up.t]);
            if rf {
                matmul_f32(&l.gate, &s.h, &mut s.g);
                matmul_f32(&l.up, &s.h, &mut s.u);
                attn::swiglu(&mut s.g, &s.u);
            } else {
                pool.matmul(
                    &mut [(&l.gate, &mut s.g[..]), (&l.up, &mut s.u[..])],
                    &s.acts,
                    Some(c.d_ff),
                );
            }
            s.acts.quantize_for(&s.g, c.d_ff, &[l.down.t]);
            if rf {
                matmul_f32(&l.down, &s.g, &mut s.o);
            } else {
                pool.matmul(&mut [(&l.down, &mut s.o[..])], &s.acts, None);
            }
            s.x.iter_mut().zip(&s.o).for_each(|(x, o)| *x += o);
        }
        self.n_past += n;
        // logits of the last token
        let last = &s.x[(n - 1) * d..n * d];
        let mut h = vec![0f32; d];
        rms_norm(last, &self.out_norm, c.eps, d, &mut h);
        let out = self.output.as_ref().unwrap_or(&self.tok_embd);
        let mut logits = vec![0f32; out.rows];
        if rf {
            matmul_f32(out, &h, &mut logits);
        } else {
            s.acts.quantize_for(&h, d, &[out.t]);
            pool.matmul(&mut [(out, &mut logits[..])], &s.acts, None);
        }
        Ok(logits)
    }
}

/// An output buffer that the chunks of one job fill in disjoint places.
#[derive(Clone, Copy)]
struct Out(*mut f32, usize);
// SAFETY: every chunk writes a disjoint set of indices (see each use).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// # Safety
    /// In bounds (checked) and not accessed by another chunk.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, at: usize, len: usize) -> &mut [f32] {
        assert!(at + len <= self.1);
        // SAFETY: in bounds; disjointness is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// The compute threads of one forward step.
struct Par<'a> {
    pool: Option<&'a mut Pool>,
    threads: usize,
}

impl Par<'_> {
    fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| self.threads.min(p.size()))
    }

    fn run(&mut self, total: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        let threads = self.threads();
        match self.pool.as_deref_mut() {
            Some(p) if threads > 1 => p.run(threads, total, f),
            _ => (0..total).for_each(|c| f(c, 0)),
        }
    }

    /// `out[c * rows + r] = w_r · act_c` for each `(w, out)` of `mats`, all of the same activations, as
    /// one job split by rows (chunks of a multiple of 16 rows, the repacked layout's groups; a few per
    /// thread so that a thread that falls behind costs little). With `glu = Some(d_ff)`, `mats` is `[gate, up]` and each chunk
    /// also applies `silu(gate) * up` to its own rows of `gate`.
    fn matmul(&mut self, mats: &mut [(&QMat, &mut [f32])], acts: &Acts, glu: Option<usize>) {
        let threads = self.threads();
        let n = acts.n;
        for (w, out) in mats.iter() {
            assert!(out.len() >= n * w.rows);
            assert!(if w.t.is_k() {
                w.cols == acts.k.nb * quant::QK_K && acts.k.n == n
            } else {
                w.cols == acts.nb * QK
            });
        }
        let jobs: Vec<(MatJob, Out, usize)> = mats
            .iter_mut()
            .map(|(w, out)| {
                (
                    MatJob {
                        t: w.t,
                        w: &w.data,
                        row_bytes: w.row_bytes(),
                        acts,
                    },
                    Out(out.as_mut_ptr(), out.len()),
                    w.rows,
                )
            })
            .collect();
        let k = Kernel::best();
        if let Some(dff) = glu {
            assert!(jobs.len() == 2 && jobs.iter().all(|j| j.2 == dff));
            let per = if threads > 1 {
                dff.div_ceil(4 * threads).next_multiple_of(repack::ROWS)
            } else {
                dff
            };
            let (g, u) = (jobs[0].1, jobs[1].1);
            self.run(dff.div_ceil(per), &|chunk, _| {
                let (r0, r1) = (chunk * per, ((chunk + 1) * per).min(dff));
                // SAFETY: rows r0..r1 of every activation row belong to this chunk; bounds asserted.
                unsafe {
                    jobs[0].0.run_raw(k, r0, r1, g.0.add(r0), dff);
                    jobs[1].0.run_raw(k, r0, r1, u.0.add(r0), dff);
                    for c in 0..n {
                        let gs = g.slice(c * dff + r0, r1 - r0);
                        attn::swiglu(gs, u.slice(c * dff + r0, r1 - r0));
                    }
                }
            });
            return;
        }
        let total_rows: usize = jobs.iter().map(|j| j.2).sum();
        let per = if threads > 1 {
            total_rows
                .div_ceil(4 * threads)
                .next_multiple_of(repack::ROWS)
        } else {
            usize::MAX
        };
        // (job, first row, end row) per chunk
        let mut chunks = Vec::new();
        for (i, j) in jobs.iter().enumerate() {
            let mut r = 0;
            while r < j.2 {
                let e = r.saturating_add(per).min(j.2);
                chunks.push((i, r, e));
                r = e;
            }
        }
        self.run(chunks.len(), &|chunk, _| {
            let (i, r0, r1) = chunks[chunk];
            let (job, out, rows) = &jobs[i];
            // SAFETY: rows r0..r1 of every activation row belong to this chunk; bounds asserted.
            unsafe { job.run_raw(k, r0, r1, out.0.add(r0), *rows) };
        });
    }
}

/// The reference mode's product: dequantized weights times the f32 rows of `x`.
fn matmul_f32(w: &QMat, x: &[f32], out: &mut [f32]) {
    let mut row = vec![0f32; w.cols];
    let rb = w.row_bytes();
    let n = x.len() / w.cols;
    let (mut q, mut d) = (vec![0i8; w.cols], vec![0f32; w.cols / QK]);
    for r in 0..w.rows {
        if w.t == WType::Q5_0R {
            repack::row(&w.data, w.cols, r, &mut q, &mut d);
            for (i, o) in row.iter_mut().enumerate() {
                *o = q[i] as f32 * d[i / QK];
            }
        } else {
            quant::dequant_row(w.t, &w.data[r * rb..(r + 1) * rb], &mut row);
        }
        for c in 0..n {
            out[c * w.rows + r] = row
                .iter()
                .zip(&x[c * w.cols..(c + 1) * w.cols])
                .map(|(a, b)| a * b)
                .sum();
        }
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, d: usize, out: &mut [f32]) {
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let sum: f64 = xr.iter().map(|v| (v * v) as f64).sum();
        let mean = (sum / d as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, xv), wv) in or.iter_mut().zip(xr).zip(w) {
            *o = (xv * scale) * wv;
        }
    }
}

/// Rotate adjacent pairs; the first product of each output is fused with the sum, as ggml's compiled
/// `x0*cos - x1*sin` / `x0*sin + x1*cos` are (measured: bit-identical to llama.cpp's rotated Q and K).
fn apply_rope(x: &mut [f32], rope: &[(f32, f32)]) {
    for (pair, &(cos, sin)) in x.chunks_exact_mut(2).zip(rope) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a.mul_add(cos, -(b * sin));
        pair[1] = a.mul_add(sin, b * cos);
    }
}

/// Rotate the pairs `(i, i + d/2)` (GPT-NeoX layout), each with the same fused products as `apply_rope`.
fn apply_rope_neox(x: &mut [f32], rope: &[(f32, f32)]) {
    let half = rope.len();
    for (i, &(cos, sin)) in rope.iter().enumerate() {
        let (a, b) = (x[i], x[i + half]);
        x[i] = a.mul_add(cos, -(b * sin));
        x[i + half] = a.mul_add(sin, b * cos);
    }
}

fn to_f16(x: &[f32], out: &mut [u16]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o = f16::from_f32(*v).to_bits();
    }
}

/// Whether attention runs one chunk per (token, KV group) rather than per (token, query head): the
/// grouped chunks read each cached value row once for the group's heads, but are fewer, so with
/// several threads they are used only when they still spread evenly (a multiple of the threads, or
/// at least four per thread); one decoded token on 2 threads (3 groups) keeps the 9 head chunks.
fn grouped_chunks(groups: usize, threads: usize) -> bool {
    threads <= 1 || groups.is_multiple_of(threads) || groups >= 4 * threads
}
