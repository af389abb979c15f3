//! Segmentation into sentences and clauses, whole or incrementally as an LLM streams text, so the first
//! clause of a reply can be spoken before the sentence ends.
//!
//! Algorithm. A boundary is a run of punctuation followed by whitespace (or the end of the text): a
//! run containing `. ! ? …` ends a sentence, one of `, ; : —` ends a clause. The full-width marks
//! of Chinese and Japanese (`。 ！ ？` end a sentence, `， 、 ； ：` a clause) need no whitespace after
//! them, and a clause of four CJK characters is long enough to stand alone. Closing quotes and
//! brackets directly after the run belong to it. A period after a title abbreviation (*Dr.*, *Mr.*,
//! *St.*, *vs.*, *e.g.*) or a single letter (an initial) is not a boundary; neither is punctuation
//! inside a token (*2,500*, *3.14*, *10:30*) because no whitespace follows it. A clause boundary is
//! skipped while the clause has fewer than [`SegmenterConfig::min_clause_words`] words (*Oh, hi there*
//! stays whole), and a clause that reaches [`SegmenterConfig::max_clause_words`] words without
//! punctuation is cut at the next space.
//!
//! [`ClauseSegmenter`] does the same on streamed pieces: it keeps the unreleased tail of the text and
//! releases a clause as soon as the whitespace after its boundary arrives. The result never depends on
//! where the pieces were cut. [`ClauseStream`] puts the streaming [`TagParser`] in front, so cues pulled
//! out of the text arrive attached to the clause they occur in. Offsets are bytes in the clean text
//! (tags removed) of the whole stream.
//!
//! Threading: segmenters are plain state owned by one stream.

use super::normalize::is_title_abbreviation;
use super::tags::{TagEvent, TagParser, TextCue};

/// What ended a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// `, ; : —` (the mark is the first of the run).
    Clause(char),
    /// `. ! ? …` (the strongest mark of the run: `?`, then `!`, then `…`, then `.`).
    Sentence(char),
    /// Cut because the clause grew too long.
    Length,
    /// The text ended without punctuation.
    End,
}

impl Boundary {
    pub fn ends_sentence(self) -> bool {
        matches!(self, Boundary::Sentence(_) | Boundary::End)
    }
}

/// A sentence or clause: its text (trimmed, punctuation included) and its byte span in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub boundary: Boundary,
}

/// Tuning for clause splitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// Split at sentence boundaries only.
    pub sentences_only: bool,
    /// A clause boundary needs at least this many words before it.
    pub min_clause_words: usize,
    /// Cut a clause without punctuation after this many words.
    pub max_clause_words: usize,
    /// Streaming only: release a clause at `,` `!` `?` directly after a letter as soon as the mark
    /// arrives, instead of waiting for the whitespace after it (one LLM token sooner). A mark that
    /// turns out to start a run (`!!`, `?!`) or to be followed by a closing quote leaves that rest
    /// to the next clause, where it has no word and is dropped by the clause's user; inside an open
    /// quote or bracket the segmenter still waits.
    pub eager: bool,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            sentences_only: false,
            min_clause_words: 2,
            max_clause_words: 40,
            eager: false,
        }
    }
}

fn is_sentence_mark(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？' | '．')
}

fn is_clause_mark(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | '—' | '–' | '，' | '、' | '；' | '：')
}

/// Full-width marks (Chinese, Japanese): they end a clause without a space after them.
fn is_full_width_mark(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '．' | '，' | '、' | '；' | '：')
}

/// CJK characters in `s` (a clause of them needs no spaces to be long enough).
fn cjk_chars(s: &str) -> usize {
    s.chars()
        .filter(|c| {
            matches!(c, '\u{3040}'..='\u{30FF}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{AC00}'..='\u{D7AF}')
        })
        .count()
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | ')' | ']' | '}' | '»')
}

fn word_count(s: &str) -> usize {
    s.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count()
}

/// The word directly before byte `i` (letters, digits and inner periods), lowercased.
fn word_before(s: &str, i: usize) -> String {
    let head = &s[..i];
    let start = head
        .rfind(|c: char| c.is_whitespace() || is_leading(c))
        .map(|p| p + head[p..].chars().next().map_or(1, char::len_utf8))
        .unwrap_or(0);
    head[start..].to_lowercase()
}

fn is_leading(c: char) -> bool {
    matches!(c, '"' | '\'' | '“' | '‘' | '(' | '[')
}

/// Whether a run of `marks` at the end of the buffer may end a clause before the next piece arrives
/// ([`SegmenterConfig::eager`]): only `,` `!` `?` right after a letter, outside quotes and brackets.
fn eager_cut(buf: &str, seg_start: usize, run_start: usize, marks: &str) -> bool {
    let seg = &buf[seg_start..run_start];
    let count = |c: char| seg.chars().filter(|x| *x == c).count();
    marks.chars().all(|m| matches!(m, ',' | '!' | '?'))
        && seg.chars().next_back().is_some_and(char::is_alphabetic)
        && count('"').is_multiple_of(2)
        && count('(') == count(')')
        && count('“') == count('”')
}

/// Result of scanning for the next boundary in `buf` from `from`.
enum Scan {
    /// Boundary: segment ends at `end` (exclusive); the rest starts at `rest`.
    Found {
        end: usize,
        rest: usize,
        boundary: Boundary,
    },
    /// No boundary yet; scanning may resume from `resume` when more text arrives.
    Wait { resume: usize },
}

fn scan(buf: &str, from: usize, seg_start: usize, cfg: &SegmenterConfig, final_: bool) -> Scan {
    let bytes_len = buf.len();
    let mut iter = buf[from..]
        .char_indices()
        .map(|(i, c)| (i + from, c))
        .peekable();
    let mut words_seen = word_count(&buf[seg_start..from]);
    let mut in_word = from > seg_start
        && buf[..from]
            .chars()
            .next_back()
            .is_some_and(|c| !c.is_whitespace());
    while let Some((i, c)) = iter.next() {
        if c.is_whitespace() {
            if in_word {
                in_word = false;
                if words_seen >= cfg.max_clause_words && !cfg.sentences_only {
                    return Scan::Found {
                        end: i,
                        rest: i + c.len_utf8(),
                        boundary: Boundary::Length,
                    };
                }
            }
            continue;
        }
        if !in_word && c.is_alphanumeric() {
            words_seen += 1;
        }
        in_word = true;
        if !(is_sentence_mark(c) || is_clause_mark(c)) {
            continue;
        }
        // A punctuation run: marks, then closers.
        let run_start = i;
        let mut end = i + c.len_utf8();
        let mut marks = String::from(c);
        while let Some(&(j, d)) = iter.peek() {
            if is_sentence_mark(d) || is_clause_mark(d) {
                marks.push(d);
                end = j + d.len_utf8();
                iter.next();
            } else {
                break;
            }
        }
        while let Some(&(j, d)) = iter.peek() {
            if is_closer(d) {
                end = j + d.len_utf8();
                iter.next();
            } else {
                break;
            }
        }
        let dash = marks.chars().all(|m| m == '—' || m == '–');
        let full_width = marks.chars().any(is_full_width_mark);
        let followed = match iter.peek() {
            Some(&(_, d)) => d.is_whitespace() || dash || full_width,
            None => {
                if final_
                    || full_width
                    || (dash && end < bytes_len)
                    || (cfg.eager && eager_cut(buf, seg_start, run_start, &marks))
                {
                    true
                } else {
                    return Scan::Wait { resume: run_start };
                }
            }
        };
        if !followed {
            continue;
        }
        let sentence = marks.chars().any(is_sentence_mark);
        if sentence && marks == "." {
            let w = word_before(buf, run_start);
            let w = w.trim_end_matches('.');
            let initial = w.chars().count() == 1 && w.chars().all(char::is_alphabetic);
            if is_title_abbreviation(w) || initial {
                continue;
            }
        }
        let boundary = if sentence {
            let m = if marks.contains('?') || marks.contains('？') {
                '?'
            } else if marks.contains('!') || marks.contains('！') {
                '!'
            } else if marks.contains('…') || marks.contains("..") {
                '…'
            } else {
                '.'
            };
            Boundary::Sentence(m)
        } else {
            let seg = &buf[seg_start..end];
            if cfg.sentences_only || (word_count(seg) < cfg.min_clause_words && cjk_chars(seg) < 4)
            {
                continue;
            }
            Boundary::Clause(marks.chars().next().unwrap_or(','))
        };
        return Scan::Found {
            end,
            rest: end,
            boundary,
        };
    }
    Scan::Wait { resume: bytes_len }
}

/// Incremental clause segmenter; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct ClauseSegmenter {
    cfg: SegmenterConfig,
    buf: String,
    /// Stream offset of `buf[0]`.
    base: usize,
    /// Where to resume scanning in `buf`.
    resume: usize,
}

impl ClauseSegmenter {
    pub fn new(cfg: SegmenterConfig) -> Self {
        ClauseSegmenter {
            cfg,
            ..Default::default()
        }
    }

    /// Feeds one piece; returns the clauses it completed.
    pub fn push(&mut self, piece: &str) -> Vec<Segment> {
        self.buf.push_str(piece);
        self.drain(false)
    }

    /// Ends the stream; returns the remaining clause, if it has any text.
    pub fn finish(&mut self) -> Vec<Segment> {
        let mut out = self.drain(true);
        let text = self.buf.trim();
        if !text.is_empty() {
            let lead = self.buf.len() - self.buf.trim_start().len();
            out.push(Segment {
                text: text.to_string(),
                start: self.base + lead,
                end: self.base + lead + text.len(),
                boundary: Boundary::End,
            });
        }
        self.base += self.buf.len();
        self.buf.clear();
        self.resume = 0;
        out
    }

    fn drain(&mut self, final_: bool) -> Vec<Segment> {
        let mut out = Vec::new();
        loop {
            let lead = self.buf.len() - self.buf.trim_start().len();
            let from = self.resume.max(lead);
            match scan(&self.buf, from, lead, &self.cfg, final_) {
                Scan::Found {
                    end,
                    rest,
                    boundary,
                } => {
                    let text = self.buf[lead..end].trim_end().to_string();
                    if !text.is_empty() {
                        out.push(Segment {
                            start: self.base + lead,
                            end: self.base + lead + text.len(),
                            text,
                            boundary,
                        });
                    }
                    self.buf.drain(..rest);
                    self.base += rest;
                    self.resume = 0;
                }
                Scan::Wait { resume } => {
                    self.resume = resume;
                    return out;
                }
            }
        }
    }
}

/// Splits a whole text into clauses (default config).
pub fn split_clauses(text: &str) -> Vec<Segment> {
    split_with(text, SegmenterConfig::default())
}

impl SegmenterConfig {
    /// Whole sentences, however long (what the offline paths speak: `idol say`, scripts).
    pub fn sentences() -> Self {
        SegmenterConfig {
            sentences_only: true,
            max_clause_words: usize::MAX,
            ..SegmenterConfig::default()
        }
    }
}

/// Splits a whole text into sentences.
pub fn split_sentences(text: &str) -> Vec<Segment> {
    split_with(text, SegmenterConfig::sentences())
}

fn split_with(text: &str, cfg: SegmenterConfig) -> Vec<Segment> {
    let mut s = ClauseSegmenter::new(cfg);
    let mut out = s.push(text);
    out.extend(s.finish());
    out
}

/// A clause of a streamed reply with the cues that occur in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub segment: Segment,
    /// Cues in this clause; `at` is relative to `segment.start` (0 for cues just before the clause).
    pub cues: Vec<TextCue>,
}

/// Tag parser + clause segmenter over streamed LLM text.
#[derive(Debug, Clone, Default)]
pub struct ClauseStream {
    tags: TagParser,
    seg: ClauseSegmenter,
    cues: Vec<TextCue>,
}

impl ClauseStream {
    pub fn new(cfg: SegmenterConfig) -> Self {
        ClauseStream {
            seg: ClauseSegmenter::new(cfg),
            ..Default::default()
        }
    }

    /// Feeds one streamed piece (tags may be split anywhere); returns the clauses it completed.
    pub fn push(&mut self, piece: &str) -> Vec<Clause> {
        let events = self.tags.push(piece);
        self.feed(events, false)
    }

    /// Ends the stream. Cues after the last text come in a final clause with empty text.
    pub fn finish(&mut self) -> Vec<Clause> {
        let events = self.tags.finish();
        self.feed(events, true)
    }

    fn feed(&mut self, events: Vec<TagEvent>, final_: bool) -> Vec<Clause> {
        let mut segments = Vec::new();
        for e in events {
            match e {
                TagEvent::Text(t) => segments.extend(self.seg.push(&t)),
                TagEvent::Cue(c) => self.cues.push(c),
            }
        }
        if final_ {
            segments.extend(self.seg.finish());
        }
        let mut out: Vec<Clause> = segments
            .into_iter()
            .map(|segment| {
                let split = self.cues.partition_point(|c| c.at < segment.end);
                let cues = self
                    .cues
                    .drain(..split)
                    .map(|mut c| {
                        c.at = c.at.saturating_sub(segment.start);
                        c
                    })
                    .collect();
                Clause { segment, cues }
            })
            .collect();
        if final_ && !self.cues.is_empty() {
            let at = self.tags.offset();
            let cues = self
                .cues
                .drain(..)
                .map(|mut c| {
                    c.at = 0;
                    c
                })
                .collect();
            out.push(Clause {
                segment: Segment {
                    text: String::new(),
                    start: at,
                    end: at,
                    boundary: Boundary::End,
                },
                cues,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: &[Segment]) -> Vec<&str> {
        v.iter().map(|s| s.text.as_str()).collect()
    }

    #[test]
    fn sentences() {
        let s = split_sentences("Hi there! Dr. Smith paid $20.50 at 10:30. Really?! Yes... ok");
        assert_eq!(
            texts(&s),
            [
                "Hi there!",
                "Dr. Smith paid $20.50 at 10:30.",
                "Really?!",
                "Yes...",
                "ok"
            ]
        );
        assert_eq!(s[2].boundary, Boundary::Sentence('?'));
        assert_eq!(s[3].boundary, Boundary::Sentence('…'));
        assert_eq!(s[4].boundary, Boundary::End);
    }

    #[test]
    fn clauses() {
        let c =
            split_clauses("Oh, hi there, welcome back to the stream; we have 2,500 viewers: wow.");
        assert_eq!(
            texts(&c),
            [
                "Oh, hi there,",
                "welcome back to the stream;",
                "we have 2,500 viewers:",
                "wow."
            ]
        );
        assert_eq!(c[0].boundary, Boundary::Clause(','));
    }

    #[test]
    fn full_width_marks_end_clauses_without_spaces() {
        let c = split_clauses("对，我最喜欢吃火锅！你呢？今天好冷、大家注意保暖。");
        assert_eq!(
            texts(&c),
            [
                "对，我最喜欢吃火锅！",
                "你呢？",
                "今天好冷、",
                "大家注意保暖。"
            ]
        );
        assert_eq!(c[0].boundary, Boundary::Sentence('!'));
        // streamed: a clause is out as soon as its mark arrives
        let mut seg = ClauseSegmenter::new(SegmenterConfig::default());
        assert!(seg.push("いらっしゃい").is_empty());
        assert_eq!(texts(&seg.push("！ゆっ")), ["いらっしゃい！"]);
        assert_eq!(texts(&seg.finish()), ["ゆっ"]);
    }

    #[test]
    fn spans_index_the_text() {
        let t = "  First part, second part.  Third \"quoted.\" ";
        for s in split_clauses(t) {
            assert_eq!(&t[s.start..s.end], s.text);
        }
        assert_eq!(split_clauses(t)[2].text, "Third \"quoted.\"");
    }

    #[test]
    fn long_clause_is_cut() {
        let words = vec!["word"; 50].join(" ");
        let c = split_clauses(&words);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].boundary, Boundary::Length);
        assert_eq!(word_count(&c[0].text), 40);
    }

    #[test]
    fn streaming_releases_early() {
        let mut s = ClauseSegmenter::new(SegmenterConfig::default());
        assert!(s.push("Hello every").is_empty());
        assert!(s.push("one,").is_empty());
        let c = s.push(" welcome");
        assert_eq!(texts(&c), ["Hello everyone,"]);
        assert!(s.push(" back").is_empty());
        assert_eq!(texts(&s.finish()), ["welcome back"]);
    }

    /// Eager: `,` `!` `?` after a letter end the clause when they arrive; `.`, `:`, marks after a
    /// digit and marks inside an open quote still wait for what follows.
    #[test]
    fn eager_releases_at_the_mark() {
        let eager = SegmenterConfig {
            eager: true,
            ..SegmenterConfig::default()
        };
        let mut s = ClauseSegmenter::new(eager);
        assert_eq!(texts(&s.push("Hello everyone,")), ["Hello everyone,"]);
        assert_eq!(texts(&s.push(" welcome back!")), ["welcome back!"]);
        assert_eq!(texts(&s.push(" Ready?")), ["Ready?"]);
        assert!(s.push(" It is 2,").is_empty()); // a digit before: maybe 2,500
        assert!(s.push("500 fans.").is_empty()); // a period: maybe an abbreviation
        assert_eq!(texts(&s.push(" Wow")), ["It is 2,500 fans."]);
        assert!(s.push(" \"so cool,").is_empty()); // inside a quote
        assert_eq!(texts(&s.push("\" she said")), ["Wow \"so cool,\""]);
        assert!(s.push(" ok").is_empty()); // fewer than two words before the comma? no: no mark yet
        assert_eq!(texts(&s.finish()), ["she said ok"]);
        // a run split across pieces: the rest of the run has no word
        let mut s = ClauseSegmenter::new(eager);
        assert_eq!(texts(&s.push("No way!")), ["No way!"]);
        assert_eq!(texts(&s.push("! Really")), ["!"]);
        assert_eq!(texts(&s.finish()), ["Really"]);
        // the whole text at once is cut as without `eager`
        for text in ["Hi there, how are you? Fine!", "Wait, what?! No..."] {
            assert_eq!(split_with(text, eager), split_clauses(text));
        }
    }
}
