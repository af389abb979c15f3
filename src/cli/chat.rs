//! `idol chat`: talk to the persona in a terminal. A REPL that streams each reply as it is generated,
//! or `--once "Hi!"` for scripts (the reply on stdout, diagnostics on stderr, non-zero exit on error).
//!
//! The text you type goes through the same path as viewer chat on stream: wrapped with your name,
//! neutralized, checked against the card's blocked words; the reply is streamed through the
//! blocked-word filter, and both are kept in the persona's memory file (unless `--no-memory`).
//! Replies are printed with their `[emotion]` and `<action>` tags.

use super::Env;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use idol::config::LlmBackend;
use idol::persona::card::expand_macros;
use idol::persona::guard::{BlockedWords, FilterStep, ReplyFilter};
use idol::persona::import::load_card;
use idol::persona::memory::{Memory, Turn};
use idol::persona::openai::{OpenAiBackend, OpenAiConfig};
use idol::persona::prompt::{DEFAULT_USER_NAME, PromptBuilder, estimate_tokens};
use idol::persona::{CancelToken, ChatMessage, FinishReason, GenParams, TextGenerator};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Which text generator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The in-process GGUF engine (`llm.model` in idol.toml).
    Local,
    /// An OpenAI-compatible server: llama.cpp `llama-server`, Ollama, vLLM.
    Openai,
}

/// Flags override idol.toml's `[persona]` and `[llm]` settings.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Say this one message, print the reply, and exit.
    #[arg(long, value_name = "TEXT")]
    pub once: Option<String>,
    /// Persona card: our TOML, a Character Card V2/V3 JSON or PNG, or a CHARX zip [config: persona.card].
    #[arg(long)]
    pub persona: Option<PathBuf>,
    /// Which generator answers [config: llm.backend].
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// OpenAI-compatible server root, e.g. http://127.0.0.1:8080 (llama.cpp) or
    /// http://127.0.0.1:11434/v1 (Ollama) [config: llm.base_url].
    #[arg(long)]
    pub base_url: Option<String>,
    /// Model: the served model name for `openai` (Ollama and vLLM need it), the GGUF path for `local`
    /// [config: llm.api_model / llm.model].
    #[arg(long)]
    pub model: Option<String>,
    /// Environment variable holding the server's API key [config: llm.api_key_env].
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Seconds to wait for the server's first token, and between tokens [config: llm.timeout_secs].
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Your name as a viewer.
    #[arg(long, default_value = "you")]
    pub user: String,
    /// Where per-persona memory files live [config: persona.memory_dir].
    #[arg(long)]
    pub memory_dir: Option<PathBuf>,
    /// Neither read nor write the persona's memory.
    #[arg(long)]
    pub no_memory: bool,
    /// Context size of the model in tokens; older history is dropped first [config: llm.context].
    #[arg(long)]
    pub context: Option<usize>,
    /// Max reply tokens (default: the card's `generation.max_tokens`).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Temperature, 0 = greedy (default: the card's `generation.temperature`).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Sampling seed.
    #[arg(long)]
    pub seed: Option<u64>,
}

pub fn run(env: &Env, args: &ChatArgs) -> Result<ExitCode> {
    let config = env.config()?;
    let llm = &config.llm;
    let card_path = env
        .home
        .path(args.persona.as_ref().unwrap_or(&config.persona.card));
    let card = load_card(&card_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let backend = args.backend.unwrap_or(match llm.backend {
        LlmBackend::Local => BackendKind::Local,
        LlmBackend::Openai => BackendKind::Openai,
    });
    let mut generator: Box<dyn TextGenerator> = match backend {
        BackendKind::Openai => Box::new(
            OpenAiBackend::new(OpenAiConfig {
                base_url: args
                    .base_url
                    .clone()
                    .unwrap_or_else(|| llm.base_url.clone()),
                model: args.model.clone().unwrap_or_else(|| llm.api_model.clone()),
                api_key_env: args.api_key_env.clone().or_else(|| llm.api_key_env.clone()),
                read_timeout: Duration::from_secs_f64(
                    args.timeout.unwrap_or(llm.timeout_secs).max(0.1),
                ),
                ..OpenAiConfig::default()
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        BackendKind::Local => bail!(
            "the in-process GGUF engine is not wired into `idol chat` in this build yet; use \
             `--backend openai --base-url URL` with a llama.cpp, Ollama or vLLM server (or set \
             `backend = \"openai\"` under [llm] in idol.toml)"
        ),
    };
    // The card's generation settings, then idol.toml's where they differ from the built-in defaults,
    // then the flags.
    let mut params: GenParams = card.generation.clone();
    let defaults = GenParams::default();
    if (llm.temperature - defaults.temperature).abs() > f32::EPSILON {
        params.temperature = llm.temperature;
    }
    if llm.max_tokens != defaults.max_tokens {
        params.max_tokens = llm.max_tokens;
    }
    if llm.seed != defaults.seed {
        params.seed = llm.seed;
    }
    if let Some(n) = args.max_tokens {
        params.max_tokens = n;
    }
    if let Some(t) = args.temperature {
        params.temperature = t;
    }
    if let Some(s) = args.seed {
        params.seed = s;
    }
    let mut memory = if args.no_memory {
        None
    } else {
        let dir = env.home.path(
            args.memory_dir
                .as_ref()
                .unwrap_or(&config.persona.memory_dir),
        );
        let m = Memory::open(&dir, &card.slug()).map_err(|e| anyhow::anyhow!("{e}"))?;
        for w in m.warnings() {
            eprintln!("warning: {w}");
        }
        Some(m)
    };
    let context = args.context.unwrap_or(llm.context);
    let mut session = Session {
        cancel: CancelToken::new(),
        busy: Arc::new(AtomicBool::new(false)),
        builder: PromptBuilder::new(&card, DEFAULT_USER_NAME, context, params.max_tokens),
        blocked: BlockedWords::new(&card.blocked_words),
        deflection: card.deflection.clone(),
        params,
        history: memory.as_ref().map(Memory::messages).unwrap_or_default(),
    };

    install_ctrl_c(session.cancel.clone(), session.busy.clone());
    if let Some(text) = &args.once {
        let out = std::io::stdout();
        let mut out = out.lock();
        session.turn(
            generator.as_mut(),
            memory.as_mut(),
            &args.user,
            text,
            &mut out,
        )?;
        return Ok(ExitCode::SUCCESS);
    }

    eprintln!(
        "idol chat with {} ({}). Type a message; `/as NAME` to speak as someone else, `/quit` to leave.",
        card.name,
        env.rel(&card_path)
    );
    if session.history.is_empty() && !card.greeting.trim().is_empty() {
        let greeting = expand_macros(&card.greeting, &card.name, &args.user);
        println!("{}: {greeting}", card.name);
        let turn = Turn::assistant(greeting);
        session.history.push(turn.to_message());
        if let Some(m) = memory.as_mut() {
            m.append(turn).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    let mut user = args.user.clone();
    let stdin = std::io::stdin();
    loop {
        eprint!("{user}> ");
        std::io::stderr().flush().ok();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).context("reading stdin")? == 0 {
            eprintln!();
            return Ok(ExitCode::SUCCESS);
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/quit" || line == "/exit" {
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(name) = line.strip_prefix("/as ") {
            user = name.trim().to_string();
            continue;
        }
        let out = std::io::stdout();
        let mut out = out.lock();
        write!(out, "{}: ", card.name)?;
        out.flush()?;
        if let Err(e) = session.turn(generator.as_mut(), memory.as_mut(), &user, line, &mut out) {
            drop(out);
            eprintln!("error: {e:#}");
        }
    }
}

/// Ctrl-C while a reply streams cancels the reply (it is stored as heard, marked interrupted);
/// Ctrl-C at the prompt quits.
fn install_ctrl_c(cancel: CancelToken, busy: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            while tokio::signal::ctrl_c().await.is_ok() {
                if busy.load(Ordering::SeqCst) {
                    cancel.cancel();
                } else {
                    eprintln!();
                    std::process::exit(130);
                }
            }
        });
    });
}

struct Session {
    cancel: CancelToken,
    busy: Arc<AtomicBool>,
    builder: PromptBuilder,
    blocked: BlockedWords,
    deflection: String,
    params: GenParams,
    history: Vec<ChatMessage>,
}

impl Session {
    /// One exchange: check and store the viewer's message, stream the reply through the blocked-word
    /// filter to `out`, store what was said.
    fn turn(
        &mut self,
        generator: &mut dyn TextGenerator,
        mut memory: Option<&mut Memory>,
        user: &str,
        text: &str,
        out: &mut dyn Write,
    ) -> Result<()> {
        if let Err(rejection) = self.blocked.check_viewer(user, text) {
            bail!("{rejection}");
        }
        let viewer_turn = Turn::viewer(user, text);
        let new = viewer_turn.to_message();
        let prompt = self
            .builder
            .build(&self.history, &new, &estimate_tokens)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(m) = memory.as_deref_mut() {
            m.append(viewer_turn).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        self.history.push(new);

        let cancel = self.cancel.clone();
        cancel.reset();
        self.busy.store(true, Ordering::SeqCst);
        let mut filter = ReplyFilter::new(&self.blocked);
        let mut said = String::new();
        let mut hit = None;
        let mut write_err = None;
        let result =
            generator.generate(
                &prompt.messages,
                &self.params,
                &cancel,
                &mut |piece| match filter.push(piece) {
                    FilterStep::Release(t) => {
                        said.push_str(&t);
                        if let Err(e) = write!(out, "{t}").and_then(|_| out.flush()) {
                            write_err = Some(e);
                            return false;
                        }
                        true
                    }
                    FilterStep::Blocked(h) => {
                        hit = Some(h);
                        false
                    }
                },
            );
        self.busy.store(false, Ordering::SeqCst);
        let cancelled =
            matches!(&result, Ok(o) if o.finish == FinishReason::Cancelled) && hit.is_none();
        if hit.is_none() && result.is_ok() && !cancelled {
            match filter.finish() {
                FilterStep::Blocked(h) => hit = Some(h),
                FilterStep::Release(t) => {
                    said.push_str(&t);
                    write!(out, "{t}")?;
                }
            }
        }
        if let Some(e) = write_err {
            return Err(e).context("writing the reply");
        }
        let (turn, error) = match (&result, &hit) {
            (_, Some(h)) => {
                eprintln!(
                    "\n(reply stopped: it contained the blocked entry {:?})",
                    h.entry
                );
                if !said.is_empty() && !said.ends_with(' ') {
                    said.push(' ');
                    write!(out, " ")?;
                }
                write!(out, "{}", self.deflection)?;
                said.push_str(&self.deflection);
                (Turn::assistant(said.trim()), None)
            }
            (Ok(_), None) if cancelled => {
                eprint!("\n(interrupted)");
                (Turn::interrupted(said.trim()), None)
            }
            (Ok(_), None) => (Turn::assistant(said.trim()), None),
            (Err(e), None) => (Turn::interrupted(said.trim()), Some(e.to_string())),
        };
        writeln!(out)?;
        out.flush()?;
        if !turn.text.is_empty() {
            self.history.push(turn.to_message());
            if let Some(m) = memory {
                m.append(turn).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        match error {
            Some(msg) => Err(anyhow::anyhow!(msg)),
            None => Ok(()),
        }
    }
}
