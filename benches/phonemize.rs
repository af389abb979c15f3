//! Phonemizer throughput: words per second of the CMUdict + GRU English phonemizer on running text
//! (mostly dictionary words) and on unknown words (all through the GRU), next to the reference tool,
//! `espeak-ng -q --ipa -v en-us`, phonemizing the same text in the same run (one process per batch,
//! so its start-up cost is included, as it is for a caller that shells out).
//!
//! Run: `nice cargo bench --bench phonemize`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idol::assets::Home;
use idol::phonemize::{EnglishPhonemizer, EspeakPhonemizer, Phonemize};
use std::hint::black_box;

fn running_text() -> String {
    let path = Home::from_manifest_dir().path("tests/data/dev_text.txt");
    std::fs::read_to_string(&path).expect("tests/data/dev_text.txt")
}

fn bench(c: &mut Criterion) {
    let p = EnglishPhonemizer::load(&Home::from_manifest_dir()).expect("run `idol fetch`");
    let text = running_text();
    let sentences: Vec<&str> = text
        .split_inclusive(['.', '!', '?'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let words = text.split_whitespace().count() as u64;

    let mut g = c.benchmark_group("phonemize");
    g.sample_size(20);
    g.throughput(Throughput::Elements(words));
    g.bench_function("idol_running_text", |b| {
        b.iter(|| {
            for s in &sentences {
                black_box(p.phonemize(black_box(s)).unwrap());
            }
        })
    });
    if let Ok(e) = EspeakPhonemizer::new("en-us") {
        g.bench_function("espeak_ng_running_text", |b| {
            b.iter(|| black_box(e.run(black_box(&text)).unwrap()))
        });
    }
    let oov = [
        "zorblaxia",
        "vtuber",
        "skibidi",
        "glorptastic",
        "mewtwoish",
        "kirbyesque",
        "yoinked",
        "pogchamp",
    ];
    g.throughput(Throughput::Elements(oov.len() as u64));
    g.bench_function("idol_gru_unknown_words", |b| {
        b.iter(|| {
            for w in oov {
                black_box(p.word_ipa(black_box(w)).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
