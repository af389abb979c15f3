//! Chat relays under load: a real InspIRCd on loopback, the Twitch relay reading it, and `idol
//! serve` in-process with the stages idol.toml builds (the real model and voice).
//!
//! 1. **Latency**: `n` viewer messages, each sent twice, one at a time (each waited for until the
//!    idol is idle again): by the relay path (a viewer's `PRIVMSG` on the IRC server → relay →
//!    policy → persona) and by the reference path, the same server's WebSocket `chat`, which path
//!    first alternating. For each, the time
//!    from sending to the first audio chunk of the reply at a WebSocket client; p50 of each path and
//!    their ratio (the relay's own cost is the difference).
//! 2. **Flood**: `rate` messages a minute for `secs` seconds from `viewers` IRC viewers in turn, while the idol
//!    answers what the policy picks. Measured: `/healthz` round trips every 100 ms (p50, p99, max),
//!    the process's resident memory (start, peak, end), the relay's counters and the policy's
//!    decisions.
//!
//! `cargo bench --bench relay -- [n] [rate] [secs] [max_tokens] [viewers]` (defaults 10, 1000, 60,
//! 40, 200).

use futures_util::{SinkExt, StreamExt};
use idol::assets::Home;
use idol::config::{Config, TwitchConfig};
use idol::perform::PerformConfig;
use idol::relay::{ChatDesk, RelayState};
use idol::server::protocol::{Binary, parse_binary};
use idol::server::{Server, ServerOptions};
use serde_json::json;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const MESSAGES: [&str; 10] = [
    "hi mika!",
    "what are you up to tonight?",
    "do you like music?",
    "what is your favourite song?",
    "how was your day?",
    "what games do you play?",
    "do you have a pet?",
    "tell me a joke",
    "what is your dream?",
    "what do you do for fun?",
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// InspIRCd and the folder holding its config (removed when dropped).
struct Ircd(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Ircd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ircd(port: u16) -> Ircd {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = format!(
        r#"<server name="irc.idol.bench" description="idol bench" network="idolbench">
<admin name="b" nick="b" email="b@idol.bench">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect name="main" allow="*" timeout="60" pingfreq="120" recvq="65536" sendq="4194304" threshold="1000000" commandrate="100000000" fakelag="no" localmax="10000" globalmax="10000" maxconnwarn="no" resolvehostnames="no" useident="no">
<pid file="{d}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{d}/ircd.log">
<module name="cap">
<module name="ircv3">
<module name="ircv3_ctctags">
<module name="ircv3_msgid">
"#
    );
    let path = dir.path().join("inspircd.conf");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let child = Command::new("inspircd")
        .args(["--nofork", "--runasroot"])
        .arg(format!("--config={}", path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("inspircd (apt-get install inspircd)");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ircd(child, dir)
}

/// An IRC viewer: registered and in the channel; PINGs are not expected (pingfreq 120 s).
async fn viewer(port: u16, nick: &str) -> tokio::net::tcp::OwnedWriteHalf {
    let (r, mut w) = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap()
        .into_split();
    let mut r = BufReader::new(r);
    w.write_all(format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    // JOIN only once registered (the server drops commands before its welcome).
    for until in [" 001 ", " 366 "] {
        loop {
            line.clear();
            assert!(r.read_line(&mut line).await.unwrap() > 0, "ircd closed");
            if line.contains(until) {
                break;
            }
        }
        if until == " 001 " {
            w.write_all(b"JOIN #idol\r\n").await.unwrap();
        }
    }
    // Drain the rest in the background so the server never blocks on this client.
    tokio::spawn(async move {
        let mut line = String::new();
        while r.read_line(&mut line).await.unwrap_or(0) > 0 {
            line.clear();
        }
    });
    w
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// From now until the first audio of the next utterance, then until idle: the first-audio time.
async fn first_audio_then_idle(ws: &mut Ws, sent: Instant) -> f64 {
    let mut utt = None;
    let mut first = None;
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "state" && v["state"] == "thinking" && utt.is_none() {
                    utt = v["utterance"].as_u64();
                }
                if v["type"] == "state" && v["state"] == "idle" && first.is_some() {
                    break;
                }
            }
            Message::Binary(b) => {
                if let Some(Binary::Audio { utterance, .. }) = parse_binary(&b)
                    && Some(utterance as u64) == utt
                    && first.is_none()
                {
                    first = Some(sent.elapsed().as_secs_f64() * 1000.0);
                }
            }
            _ => {}
        }
    }
    first.expect("a reply with audio")
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (n, rate, secs, max_tokens) = (arg(0, 10), arg(1, 1000), arg(2, 60), arg(3, 40));
    let nviewers = arg(4, 200).max(1) as usize;
    let home = Home::from_manifest_dir();
    let config = Config::load_or_default(&home.path("idol.toml")).expect("idol.toml");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "relay: {n} messages one at a time, then {rate}/min for {secs} s from {nviewers} viewers; model {}, max {max_tokens} tokens; load average at start {}",
        config.llm.model.display(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _ircd = ircd(port);
    let mut stages = idol::perform::adapters::build_stages(&home, &config).expect("stages");
    stages.persona =
        idol::perform::adapters::build_conversation(&home, &config, false).expect("persona");
    stages.persona.set_max_tokens(max_tokens as usize);
    let name = stages.persona.card().name.clone();
    let mut relays = config.relays.clone();
    relays.twitch = Some(TwitchConfig {
        server: format!("127.0.0.1:{port}"),
        channel: "idol".into(),
        nick: None,
        token_env: None,
    });
    let desk: Arc<ChatDesk> =
        idol::relay::desk::from_config(&relays, std::slice::from_ref(&name), false).unwrap();
    let server = Server::start(
        stages,
        PerformConfig {
            fps: config.face.fps,
            warm_up: true,
            ..PerformConfig::default()
        },
        ServerOptions {
            port: 0,
            max_client_lag: Duration::from_secs(30),
            chat_desk: Some(desk.clone()),
            ..ServerOptions::default()
        },
    )
    .expect("server");
    let addr: SocketAddr = server.addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream"))
            .await
            .unwrap();
        while desk.statuses()[0].state() != RelayState::Connected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Warm: the persona prefix is evaluated at start; a say queues behind it.
        ws.send(Message::Text(json!({"type":"say","text":"Ready."}).to_string().into()))
            .await
            .unwrap();
        first_audio_then_idle(&mut ws, Instant::now()).await;

        // 1. Latency, alternating paths; each message from a new viewer name.
        let mut irc = viewer(port, "fan0").await;
        let (mut relay_ms, mut ws_ms) = (vec![], vec![]);
        // Each text goes both ways, the path taken first alternating, so both paths see the same
        // prompts and history lengths.
        for (i, text) in MESSAGES.iter().cycle().take(n as usize).enumerate() {
            for relay_path in [i % 2 == 0, i % 2 != 0] {
                let sent = Instant::now();
                if relay_path {
                    irc.write_all(format!("PRIVMSG #idol :{text}\r\n").as_bytes())
                        .await
                        .unwrap();
                    let ms = first_audio_then_idle(&mut ws, sent).await;
                    println!("  relay {i:2}: {ms:7.0} ms  {text}");
                    relay_ms.push(ms);
                    // A new viewer per relayed message: the per-viewer limits are not measured.
                    irc = viewer(port, &format!("fan{}", i + 1)).await;
                } else {
                    ws.send(Message::Text(
                        json!({"type":"chat","user":format!("ws{i}"),"text":text})
                            .to_string()
                            .into(),
                    ))
                    .await
                    .unwrap();
                    let ms = first_audio_then_idle(&mut ws, sent).await;
                    println!("  ws    {i:2}: {ms:7.0} ms  {text}");
                    ws_ms.push(ms);
                }
            }
        }
        relay_ms.sort_by(f64::total_cmp);
        ws_ms.sort_by(f64::total_cmp);
        let (r50, w50) = (percentile(&relay_ms, 0.5), percentile(&ws_ms, 0.5));
        println!(
            "first audio p50: relay {r50:.0} ms (min {:.0}, max {:.0}, n {}), WebSocket chat {w50:.0} ms (min {:.0}, max {:.0}, n {}); ratio {:.2}",
            relay_ms[0],
            relay_ms[relay_ms.len() - 1],
            relay_ms.len(),
            ws_ms[0],
            ws_ms[ws_ms.len() - 1],
            ws_ms.len(),
            r50 / w50
        );

        // 2. Flood. Keep reading the stream so this client never lags.
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
        let mut viewers = vec![];
        for k in 0..nviewers {
            viewers.push(viewer(port, &format!("flood{k}")).await);
        }
        let before = desk.decisions();
        let in0 = desk.statuses()[0].snapshot().messages_in;
        let rss0 = rss_mib();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let prober = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut rtts = vec![];
            let mut peak = 0f64;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let ok = http
                    .get(format!("http://{addr}/healthz"))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                assert!(ok, "/healthz failed during the flood");
                rtts.push(t.elapsed().as_secs_f64() * 1000.0);
                peak = peak.max(rss_mib());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (rtts, peak)
        });
        let total = rate * secs / 60;
        let every = Duration::from_secs_f64(60.0 / rate as f64);
        let t0 = tokio::time::Instant::now();
        for i in 0..total {
            tokio::time::sleep_until(t0 + every * i as u32).await;
            let v = &mut viewers[i as usize % nviewers];
            let mention = if i % 25 == 0 { "mika, " } else { "" };
            v.write_all(format!("PRIVMSG #idol :{mention}message {i} in the flood\r\n").as_bytes())
                .await
                .unwrap();
        }
        let sent_for = t0.elapsed().as_secs_f64();
        // Let the relay read the tail.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut rtts, peak) = prober.await.unwrap();
        reader.abort();
        rtts.sort_by(f64::total_cmp);
        let snap = desk.statuses()[0].snapshot();
        println!(
            "flood: {total} messages in {sent_for:.1} s; relay read {} (dropped {}), connects {}",
            snap.messages_in - in0,
            snap.dropped,
            snap.connects
        );
        println!(
            "/healthz during the flood: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} probes)",
            percentile(&rtts, 0.5),
            percentile(&rtts, 0.99),
            rtts[rtts.len() - 1],
            rtts.len()
        );
        println!(
            "resident memory: {rss0:.0} MiB before, peak {peak:.0} MiB, {:.0} MiB after",
            rss_mib()
        );
        let after = desk.decisions();
        let mut line = String::from("policy decisions during the flood:");
        for (k, v) in &after {
            let d = v - before.get(k).copied().unwrap_or(0);
            if d > 0 {
                line.push_str(&format!(" {k} {d};"));
            }
        }
        println!("{line}");
    });
    drop(server);
}
