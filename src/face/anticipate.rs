//! Step 4 of the mouth chain: rounding anticipation and carry-over.
//!
//! Input and output: `Timeline<Phone>`. Lips start rounding for a rounded vowel (u, o, ɔ, w...) well
//! before it, through the consonants that precede it ("screw": the lips round during /s k r/), because
//! those consonants do not care about the lips. For each rounded vowel we walk back over up to three
//! consonants within 300 ms (never across a silence or another vowel) and raise their rounding target
//! to 70 % of the vowel's, with enough dominance to beat the unrounded vowels around. The consonant
//! right after a rounded vowel keeps 40 % of its rounding (carry-over). Bilabials and labiodentals
//! take part: their closure or tuck is handled separately and rounding does not open the lips.
//!
//! Pure.

use super::phonetics::{Phone, PhoneClass, param};
use crate::time::{Timed, Timeline};

pub fn apply(phones: Timeline<Phone>) -> Timeline<Phone> {
    let rate = phones.rate();
    let window = rate as u64 * 300 / 1000;
    let mut items: Vec<Timed<Phone>> = phones.into_items();
    let n = items.len();
    for i in 0..n {
        let v = items[i].value;
        if v.class != PhoneClass::Vowel || v.target[param::ROUND] < 0.5 {
            continue;
        }
        let round = v.target[param::ROUND];
        let vstart = items[i].start().get();
        let mut j = i;
        let mut count = 0;
        while j > 0 && count < 3 {
            j -= 1;
            let c = &mut items[j];
            if c.value.class != PhoneClass::Consonant || vstart - c.end().get() > window {
                break;
            }
            let t = &mut c.value;
            t.target[param::ROUND] = t.target[param::ROUND].max(0.7 * round);
            t.dominance[param::ROUND] = t.dominance[param::ROUND].max(0.6);
            count += 1;
        }
        if i + 1 < n && items[i + 1].value.class == PhoneClass::Consonant {
            let t = &mut items[i + 1].value;
            t.target[param::ROUND] = t.target[param::ROUND].max(0.4 * round);
            t.dominance[param::ROUND] = t.dominance[param::ROUND].max(0.4);
        }
    }
    Timeline::from_items(rate, items).expect("same spans")
}
