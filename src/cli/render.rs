//! `idol render SCRIPT --out DIR`: a scripted performance (`docs/scripts.md`) rendered offline with
//! the real voice and face into `DIR/performance.wav`, `frames.jsonl`, `frames.csv` (Live Link Face),
//! `captions.srt`, `captions.vtt` and `events.jsonl`. With a seed the files are byte-identical from
//! run to run. Everything is rendered in memory and written into a temporary folder beside DIR, then
//! moved in: a render that fails leaves no partial output.

use super::Env;
use super::wiring::script::{RenderArgs, cpu_time, prepare, render, write_outputs};
use idol::script::{self};
use std::process::ExitCode;
use std::time::Instant;

pub fn run(env: &Env, args: &RenderArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.queue {
        return super::wiring::script::submit(env, args, url);
    }
    if !args.more.is_empty() {
        anyhow::bail!(
            "idol render takes one script here (or several with --queue): render {} on its own",
            args.more[0].display()
        );
    }
    let t0 = Instant::now();
    let mut p = prepare(env, &args.common)?;
    let t_load = t0.elapsed();
    let t1 = Instant::now();
    let cpu0 = cpu_time();
    let perf = render(&mut p, args.quiet)?;
    let (files, skipped) = script::output::files(&perf)?;
    if let Some(s) = skipped {
        eprintln!("warning: {s}");
    }
    let wall = t1.elapsed().as_secs_f64();
    let out = args
        .out
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("--store goes with --queue; here give --out DIR"))?;
    let written = write_outputs(out, &files)?;
    let dur = perf.duration_secs();
    let cpu = cpu_time().map(|c| c - cpu0.unwrap_or(0.0));
    eprintln!(
        "rendered {:.2} s ({} lines, {} frames at {} fps, rig {}) in {:.2} s: {:.1}x faster than real time{} (voice load {:.2} s)",
        dur,
        perf.lines.len(),
        perf.frames.len(),
        perf.fps,
        perf.frames.rig(),
        wall,
        dur / wall.max(1e-9),
        cpu.map(|c| format!(" ({c:.2} s CPU, {:.1}x)", dur / c.max(1e-9)))
            .unwrap_or_default(),
        t_load.as_secs_f64(),
    );
    for w in written {
        println!("{}", w.display());
    }
    Ok(ExitCode::SUCCESS)
}
