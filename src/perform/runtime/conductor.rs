//! The conductor thread: owns the [`Director`] and the face; every `tick` it advances the timeline
//! to the session clock plus `lead` and hands the events to the sinks, and sends each finished
//! utterance's record (what was heard) back to the persona thread.

use super::{CondMsg, Part, PersonaMsg, RecordCallback, Shared};
use crate::perform::{AskedEvent, Director, Event, Sink, UtteranceId};
use crate::time::SessionClock;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[allow(clippy::too_many_arguments)]
pub(super) fn conductor_thread(
    mut director: Director,
    rx: Receiver<CondMsg>,
    mut sinks: Vec<Box<dyn Sink>>,
    mut on_record: Option<RecordCallback>,
    persona_tx: Sender<PersonaMsg>,
    shared: Arc<Shared>,
    clock: SessionClock,
    lead: u64,
    tick: Duration,
) {
    let metrics = shared.metrics.clone();
    let mut started: HashMap<UtteranceId, Instant> = HashMap::new();
    let mut events: Vec<Event> = Vec::new();
    let mut next_tick = Instant::now();
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(CondMsg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(CondMsg::Begin { utt, t0 }) => {
                started.insert(utt, t0);
                director.begin(utt, &mut events);
            }
            Ok(
                msg @ (CondMsg::Segment { .. }
                | CondMsg::TailCues { .. }
                | CondMsg::Pause { .. }
                | CondMsg::End { .. }),
            ) => {
                if place(&mut director, msg, &mut events) {
                    metrics.stage_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(CondMsg::Error { utt, message }) => {
                director.release_hold();
                metrics.stage_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("utterance {utt}: {message}");
                events.push(Event::Error {
                    utterance: utt,
                    message,
                });
            }
            Ok(CondMsg::Asked {
                utt,
                user,
                source,
                text,
            }) => {
                events.push(Event::Asked(AskedEvent {
                    utterance: utt,
                    user,
                    source,
                    text,
                    at: director.horizon(),
                }));
            }
            Ok(CondMsg::Interrupt) => {
                director.release_hold();
                let dropped = director.interrupt(&mut events);
                if !dropped.is_empty() {
                    metrics.interruptions.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(CondMsg::Set(control)) => director.set(&control, &mut events),
            Ok(CondMsg::Rendered { utt, pieces }) => {
                match pieces {
                    Ok(p) => director.schedule_rendered(utt, p),
                    Err(e) => {
                        metrics.stage_errors.fetch_add(1, Ordering::Relaxed);
                        events.push(Event::Error {
                            utterance: utt,
                            message: e.to_string(),
                        });
                    }
                }
                director.end(utt, &mut events);
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= next_tick {
            director.advance(clock.now() + lead, &mut events);
            next_tick += tick;
            let now = Instant::now();
            if next_tick < now {
                next_tick = now + tick;
            }
        }
        // Memory first: a client that hears of an interruption and chats at once must find the
        // heard text already queued for the persona, ahead of its chat.
        for rec in director.take_records() {
            started.remove(&rec.utterance);
            if let Some(cb) = on_record.as_mut() {
                cb(&rec);
            }
            let _ = persona_tx.send(PersonaMsg::Memory(rec));
        }
        for ev in events.drain(..) {
            if let Event::Audio(a) = &ev
                && let Some(t0) = started.remove(&a.utterance)
            {
                metrics.first_audio.observe(t0.elapsed());
            }
            for sink in sinks.iter_mut() {
                sink.event(&ev);
            }
        }
    }
}

/// Place what the voice thread sent for an utterance (its speech, pauses, tail cues, its end) on the
/// director's timeline; a placement that fails becomes an error event. True when a segment failed
/// (a stage error).
pub(super) fn place(director: &mut Director, msg: CondMsg, events: &mut Vec<Event>) -> bool {
    match msg {
        CondMsg::Segment {
            utt,
            clause,
            speech,
            part,
        } => {
            let placed = match &part {
                Part::Whole => director.schedule(utt, &clause, &speech),
                Part::Head(plan) => director.schedule_head(utt, &clause, &speech, plan),
                Part::Rest => director.schedule_continuation(utt, &speech),
            };
            if let Err(e) = placed {
                events.push(Event::Error {
                    utterance: utt,
                    message: e.to_string(),
                });
                return true;
            }
        }
        CondMsg::TailCues { utt, cues } => director.schedule_tail_cues(utt, &cues),
        CondMsg::Pause { utt, len } => {
            if let Err(e) = director.schedule_pause(utt, len) {
                events.push(Event::Error {
                    utterance: utt,
                    message: e.to_string(),
                });
            }
        }
        CondMsg::End { utt } => director.end(utt, events),
        _ => unreachable!("place takes the voice thread's placements only"),
    }
    false
}
