//! One client connection: a writer that drains the client's hub queue into the socket, and a reader
//! that parses, authorizes and rate-limits the client's requests.
//!
//! Both halves are generic over `futures` `Sink`/`Stream` of WebSocket [`Message`]s, so unit tests
//! drive them with channels and an injected peer address (the way axum's websocket testing example
//! does); the server passes the two halves of an upgraded socket.
//!
//! Rules: a text message longer than `max_message_bytes`, malformed JSON, an unknown `type`, a bad
//! field, a request over the rate limit, or a control request without the token from off loopback,
//! each get an `error` and the connection stays. Binary messages from clients get an `error` too.
//! What the socket layer refuses closes the connection with the code its error variant calls for
//! ([`ReadError`]: 1002 protocol violations, 1007 invalid UTF-8, 1009 too big).

use super::hub::{ClientLink, CloseReason, Hub, Lingering};
use super::protocol::{self, ClientMsg, StreamKind};
use crate::perform::{FaceControl, Metrics, PerformHandle, StageError};
use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a closing connection may take to flush its close frame (or, after the server's close
/// frame, to answer it) when it is not stuck behind a backlog.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a client the server closes (lagging, or a refused message) has to read what is ahead of
/// its close frame and the close frame itself; then its TCP connection is dropped.
pub const CLOSE_LINGER: Duration = Duration::from_secs(30);

/// A close frame's reason is at most 123 bytes (RFC 6455: control payloads are at most 125).
const MAX_CLOSE_REASON: usize = 123;

/// Per-connection limits and the control token.
#[derive(Debug, Clone)]
pub struct ConnPolicy {
    /// The control token (`None`: control is refused off loopback).
    pub token: Option<String>,
    /// The name of the environment variable holding it, for error messages.
    pub token_env: String,
    /// Largest text message accepted and answered; larger ones get `too_large`.
    pub max_message_bytes: usize,
    /// Token bucket: sustained requests per second.
    pub rate_per_sec: f64,
    /// Token bucket: burst size.
    pub burst: f64,
    /// Renders the scripts of `perform` messages (`None`: `perform` is refused as unsupported).
    pub scripts: Option<crate::script::live::ScriptRenderer>,
    /// How long a `perform` and a `say` may run: what a message fixes itself (a script's gaps and
    /// breaks, a `say`'s breaks) is checked on arrival and refused with `too_long`.
    pub budget: crate::budget::Budget,
}

impl Default for ConnPolicy {
    fn default() -> Self {
        ConnPolicy {
            token: None,
            token_env: "IDOL_TOKEN".into(),
            max_message_bytes: 16 * 1024,
            rate_per_sec: 10.0,
            burst: 30.0,
            scripts: None,
            budget: crate::budget::Budget::default(),
        }
    }
}

/// A performance on another machine that connections drive through a transport (an `idol relay`
/// forwards its clients' `chat`, `say` and `interrupt` over NATS to the `idol serve` publishing).
pub trait RemoteUpstream: Send + Sync {
    /// Carry a control request (JSON text, already read and authorized here) to the performance;
    /// `done` gets the reply (an `ack` or `error` JSON text).
    fn forward(&self, request: String, done: Box<dyn FnOnce(String) + Send>);
    /// The performance's session clock, in samples.
    fn now(&self) -> u64;
    fn metrics(&self) -> &Arc<Metrics>;
}

/// What connections drive: the performance in this process, or one elsewhere.
#[derive(Clone)]
pub enum Upstream {
    Local(PerformHandle),
    Remote(Arc<dyn RemoteUpstream>),
}

impl Upstream {
    pub fn metrics(&self) -> &Metrics {
        match self {
            Upstream::Local(h) => h.metrics(),
            Upstream::Remote(r) => r.metrics(),
        }
    }

    pub fn now(&self) -> u64 {
        match self {
            Upstream::Local(h) => h.now().get(),
            Upstream::Remote(r) => r.now(),
        }
    }

    /// The local performance (`None` for a remote one).
    pub fn local(&self) -> Option<&PerformHandle> {
        match self {
            Upstream::Local(h) => Some(h),
            Upstream::Remote(_) => None,
        }
    }
}

/// What a connection shares with the server.
#[derive(Clone)]
pub struct ConnCtx {
    pub hub: Arc<Hub>,
    pub upstream: Upstream,
    pub policy: Arc<ConnPolicy>,
    /// Viewer playback statistics reported with `stats`, newest last (kept short).
    pub stats: Arc<parking_lot::Mutex<Vec<serde_json::Value>>>,
}

/// Serve one connection until either side ends it. `peer` decides whether control requests need the
/// token; `query_token` is the `?token=` of the upgrade request, if any.
pub async fn serve_connection<S, R, E>(
    mut sink: S,
    mut stream: R,
    peer: SocketAddr,
    query_token: Option<String>,
    ctx: ConnCtx,
) where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: ReadError,
{
    let link = match ctx.hub.register() {
        Ok(link) => link,
        Err(reason) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close_msg(&reason))).await;
            return;
        }
    };
    let id = link.id;
    let writer = write_loop(sink, link);
    tokio::pin!(writer);
    let mut reader = Reader {
        ctx: ctx.clone(),
        id,
        peer,
        query_token,
        bucket: ctx.policy.burst,
        refilled: Instant::now(),
        out: None,
    };
    let server_closed = {
        let read = reader.run(&mut stream);
        tokio::pin!(read);
        tokio::select! {
            _ = &mut writer => true,
            _ = &mut read => false,
        }
    };
    ctx.hub.unregister(id);
    if server_closed {
        // The close frame is out: read (and ignore) what the client still sends until its close
        // reply, so the socket is not reset under data the client has yet to read.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    } else {
        writer.await;
    }
}

/// The close frame for `r`; the reason is cut (at a character boundary) to the 123 bytes a close
/// frame can carry.
fn close_msg(r: &CloseReason) -> Message {
    let mut end = r.reason.len().min(MAX_CLOSE_REASON);
    while !r.reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code: r.code,
        reason: r.reason[..end].to_string().into(),
    }))
}

async fn closed(rx: &mut tokio::sync::watch::Receiver<Option<CloseReason>>) {
    let _ = rx.wait_for(|r| r.is_some()).await;
}

/// Drain the client's queue into the socket, counting what was written, until the hub closes the
/// client (then send the close frame with the reason) or the client goes away.
///
/// The close frame has priority over the backlog: once the hub closes the client, nothing more of
/// its queue is written (a batch stuck on a client that stopped reading is abandoned between
/// messages), so the close frame goes right behind the bytes the socket layer already holds. A
/// client that resumes reading within [`CLOSE_LINGER`] reads those and then the close frame with
/// its code and reason; one that does not is dropped then. Closing connections count against
/// `max_clients` until they are gone ([`Lingering`]), so stalled clients cannot pile up.
pub async fn write_loop<S>(mut sink: S, mut link: ClientLink)
where
    S: Sink<Message> + Unpin,
{
    loop {
        tokio::select! {
            biased;
            _ = closed(&mut link.close) => break,
            m = link.rx.recv() => {
                let Some(m) = m else { break };
                // Write what is queued in one go (one flush, not one per message).
                let mut batch = vec![m];
                while batch.len() < 64 {
                    match link.rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                let n = batch.len() as u64;
                let send = async {
                    for m in batch {
                        sink.feed(m).await?;
                    }
                    sink.flush().await
                };
                let done = tokio::select! {
                    r = send => Some(r.is_ok()),
                    _ = closed(&mut link.close) => None,
                };
                match done {
                    Some(true) => {
                        link.written.fetch_add(n, Ordering::Release);
                    }
                    // The socket refused the message: gone, or closing (a close frame from the
                    // client arrived meanwhile: its reply still has to be flushed, below).
                    Some(false) => break,
                    // Closed while this batch was stuck: the rest of it is dropped (a message is
                    // either wholly in the socket layer's buffer or not at all).
                    None => break,
                }
            }
        }
    }
    let reason = link.close.borrow().clone();
    let grace = if reason.is_some() {
        CLOSE_LINGER
    } else {
        CLOSE_GRACE
    };
    // Free the queue now: only the bytes ahead of the close frame stay while it lingers.
    drop(link.rx);
    let _linger = Lingering::enter(&link.lingering);
    let _ = tokio::time::timeout(grace, async {
        if let Some(r) = &reason {
            let _ = sink.send(close_msg(r)).await;
        }
        // Then flush and close: this also writes the socket layer's own answer to a close frame
        // from the client (after which sending a close frame of ours is refused).
        let _ = sink.close().await;
    })
    .await;
}

struct Reader {
    ctx: ConnCtx,
    id: u64,
    peer: SocketAddr,
    query_token: Option<String>,
    bucket: f64,
    refilled: Instant,
    /// Replies go here instead of the client's hub queue ([`RemoteControl`]).
    out: Option<Vec<String>>,
}

/// The control requests a transport without a connection brings (NATS's `idol.<idol>.control`):
/// `chat`, `say` and `interrupt`, read, limited, authorized and carried out by the same code as a
/// WebSocket client's, with one rate limit for the whole transport. `peer` stands for where the
/// requests come from: a loopback address when the transport is on this machine (no token needed,
/// as for a loopback WebSocket client), else any other address (the token is needed).
pub struct RemoteControl {
    reader: Reader,
}

/// The request types [`RemoteControl`] carries out.
pub const REMOTE_TYPES: [&str; 3] = ["chat", "say", "interrupt"];

impl RemoteControl {
    pub fn new(ctx: ConnCtx, peer: SocketAddr) -> Self {
        let bucket = ctx.policy.burst;
        RemoteControl {
            reader: Reader {
                ctx,
                id: 0,
                peer,
                query_token: None,
                bucket,
                refilled: Instant::now(),
                out: Some(Vec::new()),
            },
        }
    }

    /// Carry out one request; the replies (`ack` or `error`) it causes.
    pub fn handle(&mut self, text: &str) -> Vec<String> {
        let kind = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string));
        match kind {
            Some(k) if !REMOTE_TYPES.contains(&k.as_str()) => {
                let id = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("id").cloned());
                self.reader.error(
                    "unsupported",
                    &format!(
                        "{k:?} is not taken here: send {} (subscribe with the stream's subjects or a WebSocket)",
                        REMOTE_TYPES.join(", ")
                    ),
                    id.as_ref(),
                );
            }
            _ => self.reader.text(text),
        }
        self.reader.out.replace(Vec::new()).unwrap_or_default()
    }
}

/// Constant-time string comparison (the token must not leak through timing).
pub(crate) fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A read error of a connection's transport, classified: what the connection should be closed with.
pub trait ReadError {
    /// The close code and reason for a message or frame the WebSocket layer refused; `None` for
    /// errors that are not about what the client sent (the connection reset or closed).
    fn refusal(&self) -> Option<CloseReason>;
}

impl ReadError for std::convert::Infallible {
    fn refusal(&self) -> Option<CloseReason> {
        match *self {}
    }
}

impl ReadError for tungstenite::Error {
    fn refusal(&self) -> Option<CloseReason> {
        classify(self)
    }
}

/// axum wraps the socket's [`tungstenite::Error`]; anything else is not a refusal.
impl ReadError for axum::Error {
    fn refusal(&self) -> Option<CloseReason> {
        std::error::Error::source(self)?
            .downcast_ref::<tungstenite::Error>()
            .and_then(classify)
    }
}

/// Close code 1002 (protocol error).
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close code 1007 (invalid payload data).
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code 1009 (message too big).
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Classify a tungstenite error by its variant (never its text).
fn classify(e: &tungstenite::Error) -> Option<CloseReason> {
    use tungstenite::Error as E;
    use tungstenite::error::{CapacityError as C, ProtocolError as P};
    let protocol = |why: String| {
        Some(CloseReason {
            code: CLOSE_PROTOCOL,
            reason: format!("protocol error: {why}"),
        })
    };
    match e {
        E::Capacity(C::MessageTooLong { .. }) => Some(CloseReason {
            code: CLOSE_TOO_BIG,
            reason: format!(
                "message too big: the socket takes at most {} bytes (control messages {} bytes)",
                super::MAX_WS_MESSAGE,
                ConnPolicy::default().max_message_bytes
            ),
        }),
        E::Capacity(C::TooManyHeaders) => protocol("too many headers".into()),
        // tungstenite reports invalid UTF-8 in a text message and in a close frame's reason alike.
        E::Utf8(_) => Some(CloseReason {
            code: CLOSE_INVALID_DATA,
            reason: "invalid UTF-8 in a text message or a close frame's reason".into(),
        }),
        E::Protocol(p) => match p {
            // The peer went away or is closing anyway: nothing to say.
            P::ResetWithoutClosingHandshake | P::ReceivedAfterClosing | P::SendAfterClosing => None,
            P::UnmaskedFrameFromClient => protocol("client frames must be masked".into()),
            P::NonZeroReservedBits => {
                protocol("reserved bits set (no extension is negotiated)".into())
            }
            P::ControlFrameTooBig => protocol("control frame payload over 125 bytes".into()),
            P::FragmentedControlFrame => protocol("fragmented control frame".into()),
            P::UnknownControlFrameType(op) | P::UnknownDataFrameType(op) | P::InvalidOpcode(op) => {
                protocol(format!("reserved opcode {op:#x}"))
            }
            P::UnexpectedContinueFrame => {
                protocol("continuation frame with no message to continue".into())
            }
            P::ExpectedFragment(_) => {
                protocol("new data frame before the fragmented message ended".into())
            }
            P::InvalidCloseSequence => protocol("close frame with a 1-byte payload".into()),
            P::MaskedFrameFromServer => protocol("masked frame".into()),
            _ => protocol("bad frame".into()),
        },
        E::ConnectionClosed | E::AlreadyClosed | E::Io(_) => None,
        _ => None,
    }
}

/// True for 127.0.0.0/8, ::1 and IPv4-mapped loopback.
pub fn is_loopback(peer: &SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

impl Reader {
    async fn run<R, E>(&mut self, stream: &mut R)
    where
        R: Stream<Item = Result<Message, E>> + Unpin,
        E: ReadError,
    {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Text(t)) => self.text(t.as_str()),
                Ok(Message::Binary(_)) => self.error(
                    "binary",
                    "binary messages are not accepted: send JSON text",
                    None,
                ),
                Ok(Message::Close(_)) => break,
                Err(e) => {
                    // The socket layer refused a message: say why in the close frame (a connection
                    // that just went away is not a refusal).
                    if let Some(reason) = e.refusal() {
                        self.ctx.hub.close(self.id, reason);
                    }
                    break;
                }
                Ok(_) => {}
            }
        }
    }

    fn reply(&mut self, text: String) {
        match &mut self.out {
            Some(out) => out.push(text),
            None => self.ctx.hub.send_to(self.id, Message::Text(text.into())),
        }
    }

    fn error(&mut self, code: &str, message: &str, id: Option<&serde_json::Value>) {
        self.ctx
            .upstream
            .metrics()
            .messages_rejected
            .fetch_add(1, Ordering::Relaxed);
        self.reply(protocol::error(code, message, id));
    }

    fn take_token(&mut self) -> bool {
        let p = &self.ctx.policy;
        let now = Instant::now();
        let dt = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.bucket = (self.bucket + dt * p.rate_per_sec).min(p.burst);
        if self.bucket >= 1.0 {
            self.bucket -= 1.0;
            true
        } else {
            false
        }
    }

    fn authorized(&self, msg_token: Option<&str>) -> Result<(), String> {
        if is_loopback(&self.peer) {
            return Ok(());
        }
        let env = &self.ctx.policy.token_env;
        let Some(want) = &self.ctx.policy.token else {
            return Err(format!(
                "control from other machines is disabled: start the server with the token in ${env} and send it as \"token\""
            ));
        };
        let given = msg_token.or(self.query_token.as_deref());
        match given {
            Some(t) if same(t, want) => Ok(()),
            Some(_) => Err("wrong token".into()),
            None => Err(format!(
                "this request needs the control token (${env} on the server): add \"token\" to the message or ?token= to the URL"
            )),
        }
    }

    fn text(&mut self, text: &str) {
        if !self.take_token() {
            self.error(
                "rate_limited",
                &format!(
                    "too many requests: at most {} per second (bursts of {})",
                    self.ctx.policy.rate_per_sec, self.ctx.policy.burst
                ),
                None,
            );
            return;
        }
        let max = self.ctx.policy.max_message_bytes;
        if text.len() > max {
            self.error(
                "too_large",
                &format!("message is {} bytes; the limit is {max}", text.len()),
                None,
            );
            return;
        }
        let protocol::ClientRequest { msg, value } = match protocol::parse_client(text) {
            Ok(r) => r,
            Err(u) => {
                self.error(u.code, &u.message, u.id.as_ref());
                return;
            }
        };
        let id = msg.id().cloned();
        let forwarded = matches!(self.ctx.upstream, Upstream::Remote(_)).then_some(value);
        if msg.is_control()
            && let Err(why) = self.authorized(msg.token())
        {
            self.error("unauthorized", &why, id.as_ref());
            return;
        }
        if let (Upstream::Remote(r), Some(value)) = (&self.ctx.upstream, forwarded)
            && self.remote(r.clone(), &msg, value)
        {
            return;
        }
        self.dispatch(msg);
    }

    /// A request to a remote performance: control is forwarded (with this server's token, which
    /// the publisher may need), the clock answered here; `false` for what is served locally.
    fn remote(
        &mut self,
        r: Arc<dyn RemoteUpstream>,
        msg: &ClientMsg,
        mut value: serde_json::Value,
    ) -> bool {
        let id = msg.id().cloned();
        match msg {
            ClientMsg::Chat { .. } | ClientMsg::Say { .. } | ClientMsg::Interrupt { .. } => {
                match &self.ctx.policy.token {
                    Some(t) => value["token"] = t.clone().into(),
                    None => {
                        if let Some(o) = value.as_object_mut() {
                            o.remove("token");
                        }
                    }
                }
                let hub = self.ctx.hub.clone();
                let me = self.id;
                r.forward(
                    value.to_string(),
                    Box::new(move |reply| hub.send_to(me, Message::Text(reply.into()))),
                );
                true
            }
            ClientMsg::Set { .. } | ClientMsg::Perform { .. } => {
                self.error(
                    "unsupported",
                    "this relay forwards chat, say and interrupt; send set and perform to the idol's own server",
                    id.as_ref(),
                );
                true
            }
            ClientMsg::Ping { .. } => {
                self.reply(protocol::pong(id.as_ref(), r.now()));
                true
            }
            ClientMsg::Subscribe { .. } | ClientMsg::Stats { .. } => false,
        }
    }

    /// `subscribe`: served by this server whatever its upstream.
    fn subscribe(&mut self, msg: ClientMsg) {
        let id = msg.id().cloned();
        let id = id.as_ref();
        let ClientMsg::Subscribe {
            streams,
            audio,
            frames,
            rig,
            ..
        } = msg
        else {
            return;
        };
        let mut sub = self.ctx.hub.subscription(self.id).unwrap_or_default();
        if let Some(r) = rig {
            match self.ctx.hub.resolve_rig(&r) {
                Ok(choice) => sub.rig = choice,
                Err(refusal) => {
                    // The whole request is refused: the previous subscription stays.
                    self.ctx
                        .upstream
                        .metrics()
                        .messages_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    self.reply(protocol::bad_rig(id, &refusal.message, &refusal.available));
                    return;
                }
            }
        }
        if let Some(streams) = streams {
            sub.audio = streams.contains(&StreamKind::Audio);
            sub.frames = streams.contains(&StreamKind::Frames);
            sub.captions = streams.contains(&StreamKind::Captions);
            sub.cues = streams.contains(&StreamKind::Cues);
            sub.state = streams.contains(&StreamKind::State);
        }
        if let Some(a) = audio {
            sub.audio_encoding = a;
        }
        if let Some(f) = frames {
            sub.frame_encoding = f;
        }
        let (rig, channels) = self.ctx.hub.rig_of(&sub);
        let mut extra = protocol::subscription_json(&sub);
        extra["rig"] = rig.into();
        extra["channel_names"] = channels.into();
        let ack = protocol::ack(id, "subscribe", extra);
        self.ctx
            .hub
            .resubscribe(self.id, sub, Message::Text(ack.into()));
    }

    fn dispatch(&mut self, msg: ClientMsg) {
        let id = msg.id().cloned();
        let id = id.as_ref();
        if matches!(msg, ClientMsg::Subscribe { .. }) {
            return self.subscribe(msg);
        }
        // A remote upstream's control requests never get here ([`Reader::remote`]).
        let local = self.ctx.upstream.local().cloned();
        let Some(perform) = local.as_ref() else {
            if let ClientMsg::Stats { stats, .. } = msg {
                self.keep_stats(stats);
            }
            return;
        };
        match msg {
            ClientMsg::Chat { user, text, .. } => {
                if text.trim().is_empty() {
                    self.error("bad_message", "chat text is empty", id);
                    return;
                }
                // The ack goes out before the persona sees the message, so it comes before the
                // utterance's events (a refusal by the guards is reported at once).
                perform.chat_then("ws", &user, &text, |utt| {
                    self.reply(protocol::ack(id, "chat", json!({"utterance": utt})))
                });
            }
            ClientMsg::Say { text, emotion, .. } => {
                if text.trim().is_empty() {
                    self.error("bad_message", "say text is empty", id);
                    return;
                }
                // Breaks alone past the limit: refused before anything is queued (speech past it
                // is cut as it is placed, with an error event).
                let breaks = crate::text::TagParser::break_millis(&text);
                let rate = 1000;
                if let Err(e) =
                    self.ctx
                        .policy
                        .budget
                        .check(crate::budget::Budgeted::Utterance, breaks, rate)
                {
                    self.error("too_long", &format!("its <break/>s alone: {e}"), id);
                    return;
                }
                perform.say_then(&text, emotion.as_deref(), |utt| {
                    self.reply(protocol::ack(id, "say", json!({"utterance": utt})))
                });
            }
            ClientMsg::Interrupt { .. } => {
                perform.interrupt();
                self.reply(protocol::ack(id, "interrupt", json!({})));
            }
            ClientMsg::Set {
                emotion,
                intensity,
                look_at,
                ..
            } => {
                if emotion.is_none() && look_at.is_none() {
                    self.error("bad_message", "set needs \"emotion\" or \"look_at\"", id);
                    return;
                }
                if let Some(i) = intensity
                    && !(0.0..=1.0).contains(&i)
                {
                    self.error("bad_message", "intensity must be a number from 0 to 1", id);
                    return;
                }
                if let Some(a) = look_at
                    && !a
                        .iter()
                        .all(|v| v.is_finite() && v.abs() <= std::f32::consts::FRAC_PI_2)
                {
                    self.error(
                        "bad_message",
                        "look_at is [yaw, pitch] in radians, each within -1.5708..=1.5708 (±90°)",
                        id,
                    );
                    return;
                }
                if let Some(name) = emotion {
                    perform.set(FaceControl::Emotion {
                        name,
                        intensity: intensity.unwrap_or(1.0),
                    });
                }
                if let Some([yaw, pitch]) = look_at {
                    perform.set(FaceControl::LookAt { yaw, pitch });
                }
                self.reply(protocol::ack(id, "set", json!({})));
            }
            ClientMsg::Perform { script, .. } => {
                let Some(renderer) = self.ctx.policy.scripts.clone() else {
                    self.error(
                        "unsupported",
                        "this server does not render scripts (idol serve does)",
                        id,
                    );
                    return;
                };
                let parsed = match crate::script::Script::parse(
                    &script,
                    std::path::Path::new("script"),
                    std::path::Path::new("."),
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        self.error("bad_script", &e.to_string(), id);
                        return;
                    }
                };
                if let Some(l) = parsed
                    .lines
                    .iter()
                    .find(|l| matches!(l.kind, crate::script::LineKind::Recorded { .. }))
                {
                    self.error(
                        "bad_script",
                        &format!(
                            "script:{}:{}: {} is a recorded line: the server does not read files for clients; render it with `idol render`",
                            l.pos.line,
                            l.pos.column,
                            l.label()
                        ),
                        id,
                    );
                    return;
                }
                if let Err(e) = crate::script::render::check_plan(&parsed, &self.ctx.policy.budget)
                {
                    self.error("too_long", &e.to_string(), id);
                    return;
                }
                let utt = perform.reserve();
                let lines = parsed.lines.len();
                let perform = perform.clone();
                let spawned = std::thread::Builder::new()
                    .name("idol-script".into())
                    .spawn(move || {
                        let pieces = renderer
                            .render(&parsed)
                            .map(|p| crate::script::live::pieces(&p))
                            .map_err(StageError::Script);
                        perform.play(utt, pieces);
                    });
                if let Err(e) = spawned {
                    local.as_ref().expect("a local performance").play(
                        utt,
                        Err(StageError::Script(
                            format!("cannot start the script renderer: {e}").into(),
                        )),
                    );
                }
                self.reply(protocol::ack(
                    id,
                    "perform",
                    json!({"utterance": utt, "lines": lines}),
                ));
            }
            ClientMsg::Ping { .. } => {
                self.reply(protocol::pong(id, perform.now().get()));
            }
            ClientMsg::Stats { stats, .. } => self.keep_stats(stats),
            ClientMsg::Subscribe { .. } => {}
        }
    }

    fn keep_stats(&mut self, stats: serde_json::Value) {
        let mut s = self.ctx.stats.lock();
        s.push(stats);
        if s.len() > 64 {
            s.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perform::testing::{JawFace, ScriptedGenerator, ToneVoice};
    use crate::perform::{Metrics, PerformConfig, Performer, SimpleSegmenter, Stages};
    use tokio::sync::mpsc;

    struct Fixture {
        _perf: Performer,
        ctx: ConnCtx,
    }

    fn fixture(token: Option<&str>) -> Fixture {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(8, Duration::from_secs(2), 4096, metrics.clone()));
        let perf = Performer::start(
            Stages {
                persona: crate::perform::testing::conversation(),
                generator: Box::new(ScriptedGenerator::new(["Hello."])),
                segmenter: Box::new(SimpleSegmenter::new()),
                voice: Box::new(ToneVoice::new(16000)),
                face: Box::new(JawFace::arkit(16000, 60)),
            },
            PerformConfig::default(),
            vec![Box::new(super::super::HubSink(hub.clone()))],
            None,
            metrics,
        )
        .unwrap();
        let h = perf.handle();
        let h2 = h.clone();
        hub.set_session(Arc::new(h.info().clone()), move || h2.now().get());
        Fixture {
            ctx: ConnCtx {
                hub,
                upstream: Upstream::Local(h),
                policy: Arc::new(ConnPolicy {
                    token: token.map(str::to_string),
                    ..ConnPolicy::default()
                }),
                stats: Arc::default(),
            },
            _perf: perf,
        }
    }

    /// A connection driven by channels: (client → server sender, server → client receiver).
    fn connect(
        f: &Fixture,
        peer: &str,
        query_token: Option<&str>,
    ) -> (
        mpsc::UnboundedSender<Message>,
        mpsc::UnboundedReceiver<Message>,
    ) {
        let (to_client, from_server) = mpsc::unbounded_channel::<Message>();
        let (to_server, from_client) = mpsc::unbounded_channel::<Message>();
        let sink = Box::pin(futures_util::sink::unfold(
            to_client,
            |tx, m: Message| async move {
                tx.send(m).map_err(|_| ())?;
                Ok::<_, ()>(tx)
            },
        ));
        let stream = Box::pin(futures_util::stream::unfold(
            from_client,
            |mut rx| async move {
                rx.recv()
                    .await
                    .map(|m| (Ok::<_, std::convert::Infallible>(m), rx))
            },
        ));
        tokio::spawn(serve_connection(
            sink,
            stream,
            peer.parse().unwrap(),
            query_token.map(str::to_string),
            f.ctx.clone(),
        ));
        (to_server, from_server)
    }

    /// The next JSON reply that is an ack, error or pong.
    async fn reply(rx: &mut mpsc::UnboundedReceiver<Message>) -> serde_json::Value {
        loop {
            if let Message::Text(t) = rx.recv().await.expect("connection open") {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if matches!(v["type"].as_str(), Some("ack" | "error" | "pong")) {
                    return v;
                }
            }
        }
    }

    fn text(s: &str) -> Message {
        Message::Text(s.to_string().into())
    }

    #[tokio::test]
    async fn hello_comes_first() {
        let f = fixture(None);
        let (_tx, mut rx) = connect(&f, "127.0.0.1:4000", None);
        let Message::Text(t) = rx.recv().await.unwrap() else {
            panic!("hello is text")
        };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        assert_eq!(v["type"], "hello");
        assert_eq!(v["protocol"], 1);
        assert_eq!(v["sample_rate"], 16000);
        assert_eq!(v["channel_names"].as_array().unwrap().len(), 52);
        assert_eq!(v["channel_names"][17], "jawOpen");
    }

    #[tokio::test]
    async fn control_off_loopback_needs_the_token() {
        let f = fixture(Some("s3cret"));
        let (tx, mut rx) = connect(&f, "192.0.2.7:5000", None);
        tx.send(text(r#"{"type":"interrupt","id":1}"#)).unwrap();
        let r = reply(&mut rx).await;
        assert_eq!(
            (r["code"].as_str(), r["id"].as_i64()),
            (Some("unauthorized"), Some(1))
        );
        tx.send(text(r#"{"type":"interrupt","id":2,"token":"wrong"}"#))
            .unwrap();
        assert_eq!(reply(&mut rx).await["code"], "unauthorized");
        // Non-control requests need no token; the connection stayed open.
        tx.send(text(r#"{"type":"ping","id":3}"#)).unwrap();
        assert_eq!(reply(&mut rx).await["type"], "pong");
        tx.send(text(r#"{"type":"interrupt","id":4,"token":"s3cret"}"#))
            .unwrap();
        let r = reply(&mut rx).await;
        assert_eq!(
            (r["type"].as_str(), r["id"].as_i64()),
            (Some("ack"), Some(4))
        );

        // The token may come with the upgrade request instead.
        let (tx, mut rx) = connect(&f, "[2001:db8::1]:5000", Some("s3cret"));
        tx.send(text(r#"{"type":"interrupt"}"#)).unwrap();
        assert_eq!(reply(&mut rx).await["type"], "ack");

        // Loopback needs none, IPv4-mapped included.
        let (tx, mut rx) = connect(&f, "[::ffff:127.0.0.1]:5000", None);
        tx.send(text(r#"{"type":"interrupt"}"#)).unwrap();
        assert_eq!(reply(&mut rx).await["type"], "ack");
    }

    #[tokio::test]
    async fn without_a_configured_token_control_is_refused_off_loopback() {
        let f = fixture(None);
        let (tx, mut rx) = connect(&f, "10.1.2.3:5000", None);
        tx.send(text(r#"{"type":"chat","text":"hi","token":"anything"}"#))
            .unwrap();
        let r = reply(&mut rx).await;
        assert_eq!(r["code"], "unauthorized");
        assert!(r["message"].as_str().unwrap().contains("IDOL_TOKEN"));
    }

    #[tokio::test]
    async fn rate_limit_answers_errors_and_recovers() {
        let f = fixture(None);
        let (tx, mut rx) = connect(&f, "127.0.0.1:4000", None);
        for i in 0..40 {
            tx.send(text(&format!(r#"{{"type":"ping","id":{i}}}"#)))
                .unwrap();
        }
        let mut limited = 0;
        for _ in 0..40 {
            if reply(&mut rx).await["code"] == "rate_limited" {
                limited += 1;
            }
        }
        assert!(limited >= 5, "{limited}");
    }

    #[tokio::test]
    async fn stalled_sink_is_closed_with_a_reason() {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(
            8,
            Duration::from_millis(100),
            4096,
            metrics.clone(),
        ));
        let f = fixture(None);
        hub.set_session(
            Arc::new(f.ctx.upstream.local().unwrap().info().clone()),
            || 0,
        );
        let link = hub.register().unwrap();
        // A sink whose sends never complete, like a peer that stopped reading.
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let stuck = std::sync::atomic::AtomicBool::new(true);
        let stuck = Arc::new(stuck);
        let s2 = stuck.clone();
        let sink = Box::pin(futures_util::sink::unfold(tx, move |tx, m: Message| {
            let s2 = s2.clone();
            async move {
                while s2.load(Ordering::SeqCst) && !matches!(m, Message::Close(_)) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tx.send(m).map_err(|_| ())?;
                Ok::<_, ()>(tx)
            }
        }));
        let writer = tokio::spawn(write_loop(sink, link));
        let ev = crate::perform::Event::Error {
            utterance: 0,
            message: "x".into(),
        };
        let mut closed = false;
        for _ in 0..100 {
            hub.broadcast(&ev);
            if hub.is_empty() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(closed, "the lagging client was dropped");
        assert_eq!(metrics.clients_dropped.load(Ordering::SeqCst), 1);
        stuck.store(false, Ordering::SeqCst);
        writer.await.unwrap();
        let mut last = None;
        while let Ok(m) = rx.try_recv() {
            last = Some(m);
        }
        match last {
            Some(Message::Close(Some(c))) => {
                assert_eq!(c.code, super::super::hub::CLOSE_LAGGING);
                assert!(
                    c.reason.as_str().contains("lagging"),
                    "{}",
                    c.reason.as_str()
                );
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}
