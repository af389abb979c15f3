//! An optional external phonemizer: the `espeak-ng` program, for languages other than English (or as a
//! reference). Input: one clause; output: [`PhonToken`]s.
//!
//! Algorithm. The clause is split into words and prosody punctuation exactly as the English phonemizer
//! splits it; the words of each stretch between punctuation marks are sent to `espeak-ng -q --ipa -v
//! <voice>` (one subprocess per call, words on stdin), zero-width joiners are removed from the answer and
//! its words are paired with the input words in order. When espeak-ng joins or splits words (it writes *of
//! the* as one word `ʌvðə`) the pairing is unknown: the whole stretch's IPA goes to its first word and the
//! others get an empty string, so the concatenated phonemes stay right.
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
            let ipas: Vec<&str> = ipa.split(' ').filter(|s| !s.is_empty()).collect();
            let paired = ipas.len() == stretch.len();
            for (k, w) in stretch.drain(..).enumerate() {
                let ipa = if paired {
                    ipas[k].to_string()
                } else if k == 0 {
                    ipas.concat()
                } else {
                    String::new()
                };
                out.push(PhonToken::Word { text: w, ipa });
            }
            Ok(())
        };
        for tok in super::english::split_clause(text) {
            match tok {
                super::english::Tok::Word(w) => stretch.push(w.to_string()),
                super::english::Tok::Punct(c) => {
                    flush(&mut stretch, &mut out)?;
                    out.push(PhonToken::Punct(c));
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
