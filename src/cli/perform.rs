//! `idol perform SCRIPT`: the same scripted performance as `idol render`, live, paced by the wall
//! clock. The script is rendered first (the voice runs many times faster than real time), then its
//! audio chunks, frames, captions, cues, state changes and script events go out in sample order
//! through the live pipeline's `Sink` interface: events are printed to stdout as JSON lines (the
//! `events.jsonl` form), captions as they start; with `--play` the audio goes to the sound card, and
//! the face sinks idol.toml enables (VMC, VTube Studio) get the frames on the device's played-sample
//! clock (a silent paced clock without `--play` or `[sinks.audio]`).

use super::Env;
use super::wiring::script::{ScriptArgs, prepare, render};
use clap::Args;
use idol::perform::{Event, Sink};
use idol::script::live::{items, play};
use idol::script::output::event_json;
use idol::time::SampleTime;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct PerformArgs {
    #[command(flatten)]
    pub common: ScriptArgs,
    /// Play the audio on the default output device (or the one named by [sinks.audio] device).
    #[arg(long)]
    pub play: bool,
    /// How far ahead of the clock events are released, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub lead_ms: u64,
}

/// Prints captions to stdout as they start.
struct Captions;

impl Sink for Captions {
    fn event(&mut self, event: &Event) {
        if let Event::Caption(c) = event {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{}",
                serde_json::json!({"sample": c.range.start().get(), "type": "caption", "text": c.text})
            );
        }
    }
}

pub fn run(env: &Env, args: &PerformArgs) -> anyhow::Result<ExitCode> {
    let mut p = prepare(env, &args.common)?;
    let t0 = Instant::now();
    let perf = render(&mut p, true)?;
    eprintln!(
        "rendered {:.2} s in {:.2} s; performing live",
        perf.duration_secs(),
        t0.elapsed().as_secs_f64()
    );
    // The sound card (with --play) and the face sinks idol.toml enables (VMC, VTube Studio, Live Link) get the
    // performance on the device's played-sample clock, on a thread of their own; stdout gets the
    // events paced by the wall clock.
    let sinks_cfg = env.config()?.sinks.clone();
    let to_sinks = args.play
        || sinks_cfg.vmc.is_some()
        || sinks_cfg.vtube_studio.is_some()
        || sinks_cfg.livelink.is_some();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let device = to_sinks.then(|| {
            scope.spawn(|| {
                super::wiring::live::play(
                    env,
                    &sinks_cfg,
                    args.play,
                    &perf.pcm.to_vec(),
                    perf.rate,
                    &perf.frames,
                    &perf.cues,
                )
            })
        });
        let mut captions = Captions;
        let mut sinks: Vec<&mut dyn Sink> = vec![&mut captions];
        let list = items(&perf, (perf.rate / 50) as u64);
        let stop = AtomicBool::new(false);
        let rate = perf.rate;
        play(
            &list,
            rate,
            SampleTime(perf.pcm.len() as u64),
            Duration::from_millis(args.lead_ms),
            &mut sinks,
            &mut |e| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", event_json(e, rate));
            },
            &stop,
        );
        if let Some(d) = device {
            d.join()
                .map_err(|_| anyhow::anyhow!("the audio/sink thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
