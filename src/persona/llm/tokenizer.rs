//! The model's tokenizer: text to token ids (special tokens such as `<|im_start|>` are parsed, no BOS is
//! added: the chat template writes it when the model wants it) and token ids to bytes.
//!
//! Source, in order: `<model stem>.tokenizer.json` beside the GGUF file, the GGUF's own byte-level BPE
//! (`tokenizer.ggml.model = gpt2`, built with candle's `TokenizerFromGguf`), `tokenizer.json` in the same
//! folder. candle's builder adds a leading space (GPT-2 default) for unknown `tokenizer.ggml.pre` values;
//! llama.cpp does not, so the pre-tokenizer is replaced for those (`smollm` also splits digits one by
//! one), which makes our ids equal llama.cpp's.
//!
//! Decoding is per token to raw bytes (byte-level BPE: the GPT-2 byte alphabet mapped back; SentencePiece:
//! `▁` as a space and `<0xNN>` byte tokens), so that the stream can be cut into whole UTF-8 characters.

use super::{GgufFile, load_err};
use crate::persona::PersonaError;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{PreTokenizerWrapper, Tokenizer};

pub struct Tok {
    inner: Tokenizer,
    bytes: Vec<Vec<u8>>,
    eog: HashSet<u32>,
    pub bos: Option<String>,
    pub eos: Option<String>,
}

/// GPT-2's printable stand-ins for the 256 byte values, inverted.
fn byte_decoder() -> HashMap<char, u8> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.iter()
        .zip(&cs)
        .map(|(&b, &c)| (char::from_u32(c).unwrap_or('?'), b as u8))
        .collect()
}

const END_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
    "</s>",
    "<eos>",
];

impl Tok {
    pub fn load(g: &GgufFile) -> Result<Tok, PersonaError> {
        let path = &g.path;
        let beside = path.with_extension("tokenizer.json");
        let folder = path
            .parent()
            .unwrap_or(Path::new("."))
            .join("tokenizer.json");
        let from_file = |p: &Path| {
            Tokenizer::from_file(p)
                .map_err(|e| load_err(p, format!("cannot read tokenizer: {e}; replace the file")))
        };
        let model_kind = g.str_md("tokenizer.ggml.model").unwrap_or_default();
        let (inner, byte_level) = if beside.exists() {
            let t = from_file(&beside)?;
            let bl = is_byte_level(&t);
            (t, bl)
        } else if model_kind == "gpt2" {
            let mut t = Tokenizer::from_gguf(&g.content).map_err(|e| {
                load_err(
                    path,
                    format!("cannot build the tokenizer from the GGUF: {e}"),
                )
            })?;
            let pre = g.str_md("tokenizer.ggml.pre").unwrap_or_default();
            if !matches!(pre.as_str(), "qwen2" | "smaug-bpe" | "lfm2" | "llama3") {
                let bl: PreTokenizerWrapper = ByteLevel::new(false, true, true).into();
                let seq = if pre == "smollm" {
                    vec![Digits::new(true).into(), bl]
                } else {
                    vec![bl]
                };
                t.with_pre_tokenizer(Some(Sequence::new(seq)));
            }
            (t, true)
        } else if folder.exists() {
            let t = from_file(&folder)?;
            let bl = is_byte_level(&t);
            (t, bl)
        } else {
            return Err(load_err(
                path,
                format!(
                    "the GGUF's tokenizer `{model_kind}` cannot be built here: put the model's \
                     tokenizer.json next to it as {}",
                    beside.display()
                ),
            ));
        };
        let vocab = inner.get_vocab_size(true);
        let special: HashSet<u32> = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(&id, _)| id)
            .collect();
        let bdec = byte_decoder();
        let mut bytes = Vec::with_capacity(vocab);
        for id in 0..vocab as u32 {
            let s = inner.id_to_token(id).unwrap_or_default();
            if special.contains(&id) {
                bytes.push(Vec::new());
            } else if byte_level {
                bytes.push(
                    s.chars()
                        .map(|c| bdec.get(&c).copied().unwrap_or(b'?'))
                        .collect(),
                );
            } else if s.len() == 6 && s.starts_with("<0x") && s.ends_with('>') {
                bytes.push(vec![u8::from_str_radix(&s[3..5], 16).unwrap_or(b'?')]);
            } else {
                bytes.push(s.replace('\u{2581}', " ").into_bytes());
            }
        }
        let mut eog = HashSet::new();
        if let Some(e) = g.u32_md("tokenizer.ggml.eos_token_id") {
            eog.insert(e);
        }
        for t in END_TOKENS {
            if let Some(id) = inner.token_to_id(t) {
                eog.insert(id);
            }
        }
        let name = |k: &str| {
            g.u32_md(k)
                .and_then(|id| inner.id_to_token(id))
                .filter(|s| !s.is_empty())
        };
        Ok(Tok {
            bos: name("tokenizer.ggml.bos_token_id"),
            eos: name("tokenizer.ggml.eos_token_id"),
            inner,
            bytes,
            eog,
        })
    }

    /// Token ids of `text`; special-token text becomes the special token, no BOS is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PersonaError> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| PersonaError::Generation(format!("tokenizer: {e}")))
    }

    /// The bytes a token stands for (empty for special tokens).
    pub fn bytes(&self, id: u32) -> &[u8] {
        self.bytes
            .get(id as usize)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    /// End of generation (end of turn or of text).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Decode a whole sequence (lossy UTF-8).
    pub fn decode(&self, ids: &[u32]) -> String {
        let b: Vec<u8> = ids.iter().flat_map(|&i| self.bytes(i).to_vec()).collect();
        String::from_utf8_lossy(&b).into_owned()
    }
}

fn is_byte_level(t: &Tokenizer) -> bool {
    matches!(
        t.get_decoder(),
        Some(tokenizers::DecoderWrapper::ByteLevel(_))
    )
}
