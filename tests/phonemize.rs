//! The English phonemizer on the real dictionary and G2P weights: agreement with stored espeak-ng
//! references, neural pronunciations for unknown words, a paragraph end to end, load errors.

use idol::assets::Home;
use idol::phonemize::{EnglishPhonemizer, EspeakPhonemizer, PhonToken, Phonemize, Source};
use std::sync::OnceLock;

fn phonemizer() -> &'static EnglishPhonemizer {
    static P: OnceLock<EnglishPhonemizer> = OnceLock::new();
    P.get_or_init(|| {
        EnglishPhonemizer::load(&crate::common::home())
            .expect("models/cmudict.dict and models/checkpoint20.npz (run `idol fetch`)")
    })
}

fn data(name: &str) -> String {
    let path = Home::from_manifest_dir().path("tests/data").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Word-level agreement of one sentence: (words identical to espeak-ng, words, mismatches).
///
/// espeak-ng sometimes writes two or three words as one (`ʌvðə` for *of the*), so our words are aligned
/// to its words by dynamic programming: one espeak word may stand for a group of up to three of ours
/// (matched when their concatenation is identical), or two espeak words for one of ours; otherwise
/// words pair one to one or are skipped. A word counts as agreeing when its group matched exactly.
fn agreement(ours: &[String], theirs: &[&str]) -> (usize, usize, Vec<(String, String)>) {
    let (n, m) = (ours.len(), theirs.len());
    // best[i][j]: most matched words aligning ours[..i] with theirs[..j]; back pointers rebuild pairs.
    let mut best = vec![vec![0usize; m + 1]; n + 1];
    let mut back = vec![vec![(0usize, 0usize, false); m + 1]; n + 1];
    for i in 0..=n {
        for j in 0..=m {
            if i == 0 && j == 0 {
                continue;
            }
            let mut cand: Vec<(usize, usize, usize, bool)> = Vec::new();
            if i > 0 {
                cand.push((best[i - 1][j], 1, 0, false));
            }
            if j > 0 {
                cand.push((best[i][j - 1], 0, 1, false));
            }
            for k in 1..=3.min(i) {
                if j > 0 {
                    let joined: String = ours[i - k..i].concat();
                    let ok = joined == theirs[j - 1];
                    if ok || k == 1 {
                        cand.push((best[i - k][j - 1] + if ok { k } else { 0 }, k, 1, ok));
                    }
                }
            }
            if i > 0 && j > 1 {
                let ok = ours[i - 1] == format!("{}{}", theirs[j - 2], theirs[j - 1]);
                if ok {
                    cand.push((best[i - 1][j - 2] + 1, 1, 2, true));
                }
            }
            let (s, di, dj, ok) = cand.into_iter().max_by_key(|c| c.0).expect("a move");
            best[i][j] = s;
            back[i][j] = (di, dj, ok);
        }
    }
    let mut mismatches = Vec::new();
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        let (di, dj, ok) = back[i][j];
        if !ok && di > 0 {
            let their = if dj > 0 {
                theirs[j - dj..j].join(" ")
            } else {
                "-".into()
            };
            mismatches.push((ours[i - di..i].join(" "), their));
        }
        i -= di;
        j -= dj;
    }
    mismatches.reverse();
    (best[n][m], n, mismatches)
}

struct Report {
    agree: usize,
    words: usize,
    lines: Vec<String>,
}

fn measure(refs: &str) -> Report {
    let p = phonemizer();
    let mut r = Report {
        agree: 0,
        words: 0,
        lines: Vec::new(),
    };
    for line in refs.lines().filter(|l| !l.trim().is_empty()) {
        let (sentence, ipa) = line.split_once('\t').expect("sentence TAB ipa");
        let toks = p.phonemize(sentence).expect("phonemizes");
        let ours: Vec<String> = toks
            .iter()
            .filter_map(|t| match t {
                PhonToken::Word { text, ipa } => Some(format!("{ipa}\u{1}{text}")),
                PhonToken::Punct(_) => None,
            })
            .collect();
        let ipas: Vec<String> = ours
            .iter()
            .map(|s| s.split('\u{1}').next().unwrap_or("").to_string())
            .collect();
        let theirs: Vec<&str> = ipa.split_whitespace().collect();
        let (a, n, mism) = agreement(&ipas, &theirs);
        r.agree += a;
        r.words += n;
        for (o, t) in mism {
            r.lines.push(format!("ours {o:<24} espeak {t}"));
        }
    }
    r
}

fn check_agreement(name: &str, refs_files: &[&str]) -> f64 {
    let refs: String = refs_files
        .iter()
        .map(|f| data(f))
        .collect::<Vec<_>>()
        .join("\n");
    let r = measure(&refs);
    let pct = 100.0 * r.agree as f64 / r.words as f64;
    println!(
        "{name}: {}/{} words identical to espeak-ng en-us ({pct:.1}%)",
        r.agree, r.words
    );
    if std::env::var_os("IDOL_SHOW_MISMATCHES").is_some() {
        for l in &r.lines {
            println!("  {l}");
        }
    }
    assert!(r.words >= 500, "{name} has only {} words", r.words);
    pct
}

#[test]
fn agreement_with_espeak_on_held_out_text() {
    let pct = check_agreement("held-out", &["heldout_refs.tsv"]);
    assert!(pct >= 95.0, "held-out agreement {pct:.1}% < 95%");
}

#[test]
fn agreement_with_espeak_on_dev_text() {
    let pct = check_agreement("dev", &["dev_refs.tsv", "dev2_refs.tsv", "dev3_refs.tsv"]);
    assert!(pct >= 95.0, "dev agreement {pct:.1}% < 95%");
}

#[test]
fn alignment_handles_joined_words() {
    let ours: Vec<String> = ["ʌv", "ðə", "kˈæt"].map(String::from).to_vec();
    let (a, n, m) = agreement(&ours, &["ʌvðə", "kˈæt"]);
    assert_eq!((a, n), (3, 3), "{m:?}");
    let (a, _, m) = agreement(&ours, &["ʌv", "ðɪ", "kˈæt"]);
    assert_eq!(a, 2);
    assert_eq!(m, vec![("ðə".to_string(), "ðɪ".to_string())]);
}

#[test]
fn unknown_words_come_from_the_neural_g2p() {
    let p = phonemizer();
    for word in ["zorblaxia", "vtuber", "skibidi", "glorptastic"] {
        assert!(p.dict().get(word).is_none(), "{word} is in the dictionary");
        let (ipa, source) = p.word_ipa(word).unwrap();
        assert_eq!(source, Source::Neural, "{word}");
        assert!(
            ipa.chars().count() >= 4 && ipa.contains('ˈ'),
            "{word} → {ipa:?}"
        );
        println!("{word} → {ipa}");
    }
    // Greedy decoding is deterministic.
    assert_eq!(
        p.word_ipa("zorblaxia").unwrap(),
        p.word_ipa("zorblaxia").unwrap()
    );
}

/// The candle port decodes exactly what the original g2p-en 2.1.0 numpy code decodes with the same
/// weights (references made by tests/data/make_g2p_refs.py).
#[test]
fn gru_matches_the_reference_g2p_en() {
    let refs = data("g2p_refs.tsv");
    let mut n = 0;
    for line in refs.lines().filter(|l| !l.is_empty()) {
        let (word, expected) = line.split_once('\t').unwrap();
        let got = phonemizer().g2p().predict(word).unwrap().join(" ");
        assert_eq!(got, expected, "{word}");
        n += 1;
    }
    assert!(n >= 30);
}

#[test]
fn sixty_word_paragraph_phonemizes() {
    let text = "Hello everyone, and welcome back to the stream! Today Zorblaxia, our favorite vtuber, \
        is joining us for a very special cooking challenge. We have 2,500 viewers already, which is \
        amazing. Dr. Smith will judge the results at 7:30, and the winner gets $20.50 and a tiny golden \
        spoon. Are you ready? Let's start chopping onions, carrots, and potatoes right now!";
    let words = text.split_whitespace().count();
    assert!(words >= 60, "{words} words");
    let toks = phonemizer().phonemize(text).unwrap();
    let n_words = toks
        .iter()
        .filter(|t| matches!(t, PhonToken::Word { .. }))
        .count();
    assert!(n_words >= 60, "{n_words} phonemized words");
    for t in &toks {
        if let PhonToken::Word { text, ipa } = t {
            assert!(!ipa.is_empty(), "{text} has no IPA");
            assert!(
                !ipa.contains('\u{200d}') && !ipa.contains('g'),
                "{text} → {ipa}"
            );
        }
    }
    let puncts: String = toks
        .iter()
        .filter_map(|t| match t {
            PhonToken::Punct(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(puncts, ",!,,.,.,.?,,!");
    let ipa = |w: &str| {
        toks.iter()
            .find_map(|t| match t {
                PhonToken::Word { text, ipa } if text == w => Some(ipa.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{w} missing"))
    };
    assert_eq!(ipa("Hello"), "həlˈoʊ");
    assert_eq!(ipa("thousand"), "θˈaʊzənd");
    assert_eq!(ipa("Doctor"), "dˈɑːktɚ");
}

#[test]
fn foreign_letters_are_folded_or_skipped() {
    let toks = phonemizer()
        .phonemize("A café — かわいい naïve idol…")
        .unwrap();
    let words: Vec<&str> = toks
        .iter()
        .filter_map(|t| match t {
            PhonToken::Word { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(words, ["A", "café", "naïve", "idol"]);
    assert!(toks.contains(&PhonToken::Punct(',')));
    assert_eq!(toks.last(), Some(&PhonToken::Punct('.')));
    assert!(phonemizer().phonemize("かわいい").is_err());
}

/// A written final é is /eɪ/: *résumé* takes CMUdict's third *resume*, not the verb; *resume* stays
/// the verb, and a word whose first pronunciation already ends in /eɪ/ (*café*) keeps it.
#[test]
fn final_e_acute_is_pronounced() {
    let ipa = |text: &str| -> Vec<String> {
        phonemizer()
            .phonemize(text)
            .unwrap()
            .into_iter()
            .filter_map(|t| match t {
                PhonToken::Word { ipa, .. } => Some(ipa),
                _ => None,
            })
            .collect()
    };
    let resume = ipa("Send your résumé, then resume work.");
    assert!(resume[2].ends_with("eɪ"), "{resume:?}");
    assert!(!resume[4].ends_with("eɪ"), "{resume:?}");
    assert!(ipa("a café")[1].ends_with("eɪ"));
}

#[test]
fn unspeakable_text_is_an_error() {
    assert!(phonemizer().phonemize("!!! ...").is_err());
    assert!(phonemizer().phonemize("").is_err());
}

#[test]
fn missing_files_name_the_path_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let err = EnglishPhonemizer::from_paths(
        &dir.path().join("nope.dict"),
        &crate::common::home().g2p_weights(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("nope.dict") && err.contains("idol fetch"),
        "{err}"
    );
    let bad = dir.path().join("bad.npz");
    std::fs::write(&bad, b"not a zip").unwrap();
    let err = idol::phonemize::G2p::load(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad.npz") && err.contains("idol fetch"),
        "{err}"
    );
}

#[test]
fn espeak_phonemizer_runs_or_fails_clearly() {
    match EspeakPhonemizer::new("en-us") {
        Ok(e) => {
            let toks = e.phonemize("Hello world, again.").unwrap();
            assert_eq!(
                toks[0],
                PhonToken::Word {
                    text: "Hello".into(),
                    ipa: "həlˈoʊ".into()
                }
            );
            assert!(toks.contains(&PhonToken::Punct(',')));
            let err = EspeakPhonemizer::new("xx-no-such-voice").unwrap_err();
            assert!(err.to_string().contains("xx-no-such-voice"), "{err}");
        }
        Err(err) => assert!(err.to_string().contains("espeak-ng"), "{err}"),
    }
    let err = EspeakPhonemizer::with_program("/nonexistent/espeak-ng", "en-us").unwrap_err();
    assert!(err.to_string().contains("install espeak-ng"), "{err}");
}

/// Every symbol the phonemizer writes has an id in the default Piper voice's `phoneme_id_map`, so the
/// voice never has to drop one.
#[test]
fn every_symbol_has_a_piper_id() {
    let home = crate::common::home();
    let config = home.voice().with_extension("onnx.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let map = json["phoneme_id_map"].as_object().expect("phoneme_id_map");
    let mut text = data("dev_text.txt");
    text.push_str(
        " Zorblaxia's vtuber button — 2,500 viewers… really?! $20.50 at 7:30, Dr. Smith.",
    );
    let mut missing = std::collections::BTreeSet::new();
    for sentence in text.split_inclusive(['.', '!', '?']) {
        let Ok(toks) = phonemizer().phonemize(sentence) else {
            continue;
        };
        for t in toks {
            let symbols: Vec<char> = match t {
                PhonToken::Word { ipa, .. } => ipa.chars().collect(),
                PhonToken::Punct(c) => vec![c],
            };
            for c in symbols {
                if !map.contains_key(&c.to_string()) {
                    missing.insert(c);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "symbols without a Piper id: {missing:?}"
    );
}
