//! The stream over NATS against the real `nats-server` (Debian's package; CI's .ci/run installs it)
//! on a loopback port, with the real voice and face: what `idol serve --nats` publishes is, byte for
//! byte, what its WebSocket clients get; control over NATS drives the idol; a NATS server that is
//! down never stops the session, and the publisher connects once one comes up.

use crate::serve::{In, Ws, next, send};
use futures_util::StreamExt;
use idol::server::protocol::parse_binary;
use idol::server::{NatsOptions, Server, ServerOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// How long anything may take before a test gives up (a bound against hangs, not a timing check).
const PATIENCE: Duration = Duration::from_secs(120);

fn nats_server_bin() -> PathBuf {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("these tests need nats-server: apt-get install nats-server (CI's .ci/run installs it)");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server` on a loopback port (with JetStream in a temporary directory when asked), killed
/// when dropped.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    jetstream: Option<tempfile::TempDir>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::on(free_port(), false)
    }

    /// With JetStream, its store in a fresh temporary directory.
    pub fn start_jetstream() -> NatsServer {
        NatsServer::on(free_port(), true)
    }

    /// On `port` (which may have been another server's).
    pub fn on(port: u16, jetstream: bool) -> NatsServer {
        let store = jetstream.then(|| tempfile::tempdir().unwrap());
        let mut c = Command::new(nats_server_bin());
        c.args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(d) = &store {
            c.arg("-js").arg("-sd").arg(d.path());
        }
        let child = c.spawn().expect("start nats-server");
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < PATIENCE,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        NatsServer {
            child: Some(child),
            port,
            jetstream: store,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn has_jetstream(&self) -> bool {
        self.jetstream.is_some()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `idol serve` on the real voice and face, publishing to `url` as idol `idol`.
pub fn nats_idol(url: &str, idol: &str) -> Server {
    let home = crate::common::home();
    let config = idol::config::Config::default();
    let (voice, face) =
        idol::perform::adapters::build_voice_face(&home, &config).expect("the real voice and face");
    Server::start(
        idol::perform::Stages {
            persona: idol::perform::testing::conversation(),
            generator: Box::new(idol::perform::testing::ScriptedGenerator::new(["Hello."])),
            segmenter: Box::new(idol::text::TextSegmenter::default()),
            voice,
            face,
        },
        idol::perform::PerformConfig {
            fps: config.face.fps,
            ..idol::perform::PerformConfig::default()
        },
        ServerOptions {
            port: 0,
            nats: Some(NatsOptions {
                url: url.to_string(),
                idol: idol.to_string(),
                queue: 4096,
            }),
            ..ServerOptions::default()
        },
    )
    .unwrap()
}

pub async fn ws_connect(addr: std::net::SocketAddr) -> (Ws, Value) {
    let url = format!("ws://{addr}/v1/stream");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let In::Json(hello) = next(&mut ws).await else {
        panic!("hello first")
    };
    assert_eq!(hello["type"], "hello");
    (ws, hello)
}

/// Raw WebSocket messages until the state after utterance `utt` spoke is idle; binary kept as bytes.
pub async fn raw_until_idle(ws: &mut Ws, utt: u64) -> Vec<Message> {
    let mut out = vec![];
    let mut spoke = false;
    loop {
        let m = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("the utterance ends")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = &m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "state" {
                if v["utterance"].as_u64() == Some(utt) && v["state"] == "speaking" {
                    spoke = true;
                }
                if spoke && v["state"] == "idle" {
                    out.push(m);
                    return out;
                }
            }
        }
        if matches!(m, Message::Text(_) | Message::Binary(_)) {
            out.push(m);
        }
    }
}

async fn metrics(server: &Server) -> String {
    let url = format!("{}/metrics", server.base_url());
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// Every message the NATS subscription `sub` has until the `state` idle that follows `utt`'s
/// speaking, as (subject, payload).
async fn nats_until_idle(sub: &mut async_nats::Subscriber, utt: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut spoke = false;
    loop {
        let m = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .expect("the utterance ends on NATS")
            .expect("subscribed");
        let subject = m.subject.to_string();
        if subject.ends_with(".state") {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            if v["type"] == "state" {
                if v["utterance"].as_u64() == Some(utt) && v["state"] == "speaking" {
                    spoke = true;
                }
                if spoke && v["state"] == "idle" {
                    out.push((subject, m.payload.to_vec()));
                    return out;
                }
            }
        }
        out.push((subject, m.payload.to_vec()));
    }
}

/// `say` sent on the control subject (loopback NATS: no token) is spoken; every message a WebSocket
/// client subscribed to f32 audio gets is on NATS with the same bytes, in the same order per
/// stream, frames under the session rig's subject; the hello snapshot answers with the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_publishes_the_websocket_stream_byte_for_byte_and_takes_control() {
    let nats = NatsServer::start();
    let server = nats_idol(&nats.url(), "aoi");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe("idol.aoi.>").await.unwrap();
    client.flush().await.unwrap();
    let (mut ws, hello) = ws_connect(server.addr()).await;
    send(&mut ws, json!({"type":"subscribe","audio":"f32","id":"s"})).await;
    // The publisher subscribes in the background: ask until it answers.
    let snapshot: Value = loop {
        match tokio::time::timeout(
            Duration::from_secs(5),
            client.request("idol.aoi.hello", "".into()),
        )
        .await
        {
            Ok(Ok(m)) => break serde_json::from_slice(&m.payload).unwrap(),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(snapshot["type"], "hello");
    // Frames in a catalog rig besides the session's are published while someone asks for them
    // (as relays do for their clients): ask for one, leave the others unasked.
    let others = other_rigs(&hello);
    if let Some(asked) = others.first() {
        client
            .publish(
                "idol.aoi.want",
                json!({ "rigs": [asked] }).to_string().into(),
            )
            .await
            .unwrap();
        client.flush().await.unwrap();
    }
    assert_eq!(snapshot["session"], hello["session"]);
    assert_eq!(snapshot["rig"], hello["rig"]);
    assert!(snapshot["now"].as_u64().is_some());
    // A request of a type NATS does not carry, then a malformed one: errors, nothing happens.
    let r = client
        .request(
            "idol.aoi.control",
            r#"{"type":"set","emotion":"joy"}"#.into(),
        )
        .await
        .unwrap();
    let r: Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("unsupported"))
    );
    let r = client
        .request("idol.aoi.control", r#"{"type":"say"}"#.into())
        .await
        .unwrap();
    let r: Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(r["code"], "bad_message", "{r}");
    let ack = client
        .request(
            "idol.aoi.control",
            r#"{"type":"say","text":"Hello from NATS, one two three.","id":"n"}"#.into(),
        )
        .await
        .unwrap();
    let ack: Value = serde_json::from_slice(&ack.payload).unwrap();
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_str()),
        (Some("ack"), Some("n")),
        "{ack}"
    );
    let utt = ack["utterance"].as_u64().unwrap();

    let ws_msgs = raw_until_idle(&mut ws, utt).await;
    let nats_msgs = nats_until_idle(&mut sub, utt).await;
    // From the subscription's ack on, the WebSocket gets f32 audio (the form NATS carries).
    let acked = ws_msgs
        .iter()
        .position(|m| matches!(m, Message::Text(t) if t.as_str().contains(r#""of":"subscribe""#)))
        .expect("the subscribe ack");
    let ws_msgs = &ws_msgs[acked + 1..];

    let rig = hello["rig"].as_str().unwrap();
    let ws_bin = |kind: u8| -> Vec<Vec<u8>> {
        ws_msgs
            .iter()
            .filter_map(|m| match m {
                Message::Binary(b) if b[0] == kind => Some(b.to_vec()),
                _ => None,
            })
            .collect()
    };
    let on = |subject: &str| -> Vec<Vec<u8>> {
        nats_msgs
            .iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, p)| p.clone())
            .collect()
    };
    // The WebSocket's stream began at its subscription; NATS's at the publisher's start: compare
    // from the WebSocket's first message of each kind on.
    let tail_eq = |ws: Vec<Vec<u8>>, nats: Vec<Vec<u8>>, what: &str| {
        assert!(!ws.is_empty(), "{what} on the WebSocket");
        let start = nats
            .iter()
            .position(|p| *p == ws[0])
            .unwrap_or_else(|| panic!("{what}: the WebSocket's first message is on NATS"));
        assert_eq!(nats[start..].len(), ws.len(), "{what}: as many messages");
        assert!(nats[start..] == ws[..], "{what}: byte-identical, in order");
        ws.len()
    };
    let audio = tail_eq(ws_bin(1), on("idol.aoi.audio"), "audio");
    let frames = tail_eq(ws_bin(2), on(&format!("idol.aoi.frames.{rig}")), "frames");
    assert!(audio > 3 && frames > 10, "{audio} audio, {frames} frames");
    // Every audio and frame message on NATS is stamped, and the stamps run forward.
    let stamps: Vec<u64> = on(&format!("idol.aoi.frames.{rig}"))
        .iter()
        .map(|p| match parse_binary(p).expect("a frame") {
            idol::server::protocol::Binary::Frame { sample, .. } => sample,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "frames stamped in order"
    );
    // The text streams: the same JSON.
    let ws_text: Vec<String> = ws_msgs
        .iter()
        .filter_map(|m| match m {
            Message::Text(t) => Some(t.as_str().to_string()),
            _ => None,
        })
        .filter(|t| t.contains("\"caption\"") || t.contains("\"cue\""))
        .collect();
    let nats_text: Vec<String> = nats_msgs
        .iter()
        .filter(|(s, _)| s.ends_with(".captions") || s.ends_with(".cues"))
        .map(|(_, p)| String::from_utf8(p.clone()).unwrap())
        .collect();
    assert!(!ws_text.is_empty());
    assert!(
        nats_text.ends_with(&ws_text),
        "{nats_text:?} vs {ws_text:?}"
    );
    // With a face that keeps canonical vectors, the rig asked for has its subject too, as many
    // frames as the session's rig from when it was asked; no one asked for the rest.
    if snapshot["canonical"] == true {
        let asked = &others[0];
        let asked_stamps: Vec<u64> = on(&format!("idol.aoi.frames.{asked}"))
            .iter()
            .map(|p| match parse_binary(p).expect("a frame") {
                idol::server::protocol::Binary::Frame { sample, .. } => sample,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(asked_stamps.len() > 10, "{asked}: {asked_stamps:?}");
        let from = stamps
            .iter()
            .position(|s| *s == asked_stamps[0])
            .expect("the asked rig's first frame is a session frame");
        assert_eq!(
            stamps[from..],
            asked_stamps[..],
            "{asked}: every frame from when it was asked"
        );
        for other in &others[1..] {
            assert!(
                on(&format!("idol.aoi.frames.{other}")).is_empty(),
                "{other} was not asked for"
            );
        }
    }
    let m = metrics(&server).await;
    assert_eq!(metric(&m, "idol_nats_connected"), 1);
    assert!(metric(&m, "idol_nats_published_total") as usize >= audio + frames);
    assert_eq!(metric(&m, "idol_nats_dropped_total"), 0);
    assert!(metric(&m, "idol_nats_control_total") >= 3);
}

/// With no NATS server where `--nats` points, the idol still speaks to her WebSocket clients; once
/// a server comes up there, the publisher connects and publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_nats_never_stops_the_session_and_is_joined_when_it_comes_up() {
    let port = free_port();
    let server = nats_idol(&format!("nats://127.0.0.1:{port}"), "down");
    let (mut ws, _) = ws_connect(server.addr()).await;
    send(
        &mut ws,
        json!({"type":"say","text":"Nobody is listening on NATS.","id":"d"}),
    )
    .await;
    let utt = loop {
        if let In::Json(v) = next(&mut ws).await
            && v["type"] == "ack"
        {
            break v["utterance"].as_u64().unwrap();
        }
    };
    let msgs = raw_until_idle(&mut ws, utt).await;
    assert!(
        msgs.iter()
            .any(|m| matches!(m, Message::Binary(b) if b[0] == 1)),
        "audio while NATS is down"
    );
    let m = metrics(&server).await;
    assert_eq!(metric(&m, "idol_nats_connected"), 0);

    let nats = NatsServer::on(port, false);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let m = metrics(&server).await;
        if metric(&m, "idol_nats_connected") == 1 {
            break;
        }
        assert!(
            t0.elapsed() < PATIENCE,
            "the publisher connects once NATS is up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut sub = client.subscribe("idol.down.>").await.unwrap();
    client.flush().await.unwrap();
    let ack = loop {
        match tokio::time::timeout(
            Duration::from_secs(5),
            client.request(
                "idol.down.control",
                r#"{"type":"say","text":"Now they are."}"#.into(),
            ),
        )
        .await
        {
            Ok(Ok(m)) => break serde_json::from_slice::<Value>(&m.payload).unwrap(),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let utt = ack["utterance"].as_u64().unwrap();
    let got = nats_until_idle(&mut sub, utt).await;
    assert!(
        got.iter().any(|(s, _)| s == "idol.down.audio"),
        "audio on NATS"
    );
}

/// Binary messages and the caption, cue and state texts of a raw stream, in order.
/// `idol relay` in this process for idol `idol` on the NATS server at `url`.
async fn start_relay(url: &str, idol: &str) -> idol::server::NatsRelay {
    let opts = ServerOptions {
        port: 0,
        nats: Some(NatsOptions {
            url: url.to_string(),
            idol: idol.into(),
            queue: 4096,
        }),
        ..ServerOptions::default()
    };
    tokio::task::spawn_blocking(move || idol::server::NatsRelay::start(opts))
        .await
        .unwrap()
        .expect("the relay starts once the idol answers hello")
}

/// The first `ack` a client gets (an `error` or a close first fails the test).
async fn first_ack(ws: &mut Ws) -> Value {
    loop {
        match next(ws).await {
            In::Json(v) if v["type"] == "ack" => return v,
            In::Json(v) if v["type"] == "error" => panic!("{v}"),
            In::Closed(c) => panic!("closed {c:?}"),
            _ => {}
        }
    }
}

/// The rigs a `hello` offers besides the session's.
fn other_rigs(hello: &Value) -> Vec<String> {
    let session = hello["rig"].as_str().unwrap();
    hello["rigs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .filter(|r| *r != session)
        .map(String::from)
        .collect()
}

fn stream_part(msgs: &[Message]) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut bin = vec![];
    let mut text = vec![];
    for m in msgs {
        match m {
            Message::Binary(b) => bin.push(b.to_vec()),
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if matches!(v["type"].as_str(), Some("caption" | "cue" | "state")) {
                    text.push(t.as_str().to_string());
                }
            }
            _ => {}
        }
    }
    (bin, text)
}

/// `idol relay` (no models) serves a late joiner the session's `hello` with its clock, forwards its
/// `say` to the idol over NATS, and streams it byte for byte what a client of the idol's own server
/// gets: s16 audio made from the f32 on NATS, binary frames, the same texts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_serves_the_same_stream_with_no_models_and_forwards_control() {
    let nats = NatsServer::start();
    let server = nats_idol(&nats.url(), "mio");
    let relay = start_relay(&nats.url(), "mio").await;
    let (mut direct, hello_d) = ws_connect(server.addr()).await;
    let (mut relayed, hello_r) = ws_connect(relay.addr()).await;
    for k in [
        "session",
        "sample_rate",
        "fps",
        "rig",
        "channel_names",
        "lead",
        "protocol",
    ] {
        assert_eq!(hello_r[k], hello_d[k], "{k} of the relay's hello");
    }
    assert!(hello_r["now"].as_u64().unwrap() > 0, "the session clock");
    send(
        &mut relayed,
        json!({"type":"say","text":"Hello through the relay.","id":"r1"}),
    )
    .await;
    let ack = first_ack(&mut relayed).await;
    assert_eq!(ack["id"], "r1");
    let utt = ack["utterance"].as_u64().unwrap();
    let d = raw_until_idle(&mut direct, utt).await;
    let r = raw_until_idle(&mut relayed, utt).await;
    let (d_bin, d_text) = stream_part(&d);
    let (r_bin, r_text) = stream_part(&r);
    assert!(r_bin.len() > 10, "{} binary messages", r_bin.len());
    let start = d_bin
        .iter()
        .position(|b| *b == r_bin[0])
        .expect("the relay's first message is in the server's stream");
    assert_eq!(d_bin[start..].len(), r_bin.len(), "as many binary messages");
    assert!(
        d_bin[start..] == r_bin[..],
        "byte-identical audio and frames"
    );
    assert!(
        r_bin.iter().any(|b| b[0] == 1 && b[1] == 1),
        "s16 audio made from NATS's f32"
    );
    assert!(
        d_text.ends_with(&r_text) && !r_text.is_empty(),
        "{r_text:?}"
    );
    let m = reqwest::get(format!("http://{}/metrics", relay.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric(&m, "idol_nats_received_total") as usize >= r_bin.len());
    assert_eq!(metric(&m, "idol_nats_connected"), 1);
    assert_eq!(metric(&m, "idol_clients_connected"), 1);
}

/// A relay's client on a catalog rig other than the session's: the relay asks the publisher for
/// that rig (`idol.<idol>.want`), which publishes it only then, and the client's frames equal
/// those a client on the same rig gets from the server itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_asks_for_its_clients_rig_and_serves_it_like_the_server() {
    let nats = NatsServer::start();
    let server = nats_idol(&nats.url(), "rin");
    let relay = start_relay(&nats.url(), "rin").await;
    let (mut direct, hello) = ws_connect(server.addr()).await;
    let Some(other) = other_rigs(&hello).into_iter().next() else {
        return; // a face without canonical vectors offers no other rig
    };
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut asks = watcher.subscribe("idol.rin.want").await.unwrap();
    watcher.flush().await.unwrap();
    let (mut relayed, _) = ws_connect(relay.addr()).await;
    for ws in [&mut direct, &mut relayed] {
        send(ws, json!({"type":"subscribe","rig":other,"id":"r"})).await;
        assert_eq!(first_ack(ws).await["id"], "r");
    }
    let ask = tokio::time::timeout(Duration::from_secs(5), asks.next())
        .await
        .expect("the relay asks for its client's rig")
        .unwrap();
    let ask: Value = serde_json::from_slice(&ask.payload).unwrap();
    assert_eq!(ask["rigs"], json!([other]), "{ask}");
    // Once asked, give the publisher a moment, then speak.
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(
        &mut relayed,
        json!({"type":"say","text":"Frames in another rig.","id":"s"}),
    )
    .await;
    let ack = first_ack(&mut relayed).await;
    assert_eq!(ack["id"], "s");
    let utt = ack["utterance"].as_u64().unwrap();
    let frames = |msgs: &[Message]| -> Vec<Vec<u8>> {
        msgs.iter()
            .filter_map(|m| match m {
                Message::Binary(b) if b[0] == 2 => Some(b.to_vec()),
                _ => None,
            })
            .collect()
    };
    let d = frames(&raw_until_idle(&mut direct, utt).await);
    let r = frames(&raw_until_idle(&mut relayed, utt).await);
    assert!(r.len() > 10, "{} frames through the relay", r.len());
    let start = d
        .iter()
        .position(|b| *b == r[0])
        .expect("the relay's first frame is one the server sent in that rig");
    assert!(
        d[start..] == r[..],
        "{other}: byte-identical frames ({} vs {})",
        d.len() - start,
        r.len()
    );
}

/// A child process killed (SIGKILL) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `idol relay` as a process on `port` for idol `idol`.
fn relay_process(home: &Path, url: &str, idol: &str, port: u16) -> Killed {
    Killed(
        crate::common::idol_in(home)
            .args([
                "relay",
                "--nats",
                url,
                "--idol",
                idol,
                "--bind",
                "127.0.0.1",
            ])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("idol relay"),
    )
}

/// The sample stamp of a binary frame message (`None`: not a frame).
fn frame_stamp(m: &Message) -> Option<u64> {
    match m {
        Message::Binary(b) if b.len() >= 24 && b[0] == 2 => {
            Some(u64::from_le_bytes(b[8..16].try_into().unwrap()))
        }
        _ => None,
    }
}

/// A client of the relay on `port`, once that relay lists `alternate` (and only it) in `hello`.
async fn client_listing(port: u16, alternate: &str) -> (Ws, Value) {
    let t0 = std::time::Instant::now();
    loop {
        assert!(t0.elapsed() < PATIENCE, "relay :{port} lists {alternate}");
        if let Ok((mut ws, _)) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/stream")).await
            && let In::Json(hello) = next(&mut ws).await
            && hello["alternates"] == json!([alternate])
        {
            return (ws, hello);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The viewer page (headless Chromium) served by relay A plays from A; A is killed; the page
/// connects to relay B (its `hello`'s alternate; B accepts the page's origin, A's, with no
/// refusal) and frames come again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_page_moves_to_another_relay_when_its_relay_dies() {
    let h = crate::common::home();
    let nats = NatsServer::start();
    let _server = nats_idol(&nats.url(), "ena");
    let (pa, pb) = (free_port(), free_port());
    let mut a = relay_process(h.root(), &nats.url(), "ena", pa);
    let _b = relay_process(h.root(), &nats.url(), "ena", pb);
    let url_b = format!("ws://127.0.0.1:{pb}/v1/stream");
    let _probe = client_listing(pa, &url_b).await;
    let _one = crate::viewer::BROWSER.lock().await;
    let mut page = crate::browser::open(&format!("http://127.0.0.1:{pa}/"), &[]).await;
    let cdp = &mut page.cdp;
    cdp.until(
        &format!(
            "!!(window.idolStats && idolStats.connected && idolStats.framesReceived > 30 \
             && idolStats.server === 'ws://127.0.0.1:{pa}/v1/stream' \
             && idolStats.renderer && idolStats.renderer !== '2d')"
        ),
        90,
        "the page plays from relay A with its 3D avatar loaded (its modules come from A)",
    )
    .await;
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    cdp.until(
        &format!("idolStats.connected && idolStats.server === '{url_b}'"),
        60,
        "the page moves to relay B",
    )
    .await;
    let n = cdp.eval("idolStats.framesReceived").await.as_u64().unwrap();
    cdp.until(
        &format!("idolStats.connected && idolStats.framesReceived > {n} + 30"),
        60,
        "frames come from relay B",
    )
    .await;
    let errors = cdp.eval("idolStats.lastError").await;
    assert!(errors.is_null(), "no refusal on relay B: {errors}");
}

/// Two relays (processes) of one idol find each other on NATS: a client of relay A gets B in its
/// `hello`'s `alternates`. A is killed (SIGKILL); the client reconnects to B and is in the same
/// session on the same clock: B's `hello` `now` runs on from where A's frames were, the frames go on
/// on the session's frame grid, none repeated, and the stamps it missed are those of the time it
/// was away (give or take the release lead), no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relays_clients_reconnect_to_another_on_the_session_clock() {
    let h = crate::common::home();
    let nats = NatsServer::start();
    let _server = nats_idol(&nats.url(), "rin");
    let (pa, pb) = (free_port(), free_port());
    let mut a = relay_process(h.root(), &nats.url(), "rin", pa);
    let _b = relay_process(h.root(), &nats.url(), "rin", pb);
    let url_b = format!("ws://127.0.0.1:{pb}/v1/stream");
    let (mut ws, hello_a) = client_listing(pa, &url_b).await;
    let rate = hello_a["sample_rate"].as_u64().unwrap() as f64;
    let fps = hello_a["fps"].as_u64().unwrap() as f64;
    let lead = hello_a["lead"].as_u64().unwrap() as f64;
    // Idle frames sit on the session grid round(k · rate / fps): the frame number of a stamp.
    let k_of = |s: u64| {
        let k = (s as f64 * fps / rate).round();
        assert_eq!(
            (k * rate / fps).round() as u64,
            s,
            "{s} is on the frame grid"
        );
        k as u64
    };
    let frames = async |ws: &mut Ws, n: usize| {
        let mut out = vec![];
        while out.len() < n {
            let m = tokio::time::timeout(PATIENCE, ws.next())
                .await
                .expect("frames keep coming")
                .expect("open")
                .unwrap();
            if let Some(s) = frame_stamp(&m) {
                out.push((s, std::time::Instant::now()));
            }
        }
        out
    };
    let before = frames(&mut ws, 30).await;
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    // What was on its way arrives, then the connection drops without a close frame.
    let mut before = before;
    while let Some(Ok(m)) = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("the connection drops")
    {
        if let Some(s) = frame_stamp(&m) {
            before.push((s, std::time::Instant::now()));
        }
    }
    let alt = hello_a["alternates"][0].as_str().unwrap().to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(alt)
        .await
        .expect("the alternate relay takes the client");
    let In::Json(hello_b) = next(&mut ws).await else {
        panic!("hello first")
    };
    let t_hello = std::time::Instant::now();
    for k in [
        "session",
        "sample_rate",
        "fps",
        "rig",
        "channel_names",
        "lead",
    ] {
        assert_eq!(hello_b[k], hello_a[k], "{k}: the same session");
    }
    let after = frames(&mut ws, 30).await;

    let slack = rate / 4.0;
    let (s_last, t_last) = *before.last().unwrap();
    let (s_first, t_first) = after[0];
    // The clock of B's hello runs on from A's frames (released `lead` ahead of the clock).
    let now_b = hello_b["now"].as_u64().unwrap() as f64;
    let away = t_hello.duration_since(t_last).as_secs_f64() * rate;
    assert!(
        now_b + lead + slack >= s_last as f64 && now_b <= s_last as f64 + away + slack,
        "B's now {now_b} after A's last frame {s_last} (lead {lead}, away {away} samples)"
    );
    // The frames: on one grid, each connection's consecutive, B's after A's, the gap what it missed.
    for w in before.windows(2).chain(after.windows(2)) {
        assert_eq!(k_of(w[1].0), k_of(w[0].0) + 1, "consecutive frames");
    }
    assert!(
        s_first > s_last,
        "nothing repeated: {s_first} after {s_last}"
    );
    let missed = (k_of(s_first) - k_of(s_last) - 1) as f64;
    let away = t_first.duration_since(t_last).as_secs_f64() * fps;
    assert!(
        missed <= away + (lead + slack) * fps / rate,
        "missed {missed} frames while away for {away} frames' time"
    );
}

const FARM_SCRIPT_LONG: &str = r#"
[script]
seed = 5
fps = 30
gap = "200ms"

[[line]]
text = "[happy] Good evening, everyone, and welcome back to the studio."

[[line]]
text = "Tonight we have a long list of songs, stories and surprises for you."

[[line]]
text = "[surprised] First, a question from the mailbox that made me laugh out loud."

[[line]]
text = "Somebody asked whether idols dream of electric sheep, and I said only on weekends."

[[line]]
text = "[sad:0.4] Then the lights went out, but only for a moment."

[[line]]
text = "And that, my friends, is how the evening began."
"#;

const FARM_SCRIPT_SHORT: &str = r#"
[script]
seed = 9
fps = 30

[[line]]
text = "[happy] A short one, rendered on the farm."
"#;

/// Two scripts queued with `idol render --queue`; worker 1 is killed (SIGKILL) while it renders the
/// first; worker 2 renders both (the first after its redelivery). Each job completes exactly once
/// (one `done` event, status `done`, nothing left in the queue) and every output file is
/// byte-identical to a local `idol render` of the same script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_renders_equal_local_ones_and_a_killed_worker_loses_no_job() {
    let h = crate::common::home();
    let nats = NatsServer::start_jetstream();
    assert!(nats.has_jetstream());
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("long.script.toml");
    let short = dir.path().join("short.script.toml");
    std::fs::write(&long, FARM_SCRIPT_LONG).unwrap();
    std::fs::write(&short, FARM_SCRIPT_SHORT).unwrap();
    let idol = |args: &[&std::ffi::OsStr]| {
        let o = crate::common::idol_in(h.root())
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "idol {args:?}: {err}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let os = std::ffi::OsStr::new;
    // The local renders to compare with.
    for (s, name) in [(&long, "long"), (&short, "short")] {
        let out = dir.path().join("local").join(name);
        idol(&[
            os("render"),
            s.as_os_str(),
            os("--out"),
            out.as_os_str(),
            os("--quiet"),
        ]);
    }
    let queued = dir.path().join("queued");
    let url = nats.url();
    let submitted = idol(&[
        os("render"),
        os("--queue"),
        os(&url),
        long.as_os_str(),
        short.as_os_str(),
        os("--out"),
        queued.as_os_str(),
        os("--ack-wait"),
        os("3"),
    ]);
    let ids: Vec<String> = submitted
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{submitted}");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = client.subscribe("idol.jobs.events.>").await.unwrap();
    client.flush().await.unwrap();
    let q = idol::farm::Queue::open(&nats.url(), Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(
        q.ack_wait(),
        Duration::from_secs(3),
        "the submitter's queue"
    );

    let spawn_worker = |name: &str, jobs: Option<usize>| {
        let mut c = crate::common::idol_in(h.root());
        c.args(["worker", "--nats", &nats.url(), "--name", name]);
        if let Some(n) = jobs {
            c.args(["--jobs", &n.to_string()]);
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut w1 = spawn_worker("w1", None);
    let t0 = std::time::Instant::now();
    loop {
        let s = q.status(&ids[0]).await.unwrap().unwrap();
        if s.state == idol::farm::JobState::Rendering && s.worker.as_deref() == Some("w1") {
            break;
        }
        assert!(
            t0.elapsed() < PATIENCE,
            "worker 1 takes the first job: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w1.kill().unwrap();
    w1.wait().unwrap();
    let s = q.status(&ids[0]).await.unwrap().unwrap();
    assert_eq!(s.state, idol::farm::JobState::Rendering, "killed mid-job");

    let w2 = spawn_worker("w2", Some(2));
    let out = tokio::task::spawn_blocking(move || w2.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    let done = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        done.lines().filter(|l| l.starts_with("done ")).count(),
        2,
        "{done}"
    );

    for (i, name) in [(0, "long"), (1, "short")] {
        let s = q.status(&ids[i]).await.unwrap().unwrap();
        assert_eq!(s.state, idol::farm::JobState::Done, "{s:?}");
        assert_eq!(s.worker.as_deref(), Some("w2"));
        if i == 0 {
            assert_eq!(s.attempts, 2, "delivered again after worker 1 died");
        }
        for f in idol::script::output::FILES {
            let local = std::fs::read(dir.path().join("local").join(name).join(f));
            let farm = std::fs::read(queued.join(name).join(f));
            match (local, farm) {
                (Ok(a), Ok(b)) => assert!(
                    a == b,
                    "{name}/{f}: the farm's bytes equal the local render's"
                ),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{name}/{f}: local {:?}, farm {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }
    let mut q = q;
    assert_eq!(q.pending().await.unwrap(), 0, "no job left in the queue");
    // Exactly one `done` per job among the events.
    let mut dones = std::collections::HashMap::<String, usize>::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        if v["event"] == "done" {
            *dones.entry(m.subject.to_string()).or_default() += 1;
        }
    }
    assert_eq!(dones.len(), 2, "{dones:?}");
    assert!(dones.values().all(|&n| n == 1), "{dones:?}");
    // `idol jobs` shows them.
    let listed = idol(&[os("jobs"), os("--nats"), os(&url)]);
    assert!(
        listed.starts_with("2 jobs: 0 queued, 0 rendering, 2 done, 0 failed"),
        "{listed}"
    );
}

/// `idol render --queue --store`: the worker puts the outputs into JetStream's object store (on
/// Debian's nats-server 2.9), `idol jobs --get` fetches them, and they are byte-identical to a
/// local render; the job's folder is not used. Asking for a job that is not there, or one whose
/// outputs went to a folder, is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_outputs_come_back_from_the_object_store_byte_for_byte() {
    let h = crate::common::home();
    let nats = NatsServer::start_jetstream();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("short.script.toml");
    std::fs::write(&script, FARM_SCRIPT_SHORT).unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let o = crate::common::idol_in(h.root())
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let idol = |args: &[&std::ffi::OsStr]| {
        let (ok, out, err) = run(args);
        assert!(ok, "idol {args:?}: {err}");
        out
    };
    let os = std::ffi::OsStr::new;
    let local = dir.path().join("local");
    idol(&[
        os("render"),
        script.as_os_str(),
        os("--out"),
        local.as_os_str(),
        os("--quiet"),
    ]);
    let url = nats.url();
    let submitted = idol(&[
        os("render"),
        os("--queue"),
        os(&url),
        script.as_os_str(),
        os("--store"),
    ]);
    assert!(
        submitted.contains("object store idol-renders"),
        "{submitted}"
    );
    let id = submitted.split_whitespace().next().unwrap().to_string();
    let worked = idol(&[
        os("worker"),
        os("--nats"),
        os(&url),
        os("--name"),
        os("w"),
        os("--jobs"),
        os("1"),
    ]);
    assert!(worked.starts_with(&format!("done {id} ")), "{worked}");
    let q = idol::farm::Queue::open(&url, Duration::from_secs(30))
        .await
        .unwrap();
    let s = q.status(&id).await.unwrap().unwrap();
    assert_eq!(s.state, idol::farm::JobState::Done, "{s:?}");
    assert_eq!(s.store.as_deref(), Some(idol::farm::OUTPUT_BUCKET));
    assert!(s.files.iter().any(|f| f == "performance.wav"), "{s:?}");
    let fetched = dir.path().join("fetched");
    let listed = idol(&[
        os("jobs"),
        os("--nats"),
        os(&url),
        os("--get"),
        os(&id),
        os("--out"),
        fetched.as_os_str(),
    ]);
    assert_eq!(listed.lines().count(), s.files.len(), "{listed}");
    for f in idol::script::output::FILES {
        match (std::fs::read(local.join(f)), std::fs::read(fetched.join(f))) {
            (Ok(a), Ok(b)) => assert!(a == b, "{f}: the stored bytes equal the local render's"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("{f}: local {:?}, stored {:?}", a.is_ok(), b.is_ok()),
        }
    }
    let (ok, _, err) = run(&[
        os("jobs"),
        os("--nats"),
        os(&url),
        os("--get"),
        os("0123456789abcdef"),
        os("--out"),
        fetched.as_os_str(),
    ]);
    assert!(!ok && err.contains("no such job"), "{err}");
}
