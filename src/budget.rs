//! Resource budgets: how long one performance (a script) and one utterance (a `say`, a chat reply)
//! may run, pauses and gaps included.
//!
//! Every duration a client or a file can ask for is bounded by these before anything is allocated
//! for it: a script's planned length (its gaps, `at` times, breaks, tail and events) is checked before
//! any line is spoken, and again as each line's audio arrives; an utterance's breaks are checked
//! before it is queued, and its spoken clauses as they are placed on the timeline. Silence (breaks,
//! gaps) is a span on the timeline, never a buffer, so the limits bound what is heard, and memory
//! follows from them.
//!
//! The limits are `[limits]` in `idol.toml` ([`crate::config`]); [`Budget::default`] is what an
//! empty config gives.

/// The largest value a limit may be set to (24 hours).
pub const MAX_LIMIT_SECS: f64 = 24.0 * 3600.0;

/// What a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budgeted {
    /// A scripted performance (`idol render`, `idol perform`, the server's `perform`).
    Performance,
    /// One utterance: a `say` or a chat reply (speech and its breaks).
    Utterance,
}

impl Budgeted {
    /// The `idol.toml` key that sets the limit.
    pub fn key(self) -> &'static str {
        match self {
            Budgeted::Performance => "[limits] performance_secs",
            Budgeted::Utterance => "[limits] utterance_secs",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Budgeted::Performance => "the performance",
            Budgeted::Utterance => "the utterance",
        }
    }
}

/// The maximum durations, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// A whole scripted performance, from its first sample to its last (gaps and tail included).
    pub performance_secs: f64,
    /// One `say` or chat reply, breaks included.
    pub utterance_secs: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            performance_secs: 600.0,
            utterance_secs: 600.0,
        }
    }
}

impl Budget {
    /// The limit for `what`, in seconds.
    pub fn secs(&self, what: Budgeted) -> f64 {
        match what {
            Budgeted::Performance => self.performance_secs,
            Budgeted::Utterance => self.utterance_secs,
        }
    }

    /// The limit for `what`, in samples at `rate`.
    pub fn samples(&self, what: Budgeted, rate: u32) -> u64 {
        (self.secs(what).clamp(0.0, MAX_LIMIT_SECS) * rate as f64).floor() as u64
    }

    /// `Ok` when `needed` samples at `rate` fit the limit for `what`, else the error saying so.
    pub fn check(&self, what: Budgeted, needed: u64, rate: u32) -> Result<(), OverBudget> {
        if needed <= self.samples(what, rate) {
            Ok(())
        } else {
            Err(OverBudget {
                what,
                needed_secs: needed as f64 / rate.max(1) as f64,
                limit_secs: self.secs(what),
            })
        }
    }
}

/// A request that would run longer than its limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{} would run at least {needed_secs:.1} s, over the limit of {limit_secs} s: shorten it, or raise {} in idol.toml",
    what.noun(),
    what.key()
)]
pub struct OverBudget {
    pub what: Budgeted,
    /// How long it would run (at least).
    pub needed_secs: f64,
    pub limit_secs: f64,
}

/// The largest text file idol reads for a user: a persona card, a config, a rig, a voice's
/// `.onnx.json`, a script (scripts name their audio, they do not hold it). 8 MiB is thousands of
/// lines more than any of them needs; a bigger file is refused before it is read.
pub const MAX_TEXT_FILE_BYTES: u64 = 8 << 20;

/// Read a UTF-8 text file of at most `max` bytes. A larger file is refused with
/// [`std::io::ErrorKind::InvalidData`] before its contents are read (its size is checked, then at
/// most `max + 1` bytes are read, so a file that grows while it is read is caught too).
pub fn read_text(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let too_big = |len: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the file is {len} bytes, over the {max}-byte limit for a text file idol reads"
            ),
        )
    };
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(too_big(len));
    }
    let mut text = String::with_capacity(len as usize);
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts_samples_and_names_the_key() {
        let b = Budget {
            performance_secs: 2.0,
            utterance_secs: 1.0,
        };
        assert!(b.check(Budgeted::Performance, 44100, 22050).is_ok());
        let e = b.check(Budgeted::Performance, 44101, 22050).unwrap_err();
        assert!(e.to_string().contains("[limits] performance_secs"), "{e}");
        let e = b.check(Budgeted::Utterance, 22051, 22050).unwrap_err();
        assert!(e.to_string().contains("over the limit of 1 s"), "{e}");
    }

    #[test]
    fn read_text_refuses_a_file_over_its_limit_before_reading_it() {
        let dir = std::env::temp_dir().join(format!("idol-read-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.toml");
        std::fs::write(&p, "x".repeat(100)).unwrap();
        assert_eq!(read_text(&p, 100).unwrap().len(), 100);
        let e = read_text(&p, 99).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("100 bytes, over the 99-byte limit"),
            "{e}"
        );
        std::fs::write(&p, [0xffu8, 0xfe]).unwrap();
        assert_eq!(
            read_text(&p, 99).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
