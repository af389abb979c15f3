//! What the browser tests and the viewer benchmark share: avatars made on the spot (GLB with
//! ARKit-named morph targets, VRM 1.0 and 0.x on a minimal humanoid skeleton), Debian's Chromium
//! started headless, and a DevTools protocol client on one page. Included by `tests/tests.rs` and by
//! `benches/viewer.rs` (`#[path]`), so it names nothing from either.

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A binary glTF: one quad mesh whose morph targets carry `names`, under a node named `Head`.
pub fn arkit_glb(names: &[&str]) -> Vec<u8> {
    glb(
        &[Mesh::quad(names)],
        json!([{"name": "Head", "mesh": 0}]),
        json!({}),
    )
}

/// A VRM 1.0 avatar: a humanoid skeleton of the 15 required bones (no skin), the quad under the
/// head with morph targets bound to the expressions `aa`, `ih`, `ou`, `ee`, `oh`, `blink` and `happy`.
pub fn vrm1() -> Vec<u8> {
    vrm1_with(
        Mesh::quad(&["aa", "ih", "ou", "ee", "oh", "blink", "happy"]),
        vec![],
    )
}

/// A VRM 1.0 avatar on the same skeleton with `face` under the head (its targets named like the
/// expressions they are bound to: `aa`, `ih`, `ou`, `ee`, `oh`, `blink`, `happy`; other targets
/// stay unbound) and `more` meshes (body, hair: no expressions) under the hips.
pub fn vrm1_with(face: Mesh, more: Vec<Mesh>) -> Vec<u8> {
    let (mut nodes, bones) = skeleton();
    let first = nodes.as_array().unwrap().len();
    for (k, m) in more.iter().enumerate() {
        let mut node = json!({"name": m.name, "mesh": k + 1});
        if !m.skin.is_empty() {
            node["skin"] = json!(0);
        }
        nodes.as_array_mut().unwrap().push(node);
        nodes[0]["children"]
            .as_array_mut()
            .unwrap()
            .push(json!(first + k));
    }
    let mut human = serde_json::Map::new();
    for (name, i) in &bones {
        human.insert(name.to_string(), json!({"node": i}));
    }
    let mut preset = serde_json::Map::new();
    for (i, (n, _)) in face.targets.iter().enumerate() {
        if ["aa", "ih", "ou", "ee", "oh", "blink", "happy"].contains(&n.as_str()) {
            preset.insert(
                n.to_string(),
                json!({"morphTargetBinds": [{"node": 3, "index": i, "weight": 1.0}]}),
            );
        }
    }
    let meshes: Vec<Mesh> = std::iter::once(face).chain(more).collect();
    glb(
        &meshes,
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
        &[Mesh::quad(&names)],
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
pub fn skeleton() -> (Value, Vec<(&'static str, usize)>) {
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

/// A triangle mesh with named morph targets (a position delta per vertex each).
pub struct Mesh {
    pub name: String,
    pub positions: Vec<[f32; 3]>,
    pub indices: Vec<u32>,
    pub targets: Vec<(String, Vec<[f32; 3]>)>,
    /// Per vertex: 4 joints (indices into the skin's joint list) and their weights; empty: not
    /// skinned.
    pub skin: Vec<([u16; 4], [f32; 4])>,
}

impl Mesh {
    /// The tests' face: one quad whose lower edge each target moves a little, differently per
    /// target.
    pub fn quad(names: &[&str]) -> Mesh {
        Mesh {
            name: "face".into(),
            positions: vec![
                [-0.1, 1.4, 0.0],
                [0.1, 1.4, 0.0],
                [0.1, 1.6, 0.0],
                [-0.1, 1.6, 0.0],
            ],
            indices: vec![0, 1, 2, 0, 2, 3],
            targets: names
                .iter()
                .enumerate()
                .map(|(k, n)| {
                    let d = 0.01 * (k as f32 + 1.0);
                    let z = [0.0, 0.0, 0.0];
                    (n.to_string(), vec![[0.0, -d, 0.0], [0.0, -d, 0.0], z, z])
                })
                .collect(),
            skin: vec![],
        }
    }

    /// A UV sphere of `rings` × `segments` quads (two triangles each) of radius `r` around
    /// `centre`, with the given morph targets (a function of the vertex and the target's index).
    pub fn sphere(
        name: &str,
        centre: [f32; 3],
        r: f32,
        rings: u32,
        segments: u32,
        targets: &[&str],
        delta: impl Fn([f32; 3], usize) -> [f32; 3],
    ) -> Mesh {
        let mut positions = vec![];
        for i in 0..=rings {
            let theta = std::f32::consts::PI * i as f32 / rings as f32;
            for j in 0..=segments {
                let phi = std::f32::consts::TAU * j as f32 / segments as f32;
                positions.push([
                    centre[0] + r * theta.sin() * phi.sin(),
                    centre[1] + r * theta.cos(),
                    centre[2] + r * theta.sin() * phi.cos(),
                ]);
            }
        }
        let mut indices = vec![];
        let w = segments + 1;
        for i in 0..rings {
            for j in 0..segments {
                let (a, b) = (i * w + j, (i + 1) * w + j);
                indices.extend([a, b, a + 1, a + 1, b, b + 1]);
            }
        }
        let targets = targets
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let d = positions.iter().map(|p| delta(*p, k)).collect();
                (n.to_string(), d)
            })
            .collect();
        Mesh {
            name: name.into(),
            positions,
            indices,
            targets,
            skin: vec![],
        }
    }
}

/// A binary glTF with `meshes`, the `nodes` (node 0 the scene's root) and root `extensions`.
pub fn glb(meshes: &[Mesh], nodes: Value, extensions: Value) -> Vec<u8> {
    let mut bin: Vec<u8> = vec![];
    let mut views = vec![];
    let mut accessors = vec![];
    fn vec3(
        bin: &mut Vec<u8>,
        views: &mut Vec<Value>,
        acc: &mut Vec<Value>,
        v: &[[f32; 3]],
    ) -> usize {
        let off = bin.len();
        let (mut lo, mut hi) = ([f32::MAX; 3], [f32::MIN; 3]);
        for p in v {
            for (i, x) in p.iter().enumerate() {
                bin.extend_from_slice(&x.to_le_bytes());
                lo[i] = lo[i].min(*x);
                hi[i] = hi[i].max(*x);
            }
        }
        views.push(json!({"buffer": 0, "byteOffset": off, "byteLength": bin.len() - off}));
        acc.push(
            json!({"bufferView": views.len() - 1, "componentType": 5126, "count": v.len(),
                        "type": "VEC3", "min": lo, "max": hi}),
        );
        acc.len() - 1
    }
    /// `count` VEC4s of `component_type`, already in little-endian `bytes`.
    fn vec4(
        bin: &mut Vec<u8>,
        views: &mut Vec<Value>,
        acc: &mut Vec<Value>,
        bytes: &[u8],
        component_type: u32,
        count: usize,
    ) -> usize {
        let off = bin.len();
        bin.extend_from_slice(bytes);
        views.push(json!({"buffer": 0, "byteOffset": off, "byteLength": bin.len() - off}));
        acc.push(
            json!({"bufferView": views.len() - 1, "componentType": component_type,
                         "count": count, "type": "VEC4"}),
        );
        acc.len() - 1
    }
    let mut gl_meshes = vec![];
    for m in meshes {
        let pos = vec3(&mut bin, &mut views, &mut accessors, &m.positions);
        let off = bin.len();
        for i in &m.indices {
            bin.extend_from_slice(&i.to_le_bytes());
        }
        views.push(json!({"buffer": 0, "byteOffset": off, "byteLength": bin.len() - off}));
        accessors.push(json!({"bufferView": views.len() - 1, "componentType": 5125,
                              "count": m.indices.len(), "type": "SCALAR"}));
        let idx = accessors.len() - 1;
        let targets: Vec<Value> = m
            .targets
            .iter()
            .map(|(_, d)| json!({"POSITION": vec3(&mut bin, &mut views, &mut accessors, d)}))
            .collect();
        let names: Vec<&str> = m.targets.iter().map(|(n, _)| n.as_str()).collect();
        let mut prim = json!({"attributes": {"POSITION": pos}, "indices": idx});
        if !m.skin.is_empty() {
            let joints: Vec<u8> = m
                .skin
                .iter()
                .flat_map(|(j, _)| j.iter())
                .flat_map(|x| x.to_le_bytes())
                .collect();
            let j = vec4(
                &mut bin,
                &mut views,
                &mut accessors,
                &joints,
                5123,
                m.skin.len(),
            );
            prim["attributes"]["JOINTS_0"] = json!(j);
            let weights: Vec<u8> = m
                .skin
                .iter()
                .flat_map(|(_, w)| w.iter())
                .flat_map(|x| x.to_le_bytes())
                .collect();
            let w = vec4(
                &mut bin,
                &mut views,
                &mut accessors,
                &weights,
                5126,
                m.skin.len(),
            );
            prim["attributes"]["WEIGHTS_0"] = json!(w);
        }
        let mut mesh = json!({"name": m.name, "primitives": []});
        if !targets.is_empty() {
            prim["targets"] = json!(targets);
            mesh["weights"] = json!(vec![0.0; names.len()]);
            mesh["extras"] = json!({"targetNames": names});
        }
        mesh["primitives"] = json!([prim]);
        gl_meshes.push(mesh);
    }
    // A skinned mesh's skin: joints 0 and 1 are the skeleton's hips (node 0, 1 m up) and head
    // (node 2, 1.6 m up), bound where they stand.
    let skins = if meshes.iter().any(|m| !m.skin.is_empty()) {
        let off = bin.len();
        for y in [1.0f32, 1.6] {
            let mut m = [0f32; 16];
            (m[0], m[5], m[10], m[15], m[13]) = (1.0, 1.0, 1.0, 1.0, -y);
            for x in m {
                bin.extend_from_slice(&x.to_le_bytes());
            }
        }
        views.push(json!({"buffer": 0, "byteOffset": off, "byteLength": bin.len() - off}));
        accessors.push(json!({"bufferView": views.len() - 1, "componentType": 5126,
                              "count": 2, "type": "MAT4"}));
        Some(json!([{"joints": [0, 2], "inverseBindMatrices": accessors.len() - 1}]))
    } else {
        None
    };
    let mut gltf = json!({
        "asset": {"version": "2.0", "generator": "idol tests/browser.rs"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": nodes,
        "meshes": gl_meshes,
        "buffers": [{"byteLength": bin.len()}],
        "bufferViews": views,
        "accessors": accessors,
    });
    if let Some(skins) = skins {
        gltf["skins"] = skins;
    }
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
pub fn chromium() -> PathBuf {
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
pub fn vendor(home: &idol::assets::Home) -> Vec<(String, PathBuf)> {
    let root = home.path(idol::fetch::MANIFESTS[idol::fetch::VIEWER_MANIFEST].1);
    idol::fetch::Manifest::in_effect(home, idol::fetch::VIEWER_MANIFEST)
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

/// `idol serve` in process on the real voice and face solver (chats are answered "Hello."), serving
/// the viewer with the pinned modules and `avatar` as `[viewer] avatar`.
pub fn viewer_server(home: &idol::assets::Home, avatar: Option<PathBuf>) -> idol::server::Server {
    let config = idol::config::Config::default();
    let (voice, face) =
        idol::perform::adapters::build_voice_face(home, &config).expect("the real voice and face");
    idol::server::Server::start(
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
        idol::server::ServerOptions {
            port: 0,
            viewer: idol::server::ViewerOptions {
                vendor: vendor(home),
                avatar,
            },
            ..idol::server::ServerOptions::default()
        },
    )
    .unwrap()
}

/// A fresh headless Chromium (with `extra` flags) showing `url`; dropped, the browser is killed and
/// its profile removed.
pub struct Page {
    pub cdp: Cdp,
    _kill: Kill,
    _profile: tempfile::TempDir,
}

pub async fn open(url: &str, extra: &[&str]) -> Page {
    let profile = tempfile::tempdir().unwrap();
    let (child, mut cdp) = browser_with(profile.path(), extra).await;
    let kill = Kill(child);
    cdp.call("Page.navigate", json!({ "url": url })).await;
    Page {
        cdp,
        _kill: kill,
        _profile: profile,
    }
}

/// A DevTools protocol client on one page (flattened session).
pub struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
    session: Option<String>,
    pub events: Vec<Value>,
}

impl Cdp {
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
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
    pub async fn eval(&mut self, expr: &str) -> Value {
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
    pub async fn until(&mut self, expr: &str, secs: u64, what: &str) {
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

/// Start Chromium headless with DevTools on a free port, with `extra` flags; its profile lives in
/// `profile`.
pub async fn browser_with(profile: &Path, extra: &[&str]) -> (std::process::Child, Cdp) {
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
        .args(extra)
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

/// Closes the browser however the test ends.
struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
