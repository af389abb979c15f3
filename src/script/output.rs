//! The files of a rendered performance, formatted deterministically and written all or nothing.
//!
//! - `performance.wav`: 16-bit PCM mono at the voice's rate;
//! - `frames.jsonl`: the face's JSONL (header line, then one frame per line; `crate::face::write`);
//! - `frames.csv`: Live Link Face CSV (needs a rig with the 52 ARKit channels; otherwise skipped with
//!   a warning);
//! - `captions.srt`, `captions.vtt`: one cue per sentence (or recorded transcript), times in
//!   milliseconds rounded from samples;
//! - `events.jsonl`: one event per line in (sample, script) order:
//!   `{"sample":S,"seconds":T,"type":..,"line":I,...}` (see `docs/scripts.md`).
//!
//! [`write_dir`] renders every file but the WAV into memory first, then writes them into a fresh
//! temporary folder beside the target (same filesystem), syncs them, and only then renames each into
//! the target: a failure before that point leaves the target untouched, and no half-written file is
//! ever visible. The WAV is streamed from the performance's [`SparsePcm`]: the lines' audio as it is,
//! the silence between them written as zeros a chunk at a time, never held whole.

use super::pcm::SparsePcm;
use super::render::{CaptionCue, Performance, ScriptEvent, ScriptEventKind};
use crate::face::{FaceError, write};
use crate::time::SampleTime;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Errors writing the output folder.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Face(#[from] FaceError),
    #[error(
        "the performance is {secs:.0} s long: a 16-bit WAV holds at most {max:.0} s at {rate} Hz; render it in parts"
    )]
    WavTooLong { secs: f64, max: f64, rate: u32 },
}

/// The names of the files [`write_dir`] writes.
pub const FILES: [&str; 6] = [
    "performance.wav",
    "frames.jsonl",
    "frames.csv",
    "captions.srt",
    "captions.vtt",
    "events.jsonl",
];

fn clock(ms: u64, sep: char) -> String {
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// SubRip captions.
pub fn srt(captions: &[CaptionCue], rate: u32) -> String {
    let mut out = String::new();
    for (i, c) in captions.iter().enumerate() {
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            clock(c.range.start().as_millis(rate), ','),
            clock(c.range.end().as_millis(rate), ','),
            c.text.trim()
        );
    }
    out
}

/// WebVTT captions.
pub fn vtt(captions: &[CaptionCue], rate: u32) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for (i, c) in captions.iter().enumerate() {
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            clock(c.range.start().as_millis(rate), '.'),
            clock(c.range.end().as_millis(rate), '.'),
            c.text.trim()
        );
    }
    out
}

fn round4(x: f32) -> Value {
    json!((x as f64 * 10_000.0).round() / 10_000.0)
}

/// One event as a JSON line (key order fixed: sample, seconds, type, line, then the event's own).
pub fn event_json(e: &ScriptEvent, rate: u32) -> String {
    let (ty, rest): (&str, Vec<(&str, Value)>) = match &e.kind {
        ScriptEventKind::LineStart {
            id,
            text,
            end,
            recorded,
        } => (
            "line_start",
            vec![
                ("id", json!(id)),
                ("text", json!(text)),
                ("end_sample", json!(end.get())),
                ("end_seconds", json!(seconds(*end, rate))),
                ("recorded", json!(recorded)),
            ],
        ),
        ScriptEventKind::LineEnd { id } => ("line_end", vec![("id", json!(id))]),
        ScriptEventKind::Emotion { name, intensity } => (
            "emotion",
            vec![("name", json!(name)), ("intensity", round4(*intensity))],
        ),
        ScriptEventKind::Action { name, intensity } => (
            "action",
            vec![("name", json!(name)), ("intensity", round4(*intensity))],
        ),
        ScriptEventKind::Break { millis } => ("break", vec![("millis", json!(millis))]),
        ScriptEventKind::LookAt { target, angles } => (
            "look_at",
            vec![
                ("target", json!(target)),
                (
                    "degrees",
                    match angles {
                        Some((y, p)) => json!([round4(*y), round4(*p)]),
                        None => Value::Null,
                    },
                ),
            ],
        ),
        ScriptEventKind::Event { name, data } => {
            ("event", vec![("name", json!(name)), ("data", data.clone())])
        }
    };
    let mut out = format!(
        "{{\"sample\":{},\"seconds\":{},\"type\":\"{ty}\"",
        e.at.get(),
        json!(seconds(e.at, rate))
    );
    if let Some(l) = e.line {
        let _ = write!(out, ",\"line\":{}", l + 1);
    }
    for (k, v) in rest {
        let _ = write!(out, ",\"{k}\":{v}");
    }
    out.push('}');
    out
}

/// Seconds with microsecond precision (a fixed decimal form, the same on every platform).
fn seconds(s: SampleTime, rate: u32) -> f64 {
    (s.as_secs_f64(rate) * 1e6).round() / 1e6
}

/// `events.jsonl`.
pub fn events_jsonl(events: &[ScriptEvent], rate: u32) -> String {
    let mut out = String::new();
    for e in events {
        out.push_str(&event_json(e, rate));
        out.push('\n');
    }
    out
}

/// What an output file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<'a> {
    Bytes(Vec<u8>),
    /// 16-bit mono WAV of the performance's audio, streamed when written.
    Wav {
        pcm: &'a SparsePcm,
        rate: u32,
    },
}

impl Body<'_> {
    /// Write the file's bytes to `w` (a WAV's silence in chunks).
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        match self {
            Body::Bytes(b) => w.write_all(b),
            Body::Wav { pcm, rate } => {
                let header = crate::tts::wav::wav_header(pcm.len() as u64, *rate)
                    .ok_or_else(|| std::io::Error::other("over the WAV format's 4 GiB"))?;
                w.write_all(&header)?;
                let mut buf = Vec::with_capacity(1 << 17);
                pcm.for_each_chunk(1 << 16, |c| {
                    for part in c.chunks(1 << 16) {
                        buf.clear();
                        crate::tts::wav::push_samples(&mut buf, part);
                        w.write_all(&buf)?;
                    }
                    Ok(())
                })
            }
        }
    }

    /// The file's bytes in memory (comparisons, tests).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v).expect("writing to memory");
        v
    }
}

/// Output files by name.
pub type Files<'a> = Vec<(&'static str, Body<'a>)>;

/// Every output file as bytes; `frames.csv` is absent when the rig lacks ARKit channels (the reason
/// is returned).
pub fn files(perf: &Performance) -> Result<(Files<'_>, Option<String>), OutputError> {
    let mut out = Vec::with_capacity(FILES.len());
    let n = perf.pcm.len() as u64;
    if crate::tts::wav::wav_header(n, perf.rate).is_none() {
        let rate = perf.rate;
        return Err(OutputError::WavTooLong {
            secs: n as f64 / f64::from(rate),
            max: f64::from((u32::MAX - 36) / 2) / f64::from(rate),
            rate,
        });
    }
    out.push((
        "performance.wav",
        Body::Wav {
            pcm: &perf.pcm,
            rate: perf.rate,
        },
    ));
    let mut jsonl = Vec::new();
    write::jsonl(&perf.frames, Some(perf.seed), true, &mut jsonl)?;
    out.push(("frames.jsonl", Body::Bytes(jsonl)));
    let mut csv = Vec::new();
    let mut skipped = None;
    match write::live_link_csv(&perf.frames, true, &mut csv) {
        Ok(()) => out.push(("frames.csv", Body::Bytes(csv))),
        Err(e) => skipped = Some(format!("frames.csv not written: {e}")),
    }
    let text = |s: String| Body::Bytes(s.into_bytes());
    out.push(("captions.srt", text(srt(&perf.captions, perf.rate))));
    out.push(("captions.vtt", text(vtt(&perf.captions, perf.rate))));
    out.push(("events.jsonl", text(events_jsonl(&perf.events, perf.rate))));
    Ok((out, skipped))
}

/// Write `files` into `dir` (created if missing) all or nothing: into a temporary folder beside it
/// first, then renamed into place. Returns the paths written.
pub fn write_dir(dir: &Path, files: &[(&str, Body<'_>)]) -> Result<Vec<PathBuf>, OutputError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| OutputError::Io { path, error }
    };
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".idol-render-")
        .tempdir_in(parent)
        .map_err(io(parent))?;
    for (name, body) in files {
        let p = tmp.path().join(name);
        let f = std::fs::File::create(&p).map_err(io(&p))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
        body.write_to(&mut w).map_err(io(&p))?;
        let f = w.into_inner().map_err(|e| io(&p)(e.into_error()))?;
        f.sync_all().map_err(io(&p))?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut written = Vec::with_capacity(files.len());
    for (name, _) in files {
        let from = tmp.path().join(name);
        let to = dir.join(name);
        std::fs::rename(&from, &to).map_err(io(&to))?;
        written.push(to);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::TimeRange;

    #[test]
    fn caption_clocks() {
        let c = [CaptionCue {
            line: 0,
            range: TimeRange::at(SampleTime(22050 * 3661), 11025),
            text: "Hi.".into(),
        }];
        assert_eq!(srt(&c, 22050), "1\n01:01:01,000 --> 01:01:01,500\nHi.\n\n");
        assert!(vtt(&c, 22050).starts_with("WEBVTT\n\n1\n01:01:01.000 --> 01:01:01.500\n"));
    }

    #[test]
    fn event_lines_have_a_fixed_key_order() {
        let e = ScriptEvent {
            at: SampleTime(11025),
            line: Some(0),
            kind: ScriptEventKind::Event {
                name: "camera".into(),
                data: json!({"shot": "wide"}),
            },
        };
        assert_eq!(
            events_jsonl(&[e], 22050),
            "{\"sample\":11025,\"seconds\":0.5,\"type\":\"event\",\"line\":1,\"name\":\"camera\",\"data\":{\"shot\":\"wide\"}}\n"
        );
    }

    #[test]
    fn write_dir_moves_files_in_and_leaves_no_temp() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        write_dir(&out, &[("a.txt", Body::Bytes(b"a".to_vec()))]).unwrap();
        assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"a");
        let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
