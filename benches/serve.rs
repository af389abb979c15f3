//! Fan-out benchmark of `idol serve`: N WebSocket subscribers (default 200) on one session at 60 fps,
//! with the idol speaking the whole time; for every frame, the delay from the moment the conductor
//! hands it to the sinks to the moment each client has read it (p50, p99, max), and how many clients
//! were dropped. Fake stages (tone voice, jaw face): this measures the server, not the models.
//!
//! `cargo bench --bench serve -- [clients] [seconds]`. The chat → first-audio latency benchmark needs
//! the real persona and voice and is not here.

use futures_util::{SinkExt, StreamExt};
use idol::perform::testing::{JawFace, ScriptedGenerator, ToneVoice};
use idol::perform::{Event, PerformConfig, SimpleSegmenter, Sink, Stages};
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

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let clients: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rate = 22050;
    let line = "Hello everyone, thank you for coming tonight. We will sing, we will talk, \
                and we will read your messages one by one.";
    let stages = Stages {
        generator: Box::new(ScriptedGenerator::new([line])),
        segmenter: Box::new(SimpleSegmenter::new()),
        voice: Box::new(ToneVoice::new(rate)),
        face: Box::new(JawFace::arkit(rate, 60)),
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
    let (per_client, frames_total, audio_total) = rt.block_on(async move {
        let mut socks = Vec::with_capacity(clients);
        for _ in 0..clients {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream"))
                .await
                .expect("connect");
            socks.push(ws);
        }
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
        let mut out = vec![];
        let mut frames = 0usize;
        let mut audio = 0u64;
        for t in tasks {
            let (got, a, closed) = t.await.unwrap();
            frames += got.len();
            audio += a;
            out.push((got, closed));
        }
        (out, frames, audio)
    });
    let released = released.lock();
    let mut lags: Vec<f64> = Vec::with_capacity(frames_total);
    let mut closed = 0;
    for (got, c) in &per_client {
        closed += usize::from(*c);
        for (stamp, at) in got {
            if let Some(r) = released.get(stamp) {
                lags.push(at.saturating_duration_since(*r).as_secs_f64() * 1000.0);
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
    println!(
        "clients closed: {closed} (dropped by the server for lag: {})",
        m.clients_dropped.load(Ordering::Relaxed)
    );
}
