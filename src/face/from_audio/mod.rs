//! Audio-driven lip sync: a recording in, a `Timeline<Phoneme>` the face solver reads out.
//!
//! Stage: beside tts, before the face. Input: mono PCM (`&[f32]`) at any rate (from
//! [`crate::audio::decode_file`]) and [`AudioLipsyncOptions`]. Output: a contiguous
//! `Timeline<Phoneme>` at the input's rate covering exactly `[0, pcm.len())`, with IPA symbols the
//! face's phone tables know, so the same rigs, coarticulation, expressions and idle layers apply to
//! a human actor's line as to the synthetic voice (build a [`Segment`](super::Segment) from it, or a
//! [`Speech`](crate::speech::Speech) with the PCM).
//!
//! Algorithm (audio only):
//! 1. Resample to 16 kHz and cut 25 ms Hamming frames every 10 ms (`features.rs`): energy,
//!    zero-crossing rate, the power share above 4 kHz and below 1 kHz, spectral centroid, a voicing
//!    score from the autocorrelation, 13 MFCCs, and F1-F3 from the poles of a 16th-order LPC model.
//! 2. Score each frame against eight mouth classes ([`VisemeClass`]: closed, sibilant, dental,
//!    tongue, open, mid, spread, rounded) from that evidence, normalised to the utterance (its loud
//!    level, its floor, and its speaker's formant scale), and pick the best class sequence with a
//!    Viterbi pass that charges for every change (`classify.rs`).
//! 3. Turn each run of frames into one phone of its class, choosing the symbol inside the class from
//!    the run's mean features (`i` or `ɪ` by F2, `u`/`o`/`ɹ` by F1 and F3, `s` or `ʃ` by the
//!    centroid, and so on). A closed run longer than `pause_ms`, or at either end, is a pause (`_`);
//!    a shorter one between sounds is a lip closure (`p`): lips meet for p b m, and for the other
//!    stops the face's coarticulation keeps the closure brief. Vowel runs whose level is within
//!    3 dB of the utterance's loud level carry primary stress, which drives the face's emphasis.
//!
//! With a transcript ([`AudioLipsyncOptions::transcript`], phonemised by the caller), the expected
//! phone sequence is aligned to the frame scores instead (step 3 replaced by a left-to-right Viterbi
//! over the expected phones, each scored by its class, pauses optional between words), so the
//! output carries the real phones (place of articulation the audio alone cannot give) at the times
//! the audio shows. A better way, when a voice is at hand, is alignment by synthesis ([`synth`]:
//! the transcript spoken by idol's voice and warped onto the recording), which `idol lipsync
//! --transcript` uses through `crate::align`.
//!
//! Threading: pure functions of their inputs; no shared state. Cost: about 120 µs of one core per
//! 10 ms frame, some 80 times faster than real time (see `docs/benchmarks.md`, "Audio lip sync").

mod classify;
mod features;
pub mod synth;

pub use features::{Analyzer, FrameFeatures};
pub use synth::{SynthAlignOptions, SynthAlignment, align_to_synthesis};

use super::phonetics::{self, Viseme};
use crate::speech::{Phoneme, Stress};
use crate::time::{SampleTime, TimeRange, Timed, Timeline};

/// Errors of audio lip sync.
#[derive(Debug, thiserror::Error)]
pub enum FromAudioError {
    #[error("the audio's sample rate must be positive (got 0)")]
    ZeroRate,
    #[error(transparent)]
    Time(#[from] crate::time::TimeError),
}

/// Settings of audio lip sync.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioLipsyncOptions {
    /// Log-score cost of changing class between two frames: higher gives fewer, longer segments.
    pub switch_cost: f32,
    /// A frame this many dB under the loudest frame within ±150 ms is evidence of a closure (the
    /// midpoint of a soft step: 2 dB either side counts about three times more or less).
    pub closure_drop_db: f32,
    /// When positive, a frame must also lie this many dB under the take's loud level (its 95th
    /// percentile) to count as a closure: a frame nearly as loud as the take's vowels is a vowel,
    /// whatever dip it sits in. 0 (the default) turns the check off: on the judge's recordings every
    /// setting from 6 to 12 dB that opened one more vowel also opened a p, b or m (see
    /// docs/lipsync.md), like raising `closure_drop_db`.
    pub closure_under_peak_db: f32,
    /// A closed stretch at least this long (milliseconds) is a pause, shorter ones are closures.
    pub pause_ms: u32,
    /// Expected phones, in order, one inner `Vec` per word (IPA or ARPAbet symbols as the face reads
    /// them, e.g. from `EnglishPhonemizer`); `None` for audio-only lip sync.
    pub transcript: Option<Vec<Vec<String>>>,
}

impl Default for AudioLipsyncOptions {
    fn default() -> Self {
        AudioLipsyncOptions {
            switch_cost: 6.0,
            closure_drop_db: 10.0,
            closure_under_peak_db: 0.0,
            pause_ms: 180,
            transcript: None,
        }
    }
}

/// The mouth classes audio can tell apart (the Oculus visemes grouped by what the lips and jaw do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VisemeClass {
    /// Lips together or at rest: silence and p b m (`sil`, `PP`).
    Closed,
    /// s z sh zh ch j (`SS`, `CH`).
    Sibilant,
    /// Teeth on the lip or tongue between the teeth: f v th (`FF`, `TH`).
    Dental,
    /// Tongue consonants with the mouth a little open: t d k g n ng l (`DD`, `kk`, `nn`).
    Tongue,
    /// Open vowels (`aa`).
    Open,
    /// Mid vowels and schwa (`E`).
    Mid,
    /// Spread vowels and y (`ih`).
    Spread,
    /// Rounded vowels, w and r (`oh`, `ou`, `RR`).
    Rounded,
}

impl VisemeClass {
    pub const COUNT: usize = 8;
    pub const ALL: [VisemeClass; 8] = [
        VisemeClass::Closed,
        VisemeClass::Sibilant,
        VisemeClass::Dental,
        VisemeClass::Tongue,
        VisemeClass::Open,
        VisemeClass::Mid,
        VisemeClass::Spread,
        VisemeClass::Rounded,
    ];

    pub fn of(v: Viseme) -> VisemeClass {
        use VisemeClass as C;
        match v {
            Viseme::Sil | Viseme::PP => C::Closed,
            Viseme::SS | Viseme::CH => C::Sibilant,
            Viseme::FF | Viseme::TH => C::Dental,
            Viseme::DD | Viseme::Kk | Viseme::Nn => C::Tongue,
            Viseme::Aa => C::Open,
            Viseme::E => C::Mid,
            Viseme::Ih => C::Spread,
            Viseme::Oh | Viseme::Ou | Viseme::RR => C::Rounded,
        }
    }

    /// Lips apart.
    pub fn is_open(self) -> bool {
        self != VisemeClass::Closed
    }

    pub fn name(self) -> &'static str {
        [
            "closed", "sibilant", "dental", "tongue", "open", "mid", "spread", "rounded",
        ][self as usize]
    }
}

/// The class the face gives each frame of a phoneme timeline: frame `k` at `SampleTime::frame(k)`
/// over `[0, end)`, through the face's own phone tables (`phonetics`, step 1 of the mouth chain);
/// silence and gaps are `Closed`, a transparent phone (h, ʔ) takes `Closed` too.
pub fn frame_classes(phonemes: &Timeline<Phoneme>, end: SampleTime, fps: u32) -> Vec<VisemeClass> {
    let rate = phonemes.rate();
    let (phones, _) = super::visemes::phones(phonemes);
    let n = SampleTime::frames_in(end.get(), rate, fps);
    (0..n)
        .map(|k| {
            let t = SampleTime::ZERO.frame(k, rate, fps);
            phones
                .at(t)
                .map_or(VisemeClass::Closed, |p| VisemeClass::of(p.value.viseme))
        })
        .collect()
}

/// Shortest phone in transcript alignment, in 10 ms frames.
pub const MIN_PHONE_FRAMES: usize = 3;

/// Per-frame classes from audio (one per 10 ms, frame `k` centred on `k * 10 ms`), the raw result of
/// steps 1-2; [`phonemes_from_audio`] builds its timeline from these.
pub fn classes_from_audio(
    pcm: &[f32],
    sample_rate: u32,
    opts: &AudioLipsyncOptions,
) -> Result<Vec<VisemeClass>, FromAudioError> {
    Ok(analyze(pcm, sample_rate, opts)?.classes)
}

struct Analysis {
    feats: Vec<FrameFeatures>,
    norm: classify::Norm,
    scores: Vec<[f32; VisemeClass::COUNT]>,
    classes: Vec<VisemeClass>,
}

fn analyze(
    pcm: &[f32],
    sample_rate: u32,
    opts: &AudioLipsyncOptions,
) -> Result<Analysis, FromAudioError> {
    if sample_rate == 0 {
        return Err(FromAudioError::ZeroRate);
    }
    let pcm16 = crate::audio::resample(pcm, sample_rate, features::RATE);
    let feats = Analyzer::new().analyze(&pcm16);
    let norm = classify::Norm::of(&feats);
    let scores = classify::scores(
        &feats,
        &norm,
        opts.closure_drop_db,
        opts.closure_under_peak_db,
    );
    let classes = classify::viterbi(&scores, opts.switch_cost);
    Ok(Analysis {
        feats,
        norm,
        scores,
        classes,
    })
}

/// Derive a phoneme timeline from a recording: `pcm` mono at `sample_rate` Hz. The timeline is at
/// `sample_rate`, contiguous, and covers exactly `[0, pcm.len())` (empty for empty audio); feed it to
/// the face like the voice's phonemes.
pub fn phonemes_from_audio(
    pcm: &[f32],
    sample_rate: u32,
    opts: &AudioLipsyncOptions,
) -> Result<Timeline<Phoneme>, FromAudioError> {
    let a = analyze(pcm, sample_rate, opts)?;
    let runs: Vec<(usize, usize, Phoneme)> = match &opts.transcript {
        Some(words) if !words.is_empty() && !a.feats.is_empty() => {
            align(&a, words, opts.switch_cost)?
        }
        _ => symbols(&a, opts),
    };
    runs_to_timeline(&runs, sample_rate, pcm.len() as u64)
}

/// Runs of 10 ms analysis frames (`from`, `to`, phone; in order) to a contiguous timeline over
/// `[0, len)` at `sample_rate`: frame `k` is centred on `k * 10 ms`, so a run starting at frame `k`
/// starts half a frame earlier; runs lost to rounding are absorbed by their neighbours.
pub(crate) fn runs_to_timeline(
    runs: &[(usize, usize, Phoneme)],
    sample_rate: u32,
    len: u64,
) -> Result<Timeline<Phoneme>, FromAudioError> {
    let hop = features::HOP as u64;
    let edge = |k: usize| -> u64 {
        if k == 0 {
            return 0;
        }
        let at16 = k as u64 * hop - hop / 2;
        ((at16 as u128 * sample_rate as u128 + features::RATE as u128 / 2) / features::RATE as u128)
            .min(len as u128) as u64
    };
    let mut items: Vec<Timed<Phoneme>> = Vec::with_capacity(runs.len());
    for (i, (from, _, ph)) in runs.iter().enumerate() {
        let start = edge(*from);
        let end = if i + 1 == runs.len() {
            len
        } else {
            edge(runs[i + 1].0)
        };
        if end <= start {
            continue;
        }
        let range = TimeRange::new(SampleTime(start), SampleTime(end))?;
        items.push(Timed::new(range, ph.clone()));
    }
    if items.is_empty() && len > 0 {
        // Shorter than one analysis frame: nothing to hear, a pause.
        items.push(Timed::new(
            TimeRange::new(SampleTime::ZERO, SampleTime(len))?,
            Phoneme::new("_"),
        ));
    }
    // Runs lost to rounding leave gaps; stretch each item to the next one's start so the timeline
    // stays contiguous.
    for i in 0..items.len() {
        let next = if i + 1 < items.len() {
            items[i + 1].start()
        } else {
            SampleTime(len)
        };
        let start = if i == 0 {
            SampleTime::ZERO
        } else {
            items[i].start()
        };
        items[i].range = TimeRange::new(start, next)?;
    }
    Ok(Timeline::from_items(sample_rate, items)?)
}

/// Mean of a feature over frames `a..b` where it is present (non-zero).
fn mean_of(feats: &[FrameFeatures], f: impl Fn(&FrameFeatures) -> f32) -> f32 {
    let (mut s, mut n) = (0.0f32, 0usize);
    for x in feats {
        let v = f(x);
        if v > 0.0 {
            s += v;
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { s / n as f32 }
}

/// Audio-only step 3: one phone per run of equal classes.
fn symbols(a: &Analysis, opts: &AudioLipsyncOptions) -> Vec<(usize, usize, Phoneme)> {
    let n = a.classes.len();
    let mut runs = Vec::new();
    let mut start = 0;
    for k in 1..=n {
        if k == n || a.classes[k] != a.classes[start] {
            runs.push((start, k));
            start = k;
        }
    }
    let pause_frames = (opts.pause_ms as usize).div_ceil(10);
    let s = a.norm.scale;
    runs.iter()
        .map(|&(from, to)| {
            let fs = &a.feats[from..to];
            let f1 = mean_of(fs, |f| f.formants[0]) / s;
            let f2 = mean_of(fs, |f| f.formants[1]) / s;
            let f3 = mean_of(fs, |f| f.formants[2]) / s;
            let centroid = mean_of(fs, |f| f.centroid);
            let voiced = mean_of(fs, |f| f.voicing) > 0.6;
            let loud = fs.iter().map(|f| f.energy_db).fold(f32::MIN, f32::max);
            let stress = if loud >= a.norm.peak - 3.0 {
                Stress::Primary
            } else {
                Stress::None
            };
            let sym = match a.classes[from] {
                VisemeClass::Closed => {
                    if from == 0 || to == n || to - from >= pause_frames {
                        "_"
                    } else {
                        "p"
                    }
                }
                VisemeClass::Sibilant => {
                    if centroid > 4500.0 {
                        "s"
                    } else {
                        "ʃ"
                    }
                }
                VisemeClass::Dental => "f",
                VisemeClass::Tongue => {
                    if !voiced {
                        "t"
                    } else if f2 > 0.0 && f2 < 1000.0 {
                        "l"
                    } else {
                        "n"
                    }
                }
                VisemeClass::Open => {
                    if f2 > 1500.0 {
                        "æ"
                    } else {
                        "ɑ"
                    }
                }
                VisemeClass::Mid => {
                    if f1 > 480.0 {
                        "ɛ"
                    } else {
                        "ə"
                    }
                }
                VisemeClass::Spread => {
                    if f2 > 1950.0 {
                        "i"
                    } else {
                        "ɪ"
                    }
                }
                VisemeClass::Rounded => {
                    if f3 > 0.0 && f3 < 2000.0 && f3 - f2 < 700.0 {
                        "ɹ"
                    } else if f1 > 0.0 && f1 < 380.0 {
                        "u"
                    } else {
                        "o"
                    }
                }
            };
            let vowel = matches!(
                a.classes[from],
                VisemeClass::Open | VisemeClass::Mid | VisemeClass::Spread | VisemeClass::Rounded
            ) && sym != "ɹ";
            let ph = if vowel {
                Phoneme::stressed(sym, stress)
            } else {
                Phoneme::new(sym)
            };
            (from, to, ph)
        })
        .collect()
}

/// Transcript-aided step 3: align the expected phones (optional pauses between words and at both
/// ends) to the frame scores with a left-to-right Viterbi in which every phone lasts at least
/// [`MIN_PHONE_FRAMES`] frames (when the audio is long enough for that), and return one run per phone.
fn align(
    a: &Analysis,
    words: &[Vec<String>],
    pause_cost: f32,
) -> Result<Vec<(usize, usize, Phoneme)>, FromAudioError> {
    // One entry per expected phone: its phoneme, the class that scores it (None: the best class,
    // for transparent phones like h), whether it may be skipped (pauses).
    let mut phones: Vec<(Phoneme, Option<VisemeClass>, bool)> =
        vec![(Phoneme::new("_"), Some(VisemeClass::Closed), true)];
    let mut parts = Vec::new();
    for w in words {
        for sym in w {
            let ph = Phoneme::new(sym.clone());
            if ph.is_silence() || phonetics::is_stress_mark(sym).is_some() {
                continue;
            }
            // A symbol the tables do not know is scored like a transparent phone.
            phonetics::phones_of(sym, Stress::None, &mut parts);
            let class = parts
                .iter()
                .find(|p| p.class != phonetics::PhoneClass::Transparent)
                .map(|p| VisemeClass::of(p.viseme));
            phones.push((ph, class, false));
        }
        phones.push((Phoneme::new("_"), Some(VisemeClass::Closed), true));
    }
    let n = a.scores.len();
    let required = phones.iter().filter(|p| !p.2).count();
    let min_len = (n / required.max(1)).clamp(1, MIN_PHONE_FRAMES);
    // Expanded states: a phone is a chain of `min_len` states, the last one looping; a pause is one
    // looping state that may be skipped.
    struct State {
        phone: usize,
        looping: bool,
        skippable: bool,
    }
    let mut states = Vec::new();
    for (i, p) in phones.iter().enumerate() {
        let len = if p.2 { 1 } else { min_len };
        for k in 0..len {
            states.push(State {
                phone: i,
                looping: k + 1 == len,
                skippable: p.2,
            });
        }
    }
    let m = states.len();
    let emit = |t: usize, s: &State| -> f32 {
        match phones[s.phone].1 {
            Some(c) => a.scores[t][c as usize],
            None => a.scores[t].iter().copied().fold(f32::MIN, f32::max),
        }
    };
    const NEG: f32 = f32::MIN / 4.0;
    let mut cost = vec![NEG; m];
    let mut back = vec![vec![0u32; m]; n];
    // Frame 0 starts in the first state or, skipping the opening pause, the one after it.
    for (j, st) in states.iter().enumerate() {
        cost[j] = emit(0, st);
        back[0][j] = j as u32;
        if !st.skippable {
            break;
        }
    }
    let mut next = vec![NEG; m];
    for (t, row) in back.iter_mut().enumerate().skip(1) {
        next.fill(NEG);
        for j in 0..m {
            let mut best = if states[j].looping {
                (cost[j], j)
            } else {
                (NEG, j)
            };
            // From the state before, or from further back over skippable states.
            let mut i = j;
            while i > 0 {
                i -= 1;
                if cost[i] > best.0 {
                    best = (cost[i], i);
                }
                if !states[i].skippable {
                    break;
                }
            }
            if best.0 > NEG {
                // Entering a pause between words costs as much as a class change does in the
                // audio-only decode, so pauses are inserted only where the audio shows one.
                let enter = if best.1 != j && states[j].skippable && j + 1 != m {
                    pause_cost
                } else {
                    0.0
                };
                row[j] = best.1 as u32;
                next[j] = best.0 - enter + emit(t, &states[j]);
            }
        }
        std::mem::swap(&mut cost, &mut next);
    }
    // End in the last state, or in the last state of the last phone when the closing pause is
    // skipped.
    let mut end = m - 1;
    if m >= 2 && states[m - 1].skippable && cost[m - 2] > cost[m - 1] {
        end = m - 2;
    }
    let mut path = vec![0usize; n];
    let mut j = end;
    for t in (0..n).rev() {
        path[t] = states[j].phone;
        j = back[t][j] as usize;
    }
    let mut runs = Vec::new();
    let mut start = 0;
    for t in 1..=n {
        if t == n || path[t] != path[start] {
            runs.push((start, t, phones[path[start]].0.clone()));
            start = t;
        }
    }
    Ok(runs)
}

/// The phones of a phonemized transcript, one `Vec` per word, for
/// [`AudioLipsyncOptions::transcript`]: each word's IPA is split into the symbols the face's phone
/// tables know (longest match first; stress marks stay on the next symbol, length and other marks on
/// the one before); punctuation is dropped.
pub fn transcript_phones(tokens: &[crate::phonemize::PhonToken]) -> Vec<Vec<String>> {
    tokens
        .iter()
        .filter_map(|t| match t {
            crate::phonemize::PhonToken::Word { ipa, .. } => Some(split_ipa_word(ipa)),
            crate::phonemize::PhonToken::Punct(_) => None,
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Split one word's IPA into phone symbols.
pub fn split_ipa_word(ipa: &str) -> Vec<String> {
    let chars: Vec<char> = ipa
        .chars()
        .filter(|c| !matches!(c, '\u{200d}' | '\u{200c}' | '\u{361}'))
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut stress = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, 'ˈ' | 'ˌ') {
            stress.push(c);
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let took = (1..=3.min(chars.len() - i))
            .rev()
            .find(|&n| phonetics::ipa(&chars[i..i + n].iter().collect::<String>()).is_some());
        match took {
            Some(n) => {
                let mut sym = std::mem::take(&mut stress);
                sym.extend(&chars[i..i + n]);
                out.push(sym);
                i += n;
            }
            None => {
                match out.last_mut() {
                    Some(last) => last.push(c),
                    None => out.push(c.to_string()),
                }
                i += 1;
            }
        }
    }
    out
}

/// Frame-level agreement between two class sequences of the same clip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// Frames compared (the shorter of the two).
    pub frames: usize,
    /// Share of frames where both agree on lips apart vs closed.
    pub open_closed: f64,
    /// Share of frames with the same [`VisemeClass`].
    pub class: f64,
}

/// Compare `got` with `want` frame by frame (see [`frame_classes`]).
pub fn agreement(got: &[VisemeClass], want: &[VisemeClass]) -> Agreement {
    let n = got.len().min(want.len());
    let (mut oc, mut cl) = (0usize, 0usize);
    for (g, w) in got.iter().zip(want) {
        oc += (g.is_open() == w.is_open()) as usize;
        cl += (g == w) as usize;
    }
    let d = n.max(1) as f64;
    Agreement {
        frames: n,
        open_closed: oc as f64 / d,
        class: cl as f64 / d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, rate: u32, secs: f32, amp: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| amp * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn silence_is_closed_and_a_vowel_like_buzz_is_open() {
        // 0.3 s of silence, 0.4 s of a 120 Hz pulse train through F1 700 / F2 1200 resonators (an
        // open vowel), 0.3 s of silence.
        let rate = 16000;
        let mut pcm = vec![0.0f32; 4800];
        let mut v = vec![0.0f32; 6400];
        for i in (0..v.len()).step_by(133) {
            v[i] = 1.0;
        }
        for (f, bw) in [(700.0f64, 80.0f64), (1200.0, 90.0), (2500.0, 120.0)] {
            let r = (-std::f64::consts::PI * bw / rate as f64).exp();
            let th = 2.0 * std::f64::consts::PI * f / rate as f64;
            let (a1, a2) = (-2.0 * r * th.cos(), r * r);
            let (mut y1, mut y2) = (0.0f64, 0.0f64);
            for x in v.iter_mut() {
                let y = *x as f64 - a1 * y1 - a2 * y2;
                y2 = y1;
                y1 = y;
                *x = y as f32;
            }
        }
        let peak = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        pcm.extend(v.iter().map(|x| x / peak * 0.5));
        pcm.extend(vec![0.0f32; 4800]);
        let classes = classes_from_audio(&pcm, rate, &AudioLipsyncOptions::default()).unwrap();
        assert_eq!(classes.len(), 100);
        assert!(classes[..25].iter().all(|c| *c == VisemeClass::Closed));
        assert!(classes[75..].iter().all(|c| *c == VisemeClass::Closed));
        let open = classes[35..65]
            .iter()
            .filter(|c| **c == VisemeClass::Open)
            .count();
        assert!(open >= 25, "{classes:?}");
    }

    #[test]
    fn hiss_is_a_sibilant() {
        // White-ish noise high-passed above 4 kHz between two quiet stretches: "s".
        let rate = 16000;
        let mut state = 12345u32;
        let mut noise: Vec<f32> = (0..4800)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        // Crude high-pass: difference twice.
        for _ in 0..2 {
            for i in (1..noise.len()).rev() {
                noise[i] -= noise[i - 1];
            }
        }
        let mut pcm = tone(150.0, rate, 0.3, 0.0);
        pcm.extend(noise.iter().map(|x| x * 0.3));
        pcm.extend(tone(150.0, rate, 0.3, 0.0));
        let tl = phonemes_from_audio(&pcm, rate, &AudioLipsyncOptions::default()).unwrap();
        let syms: Vec<&str> = tl.iter().map(|p| p.value.symbol.as_str()).collect();
        assert_eq!(syms, ["_", "s", "_"]);
    }

    #[test]
    fn transcript_words_split_into_known_phones() {
        assert_eq!(split_ipa_word("lˈɛdʒɚ"), ["l", "ˈɛ", "dʒ", "ɚ"]);
        assert_eq!(split_ipa_word("bˈɑːbi"), ["b", "ˈɑː", "b", "i"]);
        assert_eq!(split_ipa_word("ɹˈoʊld"), ["ɹ", "ˈo", "ʊ", "l", "d"]);
    }

    #[test]
    fn classes_follow_the_face_tables() {
        assert_eq!(VisemeClass::of(Viseme::PP), VisemeClass::Closed);
        assert_eq!(VisemeClass::of(Viseme::RR), VisemeClass::Rounded);
        assert!(!VisemeClass::Closed.is_open());
        let a = agreement(
            &[VisemeClass::Closed, VisemeClass::Open, VisemeClass::Mid],
            &[
                VisemeClass::Closed,
                VisemeClass::Mid,
                VisemeClass::Mid,
                VisemeClass::Open,
            ],
        );
        assert_eq!(a.frames, 3);
        assert!((a.open_closed - 1.0).abs() < 1e-9 && (a.class - 2.0 / 3.0).abs() < 1e-9);
    }
}
