//! An external phonemizer: `espeak-ng` as a subprocess, when installed (any espeak-ng language).
//!
//! The text is split into runs of words between prosody punctuation (`, . ! ? ; : — …`); each run goes
//! through `espeak-ng -q --ipa -v VOICE` (IPA without tie marks, as Piper's espeak-ng voices were
//! trained with), and the output's space-separated words are paired with the input words. When espeak-ng
//! merges or splits words so the counts differ, the run becomes one word token. Characters that are
//! neither letters, digits, apostrophes nor prosody punctuation are skipped with a warning.
//!
//! Pure per call apart from the subprocess; safe to share between threads.

use crate::phonemize::{PhonToken, Phonemize, PhonemizeError};
use std::io::Write;
use std::process::{Command, Stdio};

/// `espeak-ng` as a [`Phonemize`].
#[derive(Debug, Clone)]
pub struct EspeakPhonemizer {
    program: String,
    voice: String,
}

impl Default for EspeakPhonemizer {
    fn default() -> Self {
        EspeakPhonemizer::new("en-us")
    }
}

fn is_punct(c: char) -> bool {
    matches!(c, ',' | '.' | '!' | '?' | ';' | ':' | '—' | '–' | '…')
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '\'' || c == '’'
}

impl EspeakPhonemizer {
    /// espeak-ng with the given voice (`en-us`, or a Piper voice's `espeak.voice`).
    pub fn new(voice: &str) -> Self {
        EspeakPhonemizer {
            program: "espeak-ng".into(),
            voice: voice.into(),
        }
    }

    fn ipa(&self, text: &str) -> Result<String, PhonemizeError> {
        let mut child = Command::new(&self.program)
            .args(["-q", "--ipa", "-v", &self.voice, "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                PhonemizeError::Other(format!(
                    "cannot run {}: {e}; install espeak-ng or use the built-in phonemizer",
                    self.program
                ))
            })?;
        child
            .stdin
            .take()
            .ok_or_else(|| PhonemizeError::Other("espeak-ng stdin".into()))?
            .write_all(text.as_bytes())
            .map_err(|e| PhonemizeError::Other(format!("writing to espeak-ng: {e}")))?;
        let out = child
            .wait_with_output()
            .map_err(|e| PhonemizeError::Other(format!("espeak-ng: {e}")))?;
        if !out.status.success() {
            return Err(PhonemizeError::Other(format!(
                "espeak-ng failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).replace('\u{200D}', ""))
    }

    fn flush(
        &self,
        words: &mut Vec<String>,
        out: &mut Vec<PhonToken>,
    ) -> Result<(), PhonemizeError> {
        if words.is_empty() {
            return Ok(());
        }
        let joined = words.join(" ");
        let ipa = self.ipa(&joined)?;
        let pieces: Vec<&str> = ipa.split_whitespace().collect();
        if pieces.len() == words.len() {
            for (w, p) in words.iter().zip(pieces) {
                out.push(PhonToken::Word {
                    text: w.clone(),
                    ipa: p.to_string(),
                });
            }
        } else if !pieces.is_empty() {
            // espeak-ng joins some function words to the next word ("in the" → "ɪnðə"): find which
            // words each piece covers from the words' isolated pronunciations, and cut the piece there.
            let isolated = self.ipa(&words.join("\n\n"))?;
            let isolated: Vec<&str> = isolated.split_whitespace().collect();
            if isolated.len() != words.len() {
                out.push(PhonToken::Word {
                    text: joined,
                    ipa: pieces.concat(),
                });
            } else {
                for (w, ipa) in words.iter().zip(split_pieces(&pieces, &isolated)) {
                    out.push(PhonToken::Word {
                        text: w.clone(),
                        ipa,
                    });
                }
            }
        }
        words.clear();
        Ok(())
    }
}

fn strip_stress(s: &str) -> Vec<char> {
    s.chars().filter(|c| !matches!(c, 'ˈ' | 'ˌ')).collect()
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Give each word its part of `pieces` (fewer pieces than words): choose which consecutive words each
/// piece covers (dynamic programming on the edit distance to the words' isolated pronunciations), then
/// cut a multi-word piece by the isolated lengths (stress marks go with the symbol after them).
fn split_pieces(pieces: &[&str], isolated: &[&str]) -> Vec<String> {
    let (p, w) = (pieces.len(), isolated.len());
    let iso: Vec<Vec<char>> = isolated.iter().map(|s| strip_stress(s)).collect();
    const MAX_JOIN: usize = 4;
    // best[i][j]: cost of pieces[..i] covering words[..j].
    let mut best = vec![vec![usize::MAX; w + 1]; p + 1];
    let mut from = vec![vec![0usize; w + 1]; p + 1];
    best[0][0] = 0;
    for i in 1..=p {
        let piece = strip_stress(pieces[i - 1]);
        for j in 1..=w {
            for k in 1..=MAX_JOIN.min(j) {
                if best[i - 1][j - k] == usize::MAX {
                    continue;
                }
                let cat: Vec<char> = iso[j - k..j].concat();
                let c = best[i - 1][j - k] + edit_distance(&piece, &cat);
                if c < best[i][j] {
                    best[i][j] = c;
                    from[i][j] = k;
                }
            }
        }
    }
    if best[p][w] == usize::MAX {
        return isolated.iter().map(|s| s.to_string()).collect();
    }
    let mut spans = Vec::new();
    let mut j = w;
    for i in (1..=p).rev() {
        let k = from[i][j];
        spans.push((i - 1, j - k, j));
        j -= k;
    }
    spans.reverse();
    let mut out = Vec::with_capacity(w);
    for (pi, a, b) in spans {
        let mut rest: Vec<char> = pieces[pi].chars().collect();
        for (k, iso_word) in iso[a..b].iter().enumerate() {
            if a + k + 1 == b {
                out.push(rest.iter().collect());
                break;
            }
            let mut take = iso_word.len();
            let mut cut = 0;
            while cut < rest.len() && take > 0 {
                if !matches!(rest[cut], 'ˈ' | 'ˌ') {
                    take -= 1;
                }
                cut += 1;
            }
            // A stress mark right at the cut belongs to the next word.
            let head: String = rest[..cut].iter().collect();
            rest.drain(..cut);
            out.push(head);
        }
    }
    out
}

impl Phonemize for EspeakPhonemizer {
    fn phonemize(&self, text: &str) -> Result<Vec<PhonToken>, PhonemizeError> {
        let mut out = Vec::new();
        let mut words: Vec<String> = Vec::new();
        let mut word = String::new();
        let mut skipped = String::new();
        for c in text.chars() {
            if is_word_char(c) {
                word.push(if c == '’' { '\'' } else { c });
                continue;
            }
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            if is_punct(c) {
                self.flush(&mut words, &mut out)?;
                // Repeated punctuation ("!!!", "...") speaks as one mark.
                if out.last() != Some(&PhonToken::Punct(c)) {
                    out.push(PhonToken::Punct(c));
                }
            } else if !c.is_whitespace() && !matches!(c, '-' | '"' | '(' | ')') {
                skipped.push(c);
            }
        }
        if !word.is_empty() {
            words.push(word);
        }
        self.flush(&mut words, &mut out)?;
        if !skipped.is_empty() {
            log::warn!("skipped characters the voice cannot say: {skipped:?}");
        }
        if !out.iter().any(|t| matches!(t, PhonToken::Word { .. })) {
            return Err(PhonemizeError::Unspeakable(text.to_string()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_pieces_are_cut_by_the_isolated_words() {
        let got = split_pieces(&["ɪnðˈə", "fˈɔːɹɪst"], &["ˈɪn", "ðˈə", "fˈɔːɹɪst"]);
        assert_eq!(got, ["ɪn", "ðˈə", "fˈɔːɹɪst"]);
        let got = split_pieces(&["ʌvðə", "kˈaɪnd"], &["ˈʌv", "ðˈə", "kˈaɪnd"]);
        assert_eq!(got, ["ʌv", "ðə", "kˈaɪnd"]);
    }

    fn have_espeak() -> bool {
        Command::new("espeak-ng").arg("--version").output().is_ok()
    }

    #[test]
    fn words_and_punctuation() {
        if !have_espeak() {
            eprintln!("espeak-ng not installed; skipping");
            return;
        }
        let p = EspeakPhonemizer::default();
        let t = p.phonemize("Hello everyone, how are you?!").unwrap();
        assert_eq!(
            t[0],
            PhonToken::Word {
                text: "Hello".into(),
                ipa: "həlˈoʊ".into()
            }
        );
        assert_eq!(t[2], PhonToken::Punct(','));
        assert_eq!(t.last(), Some(&PhonToken::Punct('!')));
        assert!(matches!(
            p.phonemize("🙂 ... !"),
            Err(PhonemizeError::Unspeakable(_))
        ));
        // espeak-ng writes "in the" as one word; each word still gets its own part.
        let t = p.phonemize("a house in the forest").unwrap();
        let ipa: Vec<_> = t
            .iter()
            .map(|t| match t {
                PhonToken::Word { ipa, .. } => ipa.as_str(),
                PhonToken::Punct(_) => "",
            })
            .collect();
        assert_eq!(ipa, ["ɐ", "hˈaʊs", "ɪn", "ðə", "fˈɔːɹɪst"]);
    }
}
