//! 16-bit PCM WAV output, written atomically (a temporary file in the same folder, then a rename), so a
//! reader never sees half a file.

use std::io::Write;
use std::path::Path;

/// Mono 16-bit PCM WAV bytes for `pcm` (-1..=1, clipped) at `rate` Hz.
pub fn wav_bytes(pcm: &[f32], rate: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(44 + pcm.len() * 2);
    b.extend_from_slice(&wav_header(pcm.len() as u64, rate).unwrap_or_else(|| {
        // Over 4 GiB of samples: the header cannot say so; the size fields saturate.
        wav_header(u64::from(u32::MAX - 36) / 2, rate).expect("fits")
    }));
    push_samples(&mut b, pcm);
    b
}

/// The 44-byte header of a 16-bit PCM mono WAV of `n` samples at `rate` Hz; `None` when the data
/// would pass the format's 4 GiB limit.
pub fn wav_header(n: u64, rate: u32) -> Option<[u8; 44]> {
    let data_len = u32::try_from(n.checked_mul(2)?)
        .ok()
        .filter(|l| *l <= u32::MAX - 36)?;
    let mut b = [0u8; 44];
    b[0..4].copy_from_slice(b"RIFF");
    b[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    b[8..16].copy_from_slice(b"WAVEfmt ");
    b[16..20].copy_from_slice(&16u32.to_le_bytes());
    b[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    b[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    b[24..28].copy_from_slice(&rate.to_le_bytes());
    b[28..32].copy_from_slice(&rate.wrapping_mul(2).to_le_bytes());
    b[32..34].copy_from_slice(&2u16.to_le_bytes());
    b[34..36].copy_from_slice(&16u16.to_le_bytes());
    b[36..40].copy_from_slice(b"data");
    b[40..44].copy_from_slice(&data_len.to_le_bytes());
    Some(b)
}

/// Append `pcm` as 16-bit little-endian samples (clamped to -1..=1).
pub fn push_samples(out: &mut Vec<u8>, pcm: &[f32]) {
    out.reserve(pcm.len() * 2);
    for &s in pcm {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    // Temporary files are private (0600); the output is an ordinary file, readable by others.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Write `pcm` as a 16-bit WAV file at `path`, atomically.
pub fn write_wav(path: &Path, pcm: &[f32], rate: u32) -> std::io::Result<()> {
    write_atomic(path, &wav_bytes(pcm, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_samples() {
        let b = wav_bytes(&[0.0, 1.0, -1.0, 2.0], 22050);
        assert_eq!(b.len(), 44 + 8);
        assert_eq!(&b[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 22050);
        assert_eq!(i16::from_le_bytes([b[46], b[47]]), 32767);
        assert_eq!(i16::from_le_bytes([b[48], b[49]]), -32767);
        assert_eq!(i16::from_le_bytes([b[50], b[51]]), 32767);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wav");
        write_wav(&p, &[0.5], 8000).unwrap();
        assert_eq!(std::fs::read(&p).unwrap().len(), 46);
    }
}
