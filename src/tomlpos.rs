//! Positioned errors for the TOML files people write by hand: `idol.toml`, scripts (and the line and
//! column helper the persona cards use).
//!
//! Every problem names the file, the 1-based line and column (in characters) and the dotted field it
//! belongs to (`server.port`, `line[2].at`), then what is wrong and what to write instead. serde's
//! errors carry only a byte span, so the field is recovered from the text: the last table header before
//! the span (arrays of tables counted, `line[2]`) and the key on the span's line.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem in a TOML file, positioned in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TomlError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (e.g. the file cannot be read).
    pub line: usize,
    pub column: usize,
    /// Dotted field, e.g. `server.port` or `line[2].at`; empty when unknown.
    pub field: String,
    pub message: String,
}

impl fmt::Display for TomlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl TomlError {
    /// The file could not be read at all (`what`: "config file", "script").
    pub fn unreadable(file: &Path, what: &str, e: &std::io::Error) -> TomlError {
        TomlError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read the {what}: {e}"),
        }
    }

    /// A problem at byte `offset` of `src`, in `field`.
    pub fn at(
        file: &Path,
        src: &str,
        offset: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> TomlError {
        let (line, column) = line_col(src, offset);
        TomlError {
            file: file.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }

    /// A syntax or type error from the TOML deserializer; `hint` may append advice for its message
    /// (e.g. the allowed keys after "unknown field").
    pub fn from_de(
        file: &Path,
        src: &str,
        e: &toml::de::Error,
        hint: impl Fn(&str) -> &'static str,
    ) -> TomlError {
        let start = e.span().map_or(0, |s| s.start);
        let (line, column) = match e.span() {
            Some(_) => line_col(src, start),
            None => (0, 0),
        };
        let message = e.message().trim().to_string();
        let hint = hint(&message);
        TomlError {
            file: file.to_path_buf(),
            line,
            column,
            field: key_path_at(src, start),
            message: format!("{message}{hint}"),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`. An offset past the end or
/// inside a character is moved back to the character's start.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, text[line_start..offset].chars().count() + 1)
}

/// The dotted key that byte `offset` belongs to: the last table header before it (arrays of tables
/// counted from 1: `line[2]`) and the key on its line; a header line names the table itself.
pub fn key_path_at(src: &str, offset: usize) -> String {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let mut table = String::new();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for line in src[..line_start].lines() {
        let t = line.trim();
        if let Some(inner) = t.strip_prefix("[[") {
            let name = inner.trim_end_matches("]]").trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            *n += 1;
            table = format!("{name}[{}]", *n);
        } else if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let line = src[line_start..].lines().next().unwrap_or("");
    let t = line.trim();
    if let Some(inner) = t.strip_prefix("[[") {
        let name = inner.trim_end_matches("]]").trim().to_string();
        let n = counts.get(&name).copied().unwrap_or(0) + 1;
        return format!("{name}[{n}]");
    }
    if t.starts_with('[') {
        return t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
    }
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    match (table.is_empty(), key.is_empty()) {
        (_, true) => table,
        (true, false) => key,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncé=x", 6), (2, 3));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn key_paths_count_arrays_of_tables() {
        let src = "a = 1\n[server]\nport = 2\n[[line]]\ntext = \"x\"\n[[line]]\nat = 3\n";
        assert_eq!(key_path_at(src, src.find("a =").unwrap()), "a");
        assert_eq!(key_path_at(src, src.find("port").unwrap()), "server.port");
        assert_eq!(key_path_at(src, src.find("text").unwrap()), "line[1].text");
        assert_eq!(key_path_at(src, src.find("at =").unwrap()), "line[2].at");
        let second = src.rfind("[[line]]").unwrap();
        assert_eq!(key_path_at(src, second), "line[2]");
    }

    #[test]
    fn display_names_file_position_and_field() {
        let e = TomlError::at(Path::new("idol.toml"), "x = 1\ny = 2", 6, "y", "bad");
        assert_eq!(e.to_string(), "idol.toml:2:1: field `y`: bad");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = TomlError::unreadable(Path::new("s.toml"), "script", &io);
        assert_eq!(e.to_string(), "s.toml: cannot read the script: gone");
    }
}
