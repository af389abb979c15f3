//! From phonemized text to Piper phoneme ids, and from the voice's per-id durations back to a phoneme
//! and word timeline on the audio's sample clock.
//!
//! **Ids.** The words' IPA is laid out as Piper lays it out for espeak-ng voices: words separated by a
//! space, punctuation written right after the word before it. Each code point is looked up in the voice's
//! `phoneme_id_map` (unknown ones are skipped with a warning), and the id sequence is
//! `^ _ p1 _ p2 _ … pn _ $`: the start symbol, a pad after it and after every symbol, the end symbol.
//!
//! **Units.** The same code points are grouped into phoneme units as a listener (and the face) hears
//! them: a base symbol starts a unit; length marks, combining diacritics and modifier letters (`ː`, `̩`,
//! `ʰ`, `˞`, …) join the unit before them; the second half of a diphthong or affricate (`oʊ eɪ aɪ aʊ ɔɪ
//! tʃ dʒ`) joins the first. A stress mark (`ˈ`, `ˌ`) sets [`Stress`] on the next vowel of the word.
//!
//! **Durations.** The voice gives each id a duration in hop-length frames; they sum to the audio length.
//! Each id is owned by a unit: a symbol's own id and the pad *before* it (the transition into it) by its
//! unit; a stress mark's ids by the unit after it (the stressed syllable starts there); a space between
//! two words (with its pad) by the next word's first unit. The remaining ids (start, end, punctuation,
//! the space after punctuation, the last pad) are gaps. These choices come from forced alignment of the
//! voice's own audio (pocketsphinx, 10 renders): giving each symbol the pad after it and each space to
//! the word before made word starts 55 ms and phone boundaries 22 ms late on average; with the pad
//! before and spaces to the next word the mean signed errors are -4 ms (word starts), -11 ms (word
//! ends) and +1 ms (phone boundaries), within the aligner's own accuracy.
//!
//! A run of gap frames of at least [`MIN_SILENCE_FRAMES`] becomes a
//! silence phoneme `_`; a shorter one is merged into the unit before it (or the one after it at the
//! start). Units are contiguous and ordered, so the phoneme timeline covers the audio exactly, and every
//! phoneme has a span of at least one frame. Word spans run from their first unit's start to their last
//! unit's end.

use crate::phonemize::PhonToken;
use crate::speech::{Phoneme, Stress, Word};
use crate::time::{SampleTime, TimeRange, Timed, Timeline};
use std::collections::HashMap;

/// Gap runs at least this many frames long (≈ 35 ms at 22050 Hz with a 256-sample hop) become silence.
pub const MIN_SILENCE_FRAMES: u64 = 3;

/// The symbols Piper voices use for start, pad and end.
pub const BOS: char = '^';
pub const PAD: char = '_';
pub const EOS: char = '$';

/// Who owns an id's duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Unit(usize),
    Gap,
}

/// One phoneme as heard: its symbol, stress and the word it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub phoneme: Phoneme,
    pub word: usize,
}

/// A clause ready for the voice: ids, who owns each id, the units and the words.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub owners: Vec<Owner>,
    pub units: Vec<Unit>,
    pub words: Vec<Word>,
    /// The IPA string the ids were made from (Piper's layout).
    pub ipa: String,
    /// Code points skipped because the voice has no id for them.
    pub skipped: Vec<char>,
}

fn is_modifier(c: char) -> bool {
    matches!(c, 'ː' | 'ˑ' | '˞' | 'ʰ' | 'ʲ' | 'ʷ' | 'ˤ' | 'ⁿ' | 'ˡ')
        || ('\u{0300}'..='\u{036F}').contains(&c)
}

fn is_stress(c: char) -> Option<Stress> {
    match c {
        'ˈ' => Some(Stress::Primary),
        'ˌ' => Some(Stress::Secondary),
        _ => None,
    }
}

/// IPA vowel letters (the units that carry stress).
pub fn is_vowel(symbol: &str) -> bool {
    symbol.chars().next().is_some_and(|c| {
        matches!(
            c,
            'a' | 'e'
                | 'i'
                | 'o'
                | 'u'
                | 'y'
                | 'æ'
                | 'ɐ'
                | 'ɑ'
                | 'ɒ'
                | 'ɔ'
                | 'ə'
                | 'ɚ'
                | 'ɛ'
                | 'ɜ'
                | 'ɝ'
                | 'ɞ'
                | 'ɘ'
                | 'ɤ'
                | 'ɨ'
                | 'ɪ'
                | 'ɯ'
                | 'ɵ'
                | 'ɶ'
                | 'ʉ'
                | 'ʊ'
                | 'ʌ'
                | 'ʏ'
                | 'ø'
                | 'œ'
                | 'ᵻ'
        )
    })
}

/// Second halves that join the unit before them.
fn joins(prev: &str, c: char) -> bool {
    matches!(
        (prev, c),
        ("o", 'ʊ') | ("e", 'ɪ') | ("a", 'ɪ') | ("a", 'ʊ') | ("ɔ", 'ɪ') | ("t", 'ʃ') | ("d", 'ʒ')
    )
}

/// Punctuation the voices' maps do not have, written as the nearest one they do.
fn punct_for_voice(c: char) -> char {
    match c {
        '—' | '–' => ',',
        '…' => '.',
        '¿' => '?',
        '¡' => '!',
        _ => c,
    }
}

/// Lay out tokens as Piper does and map them to ids, units and owners.
pub fn encode(tokens: &[PhonToken], id_map: &HashMap<char, Vec<i64>>) -> Encoded {
    // (char, word index, is a word's char) in Piper's layout.
    let mut layout: Vec<(char, Option<usize>)> = Vec::new();
    let mut words = Vec::new();
    let mut need_space = false;
    for t in tokens {
        match t {
            PhonToken::Word { text, ipa } => {
                let ipa: String = ipa
                    .chars()
                    .filter(|c| !c.is_whitespace() && *c != '\u{200D}')
                    .collect();
                if ipa.is_empty() {
                    continue;
                }
                if need_space {
                    layout.push((' ', None));
                }
                let w = words.len();
                words.push(Word::new(text.clone()));
                layout.extend(ipa.chars().map(|c| (c, Some(w))));
                need_space = true;
            }
            PhonToken::Punct(p) => {
                layout.push((punct_for_voice(*p), None));
                need_space = true;
            }
        }
    }

    let mut enc = Encoded {
        ids: Vec::new(),
        owners: Vec::new(),
        units: Vec::new(),
        words,
        ipa: layout.iter().map(|(c, _)| *c).collect(),
        skipped: Vec::new(),
    };
    let pad = id_map.get(&PAD).cloned().unwrap_or_default();
    let push = |enc: &mut Encoded, c: char, owner: Owner| -> bool {
        match id_map.get(&c) {
            Some(ids) => {
                // The pad before a symbol is the transition into it.
                for &id in pad.iter().chain(ids.iter()) {
                    enc.ids.push(id);
                    enc.owners.push(owner);
                }
                true
            }
            None => {
                enc.skipped.push(c);
                false
            }
        }
    };
    if let Some(bos) = id_map.get(&BOS) {
        for &id in bos {
            enc.ids.push(id);
            enc.owners.push(Owner::Gap);
        }
    }
    // Stress waiting for the next vowel of the word, and ids of stress marks waiting for the next unit.
    let mut pending_stress: Option<(Stress, usize)> = None;
    let mut waiting_ids: Vec<usize> = Vec::new();
    let mut prev_in_word = false;
    for &(c, word) in &layout {
        let Some(w) = word else {
            pending_stress = None;
            // Stress marks with no unit after them in their word are gaps.
            for i in waiting_ids.drain(..) {
                enc.owners[i] = Owner::Gap;
            }
            let start = enc.ids.len();
            // A space between two words is the next word's onset; after punctuation it is pause.
            if push(&mut enc, c, Owner::Gap) && c == ' ' && prev_in_word {
                waiting_ids.extend(start..enc.ids.len());
            }
            prev_in_word = false;
            continue;
        };
        prev_in_word = true;
        if let Some(s) = is_stress(c) {
            let start = enc.ids.len();
            if push(&mut enc, c, Owner::Gap) {
                waiting_ids.extend(start..enc.ids.len());
            }
            pending_stress = Some((s, w));
            continue;
        }
        let joins_prev = enc.units.last().is_some_and(|u| {
            u.word == w
                && (is_modifier(c) || joins(&u.phoneme.symbol, c))
                && !enc.owners.is_empty()
                && waiting_ids.is_empty()
        });
        let unit = if joins_prev {
            let u = enc.units.len() - 1;
            enc.units[u].phoneme.symbol.push(c);
            u
        } else if is_modifier(c) {
            // A modifier with nothing to modify: keep it as its own (rare) unit.
            enc.units.push(Unit {
                phoneme: Phoneme::new(c.to_string()),
                word: w,
            });
            enc.units.len() - 1
        } else {
            enc.units.push(Unit {
                phoneme: Phoneme::new(c.to_string()),
                word: w,
            });
            enc.units.len() - 1
        };
        if push(&mut enc, c, Owner::Unit(unit)) {
            for i in waiting_ids.drain(..) {
                enc.owners[i] = Owner::Unit(unit);
            }
        }
        if let Some((s, sw)) = pending_stress
            && sw == w
            && is_vowel(&enc.units[unit].phoneme.symbol)
        {
            enc.units[unit].phoneme.stress = s;
            pending_stress = None;
        }
    }
    for i in waiting_ids.drain(..) {
        enc.owners[i] = Owner::Gap;
    }
    if let Some(eos) = id_map.get(&EOS) {
        for &id in pad.iter().chain(eos.iter()) {
            enc.ids.push(id);
            enc.owners.push(Owner::Gap);
        }
    }
    // Units whose every symbol was unknown to the voice own no ids: drop them.
    let owned: Vec<bool> = {
        let mut v = vec![false; enc.units.len()];
        for o in &enc.owners {
            if let Owner::Unit(u) = o {
                v[*u] = true;
            }
        }
        v
    };
    if owned.iter().any(|o| !o) {
        let mut remap = vec![0usize; enc.units.len()];
        let mut kept = Vec::new();
        for (i, u) in enc.units.drain(..).enumerate() {
            remap[i] = kept.len();
            if owned[i] {
                kept.push(u);
            }
        }
        enc.units = kept;
        for o in &mut enc.owners {
            if let Owner::Unit(u) = o {
                *u = remap[*u];
            }
        }
    }
    enc
}

/// Segments (phoneme, frames) in order, covering every id's frames.
fn segments(enc: &Encoded, frames: &[u64]) -> Vec<(Phoneme, Option<usize>, u64)> {
    let mut segs: Vec<(Phoneme, Option<usize>, u64)> = Vec::new();
    let mut gap = 0u64;
    let mut current: Option<usize> = None;
    let flush_gap = |segs: &mut Vec<(Phoneme, Option<usize>, u64)>, gap: &mut u64, at_end: bool| {
        if *gap == 0 {
            return;
        }
        if *gap >= MIN_SILENCE_FRAMES || segs.is_empty() && at_end {
            segs.push((Phoneme::new("_"), None, *gap));
            *gap = 0;
        } else if let Some(last) = segs.last_mut() {
            last.2 += *gap;
            *gap = 0;
        }
        // else: a short gap at the very start waits for the first unit.
    };
    for (i, owner) in enc.owners.iter().enumerate() {
        let f = frames.get(i).copied().unwrap_or(0);
        match owner {
            Owner::Gap => {
                gap += f;
                current = None;
            }
            Owner::Unit(u) => {
                if current != Some(*u) {
                    flush_gap(&mut segs, &mut gap, false);
                    let unit = &enc.units[*u];
                    // The leading short gap (if any) goes to the first unit.
                    segs.push((
                        unit.phoneme.clone(),
                        Some(unit.word),
                        std::mem::take(&mut gap),
                    ));
                    current = Some(*u);
                }
                if let Some(last) = segs.last_mut() {
                    last.2 += f;
                }
            }
        }
    }
    flush_gap(&mut segs, &mut gap, true);
    // A unit can end up with zero frames only if the voice gave its ids none: fold it into a neighbour.
    let mut out: Vec<(Phoneme, Option<usize>, u64)> = Vec::with_capacity(segs.len());
    let mut carry = 0u64;
    for (p, w, f) in segs {
        if f + carry == 0 {
            continue;
        }
        out.push((p, w, f + carry));
        carry = 0;
    }
    out
}

/// The phoneme and word timelines for `samples` samples of audio at `rate`, from per-id `frames`.
/// `hop` is samples per frame; any rounding difference between the frames and the audio is taken by the
/// last phoneme so the timeline ends exactly at `samples`.
pub fn timelines(
    enc: &Encoded,
    frames: &[u64],
    hop: u64,
    samples: u64,
    rate: u32,
) -> (Timeline<Phoneme>, Timeline<Word>) {
    let segs = segments(enc, frames);
    let mut phonemes = Vec::with_capacity(segs.len());
    let mut word_spans: Vec<Option<(SampleTime, SampleTime)>> = vec![None; enc.words.len()];
    let mut t = SampleTime::ZERO;
    let n = segs.len();
    for (k, (p, w, f)) in segs.into_iter().enumerate() {
        let mut len = f * hop;
        if k + 1 == n || t.get() + len > samples {
            len = samples.saturating_sub(t.get());
        }
        if len == 0 {
            continue;
        }
        let range = TimeRange::at(t, len);
        if let Some(w) = w {
            let span = word_spans[w].get_or_insert((range.start(), range.end()));
            span.1 = range.end();
        }
        phonemes.push(Timed::new(range, p));
        t = range.end();
    }
    if phonemes.is_empty() && samples > 0 {
        phonemes.push(Timed::new(
            TimeRange::at(SampleTime::ZERO, samples),
            Phoneme::new("_"),
        ));
    }
    let words = enc
        .words
        .iter()
        .zip(word_spans)
        .filter_map(|(w, s)| {
            s.and_then(|(a, b)| TimeRange::new(a, b).ok())
                .map(|r| Timed::new(r, w.clone()))
        })
        .collect();
    // Both are built in order without overlaps; construction cannot fail for a non-zero rate.
    let phonemes = Timeline::from_items(rate, phonemes).unwrap_or_else(|_| empty(rate));
    let words = Timeline::from_items(rate, words).unwrap_or_else(|_| empty(rate));
    (phonemes, words)
}

fn empty<T>(rate: u32) -> Timeline<T> {
    Timeline::new(rate.max(1)).expect("non-zero rate")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> HashMap<char, Vec<i64>> {
        "_^$ ,.!?həloʊwɜːldˈˌɛvɹɪʌntʃ"
            .chars()
            .enumerate()
            .map(|(i, c)| (c, vec![i as i64]))
            .collect()
    }

    fn word(text: &str, ipa: &str) -> PhonToken {
        PhonToken::Word {
            text: text.into(),
            ipa: ipa.into(),
        }
    }

    #[test]
    fn ids_follow_piper_layout() {
        let m = map();
        let enc = encode(
            &[
                word("hello", "həlˈoʊ"),
                PhonToken::Punct(','),
                word("world", "wˈɜːld"),
            ],
            &m,
        );
        assert_eq!(enc.ipa, "həlˈoʊ, wˈɜːld");
        let id = |c: char| m[&c][0];
        assert_eq!(&enc.ids[..4], &[id('^'), id('_'), id('h'), id('_')]);
        assert_eq!(*enc.ids.last().unwrap(), id('$'));
        // ^_ + 14 symbols × 2 + $
        assert_eq!(enc.ids.len(), 2 + 14 * 2 + 1);
        let syms: Vec<_> = enc
            .units
            .iter()
            .map(|u| u.phoneme.symbol.as_str())
            .collect();
        assert_eq!(syms, ["h", "ə", "l", "oʊ", "w", "ɜː", "l", "d"]);
        assert_eq!(enc.units[3].phoneme.stress, Stress::Primary);
        assert_eq!(enc.units[5].phoneme.stress, Stress::Primary);
        assert_eq!(enc.units[1].phoneme.stress, Stress::None);
        assert_eq!(enc.units[4].word, 1);
    }

    #[test]
    fn durations_become_contiguous_timelines() {
        let m = map();
        let enc = encode(
            &[
                word("hello", "həlˈoʊ"),
                PhonToken::Punct(','),
                word("world", "wˈɜːld"),
            ],
            &m,
        );
        // Every id two frames, except the comma's id which gets 10.
        let comma = enc.ipa.chars().position(|c| c == ',').unwrap();
        let mut frames = vec![2u64; enc.ids.len()];
        // ^ _ then pairs: the comma's id is at 2 + 2*comma.
        frames[2 + 2 * comma] = 10;
        // A short start gap is merged into the first phoneme.
        frames[0] = 1;
        frames[1] = 1;
        let total: u64 = frames.iter().sum();
        let (ph, words) = timelines(&enc, &frames, 256, total * 256, 22050);
        assert!(ph.is_contiguous());
        assert_eq!(ph.span().unwrap().end().get(), total * 256);
        let syms: Vec<_> = ph.iter().map(|p| p.value.symbol.as_str()).collect();
        assert_eq!(syms, ["h", "ə", "l", "oʊ", "_", "w", "ɜː", "l", "d", "_"]);
        // ^ (1 frame, too short for a silence) + the pad before h (1) + h (2).
        assert_eq!(ph.items()[0].range.len(), 4 * 256);
        // The comma (pad 2 + 10 frames) and the space after it (2 + 2) make one silence; the last pad
        // and the end symbol (2 + 2) another.
        assert_eq!(ph.items()[4].range.len(), 16 * 256);
        assert_eq!(words.len(), 2);
        assert_eq!(words.items()[0].value.text, "hello");
        assert_eq!(words.items()[1].end(), ph.items()[8].end());
    }

    #[test]
    fn a_space_between_words_starts_the_next_word() {
        let m = map();
        let enc = encode(&[word("hello", "həlˈoʊ"), word("world", "wˈɜːld")], &m);
        assert_eq!(enc.ipa, "həlˈoʊ wˈɜːld");
        // The space and the pad after it last 4 frames each: together a pause's length, yet they are
        // the onset of "world", not silence.
        let space = 2 + 2 * enc.ipa.chars().position(|c| c == ' ').unwrap();
        let mut frames = vec![1u64; enc.ids.len()];
        frames[space] = 4;
        frames[space + 1] = 4;
        let total: u64 = frames.iter().sum();
        let (ph, words) = timelines(&enc, &frames, 256, total * 256, 22050);
        assert!(ph.iter().all(|p| p.value.symbol != "_"));
        let w = ph.iter().find(|p| p.value.symbol == "w").unwrap();
        // w = the pad before the space (1) + the space (4) + the pad before w (4) + w (1), and the word
        // starts with it.
        assert_eq!(w.range.len(), 10 * 256);
        assert_eq!(words.items()[1].start(), w.start());
        assert_eq!(words.items()[0].end(), w.start());
    }

    #[test]
    fn unknown_symbols_are_skipped() {
        let m = map();
        let enc = encode(&[word("x", "hœl")], &m);
        assert_eq!(enc.skipped, vec!['œ']);
        let syms: Vec<_> = enc
            .units
            .iter()
            .map(|u| u.phoneme.symbol.as_str())
            .collect();
        assert_eq!(syms, ["h", "l"]);
        assert!(enc.owners.iter().all(|o| match o {
            Owner::Unit(u) => *u < enc.units.len(),
            Owner::Gap => true,
        }));
    }
}
