//! The gesture catalogue: what each emotion and action tag does to the face, as data.
//!
//! Input: TOML (`rigs/gestures/builtin.toml`, compiled in; a rig file's `[expressions.NAME]` and
//! `[gestures.NAME]` tables add to it or replace entries for that rig). Output: a [`Catalogue`] of
//! emotions ([`Shape`]: canonical weights, head posture and gaze offset held while the mood lasts) and
//! actions ([`Gesture`]: tracks of envelope × pose over a duration), looked up by name or alias
//! (case-insensitive; `-` and spaces read as `_`, so `shake-head` is `shake_head`).
//!
//! The first five emotions are the VRM presets in [`canon::EMOTIONS`] order (the solver's blink and
//! gaze rules refer to `surprised` and `sad` by those places); `neutral` is no entry: it releases.
//! [`Catalogue::knows`] is how a card's or script's tags are checked before anything is spoken.

use super::canon;
use super::rig::RigError;
use crate::speech::CueKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use toml::Spanned;

/// The built-in catalogue's source.
pub const BUILTIN_TOML: &str = include_str!("../../rigs/gestures/builtin.toml");

/// One emotion: canonical weights at full intensity, head posture (degrees: yaw, pitch, roll) and
/// gaze offset (radians: yaw, pitch).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Shape {
    pub name: String,
    pub aliases: Vec<String>,
    pub weights: Vec<(usize, f32)>,
    pub head: [f32; 3],
    pub gaze: [f32; 2],
}

/// An envelope over a track's span, `x` in 0..1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Motion {
    Bump,
    Bump2,
    Sqrt,
    Hold,
    Swing(f32),
    Pulse(f32),
}

impl Motion {
    pub fn parse(s: &str) -> Option<Motion> {
        let mut it = s.split_whitespace();
        let kind = it.next()?;
        let n = match it.next() {
            None => None,
            Some(n) => Some(
                n.parse::<f32>()
                    .ok()
                    .filter(|n| n.is_finite() && *n > 0.0)?,
            ),
        };
        if it.next().is_some() {
            return None;
        }
        Some(match (kind, n) {
            ("bump", None) => Motion::Bump,
            ("bump2", None) => Motion::Bump2,
            ("sqrt", None) => Motion::Sqrt,
            ("hold", None) => Motion::Hold,
            ("swing", Some(n)) => Motion::Swing(n),
            ("pulse", Some(n)) => Motion::Pulse(n),
            _ => return None,
        })
    }

    /// The envelope at `x` (0 outside 0..1).
    #[inline]
    pub fn at(self, x: f32) -> f32 {
        if !(0.0..1.0).contains(&x) {
            return 0.0;
        }
        let pi = std::f32::consts::PI;
        let bump = (pi * x).sin();
        match self {
            Motion::Bump => bump,
            Motion::Bump2 => bump * bump,
            Motion::Sqrt => bump.max(0.0).sqrt(),
            Motion::Hold => {
                super::coarticulate::ramp(x / 0.15)
                    * (1.0 - super::coarticulate::ramp((x - 0.75) / 0.25))
            }
            Motion::Swing(n) => (2.0 * pi * n * x).sin() * bump,
            Motion::Pulse(n) => (n * pi * x).sin().abs() * bump.sqrt(),
        }
    }
}

/// What a track adds at full envelope.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pose {
    /// Degrees: yaw, pitch, roll.
    pub head: [f32; 3],
    /// Radians: yaw, pitch.
    pub gaze: [f32; 2],
    /// Eyelid closure, left and right (0..1).
    pub lids: [f32; 2],
    /// Canonical channel weights.
    pub weights: Vec<(usize, f32)>,
}

/// One track of a gesture: `pose` scaled by `motion` over `[from, to]` of the gesture.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub motion: Motion,
    pub from: f32,
    pub to: f32,
    pub pose: Pose,
}

/// One action.
#[derive(Debug, Clone, PartialEq)]
pub struct Gesture {
    pub name: String,
    pub aliases: Vec<String>,
    /// Seconds.
    pub duration: f32,
    pub tracks: Vec<Track>,
}

/// Emotions and actions by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Catalogue {
    pub emotions: Vec<Shape>,
    pub actions: Vec<Gesture>,
}

/// A tag name as the catalogue compares it: lowercase, `-` and spaces as `_`.
pub fn normalize(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            '-' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    #[serde(default)]
    emotion: BTreeMap<String, Spanned<RawEmotion>>,
    #[serde(default)]
    action: BTreeMap<String, Spanned<RawGesture>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmotion {
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    weights: BTreeMap<String, f32>,
    #[serde(default)]
    head: RawAngles,
    #[serde(default)]
    gaze: RawAngles,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields, default)]
struct RawAngles {
    yaw: f32,
    pitch: f32,
    roll: f32,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields, default)]
struct RawLids {
    left: f32,
    right: f32,
}

/// A gesture as written in the catalogue or a rig file's `[gestures.NAME]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGesture {
    #[serde(default)]
    aliases: Vec<String>,
    duration: f32,
    track: Vec<RawTrack>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrack {
    motion: String,
    #[serde(default)]
    from: Option<f32>,
    #[serde(default)]
    to: Option<f32>,
    #[serde(default)]
    head: RawAngles,
    #[serde(default)]
    gaze: RawAngles,
    #[serde(default)]
    lids: RawLids,
    #[serde(default)]
    weights: BTreeMap<String, f32>,
}

type Bad<'a> = dyn Fn(usize, &str, String) -> RigError + 'a;

fn weights(
    map: BTreeMap<String, f32>,
    at: usize,
    field: &str,
    bad: &Bad<'_>,
) -> Result<Vec<(usize, f32)>, RigError> {
    let mut out = Vec::with_capacity(map.len());
    for (k, w) in map {
        let Some(i) = canon::index(&k) else {
            return Err(bad(
                at,
                field,
                format!("unknown canonical channel `{k}` (see `idol rigs --canonical`)"),
            ));
        };
        if !w.is_finite() {
            return Err(bad(at, field, format!("weight of `{k}` is not finite")));
        }
        out.push((i, w));
    }
    Ok(out)
}

fn finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

fn emotion_from_raw(
    name: &str,
    raw: RawEmotion,
    at: usize,
    bad: &Bad<'_>,
) -> Result<Shape, RigError> {
    let field = format!("emotion.{name}");
    let head = [raw.head.yaw, raw.head.pitch, raw.head.roll];
    let gaze = [raw.gaze.yaw.to_radians(), raw.gaze.pitch.to_radians()];
    if !finite(&head) || !finite(&gaze) || raw.gaze.roll != 0.0 {
        return Err(bad(
            at,
            &field,
            "head and gaze angles must be finite degrees (gaze has yaw and pitch only)".into(),
        ));
    }
    Ok(Shape {
        name: normalize(name),
        aliases: raw.aliases.iter().map(|a| normalize(a)).collect(),
        weights: weights(raw.weights, at, &field, bad)?,
        head,
        gaze,
    })
}

pub(crate) fn gesture_from_raw(
    name: &str,
    raw: RawGesture,
    at: usize,
    field: &str,
    bad: &Bad<'_>,
) -> Result<Gesture, RigError> {
    if !(raw.duration.is_finite() && raw.duration > 0.0 && raw.duration <= 10.0) {
        return Err(bad(
            at,
            field,
            format!(
                "duration {} must be in seconds, above 0 and at most 10",
                raw.duration
            ),
        ));
    }
    if raw.track.is_empty() {
        return Err(bad(at, field, "a gesture needs at least one track".into()));
    }
    let mut tracks = Vec::with_capacity(raw.track.len());
    for t in raw.track {
        let motion = Motion::parse(&t.motion).ok_or_else(|| {
            bad(
                at,
                field,
                format!(
                    "unknown motion `{}`: use bump, bump2, sqrt, hold, \"swing N\" or \"pulse N\"",
                    t.motion
                ),
            )
        })?;
        let (from, to) = (t.from.unwrap_or(0.0), t.to.unwrap_or(1.0));
        if !((0.0..1.0).contains(&from) && from < to && to <= 1.0) {
            return Err(bad(
                at,
                field,
                format!("track span [{from}, {to}] must lie in [0, 1], from before to"),
            ));
        }
        let head = [t.head.yaw, t.head.pitch, t.head.roll];
        let gaze = [t.gaze.yaw.to_radians(), t.gaze.pitch.to_radians()];
        let lids = [t.lids.left, t.lids.right];
        if !finite(&head) || !finite(&gaze) || t.gaze.roll != 0.0 {
            return Err(bad(
                at,
                field,
                "head and gaze angles must be finite degrees (gaze has yaw and pitch only)".into(),
            ));
        }
        if !lids.iter().all(|l| (0.0..=1.0).contains(l)) {
            return Err(bad(at, field, "lids must be from 0 to 1".into()));
        }
        tracks.push(Track {
            motion,
            from,
            to,
            pose: Pose {
                head,
                gaze,
                lids,
                weights: weights(t.weights, at, field, bad)?,
            },
        });
    }
    Ok(Gesture {
        name: normalize(name),
        aliases: raw.aliases.iter().map(|a| normalize(a)).collect(),
        duration: raw.duration,
        tracks,
    })
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

impl Catalogue {
    /// The compiled-in catalogue (`rigs/gestures/builtin.toml`).
    pub fn builtin() -> &'static Catalogue {
        static CAT: OnceLock<Catalogue> = OnceLock::new();
        CAT.get_or_init(|| {
            Catalogue::parse(BUILTIN_TOML, "rigs/gestures/builtin.toml")
                .expect("the built-in gesture catalogue is valid (a test checks it)")
        })
    }

    /// Parse a catalogue; `file` names it in errors (file, line, field).
    pub fn parse(text: &str, file: &str) -> Result<Catalogue, RigError> {
        let bad = |at: usize, field: &str, message: String| RigError::Invalid {
            file: file.to_string(),
            line: line_of(text, at),
            field: field.to_string(),
            message,
        };
        let raw: RawCatalogue = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let msg = e.message().to_string();
            let field = msg.split('`').nth(1).unwrap_or("").to_string();
            bad(at, &field, msg)
        })?;
        let mut emotions = Vec::new();
        for (name, e) in raw.emotion {
            let at = e.span().start;
            emotions.push(emotion_from_raw(&name, e.into_inner(), at, &bad)?);
        }
        // The VRM presets first, in canonical order.
        for (k, p) in canon::EMOTIONS.iter().enumerate() {
            let Some(i) = emotions.iter().position(|e| e.name == *p) else {
                return Err(bad(
                    0,
                    "emotion",
                    format!("the preset emotion `{p}` is missing"),
                ));
            };
            emotions.swap(k, i);
        }
        emotions[canon::EMOTIONS.len()..].sort_by(|a, b| a.name.cmp(&b.name));
        let mut actions = Vec::new();
        for (name, g) in raw.action {
            let at = g.span().start;
            actions.push(gesture_from_raw(
                &name,
                g.into_inner(),
                at,
                &format!("action.{name}"),
                &bad,
            )?);
        }
        let cat = Catalogue { emotions, actions };
        cat.check_names().map_err(|m| bad(0, "", m))?;
        Ok(cat)
    }

    fn check_names(&self) -> Result<(), String> {
        let mut seen: Vec<&str> = vec!["neutral"];
        let names = self
            .emotions
            .iter()
            .flat_map(|e| std::iter::once(&e.name).chain(&e.aliases))
            .chain(
                self.actions
                    .iter()
                    .flat_map(|a| std::iter::once(&a.name).chain(&a.aliases)),
            );
        for n in names {
            if seen.contains(&n.as_str()) {
                return Err(format!("the name `{n}` is given twice"));
            }
            seen.push(n);
        }
        Ok(())
    }

    /// The index of an emotion by name or alias (`neutral` is none: it releases).
    pub fn emotion(&self, name: &str) -> Option<usize> {
        let n = normalize(name);
        self.emotions
            .iter()
            .position(|e| e.name == n || e.aliases.contains(&n))
    }

    /// The index of an action by name or alias.
    pub fn action(&self, name: &str) -> Option<usize> {
        let n = normalize(name);
        self.actions
            .iter()
            .position(|a| a.name == n || a.aliases.contains(&n))
    }

    /// Whether a tag of this kind animates the face (`neutral` counts as an emotion).
    pub fn knows(&self, kind: CueKind, name: &str) -> bool {
        match kind {
            CueKind::Emotion => normalize(name) == "neutral" || self.emotion(name).is_some(),
            CueKind::Action => self.action(name).is_some(),
        }
    }

    /// The emotion names (with `neutral`) and the action names, for messages.
    pub fn names(&self) -> (Vec<String>, Vec<String>) {
        let mut e: Vec<String> = self.emotions.iter().map(|e| e.name.clone()).collect();
        e.push("neutral".into());
        (e, self.actions.iter().map(|a| a.name.clone()).collect())
    }

    /// The longest gesture, seconds.
    pub fn longest(&self) -> f32 {
        self.actions.iter().map(|a| a.duration).fold(0.0, f32::max)
    }

    /// This catalogue with a rig's own expressions and gestures: an entry with the name of an
    /// existing one replaces it (the five presets excepted, which a rig cannot rename), a new name is
    /// added.
    pub fn with_rig(&self, rig: &super::Rig) -> Catalogue {
        let mut out = self.clone();
        for c in &rig.expressions {
            let shape = Shape {
                name: normalize(&c.name),
                aliases: vec![],
                weights: c.weights.clone(),
                head: [0.0; 3],
                gaze: [0.0; 2],
            };
            match out.emotion(&c.name) {
                Some(i) if i >= canon::EMOTIONS.len() => out.emotions[i] = shape,
                Some(_) => {}
                None => out.emotions.push(shape),
            }
        }
        for g in &rig.gestures {
            match out.action(&g.name) {
                Some(i) => out.actions[i] = g.clone(),
                None => out.actions.push(g.clone()),
            }
        }
        out
    }

    /// Warnings for a persona card's tag lists: each emotion or action the face (this catalogue)
    /// does not animate. The tags still reach engines as cue messages.
    pub fn card_warnings(
        &self,
        card: &str,
        emotions: &[String],
        actions: &[String],
    ) -> Vec<String> {
        let (e_names, a_names) = self.names();
        let mut out = Vec::new();
        for e in emotions {
            if !self.knows(CueKind::Emotion, e) {
                out.push(format!(
                    "persona card {card}: the face has no emotion `{e}`: its [{e}] tags reach engines as cues but do not move the face (known: {}; a rig file can add one under [expressions.{e}])",
                    e_names.join(", ")
                ));
            }
        }
        for a in actions {
            if !self.knows(CueKind::Action, a) {
                out.push(format!(
                    "persona card {card}: the face has no gesture `{a}`: its <{a}> tags reach engines as cues but do not move the face (known: {}; a rig file can add one under [gestures.{a}])",
                    a_names.join(", ")
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_parses_with_presets_first() {
        let c = Catalogue::parse(BUILTIN_TOML, "builtin.toml").unwrap();
        for (k, p) in canon::EMOTIONS.iter().enumerate() {
            assert_eq!(c.emotions[k].name, *p);
        }
        for a in [
            "wave",
            "bow",
            "laugh",
            "think",
            "heart",
            "clap",
            "shake_head",
            "nod",
            "wink",
        ] {
            assert!(c.knows(CueKind::Action, a), "{a}");
        }
        for e in ["excited", "shy", "Neutral", "embarrassed"] {
            assert!(c.knows(CueKind::Emotion, e), "{e}");
        }
        assert_eq!(c.action("Shake-Head"), c.action("shake"));
        assert!(!c.knows(CueKind::Action, "backflip"));
    }

    #[test]
    fn bad_entries_are_positioned() {
        let lines = BUILTIN_TOML.lines().count();
        let e = Catalogue::parse(
            &format!(
                "{BUILTIN_TOML}\n[action.x]\nduration = 1.0\ntrack = [{{ motion = \"wobble\" }}]\n"
            ),
            "g.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(&format!("g.toml:{}: field `action.x`", lines + 2)),
            "{e}"
        );
        assert!(e.contains("wobble"), "{e}");
        let e = Catalogue::parse(
            &format!("{BUILTIN_TOML}\n[action.x]\nduration = 1.0\ntrack = [{{ motion = \"bump\", weights = {{ jaw = 1.0 }} }}]\n"),
            "g.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown canonical channel `jaw`"), "{e}");
        let e = Catalogue::parse(
            "[action.x]\nduration = 1.0\ntrack = [{ motion = \"bump\" }]\n",
            "g.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("preset emotion `happy` is missing"), "{e}");
    }

    #[test]
    fn motions_start_and_end_at_rest() {
        for m in ["bump", "bump2", "sqrt", "hold", "swing 2", "pulse 3"] {
            let m = Motion::parse(m).unwrap();
            assert_eq!(m.at(0.0), 0.0, "{m:?}");
            assert!(m.at(0.999).abs() < 0.1, "{m:?}");
            assert_eq!(m.at(1.0), 0.0);
        }
        assert!(Motion::parse("swing").is_none());
        assert!(Motion::parse("hold 2").is_none());
    }
}
