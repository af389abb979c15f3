//! Persona cards: who the idol is. Input: a card file (our TOML, or an imported Character Card; see
//! [`super::import`]). Output: a validated [`PersonaCard`].
//!
//! Our TOML format (`personas/mika.toml` is the shipped example):
//!
//! ```toml
//! name = "Mika"                       # required
//! description = "..."                 # who she is
//! personality = "..."
//! speaking_style = "..."
//! scenario = "..."                    # optional: the situation
//! greeting = "[happy] Hi chat! <wave>"
//! emotions = ["happy", "sad", ...]    # tags the model may use as [happy]
//! actions = ["wave", "nod", ...]      # tags the model may use as <wave>
//! blocked_words = ["..."]
//! deflection = "[neutral] Let's talk about something else!"
//! [[example]]                          # example dialogue, repeatable
//! user = "What's your favourite food?"
//! char = "[happy] Strawberry crepes, obviously!"
//! [voice]  voice = "en_US-joe-medium", speaker = "...", length_scale = 1.0, noise_scale, noise_w,
//!          han = "ja"                     # Han text without kana read as Japanese ("zh": Mandarin)
//! [voice.languages]  ja = "jf_alpha", zh = "jf_alpha", en = "en_US-joe-medium"
//!                                     # a voice per language: a clause is split by script (kana →
//!                                     # ja, Han → zh or ja, Latin → en) and each span spoken by its
//!                                     # voice; `voice` speaks the rest (a Kokoro voice or a Piper one);
//!                                     # idol.toml's [voice] settings, where set, go first
//! [rig]    rig = "arkit52", emotion_intensity = 0.8
//! [generation]  temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed, max_tokens, stop
//! [reply]  max_sentences = 3, max_words = 40, cut_at_newline = true, cut_at_speaker = true,
//!          cut_card_copy = true            # how replies are cut for speech (`super::shape`)
//! ```
//!
//! Every error carries the file, line and column, the field, and what is allowed there ([`CardError`]):
//! syntax and type errors come from the TOML parser's span, value errors from [`serde_spanned::Spanned`]
//! fields. `{{char}}` and `{{user}}` (and the older `<BOT>`/`<USER>`) are macros expanded by
//! [`expand_macros`] when the prompt is built. Pure; no threads.

use super::GenParams;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Emotion tags a card gets when it names none (the VRM 1.0 expression set).
pub const DEFAULT_EMOTIONS: &[&str] = &["neutral", "happy", "sad", "angry", "surprised", "relaxed"];
/// Action tags a card gets when it names none.
pub const DEFAULT_ACTIONS: &[&str] = &[
    "wave",
    "nod",
    "shake_head",
    "bow",
    "wink",
    "laugh",
    "think",
    "clap",
];
/// What the idol says instead of a reply that hit the blocked-word list, unless the card says otherwise.
pub const DEFAULT_DEFLECTION: &str = "[neutral] Hmm, let's talk about something else!";

/// A card error with its position. `line`/`column` are 1-based; 0 means the format has no lines
/// (a PNG chunk, a zip entry), and the message then says where instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}{message}", path.display(), pos(*line, *column), field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct CardError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: Option<String>,
    pub message: String,
}

fn pos(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}:{column}")
    }
}

impl CardError {
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        CardError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            field: None,
            message: message.into(),
        }
    }

    fn at(
        path: &Path,
        text: &str,
        offset: usize,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_col(text, offset);
        CardError {
            path: path.to_path_buf(),
            line,
            column,
            field,
            message: message.into(),
        }
    }
}

pub use crate::tomlpos::line_col;

/// One example exchange. `user` may be empty (the character speaking unprompted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Example {
    pub user: String,
    pub char: String,
}

/// Voice defaults for the TTS stage.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceDefaults {
    /// Piper voice name (`voices/NAME.onnx`) or a path.
    pub voice: Option<String>,
    /// Speaker name or number for multi-speaker voices.
    pub speaker: Option<String>,
    pub length_scale: Option<f32>,
    pub noise_scale: Option<f32>,
    pub noise_w: Option<f32>,
    /// `[voice.languages]`: language (`ja`, `zh`, `en`) → the voice that speaks it (a Kokoro voice
    /// such as `jf_alpha`, or a Piper voice), for the languages idol.toml does not route.
    #[serde(default)]
    pub languages: std::collections::BTreeMap<String, String>,
    /// How Han text with no kana is read: `"ja"` (the idol speaks Japanese) or `"zh"`.
    pub han: Option<String>,
}

/// Rig defaults for the face stage.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RigDefaults {
    /// Rig name (`arkit52`, `vrm`, `live2d`, `oculus`) or a path to a custom rig TOML.
    pub rig: Option<String>,
    /// Scale of emotion expressions, 0..=1.
    pub emotion_intensity: Option<f32>,
}

/// Where a card came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardSource {
    Toml(PathBuf),
    /// Imported Character Card; `spec` is e.g. `chara_card_v2`.
    Imported {
        path: PathBuf,
        spec: String,
    },
    Builtin,
}

/// A validated persona.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonaCard {
    pub name: String,
    pub description: String,
    pub personality: String,
    pub speaking_style: String,
    pub scenario: String,
    pub greeting: String,
    pub alternate_greetings: Vec<String>,
    pub examples: Vec<Example>,
    pub emotions: Vec<String>,
    pub actions: Vec<String>,
    pub blocked_words: Vec<String>,
    pub deflection: String,
    pub voice: VoiceDefaults,
    pub rig: RigDefaults,
    pub generation: GenParams,
    /// An imported card's own system prompt; replaces our introduction (`{{original}}` inside it stands
    /// for ours). The tag and brevity rules are appended either way.
    pub system_prompt: Option<String>,
    /// An imported card's post-history instructions (sent after the history).
    pub post_history: Option<String>,
    /// How replies are cut for speech (`[reply]`).
    pub reply: super::shape::ShapeConfig,
    pub source: CardSource,
}

impl PersonaCard {
    /// A card with this name and the defaults for everything else.
    pub fn named(name: impl Into<String>) -> Self {
        PersonaCard {
            name: name.into(),
            description: String::new(),
            personality: String::new(),
            speaking_style: String::new(),
            scenario: String::new(),
            greeting: String::new(),
            alternate_greetings: Vec::new(),
            examples: Vec::new(),
            emotions: DEFAULT_EMOTIONS.iter().map(|s| s.to_string()).collect(),
            actions: DEFAULT_ACTIONS.iter().map(|s| s.to_string()).collect(),
            blocked_words: Vec::new(),
            deflection: DEFAULT_DEFLECTION.into(),
            voice: VoiceDefaults::default(),
            rig: RigDefaults::default(),
            generation: GenParams::default(),
            system_prompt: None,
            post_history: None,
            reply: super::shape::ShapeConfig::default(),
            source: CardSource::Builtin,
        }
    }

    /// Parse our TOML card. `path` is only used in error messages.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, CardError> {
        let raw: RawCard = toml::from_str(text).map_err(|e| toml_error(&e, text, path))?;
        raw.validate(text, path)
    }

    /// Read and parse a TOML card file.
    pub fn load_toml(path: &Path) -> Result<Self, CardError> {
        let text = crate::budget::read_text(path, crate::budget::MAX_TEXT_FILE_BYTES)
            .map_err(|e| CardError::new(path, format!("cannot read the persona card: {e}")))?;
        Self::from_toml_str(&text, path)
    }

    /// A file-name-safe identifier for this persona (memory files are named after it).
    pub fn slug(&self) -> String {
        let mut s = String::new();
        for c in self.name.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_alphanumeric() {
                s.push(c);
            } else if !s.ends_with('-') && !s.is_empty() {
                s.push('-');
            }
        }
        let s = s.trim_end_matches('-').to_string();
        if s.is_empty() { "persona".into() } else { s }
    }
}

/// Expand `{{char}}`, `{{user}}` (any case, inner spaces allowed) and the legacy `<BOT>`, `<USER>`.
/// Unknown `{{...}}` macros are left as written.
pub fn expand_macros(text: &str, char_name: &str, user_name: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['{', '<']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (replacement, len) = if let Some(body) = tail.strip_prefix("{{") {
            match body.find("}}") {
                Some(end) => {
                    let key = body[..end].trim().to_ascii_lowercase();
                    match key.as_str() {
                        "char" | "bot" => (Some(char_name), end + 4),
                        "user" => (Some(user_name), end + 4),
                        _ => (None, 1),
                    }
                }
                None => (None, 1),
            }
        } else if tail.len() >= 5 && tail[..5].eq_ignore_ascii_case("<bot>") {
            (Some(char_name), 5)
        } else if tail.len() >= 6 && tail[..6].eq_ignore_ascii_case("<user>") {
            (Some(user_name), 6)
        } else {
            (None, 1)
        };
        match replacement {
            Some(r) => out.push_str(r),
            None => out.push_str(&tail[..len]),
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

// ---- TOML parsing ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCard {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    personality: String,
    #[serde(default)]
    speaking_style: String,
    #[serde(default)]
    scenario: String,
    #[serde(default)]
    greeting: String,
    #[serde(default)]
    alternate_greetings: Vec<String>,
    #[serde(default, rename = "example")]
    examples: Vec<Spanned<RawExample>>,
    emotions: Option<Spanned<Vec<Spanned<String>>>>,
    actions: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    blocked_words: Vec<Spanned<String>>,
    deflection: Option<String>,
    voice: Option<Spanned<VoiceDefaults>>,
    #[serde(default)]
    rig: RawRig,
    #[serde(default)]
    generation: RawGeneration,
    system_prompt: Option<String>,
    post_history: Option<String>,
    #[serde(default)]
    reply: RawReply,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReply {
    max_sentences: Option<Spanned<usize>>,
    max_words: Option<Spanned<usize>>,
    cut_at_newline: Option<bool>,
    cut_at_speaker: Option<bool>,
    cut_card_copy: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExample {
    #[serde(default)]
    user: String,
    char: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRig {
    rig: Option<String>,
    emotion_intensity: Option<Spanned<f32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGeneration {
    temperature: Option<Spanned<f32>>,
    top_k: Option<usize>,
    top_p: Option<Spanned<f32>>,
    min_p: Option<Spanned<f32>>,
    repeat_penalty: Option<Spanned<f32>>,
    repeat_last_n: Option<usize>,
    seed: Option<u64>,
    max_tokens: Option<Spanned<usize>>,
    stop: Option<Vec<Spanned<String>>>,
}

/// Turn a TOML parser error into a positioned [`CardError`], naming the field it sits in.
fn toml_error(e: &toml::de::Error, text: &str, path: &Path) -> CardError {
    let span = e.span().unwrap_or(0..0);
    let mut message = e.message().trim().to_string();
    if message.starts_with("missing field") {
        message.push_str(" (a persona card needs at least `name = \"...\"`)");
    }
    CardError::at(path, text, span.start, field_at(text, span.start), message)
}

/// The dotted key (with its table) whose line contains `offset`, if that line is `key = value` or a
/// table header.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[offset..]
        .find('\n')
        .map(|i| offset + i)
        .unwrap_or(text.len());
    let line = text[line_start..line_end].trim();
    let clean = |k: &str| k.trim().trim_matches('"').trim_matches('\'').to_string();
    if line.starts_with('[') {
        return Some(clean(line.trim_matches(|c| c == '[' || c == ']')));
    }
    let key = clean(line.split('=').next()?);
    if key.is_empty() || !line.contains('=') {
        return table_at(text, line_start);
    }
    match table_at(text, line_start) {
        Some(t) => Some(format!("{t}.{key}")),
        None => Some(key),
    }
}

/// The `[table]` or `[[table]]` header in force at `offset`.
fn table_at(text: &str, offset: usize) -> Option<String> {
    text[..offset]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
}

fn is_tag_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn tag_list(
    list: Option<Spanned<Vec<Spanned<String>>>>,
    field: &str,
    defaults: &[&str],
    text: &str,
    path: &Path,
) -> Result<Vec<String>, CardError> {
    let Some(list) = list else {
        return Ok(defaults.iter().map(|s| s.to_string()).collect());
    };
    let span = list.span();
    let items = list.into_inner();
    if items.is_empty() {
        return Err(CardError::at(
            path,
            text,
            span.start,
            Some(field.into()),
            format!(
                "the list is empty; name at least one, e.g. {defaults:?}, or leave the field out for those defaults"
            ),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let s = item.get_ref();
        if !is_tag_name(s) {
            return Err(CardError::at(
                path,
                text,
                item.span().start,
                Some(field.into()),
                format!(
                    "{s:?} is not a tag name: allowed are 1 to 32 lowercase ASCII letters, digits, `_` \
                     and `-`, starting with a letter (e.g. \"happy\", \"shake_head\")"
                ),
            ));
        }
        if out.contains(s) {
            return Err(CardError::at(
                path,
                text,
                item.span().start,
                Some(field.into()),
                format!("{s:?} is listed twice"),
            ));
        }
        out.push(s.clone());
    }
    Ok(out)
}

fn check_range(
    v: &Option<Spanned<f32>>,
    field: &str,
    ok: impl Fn(f32) -> bool,
    allowed: &str,
    text: &str,
    path: &Path,
) -> Result<Option<f32>, CardError> {
    match v {
        None => Ok(None),
        Some(s) if ok(*s.get_ref()) && s.get_ref().is_finite() => Ok(Some(*s.get_ref())),
        Some(s) => Err(CardError::at(
            path,
            text,
            s.span().start,
            Some(field.into()),
            format!("{} is out of range: allowed is {allowed}", s.get_ref()),
        )),
    }
}

fn at_span(path: &Path, text: &str, span: Range<usize>, field: &str, message: String) -> CardError {
    CardError::at(path, text, span.start, Some(field.into()), message)
}

impl RawCard {
    fn validate(self, text: &str, path: &Path) -> Result<PersonaCard, CardError> {
        let name = self.name.get_ref().trim().to_string();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(at_span(
                path,
                text,
                self.name.span(),
                "name",
                "the name must be 1 to 64 characters on one line".into(),
            ));
        }
        let mut examples = Vec::new();
        for ex in self.examples {
            let ex = ex.into_inner();
            if ex.char.get_ref().trim().is_empty() {
                return Err(at_span(
                    path,
                    text,
                    ex.char.span(),
                    "example.char",
                    "the character's line is empty; write what she says".into(),
                ));
            }
            examples.push(Example {
                user: ex.user,
                char: ex.char.into_inner(),
            });
        }
        let emotions = tag_list(self.emotions, "emotions", DEFAULT_EMOTIONS, text, path)?;
        let actions = tag_list(self.actions, "actions", DEFAULT_ACTIONS, text, path)?;
        let mut blocked_words = Vec::new();
        for w in self.blocked_words {
            if w.get_ref().trim().is_empty() || !w.get_ref().chars().any(char::is_alphanumeric) {
                return Err(at_span(
                    path,
                    text,
                    w.span(),
                    "blocked_words",
                    format!("{:?} has no letters; list words or phrases", w.get_ref()),
                ));
            }
            blocked_words.push(w.into_inner().trim().to_string());
        }
        let raw_rig = self.rig;
        let rig = RigDefaults {
            rig: raw_rig.rig,
            emotion_intensity: check_range(
                &raw_rig.emotion_intensity,
                "rig.emotion_intensity",
                |v| (0.0..=1.0).contains(&v),
                "0.0 to 1.0",
                text,
                path,
            )?,
        };
        let (voice, voice_span) = match self.voice {
            Some(v) => {
                let span = v.span();
                (v.into_inner(), span)
            }
            None => (VoiceDefaults::default(), 0..0),
        };
        for (v, f) in [
            (voice.length_scale, "voice.length_scale"),
            (voice.noise_scale, "voice.noise_scale"),
            (voice.noise_w, "voice.noise_w"),
        ] {
            if let Some(x) = v.filter(|x| !(x.is_finite() && *x > 0.0 && *x <= 5.0)) {
                return Err(at_span(
                    path,
                    text,
                    voice_span.clone(),
                    f,
                    format!("{x} is out of range: allowed is above 0.0 up to 5.0"),
                ));
            }
        }
        for (k, name) in &voice.languages {
            let field = format!("voice.languages.{k}");
            if !crate::speech::VOICE_LANGUAGES.contains(&k.as_str()) {
                return Err(at_span(
                    path,
                    text,
                    voice_span.clone(),
                    &field,
                    format!(
                        "{k:?} is not a language a voice can be routed by: allowed {}",
                        crate::speech::VOICE_LANGUAGES.join(", ")
                    ),
                ));
            }
            if name.trim().is_empty() {
                return Err(at_span(
                    path,
                    text,
                    voice_span.clone(),
                    &field,
                    "empty voice: name a Kokoro voice (jf_alpha) or a Piper voice (en_US-joe-medium)"
                        .into(),
                ));
            }
        }
        if let Some(h) = voice.han.as_deref().filter(|h| !matches!(*h, "ja" | "zh")) {
            return Err(at_span(
                path,
                text,
                voice_span.clone(),
                "voice.han",
                format!(
                    "{h:?}: allowed \"ja\" (Han text without kana is read as Japanese) or \"zh\" (as Mandarin)"
                ),
            ));
        }

        let g = self.generation;
        let mut generation = GenParams::default();
        if let Some(t) = check_range(
            &g.temperature,
            "generation.temperature",
            |v| (0.0..=5.0).contains(&v),
            "0.0 (greedy) to 5.0",
            text,
            path,
        )? {
            generation.temperature = t;
        }
        if let Some(k) = g.top_k {
            generation.top_k = k;
        }
        if let Some(p) = check_range(
            &g.top_p,
            "generation.top_p",
            |v| v > 0.0 && v <= 1.0,
            "above 0.0 up to 1.0",
            text,
            path,
        )? {
            generation.top_p = p;
        }
        if let Some(p) = check_range(
            &g.min_p,
            "generation.min_p",
            |v| (0.0..1.0).contains(&v),
            "0.0 up to (not including) 1.0",
            text,
            path,
        )? {
            generation.min_p = p;
        }
        if let Some(p) = check_range(
            &g.repeat_penalty,
            "generation.repeat_penalty",
            |v| v > 0.0 && v <= 3.0,
            "above 0.0 up to 3.0 (1.0 is off)",
            text,
            path,
        )? {
            generation.repeat_penalty = p;
        }
        if let Some(n) = g.repeat_last_n {
            generation.repeat_last_n = n;
        }
        if let Some(s) = g.seed {
            generation.seed = s;
        }
        if let Some(m) = g.max_tokens {
            let v = *m.get_ref();
            if v == 0 || v > 8192 {
                return Err(at_span(
                    path,
                    text,
                    m.span(),
                    "generation.max_tokens",
                    format!("{v} is out of range: allowed is 1 to 8192"),
                ));
            }
            generation.max_tokens = v;
        }
        if let Some(stop) = g.stop {
            for s in &stop {
                if s.get_ref().is_empty() {
                    return Err(at_span(
                        path,
                        text,
                        s.span(),
                        "generation.stop",
                        "an empty stop string would stop at once; remove it".into(),
                    ));
                }
            }
            generation.stop = stop.into_iter().map(Spanned::into_inner).collect();
        }
        let mut reply = super::shape::ShapeConfig::default();
        for (v, f, slot) in [
            (
                &self.reply.max_sentences,
                "reply.max_sentences",
                &mut reply.budget.max_sentences,
            ),
            (
                &self.reply.max_words,
                "reply.max_words",
                &mut reply.budget.max_words,
            ),
        ] {
            if let Some(n) = v {
                if *n.get_ref() == 0 || *n.get_ref() > 1000 {
                    return Err(at_span(
                        path,
                        text,
                        n.span(),
                        f,
                        format!("{} is out of range: allowed is 1 to 1000", n.get_ref()),
                    ));
                }
                *slot = *n.get_ref();
            }
        }
        if let Some(b) = self.reply.cut_at_newline {
            reply.cut_at_newline = b;
        }
        if let Some(b) = self.reply.cut_at_speaker {
            reply.cut_at_speaker = b;
        }
        if let Some(b) = self.reply.cut_card_copy {
            reply.cut_card_copy = b;
        }
        Ok(PersonaCard {
            reply,
            name,
            description: self.description,
            personality: self.personality,
            speaking_style: self.speaking_style,
            scenario: self.scenario,
            greeting: self.greeting,
            alternate_greetings: self.alternate_greetings,
            examples,
            emotions,
            actions,
            blocked_words,
            deflection: self.deflection.unwrap_or_else(|| DEFAULT_DEFLECTION.into()),
            voice,
            rig,
            generation,
            system_prompt: self.system_prompt,
            post_history: self.post_history,
            source: CardSource::Toml(path.to_path_buf()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_expand_any_case_and_legacy() {
        let s = expand_macros(
            "{{char}} meets {{ User }}; <BOT> & <user> {{other}} {{",
            "Mika",
            "Ann",
        );
        assert_eq!(s, "Mika meets Ann; Mika & Ann {{other}} {{");
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncé=x", 6), (2, 3));
    }

    #[test]
    fn minimal_card_gets_defaults() {
        let c = PersonaCard::from_toml_str("name = \"Rin\"\n", Path::new("rin.toml")).unwrap();
        assert_eq!(c.emotions, DEFAULT_EMOTIONS);
        assert_eq!(c.slug(), "rin");
        assert_eq!(c.generation, GenParams::default());
    }
}
