//! The viewer page in a real browser (Debian's headless Chromium, driven over the DevTools protocol):
//! the server on the real voice and face solver, a GLB avatar with ARKit-named morph targets made by
//! the test, one `say`; read back from the page (`window.__idolViewer`) the morph weights the avatar's
//! meshes carried at each heard sample, and the browser's network log.

use futures_util::{SinkExt, StreamExt};
use idol::config::Config;
use idol::fetch::{MANIFESTS, Manifest, VIEWER_MANIFEST};
use idol::perform::adapters::{TextSegmenter, build_voice_face};
use idol::perform::testing::ScriptedGenerator;
use idol::perform::{PerformConfig, Stages};
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

/// A binary glTF: one quad mesh whose morph targets carry `names`, under a node named `Head`.
pub fn arkit_glb(names: &[&str]) -> Vec<u8> {
    glb(names, json!([{"name": "Head", "mesh": 0}]), json!({}))
}

/// A VRM 1.0 avatar: a humanoid skeleton of the 15 required bones (no skin), the quad under the
/// head with morph targets bound to the expressions `aa`, `ih`, `ou`, `ee`, `oh`, `blink` and `happy`.
pub fn vrm1() -> Vec<u8> {
    let names = ["aa", "ih", "ou", "ee", "oh", "blink", "happy"];
    let (nodes, bones) = skeleton();
    let mut human = serde_json::Map::new();
    for (name, i) in &bones {
        human.insert(name.to_string(), json!({"node": i}));
    }
    let mut preset = serde_json::Map::new();
    for (i, n) in names.iter().enumerate() {
        preset.insert(
            n.to_string(),
            json!({"morphTargetBinds": [{"node": 3, "index": i, "weight": 1.0}]}),
        );
    }
    glb(
        &names,
        nodes,
        json!({"VRMC_vrm": {
            "specVersion": "1.0",
            "meta": {"name": "idol test", "version": "1", "authors": ["idol tests"],
                     "licenseUrl": "https://vrm.dev/licenses/1.0/", "avatarPermission": "onlyAuthor",
                     "commercialUsage": "personalNonProfit"},
            "humanoid": {"humanBones": human},
            "expressions": {"preset": preset},
        }}),
    )
}

/// A VRM 0.x avatar (the format most avatars in use are still in: VRoid Studio's exports before
/// 2022, VSeeFace's): the same skeleton and quad, the humanoid as a bone list, and blend shape
/// groups with the 0.x preset names (`a i u e o`, `blink`, `joy`) bound by mesh index at weights 0-100.
pub fn vrm0() -> Vec<u8> {
    let names = [
        "vrc.v_aa", "vrc.v_ih", "vrc.v_ou", "vrc.v_e", "vrc.v_oh", "Blink", "Joy",
    ];
    let presets = ["a", "i", "u", "e", "o", "blink", "joy"];
    let (nodes, bones) = skeleton();
    let human: Vec<Value> = bones
        .iter()
        .map(|(name, i)| json!({"bone": name, "node": i, "useDefaultValues": true}))
        .collect();
    let groups: Vec<Value> = presets
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({"name": names[i], "presetName": p, "isBinary": false,
                   "binds": [{"mesh": 0, "index": i, "weight": 100}], "materialValues": []})
        })
        .collect();
    glb(
        &names,
        nodes,
        json!({"VRM": {
            "exporterVersion": "idol tests",
            "specVersion": "0.0",
            "meta": {"title": "idol test", "version": "1", "author": "idol tests",
                     "allowedUserName": "OnlyAuthor", "violentUssageName": "Disallow",
                     "sexualUssageName": "Disallow", "commercialUssageName": "Disallow",
                     "licenseName": "Redistribution_Prohibited"},
            "humanoid": {"humanBones": human},
            "blendShapeMaster": {"blendShapeGroups": groups},
            "firstPerson": {"firstPersonBone": 2, "firstPersonBoneOffset": {"x": 0, "y": 0.06, "z": 0},
                            "meshAnnotations": [], "lookAtTypeName": "Bone"},
            "secondaryAnimation": {"boneGroups": [], "colliderGroups": []},
            "materialProperties": [],
        }}),
    )
}

/// The 15 required humanoid bones (no skin) with a `face` node holding mesh 0 under the head: the
/// glTF nodes and each bone's (name, node index).
fn skeleton() -> (Value, Vec<(&'static str, usize)>) {
    let bones = [
        ("hips", [0.0, 1.0, 0.0], vec![1, 4, 7, 10, 13]),
        ("spine", [0.0, 0.2, 0.0], vec![2]),
        ("head", [0.0, 0.4, 0.0], vec![3]),
        ("face", [0.0, -1.5, 0.05], vec![]),
        ("leftUpperArm", [0.2, 0.35, 0.0], vec![5]),
        ("leftLowerArm", [0.25, 0.0, 0.0], vec![6]),
        ("leftHand", [0.25, 0.0, 0.0], vec![]),
        ("rightUpperArm", [-0.2, 0.35, 0.0], vec![8]),
        ("rightLowerArm", [-0.25, 0.0, 0.0], vec![9]),
        ("rightHand", [-0.25, 0.0, 0.0], vec![]),
        ("leftUpperLeg", [0.1, 0.0, 0.0], vec![11]),
        ("leftLowerLeg", [0.0, -0.45, 0.0], vec![12]),
        ("leftFoot", [0.0, -0.45, 0.0], vec![]),
        ("rightUpperLeg", [-0.1, 0.0, 0.0], vec![14]),
        ("rightLowerLeg", [0.0, -0.45, 0.0], vec![15]),
        ("rightFoot", [0.0, -0.45, 0.0], vec![]),
    ];
    let nodes: Vec<Value> = bones
        .iter()
        .map(|(name, t, children)| {
            let mut n = json!({"name": name, "translation": t});
            if !children.is_empty() {
                n["children"] = json!(children);
            }
            if *name == "face" {
                n["mesh"] = json!(0);
            }
            n
        })
        .collect();
    let human = bones
        .iter()
        .enumerate()
        .filter(|(_, (name, ..))| *name != "face")
        .map(|(i, (name, ..))| (*name, i))
        .collect();
    (json!(nodes), human)
}

/// A binary glTF with the quad mesh (morph targets `names`), the `nodes` (node 0 the scene's root)
/// and root `extensions`.
fn glb(names: &[&str], nodes: Value, extensions: Value) -> Vec<u8> {
    let quad: [[f32; 3]; 4] = [
        [-0.1, 1.4, 0.0],
        [0.1, 1.4, 0.0],
        [0.1, 1.6, 0.0],
        [-0.1, 1.6, 0.0],
    ];
    let mut bin: Vec<u8> = vec![];
    let floats = |bin: &mut Vec<u8>, v: &[[f32; 3]]| {
        for p in v {
            for x in p {
                bin.extend_from_slice(&x.to_le_bytes());
            }
        }
    };
    floats(&mut bin, &quad);
    for i in [0u16, 1, 2, 0, 2, 3] {
        bin.extend_from_slice(&i.to_le_bytes());
    }
    let mut views = vec![
        json!({"buffer": 0, "byteOffset": 0, "byteLength": 48}),
        json!({"buffer": 0, "byteOffset": 48, "byteLength": 12}),
    ];
    let mut accessors = vec![
        json!({"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3",
               "min": [-0.1, 1.4, 0.0], "max": [0.1, 1.6, 0.0]}),
        json!({"bufferView": 1, "componentType": 5123, "count": 6, "type": "SCALAR"}),
    ];
    while !bin.len().is_multiple_of(4) {
        bin.push(0);
    }
    let mut targets = vec![];
    for (k, _) in names.iter().enumerate() {
        // Each target moves the lower edge a little, differently per target.
        let d = 0.01 * (k as f32 + 1.0);
        let delta = [
            [0.0, -d, 0.0],
            [0.0, -d, 0.0],
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
        ];
        let off = bin.len();
        floats(&mut bin, &delta);
        views.push(json!({"buffer": 0, "byteOffset": off, "byteLength": 48}));
        accessors.push(
            json!({"bufferView": views.len() - 1, "componentType": 5126, "count": 4,
                              "type": "VEC3", "min": [0.0, -d, 0.0], "max": [0.0, 0.0, 0.0]}),
        );
        targets.push(json!({"POSITION": accessors.len() - 1}));
    }
    let mut gltf = json!({
        "asset": {"version": "2.0", "generator": "idol tests/viewer.rs"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": nodes,
        "meshes": [{"name": "face", "primitives": [{"attributes": {"POSITION": 0}, "indices": 1,
                    "targets": targets}], "weights": vec![0.0; names.len()],
                    "extras": {"targetNames": names}}],
        "buffers": [{"byteLength": bin.len()}],
        "bufferViews": views,
        "accessors": accessors,
    });
    if let Some(ext) = extensions.as_object().filter(|e| !e.is_empty()) {
        gltf["extensionsUsed"] = json!(ext.keys().collect::<Vec<_>>());
        gltf["extensions"] = extensions.clone();
    }
    let mut js = serde_json::to_vec(&gltf).unwrap();
    while !js.len().is_multiple_of(4) {
        js.push(b' ');
    }
    let total = 12 + 8 + js.len() + 8 + bin.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"glTF");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(js.len() as u32).to_le_bytes());
    out.extend_from_slice(b"JSON");
    out.extend_from_slice(&js);
    out.extend_from_slice(&(bin.len() as u32).to_le_bytes());
    out.extend_from_slice(b"BIN\0");
    out.extend_from_slice(&bin);
    out
}

/// Debian's Chromium, or `IDOL_CHROMIUM`; a clear failure when there is none.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("IDOL_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "the viewer test needs a Chromium: install Debian's `chromium` package (`apt-get install -y \
         chromium`; .ci/run does), or set IDOL_CHROMIUM to a Chrome/Chromium binary"
    );
}

/// The viewer's pinned modules as `idol serve` serves them (installed by `idol fetch`).
fn vendor(home: &idol::assets::Home) -> Vec<(String, PathBuf)> {
    let root = home.path(MANIFESTS[VIEWER_MANIFEST].1);
    Manifest::in_effect(home, VIEWER_MANIFEST)
        .unwrap()
        .assets
        .into_iter()
        .map(|a| {
            let f = root.join(&a.file);
            assert!(f.is_file(), "{} missing: run `idol fetch`", f.display());
            (a.file, f)
        })
        .collect()
}

/// A DevTools protocol client on one page (flattened session).
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
    session: Option<String>,
    events: Vec<Value>,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = s.clone().into();
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("DevTools: no answer to {method}"));
            let Some(Ok(Message::Text(t))) = m else {
                match m {
                    Some(Ok(_)) => continue,
                    other => panic!("DevTools connection ended: {other:?}"),
                }
            };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Evaluate `expr` every 100 ms until it is true, at most `secs`.
    async fn until(&mut self, expr: &str, secs: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.eval(expr).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let st = self
                    .eval("JSON.stringify(window.__idolViewer && __idolViewer.stats)")
                    .await;
                panic!("{what}: not within {secs} s; viewer stats: {st}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Start Chromium headless with DevTools on a free port; its profile lives in `profile`.
async fn browser(profile: &Path) -> (std::process::Child, Cdp) {
    let child = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-gl=swiftshader",
            "--enable-unsafe-swiftshader",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            "--window-size=960,640",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium starts");
    // Chromium writes its DevTools port and browser path here once it listens.
    let port_file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        if let Ok(t) = std::fs::read_to_string(&port_file)
            && t.lines().count() >= 2
        {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not open DevTools within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut lines = text.lines();
    let port = lines.next().unwrap().trim().to_string();
    let path = lines.next().unwrap().trim().to_string();
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}"))
        .await
        .expect("DevTools WebSocket");
    let mut cdp = Cdp {
        ws,
        next: 0,
        session: None,
        events: vec![],
    };
    let target = cdp
        .call("Target.createTarget", json!({"url": "about:blank"}))
        .await;
    let session = cdp
        .call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .await;
    cdp.session = Some(session["sessionId"].as_str().unwrap().to_string());
    for m in ["Network.enable", "Page.enable", "Runtime.enable"] {
        cdp.call(m, json!({})).await;
    }
    (child, cdp)
}

/// One browser test at a time: two software-rendering Chromiums on a small machine starve each
/// other's animation frames.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Closes the browser however the test ends.
struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_plays_a_glb_avatar_in_chromium_in_sync_with_the_audio() {
    let home = crate::common::home();
    let config = Config::default();
    let (voice, face) = build_voice_face(&home, &config).expect("the real voice and face");
    let rate = voice.sample_rate();
    let fps = config.face.fps;
    let dir = tempfile::tempdir().unwrap();
    let avatar = dir.path().join("head.glb");
    std::fs::write(&avatar, arkit_glb(&MORPHS)).unwrap();
    let server = Server::start(
        Stages {
            persona: idol::perform::testing::conversation(),
            generator: Box::new(ScriptedGenerator::new(["Hello."])),
            segmenter: Box::new(TextSegmenter::default()),
            voice,
            face,
        },
        PerformConfig {
            fps,
            ..PerformConfig::default()
        },
        ServerOptions {
            port: 0,
            viewer: ViewerOptions {
                vendor: vendor(&home),
                avatar: Some(avatar.clone()),
            },
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let base = server.base_url();

    let _one = BROWSER.lock().await;
    let profile = tempfile::tempdir().unwrap();
    let (child, mut cdp) = browser(profile.path()).await;
    let _kill = Kill(child);
    cdp.call("Page.navigate", json!({"url": format!("{base}/")}))
        .await;
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
    let config = Config::default();
    let (voice, face) = build_voice_face(&home, &config).expect("the real voice and face");
    let server = Server::start(
        Stages {
            persona: idol::perform::testing::conversation(),
            generator: Box::new(ScriptedGenerator::new(["Hello."])),
            segmenter: Box::new(TextSegmenter::default()),
            voice,
            face,
        },
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
    let profile = tempfile::tempdir().unwrap();
    let (child, mut cdp) = browser(profile.path()).await;
    let _kill = Kill(child);
    cdp.call(
        "Page.navigate",
        json!({"url": format!("{}/", server.base_url())}),
    )
    .await;
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
    let profile = tempfile::tempdir().unwrap();
    let (child, mut cdp) = browser(profile.path()).await;
    let _kill = Kill(child);
    cdp.call(
        "Page.navigate",
        json!({"url": format!("{}/", server.base_url())}),
    )
    .await;
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
    let config = Config::default();
    let (voice, face) = build_voice_face(&home, &config).expect("the real voice and face");
    let dir = tempfile::tempdir().unwrap();
    let avatar = dir.path().join("idol.vrm");
    std::fs::write(&avatar, bytes).unwrap();
    let server = Server::start(
        Stages {
            persona: idol::perform::testing::conversation(),
            generator: Box::new(ScriptedGenerator::new(["Hello."])),
            segmenter: Box::new(TextSegmenter::default()),
            voice,
            face,
        },
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
    let _one = BROWSER.lock().await;
    let profile = tempfile::tempdir().unwrap();
    let (child, mut cdp) = browser(profile.path()).await;
    let _kill = Kill(child);
    cdp.call(
        "Page.navigate",
        json!({"url": format!("{}/?bg=transparent&controls=0", server.base_url())}),
    )
    .await;
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
    cdp.eval(
        "document.getElementById('sayMode').checked = true; \
         document.getElementById('text').value = 'Hello there, how are you all doing today?'; \
         document.getElementById('panel').requestSubmit(); true",
    )
    .await;
    cdp.until("__idolViewer.log.length > 20", 90, "the say is heard")
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
