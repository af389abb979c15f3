//! A small blocking WebSocket client that writes frames byte by byte (RFC 6455), so it can also write
//! the frames a well-behaved library refuses to: unmasked, reserved bits and opcodes, oversized
//! control frames, bad close codes. Shared by the abuse and soak benchmarks and by `tests/fuzz.rs`
//! (which includes this file by path). Loopback servers only; every read has a timeout.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Opcodes.
pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The largest server frame this client reads (audio chunks and frames are a few KiB).
const MAX_READ: u64 = 4 << 20;

/// One frame received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code and reason of a close frame (`None`: not a close frame, or a close without code).
    pub fn close(&self) -> Option<(u16, String)> {
        if self.opcode != CLOSE || self.payload.len() < 2 {
            return None;
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        Some((
            code,
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        ))
    }

    pub fn text(&self) -> Option<&str> {
        (self.opcode == TEXT).then(|| std::str::from_utf8(&self.payload).ok())?
    }
}

/// A connection after the upgrade (or after a refused upgrade: then `status` is not 101).
pub struct Conn {
    pub stream: BufReader<TcpStream>,
    /// The HTTP status of the upgrade response.
    pub status: u16,
    /// The response head (status line and headers).
    pub head: String,
    /// Bounds each read and write, and each `until_*` wait as a whole.
    pub timeout: Duration,
}

/// What the upgrade request carries besides the usual headers.
#[derive(Debug, Clone, Default)]
pub struct Upgrade<'a> {
    /// Request target, default `/v1/stream`.
    pub path: Option<&'a str>,
    /// `Host` header (default: the address connected to).
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
}

/// Connect and upgrade. `timeout` bounds every later read and write.
pub fn connect(addr: SocketAddr, up: &Upgrade, timeout: Duration) -> io::Result<Conn> {
    let tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    tcp.set_nodelay(true)?;
    let host = up.host.map_or_else(|| addr.to_string(), str::to_string);
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        up.path.unwrap_or("/v1/stream")
    );
    if let Some(o) = up.origin {
        req.push_str(&format!("Origin: {o}\r\n"));
    }
    req.push_str("\r\n");
    (&tcp).write_all(req.as_bytes())?;
    let mut stream = BufReader::new(tcp);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = stream.read_line(&mut line)?;
        if n == 0 {
            break;
        }
        head.push_str(&line);
        if line == "\r\n" || head.len() > 16 * 1024 {
            break;
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Conn {
        stream,
        status,
        head,
        timeout,
    })
}

/// Only the header of a frame that claims `len` payload bytes (masked): a client that announces a
/// frame too big to take, without sending it.
pub fn header(opcode: u8, len: u64) -> Vec<u8> {
    let mut out = vec![0x80 | opcode, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&MASK);
    out
}

/// A frame as written on the wire. `mask: None` writes it unmasked (a protocol violation from a
/// client); `rsv` is the three reserved bits (0 for a valid frame).
pub fn encode(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push((u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0xF));
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(m | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame's payload: code and reason bytes (which may be invalid UTF-8 on purpose).
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

impl Conn {
    pub fn upgraded(&self) -> bool {
        self.status == 101
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.get_mut().write_all(bytes)
    }

    /// A valid masked frame.
    pub fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.send_raw(&encode(true, 0, opcode, Some(MASK), payload))
    }

    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(TEXT, text.as_bytes())
    }

    /// The next frame from the server (within the connection's timeout).
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        let mut h = [0u8; 2];
        self.stream.read_exact(&mut h)?;
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0xF;
        let masked = h[1] & 0x80 != 0;
        let mut n = (h[1] & 0x7F) as u64;
        if n == 126 {
            let mut b = [0u8; 2];
            self.stream.read_exact(&mut b)?;
            n = u16::from_be_bytes(b) as u64;
        } else if n == 127 {
            let mut b = [0u8; 8];
            self.stream.read_exact(&mut b)?;
            n = u64::from_be_bytes(b);
        }
        if n > MAX_READ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("server frame of {n} bytes"),
            ));
        }
        let mut key = [0u8; 4];
        if masked {
            self.stream.read_exact(&mut key)?;
        }
        let mut payload = vec![0u8; n as usize];
        self.stream.read_exact(&mut payload)?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        Ok(Frame {
            fin,
            opcode,
            payload,
        })
    }

    /// A `TimedOut` error once `deadline` has passed (the stream may keep a connection busy
    /// with frames long after the answer that is waited for should have come).
    fn check(deadline: Instant) -> io::Result<()> {
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
        }
        Ok(())
    }

    /// Read until a text frame for which `want` holds (binary frames skipped), within the
    /// connection's timeout. `Ok(None)`: the server closed first.
    pub fn until_text(
        &mut self,
        mut want: impl FnMut(&serde_json::Value) -> bool,
    ) -> io::Result<Option<serde_json::Value>> {
        let deadline = Instant::now() + self.timeout;
        loop {
            Self::check(deadline)?;
            let f = self.read_frame()?;
            match f.opcode {
                TEXT => {
                    let v: serde_json::Value = serde_json::from_slice(&f.payload)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    if want(&v) {
                        return Ok(Some(v));
                    }
                }
                CLOSE => return Ok(None),
                _ => {}
            }
        }
    }

    /// Read until the server's close frame: `Ok(Some((code, reason)))`, `Ok(None)` when the server
    /// closed the TCP connection without a close frame (or with one carrying no code).
    pub fn until_close(&mut self) -> io::Result<Option<(u16, String)>> {
        let deadline = Instant::now() + self.timeout;
        loop {
            Self::check(deadline)?;
            match self.read_frame() {
                Ok(f) if f.opcode == CLOSE => return Ok(f.close()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

/// `GET path` over plain HTTP/1.1 with `Host: host`: the status (0 when no answer came in time).
pub fn http_get(addr: SocketAddr, path: &str, host: Option<&str>, timeout: Duration) -> u16 {
    http_get_body(addr, path, host, timeout).0
}

/// `GET path`: the status and the body (0 and empty when no answer came in time).
pub fn http_get_body(
    addr: SocketAddr,
    path: &str,
    host: Option<&str>,
    timeout: Duration,
) -> (u16, String) {
    let go = || -> io::Result<(u16, String)> {
        let mut tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let host = host.map_or_else(|| addr.to_string(), str::to_string);
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        tcp.take(1 << 20).read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |x| x.1.to_string());
        Ok((status, body))
    };
    go().unwrap_or((0, String::new()))
}
