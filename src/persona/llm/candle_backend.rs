//! The other architectures, through candle-transformers' quantized models: `llama` files our own path does
//! not take (K-quants, rope scaling), `qwen2`, `qwen3`, `phi3`, `gemma3` (and `gemma2`/`gemma`, which the
//! same candle model reads). candle keeps the KV cache inside the model and can only append to it or
//! restart at position 0, so the prefix cache reuses the cached tokens only when they are a prefix of the
//! new prompt. Computation runs inside a private rayon pool of `threads` threads.

use super::{GgufFile, load_err};
use crate::persona::PersonaError;
use candle_core::{Device, Tensor};
use candle_transformers::models::{
    quantized_gemma3, quantized_llama, quantized_phi3, quantized_qwen2, quantized_qwen3,
};

enum Model {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
    Gemma3(quantized_gemma3::ModelWeights),
}

pub struct CandleModel {
    model: Model,
    pool: rayon::ThreadPool,
    n_past: usize,
    ctx: usize,
}

/// Architectures this backend can load.
pub const ARCHS: &[&str] = &[
    "llama", "qwen2", "qwen3", "phi3", "gemma3", "gemma2", "gemma",
];

fn gen_err(e: candle_core::Error) -> PersonaError {
    PersonaError::Generation(format!("candle: {e}"))
}

impl CandleModel {
    pub fn load(g: GgufFile, arch: &str, ctx: usize, threads: usize) -> Result<Self, PersonaError> {
        let GgufFile {
            path,
            mut file,
            content,
        } = g;
        let dev = Device::Cpu;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("idol-llm-{i}"))
            .build()
            .map_err(|e| PersonaError::Other(format!("thread pool: {e}")))?;
        let err = |e: candle_core::Error| {
            load_err(
                &path,
                format!(
                    "cannot load the {arch} model: {e}; the file may be corrupt or of an unsupported variant"
                ),
            )
        };
        let model = pool.install(|| -> Result<Model, PersonaError> {
            Ok(match arch {
                "llama" => Model::Llama(
                    quantized_llama::ModelWeights::from_gguf(content, &mut file, &dev)
                        .map_err(err)?,
                ),
                "qwen2" => Model::Qwen2(
                    quantized_qwen2::ModelWeights::from_gguf(content, &mut file, &dev)
                        .map_err(err)?,
                ),
                "qwen3" => Model::Qwen3(
                    quantized_qwen3::ModelWeights::from_gguf(content, &mut file, &dev)
                        .map_err(err)?,
                ),
                "phi3" => Model::Phi3(
                    quantized_phi3::ModelWeights::from_gguf(false, content, &mut file, &dev)
                        .map_err(err)?,
                ),
                "gemma3" | "gemma2" | "gemma" => Model::Gemma3(
                    quantized_gemma3::ModelWeights::from_gguf(content, &mut file, &dev)
                        .map_err(err)?,
                ),
                other => {
                    return Err(load_err(
                        &path,
                        format!("architecture `{other}` is not supported (supported: {ARCHS:?})"),
                    ));
                }
            })
        })?;
        Ok(CandleModel {
            model,
            pool,
            n_past: 0,
            ctx,
        })
    }

    pub fn n_past(&self) -> usize {
        self.n_past
    }

    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// candle can only keep the whole cache or drop it.
    pub fn truncate(&mut self, n: usize) {
        if n < self.n_past {
            self.n_past = 0;
            if let Model::Llama(m) = &mut self.model {
                m.clear_kv_cache();
            }
            if let Model::Qwen2(m) = &mut self.model {
                m.clear_kv_cache();
            }
            if let Model::Qwen3(m) = &mut self.model {
                m.clear_kv_cache();
            }
        }
    }

    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, PersonaError> {
        if self.n_past + tokens.len() > self.ctx {
            return Err(PersonaError::Generation(format!(
                "context full: {} cached + {} new tokens > {} (drop older turns)",
                self.n_past,
                tokens.len(),
                self.ctx
            )));
        }
        // candle-transformers 0.11's gemma3 builds a wrong attention mask (and fails on its dtypes) for
        // several new tokens after cached ones; one token at a time needs no mask.
        if matches!(self.model, Model::Gemma3(_)) && self.n_past > 0 && tokens.len() > 1 {
            let mut logits = Vec::new();
            for t in tokens {
                logits = self.forward(std::slice::from_ref(t))?;
            }
            return Ok(logits);
        }
        let pos = self.n_past;
        let model = &mut self.model;
        let logits = self.pool.install(|| -> candle_core::Result<Vec<f32>> {
            let input = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
            let out = match model {
                Model::Llama(m) => m.forward(&input, pos)?,
                Model::Qwen2(m) => m.forward(&input, pos)?,
                Model::Qwen3(m) => m.forward(&input, pos)?,
                Model::Phi3(m) => m.forward(&input, pos)?,
                Model::Gemma3(m) => m.forward(&input, pos)?,
            };
            let vocab = *out.dims().last().unwrap_or(&0);
            let all = out
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Ok(all[all.len() - vocab..].to_vec())
        });
        let logits = logits.map_err(gen_err)?;
        self.n_past += tokens.len();
        Ok(logits)
    }
}
