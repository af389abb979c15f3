//! Tagged text → the clauses to speak, each with its cues on its words and its pauses around it: the
//! one reading of what a persona or a writer wrote, shared by every speaking path (the live stream,
//! `idol say`, scripts), and the one rule that places a clause's cues on its speech.
//!
//! - [`TextSegmenter`]: streamed (or whole) tagged text → [`ClauseText`]s. Emotion and action tags
//!   (and stage directions naming a gesture) become [`WordCue`]s before the word that follows them,
//!   or at the clause's end when no word follows; a `<break time="..."/>` is silence where it is
//!   written: before a clause when it opens it, after one when it closes it, and between two clauses
//!   when it stands between words (the clause is cut there). Pieces without words are dropped and
//!   their cues and breaks carried to the next clause; at the end of the text they come out as a
//!   clause with no text (cues at the end of what was said, then the silence), so no tag is lost.
//! - [`place_cues`]: a spoken clause's cues → [`Cue`]s at the samples of the words they precede
//!   ([`super::cue_sample`]).
//!
//! Threading: plain state owned by one stream.

use super::{Clause, ClauseStream, CueEvent, SegmenterConfig};
use crate::speech::{Cue, CueKind, Word};
use crate::time::{SampleTime, Timed};

/// One clause of text, ready to speak, with the cues that were written inside it. A clause with
/// empty `text` says nothing: its cues go at the end of what its utterance said so far, then its
/// pauses (the tags and breaks written after the last word).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClauseText {
    /// Clean text (tags removed), its words joined by single spaces.
    pub text: String,
    pub cues: Vec<WordCue>,
    /// The breaks written before the clause, in milliseconds, in text order (one per tag).
    pub pause_before: Vec<u32>,
    /// The breaks written inside the clause's end or after it, in milliseconds, in text order.
    pub pause_after: Vec<u32>,
}

impl ClauseText {
    /// Silence before the clause, in milliseconds.
    pub fn pause_before_ms(&self) -> u32 {
        sum(&self.pause_before)
    }
    /// Silence after the clause, in milliseconds.
    pub fn pause_after_ms(&self) -> u32 {
        sum(&self.pause_after)
    }
}

fn sum(ms: &[u32]) -> u32 {
    ms.iter().fold(0u32, |a, &b| a.saturating_add(b))
}

/// A cue inside a clause, placed before the word with index `before_word` (0-based, counted in
/// whitespace-separated words of [`ClauseText::text`]; at or past the end means "at the clause end").
/// `at` is the same place as a byte offset in the text (inside a word when the tag was written
/// inside one, as between two Japanese or Chinese words, which no space separates).
#[derive(Debug, Clone, PartialEq)]
pub struct WordCue {
    pub before_word: usize,
    pub at: usize,
    pub kind: CueKind,
    pub name: String,
    pub intensity: f32,
}

impl WordCue {
    /// The timeline cue at sample `at`.
    pub fn to_cue(&self, at: SampleTime) -> Cue {
        Cue {
            kind: self.kind,
            name: self.name.clone(),
            intensity: self.intensity,
            at,
        }
    }
}

/// The byte offset of each word of `text`, whose words are separated by single spaces (a
/// [`ClauseText::text`]); one offset, 0, for an empty text.
pub fn word_starts(text: &str) -> Vec<usize> {
    text.split(' ')
        .scan(0usize, |o, w| {
            let s = *o;
            *o += w.len() + 1;
            Some(s)
        })
        .collect()
}

/// The cues of `clause`, spoken as speech with `words` (stamped on the speech's own clock, `end`
/// samples long) that starts at `s0`: each at the start of the spoken word it was written before,
/// after the last word at the speech's last sample. Every speaking path places cues with this.
pub fn place_cues(
    clause: &ClauseText,
    words: &[Timed<Word>],
    end: SampleTime,
    s0: SampleTime,
) -> Vec<Cue> {
    clause
        .cues
        .iter()
        .map(|c| {
            let local = super::cue_sample(&clause.text, c.before_word, c.at, words, end);
            c.to_cue(SampleTime(s0.get() + local.get()))
        })
        .collect()
}

/// A piece of an utterance laid out by [`Layout::place`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `n` samples of silence from `at`: one `<break/>` of `millis` milliseconds.
    Pause { at: SampleTime, millis: u32, n: u64 },
    /// The clause's speech, from `at`.
    Speech { at: SampleTime },
}

/// Where one clause's pieces and cues go ([`Layout::place`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Placed {
    pub parts: Vec<Part>,
    pub cues: Vec<Cue>,
}

/// The clauses of one text laid end to end on one clock (sample 0 = the text's start), as an
/// offline speaking path (`idol say`, a script's line) assembles them: each clause's breaks before
/// it, its speech with its cues at their words ([`place_cues`]), its breaks after it. A clause that
/// says nothing (no text, or nothing the voice could speak) puts its cues at the last sample said so
/// far (0 when nothing was), then its silence. The live stream's director follows the same rules on
/// the session timeline. The caller owns the audio: it appends what each [`Part`] says.
#[derive(Debug, Clone)]
pub struct Layout {
    rate: u32,
    len: u64,
}

impl Layout {
    pub fn new(rate: u32) -> Self {
        Layout { rate, len: 0 }
    }

    /// Samples laid out so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn pauses(&mut self, ms: &[u32], parts: &mut Vec<Part>) {
        for &millis in ms {
            let n = SampleTime::from_millis(u64::from(millis), self.rate).get();
            parts.push(Part::Pause {
                at: SampleTime(self.len),
                millis,
                n,
            });
            self.len += n;
        }
    }

    /// Lay out `clause`, spoken as `speech` (`None`: nothing was said for it).
    pub fn place(&mut self, clause: &ClauseText, speech: Option<&crate::speech::Speech>) -> Placed {
        let mut out = Placed::default();
        match speech.filter(|s| !s.pcm.is_empty()) {
            Some(sp) => {
                self.pauses(&clause.pause_before, &mut out.parts);
                let s0 = SampleTime(self.len);
                out.parts.push(Part::Speech { at: s0 });
                let n = sp.pcm.len() as u64;
                out.cues = place_cues(clause, sp.words.items(), SampleTime(n), s0);
                self.len += n;
            }
            None => {
                let at = SampleTime(self.len.saturating_sub(1));
                out.cues = clause.cues.iter().map(|c| c.to_cue(at)).collect();
                self.pauses(&clause.pause_before, &mut out.parts);
            }
        }
        self.pauses(&clause.pause_after, &mut out.parts);
        out
    }
}

/// Streamed tagged text → [`ClauseText`]s (see the module documentation).
pub struct TextSegmenter {
    cfg: SegmenterConfig,
    stream: ClauseStream,
    carry: Vec<WordCue>,
    carry_pause: Vec<u32>,
}

/// One clause of the text stage cut at its inner breaks, before empty pieces are carried.
struct Piece {
    words: Vec<String>,
    cues: Vec<WordCue>,
    before: Vec<u32>,
    after: Vec<u32>,
}

/// Whether a tag written between `a` and `b` (no space between them) stands between two words:
/// in scripts written without spaces (Han, kana), every character boundary is one.
fn unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF // hiragana, katakana
        | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF // Han
        | 0x3000..=0x303F | 0xFF00..=0xFFEF) // CJK punctuation, full-width forms
}

impl TextSegmenter {
    pub fn new(cfg: SegmenterConfig) -> Self {
        TextSegmenter {
            stream: ClauseStream::new(cfg),
            cfg,
            carry: Vec::new(),
            carry_pause: Vec::new(),
        }
    }

    /// The clauses of a whole text (push it, then finish).
    pub fn segment(cfg: SegmenterConfig, text: &str) -> Vec<ClauseText> {
        let mut s = TextSegmenter::new(cfg);
        let mut out = s.push(text);
        out.extend(s.finish());
        out
    }

    /// Feeds one streamed piece (tags may be split anywhere); returns the clauses it completed.
    pub fn push(&mut self, piece: &str) -> Vec<ClauseText> {
        let clauses = self.stream.push(piece);
        self.convert(clauses)
    }

    /// Ends the text; the segmenter is then ready for the next one.
    pub fn finish(&mut self) -> Vec<ClauseText> {
        let clauses = self.stream.finish();
        let mut out = self.convert(clauses);
        // Tags and breaks after the last word: a clause with no text, placed at the end.
        if !self.carry.is_empty() || !self.carry_pause.is_empty() {
            out.push(ClauseText {
                text: String::new(),
                cues: std::mem::take(&mut self.carry),
                pause_before: std::mem::take(&mut self.carry_pause),
                pause_after: Vec::new(),
            });
        }
        self.stream = ClauseStream::new(self.cfg);
        out
    }

    /// Cut one clause of the text stage at the breaks between its words.
    fn pieces(c: &Clause) -> Vec<Piece> {
        let raw = &c.segment.text;
        // Whitespace words with their byte spans in `raw`.
        let spans: Vec<(usize, usize)> = raw
            .split_whitespace()
            .map(|w| {
                let s = w.as_ptr() as usize - raw.as_ptr() as usize;
                (s, s + w.len())
            })
            .collect();
        let n = spans.len();
        // A raw byte offset → (words before it, the word it is inside and how far in).
        let locate = |at: usize| -> (usize, Option<(usize, usize)>) {
            let at = at.min(raw.len());
            let before = spans.partition_point(|&(_, e)| e <= at);
            let inside = spans
                .get(before)
                .filter(|&&(s, _)| s < at)
                .map(|&(s, _)| (before, at - s));
            (before, inside)
        };
        let mut cuts: Vec<(usize, Vec<u32>)> = Vec::new();
        let (mut before, mut after) = (Vec::new(), Vec::new());
        // (word index the cue is before, offset into that word when written inside it)
        let mut cues: Vec<(usize, usize, WordCue)> = Vec::new();
        for tc in &c.cues {
            let (w, inside) = locate(tc.at);
            let (kind, name, intensity) = match &tc.event {
                CueEvent::Emotion { name, intensity } => (CueKind::Emotion, name, *intensity),
                CueEvent::Action { name, intensity } => (CueKind::Action, name, *intensity),
                CueEvent::Break { millis } => {
                    // A break inside a word counts as after it.
                    let w = if inside.is_some() { w + 1 } else { w };
                    if w == 0 {
                        before.push(*millis);
                    } else if w >= n {
                        after.push(*millis);
                    } else {
                        match cuts.iter_mut().find(|(at, _)| *at == w) {
                            Some((_, ms)) => ms.push(*millis),
                            None => cuts.push((w, vec![*millis])),
                        }
                    }
                    continue;
                }
            };
            // A tag inside a word: between two characters of an unspaced script it is before the
            // rest of the word (a byte offset into it); elsewhere (`hel<wave>lo`) after the word.
            let (w, off) = match inside {
                Some((i, off)) => {
                    let (s, _) = spans[i];
                    let prev = raw[..s + off].chars().next_back();
                    let next = raw[s + off..].chars().next();
                    if prev.is_some_and(unspaced) || next.is_some_and(unspaced) {
                        (i, off)
                    } else {
                        (i + 1, 0)
                    }
                }
                None => (w, 0),
            };
            cues.push((
                w,
                off,
                WordCue {
                    before_word: w,
                    at: 0,
                    kind,
                    name: name.clone(),
                    intensity,
                },
            ));
        }
        cuts.sort_by_key(|(at, _)| *at);
        let mut bounds: Vec<usize> = vec![0];
        bounds.extend(cuts.iter().map(|(at, _)| *at));
        bounds.push(n);
        let last_k = bounds.len() - 2;
        (0..=last_k)
            .map(|k| {
                let (a, b) = (bounds[k], bounds[k + 1]);
                let last = k == last_k;
                let words: Vec<String> = spans[a..b]
                    .iter()
                    .map(|&(s, e)| raw[s..e].to_string())
                    .collect();
                // Byte starts of the piece's words once joined by single spaces.
                let mut starts = Vec::with_capacity(words.len() + 1);
                let mut o = 0usize;
                for w in &words {
                    starts.push(o);
                    o += w.len() + 1;
                }
                let len = o.saturating_sub(1);
                Piece {
                    // A cue at a cut belongs to the piece after it (before its first word); the
                    // last piece keeps the cues past its last word.
                    cues: cues
                        .iter()
                        .filter(|(w, _, _)| *w >= a && (*w < b || last))
                        .map(|(w, off, c)| {
                            let i = w - a;
                            WordCue {
                                before_word: if *off > 0 { i + 1 } else { i },
                                at: starts.get(i).map_or(len, |s| s + off),
                                ..c.clone()
                            }
                        })
                        .collect(),
                    words,
                    before: if k == 0 {
                        std::mem::take(&mut before)
                    } else {
                        Vec::new()
                    },
                    after: if last {
                        std::mem::take(&mut after)
                    } else {
                        cuts[k].1.clone()
                    },
                }
            })
            .collect()
    }

    fn convert(&mut self, clauses: Vec<Clause>) -> Vec<ClauseText> {
        let mut out = vec![];
        for piece in clauses.iter().flat_map(Self::pieces) {
            let mut cues: Vec<WordCue> = std::mem::take(&mut self.carry);
            let mut before = std::mem::take(&mut self.carry_pause);
            before.extend(piece.before);
            // words with a letter or digit: a piece of bare punctuation (the rest of `!!` after an
            // eager cut, a lone `...`) has nothing to say
            let words_in = piece
                .words
                .iter()
                .filter(|w| w.chars().any(char::is_alphanumeric))
                .count();
            cues.extend(piece.cues);
            if words_in == 0 {
                self.carry = cues
                    .into_iter()
                    .map(|mut c| {
                        c.before_word = 0;
                        c.at = 0;
                        c
                    })
                    .collect();
                before.extend(piece.after);
                self.carry_pause = before;
                continue;
            }
            out.push(ClauseText {
                text: piece.words.join(" "),
                cues,
                pause_before: before,
                pause_after: piece.after,
            });
        }
        out
    }
}

impl Default for TextSegmenter {
    fn default() -> Self {
        TextSegmenter::new(SegmenterConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speech::Speech;
    use crate::time::{TimeRange, Timeline};

    #[test]
    fn text_stage_clauses_with_cues() {
        let mut s = TextSegmenter::default();
        let mut got = vec![];
        for p in [
            "[hap",
            "py] Hello there, how are",
            " you today? I am <wa",
            "ve> fine.",
        ] {
            got.extend(s.push(p));
        }
        got.extend(s.finish());
        assert!(!got.is_empty());
        let joined: Vec<&str> = got.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            joined.join(" "),
            "Hello there, how are you today? I am fine."
        );
        let happy = &got[0].cues[0];
        assert_eq!((happy.name.as_str(), happy.before_word), ("happy", 0));
        let wave = got
            .iter()
            .flat_map(|c| c.cues.iter().map(move |q| (c, q)))
            .find(|(_, q)| q.name == "wave")
            .expect("the wave cue");
        let words: Vec<&str> = wave.0.text.split_whitespace().collect();
        assert_eq!(words[wave.1.before_word], "fine.");
        // The stream resets for the next reply.
        let mut again = s.push("Bye now.");
        again.extend(s.finish());
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].text, "Bye now.");
    }

    #[test]
    fn breaks_become_pauses_around_clauses() {
        let mut s = TextSegmenter::default();
        let mut got =
            s.push("Hello there. <break time=\"500ms\"/> Bye <break time=\"200ms\"/>now.");
        got.extend(s.finish());
        let texts: Vec<&str> = got.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts.join(" "), "Hello there. Bye now.");
        let pauses: u32 = got
            .iter()
            .map(|c| c.pause_before_ms() + c.pause_after_ms())
            .sum();
        assert_eq!(pauses, 700, "{got:?}");
        // The 500 ms break sits between the two sentences, not inside a word.
        let bye = got.iter().position(|c| c.text.starts_with("Bye")).unwrap();
        let between = got[bye].pause_before_ms()
            + if bye > 0 {
                got[bye - 1].pause_after_ms()
            } else {
                0
            };
        assert!(between >= 500, "{got:?}");
    }

    #[test]
    fn sentences_for_the_offline_paths() {
        let c = TextSegmenter::segment(
            SegmenterConfig::sentences(),
            "[happy] Hello everyone! How are you? <break time=\"200ms\"/>Fine.",
        );
        let texts: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["Hello everyone!", "How are you?", "Fine."]);
        assert_eq!(c[0].cues[0].name, "happy");
        assert_eq!((c[0].cues[0].before_word, c[0].cues[0].at), (0, 0));
        assert_eq!(c[1].pause_after_ms() + c[2].pause_before_ms(), 200);
    }

    #[test]
    fn a_tag_between_unspaced_words_keeps_its_byte_place() {
        // Japanese has no spaces: the wave is before 皆さん, 15 bytes in, not at the clause end.
        let c = TextSegmenter::segment(SegmenterConfig::sentences(), "こんにちは<wave>皆さん。");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].text, "こんにちは皆さん。");
        assert_eq!(c[0].cues[0].at, "こんにちは".len());
        // In spaced text a tag inside a word goes after it.
        let c = TextSegmenter::segment(SegmenterConfig::sentences(), "hel<wave>lo there");
        assert_eq!((c[0].cues[0].before_word, c[0].cues[0].at), (1, 6));
    }

    /// Speech with one word per entry of `words`: (start, len, src).
    fn speech(n: u64, words: &[(u64, u64, Option<std::ops::Range<usize>>)]) -> Speech {
        let mut s = Speech {
            pcm: vec![0.1; n as usize],
            sample_rate: 1000,
            phonemes: Timeline::new(1000).unwrap(),
            words: Timeline::new(1000).unwrap(),
        };
        for (i, (a, l, src)) in words.iter().enumerate() {
            let mut w = Word::new(format!("w{i}"));
            w.src = src.clone();
            s.words
                .push(Timed::new(TimeRange::at(SampleTime(*a), *l), w))
                .unwrap();
        }
        s
    }

    #[test]
    fn cues_follow_source_positions_when_the_voice_gives_them() {
        let c =
            &TextSegmenter::segment(SegmenterConfig::sentences(), "こんにちは<wave>皆さん。")[0];
        // Three words as a Japanese front end segments them: こんにちは | 皆 | さん.
        let sp = speech(
            900,
            &[
                (0, 300, Some(0..15)),
                (300, 200, Some(15..18)),
                (500, 300, Some(18..24)),
            ],
        );
        let cues = place_cues(c, sp.words.items(), SampleTime(900), SampleTime(100));
        assert_eq!(cues[0].at, SampleTime(400));
        // Without positions, counting: one written word, so the cue is after it.
        let sp = speech(900, &[(0, 300, None), (300, 200, None), (500, 300, None)]);
        let cues = place_cues(c, sp.words.items(), SampleTime(900), SampleTime(0));
        assert_eq!(cues[0].at, SampleTime(300));
    }

    #[test]
    fn a_layout_puts_breaks_where_written_and_trailing_tags_on_the_last_sample() {
        let clauses = TextSegmenter::segment(
            SegmenterConfig::sentences(),
            "<break time=\"100ms\"/>one two <break time=\"200ms\"/> three <nod> <break time=\"50ms\"/>",
        );
        let mut l = Layout::new(1000);
        let mut parts = vec![];
        let mut cues = vec![];
        for c in &clauses {
            let n = c.text.split_whitespace().count() as u64;
            let sp = (n > 0).then(|| {
                speech(
                    n * 100,
                    &(0..n).map(|i| (i * 100, 100, None)).collect::<Vec<_>>(),
                )
            });
            let p = l.place(c, sp.as_ref());
            parts.extend(p.parts);
            cues.extend(p.cues);
        }
        assert_eq!(
            parts,
            [
                Part::Pause {
                    at: SampleTime(0),
                    millis: 100,
                    n: 100
                },
                Part::Speech {
                    at: SampleTime(100)
                },
                Part::Pause {
                    at: SampleTime(300),
                    millis: 200,
                    n: 200
                },
                Part::Speech {
                    at: SampleTime(500)
                },
                Part::Pause {
                    at: SampleTime(600),
                    millis: 50,
                    n: 50
                },
            ]
        );
        assert_eq!(l.len(), 650);
        assert_eq!(cues.len(), 1);
        assert_eq!(cues[0].at, SampleTime(599));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// Random tagged texts, streamed in random pieces: the clauses say every written word in
        /// order, every emotion and action tag (stage directions naming a gesture included) comes
        /// out once before the word it was written before (or after the last word), and every
        /// break is silence at the word boundary where it was written.
        #[test]
        fn tags_and_breaks_stay_where_they_were_written(
            items in proptest::collection::vec((0u8..8, 0usize..6), 1..40),
            cuts in proptest::collection::vec(1usize..12, 0..20),
        ) {
            let t = crate::perform::testing::TaggedText::generate(&items);
            let (text, words) = (&t.text, &t.words);
            let mut want_cues = t.cues.clone();
            let mut want_pause: std::collections::BTreeMap<usize, u32> = Default::default();
            for &(w, ms) in &t.breaks {
                *want_pause.entry(w).or_default() += ms;
            }
            let got = t.stream_into(&mut TextSegmenter::default(), &cuts);
            // Read the clauses back onto word boundaries.
            let mut said: Vec<String> = vec![];
            let mut cues: Vec<(usize, String)> = vec![];
            let mut pause: std::collections::BTreeMap<usize, u32> = Default::default();
            for c in &got {
                let base = said.len();
                if c.pause_before_ms() > 0 {
                    *pause.entry(base).or_default() += c.pause_before_ms();
                }
                let n = c.text.split_whitespace().count();
                let starts = word_starts(&c.text);
                for q in &c.cues {
                    cues.push((base + q.before_word.min(n), q.name.clone()));
                    let at = starts.get(q.before_word).copied().unwrap_or(c.text.len());
                    proptest::prop_assert_eq!(q.at, at.min(c.text.len()), "{:?}", c);
                }
                said.extend(c.text.split_whitespace().map(str::to_string));
                if c.pause_after_ms() > 0 {
                    *pause.entry(said.len()).or_default() += c.pause_after_ms();
                }
                proptest::prop_assert!(!c.text.contains("  "));
            }
            proptest::prop_assert_eq!(&said, words, "{}", text);
            cues.sort();
            want_cues.sort();
            proptest::prop_assert_eq!(cues, want_cues, "{}", text);
            // Breaks before the first word or after the last are one pause at that end.
            proptest::prop_assert_eq!(pause, want_pause, "{}", text);
        }
    }
}
