//! The configured outputs as one bundle: what `idol serve`, `idol say --play` and `idol chat --speak`
//! attach to.
//!
//! Input: audio blocks and face frames stamped on the session timeline, either pushed directly
//! ([`LiveOutputs::audio`], [`LiveOutputs::frame`]) or as the live pipeline's events through
//! [`PerformOutputs`] (a [`crate::perform::Sink`]). Output: sound on the audio device, and frames to
//! the VMC receiver and VTube Studio, released by the device's played-sample [`Clock`] through a
//! [`GateRunner`], so the face the receivers show is the face of the sample being heard.
//!
//! The clock: an [`AudioOut`] always exists. With `[sinks.audio]` enabled it is the configured device
//! (or the paced null output with one warning when there is none); without, it is the paced null
//! output, silent, used only as the clock. The live pipeline runs its session timeline on the same
//! counter ([`crate::perform::PerformConfig::clock`]), so the stamps it puts on audio and frames are
//! positions of the device's playback: audio is pushed `lead` ahead and waits in the device ring,
//! frames wait in the gate until the counter reaches them.
//!
//! Threading: the bundle is `Send + Sync` and cheap to share in an `Arc`; pushes only send on
//! channels (the audio owner thread and the gate thread do the work), so the pipeline's conductor
//! never blocks on a sink. VTube Studio's connection runs on a small tokio runtime the bundle owns.

use super::audio::{AudioOptions, AudioOut, Backend, Clock};
use super::vmc::{VmcOptions, VmcSink};
use super::vts::{VtsOptions, VtsSink};
use super::{EyeGaze, FrameSink, GateRunner, SinkError, StampedFrame};
use crate::config::SinksConfig;
use crate::perform::{Event, PerformState};
use crate::time::SampleTime;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The audio device (or the null clock), the gate and the face sinks behind it.
pub struct LiveOutputs {
    // Field order is drop order: the gate stops feeding sinks before they and the runtime go.
    gate: GateRunner,
    audio: AudioOut,
    play_audio: bool,
    _runtime: Option<tokio::runtime::Runtime>,
    clock: Clock,
    names: Vec<String>,
}

impl LiveOutputs {
    /// Build what `[sinks]` enables for a timeline at `rate` Hz (the voice's rate). `home` resolves
    /// the VTube Studio token file; `face_rig` is the rig the live face solves (the one the sinks
    /// receive: a VMC sink configured for another rig gets a warning and this rig's channel names).
    pub fn from_config(
        cfg: &SinksConfig,
        home: &Path,
        rate: u32,
        face_rig: &str,
    ) -> Result<LiveOutputs, SinkError> {
        let mut names = vec![];
        let audio = match &cfg.audio {
            Some(a) => {
                let out = AudioOut::open(&AudioOptions::from_config(a, rate))?;
                names.push(match out.backend() {
                    Backend::Device(d) => format!("audio device {d:?}"),
                    _ => "audio (null output: no usable device)".to_string(),
                });
                out
            }
            None => AudioOut::null(rate)?,
        };
        let mut sinks: Vec<Box<dyn FrameSink>> = vec![];
        if let Some(v) = &cfg.vmc {
            if !v.rig.eq_ignore_ascii_case(face_rig) {
                log::warn!(
                    "sinks.vmc.rig is {:?} but the live face solves {face_rig:?}: the VMC receiver gets {face_rig} \
                     channel names (set [face] rig = {:?} for {} names)",
                    v.rig,
                    v.rig,
                    v.rig
                );
            }
            sinks.push(Box::new(VmcSink::new(VmcOptions::from_config(v, rate))?));
            names.push(format!("VMC to {} at {} Hz", v.target, v.rate));
        }
        let mut runtime = None;
        if let Some(v) = &cfg.vtube_studio {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("idol-vts")
                .enable_all()
                .build()
                .map_err(|e| {
                    SinkError::Audio(format!("could not start the VTube Studio task: {e}"))
                })?;
            sinks.push(Box::new(VtsSink::spawn(
                VtsOptions::from_config(v, home),
                rt.handle(),
            )));
            names.push(format!("VTube Studio at {}", v.url));
            runtime = Some(rt);
        }
        let play_audio = cfg.audio.is_some();
        Ok(LiveOutputs::assemble(
            audio, play_audio, sinks, runtime, names,
        ))
    }

    /// A bundle from parts: `audio` is the clock (and is played to when `play_audio`), `sinks`
    /// receive the frames the clock releases.
    pub fn new(audio: AudioOut, play_audio: bool, sinks: Vec<Box<dyn FrameSink>>) -> LiveOutputs {
        LiveOutputs::assemble(audio, play_audio, sinks, None, vec![])
    }

    fn assemble(
        audio: AudioOut,
        play_audio: bool,
        sinks: Vec<Box<dyn FrameSink>>,
        runtime: Option<tokio::runtime::Runtime>,
        names: Vec<String>,
    ) -> LiveOutputs {
        let clock = audio.clock();
        LiveOutputs {
            gate: GateRunner::spawn(clock.clone(), sinks),
            audio,
            play_audio,
            _runtime: runtime,
            clock,
            names,
        }
    }

    /// The master clock: timeline samples played so far.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// What is attached, in words (for the startup banner); empty when `[sinks]` enables nothing.
    pub fn describe(&self) -> &[String] {
        &self.names
    }

    /// Whether `[sinks]` enabled anything.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Queue audio that should sound from `start` on.
    pub fn audio(&self, start: SampleTime, pcm: &[f32]) {
        if self.play_audio {
            self.audio.push(start, pcm);
        }
    }

    /// Queue a frame, released to the face sinks when the clock reaches its stamp.
    pub fn frame(&self, channels: Arc<[String]>, frame: StampedFrame) {
        self.gate.push(channels, frame);
    }

    /// Drop queued audio and frames at or after `at` (a barge-in cut).
    pub fn cut(&self, at: SampleTime) {
        self.audio.cut(at);
        self.gate.cut(at);
    }

    /// Block until the clock has played up to `end` and the gate has had time to release the frames
    /// before it (sleeps; never spins).
    pub fn wait_played(&self, end: SampleTime) {
        while self.clock.played() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The gate wakes every 5 ms.
        std::thread::sleep(Duration::from_millis(20));
    }

    /// Audio samples dropped because they came after they should have been heard.
    pub fn late_samples(&self) -> u64 {
        self.audio.late_samples()
    }
}

/// The live pipeline's events into a [`LiveOutputs`]: audio to the device, frames to the gate, a
/// barge-in's cut to both. `channels` are the face rig's channel names in weight order.
pub struct PerformOutputs {
    out: Arc<LiveOutputs>,
    channels: Arc<[String]>,
}

impl PerformOutputs {
    pub fn new(out: Arc<LiveOutputs>, channels: &[String]) -> PerformOutputs {
        PerformOutputs {
            out,
            channels: channels.into(),
        }
    }
}

impl crate::perform::Sink for PerformOutputs {
    fn event(&mut self, event: &Event) {
        match event {
            Event::Audio(a) => self.out.audio(a.start, &a.pcm),
            Event::Frame(f) => {
                let e = f.frame.eyes;
                self.out.frame(
                    self.channels.clone(),
                    StampedFrame {
                        at: f.frame.at,
                        weights: f.frame.weights.clone(),
                        head: f.frame.head,
                        gaze: [
                            EyeGaze {
                                yaw: e[0],
                                pitch: e[1],
                            },
                            EyeGaze {
                                yaw: e[2],
                                pitch: e[3],
                            },
                        ],
                    },
                );
            }
            Event::State(s) if s.state == PerformState::Interrupted => self.out.cut(s.at),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perform::{AudioChunk, FaceFrame, FrameEvent, Sink, StateEvent};
    use parking_lot::Mutex;

    #[test]
    fn events_reach_the_face_sinks_by_the_played_counter() {
        let (audio, mut dev) = AudioOut::mock(1000, 1000).unwrap();
        let rec = Arc::new(Mutex::new(super::super::Recorder::default()));
        let out = Arc::new(LiveOutputs::new(audio, true, vec![Box::new(rec.clone())]));
        let mut sink = PerformOutputs::new(out.clone(), &["jawOpen".to_string()]);
        sink.event(&Event::Audio(AudioChunk {
            utterance: 1,
            start: SampleTime(0),
            pcm: vec![0.5; 400],
        }));
        for k in 1..4u64 {
            sink.event(&Event::Frame(FrameEvent {
                utterance: 1,
                frame: FaceFrame {
                    at: SampleTime(k * 100),
                    weights: vec![k as f32 / 4.0],
                    head: glam::Quat::IDENTITY,
                    eyes: [0.0, 0.1, 0.0, 0.1],
                    canon: None,
                },
            }));
        }
        // Nothing is released before the device plays.
        std::thread::sleep(Duration::from_millis(50));
        assert!(rec.lock().frames.is_empty());
        let heard = dev.pull(150);
        assert!(heard[..150].iter().all(|&x| x == 0.5));
        out.wait_played(SampleTime(150));
        let got: Vec<u64> = rec.lock().frames.iter().map(|f| f.at.get()).collect();
        assert_eq!(got, vec![100]);
        assert!((rec.lock().frames[0].gaze[0].pitch - 0.1).abs() < 1e-6);
        // A barge-in at 250 drops the frame at 300 and the audio after it.
        sink.event(&Event::State(StateEvent {
            state: PerformState::Interrupted,
            utterance: Some(1),
            at: SampleTime(250),
            heard: Some(String::new()),
        }));
        std::thread::sleep(Duration::from_millis(30));
        let rest = dev.pull(250);
        assert!(rest[..100].iter().all(|&x| x == 0.5));
        // (What was already in the device ring, at most its capacity of 128, still plays.)
        assert!(rest[130..].iter().all(|&x| x == 0.0));
        out.wait_played(SampleTime(400));
        let got: Vec<u64> = rec.lock().frames.iter().map(|f| f.at.get()).collect();
        assert_eq!(got, vec![100, 200]);
    }
}
