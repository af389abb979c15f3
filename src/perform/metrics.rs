//! Counters and latency histograms of a live session, rendered in the Prometheus text format.
//!
//! Lock-free: every field is an atomic, updated from the stage threads and read by `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds in seconds, shared by every latency histogram.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let n = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {n}");
    }
}

/// Everything `GET /metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Request received → first text from the LLM.
    pub llm_first_token: Histogram,
    /// Request received → first complete clause.
    pub first_clause: Histogram,
    /// Synthesis time of one clause.
    pub voice: Histogram,
    /// Request received → first audio chunk handed to the sinks.
    pub first_audio: Histogram,
    pub utterances: AtomicU64,
    pub interruptions: AtomicU64,
    pub stage_errors: AtomicU64,
    pub clients_connected: AtomicI64,
    pub clients_total: AtomicU64,
    pub clients_dropped: AtomicU64,
    pub messages_rejected: AtomicU64,
    /// Frames retargeted by the server to a client's rig (once per frame and rig in use).
    pub frames_retargeted: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.llm_first_token.render(
            "idol_llm_first_token_seconds",
            "Time from a chat message to the LLM's first text.",
            &mut out,
        );
        self.first_clause.render(
            "idol_first_clause_seconds",
            "Time from a chat message to its first complete clause.",
            &mut out,
        );
        self.voice.render(
            "idol_voice_seconds",
            "Synthesis time of one clause.",
            &mut out,
        );
        self.first_audio.render(
            "idol_first_audio_sent_seconds",
            "Time from a chat message to its first audio chunk sent.",
            &mut out,
        );
        let counters: [(&str, &str, &str, i64); 8] = [
            (
                "idol_utterances_total",
                "counter",
                "Utterances requested (chat and say).",
                self.utterances.load(Ordering::Relaxed) as i64,
            ),
            (
                "idol_interruptions_total",
                "counter",
                "Barge-ins that cut or dropped an utterance.",
                self.interruptions.load(Ordering::Relaxed) as i64,
            ),
            (
                "idol_stage_errors_total",
                "counter",
                "Stage failures (a clause or reply skipped).",
                self.stage_errors.load(Ordering::Relaxed) as i64,
            ),
            (
                "idol_clients_connected",
                "gauge",
                "WebSocket clients connected now.",
                self.clients_connected.load(Ordering::Relaxed),
            ),
            (
                "idol_clients_total",
                "counter",
                "WebSocket clients accepted.",
                self.clients_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "idol_clients_dropped_total",
                "counter",
                "Clients closed by the server for falling behind.",
                self.clients_dropped.load(Ordering::Relaxed) as i64,
            ),
            (
                "idol_messages_rejected_total",
                "counter",
                "Client messages answered with an error.",
                self.messages_rejected.load(Ordering::Relaxed) as i64,
            ),
            (
                "idol_frames_retargeted_total",
                "counter",
                "Frames retargeted to a client's rig (once per frame and rig in use).",
                self.frames_retargeted.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets() {
        let m = Metrics::default();
        m.voice.observe(Duration::from_millis(30));
        m.voice.observe(Duration::from_millis(300));
        let t = m.render();
        assert!(
            t.contains("idol_voice_seconds_bucket{le=\"0.025\"} 0"),
            "{t}"
        );
        assert!(t.contains("idol_voice_seconds_bucket{le=\"0.05\"} 1"));
        assert!(t.contains("idol_voice_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(t.contains("idol_voice_seconds_count 2"));
        assert!(t.contains("# TYPE idol_clients_connected gauge"));
    }
}
