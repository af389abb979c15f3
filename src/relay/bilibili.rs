//! Bilibili live danmaku (弹幕) over its WebSocket protocol. Input: a live room's message stream.
//! Output: a [`ChatMessage`] per `DANMU_MSG` (chat), `SEND_GIFT` (a paid gift; free "silver" gifts
//! are not chat) and `SUPER_CHAT_MESSAGE` (a paid highlighted message).
//!
//! Written from the public descriptions of the protocol (docs/relays.md lists them). Every packet,
//! both ways, is a 16-byte big-endian header and a body:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | packet length, header included |
//! | 4 | 2 | header length (16) |
//! | 6 | 2 | protocol version: 0 JSON, 1 heartbeat / auth, 2 zlib, 3 brotli |
//! | 8 | 4 | operation: 2 heartbeat, 3 heartbeat reply (popularity), 5 message, 7 auth, 8 auth reply |
//! | 12 | 4 | sequence (1) |
//!
//! A WebSocket frame may hold several packets back to back. A body of version 2 or 3 decompresses
//! (zlib, brotli) into more packets of version 0, each with its own header ([`decode`]).
//!
//! The session: connect to the room server's `/sub` WebSocket, send the auth packet (op 7: JSON
//! `{"uid","roomid","protover":3,"platform":"web","type":2,"key"}`, `key` from the environment
//! variable the config names: the token of the room's `getDanmuInfo`), wait for the auth reply
//! (op 8, `{"code":0}`) within 10 s, then send a heartbeat (op 2) every `heartbeat_secs` and read.
//! No data for three heartbeats ends the session.

use super::{BoxFuture, ChatMessage, ChatSource, Paid, PaidKind, Platform, RelayError, SourceLink};
use crate::config::BilibiliConfig;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub const HEADER_LEN: usize = 16;

/// Operations.
pub mod op {
    pub const HEARTBEAT: u32 = 2;
    pub const HEARTBEAT_REPLY: u32 = 3;
    pub const MESSAGE: u32 = 5;
    pub const AUTH: u32 = 7;
    pub const AUTH_REPLY: u32 = 8;
}

/// Protocol versions (body encodings).
pub mod ver {
    pub const JSON: u16 = 0;
    pub const PLAIN: u16 = 1;
    pub const ZLIB: u16 = 2;
    pub const BROTLI: u16 = 3;
}

/// Largest decompressed body accepted (a room's burst of messages is tens of KB).
pub const MAX_BODY: usize = 4 << 20;

/// One packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub ver: u16,
    pub op: u32,
    pub seq: u32,
    pub body: Vec<u8>,
}

/// A malformed packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("a packet shorter than its 16-byte header ({0} bytes left)")]
    Short(usize),
    #[error("a packet length of {len} with {left} bytes left and a {header}-byte header")]
    Length {
        len: usize,
        left: usize,
        header: usize,
    },
    #[error("a {0} body that does not decompress: {1}")]
    Decompress(&'static str, String),
    #[error("a body that decompresses past {MAX_BODY} bytes")]
    TooLarge,
    #[error("a compressed body inside a compressed body")]
    Nested,
}

/// Encode one packet (sequence 1).
pub fn encode(ver: u16, op: u32, body: &[u8]) -> Vec<u8> {
    let len = (HEADER_LEN + body.len()) as u32;
    let mut out = Vec::with_capacity(len as usize);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&(HEADER_LEN as u16).to_be_bytes());
    out.extend_from_slice(&ver.to_be_bytes());
    out.extend_from_slice(&op.to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn split(mut bytes: &[u8]) -> Result<Vec<Packet>, PacketError> {
    let mut out = vec![];
    while !bytes.is_empty() {
        if bytes.len() < HEADER_LEN {
            return Err(PacketError::Short(bytes.len()));
        }
        let len = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
        let header = u16::from_be_bytes(bytes[4..6].try_into().expect("2 bytes")) as usize;
        if len > bytes.len() || header < HEADER_LEN || header > len {
            return Err(PacketError::Length {
                len,
                left: bytes.len(),
                header,
            });
        }
        out.push(Packet {
            ver: u16::from_be_bytes(bytes[6..8].try_into().expect("2 bytes")),
            op: u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")),
            seq: u32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes")),
            body: bytes[header..len].to_vec(),
        });
        bytes = &bytes[len..];
    }
    Ok(out)
}

fn inflate(name: &'static str, r: impl Read) -> Result<Vec<u8>, PacketError> {
    let mut out = vec![];
    r.take(MAX_BODY as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| PacketError::Decompress(name, e.to_string()))?;
    if out.len() > MAX_BODY {
        return Err(PacketError::TooLarge);
    }
    Ok(out)
}

/// The packets of one WebSocket frame, compressed bodies expanded into their packets.
pub fn decode(frame: &[u8]) -> Result<Vec<Packet>, PacketError> {
    let mut out = vec![];
    for p in split(frame)? {
        let inner = match p.ver {
            ver::ZLIB => inflate("zlib", flate2::read::ZlibDecoder::new(&p.body[..]))?,
            ver::BROTLI => inflate(
                "brotli",
                brotli_decompressor::Decompressor::new(&p.body[..], 4096),
            )?,
            _ => {
                out.push(p);
                continue;
            }
        };
        for q in split(&inner)? {
            if matches!(q.ver, ver::ZLIB | ver::BROTLI) {
                return Err(PacketError::Nested);
            }
            out.push(q);
        }
    }
    Ok(out)
}

/// The auth packet's JSON body.
pub fn auth_body(room_id: u64, uid: u64, key: &str) -> Vec<u8> {
    json!({"uid": uid, "roomid": room_id, "protover": 3, "platform": "web", "type": 2, "key": key})
        .to_string()
        .into_bytes()
}

fn s(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A chat message from one notification body (op 5), or `None` for the many other commands
/// (entries, likes, rank changes) and free gifts.
pub fn chat_of(body: &Value, relay: &str) -> Option<ChatMessage> {
    let cmd = body.get("cmd")?.as_str()?;
    // Commands may carry suffixes (`DANMU_MSG:4:0:2:2:2:0`).
    let cmd = cmd.split(':').next().unwrap_or(cmd);
    let mut m = ChatMessage::new(Platform::Bilibili, relay, "", "");
    match cmd {
        "DANMU_MSG" => {
            let info = body.get("info")?;
            m.text = info.get(1)?.as_str()?.to_string();
            let user = info.get(2)?;
            m.user_id = user.get(0).and_then(s).filter(|u| u != "0");
            m.user = user.get(1).and_then(s).unwrap_or_default();
            if user.get(2).and_then(Value::as_i64) == Some(1) {
                m.badges.push("admin".into());
            }
            if let Some(medal) = info.get(3).and_then(Value::as_array)
                && let (Some(level), Some(name)) =
                    (medal.first().and_then(s), medal.get(1).and_then(s))
            {
                m.badges.push(format!("medal/{name}/{level}"));
            }
            if let Some(g) = info.get(7).and_then(Value::as_i64).filter(|g| *g > 0) {
                m.badges.push(format!("guard/{g}"));
            }
            let ts = info.get(0).and_then(|i| i.get(4)).and_then(s);
            let ct = info.get(9).and_then(|c| c.get("ct")).and_then(s);
            m.id = match (ct, ts) {
                (Some(ct), Some(ts)) => Some(format!("{ct}:{ts}")),
                (None, Some(ts)) => Some(format!("{}:{ts}", m.user_id.as_deref().unwrap_or(""))),
                _ => None,
            };
        }
        "SEND_GIFT" => {
            let d = body.get("data")?;
            if d.get("coin_type").and_then(Value::as_str) != Some("gold") {
                return None;
            }
            m.user = d.get("uname").and_then(s).unwrap_or_default();
            m.user_id = d.get("uid").and_then(s);
            let num = d.get("num").and_then(Value::as_f64).unwrap_or(1.0);
            let gift = d
                .get("giftName")
                .and_then(s)
                .unwrap_or_else(|| "a gift".into());
            // Gold coins: 1000 to the yuan.
            let coins = d
                .get("total_coin")
                .and_then(Value::as_f64)
                .or_else(|| Some(d.get("price")?.as_f64()? * num))
                .unwrap_or(0.0);
            m.text = format!("sent you {num} × {gift}");
            m.paid = Some(Paid {
                kind: PaidKind::Gift,
                amount: coins / 1000.0,
                unit: "CNY".into(),
            });
            m.id = d.get("tid").or_else(|| d.get("rnd")).and_then(s);
        }
        "SUPER_CHAT_MESSAGE" => {
            let d = body.get("data")?;
            m.text = d.get("message").and_then(s)?;
            m.user_id = d.get("uid").and_then(s);
            m.user = d
                .get("user_info")
                .and_then(|u| u.get("uname"))
                .and_then(s)
                .unwrap_or_default();
            if let Some(g) = d
                .get("user_info")
                .and_then(|u| u.get("guard_level"))
                .and_then(Value::as_i64)
                .filter(|g| *g > 0)
            {
                m.badges.push(format!("guard/{g}"));
            }
            m.paid = Some(Paid {
                kind: PaidKind::SuperChat,
                amount: d.get("price").and_then(Value::as_f64).unwrap_or(0.0),
                unit: "CNY".into(),
            });
            m.id = d.get("id").and_then(s).map(|i| format!("sc:{i}"));
        }
        _ => return None,
    }
    Some(m)
}

/// The Bilibili relay (see the module docs).
pub struct BilibiliSource {
    cfg: BilibiliConfig,
    name: String,
}

impl BilibiliSource {
    pub fn new(cfg: BilibiliConfig) -> Self {
        BilibiliSource {
            cfg,
            name: "bilibili".into(),
        }
    }

    async fn run(&mut self, link: &SourceLink) -> Result<(), RelayError> {
        let addr = self.cfg.url.clone();
        let ws_err = |e: tokio_tungstenite::tungstenite::Error| RelayError::WebSocket {
            addr: addr.clone(),
            error: e.to_string(),
        };
        let (mut ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(addr.as_str()),
        )
        .await
        .map_err(|_| RelayError::Connect {
            addr: addr.clone(),
            error: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        })?
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Io(error) => RelayError::Connect {
                addr: addr.clone(),
                error,
            },
            e => ws_err(e),
        })?;
        let key = self
            .cfg
            .key_env
            .as_ref()
            .and_then(|e| std::env::var(e).ok())
            .unwrap_or_default();
        let auth = encode(
            ver::PLAIN,
            op::AUTH,
            &auth_body(self.cfg.room_id, self.cfg.uid, key.trim()),
        );
        ws.send(Message::Binary(auth.into()))
            .await
            .map_err(ws_err)?;
        let heartbeat = Duration::from_secs(self.cfg.heartbeat_secs);
        let mut authed = false;
        let auth_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut last_data = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = tick.tick() => {
                    if last_data.elapsed() > heartbeat * 3 {
                        return Err(RelayError::Timeout { addr, secs: (heartbeat * 3).as_secs() });
                    }
                    if authed {
                        let hb = encode(ver::PLAIN, op::HEARTBEAT, b"[object Object]");
                        ws.send(Message::Binary(hb.into())).await.map_err(ws_err)?;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(auth_deadline), if !authed => {
                    return Err(RelayError::Login { addr, why: "no auth reply within 10 s".into() });
                }
            };
            let bytes = match frame {
                None => return Err(RelayError::Closed { addr }),
                Some(Err(e)) => return Err(ws_err(e)),
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Close(_))) => return Err(RelayError::Closed { addr }),
                Some(Ok(_)) => continue,
            };
            last_data = tokio::time::Instant::now();
            let packets = decode(&bytes).map_err(|e| RelayError::Protocol {
                addr: addr.clone(),
                why: e.to_string(),
            })?;
            for p in packets {
                match p.op {
                    op::AUTH_REPLY => {
                        let code = serde_json::from_slice::<Value>(&p.body)
                            .ok()
                            .and_then(|v| v.get("code").and_then(Value::as_i64));
                        if code != Some(0) {
                            return Err(RelayError::Login {
                                addr,
                                why: format!(
                                    "auth reply {} (check room_id and the key in ${})",
                                    String::from_utf8_lossy(&p.body),
                                    self.cfg.key_env.as_deref().unwrap_or("(none)")
                                ),
                            });
                        }
                        if !authed {
                            authed = true;
                            log::info!(
                                "relay bilibili: joined room {} on {addr}",
                                self.cfg.room_id
                            );
                            link.connected();
                            let hb = encode(ver::PLAIN, op::HEARTBEAT, b"[object Object]");
                            ws.send(Message::Binary(hb.into())).await.map_err(ws_err)?;
                        }
                    }
                    op::MESSAGE => {
                        let Ok(body) = serde_json::from_slice::<Value>(&p.body) else {
                            log::debug!("relay bilibili: a message that is not JSON, skipped");
                            continue;
                        };
                        if let Some(m) = chat_of(&body, &self.name) {
                            link.deliver(m);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

impl ChatSource for BilibiliSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn platform(&self) -> Platform {
        Platform::Bilibili
    }

    fn session<'a>(&'a mut self, link: &'a SourceLink) -> BoxFuture<'a, Result<(), RelayError>> {
        Box::pin(self.run(link))
    }
}
