//! Which voice speaks: the one place a voice is built from settings, for every command (`idol say`,
//! `render`, `perform`, `serve`, `chat --speak`).
//!
//! A [`VoiceChoice`] names the default voice and, optionally, a voice per language (`ja`, `zh`,
//! `en`). A voice is named as `--voice` takes it: a Kokoro voice (`jf_alpha`, or `kokoro:NAME`), a
//! path to a Piper `NAME.onnx` (anything with a `/` or ending in `.onnx`), or a Piper voice's name
//! under `voices/`. When every language is spoken by the default voice, [`load_voice`] returns that
//! voice; otherwise a [`super::Router`] that splits each clause by script and speaks each span with
//! its language's voice at the default voice's rate. Each distinct voice is loaded once (one Kokoro
//! voice speaks both Japanese and Mandarin).

use super::kokoro::{KokoroFiles, kokoro_voice_name};
use super::route::{Lang, Router};
use super::{KokoroOptions, KokoroVoice, PiperVoice, Synthesizer, TtsError, VoiceOptions};
use crate::assets::Home;
use crate::phonemize::Phonemize;
use crate::phonemize::japanese::JapanesePhonemizer;
use crate::phonemize::kokoro::{HanAs, KokoroPhonemizer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The languages a clause is routed by (the keys of [`VoiceChoice::languages`]).
pub use crate::speech::VOICE_LANGUAGES as LANGUAGES;

/// What voice speaks what.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VoiceChoice {
    /// The default voice: it speaks every language [`VoiceChoice::languages`] does not name, and its
    /// rate is the speech's.
    pub voice: String,
    /// Language (`ja`, `zh`, `en`) → the voice that speaks spans in it.
    pub languages: BTreeMap<String, String>,
    /// How Han characters in a clause with no kana are read (`None`: Japanese when only `ja` is
    /// routed, else Mandarin).
    pub han: Option<HanAs>,
}

impl VoiceChoice {
    /// The default voice alone.
    pub fn single(voice: impl Into<String>) -> VoiceChoice {
        VoiceChoice {
            voice: voice.into(),
            ..VoiceChoice::default()
        }
    }

    /// A default voice, voices by language, and how Han text without kana is read (`"ja"` or
    /// `"zh"`).
    pub fn new(
        voice: impl Into<String>,
        languages: BTreeMap<String, String>,
        han: Option<&str>,
    ) -> VoiceChoice {
        VoiceChoice {
            voice: voice.into(),
            languages,
            han: han.map(han_from_code),
        }
    }

    /// A persona card's `[voice]` under this choice: the card's `voice` when `voice_set` is false
    /// (idol.toml names no voice), its `languages` for the languages not routed here, its `han`
    /// when none is set here (the machine's settings over the persona's defaults).
    pub fn under_card(
        mut self,
        voice_set: bool,
        card_voice: Option<&str>,
        card_languages: &BTreeMap<String, String>,
        card_han: Option<&str>,
    ) -> VoiceChoice {
        if let Some(v) = card_voice.filter(|_| !voice_set) {
            self.voice = v.to_string();
        }
        for (k, v) in card_languages {
            self.languages.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if self.han.is_none() {
            self.han = card_han.map(han_from_code);
        }
        self
    }

    /// How Han text without kana is read.
    pub fn han_as(&self) -> HanAs {
        match self.han {
            Some(h) => h,
            None if self.languages.contains_key("ja") && !self.languages.contains_key("zh") => {
                HanAs::Japanese
            }
            None => HanAs::Mandarin,
        }
    }
}

/// `"ja"` → Japanese, anything else Mandarin (the settings are checked where they are read).
fn han_from_code(code: &str) -> HanAs {
    if code == "ja" {
        HanAs::Japanese
    } else {
        HanAs::Mandarin
    }
}

/// One voice as named.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum VoiceSpec {
    /// A Piper voice file.
    Piper(PathBuf),
    /// A Kokoro voice by name.
    Kokoro(String),
}

impl VoiceSpec {
    /// Read a voice name (see the module docs).
    pub fn parse(home: &Home, name: &str) -> VoiceSpec {
        if let Some(k) = kokoro_voice_name(name) {
            VoiceSpec::Kokoro(k.to_string())
        } else if name.contains('/') || name.contains('\\') || name.ends_with(".onnx") {
            VoiceSpec::Piper(home.path(name))
        } else {
            VoiceSpec::Piper(home.path(format!("voices/{name}.onnx")))
        }
    }

    /// What to call it in outputs (the voice file, or the Kokoro voice's name).
    pub fn label(&self) -> PathBuf {
        match self {
            VoiceSpec::Piper(p) => p.clone(),
            VoiceSpec::Kokoro(n) => PathBuf::from(n),
        }
    }
}

/// The distinct voices of a choice, the default first.
pub fn voice_specs(home: &Home, choice: &VoiceChoice) -> Vec<VoiceSpec> {
    specs(home, choice)
}

fn specs(home: &Home, choice: &VoiceChoice) -> Vec<VoiceSpec> {
    let mut out = vec![VoiceSpec::parse(home, &choice.voice)];
    for v in choice.languages.values() {
        let s = VoiceSpec::parse(home, v);
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The asset files [`load_voice`] reads for `choice` (the voices, the ONNX Runtime library, the
/// Japanese dictionary for Kokoro), so commands can fetch the missing ones first. The English front
/// end's files are the caller's (it passes the front end in).
pub fn voice_files(home: &Home, choice: &VoiceChoice) -> Vec<PathBuf> {
    let ort = home.ort_library();
    let mut files = Vec::new();
    for s in specs(home, choice) {
        match s {
            VoiceSpec::Piper(p) => files.extend(PiperVoice::files(&p, &ort)),
            VoiceSpec::Kokoro(_) => {
                files.extend(KokoroFiles::in_home(home).all());
                files.push(ort.clone());
                files.extend(home.ja_dictionary().all());
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(f.clone()));
    files
}

/// The languages the voices of `choice` speak (for the persona's language policy): a Piper voice's
/// own, Japanese and Mandarin for a Kokoro voice, and each routed language.
pub fn voice_languages(home: &Home, choice: &VoiceChoice) -> Vec<String> {
    let mut out: Vec<String> = match VoiceSpec::parse(home, &choice.voice) {
        VoiceSpec::Piper(p) => super::piper::voice_languages(&p),
        VoiceSpec::Kokoro(_) => vec!["ja".into(), "zh".into()],
    };
    for lang in choice.languages.keys() {
        if !out.contains(lang) {
            out.push(lang.clone());
        }
    }
    out
}

/// Check a choice's language keys (`ja`, `zh`, `en`); the error names the key.
pub fn check_languages(choice: &VoiceChoice) -> Result<(), TtsError> {
    for (k, v) in &choice.languages {
        if !LANGUAGES.contains(&k.as_str()) {
            return Err(TtsError::BadSpeaker(format!(
                "voice.languages.{k}: unknown language {k:?} (one of {})",
                LANGUAGES.join(", ")
            )));
        }
        if v.trim().is_empty() {
            return Err(TtsError::BadSpeaker(format!(
                "voice.languages.{k}: empty voice name (a Kokoro voice such as jf_alpha, or a Piper voice)"
            )));
        }
    }
    Ok(())
}

/// Load the voices of `choice` (see the module docs). `english` is the English front end (Piper
/// voices read with it; Kokoro voices read Latin spans with it when no English voice is routed);
/// `options` are the voice settings (Kokoro uses the threads and the length scale).
pub fn load_voice(
    home: &Home,
    choice: &VoiceChoice,
    options: &VoiceOptions,
    english: Arc<dyn Phonemize>,
) -> Result<Box<dyn Synthesizer>, TtsError> {
    check_languages(choice)?;
    let han = choice.han_as();
    let ort = home.ort_library();
    let specs = specs(home, choice);
    let mut voices: Vec<Box<dyn Synthesizer>> = Vec::with_capacity(specs.len());
    for s in &specs {
        voices.push(match s {
            VoiceSpec::Piper(p) => Box::new(PiperVoice::load(p, &ort, english.clone(), options)?),
            VoiceSpec::Kokoro(name) => {
                let japanese = JapanesePhonemizer::load(&home.ja_dictionary())?;
                let front = KokoroPhonemizer::new(Some(japanese), Some(english.clone()), han);
                Box::new(KokoroVoice::load(
                    &KokoroFiles::in_home(home),
                    &ort,
                    Arc::new(front),
                    &KokoroOptions {
                        voice: name.clone(),
                        threads: options.threads,
                        length_scale: options.length_scale.unwrap_or(1.0),
                    },
                )?)
            }
        });
    }
    if voices.len() == 1 {
        return Ok(voices.pop().expect("one voice"));
    }
    let index = |lang: &str| {
        choice
            .languages
            .get(lang)
            .and_then(|v| specs.iter().position(|s| *s == VoiceSpec::parse(home, v)))
            .unwrap_or(0)
    };
    let routes = [
        (Lang::Japanese, index("ja")),
        (Lang::Mandarin, index("zh")),
        (Lang::Latin, index("en")),
    ];
    Ok(Box::new(Router::new(voices, routes, han)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_pick_the_engine() {
        let home = Home::new("/h");
        assert_eq!(
            VoiceSpec::parse(&home, "jf_alpha"),
            VoiceSpec::Kokoro("jf_alpha".into())
        );
        assert_eq!(
            VoiceSpec::parse(&home, "kokoro:jf_nezumi"),
            VoiceSpec::Kokoro("jf_nezumi".into())
        );
        assert_eq!(
            VoiceSpec::parse(&home, "en_US-joe-medium"),
            VoiceSpec::Piper(PathBuf::from("/h/voices/en_US-joe-medium.onnx"))
        );
        assert_eq!(
            VoiceSpec::parse(&home, "voices/x.onnx"),
            VoiceSpec::Piper(PathBuf::from("/h/voices/x.onnx"))
        );
    }

    #[test]
    fn han_follows_the_routed_languages() {
        let mut c = VoiceChoice::single("en_US-joe-medium");
        assert_eq!(c.han_as(), HanAs::Mandarin);
        c.languages.insert("ja".into(), "jf_alpha".into());
        assert_eq!(c.han_as(), HanAs::Japanese);
        c.languages.insert("zh".into(), "jf_alpha".into());
        assert_eq!(c.han_as(), HanAs::Mandarin);
        c.han = Some(HanAs::Japanese);
        assert_eq!(c.han_as(), HanAs::Japanese);
        let home = Home::new("/h");
        // Two distinct voices; ja and zh share one.
        assert_eq!(specs(&home, &c).len(), 2);
        // idol.toml's settings, where set, over the card's.
        let card_langs: BTreeMap<String, String> =
            [("ja".to_string(), "jf_alpha".to_string())].into();
        let base = VoiceChoice::new("voices/en_US-joe-medium.onnx", BTreeMap::new(), None);
        let c2 = base
            .clone()
            .under_card(false, Some("jf_alpha"), &card_langs, Some("ja"));
        assert_eq!(
            (c2.voice.as_str(), c2.han_as()),
            ("jf_alpha", HanAs::Japanese)
        );
        let set = VoiceChoice::new(
            "voices/en_US-joe-medium.onnx",
            [("ja".to_string(), "jf_nezumi".to_string())].into(),
            None,
        );
        let c3 = set.under_card(true, Some("jf_alpha"), &card_langs, None);
        assert_eq!(c3.voice, "voices/en_US-joe-medium.onnx");
        assert_eq!(c3.languages["ja"], "jf_nezumi");
        c.languages.insert("fr".into(), "x".into());
        let e = check_languages(&c).unwrap_err().to_string();
        assert!(e.contains("voice.languages.fr"), "{e}");
    }
}
