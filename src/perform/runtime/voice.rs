//! The voice thread: owns the [`Voice`]; synthesizes clause n+1 while clause n plays. The first
//! clause of each utterance is spoken head first (its first audio placed while the rest is decoded).

use super::{CondMsg, Part, Shared, VoiceMsg};
use crate::perform::Voice;
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
        // A pause after the clause follows its speech (spans, see `crate::perform::pause`).
        let mut after = None;
        let out = match msg {
            VoiceMsg::Clause { utt, clause } => {
                // this clause leaves the voice's queue however the arm ends
                let _done = VoiceDone(&shared);
                if shared.cancelled(utt) {
                    continue;
                }
                if clause.text.is_empty() {
                    // Tags and breaks after the last word: nothing to say; the cues go at the end
                    // of what was said, then the silence.
                    let pauses = crate::perform::pause::Pauses::of(&clause, rate);
                    let cues = CondMsg::TailCues {
                        utt,
                        cues: clause.cues,
                    };
                    if cond_tx.send(cues).is_err() {
                        break;
                    }
                    let pause = CondMsg::Pause {
                        utt,
                        len: pauses.before + pauses.after,
                    };
                    if cond_tx.send(pause).is_err() {
                        break;
                    }
                    continue;
                }
                let first = last_utt != Some(utt);
                last_utt = Some(utt);
                let t = Instant::now();
                let mut head_sent = false;
                let spoken = if first && clause.pause_before_ms() == 0 {
                    voice.speak_head_first(&clause.text, &mut |head, plan| {
                        head_sent = true;
                        let _ = cond_tx.send(CondMsg::Segment {
                            utt,
                            clause: clause.clone(),
                            speech: head,
                            part: Part::Head(Box::new(plan)),
                        });
                    })
                } else {
                    voice.speak(&clause.text)
                };
                match spoken {
                    Ok(speech) => {
                        shared.metrics.voice.observe(t.elapsed());
                        let pauses = crate::perform::pause::Pauses::of(&clause, rate);
                        after = Some(CondMsg::Pause {
                            utt,
                            len: pauses.after,
                        });
                        if head_sent {
                            CondMsg::Segment {
                                utt,
                                clause,
                                speech,
                                part: Part::Rest,
                            }
                        } else {
                            let before = CondMsg::Pause {
                                utt,
                                len: pauses.before,
                            };
                            if cond_tx.send(before).is_err() {
                                break;
                            }
                            CondMsg::Segment {
                                utt,
                                clause,
                                speech,
                                part: Part::Whole,
                            }
                        }
                    }
                    Err(e) => CondMsg::Error {
                        utt,
                        message: e.to_string(),
                    },
                }
            }
            VoiceMsg::End { utt } => CondMsg::End { utt },
            VoiceMsg::Error { utt, message } => CondMsg::Error { utt, message },
            VoiceMsg::Asked {
                utt,
                user,
                source,
                text,
            } => CondMsg::Asked {
                utt,
                user,
                source,
                text,
            },
        };
        if cond_tx.send(out).is_err() || after.is_some_and(|p| cond_tx.send(p).is_err()) {
            break;
        }
    }
}

/// Marks one clause as done by the voice when dropped (see [`Shared::voice_work`]).
struct VoiceDone<'a>(&'a Shared);

impl Drop for VoiceDone<'_> {
    fn drop(&mut self) {
        self.0.voice_work(-1);
    }
}
