//! The persona thread: owns the [`TextGenerator`], the [`Segmenter`] and the persona's
//! [`Conversation`], and only drives them. Every chat goes through the conversation, the same path
//! as `idol chat`: the guards (rate limit, blocked words, chat-template tokens neutralized), the
//! viewer wrapping, the shaping of the reply for speech, memory. Each clause goes to the voice as
//! soon as it is complete. The reply enters the history at once (the next request repeats the
//! tokens the engine has cached); when the conductor reports what was heard, the conversation
//! settles it (a barge-in keeps exactly the heard words) and writes memory.

use super::{PersonaMsg, Shared, VoiceMsg};
use crate::perform::{ClauseText, PerformConfig, Segmenter, UtteranceId};
use crate::persona::conversation::{Conversation, PendingId, Speaker};
use crate::persona::prompt::estimate_tokens;
use crate::persona::{CancelToken, ChatMessage, GenParams, Role, TextGenerator};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

pub(super) fn persona_thread(
    mut generator: Box<dyn TextGenerator>,
    mut segmenter: Box<dyn Segmenter>,
    mut conv: Conversation,
    rx: Receiver<PersonaMsg>,
    voice_tx: Sender<VoiceMsg>,
    shared: Arc<Shared>,
    cfg: PerformConfig,
) {
    // One token after the persona prefix: the engine keeps the evaluated prefix in its cache and
    // the first chat only prefills its own message.
    if cfg.warm_up {
        let t = Instant::now();
        let (mut messages, _) = conv.next_request_prefix();
        messages.push(ChatMessage::new(Role::User, String::new()));
        match prefill(generator.as_mut(), &messages, &conv.params, &shared) {
            Ok(()) => log::info!(
                "persona: prefix evaluated in {:.2} s",
                t.elapsed().as_secs_f64()
            ),
            Err(e) => {
                log::warn!("persona: warm-up failed ({e}); the first chat evaluates the prefix")
            }
        }
    }
    // The reply each utterance put into the history, until it is heard.
    let mut pending: HashMap<UtteranceId, PendingId> = HashMap::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            PersonaMsg::Chat {
                utt,
                user,
                source,
                text,
                t0,
            } => {
                let speaker = Speaker::Viewer(user.trim());
                if let Err(rejected) = conv.accept(speaker, &text, t0) {
                    log::info!("{rejected}");
                    let _ = voice_tx.send(VoiceMsg::Error {
                        utt,
                        message: rejected.to_string(),
                    });
                    let _ = voice_tx.send(VoiceMsg::End { utt });
                    continue;
                }
                if shared.cancelled(utt) {
                    let _ = voice_tx.send(VoiceMsg::End { utt });
                    continue;
                }
                let _ = voice_tx.send(VoiceMsg::Asked {
                    utt,
                    user: user.trim().to_string(),
                    source,
                    text: text.clone(),
                });
                let token = CancelToken::new();
                *shared.generating.lock() = token.clone();
                if shared.cancelled(utt) {
                    token.cancel();
                }
                let mut spoken: Vec<String> = vec![];
                let mut first_text = true;
                let metrics = shared.metrics.clone();
                let send = |clauses: Vec<ClauseText>, spoken: &mut Vec<String>| {
                    for clause in clauses {
                        if spoken.is_empty() {
                            metrics.first_clause.observe(t0.elapsed());
                        }
                        if !clause.text.is_empty() {
                            spoken.push(clause.text.clone());
                        }
                        shared.voice_work(1);
                        if voice_tx.send(VoiceMsg::Clause { utt, clause }).is_err() {
                            shared.voice_work(-1);
                        }
                    }
                };
                let reply = conv.respond(
                    generator.as_mut(),
                    speaker,
                    &text,
                    &token,
                    &estimate_tokens,
                    &mut |piece: &str| {
                        if shared.cancelled(utt) {
                            return false;
                        }
                        if first_text && !piece.is_empty() {
                            first_text = false;
                            metrics.llm_first_token.observe(t0.elapsed());
                        }
                        send(segmenter.push(piece), &mut spoken);
                        true
                    },
                );
                let rest = segmenter.finish();
                if !shared.cancelled(utt) {
                    send(rest, &mut spoken);
                }
                // The reply as released (tags included): kept in the history when it is heard to
                // the end, so the next prompt repeats the tokens the engine has cached.
                let said = match reply {
                    Ok(r) => {
                        if let Some(e) = r.error {
                            let _ = voice_tx.send(VoiceMsg::Error {
                                utt,
                                message: e.to_string(),
                            });
                        }
                        if r.text.trim().is_empty() {
                            spoken.join(" ")
                        } else {
                            r.text
                        }
                    }
                    Err(e) => {
                        let _ = voice_tx.send(VoiceMsg::Error {
                            utt,
                            message: e.to_string(),
                        });
                        String::new()
                    }
                };
                pending.insert(utt, conv.commit_pending(&said));
                let _ = voice_tx.send(VoiceMsg::End { utt });
                if shared.cancelled(utt) {
                    continue;
                }
                // The next chat would overflow the history window: it is cut now, while the reply
                // is being spoken, and the kept history evaluated, so that chat only prefills
                // itself. Otherwise evaluate ahead only this reply's end and the next user turn's
                // header (an in-process model; queued on its thread, so this returns at once).
                let (mut next, trimmed) = conv.next_request_prefix();
                if trimmed {
                    next.push(ChatMessage::new(Role::User, String::new()));
                    if let Err(e) = prefill(generator.as_mut(), &next, &conv.params, &shared) {
                        log::debug!("persona: history prefill: {e}");
                    }
                } else if rx.is_empty()
                    && let Err(e) = generator.prepare(&next)
                {
                    log::debug!("persona: evaluating ahead: {e}");
                }
            }
            PersonaMsg::Say { utt, text } => {
                let mut clauses = segmenter.push(&text);
                clauses.extend(segmenter.finish());
                let spoken: Vec<String> = clauses
                    .iter()
                    .filter(|c| !c.text.is_empty())
                    .map(|c| c.text.clone())
                    .collect();
                if !shared.cancelled(utt) {
                    for clause in clauses {
                        shared.voice_work(1);
                        if voice_tx.send(VoiceMsg::Clause { utt, clause }).is_err() {
                            shared.voice_work(-1);
                        }
                    }
                }
                pending.insert(utt, conv.commit_pending(&spoken.join(" ")));
                let _ = voice_tx.send(VoiceMsg::End { utt });
            }
            PersonaMsg::Stop => break,
            // A completed reply keeps its generated text; a cut one becomes exactly what was heard.
            PersonaMsg::Memory(rec) => {
                if let Some(id) = pending.remove(&rec.utterance)
                    && let Err(e) = conv.settle(id, &rec.text, rec.interrupted)
                {
                    log::warn!("persona memory: {e}");
                }
            }
        }
    }
}

/// Evaluate `messages` (one token, discarded) so the engine caches their prefix. Cancelled like a
/// reply (barge-in, shutdown).
fn prefill(
    generator: &mut dyn TextGenerator,
    messages: &[ChatMessage],
    params: &GenParams,
    shared: &Shared,
) -> Result<(), crate::persona::PersonaError> {
    let token = CancelToken::new();
    *shared.generating.lock() = token.clone();
    let params = GenParams {
        max_tokens: 1,
        ..params.clone()
    };
    generator
        .generate(messages, &params, &token, &mut |_| false)
        .map(|_| ())
}
