//! Scripted performances (`idol::script`, `idol render`, `idol perform`) on the real Piper voice and
//! face solver: determinism, timing rules, recorded lines, captions, events, positioned errors, and
//! renders that fail without leaving output.

use crate::common::home;
use crate::common::{Run, data, idol_in};
use idol::face::Rig;
use idol::phonemize::EnglishPhonemizer;
use idol::script::{
    self, Performance, PiperLineVoice, RenderError, RenderOptions, Script, ScriptEventKind,
};
use idol::time::SampleTime;
use idol::tts::{PiperVoice, VoiceOptions};
use std::path::Path;
use std::sync::Arc;

const RATE: u32 = 22050;

fn voice(seed: u64) -> PiperLineVoice {
    let h = home();
    let options = VoiceOptions {
        seed,
        ..VoiceOptions::default()
    };
    let ph = Arc::new(EnglishPhonemizer::load(&h).unwrap());
    let v = PiperVoice::load(
        &h.path("voices/en_US-joe-medium.onnx"),
        &h.ort_library(),
        ph,
        &options,
    )
    .unwrap();
    PiperLineVoice::new(v, &options)
}

fn render_in(dir: &Path, src: &str) -> Result<Performance, RenderError> {
    let s = Script::parse(src, &dir.join("test.script.toml"), dir)?;
    script::render(
        &s,
        &mut voice(7),
        RenderOptions {
            rig: Rig::builtin("arkit52").unwrap(),
            fps: 60,
            seed: 7,
            rate: None,
            lipsync: None,
            progress: None,
            budget: idol::budget::Budget::default(),
        },
    )
}

fn samples(secs: f64) -> u64 {
    SampleTime::from_secs_f64(secs, RATE).unwrap().get()
}

/// A tone of `n` samples at `rate`, written as a 16-bit WAV.
fn tone(path: &Path, n: usize, rate: u32) {
    let pcm: Vec<f32> = (0..n)
        .map(|i| 0.3 * (i as f32 * 220.0 * std::f32::consts::TAU / rate as f32).sin())
        .collect();
    idol::tts::wav::write_wav(path, &pcm, rate).unwrap();
}

const SCRIPT: &str = r#"
[script]
seed = 11
fps = 30
gap = "250ms"
tail = "400ms"

[targets]
chat = { yaw = -20, pitch = -10 }

[[line]]
id = "one"
text = "[happy] Hello there! <nod> <break time=\"300ms\"/> Nice to see you."
emphasis = 0.5

[[line]]
id = "two"
text = "[sad:0.5] This one is slower."
rate = 1.3
look_at = "chat"

[[line]]
id = "three"
at = "9s"
text = "This one is slower."

[[event]]
name = "camera"
line = "two"
offset = "100ms"
data = { shot = "close" }

[[event]]
name = "lights"
at = "10.5s"
"#;

#[test]
fn render_command_is_byte_identical_across_runs() {
    let h = home();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("show.script.toml");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut outs = Vec::new();
    for run in ["a", "b"] {
        let out = dir.path().join(run);
        let o = idol_in(h.root())
            .arg("render")
            .arg(&script)
            .arg("--out")
            .arg(&out)
            .arg("--quiet")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        assert!(stderr.contains("faster than real time"), "{stderr}");
        outs.push(out);
    }
    for f in script::output::FILES {
        let a = std::fs::read(outs[0].join(f)).unwrap();
        let b = std::fs::read(outs[1].join(f)).unwrap();
        assert!(!a.is_empty(), "{f} is empty");
        assert!(a == b, "{f} differs between two seeded renders");
    }
    // A different seed changes the voice.
    let out = dir.path().join("c");
    let _ = idol_in(h.root())
        .arg("render")
        .arg(&script)
        .args(["--seed", "12", "--quiet", "--out"])
        .arg(&out)
        .ok();
    assert_ne!(
        std::fs::read(out.join("performance.wav")).unwrap(),
        std::fs::read(outs[0].join("performance.wav")).unwrap()
    );
    // The files agree with each other: frames cover the audio, events carry their samples.
    let wav = std::fs::read(outs[0].join("performance.wav")).unwrap();
    let n = (wav.len() as u64 - 44) / 2;
    let jsonl = std::fs::read_to_string(outs[0].join("frames.jsonl")).unwrap();
    assert_eq!(
        jsonl.lines().count() as u64 - 1,
        SampleTime::frames_in(n, RATE, 30)
    );
    let csv = std::fs::read_to_string(outs[0].join("frames.csv")).unwrap();
    assert_eq!(
        csv.lines().count() as u64 - 1,
        SampleTime::frames_in(n, RATE, 30)
    );
    let events = std::fs::read_to_string(outs[0].join("events.jsonl")).unwrap();
    let lights: serde_json::Value = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["name"] == "lights")
        .unwrap();
    assert_eq!(lights["sample"], samples(10.5));
    assert_eq!(lights["seconds"], 10.5);
    let vtt = std::fs::read_to_string(outs[0].join("captions.vtt")).unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n1\n00:00:00.000 --> "), "{vtt}");
    assert!(vtt.contains("Hello there!") && vtt.contains("This one is slower."));
}

#[test]
fn timing_captions_and_events_follow_the_script() {
    let dir = tempfile::tempdir().unwrap();
    let p = render_in(dir.path(), SCRIPT).unwrap();
    assert_eq!(p.rate, RATE);
    let l = &p.lines;
    assert_eq!(l.len(), 3);
    // after / gap / at.
    assert_eq!(l[0].range.start(), SampleTime::ZERO);
    assert_eq!(
        l[1].range.start().get(),
        l[0].range.end().get() + samples(0.25)
    );
    assert_eq!(l[2].range.start().get(), samples(9.0));
    assert!(l[1].range.end() <= l[2].range.start());
    // The end: the lights event at 10.5 s is after the last line + tail, so it sets the end.
    let natural = l[2].range.end().get() + samples(0.4);
    assert_eq!(p.pcm.len() as u64, natural.max(samples(10.5) + 1));
    // Gaps are silence; frames cover exactly the audio.
    let gap = l[0].range.end().get() as usize..l[1].range.start().get() as usize;
    assert!(
        p.pcm
            .slice(gap.start as u64, gap.end as u64)
            .iter()
            .all(|&x| x == 0.0)
    );
    assert_eq!(
        p.frames.len() as u64,
        SampleTime::frames_in(p.pcm.len() as u64, RATE, 60)
    );
    assert_eq!(p.frames.get(0).unwrap().at, SampleTime::ZERO);
    // Rate 1.3 makes line two slower than the same words at the voice's pace (line three).
    assert_eq!(l[1].text, l[2].text);
    assert!(
        l[1].range.len() as f64 > 1.15 * l[2].range.len() as f64,
        "{l:?}"
    );
    assert_eq!(l[0].text, "Hello there! Nice to see you.");
    // Captions: sentences of each line, inside it, the first starting with the line; the break's
    // silence lies between the two captions of line one.
    let caps: Vec<_> = p.captions.iter().filter(|c| c.line == 0).collect();
    assert_eq!(caps.len(), 2);
    assert_eq!(caps[0].range.start(), l[0].range.start());
    assert_eq!(caps[1].range.end(), l[0].range.end());
    assert!(caps[1].range.start().get() >= caps[0].range.end().get() + samples(0.3));
    for c in &p.captions {
        let line = &l[c.line];
        assert!(line.range.start() <= c.range.start() && c.range.end() <= line.range.end());
    }
    assert_eq!(p.captions.last().unwrap().text, "This one is slower.");
    let srt = script::output::srt(&p.captions, RATE);
    let third = p.captions.last().unwrap();
    assert!(srt.contains(&format!(
        "00:00:09,000 --> 00:00:{:02},{:03}",
        third.range.end().as_millis(RATE) / 1000,
        third.range.end().as_millis(RATE) % 1000
    )));
    // Events at their samples.
    let at = |pred: &dyn Fn(&ScriptEventKind) -> bool| {
        p.events
            .iter()
            .filter(|e| pred(&e.kind))
            .map(|e| e.at)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        at(&|k| matches!(k, ScriptEventKind::Event { name, .. } if name == "camera")),
        [SampleTime(l[1].range.start().get() + samples(0.1))]
    );
    assert_eq!(
        at(&|k| matches!(k, ScriptEventKind::LineStart { .. })),
        l.iter().map(|l| l.range.start()).collect::<Vec<_>>()
    );
    let brk = at(&|k| matches!(k, ScriptEventKind::Break { millis: 300 }));
    assert_eq!(brk, [caps[0].range.end()]);
    assert!(
        p.pcm
            .slice(brk[0].get(), brk[0].get() + samples(0.3))
            .iter()
            .all(|&x| x == 0.0)
    );
    let nod = at(&|k| matches!(k, ScriptEventKind::Action { name, .. } if name == "nod"));
    let nice = p
        .words
        .items()
        .iter()
        .find(|w| w.value.text == "Nice")
        .unwrap()
        .start();
    assert_eq!(
        nod,
        [nice],
        "the nod written before the break and 'Nice' lands on 'Nice', after the silence"
    );
    assert_eq!(
        at(&|k| matches!(k, ScriptEventKind::LookAt { target, .. } if target == "chat")),
        [l[1].range.start()]
    );
    // Emphasis 0.5 raises line one's happy (1.0 stays capped), line two's sad stays 0.5.
    let sad = p.cues.iter().find(|c| c.name == "sad").unwrap();
    assert_eq!(sad.intensity, 0.5);
    let first_word = p
        .words
        .items()
        .iter()
        .find(|w| w.start() >= l[1].range.start())
        .unwrap();
    assert_eq!(first_word.value.text, "This");
    assert_eq!(
        sad.at,
        first_word.start(),
        "a mood is at the word it precedes"
    );
    // The face looks toward the chat target (left eye yaw negative) once line two has begun.
    let k = p
        .frames
        .iter()
        .position(|f| f.at.get() > l[1].range.start().get() + samples(0.3))
        .unwrap();
    assert!(p.frames.get(k).unwrap().gaze[0].yaw < -0.2);
}

/// A tag is at the spoken word it precedes even where the voice says more words than are written
/// (`42` is "forty two", `$5` "five dollars").
#[test]
fn tags_after_numbers_land_on_their_word() {
    let dir = tempfile::tempdir().unwrap();
    let p = render_in(
        dir.path(),
        "[[line]]\ntext = \"I counted 42 <wave> stars, and it cost $5 <nod> tonight.\"\n",
    )
    .unwrap();
    let start_of = |w: &str| {
        p.words
            .items()
            .iter()
            .find(|x| x.value.text.eq_ignore_ascii_case(w))
            .unwrap_or_else(|| panic!("{w} not spoken: {:?}", p.words.items()))
            .start()
    };
    let cue = |n: &str| p.cues.iter().find(|c| c.name == n).unwrap().at;
    assert_eq!(cue("wave"), start_of("stars"));
    assert_eq!(cue("nod"), start_of("tonight"));
}

#[test]
fn overlapping_at_is_a_positioned_error_once_the_voice_has_spoken() {
    let dir = tempfile::tempdir().unwrap();
    let src = "[[line]]\ntext = \"This first line takes well over a second to say out loud.\"\n\n[[line]]\ntext = \"Too soon.\"\nat = \"0.5s\"\n";
    let e = render_in(dir.path(), src).unwrap_err();
    let RenderError::Script(e) = e else {
        panic!("not a script error: {e}")
    };
    assert_eq!((e.line, e.column), (6, 6), "{e}");
    assert_eq!(e.field, "line[2].at");
    assert!(e.message.contains("overlaps line 1"), "{e}");
    assert!(e.to_string().starts_with(&format!(
        "{}:6:6",
        dir.path().join("test.script.toml").display()
    )));
}

#[test]
fn recorded_lines_keep_their_exact_duration() {
    let dir = tempfile::tempdir().unwrap();
    // A take at the voice's rate, one at 16 kHz, and one with the bobby alignment.
    tone(&dir.path().join("a.wav"), 27_221, RATE);
    tone(&dir.path().join("b.wav"), 20_001, 16_000);
    tone(&dir.path().join("c.wav"), samples(1.194625) as usize, RATE);
    std::fs::copy(data("bobby_phones.TextGrid"), dir.path().join("c.TextGrid")).unwrap();
    let src = r#"
[[line]]
text = "Spoken first."
[[line]]
audio = "a.wav"
text = "[happy] A recorded line. <nod>"
[[line]]
audio = "b.wav"
gap = 0
[[line]]
audio = "c.wav"
phonemes = "c.TextGrid"
text = "Bobby ripped the ledger."
"#;
    let p = render_in(dir.path(), src).unwrap();
    let l = &p.lines;
    assert_eq!(l[1].range.len(), 27_221);
    assert_eq!(l[2].range.len(), (20_001u64 * 22_050 + 8_000) / 16_000);
    assert_eq!(l[2].range.start(), l[1].range.end());
    assert_eq!(l[3].range.len(), samples(1.194625));
    // The take at the voice's rate is copied sample for sample.
    let a = &p
        .pcm
        .slice(l[1].range.start().get(), l[1].range.end().get());
    let want: Vec<f32> = (0..27_221)
        .map(|i| 0.3 * (i as f32 * 220.0 * std::f32::consts::TAU / RATE as f32).sin())
        .collect();
    assert!(
        a.iter()
            .zip(&want)
            .all(|(x, y)| (x - y).abs() < 1.0 / 16_000.0)
    );
    // Without an alignment the mouth rests (with a warning); with one it moves.
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("a.wav") && w.contains("no alignment")),
        "{:?}",
        p.warnings
    );
    let jaw = p.frames.channel("jawOpen").unwrap();
    let max_in = |r: idol::time::TimeRange| {
        p.frames
            .iter()
            .zip(&jaw)
            .filter(|(f, _)| r.contains(f.at))
            .map(|(_, j)| *j)
            .fold(0.0f32, f32::max)
    };
    assert!(max_in(l[1].range) < 0.05, "{}", max_in(l[1].range));
    assert!(max_in(l[3].range) > 0.2, "{}", max_in(l[3].range));
    // Captions come from the transcripts; tags are placed inside the take.
    let caps: Vec<&str> = p.captions.iter().map(|c| c.text.as_str()).collect();
    assert!(caps.contains(&"A recorded line.") && caps.contains(&"Bobby ripped the ledger."));
    let happy = p.cues.iter().find(|c| c.name == "happy").unwrap();
    assert_eq!(happy.at, l[1].range.start());
}

#[test]
fn recorded_lines_without_alignment_are_lip_synced_from_the_audio() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(data("bobby.wav"), dir.path().join("take.wav")).unwrap();
    let src = r#"
[[line]]
audio = "take.wav"
[[line]]
audio = "take.wav"
text = "Bobby ripped the ledger."
"#;
    let s = Script::parse(src, &dir.path().join("t.script.toml"), dir.path()).unwrap();
    let mut lipsync =
        script::AudioLipSync::new(Some(Arc::new(EnglishPhonemizer::load(&home()).unwrap())));
    let p = script::render(
        &s,
        &mut voice(7),
        RenderOptions {
            rig: Rig::builtin("arkit52").unwrap(),
            fps: 60,
            seed: 7,
            rate: None,
            lipsync: Some(&mut lipsync),
            progress: None,
            budget: idol::budget::Budget::default(),
        },
    )
    .unwrap();
    assert!(
        !p.warnings.iter().any(|w| w.contains("no alignment")),
        "{:?}",
        p.warnings
    );
    let jaw = p.frames.channel("jawOpen").unwrap();
    let close = p.frames.channel("mouthClose").unwrap();
    for line in &p.lines {
        // The 48 kHz take keeps its duration at the voice's rate.
        assert_eq!(line.range.len(), (57_342u64 * 22_050 + 24_000) / 48_000);
        let inside: Vec<usize> = p
            .frames
            .iter()
            .enumerate()
            .filter(|(_, f)| line.range.contains(f.at))
            .map(|(k, _)| k)
            .collect();
        // The mouth opens for the vowels and closes again for "b", "p" and the pauses.
        let open = inside.iter().map(|&k| jaw[k]).fold(0.0f32, f32::max);
        assert!(open > 0.2, "jaw never opens: {open}");
        let opened_then_closed = inside
            .windows(2)
            .any(|w| jaw[w[0]] > 0.15 && jaw[w[1]] < jaw[w[0]] * 0.5 || close[w[1]] > 0.3);
        assert!(opened_then_closed, "the mouth never closes again");
    }
}

#[test]
fn bad_scripts_give_positioned_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = |src: &str| match render_in(dir.path(), src) {
        Err(RenderError::Script(e)) => e,
        other => panic!(
            "expected a script error, got {:?}",
            other.map(|p| p.lines.len())
        ),
    };
    let x = e("[[line]]\ntext = \"Hi.\"\nvolume = 3\n");
    assert_eq!(
        (x.line, x.column, x.field.as_str()),
        (3, 1, "line[1].volume")
    );
    assert!(x.message.contains("expected one of") && x.message.contains("emphasis"));
    let x = e("[script]\ngap = \"a bit\"\n[[line]]\ntext = \"Hi.\"\n");
    assert_eq!((x.line, x.column, x.field.as_str()), (2, 7, "script.gap"));
    // A time too long is called that, not "negative".
    let x = e("[script]\ntail = \"100000s\"\n[[line]]\ntext = \"Hi.\"\n");
    assert_eq!((x.line, x.field.as_str()), (2, "script.tail"));
    assert!(
        x.message.contains("86400") && !x.message.contains("negative"),
        "{x}"
    );
    let x = e("[[line]]\ntext = \"Hi.\"\nlook_at = \"stage\"\n");
    assert_eq!((x.line, x.column), (3, 11));
    assert!(x.message.contains("\"camera\", \"ahead\""), "{x}");
    let x = e("[[line]]\ntext = \"Hi.\"\nemphasis = 3\n");
    assert!(x.message.contains("0..=1"), "{x}");
    let x = e("[[line]]\nid = \"a\"\ntext = \"Hi.\"\n[[event]]\nname = \"cam\"\nline = \"b\"\n");
    assert_eq!((x.line, x.field.as_str()), (6, "event[1].line"));
    let x = e("[[line]]\ntext = \"Hi.\"\n[[line]]\n");
    assert_eq!(x.field, "line[2]");
    assert!(x.message.contains("text") && x.message.contains("audio"));
    let x = e("[[line]]\ntext = \"Hi.\"\n[[line\n");
    assert_eq!(x.line, 3);
    // A missing take names its path.
    let r = render_in(dir.path(), "[[line]]\naudio = \"nope.wav\"\n");
    let Err(e @ RenderError::Audio { .. }) = r else {
        panic!("expected an audio error")
    };
    let RenderError::Audio { path, .. } = &e else {
        unreachable!()
    };
    assert_eq!(path, &dir.path().join("nope.wav"));
    // ... and where the script names it: file, line and field, like every other script error.
    let msg = e.to_string();
    assert!(
        msg.contains("test.script.toml:1:1: field `line[1].audio`"),
        "{msg}"
    );
    assert!(msg.contains("nope.wav"), "{msg}");
    // A broken alignment is placed too.
    std::fs::write(dir.path().join("take.lab"), "zero one aa\n").unwrap();
    idol::tts::wav::write_wav(&dir.path().join("take.wav"), &[0.0; 2205], 22050).unwrap();
    let r = render_in(
        dir.path(),
        "[[line]]\ntext = \"Hi.\"\n[[line]]\naudio = \"take.wav\"\nphonemes = \"take.lab\"\n",
    );
    let Err(e) = r else {
        panic!("a bad alignment is an error")
    };
    let msg = e.to_string();
    assert!(
        msg.contains("test.script.toml:3:1: field `line[2].phonemes`"),
        "{msg}"
    );
}

#[test]
fn a_failed_render_leaves_no_output() {
    let h = home();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.script.toml");
    // The first line renders; the second names a take that is not there.
    std::fs::write(
        &script,
        "[[line]]\ntext = \"Hello.\"\n[[line]]\naudio = \"missing.flac\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = idol_in(h.root())
        .arg("render")
        .arg(&script)
        .args(["--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("missing.flac"), "{stderr}");
    assert!(!out.exists());
    // An existing output folder keeps its files; nothing is left beside it.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("performance.wav"), b"old").unwrap();
    std::fs::write(
        &script,
        "[[line]]\ntext = \"Hello.\"\n[[line]]\ntext = \"Overlap.\"\nat = 0.1\n",
    )
    .unwrap();
    let o = idol_in(h.root())
        .arg("render")
        .arg(&script)
        .args(["--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("s.script.toml:5:6"), "{stderr}");
    assert_eq!(std::fs::read(out.join("performance.wav")).unwrap(), b"old");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn perform_command_plays_the_script_live() {
    let h = home();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("live.script.toml");
    std::fs::write(
        &script,
        "[script]\nseed = 1\ntail = 0\n[[line]]\nid = \"hi\"\ntext = \"[happy] Hi!\"\n[[event]]\nname = \"camera\"\nline = \"hi\"\ndata = { shot = 1 }\n",
    )
    .unwrap();
    let o = idol_in(h.root())
        .arg("perform")
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        // The camera event at the line's start, the mood at its first word.
        ["caption", "line_start", "event", "emotion", "line_end"],
        "{stdout}"
    );
    assert_eq!(lines[2]["data"]["shot"], 1);
}

mod server {
    //! The server's `perform` message: a script rendered with the real voice, performed live to a
    //! WebSocket client on the session clock (the session's own stages are fakes: a tone voice and a
    //! jaw-only face, which the script does not use).

    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use idol::perform::testing::{JawFace, ScriptedGenerator, ToneVoice};
    use idol::perform::{PerformConfig, SimpleSegmenter, Stages};
    use idol::script::live::ScriptRenderer;
    use idol::server::protocol::{Binary, parse_binary};
    use idol::server::{ConnPolicy, Server, ServerOptions};
    use serde_json::{Value, json};
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::Message;

    fn renderer() -> ScriptRenderer {
        let voice = Arc::new(parking_lot::Mutex::new(voice(5)));
        ScriptRenderer::new(move |s: &Script| {
            let mut v = voice.lock();
            v.reseed(5);
            script::render(
                s,
                &mut *v,
                RenderOptions {
                    rig: Rig::builtin("arkit52").unwrap(),
                    fps: 60,
                    seed: 5,
                    rate: None,
                    lipsync: None,
                    progress: None,
                    budget: idol::budget::Budget::default(),
                },
            )
            .map_err(Into::into)
        })
    }

    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// The next text message, or a summary of the next audio chunk.
    async fn next(ws: &mut Ws) -> Option<Value> {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return Some(serde_json::from_str::<Value>(t.as_str()).unwrap());
                }
                Some(Ok(Message::Binary(b))) => {
                    if let Some(Binary::Audio { utterance, pcm, .. }) = parse_binary(&b) {
                        return Some(
                            json!({"type": "audio", "utterance": utterance, "n": pcm.len()}),
                        );
                    }
                }
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    }

    /// Send `v`, return the next ack or error.
    async fn reply(ws: &mut Ws, v: Value) -> Value {
        ws.send(Message::Text(v.to_string().into())).await.unwrap();
        loop {
            let v = next(ws).await.expect("open");
            if matches!(v["type"].as_str(), Some("ack" | "error")) {
                return v;
            }
        }
    }

    const LIVE: &str = "[[line]]\ntext = \"[happy] Hello everyone! <nod> Welcome.\"\n[[line]]\ntext = \"Let's begin.\"\ngap = \"400ms\"\n";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn perform_message_plays_a_script_to_clients() {
        let r = renderer();
        let expected = r
            .render(&Script::parse(LIVE, Path::new("script"), Path::new(".")).unwrap())
            .unwrap();
        let server = Server::start(
            Stages {
                persona: idol::perform::testing::conversation(),
                generator: Box::new(ScriptedGenerator::new(["unused"])),
                segmenter: Box::new(SimpleSegmenter::new()),
                voice: Box::new(ToneVoice::new(RATE)),
                face: Box::new(JawFace::arkit(RATE, 60)),
            },
            PerformConfig::default(),
            ServerOptions {
                bind: [127, 0, 0, 1].into(),
                port: 0,
                max_clients: 4,
                max_client_lag: Duration::from_millis(5000),
                policy: ConnPolicy {
                    scripts: Some(r),
                    ..ConnPolicy::default()
                },
                rigs_dir: None,
                ..ServerOptions::default()
            },
        )
        .unwrap();
        let url = format!("ws://{}/v1/stream", server.addr());
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let _hello = next(&mut ws).await.unwrap();
        // Errors first: a bad script, a recorded line.
        let (mut ws2, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let e = reply(
            &mut ws2,
            json!({"type": "perform", "id": 1, "script": "[[line]]\nspeed = 2\n"}),
        )
        .await;
        assert_eq!(e["code"], "bad_script");
        assert!(
            e["message"].as_str().unwrap().starts_with("script:2:1"),
            "{e}"
        );
        let e = reply(
            &mut ws2,
            json!({"type": "perform", "script": "[[line]]\naudio = \"/etc/passwd\"\n"}),
        )
        .await;
        assert_eq!(e["code"], "bad_script");
        let ack = reply(
            &mut ws2,
            json!({"type": "perform", "id": "p", "script": LIVE}),
        )
        .await;
        assert_eq!(ack["of"], "perform");
        assert_eq!(ack["lines"], 2);
        let utt = ack["utterance"].as_u64().unwrap();
        // The watching client gets the performance: audio of exactly the rendered length, the
        // captions in order, then idle.
        let mut samples = 0usize;
        let mut captions = Vec::new();
        let mut spoke = false;
        while let Some(v) = next(&mut ws).await {
            match v["type"].as_str() {
                Some("audio") if v["utterance"] == utt => {
                    samples += v["n"].as_u64().unwrap() as usize
                }
                Some("caption") if v["utterance"] == utt => {
                    captions.push(v["text"].as_str().unwrap().to_string())
                }
                Some("state") => {
                    if v["utterance"] == utt && v["state"] == "speaking" {
                        spoke = true;
                    }
                    if spoke && v["state"] == "idle" {
                        break;
                    }
                }
                _ => {}
            }
        }
        assert_eq!(samples, expected.pcm.len());
        assert_eq!(captions, ["Hello everyone!", "Welcome.", "Let's begin."]);
    }
}

#[test]
fn the_example_script_renders() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/intro.script.toml");
    let s = Script::load(&path).unwrap();
    let p = script::render(
        &s,
        &mut voice(s.defaults.seed.unwrap()),
        RenderOptions {
            rig: Rig::builtin("arkit52").unwrap(),
            fps: s.defaults.fps.unwrap(),
            seed: s.defaults.seed.unwrap(),
            rate: s.defaults.rate,
            lipsync: None,
            progress: None,
            budget: idol::budget::Budget::default(),
        },
    )
    .unwrap();
    assert_eq!(p.lines.len(), 5);
    assert_eq!(p.lines[3].range.start().get(), samples(14.0));
    // The recorded take (bobby.wav) lasts as long as its alignment says, to the sample.
    assert!(p.lines[4].recorded);
    assert_eq!(p.lines[4].range.len(), samples(1.194625));
    // Every tag of the example animates the face (the wave too: a head tilt and a smile).
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let events = p
        .events
        .iter()
        .filter(|e| matches!(e.kind, ScriptEventKind::Event { .. }))
        .count();
    assert_eq!(events, 3);
}

/// The pipeline's test voice (a tone per letter, a word per written word) as a script voice, so a
/// thousand renders take seconds.
struct ToneLineVoice(idol::perform::testing::ToneVoice);

impl script::LineVoice for ToneLineVoice {
    fn sample_rate(&self) -> u32 {
        use idol::perform::Voice;
        self.0.sample_rate()
    }
    fn speak(
        &mut self,
        sentence: &str,
        _: script::Style,
    ) -> Result<idol::speech::Speech, idol::tts::TtsError> {
        use idol::perform::Voice;
        self.0
            .speak(sentence)
            .map_err(|e| idol::tts::TtsError::Runtime(e.to_string()))
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
    /// The script path keeps the live stream's promises on random tagged lines: every emotion and
    /// action tag (stage directions naming a gesture included) is one cue, at the start of the word
    /// it was written before (after the last word: inside the line, after that word); every break
    /// is a Break event where silence of its length starts; frames cover exactly the audio.
    #[test]
    fn a_scripted_line_keeps_every_tag_and_break_where_it_was_written(
        items in proptest::collection::vec((0u8..8, 0usize..6), 1..30),
    ) {
        let t = idol::perform::testing::TaggedText::generate(&items);
        let text = &t.text;
        let words = t.words.len();
        let mut want_cues = t.cues.clone();
        let want_breaks = t.breaks.len();
        proptest::prop_assume!(words > 0);
        let dir = tempfile::tempdir().unwrap();
        let src = format!("[[line]]\ntext = {}\n", toml::Value::String(text.clone()));
        let s = Script::parse(&src, &dir.path().join("p.script.toml"), dir.path()).unwrap();
        let p = script::render(
            &s,
            &mut ToneLineVoice(idol::perform::testing::ToneVoice::new(RATE)),
            RenderOptions {
                rig: Rig::builtin("arkit52").unwrap(),
                fps: 60,
                seed: 7,
                rate: None,
                lipsync: None,
                progress: None,
                budget: idol::budget::Budget::default(),
            },
        )
        .unwrap();
        let spoken = p.words.items();
        proptest::prop_assert_eq!(spoken.len(), words, "{}", text);
        let line = p.lines[0].range;
        let mut got: Vec<(usize, String)> = vec![];
        for e in &p.events {
            let (name, at) = match &e.kind {
                ScriptEventKind::Emotion { name, .. } | ScriptEventKind::Action { name, .. } => {
                    (name.clone(), e.at)
                }
                _ => continue,
            };
            // The word it precedes: the first spoken word starting at or after it.
            let w = spoken.iter().position(|x| x.start() >= at).unwrap_or(words);
            if w < words {
                proptest::prop_assert_eq!(spoken[w].start(), at, "{} {}", name, text);
            } else {
                proptest::prop_assert!(at >= spoken[words - 1].start() && at <= line.end(), "{} {}", name, text);
            }
            got.push((w, name));
        }
        got.sort();
        want_cues.sort();
        proptest::prop_assert_eq!(got, want_cues, "{}", text);
        let breaks: Vec<(SampleTime, u32)> = p
            .events
            .iter()
            .filter_map(|e| match e.kind {
                ScriptEventKind::Break { millis } => Some((e.at, millis)),
                _ => None,
            })
            .collect();
        proptest::prop_assert_eq!(breaks.len(), want_breaks, "{}", text);
        for (at, ms) in breaks {
            let n = SampleTime::from_millis(u64::from(ms), RATE).get();
            let end = (at.get() + n).min(p.pcm.len() as u64);
            proptest::prop_assert!(p.pcm.slice(at.get(), end).iter().all(|&x| x == 0.0), "{}", text);
        }
        proptest::prop_assert_eq!(
            p.frames.len() as u64,
            SampleTime::frames_in(p.pcm.len() as u64, RATE, 60)
        );
    }
}
