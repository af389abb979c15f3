//! The stream over NATS (`docs/scale.md`) on one machine over loopback, with the real `nats-server`:
//!
//! 1. publisher CPU: an `idol serve` session speaking for `seconds` with one WebSocket client, without
//!    and then with `--nats` (the reference and the change, same run, same fake stages);
//! 2. delivery lag (frame handed to the sinks → read by a client): `clients` WebSocket clients on
//!    the publisher itself (the reference), then the same number spread over `relays` `idol relay`s.
//!
//! 3. (`farm`) the render farm: the same batch of scripts rendered by 1 `idol worker`, then by 2
//!    (fresh queue each), jobs/s and the ratio; every output of the 2-worker run byte-identical to
//!    the 1-worker run's, and the first scripts' to a local `idol render`.
//!
//! `cargo bench --bench nats -- [relays] [clients] [seconds] [rounds] [tone|real]` (default 2 200 10
//! 3 tone) runs 1 (`rounds` times each way, alternating, medians) and 2; the goal is `-- 4
//! 2000 30` (4 relays × 500 clients each at the session's 60 fps, p99 lag). `real` runs 1 only,
//! with the real voice and face (Piper and the solver idol.toml builds) instead of the tone.
//! Fake voice (a tone) and the real face solver (so frames are published in all four rigs): this
//! measures the fan-out, not the models. Everything (publisher, relays, clients, nats-server) shares
//! this machine's cores.
//!
//! `cargo bench --bench nats -- farm [scripts] [threads]` (default 100 1) runs 3 with the real
//! voice and face (the checkout's models): each job renders with `--threads` ONNX threads, so with
//! threads = 1 the 2-worker run needs 2 free cores for its ideal 2×. Each worker is pinned to a core
//! of its own with `taskset` (`IDOL_BENCH_PIN=0`: not pinned).

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
    stat_secs(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// CPU seconds of `/proc/PID/stat`-style text (user + system).
fn stat_secs(stat: &str) -> f64 {
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// This process's CPU seconds by thread name: the servers' and relays' `idol-io` threads, the
/// bench's clients (`tokio-rt-worker`), and the rest (the session's conductor and stages).
fn cpu_by_role() -> [f64; 3] {
    let mut out = [0.0; 3];
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let secs = stat_secs(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default());
        let i = match comm.trim() {
            "idol-io" => 0,
            "tokio-rt-worker" => 1,
            _ => 2,
        };
        out[i] += secs;
    }
    out
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

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nats(port: u16) -> Killed {
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
    Killed(child)
}

fn publisher(
    nats: Option<String>,
    max_clients: usize,
    real: bool,
) -> (Server, Arc<parking_lot::Mutex<HashMap<u64, Instant>>>) {
    let rate = 22050;
    let released = Arc::new(parking_lot::Mutex::new(HashMap::new()));
    let (voice, face): idol::perform::adapters::VoiceAndFace = if real {
        // The voice and face idol.toml builds (Piper, the face solver), as a host runs them.
        let home = idol::assets::Home::from_manifest_dir();
        let config = idol::config::Config::default();
        idol::perform::adapters::build_voice_face(&home, &config)
            .expect("the real voice and face (idol fetch)")
    } else {
        (
            Box::new(ToneVoice::new(rate)),
            Box::new(
                RigFace::new(
                    Rig::builtin("arkit52").unwrap(),
                    FaceConfig::default(),
                    rate,
                )
                .unwrap(),
            ),
        )
    };
    let server = Server::start_with_sinks(
        Stages {
            persona: idol::perform::testing::conversation(),
            generator: Box::new(ScriptedGenerator::new([LINE])),
            segmenter: Box::new(SimpleSegmenter::new()),
            voice,
            face,
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
    nats_pid: Option<u32>,
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
        let roles0 = cpu_by_role();
        let nats0 = nats_pid.map(|p| {
            stat_secs(&std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
        });
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
        if n > 1 {
            let roles = cpu_by_role();
            let nats = nats0.map(|c0| {
                stat_secs(
                    &std::fs::read_to_string(format!("/proc/{}/stat", nats_pid.unwrap()))
                        .unwrap_or_default(),
                ) - c0
            });
            println!(
                "  CPU over {secs} s: servers' and relays' I/O threads {:.1} s, the bench's clients {:.1} s, session and other threads {:.1} s, nats-server {}",
                roles[0] - roles0[0],
                roles[1] - roles0[1],
                roles[2] - roles0[2],
                nats.map_or("-".into(), |c| format!("{c:.1} s"))
            );
        }
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
    if args.first().map(String::as_str) == Some("farm") {
        let scripts: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
        let threads: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
        farm(scripts.max(1), threads.max(1));
        return;
    }
    let relays: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2);
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rounds: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    let real = args.get(4).map(String::as_str) == Some("real");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let port = free_port();
    let nats = start_nats(port);
    let nats_pid = Some(nats.0.id());
    let url = format!("nats://127.0.0.1:{port}");

    // 1. Publisher CPU, one client, without then with NATS, alternating `rounds` times (a few
    // percent of a core: one run each is within the noise).
    let mut cpus: [Vec<f64>; 2] = [vec![], vec![]];
    for round in 0..rounds {
        for with in [false, true] {
            let (server, _) = publisher(with.then(|| url.clone()), 16, real);
            let (_, _, cpu) = measure(&rt, &[server.addr()], 1, server.addr(), secs, None);
            let published = server
                .nats_stats()
                .map(|s| {
                    s.published
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .to_string()
                })
                .unwrap_or_else(|| "-".into());
            println!(
                "publisher, 1 client, NATS {}, round {}: process CPU {cpu:.2} s over {secs} s ({:.1}% of one core); published {published}",
                if with { "on " } else { "off" },
                round + 1,
                100.0 * cpu / secs as f64
            );
            cpus[usize::from(with)].push(cpu);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        percentile(v, 0.5)
    };
    let (off, on) = (median(&mut cpus[0]), median(&mut cpus[1]));
    println!(
        "publisher CPU ({} voice), median of {rounds}: NATS off {off:.2} s, on {on:.2} s: {:+.1}%",
        if real { "real" } else { "tone" },
        100.0 * (on / off - 1.0)
    );
    if real {
        return;
    }

    // 2. Lag: the clients on the publisher, then on the relays.
    let (server, released) = publisher(Some(url.clone()), clients + 8, false);
    let (per, closed, cpu) = measure(
        &rt,
        &[server.addr()],
        clients,
        server.addr(),
        secs,
        nats_pid,
    );
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
    let (per, closed, cpu) = measure(&rt, &addrs, clients, server.addr(), secs, nats_pid);
    let l = lags(&per, &released.lock());
    println!(
        "relayed: {clients} clients over {relays} relays: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} frames), closed {closed}, CPU {cpu:.1} s",
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
        l.len()
    );
}

/// Script `i` of the farm batch: one or two short lines, a different text and seed each.
fn farm_script(i: usize) -> String {
    const OPENERS: [&str; 5] = [
        "[happy] Good evening, everyone.",
        "Thank you for the lovely messages.",
        "[surprised] Oh, that is a great question!",
        "Let me think about that for a moment.",
        "[sad:0.4] The last song is always the hardest.",
    ];
    let mut s = format!(
        "[script]\nseed = {}\nfps = 30\n\n[[line]]\ntext = \"{} This is line number {}.\"\n",
        i + 1,
        OPENERS[i % OPENERS.len()],
        i + 1
    );
    if i.is_multiple_of(3) {
        s.push_str("\n[[line]]\ntext = \"See you next time.\"\ngap = \"200ms\"\n");
    }
    s
}

fn idol_cmd(home: &std::path::Path) -> std::process::Command {
    idol_cmd_on(home, None)
}

/// `idol`, or `taskset -c CPU idol` to keep it on one core.
fn idol_cmd_on(home: &std::path::Path, cpu: Option<usize>) -> std::process::Command {
    let idol = env!("CARGO_BIN_EXE_idol");
    let mut c = match cpu {
        Some(n) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", &n.to_string(), idol]);
            c
        }
        None => std::process::Command::new(idol),
    };
    c.current_dir(home)
        .env("IDOL_HOME", home)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

fn run_ok(c: &mut std::process::Command) {
    let o = c
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("idol runs");
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The files of a render folder, by name.
fn outputs(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// 1 worker, then 2, each on a fresh JetStream queue holding the same `n` scripts.
fn farm(n: usize, threads: usize) {
    let home = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::Builder::new()
        .prefix("idol-bench-farm")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let scripts: Vec<std::path::PathBuf> = (0..n)
        .map(|i| {
            let p = work.path().join(format!("s{i:03}.script.toml"));
            std::fs::write(&p, farm_script(i)).unwrap();
            p
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "farm: {n} scripts, {threads} ONNX thread(s) a job, load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    // Workers pinned to cores of their own (`taskset`), as the goal has them, unless
    // IDOL_BENCH_PIN=0 or there is no taskset.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = std::env::var("IDOL_BENCH_PIN").as_deref() != Ok("0")
        && cores >= 2
        && std::process::Command::new("taskset")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
    println!(
        "farm: workers {}",
        if pin {
            "pinned to cores of their own (taskset)"
        } else {
            "not pinned"
        }
    );
    let mut rates = vec![];
    for workers in [1usize, 2] {
        let port = free_port();
        let store = tempfile::tempdir().unwrap();
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nats-server (apt-get install nats-server)");
        let _nats = Killed(
            std::process::Command::new(bin)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(store.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let url = format!("nats://127.0.0.1:{port}");
        let out = work.path().join(format!("w{workers}"));
        run_ok(
            idol_cmd(home)
                .args(["render", "--queue", &url, "--threads", &threads.to_string()])
                .args(&scripts)
                .arg("--out")
                .arg(&out),
        );
        let mut events = rt.block_on(async {
            let c = async_nats::connect(&url).await.unwrap();
            let sub = c.subscribe("idol.jobs.events.>").await.unwrap();
            c.flush().await.unwrap();
            sub
        });
        let t0 = Instant::now();
        let mut procs: Vec<Killed> = (0..workers)
            .map(|w| {
                let mut c = idol_cmd_on(home, pin.then(|| w % cores));
                Killed(
                    c.args(["worker", "--nats", &url, "--name", &format!("w{w}")])
                        .spawn()
                        .unwrap(),
                )
            })
            .collect();
        // Finished jobs counted from the workers' `done`/`failed` events (no polling: listing every
        // status takes a request per job, which would load the cores the workers run on).
        let done = rt.block_on(async {
            let mut finished = std::collections::HashSet::new();
            while finished.len() < n {
                let Some(m) = events.next().await else { break };
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                if v["event"] == "done" || v["event"] == "failed" {
                    finished.insert(m.subject.to_string());
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let q = idol::farm::Queue::open(&url, Duration::from_secs(30))
                .await
                .unwrap();
            (secs, q.statuses().await.unwrap())
        });
        let (secs, done) = done;
        procs.clear();
        let failed = done
            .iter()
            .filter(|j| j.state == idol::farm::JobState::Failed)
            .count();
        let per_worker: HashMap<String, usize> = done.iter().fold(HashMap::new(), |mut m, j| {
            *m.entry(j.worker.clone().unwrap_or_default()).or_default() += 1;
            m
        });
        let rate = n as f64 / secs;
        rates.push(rate);
        println!(
            "farm: {workers} worker(s): {n} jobs in {secs:.1} s = {rate:.2} jobs/s ({:.2} s a job), failed {failed}, per worker {per_worker:?}",
            secs / n as f64
        );
    }
    println!(
        "farm: 2 workers / 1 worker throughput: {:.2}x",
        rates[1] / rates[0]
    );
    // Byte-identical: the two runs, and the first scripts against local renders.
    let mut differ = 0;
    for p in &scripts {
        let name = p.file_name().unwrap().to_string_lossy();
        let name = name.trim_end_matches(".script.toml");
        let a = outputs(&work.path().join("w1").join(name));
        let b = outputs(&work.path().join("w2").join(name));
        if a.is_empty() || a != b {
            differ += 1;
        }
    }
    let mut local_differ = 0;
    let checked = n.min(3);
    for p in &scripts[..checked] {
        let name = p.file_name().unwrap().to_string_lossy();
        let name = name.trim_end_matches(".script.toml").to_string();
        let local = work.path().join("local").join(&name);
        run_ok(
            idol_cmd(home)
                .arg("render")
                .arg(p)
                .args(["--threads", &threads.to_string(), "--quiet", "--out"])
                .arg(&local),
        );
        if outputs(&local) != outputs(&work.path().join("w2").join(&name)) {
            local_differ += 1;
        }
    }
    println!(
        "farm: outputs differing between the 1- and 2-worker runs: {differ} of {n}; from a local render: {local_differ} of {checked}"
    );
}
