//! sink: where frames and audio leave the process for the tools people already run.
//!
//! Stage: after perform. Input: blendshape frames on the session timeline (a [`FrameRef`] or an owned
//! [`Frame`], with the rig's channel names in weight order) and audio blocks
//! `(start: SampleTime, &[f32])` (mono f32 PCM at the timeline rate, e.g. 22050 Hz for the default
//! voice). Output: packets to a VMC receiver ([`vmc`], OSC over UDP), parameter injections to VTube
//! Studio ([`vts`], WebSocket), Live Link Face packets to Unreal ([`livelink`], UDP), and sound on the local audio device ([`audio`], cpal).
//!
//! The one clock: the audio device's played-sample counter ([`audio::Clock`]) is the master clock of
//! live playback. Frames wait in a [`FrameGate`] until the counter reaches their stamp, so the face
//! the VMC receiver or VTube Studio shows matches what is heard. Without a sound card the audio sink
//! falls back to a paced null output that advances the same counter in real time.
//!
//! Rates: each face sink has its own rate (VMC 60 Hz, VTube Studio 30 Hz by default), independent of
//! the solver's fps. [`Resampler`] turns frames into ticks of the sink's rate by their sample stamps
//! (linear weights, slerped head), never by wall time.
//!
//! Attached: [`live::LiveOutputs`] bundles what `[sinks]` in idol.toml enables (device or null clock,
//! gate, VMC, VTube Studio); `idol serve` feeds it the live pipeline's events, `idol say --play` and
//! `idol chat --speak` their speech.
//!
//! Threading: [`FrameSink`]s are `Send` and called from one thread at a time (the gate's). The VMC
//! sink sends on a std UDP socket from that thread; the VTube Studio sink hands the latest values to
//! its own tokio task; the audio sink owns a thread per stream (see [`audio`]).
//!
//! Live Link Face ([`livelink`]): the packets Epic's iPhone app sends Unreal's Live Link (UDP 11111),
//! from the arkit52 rig.

pub mod audio;
pub mod live;
pub mod livelink;
pub mod vmc;
pub mod vts;

use crate::face::{EyeGaze, Frame, FrameRef, MorphWeights};
use crate::time::SampleTime;
use glam::Quat;
use std::collections::VecDeque;

/// Errors of the sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("network error talking to {target}: {error}")]
    Net {
        target: String,
        error: std::io::Error,
    },
    #[error("could not encode an OSC packet: {0}")]
    Osc(String),
    #[error("frame has {got} weights but {expected} channel names were given")]
    Channels { expected: usize, got: usize },
    #[error("sink rate must be positive (got 0)")]
    ZeroRate,
    #[error(
        "the VTube Studio token file {path} could not be written: {error}; check that its folder is writable"
    )]
    TokenFile {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("audio device: {0}")]
    Audio(String),
    #[error("the sink has stopped")]
    Closed,
    #[error("sink rig: {0}")]
    Rig(crate::face::RigError),
}

// By hand, not `#[from]`: that would also make the rig error the `source()`, which the text above
// already quotes (a chain printed in full would say it twice).
impl From<crate::face::RigError> for SinkError {
    fn from(e: crate::face::RigError) -> Self {
        SinkError::Rig(e)
    }
}

/// Something that takes face frames: frames come in stamp order, `channels` names the weights.
pub trait FrameSink: Send {
    /// One frame. A sink with its own rate resamples (see [`Resampler`]), so frames may come at any fps.
    fn frame(&mut self, channels: &[String], frame: &FrameRef<'_>) -> Result<(), SinkError>;

    /// Called when no frame has come for a while (the idol is idle). Sinks whose receiver forgets
    /// values keep them alive here; the default does nothing.
    fn idle(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// An emotion or action cue, when the clock reaches its sample (before the frames stamped at or
    /// after it). Sinks that trigger the receiver's own animations (VTube Studio hotkeys and
    /// expressions) act here; the default does nothing.
    fn cue(&mut self, cue: &crate::speech::Cue) -> Result<(), SinkError> {
        let _ = cue;
        Ok(())
    }
}

/// Frames at any fps in, ticks at `out_rate` Hz out, by sample stamps.
///
/// Tick `k` lies at sample `round(k * rate / out_rate)` of the session timeline. A tick between two
/// frames gets their linear blend (head: slerp, gaze: lerp); a tick exactly on a frame gets the frame.
/// A tick is produced when the first frame at or after it arrives, so the output lags the input by at
/// most one input frame. Across a gap longer than `max_gap` samples (a pause between segments) nothing
/// is interpolated: ticks restart at the first frame after the gap.
#[derive(Debug, Clone)]
pub struct Resampler {
    rate: u32,
    out_rate: u32,
    max_gap: u64,
    next_tick: u64,
    prev: Option<Frame>,
    scratch: Frame,
}

impl Resampler {
    /// `rate`: the timeline's sample rate; `out_rate`: the sink's ticks per second.
    pub fn new(rate: u32, out_rate: u32) -> Result<Resampler, SinkError> {
        if rate == 0 || out_rate == 0 {
            return Err(SinkError::ZeroRate);
        }
        Ok(Resampler {
            rate,
            out_rate,
            max_gap: rate as u64 / 4,
            next_tick: 0,
            prev: None,
            scratch: Frame::new(
                SampleTime::ZERO,
                MorphWeights::default(),
                Quat::IDENTITY,
                [EyeGaze::default(); 2],
            ),
        })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn out_rate(&self) -> u32 {
        self.out_rate
    }

    fn tick_at(&self, k: u64) -> u64 {
        SampleTime::frame_offset(k, self.rate, self.out_rate)
    }

    /// The first tick index whose sample is at or after `s`.
    fn first_tick_at_or_after(&self, s: u64) -> u64 {
        // k >= s * out_rate / rate, then correct for rounding.
        let mut k = (s as u128 * self.out_rate as u128 / self.rate as u128) as u64;
        while k > 0 && self.tick_at(k - 1) >= s {
            k -= 1;
        }
        while self.tick_at(k) < s {
            k += 1;
        }
        k
    }

    /// Feed one frame; `emit` gets every tick that is now complete, in order.
    pub fn push(&mut self, frame: &FrameRef<'_>, mut emit: impl FnMut(&FrameRef<'_>)) {
        let s1 = frame.at.get();
        let restart = match &self.prev {
            None => true,
            Some(p) => s1 <= p.at.get() || s1 - p.at.get() > self.max_gap,
        };
        if restart {
            self.next_tick = self.first_tick_at_or_after(s1);
        } else if let Some(prev) = &self.prev {
            let s0 = prev.at.get();
            while self.tick_at(self.next_tick) < s1 {
                let t = self.tick_at(self.next_tick);
                let a = (t - s0) as f32 / (s1 - s0) as f32;
                blend(prev, frame, a, t, &mut self.scratch);
                emit(&self.scratch.as_ref());
                self.next_tick += 1;
            }
        }
        if self.tick_at(self.next_tick) == s1 {
            emit(frame);
            self.next_tick += 1;
        }
        match &mut self.prev {
            Some(p) => p.set_from(frame),
            None => self.prev = Some(Frame::from(frame)),
        }
    }

    /// Forget the last frame (e.g. after a barge-in cut): the next frame restarts the ticks.
    pub fn reset(&mut self) {
        self.prev = None;
    }

    /// The last frame seen, if any.
    pub fn last(&self) -> Option<&Frame> {
        self.prev.as_ref()
    }
}

fn blend(a: &Frame, b: &FrameRef<'_>, t: f32, at: u64, out: &mut Frame) {
    out.at = SampleTime(at);
    out.weights.set_between(&a.weights, b.weights, t);
    out.head = a.head.slerp(b.head, t);
    for e in 0..2 {
        out.gaze[e] = EyeGaze {
            yaw: a.gaze[e].yaw + (b.gaze[e].yaw - a.gaze[e].yaw) * t,
            pitch: a.gaze[e].pitch + (b.gaze[e].pitch - a.gaze[e].pitch) * t,
        };
    }
}

/// Holds frames until the clock reaches their stamp.
///
/// Frames are pushed in stamp order as soon as the face solver makes them; [`FrameGate::release`]
/// hands out, in order, every frame whose stamp is at or before `played` (the audio device's
/// played-sample counter), so sinks show the face of the sample being heard.
#[derive(Debug, Default)]
pub struct FrameGate {
    queue: VecDeque<Frame>,
}

impl FrameGate {
    pub fn new() -> FrameGate {
        FrameGate::default()
    }

    pub fn push(&mut self, frame: Frame) {
        self.queue.push_back(frame);
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The stamp of the next frame to be released.
    pub fn next_at(&self) -> Option<SampleTime> {
        self.queue.front().map(|f| f.at)
    }

    /// Drop every frame at or after `at` (a barge-in cut).
    pub fn cut(&mut self, at: SampleTime) {
        while self.queue.back().is_some_and(|f| f.at >= at) {
            self.queue.pop_back();
        }
    }

    /// Call `f` on each frame with a stamp at or before `played`, in order, and drop it.
    pub fn release(&mut self, played: SampleTime, mut f: impl FnMut(&Frame)) -> usize {
        let mut n = 0;
        while self.queue.front().is_some_and(|fr| fr.at <= played) {
            let fr = self.queue.pop_front().expect("front exists");
            f(&fr);
            n += 1;
        }
        n
    }
}

/// What a [`GateRunner`] is told.
pub enum GateMsg {
    /// A frame of a rig with these channel names, to be released at its stamp.
    Frame(std::sync::Arc<[String]>, Frame),
    /// An emotion or action cue, released at its sample.
    Cue(crate::speech::Cue),
    /// Drop every held frame and cue at or after this sample (a barge-in cut).
    Cut(SampleTime),
}

/// A thread that releases frames to the face sinks by the audio clock.
///
/// It wakes every 5 ms (sleeping in between, never spinning), takes new frames from its channel into
/// a [`FrameGate`], hands every frame whose stamp the [`audio::Clock`] has reached to each sink in
/// order (and each cue whose sample it has reached, before the frames at or after it, to
/// [`FrameSink::cue`]), and calls [`FrameSink::idle`] on every sink when nothing was released for 250 ms. A sink's
/// error is logged once per kind and the sink keeps being fed.
pub struct GateRunner {
    tx: Option<crossbeam_channel::Sender<GateMsg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GateRunner {
    pub fn spawn(clock: audio::Clock, mut sinks: Vec<Box<dyn FrameSink>>) -> GateRunner {
        let (tx, rx) = crossbeam_channel::unbounded::<GateMsg>();
        let thread = std::thread::Builder::new()
            .name("idol-gate".into())
            .spawn(move || {
                let mut gate = FrameGate::new();
                let mut cues: VecDeque<crate::speech::Cue> = VecDeque::new();
                let mut channels: VecDeque<std::sync::Arc<[String]>> = VecDeque::new();
                let mut last_release = std::time::Instant::now();
                let mut failing = vec![false; sinks.len()];
                loop {
                    loop {
                        match rx.try_recv() {
                            Ok(GateMsg::Frame(c, f)) => {
                                channels.push_back(c);
                                gate.push(f);
                            }
                            Ok(GateMsg::Cue(c)) => {
                                // Kept in sample order (cues of one utterance may come together).
                                let i = cues.partition_point(|x| x.at <= c.at);
                                cues.insert(i, c);
                            }
                            Ok(GateMsg::Cut(at)) => {
                                cues.retain(|c| c.at < at);
                                let before = gate.len();
                                gate.cut(at);
                                channels.truncate(channels.len() - (before - gate.len()));
                            }
                            Err(crossbeam_channel::TryRecvError::Empty) => break,
                            Err(crossbeam_channel::TryRecvError::Disconnected) => return,
                        }
                    }
                    let played = clock.played();
                    let mut released = 0;
                    // Cues and frames in sample order: each cue before the frames at or after it.
                    while cues.front().is_some_and(|c| c.at <= played) {
                        let cue = cues.pop_front().expect("front exists");
                        let upto = SampleTime(cue.at.get().saturating_sub(1));
                        if cue.at.get() > 0 {
                            released += release_frames(
                                &mut gate,
                                &mut channels,
                                upto,
                                &mut sinks,
                                &mut failing,
                            );
                        }
                        for (s, bad) in sinks.iter_mut().zip(failing.iter_mut()) {
                            match s.cue(&cue) {
                                Ok(()) => *bad = false,
                                Err(e) if !*bad => {
                                    *bad = true;
                                    log::warn!("sink: {e}");
                                }
                                Err(_) => {}
                            }
                        }
                        released += 1;
                    }
                    released +=
                        release_frames(&mut gate, &mut channels, played, &mut sinks, &mut failing);
                    if released > 0 {
                        last_release = std::time::Instant::now();
                    } else if last_release.elapsed() >= std::time::Duration::from_millis(250) {
                        for s in &mut sinks {
                            let _ = s.idle();
                        }
                        last_release = std::time::Instant::now();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            })
            .expect("spawn the gate thread");
        GateRunner {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queue a frame (frames come in stamp order).
    pub fn push(&self, channels: std::sync::Arc<[String]>, frame: Frame) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(GateMsg::Frame(channels, frame));
        }
    }

    /// Queue a cue, released to the sinks' [`FrameSink::cue`] when the clock reaches its sample.
    pub fn push_cue(&self, cue: crate::speech::Cue) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(GateMsg::Cue(cue));
        }
    }

    /// Drop held frames at or after `at`.
    pub fn cut(&self, at: SampleTime) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(GateMsg::Cut(at));
        }
    }
}

impl Drop for GateRunner {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hand every held frame stamped at or before `upto` to each sink; the number released.
fn release_frames(
    gate: &mut FrameGate,
    channels: &mut VecDeque<std::sync::Arc<[String]>>,
    upto: SampleTime,
    sinks: &mut [Box<dyn FrameSink>],
    failing: &mut [bool],
) -> usize {
    gate.release(upto, |f| {
        let c = channels.pop_front().expect("one channel list per frame");
        for (s, bad) in sinks.iter_mut().zip(failing.iter_mut()) {
            match s.frame(&c, &f.as_ref()) {
                Ok(()) => *bad = false,
                Err(e) if !*bad => {
                    *bad = true;
                    log::warn!("sink: {e}");
                }
                Err(_) => {}
            }
        }
    })
}

impl<T: FrameSink> FrameSink for std::sync::Arc<parking_lot::Mutex<T>> {
    fn frame(&mut self, channels: &[String], frame: &FrameRef<'_>) -> Result<(), SinkError> {
        self.lock().frame(channels, frame)
    }

    fn idle(&mut self) -> Result<(), SinkError> {
        self.lock().idle()
    }

    fn cue(&mut self, cue: &crate::speech::Cue) -> Result<(), SinkError> {
        self.lock().cue(cue)
    }
}

/// A [`FrameSink`] that records what it gets (for unit tests of the stages around the sinks).
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    pub frames: Vec<Frame>,
    pub idles: usize,
    pub cues: Vec<crate::speech::Cue>,
}

impl FrameSink for Recorder {
    fn frame(&mut self, _channels: &[String], frame: &FrameRef<'_>) -> Result<(), SinkError> {
        self.frames.push(Frame::from(frame));
        Ok(())
    }

    fn idle(&mut self) -> Result<(), SinkError> {
        self.idles += 1;
        Ok(())
    }

    fn cue(&mut self, cue: &crate::speech::Cue) -> Result<(), SinkError> {
        self.cues.push(cue.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr(at: u64, w: f32) -> Frame {
        Frame::new(
            SampleTime(at),
            MorphWeights::unit(vec![w]).unwrap(),
            Quat::IDENTITY,
            [EyeGaze::default(); 2],
        )
    }

    #[test]
    fn resampler_makes_ticks_at_the_sink_rate_by_stamps() {
        // 30 fps in at 22050 Hz, 60 Hz out: one tick on each frame, one halfway between.
        let mut r = Resampler::new(22050, 60).unwrap();
        let mut out = Vec::new();
        for k in 0..31u64 {
            // Weights are 0..=1: frame k says k/64.
            let f = fr(SampleTime::frame_offset(k, 22050, 30), k as f32 / 64.0);
            r.push(&f.as_ref(), |t| out.push(Frame::from(t)));
        }
        assert_eq!(out.len(), 61);
        for (k, t) in out.iter().enumerate() {
            assert_eq!(t.at.get(), SampleTime::frame_offset(k as u64, 22050, 60));
            assert!(
                (t.weights[0] - k as f32 / 128.0).abs() < 2e-5,
                "{k}: {:?}",
                t.weights
            );
        }
    }

    #[test]
    fn resampler_restarts_after_a_gap() {
        let mut r = Resampler::new(1000, 10).unwrap();
        let mut out = Vec::new();
        for at in [0u64, 100, 200, 5000, 5100] {
            r.push(&fr(at, at as f32).as_ref(), |t| out.push(t.at.get()));
        }
        assert_eq!(out, vec![0, 100, 200, 5000, 5100]);
    }

    #[test]
    fn gate_releases_by_the_played_counter_and_cuts() {
        let mut g = FrameGate::new();
        for k in 0..10 {
            g.push(fr(k * 100, 0.0));
        }
        let mut got = Vec::new();
        g.release(SampleTime(250), |f| got.push(f.at.get()));
        assert_eq!(got, vec![0, 100, 200]);
        g.cut(SampleTime(600));
        assert_eq!(g.len(), 3);
        g.release(SampleTime(10_000), |f| got.push(f.at.get()));
        assert_eq!(got, vec![0, 100, 200, 300, 400, 500]);
    }
}
