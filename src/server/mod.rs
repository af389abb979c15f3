//! Sink `server`: `idol serve`'s HTTP and WebSocket front. Input: the performance's [`Event`]s (through
//! the [`Hub`], a [`crate::perform::Sink`]) and client requests. Output: the stream protocol
//! (`docs/protocol.md`) to any number of clients, the viewer page, `/healthz` and `/metrics`.
//!
//! Routes: `GET /` the viewer (`?bg=transparent` for OBS, `?controls=0`; with `GET /vendor/…` its
//! pinned modules and `GET /avatar.vrm|glb` the configured avatar, see [`viewer`]), `GET /v1/stream`
//! the WebSocket stream, `GET /healthz`, `GET /metrics` (Prometheus text), and with chat relays
//! (`[relays]`, [`crate::relay`]) `GET /v1/relays` (their status, JSON) and `POST /v1/chat` (the
//! generic relay: one JSON chat message per request, the stream's token and origin rules). Every request's `Host` and
//! the upgrade's `Origin` are checked first ([`guard`]): web pages of other sites cannot reach the
//! server by DNS rebinding nor drive the idol from the host's browser.
//!
//! Threading: tokio (a small multi-threaded runtime on its own std thread) does the I/O only: accepting,
//! reading requests, writing queued messages. The performance runs on its own std threads
//! ([`crate::perform`]); the conductor thread calls the hub, which only enqueues.
//!
//! [`Event`]: crate::perform::Event

pub mod conn;
pub mod guard;
pub mod hub;
pub mod nats;
pub mod nats_relay;
pub mod protocol;
pub mod rigs;
pub mod viewer;

pub use conn::{ConnCtx, ConnPolicy, RemoteUpstream, Upstream, serve_connection};
pub use guard::Guard;
pub use hub::{CLOSE_FULL, CLOSE_LAGGING, Hub, HubSink};
pub use nats::{NatsOptions, NatsStats};
pub use nats_relay::{NatsRelay, RelayError};
pub use rigs::RigCatalog;
pub use viewer::{VIEWER_HTML, Viewer, ViewerOptions};

use crate::config::ServerConfig;
use crate::perform::{Metrics, PerformConfig, PerformHandle, Performer, Stages};
use crate::relay::ChatDesk;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Largest WebSocket message the socket layer reads at all; beyond it the connection is closed.
/// Messages between [`ConnPolicy::max_message_bytes`] and this get a `too_large` error instead.
pub const MAX_WS_MESSAGE: usize = 1 << 20;

/// Kernel send buffer per client socket (Linux doubles it): about half a second of the bulkiest
/// subscription, so lag beyond it is seen by the hub.
pub const SEND_BUFFER: usize = 32 * 1024;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen on {addr}: {error} (is another `idol serve` running? set [server] port in idol.toml, or 0 for any free port)"
    )]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub bind: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    pub max_clients: usize,
    pub max_client_lag: Duration,
    pub policy: ConnPolicy,
    /// Where rig files clients may subscribe to by name live (`None`: the built-in rigs only). See
    /// [`RigCatalog`]: clients never name paths.
    pub rigs_dir: Option<std::path::PathBuf>,
    /// Host names the server answers besides IP addresses and `localhost` ([`Guard`]).
    pub allowed_hosts: Vec<String>,
    /// Web origins whose pages may open the stream besides the server's own ([`Guard`]).
    pub allowed_origins: Vec<String>,
    /// What the viewer page loads: its modules and the host's avatar ([`viewer`]).
    pub viewer: ViewerOptions,
    /// Live chat relays and their policy (`None`: none). The server attaches its watch sink,
    /// starts it on the performance, reports it in `/metrics` and feeds it `POST /v1/chat`.
    pub chat_desk: Option<Arc<ChatDesk>>,
    /// Publish the stream to NATS and take control from it (`None`: no NATS), see [`nats`].
    pub nats: Option<NatsOptions>,
    /// `idol relay` only: the WebSocket URL its clients reach it at, announced to its sibling relays
    /// (their clients' `hello` lists it in `alternates`). `None`: `ws://BIND:PORT/v1/stream` when
    /// bound to one address, not announced when bound to all (0.0.0.0, ::).
    pub advertise: Option<String>,
}

impl ServerOptions {
    /// From `[server]` in idol.toml; the token is read from the environment variable it names.
    pub fn from_config(c: &ServerConfig) -> Self {
        let token = std::env::var(&c.token_env)
            .ok()
            .filter(|t| !t.trim().is_empty());
        ServerOptions {
            bind: c.bind,
            port: c.port,
            max_clients: c.max_clients,
            max_client_lag: Duration::from_millis(c.max_client_lag_ms),
            policy: ConnPolicy {
                token,
                token_env: c.token_env.clone(),
                ..ConnPolicy::default()
            },
            rigs_dir: None,
            allowed_hosts: c.allowed_hosts.clone(),
            allowed_origins: c.allowed_origins.clone(),
            viewer: ViewerOptions::default(),
            chat_desk: None,
            nats: None,
            advertise: None,
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions::from_config(&crate::config::Config::default().server)
    }
}

#[derive(Clone)]
struct AppState {
    ctx: ConnCtx,
    guard: Arc<Guard>,
    desk: Option<Arc<ChatDesk>>,
    viewer: Arc<Viewer>,
    nats: Option<Arc<NatsStats>>,
}

impl axum::extract::FromRef<AppState> for Arc<Viewer> {
    fn from_ref(s: &AppState) -> Arc<Viewer> {
        s.viewer.clone()
    }
}

/// A running `idol serve`: the performance, the hub and the HTTP server. Dropping it stops all three.
pub struct Server {
    addr: SocketAddr,
    ctx: ConnCtx,
    handle: PerformHandle,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    performer: Option<Performer>,
    desk: Option<Arc<ChatDesk>>,
    nats: Option<Arc<NatsStats>>,
}

/// The hub a server (or a relay) fans its session out with: queues with room for several times the
/// lag limit of traffic (`chunks_per_sec` audio chunks + `fps` frames + a little text a second),
/// and the rig catalog `opts` names (its warnings logged).
pub(crate) fn new_hub(
    opts: &ServerOptions,
    chunks_per_sec: u64,
    fps: u32,
    metrics: Arc<Metrics>,
) -> Arc<Hub> {
    let per_sec = chunks_per_sec + fps as u64 + 20;
    let capacity = (per_sec * (opts.max_client_lag.as_millis() as u64 / 1000 + 1) * 4) as usize;
    let rigs = match &opts.rigs_dir {
        Some(dir) => {
            let (cat, warnings) = RigCatalog::with_dir(dir);
            for w in warnings {
                log::warn!("{w}");
            }
            cat
        }
        None => RigCatalog::builtin(),
    };
    Arc::new(Hub::new(opts.max_clients, opts.max_client_lag, capacity, metrics).with_rigs(rigs))
}

impl Server {
    /// Start the performance on `stages` and serve it.
    pub fn start(
        stages: Stages,
        perform: PerformConfig,
        opts: ServerOptions,
    ) -> Result<Server, ServerError> {
        Server::start_with_sinks(stages, perform, opts, Vec::new())
    }

    /// [`Server::start`], with more sinks (VMC, VTube Studio, an audio device, files, probes) fed
    /// the same events, in the same order, just before the WebSocket hub.
    pub fn start_with_sinks(
        stages: Stages,
        perform: PerformConfig,
        opts: ServerOptions,
        mut sinks: Vec<Box<dyn crate::perform::Sink>>,
    ) -> Result<Server, ServerError> {
        let metrics = Arc::new(Metrics::default());
        let chunks_per_sec = 1000 / perform.chunk.as_millis().max(1) as u64;
        let hub = new_hub(&opts, chunks_per_sec, perform.fps, metrics.clone());
        let nats = opts.nats.as_ref().map(|o| {
            let stats = Arc::new(NatsStats::default());
            let (tap, task) = nats::publisher(o, stats.clone());
            hub.set_tap(tap);
            (stats, task)
        });
        let addr = SocketAddr::new(opts.bind, opts.port);
        let listener =
            std::net::TcpListener::bind(addr).map_err(|error| ServerError::Bind { addr, error })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;

        if let Some(desk) = &opts.chat_desk {
            sinks.push(desk.watch_sink());
        }
        sinks.push(Box::new(HubSink(hub.clone())));
        let performer = Performer::start(stages, perform, sinks, None, metrics)?;
        let handle = performer.handle();
        if let Some(desk) = &opts.chat_desk {
            desk.start(handle.clone())?;
        }
        let h2 = handle.clone();
        hub.set_session(Arc::new(handle.info().clone()), move || h2.now().get());
        let ctx = ConnCtx {
            hub,
            upstream: Upstream::Local(handle.clone()),
            policy: Arc::new(opts.policy.clone()),
            stats: Arc::default(),
        };
        let guard = Arc::new(Guard::new(
            opts.bind,
            addr.port(),
            &opts.allowed_hosts,
            &opts.allowed_origins,
        ));
        let app = router(AppState {
            ctx: ctx.clone(),
            guard,
            viewer: Arc::new(Viewer::new(&opts.viewer)),
            desk: opts.chat_desk.clone(),
            nats: nats.as_ref().map(|(s, _)| s.clone()),
        });
        let rt = io_runtime()?;
        let nats_stats = nats.as_ref().map(|(s, _)| s.clone());
        if let Some((_, task)) = nats {
            rt.spawn(task.run(ctx.clone()));
        }
        let (tx, thread) = spawn_http(rt, listener, app)?;
        Ok(Server {
            addr,
            ctx,
            handle,
            shutdown: Some(tx),
            thread: Some(thread),
            performer: Some(performer),
            desk: opts.chat_desk,
            nats: nats_stats,
        })
    }

    /// The NATS link's counters, when the server publishes to NATS.
    pub fn nats_stats(&self) -> Option<&Arc<NatsStats>> {
        self.nats.as_ref()
    }

    /// The chat relays' desk, when the server has one.
    pub fn chat_desk(&self) -> Option<&Arc<ChatDesk>> {
        self.desk.as_ref()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The viewer's URL (on a server bound to all interfaces, its loopback address).
    pub fn viewer_url(&self) -> String {
        format!("{}/", self.base_url())
    }

    /// `http://HOST:PORT` of this server as reachable from this machine: 127.0.0.1 (or ::1) when it
    /// listens on all interfaces, else its address.
    pub fn base_url(&self) -> String {
        let host = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!("http://{host}:{}", self.addr.port())
    }

    pub fn perform(&self) -> &PerformHandle {
        &self.handle
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.ctx.hub
    }

    /// What a connection needs, for serving a connection from another transport (or a test's
    /// channels) on this server: pass it to [`serve_connection`].
    pub fn conn_ctx(&self) -> ConnCtx {
        self.ctx.clone()
    }

    /// Playback statistics viewers reported (`stats` messages), newest last.
    pub fn viewer_stats(&self) -> Vec<serde_json::Value> {
        self.ctx.stats.lock().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(d) = self.desk.take() {
            d.stop();
        }
        self.performer.take();
    }
}

/// The I/O runtime of a server: two worker threads.
fn io_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("idol-io")
        .enable_all()
        .build()
}

/// Serve `app` on `listener` on its own thread, driving `rt`, until the returned sender fires (or
/// is dropped); the runtime is shut down after.
fn spawn_http(
    rt: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    app: Router,
) -> std::io::Result<(
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
)> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("idol-server".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        log::error!("server: {e}");
                        return;
                    }
                };
                // A modest kernel send buffer, so that a client's lag shows in its queue
                // (where the hub measures it) instead of hiding in megabytes of socket buffer.
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                    let _ = socket2::SockRef::from(&*tcp).set_send_buffer_size(SEND_BUFFER);
                });
                let serve = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                });
                if let Err(e) = serve.await {
                    log::error!("server: {e}");
                }
            });
            rt.shutdown_timeout(Duration::from_millis(200));
        })?;
    Ok((tx, thread))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(viewer::page))
        .route("/vendor/{*path}", get(viewer::vendor))
        .route("/avatar.vrm", get(viewer::avatar))
        .route("/avatar.glb", get(viewer::avatar))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/stream", get(stream))
        .route("/v1/relays", get(relays))
        .route("/v1/chat", axum::routing::post(post_chat))
        .layer(axum::middleware::from_fn_with_state(
            state.guard.clone(),
            check_host,
        ))
        .with_state(state)
}

/// The `Host` of a request: the header, or the URI's authority (HTTP/2).
fn host_of(req_headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    match req_headers.get(header::HOST) {
        Some(h) => Some(String::from_utf8_lossy(h.as_bytes()).into_owned()),
        None => uri.authority().map(|a| a.as_str().to_string()),
    }
}

fn forbidden(why: String) -> Response {
    log::info!("refused a request: {why}");
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{why}\n"),
    )
        .into_response()
}

/// Every route: refuse a `Host` that is not one of the server's (DNS rebinding).
async fn check_host(
    State(guard): State<Arc<Guard>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = host_of(req.headers(), req.uri());
    match guard.check_host(host.as_deref()) {
        Ok(()) => next.run(req).await,
        Err(why) => forbidden(why),
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    let mut text = st.ctx.upstream.metrics().render();
    if let Some(desk) = &st.desk {
        desk.render_metrics(&mut text);
    }
    if let Some(n) = &st.nats {
        n.render(&mut text);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn json_response(code: StatusCode, v: serde_json::Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// `GET /v1/relays`: each relay's state and counts, the policy's decisions, the queue.
async fn relays(State(st): State<AppState>) -> Response {
    let v = match &st.desk {
        Some(d) => d.snapshot(),
        None => serde_json::json!({"relays": [], "policy": {}, "queue": 0}),
    };
    json_response(StatusCode::OK, v)
}

/// `POST /v1/chat`: one chat message for the generic relay (`docs/relays.md`). The stream's rules:
/// the page's `Origin` must be the server's own (or allowed), and off loopback the control token is
/// needed (`Authorization: Bearer T` or `?token=T`). The body must be `application/json`, which a
/// page of another site cannot send without a preflight the server never grants.
async fn post_chat(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Response {
    let err =
        |code: StatusCode, why: String| json_response(code, serde_json::json!({"error": why}));
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned());
    let host = host_of(&headers, &uri);
    if let Err(why) = st.guard.check_origin(origin.as_deref(), host.as_deref()) {
        return forbidden(why);
    }
    let Some(desk) = &st.desk else {
        return err(
            StatusCode::NOT_FOUND,
            crate::relay::desk::PostError::Disabled.to_string(),
        );
    };
    if !conn::is_loopback(&peer) {
        let env = &st.ctx.policy.token_env;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|a| a.to_str().ok())
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim)
            .or(q.get("token").map(String::as_str));
        let ok = match (&st.ctx.policy.token, given) {
            (Some(want), Some(t)) => conn::same(t, want),
            _ => false,
        };
        if !ok {
            return err(
                StatusCode::UNAUTHORIZED,
                format!(
                    "chat from other machines needs the control token (${env} on the server) as `Authorization: Bearer TOKEN` or ?token="
                ),
            );
        }
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| {
            c.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json_type {
        return err(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the message as JSON with Content-Type: application/json".into(),
        );
    }
    if body.len() > crate::relay::generic::MAX_LINE {
        return err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a chat message is at most {} bytes",
                crate::relay::generic::MAX_LINE
            ),
        );
    }
    let text = String::from_utf8_lossy(&body);
    let msg = match crate::relay::generic::parse(&text, "http") {
        Ok(m) => m,
        Err(why) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("not a chat message: {why}"),
            );
        }
    };
    match desk.post(msg) {
        Ok(()) => json_response(StatusCode::ACCEPTED, serde_json::json!({"accepted": true})),
        Err(e @ crate::relay::desk::PostError::Disabled) => {
            err(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn stream(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    State(st): State<AppState>,
) -> Response {
    // A browser page may open the stream only from the server's own origins (or allowed ones):
    // loopback peers need no token, so any page in the host's browser could drive the idol.
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned());
    let host = host_of(&headers, &uri);
    if let Err(why) = st.guard.check_origin(origin.as_deref(), host.as_deref()) {
        return forbidden(why);
    }
    let token = q.get("token").cloned();
    ws.max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| async move {
            let (sink, stream) = socket.split();
            serve_connection(sink, stream, peer, token, st.ctx).await;
        })
}
