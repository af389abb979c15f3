//! `idol devices`: list the audio output devices `[sinks.audio] device` can name.

use anyhow::Result;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DevicesArgs {}

pub fn run(_args: &DevicesArgs) -> Result<()> {
    let devices = idol::sink::audio::list_devices()?;
    println!("audio host: {}", idol::sink::audio::host_name());
    if devices.is_empty() {
        println!(
            "no audio output devices found: `say --play` and live playback will use a paced null output (nothing is heard, the clock still runs)"
        );
        return Ok(());
    }
    for (name, config, is_default) in devices {
        let mark = if is_default { "*" } else { " " };
        println!("{mark} {name}  ({config})");
    }
    println!("\n* = default. Put a name in idol.toml: [sinks.audio] device = \"NAME\"");
    Ok(())
}
