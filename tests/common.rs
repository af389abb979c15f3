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
