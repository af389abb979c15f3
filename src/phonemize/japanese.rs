//! Japanese text → phonemes in the conventions Kokoro was trained with (misaki's Japanese romanizer,
//! a Hepburn-like IPA): `か` → `ka`, `し` → `ɕi`, `つ` → `ʦɨ`, `ふ` → `ɸɯ`, `り` → `ɾʲi`, the
//! long-vowel mark `ー` → `ː`, the small `っ` (a geminate closure) → `ʔ`, and the moraic `ん` as the
//! nasal the next sound makes it (`m` before m/p/b, `ŋ` before k/g, `ɲ` before ɲ/ʨ/ʥ, `n` before
//! n/t/d/ɾ/z, `ɴ` elsewhere).
//!
//! Readings: the text is split into words by a MeCab dictionary ([`super::mecab`], the NAIST
//! Japanese Dictionary from Open JTalk) and each word is read by its *pronunciation* field (`東京` →
//! `トーキョー`, the particle `は` → `ワ`), which already writes long vowels as `ー`. Words the
//! dictionary does not know are read from their kana; unknown kanji are dropped with a warning.
//! Digits are read as Japanese numbers ([`number_kana`]) before that. Words are grouped into
//! phrases (a content word with the particles, auxiliaries and suffixes after it), one
//! [`PhonToken::Word`] each, as misaki writes them, space-separated.
//!
//! Pitch accent: Kokoro v1.0's Japanese phonemes carry none (misaki writes no accent marks), so none
//! is produced.

use super::mecab::{DictFiles, Dictionary, Morpheme};
use super::{Located, PhonToken, PhonemizeError};
use std::ops::Range;

/// Hiragana (and a few katakana with no hiragana twin) → phonemes, one mora each.
fn mora(c: char) -> Option<&'static str> {
    Some(match c {
        'ぁ' | 'あ' => "a",
        'ぃ' | 'い' | 'ゐ' => "i",
        'ぅ' | 'う' => "ɯ",
        'ぇ' | 'え' | 'ゑ' => "e",
        'ぉ' | 'お' | 'を' => "o",
        'か' | 'ゕ' => "ka",
        'が' => "ɡa",
        'き' => "kʲi",
        'ぎ' => "ɡʲi",
        'く' => "kɯ",
        'ぐ' => "ɡɯ",
        'け' | 'ゖ' => "ke",
        'げ' => "ɡe",
        'こ' => "ko",
        'ご' => "ɡo",
        'さ' => "sa",
        'ざ' => "ʣa",
        'し' => "ɕi",
        'じ' | 'ぢ' => "ʥi",
        'す' => "sɨ",
        'ず' | 'づ' => "zɨ",
        'せ' => "se",
        'ぜ' => "ʣe",
        'そ' => "so",
        'ぞ' => "ʣo",
        'た' => "ta",
        'だ' => "da",
        'ち' => "ʨi",
        'つ' => "ʦɨ",
        'て' => "te",
        'で' => "de",
        'と' => "to",
        'ど' => "do",
        'な' => "na",
        'に' => "ɲi",
        'ぬ' => "nɯ",
        'ね' => "ne",
        'の' => "no",
        'は' => "ha",
        'ば' => "ba",
        'ぱ' => "pa",
        'ひ' => "çi",
        'び' => "bʲi",
        'ぴ' => "pʲi",
        'ふ' => "ɸɯ",
        'ぶ' => "bɯ",
        'ぷ' => "pɯ",
        'へ' => "he",
        'べ' => "be",
        'ぺ' => "pe",
        'ほ' => "ho",
        'ぼ' => "bo",
        'ぽ' => "po",
        'ま' => "ma",
        'み' => "mʲi",
        'む' => "mɯ",
        'め' => "me",
        'も' => "mo",
        'ゃ' | 'や' => "ja",
        'ゅ' | 'ゆ' => "jɯ",
        'ょ' | 'よ' => "jo",
        'ら' => "ɾa",
        'り' => "ɾʲi",
        'る' => "ɾɯ",
        'れ' => "ɾe",
        'ろ' => "ɾo",
        'ゎ' | 'わ' => "βa",
        'ゔ' => "vɯ",
        'ヷ' => "va",
        'ヸ' => "vʲi",
        'ヹ' => "ve",
        'ヺ' => "vo",
        _ => return None,
    })
}

/// Two kana read as one mora (a kana and a small vowel or glide after it).
fn digraph(a: char, b: char) -> Option<&'static str> {
    Some(match (a, b) {
        ('い', 'ぇ') => "je",
        ('う', 'ぃ') => "βi",
        ('う', 'ぇ') => "βe",
        ('う', 'ぉ') => "βo",
        ('き', 'ぇ') => "kʲe",
        ('き', 'ゃ') => "kʲa",
        ('き', 'ゅ') => "kʲɨ",
        ('き', 'ょ') => "kʲo",
        ('ぎ', 'ゃ') => "ɡʲa",
        ('ぎ', 'ゅ') => "ɡʲɨ",
        ('ぎ', 'ょ') => "ɡʲo",
        ('く', 'ぁ') => "kᵝa",
        ('く', 'ぃ') => "kᵝi",
        ('く', 'ぇ') => "kᵝe",
        ('く', 'ぉ') => "kᵝo",
        ('ぐ', 'ぁ') => "ɡᵝa",
        ('ぐ', 'ぃ') => "ɡᵝi",
        ('ぐ', 'ぇ') => "ɡᵝe",
        ('ぐ', 'ぉ') => "ɡᵝo",
        ('し', 'ぇ') => "ɕe",
        ('し', 'ゃ') => "ɕa",
        ('し', 'ゅ') => "ɕɨ",
        ('し', 'ょ') => "ɕo",
        ('じ', 'ぇ') => "ʥe",
        ('じ' | 'ぢ', 'ゃ') => "ʥa",
        ('じ' | 'ぢ', 'ゅ') => "ʥɨ",
        ('じ' | 'ぢ', 'ょ') => "ʥo",
        ('ち', 'ぇ') => "ʨe",
        ('ち', 'ゃ') => "ʨa",
        ('ち', 'ゅ') => "ʨɨ",
        ('ち', 'ょ') => "ʨo",
        ('つ', 'ぁ') => "ʦa",
        ('つ', 'ぃ') => "ʦʲi",
        ('つ', 'ぇ') => "ʦe",
        ('つ', 'ぉ') => "ʦo",
        ('て', 'ぃ') => "tʲi",
        ('て', 'ゅ') => "tʲɨ",
        ('で', 'ぃ') => "dʲi",
        ('で', 'ゅ') => "dʲɨ",
        ('と', 'ぅ') => "tɯ",
        ('ど', 'ぅ') => "dɯ",
        ('に', 'ぇ') => "ɲe",
        ('に', 'ゃ') => "ɲa",
        ('に', 'ゅ') => "ɲɨ",
        ('に', 'ょ') => "ɲo",
        ('ひ', 'ぇ') => "çe",
        ('ひ', 'ゃ') => "ça",
        ('ひ', 'ゅ') => "çɨ",
        ('ひ', 'ょ') => "ço",
        ('び', 'ゃ') => "bʲa",
        ('び', 'ゅ') => "bʲɨ",
        ('び', 'ょ') => "bʲo",
        ('ぴ', 'ゃ') => "pʲa",
        ('ぴ', 'ゅ') => "pʲɨ",
        ('ぴ', 'ょ') => "pʲo",
        ('ふ', 'ぁ') => "ɸa",
        ('ふ', 'ぃ') => "ɸʲi",
        ('ふ', 'ぇ') => "ɸe",
        ('ふ', 'ぉ') => "ɸo",
        ('ふ', 'ゅ') => "ɸʲɨ",
        ('ふ', 'ょ') => "ɸʲo",
        ('み', 'ゃ') => "mʲa",
        ('み', 'ゅ') => "mʲɨ",
        ('み', 'ょ') => "mʲo",
        ('り', 'ゃ') => "ɾʲa",
        ('り', 'ゅ') => "ɾʲɨ",
        ('り', 'ょ') => "ɾʲo",
        ('ゔ', 'ぁ') => "va",
        ('ゔ', 'ぃ') => "vʲi",
        ('ゔ', 'ぇ') => "ve",
        ('ゔ', 'ぉ') => "vo",
        ('ゔ', 'ゅ') => "bʲɨ",
        ('ゔ', 'ょ') => "bʲo",
        _ => return None,
    })
}

fn is_small(c: char) -> bool {
    matches!(c, 'ゃ' | 'ゅ' | 'ょ' | 'ぁ' | 'ぃ' | 'ぅ' | 'ぇ' | 'ぉ')
}

/// Katakana → hiragana (the kana with a hiragana twin; `ー` and the rest unchanged).
pub fn to_hiragana(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'ァ'..='ヶ' => char::from_u32(c as u32 - 0x60).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// Is `c` kana (hiragana, katakana, the long-vowel mark)?
pub fn is_kana(c: char) -> bool {
    matches!(c, '\u{3041}'..='\u{309F}' | '\u{30A0}'..='\u{30FF}' | '\u{31F0}'..='\u{31FF}' | 'ｦ'..='ﾟ')
}

/// The nasal `ん` becomes before the phonemes `next` (the reading of the following mora).
fn moraic_n(next: Option<&str>) -> &'static str {
    let Some(next) = next else { return "ɴ" };
    let first = next.chars().next().unwrap_or(' ');
    match first {
        'm' | 'p' | 'b' => "m",
        'k' | 'ɡ' => "ŋ",
        'ɲ' | 'ʨ' | 'ʥ' => "ɲ",
        'n' | 't' | 'd' | 'ɾ' | 'z' => "n",
        _ => "ɴ",
    }
}

/// The phonemes of the mora starting at `i` in `kana` (hiragana), as it would be read alone.
fn mora_at(kana: &[char], i: usize) -> Option<&'static str> {
    let c = *kana.get(i)?;
    if let Some(&n) = kana.get(i + 1)
        && let Some(d) = digraph(c, n)
    {
        return Some(d);
    }
    mora(c)
}

/// A word's kana reading (hiragana or katakana) → phonemes.
pub fn kana_to_phonemes(reading: &str) -> String {
    let kana: Vec<char> = to_hiragana(reading).chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < kana.len() {
        let c = kana[i];
        let next = kana.get(i + 1).copied();
        if let Some(n) = next
            && let Some(d) = digraph(c, n)
        {
            out.push_str(d);
            i += 2;
            continue;
        }
        match c {
            'ー' => out.push('ː'),
            'っ' => {
                // A geminate closure; a small tsu before a small vowel is no mora.
                if !next.is_some_and(is_small) {
                    out.push('ʔ');
                }
            }
            'ん' => out.push_str(moraic_n(mora_at(&kana, i + 1))),
            'ゝ' => {
                // Repeat the mora before.
                if i > 0
                    && let Some(p) = mora(kana[i - 1])
                {
                    out.push_str(p);
                }
            }
            _ if next.is_some_and(is_small) => {
                // A kana and a small vowel with no digraph of their own: the consonant, then it.
                if let (Some(m), Some(s)) = (mora(c), next.and_then(mora)) {
                    let mut cons: Vec<char> = m.chars().collect();
                    cons.pop();
                    out.extend(cons);
                    out.push_str(s);
                }
                i += 2;
                continue;
            }
            _ => {
                if let Some(m) = mora(c) {
                    out.push_str(m);
                }
            }
        }
        i += 1;
    }
    out
}

/// Japanese punctuation → the marks Kokoro's vocabulary has (`None`: not punctuation).
pub fn punct(c: char) -> Option<char> {
    Some(match c {
        '。' | '．' | '.' => '.',
        '、' | '，' | ',' => ',',
        '？' | '?' => '?',
        '！' | '!' => '!',
        '：' | ':' => ':',
        '；' | ';' => ';',
        '「' | '『' | '“' | '«' => '“',
        '」' | '』' | '”' | '»' => '”',
        '（' | '(' | '《' | '【' => '(',
        '）' | ')' | '》' | '】' => ')',
        '～' | '〜' | '—' | '―' => '—',
        '…' | '‥' => '…',
        _ => return None,
    })
}

const DIGITS: [&str; 10] = [
    "ぜろ",
    "いち",
    "に",
    "さん",
    "よん",
    "ご",
    "ろく",
    "なな",
    "はち",
    "きゅう",
];

/// 0..=9999 in hiragana, with the sound changes of 300/600/800 and 3000/8000 (`さんびゃく`,
/// `ろっぴゃく`, `はっぴゃく`, `さんぜん`, `はっせん`); "one hundred" and "one thousand" are bare
/// `ひゃく`, `せん`. Zero is empty (it is read only on its own).
fn below_10000(n: u64) -> String {
    let (th, h, t, o) = (n / 1000, n / 100 % 10, n / 10 % 10, n % 10);
    let mut s = String::new();
    match th {
        0 => {}
        1 => s.push_str("せん"),
        3 => s.push_str("さんぜん"),
        8 => s.push_str("はっせん"),
        d => {
            s.push_str(DIGITS[d as usize]);
            s.push_str("せん");
        }
    }
    match h {
        0 => {}
        1 => s.push_str("ひゃく"),
        3 => s.push_str("さんびゃく"),
        6 => s.push_str("ろっぴゃく"),
        8 => s.push_str("はっぴゃく"),
        d => {
            s.push_str(DIGITS[d as usize]);
            s.push_str("ひゃく");
        }
    }
    match t {
        0 => {}
        1 => s.push_str("じゅう"),
        d => {
            s.push_str(DIGITS[d as usize]);
            s.push_str("じゅう");
        }
    }
    if o > 0 {
        s.push_str(DIGITS[o as usize]);
    }
    s
}

/// A whole number in hiragana (`1234` → `せんにひゃくさんじゅうよん`), by groups of four digits
/// (`まん`, `おく`, `ちょう`, `けい`); `None` past 10^20.
pub fn number_kana(n: u64) -> Option<String> {
    if n == 0 {
        return Some("ぜろ".into());
    }
    const UNITS: [&str; 5] = ["", "まん", "おく", "ちょう", "けい"];
    let mut groups = Vec::new();
    let mut m = n;
    while m > 0 {
        groups.push(m % 10_000);
        m /= 10_000;
    }
    if groups.len() > UNITS.len() {
        return None;
    }
    let mut s = String::new();
    for (k, &g) in groups.iter().enumerate().rev() {
        if g == 0 {
            continue;
        }
        let mut part = below_10000(g);
        if k >= 1 && g == 1 {
            // 一万, 一億: the one is said; 一兆 is いっちょう.
            part = if k == 3 {
                "いっ".into()
            } else {
                "いち".into()
            };
        } else if k == 3 && g % 10 == 8 {
            part = format!("{}はっ", part.trim_end_matches("はち"));
        } else if k == 3 && g % 100 == 10 {
            part = format!("{}じゅっ", part.trim_end_matches("じゅう"));
        }
        s.push_str(&part);
        s.push_str(UNITS[k]);
    }
    Some(s)
}

/// Digits as read aloud: a whole number, or with a decimal part read digit by digit (`3.14` →
/// `さんてんいちよん`); strings of more than 20 digits are read digit by digit.
pub fn digits_kana(int: &str, frac: Option<&str>) -> String {
    let digit = |c: char| DIGITS[c.to_digit(10).unwrap_or(0) as usize];
    let mut s = match int.parse::<u64>().ok().and_then(number_kana) {
        Some(k) if int.len() <= 20 => k,
        _ => int.chars().map(digit).collect(),
    };
    if let Some(f) = frac.filter(|f| !f.is_empty()) {
        s.push_str("てん");
        s.extend(f.chars().map(digit));
    }
    s
}

/// Full-width ASCII → ASCII, half-width katakana → full-width (the common forms; NFKC's effect on
/// the text a reply holds).
pub fn normalize_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '！'..='～' if !matches!(c, '（' | '）' | '，' | '：' | '；' | '？' | '！' | '～') => {
                out.push(char::from_u32(c as u32 - 0xFEE0).unwrap_or(c))
            }
            '\u{3000}' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// A closure `ʔ` binds the words either side of it (misaki writes no space next to it); the joined
/// word's text and place are both words' (`text` is the clause the places index).
fn join_at_sokuon(tokens: Vec<Located>, text: &str) -> Vec<Located> {
    let mut out: Vec<Located> = Vec::with_capacity(tokens.len());
    for t in tokens {
        if let PhonToken::Word { text: wt, ipa } = &t.token
            && let Some(Located {
                token: PhonToken::Word { text: pt, ipa: pi },
                src,
            }) = out.last_mut()
            && (pi.ends_with('ʔ') || ipa.starts_with('ʔ'))
        {
            pi.push_str(ipa);
            match (src.clone(), &t.src) {
                (Some(a), Some(b)) => {
                    let r = a.start.min(b.start)..a.end.max(b.end);
                    *pt = text[r.clone()].to_string();
                    *src = Some(r);
                }
                _ => {
                    pt.push_str(wt);
                    *src = None;
                }
            }
            continue;
        }
        out.push(t);
    }
    out
}

/// `text` with full-width forms narrowed ([`normalize_width`]) and, for each byte offset of the
/// narrowed text that starts a character (and its end), the offset in `text` it came from.
fn narrowed_with_offsets(text: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut map = Vec::with_capacity(text.len() + 1);
    for (at, c) in text.char_indices() {
        let n = normalize_width(c.encode_utf8(&mut [0u8; 4]));
        for _ in 0..n.len() {
            map.push(at);
        }
        out.push_str(&n);
    }
    map.push(text.len());
    (out, map)
}

/// The Japanese front end: a loaded dictionary.
pub struct JapanesePhonemizer {
    dict: Dictionary,
    words: std::collections::HashSet<String>,
}

impl JapanesePhonemizer {
    /// Load the dictionary `files`.
    pub fn load(files: &DictFiles) -> Result<JapanesePhonemizer, PhonemizeError> {
        let dict = Dictionary::load(files).map_err(|e| PhonemizeError::Load {
            path: e.path.clone(),
            message: format!("{} (run `idol fetch`)", e.message),
        })?;
        let mut words = std::collections::HashSet::new();
        if let Some(path) = &files.words {
            let text = std::fs::read_to_string(path).map_err(|e| PhonemizeError::Load {
                path: path.clone(),
                message: format!("{e} (run `idol fetch`)"),
            })?;
            words.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
        Ok(JapanesePhonemizer { dict, words })
    }

    /// The dictionary's words for `text` (for inspection).
    pub fn morphemes(&self, text: &str) -> Vec<Morpheme> {
        self.dict.tokenize(text)
    }

    /// The reading of one morpheme in kana: its pronunciation field, else its reading, else (kana
    /// only) its surface.
    fn reading(m: &Morpheme) -> Option<String> {
        for i in [8, 7] {
            if let Some(f) = m.features.get(i)
                && !f.is_empty()
                && f != "*"
                && f.chars().all(|c| is_kana(c) || c == '’' || c == '\'')
            {
                return Some(f.chars().filter(|&c| c != '’' && c != '\'').collect());
            }
        }
        if m.surface.chars().all(is_kana) {
            return Some(m.surface.clone());
        }
        None
    }

    /// Japanese text → phrase tokens (see the module docs).
    pub fn phonemize(&self, text: &str) -> Vec<PhonToken> {
        self.phonemize_located(text)
            .into_iter()
            .map(|l| l.token)
            .collect()
    }

    /// Japanese text → phrase tokens, each word with the byte range of `text` it was read from (a
    /// number's words: the digits) and that range's text as its own.
    pub fn phonemize_located(&self, text: &str) -> Vec<Located> {
        let (norm, map) = narrowed_with_offsets(text);
        let orig = |r: &Range<usize>| map[r.start]..map[r.end];
        let mut tokens: Vec<Located> = Vec::new();
        // The phrase being built: its kana and its place in the narrowed text.
        let mut phrase: Option<(String, Option<Range<usize>>, String)> = None;
        let flush =
            |tokens: &mut Vec<Located>,
             phrase: &mut Option<(String, Option<Range<usize>>, String)>| {
                if let Some((surface, r, kana)) = phrase.take() {
                    let ipa = kana_to_phonemes(&kana);
                    if !ipa.is_empty() {
                        let src = r.map(|r| orig(&r));
                        let text = match &src {
                            Some(s) => text[s.clone()].to_string(),
                            None => surface,
                        };
                        tokens.push(Located {
                            token: PhonToken::Word { text, ipa },
                            src,
                        });
                    }
                }
            };
        // Numbers are read before the dictionary sees the text: pieces of (is a number, the text or
        // the number's reading, place in the narrowed text).
        let chars: Vec<(usize, char)> = norm.char_indices().collect();
        let at = |i: usize| chars.get(i).map_or(norm.len(), |c| c.0);
        let mut i = 0;
        let mut run_start = 0;
        let mut pieces: Vec<(bool, String, Range<usize>)> = Vec::new();
        while i < chars.len() {
            if !chars[i].1.is_ascii_digit() {
                i += 1;
                continue;
            }
            if run_start < i {
                let r = at(run_start)..at(i);
                pieces.push((false, norm[r.clone()].to_string(), r));
            }
            let start = i;
            while i < chars.len() && (chars[i].1.is_ascii_digit() || chars[i].1 == ',') {
                i += 1;
            }
            // A comma after the digits is punctuation, not a thousands mark.
            while chars[i - 1].1 == ',' {
                i -= 1;
            }
            let int: String = chars[start..i]
                .iter()
                .map(|c| c.1)
                .filter(|c| *c != ',')
                .collect();
            let mut frac = None;
            if i + 1 < chars.len() && chars[i].1 == '.' && chars[i + 1].1.is_ascii_digit() {
                let fs = i + 1;
                i += 1;
                while i < chars.len() && chars[i].1.is_ascii_digit() {
                    i += 1;
                }
                frac = Some(chars[fs..i].iter().map(|c| c.1).collect::<String>());
            }
            pieces.push((true, digits_kana(&int, frac.as_deref()), at(start)..at(i)));
            run_start = i;
        }
        if run_start < chars.len() {
            let r = at(run_start)..norm.len();
            pieces.push((false, norm[r.clone()].to_string(), r));
        }
        for (is_number, piece, range) in pieces {
            if is_number {
                flush(&mut tokens, &mut phrase);
                phrase = Some((piece.clone(), Some(range), piece));
                continue;
            }
            let start = range.start;
            let morphemes = self.dict.tokenize(&piece);
            // Each morpheme's place: found in order in the piece.
            let mut cursor = 0;
            let places: Vec<Option<Range<usize>>> = morphemes
                .iter()
                .map(|m| {
                    let found = piece[cursor..].find(&m.surface)?;
                    let s = cursor + found;
                    cursor = s + m.surface.len();
                    Some(start + s..start + cursor)
                })
                .collect();
            let mut j = 0;
            while j < morphemes.len() {
                let m = &morphemes[j];
                if m.surface.chars().all(|c| punct(c).is_some()) {
                    flush(&mut tokens, &mut phrase);
                    for c in m.surface.chars().filter_map(punct) {
                        tokens.push(Located {
                            token: PhonToken::Punct(c),
                            src: places[j].as_ref().map(&orig),
                        });
                    }
                    j += 1;
                    continue;
                }
                // The longest run of words from here that the word list has as one word.
                let mut end = j + 1;
                let mut joined = String::new();
                for (e, n) in morphemes.iter().enumerate().skip(j) {
                    joined.push_str(&n.surface);
                    if e > j && self.words.contains(&joined) {
                        end = e + 1;
                    }
                }
                let mut surface = String::new();
                let mut kana = String::new();
                for n in &morphemes[j..end] {
                    surface.push_str(&n.surface);
                    match Self::reading(n) {
                        Some(r) => kana.push_str(&r),
                        None if n.surface.chars().any(|c| !c.is_ascii_punctuation()) => {
                            log::warn!("no reading for {:?}; skipped", n.surface)
                        }
                        None => {}
                    }
                }
                let place = match (&places[j], &places[end - 1]) {
                    (Some(a), Some(b)) => Some(a.start..b.end),
                    _ => None,
                };
                j = end;
                flush(&mut tokens, &mut phrase);
                if !kana.is_empty() {
                    phrase = Some((surface, place, kana));
                }
            }
        }
        flush(&mut tokens, &mut phrase);
        join_at_sokuon(tokens, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kana_follow_the_hepburn_table() {
        assert_eq!(kana_to_phonemes("か"), "ka");
        assert_eq!(kana_to_phonemes("し"), "ɕi");
        assert_eq!(kana_to_phonemes("つ"), "ʦɨ");
        assert_eq!(kana_to_phonemes("ふ"), "ɸɯ");
        assert_eq!(kana_to_phonemes("わ"), "βa");
        // Katakana read as hiragana.
        assert_eq!(kana_to_phonemes("カ"), "ka");
    }

    #[test]
    fn digraphs_are_one_mora() {
        assert_eq!(kana_to_phonemes("きょう"), "kʲoɯ");
        assert_eq!(kana_to_phonemes("しゃ"), "ɕa");
        assert_eq!(kana_to_phonemes("ちゅ"), "ʨɨ");
        assert_eq!(kana_to_phonemes("ティ"), "tʲi");
        assert_eq!(kana_to_phonemes("ファ"), "ɸa");
    }

    #[test]
    fn long_vowels_and_sokuon() {
        // トーキョー: long vowels from the long-vowel mark.
        assert_eq!(kana_to_phonemes("トーキョー"), "toːkʲoː");
        // がっこう: a geminate closure.
        assert_eq!(kana_to_phonemes("がっこう"), "ɡaʔkoɯ");
        assert_eq!(kana_to_phonemes("ちょっと"), "ʨoʔto");
    }

    #[test]
    fn moraic_n_takes_the_place_of_what_follows() {
        assert_eq!(kana_to_phonemes("さんぽ"), "sampo"); // before p: m
        assert_eq!(kana_to_phonemes("まんが"), "maŋɡa"); // before g: ŋ
        assert_eq!(kana_to_phonemes("こんにちは"), "koɲɲiʨiha"); // before ɲ: ɲ
        assert_eq!(kana_to_phonemes("ほん"), "hoɴ"); // at the end: ɴ
        assert_eq!(kana_to_phonemes("せんせい"), "seɴsei"); // before s: ɴ
        assert_eq!(kana_to_phonemes("かんじ"), "kaɲʥi"); // before ʥ: ɲ
        assert_eq!(kana_to_phonemes("おんな"), "onna"); // before n: n
    }

    #[test]
    fn numbers_read_with_their_sound_changes() {
        assert_eq!(number_kana(0).unwrap(), "ぜろ");
        assert_eq!(number_kana(10).unwrap(), "じゅう");
        assert_eq!(number_kana(21).unwrap(), "にじゅういち");
        assert_eq!(number_kana(300).unwrap(), "さんびゃく");
        assert_eq!(number_kana(600).unwrap(), "ろっぴゃく");
        assert_eq!(number_kana(800).unwrap(), "はっぴゃく");
        assert_eq!(number_kana(3000).unwrap(), "さんぜん");
        assert_eq!(number_kana(8000).unwrap(), "はっせん");
        assert_eq!(number_kana(1000).unwrap(), "せん");
        assert_eq!(number_kana(10000).unwrap(), "いちまん");
        assert_eq!(number_kana(2026).unwrap(), "にせんにじゅうろく");
        assert_eq!(number_kana(100_000_000).unwrap(), "いちおく");
        assert_eq!(number_kana(1_000_000_000_000).unwrap(), "いっちょう");
        assert_eq!(digits_kana("3", Some("14")), "さんてんいちよん");
    }

    #[test]
    fn punctuation_maps_to_the_vocabulary() {
        assert_eq!(punct('。'), Some('.'));
        assert_eq!(punct('、'), Some(','));
        assert_eq!(punct('！'), Some('!'));
        assert_eq!(punct('「'), Some('“'));
        assert_eq!(punct('あ'), None);
    }
}
