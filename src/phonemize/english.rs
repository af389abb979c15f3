//! The English phonemizer: CMUdict lookup, the g2p-en GRU for unknown words, and espeak-ng en-us
//! conventions for function words and word boundaries.
//!
//! Algorithm, per clause:
//! 1. The text is normalized ([`crate::text::normalize()`], idempotent, so normalized input passes through)
//!    and split into words (letters, digits, inner apostrophes) and prosody punctuation (`, . ! ? ; :`;
//!    a dash becomes `,`, an ellipsis `.`); hyphens and other symbols separate words. Accented Latin
//!    letters are folded to ASCII; a word with no English letter left is skipped with a warning.
//! 2. Each word is looked up, first in a small table of function words in the reduced forms espeak-ng
//!    uses in running speech (*of* `ʌv`, *has* `hɐz`, *them* `ðˌɛm`), then in a short list of frequent
//!    words espeak says differently from the dictionary (*every* `ˈɛvɹi`, *read* `ɹˈiːd`), then in
//!    CMUdict (first variant); a possessive or contracted *'s* not in the dictionary is the base word
//!    plus `s`/`z`/`ᵻz`; anything else goes through the [`G2p`] network. ARPAbet is turned into IPA by
//!    [`super::arpabet::to_ipa`], which also reads the spelling for the vowels espeak spells apart.
//! 3. A pass over the clause applies what espeak does across word boundaries: *the* is `ðɪ` and *to* is
//!    `tʊ` before a vowel; a weak *it/at/what/get* ends in a flap before an unstressed vowel (*it is*
//!    `ɪɾ ɪz`); a final `ɚ` links with `ɹ` to a following vowel (*better off* `bˈɛɾɚɹ ˈɔf`); word pairs
//!    espeak reads as one unit take their reduced forms (*had been* `hɐd bɪn`, *for the* `fɚ ðə`);
//!    function words that end a clause take their stressed forms (*I know that* `ðˈæt`); *make*,
//!    *much*, *down* drop to secondary stress before a stressed word.
//!
//! The rules were found by comparing with espeak-ng on development texts and word lists
//! (`tests/data/dev*_text.txt`); `tests/data/heldout_text.txt` measures them on text they were not
//! tuned on.
//!
//! Threading: [`EnglishPhonemizer`] is immutable after load, `Send + Sync`, and can be shared behind an
//! `Arc` by any number of threads.

use std::collections::HashMap;
use std::path::Path;

use super::arpabet::{self, Arpa, Base};
use super::g2p::G2p;
use super::{PhonToken, Phonemize, PhonemizeError};
use crate::assets::Home;

/// Where a word's pronunciation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The built-in table of reduced function words.
    FunctionWord,
    /// CMUdict (possibly a base word plus a suffix).
    Dictionary,
    /// The g2p-en neural network.
    Neural,
}

/// The pronouncing dictionary: lowercase word → first listed pronunciation.
#[derive(Debug, Default)]
pub struct CmuDict {
    words: HashMap<String, Box<[Arpa]>>,
    /// Words whose first pronunciation does not end in /eɪ/ but a later one does (*resume* →
    /// *résumé*): what a written final *é* asks for.
    final_ey: HashMap<String, Box<[Arpa]>>,
}

impl CmuDict {
    /// Loads `cmudict.dict` (`word PH ON ES`, variants as `word(2)`, `#` comments).
    pub fn load(path: &Path) -> Result<Self, PhonemizeError> {
        let text = std::fs::read_to_string(path).map_err(|e| PhonemizeError::Load {
            path: path.to_path_buf(),
            message: format!("cannot read the pronouncing dictionary ({e}); run `idol fetch`"),
        })?;
        let dict = Self::parse(&text);
        if dict.words.len() < 1000 {
            return Err(PhonemizeError::Load {
                path: path.to_path_buf(),
                message: format!(
                    "only {} entries: not a CMU pronouncing dictionary; run `idol fetch` to reinstall it",
                    dict.words.len()
                ),
            });
        }
        Ok(dict)
    }

    /// Parses dictionary text; malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut words = HashMap::with_capacity(140_000);
        let mut final_ey: HashMap<String, Box<[Arpa]>> = HashMap::new();
        let ends_ey = |p: &[Arpa]| p.last().is_some_and(|a| a.base == Base::EY);
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some((word, pron)) = line.split_once(' ') else {
                continue;
            };
            let Some(p) = arpabet::parse_pron(pron) else {
                continue;
            };
            if let Some(base) = word.strip_suffix(')').and_then(|w| w.rsplit_once('(')) {
                // an alternative pronunciation: the first one wins, except for a final é
                if ends_ey(&p) {
                    final_ey
                        .entry(base.0.to_lowercase())
                        .or_insert_with(|| p.into_boxed_slice());
                }
                continue;
            }
            words
                .entry(word.to_lowercase())
                .or_insert_with(|| p.into_boxed_slice());
        }
        final_ey.retain(|w, _| words.get(w).is_some_and(|p| !ends_ey(p)));
        CmuDict { words, final_ey }
    }

    /// The pronunciation ending in /eɪ/ of a word whose first one does not (for a written final é).
    pub fn get_final_ey(&self, word: &str) -> Option<&[Arpa]> {
        self.final_ey.get(word).map(|p| &p[..])
    }

    pub fn get(&self, word: &str) -> Option<&[Arpa]> {
        self.words.get(word).map(|p| &p[..])
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

/// Function words as espeak-ng en-us says them inside running speech.
fn function_word(w: &str) -> Option<&'static str> {
    Some(match w {
        "a" => "ɐ",
        "an" => "ɐn",
        "the" => "ðə",
        "and" => "ænd",
        "or" => "ɔːɹ",
        "nor" => "nˈɔːɹ",
        "but" => "bˌʌt",
        "if" => "ɪf",
        "of" => "ʌv",
        "to" => "tə",
        "in" => "ɪn",
        "on" => "ˌɔn",
        "at" => "æt",
        "by" => "baɪ",
        "for" => "fɔːɹ",
        "from" => "fɹʌm",
        "with" => "wɪð",
        "as" => "æz",
        "than" => "ðɐn",
        "that" => "ðæt",
        "this" => "ðɪs",
        "these" => "ðiːz",
        "those" => "ðoʊz",
        "it" => "ɪt",
        "its" | "it's" => "ɪts",
        "is" => "ɪz",
        "are" => "ɑːɹ",
        "was" => "wʌz",
        "were" => "wɜː",
        "be" => "biː",
        "been" => "bˌɪn",
        "being" => "bˌiːɪŋ",
        "am" => "æm",
        "has" => "hɐz",
        "have" => "hæv",
        "had" => "hæd",
        "will" => "wɪl",
        "would" => "wʊd",
        "shall" => "ʃˌæl",
        "should" => "ʃˌʊd",
        "can" => "kæn",
        "could" => "kʊd",
        "might" => "mˌaɪt",
        "not" => "nˌɑːt",
        "so" => "sˌoʊ",
        "i" => "aɪ",
        "me" => "mˌiː",
        "my" => "maɪ",
        "we" => "wiː",
        "us" => "ˌʌs",
        "our" => "ˌaʊɚ",
        "you" => "juː",
        "your" => "jʊɹ",
        "he" => "hiː",
        "him" => "hˌɪm",
        "his" => "hɪz",
        "she" => "ʃiː",
        "her" => "hɜː",
        "they" => "ðeɪ",
        "them" => "ðˌɛm",
        "their" | "there" => "ðɛɹ",
        "what" => "wʌt",
        "when" => "wɛn",
        "where" => "wˌɛɹ",
        "which" => "wˌɪtʃ",
        "who" => "hˌuː",
        "whose" => "hˌuːz",
        "why" => "wˌaɪ",
        "how" => "hˌaʊ",
        "some" => "sˌʌm",
        "any" => "ˌɛni",
        "up" => "ˌʌp",
        "about" => "ɐbˌaʊt",
        "into" => "ˌɪntʊ",
        "onto" => "ˌɑːntʊ",
        "over" => "ˌoʊvɚ",
        "under" => "ˌʌndɚ",
        "upon" => "əpˌɑːn",
        "through" => "θɹuː",
        "i'm" => "aɪm",
        "i'll" => "aɪl",
        "i've" => "aɪv",
        "i'd" => "aɪd",
        "you're" => "jʊɹ",
        "we're" => "wɪɹ",
        "they're" => "ðeɪɚ",
        "won't" => "woʊnt",
        "isn't" => "ˌɪzənt",
        "that's" => "ðæts",
        "there's" => "ðɛɹz",
        "what's" => "wʌts",
        "he's" => "hiːz",
        "she's" => "ʃiːz",
        "because" => "bɪkˈʌz",
        "while" => "wˌaɪl",
        "though" => "ðˌoʊ",
        "before" => "bᵻfˌoːɹ",
        "near" => "nˌɪɹ",
        "without" => "wɪðˌaʊt",
        "between" => "bᵻtwˌiːn",
        "across" => "əkɹˌɑːs",
        "among" => "ɐmˌʌŋ",
        "around" => "ɚɹˈaʊnd",
        "behind" => "bᵻhˌaɪnd",
        "toward" => "təwˈɔːɹd",
        "get" => "ɡɛt",
        "got" => "ɡɑːt",
        "go" => "ɡˌoʊ",
        "going" => "ɡˌoʊɪŋ",
        "okay" => "oʊkˈeɪ",
        "myself" => "maɪsˈɛlf",
        "yourself" => "joːɹsˈɛlf",
        "himself" => "hɪmsˈɛlf",
        "herself" => "hɜːsˈɛlf",
        "itself" => "ɪtsˈɛlf",
        "themselves" => "ðɛmsˈɛlvz",
        "yourselves" => "joːɹsˈɛlvz",
        "within" => "wɪðˌɪn",
        _ => return None,
    })
}

/// Common words whose espeak-ng pronunciation no rule derives from the dictionary's first variant:
/// syncopated vowels (*every* `ˈɛvɹi`), homographs read as espeak reads them out of context (*read*,
/// *lead*), and a few frequent words with a full vowel where the dictionary reduces it.
fn word_override(w: &str) -> Option<&'static str> {
    Some(match w {
        "every" => "ˈɛvɹi",
        "everything" => "ˈɛvɹɪθˌɪŋ",
        "everybody" => "ˈɛvɹɪbˌɑːdi",
        "different" => "dˈɪfɹənt",
        "camera" => "kˈæmɹə",
        "really" => "ɹˈiəli",
        "usually" => "jˈuːʒuːəli",
        "actually" => "ˈæktʃuːəli",
        "sometimes" => "sˈʌmtaɪmz",
        "read" => "ɹˈiːd",
        "lead" => "lˈiːd",
        "wind" => "wˈɪnd",
        "maybe" => "mˈeɪbiː",
        "yeah" => "jˈɛh",
        "lives" => "lˈaɪvz",
        "cameras" => "kˈæmɹəz",
        "cannot" => "kænˈɑːt",
        "real" => "ɹˈiːəl",
        "minute" => "mˈɪnɪt",
        "minutes" => "mˈɪnɪts",
        "ability" => "ɐbˈɪləɾi",
        _ => return None,
    })
}

/// Prosody punctuation kept as [`PhonToken::Punct`].
///
/// Only marks Piper voices have ids for come out: a dash is a comma-like pause and an ellipsis ends
/// like a period.
fn prosody_punct(c: char) -> Option<char> {
    match c {
        ',' | '.' | '!' | '?' | ';' | ':' => Some(c),
        '—' | '–' => Some(','),
        '…' => Some('.'),
        _ => None,
    }
}

/// Latin letters with diacritics folded to ASCII (*café* → *cafe*); other characters unchanged.
fn fold_ascii(word: &str) -> String {
    word.chars()
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => 'a',
            'ç' | 'č' => 'c',
            'è' | 'é' | 'ê' | 'ë' | 'ē' => 'e',
            'ì' | 'í' | 'î' | 'ï' | 'ī' => 'i',
            'ñ' | 'ń' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => 'o',
            'ù' | 'ú' | 'û' | 'ü' | 'ū' => 'u',
            'ý' | 'ÿ' => 'y',
            'š' => 's',
            'ž' => 'z',
            c => c,
        })
        .collect()
}

/// The CMUdict + GRU English phonemizer (espeak-ng en-us conventions).
#[derive(Debug)]
pub struct EnglishPhonemizer {
    dict: CmuDict,
    g2p: G2p,
}

const IPA_VOWELS: &str = "aæɐɑɒəɚɛɜɪᵻioɔʊuʌe";

fn starts_with_vowel(ipa: &str) -> bool {
    ipa.chars()
        .find(|c| !matches!(c, 'ˈ' | 'ˌ'))
        .is_some_and(|c| IPA_VOWELS.contains(c))
}

fn starts_unstressed_vowel(ipa: &str) -> bool {
    ipa.chars().next().is_some_and(|c| IPA_VOWELS.contains(c))
}

impl EnglishPhonemizer {
    /// Loads the dictionary and G2P weights from the idol home (`models/cmudict.dict`,
    /// `models/checkpoint20.npz`).
    pub fn load(home: &Home) -> Result<Self, PhonemizeError> {
        let [dict, weights] = Self::files(home);
        Self::from_paths(&dict, &weights)
    }

    /// The files [`EnglishPhonemizer::load`] reads from the idol home: the dictionary, then the G2P
    /// weights (what a command fetches on first use before loading it).
    pub fn files(home: &Home) -> [std::path::PathBuf; 2] {
        [home.cmudict(), home.g2p_weights()]
    }

    pub fn from_paths(dict: &Path, weights: &Path) -> Result<Self, PhonemizeError> {
        Ok(EnglishPhonemizer {
            dict: CmuDict::load(dict)?,
            g2p: G2p::load(weights)?,
        })
    }

    pub fn dict(&self) -> &CmuDict {
        &self.dict
    }

    pub fn g2p(&self) -> &G2p {
        &self.g2p
    }

    /// The ARPAbet pronunciation of one lowercase word from the dictionary (with suffix rules) or the
    /// network.
    pub fn arpabet(&self, word: &str) -> Result<(Vec<Arpa>, Source), PhonemizeError> {
        if let Some(p) = self.dict.get(word) {
            return Ok((p.to_vec(), Source::Dictionary));
        }
        if let Some(base) = word.strip_suffix("'s").or_else(|| word.strip_suffix("s'"))
            && let Some(p) = self.dict.get(base)
        {
            let mut p = p.to_vec();
            let last = p.last().map(|x| x.base);
            match last {
                Some(Base::S | Base::Z | Base::SH | Base::ZH | Base::CH | Base::JH) => {
                    p.push(Arpa::parse("IH0").expect("valid"));
                    p.push(Arpa::parse("Z").expect("valid"));
                }
                Some(Base::P | Base::T | Base::K | Base::F | Base::TH) => {
                    p.push(Arpa::parse("S").expect("valid"))
                }
                _ => p.push(Arpa::parse("Z").expect("valid")),
            }
            return Ok((p, Source::Dictionary));
        }
        let letters: String = word.chars().filter(|c| c.is_ascii_lowercase()).collect();
        let pred = self.g2p.predict(&letters)?;
        let p = pred.iter().filter_map(|s| Arpa::parse(s)).collect();
        Ok((p, Source::Neural))
    }

    /// IPA of one word in isolation (before boundary effects), and where it came from.
    pub fn word_ipa(&self, word: &str) -> Result<(String, Source), PhonemizeError> {
        let lower = word.to_lowercase();
        if let Some(f) = function_word(&lower) {
            return Ok((f.to_string(), Source::FunctionWord));
        }
        if let Some(f) = word_override(&lower) {
            return Ok((f.to_string(), Source::Dictionary));
        }
        let (p, src) = self.arpabet(&lower)?;
        Ok((arpabet::to_ipa(&lower, &p), src))
    }
}

/// Splits normalized text into words and prosody punctuation.
pub(crate) fn split_clause(text: &str) -> Vec<Tok<'_>> {
    {
        let mut toks = Vec::new();
        let mut start: Option<usize> = None;
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        for (k, &(i, c)) in chars.iter().enumerate() {
            let next = chars.get(k + 1).map(|x| x.1);
            let word_char = c.is_alphanumeric()
                || (c == '\'' || c == '’')
                    && start.is_some()
                    && next.is_some_and(|n| n.is_alphanumeric());
            if word_char {
                if start.is_none() {
                    start = Some(i);
                }
                continue;
            }
            if let Some(s) = start.take() {
                toks.push(Tok::Word(&text[s..i]));
            }
            if let Some(p) = prosody_punct(c) {
                toks.push(Tok::Punct(p));
            }
        }
        if let Some(s) = start {
            toks.push(Tok::Word(&text[s..]));
        }
        toks
    }
}

pub(crate) enum Tok<'a> {
    Word(&'a str),
    Punct(char),
}

impl Phonemize for EnglishPhonemizer {
    fn phonemize(&self, text: &str) -> Result<Vec<PhonToken>, PhonemizeError> {
        let normalized = crate::text::normalize(text);
        let mut out = Vec::new();
        for tok in split_clause(&normalized) {
            match tok {
                Tok::Punct(c) => out.push(PhonToken::Punct(c)),
                Tok::Word(w) => {
                    let text = w.replace('’', "'");
                    let lower = text.to_lowercase();
                    let folded = fold_ascii(&lower);
                    if !folded.chars().any(|c| c.is_ascii_lowercase()) {
                        log::warn!("skipping {text:?}: no English letters to pronounce");
                        continue;
                    }
                    // a final é is /eɪ/ (résumé, not resume)
                    let ipa = match self.dict.get_final_ey(&folded) {
                        Some(p) if lower.ends_with('é') => arpabet::to_ipa(&folded, p),
                        _ => self.word_ipa(&folded)?.0,
                    };
                    out.push(PhonToken::Word { text, ipa });
                }
            }
        }
        if !out.iter().any(|t| matches!(t, PhonToken::Word { .. })) {
            return Err(PhonemizeError::Unspeakable(text.to_string()));
        }
        apply_boundaries(&mut out);
        Ok(out)
    }
}

/// Function words that espeak-ng stresses when they end a clause (*I know that* `ðˈæt`).
fn clause_final_form(w: &str) -> Option<&'static str> {
    Some(match w {
        "that" => "ðˈæt",
        "there" => "ðˈɛɹ",
        "this" => "ðˈɪs",
        "these" => "ðˈiːz",
        "those" => "ðˈoʊz",
        "has" => "hˈæz",
        "have" => "hˈæv",
        "had" => "hˌæd",
        "can" => "kˈæn",
        "will" => "wˈɪl",
        "would" => "wˈʊd",
        "could" => "kˈʊd",
        "should" => "ʃˈʊd",
        "be" => "bˈiː",
        "up" => "ˈʌp",
        "on" => "ˈɔn",
        "in" => "ˈɪn",
        "over" => "ˈoʊvɚ",
        "about" => "ɐbˈaʊt",
        "by" => "bˈaɪ",
        "what" => "wˈʌt",
        "who" => "hˈuː",
        "my" => "mˈaɪ",
        "his" => "hˈɪz",
        "to" => "tuː",
        "not" => "nˈɑːt",
        "i" => "ˈaɪ",
        _ => return None,
    })
}

/// Word pairs espeak-ng reads as one unit, with the forms of each word inside it (`None`: unchanged).
fn pair_forms(first: &str, second: &str) -> Option<(Option<&'static str>, Option<&'static str>)> {
    Some(match (first, second) {
        ("had", "been") => (Some("hɐd"), Some("bɪn")),
        ("have", "been") => (Some("hɐv"), Some("bɪn")),
        ("has", "been") => (Some("hɐz"), Some("bɪn")),
        ("there", "are") => (Some("ðɛɹ"), Some("ˌɑːɹ")),
        ("do", "not") => (Some("duː"), None),
        ("did", "not") => (Some("dɪd"), None),
        ("many", "of") => (Some("mˈɛnɪ"), Some("əv")),
        ("than", "a") => (Some("ðˌæn"), Some("ə")),
        ("to", "be") => (None, Some("bi")),
        ("out", "of") => (Some("ˌaʊɾ"), Some("əv")),
        ("each", "of") => (None, Some("əv")),
        ("at", "a") => (Some("æɾ"), Some("ə")),
        _ => return None,
    })
}

/// Cross-word effects inside each stretch of words not broken by punctuation.
fn apply_boundaries(toks: &mut [PhonToken]) {
    let mut pair_second: Vec<(usize, &'static str)> = Vec::new();
    for i in 0..toks.len() {
        let next = match toks.get(i + 1) {
            Some(PhonToken::Word { text, ipa }) => Some((text.to_lowercase(), ipa.clone())),
            _ => None,
        };
        let lower = match &toks[i] {
            PhonToken::Word { text, .. } => text.to_lowercase(),
            PhonToken::Punct(_) => continue,
        };
        let prev_word = match i.checked_sub(1).map(|k| &toks[k]) {
            Some(PhonToken::Word { text, .. }) => Some(text.to_lowercase()),
            _ => None,
        };
        let PhonToken::Word { ipa, .. } = &mut toks[i] else {
            continue;
        };
        // *I am* is `aɪ ɐm`; a final *is* after *it* is stressed (*here it is*).
        if lower == "am" && prev_word.as_deref() == Some("i") {
            *ipa = "ɐm".into();
        }
        let Some((next_text, next_ipa)) = next else {
            if let Some(f) = clause_final_form(&lower) {
                *ipa = f.into();
            } else if lower == "is" && prev_word.as_deref() == Some("it") {
                *ipa = "ˈɪz".into();
            }
            continue;
        };
        let vowel_next = starts_with_vowel(&next_ipa);
        // A few verbs and adverbs take only secondary stress before a stressed word (*make sense*
        // `mˌeɪk sˈɛns`, but *make it* `mˈeɪk ɪt`).
        if matches!(lower.as_str(), "make" | "makes" | "made" | "much" | "down")
            && next_ipa.contains('ˈ')
        {
            *ipa = ipa.replace('ˈ', "ˌ");
        }
        let article_next = matches!(next_text.as_str(), "the" | "a" | "an");
        match lower.as_str() {
            "the" if vowel_next => *ipa = "ðɪ".into(),
            "to" if vowel_next => *ipa = "tʊ".into(),
            "for" if article_next => *ipa = if vowel_next { "fɚɹ" } else { "fɚ" }.into(),
            "on" if article_next => *ipa = "ɔn".into(),
            "it" | "at" | "what" | "get"
                if starts_unstressed_vowel(&next_ipa) && ipa.ends_with('t') =>
            {
                ipa.pop();
                ipa.push('ɾ');
            }
            _ => {
                let r_spelled = lower.ends_with('r') || lower.ends_with("re");
                // espeak does not link into *and* in running speech (*faster and more*).
                if vowel_next
                    && next_text != "and"
                    && (ipa.ends_with('ɚ') || r_spelled && ipa.ends_with('ː'))
                {
                    ipa.push('ɹ');
                }
            }
        }
        if let Some((a, b)) = pair_forms(&lower, &next_text) {
            if let Some(a) = a {
                *ipa = a.into();
            }
            if let Some(b) = b {
                pair_second.push((i + 1, b));
            }
        }
        // The article after *for* is reduced: *for a walk* `fɚɹə`.
        if lower == "a"
            && i > 0
            && matches!(&toks[i - 1], PhonToken::Word { text, .. } if text.eq_ignore_ascii_case("for"))
            && let PhonToken::Word { ipa, .. } = &mut toks[i]
        {
            *ipa = "ə".into();
        }
    }
    for (k, form) in pair_second {
        if let PhonToken::Word { ipa, .. } = &mut toks[k] {
            *ipa = form.into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, ipa: &str) -> PhonToken {
        PhonToken::Word {
            text: text.into(),
            ipa: ipa.into(),
        }
    }

    #[test]
    fn splits_words_and_prosody_punctuation() {
        let toks: Vec<String> = split_clause("Hi, it's me — the well-known \"idol\"... ok?")
            .into_iter()
            .map(|t| match t {
                Tok::Word(w) => w.to_string(),
                Tok::Punct(c) => c.to_string(),
            })
            .collect();
        assert_eq!(
            toks,
            [
                "Hi", ",", "it's", "me", ",", "the", "well", "known", "idol", ".", ".", ".", "ok",
                "?"
            ]
        );
    }

    #[test]
    fn boundary_effects() {
        let mut t = vec![
            word("the", "ðə"),
            word("apple", "ˈæpəl"),
            word("is", "ɪz"),
            word("better", "bˈɛɾɚ"),
            word("at", "æt"),
            word("it", "ɪt"),
            word("or", "ɔːɹ"),
            word("to", "tə"),
            word("eat", "ˈiːt"),
            word("for", "fɔːɹ"),
            word("a", "ɐ"),
            word("while", "wˌaɪl"),
            word("I", "aɪ"),
            word("am", "æm"),
            word("that", "ðæt"),
            PhonToken::Punct('.'),
        ];
        apply_boundaries(&mut t);
        let ipas: Vec<&str> = t
            .iter()
            .filter_map(|x| match x {
                PhonToken::Word { ipa, .. } => Some(ipa.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            ipas,
            [
                "ðɪ",
                "ˈæpəl",
                "ɪz",
                "bˈɛɾɚɹ",
                "æɾ",
                "ɪɾ",
                "ɔːɹ",
                "tʊ",
                "ˈiːt",
                "fɚɹ",
                "ə",
                "wˌaɪl",
                "aɪ",
                "ɐm",
                "ðˈæt"
            ]
        );
    }

    #[test]
    fn dictionary_parsing_keeps_first_variant() {
        let d = CmuDict::parse(
            "# comment\nread R EH1 D\nread(2) R IY1 D\nbad X Y\nhello HH AH0 L OW1 # greeting\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(
            arpabet::to_arpabet_string(d.get("read").unwrap()),
            "R EH1 D"
        );
        assert_eq!(
            arpabet::to_arpabet_string(d.get("hello").unwrap()),
            "HH AH0 L OW1"
        );
    }
}
