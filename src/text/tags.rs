//! Inline cues in LLM text, pulled out with their positions by a streaming parser.
//!
//! Recognized tags:
//! - `[happy]`, `[sad:0.5]`: an emotion (name, optional intensity 0..=1, default 1);
//! - `<wave>`, `<wave/>`, `<nod:0.5>`: an action; closing tags such as `</wave>` are dropped;
//! - `<break time="300ms"/>`, `<break time='1.5s'/>`, `<break 300ms/>`, `<break/>` (500 ms): a pause.
//!
//! - stage directions, `*waves*`, `*shaking head*`, `(laughs)`: an action when a word in them names
//!   one of the gesture catalogue's actions ([`stage_action`]: wave, nod, shake_head, tilt, wink,
//!   blink, bow, laugh, clap, think, heart, shrug, gasp, sigh, pout), else dropped; either way never
//!   spoken nor captioned.
//!
//! Anything else that starts with `[` or `<` (`a < b`, `<3`, `[1]`, a tag longer than
//! [`MAX_TAG_LEN`] bytes or broken by a newline) is ordinary text and passes through unchanged.
//!
//! Algorithm. [`TagParser::push`] takes pieces of text as an LLM streams them, cut anywhere (even inside
//! a tag or a UTF-8 character's neighbourhood: pieces are `&str`, so characters are whole). Outside a tag
//! it copies characters to the output; at `[` or `<` it starts buffering. The buffer is released as
//! text the moment it can no longer become a tag (a character not allowed in a tag, too long), or
//! parsed when the closing `]`/`>` arrives. Each cue is stamped with the byte offset in the clean output
//! text (the concatenation of all [`TagEvent::Text`] pieces) where it occurs, so a cue between two
//! words lands between them whatever the chunking. [`TagParser::finish`] flushes an unterminated tag as
//! text.
//!
//! Threading: a parser is plain state owned by one stream.

/// The longest tag, in bytes, before the parser gives up and treats it as text.
pub const MAX_TAG_LEN: usize = 64;

/// Default length of `<break/>` without a time.
pub const DEFAULT_BREAK_MS: u32 = 500;

/// What an inline tag asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum CueEvent {
    /// A mood that lasts until the next emotion (`[happy]`).
    Emotion { name: String, intensity: f32 },
    /// A one-shot gesture (`<wave>`).
    Action { name: String, intensity: f32 },
    /// A pause in speech (`<break time="300ms"/>`).
    Break { millis: u32 },
}

/// A cue at a position in the clean text (byte offset into the text with all tags removed).
#[derive(Debug, Clone, PartialEq)]
pub struct TextCue {
    pub at: usize,
    pub event: CueEvent,
}

impl TextCue {
    /// The timeline cue for an emotion or action placed at `at` (breaks are not [`crate::speech::Cue`]s:
    /// the voice turns them into silence).
    pub fn to_cue(&self, at: crate::time::SampleTime) -> Option<crate::speech::Cue> {
        use crate::speech::{Cue, CueKind};
        match &self.event {
            CueEvent::Emotion { name, intensity } => Some(Cue {
                kind: CueKind::Emotion,
                name: name.clone(),
                intensity: *intensity,
                at,
            }),
            CueEvent::Action { name, intensity } => Some(Cue {
                kind: CueKind::Action,
                name: name.clone(),
                intensity: *intensity,
                at,
            }),
            CueEvent::Break { .. } => None,
        }
    }
}

/// One output of the parser.
#[derive(Debug, Clone, PartialEq)]
pub enum TagEvent {
    Text(String),
    Cue(TextCue),
}

/// Streaming tag parser; see the module docs.
#[derive(Debug, Default, Clone)]
pub struct TagParser {
    /// Bytes of clean text emitted so far.
    offset: usize,
    /// A possible tag being collected, starting with `[`, `<`, `*` or `(`.
    pending: String,
}

impl TagParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of clean text emitted so far.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Feeds one piece of streamed text; returns text and cues in order.
    pub fn push(&mut self, piece: &str) -> Vec<TagEvent> {
        let mut out = Vec::new();
        let mut text = String::new();
        for c in piece.chars() {
            self.step(c, &mut text, &mut out);
        }
        self.flush_text(&mut text, &mut out);
        out
    }

    /// Ends the stream: an unterminated tag is text.
    pub fn finish(&mut self) -> Vec<TagEvent> {
        let mut out = Vec::new();
        let mut text = std::mem::take(&mut self.pending);
        self.flush_text(&mut text, &mut out);
        out
    }

    /// Parses a whole string at once: clean text and cues.
    pub fn parse_all(text: &str) -> (String, Vec<TextCue>) {
        let mut p = TagParser::new();
        let mut events = p.push(text);
        events.extend(p.finish());
        let mut clean = String::new();
        let mut cues = Vec::new();
        for e in events {
            match e {
                TagEvent::Text(t) => clean.push_str(&t),
                TagEvent::Cue(c) => cues.push(c),
            }
        }
        (clean, cues)
    }

    /// The total length of the `<break/>`s in `text`, in milliseconds (what a budget counts before
    /// anything is spoken).
    pub fn break_millis(text: &str) -> u64 {
        TagParser::parse_all(text)
            .1
            .iter()
            .map(|c| match c.event {
                CueEvent::Break { millis } => u64::from(millis),
                _ => 0,
            })
            .sum()
    }

    fn flush_text(&mut self, text: &mut String, out: &mut Vec<TagEvent>) {
        if !text.is_empty() {
            self.offset += text.len();
            out.push(TagEvent::Text(std::mem::take(text)));
        }
    }

    fn step(&mut self, c: char, text: &mut String, out: &mut Vec<TagEvent>) {
        if self.pending.is_empty() {
            if matches!(c, '[' | '<' | '*' | '(') {
                self.pending.push(c);
            } else {
                text.push(c);
            }
            return;
        }
        let close = match self.pending.as_bytes()[0] {
            b'[' => ']',
            b'<' => '>',
            b'*' => '*',
            _ => ')',
        };
        let stage = matches!(self.pending.as_bytes()[0], b'*' | b'(');
        if c == close {
            self.pending.push(c);
            let tag = std::mem::take(&mut self.pending);
            match parse_tag(&tag) {
                Some(event) => {
                    self.flush_text(text, out);
                    if let Some(event) = event {
                        out.push(TagEvent::Cue(TextCue {
                            at: self.offset,
                            event,
                        }));
                    }
                }
                None => text.push_str(&tag),
            }
            return;
        }
        let allowed = if stage { stage_char(c) } else { tag_char(c) };
        if !allowed || self.pending.len() + c.len_utf8() >= MAX_TAG_LEN {
            // Not a tag after all: release what was held, then reconsider `c` from scratch.
            let held = std::mem::take(&mut self.pending);
            text.push_str(&held);
            self.step(c, text, out);
            return;
        }
        self.pending.push(c);
    }
}

/// Characters a stage direction may contain between its `*`s or parentheses (letters of any script,
/// so `(笑)` is one too; no digits, so `2 * 3 * 4` and `(1)` stay text).
fn stage_char(c: char) -> bool {
    c.is_alphabetic() || matches!(c, ' ' | '\'' | '-' | ',' | '.' | '!' | '~')
}

/// The action a stage direction names (`waves` → `wave`, `shaking her head` → `shake_head`,
/// `giggles softly` → `laugh`): the first word that is a form of a known gesture verb. `None` for
/// anything else (`looks away`, `smiles`), which is dropped from speech without a cue.
pub fn stage_action(direction: &str) -> Option<&'static str> {
    const VERBS: [(&str, &str); 20] = [
        ("wave", "wave"),
        ("nod", "nod"),
        ("shake", "shake_head"),
        ("tilt", "tilt"),
        ("wink", "wink"),
        ("blink", "blink"),
        ("bow", "bow"),
        ("laugh", "laugh"),
        ("giggle", "laugh"),
        ("chuckle", "laugh"),
        ("clap", "clap"),
        ("applaud", "clap"),
        ("think", "think"),
        ("ponder", "think"),
        ("heart", "heart"),
        ("hmm", "think"),
        ("shrug", "shrug"),
        ("gasp", "gasp"),
        ("sigh", "sigh"),
        ("pout", "pout"),
    ];
    // `word` is a form of `verb`: verb, verbs, verbed, verbing, with a final e dropped (waving) or
    // the last consonant doubled (nodding).
    let form_of = |word: &str, verb: &str| match verb.strip_suffix('e') {
        Some(stem) => word
            .strip_prefix(stem)
            .is_some_and(|rest| ["e", "es", "ed", "ing", "ings"].contains(&rest)),
        None => word.strip_prefix(verb).is_some_and(|rest| {
            let last = &verb[verb.len() - 1..];
            ["", "s", "ed", "ing", "ings"].contains(&rest)
                || rest
                    .strip_prefix(last)
                    .is_some_and(|r| ["ed", "ing"].contains(&r))
        }),
    };
    direction
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .find_map(|w| {
            VERBS
                .iter()
                .find(|(verb, _)| form_of(&w, verb))
                .map(|&(_, action)| action)
        })
}

/// Characters a tag may contain between its brackets.
fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '/' | ' ' | '=' | '"' | '\'')
}

fn parse_intensity(s: &str) -> Option<f32> {
    let v: f32 = s.trim().parse().ok()?;
    v.is_finite().then_some(v.clamp(0.0, 1.0))
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn name_and_intensity(body: &str) -> Option<(String, f32)> {
    let (name, intensity) = match body.split_once(':') {
        Some((n, i)) => (n.trim(), parse_intensity(i)?),
        None => (body.trim(), 1.0),
    };
    valid_name(name).then(|| (name.to_ascii_lowercase(), intensity))
}

fn parse_duration_ms(s: &str) -> Option<u32> {
    let s = s.trim().trim_matches(|c| c == '"' || c == '\'');
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    let ms = (v.is_finite() && v >= 0.0).then_some((v * scale).round())?;
    if ms > MAX_BREAK_MS {
        log::warn!(
            "a break of {s} is longer than the longest break ({} s): it is cut to that",
            MAX_BREAK_MS / 1000.0
        );
    }
    Some(ms.min(MAX_BREAK_MS) as u32)
}

/// The longest `<break/>`: a minute of silence.
const MAX_BREAK_MS: f64 = 60_000.0;

/// A complete bracketed tag → `Some(Some(event))` for a cue, `Some(None)` for a tag that is dropped
/// (closing tags), `None` for text that only looked like a tag.
fn parse_tag(tag: &str) -> Option<Option<CueEvent>> {
    let stage = tag
        .strip_prefix('*')
        .and_then(|t| t.strip_suffix('*'))
        .or_else(|| tag.strip_prefix('(').and_then(|t| t.strip_suffix(')')));
    if let Some(direction) = stage {
        // `**` (markdown bold) and `()` are empty: dropped. A direction naming a gesture is its cue.
        return Some(stage_action(direction).map(|name| CueEvent::Action {
            name: name.to_string(),
            intensity: 1.0,
        }));
    }
    if let Some(body) = tag.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let (name, intensity) = name_and_intensity(body)?;
        return Some(Some(CueEvent::Emotion { name, intensity }));
    }
    let body = tag.strip_prefix('<')?.strip_suffix('>')?;
    if let Some(closing) = body.strip_prefix('/') {
        return valid_name(closing.trim()).then_some(None);
    }
    let body = body.strip_suffix('/').unwrap_or(body).trim();
    if body.eq_ignore_ascii_case("break") {
        return Some(Some(CueEvent::Break {
            millis: DEFAULT_BREAK_MS,
        }));
    }
    if let Some(rest) = body
        .strip_prefix("break ")
        .or_else(|| body.strip_prefix("BREAK "))
    {
        let rest = rest.trim();
        let value = match rest.split_once('=') {
            Some((key, v)) if key.trim().eq_ignore_ascii_case("time") => v,
            Some(_) => return None,
            None => rest,
        };
        return parse_duration_ms(value).map(|millis| Some(CueEvent::Break { millis }));
    }
    let (name, intensity) = name_and_intensity(body)?;
    Some(Some(CueEvent::Action { name, intensity }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emotion(at: usize, name: &str, intensity: f32) -> TextCue {
        TextCue {
            at,
            event: CueEvent::Emotion {
                name: name.into(),
                intensity,
            },
        }
    }

    #[test]
    fn whole_string() {
        let (text, cues) = TagParser::parse_all("[happy] Hi <wave> there!");
        assert_eq!(text, " Hi  there!");
        assert_eq!(cues[0], emotion(0, "happy", 1.0));
        assert_eq!(
            cues[1],
            TextCue {
                at: 4,
                event: CueEvent::Action {
                    name: "wave".into(),
                    intensity: 1.0
                }
            }
        );
    }

    #[test]
    fn intensities_and_breaks() {
        let (text, cues) = TagParser::parse_all(
            "a[sad:0.5]b<break time=\"300ms\"/>c<break 1.5s/>d<break/>e<nod:2>f</nod>",
        );
        assert_eq!(text, "abcdef");
        assert_eq!(cues[0], emotion(1, "sad", 0.5));
        assert_eq!(cues[1].event, CueEvent::Break { millis: 300 });
        assert_eq!(cues[1].at, 2);
        assert_eq!(cues[2].event, CueEvent::Break { millis: 1500 });
        assert_eq!(cues[3].event, CueEvent::Break { millis: 500 });
        assert_eq!(
            cues[4].event,
            CueEvent::Action {
                name: "nod".into(),
                intensity: 1.0
            }
        );
        assert_eq!(cues.len(), 5);
    }

    #[test]
    fn lookalikes_stay_text() {
        for s in [
            "a < b and c > d",
            "I <3 you",
            "see [1] and [2]",
            "x<y",
            "[not closed",
            "<break time=\"soon\"/>",
            "[sad:lots]",
        ] {
            let (text, cues) = TagParser::parse_all(s);
            assert_eq!(text, s, "{s:?}");
            assert!(cues.is_empty(), "{s:?}");
        }
    }

    #[test]
    fn overlong_tag_is_text() {
        let s = format!("<{}>", "a".repeat(100));
        let (text, cues) = TagParser::parse_all(&s);
        assert_eq!(text, s);
        assert!(cues.is_empty());
    }

    #[test]
    fn bracket_restarts_inside_failed_tag() {
        let (text, cues) = TagParser::parse_all("a <3 <wave> b");
        assert_eq!(text, "a <3  b");
        assert_eq!(cues.len(), 1);
        assert_eq!(cues[0].at, 5);
    }

    #[test]
    fn stage_directions_become_actions_or_vanish() {
        let (text, cues) = TagParser::parse_all("Hi *waves* there (laughs) okay *looks up* done.");
        assert_eq!(text, "Hi  there  okay  done.");
        let names: Vec<(usize, &str)> = cues
            .iter()
            .map(|c| match &c.event {
                CueEvent::Action { name, .. } => (c.at, name.as_str()),
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(names, [(3, "wave"), (10, "laugh")]);
        for (d, want) in [
            ("shaking head", Some("shake_head")),
            ("shakes her head slowly", Some("shake_head")),
            ("nodding", Some("nod")),
            ("Nods", Some("nod")),
            ("giggles softly", Some("laugh")),
            ("waving excitedly", Some("wave")),
            ("claps", Some("clap")),
            ("clapping", Some("clap")),
            ("bows", Some("bow")),
            ("thinks for a moment", Some("think")),
            ("makes a heart with her hands", Some("heart")),
            ("looks away", None),
            ("bowl", None),
            ("nodes", None),
        ] {
            assert_eq!(stage_action(d), want, "{d}");
        }
        // Not stage directions: arithmetic, numbered notes, markdown bold keeps its words; split
        // across pieces like any tag.
        assert_eq!(TagParser::parse_all("2 * 3 * 4 (1)").0, "2 * 3 * 4 (1)");
        assert_eq!(TagParser::parse_all("a **big** day").0, "a big day");
        let mut p = TagParser::new();
        let mut events = p.push("Sure *wa");
        events.extend(p.push("ves* hi"));
        events.extend(p.finish());
        assert!(
            events
                .iter()
                .any(|e| matches!(e, TagEvent::Cue(c) if c.at == 5))
        );
    }

    #[test]
    fn to_cue_maps_kinds() {
        use crate::speech::CueKind;
        use crate::time::SampleTime;
        let c = emotion(0, "happy", 0.7).to_cue(SampleTime(10)).unwrap();
        assert_eq!(c.kind, CueKind::Emotion);
        assert_eq!(c.at, SampleTime(10));
        let b = TextCue {
            at: 0,
            event: CueEvent::Break { millis: 3 },
        };
        assert!(b.to_cue(SampleTime(0)).is_none());
    }
}
