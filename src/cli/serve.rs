//! `idol serve`: run the idol live and stream her over WebSocket (`docs/protocol.md`), with the
//! browser viewer at `/` (`docs/viewer.md`). Settings come from `[server]`, `[llm]`, `[voice]`,
//! `[face]`, `[viewer]` in idol.toml;
//! `--bind` and `--port` override the address. The outputs `[sinks]` enables (local audio device, VMC,
//! VTube Studio) get the same performance: the audio device's played-sample counter is then the
//! session clock and releases the frames to the face sinks (`docs/sinks.md`). The chat relays
//! `[relays]` enables (Twitch, Bilibili, `POST /v1/chat`, and stdin with `--chat-stdin`) feed the
//! chat policy, which hands the idol one chat at a time (`docs/relays.md`).

use super::Env;
use idol::config::{Config, SinksConfig};
use idol::fetch::{MANIFESTS, Manifest, VIEWER_MANIFEST};
use idol::perform::adapters;
use idol::perform::{PerformConfig, Stages};
use idol::server::{Server, ServerOptions, ViewerOptions};
use idol::sink::live::{LiveOutputs, PerformOutputs};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    opts.policy.scripts = Some(super::render::server_renderer(env, &config));
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
            super::fetch::ensure_assets(env, &o.files())?;
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
        Some((mic, o)) => Some(super::listen::start_host_voice(
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

/// What the viewer page serves: the pinned modules of `viewer/manifest.toml` (the missing ones are
/// fetched first, like the stages' assets) and the `[viewer] avatar`, which must be a binary glTF
/// (a `.vrm` is one).
pub fn viewer_options(env: &Env, config: &Config) -> anyhow::Result<ViewerOptions> {
    let manifest = Manifest::in_effect(&env.home, VIEWER_MANIFEST)?;
    let root = env.home.path(MANIFESTS[VIEWER_MANIFEST].1);
    let vendor: Vec<(String, PathBuf)> = manifest
        .assets
        .into_iter()
        .map(|a| {
            let dest = root.join(&a.file);
            (a.file, dest)
        })
        .collect();
    let files: Vec<PathBuf> = vendor.iter().map(|(_, f)| f.clone()).collect();
    super::fetch::ensure_assets(env, &files)?;
    let avatar = match &config.viewer.avatar {
        None => None,
        Some(rel) => {
            let path = env.home.path(rel);
            let mut magic = [0u8; 4];
            std::fs::File::open(&path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "[viewer] avatar = {:?}: cannot read {} ({e}); paths are relative to the idol home",
                        rel.display(),
                        path.display()
                    )
                })?;
            if &magic != b"glTF" {
                anyhow::bail!(
                    "[viewer] avatar = {:?}: {} is not a binary glTF (a .vrm or .glb starts with `glTF`); export the avatar as GLB or VRM",
                    rel.display(),
                    path.display()
                );
            }
            Some(path)
        }
    };
    Ok(ViewerOptions { vendor, avatar })
}

/// Pacing from idol.toml (the persona's settings travel with its conversation in the stages).
pub fn perform_config(config: &Config) -> PerformConfig {
    PerformConfig {
        fps: config.face.fps,
        warm_up: true,
        budget: config.limits,
        ..PerformConfig::default()
    }
}

/// The outputs `sinks` enables, for a timeline at `rate` Hz and the live face's `rig`; `None` when it
/// enables nothing. With an audio device that does not exist (servers, CI) the paced null output
/// stands in with one warning.
pub fn live_outputs(
    env: &Env,
    sinks: &SinksConfig,
    rate: u32,
    rig: &str,
) -> anyhow::Result<Option<Arc<LiveOutputs>>> {
    if sinks.audio.is_none()
        && sinks.vmc.is_none()
        && sinks.vtube_studio.is_none()
        && sinks.livelink.is_none()
    {
        return Ok(None);
    }
    let o = LiveOutputs::from_config(sinks, env.home.root(), rate, rig)?;
    Ok(Some(Arc::new(o)))
}

/// The real stages from the config (see [`idol::perform::adapters::build_stages`]); the pinned
/// assets they load that are missing are fetched first ([`adapters::stage_files`]).
pub fn build_stages(env: &Env, config: &Config) -> anyhow::Result<Stages> {
    super::fetch::ensure_assets(env, &adapters::stage_files(&env.home, config))?;
    Ok(adapters::build_stages(&env.home, config)?)
}

/// The live voice and face from the config (see [`idol::perform::adapters::build_voice_face`]); the
/// pinned assets they load that are missing are fetched first ([`adapters::voice_face_files`]).
pub fn build_voice_face(env: &Env, config: &Config) -> anyhow::Result<adapters::VoiceAndFace> {
    super::fetch::ensure_assets(env, &adapters::voice_face_files(&env.home, config))?;
    Ok(adapters::build_voice_face(&env.home, config)?)
}
