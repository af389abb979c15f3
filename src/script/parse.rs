//! Script text → [`Script`], validated, with positioned errors.
//!
//! Two steps, as in `config.rs`: serde reads the TOML into raw structs that reject unknown keys and
//! wrong types (every value kept with its byte span), then [`Script::parse`] checks what types cannot:
//! times (`"300ms"`, `"1.5s"`, or a number of seconds), ranges, look-at targets, line ids, that a line
//! says something (text or audio), that `at` times of the lines increase, that recorded transcripts have
//! no breaks, and that events point at existing lines. Each error names file, line, column and the
//! dotted field (`line[2].at`) and lists what is valid. Whether an `at` line overlaps the line before it
//! depends on how long that line is spoken, so that check happens when the render places the lines
//! ([`crate::script::render`]), with the same position.

use crate::config::ranges::{self, FPS, LENGTH_SCALE, NOISE};
use crate::face::EyeGaze;
use crate::text::{CueEvent, TagParser};
use crate::tomlpos::line_col;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A problem in a script, positioned in its file (see [`crate::tomlpos`]).
pub type ScriptError = crate::tomlpos::TomlError;

/// A place in the script text (1-based line and column) and the field it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
    pub field: String,
}

/// Where the eyes (and 30% of the head) look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Look {
    /// No target: the idle gaze wanders freely (`"ahead"`).
    Free,
    /// A fixed direction in radians (yaw + to the character's left, pitch + up); `"camera"` is 0, 0.
    At {
        name: Option<&'static str>,
        gaze: EyeGaze,
    },
    /// A target declared under `[targets]`.
    Target { gaze: EyeGaze },
}

impl Look {
    /// The face's `look_at` setting.
    pub fn gaze(&self) -> Option<EyeGaze> {
        match self {
            Look::Free => None,
            Look::At { gaze, .. } | Look::Target { gaze } => Some(*gaze),
        }
    }
}

/// Script-wide settings; the command line overrides voice, speaker, rig, fps and seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub title: Option<String>,
    /// A voice name under `voices/` or a path to `NAME.onnx`.
    pub voice: Option<String>,
    pub speaker: Option<String>,
    pub rig: Option<String>,
    pub fps: Option<u32>,
    /// Seeds the voice's noise and the face's idle layer.
    pub seed: Option<u64>,
    /// Default length scale of spoken lines (1.0 = the voice's pace, 1.2 slower).
    pub rate: Option<f32>,
    pub noise_scale: Option<f32>,
    pub noise_w: Option<f32>,
    /// Gap between a line and the one after it, seconds.
    pub gap: f64,
    /// Silence after the last line, seconds.
    pub tail: f64,
    /// Where the idol looks until a line says otherwise.
    pub look_at: (String, Look),
}

/// How a line starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timing {
    /// `gap` seconds after the previous line ends (the script's default gap when `None`; the first
    /// line starts at 0 plus its own explicit gap).
    After { gap: Option<f64> },
    /// At an absolute time, seconds from the start; must not overlap the previous line.
    At { secs: f64 },
}

/// What a line is.
#[derive(Debug, Clone, PartialEq)]
pub enum LineKind {
    /// Spoken by the voice from `text`.
    Spoken,
    /// A recorded take (WAV, MP3, FLAC, Ogg/Vorbis), played as is; `text` is its optional transcript.
    Recorded {
        audio: PathBuf,
        /// A phone alignment of the take (TextGrid, HTK .lab, idol JSON) for the mouth.
        phonemes: Option<PathBuf>,
    },
}

/// One line of the script.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 0-based position in the script.
    pub index: usize,
    pub id: Option<String>,
    pub kind: LineKind,
    /// The text with its inline tags (`[happy]`, `<wave>`, `<break time="300ms"/>`).
    pub text: Option<String>,
    /// Length scale (spoken lines).
    pub rate: Option<f32>,
    /// 0..=1: livelier prosody and stronger cues.
    pub emphasis: f32,
    pub timing: Timing,
    /// A mood from the line's start (like a leading `[emotion]` tag), with intensity.
    pub emotion: Option<(String, f32)>,
    /// Where to look from this line on.
    pub look_at: Option<(String, Look)>,
    /// The `[[line]]` table, and its `at` value when given.
    pub pos: Pos,
    pub at_pos: Option<Pos>,
}

impl Line {
    /// `line[i]` or `line "id"`, for messages.
    pub fn label(&self) -> String {
        match &self.id {
            Some(id) => format!("line {} (\"{id}\")", self.index + 1),
            None => format!("line {}", self.index + 1),
        }
    }
}

/// When a pass-through event fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Anchor {
    /// Seconds from the start.
    At(f64),
    /// Seconds after the start of line `index`.
    Line { index: usize, offset: f64 },
}

/// A pass-through event (camera, lights, anything): emitted at its sample with its JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct PassEvent {
    pub name: String,
    pub data: serde_json::Value,
    pub anchor: Anchor,
    pub pos: Pos,
}

/// A validated script.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub file: PathBuf,
    /// The folder recorded audio and alignments are relative to.
    pub base_dir: PathBuf,
    pub defaults: Defaults,
    pub lines: Vec<Line>,
    pub events: Vec<PassEvent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    #[serde(default)]
    script: RawHeader,
    #[serde(default)]
    targets: BTreeMap<String, Spanned<RawTarget>>,
    #[serde(default)]
    line: Vec<Spanned<RawLine>>,
    #[serde(default)]
    event: Vec<Spanned<RawEvent>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    title: Option<String>,
    voice: Option<String>,
    speaker: Option<String>,
    rig: Option<String>,
    fps: Option<Spanned<i64>>,
    seed: Option<Spanned<i64>>,
    rate: Option<Spanned<f64>>,
    noise_scale: Option<Spanned<f64>>,
    noise_w: Option<Spanned<f64>>,
    gap: Option<Spanned<toml::Value>>,
    tail: Option<Spanned<toml::Value>>,
    look_at: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    yaw: f64,
    pitch: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    id: Option<Spanned<String>>,
    text: Option<Spanned<String>>,
    audio: Option<Spanned<String>>,
    phonemes: Option<Spanned<String>>,
    rate: Option<Spanned<f64>>,
    emphasis: Option<Spanned<f64>>,
    gap: Option<Spanned<toml::Value>>,
    at: Option<Spanned<toml::Value>>,
    emotion: Option<Spanned<String>>,
    look_at: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    name: Spanned<String>,
    at: Option<Spanned<toml::Value>>,
    line: Option<Spanned<String>>,
    offset: Option<Spanned<toml::Value>>,
    #[serde(default)]
    data: Option<toml::Value>,
}

const TIME_HELP: &str =
    "write a time as \"300ms\", \"1.5s\" or a number of seconds (1.5), not negative";
const LOOK_HELP: &str =
    "use \"camera\", \"ahead\" (free gaze), a name from [targets], or [yaw, pitch] in degrees";

struct Ctx<'a> {
    file: &'a Path,
    src: &'a str,
}

impl Ctx<'_> {
    fn pos(&self, span: std::ops::Range<usize>, field: &str) -> Pos {
        let (line, column) = line_col(self.src, span.start);
        Pos {
            line,
            column,
            field: field.to_string(),
        }
    }

    fn at(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> ScriptError {
        ScriptError::at(self.file, self.src, span.start, field, message)
    }

    fn time(&self, v: &Spanned<toml::Value>, field: &str) -> Result<f64, ScriptError> {
        let bad = || self.at(v.span(), field, format!("bad time: {TIME_HELP}"));
        let secs = match v.get_ref() {
            toml::Value::Integer(i) => *i as f64,
            toml::Value::Float(f) => *f,
            toml::Value::String(s) => parse_time(s).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        if secs.is_finite() && secs > 86_400.0 {
            // Not "negative", which the general help would suggest.
            return Err(self.at(
                v.span(),
                field,
                format!("{secs} s is longer than a day: times go up to 86400 s (24 h)"),
            ));
        }
        if !secs.is_finite() || secs < 0.0 {
            return Err(bad());
        }
        Ok(secs)
    }

    fn float(
        &self,
        v: &Option<Spanned<f64>>,
        field: &str,
        lo: f64,
        hi: f64,
        what: &str,
    ) -> Result<Option<f32>, ScriptError> {
        match v {
            None => Ok(None),
            Some(s) => {
                let x = *s.get_ref();
                if !(x.is_finite() && x >= lo && x <= hi) {
                    return Err(self.at(
                        s.span(),
                        field,
                        format!("{x} is out of range: {what} ({lo}..={hi})"),
                    ));
                }
                Ok(Some(x as f32))
            }
        }
    }

    fn look(
        &self,
        v: &Spanned<toml::Value>,
        field: &str,
        targets: &BTreeMap<String, EyeGaze>,
    ) -> Result<(String, Look), ScriptError> {
        match v.get_ref() {
            toml::Value::String(s) => match s.as_str() {
                "camera" => Ok((
                    "camera".into(),
                    Look::At {
                        name: Some("camera"),
                        gaze: EyeGaze::default(),
                    },
                )),
                "ahead" => Ok(("ahead".into(), Look::Free)),
                name => match targets.get(name) {
                    Some(g) => Ok((name.to_string(), Look::Target { gaze: *g })),
                    None => {
                        let mut valid: Vec<String> = vec!["\"camera\"".into(), "\"ahead\"".into()];
                        valid.extend(targets.keys().map(|k| format!("\"{k}\"")));
                        Err(self.at(
                            v.span(),
                            field,
                            format!(
                                "unknown look-at target \"{name}\": valid are {} (declare others under [targets] as name = {{ yaw = DEG, pitch = DEG }}), or [yaw, pitch] in degrees",
                                valid.join(", ")
                            ),
                        ))
                    }
                },
            },
            toml::Value::Array(a) if a.len() == 2 => {
                let num = |x: &toml::Value| match x {
                    toml::Value::Integer(i) => Some(*i as f64),
                    toml::Value::Float(f) => Some(*f),
                    _ => None,
                };
                match (num(&a[0]), num(&a[1])) {
                    (Some(y), Some(p)) if y.abs() <= 90.0 && p.abs() <= 90.0 => Ok((
                        format!("[{y}, {p}]"),
                        Look::At {
                            name: None,
                            gaze: deg(y, p),
                        },
                    )),
                    _ => Err(self.at(
                        v.span(),
                        field,
                        "look-at angles must be numbers of degrees within -90..=90",
                    )),
                }
            }
            _ => Err(self.at(v.span(), field, format!("bad look-at: {LOOK_HELP}"))),
        }
    }
}

fn deg(yaw: f64, pitch: f64) -> EyeGaze {
    EyeGaze {
        yaw: (yaw as f32).to_radians(),
        pitch: (pitch as f32).to_radians(),
    }
}

/// `"300ms"`, `"1.5s"`, `"2"` → seconds.
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let n = num.trim();
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    n.parse::<f64>().ok().map(|x| x * scale)
}

/// The keys each table accepts, for "unknown field" messages.
fn allowed_hint(message: &str) -> &'static str {
    if message.starts_with("unknown field") {
        " (see docs/scripts.md)"
    } else {
        ""
    }
}

impl Script {
    /// Read and validate a script file; relative paths in it are relative to its folder.
    pub fn load(path: &Path) -> Result<Script, ScriptError> {
        let src = crate::budget::read_text(path, crate::budget::MAX_TEXT_FILE_BYTES)
            .map_err(|e| ScriptError::unreadable(path, "script", &e))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Script::parse(&src, path, base)
    }

    /// Parse and validate script text; `file` names it in errors, `base_dir` anchors relative paths.
    pub fn parse(src: &str, file: &Path, base_dir: &Path) -> Result<Script, ScriptError> {
        let ctx = Ctx { file, src };
        let raw: RawScript =
            toml::from_str(src).map_err(|e| ScriptError::from_de(file, src, &e, allowed_hint))?;
        raw.validate(&ctx, base_dir)
    }

    /// The line with id `id`.
    pub fn line_by_id(&self, id: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.id.as_deref() == Some(id))
    }

    /// A positioned error at `pos` (used by the render for overlaps found once durations are known).
    pub fn error_at(&self, pos: &Pos, message: impl Into<String>) -> ScriptError {
        ScriptError {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            field: pos.field.clone(),
            message: message.into(),
        }
    }
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

const EMOTION_HELP: &str = "write a mood name with an optional intensity: \"happy\" or \"sad:0.5\"";

impl RawScript {
    fn validate(self, ctx: &Ctx, base_dir: &Path) -> Result<Script, ScriptError> {
        let mut targets = BTreeMap::new();
        for (name, t) in &self.targets {
            let v = t.get_ref();
            if matches!(name.as_str(), "camera" | "ahead") {
                return Err(ctx.at(
                    t.span(),
                    &format!("targets.{name}"),
                    format!("\"{name}\" is built in; give the target another name"),
                ));
            }
            if !(v.yaw.is_finite() && v.pitch.is_finite())
                || v.yaw.abs() > 90.0
                || v.pitch.abs() > 90.0
            {
                return Err(ctx.at(
                    t.span(),
                    &format!("targets.{name}"),
                    "yaw and pitch are degrees within -90..=90 (yaw + to the idol's left, pitch + up)",
                ));
            }
            targets.insert(name.clone(), deg(v.yaw, v.pitch));
        }
        let h = &self.script;
        let fps = match &h.fps {
            None => None,
            Some(f) => {
                let x = *f.get_ref();
                if !(FPS.0..=FPS.1).contains(&x) {
                    return Err(ctx.at(
                        f.span(),
                        "script.fps",
                        format!(
                            "{x} is out of range: {} ({}..={})",
                            ranges::FPS_IS,
                            FPS.0,
                            FPS.1
                        ),
                    ));
                }
                Some(x as u32)
            }
        };
        let seed = match &h.seed {
            None => None,
            Some(s) => {
                let x = *s.get_ref();
                if x < 0 {
                    return Err(ctx.at(s.span(), "script.seed", "the seed is a whole number >= 0"));
                }
                Some(x as u64)
            }
        };
        let look_at = match &h.look_at {
            None => ("ahead".to_string(), Look::Free),
            Some(v) => ctx.look(v, "script.look_at", &targets)?,
        };
        let defaults = Defaults {
            title: h.title.clone(),
            voice: h.voice.clone(),
            speaker: h.speaker.clone(),
            rig: h.rig.clone(),
            fps,
            seed,
            rate: ctx.float(
                &h.rate,
                "script.rate",
                LENGTH_SCALE.0,
                LENGTH_SCALE.1,
                ranges::LENGTH_SCALE_IS,
            )?,
            noise_scale: ctx.float(
                &h.noise_scale,
                "script.noise_scale",
                NOISE.0,
                NOISE.1,
                ranges::NOISE_IS,
            )?,
            noise_w: ctx.float(
                &h.noise_w,
                "script.noise_w",
                NOISE.0,
                NOISE.1,
                ranges::NOISE_W_IS,
            )?,
            gap: match &h.gap {
                None => 0.3,
                Some(v) => ctx.time(v, "script.gap")?,
            },
            tail: match &h.tail {
                None => 0.5,
                Some(v) => ctx.time(v, "script.tail")?,
            },
            look_at,
        };
        if self.line.is_empty() {
            return Err(ScriptError {
                file: ctx.file.to_path_buf(),
                line: 1,
                column: 1,
                field: "line".into(),
                message: "the script has no lines: add at least one [[line]] with text = \"...\" or audio = \"take.wav\"".into(),
            });
        }
        let mut lines: Vec<Line> = Vec::with_capacity(self.line.len());
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        let mut last_at: Option<(f64, usize)> = None;
        for (i, l) in self.line.iter().enumerate() {
            let f = |k: &str| format!("line[{}].{k}", i + 1);
            let table = l.span();
            let r = l.get_ref();
            let id = match &r.id {
                None => None,
                Some(s) => {
                    let id = s.get_ref().trim().to_string();
                    if id.is_empty()
                        || !id
                            .chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
                    {
                        return Err(ctx.at(
                            s.span(),
                            &f("id"),
                            "a line id is letters, digits, `_`, `-` or `.`",
                        ));
                    }
                    if let Some(prev) = ids.insert(id.clone(), i) {
                        return Err(ctx.at(
                            s.span(),
                            &f("id"),
                            format!("id \"{id}\" is already used by line {}", prev + 1),
                        ));
                    }
                    Some(id)
                }
            };
            let text = r.text.as_ref().map(|t| t.get_ref().clone());
            let has_words = |t: &str| {
                let (clean, _) = TagParser::parse_all(t);
                clean.chars().any(char::is_alphanumeric)
            };
            let kind = match (&r.audio, &r.phonemes) {
                (Some(a), p) => {
                    if a.get_ref().trim().is_empty() {
                        return Err(ctx.at(a.span(), &f("audio"), "the audio path is empty"));
                    }
                    if let Some(t) = &r.text {
                        let (_, cues) = TagParser::parse_all(t.get_ref());
                        if cues
                            .iter()
                            .any(|c| matches!(c.event, CueEvent::Break { .. }))
                        {
                            return Err(ctx.at(
                                t.span(),
                                &f("text"),
                                "a recorded line's transcript cannot have <break/>: the take is played as recorded; split it into two lines with a gap, or edit the audio",
                            ));
                        }
                    }
                    if let Some(rate) = &r.rate {
                        return Err(ctx.at(
                            rate.span(),
                            &f("rate"),
                            "a recorded line keeps its own pace: rate applies to spoken lines only",
                        ));
                    }
                    LineKind::Recorded {
                        audio: base_dir.join(a.get_ref().trim()),
                        phonemes: p.as_ref().map(|p| base_dir.join(p.get_ref().trim())),
                    }
                }
                (None, Some(p)) => {
                    return Err(ctx.at(
                        p.span(),
                        &f("phonemes"),
                        "phonemes (an alignment) belongs to a recorded line: add audio = \"take.wav\", or remove it (spoken lines get their phonemes from the voice)",
                    ));
                }
                (None, None) => match &r.text {
                    Some(t) if has_words(t.get_ref()) => LineKind::Spoken,
                    Some(t) => {
                        return Err(ctx.at(
                            t.span(),
                            &f("text"),
                            "the line has no words to say: write some text, or use audio = \"take.wav\" for a recorded line, or a gap/at on the next line for silence",
                        ));
                    }
                    None => {
                        return Err(ctx.at(
                            table,
                            &format!("line[{}]", i + 1),
                            "a line needs text = \"...\" (spoken by the voice) or audio = \"take.wav\" (a recorded line)",
                        ));
                    }
                },
            };
            let timing = match (&r.at, &r.gap) {
                (Some(a), Some(_)) => {
                    return Err(ctx.at(
                        a.span(),
                        &f("at"),
                        "give either at (an absolute time) or gap (after the previous line), not both",
                    ));
                }
                (Some(a), None) => {
                    let secs = ctx.time(a, &f("at"))?;
                    if let Some((prev, j)) = last_at
                        && secs < prev
                    {
                        return Err(ctx.at(
                            a.span(),
                            &f("at"),
                            format!(
                                "at {secs} s is before line {} (at {prev} s): lines play in script order, so their at times must increase",
                                j + 1
                            ),
                        ));
                    }
                    last_at = Some((secs, i));
                    Timing::At { secs }
                }
                (None, Some(g)) => Timing::After {
                    gap: Some(ctx.time(g, &f("gap"))?),
                },
                (None, None) => Timing::After { gap: None },
            };
            let emotion = match &r.emotion {
                None => None,
                Some(e) => {
                    let s = e.get_ref().trim();
                    let (name, inten) = match s.split_once(':') {
                        Some((n, x)) => (n.trim(), x.trim().parse::<f32>().ok()),
                        None => (s, Some(1.0)),
                    };
                    match inten {
                        Some(x)
                            if !name.is_empty()
                                && name.chars().all(|c| c.is_alphanumeric() || c == '_')
                                && (0.0..=1.0).contains(&x) =>
                        {
                            Some((name.to_lowercase(), x))
                        }
                        _ => return Err(ctx.at(e.span(), &f("emotion"), EMOTION_HELP)),
                    }
                }
            };
            let look_at = match &r.look_at {
                None => None,
                Some(v) => Some(ctx.look(v, &f("look_at"), &targets)?),
            };
            let pos = ctx.pos(table.clone(), &format!("line[{}]", i + 1));
            let at_pos = r.at.as_ref().map(|a| ctx.pos(a.span(), &f("at")));
            let _ = &text;
            lines.push(Line {
                index: i,
                id,
                kind,
                text,
                rate: ctx.float(
                    &r.rate,
                    &f("rate"),
                    LENGTH_SCALE.0,
                    LENGTH_SCALE.1,
                    ranges::LENGTH_SCALE_IS,
                )?,
                emphasis: ctx
                    .float(&r.emphasis, &f("emphasis"), 0.0, 1.0, "emphasis")?
                    .unwrap_or(0.0),
                timing,
                emotion,
                look_at,
                pos,
                at_pos,
            });
        }
        let mut events = Vec::with_capacity(self.event.len());
        for (i, e) in self.event.iter().enumerate() {
            let f = |k: &str| format!("event[{}].{k}", i + 1);
            let r = e.get_ref();
            let name = r.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(ctx.at(r.name.span(), &f("name"), "the event name is empty"));
            }
            let anchor = match (&r.at, &r.line) {
                (Some(a), None) => {
                    if let Some(o) = &r.offset {
                        return Err(ctx.at(
                            o.span(),
                            &f("offset"),
                            "offset is relative to a line: give line = \"ID\" with it, or use at alone",
                        ));
                    }
                    Anchor::At(ctx.time(a, &f("at"))?)
                }
                (None, Some(l)) => {
                    let id = l.get_ref().trim();
                    let Some(&index) = ids.get(id) else {
                        let valid: Vec<String> = ids.keys().map(|k| format!("\"{k}\"")).collect();
                        return Err(ctx.at(
                            l.span(),
                            &f("line"),
                            if valid.is_empty() {
                                format!("no line has id \"{id}\": give the line an id = \"{id}\"")
                            } else {
                                format!(
                                    "no line has id \"{id}\": valid ids are {}",
                                    valid.join(", ")
                                )
                            },
                        ));
                    };
                    let offset = match &r.offset {
                        None => 0.0,
                        Some(o) => ctx.time(o, &f("offset"))?,
                    };
                    Anchor::Line { index, offset }
                }
                (Some(a), Some(_)) => {
                    return Err(ctx.at(
                        a.span(),
                        &f("at"),
                        "give either at (seconds from the start) or line (+ offset), not both",
                    ));
                }
                (None, None) => {
                    return Err(ctx.at(
                        e.span(),
                        &format!("event[{}]", i + 1),
                        "an event needs a time: at = \"12.5s\", or line = \"ID\" with an optional offset = \"200ms\"",
                    ));
                }
            };
            events.push(PassEvent {
                name,
                data: r
                    .data
                    .as_ref()
                    .map(toml_to_json)
                    .unwrap_or(serde_json::Value::Null),
                anchor,
                pos: ctx.pos(e.span(), &format!("event[{}]", i + 1)),
            });
        }
        Ok(Script {
            file: ctx.file.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            defaults,
            lines,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Script, ScriptError> {
        Script::parse(src, Path::new("s.toml"), Path::new("/base"))
    }

    fn err(src: &str) -> ScriptError {
        parse(src).expect_err("should fail")
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("300ms"), Some(0.3));
        assert_eq!(parse_time("1.5s"), Some(1.5));
        assert_eq!(parse_time("2"), Some(2.0));
        assert_eq!(parse_time("-1s"), None);
        assert_eq!(parse_time("1h"), None);
        assert_eq!(parse_time("ms"), None);
    }

    #[test]
    fn full_script_parses() {
        let s = parse(
            r#"
[script]
title = "T"
seed = 7
fps = 30
gap = "250ms"
look_at = "camera"

[targets]
chat = { yaw = -20, pitch = -10 }

[[line]]
id = "hi"
text = "[happy] Hello! <wave> <break time=\"300ms\"/> Welcome."
rate = 0.9
emphasis = 0.5
look_at = "chat"

[[line]]
audio = "takes/a.wav"
phonemes = "takes/a.TextGrid"
text = "A recorded line."
at = 10

[[event]]
name = "camera"
line = "hi"
offset = "1s"
data = { shot = "close", zoom = 1.5 }

[[event]]
name = "lights"
at = "2.5s"
"#,
        )
        .unwrap();
        assert_eq!(s.defaults.seed, Some(7));
        assert_eq!(s.defaults.gap, 0.25);
        assert_eq!(s.lines.len(), 2);
        assert_eq!(s.lines[0].rate, Some(0.9));
        assert_eq!(s.lines[0].look_at.as_ref().unwrap().0, "chat");
        assert_eq!(
            s.lines[1].kind,
            LineKind::Recorded {
                audio: PathBuf::from("/base/takes/a.wav"),
                phonemes: Some(PathBuf::from("/base/takes/a.TextGrid")),
            }
        );
        assert_eq!(s.lines[1].timing, Timing::At { secs: 10.0 });
        assert_eq!(s.lines[1].at_pos.as_ref().unwrap().line, 23);
        assert_eq!(
            s.events[0].anchor,
            Anchor::Line {
                index: 0,
                offset: 1.0
            }
        );
        assert_eq!(s.events[0].data["shot"], "close");
        assert_eq!(s.events[1].anchor, Anchor::At(2.5));
    }

    #[test]
    fn errors_are_positioned_and_say_what_is_valid() {
        let e = err("[[line]]\ntext = \"Hi\"\nspeed = 2\n");
        assert_eq!((e.line, e.column), (3, 1));
        assert_eq!(e.field, "line[1].speed");
        assert!(
            e.message.contains("unknown field") && e.message.contains("rate"),
            "{e}"
        );

        let e = err("[[line]]\ntext = \"Hi\"\ngap = \"soon\"\n");
        assert_eq!((e.line, e.field.as_str()), (3, "line[1].gap"));
        assert!(e.message.contains("300ms"), "{e}");

        let e = err("[[line]]\ntext = \"Hi\"\nlook_at = \"moon\"\n");
        assert_eq!(e.line, 3);
        assert!(
            e.message.contains("camera") && e.message.contains("[targets]"),
            "{e}"
        );

        let e = err("[[line]]\ntext = \"Hi\"\nat = 5\n[[line]]\ntext = \"Yo\"\nat = 2\n");
        assert_eq!((e.line, e.column, e.field.as_str()), (6, 6, "line[2].at"));

        let e =
            err("[[line]]\nid = \"a\"\ntext = \"Hi\"\n[[event]]\nname = \"cam\"\nline = \"b\"\n");
        assert_eq!(e.line, 6);
        assert!(e.message.contains("\"a\""), "{e}");

        let e = err("[[line]]\naudio = \"x.wav\"\ntext = \"Hi <break/> there\"\n");
        assert_eq!(e.field, "line[1].text");

        let e = err("[[line]]\nrate = 1.0\n");
        assert_eq!(e.line, 1);
        assert!(
            e.message.contains("text") && e.message.contains("audio"),
            "{e}"
        );

        let e = err("[script]\nfps = 0\n[[line]]\ntext = \"Hi\"\n");
        assert_eq!((e.line, e.column), (2, 7));

        let e = err("[[line]\ntext = 1\n");
        assert_eq!(e.line, 1);

        let e = err("[script]\n");
        assert!(e.message.contains("no lines"), "{e}");

        let e = err("[[line]]\ntext = \"Hi\"\nemotion = \"happy:2\"\n");
        assert_eq!(e.field, "line[1].emotion");
    }
}
