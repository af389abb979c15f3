//! `idol rigs`: list the rigs (built-in and under the idol home's `rigs/`) and their channels.

use super::Env;
use anyhow::Result;
use clap::Args;
use idol::face::{Rig, canon, rig::BUILTIN};
use std::process::ExitCode;

#[derive(Debug, Clone, Args)]
pub struct RigsArgs {
    /// Show only this rig (a name or a path to a .toml), with each channel's sources, range and curve.
    pub name: Option<String>,
    /// List the canonical channels that rig files can map from.
    #[arg(long)]
    pub canonical: bool,
}

pub fn run(env: &Env, args: &RigsArgs) -> Result<ExitCode> {
    let home = &env.home;
    if args.canonical {
        for i in 0..canon::COUNT {
            println!("{}", canon::name(i));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let dir = home.path("rigs");
    if let Some(name) = &args.name {
        let rig = Rig::find(name, Some(dir.as_path()))?;
        println!("{} ({} channels): {}", rig.name, rig.len(), rig.description);
        for c in &rig.channels {
            let from: Vec<String> = c
                .sources
                .iter()
                .map(|(i, w)| format!("{}*{}", w, canon::name(*i)))
                .collect();
            println!(
                "  {:<22} = {}{}  range [{}, {}]  {}",
                c.name,
                if c.offset != 0.0 {
                    format!("{} + ", c.offset)
                } else {
                    String::new()
                },
                from.join(" + "),
                c.min,
                c.max,
                c.curve.name()
            );
        }
        for e in &rig.expressions {
            println!("  expression {}", e.name);
        }
        // What the face animates on this rig: the built-in catalogue with the rig's own entries.
        let cat = idol::face::gesture::Catalogue::builtin().with_rig(&rig);
        let (emotions, actions) = cat.names();
        println!("  emotions [tag]: {}", emotions.join(", "));
        println!("  actions <tag>:  {}", actions.join(", "));
        return Ok(ExitCode::SUCCESS);
    }
    let mut names: Vec<(String, Rig)> = Vec::new();
    for (n, _) in BUILTIN {
        names.push((format!("{n} (built-in)"), Rig::builtin(n)?));
    }
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let mut paths: Vec<_> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            // The repository's own rigs/ holds the built-in files: list those once.
            let same_as_builtin = BUILTIN.iter().any(|(n, src)| {
                p.file_stem().is_some_and(|s| s == *n)
                    && std::fs::read_to_string(&p).ok().as_deref() == Some(*src)
            });
            if same_as_builtin {
                continue;
            }
            let rig = Rig::load(&p)?;
            names.push((p.display().to_string(), rig));
        }
    }
    for (label, rig) in names {
        println!("{} — {} channels — {}", label, rig.len(), rig.description);
        let list: Vec<&str> = rig.channel_names().collect();
        println!("  {}", list.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}
