//! Property ("fuzz") tests for everything idol reads from outside: the stream protocol (as parsed by a
//! live server, and the raw WebSocket layer under it), scripts, persona cards (TOML, Character Card
//! JSON, PNG, CHARX), phoneme label files (TextGrid, HTK .lab, JSON timelines), audio file headers
//! (WAV, MP3) and voice configs (`.onnx.json`). Inputs are generated (proptest), mostly by mutating the
//! real files in `tests/data`, `personas/` and `voices/` so the parsers get past their first check.
//!
//! The properties are about classes, not single cases: never a panic; a refusal is a typed error (for
//! the server: an `error` with a documented code, and the connection stays); an accepted input is
//! within sane bounds (sample rates, durations); one message cannot take the server down or stall it.
//!
//! Case counts are small (a few seconds per test on two cores) and the seed is fixed, so a run is
//! repeatable; for a long local hunt, `PROPTEST_CASES=5000 IDOL_FUZZ_RANDOM=1 cargo test --test
//! tests fuzz::` (a failure prints the shrunk input). A test marked `#[ignore = "defect N of
//! issue 15 …"]` reproduces a known defect on the code it was written against: it is committed so
//! the fix can un-ignore it.

#[path = "../benches/common/raw.rs"]
mod raw;

use idol::perform::testing::{JawFace, ScriptedGenerator, ToneVoice};
use idol::perform::{PerformConfig, SimpleSegmenter, Stages};
use idol::server::protocol::{self, Binary, ClientMsg, parse_binary};
use idol::server::{ConnPolicy, Server, ServerOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRng, TestRunner};
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A runner for `default` cases (`PROPTEST_CASES` overrides), from a fixed seed so a test run is
/// repeatable; `IDOL_FUZZ_RANDOM=1` draws a new seed each run (for a longer hunt).
fn fuzzer(default: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("IDOL_FUZZ_RANDOM").is_some() {
        TestRunner::new(config)
    } else {
        let rng = TestRng::deterministic_rng(config.rng_algorithm);
        TestRunner::new_with_rng(config, rng)
    }
}

/// The error codes docs/protocol.md documents.
const ERROR_CODES: [&str; 11] = [
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

// ---------------------------------------------------------------------------------------------
// Generators shared by several properties.

/// Any JSON value, nested a little: the leaves include the awkward ones (huge and negative
/// numbers, floats, empty and non-ASCII strings).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            any::<f64>(),
            Just(1e308),
            Just(-0.0),
            Just(f64::MIN_POSITIVE)
        ]
        .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,24}".prop_map(Value::String),
        prop_oneof![
            Just("audio"),
            Just("frames"),
            Just("json"),
            Just("f32"),
            Just("s16"),
            Just("vrm"),
            Just("happy"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names a client message may carry, and a few it may not.
const FIELDS: [&str; 17] = [
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
    "Type",
    "",
    "text ",
    "extra",
];

/// A JSON object shaped like a client message: a `type` that is usually one of the real ones (or
/// missing, mistyped, wrong case, unknown), and a random set of fields with values of any type.
fn message_object() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        4 => prop::sample::select(protocol::CLIENT_TYPES.to_vec()).prop_map(|t| json!(t)),
        1 => prop_oneof![
            Just(json!("PING")),
            Just(json!("dance")),
            Just(json!("")),
            Just(json!(7)),
            Just(json!(null)),
            Just(json!(["ping"])),
            Just(json!({"type": "ping"})),
        ],
    ];
    (
        prop::option::weighted(0.95, kind),
        prop::collection::vec((prop::sample::select(FIELDS.to_vec()), json_value()), 0..5),
        // Well-typed values for the real fields, so more messages get past the type checks.
        prop::collection::vec(
            prop_oneof![
                "\\PC{1,30}".prop_map(|t| ("text", json!(t))),
                (-2.0f64..2.0).prop_map(|x| ("intensity", json!(x))),
                (-3.0f64..3.0, -3.0f64..3.0).prop_map(|(a, b)| ("look_at", json!([a, b]))),
                Just(("streams", json!(["audio", "state"]))),
                Just(("emotion", json!("sad"))),
                Just(("rig", json!("live2d"))),
                Just(("stats", json!({"underruns": 0}))),
                Just(("script", json!("[[line]]\ntext = \"Hi.\"\n"))),
                any::<u32>().prop_map(|i| ("id", json!(i))),
            ],
            0..3,
        ),
    )
        .prop_map(|(kind, fields, typed)| {
            let mut m = serde_json::Map::new();
            if let Some(k) = kind {
                m.insert("type".into(), k);
            }
            for (k, v) in fields.into_iter().chain(typed) {
                m.insert(k.into(), v);
            }
            Value::Object(m)
        })
}

/// One hostile text message: a message-shaped object, maybe mangled at the byte level (cut,
/// spliced, a byte replaced), or any text at all.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => message_object().prop_map(|v| v.to_string()),
        2 => (message_object(), any::<prop::sample::Index>(), "\\PC{0,3}").prop_map(|(v, at, ins)| {
            let s = v.to_string();
            let cut = floor_char(&s, at.index(s.len() + 1));
            format!("{}{ins}{}", &s[..cut], &s[cut..])
        }),
        2 => (message_object(), any::<prop::sample::Index>()).prop_map(|(v, at)| {
            let s = v.to_string();
            s[..floor_char(&s, at.index(s.len() + 1))].to_string()
        }),
        1 => "\\PC{0,64}",
        1 => prop_oneof![
            Just("{}".to_string()),
            Just("[]".to_string()),
            Just("null".to_string()),
            Just("\"ping\"".to_string()),
            Just("{\"type\":\"ping\"".to_string()),
            Just("{\"type\":\"ping\",\"id\":1e999}".to_string()),
            Just(format!("{}1{}", "[".repeat(200), "]".repeat(200))),
            Just("{\"type\":\"set\",\"look_at\":[1e40,0]}".to_string()),
        ],
    ]
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

// ---------------------------------------------------------------------------------------------
// The stream protocol, pure functions.

#[test]
fn protocol_parsers_never_panic_on_any_bytes() {
    let mut runner = fuzzer(2000);
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..200), |bytes| {
            // The binary message parser (clients written in Rust use it).
            if let Some(b) = parse_binary(&bytes) {
                // Whatever it accepts is self-consistent.
                match b {
                    Binary::Audio { pcm, .. } => prop_assert!(pcm.len() * 2 + 24 <= bytes.len()),
                    Binary::Frame { weights, .. } => {
                        prop_assert!(weights.len() * 4 + 24 + 32 <= bytes.len())
                    }
                }
            }
            // Client messages from any bytes that are text.
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = serde_json::from_str::<ClientMsg>(s);
            }
            Ok(())
        })
        .unwrap();
    let mut runner = fuzzer(2000);
    runner
        .run(&hostile_text(), |text| {
            if let Ok(m) = serde_json::from_str::<ClientMsg>(&text) {
                // What parses has a type the server knows.
                let _ = (m.id(), m.token(), m.is_control());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn binary_headers_with_any_counts_parse_or_refuse() {
    // A real header with every field replaced: kind, encoding, header length, counts up to u32::MAX,
    // and bodies shorter or longer than the count says.
    let mut runner = fuzzer(2000);
    runner
        .run(
            &(
                0u8..4,
                0u8..4,
                prop_oneof![Just(24u16), any::<u16>()],
                prop_oneof![0u32..64, any::<u32>()],
                0usize..300,
            ),
            |(kind, enc, hl, n, body)| {
                let mut b = vec![kind, enc];
                b.extend_from_slice(&hl.to_le_bytes());
                b.extend_from_slice(&1u32.to_le_bytes());
                b.extend_from_slice(&42u64.to_le_bytes());
                b.extend_from_slice(&n.to_le_bytes());
                b.extend_from_slice(&0u32.to_le_bytes());
                b.extend(std::iter::repeat_n(0x3c, body));
                let _ = parse_binary(&b);
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The stream protocol on a live server (fake stages: a tone voice and a jaw face; this tests the
// server, not the models).

/// A server on a free loopback port with the fake stages and the default limits (the rate limit is
/// lifted when `unlimited`, so a property can send thousands of messages on one connection).
fn fake_server(unlimited: bool) -> Server {
    let rate = 16_000;
    let stages = Stages {
        generator: Box::new(ScriptedGenerator::new(["Hello there, chat."])),
        segmenter: Box::new(SimpleSegmenter::new()),
        voice: Box::new(ToneVoice::new(rate)),
        face: Box::new(JawFace::arkit(rate, 60)),
        persona: idol::perform::testing::conversation(),
    };
    let mut policy = ConnPolicy::default();
    if unlimited {
        policy.rate_per_sec = 1e9;
        policy.burst = 1e9;
    }
    Server::start(
        stages,
        PerformConfig::default(),
        ServerOptions {
            bind: [127, 0, 0, 1].into(),
            port: 0,
            policy,
            ..ServerOptions::default()
        },
    )
    .expect("the server starts on loopback")
}

const T: Duration = Duration::from_secs(20);

fn open(addr: SocketAddr) -> raw::Conn {
    let mut c = raw::connect(addr, &raw::Upgrade::default(), T).expect("connect");
    assert!(c.upgraded(), "upgrade refused: {}", c.head);
    let hello = c.until_text(|v| v["type"] == "hello").expect("hello");
    assert!(hello.is_some(), "no hello");
    c
}

/// Send `text`, then a ping sentinel; the replies (`ack`, `error`, `pong`; stage errors of
/// utterances excluded) that came before the sentinel's pong.
fn exchange(c: &mut raw::Conn, text: &str, n: u64) -> Result<Vec<Value>, String> {
    c.send_text(text).map_err(|e| format!("send: {e}"))?;
    let sentinel = format!("sentinel-{n}");
    c.send_text(&json!({"type": "ping", "id": sentinel}).to_string())
        .map_err(|e| format!("send: {e}"))?;
    let mut replies = vec![];
    let deadline = std::time::Instant::now() + T;
    loop {
        if std::time::Instant::now() > deadline {
            return Err(format!("no pong for {text:?} within {T:?}"));
        }
        let f = c.read_frame().map_err(|e| format!("no answer: {e}"))?;
        match f.opcode {
            raw::TEXT => {
                let v: Value = serde_json::from_slice(&f.payload)
                    .map_err(|e| format!("the server sent text that is not JSON: {e}"))?;
                if v["type"] == "pong" && v["id"] == json!(sentinel) {
                    return Ok(replies);
                }
                let reply = matches!(v["type"].as_str(), Some("ack" | "error" | "pong"));
                if reply && v["code"] != "stage" {
                    replies.push(v);
                }
            }
            raw::CLOSE => return Err(format!("the server closed: {:?}", f.close())),
            _ => {}
        }
    }
}

#[test]
fn hostile_messages_get_typed_errors_and_the_connection_stays() {
    let server = fake_server(true);
    let addr = server.addr();
    let c = RefCell::new(open(addr));
    let n = Cell::new(0u64);
    let mut runner = fuzzer(400);
    runner
        .run(&hostile_text(), |text| {
            n.set(n.get() + 1);
            let replies =
                exchange(&mut c.borrow_mut(), &text, n.get()).map_err(TestCaseError::fail)?;
            prop_assert!(replies.len() <= 1, "{text:?} got {replies:?}");
            let stats = serde_json::from_str::<Value>(&text)
                .is_ok_and(|v| v["type"] == "stats" && v.as_object().is_some());
            if !stats {
                prop_assert_eq!(replies.len(), 1, "{:?} got no reply", text);
            }
            for r in &replies {
                if r["type"] == "error" {
                    let code = r["code"].as_str().unwrap_or_default();
                    prop_assert!(ERROR_CODES.contains(&code), "undocumented code in {r}");
                    prop_assert!(
                        r["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "an error without a message: {r}"
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(raw::http_get(addr, "/healthz", None, T), 200);
}

#[test]
fn messages_at_the_size_limit_are_read_or_refused_exactly() {
    let server = fake_server(true);
    let c = RefCell::new(open(server.addr()));
    let limit = ConnPolicy::default().max_message_bytes;
    let frame = |len: usize| {
        // `{"type":"stats","stats":"xx…"}` of exactly `len` bytes (stats get no reply when read).
        let empty = json!({"type": "stats", "stats": ""}).to_string().len();
        json!({"type": "stats", "stats": "x".repeat(len - empty)}).to_string()
    };
    let mut runner = fuzzer(24);
    let n = Cell::new(0u64);
    runner
        .run(&(limit - 8..limit + 8), |len| {
            n.set(n.get() + 1);
            let text = frame(len);
            prop_assert_eq!(text.len(), len);
            let replies =
                exchange(&mut c.borrow_mut(), &text, n.get()).map_err(TestCaseError::fail)?;
            if len <= limit {
                prop_assert!(replies.is_empty(), "{len} bytes: {replies:?}");
            } else {
                prop_assert_eq!(replies.len(), 1);
                prop_assert_eq!(&replies[0]["code"], "too_large");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn duplicate_keys_are_refused() {
    let server = fake_server(true);
    let c = RefCell::new(open(server.addr()));
    let n = Cell::new(0u64);
    let valid = prop_oneof![
        Just(json!({"type": "ping", "id": 1})),
        Just(json!({"type": "interrupt"})),
        Just(json!({"type": "set", "emotion": "happy"})),
        Just(json!({"type": "subscribe", "rig": "vrm"})),
        Just(json!({"type": "stats", "stats": {}})),
    ];
    let mut runner = fuzzer(40);
    runner
        .run(
            &(valid, any::<prop::sample::Index>(), json_value()),
            |(msg, which, dup)| {
                n.set(n.get() + 1);
                // The same object with one of its keys given a second time.
                let obj = msg.as_object().unwrap();
                let key = obj.keys().nth(which.index(obj.len())).unwrap().clone();
                let text = msg.to_string();
                let text = format!(
                    "{},{}:{}}}",
                    &text[..text.len() - 1],
                    json!(key),
                    if key == "type" { json!("chat") } else { dup }
                );
                let replies =
                    exchange(&mut c.borrow_mut(), &text, n.get()).map_err(TestCaseError::fail)?;
                prop_assert!(
                    replies.len() == 1 && replies[0]["type"] == "error",
                    "{text} was not refused: {replies:?}"
                );
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The WebSocket layer: raw frames a client library would never send.

/// A protocol violation and the close codes RFC 6455 allows in answer to it.
#[derive(Debug, Clone)]
enum Violation {
    Unmasked,
    ReservedBits(u8),
    ReservedOpcode(u8),
    BigControl { opcode: u8, len: usize },
    FragmentedControl,
    OrphanContinuation,
    UnfinishedThenText,
    CloseCode(u16),
    CloseReasonNotUtf8,
    CloseOneByte,
    TextNotUtf8,
    TooBig,
}

impl Violation {
    fn frames(&self) -> Vec<Vec<u8>> {
        let m = Some([1, 2, 3, 4]);
        let ping = br#"{"type":"ping"}"#;
        match self {
            Violation::Unmasked => vec![raw::encode(true, 0, raw::TEXT, None, ping)],
            Violation::ReservedBits(r) => vec![raw::encode(true, *r, raw::TEXT, m, ping)],
            Violation::ReservedOpcode(op) => vec![raw::encode(true, 0, *op, m, b"x")],
            Violation::BigControl { opcode, len } => {
                vec![raw::encode(true, 0, *opcode, m, &vec![b'a'; *len])]
            }
            Violation::FragmentedControl => vec![raw::encode(false, 0, raw::PING, m, b"x")],
            Violation::OrphanContinuation => vec![raw::encode(true, 0, raw::CONT, m, b"x")],
            Violation::UnfinishedThenText => vec![
                raw::encode(false, 0, raw::TEXT, m, b"{\"type\""),
                raw::encode(true, 0, raw::TEXT, m, ping),
            ],
            Violation::CloseCode(c) => {
                vec![raw::encode(
                    true,
                    0,
                    raw::CLOSE,
                    m,
                    &raw::close_payload(*c, b"bye"),
                )]
            }
            Violation::CloseReasonNotUtf8 => vec![raw::encode(
                true,
                0,
                raw::CLOSE,
                m,
                &raw::close_payload(1000, b"\xff\xfe bye"),
            )],
            Violation::CloseOneByte => vec![raw::encode(true, 0, raw::CLOSE, m, &[3])],
            Violation::TextNotUtf8 => {
                vec![raw::encode(true, 0, raw::TEXT, m, b"{\"a\":\"\xc3\x28\"}")]
            }
            // Announced, not sent: the server refuses on the header (sending the megabyte could
            // make its close reset the connection before the close frame is read).
            Violation::TooBig => vec![
                raw::header(raw::TEXT, idol::server::MAX_WS_MESSAGE as u64 + 1),
                b"  ".to_vec(),
            ],
        }
    }

    /// The close codes a correct server answers with.
    fn expected(&self) -> &'static [u16] {
        match self {
            Violation::TextNotUtf8 | Violation::CloseReasonNotUtf8 => &[1007],
            Violation::TooBig => &[1009],
            _ => &[1002],
        }
    }
}

fn violation() -> impl Strategy<Value = Violation> {
    prop_oneof![
        Just(Violation::Unmasked),
        (1u8..8).prop_map(Violation::ReservedBits),
        prop_oneof![3u8..8, 0xBu8..0x10].prop_map(Violation::ReservedOpcode),
        (
            prop::sample::select(vec![raw::PING, raw::PONG, raw::CLOSE]),
            126usize..2000
        )
            .prop_map(|(opcode, len)| Violation::BigControl { opcode, len }),
        Just(Violation::FragmentedControl),
        Just(Violation::OrphanContinuation),
        Just(Violation::UnfinishedThenText),
        prop_oneof![0u16..1000, 1004u16..1007, 1015u16..3000, 5000u16..=u16::MAX]
            .prop_map(Violation::CloseCode),
        Just(Violation::CloseReasonNotUtf8),
        Just(Violation::CloseOneByte),
        Just(Violation::TextNotUtf8),
    ]
}

/// Send the violation on a fresh connection; the close code the server answered with (`None`: it
/// dropped the connection without a close frame).
fn provoke(
    addr: SocketAddr,
    v: &Violation,
    within: Duration,
) -> Result<Option<(u16, String)>, String> {
    let mut c = raw::connect(addr, &raw::Upgrade::default(), within).map_err(|e| e.to_string())?;
    if !c.upgraded() {
        return Err(format!("upgrade refused: {}", c.head));
    }
    for f in v.frames() {
        // The server may close before reading everything: a write error is an answer too.
        if c.send_raw(&f).is_err() {
            break;
        }
    }
    c.until_close().map_err(|e| format!("{v:?}: no close: {e}"))
}

#[test]
fn raw_protocol_violations_never_take_the_server_down() {
    let server = fake_server(false);
    let addr = server.addr();
    let mut runner = fuzzer(60);
    runner
        .run(&violation(), |v| {
            // Whatever the answer (or none: a connection left open is the next test's business).
            let _ = provoke(addr, &v, Duration::from_secs(3));
            // The server keeps serving everyone else.
            prop_assert_eq!(raw::http_get(addr, "/healthz", None, T), 200);
            Ok(())
        })
        .unwrap();
    // The limits that are right today stay right.
    assert_eq!(
        provoke(addr, &Violation::TextNotUtf8, T)
            .unwrap()
            .map(|c| c.0),
        Some(1007)
    );
    assert_eq!(
        provoke(addr, &Violation::TooBig, T).unwrap().map(|c| c.0),
        Some(1009)
    );
}

#[test]
fn raw_protocol_violations_are_answered_with_the_rfc_close_code() {
    let server = fake_server(false);
    let addr = server.addr();
    let mut runner = fuzzer(60);
    runner
        .run(&violation(), |v| {
            let got = provoke(addr, &v, Duration::from_secs(5)).map_err(TestCaseError::fail)?;
            let code = got.as_ref().map(|c| c.0);
            prop_assert!(
                code.is_some_and(|c| v.expected().contains(&c)),
                "{v:?}: expected close {:?}, got {got:?}",
                v.expected()
            );
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Browser-facing checks: Origin and Host.

/// Origins of other sites (a page the host opened in their browser).
fn hostile_origin() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("https://evil.example".to_string()),
        Just("null".to_string()),
        Just("http://127.0.0.1.evil.example".to_string()),
        Just("http://localhost.evil.example:8787".to_string()),
        Just("file://".to_string()),
        Just("chrome-extension://abcdefghijklmnop".to_string()),
        (
            "(http|https)",
            "[a-z]{1,10}\\.(com|example|net)",
            1u16..65535
        )
            .prop_map(|(s, h, p)| format!("{s}://{h}:{p}")),
    ]
}

/// Whether control from this upgrade is possible: upgraded, and a `say` is acknowledged.
fn controls(addr: SocketAddr, up: &raw::Upgrade) -> Result<bool, String> {
    let mut c = raw::connect(addr, up, T).map_err(|e| e.to_string())?;
    if !c.upgraded() {
        return Ok(false);
    }
    c.until_text(|v| v["type"] == "hello")
        .map_err(|e| e.to_string())?;
    c.send_text(r#"{"type":"interrupt","id":"probe"}"#)
        .map_err(|e| e.to_string())?;
    let r = c
        .until_text(|v| v["id"] == "probe")
        .map_err(|e| e.to_string())?;
    Ok(r.is_some_and(|v| v["type"] == "ack"))
}

#[test]
fn clients_without_an_origin_and_same_origin_pages_may_control() {
    let server = fake_server(false);
    let addr = server.addr();
    assert!(controls(addr, &raw::Upgrade::default()).unwrap());
    let same = format!("http://{addr}");
    let up = raw::Upgrade {
        origin: Some(&same),
        ..Default::default()
    };
    assert!(
        controls(addr, &up).unwrap(),
        "the viewer page is served from {same}"
    );
}

#[test]
fn pages_of_other_origins_and_foreign_hosts_cannot_control() {
    let server = fake_server(false);
    let addr = server.addr();
    let mut runner = fuzzer(24);
    runner
        .run(&hostile_origin(), |origin| {
            let up = raw::Upgrade {
                origin: Some(&origin),
                ..Default::default()
            };
            prop_assert!(
                !controls(addr, &up).map_err(TestCaseError::fail)?,
                "a page from {origin} drove the idol"
            );
            Ok(())
        })
        .unwrap();
    // DNS rebinding: a foreign name resolving to 127.0.0.1 reaches neither the stream nor metrics.
    let mut runner = fuzzer(24);
    runner
        .run(
            &(
                "[a-z]{1,10}\\.(com|example|net)",
                prop::option::of(1u16..65535),
            ),
            |(name, port)| {
                let host = match port {
                    Some(p) => format!("{name}:{p}"),
                    None => name,
                };
                let up = raw::Upgrade {
                    host: Some(&host),
                    ..Default::default()
                };
                prop_assert!(
                    !controls(addr, &up).map_err(TestCaseError::fail)?,
                    "Host {host}"
                );
                let metrics = raw::http_get(addr, "/metrics", Some(&host), T);
                prop_assert!(metrics != 200, "Host {host} read /metrics");
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Resource bombs through the protocol.

#[test]
fn a_say_of_hours_of_breaks_is_refused() {
    let server = fake_server(true);
    let c = RefCell::new(open(server.addr()));
    let mut runner = fuzzer(3);
    let n = Cell::new(0u64);
    runner
        .run(&(1000usize..1200), |breaks| {
            n.set(n.get() + 1);
            let mut c = c.borrow_mut();
            // 16.7 to 20 hours of pauses in one message under the 16 KiB limit.
            // Inside one clause: breaks with no words after them are dropped with their clause.
            let text = format!("Start {} and end.", "<break 60s/>".repeat(breaks));
            let id = format!("bomb-{}", n.get());
            c.send_text(&json!({"type": "say", "text": text, "id": id}).to_string())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let reply = c
                .until_text(|v| v["id"] == json!(id))
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .ok_or_else(|| TestCaseError::fail("closed"))?;
            if reply["type"] == "error" {
                return Ok(());
            }
            // Accepted: then its utterance must be refused by the stage before any of its audio.
            let utt = reply["utterance"].as_u64().unwrap_or(0);
            loop {
                let f = c
                    .read_frame()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                if let Some(Binary::Audio { utterance, .. }) = parse_binary(&f.payload) {
                    prop_assert!(
                        utterance as u64 != utt,
                        "{breaks} one-minute breaks are being spoken"
                    );
                }
                if let Some(v) = f.text().and_then(|t| serde_json::from_str::<Value>(t).ok())
                    && v["type"] == "error"
                    && v["utterance"] == json!(utt)
                {
                    return Ok(());
                }
            }
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Text mutation: the real files, changed the way damaged or hostile files differ from good ones.

/// Values that break parsers: extremes, signs, non-numbers, wrong types.
const EXTREMES: [&str; 22] = [
    "0",
    "-1",
    "-0",
    "1e308",
    "-1e308",
    "1e-320",
    "nan",
    "inf",
    "-inf",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967295",
    "4294967296",
    "86400",
    "86401",
    "1e20",
    "0.0000001",
    "\"\"",
    "[]",
    "{}",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// The k-th number in the text becomes an extreme value.
    Number(prop::sample::Index, &'static str),
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    SwapLines(prop::sample::Index, prop::sample::Index),
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, String),
    /// A run of the text repeated many times (large counts, long tiers).
    Repeat(prop::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ix = any::<prop::sample::Index>;
    prop_oneof![
        4 => (ix(), prop::sample::select(EXTREMES.to_vec())).prop_map(|(i, v)| Mutation::Number(i, v)),
        1 => ix().prop_map(Mutation::DeleteLine),
        1 => ix().prop_map(Mutation::DuplicateLine),
        1 => (ix(), ix()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        1 => ix().prop_map(Mutation::Truncate),
        2 => (ix(), prop_oneof!["\\PC{0,6}", Just("\"".to_string()), Just("\n".to_string()), Just("[".to_string()), Just("=".to_string())])
            .prop_map(|(i, s)| Mutation::Insert(i, s)),
        1 => (ix(), 2usize..200).prop_map(|(i, n)| Mutation::Repeat(i, n)),
    ]
}

fn mutate(text: &str, muts: &[Mutation]) -> String {
    let mut s = text.to_string();
    for m in muts {
        match m {
            Mutation::Number(k, v) => {
                let spans = number_spans(&s);
                if !spans.is_empty() {
                    let (a, b) = spans[k.index(spans.len())];
                    s.replace_range(a..b, v);
                }
            }
            Mutation::DeleteLine(i) | Mutation::DuplicateLine(i) => {
                let mut lines: Vec<&str> = s.split_inclusive('\n').collect();
                if !lines.is_empty() {
                    let k = i.index(lines.len());
                    if matches!(m, Mutation::DeleteLine(_)) {
                        lines.remove(k);
                    } else {
                        lines.insert(k, lines[k]);
                    }
                }
                s = lines.concat();
            }
            Mutation::SwapLines(a, b) => {
                let mut lines: Vec<&str> = s.split_inclusive('\n').collect();
                if !lines.is_empty() {
                    let n = lines.len();
                    lines.swap(a.index(n), b.index(n));
                }
                s = lines.concat();
            }
            Mutation::Truncate(i) => {
                let cut = floor_char(&s, i.index(s.len() + 1));
                s.truncate(cut);
            }
            Mutation::Insert(i, t) => {
                let at = floor_char(&s, i.index(s.len() + 1));
                s.insert_str(at, t);
            }
            Mutation::Repeat(i, n) => {
                let at = floor_char(&s, i.index(s.len() + 1));
                let end = floor_char(&s, (at + 40).min(s.len()));
                let run = s[at..end].repeat(*n);
                s.insert_str(at, &run);
            }
        }
    }
    s
}

/// Byte spans of the numbers in `s` (digits with a sign, point and exponent).
fn number_spans(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let mut a = i;
            if a > 0 && b[a - 1] == b'-' {
                a -= 1;
            }
            let mut e = i;
            while e < b.len() && (b[e].is_ascii_digit() || matches!(b[e], b'.' | b'e' | b'E')) {
                e += 1;
            }
            out.push((a, e));
            i = e;
        } else {
            i += 1;
        }
    }
    out
}

fn mutated(text: String) -> impl Strategy<Value = String> {
    prop::collection::vec(mutation(), 1..5).prop_map(move |m| mutate(&text, &m))
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Scripts.

/// A time value as a script may write it, bad ones included.
fn time_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..5000).prop_map(|ms| format!("\"{ms}ms\"")),
        (0.0f64..10.0).prop_map(|s| format!("{s}")),
        (0u32..20).prop_map(|s| format!("\"{s}s\"")),
        prop::sample::select(EXTREMES.to_vec()).prop_map(str::to_string),
        Just("\"1.5.2s\"".to_string()),
        Just("\"ms\"".to_string()),
        Just("\"-3s\"".to_string()),
        Just("true".to_string()),
    ]
}

/// Line text: words, tags (emotions, actions, breaks of any length, malformed ones).
fn line_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec!["Hello", "everyone", "welcome back", "to the show", "I", "think", "so", "twenty-one", "3.5", "Dr.", "okay"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["[happy]", "[sad:0.5]", "[angry:9]", "<wave>", "<nod:2>", "</nod>", "[", "<", "<break/>", "<break time=\"soon\"/>", "<break time=\"-1s\"/>"]).prop_map(str::to_string),
        1 => (0u32..3000).prop_map(|ms| format!("<break time=\"{ms}ms\"/>")),
        1 => prop::sample::select(vec![".", ",", "!", "?", "...", " - "]).prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.join(" "))
}

fn script_text() -> impl Strategy<Value = String> {
    let line = (
        prop::option::of(line_text()),
        prop::option::of(time_value()),
        prop::option::of(time_value()),
        prop::option::of(prop_oneof![
            Just("0.5"),
            Just("1.2"),
            Just("-1"),
            Just("1e9"),
            Just("\"fast\"")
        ]),
        prop::option::of(prop_oneof![
            Just("\"camera\""),
            Just("\"ahead\""),
            Just("\"door\""),
            Just("[10, -5]"),
            Just("[1000, 0]"),
            Just("[1]")
        ]),
        prop::option::of(prop_oneof![
            Just("\"happy\""),
            Just("\"sad:0.5\""),
            Just("\"sad:x\""),
            Just("\"\"")
        ]),
        prop::option::of(prop_oneof![Just("\"a\""), Just("\"b\""), Just("\"\"")]),
    )
        .prop_map(|(text, gap, at, rate, look, emotion, id)| {
            let mut s = "[[line]]\n".to_string();
            let mut field = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    s.push_str(&format!("{k} = {v}\n"));
                }
            };
            field("text", text.map(|t| toml::Value::String(t).to_string()));
            field("gap", gap);
            field("at", at);
            field("rate", rate.map(str::to_string));
            field("look_at", look.map(str::to_string));
            field("emotion", emotion.map(str::to_string));
            field("id", id.map(str::to_string));
            s
        });
    let header = (
        prop::option::of(time_value()),
        prop::option::of(time_value()),
        prop::option::of(prop_oneof![
            Just("60"),
            Just("0"),
            Just("100000"),
            Just("-5")
        ]),
        prop::option::of(prop_oneof![
            Just("1"),
            Just("-1"),
            Just("18446744073709551615")
        ]),
    )
        .prop_map(|(gap, tail, fps, seed)| {
            let mut s = "[script]\ntitle = \"fuzz\"\n".to_string();
            for (k, v) in [("gap", gap), ("tail", tail)] {
                if let Some(v) = v {
                    s.push_str(&format!("{k} = {v}\n"));
                }
            }
            if let Some(f) = fps {
                s.push_str(&format!("fps = {f}\n"));
            }
            if let Some(x) = seed {
                s.push_str(&format!("seed = {x}\n"));
            }
            s.push_str("\n[targets]\ndoor = { yaw = 30, pitch = 0 }\n\n");
            s
        });
    let event = prop_oneof![
        Just("[[event]]\nname = \"lights\"\nat = 1.0\ndata = { level = 3 }\n".to_string()),
        Just("[[event]]\nname = \"cam\"\nline = \"a\"\noffset = \"200ms\"\n".to_string()),
        Just("[[event]]\nname = \"cam\"\nline = \"zzz\"\n".to_string()),
        Just("[[event]]\nname = \"x\"\n".to_string()),
    ];
    (
        prop::option::of(header),
        prop::collection::vec(line, 0..6),
        prop::collection::vec(event, 0..2),
    )
        .prop_flat_map(|(h, lines, events)| {
            let text = format!(
                "{}{}\n{}",
                h.unwrap_or_default(),
                lines.join("\n"),
                events.join("\n")
            );
            prop_oneof![
                3 => Just(text.clone()),
                1 => mutated(text),
            ]
        })
}

/// A lower bound of how long a parsed script plays, from its silences alone (gaps, `at` times, the
/// tail and the breaks in its text): pure arithmetic on the parsed script, no audio.
///
/// HOOK (issue 15, "resource budgets"): when the library offers a script's planned duration checked
/// against a budget, the budget property below should call it here as well.
fn planned_silence_secs(s: &idol::script::Script) -> f64 {
    use idol::script::Timing;
    use idol::text::{CueEvent, TagParser};
    let mut t = 0.0f64;
    for (i, l) in s.lines.iter().enumerate() {
        match l.timing {
            Timing::At { secs } => t = t.max(secs),
            Timing::After { gap } => t += gap.unwrap_or(if i == 0 { 0.0 } else { s.defaults.gap }),
        }
        let (_, cues) = TagParser::parse_all(l.text.as_deref().unwrap_or_default());
        for c in cues {
            if let CueEvent::Break { millis } = c.event {
                t += millis as f64 / 1000.0;
            }
        }
    }
    t + s.defaults.tail
}

fn fake_line_voice() -> idol::script::SynthLineVoice<idol::tts::FakeSynthesizer> {
    idol::script::SynthLineVoice(idol::tts::FakeSynthesizer::default())
}

fn render_fake(
    s: &idol::script::Script,
) -> Result<idol::script::Performance, idol::script::RenderError> {
    idol::script::render(
        s,
        &mut fake_line_voice(),
        idol::script::RenderOptions {
            rig: idol::face::Rig::builtin("arkit52").unwrap(),
            fps: 30,
            seed: 1,
            rate: None,
            lipsync: None,
            progress: None,
            budget: idol::budget::Budget::default(),
        },
    )
}

#[test]
fn scripts_parse_or_fail_with_a_position_and_short_ones_render() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fuzz.script.toml");
    let mut runner = fuzzer(400);
    let rendered = Cell::new(0);
    runner
        .run(&script_text(), |src| {
            match idol::script::Script::parse(&src, &file, dir.path()) {
                Err(e) => {
                    // A typed, positioned error (line 0 only for whole-script problems).
                    prop_assert!(!e.message.is_empty(), "{e:?}");
                    prop_assert!(e.line <= src.lines().count() + 1, "{e}");
                }
                Ok(s) => {
                    // Render the short ones on the fake voice: an error is fine, a panic is not.
                    if planned_silence_secs(&s) < 30.0 && rendered.get() < 40 {
                        rendered.set(rendered.get() + 1);
                        if let Ok(p) = render_fake(&s) {
                            prop_assert!(
                                p.duration_secs() + 1e-6
                                    >= planned_silence_secs(&s) - s.defaults.tail
                            );
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn scripts_longer_than_any_budget_are_refused_before_allocating() {
    // 10 to 20 days of gaps: before the fix the render asks for 76+ GB and the process aborts.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bomb.script.toml");
    let mut runner = fuzzer(8);
    runner
        .run(
            &(
                prop::collection::vec(86_000u32..=86_400, 10..20),
                0u32..=86_400,
            ),
            |(gaps, tail)| {
                let mut src = format!("[script]\ntail = {tail}\n");
                for g in &gaps {
                    src.push_str(&format!("[[line]]\ntext = \"Hi.\"\ngap = {g}\n"));
                }
                let refused = match idol::script::Script::parse(&src, &file, dir.path()) {
                    Err(_) => true,
                    Ok(s) => {
                        prop_assert!(planned_silence_secs(&s) > 864_000.0);
                        render_fake(&s).is_err()
                    }
                };
                prop_assert!(refused, "a script of {} days was accepted", gaps.len());
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Persona cards: our TOML, Character Card V1/V2/V3 JSON, PNG cards, CHARX zips.

/// The JSON inside the committed V3 PNG card.
fn fixture_card_json() -> String {
    let png = std::fs::read(repo("tests/fixtures/persona/aiko_v3.png")).unwrap();
    let texts = idol::persona::import::png_text_chunks(&png).unwrap();
    let b64 = &texts.iter().find(|(k, _)| k == "ccv3").unwrap().1;
    use base64::Engine;
    let json = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    String::from_utf8(json).unwrap()
}

/// A card-shaped JSON value: the fixture's fields, some replaced by values of any type.
fn card_json() -> impl Strategy<Value = String> {
    let base: Value = serde_json::from_str(&fixture_card_json()).unwrap();
    let keys = [
        "name",
        "description",
        "personality",
        "scenario",
        "first_mes",
        "mes_example",
        "alternate_greetings",
        "system_prompt",
        "post_history_instructions",
        "character_book",
        "extensions",
        "tags",
        "creator_notes",
    ];
    let spec = prop_oneof![
        Just(json!("chara_card_v3")),
        Just(json!("chara_card_v2")),
        Just(json!("chara_card_v1")),
        Just(json!(null)),
        Just(json!(3)),
    ];
    (
        spec,
        prop::collection::vec((prop::sample::select(keys.to_vec()), json_value()), 0..4),
        prop::collection::vec(prop::sample::select(keys.to_vec()), 0..3),
        any::<bool>(),
    )
        .prop_flat_map(move |(spec, set, remove, flat)| {
            let mut v = base.clone();
            v["spec"] = spec;
            if let Some(d) = v.get_mut("data").and_then(Value::as_object_mut) {
                for (k, x) in set {
                    d.insert(k.to_string(), x);
                }
                for k in remove {
                    d.remove(k);
                }
            }
            if flat {
                // A V1 card: the fields at the top level.
                v = v["data"].clone();
            }
            let text = serde_json::to_string_pretty(&v).unwrap();
            prop_oneof![3 => Just(text.clone()), 1 => mutated(text)]
        })
}

/// The fixture PNG with its `ccv3` chunk replaced by `text` (base64 or not), CRCs recomputed so
/// the parser reads past the chunk structure.
fn png_with_card(text: &[u8], encode: bool) -> Vec<u8> {
    use base64::Engine;
    use idol::persona::import::{crc32, png_chunks};
    let png = std::fs::read(repo("tests/fixtures/persona/aiko_v3.png")).unwrap();
    let mut out = png[..8].to_vec();
    for c in png_chunks(&png).unwrap() {
        let data: Vec<u8> = if &c.kind == b"tEXt" && c.data.starts_with(b"ccv3\0") {
            let mut d = b"ccv3\0".to_vec();
            if encode {
                d.extend_from_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(text)
                        .as_bytes(),
                );
            } else {
                d.extend_from_slice(text);
            }
            d
        } else {
            c.data.to_vec()
        };
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = c.kind.to_vec();
        body.extend_from_slice(&data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    out
}

/// Byte-level damage: flips, cuts, a 32-bit field set to an extreme.
fn damaged(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = bytes.len();
    prop::collection::vec(
        prop_oneof![
            (0..n, any::<u8>()).prop_map(|(i, b)| (0, i, b as u32)),
            (0..n).prop_map(|i| (1, i, 0)),
            (
                0..n,
                prop::sample::select(vec![0u32, 1, 0x7fff_ffff, u32::MAX, 0xffff])
            )
                .prop_map(|(i, v)| (2, i, v)),
        ],
        1..4,
    )
    .prop_map(move |ops| {
        let mut b = bytes.clone();
        for (op, i, v) in ops {
            let i = i.min(b.len().saturating_sub(1));
            match op {
                0 => {
                    if !b.is_empty() {
                        b[i] = v as u8
                    }
                }
                1 => b.truncate(i),
                _ => {
                    if i + 4 <= b.len() {
                        b[i..i + 4].copy_from_slice(&v.to_be_bytes());
                    }
                }
            }
        }
        b
    })
}

#[test]
fn persona_cards_of_any_shape_load_or_fail_with_a_card_error() {
    use idol::persona::card::PersonaCard;
    use idol::persona::import::{card_from_charx, card_from_json_str, card_from_png, load_card};
    let p = Path::new("fuzz.card");
    let mika = read("personas/mika.toml");
    let mut runner = fuzzer(300);
    runner
        .run(&mutated(mika), |text| {
            if let Err(e) = PersonaCard::from_toml_str(&text, p) {
                prop_assert!(!e.message.is_empty());
            }
            Ok(())
        })
        .unwrap();
    let mut runner = fuzzer(300);
    runner
        .run(&card_json(), |text| {
            if let Ok(card) = card_from_json_str(&text, p) {
                prop_assert!(!card.name.trim().is_empty(), "a card without a name loaded");
            }
            Ok(())
        })
        .unwrap();
    // PNG cards: the chunk's JSON damaged (CRCs right), or the file's bytes damaged.
    let mut runner = fuzzer(150);
    runner
        .run(&(card_json(), any::<bool>()), |(text, encode)| {
            let _ = card_from_png(&png_with_card(text.as_bytes(), encode), p);
            Ok(())
        })
        .unwrap();
    let png = std::fs::read(repo("tests/fixtures/persona/aiko_v3.png")).unwrap();
    let mut runner = fuzzer(300);
    runner
        .run(&damaged(png), |bytes| {
            let _ = card_from_png(&bytes, p);
            Ok(())
        })
        .unwrap();
    // CHARX: a zip holding the card JSON, then damaged.
    let mut runner = fuzzer(100);
    runner
        .run(&card_json(), |text| {
            use std::io::Write;
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            zip.start_file("card.json", zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(text.as_bytes()).unwrap();
            let bytes = zip.finish().unwrap().into_inner();
            let _ = card_from_charx(&bytes, p);
            let mut cut = bytes.clone();
            cut.truncate(bytes.len() / 2);
            let _ = card_from_charx(&cut, p);
            Ok(())
        })
        .unwrap();
    // Whatever the first bytes say, `load_card` picks a reader and fails with a card error.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("card.bin");
    let mut runner = fuzzer(100);
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..64), |mut bytes| {
            for (i, prefix) in [&b"\x89PNG\r\n\x1a\n"[..], b"PK\x03\x04", b"{", b""]
                .iter()
                .enumerate()
            {
                if bytes.first().copied().unwrap_or(0) as usize % 4 == i {
                    let mut b = prefix.to_vec();
                    b.append(&mut bytes);
                    bytes = b;
                    break;
                }
            }
            std::fs::write(&f, &bytes).unwrap();
            let _ = load_card(&f);
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Phoneme label files: Praat TextGrid, HTK/HTS .lab, idol JSON timelines.

fn rate() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(16_000u32),
        Just(22_050),
        Just(48_000),
        Just(1),
        Just(u32::MAX),
        1u32..200_000
    ]
}

fn lab_text() -> impl Strategy<Value = String> {
    let num = prop_oneof![
        (0u64..100_000_000).prop_map(|n| n.to_string()),
        prop::sample::select(EXTREMES.to_vec()).prop_map(str::to_string),
        (0.0f64..3.0).prop_map(|x| format!("{x}")),
    ];
    let label = prop_oneof![
        prop::sample::select(vec![
            "sil",
            "hh",
            "AH0",
            "x^x-sil+hh=ax@x_x",
            "pau",
            "",
            "a b"
        ])
        .prop_map(str::to_string),
        "\\PC{0,6}",
    ];
    prop::collection::vec((num.clone(), num, label, any::<bool>()), 0..12).prop_map(|rows| {
        rows.into_iter()
            .map(|(a, b, l, three)| {
                if three {
                    format!("{a} {b} {l}\n")
                } else {
                    format!("{a} {l}\n")
                }
            })
            .collect()
    })
}

fn timeline_json() -> impl Strategy<Value = String> {
    let item = (
        prop_oneof![
            any::<u64>().prop_map(Value::from),
            (0u64..50_000).prop_map(Value::from),
            json_value()
        ],
        prop_oneof![
            any::<u64>().prop_map(Value::from),
            (0u64..50_000).prop_map(Value::from),
            json_value()
        ],
        prop_oneof![Just(json!("h")), Just(json!("AH1")), json_value()],
    )
        .prop_map(|(s, e, sym)| json!({"start": s, "end": e, "symbol": sym}));
    (
        prop_oneof![Just(json!(22050)), Just(json!(0)), json_value()],
        prop::collection::vec(item, 0..8),
        any::<bool>(),
    )
        .prop_map(|(rate, items, wrapped)| {
            let tl = json!({"rate": rate, "items": items});
            if wrapped {
                json!({"phonemes": tl, "words": {"rate": 22050, "items": []}}).to_string()
            } else {
                tl.to_string()
            }
        })
}

#[test]
fn label_files_read_or_fail_with_a_line() {
    use idol::face::read::{Format, read_str};
    let grids = [
        read("tests/data/bobby_phones.TextGrid"),
        read("tests/data/mary.TextGrid"),
    ];
    let texts = prop_oneof![
        (
            prop::sample::select(grids.to_vec()).prop_flat_map(mutated),
            Just(Format::TextGrid)
        ),
        (lab_text(), Just(Format::Lab)),
        (timeline_json(), Just(Format::Json)),
        (timeline_json().prop_flat_map(mutated), Just(Format::Json)),
    ];
    let mut runner = fuzzer(600);
    runner
        .run(
            &(
                texts,
                rate(),
                prop::option::of(prop_oneof![Just("phone"), Just("words"), Just("nope")]),
            ),
            |((text, fmt), rate, tier)| {
                // Any number may stand where a count belongs after a mutation: huge ones must fail
                // cleanly, not size an allocation.
                match read_str(&text, fmt, rate, tier, "fuzz") {
                    Ok(f) => {
                        // What is read is a proper timeline within the file's span.
                        if let Some(span) = f.phonemes.span() {
                            prop_assert!(span.end() <= f.end || fmt == Format::TextGrid);
                        }
                    }
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn textgrid_counts_do_not_drive_allocation() {
    use idol::face::read::{Format, read_str};
    let grid = read("tests/data/bobby_phones.TextGrid");
    assert!(grid.contains("intervals: size = 15"));
    for n in [
        "1e308",
        "18446744073709551615",
        "4294967296",
        "1099511627776",
    ] {
        let text = grid.replace("intervals: size = 15", &format!("intervals: size = {n}"));
        let got = read_str(&text, Format::TextGrid, 16_000, None, "big.TextGrid");
        assert!(got.is_err(), "size = {n} read as {got:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Audio headers: the real WAV and MP3 in tests/data with their header fields set to anything.

/// Offsets in a canonical WAV: (fmt chunk data offset, data chunk size offset).
fn wav_layout(b: &[u8]) -> (usize, usize) {
    let mut pos = 12;
    let (mut fmt, mut data) = (0, 0);
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if id == b"fmt " {
            fmt = pos + 8;
        }
        if id == b"data" {
            data = pos + 4;
            break;
        }
        pos += 8 + len + (len & 1);
    }
    assert!(fmt > 0 && data > 0, "bobby.wav is a plain RIFF WAV");
    (fmt, data)
}

#[derive(Debug, Clone)]
enum WavField {
    Format(u16),
    Channels(u16),
    Rate(u32),
    ByteRate(u32),
    BlockAlign(u16),
    Bits(u16),
    DataSize(u32),
    RiffSize(u32),
    Truncate(usize),
}

fn apply_wav(b: &mut Vec<u8>, f: &WavField) {
    let (fmt, data) = wav_layout(b);
    let put16 = |b: &mut Vec<u8>, o: usize, v: u16| b[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    match *f {
        WavField::Format(v) => put16(b, fmt, v),
        WavField::Channels(v) => put16(b, fmt + 2, v),
        WavField::Rate(v) => put32(b, fmt + 4, v),
        WavField::ByteRate(v) => put32(b, fmt + 8, v),
        WavField::BlockAlign(v) => put16(b, fmt + 12, v),
        WavField::Bits(v) => put16(b, fmt + 14, v),
        WavField::DataSize(v) => put32(b, data, v),
        WavField::RiffSize(v) => put32(b, 4, v),
        WavField::Truncate(n) => b.truncate(n.max(data + 4)),
    }
}

/// Header damage that keeps the sample rate sane (the rate has its own properties below).
fn wav_field() -> impl Strategy<Value = WavField> {
    let u16s = || {
        prop_oneof![
            Just(0u16),
            Just(1),
            Just(2),
            Just(3),
            Just(8),
            Just(16),
            Just(24),
            Just(32),
            Just(64),
            Just(255),
            Just(u16::MAX),
            any::<u16>()
        ]
    };
    let u32s = || {
        prop_oneof![
            Just(0u32),
            Just(1),
            Just(44),
            Just(1000),
            Just(u32::MAX),
            Just(u32::MAX - 7),
            Just(0x8000_0000),
            any::<u32>()
        ]
    };
    prop_oneof![
        prop_oneof![
            Just(1u16),
            Just(3),
            Just(0xFFFE),
            Just(0),
            Just(2),
            Just(0x55),
            any::<u16>()
        ]
        .prop_map(WavField::Format),
        u16s().prop_map(WavField::Channels),
        prop_oneof![
            Just(1u32),
            Just(8000),
            Just(44_100),
            Just(192_000),
            Just(1_000_000),
            1u32..400_000
        ]
        .prop_map(WavField::Rate),
        u32s().prop_map(WavField::ByteRate),
        u16s().prop_map(WavField::BlockAlign),
        u16s().prop_map(WavField::Bits),
        u32s().prop_map(WavField::DataSize),
        u32s().prop_map(WavField::RiffSize),
        (0usize..120_000).prop_map(WavField::Truncate),
    ]
}

/// Decode `bytes` written to a file named `name`; a panic in the decoder fails the property.
fn decode_bytes(
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<idol::audio::DecodedAudio, idol::audio::AudioError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    idol::audio::decode_file(&path)
}

/// What an accepted file must satisfy: a real rate, and no more samples than its bytes can hold
/// (a header that lies about its size cannot make the decoder allocate more).
fn sane(a: &idol::audio::DecodedAudio, file_len: usize) -> Result<(), TestCaseError> {
    prop_assert!(a.sample_rate > 0);
    prop_assert!(
        a.samples.len() <= 8 * file_len + 4096,
        "{} samples from a {file_len}-byte file",
        a.samples.len()
    );
    Ok(())
}

#[test]
fn damaged_wav_and_mp3_headers_decode_or_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let wav = std::fs::read(repo("tests/data/bobby.wav")).unwrap();
    let mut runner = fuzzer(300);
    runner
        .run(&prop::collection::vec(wav_field(), 1..4), |fields| {
            let mut b = wav.clone();
            for f in &fields {
                apply_wav(&mut b, f);
            }
            if let Ok(a) = decode_bytes(dir.path(), "fuzz.wav", &b) {
                sane(&a, b.len())?;
            }
            Ok(())
        })
        .unwrap();
    let mp3 = std::fs::read(repo("tests/data/bobby.mp3")).unwrap();
    let mut runner = fuzzer(200);
    runner
        .run(&damaged(mp3), |b| {
            if let Ok(a) = decode_bytes(dir.path(), "fuzz.mp3", &b) {
                sane(&a, b.len())?;
                prop_assert!(
                    [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000]
                        .contains(&a.sample_rate),
                    "MP3 at {} Hz",
                    a.sample_rate
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn wavs_claiming_absurd_sample_rates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wav = std::fs::read(repo("tests/data/bobby.wav")).unwrap();
    let mut runner = fuzzer(40);
    runner
        .run(
            &(
                prop_oneof![Just(0u32), 10_000_000u32..=u32::MAX],
                prop::collection::vec(wav_field(), 0..2),
            ),
            |(rate, fields)| {
                let mut b = wav.clone();
                for f in &fields {
                    apply_wav(&mut b, f);
                }
                apply_wav(&mut b, &WavField::Rate(rate));
                let got = decode_bytes(dir.path(), "rate.wav", &b);
                prop_assert!(got.is_err(), "a WAV at {rate} Hz decoded: {got:?}");
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn decoded_audio_is_always_finite() {
    let dir = tempfile::tempdir().unwrap();
    let mut wav = std::fs::read(repo("tests/data/bobby.wav")).unwrap();
    apply_wav(&mut wav, &WavField::Format(3));
    apply_wav(&mut wav, &WavField::Bits(32));
    if let Ok(a) = decode_bytes(dir.path(), "float.wav", &wav) {
        let bad = a.samples.iter().filter(|x| !x.is_finite()).count();
        assert_eq!(
            bad,
            0,
            "{bad} of {} samples are NaN or infinite",
            a.samples.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Voice configs (`NAME.onnx.json`).

struct NoPhonemes;

impl idol::phonemize::Phonemize for NoPhonemes {
    fn phonemize(
        &self,
        _: &str,
    ) -> Result<Vec<idol::phonemize::PhonToken>, idol::phonemize::PhonemizeError> {
        Ok(vec![])
    }
}

/// A voice config field set to a value (numbers in range and out of it, wrong types).
fn voice_edit() -> impl Strategy<Value = (&'static str, Value)> {
    let num = || {
        prop_oneof![
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!(1)),
            Just(json!(22050)),
            Just(json!(4_294_967_295u64)),
            Just(json!(4_294_967_296u64)),
            Just(json!(1e30)),
            Just(json!(-0.5)),
            Just(json!(0.667)),
            Just(json!("1")),
            Just(json!(null)),
        ]
    };
    prop_oneof![
        num().prop_map(|v| ("/audio/sample_rate", v)),
        num().prop_map(|v| ("/inference/length_scale", v)),
        num().prop_map(|v| ("/inference/noise_scale", v)),
        num().prop_map(|v| ("/inference/noise_w", v)),
        num().prop_map(|v| ("/num_speakers", v)),
        json_value().prop_map(|v| ("/phoneme_id_map/_", v)),
        json_value().prop_map(|v| ("/phoneme_id_map/^", v)),
        json_value().prop_map(|v| ("/phoneme_id_map", v)),
        json_value().prop_map(|v| ("/speaker_id_map", v)),
        json_value().prop_map(|v| ("/espeak", v)),
        json_value().prop_map(|v| ("/audio", v)),
        Just(("/phoneme_id_map/a", json!([]))),
        Just(("/phoneme_id_map/a", json!([9_223_372_036_854_775_807i64]))),
    ]
}

fn edit_config(base: &Value, edits: &[(&str, Value)]) -> Value {
    let mut v = base.clone();
    for (ptr, x) in edits {
        let (parent, key) = ptr.rsplit_once('/').unwrap();
        let target = if parent.is_empty() {
            Some(&mut v)
        } else {
            v.pointer_mut(parent)
        };
        if let Some(Value::Object(m)) = target {
            m.insert(key.to_string(), x.clone());
        }
    }
    v
}

/// Load a voice whose `.onnx.json` is `config` and whose `.onnx` is not a model: the config is
/// read first, so an error that names the `.onnx` means the config was accepted.
fn load_voice_config(dir: &Path, config: &str) -> Result<(), idol::tts::TtsError> {
    let onnx = dir.join("fuzz.onnx");
    std::fs::write(&onnx, b"not an onnx model").unwrap();
    std::fs::write(dir.join("fuzz.onnx.json"), config).unwrap();
    idol::tts::PiperVoice::load(
        &onnx,
        &dir.join("no-ort.so"),
        std::sync::Arc::new(NoPhonemes),
        &idol::tts::VoiceOptions::default(),
    )
    .map(drop)
}

fn config_accepted(e: &idol::tts::TtsError) -> bool {
    matches!(e, idol::tts::TtsError::VoiceCorrupt { path, .. } if path.extension().is_some_and(|x| x == "onnx"))
}

fn joe_config() -> Value {
    let text =
        std::fs::read_to_string(crate::common::home().path("voices/en_US-joe-medium.onnx.json"))
            .expect("the voice config (idol fetch)");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn voice_configs_of_any_shape_load_or_fail_with_a_voice_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = joe_config();
    let text = base.to_string();
    let mut runner = fuzzer(200);
    runner
        .run(&prop::collection::vec(voice_edit(), 1..4), |edits| {
            let cfg = edit_config(&base, &edits);
            let e = load_voice_config(dir.path(), &cfg.to_string()).unwrap_err();
            prop_assert!(!e.to_string().is_empty());
            Ok(())
        })
        .unwrap();
    let mut runner = fuzzer(100);
    runner
        .run(&mutated(text), |t| {
            let _ = load_voice_config(dir.path(), &t);
            Ok(())
        })
        .unwrap();
    // The real config passes the config checks.
    assert!(config_accepted(
        &load_voice_config(dir.path(), &base.to_string()).unwrap_err()
    ));
}

#[test]
fn voice_configs_with_absurd_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = joe_config();
    let absurd = prop_oneof![
        prop_oneof![Just(0u64), 10_000_000u64..=u32::MAX as u64]
            .prop_map(|r| ("/audio/sample_rate", json!(r))),
        prop_oneof![Just(0.0f64), Just(-1.0), -1e9f64..=0.0]
            .prop_map(|x| ("/inference/length_scale", json!(x))),
        Just(("/inference/length_scale", json!(1e30))),
    ];
    let mut runner = fuzzer(40);
    runner
        .run(&absurd, |edit| {
            let cfg = edit_config(&base, std::slice::from_ref(&edit));
            let e = load_voice_config(dir.path(), &cfg.to_string()).unwrap_err();
            prop_assert!(!config_accepted(&e), "{edit:?} was accepted");
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_charx_card_that_inflates_past_any_card_size_is_refused() {
    use std::io::Write;
    // 256 MiB of JSON whitespace before a valid card: about 250 KB zipped.
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(
        "card.json",
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true),
    )
    .unwrap();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..256 {
        zip.write_all(&chunk).unwrap();
    }
    zip.write_all(fixture_card_json().as_bytes()).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    assert!(bytes.len() < 2 << 20, "{} bytes zipped", bytes.len());
    let got = idol::persona::import::card_from_charx(&bytes, Path::new("bomb.charx"));
    assert!(
        got.is_err(),
        "a card.json of 256 MiB was inflated and accepted"
    );
}
