//! A voice per language: [`Router`] splits each clause by script
//! ([`crate::phonemize::kokoro::split_scripts`]: kana → Japanese, Han → Japanese in a clause with
//! kana, else the configured reading, Latin → English; digits and marks stay with the span around
//! them), speaks each span with its language's voice, and joins them into one [`Speech`] at the
//! default voice's rate (the first voice's): spans from a voice at another rate are resampled
//! ([`crate::audio::resample()`]) and their timelines mapped onto the new length, so the phonemes still
//! cover the audio exactly. Adjacent spans for the same voice are spoken as one.
//!
//! Text: a voice that reads text as written ([`Synthesizer::reads_written_text`], Kokoro) gets its
//! span as written, and its words' places are shifted into the clause; the others (Piper) get the
//! span normalized ([`crate::text::normalize`]) and their words are placed by finding them in the span
//! ([`crate::phonemize::kokoro::place_words`]). The router itself reads written text.
//!
//! Head first: a clause in one span is spoken head first by its voice (resampled piece by piece); a
//! clause of several spans is spoken whole (the plan of a head needs every span's durations).

use super::{Synthesizer, TtsError, append, empty_speech};
use crate::phonemize::kokoro::{HanAs, place_words, split_scripts};
use crate::speech::{Speech, Word};
use crate::time::{SampleTime, TimeRange, Timed, Timeline};
use std::ops::Range;

pub use crate::phonemize::kokoro::Script as Lang;

/// Voices by language (see the module docs).
pub struct Router {
    voices: Vec<Box<dyn Synthesizer>>,
    routes: [(Lang, usize); 3],
    han: HanAs,
    rate: u32,
}

impl Router {
    /// `voices[0]` is the default voice (its rate is the output's); `routes` name the voice (an
    /// index into `voices`) of each script; `han` is how Han text without kana is read.
    pub fn new(voices: Vec<Box<dyn Synthesizer>>, routes: [(Lang, usize); 3], han: HanAs) -> Self {
        assert!(!voices.is_empty(), "a router needs a voice");
        let rate = voices[0].sample_rate();
        let n = voices.len();
        Router {
            voices,
            routes: routes.map(|(l, i)| (l, if i < n { i } else { 0 })),
            han,
            rate,
        }
    }

    fn voice_of(&self, lang: Lang) -> usize {
        self.routes
            .iter()
            .find(|(l, _)| *l == lang)
            .map_or(0, |(_, i)| *i)
    }

    /// The clause's spans: (voice, byte range), adjacent spans of one voice joined.
    pub fn spans(&self, clause: &str) -> Vec<(usize, Range<usize>)> {
        let mut out: Vec<(usize, Range<usize>)> = Vec::new();
        let mut at = 0;
        for (lang, span) in split_scripts(clause, self.han) {
            let v = self.voice_of(lang);
            let r = at..at + span.len();
            at = r.end;
            match out.last_mut() {
                Some((pv, pr)) if *pv == v => pr.end = r.end,
                _ => out.push((v, r)),
            }
        }
        out
    }

    /// What voice `v` is given for `span`, and whether its words' places index it.
    fn input(&self, v: usize, span: &str) -> (String, bool) {
        if self.voices[v].reads_written_text() {
            (span.to_string(), true)
        } else {
            (crate::text::normalize(span), false)
        }
    }

    /// Voice `v`'s speech of `clause[range]` at the router's rate, its words placed in the clause.
    fn finish(&self, speech: Speech, clause: &str, range: &Range<usize>, placed: bool) -> Speech {
        let mut s = place(speech, clause, range, placed);
        if s.sample_rate != self.rate {
            let len = out_len(s.pcm.len(), s.sample_rate, self.rate);
            s = to_rate(s, self.rate, len);
        }
        s
    }
}

/// Words placed in the clause: shifted by the span's start when the voice placed them in the span,
/// else found in the span.
fn place(mut speech: Speech, clause: &str, range: &Range<usize>, placed: bool) -> Speech {
    let rate = speech.words.rate();
    let items = std::mem::replace(&mut speech.words, Timeline::new(rate).expect("rate"));
    let items = items.into_items();
    let places: Vec<Option<Range<usize>>> = if placed {
        items
            .iter()
            .map(|w| {
                w.value
                    .src
                    .as_ref()
                    .map(|r| range.start + r.start..range.start + r.end)
            })
            .collect()
    } else {
        place_words(
            &clause[range.clone()],
            range.start,
            items.iter().map(|w| w.value.text.as_str()),
        )
    };
    let items: Vec<Timed<Word>> = items
        .into_iter()
        .zip(places)
        .map(|(w, src)| w.map(|w| Word { text: w.text, src }))
        .collect();
    speech.words = Timeline::from_items(rate, items).expect("the same spans");
    speech
}

/// `round(n * to / from)`: the resampler's output length.
fn out_len(n: usize, from: u32, to: u32) -> usize {
    ((n as u128 * to as u128 + from as u128 / 2) / from as u128) as usize
}

/// A timeline of `n` samples mapped onto `len` samples at `rate`; items that shrink to nothing are
/// dropped (the next starts where they did, so a contiguous timeline stays contiguous).
fn map_timeline<T>(t: Timeline<T>, n: u64, len: u64, rate: u32) -> Timeline<T> {
    let map = |b: u64| -> u64 {
        if n == 0 {
            0
        } else {
            ((b as u128 * len as u128 + n as u128 / 2) / n as u128) as u64
        }
    };
    let mut out = Timeline::new(rate).expect("non-zero rate");
    for item in t.into_items() {
        let (s, e) = (map(item.start().get()), map(item.end().get()).min(len));
        if e > s {
            let range = TimeRange::new(SampleTime(s), SampleTime(e)).expect("ordered");
            out.push(Timed::new(range, item.value))
                .expect("mapping keeps the order");
        }
    }
    out
}

/// Speech resampled to `rate`, exactly `len` samples long (the resampler's length, or the length a
/// plan allots it), its timelines mapped onto it.
fn to_rate(s: Speech, rate: u32, len: usize) -> Speech {
    let n = s.pcm.len() as u64;
    let mut pcm = crate::audio::resample(&s.pcm, s.sample_rate, rate);
    pcm.resize(len, 0.0);
    Speech {
        phonemes: map_timeline(s.phonemes, n, len as u64, rate),
        words: map_timeline(s.words, n, len as u64, rate),
        pcm,
        sample_rate: rate,
    }
}

fn skippable(e: &TtsError) -> bool {
    matches!(
        e,
        TtsError::Unspeakable(_) | TtsError::Empty | TtsError::Phonemize(_)
    )
}

impl Synthesizer for Router {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn reads_written_text(&self) -> bool {
        true
    }

    fn set_seed(&mut self, seed: u64) {
        for v in &mut self.voices {
            v.set_seed(seed);
        }
    }

    fn set_style(&mut self, length_scale: Option<f32>, emphasis: f32) {
        for v in &mut self.voices {
            v.set_style(length_scale, emphasis);
        }
    }

    fn synthesize(&mut self, clause: &str) -> Result<Speech, TtsError> {
        if clause.trim().is_empty() {
            return Err(TtsError::Empty);
        }
        let mut out = empty_speech(self.rate);
        let mut any = false;
        for (v, range) in self.spans(clause) {
            let (text, placed) = self.input(v, &clause[range.clone()]);
            if text.trim().is_empty() {
                continue;
            }
            match self.voices[v].synthesize(&text) {
                Ok(s) => {
                    append(&mut out, self.finish(s, clause, &range, placed));
                    any = true;
                }
                Err(e) if skippable(&e) => log::warn!("skipped {text:?}: {e}"),
                Err(e) => return Err(e),
            }
        }
        if !any {
            return Err(TtsError::Unspeakable(clause.to_string()));
        }
        Ok(out)
    }

    fn synthesize_head_first(
        &mut self,
        clause: &str,
        on_head: &mut dyn FnMut(Speech, Speech),
    ) -> Result<Speech, TtsError> {
        let spans = self.spans(clause);
        let [(v, range)] = spans.as_slice() else {
            return self.synthesize(clause);
        };
        let (v, range) = (*v, range.clone());
        let (text, placed) = self.input(v, &clause[range.clone()]);
        let from = self.voices[v].sample_rate();
        let rate = self.rate;
        // The head's and the rest's lengths at the output rate, fixed when the head comes so the plan
        // is exactly as long as the two.
        let mut rest_len: Option<usize> = None;
        let mut heads = |head: Speech, plan: Speech| {
            let head = place(head, clause, &range, placed);
            let plan = place(plan, clause, &range, placed);
            if from == rate {
                on_head(head, plan);
                return;
            }
            let h = out_len(head.pcm.len(), from, rate);
            let r = out_len(
                plan.pcm.len() - head.pcm.len().min(plan.pcm.len()),
                from,
                rate,
            );
            rest_len = Some(r);
            let head = to_rate(head, rate, h);
            let mut plan = to_rate(plan, rate, h + r);
            // The plan's audio: the head's, then silence.
            plan.pcm[..h].copy_from_slice(&head.pcm);
            plan.pcm[h..].iter_mut().for_each(|x| *x = 0.0);
            on_head(head, plan);
        };
        let rest = self.voices[v].synthesize_head_first(&text, &mut heads)?;
        let rest = place(rest, clause, &range, placed);
        Ok(if from == rate {
            rest
        } else {
            let len = rest_len.unwrap_or_else(|| out_len(rest.pcm.len(), from, rate));
            to_rate(rest, rate, len)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speech::Phoneme;

    /// A fake voice at `rate`: one phoneme `a` and one word per whitespace-separated word, 100
    /// samples each.
    struct Fake {
        rate: u32,
        written: bool,
    }

    impl Synthesizer for Fake {
        fn sample_rate(&self) -> u32 {
            self.rate
        }
        fn reads_written_text(&self) -> bool {
            self.written
        }
        fn synthesize(&mut self, clause: &str) -> Result<Speech, TtsError> {
            let mut s = empty_speech(self.rate);
            let mut at = 0usize;
            for w in clause.split_whitespace() {
                let start = at + clause[at..].find(w).expect("in order");
                at = start + w.len();
                let t = s.pcm.len() as u64;
                let r = TimeRange::at(SampleTime(t), 100);
                s.pcm.extend(std::iter::repeat_n(0.5, 100));
                s.phonemes.push(Timed::new(r, Phoneme::new("a"))).unwrap();
                s.words
                    .push(Timed::new(
                        r,
                        Word {
                            text: w.to_string(),
                            src: self.written.then_some(start..at),
                        },
                    ))
                    .unwrap();
            }
            if s.pcm.is_empty() {
                return Err(TtsError::Empty);
            }
            Ok(s)
        }
    }

    fn router() -> Router {
        Router::new(
            vec![
                Box::new(Fake {
                    rate: 22_050,
                    written: false,
                }),
                Box::new(Fake {
                    rate: 24_000,
                    written: true,
                }),
            ],
            [(Lang::Japanese, 1), (Lang::Mandarin, 1), (Lang::Latin, 0)],
            HanAs::Mandarin,
        )
    }

    #[test]
    fn spans_go_to_their_voices_at_one_rate() {
        let mut r = router();
        let clause = "Hello みんな 今日 and 42 friends";
        let spans = r.spans(clause);
        assert_eq!(spans.len(), 3, "{spans:?}");
        let s = r.synthesize(clause).unwrap();
        assert_eq!(s.sample_rate, 22_050);
        s.validate().unwrap();
        // Every word is placed in the clause: the Kokoro-like voice's shifted, the Piper-like
        // voice's found (its `42` read as `forty two` points at `42`).
        for w in s.words.iter() {
            let src = w.value.src.clone().expect("placed");
            assert!(
                clause[src.clone()].eq_ignore_ascii_case(&w.value.text)
                    || clause[src].chars().all(|c| c.is_ascii_digit()),
                "{:?}",
                w.value
            );
        }
        let texts: Vec<&str> = s.words.iter().map(|w| w.value.text.as_str()).collect();
        assert!(texts.contains(&"みんな"), "{texts:?}");
        // 100 samples at 24 kHz are 92 at 22.05 kHz.
        let minna = s.words.iter().find(|w| w.value.text == "みんな").unwrap();
        assert_eq!(minna.range.len(), 92);
    }

    #[test]
    fn one_span_is_spoken_whole_and_resampled() {
        let mut r = router();
        let s = r.synthesize("みんな 今日").unwrap();
        s.validate().unwrap();
        assert_eq!(s.pcm.len(), 184);
        assert_eq!(s.words.items()[1].value.src, Some(10..16));
    }
}
