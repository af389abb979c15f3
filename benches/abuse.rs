//! Abuse benchmark: a real `idol serve` (the release binary, the real model and voice, a temporary
//! home, a free loopback port) driven with N generated hostile messages of every class a client can
//! send, then a report of what went wrong: crashes (the server process died; it is restarted and the
//! run goes on), hangs (`/healthz` or a WebSocket ping not answered within 5 s), panics (its stderr),
//! its peak resident memory (`VmHWM`), and answers and closes that differ from what
//! `docs/protocol.md` and RFC 6455 promise.
//!
//! `cargo bench --bench abuse -- [N] [seed] [bomb_hours] [only]` (defaults 2000, 1, 2; `only`: one
//! of `text`, `conn`, `slow`, `bombs` runs that part alone). Classes:
//!
//! - text messages, sent in batches of 14 on fresh connections (under the rate limit's burst), each
//!   followed by a ping sentinel: malformed JSON, wrong types, unknown types and fields, strings
//!   near the 16 KiB limit, duplicate keys, huge numbers. Expected: one `ack`/`error`/`pong` each
//!   (none for `stats`), error codes from the documented list, the connection stays open;
//!   duplicate keys must be refused.
//! - one connection each: messages over 1 MiB (close 1009), text that is not UTF-8 (1007), raw
//!   WebSocket protocol violations (1002; 1007 for a close reason that is not UTF-8), upgrades from
//!   another site's `Origin` or with a foreign `Host` (refused), abrupt disconnects mid-frame.
//! - slow clients: connections that subscribe and never read while the idol speaks (closed with
//!   4008 and its reason, which they read once they catch up).
//! - resource bombs: a `say` of `bomb_hours` of `<break 60s/>`, a `perform` script of ten days of
//!   gaps, scripts and `set`s with huge numbers. Expected: refused with an `error`, memory bounded.
//!
//! Exits non-zero when the server crashed. Everything runs on loopback, bounded in count and time.

mod common;

use common::raw::{self, Conn, Upgrade};
use common::{Idol, arg, temp_home};
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const LIMIT: usize = 16 * 1024;
const MAX_WS: usize = 1 << 20;
const T: Duration = Duration::from_secs(10);
const CODES: [&str; 11] = [
    "bad_json",
    "bad_message",
    "unknown_type",
    "too_large",
    "rate_limited",
    "unauthorized",
    "bad_rig",
    "binary",
    "stage",
    "bad_script",
    "unsupported",
];

#[derive(Default)]
struct Tally {
    sent: usize,
    wrong: usize,
    examples: Vec<String>,
}

struct Run {
    home: tempfile::TempDir,
    idol: Idol,
    tallies: BTreeMap<&'static str, Tally>,
    crashes: Vec<String>,
    hangs: Vec<String>,
    panics: Vec<String>,
    peak_mib: f64,
    base_mib: f64,
    bomb_peaks: Vec<String>,
}

impl Run {
    fn tally(&mut self, class: &'static str, ok: bool, what: impl FnOnce() -> String) {
        let t = self.tallies.entry(class).or_default();
        t.sent += 1;
        if !ok {
            t.wrong += 1;
            if t.examples.len() < 3 {
                let mut w = what();
                if w.len() > 200 {
                    w.truncate(w.floor_char_boundary(200));
                    w.push('…');
                }
                t.examples.push(w);
            }
        }
    }

    fn sample_memory(&mut self) {
        if let Some(p) = self.idol.peak_mib() {
            self.peak_mib = self.peak_mib.max(p);
        }
    }

    /// After a class or a bomb: did the server die or stop answering? Restart it if so.
    fn check(&mut self, after: &str) {
        self.sample_memory();
        if let Some(status) = self.idol.exited() {
            self.crashes
                .push(format!("{after}: the server exited ({status})"));
            self.harvest_panics();
            self.restart();
            return;
        }
        if !self.idol.responsive(Duration::from_secs(5)) {
            self.hangs.push(format!("{after}: no answer within 5 s"));
            // Give it a while longer before starting over.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                if self.idol.responsive(Duration::from_secs(5)) {
                    return;
                }
            }
            self.harvest_panics();
            self.restart();
        }
    }

    fn harvest_panics(&mut self) {
        for p in self.idol.panics() {
            if !self.panics.contains(&p) {
                self.panics.push(p);
            }
        }
    }

    fn restart(&mut self) {
        self.idol =
            Idol::start(self.home.path(), Duration::from_secs(120)).expect("the server restarts");
    }

    fn conn(&self) -> Option<Conn> {
        let mut c = raw::connect(self.idol.addr, &Upgrade::default(), T).ok()?;
        if !c.upgraded() {
            return None;
        }
        // Only replies: the stream itself is not what this client is here for.
        c.send_text(r#"{"type":"subscribe","streams":[]}"#).ok()?;
        c.until_text(|v| v["type"] == "ack").ok()??;
        Some(c)
    }
}

// ------------------------------------------------------------------------------------------------
// Generators.

fn any_value(r: &mut ChaCha8Rng, depth: u32) -> Value {
    match r.random_range(0..if depth > 2 { 7 } else { 9 }) {
        0 => Value::Null,
        1 => json!(r.random::<bool>()),
        2 => json!(r.random::<i64>()),
        3 => json!(r.random::<f64>() * 10f64.powi(r.random_range(-300..300))),
        4 => json!(random_string(r, 12)),
        5 => json!(["audio", "frames", "json", "vrm", "happy", "", "f32"][r.random_range(0..7)]),
        6 => json!(u64::MAX),
        7 => Value::Array(
            (0..r.random_range(0..4))
                .map(|_| any_value(r, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..r.random_range(0..4) {
                m.insert(random_string(r, 6), any_value(r, depth + 1));
            }
            Value::Object(m)
        }
    }
}

fn random_string(r: &mut ChaCha8Rng, max: usize) -> String {
    let n = r.random_range(0..=max);
    (0..n)
        .map(|_| match r.random_range(0..4) {
            0 => char::from(r.random_range(b'a'..=b'z')),
            1 => ['"', '\\', '{', '}', '<', '>', '[', ']', '\n', '\0'][r.random_range(0..10)],
            2 => char::from_u32(r.random_range(0x80..0x2_FFFF)).unwrap_or('\u{FFFD}'),
            _ => ' ',
        })
        .collect()
}

const TYPES: [&str; 8] = [
    "subscribe",
    "chat",
    "say",
    "interrupt",
    "set",
    "ping",
    "stats",
    "perform",
];
const FIELDS: [&str; 13] = [
    "id",
    "token",
    "text",
    "user",
    "emotion",
    "intensity",
    "look_at",
    "streams",
    "audio",
    "frames",
    "rig",
    "stats",
    "script",
];

/// A message that must not make the idol speak (a valid `say`/`chat`/`perform` would run the real
/// model and voice): control types always carry something that refuses them.
fn harmless(v: &mut Value) {
    let t = v["type"].as_str().unwrap_or_default().to_string();
    if matches!(t.as_str(), "say" | "chat" | "perform") {
        let valid = v
            .get("text")
            .is_some_and(|x| x.as_str().is_some_and(|s| !s.trim().is_empty()))
            || v.get("script").is_some_and(Value::is_string);
        if valid {
            v["unknown_field"] = json!(1);
        }
    }
}

/// (class, text) of a message-class message.
fn text_message(r: &mut ChaCha8Rng) -> (&'static str, String) {
    let base = |r: &mut ChaCha8Rng| {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), json!(TYPES[r.random_range(0..TYPES.len())]));
        for _ in 0..r.random_range(0..4) {
            m.insert(
                FIELDS[r.random_range(0..FIELDS.len())].into(),
                any_value(r, 0),
            );
        }
        let mut v = Value::Object(m);
        harmless(&mut v);
        v
    };
    match r.random_range(0..7) {
        0 => {
            // Malformed JSON: a message cut or spliced at a random byte.
            let s = base(r).to_string();
            let cut = s.floor_char_boundary(r.random_range(0..s.len()));
            let text = match r.random_range(0..3) {
                0 => s[..cut].to_string(),
                1 => format!("{}{}{}", &s[..cut], random_string(r, 3), &s[cut..]),
                _ => [
                    "",
                    "null",
                    "[]",
                    "\"ping\"",
                    "{\"type\":\"ping\",\"id\":1e999}",
                    "{{{{",
                ][r.random_range(0..6)]
                .to_string(),
            };
            ("malformed JSON", text)
        }
        1 => ("wrong types", base(r).to_string()),
        2 => {
            let mut v = base(r);
            if r.random::<bool>() {
                v["type"] = json!(random_string(r, 10));
            } else {
                v[random_string(r, 8)] = any_value(r, 1);
            }
            harmless(&mut v);
            ("unknown types and fields", v.to_string())
        }
        3 => {
            // A pong with an id of about the limit's size: read at or under 16 KiB, too_large over.
            let empty = json!({"type": "ping", "id": ""}).to_string().len();
            let len = LIMIT - 64 + r.random_range(0..128);
            let id = "x".repeat(len - empty);
            (
                "strings at the size limit",
                json!({"type": "ping", "id": id}).to_string(),
            )
        }
        4 => {
            let (a, b) = [
                (r#""type":"ping""#, r#""type":"interrupt""#),
                (r#""type":"ping""#, r#""type":"subscribe""#),
                (r#""type":"ping","id":1"#, r#""id":2"#),
                (r#""type":"subscribe","rig":"vrm""#, r#""rig":"live2d""#),
            ][r.random_range(0..4)];
            ("duplicate keys", format!("{{{a},{b}}}"))
        }
        5 => {
            let v = [
                json!({"type": "set", "intensity": 1e308, "emotion": "happy"}),
                json!({"type": "set", "look_at": [1e308, -1e308]}),
                json!({"type": "set", "look_at": [0.1, 0.1, 0.1]}),
                json!({"type": "ping", "id": u64::MAX}),
                json!({"type": "perform", "script": "[script]\nseed = 18446744073709551615\n[[line]]\ntext = \"x\"\n"}),
                json!({"type": "perform", "script": "[[line]]\ntext = \"x\"\ngap = 1e300\n"}),
                json!({"type": "perform", "script": "[script]\nfps = 4000000000\n[[line]]\ntext = \"x\"\n"}),
                json!({"type": "perform", "script": "[[line]]\ntext = \"x\"\nrate = 1e30\n"}),
            ][r.random_range(0..8)]
            .clone();
            ("huge numbers", v.to_string())
        }
        _ => {
            // Nesting deep enough to trouble a recursive parser.
            let d = r.random_range(100..5000);
            (
                "malformed JSON",
                format!("{}1{}", "[".repeat(d), "]".repeat(d)),
            )
        }
    }
}

/// Classes whose every message must be refused with an `error`.
fn must_refuse(class: &str) -> bool {
    class == "duplicate keys"
}

fn text_batches(run: &mut Run, r: &mut ChaCha8Rng, n: usize) {
    let mut left = n;
    let mut batch_no = 0;
    while left > 0 {
        batch_no += 1;
        // A subscribe and 14 (message, sentinel) pairs: 29 requests, under the burst of 30.
        let k = left.min(14);
        left -= k;
        let msgs: Vec<(&'static str, String)> = (0..k).map(|_| text_message(r)).collect();
        let Some(mut c) = run.conn() else {
            run.check("connecting for a batch");
            continue;
        };
        for (class, text) in msgs {
            let sentinel = format!("s{batch_no}");
            let sent = c.send_text(&text).is_ok()
                && c.send_text(&json!({"type": "ping", "id": sentinel}).to_string())
                    .is_ok();
            let mut replies = vec![];
            let mut closed = None;
            let deadline = Instant::now() + T;
            if sent {
                loop {
                    if Instant::now() > deadline {
                        closed = Some(Some((0, "no pong in time".to_string())));
                        break;
                    }
                    match c.read_frame() {
                        Ok(f) if f.opcode == raw::TEXT => {
                            let Ok(v) = serde_json::from_slice::<Value>(&f.payload) else {
                                break;
                            };
                            if v["id"] == json!(sentinel) && v["type"] == "pong" {
                                break;
                            }
                            if matches!(v["type"].as_str(), Some("ack" | "error" | "pong"))
                                && v["code"] != "stage"
                            {
                                replies.push(v);
                            }
                        }
                        Ok(f) if f.opcode == raw::CLOSE => {
                            closed = Some(f.close());
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            closed = Some(Some((0, format!("no answer: {e}"))));
                            break;
                        }
                    }
                }
            }
            let is_stats = serde_json::from_str::<Value>(&text).is_ok_and(|v| v["type"] == "stats");
            let codes_ok = replies.iter().all(|v| {
                v["type"] != "error" || CODES.contains(&v["code"].as_str().unwrap_or_default())
            });
            let count_ok = replies.len() == 1 || (is_stats && replies.len() <= 1);
            let refused = replies.len() == 1 && replies[0]["type"] == "error";
            let ok = sent
                && closed.is_none()
                && codes_ok
                && count_ok
                && (!must_refuse(class) || refused);
            run.tally(class, ok, || {
                format!(
                    "{text} -> {replies:?}{}",
                    match &closed {
                        Some(c) => format!(" then closed {c:?}"),
                        None => String::new(),
                    }
                )
            });
            if closed.is_some() {
                break;
            }
        }
        if batch_no % 10 == 0 {
            run.check("text messages");
        }
    }
    run.check("text messages");
}

/// One connection per case: a frame sequence and the close codes that are right.
fn one_connection_cases(run: &mut Run, r: &mut ChaCha8Rng, n: usize) {
    let m = Some([9, 8, 7, 6]);
    let ping = br#"{"type":"ping"}"#;
    for i in 0..n {
        let (class, frames, expect): (&'static str, Vec<Vec<u8>>, &[u16]) = match i % 12 {
            0 => (
                "over 1 MiB",
                // Announced in the header (the server refuses there), with a little of the payload.
                vec![
                    raw::header(raw::TEXT, (MAX_WS + 1 + r.random_range(0..1 << 30)) as u64),
                    vec![b' '; 64],
                ],
                &[1009],
            ),
            1 => (
                "text not UTF-8",
                vec![raw::encode(
                    true,
                    0,
                    raw::TEXT,
                    m,
                    b"{\"type\":\"say\",\"text\":\"\xff\xfe\"}",
                )],
                &[1007],
            ),
            2 => (
                "ws: unmasked frame",
                vec![raw::encode(true, 0, raw::TEXT, None, ping)],
                &[1002],
            ),
            3 => (
                "ws: reserved bits",
                vec![raw::encode(true, r.random_range(1..8), raw::TEXT, m, ping)],
                &[1002],
            ),
            4 => (
                "ws: reserved opcode",
                vec![raw::encode(
                    true,
                    0,
                    [3, 4, 5, 6, 7, 11, 12, 13, 14, 15][r.random_range(0..10)],
                    m,
                    b"x",
                )],
                &[1002],
            ),
            5 => (
                "ws: oversized ping",
                vec![raw::encode(
                    true,
                    0,
                    raw::PING,
                    m,
                    &vec![b'p'; r.random_range(126..2000)],
                )],
                &[1002],
            ),
            6 => (
                "ws: bad close code",
                vec![raw::encode(
                    true,
                    0,
                    raw::CLOSE,
                    m,
                    &raw::close_payload(
                        [0, 999, 1004, 1005, 1006, 1015, 2999, 5000][r.random_range(0..8)],
                        b"",
                    ),
                )],
                &[1002],
            ),
            7 => (
                "ws: close reason not UTF-8",
                vec![raw::encode(
                    true,
                    0,
                    raw::CLOSE,
                    m,
                    &raw::close_payload(1000, b"\xc3\x28"),
                )],
                &[1007, 1002],
            ),
            8 => (
                "ws: fragments",
                if r.random::<bool>() {
                    vec![raw::encode(true, 0, raw::CONT, m, b"x")]
                } else {
                    vec![
                        raw::encode(false, 0, raw::TEXT, m, b"{\"type\""),
                        raw::encode(true, 0, raw::TEXT, m, ping),
                    ]
                },
                &[1002],
            ),
            9 => (
                "ws: fragmented control",
                vec![raw::encode(false, 0, raw::PING, m, b"x")],
                &[1002],
            ),
            10 => ("abrupt disconnects", vec![], &[]),
            _ => ("hostile Origin / Host", vec![], &[]),
        };
        match class {
            "abrupt disconnects" => {
                // Half a frame, then the socket is dropped (a reset when linger is zero).
                let ok = match raw::connect(run.idol.addr, &Upgrade::default(), T) {
                    Ok(mut c) => {
                        let f =
                            raw::encode(true, 0, raw::TEXT, m, br#"{"type":"ping","id":"half"}"#);
                        let _ = c.send_raw(&f[..r.random_range(1..f.len())]);
                        let s = socket2::SockRef::from(c.stream.get_ref());
                        let _ = s.set_linger(Some(Duration::ZERO));
                        drop(c);
                        true
                    }
                    Err(_) => false,
                };
                run.tally(class, ok, || "could not connect".into());
            }
            "hostile Origin / Host" => {
                let origin = [
                    "https://evil.example",
                    "null",
                    "http://127.0.0.1.evil.example",
                    "http://localhost:1",
                ][r.random_range(0..4)];
                let foreign_host = r.random::<bool>();
                let host = format!("rebind.evil.example:{}", run.idol.addr.port());
                let up = if foreign_host {
                    Upgrade {
                        host: Some(&host),
                        ..Default::default()
                    }
                } else {
                    Upgrade {
                        origin: Some(origin),
                        ..Default::default()
                    }
                };
                // Refused at the upgrade, or control refused after it.
                let controlled = match raw::connect(run.idol.addr, &up, T) {
                    Ok(mut c) if c.upgraded() => {
                        let _ = c.send_text(r#"{"type":"subscribe","streams":[]}"#);
                        let _ = c.send_text(r#"{"type":"interrupt","id":"x"}"#);
                        matches!(c.until_text(|v| v["id"] == "x"), Ok(Some(v)) if v["type"] == "ack")
                    }
                    _ => false,
                };
                let metrics =
                    foreign_host && raw::http_get(run.idol.addr, "/metrics", Some(&host), T) == 200;
                run.tally(class, !controlled && !metrics, || {
                    if foreign_host {
                        format!("Host {host}: control {controlled}, /metrics read {metrics}")
                    } else {
                        format!("Origin {origin}: control accepted")
                    }
                });
            }
            _ => {
                let got = match raw::connect(run.idol.addr, &Upgrade::default(), T) {
                    Ok(mut c) if c.upgraded() => {
                        for f in &frames {
                            if c.send_raw(f).is_err() {
                                break;
                            }
                        }
                        c.until_close()
                            .unwrap_or_else(|e| Some((0, format!("read: {e}"))))
                    }
                    _ => Some((0, "no upgrade".into())),
                };
                let ok = got.as_ref().is_some_and(|(c, _)| expect.contains(c));
                run.tally(class, ok, || {
                    format!("expected close {expect:?}, got {got:?}")
                });
            }
        }
        if i % 12 == 11 {
            run.check("one-connection cases");
        }
    }
    run.check("one-connection cases");
}

/// Clients that subscribe to everything and never read while the idol speaks; after `stall`, each
/// reads what is waiting for it: it should end with close 4008.
fn slow_clients(run: &mut Run, clients: usize, stall: Duration) {
    let mut stuck = vec![];
    for _ in 0..clients {
        if let Ok(c) = raw::connect(run.idol.addr, &Upgrade::default(), T)
            && c.upgraded()
        {
            // A small receive buffer, like a phone on a bad link.
            let _ = socket2::SockRef::from(c.stream.get_ref()).set_recv_buffer_size(4096);
            stuck.push(c);
        }
    }
    if let Some(mut ctl) = run.conn() {
        let say = json!({"type": "say", "id": "talk", "text": "Let me tell you a story about a little robot who wanted to sing on a big stage, and how she practised every single night until the whole town came to listen."});
        let _ = ctl.send_text(&say.to_string());
        let _ = ctl.until_text(|v| v["id"] == "talk");
        std::thread::sleep(stall);
        let _ = ctl.send_text(r#"{"type":"interrupt","id":"stop"}"#);
        let _ = ctl.until_text(|v| v["id"] == "stop");
    }
    // They all resume at once, as clients catching up after a stall do. Read one after another (as
    // this bench did before), the later ones resumed 20-30 s after their stall, against the server's
    // 30 s linger and a TCP window shut that long (probed at growing intervals), and most missed
    // their close although the server had sent 4008 to every one (traced in `conn::write_loop`).
    let reading = Instant::now();
    let readers: Vec<_> = stuck
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                // every frame waiting for it, then the close (what it read says where a failure came)
                let (mut frames, mut bytes) = (0usize, 0usize);
                let got = loop {
                    match c.read_frame() {
                        Ok(f) if f.opcode == raw::CLOSE => break f.close(),
                        Ok(f) => {
                            frames += 1;
                            bytes += f.payload.len();
                        }
                        Err(e) => {
                            break Some((
                                0,
                                match e.kind() {
                                    std::io::ErrorKind::UnexpectedEof
                                    | std::io::ErrorKind::ConnectionReset => {
                                        format!("connection ended: {e}")
                                    }
                                    _ => format!("read: {e}"),
                                },
                            ));
                        }
                    }
                };
                (got, frames, bytes, reading.elapsed())
            })
        })
        .collect();
    for (i, r) in readers.into_iter().enumerate() {
        let (got, frames, bytes, when) = r.join().expect("a reader thread");
        run.tally(
            "slow clients",
            got.as_ref().is_some_and(|(c, _)| *c == 4008),
            || {
                format!(
                    "stalled {stall:?}, client {i}: {frames} frames ({bytes} bytes), then \
                     {got:?} {:.1} s after resuming, instead of close 4008",
                    when.as_secs_f64()
                )
            },
        );
    }
    run.check("slow clients");
}

/// The resource bombs, one at a time, each followed by an `interrupt`; the server's peak memory is
/// sampled while it works on each.
fn bombs(run: &mut Run, rounds: usize, bomb_hours: f64) {
    let breaks = ((bomb_hours * 60.0).round() as usize).clamp(1, (LIMIT - 200) / 13);
    // Inside one clause (breaks with no words after them would be dropped with their clause).
    let say =
        json!({"type": "say", "text": format!("Start {} and end.", "<break 60s/>".repeat(breaks))});
    let mut days = String::new();
    for _ in 0..10 {
        days.push_str("[[line]]\ntext = \"Hi.\"\ngap = 86400\n");
    }
    let perform = json!({"type": "perform", "script": days});
    let cases: [(&'static str, Value, String); 2] = [
        (
            "bomb: say of one-minute breaks",
            say,
            format!("{breaks} breaks ({:.1} h)", breaks as f64 / 60.0),
        ),
        (
            "bomb: perform with ten days of gaps",
            perform,
            "10 lines, gap = 86400".to_string(),
        ),
    ];
    for round in 0..rounds {
        for (class, msg, what) in &cases {
            let before = run.idol.rss_mib().unwrap_or(0.0);
            let Some(mut c) = run.conn() else {
                run.check(class);
                continue;
            };
            // This connection watches the state stream (when the bomb starts playing).
            let _ = c.send_text(r#"{"type":"subscribe","id":"st","streams":["state"]}"#);
            let _ = c.until_text(|v| v["id"] == "st");
            let mut msg = msg.clone();
            msg["id"] = json!(format!("bomb{round}"));
            let _ = c.send_text(&msg.to_string());
            let reply = c.until_text(|v| v["id"] == msg["id"]).ok().flatten();
            let refused = reply.as_ref().is_some_and(|v| v["type"] == "error");
            let utt = reply.as_ref().and_then(|v| v["utterance"].as_u64());
            // Read the connection on a thread (the main loop samples memory meanwhile).
            let mut writer = c.stream.get_ref().try_clone().ok();
            let (tx, rx) = std::sync::mpsc::channel::<Value>();
            let reader = std::thread::spawn(move || {
                while let Ok(Some(v)) = c.until_text(|_| true) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            });
            // Watch the memory while it works (or dies): up to 60 s for it to start speaking (a
            // warm-up or a render may come first), then until the memory has not grown for 10 s.
            let mut peak = before;
            let t = Instant::now();
            let mut grew = Instant::now();
            let mut speaking = false;
            let mut stage_error = None;
            let watch = Duration::from_secs(if refused { 1 } else { 90 });
            while t.elapsed() < watch {
                while let Ok(v) = rx.try_recv() {
                    if v["utterance"].as_u64() == utt && utt.is_some() {
                        speaking |= v["state"] == "speaking";
                        if v["type"] == "error" {
                            stage_error = Some(v["message"].to_string());
                        }
                    }
                }
                match run.idol.rss_mib() {
                    Some(m) if m > peak + 1.0 => {
                        peak = m;
                        grew = Instant::now();
                    }
                    Some(_) => {}
                    None => break,
                }
                let settled =
                    (speaking || stage_error.is_some() || t.elapsed() > Duration::from_secs(60))
                        && grew.elapsed() > Duration::from_secs(10);
                if refused || settled {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(w) = writer.as_mut() {
                use std::io::Write;
                let _ = w.write_all(&raw::encode(
                    true,
                    0,
                    raw::TEXT,
                    Some([1, 2, 3, 4]),
                    br#"{"type":"interrupt","id":"after-bomb"}"#,
                ));
                let _ = w.write_all(&raw::encode(
                    true,
                    0,
                    raw::CLOSE,
                    Some([1, 2, 3, 4]),
                    &raw::close_payload(1000, b""),
                ));
                let _ = w.shutdown(std::net::Shutdown::Both);
            }
            let _ = reader.join();
            // An accepted bomb may still be working (a render): give it a while to finish or die.
            let t = Instant::now();
            while !refused && t.elapsed() < Duration::from_secs(30) && run.idol.exited().is_none() {
                if let Some(m) = run.idol.rss_mib() {
                    peak = peak.max(m);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let crashed_before = run.crashes.len();
            run.check(class);
            let crashed = run.crashes.len() > crashed_before;
            let outcome = match (refused, &stage_error) {
                (true, _) => "refused".to_string(),
                (false, Some(e)) => format!("accepted, then failed: {e}"),
                (false, None) if speaking => "accepted and played".to_string(),
                (false, None) => "accepted".to_string(),
            };
            run.bomb_peaks.push(format!(
                "{class} [{what}]: {outcome}; RSS {before:.0} -> peak {peak:.0} MiB{}",
                if crashed { "; the server crashed" } else { "" }
            ));
            run.tally(class, refused && !crashed, || {
                format!("{what}: reply {reply:?}, peak RSS {peak:.0} MiB, crashed {crashed}")
            });
        }
    }
}

fn main() {
    let n: usize = arg(0, 2000);
    let seed: u64 = arg(1, 1);
    let bomb_hours: f64 = arg(2, 2.0);
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    println!(
        "abuse: {n} hostile messages, seed {seed}, bombs of {bomb_hours} h; load average at start {}",
        common::load_average()
    );
    let home = temp_home("");
    let t0 = Instant::now();
    let idol = Idol::start(home.path(), Duration::from_secs(120)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    println!("server up in {:.1} s", t0.elapsed().as_secs_f64());
    let base_mib = idol.rss_mib().unwrap_or(0.0);
    let mut run = Run {
        home,
        idol,
        tallies: BTreeMap::new(),
        crashes: vec![],
        hangs: vec![],
        panics: vec![],
        peak_mib: 0.0,
        base_mib,
        bomb_peaks: vec![],
    };
    // Shares of N: most are text messages (cheap), one-connection cases next, a few slow clients,
    // and the bombs (each costs seconds and, before budgets, memory).
    let per_conn = (n / 8).max(12);
    let slow = (n / 200).clamp(4, 40);
    let rounds = (n / 5000).clamp(1, 3);
    let text = n.saturating_sub(per_conn + slow + 2 * rounds);
    let only: String = arg(3, String::new());
    let part = |p: &str| only.is_empty() || only == p;
    let t = Instant::now();
    if part("text") {
        text_batches(&mut run, &mut r, text);
    }
    if part("conn") {
        one_connection_cases(&mut run, &mut r, per_conn);
    }
    if part("slow") {
        slow_clients(&mut run, slow, Duration::from_secs(10));
    }
    if part("bombs") {
        bombs(&mut run, rounds, bomb_hours);
    }
    run.sample_memory();
    run.harvest_panics();
    let secs = t.elapsed().as_secs_f64();

    let sent: usize = run.tallies.values().map(|t| t.sent).sum();
    let wrong: usize = run.tallies.values().map(|t| t.wrong).sum();
    println!(
        "\n{sent} hostile messages in {secs:.0} s; server at rest {:.0} MiB",
        run.base_mib
    );
    println!("{:<38} {:>7} {:>7}", "class", "sent", "wrong");
    for (class, t) in &run.tallies {
        println!("{class:<38} {:>7} {:>7}", t.sent, t.wrong);
        for e in &t.examples {
            println!("      e.g. {e}");
        }
    }
    println!("\nbombs:");
    for b in &run.bomb_peaks {
        println!("  {b}");
    }
    println!("\ncrashes: {}", run.crashes.len());
    for c in &run.crashes {
        println!("  {c}");
    }
    println!("hangs:   {}", run.hangs.len());
    for h in &run.hangs {
        println!("  {h}");
    }
    println!("panics:  {}", run.panics.len());
    for p in &run.panics {
        println!("  {p}");
    }
    println!(
        "peak RSS of the server: {:.0} MiB (goal: <= 600 MB under any single message)",
        run.peak_mib
    );
    println!("wrong answers and closes: {wrong} of {sent}");
    let crashed = !run.crashes.is_empty();
    let _ = run.idol.stop();
    // The temporary home goes before the exit (`exit` runs no destructors).
    drop(run.home);
    if crashed {
        std::process::exit(1);
    }
}
