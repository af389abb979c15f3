//! An optional external phonemizer: the `espeak-ng` program, for languages other than English (or as a
//! reference). Input: one clause; output: [`PhonToken`]s.
//!
//! Algorithm. The clause is split into words and prosody punctuation exactly as the English phonemizer
//! splits it; the words of each stretch between punctuation marks are sent to `espeak-ng -q --ipa -v
//! <voice>` (one subprocess per call, words on stdin), zero-width joiners are removed from the answer and
//! its words are paired with the input words in order. espeak-ng joins some function words to the next
//! word (*of the* → `ʌvðə`, *in the* → `ɪnðˈə`): then the words are also phonemized in isolation, a
//! dynamic programme on the edit distance decides which consecutive words each joined piece covers, and
//! the piece is cut by the isolated lengths (a stress mark goes with the symbol after it), so every word
//! keeps its own phonemes for the word timeline. If even that fails, the stretch's IPA goes to its first
//! word and the others get an empty string, so the concatenated phonemes stay right. Repeated
//! punctuation (`!!!`) speaks as one mark.
//!
//! Threading: stateless apart from the voice name; each call runs its own subprocess.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{PhonToken, Phonemize, PhonemizeError};

/// `espeak-ng` as a subprocess.
#[derive(Debug, Clone)]
pub struct EspeakPhonemizer {
    program: String,
    voice: String,
}

impl EspeakPhonemizer {
    /// Checks that `espeak-ng` runs and knows `voice` (e.g. `en-us`, `de`, `fr-fr`).
    pub fn new(voice: &str) -> Result<Self, PhonemizeError> {
        Self::with_program("espeak-ng", voice)
    }

    /// Like [`EspeakPhonemizer::new`] with an explicit program path.
    pub fn with_program(program: &str, voice: &str) -> Result<Self, PhonemizeError> {
        let p = EspeakPhonemizer {
            program: program.to_string(),
            voice: voice.to_string(),
        };
        p.run("a")?;
        Ok(p)
    }

    pub fn voice(&self) -> &str {
        &self.voice
    }

    /// Raw IPA of `text`, clause line breaks joined by spaces, joiners removed.
    pub fn run(&self, text: &str) -> Result<String, PhonemizeError> {
        let mut child = Command::new(&self.program)
            .args(["-q", "--ipa", "-v", &self.voice])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                PhonemizeError::Other(format!(
                    "cannot run `{}` ({e}): install espeak-ng (e.g. `apt install espeak-ng`) or use the built-in English phonemizer",
                    self.program
                ))
            })?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes())
            .map_err(|e| PhonemizeError::Other(format!("writing to espeak-ng: {e}")))?;
        let out = child
            .wait_with_output()
            .map_err(|e| PhonemizeError::Other(format!("waiting for espeak-ng: {e}")))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(PhonemizeError::Other(format!(
                "espeak-ng failed for voice {:?}: {}",
                self.voice,
                stderr.trim()
            )));
        }
        let s = String::from_utf8_lossy(&out.stdout).replace('\u{200d}', "");
        Ok(s.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

impl Phonemize for EspeakPhonemizer {
    fn phonemize(&self, text: &str) -> Result<Vec<PhonToken>, PhonemizeError> {
        let mut out = Vec::new();
        let mut stretch: Vec<String> = Vec::new();
        let flush = |stretch: &mut Vec<String>, out: &mut Vec<PhonToken>| {
            if stretch.is_empty() {
                return Ok::<(), PhonemizeError>(());
            }
            let ipa = self.run(&stretch.join(" "))?;
            let pieces: Vec<&str> = ipa.split(' ').filter(|s| !s.is_empty()).collect();
            let per_word: Vec<String> = if pieces.len() == stretch.len() {
                pieces.iter().map(|p| p.to_string()).collect()
            } else {
                let isolated = self.run(&stretch.join("\n\n"))?;
                let isolated: Vec<&str> = isolated.split(' ').filter(|s| !s.is_empty()).collect();
                if isolated.len() == stretch.len() && pieces.len() < stretch.len() {
                    split_pieces(&pieces, &isolated)
                } else {
                    let mut v = vec![String::new(); stretch.len()];
                    v[0] = pieces.concat();
                    v
                }
            };
            for (w, ipa) in stretch.drain(..).zip(per_word) {
                out.push(PhonToken::Word { text: w, ipa });
            }
            Ok(())
        };
        for tok in super::english::split_clause(text) {
            match tok {
                super::english::Tok::Word(w) => stretch.push(w.to_string()),
                super::english::Tok::Punct(c) => {
                    flush(&mut stretch, &mut out)?;
                    if out.last() != Some(&PhonToken::Punct(c)) {
                        out.push(PhonToken::Punct(c));
                    }
                }
            }
        }
        flush(&mut stretch, &mut out)?;
        if !out.iter().any(|t| matches!(t, PhonToken::Word { .. })) {
            return Err(PhonemizeError::Unspeakable(text.to_string()));
        }
        Ok(out)
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
        let p = EspeakPhonemizer::new("en-us").unwrap();
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
