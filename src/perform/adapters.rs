//! Adapters from the real stages to the pipeline's traits: [`SynthVoice`] wraps any
//! [`crate::tts::Synthesizer`] (text normalized first) as a [`Voice`], and [`TextSegmenter`] wraps the
//! text stage's [`ClauseStream`] (streaming tag parser + clause segmenter) as a [`Segmenter`].
//!
//! [`build_stages`] and [`build_voice_face`] assemble the real stages from the config (what `idol
//! serve`, `idol chat --speak` and the live benchmark run).
//!
//! Threading: each adapter lives on the thread of the stage it wraps (voice thread, persona thread).

use super::rig_face::RigFace;
use super::{ClauseText, FaceSolver, Segmenter, StageError, Stages, TextCue, Voice};
use crate::assets::Home;
use crate::config::{Config, LlmBackend};
use crate::face::{FaceConfig, Rig};
use crate::persona::card::PersonaCard;
use crate::persona::conversation::Conversation;
use crate::persona::guard::{RateLimit, RateLimiter};
use crate::persona::import::load_card;
use crate::persona::llm::{LlmOptions, LlmWorker, ThreadBudget};
use crate::persona::memory::Memory;
use crate::persona::openai::{OpenAiBackend, OpenAiConfig};
use crate::persona::{GenParams, TextGenerator};
use crate::phonemize::EnglishPhonemizer;
use crate::speech::{CueKind, Speech};
use crate::text::{ClauseStream, CueEvent, SegmenterConfig};
use crate::tts::Synthesizer;
use crate::tts::{Speaker, VoiceOptions};
use std::sync::Arc;

/// A stage that could not be built from the config, with the stage named. Its text includes the
/// cause's, so it exposes no `source()` (a chain printed in full would say the cause twice).
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {error}")]
pub struct BuildError {
    pub stage: &'static str,
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

fn build<T, E: std::error::Error + Send + Sync + 'static>(
    stage: &'static str,
    r: Result<T, E>,
) -> Result<T, BuildError> {
    r.map_err(|e| BuildError {
        stage,
        error: Box::new(e),
    })
}

/// The real stages from the config: the persona's text generator (the in-process GGUF engine or an
/// OpenAI-compatible server), the text stage's clause stream, and [`build_voice_face`]. Assets must
/// be installed (`idol fetch`); a missing one fails with its path.
pub fn build_stages(home: &Home, config: &Config) -> Result<Stages, BuildError> {
    let generator: Box<dyn TextGenerator> = match config.llm.backend {
        LlmBackend::Local => Box::new(build(
            "persona",
            LlmWorker::spawn(
                home.path(&config.llm.model),
                LlmOptions {
                    threads: config.llm.threads,
                    // the runtime lends the model the voice's core while the voice is idle
                    budget: Some(ThreadBudget::levels(
                        config.llm.threads,
                        config.llm.idle_threads.max(config.llm.threads),
                    )),
                    ctx: config.llm.context,
                    ..LlmOptions::default()
                },
            ),
        )?),
        LlmBackend::Openai => Box::new(build(
            "persona",
            OpenAiBackend::new(OpenAiConfig {
                base_url: config.llm.base_url.clone(),
                model: config.llm.api_model.clone(),
                api_key_env: config.llm.api_key_env.clone(),
                read_timeout: std::time::Duration::from_secs_f64(config.llm.timeout_secs),
                ..OpenAiConfig::default()
            }),
        )?),
    };
    let (voice, face) = build_voice_face(home, config)?;
    let persona = build_conversation(home, config, true)?;
    Ok(Stages {
        persona,
        generator,
        // live replies stream token by token: release a clause at its mark, not one token later
        segmenter: Box::new(TextSegmenter::new(SegmenterConfig {
            eager: true,
            ..SegmenterConfig::default()
        })),
        voice,
        face,
    })
}

/// The asset files [`build_stages`] loads for `config`: the local model (backend `local` only), then
/// [`voice_face_files`]. Commands fetch the missing ones on first use before building the stages, so
/// this list and the loaders cannot drift apart: each stage names the files it reads.
pub fn stage_files(home: &Home, config: &Config) -> Vec<std::path::PathBuf> {
    let mut files = vec![];
    if config.llm.backend == LlmBackend::Local {
        files.push(home.path(&config.llm.model));
    }
    files.extend(voice_face_files(home, config));
    files
}

/// The asset files [`build_voice_face`] loads for `config`: the phonemizer's dictionary and weights,
/// the voices ([`crate::tts::voice_files`]) and the ONNX Runtime library (rigs are compiled in or the
/// user's own).
pub fn voice_face_files(home: &Home, config: &Config) -> Vec<std::path::PathBuf> {
    let mut files = EnglishPhonemizer::files(home).to_vec();
    files.extend(crate::tts::voice_files(home, &voice_choice(home, config)));
    files
}

/// The voices idol.toml's `[voice]` chooses, `voice` (a command's `--voice`) over its `model`.
pub fn config_voice_choice(
    vc: &crate::config::VoiceConfig,
    voice: Option<&str>,
) -> crate::tts::VoiceChoice {
    crate::tts::VoiceChoice::new(
        voice
            .map(str::to_string)
            .unwrap_or_else(|| vc.model.to_string_lossy().into_owned()),
        vc.languages.clone(),
        vc.han.as_deref(),
    )
}

/// The voices the live stages speak with: idol.toml's `[voice]` over the persona card's `[voice]`
/// (see [`crate::tts::VoiceChoice::under_card`]). A card that cannot be read adds nothing here (the
/// persona stage reports it).
pub fn voice_choice(home: &Home, config: &Config) -> crate::tts::VoiceChoice {
    let choice = config_voice_choice(&config.voice, None);
    match load_card(&home.path(&config.persona.card)) {
        Ok(card) => {
            let v = &card.voice;
            choice.under_card(
                config.voice.model_set,
                v.voice.as_deref(),
                &v.languages,
                v.han.as_deref(),
            )
        }
        Err(_) => choice,
    }
}

/// The languages a reply may be in with this config: those the model writes (`[llm] languages`,
/// else models/manifest.toml's entry for the model file, else English) that the voice speaks.
pub fn language_policy(home: &Home, config: &Config) -> crate::persona::lang::LanguagePolicy {
    let model = if !config.llm.languages.is_empty() {
        config.llm.languages.clone()
    } else if config.llm.backend == LlmBackend::Local {
        let m = crate::fetch::model_languages(&home.path(&config.llm.model));
        if m.is_empty() { vec!["en".into()] } else { m }
    } else {
        // a server's model: unknown, taken as writing whatever the voice speaks
        vec![]
    };
    let voices = crate::tts::voice_languages(home, &voice_choice(home, config));
    crate::persona::lang::LanguagePolicy::new(&model, &voices)
}

/// The card's generation settings, then idol.toml's `[llm]` ones where they differ from the
/// built-in defaults.
pub fn generation_params(card: &PersonaCard, config: &Config) -> GenParams {
    let mut params = card.generation.clone();
    let defaults = GenParams::default();
    let llm = &config.llm;
    if (llm.temperature - defaults.temperature).abs() > f32::EPSILON {
        params.temperature = llm.temperature;
    }
    if llm.max_tokens != defaults.max_tokens {
        params.max_tokens = llm.max_tokens;
    }
    if llm.seed != defaults.seed {
        params.seed = llm.seed;
    }
    params
}

/// The persona's conversation from the config: the card (`[persona] card`), its memory file in
/// `[persona] memory_dir` (when `memory`), the context size, the default viewer rate limit, the
/// languages ([`language_policy`]) and the generation settings ([`generation_params`]).
pub fn build_conversation(
    home: &Home,
    config: &Config,
    memory: bool,
) -> Result<Conversation, BuildError> {
    let card = build("persona", load_card(&home.path(&config.persona.card)))?;
    for w in super::rig_face::card_tag_warnings(
        &card,
        &home.path(&config.persona.card),
        &config.face.rig,
        &home.rigs_dir(),
    ) {
        log::warn!("{w}");
    }
    let memory = if memory {
        let m = build(
            "persona memory",
            Memory::open(&home.path(&config.persona.memory_dir), &card.slug()),
        )?;
        for w in m.warnings() {
            log::warn!("{w}");
        }
        Some(m)
    } else {
        None
    };
    let params = generation_params(&card, config);
    let mut conv = Conversation::new(
        card,
        memory,
        config.llm.context,
        Some(RateLimiter::new(RateLimit::default())),
    );
    conv.set_max_tokens(params.max_tokens);
    conv.params = params;
    conv.set_languages(language_policy(home, config));
    Ok(conv)
}

/// A voice and the face solver at its rate.
pub type VoiceAndFace = (Box<dyn Voice>, Box<dyn FaceSolver>);

/// The live voice ([`voice_choice`] loaded by [`crate::tts::load_voice`]: Piper with the pure-Rust
/// phonemizer, Kokoro, or a router of voices by language) and
/// face (the solver for the configured rig at the voice's rate).
pub fn build_voice_face(home: &Home, config: &Config) -> Result<VoiceAndFace, BuildError> {
    let phonemizer = Arc::new(build("phonemizer", EnglishPhonemizer::load(home))?);
    let vc = &config.voice;
    let voice = build(
        "voice",
        crate::tts::load_voice(
            home,
            &voice_choice(home, config),
            &VoiceOptions {
                length_scale: vc.length_scale,
                noise_scale: vc.noise_scale,
                noise_w: vc.noise_w,
                speaker: vc
                    .speaker
                    .as_deref()
                    .map(|s| s.parse::<Speaker>().expect("infallible")),
                seed: vc.seed,
                ..VoiceOptions::default()
            },
            phonemizer,
        ),
    )?;
    let rate = voice.sample_rate();
    let rig = build(
        "face",
        Rig::find(&config.face.rig, Some(home.rigs_dir().as_path())),
    )?;
    let face = build(
        "face",
        RigFace::new(
            rig,
            FaceConfig {
                fps: config.face.fps,
                seed: config.face.seed,
                ..FaceConfig::default()
            },
            rate,
        ),
    )?;
    Ok((Box::new(SynthVoice(voice)), Box::new(face)))
}

/// The clause as `voice` is given it: as written for a voice that reads it so (Kokoro, a router),
/// else normalized.
fn spoken_text<S: Synthesizer>(voice: &S, clause: &str) -> String {
    if voice.reads_written_text() {
        clause.to_string()
    } else {
        crate::text::normalize(clause)
    }
}

/// A synthesizer as the pipeline's voice: each clause is normalized ([`crate::text::normalize`]:
/// numbers, abbreviations, symbols → words) and synthesized; a voice that reads text as written
/// ([`Synthesizer::reads_written_text`]: Kokoro, a language router) gets it as written.
pub struct SynthVoice<S>(pub S);

impl<S: Synthesizer> Voice for SynthVoice<S> {
    fn sample_rate(&self) -> u32 {
        self.0.sample_rate()
    }

    fn speak(&mut self, clause: &str) -> Result<Speech, StageError> {
        let text = spoken_text(&self.0, clause);
        self.0
            .synthesize(&text)
            .map_err(|e| StageError::Voice(e.to_string()))
    }

    fn speak_head_first(
        &mut self,
        clause: &str,
        on_head: &mut dyn FnMut(Speech, Speech),
    ) -> Result<Speech, StageError> {
        let text = spoken_text(&self.0, clause);
        self.0
            .synthesize_head_first(&text, on_head)
            .map_err(|e| StageError::Voice(e.to_string()))
    }
}

/// The text stage's clause stream as the pipeline's segmenter. Emotion and action tags (and stage
/// directions naming a gesture) become cues before the word that follows them, or at the clause's end
/// when no word follows; a `<break time="..."/>` is silence where it is written: before a clause when
/// it opens it, after one when it closes it, and between two clauses when it stands between words
/// (the clause is cut there, so the pause is heard where it was written). Pieces without words are
/// dropped and their cues and breaks carried to the next clause; at the end of the text they come out
/// as a clause with no text (cues at the end of what was said, then the silence), so no tag is lost.
pub struct TextSegmenter {
    cfg: SegmenterConfig,
    stream: ClauseStream,
    carry: Vec<TextCue>,
    carry_pause: u32,
}

/// One clause of the text stage cut at its inner breaks, before empty pieces are carried.
struct Piece {
    words: Vec<String>,
    cues: Vec<TextCue>,
    before: u32,
    after: u32,
}

impl TextSegmenter {
    pub fn new(cfg: SegmenterConfig) -> Self {
        TextSegmenter {
            stream: ClauseStream::new(cfg),
            cfg,
            carry: Vec::new(),
            carry_pause: 0,
        }
    }

    /// Cut one clause of the text stage at the breaks between its words.
    fn pieces(c: &crate::text::Clause) -> Vec<Piece> {
        let raw = &c.segment.text;
        let words: Vec<&str> = raw.split_whitespace().collect();
        let n = words.len();
        let words_before = |at: usize| {
            let at = at.min(raw.len());
            raw.get(..at).map_or(0, |t| t.split_whitespace().count())
        };
        // Piece boundaries (word indices) with the break that makes each.
        let mut cuts: Vec<(usize, u32)> = Vec::new();
        let (mut before, mut after) = (0u32, 0u32);
        let mut cues: Vec<(usize, TextCue)> = Vec::new();
        for tc in &c.cues {
            let w = words_before(tc.at);
            let (kind, name, intensity) = match &tc.event {
                CueEvent::Emotion { name, intensity } => (CueKind::Emotion, name, *intensity),
                CueEvent::Action { name, intensity } => (CueKind::Action, name, *intensity),
                CueEvent::Break { millis } => {
                    if w == 0 {
                        before = before.saturating_add(*millis);
                    } else if w >= n {
                        after = after.saturating_add(*millis);
                    } else {
                        match cuts.iter_mut().find(|(at, _)| *at == w) {
                            Some((_, ms)) => *ms = ms.saturating_add(*millis),
                            None => cuts.push((w, *millis)),
                        }
                    }
                    continue;
                }
            };
            cues.push((
                w,
                TextCue {
                    before_word: w,
                    kind,
                    name: name.clone(),
                    intensity,
                },
            ));
        }
        cuts.sort_unstable_by_key(|&(at, _)| at);
        let mut bounds: Vec<usize> = vec![0];
        bounds.extend(cuts.iter().map(|&(at, _)| at));
        bounds.push(n);
        (0..bounds.len() - 1)
            .map(|k| {
                let (a, b) = (bounds[k], bounds[k + 1]);
                let last = k + 2 == bounds.len();
                Piece {
                    words: words[a..b].iter().map(|w| w.to_string()).collect(),
                    // A cue at a cut belongs to the piece after it (before its first word); the
                    // last piece keeps the cues past its last word.
                    cues: cues
                        .iter()
                        .filter(|(w, _)| *w >= a && (*w < b || last))
                        .map(|(w, c)| TextCue {
                            before_word: w - a,
                            ..c.clone()
                        })
                        .collect(),
                    before: if k == 0 { before } else { 0 },
                    after: if last { after } else { cuts[k].1 },
                }
            })
            .collect()
    }

    fn convert(&mut self, clauses: Vec<crate::text::Clause>) -> Vec<ClauseText> {
        let mut out = vec![];
        for piece in clauses.iter().flat_map(Self::pieces) {
            let mut cues: Vec<TextCue> = std::mem::take(&mut self.carry);
            let before = std::mem::take(&mut self.carry_pause).saturating_add(piece.before);
            // words with a letter or digit: a piece of bare punctuation (the rest of `!!` after an
            // eager cut, a lone `...`) has nothing to say
            let words_in = piece
                .words
                .iter()
                .filter(|w| w.chars().any(char::is_alphanumeric))
                .count();
            cues.extend(piece.cues);
            if words_in == 0 {
                self.carry = cues
                    .into_iter()
                    .map(|mut c| {
                        c.before_word = 0;
                        c
                    })
                    .collect();
                self.carry_pause = before.saturating_add(piece.after);
                continue;
            }
            out.push(ClauseText {
                text: piece.words.join(" "),
                cues,
                pause_before_ms: before,
                pause_after_ms: piece.after,
            });
        }
        out
    }
}

impl Default for TextSegmenter {
    fn default() -> Self {
        TextSegmenter::new(SegmenterConfig::default())
    }
}

impl Segmenter for TextSegmenter {
    fn push(&mut self, piece: &str) -> Vec<ClauseText> {
        let clauses = self.stream.push(piece);
        self.convert(clauses)
    }

    fn finish(&mut self) -> Vec<ClauseText> {
        let clauses = self.stream.finish();
        let mut out = self.convert(clauses);
        // Tags and breaks after the last word: a clause with no text, placed at the end.
        if !self.carry.is_empty() || self.carry_pause > 0 {
            out.push(ClauseText {
                text: String::new(),
                cues: std::mem::take(&mut self.carry),
                pause_before_ms: std::mem::take(&mut self.carry_pause),
                pause_after_ms: 0,
            });
        }
        self.stream = ClauseStream::new(self.cfg);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stage_clauses_with_cues() {
        let mut s = TextSegmenter::default();
        let mut got = vec![];
        for p in [
            "[hap",
            "py] Hello there, how are",
            " you today? I am <wa",
            "ve> fine.",
        ] {
            got.extend(s.push(p));
        }
        got.extend(s.finish());
        assert!(!got.is_empty());
        let joined: Vec<&str> = got.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            joined.join(" "),
            "Hello there, how are you today? I am fine."
        );
        let happy = &got[0].cues[0];
        assert_eq!((happy.name.as_str(), happy.before_word), ("happy", 0));
        let wave = got
            .iter()
            .flat_map(|c| c.cues.iter().map(move |q| (c, q)))
            .find(|(_, q)| q.name == "wave")
            .expect("the wave cue");
        let words: Vec<&str> = wave.0.text.split_whitespace().collect();
        assert_eq!(words[wave.1.before_word], "fine.");
        // The stream resets for the next reply.
        let mut again = s.push("Bye now.");
        again.extend(s.finish());
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].text, "Bye now.");
    }

    #[test]
    fn breaks_become_pauses_around_clauses() {
        let mut s = TextSegmenter::default();
        let mut got =
            s.push("Hello there. <break time=\"500ms\"/> Bye <break time=\"200ms\"/>now.");
        got.extend(s.finish());
        let texts: Vec<&str> = got.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts.join(" "), "Hello there. Bye now.");
        let pauses: u32 = got
            .iter()
            .map(|c| c.pause_before_ms + c.pause_after_ms)
            .sum();
        assert_eq!(pauses, 700, "{got:?}");
        // The 500 ms break sits between the two sentences, not inside a word.
        let bye = got.iter().position(|c| c.text.starts_with("Bye")).unwrap();
        let between = got[bye].pause_before_ms
            + if bye > 0 {
                got[bye - 1].pause_after_ms
            } else {
                0
            };
        assert!(between >= 500, "{got:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// Random tagged texts, streamed in random pieces: the clauses say every written word in
        /// order, every emotion and action tag (stage directions naming a gesture included) comes
        /// out once before the word it was written before (or after the last word), and every
        /// break is silence at the word boundary where it was written.
        #[test]
        fn tags_and_breaks_stay_where_they_were_written(
            items in proptest::collection::vec((0u8..8, 0usize..6), 1..40),
            cuts in proptest::collection::vec(1usize..12, 0..20),
        ) {
            const WORDS: [&str; 6] = ["hello", "there,", "friends.", "yes!", "okay", "why?"];
            const TAGS: [(&str, &str); 6] = [
                ("[happy]", "happy"),
                ("[sad:0.5]", "sad"),
                ("<nod>", "nod"),
                ("<wave/>", "wave"),
                ("*waves*", "wave"),
                ("(laughs)", "laugh"),
            ];
            // The written text, and what it asks for at each word boundary.
            let mut text = String::new();
            let mut words: Vec<&str> = vec![];
            let mut want_cues: Vec<(usize, String)> = vec![];
            let mut want_pause: std::collections::BTreeMap<usize, u32> = Default::default();
            for (kind, k) in items {
                match kind {
                    0..=3 => {
                        words.push(WORDS[k]);
                        text.push_str(WORDS[k]);
                    }
                    4 | 5 => {
                        text.push_str(TAGS[k].0);
                        want_cues.push((words.len(), TAGS[k].1.to_string()));
                    }
                    6 => {
                        let ms = 100 * (k as u32 + 1);
                        text.push_str(&format!("<break time=\"{ms}ms\"/>"));
                        *want_pause.entry(words.len()).or_default() += ms;
                    }
                    _ => text.push_str("(looks away)"),
                }
                text.push(' ');
            }
            // Streamed in pieces cut at random characters.
            let chars: Vec<char> = text.chars().collect();
            let mut seg = TextSegmenter::default();
            let mut got = vec![];
            let mut at = 0;
            for c in cuts.iter().chain(std::iter::repeat(&7)) {
                if at >= chars.len() {
                    break;
                }
                let end = (at + c).min(chars.len());
                got.extend(seg.push(&chars[at..end].iter().collect::<String>()));
                at = end;
            }
            got.extend(seg.finish());
            // Read the clauses back onto word boundaries.
            let mut said: Vec<String> = vec![];
            let mut cues: Vec<(usize, String)> = vec![];
            let mut pause: std::collections::BTreeMap<usize, u32> = Default::default();
            for c in &got {
                let base = said.len();
                if c.pause_before_ms > 0 {
                    *pause.entry(base).or_default() += c.pause_before_ms;
                }
                let n = c.text.split_whitespace().count();
                for q in &c.cues {
                    cues.push((base + q.before_word.min(n), q.name.clone()));
                }
                said.extend(c.text.split_whitespace().map(str::to_string));
                if c.pause_after_ms > 0 {
                    *pause.entry(said.len()).or_default() += c.pause_after_ms;
                }
                proptest::prop_assert!(!c.text.contains("  "));
            }
            proptest::prop_assert_eq!(&said, &words, "{}", text);
            cues.sort();
            want_cues.sort();
            proptest::prop_assert_eq!(cues, want_cues, "{}", text);
            // Breaks before the first word or after the last are one pause at that end.
            proptest::prop_assert_eq!(pause, want_pause, "{}", text);
        }
    }
}
