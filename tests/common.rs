//! What every integration test module shares: the idol home with the real assets, fetched on first use
//! (so `cargo test` works on a fresh clone), once per test binary.

use idol::assets::Home;
use idol::fetch::{Fetcher, Quiet};
use std::sync::OnceLock;

/// The repository checkout with every pinned asset installed and verified.
pub fn home() -> Home {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let home = Home::from_manifest_dir();
    let ready = READY.get_or_init(|| {
        let f = Fetcher::new(home.clone());
        f.fetch_all(&mut Quiet)
            .map(|_| ())
            .map_err(|e| format!("fetching the real assets failed: {e}"))
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
    home
}

/// A file of the committed test data (`tests/data/NAME`).
pub fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The `idol` binary run in `dir` with `dir` as its home (`IDOL_HOME`), quiet logging.
pub fn idol_in(dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_idol"));
    c.current_dir(dir)
        .env("IDOL_HOME", dir)
        .env_remove("IDOL_ONNXRUNTIME")
        .env_remove("RUST_LOG");
    c
}

/// Pearson correlation of two equally long series (0 when either is constant).
pub fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() as f32;
    let (ma, mb) = (a.iter().sum::<f32>() / n, b.iter().sum::<f32>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt().max(1e-12)
}

/// A symbolic link at `to` to `from` (on Windows a file or folder link, which needs Developer Mode or
/// an administrator).
pub fn symlink(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    #[cfg(windows)]
    {
        if from.is_dir() {
            std::os::windows::fs::symlink_dir(from, to)
        } else {
            std::os::windows::fs::symlink_file(from, to)
        }
    }
    #[cfg(not(windows))]
    {
        std::os::unix::fs::symlink(from, to)
    }
}

/// Running a command to the end and asserting how it ended, with what it printed in the message
/// (ripgrep's `TestCommand` is the model): `idol_in(dir).args([...]).ok()`.
pub trait Run {
    /// Run it; it must succeed. Its output.
    fn ok(&mut self) -> std::process::Output;
    /// Run it; it must fail. Its output.
    fn fails(&mut self) -> std::process::Output;
}

impl Run for std::process::Command {
    fn ok(&mut self) -> std::process::Output {
        let o = self.output().expect("the command runs");
        assert!(
            o.status.success(),
            "{:?} failed ({}):\n{}",
            self,
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    fn fails(&mut self) -> std::process::Output {
        let o = self.output().expect("the command runs");
        assert!(
            !o.status.success(),
            "{:?} was accepted:\n{}",
            self,
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }
}

/// A JSONL file idol wrote (frames, events): its header line and the lines after it, parsed.
pub fn read_jsonl(path: &std::path::Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut lines = text.lines().map(|l| {
        serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display()))
    });
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("{} is empty", path.display()));
    (header, lines.collect())
}
