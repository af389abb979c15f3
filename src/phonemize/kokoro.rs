//! The front end of the Kokoro voices: a clause split by script, each span phonemized by its
//! language's front end, all in Kokoro's phoneme set.
//!
//! Routing: kana mark Japanese, and Han characters in a clause that has kana are Japanese too (kanji
//! inside Japanese); Han in a clause with no kana goes to [`KokoroPhonemizer::han`] (Mandarin unless
//! the voice's language says Japanese). Latin letters go to the English front end when one is given
//! (its espeak-style IPA rewritten in misaki's English symbols: `eɪ` → `A`, `aɪ` → `I`, `oʊ` → `O`,
//! `aʊ` → `W`, `ɔɪ` → `Y`, `tʃ` → `ʧ`, `dʒ` → `ʤ`, `r` → `ɹ`), else they are dropped with a warning.
//! Digits, spaces and punctuation stay with the span around them.

use super::japanese::{self, JapanesePhonemizer};
use super::mandarin::{self, MandarinPhonemizer};
use super::{Located, PhonToken, Phonemize, PhonemizeError};
use std::sync::Arc;

/// Which front end reads Han characters in a clause without kana.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HanAs {
    Mandarin,
    Japanese,
}

/// A script span of a clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    Japanese,
    Mandarin,
    Latin,
}

fn class(c: char) -> Option<Script> {
    if japanese::is_kana(c) && c != '・' {
        Some(Script::Japanese)
    } else if mandarin::is_han(c) {
        Some(Script::Mandarin)
    } else if c.is_ascii_alphabetic() {
        Some(Script::Latin)
    } else {
        None
    }
}

/// Split `text` into (script, span) by the rules in the module docs.
pub fn split_scripts(text: &str, han: HanAs) -> Vec<(Script, String)> {
    let has_kana = text.chars().any(|c| class(c) == Some(Script::Japanese));
    let han_script = if has_kana || han == HanAs::Japanese {
        Script::Japanese
    } else {
        Script::Mandarin
    };
    let mut out: Vec<(Script, String)> = Vec::new();
    let mut pending = String::new();
    for c in text.chars() {
        let s = match class(c) {
            Some(Script::Mandarin) => Some(han_script),
            other => other,
        };
        match s {
            None => match out.last_mut() {
                Some((_, span)) => span.push(c),
                None => pending.push(c),
            },
            Some(s) => match out.last_mut() {
                Some((last, span)) if *last == s => span.push(c),
                _ => {
                    // Spaces and marks between a Latin word and the next: keep with the Latin span
                    // only when it continues.
                    let mut span = std::mem::take(&mut pending);
                    if let Some((Script::Latin, prev)) = out.last_mut() {
                        let tail: String = prev
                            .chars()
                            .rev()
                            .take_while(|c| c.is_whitespace())
                            .collect();
                        prev.truncate(prev.len() - tail.len());
                        span.insert_str(0, &tail);
                    }
                    span.push(c);
                    out.push((s, span));
                }
            },
        }
    }
    if !pending.is_empty() {
        // Text with no letters at all (digits, marks): read as the Han script would be.
        out.push((han_script, pending));
    }
    out
}

/// Rewrite espeak-style English IPA in misaki's English symbols.
pub fn english_to_misaki(ipa: &str) -> String {
    let mut s = ipa.replace('\u{200D}', "");
    for (a, b) in [
        ("eɪ", "A"),
        ("aɪ", "I"),
        ("oʊ", "O"),
        ("aʊ", "W"),
        ("ɔɪ", "Y"),
        ("tʃ", "ʧ"),
        ("dʒ", "ʤ"),
        ("ɝ", "ɜɹ"),
        ("r", "ɹ"),
        ("g", "ɡ"),
    ] {
        s = s.replace(a, b);
    }
    s
}

/// Japanese + Mandarin (+ English) in Kokoro's phonemes.
pub struct KokoroPhonemizer {
    japanese: Option<JapanesePhonemizer>,
    mandarin: MandarinPhonemizer,
    english: Option<Arc<dyn Phonemize>>,
    han: HanAs,
}

impl KokoroPhonemizer {
    /// `japanese`: the Japanese front end (without it, kana and Japanese spans are an error);
    /// `english`: the English front end for Latin spans (optional).
    pub fn new(
        japanese: Option<JapanesePhonemizer>,
        english: Option<Arc<dyn Phonemize>>,
        han: HanAs,
    ) -> Self {
        KokoroPhonemizer {
            japanese,
            mandarin: MandarinPhonemizer::new(),
            english,
            han,
        }
    }
}

/// Place words read from `span` (which starts at byte `base` of the clause) in it: a word found as
/// written (ignoring case) from where the last one ended is placed there; one that is not (a number
/// or a symbol read as words: `42` → `forty two`) gets the whitespace-separated token of the span it
/// was read from. Empty words get no place.
pub fn place_words<'a>(
    span: &str,
    base: usize,
    words: impl IntoIterator<Item = &'a str>,
) -> Vec<Option<std::ops::Range<usize>>> {
    let lower = span.to_ascii_lowercase();
    let token_at = |from: usize| -> Option<std::ops::Range<usize>> {
        let s = from + span[from..].find(|c: char| !c.is_whitespace())?;
        let e = span[s..]
            .find(char::is_whitespace)
            .map_or(span.len(), |e| s + e);
        Some(s..e)
    };
    let mut cursor = 0usize;
    // The token the last word not found as written was read from (the rest of a number's words).
    let mut read_from: Option<std::ops::Range<usize>> = None;
    let mut out = Vec::new();
    for text in words {
        let src = if text.is_empty() {
            None
        } else {
            let w = text.to_ascii_lowercase();
            let here = token_at(cursor);
            match (lower[cursor..].find(&w), &here) {
                (Some(f), Some(t)) if cursor + f < t.end => {
                    let s = cursor + f;
                    cursor = s + w.len();
                    read_from = None;
                    Some(s..cursor)
                }
                _ if read_from.is_some() => read_from.clone(),
                (_, Some(t)) => {
                    cursor = t.end;
                    read_from = Some(t.clone());
                    read_from.clone()
                }
                (_, None) => None,
            }
        };
        out.push(src.map(|r| base + r.start..base + r.end));
    }
    out
}

/// An English front end's tokens placed in `span` ([`place_words`]).
fn place_latin(span: &str, base: usize, tokens: Vec<PhonToken>) -> Vec<Located> {
    let places = place_words(
        span,
        base,
        tokens.iter().map(|t| match t {
            PhonToken::Word { text, .. } => text.as_str(),
            PhonToken::Punct(_) => "",
        }),
    );
    tokens
        .into_iter()
        .zip(places)
        .map(|(token, src)| Located { token, src })
        .collect()
}

impl KokoroPhonemizer {
    /// Words with their places in `text` (see [`Phonemize::phonemize_located`]).
    fn located(&self, text: &str) -> Result<Vec<Located>, PhonemizeError> {
        let mut out = Vec::new();
        let mut base = 0usize;
        for (script, span) in split_scripts(text, self.han) {
            let shift = |v: Vec<Located>| {
                v.into_iter().map(move |l| Located {
                    token: l.token,
                    src: l.src.map(|r| base + r.start..base + r.end),
                })
            };
            match script {
                Script::Japanese => match &self.japanese {
                    Some(j) => out.extend(shift(j.phonemize_located(&span))),
                    None => {
                        return Err(PhonemizeError::Other(
                            "Japanese text needs the Japanese dictionary: run `idol fetch`".into(),
                        ));
                    }
                },
                Script::Mandarin => out.extend(shift(self.mandarin.phonemize_located(&span))),
                Script::Latin => match &self.english {
                    Some(e) => {
                        let tokens = e
                            .phonemize(&span)?
                            .into_iter()
                            .map(|t| match t {
                                PhonToken::Word { text, ipa } => PhonToken::Word {
                                    text,
                                    ipa: english_to_misaki(&ipa),
                                },
                                p => p,
                            })
                            .collect();
                        out.extend(place_latin(&span, base, tokens));
                    }
                    None => log::warn!("no English front end for {span:?}; skipped"),
                },
            }
            base += span.len();
        }
        debug_assert_eq!(base, text.len(), "script spans cover the clause");
        if out.is_empty() {
            return Err(PhonemizeError::Unspeakable(text.to_string()));
        }
        Ok(out)
    }
}

impl Phonemize for KokoroPhonemizer {
    fn phonemize(&self, text: &str) -> Result<Vec<PhonToken>, PhonemizeError> {
        Ok(self.located(text)?.into_iter().map(|l| l.token).collect())
    }

    fn phonemize_located(&self, text: &str) -> Result<Vec<Located>, PhonemizeError> {
        self.located(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scripts(text: &str, han: HanAs) -> Vec<(Script, &'static str)> {
        split_scripts(text, han)
            .into_iter()
            .map(|(s, t)| (s, &*Box::leak(t.into_boxed_str())))
            .collect()
    }

    #[test]
    fn kana_make_han_japanese() {
        assert_eq!(
            scripts("今日は晴れです。", HanAs::Mandarin),
            [(Script::Japanese, "今日は晴れです。")]
        );
        assert_eq!(
            scripts("今天天气很好。", HanAs::Mandarin),
            [(Script::Mandarin, "今天天气很好。")]
        );
        assert_eq!(
            scripts("東京駅", HanAs::Japanese),
            [(Script::Japanese, "東京駅")]
        );
    }

    #[test]
    fn latin_spans_are_their_own() {
        assert_eq!(
            scripts("我喜欢 Rust 语言", HanAs::Mandarin),
            [
                (Script::Mandarin, "我喜欢 "),
                (Script::Latin, "Rust"),
                (Script::Mandarin, " 语言")
            ]
        );
        assert_eq!(
            scripts("Hello みんな!", HanAs::Mandarin),
            [(Script::Latin, "Hello"), (Script::Japanese, " みんな!")]
        );
    }

    #[test]
    fn english_ipa_in_misaki_symbols() {
        assert_eq!(english_to_misaki("həlˈoʊ"), "həlˈO");
        assert_eq!(english_to_misaki("tʃˈeɪndʒ"), "ʧˈAnʤ");
    }
}
