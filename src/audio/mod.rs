//! audio: recorded audio in, mono `f32` PCM out.
//!
//! Stage: before the face (audio-driven lip sync, `face::from_audio`) and the offline render (recorded
//! lines). Input: a path to a WAV, MP3, FLAC or Ogg/Vorbis file. Output: [`DecodedAudio`], the file
//! mixed down to one channel of `f32` samples in -1..=1 at the file's own sample rate; [`resample`]
//! brings it to the rate of the session clock (e.g. the voice's 22050 Hz).
//!
//! Decoding is done with symphonia (pure Rust). Multichannel audio is mixed to mono by averaging the
//! channels. A truncated file, or a streamed WAV whose header carries a bogus length, ends where the
//! data ends: an unexpected end of file is the end of the audio, not an error. A packet that fails to
//! decode in the middle of a file is skipped (a glitch, not a failed line); a file where nothing
//! decodes is an error naming the path.
//!
//! Headers are checked before the decoder sees them (a WAV's `fmt ` chunk: sample rate within
//! [`MIN_RATE`]..=[`MAX_RATE`], at least one channel, a block size; any container's stated rate and
//! channels after probing), so a file claiming a rate of 0 or 4 GHz is a clear error naming it. A
//! panic inside the decoder on some other malformed input is caught and becomes an error too.
//! [`decode_file_within`] refuses a file longer than a limit from its header, before decoding it.
//!
//! Threading: plain functions, no shared state; decoding reads the whole file on the calling thread.

mod decode;
mod resample;

pub use decode::{DecodedAudio, MAX_RATE, MIN_RATE, decode_file, decode_file_within};
pub use resample::resample;

use std::path::PathBuf;

/// The formats [`decode_file`] reads, for error messages.
pub const SUPPORTED_FORMATS: &str = "WAV (PCM or float), MP3, FLAC and Ogg/Vorbis";

/// Errors of the audio stage; every one names the file.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The reason is in the message (not a `source`), so it shows once however the error is printed.
    #[error("cannot open audio file {}: {reason}", path.display())]
    Open {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("cannot read audio file {}: {detail}; supported formats are {SUPPORTED_FORMATS}", path.display())]
    Unsupported { path: PathBuf, detail: String },
    #[error(
        "audio file {path} could not be decoded: {detail}; supported formats are {SUPPORTED_FORMATS}"
    )]
    Decode { path: PathBuf, detail: String },
    #[error("audio file {} contains no audio samples", path.display())]
    Empty { path: PathBuf },
    /// A header that cannot be true (sample rate 0 or 4 GHz, no channels, ...): refused before the
    /// decoder reads it.
    #[error("audio file {} has a broken header: {detail}", path.display())]
    BadHeader { path: PathBuf, detail: String },
    /// Longer than the caller allows (checked on the header, then while decoding).
    #[error("audio file {} runs {secs:.1} s, longer than the {max_secs:.1} s allowed here", path.display())]
    TooLong {
        path: PathBuf,
        secs: f64,
        max_secs: f64,
    },
}
