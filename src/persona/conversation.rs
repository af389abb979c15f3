//! One persona's conversation: the one path every viewer message and operator line takes, in
//! `idol chat`, `idol serve` and the live runtime alike. Input: viewer or operator messages. Output:
//! the reply text, streamed shaped for speech and through the blocked-word filter, and the turns
//! stored in memory.
//!
//! A turn goes: [`Conversation::accept`] (viewers only: rate limit, blocked words; a rejection
//! stores nothing) → [`Conversation::respond`] (wraps and neutralizes the message, adds a language
//! note when the viewer writes in a language no voice speaks, trims the history, builds the prompt
//! within the budget, generates with a seed that differs per turn, shapes the reply while it streams
//! ([`super::shape`]: cut at another speaker, a newline, a copy of the card, the speech budget;
//! tags mapped onto the card's) and releases text only through the [`ReplyFilter`]; on a blocked
//! word it cancels and appends the card's deflection; a reply that shaping leaves empty is
//! generated once more with another seed) → [`Conversation::commit`] with the text that was actually
//! heard, and whether it was cut off. Committing is separate because in the live pipeline the audio
//! lags the text: only the playback stage knows what was heard when a viewer barges in. There, the
//! reply goes into the history at once ([`Conversation::commit_pending`], so the next prompt repeats
//! the tokens the engine has cached) and is settled when it has been heard
//! ([`Conversation::settle`]); memory is written in turn order at settle time.
//!
//! History moves in jumps, not one message per turn: when it would exceed
//! [`Conversation::history_limit`] messages it is cut to the newest half (starting at a user turn).
//! An engine reuses its cache for the longest common prefix of consecutive prompts, and a window
//! sliding by one message would change the prompt right after the persona every turn.
//!
//! Threading: owned by the one thread that drives the generator (the REPL, the persona thread).

use super::card::{PersonaCard, expand_macros};
use super::guard::{BlockedWords, FilterStep, Hit, RateLimiter, Rejection, ReplyFilter};
use super::lang::{self, LanguagePolicy};
use super::memory::{Memory, Turn};
use super::prompt::{DEFAULT_USER_NAME, PromptBuilder};
use super::shape::{ShapeRules, Shaper};
use super::{
    CancelToken, ChatMessage, FinishReason, GenOutcome, GenParams, PersonaError, Role,
    TextGenerator,
};
use std::time::Instant;

/// Who is talking to the idol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker<'a> {
    /// A viewer: untrusted, wrapped, rate-limited, checked. An empty name is a local user (the
    /// message is neutralized but not labelled).
    Viewer(&'a str),
    /// The operator: trusted text, passed as is.
    Operator,
}

/// What came of one `respond`.
#[derive(Debug)]
pub struct Reply {
    /// Everything released to the caller, in order (with the deflection when one was said).
    pub text: String,
    /// How generation ended (`None` when the backend failed).
    pub outcome: Option<GenOutcome>,
    /// The blocked entry the reply ran into, if it did.
    pub blocked: Option<Hit>,
    /// The backend's error, if it failed (text that arrived before is in `text`).
    pub error: Option<PersonaError>,
    /// Why shaping ended the reply, if it did.
    pub cut: Option<super::shape::Cut>,
}

impl Reply {
    /// The reply stopped before its end: cancelled, or the backend failed.
    pub fn is_cut(&self) -> bool {
        self.blocked.is_none()
            && (self.error.is_some()
                || self
                    .outcome
                    .as_ref()
                    .is_some_and(|o| o.finish == FinishReason::Cancelled))
    }
}

/// A reply in the history that has not been heard yet ([`Conversation::commit_pending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PendingId(u64);

/// How many history messages go with a request by default.
pub const DEFAULT_HISTORY: usize = 16;

/// A persona's running conversation.
pub struct Conversation {
    card: PersonaCard,
    builder: PromptBuilder,
    shape: ShapeRules,
    blocked: BlockedWords,
    limiter: Option<RateLimiter>,
    memory: Option<Memory>,
    history: Vec<ChatMessage>,
    /// Parallel to `history`: the pending reply each assistant message is, if any.
    history_ids: Vec<Option<PendingId>>,
    /// User turns not yet written to memory (written with the reply, in order).
    unsaved: Vec<Turn>,
    /// Pending replies and the user turns that go to memory before them.
    pending: Vec<(PendingId, Vec<Turn>)>,
    next_id: u64,
    languages: LanguagePolicy,
    context_tokens: usize,
    turns: u64,
    /// Most history messages sent with a request (cut to half when exceeded).
    pub history_limit: usize,
    /// Generation parameters (the card's, unless changed).
    pub params: GenParams,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("persona", &self.card.name)
            .field("turns", &self.history.len())
            .finish()
    }
}

impl Conversation {
    /// `context_tokens`: the backend's context size. `limiter`: `None` to accept any rate (a local
    /// REPL). History is loaded from `memory` when given.
    pub fn new(
        card: PersonaCard,
        memory: Option<Memory>,
        context_tokens: usize,
        limiter: Option<RateLimiter>,
    ) -> Self {
        let params = card.generation.clone();
        let languages = LanguagePolicy::default();
        let builder = PromptBuilder::with_languages(
            &card,
            DEFAULT_USER_NAME,
            context_tokens,
            params.max_tokens,
            &languages,
        );
        let shape = ShapeRules::new(&card, &builder.prefix()[0].content, card.reply);
        let history: Vec<ChatMessage> = memory.as_ref().map(Memory::messages).unwrap_or_default();
        Conversation {
            builder,
            shape,
            blocked: BlockedWords::new(&card.blocked_words),
            history_ids: vec![None; history.len()],
            history,
            unsaved: vec![],
            pending: vec![],
            next_id: 1,
            card,
            limiter,
            memory,
            params,
            languages,
            context_tokens,
            turns: 0,
            history_limit: DEFAULT_HISTORY,
        }
    }

    pub fn card(&self) -> &PersonaCard {
        &self.card
    }

    /// The languages replies may be in (those the model writes and a voice speaks). Changes the
    /// persona prefix: set it before the first turn.
    pub fn set_languages(&mut self, languages: LanguagePolicy) {
        self.builder = PromptBuilder::with_languages(
            &self.card,
            DEFAULT_USER_NAME,
            self.context_tokens,
            self.params.max_tokens,
            &languages,
        );
        self.shape = ShapeRules::new(
            &self.card,
            &self.builder.prefix()[0].content,
            self.card.reply,
        );
        self.languages = languages;
    }

    /// Replace the per-viewer rate limit (`None`: any rate).
    pub fn set_rate_limit(&mut self, limiter: Option<RateLimiter>) {
        self.limiter = limiter;
    }

    pub fn languages(&self) -> &LanguagePolicy {
        &self.languages
    }

    /// The history as the model sees it, oldest first.
    pub fn history(&self) -> &[ChatMessage] {
        &self.history
    }

    /// The persona prefix sent first on every turn (byte-identical across turns): the system
    /// message and the card's example turns.
    pub fn prefix(&self) -> &[ChatMessage] {
        self.builder.prefix()
    }

    /// Change the reply length; the prompt keeps room for it.
    pub fn set_max_tokens(&mut self, n: usize) {
        self.params.max_tokens = n;
        self.builder.reserve_tokens = n;
    }

    /// On a fresh conversation, the card's greeting (macros expanded for `user`), stored as said;
    /// `None` when there is history already or the card has no greeting.
    pub fn greet(&mut self, user: &str) -> Result<Option<String>, PersonaError> {
        if !self.history.is_empty() || self.card.greeting.trim().is_empty() {
            return Ok(None);
        }
        let g = expand_macros(self.card.greeting.trim(), &self.card.name, user);
        self.commit(&g, false)?;
        Ok(Some(g))
    }

    /// Gate a message before generation. Viewers are rate-limited and checked against the blocked
    /// words; the operator always passes. A rejected message is neither sent nor stored.
    pub fn accept(
        &mut self,
        speaker: Speaker<'_>,
        text: &str,
        now: Instant,
    ) -> Result<(), Rejection> {
        let Speaker::Viewer(name) = speaker else {
            return Ok(());
        };
        if text.trim().is_empty() {
            return Err(Rejection::Empty {
                viewer: super::guard::clean_name(name),
            });
        }
        self.blocked.check_viewer(name, text)?;
        if let Some(l) = self.limiter.as_mut() {
            l.check(name, now)?;
        }
        Ok(())
    }

    /// The messages of the next request up to where its new message begins (persona prefix and
    /// history), for an engine to evaluate ahead. When the next turn would overflow the history
    /// window, the window is cut now (while a reply is being heard) and `true` says so: the kept
    /// history then has to be evaluated anew.
    pub fn next_request_prefix(&mut self) -> (Vec<ChatMessage>, bool) {
        let trimmed = self.trim_history(2);
        let mut m = self.builder.prefix().to_vec();
        m.extend_from_slice(&self.history);
        (m, trimmed)
    }

    /// Cut the history to its newest half when `extra` more messages would overflow the window.
    fn trim_history(&mut self, extra: usize) -> bool {
        let limit = self.history_limit.max(2);
        if self.history.len() + extra <= limit {
            return false;
        }
        let keep = (limit / 2).max(1).min(self.history.len());
        let mut start = self.history.len() - keep;
        while start < self.history.len() && self.history[start].role != Role::User {
            start += 1;
        }
        self.history.drain(..start);
        self.history_ids.drain(..start);
        true
    }

    /// Store the incoming turn, generate the reply and stream it to `on_text`, shaped for speech
    /// and through the blocked-word filter. `count` is the backend's token counter for the prompt
    /// budget. Does not store the reply: call [`Conversation::commit`] with what was heard (or
    /// [`Conversation::commit_pending`] and later [`Conversation::settle`]).
    pub fn respond(
        &mut self,
        generator: &mut dyn TextGenerator,
        speaker: Speaker<'_>,
        text: &str,
        cancel: &CancelToken,
        count: &dyn Fn(&[ChatMessage]) -> usize,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Reply, PersonaError> {
        let turn = match speaker {
            Speaker::Viewer(name) => Turn::viewer(name, text),
            Speaker::Operator => Turn::operator(text),
        };
        let mut new = turn.to_message();
        // A viewer in a language no voice speaks is answered in one that is spoken: say so in the
        // turn itself (the persona prefix stays the same), as a note to her, not as words of the
        // viewer's ("(reply in English)" read as a request to translate the message).
        let target = self.languages.target(text).to_string();
        if let Some(l) = lang::detect(text)
            && l != target
        {
            new.content.push_str(&format!(
                "\n(Note: your voice only speaks {t}. Answer this viewer in {t}.)",
                t = lang::name(&target)
            ));
        }
        self.trim_history(1);
        let prompt = self.builder.build(&self.history, &new, count)?;
        // A user turn whose reply was never committed still goes to memory, first.
        let earlier = std::mem::take(&mut self.unsaved);
        self.save(earlier)?;
        self.unsaved.push(turn);
        self.history.push(new);
        self.history_ids.push(None);

        let mut rules = self.shape.clone();
        if let Speaker::Viewer(name) = speaker {
            rules.add_label(&super::guard::clean_name(name));
        }
        let turn_no = self.turns;
        self.turns += 1;
        let mut attempt = 0u64;
        loop {
            let mut params = self.params.clone();
            // A different draw every turn (a fixed seed would open every reply the same way), still
            // reproducible for a given seed.
            params.seed = self
                .params
                .seed
                .wrapping_add(turn_no.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .wrapping_add(attempt.wrapping_mul(0xD1B5_4A32_D192_ED03));
            let reply = self.generate_once(
                generator,
                &prompt.messages,
                &params,
                &rules,
                cancel,
                on_text,
            );
            // Shaping left nothing to say (the model only continued the dialogue or copied the
            // card): once more with another draw.
            let retry = attempt == 0
                && !cancel.is_cancelled()
                && reply.error.is_none()
                && reply.blocked.is_none()
                && !reply.is_cut()
                && super::judge::tokens(&reply.text).is_empty();
            if !retry {
                return Ok(reply);
            }
            log::debug!(
                "{}: empty reply after shaping; generating again",
                self.card.name
            );
            attempt += 1;
        }
    }

    fn generate_once(
        &self,
        generator: &mut dyn TextGenerator,
        messages: &[ChatMessage],
        params: &GenParams,
        rules: &ShapeRules,
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Reply {
        let mut filter = ReplyFilter::new(&self.blocked);
        let mut shaper: Shaper<'_> = rules.shaper();
        let mut text_out = String::new();
        let mut blocked = None;
        let mut caller_stopped = false;
        let mut shaped_end = false;
        let result = generator.generate(messages, params, cancel, &mut |piece| {
            let (t, stop) = shaper.push(piece);
            let mut steps = vec![filter.push(&t)];
            if stop {
                steps.push(filter.finish());
            }
            for step in steps {
                match step {
                    FilterStep::Release(t) => {
                        text_out.push_str(&t);
                        if !t.is_empty() && !on_text(&t) {
                            caller_stopped = true;
                            return false;
                        }
                    }
                    FilterStep::Blocked(h) => {
                        blocked = Some(h);
                        return false;
                    }
                }
            }
            if stop {
                shaped_end = true;
                return false;
            }
            true
        });
        let (mut outcome, error) = match result {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        let ended_normally = blocked.is_none()
            && !caller_stopped
            && !shaped_end
            && outcome
                .as_ref()
                .is_some_and(|o| o.finish != FinishReason::Cancelled);
        if ended_normally {
            let rest = shaper.finish();
            for step in [filter.push(&rest), filter.finish()] {
                match step {
                    FilterStep::Release(t) => {
                        text_out.push_str(&t);
                        if !t.is_empty() {
                            on_text(&t);
                        }
                    }
                    FilterStep::Blocked(h) => {
                        blocked = Some(h);
                        break;
                    }
                }
            }
        }
        if shaped_end
            && blocked.is_none()
            && !caller_stopped
            && let Some(o) = outcome.as_mut()
        {
            // The reply is complete: shaping ended it, not a cancellation.
            o.finish = FinishReason::Stop;
        }
        if let Some(h) = &blocked {
            log::warn!(
                "{}: reply stopped at the blocked entry {:?}",
                self.card.name,
                h.entry
            );
            let mut d = String::new();
            if !text_out.is_empty() && !text_out.ends_with(char::is_whitespace) {
                d.push(' ');
            }
            d.push_str(self.card.deflection.trim());
            text_out.push_str(&d);
            on_text(&d);
            if let Some(o) = outcome.as_mut() {
                o.finish = FinishReason::Stop;
            }
        }
        Reply {
            text: text_out,
            outcome,
            blocked,
            error,
            cut: shaper.cut(),
        }
    }

    /// Write turns to memory, in order.
    fn save(&mut self, turns: Vec<Turn>) -> Result<(), PersonaError> {
        if let Some(m) = self.memory.as_mut() {
            for t in turns {
                m.append(t)?;
            }
        }
        Ok(())
    }

    /// Store the idol's turn: `heard` is exactly what the audience heard; `interrupted` when it was
    /// cut off. Empty text stores nothing (but the message it answered).
    pub fn commit(&mut self, heard: &str, interrupted: bool) -> Result<(), PersonaError> {
        let earlier = std::mem::take(&mut self.unsaved);
        self.save(earlier)?;
        let heard = heard.trim();
        if heard.is_empty() {
            return Ok(());
        }
        let turn = if interrupted {
            Turn::interrupted(heard)
        } else {
            Turn::assistant(heard)
        };
        self.history.push(turn.to_message());
        self.history_ids.push(None);
        self.save(vec![turn])
    }

    /// Put a reply into the history now, before it is heard (the live pipeline: the next request
    /// must repeat the tokens the engine has cached); memory gets it at [`Conversation::settle`].
    pub fn commit_pending(&mut self, text: &str) -> PendingId {
        let id = PendingId(self.next_id);
        self.next_id += 1;
        let before = std::mem::take(&mut self.unsaved);
        self.pending.push((id, before));
        let text = text.trim();
        if !text.is_empty() {
            self.history.push(ChatMessage::new(Role::Assistant, text));
            self.history_ids.push(Some(id));
        }
        id
    }

    /// A pending reply was heard: the whole of it, or, when `interrupted`, exactly `heard` (an
    /// empty `heard` removes it from the history). Writes it, and the message it answered, to
    /// memory. Settling an unknown id does nothing.
    pub fn settle(
        &mut self,
        id: PendingId,
        heard: &str,
        interrupted: bool,
    ) -> Result<(), PersonaError> {
        let Some(k) = self.pending.iter().position(|(p, _)| *p == id) else {
            return Ok(());
        };
        // Earlier pending replies that were never settled go to memory first, as they stand.
        let mut turns = vec![];
        for (pid, before) in self.pending.drain(..=k) {
            turns.extend(before);
            let i = self.history_ids.iter().position(|h| *h == Some(pid));
            if pid == id {
                let heard = heard.trim();
                if interrupted {
                    if let Some(i) = i {
                        if heard.is_empty() {
                            self.history.remove(i);
                            self.history_ids.remove(i);
                        } else {
                            self.history[i] = Turn::interrupted(heard).to_message();
                        }
                    }
                    if !heard.is_empty() {
                        turns.push(Turn::interrupted(heard));
                    }
                } else if let Some(i) = i {
                    turns.push(Turn::assistant(self.history[i].content.clone()));
                }
            } else if let Some(i) = i {
                turns.push(Turn::assistant(self.history[i].content.clone()));
            }
        }
        self.save(turns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::Role;
    use crate::persona::guard::RateLimit;
    use crate::persona::prompt::estimate_tokens;

    /// Scripted generator (a fake for the stage around the model).
    struct Script(Vec<&'static str>);

    impl TextGenerator for Script {
        fn generate(
            &mut self,
            _messages: &[ChatMessage],
            _params: &GenParams,
            cancel: &CancelToken,
            on_text: &mut dyn FnMut(&str) -> bool,
        ) -> Result<GenOutcome, PersonaError> {
            let mut text = String::new();
            for p in &self.0 {
                if cancel.is_cancelled() {
                    break;
                }
                text.push_str(p);
                if !on_text(p) {
                    return Ok(GenOutcome {
                        text,
                        finish: FinishReason::Cancelled,
                        prompt_tokens: 0,
                        prompt_tokens_evaluated: 0,
                        completion_tokens: 0,
                    });
                }
            }
            Ok(GenOutcome {
                text,
                finish: FinishReason::Stop,
                prompt_tokens: 0,
                prompt_tokens_evaluated: 0,
                completion_tokens: self.0.len(),
            })
        }
    }

    fn card() -> PersonaCard {
        let mut c = PersonaCard::named("Mika");
        c.blocked_words = vec!["darn".into()];
        c.greeting = "[happy] Hi {{user}}!".into();
        c
    }

    #[test]
    fn blocked_reply_is_deflected_and_viewer_gated() {
        let limiter = RateLimiter::new(RateLimit {
            burst: 1,
            per_minute: 1.0,
        });
        let mut conv = Conversation::new(card(), None, 4096, Some(limiter));
        assert_eq!(
            conv.greet("Ann").unwrap().as_deref(),
            Some("[happy] Hi Ann!")
        );
        let t = Instant::now();
        assert!(matches!(
            conv.accept(Speaker::Viewer("troll"), "D4RN", t),
            Err(Rejection::BlockedWord { .. })
        ));
        assert!(conv.accept(Speaker::Viewer("ann"), "hi", t).is_ok());
        assert!(matches!(
            conv.accept(Speaker::Viewer("ann"), "hi", t),
            Err(Rejection::RateLimited { .. })
        ));
        assert!(conv.accept(Speaker::Operator, "anything", t).is_ok());
        let mut g = Script(vec!["[sad] Oh ", "da", "rn it"]);
        let mut streamed = String::new();
        let r = conv
            .respond(
                &mut g,
                Speaker::Viewer("ann"),
                "hi",
                &CancelToken::new(),
                &estimate_tokens,
                &mut |t| {
                    streamed.push_str(t);
                    true
                },
            )
            .unwrap();
        assert_eq!(r.blocked.as_ref().unwrap().entry, "darn");
        assert_eq!(streamed, r.text);
        // the words released together with the blocked one go with it
        assert_eq!(r.text, format!("[sad] {}", conv.card().deflection));
        assert!(!r.is_cut());
        conv.commit(&r.text, false).unwrap();
        let h = conv.history();
        assert_eq!(h.len(), 3);
        assert_eq!(h[1], ChatMessage::new(Role::User, "ann: hi"));
    }

    #[test]
    fn leading_speaker_name_is_dropped() {
        let mut conv = Conversation::new(card(), None, 4096, None);
        for (pieces, want) in [
            (vec![" Mi", "ka: [happy] ", "Yes!"], "[happy] Yes!"),
            (vec!["Mi", "ght be!"], "Might be!"),
            (vec!["Mi"], "Mi"),
        ] {
            let mut g = Script(pieces);
            let r = conv
                .respond(
                    &mut g,
                    Speaker::Operator,
                    "q",
                    &CancelToken::new(),
                    &estimate_tokens,
                    &mut |_| true,
                )
                .unwrap();
            assert_eq!(r.text, want);
        }
    }

    #[test]
    fn stopped_reply_is_cut_and_committed_as_heard() {
        let mut conv = Conversation::new(card(), None, 4096, None);
        let mut g = Script(vec!["[happy] One, ", "two, ", "three, ", "four."]);
        let mut n = 0;
        let r = conv
            .respond(
                &mut g,
                Speaker::Operator,
                "count",
                &CancelToken::new(),
                &estimate_tokens,
                &mut |_| {
                    n += 1;
                    n < 2
                },
            )
            .unwrap();
        assert!(r.is_cut());
        assert_eq!(r.text, "[happy] One, two,");
        conv.commit("[happy] One", true).unwrap();
        assert_eq!(conv.history().last().unwrap().content, "[happy] One —");
    }
}
