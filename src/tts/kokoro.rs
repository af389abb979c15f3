//! Kokoro-82M voices (StyleTTS 2 with an iSTFTNet decoder, 24 kHz) on ONNX Runtime.
//!
//! One graph speaks every voice: a voice is a table of 256-wide style vectors (`voices_ja.npz`,
//! `[510, 1, 256]` per voice), and the row used for a run is the one for its token count. The graph
//! takes `tokens` `[1, n + 2]` (the phoneme string's code points mapped through `vocab.json`, with
//! id 0 at both ends), `style` `[1, 256]` and `speed` `[1]`, and outputs `audio`. At load it is cut
//! in memory in two ([`super::onnx::split_kokoro_graph`]): a front that outputs the per-token
//! durations (the duration predictor's rounded frames, the `Clip` after its `Round`), so the face
//! gets the model's own timing, with the decoder's inputs for every frame (aligned features, F0 and
//! energy curves, the sine source's phase), and a decoder that turns any window of those frames into
//! audio. Run on all the frames, the two give the uncut graph's audio bit for bit; run on the first
//! frames, the decoder gives a clause's head early ([`KokoroVoice::synthesize_located_head_first`]).
//! A probe run learns the hop (samples per frame, 600 at 24 kHz) and warms the sessions.
//!
//! The graph has no random nodes: a render is a pure function of (text, voice, speed); the seed of
//! [`super::VoiceOptions`] has nothing to drive.
//!
//! Text → phonemes: [`crate::phonemize::kokoro::KokoroPhonemizer`] (Japanese, Mandarin, English by
//! script). The phonemes are laid out as misaki writes them (words separated by a space,
//! punctuation right after its word) and grouped into units as heard (a base symbol with the
//! modifiers after it: `ʲ ʰ ː ᵝ` and the tone arrows); each token's duration goes to its unit, a
//! space between words to the next word's first unit, the end pads and punctuation to silence
//! (see [`super::timing`]).
//!
//! A clause longer than the model's 510 tokens is cut at word boundaries and its pieces appended.
//!
//! Threading: a [`KokoroVoice`] owns its sessions and is used from one thread at a time.

use super::onnx::{KokoroSplit, split_kokoro_graph};
use super::piper::ort_environment;
use super::timing::{self, Encoded, Owner, Unit};
use super::{Synthesizer, TtsError};
use crate::phonemize::{Located, PhonToken, Phonemize};
use crate::speech::{Phoneme, Speech, Word};
use ort::session::Session;
use ort::value::Tensor;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Kokoro's sample rate.
pub const SAMPLE_RATE: u32 = 24_000;
/// The most phoneme tokens one run takes (the style table's rows; the model's context is 512 with the
/// two end pads).
pub const MAX_TOKENS: usize = 510;
/// Width of a style vector.
const STYLE: usize = 256;

/// Frames (25 ms each at the hop of 600) a clause's head is: the audio handed over before the rest
/// of the clause is decoded ([`KokoroVoice::synthesize_located_head_first`]). It lies within the
/// clause's leading pause (the start pad lasts 12-14 frames at the voice's own pace).
pub const HEAD_FRAMES: usize = 8;
/// Frames decoded after the head in its window, so the decoder's convolutions see what follows it.
pub const HEAD_CONTEXT: usize = 8;
/// A clause whose frames leave less than this after the head's window is spoken whole.
const MIN_REST_FRAMES: usize = 8;
/// Samples (10 ms) over which the rest fades in from the head window's audio.
pub const SEAM: usize = 240;

/// Fade the first [`SEAM`] samples of `rest` in from `from` (the head window's audio at the same
/// place), so the join with the head has no step.
fn seam(rest: &mut [f32], from: &[f32]) {
    let n = SEAM.min(rest.len()).min(from.len());
    for i in 0..n {
        let t = (i as f32 + 0.5) / n as f32;
        rest[i] = from[i] * (1.0 - t) + rest[i] * t;
    }
}

/// The voice names of the pinned Japanese voice table.
pub const JA_VOICES: [&str; 5] = [
    "jf_alpha",
    "jf_gongitsune",
    "jf_nezumi",
    "jf_tebukuro",
    "jm_kumo",
];

/// The files a Kokoro voice is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KokoroFiles {
    pub model: PathBuf,
    pub vocab: PathBuf,
    pub voices: PathBuf,
}

impl KokoroFiles {
    /// The pinned files under `home`'s `voices/`.
    pub fn in_home(home: &crate::assets::Home) -> KokoroFiles {
        KokoroFiles {
            model: home.path(crate::assets::KOKORO_MODEL),
            vocab: home.path(crate::assets::KOKORO_VOCAB),
            voices: home.path(crate::assets::KOKORO_VOICES),
        }
    }

    pub fn all(&self) -> [PathBuf; 3] {
        [self.model.clone(), self.vocab.clone(), self.voices.clone()]
    }
}

/// Is `name` a Kokoro voice name (`jf_alpha`, or `kokoro:jf_alpha`)? Returns the bare name.
pub fn kokoro_voice_name(name: &str) -> Option<&str> {
    let bare = name.strip_prefix("kokoro:").unwrap_or(name);
    (name.starts_with("kokoro:") || JA_VOICES.contains(&bare)).then_some(bare)
}

/// How to run a Kokoro voice.
#[derive(Debug, Clone, PartialEq)]
pub struct KokoroOptions {
    /// The voice (a member of the voice table, e.g. `jf_alpha`).
    pub voice: String,
    /// ONNX Runtime intra-op threads (default 1).
    pub threads: usize,
    /// Length scale: 1.0 is the voice's pace, 1.2 slower (the graph's `speed` is its inverse).
    pub length_scale: f32,
}

impl Default for KokoroOptions {
    fn default() -> Self {
        KokoroOptions {
            voice: "jf_alpha".into(),
            threads: 1,
            length_scale: 1.0,
        }
    }
}

/// A loaded Kokoro voice.
pub struct KokoroVoice {
    /// Text → durations and the decoder's inputs ([`KokoroSplit`]).
    front: Session,
    /// Any window of frames → its audio.
    decoder: Session,
    names: KokoroSplit,
    vocab: HashMap<char, i64>,
    /// `[rows, 256]`.
    styles: Vec<f32>,
    rows: usize,
    speed: f32,
    /// The speed it was loaded with.
    base_speed: f32,
    hop: u64,
    name: String,
    phonemizer: Arc<dyn Phonemize>,
}

impl std::fmt::Debug for KokoroVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KokoroVoice")
            .field("voice", &self.name)
            .field("hop", &self.hop)
            .finish_non_exhaustive()
    }
}

fn rt(e: ort::Error) -> TtsError {
    TtsError::Runtime(e.to_string())
}

/// Read a little-endian float32 `.npy` array: its shape and values.
pub fn read_npy_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy array".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!(".npy version {v} is not read")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or(".npy header runs past the end")?;
    let header = std::str::from_utf8(header).map_err(|_| ".npy header is not text")?;
    if !header.contains("'descr': '<f4'") {
        return Err(format!("expected little-endian float32, header {header:?}"));
    }
    if header.contains("'fortran_order': True") {
        return Err("Fortran-ordered arrays are not read".into());
    }
    let shape_start = header.find("'shape': (").ok_or("no shape")? + "'shape': (".len();
    let shape_end = header[shape_start..].find(')').ok_or("no shape end")? + shape_start;
    let shape: Vec<usize> = header[shape_start..shape_end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension {s:?}"))
        })
        .collect::<Result<_, _>>()?;
    let count: usize = shape.iter().product();
    let data = &bytes[start + header_len..];
    if data.len() != count * 4 {
        return Err(format!(
            "{} data bytes for shape {shape:?} ({} expected)",
            data.len(),
            count * 4
        ));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, values))
}

/// The voice names in a voice table (`.npz`).
pub fn voice_names(npz: &Path) -> Result<Vec<String>, String> {
    let f = std::fs::File::open(npz).map_err(|e| e.to_string())?;
    let z = zip::ZipArchive::new(f).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = z
        .file_names()
        .filter_map(|n| n.strip_suffix(".npy").map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// A voice's style table from a voice table (`.npz`): its rows and their values (`[rows, 256]`).
pub fn read_style_table(npz: &Path, voice: &str) -> Result<(usize, Vec<f32>), String> {
    let f = std::fs::File::open(npz).map_err(|e| e.to_string())?;
    let mut z = zip::ZipArchive::new(f).map_err(|e| e.to_string())?;
    let member = format!("{voice}.npy");
    let mut entry = match z.by_name(&member) {
        Ok(e) => e,
        Err(_) => {
            return Err(format!(
                "no voice {voice:?} in the voice table; it has {:?}",
                voice_names(npz).unwrap_or_default()
            ));
        }
    };
    if entry.size() > 64 << 20 {
        return Err(format!("{member} is {} bytes; too large", entry.size()));
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let (shape, values) = read_npy_f32(&bytes)?;
    if shape.last() != Some(&STYLE) || values.is_empty() {
        return Err(format!(
            "{member} has shape {shape:?}; expected [rows, 1, {STYLE}]"
        ));
    }
    Ok((values.len() / STYLE, values))
}

/// Read `vocab.json` (`{"vocab": {"a": 43, ...}}`): one code point per entry.
pub fn read_vocab(path: &Path) -> Result<HashMap<char, i64>, String> {
    let text = crate::budget::read_text(path, crate::budget::MAX_TEXT_FILE_BYTES)
        .map_err(|e| e.to_string())?;
    #[derive(serde::Deserialize)]
    struct V {
        vocab: HashMap<String, i64>,
    }
    let v: V = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for (k, id) in v.vocab {
        let mut cs = k.chars();
        if let (Some(c), None) = (cs.next(), cs.next())
            && (0..100_000).contains(&id)
        {
            out.insert(c, id);
        }
    }
    if out.len() < 20 {
        return Err(format!(
            "only {} symbols; not a Kokoro vocabulary",
            out.len()
        ));
    }
    Ok(out)
}

/// Modifiers that join the unit before them (palatalization, aspiration, length, labialization,
/// nasalization, tones).
fn joins_unit(c: char) -> bool {
    matches!(
        c,
        'ʲ' | 'ʰ' | 'ː' | 'ᵝ' | '\u{303}' | '↓' | '→' | '↗' | '↘' | 'ˈ' | 'ˌ'
    )
}

/// Lay `tokens` out as misaki does and map them to Kokoro ids, units and owners (see the module
/// docs). The ids include the two end pads.
pub fn encode(tokens: &[PhonToken], vocab: &HashMap<char, i64>) -> Encoded {
    let located: Vec<Located> = tokens.iter().cloned().map(Located::unplaced).collect();
    encode_located(&located, vocab)
}

/// [`encode`], each word keeping its place in the clause ([`Word::src`]).
pub fn encode_located(tokens: &[Located], vocab: &HashMap<char, i64>) -> Encoded {
    let mut layout: Vec<(char, Option<usize>)> = Vec::new();
    let mut words = Vec::new();
    let mut need_space = false;
    for Located { token, src } in tokens {
        match token {
            PhonToken::Word { text, ipa } => {
                let ipa: Vec<char> = ipa.chars().filter(|c| !c.is_whitespace()).collect();
                if ipa.is_empty() {
                    continue;
                }
                if need_space {
                    layout.push((' ', None));
                }
                let w = words.len();
                words.push(Word {
                    text: text.clone(),
                    src: src.clone(),
                });
                layout.extend(ipa.into_iter().map(|c| (c, Some(w))));
                need_space = true;
            }
            PhonToken::Punct(p) => {
                layout.push((*p, None));
                need_space = true;
            }
        }
    }
    let mut enc = Encoded {
        ids: vec![0],
        owners: vec![Owner::Gap],
        units: Vec::new(),
        words,
        ipa: layout.iter().map(|(c, _)| *c).collect(),
        skipped: Vec::new(),
    };
    let mut waiting: Vec<usize> = Vec::new();
    let mut prev_in_word = false;
    for &(c, word) in &layout {
        let Some(&id) = vocab.get(&c) else {
            enc.skipped.push(c);
            continue;
        };
        let Some(w) = word else {
            for i in waiting.drain(..) {
                enc.owners[i] = Owner::Gap;
            }
            enc.ids.push(id);
            enc.owners.push(Owner::Gap);
            // A space between two words is the next word's onset.
            if c == ' ' && prev_in_word {
                waiting.push(enc.ids.len() - 1);
            }
            prev_in_word = false;
            continue;
        };
        prev_in_word = true;
        let joins = joins_unit(c) && enc.units.last().is_some_and(|u| u.word == w);
        let unit = if joins {
            let u = enc.units.len() - 1;
            if !matches!(c, 'ˈ' | 'ˌ' | '↓' | '→' | '↗' | '↘') {
                enc.units[u].phoneme.symbol.push(c);
            }
            u
        } else {
            enc.units.push(Unit {
                phoneme: Phoneme::new(c.to_string()),
                word: w,
            });
            enc.units.len() - 1
        };
        enc.ids.push(id);
        enc.owners.push(Owner::Unit(unit));
        for i in waiting.drain(..) {
            enc.owners[i] = Owner::Unit(unit);
        }
    }
    for i in waiting.drain(..) {
        enc.owners[i] = Owner::Gap;
    }
    enc.ids.push(0);
    enc.owners.push(Owner::Gap);
    enc
}

/// Cut tokens into runs of at most `max` ids (pads excluded), at word or punctuation boundaries.
fn pieces(tokens: &[Located], max: usize) -> Vec<Vec<Located>> {
    let mut out: Vec<Vec<Located>> = Vec::new();
    let mut cur: Vec<Located> = Vec::new();
    let mut len = 0usize;
    for t in tokens {
        let n = match &t.token {
            PhonToken::Word { ipa, .. } => ipa.chars().count() + 1,
            PhonToken::Punct(_) => 1,
        };
        if len + n > max && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            len = 0;
        }
        match &t.token {
            // A word longer than a whole run: cut it.
            PhonToken::Word { text, ipa } if n > max => {
                let chars: Vec<char> = ipa.chars().collect();
                for c in chars.chunks(max - 1) {
                    out.push(vec![Located {
                        token: PhonToken::Word {
                            text: text.clone(),
                            ipa: c.iter().collect(),
                        },
                        src: t.src.clone(),
                    }]);
                }
            }
            _ => {
                cur.push(t.clone());
                len += n;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// What the front computes for one run: the durations and the decoder's inputs for every frame.
struct FrontOut {
    /// Frames per id (pads included).
    durations: Vec<u64>,
    /// Their sum.
    frames: usize,
    channels: usize,
    harmonics: usize,
    /// `[1, channels, frames]`.
    features: Vec<f32>,
    /// `[1, 2 · frames]` each.
    f0: Vec<f32>,
    energy: Vec<f32>,
    /// `[1, 2 · frames, harmonics]`.
    phase: Vec<f32>,
    style: Vec<f32>,
}

impl KokoroVoice {
    /// Load the model, vocabulary and voice table `files` and pick `options.voice`.
    pub fn load(
        files: &KokoroFiles,
        ort_lib: &Path,
        phonemizer: Arc<dyn Phonemize>,
        options: &KokoroOptions,
    ) -> Result<KokoroVoice, TtsError> {
        let name = options.voice.clone();
        for p in files.all() {
            if !p.exists() {
                return Err(TtsError::VoiceMissing {
                    path: p,
                    name: name.clone(),
                });
            }
        }
        let corrupt = |path: &Path, message: String| TtsError::VoiceCorrupt {
            path: path.to_path_buf(),
            name: name.clone(),
            message,
        };
        if !(0.1..=10.0).contains(&options.length_scale) || !options.length_scale.is_finite() {
            return Err(TtsError::BadSpeaker(format!(
                "length scale {} is outside 0.1..=10",
                options.length_scale
            )));
        }
        let vocab = read_vocab(&files.vocab).map_err(|m| corrupt(&files.vocab, m))?;
        let (rows, styles) = read_style_table(&files.voices, &options.voice).map_err(|m| {
            if m.starts_with("no voice") {
                TtsError::BadSpeaker(m)
            } else {
                corrupt(&files.voices, m)
            }
        })?;
        let bytes =
            std::fs::read(&files.model).map_err(|e| corrupt(&files.model, e.to_string()))?;
        let split = split_kokoro_graph(&bytes).map_err(|e| corrupt(&files.model, e.to_string()))?;
        drop(bytes);
        let env = ort_environment(ort_lib)?;
        let fail = |e: &dyn std::fmt::Display| corrupt(&files.model, e.to_string());
        let session = |graph: &[u8]| -> Result<Session, TtsError> {
            Session::builder(&env)
                .map_err(|e| fail(&e))?
                .with_intra_threads(options.threads.max(1))
                .map_err(|e| fail(&e))?
                .with_inter_threads(1)
                .map_err(|e| fail(&e))?
                .with_parallel_execution(false)
                .map_err(|e| fail(&e))?
                .commit_from_memory(graph)
                .map_err(|e| fail(&e))
        };
        let front = session(&split.front)?;
        let decoder = session(&split.decoder)?;
        let names = KokoroSplit {
            front: Vec::new(),
            decoder: Vec::new(),
            ..split
        };
        let mut v = KokoroVoice {
            front,
            decoder,
            names,
            vocab,
            styles,
            rows,
            speed: 1.0 / options.length_scale,
            base_speed: 1.0 / options.length_scale,
            hop: 0,
            name: options.voice.clone(),
            phonemizer,
        };
        v.probe()
            .map_err(|e| corrupt(&files.model, e.to_string()))?;
        Ok(v)
    }

    /// Learn the hop from one short run (this also warms the session up).
    fn probe(&mut self) -> Result<(), TtsError> {
        let tokens = [PhonToken::Word {
            text: "a".into(),
            ipa: "aiɯ".into(),
        }];
        let enc = encode(&tokens, &self.vocab);
        let (pcm, frames) = self.run(&enc.ids)?;
        let total: u64 = frames.iter().sum();
        if total == 0 || !(pcm.len() as u64).is_multiple_of(total) {
            return Err(TtsError::Runtime(format!(
                "the audio ({} samples) is not a whole number of duration frames ({total})",
                pcm.len()
            )));
        }
        self.hop = pcm.len() as u64 / total;
        Ok(())
    }

    fn style_row(&self, n_tokens: usize) -> &[f32] {
        let row = n_tokens.clamp(1, self.rows) - 1;
        &self.styles[row * STYLE..(row + 1) * STYLE]
    }

    /// One run: ids (with pads) → (audio, frames per id): the front, then the decoder on every
    /// frame at once (the same audio as the uncut graph).
    fn run(&mut self, ids: &[i64]) -> Result<(Vec<f32>, Vec<u64>), TtsError> {
        let front = self.run_front(ids)?;
        let pcm = self.decode(&front, 0, front.frames)?;
        Ok((pcm, front.durations))
    }

    /// The front on ids (with pads): the durations and the decoder's inputs for every frame.
    fn run_front(&mut self, ids: &[i64]) -> Result<FrontOut, TtsError> {
        let n = ids.len();
        let style = self.style_row(n.saturating_sub(2)).to_vec();
        let inputs: Vec<(String, ort::session::SessionInputValue<'static>)> = vec![
            (
                "tokens".into(),
                Tensor::from_array(([1usize, n], ids.to_vec()))
                    .map_err(rt)?
                    .into(),
            ),
            (
                "style".into(),
                Tensor::from_array(([1usize, STYLE], style.clone()))
                    .map_err(rt)?
                    .into(),
            ),
            (
                "speed".into(),
                Tensor::from_array(([1usize], vec![self.speed]))
                    .map_err(rt)?
                    .into(),
            ),
        ];
        let outputs = self.front.run(inputs).map_err(rt)?;
        let get = |name: &str| -> Result<(Vec<i64>, Vec<f32>), TtsError> {
            let (shape, data) = outputs[name].try_extract_tensor::<f32>().map_err(rt)?;
            Ok((shape.to_vec(), data.to_vec()))
        };
        let durations: Vec<u64> = get(&self.names.durations)?
            .1
            .iter()
            .map(|d| d.max(0.0).round() as u64)
            .collect();
        if durations.len() != n {
            return Err(TtsError::Runtime(format!(
                "{} durations for {n} tokens",
                durations.len()
            )));
        }
        let (fshape, features) = get(&self.names.features)?;
        let (_, f0) = get(&self.names.f0)?;
        let (_, energy) = get(&self.names.energy)?;
        let (pshape, phase) = get(&self.names.phase)?;
        let frames = durations.iter().sum::<u64>() as usize;
        let bad = |what: &str| {
            TtsError::Runtime(format!(
                "the front gave {what} that does not fit {frames} frames (features {fshape:?}, \
                 F0 {}, energy {}, phase {pshape:?})",
                f0.len(),
                energy.len()
            ))
        };
        let (channels, harmonics) = match (fshape.as_slice(), pshape.as_slice()) {
            ([1, c, f], [1, p, h]) if *f as usize == frames && *p as usize == 2 * frames => {
                (*c as usize, *h as usize)
            }
            _ => return Err(bad("shapes")),
        };
        if f0.len() != 2 * frames || energy.len() != 2 * frames {
            return Err(bad("curves"));
        }
        Ok(FrontOut {
            durations,
            frames,
            channels,
            harmonics,
            features,
            f0,
            energy,
            phase,
            style,
        })
    }

    /// The decoder on frames `a..b` of a front's output: `(b - a) · hop` samples once the hop is
    /// known. Decoding `0..frames` is the whole clause as the uncut graph speaks it.
    fn decode(&mut self, f: &FrontOut, a: usize, b: usize) -> Result<Vec<f32>, TtsError> {
        let w = b - a;
        let mut features = Vec::with_capacity(f.channels * w);
        for c in 0..f.channels {
            features.extend_from_slice(&f.features[c * f.frames + a..c * f.frames + b]);
        }
        let curve = |v: &[f32]| v[2 * a..2 * b].to_vec();
        let phase = f.phase[2 * a * f.harmonics..2 * b * f.harmonics].to_vec();
        let n = &self.names;
        let inputs: Vec<(String, ort::session::SessionInputValue<'static>)> = vec![
            (
                n.features.clone(),
                Tensor::from_array(([1usize, f.channels, w], features))
                    .map_err(rt)?
                    .into(),
            ),
            (
                n.f0.clone(),
                Tensor::from_array(([1usize, 2 * w], curve(&f.f0)))
                    .map_err(rt)?
                    .into(),
            ),
            (
                n.energy.clone(),
                Tensor::from_array(([1usize, 2 * w], curve(&f.energy)))
                    .map_err(rt)?
                    .into(),
            ),
            (
                n.phase.clone(),
                Tensor::from_array(([1usize, 2 * w, f.harmonics], phase))
                    .map_err(rt)?
                    .into(),
            ),
            (
                "style".into(),
                Tensor::from_array(([1usize, STYLE], f.style.clone()))
                    .map_err(rt)?
                    .into(),
            ),
        ];
        let outputs = self.decoder.run(inputs).map_err(rt)?;
        let pcm = outputs["audio"]
            .try_extract_tensor::<f32>()
            .map_err(rt)?
            .1
            .to_vec();
        if self.hop > 0 && pcm.len() as u64 != w as u64 * self.hop {
            return Err(TtsError::Runtime(format!(
                "the decoder gave {} samples for {w} frames (hop {})",
                pcm.len(),
                self.hop
            )));
        }
        Ok(pcm)
    }

    /// Synthesize already phonemized tokens.
    pub fn synthesize_tokens(&mut self, tokens: &[PhonToken]) -> Result<Speech, TtsError> {
        let located: Vec<Located> = tokens.iter().cloned().map(Located::unplaced).collect();
        self.synthesize_located(&located)
    }

    /// Synthesize phonemized tokens, each word keeping its place in the clause.
    pub fn synthesize_located(&mut self, tokens: &[Located]) -> Result<Speech, TtsError> {
        let mut speech = super::empty_speech(SAMPLE_RATE);
        let mut any = false;
        for piece in pieces(tokens, MAX_TOKENS) {
            let enc = encode_located(&piece, &self.vocab);
            if !enc.skipped.is_empty() {
                log::warn!(
                    "voice {} has no phoneme for {:?}; skipped",
                    self.name,
                    enc.skipped.iter().collect::<String>()
                );
            }
            if enc.units.is_empty() {
                continue;
            }
            let (pcm, frames) = self.run(&enc.ids)?;
            let (phonemes, words) =
                timing::timelines(&enc, &frames, self.hop, pcm.len() as u64, SAMPLE_RATE);
            super::append(
                &mut speech,
                Speech {
                    pcm,
                    sample_rate: SAMPLE_RATE,
                    phonemes,
                    words,
                },
            );
            any = true;
        }
        if !any {
            let text: Vec<String> = tokens
                .iter()
                .map(|t| match &t.token {
                    PhonToken::Word { text, .. } => text.clone(),
                    PhonToken::Punct(c) => c.to_string(),
                })
                .collect();
            return Err(TtsError::Unspeakable(text.join(" ")));
        }
        Ok(speech)
    }

    /// Synthesize a clause so its first audio can be played before the rest exists (see
    /// [`Synthesizer::synthesize_head_first`]): the front runs on the whole clause (so the durations,
    /// hence the plan, are the clause's own), then the decoder on its first [`HEAD_FRAMES`] frames
    /// with [`HEAD_CONTEXT`] frames after them, and `on_head` gets those first frames' audio with the
    /// plan; then the decoder runs on the whole clause, and the rest is returned from where the head
    /// ends, its first [`SEAM`] samples faded from the head window's audio into the whole clause's.
    ///
    /// From the seam on the audio is exactly the whole clause's; the head is the decoder's output
    /// for a window, which is close to but not the whole clause's (the decoder's instance norms and
    /// int8 input scales take the window's statistics; `benches/kokoro.rs` measures the difference).
    /// The head lies in the clause's leading pause (its start pad lasts at least [`HEAD_FRAMES`]):
    /// the listener hears the voice begin after it, while the rest is decoded. A clause too long
    /// for one run, too short to gain from a head, or whose pause is shorter (a fast pace) is
    /// spoken whole and `on_head` is not called.
    pub fn synthesize_located_head_first(
        &mut self,
        tokens: &[Located],
        on_head: &mut dyn FnMut(Speech, Speech),
    ) -> Result<Speech, TtsError> {
        let mut cut = pieces(tokens, MAX_TOKENS);
        if cut.len() != 1 {
            return self.synthesize_located(tokens);
        }
        let piece = cut.pop().expect("one piece");
        let enc = encode_located(&piece, &self.vocab);
        if enc.units.is_empty() {
            return self.synthesize_located(tokens);
        }
        if !enc.skipped.is_empty() {
            log::warn!(
                "voice {} has no phoneme for {:?}; skipped",
                self.name,
                enc.skipped.iter().collect::<String>()
            );
        }
        let front = self.run_front(&enc.ids)?;
        let total = front.frames;
        let hop = self.hop as usize;
        let at = HEAD_FRAMES * hop;
        // The head is taken from the clause's leading pause (the start pad's frames, 12-14 at the
        // voice's pace), where a window decodes to what the whole clause has there, near silence.
        let in_pause = front.durations.first().copied().unwrap_or(0) >= HEAD_FRAMES as u64;
        if !in_pause || total < HEAD_FRAMES + HEAD_CONTEXT + MIN_REST_FRAMES {
            let pcm = self.decode(&front, 0, total)?;
            let (phonemes, words) = timing::timelines(
                &enc,
                &front.durations,
                self.hop,
                pcm.len() as u64,
                SAMPLE_RATE,
            );
            return Ok(Speech {
                pcm,
                sample_rate: SAMPLE_RATE,
                phonemes,
                words,
            });
        }
        let window = self.decode(&front, 0, HEAD_FRAMES + HEAD_CONTEXT)?;
        let planned = (total * hop) as u64;
        let (phonemes, words) =
            timing::timelines(&enc, &front.durations, self.hop, planned, SAMPLE_RATE);
        let cut_at = crate::time::SampleTime(at as u64);
        let (mut head_phonemes, mut head_words) = (phonemes.clone(), words.clone());
        head_phonemes.truncate(cut_at);
        head_words.truncate(cut_at);
        on_head(
            Speech {
                pcm: window[..at].to_vec(),
                sample_rate: SAMPLE_RATE,
                phonemes: head_phonemes,
                words: head_words,
            },
            Speech {
                pcm: vec![0.0; planned as usize],
                sample_rate: SAMPLE_RATE,
                phonemes: phonemes.clone(),
                words: words.clone(),
            },
        );
        let whole = self.decode(&front, 0, total)?;
        let mut rest = whole[at..].to_vec();
        seam(&mut rest, &window[at..]);
        let (mut phonemes, mut words) = (phonemes, words);
        Ok(Speech {
            pcm: rest,
            sample_rate: SAMPLE_RATE,
            phonemes: phonemes.split_off(cut_at),
            words: words.split_off(cut_at),
        })
    }

    /// The phoneme string (misaki's layout) a clause would be spoken from.
    pub fn phonemes(&self, text: &str) -> Result<String, TtsError> {
        let tokens = self.phonemizer.phonemize(text)?;
        Ok(encode(&tokens, &self.vocab).ipa)
    }

    /// Samples per duration frame.
    pub fn hop(&self) -> u64 {
        self.hop
    }

    /// The voice's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Synthesizer for KokoroVoice {
    fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }

    fn synthesize(&mut self, clause: &str) -> Result<Speech, TtsError> {
        if clause.trim().is_empty() {
            return Err(TtsError::Empty);
        }
        let tokens = self.phonemizer.phonemize_located(clause)?;
        self.synthesize_located(&tokens)
    }

    fn reads_written_text(&self) -> bool {
        true
    }

    fn synthesize_head_first(
        &mut self,
        clause: &str,
        on_head: &mut dyn FnMut(Speech, Speech),
    ) -> Result<Speech, TtsError> {
        if clause.trim().is_empty() {
            return Err(TtsError::Empty);
        }
        let tokens = self.phonemizer.phonemize_located(clause)?;
        self.synthesize_located_head_first(&tokens, on_head)
    }

    /// The length scale sets the pace; the graph has no noise for emphasis to widen.
    fn set_style(&mut self, length_scale: Option<f32>, _emphasis: f32) {
        self.speed = match length_scale {
            Some(l) if l.is_finite() && (0.1..=10.0).contains(&l) => 1.0 / l,
            _ => self.base_speed,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> HashMap<char, i64> {
        [
            (' ', 16),
            (',', 3),
            ('.', 4),
            ('a', 43),
            ('k', 53),
            ('ʲ', 164),
            ('ː', 158),
            ('i', 51),
            ('↗', 172),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn layout_and_owners_follow_misaki() {
        let t = [
            PhonToken::Word {
                text: "か".into(),
                ipa: "kaː".into(),
            },
            PhonToken::Punct(','),
            PhonToken::Word {
                text: "き".into(),
                ipa: "kʲi↗".into(),
            },
            PhonToken::Word {
                text: "あ".into(),
                ipa: "a".into(),
            },
        ];
        let e = encode(&t, &vocab());
        assert_eq!(e.ipa, "kaː, kʲi↗ a");
        assert_eq!(e.ids, [0, 53, 43, 158, 3, 16, 53, 164, 51, 172, 16, 43, 0]);
        let symbols: Vec<&str> = e.units.iter().map(|u| u.phoneme.symbol.as_str()).collect();
        // Length and palatalization join their unit; the tone arrow joins without a symbol.
        assert_eq!(symbols, ["k", "aː", "kʲ", "i", "a"]);
        // Pads, punctuation and the space after it are gaps; the space between words is the next
        // word's onset.
        assert_eq!(e.owners[0], Owner::Gap);
        assert_eq!(e.owners[4], Owner::Gap);
        assert_eq!(e.owners[5], Owner::Gap);
        assert_eq!(e.owners[10], Owner::Unit(4));
        assert_eq!(e.owners[12], Owner::Gap);
    }

    #[test]
    fn long_clauses_are_cut_at_words() {
        let w = |n: usize| PhonToken::Word {
            text: "w".into(),
            ipa: "a".repeat(n),
        };
        let p = pieces(&[w(300), w(300), w(100)].map(Located::unplaced), MAX_TOKENS);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].len(), 1);
        assert_eq!(p[1].len(), 2);
        let p = pieces(&[Located::unplaced(w(1200))], MAX_TOKENS);
        assert!(p.iter().all(|x| match &x[0].token {
            PhonToken::Word { ipa, .. } => ipa.chars().count() < MAX_TOKENS,
            _ => false,
        }));
    }

    #[test]
    fn npy_arrays_are_read() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 2), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for v in [1.0f32, 2.0, 3.0, 4.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let (shape, values) = read_npy_f32(&b).unwrap();
        assert_eq!(shape, [2, 1, 2]);
        assert_eq!(values, [1.0, 2.0, 3.0, 4.0]);
        assert!(read_npy_f32(&b[..b.len() - 1]).is_err());
    }
}
