//! The generic relay, for bots and platforms idol has no relay for. Input: JSON objects, one per
//! line on stdin (`idol serve --chat-stdin`) or one per `POST /v1/chat` request. Output:
//! [`ChatMessage`]s.
//!
//! ```json
//! {"user":"ann","text":"hi Mika!","id":"yt-123","user_id":"UC42","badges":["member"],
//!  "paid":{"kind":"super_chat","amount":5.0,"unit":"USD"}}
//! ```
//!
//! `text` is required; the rest is optional. Unknown fields are refused (a misspelt `paid` must not
//! pass as an unpaid message). A line that is not such an object is logged once with its line number
//! and skipped; the relay goes on.

use super::{BoxFuture, ChatMessage, ChatSource, Paid, PaidKind, Platform, RelayError, SourceLink};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// Longest line or request body read (the persona cuts messages far shorter).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming {
    #[serde(default)]
    user: String,
    text: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    badges: Vec<String>,
    #[serde(default)]
    paid: Option<IncomingPaid>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncomingPaid {
    kind: PaidKind,
    amount: f64,
    #[serde(default)]
    unit: String,
}

/// Parse one generic message (a JSON object, see the module docs).
pub fn parse(json: &str, relay: &str) -> Result<ChatMessage, String> {
    let m: Incoming = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if m.text.trim().is_empty() {
        return Err("`text` is empty".into());
    }
    if let Some(p) = &m.paid
        && !(p.amount.is_finite() && p.amount >= 0.0)
    {
        return Err(format!(
            "`paid.amount` {} is not a non-negative number",
            p.amount
        ));
    }
    Ok(ChatMessage {
        platform: Platform::Generic,
        relay: relay.to_string(),
        id: m.id.filter(|i| !i.is_empty()),
        user: m.user,
        user_id: m.user_id.filter(|i| !i.is_empty()),
        badges: m.badges,
        text: m.text,
        paid: m.paid.map(|p| Paid {
            kind: p.kind,
            amount: p.amount,
            unit: p.unit,
        }),
    })
}

/// JSON lines from a reader (stdin for `idol serve --chat-stdin`). Not retried after its end.
pub struct LinesSource<R> {
    reader: Option<R>,
    name: String,
}

impl<R: AsyncRead + Unpin + Send + 'static> LinesSource<R> {
    pub fn new(reader: R, name: &str) -> Self {
        LinesSource {
            reader: Some(reader),
            name: name.to_string(),
        }
    }

    async fn run(&mut self, link: &SourceLink) -> Result<(), RelayError> {
        let Some(r) = self.reader.take() else {
            return Ok(());
        };
        link.connected();
        let mut reader = BufReader::new(r);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|error| RelayError::Io {
                    addr: self.name.clone(),
                    error,
                })?;
            if n == 0 {
                log::info!("relay {}: end of input after {line_no} lines", self.name);
                return Ok(());
            }
            line_no += 1;
            if buf.last() != Some(&b'\n') && n > MAX_LINE {
                log::warn!(
                    "relay {}: line {line_no} is longer than {MAX_LINE} bytes: skipped",
                    self.name
                );
                // Skip the rest of the long line, a bounded piece at a time.
                loop {
                    buf.clear();
                    let n = (&mut reader)
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', &mut buf)
                        .await
                        .unwrap_or(0);
                    if n == 0 || buf.last() == Some(&b'\n') {
                        break;
                    }
                }
                continue;
            }
            let line = String::from_utf8_lossy(&buf);
            if line.trim().is_empty() {
                continue;
            }
            match parse(line.trim(), &self.name) {
                Ok(m) => link.deliver(m),
                Err(e) => log::warn!("relay {}: line {line_no} skipped: {e}", self.name),
            }
        }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> ChatSource for LinesSource<R> {
    fn name(&self) -> &str {
        &self.name
    }

    fn platform(&self) -> Platform {
        Platform::Generic
    }

    fn session<'a>(&'a mut self, link: &'a SourceLink) -> BoxFuture<'a, Result<(), RelayError>> {
        Box::pin(self.run(link))
    }

    fn retry(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape_and_refuses_unknown_fields() {
        let m = parse(
            r#"{"user":"ann","text":"hi Mika!","id":"yt-1","user_id":"UC42","badges":["member"],"paid":{"kind":"super_chat","amount":5.0,"unit":"USD"}}"#,
            "stdin",
        )
        .unwrap();
        assert_eq!((m.user.as_str(), m.id.as_deref()), ("ann", Some("yt-1")));
        assert_eq!(m.paid.unwrap().kind, PaidKind::SuperChat);
        assert!(
            parse(r#"{"text":"x","payd":{}}"#, "s")
                .unwrap_err()
                .contains("payd")
        );
        assert!(
            parse(r#"{"text":"  "}"#, "s")
                .unwrap_err()
                .contains("empty")
        );
        assert!(parse(r#"{"user":"a"}"#, "s").unwrap_err().contains("text"));
        assert!(
            parse(r#"{"text":"x","paid":{"kind":"cash","amount":1}}"#, "s")
                .unwrap_err()
                .contains("cash")
        );
        assert!(parse(r#"{"text":"x","paid":{"kind":"gift","amount":-1}}"#, "s").is_err());
    }
}
