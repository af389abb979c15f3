//! ARPAbet (CMUdict, g2p-en) → IPA as espeak-ng writes American English, which is what Piper voices were
//! trained on.
//!
//! Algorithm. A word's ARPAbet symbols are rewritten left to right with a one-symbol look-around:
//! - Vowels map to espeak-ng's en-us symbols (`AA`→`ɑː`, `AO`→`ɔː`, `ER1`→`ɜː`, `ER0`→`ɚ`, `IY1`→`iː`,
//!   `UW`→`uː`, `AH1`→`ʌ`, `AH0`→`ə`) and carry the stress mark (`ˈ` primary, `ˌ` secondary) directly
//!   before the vowel, never before the syllable onset.
//! - r-coloured vowels fuse as espeak writes them: `AA R`→`ɑːɹ`, `AO R`→`ɔːɹ` (or `oːɹ` when spelled
//!   *oor/our/ore/oar*), `IY R`→`ɪɹ`, `ER` before a vowel→`ɚɹ`/`ɜːɹ`.
//! - Unstressed vowels reduce as espeak reduces them: a word-initial `AH0` is `ɐ` (*about*); `IY0` is `i`
//!   at the end of a word and `ɪ` inside it; the `-ed` after t/d and the `-es` after a sibilant are `ᵻ`
//!   (*wanted* `wˈɔntᵻd`), and so is the vowel of an initial *be-/de-/re-* before a consonant.
//! - `T` between a vowel (or r-coloured vowel) and an unstressed vowel is the flap `ɾ` (*water*
//!   `wˈɔːɾɚ`); `T AH0 N` ending a word after a stressed vowel is a glottal stop and a syllabic n
//!   (*button* `bˈʌʔn̩`). espeak does not flap `D`.
//! - `G` is `ɡ` (U+0261); no tie bars or zero-width joiners are written.
//!
//! Effects across word boundaries (*the*/*to* before a vowel, a final flap, a linking r) are applied
//! by the clause-level pass in [`super::english`].

/// One ARPAbet symbol: its base (e.g. `AA`, `T`) and its stress digit for vowels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arpa {
    pub base: Base,
    /// `Some(0|1|2)` for vowels, `None` for consonants.
    pub stress: Option<u8>,
}

macro_rules! bases {
    ($($name:ident),* $(,)?) => {
        /// ARPAbet base symbols (39).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum Base { $($name),* }
        impl Base {
            pub fn parse(s: &str) -> Option<Base> {
                match s { $(stringify!($name) => Some(Base::$name),)* _ => None }
            }
            pub fn name(self) -> &'static str {
                match self { $(Base::$name => stringify!($name),)* }
            }
        }
    };
}

bases!(
    AA, AE, AH, AO, AW, AY, EH, ER, EY, IH, IY, OW, OY, UH, UW, B, CH, D, DH, F, G, HH, JH, K, L,
    M, N, NG, P, R, S, SH, T, TH, V, W, Y, Z, ZH,
);

impl Base {
    pub fn is_vowel(self) -> bool {
        use Base::*;
        matches!(
            self,
            AA | AE | AH | AO | AW | AY | EH | ER | EY | IH | IY | OW | OY | UH | UW
        )
    }

    fn is_sibilant(self) -> bool {
        matches!(
            self,
            Base::S | Base::Z | Base::SH | Base::ZH | Base::CH | Base::JH
        )
    }
}

impl Arpa {
    /// Parses one symbol such as `AA1`, `T` or `UW` (a vowel without a digit counts as unstressed).
    pub fn parse(s: &str) -> Option<Arpa> {
        let (base, digit) = match s.as_bytes().last() {
            Some(d @ b'0'..=b'2') => (&s[..s.len() - 1], Some(d - b'0')),
            _ => (s, None),
        };
        let base = Base::parse(base)?;
        let stress = if base.is_vowel() {
            Some(digit.unwrap_or(0))
        } else if digit.is_some() {
            return None;
        } else {
            None
        };
        Some(Arpa { base, stress })
    }

    fn is_vowel(self) -> bool {
        self.base.is_vowel()
    }

    fn unstressed(self) -> bool {
        self.stress == Some(0)
    }
}

/// Parses a whitespace-separated ARPAbet pronunciation; `None` if a symbol is unknown.
pub fn parse_pron(s: &str) -> Option<Vec<Arpa>> {
    s.split_whitespace().map(Arpa::parse).collect()
}

/// Writes a pronunciation back as ARPAbet text (`HH AH0 L OW1`).
pub fn to_arpabet_string(pron: &[Arpa]) -> String {
    let mut out = String::new();
    for (i, p) in pron.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(p.base.name());
        if let Some(s) = p.stress {
            out.push((b'0' + s) as char);
        }
    }
    out
}

fn consonant_ipa(b: Base) -> &'static str {
    use Base::*;
    match b {
        B => "b",
        CH => "tʃ",
        D => "d",
        DH => "ð",
        F => "f",
        G => "ɡ",
        HH => "h",
        JH => "dʒ",
        K => "k",
        L => "l",
        M => "m",
        N => "n",
        NG => "ŋ",
        P => "p",
        R => "ɹ",
        S => "s",
        SH => "ʃ",
        T => "t",
        TH => "θ",
        V => "v",
        W => "w",
        Y => "j",
        Z => "z",
        ZH => "ʒ",
        _ => "",
    }
}

/// IPA for one word, espeak-ng en-us style. `spelling` (lowercase) refines a few spelling-dependent
/// vowels; pass `""` when unknown.
pub fn to_ipa(spelling: &str, pron: &[Arpa]) -> String {
    use Base::*;
    let pron = &respell(spelling, pron);
    let n = pron.len();
    let mut out = String::with_capacity(n * 3);
    let mut i = 0;
    let spelled_oor = [
        "oor", "our", "oar", "port", "pork", "storm", "norm", "orce", "ory", "sword", "ortion",
    ]
    .iter()
    .any(|s| spelling.contains(s))
        || ["ore", "ores", "ored"]
            .iter()
            .any(|s| spelling.ends_with(s));
    // espeak writes a short `ɔ` for most o-spellings (*off*, *lost*, *long*) and `ɔː` for a-spellings
    // (*all*, *saw*, *water*, *thought*).
    let spelled_aw = ["au", "aw", "al", "ough", "wa", "oa"]
        .iter()
        .any(|s| spelling.contains(s));
    let spelled_long_aw = spelled_aw || !spelling.contains('o');
    let spelled_ie = spelling.contains("ie");
    let spelled_au = ["au", "aw", "ough"].iter().any(|s| spelling.contains(s));
    let last_vowel = pron.iter().rposition(|p| p.is_vowel());
    let stresses = effective_stress(pron);
    let letters = vowel_letters(spelling, pron);
    while i < n {
        let p = pron[i];
        let prev = if i > 0 { Some(pron[i - 1]) } else { None };
        let next = pron.get(i + 1).copied();
        let next_base = next.map(|x| x.base);
        if p.is_vowel() {
            let mut stress = stresses[i];
            // A secondary stress on a final `IY` is not written (*ability* `ɐbˈɪləɾi`).
            let final_iy = p.base == IY
                && Some(i) == last_vowel
                && pron[i + 1..].iter().all(|x| matches!(x.base, S | Z | D));
            if final_iy && stress == 2 {
                stress = 0;
            }
            // A secondary demoted by the clash rule keeps its full vowel quality.
            let demoted = stresses[i] == 0 && p.stress == Some(2);
            match stress {
                1 => out.push('ˈ'),
                2 => out.push('ˌ'),
                _ => {}
            }
            let unstressed = stress == 0;
            let at_end = i + 1 == n;
            let next_is_vowel = next.is_some_and(|x| x.is_vowel());
            // `R` closing the syllable (not starting the next one).
            let coda_r = next_base == Some(R) && !pron.get(i + 2).is_some_and(|x| x.is_vowel());
            let sym: &str = match p.base {
                AA if next_base == Some(R) => {
                    i += 1;
                    "ɑːɹ"
                }
                AA if short_o(spelling, next_base) || spelling.starts_with("wan") => "ɔ",
                AA if spelled_au => "ɔː",
                AA => "ɑː",
                AE => "æ",
                AH if unstressed && i == 0 && n > 1 && spelling.starts_with('u') => "ʌ",
                AH if unstressed && i == 0 && n > 1 => "ɐ",
                AH if unstressed && prev.is_some_and(|x| x.base == Y) && next_base == Some(L) => {
                    "ʊ"
                }
                AH if unstressed && !demoted && reduces_to_barred_i(spelling, pron, i) => "ᵻ",
                AH if unstressed && !demoted && letters.is_ity(i) => "ᵻ",
                AH if unstressed && !demoted && letters.is_a_before_primary(i, pron) => "ɐ",
                AH if unstressed && !demoted && letters.reduces_to_i(i) => "ɪ",
                AH if unstressed && !demoted && !letters.is_come_some(i) => "ə",
                AH => "ʌ",
                AO if next_base == Some(R) => {
                    i += 1;
                    if spelled_oor { "oːɹ" } else { "ɔːɹ" }
                }
                AO if spelled_long_aw => "ɔː",
                AO if matches!(next_base, Some(S | F | NG | TH)) => "ɔ",
                AO => "ɑː",
                AW if coda_r => {
                    i += 1;
                    "aʊɚ"
                }
                AW => "aʊ",
                AY if coda_r => {
                    i += 1;
                    "aɪɚ"
                }
                AY => "aɪ",
                EH if next_base == Some(R)
                    && (spelling.contains("arr") || spelling.starts_with("char")) =>
                {
                    "æ"
                }
                EH => "ɛ",
                // Syncope after f/v following the stressed vowel: *every* `ˈɛvɹi`, *different*.
                ER if unstressed
                    && next.is_some_and(|x| x.is_vowel() && x.unstressed())
                    && prev.is_some_and(|x| matches!(x.base, F | V))
                    && i >= 2
                    && pron[i - 2].stress == Some(1) =>
                {
                    "ɹ"
                }
                ER if unstressed && !demoted && next_is_vowel => "ɚɹ",
                ER if unstressed && !demoted => "ɚ",
                ER if next_is_vowel => "ɜːɹ",
                ER => "ɜː",
                EY => "eɪ",
                IH | IY if unstressed && reduces_to_barred_i(spelling, pron, i) => "ᵻ",
                IH if unstressed && i == 0 && initial_e(spelling) == Some(true) => "ɛ",
                IH if unstressed && i == 0 && initial_e(spelling) == Some(false) => "ᵻ",
                IH if unstressed && at_end_en(spelling, pron, i) => "ə",
                IH if unstressed && Some(i) == last_vowel && spelling.ends_with("ness") => "ə",
                IH => "ɪ",
                IY if next.is_some_and(|x| x.base == AH && x.unstressed()) => "i",
                IY if !unstressed && next_base == Some(R) => {
                    i += 1;
                    "ɪɹ"
                }
                IY if !unstressed || demoted && !final_iy => "iː",
                IY if at_end || final_iy => "i",
                IY if pron[i + 1..].iter().all(|x| matches!(x.base, S | Z | D)) => "i",
                IY if next_is_vowel && (spelled_ie || next_base == Some(IH)) => "i",
                IY => "ɪ",
                OW if next_base == Some(R) => {
                    i += 1;
                    "oːɹ"
                }
                OW => "oʊ",
                OY => "ɔɪ",
                UH => "ʊ",
                UW if coda_r => {
                    i += 1;
                    "ʊɹ"
                }
                UW => "uː",
                _ => "",
            };
            out.push_str(sym);
        } else {
            match p.base {
                T if is_glottal_n(pron, i) => {
                    out.push_str("ʔn̩");
                    i += 2;
                }
                T if prev.is_some_and(|x| x.is_vowel() || x.base == R)
                    && next.is_some_and(|x| x.is_vowel() && flap_target(x))
                    && !(matches!(next_base, Some(AH | ER))
                        && pron.get(i + 2).is_some_and(|x| x.base == N)) =>
                {
                    out.push('ɾ')
                }
                N if i > 0 && matches!(next_base, Some(K | G)) => out.push('ŋ'),
                b => out.push_str(consonant_ipa(b)),
            }
        }
        i += 1;
    }
    out
}

/// Dictionary pronunciations adjusted to espeak's: only the last of several primary stresses stays
/// primary (*engineers*), and a final *-day* keeps its full vowel (*Monday* `mˈʌndeɪ`).
fn respell(spelling: &str, pron: &[Arpa]) -> Vec<Arpa> {
    let mut p = pron.to_vec();
    let primaries: Vec<usize> = (0..p.len()).filter(|&i| p[i].stress == Some(1)).collect();
    if let Some((_, earlier)) = primaries.split_last() {
        for &i in earlier {
            p[i].stress = Some(2);
        }
    }
    let n = p.len();
    // *million* `mˈɪliən`: the y-glide of *-llion* is a vowel.
    if spelling.ends_with("llion") && n >= 3 && p[n - 3].base == Base::Y {
        p[n - 3] = Arpa {
            base: Base::IY,
            stress: Some(0),
        };
    }
    if spelling.ends_with("day")
        && n >= 2
        && p[n - 2].base == Base::D
        && p[n - 1].base == Base::IY
        && p[n - 1].stress == Some(0)
    {
        p[n - 1] = Arpa {
            base: Base::EY,
            stress: Some(2),
        };
    }
    p
}

/// An initial unstressed *e*: `Some(true)` for espeak's `ɛ` (*ex-*, *en-* before a consonant:
/// *expect*, *entire*), `Some(false)` for `ᵻ` before one consonant letter and a vowel (*event*,
/// *election*), `None` otherwise.
fn initial_e(spelling: &str) -> Option<bool> {
    let b = spelling.as_bytes();
    if b.first() != Some(&b'e') || b.len() < 4 {
        return None;
    }
    let vowel = |c: u8| matches!(c, b'a' | b'e' | b'i' | b'o' | b'u' | b'y');
    if b[1] == b'x' || b[1] == b'n' && !vowel(b[2]) {
        return Some(true);
    }
    (!vowel(b[1]) && vowel(b[2]) && !matches!(b[1], b'n' | b'q')).then_some(false)
}

/// `IH0 N` ending a word spelled *-en* is `ən` (*even* `ˈiːvən`).
fn at_end_en(spelling: &str, pron: &[Arpa], i: usize) -> bool {
    spelling.ends_with("en") && i + 2 == pron.len() && pron[i + 1].base == Base::N
}

/// Which letters spell each vowel of a pronunciation, when that can be told by counting: the word's
/// vowel-letter groups (runs of *a e i o u*, and *y* after a consonant) pair one to one with its vowel
/// phonemes, after dropping a silent final *e* (*-e*, *-es*, *-ed*).
struct VowelLetters<'a> {
    spelling: &'a str,
    /// Per phoneme index: the byte range of its vowel-letter group.
    groups: Vec<Option<(usize, usize)>>,
}

fn vowel_letters<'a>(spelling: &'a str, pron: &[Arpa]) -> VowelLetters<'a> {
    let b = spelling.as_bytes();
    let is_v = |i: usize| {
        matches!(b[i], b'a' | b'e' | b'i' | b'o' | b'u')
            || b[i] == b'y' && i > 0 && !matches!(b[i - 1], b'a' | b'e' | b'i' | b'o' | b'u')
    };
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if is_v(i) {
            let s = i;
            while i < b.len() && is_v(i) {
                i += 1;
            }
            groups.push((s, i));
        } else {
            i += 1;
        }
    }
    let vowel_idx: Vec<usize> = (0..pron.len()).filter(|&k| pron[k].is_vowel()).collect();
    if groups.len() == vowel_idx.len() + 1
        && let Some(&(s, e)) = groups.last()
        && &spelling[s..e] == "e"
        && matches!(&spelling[e..], "" | "s" | "d")
    {
        groups.pop();
    }
    // A silent e before a suffix (*definitely*, *statement*).
    if groups.len() == vowel_idx.len() + 1 {
        let silent = groups.iter().position(|&(s, e)| {
            &spelling[s..e] == "e"
                && ["ly", "ment", "ful", "less", "ness"]
                    .iter()
                    .any(|suf| spelling[e..].len() <= suf.len() + 1 && spelling[e..].ends_with(suf))
        });
        if let Some(k) = silent {
            groups.remove(k);
        }
    }
    let mut per_phone = vec![None; pron.len()];
    if groups.len() == vowel_idx.len() && spelling.is_ascii() {
        for (g, &k) in groups.iter().zip(&vowel_idx) {
            per_phone[k] = Some(*g);
        }
    }
    VowelLetters {
        spelling,
        groups: per_phone,
    }
}

impl VowelLetters<'_> {
    /// The *i* of *-ity* and *-icate* is `ᵻ` (*activity* `æktˈɪvᵻɾi`, *indicate* `ˈɪndᵻkˌeɪt`).
    fn is_ity(&self, i: usize) -> bool {
        self.groups[i].is_some_and(|(s, e)| {
            &self.spelling[s..e] == "i"
                && (self.spelling[e..].starts_with("ty") || self.spelling[e..].starts_with("cat"))
        })
    }

    /// A schwa spelled *a* right before the stressed syllable is espeak's `ɐ` (*disagree* `dˌɪsɐɡɹˈiː`,
    /// *magazine*).
    fn is_a_before_primary(&self, i: usize, pron: &[Arpa]) -> bool {
        self.groups[i].is_some_and(|(s, e)| &self.spelling[s..e] == "a")
            && pron[i + 1..]
                .iter()
                .find(|x| x.is_vowel())
                .is_some_and(|x| x.stress == Some(1))
    }

    /// The *o* of a final *-come*/*-some* keeps its vowel: *welcome* `wˈɛlkʌm`.
    fn is_come_some(&self, i: usize) -> bool {
        self.groups[i].is_some_and(|(s, e)| {
            &self.spelling[s..e] == "o"
                && s > 0
                && matches!(&self.spelling[s - 1..], "come" | "some")
        })
    }

    /// An unstressed schwa spelled *i* or *ai*, *e* before t/s/c/x/g/k/d/f, or the *a* of *-age* is
    /// espeak's `ɪ` (*pocket*, *promise*, *forest*, *hundred*, *mountain*, *village*), except in *-ity*.
    fn reduces_to_i(&self, i: usize) -> bool {
        let Some((s, e)) = self.groups[i] else {
            return false;
        };
        let letters = &self.spelling[s..e];
        let after = &self.spelling[e..];
        match letters {
            "i" => !after.starts_with("tely") && !after.starts_with("ty") && !after.is_empty(),
            "ai" => !after.is_empty(),
            "a" | "ua" => after.starts_with("ge"),
            // Not the silent-ish e of a syllabic *-les*/*-res* (*struggles*).
            "e" => {
                let before = &self.spelling.as_bytes()[..s];
                let syllabic = before.len() >= 2
                    && matches!(before[before.len() - 1], b'l' | b'r')
                    && !matches!(before[before.len() - 2], b'a' | b'e' | b'i' | b'o' | b'u');
                !syllabic
                    && after
                        .chars()
                        .next()
                        .is_some_and(|c| matches!(c, 't' | 's' | 'c' | 'x' | 'g' | 'k' | 'd' | 'f'))
            }
            _ => false,
        }
    }
}

/// Stress per symbol after espeak's clash rule: a secondary stress on the syllable right next to the
/// primary one is dropped (*always* `ˈɔːlweɪz`, *nobody* `nˈoʊbɑːdi`, but *everyone* `ˈɛvɹɪwˌʌn`).
fn effective_stress(pron: &[Arpa]) -> Vec<u8> {
    // `AY ER0`/`AW ER0` (*fire*, *hour*) are one syllable for this rule.
    let vowels: Vec<usize> = (0..pron.len())
        .filter(|&i| {
            pron[i].is_vowel()
                && !(pron[i].base == Base::ER
                    && i > 0
                    && matches!(pron[i - 1].base, Base::AY | Base::AW))
        })
        .collect();
    let mut out: Vec<u8> = pron.iter().map(|p| p.stress.unwrap_or(0)).collect();
    for (k, &vi) in vowels.iter().enumerate() {
        if pron[vi].stress != Some(2) {
            continue;
        }
        let near_primary = (k > 0 && pron[vowels[k - 1]].stress == Some(1))
            || vowels
                .get(k + 1)
                .is_some_and(|&v| pron[v].stress == Some(1));
        if near_primary {
            out[vi] = 0;
        }
    }
    out
}

/// `AA` spelled with an *o* before s/f/th/ng is espeak's short `ɔ` (*cost*, *boss*, *soft*).
fn short_o(spelling: &str, next: Option<Base>) -> bool {
    matches!(next, Some(Base::S | Base::F | Base::TH | Base::NG))
        && ["os", "of", "oth", "ong"]
            .iter()
            .any(|s| spelling.contains(s))
}

/// Whether a vowel after `T` lets the `T` flap: unstressed, or a final `IY2` that espeak treats as
/// unstressed.
fn flap_target(v: Arpa) -> bool {
    v.unstressed() || (v.base == Base::IY && v.stress == Some(2))
}

/// `T AH0 N` closing the word (optionally plus `Z`/`D`) after a stressed vowel: *button*, *written*.
fn is_glottal_n(pron: &[Arpa], i: usize) -> bool {
    let rest = &pron[i + 1..];
    let tail_ok = match rest.len() {
        2 => true,
        3 => matches!(rest[2].base, Base::Z | Base::D),
        _ => false,
    };
    tail_ok
        && i > 0
        && pron[i - 1].is_vowel()
        && !pron[i - 1].unstressed()
        && rest[0].base == Base::AH
        && rest[0].unstressed()
        && rest[1].base == Base::N
}

/// `ᵻ`: the vowel of *-ed* after t/d, of *-es* after a sibilant, and of an initial *be-/de-/re-* before
/// a consonant.
fn reduces_to_barred_i(spelling: &str, pron: &[Arpa], i: usize) -> bool {
    let n = pron.len();
    let prev = if i > 0 { Some(pron[i - 1].base) } else { None };
    if i + 2 == n && i > 0 {
        let last = pron[n - 1].base;
        if last == Base::D && matches!(prev, Some(Base::T | Base::D)) {
            return true;
        }
        if last == Base::Z && prev.is_some_and(Base::is_sibilant) {
            return true;
        }
    }
    let prefix = ["be", "de", "re"].iter().any(|p| spelling.starts_with(p))
        && !["bec", "dev"].iter().any(|p| spelling.starts_with(p));
    i == 1
        && prefix
        && matches!(prev, Some(Base::B | Base::D | Base::R))
        && pron
            .get(2)
            .is_some_and(|x| !x.is_vowel() && !matches!(x.base, Base::Z | Base::G | Base::V))
        && pron[2..].iter().any(|x| x.stress == Some(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipa(spelling: &str, arpa: &str) -> String {
        to_ipa(spelling, &parse_pron(arpa).unwrap())
    }

    #[test]
    fn parses_and_prints() {
        let p = parse_pron("HH AH0 L OW1").unwrap();
        assert_eq!(to_arpabet_string(&p), "HH AH0 L OW1");
        assert!(parse_pron("XX1").is_none());
        assert!(parse_pron("T1").is_none());
    }

    #[test]
    fn espeak_conventions() {
        assert_eq!(ipa("hello", "HH AH0 L OW1"), "həlˈoʊ");
        assert_eq!(ipa("water", "W AO1 T ER0"), "wˈɔːɾɚ");
        assert_eq!(ipa("city", "S IH1 T IY0"), "sˈɪɾi");
        assert_eq!(ipa("party", "P AA1 R T IY0"), "pˈɑːɹɾi");
        assert_eq!(ipa("button", "B AH1 T AH0 N"), "bˈʌʔn̩");
        assert_eq!(ipa("needed", "N IY1 D IH0 D"), "nˈiːdᵻd");
        assert_eq!(ipa("boxes", "B AA1 K S IH0 Z"), "bˈɑːksᵻz");
        assert_eq!(ipa("return", "R IH0 T ER1 N"), "ɹᵻtˈɜːn");
        assert_eq!(ipa("about", "AH0 B AW1 T"), "ɐbˈaʊt");
        assert_eq!(ipa("here", "HH IY1 R"), "hˈɪɹ");
        assert_eq!(ipa("door", "D AO1 R"), "dˈoːɹ");
        assert_eq!(ipa("forest", "F AO1 R AH0 S T"), "fˈɔːɹɪst");
        assert_eq!(ipa("always", "AO1 L W EY2 Z"), "ˈɔːlweɪz");
        assert_eq!(ipa("everyone", "EH1 V R IY0 W AH2 N"), "ˈɛvɹɪwˌʌn");
        assert_eq!(ipa("lost", "L AO1 S T"), "lˈɔst");
        assert_eq!(ipa("soft", "S AA1 F T"), "sˈɔft");
        assert_eq!(ipa("audio", "AO1 D IY0 OW2"), "ˈɔːdɪˌoʊ");
        assert_eq!(ipa("big", "B IH1 G"), "bˈɪɡ");
        assert_eq!(ipa("three", "TH R IY1"), "θɹˈiː");
        assert_eq!(ipa("want", "W AA1 N T"), "wˈɔnt");
        assert_eq!(ipa("watch", "W AA1 CH"), "wˈɑːtʃ");
        assert_eq!(ipa("pocket", "P AA1 K AH0 T"), "pˈɑːkɪt");
        assert_eq!(ipa("touches", "T AH1 CH AH0 Z"), "tˈʌtʃᵻz");
        assert_eq!(ipa("monday", "M AH1 N D IY0"), "mˈʌndeɪ");
        assert_eq!(ipa("engineers", "EH1 N JH AH0 N IH1 R Z"), "ˌɛndʒɪnˈɪɹz");
        assert_eq!(ipa("inspire", "IH2 N S P AY1 R"), "ɪnspˈaɪɚ");
        assert!(!ipa("big", "B IH1 G").contains('g'));
    }
}
