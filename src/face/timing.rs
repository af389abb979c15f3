//! Step 2 of the mouth chain: phones → phones with closure-safe timing.
//!
//! Input and output: `Timeline<Phone>`. Gaps between phones become explicit silence, so the next
//! steps see one contiguous timeline. A bilabial (p b m) shorter than the minimum closure time is
//! widened, three quarters into the phone before it (the release is where aligners put the boundary
//! most reliably, and lips that open late look wrong), taking time from its neighbours (each keeps at least 40 % of its own
//! span), so the lips visibly meet even on a 10 ms /b/ and at least one frame lands inside the closure
//! at any frame rate the caller names.
//!
//! Pure.

use super::phonetics::Phone;
use crate::time::{SampleTime, TimeRange, Timed, Timeline};

/// Fill gaps with silence and widen short bilabials to at least `min_closure` samples.
pub fn retime(phones: Timeline<Phone>, min_closure: u64) -> Timeline<Phone> {
    let rate = phones.rate();
    let items = phones.into_items();
    let mut out: Vec<Timed<Phone>> = Vec::with_capacity(items.len() * 2);
    for it in items {
        if let Some(prev) = out.last()
            && prev.end() < it.start()
        {
            let gap = TimeRange::new(prev.end(), it.start()).expect("ordered");
            out.push(Timed::new(gap, Phone::silence()));
        }
        out.push(it);
    }
    // Widen bilabials, in place, keeping the timeline contiguous.
    let n = out.len();
    for i in 0..n {
        if !out[i].value.bilabial || out[i].range.len() >= min_closure {
            continue;
        }
        let need = min_closure - out[i].range.len();
        // The release is the landmark aligners place best: widen mostly into the phone before.
        let want_left = need * 3 / 4;
        let want_right = need - want_left;
        // Before the first phone and after the last there is only silence: free to take.
        let left_free = if i > 0 {
            out[i - 1].range.len() * 6 / 10
        } else {
            out[i].start().get()
        };
        let right_free = if i + 1 < n {
            out[i + 1].range.len() * 6 / 10
        } else {
            need
        };
        let mut take_left = want_left.min(left_free);
        let mut take_right = want_right.min(right_free);
        // If one side is short, borrow the rest from the other.
        take_left += (want_right - take_right).min(left_free - take_left);
        take_right += (want_left.saturating_sub(take_left)).min(right_free - take_right);
        let start = out[i].start().get() - take_left;
        let end = out[i].end().get() + take_right;
        if i > 0 {
            let ps = out[i - 1].start();
            out[i - 1].range = TimeRange::new(ps, SampleTime(start)).expect("shrunk");
        }
        if i + 1 < n {
            let ne = out[i + 1].end();
            out[i + 1].range = TimeRange::new(SampleTime(end), ne).expect("shrunk");
        }
        out[i].range = TimeRange::new(SampleTime(start), SampleTime(end)).expect("widened");
    }
    out.retain(|t| !t.range.is_empty());
    Timeline::from_items(rate, out).expect("retimed timeline stays ordered")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::phonetics::{PhoneClass, ipa};

    #[test]
    fn fills_gaps_and_widens_short_bilabials() {
        let a = ipa("ɑ").unwrap();
        let b = ipa("b").unwrap();
        let tl = Timeline::from_items(
            1000,
            vec![
                Timed::new(TimeRange::at(SampleTime(0), 100), a),
                Timed::new(TimeRange::at(SampleTime(100), 10), b),
                Timed::new(TimeRange::at(SampleTime(110), 100), a),
                Timed::new(TimeRange::at(SampleTime(300), 100), a),
            ],
        )
        .unwrap();
        let r = retime(tl, 50);
        assert!(r.is_contiguous());
        assert_eq!(
            r.items()[1].range,
            TimeRange::new(SampleTime(70), SampleTime(120)).unwrap()
        );
        assert_eq!(r.items()[3].value.class, PhoneClass::Silence);
    }
}
