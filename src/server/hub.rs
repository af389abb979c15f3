//! The fan-out hub: one [`Event`] in (on the conductor thread), one message per subscribed client out,
//! each client behind its own bounded queue.
//!
//! Each event is encoded once per wire form needed (s16 or f32 audio, binary or JSON frames, JSON text)
//! and the bytes are shared by every client's queue. The hub never blocks and never drops a message
//! for a client that keeps up: either a message is queued, or the client is closed.
//!
//! Rigs: a client receives frames in the session's rig (the face solver's weights, sent as they are)
//! or in another rig of the server's [`RigCatalog`]. Frames carry the canonical vector the session's
//! weights came from ([`crate::perform::Frame::canon`]); for each frame, each distinct foreign rig
//! among the subscribers is retargeted once ([`Retargets`], allocation of one weight vector) on
//! first use and encoded once per frame encoding, and those bytes are shared by every client on that
//! rig, exactly like the session rig's. A rig nobody subscribes to costs nothing. A change of rig
//! takes effect atomically with its `ack`: frames queued before the ack are in the old rig, frames
//! after it in the new one.
//!
//! Lag: for every client the hub remembers when each queued message was enqueued; the connection's
//! writer counts the messages it has written. The age of the oldest message not yet written is the
//! client's lag; beyond `max_lag` (or with a full queue) the client is closed with a reason, and only
//! that client: the others' queues are untouched.
//!
//! Taps: besides clients the hub feeds at most one [`Tap`] (the NATS publisher, [`super::nats`]),
//! every stream in one fixed wire form (f32 audio, binary frames in the session's rig and, when the
//! frames carry canonical vectors, in every catalog rig), sharing the bytes made for clients. A tap
//! must not block: it queues or drops.
//!
//! Relays: [`Hub::broadcast_with`] fans out messages that arrive already encoded (an `idol relay`
//! fed from NATS): the caller says what each subscription receives.

use super::protocol::{self, AudioEncoding, FrameEncoding, Subscription};
use super::rigs::RigCatalog;
use crate::face::Retargets;
use crate::perform::{Event, FrameEvent, Metrics, SessionInfo, Sink};
use axum::body::Bytes;
use axum::extract::ws::Message;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Close code for a client closed for falling behind (private-use range).
pub const CLOSE_LAGGING: u16 = 4008;
/// Close code when the server already has `max_clients`.
pub const CLOSE_FULL: u16 = 4013;

/// Where a tapped message belongs: one NATS subject per stream, frames one per rig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    Audio,
    Frames(&'a str),
    Captions,
    Cues,
    /// `state`, `asked` and stage `error` events.
    State,
}

/// One more subscriber of the hub, taking every stream (see the module docs). Called on the
/// conductor thread: it must return at once.
pub trait Tap: Send + Sync {
    fn send(&self, topic: Topic<'_>, msg: &Message);
    /// Whether frames in catalog rig `rig` (not the session's: those always go) are wanted now;
    /// the hub retargets and sends only those.
    fn wants_rig(&self, rig: &str) -> bool {
        let _ = rig;
        true
    }
}

/// The wire form a [`Tap`] receives: everything, f32 audio, binary frames.
pub const TAP_FORM: Subscription = Subscription {
    audio: true,
    frames: true,
    captions: true,
    cues: true,
    state: true,
    audio_encoding: AudioEncoding::F32,
    frame_encoding: FrameEncoding::Binary,
    rig: None,
};

/// Why the server closes a connection: a WebSocket close code and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<Message>,
    sub: Subscription,
    written: Arc<AtomicU64>,
    enqueued: u64,
    pending: VecDeque<Instant>,
    close: watch::Sender<Option<CloseReason>>,
}

/// The receiving end a connection's writer drains.
pub struct ClientLink {
    pub id: u64,
    pub rx: mpsc::Receiver<Message>,
    /// Messages written to the socket so far (the writer increments it).
    pub written: Arc<AtomicU64>,
    /// Set when the hub closes the client; the sender is dropped when the client is unregistered.
    pub close: watch::Receiver<Option<CloseReason>>,
    /// The hub's count of closing connections (see [`Lingering`]).
    pub lingering: Arc<AtomicUsize>,
}

/// A connection that left the hub but is still writing its close frame (a stalled client gets
/// [`super::conn::CLOSE_LINGER`] to read it). Counted against `max_clients` while it lives, so
/// clients that stop reading cannot pile up closing connections beyond the limit.
pub struct Lingering(Arc<AtomicUsize>);

impl Lingering {
    pub fn enter(count: &Arc<AtomicUsize>) -> Lingering {
        count.fetch_add(1, Ordering::AcqRel);
        Lingering(count.clone())
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// See the module docs.
pub struct Hub {
    clients: Mutex<Vec<Slot>>,
    /// Connections closed by the hub that are still flushing their close frame.
    lingering: Arc<AtomicUsize>,
    next_id: AtomicU64,
    info: OnceLock<Arc<SessionInfo>>,
    now: OnceLock<Box<dyn Fn() -> u64 + Send + Sync>>,
    max_clients: usize,
    max_lag: Duration,
    capacity: usize,
    metrics: Arc<Metrics>,
    rigs: Arc<RigCatalog>,
    tap: OnceLock<Arc<dyn Tap>>,
    /// Where else clients may get this session (sibling relays), for `hello`'s `alternates`.
    alternates: OnceLock<Box<dyn Fn() -> Vec<String> + Send + Sync>>,
    /// Signalled when a client's subscription names a rig (see [`Hub::rigs_in_use`]).
    rigs_changed: tokio::sync::Notify,
}

/// Why a `subscribe` naming a rig was refused (`bad_rig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RigRefusal {
    pub message: String,
    /// The rig names the client may use instead.
    pub available: Vec<String>,
}

impl Hub {
    /// `capacity` bounds each client's queue (in messages); size it to hold well over `max_lag` of
    /// traffic so that lag, not capacity, decides.
    pub fn new(
        max_clients: usize,
        max_lag: Duration,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Hub {
            clients: Mutex::new(Vec::new()),
            lingering: Arc::default(),
            next_id: AtomicU64::new(1),
            info: OnceLock::new(),
            now: OnceLock::new(),
            max_clients,
            max_lag,
            capacity: capacity.max(16),
            metrics,
            rigs: Arc::new(RigCatalog::builtin()),
            tap: OnceLock::new(),
            alternates: OnceLock::new(),
            rigs_changed: tokio::sync::Notify::new(),
        }
    }

    /// The WebSocket URLs each new client's `hello` lists as `alternates` (set once; a relay's
    /// live sibling relays).
    pub fn set_alternates(&self, f: impl Fn() -> Vec<String> + Send + Sync + 'static) {
        let _ = self.alternates.set(Box::new(f));
    }

    /// Feed `tap` every event from now on (once; a second tap is ignored).
    pub fn set_tap(&self, tap: Arc<dyn Tap>) {
        let _ = self.tap.set(tap);
    }

    /// The rig catalog clients may subscribe to besides the session's rig.
    pub fn rigs(&self) -> &Arc<RigCatalog> {
        &self.rigs
    }

    /// The rigs clients may subscribe to besides the session's (default: the built-ins).
    pub fn with_rigs(mut self, rigs: RigCatalog) -> Self {
        self.rigs = Arc::new(rigs);
        self
    }

    /// The rig names a client may subscribe to: the session's first, then the catalog's (only the
    /// session's when its frames carry no canonical vectors to retarget).
    pub fn rig_names(&self) -> Vec<String> {
        let Some(info) = self.info.get() else {
            return vec![];
        };
        let mut out = vec![info.rig.clone()];
        if info.canonical {
            out.extend(
                self.rigs
                    .names()
                    .into_iter()
                    .filter(|n| *n != info.rig)
                    .map(str::to_string),
            );
        }
        out
    }

    /// The subscription value for rig `name`: `None` for the session's rig, else its catalog index.
    pub fn resolve_rig(&self, name: &str) -> Result<Option<u16>, RigRefusal> {
        let info = self.info.get().expect("the hub serves a session");
        if name == info.rig {
            return Ok(None);
        }
        let available = self.rig_names();
        if !info.canonical {
            return Err(RigRefusal {
                message: format!(
                    "this session's face gives only its own rig {:?} (its frames carry no canonical channels to retarget)",
                    info.rig
                ),
                available,
            });
        }
        match self.rigs.index(name) {
            Some(i) => Ok(Some(i as u16)),
            None => Err(RigRefusal {
                message: format!(
                    "unknown rig {name:?}: use one of {} (rig files are offered from the server's rigs/ directory by name; paths are not accepted)",
                    available.join(", ")
                ),
                available,
            }),
        }
    }

    /// The rig a subscription receives frames in: its name and ordered channel names.
    pub fn rig_of(&self, sub: &Subscription) -> (String, Vec<String>) {
        match sub.rig.and_then(|i| self.rigs.get(i as usize)) {
            Some((name, rig)) => (
                name.to_string(),
                rig.channel_names().map(str::to_string).collect(),
            ),
            None => {
                let info = self.info.get().expect("the hub serves a session");
                (info.rig.clone(), info.channels.clone())
            }
        }
    }

    /// The session this hub serves (set once, before clients connect) and its clock.
    pub fn set_session(
        &self,
        info: Arc<SessionInfo>,
        now: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let _ = self.info.set(info);
        let _ = self.now.set(Box::new(now));
    }

    pub fn info(&self) -> Option<&Arc<SessionInfo>> {
        self.info.get()
    }

    pub fn len(&self) -> usize {
        self.clients.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add a client; its queue starts with `hello`. `Err` when the server is full.
    pub fn register(&self) -> Result<ClientLink, CloseReason> {
        let info = self.info.get().expect("the hub serves a session").clone();
        let now = self.now.get().map_or(0, |f| f());
        let mut clients = self.clients.lock();
        if clients.len() + self.lingering.load(Ordering::Acquire) >= self.max_clients {
            return Err(CloseReason {
                code: CLOSE_FULL,
                reason: format!("server full ({} clients)", self.max_clients),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.capacity);
        let (close_tx, close_rx) = watch::channel(None);
        let written = Arc::new(AtomicU64::new(0));
        let sub = Subscription::default();
        let mut slot = Slot {
            id,
            tx,
            sub,
            written: written.clone(),
            enqueued: 0,
            pending: VecDeque::new(),
            close: close_tx,
        };
        let names = self.rig_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let alternates = self.alternates.get().map(|f| f()).unwrap_or_default();
        let hello = Message::Text(protocol::hello(&info, now, &sub, &names, &alternates).into());
        let _ = self.push(&mut slot, hello, Instant::now());
        clients.push(slot);
        self.metrics.clients_total.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .clients_connected
            .fetch_add(1, Ordering::Relaxed);
        Ok(ClientLink {
            id,
            rx,
            written,
            close: close_rx,
            lingering: self.lingering.clone(),
        })
    }

    /// Remove a client (its connection ended).
    pub fn unregister(&self, id: u64) {
        let mut clients = self.clients.lock();
        if let Some(i) = clients.iter().position(|s| s.id == id) {
            clients.swap_remove(i);
            self.metrics
                .clients_connected
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Close a client with a reason (a message the socket layer could not take).
    pub fn close(&self, id: u64, reason: CloseReason) {
        let mut clients = self.clients.lock();
        if let Some(i) = clients.iter().position(|s| s.id == id) {
            self.drop_at(&mut clients, i, reason);
        }
    }

    pub fn subscription(&self, id: u64) -> Option<Subscription> {
        self.clients
            .lock()
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.sub)
    }

    pub fn set_subscription(&self, id: u64, sub: Subscription) {
        if let Some(s) = self.clients.lock().iter_mut().find(|s| s.id == id) {
            s.sub = sub;
        }
        self.rig_named(&sub);
    }

    /// The catalog rigs (not the session's) clients take frames in, in catalog order.
    pub fn rigs_in_use(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .clients
            .lock()
            .iter()
            .filter(|s| s.sub.frames)
            .filter_map(|s| s.sub.rig)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Wait until a client's subscription names a catalog rig (a permit is kept when nobody
    /// waits, so a change between two waits is not missed).
    pub async fn rig_named_since(&self) {
        self.rigs_changed.notified().await
    }

    fn rig_named(&self, sub: &Subscription) {
        if sub.frames && sub.rig.is_some() {
            self.rigs_changed.notify_one();
        }
    }

    /// Change a client's subscription and queue `reply` (its `ack`) in one step, so that every
    /// message queued after the reply follows the new subscription and none before it does.
    pub fn resubscribe(&self, id: u64, sub: Subscription, reply: Message) {
        let mut clients = self.clients.lock();
        let Some(i) = clients.iter().position(|s| s.id == id) else {
            return;
        };
        clients[i].sub = sub;
        if let Err(reason) = self.push(&mut clients[i], reply, Instant::now()) {
            self.drop_at(&mut clients, i, reason);
        }
        drop(clients);
        self.rig_named(&sub);
    }

    /// Queue a reply for one client.
    pub fn send_to(&self, id: u64, msg: Message) {
        let mut clients = self.clients.lock();
        let Some(i) = clients.iter().position(|s| s.id == id) else {
            return;
        };
        if let Err(reason) = self.push(&mut clients[i], msg, Instant::now()) {
            self.drop_at(&mut clients, i, reason);
        }
    }

    /// Remove client `i` and close it with `reason`.
    fn drop_at(&self, clients: &mut Vec<Slot>, i: usize, reason: CloseReason) {
        let slot = clients.swap_remove(i);
        log::info!("closing client {}: {}", slot.id, reason.reason);
        self.metrics.clients_dropped.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .clients_connected
            .fetch_sub(1, Ordering::Relaxed);
        let _ = slot.close.send(Some(reason));
    }

    fn push(&self, slot: &mut Slot, msg: Message, now: Instant) -> Result<(), CloseReason> {
        let written = slot.written.load(Ordering::Acquire);
        while slot.enqueued - (slot.pending.len() as u64) < written {
            slot.pending.pop_front();
        }
        if let Some(oldest) = slot.pending.front() {
            let lag = now.saturating_duration_since(*oldest);
            if lag > self.max_lag {
                return Err(CloseReason {
                    code: CLOSE_LAGGING,
                    reason: format!(
                        "lagging: {} ms behind (the limit is {} ms); reconnect to resume",
                        lag.as_millis(),
                        self.max_lag.as_millis()
                    ),
                });
            }
        }
        match slot.tx.try_send(msg) {
            Ok(()) => {
                slot.enqueued += 1;
                slot.pending.push_back(now);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(CloseReason {
                code: CLOSE_LAGGING,
                reason: format!(
                    "lagging: {} messages queued; reconnect to resume",
                    self.capacity
                ),
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(CloseReason {
                code: 1001,
                reason: "gone".into(),
            }),
        }
    }

    /// Send one event to every subscribed client (and the tap).
    pub fn broadcast(&self, ev: &Event) {
        let session_rig = self.info.get().map_or("", |i| i.rig.as_str());
        let mut enc = Encoded::new(session_rig, &self.rigs, ev);
        self.broadcast_with(|sub| enc.for_sub(ev, sub));
        if let Some(tap) = self.tap.get() {
            self.tap_event(tap.as_ref(), ev, &mut enc);
        }
        if enc.retargets.count > 0 {
            self.metrics
                .frames_retargeted
                .fetch_add(enc.retargets.count, Ordering::Relaxed);
        }
    }

    /// The tap's messages of one event, from the same encodings the clients got.
    fn tap_event(&self, tap: &dyn Tap, ev: &Event, enc: &mut Encoded) {
        let topic = match ev {
            Event::Audio(_) => Topic::Audio,
            Event::Frame(_) => {
                let Some(info) = self.info.get() else { return };
                if let Some(m) = enc.for_sub(ev, &TAP_FORM) {
                    tap.send(Topic::Frames(&info.rig), &m);
                }
                if info.canonical {
                    for (i, name) in self.rigs.names().into_iter().enumerate() {
                        if name == info.rig || !tap.wants_rig(name) {
                            continue;
                        }
                        let sub = Subscription {
                            rig: Some(i as u16),
                            ..TAP_FORM
                        };
                        if let Some(m) = enc.for_sub(ev, &sub) {
                            tap.send(Topic::Frames(name), &m);
                        }
                    }
                }
                return;
            }
            Event::Caption(_) => Topic::Captions,
            Event::Cue(_) => Topic::Cues,
            Event::State(_) | Event::Asked(_) | Event::Error { .. } => Topic::State,
        };
        if let Some(m) = enc.for_sub(ev, &TAP_FORM) {
            tap.send(topic, &m);
        }
    }

    /// Send to every client what `msg_for` gives for its subscription (`None`: nothing). Messages
    /// are cloned per client: make them once (`Bytes` and `Utf8Bytes` share their buffers).
    pub fn broadcast_with(&self, mut msg_for: impl FnMut(&Subscription) -> Option<Message>) {
        let now = Instant::now();
        let mut clients = self.clients.lock();
        let mut i = 0;
        while i < clients.len() {
            let msg = msg_for(&clients[i].sub);
            let res = match msg {
                Some(m) => self.push(&mut clients[i], m, now),
                None => Ok(()),
            };
            match res {
                Ok(()) => i += 1,
                Err(reason) => {
                    self.drop_at(&mut clients, i, reason);
                }
            }
        }
    }
}

/// A frame's wire forms in one foreign rig, made on first use.
struct RigFrame {
    rig: u16,
    bin: Option<Message>,
    json: Option<Message>,
}

/// The wire forms of one event, made on first use.
struct Encoded<'a> {
    session_rig: &'a str,
    rigs: &'a RigCatalog,
    s16: Option<Message>,
    f32: Option<Message>,
    frame_bin: Option<Message>,
    frame_json: Option<Message>,
    /// The frame's weights in the foreign rigs in use, each retargeted once.
    retargets: Retargets<'a, 'a>,
    /// Per foreign rig in use (a handful at most: a linear search beats a map).
    foreign: Vec<RigFrame>,
    text: Option<Option<Message>>,
}

impl<'a> Encoded<'a> {
    fn new(session_rig: &'a str, rigs: &'a RigCatalog, ev: &'a Event) -> Self {
        let canon = match ev {
            Event::Frame(f) => f.frame.canon.as_deref(),
            _ => None,
        };
        Encoded {
            session_rig,
            rigs,
            s16: None,
            f32: None,
            frame_bin: None,
            frame_json: None,
            retargets: Retargets::new(canon),
            foreign: Vec::new(),
            text: None,
        }
    }

    /// Frame `f` in catalog rig `rig`, in encoding `enc`: retargeted at most once per event; `None`
    /// when the frame carries no canonical vector (then nothing is sent in another rig).
    fn foreign_frame(&mut self, f: &FrameEvent, rig: u16, enc: FrameEncoding) -> Option<Message> {
        let rigs = self.rigs;
        let (name, r) = rigs.get(rig as usize)?;
        let w = self.retargets.get(r)?;
        let k = match self.foreign.iter().position(|x| x.rig == rig) {
            Some(k) => k,
            None => {
                self.foreign.push(RigFrame {
                    rig,
                    bin: None,
                    json: None,
                });
                self.foreign.len() - 1
            }
        };
        let rf = &mut self.foreign[k];
        Some(match enc {
            FrameEncoding::Binary => rf
                .bin
                .get_or_insert_with(|| {
                    Message::Binary(Bytes::from(protocol::frame_binary_weights(f, w)))
                })
                .clone(),
            FrameEncoding::Json => rf
                .json
                .get_or_insert_with(|| Message::Text(protocol::frame_json(f, w, name).into()))
                .clone(),
        })
    }

    fn for_sub(&mut self, ev: &Event, sub: &Subscription) -> Option<Message> {
        match ev {
            Event::Audio(a) if sub.audio => Some(match sub.audio_encoding {
                AudioEncoding::S16 => self
                    .s16
                    .get_or_insert_with(|| {
                        Message::Binary(Bytes::from(protocol::audio_binary(a, AudioEncoding::S16)))
                    })
                    .clone(),
                AudioEncoding::F32 => self
                    .f32
                    .get_or_insert_with(|| {
                        Message::Binary(Bytes::from(protocol::audio_binary(a, AudioEncoding::F32)))
                    })
                    .clone(),
            }),
            Event::Frame(f) if sub.frames => match (sub.rig, sub.frame_encoding) {
                (Some(rig), enc) => self.foreign_frame(f, rig, enc),
                (None, FrameEncoding::Binary) => Some(
                    self.frame_bin
                        .get_or_insert_with(|| {
                            Message::Binary(Bytes::from(protocol::frame_binary(f)))
                        })
                        .clone(),
                ),
                (None, FrameEncoding::Json) => {
                    let rig = self.session_rig;
                    Some(
                        self.frame_json
                            .get_or_insert_with(|| {
                                Message::Text(protocol::frame_json(f, &f.frame.weights, rig).into())
                            })
                            .clone(),
                    )
                }
            },
            Event::Caption(_) if sub.captions => self.text(ev),
            Event::Cue(_) if sub.cues => self.text(ev),
            Event::State(_) | Event::Asked(_) if sub.state => self.text(ev),
            Event::Error { .. } => self.text(ev),
            _ => None,
        }
    }

    fn text(&mut self, ev: &Event) -> Option<Message> {
        self.text
            .get_or_insert_with(|| protocol::event_json(ev).map(|t| Message::Text(t.into())))
            .clone()
    }
}

/// The hub as a pipeline sink.
pub struct HubSink(pub Arc<Hub>);

impl Sink for HubSink {
    fn event(&mut self, event: &Event) {
        self.0.broadcast(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::{EyeGaze, Frame, Rig, canon};
    use crate::perform::FrameEvent;
    use crate::server::protocol::{Binary, parse_binary};
    use crate::time::SampleTime;

    fn new_hub(canonical: bool) -> (Hub, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(16, Duration::from_secs(2), 256, metrics.clone());
        let rig = Rig::builtin("arkit52").unwrap();
        hub.set_session(
            Arc::new(SessionInfo {
                session: "test".into(),
                rate: 22050,
                fps: 60,
                rig: "arkit52".into(),
                channels: rig.channel_names().map(str::to_string).collect(),
                canonical,
                lead: 0,
            }),
            || 0,
        );
        (hub, metrics)
    }

    /// A frame whose session weights are the arkit52 retargeting of a canonical vector with the jaw
    /// open and the `aa` viseme on.
    fn frame(at: u64, with_canon: bool) -> Event {
        let mut c = [0.0f32; canon::COUNT];
        c[canon::ak::jawOpen] = 0.6;
        c[canon::index("viseme_aa").unwrap()] = 0.8;
        c[canon::BLINK] = 0.25;
        let rig = Rig::builtin("arkit52").unwrap();
        Event::Frame(FrameEvent {
            utterance: 1,
            frame: Frame {
                canon: with_canon.then(|| Box::new(c)),
                ..Frame::new(
                    SampleTime(at),
                    rig.retargeted(&c),
                    glam::Quat::IDENTITY,
                    [EyeGaze::default(); 2],
                )
            },
        })
    }

    fn drain(link: &mut ClientLink) -> Vec<Message> {
        let mut out = vec![];
        while let Ok(m) = link.rx.try_recv() {
            out.push(m);
        }
        out
    }

    fn sub_on(hub: &Hub, link: &ClientLink, rig: &str, enc: FrameEncoding) {
        let sub = Subscription {
            rig: hub.resolve_rig(rig).unwrap(),
            frame_encoding: enc,
            ..Subscription::default()
        };
        hub.set_subscription(link.id, sub);
    }

    #[test]
    fn each_rig_in_use_is_retargeted_once_per_frame_and_its_bytes_shared() {
        let (hub, metrics) = new_hub(true);
        let mut links: Vec<ClientLink> = (0..5).map(|_| hub.register().unwrap()).collect();
        sub_on(&hub, &links[1], "vrm", FrameEncoding::Binary);
        sub_on(&hub, &links[2], "vrm", FrameEncoding::Binary);
        sub_on(&hub, &links[3], "vrm", FrameEncoding::Json);
        sub_on(&hub, &links[4], "oculus15", FrameEncoding::Binary);
        for l in &mut links {
            drain(l);
        }
        hub.broadcast(&frame(735, true));
        // Two foreign rigs in use: two retargetings for five clients.
        assert_eq!(metrics.frames_retargeted.load(Ordering::Relaxed), 2);
        let got: Vec<Message> = links.iter_mut().map(|l| drain(l).remove(0)).collect();
        let bin = |m: &Message| match m {
            Message::Binary(b) => b.clone(),
            other => panic!("{other:?}"),
        };
        let (b1, b2) = (bin(&got[1]), bin(&got[2]));
        assert_eq!(
            b1.as_ptr(),
            b2.as_ptr(),
            "one encoding shared by both vrm clients"
        );
        let vrm = Rig::builtin("vrm").unwrap();
        let Event::Frame(f) = frame(735, true) else {
            unreachable!()
        };
        let want = vrm.retargeted(f.frame.canon.as_ref().unwrap());
        match parse_binary(&b1).unwrap() {
            Binary::Frame {
                sample, weights, ..
            } => {
                assert_eq!(sample, 735);
                assert_eq!(weights, want);
                assert!(weights[vrm.channel_index("aa").unwrap()] > 0.5);
            }
            other => panic!("{other:?}"),
        }
        match parse_binary(&bin(&got[0])).unwrap() {
            Binary::Frame { weights, .. } => assert_eq!(weights, f.frame.weights),
            other => panic!("{other:?}"),
        }
        match parse_binary(&bin(&got[4])).unwrap() {
            Binary::Frame { weights, .. } => assert_eq!(weights.len(), 15),
            other => panic!("{other:?}"),
        }
        let Message::Text(t) = &got[3] else {
            panic!("JSON frame")
        };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["rig"].as_str()),
            (Some("frame"), Some("vrm"))
        );
        let w: Vec<f32> = serde_json::from_value(v["weights"].clone()).unwrap();
        assert_eq!(w, want);
        // Nobody on a foreign rig: nothing is retargeted.
        for l in &links[1..] {
            hub.set_subscription(l.id, Subscription::default());
        }
        hub.broadcast(&frame(1102, true));
        assert_eq!(metrics.frames_retargeted.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn closing_connections_count_against_max_clients_until_gone() {
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(1, Duration::from_secs(2), 64, metrics);
        let (full, _) = new_hub(false);
        hub.set_session(full.info().unwrap().clone(), || 0);
        let link = hub.register().unwrap();
        hub.close(
            link.id,
            CloseReason {
                code: CLOSE_LAGGING,
                reason: "lagging".into(),
            },
        );
        // Its writer is still flushing the close frame to a client that stopped reading.
        let lingering = Lingering::enter(&link.lingering);
        let refused = hub.register().err().expect("full while it lingers");
        assert_eq!(refused.code, CLOSE_FULL);
        drop(lingering);
        assert!(hub.register().is_ok(), "its slot is free once it is gone");
    }

    #[test]
    fn rigs_resolve_by_name_only_and_need_canonical_frames() {
        let (hub, _) = new_hub(true);
        assert_eq!(hub.resolve_rig("arkit52"), Ok(None));
        assert_eq!(hub.resolve_rig("vrm"), Ok(Some(1)));
        let e = hub.resolve_rig("rigs/vrm.toml").unwrap_err();
        assert_eq!(e.available, ["arkit52", "vrm", "live2d", "oculus15"]);
        assert!(e.message.contains("unknown rig"), "{}", e.message);
        let (name, channels) = hub.rig_of(&Subscription {
            rig: Some(3),
            ..Subscription::default()
        });
        assert_eq!((name.as_str(), channels.len()), ("oculus15", 15));
        let (fake, _) = new_hub(false);
        assert_eq!(fake.rig_names(), ["arkit52"]);
        let e = fake.resolve_rig("vrm").unwrap_err();
        assert!(e.message.contains("only its own rig"), "{}", e.message);
    }

    #[test]
    fn a_resubscribe_switches_rig_exactly_at_its_ack() {
        let (hub, _) = new_hub(true);
        let mut link = hub.register().unwrap();
        drain(&mut link);
        hub.broadcast(&frame(100, true));
        let sub = Subscription {
            rig: hub.resolve_rig("live2d").unwrap(),
            ..Subscription::default()
        };
        hub.resubscribe(link.id, sub, Message::Text("ack".into()));
        hub.broadcast(&frame(200, true));
        let got = drain(&mut link);
        assert_eq!(got.len(), 3);
        let n = |m: &Message| match m {
            Message::Binary(b) => match parse_binary(b).unwrap() {
                Binary::Frame { weights, .. } => weights.len(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        assert_eq!(n(&got[0]), 52);
        assert_eq!(got[1], Message::Text("ack".into()));
        assert_eq!(n(&got[2]), Rig::builtin("live2d").unwrap().len());
    }
}
