//! The chat desk: the relays' sources, the [`ChatPolicy`] and the dispatcher that hands the chosen
//! message to the performance. Input: [`ChatMessage`]s from the sources and `POST /v1/chat`, and
//! the performance's state events ([`ChatDesk::watch_sink`]). Output: one
//! [`PerformHandle::chat`] at a time, when the idol is idle, so the policy (not the order of
//! arrival) decides who is answered next.
//!
//! The dispatcher waits for the utterance it started to end (the session idle again after it),
//! or, if that utterance was never seen (dropped by a barge-in), for three idle seconds.
//! Every decision is logged (`log`, target `idol::relay::desk`) and counted for `/metrics`.

use super::policy::{ChatPolicy, PolicyConfig, Verdict};
use super::{
    Backoff, ChatMessage, ChatSource, Platform, RelayState, RelayStatus, SourceLink,
    render_statuses, run_source,
};
use crate::perform::{Event, PerformHandle, PerformState, Sink};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How long the session must stay idle after a dispatch whose utterance was never seen before the
/// next message goes.
const IDLE_GRACE: Duration = Duration::from_secs(3);

/// The desk's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DeskOptions {
    pub policy: PolicyConfig,
    pub backoff: Backoff,
    /// Messages buffered between the sources and the policy; beyond it a source's messages are
    /// dropped (counted as its `dropped`).
    pub intake: usize,
    /// Accept `POST /v1/chat` (the generic relay over HTTP).
    pub http: bool,
}

impl Default for DeskOptions {
    fn default() -> Self {
        DeskOptions {
            policy: PolicyConfig::default(),
            backoff: Backoff::default(),
            intake: 1024,
            http: false,
        }
    }
}

impl DeskOptions {
    /// From `[relays]` in idol.toml; `names` stand in when the config names none (the persona's).
    pub fn from_config(c: &crate::config::RelaysConfig, names: &[String]) -> Self {
        use crate::persona::guard::RateLimit;
        DeskOptions {
            policy: PolicyConfig {
                user: RateLimit {
                    burst: c.user_burst,
                    per_minute: c.user_per_minute,
                },
                global: RateLimit {
                    burst: c.global_burst,
                    per_minute: c.global_per_minute,
                },
                queue: c.queue,
                names: if c.names.is_empty() {
                    names.to_vec()
                } else {
                    c.names.clone()
                },
                busy_at: c.busy_at,
                max_age: Duration::from_secs_f64(c.max_age_secs),
                ..PolicyConfig::default()
            },
            backoff: Backoff {
                min: Duration::from_millis(c.reconnect_min_ms),
                max: Duration::from_millis(c.reconnect_max_ms),
                ..Backoff::default()
            },
            http: c.http,
            ..DeskOptions::default()
        }
    }
}

/// The desk `[relays]` asks for, with its sources added (`stdin`: also read JSON lines from
/// stdin); `None` when no relay is on.
pub fn from_config(
    c: &crate::config::RelaysConfig,
    names: &[String],
    stdin: bool,
) -> Option<Arc<ChatDesk>> {
    if !c.any() && !stdin {
        return None;
    }
    let desk = ChatDesk::new(DeskOptions::from_config(c, names));
    if let Some(t) = &c.twitch {
        desk.add_source(Box::new(super::twitch::TwitchSource::new(t.clone())));
    }
    if let Some(b) = &c.bilibili {
        desk.add_source(Box::new(super::bilibili::BilibiliSource::new(b.clone())));
    }
    if c.stdin || stdin {
        desk.add_source(Box::new(super::generic::LinesSource::new(
            tokio::io::stdin(),
            "stdin",
        )));
    }
    Some(desk)
}

/// What the performance is doing, as the dispatcher needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Progress {
    idle: bool,
    /// When the current idle stretch began.
    idle_since: Option<Instant>,
    /// The highest utterance named by a state event before the current idle stretch.
    idle_after: u64,
    last_seen: u64,
}

/// A [`Sink`] that tells the desk when the idol is idle.
struct IdleWatch(watch::Sender<Progress>);

impl Sink for IdleWatch {
    fn event(&mut self, event: &Event) {
        if let Event::State(s) = event {
            self.0.send_modify(|p| {
                if let Some(u) = s.utterance {
                    p.last_seen = p.last_seen.max(u as u64);
                }
                let idle = s.state == PerformState::Idle;
                if idle {
                    p.idle_after = p.last_seen;
                    if !p.idle {
                        p.idle_since = Some(Instant::now());
                    }
                } else {
                    p.idle_since = None;
                }
                p.idle = idle;
            });
        }
    }
}

struct Pending {
    rx: mpsc::Receiver<ChatMessage>,
    sources: Vec<Box<dyn ChatSource>>,
}

/// Errors of `POST /v1/chat`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("chat over HTTP is off: set [relays.generic] http = true in idol.toml")]
    Disabled,
    #[error("the chat intake is full ({0} messages waiting): try again shortly")]
    Full(usize),
}

/// See the module docs.
pub struct ChatDesk {
    opts: DeskOptions,
    statuses: Mutex<Vec<Arc<RelayStatus>>>,
    http: Option<Arc<RelayStatus>>,
    tx: mpsc::Sender<ChatMessage>,
    pending: Mutex<Option<Pending>>,
    progress: watch::Sender<Progress>,
    decisions: Mutex<BTreeMap<&'static str, u64>>,
    queue_len: AtomicU64,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl ChatDesk {
    pub fn new(opts: DeskOptions) -> Arc<ChatDesk> {
        let (tx, rx) = mpsc::channel(opts.intake.max(1));
        let (progress, _) = watch::channel(Progress {
            idle: true,
            idle_since: Some(Instant::now()),
            idle_after: 0,
            last_seen: 0,
        });
        let http = opts
            .http
            .then(|| Arc::new(RelayStatus::new("http", Platform::Generic)));
        if let Some(h) = &http {
            h.set(RelayState::Connected, None);
        }
        Arc::new(ChatDesk {
            statuses: Mutex::new(http.iter().cloned().collect()),
            http,
            tx,
            pending: Mutex::new(Some(Pending {
                rx,
                sources: vec![],
            })),
            progress,
            decisions: Mutex::new(BTreeMap::new()),
            queue_len: AtomicU64::new(0),
            stop: watch::channel(false).0,
            thread: Mutex::new(None),
            opts,
        })
    }

    /// Add a source (before [`ChatDesk::start`]).
    pub fn add_source(&self, source: Box<dyn ChatSource>) {
        if let Some(p) = self.pending.lock().as_mut() {
            p.sources.push(source);
        }
    }

    /// The sink to attach to the performance, so the desk knows when the idol is free.
    pub fn watch_sink(&self) -> Box<dyn Sink> {
        Box::new(IdleWatch(self.progress.clone()))
    }

    /// Start the sources and the dispatcher on their own thread, speaking to `perform`.
    pub fn start(self: &Arc<Self>, perform: PerformHandle) -> std::io::Result<()> {
        let Some(Pending { rx, sources }) = self.pending.lock().take() else {
            return Ok(());
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let desk = self.clone();
        let links: Vec<(Box<dyn ChatSource>, SourceLink)> = sources
            .into_iter()
            .map(|s| {
                let status = Arc::new(RelayStatus::new(s.name(), s.platform()));
                self.statuses.lock().push(status.clone());
                (s, SourceLink::new(status, self.tx.clone()))
            })
            .collect();
        let thread = std::thread::Builder::new()
            .name("idol-relays".into())
            .spawn(move || {
                rt.block_on(async {
                    let tasks: Vec<_> = links
                        .into_iter()
                        .map(|(s, link)| {
                            tokio::spawn(run_source(
                                s,
                                link,
                                desk.opts.backoff,
                                desk.stop.subscribe(),
                            ))
                        })
                        .collect();
                    desk.dispatch(rx, perform).await;
                    // The sources see the same stop and end their sessions (status: stopped).
                    for t in tasks {
                        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })?;
        *self.thread.lock() = Some(thread);
        Ok(())
    }

    /// A message from `POST /v1/chat`.
    pub fn post(&self, msg: ChatMessage) -> Result<(), PostError> {
        let Some(status) = &self.http else {
            return Err(PostError::Disabled);
        };
        status.messages_in.fetch_add(1, Ordering::Relaxed);
        self.tx.try_send(msg).map_err(|_| {
            status.dropped.fetch_add(1, Ordering::Relaxed);
            PostError::Full(self.opts.intake)
        })
    }

    pub fn accepts_http(&self) -> bool {
        self.http.is_some()
    }

    /// Every relay's status (sources, and `http` when enabled).
    pub fn statuses(&self) -> Vec<Arc<RelayStatus>> {
        self.statuses.lock().clone()
    }

    /// How many times the policy decided each way (`queued`, `duplicate`, `answered`, …).
    pub fn decisions(&self) -> BTreeMap<&'static str, u64> {
        self.decisions.lock().clone()
    }

    fn count(&self, what: &'static str, n: u64) {
        if n > 0 {
            *self.decisions.lock().entry(what).or_default() += n;
        }
    }

    /// The relays and the policy in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        render_statuses(&self.statuses(), out);
        let _ = writeln!(
            out,
            "# HELP idol_chat_policy_total The chat policy's decisions on relayed messages."
        );
        let _ = writeln!(out, "# TYPE idol_chat_policy_total counter");
        for (k, v) in self.decisions() {
            let _ = writeln!(out, "idol_chat_policy_total{{decision=\"{k}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP idol_chat_queue_length Relayed messages waiting for an answer."
        );
        let _ = writeln!(out, "# TYPE idol_chat_queue_length gauge");
        let _ = writeln!(
            out,
            "idol_chat_queue_length {}",
            self.queue_len.load(Ordering::Relaxed)
        );
    }

    /// `GET /v1/relays`: the relays, the policy's counts and the queue.
    pub fn snapshot(&self) -> serde_json::Value {
        let relays: Vec<_> = self.statuses().iter().map(|s| s.snapshot()).collect();
        serde_json::json!({
            "relays": relays,
            "policy": self.decisions(),
            "queue": self.queue_len.load(Ordering::Relaxed),
        })
    }

    fn offer(&self, policy: &mut ChatPolicy, msg: ChatMessage, now: Instant) {
        let who = format!(
            "{} {} ({})",
            msg.relay,
            msg.user,
            msg.id.as_deref().unwrap_or("-")
        );
        let o = policy.offer(msg, now);
        self.count(o.verdict.label(), 1);
        match &o.verdict {
            Verdict::Queued(p) => log::info!("chat policy: queued {who} as {}", p.as_str()),
            Verdict::UserLimited(why) | Verdict::GlobalLimited(why) => {
                log::info!("chat policy: refused {who}: {why}")
            }
            v => log::info!("chat policy: refused {who}: {}", v.label()),
        }
        if let Some(d) = o.displaced {
            self.count("dropped_oldest", 1);
            log::info!(
                "chat policy: queue full ({}): dropped the oldest, {} {}",
                policy.config().queue,
                d.relay,
                d.user
            );
        }
    }

    async fn dispatch(&self, mut rx: mpsc::Receiver<ChatMessage>, perform: PerformHandle) {
        let mut policy = ChatPolicy::new(self.opts.policy.clone());
        let mut progress = self.progress.subscribe();
        let mut stop = self.stop.subscribe();
        let mut waiting: Option<(u64, Instant)> = None;
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => self.offer(&mut policy, m, Instant::now()),
                    None => break,
                },
                _ = progress.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => break,
            }
            while let Ok(m) = rx.try_recv() {
                self.offer(&mut policy, m, Instant::now());
            }
            let p = *progress.borrow_and_update();
            let now = Instant::now();
            if let Some((utt, since)) = waiting {
                let grace = p.idle_since.is_some_and(|t| {
                    now.duration_since(t) >= IDLE_GRACE && now.duration_since(since) >= IDLE_GRACE
                });
                if p.idle && (p.idle_after >= utt || grace) {
                    waiting = None;
                }
            }
            if waiting.is_none()
                && p.idle
                && let Some(pick) = policy.next(now)
            {
                self.count("stale", pick.stale.len() as u64);
                self.count("skipped_busy", pick.skipped.len() as u64);
                self.count("answered", 1);
                if !pick.stale.is_empty() {
                    log::info!(
                        "chat policy: {} plain messages older than {:.0} s dropped as stale",
                        pick.stale.len(),
                        policy.config().max_age.as_secs_f64()
                    );
                }
                let m = &pick.msg;
                let utt = perform.chat_from(&m.relay, &m.user, &m.text);
                if pick.skipped.is_empty() {
                    log::info!(
                        "chat policy: answering {} {} ({}) as utterance {utt}",
                        m.relay,
                        m.user,
                        pick.priority.as_str()
                    );
                } else {
                    log::info!(
                        "chat policy: busy chat: answering {} {} as utterance {utt}, one of {} (the others let go)",
                        m.relay,
                        m.user,
                        pick.skipped.len() + 1
                    );
                }
                waiting = Some((utt as u64, now));
            }
            self.queue_len.store(policy.len() as u64, Ordering::Relaxed);
        }
    }

    /// Stop the sources and the dispatcher and join their thread.
    pub fn stop(&self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for ChatDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatDesk")
            .field(
                "relays",
                &self
                    .statuses()
                    .iter()
                    .map(|s| s.snapshot())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Drop for ChatDesk {
    fn drop(&mut self) {
        self.stop();
    }
}
