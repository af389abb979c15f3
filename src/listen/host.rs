//! The host's voice, live: audio from an [`AudioInput`] (a microphone through cpal, a recording
//! played in real time, or samples a test pushes), resampled to 16 kHz, cut into utterances by
//! Silero VAD ([`super::vad::Segmenter`]) and transcribed by [`Whisper`]; a [`HostEvents`] hears
//! when the host starts talking (barge-in) and what each finished utterance said.
//!
//! In `idol serve` the events go to the performance ([`PerformHost`]): speech confirmed →
//! [`PerformHandle::interrupt`] (the same one-sample cut as a client's `interrupt`), utterance →
//! [`PerformHandle::chat_from`] with source `host`.

use super::vad::{Segmenter, SegmenterConfig, SileroVad, VadError, VadEvent};
use super::whisper::{Whisper, WhisperError, WhisperFiles};
use crate::perform::PerformHandle;
use crossbeam_channel::{Receiver, Sender};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Whisper(#[from] WhisperError),
    #[error(transparent)]
    Vad(#[from] VadError),
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
    #[error("microphone: {0}")]
    Device(String),
}

/// Where the host's audio comes from: blocks of mono samples at [`AudioInput::sample_rate`].
pub trait AudioInput: Send {
    fn sample_rate(&self) -> u32;
    /// The next block; `None` when the input has ended (or `stop` was raised while waiting).
    fn next_block(&mut self, stop: &AtomicBool) -> Option<Vec<f32>>;
}

/// Samples pushed from elsewhere (the cpal callback; a test).
pub struct ChannelInput {
    rate: u32,
    rx: Receiver<Vec<f32>>,
}

impl ChannelInput {
    /// An input at `rate` Hz and the sender that feeds it (dropping every sender ends it).
    pub fn new(rate: u32) -> (ChannelInput, Sender<Vec<f32>>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (ChannelInput { rate, rx }, tx)
    }
}

impl AudioInput for ChannelInput {
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn next_block(&mut self, stop: &AtomicBool) -> Option<Vec<f32>> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(b) => return Some(b),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// A recording played as the microphone: 32 ms blocks, released in real time from the first
/// read (`paced`), or as fast as they are taken.
pub struct FileInput {
    pcm: Vec<f32>,
    at: usize,
    paced: bool,
    started: Option<Instant>,
}

impl FileInput {
    /// Any format and rate [`crate::audio::decode_file`] reads, mixed down and resampled to 16 kHz.
    pub fn open(path: &Path, paced: bool) -> Result<FileInput, HostError> {
        let a = crate::audio::decode_file(path)?;
        Ok(FileInput::from_pcm(
            crate::audio::resample(&a.samples, a.sample_rate, super::vad::RATE),
            paced,
        ))
    }

    /// 16 kHz mono samples.
    pub fn from_pcm(pcm: Vec<f32>, paced: bool) -> FileInput {
        FileInput {
            pcm,
            at: 0,
            paced,
            started: None,
        }
    }
}

impl AudioInput for FileInput {
    fn sample_rate(&self) -> u32 {
        super::vad::RATE
    }
    fn next_block(&mut self, stop: &AtomicBool) -> Option<Vec<f32>> {
        if self.at >= self.pcm.len() || stop.load(Ordering::Relaxed) {
            return None;
        }
        let end = (self.at + super::vad::CHUNK).min(self.pcm.len());
        if self.paced {
            let t0 = *self.started.get_or_insert_with(Instant::now);
            let due = t0 + Duration::from_secs_f64(end as f64 / super::vad::RATE as f64);
            while Instant::now() < due {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                std::thread::sleep((due - Instant::now()).min(Duration::from_millis(50)));
            }
        }
        let b = self.pcm[self.at..end].to_vec();
        self.at = end;
        Some(b)
    }
}

/// Streaming conversion to 16 kHz for a live input: a moving average as wide as the rate ratio
/// (the anti-alias filter, when the input is faster) and linear interpolation. Coarser than
/// [`crate::audio::resample`], which needs the whole signal; speech detection and Whisper's
/// 8 kHz band do not need more.
#[derive(Debug, Clone)]
pub struct StreamResampler {
    from: u32,
    to: u32,
    width: usize,
    /// The last `width` input samples (moving average).
    hist: std::collections::VecDeque<f32>,
    sum: f64,
    /// The previous filtered sample, and the position of the next output in input samples
    /// relative to it.
    prev: f32,
    t: f64,
}

impl StreamResampler {
    pub fn new(from: u32, to: u32) -> StreamResampler {
        let width = if from > to {
            (from as f64 / to as f64).round().max(1.0) as usize
        } else {
            1
        };
        StreamResampler {
            from,
            to,
            width,
            hist: Default::default(),
            sum: 0.0,
            prev: 0.0,
            t: 0.0,
        }
    }

    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.from == self.to {
            out.extend_from_slice(input);
            return;
        }
        let step = self.from as f64 / self.to as f64;
        for &x in input {
            self.hist.push_back(x);
            self.sum += x as f64;
            if self.hist.len() > self.width {
                self.sum -= self.hist.pop_front().unwrap_or(0.0) as f64;
            }
            let y = (self.sum / self.hist.len() as f64) as f32;
            // Outputs between prev (position 0) and y (position 1).
            while self.t <= 1.0 {
                out.push(self.prev + (y - self.prev) * self.t as f32);
                self.t += step;
            }
            self.t -= 1.0;
            self.prev = y;
        }
    }
}

/// What the listener reports.
pub trait HostEvents: Send {
    /// Speech confirmed: the host started talking.
    fn speech_started(&mut self);
    /// A finished utterance's words (never empty), with the end of its speech.
    fn utterance(&mut self, text: &str, heard: Heard);
}

/// When an utterance was heard, for latency figures.
#[derive(Debug, Clone, Copy)]
pub struct Heard {
    /// Samples (16 kHz, from the input's start) where the speech ended.
    pub end_sample: u64,
    /// When the VAD decided the utterance was over, and when its words were ready.
    pub ended_at: Instant,
    pub transcribed_at: Instant,
}

/// Everything the listener loads.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub whisper: WhisperFiles,
    pub language: Option<String>,
    pub vad_model: PathBuf,
    pub ort_library: PathBuf,
    pub segmenter: SegmenterConfig,
    /// Whisper encodes an utterance's own length (plus 1 s), not a whole 30 s window
    /// ([`Whisper::set_short_windows`]): faster, but it loses words and can loop (docs/benchmarks.md),
    /// so it is off in `[mic]`.
    pub short_windows: bool,
}

impl HostOptions {
    /// From `[mic]`, with the pinned models under `home`.
    pub fn from_config(home: &crate::assets::Home, mic: &crate::config::MicConfig) -> Self {
        HostOptions {
            whisper: WhisperFiles::pinned(home, &mic.model),
            language: mic.language.clone(),
            vad_model: home.path(super::SILERO_VAD),
            ort_library: home.ort_library(),
            segmenter: segmenter_config(mic),
            short_windows: false,
        }
    }

    /// Every model file the listener needs (for fetching on first use).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut f = self.whisper.all();
        f.push(self.vad_model.clone());
        f
    }
}

/// The segmenter settings of `[mic]`.
pub fn segmenter_config(mic: &crate::config::MicConfig) -> SegmenterConfig {
    SegmenterConfig {
        threshold: mic.threshold,
        end_threshold: mic.end_threshold,
        min_speech_ms: mic.min_speech_ms,
        min_silence_ms: mic.min_silence_ms,
        max_utterance_s: mic.max_utterance_s,
        ..SegmenterConfig::default()
    }
}

/// Counts, for `/metrics`-style reporting and tests.
#[derive(Debug, Default)]
pub struct HostStats {
    pub speech_starts: AtomicU64,
    pub utterances: AtomicU64,
    /// Utterances whose transcript was empty or only a bracketed non-speech tag.
    pub discarded: AtomicU64,
}

/// The running listener (a thread); dropping it stops it.
pub struct HostVoice {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), HostError>>>,
    pub stats: Arc<HostStats>,
}

/// Whisper's words without bracketed tags (`[BLANK_AUDIO]`, `(music)`), trimmed.
pub fn spoken_words(text: &str) -> String {
    let mut out = String::new();
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = (depth - 1).max(0),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let t = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.chars().any(char::is_alphanumeric) {
        t
    } else {
        String::new()
    }
}

impl HostVoice {
    /// Load the models (here, so a bad file is reported before anything runs) and start
    /// listening to `input` on a thread.
    pub fn start(
        opts: &HostOptions,
        mut input: Box<dyn AudioInput>,
        mut events: Box<dyn HostEvents>,
    ) -> Result<HostVoice, HostError> {
        let mut whisper = Whisper::load(&opts.whisper, opts.language.as_deref())?;
        whisper.set_short_windows(opts.short_windows);
        let vad = SileroVad::load(&opts.vad_model, &opts.ort_library)?;
        let mut seg = Segmenter::new(vad, opts.segmenter);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(HostStats::default());
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("idol-host-voice".into())
            .spawn(move || {
                let mut words = Transcriber::start(whisper)?;
                let mut rs = StreamResampler::new(input.sample_rate(), super::vad::RATE);
                let mut pcm = vec![];
                let mut ev = vec![];
                let mut ended = false;
                while !ended {
                    pcm.clear();
                    match input.next_block(&stop2) {
                        Some(b) => rs.push(&b, &mut pcm),
                        None => ended = true,
                    }
                    seg.push(&pcm, &mut ev)?;
                    if ended && !stop2.load(Ordering::Relaxed) {
                        seg.finish(&mut ev)?;
                    }
                    for e in ev.drain(..) {
                        match e {
                            VadEvent::Start { .. } => {
                                stats2.speech_starts.fetch_add(1, Ordering::Relaxed);
                                events.speech_started();
                            }
                            // Whisper starts on the audio as soon as the speech falls silent;
                            // the end, if it comes, has the same audio.
                            VadEvent::Pause { end, pcm, .. } => words.send(end, pcm)?,
                            VadEvent::End { end, pcm, .. } => {
                                let ended_at = Instant::now();
                                if words.sent != Some(end) {
                                    words.send(end, pcm)?;
                                }
                                let text = spoken_words(&words.wait(end)?);
                                if text.is_empty() {
                                    stats2.discarded.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                                stats2.utterances.fetch_add(1, Ordering::Relaxed);
                                events.utterance(
                                    &text,
                                    Heard {
                                        end_sample: end,
                                        ended_at,
                                        transcribed_at: Instant::now(),
                                    },
                                );
                            }
                        }
                    }
                }
                words.finish()
            })
            .map_err(|e| HostError::Device(e.to_string()))?;
        Ok(HostVoice {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// Wait until the input has ended (a recording played out) and everything heard was handed
    /// on; the listener's error, if it failed.
    pub fn join(mut self) -> Result<(), HostError> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(HostError::Device("the listener thread panicked".into())),
            None => Ok(()),
        }
    }

    /// Whether the listener is still running.
    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

/// Whisper on its own thread, so that it transcribes while the VAD goes on listening: audio is
/// sent as soon as the speech falls silent ([`VadEvent::Pause`]); if the silence lasts, the end
/// waits for those words instead of starting then. Only the newest audio waiting is transcribed
/// (an older pause was followed by more speech).
struct Transcriber {
    jobs: Option<Sender<(u64, Vec<f32>)>>,
    done: Receiver<(u64, Result<String, WhisperError>)>,
    thread: Option<JoinHandle<()>>,
    /// The end of the newest audio sent.
    sent: Option<u64>,
}

impl Transcriber {
    fn start(mut whisper: Whisper) -> Result<Transcriber, HostError> {
        let (jobs, rx) = crossbeam_channel::unbounded::<(u64, Vec<f32>)>();
        let (tx, done) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("idol-host-whisper".into())
            .spawn(move || {
                while let Ok(mut job) = rx.recv() {
                    while let Ok(newer) = rx.try_recv() {
                        job = newer;
                    }
                    let (end, pcm) = job;
                    if tx.send((end, whisper.text(&pcm))).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| HostError::Device(e.to_string()))?;
        Ok(Transcriber {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            sent: None,
        })
    }

    fn send(&mut self, end: u64, pcm: Vec<f32>) -> Result<(), HostError> {
        self.sent = Some(end);
        self.jobs
            .as_ref()
            .and_then(|j| j.send((end, pcm)).ok())
            .ok_or_else(|| HostError::Device("the Whisper thread ended".into()))
    }

    /// The words of the audio that ended at `end` (the newest sent).
    fn wait(&mut self, end: u64) -> Result<String, HostError> {
        loop {
            match self.done.recv() {
                Ok((e, r)) if e == end => return Ok(r?),
                Ok(_) => {}
                Err(_) => return Err(HostError::Device("the Whisper thread ended".into())),
            }
        }
    }

    fn finish(mut self) -> Result<(), HostError> {
        self.jobs = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Err(_)) => Err(HostError::Device("the Whisper thread panicked".into())),
            _ => Ok(()),
        }
    }
}

impl Drop for Transcriber {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HostVoice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) => log::warn!("host voice: {e}"),
                Err(_) => log::warn!("host voice: the listener thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// The host's voice into a live performance: speech barges in (when `barge_in`), an utterance is
/// a chat from source `host`.
pub struct PerformHost {
    pub handle: PerformHandle,
    pub user: String,
    pub barge_in: bool,
}

impl HostEvents for PerformHost {
    fn speech_started(&mut self) {
        if self.barge_in {
            self.handle.interrupt();
        }
    }
    fn utterance(&mut self, text: &str, _heard: Heard) {
        self.handle.chat_from("host", &self.user, text);
    }
}

/// The default input device through cpal, or the one named `device`: its native rate and
/// channels (mixed down), on the device's own clock. The cpal stream lives on its own thread
/// (it is not `Send` everywhere) until the returned input is dropped.
pub fn open_microphone(device: Option<&str>) -> Result<Box<dyn AudioInput>, HostError> {
    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<u32, String>>(1);
    let (tx, rx) = crossbeam_channel::unbounded::<Vec<f32>>();
    let wanted = device.map(str::to_string);
    std::thread::Builder::new()
        .name("idol-mic".into())
        .spawn(move || {
            let host = cpal::default_host();
            let dev = match &wanted {
                None => host.default_input_device(),
                Some(n) => host
                    .input_devices()
                    .ok()
                    .and_then(|mut ds| ds.find(|d| d.name().is_ok_and(|x| x == *n))),
            };
            let Some(dev) = dev else {
                let _ = ready_tx.send(Err(match &wanted {
                    None => "no default input device (list them with `idol devices`)".into(),
                    Some(n) => {
                        format!("no input device named {n:?} (list them with `idol devices`)")
                    }
                }));
                return;
            };
            let cfg = match dev.default_input_config() {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let channels = cfg.channels().max(1) as usize;
            let rate = cfg.sample_rate().0;
            let tx2 = tx.clone();
            let mono = move |data: &[f32]| {
                let b: Vec<f32> = data
                    .chunks(channels)
                    .map(|c| c.iter().sum::<f32>() / channels as f32)
                    .collect();
                let _ = tx2.send(b);
            };
            let err = |e: cpal::StreamError| log::warn!("microphone: {e}");
            let stream = match cfg.sample_format() {
                cpal::SampleFormat::F32 => dev.build_input_stream(
                    &cfg.config(),
                    move |d: &[f32], _: &_| mono(d),
                    err,
                    None,
                ),
                cpal::SampleFormat::I16 => dev.build_input_stream(
                    &cfg.config(),
                    move |d: &[i16], _: &_| {
                        let f: Vec<f32> = d.iter().map(|&s| s as f32 / 32768.0).collect();
                        mono(&f)
                    },
                    err,
                    None,
                ),
                other => {
                    let _ = ready_tx.send(Err(format!("sample format {other} is not supported")));
                    return;
                }
            };
            let stream = match stream.and_then(|s| {
                s.play()
                    .map(|()| s)
                    .map_err(|e| cpal::BuildStreamError::BackendSpecific {
                        err: cpal::BackendSpecificError {
                            description: e.to_string(),
                        },
                    })
            }) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(rate));
            // Keep the stream until the listener drops its receiver.
            while tx.send(Vec::new()).is_ok() {
                std::thread::sleep(Duration::from_millis(200));
            }
            drop(stream);
        })
        .map_err(|e| HostError::Device(e.to_string()))?;
    let rate = ready_rx
        .recv()
        .map_err(|_| HostError::Device("the microphone thread ended".into()))?
        .map_err(|e| {
            HostError::Device(format!(
                "{e} (name another input with [mic] device, or play a recording as the microphone with [mic] file)"
            ))
        })?;
    Ok(Box::new(ChannelInput { rate, rx }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracketed_tags_are_not_words() {
        assert_eq!(spoken_words(" [BLANK_AUDIO] "), "");
        assert_eq!(spoken_words("(upbeat music)"), "");
        assert_eq!(spoken_words(" Hello (laughs) there."), "Hello there.");
        assert_eq!(spoken_words(" ... "), "");
    }

    #[test]
    fn stream_resampler_keeps_duration_and_a_tone() {
        for from in [48_000u32, 44_100, 16_000, 8_000] {
            let n = from as usize; // one second
            let x: Vec<f32> = (0..n)
                .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / from as f32).sin())
                .collect();
            let mut rs = StreamResampler::new(from, 16_000);
            let mut out = vec![];
            for b in x.chunks(480) {
                rs.push(b, &mut out);
            }
            assert!(
                (out.len() as i64 - 16_000).abs() <= 2,
                "{from}: {}",
                out.len()
            );
            // Zero crossings: 880 a second.
            let zc = out
                .windows(2)
                .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
                .count();
            assert!((zc as i64 - 880).abs() <= 6, "{from}: {zc}");
        }
    }
}
