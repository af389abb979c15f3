//! The layers import downward only: every `crate::` path in the library's code (comments and test
//! modules aside) names a module of a lower layer than its own. The order is `docs/architecture.md`'s
//! ("Layers"); a new top-level module must be given its layer here and there.

use std::collections::BTreeSet;
use std::path::Path;

/// Lowest first. A module may use the modules of the layers before its own, none of its own layer.
const LAYERS: &[&[&str]] = &[
    &["time", "tomlpos", "budget", "audio", "assets"],
    &["speech"],
    &["text"],
    &["phonemize", "persona"],
    &["config", "face", "tts"],
    &["align", "fetch"],
    &["check", "perform"],
    &["sink", "script", "relay", "listen"],
    &["server", "farm"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The `crate::NAME` modules a source file's code uses (comments, string literals and the
/// `#[cfg(test)] mod tests` module left out), with the line of each use.
fn uses(src: &str) -> Vec<(String, usize)> {
    let code = match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    };
    let mut out = vec![];
    for (n, line) in code.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        // string literals out (a message may name a path)
        let mut clean = String::new();
        let mut in_str = false;
        let mut prev = ' ';
        for c in t.chars() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                clean.push(c);
            }
            prev = c;
        }
        let clean = clean.split("//").next().unwrap_or("");
        let mut rest = clean;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((name, n + 1));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn layers_import_downward_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut files = vec![];
    rust_files(&src, &mut files);
    let mut wrong = BTreeSet::new();
    // Every module the library declares has a layer.
    for line in lib.lines() {
        if let Some(m) = line.trim().strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            if layer_of(m).is_none() {
                wrong.insert(format!(
                    "src/lib.rs: module `{m}` has no layer in tests/layers.rs"
                ));
            }
        }
    }
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.iter().next().unwrap().to_str().unwrap();
        let module = first.trim_end_matches(".rs");
        // The binary (main.rs, cli/) sits above every layer; lib.rs declares them.
        if matches!(module, "main" | "cli" | "lib") {
            continue;
        }
        let Some(mine) = layer_of(module) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        for (used, line) in uses(&text) {
            if used == module {
                continue;
            }
            match layer_of(&used) {
                Some(l) if l < mine => {}
                Some(_) => {
                    wrong.insert(format!(
                        "src/{}:{line}: `{module}` uses `crate::{used}`, which is not below it",
                        rel.display()
                    ));
                }
                None => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_scanner_sees_uses_and_skips_comments_and_strings() {
    let src = "use crate::time::SampleTime;\n// crate::server\nlet x = \"crate::cli\"; crate::speech::Word::new(\"a\");\n#[cfg(test)]\nmod tests {\n use crate::server;\n}\n";
    let got: Vec<String> = uses(src).into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, ["time", "speech"]);
}

/// The commands (`src/cli/*.rs`) do not reach into each other: what two of them share lives in
/// `src/cli/wiring/`, which uses no command.
#[test]
fn commands_share_only_through_the_wiring_room() {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    let commands: Vec<String> = std::fs::read_dir(&cli)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let stem = p.file_stem()?.to_str()?.to_string();
            (p.extension().is_some_and(|x| x == "rs") && stem != "mod").then_some(stem)
        })
        .collect();
    let mut wrong = vec![];
    let mut check = |file: &Path, prefixes: &[&str]| {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for prefix in prefixes {
                for c in &commands {
                    let other = format!("{prefix}{c}::");
                    let own = file.file_stem().unwrap().to_str() == Some(c.as_str());
                    if line.contains(&other) && !own {
                        wrong.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    };
    for c in &commands {
        check(&cli.join(format!("{c}.rs")), &["super::", "crate::cli::"]);
    }
    let mut rooms = vec![];
    rust_files(&cli.join("wiring"), &mut rooms);
    for f in rooms {
        check(&f, &["super::super::", "crate::cli::"]);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
