//! `idol chat`: talk to the persona in a terminal. A REPL that streams each reply as it is generated,
//! or `--once "Hi!"` for scripts (the reply on stdout, diagnostics on stderr, non-zero exit on error).
//!
//! The text you type goes through the same path as viewer chat on stream (`persona::Conversation`):
//! neutralized (and labelled with your name when `--user` gives one), checked against the card's
//! blocked words; the reply is shaped for speech and streamed through the blocked-word filter, and
//! both are kept in the persona's memory file (unless `--no-memory`).
//! Replies are printed with their `[emotion]` and `<action>` tags.
//!
//! `--speak` also says each reply aloud as it streams: every finished sentence goes to the live
//! pipeline (the real voice and face, on the audio device's clock) as soon as it is printed, and the
//! frames go to the face sinks `[sinks]` enables (VMC, VTube Studio). The prompt comes back when the
//! reply has been heard; Ctrl-C while it speaks cuts it, and memory keeps the words that were heard.

use super::Env;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use idol::config::LlmBackend;
use idol::perform::{PerformConfig, Performer, Stages, UtteranceRecord};
use idol::persona::conversation::{Conversation, Speaker};
use idol::persona::import::load_card;
use idol::persona::llm::{LlmOptions, LlmWorker, TokenCounter};
use idol::persona::memory::Memory;
use idol::persona::openai::{OpenAiBackend, OpenAiConfig};
use idol::persona::prompt::estimate_tokens;
use idol::persona::{CancelToken, ChatMessage, GenParams, TextGenerator};
use idol::sink::live::{LiveOutputs, PerformOutputs};
use idol::text::TextSegmenter;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// Your name as a viewer (messages then reach the model as `NAME: text`; without it, as typed).
    #[arg(long, default_value = "")]
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
    /// Speak each reply with the voice on the audio device, and drive the face sinks [sinks] enables.
    #[arg(long)]
    pub speak: bool,
}

pub fn run(env: &Env, args: &ChatArgs) -> Result<ExitCode> {
    // Warnings (no audio device, a sink that fails) go to stderr unless RUST_LOG says otherwise.
    super::init_logger();
    let config = env.config()?;
    let llm = &config.llm;
    let card_path = env
        .home
        .path(args.persona.as_ref().unwrap_or(&config.persona.card));
    let card = load_card(&card_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in idol::perform::rig_face::card_tag_warnings(
        &card,
        &card_path,
        &config.face.rig,
        &env.home.rigs_dir(),
    ) {
        log::warn!("{w}");
    }
    let backend = args.backend.unwrap_or(match llm.backend {
        LlmBackend::Local => BackendKind::Local,
        LlmBackend::Openai => BackendKind::Openai,
    });
    // An OpenAI-compatible server does not expose its tokenizer: estimate. (The local engine will
    // pass its own count here: chat template rendered and tokenized.)
    let (mut generator, count): (Box<dyn TextGenerator>, Counter) = match backend {
        BackendKind::Openai => (
            Box::new(
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
            Box::new(estimate_tokens),
        ),
        BackendKind::Local => {
            let model = env.home.path(
                args.model
                    .as_deref()
                    .map(std::path::Path::new)
                    .unwrap_or(&llm.model),
            );
            super::wiring::ensure_assets(env, std::slice::from_ref(&model))?;
            // Without a voice nothing else needs the cores: the idle level throughout.
            let threads = if args.speak {
                llm.threads
            } else {
                llm.idle_threads.max(llm.threads)
            };
            let worker = LlmWorker::spawn(
                &model,
                LlmOptions {
                    threads,
                    ctx: llm.context,
                    ..LlmOptions::default()
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            // the model's own tokenizer for the prompt budget, not the estimate
            let counter = TokenCounter::load(&model).map_err(|e| anyhow::anyhow!("{e}"))?;
            (
                Box::new(worker),
                Box::new(move |m: &[ChatMessage]| counter.count(m)),
            )
        }
    };
    // The card's generation settings, then idol.toml's where they differ from the built-in defaults,
    // then the flags.
    let mut params = idol::perform::adapters::generation_params(&card, &config);
    if let Some(n) = args.max_tokens {
        params.max_tokens = n;
    }
    if let Some(t) = args.temperature {
        params.temperature = t;
    }
    if let Some(s) = args.seed {
        params.seed = s;
    }
    let memory = if args.no_memory {
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
    let name = card.name.clone();
    let shown_path = env.rel(&card_path);
    let mut conv = Conversation::new(card, memory, context, None);
    conv.set_max_tokens(params.max_tokens);
    conv.params = params;
    let mut languages_config = config.clone();
    if backend == BackendKind::Openai {
        languages_config.llm.backend = LlmBackend::Openai;
    } else if let Some(m) = &args.model {
        languages_config.llm.model = PathBuf::from(m);
    }
    conv.set_languages(idol::perform::adapters::language_policy(
        &env.home,
        &languages_config,
    ));
    let voice = if args.speak {
        Some(Voice::start(env, &config)?)
    } else {
        None
    };
    let mut session = Session {
        conv,
        count,
        cancel: CancelToken::new(),
        busy: Arc::new(AtomicBool::new(false)),
        voice,
    };
    install_ctrl_c(session.cancel.clone(), session.busy.clone());

    if let Some(text) = &args.once {
        let out = std::io::stdout();
        let mut out = out.lock();
        session.turn(generator.as_mut(), &args.user, text, "", &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }

    eprintln!(
        "idol chat with {name} ({shown_path}). Type a message; `/as NAME` to speak as someone else, `/quit` to leave."
    );
    if let Some(greeting) = session
        .conv
        .greet(if args.user.is_empty() {
            "you"
        } else {
            &args.user
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        println!("{name}: {greeting}");
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
        if let Some(n) = line.strip_prefix("/as ") {
            user = n.trim().to_string();
            continue;
        }
        let out = std::io::stdout();
        let mut out = out.lock();
        let lead = format!("{name}: ");
        if let Err(e) = session.turn(generator.as_mut(), &user, line, &lead, &mut out) {
            drop(out);
            eprintln!("error: {}", super::report(&e));
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

/// The token counter for the prompt budget.
type Counter = Box<dyn Fn(&[ChatMessage]) -> usize>;

struct Session {
    conv: Conversation,
    count: Counter,
    cancel: CancelToken,
    busy: Arc<AtomicBool>,
    voice: Option<Voice>,
}

/// `--speak`: the live pipeline with the real voice and face on the audio device's clock. Its own
/// persona thread is not used (this REPL's conversation generates); sentences go in as `say` lines.
struct Voice {
    performer: Performer,
    records: crossbeam_channel::Receiver<UtteranceRecord>,
    _outputs: Arc<LiveOutputs>,
}

/// The generator of `--speak`'s pipeline: never asked (replies come from the REPL's conversation).
struct NoGenerator;

impl TextGenerator for NoGenerator {
    fn generate(
        &mut self,
        _messages: &[ChatMessage],
        _params: &GenParams,
        _cancel: &CancelToken,
        _on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<idol::persona::GenOutcome, idol::persona::PersonaError> {
        Err(idol::persona::PersonaError::Other(
            "chat --speak generates in the REPL".into(),
        ))
    }
}

impl Voice {
    fn start(env: &Env, config: &idol::config::Config) -> Result<Voice> {
        let (voice, face) = super::wiring::live::build_voice_face(env, config)?;
        let rate = voice.sample_rate();
        let mut sinks = config.sinks.clone();
        if sinks.audio.is_none() {
            sinks.audio = Some(idol::config::AudioConfig { device: None });
        }
        let outputs = super::wiring::live::live_outputs(env, &sinks, rate, face.rig())?
            .context("internal error: no audio output")?;
        let sink = PerformOutputs::new(outputs.clone(), face.channels());
        let (tx, records) = crossbeam_channel::unbounded();
        let performer = Performer::start(
            Stages {
                persona: idol::persona::conversation::Conversation::new(
                    idol::persona::card::PersonaCard::named("idol"),
                    None,
                    4096,
                    None,
                ),
                generator: Box::new(NoGenerator),
                segmenter: Box::new(TextSegmenter::default()),
                voice,
                face,
            },
            PerformConfig {
                fps: config.face.fps,
                clock: Some(outputs.clock()),
                budget: config.limits,
                ..PerformConfig::default()
            },
            vec![Box::new(sink)],
            Some(Box::new(move |r: &UtteranceRecord| {
                let _ = tx.send(r.clone());
            })),
            Arc::default(),
        )?;
        Ok(Voice {
            performer,
            records,
            _outputs: outputs,
        })
    }
}

impl Voice {
    /// Wait until the utterances `said` have been heard. Ctrl-C (`cancel`) cuts them; then the words
    /// heard (all utterances' heard text joined) are returned.
    fn wait_heard(
        &self,
        h: &idol::perform::PerformHandle,
        said: &[u32],
        cancel: &CancelToken,
    ) -> Option<String> {
        let mut left: std::collections::HashSet<u32> = said.iter().copied().collect();
        let mut heard: Vec<(u32, String)> = vec![];
        let mut cut = false;
        let mut interrupted = false;
        while !left.is_empty() {
            if cancel.is_cancelled() && !interrupted {
                interrupted = true;
                h.interrupt();
            }
            match self.records.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => {
                    if left.remove(&r.utterance) {
                        cut |= r.interrupted;
                        heard.push((r.utterance, r.text));
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        if !(cut || interrupted) {
            return None;
        }
        heard.sort_by_key(|(u, _)| *u);
        let words: Vec<String> = heard
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| !t.is_empty())
            .collect();
        Some(words.join(" "))
    }
}

/// Where the text in `buf` can be cut after a whole sentence: just past the last `.`, `!`, `?` or
/// newline that is followed by whitespace, or the last `。` `！` `？`, not inside a `[...]` or `<...>`
/// tag.
fn sentence_end(buf: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut end = None;
    let mut chars = buf.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '[' | '<' => depth += 1,
            ']' | '>' => depth = (depth - 1).max(0),
            '.' | '!' | '?' | '\n'
                if depth == 0
                    && (c == '\n' || chars.peek().is_some_and(|(_, n)| n.is_whitespace())) =>
            {
                end = Some(i + c.len_utf8());
            }
            // full-width marks end a sentence without a space after them
            '。' | '！' | '？' if depth == 0 => end = Some(i + c.len_utf8()),
            _ => {}
        }
    }
    end
}

impl Session {
    /// One exchange. In a terminal what is printed is what is heard, so the reply is stored as
    /// printed, marked interrupted when it was cut (Ctrl-C, a broken stream).
    fn turn(
        &mut self,
        generator: &mut dyn TextGenerator,
        user: &str,
        text: &str,
        lead: &str,
        out: &mut dyn Write,
    ) -> Result<()> {
        let speaker = Speaker::Viewer(user);
        self.conv.accept(speaker, text, Instant::now())?;
        write!(out, "{lead}")?;
        out.flush()?;
        self.cancel.reset();
        self.busy.store(true, Ordering::SeqCst);
        let mut write_err = None;
        let handle = self.voice.as_ref().map(|v| v.performer.handle());
        let mut pending = String::new();
        let mut said: Vec<u32> = vec![];
        let reply = self.conv.respond(
            generator,
            speaker,
            text,
            &self.cancel,
            &*self.count,
            &mut |t| {
                if let Some(h) = &handle {
                    pending.push_str(t);
                    if let Some(end) = sentence_end(&pending) {
                        said.push(h.say(&pending[..end], None));
                        pending.drain(..end);
                    }
                }
                match write!(out, "{t}").and_then(|_| out.flush()) {
                    Ok(()) => true,
                    Err(e) => {
                        write_err = Some(e);
                        false
                    }
                }
            },
        );
        let reply = reply.map_err(|e| anyhow::anyhow!("{e}"));
        writeln!(out)?;
        out.flush()?;
        let mut heard = None;
        if let (Some(v), Some(h), Ok(r)) = (&self.voice, &handle, &reply) {
            if !pending.trim().is_empty() && !self.cancel.is_cancelled() && r.blocked.is_none() {
                said.push(h.say(&pending, None));
            }
            heard = v.wait_heard(h, &said, &self.cancel);
        }
        self.busy.store(false, Ordering::SeqCst);
        let mut reply = reply?;
        if let Some(h) = heard {
            // Cut while speaking: what was heard is what the persona remembers.
            reply.text = h;
            self.conv
                .commit(&reply.text, true)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!("(interrupted)");
            return Ok(());
        }
        if let Some(h) = &reply.blocked {
            eprintln!(
                "(reply stopped: it contained the blocked entry {:?})",
                h.entry
            );
        } else if reply.is_cut() && reply.error.is_none() {
            eprintln!("(interrupted)");
        }
        self.conv
            .commit(&reply.text, reply.is_cut())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(e) = write_err {
            return Err(e).context("writing the reply");
        }
        match reply.error {
            Some(e) => Err(anyhow::anyhow!("{e}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sentence_end;

    #[test]
    fn sentences_end_outside_tags() {
        assert_eq!(sentence_end("Hi there"), None);
        assert_eq!(sentence_end("Hi there. How"), Some(9));
        assert_eq!(sentence_end("[sad:0.5] Oh no! Wait. "), Some(22));
        assert_eq!(sentence_end("<break time=\"0.5s\"/> Hm"), None);
        assert_eq!(sentence_end("Line one\nline"), Some(9));
        assert_eq!(sentence_end("你好！我"), Some(9)); // after the full-width mark (3 bytes each)
    }
}
