//! Recorded takes: decode a file and bring it to the performance's rate.
//!
//! Temporary stand-in until `idol::audio` (decode with symphonia, windowed-sinc resampling) is merged:
//! WAV/MP3/FLAC/Ogg decoded with symphonia, channels averaged, linear resampling to
//! `round(len * to / from)` samples.

use std::path::Path;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Mono samples of `path` at `rate`.
pub fn load(path: &Path, rate: u32) -> Result<Vec<f32>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| format!("not WAV, MP3, FLAC or Ogg/Vorbis audio ({e})"))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or("no audio track")?;
    let id = track.id;
    let mut dec = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| format!("unsupported codec ({e})"))?;
    let mut from = track.codec_params.sample_rate.unwrap_or(0);
    let mut mono = Vec::new();
    while let Ok(packet) = format.next_packet() {
        if packet.track_id() != id {
            continue;
        }
        let Ok(buf) = dec.decode(&packet) else {
            continue;
        };
        let spec = *buf.spec();
        from = spec.rate;
        let ch = spec.channels.count().max(1);
        let mut sb = SampleBuffer::<f32>::new(buf.capacity() as u64, spec);
        sb.copy_interleaved_ref(buf);
        for f in sb.samples().chunks(ch) {
            mono.push(f.iter().sum::<f32>() / ch as f32);
        }
    }
    if from == 0 {
        return Err("unknown sample rate".into());
    }
    if from == rate {
        return Ok(mono);
    }
    let n = (mono.len() as u64 * rate as u64 + from as u64 / 2) / from as u64;
    Ok((0..n)
        .map(|i| {
            let x = i as f64 * from as f64 / rate as f64;
            let j = x.floor() as usize;
            let f = (x - j as f64) as f32;
            let a = mono.get(j).copied().unwrap_or(0.0);
            let b = mono.get(j + 1).copied().unwrap_or(a);
            a + (b - a) * f
        })
        .collect())
}
