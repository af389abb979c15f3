//! A synthesizer on its own std thread: clauses in through a bounded channel, speech out clause by
//! clause, in order. The synthesizer is built on the thread (so a voice never crosses threads), and a
//! load error comes back from [`SynthWorker::spawn`].

use super::{Synthesizer, TtsError};
use crate::speech::Speech;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::thread::JoinHandle;

/// The answer for one clause.
#[derive(Debug)]
pub struct Spoken {
    /// The clause's position in submission order (from 0).
    pub index: u64,
    pub clause: String,
    pub speech: Result<Speech, TtsError>,
}

/// A [`Synthesizer`] running on a dedicated thread.
pub struct SynthWorker {
    tx: Option<Sender<String>>,
    rx: Option<Receiver<Spoken>>,
    handle: Option<JoinHandle<()>>,
    sample_rate: u32,
    reads_written_text: bool,
    submitted: u64,
}

impl SynthWorker {
    /// Start a thread that builds a synthesizer with `make` and then serves clauses. At most `capacity`
    /// clauses wait in each direction; `submit` blocks when the queue is full.
    pub fn spawn<S, F>(make: F, capacity: usize) -> Result<SynthWorker, TtsError>
    where
        S: Synthesizer + 'static,
        F: FnOnce() -> Result<S, TtsError> + Send + 'static,
    {
        let (tx, clause_rx) = bounded::<String>(capacity.max(1));
        let (speech_tx, rx) = bounded::<Spoken>(capacity.max(1));
        let (ready_tx, ready_rx) = bounded::<Result<(u32, bool), TtsError>>(1);
        let handle = std::thread::Builder::new()
            .name("idol-tts".into())
            .spawn(move || {
                let mut synth = match make() {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok((s.sample_rate(), s.reads_written_text())));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for (index, clause) in clause_rx.iter().enumerate() {
                    let speech = synth.synthesize(&clause);
                    let spoken = Spoken {
                        index: index as u64,
                        clause,
                        speech,
                    };
                    if speech_tx.send(spoken).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| TtsError::Runtime(format!("cannot start the synthesis thread: {e}")))?;
        let (sample_rate, reads_written_text) =
            ready_rx.recv().map_err(|_| TtsError::WorkerGone)??;
        Ok(SynthWorker {
            tx: Some(tx),
            rx: Some(rx),
            handle: Some(handle),
            sample_rate,
            reads_written_text,
            submitted: 0,
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Whether the voice reads clauses as written ([`Synthesizer::reads_written_text`]).
    pub fn reads_written_text(&self) -> bool {
        self.reads_written_text
    }

    /// Queue a clause (blocks while the queue is full). Returns its index.
    pub fn submit(&mut self, clause: impl Into<String>) -> Result<u64, TtsError> {
        let tx = self.tx.as_ref().ok_or(TtsError::WorkerGone)?;
        tx.send(clause.into()).map_err(|_| TtsError::WorkerGone)?;
        self.submitted += 1;
        Ok(self.submitted - 1)
    }

    /// The next clause's speech, in submission order; `None` once all submitted clauses are answered
    /// and [`SynthWorker::close`] was called (or the thread stopped).
    pub fn recv(&self) -> Option<Spoken> {
        self.rx.as_ref()?.recv().ok()
    }

    /// The receiving end, for `select!` with other channels.
    pub fn receiver(&self) -> Option<&Receiver<Spoken>> {
        self.rx.as_ref()
    }

    /// No more clauses: the thread finishes the queued ones and stops.
    pub fn close(&mut self) {
        self.tx = None;
    }
}

impl Drop for SynthWorker {
    fn drop(&mut self) {
        // Closing both channels ends the thread's loop: it either runs out of clauses or fails to hand
        // back speech nobody will read. It finishes the clause in hand first.
        self.tx = None;
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tts::FakeSynthesizer;

    #[test]
    fn clauses_come_back_in_order() {
        let mut w = SynthWorker::spawn(|| Ok(FakeSynthesizer::default()), 2).unwrap();
        assert_eq!(w.sample_rate(), 22050);
        let clauses = ["Hello there,", "how are you?", "", "fine."];
        let mut got = Vec::new();
        for c in clauses {
            w.submit(c).unwrap();
            // Read as we go so the bounded queues never fill both ways.
            got.push(w.recv().unwrap());
        }
        w.close();
        assert!(w.recv().is_none());
        assert_eq!(
            got.iter().map(|s| s.index).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(got[0].speech.as_ref().unwrap().validate().is_ok());
        assert!(matches!(got[2].speech, Err(TtsError::Empty)));
    }

    #[test]
    fn load_errors_come_back() {
        let r = SynthWorker::spawn(|| Err::<FakeSynthesizer, _>(TtsError::Empty), 1);
        assert!(matches!(r, Err(TtsError::Empty)));
    }
}
