//! A simple streaming clause splitter, the pipeline's default [`Segmenter`] until the text stage's
//! `ClauseStream` (normalization, abbreviations, numbers) is wired in by an adapter.
//!
//! Algorithm: text is buffered; a clause ends at `.`, `!`, `?`, `;`, `:` or `,` followed by
//! whitespace (or at the end of the reply). Inside a completed clause, `[name]` / `[name:0.8]` become
//! emotion cues and `<name>` / `<name/>` action cues, placed before the next word; the tags are
//! removed from the spoken text. Clauses without a word are dropped (their cues move to the next one).

use super::{ClauseText, Segmenter, WordCue};
use crate::speech::CueKind;

/// See the module docs.
#[derive(Debug, Default, Clone)]
pub struct SimpleSegmenter {
    buf: String,
    carry: Vec<WordCue>,
}

impl SimpleSegmenter {
    pub fn new() -> Self {
        Self::default()
    }

    fn take_clause(&mut self, raw: &str, out: &mut Vec<ClauseText>) {
        let (text, mut cues) = parse_tags(raw);
        let n = text.split_whitespace().count();
        if n == 0 {
            self.carry.extend(cues.into_iter().map(|mut c| {
                c.before_word = 0;
                c
            }));
            return;
        }
        let mut all = std::mem::take(&mut self.carry);
        all.append(&mut cues);
        out.push(ClauseText {
            text,
            cues: all,
            ..ClauseText::default()
        });
    }
}

impl Segmenter for SimpleSegmenter {
    fn push(&mut self, piece: &str) -> Vec<ClauseText> {
        self.buf.push_str(piece);
        let mut out = vec![];
        loop {
            let bytes = self.buf.as_bytes();
            let mut cut = None;
            let mut depth = 0i32;
            for i in 0..bytes.len().saturating_sub(1) {
                match bytes[i] {
                    b'[' | b'<' => depth += 1,
                    b']' | b'>' => depth = (depth - 1).max(0),
                    b'.' | b'!' | b'?' | b';' | b':' | b','
                        if depth == 0 && bytes[i + 1].is_ascii_whitespace() =>
                    {
                        cut = Some(i + 1);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(cut) = cut else { break };
            let raw: String = self.buf.drain(..cut).collect();
            self.take_clause(&raw, &mut out);
        }
        out
    }

    fn finish(&mut self) -> Vec<ClauseText> {
        let raw = std::mem::take(&mut self.buf);
        let mut out = vec![];
        self.take_clause(&raw, &mut out);
        self.carry.clear();
        out
    }
}

/// Remove `[emotion]`, `[emotion:0.5]` and `<action>` tags; return the clean text (single-spaced) and
/// the cues, each placed before the word that follows it.
fn parse_tags(raw: &str) -> (String, Vec<WordCue>) {
    let mut text = String::new();
    let mut cues = vec![];
    let mut rest = raw;
    while let Some(i) = rest.find(['[', '<']) {
        let close = if rest.as_bytes()[i] == b'[' { ']' } else { '>' };
        let Some(j) = rest[i..].find(close).map(|j| i + j) else {
            break;
        };
        text.push_str(&rest[..i]);
        text.push(' ');
        let inner = rest[i + 1..j].trim().trim_end_matches('/').trim();
        let before_word = text.split_whitespace().count();
        let (name, intensity) = match inner.split_once(':') {
            Some((n, v)) => (n.trim(), v.trim().parse::<f32>().unwrap_or(1.0)),
            None => (inner, 1.0),
        };
        if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            cues.push(WordCue {
                before_word,
                at: 0,
                kind: if close == ']' {
                    CueKind::Emotion
                } else {
                    CueKind::Action
                },
                name: name.to_lowercase(),
                intensity: intensity.clamp(0.0, 1.0),
            });
        }
        rest = &rest[j + 1..];
    }
    text.push_str(rest);
    let clean = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let starts = crate::text::utterance::word_starts(&clean);
    for c in &mut cues {
        c.at = starts
            .get(c.before_word)
            .copied()
            .filter(|_| !clean.is_empty())
            .unwrap_or(clean.len());
    }
    (clean, cues)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_streamed_text_into_clauses_with_cues() {
        let mut s = SimpleSegmenter::new();
        let mut got = vec![];
        for piece in [
            "[hap",
            "py] Hello the",
            "re, how are",
            " you? I am <wave> fi",
            "ne",
        ] {
            got.extend(s.push(piece));
        }
        got.extend(s.finish());
        let texts: Vec<&str> = got.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["Hello there,", "how are you?", "I am fine"]);
        assert_eq!(got[0].cues[0].name, "happy");
        assert_eq!(got[0].cues[0].before_word, 0);
        assert_eq!(got[2].cues[0].kind, CueKind::Action);
        assert_eq!(got[2].cues[0].before_word, 2);
    }

    #[test]
    fn numbers_with_commas_and_tag_only_clauses() {
        let mut s = SimpleSegmenter::new();
        let mut got = s.push("It costs 2,500 dollars. [sad:0.5] ");
        got.extend(s.push("Sorry."));
        got.extend(s.finish());
        let texts: Vec<&str> = got.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["It costs 2,500 dollars.", "Sorry."]);
        assert_eq!(got[1].cues[0].intensity, 0.5);
    }
}
