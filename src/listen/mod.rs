//! The host's voice: speech found by Silero VAD, words by Whisper.
//!
//! - [`ctranslate2`] reads a CTranslate2 Whisper model (`model.bin`) into candle's tensors.
//! - [`mel`] computes Whisper's log-mel input; [`whisper`] runs the model on candle (greedy).
//!
//! Layer: `listen` uses `assets`, `audio` and the ONNX Runtime environment of `tts`; `perform`'s
//! callers (`cli`, `server`) feed its utterances to the idol.

pub mod ctranslate2;
pub mod host;
mod kernels;
pub mod mel;
pub mod net;
pub mod vad;
pub mod whisper;

pub use whisper::{Segment, Whisper, WhisperError, WhisperFiles};

/// The Silero VAD model, relative to the idol home.
pub const SILERO_VAD: &str = "models/silero_vad.onnx";

/// Word error rate of `hypothesis` against `reference`: word-level edit distance over the
/// reference's word count, both lowercased with punctuation dropped (apostrophes kept).
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let words = |s: &str| -> Vec<String> {
        s.to_lowercase()
            .split(|c: char| c.is_whitespace() || (c.is_ascii_punctuation() && c != '\''))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let (r, h) = (words(reference), words(hypothesis));
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len() as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn word_error_rate_counts_edits_over_reference_words() {
        use super::word_error_rate as wer;
        assert_eq!(
            wer("Bobby ripped the ledger.", "bobby ripped the ledger"),
            0.0
        );
        assert_eq!(wer("a b c d", "a x c"), 0.5);
        assert_eq!(wer("It's here", "it's here"), 0.0);
        assert_eq!(wer("", ""), 0.0);
    }
}
