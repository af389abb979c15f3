//! The viewer's render rate in headless Chromium (SwiftShader: software WebGL on this machine's CPU
//! cores), issue 17's "60 fps rendering of a VRM-sized model". For each avatar the server (the real
//! voice and face solver, in process) speaks one long `say` while the page renders; the bench records
//! every `requestAnimationFrame` timestamp in the page for `SECS` seconds of speech and reports the
//! frame rate (frames / time), the median and 95th-percentile frame interval, and the page's own
//! A/V offset readout. Avatars, all made here:
//!
//! - `default`: the viewer's generated face (no avatar configured);
//! - `glb quad`: the browser tests' one-quad GLB with ARKit morph targets (the floor: almost no geometry);
//! - `vrm-sized`: a VRM 1.0 at the size of a VRoid Studio export: a face of 8,000 vertices with 52
//!   morph targets (7 bound to expressions) and a body/hair mesh of 24,000 vertices, ~64,000
//!   triangles in all.
//!
//! Each runs at Chromium's normal frame pacing (vsync-like, 60 Hz at most) and, for the VRM-sized
//! model, once more uncapped (`--disable-frame-rate-limit --disable-gpu-vsync`) to show the headroom,
//! and once more as the page drew it before its CPU morphing and culled pieces (`?morph=gpu&pieces=0`,
//! the same image) for a before/after under the same load; then the same model with its body
//! skinned (`vrm-sized skinned`: bound to the hips and, for its upper half, to the head, so it stands
//! under the face as on a real avatar), now and before.
//!
//! `cargo bench --bench viewer -- [SECS=8]` (needs Debian's `chromium` and `idol fetch`'s viewer
//! modules).

#[path = "../tests/browser.rs"]
mod browser;

use browser::{Mesh, arkit_glb, open, viewer_server, vrm1_with};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

const TEXT: &str = "Hello everyone, and welcome back to the stream! Today we are going to build a \
    tiny robot, paint it bright pink, and teach it to sing a song about the moon. Before we start, \
    thank you so much for all the follows and the lovely messages last night.";

/// A VRoid-sized avatar: the face sphere's targets are the 7 expression names and 45 more (the rest
/// of a VRoid face's `Fcl_*` shapes), each moving a band of the face.
fn vrm_sized(skinned: bool) -> Vec<u8> {
    let mut names: Vec<String> = ["aa", "ih", "ou", "ee", "oh", "blink", "happy"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend((0..45).map(|i| format!("Fcl_extra_{i:02}")));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // 79 × 100 quads: (80 × 101) = 8,080 vertices.
    let face = Mesh::sphere("face", [0.0, 1.45, 0.0], 0.11, 79, 100, &refs, |p, k| {
        let band = 1.45 - 0.1 + 0.2 * (k as f32 / 52.0);
        let w = (1.0 - ((p[1] - band) / 0.03).powi(2)).max(0.0);
        [0.0, -0.01 * w, 0.004 * w]
    });
    // 149 × 160 quads: 150 × 161 = 24,150 vertices.
    let mut body = Mesh::sphere("body", [0.0, 0.9, 0.0], 0.3, 149, 160, &[], |_, _| [0.0; 3]);
    if skinned {
        // Bound to the hips and, for its upper half, more and more to the head: it stands where
        // its vertices say (under the face, as on a real avatar) and its top follows the head.
        body.skin = body
            .positions
            .iter()
            .map(|p| {
                let h = ((p[1] - 0.9) / 0.3).clamp(0.0, 1.0);
                ([0, 1, 0, 0], [1.0 - h, h, 0.0, 0.0])
            })
            .collect();
    }
    vrm1_with(face, vec![body])
}

struct Run {
    avatar: &'static str,
    pacing: &'static str,
    fps: f64,
    median_ms: f64,
    p95_ms: f64,
    av_ms: f64,
    triangles: u64,
}

async fn run(
    home: &idol::assets::Home,
    avatar: Option<PathBuf>,
    name: &'static str,
    uncapped: bool,
    query: &str,
    secs: f64,
) -> Run {
    let server = viewer_server(home, avatar);
    let extra: &[&str] = if uncapped {
        &["--disable-frame-rate-limit", "--disable-gpu-vsync"]
    } else {
        &[]
    };
    let mut page = open(&format!("{}/{query}", server.base_url()), extra).await;
    let cdp = &mut page.cdp;
    cdp.until(
        "!!(window.__idolViewer && __idolViewer.ready && __idolViewer.stats.connected && __idolViewer.stats.rig)",
        120,
        "the page loads",
    )
    .await;
    let triangles = cdp
        .eval(
            "(() => { let t = 0; const s = __idolViewer.scene; if (s) s.traverse((o) => { \
               if (o.isMesh && o.geometry) { const g = o.geometry; \
                 t += Math.min(g.index ? g.index.count : g.attributes.position.count, g.drawRange.count) / 3; } }); \
               return t; })()",
        )
        .await
        .as_f64()
        .unwrap_or(0.0) as u64;
    cdp.eval(&format!(
        "document.getElementById('sayMode').checked = true; \
         document.getElementById('text').value = {}; \
         document.getElementById('panel').requestSubmit(); true",
        json!(TEXT)
    ))
    .await;
    cdp.until(
        "__idolViewer.stats.framesAppliedWhilePlaying > 10",
        120,
        "the speech is heard",
    )
    .await;
    cdp.eval(
        "window.__logFrom = __idolViewer.log.length; window.__raf = []; (function r(t) { __raf.push(t); if (__raf.length < 100000) requestAnimationFrame(r); })(performance.now()); true",
    )
    .await;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let got = cdp
        .eval(
            "({raf: __raf, stats: __idolViewer.stats, \
               av: __idolViewer.log.slice(__logFrom).filter((r) => r.playing) \
                 .map((r) => (r.heard - r.stamp) / __idolViewer.stats.sampleRate * 1000)})",
        )
        .await;
    let t: Vec<f64> = got["raf"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let mut d: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    d.sort_by(f64::total_cmp);
    let q = |p: f64| {
        d.get(((d.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let span = t.last().unwrap_or(&0.0) - t.first().unwrap_or(&0.0);
    Run {
        avatar: name,
        pacing: if uncapped { "uncapped" } else { "normal" },
        fps: if span > 0.0 {
            (t.len() - 1) as f64 * 1000.0 / span
        } else {
            0.0
        },
        median_ms: q(0.5),
        p95_ms: q(0.95),
        av_ms: got["av"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_f64())
            .map(f64::abs)
            .fold(0.0, f64::max),
        triangles,
    }
}

fn main() {
    let secs: f64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(8.0);
    let home = idol::assets::Home::from_manifest_dir();
    let dir = tempfile::tempdir().unwrap();
    let quad = dir.path().join("quad.glb");
    std::fs::write(
        &quad,
        arkit_glb(&["jawOpen", "mouthClose", "eyeBlinkLeft", "eyeBlinkRight"]),
    )
    .unwrap();
    let big = dir.path().join("vroid-sized.vrm");
    std::fs::write(&big, vrm_sized(false)).unwrap();
    let skinned = dir.path().join("vroid-sized-skinned.vrm");
    std::fs::write(&skinned, vrm_sized(true)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The last row renders the page the way it did before the CPU morphing and the pieces
    // (`?morph=gpu&pieces=0`: three.js's shader morphs, meshes drawn whole; the same image), under
    // the same load as the others.
    let cases: [(Option<PathBuf>, &str, bool, &str); 7] = [
        (None, "default face", false, ""),
        (Some(quad), "glb quad", false, ""),
        (Some(big.clone()), "vrm-sized", false, ""),
        (Some(big.clone()), "vrm-sized", true, ""),
        (Some(big), "vrm-sized, before", false, "?morph=gpu&pieces=0"),
        (Some(skinned.clone()), "vrm-sized skinned", false, ""),
        (
            Some(skinned),
            "vrm-sized skinned, before",
            false,
            "?morph=gpu&pieces=0",
        ),
    ];
    println!(
        "load average before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "| avatar | triangles | pacing | fps | frame interval median | p95 | A/V offset max |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (avatar, name, uncapped, query) in cases {
        let r = rt.block_on(run(&home, avatar, name, uncapped, query, secs));
        println!(
            "| {} | {} | {} | {:.1} | {:.1} ms | {:.1} ms | {:.1} ms |",
            r.avatar, r.triangles, r.pacing, r.fps, r.median_ms, r.p95_ms, r.av_ms
        );
    }
    println!(
        "load average after: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
