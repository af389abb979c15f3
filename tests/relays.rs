//! Chat relays against real servers on loopback: Twitch's IRC path against InspIRCd (Debian's
//! `inspircd`, started per test with a generated config), Bilibili's danmaku protocol against a
//! WebSocket server in the test speaking it from packets built as its documentation describes, and
//! the generic relay through `POST /v1/chat`; each end to end into `idol serve`'s stream.

use crate::serve::{In, Ws, connect, next};
use futures_util::{SinkExt, StreamExt};
use idol::config::{BilibiliConfig, TwitchConfig};
use idol::perform::testing::{JawFace, ScriptedGenerator, ToneVoice};
use idol::perform::{PerformConfig, SimpleSegmenter, Stages};
use idol::persona::{CancelToken, ChatMessage as Turn, GenOutcome, GenParams, TextGenerator};
use idol::relay::bilibili::{self, op, ver};
use idol::relay::twitch::TwitchSource;
use idol::relay::{
    Backoff, ChatDesk, ChatMessage, DeskOptions, PaidKind, Platform, PolicyConfig, RelayState,
    RelayStatus, SourceLink, run_source,
};
use idol::server::{Server, ServerOptions};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// Generous bound for things that take milliseconds, so a loaded machine never fails a test.
const PATIENCE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn inspircd() -> PathBuf {
    for p in ["/usr/sbin/inspircd", "/usr/bin/inspircd"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("these tests need InspIRCd: apt-get install inspircd (CI's .ci/run installs it)");
}

/// InspIRCd on a loopback port with IRCv3 message tags (client tags, msgid, server-time), no
/// flood limits, and a 2 s ping interval (so every test sees the relay answer PINGs).
struct Ircd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Ircd {
    fn start() -> Ircd {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Ircd::spawn(port, dir.path());
        Ircd { child, port, dir }
    }

    fn spawn(port: u16, dir: &Path) -> Child {
        let d = dir.display();
        let conf = format!(
            r#"<server name="irc.idol.test" description="idol test" network="idoltest">
<admin name="test" nick="test" email="test@idol.test">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect name="main" allow="*" timeout="60" pingfreq="2" recvq="65536" sendq="4194304" threshold="1000000" commandrate="100000000" fakelag="no" localmax="10000" globalmax="10000" maxconnwarn="no" resolvehostnames="no" useident="no">
<pid file="{d}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{d}/ircd.log">
<module name="cap">
<module name="ircv3">
<module name="ircv3_ctctags">
<module name="ircv3_msgid">
<module name="ircv3_servertime">
"#
        );
        let path = dir.join("inspircd.conf");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let child = Command::new(inspircd())
            .arg("--nofork")
            .arg("--runasroot")
            .arg(format!("--config={}", path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start inspircd");
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < PATIENCE, "inspircd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop it and start another on the same port (a server restart, as the relay sees it).
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Ircd::spawn(self.port, self.dir.path());
    }
}

impl Drop for Ircd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A viewer on the IRC server: an ordinary IRC client with IRCv3 message tags.
struct Viewer {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Viewer {
    async fn join(addr: &str, nick: &str, channel: &str) -> Viewer {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut v = Viewer {
            r: BufReader::new(r),
            w,
        };
        v.send(&format!(
            "CAP REQ :message-tags\r\nNICK {nick}\r\nUSER {nick} 0 * :{nick}\r\nCAP END\r\n"
        ))
        .await;
        v.until(" 001 ").await;
        v.send(&format!("JOIN #{channel}\r\n")).await;
        v.until(" 366 ").await;
        v
    }

    async fn send(&mut self, text: &str) {
        self.w.write_all(text.as_bytes()).await.unwrap();
    }

    /// Stay connected for `d`, answering the server's PINGs.
    async fn idle(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, async {
            loop {
                let mut line = String::new();
                if self.r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if let Some(arg) = line.strip_prefix("PING ") {
                    self.send(&format!("PONG {arg}")).await;
                }
            }
        })
        .await;
    }

    /// Read lines until one containing `needle` (PINGs answered on the way).
    async fn until(&mut self, needle: &str) -> String {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let mut line = String::new();
                assert!(
                    self.r.read_line(&mut line).await.unwrap() > 0,
                    "ircd closed"
                );
                if let Some(arg) = line.strip_prefix("PING ") {
                    self.send(&format!("PONG {arg}")).await;
                }
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no line with {needle:?}"))
    }
}

fn fast_backoff() -> Backoff {
    Backoff {
        min: Duration::from_millis(50),
        max: Duration::from_millis(400),
        stable: Duration::from_secs(30),
    }
}

async fn wait_for(status: &RelayStatus, what: impl Fn(&RelayStatus) -> bool, why: &str) {
    tokio::time::timeout(PATIENCE, async {
        while !what(status) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{why}: {:?}", status.snapshot()));
}

async fn recv(rx: &mut mpsc::Receiver<ChatMessage>) -> ChatMessage {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a relayed message")
        .expect("the relay is running")
}

fn twitch_cfg(addr: &str, channel: &str) -> TwitchConfig {
    TwitchConfig {
        server: addr.into(),
        channel: channel.into(),
        nick: None,
        token_env: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twitch_relay_reads_a_real_irc_server_answers_pings_and_reconnects() {
    let mut ircd = Ircd::start();
    let status = Arc::new(RelayStatus::new("twitch", Platform::Twitch));
    let (tx, mut rx) = mpsc::channel(64);
    let (stop_tx, stop) = watch::channel(false);
    let source = TwitchSource::new(twitch_cfg(&ircd.addr(), "#IdolChan"));
    assert!(source.nick().starts_with("justinfan"), "anonymous login");
    let task = tokio::spawn(run_source(
        Box::new(source),
        SourceLink::new(status.clone(), tx),
        fast_backoff(),
        stop,
    ));
    wait_for(&status, |s| s.state() == RelayState::Connected, "joins").await;

    let mut ann = Viewer::join(&ircd.addr(), "ann", "idolchan").await;
    ann.send("@+idol/test=1 PRIVMSG #idolchan :hello Mika!\r\n")
        .await;
    ann.send("PRIVMSG #idolchan :\u{1}ACTION waves\u{1}\r\n")
        .await;
    let a = recv(&mut rx).await;
    let b = recv(&mut rx).await;
    assert_eq!((a.user.as_str(), a.text.as_str()), ("ann", "hello Mika!"));
    assert_eq!(b.text, "waves");
    assert_eq!((a.platform, a.relay.as_str()), (Platform::Twitch, "twitch"));
    // The server's IRCv3 msgid came through the tags: distinct ids for de-duplication.
    let (ia, ib) = (a.id.clone().unwrap(), b.id.clone().unwrap());
    assert_ne!(ia, ib);

    // The server pings every 2 s and drops clients that do not answer: after several pings the
    // relay is still on its first connection and still reading.
    ann.idle(Duration::from_secs(6)).await;
    ann.send("PRIVMSG #idolchan :still there?\r\n").await;
    assert_eq!(recv(&mut rx).await.text, "still there?");
    assert_eq!(status.snapshot().connects, 1, "{:?}", status.snapshot());
    drop(ann);

    // The server goes away and comes back on the same port: the relay reconnects by itself.
    ircd.restart();
    wait_for(&status, |s| s.snapshot().connects >= 2, "reconnects").await;
    assert_eq!(status.state(), RelayState::Connected);
    let mut bob = Viewer::join(&ircd.addr(), "bob", "idolchan").await;
    bob.send("PRIVMSG #idolchan :back again\r\n").await;
    let c = recv(&mut rx).await;
    assert_eq!((c.user.as_str(), c.text.as_str()), ("bob", "back again"));
    let snap = status.snapshot();
    assert_eq!((snap.messages_in, snap.dropped), (4, 0));

    stop_tx.send_replace(true);
    task.await.unwrap();
    assert_eq!(status.state(), RelayState::Stopped);
}

/// The scripted generator, with every prompt it is given kept for the test to read.
struct Spy {
    inner: Box<dyn TextGenerator>,
    seen: Arc<Mutex<Vec<Vec<Turn>>>>,
}

impl TextGenerator for Spy {
    fn generate(
        &mut self,
        messages: &[Turn],
        params: &GenParams,
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenOutcome, idol::persona::PersonaError> {
        self.seen.lock().push(messages.to_vec());
        self.inner.generate(messages, params, cancel, on_text)
    }
}

fn fake_stages(seen: &Arc<Mutex<Vec<Vec<Turn>>>>) -> Stages {
    Stages {
        persona: idol::perform::testing::conversation(),
        generator: Box::new(Spy {
            inner: Box::new(ScriptedGenerator::new(["Hello there, friend!"; 16])),
            seen: seen.clone(),
        }),
        segmenter: Box::new(SimpleSegmenter::new()),
        voice: Box::new(ToneVoice::new(crate::serve::RATE)),
        face: Box::new(JawFace::arkit(crate::serve::RATE, 60)),
    }
}

fn server_with(stages: Stages, desk: Arc<ChatDesk>) -> Server {
    Server::start(
        stages,
        PerformConfig::default(),
        ServerOptions {
            port: 0,
            max_client_lag: Duration::from_secs(30),
            chat_desk: Some(desk),
            ..ServerOptions::default()
        },
    )
    .unwrap()
}

/// Wait for the first audio of the next utterance: (its id, the caption texts seen before it ends).
/// Until the first audio of a reply: its utterance, the captions and the `asked` messages before it.
async fn first_audio(ws: &mut Ws) -> (u64, Vec<String>, Vec<Value>) {
    let mut utt = None;
    let mut captions = vec![];
    let mut asked = vec![];
    tokio::time::timeout(PATIENCE * 5, async {
        loop {
            match next(ws).await {
                In::Json(v) if v["type"] == "state" && v["state"] == "thinking" => {
                    utt = v["utterance"].as_u64();
                }
                In::Json(v) if v["type"] == "caption" => {
                    captions.push(v["text"].as_str().unwrap_or("").to_string());
                }
                In::Json(v) if v["type"] == "asked" => asked.push(v),
                In::Bin(idol::server::protocol::Binary::Audio { utterance, .. })
                    if Some(utterance as u64) == utt =>
                {
                    return;
                }
                In::Closed(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the idol answers with audio");
    (utt.unwrap(), captions, asked)
}

async fn http_get(server: &Server, path: &str) -> String {
    reqwest::get(format!("{}{path}", server.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twitch_chat_on_the_irc_server_is_answered_with_audio_and_shows_in_metrics() {
    let ircd = Ircd::start();
    let desk = ChatDesk::new(DeskOptions {
        backoff: fast_backoff(),
        ..DeskOptions::default()
    });
    desk.add_source(Box::new(TwitchSource::new(twitch_cfg(
        &ircd.addr(),
        "idolchan",
    ))));
    let seen = Arc::new(Mutex::new(vec![]));
    let server = server_with(fake_stages(&seen), desk.clone());
    let (mut ws, _) = connect(&server).await;
    let twitch = desk.statuses()[0].clone();
    wait_for(&twitch, |s| s.state() == RelayState::Connected, "joins").await;

    let mut ann = Viewer::join(&ircd.addr(), "ann", "idolchan").await;
    ann.send("PRIVMSG #idolchan :what is your favourite song?\r\n")
        .await;
    let (utt, captions, asked) = first_audio(&mut ws).await;
    assert_eq!(captions.first().map(String::as_str), Some("Hello there,"));
    // Overlays see who asked what, and where.
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["utterance"].as_u64(), Some(utt));
    assert_eq!(
        (&asked[0]["user"], &asked[0]["source"], &asked[0]["text"]),
        (
            &json!("ann"),
            &json!("twitch"),
            &json!("what is your favourite song?")
        )
    );
    // The persona got the viewer's message, named, through its guards' wrapping.
    let prompt = seen.lock().last().cloned().unwrap();
    let last = &prompt.last().unwrap().content;
    assert!(
        last.contains("ann") && last.contains("what is your favourite song?"),
        "{last}"
    );

    let metrics = http_get(&server, "/metrics").await;
    assert!(
        metrics.contains("idol_relay_state{relay=\"twitch\",state=\"connected\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("idol_relay_messages_total{relay=\"twitch\"} 1"));
    assert!(metrics.contains("idol_chat_policy_total{decision=\"answered\"} 1"));
    let relays: Value = serde_json::from_str(&http_get(&server, "/v1/relays").await).unwrap();
    assert_eq!(relays["relays"][0]["name"], "twitch");
    assert_eq!(relays["relays"][0]["state"], "connected");
    assert_eq!(relays["relays"][0]["messages_in"], 1);
    drop(ws);
    drop(server);
    assert_eq!(twitch.state(), RelayState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twitch_chat_is_answered_by_the_real_model_and_voice() {
    let home = crate::common::home();
    let config = idol::config::Config::default();
    let mut stages = idol::perform::adapters::build_stages(&home, &config).unwrap();
    stages.persona = idol::perform::adapters::build_conversation(&home, &config, false).unwrap();
    stages.persona.params = GenParams {
        temperature: 0.0,
        max_tokens: 24,
        seed: 7,
        ..stages.persona.params.clone()
    };
    let name = stages.persona.card().name.clone();
    let ircd = Ircd::start();
    let mut relays = idol::config::Config::default().relays;
    relays.twitch = Some(twitch_cfg(&ircd.addr(), "idolchan"));
    let desk = idol::relay::desk::from_config(&relays, std::slice::from_ref(&name), false).unwrap();
    let server = server_with(stages, desk.clone());
    let (mut ws, _) = connect(&server).await;
    wait_for(
        &desk.statuses()[0],
        |s| s.state() == RelayState::Connected,
        "joins",
    )
    .await;
    let mut ann = Viewer::join(&ircd.addr(), "ann", "idolchan").await;
    ann.send(&format!(
        "PRIVMSG #idolchan :Hi {name}, what music do you like?\r\n"
    ))
    .await;
    let (utt, _, _) = first_audio(&mut ws).await;
    // Audible speech follows.
    let mut peak = 0f32;
    tokio::time::timeout(PATIENCE * 5, async {
        loop {
            match next(&mut ws).await {
                In::Bin(idol::server::protocol::Binary::Audio { utterance, pcm, .. })
                    if utterance as u64 == utt =>
                {
                    peak = pcm.iter().fold(peak, |m, x| m.max(x.abs()));
                }
                In::Json(v) if v["type"] == "state" && v["state"] == "idle" => break,
                In::Closed(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the reply ends");
    assert!(peak > 0.05, "the voice is audible: {peak}");
    let metrics = http_get(&server, "/metrics").await;
    assert!(
        metrics.contains("idol_chat_policy_total{decision=\"answered\"} 1"),
        "{metrics}"
    );
}

// ---- Bilibili ----

/// A `DANMU_MSG` body shaped as the protocol's public description shows one (fields by position:
/// info[1] text, info[2] [uid, name, admin, ...], info[3] fan medal, info[7] guard level,
/// info[9] {ts, ct}).
fn danmu(uid: u64, name: &str, text: &str, ct: &str) -> Value {
    json!({"cmd": "DANMU_MSG", "info": [
        [0, 1, 25, 16777215, 1700000000123u64, 1700000000, 0, "8a0b1c2d", 0, 0, 0, "", 0, "{}", "{}",
         {"mode": 0, "show_player_type": 0, "extra": ""}],
        text,
        [uid, name, 1, 0, 0, 10000, 1, ""],
        [12, "小星", "主播", 1234, 6067854, "", 0],
        [10, 0, 9868950, ">50000", 0],
        ["", ""], 0, 3, null,
        {"ts": 1700000000, "ct": ct},
        0, 0, null, null, 0, 105
    ]})
}

fn super_chat(id: u64, name: &str, text: &str, price: f64) -> Value {
    json!({"cmd": "SUPER_CHAT_MESSAGE", "data": {
        "id": id, "uid": 42, "price": price, "message": text, "ts": 1700000001,
        "user_info": {"uname": name, "guard_level": 0}
    }})
}

fn gift(coin_type: &str) -> Value {
    json!({"cmd": "SEND_GIFT", "data": {
        "giftName": "辣条", "num": 5, "uname": "fan", "uid": 7, "price": 100,
        "coin_type": coin_type, "total_coin": 500, "tid": "1700000002123400001"
    }})
}

fn packet(v: &Value) -> Vec<u8> {
    bilibili::encode(ver::JSON, op::MESSAGE, v.to_string().as_bytes())
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

fn brotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    let mut w = ::brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
    w.write_all(bytes).unwrap();
    drop(w);
    out
}

#[test]
fn bilibili_packets_decode_plain_zlib_and_brotli_bodies_into_chat() {
    // Two notifications in one compressed body, as the server batches them.
    let inner = [
        packet(&danmu(1850091, "见齐", "主播好！", "59DEA791")),
        packet(&super_chat(9, "fan", "Mika, sing please", 30.0)),
    ]
    .concat();
    let z = bilibili::encode(ver::ZLIB, op::MESSAGE, &zlib(&inner));
    let b = bilibili::encode(ver::BROTLI, op::MESSAGE, &brotli(&inner));
    let popularity = bilibili::encode(ver::PLAIN, op::HEARTBEAT_REPLY, &1234u32.to_be_bytes());
    for frame in [inner.clone(), z, [popularity.clone(), b].concat()] {
        let packets = bilibili::decode(&frame).unwrap();
        let chats: Vec<ChatMessage> = packets
            .iter()
            .filter(|p| p.op == op::MESSAGE)
            .map(|p| {
                bilibili::chat_of(&serde_json::from_slice(&p.body).unwrap(), "bilibili").unwrap()
            })
            .collect();
        assert_eq!(chats.len(), 2);
        let d = &chats[0];
        assert_eq!((d.user.as_str(), d.text.as_str()), ("见齐", "主播好！"));
        assert_eq!(d.user_id.as_deref(), Some("1850091"));
        assert_eq!(d.badges, ["admin", "medal/小星/12", "guard/3"]);
        assert_eq!(d.id.as_deref(), Some("59DEA791:1700000000123"));
        assert!(d.paid.is_none());
        let sc = &chats[1];
        assert_eq!(sc.text, "Mika, sing please");
        let paid = sc.paid.as_ref().unwrap();
        assert_eq!(
            (paid.kind, paid.amount, paid.unit.as_str()),
            (PaidKind::SuperChat, 30.0, "CNY")
        );
    }
    // Gold gifts are paid chat; free (silver) gifts are not chat at all.
    let g = bilibili::chat_of(&gift("gold"), "bilibili").unwrap();
    assert_eq!(g.text, "sent you 5 × 辣条");
    assert_eq!(g.paid.unwrap().amount, 0.5);
    assert!(bilibili::chat_of(&gift("silver"), "bilibili").is_none());
    // Commands with suffixes are the same command; others are not chat.
    let mut suffixed = danmu(1, "a", "hi", "X");
    suffixed["cmd"] = json!("DANMU_MSG:4:0:2:2:2:0");
    assert!(bilibili::chat_of(&suffixed, "b").is_some());
    assert!(bilibili::chat_of(&json!({"cmd": "INTERACT_WORD", "data": {}}), "b").is_none());
    // Malformed frames are errors, not panics.
    assert!(bilibili::decode(&popularity[..10]).is_err());
    let mut lying = popularity.clone();
    lying[3] = 200;
    assert!(bilibili::decode(&lying).is_err());
    let bad = bilibili::encode(ver::ZLIB, op::MESSAGE, b"not zlib");
    assert!(bilibili::decode(&bad).is_err());
    let nested = bilibili::encode(
        ver::ZLIB,
        op::MESSAGE,
        &zlib(&bilibili::encode(ver::ZLIB, op::MESSAGE, &zlib(&inner))),
    );
    assert_eq!(
        bilibili::decode(&nested),
        Err(bilibili::PacketError::Nested)
    );
}

/// What the fake danmaku server saw of one connection.
#[derive(Debug, Default, Clone)]
struct Seen {
    auth: Option<Value>,
    heartbeats: usize,
}

/// A danmaku server on loopback: checks the auth packet, answers it, answers heartbeats with the
/// popularity, sends `frames` and then (for the first connection) closes, so the relay reconnects.
async fn danmaku_server(
    listener: tokio::net::TcpListener,
    frames: Vec<Vec<Vec<u8>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    for (i, conn_frames) in frames.into_iter().enumerate() {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        seen.lock().push(Seen::default());
        // Auth first.
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) = ws.next().await else {
            panic!("the auth packet first");
        };
        let p = bilibili::decode(&b).unwrap().remove(0);
        assert_eq!((p.op, p.ver), (op::AUTH, ver::PLAIN));
        seen.lock()[i].auth = Some(serde_json::from_slice(&p.body).unwrap());
        let reply = bilibili::encode(ver::PLAIN, op::AUTH_REPLY, br#"{"code":0}"#);
        ws.send(reply.into()).await.unwrap();
        // The client's first heartbeat follows the auth reply; then the messages.
        loop {
            let Some(Ok(m)) = ws.next().await else { return };
            let p = bilibili::decode(&m.into_data()).unwrap().remove(0);
            if p.op == op::HEARTBEAT {
                seen.lock()[i].heartbeats += 1;
                let pop = bilibili::encode(ver::PLAIN, op::HEARTBEAT_REPLY, &7u32.to_be_bytes());
                ws.send(pop.into()).await.unwrap();
                break;
            }
        }
        for f in conn_frames {
            ws.send(f.into()).await.unwrap();
        }
        if i == 0 {
            // Gone without a word: the relay must notice and reconnect.
            drop(ws);
        } else {
            // Keep answering heartbeats until the relay stops.
            while let Some(Ok(m)) = ws.next().await {
                if let Ok(ps) = bilibili::decode(&m.into_data())
                    && ps.iter().any(|p| p.op == op::HEARTBEAT)
                {
                    seen.lock()[i].heartbeats += 1;
                    let pop =
                        bilibili::encode(ver::PLAIN, op::HEARTBEAT_REPLY, &7u32.to_be_bytes());
                    if ws.send(pop.into()).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bilibili_relay_authenticates_heartbeats_reads_compressed_packets_and_reconnects() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let first = [
        packet(&danmu(1, "小明", "晚上好", "AAAA0001")),
        packet(&super_chat(77, "大佬", "唱首歌吧", 50.0)),
    ]
    .concat();
    let frames = vec![
        vec![bilibili::encode(ver::BROTLI, op::MESSAGE, &brotli(&first))],
        vec![
            // The same danmaku again after the reconnect (the relay passes it on; the policy
            // drops it by id), then a new one, zlib-compressed.
            bilibili::encode(
                ver::ZLIB,
                op::MESSAGE,
                &zlib(
                    &[
                        packet(&danmu(1, "小明", "晚上好", "AAAA0001")),
                        packet(&danmu(2, "小红", "Mika!", "AAAA0002")),
                    ]
                    .concat(),
                ),
            ),
        ],
    ];
    let seen = Arc::new(Mutex::new(vec![]));
    let server = tokio::spawn(danmaku_server(listener, frames, seen.clone()));
    // SAFETY of the env: the variable is unique to this test.
    unsafe { std::env::set_var("IDOL_TEST_BILI_KEY", "k3y") };
    let cfg = BilibiliConfig {
        url: format!("ws://127.0.0.1:{port}/sub"),
        room_id: 6067854,
        uid: 0,
        key_env: Some("IDOL_TEST_BILI_KEY".into()),
        heartbeat_secs: 1,
    };
    let status = Arc::new(RelayStatus::new("bilibili", Platform::Bilibili));
    let (tx, mut rx) = mpsc::channel(64);
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(run_source(
        Box::new(bilibili::BilibiliSource::new(cfg)),
        SourceLink::new(status.clone(), tx),
        fast_backoff(),
        stop,
    ));
    let texts: Vec<String> = [
        recv(&mut rx).await,
        recv(&mut rx).await,
        recv(&mut rx).await,
        recv(&mut rx).await,
    ]
    .iter()
    .map(|m| m.text.clone())
    .collect();
    assert_eq!(texts, ["晚上好", "唱首歌吧", "晚上好", "Mika!"]);
    wait_for(&status, |s| s.snapshot().connects == 2, "reconnected once").await;
    // Heartbeats keep flowing on the second connection (every second).
    tokio::time::timeout(PATIENCE, async {
        while seen.lock().get(1).map_or(0, |s| s.heartbeats) < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("heartbeats");
    let auth = seen.lock()[0].auth.clone().unwrap();
    assert_eq!(auth["roomid"], 6067854);
    assert_eq!(auth["key"], "k3y");
    assert_eq!(auth["protover"], 3);
    assert_eq!(status.state(), RelayState::Connected);
    stop_tx.send_replace(true);
    task.await.unwrap();
    server.abort();

    // Through the policy, the repeated danmaku is a duplicate.
    let mut policy = idol::relay::ChatPolicy::new(PolicyConfig::default());
    let t = std::time::Instant::now();
    let first = bilibili::chat_of(&danmu(1, "小明", "晚上好", "AAAA0001"), "bilibili").unwrap();
    assert_eq!(policy.offer(first.clone(), t).verdict.label(), "queued");
    assert_eq!(policy.offer(first, t).verdict.label(), "duplicate");
}

// ---- generic over HTTP ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_v1_chat_is_answered_and_keeps_the_stream_s_origin_rules() {
    let desk = ChatDesk::new(DeskOptions {
        http: true,
        ..DeskOptions::default()
    });
    let seen = Arc::new(Mutex::new(vec![]));
    let server = server_with(fake_stages(&seen), desk);
    let (mut ws, _) = connect(&server).await;
    let url = format!("{}/v1/chat", server.base_url());
    let client = reqwest::Client::new();
    let post = |body: &str, ctype: &str, origin: Option<&str>| {
        let mut r = client
            .post(&url)
            .header("content-type", ctype)
            .body(body.to_string());
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    // Another site's page is refused before anything is read; so is a body that is not JSON.
    let r = post(
        r#"{"text":"hi"}"#,
        "application/json",
        Some("https://evil.example"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = post(r#"{"text":"hi"}"#, "text/plain", None).await.unwrap();
    assert_eq!(r.status(), 415);
    let r = post(r#"{"txt":"hi"}"#, "application/json", None)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("txt"));
    let r = post(
        r#"{"user":"bot","text":"a donation came in","id":"d1","paid":{"kind":"gift","amount":5,"unit":"USD"}}"#,
        "application/json",
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    first_audio(&mut ws).await;
    let prompt = seen.lock().last().cloned().unwrap();
    assert!(
        prompt
            .last()
            .unwrap()
            .content
            .contains("a donation came in")
    );
    // The same id again is dropped by the policy (accepted by the endpoint, never answered).
    let r = post(
        r#"{"user":"bot","text":"again","id":"d1"}"#,
        "application/json",
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let relays: Value = serde_json::from_str(&http_get(&server, "/v1/relays").await).unwrap();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let v: Value = serde_json::from_str(&http_get(&server, "/v1/relays").await).unwrap();
            if v["policy"]["duplicate"] == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the duplicate is counted: {relays}"));
}

// ---- hostile input ----

/// A runner from a fixed seed (repeatable), `cases` unless `PROPTEST_CASES` says otherwise.
fn fuzzer(cases: u32) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    TestRunner::new_with_rng(config, rng)
}

/// Real input with bytes overwritten, inserted and cut at generated places.
fn mutated_bytes(base: Vec<u8>) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6).prop_map(move |muts| {
        let mut b = base.clone();
        for (at, byte, how) in muts {
            let i = if b.is_empty() { 0 } else { at % b.len() };
            match how {
                0 if !b.is_empty() => b[i] = byte,
                1 => b.insert(i, byte),
                _ => b.truncate(i),
            }
        }
        b
    })
}

#[test]
fn relay_parsers_never_panic_on_hostile_input() {
    use idol::relay::twitch::{chat_of, parse_line};
    // IRC lines: real Twitch shapes, mutated, and any text at all.
    let line = "@badges=subscriber/6,bits/1000;bits=100;display-name=Ronni\\sS;id=b34c;user-id=1337 :ronni!ronni@ronni.tmi.twitch.tv PRIVMSG #ronni :cheer100 Hello\\: Mika!";
    fuzzer(2000)
        .run(&mutated_bytes(line.as_bytes().to_vec()), |b| {
            let s = String::from_utf8_lossy(&b);
            if let Some(m) = parse_line(&s) {
                prop_assert_ok(&m.command);
                if let Some(c) = chat_of(&m, "#ronni", "twitch") {
                    proptest::prop_assert!(!c.text.trim().is_empty());
                }
            }
            Ok(())
        })
        .unwrap();
    fuzzer(1000)
        .run(&"\\PC{0,300}", |s| {
            let _ = parse_line(&s).map(|m| chat_of(&m, "#c", "t"));
            let _ = idol::relay::generic::parse(&s, "stdin");
            Ok(())
        })
        .unwrap();
    // Bilibili frames: plain, zlib and brotli batches, mutated.
    let inner = [
        packet(&danmu(1, "a", "hi", "X1")),
        packet(&super_chat(2, "b", "yo", 30.0)),
    ]
    .concat();
    for frame in [
        inner.clone(),
        bilibili::encode(ver::ZLIB, op::MESSAGE, &zlib(&inner)),
        bilibili::encode(ver::BROTLI, op::MESSAGE, &brotli(&inner)),
    ] {
        fuzzer(700)
            .run(&mutated_bytes(frame), |b| {
                if let Ok(packets) = bilibili::decode(&b) {
                    for p in packets {
                        proptest::prop_assert!(p.body.len() <= bilibili::MAX_BODY);
                        if let Ok(v) = serde_json::from_slice::<Value>(&p.body) {
                            let _ = bilibili::chat_of(&v, "bilibili");
                        }
                    }
                }
                Ok(())
            })
            .unwrap();
    }
    // A zlib bomb is refused at the limit, not inflated into memory.
    let bomb = bilibili::encode(ver::ZLIB, op::MESSAGE, &zlib(&vec![0u8; 64 << 20]));
    assert_eq!(
        bilibili::decode(&bomb),
        Err(bilibili::PacketError::TooLarge)
    );
}

fn prop_assert_ok(command: &str) {
    assert!(!command.is_empty() && !command.contains(' '), "{command:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_are_relayed_bad_lines_skipped_and_the_end_stops_the_relay() {
    let long = format!("{{\"text\":\"{}\"}}", "x".repeat(20_000));
    let input = format!(
        "{{\"user\":\"bot\",\"text\":\"first\",\"id\":\"1\"}}\n\nnot json\n{long}\n{{\"txt\":\"typo\"}}\n{{\"user\":\"bot\",\"text\":\"last\",\"paid\":{{\"kind\":\"bits\",\"amount\":50,\"unit\":\"bits\"}}}}\n"
    );
    let status = Arc::new(RelayStatus::new("stdin", Platform::Generic));
    let (tx, mut rx) = mpsc::channel(64);
    let (_stop_tx, stop) = watch::channel(false);
    let source =
        idol::relay::generic::LinesSource::new(std::io::Cursor::new(input.into_bytes()), "stdin");
    run_source(
        Box::new(source),
        SourceLink::new(status.clone(), tx),
        fast_backoff(),
        stop,
    )
    .await;
    let a = recv(&mut rx).await;
    let b = recv(&mut rx).await;
    assert_eq!((a.text.as_str(), a.id.as_deref()), ("first", Some("1")));
    assert_eq!(b.text, "last");
    assert_eq!(b.paid.unwrap().kind, PaidKind::Bits);
    assert!(
        rx.try_recv().is_err(),
        "the bad, long and blank lines were skipped"
    );
    // The end of the input stops the relay for good (no reconnecting to a closed stdin).
    let snap = status.snapshot();
    assert_eq!(
        (snap.state, snap.connects, snap.messages_in),
        (RelayState::Stopped, 1, 2)
    );
}
