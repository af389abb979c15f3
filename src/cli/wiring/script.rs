//! Scripts as several commands run them: the settings `render` and `perform` share (flag, then
//! the script's `[script]`, then idol.toml), the voice and face a render loads, the render itself,
//! its files, the renderer `serve` hands scripts to, and jobs for the render farm (`render --queue`,
//! `worker`).

use crate::cli::Env;
use crate::cli::wiring::settings::{Said, Settings, Source, script_says};
use anyhow::Context;
use clap::Args;
use idol::face::Rig;
use idol::farm::{Job, JobSettings, Queue};
use idol::phonemize::EnglishPhonemizer;
use idol::script::live::ScriptRenderer;
use idol::script::{self, PiperLineVoice, RenderOptions, Script};
use idol::tts::{Synthesizer, VoiceChoice, VoiceOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub common: ScriptArgs,
    /// Output folder (created if missing; the six files in it are replaced).
    #[arg(long, required_unless_present = "store")]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// More scripts (with --queue: each renders into OUT/NAME, NAME.script.toml into OUT/NAME).
    #[arg(value_name = "SCRIPT")]
    pub more: Vec<PathBuf>,
    /// Submit the scripts as jobs to this NATS server's JetStream render queue instead of rendering
    /// here; `idol worker` renders them into --out (a folder the workers reach), `idol jobs` shows
    /// them (docs/scale.md).
    #[arg(long, value_name = "nats://HOST:PORT")]
    pub queue: Option<String>,
    /// With --queue, when it creates the queue: how long a job may go without word from its worker
    /// before another worker gets it (a worker that died).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub ack_wait: u64,
    /// With --queue, instead of --out: workers put the outputs into the NATS server's JetStream
    /// object store (bucket idol-renders, objects JOB/FILE); `idol jobs --get JOB --out DIR`
    /// fetches them.
    #[arg(long, requires = "queue", conflicts_with = "out")]
    pub store: bool,
}

/// Settings shared by `render` and `perform`; each overrides the script's `[script]` value, which
/// overrides idol.toml.
#[derive(Debug, Args, Clone)]
pub struct ScriptArgs {
    /// The script (TOML, see docs/scripts.md).
    pub script: PathBuf,
    /// Voice: a name under voices/ or a path to NAME.onnx.
    #[arg(long)]
    pub voice: Option<String>,
    /// Speaker of a multi-speaker voice.
    #[arg(long)]
    pub speaker: Option<String>,
    /// Rig for the frames.
    #[arg(long)]
    pub rig: Option<String>,
    /// Face frames per second.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub fps: Option<u32>,
    /// Seed of the voice's noise and the face's idle motion: the same seed gives the same bytes.
    #[arg(long)]
    pub seed: Option<u64>,
    /// ONNX Runtime threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// A script with its voice and face settings resolved.
pub struct Prepared {
    pub script: Script,
    pub voice: PiperLineVoice,
    pub rig: Rig,
    pub fps: u32,
    pub seed: u64,
    pub rate: Option<f32>,
    /// For aligning recorded lines' transcripts in audio lip sync.
    pub phonemizer: Arc<EnglishPhonemizer>,
    /// `[limits]` from idol.toml.
    pub budget: idol::budget::Budget,
}

/// Load the script, the voice and the rig.
pub fn prepare(env: &Env, args: &ScriptArgs) -> anyhow::Result<Prepared> {
    crate::cli::init_logger();
    let script = Script::load(&args.script)?;
    prepare_script(env, args, script)
}

/// Load the voice and the rig for a script already read (`args.script` is not read again).
pub fn prepare_script(env: &Env, args: &ScriptArgs, script: Script) -> anyhow::Result<Prepared> {
    prepare_script_with(env, args, script, &mut Loaded::default())
}

/// The phonemizer and the last voice a process loaded, kept between scripts (`idol worker` renders
/// job after job): loading them takes longer than rendering a short script. A voice is reused only
/// for the same choice and options; its noise restarts at the next script's seed either way, so a
/// script renders the same bytes as in a fresh process.
#[derive(Default)]
pub struct Loaded {
    phonemizer: Option<Arc<EnglishPhonemizer>>,
    voice: Option<(VoiceKey, Box<dyn Synthesizer>)>,
    /// What the voice lent to the script being prepared or rendered was loaded for.
    lent: Option<VoiceKey>,
}

/// What a voice was loaded for: the choice, and the options but the seed.
type VoiceKey = (VoiceChoice, VoiceOptions);

impl Loaded {
    /// Keep a rendered script's voice for the next one.
    pub fn keep(&mut self, p: Prepared) {
        if let Some(key) = self.lent.take() {
            self.voice = Some((key, p.voice.into_inner()));
        }
    }
}

/// [`prepare_script`], reusing what `loaded` holds where it fits.
pub fn prepare_script_with(
    env: &Env,
    args: &ScriptArgs,
    script: Script,
    loaded: &mut Loaded,
) -> anyhow::Result<Prepared> {
    let config = env.config()?;
    // What the script fixes itself (gaps, breaks, tail, events) must fit before the voice loads.
    script::render::check_plan(&script, &config.limits)?;
    let home = &env.home;
    let flags = Said {
        voice: args.voice.as_deref(),
        speaker: args.speaker.as_deref(),
        seed: args.seed,
        rig: args.rig.as_deref(),
        fps: args.fps,
        ..Said::default()
    };
    let Settings {
        choice,
        voice: mut options,
        rate,
        rig,
        fps,
        face_seed,
    } = Settings::resolve(
        &config,
        &[
            (Source::Flags, flags),
            (Source::Script, script_says(&script.defaults)),
        ],
    )?;
    options.threads = args.threads;
    // What the voice and the phonemizer will load, fetched first where missing (first use).
    let mut files = idol::tts::voice_files(home, &choice);
    files.extend(EnglishPhonemizer::files(home));
    crate::cli::wiring::ensure_assets(env, &files)?;
    let phonemizer = match &loaded.phonemizer {
        Some(p) => p.clone(),
        None => {
            let p = Arc::new(EnglishPhonemizer::load(home)?);
            loaded.phonemizer = Some(p.clone());
            p
        }
    };
    // The seed is not part of what was loaded: `from_voice` restarts the noise at it.
    let key = VoiceOptions {
        seed: 0,
        ..options.clone()
    };
    let key = (choice, key);
    let voice = match loaded.voice.take() {
        Some((k, v)) if k == key => v,
        _ => idol::tts::load_voice(home, &key.0, &options, phonemizer.clone())?,
    };
    loaded.lent = Some(key);
    let rig = Rig::find(&rig, Some(home.rigs_dir().as_path()))?;
    Ok(Prepared {
        voice: PiperLineVoice::from_voice(voice, options.seed),
        rate,
        seed: face_seed,
        script,
        rig,
        fps,
        phonemizer,
        budget: config.limits,
    })
}

/// Render a prepared script, `progress(lines done, lines)` after each line; the render's warnings go
/// to the log.
pub fn render_with(
    p: &mut Prepared,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<script::Performance> {
    let perf = render_lines(p, progress)?;
    for w in &perf.warnings {
        log::warn!("{w}");
    }
    Ok(perf)
}

/// Render a prepared script, with a progress bar unless `quiet`; the render's warnings go to stderr.
pub fn render(p: &mut Prepared, quiet: bool) -> anyhow::Result<script::Performance> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(p.script.lines.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} rendering [{bar:30}] line {pos}/{len} {elapsed}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    };
    let perf = render_lines(p, &mut |done, _total| bar.set_position(done as u64));
    bar.finish_and_clear();
    let perf = perf?;
    for w in &perf.warnings {
        eprintln!("warning: {w}");
    }
    Ok(perf)
}

/// The render itself; recorded lines without an alignment file get their mouth from the audio.
fn render_lines(
    p: &mut Prepared,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<script::Performance> {
    let mut lipsync = script::AudioLipSync::new(Some(p.phonemizer.clone()));
    Ok(script::render(
        &p.script,
        &mut p.voice,
        RenderOptions {
            rig: p.rig.clone(),
            fps: p.fps,
            seed: p.seed,
            rate: p.rate,
            lipsync: Some(&mut lipsync),
            progress: Some(progress),
            budget: p.budget,
        },
    )?)
}

/// Write a render's files into `out` whole, removing an output of an earlier render this one did
/// not make (frames.csv for a rig without ARKit channels).
pub fn write_outputs(
    out: &std::path::Path,
    files: &script::output::Files<'_>,
) -> anyhow::Result<Vec<PathBuf>> {
    let written =
        script::write_dir(out, files).with_context(|| format!("writing {}", out.display()))?;
    for name in script::output::FILES {
        if !files.iter().any(|(n, _)| *n == name) {
            let _ = std::fs::remove_file(out.join(name));
        }
    }
    Ok(written)
}

/// The renderer behind the server's `perform` message: the session's voice settings, rig and fps from
/// idol.toml (a script's voice, rig and fps are ignored live, as the session's stream is fixed), the
/// script's seed; its own copy of the voice, loaded on the first script.
pub fn server_renderer(env: &Env, config: &idol::config::Config) -> ScriptRenderer {
    let home = env.home.clone();
    let config_for_voice = config.clone();
    let budget = config.limits;
    let voice: Arc<parking_lot::Mutex<Option<PiperLineVoice>>> = Arc::default();
    ScriptRenderer::new(move |script: &Script| {
        // The session's stream is fixed: a script's voice, speaker, rig and fps are not heard live.
        let said = Said {
            voice: None,
            speaker: None,
            rig: None,
            fps: None,
            ..script_says(&script.defaults)
        };
        let settings = Settings::resolve(&config_for_voice, &[(Source::Script, said)])?;
        // The voice is loaded once, for every script after: its own pace stays idol.toml's, and each
        // script's lines are spoken at the script's rate (`RenderOptions::rate`).
        let options = VoiceOptions {
            length_scale: config_for_voice.voice.length_scale,
            ..settings.voice
        };
        let mut guard = voice.lock();
        if guard.is_none() {
            let ph = Arc::new(EnglishPhonemizer::load(&home)?);
            let choice = idol::perform::adapters::voice_choice(&home, &config_for_voice);
            let v = idol::tts::load_voice(&home, &choice, &options, ph)?;
            *guard = Some(PiperLineVoice::from_voice(v, options.seed));
        }
        let v = guard.as_mut().expect("loaded");
        v.reseed(options.seed);
        let rig = Rig::find(&settings.rig, Some(home.rigs_dir().as_path()))?;
        script::render(
            script,
            v,
            RenderOptions {
                rig,
                fps: settings.fps,
                seed: settings.face_seed,
                rate: settings.rate,
                lipsync: None,
                progress: None,
                budget,
            },
        )
        .map_err(Into::into)
    })
}

/// CPU time of this process so far (user + system), where the platform says.
pub fn cpu_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(p)?)
}

/// `idol render --queue`: read every script (each must parse here, so a typo is reported now and
/// not on a worker), then queue them.
pub fn submit(env: &Env, args: &RenderArgs, url: &str) -> anyhow::Result<ExitCode> {
    idol::config::check_nats_url(url).map_err(|m| anyhow::anyhow!("--queue {m}"))?;
    let mut scripts = vec![args.common.script.clone()];
    scripts.extend(args.more.iter().cloned());
    let several = scripts.len() > 1;
    let c = &args.common;
    let settings = JobSettings {
        voice: c.voice.clone(),
        speaker: c.speaker.clone(),
        rig: c.rig.clone(),
        fps: c.fps,
        seed: c.seed,
        threads: c.threads,
    };
    let config = env.config()?;
    let out = match &args.out {
        Some(o) => absolute(o)?,
        None => PathBuf::new(),
    };
    let mut jobs = vec![];
    for path in &scripts {
        let path = absolute(path)?;
        let text = idol::budget::read_text(&path, idol::budget::MAX_TEXT_FILE_BYTES)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let script = Script::parse(&text, &path, base)?;
        idol::script::render::check_plan(&script, &config.limits)?;
        let dir = if several {
            // `show.script.toml` renders into OUT/show.
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let name = name.trim_end_matches(".toml").trim_end_matches(".script");
            out.join(name)
        } else {
            out.clone()
        };
        let job = Job::new(path, text, dir, settings.clone());
        jobs.push(if args.store {
            job.into_store(idol::farm::OUTPUT_BUCKET)
        } else {
            job
        });
    }
    let rt = runtime()?;
    rt.block_on(async {
        let q = Queue::open(url, Duration::from_secs(args.ack_wait)).await?;
        for j in &jobs {
            q.submit(j).await?;
            match &j.store {
                Some(b) => println!("{} {} -> nats object store {b}", j.id, j.path.display()),
                None => println!("{} {} -> {}", j.id, j.path.display(), j.out.display()),
            }
        }
        anyhow::Ok(())
    })?;
    eprintln!(
        "queued {} job(s) on {url}; `idol worker --nats {url}` renders them, `idol jobs --nats {url}` shows them",
        jobs.len()
    );
    Ok(ExitCode::SUCCESS)
}
