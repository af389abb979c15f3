//! Prompt assembly. Input: a [`PersonaCard`], the languages replies may be in, the conversation so
//! far (chat messages, oldest first), the new message, a token budget and a token-count function.
//! Output: the [`Prompt`] to generate from.
//!
//! Layout: a short system message (who she is, in the card's own prose, then one paragraph on how
//! to answer: spoken, in the first person, one to three short sentences, a mood tag and a gesture
//! tag, the language rule), then the card's examples as real chat turns (a user turn, her reply),
//! then as much history as fits, then the new message, then the card's post-history instructions if
//! it has any. Small models continue a transcript they find inside the system message and copy
//! labelled sections and tag lists, so there are neither: the examples show the form instead. The
//! prefix (system message and examples) depends on the card, the fixed user name and the language
//! list only, never on the history, the viewer or the clock, so it is byte-identical on every turn:
//! an engine that caches the evaluated prefix in its KV cache pays for the persona once.
//!
//! Budget: `count(messages)` returns the tokens the backend would spend on those messages (template
//! included). The persona and the new message are always kept; history is dropped oldest first, as
//! whole messages, until the prompt plus `reserve` (room for the reply) fits. The smallest history cut
//! that fits is found by binary search (counts are monotonic in the number of messages), so a turn
//! costs O(log n) counts. After the cut, a leading assistant message is dropped as well, so history
//! starts with a user turn (strict chat templates require alternation). If even the persona and the
//! new message do not fit, that is an error that says by how much. Pure; no threads.

use super::card::{PersonaCard, expand_macros};
use super::lang::{LanguagePolicy, name as lang_name};
use super::{ChatMessage, PersonaError, Role};

/// The name `{{user}}` expands to inside the persona (the audience, not one viewer: the prefix must
/// not change when a different viewer speaks).
pub const DEFAULT_USER_NAME: &str = "Viewer";

/// What an example without a user line answers (she speaks unprompted).
const QUIET_CHAT: &str = "(chat is quiet)";

/// The system prompt for a card, for replies in English. Deterministic: same card and user name,
/// same bytes.
pub fn system_prompt(card: &PersonaCard, user_name: &str) -> String {
    system_prompt_for(card, user_name, &LanguagePolicy::default())
}

/// The system prompt for a card whose replies may be in `languages`.
pub fn system_prompt_for(
    card: &PersonaCard,
    user_name: &str,
    languages: &LanguagePolicy,
) -> String {
    let x = |s: &str| expand_macros(s.trim(), &card.name, user_name);
    let name = &card.name;
    let description = x(&card.description);
    let intro = match description.chars().next() {
        None => format!("You are {name}."),
        // "a cheerful idol who ..." continues the sentence; "Mika is ..." starts a new one.
        Some(c) if c.is_lowercase() => format!("You are {name}, {description}"),
        Some(_) => format!("You are {name}. {description}"),
    };
    let mut out = match &card.system_prompt {
        Some(sp) => x(&sp.replace("{{original}}", &intro)),
        None => intro,
    };
    for text in [&card.personality, &card.speaking_style, &card.scenario] {
        let t = x(text);
        if !t.is_empty() {
            out.push(' ');
            out.push_str(&t);
        }
    }
    out.push_str(&format!(
        "\n\nYou are live on stream and everything you write is said aloud. Answer the viewer as {name}, \
         in the first person, in one to three short spoken sentences."
    ));
    let emotion = card
        .emotions
        .iter()
        .find(|e| *e != "neutral")
        .or(card.emotions.first());
    match (emotion, card.actions.first()) {
        (Some(e), Some(a)) => out.push_str(&format!(
            " Start with your mood in brackets, like [{e}], and add a gesture like <{a}> when it fits."
        )),
        (Some(e), None) => out.push_str(&format!(" Start with your mood in brackets, like [{e}].")),
        _ => {}
    }
    let spoken: Vec<String> = languages.spoken.iter().map(|l| lang_name(l)).collect();
    if spoken.len() == 1 {
        out.push_str(&format!(" Always answer in {}.", spoken[0]));
    } else {
        let (last, rest) = spoken.split_last().expect("never empty");
        out.push_str(&format!(
            " Answer in the viewer's language when it is {} or {last}; otherwise in {}.",
            rest.join(", "),
            spoken[0]
        ));
    }
    out
}

/// The card's examples as chat turns: each a user message (`NAME: text`, as viewer messages
/// arrive) and her reply. An example whose reply is in a language no voice speaks is left out (a
/// card can carry examples for every language; only the speakable ones teach the model).
pub fn example_turns(
    card: &PersonaCard,
    user_name: &str,
    languages: &LanguagePolicy,
) -> Vec<ChatMessage> {
    let x = |s: &str| expand_macros(s.trim(), &card.name, user_name).replace('\n', " ");
    let mut out = vec![];
    for ex in &card.examples {
        let reply_lang = super::lang::detect(&super::judge::strip_tags(&ex.char));
        if reply_lang.is_some_and(|l| !languages.spoken.iter().any(|s| s == l)) {
            continue;
        }
        let user = if ex.user.trim().is_empty() {
            QUIET_CHAT.to_string()
        } else {
            super::guard::wrap_viewer(user_name, &x(&ex.user))
        };
        out.push(ChatMessage::new(Role::User, user));
        out.push(ChatMessage::new(Role::Assistant, x(&ex.char)));
    }
    out
}

/// An assembled prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub messages: Vec<ChatMessage>,
    /// How many leading messages are the persona prefix (the part that is identical every turn).
    pub prefix_len: usize,
    /// History messages left out to fit the budget.
    pub dropped: usize,
    /// `count(messages)`.
    pub tokens: usize,
}

/// Builds prompts for one persona; holds its fixed prefix.
#[derive(Debug, Clone)]
pub struct PromptBuilder {
    prefix: Vec<ChatMessage>,
    post_history: Option<ChatMessage>,
    /// Context size of the backend, in tokens.
    pub context_tokens: usize,
    /// Tokens kept free for the reply.
    pub reserve_tokens: usize,
}

impl PromptBuilder {
    pub fn new(
        card: &PersonaCard,
        user_name: &str,
        context_tokens: usize,
        reserve_tokens: usize,
    ) -> Self {
        Self::with_languages(
            card,
            user_name,
            context_tokens,
            reserve_tokens,
            &LanguagePolicy::default(),
        )
    }

    /// A builder whose replies may be in `languages`.
    pub fn with_languages(
        card: &PersonaCard,
        user_name: &str,
        context_tokens: usize,
        reserve_tokens: usize,
        languages: &LanguagePolicy,
    ) -> Self {
        let post_history = card
            .post_history
            .as_ref()
            .map(|p| ChatMessage::new(Role::System, expand_macros(p, &card.name, user_name)));
        PromptBuilder {
            prefix: std::iter::once(ChatMessage::new(
                Role::System,
                system_prompt_for(card, user_name, languages),
            ))
            .chain(example_turns(card, user_name, languages))
            .collect(),
            post_history,
            context_tokens,
            reserve_tokens,
        }
    }

    /// The persona prefix (identical on every turn).
    pub fn prefix(&self) -> &[ChatMessage] {
        &self.prefix
    }

    /// Assemble `prefix + history (as much as fits) + new + post-history`.
    pub fn build(
        &self,
        history: &[ChatMessage],
        new: &ChatMessage,
        count: &dyn Fn(&[ChatMessage]) -> usize,
    ) -> Result<Prompt, PersonaError> {
        let budget = self.context_tokens.saturating_sub(self.reserve_tokens);
        let assemble = |start: usize| -> Vec<ChatMessage> {
            let mut m = self.prefix.clone();
            m.extend_from_slice(&history[start..]);
            m.push(new.clone());
            if let Some(p) = &self.post_history {
                m.push(p.clone());
            }
            m
        };
        let minimal = assemble(history.len());
        let minimal_tokens = count(&minimal);
        if minimal_tokens > budget {
            return Err(PersonaError::Other(format!(
                "the persona and the new message need {minimal_tokens} tokens, but only {budget} fit \
                 (context {} minus {} reserved for the reply): shorten the persona card or the message, \
                 or raise the context size",
                self.context_tokens, self.reserve_tokens
            )));
        }
        // Smallest `start` whose prompt fits.
        let (mut lo, mut hi) = (0usize, history.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if count(&assemble(mid)) <= budget {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let mut start = lo;
        while start < history.len() && history[start].role == Role::Assistant && start > 0 {
            start += 1;
        }
        let messages = assemble(start);
        let tokens = if start == history.len() {
            minimal_tokens
        } else {
            count(&messages)
        };
        Ok(Prompt {
            messages,
            prefix_len: self.prefix.len(),
            dropped: start,
            tokens,
        })
    }
}

/// A rough token count for backends without a tokenizer at hand (an OpenAI-compatible server): about
/// one token per 3.5 bytes of English plus a few per message for the template. Errs on the high side.
pub fn estimate_tokens(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .map(|m| m.content.len() * 2 / 7 + 6)
        .sum::<usize>()
        + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_prompt_is_short_and_stable() {
        let mut card = PersonaCard::named("Mika");
        card.examples.push(super::super::card::Example {
            user: "Hi!".into(),
            char: "[happy] Hi hi!".into(),
        });
        let a = system_prompt(&card, "Viewer");
        assert!(a.contains("[happy]") && a.contains("<wave>"), "{a}");
        assert!(!a.contains("[sad]") && !a.contains("Hi hi"), "{a}");
        assert!(a.contains("Always answer in English."), "{a}");
        assert_eq!(a, system_prompt(&card, "Viewer"));
        let b = PromptBuilder::new(&card, "Viewer", 4096, 100);
        let roles: Vec<Role> = b.prefix().iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::Assistant]);
        assert_eq!(b.prefix()[1].content, "Viewer: Hi!");
        let zh = LanguagePolicy::new(&[], &["en_US".into(), "zh_CN".into()]);
        let c = system_prompt_for(&card, "Viewer", &zh);
        assert!(
            c.contains("when it is English or Chinese; otherwise in English"),
            "{c}"
        );
    }
}
