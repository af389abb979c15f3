//! Flags → settings, once. What a command's flags, a script's `[script]` table and idol.toml say
//! about the voice, the face and the seeds becomes the [`Settings`] a command runs with here and
//! nowhere else: each value comes from the first source that says it (flag, then script, then
//! idol.toml, then the voice's own), and a value a flag gives is held to the range idol.toml's and a
//! script's are ([`idol::config::ranges`]), with the flag named in the error.

use idol::config::{Config, ranges};
use idol::tts::{Speaker, VoiceChoice, VoiceOptions};

/// What one source says; `None`: this source does not say.
#[derive(Debug, Default, Clone, Copy)]
pub struct Said<'a> {
    /// A voice name or path (`--voice`, `[script] voice`).
    pub voice: Option<&'a str>,
    pub speaker: Option<&'a str>,
    /// Seeds the voice's noise and the face's idle motion.
    pub seed: Option<u64>,
    /// Seeds the voice's noise only (`idol say --seed`).
    pub voice_seed: Option<u64>,
    /// Length scale (1.0 the voice's pace).
    pub rate: Option<f32>,
    pub noise_scale: Option<f32>,
    pub noise_w: Option<f32>,
    pub rig: Option<&'a str>,
    pub fps: Option<u32>,
}

/// Where a [`Said`] came from: flags are checked here (a script's values were checked, with their
/// line, when it was read; idol.toml's when it was loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flags,
    Script,
}

/// The settings a command runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The voices to load.
    pub choice: VoiceChoice,
    /// The voice's options (`threads` is the caller's to set).
    pub voice: VoiceOptions,
    /// The length scale lines are spoken at unless a line says its own.
    pub rate: Option<f32>,
    pub rig: String,
    pub fps: u32,
    /// The face's seed (idle motion, blinks).
    pub face_seed: u64,
}

/// A flag's value outside its range.
#[derive(Debug, thiserror::Error)]
#[error("{flag} must be within {lo}..={hi} ({what}), got {value}")]
pub struct OutOfRange {
    pub flag: &'static str,
    pub value: String,
    pub lo: String,
    pub hi: String,
    pub what: &'static str,
}

fn check_f32(
    flag: &'static str,
    v: Option<f32>,
    (lo, hi): (f64, f64),
    what: &'static str,
) -> Result<(), OutOfRange> {
    match v {
        Some(x) if !(x.is_finite() && (lo..=hi).contains(&(x as f64))) => Err(OutOfRange {
            flag,
            value: x.to_string(),
            lo: lo.to_string(),
            hi: hi.to_string(),
            what,
        }),
        _ => Ok(()),
    }
}

/// The flags' values against the ranges idol.toml's are held to.
fn check_flags(s: &Said) -> Result<(), OutOfRange> {
    check_f32(
        "--rate",
        s.rate,
        ranges::LENGTH_SCALE,
        ranges::LENGTH_SCALE_IS,
    )?;
    check_f32(
        "--noise-scale",
        s.noise_scale,
        ranges::NOISE,
        ranges::NOISE_IS,
    )?;
    check_f32("--noise-w", s.noise_w, ranges::NOISE, ranges::NOISE_W_IS)?;
    if let Some(f) = s.fps
        && !(ranges::FPS.0..=ranges::FPS.1).contains(&i64::from(f))
    {
        return Err(OutOfRange {
            flag: "--fps",
            value: f.to_string(),
            lo: ranges::FPS.0.to_string(),
            hi: ranges::FPS.1.to_string(),
            what: ranges::FPS_IS,
        });
    }
    Ok(())
}

impl Settings {
    /// The settings `sources` give (first says first), over idol.toml's.
    pub fn resolve(config: &Config, sources: &[(Source, Said)]) -> Result<Settings, OutOfRange> {
        for (src, s) in sources {
            if *src == Source::Flags {
                check_flags(s)?;
            }
        }
        let first = |f: &dyn Fn(&Said) -> bool| sources.iter().map(|(_, s)| s).find(|s| f(s));
        macro_rules! pick {
            ($field:ident) => {
                sources.iter().find_map(|(_, s)| s.$field)
            };
        }
        let vc = &config.voice;
        let rate = pick!(rate).or(vc.length_scale);
        let voice_seed = first(&|s| s.voice_seed.is_some() || s.seed.is_some())
            .and_then(|s| s.voice_seed.or(s.seed))
            .unwrap_or(vc.seed);
        let choice = idol::perform::adapters::config_voice_choice(vc, pick!(voice));
        Ok(Settings {
            choice,
            voice: VoiceOptions {
                length_scale: rate,
                noise_scale: pick!(noise_scale).or(vc.noise_scale),
                noise_w: pick!(noise_w).or(vc.noise_w),
                speaker: pick!(speaker)
                    .or(vc.speaker.as_deref())
                    .map(|s| s.parse::<Speaker>().expect("infallible")),
                seed: voice_seed,
                ..VoiceOptions::default()
            },
            rate,
            rig: pick!(rig).unwrap_or(&config.face.rig).to_string(),
            fps: pick!(fps).unwrap_or(config.face.fps),
            face_seed: pick!(seed).unwrap_or(config.face.seed),
        })
    }
}

/// What a script's `[script]` table says.
pub fn script_says(d: &idol::script::Defaults) -> Said<'_> {
    Said {
        voice: d.voice.as_deref(),
        speaker: d.speaker.as_deref(),
        seed: d.seed,
        voice_seed: None,
        rate: d.rate,
        noise_scale: d.noise_scale,
        noise_w: d.noise_w,
        rig: d.rig.as_deref(),
        fps: d.fps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::from_toml_str(toml, std::path::Path::new("idol.toml")).unwrap()
    }

    #[test]
    fn the_first_source_that_says_wins_then_idol_toml() {
        let c = config(
            "[voice]\nlength_scale = 1.1\nnoise_scale = 0.3\nseed = 5\n[face]\nrig = \"vrm\"\nfps = 30\nseed = 9\n",
        );
        let flags = Said {
            rig: Some("arkit52"),
            ..Said::default()
        };
        let script = Said {
            rig: Some("live2d"),
            fps: Some(24),
            seed: Some(7),
            rate: Some(0.9),
            ..Said::default()
        };
        let s = Settings::resolve(&c, &[(Source::Flags, flags), (Source::Script, script)]).unwrap();
        assert_eq!(s.rig, "arkit52");
        assert_eq!(s.fps, 24);
        assert_eq!((s.voice.seed, s.face_seed), (7, 7));
        assert_eq!(s.rate, Some(0.9));
        assert_eq!(s.voice.length_scale, Some(0.9));
        assert_eq!(s.voice.noise_scale, Some(0.3));
        let s = Settings::resolve(&c, &[]).unwrap();
        assert_eq!((s.rig.as_str(), s.fps), ("vrm", 30));
        assert_eq!((s.voice.seed, s.face_seed), (5, 9));
        assert_eq!(s.rate, Some(1.1));
        // `say --seed` seeds the voice only.
        let say = Said {
            voice_seed: Some(3),
            ..Said::default()
        };
        let s = Settings::resolve(&c, &[(Source::Flags, say)]).unwrap();
        assert_eq!((s.voice.seed, s.face_seed), (3, 9));
    }

    #[test]
    fn flags_are_held_to_idol_tomls_ranges() {
        let c = config("");
        for (said, flag) in [
            (
                Said {
                    rate: Some(f32::NAN),
                    ..Said::default()
                },
                "--rate",
            ),
            (
                Said {
                    noise_scale: Some(-1.0),
                    ..Said::default()
                },
                "--noise-scale",
            ),
            (
                Said {
                    noise_w: Some(6.0),
                    ..Said::default()
                },
                "--noise-w",
            ),
            (
                Said {
                    fps: Some(0),
                    ..Said::default()
                },
                "--fps",
            ),
        ] {
            let e = Settings::resolve(&c, &[(Source::Flags, said)])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("{flag} must be within")), "{e}");
        }
        // The edges idol.toml allows are allowed.
        let edge = Said {
            rate: Some(10.0),
            noise_scale: Some(0.0),
            noise_w: Some(5.0),
            fps: Some(1000),
            ..Said::default()
        };
        assert!(Settings::resolve(&c, &[(Source::Flags, edge)]).is_ok());
    }
}
