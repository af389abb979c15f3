//! Sink `nats`: `idol serve --nats URL` publishes the session's stream to NATS subjects and takes
//! control requests from one (`docs/scale.md`). Input: the hub's events, through its [`Tap`]
//! (every stream in one wire form, the same bytes the WebSocket clients get); the control subject.
//! Output: one NATS message per stream message:
//!
//! | subject                    | payload (`docs/protocol.md`)                                   |
//! |----------------------------|----------------------------------------------------------------|
//! | `idol.<idol>.audio`        | binary audio message, f32 PCM (lossless: s16 is derived from it) |
//! | `idol.<idol>.frames.<rig>` | binary frame message in `<rig>`: the session's rig, and each catalog rig asked for on `.want` in the last [`WANT_TTL`] (when the face keeps canonical vectors) |
//! | `idol.<idol>.captions`     | `caption` JSON                                                  |
//! | `idol.<idol>.cues`         | `cue` JSON                                                      |
//! | `idol.<idol>.state`        | `state`, `asked` and stage `error` JSON                         |
//! | `idol.<idol>.control`      | in: `chat`, `say`, `interrupt` JSON; the reply (`ack`/`error`) goes to the request's reply subject |
//! | `idol.<idol>.hello`        | request/reply: the session's `hello` (with its clock `now`, and `canonical`) for relays' late joiners |
//! | `idol.<idol>.want`         | in: `{"rigs": [NAME, …]}`, the catalog rigs someone reads (relays send their clients' every [`WANT_EVERY`]) |
//! | `idol.<idol>.relays`       | each relay's `{"url": "ws://…/v1/stream"}`, every second (relays' discovery of each other) |
//!
//! Control follows the WebSocket's token rules with the NATS server standing for the peer: a NATS
//! server on loopback is this machine (no token needed); any other needs the control token in the
//! request's `token`.
//!
//! Never blocking the session: the tap only queues (bounded, `[nats] queue` messages) and a message
//! that finds the queue full is dropped and counted (`idol_nats_dropped_total`). One task drains the
//! queue into the client, which reconnects with backoff on its own while the queue fills; the
//! connection's state is `idol_nats_connected` in `/metrics`.

use super::conn::{ConnCtx, RemoteControl};
use super::hub::{Tap, Topic};
use super::protocol::{self, Subscription};
use axum::body::Bytes;
use axum::extract::ws::Message;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Where and as whom to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsOptions {
    /// `nats://HOST:PORT`.
    pub url: String,
    /// The idol's name in the subjects.
    pub idol: String,
    /// Messages waiting for the connection before new ones are dropped.
    pub queue: usize,
}

impl NatsOptions {
    /// From `[nats]` in idol.toml (`None` without a `url`).
    pub fn from_config(c: &crate::config::NatsConfig) -> Option<Self> {
        c.url.as_ref().map(|url| NatsOptions {
            url: url.clone(),
            idol: c.idol.clone(),
            queue: c.queue,
        })
    }
}

/// The subjects of one idol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(idol: &str) -> Self {
        Subjects {
            prefix: format!("idol.{idol}"),
        }
    }
    pub fn audio(&self) -> String {
        format!("{}.audio", self.prefix)
    }
    pub fn frames(&self, rig: &str) -> String {
        format!("{}.frames.{rig}", self.prefix)
    }
    /// Every rig's frames (a wildcard).
    pub fn all_frames(&self) -> String {
        format!("{}.frames.*", self.prefix)
    }
    pub fn captions(&self) -> String {
        format!("{}.captions", self.prefix)
    }
    pub fn cues(&self) -> String {
        format!("{}.cues", self.prefix)
    }
    pub fn state(&self) -> String {
        format!("{}.state", self.prefix)
    }
    pub fn control(&self) -> String {
        format!("{}.control", self.prefix)
    }
    pub fn hello(&self) -> String {
        format!("{}.hello", self.prefix)
    }
    /// `{"rigs": [NAME, …]}`: frames in these catalog rigs are published for [`WANT_TTL`] more.
    pub fn want(&self) -> String {
        format!("{}.want", self.prefix)
    }
    /// Relays of this idol announce their WebSocket URL here (`idol relay`), so each lists its
    /// siblings in its clients' `hello` (`alternates`).
    pub fn relays(&self) -> String {
        format!("{}.relays", self.prefix)
    }
    pub fn topic(&self, t: Topic<'_>) -> String {
        match t {
            Topic::Audio => self.audio(),
            Topic::Frames(rig) => self.frames(rig),
            Topic::Captions => self.captions(),
            Topic::Cues => self.cues(),
            Topic::State => self.state(),
        }
    }
    /// The rig a frames subject names (`None` for another subject).
    pub fn rig_of<'s>(&self, subject: &'s str) -> Option<&'s str> {
        subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".frames.")
    }
}

/// Counters of the NATS link, rendered into `/metrics`.
#[derive(Debug, Default)]
pub struct NatsStats {
    pub published: AtomicU64,
    pub dropped: AtomicU64,
    pub received: AtomicU64,
    pub reconnects: AtomicU64,
    pub connected: AtomicBool,
    pub control_requests: AtomicU64,
}

impl NatsStats {
    /// Prometheus text of the counters.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP idol_nats_connected 1 while the NATS connection is up.\n# TYPE idol_nats_connected gauge\nidol_nats_connected {}\n\
             # HELP idol_nats_published_total Stream messages published to NATS.\n# TYPE idol_nats_published_total counter\nidol_nats_published_total {}\n\
             # HELP idol_nats_dropped_total Stream messages dropped because the NATS queue was full (NATS slow or down).\n# TYPE idol_nats_dropped_total counter\nidol_nats_dropped_total {}\n\
             # HELP idol_nats_received_total Stream messages received from NATS (relay).\n# TYPE idol_nats_received_total counter\nidol_nats_received_total {}\n\
             # HELP idol_nats_reconnects_total Times the NATS connection came back after a loss.\n# TYPE idol_nats_reconnects_total counter\nidol_nats_reconnects_total {}\n\
             # HELP idol_nats_control_total Control requests taken from NATS.\n# TYPE idol_nats_control_total counter\nidol_nats_control_total {}\n",
            u8::from(self.connected.load(Ordering::Relaxed)),
            l(&self.published),
            l(&self.dropped),
            l(&self.received),
            l(&self.reconnects),
            l(&self.control_requests),
        );
    }
}

/// Errors reaching NATS.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(
        "NATS {url}: {why} (is nats-server running there? start one with `nats-server -a 127.0.0.1`)"
    )]
    Connect { url: String, why: String },
    #[error("NATS {url}: {why}")]
    Request { url: String, why: String },
}

/// Connect to `url`, reconnecting with backoff for ever; `stats` follows the connection's state.
/// With `wait`, the first connection must succeed (else an error); without, it is tried in the
/// background and the client is returned at once.
pub async fn connect(
    url: &str,
    name: &str,
    stats: Arc<NatsStats>,
    wait: bool,
) -> Result<async_nats::Client, NatsError> {
    let s2 = stats.clone();
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |ev| {
            let s = s2.clone();
            async move {
                match ev {
                    async_nats::Event::Connected => {
                        if s.connected.swap(true, Ordering::Relaxed) {
                            return;
                        }
                        log::info!("nats: connected");
                    }
                    async_nats::Event::Disconnected => {
                        s.connected.store(false, Ordering::Relaxed);
                        s.reconnects.fetch_add(1, Ordering::Relaxed);
                        log::warn!("nats: disconnected; reconnecting");
                    }
                    other => log::info!("nats: {other}"),
                }
            }
        });
    if !wait {
        opts = opts.retry_on_initial_connect();
    }
    let client = opts.connect(url).await.map_err(|e| NatsError::Connect {
        url: url.to_string(),
        why: e.to_string(),
    })?;
    if client.connection_state() == async_nats::connection::State::Connected {
        stats.connected.store(true, Ordering::Relaxed);
    }
    Ok(client)
}

/// Where control requests from the NATS server at `url` count as coming from: loopback when that
/// server is on this machine.
pub fn transport_peer(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
    };
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback());
    if local {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        // TEST-NET-1: never loopback, never a real peer.
        SocketAddr::from(([192, 0, 2, 1], 0))
    }
}

/// The hub's tap into NATS: queues each message for the publishing task, or drops and counts it.
pub struct Publisher {
    subjects: Subjects,
    tx: mpsc::Sender<(String, Bytes)>,
    stats: Arc<NatsStats>,
    wanted: Arc<Wanted>,
}

/// How long a catalog rig asked for on `idol.<idol>.want` keeps being published.
pub const WANT_TTL: Duration = Duration::from_secs(5);
/// How often a relay asks again for the rigs its clients use (well within [`WANT_TTL`]).
pub const WANT_EVERY: Duration = Duration::from_secs(1);
/// Longest `want` request read; longer ones are ignored.
const MAX_WANT_BYTES: usize = 4096;

/// The catalog rigs someone asked for, and when last.
#[derive(Default)]
struct Wanted(parking_lot::Mutex<Vec<(String, std::time::Instant)>>);

impl Wanted {
    fn wants(&self, rig: &str) -> bool {
        self.0
            .lock()
            .iter()
            .any(|(r, at)| r == rig && at.elapsed() < WANT_TTL)
    }

    /// Take a `want` request's payload (`{"rigs": ["vrm", …]}`); names `known` refuses are
    /// ignored, so the list never holds more than the catalog.
    fn heard(&self, payload: &[u8], known: impl Fn(&str) -> bool) {
        if payload.len() > MAX_WANT_BYTES {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        let Some(rigs) = v["rigs"].as_array() else {
            return;
        };
        let now = std::time::Instant::now();
        let mut w = self.0.lock();
        for name in rigs.iter().filter_map(|r| r.as_str()).filter(|r| known(r)) {
            match w.iter_mut().find(|(r, _)| r == name) {
                Some(e) => e.1 = now,
                None => w.push((name.to_string(), now)),
            }
        }
    }
}

impl Tap for Publisher {
    fn send(&self, topic: Topic<'_>, msg: &Message) {
        let payload = match msg {
            Message::Binary(b) => b.clone(),
            Message::Text(t) => Bytes::copy_from_slice(t.as_str().as_bytes()),
            _ => return,
        };
        if self
            .tx
            .try_send((self.subjects.topic(topic), payload))
            .is_err()
        {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn wants_rig(&self, rig: &str) -> bool {
        self.wanted.wants(rig)
    }
}

/// A publisher for the hub and the task that runs it: create both, give the publisher to
/// [`super::Hub::set_tap`], spawn the task on the server's runtime.
pub fn publisher(opts: &NatsOptions, stats: Arc<NatsStats>) -> (Arc<Publisher>, PublishTask) {
    let (tx, rx) = mpsc::channel(opts.queue.max(16));
    let subjects = Subjects::new(&opts.idol);
    let wanted = Arc::new(Wanted::default());
    (
        Arc::new(Publisher {
            subjects: subjects.clone(),
            tx,
            stats: stats.clone(),
            wanted: wanted.clone(),
        }),
        PublishTask {
            opts: opts.clone(),
            rx,
            stats,
            wanted,
        },
    )
}

/// Messages the publishing task takes off its queue at once.
const PUBLISH_BATCH: usize = 64;

/// The publishing side's task (see [`publisher`]).
pub struct PublishTask {
    opts: NatsOptions,
    rx: mpsc::Receiver<(String, Bytes)>,
    stats: Arc<NatsStats>,
    wanted: Arc<Wanted>,
}

impl PublishTask {
    /// Connect (in the background), then publish the queue, answer `hello` requests and carry out
    /// control requests until the server stops.
    pub async fn run(self, ctx: ConnCtx) {
        let PublishTask {
            opts,
            mut rx,
            stats,
            wanted,
        } = self;
        let client = match connect(&opts.url, "idol serve", stats.clone(), false).await {
            Ok(c) => c,
            Err(e) => {
                log::error!("{e}");
                return;
            }
        };
        let subjects = Subjects::new(&opts.idol);
        // Subscribed before `hello` is: whoever has had a `hello` answer can ask for rigs.
        let want = match client.subscribe(subjects.want()).await {
            Ok(mut sub) => {
                let hub = ctx.hub.clone();
                futures_util::future::Either::Left(async move {
                    while let Some(m) = sub.next().await {
                        wanted.heard(&m.payload, |r| hub.rigs().index(r).is_some());
                    }
                })
            }
            Err(e) => {
                log::error!("nats: cannot subscribe to {}: {e}", subjects.want());
                futures_util::future::Either::Right(std::future::ready(()))
            }
        };
        let publish = {
            let client = client.clone();
            let stats = stats.clone();
            async move {
                // Whatever is queued goes out together (a frame comes in every rig at once): one
                // wake-up of the client's writer and one socket write for all of it.
                let mut batch = Vec::with_capacity(PUBLISH_BATCH);
                while rx.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
                    for (subject, payload) in batch.drain(..) {
                        if client.publish(subject, payload).await.is_ok() {
                            stats.published.fetch_add(1, Ordering::Relaxed);
                        } else {
                            stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        };
        let hello = serve_hello(client.clone(), subjects.hello(), ctx.clone());
        let control = serve_control(client.clone(), subjects.control(), ctx, &opts.url, stats);
        tokio::join!(publish, hello, control, want);
    }
}

/// The session's `hello` as a relay needs it: the client `hello` (clock included) and whether
/// frames are published in every catalog rig (`canonical`).
pub fn snapshot(ctx: &ConnCtx) -> String {
    let info = ctx.hub.info().expect("the hub serves a session");
    let names = ctx.hub.rig_names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let hello = protocol::hello(
        info,
        ctx.upstream.now(),
        &Subscription::default(),
        &names,
        &[],
    );
    let mut v: serde_json::Value = serde_json::from_str(&hello).expect("hello is JSON");
    v["canonical"] = info.canonical.into();
    v.to_string()
}

async fn serve_hello(client: async_nats::Client, subject: String, ctx: ConnCtx) {
    let mut sub = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            log::error!("nats: cannot subscribe to {subject}: {e}");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        if let Some(reply) = msg.reply {
            let _ = client.publish(reply, snapshot(&ctx).into()).await;
        }
    }
}

async fn serve_control(
    client: async_nats::Client,
    subject: String,
    ctx: ConnCtx,
    url: &str,
    stats: Arc<NatsStats>,
) {
    let mut sub = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            log::error!("nats: cannot subscribe to {subject}: {e}");
            return;
        }
    };
    let mut control = RemoteControl::new(ctx, transport_peer(url));
    while let Some(msg) = sub.next().await {
        stats.control_requests.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&msg.payload);
        let replies = control.handle(&text);
        if let Some(reply) = msg.reply {
            for r in replies {
                let _ = client.publish(reply.clone(), r.into()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_peers() {
        let s = Subjects::new("aoi");
        assert_eq!(s.frames("vrm"), "idol.aoi.frames.vrm");
        assert_eq!(s.rig_of("idol.aoi.frames.vrm"), Some("vrm"));
        assert_eq!(s.rig_of("idol.aoi.audio"), None);
        assert_eq!(s.rig_of("idol.aoix.frames.vrm"), None);
        assert_eq!(s.topic(Topic::State), "idol.aoi.state");
        assert!(transport_peer("nats://127.0.0.1:4222").ip().is_loopback());
        assert!(
            transport_peer("nats://u:p@localhost:4222")
                .ip()
                .is_loopback()
        );
        assert!(transport_peer("[::1]:4222").ip().is_loopback());
        assert!(!transport_peer("nats://10.0.0.5:4222").ip().is_loopback());
        assert!(!transport_peer("tls://nats.example:4222").ip().is_loopback());
    }
}
