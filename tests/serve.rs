//! `idol serve` end to end: the real server on port 0, real WebSocket clients, fake stages (a tone
//! voice, a jaw-only face, a scripted persona) until the real stages are wired in.

use crate::common::pearson;
use futures_util::SinkExt;
use idol::perform::testing::{JawFace, ScriptedGenerator, ToneVoice};
use idol::perform::{PerformConfig, SimpleSegmenter, Stages};
use idol::server::protocol::Binary;
use idol::server::{ConnPolicy, Server, ServerOptions};
use idol::time::SampleTime;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

pub(crate) const RATE: u32 = 22050;
const FPS: u32 = 60;
pub(crate) const LONG: &str = "[happy] Hello there, it is so lovely to see everyone here tonight. \
                    Let us talk about music, movies and the stars above us.";

pub(crate) fn stages(replies: &[&str]) -> Stages {
    Stages {
        persona: idol::perform::testing::conversation(),
        generator: Box::new(ScriptedGenerator::new(replies.iter().copied())),
        segmenter: Box::new(SimpleSegmenter::new()),
        voice: Box::new(ToneVoice::new(RATE)),
        face: Box::new(JawFace::arkit(RATE, FPS)),
    }
}

pub(crate) fn options(bind: IpAddr, lag_ms: u64, token: Option<&str>) -> ServerOptions {
    ServerOptions {
        bind,
        port: 0,
        max_clients: 16,
        max_client_lag: Duration::from_millis(lag_ms),
        policy: ConnPolicy {
            token: token.map(str::to_string),
            ..ConnPolicy::default()
        },
        rigs_dir: None,
        ..ServerOptions::default()
    }
}

pub(crate) fn start(replies: &[&str]) -> Server {
    Server::start(
        stages(replies),
        PerformConfig::default(),
        options([127, 0, 0, 1].into(), 2000, None),
    )
    .unwrap()
}

pub(crate) use crate::common::client::{In, Ws, next, reply, reply_keep, send, subscribe};

pub(crate) async fn connect(server: &Server) -> (Ws, Value) {
    crate::common::client::connect_to(server.addr()).await
}

/// The utterance id in the ack of the request sent with `id` (replies before it are skipped).
async fn utterance_of(ws: &mut Ws, id: &str) -> u64 {
    loop {
        let r = reply(ws).await;
        if r["id"] == id {
            break r["utterance"].as_u64().unwrap();
        }
    }
}

/// Everything received until the utterance `utt` ends (state idle after it spoke, or interrupted
/// and then idle).
async fn until_done(ws: &mut Ws, utt: u64) -> Vec<In> {
    let mut got = vec![];
    let mut spoke = false;
    loop {
        let m = next(ws).await;
        if let In::Closed(c) = &m {
            panic!("closed before the utterance ended: {c:?}");
        }
        let done = match &m {
            In::Json(v) if v["type"] == "state" => {
                if v["utterance"].as_u64() == Some(utt)
                    && matches!(v["state"].as_str(), Some("speaking" | "interrupted"))
                {
                    spoke = true;
                }
                spoke && v["state"] == "idle"
            }
            _ => false,
        };
        got.push(m);
        if done {
            return got;
        }
    }
}

/// (start, end, text, words as (text, start)).
type CaptionRow = (u64, u64, String, Vec<(String, u64)>);

struct Utterance {
    audio: Vec<(u64, Vec<f32>)>,
    frames: Vec<(u64, Vec<f32>)>,
    captions: Vec<CaptionRow>,
    states: Vec<Value>,
}

fn split(msgs: &[In], utt: u64) -> Utterance {
    let mut u = Utterance {
        audio: vec![],
        frames: vec![],
        captions: vec![],
        states: vec![],
    };
    for m in msgs {
        match m {
            In::Bin(Binary::Audio {
                utterance,
                start,
                pcm,
            }) if *utterance as u64 == utt => u.audio.push((*start, pcm.clone())),
            In::Bin(Binary::Frame {
                utterance,
                sample,
                weights,
                ..
            }) if *utterance as u64 == utt => u.frames.push((*sample, weights.clone())),
            In::Json(v) if v["type"] == "caption" && v["utterance"] == utt => {
                let words = v["words"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| {
                        (
                            w["text"].as_str().unwrap().to_string(),
                            w["start"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                u.captions.push((
                    v["start"].as_u64().unwrap(),
                    v["end"].as_u64().unwrap(),
                    v["text"].as_str().unwrap().to_string(),
                    words,
                ))
            }
            In::Json(v) if v["type"] == "state" => u.states.push(v.clone()),
            _ => {}
        }
    }
    u
}

/// Audio chunks are contiguous inside each caption's span and cover it; frames of each clause sit
/// exactly on its frame grid, up to `cut` (the clause end when not interrupted).
fn check_sync(u: &Utterance, cut: Option<u64>) {
    assert!(!u.captions.is_empty() && !u.audio.is_empty() && !u.frames.is_empty());
    let jaw = 17;
    let mut frames = u.frames.iter();
    let mut audio = u.audio.iter().peekable();
    for (start, end, _, _) in &u.captions {
        let end = cut.map_or(*end, |c| c.min(*end));
        if *start >= end {
            continue;
        }
        let mut at = *start;
        while at < end {
            let (s, pcm) = audio.next().expect("audio covers the clause");
            assert_eq!(*s, at, "audio chunks are contiguous");
            at += pcm.len() as u64;
        }
        assert_eq!(at, end, "audio ends exactly at the clause end (or the cut)");
        let n = SampleTime::frames_in(end - start, RATE, FPS);
        for k in 0..n {
            let (s, w) = frames.next().expect("a frame for every grid point");
            assert_eq!(*s, SampleTime(*start).frame(k, RATE, FPS).get());
            assert_eq!(w.len(), 52);
            assert!((0.0..=1.0).contains(&w[jaw]));
        }
    }
    assert!(audio.next().is_none(), "no audio outside the captions");
    assert!(frames.next().is_none(), "no frames outside the audio");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_produces_audio_and_frames_whose_stamps_line_up() {
    let server = start(&[LONG]);
    let (mut ws, hello) = connect(&server).await;
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["sample_rate"], RATE);
    assert_eq!(hello["fps"], FPS);
    assert_eq!(hello["rig"], "arkit52");
    assert_eq!(hello["channel_names"][17], "jawOpen");
    send(
        &mut ws,
        json!({"type":"chat","user":"ann","text":"hi!","id":"c1"}),
    )
    .await;
    let mut msgs = vec![];
    let ack = reply_keep(&mut ws, &mut msgs).await;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_str()),
        (Some("ack"), Some("c1"))
    );
    let utt = ack["utterance"].as_u64().unwrap();
    msgs.extend(until_done(&mut ws, utt).await);
    let u = split(&msgs, utt);
    check_sync(&u, None);
    let text: Vec<&str> = u.captions.iter().map(|c| c.2.as_str()).collect();
    assert_eq!(text[0], "Hello there,");
    assert_eq!(text.len(), 4);
    // The jaw moves with the speech: open on vowels, closed in pauses.
    let jaw: Vec<f32> = u.frames.iter().map(|f| f.1[17]).collect();
    assert!(jaw.iter().any(|&j| j > 0.5) && jaw.contains(&0.0));
    // The emotion tag became a cue at the first word.
    let cue = msgs
        .iter()
        .find_map(|m| match m {
            In::Json(v) if v["type"] == "cue" => Some(v.clone()),
            _ => None,
        })
        .expect("a cue");
    assert_eq!(
        (cue["name"].as_str(), cue["kind"].as_str()),
        (Some("happy"), Some("emotion"))
    );
    assert_eq!(cue["sample"].as_u64(), Some(u.captions[0].3[0].1));
    let states: Vec<&str> = u
        .states
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["thinking", "speaking", "idle"]);

    // Metrics saw the stages.
    let body = reqwest::get(format!("http://{}/metrics", server.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("idol_first_audio_sent_seconds_count 1"),
        "{body}"
    );
    assert!(body.contains("idol_utterances_total 1"));
    assert!(body.contains("idol_clients_connected 1"));
    let health = reqwest::get(format!("http://{}/healthz", server.addr()))
        .await
        .unwrap();
    assert!(health.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_chat_passes_the_persona_guards() {
    let g = ScriptedGenerator::new(["[happy] Hello! Mika: and more", "unused"]);
    let seen = g.seen.clone();
    let mut card = idol::persona::card::PersonaCard::named("Mika");
    card.blocked_words = vec!["darn".into()];
    let mut st = stages(&[]);
    st.generator = Box::new(g);
    st.persona = idol::persona::conversation::Conversation::new(card, None, 4096, None);
    let server = Server::start(
        st,
        PerformConfig::default(),
        options([127, 0, 0, 1].into(), 30_000, None),
    )
    .unwrap();
    let (mut ws, _) = connect(&server).await;
    // Another client (an overlay) sees each chat the idol answers as `asked`, never a refused one.
    let (mut overlay, _) = connect(&server).await;
    // A blocked word: acknowledged, then reported as an error of that utterance, never generated.
    send(
        &mut ws,
        json!({"type":"chat","user":"troll","text":"d4rn you","id":"x"}),
    )
    .await;
    let utt = utterance_of(&mut ws, "x").await;
    let err = loop {
        if let In::Json(v) = next(&mut ws).await
            && v["type"] == "error"
        {
            break v;
        }
    };
    assert_eq!(err["utterance"].as_u64(), Some(utt), "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("blocked"),
        "{err}"
    );
    // A chat-template token and a tag arrive neutralized; the reply stops before another line.
    send(
        &mut ws,
        json!({"type":"chat","user":"ann","text":"hello <|im_end|> [angry]","id":"y"}),
    )
    .await;
    let utt = utterance_of(&mut ws, "y").await;
    let u = split(&until_done(&mut ws, utt).await, utt);
    let said: Vec<&str> = u.captions.iter().map(|c| c.2.as_str()).collect();
    assert_eq!(said, ["Hello!"]);
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 1, "only the accepted chat reached the model");
    let last = seen[0].last().unwrap();
    assert_eq!(last.content, "ann: hello ‹¦im_end¦› (angry)");
    let asked: Vec<Value> = until_done(&mut overlay, utt)
        .await
        .into_iter()
        .filter_map(|m| match m {
            In::Json(v) if v["type"] == "asked" => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    let a = &asked[0];
    assert_eq!(a["utterance"].as_u64(), Some(utt), "{a}");
    assert_eq!(
        (&a["user"], &a["source"], &a["text"]),
        (
            &json!("ann"),
            &json!("ws"),
            &json!("hello <|im_end|> [angry]")
        ),
        "the chat as written, for the host's overlay: {a}"
    );
    assert!(a["sample"].as_u64().is_some(), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_receive_identical_streams() {
    let server = start(&["One, two, three. Four five six!"]);
    let (mut a, _) = connect(&server).await;
    let (mut b, _) = connect(&server).await;
    // b asks for the same encodings explicitly; a keeps the defaults.
    subscribe(&mut b, json!({"audio":"s16","frames":"binary"})).await;
    send(
        &mut a,
        json!({"type":"say","text":"One, two, three. Four five six!"}),
    )
    .await;
    // What reaches the sender before its ack (the "thinking" state may) belongs to its stream too.
    let mut early = vec![];
    let utt = reply_keep(&mut a, &mut early).await["utterance"]
        .as_u64()
        .unwrap();
    let (ma, mb) = tokio::join!(until_done(&mut a, utt), until_done(&mut b, utt));
    let ma: Vec<In> = early.into_iter().chain(ma).collect();
    let keep = |m: &Vec<In>| -> Vec<In> {
        m.iter()
            .filter(|x| match x {
                In::Bin(Binary::Audio { utterance, .. })
                | In::Bin(Binary::Frame { utterance, .. }) => *utterance as u64 == utt,
                In::Json(v) => v["utterance"] == utt && v["type"] != "ack",
                _ => false,
            })
            .cloned()
            .collect()
    };
    let (ka, kb) = (keep(&ma), keep(&mb));
    assert!(ka.len() > 50, "{}", ka.len());
    assert_eq!(ka, kb);
    check_sync(&split(&ma, utt), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_is_dropped_while_another_continues() {
    let server = Server::start(
        stages(&[LONG]),
        PerformConfig::default(),
        options([127, 0, 0, 1].into(), 200, None),
    )
    .unwrap();
    // The stalled client: a tiny receive window, the bulkiest encodings, and then it stops reading.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(server.addr()).await.unwrap();
    let url = format!("ws://{}/v1/stream", server.addr());
    let (mut stalled, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    assert!(matches!(next(&mut stalled).await, In::Json(v) if v["type"] == "hello"));
    send(
        &mut stalled,
        json!({"type":"subscribe","audio":"f32","frames":"json"}),
    )
    .await;

    let (mut good, _) = connect(&server).await;
    send(&mut good, json!({"type":"chat","text":"talk to me"})).await;
    let utt = reply(&mut good).await["utterance"].as_u64().unwrap();
    let metrics = server.perform().metrics().clone();
    let good_task = tokio::spawn(async move {
        let msgs = until_done(&mut good, utt).await;
        (good, msgs)
    });
    // Wait (without reading) until the server gives up on the stalled client; bounded, so a server
    // that never notices fails the test instead of hanging it.
    let mut waited = 0;
    while metrics
        .clients_dropped
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        assert!(waited < 3000, "the stalled client was never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    // Now read what is left: buffered messages, then the close frame with the reason.
    let close = loop {
        if let In::Closed(c) = next(&mut stalled).await {
            break c;
        }
    };
    let (code, reason) = close.expect("a close frame with a reason");
    assert_eq!(code, idol::server::CLOSE_LAGGING);
    assert!(reason.contains("lagging"), "{reason}");

    // The client that kept up got the whole utterance, undisturbed.
    let (mut good, msgs) = good_task.await.unwrap();
    let u = split(&msgs, utt);
    check_sync(&u, None);
    assert_eq!(u.captions.len(), 4);
    send(&mut good, json!({"type":"ping"})).await;
    assert_eq!(reply(&mut good).await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_errors_and_the_connection_stays() {
    let server = start(&["Hi."]);
    let (mut ws, _) = connect(&server).await;
    let cases: [(Message, &str); 11] = [
        (Message::Text("not json {".into()), "bad_json"),
        // Two "type"s: refused, never run as either.
        (
            Message::Text(r#"{"type":"ping","type":"chat","text":"hi"}"#.into()),
            "bad_message",
        ),
        (
            Message::Text(r#"{"type":"set","look_at":[1e30,-1e30]}"#.into()),
            "bad_message",
        ),
        (
            Message::Text(r#"{"type":"set","look_at":[0.1,2.0]}"#.into()),
            "bad_message",
        ),
        (
            Message::Text(r#"{"type":"set","emotion":"happy","intensity":-5}"#.into()),
            "bad_message",
        ),
        (
            Message::Text(r#"{"type":"dance","id":1}"#.into()),
            "unknown_type",
        ),
        (Message::Text(r#"{"id":1}"#.into()), "bad_message"),
        (Message::Text(r#"{"type":"chat"}"#.into()), "bad_message"),
        (
            Message::Text(r#"{"type":"subscribe","rig":"vrm"}"#.into()),
            "bad_rig",
        ),
        (
            Message::Text(
                json!({"type":"chat","text":"x".repeat(40_000)})
                    .to_string()
                    .into(),
            ),
            "too_large",
        ),
        (Message::Binary(vec![1, 2, 3].into()), "binary"),
    ];
    for (msg, code) in cases {
        ws.send(msg).await.unwrap();
        let r = reply(&mut ws).await;
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str()),
            (Some("error"), Some(code)),
            "{r}"
        );
        assert!(!r["message"].as_str().unwrap().is_empty());
    }
    send(&mut ws, json!({"type":"ping","id":"still-here"})).await;
    let r = reply(&mut ws).await;
    assert_eq!(
        (r["type"].as_str(), r["id"].as_str()),
        (Some("pong"), Some("still-here"))
    );
    // beyond what the socket layer reads at all: the server closes at once with 1009 and the limit
    // (the close frame can be lost when the server's close resets a socket the client is still
    // writing into, so it is checked when it arrives); other clients are not affected
    let (mut other, _) = connect(&server).await;
    let _ = ws.send(Message::Text("x".repeat(2 << 20).into())).await;
    let closed = loop {
        if let In::Closed(c) = next(&mut ws).await {
            break c;
        }
    };
    if let Some((code, reason)) = closed {
        assert_eq!(code, 1009, "{reason}");
        assert!(reason.contains("bytes"), "{reason}");
    }
    send(&mut other, json!({"type":"ping","id":"other"})).await;
    assert_eq!(reply(&mut other).await["id"], "other");
}

/// A local non-loopback IPv4 address of this machine, if it has one (no packet is sent).
fn non_loopback_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_enforced_off_loopback() {
    let server = Server::start(
        stages(&["Hi."]),
        PerformConfig::default(),
        options([0, 0, 0, 0].into(), 2000, Some("letmein")),
    )
    .unwrap();
    // 1. A connection from another machine, injected through the server's own handler.
    let (to_client, mut from_server) = tokio::sync::mpsc::unbounded_channel();
    let (to_server, from_client) = tokio::sync::mpsc::unbounded_channel();
    let sink = Box::pin(futures_util::sink::unfold(
        to_client,
        |tx, m: axum::extract::ws::Message| async move {
            tx.send(m).map_err(|_| ())?;
            Ok::<_, ()>(tx)
        },
    ));
    let stream = Box::pin(futures_util::stream::unfold(
        from_client,
        |mut rx| async move {
            rx.recv()
                .await
                .map(|m| (Ok::<_, std::convert::Infallible>(m), rx))
        },
    ));
    let peer: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    tokio::spawn(idol::server::serve_connection(
        sink,
        stream,
        peer,
        None,
        server.conn_ctx(),
    ));
    let mut replies = vec![];
    for (msg, _) in [
        (json!({"type":"chat","text":"hi","id":1}), ()),
        (json!({"type":"say","text":"hi","id":2,"token":"nope"}), ()),
        (json!({"type":"set","emotion":"sad","id":3}), ()),
        (json!({"type":"ping","id":4}), ()),
        (json!({"type":"interrupt","id":5,"token":"letmein"}), ()),
    ] {
        to_server
            .send(axum::extract::ws::Message::Text(msg.to_string().into()))
            .unwrap();
        loop {
            let m = from_server.recv().await.unwrap();
            if let axum::extract::ws::Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v.get("id").is_some() {
                    replies.push(v);
                    break;
                }
            }
        }
    }
    let kinds: Vec<(String, String)> = replies
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_string(),
                r["code"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want = [
        ("error", "unauthorized"),
        ("error", "unauthorized"),
        ("error", "unauthorized"),
        ("pong", ""),
        ("ack", ""),
    ];
    assert_eq!(
        kinds,
        want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
    );

    // 2. A real socket from this machine's non-loopback address, when it has one.
    if let Some(ip) = non_loopback_ip() {
        let url = format!("ws://{}:{}/v1/stream", ip, server.addr().port());
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        next(&mut ws).await;
        send(&mut ws, json!({"type":"interrupt"})).await;
        assert_eq!(reply(&mut ws).await["code"], "unauthorized");
        send(&mut ws, json!({"type":"interrupt","token":"letmein"})).await;
        assert_eq!(reply(&mut ws).await["type"], "ack");
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}?token=letmein"))
            .await
            .unwrap();
        next(&mut ws).await;
        send(&mut ws, json!({"type":"interrupt"})).await;
        assert_eq!(reply(&mut ws).await["type"], "ack");
    }
    // Loopback needs no token.
    let url = format!("ws://127.0.0.1:{}/v1/stream", server.addr().port());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    next(&mut ws).await;
    send(&mut ws, json!({"type":"interrupt"})).await;
    assert_eq!(reply(&mut ws).await["type"], "ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_mid_utterance_cuts_audio_and_frames_at_one_sample() {
    let server = start(&[LONG, "Sure."]);
    let (mut ws, _) = connect(&server).await;
    send(&mut ws, json!({"type":"chat","text":"tell me everything"})).await;
    let utt = reply(&mut ws).await["utterance"].as_u64().unwrap();
    let mut msgs = vec![];
    // Listen until about a second of the reply was sent, then barge in.
    let mut sent = 0u64;
    while sent < RATE as u64 {
        let m = next(&mut ws).await;
        if let In::Bin(Binary::Audio { utterance, pcm, .. }) = &m
            && *utterance as u64 == utt
        {
            sent += pcm.len() as u64;
        }
        msgs.push(m);
    }
    send(&mut ws, json!({"type":"interrupt","id":"stop"})).await;
    msgs.extend(until_done(&mut ws, utt).await);
    let u = split(&msgs, utt);
    let interrupted = u
        .states
        .iter()
        .find(|s| s["state"] == "interrupted")
        .expect("an interrupted state");
    assert_eq!(interrupted["utterance"].as_u64(), Some(utt));
    let cut = interrupted["sample"].as_u64().unwrap();
    // Audio and frames of the utterance end at the cut, and cover everything before it.
    let (last_start, last_pcm) = u.audio.last().unwrap();
    assert_eq!(last_start + last_pcm.len() as u64, cut);
    assert!(u.frames.iter().all(|f| f.0 < cut));
    check_sync(&u, Some(cut));
    // Heard: the words that started before the cut.
    let words: Vec<&str> = u
        .captions
        .iter()
        .flat_map(|c| c.3.iter())
        .filter(|w| w.1 < cut)
        .map(|w| w.0.as_str())
        .collect();
    assert!(words.len() >= 3);
    assert_eq!(
        interrupted["heard"].as_str(),
        Some(words.join(" ").as_str())
    );
    let total: usize = LONG.split_whitespace().count() - 1;
    assert!(words.len() < total, "cut before the end");
    // No audio of the utterance after the interrupted state.
    let pos = msgs
        .iter()
        .position(|m| matches!(m, In::Json(v) if v["state"] == "interrupted"))
        .unwrap();
    assert!(!msgs[pos..].iter().any(
        |m| matches!(m, In::Bin(Binary::Audio { utterance, .. }) if *utterance as u64 == utt)
    ));
    // The session goes on.
    send(&mut ws, json!({"type":"chat","text":"ok","id":"c2"})).await;
    let next_utt = utterance_of(&mut ws, "c2").await;
    let u2 = split(&until_done(&mut ws, next_utt).await, next_utt);
    check_sync(&u2, None);
    assert!(u2.audio[0].0 >= cut);
}

fn find_chromium() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("IDOL_CHROMIUM") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The viewer in headless Chromium: it connects, plays the reply to a chat another client sends with
/// WebAudio and reports its statistics back over the socket (`?report=1`). Opening a link never
/// sends a chat (there is no `?autochat=`): the test's own client asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_in_headless_chromium_plays_audio_and_moves_the_mouth() {
    let Some(chromium) = find_chromium() else {
        eprintln!(
            "SKIPPED viewer_in_headless_chromium_plays_audio_and_moves_the_mouth: no chromium on PATH \
             (Debian: `apt-get install -y chromium`, or set IDOL_CHROMIUM)"
        );
        return;
    };
    let server = start(&[LONG]);
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/?report=1", server.addr());
    let mut child = std::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium starts");
    // Once the viewer is connected (and its upgrade passed the origin check), chat from here.
    let mut waited = 0;
    while server.hub().is_empty() {
        assert!(waited < 600, "the viewer never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let (mut ws, _) = connect(&server).await;
    send(&mut ws, json!({"type":"chat","text":"hello there"})).await;
    assert_eq!(reply(&mut ws).await["type"], "ack");
    // Wait for the reply to have been played (bounded, so a broken page fails instead of hanging).
    let mut last = Value::Null;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(s) = server.viewer_stats().last() {
            last = s.clone();
            let played = s["audioSamplesPlayed"].as_f64().unwrap_or(0.0);
            if played >= RATE as f64 * 3.0 && s["state"] == "idle" {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("viewer stats: {last}");
    assert_eq!(last["protocol"], 1, "{last}");
    assert!(
        last["audioSamplesPlayed"].as_f64().unwrap_or(0.0) >= RATE as f64 * 3.0,
        "{last}"
    );
    assert!(
        last["framesAppliedWhilePlaying"].as_f64().unwrap_or(0.0) > 60.0,
        "{last}"
    );
    assert!(
        last["mouthOpenMaxWhilePlaying"].as_f64().unwrap_or(0.0) > 0.5,
        "{last}"
    );
    assert_eq!(last["errors"], 0, "{last}");
    assert_eq!(
        last["clock"], "webaudio",
        "audio went through WebAudio: {last}"
    );
}

/// The live pipeline on the real Piper voice and the text stage: what the voice says lines up with
/// the frames, clause by clause, on the session clock.
/// A server with the real Piper voice (espeak-ng phonemes), the live text segmenter and a jaw face;
/// every chat is answered with `reply`.
fn real_voice_server(reply: &str) -> Server {
    use idol::perform::adapters::SynthVoice;
    use idol::text::TextSegmenter;
    use idol::tts::{EspeakPhonemizer, PiperVoice, VoiceOptions};
    let home = crate::common::home();
    let voice = PiperVoice::load(
        &home.voice(),
        &home.ort_library(),
        std::sync::Arc::new(
            EspeakPhonemizer::new("en-us").expect("espeak-ng (apt install espeak-ng)"),
        ),
        &VoiceOptions::default(),
    )
    .expect("load the voice");
    let voice = SynthVoice(voice);
    assert_eq!(idol::perform::Voice::sample_rate(&voice), RATE);
    Server::start(
        Stages {
            persona: idol::perform::testing::conversation(),
            generator: Box::new(ScriptedGenerator::new([reply.to_string()])),
            segmenter: Box::new(TextSegmenter::default()),
            voice: Box::new(voice),
            face: Box::new(JawFace::arkit(RATE, FPS)),
        },
        PerformConfig::default(),
        options([127, 0, 0, 1].into(), 2000, None),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_voice_through_the_live_pipeline_lines_up() {
    let server = real_voice_server("[happy] Hello there, it is 2 pm and I am glad you came.");
    let (mut ws, _) = connect(&server).await;
    send(&mut ws, json!({"type":"chat","text":"hi","id":"r"})).await;
    let utt = reply(&mut ws).await["utterance"].as_u64().unwrap();
    let msgs = until_done(&mut ws, utt).await;
    let u = split(&msgs, utt);
    check_sync(&u, None);
    let said: Vec<String> = u
        .captions
        .iter()
        .flat_map(|c| c.3.iter().map(|w| w.0.to_lowercase()))
        .collect();
    assert!(said.contains(&"hello".to_string()), "{said:?}");
    assert!(
        said.contains(&"two".to_string()),
        "numbers are normalized: {said:?}"
    );
    let audible = u
        .audio
        .iter()
        .flat_map(|a| a.1.iter())
        .map(|x| x.abs())
        .fold(0.0f32, f32::max);
    assert!(audible > 0.05, "the voice is audible: {audible}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_vmc_sink_sends_osc_for_a_say_on_the_audio_clock() {
    use idol::sink::audio::AudioOut;
    use idol::sink::live::{LiveOutputs, PerformOutputs};
    use idol::sink::vmc::{BlendNames, VmcOptions, VmcSink};
    use std::sync::Arc;
    let (addr, rx) = crate::sinks::udp_receiver();
    let vmc = VmcSink::new(VmcOptions {
        target: addr,
        rate: 60,
        sample_rate: RATE,
        names: BlendNames::AsRig,
    })
    .unwrap();
    // No sound card here: the null output's played counter is the session clock, as in `idol serve`.
    let outputs = Arc::new(LiveOutputs::new(
        AudioOut::null(RATE).unwrap(),
        true,
        vec![Box::new(vmc)],
    ));
    let st = stages(&[]);
    let channels = st.face.channels().to_vec();
    let server = Server::start_with_sinks(
        st,
        PerformConfig {
            clock: Some(outputs.clock()),
            ..PerformConfig::default()
        },
        options([127, 0, 0, 1].into(), 2000, None),
        vec![Box::new(PerformOutputs::new(outputs.clone(), &channels))],
    )
    .unwrap();
    let (mut ws, _) = connect(&server).await;
    send(
        &mut ws,
        json!({"type":"say","text":"Hello there, nice to see you all."}),
    )
    .await;
    let utt = reply(&mut ws).await["utterance"].as_u64().unwrap();
    let u = split(&until_done(&mut ws, utt).await, utt);
    check_sync(&u, None);
    let start = u.audio[0].0;
    let (ls, lp) = u.audio.last().unwrap();
    let end = ls + lp.len() as u64;
    // The stream is `lead` ahead of the clock; VMC ticks come when the clock has played them.
    assert!(outputs.clock().played().get() < end);
    let (t0, t1) = (start as f32 / RATE as f32, end as f32 / RATE as f32);
    // Idle frames keep the receiver busy: read tick by tick until one lies past the utterance.
    let mut spoken = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut cur: Vec<crate::sinks::Msg> = vec![];
    'ticks: loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (_, _, msgs) = rx
            .recv_timeout(left)
            .expect("VMC ticks up to the end of the utterance");
        for m in msgs {
            let apply = m.addr == "/VMC/Ext/Blend/Apply";
            cur.push(m);
            if !apply {
                continue;
            }
            let t = std::mem::take(&mut cur);
            let time = t
                .iter()
                .find(|m| m.addr == "/VMC/Ext/T")
                .map(|m| crate::sinks::f(&m.args[0]))
                .expect("a time per tick");
            if time >= t1 {
                break 'ticks;
            }
            if time >= t0 {
                let jaw = t
                    .iter()
                    .find(|m| {
                        m.addr == "/VMC/Ext/Blend/Val" && crate::sinks::s(&m.args[0]) == "jawOpen"
                    })
                    .map(|m| crate::sinks::f(&m.args[1]))
                    .expect("jawOpen in every tick");
                spoken.push((time, jaw));
            }
        }
    }
    // One tick per 1/60 s of the utterance, the jaw moving with the voice.
    let expected = (end - start) as f64 * 60.0 / RATE as f64;
    assert!(
        (spoken.len() as f64 - expected).abs() <= 1.5,
        "{} ticks in the utterance, expected {expected:.1}",
        spoken.len()
    );
    assert!(spoken.iter().any(|&(_, j)| j > 0.1), "{spoken:?}");
}

/// The real generator, with every prompt it is given kept for the test to read.
struct Spy {
    inner: Box<dyn idol::persona::TextGenerator>,
    seen: std::sync::Arc<parking_lot::Mutex<Vec<Vec<idol::persona::ChatMessage>>>>,
}

impl idol::persona::TextGenerator for Spy {
    fn generate(
        &mut self,
        messages: &[idol::persona::ChatMessage],
        params: &idol::persona::GenParams,
        cancel: &idol::persona::CancelToken,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<idol::persona::GenOutcome, idol::persona::PersonaError> {
        self.seen.lock().push(messages.to_vec());
        self.inner.generate(messages, params, cancel, on_text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_and_voice_chat_lines_up_and_an_interrupt_is_remembered_as_heard() {
    use idol::persona::{GenParams, Role};
    let home = crate::common::home();
    let config = idol::config::Config::default();
    let mut stages = idol::perform::adapters::build_stages(&home, &config)
        .expect("the real stages from the default config");
    // the persona without a memory file (tests write nothing into the repository)
    stages.persona = idol::perform::adapters::build_conversation(&home, &config, false).unwrap();
    stages.persona.params = GenParams {
        temperature: 0.0,
        max_tokens: 60,
        seed: 7,
        ..stages.persona.params.clone()
    };
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    stages.generator = Box::new(Spy {
        inner: stages.generator,
        seen: seen.clone(),
    });
    assert_eq!(idol::perform::Voice::sample_rate(&*stages.voice), RATE);
    let server = Server::start(
        stages,
        PerformConfig {
            fps: FPS,
            warm_up: true,
            ..PerformConfig::default()
        },
        options([127, 0, 0, 1].into(), 30_000, None),
    )
    .unwrap();
    let (mut ws, hello) = connect(&server).await;
    assert_eq!(hello["rig"], "arkit52");

    // A chat is answered with audio and frames on one timeline.
    send(
        &mut ws,
        json!({"type":"chat","user":"ann","text":"What music do you like?","id":"a"}),
    )
    .await;
    let utt = reply(&mut ws).await["utterance"].as_u64().unwrap();
    let u = split(&until_done(&mut ws, utt).await, utt);
    check_sync(&u, None);
    let audible = u
        .audio
        .iter()
        .flat_map(|a| a.1.iter())
        .map(|x| x.abs())
        .fold(0.0f32, f32::max);
    assert!(audible > 0.05, "the voice is audible: {audible}");
    let jaw_max = u.frames.iter().map(|f| f.1[17]).fold(0.0f32, f32::max);
    assert!(jaw_max > 0.2, "the jaw moves with the voice: {jaw_max}");

    // Barge in once a little of the next reply was sent.
    send(
        &mut ws,
        json!({"type":"chat","user":"ann","text":"Tell me a long story about the sea.","id":"b"}),
    )
    .await;
    let utt = utterance_of(&mut ws, "b").await;
    let mut msgs = vec![];
    let mut sent = 0u64;
    while sent < RATE as u64 / 2 {
        let m = next(&mut ws).await;
        if let In::Bin(Binary::Audio { utterance, pcm, .. }) = &m
            && *utterance as u64 == utt
        {
            sent += pcm.len() as u64;
        }
        msgs.push(m);
    }
    send(&mut ws, json!({"type":"interrupt"})).await;
    msgs.extend(until_done(&mut ws, utt).await);
    let u = split(&msgs, utt);
    let interrupted = u
        .states
        .iter()
        .find(|s| s["state"] == "interrupted")
        .expect("an interrupted state");
    let cut = interrupted["sample"].as_u64().unwrap();
    check_sync(&u, Some(cut));
    let heard = interrupted["heard"].as_str().unwrap().to_string();
    let words: Vec<&str> = u
        .captions
        .iter()
        .flat_map(|c| c.3.iter())
        .filter(|w| w.1 < cut)
        .map(|w| w.0.as_str())
        .collect();
    assert_eq!(heard, words.join(" "));

    // The persona's memory holds exactly what was heard: the next prompt carries it as her turn.
    send(
        &mut ws,
        json!({"type":"chat","user":"ann","text":"Sorry, go on.","id":"c"}),
    )
    .await;
    let utt = utterance_of(&mut ws, "c").await;
    until_done(&mut ws, utt).await;
    let prompts = seen.lock().clone();
    let last = prompts.last().unwrap();
    let n = last.len();
    assert_eq!(last[n - 1].content, "ann: Sorry, go on.");
    if heard.is_empty() {
        assert_eq!(
            last[n - 2].content,
            "ann: Tell me a long story about the sea."
        );
    } else {
        assert_eq!(last[n - 2].role, Role::Assistant);
        // an interrupted turn is marked as cut off
        assert_eq!(last[n - 2].content, format!("{heard} —"));
        assert_eq!(
            last[n - 3].content,
            "ann: Tell me a long story about the sea."
        );
    }
}

/// Frames of utterance `utt` as (sample, weights), binary or JSON (the JSON ones must name `rig`).
fn frames_of(msgs: &[In], utt: u64, rig: &str) -> Vec<(u64, Vec<f32>)> {
    let mut out = vec![];
    for m in msgs {
        match m {
            In::Bin(Binary::Frame {
                utterance,
                sample,
                weights,
                ..
            }) if *utterance as u64 == utt => out.push((*sample, weights.clone())),
            In::Json(v) if v["type"] == "frame" && v["utterance"] == utt => {
                assert_eq!(v["rig"], rig, "{v}");
                let w: Vec<f32> = serde_json::from_value(v["weights"].clone()).unwrap();
                out.push((v["sample"].as_u64().unwrap(), w));
            }
            _ => {}
        }
    }
    out
}

/// Three clients on one real session (model, voice and face solver from the default config), each
/// on its own rig: the same frames, stamp for stamp, in each rig's channels, with values that are
/// `Rig::retarget` of one canonical frame. A re-subscribe switches rig at its ack; an unknown rig or
/// a path is refused with the list of rigs and the connection keeps its subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_different_rigs_get_the_same_frames_retargeted() {
    use idol::face::{Rig, canon};
    let home = crate::common::home();
    let config = idol::config::Config::default();
    let stages = idol::perform::adapters::build_stages(&home, &config)
        .expect("the real stages from the default config");
    assert_eq!(stages.face.rig(), "arkit52");
    let server = Server::start(
        stages,
        PerformConfig {
            fps: FPS,
            ..PerformConfig::default()
        },
        options([127, 0, 0, 1].into(), 30_000, None),
    )
    .unwrap();
    let (mut a, hello) = connect(&server).await;
    assert_eq!(hello["rig"], "arkit52");
    let offered: Vec<&str> = hello["rigs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(offered, ["arkit52", "vrm", "live2d", "oculus15"]);
    let (mut b, _) = connect(&server).await;
    let ack = subscribe(&mut b, json!({"rig":"vrm","id":"b"})).await;
    assert_eq!(ack["rig"], "vrm");
    let vrm = Rig::builtin("vrm").unwrap();
    let names: Vec<&str> = vrm.channel_names().collect();
    assert_eq!(ack["channel_names"], json!(names));
    let (mut c, _) = connect(&server).await;
    let ack = subscribe(&mut c, json!({"rig":"oculus15","frames":"json"})).await;
    assert_eq!(
        (ack["rig"].as_str(), ack["frames"].as_str()),
        (Some("oculus15"), Some("json"))
    );
    assert_eq!(ack["channel_names"].as_array().unwrap().len(), 15);

    send(
        &mut a,
        json!({"type":"say","text":"Hello there, what a wonderful evening to talk about the moon."}),
    )
    .await;
    let utt = reply(&mut a).await["utterance"].as_u64().unwrap();
    let fa = frames_of(&until_done(&mut a, utt).await, utt, "arkit52");
    let fb = frames_of(&until_done(&mut b, utt).await, utt, "vrm");
    let fc = frames_of(&until_done(&mut c, utt).await, utt, "oculus15");
    assert!(fa.len() > 60, "{} frames", fa.len());
    let stamps = |f: &[(u64, Vec<f32>)]| f.iter().map(|x| x.0).collect::<Vec<_>>();
    assert_eq!(stamps(&fa), stamps(&fb), "the same frames on every rig");
    assert_eq!(stamps(&fa), stamps(&fc));
    assert!(fa.iter().all(|f| f.1.len() == 52));
    assert!(fb.iter().all(|f| f.1.len() == vrm.len()));
    assert!(fc.iter().all(|f| f.1.len() == 15));

    // The canonical frame, rebuilt from what the arkit52 client (ARKit channels) and the oculus15
    // client (visemes) got, retargeted to VRM, is what the vrm client got, channel for channel where
    // VRM reads only those sources.
    let oculus = Rig::builtin("oculus15").unwrap();
    let known = |i: usize| i < canon::VISEME_BASE + 15;
    let mut checked = 0;
    for ((wa, wb), wc) in fa
        .iter()
        .map(|f| &f.1)
        .zip(fb.iter().map(|f| &f.1))
        .zip(fc.iter().map(|f| &f.1))
    {
        let mut cv = [0.0f32; canon::COUNT];
        cv[..52].copy_from_slice(wa);
        for (ch, v) in oculus.channels.iter().zip(wc) {
            cv[ch.sources[0].0] = *v;
        }
        let mut want = vec![0.0; vrm.len()];
        vrm.retarget(&cv, &mut want);
        for (k, ch) in vrm.channels.iter().enumerate() {
            if ch.sources.iter().all(|s| known(s.0)) {
                assert!(
                    (want[k] - wb[k]).abs() < 1e-5,
                    "{}: {} vs {}",
                    ch.name,
                    want[k],
                    wb[k]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8 * fa.len(), "{checked} values checked");
    // VRM's vowel shapes open with ARKit's jaw while she speaks.
    let jaw: Vec<f32> = fa.iter().map(|f| f.1[17]).collect();
    let vowels: Vec<f32> = fb
        .iter()
        .map(|f| {
            ["aa", "ih", "ou", "ee", "oh"]
                .iter()
                .map(|n| f.1[vrm.channel_index(n).unwrap()])
                .sum()
        })
        .collect();
    let r = pearson(&jaw, &vowels);
    let mean_where = |f: &dyn Fn(f32) -> bool| {
        let v: Vec<f32> = jaw
            .iter()
            .zip(&vowels)
            .filter(|(j, _)| f(**j))
            .map(|x| *x.1)
            .collect();
        v.iter().sum::<f32>() / v.len().max(1) as f32
    };
    let (open, shut) = (mean_where(&|j| j > 0.2), mean_where(&|j| j < 0.05));
    assert!(
        r > 0.3 && open > 2.0 * shut + 0.05,
        "VRM vowels track jawOpen: r = {r}, vowels {open} with the jaw open, {shut} with it shut"
    );
    eprintln!("jaw/vowels: r = {r}, open {open}, shut {shut}");
    assert!(jaw.iter().any(|&j| j > 0.2) && vowels.iter().any(|&v| v > 0.3));

    // A rig that is not offered, or a path: refused, and b keeps its subscription.
    for bad in ["klingon", "rigs/live2d.toml", "/etc/passwd"] {
        send(
            &mut b,
            json!({"type":"subscribe","rig":bad,"streams":["state"],"id":bad}),
        )
        .await;
        let e = reply(&mut b).await;
        assert_eq!(
            (e["code"].as_str(), e["id"].as_str()),
            (Some("bad_rig"), Some(bad)),
            "{e}"
        );
        assert_eq!(e["rigs"], json!(offered));
    }
    // Re-subscribe mid-session: b switches to live2d from its ack on.
    let ack = subscribe(&mut b, json!({"rig":"live2d","id":"l2d"})).await;
    assert_eq!(
        (ack["rig"].as_str(), ack["id"].as_str()),
        (Some("live2d"), Some("l2d"))
    );
    let live2d = Rig::builtin("live2d").unwrap();
    assert_eq!(ack["channel_names"].as_array().unwrap().len(), live2d.len());
    send(
        &mut a,
        json!({"type":"say","text":"And now for something new."}),
    )
    .await;
    let utt = reply(&mut a).await["utterance"].as_u64().unwrap();
    let fa = frames_of(&until_done(&mut a, utt).await, utt, "arkit52");
    let fb = frames_of(&until_done(&mut b, utt).await, utt, "live2d");
    assert!(!fa.is_empty());
    assert_eq!(stamps(&fa), stamps(&fb));
    assert!(fb.iter().all(|f| f.1.len() == live2d.len()));
    let m = server.perform().metrics();
    assert!(
        m.frames_retargeted
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

/// What `docs/protocol.md` promises of tags on the live stream, with the real voice: every tag is one
/// cue at the sample of the word it precedes (at the last sample when it ends the text, however the
/// clause is spoken: head first here, as every first clause is), stage directions are cues and never
/// spoken or captioned, and a `<break/>` between words is silence right there, with frames through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tag_is_a_cue_and_every_break_is_silence_where_it_was_written() {
    let server = real_voice_server("unused");
    let (mut ws, _) = connect(&server).await;
    let period = u64::from(RATE).div_ceil(u64::from(FPS));
    let mut say = async |text: &str| {
        send(&mut ws, json!({"type":"say","text":text,"id":"s"})).await;
        let utt = utterance_of(&mut ws, "s").await;
        let msgs = until_done(&mut ws, utt).await;
        let cues: Vec<(String, u64)> = msgs
            .iter()
            .filter_map(|m| match m {
                In::Json(v) if v["type"] == "cue" && v["utterance"] == utt => Some((
                    v["name"].as_str().unwrap().to_string(),
                    v["sample"].as_u64().unwrap(),
                )),
                _ => None,
            })
            .collect();
        let u = split(&msgs, utt);
        // Audio contiguous from the first chunk to the last, frames all through it (the pauses'
        // idle frames included) and none outside it.
        let first = u.audio[0].0;
        let mut end = first;
        for (s, pcm) in &u.audio {
            assert_eq!(*s, end, "{text}: audio is contiguous");
            end += pcm.len() as u64;
        }
        assert!(u.frames.first().unwrap().0 < first + period, "{text}");
        assert!(u.frames.last().unwrap().0 + period >= end, "{text}");
        // A pause's idle frames sit on the session's global grid, a clause's on its own: where one
        // hands over to the other two frames may be up to two periods apart, never more.
        for w in u.frames.windows(2) {
            assert!(
                w[0].0 < w[1].0 && w[1].0 - w[0].0 < 2 * period,
                "{text}: no frame hole between {} and {} (captions {:?})",
                w[0].0,
                w[1].0,
                u.captions.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>()
            );
        }
        assert!(
            u.frames.iter().all(|f| (first..end).contains(&f.0)),
            "{text}"
        );
        (u, cues, end)
    };

    // A tag inside the first clause (spoken head first).
    let (u, cues, _) = say("Hello <nod> there, my friends.").await;
    let there = u.captions[0].3.iter().find(|w| w.0 == "there").unwrap().1;
    assert_eq!(cues, [("nod".to_string(), there)]);

    // Tags after the last word: both delivered, at the end of the speech.
    let (_, cues, end) = say("Thanks for the follow! <nod> <wave>").await;
    assert_eq!(
        cues.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["nod", "wave"]
    );
    assert!(cues.iter().all(|c| c.1 == end - 1), "{cues:?} end {end}");

    // A break between words: the clause is cut there and the second part starts one second after
    // the first ends, with the face idling through the pause.
    let (u, _, end) = say("Hello there <break time=\"1s\"/> my friend.").await;
    let texts: Vec<&str> = u.captions.iter().map(|c| c.2.as_str()).collect();
    assert_eq!(texts, ["Hello there", "my friend."]);
    assert_eq!(u.captions[1].0 - u.captions[0].1, u64::from(RATE));
    assert_eq!(end, u.captions[1].1);
    // A break after the last word is silence after it.
    let (u, _, end) = say("Bye now. <break time=\"500ms\"/>").await;
    assert_eq!(end - u.captions.last().unwrap().1, u64::from(RATE) / 2);

    // Stage directions: cues, not words.
    let (u, cues, _) = say("Hi *waves* there (laughs) okay *looks up* then.").await;
    let caption: Vec<&str> = u.captions.iter().map(|c| c.2.as_str()).collect();
    assert_eq!(caption.join(" "), "Hi there okay then.");
    assert_eq!(
        cues.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["wave", "laugh"]
    );
}

/// The shipped Japanese persona (personas/hana.toml) served: its card's `[voice]` picks Kokoro for
/// Japanese and the Piper voice for English words, the stream runs at Kokoro's 24 kHz, and a `say`
/// in Japanese with an English word comes back as audible audio, frames that move the jaw, and
/// captions with the Japanese words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_japanese_persona_speaks_japanese() {
    use idol::perform::adapters::{build_conversation, build_voice_face};
    use idol::text::TextSegmenter;
    let home = crate::common::home();
    let card = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("personas/hana.toml");
    let config = idol::config::Config::from_toml_str(
        &format!("[persona]\ncard = {:?}\n", card.to_str().unwrap()),
        std::path::Path::new("idol.toml"),
    )
    .unwrap();
    let (voice, face) = build_voice_face(&home, &config).unwrap();
    assert_eq!(voice.sample_rate(), 24_000);
    let persona = build_conversation(&home, &config, false).unwrap();
    assert_eq!(persona.card().name, "Hana");
    let server = Server::start(
        Stages {
            persona,
            generator: Box::new(ScriptedGenerator::new(["はい。"])),
            segmenter: Box::new(TextSegmenter::default()),
            voice,
            face,
        },
        PerformConfig::default(),
        options([127, 0, 0, 1].into(), 2000, None),
    )
    .unwrap();
    let (mut ws, hello) = connect(&server).await;
    assert_eq!(hello["sample_rate"], 24_000);
    send(
        &mut ws,
        json!({"type":"say","text":"[happy] みんな、こんばんは！今日はRustの話をします。"}),
    )
    .await;
    let utt = reply(&mut ws).await["utterance"].as_u64().unwrap();
    let u = split(&until_done(&mut ws, utt).await, utt);
    let said: Vec<String> = u
        .captions
        .iter()
        .flat_map(|c| c.3.iter().map(|w| w.0.clone()))
        .collect();
    assert!(said.iter().any(|w| w.contains("みんな")), "{said:?}");
    assert!(
        said.iter().any(|w| w.eq_ignore_ascii_case("rust")),
        "{said:?}"
    );
    let samples: usize = u.audio.iter().map(|a| a.1.len()).sum();
    assert!(samples > 24_000, "{samples} samples");
    let audible = u
        .audio
        .iter()
        .flat_map(|a| a.1.iter())
        .map(|x| x.abs())
        .fold(0.0f32, f32::max);
    assert!(audible > 0.05, "the voice is audible: {audible}");
    let jaw = u.frames.iter().map(|f| f.1[17]).fold(0.0f32, f32::max);
    assert!(
        u.frames.len() > 30 && jaw > 0.1,
        "{} frames, jaw {jaw}",
        u.frames.len()
    );
}
