//! Adapters from the real stages to the pipeline's traits: [`SynthVoice`] wraps any
//! [`crate::tts::Synthesizer`] (text normalized first) as a [`Voice`], and [`TextSegmenter`] wraps the
//! text stage's [`ClauseStream`] (streaming tag parser + clause segmenter) as a [`Segmenter`].
//!
//! Threading: each adapter lives on the thread of the stage it wraps (voice thread, persona thread).

use super::{ClauseText, Segmenter, StageError, TextCue, Voice};
use crate::speech::{CueKind, Speech};
use crate::text::{ClauseStream, CueEvent, SegmenterConfig};
use crate::tts::Synthesizer;

/// A synthesizer as the pipeline's voice: each clause is normalized ([`crate::text::normalize`]:
/// numbers, abbreviations, symbols → words) and synthesized.
pub struct SynthVoice<S>(pub S);

impl<S: Synthesizer> Voice for SynthVoice<S> {
    fn sample_rate(&self) -> u32 {
        self.0.sample_rate()
    }

    fn speak(&mut self, clause: &str) -> Result<Speech, StageError> {
        let text = crate::text::normalize(clause);
        self.0
            .synthesize(&text)
            .map_err(|e| StageError::Voice(e.to_string()))
    }
}

/// The text stage's clause stream as the pipeline's segmenter. Emotion and action tags become cues
/// before the word that follows them; `<break/>` tags are dropped (the voice does not take them yet);
/// clauses without words are dropped and their cues carried to the next clause.
pub struct TextSegmenter {
    cfg: SegmenterConfig,
    stream: ClauseStream,
    carry: Vec<TextCue>,
}

impl TextSegmenter {
    pub fn new(cfg: SegmenterConfig) -> Self {
        TextSegmenter {
            stream: ClauseStream::new(cfg),
            cfg,
            carry: Vec::new(),
        }
    }

    fn convert(&mut self, clauses: Vec<crate::text::Clause>) -> Vec<ClauseText> {
        let mut out = vec![];
        for c in clauses {
            let raw = &c.segment.text;
            let text = raw.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut cues: Vec<TextCue> = std::mem::take(&mut self.carry);
            for tc in &c.cues {
                let (kind, name, intensity) = match &tc.event {
                    CueEvent::Emotion { name, intensity } => (CueKind::Emotion, name, *intensity),
                    CueEvent::Action { name, intensity } => (CueKind::Action, name, *intensity),
                    CueEvent::Break { .. } => continue,
                };
                let at = tc.at.min(raw.len());
                let before_word = raw.get(..at).map_or(0, |t| t.split_whitespace().count());
                cues.push(TextCue {
                    before_word,
                    kind,
                    name: name.clone(),
                    intensity,
                });
            }
            if text.split_whitespace().next().is_none() {
                self.carry = cues
                    .into_iter()
                    .map(|mut c| {
                        c.before_word = 0;
                        c
                    })
                    .collect();
                continue;
            }
            out.push(ClauseText { text, cues });
        }
        out
    }
}

impl Default for TextSegmenter {
    fn default() -> Self {
        TextSegmenter::new(SegmenterConfig::default())
    }
}

impl Segmenter for TextSegmenter {
    fn push(&mut self, piece: &str) -> Vec<ClauseText> {
        let clauses = self.stream.push(piece);
        self.convert(clauses)
    }

    fn finish(&mut self) -> Vec<ClauseText> {
        let clauses = self.stream.finish();
        let out = self.convert(clauses);
        self.stream = ClauseStream::new(self.cfg);
        self.carry.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stage_clauses_with_cues() {
        let mut s = TextSegmenter::default();
        let mut got = vec![];
        for p in [
            "[hap",
            "py] Hello there, how are",
            " you today? I am <wa",
            "ve> fine.",
        ] {
            got.extend(s.push(p));
        }
        got.extend(s.finish());
        assert!(!got.is_empty());
        let joined: Vec<&str> = got.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            joined.join(" "),
            "Hello there, how are you today? I am fine."
        );
        let happy = &got[0].cues[0];
        assert_eq!((happy.name.as_str(), happy.before_word), ("happy", 0));
        let wave = got
            .iter()
            .flat_map(|c| c.cues.iter().map(move |q| (c, q)))
            .find(|(_, q)| q.name == "wave")
            .expect("the wave cue");
        let words: Vec<&str> = wave.0.text.split_whitespace().collect();
        assert_eq!(words[wave.1.before_word], "fine.");
        // The stream resets for the next reply.
        let mut again = s.push("Bye now.");
        again.extend(s.finish());
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].text, "Bye now.");
    }
}
