//! What the benchmarks that drive a real `idol serve` share: a temporary idol home holding the
//! checkout's models and voices (hard links, else symlinks), the release `idol` binary started on a
//! free loopback port with its stderr kept, its memory from `/proc`, and the raw WebSocket client
//! ([`raw`]).

#![allow(dead_code)]

pub mod raw;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A temporary idol home beside the build (same filesystem as the checkout, so models are hard
/// links): `models/`, `voices/`, `personas/`, `rigs/`, and `idol.toml` with `overrides` appended
/// (later keys of a table win, so pass whole `[table]` sections that idol.toml does not have, or
/// none). Memory and caches stay inside it. `IDOL_BENCH_MODEL` (a path in the home, e.g.
/// `models/SmolLM2-135M-Instruct.Q4_1.gguf`) replaces `[llm] model`.
pub fn temp_home(extra_toml: &str) -> tempfile::TempDir {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
    let home = tempfile::Builder::new()
        .prefix("idol-bench-home")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a temporary home");
    for dir in ["models", "voices"] {
        let to = home.path().join(dir);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(checkout.join(dir)).unwrap().flatten() {
            let dest = to.join(e.file_name());
            if std::fs::hard_link(e.path(), &dest).is_err() {
                symlink(&e.path(), &dest).unwrap();
            }
        }
    }
    for dir in ["personas", "rigs"] {
        if checkout.join(dir).exists() {
            symlink(&checkout.join(dir), &home.path().join(dir)).unwrap();
        }
    }
    let mut toml = std::fs::read_to_string(checkout.join("idol.toml")).unwrap_or_default();
    // IDOL_BENCH_MODEL=models/X.gguf runs the server on another model than idol.toml's.
    if let Ok(model) = std::env::var("IDOL_BENCH_MODEL") {
        let mut table = "";
        toml = toml
            .lines()
            .map(|l| {
                if l.starts_with('[') {
                    table = l.trim();
                }
                if table == "[llm]" && l.starts_with("model = ") {
                    format!("model = {model:?}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        toml.push('\n');
    }
    toml.push_str(extra_toml);
    std::fs::write(home.path().join("idol.toml"), toml).unwrap();
    home
}

/// A free loopback port (bound and released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `idol serve` child process.
pub struct Idol {
    child: Child,
    pub addr: SocketAddr,
    pub stderr_path: PathBuf,
    pub started: Instant,
}

impl Idol {
    /// Start `idol serve` in `home` and wait until `/healthz` answers (up to `ready_within`).
    pub fn start(home: &Path, ready_within: Duration) -> Result<Idol, String> {
        let port = free_port();
        let stderr_path = home.join(format!("serve-{port}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_idol"))
            .args(["serve", "--bind", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(home)
            .env("IDOL_HOME", home)
            .env_remove("RUST_LOG")
            .env_remove("IDOL_TOKEN")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", env!("CARGO_BIN_EXE_idol")))?;
        let mut idol = Idol {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stderr_path,
            started: Instant::now(),
        };
        let deadline = Instant::now() + ready_within;
        while Instant::now() < deadline {
            if let Some(status) = idol.exited() {
                return Err(format!(
                    "idol serve exited at start ({status}):\n{}",
                    idol.stderr()
                ));
            }
            if raw::http_get(idol.addr, "/healthz", None, Duration::from_secs(1)) == 200 {
                return Ok(idol);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        idol.kill();
        Err(format!(
            "idol serve did not answer /healthz within {ready_within:?}"
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`); `None` once the process is gone.
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// Resident memory now, MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        self.status_kib("VmRSS").map(|k| k as f64 / 1024.0)
    }

    /// Peak resident memory so far, MiB.
    pub fn peak_mib(&self) -> Option<f64> {
        self.status_kib("VmHWM").map(|k| k as f64 / 1024.0)
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Panics the server reported on stderr (`thread '…' panicked at …` lines).
    pub fn panics(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| l.contains("panicked at"))
            .map(str::to_string)
            .collect()
    }

    /// Answers `/healthz` and a WebSocket `ping` within `within`.
    pub fn responsive(&self, within: Duration) -> bool {
        if raw::http_get(self.addr, "/healthz", None, within) != 200 {
            return false;
        }
        let Ok(mut c) = raw::connect(self.addr, &raw::Upgrade::default(), within) else {
            return false;
        };
        if !c.upgraded() {
            return false;
        }
        let _ = c.send_text(r#"{"type":"subscribe","streams":[]}"#);
        let _ = c.send_text(r#"{"type":"ping","id":"alive"}"#);
        matches!(c.until_text(|v| v["id"] == "alive"), Ok(Some(_)))
    }

    /// Stop with SIGINT (what Ctrl-C sends), then SIGKILL after a grace period.
    pub fn stop(mut self) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        None
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Idol {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill();
        }
    }
}

/// The first non-flag argument parsed, else `default`.
pub fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// `/proc/loadavg`'s first three fields.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
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
