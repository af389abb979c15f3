//! Phonetic tables: which mouth each phone asks for.
//!
//! The internal viseme vocabulary is Oculus-15 ([`Viseme`]). Each phone also carries articulatory
//! targets (jaw opening, lip rounding, spreading, funnel, lower-lip tuck, tongue) and, per target, a
//! dominance weight: how strongly the phone insists on that target against its neighbours (see
//! `coarticulate.rs`). Vowels own the jaw and the lips; most consonants are unspecified for rounding
//! and jaw, so the neighbouring vowels show through them; bilabials, labiodentals and dentals own the
//! lip/teeth/tongue gestures that define them.
//!
//! Two alphabets are read: IPA as espeak-ng and Piper write it (`ɡ` U+0261, `ɾ`, `ᵻ`, `ɐ`, `n̩`,
//! diphthongs written as two vowels, r-coloured vowels, length marks, stress marks attached or
//! separate), and ARPAbet with stress digits (`AA1`), upper or lower case in files detected as ARPAbet.
//! A symbol not in the tables is split greedily into known symbols (`PT` → `P` `T`, `aɪ` → `a` `ɪ`,
//! `ɑːɹ` → `ɑː` `ɹ`); its span is divided among the parts.

use crate::speech::Stress;

/// The Oculus/OpenXR viseme set, in its canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Viseme {
    Sil = 0,
    PP,
    FF,
    TH,
    DD,
    Kk,
    CH,
    SS,
    Nn,
    RR,
    Aa,
    E,
    Ih,
    Oh,
    Ou,
}

impl Viseme {
    pub const COUNT: usize = 15;
    pub const ALL: [Viseme; 15] = [
        Viseme::Sil,
        Viseme::PP,
        Viseme::FF,
        Viseme::TH,
        Viseme::DD,
        Viseme::Kk,
        Viseme::CH,
        Viseme::SS,
        Viseme::Nn,
        Viseme::RR,
        Viseme::Aa,
        Viseme::E,
        Viseme::Ih,
        Viseme::Oh,
        Viseme::Ou,
    ];

    /// The Oculus name (`sil`, `PP`, ..., `ou`).
    pub fn name(self) -> &'static str {
        [
            "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh",
            "ou",
        ][self as usize]
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Rhubarb Lip Sync's mouth shapes for 2D animation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MouthShape {
    /// Closed lips (P B M).
    A,
    /// Slightly open, teeth together (most consonants, EE).
    B,
    /// Open (EH, AE, schwa).
    C,
    /// Wide open (AA).
    D,
    /// Slightly rounded (AO, ER).
    E,
    /// Puckered (UW, OW, W).
    F,
    /// Upper teeth on the lower lip (F V).
    G,
    /// Tongue up behind the teeth (L).
    H,
    /// Idle, at rest.
    X,
}

impl MouthShape {
    pub fn letter(self) -> char {
        match self {
            MouthShape::A => 'A',
            MouthShape::B => 'B',
            MouthShape::C => 'C',
            MouthShape::D => 'D',
            MouthShape::E => 'E',
            MouthShape::F => 'F',
            MouthShape::G => 'G',
            MouthShape::H => 'H',
            MouthShape::X => 'X',
        }
    }
}

/// Broad class of a phone, for timing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneClass {
    Silence,
    Vowel,
    Consonant,
    /// Takes its mouth from its neighbours (h, glottal stop).
    Transparent,
}

/// Index of each articulatory parameter in [`Phone::target`] / [`Phone::dominance`].
pub mod param {
    pub const JAW: usize = 0;
    pub const ROUND: usize = 1;
    pub const FUNNEL: usize = 2;
    pub const SPREAD: usize = 3;
    pub const TUCK: usize = 4;
    pub const TONGUE: usize = 5;
    /// Not a target: the weight of this phone's viseme in the viseme mix.
    pub const VIS: usize = 6;
    pub const COUNT: usize = 7;
}

/// What one phone asks of the mouth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phone {
    pub viseme: Viseme,
    pub class: PhoneClass,
    pub mouth: MouthShape,
    /// Lips must meet (p b m).
    pub bilabial: bool,
    /// Targets per [`param`] (VIS unused, 1).
    pub target: [f32; param::COUNT],
    /// Dominance magnitude per [`param`].
    pub dominance: [f32; param::COUNT],
    pub stress: Stress,
}

impl Phone {
    pub fn silence() -> Phone {
        Phone {
            viseme: Viseme::Sil,
            class: PhoneClass::Silence,
            mouth: MouthShape::X,
            bilabial: false,
            target: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            dominance: [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6],
            stress: Stress::None,
        }
    }

    fn vowel(
        viseme: Viseme,
        mouth: MouthShape,
        jaw: f32,
        round: f32,
        spread: f32,
        funnel: f32,
    ) -> Phone {
        Phone {
            viseme,
            class: PhoneClass::Vowel,
            mouth,
            bilabial: false,
            target: [jaw, round, funnel, spread, 0.0, 0.0, 1.0],
            dominance: [1.0, 1.0, 0.8, 0.9, 0.6, 0.5, 1.0],
            stress: Stress::None,
        }
    }

    fn consonant(viseme: Viseme, mouth: MouthShape, jaw: f32, jaw_dom: f32) -> Phone {
        Phone {
            viseme,
            class: PhoneClass::Consonant,
            mouth,
            bilabial: false,
            target: [jaw, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            // Unspecified for rounding and spreading: the vowels around show through.
            dominance: [jaw_dom, 0.12, 0.15, 0.15, 0.3, 0.4, 0.8],
            stress: Stress::None,
        }
    }

    fn with(mut self, p: usize, target: f32, dominance: f32) -> Phone {
        self.target[p] = target;
        self.dominance[p] = dominance;
        self
    }

    /// True when this phone is a vowel that carries (primary or secondary) stress.
    pub fn is_stressed_vowel(&self) -> bool {
        self.class == PhoneClass::Vowel && self.stress != Stress::None
    }
}

use MouthShape as M;
use Viseme as V;
use param::*;

/// The features of one IPA symbol (no stress or length marks), if known.
pub fn ipa(sym: &str) -> Option<Phone> {
    let c = Phone::consonant;
    let v = Phone::vowel;
    Some(match sym {
        // Bilabials: lips close; the jaw follows the vowels but rises.
        "p" | "b" | "m" | "m̩" | "ɱ" => {
            let mut p = c(V::PP, M::A, 0.05, 0.6).with(TUCK, 0.0, 0.8);
            p.bilabial = true;
            p.dominance[VIS] = 2.0;
            p
        }
        // Japanese ふ and わ: the lips come close and round without closing.
        "ɸ" | "β" => c(V::Ou, M::F, 0.08, 0.6)
            .with(ROUND, 0.8, 0.9)
            .with(FUNNEL, 0.3, 0.6),
        "f" | "v" => c(V::FF, M::G, 0.08, 0.7)
            .with(TUCK, 1.0, 1.0)
            .with(ROUND, 0.0, 0.3),
        "θ" | "ð" => c(V::TH, M::B, 0.15, 0.7).with(TONGUE, 1.0, 1.0),
        "t" | "d" | "ɾ" | "ɗ" => c(V::DD, M::B, 0.12, 0.5),
        "k" | "ɡ" | "g" | "x" | "ɣ" | "q" | "c" | "ɟ" => c(V::Kk, M::B, 0.2, 0.35),
        "ŋ" | "ɴ" => c(V::Kk, M::B, 0.15, 0.35),
        "tʃ" | "dʒ" | "ʧ" | "ʤ" | "ʃ" | "ʒ" | "ɕ" | "ʑ" | "ʨ" | "ʥ" | "ʂ" | "ʐ" | "ꭧ" => {
            c(V::CH, M::B, 0.08, 0.7)
                .with(ROUND, 0.35, 0.7)
                .with(FUNNEL, 0.8, 0.9)
        }
        "s" | "z" | "ts" | "dz" | "ʦ" | "ʣ" => c(V::SS, M::B, 0.05, 0.8).with(SPREAD, 0.35, 0.5),
        "n" | "n̩" | "ɲ" | "ɾ̃" => c(V::Nn, M::B, 0.12, 0.4),
        "l" | "ɫ" | "l̩" | "ʎ" | "ɬ" => c(V::Nn, M::H, 0.2, 0.4).with(TONGUE, 0.25, 0.4),
        "ɹ" | "r" | "ɻ" | "ʁ" | "ʀ" => c(V::RR, M::E, 0.12, 0.5)
            .with(ROUND, 0.4, 0.6)
            .with(FUNNEL, 0.35, 0.5),
        "j" => c(V::Ih, M::B, 0.12, 0.5).with(SPREAD, 0.5, 0.6),
        "w" | "ʍ" | "ɥ" => c(V::Ou, M::F, 0.08, 0.6)
            .with(ROUND, 1.0, 1.0)
            .with(FUNNEL, 0.4, 0.7),
        "h" | "ɦ" | "ʔ" | "ç" | "ħ" => {
            let mut p = c(V::Sil, M::B, 0.2, 0.05);
            p.class = PhoneClass::Transparent;
            p.dominance = [0.05, 0.02, 0.02, 0.02, 0.02, 0.02, 0.05];
            p
        }
        // Vowels: jaw by openness, lips by rounding/spreading.
        "ɑ" | "ɑː" | "a" | "aː" | "ɒ̃" => v(V::Aa, M::D, 0.75, 0.0, 0.1, 0.0),
        "æ" | "æː" => v(V::Aa, M::C, 0.65, 0.0, 0.35, 0.0),
        "ʌ" => v(V::Aa, M::C, 0.55, 0.0, 0.1, 0.0),
        "ɐ" | "ɐː" => v(V::Aa, M::C, 0.5, 0.0, 0.1, 0.0),
        "ɒ" | "ɔ" | "ɔː" => v(V::Oh, M::E, 0.55, 0.55, 0.0, 0.45),
        "o" | "oː" | "ɵ" => v(V::Oh, M::F, 0.4, 0.75, 0.0, 0.5),
        "œ" | "ø" | "øː" => v(V::Oh, M::E, 0.4, 0.5, 0.1, 0.3),
        "ʊ" => v(V::Ou, M::F, 0.25, 0.6, 0.0, 0.35),
        // Close vowels open the jaw least, but they do open it: about a third of ɑ's opening, a
        // little under the near-close ɪ and ʊ (0.22 keeps that order and, unstressed at 0.78, a
        // spoken i or u still parts the teeth; at 0.15 every unstressed one stayed shut).
        "u" | "uː" | "ʉ" | "ʉː" | "ɯ" | "y" | "yː" => v(V::Ou, M::F, 0.22, 0.95, 0.0, 0.4),
        "ɛ" | "ɛː" | "e" | "eː" => v(V::E, M::C, 0.45, 0.0, 0.4, 0.0),
        "ɤ" => v(V::E, M::C, 0.4, 0.0, 0.05, 0.0),
        "ə" | "ɘ" | "ɜ" => v(V::E, M::C, 0.32, 0.0, 0.1, 0.0).with(JAW, 0.32, 0.6),
        "ɪ" | "ᵻ" | "ɨ" | "ʏ" => v(V::Ih, M::B, 0.25, 0.0, 0.45, 0.0),
        "i" | "iː" => v(V::Ih, M::B, 0.22, 0.0, 0.7, 0.0),
        "ɚ" | "ɝ" | "ɜː" | "ɝː" => v(V::RR, M::E, 0.3, 0.4, 0.0, 0.35),
        _ => return None,
    })
}

/// ARPAbet (without the stress digit, upper case) spelled in IPA.
pub fn arpabet_to_ipa(sym: &str) -> Option<&'static str> {
    Some(match sym {
        "AA" => "ɑ",
        "AE" => "æ",
        "AH" => "ʌ",
        "AO" => "ɔ",
        "AW" => "aʊ",
        "AX" => "ə",
        "AXR" => "ɚ",
        "AY" => "aɪ",
        "EH" => "ɛ",
        "ER" => "ɝ",
        "EY" => "eɪ",
        "IH" => "ɪ",
        "IX" => "ᵻ",
        "IY" => "i",
        "OW" => "oʊ",
        "OY" => "ɔɪ",
        "UH" => "ʊ",
        "UW" => "u",
        "UX" => "ʉ",
        "B" => "b",
        "CH" => "tʃ",
        "D" => "d",
        "DH" => "ð",
        "DX" => "ɾ",
        "EL" => "l̩",
        "EM" => "m̩",
        "EN" => "n̩",
        "F" => "f",
        "G" => "ɡ",
        "HH" | "H" => "h",
        "JH" => "dʒ",
        "K" => "k",
        "L" => "l",
        "M" => "m",
        "N" => "n",
        "NG" | "NX" => "ŋ",
        "P" => "p",
        "Q" => "ʔ",
        "R" => "ɹ",
        "S" => "s",
        "SH" => "ʃ",
        "T" => "t",
        "TH" => "θ",
        "V" => "v",
        "W" => "w",
        "WH" => "ʍ",
        "Y" => "j",
        "Z" => "z",
        "ZH" => "ʒ",
        _ => return None,
    })
}

/// True when a symbol is written in ARPAbet: ASCII letters, at least one upper case, optional stress
/// digit (`AA1`, `B`, `PT`).
pub fn looks_arpabet(sym: &str) -> bool {
    let body = sym.trim_end_matches(|c: char| c.is_ascii_digit());
    !body.is_empty()
        && body.chars().all(|c| c.is_ascii_alphabetic())
        && (body.chars().any(|c| c.is_ascii_uppercase()) || body.len() < sym.len())
}

/// One phone of a split symbol: its features and its share of the symbol's span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Part {
    pub phone: Phone,
    pub share: f32,
}

/// Up to four parts of one symbol (a diphthong, an r-coloured vowel, a cluster like `PT`).
pub type Parts = ([Option<Part>; 4], usize);

fn stress_from_digit(sym: &str) -> Option<Stress> {
    match sym.chars().last()? {
        '1' => Some(Stress::Primary),
        '2' => Some(Stress::Secondary),
        '0' => Some(Stress::None),
        _ => None,
    }
}

/// Split an ARPAbet symbol into known phones (greedy, longest code first).
fn split_arpabet(sym: &str, out: &mut Vec<Phone>) -> bool {
    let body: String = sym
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .to_ascii_uppercase();
    let mut rest = body.as_str();
    while !rest.is_empty() {
        let mut matched = false;
        for n in (1..=rest.len().min(3)).rev() {
            if let Some(ipa_s) = arpabet_to_ipa(&rest[..n]) {
                if !split_ipa_into(ipa_s, out) {
                    return false;
                }
                rest = &rest[n..];
                matched = true;
                break;
            }
        }
        if !matched {
            return false;
        }
    }
    true
}

fn is_ignorable_mark(c: char) -> bool {
    matches!(
        c,
        'ˑ' | '͡'
            | '‿'
            | '\u{200D}'
            | '\u{200C}'
            | 'ʰ'
            | 'ʲ'
            | 'ʷ'
            | '̪'
            | '̥'
            | '̬'
            | '̃'
            | '̯'
            | '̝'
            | '̞'
            | '-'
            | '.'
            | '|'
            | '‖'
            // Kokoro's labialization mark and Mandarin tone arrows: no mouth shape of their own.
            | 'ᵝ'
            | '↓'
            | '→'
            | '↗'
            | '↘'
    )
}

/// Split an IPA string (stress marks already removed) into known phones, greedily.
fn split_ipa_into(s: &str, out: &mut Vec<Phone>) -> bool {
    // Normalise: drop tie bars and modifiers that do not change the mouth; keep length and syllabic
    // marks for the table lookup, then retry without them.
    let cleaned: String = s.chars().filter(|&c| !is_ignorable_mark(c)).collect();
    let chars: Vec<(usize, char)> = cleaned.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let mut matched = false;
        for n in (1..=(chars.len() - i).min(3)).rev() {
            let a = chars[i].0;
            let b = chars.get(i + n).map_or(cleaned.len(), |x| x.0);
            let cand = &cleaned[a..b];
            if let Some(p) = ipa(cand) {
                out.push(p);
                i += n;
                matched = true;
                break;
            }
        }
        if !matched {
            let ch = chars[i].1;
            if ch == 'ː' || ch == '̩' || ch == '˞' {
                // A length, syllabic or rhotic mark after a phone the table has no lengthened form of.
                if ch == '˞'
                    && let Some(last) = out.last_mut()
                {
                    last.target[ROUND] = last.target[ROUND].max(0.35);
                    last.target[FUNNEL] = last.target[FUNNEL].max(0.3);
                }
                i += 1;
                continue;
            }
            return false;
        }
    }
    true
}

/// The phones of one timeline symbol with the stress it carries.
///
/// Returns `None` for silence or an unknown symbol. Stress comes from `stress`, a trailing ARPAbet
/// digit, or an attached `ˈ`/`ˌ`, whichever is strongest.
pub fn phones_of(symbol: &str, stress: Stress, out: &mut Vec<Phone>) -> bool {
    out.clear();
    let mut stress = stress;
    let ok = if looks_arpabet(symbol) {
        if let Some(s) = stress_from_digit(symbol) {
            stress = stronger(stress, s);
        }
        split_arpabet(symbol, out)
    } else {
        let mut body = String::with_capacity(symbol.len());
        for ch in symbol.chars() {
            match ch {
                'ˈ' | '\'' => stress = stronger(stress, Stress::Primary),
                'ˌ' | ',' => stress = stronger(stress, Stress::Secondary),
                c if c.is_whitespace() => {}
                c => body.push(c),
            }
        }
        !body.is_empty() && split_ipa_into(&body, out)
    };
    if !ok {
        out.clear();
        return false;
    }
    for p in out.iter_mut() {
        if p.class == PhoneClass::Vowel {
            p.stress = stress;
        }
    }
    true
}

/// `a` or `b`, whichever is the stronger stress.
pub fn stronger(a: Stress, b: Stress) -> Stress {
    let rank = |s: Stress| match s {
        Stress::None => 0,
        Stress::Secondary => 1,
        Stress::Primary => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// True for a symbol that is only a stress mark (espeak writes `ˈ` as its own token sometimes).
pub fn is_stress_mark(symbol: &str) -> Option<Stress> {
    match symbol.trim() {
        "ˈ" => Some(Stress::Primary),
        "ˌ" => Some(Stress::Secondary),
        _ => None,
    }
}

/// Shares of a span among `n` parts: a diphthong gives its first vowel 60 %, otherwise equal.
pub fn shares(parts: &[Phone], out: &mut Vec<f32>) {
    out.clear();
    let n = parts.len();
    if n == 2 && parts[0].class == PhoneClass::Vowel && parts[1].class != PhoneClass::Silence {
        out.extend([0.6, 0.4]);
    } else {
        out.extend(std::iter::repeat_n(1.0 / n as f32, n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visemes(sym: &str) -> Vec<Viseme> {
        let mut v = Vec::new();
        assert!(phones_of(sym, Stress::None, &mut v), "{sym}");
        v.iter().map(|p| p.viseme).collect()
    }

    #[test]
    fn ipa_covers_espeak_output() {
        for s in [
            "ɡ", "ɾ", "ᵻ", "ɐ", "n̩", "aɪ", "aʊ", "eɪ", "oʊ", "ɔɪ", "ɚ", "ɝ", "ɜː", "ɑːɹ", "ɔːɹ",
            "ɪɹ", "ɛɹ", "ʊɹ", "iː", "uː", "tʃ", "dʒ", "ˈa", "ˌɪ", "θ", "ð", "ŋ", "ʃ", "ʒ", "j",
            "w", "h", "ʔ", "ə", "æ", "ʌ", "ɑ", "ɒ", "ɔ", "o", "ʊ", "u", "ɛ", "e", "ɪ", "i", "l̩",
            "t͡ʃ", "ɬ", "œ", "r", "əʊ", "ɪə", "eə", "ʊə", "ɑ˞",
        ] {
            visemes(s);
        }
        assert_eq!(visemes("aɪ"), vec![Viseme::Aa, Viseme::Ih]);
        assert_eq!(visemes("ɑːɹ"), vec![Viseme::Aa, Viseme::RR]);
        assert_eq!(visemes("t͡ʃ"), vec![Viseme::CH]);
    }

    #[test]
    fn arpabet_with_stress_and_clusters() {
        let mut v = Vec::new();
        assert!(phones_of("AA1", Stress::None, &mut v));
        assert_eq!(v[0].viseme, Viseme::Aa);
        assert_eq!(v[0].stress, Stress::Primary);
        assert_eq!(visemes("PT"), vec![Viseme::PP, Viseme::DD]);
        assert_eq!(visemes("AY2"), vec![Viseme::Aa, Viseme::Ih]);
        for code in [
            "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
            "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T",
            "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
        ] {
            visemes(code);
        }
        assert!(!phones_of("QQQX", Stress::None, &mut v));
    }

    #[test]
    fn whole_espeak_words_split_into_known_phones() {
        // espeak-ng 1.51 `--ipa=3` output (U+200D joins the letters of one phoneme), en-us and en-gb.
        let text = "ðə kwˈɪk bɹˈa\u{200d}ʊn fˈɑːks d\u{200d}ʒˈʌmps ˌo\u{200d}ʊvɚ lˈe\u{200d}ɪzi dˈɑːɡ \
            bˈæɹə\u{200d}l ɐ θˈa\u{200d}ʊzənd ˈɔɹɪnd\u{200d}ʒᵻz mˈɛʒɚd lˈiːʒɚ jʊ\u{200d}ɹ hˈɛ\u{200d}ɹ \
            θˈi\u{200d}əɾɚ t\u{200d}ʃˈɜːt\u{200d}ʃ sˈɪŋɪŋ bˈʌʔn̩ lˈɪɾə\u{200d}l həwˈa\u{200d}ɪiː ʃᵻkˈɑːɡo\u{200d}ʊ \
            nˈɔː\u{200d}ɹθ fˈoː\u{200d}ɹs stˈɑː\u{200d}ɹt t\u{200d}ʃˈɔ\u{200d}ɪs hjˈuːd\u{200d}ʒ ʒˈɑːnɹə jˈɛh hˈəm \
            ˈʌˈo\u{200d}ʊ bˈaθ klˈɒθ wˈɔːtə nˈi\u{200d}ə skwˈe\u{200d}ə kjˈʊ\u{200d}ə ɡˈə\u{200d}ʊt lˈɒt";
        let mut v = Vec::new();
        for word in text.split_whitespace() {
            assert!(phones_of(word, Stress::None, &mut v), "{word}");
        }
        assert!(phones_of("kwˈɪk", Stress::None, &mut v));
        assert_eq!(
            v.iter().map(|p| p.viseme).collect::<Vec<_>>(),
            [Viseme::Kk, Viseme::Ou, Viseme::Ih, Viseme::Kk]
        );
        assert_eq!(v[2].stress, Stress::Primary);
    }

    #[test]
    fn stress_marks_attach() {
        let mut v = Vec::new();
        assert!(phones_of("ˈɑː", Stress::None, &mut v));
        assert_eq!(v[0].stress, Stress::Primary);
        assert_eq!(is_stress_mark("ˌ"), Some(Stress::Secondary));
    }
}
