//! In-process LLM engine: a quantized GGUF model on the CPU behind [`TextGenerator`].
//!
//! Stage: persona. Input: chat messages and [`GenParams`]. Output: the reply as streamed UTF-8 text
//! pieces, then a [`GenOutcome`].
//!
//! The model is picked by the GGUF's `general.architecture`. `llama` and `qwen2` files whose matrices
//! are Q4_0, Q4_1, Q5_0, Q8_0, Q4_K or Q6_K (SmolLM2, Qwen2.5 Q4_K_M and most small files of these two
//! families) run on our own forward pass ([`llama`]), which reproduces llama.cpp's arithmetic
//! (activations quantized to Q8_1/Q8_0, or Q8_K for K-quants, integer dot products, f16 KV cache) and
//! is faster than candle's generic kernels on such files; every other supported file (other quant
//! types, `qwen3`, `phi3`, `gemma3`) runs on candle-transformers' quantized models.
//!
//! A call renders the chat template, tokenizes, reuses the longest common token prefix with what the KV
//! cache already holds (so the persona prefix is evaluated once and a new turn pays only for its new
//! tokens), evaluates the rest as one batch, then samples token by token, streaming whole UTF-8 characters
//! and holding back text that may start a stop string.
//!
//! Threading: [`LlmEngine`] is `Send` and single-threaded in use; its forward pass runs on
//! `LlmOptions::threads` compute threads (default one: the voice needs the other core of a small
//! machine), of which a shared [`ThreadBudget`] says how many each forward step uses (the live runtime
//! raises it while the voice is idle). [`LlmWorker`] owns an engine on a dedicated std thread and is
//! the usual way to use it.

pub mod attn;
mod candle_backend;
pub mod gemm;
pub mod llama;
mod pool;
pub mod quant;
pub mod repack;
pub mod sampler;
pub mod template;
pub mod text;
pub mod tokenizer;
mod worker;

pub use worker::LlmWorker;

use crate::persona::{
    CancelToken, ChatMessage, FinishReason, GenOutcome, GenParams, PersonaError, TextGenerator,
};
use candle_core::quantized::{GgmlDType, gguf_file};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

pub(crate) fn load_err(path: &Path, message: String) -> PersonaError {
    PersonaError::Load {
        path: path.to_path_buf(),
        message,
    }
}

/// An open GGUF file: metadata, tensor directory and the file to read tensors from.
pub struct GgufFile {
    pub path: PathBuf,
    file: std::fs::File,
    pub content: gguf_file::Content,
}

fn ggml_type_id(t: GgmlDType) -> u32 {
    use GgmlDType::*;
    match t {
        F32 => 0,
        F16 => 1,
        Q4_0 => 2,
        Q4_1 => 3,
        Q5_0 => 6,
        Q5_1 => 7,
        Q8_0 => 8,
        Q8_1 => 9,
        Q2K => 10,
        Q3K => 11,
        Q4K => 12,
        Q5K => 13,
        Q6K => 14,
        Q8K => 15,
        BF16 => 30,
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, PersonaError> {
        let mut file = std::fs::File::open(path).map_err(|e| {
            load_err(
                path,
                format!("cannot open the model ({e}): install it with `idol fetch` or pass the right path"),
            )
        })?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| {
            load_err(
                path,
                format!("not a valid GGUF file ({e}): the download may be corrupt; fetch it again with `idol fetch`"),
            )
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            file,
            content,
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub fn ggml_type(&self, name: &str) -> Option<u32> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| ggml_type_id(t.ggml_dtype))
    }

    pub fn u32_md(&self, key: &str) -> Option<u32> {
        use gguf_file::Value::*;
        Some(match self.content.metadata.get(key)? {
            U8(v) => *v as u32,
            I8(v) => *v as u32,
            U16(v) => *v as u32,
            I16(v) => *v as u32,
            U32(v) => *v,
            I32(v) => *v as u32,
            U64(v) => *v as u32,
            I64(v) => *v as u32,
            _ => return None,
        })
    }

    pub fn f32_md(&self, key: &str) -> Option<f32> {
        use gguf_file::Value::*;
        match self.content.metadata.get(key)? {
            F32(v) => Some(*v),
            F64(v) => Some(*v as f32),
            _ => self.u32_md(key).map(|v| v as f32),
        }
    }

    pub fn str_md(&self, key: &str) -> Option<String> {
        self.content.metadata.get(key)?.to_string().ok().cloned()
    }

    /// Raw bytes of a tensor, its ggml type id and its ggml dimensions (innermost first).
    pub fn raw(&mut self, name: &str) -> Result<(u32, Vec<usize>, Vec<u8>), PersonaError> {
        use std::io::{Read, Seek, SeekFrom};
        let info = self.content.tensor_infos.get(name).ok_or_else(|| {
            load_err(
                &self.path,
                format!("tensor `{name}` is missing: the file is not a complete model"),
            )
        })?;
        let mut dims = info.shape.dims().to_vec();
        dims.reverse();
        let t = info.ggml_dtype;
        let n = info.shape.elem_count();
        let bytes = n / t.block_size() * t.type_size();
        let start = self.content.tensor_data_offset + info.offset;
        let mut data = vec![0u8; bytes];
        self.file
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.file.read_exact(&mut data))
            .map_err(|e| {
                load_err(
                    &self.path,
                    format!("tensor `{name}` cannot be read ({e}): the file is truncated; fetch it again"),
                )
            })?;
        Ok((ggml_type_id(t), dims, data))
    }

    /// A small f32 or f16 tensor as f32.
    pub fn f32_tensor(&mut self, name: &str) -> Result<Vec<f32>, PersonaError> {
        let (t, _, data) = self.raw(name)?;
        match t {
            quant::GGML_F32 => Ok(data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()),
            quant::GGML_F16 => Ok(data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()),
            _ => Err(load_err(
                &self.path,
                format!("tensor `{name}` has an unexpected type"),
            )),
        }
    }
}

/// How many compute threads the engine may use from its next forward step on (at least 1, at most
/// the `LlmOptions::threads` it was loaded with). Shared: clones set and read the same value, so
/// another thread (the live runtime's voice stage) can lend the engine a core while it is idle and
/// take it back when it has work; the engine reads it once per forward step.
///
/// It carries two standing levels: `busy` (what the engine may use while the rest of the program
/// needs the cores) and `idle` (while it does not); [`ThreadBudget::others_idle`] switches between
/// them, [`ThreadBudget::set`] sets any value.
#[derive(Debug, Clone)]
pub struct ThreadBudget {
    now: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    busy: usize,
    idle: usize,
}

impl ThreadBudget {
    /// Always `threads`.
    pub fn new(threads: usize) -> Self {
        ThreadBudget::levels(threads, threads)
    }

    /// `busy` threads while others need the cores, `idle` while they do not; starts at `busy`.
    pub fn levels(busy: usize, idle: usize) -> Self {
        ThreadBudget {
            now: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(busy.max(1))),
            busy: busy.max(1),
            idle: idle.max(1),
        }
    }

    pub fn set(&self, threads: usize) {
        self.now
            .store(threads, std::sync::atomic::Ordering::Relaxed);
    }

    /// Switch to the `idle` level (the rest of the program does not need the cores now) or back to
    /// `busy`.
    pub fn others_idle(&self, idle: bool) {
        self.set(if idle { self.idle } else { self.busy });
    }

    /// The current budget (never below 1).
    pub fn get(&self) -> usize {
        self.now.load(std::sync::atomic::Ordering::Relaxed).max(1)
    }

    /// The larger level: the threads a pool for this budget needs.
    pub fn max(&self) -> usize {
        self.busy.max(self.idle)
    }
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LlmOptions {
    /// Compute threads the engine starts (default 1; our llama path keeps them in a pool, candle in
    /// a rayon pool).
    pub threads: usize,
    /// How many of `threads` to use per forward step (our llama path; candle uses all `threads`).
    /// `None`: all of them, always. (`threads` is raised to the budget's [`ThreadBudget::max`].)
    pub budget: Option<ThreadBudget>,
    /// KV cache length in tokens (capped at the model's training context).
    pub ctx: usize,
    /// Force candle-transformers even where our own llama path applies (for comparisons).
    pub force_candle: bool,
    /// Our llama path only: multiply f32 activations with dequantized weights instead of quantizing the
    /// activations (slow; the reference that llama.cpp's F32-dequantized run is compared with in tests).
    pub reference_f32: bool,
}

impl Default for LlmOptions {
    fn default() -> Self {
        LlmOptions {
            threads: 1,
            budget: None,
            ctx: 4096,
            force_candle: false,
            reference_f32: false,
        }
    }
}

enum Backend {
    Fast(Box<llama::LlamaModel>),
    Candle(Box<candle_backend::CandleModel>),
}

/// A loaded model with its tokenizer, chat template and KV cache.
pub struct LlmEngine {
    path: PathBuf,
    arch: String,
    backend: Backend,
    tok: tokenizer::Tok,
    template: template::ChatTemplate,
    /// The tokens whose keys and values the cache holds, in order.
    cached: Vec<u32>,
    budget: ThreadBudget,
}

/// The local model's own token counter (its GGUF tokenizer and chat template, read from the file's
/// metadata without the weights), for prompt budgets on the caller's thread while the model runs on
/// its worker.
pub struct TokenCounter {
    tok: tokenizer::Tok,
    template: template::ChatTemplate,
}

impl TokenCounter {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PersonaError> {
        let path = path.as_ref();
        let g = GgufFile::open(path)?;
        let tok = tokenizer::Tok::load(&g)?;
        let template = template::ChatTemplate::new(
            g.str_md("tokenizer.chat_template").as_deref(),
            tok.bos.clone(),
            tok.eos.clone(),
        )
        .map_err(|e| load_err(path, e.to_string()))?;
        Ok(TokenCounter { tok, template })
    }

    /// Tokens of the rendered prompt for `messages` (the estimate if rendering or tokenizing fails).
    pub fn count(&self, messages: &[ChatMessage]) -> usize {
        self.template
            .render(messages)
            .and_then(|t| self.tok.encode(&t))
            .map(|ids| ids.len())
            .unwrap_or_else(|_| crate::persona::prompt::estimate_tokens(messages))
    }
}

impl LlmEngine {
    /// Load a GGUF model. Errors name the path and say what to do.
    pub fn load(path: impl AsRef<Path>, opts: &LlmOptions) -> Result<Self, PersonaError> {
        let path = path.as_ref();
        let mut g = GgufFile::open(path)?;
        let arch = g.str_md("general.architecture").ok_or_else(|| {
            load_err(
                path,
                "no `general.architecture` in the GGUF metadata: not a model file".into(),
            )
        })?;
        if !candle_backend::ARCHS.contains(&arch.as_str()) {
            return Err(load_err(
                path,
                format!(
                    "architecture `{arch}` is not supported (supported: {:?}); use an OpenAI-compatible server for it",
                    candle_backend::ARCHS
                ),
            ));
        }
        let tok = tokenizer::Tok::load(&g)?;
        let template = template::ChatTemplate::new(
            g.str_md("tokenizer.chat_template").as_deref(),
            tok.bos.clone(),
            tok.eos.clone(),
        )
        .map_err(|e| load_err(path, e.to_string()))?;
        let train_ctx = g
            .u32_md(&format!("{arch}.context_length"))
            .map(|v| v as usize)
            .unwrap_or(opts.ctx);
        let ctx = opts.ctx.min(train_ctx).max(16);
        let budget = opts
            .budget
            .clone()
            .unwrap_or_else(|| ThreadBudget::new(opts.threads.max(1)));
        let threads = opts.threads.max(budget.max()).max(1);
        let backend = if !opts.force_candle && llama::supports(&g, &arch) {
            let mut m = llama::LlamaModel::load(&mut g, ctx, threads, budget.clone())?;
            m.reference_f32 = opts.reference_f32;
            Backend::Fast(Box::new(m))
        } else {
            Backend::Candle(Box::new(candle_backend::CandleModel::load(
                g, &arch, ctx, threads,
            )?))
        };
        Ok(LlmEngine {
            path: path.to_path_buf(),
            arch,
            backend,
            tok,
            template,
            cached: Vec::new(),
            budget,
        })
    }

    /// How many compute threads the engine uses per step (shared with whoever holds a clone).
    pub fn thread_budget(&self) -> &ThreadBudget {
        &self.budget
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `general.architecture` of the file.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Whether our own llama path runs this model (else candle-transformers).
    pub fn is_fast_path(&self) -> bool {
        matches!(self.backend, Backend::Fast(_))
    }

    /// KV cache length in tokens.
    pub fn ctx(&self) -> usize {
        match &self.backend {
            Backend::Fast(m) => m.ctx(),
            Backend::Candle(m) => m.ctx(),
        }
    }

    pub fn tokenizer(&self) -> &tokenizer::Tok {
        &self.tok
    }

    /// The prompt text for `messages` (chat template, assistant turn opened).
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, PersonaError> {
        self.template.render(messages)
    }

    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, PersonaError> {
        self.tok.encode(text)
    }

    /// Tokens currently held in the KV cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Drop the cache after its first `n` tokens (candle models can only drop all of it).
    pub fn truncate(&mut self, n: usize) {
        match &mut self.backend {
            Backend::Fast(m) => m.truncate(n),
            Backend::Candle(m) => m.truncate(n),
        }
        let kept = match &self.backend {
            Backend::Fast(m) => m.n_past(),
            Backend::Candle(m) => m.n_past(),
        };
        self.cached.truncate(kept);
    }

    /// Evaluate `tokens` after the cached ones; returns the logits after the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>, PersonaError> {
        let logits = match &mut self.backend {
            Backend::Fast(m) => m.forward(tokens)?,
            Backend::Candle(m) => m.forward(tokens)?,
        };
        self.cached.extend_from_slice(tokens);
        Ok(logits)
    }

    /// Bring the cache to exactly `tokens`, evaluating only what is not cached yet (at least the last
    /// token, for its logits). Returns the logits and the number of tokens evaluated.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<(Vec<f32>, usize), PersonaError> {
        if tokens.is_empty() {
            return Err(PersonaError::Generation("empty prompt".into()));
        }
        if tokens.len() >= self.ctx() {
            return Err(PersonaError::Generation(format!(
                "the prompt is {} tokens but the context holds {}: drop older turns (or load with a larger context)",
                tokens.len(),
                self.ctx()
            )));
        }
        let common = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
            .min(tokens.len() - 1);
        self.truncate(common);
        let start = self.cached.len();
        let logits = self.eval(&tokens[start..])?;
        Ok((logits, tokens.len() - start))
    }

    /// [`TextGenerator::prepare`]: evaluate the prompt of `messages` plus a user message up to where
    /// that message's text begins (less its last token if text after it would merge into it).
    /// Returns the number of tokens evaluated.
    pub fn prepare_next(&mut self, messages: &[ChatMessage]) -> Result<usize, PersonaError> {
        const MARK: &str = "IDOLNEXTUSERMESSAGE";
        let mut next = messages.to_vec();
        next.push(ChatMessage::new(crate::persona::Role::User, MARK));
        let text = self.render(&next)?;
        let Some(at) = text.find(MARK) else {
            return Ok(0);
        };
        let mut tokens = self.tokenize(&text[..at])?;
        // keep the last token only where the text after it does not merge into it
        let probe = self.tokenize(&format!("{}a", &text[..at]))?;
        if !probe.starts_with(&tokens) {
            tokens.pop();
        }
        if tokens.is_empty() || self.cached.starts_with(&tokens) {
            return Ok(0);
        }
        Ok(self.prefill(&tokens)?.1)
    }

    /// Generate from an already rendered prompt.
    pub fn generate_prompt(
        &mut self,
        prompt: &str,
        params: &GenParams,
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenOutcome, PersonaError> {
        self.generate_with(prompt, params, &|| cancel.is_cancelled(), on_text)
    }

    /// Generate from an already rendered prompt; `cancelled` is polled before every token.
    pub fn generate_with(
        &mut self,
        prompt: &str,
        params: &GenParams,
        cancelled: &dyn Fn() -> bool,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenOutcome, PersonaError> {
        let tokens = self.tokenize(prompt)?;
        let (mut logits, evaluated) = self.prefill(&tokens)?;
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let mut history = tokens.clone();
        let mut utf8 = text::Utf8Stream::new();
        let mut stop = text::StopFilter::new(&params.stop);
        let mut out = String::new();
        let mut completion = 0;
        let mut stopped_by_string = false;
        let finish = loop {
            if cancelled() {
                break FinishReason::Cancelled;
            }
            if completion >= params.max_tokens || self.cached.len() + 1 >= self.ctx() {
                break FinishReason::Length;
            }
            let tok = sampler::sample(&mut logits, params, &history, &mut rng);
            if self.tok.is_eog(tok) {
                break FinishReason::Stop;
            }
            completion += 1;
            history.push(tok);
            let piece = utf8.push(self.tok.bytes(tok));
            let (emit, hit) = stop.push(&piece);
            if !emit.is_empty() {
                out.push_str(&emit);
                if !on_text(&emit) {
                    break FinishReason::Cancelled;
                }
            }
            if hit {
                stopped_by_string = true;
                break FinishReason::Stop;
            }
            if cancelled() {
                break FinishReason::Cancelled;
            }
            logits = self.eval(&[tok])?;
        };
        if finish != FinishReason::Cancelled && !stopped_by_string {
            let rest = stop.flush();
            if !rest.is_empty() {
                out.push_str(&rest);
                on_text(&rest);
            }
        }
        Ok(GenOutcome {
            text: out,
            finish,
            prompt_tokens: tokens.len(),
            prompt_tokens_evaluated: evaluated,
            completion_tokens: completion,
        })
    }
}

impl TextGenerator for LlmEngine {
    fn generate(
        &mut self,
        messages: &[ChatMessage],
        params: &GenParams,
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenOutcome, PersonaError> {
        let prompt = self.render(messages)?;
        self.generate_prompt(&prompt, params, cancel, on_text)
    }

    fn thread_budget(&self) -> Option<ThreadBudget> {
        Some(self.budget.clone())
    }

    fn prepare(&mut self, messages: &[ChatMessage]) -> Result<(), PersonaError> {
        self.prepare_next(messages).map(|_| ())
    }
}
