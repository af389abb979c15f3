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

/// A WebSocket client of `idol serve` (or `idol relay`): connect and read `hello`, send, the next
/// message parsed, the next reply, subscribe and wait for the answer. What the serve, relay, NATS
/// and budget tests share.
pub mod client {
    use futures_util::{SinkExt, StreamExt};
    use idol::server::protocol::{Binary, parse_binary};
    use serde_json::Value;
    use std::net::SocketAddr;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

    /// One message from the server, parsed.
    #[derive(Debug, Clone, PartialEq)]
    pub enum In {
        Json(Value),
        Bin(Binary),
        Closed(Option<(u16, String)>),
    }

    /// How long a test waits for the server's next message before it fails instead of hanging
    /// (a real model on a loaded machine takes seconds; nothing takes minutes).
    pub const SILENCE: std::time::Duration = std::time::Duration::from_secs(300);

    /// The next text or binary message, parsed (pings skipped); `Closed` once the connection ends.
    /// Panics when the server says nothing for [`SILENCE`].
    pub async fn next(ws: &mut Ws) -> In {
        loop {
            let got = tokio::time::timeout(SILENCE, ws.next()).await;
            let Ok(got) = got else {
                panic!("the server sent nothing for {} s", SILENCE.as_secs());
            };
            match got {
                Some(Ok(Message::Text(t))) => {
                    return In::Json(serde_json::from_str(t.as_str()).unwrap());
                }
                Some(Ok(Message::Binary(b))) => {
                    return In::Bin(parse_binary(&b).expect("well-formed binary message"));
                }
                Some(Ok(Message::Close(c))) => {
                    return In::Closed(
                        c.map(|c| (u16::from(c.code), c.reason.as_str().to_string())),
                    );
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return In::Closed(None),
            }
        }
    }

    /// Connect to the stream at `addr` and read its `hello`.
    pub async fn connect_to(addr: SocketAddr) -> (Ws, Value) {
        let url = format!("ws://{addr}/v1/stream");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let In::Json(hello) = next(&mut ws).await else {
            panic!("hello first")
        };
        assert_eq!(hello["type"], "hello", "{hello}");
        (ws, hello)
    }

    pub async fn send(ws: &mut Ws, v: Value) {
        ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    /// The next ack, error or pong; what came before it is appended to `kept`.
    pub async fn reply_keep(ws: &mut Ws, kept: &mut Vec<In>) -> Value {
        loop {
            match next(ws).await {
                In::Json(v) if matches!(v["type"].as_str(), Some("ack" | "error" | "pong")) => {
                    return v;
                }
                In::Closed(c) => panic!("closed: {c:?}"),
                m => kept.push(m),
            }
        }
    }

    /// The next ack, error or pong (what comes before it is skipped).
    pub async fn reply(ws: &mut Ws) -> Value {
        reply_keep(ws, &mut vec![]).await
    }

    /// Send `v` and return its answer: the next ack, error or pong.
    pub async fn ask(ws: &mut Ws, v: Value) -> Value {
        send(ws, v).await;
        reply(ws).await
    }

    /// Subscribe with `fields` (`rig`, `audio`, `frames`, `streams`, `id`) and return the answer, which
    /// must be an ack.
    pub async fn subscribe(ws: &mut Ws, mut fields: Value) -> Value {
        fields["type"] = "subscribe".into();
        let a = ask(ws, fields.clone()).await;
        assert_eq!(a["type"], "ack", "{fields} was answered with {a}");
        a
    }
}
