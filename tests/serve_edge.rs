//! `idol serve` at its edges, with hand-made requests on raw TCP: hostile `Host` and `Origin` headers
//! (web pages of other sites, DNS rebinding), WebSocket protocol violations and their close codes,
//! and a client that stops reading and comes back for its close reason. Real server on loopback,
//! fake stages (see `serve.rs`, whose helpers these tests share).

use crate::serve::{In, LONG, connect, next, options, reply, send, stages, start};
use futures_util::StreamExt;
use idol::perform::PerformConfig;
use idol::server::{Server, ServerOptions};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;

/// Upper bound on waiting for any one reply, so a server that never answers fails the test instead
/// of hanging it (not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(20);

/// A response's status code, headers (lowercase names) and body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Send `GET path` with exactly these headers (a `Host` only if given) and read the response head
/// and its `Content-Length` body. The stream is returned positioned after the response (an upgraded
/// connection continues there).
async fn request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (Response, BufReader<TcpStream>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut rd = BufReader::new(tcp);
    let read = async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = rd.read_u8().await.expect("a complete response head");
            head.push(b);
        }
        let head = String::from_utf8(head).unwrap();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
        let mut body = vec![0; len];
        rd.read_exact(&mut body).await.unwrap();
        Response {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    };
    let resp = tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the server answers");
    (resp, rd)
}

/// The headers of a WebSocket upgrade to `host` with `origin`.
fn upgrade<'a>(host: &'a str, origin: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    if let Some(o) = origin {
        h.push(("Origin", o));
    }
    h
}

/// A raw WebSocket connection on an upgraded socket.
async fn raw_ws(addr: SocketAddr) -> BufReader<TcpStream> {
    let host = addr.to_string();
    let (resp, rd) = request(addr, "/v1/stream", &upgrade(&host, None)).await;
    assert_eq!(resp.status, 101, "{}", resp.body);
    rd
}

/// One frame: `first` is the first header byte (FIN, RSV1-3, opcode), masked unless `unmasked`.
fn frame(first: u8, payload: &[u8], unmasked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if unmasked { 0 } else { 0x80 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n < 65536 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if unmasked {
        out.extend_from_slice(payload);
    } else {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    }
    out
}

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// Read the server's frames (skipping the stream's data frames) until its close frame: `Some((code,
/// reason))`, `Some((0, ""))` for a close frame without a code, `None` if the connection ended (or
/// [`PATIENCE`] ran out) without one.
async fn close_of(rd: &mut BufReader<TcpStream>) -> Option<(u16, String)> {
    let read = async {
        loop {
            let b0 = rd.read_u8().await.ok()?;
            let b1 = rd.read_u8().await.ok()?;
            let mut len = (b1 & 0x7f) as u64;
            if len == 126 {
                len = rd.read_u16().await.ok()? as u64;
            } else if len == 127 {
                len = rd.read_u64().await.ok()?;
            }
            assert_eq!(b1 & 0x80, 0, "server frames are not masked");
            let mut payload = vec![0; len as usize];
            rd.read_exact(&mut payload).await.ok()?;
            if b0 & 0x0f == CLOSE {
                if payload.len() < 2 {
                    return Some((0, String::new()));
                }
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                let reason = String::from_utf8(payload[2..].to_vec()).expect("a UTF-8 reason");
                return Some((code, reason));
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_origins_and_rebinding_hosts_are_refused() {
    let mut opts = options([127, 0, 0, 1].into(), 2000, None);
    opts.allowed_hosts = vec!["idol.lan".into()];
    opts.allowed_origins = vec!["https://overlay.example".into()];
    let server = Server::start(stages(&["Hi."]), PerformConfig::default(), opts).unwrap();
    let addr = server.addr();
    let port = addr.port();
    let own = addr.to_string();
    let spoken = || server.perform().metrics().render();
    let before = spoken();

    // The upgrade from other origins: 403 with the reason, no connection.
    for origin in [
        "https://evil.example".to_string(),
        "null".to_string(),
        // Another page on this machine (a different port is a different origin).
        "http://127.0.0.1:3000".to_string(),
        format!("http://evil.example:{port}"),
    ] {
        let (r, _) = request(addr, "/v1/stream", &upgrade(&own, Some(&origin))).await;
        assert_eq!(r.status, 403, "{origin}: {}", r.body);
        assert!(r.body.contains("allowed_origins"), "{origin}: {}", r.body);
    }
    assert!(server.hub().is_empty(), "no refused page got a connection");

    // The server's own origins, the configured one, and non-browser clients (no Origin).
    for origin in [
        Some(format!("http://127.0.0.1:{port}")),
        Some(format!("http://localhost:{port}")),
        Some(format!("http://idol.lan:{port}")),
        Some("https://overlay.example".to_string()),
        None,
    ] {
        let (r, _) = request(addr, "/v1/stream", &upgrade(&own, origin.as_deref())).await;
        assert_eq!(r.status, 101, "{origin:?}: {}", r.body);
    }

    // DNS rebinding: a name that is not the server's is refused on every route, the stream too.
    let evil = format!("evil.example:{port}");
    for path in ["/", "/healthz", "/metrics", "/v1/stream"] {
        let (r, _) = request(addr, path, &[("Host", &evil), ("Connection", "close")]).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(r.body.contains("allowed_hosts"), "{path}: {}", r.body);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    }
    let (r, _) = request(
        addr,
        "/v1/stream",
        &upgrade(&evil, Some(&format!("http://{evil}"))),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // Names of this server are served.
    for host in [
        own.clone(),
        format!("localhost:{port}"),
        format!("idol.lan:{port}"),
    ] {
        let (r, _) = request(
            addr,
            "/healthz",
            &[("Host", &host), ("Connection", "close")],
        )
        .await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "{host}");
    }
    // Nothing a refused request asked for happened.
    let (mut ws, _) = connect(&server).await;
    send(&mut ws, json!({"type":"ping","id":"after"})).await;
    assert_eq!(reply(&mut ws).await["id"], "after");
    let after = spoken();
    let utterances = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("idol_utterances_total"))
            .map(str::to_string)
    };
    assert_eq!(utterances(&before), utterances(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_get_the_right_close_codes() {
    let server = start(&["Hi."]);
    let addr = server.addr();
    let ping_200 = frame(FIN | PING, &[b'p'; 200], false);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unmasked frame",
            frame(FIN | TEXT, br#"{"type":"ping"}"#, true),
            1002,
        ),
        (
            "reserved bit",
            frame(FIN | 0x40 | TEXT, br#"{"type":"ping"}"#, false),
            1002,
        ),
        ("reserved data opcode", frame(FIN | 0x3, b"x", false), 1002),
        (
            "reserved control opcode",
            frame(FIN | 0xb, b"x", false),
            1002,
        ),
        (
            "continuation with nothing to continue",
            frame(FIN | CONT, b"x", false),
            1002,
        ),
        (
            "new message inside a fragmented one",
            [
                frame(TEXT, b"{\"ty", false),
                frame(FIN | TEXT, b"{}", false),
            ]
            .concat(),
            1002,
        ),
        ("fragmented ping", frame(PING, b"x", false), 1002),
        ("200-byte ping", ping_200, 1002),
        (
            "close payload of 1 byte",
            frame(FIN | CLOSE, &[3], false),
            1002,
        ),
        (
            "close code 999",
            frame(FIN | CLOSE, &close_payload(999, b""), false),
            1002,
        ),
        (
            "close code 1005 (never sent on the wire)",
            frame(FIN | CLOSE, &close_payload(1005, b""), false),
            1002,
        ),
        (
            "close reason not UTF-8",
            frame(FIN | CLOSE, &close_payload(1000, &[0xff, 0xfe]), false),
            1007,
        ),
        (
            "text not UTF-8",
            frame(FIN | TEXT, &[b'"', 0xc3, 0x28, b'"'], false),
            1007,
        ),
        (
            "fragmented text not UTF-8",
            [
                frame(TEXT, &[b'"', 0xe2], false),
                frame(FIN | CONT, &[0x28, 0xa1, b'"'], false),
            ]
            .concat(),
            1007,
        ),
        // A valid close is echoed.
        (
            "close 1000",
            frame(FIN | CLOSE, &close_payload(1000, b"bye"), false),
            1000,
        ),
        (
            "close 4321 (private use)",
            frame(FIN | CLOSE, &close_payload(4321, b""), false),
            4321,
        ),
    ];
    for (what, bytes, want) in cases {
        let mut rd = raw_ws(addr).await;
        rd.get_mut().write_all(&bytes).await.unwrap();
        let got = close_of(&mut rd).await;
        let (code, reason) = got.unwrap_or_else(|| panic!("{what}: no close frame"));
        assert_eq!(code, want, "{what}: {reason}");
        match want {
            1002 if what.starts_with("close code") => {}
            1002 => assert!(reason.starts_with("protocol error"), "{what}: {reason}"),
            1007 => assert!(reason.contains("UTF-8"), "{what}: {reason}"),
            _ => {}
        }
    }
    // The 200-byte ping names the real rule, not the message size.
    let mut rd = raw_ws(addr).await;
    rd.get_mut()
        .write_all(&frame(FIN | PING, &[0; 200], false))
        .await
        .unwrap();
    let (_, reason) = close_of(&mut rd).await.unwrap();
    assert!(reason.contains("125 bytes"), "{reason}");
    // The server took every one of them and still serves.
    let (mut ws, _) = connect(&server).await;
    send(&mut ws, json!({"type":"ping","id":"alive"})).await;
    assert_eq!(reply(&mut ws).await["id"], "alive");
}

/// A client that stops reading is closed for lagging; when it reads again (well after the lag limit
/// and any short grace), what was already on its way arrives, and then the close frame with 4008 and
/// the reason, as `docs/protocol.md` promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_client_that_resumes_reading_gets_its_4008_reason() {
    let server = Server::start(
        stages(&[LONG]),
        PerformConfig::default(),
        ServerOptions {
            max_clients: 4,
            ..options([127, 0, 0, 1].into(), 300, None)
        },
    )
    .unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(server.addr()).await.unwrap();
    let url = format!("ws://{}/v1/stream", server.addr());
    let (mut stalled, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    assert!(matches!(next(&mut stalled).await, In::Json(v) if v["type"] == "hello"));
    send(
        &mut stalled,
        json!({"type":"subscribe","audio":"f32","frames":"json"}),
    )
    .await;
    let (mut talker, _) = connect(&server).await;
    send(&mut talker, json!({"type":"chat","text":"talk to me"})).await;
    assert_eq!(reply(&mut talker).await["type"], "ack");
    // The talker keeps reading: only the stalled client lags.
    let talker = tokio::spawn(async move { while let Some(Ok(_)) = talker.next().await {} });
    let metrics = server.perform().metrics().clone();
    let mut waited = 0;
    while metrics
        .clients_dropped
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        assert!(waited < 1000, "the stalled client was never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    // Stay away well past the old 5 s + 5 s grace.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let close = loop {
        if let In::Closed(c) = next(&mut stalled).await {
            break c;
        }
    };
    let (code, reason) = close.expect("the close frame with its reason, not just a TCP close");
    assert_eq!(code, idol::server::CLOSE_LAGGING, "{reason}");
    assert!(reason.contains("lagging"), "{reason}");
    // Its slot is free again once it is gone: the server takes new clients.
    let (mut again, _) = connect(&server).await;
    send(&mut again, json!({"type":"ping","id":"again"})).await;
    assert_eq!(reply(&mut again).await["id"], "again");
    talker.abort();
}
