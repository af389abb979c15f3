//! Step 3 of the mouth chain: jaw opening by stress.
//!
//! Input and output: `Timeline<Phone>`. A vowel's jaw target is its openness (from the phone table)
//! scaled by its stress: primary 1.0, secondary 0.9, unstressed 0.78. When the timeline carries no
//! stress at all (an aligner's IPA without marks), every vowel gets 0.92, so unmarked input is not
//! flattened. Stressed vowels also dominate their neighbours a little more.
//!
//! Pure.

use super::phonetics::{Phone, PhoneClass, param};
use crate::speech::Stress;
use crate::time::Timeline;

pub fn apply(phones: Timeline<Phone>) -> Timeline<Phone> {
    let any_stress = phones
        .iter()
        .any(|p| p.value.class == PhoneClass::Vowel && p.value.stress != Stress::None);
    phones.map(|mut p| {
        if p.class == PhoneClass::Vowel {
            let (scale, dom) = match (any_stress, p.stress) {
                (false, _) => (0.92, 1.0),
                (true, Stress::Primary) => (1.0, 1.25),
                (true, Stress::Secondary) => (0.9, 1.1),
                (true, Stress::None) => (0.78, 0.9),
            };
            p.target[param::JAW] *= scale;
            p.dominance[param::JAW] *= dom;
        }
        p
    })
}
