//! One text spoken whole, offline: tagged text → one [`Speech`] with its cues, on its own clock
//! (sample 0 = the text's start). What `idol say` runs; a script's line does the same into its
//! sparse track ([`crate::script`]), and the live director on the session timeline, all from the
//! same clauses ([`TextSegmenter`]) and the same layout and cue rules ([`Layout`]).

use crate::speech::{Cue, Speech};
use crate::text::utterance::{Layout, Part};
use crate::text::{ClauseText, SegmenterConfig, TextSegmenter};

/// A text as spoken.
#[derive(Debug, Clone)]
pub struct Spoken {
    /// The speech: every clause and every break, phonemes covering the audio exactly.
    pub speech: Speech,
    /// One cue per emotion and action tag, at the sample of the word it was written before.
    pub cues: Vec<Cue>,
    /// Whether the voice said anything (a text of tags or of nothing speakable says nothing).
    pub said_anything: bool,
}

/// The clauses an offline path speaks a text in: whole sentences, cut at their breaks.
pub fn sentences(text: &str) -> Vec<ClauseText> {
    TextSegmenter::segment(SegmenterConfig::sentences(), text)
}

/// Speak `clauses` (a text's [`sentences`]) at `rate`: `speak(clause)` says one clause's clean text
/// (its tags removed; the caller normalizes it for its voice) and returns `Ok(None)` when there is
/// nothing speakable in it; `check(len)` is asked after each piece with the length so far (a
/// budget), and its error stops the speaking.
pub fn speak_clauses<E>(
    clauses: &[ClauseText],
    rate: u32,
    mut speak: impl FnMut(&str) -> Result<Option<Speech>, E>,
    mut check: impl FnMut(u64) -> Result<(), E>,
) -> Result<Spoken, E> {
    let mut speech = crate::tts::empty_speech(rate);
    let mut layout = Layout::new(rate);
    let mut cues = Vec::new();
    let mut said_anything = false;
    for clause in clauses {
        let mut sp = if clause.text.is_empty() {
            None
        } else {
            speak(&clause.text)?
        };
        said_anything |= sp.as_ref().is_some_and(|s| !s.pcm.is_empty());
        let placed = layout.place(clause, sp.as_ref());
        for part in placed.parts {
            match part {
                Part::Pause { n, .. } => {
                    crate::tts::append(&mut speech, crate::tts::silence_samples(rate, n))
                }
                Part::Speech { .. } => crate::tts::append(
                    &mut speech,
                    sp.take().expect("a speech part has its speech"),
                ),
            }
            check(speech.pcm.len() as u64)?;
        }
        cues.extend(placed.cues);
    }
    debug_assert_eq!(speech.pcm.len() as u64, layout.len());
    Ok(Spoken {
        speech,
        cues,
        said_anything,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::{Face, FaceConfig, Frames, Rig, Segment};
    use crate::perform::Voice;
    use crate::perform::testing::ToneVoice;
    use crate::time::{SampleTime, TimeRange};

    const RATE: u32 = 16_000;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// `idol say`'s path keeps the live stream's promises on random tagged texts: every emotion
        /// and action tag (stage directions naming a gesture included) is one cue at the start of
        /// the word it was written before (after the last word: at the speech's last sample); every
        /// break is silence of its length exactly at its word boundary; the phonemes cover the
        /// audio and the face's frames cover exactly the audio.
        #[test]
        fn a_said_text_keeps_every_tag_and_break_where_it_was_written(
            items in proptest::collection::vec((0u8..8, 0usize..6), 1..30),
        ) {
            let t = crate::perform::testing::TaggedText::generate(&items);
            let text = &t.text;
            let words = t.words.len();
            let mut want_cues = t.cues.clone();
            let want_breaks = &t.breaks;
            let mut voice = ToneVoice::new(RATE);
            let spoken = speak_clauses(
                &sentences(text),
                RATE,
                |clause| voice.speak(clause).map(Some),
                |_| Ok::<(), crate::perform::StageError>(()),
            )
            .unwrap();
            let sp = &spoken.speech;
            sp.validate().unwrap();
            let n = sp.pcm.len() as u64;
            let spoken_words = sp.words.items();
            proptest::prop_assert_eq!(spoken_words.len(), words, "{}", text);
            proptest::prop_assert_eq!(spoken.said_anything, words > 0);
            // Cues: one per tag, at its word.
            let mut got: Vec<(usize, String)> = vec![];
            for c in &spoken.cues {
                let w = spoken_words.iter().position(|x| x.start() >= c.at).unwrap_or(words);
                if w < words {
                    proptest::prop_assert_eq!(spoken_words[w].start(), c.at, "{} {}", c.name, text);
                } else if words > 0 {
                    proptest::prop_assert!(c.at >= spoken_words[words - 1].start() && c.at.get() < n.max(1), "{} {}", c.name, text);
                }
                got.push((w, c.name.clone()));
            }
            got.sort();
            want_cues.sort();
            proptest::prop_assert_eq!(got, want_cues, "{}", text);
            // Breaks: the silence between the words around each boundary is at least the breaks
            // written there, and all of the breaks' samples are in the audio.
            let total: u64 = want_breaks
                .iter()
                .map(|&(_, ms)| SampleTime::from_millis(u64::from(ms), RATE).get())
                .sum();
            let speech_samples: u64 = spoken_words.iter().map(|w| w.range.len()).sum();
            proptest::prop_assert!(n >= total + speech_samples, "{}", text);
            for &(w, _) in want_breaks {
                let need: u64 = want_breaks
                    .iter()
                    .filter(|&&(x, _)| x == w)
                    .map(|&(_, ms)| SampleTime::from_millis(u64::from(ms), RATE).get())
                    .sum();
                let from = if w == 0 { 0 } else { spoken_words[w - 1].end().get() };
                let to = spoken_words.get(w).map_or(n, |x| x.start().get());
                proptest::prop_assert!(to - from >= need, "{} at word {}", text, w);
                proptest::prop_assert!(sp.pcm[from as usize..to as usize].iter().all(|&x| x == 0.0));
            }
            // Frames cover exactly the audio.
            if n > 0 {
                let rig = Rig::builtin("arkit52").unwrap();
                let face = Face::new(rig.clone(), FaceConfig { fps: 60, ..FaceConfig::default() }).unwrap();
                let seg = Segment {
                    range: TimeRange::new(SampleTime::ZERO, SampleTime(n)).unwrap(),
                    phonemes: &sp.phonemes,
                    words: Some(&sp.words),
                    cues: &spoken.cues,
                };
                let prepared = face.prepare(&seg).unwrap();
                let mut frames = Frames::new(&rig, RATE, 60);
                face.render_into(&prepared, 0..prepared.frame_count(), &mut frames);
                proptest::prop_assert_eq!(frames.len() as u64, SampleTime::frames_in(n, RATE, 60));
            }
        }
    }
}
