//! `idol.toml`: raw TOML validated into a typed [`Config`].
//!
//! Parsing happens in two steps, as in ripgrep: serde reads the raw document into structs that reject
//! unknown keys and wrong types, then [`Config::validate`] checks what types cannot (ranges, addresses,
//! names). Every error is a [`ConfigError`] that names the file, line, column and field, and says what is
//! allowed. Every section is optional; an empty file is the default configuration.

use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A configuration problem, positioned in its file (see [`crate::tomlpos`]).
pub type ConfigError = crate::tomlpos::TomlError;
pub use crate::tomlpos::line_col;

/// Which text generator speaks for the persona.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LlmBackend {
    /// The in-process candle GGUF engine.
    #[default]
    Local,
    /// An OpenAI-compatible server (llama.cpp server, Ollama, vLLM).
    Openai,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    persona: RawPersona,
    llm: RawLlm,
    voice: RawVoice,
    face: RawFace,
    server: RawServer,
    sinks: RawSinks,
    limits: RawLimits,
    relays: RawRelays,
    viewer: RawViewer,
    mic: RawMic,
    nats: RawNats,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawViewer {
    avatar: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    performance_secs: Option<Spanned<f64>>,
    utterance_secs: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawPersona {
    card: Option<Spanned<String>>,
    memory_dir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLlm {
    backend: LlmBackend,
    model: Option<String>,
    threads: Option<Spanned<i64>>,
    idle_threads: Option<Spanned<i64>>,
    context: Option<Spanned<i64>>,
    base_url: Option<Spanned<String>>,
    api_model: Option<String>,
    api_key_env: Option<String>,
    timeout_secs: Option<Spanned<f64>>,
    temperature: Option<Spanned<f64>>,
    max_tokens: Option<Spanned<i64>>,
    seed: Option<u64>,
    languages: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawVoice {
    model: Option<String>,
    speaker: Option<String>,
    length_scale: Option<Spanned<f64>>,
    noise_scale: Option<Spanned<f64>>,
    noise_w: Option<Spanned<f64>>,
    seed: Option<u64>,
    languages: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    han: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFace {
    rig: Option<Spanned<String>>,
    fps: Option<Spanned<i64>>,
    seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    bind: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    token_env: Option<String>,
    max_clients: Option<Spanned<i64>>,
    max_client_lag_ms: Option<Spanned<i64>>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
    allowed_origins: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSinks {
    vmc: Option<RawVmc>,
    vtube_studio: Option<RawVts>,
    audio: Option<RawAudio>,
    livelink: Option<RawLiveLink>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawVmc {
    enabled: bool,
    target: Option<Spanned<String>>,
    rate: Option<Spanned<i64>>,
    rig: Option<Spanned<String>>,
    names: Option<VmcNames>,
}

/// Which blend shape names the VMC sink sends (`[sinks.vmc] names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VmcNames {
    /// VRM 0.x BlendShapeProxy presets (`A I U E O`, `Blink`, `Joy`, ...) from the `vrm` rig:
    /// what VSeeFace, VNyan and other VRM 0.x receivers apply.
    #[default]
    Vrm0,
    /// VRM 1.0 expression names (`aa ih ou ee oh`, `blink`, `happy`, ...) from the `vrm` rig.
    Vrm1,
    /// The 52 ARKit names (`jawOpen`, ...) from the `arkit52` rig ("perfect sync" models).
    Arkit,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawVts {
    enabled: bool,
    url: Option<Spanned<String>>,
    rate: Option<Spanned<i64>>,
    token_file: Option<String>,
    rig: Option<Spanned<String>>,
    hotkeys: BTreeMap<String, Spanned<String>>,
    expressions: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLiveLink {
    enabled: bool,
    addr: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    rate: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawAudio {
    enabled: bool,
    device: Option<String>,
}

/// The validated configuration. Paths are as written (relative to the idol home).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub persona: PersonaConfig,
    pub llm: LlmConfig,
    pub voice: VoiceConfig,
    pub face: FaceConfig,
    pub server: ServerConfig,
    pub sinks: SinksConfig,
    /// How long a performance and an utterance may run (`[limits]`).
    pub limits: crate::budget::Budget,
    /// Live chat relays and the chat policy (`[relays]`, docs/relays.md).
    pub relays: RelaysConfig,
    /// The browser viewer (`[viewer]`).
    pub viewer: ViewerConfig,
    /// The host's voice (`[mic]`, docs/relays.md): `None` when off.
    pub mic: Option<MicConfig>,
    /// Publishing the stream to NATS (`[nats]`, docs/scale.md).
    pub nats: NatsConfig,
}

/// `[viewer]`: what the page `idol serve` serves shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ViewerConfig {
    /// The host's avatar, a `.vrm` (VRM 0.x/1.0) or `.glb`/`.gltf`-binary file with ARKit-named
    /// morph targets, relative to the idol home; `None`: the viewer's own generated face.
    pub avatar: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PersonaConfig {
    pub card: PathBuf,
    pub memory_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub backend: LlmBackend,
    pub model: PathBuf,
    /// Compute threads of the local model while the voice (or anything else) needs the cores.
    pub threads: usize,
    /// Compute threads of the local model while nothing else needs the cores: the live runtime uses
    /// them while the voice is idle (from a chat until its first clause is out, and whenever the
    /// voice has caught up); `idol chat` without `--speak` throughout. Default: two on a machine
    /// with two or more cores; never below `threads`.
    pub idle_threads: usize,
    pub context: usize,
    pub base_url: String,
    pub api_model: String,
    pub api_key_env: Option<String>,
    pub timeout_secs: f64,
    pub temperature: f32,
    pub max_tokens: usize,
    pub seed: u64,
    /// The languages the model writes (ISO 639-1); empty: as models/manifest.toml says for the
    /// model file, else English only.
    pub languages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VoiceConfig {
    /// The default voice: a Piper voice (a path to NAME.onnx or a name under voices/) or a Kokoro
    /// voice (`jf_alpha`).
    pub model: PathBuf,
    /// Whether idol.toml names `model` (else it is the default, and a persona card's voice goes
    /// first).
    pub model_set: bool,
    pub speaker: Option<String>,
    pub length_scale: Option<f32>,
    pub noise_scale: Option<f32>,
    pub noise_w: Option<f32>,
    pub seed: u64,
    /// `[voice.languages]`: language (`ja`, `zh`, `en`) → the voice that speaks it.
    pub languages: std::collections::BTreeMap<String, String>,
    /// `han`: how Han text with no kana is read, `"ja"` or `"zh"` (`None`: Japanese when only `ja`
    /// is routed, else Mandarin).
    pub han: Option<String>,
}

/// The languages `[voice.languages]` routes.
pub use crate::speech::VOICE_LANGUAGES;

#[derive(Debug, Clone, PartialEq)]
pub struct FaceConfig {
    pub rig: String,
    pub fps: u32,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub bind: IpAddr,
    pub port: u16,
    /// Environment variable holding the control token required off loopback.
    pub token_env: String,
    pub max_clients: usize,
    pub max_client_lag_ms: u64,
    /// Host names (as in a browser's address bar) the server answers besides IP addresses and
    /// `localhost`; `*` turns the check off (behind a proxy that does it).
    pub allowed_hosts: Vec<String>,
    /// Web origins (`https://overlay.example`) whose pages may open the stream besides the
    /// server's own; `*` allows every page.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SinksConfig {
    pub vmc: Option<VmcConfig>,
    pub vtube_studio: Option<VtsConfig>,
    pub audio: Option<AudioConfig>,
    pub livelink: Option<LiveLinkConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VmcConfig {
    pub target: std::net::SocketAddr,
    pub rate: u32,
    pub rig: String,
    pub names: VmcNames,
}

/// `[sinks.livelink]`: Live Link Face packets for Unreal's Live Link.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveLinkConfig {
    pub addr: std::net::SocketAddr,
    /// The Live Link subject name Unreal lists (default `idol`).
    pub subject: String,
    pub rate: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VtsConfig {
    pub url: String,
    pub rate: u32,
    pub token_file: PathBuf,
    /// The rig VTube Studio's parameters are mapped from (`arkit52`, `live2d`, `vrm`); `None`: the
    /// live face's rig.
    pub rig: Option<String>,
    /// Emotion or action name (lowercase) → VTube Studio hotkey name or id, triggered at the cue.
    pub hotkeys: BTreeMap<String, String>,
    /// Emotion name (lowercase) → expression file (`NAME.exp3.json`), active while the mood holds.
    pub expressions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudioConfig {
    pub device: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_toml_str("", Path::new("idol.toml")).expect("the empty config is valid")
    }
}

/// Positions errors in the source text.
struct Ctx<'a> {
    file: &'a Path,
    src: &'a str,
}

impl Ctx<'_> {
    fn at(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::at(self.file, self.src, span.start, field, message)
    }

    fn int_in<T: TryFrom<i64>>(
        &self,
        v: &Option<Spanned<i64>>,
        field: &str,
        lo: i64,
        hi: i64,
        default: T,
    ) -> Result<T, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => {
                let x = *s.get_ref();
                if x < lo || x > hi {
                    return Err(self.at(
                        s.span(),
                        field,
                        format!("{x} is out of range: allowed {lo}..={hi}"),
                    ));
                }
                T::try_from(x).map_err(|_| self.at(s.span(), field, "value does not fit"))
            }
        }
    }

    fn float_in(
        &self,
        v: &Option<Spanned<f64>>,
        field: &str,
        lo: f64,
        hi: f64,
    ) -> Result<Option<f32>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) => {
                let x = *s.get_ref();
                if !(lo..=hi).contains(&x) {
                    return Err(self.at(
                        s.span(),
                        field,
                        format!("{x} is out of range: allowed {lo}..={hi}"),
                    ));
                }
                Ok(Some(x as f32))
            }
        }
    }
}

/// The ranges every source of voice and face settings is held to: idol.toml, a script's `[script]`
/// and lines, a command's flags. One table, so a value one source takes another does not refuse.
pub mod ranges {
    /// Length scale (1.0 is the voice's pace, 1.2 slower).
    pub const LENGTH_SCALE: (f64, f64) = (0.1, 10.0);
    pub const LENGTH_SCALE_IS: &str = "length scale, 1.0 = the voice's pace";
    /// The voice's noise scale and duration noise width.
    pub const NOISE: (f64, f64) = (0.0, 5.0);
    pub const NOISE_IS: &str = "voice noise scale";
    pub const NOISE_W_IS: &str = "duration noise width";
    /// Face frames per second.
    pub const FPS: (i64, i64) = (1, 1000);
    pub const FPS_IS: &str = "frames per second";
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = crate::budget::read_text(path, crate::budget::MAX_TEXT_FILE_BYTES)
            .map_err(|e| ConfigError::unreadable(path, "config file", &e))?;
        Config::from_toml_str(&src, path)
    }

    /// `idol.toml` in the idol home if it exists, else the defaults.
    pub fn load_or_default(path: &Path) -> Result<Config, ConfigError> {
        if path.exists() {
            Config::load(path)
        } else {
            Ok(Config::default())
        }
    }

    /// Parse and validate TOML text; `file` is used in error messages only.
    pub fn from_toml_str(src: &str, file: &Path) -> Result<Config, ConfigError> {
        let ctx = Ctx { file, src };
        let raw: RawConfig = toml::from_str(src).map_err(|e| {
            ConfigError::from_de(file, src, &e, |m| {
                if m.starts_with("unknown field") {
                    " (see the annotated idol.toml at the repository root)"
                } else {
                    ""
                }
            })
        })?;
        raw.validate(&ctx)
    }
}

impl RawConfig {
    fn validate(self, ctx: &Ctx) -> Result<Config, ConfigError> {
        let persona = PersonaConfig {
            card: PathBuf::from(
                self.persona
                    .card
                    .map(|s| s.into_inner())
                    .unwrap_or_else(|| crate::persona::import::DEFAULT_CARD.into()),
            ),
            memory_dir: PathBuf::from(
                self.persona
                    .memory_dir
                    .unwrap_or_else(|| ".cache/memory".into()),
            ),
        };

        let l = &self.llm;
        let base_url = match &l.base_url {
            None => "http://127.0.0.1:8080".to_string(),
            Some(s) => {
                let u = s.get_ref();
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(ctx.at(
                        s.span(),
                        "llm.base_url",
                        format!("{u:?} is not an http:// or https:// URL (e.g. \"http://127.0.0.1:11434\" for Ollama)"),
                    ));
                }
                u.trim_end_matches('/').to_string()
            }
        };
        let llm = LlmConfig {
            backend: l.backend,
            model: PathBuf::from(
                l.model
                    .clone()
                    .unwrap_or_else(|| crate::assets::DEFAULT_LLM.into()),
            ),
            threads: ctx.int_in(&l.threads, "llm.threads", 1, 256, 1usize)?,
            idle_threads: ctx.int_in(
                &l.idle_threads,
                "llm.idle_threads",
                1,
                256,
                std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
            )?,
            context: ctx.int_in(&l.context, "llm.context", 256, 1 << 20, 2048usize)?,
            base_url,
            api_model: l.api_model.clone().unwrap_or_else(|| "default".into()),
            api_key_env: l.api_key_env.clone(),
            timeout_secs: ctx
                .float_in(&l.timeout_secs, "llm.timeout_secs", 0.1, 3600.0)?
                .unwrap_or(60.0) as f64,
            temperature: ctx
                .float_in(&l.temperature, "llm.temperature", 0.0, 5.0)?
                .unwrap_or(0.7),
            max_tokens: ctx.int_in(&l.max_tokens, "llm.max_tokens", 1, 1 << 20, 160usize)?,
            seed: l.seed.unwrap_or(0),
            languages: l
                .languages
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty())
                .collect(),
        };

        let v = &self.voice;
        let voice = VoiceConfig {
            model: PathBuf::from(
                v.model
                    .clone()
                    .unwrap_or_else(|| crate::assets::DEFAULT_VOICE.into()),
            ),
            model_set: v.model.is_some(),
            speaker: v.speaker.clone(),
            length_scale: ctx.float_in(
                &v.length_scale,
                "voice.length_scale",
                ranges::LENGTH_SCALE.0,
                ranges::LENGTH_SCALE.1,
            )?,
            noise_scale: ctx.float_in(
                &v.noise_scale,
                "voice.noise_scale",
                ranges::NOISE.0,
                ranges::NOISE.1,
            )?,
            noise_w: ctx.float_in(
                &v.noise_w,
                "voice.noise_w",
                ranges::NOISE.0,
                ranges::NOISE.1,
            )?,
            seed: v.seed.unwrap_or(0),
            languages: {
                let mut out = std::collections::BTreeMap::new();
                for (k, name) in v.languages.iter().flatten() {
                    let field = format!("voice.languages.{k}");
                    if !VOICE_LANGUAGES.contains(&k.as_str()) {
                        return Err(ctx.at(
                            name.span(),
                            &field,
                            format!(
                                "{k:?} is not a language a voice can be routed by: allowed {}",
                                VOICE_LANGUAGES.join(", ")
                            ),
                        ));
                    }
                    if name.get_ref().trim().is_empty() {
                        return Err(ctx.at(
                            name.span(),
                            &field,
                            "empty voice: name a Kokoro voice (jf_alpha) or a Piper voice (en_US-joe-medium, or a path to NAME.onnx)",
                        ));
                    }
                    out.insert(k.clone(), name.get_ref().trim().to_string());
                }
                out
            },
            han: match &v.han {
                None => None,
                Some(h) if matches!(h.get_ref().as_str(), "ja" | "zh") => Some(h.get_ref().clone()),
                Some(h) => {
                    return Err(ctx.at(
                        h.span(),
                        "voice.han",
                        format!(
                            "{:?}: allowed \"ja\" (Han text without kana is read as Japanese) or \"zh\" (as Mandarin)",
                            h.get_ref()
                        ),
                    ));
                }
            },
        };

        let face = FaceConfig {
            rig: rig_name(ctx, &self.face.rig, "face.rig")?.unwrap_or_else(|| "arkit52".into()),
            fps: ctx.int_in(
                &self.face.fps,
                "face.fps",
                ranges::FPS.0,
                ranges::FPS.1,
                60u32,
            )?,
            seed: self.face.seed.unwrap_or(0),
        };

        let s = &self.server;
        let bind = match &s.bind {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(b) => b.get_ref().parse().map_err(|_| {
                ctx.at(
                    b.span(),
                    "server.bind",
                    format!(
                        "{:?} is not an IP address: allowed e.g. \"127.0.0.1\" (this machine only), \"0.0.0.0\" (all interfaces), \"::1\"",
                        b.get_ref()
                    ),
                )
            })?,
        };
        let server = ServerConfig {
            bind,
            port: ctx.int_in(&s.port, "server.port", 0, 65535, 8787u16)?,
            token_env: s.token_env.clone().unwrap_or_else(|| "IDOL_TOKEN".into()),
            max_clients: ctx.int_in(&s.max_clients, "server.max_clients", 1, 100_000, 256usize)?,
            max_client_lag_ms: ctx.int_in(
                &s.max_client_lag_ms,
                "server.max_client_lag_ms",
                50,
                600_000,
                2000u64,
            )?,
            allowed_hosts: host_names(ctx, &s.allowed_hosts)?,
            allowed_origins: origins(ctx, &s.allowed_origins)?,
        };

        let mut sinks = SinksConfig::default();
        if let Some(vmc) = self.sinks.vmc.as_ref().filter(|v| v.enabled) {
            let target = match &vmc.target {
                None => std::net::SocketAddr::from(([127, 0, 0, 1], 39539)),
                Some(t) => t.get_ref().parse().map_err(|_| {
                    ctx.at(
                        t.span(),
                        "sinks.vmc.target",
                        format!(
                            "{:?} is not HOST:PORT with an IP address (e.g. \"127.0.0.1:39539\")",
                            t.get_ref()
                        ),
                    )
                })?,
            };
            let names = vmc.names.unwrap_or_default();
            let default_rig = match names {
                VmcNames::Arkit => "arkit52",
                VmcNames::Vrm0 | VmcNames::Vrm1 => "vrm",
            };
            sinks.vmc = Some(VmcConfig {
                target,
                rate: ctx.int_in(&vmc.rate, "sinks.vmc.rate", 1, 240, 60u32)?,
                rig: rig_name(ctx, &vmc.rig, "sinks.vmc.rig")?
                    .unwrap_or_else(|| default_rig.into()),
                names,
            });
        }
        if let Some(vts) = self.sinks.vtube_studio.as_ref().filter(|v| v.enabled) {
            let url = match &vts.url {
                None => "ws://localhost:8001".to_string(),
                Some(u)
                    if u.get_ref().starts_with("ws://") || u.get_ref().starts_with("wss://") =>
                {
                    u.get_ref().clone()
                }
                Some(u) => {
                    return Err(ctx.at(
                        u.span(),
                        "sinks.vtube_studio.url",
                        format!("{:?} is not a ws:// URL (VTube Studio listens on \"ws://localhost:8001\")", u.get_ref()),
                    ));
                }
            };
            sinks.vtube_studio = Some(VtsConfig {
                url,
                rate: ctx.int_in(&vts.rate, "sinks.vtube_studio.rate", 1, 60, 30u32)?,
                token_file: PathBuf::from(
                    vts.token_file
                        .clone()
                        .unwrap_or_else(|| ".cache/vtube_studio_token".into()),
                ),
                rig: rig_name(ctx, &vts.rig, "sinks.vtube_studio.rig")?,
                hotkeys: vts_names(ctx, &vts.hotkeys, "sinks.vtube_studio.hotkeys")?,
                expressions: vts_names(ctx, &vts.expressions, "sinks.vtube_studio.expressions")?,
            });
        }
        if let Some(ll) = self.sinks.livelink.as_ref().filter(|l| l.enabled) {
            let addr = match &ll.addr {
                None => std::net::SocketAddr::from(([127, 0, 0, 1], 11111)),
                Some(t) => t.get_ref().parse().map_err(|_| {
                    ctx.at(
                        t.span(),
                        "sinks.livelink.addr",
                        format!(
                            "{:?} is not HOST:PORT with an IP address (Unreal listens on \"127.0.0.1:11111\", or the editor machine's address)",
                            t.get_ref()
                        ),
                    )
                })?,
            };
            let subject = match &ll.subject {
                None => "idol".to_string(),
                Some(s) if !s.get_ref().trim().is_empty() && s.get_ref().len() <= 255 => {
                    s.get_ref().clone()
                }
                Some(s) => {
                    return Err(ctx.at(
                        s.span(),
                        "sinks.livelink.subject",
                        "the subject name must be 1 to 255 bytes (Unreal lists it in Live Link)",
                    ));
                }
            };
            sinks.livelink = Some(LiveLinkConfig {
                addr,
                subject,
                rate: ctx.int_in(&ll.rate, "sinks.livelink.rate", 1, 240, 60u32)?,
            });
        }
        if let Some(a) = self.sinks.audio.as_ref().filter(|a| a.enabled) {
            sinks.audio = Some(AudioConfig {
                device: a.device.clone(),
            });
        }

        let lim = &self.limits;
        let max = crate::budget::MAX_LIMIT_SECS;
        let defaults = crate::budget::Budget::default();
        let limits = crate::budget::Budget {
            performance_secs: ctx
                .float_in(&lim.performance_secs, "limits.performance_secs", 1.0, max)?
                .map_or(defaults.performance_secs, f64::from),
            utterance_secs: ctx
                .float_in(&lim.utterance_secs, "limits.utterance_secs", 1.0, max)?
                .map_or(defaults.utterance_secs, f64::from),
        };

        let relays = self.relays.validate(ctx)?;
        let mic = self.mic.validate(ctx)?;
        let nats = self.nats.validate(ctx)?;
        let viewer = ViewerConfig {
            avatar: match &self.viewer.avatar {
                None => None,
                Some(a) => {
                    let p = a.get_ref().trim();
                    let ext = Path::new(p)
                        .extension()
                        .and_then(|e| e.to_str())
                        .map(str::to_ascii_lowercase);
                    if !matches!(ext.as_deref(), Some("vrm" | "glb")) {
                        return Err(ctx.at(
                            a.span(),
                            "viewer.avatar",
                            format!(
                                "{p:?} is not a .vrm or .glb file: give the path (relative to the idol home) of a VRM avatar or a binary glTF whose morph targets carry ARKit names"
                            ),
                        ));
                    }
                    Some(PathBuf::from(p))
                }
            },
        };

        Ok(Config {
            persona,
            llm,
            voice,
            face,
            server,
            sinks,
            limits,
            viewer,
            relays,
            mic,
            nats,
        })
    }
}

// ---- [relays]: live chat relays (src/relay, docs/relays.md) ----

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawRelays {
    names: Option<Vec<String>>,
    user_burst: Option<Spanned<i64>>,
    user_per_minute: Option<Spanned<f64>>,
    global_burst: Option<Spanned<i64>>,
    global_per_minute: Option<Spanned<f64>>,
    queue: Option<Spanned<i64>>,
    busy_at: Option<Spanned<i64>>,
    max_age_secs: Option<Spanned<f64>>,
    reconnect_min_ms: Option<Spanned<i64>>,
    reconnect_max_ms: Option<Spanned<i64>>,
    twitch: Option<RawTwitch>,
    bilibili: Option<RawBilibili>,
    generic: Option<RawGeneric>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawTwitch {
    enabled: Option<Spanned<bool>>,
    server: Option<Spanned<String>>,
    channel: Option<Spanned<String>>,
    nick: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawBilibili {
    enabled: Option<Spanned<bool>>,
    url: Option<Spanned<String>>,
    room_id: Option<Spanned<i64>>,
    uid: Option<Spanned<i64>>,
    key_env: Option<String>,
    heartbeat_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawGeneric {
    http: bool,
    stdin: bool,
}

/// `[relays]`: the chat policy's settings and the relays enabled.
#[derive(Debug, Clone, PartialEq)]
pub struct RelaysConfig {
    /// The idol's names, for mentions (empty: the persona card's name is used).
    pub names: Vec<String>,
    pub user_burst: u32,
    pub user_per_minute: f64,
    pub global_burst: u32,
    pub global_per_minute: f64,
    pub queue: usize,
    /// Plain messages waiting at which she answers one of them and lets the rest go (0: off).
    pub busy_at: usize,
    pub max_age_secs: f64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub twitch: Option<TwitchConfig>,
    pub bilibili: Option<BilibiliConfig>,
    /// `POST /v1/chat` on the server.
    pub http: bool,
    /// JSON lines on stdin (also `idol serve --chat-stdin`).
    pub stdin: bool,
}

impl RelaysConfig {
    /// Whether any relay is on.
    pub fn any(&self) -> bool {
        self.twitch.is_some() || self.bilibili.is_some() || self.http || self.stdin
    }
}

/// `[relays.twitch]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TwitchConfig {
    /// `HOST:PORT` of the IRC server (plain TCP).
    pub server: String,
    /// The channel to read (without `#`).
    pub channel: String,
    /// The login; `None`: anonymous (`justinfanNNNNN`, read-only).
    pub nick: Option<String>,
    /// The environment variable holding an OAuth token (`oauth:…`) for `nick`.
    pub token_env: Option<String>,
}

/// `[relays.bilibili]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BilibiliConfig {
    /// The danmaku server's WebSocket URL (`ws://…/sub`).
    pub url: String,
    /// The live room's real (long) id.
    pub room_id: u64,
    /// The uid the auth packet names (0: anonymous).
    pub uid: u64,
    /// The environment variable holding the auth key (`getDanmuInfo`'s token).
    pub key_env: Option<String>,
    pub heartbeat_secs: u64,
}

impl RawRelays {
    fn validate(&self, ctx: &Ctx) -> Result<RelaysConfig, ConfigError> {
        let on = |e: &Option<Spanned<bool>>| e.as_ref().is_none_or(|e| *e.get_ref());
        let twitch = match self.twitch.as_ref().filter(|t| on(&t.enabled)) {
            None => None,
            Some(t) => {
                let server = match &t.server {
                    None => "irc.chat.twitch.tv:6667".to_string(),
                    Some(s) => {
                        let v = s.get_ref().trim();
                        let ok = v
                            .rsplit_once(':')
                            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                        if !ok {
                            return Err(ctx.at(
                                s.span(),
                                "relays.twitch.server",
                                format!(
                                    "{v:?} is not HOST:PORT (Twitch: \"irc.chat.twitch.tv:6667\")"
                                ),
                            ));
                        }
                        v.to_string()
                    }
                };
                let channel = t.channel.as_ref().map(|c| {
                    (
                        c.get_ref().trim().trim_start_matches('#').to_string(),
                        c.span(),
                    )
                });
                let channel = match channel {
                    Some((c, span)) => {
                        if c.is_empty()
                            || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                        {
                            return Err(ctx.at(
                                span,
                                "relays.twitch.channel",
                                format!("{c:?} is not a Twitch channel name (letters, digits, _)"),
                            ));
                        }
                        c
                    }
                    None => {
                        let span = t.enabled.as_ref().map_or(0..0, |e| e.span());
                        return Err(ctx.at(
                            span,
                            "relays.twitch.channel",
                            "missing: name the channel to read, e.g. channel = \"yourchannel\"",
                        ));
                    }
                };
                let nick = t.nick.as_ref().map(|n| n.get_ref().trim().to_lowercase());
                if let Some(env) = &t.token_env
                    && nick.is_none()
                {
                    return Err(ctx.at(
                        env.span(),
                        "relays.twitch.token_env",
                        "a token needs the login it belongs to: set nick = \"yourlogin\" too (or drop token_env to read anonymously)",
                    ));
                }
                Some(TwitchConfig {
                    server,
                    channel,
                    nick,
                    token_env: t.token_env.as_ref().map(|e| e.get_ref().clone()),
                })
            }
        };
        let bilibili = match self.bilibili.as_ref().filter(|b| on(&b.enabled)) {
            None => None,
            Some(b) => {
                let url = match &b.url {
                    None => "ws://broadcastlv.chat.bilibili.com:2244/sub".to_string(),
                    Some(u) if u.get_ref().starts_with("ws://") => u.get_ref().clone(),
                    Some(u) => {
                        return Err(ctx.at(
                            u.span(),
                            "relays.bilibili.url",
                            format!(
                                "{:?} is not a ws:// URL (this build speaks plain WebSocket: \"ws://broadcastlv.chat.bilibili.com:2244/sub\")",
                                u.get_ref()
                            ),
                        ));
                    }
                };
                let room_id = match &b.room_id {
                    Some(_) => {
                        ctx.int_in(&b.room_id, "relays.bilibili.room_id", 1, i64::MAX, 0u64)?
                    }
                    None => {
                        let span = b.enabled.as_ref().map_or(0..0, |e| e.span());
                        return Err(ctx.at(
                            span,
                            "relays.bilibili.room_id",
                            "missing: the live room's id, the number in https://live.bilibili.com/ID",
                        ));
                    }
                };
                Some(BilibiliConfig {
                    url,
                    room_id,
                    uid: ctx.int_in(&b.uid, "relays.bilibili.uid", 0, i64::MAX, 0u64)?,
                    key_env: b.key_env.clone(),
                    heartbeat_secs: ctx.int_in(
                        &b.heartbeat_secs,
                        "relays.bilibili.heartbeat_secs",
                        1,
                        300,
                        30u64,
                    )?,
                })
            }
        };
        let generic = self.generic.clone().unwrap_or_default();
        let reconnect_min_ms = ctx.int_in(
            &self.reconnect_min_ms,
            "relays.reconnect_min_ms",
            10,
            600_000,
            1000u64,
        )?;
        let reconnect_max_ms = ctx.int_in(
            &self.reconnect_max_ms,
            "relays.reconnect_max_ms",
            10,
            3_600_000,
            60_000u64,
        )?;
        if reconnect_max_ms < reconnect_min_ms
            && let Some(s) = &self.reconnect_max_ms
        {
            return Err(ctx.at(
                s.span(),
                "relays.reconnect_max_ms",
                format!("{reconnect_max_ms} is below reconnect_min_ms ({reconnect_min_ms})"),
            ));
        }
        Ok(RelaysConfig {
            names: self.names.clone().unwrap_or_default(),
            user_burst: ctx.int_in(&self.user_burst, "relays.user_burst", 1, 1000, 2u32)?,
            user_per_minute: ctx
                .float_in(
                    &self.user_per_minute,
                    "relays.user_per_minute",
                    0.01,
                    6000.0,
                )?
                .map_or(3.0, f64::from),
            global_burst: ctx.int_in(
                &self.global_burst,
                "relays.global_burst",
                1,
                100_000,
                20u32,
            )?,
            global_per_minute: ctx
                .float_in(
                    &self.global_per_minute,
                    "relays.global_per_minute",
                    0.01,
                    600_000.0,
                )?
                .map_or(120.0, f64::from),
            queue: ctx.int_in(&self.queue, "relays.queue", 1, 10_000, 32usize)?,
            busy_at: ctx.int_in(&self.busy_at, "relays.busy_at", 0, 10_000, 8usize)?,
            max_age_secs: ctx
                .float_in(&self.max_age_secs, "relays.max_age_secs", 1.0, 86_400.0)?
                .map_or(60.0, f64::from),
            reconnect_min_ms,
            reconnect_max_ms,
            twitch,
            bilibili,
            http: generic.http,
            stdin: generic.stdin,
        })
    }
}

/// `[server] allowed_hosts`: bare host names (no scheme, port or path), or `*`.
fn host_names(ctx: &Ctx, v: &Option<Vec<Spanned<String>>>) -> Result<Vec<String>, ConfigError> {
    let mut out = vec![];
    for h in v.iter().flatten() {
        let name = h.get_ref().trim();
        let ok = name == "*"
            || (!name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
        if !ok {
            return Err(ctx.at(
                h.span(),
                "server.allowed_hosts",
                format!(
                    "{:?} is not a host name: give the name only, as in the browser's address bar without scheme or port (e.g. \"idol.lan\"), or \"*\" for any",
                    h.get_ref()
                ),
            ));
        }
        out.push(name.to_ascii_lowercase());
    }
    Ok(out)
}

/// `[server] allowed_origins`: `http(s)://host[:port]` without a path, or `*`.
fn origins(ctx: &Ctx, v: &Option<Vec<Spanned<String>>>) -> Result<Vec<String>, ConfigError> {
    let mut out = vec![];
    for o in v.iter().flatten() {
        let s = o.get_ref().trim().trim_end_matches('/');
        let ok = s == "*"
            || s.strip_prefix("http://")
                .or_else(|| s.strip_prefix("https://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(['/', '?', '#', '@', ' ']));
        if !ok {
            return Err(ctx.at(
                o.span(),
                "server.allowed_origins",
                format!(
                    "{:?} is not a web origin: allowed \"http://HOST[:PORT]\" or \"https://HOST[:PORT]\" without a path (e.g. \"https://overlay.example\"), or \"*\" for every page",
                    o.get_ref()
                ),
            ));
        }
        out.push(s.to_ascii_lowercase());
    }
    Ok(out)
}

/// A rig is named by a file stem under `rigs/` or a path to a `.toml` file.
/// A `[sinks.vtube_studio.hotkeys]` / `.expressions` table: cue names (lowercased) to non-empty
/// VTube Studio names.
fn vts_names(
    ctx: &Ctx,
    table: &BTreeMap<String, Spanned<String>>,
    field: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (k, v) in table {
        if v.get_ref().trim().is_empty() {
            return Err(ctx.at(
                v.span(),
                &format!("{field}.{k}"),
                "empty: give the name or id VTube Studio shows for it",
            ));
        }
        out.insert(k.to_ascii_lowercase(), v.get_ref().trim().to_string());
    }
    Ok(out)
}

fn rig_name(
    ctx: &Ctx,
    v: &Option<Spanned<String>>,
    field: &str,
) -> Result<Option<String>, ConfigError> {
    match v {
        None => Ok(None),
        Some(s) => {
            let name = s.get_ref();
            let ok = !name.is_empty()
                && (name.ends_with(".toml")
                    || name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            if !ok {
                return Err(ctx.at(
                    s.span(),
                    field,
                    format!("{name:?} is not a rig: allowed a name from `idol rigs` (arkit52, vrm, live2d, oculus15) or a path to a rig .toml"),
                ));
            }
            Ok(Some(name.clone()))
        }
    }
}

// ---- [mic]: the host's voice (src/listen, docs/relays.md) ----

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawMic {
    enabled: Option<bool>,
    device: Option<String>,
    file: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
    language: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    barge_in: Option<bool>,
    threshold: Option<Spanned<f64>>,
    end_threshold: Option<Spanned<f64>>,
    min_speech_ms: Option<Spanned<i64>>,
    min_silence_ms: Option<Spanned<i64>>,
    max_utterance_s: Option<Spanned<f64>>,
}

/// `[mic]`: the host talks to the idol. Speech found by Silero VAD barges in (the same cut as an
/// `interrupt`) and each finished utterance, transcribed by Whisper, is a chat from source `host`.
#[derive(Debug, Clone, PartialEq)]
pub struct MicConfig {
    /// The input device's name (`idol devices`); `None`: the system's default input.
    pub device: Option<String>,
    /// A recording played as the microphone, in real time, instead of a device (relative to the
    /// idol home): rehearsals and tests without a sound card.
    pub file: Option<PathBuf>,
    /// The pinned Whisper model: `tiny.en` (default) or `base`.
    pub model: String,
    /// The language Whisper is held to (ISO 639-1; only `en` for `tiny.en`).
    pub language: Option<String>,
    /// The name the host's chats carry.
    pub user: String,
    /// Whether the host's speech cuts the idol off.
    pub barge_in: bool,
    pub threshold: f32,
    pub end_threshold: f32,
    pub min_speech_ms: u32,
    pub min_silence_ms: u32,
    pub max_utterance_s: f32,
}

/// The Whisper models idol pins (`models/whisper-NAME.bin`).
pub const WHISPER_MODELS: [&str; 2] = ["tiny.en", "base"];

impl RawMic {
    fn validate(&self, ctx: &Ctx) -> Result<Option<MicConfig>, ConfigError> {
        let any = self.device.is_some()
            || self.file.is_some()
            || self.model.is_some()
            || self.language.is_some()
            || self.user.is_some()
            || self.barge_in.is_some()
            || self.threshold.is_some()
            || self.end_threshold.is_some()
            || self.min_speech_ms.is_some()
            || self.min_silence_ms.is_some()
            || self.max_utterance_s.is_some();
        // On with `enabled = true`, or when any other key is set (and `enabled` is not false).
        if !self.enabled.unwrap_or(any) {
            return Ok(None);
        }
        let model = match &self.model {
            None => "tiny.en".to_string(),
            Some(m) if WHISPER_MODELS.contains(&m.get_ref().as_str()) => m.get_ref().clone(),
            Some(m) => {
                return Err(ctx.at(
                    m.span(),
                    "mic.model",
                    format!(
                        "{:?} is not a pinned Whisper model: use \"tiny.en\" (English, quick) or \"base\" (multilingual)",
                        m.get_ref()
                    ),
                ));
            }
        };
        let language = match &self.language {
            None => None,
            Some(l) => {
                let v = l.get_ref().trim().to_ascii_lowercase();
                let ok = (2..=3).contains(&v.len()) && v.chars().all(|c| c.is_ascii_lowercase());
                if !ok || (model == "tiny.en" && v != "en") {
                    return Err(ctx.at(
                        l.span(),
                        "mic.language",
                        format!(
                            "{:?}: give a language code such as \"en\" or \"ja\"; tiny.en hears English only (use model = \"base\" for others)",
                            l.get_ref()
                        ),
                    ));
                }
                Some(v)
            }
        };
        let user = match &self.user {
            None => "host".to_string(),
            Some(u) if !u.get_ref().trim().is_empty() && u.get_ref().len() <= 64 => {
                u.get_ref().trim().to_string()
            }
            Some(u) => {
                return Err(ctx.at(
                    u.span(),
                    "mic.user",
                    "the host's name must be 1 to 64 bytes",
                ));
            }
        };
        let threshold = ctx
            .float_in(&self.threshold, "mic.threshold", 0.05, 0.95)?
            .unwrap_or(0.5);
        let end_threshold = match &self.end_threshold {
            Some(e) if *e.get_ref() > threshold as f64 => {
                return Err(ctx.at(
                    e.span(),
                    "mic.end_threshold",
                    format!(
                        "{} is above threshold ({threshold}): speech ends below end_threshold, so it must not exceed threshold",
                        e.get_ref()
                    ),
                ));
            }
            _ => ctx
                .float_in(&self.end_threshold, "mic.end_threshold", 0.01, 0.95)?
                .unwrap_or((threshold - 0.15).max(0.01)),
        };
        Ok(Some(MicConfig {
            device: self.device.clone(),
            file: self
                .file
                .as_ref()
                .map(|f| PathBuf::from(f.get_ref().trim())),
            model,
            language,
            user,
            barge_in: self.barge_in.unwrap_or(true),
            threshold,
            end_threshold,
            min_speech_ms: ctx.int_in(
                &self.min_speech_ms,
                "mic.min_speech_ms",
                32,
                5000,
                250u32,
            )?,
            min_silence_ms: ctx.int_in(
                &self.min_silence_ms,
                "mic.min_silence_ms",
                64,
                5000,
                300u32,
            )?,
            max_utterance_s: ctx
                .float_in(&self.max_utterance_s, "mic.max_utterance_s", 2.0, 30.0)?
                .unwrap_or(20.0),
        }))
    }
}

#[cfg(test)]
mod mic_tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(src, Path::new("idol.toml"))
    }

    #[test]
    fn mic_is_off_unless_asked_for_and_validated_with_its_line() {
        assert!(parse("").unwrap().mic.is_none());
        assert!(
            parse("[mic]\nenabled = false\nmodel = \"base\"\n")
                .unwrap()
                .mic
                .is_none()
        );
        let m = parse("[mic]\nenabled = true\n").unwrap().mic.unwrap();
        assert_eq!((m.model.as_str(), m.user.as_str()), ("tiny.en", "host"));
        assert!(m.barge_in && m.file.is_none());
        assert_eq!((m.threshold, m.min_silence_ms), (0.5, 300));
        assert!((m.end_threshold - 0.35).abs() < 1e-6);
        // Any key turns it on.
        let m = parse("[mic]\nfile = \"host.wav\"\nbarge_in = false\n")
            .unwrap()
            .mic
            .unwrap();
        assert_eq!(m.file.as_deref(), Some(Path::new("host.wav")));
        assert!(!m.barge_in);
        let e = parse("[mic]\nmodel = \"large\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "mic.model"));
        let e = parse("[mic]\nlanguage = \"ja\"\n").unwrap_err();
        assert_eq!(e.field, "mic.language");
        assert!(parse("[mic]\nmodel = \"base\"\nlanguage = \"ja\"\n").is_ok());
        let e = parse("[mic]\nthreshold = 0.4\nend_threshold = 0.6\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "mic.end_threshold"));
        let e = parse("[mic]\nmax_utterance_s = 60.0\n").unwrap_err();
        assert_eq!(e.field, "mic.max_utterance_s");
        let e = parse("[mic]\nmicrophone = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("microphone"), "{e}");
    }
}

// ---- [nats]: the stream over NATS (src/server/nats.rs, docs/scale.md) ----

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawNats {
    url: Option<Spanned<String>>,
    idol: Option<Spanned<String>>,
    queue: Option<Spanned<i64>>,
    advertise: Option<Spanned<String>>,
}

/// `[nats]`: where `idol serve` publishes its stream and takes control (`url`; `None`: it does not)
/// and the idol's name in the subjects (`idol.<idol>.audio`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    pub url: Option<String>,
    pub idol: String,
    /// Messages waiting for the NATS connection before new ones are dropped (and counted).
    pub queue: usize,
    /// `idol relay` only: the WebSocket URL its clients reach it at, announced to the idol's other
    /// relays (`None`: `ws://BIND:PORT/v1/stream`, or nothing when bound to all addresses).
    pub advertise: Option<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: None,
            idol: "idol".into(),
            queue: 4096,
            advertise: None,
        }
    }
}

/// A NATS server URL (`nats://host:port`, `tls://host:port`, or a bare `host:port`), as written;
/// `Err` says what is wrong.
pub fn check_nats_url(u: &str) -> Result<(), String> {
    let rest = match u.split_once("://") {
        Some(("nats" | "tls", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{u:?}: the scheme {scheme:?} is not nats:// or tls:// (e.g. \"nats://127.0.0.1:4222\")"
            ));
        }
        None => u,
    };
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if hostport.is_empty() || hostport.contains('/') || hostport.contains(char::is_whitespace) {
        return Err(format!(
            "{u:?} is not a NATS server address: give nats://HOST:PORT (e.g. \"nats://127.0.0.1:4222\")"
        ));
    }
    Ok(())
}

/// A relay's public WebSocket URL (`ws://HOST:PORT/PATH` or `wss://`), as written; `Err` says what is
/// wrong. At most 512 bytes: it travels in every client's `hello`.
pub fn check_ws_url(u: &str) -> Result<(), String> {
    let ok = u.len() <= 512
        && !u.contains(char::is_whitespace)
        && match u.split_once("://") {
            Some((scheme, rest)) => {
                matches!(scheme.to_ascii_lowercase().as_str(), "ws" | "wss")
                    && rest
                        .split(['/', '?', '#'])
                        .next()
                        .is_some_and(|a| !a.is_empty() && !a.starts_with(':') && !a.contains('@'))
            }
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a WebSocket URL clients can reach: give ws://HOST:PORT/v1/stream (or wss://), at most 512 bytes",
            u.chars().take(80).collect::<String>()
        ))
    }
}

/// A subject token for the idol's name: letters, digits, `-` and `_`, 1 to 64 of them.
pub fn check_idol_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{name:?} cannot name an idol in NATS subjects: use 1 to 64 letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// An optional string key, trimmed and checked by `check` (its `Err` names what is wrong).
fn trimmed_checked(
    ctx: &Ctx,
    value: &Option<Spanned<String>>,
    key: &str,
    check: fn(&str) -> Result<(), String>,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = value else {
        return Ok(None);
    };
    let t = v.get_ref().trim();
    check(t).map_err(|m| ctx.at(v.span(), key, m))?;
    Ok(Some(t.to_string()))
}

impl RawNats {
    fn validate(&self, ctx: &Ctx) -> Result<NatsConfig, ConfigError> {
        let d = NatsConfig::default();
        let url = trimmed_checked(ctx, &self.url, "nats.url", check_nats_url)?;
        let idol = match &self.idol {
            None => d.idol,
            Some(n) => {
                check_idol_name(n.get_ref()).map_err(|m| ctx.at(n.span(), "nats.idol", m))?;
                n.get_ref().clone()
            }
        };
        let advertise = trimmed_checked(ctx, &self.advertise, "nats.advertise", check_ws_url)?;
        Ok(NatsConfig {
            url,
            idol,
            queue: ctx.int_in(&self.queue, "nats.queue", 16, 1 << 20, d.queue)?,
            advertise,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> ConfigError {
        Config::from_toml_str(src, Path::new("idol.toml")).unwrap_err()
    }

    #[test]
    fn nats_section_is_checked() {
        let c = Config::from_toml_str(
            "[nats]\nurl = \"nats://127.0.0.1:4222\"\nidol = \"aoi-2\"\n",
            Path::new("idol.toml"),
        )
        .unwrap();
        assert_eq!(c.nats.url.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!((c.nats.idol.as_str(), c.nats.queue), ("aoi-2", 4096));
        assert_eq!(Config::default().nats.url, None);
        let e = err("[nats]\nurl = \"http://127.0.0.1:4222\"\n");
        assert!(e.to_string().contains("nats.url"), "{e}");
        assert!(e.to_string().contains("not nats://"), "{e}");
        let e = err("[nats]\nidol = \"a.b\"\n");
        assert!(e.to_string().contains("nats.idol"), "{e}");
        let e = err("[nats]\nqueue = 1\n");
        assert!(e.to_string().contains("nats.queue"), "{e}");
        let c = Config::from_toml_str(
            "[nats]\nadvertise = \"wss://relay-b.example:443/v1/stream\"\n",
            Path::new("idol.toml"),
        )
        .unwrap();
        assert_eq!(
            c.nats.advertise.as_deref(),
            Some("wss://relay-b.example:443/v1/stream")
        );
        for bad in [
            "http://a:1/v1/stream",
            "ws:///v1/stream",
            "ws://a b/",
            "relay-b:8787",
        ] {
            let e = err(&format!("[nats]\nadvertise = {bad:?}\n"));
            assert!(e.to_string().contains("nats.advertise"), "{bad}: {e}");
            assert!(e.to_string().contains("ws://HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn browser_allowlists_are_checked_and_normalized() {
        let c = Config::from_toml_str(
            "[server]\nallowed_hosts = [\"Idol.LAN\", \"*\"]\nallowed_origins = [\"https://Overlay.example/\", \"http://10.0.0.5:8787\"]\n",
            Path::new("idol.toml"),
        )
        .unwrap();
        assert_eq!(c.server.allowed_hosts, ["idol.lan", "*"]);
        assert_eq!(
            c.server.allowed_origins,
            ["https://overlay.example", "http://10.0.0.5:8787"]
        );
        assert!(Config::default().server.allowed_origins.is_empty());
        let e = err("[server]\nallowed_hosts = [\"http://idol.lan:8787\"]\n");
        assert_eq!((e.line, e.field.as_str()), (2, "server.allowed_hosts"));
        assert!(e.to_string().contains("without scheme or port"), "{e}");
        let e = err("[server]\nallowed_origins = [\"ok.example\", \"https://a.example/page\"]\n");
        assert_eq!(e.field, "server.allowed_origins");
        assert!(e.to_string().contains("not a web origin"), "{e}");
    }

    #[test]
    fn empty_is_default() {
        let c = Config::from_toml_str("", Path::new("x.toml")).unwrap();
        assert_eq!(c.server.port, 8787);
        assert_eq!(c.server.bind.to_string(), "127.0.0.1");
        assert_eq!(c.face.fps, 60);
        assert_eq!(c.face.rig, "arkit52");
        assert_eq!(c.llm.backend, LlmBackend::Local);
        assert!(c.sinks.vmc.is_none());
    }

    #[test]
    fn bad_type_is_positioned() {
        let e = err("[server]\nport = \"eighty\"\n");
        assert_eq!((e.line, e.column), (2, 8), "{e}");
        assert_eq!(e.field, "server.port");
        assert!(
            e.to_string()
                .starts_with("idol.toml:2:8: field `server.port`:"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_positioned_and_lists_allowed() {
        let e = err("[face]\nfps = 30\nrigg = \"vrm\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert_eq!(e.field, "face.rigg");
        assert!(
            e.message.contains("rig") && e.message.contains("fps"),
            "{e}"
        );
    }

    #[test]
    fn bad_port_and_ranges() {
        let e = err("[server]\nport = 70000\n");
        assert_eq!((e.line, e.column, e.field.as_str()), (2, 8, "server.port"));
        assert!(e.message.contains("0..=65535"), "{e}");
        let e = err("[face]\nfps = 0\n");
        assert!(e.message.contains("1..=1000"), "{e}");
        let e = err("[server]\nbind = \"localhost:80\"\n");
        assert_eq!(e.field, "server.bind");
        let e = err("[sinks.vmc]\nenabled = true\ntarget = \"nowhere\"\n");
        assert_eq!((e.line, e.field.as_str()), (3, "sinks.vmc.target"));
    }

    #[test]
    fn limits_have_defaults_and_ranges() {
        let c = Config::default();
        assert_eq!(c.limits, crate::budget::Budget::default());
        let c = Config::from_toml_str(
            "[limits]\nperformance_secs = 7200\nutterance_secs = 30.5\n",
            Path::new("idol.toml"),
        )
        .unwrap();
        assert_eq!(c.limits.performance_secs, 7200.0);
        assert_eq!(c.limits.utterance_secs, 30.5);
        let e = err("[limits]\nperformance_secs = 100000\n");
        assert_eq!((e.line, e.field.as_str()), (2, "limits.performance_secs"));
        assert!(e.message.contains("allowed 1..=86400"), "{e}");
        let e = err("[limits]\nutterance_secs = 0\n");
        assert_eq!(e.field, "limits.utterance_secs");
    }

    #[test]
    fn sink_names_hotkeys_and_livelink() {
        let c =
            Config::from_toml_str("[sinks.vmc]\nenabled = true\n", Path::new("idol.toml")).unwrap();
        let v = c.sinks.vmc.unwrap();
        assert_eq!((v.names, v.rig.as_str()), (VmcNames::Vrm0, "vrm"));
        let c = Config::from_toml_str(
            "[sinks.vmc]\nenabled = true\nnames = \"arkit\"\n",
            Path::new("idol.toml"),
        )
        .unwrap();
        let v = c.sinks.vmc.unwrap();
        assert_eq!((v.names, v.rig.as_str()), (VmcNames::Arkit, "arkit52"));
        let e = err("[sinks.vmc]\nenabled = true\nnames = \"vrm2\"\n");
        assert_eq!((e.line, e.field.as_str()), (3, "sinks.vmc.names"));
        assert!(e.message.contains("vrm0"), "{e}");
        let c = Config::from_toml_str(
            "[sinks.vtube_studio]\nenabled = true\n[sinks.vtube_studio.hotkeys]\nWave = \"Wave hand\"\n\
             [sinks.vtube_studio.expressions]\nshy = \"Blush.exp3.json\"\n",
            Path::new("idol.toml"),
        )
        .unwrap();
        let v = c.sinks.vtube_studio.unwrap();
        assert_eq!(v.hotkeys["wave"], "Wave hand");
        assert_eq!(v.expressions["shy"], "Blush.exp3.json");
        let e = err(
            "[sinks.vtube_studio]\nenabled = true\n[sinks.vtube_studio.hotkeys]\nwave = \" \"\n",
        );
        assert_eq!(
            (e.line, e.field.as_str()),
            (4, "sinks.vtube_studio.hotkeys.wave")
        );
        let c = Config::from_toml_str("[sinks.livelink]\nenabled = true\n", Path::new("idol.toml"))
            .unwrap();
        let l = c.sinks.livelink.unwrap();
        assert_eq!(
            (l.addr.port(), l.subject.as_str(), l.rate),
            (11111, "idol", 60)
        );
        let e = err("[sinks.livelink]\nenabled = true\naddr = \"unreal\"\n");
        assert_eq!((e.line, e.field.as_str()), (3, "sinks.livelink.addr"));
    }

    #[test]
    fn syntax_error_is_positioned() {
        let e = err("[llm]\ntemperature = = 1\n");
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn relays_default_off_and_are_checked_with_positions() {
        let c = Config::default();
        assert!(!c.relays.any());
        assert_eq!((c.relays.queue, c.relays.busy_at), (32, 8));
        let c = Config::from_toml_str(
            "[relays]\nnames = [\"Mika\"]\n[relays.twitch]\nchannel = \"#Chan_1\"\n[relays.generic]\nhttp = true\n",
            Path::new("idol.toml"),
        )
        .unwrap();
        let t = c.relays.twitch.clone().unwrap();
        assert_eq!(
            (t.server.as_str(), t.channel.as_str()),
            ("irc.chat.twitch.tv:6667", "Chan_1")
        );
        assert!(c.relays.http && c.relays.any());
        assert_eq!(c.relays.names, ["Mika"]);
        // A section with enabled = false is off and not checked.
        let c =
            Config::from_toml_str("[relays.twitch]\nenabled = false\n", Path::new("x")).unwrap();
        assert!(c.relays.twitch.is_none());
        let e = err("[relays.twitch]\nenabled = true\n");
        assert_eq!((e.line, e.field.as_str()), (2, "relays.twitch.channel"));
        let e = err("[relays.twitch]\nchannel = \"c\"\ntoken_env = \"T\"\n");
        assert_eq!((e.line, e.field.as_str()), (3, "relays.twitch.token_env"));
        assert!(e.to_string().contains("nick"), "{e}");
        let e = err("[relays.twitch]\nchannel = \"c\"\nserver = \"irc.example\"\n");
        assert_eq!(e.field, "relays.twitch.server");
        let e = err("[relays.bilibili]\nroom_id = 1\nurl = \"wss://x/sub\"\n");
        assert_eq!((e.line, e.field.as_str()), (3, "relays.bilibili.url"));
        let e = err("[relays.bilibili]\nroom_id = 0\n");
        assert_eq!(e.field, "relays.bilibili.room_id");
        let e = err("[relays]\nqueue = 0\n");
        assert_eq!(e.field, "relays.queue");
        let e = err("[relays]\nreconnect_min_ms = 5000\nreconnect_max_ms = 100\n");
        assert_eq!((e.line, e.field.as_str()), (3, "relays.reconnect_max_ms"));
        let e = err("[relays.twitch]\nchanel = \"c\"\n");
        assert!(e.to_string().contains("chanel"), "{e}");
    }

    #[test]
    fn example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("idol.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.server.port, 8787);
    }
}
