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

use super::onnx::{PiperGraphEdits, edit_piper_graph, split_decoder};
use super::timing::{self, Encoded};
use super::{Synthesizer, TtsError};
use crate::phonemize::{PhonToken, Phonemize};
use crate::speech::Speech;
use ort::session::Session;
use ort::value::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The `.onnx.json` fields idol reads.
#[derive(Debug, Clone, Deserialize)]
pub struct VoiceConfig {
    pub audio: AudioConfig,
    #[serde(default)]
    pub espeak: Option<EspeakConfig>,
    #[serde(default)]
    pub inference: InferenceConfig,
    pub phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default = "one")]
    pub num_speakers: u32,
    #[serde(default)]
    pub speaker_id_map: HashMap<String, i64>,
    #[serde(default)]
    pub phoneme_type: Option<String>,
    #[serde(default)]
    pub language: Option<LanguageConfig>,
}

/// The voice's language as Piper writes it (`"code": "en_US"`).
#[derive(Debug, Clone, Deserialize)]
pub struct LanguageConfig {
    pub code: String,
}

impl VoiceConfig {
    /// The language the voice speaks, as a base ISO 639-1 code (`en`): from `language.code`, else
    /// the espeak voice (`en-us`, `cmn` → `zh`); `None` when the config says neither.
    pub fn language(&self) -> Option<String> {
        let code = match (&self.language, &self.espeak) {
            (Some(l), _) => l.code.clone(),
            (None, Some(e)) => e.voice.clone(),
            _ => return None,
        };
        let base = code
            .split(['_', '-'])
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match base.as_str() {
            "cmn" | "yue" => "zh".to_string(),
            _ => base,
        })
    }
}

/// The languages the voice `voice` (`NAME.onnx`, its `NAME.onnx.json` beside it) speaks; empty when
/// its config cannot be read or does not say.
pub fn voice_languages(voice: &Path) -> Vec<String> {
    let json_path = PathBuf::from(format!("{}.json", voice.display()));
    crate::budget::read_text(&json_path, crate::budget::MAX_TEXT_FILE_BYTES)
        .ok()
        .and_then(|j| serde_json::from_str::<VoiceConfig>(&j).ok())
        .and_then(|c| c.language())
        .into_iter()
        .collect()
}

fn one() -> u32 {
    1
}

/// The sample rates a voice may have (Piper's voices are 16000 and 22050 Hz).
pub const VOICE_RATES: std::ops::RangeInclusive<u32> = 8_000..=96_000;

impl VoiceConfig {
    /// Check what serde cannot: a sample rate, scales and maps a voice can really have. The message
    /// names the field and what is allowed (the caller adds the file).
    pub fn validate(&self) -> Result<(), String> {
        let rate = self.audio.sample_rate;
        if !VOICE_RATES.contains(&rate) {
            return Err(format!(
                "audio.sample_rate is {rate}; allowed {}..={} Hz",
                VOICE_RATES.start(),
                VOICE_RATES.end()
            ));
        }
        let inf = &self.inference;
        for (name, v, lo, hi) in [
            ("inference.length_scale", inf.length_scale, 0.1, 10.0),
            ("inference.noise_scale", inf.noise_scale, 0.0, 5.0),
            ("inference.noise_w", inf.noise_w, 0.0, 5.0),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!("{name} is {v}; allowed {lo}..={hi}"));
            }
        }
        if self.phoneme_id_map.is_empty() || self.phoneme_id_map.len() > 4096 {
            return Err(format!(
                "phoneme_id_map has {} entries; allowed 1..=4096",
                self.phoneme_id_map.len()
            ));
        }
        for (k, ids) in &self.phoneme_id_map {
            if ids.is_empty() || ids.len() > 16 || ids.iter().any(|&i| !(0..65536).contains(&i)) {
                return Err(format!(
                    "phoneme_id_map[{k:?}] is {ids:?}; each phoneme maps to 1..=16 ids in 0..65536"
                ));
            }
        }
        if !(1..=65536).contains(&self.num_speakers) {
            return Err(format!(
                "num_speakers is {}; allowed 1..=65536",
                self.num_speakers
            ));
        }
        let n = i64::from(self.num_speakers);
        if let Some((name, id)) = self
            .speaker_id_map
            .iter()
            .find(|(_, id)| !(0..n).contains(*id))
        {
            return Err(format!(
                "speaker_id_map[{name:?}] is {id}; allowed 0..{n} (num_speakers)"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AudioConfig {
    pub sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EspeakConfig {
    pub voice: String,
}

/// Inference defaults of a voice.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct InferenceConfig {
    #[serde(default = "noise_scale")]
    pub noise_scale: f32,
    #[serde(default = "length_scale")]
    pub length_scale: f32,
    #[serde(default = "noise_w")]
    pub noise_w: f32,
}

fn noise_scale() -> f32 {
    0.667
}
fn length_scale() -> f32 {
    1.0
}
fn noise_w() -> f32 {
    0.8
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            noise_scale: noise_scale(),
            length_scale: length_scale(),
            noise_w: noise_w(),
        }
    }
}

/// Which speaker of a multi-speaker voice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speaker {
    Id(i64),
    Name(String),
}

impl std::str::FromStr for Speaker {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<i64>() {
            Ok(id) => Speaker::Id(id),
            Err(_) => Speaker::Name(s.to_string()),
        })
    }
}

/// How to load and run a voice.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceOptions {
    /// ONNX Runtime intra-op threads (default 1).
    pub threads: usize,
    /// Overrides of the voice's inference defaults.
    pub noise_scale: Option<f32>,
    pub length_scale: Option<f32>,
    pub noise_w: Option<f32>,
    pub speaker: Option<Speaker>,
    pub seed: u64,
    /// Run the flow span by span where the graph allows (default): a first chunk then costs the same
    /// for any clause length. `false` keeps the flow in the front (whole clause at once); the audio is
    /// the same either way (for comparisons, see `benches/tts.rs`).
    pub split_flow: bool,
}

impl Default for VoiceOptions {
    fn default() -> Self {
        VoiceOptions {
            threads: 1,
            noise_scale: None,
            length_scale: None,
            noise_w: None,
            speaker: None,
            seed: 0,
            split_flow: true,
        }
    }
}

/// What the probe learned about one noise input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NoiseShape {
    channels: usize,
    per_frame: bool,
}

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime environment, loading the library at `lib` on first use.
pub fn ort_environment(lib: &Path) -> Result<ort::environment::Environment, TtsError> {
    let env = ENVIRONMENT.get_or_init(|| {
        if !lib.exists() {
            return Err(format!(
                "ONNX Runtime library not found at {}: run `idol fetch`",
                lib.display()
            ));
        }
        check_elf_complete(lib).map_err(|e| {
            format!(
                "ONNX Runtime library at {} is corrupt ({e}): delete it and run `idol fetch`",
                lib.display()
            )
        })?;
        ort::init_from(lib)
            .map_err(|e| format!("{}: {e}: {}", lib.display(), LOAD_HINT))?
            .with_name("idol")
            .build()
            .map_err(|e| format!("{}: {e}", lib.display()))
    });
    env.clone().map_err(TtsError::Runtime)
}

/// What to do when the ONNX Runtime library is there but does not load.
#[cfg(windows)]
const LOAD_HINT: &str = "run `idol fetch` to reinstall it; if it is whole, install the Microsoft Visual C++ \
     Redistributable (x64), which onnxruntime.dll needs (MSVCP140.dll, VCRUNTIME140.dll)";
#[cfg(not(windows))]
const LOAD_HINT: &str = "run `idol fetch` to reinstall it";

/// Checks that a shared library in ELF form holds every byte its headers promise. Loading a
/// truncated library maps pages past the end of the file, and the first touch of one kills the
/// process with SIGBUS instead of returning an error, so this is checked before `dlopen`. Other
/// formats (Mach-O, PE) pass unchecked: the loader reports their problems itself.
pub fn check_elf_complete(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut head = Vec::with_capacity(64 * 1024);
    f.take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    if !head.starts_with(b"\x7fELF") {
        return Ok(());
    }
    // 64-bit little-endian only (the platforms ONNX Runtime ships ELF for); others pass unchecked.
    if head.len() < 64 || head[4] != 2 || head[5] != 1 {
        return if head.len() < 64 {
            Err(format!("{len} bytes: shorter than an ELF header"))
        } else {
            Ok(())
        };
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as u64;
    let u64_at = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().expect("8 bytes"));
    let (phoff, shoff) = (u64_at(0x20), u64_at(0x28));
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    let (shentsize, shnum) = (u16_at(0x3a), u16_at(0x3c));
    let mut needed = shoff.saturating_add(shentsize.saturating_mul(shnum));
    let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    needed = needed.max(ph_end);
    if phentsize >= 0x28 && ph_end <= head.len() as u64 {
        for i in 0..phnum {
            let o = (phoff + i * phentsize) as usize;
            let (offset, filesz) = (u64_at(o + 8), u64_at(o + 0x20));
            needed = needed.max(offset.saturating_add(filesz));
        }
    }
    if len < needed {
        return Err(format!(
            "{len} bytes where its headers need {needed}: the file is truncated"
        ));
    }
    Ok(())
}

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

    /// Learn the noise shapes and the hop from one tiny run (this also warms the session up).
    fn probe(&mut self) -> Result<(), TtsError> {
        // Two lengths, in case one run's frame count happens to equal its id count.
        for ipa in ["ˈa", "ˈaɪ ˈaɪ ˈaɪ"] {
            let token = PhonToken::Word {
                text: "a".into(),
                ipa: ipa.into(),
            };
            let enc = timing::encode(&[token], &self.id_map);
            let n = enc.ids.len() as i64;
            let big: Vec<(usize, usize)> =
                self.edits.noise_inputs.iter().map(|_| (512, 512)).collect();
            let mut front = self.run_front(
                &enc.ids,
                &big,
                &mut ChaCha8Rng::seed_from_u64(0),
                [0.0, 1.0, 0.0],
            )?;
            let frames: u64 = front.frames.iter().sum();
            let total = front.total_frames();
            let pcm = self.decode(&mut front, 0, total, 0)?;
            if frames == 0 || !(pcm.len() as u64).is_multiple_of(frames) {
                return Err(TtsError::Runtime(format!(
                    "the audio ({} samples) is not a whole number of duration frames ({frames})",
                    pcm.len()
                )));
            }
            if frames as i64 == n {
                continue;
            }
            let mut noise = Vec::new();
            for shape in &front.noise_shapes {
                let [_, c, t] = shape[..] else {
                    return Err(TtsError::Runtime(format!(
                        "noise of rank {} (expected 3)",
                        shape.len()
                    )));
                };
                if t != n && t != frames as i64 {
                    return Err(TtsError::Runtime(format!(
                        "noise length {t} follows neither the ids ({n}) nor the frames ({frames})"
                    )));
                }
                noise.push(NoiseShape {
                    channels: c as usize,
                    per_frame: t != n,
                });
            }
            self.hop = pcm.len() as u64 / frames;
            self.noise = noise;
            return Ok(());
        }
        Err(TtsError::Runtime(
            "could not tell the noise inputs apart".into(),
        ))
    }

    fn common_inputs(
        &self,
        ids: &[i64],
        noise_dims: &[(usize, usize)],
        rng: &mut ChaCha8Rng,
        scales: [f32; 3],
    ) -> Result<Vec<(String, ort::session::SessionInputValue<'static>)>, TtsError> {
        let n = ids.len();
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'static>)> = vec![
            (
                "input".into(),
                Tensor::from_array(([1usize, n], ids.to_vec()))
                    .map_err(rt)?
                    .into(),
            ),
            (
                "input_lengths".into(),
                Tensor::from_array(([1usize], vec![n as i64]))
                    .map_err(rt)?
                    .into(),
            ),
            (
                "scales".into(),
                Tensor::from_array(([3usize], scales.to_vec()))
                    .map_err(rt)?
                    .into(),
            ),
        ];
        if self.has_sid {
            inputs.push(("sid".into(), self.sid_tensor()?));
        }
        for (name, &(c, t)) in self.edits.noise_inputs.iter().zip(noise_dims) {
            let noise = Tensor::from_array(([1usize, c, t], gaussian(rng, c, t))).map_err(rt)?;
            inputs.push((name.clone(), noise.into()));
        }
        Ok(inputs)
    }

    fn sid_tensor(&self) -> Result<ort::session::SessionInputValue<'static>, TtsError> {
        let sid = self.sid.unwrap_or(0);
        Ok(Tensor::from_array(([1usize], vec![sid]))
            .map_err(rt)?
            .into())
    }

    /// The front of the graph: durations, noise shapes, and the latent (or, for a graph that could not
    /// be split, the audio).
    fn run_front(
        &mut self,
        ids: &[i64],
        noise_dims: &[(usize, usize)],
        rng: &mut ChaCha8Rng,
        scales: [f32; 3],
    ) -> Result<Front, TtsError> {
        let inputs = self.common_inputs(ids, noise_dims, rng, scales)?;
        let durations = self.edits.durations.clone();
        let shapes = self.edits.noise_shapes.clone();
        let (session, latent_name, lazy) = match &mut self.sessions {
            Sessions::Whole(s) => (s, None, false),
            Sessions::Split {
                front,
                latent,
                flow,
                ..
            } => match flow {
                // the front ends at the flow's input: the latent is made span by span in `decode`
                Some(f) => (front, Some(f.prior.clone()), true),
                None => (front, Some(latent.clone()), false),
            },
        };
        let outputs = session.run(inputs).map_err(rt)?;
        let frames = outputs[durations.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(rt)?
            .1
            .iter()
            .map(|d| d.max(0.0).round() as u64)
            .collect();
        let mut noise_shapes = Vec::new();
        for name in &shapes {
            let (_, s) = outputs[name.as_str()]
                .try_extract_tensor::<i64>()
                .map_err(rt)?;
            noise_shapes.push(s.to_vec());
        }
        let body = match latent_name {
            None => FrontBody::Audio(
                outputs["output"]
                    .try_extract_tensor::<f32>()
                    .map_err(rt)?
                    .1
                    .to_vec(),
            ),
            Some(name) => {
                let (shape, data) = outputs[name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(rt)?;
                let [_, c, t] = shape[..] else {
                    return Err(TtsError::Runtime(format!(
                        "latent of rank {} (expected 3)",
                        shape.len()
                    )));
                };
                let (c, t) = (c as usize, t as usize);
                // a flow input: no latent frame is known yet
                let (data, prior, valid) = if lazy {
                    (vec![0.0; c * t], Some(data.to_vec()), (0, 0))
                } else {
                    (data.to_vec(), None, (0, t))
                };
                FrontBody::Latent {
                    data,
                    channels: c,
                    frames: t,
                    prior,
                    valid,
                }
            }
        };
        Ok(Front {
            frames,
            noise_shapes,
            body,
        })
    }

    /// Audio for latent frames `from..to`, decoded with up to `context` frames either side (so the
    /// chunk's edges sound as they do inside a whole-clause decode) and trimmed to the span.
    fn decode(
        &mut self,
        front: &mut Front,
        from: usize,
        to: usize,
        context: usize,
    ) -> Result<Vec<f32>, TtsError> {
        if let FrontBody::Latent { frames, valid, .. } = &front.body {
            let to = to.min(*frames);
            let (start, end) = (from.saturating_sub(context), (to + context).min(*frames));
            if from < to && (start < valid.0 || end > valid.1) {
                self.flow_span(front, start, end)?;
            }
        }
        let sid = self.sid.unwrap_or(0);
        let hop = self.hop.max(1) as usize;
        match (&front.body, &mut self.sessions) {
            (FrontBody::Audio(pcm), _) => {
                let (a, b) = if self.hop == 0 {
                    (0, pcm.len())
                } else {
                    (from * hop, (to * hop).min(pcm.len()))
                };
                Ok(pcm[a.min(b)..b].to_vec())
            }
            (
                FrontBody::Latent {
                    data,
                    channels,
                    frames,
                    ..
                },
                Sessions::Split {
                    decoder,
                    latent,
                    cond,
                    ..
                },
            ) => {
                let (c, t) = (*channels, *frames);
                let to = to.min(t);
                if from >= to {
                    return Ok(Vec::new());
                }
                let start = from.saturating_sub(context);
                let end = (to + context).min(t);
                let w = end - start;
                let mut chunk = Vec::with_capacity(c * w);
                for ch in 0..c {
                    chunk.extend_from_slice(&data[ch * t + start..ch * t + end]);
                }
                let mut inputs: Vec<(String, ort::session::SessionInputValue<'static>)> = vec![(
                    latent.clone(),
                    Tensor::from_array(([1usize, c, w], chunk))
                        .map_err(rt)?
                        .into(),
                )];
                for name in cond.iter() {
                    if name != "sid" {
                        return Err(TtsError::Runtime(format!(
                            "the decoder needs {name:?}, which idol does not feed"
                        )));
                    }
                    inputs.push((
                        name.clone(),
                        Tensor::from_array(([1usize], vec![sid]))
                            .map_err(rt)?
                            .into(),
                    ));
                }
                let outputs = decoder.run(inputs).map_err(rt)?;
                let pcm = outputs["output"].try_extract_tensor::<f32>().map_err(rt)?.1;
                let hop = if self.hop == 0 {
                    pcm.len() / w.max(1)
                } else {
                    hop
                };
                let a = (from - start) * hop;
                let b = ((to - start) * hop).min(pcm.len());
                Ok(pcm[a.min(b)..b].to_vec())
            }
            (FrontBody::Latent { .. }, Sessions::Whole(_)) => Err(TtsError::Runtime(
                "latent from a whole-graph session".into(),
            )),
        }
    }

    /// Run the flow so the latent frames `start..end` are known: with the flow's reach of context on
    /// either side (its output there equals the whole-clause flow's). A span from the clause start (a
    /// first chunk) gets just what it needs; any later span gets everything to the clause's end at
    /// once, so a clause runs the flow at most twice.
    fn flow_span(&mut self, front: &mut Front, start: usize, end: usize) -> Result<(), TtsError> {
        let FrontBody::Latent {
            data,
            channels,
            frames,
            prior: Some(prior),
            valid,
        } = &mut front.body
        else {
            return Ok(());
        };
        let Sessions::Split {
            flow: Some(flow), ..
        } = &mut self.sessions
        else {
            return Err(TtsError::Runtime(
                "the voice has no flow session for a flow input".into(),
            ));
        };
        let (c, t, reach) = (*channels, *frames, flow.reach);
        let a = start.saturating_sub(reach);
        let b = if start == 0 { (end + reach).min(t) } else { t };
        let w = b - a;
        let mut window = Vec::with_capacity(c * w);
        for ch in 0..c {
            window.extend_from_slice(&prior[ch * t + a..ch * t + b]);
        }
        let inputs: Vec<(String, ort::session::SessionInputValue<'static>)> = vec![
            (
                flow.prior.clone(),
                Tensor::from_array(([1usize, c, w], window))
                    .map_err(rt)?
                    .into(),
            ),
            (
                flow.mask.clone(),
                Tensor::from_array(([1usize, 1, w], vec![1f32; w]))
                    .map_err(rt)?
                    .into(),
            ),
        ];
        let outputs = flow.session.run(inputs).map_err(rt)?;
        let (shape, z) = outputs[0].try_extract_tensor::<f32>().map_err(rt)?;
        if shape.len() != 3 || shape[1] as usize != c || shape[2] as usize != w {
            return Err(TtsError::Runtime(format!(
                "the flow gave a latent of shape {shape:?} for [1, {c}, {w}]"
            )));
        }
        let lo = if a == 0 { 0 } else { a + reach };
        let hi = if b == t { t } else { b - reach };
        for ch in 0..c {
            data[ch * t + lo..ch * t + hi].copy_from_slice(&z[ch * w + lo - a..ch * w + hi - a]);
        }
        *valid = (lo, hi);
        Ok(())
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

fn rt(e: ort::Error) -> TtsError {
    TtsError::Runtime(e.to_string())
}

/// The sessions of a voice: the graph cut at the vocoder (so audio can be decoded in chunks), or whole.
enum Sessions {
    Whole(Session),
    Split {
        front: Session,
        decoder: Session,
        latent: String,
        cond: Vec<String>,
        /// The flow cut out of the front (the front then ends at its input).
        flow: Option<Box<FlowSession>>,
    },
}

/// The flow on its own (see [`crate::tts::onnx::FlowSplit`]).
struct FlowSession {
    session: Session,
    prior: String,
    mask: String,
    reach: usize,
}

/// What the front of the graph gives for a clause.
struct Front {
    frames: Vec<u64>,
    noise_shapes: Vec<Vec<i64>>,
    body: FrontBody,
}

enum FrontBody {
    Latent {
        /// `[channels, frames]`; only `valid` holds latent frames when `prior` is kept.
        data: Vec<f32>,
        channels: usize,
        frames: usize,
        /// The flow's input `[channels, frames]`, when the flow runs span by span.
        prior: Option<Vec<f32>>,
        valid: (usize, usize),
    },
    Audio(Vec<f32>),
}

impl Front {
    fn total_frames(&self) -> usize {
        match &self.body {
            FrontBody::Latent { frames, .. } => *frames,
            FrontBody::Audio(_) => self.frames.iter().sum::<u64>() as usize,
        }
    }
}

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

fn resolve_speaker(s: &Speaker, config: &VoiceConfig) -> Result<i64, TtsError> {
    match s {
        Speaker::Id(id) if *id >= 0 && (*id as u64) < u64::from(config.num_speakers) => Ok(*id),
        Speaker::Id(id) => Err(TtsError::BadSpeaker(format!(
            "speaker {id} is out of range: the voice has {} speakers (0..{})",
            config.num_speakers, config.num_speakers
        ))),
        Speaker::Name(n) => config.speaker_id_map.get(n).copied().ok_or_else(|| {
            let mut names: Vec<&String> = config.speaker_id_map.keys().collect();
            names.sort();
            TtsError::BadSpeaker(format!("no speaker named {n:?}; the voice has {names:?}"))
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(audio: &str, inference: &str) -> VoiceConfig {
        serde_json::from_str(&format!(
            r#"{{"audio": {audio}, "inference": {inference}, "num_speakers": 1,
                "phoneme_id_map": {{"_": [0], "^": [1], "$": [2], "a": [14]}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn voice_configs_that_cannot_be_true_are_refused() {
        let ok = r#"{"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8}"#;
        assert_eq!(config(r#"{"sample_rate": 22050}"#, ok).validate(), Ok(()));
        let e = config(r#"{"sample_rate": 4294967295}"#, ok)
            .validate()
            .unwrap_err();
        assert!(e.contains("audio.sample_rate is 4294967295"), "{e}");
        let e = config(r#"{"sample_rate": 0}"#, ok).validate().unwrap_err();
        assert!(e.contains("allowed 8000..=96000 Hz"), "{e}");
        let e = config(
            r#"{"sample_rate": 22050}"#,
            r#"{"noise_scale": 0.667, "length_scale": -1, "noise_w": 0.8}"#,
        )
        .validate()
        .unwrap_err();
        assert!(e.contains("inference.length_scale is -1"), "{e}");
        let mut c = config(r#"{"sample_rate": 22050}"#, ok);
        c.phoneme_id_map.insert("b".into(), vec![]);
        assert!(c.validate().unwrap_err().contains("phoneme_id_map[\"b\"]"));
        let mut c = config(r#"{"sample_rate": 22050}"#, ok);
        c.speaker_id_map.insert("x".into(), 3);
        assert!(c.validate().unwrap_err().contains("speaker_id_map"));
    }
}
