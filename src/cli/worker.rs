//! The render farm's commands (`docs/scale.md`): `idol render --queue URL SCRIPT… --out DIR`
//! submits scripts as jobs, `idol worker --nats URL` renders them exactly as a local `idol render`
//! with the same settings does (same seed, same bytes), `idol jobs --nats URL` lists them. The
//! queue itself is [`idol::farm`].

use super::Env;
use super::render::{RenderArgs, ScriptArgs};
use idol::farm::{Job, JobSettings, JobState, Outcome, Queue};
use idol::script::Script;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The NATS server (with JetStream) holding the render queue.
    #[arg(long, value_name = "nats://HOST:PORT")]
    pub nats: String,
    /// This worker's name in job statuses (default: worker-<process id>).
    #[arg(long)]
    pub name: Option<String>,
    /// Stop after this many jobs (default: run until stopped).
    #[arg(long)]
    pub jobs: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// The NATS server (with JetStream) holding the render queue.
    #[arg(long, value_name = "nats://HOST:PORT")]
    pub nats: String,
    /// One JSON object per job instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
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
    let out = absolute(&args.out)?;
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
        jobs.push(Job::new(path, text, dir, settings.clone()));
    }
    let rt = runtime()?;
    rt.block_on(async {
        let q = Queue::open(url, Duration::from_secs(args.ack_wait)).await?;
        for j in &jobs {
            q.submit(j).await?;
            println!("{} {} -> {}", j.id, j.path.display(), j.out.display());
        }
        anyhow::Ok(())
    })?;
    eprintln!(
        "queued {} job(s) on {url}; `idol worker --nats {url}` renders them, `idol jobs --nats {url}` shows them",
        jobs.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Render one job as `idol render` would: the same settings, the same files, written whole.
fn render_job(
    env: &Env,
    job: &Job,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Vec<String>> {
    let s = &job.settings;
    let args = ScriptArgs {
        script: job.path.clone(),
        voice: s.voice.clone(),
        speaker: s.speaker.clone(),
        rig: s.rig.clone(),
        fps: s.fps,
        seed: s.seed,
        threads: s.threads.max(1),
    };
    let base = job.path.parent().unwrap_or(Path::new("."));
    let script = Script::parse(&job.script, &job.path, base)?;
    idol::script::render::check_plan(&script, &env.config()?.limits)?;
    let mut p = super::render::prepare_script(env, &args, script)?;
    let lines = p.script.lines.len();
    progress(0, lines);
    let perf = super::render::render_with(&mut p, progress)?;
    let (files, skipped) = idol::script::output::files(&perf)?;
    if let Some(s) = skipped {
        log::warn!("{}: {s}", job.path.display());
    }
    super::render::write_outputs(&job.out, &files)?;
    Ok(files.iter().map(|(n, _)| n.to_string()).collect())
}

pub fn worker(env: &Env, args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    super::init_logger();
    idol::config::check_nats_url(&args.nats).map_err(|m| anyhow::anyhow!("--nats {m}"))?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let rt = runtime()?;
    let outcomes = rt.block_on(async {
        let q = Queue::open(&args.nats, Duration::from_secs(30)).await?;
        eprintln!("{name}: taking jobs from {}", args.nats);
        let outcomes = q
            .work(&name, args.jobs, |job, progress| {
                eprintln!("{name}: rendering {} ({})", job.id, job.path.display());
                render_job(env, job, progress).map_err(|e| super::report(&e))
            })
            .await?;
        anyhow::Ok(outcomes)
    })?;
    for o in &outcomes {
        match o {
            Outcome::Done(s) => println!("done {} {}", s.id, s.out.display()),
            Outcome::Failed(s) => println!(
                "failed {} {}: {}",
                s.id,
                s.path.display(),
                s.error.as_deref().unwrap_or("")
            ),
            Outcome::AlreadyDone(id) => println!("already done {id}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn jobs(_env: &Env, args: &JobsArgs) -> anyhow::Result<ExitCode> {
    idol::config::check_nats_url(&args.nats).map_err(|m| anyhow::anyhow!("--nats {m}"))?;
    let rt = runtime()?;
    let mut list = rt.block_on(async {
        let q = Queue::open(&args.nats, Duration::from_secs(30)).await?;
        anyhow::Ok(q.statuses().await?)
    })?;
    list.sort_by(|a, b| a.path.cmp(&b.path).then(a.id.cmp(&b.id)));
    if args.json {
        for s in &list {
            println!("{}", serde_json::to_string(s)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let count = |st: JobState| list.iter().filter(|s| s.state == st).count();
    println!(
        "{} jobs: {} queued, {} rendering, {} done, {} failed",
        list.len(),
        count(JobState::Queued),
        count(JobState::Rendering),
        count(JobState::Done),
        count(JobState::Failed)
    );
    for s in &list {
        let state = serde_json::to_value(s.state)?;
        println!(
            "{}  {:<9} {:<14} tries {}  {}{}",
            s.id,
            state.as_str().unwrap_or(""),
            s.worker.as_deref().unwrap_or("-"),
            s.attempts,
            s.path.display(),
            s.error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
