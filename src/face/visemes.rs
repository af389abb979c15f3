//! Step 1 of the mouth chain: phonemes → phones.
//!
//! Input: the voice's `Timeline<Phoneme>` (IPA or ARPAbet). Output: a `Timeline<Phone>` at the same
//! rate, one item per phone. A symbol that is several phones (a diphthong `aɪ`, an r-coloured `ɑːɹ`, an
//! aligner's cluster `PT`) is split and its span shared among the parts (a diphthong's first vowel gets
//! 60 %). A stress mark that arrives as its own item (`ˈ`) is moved onto the next vowel; a length
//! mark that arrives as its own item (`ː`) lengthens the phone before it. Silences
//! become gaps (the next step fills gaps with explicit silence). Symbols found in neither table become
//! transparent phones (the neighbours' mouth shows through) and are reported back.
//!
//! Pure: same input, same output; no allocation per item beyond the output.

use super::phonetics::{self, Phone, PhoneClass};
use crate::speech::{Phoneme, Stress};
use crate::time::{SampleTime, TimeRange, Timed, Timeline};

/// Phones for a phoneme timeline, plus the symbols that were not recognised (deduplicated, in order).
pub fn phones(phonemes: &Timeline<Phoneme>) -> (Timeline<Phone>, Vec<String>) {
    let mut out: Vec<Timed<Phone>> = Vec::with_capacity(phonemes.len() + 8);
    let mut unknown: Vec<String> = Vec::new();
    let mut pending_stress = Stress::None;
    let mut parts = Vec::new();
    let mut shares = Vec::new();
    for item in phonemes {
        let ph = &item.value;
        if let Some(s) = phonetics::is_stress_mark(&ph.symbol) {
            pending_stress = phonetics::stronger(pending_stress, s);
            continue;
        }
        if ph.is_silence() {
            continue;
        }
        if !phonetics::phones_of(&ph.symbol, ph.stress, &mut parts) {
            if !unknown.contains(&ph.symbol) {
                unknown.push(ph.symbol.clone());
            }
            let mut p = Phone::silence();
            p.class = PhoneClass::Transparent;
            p.dominance = [0.05; phonetics::param::COUNT];
            parts.clear();
            parts.push(p);
        }
        if parts.is_empty() {
            // Only marks (a length mark `ː` as its own token, as Piper emits it): lengthen the phone
            // before it.
            if let Some(last) = out.last_mut()
                && last.end() == item.start()
            {
                last.range = TimeRange::new(last.start(), item.end()).expect("ordered");
            }
            continue;
        }
        if pending_stress != Stress::None
            && let Some(v) = parts.iter_mut().find(|p| p.class == PhoneClass::Vowel)
        {
            v.stress = phonetics::stronger(v.stress, pending_stress);
            pending_stress = Stress::None;
        }
        phonetics::shares(&parts, &mut shares);
        let (start, len) = (item.start().get(), item.range.len());
        let mut at = start;
        let mut acc = 0.0f64;
        for (i, (p, sh)) in parts.iter().zip(&shares).enumerate() {
            acc += *sh as f64;
            let end = if i + 1 == parts.len() {
                start + len
            } else {
                start + (acc * len as f64).round() as u64
            };
            let end = end.max(at);
            out.push(Timed::new(
                TimeRange::new(SampleTime(at), SampleTime(end)).expect("ordered"),
                *p,
            ));
            at = end;
        }
    }
    // Zero-length parts carry nothing.
    out.retain(|t| !t.range.is_empty());
    let tl = Timeline::from_items(phonemes.rate(), out).expect("input timeline was ordered");
    (tl, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::phonetics::Viseme;

    fn tl(items: &[(&str, u64, u64)]) -> Timeline<Phoneme> {
        Timeline::from_items(
            1000,
            items
                .iter()
                .map(|(s, a, b)| {
                    Timed::new(
                        TimeRange::new(SampleTime(*a), SampleTime(*b)).unwrap(),
                        Phoneme::new(*s),
                    )
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn splits_diphthongs_and_moves_stress_marks() {
        let (p, unk) = phones(&tl(&[
            ("ˈ", 0, 0),
            ("aɪ", 0, 100),
            ("_", 100, 150),
            ("ʬ", 150, 160),
            ("i", 160, 170),
            ("ː", 170, 200),
        ]));
        assert_eq!(
            p.items()[3].range,
            TimeRange::new(SampleTime(160), SampleTime(200)).unwrap()
        );
        assert_eq!(unk, vec!["ʬ".to_string()]);
        let items = p.items();
        assert_eq!(items[0].value.viseme, Viseme::Aa);
        assert_eq!(items[0].range.len(), 60);
        assert_eq!(items[0].value.stress, Stress::Primary);
        assert_eq!(items[1].value.viseme, Viseme::Ih);
        assert_eq!(items[1].end(), SampleTime(100));
        assert_eq!(items.len(), 4);
    }
}
