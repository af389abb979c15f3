//! A reader for MeCab's compiled dictionaries (`sys.dic`, `matrix.bin`, `char.bin`, `unk.dic`) and
//! the lattice search over them: Japanese text → words with their dictionary features (part of
//! speech, reading, pronunciation). The Japanese front end ([`super::japanese`]) uses it with the
//! NAIST Japanese Dictionary that Open JTalk compiles (pinned in `models/manifest.toml`).
//!
//! Formats (MeCab 0.996, little-endian):
//! - `sys.dic`/`unk.dic`: a 72-byte header (`magic ^ 0xef718f77` is the file size, version, type,
//!   lexicon size, left/right context counts, then the byte sizes of the double array, the token
//!   table and the feature strings, a reserved word, and a 32-byte charset name), then a Darts double
//!   array over the UTF-8 bytes of the surface forms (units of `base: i32, check: u32`; a leaf's value
//!   `v` is `-base - 1`, whose high 24 bits index the first token and low 8 bits count them), the
//!   tokens (16 bytes: left id, right id, POS id, word cost, feature offset, compound), and the
//!   NUL-terminated feature strings.
//! - `matrix.bin`: `u16` left size, `u16` right size, then `i16` connection costs, indexed
//!   `left.right_id + lsize · right.left_id`.
//! - `char.bin`: `u32` category count, 32-byte category names, then one `u32` per UCS-2 code point:
//!   bits 0-17 the categories it belongs to, 18-25 its default category, 26-29 how many characters an
//!   unknown word of it may span, bit 30 "group a run of them", bit 31 "try unknown words even when the
//!   dictionary has a word here".
//!
//! The search is MeCab's: every dictionary word starting at each character, unknown words by the
//! character-class rules where needed, the path of least word + connection cost (Viterbi).
//!
//! Threading: a loaded [`Dictionary`] is read-only and shared (`Sync`).

use std::path::{Path, PathBuf};

const MAGIC: u32 = 0xef71_8f77;
const HEADER: usize = 72;
/// The longest run a grouped unknown word may span, in characters (MeCab's `max_grouping_size`).
const MAX_GROUPING: usize = 24;

/// A dictionary that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct DictError {
    pub path: PathBuf,
    pub message: String,
}

fn err(path: &Path, message: impl Into<String>) -> DictError {
    DictError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

/// One entry of a token table.
#[derive(Debug, Clone, Copy)]
struct Token {
    left: u16,
    right: u16,
    cost: i16,
    feature: u32,
}

/// One compiled lexicon (`sys.dic` or `unk.dic`).
struct Lexicon {
    bytes: Vec<u8>,
    /// Byte ranges in `bytes`.
    da: (usize, usize),
    tokens: (usize, usize),
    features: (usize, usize),
}

impl Lexicon {
    fn load(path: &Path) -> Result<Lexicon, DictError> {
        let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
        if bytes.len() < HEADER {
            return Err(err(path, "too short for a MeCab dictionary header"));
        }
        let magic = u32_at(&bytes, 0);
        if (magic ^ MAGIC) as usize != bytes.len() {
            return Err(err(
                path,
                "not a whole MeCab dictionary (its size does not match its header)",
            ));
        }
        let dsize = u32_at(&bytes, 24) as usize;
        let tsize = u32_at(&bytes, 28) as usize;
        let fsize = u32_at(&bytes, 32) as usize;
        let charset: String = bytes[40..72]
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as char)
            .collect();
        if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("utf8") {
            return Err(err(
                path,
                format!("dictionary charset is {charset:?}; only UTF-8 dictionaries are read"),
            ));
        }
        let da = (HEADER, HEADER + dsize);
        let tokens = (da.1, da.1 + tsize);
        let features = (tokens.1, tokens.1 + fsize);
        if features.1 > bytes.len() || !dsize.is_multiple_of(8) || !tsize.is_multiple_of(16) {
            return Err(err(path, "section sizes do not fit the file"));
        }
        Ok(Lexicon {
            bytes,
            da,
            tokens,
            features,
        })
    }

    fn unit(&self, i: usize) -> Option<(i32, u32)> {
        let at = self.da.0 + i * 8;
        (at + 8 <= self.da.1).then(|| (i32_at(&self.bytes, at), u32_at(&self.bytes, at + 4)))
    }

    /// Every entry whose key is a prefix of `key`: (key length in bytes, packed value).
    fn prefixes(&self, key: &[u8], out: &mut Vec<(usize, u32)>) {
        out.clear();
        let Some((mut b, _)) = self.unit(0) else {
            return;
        };
        for (i, &c) in key.iter().enumerate() {
            if let Some((n, check)) = self.unit(b as usize)
                && check == b as u32
                && n < 0
            {
                out.push((i, (-n - 1) as u32));
            }
            let p = b as i64 + i64::from(c) + 1;
            match usize::try_from(p).ok().and_then(|p| self.unit(p)) {
                Some((base, check)) if check == b as u32 => b = base,
                _ => return,
            }
        }
        if let Some((n, check)) = self.unit(b as usize)
            && check == b as u32
            && n < 0
        {
            out.push((key.len(), (-n - 1) as u32));
        }
    }

    /// The value stored for exactly `key`.
    fn exact(&self, key: &[u8]) -> Option<u32> {
        let mut v = Vec::new();
        self.prefixes(key, &mut v);
        v.into_iter().find(|(l, _)| *l == key.len()).map(|(_, v)| v)
    }

    fn tokens_of(&self, value: u32) -> impl Iterator<Item = Token> + '_ {
        let first = (value >> 8) as usize;
        let count = (value & 0xff) as usize;
        (first..first + count).filter_map(move |i| {
            let at = self.tokens.0 + i * 16;
            (at + 16 <= self.tokens.1).then(|| Token {
                left: u16_at(&self.bytes, at),
                right: u16_at(&self.bytes, at + 2),
                cost: u16_at(&self.bytes, at + 6) as i16,
                feature: u32_at(&self.bytes, at + 8),
            })
        })
    }

    fn feature(&self, offset: u32) -> &str {
        let start = self.features.0 + offset as usize;
        if start >= self.features.1 {
            return "";
        }
        let end = self.bytes[start..self.features.1]
            .iter()
            .position(|&c| c == 0)
            .map_or(self.features.1, |p| start + p);
        std::str::from_utf8(&self.bytes[start..end]).unwrap_or("")
    }
}

/// Character classes (`char.bin`).
struct CharClasses {
    names: Vec<String>,
    map: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct CharInfo(u32);

impl CharInfo {
    fn kinds(self) -> u32 {
        self.0 & 0x3ffff
    }
    fn default_kind(self) -> usize {
        ((self.0 >> 18) & 0xff) as usize
    }
    fn length(self) -> usize {
        ((self.0 >> 26) & 0xf) as usize
    }
    fn group(self) -> bool {
        self.0 >> 30 & 1 == 1
    }
    fn invoke(self) -> bool {
        self.0 >> 31 == 1
    }
    fn is_kind_of(self, other: CharInfo) -> bool {
        self.kinds() & other.kinds() != 0
    }
}

impl CharClasses {
    fn load(path: &Path) -> Result<CharClasses, DictError> {
        let b = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
        if b.len() < 4 {
            return Err(err(path, "too short"));
        }
        let n = u32_at(&b, 0) as usize;
        let names_end = 4 + 32 * n;
        if n == 0 || n > 64 || b.len() != names_end + 4 * 0xffff {
            return Err(err(path, "not a MeCab char.bin (wrong size)"));
        }
        let names = (0..n)
            .map(|i| {
                b[4 + 32 * i..4 + 32 * (i + 1)]
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as char)
                    .collect()
            })
            .collect();
        let map = (0..0xffff).map(|i| u32_at(&b, names_end + 4 * i)).collect();
        Ok(CharClasses { names, map })
    }

    fn info(&self, c: char) -> CharInfo {
        let i = c as usize;
        // Beyond UCS-2: the class of U+0000 (MeCab reads those as DEFAULT too).
        CharInfo(self.map[if i < self.map.len() { i } else { 0 }])
    }
}

/// A loaded MeCab dictionary.
pub struct Dictionary {
    sys: Lexicon,
    unk: Lexicon,
    chars: CharClasses,
    lsize: usize,
    matrix: Vec<i16>,
}

/// The files of a dictionary (a plain set of paths, kept with the other asset paths).
pub use crate::assets::DictFiles;

/// One word of the best path: its surface and its comma-separated dictionary features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Morpheme {
    pub surface: String,
    pub features: Vec<String>,
    /// Not in the dictionary: made by the unknown-word rules.
    pub unknown: bool,
}

struct Node {
    start: usize,
    end: usize,
    left: u16,
    right: u16,
    cost: i64,
    feature: u32,
    unknown: bool,
    best: i64,
    prev: usize,
}

impl Dictionary {
    pub fn load(files: &DictFiles) -> Result<Dictionary, DictError> {
        let sys = Lexicon::load(&files.sys)?;
        let unk = Lexicon::load(&files.unk)?;
        let chars = CharClasses::load(&files.chars)?;
        let m = std::fs::read(&files.matrix).map_err(|e| err(&files.matrix, e.to_string()))?;
        if m.len() < 4 {
            return Err(err(&files.matrix, "too short"));
        }
        let (l, r) = (u16_at(&m, 0) as usize, u16_at(&m, 2) as usize);
        if m.len() != 4 + 2 * l * r {
            return Err(err(&files.matrix, "not a MeCab matrix.bin (wrong size)"));
        }
        let matrix = m[4..]
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(Dictionary {
            sys,
            unk,
            chars,
            lsize: l,
            matrix,
        })
    }

    fn connect(&self, right_of_prev: u16, left_of_next: u16) -> i64 {
        let i = right_of_prev as usize + self.lsize * left_of_next as usize;
        i64::from(self.matrix.get(i).copied().unwrap_or(0))
    }

    /// Split `text` into words, the lowest-cost path through the lattice. Whitespace separates and
    /// is dropped.
    pub fn tokenize(&self, text: &str) -> Vec<Morpheme> {
        let mut out = Vec::new();
        for chunk in text.split(char::is_whitespace).filter(|c| !c.is_empty()) {
            self.tokenize_chunk(chunk, &mut out);
        }
        out
    }

    fn add_unknown(
        &self,
        nodes: &mut Vec<Node>,
        at: &[usize],
        kind: usize,
        start: usize,
        end: usize,
    ) {
        let Some(name) = self.chars.names.get(kind) else {
            return;
        };
        let Some(v) = self.unk.exact(name.as_bytes()) else {
            return;
        };
        for t in self.unk.tokens_of(v) {
            nodes.push(Node {
                start: at[start],
                end: at[end],
                left: t.left,
                right: t.right,
                cost: i64::from(t.cost),
                feature: t.feature,
                unknown: true,
                best: i64::MAX,
                prev: 0,
            });
        }
    }

    fn tokenize_chunk(&self, text: &str, out: &mut Vec<Morpheme>) {
        let chars: Vec<char> = text.chars().collect();
        // byte offset of each char, plus the end
        let mut at: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        at.push(text.len());
        let n = chars.len();
        // nodes[0] is BOS; the rest grouped by start (char index) in `starting`.
        let mut nodes: Vec<Node> = vec![Node {
            start: 0,
            end: 0,
            left: 0,
            right: 0,
            cost: 0,
            feature: u32::MAX,
            unknown: false,
            best: 0,
            prev: 0,
        }];
        let mut starting: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut ends_at: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
        ends_at[0].push(0);
        let mut found = Vec::new();
        let char_of_byte = |b: usize| at.partition_point(|&x| x < b);
        for i in 0..n {
            let first = nodes.len();
            self.sys.prefixes(&text.as_bytes()[at[i]..], &mut found);
            for &(len, v) in &found {
                if len == 0 {
                    continue;
                }
                for t in self.sys.tokens_of(v) {
                    nodes.push(Node {
                        start: at[i],
                        end: at[i] + len,
                        left: t.left,
                        right: t.right,
                        cost: i64::from(t.cost),
                        feature: t.feature,
                        unknown: false,
                        best: i64::MAX,
                        prev: 0,
                    });
                }
            }
            let info = self.chars.info(chars[i]);
            let had_word = nodes.len() > first;
            if !had_word || info.invoke() {
                let kind = info.default_kind();
                let mut group_end = None;
                if info.group() {
                    let mut j = i + 1;
                    while j < n && info.is_kind_of(self.chars.info(chars[j])) {
                        j += 1;
                    }
                    if j - i <= MAX_GROUPING {
                        self.add_unknown(&mut nodes, &at, kind, i, j);
                    }
                    group_end = Some(j);
                }
                for j in (i + 1..).take(info.length()) {
                    if j > n {
                        break;
                    }
                    if Some(j) != group_end {
                        self.add_unknown(&mut nodes, &at, kind, i, j);
                    }
                    if j >= n || !info.is_kind_of(self.chars.info(chars[j])) {
                        break;
                    }
                }
                if nodes.len() == first {
                    self.add_unknown(&mut nodes, &at, kind, i, i + 1);
                }
                if nodes.len() == first {
                    // No unknown-word entry for the class: a bare node so the path goes on.
                    nodes.push(Node {
                        start: at[i],
                        end: at[i + 1],
                        left: 0,
                        right: 0,
                        cost: 10_000,
                        feature: u32::MAX,
                        unknown: true,
                        best: i64::MAX,
                        prev: 0,
                    });
                }
            }
            for (k, node) in nodes.iter().enumerate().skip(first) {
                starting[i].push(k);
                ends_at[char_of_byte(node.end)].push(k);
            }
        }
        // Viterbi, in order of start position (every node ending at i is final before i is read).
        for i in 0..n {
            for &k in &starting[i] {
                let (left, cost) = (nodes[k].left, nodes[k].cost);
                let mut best = (i64::MAX, 0usize);
                for &p in &ends_at[i] {
                    let pb = nodes[p].best;
                    if pb == i64::MAX {
                        continue;
                    }
                    let c = pb + self.connect(nodes[p].right, left) + cost;
                    if c < best.0 {
                        best = (c, p);
                    }
                }
                nodes[k].best = best.0;
                nodes[k].prev = best.1;
            }
        }
        let mut best = (i64::MAX, usize::MAX);
        for &p in &ends_at[n] {
            if nodes[p].best == i64::MAX {
                continue;
            }
            let c = nodes[p].best + self.connect(nodes[p].right, 0);
            if c < best.0 {
                best = (c, p);
            }
        }
        let mut path = Vec::new();
        let mut k = best.1;
        while k != 0 && k != usize::MAX {
            path.push(k);
            k = nodes[k].prev;
        }
        path.reverse();
        for k in path {
            let node = &nodes[k];
            let lex = if node.unknown { &self.unk } else { &self.sys };
            let feature = if node.feature == u32::MAX {
                ""
            } else {
                lex.feature(node.feature)
            };
            out.push(Morpheme {
                surface: text[node.start..node.end].to_string(),
                features: feature.split(',').map(str::to_string).collect(),
                unknown: node.unknown,
            });
        }
    }
}
