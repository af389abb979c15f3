//! Typed time: the one clock that audio and frames share.
//!
//! Every audio chunk and every blendshape frame carries its position on one session timeline, counted in
//! output samples (`u64`), never a wall-clock guess. A frame stamped `s` describes the face while sample
//! `s` is heard. The sample rate belongs to the timeline ([`Timeline::rate`]), not to each stamp, so
//! arithmetic on stamps is plain integer arithmetic and exact.
//!
//! Types: [`SampleTime`] (a position), [`TimeRange`] (a half-open span `[start, end)`), [`Timed<T>`]
//! (a value over a span) and [`Timeline<T>`] (ordered, non-overlapping spans at one rate).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// Errors from building or converting typed time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeError {
    #[error("time {0} s is not a finite, non-negative number of seconds")]
    BadSeconds(f64),
    #[error("sample rate must be positive (got 0)")]
    ZeroRate,
    #[error("frame rate must be positive (got 0)")]
    ZeroFps,
    #[error("range ends before it starts: start {start}, end {end}")]
    Reversed { start: u64, end: u64 },
    #[error(
        "item at {start}..{end} overlaps or precedes the previous item, which ends at {prev_end}"
    )]
    OutOfOrder { start: u64, end: u64, prev_end: u64 },
}

/// A position on a session timeline, in samples at the timeline's rate.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SampleTime(pub u64);

impl SampleTime {
    pub const ZERO: SampleTime = SampleTime(0);

    pub const fn new(samples: u64) -> Self {
        SampleTime(samples)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The sample nearest to `secs` seconds at `rate` Hz.
    pub fn from_secs_f64(secs: f64, rate: u32) -> Result<Self, TimeError> {
        if rate == 0 {
            return Err(TimeError::ZeroRate);
        }
        if !secs.is_finite() || secs < 0.0 {
            return Err(TimeError::BadSeconds(secs));
        }
        Ok(SampleTime((secs * rate as f64).round() as u64))
    }

    /// Exactly `ms` milliseconds at `rate` Hz, rounded to the nearest sample (halves up).
    pub fn from_millis(ms: u64, rate: u32) -> Self {
        SampleTime(div_round(ms as u128 * rate as u128, 1000) as u64)
    }

    /// Seconds since the start of the timeline.
    pub fn as_secs_f64(self, rate: u32) -> f64 {
        self.0 as f64 / rate as f64
    }

    /// Milliseconds since the start, rounded to the nearest millisecond.
    pub fn as_millis(self, rate: u32) -> u64 {
        div_round(self.0 as u128 * 1000, rate as u128) as u64
    }

    /// The same instant at another sample rate, rounded to the nearest sample (halves up).
    pub fn rescale(self, from_rate: u32, to_rate: u32) -> Self {
        if from_rate == to_rate {
            return self;
        }
        SampleTime(div_round(self.0 as u128 * to_rate as u128, from_rate as u128) as u64)
    }

    /// Offset of frame `k` from a segment start: `round(k * rate / fps)`, halves up, exact in integers.
    pub fn frame_offset(k: u64, rate: u32, fps: u32) -> u64 {
        div_round(k as u128 * rate as u128, fps as u128) as u64
    }

    /// Stamp of frame `k` of a segment starting here: `self + round(k * rate / fps)`.
    pub fn frame(self, k: u64, rate: u32, fps: u32) -> SampleTime {
        SampleTime(self.0 + Self::frame_offset(k, rate, fps))
    }

    /// How many frames of a segment `len` samples long have their stamp inside it (`offset < len`).
    pub fn frames_in(len: u64, rate: u32, fps: u32) -> u64 {
        if len == 0 {
            return 0;
        }
        // Smallest k with round(k*rate/fps) >= len, i.e. frames 0..k are inside.
        // round(x) >= len  <=>  2*k*rate + fps >= 2*len*fps  <=>  k >= (2*len*fps - fps) / (2*rate)
        let num = 2 * len as u128 * fps as u128 - fps as u128;
        let den = 2 * rate as u128;
        num.div_ceil(den) as u64
    }

    pub fn saturating_sub(self, other: SampleTime) -> u64 {
        self.0.saturating_sub(other.0)
    }

    pub fn checked_sub(self, other: SampleTime) -> Option<u64> {
        self.0.checked_sub(other.0)
    }
}

fn div_round(num: u128, den: u128) -> u128 {
    (2 * num + den) / (2 * den)
}

impl fmt::Display for SampleTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Add<u64> for SampleTime {
    type Output = SampleTime;
    fn add(self, rhs: u64) -> SampleTime {
        SampleTime(self.0 + rhs)
    }
}

impl AddAssign<u64> for SampleTime {
    fn add_assign(&mut self, rhs: u64) {
        self.0 += rhs;
    }
}

/// The number of samples between two positions. Panics if `rhs` is later (use `checked_sub`).
impl Sub for SampleTime {
    type Output = u64;
    fn sub(self, rhs: SampleTime) -> u64 {
        self.0
            .checked_sub(rhs.0)
            .expect("SampleTime subtraction went negative")
    }
}

/// A half-open span of samples, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRange", into = "RawRange")]
pub struct TimeRange {
    start: SampleTime,
    end: SampleTime,
}

#[derive(Serialize, Deserialize)]
struct RawRange {
    start: u64,
    end: u64,
}

impl TryFrom<RawRange> for TimeRange {
    type Error = TimeError;
    fn try_from(r: RawRange) -> Result<Self, TimeError> {
        TimeRange::new(SampleTime(r.start), SampleTime(r.end))
    }
}

impl From<TimeRange> for RawRange {
    fn from(r: TimeRange) -> Self {
        RawRange {
            start: r.start.0,
            end: r.end.0,
        }
    }
}

impl TimeRange {
    pub fn new(start: SampleTime, end: SampleTime) -> Result<Self, TimeError> {
        if end < start {
            return Err(TimeError::Reversed {
                start: start.0,
                end: end.0,
            });
        }
        Ok(TimeRange { start, end })
    }

    /// `[start, start + len)`.
    pub fn at(start: SampleTime, len: u64) -> Self {
        TimeRange {
            start,
            end: start + len,
        }
    }

    pub fn start(&self) -> SampleTime {
        self.start
    }

    pub fn end(&self) -> SampleTime {
        self.end
    }

    pub fn len(&self) -> u64 {
        self.end.0 - self.start.0
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn contains(&self, t: SampleTime) -> bool {
        self.start <= t && t < self.end
    }

    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn intersect(&self, other: &TimeRange) -> Option<TimeRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(TimeRange { start, end })
    }

    pub fn shift(&self, by: u64) -> TimeRange {
        TimeRange {
            start: self.start + by,
            end: self.end + by,
        }
    }

    /// The same span at another rate; both ends are rescaled, so adjacent ranges stay adjacent.
    pub fn rescale(&self, from_rate: u32, to_rate: u32) -> TimeRange {
        TimeRange {
            start: self.start.rescale(from_rate, to_rate),
            end: self.end.rescale(from_rate, to_rate),
        }
    }

    /// Clip the end to `at` (for barge-in); `None` when the range starts at or after `at`.
    pub fn truncate(&self, at: SampleTime) -> Option<TimeRange> {
        (self.start < at).then(|| TimeRange {
            start: self.start,
            end: self.end.min(at),
        })
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A value over a span of samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timed<T> {
    #[serde(flatten)]
    pub range: TimeRange,
    #[serde(flatten)]
    pub value: T,
}

impl<T> Timed<T> {
    pub fn new(range: TimeRange, value: T) -> Self {
        Timed { range, value }
    }

    pub fn start(&self) -> SampleTime {
        self.range.start()
    }

    pub fn end(&self) -> SampleTime {
        self.range.end()
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Timed<U> {
        Timed {
            range: self.range,
            value: f(self.value),
        }
    }
}

/// Values over ordered, non-overlapping spans at one sample rate. Gaps are allowed; use
/// [`Timeline::is_contiguous`] where a timeline must cover its span without holes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "RawTimeline<T>",
    bound(deserialize = "T: Deserialize<'de>")
)]
pub struct Timeline<T> {
    rate: u32,
    items: Vec<Timed<T>>,
}

#[derive(Deserialize)]
struct RawTimeline<T> {
    rate: u32,
    items: Vec<Timed<T>>,
}

impl<T> TryFrom<RawTimeline<T>> for Timeline<T> {
    type Error = TimeError;
    fn try_from(r: RawTimeline<T>) -> Result<Self, TimeError> {
        Timeline::from_items(r.rate, r.items)
    }
}

impl<T> Timeline<T> {
    pub fn new(rate: u32) -> Result<Self, TimeError> {
        if rate == 0 {
            return Err(TimeError::ZeroRate);
        }
        Ok(Timeline {
            rate,
            items: Vec::new(),
        })
    }

    /// Build from items, checking order and overlap.
    pub fn from_items(rate: u32, items: Vec<Timed<T>>) -> Result<Self, TimeError> {
        let mut tl = Timeline::new(rate)?;
        tl.items.reserve(items.len());
        for it in items {
            tl.push(it)?;
        }
        Ok(tl)
    }

    /// Append an item that starts at or after the end of the last one.
    pub fn push(&mut self, item: Timed<T>) -> Result<(), TimeError> {
        if let Some(prev) = self.items.last()
            && item.start() < prev.end()
        {
            return Err(TimeError::OutOfOrder {
                start: item.start().0,
                end: item.end().0,
                prev_end: prev.end().0,
            });
        }
        self.items.push(item);
        Ok(())
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn items(&self) -> &[Timed<T>] {
        &self.items
    }

    pub fn into_items(self) -> Vec<Timed<T>> {
        self.items
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Timed<T>> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// From the first start to the last end; `None` when empty.
    pub fn span(&self) -> Option<TimeRange> {
        let first = self.items.first()?;
        let last = self.items.last()?;
        Some(TimeRange {
            start: first.start(),
            end: last.end(),
        })
    }

    /// True when each item starts exactly where the previous one ends.
    pub fn is_contiguous(&self) -> bool {
        self.items.windows(2).all(|w| w[0].end() == w[1].start())
    }

    /// The item whose span contains `t`.
    pub fn at(&self, t: SampleTime) -> Option<&Timed<T>> {
        let i = self.items.partition_point(|it| it.end() <= t);
        self.items.get(i).filter(|it| it.range.contains(t))
    }

    /// Items overlapping `range`.
    pub fn overlapping(&self, range: TimeRange) -> &[Timed<T>] {
        let lo = self.items.partition_point(|it| it.end() <= range.start());
        let hi = self.items.partition_point(|it| it.start() < range.end());
        &self.items[lo..hi.max(lo)]
    }

    /// Every span moved later by `by` samples.
    pub fn shift(mut self, by: u64) -> Self {
        for it in &mut self.items {
            it.range = it.range.shift(by);
        }
        self
    }

    /// The same timeline at another rate; adjacent items stay adjacent.
    pub fn rescale(mut self, to_rate: u32) -> Result<Self, TimeError> {
        if to_rate == 0 {
            return Err(TimeError::ZeroRate);
        }
        let from = self.rate;
        for it in &mut self.items {
            it.range = it.range.rescale(from, to_rate);
        }
        self.rate = to_rate;
        Ok(self)
    }

    /// Cut at `at` (barge-in): items after it go, the one across it is clipped.
    pub fn truncate(&mut self, at: SampleTime) {
        self.items.retain_mut(|it| match it.range.truncate(at) {
            Some(r) => {
                it.range = r;
                true
            }
            None => false,
        });
    }

    /// Split at `at`: `self` keeps what lies before it (as [`Timeline::truncate`]), the returned
    /// timeline holds what lies from `at` on, moved to start at 0. An item across `at` is clipped into
    /// both.
    pub fn split_off(&mut self, at: SampleTime) -> Timeline<T>
    where
        T: Clone,
    {
        let items = self
            .items
            .iter()
            .filter(|it| it.end() > at)
            .map(|it| {
                let start = it.start().get().max(at.get()) - at.get();
                let end = it.end().get() - at.get();
                Timed::new(
                    TimeRange::new(SampleTime(start), SampleTime(end)).expect("ordered"),
                    it.value.clone(),
                )
            })
            .collect();
        self.truncate(at);
        Timeline {
            rate: self.rate,
            items,
        }
    }

    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Timeline<U> {
        Timeline {
            rate: self.rate,
            items: self.items.into_iter().map(|it| it.map(&mut f)).collect(),
        }
    }
}

impl<'a, T> IntoIterator for &'a Timeline<T> {
    type Item = &'a Timed<T>;
    type IntoIter = std::slice::Iter<'a, Timed<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_off_clips_the_item_across_the_cut_into_both_halves() {
        let mut t = Timeline::new(100).unwrap();
        for (a, b, v) in [(0, 10, 'a'), (10, 25, 'b'), (25, 40, 'c')] {
            t.push(Timed::new(
                TimeRange::new(SampleTime(a), SampleTime(b)).unwrap(),
                v,
            ))
            .unwrap();
        }
        let tail = t.split_off(SampleTime(20));
        let spans = |t: &Timeline<char>| {
            t.iter()
                .map(|i| (i.start().get(), i.end().get(), i.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(spans(&t), [(0, 10, 'a'), (10, 20, 'b')]);
        assert_eq!(spans(&tail), [(0, 5, 'b'), (5, 20, 'c')]);
        assert_eq!(tail.rate(), 100);
    }

    #[test]
    fn seconds_round_trip_and_rounding() {
        assert_eq!(SampleTime::from_secs_f64(1.5, 22050).unwrap().get(), 33075);
        assert_eq!(
            SampleTime::from_secs_f64(0.0, 48000).unwrap(),
            SampleTime::ZERO
        );
        assert!(SampleTime::from_secs_f64(-1.0, 48000).is_err());
        assert!(SampleTime::from_secs_f64(f64::NAN, 48000).is_err());
        assert_eq!(SampleTime::from_secs_f64(1.0, 0), Err(TimeError::ZeroRate));
        assert_eq!(SampleTime(33075).as_secs_f64(22050), 1.5);
        assert_eq!(SampleTime::from_millis(300, 22050).get(), 6615);
        assert_eq!(SampleTime(6615).as_millis(22050), 300);
        // 1 ms at 22050 Hz is 22.05 samples -> 22.
        assert_eq!(SampleTime::from_millis(1, 22050).get(), 22);
    }

    #[test]
    fn rescale_is_exact_and_rounds_half_up() {
        assert_eq!(SampleTime(22050).rescale(22050, 48000).get(), 48000);
        assert_eq!(SampleTime(1).rescale(2, 1).get(), 1); // 0.5 -> 1
        assert_eq!(
            SampleTime(123_456_789).rescale(48000, 48000).get(),
            123_456_789
        );
        // No overflow on long sessions: a year at 48 kHz.
        let year = SampleTime(48000 * 3600 * 24 * 365);
        assert_eq!(year.rescale(48000, 22050).get(), 22050 * 3600 * 24 * 365);
    }

    #[test]
    fn frame_stamps_are_exact_for_any_rate_and_fps() {
        assert_eq!(SampleTime::frame_offset(1, 22050, 60), 368); // 367.5 -> 368
        assert_eq!(SampleTime::frame_offset(2, 22050, 60), 735);
        assert_eq!(SampleTime::frame_offset(60, 22050, 60), 22050);
        assert_eq!(SampleTime(1000).frame(3, 48000, 30).get(), 1000 + 4800);
        for &(rate, fps) in &[
            (22050u32, 60u32),
            (48000, 30),
            (16000, 24),
            (44100, 59),
            (22050, 1),
        ] {
            for len in [0u64, 1, 367, 368, 369, 22050, 22051, 100_003] {
                let n = SampleTime::frames_in(len, rate, fps);
                if n > 0 {
                    assert!(
                        SampleTime::frame_offset(n - 1, rate, fps) < len,
                        "{rate} {fps} {len}"
                    );
                }
                assert!(
                    SampleTime::frame_offset(n, rate, fps) >= len,
                    "{rate} {fps} {len}"
                );
            }
        }
    }

    #[test]
    fn ranges_validate_and_clip() {
        assert!(TimeRange::new(SampleTime(5), SampleTime(4)).is_err());
        let r = TimeRange::new(SampleTime(10), SampleTime(20)).unwrap();
        assert_eq!(r.len(), 10);
        assert!(r.contains(SampleTime(10)) && !r.contains(SampleTime(20)));
        assert_eq!(r.truncate(SampleTime(15)).unwrap().end(), SampleTime(15));
        assert!(r.truncate(SampleTime(10)).is_none());
        let o = TimeRange::at(SampleTime(18), 5);
        assert_eq!(r.intersect(&o), Some(TimeRange::at(SampleTime(18), 2)));
        assert!(!r.overlaps(&TimeRange::at(SampleTime(20), 3)));
        let bad: Result<TimeRange, _> = serde_json::from_str(r#"{"start":3,"end":1}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn timeline_orders_looks_up_and_rescales() {
        let mut tl = Timeline::new(100).unwrap();
        tl.push(Timed::new(TimeRange::at(SampleTime(0), 10), 'a'))
            .unwrap();
        tl.push(Timed::new(TimeRange::at(SampleTime(10), 5), 'b'))
            .unwrap();
        assert!(
            tl.push(Timed::new(TimeRange::at(SampleTime(12), 5), 'x'))
                .is_err()
        );
        tl.push(Timed::new(TimeRange::at(SampleTime(20), 5), 'c'))
            .unwrap();
        assert!(!tl.is_contiguous());
        assert_eq!(tl.at(SampleTime(9)).unwrap().value, 'a');
        assert_eq!(tl.at(SampleTime(10)).unwrap().value, 'b');
        assert!(tl.at(SampleTime(17)).is_none());
        assert_eq!(tl.overlapping(TimeRange::at(SampleTime(12), 10)).len(), 2);
        assert_eq!(tl.span().unwrap(), TimeRange::at(SampleTime(0), 25));
        let r = tl.clone().rescale(300).unwrap();
        assert_eq!(r.items()[1].range, TimeRange::at(SampleTime(30), 15));
        let mut t = tl.clone();
        t.truncate(SampleTime(12));
        assert_eq!(t.len(), 2);
        assert_eq!(t.items()[1].end(), SampleTime(12));
        let json = serde_json::to_string(&tl.clone().map(|c| Label { label: c })).unwrap();
        let back: Timeline<Label> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.items()[2].value.label, 'c');
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Label {
        label: char,
    }
}

/// The master clock of live playback: the timeline samples an audio output has played so far
/// (advanced by the output's callback, read by the live pipeline and the frame gate). Cheap to clone
/// and to read; clones share the counter.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    played: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Clock {
    pub fn played(&self) -> SampleTime {
        SampleTime(self.played.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Count `n` more samples as played (the output's side).
    pub fn advance(&self, n: u64) {
        self.played
            .fetch_add(n, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The session timeline's "now": wall time since the session start in samples, or the samples an
/// audio output has played (then the speakers are the master clock).
#[derive(Debug, Clone)]
pub struct SessionClock {
    start: std::time::Instant,
    rate: u32,
    played: Option<Clock>,
}

impl SessionClock {
    pub fn new(rate: u32) -> Self {
        SessionClock {
            start: std::time::Instant::now(),
            rate,
            played: None,
        }
    }

    /// A clock that reads an audio output's played-sample counter (at the timeline rate).
    pub fn played(rate: u32, clock: Clock) -> Self {
        SessionClock {
            played: Some(clock),
            ..SessionClock::new(rate)
        }
    }

    pub fn now(&self) -> SampleTime {
        if let Some(c) = &self.played {
            return c.played();
        }
        let ns = self.start.elapsed().as_nanos();
        SampleTime((ns * self.rate as u128 / 1_000_000_000) as u64)
    }
}
