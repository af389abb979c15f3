//! The live wiring several commands share: the real stages from idol.toml (`serve`, `chat
//! --speak`), the outputs `[sinks]` enables, playing finished speech through them (`say --play`,
//! `perform`), the viewer's options (`serve`, `relay`) and the host's voice (`serve` with `[mic]`).

use crate::cli::Env;
use anyhow::Context;
use idol::config::{Config, SinksConfig};
use idol::face::Frame;
use idol::face::Frames;
use idol::fetch::{MANIFESTS, Manifest, VIEWER_MANIFEST};
use idol::listen::host::{self, AudioInput, HostOptions, HostVoice};
use idol::perform::adapters;
use idol::perform::{PerformConfig, Stages};
use idol::server::ViewerOptions;
use idol::sink::live::LiveOutputs;
use idol::speech::Cue;
use idol::time::SampleTime;
use std::path::PathBuf;
use std::sync::Arc;

/// What the viewer page serves: the pinned modules of `viewer/manifest.toml` (the missing ones are
/// fetched first, like the stages' assets) and the `[viewer] avatar`, which must be a binary glTF
/// (a `.vrm` is one).
pub fn viewer_options(env: &Env, config: &Config) -> anyhow::Result<ViewerOptions> {
    let manifest = Manifest::in_effect(&env.home, VIEWER_MANIFEST)?;
    let root = env.home.path(MANIFESTS[VIEWER_MANIFEST].1);
    let vendor: Vec<(String, PathBuf)> = manifest
        .assets
        .into_iter()
        .map(|a| {
            let dest = root.join(&a.file);
            (a.file, dest)
        })
        .collect();
    let files: Vec<PathBuf> = vendor.iter().map(|(_, f)| f.clone()).collect();
    crate::cli::wiring::ensure_assets(env, &files)?;
    let avatar = match &config.viewer.avatar {
        None => None,
        Some(rel) => {
            let path = env.home.path(rel);
            let mut magic = [0u8; 4];
            std::fs::File::open(&path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "[viewer] avatar = {:?}: cannot read {} ({e}); paths are relative to the idol home",
                        rel.display(),
                        path.display()
                    )
                })?;
            if &magic != b"glTF" {
                anyhow::bail!(
                    "[viewer] avatar = {:?}: {} is not a binary glTF (a .vrm or .glb starts with `glTF`); export the avatar as GLB or VRM",
                    rel.display(),
                    path.display()
                );
            }
            Some(path)
        }
    };
    Ok(ViewerOptions { vendor, avatar })
}

/// Pacing from idol.toml (the persona's settings travel with its conversation in the stages).
pub fn perform_config(config: &Config) -> PerformConfig {
    PerformConfig {
        fps: config.face.fps,
        warm_up: true,
        budget: config.limits,
        ..PerformConfig::default()
    }
}

/// The outputs `sinks` enables, for a timeline at `rate` Hz and the live face's `rig`; `None` when it
/// enables nothing. With an audio device that does not exist (servers, CI) the paced null output
/// stands in with one warning.
pub fn live_outputs(
    env: &Env,
    sinks: &SinksConfig,
    rate: u32,
    rig: &str,
) -> anyhow::Result<Option<Arc<LiveOutputs>>> {
    if sinks.audio.is_none()
        && sinks.vmc.is_none()
        && sinks.vtube_studio.is_none()
        && sinks.livelink.is_none()
    {
        return Ok(None);
    }
    let o = LiveOutputs::from_config(sinks, env.home.root(), rate, rig)?;
    Ok(Some(Arc::new(o)))
}

/// The real stages from the config (see [`idol::perform::adapters::build_stages`]); the pinned
/// assets they load that are missing are fetched first ([`adapters::stage_files`]).
pub fn build_stages(env: &Env, config: &Config) -> anyhow::Result<Stages> {
    crate::cli::wiring::ensure_assets(env, &adapters::stage_files(&env.home, config))?;
    Ok(adapters::build_stages(&env.home, config)?)
}

/// The live voice and face from the config (see [`idol::perform::adapters::build_voice_face`]); the
/// pinned assets they load that are missing are fetched first ([`adapters::voice_face_files`]).
pub fn build_voice_face(env: &Env, config: &Config) -> anyhow::Result<adapters::VoiceAndFace> {
    crate::cli::wiring::ensure_assets(env, &adapters::voice_face_files(&env.home, config))?;
    Ok(adapters::build_voice_face(&env.home, config)?)
}

/// Play `pcm` (at `rate`) on the audio device and release `frames` (stamped from the audio's start) to
/// the face sinks `sinks` enables (VMC, VTube Studio) by the device's played-sample counter; returns
/// when all of it has been heard. `sound` plays on the device even when `[sinks.audio]` is not
/// configured (without it and without the section, a silent paced clock releases the frames); the
/// emotion and action `cues` go to the face sinks at their samples (VTube Studio's hotkeys and
/// expressions). Also used by `idol perform`.
pub fn play(
    env: &Env,
    sinks: &idol::config::SinksConfig,
    sound: bool,
    pcm: &[f32],
    rate: u32,
    frames: &Frames,
    cues: &[Cue],
) -> anyhow::Result<()> {
    let mut sinks = sinks.clone();
    if sound && sinks.audio.is_none() {
        sinks.audio = Some(idol::config::AudioConfig { device: None });
    }
    let out = live_outputs(env, &sinks, rate, frames.rig())?
        .context("internal error: no audio output")?;
    for o in out.describe() {
        eprintln!("playing: {o}");
    }
    // Start a little after now so the first samples are in the device ring before they are due.
    let start = out.clock().played() + SampleTime::from_millis(150, rate).get();
    out.audio(start, pcm);
    for c in cues {
        out.cue(Cue {
            at: start + c.at.get(),
            ..c.clone()
        });
    }
    let channels: Arc<[String]> = frames.channels().into();
    for f in frames.iter() {
        let mut s = Frame::from(&f);
        s.at = start + f.at.get();
        out.frame(channels.clone(), s);
    }
    out.wait_played(start + pcm.len() as u64);
    if out.late_samples() > 0 {
        log::warn!(
            "{} samples reached the device late and were skipped",
            out.late_samples()
        );
    }
    Ok(())
}

/// `[mic]` in `idol serve`: the host's voice into the performance.
pub fn start_host_voice(
    env: &Env,
    mic: &idol::config::MicConfig,
    opts: &HostOptions,
    handle: idol::perform::PerformHandle,
) -> anyhow::Result<HostVoice> {
    let input: Box<dyn AudioInput> = match &mic.file {
        Some(f) => Box::new(host::FileInput::open(&env.home.path(f), true)?),
        None => host::open_microphone(mic.device.as_deref())?,
    };
    Ok(HostVoice::start(
        opts,
        input,
        Box::new(host::PerformHost {
            handle,
            user: mic.user.clone(),
            barge_in: mic.barge_in,
        }),
    )?)
}
