//! Stage `persona`: who the idol is and what she says. Input: chat turns (viewer messages, operator text).
//! Output: a stream of reply text (tags included; `crate::text` pulls the cues out).
//!
//! Threading: a [`TextGenerator`] owns its model and runs on a dedicated std thread (one compute thread
//! for candle); HTTP backends block on their own thread as well. Cancellation is cooperative: the
//! `on_text` callback returns `false`, or the [`CancelToken`] is set, and generation stops after the
//! current token.

pub mod card;
pub mod conversation;
pub mod guard;
pub mod import;
pub mod judge;
pub mod lang;
pub mod llm;
pub mod memory;
pub mod openai;
pub mod prompt;
pub mod shape;
pub mod sse;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Who said a chat turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat turn as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// Sampling and stopping parameters. `temperature == 0` is greedy argmax.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenParams {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
    pub max_tokens: usize,
    pub stop: Vec<String>,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: 0,
            max_tokens: 160,
            stop: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-turn token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// Cancelled by the caller.
    Cancelled,
}

/// What a finished generation reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenOutcome {
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens actually evaluated (the rest came from the cached prefix).
    pub prompt_tokens_evaluated: usize,
    pub completion_tokens: usize,
}

/// A flag another thread sets to stop generation after the current token.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Errors from persona backends, cards and memory.
#[derive(Debug, thiserror::Error)]
pub enum PersonaError {
    #[error("{path}: {message}")]
    Load {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("generation failed: {0}")]
    Generation(String),
    #[error("{0}")]
    Other(String),
    /// A persona card that does not parse or validate (positioned).
    #[error(transparent)]
    Card(#[from] card::CardError),
    /// An OpenAI-compatible server failed; any text that arrived is in the error.
    #[error(transparent)]
    Backend(#[from] openai::BackendError),
}

/// Chat turns in, reply text out, streamed. Real: the candle GGUF engine and the OpenAI-compatible HTTP
/// client. Fake (unit tests of the stages around it): a scripted token list.
pub trait TextGenerator: Send {
    /// Generate the assistant's reply to `messages`. `on_text` receives each new piece of UTF-8 text as
    /// it is decoded and returns `false` to stop.
    fn generate(
        &mut self,
        messages: &[ChatMessage],
        params: &GenParams,
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenOutcome, PersonaError>;

    /// The compute-thread budget of an in-process engine, for a caller that knows when the cores
    /// are free (the live runtime lends it the voice's core while the voice is idle); `None` for
    /// backends without one.
    fn thread_budget(&self) -> Option<llm::ThreadBudget> {
        None
    }

    /// Work ahead while nobody waits: the next request will be `messages` followed by one more user
    /// message; an in-process engine evaluates the prompt up to where that message's text will
    /// begin (this reply's end, the next user turn's header) into its cache, so the request pays
    /// only for its own text. May return before the work is done; a later request waits for it.
    /// Backends without a cache do nothing.
    fn prepare(&mut self, messages: &[ChatMessage]) -> Result<(), PersonaError> {
        let _ = messages;
        Ok(())
    }
}
