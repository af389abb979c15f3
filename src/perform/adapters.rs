//! Adapters from the real stages to the pipeline's traits: [`SynthVoice`] wraps any
//! [`crate::tts::Synthesizer`] (text normalized first) as a [`Voice`], and [`TextSegmenter`] wraps the
//! text stage's [`ClauseStream`] (streaming tag parser + clause segmenter) as a [`Segmenter`].
//!
//! [`build_stages`] and [`build_voice_face`] assemble the real stages from the config (what `idol
//! serve`, `idol chat --speak` and the live benchmark run).
//!
//! Threading: each adapter lives on the thread of the stage it wraps (voice thread, persona thread).

use super::rig_face::RigFace;
use super::{ClauseText, FaceSolver, Segmenter, StageError, Stages, Voice};
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
use crate::speech::Speech;
use crate::text::{SegmenterConfig, TextSegmenter};
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
        self.0.synthesize(&text).map_err(StageError::Voice)
    }

    fn speak_head_first(
        &mut self,
        clause: &str,
        on_head: &mut dyn FnMut(Speech, Speech),
    ) -> Result<Speech, StageError> {
        let text = spoken_text(&self.0, clause);
        self.0
            .synthesize_head_first(&text, on_head)
            .map_err(StageError::Voice)
    }
}

/// The text stage's [`TextSegmenter`] is the pipeline's segmenter.
impl Segmenter for TextSegmenter {
    fn push(&mut self, piece: &str) -> Vec<ClauseText> {
        TextSegmenter::push(self, piece)
    }

    fn finish(&mut self) -> Vec<ClauseText> {
        TextSegmenter::finish(self)
    }
}
