//! Incremental Server-Sent Events parser (the `text/event-stream` format of the WHATWG HTML standard),
//! as OpenAI-compatible servers use it to stream chat completions.
//!
//! Input: the response body in whatever pieces the network delivers (a CRLF may be split across two
//! pieces, a UTF-8 character too). Output: complete [`SseEvent`]s.
//!
//! The algorithm: bytes are split into lines at LF, CRLF or a lone CR (a CR that ends one piece is
//! remembered so an LF starting the next piece is not read as an empty line). A line starting with `:`
//! is a comment; `field: value` sets a field (one optional space after the colon is dropped); `data`
//! lines accumulate, joined with `\n`; an empty line dispatches the event if it has data. A partial
//! event when the body ends is discarded, as the standard says. Lines with field names the standard does
//! not know are ignored but counted, so a caller can tell an HTML error page from an event stream.
//! Pure and single-threaded; no I/O.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any (`None` is the default `message` type).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// A line that is not valid UTF-8: the body is not an event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the event stream is not valid UTF-8")]
pub struct SseError {
    pub line: usize,
}

/// Incremental parser state. Feed bytes with [`SseParser::push`].
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    lines: usize,
    unknown_lines: usize,
    first_line_known: Option<bool>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next piece of the body; returns the events it completed, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => {
                    self.after_cr = false;
                }
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.process_line(&line)? {
                        out.push(ev);
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    /// The body ended: an event without its terminating blank line is discarded (returned here only
    /// for diagnostics, never dispatched).
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let _ = self.process_line(&line);
        }
        if self.has_data {
            self.has_data = false;
            Some(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
                id: self.id.take(),
            })
        } else {
            None
        }
    }

    /// Lines seen so far (including blank lines and comments).
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Lines whose field name is none of `data`, `event`, `id`, `retry`.
    pub fn unknown_lines(&self) -> usize {
        self.unknown_lines
    }

    /// Whether the first non-blank line was a comment or a known field (`None` before any such line).
    /// An HTML page or a JSON error body answers `Some(false)` here.
    pub fn first_line_known(&self) -> Option<bool> {
        self.first_line_known
    }

    fn process_line(&mut self, raw: &[u8]) -> Result<Option<SseEvent>, SseError> {
        self.lines += 1;
        let mut line = std::str::from_utf8(raw).map_err(|_| SseError { line: self.lines })?;
        if !self.started {
            self.started = true;
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            if !self.has_data {
                self.event = None;
                return Ok(None);
            }
            self.has_data = false;
            return Ok(Some(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
                id: self.id.clone(),
            }));
        }
        if line.starts_with(':') {
            self.first_line_known.get_or_insert(true);
            return Ok(None);
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        let known = matches!(field, "data" | "event" | "id" | "retry");
        self.first_line_known.get_or_insert(known);
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            "id" => {
                if !value.contains('\0') {
                    self.id = Some(value.to_string());
                }
            }
            "retry" => {}
            _ => self.unknown_lines += 1,
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(p.push(piece).unwrap());
        }
        out
    }

    #[test]
    fn crlf_split_across_pieces_is_one_line_break() {
        let evs = all(&[b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]);
        let data: Vec<_> = evs.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["a", "b"]);
    }

    #[test]
    fn multi_line_data_comments_and_event_type() {
        let evs = all(&[b": keep-alive\n\nevent: delta\ndata: {\"a\":\ndata:1}\n\n"]);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].event.as_deref(), Some("delta"));
        assert_eq!(evs[0].data, "{\"a\":\n1}");
    }

    #[test]
    fn byte_at_a_time_and_lone_cr() {
        let text = b"\xEF\xBB\xBFdata: h\xC3\xA9\r\rdata: x\n\n";
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for b in text.iter() {
            out.extend(p.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, "hé");
        assert_eq!(out[1].data, "x");
    }

    #[test]
    fn unterminated_event_is_not_dispatched() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: partial").unwrap().is_empty());
        assert_eq!(p.finish().map(|e| e.data), Some("partial".into()));
    }

    #[test]
    fn html_is_flagged_unknown() {
        let mut p = SseParser::new();
        p.push(b"<html><body>502 Bad Gateway</body></html>\n")
            .unwrap();
        assert_eq!(p.first_line_known(), Some(false));
        assert_eq!(p.unknown_lines(), 1);
    }
}
