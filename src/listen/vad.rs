//! Silero VAD (v5 graph, `silero_vad.onnx`) on ONNX Runtime, and the utterance segmenter on top.
//!
//! The model reads 16 kHz audio 512 samples (32 ms) at a time, each chunk preceded by the last 64
//! samples of the one before (zeros at first), and carries a recurrent state (`2 × 1 × 128`) from
//! chunk to chunk; it answers the probability that the chunk is speech.
//!
//! [`Segmenter`] turns the probabilities into utterances with hysteresis: speech starts when a
//! chunk reaches `threshold` and is confirmed once it has lasted `min_speech_ms` above
//! `end_threshold` (then [`VadEvent::Start`] is reported, which is where a host barges in); it ends
//! after `min_silence_ms` below `end_threshold` ([`VadEvent::End`] with the audio, `pre_roll_ms`
//! before the start included); an utterance that reaches `max_utterance_s` is ended there and the
//! speech goes on as a new one.

use ort::session::Session;
use ort::value::Tensor;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// Samples per chunk at 16 kHz.
pub const CHUNK: usize = 512;
const CONTEXT: usize = 64;
const STATE: usize = 2 * 128;
pub const RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error("{path}: {what}: delete it and run `idol fetch`")]
    Model { path: PathBuf, what: String },
    #[error(transparent)]
    Runtime(#[from] crate::tts::TtsError),
    #[error("Silero VAD failed: {0}")]
    Run(String),
}

/// The Silero model with its streaming state.
pub struct SileroVad {
    session: Session,
    state: Vec<f32>,
    context: [f32; CONTEXT],
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SileroVad")
    }
}

impl SileroVad {
    /// Load `model` with the ONNX Runtime library at `ort_lib`, one thread.
    pub fn load(model: &Path, ort_lib: &Path) -> Result<SileroVad, VadError> {
        let env = crate::tts::piper::ort_environment(ort_lib)?;
        let fail = |e: &dyn std::fmt::Display| VadError::Model {
            path: model.to_path_buf(),
            what: e.to_string(),
        };
        let bytes = std::fs::read(model).map_err(|e| VadError::Model {
            path: model.to_path_buf(),
            what: e.to_string(),
        })?;
        let session = Session::builder(&env)
            .map_err(|e| fail(&e))?
            .with_intra_threads(1)
            .map_err(|e| fail(&e))?
            .with_inter_threads(1)
            .map_err(|e| fail(&e))?
            .commit_from_memory(&bytes)
            .map_err(|e| fail(&e))?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        if !["input", "state", "sr"].iter().all(|n| names.contains(n)) {
            return Err(VadError::Model {
                path: model.to_path_buf(),
                what: format!("inputs {names:?}, not Silero VAD v5's input, state, sr"),
            });
        }
        Ok(SileroVad {
            session,
            state: vec![0.0; STATE],
            context: [0.0; CONTEXT],
        })
    }

    /// Forget the stream (a new recording).
    pub fn reset(&mut self) {
        self.state.fill(0.0);
        self.context = [0.0; CONTEXT];
    }

    /// The speech probability of the next 512 samples of the stream.
    pub fn probability(&mut self, chunk: &[f32]) -> Result<f32, VadError> {
        assert_eq!(chunk.len(), CHUNK, "Silero VAD reads 512-sample chunks");
        let run = |e: ort::Error| VadError::Run(e.to_string());
        let mut input = Vec::with_capacity(CONTEXT + CHUNK);
        input.extend_from_slice(&self.context);
        input.extend_from_slice(chunk);
        self.context.copy_from_slice(&chunk[CHUNK - CONTEXT..]);
        let inputs = ort::inputs![
            "input" => Tensor::from_array(([1usize, CONTEXT + CHUNK], input)).map_err(run)?,
            "state" => Tensor::from_array(([2usize, 1, 128], self.state.clone())).map_err(run)?,
            "sr" => Tensor::from_array(((), vec![RATE as i64])).map_err(run)?,
        ];
        let out = self.session.run(inputs).map_err(run)?;
        let p = out["output"].try_extract_tensor::<f32>().map_err(run)?.1[0];
        let s = out["stateN"].try_extract_tensor::<f32>().map_err(run)?.1;
        if s.len() == STATE {
            self.state.copy_from_slice(s);
        }
        Ok(p)
    }
}

/// How speech is cut into utterances (`[mic]` in idol.toml).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmenterConfig {
    /// A chunk at or above this probability starts speech.
    pub threshold: f32,
    /// Below this, a chunk counts as silence (hysteresis: lower than `threshold`).
    pub end_threshold: f32,
    /// Speech shorter than this is a noise, not an utterance (and does not barge in).
    pub min_speech_ms: u32,
    /// This much silence ends an utterance.
    pub min_silence_ms: u32,
    /// Audio kept before the first speech chunk.
    pub pre_roll_ms: u32,
    /// An utterance this long is cut and handed on; the speech goes on as the next one.
    pub max_utterance_s: f32,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            threshold: 0.5,
            end_threshold: 0.35,
            min_speech_ms: 250,
            min_silence_ms: 300,
            pre_roll_ms: 200,
            max_utterance_s: 20.0,
        }
    }
}

/// What the segmenter found, in samples of the 16 kHz stream from its start.
#[derive(Debug, Clone, PartialEq)]
pub enum VadEvent {
    /// Speech confirmed (it started at `start`; `at` is where it was confirmed).
    Start { start: u64, at: u64 },
    /// An utterance ended: its audio from `start` (pre-roll included) to `end`.
    End { start: u64, end: u64, pcm: Vec<f32> },
    /// Confirmed speech fell silent at `end` (the first chunk below `end_threshold`): if the
    /// silence lasts `min_silence_ms`, [`VadEvent::End`] follows with this very audio (same
    /// `start`, `end` and samples), so a listener may start transcribing it now; if speech
    /// resumes first, nothing follows it.
    Pause { start: u64, end: u64, pcm: Vec<f32> },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Silence,
    /// Speech began at this sample and is not confirmed yet.
    Maybe(u64),
    /// Confirmed speech that began at this sample; silent samples so far.
    Speech(u64, u64),
}

/// Hysteresis over chunk probabilities, with the audio it needs kept (pure: fed probabilities,
/// so it is tested without the model).
#[derive(Debug, Clone)]
pub struct Hysteresis {
    cfg: SegmenterConfig,
    state: State,
    /// Samples seen so far.
    pos: u64,
    /// Audio from `kept_from` on.
    audio: VecDeque<f32>,
    kept_from: u64,
}

fn ms(ms: u32) -> u64 {
    ms as u64 * RATE as u64 / 1000
}

impl Hysteresis {
    pub fn new(cfg: SegmenterConfig) -> Self {
        Hysteresis {
            cfg,
            state: State::Silence,
            pos: 0,
            audio: VecDeque::new(),
            kept_from: 0,
        }
    }

    /// Whether confirmed speech is going on.
    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speech(..))
    }

    fn take(&mut self, from: u64, to: u64) -> Vec<f32> {
        let a = from.saturating_sub(self.kept_from) as usize;
        let b = (to.saturating_sub(self.kept_from) as usize).min(self.audio.len());
        self.audio.range(a.min(b)..b).copied().collect()
    }

    fn trim(&mut self, keep_from: u64) {
        while self.kept_from < keep_from && !self.audio.is_empty() {
            self.audio.pop_front();
            self.kept_from += 1;
        }
    }

    /// One chunk of audio and its speech probability.
    pub fn push(&mut self, chunk: &[f32], p: f32, out: &mut Vec<VadEvent>) {
        let at = self.pos;
        self.audio.extend(chunk.iter().copied());
        self.pos += chunk.len() as u64;
        let c = self.cfg;
        let max = (c.max_utterance_s.max(1.0) * RATE as f32) as u64;
        self.state = match self.state {
            State::Silence if p >= c.threshold => State::Maybe(at),
            State::Silence => State::Silence,
            State::Maybe(_) if p < c.end_threshold => State::Silence,
            State::Maybe(s) => {
                if self.pos - s >= ms(c.min_speech_ms) {
                    out.push(VadEvent::Start {
                        start: s,
                        at: self.pos,
                    });
                    State::Speech(s, 0)
                } else {
                    State::Maybe(s)
                }
            }
            State::Speech(s, silent) => {
                let silent = if p < c.end_threshold {
                    silent + chunk.len() as u64
                } else {
                    0
                };
                let from = s.saturating_sub(ms(c.pre_roll_ms));
                if silent > 0 && silent == chunk.len() as u64 && silent < ms(c.min_silence_ms) {
                    let end = self.pos - silent;
                    out.push(VadEvent::Pause {
                        start: from.max(self.kept_from),
                        end,
                        pcm: self.take(from, end),
                    });
                }
                if silent >= ms(c.min_silence_ms) {
                    let end = self.pos - silent;
                    let pcm = self.take(from, end);
                    out.push(VadEvent::End {
                        start: from.max(self.kept_from),
                        end,
                        pcm,
                    });
                    State::Silence
                } else if self.pos.saturating_sub(s) >= max {
                    let pcm = self.take(from, self.pos);
                    out.push(VadEvent::End {
                        start: from.max(self.kept_from),
                        end: self.pos,
                        pcm,
                    });
                    out.push(VadEvent::Start {
                        start: self.pos,
                        at: self.pos,
                    });
                    State::Speech(self.pos + ms(c.pre_roll_ms), 0)
                } else {
                    State::Speech(s, silent)
                }
            }
        };
        // Keep only what an utterance may still need.
        let keep = match self.state {
            State::Silence => self.pos.saturating_sub(ms(c.pre_roll_ms)),
            State::Maybe(s) | State::Speech(s, _) => s.saturating_sub(ms(c.pre_roll_ms)),
        };
        self.trim(keep);
    }

    /// The stream ended: speech going on ends here.
    pub fn finish(&mut self, out: &mut Vec<VadEvent>) {
        if let State::Speech(s, silent) = self.state {
            let from = s.saturating_sub(ms(self.cfg.pre_roll_ms));
            let end = self.pos - silent;
            let pcm = self.take(from, end);
            out.push(VadEvent::End {
                start: from.max(self.kept_from),
                end,
                pcm,
            });
        }
        self.state = State::Silence;
    }
}

/// Silero VAD and the hysteresis, fed 16 kHz audio of any block size.
#[derive(Debug)]
pub struct Segmenter {
    vad: SileroVad,
    hyst: Hysteresis,
    pending: Vec<f32>,
}

impl Segmenter {
    pub fn new(vad: SileroVad, cfg: SegmenterConfig) -> Self {
        Segmenter {
            vad,
            hyst: Hysteresis::new(cfg),
            pending: Vec::with_capacity(CHUNK),
        }
    }

    /// Feed 16 kHz mono audio; events found so far are appended to `out`.
    pub fn push(&mut self, pcm: &[f32], out: &mut Vec<VadEvent>) -> Result<(), VadError> {
        let mut rest = pcm;
        while !rest.is_empty() {
            let n = (CHUNK - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.pending.len() == CHUNK {
                let p = self.vad.probability(&self.pending)?;
                self.hyst.push(&self.pending, p, out);
                self.pending.clear();
            }
        }
        Ok(())
    }

    /// The stream ended (the rest padded with silence to a chunk).
    pub fn finish(&mut self, out: &mut Vec<VadEvent>) -> Result<(), VadError> {
        if !self.pending.is_empty() {
            let pad = vec![0.0; CHUNK - self.pending.len()];
            self.push(&pad, out)?;
        }
        self.hyst.finish(out);
        Ok(())
    }

    pub fn in_speech(&self) -> bool {
        self.hyst.in_speech()
    }
}

/// The speech spans of a whole 16 kHz clip, in samples (the segmenter run over it).
pub fn speech_spans(
    vad: SileroVad,
    cfg: SegmenterConfig,
    pcm: &[f32],
) -> Result<Vec<(u64, u64, Vec<f32>)>, VadError> {
    let mut seg = Segmenter::new(vad, cfg);
    let mut ev = vec![];
    seg.push(pcm, &mut ev)?;
    seg.finish(&mut ev)?;
    Ok(ev
        .into_iter()
        .filter_map(|e| match e {
            VadEvent::End { start, end, pcm } => Some((start, end, pcm)),
            VadEvent::Start { .. } | VadEvent::Pause { .. } => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(probs: &[f32], cfg: SegmenterConfig) -> Vec<VadEvent> {
        let mut h = Hysteresis::new(cfg);
        let mut out = vec![];
        for (i, &p) in probs.iter().enumerate() {
            let chunk = vec![i as f32; CHUNK];
            h.push(&chunk, p, &mut out);
        }
        h.finish(&mut out);
        out
    }

    fn spans(ev: &[VadEvent]) -> Vec<(u64, u64)> {
        ev.iter()
            .filter_map(|e| match e {
                VadEvent::End { start, end, .. } => Some((*start, *end)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_blip_is_not_speech_and_a_word_is() {
        let cfg = SegmenterConfig {
            pre_roll_ms: 0,
            ..Default::default()
        };
        // 2 chunks (64 ms) of speech: a blip; then 20 chunks of speech, 20 of silence.
        let mut p = vec![0.0; 10];
        p.extend([0.9, 0.9]);
        p.extend(vec![0.0; 10]);
        p.extend(vec![0.9; 20]);
        p.extend(vec![0.1; 20]);
        let ev = run(&p, cfg);
        let c = CHUNK as u64;
        assert_eq!(spans(&ev), vec![(22 * c, 42 * c)]);
        assert!(matches!(ev[0], VadEvent::Start { start, .. } if start == 22 * c));
        // The utterance's audio is exactly its chunks, and the pause announced it first.
        let VadEvent::Pause {
            pcm: early, end, ..
        } = &ev[1]
        else {
            panic!("{:?}", ev[1])
        };
        assert_eq!(*end, 42 * c);
        let VadEvent::End { pcm, .. } = &ev[2] else {
            panic!()
        };
        assert_eq!(pcm.len(), 20 * CHUNK);
        assert_eq!(pcm[0], 22.0);
        assert_eq!(early, pcm);
    }

    #[test]
    fn hysteresis_bridges_a_dip_and_a_pause_shorter_than_min_silence() {
        let cfg = SegmenterConfig {
            pre_roll_ms: 0,
            ..Default::default()
        };
        let mut p = vec![0.9; 20];
        p.extend(vec![0.4; 10]); // between the thresholds: still speech
        p.extend(vec![0.0; 5]); // 160 ms pause < 300 ms
        p.extend(vec![0.9; 10]);
        p.extend(vec![0.0; 30]);
        let ev = run(&p, cfg);
        assert_eq!(spans(&ev), vec![(0, 45 * CHUNK as u64)]);
        // A pause at the gap (not followed by an end), then one at the real end.
        let pauses: Vec<u64> = ev
            .iter()
            .filter_map(|e| match e {
                VadEvent::Pause { end, .. } => Some(*end),
                _ => None,
            })
            .collect();
        assert_eq!(pauses, vec![30 * CHUNK as u64, 45 * CHUNK as u64]);
    }

    #[test]
    fn a_long_utterance_is_cut_at_the_maximum_and_goes_on() {
        let cfg = SegmenterConfig {
            pre_roll_ms: 0,
            max_utterance_s: 1.024, // 32 chunks
            ..Default::default()
        };
        let p = vec![0.9; 80];
        let ev = run(&p, cfg);
        let s = spans(&ev);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0], (0, 32 * CHUNK as u64));
        assert_eq!(s[1].0, 32 * CHUNK as u64);
        assert_eq!(s[2].1, 80 * CHUNK as u64);
    }

    #[test]
    fn pre_roll_keeps_audio_before_the_start() {
        let cfg = SegmenterConfig::default(); // 200 ms = 3200 samples
        let mut p = vec![0.0; 30];
        p.extend(vec![0.9; 20]);
        p.extend(vec![0.0; 20]);
        let ev = run(&p, cfg);
        assert_eq!(
            spans(&ev),
            vec![(30 * CHUNK as u64 - 3200, 50 * CHUNK as u64)]
        );
    }
}
