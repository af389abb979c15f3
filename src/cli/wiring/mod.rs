//! The room for what several commands share (ripgrep keeps its `HiArgs` apart the same way): each
//! command's file parses its own flags and prints; what two commands both need lives here, so no
//! command reaches into another.
//!
//! - [`script`]: script settings, loading and rendering, and render-farm jobs.
//! - [`live`]: the live stages, the outputs, the viewer's options and the host's voice.
//! - Here: first-use fetching ([`ensure_assets`]).

pub mod live;
pub mod script;
pub mod settings;

use crate::cli::Env;
use idol::fetch::{FetchError, Fetcher, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

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
pub fn in_home(env: &Env, e: FetchError) -> anyhow::Error {
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
