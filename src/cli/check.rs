//! `idol check`: one table of what is configured and found.

use super::Env;
use idol::check::{self, Status};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn run(env: &Env, _args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = env.config()?;
    println!("idol home: {}", env.home.root().display());
    println!(
        "config:    {}{}",
        env.config_path.display(),
        if env.config_path.exists() {
            ""
        } else {
            " (absent: defaults)"
        }
    );
    let rows = check::check(&env.home, &config)?;
    let w = rows.iter().map(|r| r.item.len()).max().unwrap_or(4).max(4);
    let pw = rows
        .iter()
        .map(|r| env.rel(&r.path).len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:w$}  {:8}  {:pw$}  {:>9}  licence",
        "item", "status", "path", "size"
    );
    for r in &rows {
        let status = match &r.status {
            Status::Ok => "ok",
            Status::Missing => "MISSING",
            Status::Corrupt(_) => "CORRUPT",
            Status::Unused => "unused",
        };
        let size = r.size.map(human).unwrap_or_else(|| "-".into());
        println!(
            "{:w$}  {:8}  {:pw$}  {:>9}  {}",
            r.item,
            status,
            env.rel(&r.path),
            size,
            r.license
        );
    }
    languages(env, &config);
    let problems: Vec<_> = rows.iter().filter(|r| !r.fix.is_empty()).collect();
    if problems.is_empty() {
        println!("\nall present and verified");
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    for r in problems {
        if let Status::Corrupt(why) = &r.status {
            println!("{}: {why}", r.item);
        }
        println!("{}: {}", r.item, r.fix);
    }
    Ok(ExitCode::from(1))
}

/// Which languages the model writes, the voice speaks, and so replies are in.
fn languages(env: &Env, config: &idol::config::Config) {
    use idol::persona::lang::name;
    let names = |v: &[String]| {
        if v.is_empty() {
            "unknown".to_string()
        } else {
            v.iter()
                .map(|c| format!("{} ({c})", name(c)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let (model, from) = if !config.llm.languages.is_empty() {
        (config.llm.languages.clone(), "[llm] languages")
    } else if config.llm.backend == idol::config::LlmBackend::Local {
        let m = idol::fetch::model_languages(&env.home.path(&config.llm.model));
        if m.is_empty() {
            (vec!["en".into()], "not listed: English assumed")
        } else {
            (m, "models/manifest.toml")
        }
    } else {
        (vec![], "a server's model: set [llm] languages")
    };
    let voice = idol::tts::voice_languages(
        &env.home,
        &idol::perform::adapters::voice_choice(&env.home, config),
    );
    let policy = idol::perform::adapters::language_policy(&env.home, config);
    println!();
    println!("languages:");
    println!("  model writes  {} ({from})", names(&model));
    println!("  voice speaks  {}", names(&voice));
    println!(
        "  replies in    {}; a viewer in any other language is answered in {}",
        names(&policy.spoken),
        name(&policy.spoken[0])
    );
}
