//! The rigs a client may ask for in `subscribe` (`docs/protocol.md`, "Rigs").
//!
//! A [`RigCatalog`] is fixed when the server starts: the built-in rigs (`arkit52`, `vrm`, `live2d`,
//! `oculus15`), then every `*.toml` rig file in the configured rigs directory (the idol home's
//! `rigs/`), named by its file stem as `[face] rig` names it; a file with a built-in's stem replaces
//! that built-in, as `Rig::find` resolves it. Clients name rigs from this list only, never a path: a
//! remote client must not make the server read files of its choosing. A rig file that does not parse
//! is left out with a warning (the server still starts; `idol rigs NAME` shows the error).
//!
//! Threading: built once, then shared read-only (`Arc`) by the hub and the connections.

use crate::face::Rig;
use crate::face::rig::BUILTIN;
use std::path::Path;
use std::sync::Arc;

/// Named rigs, in a stable order (built-ins first, then the directory's files sorted by name).
#[derive(Debug, Clone)]
pub struct RigCatalog {
    rigs: Vec<(String, Arc<Rig>)>,
}

impl Default for RigCatalog {
    fn default() -> Self {
        RigCatalog::builtin()
    }
}

impl RigCatalog {
    /// The built-in rigs only.
    pub fn builtin() -> RigCatalog {
        let rigs = BUILTIN
            .iter()
            .map(|(n, _)| {
                let rig = Rig::builtin(n).expect("built-in rigs parse (a test checks them)");
                (n.to_string(), Arc::new(rig))
            })
            .collect();
        RigCatalog { rigs }
    }

    /// The built-ins and the `*.toml` rig files in `dir` (a missing directory adds nothing). Returns
    /// the warnings for files left out.
    pub fn with_dir(dir: &Path) -> (RigCatalog, Vec<String>) {
        let mut cat = RigCatalog::builtin();
        let mut warnings = vec![];
        let Ok(rd) = std::fs::read_dir(dir) else {
            return (cat, warnings);
        };
        let mut paths: Vec<_> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        paths.sort();
        for p in paths {
            let Some(stem) = p.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            match Rig::load(&p) {
                Ok(rig) => cat.insert(stem, rig),
                Err(e) => warnings.push(format!(
                    "rig {} is not offered to clients: {e}",
                    p.display()
                )),
            }
        }
        (cat, warnings)
    }

    /// Add `rig` under `name`, replacing a rig of that name.
    pub fn insert(&mut self, name: &str, rig: Rig) {
        let rig = Arc::new(rig);
        match self.rigs.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = rig,
            None => self.rigs.push((name.to_string(), rig)),
        }
    }

    /// The names clients may use, in order.
    pub fn names(&self) -> Vec<&str> {
        self.rigs.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The index of the rig called `name` (exact).
    pub fn index(&self, name: &str) -> Option<usize> {
        self.rigs.iter().position(|(n, _)| n == name)
    }

    /// The name and rig at `i`.
    pub fn get(&self, i: usize) -> Option<(&str, &Arc<Rig>)> {
        self.rigs.get(i).map(|(n, r)| (n.as_str(), r))
    }

    pub fn len(&self) -> usize {
        self.rigs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rigs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_rigs_join_the_builtins_by_file_stem_and_bad_files_are_left_out() {
        let dir = std::env::temp_dir().join(format!("idol-rigcat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("mouth.toml"),
            "name = \"mouth-only\"\n[[channel]]\nname = \"jawOpen\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("broken.toml"), "name = \"x\"\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "not a rig").unwrap();
        let (cat, warnings) = RigCatalog::with_dir(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            cat.names(),
            ["arkit52", "vrm", "live2d", "oculus15", "mouth"]
        );
        assert_eq!(cat.get(4).unwrap().1.name, "mouth-only");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("broken.toml"), "{warnings:?}");
        assert_eq!(cat.index("vrm"), Some(1));
        assert_eq!(cat.index("../etc/passwd"), None);
        let (cat, w) = RigCatalog::with_dir(Path::new("/nonexistent/rigs"));
        assert_eq!((cat.len(), w.len()), (4, 0));
    }
}
