//! Twitch chat over IRC (`irc.chat.twitch.tv:6667`, plain TCP). Input: the channel's IRC stream.
//! Output: a [`ChatMessage`] per `PRIVMSG` (and per `USERNOTICE`: subscriptions and gifted subs).
//!
//! The session: `CAP REQ :twitch.tv/tags twitch.tv/commands` (and, separately, the IRCv3 standard
//! `message-tags`, so any IRCv3 server delivers its tags; Twitch refuses that one request only),
//! `PASS oauth:TOKEN` when a token is configured, `NICK` (anonymous read-only: `justinfanNNNNN`),
//! `USER`, `CAP END`; on the welcome (`001`) `JOIN #channel`; connected once the server echoes the
//! join. `PING` is answered with `PONG`; after a minute of silence the relay sends its own `PING` and
//! gives the connection up if nothing comes back within another minute. Twitch's `RECONNECT` ends the
//! session (the relay reconnects at once after its backoff).
//!
//! IRCv3 tags ([`parse_line`]): `display-name` (else the nick), `user-id`, `badges`
//! (`broadcaster/1,subscriber/12`), `bits` (a cheer: paid), `id` (Twitch's message id; the IRCv3
//! `msgid` where a server uses that) for de-duplication. Tag values are unescaped (`\s` `\:` `\\`).
//! Lines are at most [`MAX_LINE`] bytes (Twitch's tags included); a longer line is a protocol error.

use super::{BoxFuture, ChatMessage, ChatSource, Paid, PaidKind, Platform, RelayError, SourceLink};
use crate::config::TwitchConfig;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest IRC line read (IRCv3: 8191 bytes of tags + 512 of message).
pub const MAX_LINE: usize = 8191 + 512;

/// Silence after which the relay sends its own `PING`; as long again without data ends the session.
pub const KEEPALIVE: Duration = Duration::from_secs(60);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One IRC message: IRCv3 tags, prefix, command and parameters (the trailing one included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcMessage {
    pub tags: Vec<(String, String)>,
    pub prefix: Option<String>,
    pub command: String,
    pub params: Vec<String>,
}

impl IrcMessage {
    /// A tag's unescaped value (`None` when absent).
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The nick of the prefix (`nick!user@host`).
    pub fn nick(&self) -> Option<&str> {
        let p = self.prefix.as_deref()?;
        Some(p.split(['!', '@']).next().unwrap_or(p))
    }
}

/// Unescape an IRCv3 tag value.
pub fn unescape_tag(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('\\') => out.push('\\'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Parse one IRC line (without its CR LF). `None` for an empty line or one without a command.
pub fn parse_line(line: &str) -> Option<IrcMessage> {
    let mut rest = line.trim_end_matches(['\r', '\n']);
    let mut tags = vec![];
    if let Some(t) = rest.strip_prefix('@') {
        let (raw, after) = t.split_once(' ')?;
        for kv in raw.split(';').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            tags.push((k.to_string(), unescape_tag(v)));
        }
        rest = after.trim_start_matches(' ');
    }
    let mut prefix = None;
    if let Some(p) = rest.strip_prefix(':') {
        let (p, after) = p.split_once(' ')?;
        prefix = Some(p.to_string());
        rest = after.trim_start_matches(' ');
    }
    let (command, mut rest) = match rest.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (rest, ""),
    };
    if command.is_empty() {
        return None;
    }
    let mut params = vec![];
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing.to_string());
            break;
        }
        match rest.split_once(' ') {
            Some((p, r)) => {
                params.push(p.to_string());
                rest = r;
            }
            None => {
                params.push(rest.to_string());
                break;
            }
        }
    }
    Some(IrcMessage {
        tags,
        prefix,
        command: command.to_ascii_uppercase(),
        params,
    })
}

/// `#channel`, lowercased, from `channel`, `#channel` or `Channel`.
pub fn channel_name(channel: &str) -> String {
    format!("#{}", channel.trim().trim_start_matches('#').to_lowercase())
}

/// A chat message from a `PRIVMSG` or `USERNOTICE` to `channel` (`#name`); `None` for anything
/// else (another channel, a notice without text).
pub fn chat_of(m: &IrcMessage, channel: &str, relay: &str) -> Option<ChatMessage> {
    let target = m.params.first()?;
    if !target.eq_ignore_ascii_case(channel) {
        return None;
    }
    let paid = match m.command.as_str() {
        "PRIVMSG" => m
            .tag("bits")
            .and_then(|b| b.parse::<f64>().ok())
            .filter(|b| *b > 0.0)
            .map(|amount| Paid {
                kind: PaidKind::Bits,
                amount,
                unit: "bits".into(),
            }),
        "USERNOTICE" => {
            let kind = m.tag("msg-id").unwrap_or("");
            if !matches!(kind, "sub" | "resub" | "subgift" | "submysterygift") {
                return None;
            }
            let amount = m
                .tag("msg-param-mass-gift-count")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1.0);
            Some(Paid {
                kind: PaidKind::Gift,
                amount,
                unit: kind.to_string(),
            })
        }
        _ => return None,
    };
    let mut text = m.params.get(1).cloned().unwrap_or_default();
    // `/me` arrives as CTCP ACTION.
    if let Some(a) = text
        .strip_prefix("\u{1}ACTION ")
        .map(|a| a.trim_end_matches('\u{1}').to_string())
    {
        text = a;
    }
    if text.trim().is_empty() {
        // A subscription without a message of its own: the system message says what happened.
        text = m.tag("system-msg").unwrap_or("").to_string();
    }
    if text.trim().is_empty() {
        return None;
    }
    let user = m
        .tag("display-name")
        .filter(|d| !d.trim().is_empty())
        .or_else(|| m.tag("login"))
        .or_else(|| m.nick())
        .unwrap_or("")
        .to_string();
    let badges = m
        .tag("badges")
        .map(|b| {
            b.split(',')
                .filter(|b| !b.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(ChatMessage {
        platform: Platform::Twitch,
        relay: relay.to_string(),
        id: m
            .tag("id")
            .or_else(|| m.tag("msgid"))
            .filter(|i| !i.is_empty())
            .map(str::to_string),
        user,
        user_id: m
            .tag("user-id")
            .filter(|i| !i.is_empty())
            .map(str::to_string),
        badges,
        text,
        paid,
    })
}

/// The Twitch relay (see the module docs).
pub struct TwitchSource {
    cfg: TwitchConfig,
    nick: String,
    name: String,
}

impl TwitchSource {
    pub fn new(cfg: TwitchConfig) -> Self {
        let nick = cfg
            .nick
            .clone()
            .unwrap_or_else(|| format!("justinfan{}", rand::random_range(10_000..99_999u32)));
        TwitchSource {
            cfg,
            nick,
            name: "twitch".into(),
        }
    }

    /// The nick this relay logs in with.
    pub fn nick(&self) -> &str {
        &self.nick
    }

    async fn run(&mut self, link: &SourceLink) -> Result<(), RelayError> {
        let addr = self.cfg.server.clone();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| RelayError::Connect {
                addr: addr.clone(),
                error: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
            })?
            .map_err(|error| RelayError::Connect {
                addr: addr.clone(),
                error,
            })?;
        let _ = tcp.set_nodelay(true);
        let (r, mut w) = tcp.into_split();
        let mut reader = BufReader::new(r);
        let io = |error| RelayError::Io {
            addr: addr.clone(),
            error,
        };
        let channel = channel_name(&self.cfg.channel);
        let mut hello = String::new();
        hello.push_str("CAP REQ :twitch.tv/tags twitch.tv/commands\r\n");
        hello.push_str("CAP REQ :message-tags\r\n");
        if let Some(env) = &self.cfg.token_env {
            // Validated at start; read at each connection so a rotated token is picked up.
            let token = std::env::var(env).unwrap_or_default();
            let token = token.trim().trim_start_matches("oauth:");
            if !token.is_empty() {
                hello.push_str(&format!("PASS oauth:{token}\r\n"));
            }
        }
        hello.push_str(&format!(
            "NICK {n}\r\nUSER {n} 0 * :{n}\r\nCAP END\r\n",
            n = self.nick
        ));
        w.write_all(hello.as_bytes()).await.map_err(io)?;
        let mut buf = Vec::with_capacity(1024);
        let mut pinged = false;
        loop {
            buf.clear();
            let mut limited = (&mut reader).take(MAX_LINE as u64 + 2);
            let read = limited.read_until(b'\n', &mut buf);
            let n = match tokio::time::timeout(KEEPALIVE, read).await {
                Err(_) if !pinged => {
                    pinged = true;
                    w.write_all(b"PING :idol\r\n").await.map_err(io)?;
                    continue;
                }
                Err(_) => {
                    return Err(RelayError::Timeout {
                        addr,
                        secs: 2 * KEEPALIVE.as_secs(),
                    });
                }
                Ok(r) => r.map_err(io)?,
            };
            pinged = false;
            if n == 0 {
                return Err(RelayError::Closed { addr });
            }
            if buf.last() != Some(&b'\n') {
                return Err(RelayError::Protocol {
                    addr,
                    why: format!("a line longer than {MAX_LINE} bytes"),
                });
            }
            let line = String::from_utf8_lossy(&buf);
            let Some(m) = parse_line(&line) else {
                continue;
            };
            match m.command.as_str() {
                "PING" => {
                    let arg = m.params.first().map(String::as_str).unwrap_or("");
                    w.write_all(format!("PONG :{arg}\r\n").as_bytes())
                        .await
                        .map_err(io)?;
                }
                "001" => {
                    w.write_all(format!("JOIN {channel}\r\n").as_bytes())
                        .await
                        .map_err(io)?;
                }
                "JOIN"
                    if m.nick().is_some_and(|n| n.eq_ignore_ascii_case(&self.nick))
                        && m.params
                            .first()
                            .is_some_and(|c| c.eq_ignore_ascii_case(&channel)) =>
                {
                    log::info!("relay twitch: joined {channel} on {addr} as {}", self.nick);
                    link.connected();
                }
                "PRIVMSG" | "USERNOTICE" => {
                    if let Some(msg) = chat_of(&m, &channel, &self.name) {
                        link.deliver(msg);
                    }
                }
                "NOTICE" => {
                    let text = m.params.last().cloned().unwrap_or_default();
                    if text.contains("Login authentication failed")
                        || text.contains("Improperly formatted auth")
                    {
                        return Err(RelayError::Login { addr, why: text });
                    }
                    log::info!("relay twitch: notice: {text}");
                }
                "433" | "432" | "464" | "465" => {
                    let why = m.params.last().cloned().unwrap_or_default();
                    return Err(RelayError::Login {
                        addr,
                        why: format!("{} {why}", m.command),
                    });
                }
                "RECONNECT" => {
                    log::info!("relay twitch: the server asked to reconnect");
                    return Ok(());
                }
                "ERROR" => {
                    let why = m.params.last().cloned().unwrap_or_default();
                    return Err(RelayError::Protocol {
                        addr,
                        why: format!("ERROR {why}"),
                    });
                }
                _ => {}
            }
        }
    }
}

impl ChatSource for TwitchSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn platform(&self) -> Platform {
        Platform::Twitch
    }

    fn session<'a>(&'a mut self, link: &'a SourceLink) -> BoxFuture<'a, Result<(), RelayError>> {
        Box::pin(self.run(link))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as Twitch's IRC interface sends them (the shapes documented for its tags).
    const CHEER: &str = "@badge-info=subscriber/8;badges=subscriber/6,bits/1000;bits=100;color=#1E90FF;display-name=Ronni\\sS;emotes=;first-msg=0;flags=;id=b34ccfc7-4977-403a-8a94-33c6bac34fb8;mod=0;room-id=12345678;subscriber=1;tmi-sent-ts=1507246572675;turbo=0;user-id=1337;user-type= :ronni!ronni@ronni.tmi.twitch.tv PRIVMSG #ronni :cheer100 Hello\\: Mika!";
    const MOD: &str = "@badge-info=;badges=moderator/1,partner/1;color=;display-name=;emotes=;id=885196de-cb67-427a-baa8-82f9b0fcd05f;mod=1;room-id=713936733;subscriber=0;tmi-sent-ts=1642786203573;turbo=0;user-id=713936733;user-type=mod :lovingt3s!lovingt3s@lovingt3s.tmi.twitch.tv PRIVMSG #bar :\u{1}ACTION waves\u{1}";
    const RESUB: &str = "@badge-info=subscriber/12;badges=subscriber/12;display-name=Fan;id=db25007f-7a18-43eb-9379-80131e44d633;login=fan;msg-id=resub;msg-param-cumulative-months=12;system-msg=Fan\\ssubscribed\\sfor\\s12\\smonths!;user-id=42 :tmi.twitch.tv USERNOTICE #ronni";

    #[test]
    fn parses_tags_prefix_command_and_trailing() {
        let m = parse_line(CHEER).unwrap();
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.nick(), Some("ronni"));
        assert_eq!(m.params, ["#ronni", "cheer100 Hello\\: Mika!"]);
        assert_eq!(m.tag("display-name"), Some("Ronni S"));
        assert_eq!(m.tag("emotes"), Some(""));
        let p = parse_line(":tmi.twitch.tv 001 justinfan1 :Welcome, GLHF!").unwrap();
        assert_eq!((p.command.as_str(), p.params.len()), ("001", 2));
        let ping = parse_line("PING :tmi.twitch.tv\r\n").unwrap();
        assert_eq!(
            (ping.command.as_str(), ping.params[0].as_str()),
            ("PING", "tmi.twitch.tv")
        );
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("@a=b"), None);
        assert_eq!(unescape_tag("a\\sb\\:c\\\\d\\"), "a b;c\\d");
    }

    #[test]
    fn a_cheer_is_a_paid_message_with_name_badges_and_id() {
        let c = chat_of(&parse_line(CHEER).unwrap(), "#ronni", "twitch").unwrap();
        assert_eq!(c.user, "Ronni S");
        assert_eq!(c.user_id.as_deref(), Some("1337"));
        assert_eq!(c.badges, ["subscriber/6", "bits/1000"]);
        assert_eq!(
            c.id.as_deref(),
            Some("b34ccfc7-4977-403a-8a94-33c6bac34fb8")
        );
        let paid = c.paid.unwrap();
        assert_eq!((paid.kind, paid.amount), (PaidKind::Bits, 100.0));
        // Another channel's message is not ours.
        assert!(chat_of(&parse_line(CHEER).unwrap(), "#other", "twitch").is_none());
    }

    #[test]
    fn an_action_without_display_name_uses_the_nick_and_a_resub_is_a_gift() {
        let c = chat_of(&parse_line(MOD).unwrap(), "#bar", "twitch").unwrap();
        assert_eq!((c.user.as_str(), c.text.as_str()), ("lovingt3s", "waves"));
        assert_eq!(c.badges, ["moderator/1", "partner/1"]);
        assert!(c.paid.is_none());
        let r = chat_of(&parse_line(RESUB).unwrap(), "#ronni", "twitch").unwrap();
        assert_eq!(r.text, "Fan subscribed for 12 months!");
        assert_eq!(r.paid.unwrap().kind, PaidKind::Gift);
        // A raid is a notice, not a chat.
        let raid = RESUB.replace("msg-id=resub", "msg-id=raid");
        assert!(chat_of(&parse_line(&raid).unwrap(), "#ronni", "twitch").is_none());
    }

    #[test]
    fn the_ircv3_msgid_serves_as_the_id() {
        let m =
            parse_line("@msgid=abc;time=2024-01-01T00:00:00.000Z :ann!a@h PRIVMSG #c :hi").unwrap();
        let c = chat_of(&m, "#c", "twitch").unwrap();
        assert_eq!((c.id.as_deref(), c.user.as_str()), (Some("abc"), "ann"));
        assert_eq!(channel_name(" #Ronni"), "#ronni");
    }
}
