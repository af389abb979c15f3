//! Streaming text out of tokens: UTF-8-safe incremental decoding and stop strings.
//!
//! Tokens are byte strings; a character may be split across tokens. [`Utf8Stream`] keeps the bytes of an
//! unfinished character until it is complete and only ever emits whole characters (an invalid sequence
//! becomes U+FFFD). [`StopFilter`] holds back the end of the text while it could still be the start of a
//! stop string, and cuts the text where a stop string is found, so the caller never sees any part of it.

/// Bytes in, whole UTF-8 characters out.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes; returns the text of every character completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: from_utf8 said these bytes are valid
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(n) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
    }

    /// Whether bytes of an unfinished character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Cuts generated text at the first stop string.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    held: String,
}

impl StopFilter {
    pub fn new(stops: &[String]) -> Self {
        StopFilter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Add text; returns the text that is safe to emit and whether a stop string was found (then the
    /// emitted text ends right before it and the rest is dropped).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(i) = first {
            let out = self.held[..i].to_string();
            self.held.clear();
            return (out, true);
        }
        // keep the longest suffix that is a proper prefix of a stop string
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > keep && self.held.ends_with(&s[..i]) {
                    keep = i;
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// The held-back text, at the end of generation.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_characters_are_never_emitted_half() {
        let s = "héllo 😀!";
        let bytes = s.as_bytes();
        let mut st = Utf8Stream::new();
        let mut out = String::new();
        for b in bytes {
            let piece = st.push(std::slice::from_ref(b));
            out.push_str(&piece);
        }
        assert_eq!(out, s);
        assert!(!st.has_pending());
        assert_eq!(Utf8Stream::new().push(&[0xff, b'a']), "\u{FFFD}a");
    }

    #[test]
    fn stop_strings_across_pieces() {
        let mut f = StopFilter::new(&["\nUser:".to_string()]);
        let (a, s1) = f.push("Hello!\nUs");
        assert_eq!((a.as_str(), s1), ("Hello!", false));
        let (b, s2) = f.push("er: hi");
        assert_eq!((b.as_str(), s2), ("", true));
        let mut f = StopFilter::new(&["END".to_string()]);
        let (a, _) = f.push("the E");
        let (b, _) = f.push("xit");
        assert_eq!(format!("{a}{b}{}", f.flush()), "the Exit");
    }
}
