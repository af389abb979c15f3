//! The sinks against receivers written here: VMC packets decoded by an OSC decoder of this file (not
//! rosc), a VTube Studio API server speaking the documented messages, the audio output's mock backend
//! and its paced null fallback.

use glam::{EulerRot, Quat};
use idol::face::{EyeGaze, Frame, MorphWeights, Rig};
use idol::sink::audio::{AudioOut, Backend};
use idol::sink::vmc::{VmcOptions, VmcSink};
use idol::sink::vts::{VtsOptions, VtsSink};
use idol::sink::{FrameGate, FrameSink};
use idol::time::SampleTime;
use std::net::UdpSocket;
use std::sync::mpsc;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// An independent OSC 1.0 decoder: packets are a message or a "#bundle" of size-prefixed elements.

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    I(i32),
    F(f32),
    S(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Msg {
    pub(crate) addr: String,
    pub(crate) args: Vec<Arg>,
}

fn osc_string(b: &[u8], pos: &mut usize) -> String {
    let start = *pos;
    let end = start
        + b[start..]
            .iter()
            .position(|&c| c == 0)
            .expect("OSC string ends in NUL");
    let s = std::str::from_utf8(&b[start..end])
        .expect("UTF-8")
        .to_string();
    *pos = (end + 4) & !3; // the NUL, then padding to a multiple of 4
    s
}

fn be4(b: &[u8], pos: &mut usize) -> [u8; 4] {
    let v = [b[*pos], b[*pos + 1], b[*pos + 2], b[*pos + 3]];
    *pos += 4;
    v
}

/// Decode one packet into its messages (bundles flattened, in order); also says whether it was a bundle.
fn decode(b: &[u8], out: &mut Vec<Msg>) -> bool {
    assert_eq!(b.len() % 4, 0, "OSC packets are multiples of 4 bytes");
    if b.starts_with(b"#bundle\0") {
        let mut pos = 16; // "#bundle\0" and the 8-byte timetag
        while pos < b.len() {
            let n = i32::from_be_bytes(be4(b, &mut pos)) as usize;
            decode(&b[pos..pos + n], out);
            pos += n;
        }
        return true;
    }
    let mut pos = 0;
    let addr = osc_string(b, &mut pos);
    let tags = osc_string(b, &mut pos);
    assert!(
        tags.starts_with(','),
        "type tags start with a comma: {tags:?}"
    );
    let mut args = Vec::new();
    for t in tags[1..].chars() {
        args.push(match t {
            'i' => Arg::I(i32::from_be_bytes(be4(b, &mut pos))),
            'f' => Arg::F(f32::from_be_bytes(be4(b, &mut pos))),
            's' => Arg::S(osc_string(b, &mut pos)),
            other => panic!("unexpected OSC type tag {other:?}"),
        });
    }
    assert_eq!(pos, b.len(), "message {addr} has trailing bytes");
    out.push(Msg { addr, args });
    false
}

pub(crate) fn f(a: &Arg) -> f32 {
    match a {
        Arg::F(x) => *x,
        other => panic!("expected a float, got {other:?}"),
    }
}

pub(crate) fn s(a: &Arg) -> &str {
    match a {
        Arg::S(x) => x,
        other => panic!("expected a string, got {other:?}"),
    }
}

/// A receiver thread: every datagram decoded, sent on as (was a bundle, size, messages).
pub(crate) fn udp_receiver() -> (
    std::net::SocketAddr,
    mpsc::Receiver<(bool, usize, Vec<Msg>)>,
) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf) {
            let mut msgs = Vec::new();
            let bundle = decode(&buf[..n], &mut msgs);
            if tx.send((bundle, n, msgs)).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Receive until `ticks` more `/VMC/Ext/Blend/Apply` have come; return the messages of those ticks.
fn take_ticks(rx: &mpsc::Receiver<(bool, usize, Vec<Msg>)>, ticks: u64) -> Vec<Vec<Msg>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    while (out.len() as u64) < ticks {
        let (bundle, size, msgs) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the VMC receiver got nothing");
        assert!(bundle, "VMC data comes in bundles");
        assert!(
            size <= idol::sink::vmc::MAX_DATAGRAM,
            "datagram of {size} bytes"
        );
        for m in msgs {
            let apply = m.addr == "/VMC/Ext/Blend/Apply";
            cur.push(m);
            if apply {
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    assert!(cur.is_empty(), "a tick's messages ended after Apply");
    out
}

fn frame(rig: &Rig, k: u64, rate: u32, fps: u32) -> Frame {
    let t = k as f32 / fps as f32;
    let weights = (0..rig.len())
        .map(|c| {
            let ch = &rig.channels[c];
            let u = 0.5 + 0.5 * (t * 3.1 + c as f32 * 0.7).sin();
            ch.min + (ch.max - ch.min) * u
        })
        .collect();
    Frame::new(
        SampleTime::ZERO.frame(k, rate, fps),
        MorphWeights::new(rig, weights).expect("within the rig's ranges"),
        Quat::from_euler(
            EulerRot::YXZ,
            0.3 * (t * 1.3).sin(),
            -0.2 * t.cos(),
            0.1 * t.sin(),
        ),
        [EyeGaze {
            yaw: 0.1 * t.sin(),
            pitch: 0.05,
        }; 2],
    )
}

#[test]
fn vmc_packets_decoded_independently_match_the_frames() {
    let rate = 22050;
    let (addr, rx) = udp_receiver();
    for rig_name in ["arkit52", "vrm"] {
        let rig = Rig::builtin(rig_name).unwrap();
        let channels: Vec<String> = rig.channel_names().map(str::to_string).collect();
        let mut sink = VmcSink::new(VmcOptions {
            target: addr,
            rate: 60,
            sample_rate: rate,
            names: Default::default(),
        })
        .unwrap();
        // 60 fps in, 60 Hz out: every tick is exactly one frame.
        for k in 0..20 {
            let fr = frame(&rig, k, rate, 60);
            let before = sink.ticks();
            sink.frame(&channels, &fr.as_ref()).unwrap();
            let ticks = take_ticks(&rx, sink.ticks() - before);
            assert_eq!(ticks.len(), 1, "{rig_name} frame {k}");
            let msgs = &ticks[0];
            let addrs: Vec<&str> = msgs.iter().map(|m| m.addr.as_str()).collect();
            assert_eq!(addrs[0], "/VMC/Ext/OK");
            assert_eq!(msgs[0].args, vec![Arg::I(1)]);
            assert_eq!(addrs[1], "/VMC/Ext/T");
            assert!((f(&msgs[1].args[0]) as f64 - fr.at.as_secs_f64(rate)).abs() < 1e-6);
            assert_eq!(addrs[2], "/VMC/Ext/Root/Pos");
            assert_eq!(s(&msgs[2].args[0]), "root");
            // Neck then Head, local rotations whose product is the frame's head in Unity's frame.
            assert_eq!(&addrs[3..5], &["/VMC/Ext/Bone/Pos", "/VMC/Ext/Bone/Pos"]);
            assert_eq!(s(&msgs[3].args[0]), "Neck");
            assert_eq!(s(&msgs[4].args[0]), "Head");
            let q = |m: &Msg| {
                assert_eq!(m.args.len(), 8);
                Quat::from_xyzw(f(&m.args[4]), f(&m.args[5]), f(&m.args[6]), f(&m.args[7]))
            };
            let h = fr.head;
            let want = Quat::from_xyzw(h.x, -h.y, -h.z, h.w); // mirror X: right- to left-handed
            let got = q(&msgs[3]) * q(&msgs[4]);
            assert!(got.abs_diff_eq(want, 1e-5), "{got:?} vs {want:?}");
            // One Blend/Val per channel, in rig order, values exact, then Apply last.
            let vals = &msgs[5..msgs.len() - 1];
            assert_eq!(vals.len(), channels.len());
            for ((m, name), w) in vals.iter().zip(&channels).zip(&fr.weights) {
                assert_eq!(m.addr, "/VMC/Ext/Blend/Val");
                assert_eq!(s(&m.args[0]), name);
                assert_eq!(f(&m.args[1]), *w);
            }
            assert_eq!(*addrs.last().unwrap(), "/VMC/Ext/Blend/Apply");
        }
    }
}

/// `[sinks.vmc] names` selects the names a receiver applies: VRM 0.x presets by default (what
/// VSeeFace's VRM 0.x models have), VRM 1.0 expression names, or ARKit's.
#[test]
fn vmc_names_setting_selects_the_blend_shape_names_received() {
    let rate = 22050;
    let (addr, rx) = udp_receiver();
    let cases: [(&str, &[&str], &[&str]); 4] = [
        (
            "",
            &[
                "A",
                "I",
                "U",
                "E",
                "O",
                "Blink",
                "Blink_L",
                "Blink_R",
                "Joy",
                "Sorrow",
                "Fun",
                "Angry",
                "Surprised",
                "LookUp",
            ],
            &["aa", "blink", "happy"],
        ),
        (
            "names = \"vrm0\"\n",
            &["A", "O", "Blink", "Joy"],
            &["aa", "oh", "blink"],
        ),
        (
            "names = \"vrm1\"\n",
            &["aa", "ih", "ou", "ee", "oh", "blink", "happy", "relaxed"],
            &["A", "Joy"],
        ),
        (
            "names = \"arkit\"\n",
            &["jawOpen", "eyeBlinkLeft", "mouthSmileLeft", "tongueOut"],
            &["A", "aa"],
        ),
    ];
    for (line, want, never) in cases {
        let src = format!("[sinks.vmc]\nenabled = true\ntarget = \"{addr}\"\n{line}");
        let cfg = idol::config::Config::from_toml_str(&src, std::path::Path::new("idol.toml"))
            .unwrap()
            .sinks
            .vmc
            .unwrap();
        let rig = Rig::builtin(&cfg.rig).unwrap();
        let channels: Vec<String> = rig.channel_names().map(str::to_string).collect();
        let mut sink = VmcSink::new(VmcOptions::from_config(&cfg, rate)).unwrap();
        let fr = frame(&rig, 0, rate, 60);
        let before = sink.ticks();
        sink.frame(&channels, &fr.as_ref()).unwrap();
        let ticks = take_ticks(&rx, sink.ticks() - before);
        let vals: Vec<(String, f32)> = ticks[0]
            .iter()
            .filter(|m| m.addr == "/VMC/Ext/Blend/Val")
            .map(|m| (s(&m.args[0]).to_string(), f(&m.args[1])))
            .collect();
        assert_eq!(vals.len(), channels.len(), "{line:?}");
        for n in want {
            assert!(
                vals.iter().any(|(v, _)| v == n),
                "{line:?}: no `{n}` in {vals:?}"
            );
        }
        for n in never {
            assert!(!vals.iter().any(|(v, _)| v == n), "{line:?}: `{n}` sent");
        }
        // Renaming keeps each value with its channel.
        for ((_, w), x) in vals.iter().zip(&fr.weights) {
            assert_eq!(w, x);
        }
    }
}

#[test]
fn vmc_receiver_sees_the_configured_rate() {
    let rate = 22050;
    let rig = Rig::builtin("arkit52").unwrap();
    let channels: Vec<String> = rig.channel_names().map(str::to_string).collect();
    let (addr, rx) = udp_receiver();
    for (fps, vmc_rate) in [(30u32, 60u32), (60, 60), (60, 45), (24, 50)] {
        let mut sink = VmcSink::new(VmcOptions {
            target: addr,
            rate: vmc_rate,
            sample_rate: rate,
            names: Default::default(),
        })
        .unwrap();
        // Two seconds of sample time, offset so ticks and frames do not start together.
        let start = SampleTime(12_345);
        let mut times = Vec::new();
        let n = 2 * fps as u64 + 1;
        for k in 0..n {
            let mut fr = frame(&rig, k, rate, fps);
            fr.at = start.frame(k, rate, fps);
            let before = sink.ticks();
            sink.frame(&channels, &fr.as_ref()).unwrap();
            for tick in take_ticks(&rx, sink.ticks() - before) {
                let t = tick.iter().find(|m| m.addr == "/VMC/Ext/T").unwrap();
                times.push(f(&t.args[0]) as f64);
            }
        }
        // Ticks per second of sample time: the configured rate (both ends of [start, start+2s]).
        let span = (times.last().unwrap() - times[0]) * vmc_rate as f64;
        assert_eq!(
            times.len(),
            span.round() as usize + 1,
            "fps {fps} → {vmc_rate} Hz"
        );
        assert!(
            (times.len() as i64 - 2 * vmc_rate as i64).abs() <= 1,
            "{} ticks in 2 s of sample time at {vmc_rate} Hz",
            times.len()
        );
        for w in times.windows(2) {
            let dt = w[1] - w[0];
            assert!(
                (dt * vmc_rate as f64 - 1.0).abs() < 5e-3,
                "tick spacing {dt}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A VTube Studio API server: the documented envelope, token and authentication requests, injections.

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Connected,
    TokenRequest,
    Auth(String, bool),
    Inject(Vec<(String, f32)>),
    Hotkey(String),
    Expression(String, bool),
}

#[derive(Default)]
struct VtsState {
    valid: Vec<String>,
    issued: u32,
}

async fn vts_server(
    listener: tokio::net::TcpListener,
    state: std::sync::Arc<std::sync::Mutex<VtsState>>,
    seen: tokio::sync::mpsc::UnboundedSender<Seen>,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // Connections live in a JoinSet owned by this task: aborting the server closes them all, as
    // quitting VTube Studio would.
    let mut conns = tokio::task::JoinSet::new();
    while let Ok((tcp, _)) = listener.accept().await {
        let state = state.clone();
        let seen = seen.clone();
        conns.spawn(async move {
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let _ = seen.send(Seen::Connected);
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else { continue };
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["apiName"], "VTubeStudioPublicAPI");
                assert_eq!(v["apiVersion"], "1.0");
                let id = v["requestID"].as_str().expect("a requestID").to_string();
                let data = &v["data"];
                let (kind, answer) = match v["messageType"].as_str().unwrap() {
                    "AuthenticationTokenRequest" => {
                        assert!(data["pluginName"].as_str().is_some_and(|n| n.len() >= 3));
                        assert!(data["pluginDeveloper"].as_str().is_some_and(|n| n.len() >= 3));
                        let _ = seen.send(Seen::TokenRequest);
                        let mut st = state.lock().unwrap();
                        st.issued += 1;
                        let tok = format!("tok-{}", st.issued);
                        st.valid.push(tok.clone());
                        (
                            "AuthenticationTokenResponse",
                            serde_json::json!({"authenticationToken": tok}),
                        )
                    }
                    "AuthenticationRequest" => {
                        let tok = data["authenticationToken"].as_str().unwrap().to_string();
                        let ok = state.lock().unwrap().valid.contains(&tok);
                        let _ = seen.send(Seen::Auth(tok, ok));
                        (
                            "AuthenticationResponse",
                            serde_json::json!({"authenticated": ok, "reason": if ok {"ok"} else {"token revoked"}}),
                        )
                    }
                    "InjectParameterDataRequest" => {
                        assert_eq!(data["faceFound"], true);
                        assert_eq!(data["mode"], "set");
                        let vals = data["parameterValues"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|p| {
                                (
                                    p["id"].as_str().unwrap().to_string(),
                                    p["value"].as_f64().unwrap() as f32,
                                )
                            })
                            .collect();
                        let _ = seen.send(Seen::Inject(vals));
                        ("InjectParameterDataResponse", serde_json::json!({}))
                    }
                    "HotkeyTriggerRequest" => {
                        let id = data["hotkeyID"].as_str().expect("hotkeyID").to_string();
                        let _ = seen.send(Seen::Hotkey(id.clone()));
                        ("HotkeyTriggerResponse", serde_json::json!({"hotkeyID": id}))
                    }
                    "ExpressionActivationRequest" => {
                        let file = data["expressionFile"].as_str().expect("expressionFile");
                        assert!(file.ends_with(".exp3.json"), "{file}");
                        assert!(data["fadeTime"].as_f64().is_some_and(|f| (0.0..=2.0).contains(&f)));
                        let on = data["active"].as_bool().expect("active");
                        let _ = seen.send(Seen::Expression(file.to_string(), on));
                        ("ExpressionActivationResponse", serde_json::json!({}))
                    }
                    other => panic!("unexpected request {other}"),
                };
                let reply = serde_json::json!({
                    "apiName": "VTubeStudioPublicAPI", "apiVersion": "1.0", "timestamp": 0,
                    "requestID": id, "messageType": kind, "data": answer,
                });
                if ws.send(Message::text(reply.to_string())).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn next_seen(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the VTube Studio test server saw nothing")
        .expect("server channel open")
}

/// Skip injections until a non-injection event; return it.
async fn next_non_inject(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>) -> Seen {
    for _ in 0..1000 {
        match next_seen(rx).await {
            Seen::Inject(_) => continue,
            other => return other,
        }
    }
    panic!("only injections came, no reconnection");
}

/// Wait for `n` injections carrying exactly `want`.
async fn injections_of(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
    want: &[(String, f32)],
    n: usize,
) {
    let mut got = 0;
    let mut other = 0;
    while got < n {
        match next_seen(rx).await {
            Seen::Inject(v) if v == want => got += 1,
            Seen::Inject(_) => {
                other += 1;
                assert!(other < 1000, "injections never carried {want:?}");
            }
            e => panic!("expected injections, saw {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vts_plugin_authenticates_injects_keeps_alive_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("cache/vts_token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = std::sync::Arc::new(std::sync::Mutex::new(VtsState::default()));
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(vts_server(listener, state.clone(), seen_tx.clone()));

    let mut opts = VtsOptions::new(format!("ws://{addr}"), &token_file);
    opts.backoff_min = Duration::from_millis(50);
    opts.backoff_max = Duration::from_millis(200);
    let mut sink = VtsSink::spawn(opts, &tokio::runtime::Handle::current());

    // First connection: no token yet → token request, stored, then authentication with it.
    assert_eq!(next_seen(&mut seen).await, Seen::Connected);
    assert_eq!(next_seen(&mut seen).await, Seen::TokenRequest);
    assert_eq!(next_seen(&mut seen).await, Seen::Auth("tok-1".into(), true));
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), "tok-1");

    // Frames of the live2d rig become VTube Studio default parameters.
    let rig = Rig::builtin("live2d").unwrap();
    let channels: Vec<String> = rig.channel_names().map(str::to_string).collect();
    let mut fr = frame(&rig, 3, 22050, 30);
    let mouth = rig.channel_index("ParamMouthOpenY").unwrap();
    let mut w = fr.weights.to_vec();
    w[mouth] = 0.75;
    fr.weights = MorphWeights::new(&rig, w).unwrap();
    sink.frame(&channels, &fr.as_ref()).unwrap();
    let want = idol::sink::vts::map_params(&channels, &fr.as_ref());
    let want: Vec<(String, f32)> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    for id in [
        "FaceAngleX",
        "FaceAngleY",
        "FaceAngleZ",
        "MouthOpen",
        "MouthSmile",
        "EyeOpenLeft",
        "EyeOpenRight",
        "EyeLeftX",
        "EyeLeftY",
        "BrowLeftY",
        "BrowRightY",
    ] {
        assert!(want.iter().any(|(k, _)| k == id), "{id} is injected");
    }
    assert_eq!(want.iter().find(|(k, _)| k == "MouthOpen").unwrap().1, 0.75);
    // The values arrive, and keep arriving while no new frame comes (keep-alive while idle).
    injections_of(&mut seen, &want, 4).await;

    // VTube Studio restarts: the server goes away, comes back on the same port.
    server.abort();
    let _ = server.await;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let server = tokio::spawn(vts_server(listener, state.clone(), seen_tx.clone()));
    assert_eq!(next_non_inject(&mut seen).await, Seen::Connected);
    // The stored token is reused: no new token request.
    assert_eq!(next_seen(&mut seen).await, Seen::Auth("tok-1".into(), true));
    injections_of(&mut seen, &want, 2).await;

    // The user revokes the plugin: the next connection asks for a new token and stores it.
    state.lock().unwrap().valid.clear();
    server.abort();
    let _ = server.await;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let _server = tokio::spawn(vts_server(listener, state.clone(), seen_tx));
    assert_eq!(next_non_inject(&mut seen).await, Seen::Connected);
    assert_eq!(
        next_seen(&mut seen).await,
        Seen::Auth("tok-1".into(), false)
    );
    assert_eq!(next_seen(&mut seen).await, Seen::TokenRequest);
    assert_eq!(next_seen(&mut seen).await, Seen::Auth("tok-2".into(), true));
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), "tok-2");
    injections_of(&mut seen, &want, 1).await;
    drop(sink);
}

// ---------------------------------------------------------------------------------------------
// The audio output.

#[test]
fn audio_mock_plays_blocks_at_their_stamps_and_the_clock_releases_frames() {
    let rate = 22050;
    let (out, mut dev) = AudioOut::mock(rate, rate).unwrap();
    assert_eq!(out.backend(), &Backend::Mock);
    let clock = out.clock();
    let pcm: Vec<f32> = (0..rate).map(|i| ((i as f32) * 0.05).sin() * 0.5).collect();
    let start = SampleTime(1000);
    out.push(start, &pcm);

    // Frames at 30 fps over 1.5 s wait in the gate.
    let rig = Rig::builtin("vrm").unwrap();
    let mut gate = FrameGate::new();
    for k in 0..45 {
        gate.push(frame(&rig, k, rate, 30));
    }
    let mut played_audio = Vec::new();
    let mut released = Vec::new();
    let mut pulled = 0u64;
    while pulled < 34_000 {
        let n = 441; // 20 ms
        played_audio.extend(dev.pull(n));
        pulled += n as u64;
        let now = clock.played();
        assert_eq!(now.get(), pulled, "the clock counts played samples");
        gate.release(now, |f| released.push(f.at));
        // Everything released is at or before the played sample; everything held is after it.
        assert!(released.iter().all(|&a| a <= now));
        assert!(gate.next_at().is_none_or(|a| a > now));
    }
    assert_eq!(released.len(), 45);
    // The block sounds exactly from its stamp: silence before, the samples after, silence again.
    assert!(played_audio[..1000].iter().all(|&x| x == 0.0));
    assert_eq!(&played_audio[1000..1000 + pcm.len()], &pcm[..]);
    assert!(played_audio[1000 + pcm.len()..].iter().all(|&x| x == 0.0));
    assert_eq!(out.late_samples(), 0);

    // A block that comes after its start has passed loses only its late head.
    out.push(SampleTime(pulled - 100), &[0.25; 300]);
    let more = dev.pull(300);
    assert!(more[..200].iter().all(|&x| x == 0.25));
    assert_eq!(out.late_samples(), 100);
}

#[test]
fn audio_mock_resamples_to_the_device_rate() {
    let (out, mut dev) = AudioOut::mock(22050, 48000).unwrap();
    let clock = out.clock();
    // A 441 Hz sine at 22050 Hz, from sample 0.
    let pcm: Vec<f32> = (0..22050)
        .map(|i| (2.0 * std::f32::consts::PI * 441.0 * i as f32 / 22050.0).sin())
        .collect();
    out.push(SampleTime::ZERO, &pcm);
    let got = dev.pull(48000);
    assert_eq!(clock.played(), SampleTime(22050));
    let mut worst = 0.0f32;
    for (j, &y) in got.iter().enumerate().take(47000) {
        let want = (2.0 * std::f32::consts::PI * 441.0 * j as f32 / 48000.0).sin();
        worst = worst.max((y - want).abs());
    }
    assert!(worst < 0.01, "linear resampling error {worst}");
}

/// utime + stime of the thread named `name` in this process, in clock ticks.
fn thread_cpu_ticks(name: &str) -> Option<u64> {
    let mut total = None;
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = e.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // Fields from "state" (3rd in proc(5)); utime and stime are the 14th and 15th.
        let t: u64 = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
        *total.get_or_insert(0) += t;
    }
    total
}

#[test]
fn no_device_fallback_is_paced_not_spinning() {
    // Whatever this machine has, the explicit null output is the fallback path.
    let out = AudioOut::null(22050).unwrap();
    assert_eq!(out.backend(), &Backend::Null);
    let clock = out.clock();
    out.push(SampleTime::ZERO, &vec![0.1; 22050 * 5]);
    let before = thread_cpu_ticks(idol::sink::audio::THREAD_NAME).expect("the audio thread runs");
    let c0 = clock.played();
    std::thread::sleep(Duration::from_millis(800));
    let after = thread_cpu_ticks(idol::sink::audio::THREAD_NAME).unwrap();
    // The clock moves (the null output plays), and the thread sleeps between steps: a spinning loop
    // would burn ~80 ticks (at USER_HZ 100) in this interval; the paced one uses about none.
    assert!(clock.played() > c0, "the null output advances the clock");
    assert!(
        after - before <= 15,
        "audio thread used {} ticks of CPU",
        after - before
    );
    drop(out);
    // Opening the configured device never fails: no usable device means the null output.
    let out = AudioOut::open(&idol::sink::audio::AudioOptions::new(22050)).unwrap();
    assert!(matches!(out.backend(), Backend::Null | Backend::Device(_)));
}

#[test]
fn gate_runner_feeds_sinks_only_what_the_mock_device_has_played() {
    use idol::sink::{GateRunner, Recorder};
    use std::sync::Arc;
    let rate = 22050;
    let (out, mut dev) = AudioOut::mock(rate, rate).unwrap();
    let rig = Rig::builtin("arkit52").unwrap();
    let channels: Arc<[String]> = rig.channel_names().map(str::to_string).collect();
    let rec = Arc::new(parking_lot::Mutex::new(Recorder::default()));
    let runner = GateRunner::spawn(out.clock(), vec![Box::new(rec.clone())]);
    for k in 0..30 {
        runner.push(channels.clone(), frame(&rig, k, rate, 30));
    }
    out.push(SampleTime::ZERO, &vec![0.2; rate as usize]);
    // Play half a second: frames up to sample 11025 (0..=15 at 30 fps) and no more are released.
    dev.pull(11025);
    let released = |n: usize| {
        for _ in 0..4000 {
            let got = rec.lock().frames.len();
            assert!(got <= n, "{got} frames released, only {n} are due");
            if got == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the gate never released the {n} frames that were due");
    };
    released(16);
    dev.pull(11025);
    released(30);
    let frames = rec.lock().frames.clone();
    assert!(frames.windows(2).all(|w| w[0].at < w[1].at));
    drop(runner);
}

// ---------------------------------------------------------------------------------------------
// Attached: `idol say --play` with the null audio device and a VMC sink aimed at this test.

/// The ticks received until nothing has come for `quiet`.
pub(crate) fn ticks_until_quiet(
    rx: &mpsc::Receiver<(bool, usize, Vec<Msg>)>,
    quiet: Duration,
) -> Vec<Vec<Msg>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    while let Ok((_, _, msgs)) = rx.recv_timeout(quiet) {
        for m in msgs {
            let apply = m.addr == "/VMC/Ext/Blend/Apply";
            cur.push(m);
            if apply {
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

#[test]
fn say_play_sends_vmc_ticks_covering_the_audio_at_the_configured_rate() {
    let home = crate::common::home();
    let (addr, rx) = udp_receiver();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idol.toml");
    let vmc_rate = 30u32;
    std::fs::write(
        &config,
        format!(
            "[face]\nrig = \"arkit52\"\nfps = 60\n\n[sinks.audio]\nenabled = true\ndevice = \"null\"\n\n\
             [sinks.vmc]\nenabled = true\ntarget = \"{addr}\"\nrate = {vmc_rate}\nrig = \"arkit52\"\n"
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_idol"))
        .env("IDOL_HOME", home.root())
        .arg("--config")
        .arg(&config)
        .args([
            "say",
            "Hello there, nice to meet you all.",
            "--seed",
            "3",
            "--play",
        ])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "say --play failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("phonemes.json")).unwrap()).unwrap();
    let samples = ph["samples"].as_u64().unwrap();
    let rate = ph["sample_rate"].as_u64().unwrap();
    // The command returned after playback: everything has been sent.
    let ticks = ticks_until_quiet(&rx, Duration::from_millis(500));
    let expected = samples as f64 * vmc_rate as f64 / rate as f64;
    assert!(
        (ticks.len() as f64 - expected).abs() <= 1.5,
        "{} ticks for {samples} samples at {rate} Hz, expected {expected:.1} at {vmc_rate} Hz",
        ticks.len()
    );
    // Ticks are one sink period apart on the session timeline.
    let times: Vec<f32> = ticks
        .iter()
        .map(|t| {
            let m = t
                .iter()
                .find(|m| m.addr == "/VMC/Ext/T")
                .expect("a time per tick");
            f(&m.args[0])
        })
        .collect();
    for w in times.windows(2) {
        assert!(
            ((w[1] - w[0]) - 1.0 / vmc_rate as f32).abs() < 1e-3,
            "tick spacing {}",
            w[1] - w[0]
        );
    }
    // The mouth moves while the speech plays, and the values are the rig's names.
    let jaw: Vec<f32> = ticks
        .iter()
        .filter_map(|t| {
            t.iter()
                .find(|m| m.addr == "/VMC/Ext/Blend/Val" && s(&m.args[0]) == "jawOpen")
                .map(|m| f(&m.args[1]))
        })
        .collect();
    assert_eq!(jaw.len(), ticks.len());
    assert!(
        jaw.iter().cloned().fold(0.0, f32::max) > 0.2,
        "jawOpen never opened: {jaw:?}"
    );
}

#[test]
fn perform_sends_the_script_to_a_vmc_receiver_for_its_whole_length() {
    let home = crate::common::home();
    let (addr, rx) = udp_receiver();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idol.toml");
    let vmc_rate = 30u32;
    std::fs::write(
        &config,
        format!(
            "[face]\nrig = \"arkit52\"\nfps = 60\n\n[sinks.vmc]\nenabled = true\ntarget = \"{addr}\"\nrate = {vmc_rate}\nrig = \"arkit52\"\n"
        ),
    )
    .unwrap();
    let script = dir.path().join("s.script.toml");
    std::fs::write(
        &script,
        "[script]\nseed = 2\ntail = \"200ms\"\n\n[[line]]\ntext = \"Hello everyone.\"\n\n[[line]]\ntext = \"[happy] Thanks for coming!\"\n",
    )
    .unwrap();
    // No --play and no [sinks.audio]: a silent paced clock releases the frames to VMC.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_idol"))
        .env("IDOL_HOME", home.root())
        .arg("--config")
        .arg(&config)
        .arg("perform")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "perform failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last event printed is at the performance's end.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: u64 = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["sample"].as_u64())
        .max()
        .expect("events on stdout");
    let ticks = ticks_until_quiet(&rx, Duration::from_millis(500));
    let expected = last as f64 * vmc_rate as f64 / 22050.0;
    assert!(
        ticks.len() as f64 >= expected - 2.0,
        "{} VMC ticks, expected about {expected:.1} or more",
        ticks.len()
    );
}

// ---------------------------------------------------------------------------------------------
// A Live Link Face receiver: the packet as Unreal's Live Link Face source reads it (big-endian):
// u8 version, i32-length-prefixed device id and subject name, frame time (i32 frame, f32 sub-frame,
// i32 rate numerator, i32 denominator), u8 count, count f32 values in EARFaceBlendShape order.

#[derive(Debug)]
struct LiveLinkPacket {
    version: u8,
    device: String,
    subject: String,
    frame: i32,
    sub_frame: f32,
    rate: (i32, i32),
    values: Vec<f32>,
}

fn parse_live_link(b: &[u8]) -> LiveLinkPacket {
    struct Cur<'a>(&'a [u8], usize);
    impl<'a> Cur<'a> {
        fn take(&mut self, n: usize) -> &'a [u8] {
            let s = &self.0[self.1..self.1 + n];
            self.1 += n;
            s
        }
        fn i32(&mut self) -> i32 {
            i32::from_be_bytes(self.take(4).try_into().unwrap())
        }
        fn f32(&mut self) -> f32 {
            f32::from_be_bytes(self.take(4).try_into().unwrap())
        }
        fn string(&mut self) -> String {
            let n = self.i32();
            assert!((0..=1024).contains(&n), "string length {n}");
            String::from_utf8(self.take(n as usize).to_vec()).unwrap()
        }
    }
    let mut c = Cur(b, 0);
    let version = c.take(1)[0];
    let device = c.string();
    let subject = c.string();
    let frame = c.i32();
    let sub_frame = c.f32();
    let rate = (c.i32(), c.i32());
    let count = c.take(1)[0] as usize;
    let values = (0..count).map(|_| c.f32()).collect();
    assert_eq!(c.1, b.len(), "bytes left after the values");
    LiveLinkPacket {
        version,
        device,
        subject,
        frame,
        sub_frame,
        rate,
        values,
    }
}

#[test]
fn live_link_receiver_gets_the_idol_subject_and_her_jaw_moves_while_she_speaks() {
    let home = crate::common::home();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idol.toml");
    std::fs::write(
        &config,
        format!(
            "[face]\nrig = \"vrm\"\n\n[sinks.audio]\nenabled = true\ndevice = \"null\"\n\n\
             [sinks.livelink]\nenabled = true\naddr = \"{addr}\"\nrate = 30\n"
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_idol"))
        .env("IDOL_HOME", home.root())
        .arg("--config")
        .arg(&config)
        .args([
            "say",
            "Hello there, nice to meet you.",
            "--seed",
            "3",
            "--play",
        ])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "say --play failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut packets = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = sock.recv(&mut buf) {
        packets.push(parse_live_link(&buf[..n]));
    }
    let ph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("phonemes.json")).unwrap()).unwrap();
    let secs = ph["samples"].as_f64().unwrap() / ph["sample_rate"].as_f64().unwrap();
    assert!(
        (packets.len() as f64 - secs * 30.0).abs() <= 1.5,
        "{} packets for {secs:.2} s at 30 Hz",
        packets.len()
    );
    for p in &packets {
        assert_eq!(p.version, 6);
        assert_eq!(p.subject, "idol");
        assert!(!p.device.is_empty());
        assert_eq!(p.rate, (30, 1));
        assert_eq!(p.values.len(), 61);
        assert!((0.0..1.0).contains(&p.sub_frame));
        assert!(p.values[..52].iter().all(|v| (0.0..=1.0).contains(v)));
    }
    // Consecutive ticks: frame numbers one apart.
    for w in packets.windows(2) {
        assert_eq!(
            w[1].frame - w[0].frame,
            1,
            "{} then {}",
            w[0].frame,
            w[1].frame
        );
    }
    // JawOpen (index 17 in EARFaceBlendShape order) opens and closes while she speaks; the face was
    // solved on the vrm rig and retargeted to ARKit for this sink.
    let jaw: Vec<f32> = packets.iter().map(|p| p.values[17]).collect();
    let max = jaw.iter().cloned().fold(0.0, f32::max);
    assert!(max > 0.2, "jawOpen never opened: {jaw:?}");
    assert!(
        jaw.windows(2)
            .filter(|w| (w[1] - w[0]).abs() > 0.05)
            .count()
            >= 5,
        "jawOpen hardly moves: {jaw:?}"
    );
    // The head moves too (idle motion and speech nods): HeadPitch is value 53.
    assert!(packets.iter().any(|p| p.values[53].abs() > 1e-3));
}

/// Hotkeys and expressions go out when the audio clock reaches their cue's sample, in sample order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vts_hotkeys_and_expressions_follow_the_cues_at_their_samples() {
    use idol::perform::{AudioChunk, CueEvent, Event, Sink};
    use idol::sink::live::{LiveOutputs, PerformOutputs};
    use idol::speech::{Cue, CueKind};
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = std::sync::Arc::new(std::sync::Mutex::new(VtsState::default()));
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let _server = tokio::spawn(vts_server(listener, state, seen_tx));
    // The keys as idol.toml gives them.
    let cfg = idol::config::Config::from_toml_str(
        &format!(
            "[sinks.vtube_studio]\nenabled = true\nurl = \"ws://{addr}\"\n\
             [sinks.vtube_studio.hotkeys]\nwave = \"Wave hand\"\nshake_head = \"b3c1-no\"\nexcited = \"Sparkles\"\n\
             [sinks.vtube_studio.expressions]\nhappy = \"Smile.exp3.json\"\nshy = \"Blush.exp3.json\"\nexcited = \"Smile.exp3.json\"\n"
        ),
        std::path::Path::new("idol.toml"),
    )
    .unwrap();
    let opts = VtsOptions::from_config(cfg.sinks.vtube_studio.as_ref().unwrap(), dir.path());
    let vts = VtsSink::spawn(opts, &tokio::runtime::Handle::current());
    assert_eq!(next_seen(&mut seen).await, Seen::Connected);
    assert_eq!(next_seen(&mut seen).await, Seen::TokenRequest);
    assert!(matches!(next_seen(&mut seen).await, Seen::Auth(_, true)));

    let (audio, mut dev) = AudioOut::mock(1000, 1000).unwrap();
    let out = std::sync::Arc::new(LiveOutputs::new(audio, true, vec![Box::new(vts)]));
    let mut sink = PerformOutputs::new(out.clone(), &["jawOpen".to_string()]);
    sink.event(&Event::Audio(AudioChunk {
        utterance: 1,
        start: SampleTime(0),
        pcm: vec![0.1; 1500],
    }));
    let cue = |kind, name: &str, at: u64| {
        Event::Cue(CueEvent {
            utterance: 1,
            cue: Cue {
                kind,
                name: name.into(),
                intensity: 1.0,
                at: SampleTime(at),
            },
        })
    };
    for e in [
        cue(CueKind::Emotion, "happy", 100),
        cue(CueKind::Action, "wave", 300),
        cue(CueKind::Action, "nod", 350), // no hotkey: nothing is sent
        cue(CueKind::Emotion, "shy", 500),
        cue(CueKind::Action, "shake", 700), // the face's name for the `shake_head` entry
        cue(CueKind::Emotion, "Excited", 800),
        cue(CueKind::Emotion, "neutral", 900),
    ] {
        sink.event(&e);
    }
    // Drain what comes before any sample is played: only injections (none here) may come.
    let quiet = |seen: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>| {
        let mut got = vec![];
        while let Ok(s) = seen.try_recv() {
            if !matches!(s, Seen::Inject(_)) {
                got.push(s);
            }
        }
        got
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        quiet(&mut seen),
        vec![],
        "nothing before the clock reaches a cue"
    );
    // Play up to sample 400: the mood's expression and the wave, nothing of what comes later.
    dev.pull(400);
    let mut want = vec![
        Seen::Expression("Smile.exp3.json".into(), true),
        Seen::Hotkey("Wave hand".into()),
    ];
    for w in &want {
        assert_eq!(&next_non_inject(&mut seen).await, w);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(quiet(&mut seen), vec![], "nothing past the played sample");
    // Play the rest: each in cue order; one expression at a time; neutral ends the mood.
    dev.pull(1100);
    want = vec![
        Seen::Expression("Smile.exp3.json".into(), false),
        Seen::Expression("Blush.exp3.json".into(), true),
        Seen::Hotkey("b3c1-no".into()),
        Seen::Expression("Blush.exp3.json".into(), false),
        Seen::Expression("Smile.exp3.json".into(), true),
        Seen::Hotkey("Sparkles".into()),
        Seen::Expression("Smile.exp3.json".into(), false),
    ];
    for w in &want {
        assert_eq!(&next_non_inject(&mut seen).await, w);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(quiet(&mut seen), vec![]);
}
