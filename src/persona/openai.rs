//! OpenAI-compatible chat backend: a [`TextGenerator`] that streams from `POST {base}/v1/chat/completions`
//! (llama.cpp's `llama-server` on :8080, Ollama on :11434/v1, vLLM, LM Studio, ...).
//!
//! Input: chat messages and [`GenParams`]. Output: the reply text, streamed to the callback as the
//! server's Server-Sent Events arrive (`data: {"choices":[{"delta":{"content":"..."}}]}` ... `data: [DONE]`).
//!
//! Threading: `generate` blocks its caller. The backend owns a single-threaded tokio runtime and
//! drives reqwest on it; call it from a plain std thread (the persona thread). Called from inside a
//! tokio runtime, it moves the request onto a scoped helper thread (a nested `block_on` would panic);
//! it may also be created and dropped there. Cancellation: the [`CancelToken`] is polled every 20 ms
//! while waiting for the network, and the callback returning `false` stops at once; either drops the
//! connection, which makes llama.cpp and vLLM stop generating.
//!
//! Failure policy: every error names the URL. A server that is not there, that answers an HTTP error
//! (its body excerpt is quoted), that sends something that is not an event stream, or that stops in the
//! middle of a reply gives a [`BackendError`]; when text had already arrived, the error keeps it
//! ([`BackendError::partial_text`]) and says the reply was cut. Only `http://` URLs work in this build
//! (no TLS stack is compiled in); put a local TLS-terminating proxy in front of remote servers.

use super::sse::SseParser;
use super::{
    CancelToken, ChatMessage, FinishReason, GenOutcome, GenParams, PersonaError, Role,
    TextGenerator,
};
use serde_json::{Value, json};
use std::future::Future;
use std::time::{Duration, Instant};

/// How to reach the server.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiConfig {
    /// Server root, e.g. `http://127.0.0.1:8080` or `http://127.0.0.1:11434/v1` (a trailing `/v1` is
    /// accepted and not doubled).
    pub base_url: String,
    /// Model name sent in the request (llama.cpp ignores it; Ollama and vLLM need the served name).
    pub model: String,
    /// Name of the environment variable holding the API key (`Authorization: Bearer ...`); unset or
    /// empty variable: no header.
    pub api_key_env: Option<String>,
    /// Time allowed to open the TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for the response headers (the server evaluates the prompt first) and, after that,
    /// between two pieces of the body.
    pub read_timeout: Duration,
    /// Also send the samplers the OpenAI API itself lacks (`top_k`, `min_p`, `repeat_penalty`,
    /// `repetition_penalty`); llama.cpp and vLLM use them, Ollama ignores them.
    pub extended_sampling: bool,
    /// Honour `HTTP_PROXY`/`http_proxy` from the environment.
    pub use_env_proxy: bool,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: "http://127.0.0.1:8080".into(),
            model: "default".into(),
            api_key_env: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            extended_sampling: true,
            use_env_proxy: false,
        }
    }
}

impl OpenAiConfig {
    /// The full chat-completions URL for this base.
    pub fn endpoint(&self) -> String {
        let base = self.base_url.trim().trim_end_matches('/');
        if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        }
    }
}

/// What went wrong talking to the server. Every variant names the URL; those that can happen after text
/// arrived keep that text in `partial`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    #[error("bad LLM server configuration: {0}")]
    Config(String),
    #[error(
        "cannot reach the LLM server at {url}: {detail}. Is it running, and is the base URL right? \
         (llama.cpp: `llama-server -m MODEL.gguf --port 8080`, base http://127.0.0.1:8080; \
         Ollama: `ollama serve`, base http://127.0.0.1:11434/v1; pass --base-url)"
    )]
    Unreachable { url: String, detail: String },
    #[error("the LLM server at {url} answered HTTP {status}: {excerpt}{hint}")]
    Status {
        url: String,
        status: u16,
        excerpt: String,
        hint: String,
    },
    #[error(
        "the LLM server at {url} answered something that is not an OpenAI-compatible event stream \
         ({detail}); it began with {excerpt:?}. Check that the base URL points at the server's \
         OpenAI-compatible API{cut}",
        cut = cut_note(partial)
    )]
    Garbage {
        url: String,
        detail: String,
        excerpt: String,
        partial: String,
    },
    #[error("the LLM server at {url} reported an error: {message}{cut}", cut = cut_note(partial))]
    Server {
        url: String,
        message: String,
        partial: String,
    },
    #[error("the LLM server at {url} sent nothing for {secs:.1} s while {during}{cut}", cut = cut_note(partial))]
    Timeout {
        url: String,
        secs: f64,
        during: String,
        partial: String,
    },
    #[error(
        "the reply from the LLM server at {url} was cut off after {chars} characters: {detail}",
        chars = partial.chars().count()
    )]
    Cut {
        url: String,
        detail: String,
        partial: String,
    },
}

fn cut_note(partial: &str) -> String {
    if partial.is_empty() {
        String::new()
    } else {
        format!(
            " (the reply was cut off after {} characters; the text so far is kept)",
            partial.chars().count()
        )
    }
}

impl BackendError {
    /// The reply text that had arrived before the failure (empty when none).
    pub fn partial_text(&self) -> &str {
        match self {
            BackendError::Garbage { partial, .. }
            | BackendError::Server { partial, .. }
            | BackendError::Timeout { partial, .. }
            | BackendError::Cut { partial, .. } => partial,
            _ => "",
        }
    }
}

/// The OpenAI-compatible streaming client.
pub struct OpenAiBackend {
    config: OpenAiConfig,
    url: String,
    client: reqwest::Client,
    /// Always `Some` until drop (taken there so dropping never blocks an async context).
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiBackend")
            .field("url", &self.url)
            .field("model", &self.config.model)
            .finish()
    }
}

const POLL: Duration = Duration::from_millis(20);
const EXCERPT_CHARS: usize = 300;

enum Waited<T> {
    Done(T),
    TimedOut,
    Cancelled,
}

/// Await `fut`, giving up after `limit` or when `cancel` is set.
async fn wait<F: Future>(fut: F, limit: Duration, cancel: &[&CancelToken]) -> Waited<F::Output> {
    let start = Instant::now();
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Waited::Done(out),
            _ = tokio::time::sleep(POLL) => {
                if cancel.iter().any(|c| c.is_cancelled()) {
                    return Waited::Cancelled;
                }
                if start.elapsed() >= limit {
                    return Waited::TimedOut;
                }
            }
        }
    }
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = collapsed.chars().take(EXCERPT_CHARS).collect();
    if collapsed.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// The error text inside a JSON error body (`{"error":{"message":...}}`, `{"error":"..."}`,
/// `{"detail":...}`, `{"message":...}`), if it is one.
fn json_error_message(v: &Value) -> Option<String> {
    let e = v.get("error").or_else(|| v.get("detail"));
    match e {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| Some(Value::Object(o.clone()).to_string())),
        Some(other) if !other.is_null() => Some(other.to_string()),
        _ => v.get("message").and_then(Value::as_str).map(str::to_string),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// Accumulates one reply.
struct Reply {
    text: String,
    finish: Option<FinishReason>,
    prompt_tokens: Option<usize>,
    prompt_evaluated: Option<usize>,
    completion_tokens: Option<usize>,
    pieces: usize,
    stopped_by_caller: bool,
}

impl Reply {
    fn new() -> Self {
        Reply {
            text: String::new(),
            finish: None,
            prompt_tokens: None,
            prompt_evaluated: None,
            completion_tokens: None,
            pieces: 0,
            stopped_by_caller: false,
        }
    }

    fn outcome(self, finish: FinishReason) -> GenOutcome {
        let prompt_tokens = self.prompt_tokens.unwrap_or(0);
        GenOutcome {
            text: self.text,
            finish,
            prompt_tokens,
            prompt_tokens_evaluated: self.prompt_evaluated.unwrap_or(prompt_tokens),
            completion_tokens: self.completion_tokens.unwrap_or(self.pieces),
        }
    }

    /// Take the usage figures from a chunk (OpenAI `usage`, llama.cpp `timings`).
    fn usage(&mut self, v: &Value) {
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            if let Some(n) = u.get("prompt_tokens").and_then(Value::as_u64) {
                self.prompt_tokens = Some(n as usize);
            }
            if let Some(n) = u.get("completion_tokens").and_then(Value::as_u64) {
                self.completion_tokens = Some(n as usize);
            }
        }
        if let Some(n) = v
            .get("timings")
            .and_then(|t| t.get("prompt_n"))
            .and_then(Value::as_u64)
        {
            self.prompt_evaluated = Some(n as usize);
        }
    }

    /// Apply one JSON chunk; returns `false` when the caller asked to stop.
    fn apply(&mut self, v: &Value, on_text: &mut dyn FnMut(&str) -> bool) -> bool {
        self.usage(v);
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return true;
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(match reason {
                "length" => FinishReason::Length,
                _ => FinishReason::Stop,
            });
        }
        let content = choice
            .get("delta")
            .and_then(|d| d.get("content"))
            .or_else(|| choice.get("message").and_then(|m| m.get("content")))
            .and_then(Value::as_str);
        if let Some(piece) = content.filter(|s| !s.is_empty()) {
            self.text.push_str(piece);
            self.pieces += 1;
            if !on_text(piece) {
                self.stopped_by_caller = true;
                return false;
            }
        }
        true
    }
}

impl OpenAiBackend {
    pub fn new(config: OpenAiConfig) -> Result<Self, BackendError> {
        let url = config.endpoint();
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            BackendError::Config(format!("base URL {:?} is not a URL: {e}", config.base_url))
        })?;
        match parsed.scheme() {
            "http" => {}
            "https" => {
                return Err(BackendError::Config(format!(
                    "{url}: https is not supported in this build (no TLS stack compiled in); use an \
                     http:// endpoint, e.g. a local server or a local TLS-terminating proxy"
                )));
            }
            s => {
                return Err(BackendError::Config(format!(
                    "{url}: unsupported scheme {s:?}; use http://HOST:PORT"
                )));
            }
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true);
        if !config.use_env_proxy {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| BackendError::Config(format!("cannot build the HTTP client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BackendError::Config(format!("cannot start the HTTP runtime: {e}")))?;
        Ok(OpenAiBackend {
            config,
            url,
            client,
            runtime: Some(runtime),
        })
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The chat-completions URL requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The JSON request body for these messages and parameters.
    pub fn request_body(&self, messages: &[ChatMessage], params: &GenParams) -> Value {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| json!({"role": role_name(m.role), "content": m.content}))
            .collect();
        let mut body = json!({
            "model": self.config.model,
            "messages": msgs,
            "stream": true,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "seed": params.seed,
        });
        let obj = body.as_object_mut().expect("object literal");
        if !params.stop.is_empty() {
            obj.insert("stop".into(), json!(params.stop));
        }
        if self.config.extended_sampling {
            obj.insert("top_k".into(), json!(params.top_k));
            obj.insert("min_p".into(), json!(params.min_p));
            obj.insert("repeat_penalty".into(), json!(params.repeat_penalty));
            obj.insert("repeat_last_n".into(), json!(params.repeat_last_n));
            obj.insert("repetition_penalty".into(), json!(params.repeat_penalty));
        }
        body
    }

    fn api_key(&self) -> Option<String> {
        let var = self.config.api_key_env.as_deref()?;
        std::env::var(var).ok().filter(|k| !k.trim().is_empty())
    }

    async fn run(
        &self,
        body: Value,
        cancel: &[&CancelToken],
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenOutcome, BackendError> {
        let url = self.url.clone();
        let read_timeout = self.config.read_timeout;
        let mut req = self
            .client
            .post(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        if let Some(key) = self.api_key() {
            req = req.bearer_auth(key);
        }
        let mut reply = Reply::new();
        let mut resp = match wait(
            req.send(),
            self.config.connect_timeout + read_timeout,
            cancel,
        )
        .await
        {
            Waited::Cancelled => return Ok(reply.outcome(FinishReason::Cancelled)),
            Waited::TimedOut => {
                return Err(BackendError::Timeout {
                    url,
                    secs: (self.config.connect_timeout + read_timeout).as_secs_f64(),
                    during: "waiting for the response headers (is the model loaded? raise the read timeout for slow servers)".into(),
                    partial: String::new(),
                });
            }
            Waited::Done(Err(e)) => return Err(self.send_error(e)),
            Waited::Done(Ok(r)) => r,
        };

        let status = resp.status();
        if !status.is_success() {
            let mut bytes = Vec::new();
            while bytes.len() < 64 * 1024 {
                match wait(resp.chunk(), read_timeout, cancel).await {
                    Waited::Done(Ok(Some(c))) => bytes.extend_from_slice(&c),
                    _ => break,
                }
            }
            let excerpt = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| json_error_message(&v))
                .map(|m| excerpt(m.as_bytes()))
                .unwrap_or_else(|| excerpt(&bytes));
            let hint = match status.as_u16() {
                401 | 403 => match &self.config.api_key_env {
                    Some(var) => format!(" (check the API key in the environment variable {var})"),
                    None => {
                        " (the server wants an API key: pass --api-key-env VAR and set VAR)".into()
                    }
                },
                404 => format!(
                    " (check the base URL: {url} must be an OpenAI-compatible chat endpoint, and the \
                     model name {:?} must be one the server serves; for Ollama run `ollama pull MODEL`)",
                    self.config.model
                ),
                _ => String::new(),
            };
            return Err(BackendError::Status {
                url,
                status: status.as_u16(),
                excerpt: if excerpt.is_empty() {
                    "(empty body)".into()
                } else {
                    excerpt
                },
                hint,
            });
        }

        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();

        if content_type.starts_with("application/json") {
            // A server that ignored `"stream": true` and answered one completion.
            let mut bytes = Vec::new();
            loop {
                match wait(resp.chunk(), read_timeout, cancel).await {
                    Waited::Done(Ok(Some(c))) => bytes.extend_from_slice(&c),
                    Waited::Done(Ok(None)) => break,
                    Waited::Cancelled => return Ok(reply.outcome(FinishReason::Cancelled)),
                    Waited::TimedOut => {
                        return Err(BackendError::Timeout {
                            url,
                            secs: read_timeout.as_secs_f64(),
                            during: "reading a JSON reply".into(),
                            partial: String::new(),
                        });
                    }
                    Waited::Done(Err(e)) => {
                        return Err(BackendError::Cut {
                            url,
                            detail: format!(
                                "the connection failed while reading a JSON reply: {e}"
                            ),
                            partial: String::new(),
                        });
                    }
                }
            }
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| BackendError::Garbage {
                url: url.clone(),
                detail: format!("a JSON content type but not JSON: {e}"),
                excerpt: excerpt(&bytes),
                partial: String::new(),
            })?;
            if let Some(message) = json_error_message(&v) {
                return Err(BackendError::Server {
                    url,
                    message,
                    partial: String::new(),
                });
            }
            if v.get("choices").and_then(|c| c.get(0)).is_none() {
                return Err(BackendError::Garbage {
                    url,
                    detail: "a JSON reply without `choices`".into(),
                    excerpt: excerpt(&bytes),
                    partial: String::new(),
                });
            }
            reply.apply(&v, on_text);
            if reply.stopped_by_caller {
                return Ok(reply.outcome(FinishReason::Cancelled));
            }
            let finish = reply.finish.unwrap_or(FinishReason::Stop);
            return Ok(reply.outcome(finish));
        }

        let mut parser = SseParser::new();
        let mut head: Vec<u8> = Vec::new();
        let mut events = 0usize;
        loop {
            let chunk = match wait(resp.chunk(), read_timeout, cancel).await {
                Waited::Cancelled => return Ok(reply.outcome(FinishReason::Cancelled)),
                Waited::TimedOut => {
                    return Err(BackendError::Timeout {
                        url,
                        secs: read_timeout.as_secs_f64(),
                        during: if reply.text.is_empty() {
                            "waiting for the first token".into()
                        } else {
                            "streaming the reply".into()
                        },
                        partial: reply.text,
                    });
                }
                Waited::Done(Err(e)) => {
                    return Err(BackendError::Cut {
                        url,
                        detail: format!("the connection broke mid-stream ({})", error_chain(&e)),
                        partial: reply.text,
                    });
                }
                Waited::Done(Ok(None)) => {
                    // End of body without `[DONE]`.
                    if events == 0 {
                        return Err(BackendError::Garbage {
                            url,
                            detail: if head.is_empty() {
                                "an empty body".into()
                            } else {
                                "no events before the body ended".into()
                            },
                            excerpt: excerpt(&head),
                            partial: reply.text,
                        });
                    }
                    if let Some(finish) = reply.finish {
                        // Some servers end after the finishing chunk without `[DONE]`.
                        return Ok(reply.outcome(finish));
                    }
                    return Err(BackendError::Cut {
                        url,
                        detail: "the server closed the stream before `data: [DONE]`".into(),
                        partial: reply.text,
                    });
                }
                Waited::Done(Ok(Some(c))) => c,
            };
            if head.len() < 512 {
                head.extend_from_slice(&chunk[..chunk.len().min(512 - head.len())]);
            }
            let evs = parser.push(&chunk).map_err(|e| BackendError::Garbage {
                url: url.clone(),
                detail: e.to_string(),
                excerpt: excerpt(&head),
                partial: reply.text.clone(),
            })?;
            if parser.first_line_known() == Some(false) {
                return Err(BackendError::Garbage {
                    url,
                    detail: format!(
                        "content type {content_type:?}, and the first line is no SSE field"
                    ),
                    excerpt: excerpt(&head),
                    partial: reply.text,
                });
            }
            for ev in evs {
                events += 1;
                let data = ev.data.trim();
                if data == "[DONE]" {
                    let finish = reply.finish.unwrap_or(FinishReason::Stop);
                    return Ok(reply.outcome(finish));
                }
                if data.is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(data).map_err(|e| BackendError::Garbage {
                    url: url.clone(),
                    detail: format!("an event whose data is not JSON ({e})"),
                    excerpt: excerpt(data.as_bytes()),
                    partial: reply.text.clone(),
                })?;
                if ev.event.as_deref() == Some("error")
                    || v.get("error").is_some_and(|e| !e.is_null())
                {
                    return Err(BackendError::Server {
                        url,
                        message: json_error_message(&v).unwrap_or_else(|| excerpt(data.as_bytes())),
                        partial: reply.text,
                    });
                }
                if !v.is_object() {
                    return Err(BackendError::Garbage {
                        url,
                        detail: "an event whose data is not a JSON object".into(),
                        excerpt: excerpt(data.as_bytes()),
                        partial: reply.text,
                    });
                }
                if !reply.apply(&v, on_text) {
                    return Ok(reply.outcome(FinishReason::Cancelled));
                }
                if cancel.iter().any(|c| c.is_cancelled()) {
                    return Ok(reply.outcome(FinishReason::Cancelled));
                }
            }
        }
    }

    fn send_error(&self, e: reqwest::Error) -> BackendError {
        let url = self.url.clone();
        if e.is_connect() || e.is_timeout() {
            // The innermost cause ("Connection refused (os error 111)") says it best.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(s) = cause.source() {
                cause = s;
            }
            let detail = if e.is_timeout() {
                format!(
                    "no connection within {:.1} s ({cause})",
                    self.config.connect_timeout.as_secs_f64()
                )
            } else {
                cause.to_string()
            };
            BackendError::Unreachable { url, detail }
        } else {
            let detail = error_chain(&e);
            BackendError::Cut {
                url,
                detail: format!("the request failed before a response arrived ({detail})"),
                partial: String::new(),
            }
        }
    }
}

/// `e` and its sources, joined (reqwest's top-level message alone is vague).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
}

impl Drop for OpenAiBackend {
    fn drop(&mut self) {
        // A plain drop would block, which panics inside an async context.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl TextGenerator for OpenAiBackend {
    fn generate(
        &mut self,
        messages: &[ChatMessage],
        params: &GenParams,
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenOutcome, PersonaError> {
        let body = self.request_body(messages, params);
        let this = &*self;
        let result = if tokio::runtime::Handle::try_current().is_ok() {
            // Inside an async context a nested `block_on` would panic: run the request on a helper
            // thread and hand the pieces back here, where the (non-Send) callback lives.
            std::thread::scope(|s| {
                let (tx, rx) = std::sync::mpsc::channel::<String>();
                let stop = CancelToken::new();
                let stop_http = stop.clone();
                let worker = s.spawn(move || {
                    let mut forward = |piece: &str| {
                        !stop_http.is_cancelled() && tx.send(piece.to_string()).is_ok()
                    };
                    this.rt()
                        .block_on(this.run(body, &[cancel, &stop_http], &mut forward))
                });
                let mut delivered = String::new();
                let mut stopped = false;
                for piece in rx {
                    delivered.push_str(&piece);
                    if !on_text(&piece) {
                        stop.cancel();
                        stopped = true;
                        break;
                    }
                }
                let joined = worker.join().unwrap_or_else(|_| {
                    Err(BackendError::Config("the HTTP thread panicked".into()))
                });
                match joined {
                    Ok(mut out) if stopped => {
                        out.text = delivered;
                        out.finish = FinishReason::Cancelled;
                        Ok(out)
                    }
                    other => other,
                }
            })
        } else {
            this.rt().block_on(this.run(body, &[cancel], on_text))
        };
        result.map_err(PersonaError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_does_not_double_v1() {
        let mut c = OpenAiConfig::default();
        assert_eq!(c.endpoint(), "http://127.0.0.1:8080/v1/chat/completions");
        c.base_url = "http://127.0.0.1:11434/v1/".into();
        assert_eq!(c.endpoint(), "http://127.0.0.1:11434/v1/chat/completions");
    }

    #[test]
    fn https_is_refused_with_a_reason() {
        let c = OpenAiConfig {
            base_url: "https://api.example.com".into(),
            ..OpenAiConfig::default()
        };
        let e = OpenAiBackend::new(c).unwrap_err();
        assert!(e.to_string().contains("https is not supported"), "{e}");
    }

    #[test]
    fn request_body_carries_params() {
        let b = OpenAiBackend::new(OpenAiConfig::default()).unwrap();
        let params = GenParams {
            stop: vec!["\nViewer".into()],
            ..GenParams::default()
        };
        let body = b.request_body(&[ChatMessage::new(Role::User, "hi")], &params);
        assert_eq!(body["stream"], true);
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["stop"][0], "\nViewer");
        assert_eq!(body["top_k"], 40);
    }
}
