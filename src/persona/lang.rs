//! Which language a text is in, by its script, and which languages a reply may be in. Input: text;
//! the model's and the voices' language lists. Output: a language code (`en`, `zh`, `ja`, `ko`, `ru`)
//! and the policy for one reply ([`LanguagePolicy::target`]).
//!
//! Detection is by script, which is what a voice cares about: kana means Japanese, Han without kana
//! Chinese, Hangul Korean, Cyrillic Russian, Latin letters the configured Latin language (English by
//! default; a script cannot tell English from French). Codes are ISO 639-1; a voice's `en_US` or a
//! model table's `zh-CN` compare by their first part ([`base`]). Pure; no threads.

/// The writing systems detection tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Script {
    Latin,
    Han,
    Kana,
    Hangul,
    Cyrillic,
}

/// The script of one character, if it is a letter of a script we know.
pub fn script_of(c: char) -> Option<Script> {
    match c {
        'a'..='z' | 'A'..='Z' | '\u{00C0}'..='\u{024F}' => Some(Script::Latin),
        '\u{3040}'..='\u{30FF}' | '\u{31F0}'..='\u{31FF}' | '\u{FF66}'..='\u{FF9F}' => {
            Some(Script::Kana)
        }
        '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}' => {
            Some(Script::Han)
        }
        '\u{AC00}'..='\u{D7AF}' | '\u{1100}'..='\u{11FF}' | '\u{3130}'..='\u{318F}' => {
            Some(Script::Hangul)
        }
        '\u{0400}'..='\u{04FF}' => Some(Script::Cyrillic),
        _ => None,
    }
}

/// Letters per script in `text`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptCounts {
    pub latin: usize,
    pub han: usize,
    pub kana: usize,
    pub hangul: usize,
    pub cyrillic: usize,
}

impl ScriptCounts {
    pub fn of(text: &str) -> Self {
        let mut n = ScriptCounts::default();
        for c in text.chars() {
            match script_of(c) {
                Some(Script::Latin) => n.latin += 1,
                Some(Script::Han) => n.han += 1,
                Some(Script::Kana) => n.kana += 1,
                Some(Script::Hangul) => n.hangul += 1,
                Some(Script::Cyrillic) => n.cyrillic += 1,
                None => {}
            }
        }
        n
    }

    /// Letters of East Asian scripts (each one is about a word's worth of speech, or half of one).
    pub fn cjk(&self) -> usize {
        self.han + self.kana + self.hangul
    }
}

/// The language of `text` by its script (see the module docs); `None` without letters. A CJK
/// character counts as much as three Latin letters (about one word against a short word).
pub fn detect(text: &str) -> Option<&'static str> {
    let n = ScriptCounts::of(text);
    let cjk = n.cjk() * 3;
    if cjk == 0 && n.latin == 0 && n.cyrillic == 0 {
        return None;
    }
    if cjk >= n.latin.max(n.cyrillic) {
        return Some(if n.kana > 0 {
            "ja"
        } else if n.hangul > n.han {
            "ko"
        } else {
            "zh"
        });
    }
    Some(if n.cyrillic > n.latin { "ru" } else { "en" })
}

/// The language part of a code: `en_US` → `en`, `zh-CN` → `zh`, lowercased.
pub fn base(code: &str) -> String {
    code.split(['_', '-'])
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The English name of a language code, for prompts and reports (the code itself when unknown).
pub fn name(code: &str) -> String {
    match base(code).as_str() {
        "en" => "English",
        "zh" => "Chinese",
        "ja" => "Japanese",
        "ko" => "Korean",
        "ru" => "Russian",
        "fr" => "French",
        "de" => "German",
        "es" => "Spanish",
        "it" => "Italian",
        "pt" => "Portuguese",
        _ => return code.to_string(),
    }
    .to_string()
}

/// Whether `text` reads as language `lang` (by script): Japanese needs kana, Chinese Han without
/// kana, Korean Hangul, and a Latin-script language mostly Latin letters and no CJK.
pub fn reads_as(text: &str, lang: &str) -> bool {
    let n = ScriptCounts::of(text);
    match base(lang).as_str() {
        "ja" => n.kana > 0,
        "zh" => n.han > 0 && n.kana == 0 && n.han * 3 >= n.latin,
        "ko" => n.hangul > 0,
        "ru" | "uk" | "bg" => n.cyrillic > 0 && n.cyrillic >= n.latin,
        _ => n.cjk() == 0 && n.cyrillic <= n.latin,
    }
}

/// Which languages a reply may be in: those the model writes *and* a voice speaks, in the voices'
/// order; the first is the fallback for a viewer whose language is not among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguagePolicy {
    /// Base codes, fallback first. Never empty.
    pub spoken: Vec<String>,
}

impl Default for LanguagePolicy {
    fn default() -> Self {
        LanguagePolicy {
            spoken: vec!["en".into()],
        }
    }
}

impl LanguagePolicy {
    /// `model`: the languages the model writes (empty: unknown, taken as any). `voices`: the
    /// languages the configured voices speak (empty: unknown, taken as English).
    pub fn new(model: &[String], voices: &[String]) -> Self {
        let voices: Vec<String> = if voices.is_empty() {
            vec!["en".into()]
        } else {
            voices.iter().map(|v| base(v)).collect()
        };
        let model: Vec<String> = model.iter().map(|m| base(m)).collect();
        let mut spoken: Vec<String> = vec![];
        for v in &voices {
            if (model.is_empty() || model.contains(v)) && !spoken.contains(v) {
                spoken.push(v.clone());
            }
        }
        if spoken.is_empty() {
            // The model writes none of the voices' languages: the voice's first is still the one
            // that can be heard.
            spoken.push(voices[0].clone());
        }
        LanguagePolicy { spoken }
    }

    /// The language to answer `message` in: its own when it is spoken, else the fallback.
    pub fn target(&self, message: &str) -> &str {
        match detect(message) {
            Some(l) if self.spoken.iter().any(|s| s == l) => self
                .spoken
                .iter()
                .find(|s| *s == l)
                .map(String::as_str)
                .unwrap_or("en"),
            _ => &self.spoken[0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_script() {
        assert_eq!(detect("Hi there!"), Some("en"));
        assert_eq!(detect("你喜欢吃火锅吗？"), Some("zh"));
        assert_eq!(detect("今日は何のゲームをするの？"), Some("ja"));
        assert_eq!(detect("안녕하세요"), Some("ko"));
        assert_eq!(detect("Привет"), Some("ru"));
        assert_eq!(detect("Mika你好"), Some("zh"));
        assert_eq!(detect("123 !!"), None);
        assert!(reads_as("[happy] 对，我最喜欢吃火锅！", "zh"));
        assert!(!reads_as("[happy] Hot pot is great!", "zh"));
        assert!(reads_as("[happy] Hot pot is great!", "en"));
        assert!(!reads_as("はい、そうです", "en"));
        assert_eq!(base("en_US"), "en");
    }

    #[test]
    fn policy_needs_model_and_voice() {
        let p = LanguagePolicy::new(&["en".into()], &["en_US".into()]);
        assert_eq!(p.target("你好"), "en");
        let p = LanguagePolicy::new(&["en".into(), "zh".into(), "ja".into()], &["en_US".into()]);
        assert_eq!(p.spoken, ["en"]);
        assert_eq!(p.target("你好"), "en");
        let p = LanguagePolicy::new(
            &["en".into(), "zh".into()],
            &["en_US".into(), "zh_CN".into()],
        );
        assert_eq!(p.target("你好"), "zh");
        assert_eq!(p.target("こんにちは"), "en");
        assert_eq!(p.target("hello"), "en");
        let p = LanguagePolicy::new(&[], &[]);
        assert_eq!(p.spoken, ["en"]);
    }
}
