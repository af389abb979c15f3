//! Soak benchmark: a real `idol serve` (release binary, the real model and voice, a temporary home, a
//! free loopback port) for SECONDS, one subscribed client reading everything, and a controller
//! sending `say`, `chat` and `interrupt` at random (seeded), the way a stream's chat and its host
//! would. Per utterance it checks what `docs/protocol.md` promises:
//!
//! - audio contiguous: each chunk starts where the utterance's previous one ended (gaps and
//!   overlaps are counted in samples; a gap where a clause starts means that clause was ready too
//!   late, counted apart), and no chunk of an interrupted utterance passes the cut;
//! - frames cover exactly the audio: the frames of each clause are exactly
//!   `start + round(k · rate / fps)` inside the clause (its caption's span, cut at an interrupt),
//!   and in an utterance's audio that no caption covers (its `<break/>` pauses, where the face
//!   idles) the session's global grid `round(k · rate / fps)`: missing and out-of-span frames are
//!   counted;
//! - stamps monotonic: frame stamps strictly increase, audio chunk starts too;
//! - drift: the frame grid against the clause's audio start, or the global grid in a pause (samples), and the session clock (the
//!   `sample` of pongs) against the wall clock over the run;
//! - memory: the server's RSS every 5 s, and its growth after the first 5 minutes (or after the
//!   first minute in a shorter run, said so).
//!
//! `cargo bench --bench soak -- [SECONDS] [seed]` (defaults 120 and 1).

mod common;

use common::raw::{self, Upgrade};
use common::{Idol, arg, temp_home};
use idol::server::protocol::{Binary, parse_binary};
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SAYS: [&str; 8] = [
    "Thanks for the follow, welcome to the stream!",
    "[happy] Oh, that is such a nice thing to say. <wave>",
    "Let me think about that for a second. <break time=\"400ms\"/> Okay, I have an answer.",
    "We are going to play a little game tonight, and you can all vote on what happens next.",
    "[surprised] Wait, did you really just donate five hundred and twenty one coins?",
    "Good evening everyone.",
    "[sad:0.6] I missed you all yesterday. <nod> But I am back now!",
    "Hydrate, stretch, and remember to blink.",
];

const CHATS: [&str; 8] = [
    "hi mika!",
    "what are you up to tonight?",
    "do you like music?",
    "tell me a joke",
    "what is your favourite colour?",
    "how was your day?",
    "any tips for learning to draw?",
    "good night mika!",
];

/// What the subscriber saw, in arrival order.
#[derive(Default)]
struct Seen {
    /// (utterance, start, count)
    audio: Vec<(u32, u64, u64)>,
    /// (utterance, sample)
    frames: Vec<(u32, u64)>,
    /// (utterance, start, end)
    captions: Vec<(u32, u64, u64)>,
    /// utterance → cut sample
    cuts: BTreeMap<u32, u64>,
    rate: u64,
    fps: u64,
    closed: Option<String>,
}

fn subscriber(mut c: raw::Conn, seen: Arc<Mutex<Seen>>, stop: Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::Relaxed) {
        let f = match c.read_frame() {
            Ok(f) => f,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                seen.lock().unwrap().closed = Some(e.to_string());
                return;
            }
        };
        let mut s = seen.lock().unwrap();
        match f.opcode {
            raw::BINARY => match parse_binary(&f.payload) {
                Some(Binary::Audio {
                    utterance,
                    start,
                    pcm,
                }) => s.audio.push((utterance, start, pcm.len() as u64)),
                Some(Binary::Frame {
                    utterance, sample, ..
                }) => s.frames.push((utterance, sample)),
                None => {}
            },
            raw::TEXT => {
                let Ok(v) = serde_json::from_slice::<Value>(&f.payload) else {
                    continue;
                };
                match v["type"].as_str() {
                    Some("hello") => {
                        s.rate = v["sample_rate"].as_u64().unwrap_or(0);
                        s.fps = v["fps"].as_u64().unwrap_or(0);
                    }
                    Some("caption") => s.captions.push((
                        v["utterance"].as_u64().unwrap_or(0) as u32,
                        v["start"].as_u64().unwrap_or(0),
                        v["end"].as_u64().unwrap_or(0),
                    )),
                    Some("state") if v["state"] == "interrupted" => {
                        s.cuts.insert(
                            v["utterance"].as_u64().unwrap_or(0) as u32,
                            v["sample"].as_u64().unwrap_or(0),
                        );
                    }
                    _ => {}
                }
            }
            raw::CLOSE => {
                s.closed = Some(format!("{:?}", f.close()));
                return;
            }
            _ => {}
        }
    }
}

#[derive(Default, Debug)]
struct Verdict {
    utterances: usize,
    interrupted: usize,
    clauses: usize,
    audio_secs: f64,
    audio_gap_samples: u64,
    audio_overlap_samples: u64,
    audio_discontinuities: usize,
    late_clauses: usize,
    audio_past_cut: usize,
    frames: usize,
    missing_frames: usize,
    out_of_span_frames: usize,
    frame_order_violations: usize,
    audio_order_violations: usize,
    max_grid_drift: u64,
    pause_secs: f64,
}

/// One utterance's audio chunks (start, count), frame stamps and caption spans (start, end).
type Utterance = (Vec<(u64, u64)>, Vec<u64>, Vec<(u64, u64)>);

fn analyse(s: &Seen) -> Verdict {
    let mut v = Verdict::default();
    let rate = s.rate;
    let fps = s.fps.max(1);
    // Order.
    for w in s.frames.windows(2) {
        v.frame_order_violations += usize::from(w[1].1 <= w[0].1);
    }
    for w in s.audio.windows(2) {
        v.audio_order_violations += usize::from(w[1].1 <= w[0].1);
    }
    // Per utterance.
    let mut utts: BTreeMap<u32, Utterance> = BTreeMap::new();
    for &(u, a, n) in &s.audio {
        utts.entry(u).or_default().0.push((a, n));
    }
    for &(u, f) in &s.frames {
        if u != 0 {
            utts.entry(u).or_default().1.push(f);
        }
    }
    for &(u, a, b) in &s.captions {
        utts.entry(u).or_default().2.push((a, b));
    }
    for (u, (audio, frames, caps)) in &utts {
        if audio.is_empty() && caps.is_empty() {
            continue;
        }
        v.utterances += 1;
        let cut = s.cuts.get(u).copied();
        v.interrupted += usize::from(cut.is_some());
        v.clauses += caps.len();
        for w in audio.windows(2) {
            let end = w[0].0 + w[0].1;
            if w[1].0 != end {
                v.audio_discontinuities += 1;
                // A gap where a clause starts: that clause came late (the model or voice fell
                // behind the clock), not a hole inside audio already scheduled.
                if caps.iter().any(|&(a, _)| a == w[1].0) {
                    v.late_clauses += 1;
                }
                if w[1].0 > end {
                    v.audio_gap_samples += w[1].0 - end;
                } else {
                    v.audio_overlap_samples += end - w[1].0;
                }
            }
        }
        for &(a, n) in audio {
            v.audio_secs += n as f64 / rate.max(1) as f64;
            if let Some(c) = cut
                && a + n > c
            {
                v.audio_past_cut += 1;
            }
        }
        // The expected frames: each clause's grid inside its span, and in the utterance's audio that
        // no clause covers (its pauses, `<break/>`s: silence with the face idling) the session's
        // global grid, the one idle frames use; all cut at an interrupt.
        let grid = |a: u64, k: u64| a + (k * rate * 2 + fps) / (2 * fps);
        let mut want = std::collections::BTreeSet::new();
        for &(a, b) in caps {
            let end = cut.map_or(b, |c| b.min(c));
            let mut k = 0u64;
            while grid(a, k) < end {
                want.insert(grid(a, k));
                k += 1;
            }
        }
        let mut pauses: Vec<(u64, u64)> = Vec::new();
        for &(a, n) in audio {
            let end = cut.map_or(a + n, |c| (a + n).min(c));
            let mut at = a;
            while at < end {
                match caps.iter().find(|&&(s, e)| s <= at && at < e) {
                    Some(&(_, e)) => at = e,
                    None => {
                        let next = caps
                            .iter()
                            .map(|&(s, _)| s)
                            .filter(|&s| s > at)
                            .min()
                            .unwrap_or(end)
                            .min(end);
                        pauses.push((at, next));
                        // Global grid points in [at, next).
                        let mut k = (at * fps).div_ceil(rate).saturating_sub(1);
                        while grid(0, k) < next {
                            if grid(0, k) >= at {
                                want.insert(grid(0, k));
                            }
                            k += 1;
                        }
                        at = next;
                    }
                }
            }
        }
        v.pause_secs += pauses.iter().map(|&(a, b)| b - a).sum::<u64>() as f64 / rate as f64;
        let got: std::collections::BTreeSet<u64> = frames.iter().copied().collect();
        v.frames += got.len();
        v.missing_frames += want.difference(&got).count();
        v.out_of_span_frames += got.difference(&want).count();
        for &f in &got {
            // Distance to the nearest point of the grid that holds it: the session's in a pause,
            // else the clause's.
            let origin = if pauses.iter().any(|&(a, b)| a <= f && f < b) {
                Some(0)
            } else {
                caps.iter().rev().find(|&&(a, _)| a <= f).map(|&(a, _)| a)
            };
            if let Some(a) = origin {
                let k = ((f - a) * fps + rate / 2) / rate;
                v.max_grid_drift = v.max_grid_drift.max(grid(a, k).abs_diff(f));
            }
        }
    }
    v
}

fn main() {
    let secs: u64 = arg(0, 120);
    let seed: u64 = arg(1, 1);
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    println!(
        "soak: {secs} s, seed {seed}; load average at start {}",
        common::load_average()
    );
    let home = temp_home("");
    let t0 = Instant::now();
    let mut idol = Idol::start(home.path(), Duration::from_secs(120)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    println!("server up in {:.1} s", t0.elapsed().as_secs_f64());
    let sub =
        raw::connect(idol.addr, &Upgrade::default(), Duration::from_secs(30)).expect("subscriber");
    assert!(sub.upgraded());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || subscriber(sub, seen, stop))
    };
    let mut ctl =
        raw::connect(idol.addr, &Upgrade::default(), Duration::from_secs(30)).expect("controller");
    ctl.send_text(r#"{"type":"subscribe","id":"quiet","streams":[]}"#)
        .unwrap();
    ctl.until_text(|v| v["id"] == "quiet").unwrap();
    let ping = |ctl: &mut raw::Conn, n: u64| -> Option<(Instant, u64)> {
        ctl.send_text(&json!({"type": "ping", "id": n}).to_string())
            .ok()?;
        let v = ctl
            .until_text(|v| v["type"] == "pong" && v["id"] == n)
            .ok()??;
        Some((Instant::now(), v["sample"].as_u64()?))
    };
    let first_pong = ping(&mut ctl, 0).expect("pong");
    let mut last_pong = first_pong;
    let mut rss: Vec<(f64, f64)> = vec![];
    let (mut says, mut chats, mut interrupts, mut refused) = (0, 0, 0, 0);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut next_rss = start;
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let action = r.random_range(0..10);
        let msg = match action {
            0..=4 => {
                says += 1;
                json!({"type": "say", "id": n, "text": SAYS[r.random_range(0..SAYS.len())]})
            }
            5..=7 => {
                chats += 1;
                json!({"type": "chat", "id": n, "user": "viewer", "text": CHATS[r.random_range(0..CHATS.len())]})
            }
            _ => {
                interrupts += 1;
                json!({"type": "interrupt", "id": n})
            }
        };
        if ctl.send_text(&msg.to_string()).is_err() {
            println!("the controller's connection closed");
            break;
        }
        match ctl.until_text(|v| v["id"] == n) {
            Ok(Some(v)) if v["type"] == "error" => {
                refused += 1;
                println!("  refused: {v}");
            }
            Ok(Some(_)) => {}
            _ => {
                println!("the controller's connection closed");
                break;
            }
        }
        // Wait 1.5 to 6 s (a reply may still be speaking: the next one queues or interrupts it).
        let wait = Duration::from_millis(r.random_range(1500..6000));
        let until = Instant::now() + wait;
        while Instant::now() < until.min(end) {
            if Instant::now() >= next_rss {
                if let Some(m) = idol.rss_mib() {
                    rss.push((start.elapsed().as_secs_f64(), m));
                }
                next_rss += Duration::from_secs(5);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(p) = ping(&mut ctl, 1_000_000 + n) {
            last_pong = p;
        }
        if idol.exited().is_some() {
            println!("the server died");
            break;
        }
    }
    // Let the last utterance finish, then stop reading.
    let _ = ctl.send_text(r#"{"type":"interrupt","id":"end"}"#);
    let _ = ctl.until_text(|v| v["id"] == "end");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = reader.join();
    let wall = start.elapsed().as_secs_f64();
    let s = seen.lock().unwrap();
    let v = analyse(&s);
    let rate = s.rate as f64;
    // Session clock against the wall clock between the first and last pong (each pong's sample is
    // the sample being heard when it was sent; the client's wall clock adds its own jitter).
    let wall_span = last_pong.0.duration_since(first_pong.0).as_secs_f64();
    let clock_drift = (last_pong.1 as f64 - first_pong.1 as f64) - wall_span * rate;
    let peak = idol.peak_mib().unwrap_or(f64::NAN);
    let crashed = idol.exited().is_some();
    let panics = idol.panics();
    let _ = idol.stop();

    println!(
        "\nsoak over {wall:.0} s: {says} say, {chats} chat, {interrupts} interrupt requests ({refused} refused)"
    );
    println!("{:<44} {:>12}", "check", "value");
    let row = |k: &str, x: String| println!("{k:<44} {x:>12}");
    row(
        "utterances seen (interrupted)",
        format!("{} ({})", v.utterances, v.interrupted),
    );
    row("clauses", v.clauses.to_string());
    row("audio received, s", format!("{:.1}", v.audio_secs));
    row(
        "of which pauses (no caption), s",
        format!("{:.1}", v.pause_secs),
    );
    row(
        "audio discontinuities within an utterance",
        v.audio_discontinuities.to_string(),
    );
    row(
        "  of which where a clause starts (late clause)",
        v.late_clauses.to_string(),
    );
    row(
        "  gap samples / overlap samples",
        format!("{} / {}", v.audio_gap_samples, v.audio_overlap_samples),
    );
    row(
        "audio chunks past an interrupt's cut",
        v.audio_past_cut.to_string(),
    );
    row("speaking frames", v.frames.to_string());
    row(
        "missing frames (grid points in a clause)",
        v.missing_frames.to_string(),
    );
    row("out-of-span frames", v.out_of_span_frames.to_string());
    row(
        "frame stamps out of order",
        v.frame_order_violations.to_string(),
    );
    row(
        "audio starts out of order",
        v.audio_order_violations.to_string(),
    );
    row(
        "frame grid drift, max samples",
        v.max_grid_drift.to_string(),
    );
    row(
        "session clock vs wall clock, samples",
        format!("{clock_drift:+.0} over {wall_span:.0} s"),
    );
    row(
        "subscriber closed early",
        format!("{:?}", s.closed.is_some()),
    );
    if let Some(c) = &s.closed {
        println!("  ({c})");
    }
    // Memory: growth after the warm-up (5 minutes, or 1 minute in a run shorter than 10 minutes).
    let warm = if wall >= 600.0 { 300.0 } else { 60.0 };
    let at_warm = rss.iter().find(|(t, _)| *t >= warm).map(|x| x.1);
    let last = rss.last().map(|x| x.1);
    println!("\nserver RSS (MiB) every 5 s:");
    for chunk in rss.chunks(12) {
        println!(
            "  {}",
            chunk
                .iter()
                .map(|(t, m)| format!("{t:>4.0}s {m:>5.0}"))
                .collect::<Vec<_>>()
                .join("  ")
        );
    }
    if let (Some(a), Some(b)) = (at_warm, last) {
        row(
            &format!("RSS growth after the first {warm:.0} s"),
            format!("{:+.1}% ({a:.0} -> {b:.0} MiB)", 100.0 * (b - a) / a),
        );
    }
    row("peak RSS, MiB", format!("{peak:.0}"));
    row(
        "server crashed / panics",
        format!("{crashed} / {}", panics.len()),
    );
    for p in panics {
        println!("  {p}");
    }
    drop(home);
    if crashed {
        std::process::exit(1);
    }
}
