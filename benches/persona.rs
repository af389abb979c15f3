//! The persona judge (a bench binary, not criterion): runs a message set of livestream chat (English,
//! Chinese, Japanese: greetings, questions about her, requests, game talk, compliments, trolls,
//! follow-ups) through `idol chat`'s conversation path with the configured backend and persona card,
//! and prints, per model and set, the share of replies with each defect of form
//! (`idol::persona::judge`) and the share with none. It checks form, not taste: read the replies too
//! (`IDOL_PERSONA_REPLIES=FILE` writes every reply as a JSON line).
//!
//! `cargo bench --bench persona`. Env: `IDOL_PERSONA_MODELS` (comma-separated GGUF paths; default the
//! idol.toml model, or the configured OpenAI-compatible server), `IDOL_PERSONA_SETS` (`public`,
//! `heldout`; default both), `IDOL_PERSONA_SEEDS` (comma-separated sampling seeds; default `1`),
//! `IDOL_PERSONA_THREADS` (default 2), `IDOL_PERSONA_TEMPERATURE` (override the card's). The message
//! sets are `benches/data/persona_public.tsv` (tuned on) and `persona_heldout.tsv` (never tuned on).

use idol::assets::Home;
use idol::config::{Config, LlmBackend};
use idol::persona::conversation::{Conversation, Speaker};
use idol::persona::import::load_card;
use idol::persona::judge::{Defect, Judge, SpeechBudget};
use idol::persona::lang::LanguagePolicy;
use idol::persona::llm::{LlmEngine, LlmOptions, TokenCounter};
use idol::persona::openai::{OpenAiBackend, OpenAiConfig};
use idol::persona::prompt::estimate_tokens;
use idol::persona::{CancelToken, ChatMessage, TextGenerator};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Msg {
    lang: String,
    kind: String,
    text: String,
}

fn load_set(path: &Path) -> Vec<Msg> {
    let src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    src.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let (lang, kind, text) = (f.next(), f.next(), f.next());
            Msg {
                lang: lang.unwrap_or("en").to_string(),
                kind: kind.unwrap_or("chat").to_string(),
                text: text
                    .unwrap_or_else(|| panic!("{}: bad line {l:?}", path.display()))
                    .to_string(),
            }
        })
        .collect()
}

/// The backend's token counter for the prompt budget.
type Counter = Box<dyn Fn(&[ChatMessage]) -> usize>;

const VIEWERS: &[&str] = &[
    "sakura_fan",
    "blue_whale",
    "nightowl",
    "pixelpanda",
    "lemon_tea",
];

#[derive(Default)]
struct Tally {
    n: usize,
    clean: usize,
    by_defect: BTreeMap<Defect, usize>,
    openings: BTreeMap<String, usize>,
    words: usize,
    secs: f64,
    tokens: usize,
}

impl Tally {
    fn add(&mut self, defects: &[Defect], reply: &str, secs: f64, tokens: usize) {
        self.n += 1;
        if defects.is_empty() {
            self.clean += 1;
        }
        for d in defects {
            *self.by_defect.entry(*d).or_default() += 1;
        }
        let open: Vec<String> = idol::persona::judge::tokens(reply)
            .into_iter()
            .take(2)
            .map(|(_, w)| w)
            .collect();
        *self.openings.entry(open.join(" ")).or_default() += 1;
        self.words += idol::persona::judge::word_count(reply);
        self.secs += secs;
        self.tokens += tokens;
    }

    fn share(&self, k: usize) -> String {
        if self.n == 0 {
            "–".into()
        } else {
            format!("{:.2}", k as f64 / self.n as f64)
        }
    }
}

fn main() {
    let home = Home::from_manifest_dir();
    let config = Config::load_or_default(&home.path("idol.toml")).expect("idol.toml");
    let env = |k: &str| std::env::var(k).ok().filter(|s| !s.trim().is_empty());
    let sets: Vec<String> = env("IDOL_PERSONA_SETS")
        .unwrap_or_else(|| "public,heldout".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let seeds: Vec<u64> = env("IDOL_PERSONA_SEEDS")
        .unwrap_or_else(|| "1".into())
        .split(',')
        .map(|s| s.trim().parse().expect("IDOL_PERSONA_SEEDS: numbers"))
        .collect();
    let threads: usize = env("IDOL_PERSONA_THREADS")
        .map(|s| s.parse().expect("IDOL_PERSONA_THREADS"))
        .unwrap_or(2);
    let models: Vec<Option<PathBuf>> = match (env("IDOL_PERSONA_MODELS"), config.llm.backend) {
        (Some(m), _) => m.split(',').map(|p| Some(home.path(p.trim()))).collect(),
        (None, LlmBackend::Local) => vec![Some(home.path(&config.llm.model))],
        (None, LlmBackend::Openai) => vec![None],
    };
    let mut replies_out = env("IDOL_PERSONA_REPLIES")
        .map(|p| std::fs::File::create(p).expect("IDOL_PERSONA_REPLIES"));
    let card = load_card(&home.path(&config.persona.card)).expect("persona card");
    let budget = SpeechBudget::default();

    println!("## Persona judge ({})", card.name);
    println!();
    for model in &models {
        let label = model
            .as_ref()
            .and_then(|m| m.file_name())
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_else(|| format!("{} ({})", config.llm.api_model, config.llm.base_url));
        let (mut generator, count): (Box<dyn TextGenerator>, Counter) = match model {
            Some(path) => {
                let engine = LlmEngine::load(
                    path,
                    &LlmOptions {
                        threads,
                        ctx: config.llm.context,
                        ..LlmOptions::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"));
                let counter = TokenCounter::load(path).unwrap_or_else(|e| panic!("{e}"));
                (Box::new(engine), Box::new(move |m| counter.count(m)))
            }
            None => (
                Box::new(
                    OpenAiBackend::new(OpenAiConfig {
                        base_url: config.llm.base_url.clone(),
                        model: config.llm.api_model.clone(),
                        api_key_env: config.llm.api_key_env.clone(),
                        read_timeout: Duration::from_secs_f64(config.llm.timeout_secs),
                        ..OpenAiConfig::default()
                    })
                    .unwrap_or_else(|e| panic!("{e}")),
                ),
                Box::new(estimate_tokens),
            ),
        };
        let languages = LanguagePolicy::new(&model_languages(model.as_deref()), &["en".into()]);
        println!("### {label}");
        println!();
        println!(
            "| set | replies | defect-free | en defect-free | zh/ja in a spoken language | {} | top opening | words/reply | s/reply |",
            Defect::ALL.map(|d| d.label()).join(" | ")
        );
        println!("|{}", "---|".repeat(9 + Defect::ALL.len()));
        for set in &sets {
            let msgs = load_set(&home.path(format!("benches/data/persona_{set}.tsv")));
            let (mut all, mut en, mut cjk) = (Tally::default(), Tally::default(), Tally::default());
            let mut cjk_spoken = 0usize;
            for &seed in &seeds {
                let mut conv: Option<Conversation> = None;
                for (k, m) in msgs.iter().enumerate() {
                    if m.kind != "follow" || conv.is_none() {
                        let mut c = new_conversation(&card, &config, &languages);
                        c.params.seed = seed.wrapping_mul(1000).wrapping_add(k as u64);
                        if let Some(t) = env("IDOL_PERSONA_TEMPERATURE") {
                            c.params.temperature = t.parse().expect("IDOL_PERSONA_TEMPERATURE");
                        }
                        conv = Some(c);
                    }
                    let c = conv.as_mut().expect("conversation");
                    let viewer = VIEWERS[k % VIEWERS.len()];
                    let t = Instant::now();
                    let reply = c
                        .respond(
                            generator.as_mut(),
                            Speaker::Viewer(viewer),
                            &m.text,
                            &CancelToken::new(),
                            &*count,
                            &mut |_| true,
                        )
                        .unwrap_or_else(|e| panic!("{e}"));
                    let secs = t.elapsed().as_secs_f64();
                    let tokens = reply.outcome.as_ref().map_or(0, |o| o.completion_tokens);
                    c.commit(&reply.text, false).expect("commit");
                    let target = languages.target(&m.text).to_string();
                    let system = c.prefix()[0].content.clone();
                    let rules = system.split("\n\nExamples of").next().unwrap_or("");
                    let judge = Judge::new(&card, rules, budget);
                    let defects = judge.defects(&reply.text, &target);
                    all.add(&defects, &reply.text, secs, tokens);
                    if m.lang == "en" {
                        en.add(&defects, &reply.text, secs, tokens);
                    } else {
                        cjk.add(&defects, &reply.text, secs, tokens);
                        if !defects.contains(&Defect::WrongLanguage)
                            && !defects.contains(&Defect::Empty)
                        {
                            cjk_spoken += 1;
                        }
                    }
                    if let Some(f) = replies_out.as_mut() {
                        let _ = writeln!(
                            f,
                            "{}",
                            serde_json::json!({
                                "model": label, "set": set, "seed": seed, "lang": m.lang,
                                "kind": m.kind, "message": m.text, "reply": reply.text,
                                "target": target,
                                "defects": defects.iter().map(|d| d.label()).collect::<Vec<_>>(),
                            })
                        );
                    }
                }
            }
            let top = all.openings.values().max().copied().unwrap_or(0);
            println!(
                "| {set} | {} | {} | {} | {} | {} | {} | {:.1} | {:.2} |",
                all.n,
                all.share(all.clean),
                en.share(en.clean),
                cjk.share(cjk_spoken),
                Defect::ALL
                    .map(|d| all.share(all.by_defect.get(&d).copied().unwrap_or(0)))
                    .join(" | "),
                all.share(top),
                all.words as f64 / all.n.max(1) as f64,
                all.secs / all.n.max(1) as f64,
            );
            let _ = std::io::stdout().flush();
        }
        println!();
    }
}

/// The languages a model writes: from models/manifest.toml when the file is listed there with
/// `languages`, else English.
fn model_languages(model: Option<&Path>) -> Vec<String> {
    let Some(model) = model else {
        return vec![];
    };
    idol::fetch::model_languages(model)
}

fn new_conversation(
    card: &idol::persona::card::PersonaCard,
    config: &Config,
    languages: &LanguagePolicy,
) -> Conversation {
    let mut c = Conversation::new(card.clone(), None, config.llm.context, None);
    c.set_languages(languages.clone());
    c
}
