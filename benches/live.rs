//! Chat → first audio on `idol serve` with the real model and voice: the server in-process on port 0
//! with the stages `idol serve` builds (`perform::adapters::build_stages` from idol.toml, persona
//! prefix warmed up at start), one WebSocket client sending chat messages one after another, each
//! waited for until the idol is idle again. For every message: the time from sending it to the first
//! audio chunk of its reply arriving, and the per-stage split from `/metrics` (LLM first token, first
//! clause, voice per clause, first audio handed to the sinks; each message's own values, taken as
//! the difference of the histograms' sums and counts around it).
//!
//! `cargo bench --bench live -- [messages] [max_tokens]` (defaults 20 and 40: the reply length does
//! not change the first audio, only how long each message takes to finish speaking).

use futures_util::{SinkExt, StreamExt};
use idol::assets::Home;
use idol::config::Config;
use idol::perform::PerformConfig;
use idol::server::protocol::{Binary, parse_binary};
use idol::server::{ConnPolicy, Server, ServerOptions};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const MESSAGES: [&str; 20] = [
    "hi mika!",
    "what are you up to tonight?",
    "do you like music?",
    "what is your favourite song?",
    "can you sing something for us?",
    "how was your day?",
    "what games do you play?",
    "do you have a pet?",
    "what is the weather like where you are?",
    "tell me a joke",
    "what should I eat for dinner?",
    "do you like cats or dogs more?",
    "what is your dream?",
    "say hello to my friend sam",
    "how long have you been streaming?",
    "what do you do for fun?",
    "any tips for learning to draw?",
    "what is your favourite colour?",
    "are you sleepy?",
    "good night mika!",
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `name_sum` and `name_count` of a histogram in a Prometheus text page.
fn sum_count(page: &str, name: &str) -> (f64, f64) {
    let get = |suffix: &str| {
        let key = format!("{name}_{suffix} ");
        page.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get("sum"), get("count"))
}

const STAGES: [(&str, &str); 4] = [
    ("idol_llm_first_token_seconds", "LLM first token"),
    ("idol_first_clause_seconds", "first clause"),
    ("idol_voice_seconds", "voice (per clause)"),
    ("idol_first_audio_sent_seconds", "first audio to sinks"),
];

/// CPU seconds this process has used (user + system).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the name: state is 0, utime 11, stime 12 (clock ticks of 1/100 s).
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let max_tokens: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(40);
    let home = Home::from_manifest_dir();
    let config = Config::load_or_default(&home.path("idol.toml")).expect("idol.toml");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "live: chat → first audio, {n} messages, max {max_tokens} tokens, llm threads {}, load average at start {}",
        config.llm.threads,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let t = Instant::now();
    let mut stages = idol::perform::adapters::build_stages(&home, &config)
        .expect("the real stages (run `idol fetch` first)");
    // no memory file: every run starts from the same prompt
    stages.persona =
        idol::perform::adapters::build_conversation(&home, &config, false).expect("persona");
    let reply_tokens = max_tokens.min(stages.persona.params.max_tokens);
    stages.persona.set_max_tokens(reply_tokens);
    // one benchmark client sends every message: no per-viewer rate limit
    stages.persona.set_rate_limit(None);
    println!("stages loaded in {:.2} s", t.elapsed().as_secs_f64());
    let perform = PerformConfig {
        fps: config.face.fps,
        warm_up: true,
        ..PerformConfig::default()
    };
    let server = Server::start(
        stages,
        perform,
        ServerOptions {
            bind: [127, 0, 0, 1].into(),
            port: 0,
            max_clients: 4,
            max_client_lag: Duration::from_secs(30),
            policy: ConnPolicy::default(),
            rigs_dir: None,
            ..ServerOptions::default()
        },
    )
    .expect("server");
    let addr = server.addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let http = reqwest::Client::new();
        let metrics = || {
            let http = http.clone();
            async move {
                http.get(format!("http://{addr}/metrics"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            }
        };
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream"))
            .await
            .unwrap();
        // The warm-up runs on the persona thread while the server starts; a `say` queues behind it,
        // so its end marks the warm persona (its own voice time is not counted anywhere below).
        let t = Instant::now();
        ws.send(Message::Text(
            json!({"type":"say","text":"Ready."}).to_string().into(),
        ))
        .await
        .unwrap();
        let mut say_utt = None;
        'warm: while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "ack" {
                    say_utt = v["utterance"].as_u64();
                }
                if v["type"] == "state" && v["state"] == "idle" && say_utt.is_some() {
                    break 'warm;
                }
            }
        }
        println!(
            "warm-up (persona prefix + a one-word say) done {:.2} s after start",
            t.elapsed().as_secs_f64()
        );
        let cpu0 = cpu_secs();
        let wall0 = Instant::now();
        let mut firsts = vec![];
        let mut split: Vec<[f64; 4]> = vec![];
        for (i, text) in MESSAGES.iter().cycle().take(n).enumerate() {
            let before = metrics().await;
            let sent = Instant::now();
            ws.send(Message::Text(
                json!({"type":"chat","user":"viewer","text":text}).to_string().into(),
            ))
            .await
            .unwrap();
            let mut utt = None;
            let mut first = None;
            let mut spoke = false;
            let mut first_caption = String::new();
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Binary(b) => {
                        if let Some(Binary::Audio { utterance, .. }) = parse_binary(&b)
                            && Some(utterance as u64) == utt
                            && first.is_none()
                        {
                            first = Some(sent.elapsed());
                        }
                    }
                    Message::Text(t) => {
                        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                        if v["type"] == "ack" {
                            utt = v["utterance"].as_u64();
                        }
                        if v["type"] == "caption"
                            && first_caption.is_empty()
                            && v["utterance"].as_u64() == utt
                        {
                            first_caption = v["text"].as_str().unwrap_or_default().to_string();
                        }
                        if v["type"] == "state" && v["utterance"].as_u64() == utt && utt.is_some()
                        {
                            spoke |= v["state"] == "speaking";
                        }
                        if v["type"] == "state" && v["state"] == "idle" && (spoke || first.is_some())
                        {
                            break;
                        }
                        if v["type"] == "error" {
                            println!("  error: {v}");
                        }
                    }
                    _ => {}
                }
            }
            let after = metrics().await;
            let mut row = [f64::NAN; 4];
            for (k, (name, _)) in STAGES.iter().enumerate() {
                let (s0, c0) = sum_count(&before, name);
                let (s1, c1) = sum_count(&after, name);
                if c1 > c0 {
                    row[k] = (s1 - s0) / (c1 - c0) * 1000.0;
                }
            }
            let ms = first.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
            println!(
                "  {:2} {ms:7.0} ms  (llm first token {:6.0}, first clause {:6.0}, voice {:5.0}, first audio {:6.0})  {text:?} → {first_caption:?}",
                i + 1,
                row[0],
                row[1],
                row[2],
                row[3]
            );
            if first.is_some() {
                firsts.push(ms);
                split.push(row);
            }
        }
        let cpu = cpu_secs() - cpu0;
        let wall = wall0.elapsed().as_secs_f64();
        firsts.sort_by(|a, b| a.total_cmp(b));
        println!(
            "chat → first audio chunk at the client over {} replies: p50 {:.0} ms, p95 {:.0} ms, min {:.0}, max {:.0}",
            firsts.len(),
            percentile(&firsts, 0.5),
            percentile(&firsts, 0.95),
            firsts.first().copied().unwrap_or(f64::NAN),
            firsts.last().copied().unwrap_or(f64::NAN)
        );
        for (k, (_, label)) in STAGES.iter().enumerate() {
            let mut v: Vec<f64> = split.iter().map(|r| r[k]).filter(|x| x.is_finite()).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            println!(
                "  {label:22} p50 {:6.0} ms  p95 {:6.0} ms",
                percentile(&v, 0.5),
                percentile(&v, 0.95)
            );
        }
        println!(
            "process CPU {cpu:.1} s over {wall:.1} s wall ({:.2} cores)",
            cpu / wall
        );
    });
    drop(server);
}
