//! The director: one session timeline, built from scheduled speech, released in sample order.
//!
//! Algorithm. The timeline has a *horizon* `E`: every audio sample before `E` and every frame stamped
//! before `E` has been released, nothing at or after it has. [`Director::advance`] moves `E` forward in
//! steps of at most one chunk (`chunk` samples), emitting for each step, in this order:
//!
//! - inside a scheduled segment (the speech of one clause, placed at `s0`): the audio chunk
//!   `[E, min(end, s0 + (⌊(E-s0)/chunk⌋+1)·chunk))`, then the segment's frames, cues and state changes
//!   stamped inside that chunk; the clause's caption goes out with its first chunk;
//! - in a gap (no segment yet, or the next starts later): idle frames from the face for the step.
//!
//! [`Director::schedule`] places a clause's speech at `max(E, end of the last scheduled segment)`: an
//! utterance starts at the timeline's current position and its clauses follow each other without gaps
//! when the voice keeps ahead. The face solves the clause's frames right there, at their final stamps
//! (`s0.frame(k, rate, fps)` for `k < frames_in(len)`), so frames cover exactly the audio.
//!
//! A pause (a `<break/>` before or after a clause, [`Director::schedule_pause`]) is a segment with a
//! length and no samples: its chunks are zeros made one chunk at a time as it is released and its
//! frames are the face's idle frames, so an hour of breaks costs no more memory than a second.
//!
//! Budget: an utterance may not be scheduled past `[limits] utterance_secs`
//! ([`Director::set_utterance_limit`]): the piece that would take it over is refused with
//! [`StageError::OverBudget`] and the rest of that utterance is dropped; what was placed before it
//! plays.
//!
//! Barge-in ([`Director::interrupt`]) cuts at `E`: the audio and frames before it were released, nothing
//! of the utterance after it will be, so audio and face end at the same sample for every client. The
//! heard text is the words whose span starts before the cut. Every queued utterance is dropped too.
//!
//! Pure and synchronous: no clock, no threads; the runtime feeds it and decides how far to advance.

use super::{
    AudioChunk, Caption, ClauseText, CueEvent, Event, FaceControl, FaceSolver, Frame, FrameEvent,
    PerformState, StageError, StateEvent, UtteranceId, UtteranceRecord,
};
use crate::speech::{Cue, CueKind, Speech, Word};
use crate::time::{SampleTime, TimeRange, Timed};
use std::collections::VecDeque;

/// Fixed parameters of a session timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectorConfig {
    /// Session sample rate (the voice's).
    pub rate: u32,
    pub fps: u32,
    /// Audio chunk length in samples (the largest step of the horizon).
    pub chunk: u64,
}

/// What a placed speech is: a whole clause, the head of one (with its plan), or the rest after a head.
enum Piece<'a> {
    Whole(&'a ClauseText),
    Head(&'a ClauseText, &'a Speech),
    Rest,
}

struct Segment {
    utt: UtteranceId,
    range: TimeRange,
    /// The samples; empty for a pause (silence of `range`'s length, made as it is released).
    pcm: Vec<f32>,
    pause: bool,
    /// A pause's frames come from the face's idle motion as it is released (a `<break/>`); false
    /// for a rendered performance's silence, which carries its own frames.
    idle_face: bool,
    frames: VecDeque<Frame>,
    cues: VecDeque<Cue>,
    caption: Option<Caption>,
}

impl Segment {
    /// Release the cues stamped before `end`, in order.
    fn release_cues(&mut self, end: SampleTime, out: &mut Vec<Event>) {
        while self.cues.front().is_some_and(|c| c.at < end) {
            let cue = self.cues.pop_front().expect("checked");
            out.push(Event::Cue(CueEvent {
                utterance: self.utt,
                cue,
            }));
        }
    }
}

struct Utterance {
    id: UtteranceId,
    /// No more clauses will come.
    ended: bool,
    speaking: bool,
    /// Clause texts whose audio started.
    said: Vec<String>,
    /// Words (session time) of the clauses whose audio started.
    words: Vec<Timed<Word>>,
    /// Samples scheduled for it so far (speech and pauses).
    scheduled: u64,
    /// A piece went over the utterance limit: the rest of it is dropped.
    over: bool,
}

/// A piece of an already-rendered performance (a scripted line's sentence, or the silence between
/// lines): its audio, the face frames solved for it, its cues and at most one caption, every stamp
/// counted from the piece's first sample (0). See [`Director::schedule_rendered`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RenderedPiece {
    pub pcm: Vec<f32>,
    /// With `pcm` empty: this many samples of silence (a gap between lines), a span on the
    /// timeline released as zeros one chunk at a time, never materialized.
    pub silence: u64,
    /// Frames with stamps inside `0..pcm.len()`.
    pub frames: Vec<Frame>,
    pub cues: Vec<Cue>,
    /// Caption text and its words, sent when the piece's audio starts.
    pub caption: Option<(String, Vec<Timed<Word>>)>,
}

/// The session timeline state machine. See the module docs.
pub struct Director {
    cfg: DirectorConfig,
    face: Box<dyn FaceSolver>,
    horizon: SampleTime,
    next_free: SampleTime,
    segments: VecDeque<Segment>,
    utts: VecDeque<Utterance>,
    state: PerformState,
    records: Vec<UtteranceRecord>,
    /// Face frames solved for a whole clause whose head is placed and whose rest is awaited:
    /// (utterance, where the rest must start, the frames and the cues from there on).
    rest_frames: Option<(UtteranceId, SampleTime, Vec<Frame>, Vec<Cue>)>,
    /// Cues of an utterance with nothing left on the timeline to carry them (tags after its last
    /// word once its audio is out, or an utterance of tags only): released at the horizon.
    loose_cues: Vec<(UtteranceId, Cue)>,
    /// The most samples one utterance may be scheduled (`u64::MAX`: no limit).
    max_utterance: u64,
}

impl Director {
    pub fn new(cfg: DirectorConfig, face: Box<dyn FaceSolver>) -> Self {
        assert!(cfg.rate > 0 && cfg.fps > 0 && cfg.chunk > 0);
        Director {
            cfg,
            face,
            horizon: SampleTime::ZERO,
            next_free: SampleTime::ZERO,
            segments: VecDeque::new(),
            utts: VecDeque::new(),
            state: PerformState::Idle,
            records: Vec::new(),
            rest_frames: None,
            loose_cues: Vec::new(),
            max_utterance: u64::MAX,
        }
    }

    /// Limit each utterance to `samples` of speech and pauses (see the module docs).
    pub fn set_utterance_limit(&mut self, samples: u64) {
        self.max_utterance = samples;
    }

    /// Count `len` more samples against utterance `id`'s budget: `Ok(false)` when the utterance was
    /// already over (drop the piece quietly), an error when this piece takes it over.
    fn charge(&mut self, id: UtteranceId, len: u64) -> Result<bool, StageError> {
        let (rate, max) = (self.cfg.rate, self.max_utterance);
        let Some(u) = self.utts.iter_mut().find(|u| u.id == id) else {
            return Ok(false);
        };
        if u.over {
            return Ok(false);
        }
        let total = u.scheduled.saturating_add(len);
        if total > max {
            u.over = true;
            if self.rest_frames.as_ref().is_some_and(|r| r.0 == id) {
                self.rest_frames = None;
            }
            return Err(StageError::OverBudget(crate::budget::OverBudget {
                what: crate::budget::Budgeted::Utterance,
                needed_secs: total as f64 / f64::from(rate),
                limit_secs: max as f64 / f64::from(rate),
            }));
        }
        u.scheduled = total;
        Ok(true)
    }

    /// Place `len` samples of silence for utterance `id` after what is scheduled (a `<break/>`): a
    /// span on the timeline, released as zeros and idle frames one chunk at a time. Ignored for an
    /// unknown utterance.
    pub fn schedule_pause(&mut self, id: UtteranceId, len: u64) -> Result<(), StageError> {
        if len == 0 || !self.known(id) || !self.charge(id, len)? {
            return Ok(());
        }
        let s0 = self.horizon.max(self.next_free);
        let range = TimeRange::at(s0, len);
        self.next_free = range.end();
        self.segments.push_back(Segment {
            utt: id,
            range,
            pcm: Vec::new(),
            pause: true,
            idle_face: true,
            frames: VecDeque::new(),
            cues: VecDeque::new(),
            caption: None,
        });
        Ok(())
    }

    /// Cues written after the last word of utterance `id` (a clause with no text,
    /// [`ClauseText`]): placed at the last sample scheduled for it while that is still to be
    /// released, else released at the horizon. Ignored for an unknown utterance.
    pub fn schedule_tail_cues(&mut self, id: UtteranceId, cues: &[super::WordCue]) {
        if cues.is_empty() || !self.known(id) {
            return;
        }
        let cue = |c: &super::WordCue, at: SampleTime| c.to_cue(at);
        match self.segments.iter_mut().rev().find(|s| s.utt == id) {
            Some(seg) => {
                let at = SampleTime(seg.range.end().get() - 1).max(self.horizon);
                seg.cues.extend(cues.iter().map(|c| cue(c, at)));
            }
            None => {
                let at = self.horizon;
                self.loose_cues
                    .extend(cues.iter().map(|c| (id, cue(c, at))));
            }
        }
    }

    pub fn config(&self) -> DirectorConfig {
        self.cfg
    }

    /// The first sample not yet released.
    pub fn horizon(&self) -> SampleTime {
        self.horizon
    }

    pub fn state(&self) -> PerformState {
        self.state
    }

    pub fn face(&self) -> &dyn FaceSolver {
        self.face.as_ref()
    }

    /// Utterances that ended since the last call (completed or interrupted), for the persona's memory.
    pub fn take_records(&mut self) -> Vec<UtteranceRecord> {
        std::mem::take(&mut self.records)
    }

    fn set_state(&mut self, state: PerformState, utt: Option<UtteranceId>, out: &mut Vec<Event>) {
        if self.state != state || state == PerformState::Interrupted {
            self.state = state;
            out.push(Event::State(StateEvent {
                state,
                utterance: utt,
                at: self.horizon,
                heard: None,
            }));
        }
    }

    /// A new utterance was requested (its text is being generated).
    pub fn begin(&mut self, id: UtteranceId, out: &mut Vec<Event>) {
        self.utts.push_back(Utterance {
            id,
            ended: false,
            speaking: false,
            said: Vec::new(),
            words: Vec::new(),
            scheduled: 0,
            over: false,
        });
        if self.state == PerformState::Idle {
            self.set_state(PerformState::Thinking, Some(id), out);
        }
    }

    fn known(&self, id: UtteranceId) -> bool {
        self.utts.iter().any(|u| u.id == id)
    }

    /// Place one clause's speech on the timeline. Speech for an utterance that is unknown (never
    /// begun, or dropped by an interrupt) is ignored.
    pub fn schedule(
        &mut self,
        id: UtteranceId,
        clause: &ClauseText,
        speech: &Speech,
    ) -> Result<(), StageError> {
        self.place(id, Piece::Whole(clause), speech)
    }

    /// Place the first piece of a clause (see [`crate::perform::Voice::speak_head_first`]): like
    /// [`Director::schedule`], but the caption, the cues and the face come from `plan`, the whole
    /// clause's timelines, so the face is solved once on the clause's own frame grid; the frames past
    /// the head wait for [`Director::schedule_continuation`].
    pub fn schedule_head(
        &mut self,
        id: UtteranceId,
        clause: &ClauseText,
        head: &Speech,
        plan: &Speech,
    ) -> Result<(), StageError> {
        self.place(id, Piece::Head(clause, plan), head)
    }

    /// Place the rest of a clause after its head: audio, and the face frames solved with the head
    /// (solved again for the rest alone only if it comes too late to follow the head directly).
    pub fn schedule_continuation(
        &mut self,
        id: UtteranceId,
        rest: &Speech,
    ) -> Result<(), StageError> {
        self.place(id, Piece::Rest, rest)
    }

    fn place(
        &mut self,
        id: UtteranceId,
        piece: Piece<'_>,
        speech: &Speech,
    ) -> Result<(), StageError> {
        if !self.known(id) {
            return Ok(());
        }
        if speech.sample_rate != self.cfg.rate {
            return Err(StageError::RateMismatch {
                got: speech.sample_rate,
                want: self.cfg.rate,
            });
        }
        speech.validate().map_err(StageError::BadSpeech)?;
        let len = speech.pcm.len() as u64;
        if len == 0 || !self.charge(id, len)? {
            return Ok(());
        }
        let s0 = self.horizon.max(self.next_free);
        let range = TimeRange::at(s0, len);
        self.next_free = range.end();
        let is_rest = matches!(piece, Piece::Rest);
        // The rest of a clause takes the frames and cues its head left for it (shifted if the
        // timeline did not wait for it; the frames are then solved again).
        let (waiting, rest_cues) = match self.rest_frames.take() {
            Some((u, at, frames, cues)) if is_rest && u == id => {
                let shift = s0.get().saturating_sub(at.get());
                let cues = cues
                    .into_iter()
                    .map(|mut c| {
                        c.at += shift;
                        c
                    })
                    .collect();
                ((shift == 0).then_some(frames), cues)
            }
            _ => (None, Vec::new()),
        };
        let (clause, whole) = match piece {
            Piece::Whole(c) => (Some(c), speech),
            Piece::Head(c, plan) => (Some(c), plan),
            Piece::Rest => (None, speech),
        };
        let words: Vec<Timed<Word>> = match clause {
            Some(_) => whole
                .words
                .iter()
                .map(|w| Timed::new(w.range.shift(s0.get()), w.value.clone()))
                .collect(),
            None => Vec::new(),
        };
        let clause_end = SampleTime(s0.get() + whole.pcm.len() as u64).max(range.end());
        let mut cues: Vec<Cue> = match clause {
            Some(c) => crate::text::place_cues(
                c,
                whole.words.items(),
                SampleTime(clause_end.get() - s0.get()),
                s0,
            ),
            None => Vec::new(),
        };
        cues.extend(rest_cues);
        cues.sort_by_key(|c| c.at);
        let mut solved: Vec<Frame> = match waiting {
            Some(frames) => frames,
            None => self.face.frames(s0, whole, &cues),
        };
        solved.sort_by_key(|f| f.at);
        solved.dedup_by_key(|f| f.at);
        if clause_end > range.end() {
            // A head: what is stamped past it waits for the rest of the clause.
            let later: Vec<Frame> = solved
                .iter()
                .filter(|f| f.at >= range.end() && f.at < clause_end)
                .cloned()
                .collect();
            let later_cues: Vec<Cue> = cues
                .iter()
                .filter(|c| c.at >= range.end())
                .cloned()
                .collect();
            cues.retain(|c| c.at < range.end());
            self.rest_frames = Some((id, range.end(), later, later_cues));
        }
        let frames: Vec<Frame> = solved
            .into_iter()
            .filter(|f| range.contains(f.at))
            .collect();
        self.segments.push_back(Segment {
            utt: id,
            range,
            pcm: speech.pcm.clone(),
            pause: false,
            idle_face: false,
            frames: frames.into(),
            cues: cues.into(),
            caption: clause.map(|clause| Caption {
                utterance: id,
                text: clause.text.clone(),
                range: TimeRange::new(range.start(), clause_end).expect("ordered"),
                words,
            }),
        });
        Ok(())
    }

    /// Place pre-rendered pieces (a script performance, `idol::script::live::pieces`) back to back from
    /// `max(horizon, end of the last scheduled segment)`, as utterance `id`. The face is not consulted:
    /// the pieces carry their frames. Pieces for an unknown utterance are ignored.
    pub fn schedule_rendered(&mut self, id: UtteranceId, pieces: Vec<RenderedPiece>) {
        if !self.known(id) {
            return;
        }
        for p in pieces {
            let silent = p.pcm.is_empty();
            let len = if silent {
                p.silence
            } else {
                p.pcm.len() as u64
            };
            if len == 0 {
                continue;
            }
            let s0 = self.horizon.max(self.next_free);
            let range = TimeRange::at(s0, len);
            self.next_free = range.end();
            let mut frames: Vec<Frame> = p
                .frames
                .into_iter()
                .filter(|f| f.at.get() < len)
                .map(|mut f| {
                    f.at += s0.get();
                    f
                })
                .collect();
            frames.sort_by_key(|f| f.at);
            let mut cues: Vec<Cue> = p
                .cues
                .into_iter()
                .map(|mut c| {
                    c.at = SampleTime(c.at.get().min(len - 1)) + s0.get();
                    c
                })
                .collect();
            cues.sort_by_key(|c| c.at);
            let caption = p.caption.map(|(text, words)| Caption {
                utterance: id,
                text,
                range,
                words: words
                    .into_iter()
                    .map(|w| Timed::new(w.range.shift(s0.get()), w.value))
                    .collect(),
            });
            self.segments.push_back(Segment {
                utt: id,
                range,
                pcm: p.pcm,
                pause: silent,
                idle_face: false,
                frames: frames.into(),
                cues: cues.into(),
                caption,
            });
        }
    }

    /// No more clauses will come for `id`.
    pub fn end(&mut self, id: UtteranceId, out: &mut Vec<Event>) {
        if let Some(u) = self.utts.iter_mut().find(|u| u.id == id) {
            u.ended = true;
        }
        self.finish_ready(out);
    }

    /// Apply a standing face control from the horizon on.
    pub fn set(&mut self, control: &FaceControl, out: &mut Vec<Event>) {
        self.face.set(control);
        if let FaceControl::Emotion { name, intensity } = control {
            out.push(Event::Cue(CueEvent {
                utterance: self.current_speaking().unwrap_or(0),
                cue: Cue {
                    kind: CueKind::Emotion,
                    name: name.clone(),
                    intensity: *intensity,
                    at: self.horizon,
                },
            }));
        }
    }

    fn current_speaking(&self) -> Option<UtteranceId> {
        self.utts.front().filter(|u| u.speaking).map(|u| u.id)
    }

    /// Barge-in: cut the current utterance at the horizon and drop everything queued. Returns the ids
    /// of every utterance dropped (so the persona and voice stop working on them); the current one's
    /// record (with the heard text) is in [`Director::take_records`].
    pub fn interrupt(&mut self, out: &mut Vec<Event>) -> Vec<UtteranceId> {
        let cut = self.horizon;
        self.segments.clear();
        self.loose_cues.clear();
        self.next_free = cut;
        let dropped: Vec<UtteranceId> = self.utts.iter().map(|u| u.id).collect();
        let mut first = true;
        for u in std::mem::take(&mut self.utts) {
            let heard = if first {
                let words: Vec<&str> = u
                    .words
                    .iter()
                    .filter(|w| w.start() < cut)
                    .map(|w| w.value.text.as_str())
                    .collect();
                words.join(" ")
            } else {
                String::new()
            };
            if first {
                self.state = PerformState::Interrupted;
                out.push(Event::State(StateEvent {
                    state: PerformState::Interrupted,
                    utterance: Some(u.id),
                    at: cut,
                    heard: Some(heard.clone()),
                }));
            }
            first = false;
            self.records.push(UtteranceRecord {
                utterance: u.id,
                text: heard,
                interrupted: true,
                cut: Some(cut),
            });
        }
        if !dropped.is_empty() {
            self.set_state(PerformState::Idle, None, out);
        }
        dropped
    }

    /// Release everything before `to` (rounded up to the chunk that contains it).
    pub fn advance(&mut self, to: SampleTime, out: &mut Vec<Event>) {
        // While the rest of a clause whose head is placed is being made, the timeline waits at the
        // head's end (so the rest follows without a gap) and catches up when it comes.
        let to = match &self.rest_frames {
            Some((utt, at, ..)) if self.known(*utt) => to.min(*at),
            _ => to,
        };
        while self.horizon < to {
            self.step(out);
        }
    }

    /// Stop waiting for the rest of a clause (its voice failed): the timeline moves on.
    pub fn release_hold(&mut self) {
        self.rest_frames = None;
    }

    fn step(&mut self, out: &mut Vec<Event>) {
        let e = self.horizon;
        for (utterance, mut cue) in self.loose_cues.drain(..) {
            cue.at = e;
            out.push(Event::Cue(CueEvent { utterance, cue }));
        }
        let chunk = self.cfg.chunk;
        let Some(seg) = self.segments.front() else {
            self.idle(TimeRange::at(e, chunk), out);
            return;
        };
        if seg.range.start() > e {
            let end = seg.range.start().min(e + chunk);
            self.idle(TimeRange::new(e, end).expect("gap is ordered"), out);
            return;
        }
        // Inside the front segment.
        let utt = seg.utt;
        let s0 = seg.range.start();
        let off = e - s0;
        let end_off = ((off / chunk + 1) * chunk).min(seg.range.len());
        let end = s0 + end_off;
        if let Some(caption) = self.segments[0].caption.take() {
            let u = self
                .utts
                .iter_mut()
                .find(|u| u.id == utt)
                .expect("scheduled segments belong to known utterances");
            u.said.push(caption.text.clone());
            u.words.extend(caption.words.iter().cloned());
            let first = !u.speaking;
            u.speaking = true;
            if first {
                self.set_state(PerformState::Speaking, Some(utt), out);
            }
            out.push(Event::Caption(caption));
        }
        if self.segments[0].pause {
            // Silence made for this chunk only, with the face idling over it. An utterance that
            // opens with a pause is speaking from its first silent sample.
            if let Some(u) = self.utts.iter_mut().find(|u| u.id == utt)
                && !u.speaking
            {
                u.speaking = true;
                self.set_state(PerformState::Speaking, Some(utt), out);
            }
            out.push(Event::Audio(AudioChunk {
                utterance: utt,
                start: e,
                pcm: vec![0.0; (end_off - off) as usize],
            }));
            let range = TimeRange::new(e, end).expect("chunk is ordered");
            let seg = &mut self.segments[0];
            seg.release_cues(end, out);
            let mut frames: Vec<Frame> = if seg.idle_face {
                self.face
                    .idle(range)
                    .into_iter()
                    .filter(|f| range.contains(f.at))
                    .collect()
            } else {
                let mut own = Vec::new();
                while seg.frames.front().is_some_and(|f| f.at < end) {
                    own.push(seg.frames.pop_front().expect("checked"));
                }
                own
            };
            frames.sort_by_key(|f| f.at);
            frames.dedup_by_key(|f| f.at);
            out.extend(frames.into_iter().map(|frame| {
                Event::Frame(FrameEvent {
                    utterance: utt,
                    frame,
                })
            }));
            self.horizon = end;
            if end == self.segments[0].range.end() {
                self.segments.pop_front();
                self.finish_ready(out);
            }
            return;
        }
        let seg = &mut self.segments[0];
        out.push(Event::Audio(AudioChunk {
            utterance: utt,
            start: e,
            pcm: seg.pcm[off as usize..end_off as usize].to_vec(),
        }));
        seg.release_cues(end, out);
        while seg.frames.front().is_some_and(|f| f.at < end) {
            let frame = seg.frames.pop_front().expect("checked");
            out.push(Event::Frame(FrameEvent {
                utterance: utt,
                frame,
            }));
        }
        self.horizon = end;
        if end == seg.range.end() {
            self.segments.pop_front();
            self.finish_ready(out);
        }
    }

    fn idle(&mut self, range: TimeRange, out: &mut Vec<Event>) {
        let mut frames: Vec<Frame> = self
            .face
            .idle(range)
            .into_iter()
            .filter(|f| range.contains(f.at))
            .collect();
        frames.sort_by_key(|f| f.at);
        frames.dedup_by_key(|f| f.at);
        out.extend(frames.into_iter().map(|frame| {
            Event::Frame(FrameEvent {
                utterance: 0,
                frame,
            })
        }));
        self.horizon = range.end();
    }

    /// Complete the front utterances whose input ended and whose audio is all released.
    fn finish_ready(&mut self, out: &mut Vec<Event>) {
        while let Some(u) = self.utts.front() {
            let pending = self.segments.iter().any(|s| s.utt == u.id);
            if !u.ended || pending {
                break;
            }
            let u = self.utts.pop_front().expect("checked");
            self.records.push(UtteranceRecord {
                utterance: u.id,
                text: u.said.join(" "),
                interrupted: false,
                cut: None,
            });
            match self.utts.front() {
                Some(next) if next.speaking => {}
                Some(next) => {
                    let id = next.id;
                    self.set_state(PerformState::Thinking, Some(id), out);
                }
                None => self.set_state(PerformState::Idle, None, out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perform::testing::{JawFace, ToneVoice};
    use crate::perform::{Voice, WordCue};

    const RATE: u32 = 22050;

    fn director() -> Director {
        Director::new(
            DirectorConfig {
                rate: RATE,
                fps: 60,
                chunk: 441,
            },
            Box::new(JawFace::arkit(RATE, 60)),
        )
    }

    fn clause(text: &str) -> ClauseText {
        ClauseText {
            text: text.into(),
            ..ClauseText::default()
        }
    }

    fn audio_of(events: &[Event], utt: UtteranceId) -> Vec<(u64, usize)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Audio(a) if a.utterance == utt => Some((a.start.get(), a.pcm.len())),
                _ => None,
            })
            .collect()
    }

    fn frames_of(events: &[Event], utt: UtteranceId) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(f) if f.utterance == utt => Some(f.frame.at.get()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_pause_is_a_span_released_as_silence_with_idle_frames() {
        let mut d = director();
        let mut out = vec![];
        d.begin(1, &mut out);
        let speech = ToneVoice::new(RATE).speak("Hi there").unwrap();
        let n = speech.pcm.len() as u64;
        // Twenty hours of pause: placed at once, nothing allocated for it.
        let hours = 20 * 3600 * u64::from(RATE);
        d.schedule_pause(1, 441 * 3).unwrap();
        d.schedule(1, &clause("Hi there"), &speech).unwrap();
        d.schedule_pause(1, hours).unwrap();
        assert!(
            d.segments
                .iter()
                .filter(|s| s.pause)
                .all(|s| s.pcm.is_empty())
        );
        d.end(1, &mut out);
        d.advance(SampleTime(441 * 3 + n + 22050), &mut out);
        let audio: Vec<&AudioChunk> = out
            .iter()
            .filter_map(|e| match e {
                Event::Audio(a) => Some(a),
                _ => None,
            })
            .collect();
        // Contiguous from 0, the pause before as zeros, then the speech, then the pause after.
        let mut at = 0;
        for a in &audio {
            assert_eq!(a.start.get(), at);
            assert_eq!(a.utterance, 1);
            at += a.pcm.len() as u64;
        }
        assert_eq!(at, 441 * 3 + n + 22050);
        assert!(audio[..3].iter().all(|a| a.pcm.iter().all(|&x| x == 0.0)));
        assert!(audio.iter().all(|a| a.pcm.len() <= 441));
        // Frames all through, the pauses' idle frames included, in order, none missing (a pause's
        // idle frames are on the session's grid, a clause's on its own from its first sample, so
        // where the two meet one step may be up to two periods, as between a clause and idle).
        let frames = frames_of(&out, 1);
        let period = u64::from(RATE).div_ceil(60);
        assert!(frames[0] < period);
        assert!(at - frames[frames.len() - 1] <= period);
        assert!(
            frames
                .windows(2)
                .all(|w| w[0] < w[1] && w[1] - w[0] <= 2 * period),
            "{frames:?}"
        );
        // Still speaking in the long pause; an interrupt cuts it there.
        assert_eq!(d.state(), PerformState::Speaking);
        d.interrupt(&mut out);
        assert_eq!(d.state(), PerformState::Idle);
    }

    #[test]
    fn an_utterance_past_its_limit_is_refused_once_and_the_rest_dropped() {
        let mut d = director();
        d.set_utterance_limit(u64::from(RATE));
        let mut out = vec![];
        d.begin(1, &mut out);
        d.schedule_pause(1, 20_000).unwrap();
        let e = d.schedule_pause(1, 5_000).unwrap_err();
        assert!(matches!(e, StageError::OverBudget(_)), "{e}");
        assert!(e.to_string().contains("[limits] utterance_secs"), "{e}");
        // The rest of it is dropped quietly.
        let speech = ToneVoice::new(RATE).speak("Hi").unwrap();
        d.schedule(1, &clause("Hi"), &speech).unwrap();
        d.end(1, &mut out);
        d.advance(SampleTime(60_000), &mut out);
        let audio: u64 = audio_of(&out, 1).iter().map(|a| a.1 as u64).sum();
        assert_eq!(audio, 20_000);
        assert_eq!(d.state(), PerformState::Idle);
        // The next utterance has its own budget.
        d.begin(2, &mut out);
        d.schedule_pause(2, 20_000).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Any sequence of pauses and clauses: the released audio is contiguous, no utterance gets
        /// more than its limit, and nothing panics.
        #[test]
        fn pauses_and_clauses_stay_contiguous_and_within_the_limit(
            pieces in proptest::collection::vec((0u8..3, 0u64..40_000), 0..24),
            limit in 1u64..80_000,
        ) {
            let mut d = director();
            d.set_utterance_limit(limit);
            let mut out = vec![];
            let mut voice = ToneVoice::new(RATE);
            let mut utt = 1;
            d.begin(utt, &mut out);
            for (kind, len) in pieces {
                let placed = match kind {
                    0 => d.schedule_pause(utt, len),
                    1 => {
                        let words = ["hi", "there", "friends", "hello", "yes"];
                        let text = words[(len % 5) as usize];
                        let sp = voice.speak(text).unwrap();
                        d.schedule(utt, &clause(text), &sp)
                    }
                    _ => {
                        d.end(utt, &mut out);
                        utt += 1;
                        d.begin(utt, &mut out);
                        Ok(())
                    }
                };
                if let Err(e) = placed {
                    proptest::prop_assert!(matches!(e, StageError::OverBudget(_)));
                }
                let to = d.horizon() + len / 4;
                d.advance(to, &mut out);
            }
            d.end(utt, &mut out);
            d.advance(d.horizon() + 2 * 80_000 + 100_000, &mut out);
            let mut at = None;
            let mut per_utt = std::collections::HashMap::<UtteranceId, u64>::new();
            for e in &out {
                if let Event::Audio(a) = e {
                    if let Some(at) = at {
                        proptest::prop_assert!(a.start.get() >= at);
                    }
                    at = Some(a.start.get() + a.pcm.len() as u64);
                    *per_utt.entry(a.utterance).or_default() += a.pcm.len() as u64;
                }
            }
            for (_, n) in per_utt {
                proptest::prop_assert!(n <= limit);
            }
        }
    }

    #[test]
    fn rendered_pieces_play_back_to_back_with_their_own_frames() {
        let mut d = director();
        let mut out = vec![];
        d.advance(SampleTime(1000), &mut out);
        let start = d.horizon();
        d.begin(7, &mut out);
        let frame = |at: u64| {
            Frame::new(
                SampleTime(at),
                crate::face::MorphWeights::unit(vec![0.5]).unwrap(),
                glam::Quat::IDENTITY,
                Default::default(),
            )
        };
        let cue = |at: u64| Cue {
            kind: CueKind::Action,
            name: "nod".into(),
            intensity: 1.0,
            at: SampleTime(at),
        };
        d.schedule_rendered(
            7,
            vec![
                RenderedPiece {
                    pcm: vec![0.1; 1000],
                    frames: vec![frame(0), frame(500)],
                    cues: vec![cue(10)],
                    caption: Some(("Hi.".into(), vec![])),
                    ..RenderedPiece::default()
                },
                // The silence between lines: a span, with its own frames and cues.
                RenderedPiece {
                    silence: 300,
                    frames: vec![frame(100), frame(300)],
                    cues: vec![cue(200)],
                    ..RenderedPiece::default()
                },
            ],
        );
        d.schedule_rendered(99, vec![]);
        d.end(7, &mut out);
        d.advance(start + 5000, &mut out);
        let audio = audio_of(&out, 7);
        assert_eq!(audio.iter().map(|a| a.1).sum::<usize>(), 1300);
        assert_eq!(audio[0].0, start.get());
        let s = start.get();
        // The frame at 300 of the second piece is past its end: dropped.
        assert_eq!(frames_of(&out, 7), [s, s + 500, s + 1100]);
        let cues: Vec<u64> = out
            .iter()
            .filter_map(|e| match e {
                Event::Cue(c) => Some(c.cue.at.get()),
                _ => None,
            })
            .collect();
        assert_eq!(cues, [s + 10, s + 1200]);
        // The silence was made as it was released: zeros, from the end of the first piece.
        let silent: Vec<&AudioChunk> = out
            .iter()
            .filter_map(|e| match e {
                Event::Audio(a) if a.start.get() >= s + 1000 => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(silent.iter().map(|a| a.pcm.len()).sum::<usize>(), 300);
        assert!(silent.iter().all(|a| a.pcm.iter().all(|&x| x == 0.0)));
        let captions = out
            .iter()
            .filter(|e| matches!(e, Event::Caption(c) if c.text == "Hi."))
            .count();
        assert_eq!(captions, 1);
        assert_eq!(d.state(), PerformState::Idle);
        assert_eq!(d.take_records()[0].text, "Hi.");
    }

    /// A clause spoken head first keeps every cue: those past the head go out with the rest, and
    /// tags after the last word go out at the last sample (or at once when nothing is left).
    #[test]
    fn head_first_clauses_and_trailing_tags_keep_every_cue() {
        let mut d = director();
        let mut out = vec![];
        let mut voice = ToneVoice::new(RATE);
        let text = "hello there my dear friends";
        let plan = voice.speak(text).unwrap();
        let cue = |before_word: usize, name: &str| WordCue {
            before_word,
            at: 0,
            kind: CueKind::Action,
            name: name.into(),
            intensity: 1.0,
        };
        let clause = ClauseText {
            text: text.into(),
            cues: vec![cue(0, "tilt"), cue(4, "nod"), cue(9, "wave")],
            ..ClauseText::default()
        };
        // The tone voice speaks word by word: the whole is the head followed by the rest.
        let head = voice.speak("hello there").unwrap();
        let rest = voice.speak("my dear friends").unwrap();
        assert_eq!(head.pcm.len() + rest.pcm.len(), plan.pcm.len());
        let cut = head.pcm.len();
        d.begin(1, &mut out);
        d.schedule_head(1, &clause, &head, &plan).unwrap();
        d.advance(SampleTime(cut as u64 + 5000), &mut out);
        d.schedule_continuation(1, &rest).unwrap();
        d.schedule_tail_cues(1, &[cue(0, "bow")]);
        d.end(1, &mut out);
        d.advance(SampleTime(plan.pcm.len() as u64 + 10_000), &mut out);
        let cues: Vec<(String, u64)> = out
            .iter()
            .filter_map(|e| match e {
                Event::Cue(c) => Some((c.cue.name.clone(), c.cue.at.get())),
                _ => None,
            })
            .collect();
        let n = plan.pcm.len() as u64;
        let friends = plan.words.items()[4].start().get();
        assert_eq!(
            cues,
            [
                ("tilt".to_string(), 0),
                ("nod".to_string(), friends),
                ("wave".to_string(), n - 1),
                ("bow".to_string(), n - 1),
            ]
        );
        // An utterance of tags only: its cue goes out at once.
        let mut out = vec![];
        d.begin(2, &mut out);
        d.schedule_tail_cues(2, &[cue(0, "wink")]);
        d.end(2, &mut out);
        let h = d.horizon();
        d.advance(h + 1000, &mut out);
        assert!(out.iter().any(
            |e| matches!(e, Event::Cue(c) if c.cue.name == "wink" && c.cue.at == h && c.utterance == 2)
        ));
    }

    #[test]
    fn clauses_play_back_to_back_and_frames_cover_the_audio() {
        let mut d = director();
        let mut voice = ToneVoice::new(RATE);
        let mut out = vec![];
        d.advance(SampleTime(1000), &mut out);
        let start = d.horizon();
        d.begin(1, &mut out);
        let a = voice.speak("Hello there,").unwrap();
        let b = voice.speak("how are you?").unwrap();
        d.schedule(1, &clause("Hello there,"), &a).unwrap();
        d.schedule(1, &clause("how are you?"), &b).unwrap();
        d.end(1, &mut out);
        d.advance(start + (a.pcm.len() + b.pcm.len()) as u64 + 5000, &mut out);

        let audio = audio_of(&out, 1);
        assert_eq!(audio[0].0, start.get());
        let mut at = start.get();
        for (s, n) in &audio {
            assert_eq!(*s, at, "audio chunks are contiguous");
            at += *n as u64;
        }
        let total = (a.pcm.len() + b.pcm.len()) as u64;
        assert_eq!(at - start.get(), total);

        // Frames: exactly frames_in per clause, on each clause's grid.
        let frames = frames_of(&out, 1);
        let mut want = vec![];
        let len_a = a.pcm.len() as u64;
        for k in 0..SampleTime::frames_in(len_a, RATE, 60) {
            want.push(start.frame(k, RATE, 60).get());
        }
        let s1 = start + len_a;
        for k in 0..SampleTime::frames_in(b.pcm.len() as u64, RATE, 60) {
            want.push(s1.frame(k, RATE, 60).get());
        }
        assert_eq!(frames, want);

        // All frame stamps strictly increase over idle and speech alike.
        let all: Vec<u64> = out
            .iter()
            .filter_map(|e| match e {
                Event::Frame(f) => Some(f.frame.at.get()),
                _ => None,
            })
            .collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));

        let states: Vec<PerformState> = out
            .iter()
            .filter_map(|e| match e {
                Event::State(s) => Some(s.state),
                _ => None,
            })
            .collect();
        assert_eq!(
            states,
            [
                PerformState::Thinking,
                PerformState::Speaking,
                PerformState::Idle
            ]
        );
        let rec = d.take_records();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].text, "Hello there, how are you?");
        assert!(!rec[0].interrupted);
    }

    #[test]
    fn interrupt_cuts_audio_and_frames_at_one_sample_and_reports_heard_words() {
        let mut d = director();
        let mut voice = ToneVoice::new(RATE);
        let mut out = vec![];
        d.begin(1, &mut out);
        let s = voice.speak("one two three four five six").unwrap();
        d.schedule(1, &clause("one two three four five six"), &s)
            .unwrap();
        d.end(1, &mut out);
        let start = SampleTime::ZERO;
        // Release a bit more than two words and a half.
        let w = &s.words.items()[2];
        let mid = start + (w.start().get() + w.end().get()) / 2;
        d.advance(mid, &mut out);
        d.interrupt(&mut out);
        let cut = d.horizon();
        d.advance(cut + 20_000, &mut out);

        let audio = audio_of(&out, 1);
        let (last_start, last_len) = *audio.last().unwrap();
        assert_eq!(last_start + last_len as u64, cut.get());
        let frames = frames_of(&out, 1);
        assert!(frames.iter().all(|&f| f < cut.get()));
        let n = SampleTime::frames_in(cut - start, RATE, 60);
        assert_eq!(
            frames.len() as u64,
            n,
            "frames cover exactly the audio heard"
        );
        let heard = out
            .iter()
            .find_map(|e| match e {
                Event::State(s) if s.state == PerformState::Interrupted => Some(s.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(heard.at, cut);
        let expect: Vec<&str> = s
            .words
            .iter()
            .filter(|w| w.start() < cut)
            .map(|w| w.value.text.as_str())
            .collect();
        assert_eq!(heard.heard.as_deref(), Some(expect.join(" ").as_str()));
        assert!(expect.len() >= 3 && expect.len() < 6);
        let rec = d.take_records();
        assert!(rec[0].interrupted && rec[0].text == expect.join(" "));
        assert_eq!(d.state(), PerformState::Idle);
        // Speech arriving later for the dropped utterance is ignored.
        d.schedule(1, &clause("late"), &s).unwrap();
        let mut more = vec![];
        d.advance(d.horizon() + 5000, &mut more);
        assert!(audio_of(&more, 1).is_empty());
    }

    #[test]
    fn cues_are_placed_at_their_word() {
        let mut d = director();
        let mut voice = ToneVoice::new(RATE);
        let mut out = vec![];
        d.begin(3, &mut out);
        let s = voice.speak("so happy now").unwrap();
        let c = ClauseText {
            text: "so happy now".into(),
            cues: vec![WordCue {
                before_word: 1,
                at: 0,
                kind: CueKind::Emotion,
                name: "happy".into(),
                intensity: 1.0,
            }],
            ..ClauseText::default()
        };
        d.schedule(3, &c, &s).unwrap();
        d.end(3, &mut out);
        d.advance(SampleTime(s.pcm.len() as u64 + 1000), &mut out);
        let cue = out
            .iter()
            .find_map(|e| match e {
                Event::Cue(c) => Some(c.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(cue.utterance, 3);
        assert_eq!(cue.cue.at, s.words.items()[1].start());
    }

    /// The voice speaks the normalized clause, where `42` is two words: a cue before `cats` is at the
    /// spoken `cats`, not at the fourth spoken word (`two`).
    #[test]
    fn cues_are_placed_at_their_word_after_a_number() {
        let mut d = director();
        let mut voice = ToneVoice::new(RATE);
        let mut out = vec![];
        d.begin(3, &mut out);
        let written = "I have 42 cats, and Dr. Lee has $5.";
        let s = voice.speak(&crate::text::normalize(written)).unwrap();
        let spoken: Vec<&str> = s
            .words
            .items()
            .iter()
            .map(|w| w.value.text.as_str())
            .collect();
        let cue = |before_word, name: &str| WordCue {
            before_word,
            at: 0,
            kind: CueKind::Action,
            name: name.into(),
            intensity: 1.0,
        };
        let c = ClauseText {
            text: written.into(),
            cues: vec![cue(3, "cats"), cue(7, "has"), cue(9, "end")],
            ..ClauseText::default()
        };
        d.schedule(3, &c, &s).unwrap();
        d.end(3, &mut out);
        d.advance(SampleTime(s.pcm.len() as u64 + 1000), &mut out);
        let at: Vec<(String, SampleTime)> = out
            .iter()
            .filter_map(|e| match e {
                Event::Cue(c) => Some((c.cue.name.clone(), c.cue.at)),
                _ => None,
            })
            .collect();
        let word_at = |w: &str| {
            let i = spoken
                .iter()
                .position(|s| s.trim_matches(',') == w)
                .unwrap();
            s.words.items()[i].start()
        };
        assert_eq!(at[0], ("cats".to_string(), word_at("cats")), "{spoken:?}");
        assert_eq!(at[1], ("has".to_string(), word_at("has")), "{spoken:?}");
        assert_eq!(at[2].0, "end");
        assert_eq!(
            at[2].1.get(),
            s.pcm.len() as u64 - 1,
            "past the last word: the clause's end"
        );
    }

    #[test]
    fn wrong_rate_is_an_error() {
        let mut d = director();
        let mut out = vec![];
        d.begin(1, &mut out);
        let s = ToneVoice::new(16000).speak("hi").unwrap();
        assert!(matches!(
            d.schedule(1, &clause("hi"), &s),
            Err(StageError::RateMismatch { .. })
        ));
    }
}
