//! Readers for phoneme timelines: Praat TextGrid, HTK/HTS label files, and our own JSON.
//!
//! Input: a file's bytes and a sample rate (TextGrids and labels count seconds or 100 ns units; the
//! rate turns them into samples). Output: [`PhonemeFile`]: a `Timeline<Phoneme>`, the word timeline
//! if the file has one, and the end of the file's span.
//!
//! - **TextGrid**: the long ("ooTextFile" with `xmin = ...` keys) and the short (values only) text
//!   forms, UTF-8 or UTF-16 with a byte-order mark, LF or CRLF. The phone tier is the interval tier
//!   named phone(s)/phoneme(s)/segment(s) (or a name the caller gives), else the first interval tier;
//!   the word tier is one named word(s). Point tiers are skipped. Empty intervals are silence (gaps).
//! - **HTK/HTS labels** (`.lab`): `start end label` per line in 100 ns units; a label that is an HTS
//!   full-context label (`x^y-CUR+z=w@...`) gives the phone between `-` and `+`. Lines with decimal
//!   times are read as seconds (wavesurfer/Audacity style). Lines with a single label and no times
//!   are rejected.
//! - **JSON**: a `Timeline<Phoneme>` as `idol::time` serialises it (`{"rate":..,"items":[{"start":..,
//!   "end":..,"symbol":"h"}]}`), or `{"phonemes": <timeline>, "words": <timeline>}`.
//!
//! ARPAbet labels are kept as written (`AA1` carries its stress digit, which also sets `stress`);
//! a file whose labels are mostly lower-case ARPAbet codes (HTS demos write `aa`, `hh`, `ax`) is
//! upper-cased so the face reads it as ARPAbet, not IPA.

use crate::speech::{Phoneme, Stress, Word};
use crate::time::{SampleTime, TimeRange, Timed, Timeline};
use std::path::Path;

/// A file that could not be read as a phoneme timeline.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{file}:{line}: {message}")]
    Parse {
        file: String,
        line: usize,
        message: String,
    },
    #[error("cannot read {file}: {error}")]
    Io { file: String, error: std::io::Error },
    #[error(
        "{0}: unknown phoneme file format: use a Praat .TextGrid, an HTK/HTS .lab or an idol .json timeline"
    )]
    UnknownFormat(String),
}

/// A phoneme file, read.
#[derive(Debug, Clone, PartialEq)]
pub struct PhonemeFile {
    pub phonemes: Timeline<Phoneme>,
    pub words: Option<Timeline<Word>>,
    /// End of the file's span (TextGrid `xmax`, else the last item's end).
    pub end: SampleTime,
}

/// Which format a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    TextGrid,
    Lab,
    Json,
}

/// Read a phoneme file, choosing the format from its extension or content.
pub fn read_path(path: &Path, rate: u32, tier: Option<&str>) -> Result<PhonemeFile, ReadError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| ReadError::Io {
        file: file.clone(),
        error,
    })?;
    let text = decode(&bytes);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let fmt = match ext.as_str() {
        "textgrid" => Format::TextGrid,
        "lab" | "htk" | "rec" => Format::Lab,
        "json" => Format::Json,
        _ => sniff(&text).ok_or_else(|| ReadError::UnknownFormat(file.clone()))?,
    };
    read_str(&text, fmt, rate, tier, &file)
}

/// Read from text in a known format; `file` names it in errors.
pub fn read_str(
    text: &str,
    fmt: Format,
    rate: u32,
    tier: Option<&str>,
    file: &str,
) -> Result<PhonemeFile, ReadError> {
    match fmt {
        Format::TextGrid => textgrid(text, rate, tier, file),
        Format::Lab => lab(text, rate, file),
        Format::Json => json(text, file),
    }
}

fn sniff(text: &str) -> Option<Format> {
    let t = text.trim_start();
    if t.starts_with('{') {
        Some(Format::Json)
    } else if t.starts_with("File type") {
        Some(Format::TextGrid)
    } else if t
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().count() >= 3)
    {
        Some(Format::Lab)
    } else {
        None
    }
}

/// UTF-8 (with or without BOM) or UTF-16 with a BOM.
fn decode(bytes: &[u8]) -> String {
    let utf16 = |be: bool| {
        let units: Vec<u16> = bytes[2..]
            .chunks_exact(2)
            .map(|c| {
                if be {
                    u16::from_be_bytes([c[0], c[1]])
                } else {
                    u16::from_le_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16_lossy(&units)
    };
    match bytes {
        [0xFF, 0xFE, ..] => utf16(false),
        [0xFE, 0xFF, ..] => utf16(true),
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8_lossy(rest).into_owned(),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Flag,
}

/// Praat's text serialisation, reduced to its values: numbers, quoted strings (`""` escapes a quote)
/// and `<exists>`-style flags. Keys (`xmin =`), `[n]:` indices and `!` comments are skipped, which
/// reads the long and the short form alike.
fn praat_tokens(text: &str, file: &str) -> Result<Vec<(Tok, usize)>, ReadError> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\n' => line += 1,
            '"' => {
                let start_line = line;
                let mut s = String::new();
                loop {
                    match it.next() {
                        Some('"') if it.peek() == Some(&'"') => {
                            it.next();
                            s.push('"');
                        }
                        Some('"') => break,
                        Some(ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            s.push(ch);
                        }
                        None => {
                            return Err(ReadError::Parse {
                                file: file.into(),
                                line: start_line,
                                message: "unterminated string".into(),
                            });
                        }
                    }
                }
                out.push((Tok::Str(s), start_line));
            }
            '[' => {
                for ch in it.by_ref() {
                    if ch == ']' {
                        break;
                    }
                }
            }
            '<' => {
                for ch in it.by_ref() {
                    if ch == '>' {
                        break;
                    }
                }
                out.push((Tok::Flag, line));
            }
            '!' => {
                for ch in it.by_ref() {
                    if ch == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let mut s = String::from(c);
                while let Some(&n) = it.peek() {
                    if n.is_ascii_digit() || matches!(n, '.' | 'e' | 'E' | '-' | '+') {
                        s.push(n);
                        it.next();
                    } else {
                        break;
                    }
                }
                let v: f64 = s.parse().map_err(|_| ReadError::Parse {
                    file: file.into(),
                    line,
                    message: format!("bad number `{s}`"),
                })?;
                out.push((Tok::Num(v), line));
            }
            c if c.is_alphabetic() || c == '_' => {
                // A key or keyword: skip the identifier (digits inside it are part of it).
                while let Some(&n) = it.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '?' {
                        it.next();
                    } else {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

struct Cursor<'a> {
    toks: &'a [(Tok, usize)],
    i: usize,
    file: &'a str,
}

impl Cursor<'_> {
    fn line(&self) -> usize {
        self.toks
            .get(self.i)
            .or(self.toks.last())
            .map_or(1, |t| t.1)
    }

    fn err(&self, what: &str) -> ReadError {
        ReadError::Parse {
            file: self.file.into(),
            line: self.line(),
            message: format!("expected {what}"),
        }
    }

    fn num(&mut self, what: &str) -> Result<f64, ReadError> {
        match self.toks.get(self.i) {
            Some((Tok::Num(v), _)) => {
                self.i += 1;
                Ok(*v)
            }
            _ => Err(self.err(what)),
        }
    }

    /// A declared count of items that take `per_item` tokens each. The count is never trusted for
    /// allocation: it must be a whole non-negative number, and no larger than what the tokens left
    /// in the file could hold, so a file cannot ask for more memory than its own size accounts for.
    fn count(&mut self, what: &str, per_item: usize) -> Result<usize, ReadError> {
        let line = self.line();
        let v = self.num(what)?;
        let room = self.toks.len().saturating_sub(self.i) / per_item.max(1);
        let bad = |message: String| ReadError::Parse {
            file: self.file.into(),
            line,
            message,
        };
        if !(v >= 0.0 && v.fract() == 0.0) {
            return Err(bad(format!(
                "{what} is `{v}`: expected a whole number of at least 0"
            )));
        }
        if v > room as f64 {
            return Err(bad(format!(
                "{what} is {v}, but the rest of the file holds at most {room}: fix the count or the truncated file"
            )));
        }
        Ok(v as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, ReadError> {
        match self.toks.get(self.i) {
            Some((Tok::Str(s), _)) => {
                self.i += 1;
                Ok(s.clone())
            }
            _ => Err(self.err(what)),
        }
    }
}

struct Tier {
    name: String,
    intervals: Vec<(f64, f64, String, usize)>,
}

fn textgrid(
    text: &str,
    rate: u32,
    want: Option<&str>,
    file: &str,
) -> Result<PhonemeFile, ReadError> {
    let toks = praat_tokens(text, file)?;
    let mut c = Cursor {
        toks: &toks,
        i: 0,
        file,
    };
    let ftype = c.string("`File type = \"ooTextFile\"`")?;
    if ftype != "ooTextFile" {
        return Err(c.err("a Praat text file (File type = \"ooTextFile\")"));
    }
    let class = c.string("`Object class = \"TextGrid\"`")?;
    if class != "TextGrid" {
        return Err(c.err("Object class \"TextGrid\""));
    }
    let _xmin = c.num("xmin")?;
    let xmax = c.num("xmax")?;
    if !matches!(toks.get(c.i), Some((Tok::Flag, _))) {
        return Err(c.err("`tiers? <exists>`"));
    }
    c.i += 1;
    // A tier is at least its class, name, xmin, xmax and count.
    let ntiers = c.count("the number of tiers", 5)?;
    let mut tiers: Vec<Tier> = Vec::new();
    for _ in 0..ntiers {
        let class = c.string("a tier class")?;
        let name = c.string("a tier name")?;
        c.num("tier xmin")?;
        c.num("tier xmax")?;
        // An interval is xmin, xmax and text; a point is a time and a mark.
        let per_item = if class == "TextTier" { 2 } else { 3 };
        let n = c.count("the number of intervals or points", per_item)?;
        match class.as_str() {
            "IntervalTier" => {
                // Bounded by `count`: never more than the file's remaining tokens could fill.
                let mut intervals = Vec::with_capacity(n);
                for _ in 0..n {
                    let line = c.line();
                    let a = c.num("interval xmin")?;
                    let b = c.num("interval xmax")?;
                    let t = c.string("interval text")?;
                    if b < a || !a.is_finite() || !b.is_finite() || a < 0.0 {
                        return Err(ReadError::Parse {
                            file: file.into(),
                            line,
                            message: format!("interval ends before it starts ({a} .. {b})"),
                        });
                    }
                    intervals.push((a, b, t, line));
                }
                tiers.push(Tier { name, intervals });
            }
            "TextTier" => {
                for _ in 0..n {
                    c.num("point time")?;
                    c.string("point mark")?;
                }
            }
            other => {
                return Err(ReadError::Parse {
                    file: file.into(),
                    line: c.line(),
                    message: format!("unknown tier class `{other}`"),
                });
            }
        }
    }
    let is = |t: &Tier, names: &[&str]| names.iter().any(|n| t.name.eq_ignore_ascii_case(n));
    let phone_tier = match want {
        Some(w) => tiers
            .iter()
            .find(|t| t.name == w)
            .ok_or_else(|| ReadError::Parse {
                file: file.into(),
                line: 1,
                message: format!(
                    "no interval tier named `{w}` (tiers: {})",
                    tiers
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?,
        None => tiers
            .iter()
            .find(|t| {
                is(
                    t,
                    &[
                        "phone", "phones", "phoneme", "phonemes", "segment", "segments",
                    ],
                )
            })
            .or_else(|| tiers.iter().find(|t| !is(t, &["word", "words"])))
            .or(tiers.first())
            .ok_or_else(|| ReadError::Parse {
                file: file.into(),
                line: 1,
                message: "the TextGrid has no interval tier".into(),
            })?,
    };
    let to_samples = |x: f64| SampleTime((x * rate as f64).round() as u64);
    let build = |tier: &Tier| -> Result<Vec<Timed<String>>, ReadError> {
        let mut v = Vec::new();
        for (a, b, t, line) in &tier.intervals {
            let t = t.trim();
            if t.is_empty() {
                continue;
            }
            let r =
                TimeRange::new(to_samples(*a), to_samples(*b)).map_err(|e| ReadError::Parse {
                    file: file.into(),
                    line: *line,
                    message: e.to_string(),
                })?;
            v.push(Timed::new(r, t.to_string()));
        }
        Ok(v)
    };
    let phonemes = phoneme_timeline(build(phone_tier)?, rate, file)?;
    let words = match tiers.iter().find(|t| is(t, &["word", "words"])) {
        Some(t) => Some(
            Timeline::from_items(
                rate,
                build(t)?.into_iter().map(|x| x.map(Word::new)).collect(),
            )
            .map_err(|e| ReadError::Parse {
                file: file.into(),
                line: 1,
                message: format!("word tier: {e}"),
            })?,
        ),
        None => None,
    };
    let end = to_samples(xmax).max(phonemes.span().map_or(SampleTime::ZERO, |s| s.end()));
    Ok(PhonemeFile {
        phonemes,
        words,
        end,
    })
}

/// Labels → phonemes: stress from ARPAbet digits, lower-case ARPAbet files upper-cased.
fn phoneme_timeline(
    items: Vec<Timed<String>>,
    rate: u32,
    file: &str,
) -> Result<Timeline<Phoneme>, ReadError> {
    let arpa_lower = {
        let labels: Vec<&str> = items.iter().map(|t| t.value.as_str()).collect();
        let known = labels
            .iter()
            .filter(|l| {
                let body = l.trim_end_matches(|c: char| c.is_ascii_digit());
                body.len() >= 2
                    && body.chars().all(|c| c.is_ascii_lowercase())
                    && crate::face::phonetics::arpabet_to_ipa(&body.to_ascii_uppercase()).is_some()
            })
            .count();
        let ascii = labels.iter().all(|l| l.is_ascii());
        ascii && !labels.is_empty() && known * 3 >= labels.len()
    };
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let mut sym = it.value;
        if arpa_lower && !crate::speech::Phoneme::new(sym.as_str()).is_silence() {
            sym = sym.to_ascii_uppercase();
        }
        let stress = if crate::face::phonetics::looks_arpabet(&sym) {
            match sym.chars().last() {
                Some('1') => Stress::Primary,
                Some('2') => Stress::Secondary,
                _ => Stress::None,
            }
        } else if sym.starts_with('ˈ') {
            Stress::Primary
        } else if sym.starts_with('ˌ') {
            Stress::Secondary
        } else {
            Stress::None
        };
        out.push(Timed::new(it.range, Phoneme::stressed(sym, stress)));
    }
    Timeline::from_items(rate, out).map_err(|e| ReadError::Parse {
        file: file.into(),
        line: 1,
        message: format!("phone tier: {e}"),
    })
}

/// The phone of an HTS full-context label (`p1^p2-p3+p4=p5@...` → `p3`), or the label itself.
pub fn hts_phone(label: &str) -> &str {
    if let (Some(a), Some(b)) = (label.find('-'), label.find('+'))
        && a < b
    {
        return &label[a + 1..b];
    }
    label
}

fn lab(text: &str, rate: u32, file: &str) -> Result<PhonemeFile, ReadError> {
    let mut items = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || l == "." || l == "///" {
            continue;
        }
        let mut f = l.split_whitespace();
        let (Some(a), Some(b), Some(label)) = (f.next(), f.next(), f.next()) else {
            return Err(ReadError::Parse {
                file: file.into(),
                line,
                message: "expected `start end label` (times in 100 ns units)".into(),
            });
        };
        let secs = a.contains('.') || b.contains('.');
        let parse = |s: &str| -> Result<SampleTime, ReadError> {
            let bad = || ReadError::Parse {
                file: file.into(),
                line,
                message: format!("bad time `{s}`"),
            };
            if secs {
                let v: f64 = s.parse().map_err(|_| bad())?;
                SampleTime::from_secs_f64(v, rate).map_err(|_| bad())
            } else {
                let v: u64 = s.parse().map_err(|_| bad())?;
                // 100 ns units: samples = v * rate / 10^7, rounded half up, exact in integers.
                Ok(SampleTime(
                    ((v as u128 * rate as u128 * 2 + 10_000_000) / 20_000_000) as u64,
                ))
            }
        };
        let (s, e) = (parse(a)?, parse(b)?);
        let r = TimeRange::new(s, e).map_err(|err| ReadError::Parse {
            file: file.into(),
            line,
            message: err.to_string(),
        })?;
        let phone = hts_phone(label);
        if phone.is_empty() || matches!(phone, "x" | "xx") {
            continue;
        }
        items.push(Timed::new(r, phone.to_string()));
    }
    let phonemes = phoneme_timeline(items, rate, file)?;
    let end = phonemes.span().map_or(SampleTime::ZERO, |s| s.end());
    Ok(PhonemeFile {
        phonemes,
        words: None,
        end,
    })
}

#[derive(serde::Deserialize)]
struct Wrapped {
    phonemes: Timeline<Phoneme>,
    #[serde(default)]
    words: Option<Timeline<Word>>,
}

fn json(text: &str, file: &str) -> Result<PhonemeFile, ReadError> {
    let bad = |e: serde_json::Error| ReadError::Parse {
        file: file.into(),
        line: e.line().max(1),
        message: format!(
            "{e}: expected a Timeline<Phoneme> ({{\"rate\":22050,\"items\":[{{\"start\":0,\"end\":100,\"symbol\":\"h\"}}]}}) or {{\"phonemes\": <timeline>, \"words\": <timeline>}}"
        ),
    };
    let probe: serde_json::Value = serde_json::from_str(text).map_err(bad)?;
    let (phonemes, words) = if probe.get("phonemes").is_some() {
        let w: Wrapped = serde_json::from_str(text).map_err(bad)?;
        (w.phonemes, w.words)
    } else {
        (
            serde_json::from_str::<Timeline<Phoneme>>(text).map_err(bad)?,
            None,
        )
    };
    let end = phonemes.span().map_or(SampleTime::ZERO, |s| s.end());
    Ok(PhonemeFile {
        phonemes,
        words,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hts_and_htk_labels() {
        let text = "0 500000 x^x-sil+hh=ax@x_x\n500000 1000000 x^sil-hh+ax=l@1_1\n1000000 2000000 sil-ax+l=ow@1\n";
        let f = read_str(text, Format::Lab, 16000, None, "a.lab").unwrap();
        let items = f.phonemes.items();
        // Silence is kept as written; the face treats `sil` as silence.
        assert_eq!(items[1].value.symbol, "HH");
        assert_eq!(items[1].start(), SampleTime(800));
        assert_eq!(items[2].value.symbol, "AX");
        assert_eq!(f.end, SampleTime(3200));
        let e = read_str("0 10\n", Format::Lab, 16000, None, "b.lab").unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.lab:1: expected `start end label` (times in 100 ns units)"
        );
    }

    #[test]
    fn short_textgrid_with_point_tier() {
        let tg = "File type = \"ooTextFile\"\r\nObject class = \"TextGrid\"\r\n\r\n0\r\n1\r\n<exists>\r\n2\r\n\"IntervalTier\"\r\n\"phones\"\r\n0\r\n1\r\n2\r\n0\r\n0.5\r\n\"ˈa\"\r\n0.5\r\n1\r\n\"\"\r\n\"TextTier\"\r\n\"pitch\"\r\n0\r\n1\r\n1\r\n0.3\r\n\"120\"\r\n";
        let f = read_str(tg, Format::TextGrid, 1000, None, "t.TextGrid").unwrap();
        assert_eq!(f.phonemes.len(), 1);
        assert_eq!(f.phonemes.items()[0].value.stress, Stress::Primary);
        assert_eq!(f.end, SampleTime(1000));
        let bad = tg.replace("0.5\r\n1\r\n\"\"", "0.7\r\n0.2\r\n\"\"");
        let e = read_str(&bad, Format::TextGrid, 1000, None, "t.TextGrid").unwrap_err();
        assert!(e.to_string().starts_with("t.TextGrid:16:"), "{e}");
    }

    #[test]
    fn declared_counts_are_bounded_by_the_file() {
        let tg = "File type = \"ooTextFile\"\nObject class = \"TextGrid\"\n0\n1\n<exists>\n1\n\"IntervalTier\"\n\"phones\"\n0\n1\n2\n0\n0.5\n\"a\"\n0.5\n1\n\"\"\n";
        assert_eq!(
            read_str(tg, Format::TextGrid, 1000, None, "t.TextGrid")
                .unwrap()
                .phonemes
                .len(),
            1
        );
        // Counts the file cannot hold, absurd or one too many, fail at the count's line
        // before anything is allocated for them.
        for (n, line) in [
            ("1\n\"IntervalTier\"\n\"phones\"\n0\n1\n4294967296", 11),
            ("1\n\"IntervalTier\"\n\"phones\"\n0\n1\n1e308", 11),
            ("1\n\"IntervalTier\"\n\"phones\"\n0\n1\n3", 11),
            ("1\n\"IntervalTier\"\n\"phones\"\n0\n1\n-1", 11),
            ("1\n\"IntervalTier\"\n\"phones\"\n0\n1\n1.5", 11),
            (
                "18446744073709551615\n\"IntervalTier\"\n\"phones\"\n0\n1\n2",
                6,
            ),
        ] {
            let bad = tg.replace("1\n\"IntervalTier\"\n\"phones\"\n0\n1\n2", n);
            let e = read_str(&bad, Format::TextGrid, 1000, None, "t.TextGrid").unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("t.TextGrid:{line}: ")),
                "{n}: {e}"
            );
        }
    }
}
