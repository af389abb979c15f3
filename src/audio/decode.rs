//! Decoding with symphonia: probe the container (by content, helped by the file extension), take the
//! first audio track, decode packet by packet into interleaved `f32`, and average the channels.

use super::AudioError;
use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// A decoded file: mono samples in -1..=1 at `sample_rate` Hz.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// Mono samples (the file's channels averaged).
    pub samples: Vec<f32>,
    /// The file's sample rate in Hz.
    pub sample_rate: u32,
    /// How many channels the file had before the mixdown.
    pub channels: usize,
}

impl DecodedAudio {
    /// Duration in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// Decode `path` (WAV, MP3, FLAC or Ogg/Vorbis) into mono `f32` at its own sample rate.
///
/// A truncated file, or one whose header claims more data than there is, ends at its last whole packet.
/// Errors name the path and, when the file is not readable audio, the supported formats.
pub fn decode_file(path: impl AsRef<Path>) -> Result<DecodedAudio, AudioError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|reason| AudioError::Open {
        path: path.to_path_buf(),
        reason,
    })?;
    let unsupported = |detail: String| AudioError::Unsupported {
        path: path.to_path_buf(),
        detail,
    };
    let decode_err = |detail: String| AudioError::Decode {
        path: path.to_path_buf(),
        detail,
    };

    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions {
                // Drop the encoder delay and padding where the file records them (LAME/Xing
                // headers in MP3, granule positions in Ogg), so a line keeps its real length.
                enable_gapless: true,
                ..FormatOptions::default()
            },
            &MetadataOptions::default(),
        )
        .map_err(|e| unsupported(format!("not a recognised audio container ({e})")))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| unsupported("no audio track".to_string()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| unsupported(format!("unsupported codec ({e})")))?;

    let mut sample_rate = params.sample_rate.unwrap_or(0);
    let mut channels = params.channels.map(|c| c.count()).unwrap_or(0);
    let mut samples: Vec<f32> = Vec::new();
    let mut interleaved: Option<SampleBuffer<f32>> = None;
    let mut skipped = 0usize;
    let mut last_error: Option<String> = None;

    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            // The normal end of a stream, and the end of a file whose header lied about its length.
            Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            // A chained stream changed its parameters: keep what we have (one line, one stream).
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                if samples.is_empty() {
                    return Err(decode_err(e.to_string()));
                }
                // A damaged tail: keep the audio before it.
                log::warn!(
                    "{}: stopped reading at a damaged packet: {e}",
                    path.display()
                );
                break;
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymError::DecodeError(e)) => {
                skipped += 1;
                last_error = Some(e.to_string());
                continue;
            }
            Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(decode_err(e.to_string())),
        };
        let spec = *decoded.spec();
        if decoded.frames() == 0 {
            continue;
        }
        sample_rate = spec.rate;
        let ch = spec.channels.count().max(1);
        channels = ch;
        let buf = match &mut interleaved {
            Some(b) if b.capacity() >= decoded.capacity() * ch => b,
            slot => slot.insert(SampleBuffer::<f32>::new(decoded.capacity() as u64, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        let data = buf.samples();
        if ch == 1 {
            samples.extend_from_slice(data);
        } else {
            let scale = 1.0 / ch as f32;
            samples.extend(
                data.chunks_exact(ch)
                    .map(|frame| frame.iter().sum::<f32>() * scale),
            );
        }
    }

    if skipped > 0 {
        log::warn!(
            "{}: skipped {skipped} packet(s) that failed to decode",
            path.display()
        );
    }
    if samples.is_empty() {
        return Err(match last_error {
            Some(e) => decode_err(e),
            None => AudioError::Empty {
                path: path.to_path_buf(),
            },
        });
    }
    if sample_rate == 0 {
        return Err(decode_err("the file does not state its sample rate".into()));
    }
    // A header that promised more than the file holds: an interrupted copy or download. The audio
    // that is there is used, but the user is told, since the take is shorter than they think.
    if let Some(promised) = params.n_frames
        && (samples.len() as u64) < promised.saturating_mul(99) / 100
    {
        log::warn!(
            "{}: the file is truncated: its header promises {:.2} s, only {:.2} s of audio is there",
            path.display(),
            promised as f64 / sample_rate as f64,
            samples.len() as f64 / sample_rate as f64
        );
    }
    // A NaN or infinite sample poisons everything downstream (lip sync levels, mixing, the render):
    // it only comes from a file whose header misstates the sample format (32-bit float claimed over
    // integer data), so the file is refused rather than guessed at.
    if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
        return Err(decode_err(format!(
            "sample {i} (at {:.3} s) is not a finite number: the header's sample format does not \
             match the data (e.g. 32-bit float declared over integer PCM); re-export the file as \
             16-bit PCM WAV",
            i as f64 / sample_rate as f64
        )));
    }
    Ok(DecodedAudio {
        samples,
        sample_rate,
        channels: channels.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tts::wav::wav_bytes;

    fn ramp() -> Vec<f32> {
        (0..1000).map(|i| (i as f32 / 1000.0) - 0.5).collect()
    }

    #[test]
    fn wav_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        std::fs::write(&path, wav_bytes(&ramp(), 22050)).unwrap();
        let a = decode_file(&path).unwrap();
        assert_eq!(a.sample_rate, 22050);
        assert_eq!(a.channels, 1);
        assert_eq!(a.samples.len(), 1000);
        for (x, y) in a.samples.iter().zip(ramp()) {
            assert!((x - y).abs() < 1e-4);
        }
    }

    #[test]
    fn streamed_wav_with_bogus_length_ends_at_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream.wav");
        let mut b = wav_bytes(&ramp(), 16000);
        // A streaming writer does not know the length: RIFF and data sizes are left at their maximum.
        b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        b[40..44].copy_from_slice(&(u32::MAX - 64).to_le_bytes());
        std::fs::write(&path, b).unwrap();
        let a = decode_file(&path).unwrap();
        assert_eq!(a.sample_rate, 16000);
        assert_eq!(a.samples.len(), 1000);
    }

    #[test]
    fn missing_and_corrupt_files_name_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.wav");
        let e = decode_file(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.wav"), "{e}");
        let junk = dir.path().join("junk.mp3");
        std::fs::write(&junk, b"this is not audio at all, just text in a file").unwrap();
        let e = decode_file(&junk).unwrap_err().to_string();
        assert!(e.contains("junk.mp3"), "{e}");
        assert!(e.contains("FLAC"), "{e}");
    }

    #[test]
    fn non_finite_samples_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("float.wav");
        let good = [0.25f32, -0.5, 0.0, 0.75];
        // A 32-bit float WAV (format 3) of 4 samples: finite ones decode, NaN or infinity is refused.
        let float_wav = |data: &[f32]| {
            let mut b = wav_bytes(&[0.0; 8], 8000);
            b[20..22].copy_from_slice(&3u16.to_le_bytes());
            b[28..32].copy_from_slice(&(8000u32 * 4).to_le_bytes());
            b[32..34].copy_from_slice(&4u16.to_le_bytes());
            b[34..36].copy_from_slice(&32u16.to_le_bytes());
            b.truncate(44);
            for x in data {
                b.extend_from_slice(&x.to_le_bytes());
            }
            b
        };
        std::fs::write(&path, float_wav(&good)).unwrap();
        assert_eq!(decode_file(&path).unwrap().samples, good);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            std::fs::write(&path, float_wav(&[0.25, -0.5, bad, 0.75])).unwrap();
            let e = decode_file(&path).unwrap_err().to_string();
            assert!(e.contains("float.wav") && e.contains("sample 2 "), "{e}");
        }
    }
}
