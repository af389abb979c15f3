//! Neural grapheme-to-phoneme model for words the dictionary does not know: the g2p-en (Park & Kim)
//! GRU encoder–decoder, run on candle with the published `checkpoint20.npz` weights.
//!
//! Algorithm. The word is lowercased and spelled as letter ids (`<pad> <unk> </s> a..z`), followed by
//! `</s>`. An embedding (29×256 in the published checkpoint) feeds a single-layer GRU encoder (hidden
//! 256); its last hidden state starts a GRU decoder that is fed the embedding (74×256) of the previous
//! ARPAbet symbol, beginning with `<s>`. At every step a linear layer (hidden→74) scores the next symbol and the highest score is taken
//! (greedy decoding), until `</s>` or 20 symbols. The GRU cell is the PyTorch one:
//! `r, z = σ(W_ih x + b_ih + W_hh h + b_hh)` (first two thirds), `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`,
//! `h' = (1 − z) ⊙ n + z ⊙ h`.
//!
//! The input projections `W_ih x + b_ih` depend only on the input symbol, so they are computed once at
//! load for every letter and every ARPAbet symbol; a step then costs one matrix–vector product.
//!
//! Threading: [`G2p`] is immutable after load and `Send + Sync`; each call allocates its own small tensors
//! on the CPU.

use candle_core::{DType, Device, Tensor};
use std::path::Path;

use super::PhonemizeError;

/// ARPAbet output vocabulary of the checkpoint, in id order.
const PHONEMES: [&str; 74] = [
    "<pad>", "<unk>", "<s>", "</s>", "AA0", "AA1", "AA2", "AE0", "AE1", "AE2", "AH0", "AH1", "AH2",
    "AO0", "AO1", "AO2", "AW0", "AW1", "AW2", "AY0", "AY1", "AY2", "B", "CH", "D", "DH", "EH0",
    "EH1", "EH2", "ER0", "ER1", "ER2", "EY0", "EY1", "EY2", "F", "G", "HH", "IH0", "IH1", "IH2",
    "IY0", "IY1", "IY2", "JH", "K", "L", "M", "N", "NG", "OW0", "OW1", "OW2", "OY0", "OY1", "OY2",
    "P", "R", "S", "SH", "T", "TH", "UH0", "UH1", "UH2", "UW", "UW0", "UW1", "UW2", "V", "W", "Y",
    "Z", "ZH",
];
const START: u32 = 2;
const END: u32 = 3;
const UNK_LETTER: u32 = 1;
const END_LETTER: u32 = 2;
const MAX_STEPS: usize = 20;

struct Gru {
    hidden: usize,
    /// Input projection of every symbol, computed once at load: `emb · W_ihᵀ + b_ih`, (vocab, 3H).
    gi_table: Tensor,
    /// (3H, H) transposed once at load to (H, 3H).
    w_hh_t: Tensor,
    b_hh: Tensor,
}

impl Gru {
    /// One step for input symbol `id` from hidden state `h` (1, H).
    fn step(&self, id: usize, h: &Tensor) -> candle_core::Result<Tensor> {
        let gi = self.gi_table.narrow(0, id, 1)?;
        let gh = h.matmul(&self.w_hh_t)?.broadcast_add(&self.b_hh)?;
        let hd = self.hidden;
        let rz = (gi.narrow(1, 0, 2 * hd)? + gh.narrow(1, 0, 2 * hd)?)?;
        let rz = candle_nn::ops::sigmoid(&rz)?;
        let r = rz.narrow(1, 0, hd)?;
        let z = rz.narrow(1, hd, hd)?;
        let n = (gi.narrow(1, 2 * hd, hd)? + (r * gh.narrow(1, 2 * hd, hd)?)?)?.tanh()?;
        // h' = (1 - z) n + z h = n + z (h - n)
        let diff = (h - &n)?;
        n + (z * diff)?
    }
}

/// The g2p-en GRU model.
pub struct G2p {
    hidden: usize,
    enc: Gru,
    dec: Gru,
    fc_w_t: Tensor,
    fc_b: Tensor,
}

impl std::fmt::Debug for G2p {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("G2p { .. }")
    }
}

impl G2p {
    /// Loads `checkpoint20.npz`. Errors name the path and the fix.
    pub fn load(path: &Path) -> Result<Self, PhonemizeError> {
        let load_err = |message: String| PhonemizeError::Load {
            path: path.to_path_buf(),
            message: format!("{message}; run `idol fetch` to (re)install the G2P weights"),
        };
        if !path.exists() {
            return Err(load_err("G2P weights not found".into()));
        }
        let npz = candle_core::npy::NpzTensors::new(path)
            .map_err(|e| load_err(format!("not a readable npz file ({e})")))?;
        let get = |name: &str| -> Result<Tensor, PhonemizeError> {
            npz.get(name)
                .map_err(|e| load_err(format!("tensor {name} unreadable ({e})")))?
                .ok_or_else(|| load_err(format!("tensor {name} missing")))?
                .to_dtype(DType::F32)
                .map_err(|e| load_err(format!("tensor {name}: {e}")))
        };
        let check = |name: &str, t: &Tensor, shape: &[usize]| -> Result<(), PhonemizeError> {
            if t.dims() == shape {
                Ok(())
            } else {
                Err(load_err(format!(
                    "tensor {name} has shape {:?}, expected {shape:?}",
                    t.dims()
                )))
            }
        };
        // Sizes come from the checkpoint itself: letters × embedding, (3·hidden) × hidden.
        let enc_emb = get("enc_emb")?;
        let enc_w_hh = get("enc_w_hh")?;
        let (emb, hidden) = match (enc_emb.dims(), enc_w_hh.dims()) {
            (&[29, e], &[h3, h]) if h3 == 3 * h => (e, h),
            (a, b) => {
                return Err(load_err(format!(
                    "unexpected enc_emb {a:?} / enc_w_hh {b:?} shapes"
                )));
            }
        };
        let t = |x: Tensor| -> Result<Tensor, PhonemizeError> {
            x.t()
                .and_then(|x| x.contiguous())
                .map_err(|e| load_err(e.to_string()))
        };
        let row = |x: Tensor| -> Result<Tensor, PhonemizeError> {
            x.unsqueeze(0).map_err(|e| load_err(e.to_string()))
        };
        let gru = |p: &str, emb_table: &Tensor| -> Result<Gru, PhonemizeError> {
            let names = [
                format!("{p}_w_ih"),
                format!("{p}_w_hh"),
                format!("{p}_b_ih"),
                format!("{p}_b_hh"),
            ];
            let w_ih = get(&names[0])?;
            check(&names[0], &w_ih, &[3 * hidden, emb])?;
            let w_hh = get(&names[1])?;
            check(&names[1], &w_hh, &[3 * hidden, hidden])?;
            let b_ih = get(&names[2])?;
            check(&names[2], &b_ih, &[3 * hidden])?;
            let b_hh = get(&names[3])?;
            check(&names[3], &b_hh, &[3 * hidden])?;
            let gi_table = emb_table
                .matmul(&t(w_ih)?)
                .and_then(|x| x.broadcast_add(&b_ih.unsqueeze(0)?))
                .map_err(|e| load_err(e.to_string()))?;
            Ok(Gru {
                hidden,
                gi_table,
                w_hh_t: t(w_hh)?,
                b_hh: row(b_hh)?,
            })
        };
        let dec_emb = get("dec_emb")?;
        check("dec_emb", &dec_emb, &[PHONEMES.len(), emb])?;
        let fc_w = get("fc_w")?;
        check("fc_w", &fc_w, &[PHONEMES.len(), hidden])?;
        let fc_b = get("fc_b")?;
        check("fc_b", &fc_b, &[PHONEMES.len()])?;
        Ok(G2p {
            hidden,
            enc: gru("enc", &enc_emb)?,
            dec: gru("dec", &dec_emb)?,
            fc_w_t: t(fc_w)?,
            fc_b: row(fc_b)?,
        })
    }

    /// ARPAbet symbols (with stress digits) for one word. Letters other than a–z count as unknown.
    pub fn predict(&self, word: &str) -> Result<Vec<&'static str>, PhonemizeError> {
        self.predict_inner(word)
            .map_err(|e| PhonemizeError::Other(format!("g2p failed on {word:?}: {e}")))
    }

    fn predict_inner(&self, word: &str) -> candle_core::Result<Vec<&'static str>> {
        let mut ids: Vec<u32> = word
            .chars()
            .flat_map(|c| c.to_lowercase())
            .map(|c| {
                if c.is_ascii_lowercase() {
                    3 + (c as u32 - 'a' as u32)
                } else {
                    UNK_LETTER
                }
            })
            .collect();
        ids.push(END_LETTER);
        let dev = Device::Cpu;
        let mut h = Tensor::zeros((1, self.hidden), DType::F32, &dev)?;
        for &id in &ids {
            h = self.enc.step(id as usize, &h)?;
        }
        let mut prev = START;
        let mut out = Vec::new();
        for _ in 0..MAX_STEPS {
            h = self.dec.step(prev as usize, &h)?;
            let logits = h.matmul(&self.fc_w_t)?.broadcast_add(&self.fc_b)?;
            let logits: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
            // First maximum, as numpy's argmax.
            let mut best = 0usize;
            for (i, &v) in logits.iter().enumerate() {
                if v > logits[best] {
                    best = i;
                }
            }
            if best as u32 == END {
                break;
            }
            out.push(PHONEMES[best]);
            prev = best as u32;
        }
        Ok(out)
    }
}
