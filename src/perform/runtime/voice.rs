//! The voice thread: owns the [`Voice`]; synthesizes clause n+1 while clause n plays. The first
//! clause of each utterance is spoken head first (its first audio placed while the rest is decoded).

use super::{CondMsg, Part, Shared, VoiceMsg};
use crate::perform::{ClauseText, UtteranceId, Voice};
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

pub(super) fn voice_thread(
    mut voice: Box<dyn Voice>,
    rx: Receiver<VoiceMsg>,
    cond_tx: Sender<CondMsg>,
    shared: Arc<Shared>,
) {
    // The first clause of each utterance is spoken head first (its first audio placed while the
    // rest is decoded): that is the clause the listener waits for.
    let mut last_utt = None;
    let rate = voice.sample_rate();
    while let Ok(msg) = rx.recv() {
        let mut send = |m: CondMsg| cond_tx.send(m).is_ok();
        let open = match msg {
            VoiceMsg::Clause { utt, clause } => {
                // this clause leaves the voice's queue however the arm ends
                let _done = VoiceDone(&shared);
                if shared.cancelled(utt) {
                    continue;
                }
                let first = !clause.text.is_empty() && last_utt != Some(utt);
                if !clause.text.is_empty() {
                    last_utt = Some(utt);
                }
                let t = Instant::now();
                let spoke = speak_clause(voice.as_mut(), utt, clause, first, rate, &mut send);
                if spoke == Some(true) {
                    shared.metrics.voice.observe(t.elapsed());
                }
                spoke.is_some()
            }
            VoiceMsg::End { utt } => send(CondMsg::End { utt }),
            VoiceMsg::Error { utt, message } => send(CondMsg::Error { utt, message }),
            VoiceMsg::Asked {
                utt,
                user,
                source,
                text,
            } => send(CondMsg::Asked {
                utt,
                user,
                source,
                text,
            }),
        };
        if !open {
            break;
        }
    }
}

/// Speak one clause of utterance `utt` and hand the conductor what to place, in order (`send`
/// returns false once the conductor is gone): its pause before, its speech (head first when
/// `first` and no pause comes before it: the clause the listener waits for), its pause after; a
/// clause with no text (tags and breaks after the last word) gives its cues for the end of what was
/// said, then its silence. `None` when the conductor is gone, else whether the voice spoke.
pub(super) fn speak_clause(
    voice: &mut dyn Voice,
    utt: UtteranceId,
    clause: ClauseText,
    first: bool,
    rate: u32,
    send: &mut dyn FnMut(CondMsg) -> bool,
) -> Option<bool> {
    let pauses = crate::perform::pause::Pauses::of(&clause, rate);
    if clause.text.is_empty() {
        let cues = CondMsg::TailCues {
            utt,
            cues: clause.cues,
        };
        let pause = CondMsg::Pause {
            utt,
            len: pauses.before + pauses.after,
        };
        return (send(cues) && send(pause)).then_some(false);
    }
    let mut head_sent = false;
    let mut open = true;
    let spoken = if first && pauses.before == 0 {
        voice.speak_head_first(&clause.text, &mut |head, plan| {
            head_sent = true;
            open &= send(CondMsg::Segment {
                utt,
                clause: clause.clone(),
                speech: head,
                part: Part::Head(Box::new(plan)),
            });
        })
    } else {
        voice.speak(&clause.text)
    };
    if !open {
        return None;
    }
    match spoken {
        Ok(speech) => {
            if !head_sent
                && !send(CondMsg::Pause {
                    utt,
                    len: pauses.before,
                })
            {
                return None;
            }
            let part = if head_sent { Part::Rest } else { Part::Whole };
            let ok = send(CondMsg::Segment {
                utt,
                clause,
                speech,
                part,
            }) && send(CondMsg::Pause {
                utt,
                len: pauses.after,
            });
            ok.then_some(true)
        }
        Err(e) => send(CondMsg::Error {
            utt,
            message: e.to_string(),
        })
        .then_some(false),
    }
}

/// Marks one clause as done by the voice when dropped (see [`Shared::voice_work`]).
struct VoiceDone<'a>(&'a Shared);

impl Drop for VoiceDone<'_> {
    fn drop(&mut self) {
        self.0.voice_work(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::super::conductor::place;
    use super::*;
    use crate::perform::testing::{JawFace, ToneVoice};
    use crate::perform::{Director, DirectorConfig, Event};
    use crate::text::TextSegmenter;
    use crate::time::SampleTime;

    const RATE: u32 = 16_000;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// The live path end to end (streamed text → the text stage's clauses → the voice thread's
        /// placements, head first or whole → the director's timeline, released in random steps)
        /// keeps its promises on random tagged texts: every emotion and action tag is one cue, at
        /// the start of the spoken word it was written before (after the last word: at the last
        /// sample, or just after it when the audio was all out before the tag came); every break is silence of at least its
        /// length exactly between the words it was written between; frames run through the whole
        /// audio (pauses included) with no hole of two frame periods.
        #[test]
        fn the_live_path_keeps_every_tag_break_and_frame(
            items in proptest::collection::vec((0u8..8, 0usize..6), 1..30),
            cuts in proptest::collection::vec(1usize..12, 0..20),
            head in proptest::option::of(100u64..6000),
            steps in proptest::collection::vec(0u64..3000, 1..40),
        ) {
            let t = crate::perform::testing::TaggedText::generate(&items);
            let text = &t.text;
            let words: Vec<&str> = t
                .words
                .iter()
                .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
                .collect();
            let mut want_cues = t.cues.clone();
            let want_breaks = &t.breaks;
            // The reply streams in pieces cut at random characters.
            let clauses = t.stream_into(&mut TextSegmenter::default(), &cuts);
            let mut d = Director::new(
                DirectorConfig { rate: RATE, fps: 60, chunk: 320 },
                Box::new(JawFace::arkit(RATE, 60)),
            );
            let mut events = vec![];
            // The session has run a while: the utterance starts off the frame grid.
            d.advance(SampleTime(1234), &mut events);
            d.begin(1, &mut events);
            let mut voice = match head {
                Some(h) => ToneVoice::new(RATE).with_head(h),
                None => ToneVoice::new(RATE),
            };
            // What has been placed so far ends here: the clock never runs past it (no underrun).
            let mut placed_end = d.horizon().get();
            let mut step = steps.iter().cycle();
            let mut first = true;
            for clause in clauses {
                let f = first && !clause.text.is_empty();
                first &= clause.text.is_empty();
                let mut msgs = vec![];
                speak_clause(&mut voice, 1, clause, f, RATE, &mut |m| {
                    msgs.push(m);
                    true
                });
                for m in msgs {
                    match &m {
                        CondMsg::Segment { speech, .. } => placed_end += speech.pcm.len() as u64,
                        CondMsg::Pause { len, .. } => placed_end += len,
                        _ => {}
                    }
                    proptest::prop_assert!(!place(&mut d, m, &mut events));
                    let to = (d.horizon().get() + step.next().unwrap()).min(placed_end);
                    d.advance(SampleTime(to.max(d.horizon().get())), &mut events);
                }
            }
            place(&mut d, CondMsg::End { utt: 1 }, &mut events);
            d.advance(d.horizon() + RATE as u64 * 200, &mut events);
            // The utterance's audio, words and cues on the session timeline.
            let mut audio: Vec<(u64, &[f32])> = vec![];
            let mut spoken: Vec<(u64, u64, String)> = vec![];
            let mut cues: Vec<(u64, String)> = vec![];
            let mut frames: Vec<u64> = vec![];
            for e in &events {
                match e {
                    Event::Audio(a) if a.utterance == 1 => audio.push((a.start.get(), &a.pcm)),
                    Event::Caption(c) if c.utterance == 1 => spoken.extend(
                        c.words.iter().map(|w| (w.start().get(), w.end().get(), w.value.text.clone())),
                    ),
                    Event::Cue(c) if c.utterance == 1 => cues.push((c.cue.at.get(), c.cue.name.clone())),
                    Event::Frame(f) => frames.push(f.frame.at.get()),
                    Event::Error { message, .. } => proptest::prop_assert!(false, "{}", message),
                    _ => {}
                }
            }
            let said: Vec<&str> = spoken.iter().map(|w| w.2.as_str()).collect();
            proptest::prop_assert_eq!(&said, &words, "{}", text);
            let (s0, s1) = match (audio.first(), audio.last()) {
                (Some(a), Some(b)) => (a.0, b.0 + b.1.len() as u64),
                _ => (1234, 1234),
            };
            // Contiguous audio.
            let mut pcm: Vec<f32> = vec![];
            for (start, chunk) in &audio {
                proptest::prop_assert_eq!(*start, s0 + pcm.len() as u64, "{}", text);
                pcm.extend_from_slice(chunk);
            }
            let n = words.len();
            let mut got: Vec<(usize, String)> = vec![];
            for (at, name) in &cues {
                let w = spoken.iter().position(|x| x.0 >= *at).unwrap_or(n);
                if w < n {
                    proptest::prop_assert_eq!(spoken[w].0, *at, "{} {}", name, text);
                } else if n > 0 {
                    // After the last word: its last sample, or the sample right after the audio
                    // when all of it was out before the tag arrived.
                    proptest::prop_assert!(*at >= spoken[n - 1].0 && *at <= s1, "{} {}", name, text);
                }
                got.push((w, name.clone()));
            }
            got.sort();
            want_cues.sort();
            proptest::prop_assert_eq!(got, want_cues, "{}", text);
            for &(w, _) in want_breaks {
                let need: u64 = want_breaks
                    .iter()
                    .filter(|&&(x, _)| x == w)
                    .map(|&(_, ms)| SampleTime::from_millis(u64::from(ms), RATE).get())
                    .sum();
                let from = if w == 0 { s0 } else { spoken[w - 1].1 };
                let to = spoken.get(w).map_or(s1, |x| x.0);
                proptest::prop_assert!(to - from >= need, "{} at word {}", text, w);
                let silent = &pcm[(from - s0) as usize..(to - s0) as usize];
                proptest::prop_assert!(silent.iter().all(|&x| x == 0.0), "{}", text);
            }
            // Frames through the whole audio, pauses included: a frame every period, except where
            // a clause's own grid hands over to the session grid of a pause's idle frames (then
            // under two periods apart).
            frames.sort_unstable();
            let period = (RATE / 60) as u64 + 1;
            let inside: Vec<u64> = frames.iter().copied().filter(|&f| f >= s0 && f < s1).collect();
            if s1 > s0 {
                proptest::prop_assert!(!inside.is_empty());
                proptest::prop_assert!(inside[0] < s0 + period, "{}", text);
                proptest::prop_assert!(*inside.last().unwrap() + period >= s1, "{}", text);
                for p in inside.windows(2) {
                    proptest::prop_assert!(p[1] - p[0] < 2 * period, "hole {}..{} in {}", p[0], p[1], text);
                }
            }
        }
    }
}
