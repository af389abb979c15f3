//! `idol relay`: serve an idol's stream (the WebSocket protocol, `docs/protocol.md`, and the viewer)
//! from NATS to this process's own clients, with no models loaded (`docs/scale.md`). Settings come
//! from `[server]` (address, client limits, token, hosts and origins), `[viewer]` and `[nats]` in
//! idol.toml; `--nats`, `--idol`, `--bind` and `--port` override them. Relays of one idol find each
//! other on NATS (`--advertise`) and list each other in their clients' `hello` (`alternates`).

use super::Env;
use idol::server::{NatsOptions, NatsRelay, ServerOptions};
use std::net::IpAddr;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// The NATS server the idol publishes to (default: [nats] url).
    #[arg(long, value_name = "nats://HOST:PORT")]
    pub nats: Option<String>,
    /// Which idol to relay: the name in its subjects (default: [nats] idol, "idol").
    #[arg(long, value_name = "NAME")]
    pub idol: Option<String>,
    /// The address to listen on (default: [server] bind, 127.0.0.1).
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// The port (default: [server] port, 8787; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// The WebSocket URL clients reach this relay at, announced to the idol's other relays so
    /// their clients can come here when theirs dies (default: [nats] advertise, else
    /// ws://BIND:PORT/v1/stream; bound to all addresses, none).
    #[arg(long, value_name = "ws://HOST:PORT/v1/stream")]
    pub advertise: Option<String>,
}

pub fn run(env: &Env, args: &RelayArgs) -> anyhow::Result<ExitCode> {
    super::init_logger();
    let config = env.config()?;
    let mut nats = config.nats.clone();
    if let Some(u) = &args.nats {
        idol::config::check_nats_url(u).map_err(|m| anyhow::anyhow!("--nats {m}"))?;
        nats.url = Some(u.clone());
    }
    if let Some(n) = &args.idol {
        idol::config::check_idol_name(n).map_err(|m| anyhow::anyhow!("--idol {m}"))?;
        nats.idol = n.clone();
    }
    let mut opts = ServerOptions::from_config(&config.server);
    opts.nats = NatsOptions::from_config(&nats);
    if let Some(b) = args.bind {
        opts.bind = b;
    }
    if let Some(p) = args.port {
        opts.port = p;
    }
    // A bad --advertise is refused by the relay itself (RelayError::BadAdvertise names the flag).
    opts.advertise = args.advertise.clone().or(nats.advertise.clone());
    opts.rigs_dir = Some(env.home.rigs_dir());
    opts.viewer = super::wiring::live::viewer_options(env, &config)?;
    println!(
        "waiting for idol {:?} on {} ...",
        nats.idol,
        nats.url.as_deref().unwrap_or("?")
    );
    let relay = NatsRelay::start(opts)?;
    let addr = relay.addr();
    println!("relaying idol {:?}", nats.idol);
    println!("  viewer:  http://{addr}/");
    println!("  stream:  ws://{addr}/v1/stream   (protocol: docs/protocol.md)");
    println!("  metrics: http://{addr}/metrics");
    println!("Ctrl-C stops.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(tokio::signal::ctrl_c())?;
    drop(relay);
    Ok(ExitCode::SUCCESS)
}
