//! `idol check`: what is configured, what is found, and what to do about anything missing.
//!
//! Builds one row per pinned asset (hash-verified) and per configured item (model, voice, rig, persona),
//! with sizes and licences. Pure reporting: nothing is changed.

use crate::assets::Home;
use crate::config::{Config, LlmBackend};
use crate::fetch::{self, Fetcher};
use std::path::{Path, PathBuf};

/// The state of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Present (and, for pinned assets, the sha256 matches).
    Ok,
    Missing,
    /// Present but not the pinned file.
    Corrupt(String),
    /// Not needed by this configuration.
    Unused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub item: String,
    pub path: PathBuf,
    pub size: Option<u64>,
    pub status: Status,
    pub license: String,
    /// What to do when the status is not Ok.
    pub fix: String,
}

fn size_of(p: &Path) -> Option<u64> {
    std::fs::metadata(p)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// Check every pinned asset and every configured item.
pub fn check(home: &Home, config: &Config) -> Result<Vec<Row>, fetch::FetchError> {
    let mut rows = Vec::new();
    let fetcher = Fetcher::new(home.clone());
    let mut pinned_paths = Vec::new();
    for (spec, dest) in fetcher.pinned()? {
        pinned_paths.push(dest.clone());
        let size = size_of(&dest);
        let status = match size {
            None => Status::Missing,
            Some(_) => {
                let actual = fetch::sha256_file(&dest)?;
                if actual == spec.sha256 {
                    Status::Ok
                } else {
                    Status::Corrupt(format!("sha256 {actual}, pinned {}", spec.sha256))
                }
            }
        };
        let fix = match status {
            Status::Ok | Status::Unused => String::new(),
            Status::Missing => "run `idol fetch`".into(),
            Status::Corrupt(_) => format!("delete {} and run `idol fetch`", dest.display()),
        };
        rows.push(Row {
            item: format!("{} ({})", spec.name, spec.role),
            path: dest,
            size,
            status,
            license: spec.license,
            fix,
        });
    }

    let mut configured = |item: &str, rel: &Path, fix: String, license: &str, used: bool| {
        let path = home.path(rel);
        if pinned_paths.contains(&path) && used {
            return;
        }
        let size = size_of(&path);
        let status = if !used {
            Status::Unused
        } else if size.is_some() {
            Status::Ok
        } else {
            Status::Missing
        };
        let fix = if status == Status::Missing {
            fix
        } else {
            String::new()
        };
        rows.push(Row {
            item: item.into(),
            path,
            size,
            status,
            license: license.into(),
            fix,
        });
    };
    let local_models = fetch::local_registry(home, "models")?;
    let local_voices = fetch::local_registry(home, "voices")?;
    let licence_of = |reg: &fetch::LocalRegistry, p: &Path| {
        let name = p.file_name().map(|n| n.to_string_lossy().to_string());
        if reg.assets.iter().any(|a| Some(&a.file) == name.as_ref()) {
            "your own file (registered; check its licence)".to_string()
        } else {
            "unknown: check the model's licence".to_string()
        }
    };
    let llm_used = config.llm.backend == LlmBackend::Local;
    configured(
        "llm model (configured)",
        &config.llm.model,
        format!("run `idol fetch --model {}`", config.llm.model.display()),
        &licence_of(&local_models, &config.llm.model),
        llm_used,
    );
    // Each configured Piper voice (idol.toml's [voice] and the card's); Kokoro voices are the pinned
    // rows above.
    let vc = &config.voice;
    let mut choice = crate::tts::VoiceChoice::new(
        vc.model.to_string_lossy(),
        vc.languages.clone(),
        vc.han.as_deref(),
    );
    if let Ok(card) = crate::persona::import::load_card(&home.path(&config.persona.card)) {
        let v = &card.voice;
        choice = choice.under_card(
            vc.model_set,
            v.voice.as_deref(),
            &v.languages,
            v.han.as_deref(),
        );
    }
    for spec in crate::tts::select::voice_specs(home, &choice) {
        let crate::tts::select::VoiceSpec::Piper(model) = spec else {
            continue;
        };
        configured(
            "voice (configured)",
            &model,
            format!("run `idol fetch --voice {}`", model.display()),
            &licence_of(&local_voices, &model),
            true,
        );
        let voice_json = PathBuf::from(format!("{}.json", model.display()));
        configured(
            "voice config (configured)",
            &voice_json,
            "a Piper voice needs NAME.onnx.json beside NAME.onnx".into(),
            &licence_of(&local_voices, &voice_json),
            true,
        );
    }
    let rig = if config.face.rig.ends_with(".toml") {
        PathBuf::from(&config.face.rig)
    } else {
        PathBuf::from(format!("rigs/{}.toml", config.face.rig))
    };
    // A rig named without a file under rigs/ is one of the rigs compiled into idol (what `Rig::find`
    // falls back to): found, not missing.
    let builtin_rig = !config.face.rig.ends_with(".toml")
        && !home.path(&rig).is_file()
        && crate::face::Rig::builtin(&config.face.rig).is_ok();
    if !builtin_rig {
        configured(
            "rig (configured)",
            &rig,
            "name a rig from `idol rigs` in idol.toml [face] rig".into(),
            "MIT OR Apache-2.0 (idol)",
            true,
        );
    }
    let builtin_card = crate::persona::import::is_absent_default(&home.path(&config.persona.card));
    if builtin_card {
        rows.push(Row {
            item: "persona card (configured, built in)".into(),
            path: PathBuf::from(format!(
                "(built in) {}",
                crate::persona::import::DEFAULT_CARD
            )),
            size: None,
            status: Status::Ok,
            license: "MIT OR Apache-2.0 (idol's default persona)".into(),
            fix: String::new(),
        });
    } else {
        configured(
            "persona card (configured)",
            &config.persona.card,
            "set [persona] card in idol.toml to a card .toml/.json/.png".into(),
            "MIT OR Apache-2.0 (idol's default persona) or the card author's",
            true,
        );
    }
    if builtin_rig {
        let at = rows.len() - 1;
        rows.insert(
            at,
            Row {
                item: "rig (configured, built in)".into(),
                path: PathBuf::from(format!("(built in) {}", config.face.rig)),
                size: None,
                status: Status::Ok,
                license: "MIT OR Apache-2.0 (idol)".into(),
                fix: String::new(),
            },
        );
    }
    Ok(rows)
}

/// True when nothing needed is missing or corrupt.
pub fn all_ok(rows: &[Row]) -> bool {
    rows.iter()
        .all(|r| matches!(r.status, Status::Ok | Status::Unused))
}
