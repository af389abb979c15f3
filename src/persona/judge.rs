//! Objective checks of a reply's form, for a persona on stream. Input: the persona card, the reply
//! text and the language it should be in. Output: the [`Defect`]s found. The persona benchmark
//! (`benches/persona.rs`) counts them over a message set; the reply shaper
//! ([`super::shape`]) uses the same pieces (words, the card's n-grams, tags, speaker labels) to cut
//! replies while they stream.
//!
//! The checks (each one a property a host notices when the reply is spoken):
//! - **empty**: nothing to say once tags are removed;
//! - **speaker label**: the reply writes another line of the dialogue (`Viewer:`, `Mika:` after the
//!   start, `ann says:`, or any `Name:` that starts a line or a sentence);
//! - **card copy**: [`CARD_NGRAM`] consecutive words that also stand in the card's prose or the
//!   system prompt's rules;
//! - **repetition**: a run of [`REPEAT_NGRAM`] words (or 6 CJK characters) said twice;
//! - **too long for speech**: more sentences or words than the [`SpeechBudget`];
//! - **wrong language**: not in the language the reply should be in ([`super::lang::reads_as`]);
//! - **not in first person**: she talks about herself by name (`Mika is`, `as Mika`, `you are Mika`) or
//!   as a program (`as an AI`, `language model`);
//! - **tag outside the card**: an `[emotion]` the card does not list, an `<action>` it does not list,
//!   or an action in asterisks.
//!
//! Pure; no threads.

use super::card::{PersonaCard, expand_macros};
use super::lang;
use std::collections::HashSet;

/// Words in a row shared with the card that make a copy.
pub const CARD_NGRAM: usize = 5;
/// Words in a row that, said twice, make a repetition.
pub const REPEAT_NGRAM: usize = 4;

/// How much a reply may say: spoken replies are short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechBudget {
    pub max_sentences: usize,
    /// Words; a CJK character counts as half a word.
    pub max_words: usize,
}

impl Default for SpeechBudget {
    fn default() -> Self {
        SpeechBudget {
            max_sentences: 3,
            max_words: 40,
        }
    }
}

/// One defect of form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Defect {
    Empty,
    SpeakerLabel,
    CardCopy,
    Repetition,
    TooLong,
    WrongLanguage,
    NotFirstPerson,
    /// She speaks as someone else: greets herself by name ("Hi Mika!", the viewer's line) or gives
    /// another name as hers.
    WrongRole,
    UnknownTag,
}

impl Defect {
    pub const ALL: [Defect; 9] = [
        Defect::Empty,
        Defect::SpeakerLabel,
        Defect::CardCopy,
        Defect::Repetition,
        Defect::TooLong,
        Defect::WrongLanguage,
        Defect::NotFirstPerson,
        Defect::WrongRole,
        Defect::UnknownTag,
    ];

    /// A short column name.
    pub fn label(self) -> &'static str {
        match self {
            Defect::Empty => "empty",
            Defect::SpeakerLabel => "speaker",
            Defect::CardCopy => "card copy",
            Defect::Repetition => "repeat",
            Defect::TooLong => "too long",
            Defect::WrongLanguage => "language",
            Defect::NotFirstPerson => "not 1st person",
            Defect::WrongRole => "role",
            Defect::UnknownTag => "bad tag",
        }
    }
}

/// Normalized word tokens of `text`: lowercased runs of letters, digits and apostrophes; each CJK
/// character is a token of its own. Tags (`[..]`, `<..>`) are skipped. Each token comes with the
/// byte offset where it starts.
pub fn tokens(text: &str) -> Vec<(usize, String)> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut start = 0;
    let mut depth = 0i32;
    let flush = |cur: &mut String, start: usize, out: &mut Vec<(usize, String)>| {
        let w = cur.trim_matches('\'').to_string();
        if !w.is_empty() {
            out.push((start, w));
        }
        cur.clear();
    };
    for (i, c) in text.char_indices() {
        match c {
            '[' | '<' => {
                flush(&mut cur, start, &mut out);
                depth += 1;
                continue;
            }
            ']' | '>' => {
                depth = (depth - 1).max(0);
                continue;
            }
            _ if depth > 0 => continue,
            _ => {}
        }
        let cjk = matches!(
            lang::script_of(c),
            Some(lang::Script::Han | lang::Script::Kana | lang::Script::Hangul)
        );
        if cjk {
            flush(&mut cur, start, &mut out);
            out.push((i, c.to_string()));
        } else if c.is_alphanumeric() || c == '\'' || c == '’' {
            if cur.is_empty() {
                start = i;
            }
            if c == '’' {
                cur.push('\'');
            } else {
                cur.extend(c.to_lowercase());
            }
        } else {
            flush(&mut cur, start, &mut out);
        }
    }
    flush(&mut cur, start, &mut out);
    out
}

/// Spoken length in words: Latin words count one, CJK characters one half.
pub fn word_count(text: &str) -> usize {
    let t = tokens(text);
    let cjk = t
        .iter()
        .filter(|(_, w)| {
            w.chars().count() == 1
                && w.chars().all(|c| {
                    lang::script_of(c)
                        .is_some_and(|s| s != lang::Script::Latin && s != lang::Script::Cyrillic)
                })
        })
        .count();
    t.len() - cjk + cjk.div_ceil(2)
}

/// Whether `c` ends a sentence.
pub fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

/// Sentences in `text`: runs of sentence marks after some words, outside tags (a trailing text
/// without a mark counts as one).
pub fn sentence_count(text: &str) -> usize {
    let mut n = 0;
    let mut words_since = false;
    let mut depth = 0i32;
    let mut prev_mark = false;
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '[' | '<' => depth += 1,
            ']' | '>' => depth = (depth - 1).max(0),
            _ if depth > 0 => {}
            _ if is_sentence_end(c) => {
                // "3.5" and "e.g." are not ends: a period needs a space or the end after it.
                let next = chars.get(i + 1).copied();
                let ends = c != '.'
                    || next.is_none_or(|n| {
                        n.is_whitespace() || is_sentence_end(n) || n == '"' || n == ')'
                    });
                if ends && words_since && !prev_mark {
                    n += 1;
                    words_since = false;
                }
                prev_mark = ends;
                continue;
            }
            _ if c.is_alphanumeric() => words_since = true,
            _ => {}
        }
        prev_mark = false;
    }
    n + usize::from(words_since)
}

/// A tag written in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSpan {
    /// `[`, `<` or `*`.
    pub open: char,
    /// The name (before any `:intensity`), trimmed and lowercased.
    pub name: String,
    pub range: std::ops::Range<usize>,
}

/// The tags in `text`: `[name]`, `[name:0.5]`, `<name>`, `*name*` (asterisk actions of up to four
/// words).
pub fn tags(text: &str) -> Vec<TagSpan> {
    let mut out = vec![];
    let mut i = 0;
    while i < text.len() {
        let c = text[i..].chars().next().unwrap_or(' ');
        let close = match c {
            '[' => Some(']'),
            '<' => Some('>'),
            '*' => Some('*'),
            _ => None,
        };
        if let Some(close) = close
            && let Some(j) = text[i + 1..].find(close)
        {
            let inner = &text[i + 1..i + 1 + j];
            let words = inner.split_whitespace().count();
            if c != '*' || (words > 0 && words <= 4 && !inner.contains('\n')) {
                let name = inner
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_end_matches('/')
                    .trim()
                    .to_lowercase();
                out.push(TagSpan {
                    open: c,
                    name,
                    range: i..i + 1 + j + 1,
                });
                i += 1 + j + 1;
                continue;
            }
        }
        i += c.len_utf8();
    }
    out
}

/// Whether a tag is one the card allows: an emotion in brackets, an action in angle brackets, or a
/// `<break .../>`.
pub fn tag_allowed(card: &PersonaCard, tag: &TagSpan) -> bool {
    match tag.open {
        '[' => card.emotions.contains(&tag.name),
        '<' => card.actions.contains(&tag.name) || tag.name.starts_with("break"),
        _ => false,
    }
}

/// The word n-grams of a text, as joined strings.
fn ngrams(text: &str, n: usize) -> Vec<(usize, String)> {
    let t = tokens(text);
    if t.len() < n {
        return vec![];
    }
    (0..=t.len() - n)
        .map(|i| {
            (
                t[i].0,
                t[i..i + n]
                    .iter()
                    .map(|(_, w)| w.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })
        .collect()
}

/// The card text a reply must not copy: its prose (description, personality, speaking style,
/// scenario, an imported system prompt) and the rules of the system prompt, as word n-grams.
#[derive(Debug, Clone, Default)]
pub struct CardText {
    grams: HashSet<String>,
}

impl CardText {
    pub fn new(card: &PersonaCard, system_prompt: &str) -> Self {
        let x = |s: &str| expand_macros(s, &card.name, super::prompt::DEFAULT_USER_NAME);
        let mut grams = HashSet::new();
        let mut texts = vec![
            x(&card.description),
            x(&card.personality),
            x(&card.speaking_style),
            x(&card.scenario),
            system_prompt.to_string(),
        ];
        if let Some(s) = &card.system_prompt {
            texts.push(x(s));
        }
        for t in &texts {
            for (_, g) in ngrams(t, CARD_NGRAM) {
                grams.insert(g);
            }
        }
        CardText { grams }
    }

    /// Byte offset in `text` where the first run of [`CARD_NGRAM`] words shared with the card
    /// starts.
    pub fn first_copy(&self, text: &str) -> Option<usize> {
        ngrams(text, CARD_NGRAM)
            .into_iter()
            .find(|(_, g)| self.grams.contains(g))
            .map(|(i, _)| i)
    }
}

/// Names that, followed by `:`, start another speaker's line, besides any capitalized name at the
/// start of a line or sentence.
pub fn default_labels(card: &PersonaCard) -> Vec<String> {
    let mut v: Vec<String> = [
        "viewer",
        "user",
        "assistant",
        "you",
        "chat",
        "system",
        "human",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(card.name.to_lowercase());
    v
}

/// Where a line of another speaker starts in `text` (byte offset of its label), if anywhere: a known
/// `label` followed by `:` or ` says:` anywhere; `says:` anywhere; any name of one or two capitalized
/// words followed by `:` at the start of a line or after a sentence end. A `NAME:` at the very start
/// of the reply with NAME the persona's own name is not another speaker (callers strip it).
pub fn speaker_label(text: &str, labels: &[String], own: &str) -> Option<usize> {
    let lower = text.to_lowercase();
    let mut best: Option<usize> = None;
    let mut note = |i: usize| best = Some(best.map_or(i, |b: usize| b.min(i)));
    if let Some(i) = lower.find(" says:") {
        let head = &text[..i];
        let s = head
            .rfind(|c: char| c.is_whitespace() || is_sentence_end(c))
            .map_or(0, |p| {
                p + head[p..].chars().next().map_or(1, char::len_utf8)
            });
        note(s);
    }
    let own = own.to_lowercase();
    for label in labels {
        let mut from = 0;
        while let Some(k) = lower[from..].find(label.as_str()) {
            let i = from + k;
            from = i + label.len();
            let before_ok = lower[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric());
            let after = &lower[i + label.len()..];
            let colon = after.starts_with(':') || after.starts_with(" says:");
            let leading_own = *label == own && text[..i].trim().is_empty();
            if before_ok && colon && !leading_own {
                note(i);
            }
        }
    }
    // Capitalized names at a line or sentence start.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        let at_start = k == 0 || {
            let prev: String = chars[..k]
                .iter()
                .rev()
                .take_while(|(_, c)| *c == ' ' || *c == '\t')
                .map(|(_, c)| *c)
                .collect();
            let p = k - prev.chars().count();
            p == 0
                || chars[p - 1].1 == '\n'
                || (is_sentence_end(chars[p - 1].1) && !prev.is_empty())
        };
        if !at_start || !c.is_uppercase() {
            continue;
        }
        let rest = &text[i..];
        let name_len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == ' '))
            .map_or(rest.len(), |(j, _)| j);
        let name = &rest[..name_len];
        let words = name.split_whitespace().count();
        if (1..=2).contains(&words)
            && !name.ends_with(' ')
            && name.chars().count() <= 24
            && rest[name_len..].starts_with(':')
            && !(k == 0 && name.to_lowercase() == own)
        {
            note(i);
        }
    }
    best
}

/// The checks for one persona.
#[derive(Debug, Clone)]
pub struct Judge {
    card: PersonaCard,
    card_text: CardText,
    labels: Vec<String>,
    pub budget: SpeechBudget,
}

impl Judge {
    /// `system_prompt`: the prompt the replies were made with (its rules must not be copied either).
    pub fn new(card: &PersonaCard, system_prompt: &str, budget: SpeechBudget) -> Self {
        Judge {
            card_text: CardText::new(card, system_prompt),
            labels: default_labels(card),
            card: card.clone(),
            budget,
        }
    }

    /// The defects of `reply`, which should be in language `lang`.
    pub fn defects(&self, reply: &str, lang: &str) -> Vec<Defect> {
        let mut out = vec![];
        let spoken = tokens(reply);
        if spoken.is_empty() {
            return vec![Defect::Empty];
        }
        if speaker_label(reply, &self.labels, &self.card.name).is_some() {
            out.push(Defect::SpeakerLabel);
        }
        if self.card_text.first_copy(reply).is_some() {
            out.push(Defect::CardCopy);
        }
        if repeats(reply) {
            out.push(Defect::Repetition);
        }
        if sentence_count(reply) > self.budget.max_sentences
            || word_count(reply) > self.budget.max_words
        {
            out.push(Defect::TooLong);
        }
        let clean = strip_tags(reply);
        if !lang::reads_as(&clean, lang) {
            out.push(Defect::WrongLanguage);
        }
        if third_person(reply, &self.card.name) {
            out.push(Defect::NotFirstPerson);
        }
        if wrong_role(reply, &self.card.name) {
            out.push(Defect::WrongRole);
        }
        if tags(reply).iter().any(|t| !tag_allowed(&self.card, t)) {
            out.push(Defect::UnknownTag);
        }
        out
    }
}

/// `text` without its tags.
pub fn strip_tags(text: &str) -> String {
    let mut out = String::new();
    let mut last = 0;
    for t in tags(text) {
        out.push_str(&text[last..t.range.start]);
        last = t.range.end;
    }
    out.push_str(&text[last..]);
    out
}

/// A run of words said twice.
fn repeats(text: &str) -> bool {
    let t = tokens(text);
    let cjk = t.iter().filter(|(_, w)| w.chars().count() == 1).count() * 2 > t.len();
    let n = if cjk { 6 } else { REPEAT_NGRAM };
    let mut seen = HashSet::new();
    ngrams(text, n).into_iter().any(|(_, g)| !seen.insert(g))
}

/// She talks about herself by name, or as a program.
/// A greeting to her own name ("hi mika", "good evening mika") or "my name is" another name.
fn wrong_role(text: &str, name: &str) -> bool {
    let t: Vec<String> = tokens(text).into_iter().map(|(_, w)| w).collect();
    let name = name.to_lowercase();
    let first = name.split_whitespace().next().unwrap_or("");
    let greetings = [
        "hi",
        "hello",
        "hey",
        "hiya",
        "yo",
        "morning",
        "evening",
        "afternoon",
        "day",
        "night",
        "thanks",
        "bye",
    ];
    (1..t.len()).any(|i| t[i] == first && greetings.contains(&t[i - 1].as_str()))
        || t.windows(4)
            .any(|w| w[0] == "my" && w[1] == "name" && w[2] == "is" && w[3] != first)
}

fn third_person(text: &str, name: &str) -> bool {
    let t: Vec<String> = tokens(text).into_iter().map(|(_, w)| w).collect();
    let name = name.to_lowercase();
    let name_words: Vec<&str> = name.split_whitespace().collect();
    let first = name_words.first().copied().unwrap_or("");
    let verbs = [
        "is", "was", "has", "loves", "likes", "does", "says", "will", "can", "wants", "thinks",
        "feels", "gets", "would",
    ];
    for i in 0..t.len() {
        let w = t[i].as_str();
        if w == format!("{first}'s") && i > 0 {
            return true;
        }
        if w == first {
            let next = t
                .get(i + name_words.len())
                .map(String::as_str)
                .unwrap_or("");
            if verbs.contains(&next) {
                return true;
            }
            let prev = if i > 0 { t[i - 1].as_str() } else { "" };
            let prev2 = if i > 1 { t[i - 2].as_str() } else { "" };
            if prev == "as" || (prev == "are" && prev2 == "you") || prev == "you're" {
                return true;
            }
        }
    }
    let joined = t.join(" ");
    [
        "as an ai",
        "language model",
        "i am an ai",
        "i'm an ai",
        "as a virtual assistant",
    ]
    .iter()
    .any(|p| joined.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> PersonaCard {
        let mut c = PersonaCard::named("Mika");
        c.description = "a cheerful virtual idol who streams from her cozy pastel room.".into();
        c.personality = "Warm, upbeat and playful, a little clumsy.".into();
        c.emotions = vec!["neutral".into(), "happy".into(), "shy".into()];
        c.actions = vec!["wave".into(), "laugh".into(), "wink".into()];
        c
    }

    fn judge() -> Judge {
        Judge::new(
            &card(),
            "You are Mika. Answer in one to three short sentences.",
            SpeechBudget::default(),
        )
    }

    #[test]
    fn clean_replies_pass() {
        let j = judge();
        assert_eq!(
            j.defects("[happy] Welcome in! <wave> I'm so glad you came.", "en"),
            []
        );
        assert_eq!(j.defects("[happy] 对，我最喜欢吃火锅！", "zh"), []);
        assert_eq!(j.defects("[shy] えへへ、ありがとう！", "ja"), []);
        assert_eq!(j.defects("It's 3.5 stars, e.g. pretty good.", "en"), []);
    }

    #[test]
    fn each_defect_is_found() {
        let j = judge();
        let has = |r: &str, l: &str, d: Defect| j.defects(r, l).contains(&d);
        assert!(has("[happy] <wave>", "en", Defect::Empty));
        assert!(has("Sure!\nViewer says: hi", "en", Defect::SpeakerLabel));
        assert!(has("Sure! Mike: yes I do.", "en", Defect::SpeakerLabel));
        assert!(has("Hi! Viewer: what?", "en", Defect::SpeakerLabel));
        assert!(!has("Mika: Hi there!", "en", Defect::SpeakerLabel));
        assert!(!has("It is 10:30 now.", "en", Defect::SpeakerLabel));
        assert!(has(
            "You're Mika, a cheerful virtual idol who streams from her room.",
            "en",
            Defect::CardCopy
        ));
        assert!(has(
            "Answer in one to three short sentences.",
            "en",
            Defect::CardCopy
        ));
        assert!(has(
            "I love it so much. I love it so much.",
            "en",
            Defect::Repetition
        ));
        assert!(has("One. Two. Three. Four.", "en", Defect::TooLong));
        assert!(has(&"word ".repeat(41), "en", Defect::TooLong));
        assert!(has("Hello there!", "zh", Defect::WrongLanguage));
        assert!(has("你好！", "en", Defect::WrongLanguage));
        assert!(has(
            "Mika is a little brother.",
            "en",
            Defect::NotFirstPerson
        ));
        assert!(has(
            "As an AI, I cannot sing.",
            "en",
            Defect::NotFirstPerson
        ));
        assert!(has("Hi Mika! First time here!", "en", Defect::WrongRole));
        assert!(has("Good evening, Mika!", "en", Defect::WrongRole));
        assert!(has("[happy] My name is Sakura.", "en", Defect::WrongRole));
        assert!(!has("[happy] My name is Mika!", "en", Defect::WrongRole));
        assert!(!has("Hi Kenji! I'm Mika.", "en", Defect::WrongRole));
        assert!(has("[laughs] Oh no!", "en", Defect::UnknownTag));
        assert!(has("[wink] Maybe!", "en", Defect::UnknownTag));
        assert!(has("*giggles* Maybe!", "en", Defect::UnknownTag));
        assert!(!has("[happy:0.5] <wink> Maybe!", "en", Defect::UnknownTag));
    }

    #[test]
    fn counts() {
        assert_eq!(sentence_count("Hi! How are you? Fine..."), 3);
        assert_eq!(sentence_count("[happy] Hi"), 1);
        assert_eq!(sentence_count("你好！我是Mika。"), 2);
        assert_eq!(word_count("[happy] Hi there <wave>"), 2);
        assert_eq!(word_count("你好吗"), 2);
    }
}
