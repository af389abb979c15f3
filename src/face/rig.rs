//! Rigs as data: how the canonical channels (see [`super::canon`]) become a character's own channels.
//!
//! A rig file (`rigs/NAME.toml`) names the rig and lists its channels in output order:
//!
//! ```toml
//! name = "live2d"
//! description = "Live2D Cubism standard parameters"
//!
//! [[channel]]
//! name = "ParamEyeLOpen"       # the rig's own name
//! from = { eyeBlinkLeft = -1.0 } # canonical sources and their weights (or one name: from = "jawOpen")
//! offset = 1.0                 # added before the curve (default 0)
//! range = [0.0, 1.0]           # clamp (default [0, 1])
//! curve = "linear"             # linear | smoothstep | ease-in | ease-out | "gamma 0.8" (default linear)
//!
//! [expressions.smug]           # optional custom expressions: canonical channel = weight
//! mouthSmileLeft = 0.6
//!
//! [gestures.curtsy]             # optional gestures, as in rigs/gestures/builtin.toml's [action.*]
//! duration = 1.2
//! track = [{ motion = "hold", head = { pitch = -12.0, roll = 4.0 } }]
//! ```
//!
//! A custom expression or gesture with the name of a built-in one (other than the five VRM presets)
//! replaces it for this rig (see `gesture.rs`).
//!
//! A channel whose `from` is omitted takes the canonical channel of the same name. The value is
//! `clamp(curve(offset + Σ weight · source), range)`; the curve acts on the value in the unit interval
//! (values outside it pass through unchanged except for `gamma`, which keeps the sign).
//!
//! A bad file fails with its path, line and field. Built-in rigs (`arkit52`, `vrm`, `live2d`,
//! `oculus15`) are compiled in from this repository's `rigs/` directory.

use super::canon;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The built-in rigs: name and TOML source.
pub const BUILTIN: [(&str, &str); 4] = [
    ("arkit52", include_str!("../../rigs/arkit52.toml")),
    ("vrm", include_str!("../../rigs/vrm.toml")),
    ("live2d", include_str!("../../rigs/live2d.toml")),
    ("oculus15", include_str!("../../rigs/oculus15.toml")),
];

/// A rig that could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    #[error("{file}:{line}: field `{field}`: {message}")]
    Invalid {
        file: String,
        line: usize,
        field: String,
        message: String,
    },
    #[error(
        "rig `{0}` not found: use one of arkit52, vrm, live2d, oculus15 (see `idol rigs`), or a path to a rig .toml file"
    )]
    NotFound(String),
    #[error("cannot read rig file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// How a channel's value is shaped before clamping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Curve {
    Linear,
    Smoothstep,
    EaseIn,
    EaseOut,
    Gamma(f32),
}

impl Curve {
    fn parse(s: &str) -> Option<Curve> {
        let s = s.trim();
        Some(match s {
            "linear" => Curve::Linear,
            "smoothstep" => Curve::Smoothstep,
            "ease-in" => Curve::EaseIn,
            "ease-out" => Curve::EaseOut,
            _ => {
                let g: f32 = s.strip_prefix("gamma")?.trim().parse().ok()?;
                if !(g.is_finite() && g > 0.0) {
                    return None;
                }
                Curve::Gamma(g)
            }
        })
    }

    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Curve::Linear => v,
            Curve::Gamma(g) => v.signum() * v.abs().powf(g),
            _ if !(0.0..=1.0).contains(&v) => v,
            Curve::Smoothstep => v * v * (3.0 - 2.0 * v),
            Curve::EaseIn => v * v,
            Curve::EaseOut => v * (2.0 - v),
        }
    }

    pub fn name(self) -> String {
        match self {
            Curve::Linear => "linear".into(),
            Curve::Smoothstep => "smoothstep".into(),
            Curve::EaseIn => "ease-in".into(),
            Curve::EaseOut => "ease-out".into(),
            Curve::Gamma(g) => format!("gamma {g}"),
        }
    }
}

/// One output channel of a rig.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub name: String,
    /// (canonical index, weight).
    pub sources: Vec<(usize, f32)>,
    pub offset: f32,
    pub min: f32,
    pub max: f32,
    pub curve: Curve,
}

/// A custom expression from a rig file: canonical channel weights at full intensity.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomExpression {
    pub name: String,
    pub weights: Vec<(usize, f32)>,
}

/// A validated rig.
#[derive(Debug, Clone, PartialEq)]
pub struct Rig {
    pub name: String,
    pub description: String,
    pub channels: Vec<Channel>,
    pub expressions: Vec<CustomExpression>,
    /// The rig's own gestures (added to the built-in catalogue, or replacing one of the same name).
    pub gestures: Vec<super::gesture::Gesture>,
    /// Flat term list for the hot path: for channel c, `terms[spans[c].0..spans[c].1]`.
    terms: Vec<(u16, f32)>,
    spans: Vec<(u32, u32)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRig {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    channel: Vec<RawChannel>,
    #[serde(default)]
    expressions: BTreeMap<String, Spanned<BTreeMap<String, f32>>>,
    #[serde(default)]
    gestures: BTreeMap<String, Spanned<super::gesture::RawGesture>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    name: Spanned<String>,
    from: Option<Spanned<RawFrom>>,
    #[serde(default)]
    offset: f32,
    range: Option<Spanned<Vec<f32>>>,
    curve: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFrom {
    One(String),
    Many(BTreeMap<String, f32>),
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

impl Rig {
    /// A built-in rig by name, a rig file under `dir` (`dir/NAME.toml`), or a path to a `.toml` file.
    pub fn find(name_or_path: &str, dir: Option<&Path>) -> Result<Rig, RigError> {
        let looks_like_path = name_or_path.ends_with(".toml") || name_or_path.contains('/');
        if !looks_like_path {
            if let Some(d) = dir {
                let p = d.join(format!("{name_or_path}.toml"));
                if p.is_file() {
                    return Rig::load(&p);
                }
            }
            if let Some((_, src)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
                return Rig::parse(src, &format!("rigs/{name_or_path}.toml"));
            }
            return Err(RigError::NotFound(name_or_path.to_string()));
        }
        let p = Path::new(name_or_path);
        if !p.is_file() {
            return Err(RigError::NotFound(name_or_path.to_string()));
        }
        Rig::load(p)
    }

    /// A built-in rig (panics only if the compiled-in file is broken, which a test rules out).
    pub fn builtin(name: &str) -> Result<Rig, RigError> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, src)) => Rig::parse(src, &format!("rigs/{name}.toml")),
            None => Err(RigError::NotFound(name.to_string())),
        }
    }

    pub fn load(path: &Path) -> Result<Rig, RigError> {
        let text = crate::budget::read_text(path, crate::budget::MAX_TEXT_FILE_BYTES).map_err(
            |error| RigError::Io {
                path: path.to_path_buf(),
                error,
            },
        )?;
        Rig::parse(&text, &path.display().to_string())
    }

    /// Parse and validate rig TOML; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Rig, RigError> {
        let bad = |at: usize, field: &str, message: String| RigError::Invalid {
            file: file.to_string(),
            line: line_of(text, at),
            field: field.to_string(),
            message,
        };
        let raw: RawRig = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let msg = e.message().to_string();
            // The field: a backquoted name in the message, else the key on the offending line.
            let field = msg
                .split('`')
                .nth(1)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let line_start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
                    let line = text[line_start..].lines().next().unwrap_or("");
                    line.split('=').next().unwrap_or("").trim().to_string()
                });
            bad(at, &field, msg)
        })?;
        if raw.name.get_ref().trim().is_empty() {
            return Err(bad(
                raw.name.span().start,
                "name",
                "rig name is empty".into(),
            ));
        }
        if raw.channel.is_empty() {
            return Err(bad(
                0,
                "channel",
                "a rig needs at least one [[channel]]".into(),
            ));
        }
        let mut channels = Vec::with_capacity(raw.channel.len());
        for ch in raw.channel {
            let at = ch.name.span().start;
            let name = ch.name.into_inner();
            if channels.iter().any(|c: &Channel| c.name == name) {
                return Err(bad(at, "name", format!("channel `{name}` is listed twice")));
            }
            let sources = match ch.from {
                None => match canon::index(&name) {
                    Some(i) => vec![(i, 1.0)],
                    None => {
                        return Err(bad(
                            at,
                            "from",
                            format!(
                                "channel `{name}` is not a canonical channel, so it needs `from = {{ canonicalName = weight }}`"
                            ),
                        ));
                    }
                },
                Some(f) => {
                    let fat = f.span().start;
                    let list: Vec<(String, f32)> = match f.into_inner() {
                        RawFrom::One(s) => vec![(s, 1.0)],
                        RawFrom::Many(m) => m.into_iter().collect(),
                    };
                    if list.is_empty() {
                        return Err(bad(fat, "from", format!("channel `{name}` has no sources")));
                    }
                    let mut v = Vec::with_capacity(list.len());
                    for (src, w) in list {
                        let Some(i) = canon::index(&src) else {
                            return Err(bad(
                                fat,
                                "from",
                                format!(
                                    "unknown canonical channel `{src}` (see `idol rigs --canonical`)"
                                ),
                            ));
                        };
                        if !w.is_finite() {
                            return Err(bad(
                                fat,
                                "from",
                                format!("weight of `{src}` is not finite"),
                            ));
                        }
                        v.push((i, w));
                    }
                    v
                }
            };
            let (min, max) = match ch.range {
                None => (0.0, 1.0),
                Some(r) => {
                    let rat = r.span().start;
                    let r = r.into_inner();
                    if r.len() != 2 || !(r[0].is_finite() && r[1].is_finite() && r[0] <= r[1]) {
                        return Err(bad(
                            rat,
                            "range",
                            "range must be [min, max] with min <= max".into(),
                        ));
                    }
                    (r[0], r[1])
                }
            };
            let curve = match ch.curve {
                None => Curve::Linear,
                Some(c) => Curve::parse(c.get_ref()).ok_or_else(|| {
                    bad(
                        c.span().start,
                        "curve",
                        format!(
                            "unknown curve `{}`: use linear, smoothstep, ease-in, ease-out or \"gamma G\"",
                            c.get_ref()
                        ),
                    )
                })?,
            };
            if !ch.offset.is_finite() {
                return Err(bad(at, "offset", "offset is not finite".into()));
            }
            channels.push(Channel {
                name,
                sources,
                offset: ch.offset,
                min,
                max,
                curve,
            });
        }
        let mut expressions = Vec::new();
        for (ename, table) in raw.expressions {
            let at = table.span().start;
            if canon::EMOTIONS.contains(&ename.as_str()) || ename == "neutral" {
                return Err(bad(
                    at,
                    "expressions",
                    format!("`{ename}` is a built-in expression; give the custom one another name"),
                ));
            }
            let mut weights = Vec::new();
            for (k, w) in table.into_inner() {
                let Some(i) = canon::index(&k) else {
                    return Err(bad(
                        at,
                        &format!("expressions.{ename}"),
                        format!("unknown canonical channel `{k}`"),
                    ));
                };
                weights.push((i, w));
            }
            expressions.push(CustomExpression {
                name: ename,
                weights,
            });
        }
        let mut gestures = Vec::new();
        for (gname, g) in raw.gestures {
            let at = g.span().start;
            gestures.push(super::gesture::gesture_from_raw(
                &gname,
                g.into_inner(),
                at,
                &format!("gestures.{gname}"),
                &bad,
            )?);
        }
        let mut terms = Vec::new();
        let mut spans = Vec::with_capacity(channels.len());
        for c in &channels {
            let a = terms.len() as u32;
            terms.extend(c.sources.iter().map(|&(i, w)| (i as u16, w)));
            spans.push((a, terms.len() as u32));
        }
        Ok(Rig {
            name: raw.name.into_inner(),
            description: raw.description,
            channels,
            expressions,
            gestures,
            terms,
            spans,
        })
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    pub fn channel_names(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(|c| c.name.as_str())
    }

    /// Map a canonical vector onto this rig's channels. Allocation-free.
    #[inline]
    pub fn retarget(&self, canon: &[f32; canon::COUNT], out: &mut [f32]) {
        for ((o, &(a, b)), c) in out.iter_mut().zip(&self.spans).zip(&self.channels) {
            let mut v = c.offset;
            for &(i, w) in &self.terms[a as usize..b as usize] {
                v += w * canon[i as usize];
            }
            let v = c.curve.apply(v);
            *o = v.clamp(c.min, c.max);
        }
    }

    /// [`Rig::retarget`] into new weights.
    pub fn retargeted(&self, canon: &[f32; canon::COUNT]) -> super::MorphWeights {
        let mut w = vec![0.0; self.len()];
        self.retarget(canon, &mut w);
        super::MorphWeights::clamped(w)
    }

    /// Index of the channel with this name (case-insensitive).
    pub fn channel_index(&self, name: &str) -> Option<usize> {
        self.channels
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_line_and_field() {
        let src = "name = \"x\"\n\n[[channel]]\nname = \"a\"\nfrom = { nope = 1.0 }\n";
        let e = Rig::parse(src, "rigs/x.toml").unwrap_err().to_string();
        assert!(e.starts_with("rigs/x.toml:5: field `from`"), "{e}");
        let src = "name = \"x\"\n[[channel]]\nname = \"jawOpen\"\nrange = [1.0, 0.0]\n";
        let e = Rig::parse(src, "r.toml").unwrap_err().to_string();
        assert!(e.starts_with("r.toml:4: field `range`"), "{e}");
        let src = "name = \"x\"\n[[channel]]\nname = \"jawOpen\"\ncurv = \"linear\"\n";
        let e = Rig::parse(src, "r.toml").unwrap_err().to_string();
        assert!(e.starts_with("r.toml:4: field `curv`"), "{e}");
        let src = "name = \"x\"\n[[channel]]\nname = \"jawOpen\"\ncurve = \"wobbly\"\n";
        let e = Rig::parse(src, "r.toml").unwrap_err().to_string();
        assert!(e.starts_with("r.toml:4: field `curve`"), "{e}");
        let src = "name = \"x\"\n[[channel]]\nname = \"jawOpen\"\noffset = [\n";
        let e = Rig::parse(src, "r.toml").unwrap_err().to_string();
        assert!(e.starts_with("r.toml:"), "{e}");
    }

    #[test]
    fn retarget_applies_weights_curves_and_clamps() {
        let src = r#"
name = "custom"
[[channel]]
name = "Open"
from = { jawOpen = 2.0, mouthClose = -1.0 }
[[channel]]
name = "EyeL"
from = "eyeBlinkLeft"
offset = 1.0
range = [-1.0, 1.0]
curve = "gamma 2"
[expressions.smug]
mouthSmileLeft = 0.7
"#;
        let r = Rig::parse(src, "c.toml").unwrap();
        let mut c = [0.0f32; canon::COUNT];
        c[canon::ak::jawOpen] = 0.8;
        c[canon::ak::mouthClose] = 0.3;
        c[canon::ak::eyeBlinkLeft] = 0.5;
        let mut out = [0.0; 2];
        r.retarget(&c, &mut out);
        assert_eq!(out[0], 1.0);
        assert!((out[1] - 1.0).abs() < 1e-6);
        assert_eq!(r.expressions[0].name, "smug");
    }
}
