//! Character Card import: V1/V2 JSON, V3 JSON, V3 PNG and CHARX, into a [`PersonaCard`].
//! Input: a file path (or bytes). Output: a validated card. Pure; no threads.
//!
//! Formats: Character Card V2 is `{"spec":"chara_card_v2","spec_version":"2.0","data":{...}}`; V3 is
//! the same shape with `"spec":"chara_card_v3"` and extra fields (`assets`, `nickname`, ...); V1 is the
//! bare fields at the top level. A PNG card stores the JSON base64-encoded in a `tEXt` chunk whose
//! keyword is `ccv3` (V3) or `chara` (V2, also kept in V3 files as a fallback). A CHARX file is a zip
//! holding `card.json` (V3).
//!
//! PNG reading: the 8-byte signature, then chunks of (length u32 BE, 4-byte type, data, CRC-32 over
//! type and data). Every chunk's length is checked against the file and its CRC is verified (a card
//! with a damaged text chunk is refused rather than half-read); reading stops at `IEND`. `tEXt` is
//! `keyword NUL latin-1 text`; uncompressed `iTXt` (`keyword NUL flag method lang NUL key NUL utf-8`)
//! is read too. `ccv3` wins over `chara`.
//!
//! Size bounds (a card is one file from anywhere, so its size must not decide our memory): the card
//! text (a JSON or TOML file, a CHARX `card.json`, a PNG chunk's decoded JSON) is at most
//! [`MAX_CARD_TEXT`]; a PNG card file at most [`MAX_PNG_CARD`]. A zip member is inflated through a
//! reader that stops one byte past the bound, whatever size the zip declares, so a small zip cannot
//! inflate into a large allocation; only `card.json` is read from a CHARX (its other assets are not).
//!
//! Mapping to our card: `first_mes` is the greeting, `mes_example` is split at `<START>` into
//! exchanges of `{{user}}:` / `{{char}}:` lines, `system_prompt` and `post_history_instructions` are
//! kept, V3 assets typed `emotion` add their names to the allowed emotions. The emotion, action and
//! blocked-word lists start from our defaults; a card may set them under `extensions.idol`
//! (`emotions`, `actions`, `blocked_words`, `deflection`, `voice`, `rig`).

use super::card::{CardError, CardSource, Example, PersonaCard, RigDefaults, VoiceDefaults};
use base64::Engine as _;
use serde_json::Value;
use std::io::{Read, Seek};
use std::path::Path;

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// The most card text (JSON or TOML) a card may hold: 8 MiB. Real cards, lorebooks included, are
/// well under a megabyte; past this a card is refused rather than read.
pub const MAX_CARD_TEXT: usize = 8 << 20;

/// The largest PNG card file read: 64 MiB (the portrait plus its text chunks).
pub const MAX_PNG_CARD: usize = 64 << 20;

/// Read at most `limit` bytes from `r`, refusing more: reads through `take(limit + 1)`, so the bound
/// holds whatever size the source claims. `what` names the source in the error.
fn read_bounded(mut r: impl Read, limit: usize, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.by_ref()
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{what} is unreadable: {e}"))?;
    if out.len() > limit {
        return Err(too_big(what, limit));
    }
    Ok(out)
}

fn too_big(what: &str, limit: usize) -> String {
    format!(
        "{what} is larger than {} MiB, more than any character card needs; refused (export the card \
         again without embedded extras, or trim its lorebook)",
        limit >> 20
    )
}

/// Where the default persona lives in an idol home (`[persona] card` when idol.toml says nothing).
pub const DEFAULT_CARD: &str = "personas/mika.toml";

/// The default persona's card, built into idol, so a home made anywhere (no `personas/` folder) still
/// has an idol to talk to.
pub const DEFAULT_CARD_TOML: &str = include_str!("../../personas/mika.toml");

/// Whether `path` is the default card's place in some home and holds no file: the built-in card
/// stands in for it ([`load_card`] does this).
pub fn is_absent_default(path: &Path) -> bool {
    path.ends_with(DEFAULT_CARD) && !path.exists()
}

/// Load any supported card: our TOML, card JSON, PNG or CHARX, chosen by the file's first bytes. The
/// default card's path with no file there gives the built-in default persona.
pub fn load_card(path: &Path) -> Result<PersonaCard, CardError> {
    if is_absent_default(path) {
        return PersonaCard::from_toml_str(DEFAULT_CARD_TOML, path);
    }
    let unreadable = |e: std::io::Error| {
        CardError::new(
            path,
            format!(
                "cannot read the persona card: {e} (give another card with `--persona FILE` or \
                 `[persona] card` in idol.toml; leave it unset for the built-in default persona)"
            ),
        )
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mut head = Vec::with_capacity(8);
    file.by_ref()
        .take(8)
        .read_to_end(&mut head)
        .map_err(unreadable)?;
    file.seek(std::io::SeekFrom::Start(0)).map_err(unreadable)?;
    if head.starts_with(b"PK\x03\x04") {
        // Read from the file: a CHARX may carry large assets, of which only card.json is read.
        return card_from_charx_reader(file, path);
    }
    let (limit, what) = if head.starts_with(PNG_SIGNATURE) {
        (MAX_PNG_CARD, "the PNG card")
    } else {
        (MAX_CARD_TEXT, "the card file")
    };
    let bytes = read_bounded(file, limit, what).map_err(|e| CardError::new(path, e))?;
    if bytes.starts_with(PNG_SIGNATURE) {
        return card_from_png(&bytes, path);
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        CardError::new(
            path,
            format!("not UTF-8 text, a PNG card or a CHARX zip: {e}"),
        )
    })?;
    if text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('{')
    {
        card_from_json_str(text, path)
    } else {
        PersonaCard::from_toml_str(text, path)
    }
}

/// Table-driven CRC-32 (IEEE 802.3, as PNG uses).
pub fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (n, slot) in t.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c = table[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

/// One PNG chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PngChunk<'a> {
    pub kind: [u8; 4],
    pub data: &'a [u8],
    /// Byte offset of the chunk's length field.
    pub offset: usize,
}

/// Split a PNG into its chunks, verifying structure and CRCs, up to and including `IEND`.
pub fn png_chunks(bytes: &[u8]) -> Result<Vec<PngChunk<'_>>, String> {
    if !bytes.starts_with(PNG_SIGNATURE) {
        return Err("not a PNG (bad signature)".into());
    }
    let mut pos = PNG_SIGNATURE.len();
    let mut chunks = Vec::new();
    loop {
        if pos + 8 > bytes.len() {
            return Err(format!(
                "truncated at byte {pos}: the file ends before IEND"
            ));
        }
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = bytes[pos + 4..pos + 8].try_into().expect("4 bytes");
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(format!("chunk at byte {pos} has an invalid type {kind:?}"));
        }
        let end = pos
            .checked_add(12)
            .and_then(|p| p.checked_add(len))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                format!(
                    "chunk {} at byte {pos} claims {len} bytes but the file ends first",
                    String::from_utf8_lossy(&kind)
                )
            })?;
        let data = &bytes[pos + 8..pos + 8 + len];
        let stored = u32::from_be_bytes(bytes[end - 4..end].try_into().expect("4 bytes"));
        let actual = crc32(&bytes[pos + 4..pos + 8 + len]);
        if stored != actual {
            return Err(format!(
                "chunk {} at byte {pos} has a bad CRC (stored {stored:08x}, computed {actual:08x}): the file is damaged",
                String::from_utf8_lossy(&kind)
            ));
        }
        chunks.push(PngChunk {
            kind,
            data,
            offset: pos,
        });
        pos = end;
        if &kind == b"IEND" {
            return Ok(chunks);
        }
    }
}

/// The keyword/text pairs of a PNG's `tEXt` and uncompressed `iTXt` chunks.
pub fn png_text_chunks(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for c in png_chunks(bytes)? {
        match &c.kind {
            b"tEXt" => {
                let Some(nul) = c.data.iter().position(|&b| b == 0) else {
                    continue;
                };
                let latin1 = |b: &[u8]| b.iter().map(|&x| x as char).collect::<String>();
                out.push((latin1(&c.data[..nul]), latin1(&c.data[nul + 1..])));
            }
            b"iTXt" => {
                let d = c.data;
                let Some(nul) = d.iter().position(|&b| b == 0) else {
                    continue;
                };
                let keyword = String::from_utf8_lossy(&d[..nul]).into_owned();
                let rest = &d[nul + 1..];
                if rest.len() < 2 || rest[0] != 0 {
                    continue; // compressed iTXt: not used by card writers
                }
                let rest = &rest[2..];
                let Some(l1) = rest.iter().position(|&b| b == 0) else {
                    continue;
                };
                let rest = &rest[l1 + 1..];
                let Some(l2) = rest.iter().position(|&b| b == 0) else {
                    continue;
                };
                out.push((
                    keyword,
                    String::from_utf8_lossy(&rest[l2 + 1..]).into_owned(),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Import a PNG card (`ccv3` first, then `chara`).
pub fn card_from_png(bytes: &[u8], path: &Path) -> Result<PersonaCard, CardError> {
    let texts = png_text_chunks(bytes).map_err(|e| CardError::new(path, e))?;
    let find = |key: &str| {
        texts
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    };
    let (key, b64) = match (find("ccv3"), find("chara")) {
        (Some(v), _) => ("ccv3", v),
        (None, Some(v)) => ("chara", v),
        (None, None) => {
            return Err(CardError::new(
                path,
                "this PNG holds no character card (no `ccv3` or `chara` text chunk); export the card \
                 from its editor as a PNG card, or as JSON",
            ));
        }
    };
    let cleaned: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    // Base64 takes 4 bytes per 3: refuse before decoding what would decode past the bound.
    if cleaned.len() / 4 * 3 > MAX_CARD_TEXT + 3 {
        return Err(CardError::new(
            path,
            too_big(&format!("the `{key}` chunk's card JSON"), MAX_CARD_TEXT),
        ));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let json = engine
        .decode(cleaned.as_bytes())
        .map_err(|e| CardError::new(path, format!("the `{key}` chunk is not valid base64: {e}")))?;
    if json.len() > MAX_CARD_TEXT {
        return Err(CardError::new(
            path,
            too_big(&format!("the `{key}` chunk's card JSON"), MAX_CARD_TEXT),
        ));
    }
    let text = String::from_utf8(json).map_err(|_| {
        CardError::new(
            path,
            format!("the `{key}` chunk does not decode to UTF-8 JSON"),
        )
    })?;
    card_from_json_str(&text, path).map_err(|mut e| {
        e.message = format!("in the `{key}` chunk's JSON: {}", e.message);
        e
    })
}

/// Import a CHARX zip (its `card.json`).
pub fn card_from_charx(bytes: &[u8], path: &Path) -> Result<PersonaCard, CardError> {
    card_from_charx_reader(std::io::Cursor::new(bytes), path)
}

/// Import a CHARX zip from a reader: only `card.json` is inflated, and at most [`MAX_CARD_TEXT`]
/// of it (the size the zip declares is not trusted).
pub fn card_from_charx_reader(
    zip: impl Read + Seek,
    path: &Path,
) -> Result<PersonaCard, CardError> {
    let mut zip = zip::ZipArchive::new(zip)
        .map_err(|e| CardError::new(path, format!("not a readable CHARX zip: {e}")))?;
    let entry = zip
        .by_name("card.json")
        .map_err(|_| CardError::new(path, "this CHARX zip has no card.json at its root"))?;
    let what = "card.json in the CHARX zip";
    if entry.size() > MAX_CARD_TEXT as u64 {
        return Err(CardError::new(path, too_big(what, MAX_CARD_TEXT)));
    }
    let bytes = read_bounded(entry, MAX_CARD_TEXT, what).map_err(|e| CardError::new(path, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| CardError::new(path, format!("{what} is not UTF-8 text: {e}")))?;
    card_from_json_str(&text, path).map_err(|mut e| {
        e.message = format!("in card.json: {}", e.message);
        e
    })
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Import card JSON (V1, V2 or V3).
pub fn card_from_json_str(text: &str, path: &Path) -> Result<PersonaCard, CardError> {
    let text = text.trim_start_matches('\u{feff}');
    let v: Value = serde_json::from_str(text).map_err(|e| CardError {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        field: None,
        message: format!("not valid JSON: {e}"),
    })?;
    let spec = v.get("spec").and_then(Value::as_str).unwrap_or("");
    let (data, spec) = match spec {
        "chara_card_v2" | "chara_card_v3" => {
            let data = v
                .get("data")
                .filter(|d| d.is_object())
                .ok_or_else(|| CardError {
                    path: path.to_path_buf(),
                    line: 0,
                    column: 0,
                    field: Some("data".into()),
                    message: format!("a {spec} card needs a `data` object"),
                })?;
            (data, spec.to_string())
        }
        "" if v.get("name").is_some() => (&v, "chara_card_v1".to_string()),
        other => {
            return Err(CardError {
                path: path.to_path_buf(),
                line: 0,
                column: 0,
                field: Some("spec".into()),
                message: format!(
                    "unknown card spec {other:?}: allowed are \"chara_card_v2\", \"chara_card_v3\", or a \
                     V1 card with a top-level `name`"
                ),
            });
        }
    };
    let name = str_field(data, "name");
    if name.is_empty() {
        return Err(CardError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            field: Some("data.name".into()),
            message: "the card has no name".into(),
        });
    }
    let mut card = PersonaCard::named(name.clone());
    card.description = str_field(data, "description");
    card.personality = str_field(data, "personality");
    card.scenario = str_field(data, "scenario");
    card.greeting = str_field(data, "first_mes");
    card.alternate_greetings = data
        .get("alternate_greetings")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    card.examples = parse_mes_example(&str_field(data, "mes_example"), &name);
    card.system_prompt = Some(str_field(data, "system_prompt")).filter(|s| !s.is_empty());
    card.post_history =
        Some(str_field(data, "post_history_instructions")).filter(|s| !s.is_empty());
    if let Some(assets) = data.get("assets").and_then(Value::as_array) {
        for a in assets {
            if a.get("type").and_then(Value::as_str) == Some("emotion") {
                let n = sanitize_tag(&str_field(a, "name"));
                if !n.is_empty() && !card.emotions.contains(&n) {
                    card.emotions.push(n);
                }
            }
        }
    }
    if data.get("character_book").is_some_and(|b| !b.is_null()) {
        log::warn!(
            "{}: the card's character book (lorebook) is not used by idol",
            path.display()
        );
    }
    if let Some(ext) = data.get("extensions").and_then(|e| e.get("idol")) {
        apply_idol_extension(&mut card, ext, path)?;
    }
    card.source = CardSource::Imported {
        path: path.to_path_buf(),
        spec,
    };
    Ok(card)
}

/// Our own fields inside `extensions.idol` of an imported card.
fn apply_idol_extension(card: &mut PersonaCard, ext: &Value, path: &Path) -> Result<(), CardError> {
    let list = |key: &str| -> Option<Vec<String>> {
        ext.get(key).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
    };
    let bad = |field: &str, message: String| CardError {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        field: Some(format!("data.extensions.idol.{field}")),
        message,
    };
    for (key, target) in [
        ("emotions", &mut card.emotions),
        ("actions", &mut card.actions),
    ] {
        if let Some(items) = list(key) {
            if let Some(b) = items
                .iter()
                .find(|s| sanitize_tag(s) != **s || s.is_empty())
            {
                return Err(bad(
                    key,
                    format!(
                        "{b:?} is not a tag name: allowed are lowercase ASCII letters, digits, `_` and `-`"
                    ),
                ));
            }
            if !items.is_empty() {
                *target = items;
            }
        }
    }
    if let Some(items) = list("blocked_words") {
        card.blocked_words = items;
    }
    if let Some(d) = ext.get("deflection").and_then(Value::as_str) {
        card.deflection = d.to_string();
    }
    if let Some(v) = ext.get("voice") {
        card.voice = serde_json::from_value::<VoiceDefaults>(v.clone())
            .map_err(|e| bad("voice", e.to_string()))?;
    }
    if let Some(v) = ext.get("rig") {
        card.rig = serde_json::from_value::<RigDefaults>(v.clone())
            .map_err(|e| bad("rig", e.to_string()))?;
    }
    Ok(())
}

fn sanitize_tag(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if (c == '_' || c == '-' || c == ' ') && !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_').to_string();
    if out.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
        out
    } else {
        String::new()
    }
}

/// Split a `mes_example` transcript into exchanges. Blocks start at `<START>`; lines begin with
/// `{{user}}:`/`<USER>:` or `{{char}}:`/`<BOT>:`/`NAME:`; other lines continue the previous one.
pub fn parse_mes_example(text: &str, char_name: &str) -> Vec<Example> {
    #[derive(PartialEq, Clone, Copy)]
    enum Who {
        User,
        Char,
    }
    let speaker = |line: &str| -> Option<(Who, usize)> {
        let lower = line.to_ascii_lowercase();
        for (p, w) in [
            ("{{user}}:", Who::User),
            ("<user>:", Who::User),
            ("{{char}}:", Who::Char),
            ("<bot>:", Who::Char),
        ] {
            if lower.starts_with(p) {
                return Some((w, p.len()));
            }
        }
        let named = format!("{}:", char_name.to_ascii_lowercase());
        if !char_name.is_empty() && lower.starts_with(&named) {
            return Some((Who::Char, named.len()));
        }
        None
    };
    let mut out = Vec::new();
    let mut lines: Vec<(Who, String)> = Vec::new();
    let flush = |lines: &mut Vec<(Who, String)>, out: &mut Vec<Example>| {
        let mut pending_user = String::new();
        for (who, text) in lines.drain(..) {
            let text = text.trim().to_string();
            match who {
                Who::User => {
                    if !pending_user.is_empty() {
                        pending_user.push('\n');
                    }
                    pending_user.push_str(&text);
                }
                Who::Char => out.push(Example {
                    user: std::mem::take(&mut pending_user),
                    char: text,
                }),
            }
        }
    };
    for raw in text.lines() {
        let line = raw.trim_end();
        if line.trim().eq_ignore_ascii_case("<start>") {
            flush(&mut lines, &mut out);
            continue;
        }
        match speaker(line.trim_start()) {
            Some((who, len)) => lines.push((who, line.trim_start()[len..].trim().to_string())),
            None => {
                if let Some(last) = lines.last_mut()
                    && !line.trim().is_empty()
                {
                    last.1.push('\n');
                    last.1.push_str(line.trim());
                }
            }
        }
    }
    flush(&mut lines, &mut out);
    out.retain(|e| !e.char.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_card_is_built_in_and_other_missing_cards_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join(DEFAULT_CARD);
        assert!(is_absent_default(&default));
        let card = load_card(&default).unwrap();
        assert_eq!(card.name, "Mika");
        let other = dir.path().join("personas/luna.toml");
        assert!(!is_absent_default(&other));
        let e = load_card(&other).unwrap_err().to_string();
        assert!(e.contains("luna.toml") && e.contains("--persona"), "{e}");
    }

    #[test]
    fn cards_past_the_size_bounds_are_refused_before_they_are_read_whole() {
        // A reader that declares nothing about its size is read only to the bound plus one byte.
        let endless = std::io::repeat(b' ');
        let e = read_bounded(endless, 1 << 20, "the card file").unwrap_err();
        assert!(e.contains("larger than 1 MiB"), "{e}");
        assert_eq!(read_bounded(&b"{}"[..], 2, "x").unwrap(), b"{}");

        // A PNG whose `chara` chunk decodes past the card text bound.
        let chunk = |kind: &[u8; 4], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&crc32(&c[4..]).to_be_bytes());
            c
        };
        let mut text = b"chara\0".to_vec();
        text.resize(text.len() + (MAX_CARD_TEXT / 3 + 2) * 4, b'A');
        let mut png = PNG_SIGNATURE.to_vec();
        png.extend(chunk(b"tEXt", &text));
        png.extend(chunk(b"IEND", b""));
        let e = card_from_png(&png, Path::new("big.png"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("big.png") && e.contains("larger than 8 MiB"),
            "{e}"
        );

        // A card file past the bound is refused by load_card without reading it all.
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_CARD_TEXT + 1]).unwrap();
        let e = load_card(&big).unwrap_err().to_string();
        assert!(e.contains("big.json") && e.contains("larger than"), "{e}");
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn mes_example_blocks() {
        let ex = parse_mes_example(
            "<START>\n{{user}}: Hi\n{{char}}: Hello!\nHow are you?\n<START>\nMika: Just me.\n",
            "Mika",
        );
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].user, "Hi");
        assert_eq!(ex[0].char, "Hello!\nHow are you?");
        assert_eq!(ex[1].user, "");
        assert_eq!(ex[1].char, "Just me.");
    }

    #[test]
    fn tag_sanitizing() {
        assert_eq!(sanitize_tag("Very Happy"), "very_happy");
        assert_eq!(sanitize_tag("123"), "");
    }
}
