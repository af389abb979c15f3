//! Input `relay`: live chat from streaming platforms into the idol. Input: a platform's chat
//! connection (Twitch IRC, Bilibili's danmaku WebSocket, JSON lines or HTTP posts from bots). Output:
//! [`ChatMessage`]s, chosen by the [`policy`] and handed to the performance as chats
//! ([`crate::perform::PerformHandle::chat`]), which passes each through the persona's guards.
//!
//! Each platform is one [`ChatSource`]: one connection's life (connect, log in, read until the
//! connection ends). [`run_source`] runs it again and again with exponential backoff, and keeps its
//! [`RelayStatus`] (connecting / connected / reconnecting / error, messages in, dropped) that
//! `/metrics` and `GET /v1/relays` show. The [`desk::ChatDesk`] owns the sources, the policy and the
//! dispatcher that speaks to the performance, one chat at a time, when the idol is free.
//!
//! Threading: the sources and the dispatcher are I/O only and run on one small tokio runtime on its
//! own std thread; the policy is a pure state machine with time passed in.

pub mod bilibili;
pub mod desk;
pub mod generic;
pub mod policy;
pub mod twitch;

pub use desk::{ChatDesk, DeskOptions};
pub use policy::{ChatPolicy, PolicyConfig};

use parking_lot::Mutex;
use serde::Serialize;
use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where a chat message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Twitch,
    Bilibili,
    /// JSON lines on stdin or `POST /v1/chat`: bots and other platforms.
    Generic,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Twitch => "twitch",
            Platform::Bilibili => "bilibili",
            Platform::Generic => "generic",
        }
    }
}

/// What a viewer paid with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaidKind {
    /// Twitch bits cheered in the message.
    Bits,
    /// A gift (Bilibili `SEND_GIFT`, a Twitch sub gift through the generic relay).
    Gift,
    /// A paid highlighted message (Bilibili `SUPER_CHAT_MESSAGE`, YouTube Super Chat).
    SuperChat,
}

/// A payment attached to a message. Any payment puts the message ahead of unpaid ones
/// ([`policy`]); amounts in different units are not compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paid {
    pub kind: PaidKind,
    /// The amount as the platform states it (bits, CNY, gift count × price).
    pub amount: f64,
    /// Unit of `amount`: `bits`, `CNY`, a currency code, or a gift's name.
    pub unit: String,
}

/// One chat message from a platform, before the policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub platform: Platform,
    /// The relay's name (`twitch`, `bilibili`, `generic`, `http`, `stdin`).
    pub relay: String,
    /// The platform's message id, for de-duplication (`None`: never a duplicate).
    pub id: Option<String>,
    /// The name shown on stream.
    pub user: String,
    /// The platform's stable user id, when it gives one (rate limits key on it).
    pub user_id: Option<String>,
    /// Badges and roles (`broadcaster`, `moderator`, `subscriber/12`, `vip`, `admin`, `guard/3`).
    pub badges: Vec<String>,
    pub text: String,
    pub paid: Option<Paid>,
}

impl ChatMessage {
    /// A plain message (no id, badges or payment).
    pub fn new(platform: Platform, relay: &str, user: &str, text: &str) -> Self {
        ChatMessage {
            platform,
            relay: relay.to_string(),
            id: None,
            user: user.to_string(),
            user_id: None,
            badges: vec![],
            text: text.to_string(),
            paid: None,
        }
    }

    /// The key rate limits count per viewer: platform + user id, else the name lowercased.
    pub fn user_key(&self) -> String {
        match &self.user_id {
            Some(id) => format!("{}:{id}", self.platform.as_str()),
            None => format!("{}~{}", self.platform.as_str(), self.user.to_lowercase()),
        }
    }

    /// The key de-duplication uses.
    pub fn dedup_key(&self) -> Option<String> {
        self.id
            .as_ref()
            .map(|id| format!("{}:{id}", self.platform.as_str()))
    }
}

/// A relay's problems. Each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[error("connection to {addr} lost: {error}")]
    Io { addr: String, error: std::io::Error },
    #[error("{addr} closed the connection")]
    Closed { addr: String },
    #[error("{addr} refused the login: {why}")]
    Login { addr: String, why: String },
    #[error("{addr}: no data for {secs} s (the connection is considered dead)")]
    Timeout { addr: String, secs: u64 },
    #[error("{addr}: protocol error: {why}")]
    Protocol { addr: String, why: String },
    #[error("{addr}: WebSocket: {error}")]
    WebSocket { addr: String, error: String },
}

/// What a relay is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayState {
    Connecting,
    Connected,
    /// Waiting before the next attempt, after a connection ended or failed.
    Reconnecting,
    /// Stopped for good (a source that cannot be retried: stdin at its end).
    Stopped,
}

impl RelayState {
    pub const ALL: [RelayState; 4] = [
        RelayState::Connecting,
        RelayState::Connected,
        RelayState::Reconnecting,
        RelayState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RelayState::Connecting => "connecting",
            RelayState::Connected => "connected",
            RelayState::Reconnecting => "reconnecting",
            RelayState::Stopped => "stopped",
        }
    }
}

/// One relay's live status, shared with `/metrics` and `GET /v1/relays`.
#[derive(Debug)]
pub struct RelayStatus {
    pub name: String,
    pub platform: Platform,
    state: Mutex<(RelayState, Option<String>)>,
    /// Messages read from the platform.
    pub messages_in: AtomicU64,
    /// Messages lost before the policy saw them (the desk's intake was full).
    pub dropped: AtomicU64,
    /// Connections made (the first included).
    pub connects: AtomicU64,
}

/// A snapshot of a [`RelayStatus`], as `GET /v1/relays` sends it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelaySnapshot {
    pub name: String,
    pub platform: Platform,
    pub state: RelayState,
    /// The last error, kept while reconnecting (and after a connection succeeds, until cleared).
    pub error: Option<String>,
    pub messages_in: u64,
    pub dropped: u64,
    pub connects: u64,
}

impl RelayStatus {
    pub fn new(name: &str, platform: Platform) -> Self {
        RelayStatus {
            name: name.to_string(),
            platform,
            state: Mutex::new((RelayState::Connecting, None)),
            messages_in: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connects: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> RelayState {
        self.state.lock().0
    }

    pub fn set(&self, state: RelayState, error: Option<String>) {
        let mut s = self.state.lock();
        if state == RelayState::Connected {
            self.connects.fetch_add(1, Ordering::Relaxed);
        }
        if s.0 != state {
            log::info!("relay {}: {}", self.name, state.as_str());
        }
        *s = (state, error.or_else(|| s.1.take()));
        if state == RelayState::Connected {
            s.1 = None;
        }
    }

    pub fn snapshot(&self) -> RelaySnapshot {
        let (state, error) = self.state.lock().clone();
        RelaySnapshot {
            name: self.name.clone(),
            platform: self.platform,
            state,
            error,
            messages_in: self.messages_in.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
        }
    }
}

/// Render relay statuses in the Prometheus text format (appended to `/metrics`).
pub fn render_statuses(statuses: &[Arc<RelayStatus>], out: &mut String) {
    if statuses.is_empty() {
        return;
    }
    let snaps: Vec<RelaySnapshot> = statuses.iter().map(|s| s.snapshot()).collect();
    let _ = writeln!(
        out,
        "# HELP idol_relay_state The chat relay's state (1 for the current one)."
    );
    let _ = writeln!(out, "# TYPE idol_relay_state gauge");
    for s in &snaps {
        for st in RelayState::ALL {
            let _ = writeln!(
                out,
                "idol_relay_state{{relay=\"{}\",state=\"{}\"}} {}",
                s.name,
                st.as_str(),
                u8::from(s.state == st)
            );
        }
    }
    type Series = (&'static str, &'static str, fn(&RelaySnapshot) -> u64);
    let series: [Series; 3] = [
        (
            "idol_relay_messages_total",
            "Chat messages read from the platform.",
            |s| s.messages_in,
        ),
        (
            "idol_relay_dropped_total",
            "Chat messages lost before the policy saw them (intake full).",
            |s| s.dropped,
        ),
        (
            "idol_relay_connects_total",
            "Connections the relay made.",
            |s| s.connects,
        ),
    ];
    for (name, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for s in &snaps {
            let _ = writeln!(out, "{name}{{relay=\"{}\"}} {}", s.name, get(s));
        }
    }
}

/// What a source's session hands its messages to.
#[derive(Clone)]
pub struct SourceLink {
    pub status: Arc<RelayStatus>,
    tx: tokio::sync::mpsc::Sender<ChatMessage>,
}

impl SourceLink {
    pub fn new(status: Arc<RelayStatus>, tx: tokio::sync::mpsc::Sender<ChatMessage>) -> Self {
        SourceLink { status, tx }
    }

    /// The session is logged in and reading.
    pub fn connected(&self) {
        self.status.set(RelayState::Connected, None);
    }

    /// Hand a message on; counted, and dropped (counted too) when the desk's intake is full, so a
    /// flood never blocks the connection's reading (nor its PING answers).
    pub fn deliver(&self, msg: ChatMessage) {
        self.status.messages_in.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(msg).is_err() {
            self.status.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A boxed future, for [`ChatSource::session`] (async trait methods are not object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One platform's chat connection. `session` runs one connection to its end: connect, log in, call
/// [`SourceLink::connected`], then [`SourceLink::deliver`] every chat message until the connection
/// ends or fails. [`run_source`] calls it again with backoff.
pub trait ChatSource: Send + 'static {
    fn name(&self) -> &str;
    fn platform(&self) -> Platform;
    fn session<'a>(&'a mut self, link: &'a SourceLink) -> BoxFuture<'a, Result<(), RelayError>>;
    /// Whether a session that ended should be started again (stdin: not after its end).
    fn retry(&self) -> bool {
        true
    }
}

/// Exponential backoff between reconnections: `min`, doubling to `max`; back to `min` after a
/// session that stayed connected for at least `stable`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    pub stable: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            stable: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait after attempt `failures` (0 = the first failure in a row).
    pub fn delay(&self, failures: u32) -> Duration {
        let f = 2f64.powi(failures.min(30) as i32);
        self.min.mul_f64(f).min(self.max)
    }
}

/// Run `source` until `stop` turns true: sessions one after another, with [`Backoff`] between them.
pub async fn run_source(
    mut source: Box<dyn ChatSource>,
    link: SourceLink,
    backoff: Backoff,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            break;
        }
        link.status.set(RelayState::Connecting, None);
        let started = tokio::time::Instant::now();
        let connects = link.status.connects.load(Ordering::Relaxed);
        let result = tokio::select! {
            r = source.session(&link) => r,
            _ = stop.changed() => break,
        };
        let error = match result {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = &error {
            log::warn!("relay {}: {e}", source.name());
        }
        if !source.retry() {
            link.status.set(RelayState::Stopped, error);
            break;
        }
        let was_connected = link.status.connects.load(Ordering::Relaxed) > connects;
        if was_connected && started.elapsed() >= backoff.stable {
            failures = 0;
        }
        let wait = backoff.delay(failures);
        failures = failures.saturating_add(1);
        log::info!(
            "relay {}: reconnecting in {:.1} s",
            source.name(),
            wait.as_secs_f64()
        );
        link.status.set(RelayState::Reconnecting, error);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
    }
    if link.status.state() != RelayState::Stopped {
        link.status.set(RelayState::Stopped, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let b = Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(8),
            stable: Duration::from_secs(30),
        };
        let d: Vec<u64> = (0..7).map(|i| b.delay(i).as_millis() as u64).collect();
        assert_eq!(d, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn status_renders_one_state_and_counters() {
        let s = Arc::new(RelayStatus::new("twitch", Platform::Twitch));
        s.set(RelayState::Connected, None);
        s.messages_in.fetch_add(3, Ordering::Relaxed);
        let mut out = String::new();
        render_statuses(std::slice::from_ref(&s), &mut out);
        assert!(out.contains("idol_relay_state{relay=\"twitch\",state=\"connected\"} 1"));
        assert!(out.contains("idol_relay_state{relay=\"twitch\",state=\"reconnecting\"} 0"));
        assert!(out.contains("idol_relay_messages_total{relay=\"twitch\"} 3"));
        assert!(out.contains("idol_relay_connects_total{relay=\"twitch\"} 1"));
        s.set(RelayState::Reconnecting, Some("lost".into()));
        assert_eq!(s.snapshot().error.as_deref(), Some("lost"));
        s.set(RelayState::Connected, None);
        assert_eq!(s.snapshot().error, None);
    }
}
