//! `idol serve`: run the idol live and stream her over WebSocket (`docs/protocol.md`), with the
//! browser viewer at `/`. Settings come from `[server]`, `[llm]`, `[voice]`, `[face]` in idol.toml;
//! `--bind` and `--port` override the address.

use super::Env;
use idol::config::{Config, LlmBackend};
use idol::face::{FaceConfig, Rig};
use idol::perform::adapters::{SynthVoice, TextSegmenter};
use idol::perform::rig_face::RigFace;
use idol::perform::{PerformConfig, Stages};
use idol::persona::import::load_card;
use idol::persona::llm::{LlmOptions, LlmWorker};
use idol::persona::openai::{OpenAiBackend, OpenAiConfig};
use idol::persona::{GenParams, TextGenerator};
use idol::phonemize::EnglishPhonemizer;
use idol::server::{Server, ServerOptions};
use idol::tts::{PiperVoice, Speaker, VoiceOptions};
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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
    opts.policy.scripts = Some(super::render::server_renderer(env, &config));
    let stages = build_stages(env, &config)?;
    let mut perform = perform_config(&config);
    perform.system_prompt = Some(system_prompt(env, &config)?);
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

/// The real stages from the config: the persona's text generator (the in-process GGUF engine or an
/// OpenAI-compatible server), the text stage's clause stream, the Piper voice with the pure-Rust
/// phonemizer, and the face solver for the configured rig. Missing default assets are fetched first.
pub fn build_stages(env: &Env, config: &Config) -> anyhow::Result<Stages> {
    let home = &env.home;
    let generator: Box<dyn TextGenerator> = match config.llm.backend {
        LlmBackend::Local => {
            let model = home.path(&config.llm.model);
            super::fetch::ensure_default(env, &model, false)?;
            Box::new(LlmWorker::spawn(
                &model,
                LlmOptions {
                    threads: config.llm.threads,
                    ctx: config.llm.context,
                    ..LlmOptions::default()
                },
            )?)
        }
        LlmBackend::Openai => Box::new(OpenAiBackend::new(OpenAiConfig {
            base_url: config.llm.base_url.clone(),
            model: config.llm.api_model.clone(),
            api_key_env: config.llm.api_key_env.clone(),
            read_timeout: Duration::from_secs_f64(config.llm.timeout_secs),
            ..OpenAiConfig::default()
        })?),
    };
    let voice_path = home.path(&config.voice.model);
    super::fetch::ensure_default(env, &voice_path, false)?;
    let ort = home.ort_library();
    super::fetch::ensure_default(env, &ort, false)?;
    for asset in [home.cmudict(), home.g2p_weights()] {
        super::fetch::ensure_default(env, &asset, false)?;
    }
    let phonemizer = Arc::new(EnglishPhonemizer::load(home)?);
    let vc = &config.voice;
    let voice = PiperVoice::load(
        &voice_path,
        &ort,
        phonemizer,
        &VoiceOptions {
            length_scale: vc.length_scale,
            noise_scale: vc.noise_scale,
            noise_w: vc.noise_w,
            speaker: vc
                .speaker
                .as_deref()
                .map(|s| s.parse::<Speaker>().expect("infallible")),
            seed: vc.seed,
            ..VoiceOptions::default()
        },
    )?;
    let rate = voice.config().audio.sample_rate;
    let rig = Rig::find(&config.face.rig, Some(home.rigs_dir().as_path()))?;
    let face = RigFace::new(
        rig,
        FaceConfig {
            fps: config.face.fps,
            seed: config.face.seed,
            ..FaceConfig::default()
        },
        rate,
    )?;
    Ok(Stages {
        generator,
        segmenter: Box::new(TextSegmenter::default()),
        voice: Box::new(SynthVoice(voice)),
        face: Box::new(face),
    })
}

/// The persona card's system prompt (it teaches the model the emotion and action tags).
pub fn system_prompt(env: &Env, config: &Config) -> anyhow::Result<String> {
    let path = env.home.path(&config.persona.card);
    let card = load_card(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(idol::persona::prompt::system_prompt(
        &card,
        idol::persona::prompt::DEFAULT_USER_NAME,
    ))
}
