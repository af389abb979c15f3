//! Fan-out benchmark of `idol serve`: N WebSocket subscribers (default 200) on one session at 60 fps,
//! with the idol speaking the whole time; for every frame, the delay from the moment the conductor
//! hands it to the sinks to the moment each client has read it (p50, p99, max), and how many clients
//! were dropped. Fake stages (tone voice, jaw face): this measures the server, not the models.
//!
//! `cargo bench --bench serve -- [clients] [seconds] [rigs] [face]`. `rigs` (1 to 4, default 1):
//! clients are spread round-robin over that many rigs (arkit52, the session's, then vrm, live2d,
//! oculus15), so the hub retargets each frame once per foreign rig in use. `face`: `jaw` (the fake
//! jaw-only face, default with one rig; its frames carry no canonical vector) or `solver` (the real
//! face solver, needed with more than one rig). The chat → first-audio latency benchmark needs the
//! real persona and voice and is not here.
//!
//! Besides the lag, the process's CPU time over the run (server and clients together, from
//! /proc/self/stat) is printed, since the machine may be shared.

use futures_util::{SinkExt, StreamExt};
use idol::face::{FaceConfig, Rig};
use idol::perform::rig_face::RigFace;
use idol::perform::testing::{JawFace, ScriptedGenerator, ToneVoice};
use idol::perform::{Event, FaceSolver, PerformConfig, SimpleSegmenter, Sink, Stages};
use idol::server::protocol::{Binary, parse_binary};
use idol::server::{ConnPolicy, Server, ServerOptions};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Records when each frame stamp was handed to the sinks (it runs just before the hub).
struct Probe(Arc<parking_lot::Mutex<HashMap<u64, Instant>>>);

impl Sink for Probe {
    fn event(&mut self, ev: &Event) {
        if let Event::Frame(f) = ev {
            self.0.lock().insert(f.frame.at.get(), Instant::now());
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// User + system CPU seconds of this process so far (Linux; clock ticks at 100 Hz).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

const RIGS: [&str; 4] = ["arkit52", "vrm", "live2d", "oculus15"];

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let clients: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rigs: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
        .clamp(1, RIGS.len());
    let solver = match args.get(3).map(String::as_str) {
        Some("solver") => true,
        Some("jaw") | None => rigs > 1,
        Some(other) => panic!("face must be jaw or solver, not {other:?}"),
    };
    assert!(
        solver || rigs == 1,
        "more than one rig needs the solver face"
    );
    let rate = 22050;
    let line = "Hello everyone, thank you for coming tonight. We will sing, we will talk, \
                and we will read your messages one by one.";
    let stages = Stages {
        persona: idol::perform::testing::conversation(),
        generator: Box::new(ScriptedGenerator::new([line])),
        segmenter: Box::new(SimpleSegmenter::new()),
        voice: Box::new(ToneVoice::new(rate)),
        face: if solver {
            Box::new(
                RigFace::new(
                    Rig::builtin("arkit52").unwrap(),
                    FaceConfig::default(),
                    rate,
                )
                .unwrap(),
            ) as Box<dyn FaceSolver>
        } else {
            Box::new(JawFace::arkit(rate, 60))
        },
    };
    let released = Arc::new(parking_lot::Mutex::new(HashMap::new()));
    let server = Server::start_with_sinks(
        stages,
        PerformConfig::default(),
        ServerOptions {
            bind: [127, 0, 0, 1].into(),
            port: 0,
            max_clients: clients + 8,
            max_client_lag: Duration::from_millis(2000),
            policy: ConnPolicy::default(),
            rigs_dir: None,
            ..ServerOptions::default()
        },
        vec![Box::new(Probe(released.clone()))],
    )
    .expect("server starts");
    let addr = server.addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (per_client, frames_total, audio_total, cpu) = rt.block_on(async move {
        let mut socks = Vec::with_capacity(clients);
        for i in 0..clients {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream"))
                .await
                .expect("connect");
            if i % rigs != 0 {
                let sub = serde_json::json!({"type": "subscribe", "rig": RIGS[i % rigs]});
                ws.send(Message::Text(sub.to_string().into()))
                    .await
                    .unwrap();
                // Wait for the ack (frames before it are in the session's rig).
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) if t.as_str().contains("\"ack\"") => break,
                        Some(Ok(Message::Text(t))) if t.as_str().contains("\"error\"") => {
                            panic!("subscribe refused: {}", t.as_str())
                        }
                        Some(Ok(_)) => {}
                        other => panic!("connection ended: {other:?}"),
                    }
                }
            }
            socks.push(ws);
        }
        let cpu0 = cpu_secs();
        let stop = Instant::now() + Duration::from_secs(secs);
        let mut tasks = vec![];
        for ws in socks {
            tasks.push(tokio::spawn(async move {
                let (_tx, mut rx) = ws.split();
                let mut got: Vec<(u64, Instant)> = Vec::new();
                let mut audio = 0u64;
                let mut closed = false;
                while Instant::now() < stop {
                    match tokio::time::timeout(Duration::from_millis(200), rx.next()).await {
                        Ok(Some(Ok(Message::Binary(b)))) => match parse_binary(&b) {
                            Some(Binary::Frame { sample, .. }) => {
                                got.push((sample, Instant::now()))
                            }
                            Some(Binary::Audio { pcm, .. }) => audio += pcm.len() as u64,
                            None => {}
                        },
                        Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                            closed = true;
                            break;
                        }
                        _ => {}
                    }
                }
                (got, audio, closed)
            }));
        }
        // Keep her talking.
        let (mut ctl, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream"))
            .await
            .unwrap();
        while Instant::now() < stop {
            let say = serde_json::json!({"type": "say", "text": line}).to_string();
            ctl.send(Message::Text(say.into())).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), ctl.next()).await
            {
            }
        }
        let cpu = cpu_secs() - cpu0;
        let mut out = vec![];
        let mut frames = 0usize;
        let mut audio = 0u64;
        for t in tasks {
            let (got, a, closed) = t.await.unwrap();
            frames += got.len();
            audio += a;
            out.push((got, closed));
        }
        (out, frames, audio, cpu)
    });
    let released = released.lock();
    let mut lags: Vec<f64> = Vec::with_capacity(frames_total);
    let mut by_rig: Vec<Vec<f64>> = vec![vec![]; rigs];
    let mut closed = 0;
    for (i, (got, c)) in per_client.iter().enumerate() {
        closed += usize::from(*c);
        for (stamp, at) in got {
            if let Some(r) = released.get(stamp) {
                let ms = at.saturating_duration_since(*r).as_secs_f64() * 1000.0;
                lags.push(ms);
                by_rig[i % rigs].push(ms);
            }
        }
    }
    lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = server.perform().metrics();
    println!(
        "fan-out: {clients} clients, {secs} s, {} frames delivered ({:.1} fps per client), {:.1} s of audio per client",
        frames_total,
        frames_total as f64 / clients as f64 / secs as f64,
        audio_total as f64 / clients as f64 / rate as f64
    );
    println!(
        "delivery lag (sink hand-off -> client read): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN)
    );
    if rigs > 1 {
        for (k, l) in by_rig.iter_mut().enumerate() {
            l.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "  {:<8} {:>3} clients: p50 {:.2} ms, p99 {:.2} ms",
                RIGS[k],
                (0..clients).filter(|i| i % rigs == k).count(),
                percentile(l, 0.5),
                percentile(l, 0.99)
            );
        }
    }
    println!(
        "face {}, {rigs} rig(s), frames retargeted by the hub: {}; process CPU {cpu:.1} s over {secs} s ({:.0}% of one core)",
        if solver { "solver" } else { "jaw" },
        m.frames_retargeted.load(Ordering::Relaxed),
        100.0 * cpu / secs as f64
    );
    println!(
        "clients closed: {closed} (dropped by the server for lag: {})",
        m.clients_dropped.load(Ordering::Relaxed)
    );
}
