//! Conversation memory: what was said, kept across restarts. Input: [`Turn`]s as they happen. Output:
//! the history, as turns or as chat messages for [`super::prompt::PromptBuilder`].
//!
//! Storage: one JSONL file per persona (`DIR/<slug>.jsonl`), append-only, one turn per line, each
//! append written with a single `write` and `fsync`ed (`sync_data`) before it returns, so a turn that
//! was reported stored survives a crash or power loss. On open, every line is parsed; a line that does
//! not parse is skipped with a warning (logged and kept in [`Memory::warnings`]), never fatal. If that
//! line is the last one (a crash mid-append), the file is truncated back to the end of the last good
//! line, so the next append starts on a clean line.
//!
//! Interruptions: when the viewer (or the operator) barges in, the stored assistant turn is exactly the
//! text that was heard, with `interrupted: true` ([`Turn::interrupted`]); in the prompt it is shown
//! with a trailing ` —` so the model knows it was cut off.
//!
//! Threading: a `Memory` is owned by the thread that runs the conversation; one writer per file.

use super::guard::wrap_viewer;
use super::{ChatMessage, PersonaError, Role};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One stored turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Unix time in milliseconds.
    pub ts_ms: u64,
    pub role: Role,
    /// The viewer's name for viewer messages; `None` for the operator and the idol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What was said (for viewers: the raw message; wrapping happens when the prompt is built).
    pub text: String,
    /// The idol was cut off; `text` is what was heard.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Turn {
    /// A viewer's chat message.
    pub fn viewer(name: impl Into<String>, text: impl Into<String>) -> Self {
        Turn {
            ts_ms: now_ms(),
            role: Role::User,
            name: Some(name.into()),
            text: text.into(),
            interrupted: false,
        }
    }

    /// Trusted text from the operator (not wrapped).
    pub fn operator(text: impl Into<String>) -> Self {
        Turn {
            ts_ms: now_ms(),
            role: Role::User,
            name: None,
            text: text.into(),
            interrupted: false,
        }
    }

    /// A complete reply of the idol.
    pub fn assistant(text: impl Into<String>) -> Self {
        Turn {
            ts_ms: now_ms(),
            role: Role::Assistant,
            name: None,
            text: text.into(),
            interrupted: false,
        }
    }

    /// A reply that was cut off: `heard` is exactly the part the audience heard.
    pub fn interrupted(heard: impl Into<String>) -> Self {
        Turn {
            interrupted: true,
            ..Turn::assistant(heard)
        }
    }

    /// The message the model sees for this turn.
    pub fn to_message(&self) -> ChatMessage {
        match (self.role, &self.name) {
            (Role::User, Some(name)) => ChatMessage::new(Role::User, wrap_viewer(name, &self.text)),
            (Role::Assistant, _) if self.interrupted => {
                ChatMessage::new(Role::Assistant, format!("{} —", self.text.trim_end()))
            }
            (role, _) => ChatMessage::new(role, self.text.clone()),
        }
    }
}

/// The per-persona history file.
#[derive(Debug)]
pub struct Memory {
    path: PathBuf,
    file: File,
    turns: Vec<Turn>,
    warnings: Vec<String>,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> PersonaError {
    PersonaError::Load {
        path: path.to_path_buf(),
        message: format!(
            "{what}: {e} (check that the memory directory is writable, or run without memory)"
        ),
    }
}

impl Memory {
    /// `DIR/<slug>.jsonl`, creating the directory and file as needed.
    pub fn open(dir: &Path, slug: &str) -> Result<Self, PersonaError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_err(dir, "cannot create the memory directory", e))?;
        Self::open_file(&dir.join(format!("{slug}.jsonl")))
    }

    /// Open (or create) a history file and load its turns.
    pub fn open_file(path: &Path) -> Result<Self, PersonaError> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io_err(path, "cannot open the memory file", e))?;
        if !existed
            && let Some(dir) = path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io_err(path, "cannot read the memory file", e))?;
        let mut turns = Vec::new();
        let mut warnings = Vec::new();
        let mut good_end = 0usize;
        let mut pos = 0usize;
        let mut line_no = 0usize;
        let mut truncate_to = None;
        while pos < bytes.len() {
            line_no += 1;
            let end = bytes[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| pos + i);
            let line = &bytes[pos..end.unwrap_or(bytes.len())];
            let next = end.map(|e| e + 1).unwrap_or(bytes.len());
            let is_last = next >= bytes.len();
            if line.iter().all(u8::is_ascii_whitespace) {
                pos = next;
                if end.is_some() {
                    good_end = next;
                }
                continue;
            }
            match serde_json::from_slice::<Turn>(line) {
                Ok(t) => {
                    turns.push(t);
                    good_end = next;
                    if end.is_none() {
                        // A good last line without its newline: complete it before appending.
                        truncate_to = Some(usize::MAX);
                    }
                }
                Err(e) => {
                    let w = format!(
                        "{}:{line_no}: skipped a damaged turn ({e}){}",
                        path.display(),
                        if is_last {
                            "; it was cut off by a crash while being written, and is removed"
                        } else {
                            ""
                        }
                    );
                    log::warn!("{w}");
                    warnings.push(w);
                    if is_last {
                        truncate_to = Some(good_end);
                    }
                }
            }
            pos = next;
        }
        match truncate_to {
            Some(usize::MAX) => {
                file.write_all(b"\n")
                    .map_err(|e| io_err(path, "cannot repair the memory file", e))?;
                file.sync_data()
                    .map_err(|e| io_err(path, "cannot sync the memory file", e))?;
            }
            Some(len) => {
                file.set_len(len as u64)
                    .map_err(|e| io_err(path, "cannot repair the memory file", e))?;
                file.seek(SeekFrom::End(0))
                    .map_err(|e| io_err(path, "cannot repair the memory file", e))?;
                file.sync_data()
                    .map_err(|e| io_err(path, "cannot sync the memory file", e))?;
            }
            None => {}
        }
        Ok(Memory {
            path: path.to_path_buf(),
            file,
            turns,
            warnings,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All turns, oldest first.
    pub fn turns(&self) -> &[Turn] {
        &self.turns
    }

    /// Problems found while loading (damaged lines that were skipped).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Append one turn durably (written and synced before this returns).
    pub fn append(&mut self, turn: Turn) -> Result<(), PersonaError> {
        let mut line = serde_json::to_vec(&turn)
            .map_err(|e| PersonaError::Other(format!("cannot encode a turn: {e}")))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| io_err(&self.path, "cannot write to the memory file", e))?;
        self.file
            .sync_data()
            .map_err(|e| io_err(&self.path, "cannot sync the memory file", e))?;
        self.turns.push(turn);
        Ok(())
    }

    /// The history as chat messages, oldest first.
    pub fn messages(&self) -> Vec<ChatMessage> {
        self.turns.iter().map(Turn::to_message).collect()
    }
}
