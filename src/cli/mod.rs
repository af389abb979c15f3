//! The command line: raw arguments (clap) are parsed here and validated into the library's typed
//! configuration; each command lives in its own file with a `run` function. `anyhow` is used only here.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

pub mod chat;
pub mod check;
pub mod devices;
pub mod fetch;
pub mod lipsync;
pub mod listen;
pub mod perform;
pub mod relay;
pub mod render;
pub mod rigs;
pub mod say;
pub mod serve;
pub mod wiring;
pub mod worker;

#[derive(Debug, Parser)]
#[command(
    name = "idol",
    version,
    about = "A virtual idol on one machine: LLM persona, neural voice, facial rig, one sample clock"
)]
pub struct Cli {
    /// The idol home holding models/, voices/, rigs/ (default: $IDOL_HOME, else the current directory).
    #[arg(long, global = true, env = "IDOL_HOME")]
    pub home: Option<PathBuf>,
    /// The ONNX Runtime library to load (onnxruntime.dll, libonnxruntime.*.dylib, libonnxruntime.so.*)
    /// instead of the one `idol fetch` installs: for a platform idol pins none for.
    #[arg(long, global = true, env = "IDOL_ONNXRUNTIME", value_name = "PATH")]
    pub onnxruntime: Option<PathBuf>,
    /// The config file (default: idol.toml in the idol home, where absent means all defaults; a file
    /// named here must exist).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download and verify the pinned models and voice, or register your own.
    Fetch(fetch::FetchArgs),
    /// Show what is configured and found, with sizes, licences and what to do about anything missing.
    Check(check::CheckArgs),
    /// Turn a recording (WAV, MP3, FLAC, Ogg) or a phoneme timeline (TextGrid, HTK/HTS .lab, JSON)
    /// into face frames for a rig.
    Lipsync(lipsync::LipsyncArgs),
    /// Transcribe a recording or the microphone as the idol hears the host (Silero VAD + Whisper).
    Listen(listen::ListenArgs),
    /// List the rigs and their channels.
    Rigs(rigs::RigsArgs),
    /// Speak text: DIR/speech.wav, DIR/phonemes.json (phoneme and word timings) and DIR/frames.jsonl.
    Say(say::SayArgs),
    /// Talk to the persona: a REPL that streams each reply, or `--once "Hi!"` for scripts.
    Chat(chat::ChatArgs),
    /// List the audio output devices.
    Devices(devices::DevicesArgs),
    /// Run the idol live: chat in, voice and face out over WebSocket, with a browser viewer.
    Serve(serve::ServeArgs),
    /// Render a scripted performance offline: WAV, frames (JSONL, Live Link CSV), captions, events.
    Render(wiring::script::RenderArgs),
    /// Perform a script live, paced by the clock: events to stdout, audio with --play.
    Perform(perform::PerformArgs),
    /// Serve an idol's stream and viewer from NATS to more viewers, with no models (docs/scale.md).
    Relay(relay::RelayArgs),
    /// Render the scripts queued with `idol render --queue` (docs/scale.md).
    Worker(worker::WorkerArgs),
    /// The render queue's jobs and their states.
    Jobs(worker::JobsArgs),
}

/// Paths and settings every command shares.
pub struct Env {
    pub home: idol::assets::Home,
    pub config_path: PathBuf,
}

impl Env {
    /// A path shown relative to the idol home when it lies under it.
    pub fn rel(&self, p: &std::path::Path) -> String {
        p.strip_prefix(self.home.root())
            .unwrap_or(p)
            .display()
            .to_string()
    }

    pub fn config(&self) -> anyhow::Result<idol::config::Config> {
        Ok(idol::config::Config::load_or_default(&self.config_path)?)
    }
}

/// An error as one message: each cause in the chain once. A cause whose text the message already
/// holds is skipped, so an error that both quotes its source and exposes it via `source()` (the
/// library's convention is one or the other) is still printed once.
pub fn report(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let home = match &cli.home {
        Some(h) => idol::assets::Home::new(h),
        None => idol::assets::Home::discover(),
    }
    .with_onnxruntime(cli.onnxruntime.clone());
    // Only the default idol.toml may be absent: a config named on the command line that is not
    // there (a typo) once ran silently on the defaults.
    if let Some(c) = &cli.config
        && !c.exists()
    {
        anyhow::bail!(
            "--config {}: no such file (leave --config out to use idol.toml in the idol home {}, \
             or all defaults when there is none)",
            c.display(),
            home.root().display()
        );
    }
    let config_path = cli.config.clone().unwrap_or_else(|| home.path("idol.toml"));
    let env = Env { home, config_path };
    match &cli.command {
        Command::Fetch(a) => fetch::run(&env, a),
        Command::Check(a) => check::run(&env, a),
        Command::Lipsync(a) => lipsync::run(&env, a),
        Command::Listen(a) => listen::run(&env, a),
        Command::Rigs(a) => rigs::run(&env, a),
        Command::Say(a) => say::run(&env, a),
        Command::Chat(a) => chat::run(&env, a),
        Command::Devices(a) => devices::run(a).map(|()| ExitCode::SUCCESS),
        Command::Serve(a) => serve::run(&env, a),
        Command::Render(a) => render::run(&env, a),
        Command::Perform(a) => perform::run(&env, a),
        Command::Relay(a) => relay::run(&env, a),
        Command::Worker(a) => worker::worker(&env, a),
        Command::Jobs(a) => worker::jobs(&env, a),
    }
}

/// Log targets whose debug and trace records carry message contents verbatim (tungstenite logs
/// every frame it reads and writes: chat text, control tokens, the VTube Studio token): they are
/// capped at `info` whatever `RUST_LOG` says.
const VERBATIM_TARGETS: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

/// Whether a record of `level` from `target` is held back ([`VERBATIM_TARGETS`]).
fn capped(target: &str, level: log::Level) -> bool {
    level > log::Level::Info
        && VERBATIM_TARGETS.iter().any(|m| {
            target
                .strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// env_logger, less the records [`capped`] holds back.
struct CappedLogger(env_logger::Logger);

impl log::Log for CappedLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        !capped(m.target(), m.level()) && self.0.enabled(m)
    }

    fn log(&self, r: &log::Record) {
        if !capped(r.target(), r.level()) {
            self.0.log(r);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Log to stderr as `RUST_LOG` says (default: warnings), never message contents (see
/// [`VERBATIM_TARGETS`]). Every command that logs calls this first.
pub fn init_logger() {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(CappedLogger(logger))).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;

    #[test]
    fn websocket_frames_are_never_logged_even_at_trace() {
        for target in [
            "tungstenite",
            "tungstenite::protocol",
            "tungstenite::protocol::frame",
            "tokio_tungstenite",
            "tokio_tungstenite::compat",
        ] {
            assert!(capped(target, log::Level::Trace), "{target}");
            assert!(capped(target, log::Level::Debug), "{target}");
            assert!(!capped(target, log::Level::Warn), "{target}");
        }
        for target in ["idol::server::conn", "tungstenite_like", "hyper", "axum"] {
            assert!(!capped(target, log::Level::Trace), "{target}");
        }
        // The installed logger at RUST_LOG=trace: tungstenite's "Received message" record is not
        // let through, the server's own trace records are.
        let inner = env_logger::Builder::new()
            .filter_level(log::LevelFilter::Trace)
            .build();
        let l = CappedLogger(inner);
        let meta = |target: &'static str| {
            log::Metadata::builder()
                .level(log::Level::Trace)
                .target(target)
                .build()
        };
        assert!(!l.enabled(&meta("tungstenite::protocol")));
        assert!(l.enabled(&meta("idol::server::conn")));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read x.toml: {0}")]
    struct Quotes(std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read x.toml")]
    struct Exposes(#[source] std::io::Error);

    fn gone() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn each_cause_is_printed_once() {
        // Quoting the cause, or exposing it, reads the same; context on top is kept.
        let want = "loading the config: cannot read x.toml: no such file";
        let a = anyhow::Error::new(Quotes(gone())).context("loading the config");
        let b = anyhow::Error::new(Exposes(gone())).context("loading the config");
        assert_eq!(report(&a), want);
        assert_eq!(report(&b), want);
    }
}
