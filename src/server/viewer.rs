//! The viewer page and what it loads: the page itself (embedded), the pinned JavaScript modules it
//! imports (three.js, three-vrm; installed under the home's `viewer/vendor/` by `idol fetch`) and the
//! host's avatar (`[viewer] avatar`). Input: [`ViewerOptions`]. Output: the `GET /`, `GET /vendor/…`
//! and `GET /avatar.vrm|glb` routes.
//!
//! Nothing here reads a path a request names: the vendor files are the manifest's list, read into
//! memory when the server starts (a file missing then is left out, and the page draws its 2D face);
//! the avatar is the one configured file, read on each request. Every other path is 404.
//!
//! The page learns what it may load from a JSON object the server writes into it
//! (`window.IDOL_VIEWER`: `{"three": bool, "avatar": "/avatar.vrm" | "/avatar.glb" | null}`), and
//! finds the modules through its import map (`three`, `three/addons/`, `@pixiv/three-vrm`), so it
//! makes no request to any host but the server.

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The viewer page, embedded in the binary (the configuration object is filled in when served).
pub const VIEWER_HTML: &str = include_str!("viewer.html");

/// The largest avatar file served (checked before it is read; VRM avatars are typically 10-50 MB).
pub const MAX_AVATAR_BYTES: u64 = 512 << 20;

/// The placeholder in [`VIEWER_HTML`] the configuration object replaces.
const CONFIG_SLOT: &str = "/*IDOL_VIEWER_CONFIG*/null";

/// What the viewer serves besides its page.
#[derive(Debug, Clone, Default)]
pub struct ViewerOptions {
    /// The vendor modules: URL path below `/vendor/` (e.g. `three/build/three.module.js`) and the
    /// file that holds it. Empty: the page draws its 2D face (no three.js).
    pub vendor: Vec<(String, PathBuf)>,
    /// The host's avatar (`[viewer] avatar`, resolved): a `.vrm` or `.glb` file.
    pub avatar: Option<PathBuf>,
}

/// The files three.js must have for the 3D viewer: without the module and its core the page falls
/// back to 2D.
const REQUIRED: [&str; 3] = [
    "three/build/three.module.js",
    "three/build/three.core.js",
    "three/examples/jsm/loaders/GLTFLoader.js",
];

/// The viewer's routes' state: the vendor files in memory and the page with its configuration.
#[derive(Debug)]
pub struct Viewer {
    page: String,
    vendor: HashMap<String, Vec<u8>>,
    avatar: Option<(PathBuf, &'static str)>,
}

impl Viewer {
    /// Read the vendor files (a missing or unreadable one is left out with a warning) and fill in the
    /// page's configuration.
    pub fn new(opts: &ViewerOptions) -> Viewer {
        let mut vendor = HashMap::new();
        let mut missing = vec![];
        for (url, file) in &opts.vendor {
            match std::fs::read(file) {
                Ok(bytes) => {
                    vendor.insert(url.clone(), bytes);
                }
                Err(e) => missing.push(format!("{} ({e})", file.display())),
            }
        }
        if !missing.is_empty() {
            log::warn!(
                "viewer: {} missing, so the page draws its 2D face: run `idol fetch`",
                missing.join(", ")
            );
        }
        let three = REQUIRED.iter().all(|r| vendor.contains_key(*r));
        let avatar = opts.avatar.as_ref().map(|p| {
            let vrm = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("vrm"));
            (p.clone(), if vrm { "vrm" } else { "glb" })
        });
        let vrm_module = vendor.contains_key("three-vrm/lib/three-vrm.module.min.js");
        let config = serde_json::json!({
            "three": three,
            "vrm": vrm_module,
            "avatar": avatar.as_ref().map(|(_, kind)| format!("/avatar.{kind}")),
        });
        let page = VIEWER_HTML.replacen(CONFIG_SLOT, &config.to_string(), 1);
        Viewer {
            page,
            vendor,
            avatar,
        }
    }

    /// The page as served.
    pub fn page(&self) -> &str {
        &self.page
    }
}

pub(crate) async fn page(State(v): State<Arc<Viewer>>) -> Html<String> {
    Html(v.page.clone())
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{what}\n"),
    )
        .into_response()
}

pub(crate) async fn vendor(
    State(v): State<Arc<Viewer>>,
    UrlPath(path): UrlPath<String>,
) -> Response {
    match v.vendor.get(&path) {
        Some(bytes) => {
            let kind = if path.ends_with(".js") {
                "text/javascript; charset=utf-8"
            } else {
                "text/plain; charset=utf-8"
            };
            (
                [
                    (header::CONTENT_TYPE, kind),
                    (header::CACHE_CONTROL, "max-age=86400"),
                ],
                bytes.clone(),
            )
                .into_response()
        }
        None => not_found("not one of the viewer's files (run `idol fetch` if it should be)"),
    }
}

pub(crate) async fn avatar(State(v): State<Arc<Viewer>>, uri: axum::http::Uri) -> Response {
    let Some((file, kind)) = &v.avatar else {
        return not_found("no avatar configured: set [viewer] avatar in idol.toml");
    };
    if uri.path() != format!("/avatar.{kind}") {
        return not_found("no such avatar");
    }
    let file = file.clone();
    let read = move || -> Result<Vec<u8>, (PathBuf, std::io::Error)> {
        let len = std::fs::metadata(&file)
            .map_err(|e| (file.clone(), e))?
            .len();
        if len > MAX_AVATAR_BYTES {
            return Err((
                file.clone(),
                std::io::Error::other(format!(
                    "{len} bytes, over the viewer's limit of {MAX_AVATAR_BYTES}"
                )),
            ));
        }
        std::fs::read(&file).map_err(|e| (file, e))
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "model/gltf-binary"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err((file, e))) => {
            log::warn!("viewer: the avatar {}: {e}", file.display());
            not_found(&format!(
                "the avatar file cannot be read ({e}): check [viewer] avatar in idol.toml"
            ))
        }
        Err(e) => not_found(&e.to_string()),
    }
}
