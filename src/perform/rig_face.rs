//! [`RigFace`]: the face solver (`crate::face`) behind the live pipeline's [`FaceSolver`] trait.
//!
//! Utterance frames come from `Face::render_speech` at the utterance's session position, so they are
//! stamped `s0.frame(k)` and cover exactly its audio. Idle frames are evaluated one by one at the
//! stamps of the session's global frame grid that fall inside the idle range; the idle layer is a pure
//! function of (seed, absolute sample), so idle and speech segments join without a seam. The mood in
//! force (the last emotion cue, or one set by a client) is passed into every later segment, so it
//! carries across utterances. Every frame carries its canonical vector ([`Frame::canon`]), so
//! the server can retarget it to the rig each client asks for. Runs inline on the conductor thread
//! (cheap and pure).

use super::{FaceControl, FaceSolver, Frame};
use crate::face::{EyeGaze, Face, FaceConfig, Frames, Rig, Scratch, Segment};
use crate::speech::{Cue, CueKind, Phoneme, Speech};
use crate::time::{SampleTime, TimeRange, Timeline};

pub struct RigFace {
    face: Face,
    channels: Vec<String>,
    rate: u32,
    /// The standing mood (name, intensity); `None` is neutral.
    mood: Option<(String, f32)>,
}

impl RigFace {
    /// A face for `rig` on a session timeline at `rate` Hz.
    pub fn new(rig: Rig, config: FaceConfig, rate: u32) -> Result<RigFace, crate::face::FaceError> {
        let channels = rig.channel_names().map(str::to_string).collect();
        Ok(RigFace {
            face: Face::new(rig, config)?,
            channels,
            rate,
            mood: None,
        })
    }

    fn mood_cue(&self, at: SampleTime) -> Option<Cue> {
        self.mood.as_ref().map(|(name, intensity)| Cue {
            kind: CueKind::Emotion,
            name: name.clone(),
            intensity: *intensity,
            at,
        })
    }

    fn convert(frames: &Frames) -> Vec<Frame> {
        frames.iter().map(|f| Frame::from(&f)).collect()
    }
}

/// Warnings for a persona card's `emotions` and `actions` that the face on `rig` (a built-in name, a
/// `rigs_dir/NAME.toml` or a path) does not animate: said once when the card is loaded, never while
/// she speaks. Those tags still reach engines as cue messages.
pub fn card_tag_warnings(
    card: &crate::persona::card::PersonaCard,
    card_path: &std::path::Path,
    rig: &str,
    rigs_dir: &std::path::Path,
) -> Vec<String> {
    let builtin = crate::face::gesture::Catalogue::builtin();
    let catalogue = match Rig::find(rig, Some(rigs_dir)) {
        Ok(r) => builtin.with_rig(&r),
        Err(_) => builtin.clone(),
    };
    catalogue.card_warnings(
        &card_path.display().to_string(),
        &card.emotions,
        &card.actions,
    )
}

impl FaceSolver for RigFace {
    fn channels(&self) -> &[String] {
        &self.channels
    }

    fn rig(&self) -> &str {
        &self.face.rig().name
    }

    fn canonical(&self) -> bool {
        true
    }

    fn frames(&mut self, s0: SampleTime, speech: &Speech, cues: &[Cue]) -> Vec<Frame> {
        let mut all: Vec<Cue> = self.mood_cue(s0).into_iter().collect();
        all.extend(cues.iter().cloned());
        all.sort_by_key(|c| c.at);
        let out = match self.face.render_speech(speech, s0, &all) {
            Ok(f) => Self::convert(&f),
            Err(e) => {
                log::warn!("face: {e}; this utterance gets idle frames");
                self.idle(TimeRange::at(s0, speech.pcm.len() as u64))
                    .into_iter()
                    .collect()
            }
        };
        if let Some(last) = cues.iter().rev().find(|c| c.kind == CueKind::Emotion) {
            self.set(&FaceControl::Emotion {
                name: last.name.clone(),
                intensity: last.intensity,
            });
        }
        out
    }

    fn idle(&mut self, range: TimeRange) -> Vec<Frame> {
        let fps = self.face.config().fps;
        let first = SampleTime::frames_in(range.start().get(), self.rate, fps);
        let last = SampleTime::frames_in(range.end().get(), self.rate, fps);
        if first >= last {
            return Vec::new();
        }
        let phonemes: Timeline<Phoneme> = Timeline::new(self.rate).expect("non-zero rate");
        let cues: Vec<Cue> = self.mood_cue(range.start()).into_iter().collect();
        let seg = Segment {
            range,
            phonemes: &phonemes,
            words: None,
            cues: &cues,
        };
        let Ok(prep) = self.face.prepare(&seg) else {
            return Vec::new();
        };
        let mut scratch = Scratch::default();
        (first..last)
            .map(|k| {
                self.face.frame(
                    &prep,
                    SampleTime::ZERO.frame(k, self.rate, fps),
                    &mut scratch,
                )
            })
            .collect()
    }

    fn set(&mut self, control: &FaceControl) {
        match control {
            FaceControl::Emotion { name, intensity } => {
                self.mood = (name != "neutral" && *intensity > 0.0)
                    .then(|| (name.clone(), intensity.clamp(0.0, 1.0)));
            }
            FaceControl::LookAt { yaw, pitch } => {
                let mut cfg = self.face.config().clone();
                cfg.look_at = Some(EyeGaze {
                    yaw: *yaw,
                    pitch: *pitch,
                });
                if let Ok(f) = Face::new(self.face.rig().clone(), cfg) {
                    self.face = f;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timed;

    fn face() -> RigFace {
        RigFace::new(
            Rig::builtin("arkit52").unwrap(),
            FaceConfig::default(),
            22050,
        )
        .unwrap()
    }

    #[test]
    fn idle_frames_sit_on_the_global_grid() {
        let mut f = face();
        let frames = f.idle(TimeRange::at(SampleTime(1000), 22050));
        assert!(!frames.is_empty());
        for fr in &frames {
            let k = SampleTime::frames_in(fr.at.get(), 22050, 60);
            assert_eq!(SampleTime::ZERO.frame(k, 22050, 60), fr.at);
            assert!(fr.at >= SampleTime(1000) && fr.at < SampleTime(23050));
            assert_eq!(fr.weights.len(), f.channels().len());
        }
        assert_eq!(
            frames.len() as u64,
            SampleTime::frames_in(23050, 22050, 60) - SampleTime::frames_in(1000, 22050, 60)
        );
    }

    #[test]
    fn utterance_frames_cover_the_audio_and_the_mood_carries_on() {
        let mut f = face();
        let mut ph = Timeline::new(22050).unwrap();
        ph.push(Timed::new(
            TimeRange::at(SampleTime(0), 4000),
            Phoneme::new("m"),
        ))
        .unwrap();
        ph.push(Timed::new(
            TimeRange::at(SampleTime(4000), 8000),
            Phoneme::new("ɑ"),
        ))
        .unwrap();
        let speech = Speech {
            pcm: vec![0.0; 12000],
            sample_rate: 22050,
            phonemes: ph,
            words: Timeline::new(22050).unwrap(),
        };
        let cue = Cue {
            kind: CueKind::Emotion,
            name: "happy".into(),
            intensity: 1.0,
            at: SampleTime(5000),
        };
        let frames = f.frames(SampleTime(5000), &speech, &[cue]);
        assert_eq!(frames.len() as u64, SampleTime::frames_in(12000, 22050, 60));
        assert_eq!(frames[0].at, SampleTime(5000));
        assert_eq!(f.mood.as_ref().map(|m| m.0.as_str()), Some("happy"));
    }
}
