//! The stream over NATS (`docs/scale.md`) on one machine over loopback, with the real `nats-server`:
//!
//! 1. publisher CPU: an `idol serve` session speaking for `seconds` with one WebSocket client, without
//!    and then with `--nats` (the reference and the change, same run, same fake stages);
//! 2. delivery lag (frame handed to the sinks → read by a client): `clients` WebSocket clients on
//!    the publisher itself (the reference), then the same number spread over `relays` `idol relay`s.
//!
//! `cargo bench --bench nats -- [relays] [clients] [seconds]` (default 2 200 10). Fake voice (a
//! tone) and the real face solver (so frames are published in all four rigs): this measures the
//! fan-out, not the models. Everything (publisher, relays, clients, nats-server) shares this
//! machine's cores.

use futures_util::{SinkExt, StreamExt};
use idol::face::{FaceConfig, Rig};
use idol::perform::rig_face::RigFace;
use idol::perform::testing::{ScriptedGenerator, ToneVoice};
use idol::perform::{Event, PerformConfig, SimpleSegmenter, Sink, Stages};
use idol::server::protocol::{Binary, parse_binary};
use idol::server::{NatsOptions, NatsRelay, Server, ServerOptions};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const LINE: &str = "Hello everyone, thank you for coming tonight. We will sing, we will talk, \
                    and we will read your messages one by one.";

struct Probe(Arc<parking_lot::Mutex<HashMap<u64, Instant>>>);

impl Sink for Probe {
    fn event(&mut self, ev: &Event) {
        if let Event::Frame(f) = ev {
            self.0.lock().insert(f.frame.at.get(), Instant::now());
        }
    }
}

fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nats(std::process::Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nats(port: u16) -> Nats {
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nats-server (apt-get install nats-server)");
    let child = std::process::Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    Nats(child)
}

fn publisher(
    nats: Option<String>,
    max_clients: usize,
) -> (Server, Arc<parking_lot::Mutex<HashMap<u64, Instant>>>) {
    let rate = 22050;
    let released = Arc::new(parking_lot::Mutex::new(HashMap::new()));
    let server = Server::start_with_sinks(
        Stages {
            persona: idol::perform::testing::conversation(),
            generator: Box::new(ScriptedGenerator::new([LINE])),
            segmenter: Box::new(SimpleSegmenter::new()),
            voice: Box::new(ToneVoice::new(rate)),
            face: Box::new(
                RigFace::new(
                    Rig::builtin("arkit52").unwrap(),
                    FaceConfig::default(),
                    rate,
                )
                .unwrap(),
            ),
        },
        PerformConfig::default(),
        ServerOptions {
            port: 0,
            max_clients,
            max_client_lag: Duration::from_millis(2000),
            nats: nats.map(|url| NatsOptions {
                url,
                idol: "bench".into(),
                queue: 4096,
            }),
            ..ServerOptions::default()
        },
        vec![Box::new(Probe(released.clone()))],
    )
    .expect("server starts");
    (server, released)
}

/// Connect `n` clients spread over `addrs`, keep the idol talking through `ctl` for `secs`; each
/// client's frames (stamp, when read), how many were closed, and the process CPU seconds.
fn measure(
    rt: &tokio::runtime::Runtime,
    addrs: &[SocketAddr],
    n: usize,
    ctl: SocketAddr,
    secs: u64,
) -> (Vec<Vec<(u64, Instant)>>, usize, f64) {
    rt.block_on(async {
        let mut socks = vec![];
        for i in 0..n {
            let addr = addrs[i % addrs.len()];
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream"))
                .await
                .expect("connect");
            socks.push(ws);
        }
        let cpu0 = cpu_secs();
        let stop = Instant::now() + Duration::from_secs(secs);
        let mut tasks = vec![];
        for ws in socks {
            tasks.push(tokio::spawn(async move {
                let (_tx, mut rx) = ws.split();
                let mut got = vec![];
                let mut closed = false;
                while Instant::now() < stop {
                    match tokio::time::timeout(Duration::from_millis(200), rx.next()).await {
                        Ok(Some(Ok(Message::Binary(b)))) => {
                            if let Some(Binary::Frame { sample, .. }) = parse_binary(&b) {
                                got.push((sample, Instant::now()));
                            }
                        }
                        Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                            closed = true;
                            break;
                        }
                        _ => {}
                    }
                }
                (got, closed)
            }));
        }
        let (mut c, _) = tokio_tungstenite::connect_async(format!("ws://{ctl}/v1/stream"))
            .await
            .unwrap();
        while Instant::now() < stop {
            let say = serde_json::json!({"type": "say", "text": LINE}).to_string();
            c.send(Message::Text(say.into())).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), c.next()).await {
            }
        }
        let cpu = cpu_secs() - cpu0;
        let mut out = vec![];
        let mut closed = 0;
        for t in tasks {
            let (got, cl) = t.await.unwrap();
            closed += usize::from(cl);
            out.push(got);
        }
        (out, closed, cpu)
    })
}

fn lags(per: &[Vec<(u64, Instant)>], released: &HashMap<u64, Instant>) -> Vec<f64> {
    let mut l: Vec<f64> = per
        .iter()
        .flatten()
        .filter_map(|(s, at)| {
            released
                .get(s)
                .map(|r| at.saturating_duration_since(*r).as_secs_f64() * 1000.0)
        })
        .collect();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    l
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let relays: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2);
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let port = free_port();
    let _nats = start_nats(port);
    let url = format!("nats://127.0.0.1:{port}");

    // 1. Publisher CPU, one client, without then with NATS.
    for with in [false, true] {
        let (server, _) = publisher(with.then(|| url.clone()), 16);
        let (_, _, cpu) = measure(&rt, &[server.addr()], 1, server.addr(), secs);
        let published = server
            .nats_stats()
            .map(|s| {
                s.published
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_string()
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "publisher, 1 client, NATS {}: process CPU {cpu:.2} s over {secs} s ({:.1}% of one core); published {published}",
            if with { "on " } else { "off" },
            100.0 * cpu / secs as f64
        );
    }

    // 2. Lag: the clients on the publisher, then on the relays.
    let (server, released) = publisher(Some(url.clone()), clients + 8);
    let (per, closed, cpu) = measure(&rt, &[server.addr()], clients, server.addr(), secs);
    let l = lags(&per, &released.lock());
    println!(
        "direct: {clients} clients on the publisher: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} frames), closed {closed}, CPU {cpu:.1} s",
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
        l.len()
    );
    let relay_list: Vec<NatsRelay> = (0..relays)
        .map(|_| {
            NatsRelay::start(ServerOptions {
                port: 0,
                max_clients: clients + 8,
                max_client_lag: Duration::from_millis(2000),
                nats: Some(NatsOptions {
                    url: url.clone(),
                    idol: "bench".into(),
                    queue: 4096,
                }),
                ..ServerOptions::default()
            })
            .expect("relay starts")
        })
        .collect();
    let addrs: Vec<SocketAddr> = relay_list.iter().map(|r| r.addr()).collect();
    let (per, closed, cpu) = measure(&rt, &addrs, clients, server.addr(), secs);
    let l = lags(&per, &released.lock());
    println!(
        "relayed: {clients} clients over {relays} relays: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} frames), closed {closed}, CPU {cpu:.1} s",
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
        l.len()
    );
}
