//! A rendered performance, live: the live pipeline's [`Event`]s in sample order, paced by the wall
//! clock to [`Sink`]s.
//!
//! [`items`] cuts the performance into audio chunks of at most `chunk` samples (cut again at every
//! line boundary, so a chunk belongs to one line: utterance id = line number, 0 in the gaps), and
//! releases, per chunk and as the director does, first the captions and state changes that start in
//! it, then the chunk's audio, then its frames, cues and script events, each group in sample order.
//! A line's start is `State::Speaking` for utterance `line + 1`, its end `State::Idle`.
//!
//! [`play`] delivers the items on the caller's thread when the wall clock since the start reaches their
//! sample minus `lead` (so sinks can buffer a little, like the live conductor's ~300 ms), and returns
//! once the last sample has been heard or `stop` is set.

use super::parse::Script;
use super::render::{Performance, ScriptEvent, ScriptEventKind};
use crate::face::Frame;
use crate::perform::{
    AudioChunk, Caption, CueEvent, Event, FrameEvent, PerformState, RenderedPiece, Sink,
    StateEvent, UtteranceId,
};
use crate::speech::{Cue, CueKind};
use crate::time::{SampleTime, TimeRange, Timed};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One thing to release: a pipeline event for the sinks, or a script event (also for stdout).
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Pipeline(Event),
    Script(ScriptEvent),
}

impl Item {
    pub fn at(&self) -> SampleTime {
        match self {
            Item::Pipeline(e) => e.at().unwrap_or_default(),
            Item::Script(e) => e.at,
        }
    }
}

fn utterance_at(perf: &Performance, at: SampleTime) -> UtteranceId {
    perf.lines
        .iter()
        .find(|l| l.range.contains(at))
        .map_or(0, |l| l.index as UtteranceId + 1)
}

/// The performance as items in release order (see the module docs).
pub fn items(perf: &Performance, chunk: u64) -> Vec<Item> {
    let chunk = chunk.max(1);
    let end = perf.pcm.len() as u64;
    // Chunk boundaries: every `chunk` samples, and every line start and end.
    let mut cuts: Vec<u64> = (0..end).step_by(chunk as usize).collect();
    for l in &perf.lines {
        cuts.push(l.range.start().get());
        cuts.push(l.range.end().get());
    }
    cuts.push(end);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.retain(|&c| c <= end);
    let mut out = Vec::new();
    let mut fi = 0usize;
    let mut ei = 0usize;
    let mut ci = 0usize;
    for w in cuts.windows(2) {
        let (a, b) = (SampleTime(w[0]), SampleTime(w[1]));
        let utt = utterance_at(perf, a);
        // Captions and state changes starting in the chunk.
        while ci < perf.captions.len() && perf.captions[ci].range.start() < b {
            let c = &perf.captions[ci];
            let words: Vec<Timed<crate::speech::Word>> = perf
                .words
                .overlapping(c.range)
                .iter()
                .filter(|w| w.start() >= c.range.start())
                .cloned()
                .collect();
            out.push(Item::Pipeline(Event::Caption(Caption {
                utterance: c.line as UtteranceId + 1,
                text: c.text.clone(),
                range: c.range,
                words,
            })));
            ci += 1;
        }
        for l in &perf.lines {
            if l.range.start() == a {
                out.push(Item::Pipeline(Event::State(StateEvent {
                    state: PerformState::Speaking,
                    utterance: Some(l.index as UtteranceId + 1),
                    at: a,
                    heard: None,
                })));
            }
            if l.range.end() == a && a.get() > 0 {
                out.push(Item::Pipeline(Event::State(StateEvent {
                    state: PerformState::Idle,
                    utterance: None,
                    at: a,
                    heard: None,
                })));
            }
        }
        out.push(Item::Pipeline(Event::Audio(AudioChunk {
            utterance: utt,
            start: a,
            pcm: perf.pcm.slice(w[0], w[1]),
        })));
        // Frames and events inside the chunk, merged in sample order (frames first on a tie).
        let range = TimeRange::new(a, b).expect("ordered cuts");
        loop {
            let f = perf.frames.get(fi).filter(|f| range.contains(f.at));
            let e = perf.events.get(ei).filter(|e| e.at < b);
            match (f, e) {
                (Some(f), e) if e.is_none_or(|e| f.at <= e.at) => {
                    out.push(Item::Pipeline(Event::Frame(FrameEvent {
                        utterance: utterance_at(perf, f.at),
                        frame: Frame::from(&f),
                    })));
                    fi += 1;
                }
                (_, Some(e)) => {
                    let kind = match &e.kind {
                        ScriptEventKind::Emotion { name, intensity } => {
                            Some((CueKind::Emotion, name, *intensity))
                        }
                        ScriptEventKind::Action { name, intensity } => {
                            Some((CueKind::Action, name, *intensity))
                        }
                        _ => None,
                    };
                    if let Some((kind, name, intensity)) = kind {
                        out.push(Item::Pipeline(Event::Cue(CueEvent {
                            utterance: e.line.map_or(0, |l| l as UtteranceId + 1),
                            cue: Cue {
                                kind,
                                name: name.clone(),
                                intensity,
                                at: e.at,
                            },
                        })));
                    }
                    out.push(Item::Script(e.clone()));
                    ei += 1;
                }
                _ => break,
            }
        }
    }
    // Events at the very end (a line ending at the last sample).
    for e in &perf.events[ei..] {
        out.push(Item::Script(e.clone()));
    }
    out
}

/// Renders scripts for the server's `perform` message (the server cannot load voices itself; `idol
/// serve` plugs one in). Cheap to clone.
#[derive(Clone)]
pub struct ScriptRenderer(pub std::sync::Arc<RenderFn>);

/// What a [`ScriptRenderer`] calls.
pub type RenderFn = dyn Fn(&Script) -> Result<Performance, RenderError> + Send + Sync;

/// Why a [`ScriptRenderer`] could not render: whatever its loading or rendering failed with (a voice,
/// a rig, the render itself), kept as the error it is.
pub type RenderError = Box<dyn std::error::Error + Send + Sync>;

impl ScriptRenderer {
    pub fn new(
        f: impl Fn(&Script) -> Result<Performance, RenderError> + Send + Sync + 'static,
    ) -> Self {
        ScriptRenderer(std::sync::Arc::new(f))
    }

    pub fn render(&self, script: &Script) -> Result<Performance, RenderError> {
        (self.0)(script)
    }
}

impl std::fmt::Debug for ScriptRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptRenderer")
    }
}

/// The performance as pieces for the live pipeline's director
/// ([`crate::perform::Director::schedule_rendered`], the server's `perform` message): cut at every
/// caption and line boundary, so each piece has at most one caption (starting with it); frames, cues
/// and caption words are stamped from each piece's start. Script events other than emotions and
/// actions have no place in the pipeline's events and are not carried.
pub fn pieces(perf: &Performance) -> Vec<RenderedPiece> {
    let end = perf.pcm.len() as u64;
    let mut cuts: Vec<u64> = vec![0, end];
    for c in &perf.captions {
        cuts.push(c.range.start().get());
        cuts.push(c.range.end().get());
    }
    for l in &perf.lines {
        cuts.push(l.range.start().get());
        cuts.push(l.range.end().get());
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.retain(|&c| c <= end);
    let rel = |t: SampleTime, a: u64| SampleTime(t.get() - a);
    cuts.windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            let range = TimeRange::new(SampleTime(a), SampleTime(b)).expect("ordered cuts");
            let frames = perf
                .frames
                .iter()
                .filter(|f| range.contains(f.at))
                .map(|f| Frame {
                    at: rel(f.at, a),
                    ..Frame::from(&f)
                })
                .collect();
            let cues = perf
                .cues
                .iter()
                .filter(|c| range.contains(c.at))
                .map(|c| Cue {
                    at: rel(c.at, a),
                    ..c.clone()
                })
                .collect();
            let caption = perf
                .captions
                .iter()
                .find(|c| c.range.start().get() == a)
                .map(|c| {
                    let words = perf
                        .words
                        .overlapping(c.range)
                        .iter()
                        .filter(|w| w.start() >= c.range.start() && w.end() <= range.end())
                        .map(|w| {
                            let r = TimeRange::new(rel(w.start(), a), rel(w.end(), a));
                            Timed::new(r.expect("ordered"), w.value.clone())
                        })
                        .collect();
                    (c.text.clone(), words)
                });
            // Between lines (no line holds the window) the silence stays a span.
            let gap = caption.is_none()
                && !perf
                    .lines
                    .iter()
                    .any(|l| l.range.start().get() < b && a < l.range.end().get());
            RenderedPiece {
                pcm: if gap {
                    Vec::new()
                } else {
                    perf.pcm.slice(a, b)
                },
                silence: if gap { b - a } else { 0 },
                frames,
                cues,
                caption,
            }
        })
        .collect()
}

/// Play `items` of a performance at `rate` by the wall clock: each is handed to every sink (script
/// events to `on_script` only) when `elapsed >= its time - lead`. Returns when the performance's
/// `end` sample has been reached by the clock, or early when `stop` is set.
pub fn play(
    items: &[Item],
    rate: u32,
    end: SampleTime,
    lead: Duration,
    sinks: &mut [&mut dyn Sink],
    on_script: &mut dyn FnMut(&ScriptEvent),
    stop: &AtomicBool,
) {
    let t0 = Instant::now();
    let due = |s: SampleTime| Duration::from_secs_f64(s.as_secs_f64(rate)).saturating_sub(lead);
    for item in items {
        let at = due(item.at());
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let now = t0.elapsed();
            if now >= at {
                break;
            }
            std::thread::sleep((at - now).min(Duration::from_millis(10)));
        }
        match item {
            Item::Pipeline(e) => {
                for s in sinks.iter_mut() {
                    s.event(e);
                }
            }
            Item::Script(e) => on_script(e),
        }
    }
    let end = Duration::from_secs_f64(end.as_secs_f64(rate));
    while !stop.load(Ordering::Relaxed) && t0.elapsed() < end {
        std::thread::sleep((end - t0.elapsed()).min(Duration::from_millis(10)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::Rig;
    use crate::script::{RenderOptions, Script, SynthLineVoice, render};
    use crate::tts::FakeSynthesizer;
    use std::path::Path;

    fn perf() -> Performance {
        let s = Script::parse(
            "[[line]]\ntext = \"[happy] Hi there. <nod> Bye.\"\n[[line]]\ntext = \"Yo.\"\n[[event]]\nname = \"cam\"\nat = 0.1\n",
            Path::new("t.toml"),
            Path::new("."),
        )
        .unwrap();
        render(
            &s,
            &mut SynthLineVoice(FakeSynthesizer::default()),
            RenderOptions {
                rig: Rig::builtin("arkit52").unwrap(),
                fps: 30,
                seed: 3,
                rate: None,
                lipsync: None,
                progress: None,
                budget: crate::budget::Budget::default(),
            },
        )
        .unwrap()
    }

    #[test]
    fn items_cover_the_audio_in_sample_order() {
        let p = perf();
        let it = items(&p, 4410);
        let mut pcm = Vec::new();
        let mut frames = 0;
        let mut last = SampleTime::ZERO;
        let mut chunk_start = SampleTime::ZERO;
        for i in &it {
            match i {
                Item::Pipeline(Event::Audio(a)) => {
                    assert_eq!(a.start.get() as usize, pcm.len());
                    pcm.extend_from_slice(&a.pcm);
                    chunk_start = a.start;
                }
                Item::Pipeline(Event::Frame(f)) => {
                    assert!(f.frame.at >= last && f.frame.at >= chunk_start);
                    last = f.frame.at;
                    frames += 1;
                }
                _ => {}
            }
        }
        assert_eq!(pcm, p.pcm.to_vec());
        assert_eq!(frames, p.frames.len());
        let script_events = it.iter().filter(|i| matches!(i, Item::Script(_))).count();
        assert_eq!(script_events, p.events.len());
        let cues = it
            .iter()
            .filter(|i| matches!(i, Item::Pipeline(Event::Cue(_))))
            .count();
        assert_eq!(cues, 2);
    }

    #[test]
    fn pieces_cover_the_audio_with_one_caption_each() {
        let p = perf();
        let ps = pieces(&p);
        // The silences between lines are spans (`silence`), the lines' audio is carried.
        let len = |x: &RenderedPiece| x.pcm.len().max(x.silence as usize);
        let pcm: Vec<f32> = ps
            .iter()
            .flat_map(|x| {
                if x.pcm.is_empty() {
                    vec![0.0; x.silence as usize]
                } else {
                    x.pcm.clone()
                }
            })
            .collect();
        assert_eq!(pcm, p.pcm.to_vec());
        assert!(ps.iter().any(|x| x.pcm.is_empty() && x.silence > 0));
        assert!(ps.iter().all(|x| x.pcm.is_empty() || x.silence == 0));
        assert_eq!(
            ps.iter().map(|x| x.frames.len()).sum::<usize>(),
            p.frames.len()
        );
        assert_eq!(ps.iter().map(|x| x.cues.len()).sum::<usize>(), p.cues.len());
        let caps: Vec<&str> = ps
            .iter()
            .filter_map(|x| x.caption.as_ref().map(|c| c.0.as_str()))
            .collect();
        assert_eq!(caps, ["Hi there.", "Bye.", "Yo."]);
        for x in &ps {
            assert!(x.frames.iter().all(|f| (f.at.get() as usize) < len(x)));
        }
    }

    #[test]
    fn play_with_stop_returns_at_once() {
        let p = perf();
        let it = items(&p, 4410);
        let stop = AtomicBool::new(true);
        let mut rec = crate::perform::Recorder::new();
        let mut n = 0;
        play(
            &it,
            p.rate,
            SampleTime(p.pcm.len() as u64),
            Duration::ZERO,
            &mut [&mut rec],
            &mut |_| n += 1,
            &stop,
        );
        assert!(rec.events().is_empty());
    }
}
