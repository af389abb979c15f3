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
//! Rigs: each face sink gets frames in its own rig (`[sinks.vmc] rig`, `[sinks.vtube_studio] rig`;
//! VSeeFace wants VRM names, VTube Studio maps ARKit or Live2D parameters best). Frames that carry
//! their canonical vector ([`crate::perform::Frame::canon`], as the live face's do) are
//! retargeted once per distinct sink rig; sinks on the same rig share one gate thread. Frames without
//! it reach every sink in the face's own rig.
//!
//! Threading: the bundle is `Send + Sync` and cheap to share in an `Arc`; pushes only send on
//! channels (the audio owner thread and the gate thread do the work), so the pipeline's conductor
//! never blocks on a sink. VTube Studio's connection runs on a small tokio runtime the bundle owns.

use super::audio::{AudioOptions, AudioOut, Backend, Clock};
use super::livelink::{LiveLinkOptions, LiveLinkSink};
use super::vmc::{VmcOptions, VmcSink};
use super::vts::{VtsOptions, VtsSink};
use super::{FrameSink, GateRunner, SinkError};
use crate::config::SinksConfig;
use crate::face::{Frame, Retargets, Rig};
use crate::perform::{Event, PerformState};
use crate::time::SampleTime;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The audio device (or the null clock), the gate and the face sinks behind it.
pub struct LiveOutputs {
    // Field order is drop order: the gates stop feeding sinks before they and the runtime go.
    gates: Vec<RigGate>,
    audio: AudioOut,
    play_audio: bool,
    _runtime: Option<tokio::runtime::Runtime>,
    clock: Clock,
    names: Vec<String>,
}

/// A gate and the sinks behind it, all on one rig: `None` for the face's own rig.
struct RigGate {
    rig: Option<(Rig, Arc<[String]>)>,
    gate: GateRunner,
}

impl LiveOutputs {
    /// Build what `[sinks]` enables for a timeline at `rate` Hz (the voice's rate). `home` resolves
    /// the VTube Studio token file and rig names (`home/rigs/NAME.toml`, else a built-in);
    /// `face_rig` is the rig the live face solves. Each sink receives its configured rig, retargeted
    /// from the frames' canonical vectors (frames without them arrive in `face_rig`).
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
        // (rig name, sinks on it); the face's own rig is "".
        let mut groups: Vec<(String, Vec<Box<dyn FrameSink>>)> = vec![];
        let mut add = |rig: &str, sink: Box<dyn FrameSink>| {
            let rig = if rig == face_rig { "" } else { rig };
            match groups.iter_mut().find(|g| g.0 == rig) {
                Some(g) => g.1.push(sink),
                None => groups.push((rig.to_string(), vec![sink])),
            }
        };
        if let Some(v) = &cfg.vmc {
            add(
                &v.rig,
                Box::new(VmcSink::new(VmcOptions::from_config(v, rate))?),
            );
            names.push(format!(
                "VMC to {} at {} Hz, rig {}",
                v.target, v.rate, v.rig
            ));
        }
        if let Some(l) = &cfg.livelink {
            add(
                "arkit52",
                Box::new(LiveLinkSink::new(LiveLinkOptions::from_config(l, rate))?),
            );
            names.push(format!(
                "Live Link Face to {} at {} Hz, subject {:?}",
                l.addr, l.rate, l.subject
            ));
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
            let rig = v.rig.as_deref().unwrap_or(face_rig);
            add(
                rig,
                Box::new(VtsSink::spawn(
                    VtsOptions::from_config(v, home),
                    rt.handle(),
                )),
            );
            names.push(format!("VTube Studio at {}, rig {rig}", v.url));
            runtime = Some(rt);
        }
        let clock = audio.clock();
        let rigs_dir = home.join("rigs");
        let mut gates = vec![];
        for (rig, sinks) in groups {
            let rig = if rig.is_empty() {
                None
            } else {
                let r = Rig::find(&rig, Some(rigs_dir.as_path()))?;
                let names: Arc<[String]> = r.channel_names().map(str::to_string).collect();
                Some((r, names))
            };
            gates.push(RigGate {
                rig,
                gate: GateRunner::spawn(clock.clone(), sinks),
            });
        }
        let play_audio = cfg.audio.is_some();
        Ok(LiveOutputs {
            gates,
            audio,
            play_audio,
            _runtime: runtime,
            clock,
            names,
        })
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
            gates: vec![RigGate {
                rig: None,
                gate: GateRunner::spawn(clock.clone(), sinks),
            }],
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

    /// Queue a frame, released to the face sinks when the clock reaches its stamp. Sinks on the face's
    /// own rig get it as it is (in `channels`); sinks configured for another rig get it retargeted to
    /// theirs from its canonical vector (once per rig), or as it is when it has none.
    pub fn frame(&self, channels: Arc<[String]>, frame: Frame) {
        let mut retargets = Retargets::new(frame.canon.as_deref());
        let mut outs = Vec::with_capacity(self.gates.len());
        for g in &self.gates {
            outs.push(match &g.rig {
                Some((rig, names)) => retargets.get(rig).map(|w| (names.clone(), w.clone())),
                None => None,
            });
        }
        let n = self.gates.len();
        let mut frame = Some(frame);
        for (i, (g, out)) in self.gates.iter().zip(outs).enumerate() {
            let f = if i + 1 == n {
                frame.take().expect("one frame per gate")
            } else {
                frame.clone().expect("one frame per gate")
            };
            match out {
                Some((names, weights)) => g.gate.push(names, Frame { weights, ..f }),
                None => g.gate.push(channels.clone(), f),
            }
        }
    }

    /// Queue an emotion or action cue, released to every face sink when the clock reaches its
    /// sample (VTube Studio triggers its hotkeys and expressions then).
    pub fn cue(&self, cue: crate::speech::Cue) {
        for g in &self.gates {
            g.gate.push_cue(cue.clone());
        }
    }

    /// Drop queued audio and frames at or after `at` (a barge-in cut).
    pub fn cut(&self, at: SampleTime) {
        self.audio.cut(at);
        for g in &self.gates {
            g.gate.cut(at);
        }
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

/// The live pipeline's events into a [`LiveOutputs`]: audio to the device, frames and cues to the
/// gate, a barge-in's cut to both. `channels` are the face rig's channel names in weight order.
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
            Event::Frame(f) => self.out.frame(self.channels.clone(), f.frame.clone()),
            Event::Cue(c) => self.out.cue(c.cue.clone()),
            Event::State(s) if s.state == PerformState::Interrupted => self.out.cut(s.at),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::{EyeGaze, MorphWeights, canon};
    use crate::perform::{AudioChunk, FrameEvent, Sink, StateEvent};
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
                frame: Frame::new(
                    SampleTime(k * 100),
                    MorphWeights::unit(vec![k as f32 / 4.0]).unwrap(),
                    glam::Quat::IDENTITY,
                    [EyeGaze {
                        yaw: 0.0,
                        pitch: 0.1,
                    }; 2],
                ),
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

    #[test]
    fn sinks_on_another_rig_get_frames_retargeted_from_the_canonical_vector() {
        let (audio, mut dev) = AudioOut::mock(1000, 1000).unwrap();
        let same = Arc::new(Mutex::new(super::super::Recorder::default()));
        let other = Arc::new(Mutex::new(super::super::Recorder::default()));
        let clock = audio.clock();
        let vrm = Rig::builtin("vrm").unwrap();
        let names: Arc<[String]> = vrm.channel_names().map(str::to_string).collect();
        let out = Arc::new(LiveOutputs {
            gates: vec![
                RigGate {
                    rig: None,
                    gate: GateRunner::spawn(clock.clone(), vec![Box::new(same.clone())]),
                },
                RigGate {
                    rig: Some((vrm.clone(), names)),
                    gate: GateRunner::spawn(clock.clone(), vec![Box::new(other.clone())]),
                },
            ],
            audio,
            play_audio: true,
            _runtime: None,
            clock,
            names: vec![],
        });
        let arkit = Rig::builtin("arkit52").unwrap();
        let mut c = Box::new([0.0f32; canon::COUNT]);
        c[canon::index("viseme_aa").unwrap()] = 0.7;
        c[canon::ak::jawOpen] = 0.5;
        let weights = arkit.retargeted(&c);
        let mut sink = PerformOutputs::new(
            out.clone(),
            &arkit
                .channel_names()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        );
        sink.event(&Event::Audio(AudioChunk {
            utterance: 1,
            start: SampleTime(0),
            pcm: vec![0.5; 200],
        }));
        sink.event(&Event::Frame(FrameEvent {
            utterance: 1,
            frame: Frame {
                canon: Some(c.clone()),
                ..Frame::new(
                    SampleTime(100),
                    weights.clone(),
                    glam::Quat::IDENTITY,
                    [EyeGaze::default(); 2],
                )
            },
        }));
        std::thread::sleep(Duration::from_millis(30));
        dev.pull(200);
        out.wait_played(SampleTime(200));
        assert_eq!(same.lock().frames[0].weights, weights);
        let want = vrm.retargeted(&c);
        assert_eq!(other.lock().frames[0].weights, want);
        assert!(want[vrm.channel_index("aa").unwrap()] >= 0.7);
    }
}
