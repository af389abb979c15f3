//! Replies shaped for speech, whatever the model. Input: reply text as it streams from the model.
//! Output: the text to release, and when to stop decoding.
//!
//! A small model continues the dialogue past its own turn, copies its instructions, runs on for a
//! paragraph and invents tags. [`Shaper`] cuts all of that while the reply streams, so decoding stops
//! as soon as the reply is complete (nothing is decoded only to be thrown away):
//!
//! 1. a leading `NAME:` with the persona's own name is dropped (models imitate transcripts);
//! 2. the reply ends at the first newline after some text ([`ShapeConfig::cut_at_newline`]) and at
//!    the first label of another speaker ([`judge::speaker_label`], [`ShapeConfig::cut_at_speaker`]),
//!    so another speaker's line is never released;
//! 3. the reply ends where it starts copying the card ([`judge::CardText`]: [`judge::CARD_NGRAM`]
//!    words in a row that stand in the card's prose or the prompt's rules);
//! 4. the reply ends with the sentence that reaches [`SpeechBudget::max_sentences`], or before the
//!    word past [`SpeechBudget::max_words`] (at the last sentence end before it when there is one);
//! 5. tags are checked against the card ([`TagMapper`]): a known emotion or action passes, a tag of
//!    the other kind is moved to its bracket (`[wink]` → `<wink>`), an inflected or synonymous one is
//!    mapped (`[laughs]` → `<laugh>`, `*blushes*` → `[shy]`), anything else is dropped.
//!
//! Text is released as soon as it cannot be cut any more: up to the last punctuation mark, and
//! otherwise all but the last `CARD_NGRAM - 1` words (a card copy or a label may still be forming
//! there). Pure, single-threaded state for one reply.

use super::card::PersonaCard;
use super::judge::{self, CARD_NGRAM, CardText, SpeechBudget};

/// What to cut; from the card's `[reply]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeConfig {
    pub budget: SpeechBudget,
    pub cut_at_newline: bool,
    pub cut_at_speaker: bool,
    pub cut_card_copy: bool,
}

impl Default for ShapeConfig {
    fn default() -> Self {
        ShapeConfig {
            budget: SpeechBudget::default(),
            cut_at_newline: true,
            cut_at_speaker: true,
            cut_card_copy: true,
        }
    }
}

/// Why a reply was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Newline,
    Speaker,
    CardCopy,
    Budget,
}

/// The persona data a shaper checks against (built once per conversation).
#[derive(Debug, Clone)]
pub struct ShapeRules {
    pub config: ShapeConfig,
    name: String,
    labels: Vec<String>,
    card_text: CardText,
    tags: TagMapper,
}

impl ShapeRules {
    /// `system_prompt`: the rules text the model sees (a reply must not copy it either).
    pub fn new(card: &PersonaCard, system_prompt: &str, config: ShapeConfig) -> Self {
        ShapeRules {
            config,
            name: card.name.clone(),
            labels: judge::default_labels(card),
            card_text: CardText::new(card, system_prompt),
            tags: TagMapper::new(card),
        }
    }

    /// Also cut at `NAME:` for this speaker (a viewer in the conversation).
    pub fn add_label(&mut self, name: &str) {
        let n = name.trim().to_lowercase();
        if !n.is_empty() && !self.labels.contains(&n) {
            self.labels.push(n);
        }
    }

    pub fn shaper(&self) -> Shaper<'_> {
        Shaper {
            rules: self,
            acc: String::new(),
            released: 0,
            lead_done: false,
            tag_buf: String::new(),
            last_tag: None,
            skip_space: true,
            ends_ws: false,
            cut: None,
        }
    }
}

/// One reply's shaping state (see the module docs).
#[derive(Debug)]
pub struct Shaper<'a> {
    rules: &'a ShapeRules,
    /// The reply so far (after the leading name).
    acc: String,
    /// Bytes of `acc` passed on to the tag stage.
    released: usize,
    lead_done: bool,
    /// An unclosed tag held back.
    tag_buf: String,
    /// The last tag released, while only whitespace followed it (a repeat of it is dropped).
    last_tag: Option<String>,
    /// Whitespace next is dropped: at the start, and after a dropped tag that followed whitespace.
    skip_space: bool,
    /// The text released so far ends in whitespace.
    ends_ws: bool,
    cut: Option<Cut>,
}

impl Shaper<'_> {
    /// Why the reply was cut, once it was.
    pub fn cut(&self) -> Option<Cut> {
        self.cut
    }

    /// Feed a piece; returns the text to release and whether the reply is complete (stop decoding).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.cut.is_some() {
            return (String::new(), true);
        }
        self.acc.push_str(piece);
        if !self.lead_done {
            let start = self.acc.trim_start();
            let own = format!("{}:", self.rules.name.to_lowercase());
            let low = start.to_lowercase();
            if low.starts_with(&own) {
                let n: usize = start
                    .chars()
                    .take(own.chars().count())
                    .map(char::len_utf8)
                    .sum();
                self.acc = start[n..].trim_start().to_string();
                self.lead_done = true;
            } else if own.starts_with(&low) {
                return (String::new(), false);
            } else {
                self.acc = start.to_string();
                self.lead_done = true;
            }
        }
        if self.released == 0 {
            // whitespace and the colon or dash of a label the model left half-written
            let rest = self.acc.trim_start_matches(|c: char| {
                c.is_whitespace() || matches!(c, ':' | '：' | '-' | '—')
            });
            let lead = self.acc.len() - rest.len();
            self.acc.drain(..lead);
        }
        if let Some((at, why)) = self.find_cut(false) {
            self.cut = Some(why);
            let end = at.max(self.released);
            let mut out = self.tags_push(end);
            out.push_str(&self.tags_finish());
            return (trim_end_keep(out), true);
        }
        let safe = self.safe_end();
        (self.tags_push(safe), false)
    }

    /// The model stopped by itself: the rest (cut if it must be).
    pub fn finish(&mut self) -> String {
        if self.cut.is_some() {
            return String::new();
        }
        if !self.lead_done {
            self.acc = self.acc.trim_start().to_string();
            self.lead_done = true;
        }
        let end = match self.find_cut(true) {
            Some((at, why)) => {
                self.cut = Some(why);
                at.max(self.released)
            }
            None => self.acc.len(),
        };
        let mut out = self.tags_push(end);
        out.push_str(&self.tags_finish());
        trim_end_keep(out)
    }

    /// The earliest cut in the text so far.
    fn find_cut(&self, final_: bool) -> Option<(usize, Cut)> {
        let cfg = &self.rules.config;
        let acc = &self.acc;
        let mut best: Option<(usize, Cut)> = None;
        let mut note = |at: usize, why: Cut| {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, why));
            }
        };
        if cfg.cut_at_newline
            && let Some(i) = acc.find('\n')
        {
            note(i, Cut::Newline);
        }
        if cfg.cut_at_speaker
            && let Some(i) = judge::speaker_label(acc, &self.rules.labels, &self.rules.name)
        {
            note(i, Cut::Speaker);
        }
        if cfg.cut_card_copy
            && let Some(i) = self.rules.card_text.first_copy(acc)
        {
            note(i, Cut::CardCopy);
        }
        if let Some((preferred, hard)) = budget_end(acc, cfg.budget, final_) {
            // At the last sentence end when nothing past it was released yet, else at the word.
            note(
                if preferred >= self.released {
                    preferred
                } else {
                    hard
                },
                Cut::Budget,
            );
        }
        best
    }

    /// How far the text can be released now.
    fn safe_end(&self) -> usize {
        let acc = &self.acc;
        let toks = judge::tokens(acc);
        let hold_from = if toks.len() >= CARD_NGRAM - 1 {
            toks[toks.len() - (CARD_NGRAM - 1)].0
        } else if let Some((i, _)) = toks.first() {
            *i
        } else {
            acc.len()
        };
        // Up to the last punctuation mark may go regardless (labels and copies that end before it
        // were checked with it present).
        let punct = acc
            .char_indices()
            .rev()
            .find(|(_, c)| {
                judge::is_sentence_end(*c) || matches!(c, ',' | ';' | '，' | '、' | '；' | '：')
            })
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(0);
        let safe = hold_from.max(punct).min(acc.len());
        // Trailing whitespace waits for what follows it (a cut leaves none).
        acc[..safe].trim_end().len().max(self.released)
    }

    /// Pass `acc[released..end]` through the tag stage.
    fn tags_push(&mut self, end: usize) -> String {
        if end <= self.released {
            return String::new();
        }
        let piece = self.acc[self.released..end].to_string();
        self.released = end;
        let mut out = String::new();
        for c in piece.chars() {
            if self.tag_buf.is_empty() {
                if matches!(c, '[' | '<' | '*') {
                    self.tag_buf.push(c);
                } else if c.is_whitespace() {
                    if !self.skip_space {
                        out.push(c);
                        self.ends_ws = true;
                    }
                } else {
                    out.push(c);
                    self.last_tag = None;
                    self.skip_space = false;
                    self.ends_ws = false;
                }
                continue;
            }
            self.tag_buf.push(c);
            let open = self.tag_buf.chars().next().unwrap_or('[');
            let close = match open {
                '[' => ']',
                '<' => '>',
                _ => '*',
            };
            if c == close {
                let inner = &self.tag_buf[1..self.tag_buf.len() - 1];
                match self.rules.tags.map(open, inner) {
                    Some(t) if self.last_tag.as_deref() != Some(t.as_str()) => {
                        out.push_str(&t);
                        self.last_tag = Some(t);
                        self.skip_space = false;
                        self.ends_ws = false;
                    }
                    // unknown, or the same tag again: gone, and the space before it stands alone
                    _ => {
                        self.skip_space = self.skip_space || self.ends_ws;
                    }
                }
                self.tag_buf.clear();
            } else if self.tag_buf.chars().count() > 40 {
                // Not a tag: an asterisk or bracket in prose. Let the text through without it.
                let rest: String = self.tag_buf.chars().skip(1).collect();
                self.tag_buf.clear();
                out.push_str(&rest);
            }
        }
        out
    }

    fn tags_finish(&mut self) -> String {
        let open = self.tag_buf.chars().next();
        let rest: String = self.tag_buf.chars().skip(1).collect();
        self.tag_buf.clear();
        match open {
            // An asterisk that never closed is prose; an unclosed bracket is half a tag.
            Some('*') => rest,
            _ => String::new(),
        }
    }
}

/// Trailing whitespace goes (a cut leaves none to speak).
fn trim_end_keep(s: String) -> String {
    s.trim_end().to_string()
}

/// Where the budget ends the reply: after the sentence that reaches `max_sentences`, or before the
/// word past `max_words` (at the last sentence end before it, if any). A `.` ends a sentence only
/// once the next character shows it is not a decimal point or an abbreviation's dot.
fn budget_end(text: &str, budget: SpeechBudget, final_: bool) -> Option<(usize, usize)> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut depth = 0i32;
    let mut sentences = 0;
    let mut words_since = false;
    let mut last_end = None;
    let mut words = 0usize;
    let mut half = 0usize;
    let mut in_word = false;
    let mut k = 0;
    while k < chars.len() {
        let (i, c) = chars[k];
        match c {
            '[' | '<' => {
                depth += 1;
                in_word = false;
            }
            ']' | '>' => depth = (depth - 1).max(0),
            _ if depth > 0 => {}
            _ if judge::is_sentence_end(c) => {
                in_word = false;
                let mut j = k;
                while j + 1 < chars.len() && judge::is_sentence_end(chars[j + 1].1) {
                    j += 1;
                }
                let end = chars[j].0 + chars[j].1.len_utf8();
                let next = chars.get(j + 1).map(|x| x.1);
                let confirmed = match next {
                    Some(n) => {
                        c != '.'
                            || j > k
                            || n.is_whitespace()
                            || matches!(n, '"' | ')' | '\'' | '[' | '<')
                    }
                    None => final_ || !matches!(c, '.'),
                };
                if confirmed && words_since {
                    sentences += 1;
                    words_since = false;
                    last_end = Some(end);
                    if sentences >= budget.max_sentences {
                        return Some((end, end));
                    }
                }
                k = j + 1;
                continue;
            }
            _ => {
                let cjk = matches!(
                    crate::persona::lang::script_of(c),
                    Some(
                        crate::persona::lang::Script::Han
                            | crate::persona::lang::Script::Kana
                            | crate::persona::lang::Script::Hangul
                    )
                );
                if cjk {
                    half += 1;
                    words_since = true;
                    in_word = false;
                    if half.div_ceil(2) + words > budget.max_words {
                        return Some((last_end.unwrap_or(i), i));
                    }
                } else if c.is_alphanumeric() {
                    if !in_word {
                        words += 1;
                        if words + half.div_ceil(2) > budget.max_words {
                            return Some((last_end.unwrap_or(i), i));
                        }
                    }
                    in_word = true;
                    words_since = true;
                } else if c != '\'' && c != '’' {
                    in_word = false;
                }
            }
        }
        k += 1;
    }
    None
}

/// Maps the tags a model writes onto the card's (see the module docs).
#[derive(Debug, Clone)]
pub struct TagMapper {
    emotions: Vec<String>,
    actions: Vec<String>,
}

/// Words models write for a feeling or gesture, and the tags to try for them, in order.
const SYNONYMS: &[(&[&str], &[&str])] = &[
    (
        &[
            "smile",
            "smiling",
            "joy",
            "joyful",
            "cheerful",
            "glad",
            "grin",
            "grinning",
            "beam",
            "beaming",
            "happily",
            "delighted",
        ],
        &["happy"],
    ),
    (
        &["excitement", "excitedly", "thrilled", "hype", "hyped"],
        &["excited", "happy"],
    ),
    (
        &[
            "giggle",
            "giggling",
            "chuckle",
            "chuckling",
            "haha",
            "lol",
            "laughter",
            "laughing",
        ],
        &["laugh", "happy"],
    ),
    (
        &[
            "blush",
            "blushing",
            "embarrassed",
            "flustered",
            "bashful",
            "shyly",
        ],
        &["shy", "happy"],
    ),
    (
        &[
            "sigh", "sighing", "cry", "crying", "sob", "sobbing", "tear", "tears", "sadly", "pout",
            "pouting",
        ],
        &["sad"],
    ),
    (
        &[
            "gasp", "gasping", "shock", "shocked", "wow", "amazed", "surprise",
        ],
        &["surprised"],
    ),
    (
        &["mad", "annoyed", "angrily", "grumpy", "huff", "hmph"],
        &["angry"],
    ),
    (
        &[
            "calm", "content", "sleepy", "yawn", "yawning", "relax", "chill",
        ],
        &["relaxed", "neutral"],
    ),
    (
        &[
            "hmm",
            "ponder",
            "pondering",
            "thinking",
            "wonder",
            "curious",
        ],
        &["think"],
    ),
    (&["cheer", "cheering", "applause", "clapping"], &["clap"]),
    (&["love", "hearts", "kiss", "hug"], &["heart", "happy"]),
    (&["bowing"], &["bow"]),
    (&["nodding", "agree"], &["nod"]),
    (&["waving", "hello", "hi", "bye"], &["wave"]),
    (&["winking"], &["wink"]),
    (
        &["shake", "shakes_head", "shaking_head", "headshake", "no"],
        &["shake_head"],
    ),
];

impl TagMapper {
    pub fn new(card: &PersonaCard) -> Self {
        TagMapper {
            emotions: card.emotions.clone(),
            actions: card.actions.clone(),
        }
    }

    /// The tag to write for `open` + `inner` + its close, or `None` to drop it.
    pub fn map(&self, open: char, inner: &str) -> Option<String> {
        let (name_part, intensity) = match inner.split_once(':') {
            Some((n, i)) => (n, Some(i.trim())),
            None => (inner, None),
        };
        let raw = name_part.trim().trim_end_matches('/').trim().to_lowercase();
        if open == '<' && raw.starts_with("break") {
            return Some(format!("<{inner}>"));
        }
        let name = raw.replace([' ', '-'], "_");
        let emotion = |n: &str| {
            self.emotions
                .iter()
                .any(|e| e == n)
                .then(|| match intensity {
                    Some(i) if i.parse::<f32>().is_ok() && open == '[' => format!("[{n}:{i}]"),
                    _ => format!("[{n}]"),
                })
        };
        let action = |n: &str| {
            self.actions
                .iter()
                .any(|a| a == n)
                .then(|| format!("<{n}>"))
        };
        let either = |n: &str| {
            if open == '<' {
                action(n).or_else(|| emotion(n))
            } else {
                emotion(n).or_else(|| action(n))
            }
        };
        if let Some(t) = either(&name) {
            return Some(t);
        }
        // "laughs", "waves", "nodded", "winking": the stem.
        for suffix in ["ing", "es", "ed", "s", "ly"] {
            if let Some(stem) = name.strip_suffix(suffix)
                && stem.len() >= 3
            {
                for s in [stem.to_string(), format!("{stem}e")] {
                    if let Some(t) = either(&s) {
                        return Some(t);
                    }
                }
            }
        }
        // First word of a phrase ("waves happily", "shakes head").
        let words: Vec<&str> = name.split('_').filter(|w| !w.is_empty()).collect();
        for (names, targets) in SYNONYMS {
            let hit = names.contains(&name.as_str())
                || words.iter().any(|w| names.contains(w))
                || words.first().is_some_and(|w| {
                    ["s", "es", "ed", "ing"].iter().any(|suf| {
                        w.strip_suffix(suf)
                            .is_some_and(|st| names.contains(&st) || targets.contains(&st))
                    })
                });
            if hit {
                for t in *targets {
                    if let Some(tag) = either(t) {
                        return Some(tag);
                    }
                }
            }
        }
        if words.len() > 1 {
            for w in &words {
                if let Some(t) = self.map(open, w) {
                    return Some(t);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> PersonaCard {
        let mut c = PersonaCard::named("Mika");
        c.description = "a cheerful virtual idol who streams from her cozy pastel room.".into();
        c.emotions = ["neutral", "happy", "excited", "sad", "surprised", "shy"]
            .map(String::from)
            .to_vec();
        c.actions = ["wave", "nod", "laugh", "wink", "shake_head"]
            .map(String::from)
            .to_vec();
        c
    }

    fn run(rules: &ShapeRules, pieces: &[&str]) -> (String, Option<Cut>, usize) {
        let mut s = rules.shaper();
        let mut out = String::new();
        for (k, p) in pieces.iter().enumerate() {
            let (t, stop) = s.push(p);
            out.push_str(&t);
            if stop {
                return (out, s.cut(), k + 1);
            }
        }
        out.push_str(&s.finish());
        (out, s.cut(), pieces.len())
    }

    fn pieces(s: &str) -> Vec<String> {
        // word-ish pieces, as tokens arrive
        let mut v = vec![];
        let mut cur = String::new();
        for c in s.chars() {
            if (c == ' ' || c == '\n') && !cur.is_empty() {
                v.push(std::mem::take(&mut cur));
            }
            cur.push(c);
        }
        v.push(cur);
        v
    }

    fn shape(rules: &ShapeRules, text: &str) -> (String, Option<Cut>, usize) {
        let p = pieces(text);
        let refs: Vec<&str> = p.iter().map(String::as_str).collect();
        run(rules, &refs)
    }

    #[test]
    fn cuts_other_speakers_and_newlines_and_stops_early() {
        let rules = ShapeRules::new(&card(), "", ShapeConfig::default());
        let (t, cut, n) = shape(
            &rules,
            "Mika: [happy] Hi there!\nViewer says: more text here and more",
        );
        assert_eq!(t, "[happy] Hi there!");
        assert_eq!(cut, Some(Cut::Newline));
        assert!(n < 8, "decoding went on for {n} pieces");
        let (t, cut, _) = shape(&rules, "Sure thing! Viewer: what about you? I like it.");
        assert_eq!(t, "Sure thing!");
        assert_eq!(cut, Some(Cut::Speaker));
        let (t, _, _) = shape(&rules, "I love it! Mike: me too");
        assert_eq!(t, "I love it!");
    }

    #[test]
    fn budget_stops_at_the_third_sentence() {
        let rules = ShapeRules::new(&card(), "", ShapeConfig::default());
        let (t, cut, n) = shape(
            &rules,
            "One two. Three four! Five six? Seven eight. Nine ten.",
        );
        assert_eq!(t, "One two. Three four! Five six?");
        assert_eq!(cut, Some(Cut::Budget));
        assert_eq!(n, 6);
        let long = "word ".repeat(60);
        // streamed: the words already released stay; the reply stops at the 40th word
        let (t, cut, _) = shape(&rules, &format!("Hi there. {long}"));
        assert_eq!(t, format!("Hi there. {}", vec!["word"; 38].join(" ")));
        assert_eq!(cut, Some(Cut::Budget));
        // arriving at once: it ends with the last whole sentence
        let whole = format!("Hi there. {long}");
        assert_eq!(run(&rules, &[whole.as_str()]).0, "Hi there.");
        let (t, _, _) = shape(&rules, "It is 3.5 stars. Nice.");
        assert_eq!(t, "It is 3.5 stars. Nice.");
        let (t, _, _) = shape(&rules, "你好！我是Mika。很高兴见到你！还有一句。");
        assert_eq!(t, "你好！我是Mika。很高兴见到你！");
    }

    #[test]
    fn card_copy_is_cut() {
        let c = card();
        let rules = ShapeRules::new(
            &c,
            "Answer in one to three short sentences.",
            ShapeConfig::default(),
        );
        let (t, cut, _) = shape(
            &rules,
            "[happy] Hello! I'm a cheerful virtual idol who streams from my room.",
        );
        assert_eq!(t, "[happy] Hello! I'm");
        assert_eq!(cut, Some(Cut::CardCopy));
        let (t, _, _) = shape(
            &rules,
            "You're Mika, a cheerful virtual idol who streams all day",
        );
        assert_eq!(t, "You're Mika,");
    }

    #[test]
    fn tags_are_mapped_or_dropped() {
        let rules = ShapeRules::new(&card(), "", ShapeConfig::default());
        let (t, _, _) = run(
            &rules,
            &[
                "[la",
                "ughs] Oh ",
                "no! [wink",
                "] <hap",
                "py> *blushes* ok [dance] <break time=\"1s\"/>",
            ],
        );
        assert_eq!(
            t,
            "<laugh> Oh no! <wink> [happy] [shy] ok <break time=\"1s\"/>"
        );
        // a repeated tag and a dropped one leave one space; a stray label colon goes
        let (t, _, _) = shape(&rules, ": [happy] [happy] I can! [dance] Watch.");
        assert_eq!(t, "[happy] I can! Watch.");
        let m = TagMapper::new(&card());
        assert_eq!(m.map('[', "happy:0.5").as_deref(), Some("[happy:0.5]"));
        assert_eq!(m.map('<', "waves").as_deref(), Some("<wave>"));
        assert_eq!(m.map('<', "shakes head").as_deref(), Some("<shake_head>"));
        assert_eq!(m.map('[', "smiling").as_deref(), Some("[happy]"));
        assert_eq!(m.map('[', "xyz"), None);
        // prose with a lone asterisk passes
        let (t, _, _) = shape(&rules, "5 * 3 is fifteen");
        assert_eq!(t, "5  3 is fifteen");
    }

    #[test]
    fn result_does_not_depend_on_piece_cuts() {
        let rules = ShapeRules::new(&card(), "", ShapeConfig::default());
        let text = "Mika: [happy] Oh, welcome welcome! <waves> I'm so glad. Come again?\nann: hi";
        let whole = run(&rules, &[text]).0;
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(&rules, &refs).0, whole);
        assert_eq!(
            whole,
            "[happy] Oh, welcome welcome! <wave> I'm so glad. Come again?"
        );
    }
}
