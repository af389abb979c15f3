//! Piper (VITS) voices on ONNX Runtime.
//!
//! A voice is `NAME.onnx` plus `NAME.onnx.json` (sample rate, `phoneme_id_map`, speakers, inference
//! defaults). At load the graph is edited in memory ([`super::onnx`]): it also outputs the per-id
//! durations, and its two `RandomNormalLike` nodes become inputs fed from a seeded ChaCha RNG. A one-off
//! probe run on a tiny input then learns each noise's channel count and whether its length follows the
//! phoneme ids (the duration predictor's noise) or the frames (the flow's noise), and the hop size
//! (samples per frame); it also warms the session up.
//!
//! Per clause: phonemize, map to ids ([`super::timing::encode`]), fill the noise (the per-id noise
//! exactly; the per-frame noise for an upper bound of frames, which the graph slices to the length the
//! durations set, retried with a larger bound in the rare case it was too small), run, and turn the
//! durations into phoneme and word timelines. Noise value `(c, t)` is draw `t·C + c` of the clause's
//! stream, so it does not depend on the bound. Each clause uses stream `clause_index` of the seed, so a
//! render is a pure function of (text, seed, options).
//!
//! Threading: a [`PiperVoice`] owns its session and is used from one thread at a time (`&mut self`);
//! [`super::SynthWorker`] gives it a thread of its own. The session uses one intra-op thread by default.
//!
//! Files: `config.rs` (the voice's JSON and the load options), `runtime.rs` (ONNX Runtime itself),
//! `session.rs` (the sessions, the probe and the runs), this file (the voice and its synthesis).

mod config;
mod runtime;
mod session;

pub use config::{
    AudioConfig, EspeakConfig, InferenceConfig, LanguageConfig, Speaker, VOICE_RATES, VoiceConfig,
    VoiceOptions, voice_languages,
};
pub use runtime::{check_elf_complete, ort_environment};

use super::onnx::{PiperGraphEdits, edit_piper_graph, split_decoder};
use super::timing::{self, Encoded};
use super::{Synthesizer, TtsError};
use crate::phonemize::{PhonToken, Phonemize};
use crate::speech::Speech;
use config::resolve_speaker;
use ort::session::Session;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use session::{FlowSession, NoiseShape, Sessions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loaded Piper voice.
pub struct PiperVoice {
    path: PathBuf,
    config: VoiceConfig,
    id_map: HashMap<char, Vec<i64>>,
    sessions: Sessions,
    edits: PiperGraphEdits,
    noise: Vec<NoiseShape>,
    hop: u64,
    has_sid: bool,
    sid: Option<i64>,
    scales: [f32; 3],
    /// The scales it was loaded with (a style's length scale and emphasis start from them).
    base_scales: [f32; 3],
    seed: u64,
    clause: u64,
    phonemizer: Arc<dyn Phonemize>,
}

impl std::fmt::Debug for PiperVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiperVoice")
            .field("path", &self.path)
            .field("sample_rate", &self.config.audio.sample_rate)
            .field("hop", &self.hop)
            .finish_non_exhaustive()
    }
}

/// A Piper voice's config: `NAME.onnx.json` beside `NAME.onnx`.
fn config_path(voice: &Path) -> PathBuf {
    let mut p = voice.as_os_str().to_owned();
    p.push(".json");
    PathBuf::from(p)
}

fn voice_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.trim_end_matches(".onnx").to_string())
        .unwrap_or_else(|| path.display().to_string())
}

impl PiperVoice {
    /// The files [`PiperVoice::load`] reads: the voice `NAME.onnx`, its config `NAME.onnx.json`, and the
    /// ONNX Runtime library (what a command fetches on first use before loading the voice).
    pub fn files(voice: &Path, ort_lib: &Path) -> [PathBuf; 3] {
        [
            voice.to_path_buf(),
            config_path(voice),
            ort_lib.to_path_buf(),
        ]
    }

    /// Load `voice` (`NAME.onnx`, with `NAME.onnx.json` beside it) on the ONNX Runtime library `ort_lib`.
    pub fn load(
        voice: &Path,
        ort_lib: &Path,
        phonemizer: Arc<dyn Phonemize>,
        options: &VoiceOptions,
    ) -> Result<Self, TtsError> {
        let name = voice_name(voice);
        let json_path = config_path(voice);
        for p in [voice, json_path.as_path()] {
            if !p.exists() {
                return Err(TtsError::VoiceMissing {
                    path: p.to_path_buf(),
                    name: name.clone(),
                });
            }
        }
        let corrupt = |path: &Path, message: String| TtsError::VoiceCorrupt {
            path: path.to_path_buf(),
            name: name.clone(),
            message,
        };
        let json = crate::budget::read_text(&json_path, crate::budget::MAX_TEXT_FILE_BYTES)
            .map_err(|e| corrupt(&json_path, e.to_string()))?;
        let config: VoiceConfig =
            serde_json::from_str(&json).map_err(|e| corrupt(&json_path, e.to_string()))?;
        config.validate().map_err(|m| corrupt(&json_path, m))?;
        let mut id_map = HashMap::new();
        for (k, v) in &config.phoneme_id_map {
            let mut cs = k.chars();
            if let (Some(c), None) = (cs.next(), cs.next()) {
                id_map.insert(c, v.clone());
            }
        }
        for needed in [timing::PAD, timing::BOS, timing::EOS] {
            if !id_map.contains_key(&needed) {
                return Err(corrupt(
                    &json_path,
                    format!("phoneme_id_map has no {needed:?}"),
                ));
            }
        }
        if let Some(s) = &options.speaker
            && config.num_speakers <= 1
        {
            return Err(TtsError::BadSpeaker(format!(
                "{s:?}: voice {name} has a single speaker"
            )));
        }
        let bytes = std::fs::read(voice).map_err(|e| corrupt(voice, e.to_string()))?;
        let (edited, edits) =
            edit_piper_graph(&bytes).map_err(|e| corrupt(voice, e.to_string()))?;
        drop(bytes);
        let env = ort_environment(ort_lib)?;
        let threads = options.threads.max(1);
        let session = |bytes: &[u8]| -> Result<Session, TtsError> {
            let fail = |e: String| corrupt(voice, e);
            let b = Session::builder(&env).map_err(|e| fail(e.to_string()))?;
            let b = b
                .with_intra_threads(threads)
                .map_err(|e| fail(e.to_string()))?;
            let b = b.with_inter_threads(1).map_err(|e| fail(e.to_string()))?;
            let b = b
                .with_memory_pattern(false)
                .map_err(|e| fail(e.to_string()))?;
            let mut b = b
                .with_parallel_execution(false)
                .map_err(|e| fail(e.to_string()))?;
            b.commit_from_memory(bytes).map_err(|e| fail(e.to_string()))
        };
        let sessions = match split_decoder(&edited, &edits, options.split_flow) {
            Ok(split) => Sessions::Split {
                front: session(&split.front)?,
                decoder: session(&split.decoder)?,
                latent: split.latent,
                cond: split.cond,
                flow: match split.flow {
                    Some(f) => Some(Box::new(FlowSession {
                        session: session(&f.graph)?,
                        prior: f.prior,
                        mask: f.mask,
                        reach: f.reach,
                    })),
                    None => None,
                },
            },
            Err(e) => {
                log::info!(
                    "{}: running the whole graph per clause ({e})",
                    voice.display()
                );
                Sessions::Whole(session(&edited)?)
            }
        };
        drop(edited);
        let first = match &sessions {
            Sessions::Whole(s) | Sessions::Split { front: s, .. } => s,
        };
        let has_sid = first.inputs().iter().any(|i| i.name() == "sid");
        let sid = match (&options.speaker, has_sid) {
            (None, true) => Some(0),
            (None, false) => None,
            (Some(s), true) => Some(resolve_speaker(s, &config)?),
            (Some(s), false) => {
                return Err(TtsError::BadSpeaker(format!(
                    "{s:?}: voice {name} has a single speaker"
                )));
            }
        };
        let inf = config.inference;
        let scales = [
            options.noise_scale.unwrap_or(inf.noise_scale),
            options.length_scale.unwrap_or(inf.length_scale),
            options.noise_w.unwrap_or(inf.noise_w),
        ];
        let mut v = PiperVoice {
            path: voice.to_path_buf(),
            config,
            id_map,
            sessions,
            noise: Vec::new(),
            edits,
            hop: 0,
            has_sid,
            sid,
            scales,
            base_scales: scales,
            seed: options.seed,
            clause: 0,
            phonemizer,
        };
        v.probe().map_err(|e| corrupt(voice, e.to_string()))?;
        Ok(v)
    }

    /// Synthesize already phonemized tokens.
    pub fn synthesize_tokens(&mut self, tokens: &[PhonToken]) -> Result<Speech, TtsError> {
        let enc = self.encode_tokens(tokens)?;
        self.synthesize_encoded(&enc, None, None)
    }

    fn encode_tokens(&self, tokens: &[PhonToken]) -> Result<Encoded, TtsError> {
        let enc = timing::encode(tokens, &self.id_map);
        if !enc.skipped.is_empty() {
            log::warn!(
                "voice {} has no phoneme for {:?}; skipped",
                voice_name(&self.path),
                enc.skipped.iter().collect::<String>()
            );
        }
        if enc.units.is_empty() {
            let text: Vec<String> = tokens
                .iter()
                .map(|t| match t {
                    PhonToken::Word { text, .. } => text.clone(),
                    PhonToken::Punct(c) => c.to_string(),
                })
                .collect();
            return Err(TtsError::Unspeakable(text.join(" ")));
        }
        Ok(enc)
    }

    /// Synthesize a clause, handing audio to `on_audio` as it is decoded: first `stream.first_frames`
    /// latent frames (so the first audio comes early), then `stream.chunk_frames` at a time. Returns the
    /// whole speech, whose timelines are known before the first audio (they come from the durations).
    pub fn synthesize_chunked(
        &mut self,
        clause: &str,
        stream: StreamOptions,
        on_audio: &mut dyn FnMut(&[f32]),
    ) -> Result<Speech, TtsError> {
        if clause.trim().is_empty() {
            return Err(TtsError::Empty);
        }
        let tokens = self.phonemizer.phonemize(clause)?;
        self.synthesize_tokens_chunked(&tokens, stream, on_audio)
    }

    /// [`PiperVoice::synthesize_chunked`] for already phonemized tokens.
    pub fn synthesize_tokens_chunked(
        &mut self,
        tokens: &[PhonToken],
        stream: StreamOptions,
        on_audio: &mut dyn FnMut(&[f32]),
    ) -> Result<Speech, TtsError> {
        let enc = self.encode_tokens(tokens)?;
        self.synthesize_encoded(&enc, Some((stream, on_audio)), None)
    }

    /// Synthesize a clause in two pieces for the lowest latency: as soon as the first chunk of audio
    /// is decoded (`stream.first_frames` latent frames), `on_head` gets it as a [`Speech`] of its own
    /// (its phonemes and words cut at its end) together with the clause's plan (the whole phoneme and
    /// word timelines, known from the durations before any audio, over silence of the clause's
    /// length); the rest of the clause is returned, its timelines starting
    /// at 0, so head + rest is exactly the clause [`PiperVoice::synthesize_chunked`] makes. When the
    /// clause fits in the first chunk, or the graph could not be cut at the vocoder, `on_head` is not
    /// called and the whole clause is returned.
    pub fn synthesize_head_first(
        &mut self,
        clause: &str,
        stream: StreamOptions,
        on_head: &mut dyn FnMut(Speech, Speech),
    ) -> Result<Speech, TtsError> {
        if clause.trim().is_empty() {
            return Err(TtsError::Empty);
        }
        let tokens = self.phonemizer.phonemize(clause)?;
        let enc = self.encode_tokens(&tokens)?;
        let mut nothing = |_: &[f32]| {};
        self.synthesize_encoded(&enc, Some((stream, &mut nothing)), Some(on_head))
    }

    fn synthesize_encoded(
        &mut self,
        enc: &Encoded,
        mut stream: Option<(StreamOptions, AudioSink<'_>)>,
        mut on_head: Option<HeadSink<'_>>,
    ) -> Result<Speech, TtsError> {
        let n = enc.ids.len();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(self.clause);
        self.clause += 1;
        // Frames per id, upper bound: speech runs at 3-5 frames per id at length scale 1.
        let mut per_id = (12.0 * self.scales[1].max(0.1)).ceil() as usize;
        let mut front = loop {
            let dims: Vec<(usize, usize)> = self
                .noise
                .iter()
                .map(|s| (s.channels, if s.per_frame { n * per_id } else { n }))
                .collect();
            let mut attempt_rng = rng.clone();
            match self.run_front(&enc.ids, &dims, &mut attempt_rng, self.scales) {
                Ok(out) => break out,
                Err(e) if per_id < 4096 => {
                    log::debug!(
                        "synthesis with {per_id} noise frames per id failed ({e}); retrying"
                    );
                    per_id *= 4;
                }
                Err(e) => return Err(e),
            }
        };
        let total = front.total_frames();
        let mut head: Option<usize> = None;
        let pcm = match &mut stream {
            None => self.decode(&mut front, 0, total, 0)?,
            Some((opts, on_audio)) => {
                let mut pcm = Vec::with_capacity(total * self.hop as usize);
                let mut from = 0;
                let mut size = opts.first_frames.max(1);
                while from < total {
                    let to = (from + size).min(total);
                    // Do not leave a sliver for the last chunk.
                    let to = if total - to < opts.chunk_frames / 4 {
                        total
                    } else {
                        to
                    };
                    let chunk = self.decode(&mut front, from, to, opts.context_frames)?;
                    on_audio(&chunk);
                    if from == 0
                        && to < total
                        && self.hop > 0
                        && chunk.len() as u64 == to as u64 * self.hop
                        && let Some(f) = on_head.as_mut()
                    {
                        let rate = self.config.audio.sample_rate;
                        let planned = total as u64 * self.hop;
                        let (phonemes, words) =
                            timing::timelines(enc, &front.frames, self.hop, planned, rate);
                        let at = crate::time::SampleTime(chunk.len() as u64);
                        let (mut head_phonemes, mut head_words) = (phonemes.clone(), words.clone());
                        head_phonemes.truncate(at);
                        head_words.truncate(at);
                        f(
                            Speech {
                                pcm: chunk.clone(),
                                sample_rate: rate,
                                phonemes: head_phonemes,
                                words: head_words,
                            },
                            Speech {
                                pcm: vec![0.0; planned as usize],
                                sample_rate: rate,
                                phonemes,
                                words,
                            },
                        );
                        head = Some(chunk.len());
                    }
                    pcm.extend_from_slice(&chunk);
                    from = to;
                    size = opts.chunk_frames.max(1);
                }
                pcm
            }
        };
        let rate = self.config.audio.sample_rate;
        let samples = pcm.len() as u64;
        let (mut phonemes, mut words) =
            timing::timelines(enc, &front.frames, self.hop, samples, rate);
        if let Some(a) = head {
            // The head went out already: return the rest, on its own timeline.
            let at = crate::time::SampleTime(a as u64);
            return Ok(Speech {
                pcm: pcm[a..].to_vec(),
                sample_rate: rate,
                phonemes: phonemes.split_off(at),
                words: words.split_off(at),
            });
        }
        Ok(Speech {
            pcm,
            sample_rate: rate,
            phonemes,
            words,
        })
    }

    /// Frames of context the flow needs either side of a span, when the flow runs span by span (the
    /// graph's flow could be cut out): then a first chunk's latency does not grow with the clause.
    pub fn flow_reach(&self) -> Option<usize> {
        match &self.sessions {
            Sessions::Split { flow: Some(f), .. } => Some(f.reach),
            _ => None,
        }
    }

    /// The voice's config.
    pub fn config(&self) -> &VoiceConfig {
        &self.config
    }

    /// Samples per duration frame.
    pub fn hop(&self) -> u64 {
        self.hop
    }

    /// The Piper-layout IPA and ids a clause would be synthesized from.
    pub fn encode(&self, text: &str) -> Result<Encoded, TtsError> {
        let tokens = self.phonemizer.phonemize(text)?;
        Ok(timing::encode(&tokens, &self.id_map))
    }

    /// Restart the noise streams: the next clause is clause 0 of `seed`.
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
        self.clause = 0;
    }

    /// Set noise scale, length scale and noise width.
    pub fn set_scales(&mut self, noise_scale: f32, length_scale: f32, noise_w: f32) {
        self.scales = [noise_scale, length_scale, noise_w];
    }
}

/// Where streamed audio chunks go.
type AudioSink<'a> = &'a mut dyn FnMut(&[f32]);
type HeadSink<'a> = &'a mut dyn FnMut(Speech, Speech);

/// How [`PiperVoice::synthesize_chunked`] cuts the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Latent frames in the first chunk (a frame is `hop` samples: 256 at 22050 Hz, 11.6 ms).
    pub first_frames: usize,
    /// Latent frames in each later chunk.
    pub chunk_frames: usize,
    /// Frames decoded either side of a chunk and thrown away, so its edges match a whole decode (the
    /// joe voice: 8 frames give 59 dB SNR against a whole-clause decode, 16 give 129 dB, i.e. exact).
    pub context_frames: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            first_frames: 16,
            chunk_frames: 96,
            context_frames: 12,
        }
    }
}

/// `[1, c, t]` standard normal noise; value `(c, t)` is draw `t·c_total + c`, so a longer `t` only
/// appends columns.
fn gaussian(rng: &mut ChaCha8Rng, c: usize, t: usize) -> Vec<f32> {
    let mut out = vec![0f32; c * t];
    for ti in 0..t {
        for ci in 0..c {
            out[ci * t + ti] = StandardNormal.sample(rng);
        }
    }
    out
}

impl Synthesizer for PiperVoice {
    fn sample_rate(&self) -> u32 {
        self.config.audio.sample_rate
    }

    fn set_seed(&mut self, seed: u64) {
        PiperVoice::set_seed(self, seed)
    }

    /// Emphasis widens the noise scales by up to 50%: livelier pitch and timing.
    fn set_style(&mut self, length_scale: Option<f32>, emphasis: f32) {
        let [ns, ls, nw] = self.base_scales;
        let boost = 1.0 + 0.5 * emphasis.clamp(0.0, 1.0);
        self.set_scales(ns * boost, length_scale.unwrap_or(ls), nw * boost);
    }

    fn synthesize(&mut self, clause: &str) -> Result<Speech, TtsError> {
        if clause.trim().is_empty() {
            return Err(TtsError::Empty);
        }
        let tokens = self.phonemizer.phonemize(clause)?;
        self.synthesize_tokens(&tokens)
    }

    /// Chunked decoding with [`StreamOptions::default`] (first audio after 16 latent frames).
    fn synthesize_streaming(
        &mut self,
        clause: &str,
        on_audio: &mut dyn FnMut(&[f32]),
    ) -> Result<Speech, TtsError> {
        self.synthesize_chunked(clause, StreamOptions::default(), on_audio)
    }

    fn synthesize_head_first(
        &mut self,
        clause: &str,
        on_head: &mut dyn FnMut(Speech, Speech),
    ) -> Result<Speech, TtsError> {
        PiperVoice::synthesize_head_first(self, clause, StreamOptions::default(), on_head)
    }
}
