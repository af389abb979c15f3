//! Decoding with symphonia: probe the container (by content, helped by the file extension), take the
//! first audio track, decode packet by packet into interleaved `f32`, and average the channels.

use super::AudioError;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
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

/// The lowest sample rate accepted (telephone audio).
pub const MIN_RATE: u32 = 8_000;
/// The highest sample rate accepted (the highest studio rate in use).
pub const MAX_RATE: u32 = 384_000;

/// Decode `path` (WAV, MP3, FLAC or Ogg/Vorbis) into mono `f32` at its own sample rate.
///
/// A truncated file, or one whose header claims more data than there is, ends at its last whole packet.
/// Errors name the path and, when the file is not readable audio, the supported formats.
pub fn decode_file(path: impl AsRef<Path>) -> Result<DecodedAudio, AudioError> {
    decode_file_within(path, f64::INFINITY)
}

/// [`decode_file`], refusing a file that runs longer than `max_secs` ([`AudioError::TooLong`]): from
/// its header when it states its length (before anything is decoded), else as soon as the decoded
/// audio passes the limit.
pub fn decode_file_within(
    path: impl AsRef<Path>,
    max_secs: f64,
) -> Result<DecodedAudio, AudioError> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(|reason| AudioError::Open {
        path: path.to_path_buf(),
        reason,
    })?;
    let wav = check_wav_header(path, &mut file, max_secs)?;
    file.seek(SeekFrom::Start(0))
        .map_err(|reason| AudioError::Open {
            path: path.to_path_buf(),
            reason,
        })?;
    // Last resort: a panic inside the decoder on input no check above foresaw is an error naming
    // the file, never a crash.
    quiet_panics();
    QUIET.with(|q| q.set(q.get() + 1));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_open(path, file, max_secs, wav)
    }));
    QUIET.with(|q| q.set(q.get() - 1));
    match out {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(AudioError::Decode {
                path: path.to_path_buf(),
                detail: format!("the decoder failed on this file's contents ({what})"),
            })
        }
    }
}

thread_local! {
    /// How many decodes on this thread are running under `catch_unwind` (their panics are errors,
    /// so the panic hook stays quiet about them).
    static QUIET: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Install, once, a panic hook that says nothing for panics caught by a decode on the same thread
/// (they become [`AudioError::Decode`]) and hands every other panic to the hook that was there.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) == 0 {
                previous(info);
            } else {
                log::debug!("audio decoder panicked: {info}");
            }
        }));
    });
}

fn rate_ok(rate: u32) -> bool {
    (MIN_RATE..=MAX_RATE).contains(&rate)
}

fn bad_rate(rate: u32) -> String {
    format!("its sample rate is {rate} Hz; allowed {MIN_RATE}..={MAX_RATE} Hz")
}

/// Check a RIFF/WAVE file's `fmt ` chunk (and its `data` chunk's length, as far as the file holds it,
/// against `max_secs`) before the decoder reads it. Anything that is not a RIFF/WAVE file is left to
/// the decoder's probe (`Ok(false)`).
fn check_wav_header(path: &Path, file: &mut File, max_secs: f64) -> Result<bool, AudioError> {
    let bad = |detail: String| AudioError::BadHeader {
        path: path.to_path_buf(),
        detail,
    };
    let io = |reason| AudioError::Open {
        path: path.to_path_buf(),
        reason,
    };
    let file_len = file.metadata().map_err(io)?.len();
    let mut head = [0u8; 12];
    if file.read_exact(&mut head).is_err() || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Ok(false);
    }
    let mut pos = 12u64;
    let mut fmt: Option<(u16, u32, u16)> = None;
    // A WAV has a few chunks; a file with thousands before its data is not one worth reading.
    for _ in 0..256 {
        let mut ch = [0u8; 8];
        if file.read_exact(&mut ch).is_err() {
            break;
        }
        let size = u64::from(u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]));
        let body = pos + 8;
        match &ch[0..4] {
            b"fmt " => {
                if size < 16 {
                    return Err(bad(format!("its fmt chunk is {size} bytes, under 16")));
                }
                let mut f = [0u8; 16];
                file.read_exact(&mut f)
                    .map_err(|_| bad("its fmt chunk is cut short".into()))?;
                let channels = u16::from_le_bytes([f[2], f[3]]);
                let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
                let block = u16::from_le_bytes([f[12], f[13]]);
                let bits = u16::from_le_bytes([f[14], f[15]]);
                if channels == 0 {
                    return Err(bad("it says it has 0 channels".into()));
                }
                if !rate_ok(rate) {
                    return Err(bad(bad_rate(rate)));
                }
                if bits == 0 || block == 0 {
                    return Err(bad(format!(
                        "it says {bits} bits per sample and {block} bytes per frame"
                    )));
                }
                fmt = Some((channels, rate, block));
            }
            b"data" => {
                let Some((_, rate, block)) = fmt else {
                    return Err(bad("its data chunk comes before its fmt chunk".into()));
                };
                // A streamed WAV leaves the size at its maximum: what the file holds counts.
                let bytes = size.min(file_len.saturating_sub(body));
                let secs = (bytes / u64::from(block)) as f64 / f64::from(rate);
                if secs > max_secs {
                    return Err(AudioError::TooLong {
                        path: path.to_path_buf(),
                        secs,
                        max_secs,
                    });
                }
                return Ok(true);
            }
            _ => {}
        }
        pos = body + size + (size & 1);
        if pos >= file_len {
            break;
        }
        file.seek(SeekFrom::Start(pos)).map_err(io)?;
    }
    match fmt {
        None => Err(bad("it has no fmt chunk".into())),
        Some(_) => Ok(true),
    }
}

/// Decode an opened file; `wav`: its header was checked (and its length measured from what the file
/// holds, not from the header's claim, which a streamed WAV leaves at its maximum).
fn decode_open(
    path: &Path,
    file: File,
    max_secs: f64,
    wav: bool,
) -> Result<DecodedAudio, AudioError> {
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
    let bad = |detail: String| AudioError::BadHeader {
        path: path.to_path_buf(),
        detail,
    };
    if let Some(rate) = params.sample_rate
        && !rate_ok(rate)
    {
        return Err(bad(bad_rate(rate)));
    }
    if params.channels.is_some_and(|c| c.count() == 0) {
        return Err(bad("it says it has 0 channels".into()));
    }
    let too_long = |secs: f64| AudioError::TooLong {
        path: path.to_path_buf(),
        secs,
        max_secs,
    };
    if let (false, Some(n), Some(rate)) = (wav, params.n_frames, params.sample_rate) {
        let secs = n as f64 / f64::from(rate);
        if secs > max_secs {
            return Err(too_long(secs));
        }
    }
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
        if !rate_ok(spec.rate) {
            return Err(bad(bad_rate(spec.rate)));
        }
        sample_rate = spec.rate;
        if samples.len() as f64 > max_secs * f64::from(sample_rate) {
            return Err(too_long(samples.len() as f64 / f64::from(sample_rate)));
        }
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

    /// A 16-bit WAV of `ramp()` whose fmt chunk is then edited by `edit`.
    fn wav_with(dir: &Path, name: &str, edit: impl Fn(&mut Vec<u8>)) -> std::path::PathBuf {
        let mut b = wav_bytes(&ramp(), 16000);
        edit(&mut b);
        let path = dir.join(name);
        std::fs::write(&path, b).unwrap();
        path
    }

    #[test]
    fn impossible_headers_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        type Edit = fn(&mut Vec<u8>);
        let cases: [(&str, Edit, &str); 4] = [
            (
                "r0.wav",
                |b| b[24..28].copy_from_slice(&0u32.to_le_bytes()),
                "sample rate is 0 Hz",
            ),
            (
                "r4g.wav",
                |b| b[24..28].copy_from_slice(&4_000_000_000u32.to_le_bytes()),
                "sample rate is 4000000000 Hz",
            ),
            (
                "c0.wav",
                |b| b[22..24].copy_from_slice(&0u16.to_le_bytes()),
                "0 channels",
            ),
            (
                "b0.wav",
                |b| b[32..34].copy_from_slice(&0u16.to_le_bytes()),
                "bytes per frame",
            ),
        ];
        for (name, edit, want) in cases {
            let path = wav_with(dir.path(), name, edit);
            let e = decode_file(&path).unwrap_err();
            assert!(matches!(e, AudioError::BadHeader { .. }), "{name}: {e}");
            let m = e.to_string();
            assert!(m.contains(name) && m.contains(want), "{m}");
        }
    }

    #[test]
    fn a_file_longer_than_allowed_is_refused_from_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = wav_with(dir.path(), "a.wav", |_| {});
        // 1000 samples at 16 kHz are 62.5 ms.
        let e = decode_file_within(&path, 0.05).unwrap_err();
        assert!(matches!(e, AudioError::TooLong { .. }), "{e}");
        assert_eq!(decode_file_within(&path, 0.07).unwrap().samples.len(), 1000);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Any header values, any data size, any truncation: an answer, never a panic.
        #[test]
        fn random_wav_headers_never_panic(
            format in proptest::prop_oneof![proptest::strategy::Just(1u16), proptest::strategy::Just(3u16), proptest::prelude::any::<u16>()],
            channels in 0u16..40,
            rate in proptest::prop_oneof![0u32..100, 7_000u32..400_000, proptest::prelude::any::<u32>()],
            bits in proptest::prop_oneof![proptest::strategy::Just(16u16), proptest::strategy::Just(8u16), proptest::strategy::Just(32u16), proptest::prelude::any::<u16>()],
            block in 0u16..300,
            data_size in proptest::prelude::any::<u32>(),
            cut in 12usize..2044,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = wav_with(dir.path(), "x.wav", |b| {
                b[20..22].copy_from_slice(&format.to_le_bytes());
                b[22..24].copy_from_slice(&channels.to_le_bytes());
                b[24..28].copy_from_slice(&rate.to_le_bytes());
                b[32..34].copy_from_slice(&block.to_le_bytes());
                b[34..36].copy_from_slice(&bits.to_le_bytes());
                b[40..44].copy_from_slice(&data_size.to_le_bytes());
                b.truncate(cut);
            });
            if let Ok(a) = decode_file(&path) {
                proptest::prop_assert!((MIN_RATE..=MAX_RATE).contains(&a.sample_rate));
                proptest::prop_assert!(a.samples.len() <= 2044);
            }
        }
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
