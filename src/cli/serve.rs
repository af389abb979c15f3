//! `idol serve`: run the idol live and stream her over WebSocket (`docs/protocol.md`), with the
//! browser viewer at `/`. Settings come from `[server]`, `[llm]`, `[voice]`, `[face]` in idol.toml;
//! `--bind` and `--port` override the address.

use super::Env;
use idol::config::Config;
use idol::perform::{PerformConfig, Stages};
use idol::persona::GenParams;
use idol::server::{Server, ServerOptions};
use std::net::IpAddr;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The address to listen on (default: [server] bind, 127.0.0.1). Off loopback, control messages
    /// need the token from the environment variable named by [server] token_env (IDOL_TOKEN).
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// The port (default: [server] port, 8787; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
}

pub fn run(env: &Env, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = env.config()?;
    let mut opts = ServerOptions::from_config(&config.server);
    if let Some(b) = args.bind {
        opts.bind = b;
    }
    if let Some(p) = args.port {
        opts.port = p;
    }
    if !opts.bind.is_loopback() && opts.policy.token.is_none() {
        eprintln!(
            "warning: listening on {} without a token: clients on other machines can watch but not control; \
             set ${} to allow control with that token",
            opts.bind, config.server.token_env
        );
    }
    let stages = build_stages(env, &config)?;
    let perform = perform_config(&config);
    let server = Server::start(stages, perform, opts)?;
    let addr = server.addr();
    println!("idol is live");
    println!("  viewer:  {}", server.viewer_url());
    println!(
        "  OBS:     {}?bg=transparent",
        server.viewer_url().trim_end_matches('/')
    );
    println!(
        "  stream:  ws://{}/v1/stream   (protocol: docs/protocol.md)",
        server
            .viewer_url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
    );
    println!("  metrics: http://{addr}/metrics");
    println!("Ctrl-C stops.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(tokio::signal::ctrl_c())?;
    drop(server);
    Ok(ExitCode::SUCCESS)
}

/// Pacing and sampling from idol.toml.
pub fn perform_config(config: &Config) -> PerformConfig {
    PerformConfig {
        fps: config.face.fps,
        params: GenParams {
            temperature: config.llm.temperature,
            max_tokens: config.llm.max_tokens,
            seed: config.llm.seed,
            ..GenParams::default()
        },
        ..PerformConfig::default()
    }
}

/// The real stages from the config: the persona's text generator (with its card's system prompt),
/// the text stage's clause stream, the Piper voice and the face solver for the configured rig, each
/// behind the small traits of `idol::perform`.
///
/// Not wired yet: the stages live on other branches. Until they are merged this refuses to start
/// rather than serve fakes.
pub fn build_stages(env: &Env, config: &Config) -> anyhow::Result<Stages> {
    let _ = (env, config);
    anyhow::bail!(
        "`idol serve` needs the persona, voice and face stages, which are not built into this binary yet"
    )
}
