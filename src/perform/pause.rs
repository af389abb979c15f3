//! Pauses as spans: a `<break/>` written before or after a clause becomes a length on the timeline
//! ([`crate::perform::Director::schedule_pause`]), never a buffer of silence. The director releases a
//! pause as zero chunks made one at a time, with the face's idle frames over it, so the memory a
//! pause costs does not grow with its length.

use super::ClauseText;
use crate::time::SampleTime;

/// The pauses around one clause, in samples at the session rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pauses {
    pub before: u64,
    pub after: u64,
}

impl Pauses {
    /// The pauses `clause` asks for, at `rate`.
    pub fn of(clause: &ClauseText, rate: u32) -> Self {
        Pauses {
            before: SampleTime::from_millis(u64::from(clause.pause_before_ms()), rate).get(),
            after: SampleTime::from_millis(u64::from(clause.pause_after_ms()), rate).get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_become_samples() {
        let c = ClauseText {
            pause_before: vec![500],
            pause_after: vec![60_000],
            ..ClauseText::default()
        };
        assert_eq!(
            Pauses::of(&c, 16000),
            Pauses {
                before: 8000,
                after: 960_000
            }
        );
    }
}
