//! Offline render: a [`Script`] becomes one [`Performance`] on one sample clock.
//!
//! Algorithm.
//!
//! 1. **Each line becomes local audio** (sample 0 = the line's start). A spoken line's text goes
//!    through the tag parser (`[happy]`, `<wave>`, `<break time="300ms"/>`); the clean text is cut at
//!    each break, each piece into sentences, each sentence normalized and spoken by the [`LineVoice`]
//!    with the line's [`Style`] (length scale, emphasis); a break is silence of its length exactly
//!    where it was written. Emotion and action tags land at the start of the spoken word they were
//!    written before ([`crate::text::cue_sample`]: the voice speaks normalized text, where `42` is two
//!    words), between sentences or beside a break at the next spoken word, after the last word at
//!    the speech's last sample: the live stream's places. A
//!    recorded line is its take decoded and resampled to the voice's rate, sample for sample, so it
//!    keeps its exact duration; its mouth comes from its alignment file (`phonemes = ...`), else from
//!    the [`LipSync`] provider if one is plugged in, else it stays at rest (expression and idle only)
//!    with a warning. Its transcript's tags are placed by proportion of the take, snapped to aligned
//!    words when there are any.
//! 0. **Budget.** [`check_plan`] checks what the script fixes (gaps, `at`, breaks, tail, events)
//!    against `[limits] performance_secs` before any line is spoken; each line is then placed before
//!    it is spoken and may only take the room left ([`RenderError::OverBudget`] names the line).
//! 2. **Placement.** A line without `at` starts `gap` after the previous line ends (the first line
//!    at 0 + its own gap); a line with `at` starts exactly there and must not start before the
//!    previous line ends (a positioned error otherwise). The performance ends `tail` after the last
//!    line, or just after the last pass-through event if that is later.
//! 3. **Assembly.** The audio is a [`SparsePcm`]: each line's clips placed at its start, the gaps,
//!    breaks and tail spans of silence that are never materialized (the WAV writer streams zeros);
//!    the phoneme timeline is the lines'
//!    phonemes moved to their starts with the gaps filled by `_`, so it covers the whole audio; words,
//!    captions (one per sentence, or per recorded transcript), cues and events move likewise.
//! 4. **Face.** One segment over the whole performance is prepared once (mouth chain, cue envelopes,
//!    nods), so expressions and the idle layer (a pure function of seed and absolute sample) run
//!    continuously across lines and gaps. Frames are `SampleTime::ZERO.frame(k, rate, fps)` for
//!    `k < frames_in(len)`, covering exactly the audio. Look-at targets switch at the start of the
//!    line that sets them, the eyes (and 30% of the head) turning over [`LOOK_TURN_SECS`] with a
//!    smoothstep; frames during a turn are evaluated with the interpolated target.
//!
//! Determinism: the voice's noise is seeded per clause, the face is a pure function of its inputs,
//! events are ordered by (sample, script order): with a seed, a render is the same bytes every time.

use super::line::{LineAudio, Room, recorded_line, scaled, speak_line};
use super::parse::{Anchor, Line, LineKind, Look, Pos, Script, ScriptError, Timing};
use super::pcm::SparsePcm;
use crate::budget::{Budget, Budgeted, OverBudget};
use crate::face::{self, EyeGaze, Face, FaceConfig, FaceError, Frames, Rig, Scratch, Segment};
use crate::speech::{Cue, CueKind, Phoneme, Word};
use crate::text::TagParser;
use crate::time::{SampleTime, TimeRange, Timed, Timeline};
use crate::tts::TtsError;
use std::path::PathBuf;

pub use super::performance::{CaptionCue, Performance, PlacedLine, ScriptEvent, ScriptEventKind};
pub use super::voice::{AudioLipSync, LineVoice, LipSync, PiperLineVoice, Style, SynthLineVoice};

/// How long the eyes take to turn to a new look-at target.
pub const LOOK_TURN_SECS: f64 = 0.25;

/// What a render needs besides the script and the voice.
pub struct RenderOptions<'a> {
    pub rig: Rig,
    pub fps: u32,
    /// The face's seed (idle layer); the voice is seeded by whoever built it.
    pub seed: u64,
    /// Default length scale for spoken lines without their own `rate` (the script's `[script] rate`
    /// or the command line's).
    pub rate: Option<f32>,
    /// Audio-driven lip sync for recorded lines without an alignment file.
    pub lipsync: Option<&'a mut dyn LipSync>,
    /// Called after each line with (lines done, lines in all).
    pub progress: Option<&'a mut dyn FnMut(usize, usize)>,
    /// How long the performance may run (`[limits] performance_secs`).
    pub budget: Budget,
}

/// Errors of a render.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// A take that cannot be read; `at` is the script place of its line (`s.toml:4:1: field
    /// `line[2].audio``).
    #[error("{at}: {message}")]
    Audio {
        at: String,
        path: PathBuf,
        message: String,
    },
    #[error("{at}: alignment {}: {message}", path.display())]
    Alignment {
        at: String,
        path: PathBuf,
        message: String,
    },
    #[error("{line}: the voice failed on {sentence:?}: {error}")]
    Voice {
        line: String,
        sentence: String,
        /// Boxed: the error is the size of several paths (larger on Windows, whose paths are wider).
        error: Box<TtsError>,
    },
    #[error(transparent)]
    Face(#[from] FaceError),
    #[error("the performance is empty: nothing was said")]
    Empty,
    /// The performance would run past `[limits] performance_secs`; `at` names the line (or the tail,
    /// or the event) that takes it over, as `s.toml:12:1: line 10`.
    #[error("{at}: {budget}")]
    OverBudget { at: String, budget: OverBudget },
}

fn secs(s: f64, rate: u32) -> u64 {
    SampleTime::from_secs_f64(s, rate)
        .expect("validated times are finite and non-negative")
        .get()
}

fn fmt_secs(s: SampleTime, rate: u32) -> String {
    format!("{:.3}", s.as_secs_f64(rate))
}

/// Where a line is, for budget messages: `s.toml:12:1: line 10 ("intro")`.
fn line_place(script: &Script, line: &Line) -> String {
    pos_place(script, &line.pos, &line.label())
}

fn pos_place(script: &Script, pos: &Pos, what: &str) -> String {
    format!(
        "{}:{}:{}: {what}",
        script.file.display(),
        pos.line,
        pos.column
    )
}

fn over_budget(budget: &Budget, at: String, needed_secs: f64) -> RenderError {
    RenderError::OverBudget {
        at,
        budget: OverBudget {
            what: Budgeted::Performance,
            needed_secs,
            limit_secs: budget.performance_secs,
        },
    }
}

/// Check what the script itself fixes against the performance limit, before anything is spoken or
/// decoded: the lines' gaps and `at` times, their breaks, the tail and the pass-through events, every
/// line counted as if it took no time to say. The error names the first line (or the tail, or the
/// event) that takes the performance over. [`render`] checks again as each line's audio arrives, so
/// no more than the limit is ever allocated.
pub fn check_plan(script: &Script, budget: &Budget) -> Result<(), RenderError> {
    let limit = budget.performance_secs;
    let mut end = 0.0f64;
    let mut starts = Vec::with_capacity(script.lines.len());
    for (i, line) in script.lines.iter().enumerate() {
        let start = match line.timing {
            Timing::At { secs } => secs.max(end),
            Timing::After { gap } => {
                end + gap.unwrap_or(if i == 0 { 0.0 } else { script.defaults.gap })
            }
        };
        let breaks = line.text.as_deref().map_or(0, TagParser::break_millis);
        end = start + breaks as f64 / 1000.0;
        starts.push(start);
        if end > limit {
            return Err(over_budget(budget, line_place(script, line), end));
        }
    }
    let tail = end + script.defaults.tail;
    if tail > limit {
        let at = format!(
            "{}: the tail of {} s after the last line ([script] tail)",
            script.file.display(),
            script.defaults.tail
        );
        return Err(over_budget(budget, at, tail));
    }
    for e in &script.events {
        let at = match e.anchor {
            Anchor::At(t) => t,
            Anchor::Line { index, offset } => starts[index] + offset,
        };
        if at > limit {
            let what = format!("event {:?}", e.name);
            return Err(over_budget(budget, pos_place(script, &e.pos, &what), at));
        }
    }
    Ok(())
}

/// Render a script. See the module docs for the algorithm.
pub fn render(
    script: &Script,
    voice: &mut dyn LineVoice,
    mut opts: RenderOptions<'_>,
) -> Result<Performance, RenderError> {
    let rate = voice.sample_rate();
    let mut warnings = Vec::new();
    check_plan(script, &opts.budget)?;
    // 1. Each line's audio, and 2. its placement.
    let spoken = speak_lines(script, voice, &mut opts, &mut warnings)?;
    let (end, event_at) = end_and_events(script, &spoken, rate, &opts.budget)?;
    // 3. Assembly.
    let a = assemble(script, spoken, &event_at, end, rate);
    let cues = cue_track(&a.events);
    warnings.extend(unknown_cues(&cues, &opts.rig));
    // 4. Face.
    let frames = solve_face(
        &opts,
        &a.phonemes,
        &a.words,
        &cues,
        &a.looks,
        end,
        &mut warnings,
    )?;
    Ok(Performance {
        rate,
        fps: opts.fps,
        seed: opts.seed,
        pcm: a.pcm,
        phonemes: a.phonemes,
        words: a.words,
        lines: a.lines,
        captions: a.captions,
        cues,
        events: a.events,
        frames,
        warnings,
    })
}

/// The lines' audio and where each starts; the last line ends at `end`.
struct Spoken {
    audios: Vec<LineAudio>,
    starts: Vec<u64>,
    end: u64,
}

/// Steps 1 and 2: a line's start depends only on the lines before it, so each line is placed before
/// it is spoken, and may only take the room left.
fn speak_lines(
    script: &Script,
    voice: &mut dyn LineVoice,
    opts: &mut RenderOptions<'_>,
    warnings: &mut Vec<String>,
) -> Result<Spoken, RenderError> {
    let rate = voice.sample_rate();
    let total_lines = script.lines.len();
    let budget = opts.budget;
    let limit = budget.samples(Budgeted::Performance, rate);
    let mut audios = Vec::with_capacity(total_lines);
    let mut starts = Vec::with_capacity(total_lines);
    let mut prev_end = 0u64;
    for (i, line) in script.lines.iter().enumerate() {
        let start = match line.timing {
            Timing::At { secs: t } => {
                let s = secs(t, rate);
                if s < prev_end {
                    let pos = line.at_pos.clone().unwrap_or_else(|| line.pos.clone());
                    return Err(script
                        .error_at(
                            &pos,
                            format!(
                                "{} at {t} s overlaps {}, which is spoken until {} s: use at >= {} or drop at to follow it with a gap",
                                line.label(),
                                script.lines[i - 1].label(),
                                fmt_secs(SampleTime(prev_end), rate),
                                fmt_secs(SampleTime(prev_end), rate),
                            ),
                        )
                        .into());
                }
                s
            }
            Timing::After { gap } => {
                let g = match (gap, i) {
                    (Some(g), _) => g,
                    (None, 0) => 0.0,
                    (None, _) => script.defaults.gap,
                };
                prev_end + secs(g, rate)
            }
        };
        let over = |needed: u64| {
            over_budget(
                &budget,
                line_place(script, line),
                needed as f64 / rate as f64,
            )
        };
        let room = Room {
            start,
            limit,
            over: &over,
        };
        room.fits(0)?;
        let a = match &line.kind {
            LineKind::Spoken => {
                let style = Style {
                    length_scale: line.rate.or(opts.rate),
                    emphasis: line.emphasis,
                };
                let text = line.text.as_deref().unwrap_or_default();
                speak_line(voice, line, text, style, &room, warnings)?
            }
            LineKind::Recorded { audio, phonemes } => recorded_line(
                script,
                line,
                audio,
                phonemes.as_deref(),
                rate,
                &room,
                &mut opts.lipsync,
                warnings,
            )?,
        };
        room.fits(a.pcm.len() as u64)?;
        prev_end = start + a.pcm.len() as u64;
        starts.push(start);
        audios.push(a);
        if let Some(p) = opts.progress.as_deref_mut() {
            p(audios.len(), total_lines);
        }
    }
    if audios.iter().all(|a| a.pcm.is_empty()) {
        return Err(RenderError::Empty);
    }
    Ok(Spoken {
        audios,
        starts,
        end: prev_end,
    })
}

/// Where the performance ends (the tail after the last line, or just after the last pass-through
/// event), and each pass-through event's sample; each checked against the limit.
fn end_and_events(
    script: &Script,
    spoken: &Spoken,
    rate: u32,
    budget: &Budget,
) -> Result<(u64, Vec<u64>), RenderError> {
    let limit = budget.samples(Budgeted::Performance, rate);
    let starts = &spoken.starts;
    let mut end = spoken.end + secs(script.defaults.tail, rate);
    if end > limit {
        let at = format!(
            "{}: the tail of {} s after the last line ([script] tail)",
            script.file.display(),
            script.defaults.tail
        );
        return Err(over_budget(budget, at, end as f64 / rate as f64));
    }
    let event_at: Vec<u64> = script
        .events
        .iter()
        .map(|e| match e.anchor {
            Anchor::At(t) => secs(t, rate),
            Anchor::Line { index, offset } => starts[index] + secs(offset, rate),
        })
        .collect();
    for (e, &at) in script.events.iter().zip(&event_at) {
        if at >= limit {
            let what = format!("event {:?}", e.name);
            return Err(over_budget(
                budget,
                pos_place(script, &e.pos, &what),
                at as f64 / rate as f64,
            ));
        }
        end = end.max(at + 1);
    }
    Ok((end, event_at))
}

/// Step 3's result: the lines on one clock.
struct Assembled {
    pcm: SparsePcm,
    phonemes: Timeline<Phoneme>,
    words: Timeline<Word>,
    lines: Vec<PlacedLine>,
    captions: Vec<CaptionCue>,
    /// Sorted by sample.
    events: Vec<ScriptEvent>,
    /// Look-at targets from each sample on.
    looks: Vec<(u64, Option<EyeGaze>)>,
}

/// Step 3: each line's clips, timelines, captions and marks moved to its start, the gaps filled with
/// silence under `_`, the pass-through events added, the events sorted.
fn assemble(script: &Script, spoken: Spoken, event_at: &[u64], end: u64, rate: u32) -> Assembled {
    let total_lines = script.lines.len();
    let mut pcm = SparsePcm::default();
    let mut phonemes: Timeline<Phoneme> = Timeline::new(rate).expect("rate");
    let mut words: Timeline<Word> = Timeline::new(rate).expect("rate");
    let mut lines = Vec::with_capacity(total_lines);
    let mut captions = Vec::new();
    let mut events: Vec<ScriptEvent> = Vec::new();
    let mut looks: Vec<(u64, Option<EyeGaze>)> = vec![(0, script.defaults.look_at.1.gaze())];
    let mut current_look = script.defaults.look_at.0.clone();
    let fill_to = |phonemes: &mut Timeline<Phoneme>, at: u64| {
        let from = phonemes.span().map_or(0, |s| s.end().get());
        if at > from {
            phonemes
                .push(Timed::new(
                    TimeRange::at(SampleTime(from), at - from),
                    Phoneme::new("_"),
                ))
                .expect("gap after the last phoneme");
        }
    };
    for ((line, a), &start) in script.lines.iter().zip(spoken.audios).zip(&spoken.starts) {
        let s0 = SampleTime(start);
        let range = TimeRange::at(s0, a.pcm.len() as u64);
        for (at, clip) in a.pcm.into_clips() {
            pcm.place(start + at, clip);
        }
        pcm.extend_to(range.end().get());
        for p in a.phonemes.shift(start).into_items() {
            fill_to(&mut phonemes, p.start().get());
            phonemes.push(p).expect("line phonemes are ordered");
        }
        fill_to(&mut phonemes, range.end().get());
        for w in a.words.shift(start).into_items() {
            words.push(w).expect("lines do not overlap");
        }
        for (r, text) in a.captions {
            captions.push(CaptionCue {
                line: line.index,
                range: r.shift(start),
                text,
            });
        }
        let li = Some(line.index);
        events.push(ScriptEvent {
            at: s0,
            line: li,
            kind: ScriptEventKind::LineStart {
                id: line.id.clone(),
                text: a.text.clone(),
                end: range.end(),
                recorded: matches!(line.kind, LineKind::Recorded { .. }),
            },
        });
        if let Some((name, look)) = &line.look_at
            && *name != current_look
        {
            current_look = name.clone();
            looks.push((start, look.gaze()));
            events.push(ScriptEvent {
                at: s0,
                line: li,
                kind: ScriptEventKind::LookAt {
                    target: name.clone(),
                    angles: match look {
                        Look::Free => None,
                        _ => look
                            .gaze()
                            .map(|g| (g.yaw.to_degrees(), g.pitch.to_degrees())),
                    },
                },
            });
        }
        if let Some((name, intensity)) = &line.emotion {
            events.push(ScriptEvent {
                at: s0,
                line: li,
                kind: ScriptEventKind::Emotion {
                    name: name.clone(),
                    intensity: scaled(*intensity, line.emphasis),
                },
            });
        }
        for (at, kind) in a.marks {
            events.push(ScriptEvent {
                at: at + start,
                line: li,
                kind,
            });
        }
        events.push(ScriptEvent {
            at: range.end(),
            line: li,
            kind: ScriptEventKind::LineEnd {
                id: line.id.clone(),
            },
        });
        lines.push(PlacedLine {
            index: line.index,
            id: line.id.clone(),
            range,
            text: a.text,
            recorded: matches!(line.kind, LineKind::Recorded { .. }),
        });
    }
    fill_to(&mut phonemes, end);
    pcm.extend_to(end);
    for (e, &at) in script.events.iter().zip(event_at) {
        events.push(ScriptEvent {
            at: SampleTime(at),
            line: match e.anchor {
                Anchor::Line { index, .. } => Some(index),
                Anchor::At(_) => None,
            },
            kind: ScriptEventKind::Event {
                name: e.name.clone(),
                data: e.data.clone(),
            },
        });
    }
    events.sort_by_key(|e| e.at);
    Assembled {
        pcm,
        phonemes,
        words,
        lines,
        captions,
        events,
        looks,
    }
}

/// The face's cues: the emotion and action events, in order.
fn cue_track(events: &[ScriptEvent]) -> Vec<Cue> {
    let mut cues = Vec::new();
    for e in events {
        let (kind, name, intensity) = match &e.kind {
            ScriptEventKind::Emotion { name, intensity } => (CueKind::Emotion, name, *intensity),
            ScriptEventKind::Action { name, intensity } => (CueKind::Action, name, *intensity),
            _ => continue,
        };
        cues.push(Cue {
            kind,
            name: name.clone(),
            intensity,
            at: e.at,
        });
    }
    cues
}

/// A warning naming the cues the face does not animate (they still go out as events: a game engine
/// may animate them), with the names it knows.
fn unknown_cues(cues: &[Cue], rig: &Rig) -> Option<String> {
    let catalogue = face::gesture::Catalogue::builtin().with_rig(rig);
    let mut unknown: Vec<String> = Vec::new();
    for c in cues {
        let label = format!("{:?} `{}`", c.kind, c.name).to_lowercase();
        if !catalogue.knows(c.kind, &c.name) && !unknown.contains(&label) {
            unknown.push(label);
        }
    }
    if unknown.is_empty() {
        return None;
    }
    let (moods, actions) = catalogue.names();
    Some(format!(
        "the face does not animate {} (they are still emitted as events); the face knows the emotions {} and the actions {}",
        unknown.join(", "),
        moods.join(", "),
        actions.join(", ")
    ))
}

fn smoothstep(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

fn solve_face(
    opts: &RenderOptions<'_>,
    phonemes: &Timeline<Phoneme>,
    words: &Timeline<Word>,
    cues: &[Cue],
    looks: &[(u64, Option<EyeGaze>)],
    end: u64,
    warnings: &mut Vec<String>,
) -> Result<Frames, RenderError> {
    let rate = phonemes.rate();
    let config = |look_at| FaceConfig {
        fps: opts.fps,
        seed: opts.seed,
        look_at,
        ..FaceConfig::default()
    };
    // One face per standing target (a few), built once; turning frames get their own.
    let faces: Vec<Face> = looks
        .iter()
        .map(|(_, g)| Face::new(opts.rig.clone(), config(*g)))
        .collect::<Result<_, _>>()?;
    let base = &faces[0];
    let prep = base.prepare(&Segment {
        range: TimeRange::new(SampleTime::ZERO, SampleTime(end)).expect("ordered"),
        phonemes,
        words: Some(words),
        cues,
    })?;
    if !prep.unknown.is_empty() {
        warnings.push(format!(
            "unknown phoneme symbols (the mouth ignores them): {}",
            prep.unknown.join(" ")
        ));
    }
    let n = prep.frame_count();
    // The canonical vectors are kept (82 floats a frame) so a live `perform` can be retargeted to
    // each client's rig.
    let mut frames = Frames::with_canonical(base.rig(), rate, opts.fps);
    frames.reserve(n as usize);
    let channels = base.rig().len();
    let turn = (LOOK_TURN_SECS * rate as f64) as u64;
    let mut scratch = Scratch::default();
    let mut c = [0.0f32; crate::face::canon::COUNT];
    let mut li = 0usize;
    for k in 0..n {
        let at = SampleTime::ZERO.frame(k, rate, opts.fps);
        while li + 1 < looks.len() && looks[li + 1].0 <= at.get() {
            li += 1;
        }
        let since = at.get() - looks[li].0;
        let baseidx = frames.weights.len();
        frames.weights.resize(baseidx + channels, 0.0);
        let out = &mut frames.weights[baseidx..];
        let (head, gaze) = if li > 0 && since < turn {
            let x = smoothstep(since as f64 / turn as f64) as f32;
            let a = looks[li - 1].1.unwrap_or_default();
            let b = looks[li].1.unwrap_or_default();
            let g = EyeGaze {
                yaw: a.yaw + (b.yaw - a.yaw) * x,
                pitch: a.pitch + (b.pitch - a.pitch) * x,
            };
            let f = Face::new(opts.rig.clone(), config(Some(g)))?;
            f.eval_canonical(&prep, at, &mut scratch, out, &mut c)
        } else {
            faces[li].eval_canonical(&prep, at, &mut scratch, out, &mut c)
        };
        frames.stamps.push(at);
        frames.heads.push(head);
        frames.gaze.push(gaze);
        frames.push_canonical(&c);
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tts::FakeSynthesizer;
    use std::path::Path;

    fn perf(src: &str) -> Result<Performance, RenderError> {
        perf_within(src, Budget::default())
    }

    fn perf_within(src: &str, budget: Budget) -> Result<Performance, RenderError> {
        let script = Script::parse(src, Path::new("t.toml"), Path::new("."))?;
        let mut voice = SynthLineVoice(FakeSynthesizer::default());
        render(
            &script,
            &mut voice,
            RenderOptions {
                rig: Rig::builtin("arkit52").unwrap(),
                fps: 30,
                seed: 1,
                rate: None,
                lipsync: None,
                progress: None,
                budget,
            },
        )
    }

    fn secs_budget(secs: f64) -> Budget {
        Budget {
            performance_secs: secs,
            ..Budget::default()
        }
    }

    #[test]
    fn a_76_gb_script_is_refused_before_anything_is_spoken() {
        let mut src = String::new();
        for _ in 0..10 {
            src.push_str("[[line]]\ntext = \"Hi.\"\ngap = 86400\n");
        }
        let script = Script::parse(&src, Path::new("t.toml"), Path::new(".")).unwrap();
        let e = check_plan(&script, &Budget::default()).unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("t.toml:1:1: line 1:"), "{m}");
        assert!(m.contains("over the limit of 600 s"), "{m}");
        assert!(m.contains("[limits] performance_secs in idol.toml"), "{m}");
        let e = perf(&src).unwrap_err();
        assert!(matches!(e, RenderError::OverBudget { .. }), "{e}");
    }

    #[test]
    fn breaks_tail_and_events_count_before_speech() {
        let b = secs_budget(10.0);
        let e = perf_within(
            "[[line]]\ntext = \"Hi.\"\n[[line]]\ntext = \"A <break time=\\\"6s\\\"/> b <break time=\\\"5s\\\"/> c.\"\n",
            b,
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 2:"), "{e}");
        let e = perf_within("[script]\ntail = 11\n[[line]]\ntext = \"Hi.\"\n", b).unwrap_err();
        assert!(e.to_string().contains("[script] tail"), "{e}");
        let e = perf_within(
            "[[line]]\ntext = \"Hi.\"\n[[event]]\nname = \"cam\"\nat = 20\n",
            b,
        )
        .unwrap_err();
        assert!(e.to_string().contains("event \"cam\""), "{e}");
    }

    #[test]
    fn speech_past_the_limit_is_refused_naming_the_line() {
        // The fake voice says each letter in 80 ms: 40 letters are 3.2 s.
        let e = perf_within(
            "[[line]]\ntext = \"Hi.\"\n[[line]]\nid = \"long\"\ntext = \"abcdefghij abcdefghij. abcdefghij abcdefghij.\"\n",
            secs_budget(2.0),
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("line 2 (\"long\")"), "{m}");
        assert!(m.contains("over the limit of 2 s"), "{m}");
        let p = perf_within("[[line]]\ntext = \"Hi.\"\n", secs_budget(2.0)).unwrap();
        assert!(p.pcm.len() <= 44100);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Random scripts of lines, breaks, gaps, `at`s, tails and events: the render never panics
        /// and never plans or allocates a performance longer than the limit.
        #[test]
        fn random_scripts_stay_within_the_limit(
            lines in proptest::collection::vec(
                (0usize..4, proptest::collection::vec(0u32..8000, 0..3), proptest::option::of(0.0f64..4.0), proptest::bool::ANY),
                1..6,
            ),
            tail in 0.0f64..3.0,
            event_at in proptest::option::of(0.0f64..30.0),
            limit in 1.0f64..15.0,
        ) {
            let words = ["Hi.", "Hello there.", "Yes", "Good evening everyone."];
            let mut src = format!("[script]\ntail = {tail}\n");
            let mut at = 0.0;
            for (w, breaks, gap, use_at) in &lines {
                let mut text = words[*w].to_string();
                for b in breaks {
                    text.push_str(&format!(" <break time=\\\"{b}ms\\\"/> Ok."));
                }
                src.push_str(&format!("[[line]]\ntext = \"{text}\"\n"));
                match gap {
                    Some(g) if *use_at => {
                        at += 5.0 + g;
                        src.push_str(&format!("at = {at}\n"));
                    }
                    Some(g) => src.push_str(&format!("gap = {g}\n")),
                    None => {}
                }
            }
            if let Some(t) = event_at {
                src.push_str(&format!("[[event]]\nname = \"e\"\nat = {t}\n"));
            }
            let budget = secs_budget(limit);
            match perf_within(&src, budget) {
                Ok(p) => {
                    let max = budget.samples(Budgeted::Performance, p.rate);
                    proptest::prop_assert!(p.pcm.len() as u64 <= max);
                    proptest::prop_assert!(p.frames.len() as u64 <= SampleTime::frames_in(max, p.rate, p.fps));
                }
                Err(RenderError::OverBudget { budget: b, .. }) => {
                    proptest::prop_assert!(b.needed_secs > limit - 1e-6, "{b}");
                }
                Err(RenderError::Script(_)) | Err(RenderError::Empty) => {}
                Err(e) => proptest::prop_assert!(false, "{e}"),
            }
        }
    }

    #[test]
    fn lines_follow_with_gaps_and_at() {
        let p = perf(
            "[script]\ngap = \"200ms\"\ntail = \"1s\"\n[[line]]\ntext = \"Hi there.\"\n[[line]]\ntext = \"Yo.\"\n[[line]]\ntext = \"Go.\"\nat = 10\n[[line]]\ntext = \"Ok.\"\ngap = 0\n",
        )
        .unwrap();
        let r: Vec<TimeRange> = p.lines.iter().map(|l| l.range).collect();
        assert_eq!(r[0].start(), SampleTime::ZERO);
        assert_eq!(r[1].start().get(), r[0].end().get() + 4410);
        assert_eq!(r[2].start().get(), 220500);
        assert_eq!(r[3].start(), r[2].end());
        assert_eq!(p.pcm.len() as u64, r[3].end().get() + 22050);
        assert_eq!(
            p.frames.len() as u64,
            SampleTime::frames_in(p.pcm.len() as u64, 22050, 30)
        );
        assert!(p.phonemes.is_contiguous());
        assert_eq!(p.phonemes.span().unwrap().end().get(), p.pcm.len() as u64);
    }

    #[test]
    fn overlapping_at_is_a_positioned_error() {
        let e = perf("[[line]]\ntext = \"Hello there everyone, how are you.\"\n[[line]]\ntext = \"Yo.\"\nat = 0.5\n")
            .unwrap_err();
        let RenderError::Script(e) = e else {
            panic!("{e}")
        };
        assert_eq!((e.line, e.column, e.field.as_str()), (5, 6, "line[2].at"));
        assert!(e.message.contains("overlaps line 1"), "{e}");
    }

    #[test]
    fn breaks_are_silence_and_cues_land_in_order() {
        let p =
            perf("[[line]]\ntext = \"[happy] Hello. <wave> <break time=\\\"500ms\\\"/> Bye.\"\n")
                .unwrap();
        let kinds: Vec<String> = p
            .events
            .iter()
            .map(|e| match &e.kind {
                ScriptEventKind::LineStart { .. } => "start".into(),
                ScriptEventKind::LineEnd { .. } => "end".into(),
                ScriptEventKind::Emotion { name, .. } => name.clone(),
                ScriptEventKind::Action { name, .. } => name.clone(),
                ScriptEventKind::Break { millis } => format!("break{millis}"),
                _ => "other".into(),
            })
            .collect();
        // The wave is written before the break and "Bye.": it lands on "Bye.", after the silence.
        assert_eq!(kinds, ["start", "happy", "break500", "wave", "end"]);
        let brk = p.events[2].at.get() as usize;
        let bye = p.words.items().last().unwrap();
        assert_eq!(bye.value.text, "Bye");
        assert_eq!(p.events[3].at, bye.start());
        assert!(bye.start().get() as usize >= brk + 11025);
        assert!(
            p.pcm
                .slice(brk as u64, brk as u64 + 11025)
                .iter()
                .all(|&x| x == 0.0)
        );
        assert_eq!(p.captions.len(), 2);
        assert_eq!(p.captions[1].range.start().get() as usize, brk + 11025);
    }

    #[test]
    fn pass_through_events_at_their_samples_and_extend_the_end() {
        let p = perf(
            "[[line]]\nid = \"a\"\ntext = \"Hi.\"\n[[event]]\nname = \"camera\"\nline = \"a\"\noffset = \"100ms\"\ndata = { shot = 2 }\n[[event]]\nname = \"lights\"\nat = 30\n",
        )
        .unwrap();
        let ev: Vec<(u64, &str)> = p
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                ScriptEventKind::Event { name, .. } => Some((e.at.get(), name.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(ev, [(2205, "camera"), (661500, "lights")]);
        assert_eq!(p.pcm.len(), 661501);
    }
}
