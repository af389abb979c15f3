//! Source `nats` for `idol relay`: the stream protocol and the viewer served to this process's own
//! WebSocket clients from an idol's NATS subjects ([`super::nats`]), with no models loaded, so
//! viewers scale by adding relays. Input: one wildcard subscription to `idol.<idol>.>` (one
//! subscription keeps the publisher's order across streams) and the publisher's `hello` snapshot.
//! Output: the same routes as `idol serve` (`/`, `/v1/stream`, `/healthz`, `/metrics`), the same
//! [`Hub`] (slow-client policy, lag, close codes, metrics) and the same connection code; requests
//! are forwarded to the publisher ([`RemoteUpstream`]).
//!
//! Each NATS message is turned into each client's wire form once: audio arrives as f32 (lossless)
//! and s16 is made from it with the server's own encoder, so a relay's s16 bytes equal the server's;
//! frames arrive per rig in binary and JSON frames are made from them the same way. The publisher
//! sends frames in a catalog rig other than the session's only while someone asks for it on
//! `idol.<idol>.want`: the relay asks for its clients' rigs as soon as one subscribes to a rig and
//! then every [`WANT_EVERY`].
//!
//! Late joiners: the relay asks the publisher for its `hello` (request/reply on `idol.<idol>.hello`)
//! once at start; its clock then runs on from that stamp (the session clock is wall time since the
//! session began), and each new client's `hello` carries it.
//!
//! Siblings: every relay of an idol announces its WebSocket URL on `idol.<idol>.relays` each
//! [`ANNOUNCE_EVERY`] and hears the others' on its wildcard subscription; a new client's `hello`
//! lists the siblings heard within [`PEER_TTL`] as `alternates` (rotated per client, so the clients
//! of a relay that dies spread over the rest), and the relay's `Origin` check accepts the pages of
//! siblings heard within [`PEER_ORIGIN_TTL`] (the viewer page of a dead relay reconnects here).

use super::conn::{ConnCtx, RemoteUpstream, Upstream};
use super::hub::Hub;
use super::nats::{NatsError, NatsStats, Subjects, WANT_EVERY, connect};
use super::protocol::{self, AudioEncoding, Binary, FrameEncoding, parse_binary};
use super::{AppState, Guard, ServerError, ServerOptions, Viewer};
use crate::face::{Frame, MorphWeights};
use crate::perform::{AudioChunk, FrameEvent, Metrics, SessionInfo};
use crate::time::SampleTime;
use axum::body::Bytes;
use axum::extract::ws::Message;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a relay waits at start for the publisher to answer `hello`.
pub const HELLO_PATIENCE: Duration = Duration::from_secs(30);
/// How often a relay announces its URL to its siblings.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// A sibling not heard from for this long is no longer listed.
pub const PEER_TTL: Duration = Duration::from_millis(3500);
/// A sibling's pages may open the stream here this long after it was last heard (its viewers
/// arrive after it died, and may have to come back after a lag close).
pub const PEER_ORIGIN_TTL: Duration = Duration::from_secs(3600);
/// Longest relay URL taken from an announcement.
const MAX_URL: usize = 512;
/// Most siblings listed.
const MAX_PEERS: usize = 64;

/// A relay's siblings, as their announcements tell.
pub struct Peers {
    own: Option<String>,
    seen: parking_lot::Mutex<std::collections::HashMap<String, Instant>>,
    turn: std::sync::atomic::AtomicUsize,
}

impl Peers {
    pub fn new(own: Option<String>) -> Self {
        Peers {
            own,
            seen: Default::default(),
            turn: Default::default(),
        }
    }

    /// Take an announcement's payload; `true` when it names a sibling not listed before.
    pub fn heard(&self, payload: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return false;
        };
        let Some(url) = v["url"].as_str() else {
            return false;
        };
        if url.len() > MAX_URL
            || Guard::origin_of_ws_url(url).is_none()
            || self.own.as_deref() == Some(url)
        {
            return false;
        }
        let mut seen = self.seen.lock();
        let now = Instant::now();
        seen.retain(|_, t| now.duration_since(*t) < PEER_ORIGIN_TTL);
        if seen.len() >= MAX_PEERS
            && !seen.contains_key(url)
            && let Some(oldest) = seen.iter().min_by_key(|(_, t)| **t).map(|(u, _)| u.clone())
        {
            seen.remove(&oldest);
        }
        seen.insert(url.to_string(), now).is_none()
    }

    /// The siblings heard within [`PEER_TTL`], sorted.
    pub fn alive(&self) -> Vec<String> {
        self.within(PEER_TTL)
    }

    fn within(&self, ttl: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut v: Vec<String> = self
            .seen
            .lock()
            .iter()
            .filter(|(_, t)| now.duration_since(**t) < ttl)
            .map(|(u, _)| u.clone())
            .collect();
        v.sort();
        v
    }

    /// [`Self::alive`], rotated by one more place at each call.
    pub fn alternates(&self) -> Vec<String> {
        let mut v = self.alive();
        if !v.is_empty() {
            let k = self.turn.fetch_add(1, Ordering::Relaxed) % v.len();
            v.rotate_left(k);
        }
        v
    }

    /// The web origins of the siblings heard within [`PEER_ORIGIN_TTL`].
    fn origins(&self) -> Vec<String> {
        self.within(PEER_ORIGIN_TTL)
            .iter()
            .filter_map(|u| Guard::origin_of_ws_url(u))
            .collect()
    }
}

/// Errors starting a relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("idol relay needs a NATS server: give --nats nats://HOST:PORT or set [nats] url")]
    NoNats,
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(
        "no idol {idol:?} answered on {url} within {secs} s: start `idol serve --nats {url} --idol {idol}` (or check --idol)"
    )]
    NoPublisher {
        url: String,
        idol: String,
        secs: u64,
    },
    #[error(
        "--advertise {0:?}: give the WebSocket URL clients reach this relay at, ws://HOST:PORT/v1/stream (or wss://)"
    )]
    BadAdvertise(String),
    #[error("the publisher's hello is not valid: {0}")]
    BadHello(String),
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// The session a relay serves, from the publisher's `hello`, and its clock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub info: SessionInfo,
    pub now: u64,
    /// When `now` was true here.
    pub at: Instant,
}

impl Snapshot {
    /// From the publisher's `hello` JSON ([`super::nats::snapshot`]), received at `at`.
    pub fn parse(payload: &[u8], at: Instant) -> Result<Snapshot, RelayError> {
        let v: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| RelayError::BadHello(e.to_string()))?;
        let s = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| RelayError::BadHello(format!("no {k:?}")))
        };
        let n = |k: &str| {
            v[k].as_u64()
                .ok_or_else(|| RelayError::BadHello(format!("no {k:?}")))
        };
        let channels = v["channel_names"]
            .as_array()
            .ok_or_else(|| RelayError::BadHello("no \"channel_names\"".into()))?
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        let rate = n("sample_rate")?;
        if rate == 0 || rate > 1_000_000 {
            return Err(RelayError::BadHello(format!("sample_rate {rate}")));
        }
        Ok(Snapshot {
            info: SessionInfo {
                session: s("session")?,
                rate: rate as u32,
                fps: n("fps")? as u32,
                rig: s("rig")?,
                channels,
                canonical: v["canonical"].as_bool().unwrap_or(false),
                lead: n("lead")?,
            },
            now: n("now")?,
            at,
        })
    }

    /// The session clock now, run on from the snapshot.
    pub fn now(&self) -> u64 {
        self.now + (self.at.elapsed().as_secs_f64() * self.info.rate as f64) as u64
    }
}

/// The publisher, as a relay's connections drive it.
struct NatsUpstream {
    client: async_nats::Client,
    control: String,
    snapshot: Snapshot,
    metrics: Arc<Metrics>,
    rt: tokio::runtime::Handle,
}

impl RemoteUpstream for NatsUpstream {
    fn forward(&self, request: String, done: Box<dyn FnOnce(String) + Send>) {
        let client = self.client.clone();
        let subject = self.control.clone();
        self.rt.spawn(async move {
            let id = serde_json::from_str::<serde_json::Value>(&request)
                .ok()
                .and_then(|v| v.get("id").cloned());
            let reply = tokio::time::timeout(
                Duration::from_secs(10),
                client.request(subject, request.into()),
            )
            .await;
            done(match reply {
                Ok(Ok(m)) => String::from_utf8_lossy(&m.payload).into_owned(),
                Ok(Err(e)) => protocol::error(
                    "upstream",
                    &format!("the idol did not take it ({e}); try again"),
                    id.as_ref(),
                ),
                Err(_) => protocol::error(
                    "upstream",
                    "the idol did not answer within 10 s; try again",
                    id.as_ref(),
                ),
            });
        });
    }

    fn now(&self) -> u64 {
        self.snapshot.now()
    }

    fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// A running `idol relay`. Dropping it stops it.
pub struct NatsRelay {
    addr: SocketAddr,
    hub: Arc<Hub>,
    stats: Arc<NatsStats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NatsRelay {
    /// Connect to `opts.nats`, take the publisher's `hello` and serve. `opts.chat_desk` is not used
    /// (chat relays belong to the publisher).
    pub fn start(opts: ServerOptions) -> Result<NatsRelay, RelayError> {
        let nats = opts.nats.clone().ok_or(RelayError::NoNats)?;
        let subjects = Subjects::new(&nats.idol);
        let stats = Arc::new(NatsStats::default());
        let rt = super::io_runtime().map_err(ServerError::from)?;
        let (client, snapshot) = rt.block_on(async {
            let client = connect(&nats.url, "idol relay", stats.clone(), true).await?;
            let t0 = Instant::now();
            loop {
                let sent = Instant::now();
                let asked = tokio::time::timeout(
                    Duration::from_secs(2),
                    client.request(subjects.hello(), Bytes::new()),
                )
                .await;
                if let Ok(Ok(m)) = asked {
                    // The stamp was taken about halfway through the round trip.
                    let at = sent + sent.elapsed() / 2;
                    break Ok((client, Snapshot::parse(&m.payload, at)?));
                }
                if t0.elapsed() > HELLO_PATIENCE {
                    break Err(RelayError::NoPublisher {
                        url: nats.url.clone(),
                        idol: nats.idol.clone(),
                        secs: HELLO_PATIENCE.as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })?;
        let metrics = Arc::new(Metrics::default());
        let info = snapshot.info.clone();
        // Room for 100 audio chunks a second (10 ms chunks) besides the frames.
        let hub = super::new_hub(&opts, 100, info.fps, metrics.clone());
        let clock = snapshot.clone();
        hub.set_session(Arc::new(info.clone()), move || clock.now());

        let addr = SocketAddr::new(opts.bind, opts.port);
        let listener =
            std::net::TcpListener::bind(addr).map_err(|error| ServerError::Bind { addr, error })?;
        listener.set_nonblocking(true).map_err(ServerError::from)?;
        let addr = listener.local_addr().map_err(ServerError::from)?;
        let own = match &opts.advertise {
            Some(u) => {
                if Guard::origin_of_ws_url(u).is_none() || u.len() > MAX_URL {
                    return Err(RelayError::BadAdvertise(u.clone()));
                }
                Some(u.clone())
            }
            None if addr.ip().is_unspecified() => {
                log::warn!(
                    "relay bound to all addresses: not announced to sibling relays (give --advertise ws://HOST:PORT/v1/stream)"
                );
                None
            }
            None => Some(format!("ws://{addr}/v1/stream")),
        };
        let peers = Arc::new(Peers::new(own.clone()));
        {
            let peers = peers.clone();
            hub.set_alternates(move || peers.alternates());
        }

        let upstream = NatsUpstream {
            client: client.clone(),
            control: subjects.control(),
            snapshot,
            metrics: metrics.clone(),
            rt: rt.handle().clone(),
        };
        let ctx = ConnCtx {
            hub: hub.clone(),
            upstream: Upstream::Remote(Arc::new(upstream)),
            policy: Arc::new(opts.policy.clone()),
            stats: Arc::default(),
        };
        let guard = Arc::new(Guard::new(
            opts.bind,
            addr.port(),
            &opts.allowed_hosts,
            &opts.allowed_origins,
        ));
        let app = super::router(AppState {
            ctx,
            guard: guard.clone(),
            desk: None,
            viewer: Arc::new(Viewer::new(&opts.viewer)),
            nats: Some(stats.clone()),
        });
        let wildcard = format!("idol.{}.>", nats.idol);
        let sub = rt
            .block_on(client.subscribe(wildcard.clone()))
            .map_err(|e| NatsError::Request {
                url: nats.url.clone(),
                why: format!("cannot subscribe to {wildcard}: {e}"),
            })?;
        let siblings = Siblings {
            subject: subjects.relays(),
            peers,
            guard,
        };
        rt.spawn(announce(client.clone(), own, siblings.clone()));
        rt.spawn(ask_for_rigs(client.clone(), subjects.want(), hub.clone()));
        rt.spawn(feed(
            sub,
            hub.clone(),
            subjects,
            info,
            stats.clone(),
            siblings,
        ));
        let (tx, thread) = super::spawn_http(rt, listener, app).map_err(ServerError::from)?;
        Ok(NatsRelay {
            addr,
            hub,
            stats,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn stats(&self) -> &Arc<NatsStats> {
        &self.stats
    }
}

impl Drop for NatsRelay {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a NATS message is to the relay's clients.
enum Kind {
    Audio,
    /// Frames in the session's rig (`None`) or a catalog rig (its index), and the rig's name.
    Frames(Option<u16>, String),
    Captions,
    Cues,
    State,
}

/// What a relay knows of its siblings and where it tells it.
#[derive(Clone)]
struct Siblings {
    subject: String,
    peers: Arc<Peers>,
    guard: Arc<Guard>,
}

impl Siblings {
    fn heard(&self, payload: &[u8]) {
        if self.peers.heard(payload) {
            self.guard.set_peer_origins(self.peers.origins());
        }
    }
}

/// Announce `own` every [`ANNOUNCE_EVERY`] and forget siblings gone quiet.
async fn announce(client: async_nats::Client, own: Option<String>, siblings: Siblings) {
    let payload = own.map(|u| Bytes::from(serde_json::json!({ "url": u }).to_string()));
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    loop {
        tick.tick().await;
        if let Some(p) = &payload {
            let _ = client.publish(siblings.subject.clone(), p.clone()).await;
        }
        siblings.guard.set_peer_origins(siblings.peers.origins());
    }
}

/// Ask the publisher for the catalog rigs this relay's clients take frames in: at once when a
/// client names one, and again every [`WANT_EVERY`] while any does (the publisher keeps a rig for
/// [`super::nats::WANT_TTL`] after it was last asked for).
async fn ask_for_rigs(client: async_nats::Client, subject: String, hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(WANT_EVERY);
    loop {
        tokio::select! {
            _ = hub.rig_named_since() => {}
            _ = tick.tick() => {}
        }
        let rigs = hub.rigs();
        let names: Vec<&str> = hub
            .rigs_in_use()
            .into_iter()
            .filter_map(|i| rigs.get(i as usize).map(|(n, _)| n))
            .collect();
        if names.is_empty() {
            continue;
        }
        let payload = serde_json::json!({ "rigs": names }).to_string();
        if client
            .publish(subject.clone(), payload.into())
            .await
            .is_ok()
        {
            let _ = client.flush().await;
        }
    }
}

/// Fan each stream message out to the hub's clients, in each one's wire form.
async fn feed(
    mut sub: async_nats::Subscriber,
    hub: Arc<Hub>,
    subjects: Subjects,
    info: SessionInfo,
    stats: Arc<NatsStats>,
    siblings: Siblings,
) {
    let (audio, captions, cues, state) = (
        subjects.audio(),
        subjects.captions(),
        subjects.cues(),
        subjects.state(),
    );
    while let Some(msg) = sub.next().await {
        let subject = msg.subject.as_str();
        let kind = if subject == audio {
            Kind::Audio
        } else if subject == captions {
            Kind::Captions
        } else if subject == cues {
            Kind::Cues
        } else if subject == state {
            Kind::State
        } else if let Some(rig) = subjects.rig_of(subject) {
            if rig == info.rig {
                Kind::Frames(None, rig.to_string())
            } else {
                match hub.rigs().index(rig) {
                    Some(i) => Kind::Frames(Some(i as u16), rig.to_string()),
                    None => continue,
                }
            }
        } else {
            if subject == siblings.subject {
                siblings.heard(&msg.payload);
            }
            // control requests and hello: not stream messages.
            continue;
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        fan_out(&hub, kind, msg.payload);
    }
}

fn fan_out(hub: &Hub, kind: Kind, payload: Bytes) {
    match kind {
        Kind::Audio => {
            let f32m = Message::Binary(payload.clone());
            let mut s16: Option<Option<Message>> = None;
            hub.broadcast_with(|sub| {
                if !sub.audio {
                    return None;
                }
                match sub.audio_encoding {
                    AudioEncoding::F32 => Some(f32m.clone()),
                    AudioEncoding::S16 => s16.get_or_insert_with(|| s16_of(&payload)).clone(),
                }
            });
        }
        Kind::Frames(rig, name) => {
            let bin = Message::Binary(payload.clone());
            let mut json: Option<Option<Message>> = None;
            hub.broadcast_with(|sub| {
                if !sub.frames || sub.rig != rig {
                    return None;
                }
                match sub.frame_encoding {
                    FrameEncoding::Binary => Some(bin.clone()),
                    FrameEncoding::Json => json
                        .get_or_insert_with(|| json_frame_of(&payload, &name))
                        .clone(),
                }
            });
        }
        Kind::Captions | Kind::Cues | Kind::State => {
            let Ok(text) = std::str::from_utf8(&payload) else {
                return;
            };
            // Stage errors go to every client, as the server sends them.
            let always = matches!(kind, Kind::State)
                && serde_json::from_str::<serde_json::Value>(text)
                    .is_ok_and(|v| v["type"] == "error");
            let m = Message::Text(text.into());
            hub.broadcast_with(|sub| {
                let on = always
                    || match kind {
                        Kind::Captions => sub.captions,
                        Kind::Cues => sub.cues,
                        _ => sub.state,
                    };
                on.then(|| m.clone())
            });
        }
    }
}

/// The s16 audio message of an f32 one, by the server's own encoder (`None`: malformed).
fn s16_of(f32_message: &[u8]) -> Option<Message> {
    let Some(Binary::Audio {
        utterance,
        start,
        pcm,
    }) = parse_binary(f32_message)
    else {
        return None;
    };
    let chunk = AudioChunk {
        utterance,
        start: SampleTime(start),
        pcm,
    };
    Some(Message::Binary(Bytes::from(protocol::audio_binary(
        &chunk,
        AudioEncoding::S16,
    ))))
}

/// The JSON frame message of a binary one in rig `rig` (`None`: malformed).
fn json_frame_of(binary: &[u8], rig: &str) -> Option<Message> {
    let Some(Binary::Frame {
        utterance,
        sample,
        weights,
        head,
        eyes,
    }) = parse_binary(binary)
    else {
        return None;
    };
    let f = FrameEvent {
        utterance,
        frame: Frame::new(
            SampleTime(sample),
            MorphWeights::default(),
            glam::Quat::from_xyzw(head[0], head[1], head[2], head[3]),
            protocol::gaze(eyes),
        ),
    };
    Some(Message::Text(
        protocol::frame_json(&f, &weights, rig).into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_encodings_equal_the_servers() {
        let a = AudioChunk {
            utterance: 3,
            start: SampleTime(44_100),
            pcm: vec![0.0, 0.25, -0.5, 0.99999, -1.0, 0.123_456_7],
        };
        let f32m = protocol::audio_binary(&a, AudioEncoding::F32);
        let Some(Message::Binary(s16)) = s16_of(&f32m) else {
            panic!("s16")
        };
        assert_eq!(
            &s16[..],
            &protocol::audio_binary(&a, AudioEncoding::S16)[..]
        );
        let f = FrameEvent {
            utterance: 3,
            frame: Frame::new(
                SampleTime(735),
                MorphWeights::unit(vec![0.1, 0.7, 0.0]).unwrap(),
                glam::Quat::from_xyzw(0.01, -0.02, 0.03, 0.9993),
                protocol::gaze([0.1, -0.1, 0.2, -0.2]),
            ),
        };
        let Some(Message::Text(j)) = json_frame_of(&protocol::frame_binary(&f), "arkit52") else {
            panic!("json")
        };
        assert_eq!(
            j.as_str(),
            protocol::frame_json(&f, &f.frame.weights, "arkit52")
        );
        assert!(s16_of(&[1, 2, 3]).is_none());
    }

    #[test]
    fn siblings_are_listed_rotated_and_checked() {
        let p = Peers::new(Some("ws://127.0.0.1:1/v1/stream".into()));
        assert!(
            !p.heard(br#"{"url":"ws://127.0.0.1:1/v1/stream"}"#),
            "itself"
        );
        assert!(!p.heard(br#"{"url":"http://127.0.0.1:2/"}"#), "not ws");
        assert!(!p.heard(b"junk"));
        assert!(p.heard(br#"{"url":"ws://127.0.0.1:3/v1/stream"}"#));
        assert!(
            !p.heard(br#"{"url":"ws://127.0.0.1:3/v1/stream"}"#),
            "known"
        );
        assert!(p.heard(br#"{"url":"ws://127.0.0.1:2/v1/stream"}"#));
        let a = p.alternates();
        let b = p.alternates();
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], b[0], "rotated");
        assert_eq!(
            p.origins(),
            ["http://127.0.0.1:2", "http://127.0.0.1:3"].map(String::from)
        );
    }

    #[test]
    fn snapshots_parse_and_refuse_what_is_missing() {
        let hello = r#"{"type":"hello","session":"ab","sample_rate":22050,"fps":60,"rig":"arkit52","channel_names":["jawOpen"],"now":1000,"lead":0,"canonical":true}"#;
        let s = Snapshot::parse(hello.as_bytes(), Instant::now()).unwrap();
        assert_eq!(
            (s.info.rate, s.info.rig.as_str(), s.info.canonical),
            (22050, "arkit52", true)
        );
        assert!(s.now() >= 1000);
        let e = Snapshot::parse(br#"{"type":"hello"}"#, Instant::now()).unwrap_err();
        assert!(e.to_string().contains("not valid"), "{e}");
    }
}
