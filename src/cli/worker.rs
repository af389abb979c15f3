//! The render farm's commands (`docs/scale.md`): `idol render --queue URL SCRIPT… --out DIR`
//! submits scripts as jobs, `idol worker --nats URL` renders them exactly as a local `idol render`
//! with the same settings does (same seed, same bytes), `idol jobs --nats URL` lists them. The
//! queue itself is [`idol::farm`].

use super::Env;
use super::wiring::script::ScriptArgs;
use super::wiring::script::{Loaded, runtime};
use idol::farm::{Job, JobState, Outcome, Queue};
use idol::script::Script;
use std::path::Path;
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
    /// Fetch this job's outputs from the object store (a job queued with `render --store`) into
    /// --out.
    #[arg(long, value_name = "JOB", requires = "out")]
    pub get: Option<String>,
    /// With --get: the folder to write the files into (created if missing).
    #[arg(long, requires = "get")]
    pub out: Option<std::path::PathBuf>,
}

/// Render one job as `idol render` would: the same settings, the same files, written whole.
/// The voice and phonemizer stay loaded from one job to the next (`loaded`).
fn render_job(
    env: &Env,
    job: &Job,
    loaded: &mut Loaded,
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
    let mut p = super::wiring::script::prepare_script_with(env, &args, script, loaded)?;
    let lines = p.script.lines.len();
    progress(0, lines);
    let perf = super::wiring::script::render_with(&mut p, progress);
    loaded.keep(p);
    let perf = perf?;
    let (files, skipped) = idol::script::output::files(&perf)?;
    if let Some(s) = skipped {
        log::warn!("{}: {s}", job.path.display());
    }
    super::wiring::script::write_outputs(&job.out, &files)?;
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
    let mut loaded = Loaded::default();
    let outcomes = rt.block_on(async {
        let q = Queue::open(&args.nats, Duration::from_secs(30)).await?;
        eprintln!("{name}: taking jobs from {}", args.nats);
        let outcomes = q
            .work(&name, args.jobs, |job, progress| {
                eprintln!("{name}: rendering {} ({})", job.id, job.path.display());
                render_job(env, job, &mut loaded, progress).map_err(|e| super::report(&e))
            })
            .await?;
        anyhow::Ok(outcomes)
    })?;
    for o in &outcomes {
        match o {
            Outcome::Done(s) => match &s.store {
                Some(b) => println!("done {} nats object store {b}", s.id),
                None => println!("done {} {}", s.id, s.out.display()),
            },
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
    if let (Some(id), Some(out)) = (&args.get, &args.out) {
        let files = rt.block_on(async {
            let q = Queue::open(&args.nats, Duration::from_secs(30)).await?;
            anyhow::Ok(q.fetch(id, out).await?)
        })?;
        for f in &files {
            println!("{}", out.join(f).display());
        }
        return Ok(ExitCode::SUCCESS);
    }
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
