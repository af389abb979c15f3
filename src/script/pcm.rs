//! A performance's audio without its silence: the length of the timeline and the spoken (or recorded)
//! pieces placed on it. Gaps between lines, breaks and the tail are spans with no samples; silence is
//! made only where the audio is read, a chunk at a time ([`SparsePcm::for_each_chunk`]), so an hour of
//! gap costs nothing until it is written, and then only one chunk.

/// Mono samples on one timeline: `len` samples, zero except where a clip is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparsePcm {
    len: u64,
    /// (start sample, samples), ordered and non-overlapping.
    clips: Vec<(u64, Vec<f32>)>,
}

impl SparsePcm {
    /// `len` samples of silence.
    pub fn silence(len: u64) -> Self {
        SparsePcm {
            len,
            clips: Vec::new(),
        }
    }

    /// Samples on the timeline (clips and silence).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The placed clips, in order: (start sample, samples).
    pub fn clips(&self) -> &[(u64, Vec<f32>)] {
        &self.clips
    }

    /// Place `pcm` at `start`, at or after the end of every clip placed so far; the length grows to
    /// cover it. Empty clips are dropped.
    ///
    /// # Panics
    /// If `start` is before the end of the last clip (clips are placed in order).
    pub fn place(&mut self, start: u64, pcm: Vec<f32>) {
        if let Some((s, last)) = self.clips.last() {
            assert!(
                start >= s + last.len() as u64,
                "clips are placed in order without overlap"
            );
        }
        if pcm.is_empty() {
            return;
        }
        self.len = self.len.max(start + pcm.len() as u64);
        self.clips.push((start, pcm));
    }

    /// The clips, owned.
    pub fn into_clips(self) -> Vec<(u64, Vec<f32>)> {
        self.clips
    }

    /// Extend (never shrink) the timeline to `len` samples with silence.
    pub fn extend_to(&mut self, len: u64) {
        self.len = self.len.max(len);
    }

    /// Move everything `by` samples later (silence before).
    pub fn shift(&mut self, by: u64) {
        for (s, _) in &mut self.clips {
            *s += by;
        }
        self.len += by;
    }

    /// Samples `from..to` (clamped to the length), silence where no clip is.
    pub fn slice(&self, from: u64, to: u64) -> Vec<f32> {
        let to = to.min(self.len);
        let from = from.min(to);
        let mut out = vec![0.0; (to - from) as usize];
        // The first clip that could reach `from`.
        let first = self
            .clips
            .partition_point(|(s, c)| s + c.len() as u64 <= from);
        for (s, c) in &self.clips[first..] {
            if *s >= to {
                break;
            }
            let a = from.max(*s);
            let b = to.min(s + c.len() as u64);
            out[(a - from) as usize..(b - from) as usize]
                .copy_from_slice(&c[(a - s) as usize..(b - s) as usize]);
        }
        out
    }

    /// Every sample in one buffer (for a consumer that needs it whole, like the audio device).
    pub fn to_vec(&self) -> Vec<f32> {
        self.slice(0, self.len)
    }

    /// Every sample in order, handed to `f` in pieces: each clip as it is, and silence in pieces of
    /// at most `chunk` samples made one at a time.
    pub fn for_each_chunk<E>(
        &self,
        chunk: usize,
        mut f: impl FnMut(&[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let zeros = vec![0.0f32; chunk.clamp(1, 1 << 16)];
        let silence = |mut n: u64, f: &mut dyn FnMut(&[f32]) -> Result<(), E>| {
            while n > 0 {
                let k = n.min(zeros.len() as u64) as usize;
                f(&zeros[..k])?;
                n -= k as u64;
            }
            Ok(())
        };
        let mut at = 0u64;
        for (s, c) in &self.clips {
            silence(s - at, &mut f)?;
            f(c)?;
            at = s + c.len() as u64;
        }
        silence(self.len - at, &mut f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_on_silence_read_back_in_any_window() {
        let mut p = SparsePcm::silence(3);
        p.place(5, vec![1.0, 2.0]);
        p.place(7, vec![3.0]);
        p.place(10, vec![]);
        p.extend_to(12);
        assert_eq!(p.len(), 12);
        let whole = p.to_vec();
        assert_eq!(
            whole,
            [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0]
        );
        for a in 0..13 {
            for b in a..14 {
                let want: Vec<f32> = whole[a.min(12)..b.min(12)].to_vec();
                assert_eq!(p.slice(a as u64, b as u64), want, "{a}..{b}");
            }
        }
        let mut streamed = Vec::new();
        p.for_each_chunk(2, |c| {
            assert!(!c.is_empty());
            streamed.extend_from_slice(c);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(streamed, whole);
        p.shift(2);
        assert_eq!(p.slice(7, 10), [1.0, 2.0, 3.0]);
    }
}
