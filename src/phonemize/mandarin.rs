//! Mandarin text → phonemes in the conventions Kokoro v1.0 was trained with (misaki's Chinese front
//! end, its v1.0 path): words from jieba, each syllable's pinyin turned into IPA with the tone as an
//! arrow after the vowel nucleus (`→` 1st, `↗` 2nd, `↓` 3rd, `↘` 4th, nothing for the neutral tone):
//! `中国` → `ꭧʊ→ŋ kwo↗`… written per word without spaces (`ꭧʊ→ŋkwo↗`), words separated by spaces.
//!
//! - Segmentation: `jieba-rs` (its dictionary is compiled in).
//! - Pinyin: the `pinyin` crate (each character's most common reading), corrected for a few
//!   common heteronyms inside words and for the neutral-tone particles and reduplications.
//! - Tone sandhi: a 3rd tone before another (written) 3rd becomes a 2nd (inside a word, and across a
//!   one-syllable word); 不 becomes 2nd before a 4th; 一 becomes 2nd before a 4th, 4th before the
//!   others, stays 1st in numbers, after 第 and at the end, and is neutral between a reduplicated
//!   verb (看一看).
//! - Numbers: digits are read as Chinese numbers (`2026` → 二千零二十六, a four-digit year before 年
//!   digit by digit, `3.5` → 三点五, `50%` → 百分之五十) before segmentation.
//!
//! Pinyin → IPA (the rules of pypinyin's strict initials/finals, as misaki applies them): initials
//! b p m f d t n l g k h j q x zh ch sh r z c s → p pʰ m f t tʰ n l k kʰ x ʨ ʨʰ ɕ ꭧ ꭧʰ ʂ ɻ ʦ ʦʰ s;
//! `y`/`w` spellings and `iu ui un` are expanded to their full finals (`you` = `iou`, `ui` = `uei`),
//! `u` after j/q/x is ü; the apical vowels of zhi/chi/shi/ri and zi/ci/si are `ɨ`.

use super::{Located, PhonToken};
use pinyin::ToPinyin;
use std::ops::Range;

/// A syllable: its pinyin without tone (`zhong`, `lü`) and its tone (1-4, 5 neutral).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syllable {
    pub pinyin: String,
    pub tone: u8,
}

fn split_tone(p: &str) -> Syllable {
    let (body, tone) = match p.chars().last() {
        Some(c @ '1'..='5') => (&p[..p.len() - 1], c as u8 - b'0'),
        _ => (p, 5),
    };
    Syllable {
        pinyin: body.replace('v', "ü"),
        tone,
    }
}

const INITIALS: [(&str, &str); 21] = [
    ("zh", "ꭧ"),
    ("ch", "ꭧʰ"),
    ("sh", "ʂ"),
    ("b", "p"),
    ("p", "pʰ"),
    ("m", "m"),
    ("f", "f"),
    ("d", "t"),
    ("t", "tʰ"),
    ("n", "n"),
    ("l", "l"),
    ("g", "k"),
    ("k", "kʰ"),
    ("h", "x"),
    ("j", "ʨ"),
    ("q", "ʨʰ"),
    ("x", "ɕ"),
    ("r", "ɻ"),
    ("z", "ʦ"),
    ("c", "ʦʰ"),
    ("s", "s"),
];

/// A final's phonemes, `0` where the tone goes.
fn final_ipa(f: &str) -> Option<&'static str> {
    Some(match f {
        "a" => "a0",
        "ai" => "ai0",
        "an" => "a0n",
        "ang" => "a0ŋ",
        "ao" => "au0",
        "e" => "ɤ0",
        "ei" => "ei0",
        "en" => "ə0n",
        "eng" => "ə0ŋ",
        "i" => "i0",
        "ia" => "ja0",
        "ian" => "jɛ0n",
        "iang" => "ja0ŋ",
        "iao" => "jau0",
        "ie" => "je0",
        "in" => "i0n",
        "iou" => "jou0",
        "ing" => "i0ŋ",
        "iong" => "jʊ0ŋ",
        "ong" => "ʊ0ŋ",
        "ou" => "ou0",
        "u" => "u0",
        "uei" => "wei0",
        "ua" => "wa0",
        "uai" => "wai0",
        "uan" => "wa0n",
        "uen" => "wə0n",
        "uang" => "wa0ŋ",
        "ueng" => "wə0ŋ",
        "uo" | "o" => "wo0",
        "ü" => "y0",
        "üe" => "ɥe0",
        "üan" => "ɥɛ0n",
        "ün" => "y0n",
        _ => return None,
    })
}

fn tone_mark(tone: u8) -> &'static str {
    match tone {
        1 => "→",
        2 => "↗",
        3 => "↓",
        4 => "↘",
        _ => "",
    }
}

/// The strict final of a syllable written without an initial (`y`/`w` spellings).
fn zero_initial_final(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('y') {
        return match rest {
            "i" | "in" | "ing" => rest.to_string(),
            "u" | "ü" => "ü".into(),
            "ue" | "üe" => "üe".into(),
            "uan" | "üan" => "üan".into(),
            "un" | "ün" => "ün".into(),
            "ou" => "iou".into(),
            _ if rest.starts_with('i') => rest.to_string(),
            _ => format!("i{rest}"),
        };
    }
    if let Some(rest) = s.strip_prefix('w') {
        return match rest {
            "u" => "u".into(),
            "ei" => "uei".into(),
            "en" => "uen".into(),
            _ => format!("u{rest}"),
        };
    }
    s.to_string()
}

/// One syllable's pinyin and tone → IPA with its tone arrow (`None`: not pinyin).
pub fn syllable_ipa(s: &Syllable) -> Option<String> {
    let py = s.pinyin.as_str();
    let mark = tone_mark(s.tone);
    // Whole-syllable interjections and syllabic nasals.
    let whole = match py {
        "er" => Some("ɚ0"),
        "ê" => Some("ɛ0"),
        "o" => Some("ɔ0"),
        "io" => Some("jɔ0"),
        "m" => Some("m0"),
        "n" => Some("n0"),
        "ng" => Some("ŋ0"),
        "hm" => Some("hm0"),
        "hng" => Some("hŋ0"),
        _ => None,
    };
    if let Some(w) = whole {
        return Some(w.replace('0', mark));
    }
    let (initial, ipa_initial, rest) = match INITIALS.iter().find(|(i, _)| py.starts_with(i)) {
        Some((i, ipa)) => (*i, *ipa, &py[i.len()..]),
        None => ("", "", py),
    };
    let fin = if initial.is_empty() {
        zero_initial_final(rest)
    } else {
        match (initial, rest) {
            ("j" | "q" | "x", r) if r.starts_with('u') => format!("ü{}", &r[1..]),
            (_, "iu") => "iou".into(),
            (_, "ui") => "uei".into(),
            (_, "un") => "uen".into(),
            (_, r) => r.to_string(),
        }
    };
    let body = match (initial, fin.as_str()) {
        ("zh" | "ch" | "sh" | "r" | "z" | "c" | "s", "i") => "ɨ0",
        _ => final_ipa(&fin)?,
    };
    Some(format!("{ipa_initial}{}", body.replace('0', mark)))
}

/// Chinese numerals.
const ZH_DIGITS: [char; 10] = ['零', '一', '二', '三', '四', '五', '六', '七', '八', '九'];

fn below_10000_zh(n: u64, leading: bool) -> String {
    let ds = [n / 1000, n / 100 % 10, n / 10 % 10, n % 10];
    let units = ["千", "百", "十", ""];
    let mut s = String::new();
    let mut zero = false;
    let mut started = false;
    for (k, &d) in ds.iter().enumerate() {
        if d == 0 {
            if started {
                zero = true;
            }
            continue;
        }
        if zero {
            s.push('零');
        }
        zero = false;
        // 十 alone at the start of a number (十五, not 一十五).
        if !(k == 2 && d == 1 && !started && leading) {
            s.push(ZH_DIGITS[d as usize]);
        }
        s.push_str(units[k]);
        started = true;
    }
    s
}

/// A whole number in Chinese numerals (`2026` → 二千零二十六, `105000` → 十万五千).
pub fn number_zh(n: u64) -> String {
    if n == 0 {
        return "零".into();
    }
    let units = ["", "万", "亿", "万亿"];
    let mut groups = Vec::new();
    let mut m = n;
    while m > 0 {
        groups.push(m % 10_000);
        m /= 10_000;
    }
    if groups.len() > units.len() {
        return n
            .to_string()
            .chars()
            .map(|c| ZH_DIGITS[c.to_digit(10).unwrap_or(0) as usize])
            .collect();
    }
    let mut s = String::new();
    let top = groups.len() - 1;
    let mut pending_zero = false;
    for k in (0..=top).rev() {
        let g = groups[k];
        if g == 0 {
            pending_zero = true;
            continue;
        }
        if pending_zero || (k < top && g < 1000) {
            s.push('零');
        }
        pending_zero = false;
        s.push_str(&below_10000_zh(g, k == top));
        s.push_str(units[k]);
    }
    s
}

/// Replace Arabic numbers in `text` by their Chinese reading.
pub fn numbers_to_zh(text: &str) -> String {
    numbers_to_zh_located(text).0
}

/// [`numbers_to_zh`], with the byte range of `text` each character of the result came from (a
/// number's reading: the whole number as written, with its `%`).
pub fn numbers_to_zh_located(text: &str) -> (String, Vec<Range<usize>>) {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = |i: usize| chars.get(i).map_or(text.len(), |c| c.0);
    let mut out = String::new();
    let mut places = Vec::new();
    let mut i = 0;
    let digit_zh = |c: char| ZH_DIGITS[c.to_digit(10).unwrap_or(0) as usize];
    while i < chars.len() {
        let c = chars[i].1;
        if !c.is_ascii_digit() {
            out.push(c);
            places.push(at(i)..at(i + 1));
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].1.is_ascii_digit() {
            i += 1;
        }
        let int: String = chars[start..i].iter().map(|c| c.1).collect();
        let mut frac = None;
        if i + 1 < chars.len() && chars[i].1 == '.' && chars[i + 1].1.is_ascii_digit() {
            let fs = i + 1;
            i += 1;
            while i < chars.len() && chars[i].1.is_ascii_digit() {
                i += 1;
            }
            frac = Some(chars[fs..i].iter().map(|c| c.1).collect::<String>());
        }
        let next = chars.get(i).map(|c| c.1);
        let percent = matches!(next, Some('%' | '％'));
        let year = frac.is_none() && int.len() == 4 && next == Some('年');
        let mut reading = if year || int.len() > 16 || (int.len() > 1 && int.starts_with('0')) {
            int.chars().map(digit_zh).collect()
        } else {
            number_zh(int.parse().unwrap_or(0))
        };
        if let Some(f) = frac {
            reading.push('点');
            reading.extend(f.chars().map(digit_zh));
        }
        if percent {
            reading.insert_str(0, "百分之");
            i += 1;
        }
        let place = at(start)..at(i);
        places.extend(reading.chars().map(|_| place.clone()));
        out.push_str(&reading);
    }
    (out, places)
}

/// Words whose syllables the character readings get wrong (heteronyms read by their word).
fn word_override(word: &str) -> Option<&'static [&'static str]> {
    Some(match word {
        "银行" => &["yin2", "hang2"],
        "行业" => &["hang2", "ye4"],
        "长大" => &["zhang3", "da4"],
        "音乐" => &["yin1", "yue4"],
        "快乐" => &["kuai4", "le4"],
        "觉得" => &["jue2", "de5"],
        "睡觉" => &["shui4", "jiao4"],
        "还是" => &["hai2", "shi4"],
        "还有" => &["hai2", "you3"],
        "朋友" => &["peng2", "you5"],
        "东西" => &["dong1", "xi5"],
        "什么" => &["shen2", "me5"],
        "怎么" => &["zen3", "me5"],
        "这么" => &["zhe4", "me5"],
        "那么" => &["na4", "me5"],
        "多少" => &["duo1", "shao5"],
        "喜欢" => &["xi3", "huan5"],
        "时候" => &["shi2", "hou5"],
        "知道" => &["zhi1", "dao5"],
        "为了" => &["wei4", "le5"],
        "因为" => &["yin1", "wei4"],
        "还" => &["hai2"],
        "得" => &["de5"],
        "地" => &["de5"],
        "了" => &["le5"],
        "着" => &["zhe5"],
        "的" => &["de5"],
        "们" => &["men5"],
        "吗" => &["ma5"],
        "呢" => &["ne5"],
        "吧" => &["ba5"],
        "啊" => &["a5"],
        "呀" => &["ya5"],
        _ => return None,
    })
}

/// The syllables of one word, before sandhi.
fn word_syllables(word: &str) -> Vec<(char, Syllable)> {
    let chars: Vec<char> = word.chars().collect();
    if let Some(ov) = word_override(word)
        && ov.len() == chars.len()
    {
        return chars
            .iter()
            .zip(ov.iter())
            .map(|(c, p)| (*c, split_tone(p)))
            .collect();
    }
    let mut out: Vec<(char, Syllable)> = Vec::new();
    for (k, &c) in chars.iter().enumerate() {
        let Some(p) = c.to_pinyin() else { continue };
        let mut s = split_tone(p.with_tone_num_end());
        // Suffixes and particles inside a word are neutral (们, 子 after a noun root, 的, 了).
        let last = k + 1 == chars.len();
        if k > 0 && last && matches!(c, '们' | '子' | '么' | '的' | '了' | '吗' | '呢' | '吧')
        {
            s.tone = 5;
        }
        // A reduplicated syllable (妈妈, 谢谢, 看看) is neutral the second time.
        if k > 0 && chars[k - 1] == c && chars.len() == 2 {
            s.tone = 5;
        }
        out.push((c, s));
    }
    out
}

/// Apply 不/一 and 3-3 sandhi to the syllables of a clause, `words[i]` a word's (char, syllable)s.
pub fn sandhi(words: &mut [Vec<(char, Syllable)>]) {
    let flat: Vec<(usize, usize)> = words
        .iter()
        .enumerate()
        .flat_map(|(w, s)| (0..s.len()).map(move |k| (w, k)))
        .collect();
    let get = |words: &[Vec<(char, Syllable)>], i: usize| -> (char, u8) {
        let (w, k) = flat[i];
        (words[w][k].0, words[w][k].1.tone)
    };
    let is_num = |c: char| {
        ZH_DIGITS.contains(&c) || matches!(c, '十' | '百' | '千' | '万' | '亿' | '第' | '点')
    };
    for i in 0..flat.len() {
        let (c, _) = get(words, i);
        let next = (i + 1 < flat.len()).then(|| get(words, i + 1));
        let prev = (i > 0).then(|| get(words, i - 1));
        let (w, k) = flat[i];
        match c {
            '不' => {
                if let Some((_, 4)) = next {
                    words[w][k].1.tone = 2;
                }
            }
            '一' => {
                let in_number =
                    prev.is_some_and(|(p, _)| is_num(p)) || next.is_some_and(|(n, _)| is_num(n));
                let between_same = matches!((prev, next), (Some((p, _)), Some((n, _))) if p == n);
                let word_end = k + 1 == words[w].len() && words[w].len() > 1;
                words[w][k].1.tone = if between_same {
                    5
                } else if in_number || word_end || next.is_none() {
                    1
                } else if let Some((_, 4 | 5)) = next {
                    2
                } else {
                    4
                };
            }
            _ => {}
        }
    }
    // 3-3: inside each word, then across a boundary from a one-syllable word.
    // Each 3rd tone before a syllable that was a 3rd tone becomes a 2nd (展览馆 → 2 2 3).
    for word in words.iter_mut() {
        let before: Vec<u8> = word.iter().map(|(_, s)| s.tone).collect();
        for k in 0..word.len().saturating_sub(1) {
            if before[k] == 3 && before[k + 1] == 3 {
                word[k].1.tone = 2;
            }
        }
    }
    for i in 0..flat.len().saturating_sub(1) {
        let (w, k) = flat[i];
        let (nw, nk) = flat[i + 1];
        if w != nw && words[w].len() == 1 && words[w][k].1.tone == 3 && words[nw][nk].1.tone == 3 {
            words[w][k].1.tone = 2;
        }
    }
}

/// Chinese punctuation → the marks Kokoro's vocabulary has.
pub fn punct(c: char) -> Option<char> {
    Some(match c {
        '。' | '．' | '.' => '.',
        '，' | '、' | ',' => ',',
        '！' | '!' => '!',
        '？' | '?' => '?',
        '：' | ':' => ':',
        '；' | ';' => ';',
        '“' | '「' | '『' | '《' | '【' | '«' => '“',
        '”' | '」' | '』' | '》' | '】' | '»' => '”',
        '（' | '(' => '(',
        '）' | ')' => ')',
        '—' | '～' | '〜' => '—',
        '…' => '…',
        _ => return None,
    })
}

/// Is `c` a Han character (CJK unified ideographs and extension A)?
pub fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}' | '〇')
}

/// A word's place in the text and its syllables.
type PlacedWord = (Range<usize>, Vec<(char, Syllable)>);

/// The Mandarin front end.
pub struct MandarinPhonemizer {
    jieba: jieba_rs::Jieba,
}

impl Default for MandarinPhonemizer {
    fn default() -> Self {
        Self::new()
    }
}

impl MandarinPhonemizer {
    /// Build the segmenter (its dictionary is compiled in; about 0.3 s).
    pub fn new() -> Self {
        MandarinPhonemizer {
            jieba: jieba_rs::Jieba::new(),
        }
    }

    /// Mandarin text → word tokens and punctuation (non-Han, non-punctuation text is dropped; the
    /// router sends Latin to the English front end first).
    pub fn phonemize(&self, text: &str) -> Vec<PhonToken> {
        self.phonemize_located(text)
            .into_iter()
            .map(|l| l.token)
            .collect()
    }

    /// [`MandarinPhonemizer::phonemize`] with each token's byte range in `text`: a word's is the
    /// text it was read from (a number's words are one word, the number as written, `2026年`'s year
    /// and `50%` whole), and the word's text is that range's.
    pub fn phonemize_located(&self, text: &str) -> Vec<Located> {
        let (conv, places) = numbers_to_zh_located(text);
        enum Piece {
            Word(Range<usize>, Vec<(char, Syllable)>),
            Punct(char, Range<usize>),
        }
        let mut pieces: Vec<Piece> = Vec::new();
        // Character index of the converted text, found in order.
        let mut cursor = 0usize;
        let conv_chars: Vec<char> = conv.chars().collect();
        for t in self.jieba.cut(&conv, true) {
            let w = t.word;
            let n = w.chars().count();
            // jieba's words are the text's in order; find this one from the cursor.
            let first = w.chars().next();
            while cursor < conv_chars.len() && Some(conv_chars[cursor]) != first {
                cursor += 1;
            }
            let span = cursor.min(places.len())..(cursor + n).min(places.len());
            cursor = span.end;
            let src = match (
                places.get(span.start),
                span.end.checked_sub(1).and_then(|e| places.get(e)),
            ) {
                (Some(a), Some(b)) if !span.is_empty() => a.start..b.end,
                _ => continue,
            };
            if w.chars().all(is_han) {
                let syl = word_syllables(w);
                if syl.is_empty() {
                    continue;
                }
                // The words one number is read as are one word (its place is the number's).
                if let Some(Piece::Word(prev, ps)) = pieces.last_mut()
                    && prev.end > src.start
                {
                    prev.end = prev.end.max(src.end);
                    ps.extend(syl);
                    continue;
                }
                pieces.push(Piece::Word(src, syl));
            } else {
                for (k, c) in w.chars().enumerate() {
                    if let Some(p) = punct(c) {
                        pieces.push(Piece::Punct(p, places[span.start + k].clone()));
                    }
                }
            }
        }
        // Sandhi runs over each stretch between punctuation marks.
        let mut out = Vec::new();
        let mut run: Vec<PlacedWord> = Vec::new();
        let flush = |run: &mut Vec<PlacedWord>, out: &mut Vec<Located>| {
            let mut syl: Vec<Vec<(char, Syllable)>> = run.iter().map(|(_, s)| s.clone()).collect();
            sandhi(&mut syl);
            for ((src, _), s) in run.drain(..).zip(syl) {
                let ipa: String = s.iter().filter_map(|(_, s)| syllable_ipa(s)).collect();
                if !ipa.is_empty() {
                    out.push(Located {
                        token: PhonToken::Word {
                            text: text[src.clone()].to_string(),
                            ipa,
                        },
                        src: Some(src),
                    });
                }
            }
        };
        for p in pieces {
            match p {
                Piece::Word(r, s) => run.push((r, s)),
                Piece::Punct(c, r) => {
                    flush(&mut run, &mut out);
                    out.push(Located {
                        token: PhonToken::Punct(c),
                        src: Some(r),
                    });
                }
            }
        }
        flush(&mut run, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipa(p: &str) -> String {
        syllable_ipa(&split_tone(p)).unwrap()
    }

    #[test]
    fn initials_and_finals() {
        assert_eq!(ipa("ma1"), "ma→");
        assert_eq!(ipa("zhong1"), "ꭧʊ→ŋ");
        assert_eq!(ipa("guo2"), "kwo↗");
        assert_eq!(ipa("ni3"), "ni↓");
        assert_eq!(ipa("hao3"), "xau↓");
        assert_eq!(ipa("shi4"), "ʂɨ↘"); // apical vowel after sh
        assert_eq!(ipa("si1"), "sɨ→"); // and after s
        assert_eq!(ipa("qu4"), "ʨʰy↘"); // u after q is ü
        assert_eq!(ipa("xue2"), "ɕɥe↗");
        assert_eq!(ipa("you3"), "jou↓"); // y spelling
        assert_eq!(ipa("wei4"), "wei↘"); // w spelling
        assert_eq!(ipa("dui4"), "twei↘"); // ui = uei
        assert_eq!(ipa("liu2"), "ljou↗"); // iu = iou
        assert_eq!(ipa("lü4"), "ly↘");
        assert_eq!(ipa("de5"), "tɤ"); // neutral: no arrow
        assert_eq!(ipa("er4"), "ɚ↘");
        assert_eq!(ipa("bo1"), "pwo→");
        assert_eq!(ipa("yuan2"), "ɥɛ↗n");
    }

    fn syl(c: char, p: &str) -> (char, Syllable) {
        (c, split_tone(p))
    }

    fn tones(words: &[Vec<(char, Syllable)>]) -> Vec<u8> {
        words.iter().flatten().map(|(_, s)| s.tone).collect()
    }

    #[test]
    fn third_tone_before_third_becomes_second() {
        let mut w = vec![vec![syl('你', "ni3"), syl('好', "hao3")]];
        sandhi(&mut w);
        assert_eq!(tones(&w), [2, 3]);
        // Three in a row inside a word: right to left, 展览馆 → 2 2 3.
        let mut w = vec![vec![
            syl('展', "zhan3"),
            syl('览', "lan3"),
            syl('馆', "guan3"),
        ]];
        sandhi(&mut w);
        assert_eq!(tones(&w), [2, 2, 3]);
    }

    #[test]
    fn bu_and_yi_change_with_what_follows() {
        let mut w = vec![vec![syl('不', "bu4")], vec![syl('是', "shi4")]];
        sandhi(&mut w);
        assert_eq!(tones(&w), [2, 4]);
        let mut w = vec![vec![syl('不', "bu4")], vec![syl('好', "hao3")]];
        sandhi(&mut w);
        assert_eq!(tones(&w), [4, 3]);
        // 一 before a 4th tone: 2nd; before a 1st: 4th.
        let mut w = vec![vec![syl('一', "yi1"), syl('样', "yang4")]];
        sandhi(&mut w);
        assert_eq!(tones(&w), [2, 4]);
        let mut w = vec![vec![syl('一', "yi1"), syl('天', "tian1")]];
        sandhi(&mut w);
        assert_eq!(tones(&w), [4, 1]);
        // In a number and after 第: stays 1st.
        let mut w = vec![
            vec![syl('第', "di4"), syl('一', "yi1")],
            vec![syl('个', "ge4")],
        ];
        sandhi(&mut w);
        assert_eq!(tones(&w), [4, 1, 4]);
        // Between a reduplicated verb: neutral.
        let mut w = vec![
            vec![syl('看', "kan4")],
            vec![syl('一', "yi1")],
            vec![syl('看', "kan4")],
        ];
        sandhi(&mut w);
        assert_eq!(tones(&w), [4, 5, 4]);
    }

    #[test]
    fn numbers_read_in_chinese() {
        assert_eq!(number_zh(0), "零");
        assert_eq!(number_zh(10), "十");
        assert_eq!(number_zh(15), "十五");
        assert_eq!(number_zh(105), "一百零五");
        assert_eq!(number_zh(2026), "二千零二十六");
        assert_eq!(number_zh(10000), "一万");
        assert_eq!(number_zh(105000), "十万五千");
        assert_eq!(number_zh(100_000_001), "一亿零一");
        assert_eq!(numbers_to_zh("2026年"), "二零二六年");
        assert_eq!(numbers_to_zh("3.5元"), "三点五元");
        assert_eq!(numbers_to_zh("50%"), "百分之五十");
    }
}
