//! Resource budgets and hostile files (issue 15, defects 1, 2, 4, 5): no single script, message, WAV
//! or voice config makes the idol allocate without bound, crash, or quietly produce garbage. The
//! command line is the real `idol` binary; the protocol is a real server on loopback with real
//! WebSocket clients (the session's stages are fakes: a tone voice, a jaw-only face).

use crate::common::{home, idol_in};
use futures_util::{SinkExt, StreamExt};
use idol::budget::Budget;
use idol::face::Rig;
use idol::perform::testing::{JawFace, ScriptedGenerator, ToneVoice};
use idol::perform::{PerformConfig, Stages};
use idol::script::live::ScriptRenderer;
use idol::script::{RenderOptions, Script, SynthLineVoice};
use idol::server::protocol::{Binary, parse_binary};
use idol::server::{ConnPolicy, Server, ServerOptions};
use idol::tts::FakeSynthesizer;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Ten lines each a day after the one before: 76 GB of samples at 22050 Hz if materialized.
fn day_gaps() -> String {
    "[[line]]\ntext = \"Hi.\"\ngap = 86400\n".repeat(10)
}

/// `"Start. " + "<break 60s/>" * 1200`: 20 hours of pauses in 14 KB.
fn twenty_hours_of_breaks() -> String {
    format!("Start. {}", "<break 60s/>".repeat(1200))
}

fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An error exit (2) with one message and no panic.
fn assert_clean_error(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    err
}

/// A 16-bit mono WAV of a short tone whose header then says `rate` Hz.
fn wav_claiming(rate: u32) -> Vec<u8> {
    let pcm: Vec<f32> = (0..4000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    let mut b = idol::tts::wav::wav_bytes(&pcm, 16000);
    b[24..28].copy_from_slice(&rate.to_le_bytes());
    b
}

/// The `idol` binary with the repository (and its real assets) as its home, run in `dir`.
fn idol_with_assets(dir: &Path) -> std::process::Command {
    let h = home();
    let mut c = idol_in(dir);
    c.env("IDOL_HOME", h.root());
    c
}

#[test]
fn render_and_perform_refuse_a_76_gb_script_naming_the_line_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", day_gaps());
    for args in [
        &["render", "s.toml", "--out", "out"][..],
        &["perform", "s.toml"][..],
    ] {
        let out = idol_in(dir.path()).args(args).output().unwrap();
        let err = assert_clean_error(&out);
        assert!(err.contains("s.toml:1:1: line 1:"), "{err}");
        assert!(err.contains("over the limit of 600 s"), "{err}");
        assert!(
            err.contains("raise [limits] performance_secs in idol.toml"),
            "{err}"
        );
        assert!(!dir.path().join("out").exists());
    }
    // Raised in idol.toml: the first line now fits, the second does not.
    write(
        dir.path(),
        "idol.toml",
        "[limits]\nperformance_secs = 86400\n",
    );
    let out = idol_in(dir.path())
        .args(["render", "s.toml", "--out", "out"])
        .output()
        .unwrap();
    let err = assert_clean_error(&out);
    assert!(err.contains("s.toml:4:1: line 2:"), "{err}");
    assert!(err.contains("over the limit of 86400 s"), "{err}");
}

#[test]
fn say_with_twenty_hours_of_breaks_is_refused_before_the_voice_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out = idol_in(dir.path())
        .args(["say", &twenty_hours_of_breaks(), "--out", "out"])
        .output()
        .unwrap();
    let err = assert_clean_error(&out);
    assert!(err.contains("at least 72000.0 s"), "{err}");
    assert!(err.contains("[limits] utterance_secs"), "{err}");
    assert!(!dir.path().join("out").exists());
}

#[test]
fn wavs_with_impossible_rates_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "r0.wav", wav_claiming(0));
    write(dir.path(), "r4g.wav", wav_claiming(4_000_000_000));
    for (name, want) in [
        ("r0.wav", "sample rate is 0 Hz"),
        ("r4g.wav", "sample rate is 4000000000 Hz"),
    ] {
        let out = idol_in(dir.path())
            .args(["lipsync", name, "--out", "f.jsonl"])
            .output()
            .unwrap();
        let err = assert_clean_error(&out);
        assert!(err.contains(name) && err.contains(want), "{err}");
        assert!(!dir.path().join("f.jsonl").exists());
    }
    // A recorded line in a script: the same error, at the line's place.
    write(
        dir.path(),
        "s.toml",
        "[[line]]\ntext = \"Hi.\"\n[[line]]\naudio = \"r0.wav\"\n",
    );
    let out = idol_with_assets(dir.path())
        .args(["render", "s.toml", "--out", "out"])
        .output()
        .unwrap();
    let err = assert_clean_error(&out);
    assert!(err.contains("s.toml:3:1: field `line[2].audio`"), "{err}");
    assert!(
        err.contains("r0.wav") && err.contains("sample rate is 0 Hz"),
        "{err}"
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn voice_configs_that_cannot_be_true_are_refused_naming_the_file() {
    let h = home();
    let real: Value = serde_json::from_slice(
        &std::fs::read(h.root().join("voices/en_US-joe-medium.onnx.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The graph is never read: the config is refused first.
    write(dir.path(), "bad.onnx", b"");
    for (pointer, value, want) in [
        (
            "/audio/sample_rate",
            json!(4294967295u64),
            "audio.sample_rate is 4294967295",
        ),
        (
            "/inference/length_scale",
            json!(-1),
            "inference.length_scale is -1",
        ),
    ] {
        let mut cfg = real.clone();
        *cfg.pointer_mut(pointer).unwrap() = value;
        write(dir.path(), "bad.onnx.json", cfg.to_string());
        let out = idol_with_assets(dir.path())
            .args(["say", "Hello.", "--out", "out", "--voice"])
            .arg(dir.path().join("bad.onnx"))
            .output()
            .unwrap();
        let err = assert_clean_error(&out);
        assert!(err.contains("bad.onnx.json") && err.contains(want), "{err}");
        assert!(!dir.path().join("out/speech.wav").exists());
    }
}

/// A server whose scripts are rendered with the fake voice, with `budget` for its messages and its
/// utterances.
fn server(budget: Budget) -> Server {
    let renderer = ScriptRenderer::new(move |s: &Script| {
        idol::script::render(
            s,
            &mut SynthLineVoice(FakeSynthesizer::default()),
            RenderOptions {
                rig: Rig::builtin("arkit52").unwrap(),
                fps: 60,
                seed: 1,
                rate: None,
                lipsync: None,
                progress: None,
                budget,
            },
        )
        .map_err(Into::into)
    });
    Server::start(
        Stages {
            generator: Box::new(ScriptedGenerator::new(["unused"])),
            segmenter: Box::new(idol::text::TextSegmenter::default()),
            voice: Box::new(ToneVoice::new(22050)),
            face: Box::new(JawFace::arkit(22050, 60)),
            persona: idol::perform::testing::conversation(),
        },
        PerformConfig {
            budget,
            ..PerformConfig::default()
        },
        ServerOptions {
            bind: [127, 0, 0, 1].into(),
            port: 0,
            max_clients: 4,
            max_client_lag: Duration::from_millis(5000),
            policy: ConnPolicy {
                scripts: Some(renderer),
                budget,
                ..ConnPolicy::default()
            },
            rigs_dir: None,
            ..ServerOptions::default()
        },
    )
    .unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message, or a summary of the next audio chunk; `None` once closed.
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return Some(serde_json::from_str::<Value>(t.as_str()).unwrap());
            }
            Some(Ok(Message::Binary(b))) => {
                if let Some(Binary::Audio {
                    utterance,
                    start,
                    pcm,
                }) = parse_binary(&b)
                {
                    return Some(
                        json!({"type": "audio", "utterance": utterance, "start": start, "n": pcm.len()}),
                    );
                }
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Send `v`, return the next ack, error or pong.
async fn reply(ws: &mut Ws, v: Value) -> Value {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
    loop {
        let v = next(ws).await.expect("the connection stays open");
        if matches!(v["type"].as_str(), Some("ack" | "error" | "pong")) {
            return v;
        }
    }
}

async fn connect(server: &Server) -> Ws {
    let url = format!("ws://{}/v1/stream", server.addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap()["type"], "hello");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perform_and_say_bombs_are_refused_with_a_reason_and_the_connection_stays() {
    let server = server(Budget::default());
    let mut ws = connect(&server).await;
    let e = reply(
        &mut ws,
        json!({"type": "perform", "id": "p", "script": day_gaps()}),
    )
    .await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("too_long")),
        "{e}"
    );
    assert_eq!(e["id"], "p");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("line 1") && m.contains("[limits] performance_secs"),
        "{m}"
    );
    let e = reply(
        &mut ws,
        json!({"type": "say", "id": "s", "text": twenty_hours_of_breaks()}),
    )
    .await;
    assert_eq!(e["code"], "too_long", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("[limits] utterance_secs"),
        "{e}"
    );
    // Still serving, on this connection.
    let p = reply(&mut ws, json!({"type": "ping", "id": "x"})).await;
    assert_eq!(p["type"], "pong");
    let ack = reply(
        &mut ws,
        json!({"type": "say", "id": "ok", "text": "Hello there."}),
    )
    .await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

/// Pauses stream as silence (contiguous audio through a long break), and speech past the utterance
/// limit is cut with an error event, not a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_breaks_stream_as_silence_and_an_utterance_past_its_limit_is_cut_with_an_error() {
    let server = server(Budget {
        performance_secs: 600.0,
        utterance_secs: 3.0,
    });
    let mut ws = connect(&server).await;
    let sub = json!({"type": "subscribe", "streams": ["audio", "state"]});
    assert_eq!(reply(&mut ws, sub).await["type"], "ack");
    // 2.5 s of breaks fit the message check; with the speech the utterance goes over 3 s.
    let text = "Hello there. <break time=\"2s\"/> Still here. <break time=\"500ms\"/> And more words to say now.";
    let ack = reply(&mut ws, json!({"type": "say", "text": text})).await;
    let utt = ack["utterance"].as_u64().unwrap();
    let (mut audio, mut errors, mut next_start) = (0u64, vec![], None);
    loop {
        let v = tokio::time::timeout(Duration::from_secs(30), next(&mut ws))
            .await
            .expect("the utterance ends")
            .expect("the connection stays open");
        match v["type"].as_str() {
            Some("audio") if v["utterance"] == utt => {
                let start = v["start"].as_u64().unwrap();
                if let Some(s) = next_start {
                    assert_eq!(start, s, "audio is contiguous");
                }
                next_start = Some(start + v["n"].as_u64().unwrap());
                audio += v["n"].as_u64().unwrap();
            }
            Some("error") => errors.push(v["message"].as_str().unwrap().to_string()),
            Some("state") if v["state"] == "idle" => break,
            _ => {}
        }
    }
    assert!(audio <= 3 * 22050, "{audio} samples");
    assert!(
        audio >= 2 * 22050,
        "the 2 s break was heard: {audio} samples"
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("[limits] utterance_secs"), "{errors:?}");
}
