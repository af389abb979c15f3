//! Reads a CTranslate2 model file (`model.bin`) and turns a Whisper one into the tensors
//! `candle_transformers::models::whisper` loads.
//!
//! The file (binary version 6, as CTranslate2 3.x/4.x write it; little-endian throughout):
//!
//! ```text
//! u32 version                      (6)
//! str spec name                    ("WhisperSpec")
//! u32 spec revision
//! u32 variable count
//!   per variable: str name, u8 rank, u32 × rank dims, u8 dtype, u32 byte count, bytes
//! u32 alias count
//!   per alias: str alias, str variable it names
//! ```
//!
//! `str` is a u16 length (counting a trailing NUL) followed by that many bytes. dtype is the index in
//! CTranslate2's `DataType` (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16). How the Whisper variables map onto
//! candle's names (fused projections split, layer norms renamed) is [`whisper_tensors`]; see
//! docs/listen.md.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The binary layout versions this reader knows (CTranslate2 writes 6 since 3.0).
const VERSIONS: std::ops::RangeInclusive<u32> = 5..=6;

#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path} is not a CTranslate2 model file we can read ({what}): delete it and run `idol fetch`"
    )]
    Format { path: PathBuf, what: String },
    #[error("{path}: {what}")]
    Tensor { path: PathBuf, what: String },
}

/// Element types of a CTranslate2 variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Type {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Ct2Type {
    fn from_id(id: u8) -> Option<Ct2Type> {
        Some(match id {
            0 => Ct2Type::F32,
            1 => Ct2Type::I8,
            2 => Ct2Type::I16,
            3 => Ct2Type::I32,
            4 => Ct2Type::F16,
            5 => Ct2Type::Bf16,
            _ => return None,
        })
    }

    fn width(self) -> usize {
        match self {
            Ct2Type::I8 => 1,
            Ct2Type::I16 | Ct2Type::F16 | Ct2Type::Bf16 => 2,
            Ct2Type::F32 | Ct2Type::I32 => 4,
        }
    }
}

/// One variable as stored.
#[derive(Debug, Clone)]
pub struct Variable {
    pub dims: Vec<usize>,
    pub dtype: Ct2Type,
    pub bytes: Vec<u8>,
}

impl Variable {
    /// The values as f32 (integers converted; an int8 variable is a plain integer here, since a
    /// quantized weight would come with a `_scale` variable, which this reader refuses).
    pub fn to_f32(&self) -> Vec<f32> {
        let b = &self.bytes;
        match self.dtype {
            Ct2Type::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Ct2Type::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Ct2Type::Bf16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Ct2Type::I8 => b.iter().map(|&v| v as i8 as f32).collect(),
            Ct2Type::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            Ct2Type::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
        }
    }

    /// A scalar's value (the first element).
    pub fn scalar(&self) -> Option<f32> {
        self.to_f32().first().copied()
    }
}

/// A whole CTranslate2 model file.
#[derive(Debug)]
pub struct Ct2Model {
    pub spec: String,
    pub revision: u32,
    pub variables: HashMap<String, Variable>,
    /// alias → the variable it stands for (e.g. the output projection sharing the embeddings).
    pub aliases: HashMap<String, String>,
    path: PathBuf,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.at))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(b.to_vec())
            .map_err(|_| format!("a name at byte {} is not UTF-8", self.at))
    }
}

impl Ct2Model {
    pub fn load(path: &Path) -> Result<Ct2Model, Ct2Error> {
        let buf = std::fs::read(path).map_err(|error| Ct2Error::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Ct2Model::parse(&buf, path)
    }

    /// Parse the bytes of a model file; `path` names it in errors.
    pub fn parse(buf: &[u8], path: &Path) -> Result<Ct2Model, Ct2Error> {
        let format = |what: String| Ct2Error::Format {
            path: path.to_path_buf(),
            what,
        };
        let mut r = Reader { buf, at: 0 };
        let version = r.u32().map_err(format)?;
        if !VERSIONS.contains(&version) {
            return Err(format(format!(
                "binary version {version}, this reader knows {}..={}",
                VERSIONS.start(),
                VERSIONS.end()
            )));
        }
        let spec = r.string().map_err(format)?;
        let revision = r.u32().map_err(format)?;
        let count = r.u32().map_err(format)? as usize;
        let mut variables = HashMap::new();
        for _ in 0..count {
            let name = r.string().map_err(format)?;
            let rank = r.u8().map_err(format)? as usize;
            let mut dims = Vec::with_capacity(rank);
            for _ in 0..rank {
                dims.push(r.u32().map_err(format)? as usize);
            }
            let id = r.u8().map_err(format)?;
            let dtype = Ct2Type::from_id(id)
                .ok_or_else(|| format(format!("variable {name}: unknown dtype {id}")))?;
            let nbytes = r.u32().map_err(format)? as usize;
            let elems = dims.iter().product::<usize>();
            if elems.checked_mul(dtype.width()) != Some(nbytes) {
                return Err(format(format!(
                    "variable {name}: {nbytes} bytes for dims {dims:?} of {dtype:?}"
                )));
            }
            let bytes = r.take(nbytes).map_err(format)?.to_vec();
            variables.insert(name, Variable { dims, dtype, bytes });
        }
        let mut aliases = HashMap::new();
        let n = r.u32().map_err(format)?;
        for _ in 0..n {
            let alias = r.string().map_err(format)?;
            let target = r.string().map_err(format)?;
            aliases.insert(alias, target);
        }
        if r.at != buf.len() {
            return Err(format(format!(
                "{} bytes left after the last alias",
                buf.len() - r.at
            )));
        }
        Ok(Ct2Model {
            spec,
            revision,
            variables,
            aliases,
            path: path.to_path_buf(),
        })
    }

    /// A variable by name, following an alias.
    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.variables.get(name).or_else(|| {
            self.aliases
                .get(name)
                .and_then(|t| self.variables.get(t.as_str()))
        })
    }

    fn need(&self, name: &str) -> Result<&Variable, Ct2Error> {
        self.get(name).ok_or_else(|| Ct2Error::Tensor {
            path: self.path.clone(),
            what: format!("no variable `{name}` (is this a Whisper model?)"),
        })
    }

    fn tensor_err(&self, name: &str, e: impl std::fmt::Display) -> Ct2Error {
        Ct2Error::Tensor {
            path: self.path.clone(),
            what: format!("{name}: {e}"),
        }
    }

    /// The variable `name` as an f32 tensor of its stored shape.
    fn tensor(&self, name: &str, device: &Device) -> Result<Tensor, Ct2Error> {
        let v = self.need(name)?;
        Tensor::from_vec(v.to_f32(), v.dims.as_slice(), device)
            .map_err(|e| self.tensor_err(name, e))
    }

    /// Rows `[from, from + n)` of a 1-D or 2-D variable (the pieces of a fused projection).
    fn rows(&self, name: &str, from: usize, n: usize, dev: &Device) -> Result<Tensor, Ct2Error> {
        let t = self.tensor(name, dev)?;
        t.narrow(0, from, n).map_err(|e| self.tensor_err(name, e))
    }

    fn dim(&self, name: &str, i: usize) -> Result<usize, Ct2Error> {
        let v = self.need(name)?;
        v.dims
            .get(i)
            .copied()
            .ok_or_else(|| self.tensor_err(name, format!("has no dimension {i}")))
    }

    fn count_layers(&self, stack: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.variables
                    .contains_key(&format!("{stack}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    }

    /// The dimensions of the Whisper model this file holds, in candle's terms.
    pub fn whisper_config(&self) -> Result<candle_transformers::models::whisper::Config, Ct2Error> {
        if self.spec != "WhisperSpec" {
            return Err(Ct2Error::Format {
                path: self.path.clone(),
                what: format!("a {} model, not Whisper", self.spec),
            });
        }
        if self
            .variables
            .keys()
            .any(|k| k.ends_with("weight_scale") || k.ends_with("/scale"))
        {
            return Err(Ct2Error::Format {
                path: self.path.clone(),
                what: "quantized (int8) weights; this reader takes float16/float32 models".into(),
            });
        }
        let heads = |name: &str| -> Result<usize, Ct2Error> {
            let v = self.need(name)?;
            match v.scalar() {
                Some(h) if h >= 1.0 => Ok(h as usize),
                _ => Err(self.tensor_err(name, "not a head count")),
            }
        };
        Ok(candle_transformers::models::whisper::Config {
            num_mel_bins: self.dim("encoder/conv1/weight", 1)?,
            max_source_positions: self.dim("encoder/position_encodings/encodings", 0)?,
            d_model: self.dim("decoder/embeddings/weight", 1)?,
            encoder_attention_heads: heads("encoder/num_heads")?,
            encoder_layers: self.count_layers("encoder"),
            vocab_size: self.dim("decoder/embeddings/weight", 0)?,
            max_target_positions: self.dim("decoder/position_encodings/encodings", 0)?,
            decoder_attention_heads: heads("decoder/num_heads")?,
            decoder_layers: self.count_layers("decoder"),
            suppress_tokens: vec![],
        })
    }

    /// Every tensor candle's Whisper loads, under candle's names, as f32 on `device`.
    ///
    /// CTranslate2 fuses the self-attention's query, key and value into one `linear_0` (rows q, k,
    /// v) and the cross-attention's key and value into `linear_1` (rows k, v); candle keeps them
    /// apart and has no key bias (CTranslate2 stores zeros there, checked). The output projection
    /// is the token embedding (an alias), and the encoder's sinusoidal positions candle makes
    /// itself.
    pub fn whisper_tensors(&self, device: &Device) -> Result<HashMap<String, Tensor>, Ct2Error> {
        let cfg = self.whisper_config()?;
        let d = cfg.d_model;
        let mut out = HashMap::new();
        let mut put = |k: String, t: Tensor| {
            out.insert(k, t);
        };
        let copy = |from: &str| self.tensor(from, device);
        let norm = |put: &mut dyn FnMut(String, Tensor), to: &str, from: &str| {
            put(format!("{to}.weight"), copy(&format!("{from}/gamma"))?);
            put(format!("{to}.bias"), copy(&format!("{from}/beta"))?);
            Ok::<(), Ct2Error>(())
        };
        let linear = |put: &mut dyn FnMut(String, Tensor), to: &str, from: &str| {
            put(format!("{to}.weight"), copy(&format!("{from}/weight"))?);
            put(format!("{to}.bias"), copy(&format!("{from}/bias"))?);
            Ok::<(), Ct2Error>(())
        };
        // Pieces of a fused projection: `names` (None: a bias-free key) of `d` rows each.
        let split = |put: &mut dyn FnMut(String, Tensor),
                     to: &str,
                     from: &str,
                     names: &[&str]|
         -> Result<(), Ct2Error> {
            let w = format!("{from}/weight");
            let b = format!("{from}/bias");
            if self.dim(&w, 0)? != names.len() * d {
                return Err(self.tensor_err(&w, format!("not {} × {d} rows", names.len())));
            }
            for (i, n) in names.iter().enumerate() {
                put(format!("{to}.{n}.weight"), self.rows(&w, i * d, d, device)?);
                let bias = self.rows(&b, i * d, d, device)?;
                if *n == "k_proj" {
                    let max = bias
                        .abs()
                        .and_then(|a| a.max(0))
                        .and_then(|m| m.to_scalar::<f32>())
                        .map_err(|e| self.tensor_err(&b, e))?;
                    if max != 0.0 {
                        return Err(self.tensor_err(&b, "a key bias that is not zero"));
                    }
                } else {
                    put(format!("{to}.{n}.bias"), bias);
                }
            }
            Ok(())
        };
        for (stack, layers) in [
            ("encoder", cfg.encoder_layers),
            ("decoder", cfg.decoder_layers),
        ] {
            for i in 0..layers {
                let from = format!("{stack}/layer_{i}");
                let to = format!("model.{stack}.layers.{i}");
                split(
                    &mut put,
                    &format!("{to}.self_attn"),
                    &format!("{from}/self_attention/linear_0"),
                    &["q_proj", "k_proj", "v_proj"],
                )?;
                linear(
                    &mut put,
                    &format!("{to}.self_attn.out_proj"),
                    &format!("{from}/self_attention/linear_1"),
                )?;
                norm(
                    &mut put,
                    &format!("{to}.self_attn_layer_norm"),
                    &format!("{from}/self_attention/layer_norm"),
                )?;
                if stack == "decoder" {
                    linear(
                        &mut put,
                        &format!("{to}.encoder_attn.q_proj"),
                        &format!("{from}/attention/linear_0"),
                    )?;
                    split(
                        &mut put,
                        &format!("{to}.encoder_attn"),
                        &format!("{from}/attention/linear_1"),
                        &["k_proj", "v_proj"],
                    )?;
                    linear(
                        &mut put,
                        &format!("{to}.encoder_attn.out_proj"),
                        &format!("{from}/attention/linear_2"),
                    )?;
                    norm(
                        &mut put,
                        &format!("{to}.encoder_attn_layer_norm"),
                        &format!("{from}/attention/layer_norm"),
                    )?;
                }
                linear(
                    &mut put,
                    &format!("{to}.fc1"),
                    &format!("{from}/ffn/linear_0"),
                )?;
                linear(
                    &mut put,
                    &format!("{to}.fc2"),
                    &format!("{from}/ffn/linear_1"),
                )?;
                norm(
                    &mut put,
                    &format!("{to}.final_layer_norm"),
                    &format!("{from}/ffn/layer_norm"),
                )?;
            }
            norm(
                &mut put,
                &format!("model.{stack}.layer_norm"),
                &format!("{stack}/layer_norm"),
            )?;
        }
        linear(&mut put, "model.encoder.conv1", "encoder/conv1")?;
        linear(&mut put, "model.encoder.conv2", "encoder/conv2")?;
        put(
            "model.decoder.embed_tokens.weight".into(),
            copy("decoder/embeddings/weight")?,
        );
        put(
            "model.decoder.embed_positions.weight".into(),
            copy("decoder/position_encodings/encodings")?,
        );
        // The output projection must be the embedding (candle's decoder ties them).
        if let Some(t) = self.aliases.get("decoder/projection/weight")
            && t != "decoder/embeddings/weight"
        {
            return Err(self.tensor_err(
                "decoder/projection/weight",
                "an output projection apart from the token embedding",
            ));
        }
        if self.variables.contains_key("decoder/projection/weight") {
            return Err(self.tensor_err(
                "decoder/projection/weight",
                "an output projection apart from the token embedding",
            ));
        }
        for (k, t) in out.iter_mut() {
            if t.dtype() != DType::F32 {
                *t = t.to_dtype(DType::F32).map_err(|e| self.tensor_err(k, e))?;
            }
        }
        Ok(out)
    }
}
