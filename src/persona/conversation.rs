//! One persona's conversation: the glue between chat input, the guards, the prompt, a
//! [`TextGenerator`] and memory. Input: viewer or operator messages. Output: the reply text, streamed
//! through the blocked-word filter, and the turns stored in memory.
//!
//! A turn goes: [`Conversation::accept`] (viewers only: rate limit, blocked words; a rejection
//! stores nothing) → [`Conversation::respond`] (stores the incoming turn, builds the prompt within
//! the budget, generates, drops a leading `NAME:` that small models copy from the example
//! transcript, releases text only through the [`ReplyFilter`]; on a blocked word it cancels and
//! appends the card's deflection) → [`Conversation::commit`] with the text that was
//! actually heard, and whether it was cut off. Committing is separate because in the live pipeline
//! the audio lags the text: only the playback stage knows what was heard when a viewer barges in.
//!
//! Threading: owned by the persona thread, like the generator it drives.

use super::card::{PersonaCard, expand_macros};
use super::guard::{BlockedWords, FilterStep, Hit, RateLimiter, Rejection, ReplyFilter};
use super::memory::{Memory, Turn};
use super::prompt::{DEFAULT_USER_NAME, PromptBuilder};
use super::{
    CancelToken, ChatMessage, FinishReason, GenOutcome, GenParams, PersonaError, TextGenerator,
};
use std::time::Instant;

/// Who is talking to the idol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker<'a> {
    /// A viewer: untrusted, wrapped, rate-limited, checked.
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

/// Drops a leading `NAME:` from a reply (small models imitate the example transcript). Holds back
/// the first characters only until they cannot be that prefix any more.
struct SpeakerPrefix {
    prefix: String,
    buf: String,
    done: bool,
}

impl SpeakerPrefix {
    fn new(name: &str) -> Self {
        SpeakerPrefix {
            prefix: format!("{}:", name.to_lowercase()),
            buf: String::new(),
            done: false,
        }
    }

    fn feed(&mut self, piece: &str) -> String {
        if self.done {
            return piece.to_string();
        }
        self.buf.push_str(piece);
        let start = self.buf.trim_start().to_lowercase();
        if start.starts_with(&self.prefix) {
            self.done = true;
            let lead = self.buf.len() - self.buf.trim_start().len();
            // Byte length of the prefix in the original text (same chars, case-folded).
            let n: usize = self.buf[lead..]
                .chars()
                .take(self.prefix.chars().count())
                .map(char::len_utf8)
                .sum();
            let rest = self.buf[lead + n..].trim_start().to_string();
            self.buf.clear();
            return rest;
        }
        if self.prefix.starts_with(&start) {
            return String::new();
        }
        self.done = true;
        std::mem::take(&mut self.buf)
    }

    fn finish(&mut self) -> String {
        self.done = true;
        std::mem::take(&mut self.buf)
    }
}

/// A persona's running conversation.
pub struct Conversation {
    card: PersonaCard,
    builder: PromptBuilder,
    blocked: BlockedWords,
    limiter: Option<RateLimiter>,
    memory: Option<Memory>,
    history: Vec<ChatMessage>,
    languages: super::lang::LanguagePolicy,
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
        Conversation {
            builder: PromptBuilder::new(
                &card,
                DEFAULT_USER_NAME,
                context_tokens,
                params.max_tokens,
            ),
            blocked: BlockedWords::new(&card.blocked_words),
            history: memory.as_ref().map(Memory::messages).unwrap_or_default(),
            card,
            limiter,
            memory,
            params,
            languages: super::lang::LanguagePolicy::default(),
        }
    }

    /// The languages replies may be in (those the model writes and a voice speaks).
    pub fn set_languages(&mut self, languages: super::lang::LanguagePolicy) {
        self.languages = languages;
    }

    pub fn card(&self) -> &PersonaCard {
        &self.card
    }

    /// The history as the model sees it, oldest first.
    pub fn history(&self) -> &[ChatMessage] {
        &self.history
    }

    /// The persona prefix sent first on every turn (byte-identical across turns).
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

    /// Store the incoming turn, generate the reply and stream it to `on_text` through the
    /// blocked-word filter. `count` is the backend's token counter for the prompt budget. Does not
    /// store the reply: call [`Conversation::commit`] with what was heard.
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
        let new = turn.to_message();
        let prompt = self.builder.build(&self.history, &new, count)?;
        if let Some(m) = self.memory.as_mut() {
            m.append(turn)?;
        }
        self.history.push(new);

        let mut filter = ReplyFilter::new(&self.blocked);
        let mut speaker_prefix = SpeakerPrefix::new(&self.card.name);
        let mut text_out = String::new();
        let mut blocked = None;
        let mut caller_stopped = false;
        let result =
            generator.generate(
                &prompt.messages,
                &self.params,
                cancel,
                &mut |piece| match filter.push(&speaker_prefix.feed(piece)) {
                    FilterStep::Release(t) => {
                        text_out.push_str(&t);
                        if !t.is_empty() && !on_text(&t) {
                            caller_stopped = true;
                            return false;
                        }
                        true
                    }
                    FilterStep::Blocked(h) => {
                        blocked = Some(h);
                        false
                    }
                },
            );
        let (mut outcome, error) = match result {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        let ended_normally = blocked.is_none()
            && !caller_stopped
            && outcome
                .as_ref()
                .is_some_and(|o| o.finish != FinishReason::Cancelled);
        if ended_normally {
            let rest = speaker_prefix.finish();
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
        Ok(Reply {
            text: text_out,
            outcome,
            blocked,
            error,
        })
    }

    /// Store the idol's turn: `heard` is exactly what the audience heard; `interrupted` when it was
    /// cut off. Empty text stores nothing.
    pub fn commit(&mut self, heard: &str, interrupted: bool) -> Result<(), PersonaError> {
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
        if let Some(m) = self.memory.as_mut() {
            m.append(turn)?;
        }
        Ok(())
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
        assert_eq!(r.text, format!("[sad] Oh {}", conv.card().deflection));
        assert!(!r.is_cut());
        conv.commit(&r.text, false).unwrap();
        let h = conv.history();
        assert_eq!(h.len(), 3);
        assert_eq!(h[1], ChatMessage::new(Role::User, "ann says: \"hi\""));
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
        let mut g = Script(vec!["[happy] One ", "two ", "three ", "four"]);
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
        assert_eq!(r.text, "[happy] One two ");
        conv.commit("[happy] One", true).unwrap();
        assert_eq!(conv.history().last().unwrap().content, "[happy] One —");
    }
}
