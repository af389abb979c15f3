//! `idol serve`: run the idol live and stream her over WebSocket (`docs/protocol.md`), with the
//! browser viewer at `/` (`docs/viewer.md`). Settings come from `[server]`, `[llm]`, `[voice]`,
//! `[face]`, `[viewer]` in idol.toml;
//! `--bind` and `--port` override the address. The outputs `[sinks]` enables (local audio device, VMC,
//! VTube Studio) get the same performance: the audio device's played-sample counter is then the
//! session clock and releases the frames to the face sinks (`docs/sinks.md`). The chat relays
//! `[relays]` enables (Twitch, Bilibili, `POST /v1/chat`, and stdin with `--chat-stdin`) feed the
//! chat policy, which hands the idol one chat at a time (`docs/relays.md`).

use super::Env;
use super::wiring::live::{build_stages, live_outputs, perform_config, viewer_options};
use idol::server::{Server, ServerOptions};
use idol::sink::live::PerformOutputs;
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
    /// Read chat messages as JSON lines on stdin (the generic relay, docs/relays.md), besides the
    /// relays [relays] in idol.toml enables.
    #[arg(long)]
    pub chat_stdin: bool,
    /// Also publish the stream to this NATS server and take control from it (default: [nats] url;
    /// subjects idol.<[nats] idol>.*, docs/scale.md).
    #[arg(long, value_name = "nats://HOST:PORT")]
    pub nats: Option<String>,
    /// The idol's name in the NATS subjects (default: [nats] idol, "idol").
    #[arg(long, value_name = "NAME")]
    pub idol: Option<String>,
}

pub fn run(env: &Env, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    // Warnings (no audio device, a sink that fails) go to stderr unless RUST_LOG says otherwise.
    super::init_logger();
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
    opts.policy.scripts = Some(super::wiring::script::server_renderer(env, &config));
    opts.policy.budget = config.limits;
    // Clients may subscribe to the built-in rigs and to the rig files in the home's rigs/ by name.
    opts.rigs_dir = Some(env.home.rigs_dir());
    opts.viewer = viewer_options(env, &config)?;
    let stages = build_stages(env, &config)?;
    let persona_name = vec![stages.persona.card().name.clone()];
    opts.chat_desk = idol::relay::desk::from_config(&config.relays, &persona_name, args.chat_stdin);
    let mut nats = config.nats.clone();
    if let Some(u) = &args.nats {
        idol::config::check_nats_url(u).map_err(|m| anyhow::anyhow!("--nats {m}"))?;
        nats.url = Some(u.clone());
    }
    if let Some(n) = &args.idol {
        idol::config::check_idol_name(n).map_err(|m| anyhow::anyhow!("--idol {m}"))?;
        nats.idol = n.clone();
    }
    opts.nats = idol::server::NatsOptions::from_config(&nats);
    let mut perform = perform_config(&config);
    let rate = stages.voice.sample_rate();
    let outputs = live_outputs(env, &config.sinks, rate, stages.face.rig())?;
    let mut sinks: Vec<Box<dyn idol::perform::Sink>> = vec![];
    if let Some(o) = &outputs {
        perform.clock = Some(o.clock());
        sinks.push(Box::new(PerformOutputs::new(
            o.clone(),
            stages.face.channels(),
        )));
    }
    // [mic]: the host's voice (models fetched on first use, before the server starts).
    let host_opts = match &config.mic {
        Some(mic) => {
            let o = idol::listen::host::HostOptions::from_config(&env.home, mic);
            super::wiring::ensure_assets(env, &o.files())?;
            Some((mic, o))
        }
        None => None,
    };
    let nats_line = opts
        .nats
        .as_ref()
        .map(|n| format!("  nats:    {} (subjects idol.{}.*)", n.url, n.idol));
    let server = Server::start_with_sinks(stages, perform, opts, sinks)?;
    let _host_voice = match host_opts {
        Some((mic, o)) => Some(super::wiring::live::start_host_voice(
            env,
            mic,
            &o,
            server.perform().clone(),
        )?),
        None => None,
    };
    let base = server.base_url();
    println!("idol is live");
    println!("  viewer:  {base}/");
    println!("  OBS:     {base}/?bg=transparent");
    println!(
        "  stream:  ws://{}/v1/stream   (protocol: docs/protocol.md)",
        base.trim_start_matches("http://")
    );
    println!("  metrics: {base}/metrics");
    if let Some(l) = nats_line {
        println!("{l}");
    }
    if server.addr().ip().is_unspecified() {
        println!(
            "  (listening on all interfaces, port {}: from other machines use this machine's address; \
             a name other than an IP address needs [server] allowed_hosts)",
            server.addr().port()
        );
    }
    for o in outputs.iter().flat_map(|o| o.describe()) {
        println!("  sink:    {o}");
    }
    for r in server.chat_desk().iter().flat_map(|d| d.statuses()) {
        println!("  relay:   {} ({})", r.name, r.platform.as_str());
    }
    if let Some(mic) = &config.mic {
        let from = match &mic.file {
            Some(f) => format!("recording {}", f.display()),
            None => mic.device.clone().unwrap_or_else(|| "default input".into()),
        };
        println!(
            "  mic:     {from}, Whisper {} (the host's words are chats from {:?}{})",
            mic.model,
            mic.user,
            if mic.barge_in {
                "; speech barges in"
            } else {
                ""
            }
        );
    }
    println!("Ctrl-C stops.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(tokio::signal::ctrl_c())?;
    drop(server);
    Ok(ExitCode::SUCCESS)
}
