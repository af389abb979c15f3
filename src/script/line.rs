//! One line's audio before it is placed (all times local to the line): a spoken line through the
//! voice sentence by sentence (breaks where written, cues at their words, the shared
//! [`Layout`]), or a recorded take decoded and resampled, its phonemes from its alignment file or the
//! [`LipSync`] provider. Each checks the room the performance has left as its audio grows.

use super::parse::{Line, Script};
use super::pcm::SparsePcm;
use super::render::{RenderError, ScriptEventKind};
use super::voice::{LineVoice, LipSync, Style};
use crate::face;
use crate::speech::{Cue, CueKind, Phoneme, Speech, Word};
use crate::text::utterance::{Layout, Part};
use crate::text::{CueEvent, TagParser, normalize};
use crate::time::{SampleTime, TimeRange, Timed, Timeline};
use crate::tts::TtsError;

/// One line's audio before placement (all times local to the line; breaks are silence spans).
pub(super) struct LineAudio {
    pub(super) pcm: SparsePcm,
    pub(super) phonemes: Timeline<Phoneme>,
    pub(super) words: Timeline<Word>,
    pub(super) captions: Vec<(TimeRange, String)>,
    /// Emotion/action cues and breaks, in text order.
    pub(super) marks: Vec<(SampleTime, ScriptEventKind)>,
    pub(super) text: String,
}

/// The local sample of a cue `at` bytes into a sentence `len` bytes long whose audio (`n` samples,
/// words `words` local to the sentence) starts at `start`: proportional, snapped to a word start.
fn cue_sample(at: usize, len: usize, start: u64, n: u64, words: &[Timed<Word>]) -> SampleTime {
    let guess = if len == 0 {
        0
    } else {
        n * at as u64 / len as u64
    };
    let snapped = words
        .iter()
        .map(|w| w.start().get())
        .find(|&s| s >= guess)
        .unwrap_or(guess);
    SampleTime(start + snapped.min(n))
}

pub(super) fn scaled(intensity: f32, emphasis: f32) -> f32 {
    (intensity * (1.0 + 0.5 * emphasis)).clamp(0.0, 1.0)
}

fn cue_mark(c: &Cue, emphasis: f32) -> ScriptEventKind {
    let intensity = scaled(c.intensity, emphasis);
    let name = c.name.clone();
    match c.kind {
        CueKind::Emotion => ScriptEventKind::Emotion { name, intensity },
        CueKind::Action => ScriptEventKind::Action { name, intensity },
    }
}

fn mark_of(ev: &CueEvent, emphasis: f32) -> ScriptEventKind {
    match ev {
        CueEvent::Emotion { name, intensity } => ScriptEventKind::Emotion {
            name: name.clone(),
            intensity: scaled(*intensity, emphasis),
        },
        CueEvent::Action { name, intensity } => ScriptEventKind::Action {
            name: name.clone(),
            intensity: scaled(*intensity, emphasis),
        },
        CueEvent::Break { millis } => ScriptEventKind::Break { millis: *millis },
    }
}

/// A line's audio as it is built: the voice's sentences as clips, breaks as spans of silence under
/// a pause phoneme `_` (the face rests), timelines on the line's clock.
struct Track {
    pcm: SparsePcm,
    phonemes: Timeline<Phoneme>,
    words: Timeline<Word>,
}

impl Track {
    fn new(rate: u32) -> Self {
        Track {
            pcm: SparsePcm::default(),
            phonemes: Timeline::new(rate).expect("rate"),
            words: Timeline::new(rate).expect("rate"),
        }
    }

    fn len(&self) -> u64 {
        self.pcm.len() as u64
    }

    /// Append a sentence's speech at the end.
    fn push(&mut self, sp: Speech) {
        let at = self.len();
        for p in sp.phonemes.shift(at).into_items() {
            self.phonemes
                .push(p)
                .expect("a sentence starts after the line so far");
        }
        for w in sp.words.shift(at).into_items() {
            self.words
                .push(w)
                .expect("a sentence starts after the line so far");
        }
        self.pcm.place(at, sp.pcm);
        // Speech whose audio ends before its last phoneme still ends with it.
        let end = self.phonemes.span().map_or(0, |r| r.end().get());
        self.pcm.extend_to(end);
    }

    /// Append `n` samples of silence.
    fn pause(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let at = self.len();
        self.phonemes
            .push(Timed::new(
                TimeRange::at(SampleTime(at), n),
                Phoneme::new("_"),
            ))
            .expect("a pause starts at the end");
        self.pcm.extend_to(at + n);
    }
}

/// How much audio a line may have: it starts at `start`, and the performance may not run past `limit`
/// samples; `over(needed)` is the error for a line that would end at `needed`.
pub(super) struct Room<'a> {
    pub(super) start: u64,
    pub(super) limit: u64,
    pub(super) over: &'a dyn Fn(u64) -> RenderError,
}

impl Room<'_> {
    /// `Ok` when `len` samples of the line fit.
    pub(super) fn fits(&self, len: u64) -> Result<(), RenderError> {
        let end = self.start.saturating_add(len);
        if end > self.limit {
            return Err((self.over)(end));
        }
        Ok(())
    }
}

pub(super) fn speak_line(
    voice: &mut dyn LineVoice,
    line: &Line,
    text: &str,
    style: Style,
    room: &Room<'_>,
    warnings: &mut Vec<String>,
) -> Result<LineAudio, RenderError> {
    let rate = voice.sample_rate();
    let mut track = Track::new(rate);
    let mut layout = Layout::new(rate);
    let mut captions = Vec::new();
    let mut marks: Vec<(SampleTime, ScriptEventKind)> = Vec::new();
    let mut said: Vec<String> = Vec::new();
    for clause in crate::perform::offline::sentences(text) {
        let speech = if clause.text.is_empty() {
            None
        } else {
            said.push(clause.text.clone());
            let sentence = if voice.reads_written_text() {
                clause.text.clone()
            } else {
                normalize(&clause.text)
            };
            match voice.speak(&sentence, style) {
                Ok(sp) => Some(sp),
                Err(TtsError::Unspeakable(_) | TtsError::Phonemize(_) | TtsError::Empty) => {
                    warnings.push(format!(
                        "{}: skipped {:?}: nothing speakable",
                        line.label(),
                        clause.text
                    ));
                    None
                }
                Err(error) => {
                    return Err(RenderError::Voice {
                        line: line.label(),
                        sentence: clause.text.clone(),
                        error: Box::new(error),
                    });
                }
            }
        };
        let placed = layout.place(&clause, speech.as_ref());
        let mut speech = speech;
        for part in placed.parts {
            match part {
                Part::Pause { at, millis, n } => {
                    marks.push((at, ScriptEventKind::Break { millis }));
                    track.pause(n);
                }
                Part::Speech { at } => {
                    let sp = speech.take().expect("a speech part has its speech");
                    let n = sp.pcm.len() as u64;
                    captions.push((TimeRange::at(at, n), clause.text.clone()));
                    track.push(sp);
                }
            }
            room.fits(track.len())?;
        }
        marks.extend(
            placed
                .cues
                .iter()
                .map(|c| (c.at, cue_mark(c, style.emphasis))),
        );
    }
    debug_assert_eq!(track.len(), layout.len());
    marks.sort_by_key(|(at, _)| *at);
    Ok(LineAudio {
        pcm: track.pcm,
        phonemes: track.phonemes,
        words: track.words,
        captions,
        marks,
        text: said.join(" "),
    })
}

/// Where a recorded line's `field` is, for messages: the file, the line's `[[line]]` table and the
/// field (the table's position: the values' own are not kept).
fn field_place(script: &Script, line: &Line, field: &str) -> String {
    format!(
        "{}:{}:{}: field `{}.{field}`",
        script.file.display(),
        line.pos.line,
        line.pos.column,
        line.pos.field
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn recorded_line(
    script: &Script,
    line: &Line,
    audio: &std::path::Path,
    alignment: Option<&std::path::Path>,
    rate: u32,
    room: &Room<'_>,
    lipsync: &mut Option<&mut dyn LipSync>,
    warnings: &mut Vec<String>,
) -> Result<LineAudio, RenderError> {
    // The take may not be longer than the room left (checked on its header, before decoding).
    let max_secs = room.limit.saturating_sub(room.start) as f64 / rate as f64;
    let decoded = crate::audio::decode_file_within(audio, max_secs).map_err(|e| match e {
        crate::audio::AudioError::TooLong { secs, .. } => {
            (room.over)(room.start + (secs * rate as f64).ceil() as u64)
        }
        e => RenderError::Audio {
            at: field_place(script, line, "audio"),
            path: audio.to_path_buf(),
            message: format!("{e} (paths are relative to the script's folder)"),
        },
    })?;
    let pcm = crate::audio::resample(&decoded.samples, decoded.sample_rate, rate);
    room.fits(pcm.len() as u64)?;
    if pcm.is_empty() {
        return Err(RenderError::Audio {
            at: field_place(script, line, "audio"),
            path: audio.to_path_buf(),
            message: format!("{} has no samples", audio.display()),
        });
    }
    let n = pcm.len() as u64;
    let end = SampleTime(n);
    let (clean, cues) = match &line.text {
        Some(t) => TagParser::parse_all(t),
        None => (String::new(), Vec::new()),
    };
    let transcript = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    let transcript = transcript.as_str();
    let (mut phonemes, mut words) = match alignment {
        Some(p) => {
            let file =
                face::read::read_path(p, rate, None).map_err(|e| RenderError::Alignment {
                    at: field_place(script, line, "phonemes"),
                    path: p.to_path_buf(),
                    message: e.to_string(),
                })?;
            let words = file
                .words
                .unwrap_or_else(|| Timeline::new(rate).expect("rate"));
            (file.phonemes, words)
        }
        None => {
            let ph = match lipsync.as_deref_mut() {
                Some(ls) => ls
                    .phonemes(&pcm, rate, (!transcript.is_empty()).then_some(transcript))
                    .map_err(|e| RenderError::Audio {
                        at: field_place(script, line, "audio"),
                        path: audio.to_path_buf(),
                        message: format!("lip sync of {} failed: {e}", audio.display()),
                    })?,
                None => {
                    warnings.push(format!(
                        "{}: recorded line {} has no alignment (phonemes = \"take.TextGrid\"): its mouth stays at rest, expression and idle only",
                        line.label(),
                        audio.display()
                    ));
                    Timeline::new(rate).expect("rate")
                }
            };
            (ph, Timeline::new(rate).expect("rate"))
        }
    };
    phonemes.truncate(end);
    words.truncate(end);
    let len = clean.len();
    let marks = cues
        .iter()
        .map(|c| {
            let at = cue_sample(c.at, len, 0, n, words.items());
            (at.min(SampleTime(n)), mark_of(&c.event, line.emphasis))
        })
        .collect();
    let captions = if transcript.is_empty() {
        Vec::new()
    } else {
        vec![(TimeRange::at(SampleTime::ZERO, n), transcript.to_string())]
    };
    let mut take = SparsePcm::default();
    take.place(0, pcm);
    Ok(LineAudio {
        pcm: take,
        phonemes,
        words,
        captions,
        marks,
        text: transcript.to_string(),
    })
}
