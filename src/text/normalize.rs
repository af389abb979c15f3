//! Text normalization: what streamers and chats type → words a phonemizer can read.
//!
//! Algorithm. The text is cut at whitespace into chunks. From each chunk, opening brackets and quotes
//! are peeled off the front and a run of punctuation off the back; the core left in between is read by
//! the first rule that fits:
//! - a URL (`http(s)://`, `www.`, or `name.tld/...` with a common top-level domain) is read as its host
//!   (`twitch dot tv`); an e-mail address as `name at host dot com`;
//! - an abbreviation with its period (`Dr.`, `Mr.`, `Mrs.`, `Ms.`, `St.`, `vs.`, `etc.`, `e.g.`,
//!   `i.e.`, `Jr.`, `No.` before a number, ...) is spelled out; `St.` is *Saint* before a capitalized
//!   name and *Street* otherwise;
//! - money (`$5`, `$20.50`, `£3`, `€1.5k`), percentages (`50%`), times (`10:30`, `7:05pm`), ordinals
//!   (`3rd`), years (a bare 1100–2099), grouped and plain cardinals (`2,500`), decimals (`3.14` →
//!   *three point one four*), signed numbers, `#1` (*number one*), hashtags and `@mentions`;
//! - an ALL-CAPS word is lowercased when it reads as a word (four letters or more with a vowel, or a
//!   common short word like `OK`, `YES`) and spelled letter by letter otherwise (`GG` → *gee gee*);
//! - chat shorthand is expanded (`thx` → *thanks*, `idk` → *I don't know*, a lone `u` → *you*);
//! - digit groups joined by dashes: an ISO date (`2024-03-15`) reads as a date, two short numbers as a
//!   range (`10-20` → *ten to twenty*), anything else (phone numbers) digit by digit, group by group;
//! - letters and digits glued together are split (`1v1` → *one v one*); the symbols `& @ + = / % #`
//!   inside a chunk become words; emoji are named when common (❤ → *heart*) and dropped otherwise.
//!
//! The trailing punctuation run keeps what shapes prosody, collapsed to one mark: any `?` wins
//! (`?!?` → `?`), then `!`, then an ellipsis (`...` → `…`), then the first of `, ; : .`. Quotes and
//! brackets are dropped; a free-standing dash becomes `—`. Whitespace is collapsed. The result is
//! idempotent: normalizing normalized text changes nothing.

use super::numbers::{MONTHS, cardinal, digits, is_year, ordinal, year};

/// Normalizes one piece of text (a sentence, a clause or a whole reply).
pub fn normalize(text: &str) -> String {
    let chunks: Vec<&str> = text.split_whitespace().collect();
    let mut out = String::with_capacity(text.len() + 16);
    for (i, chunk) in chunks.iter().enumerate() {
        let prev = if i > 0 { Some(chunks[i - 1]) } else { None };
        let next = chunks.get(i + 1).copied();
        let piece = chunk_words(chunk, prev, next);
        push_piece(&mut out, &piece);
    }
    out
}

/// Where each written word's speech begins among the spoken words: for each whitespace-separated
/// chunk of `text`, how many words the voice speaks before it once the text is normalized (a voice
/// speaks [`normalize`]`(text)`, where `42` is two words, `$5` two and `—` none), and the total last
/// (so the result has one more entry than `text` has chunks). Spoken words are counted as the
/// phonemizer splits them: runs of letters and digits, an apostrophe between letters joining.
pub fn spoken_word_offsets(text: &str) -> Vec<usize> {
    let chunks: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::with_capacity(chunks.len() + 1);
    let mut n = 0usize;
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(n);
        let prev = if i > 0 { Some(chunks[i - 1]) } else { None };
        n += spoken_word_count(&chunk_words(chunk, prev, chunks.get(i + 1).copied()));
    }
    out.push(n);
    out
}

/// Where a cue written before word `before_word` (whitespace-separated, 0-based) of `text`, at
/// byte `at` of it, falls in the speech of `text`, given the words the voice spoke (`words`, stamped
/// as the speech is) and the speech's end: the start of the spoken word it precedes, or the speech's
/// last sample when it follows the last word. When every spoken word knows its place in the text
/// ([`crate::speech::Word::src`]: the voice was given `text` itself, as Kokoro is), the word is the
/// first one starting at or after `at`; otherwise (the voice spoke the normalized text, where `42` is
/// two words) it is found by counting spoken words ([`spoken_word_offsets`]). Every speaking path
/// (live, `idol say`, scripts) places cues with this, through [`crate::text::place_cues`].
pub fn cue_sample(
    text: &str,
    before_word: usize,
    at: usize,
    words: &[crate::time::Timed<crate::speech::Word>],
    end: crate::time::SampleTime,
) -> crate::time::SampleTime {
    let last = crate::time::SampleTime(end.get().saturating_sub(1));
    if !words.is_empty() && words.iter().all(|w| w.value.src.is_some()) {
        return words
            .iter()
            .find(|w| w.value.src.as_ref().is_some_and(|r| r.start >= at))
            .map_or(last, |w| w.start());
    }
    let offsets = spoken_word_offsets(text);
    let w = offsets[before_word.min(offsets.len() - 1)];
    words.get(w).map_or(last, |w| w.start())
}

/// The number of whitespace-separated words of `text` before byte `at` (a cue's position).
pub fn words_before(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text[..at].split_whitespace().count()
}

/// Runs of letters and digits (an apostrophe between two letters or digits stays inside the run).
fn spoken_word_count(s: &str) -> usize {
    let c: Vec<char> = s.chars().collect();
    let mut n = 0;
    let mut inside = false;
    for (i, ch) in c.iter().enumerate() {
        let joins =
            matches!(ch, '\'' | '’') && inside && c.get(i + 1).is_some_and(|x| x.is_alphanumeric());
        if ch.is_alphanumeric() || joins {
            if !inside {
                n += 1;
            }
            inside = true;
        } else {
            inside = false;
        }
    }
    n
}

/// Appends a normalized piece, with a space before words and none before punctuation.
fn push_piece(out: &mut String, piece: &str) {
    for part in piece.split(' ').filter(|s| !s.is_empty()) {
        let is_punct = part.chars().all(is_kept_punct);
        if !out.is_empty() && !is_punct {
            out.push(' ');
        }
        if is_punct && (out.is_empty() || out.ends_with(is_kept_punct)) {
            // No leading punctuation, and never two marks in a row.
            if part == "—" && !out.is_empty() && !out.ends_with('—') {
                out.push(' ');
                out.push('—');
            }
            continue;
        }
        if part == "—" {
            out.push(' ');
        }
        out.push_str(part);
    }
}

fn is_kept_punct(c: char) -> bool {
    matches!(c, ',' | '.' | '!' | '?' | ';' | ':' | '…' | '—')
}

fn is_trailing_punct(c: char) -> bool {
    matches!(
        c,
        ',' | '.' | '!' | '?' | ';' | ':' | '…' | '"' | '\'' | '’' | '”' | ')' | ']' | '}' | '»'
    )
}

fn is_leading_punct(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '‘' | '“' | '(' | '[' | '{' | '«' | '¿' | '¡'
    )
}

/// Collapses a trailing punctuation run to the one mark that shapes prosody.
fn collapse_punct(run: &str) -> &'static str {
    if run.contains('?') {
        "?"
    } else if run.contains('!') {
        "!"
    } else if run.contains('…') || run.contains("..") {
        "…"
    } else {
        for c in run.chars() {
            match c {
                ',' => return ",",
                ';' => return ";",
                ':' => return ":",
                '.' => return ".",
                _ => {}
            }
        }
        ""
    }
}

/// Abbreviations read the same everywhere (lowercase, without the period).
fn abbreviation(lower: &str) -> Option<&'static str> {
    Some(match lower {
        "dr" => "Doctor",
        "mr" => "Mister",
        "mrs" => "Missus",
        "ms" => "Miz",
        "prof" => "Professor",
        "jr" => "Junior",
        "sr" => "Senior",
        "vs" => "versus",
        "etc" => "et cetera",
        "e.g" => "for example",
        "i.e" => "that is",
        "approx" => "approximately",
        "mt" => "Mount",
        "ave" => "Avenue",
        "dept" => "department",
        "est" => "established",
        "min" => "minutes",
        "hrs" => "hours",
        "hr" => "hour",
        "sec" => "seconds",
        _ => return None,
    })
}

/// Titles that stand before a name: their period never ends a sentence.
pub(crate) fn is_title_abbreviation(lower_without_dot: &str) -> bool {
    matches!(
        lower_without_dot,
        "dr" | "mr" | "mrs" | "ms" | "prof" | "st" | "mt" | "vs" | "e.g" | "i.e" | "no" | "approx"
    )
}

fn starts_upper(s: Option<&str>) -> bool {
    s.and_then(|s| s.trim_start_matches(is_leading_punct).chars().next())
        .is_some_and(|c| c.is_uppercase())
}

fn starts_digit(s: Option<&str>) -> bool {
    s.and_then(|s| s.chars().next())
        .is_some_and(|c| c.is_ascii_digit() || c == '#')
}

/// The words for one whitespace-free chunk.
fn chunk_words(chunk: &str, prev: Option<&str>, next: Option<&str>) -> String {
    // Free-standing dashes and punctuation.
    if chunk.chars().all(|c| matches!(c, '-' | '—' | '–')) {
        return "—".into();
    }
    if let Some(url) = url_words(chunk) {
        return url;
    }
    let lead_end = chunk
        .char_indices()
        .find(|(_, c)| !is_leading_punct(*c))
        .map(|(i, _)| i)
        .unwrap_or(chunk.len());
    let body = &chunk[lead_end..];
    // Abbreviations keep their period inside the core.
    let lower = body.to_lowercase();
    let lower_trim = lower.trim_end_matches(|c: char| is_trailing_punct(c) && c != '.');
    for (abbr_len, _) in lower_trim.char_indices().rev().take(1) {
        let _ = abbr_len;
    }
    if let Some(stem) = lower_trim.strip_suffix('.') {
        let trail = &body[stem.len() + 1..];
        let sentence_end = next.is_none();
        let expanded: Option<String> = if stem == "st" {
            if starts_upper(next) && !starts_upper(prev) {
                Some("Saint".into())
            } else {
                Some("Street".into())
            }
        } else if stem == "no" && starts_digit(next) {
            Some("number".into())
        } else {
            abbreviation(stem).map(str::to_string)
        };
        if let Some(mut e) = expanded {
            let keep_dot = !is_title_abbreviation(stem) && (sentence_end || starts_upper(next))
                || (stem == "st" && e == "Street" && (sentence_end || starts_upper(next)));
            let p = collapse_punct(trail);
            if !p.is_empty() {
                e.push(' ');
                e.push_str(p);
            } else if keep_dot {
                e.push_str(" .");
            }
            return e;
        }
    }
    // Peel trailing punctuation.
    let core_end = body
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_trailing_punct(*c))
        .last()
        .map(|(i, _)| i)
        .unwrap_or(body.len());
    let (core, trail) = body.split_at(core_end);
    let mut words = core_words(core);
    let p = collapse_punct(trail);
    if !p.is_empty() {
        words.push(' ');
        words.push_str(p);
    }
    words
}

const TLDS: [&str; 16] = [
    "com", "net", "org", "tv", "gg", "io", "co", "uk", "de", "jp", "me", "dev", "app", "edu",
    "gov", "ly",
];

/// A URL read as its host, or an e-mail address.
fn url_words(chunk: &str) -> Option<String> {
    let trimmed = chunk.trim_end_matches(is_trailing_punct);
    let trail = &chunk[trimmed.len()..];
    let lower = trimmed.to_lowercase();
    let (rest, explicit) = if let Some(r) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    {
        (r, true)
    } else {
        (lower.as_str(), lower.starts_with("www."))
    };
    let host_end = rest.find(['/', '?', '#', ':']).unwrap_or(rest.len());
    let host = &rest[..host_end];
    if let Some((user, domain)) = host.split_once('@')
        && !explicit
    {
        if user.is_empty() || !domain.contains('.') {
            return None;
        }
        let mut out = format!("{} at {}", spell_host(user), spell_host(domain));
        push_trail(&mut out, trail);
        return Some(out);
    }
    let tld_ok = host.rsplit('.').next().is_some_and(|t| TLDS.contains(&t));
    let plausible = host.contains('.')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !(plausible && (explicit || tld_ok)) {
        return None;
    }
    let host = host.strip_prefix("www.").unwrap_or(host);
    let mut out = spell_host(host);
    push_trail(&mut out, trail);
    Some(out)
}

fn push_trail(out: &mut String, trail: &str) {
    let p = collapse_punct(trail);
    if !p.is_empty() {
        out.push(' ');
        out.push_str(p);
    }
}

fn spell_host(host: &str) -> String {
    let parts: Vec<String> = host
        .split(['.', '-', '_'])
        .filter(|s| !s.is_empty())
        .map(core_words)
        .collect();
    parts.join(" dot ")
}

/// Letter names as words the dictionary knows.
fn letter_name(c: char) -> &'static str {
    match c.to_ascii_lowercase() {
        'a' => "ay",
        'b' => "bee",
        'c' => "see",
        'd' => "dee",
        'e' => "ee",
        'f' => "ef",
        'g' => "gee",
        'h' => "aitch",
        'i' => "eye",
        'j' => "jay",
        'k' => "kay",
        'l' => "el",
        'm' => "em",
        'n' => "en",
        'o' => "oh",
        'p' => "pee",
        'q' => "cue",
        'r' => "ar",
        's' => "ess",
        't' => "tee",
        'u' => "you",
        'v' => "vee",
        'w' => "double you",
        'x' => "ex",
        'y' => "why",
        'z' => "zee",
        _ => "",
    }
}

/// Short all-caps words that are read as words, not spelled.
const CAPS_WORDS: &[&str] = &[
    "OK", "NO", "YES", "HI", "OH", "WOW", "THE", "AND", "BUT", "YOU", "ME", "MY", "WE", "IT", "IS",
    "TO", "DO", "GO", "SO", "ON", "IN", "AT", "OF", "OR", "AN", "BE", "HE", "UP", "ALL", "ARE",
    "FOR", "NOT", "NOW", "HOW", "WHO", "WHY", "OUT", "CAN", "GET", "GOT", "HAS", "HAD", "HER",
    "HIS", "LET", "LOL", "YAY", "BOO", "BYE", "HEY", "YEA", "OOF", "RIP", "WIN", "BIG", "BAD",
    "MAD", "SAD", "OMG", "ONE", "TWO", "TOO", "NEW",
];

fn caps_word(w: &str) -> String {
    let has_vowel = w.chars().any(|c| "AEIOUY".contains(c));
    if CAPS_WORDS.contains(&w) || (w.len() >= 4 && has_vowel) {
        w.to_lowercase()
    } else {
        w.chars().map(letter_name).collect::<Vec<_>>().join(" ")
    }
}

/// Chat shorthand read as what it stands for (whole words, any case).
fn chat_shorthand(w: &str) -> Option<&'static str> {
    Some(match w.to_ascii_lowercase().as_str() {
        "u" if w == "u" => "you",
        "ur" => "your",
        "pls" | "plz" => "please",
        "thx" | "thnx" => "thanks",
        "ty" => "thank you",
        "np" => "no problem",
        "idk" => "I don't know",
        "imo" => "in my opinion",
        "btw" => "by the way",
        "brb" => "be right back",
        "tbh" => "to be honest",
        "omg" => "oh my god",
        _ => return None,
    })
}

fn emoji_name(c: char) -> Option<&'static str> {
    Some(match c {
        '❤' | '♥' | '💕' | '💖' | '💗' | '💜' | '💙' | '💚' | '💛' | '🧡' | '🖤' => {
            "heart"
        }
        '👍' => "thumbs up",
        '👎' => "thumbs down",
        '👋' => "wave",
        '🎉' => "party",
        '🔥' => "fire",
        _ => return None,
    })
}

fn is_emoji(c: char) -> bool {
    let u = c as u32;
    (0x1F000..=0x1FAFF).contains(&u)
        || (0x2600..=0x27BF).contains(&u)
        || (0x2B00..=0x2BFF).contains(&u)
        || (0xFE00..=0xFE0F).contains(&u)
        || u == 0x200D
        || u == 0x20E3
        || (0xE0020..=0xE007F).contains(&u)
}

/// A parsed number: sign, integer digits (grouping removed), fractional digits.
struct Num<'a> {
    negative: bool,
    int: String,
    frac: Option<&'a str>,
    grouped: bool,
}

/// Parses `-2,500.75`-style numbers spanning the whole of `s`.
fn parse_number(s: &str) -> Option<Num<'_>> {
    let (negative, body) = match s.strip_prefix(['-', '−']) {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int_part, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if let Some(f) = frac
        && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let grouped = int_part.contains(',');
    if grouped {
        let groups: Vec<&str> = int_part.split(',').collect();
        let ok = !groups[0].is_empty()
            && groups[0].len() <= 3
            && groups[1..].iter().all(|g| g.len() == 3)
            && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return None;
        }
    } else if int_part.is_empty() && frac.is_none() || !int_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(Num {
        negative,
        int: int_part.replace(',', ""),
        frac,
        grouped,
    })
}

fn int_words(digits_str: &str) -> String {
    if digits_str.is_empty() {
        return "zero".into();
    }
    if digits_str.len() > 1 && digits_str.starts_with('0') {
        return digits(digits_str);
    }
    match digits_str.parse::<u64>() {
        Ok(n) => cardinal(n),
        Err(_) => digits(digits_str),
    }
}

fn number_words(n: &Num<'_>, allow_year: bool) -> String {
    let mut out = String::new();
    if n.negative {
        out.push_str("minus ");
    }
    let v = n.int.parse::<u64>().ok();
    match v {
        Some(v)
            if allow_year && !n.grouped && n.frac.is_none() && n.int.len() == 4 && is_year(v) =>
        {
            out.push_str(&year(v))
        }
        _ => out.push_str(&int_words(&n.int)),
    }
    if let Some(f) = n.frac {
        out.push_str(" point ");
        out.push_str(&digits(f));
    }
    out
}

fn scale_suffix(c: &str) -> Option<&'static str> {
    match c {
        "k" | "K" => Some("thousand"),
        "m" | "M" => Some("million"),
        "b" | "B" | "bn" => Some("billion"),
        _ => None,
    }
}

fn money_words(amount: &str, unit: (&str, &str), cents: (&str, &str)) -> Option<String> {
    let (num_part, scale) = match amount.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&amount[..i], Some(scale_suffix(&amount[i..])?)),
        None => (amount, None),
    };
    let n = parse_number(num_part)?;
    if n.negative {
        return None;
    }
    let plural = |count_is_one: bool, (one, many): (&str, &str)| {
        if count_is_one {
            one.to_string()
        } else {
            many.to_string()
        }
    };
    if let Some(scale) = scale {
        return Some(format!(
            "{} {scale} {}",
            number_words(&n, false),
            plural(false, unit)
        ));
    }
    let whole = int_words(&n.int);
    match n.frac {
        Some(f) if f.len() == 2 => {
            let c: u64 = f.parse().ok()?;
            let mut s = String::new();
            if !n.int.trim_start_matches('0').is_empty() || c == 0 {
                s = format!("{whole} {}", plural(n.int == "1", unit));
            }
            if c > 0 {
                if !s.is_empty() {
                    s.push_str(" and ");
                }
                s.push_str(&format!("{} {}", cardinal(c), plural(c == 1, cents)));
            }
            Some(s)
        }
        Some(_) => Some(format!(
            "{} {}",
            number_words(&n, false),
            plural(false, unit)
        )),
        None => Some(format!("{whole} {}", plural(n.int == "1", unit))),
    }
}

fn time_words(core: &str) -> Option<String> {
    let lower = core.to_lowercase();
    let (clock, suffix) = if let Some(c) = lower
        .strip_suffix("am")
        .or_else(|| lower.strip_suffix("a.m"))
    {
        (c, Some("a m"))
    } else if let Some(c) = lower
        .strip_suffix("pm")
        .or_else(|| lower.strip_suffix("p.m"))
    {
        (c, Some("p m"))
    } else {
        (lower.as_str(), None)
    };
    // "7pm": an hour alone, only with a suffix.
    let (h, m) = match clock.split_once(':') {
        Some(hm) => hm,
        None if suffix.is_some() => (clock.trim_end(), "00"),
        None => return None,
    };
    if h.is_empty() || h.len() > 2 || m.len() != 2 || !h.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: u64 = h.parse().ok()?;
    let m: u64 = m.parse().ok()?;
    if h > 24 || m > 59 {
        return None;
    }
    let mut s = cardinal(h);
    if m == 0 {
        if suffix.is_none() {
            s.push_str(" o'clock");
        }
    } else if m < 10 {
        s.push_str(" oh ");
        s.push_str(&cardinal(m));
    } else {
        s.push(' ');
        s.push_str(&cardinal(m));
    }
    if let Some(x) = suffix {
        s.push(' ');
        s.push_str(x);
    }
    Some(s)
}

fn ordinal_words(core: &str) -> Option<String> {
    let lower = core.to_lowercase();
    let digits_end = lower.find(|c: char| !c.is_ascii_digit())?;
    if digits_end == 0 {
        return None;
    }
    let (d, suf) = lower.split_at(digits_end);
    let n: u64 = d.parse().ok()?;
    let expect = match (n % 100, n % 10) {
        (11..=13, _) => "th",
        (_, 1) => "st",
        (_, 2) => "nd",
        (_, 3) => "rd",
        _ => "th",
    };
    (suf == expect).then(|| ordinal(n))
}

/// Digit groups joined by dashes: an ISO date (`2024-03-15` → *March fifteenth twenty twenty four*),
/// a range of two short numbers (`10-20` → *ten to twenty*), and anything else, such as a phone
/// number (`555-123-4567`), digit by digit with a pause between the groups.
fn dashed_digits(core: &str) -> Option<String> {
    let groups: Vec<&str> = core.split(['-', '–']).collect();
    if groups.len() < 2
        || groups
            .iter()
            .any(|g| g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let value = |g: &str| g.parse::<u64>().ok();
    if let [y, m, d] = groups[..]
        && (y.len(), m.len(), d.len()) == (4, 2, 2)
        && let (Some(y), Some(m), Some(d)) = (value(y), value(m), value(d))
        && (1..=12).contains(&m)
        && (1..=31).contains(&d)
    {
        let y = if is_year(y) { year(y) } else { cardinal(y) };
        return Some(format!("{} {} {y}", MONTHS[m as usize - 1], ordinal(d)));
    }
    let leading_zero = groups.iter().any(|g| g.len() > 1 && g.starts_with('0'));
    let total: usize = groups.iter().map(|g| g.len()).sum();
    let both_years = groups.len() == 2
        && groups
            .iter()
            .all(|g| g.len() == 4 && value(g).is_some_and(is_year));
    if let [a, b] = groups[..]
        && !leading_zero
        && a.len() <= 4
        && b.len() <= 4
        && (total < 7 || both_years)
    {
        return Some(format!("{} to {}", int_or_year(a), int_or_year(b)));
    }
    Some(
        groups
            .iter()
            .map(|g| digits(g))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

fn int_or_year(g: &str) -> String {
    match g.parse::<u64>() {
        Ok(v) if g.len() == 4 && is_year(v) => year(v),
        _ => int_words(g),
    }
}

/// The words for a chunk core (no leading or trailing punctuation).
fn core_words(core: &str) -> String {
    if core.is_empty() {
        return String::new();
    }
    // Money.
    for (sym, unit, cents) in [
        ('$', ("dollar", "dollars"), ("cent", "cents")),
        ('£', ("pound", "pounds"), ("penny", "pence")),
        ('€', ("euro", "euros"), ("cent", "cents")),
        ('¥', ("yen", "yen"), ("sen", "sen")),
    ] {
        if let Some(amount) = core.strip_prefix(sym)
            && let Some(w) = money_words(amount, unit, cents)
        {
            return w;
        }
        if let Some(amount) = core.strip_prefix('-').and_then(|c| c.strip_prefix(sym))
            && let Some(w) = money_words(amount, unit, cents)
        {
            return format!("minus {w}");
        }
    }
    if let Some(p) = core.strip_suffix('%')
        && let Some(n) = parse_number(p)
    {
        return format!("{} percent", number_words(&n, false));
    }
    if let Some(t) = time_words(core) {
        return t;
    }
    if let Some(o) = ordinal_words(core) {
        return o;
    }
    if let Some(n) = parse_number(core) {
        return number_words(&n, true);
    }
    if let Some(w) = dashed_digits(core) {
        return w;
    }
    if let Some(rest) = core.strip_prefix('#') {
        if let Some(n) = parse_number(rest) {
            return format!("number {}", number_words(&n, false));
        }
        if !rest.is_empty() {
            return format!("hashtag {}", core_words(rest));
        }
    }
    if let Some(rest) = core.strip_prefix('@')
        && !rest.is_empty()
    {
        return format!("at {}", core_words(rest));
    }
    // Numbers with a scale suffix: 5k, 2.5M.
    if let Some(i) = core.find(|c: char| c.is_ascii_alphabetic())
        && i > 0
        && let Some(scale) = scale_suffix(&core[i..])
        && let Some(n) = parse_number(&core[..i])
    {
        return format!("{} {scale}", number_words(&n, false));
    }
    // Split into runs: letters (with inner apostrophes), digits (with inner , . :), symbols.
    let mut out: Vec<String> = Vec::new();
    let chars: Vec<char> = core.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphabetic()
                    || matches!(chars[i], '\'' | '’')
                        && chars.get(i + 1).is_some_and(|n| n.is_alphabetic()))
            {
                i += 1;
            }
            let w: String = chars[start..i].iter().collect();
            let w = w.replace('’', "'");
            if let Some(e) = chat_shorthand(&w) {
                out.push(e.to_string());
            } else if w.len() >= 2 && w.chars().all(|c| c.is_ascii_uppercase()) {
                out.push(caps_word(&w));
            } else {
                out.push(w);
            }
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || matches!(chars[i], ',' | '.' | ':')
                        && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit()))
            {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            if let Some(t) = time_words(&s) {
                out.push(t);
            } else if let Some(n) = parse_number(&s) {
                out.push(number_words(&n, true));
            } else {
                out.push(digits(&s));
            }
        } else {
            let w = match c {
                '&' => "and",
                '@' => "at",
                '+' => "plus",
                '=' => "equals",
                '%' => "percent",
                '#' => "number",
                '/' => "slash",
                '×' => "times",
                '°' => "degrees",
                _ => emoji_name(c).unwrap_or(""),
            };
            if !w.is_empty() {
                out.push(w.to_string());
            } else if !is_emoji(c) && matches!(c, ',' | ';' | ':' | '!' | '?') {
                // Inner punctuation glued between words ("yes,no") is a pause.
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoken_word_offsets_follow_the_normalized_words() {
        // 42 → forty two; a contraction is one word; a dash is none; $5 → five dollars.
        assert_eq!(spoken_word_offsets("I have 42 cats"), [0, 1, 2, 4, 5]);
        assert_eq!(spoken_word_offsets("don't stop — ever"), [0, 1, 2, 2, 3]);
        assert_eq!(spoken_word_offsets("Dr. Lee has $5."), [0, 1, 2, 3, 5]);
        assert_eq!(spoken_word_offsets(""), [0]);
        for t in [
            "I have 42 cats",
            "It is 9:30 on May 5th, 2024!",
            "well-known A.I. stuff",
        ] {
            let total = *spoken_word_offsets(t).last().unwrap();
            assert_eq!(total, spoken_word_count(&normalize(t)), "{t}");
        }
    }

    #[track_caller]
    fn n(input: &str, expected: &str) {
        assert_eq!(normalize(input), expected, "normalizing {input:?}");
        assert_eq!(normalize(expected), expected, "idempotence of {expected:?}");
    }

    #[test]
    fn cardinals_and_grouping() {
        n("2,500 viewers", "two thousand five hundred viewers");
        n("We hit 100 subs!", "We hit one hundred subs!");
        n("1,000,000", "one million");
        n("-5 degrees", "minus five degrees");
        n("007", "zero zero seven");
    }

    #[test]
    fn ordinals() {
        n("3rd place", "third place");
        n("the 21st and 22nd", "the twenty first and twenty second");
        n("11th", "eleventh");
    }

    #[test]
    fn years() {
        n("in 1999", "in nineteen ninety nine");
        n("since 2024.", "since twenty twenty four.");
        n("2005", "two thousand five");
    }

    #[test]
    fn dashed_digit_groups() {
        // A phone number is read digit by digit, group by group, not as three cardinals.
        n(
            "Call 555-123-4567.",
            "Call five five five, one two three, four five six seven.",
        );
        n("0800-123", "zero eight zero zero, one two three");
        n("555-1234", "five five five, one two three four");
        // An ISO date reads as a date.
        n("on 2024-03-15", "on March fifteenth twenty twenty four");
        n("1999-12-31", "December thirty first nineteen ninety nine");
        // A month 13 is no date: digit groups.
        n("2024-13-01", "two zero two four, one three, zero one");
        // Two short numbers are a range.
        n("pages 10-20", "pages ten to twenty");
        n("1990–1995", "nineteen ninety to nineteen ninety five");
        // A negative number still reads as one.
        n("-5", "minus five");
    }

    #[test]
    fn decimals() {
        n("3.14", "three point one four");
        n("0.5", "zero point five");
    }

    #[test]
    fn money() {
        n("$5", "five dollars");
        n("$1", "one dollar");
        n("$20.50", "twenty dollars and fifty cents");
        n("$0.99", "ninety nine cents");
        n("£3", "three pounds");
        n("$2.5k", "two point five thousand dollars");
    }

    #[test]
    fn percent() {
        n("50%", "fifty percent");
        n("12.5% off", "twelve point five percent off");
    }

    #[test]
    fn times() {
        n("10:30", "ten thirty");
        n("at 7:30", "at seven thirty");
        n("7:05pm", "seven oh five p m");
        n("9:00", "nine o'clock");
    }

    #[test]
    fn abbreviations() {
        n("Dr. Smith", "Doctor Smith");
        n("Mr. and Mrs. Jones", "Mister and Missus Jones");
        n("St. Louis", "Saint Louis");
        n("on Main St.", "on Main Street.");
        n("cats vs. dogs", "cats versus dogs");
        n("snacks, drinks, etc.", "snacks, drinks, et cetera.");
        n("e.g. this", "for example this");
        n("No. 5", "number five");
    }

    #[test]
    fn symbols() {
        n("you & me", "you and me");
        n("rock&roll", "rock and roll");
        n("A+B", "A plus B");
        n("@kira hi", "at kira hi");
        n("#1 fan", "number one fan");
        n("#vtuber", "hashtag vtuber");
    }

    #[test]
    fn urls_and_emails() {
        n(
            "go to https://www.twitch.tv/idol now",
            "go to twitch dot tv now",
        );
        n("see example.com.", "see example dot com.");
        n("mail me@host.org", "mail me at host dot org");
    }

    #[test]
    fn emoji() {
        n("love you ❤️", "love you heart");
        n("lol 😂😂", "lol");
        n("nice 👍", "nice thumbs up");
    }

    #[test]
    fn repeated_punctuation() {
        n("What!!!", "What!");
        n("really?!?", "really?");
        n("hmm...", "hmm…");
        n("wait,, what", "wait, what");
        n("so - anyway", "so — anyway");
    }

    #[test]
    fn all_caps() {
        n("this is AMAZING", "this is amazing");
        n("GG everyone", "gee gee everyone");
        n("OK then", "ok then");
        n("the TTS voice", "the tee tee ess voice");
    }

    #[test]
    fn prosody_punctuation_kept() {
        n("Hello, world! How are you?", "Hello, world! How are you?");
        n("\"Quoted\" (aside)", "Quoted aside");
        n("first; second: third", "first; second: third");
    }

    #[test]
    fn chat_shorthand() {
        n("thx for the raid, u rock", "thanks for the raid, you rock");
        n("brb pls wait", "be right back please wait");
        n("IDK", "I don't know");
    }

    #[test]
    fn hours_with_suffix() {
        n("at 7pm", "at seven p m");
        n("10am!", "ten a m!");
    }

    #[test]
    fn mixed_letters_and_digits() {
        n("1v1 me", "one v one me");
        n("5k followers", "five thousand followers");
    }
}
