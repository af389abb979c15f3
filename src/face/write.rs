//! Writers: JSONL frames, Live Link Face CSV, Rhubarb-style mouth cues.
//!
//! Input: [`Frames`] (and, for mouth cues, the [`Prepared`] segment). Output: bytes on any
//! `io::Write`. All number formatting is fixed, so a seeded render gives the same bytes every time.
//!
//! - **JSONL**: a header line
//!   `{"format":"idol-face","version":1,"rig":..,"channels":[..],"rate":..,"fps":..}` then one frame
//!   per line: `{"sample":S,"weights":[..],"head":[x,y,z,w],"gaze":[[yaw,pitch],[yaw,pitch]]}`
//!   (left eye first; radians, yaw + to the character's left, pitch + up; weights with 4 decimals).
//! - **Live Link Face CSV**: the layout of the app's recordings: `Timecode,BlendShapeCount,` then the
//!   52 ARKit names in PascalCase in the app's order, then `HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,
//!   LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll`; `BlendShapeCount` is 61; the
//!   timecode is `HH:MM:SS:FF.mmm` (frame number at the render's fps, then the sub-frame in
//!   thousandths) counted from sample 0; rotations in radians. Needs a rig with all 52 ARKit channels.
//! - **Rhubarb TSV**: `seconds<TAB>shape` per change of mouth shape (A–H, X at rest), seconds with two
//!   decimals, ending with `X` at the segment end, as Rhubarb Lip Sync's tsv export.

use super::canon::ARKIT;
use super::phonetics::{MouthShape, PhoneClass};
use super::{FaceError, Frames, Prepared};
use crate::time::SampleTime;
use glam::EulerRot;
use std::fmt::Write as _;
use std::io::Write;

/// Append `v` with at most `decimals` decimals, trailing zeros trimmed, no negative zero.
pub fn push_num(out: &mut String, v: f32, decimals: usize) {
    let start = out.len();
    let _ = write!(out, "{:.*}", decimals, v);
    if out[start..].contains('.') {
        while out.ends_with('0') {
            out.pop();
        }
        if out.ends_with('.') {
            out.pop();
        }
    }
    if &out[start..] == "-0" {
        out.truncate(start);
        out.push('0');
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings serialise"));
}

/// The JSONL header line (without newline).
pub fn jsonl_header(frames: &Frames, seed: Option<u64>) -> String {
    let mut h = String::from("{\"format\":\"idol-face\",\"version\":1,\"rig\":");
    json_str(&mut h, frames.rig());
    h.push_str(",\"channels\":[");
    for (i, c) in frames.channels().iter().enumerate() {
        if i > 0 {
            h.push(',');
        }
        json_str(&mut h, c);
    }
    let _ = write!(h, "],\"rate\":{},\"fps\":{}", frames.rate(), frames.fps());
    if let Some(s) = seed {
        let _ = write!(h, ",\"seed\":{s}");
    }
    h.push('}');
    h
}

/// Write frames as JSONL; `header` controls whether the header line is written first (append further
/// segments with `false`).
pub fn jsonl<W: Write>(
    frames: &Frames,
    seed: Option<u64>,
    header: bool,
    w: &mut W,
) -> Result<(), FaceError> {
    let mut line = String::with_capacity(64 + frames.channels().len() * 8);
    if header {
        line.push_str(&jsonl_header(frames, seed));
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    for f in frames.iter() {
        line.clear();
        let _ = write!(line, "{{\"sample\":{},\"weights\":[", f.at.get());
        for (i, v) in f.weights.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            push_num(&mut line, *v, 4);
        }
        line.push_str("],\"head\":[");
        for (i, v) in f.head.to_array().iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            push_num(&mut line, *v, 5);
        }
        line.push_str("],\"gaze\":[");
        for (i, g) in f.gaze.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push('[');
            push_num(&mut line, g.yaw, 4);
            line.push(',');
            push_num(&mut line, g.pitch, 4);
            line.push(']');
        }
        line.push_str("]}\n");
        w.write_all(line.as_bytes())?;
    }
    Ok(())
}

fn pascal(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// The Live Link Face CSV header line (without newline).
pub fn live_link_header() -> String {
    let mut h = String::from("Timecode,BlendShapeCount");
    for n in ARKIT {
        h.push(',');
        h.push_str(&pascal(n));
    }
    for n in [
        "HeadYaw",
        "HeadPitch",
        "HeadRoll",
        "LeftEyeYaw",
        "LeftEyePitch",
        "LeftEyeRoll",
        "RightEyeYaw",
        "RightEyePitch",
        "RightEyeRoll",
    ] {
        h.push(',');
        h.push_str(n);
    }
    h
}

/// `HH:MM:SS:FF.mmm` for a sample at `rate`, frames counted at `fps`.
pub fn timecode(at: SampleTime, rate: u32, fps: u32) -> String {
    // Work in integer sample arithmetic: frame = at * fps / rate, with the remainder as sub-frame.
    let num = at.get() as u128 * fps as u128;
    let mut frame = num / rate as u128;
    let mut rem = num % rate as u128;
    // A stamp within half a sample of a frame boundary is that frame (stamps are rounded to samples).
    if (rate as u128 - rem) * 2 <= fps as u128 {
        frame += 1;
        rem = 0;
    } else if rem * 2 <= fps as u128 {
        rem = 0;
    }
    let sub = (rem * 1000 / rate as u128) as u64;
    let fps = fps as u128;
    let ff = frame % fps;
    let secs = frame / fps;
    format!(
        "{:02}:{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        ff,
        sub
    )
}

/// Write frames as a Live Link Face CSV; the rig must have all 52 ARKit channels.
pub fn live_link_csv<W: Write>(frames: &Frames, header: bool, w: &mut W) -> Result<(), FaceError> {
    let mut idx = [0usize; 52];
    for (k, n) in ARKIT.iter().enumerate() {
        idx[k] = frames
            .channels()
            .iter()
            .position(|c| c.eq_ignore_ascii_case(n))
            .ok_or_else(|| {
                FaceError::Write(format!(
                    "Live Link Face CSV needs all 52 ARKit channels, and rig `{}` has no `{n}`: render with --rig arkit52",
                    frames.rig()
                ))
            })?;
    }
    let mut line = String::with_capacity(1024);
    if header {
        line.push_str(&live_link_header());
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    for f in frames.iter() {
        line.clear();
        line.push_str(&timecode(f.at, frames.rate(), frames.fps()));
        line.push_str(",61");
        for &i in &idx {
            line.push(',');
            push_num(&mut line, f.weights[i], 6);
        }
        let (yaw, mpitch, roll) = f.head.to_euler(EulerRot::YXZ);
        for v in [yaw, -mpitch, roll] {
            line.push(',');
            push_num(&mut line, v, 6);
        }
        for g in f.gaze {
            for v in [g.yaw, g.pitch, 0.0] {
                line.push(',');
                push_num(&mut line, v, 6);
            }
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// Mouth cues of a prepared segment: (start sample, shape), a new entry at each change, ending with
/// `X` at `end`.
pub fn mouth_cues(prep: &Prepared, end: SampleTime) -> Vec<(SampleTime, MouthShape)> {
    let mut out: Vec<(SampleTime, MouthShape)> = vec![(prep.origin(), MouthShape::X)];
    let mut last = MouthShape::X;
    for p in &prep.phones {
        let shape = match p.value.class {
            PhoneClass::Silence => MouthShape::X,
            PhoneClass::Transparent => last,
            _ => p.value.mouth,
        };
        last = shape;
        let at = p.start().max(prep.origin());
        if out.last().is_some_and(|c| c.1 == shape) {
            continue;
        }
        if out.last().is_some_and(|c| c.0 == at) {
            out.pop();
            if out.last().is_some_and(|c| c.1 == shape) {
                continue;
            }
        }
        out.push((at, shape));
    }
    let tail = prep
        .phones
        .span()
        .map_or(prep.origin(), |s| s.end())
        .min(end);
    if out.last().is_some_and(|c| c.1 != MouthShape::X) {
        out.push((tail, MouthShape::X));
    }
    out
}

/// Write Rhubarb-style TSV mouth cues.
pub fn rhubarb_tsv<W: Write>(prep: &Prepared, end: SampleTime, w: &mut W) -> Result<(), FaceError> {
    let mut s = String::new();
    for (at, shape) in mouth_cues(prep, end) {
        let _ = writeln!(s, "{:.2}\t{}", at.as_secs_f64(prep.rate()), shape.letter());
    }
    w.write_all(s.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_timecodes() {
        let mut s = String::new();
        push_num(&mut s, 0.5, 4);
        s.push(' ');
        push_num(&mut s, -0.00001, 4);
        s.push(' ');
        push_num(&mut s, 1.0, 4);
        assert_eq!(s, "0.5 0 1");
        assert_eq!(timecode(SampleTime(368), 22050, 60), "00:00:00:01.000");
        assert_eq!(
            timecode(SampleTime(22050 * 3661), 22050, 60),
            "01:01:01:00.000"
        );
        assert_eq!(
            timecode(SampleTime(24000 + 200), 48000, 60),
            "00:00:00:30.250"
        );
        let h = live_link_header();
        assert!(h.starts_with("Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,"));
        assert!(h.ends_with(",TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll"));
        assert_eq!(h.split(',').count(), 2 + 61);
    }
}
