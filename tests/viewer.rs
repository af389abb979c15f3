//! The viewer page in a real browser (Debian's headless Chromium, driven over the DevTools protocol):
//! the server on the real voice and face solver, a GLB avatar with ARKit-named morph targets made by
//! the test, one `say`; read back from the page (`window.__idolViewer`) the morph weights the avatar's
//! meshes carried at each heard sample, and the browser's network log.

use crate::browser::{arkit_glb, open, vendor, viewer_server, vrm0, vrm1};
use futures_util::{SinkExt, StreamExt};
use idol::config::Config;
use idol::perform::PerformConfig;
use idol::server::{Server, ServerOptions, ViewerOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The ARKit names the test avatar carries (a face-capture head has all 52; these are the ones the
/// assertions read, and a few it does not).
const MORPHS: [&str; 10] = [
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthSmileLeft",
    "mouthSmileRight",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "browInnerUp",
    "tongueOut",
];

/// One browser test at a time: two software-rendering Chromiums on a small machine starve each
/// other's animation frames.
pub(crate) static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_plays_a_glb_avatar_in_chromium_in_sync_with_the_audio() {
    let home = crate::common::home();
    let dir = tempfile::tempdir().unwrap();
    let avatar = dir.path().join("head.glb");
    std::fs::write(&avatar, arkit_glb(&MORPHS)).unwrap();
    let server = viewer_server(&home, Some(avatar.clone()));
    let (rate, fps) = (server.perform().info().rate, server.perform().info().fps);
    let base = server.base_url();

    let _one = BROWSER.lock().await;
    let mut page = open(&format!("{base}/"), &[]).await;
    let cdp = &mut page.cdp;
    cdp.until(
        "!!(window.__idolViewer && __idolViewer.avatar && __idolViewer.avatar.kind === 'glb' \
         && __idolViewer.stats.rig === 'arkit52' && __idolViewer.stats.connected)",
        90,
        "the page loads the GLB avatar and subscribes in arkit52",
    )
    .await;
    let avatar_info = cdp.eval("__idolViewer.avatar").await;
    assert_eq!(avatar_info["morphs"], MORPHS.len(), "{avatar_info}");

    // A sentence with bilabials (m, b, p) between open vowels.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/stream", server.addr()))
        .await
        .unwrap();
    ws.send(Message::Text(
        json!({"type": "say", "id": "s", "text": "Hello, I am a happy robot. Maybe Bob will bring a map."})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let utt = loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            continue;
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["type"] == "ack" && v["of"] == "say" {
            break v["utterance"].as_u64().unwrap();
        }
        assert_ne!(v["type"], "error", "{v}");
    };
    drop(ws);
    // A screenshot mid-sentence, kept as the test's artifact.
    cdp.until(
        &format!("__idolViewer.log.some((r) => r.utt === {utt})"),
        90,
        "the page applies frames of the utterance",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let shot = cdp
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot["data"].as_str().unwrap(),
    )
    .unwrap();
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer-chromium.png");
    std::fs::write(&artifact, &png).unwrap();
    eprintln!("screenshot: {}", artifact.display());
    let fps_speaking = f(&cdp.eval("__idolViewer.stats").await, "fps");
    // Until the utterance has been heard to its end.
    cdp.until(
        &format!(
            "(() => {{ const c = __idolViewer.captions.filter((c) => c.utt === {utt}); \
             return c.length > 0 && __idolViewer.heardSample() > Math.max(...c.map((x) => x.end)) + {rate} * 0.2 \
             && __idolViewer.stats.state === 'idle'; }})()"
        ),
        120,
        "the utterance is heard to its end",
    )
    .await;
    let got = cdp
        .eval(&format!(
            "({{log: __idolViewer.log.filter((r) => r.utt === {utt}), \
              captions: __idolViewer.captions.filter((c) => c.utt === {utt}), \
              stats: __idolViewer.stats}})"
        ))
        .await;
    let stats = &got["stats"];
    eprintln!("viewer stats: {stats}");
    eprintln!("render: {fps_speaking:.1} fps while speaking (headless Chromium, SwiftShader)");
    assert_eq!(stats["clock"], "webaudio", "{stats}");
    assert_eq!(stats["renderer"], "glb", "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
    let log = got["log"].as_array().unwrap();
    assert!(
        log.len() >= 30,
        "only {} frames applied: {stats}",
        log.len()
    );

    // Applied by the audio clock: each frame is the latest not after the sample heard, so it lags
    // the heard sample by less than one frame period.
    let period = rate as f64 / fps as f64;
    for r in log {
        assert!(
            !r["ctx"].is_null(),
            "the heard sample comes from the audio clock: {r}"
        );
        let lag = f(r, "heard") - f(r, "stamp");
        assert!(
            (0.0..period).contains(&lag),
            "A/V offset {:.1} ms, over one frame ({:.1} ms): {r}",
            lag / rate as f64 * 1000.0,
            period / rate as f64 * 1000.0
        );
    }

    // The mouth moves: lip aperture (jaw open less lip closure) read from the avatar's mesh.
    let aperture = |r: &Value| f(&r["w"], "jawOpen") - f(&r["w"], "mouthClose");
    let max_open = log.iter().map(aperture).fold(0.0, f64::max);
    assert!(max_open > 0.25, "the mouth hardly opens: max {max_open:.3}");
    let mut openings = 0;
    let mut was_open = false;
    for r in log {
        let a = aperture(r);
        if !was_open && a > 0.5 * max_open {
            openings += 1;
            was_open = true;
        } else if was_open && a < 0.2 * max_open {
            was_open = false;
        }
    }
    assert!(
        openings >= 6,
        "the mouth opened {openings} times over the sentence"
    );

    // Bilabials close the lips: in each word with m, b or p, the aperture drops near zero.
    let words: Vec<(String, f64, f64)> = got["captions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["words"].as_array().unwrap().clone())
        .map(|w| {
            (
                w["text"].as_str().unwrap().to_lowercase(),
                f(&w, "start"),
                f(&w, "end"),
            )
        })
        .collect();
    let bilabial: Vec<&(String, f64, f64)> = words
        .iter()
        .filter(|(w, ..)| w.contains(['m', 'b', 'p']))
        .collect();
    assert!(bilabial.len() >= 6, "{words:?}");
    for (w, start, end) in bilabial {
        let during: Vec<f64> = log
            .iter()
            .filter(|r| (*start..*end).contains(&f(r, "stamp")))
            .map(aperture)
            .collect();
        let min = during.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(
            min < 0.1 * max_open.max(0.5),
            "{w:?}: the lips never close ({} frames, min aperture {min:.3}, max over the sentence {max_open:.3})",
            during.len()
        );
    }

    // Nothing but the server: every request the page made went to it.
    let requests: Vec<String> = cdp
        .events
        .iter()
        .filter(|e| {
            e["method"] == "Network.requestWillBeSent" || e["method"] == "Network.webSocketCreated"
        })
        .map(|e| {
            e["params"]["request"]["url"]
                .as_str()
                .or(e["params"]["url"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let ws_base = base.replace("http://", "ws://");
    let foreign: Vec<&String> = requests
        .iter()
        .filter(|u| {
            !(u.starts_with(&format!("{base}/"))
                || u.starts_with(&format!("{ws_base}/"))
                || u.starts_with("data:")
                || u.starts_with("blob:"))
        })
        .collect();
    assert!(
        requests
            .iter()
            .any(|u| u.ends_with("/vendor/three/build/three.module.js"))
    );
    assert!(requests.iter().any(|u| u.ends_with("/avatar.glb")));
    assert!(foreign.is_empty(), "requests to other hosts: {foreign:?}");
    eprintln!(
        "{} requests, all to the server; {} frames applied, {} bilabial words closed",
        requests.len(),
        log.len(),
        words
            .iter()
            .filter(|(w, ..)| w.contains(['m', 'b', 'p']))
            .count()
    );
}

/// `[viewer] avatar` takes a .vrm or .glb path; anything else is refused where it is written.
#[test]
fn viewer_avatar_must_be_a_vrm_or_glb() {
    let c = Config::from_toml_str(
        "[viewer]\navatar = \"avatars/me.vrm\"\n",
        Path::new("idol.toml"),
    )
    .unwrap();
    assert_eq!(c.viewer.avatar, Some(PathBuf::from("avatars/me.vrm")));
    let e = Config::from_toml_str("[viewer]\navatar = \"me.png\"\n", Path::new("idol.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("idol.toml:2:10"), "{e}");
    assert!(
        e.contains("viewer.avatar") && e.contains(".vrm or .glb"),
        "{e}"
    );
    assert_eq!(Config::default().viewer.avatar, None);
}

/// The page is served with its configuration filled in, the pinned modules from the server, the
/// configured avatar at its one URL, and nothing else from the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_the_page_its_modules_and_only_the_configured_avatar() {
    let home = crate::common::home();
    let dir = tempfile::tempdir().unwrap();
    let avatar = dir.path().join("head.glb");
    let glb = arkit_glb(&MORPHS);
    std::fs::write(&avatar, &glb).unwrap();
    let server = Server::start(
        crate::serve::stages(&["Hi."]),
        PerformConfig::default(),
        ServerOptions {
            port: 0,
            viewer: ViewerOptions {
                vendor: vendor(&home),
                avatar: Some(avatar),
            },
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr()
        )
        .unwrap();
        let mut out = vec![];
        s.read_to_end(&mut out).unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&out[..split]).into_owned(),
            out[split + 4..].to_vec(),
        )
    };
    let (head, page) = get("/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains(r#""three":true"#), "{page}");
    assert!(page.contains(r#""avatar":"/avatar.glb""#));
    let (head, body) = get("/vendor/three-vrm/lib/three-vrm.module.min.js");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/javascript"), "{head}");
    assert!(!body.is_empty());
    let (head, body) = get("/avatar.glb");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, glb);
    for path in [
        "/avatar.vrm",
        "/vendor/../Cargo.toml",
        "/vendor/three/package.json",
        "/vendor/%2e%2e/idol.toml",
        "/idol.toml",
    ] {
        let (head, _) = get(path);
        assert!(head.starts_with("HTTP/1.1 404"), "{path}: {head}");
    }
}

/// Without an avatar the page shows the idol's own generated face, driven in `arkit52`; a `say`
/// typed into the page is spoken, logged, and its latency (message → first audio heard) shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_face_speaks_what_is_typed_into_the_page() {
    let home = crate::common::home();
    let server = viewer_server(&home, None);
    let _one = BROWSER.lock().await;
    let mut page = open(&format!("{}/", server.base_url()), &[]).await;
    let cdp = &mut page.cdp;
    cdp.until(
        "!!(window.__idolViewer && __idolViewer.avatar && __idolViewer.avatar.kind === 'default' \
         && __idolViewer.stats.rig === 'arkit52' && __idolViewer.stats.connected)",
        90,
        "the page shows its own face and subscribes in arkit52",
    )
    .await;
    let morphs = cdp.eval("__idolViewer.avatar.morphs").await;
    assert!(morphs.as_u64().unwrap() >= 40, "{morphs}");
    cdp.eval(
        "document.getElementById('user').value = 'host'; \
         document.getElementById('sayMode').checked = true; \
         document.getElementById('text').value = '[happy] Welcome back, everyone! I missed you so much.'; \
         document.getElementById('panel').requestSubmit(); true",
    )
    .await;
    cdp.until(
        "__idolViewer.stats.latencyMs !== null && __idolViewer.log.length > 20",
        90,
        "the typed say is heard",
    )
    .await;
    // A chat from another client (a bot, a relay) shows in the page's log with who wrote it.
    let (mut other, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/stream", server.addr()))
            .await
            .unwrap();
    other
        .send(Message::Text(
            json!({"type":"chat","user":"ann","text":"what is your favourite song?"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    cdp.until(
        "[...document.querySelectorAll('#log .msg.viewer')].some((m) =>          m.textContent.includes('ann') && m.textContent.includes('favourite song'))",
        90,
        "another client's chat is in the log",
    )
    .await;
    let shot = cdp
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot["data"].as_str().unwrap(),
    )
    .unwrap();
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer-default-face.png");
    std::fs::write(&artifact, &png).unwrap();
    eprintln!("screenshot: {}", artifact.display());
    let got = cdp
        .eval(
            "({stats: __idolViewer.stats, log: __idolViewer.log, \
              chat: [...document.querySelectorAll('#log .msg')].map((m) => m.textContent)})",
        )
        .await;
    let stats = &got["stats"];
    eprintln!("viewer stats: {stats}");
    eprintln!(
        "render: {:.1} fps (the generated face, headless Chromium, SwiftShader)",
        f(stats, "fps")
    );
    assert_eq!(stats["renderer"], "default", "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
    assert!(f(stats, "latencyMs") > 0.0, "{stats}");
    let log = got["log"].as_array().unwrap();
    let jaw = log
        .iter()
        .map(|r| f(&r["w"], "jawOpen"))
        .fold(0.0, f64::max);
    let smile = log
        .iter()
        .map(|r| f(&r["w"], "mouthSmileLeft"))
        .fold(0.0, f64::max);
    assert!(jaw > 0.25, "the generated face's jaw hardly moves: {jaw}");
    assert!(smile > 0.1, "[happy] shows no smile: {smile}");
    let chat: Vec<&str> = got["chat"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        chat.iter().any(|c| c.contains("Welcome back, everyone!")),
        "{chat:?}"
    );
    assert!(chat.iter().any(|c| c.starts_with("idol")), "{chat:?}");
}

/// A barge-in stops the page's audio and face at the cut sample: the `interrupted` state arrives
/// before the cut is heard (the jitter buffer), the scheduled audio past it is stopped, no frame of
/// the utterance at or after it is applied, and the chat log keeps the words heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_stops_the_page_at_the_cut_sample() {
    let home = crate::common::home();
    let server = Server::start(
        crate::serve::stages(&["Hi."]),
        PerformConfig::default(),
        ServerOptions {
            port: 0,
            viewer: ViewerOptions {
                vendor: vendor(&home),
                avatar: None,
            },
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let _one = BROWSER.lock().await;
    let mut page = open(&format!("{}/", server.base_url()), &[]).await;
    let cdp = &mut page.cdp;
    cdp.until(
        "!!(window.__idolViewer && __idolViewer.ready && __idolViewer.stats.connected \
         && __idolViewer.stats.rig)",
        90,
        "the page connects",
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/stream", server.addr()))
        .await
        .unwrap();
    let say = json!({"type": "say", "id": "s", "text": crate::serve::LONG});
    ws.send(Message::Text(say.to_string().into()))
        .await
        .unwrap();
    let mut utt = None;
    let mut cut = None;
    let mut sent = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    while cut.is_none() {
        assert!(Instant::now() < deadline, "no interrupted state");
        let m = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
        if let Ok(Some(Ok(Message::Text(t)))) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "ack" && v["of"] == "say" {
                utt = v["utterance"].as_u64();
            }
            if v["type"] == "state" && v["state"] == "interrupted" {
                cut = v["sample"].as_u64();
            }
        }
        if let Some(u) = utt
            && !sent
            && cdp
                .eval(&format!(
                    "__idolViewer.log.filter((r) => r.utt === {u}).length >= 40"
                ))
                .await
                == Value::Bool(true)
        {
            ws.send(Message::Text(
                json!({"type": "interrupt"}).to_string().into(),
            ))
            .await
            .unwrap();
            sent = true;
        }
    }
    let cut = cut.unwrap();
    cdp.until(
        &format!("__idolViewer.heardSample() > {cut} + 0.5 * __idolViewer.stats.sampleRate"),
        30,
        "the page hears past the cut",
    )
    .await;
    let got = cdp
        .eval(
            "({cuts: __idolViewer.cuts, log: __idolViewer.log.map((r) => [r.utt, r.stamp]), \
              chat: [...document.querySelectorAll('#log .msg')].map((m) => m.textContent)})",
        )
        .await;
    let cuts = got["cuts"].as_array().unwrap();
    assert_eq!(cuts.len(), 1, "{got}");
    let c = &cuts[0];
    assert_eq!(c["sample"].as_u64(), Some(cut), "{c}");
    let utt = c["utt"].as_u64().unwrap();
    assert!(
        f(c, "heard") <= cut as f64,
        "the cut reached the page after it was heard: {c}"
    );
    // Audio of the utterance still scheduled when the cut arrived ends at the cut (sources that
    // ran past it were stopped there; the server sends nothing past it).
    assert!(
        !c["audioEnd"].is_null() && f(c, "audioEnd") <= cut as f64 + 1.0,
        "the utterance's audio goes on past the cut: {c}"
    );
    let log = got["log"].as_array().unwrap();
    let before = log.iter().filter(|r| r[0] == utt).count();
    let after = log
        .iter()
        .filter(|r| r[0] == utt && r[1].as_f64().unwrap() >= cut as f64)
        .count();
    assert!(before >= 40, "{before}");
    assert_eq!(after, 0, "frames of the utterance applied past the cut");
    let chat = got["chat"].to_string();
    assert!(chat.contains("(interrupted)"), "{chat}");
}

/// A VRM 1.0 avatar (made by the test) loads through three-vrm: the page subscribes in the `vrm` rig
/// and the expressions move with the speech. The page is opened as OBS would (`?bg=transparent`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vrm_avatar_takes_the_vrm_rig_and_its_expressions_move() {
    vrm_avatar_speaks(vrm1(), "1").await;
}

/// The same for a VRM 0.x file: its presets `a i u e o` / `blink` / `joy` arrive as the `vrm` rig's
/// `aa ih ou ee oh` / `blink` / `happy`, and the bound morph targets (weights 0-100) move the mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vrm0_avatar_maps_its_presets_and_moves_its_mesh() {
    vrm_avatar_speaks(vrm0(), "0").await;
}

async fn vrm_avatar_speaks(bytes: Vec<u8>, version: &str) {
    let home = crate::common::home();
    let dir = tempfile::tempdir().unwrap();
    let avatar = dir.path().join("idol.vrm");
    std::fs::write(&avatar, bytes).unwrap();
    let server = viewer_server(&home, Some(avatar));
    let _one = BROWSER.lock().await;
    let mut page = open(
        &format!("{}/?bg=transparent&controls=0", server.base_url()),
        &[],
    )
    .await;
    let cdp = &mut page.cdp;
    cdp.until(
        "!!(window.__idolViewer && __idolViewer.ready && __idolViewer.stats.connected)",
        90,
        "the page loads",
    )
    .await;
    let info = cdp.eval("__idolViewer.avatar").await;
    assert_eq!(info["kind"], "vrm", "{info}");
    assert_eq!(info["version"], version, "{info}");
    let mut expressions: Vec<&str> = info["expressions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    expressions.sort();
    for e in ["aa", "blink", "ee", "happy", "ih", "oh", "ou"] {
        assert!(expressions.contains(&e), "{e} missing: {expressions:?}");
    }
    // The OBS mode: nothing but the avatar and the captions, on a transparent page.
    let obs = cdp
        .eval(
            "[getComputedStyle(document.getElementById('side')).display, \
              getComputedStyle(document.body).backgroundColor, \
              getComputedStyle(document.getElementById('caption')).display]",
        )
        .await;
    assert_eq!(obs, json!(["none", "rgba(0, 0, 0, 0)", "block"]), "{obs}");
    cdp.until(
        "__idolViewer.stats.rig === 'vrm'",
        30,
        "the page subscribes in the vrm rig",
    )
    .await;
    // The page blends the face's morph targets on the CPU (docs/viewer.md, "Rendering cost"): the
    // meshes that carry expressions draw from their own position buffer, with no morph attributes
    // left for three.js's shader; that buffer, as at rest before the say, must move with the speech.
    let blended = cdp
        .eval(
            "(() => { const m = []; __idolViewer.scene.traverse((o) => { if (o.isMesh && o.userData.cpuMorph) m.push(o); }); \
               window.__blended = m; window.__rest = m.map((o) => Float32Array.from(o.geometry.attributes.position.array)); \
               return m.map((o) => Object.keys(o.geometry.morphAttributes).length); })()",
        )
        .await;
    assert_eq!(
        blended,
        json!([0]),
        "one face mesh, blended on the CPU: {blended}"
    );
    cdp.eval(
        "document.getElementById('sayMode').checked = true; \
         document.getElementById('text').value = 'Hello there, how are you all doing today?'; \
         document.getElementById('panel').requestSubmit(); true",
    )
    .await;
    cdp.until("__idolViewer.log.length > 20", 90, "the say is heard")
        .await;
    cdp.until(
        "__blended.some((o, k) => o.geometry.attributes.position.array.some((x, i) => Math.abs(x - __rest[k][i]) > 0.001))",
        30,
        "the face's vertices move with the speech",
    )
    .await;
    let got = cdp
        .eval("({log: __idolViewer.log, stats: __idolViewer.stats})")
        .await;
    assert_eq!(got["stats"]["errors"], 0, "{}", got["stats"]);
    let log = got["log"].as_array().unwrap();
    let vowels = log
        .iter()
        .map(|r| {
            ["aa", "ih", "ou", "ee", "oh"]
                .iter()
                .map(|v| f(&r["w"], v))
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max);
    assert!(
        vowels > 0.2,
        "the VRM's vowel expressions hardly move: {vowels}"
    );
    let mesh = log
        .iter()
        .map(|r| f(&r["w"], "morphMax"))
        .fold(0.0, f64::max);
    assert!(
        mesh > 0.2,
        "the expressions never reach the mesh's morph targets: {mesh}"
    );
}
