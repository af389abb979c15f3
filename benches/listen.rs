//! The host's voice: Whisper on candle (idol) beside faster-whisper (CTranslate2) on the same
//! weights at one thread — word error and speed — and, with the real stages served, the time from
//! the end of the host's speech to the idol's first audio.
//!
//! `cargo bench --bench listen [-- --runs 5 --latency-runs 5 --model tiny.en --candle-runs 0]`
//!
//! `--candle-runs N` (N > 0) also times candle's own Whisper (`candle_transformers`) on the same
//! converted weights, greedy as idol, N runs per clip: the implementation idol used before its
//! own network (src/listen/net.rs), for a before/after in the same run.
//!
//! Env: `IDOL_WHISPER_PY` (a python with faster-whisper; default
//! `~/.cache/idol-anchors/whisper-venv/bin/python`: `python3 -m venv DIR && DIR/bin/pip install
//! faster-whisper`). Without it only idol's side is measured. Clips: the real recordings in
//! tests/data (bobby, mary, arctic_a0009) with their reference text.

use futures_util::StreamExt;
use idol::assets::Home;
use idol::config::Config;
use idol::listen::host::{FileInput, HostOptions, HostVoice, PerformHost};
use idol::listen::{Whisper, WhisperFiles, word_error_rate};
use idol::perform::PerformConfig;
use idol::server::protocol::{Binary, parse_binary};
use idol::server::{Server, ServerOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const CLIPS: [(&str, &str); 3] = [
    ("bobby.wav", "Bobby ripped the ledger."),
    ("mary.wav", "Mary rolled the barrel."),
    (
        "arctic_a0009.wav",
        "He turned sharply, and faced Gregson across the table.",
    ),
];
/// Where arctic_a0009's speech ends (its phone labels), seconds.
const ARCTIC_SPEECH_END: f64 = 2.925;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn flag(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn pcm16k(home: &Home, name: &str) -> Vec<f32> {
    let a = idol::audio::decode_file(home.path(format!("tests/data/{name}"))).unwrap();
    idol::audio::resample(&a.samples, a.sample_rate, 16_000)
}

fn write_wav16(path: &Path, pcm: &[f32]) {
    let data: Vec<u8> = pcm
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect();
    let mut w = Vec::with_capacity(44 + data.len());
    w.extend(b"RIFF");
    w.extend((36 + data.len() as u32).to_le_bytes());
    w.extend(b"WAVEfmt ");
    w.extend(16u32.to_le_bytes());
    w.extend(1u16.to_le_bytes());
    w.extend(1u16.to_le_bytes());
    w.extend(16_000u32.to_le_bytes());
    w.extend(32_000u32.to_le_bytes());
    w.extend(2u16.to_le_bytes());
    w.extend(16u16.to_le_bytes());
    w.extend(b"data");
    w.extend((data.len() as u32).to_le_bytes());
    w.extend(data);
    std::fs::write(path, w).unwrap();
}

/// A faster-whisper folder for `files`: the model, config and tokenizer (linked, else copied), and the
/// vocabulary.txt CTranslate2 wants, written from the tokenizer (one token a line, by id).
fn ct2_folder(files: &WhisperFiles, dir: &Path) {
    for (from, to) in [
        (&files.model, "model.bin"),
        (&files.config, "config.json"),
        (&files.tokenizer, "tokenizer.json"),
    ] {
        let _ = std::fs::remove_file(dir.join(to));
        // a hard link where the file system allows it (any OS), else a copy
        std::fs::hard_link(from, dir.join(to))
            .or_else(|_| std::fs::copy(from, dir.join(to)).map(|_| ()))
            .unwrap();
    }
    let tok = tokenizers::Tokenizer::from_file(&files.tokenizer).unwrap();
    let n = tok.get_vocab_size(true);
    let mut lines = vec![];
    for id in 0..n as u32 {
        lines.push(tok.id_to_token(id).unwrap_or_default());
    }
    std::fs::write(dir.join("vocabulary.txt"), lines.join("\n") + "\n").unwrap();
}

fn rt_total(rows: &Option<Vec<serde_json::Value>>) -> f64 {
    rows.iter()
        .flatten()
        .map(|r| r["seconds"].as_f64().unwrap_or(f64::NAN))
        .sum()
}

fn reference_py() -> Option<String> {
    if let Ok(p) = std::env::var("IDOL_WHISPER_PY") {
        return Some(p);
    }
    let p = PathBuf::from(std::env::var("HOME").ok()?)
        .join(".cache/idol-anchors/whisper-venv/bin/python");
    p.exists().then(|| p.display().to_string())
}

fn main() {
    // One compute thread for candle's matrix products (it reads rayon's variable), as the
    // reference gets one: set before anything starts a thread.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    let runs: usize = flag("--runs", "5").parse().unwrap();
    let latency_runs: usize = flag("--latency-runs", "5").parse().unwrap();
    let model = flag("--model", "tiny.en");
    let candle_runs: usize = flag("--candle-runs", "0").parse().unwrap();
    let home = Home::from_manifest_dir();
    let files = WhisperFiles::pinned(&home, &model);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "listen: Whisper {model}, {runs} timed runs per clip at 1 thread; load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let t = Instant::now();
    let mut w = Whisper::load(&files, None).expect("whisper");
    println!(
        "  idol load + convert: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let dir = tempfile::tempdir().unwrap();
    let mut wavs = vec![];
    let mut idol_rows = vec![];
    let mut short_rows = vec![];
    let mut candle_rows = vec![];
    let mut candle = (candle_runs > 0).then(|| CandleWhisper::load(&files));
    for (name, reference) in CLIPS {
        let pcm = pcm16k(&home, name);
        let wav = dir.path().join(name);
        write_wav16(&wav, &pcm);
        // Both sides read the same 16-bit samples.
        let pcm: Vec<f32> = pcm
            .iter()
            .map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round()) / 32768.0)
            .collect();
        wavs.push(wav);
        let text = w.text(&pcm).unwrap();
        let mut times = vec![];
        for _ in 0..runs {
            let t = Instant::now();
            w.text(&pcm).unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        w.set_short_windows(true);
        let short_text = w.text(&pcm).unwrap();
        let mut short_times = vec![];
        for _ in 0..runs {
            let t = Instant::now();
            w.text(&pcm).unwrap();
            short_times.push(t.elapsed().as_secs_f64());
        }
        w.set_short_windows(false);
        short_rows.push((short_text, median(short_times)));
        if let Some(c) = candle.as_mut() {
            let text = c.text(&pcm);
            let mut times = vec![];
            for _ in 0..candle_runs {
                let t = Instant::now();
                c.text(&pcm);
                times.push(t.elapsed().as_secs_f64());
            }
            candle_rows.push((text, median(times)));
        }
        idol_rows.push((name, reference, text, median(times)));
    }
    let reference = reference_py().and_then(|py| {
        let ct2 = dir.path().join("ct2");
        std::fs::create_dir_all(&ct2).unwrap();
        ct2_folder(&files, &ct2);
        let script = home.path("benches/listen_ref.py");
        let out = Command::new(&py)
            .arg(&script)
            .arg(&ct2)
            .args(&wavs)
            .args(["--threads", "1", "--runs", &runs.to_string()])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("reference failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (rows.len() == CLIPS.len()).then_some(rows)
    });
    println!(
        "| clip | idol text | idol WER | idol s | faster-whisper text | f-w WER | f-w s | speed idol/f-w |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let (mut iw, mut rw, mut it, mut rt) = (0.0, 0.0, 0.0, 0.0);
    for (i, (name, reference_text, text, secs)) in idol_rows.iter().enumerate() {
        let e = word_error_rate(reference_text, text);
        iw += e;
        it += secs;
        match &reference {
            Some(rows) => {
                let rtext = rows[i]["text"].as_str().unwrap_or("");
                let rsecs = rows[i]["seconds"].as_f64().unwrap_or(f64::NAN);
                let re = word_error_rate(reference_text, rtext);
                rw += re;
                rt += rsecs;
                println!(
                    "| {name} | {text} | {e:.2} | {secs:.3} | {rtext} | {re:.2} | {rsecs:.3} | {:.2}x |",
                    rsecs / secs
                );
            }
            None => println!("| {name} | {text} | {e:.2} | {secs:.3} | - | - | - | - |"),
        }
    }
    let n = CLIPS.len() as f64;
    if !candle_rows.is_empty() {
        println!("candle's Whisper (before), same weights, {candle_runs} runs per clip:");
        let (mut cw, mut ct) = (0.0, 0.0);
        for ((name, reference_text, _, secs), (text, csecs)) in idol_rows.iter().zip(&candle_rows) {
            let e = word_error_rate(reference_text, text);
            cw += e;
            ct += csecs;
            println!(
                "| {name} | {text} | {e:.2} | {csecs:.3} | idol {:.2}x faster |",
                csecs / secs
            );
        }
        println!(
            "candle: mean WER {:.3}, total {ct:.3} s{}",
            cw / n,
            if reference.is_some() {
                format!(": {:.2}x faster-whisper's speed", rt_total(&reference) / ct)
            } else {
                String::new()
            }
        );
    }
    println!("idol with short windows (the utterance + 1 s encoded, as the live path does):");
    let (mut sw, mut st) = (0.0, 0.0);
    for ((name, reference_text, _, _), (text, secs)) in idol_rows.iter().zip(&short_rows) {
        let e = word_error_rate(reference_text, text);
        sw += e;
        st += secs;
        println!("| {name} | {text} | {e:.2} | {secs:.3} |");
    }
    println!(
        "short windows: mean WER {:.3}, total {:.3} s{}",
        sw / n,
        st,
        if reference.is_some() {
            format!(": {:.2}x faster-whisper's speed", rt_total(&reference) / st)
        } else {
            String::new()
        }
    );
    if reference.is_some() {
        println!(
            "mean WER idol {:.3}, faster-whisper {:.3} (difference {:+.3}); total time idol {:.3} s, faster-whisper {:.3} s: idol runs at {:.2}x faster-whisper's speed",
            iw / n,
            rw / n,
            (iw - rw) / n,
            it,
            rt,
            rt / it
        );
    } else {
        println!(
            "mean WER idol {:.3}; total {:.3} s (no reference: set IDOL_WHISPER_PY)",
            iw / n,
            it
        );
    }
    drop(w);
    if latency_runs > 0 {
        latency(&home, &model, latency_runs);
    }
}

/// The real stages served; the host says arctic_a0009 (paced as a microphone) with barge-in on:
/// from the end of the speech (its labels) to the first audio of the idol's answer.
fn latency(home: &Home, model: &str, runs: usize) {
    // The served idol uses the machine's cores as in `idol serve`.
    // SAFETY: set before the stages start their threads; Whisper reads it when it computes.
    unsafe { std::env::remove_var("RAYON_NUM_THREADS") };
    let config = Config::load_or_default(&home.path("idol.toml")).expect("idol.toml");
    let mut stages = idol::perform::adapters::build_stages(home, &config).expect("stages");
    stages.persona =
        idol::perform::adapters::build_conversation(home, &config, false).expect("persona");
    stages.persona.set_max_tokens(40);
    let server = Server::start(
        stages,
        PerformConfig {
            fps: config.face.fps,
            warm_up: true,
            ..PerformConfig::default()
        },
        ServerOptions {
            port: 0,
            max_client_lag: Duration::from_secs(30),
            ..ServerOptions::default()
        },
    )
    .expect("server");
    let opts = HostOptions {
        whisper: WhisperFiles::pinned(home, model),
        language: None,
        vad_model: home.path(idol::listen::SILERO_VAD),
        ort_library: home.ort_library(),
        segmenter: idol::listen::vad::SegmenterConfig::default(),
        short_windows: false,
    };
    let lead = 0.5;
    let mut host = vec![0.0f32; (lead * 16_000.0) as usize];
    host.extend(pcm16k(home, "arctic_a0009.wav"));
    host.extend(vec![0.0f32; 24_000]);
    let speech_end = lead + ARCTIC_SPEECH_END;
    let addr = server.addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut firsts = vec![];
    let mut decided = vec![];
    let mut words = vec![];
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream"))
            .await
            .unwrap();
        for i in 0..runs + 1 {
            let (tx, rx) = crossbeam_channel::unbounded();
            struct Forward(PerformHost, crossbeam_channel::Sender<(Instant, Instant)>);
            impl idol::listen::host::HostEvents for Forward {
                fn speech_started(&mut self) {
                    self.0.speech_started()
                }
                fn utterance(&mut self, text: &str, heard: idol::listen::host::Heard) {
                    let _ = self.1.send((heard.ended_at, heard.transcribed_at));
                    self.0.utterance(text, heard)
                }
            }
            let voice = HostVoice::start(
                &opts,
                Box::new(FileInput::from_pcm(host.clone(), true)),
                Box::new(Forward(
                    PerformHost {
                        handle: server.perform().clone(),
                        user: "host".into(),
                        barge_in: true,
                    },
                    tx,
                )),
            )
            .unwrap();
            let t0 = Instant::now();
            let end_of_speech = t0 + Duration::from_secs_f64(speech_end);
            let mut utt = None;
            let mut first = None;
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Text(t) => {
                        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                        if v["type"] == "asked" && v["source"] == "host" {
                            utt = v["utterance"].as_u64();
                        }
                        if v["type"] == "state" && v["state"] == "idle" && first.is_some() {
                            break;
                        }
                    }
                    Message::Binary(b) => {
                        if let Some(Binary::Audio { utterance, .. }) = parse_binary(&b)
                            && Some(utterance as u64) == utt
                            && first.is_none()
                        {
                            first = Some(Instant::now());
                        }
                    }
                    _ => {}
                }
            }
            voice.join().unwrap();
            let (ended, transcribed) = rx.recv().unwrap();
            let ms = |a: Instant| a.saturating_duration_since(end_of_speech).as_secs_f64() * 1000.0;
            let f = ms(first.unwrap());
            println!(
                "  run {i}: VAD end {:5.0} ms, words {:5.0} ms, first audio {:5.0} ms after the end of speech{}",
                ms(ended),
                ms(transcribed),
                f,
                if i == 0 { " (warm-up, not counted)" } else { "" }
            );
            if i > 0 {
                firsts.push(f);
                decided.push(ms(ended));
                words.push(ms(transcribed));
            }
        }
    });
    println!(
        "end of speech → first audio p50 {:.0} ms (VAD decides at {:.0} ms, words ready at {:.0} ms), N = {runs}",
        median(firsts),
        median(decided),
        median(words)
    );
}

/// candle's Whisper on the same converted weights, decoded as idol decodes (greedy, the same
/// suppression, no timestamps; tiny.en's prompt): what idol ran before its own network.
struct CandleWhisper {
    model: candle_transformers::models::whisper::model::Whisper,
    unembed: candle_core::Tensor,
    tokenizer: tokenizers::Tokenizer,
    prompt: Vec<u32>,
    eot: u32,
    suppress: Vec<bool>,
    suppress_begin: Vec<u32>,
    filters: Vec<f32>,
    n_mels: usize,
}

impl CandleWhisper {
    fn load(files: &WhisperFiles) -> CandleWhisper {
        use candle_core::{DType, Device};
        let ct2 = idol::listen::ctranslate2::Ct2Model::load(&files.model).unwrap();
        let cfg = ct2.whisper_config().unwrap();
        let tensors = ct2.whisper_tensors(&Device::Cpu).unwrap();
        let unembed = tensors["model.decoder.embed_tokens.weight"]
            .t()
            .unwrap()
            .contiguous()
            .unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model =
            candle_transformers::models::whisper::model::Whisper::load(&vb, cfg.clone()).unwrap();
        let tokenizer = tokenizers::Tokenizer::from_file(&files.tokenizer).unwrap();
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&files.config).unwrap()).unwrap();
        let ids = |k: &str| -> Vec<u32> {
            c[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_u64())
                        .map(|v| v as u32)
                        .collect()
                })
                .unwrap_or_default()
        };
        let id = |t: &str| tokenizer.token_to_id(t).unwrap();
        let eot = id("<|endoftext|>");
        let mut suppress: Vec<bool> = (0..cfg.vocab_size as u32).map(|t| t > eot).collect();
        for t in ids("suppress_ids") {
            suppress[t as usize] = true;
        }
        CandleWhisper {
            prompt: vec![id("<|startoftranscript|>"), id("<|notimestamps|>")],
            eot,
            suppress,
            suppress_begin: ids("suppress_ids_begin"),
            filters: idol::listen::mel::mel_filters(cfg.num_mel_bins),
            n_mels: cfg.num_mel_bins,
            model,
            unembed,
            tokenizer,
        }
    }

    fn text(&mut self, pcm: &[f32]) -> String {
        use candle_core::{Device, IndexOp, Tensor};
        use idol::listen::mel;
        let (spec, frames) = mel::log_mel(pcm, &self.filters, self.n_mels);
        assert!(frames <= mel::N_FRAMES, "one window");
        let window = mel::pad_frames(&spec, self.n_mels, frames, 0, mel::N_FRAMES);
        let mel = Tensor::from_vec(window, (1, self.n_mels, mel::N_FRAMES), &Device::Cpu).unwrap();
        let features = self.model.encoder.forward(&mel, true).unwrap();
        let mut tokens = self.prompt.clone();
        let mut words = vec![];
        for step in 0..self.model.config.max_target_positions / 2 {
            let input = Tensor::new(tokens.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let hidden = self
                .model
                .decoder
                .forward(&input, &features, step == 0)
                .unwrap();
            let last: Vec<f32> = hidden
                .i((0, tokens.len() - 1..))
                .and_then(|h| h.matmul(&self.unembed))
                .and_then(|l| l.i(0))
                .and_then(|l| l.to_vec1())
                .unwrap();
            let mut best: Option<(u32, f32)> = None;
            for (t, &v) in last.iter().enumerate() {
                if self.suppress[t] || (step == 0 && self.suppress_begin.contains(&(t as u32))) {
                    continue;
                }
                if best.is_none_or(|(_, b)| v > b) {
                    best = Some((t as u32, v));
                }
            }
            let Some((next, _)) = best else { break };
            if next == self.eot {
                break;
            }
            tokens.push(next);
            words.push(next);
        }
        self.tokenizer
            .decode(&words, true)
            .unwrap()
            .trim()
            .to_string()
    }
}
