//! Whisper's network on plain f32 rows: the encoder over one window and a decoder that keeps its
//! self-attention keys and values (one row per token written) and computes the cross-attention's
//! keys and values once per window.
//!
//! Activations are time-major (`frames × d_model` rows). The convolutions are matrix products over
//! three shifted rows of their input (the kernel's weights reordered to `out × (tap, in)` at load);
//! the self-attention's query, key and value are one product with the fused weight CTranslate2
//! stores; a projection's bias is written first and the product added to it, and the residual
//! stream takes the output projections directly. Attention runs in blocks of query rows so that a
//! block's scores stay in the core's cache. Arithmetic is f32 throughout, as faster-whisper's
//! `compute_type="float32"`; products go through the `gemm` crate ([`super::kernels`]).

use super::kernels::{Packed, gelu, layer_norm, matmul, matmul_packed, softmax};
use candle_core::Tensor;
use std::collections::HashMap;

/// Query rows per attention block (64 × 1500 scores: 384 KB).
const BLOCK: usize = 64;

#[derive(Debug, thiserror::Error)]
#[error("Whisper weights: {0}")]
pub struct NetError(pub String);

struct Linear {
    /// The weight `out × in` as the right operand `in × out` of the product, packed at load.
    w: Packed,
    b: Vec<f32>,
    out: usize,
    inp: usize,
}

impl Linear {
    /// `y[r] = x[r] · wᵀ + b` (`acc`: `y[r] += …`, the bias too) for `rows` rows.
    fn apply(&self, threads: usize, x: &[f32], rows: usize, y: &mut [f32], acc: bool) {
        self.apply_strided(threads, (x, self.inp), rows, y, acc);
    }

    /// As [`Linear::apply`] with input row `r` at `x[r·lda..]`.
    fn apply_strided(
        &self,
        threads: usize,
        (x, lda): (&[f32], usize),
        rows: usize,
        y: &mut [f32],
        acc: bool,
    ) {
        let out = self.out;
        let y = &mut y[..rows * out];
        for r in y.chunks_exact_mut(out) {
            if acc {
                r.iter_mut().zip(&self.b).for_each(|(v, b)| *v += b);
            } else {
                r.copy_from_slice(&self.b);
            }
        }
        if threads > 1 && rows * out * self.inp >= 1 << 18 {
            // blocks of rows (a multiple of the kernel's 6) on rayon's threads
            use rayon::prelude::*;
            let per = rows.div_ceil(threads).div_ceil(6) * 6;
            y.par_chunks_mut(per * out).enumerate().for_each(|(i, y)| {
                let n = y.len() / out;
                matmul_packed(n, (y, out), true, (&x[i * per * lda..], lda), &self.w, 1.0);
            });
        } else {
            matmul_packed(rows, (y, out), true, (x, lda), &self.w, 1.0);
        }
    }
}

struct Norm {
    g: Vec<f32>,
    b: Vec<f32>,
}

struct EncoderLayer {
    ln1: Norm,
    qkv: Linear,
    out: Linear,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
}

struct DecoderLayer {
    ln1: Norm,
    qkv: Linear,
    out: Linear,
    ln_x: Norm,
    xq: Linear,
    /// Keys then values from the encoder's output (`2·d × d`).
    xkv: Linear,
    xout: Linear,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// The loaded network.
pub struct Net {
    pub d: usize,
    pub n_mels: usize,
    pub vocab: usize,
    /// Encoder frames after the strided convolution (1500).
    pub audio_ctx: usize,
    /// Decoder positions (448).
    pub text_ctx: usize,
    enc_heads: usize,
    dec_heads: usize,
    /// `d × (3 · n_mels)`, taps outer.
    conv1: Linear,
    conv2: Linear,
    enc_pos: Vec<f32>,
    enc: Vec<EncoderLayer>,
    enc_ln: Norm,
    /// The token embedding `vocab × d` as the logits' right operand (`d × vocab`), packed.
    embed: Packed,
    dec_pos: Vec<f32>,
    dec: Vec<DecoderLayer>,
    dec_ln: Norm,
}

/// The decoder's state for one window: the encoder's keys and values per layer, and the
/// self-attention cache.
pub struct DecoderState {
    /// Per layer and head, the encoder's keys (`head_dim × frames`) and values (`frames ×
    /// head_dim`), packed for the product.
    cross: Vec<Vec<(Packed, Packed)>>,
    frames: usize,
    /// Per layer, `text_ctx × 2d`.
    cache: Vec<Vec<f32>>,
    /// Tokens in the cache.
    pub len: usize,
}

fn take(t: &mut HashMap<String, Tensor>, name: &str) -> Result<(Vec<f32>, Vec<usize>), NetError> {
    let t = t
        .remove(name)
        .ok_or_else(|| NetError(format!("no tensor {name}")))?;
    let dims = t.dims().to_vec();
    let v = t
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| NetError(format!("{name}: {e}")))?;
    Ok((v, dims))
}

fn norm(t: &mut HashMap<String, Tensor>, name: &str, d: usize) -> Result<Norm, NetError> {
    let (g, _) = take(t, &format!("{name}.weight"))?;
    let (b, _) = take(t, &format!("{name}.bias"))?;
    if g.len() != d || b.len() != d {
        return Err(NetError(format!("{name}: not {d} wide")));
    }
    Ok(Norm { g, b })
}

/// The linear layers `names` of `prefix` stacked into one (rows in order); a missing bias (the
/// key's) is zeros.
fn linear(
    t: &mut HashMap<String, Tensor>,
    prefix: &str,
    names: &[&str],
    inp: usize,
) -> Result<Linear, NetError> {
    let (mut w, mut b) = (vec![], vec![]);
    for n in names {
        let name = if n.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{n}")
        };
        let (wi, dims) = take(t, &format!("{name}.weight"))?;
        if dims.len() != 2 || dims[1] != inp {
            return Err(NetError(format!("{name}: {dims:?}, not (_, {inp})")));
        }
        match t.contains_key(&format!("{name}.bias")) {
            true => {
                let (bi, _) = take(t, &format!("{name}.bias"))?;
                if bi.len() != dims[0] {
                    return Err(NetError(format!(
                        "{name}: bias of {} for {}",
                        bi.len(),
                        dims[0]
                    )));
                }
                b.extend(bi);
            }
            false => b.extend(std::iter::repeat_n(0.0, dims[0])),
        }
        w.extend(wi);
    }
    let out = b.len();
    Ok(Linear {
        out,
        w: Packed::new((inp, out), (&w, 1, inp)),
        b,
        inp,
    })
}

/// A convolution of kernel 3 as a linear layer over `(tap, in)` rows.
fn conv(t: &mut HashMap<String, Tensor>, prefix: &str) -> Result<Linear, NetError> {
    let (w, dims) = take(t, &format!("{prefix}.weight"))?;
    let (b, _) = take(t, &format!("{prefix}.bias"))?;
    let [out, inp, 3] = dims[..] else {
        return Err(NetError(format!("{prefix}: {dims:?}, not (out, in, 3)")));
    };
    if b.len() != out {
        return Err(NetError(format!("{prefix}: bias of {}", b.len())));
    }
    let mut r = vec![0.0; w.len()];
    for o in 0..out {
        for c in 0..inp {
            for k in 0..3 {
                r[o * 3 * inp + k * inp + c] = w[(o * inp + c) * 3 + k];
            }
        }
    }
    Ok(Linear {
        w: Packed::new((3 * inp, out), (&r, 1, 3 * inp)),
        b,
        out,
        inp: 3 * inp,
    })
}

fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

impl Net {
    /// From the tensors [`super::ctranslate2::Ct2Model::whisper_tensors`] returns (candle's names)
    /// and the encoder's positions (`audio_ctx × d`, CTranslate2's `encoder/position_encodings`).
    pub fn new(
        mut t: HashMap<String, Tensor>,
        cfg: &candle_transformers::models::whisper::Config,
        enc_pos: Vec<f32>,
    ) -> Result<Net, NetError> {
        let d = cfg.d_model;
        let t = &mut t;
        let conv1 = conv(t, "model.encoder.conv1")?;
        let conv2 = conv(t, "model.encoder.conv2")?;
        if conv1.inp != 3 * cfg.num_mel_bins
            || conv1.out != d
            || conv2.inp != 3 * d
            || conv2.out != d
        {
            return Err(NetError("convolutions of the wrong size".into()));
        }
        if enc_pos.len() != cfg.max_source_positions * d {
            return Err(NetError("encoder positions of the wrong size".into()));
        }
        let mut enc = vec![];
        for i in 0..cfg.encoder_layers {
            let p = format!("model.encoder.layers.{i}");
            enc.push(EncoderLayer {
                ln1: norm(t, &format!("{p}.self_attn_layer_norm"), d)?,
                qkv: linear(
                    t,
                    &format!("{p}.self_attn"),
                    &["q_proj", "k_proj", "v_proj"],
                    d,
                )?,
                out: linear(t, &format!("{p}.self_attn.out_proj"), &[""], d)?,
                ln2: norm(t, &format!("{p}.final_layer_norm"), d)?,
                fc1: linear(t, &format!("{p}.fc1"), &[""], d)?,
                fc2: linear(t, &format!("{p}.fc2"), &[""], 4 * d)?,
            });
        }
        let mut dec = vec![];
        for i in 0..cfg.decoder_layers {
            let p = format!("model.decoder.layers.{i}");
            dec.push(DecoderLayer {
                ln1: norm(t, &format!("{p}.self_attn_layer_norm"), d)?,
                qkv: linear(
                    t,
                    &format!("{p}.self_attn"),
                    &["q_proj", "k_proj", "v_proj"],
                    d,
                )?,
                out: linear(t, &format!("{p}.self_attn.out_proj"), &[""], d)?,
                ln_x: norm(t, &format!("{p}.encoder_attn_layer_norm"), d)?,
                xq: linear(t, &format!("{p}.encoder_attn.q_proj"), &[""], d)?,
                xkv: linear(t, &format!("{p}.encoder_attn"), &["k_proj", "v_proj"], d)?,
                xout: linear(t, &format!("{p}.encoder_attn.out_proj"), &[""], d)?,
                ln2: norm(t, &format!("{p}.final_layer_norm"), d)?,
                fc1: linear(t, &format!("{p}.fc1"), &[""], d)?,
                fc2: linear(t, &format!("{p}.fc2"), &[""], 4 * d)?,
            });
        }
        for l in &enc {
            if l.fc1.out != 4 * d || l.qkv.out != 3 * d || l.out.out != d || l.fc2.out != d {
                return Err(NetError("an encoder layer of the wrong size".into()));
            }
        }
        for l in &dec {
            if l.fc1.out != 4 * d
                || l.qkv.out != 3 * d
                || l.out.out != d
                || l.fc2.out != d
                || l.xq.out != d
                || l.xkv.out != 2 * d
                || l.xout.out != d
            {
                return Err(NetError("a decoder layer of the wrong size".into()));
            }
        }
        let (embed, _) = take(t, "model.decoder.embed_tokens.weight")?;
        let (dec_pos, _) = take(t, "model.decoder.embed_positions.weight")?;
        if embed.len() != cfg.vocab_size * d || dec_pos.len() != cfg.max_target_positions * d {
            return Err(NetError("embeddings of the wrong size".into()));
        }
        if !d.is_multiple_of(cfg.encoder_attention_heads)
            || !d.is_multiple_of(cfg.decoder_attention_heads)
        {
            return Err(NetError("heads that do not divide the width".into()));
        }
        Ok(Net {
            d,
            n_mels: cfg.num_mel_bins,
            vocab: cfg.vocab_size,
            audio_ctx: cfg.max_source_positions,
            text_ctx: cfg.max_target_positions,
            enc_heads: cfg.encoder_attention_heads,
            dec_heads: cfg.decoder_attention_heads,
            conv1,
            conv2,
            enc_pos,
            enc_ln: norm(t, "model.encoder.layer_norm", d)?,
            enc,
            embed: Packed::new((d, cfg.vocab_size), (&embed, 1, d)),
            dec_pos,
            dec_ln: norm(t, "model.decoder.layer_norm", d)?,
            dec,
        })
    }

    /// The encoder's output (`frames/2 × d`) for a mel window `n_mels × frames` (channel-major, as
    /// [`super::mel::pad_frames`] gives it); `frames` even and at most twice the audio context.
    pub fn encode(&self, mel: &[f32], frames: usize) -> Vec<f32> {
        let (d, nm, th) = (self.d, self.n_mels, threads());
        assert!(
            mel.len() == nm * frames && frames.is_multiple_of(2) && frames / 2 <= self.audio_ctx
        );
        // time-major input with a zero row at each end (the convolutions' padding)
        let mut x = vec![0.0; (frames + 2) * nm];
        for c in 0..nm {
            for t in 0..frames {
                x[(t + 1) * nm + c] = mel[c * frames + t];
            }
        }
        // conv1 (stride 1): row t reads input rows t-1, t, t+1, i.e. padded rows t..t+3, which lie
        // next to each other: the product reads them in place with a row stride of one row.
        let mut h1 = vec![0.0; (frames + 2) * d];
        conv_rows(&self.conv1, th, &x, nm, frames, 1, &mut h1[d..]);
        gelu(&mut h1[d..(frames + 1) * d]);
        // conv2 (stride 2): row t reads padded rows 2t..2t+3 (row stride two rows).
        let n = frames / 2;
        let mut h = vec![0.0; n * d];
        conv_rows(&self.conv2, th, &h1, d, n, 2, &mut h);
        gelu(&mut h);
        for (r, p) in h.chunks_exact_mut(d).zip(self.enc_pos.chunks_exact(d)) {
            r.iter_mut().zip(p).for_each(|(v, p)| *v += p);
        }
        let mut ln = vec![0.0; n * d];
        let mut qkv = vec![0.0; n * 3 * d];
        let mut att = vec![0.0; n * d];
        let mut ff = vec![0.0; n * 4 * d];
        for l in &self.enc {
            layer_norm(&h, d, &l.ln1.g, &l.ln1.b, &mut ln);
            l.qkv.apply(th, &ln, n, &mut qkv, false);
            self_attention(&qkv, n, d, self.enc_heads, &mut att, th);
            l.out.apply(th, &att, n, &mut h, true);
            layer_norm(&h, d, &l.ln2.g, &l.ln2.b, &mut ln);
            l.fc1.apply(th, &ln, n, &mut ff, false);
            gelu(&mut ff);
            l.fc2.apply(th, &ff, n, &mut h, true);
        }
        layer_norm(&h, d, &self.enc_ln.g, &self.enc_ln.b, &mut ln);
        ln
    }

    /// A decoder for one window of encoder output (`frames × d`): the cross-attention's keys and
    /// values, computed once.
    pub fn decoder(&self, enc: &[f32]) -> DecoderState {
        let d = self.d;
        let frames = enc.len() / d;
        let hd = d / self.dec_heads;
        let mut kv = vec![0.0; frames * 2 * d];
        let cross = self
            .dec
            .iter()
            .map(|l| {
                l.xkv.apply(threads(), enc, frames, &mut kv, false);
                (0..self.dec_heads)
                    .map(|h| {
                        let c = h * hd;
                        (
                            Packed::new((hd, frames), (&kv[c..], 1, 2 * d)),
                            Packed::new((frames, hd), (&kv[d + c..], 2 * d, 1)),
                        )
                    })
                    .collect()
            })
            .collect();
        DecoderState {
            cross,
            frames,
            cache: self
                .dec
                .iter()
                .map(|_| vec![0.0; self.text_ctx * 2 * d])
                .collect(),
            len: 0,
        }
    }

    /// Feed `tokens` after those already in `st`; the logits (`vocab`) after the last one.
    pub fn step(&self, st: &mut DecoderState, tokens: &[u32]) -> Vec<f32> {
        let (d, th) = (self.d, threads());
        let n = tokens.len();
        assert!(n > 0 && st.len + n <= self.text_ctx);
        let mut x = vec![0.0; n * d];
        for (i, &t) in tokens.iter().enumerate() {
            let t = (t as usize).min(self.vocab - 1);
            let p = st.len + i;
            for j in 0..d {
                x[i * d + j] = self.embed.get(j, t) + self.dec_pos[p * d + j];
            }
        }
        let mut ln = vec![0.0; n * d];
        let mut qkv = vec![0.0; n * 3 * d];
        let mut att = vec![0.0; n * d];
        let mut q = vec![0.0; n * d];
        let mut ff = vec![0.0; n * 4 * d];
        let mut scores = vec![];
        let hd = d / self.dec_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        for (li, l) in self.dec.iter().enumerate() {
            layer_norm(&x, d, &l.ln1.g, &l.ln1.b, &mut ln);
            l.qkv.apply(th, &ln, n, &mut qkv, false);
            let cache = &mut st.cache[li];
            for i in 0..n {
                let p = st.len + i;
                cache[p * 2 * d..(p + 1) * 2 * d]
                    .copy_from_slice(&qkv[i * 3 * d + d..(i + 1) * 3 * d]);
            }
            for i in 0..n {
                // causal: token i sees the cache up to itself
                let keys = st.len + i + 1;
                attend(
                    (1, keys, self.dec_heads, hd),
                    (&qkv[i * 3 * d..], 3 * d),
                    (&cache[..], &cache[d..], 2 * d),
                    (&mut att[i * d..], d),
                    scale,
                    &mut scores,
                );
            }
            l.out.apply(th, &att, n, &mut x, true);
            layer_norm(&x, d, &l.ln_x.g, &l.ln_x.b, &mut ln);
            l.xq.apply(th, &ln, n, &mut q, false);
            scores.resize(n * st.frames, 0.0);
            for (h, (k, v)) in st.cross[li].iter().enumerate() {
                let c = h * hd;
                attend_packed(
                    n,
                    (&q[c..], d),
                    (k, v),
                    (&mut att[c..], d),
                    scale,
                    &mut scores,
                );
            }
            l.xout.apply(th, &att, n, &mut x, true);
            layer_norm(&x, d, &l.ln2.g, &l.ln2.b, &mut ln);
            l.fc1.apply(th, &ln, n, &mut ff, false);
            gelu(&mut ff);
            l.fc2.apply(th, &ff, n, &mut x, true);
        }
        st.len += n;
        let last = &x[(n - 1) * d..];
        let mut h = vec![0.0; d];
        layer_norm(last, d, &self.dec_ln.g, &self.dec_ln.b, &mut h);
        let mut logits = vec![0.0; self.vocab];
        matmul_packed(
            1,
            (&mut logits, self.vocab),
            false,
            (&h, d),
            &self.embed,
            1.0,
        );
        logits
    }
}

/// A kernel-3 convolution: output row `t` (of `rows`) is the layer applied to the `3 · c` values
/// starting at input row `stride · t` of `x` (`c` wide, padded by a row at the start).
fn conv_rows(
    l: &Linear,
    th: usize,
    x: &[f32],
    c: usize,
    rows: usize,
    stride: usize,
    y: &mut [f32],
) {
    l.apply_strided(th, (x, stride * c), rows, y, false);
}

/// The encoder's self-attention over `n` rows of fused `q | k | v` (`3d` wide) into `out` (`d`
/// wide), in blocks of query rows (in parallel when there are threads).
fn self_attention(qkv: &[f32], n: usize, d: usize, heads: usize, out: &mut [f32], th: usize) {
    let hd = d / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let out = &mut out[..n * d];
    let (mut k, mut v) = (Packed::empty(), Packed::empty());
    let mut scores = vec![];
    for h in 0..heads {
        // this head's keys and values, packed once for all its blocks of queries
        let c = h * hd;
        k.pack((hd, n), (&qkv[d + c..], 1, 3 * d));
        v.pack((n, hd), (&qkv[2 * d + c..], 3 * d, 1));
        let (k, v) = (&k, &v);
        let block = |(b, o): (usize, &mut [f32]), scores: &mut Vec<f32>| {
            let rows = o.len() / d;
            scores.resize(rows * n, 0.0);
            attend_packed(
                rows,
                (&qkv[b * BLOCK * 3 * d + c..], 3 * d),
                (k, v),
                (&mut o[c..], d),
                scale,
                scores,
            );
        };
        if th > 1 {
            use rayon::prelude::*;
            out.par_chunks_mut(BLOCK * d)
                .enumerate()
                .for_each_init(Vec::new, |s, bo| block(bo, s));
        } else {
            out.chunks_mut(BLOCK * d)
                .enumerate()
                .for_each(|bo| block(bo, &mut scores));
        }
    }
}

/// One head's attention of `rows` queries over packed keys (`head_dim × keys`) and values (`keys
/// × head_dim`): `out = softmax(scale · q kᵀ) v`; `scores` holds at least `rows × keys`.
fn attend_packed(
    rows: usize,
    q: (&[f32], usize),
    (k, v): (&Packed, &Packed),
    out: (&mut [f32], usize),
    scale: f32,
    scores: &mut [f32],
) {
    let keys = k.dims().1;
    let scores = &mut scores[..rows * keys];
    matmul_packed(rows, (scores, keys), false, q, k, scale);
    for r in scores.chunks_exact_mut(keys) {
        softmax(r);
    }
    matmul_packed(rows, out, false, (scores, keys), v, 1.0);
}

/// Multi-head attention of `rows` queries over `keys` keys: per head `h` (columns `h·hd..`),
/// `out = softmax(scale · q kᵀ) v`. Each operand is given with its row stride.
fn attend(
    (rows, keys, heads, hd): (usize, usize, usize, usize),
    (q, ldq): (&[f32], usize),
    (k, v, ldkv): (&[f32], &[f32], usize),
    (out, ldo): (&mut [f32], usize),
    scale: f32,
    scores: &mut Vec<f32>,
) {
    scores.resize(rows * keys, 0.0);
    for h in 0..heads {
        let c = h * hd;
        matmul(
            1,
            (rows, keys, hd),
            scores,
            keys,
            false,
            &q[c..],
            ldq,
            (&k[c..], 1, ldkv),
            scale,
        );
        for r in scores.chunks_exact_mut(keys) {
            softmax(r);
        }
        matmul(
            1,
            (rows, hd, keys),
            &mut out[c..],
            ldo,
            false,
            scores,
            keys,
            (&v[c..], ldkv, 1),
            1.0,
        );
    }
}
