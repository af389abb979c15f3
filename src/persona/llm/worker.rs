//! [`LlmWorker`]: the engine on its own std thread.
//!
//! The thread loads the model, then serves requests from a bounded channel one at a time; each request
//! streams its text back over its own bounded channel and ends with the outcome. The handle implements
//! [`TextGenerator`] by sending a request and forwarding the pieces to `on_text` on the caller's thread;
//! if `on_text` returns `false` or the caller's [`CancelToken`] is set, the worker stops after the current
//! token. Dropping the handle ends the thread.

use super::{LlmEngine, LlmOptions, ThreadBudget};
use crate::persona::{
    CancelToken, ChatMessage, GenOutcome, GenParams, PersonaError, TextGenerator,
};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

enum Event {
    Text(String),
    Done(Result<GenOutcome, PersonaError>),
}

struct Request {
    /// Only evaluate ahead ([`TextGenerator::prepare`]); no events.
    prepare: bool,
    messages: Vec<ChatMessage>,
    params: GenParams,
    cancel: CancelToken,
    stop: CancelToken,
    events: Sender<Event>,
}

pub struct LlmWorker {
    requests: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
    budget: ThreadBudget,
}

impl LlmWorker {
    /// Start the thread and load the model there; returns once the model is loaded (or failed to).
    pub fn spawn(path: impl AsRef<Path>, mut opts: LlmOptions) -> Result<Self, PersonaError> {
        let path = path.as_ref().to_path_buf();
        let budget = opts
            .budget
            .get_or_insert_with(|| ThreadBudget::new(opts.threads.max(1)))
            .clone();
        let (req_tx, req_rx) = bounded::<Request>(4);
        let (ready_tx, ready_rx) = bounded::<Result<(), PersonaError>>(1);
        let p = path.clone();
        let thread = std::thread::Builder::new()
            .name("idol-llm".into())
            .spawn(move || match LlmEngine::load(&p, &opts) {
                Ok(engine) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(engine, req_rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| PersonaError::Other(format!("cannot start the LLM thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(LlmWorker {
                requests: Some(req_tx),
                thread: Some(thread),
                path,
                budget,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(PersonaError::Other(
                "the LLM thread died while loading".into(),
            )),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine's compute-thread budget (see [`ThreadBudget`]).
    pub fn budget(&self) -> &ThreadBudget {
        &self.budget
    }
}

fn serve(mut engine: LlmEngine, requests: Receiver<Request>) {
    for r in requests {
        if r.prepare {
            if let Err(e) = engine.prepare_next(&r.messages) {
                log::debug!("llm: evaluating ahead failed: {e}");
            }
            continue;
        }
        let events = r.events.clone();
        let stop = r.stop.clone();
        let mut on_text = |s: &str| -> bool {
            !stop.is_cancelled() && events.send(Event::Text(s.to_string())).is_ok()
        };
        let cancelled = || r.cancel.is_cancelled() || r.stop.is_cancelled();
        let res = engine
            .render(&r.messages)
            .and_then(|prompt| engine.generate_with(&prompt, &r.params, &cancelled, &mut on_text));
        let _ = r.events.send(Event::Done(res));
    }
}

impl TextGenerator for LlmWorker {
    fn generate(
        &mut self,
        messages: &[ChatMessage],
        params: &GenParams,
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenOutcome, PersonaError> {
        let (ev_tx, ev_rx) = bounded::<Event>(64);
        let stop = CancelToken::new();
        let req = Request {
            prepare: false,
            messages: messages.to_vec(),
            params: params.clone(),
            cancel: cancel.clone(),
            stop: stop.clone(),
            events: ev_tx,
        };
        self.requests
            .as_ref()
            .and_then(|tx| tx.send(req).ok())
            .ok_or_else(|| PersonaError::Generation("the LLM thread has stopped".into()))?;
        let mut stopped = false;
        for ev in ev_rx {
            match ev {
                Event::Text(s) => {
                    if !stopped && !on_text(&s) {
                        stopped = true;
                        stop.cancel();
                    }
                }
                Event::Done(res) => return res,
            }
        }
        Err(PersonaError::Generation(
            "the LLM thread stopped mid-generation".into(),
        ))
    }

    fn thread_budget(&self) -> Option<ThreadBudget> {
        Some(self.budget.clone())
    }

    /// Queued on the model's thread; returns at once (the next request waits behind it).
    fn prepare(&mut self, messages: &[ChatMessage]) -> Result<(), PersonaError> {
        let (events, _) = bounded::<Event>(1);
        let req = Request {
            prepare: true,
            messages: messages.to_vec(),
            params: GenParams::default(),
            cancel: CancelToken::new(),
            stop: CancelToken::new(),
            events,
        };
        self.requests
            .as_ref()
            .and_then(|tx| tx.send(req).ok())
            .ok_or_else(|| PersonaError::Generation("the LLM thread has stopped".into()))
    }
}

impl Drop for LlmWorker {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
