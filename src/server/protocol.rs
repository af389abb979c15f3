//! Wire format of `ws://HOST:PORT/v1/stream` (protocol version [`PROTOCOL_VERSION`]); the prose
//! specification with examples is `docs/protocol.md`.
//!
//! Server → client: JSON text messages (`hello`, `caption`, `cue`, `state`, `error`, `ack`, `pong`, and
//! `frame` when subscribed as JSON) and binary messages (audio chunks and frames), each binary message
//! starting with a 24-byte little-endian header:
//!
//! ```text
//! offset size  audio (kind 1)                 frame (kind 2)
//!  0     u8    kind = 1                       kind = 2
//!  1     u8    encoding: 1 = s16le, 2 = f32le flags: bit 0 = speaking
//!  2     u16   header length (24)             header length (24)
//!  4     u32   utterance id (0 = none)        utterance id (0 = idle)
//!  8     u64   start sample                   sample
//! 16     u32   sample count                   channel count N
//! 20     u32   reserved (0)                   reserved (0)
//! 24     ...   PCM, mono                      N × f32 weights (rig order), head quaternion
//!                                             x y z w (4 × f32), eyes: left yaw, left pitch,
//!                                             right yaw, right pitch (4 × f32, radians)
//! ```
//!
//! Client → server: JSON text messages with a `type` ([`ClientMsg`]).

use crate::face::EyeGaze;
use crate::perform::{
    AudioChunk, Caption, CueEvent, Event, FrameEvent, PerformState, SessionInfo, StateEvent,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const PROTOCOL_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 24;
pub const KIND_AUDIO: u8 = 1;
pub const KIND_FRAME: u8 = 2;

/// PCM encoding of audio chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioEncoding {
    #[default]
    S16,
    F32,
}

/// Encoding of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameEncoding {
    #[default]
    Binary,
    Json,
}

/// The streams a client can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Audio,
    Frames,
    Captions,
    Cues,
    State,
}

/// What a client receives. The default (before any `subscribe`) is everything, s16 audio, binary frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub audio: bool,
    pub frames: bool,
    pub captions: bool,
    pub cues: bool,
    pub state: bool,
    pub audio_encoding: AudioEncoding,
    pub frame_encoding: FrameEncoding,
    /// The rig frames are given in: `None` for the session's own rig (the default), else the index
    /// of another rig in the server's [`super::rigs::RigCatalog`] (the hub retargets to it).
    pub rig: Option<u16>,
}

impl Default for Subscription {
    fn default() -> Self {
        Subscription {
            audio: true,
            frames: true,
            captions: true,
            cues: true,
            state: true,
            audio_encoding: AudioEncoding::S16,
            frame_encoding: FrameEncoding::Binary,
            rig: None,
        }
    }
}

/// A client's request. Every request may carry an `id` (echoed in the `ack` or `error` it causes)
/// and a `token` (the control token, needed off loopback for `chat`, `say`, `interrupt`, `set`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMsg {
    Subscribe {
        #[serde(default)]
        id: Option<serde_json::Value>,
        #[serde(default)]
        token: Option<String>,
        /// Default: all streams.
        #[serde(default)]
        streams: Option<Vec<StreamKind>>,
        #[serde(default)]
        audio: Option<AudioEncoding>,
        #[serde(default)]
        frames: Option<FrameEncoding>,
        /// The rig to receive frames in: the session's own (the default), or any other rig the
        /// server offers (`hello`'s `rigs`); the hub retargets the session's frames to it.
        #[serde(default)]
        rig: Option<String>,
    },
    Chat {
        #[serde(default)]
        id: Option<serde_json::Value>,
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        user: String,
        text: String,
    },
    Say {
        #[serde(default)]
        id: Option<serde_json::Value>,
        #[serde(default)]
        token: Option<String>,
        text: String,
        #[serde(default)]
        emotion: Option<String>,
    },
    Interrupt {
        #[serde(default)]
        id: Option<serde_json::Value>,
        #[serde(default)]
        token: Option<String>,
    },
    Set {
        #[serde(default)]
        id: Option<serde_json::Value>,
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        emotion: Option<String>,
        #[serde(default)]
        intensity: Option<f32>,
        /// `[yaw, pitch]` in radians.
        #[serde(default)]
        look_at: Option<[f32; 2]>,
    },
    Ping {
        #[serde(default)]
        id: Option<serde_json::Value>,
        #[serde(default)]
        token: Option<String>,
    },
    /// Playback statistics a viewer reports (shown in `/metrics`-style logs and tests).
    Stats {
        #[serde(default)]
        id: Option<serde_json::Value>,
        #[serde(default)]
        token: Option<String>,
        stats: serde_json::Value,
    },
    /// A script (`docs/scripts.md`, as TOML text) to render and perform live to every client.
    Perform {
        #[serde(default)]
        id: Option<serde_json::Value>,
        #[serde(default)]
        token: Option<String>,
        script: String,
    },
}

impl ClientMsg {
    pub fn id(&self) -> Option<&serde_json::Value> {
        match self {
            ClientMsg::Subscribe { id, .. }
            | ClientMsg::Chat { id, .. }
            | ClientMsg::Say { id, .. }
            | ClientMsg::Interrupt { id, .. }
            | ClientMsg::Set { id, .. }
            | ClientMsg::Ping { id, .. }
            | ClientMsg::Stats { id, .. }
            | ClientMsg::Perform { id, .. } => id.as_ref(),
        }
    }

    pub fn token(&self) -> Option<&str> {
        match self {
            ClientMsg::Subscribe { token, .. }
            | ClientMsg::Chat { token, .. }
            | ClientMsg::Say { token, .. }
            | ClientMsg::Interrupt { token, .. }
            | ClientMsg::Set { token, .. }
            | ClientMsg::Ping { token, .. }
            | ClientMsg::Stats { token, .. }
            | ClientMsg::Perform { token, .. } => token.as_deref(),
        }
    }

    /// Messages that change what the idol does need the token off loopback.
    pub fn is_control(&self) -> bool {
        matches!(
            self,
            ClientMsg::Chat { .. }
                | ClientMsg::Say { .. }
                | ClientMsg::Interrupt { .. }
                | ClientMsg::Set { .. }
                | ClientMsg::Perform { .. }
        )
    }
}

/// A request's JSON, parsed strictly: an object with the same key twice (at any depth) is refused,
/// naming the key, instead of silently keeping the last value (`{"type":"ping","type":"chat"}` must
/// not be a chat to one reader and a ping to another).
pub fn parse_json(text: &str) -> Result<serde_json::Value, JsonError> {
    match serde_json::from_str::<Strict>(text) {
        Ok(Strict(v)) => Ok(v),
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            Err(JsonError::DuplicateKey(e.to_string()))
        }
        Err(e) => Err(JsonError::Syntax(e.to_string())),
    }
}

/// Why [`parse_json`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("not JSON: {0}")]
    Syntax(String),
    #[error("{0}: each key may appear once in an object")]
    DuplicateKey(String),
}

/// A JSON value whose objects have unique keys.
struct Strict(serde_json::Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(
            serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }

    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(serde_json::Value::Null))
    }

    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(serde_json::Value::Null))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        Strict::deserialize(d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Strict(out.into()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                // The key is the client's: quote at most 64 characters of it.
                let shown: String = k.chars().take(64).collect();
                let more = if shown.len() < k.len() { "…" } else { "" };
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {shown:?}{more}"
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(k, v);
        }
        Ok(Strict(out.into()))
    }
}

/// The message types a client may send, for error messages.
pub const CLIENT_TYPES: [&str; 8] = [
    "subscribe",
    "chat",
    "say",
    "interrupt",
    "set",
    "ping",
    "stats",
    "perform",
];

/// `hello`, the first message on every connection: `rig` and `channel_names` are the session's rig
/// (what a client receives until it subscribes to another), `rigs` the rig names it may subscribe to,
/// `alternates` (listed when not empty) other relays' WebSocket URLs serving the same session.
pub fn hello(
    info: &SessionInfo,
    now: u64,
    sub: &Subscription,
    rigs: &[&str],
    alternates: &[String],
) -> String {
    let mut v = json!({
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "session": info.session,
        "sample_rate": info.rate,
        "channels": 1,
        "fps": info.fps,
        "rig": info.rig,
        "channel_names": info.channels,
        "rigs": rigs,
        "now": now,
        "lead": info.lead,
        "audio": sub.audio_encoding,
        "frames": sub.frame_encoding,
    });
    if !alternates.is_empty() {
        v["alternates"] = json!(alternates);
    }
    v.to_string()
}

/// An `error` reply: `code` is machine-readable, `message` says what to do.
pub fn error(code: &str, message: &str, id: Option<&serde_json::Value>) -> String {
    let mut v = json!({"type": "error", "code": code, "message": message});
    if let Some(id) = id {
        v["id"] = id.clone();
    }
    v.to_string()
}

/// A `pong`: the session clock now.
pub fn pong(id: Option<&serde_json::Value>, sample: u64) -> String {
    let mut v = json!({"type": "pong", "sample": sample});
    if let Some(id) = id {
        v["id"] = id.clone();
    }
    v.to_string()
}

/// The `bad_rig` error: the rig asked for, and the rigs there are.
pub fn bad_rig(id: Option<&serde_json::Value>, message: &str, rigs: &[String]) -> String {
    let mut v = json!({"type": "error", "code": "bad_rig", "message": message, "rigs": rigs});
    if let Some(id) = id {
        v["id"] = id.clone();
    }
    v.to_string()
}

/// A client message that could not be read: the `error` code and message to answer it with, and
/// the request's `id` when it had one.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub code: &'static str,
    pub message: String,
    pub id: Option<serde_json::Value>,
}

/// A client message read once: what it asks ([`ClientMsg`]) and the JSON it came as (a relay
/// forwards it as sent).
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub msg: ClientMsg,
    pub value: serde_json::Value,
}

/// One client text message → the request, or why it is refused (`bad_json`, `bad_message` for a
/// duplicate key, a missing or malformed field, `unknown_type` for a type not in [`CLIENT_TYPES`]).
/// The text is parsed once (duplicate keys checked), then read as the message its type names.
pub fn parse_client(text: &str) -> Result<ClientRequest, Unreadable> {
    let refuse =
        |code, message: String, id: Option<serde_json::Value>| Unreadable { code, message, id };
    let value = match parse_json(text) {
        Ok(v) => v,
        Err(e @ JsonError::Syntax(_)) => return Err(refuse("bad_json", e.to_string(), None)),
        Err(e @ JsonError::DuplicateKey(_)) => {
            return Err(refuse("bad_message", e.to_string(), None));
        }
    };
    let id = value.get("id").cloned();
    let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
        return Err(refuse(
            "bad_message",
            format!("missing \"type\": one of {}", CLIENT_TYPES.join(", ")),
            id,
        ));
    };
    if !CLIENT_TYPES.contains(&kind) {
        return Err(refuse(
            "unknown_type",
            format!("unknown type {kind:?}: allowed {}", CLIENT_TYPES.join(", ")),
            id,
        ));
    }
    let kind = kind.to_string();
    match ClientMsg::deserialize(&value) {
        Ok(msg) => Ok(ClientRequest { msg, value }),
        Err(e) => Err(refuse("bad_message", format!("bad {kind}: {e}"), id)),
    }
}

/// An `ack` of a request, with extra fields (e.g. the utterance id of a chat).
pub fn ack(id: Option<&serde_json::Value>, of: &str, extra: serde_json::Value) -> String {
    let mut v = json!({"type": "ack", "of": of});
    if let Some(id) = id {
        v["id"] = id.clone();
    }
    if let serde_json::Value::Object(m) = extra {
        for (k, x) in m {
            v[k] = x;
        }
    }
    v.to_string()
}

/// The binary audio message.
pub fn audio_binary(a: &AudioChunk, enc: AudioEncoding) -> Vec<u8> {
    let n = a.pcm.len();
    let bytes_per = match enc {
        AudioEncoding::S16 => 2,
        AudioEncoding::F32 => 4,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + n * bytes_per);
    out.push(KIND_AUDIO);
    out.push(match enc {
        AudioEncoding::S16 => 1,
        AudioEncoding::F32 => 2,
    });
    out.extend_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    out.extend_from_slice(&a.utterance.to_le_bytes());
    out.extend_from_slice(&a.start.get().to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    match enc {
        AudioEncoding::S16 => {
            for &x in &a.pcm {
                let v = (x.clamp(-1.0, 1.0) * 32767.0).round() as i16;
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        AudioEncoding::F32 => {
            for &x in &a.pcm {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    out
}

/// The binary frame message, with the session rig's weights.
pub fn frame_binary(f: &FrameEvent) -> Vec<u8> {
    frame_binary_weights(f, &f.frame.weights)
}

/// The binary frame message of `f` with `w` as its weights (another rig's, retargeted).
pub fn frame_binary_weights(f: &FrameEvent, w: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + (w.len() + 8) * 4);
    out.push(KIND_FRAME);
    out.push(u8::from(f.utterance != 0));
    out.extend_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    out.extend_from_slice(&f.utterance.to_le_bytes());
    out.extend_from_slice(&f.frame.at.get().to_le_bytes());
    out.extend_from_slice(&(w.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let q = f.frame.head;
    for x in w
        .iter()
        .chain(&[q.x, q.y, q.z, q.w])
        .chain(&eyes(&f.frame.gaze))
    {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// The JSON frame message of `f` with `weights` in the order of rig `rig`'s channels.
pub fn frame_json(f: &FrameEvent, weights: &[f32], rig: &str) -> String {
    let q = f.frame.head;
    json!({
        "type": "frame",
        "utterance": f.utterance,
        "sample": f.frame.at.get(),
        "rig": rig,
        "weights": weights,
        "head": [q.x, q.y, q.z, q.w],
        "eyes": eyes(&f.frame.gaze),
    })
    .to_string()
}

/// A subscription as its `ack` states it: the streams on, the audio and frame encodings.
pub fn subscription_json(s: &Subscription) -> serde_json::Value {
    let mut streams = vec![];
    for (on, name) in [
        (s.audio, "audio"),
        (s.frames, "frames"),
        (s.captions, "captions"),
        (s.cues, "cues"),
        (s.state, "state"),
    ] {
        if on {
            streams.push(name);
        }
    }
    json!({"streams": streams, "audio": s.audio_encoding, "frames": s.frame_encoding})
}

/// The eyes as the wire writes them: left yaw, left pitch, right yaw, right pitch.
pub fn eyes(g: &[EyeGaze; 2]) -> [f32; 4] {
    [g[0].yaw, g[0].pitch, g[1].yaw, g[1].pitch]
}

/// The eyes the wire's four numbers describe (see [`eyes`]).
pub fn gaze(e: [f32; 4]) -> [EyeGaze; 2] {
    [
        EyeGaze {
            yaw: e[0],
            pitch: e[1],
        },
        EyeGaze {
            yaw: e[2],
            pitch: e[3],
        },
    ]
}

pub fn caption_json(c: &Caption) -> String {
    let words: Vec<serde_json::Value> = c
        .words
        .iter()
        .map(|w| json!({"text": w.value.text, "start": w.start().get(), "end": w.end().get()}))
        .collect();
    json!({
        "type": "caption",
        "utterance": c.utterance,
        "text": c.text,
        "start": c.range.start().get(),
        "end": c.range.end().get(),
        "words": words,
    })
    .to_string()
}

pub fn cue_json(c: &CueEvent) -> String {
    json!({
        "type": "cue",
        "utterance": c.utterance,
        "kind": c.cue.kind,
        "name": c.cue.name,
        "intensity": c.cue.intensity,
        "sample": c.cue.at.get(),
    })
    .to_string()
}

pub fn state_json(s: &StateEvent) -> String {
    let mut v = json!({
        "type": "state",
        "state": s.state,
        "sample": s.at.get(),
    });
    if let Some(u) = s.utterance {
        v["utterance"] = u.into();
    }
    if s.state == PerformState::Interrupted {
        v["heard"] = s.heard.clone().unwrap_or_default().into();
    }
    v.to_string()
}

/// The JSON text of a non-binary event (`None` for audio and frames).
pub fn event_json(e: &Event) -> Option<String> {
    match e {
        Event::Caption(c) => Some(caption_json(c)),
        Event::Cue(c) => Some(cue_json(c)),
        Event::State(s) => Some(state_json(s)),
        Event::Asked(a) => Some(
            json!({
                "type": "asked",
                "utterance": a.utterance,
                "user": a.user,
                "source": a.source,
                "text": a.text,
                "sample": a.at.get(),
            })
            .to_string(),
        ),
        Event::Error { utterance, message } => {
            let mut v = json!({"type": "error", "code": "stage", "message": message});
            v["utterance"] = (*utterance).into();
            Some(v.to_string())
        }
        Event::Audio(_) | Event::Frame(_) => None,
    }
}

/// A parsed binary message (for clients written in Rust, tests and benchmarks).
#[derive(Debug, Clone, PartialEq)]
pub enum Binary {
    Audio {
        utterance: u32,
        start: u64,
        /// Decoded to f32 whatever the encoding.
        pcm: Vec<f32>,
    },
    Frame {
        utterance: u32,
        sample: u64,
        weights: Vec<f32>,
        head: [f32; 4],
        eyes: [f32; 4],
    },
}

/// Parse a binary message; `None` when it is malformed.
pub fn parse_binary(b: &[u8]) -> Option<Binary> {
    if b.len() < HEADER_LEN {
        return None;
    }
    let hl = u16::from_le_bytes([b[2], b[3]]) as usize;
    let utterance = u32::from_le_bytes(b[4..8].try_into().ok()?);
    let at = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let n = u32::from_le_bytes(b[16..20].try_into().ok()?) as usize;
    let body = b.get(hl..)?;
    let f32s = |body: &[u8]| -> Vec<f32> {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    };
    match (b[0], b[1]) {
        (KIND_AUDIO, 1) if body.len() == 2 * n => Some(Binary::Audio {
            utterance,
            start: at,
            pcm: body
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32767.0)
                .collect(),
        }),
        (KIND_AUDIO, 2) if body.len() == 4 * n => Some(Binary::Audio {
            utterance,
            start: at,
            pcm: f32s(body),
        }),
        (KIND_FRAME, _) if body.len() == 4 * (n + 8) => {
            let v = f32s(body);
            Some(Binary::Frame {
                utterance,
                sample: at,
                weights: v[..n].to_vec(),
                head: v[n..n + 4].try_into().ok()?,
                eyes: v[n + 4..n + 8].try_into().ok()?,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::{Frame, MorphWeights};
    use crate::time::SampleTime;

    #[test]
    fn binary_round_trips() {
        let a = AudioChunk {
            utterance: 7,
            start: SampleTime(123_456_789_012),
            pcm: vec![0.0, 0.5, -1.0],
        };
        let b = audio_binary(&a, AudioEncoding::S16);
        assert_eq!(b.len(), 24 + 6);
        assert_eq!(&b[..4], &[1, 1, 24, 0]);
        match parse_binary(&b).unwrap() {
            Binary::Audio {
                utterance,
                start,
                pcm,
            } => {
                assert_eq!((utterance, start), (7, 123_456_789_012));
                assert!((pcm[1] - 0.5).abs() < 1e-4 && pcm[2] == -1.0);
            }
            other => panic!("{other:?}"),
        }
        let b = audio_binary(&a, AudioEncoding::F32);
        assert_eq!(
            parse_binary(&b),
            Some(Binary::Audio {
                utterance: 7,
                start: 123_456_789_012,
                pcm: a.pcm.clone()
            })
        );
        let f = FrameEvent {
            utterance: 0,
            frame: Frame::new(
                SampleTime(368),
                MorphWeights::unit(vec![0.25; 52]).unwrap(),
                glam::Quat::IDENTITY,
                gaze([0.1, 0.2, 0.3, 0.4]),
            ),
        };
        let b = frame_binary(&f);
        assert_eq!(b.len(), 24 + 60 * 4);
        match parse_binary(&b).unwrap() {
            Binary::Frame {
                sample,
                weights,
                head,
                eyes,
                ..
            } => {
                assert_eq!(sample, 368);
                assert_eq!(weights.len(), 52);
                assert_eq!(head, [0.0, 0.0, 0.0, 1.0]);
                assert_eq!(eyes, [0.1, 0.2, 0.3, 0.4]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_binary(&b[..30]), None);
    }

    #[test]
    fn client_messages_parse_strictly() {
        let m: ClientMsg =
            serde_json::from_str(r#"{"type":"chat","user":"ann","text":"hi","id":3}"#).unwrap();
        assert!(m.is_control());
        assert_eq!(m.id(), Some(&json!(3)));
        let m: ClientMsg = serde_json::from_str(
            r#"{"type":"subscribe","streams":["audio","frames"],"audio":"f32","frames":"json"}"#,
        )
        .unwrap();
        assert!(matches!(
            m,
            ClientMsg::Subscribe {
                audio: Some(AudioEncoding::F32),
                ..
            }
        ));
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"chat"}"#).is_err());
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"dance"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientMsg>(r#"{"type":"ping","extra":1}"#).is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_naming_the_key() {
        let e = parse_json(r#"{"type":"ping","type":"chat","text":"hi"}"#).unwrap_err();
        let JsonError::DuplicateKey(m) = &e else {
            panic!("{e:?}")
        };
        assert!(m.contains(r#"duplicate key "type""#), "{m}");
        let e = parse_json(r#"{"type":"stats","stats":{"a":1,"b":{"c":1,"c":2}}}"#).unwrap_err();
        assert!(e.to_string().contains(r#"duplicate key "c""#), "{e}");
        assert!(matches!(parse_json("{\"a\":"), Err(JsonError::Syntax(_))));
        // Equal to serde_json's own reading when keys are unique.
        let t = r#"{"type":"set","look_at":[0.1,-2e-3],"id":{"n":null,"b":[true,1,18446744073709551615,-5]}}"#;
        assert_eq!(
            parse_json(t).unwrap(),
            serde_json::from_str::<serde_json::Value>(t).unwrap()
        );
        // Deep nesting is refused by the parser's depth limit, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert!(matches!(
            parse_json(&deep),
            Err(JsonError::Syntax(_)) | Err(JsonError::DuplicateKey(_))
        ));
    }
}
