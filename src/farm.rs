//! The render farm (`idol render --queue`, `idol worker`, `idol jobs`; `docs/scale.md`): scripts
//! submitted as jobs to a JetStream work-queue stream, rendered by any number of workers, each job
//! acknowledged only once its outputs are written.
//!
//! - Jobs: stream [`STREAM`] on subject [`JOBS_SUBJECT`], retention "work queue" (a message is
//!   removed once acknowledged); one durable pull consumer [`CONSUMER`] shared by every worker, so
//!   each job goes to one worker at a time.
//! - Crashed workers: a job not acknowledged within the consumer's `ack_wait` is delivered again (to
//!   another worker). A worker rendering keeps its job with "in progress" acknowledgements every
//!   third of `ack_wait`, so only a dead worker loses it.
//! - Exactly once: outputs are written whole into the job's folder (a temporary folder moved in,
//!   see [`crate::script::write_dir`]), then the job's status becomes `done` in the key-value
//!   stream [`STATUS_STREAM`], then it is acknowledged. A delivery of a job already `done` (its
//!   worker died between the status and the ack) is acknowledged without rendering again.
//! - A script that fails to render fails the same way everywhere: it is marked `failed` with the
//!   error and terminated (not delivered again).
//! - Progress: `idol.jobs.events.<id>` carries JSON events (`started`, `line`, `done`, `failed`)
//!   and the status stream the latest state of every job (`idol jobs`).
//! - Outputs: into the folder the job names (a shared file system), or, for a job with `store`,
//!   into the JetStream object store bucket it names, as objects `<job id>/<file>` (the worker
//!   renders into a private staging folder, puts each file, then marks the job done);
//!   [`Queue::fetch`] gets them back, byte for byte.
//!
//! Rendering itself is the caller's ([`Queue::work`] takes the render function), so a worker renders
//! exactly what a local `idol render` does.

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The work-queue stream of jobs.
pub const STREAM: &str = "IDOL_JOBS";
/// The subject jobs are published on.
pub const JOBS_SUBJECT: &str = "idol.jobs.queue";
/// The durable consumer every worker pulls from.
pub const CONSUMER: &str = "idol-workers";
/// The stream of job statuses: the last message on `idol.jobs.status.<id>` is job `<id>`'s status
/// (one kept per subject: a key-value store on plain JetStream, which nats-server 2.9 serves).
pub const STATUS_STREAM: &str = "IDOL_JOB_STATUS";
/// The subject of a job's status.
pub fn status_subject(id: &str) -> String {
    format!("idol.jobs.status.{id}")
}
/// Largest script a job carries.
pub const MAX_SCRIPT_BYTES: usize = 512 * 1024;
/// The object store bucket `idol render --queue --store` puts outputs in.
pub const OUTPUT_BUCKET: &str = "idol-renders";
/// The object holding file `file` of job `id`.
pub fn object_name(id: &str, file: &str) -> String {
    format!("{id}/{file}")
}

/// The render settings of a job: what `idol render` takes on its command line besides the script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobSettings {
    pub voice: Option<String>,
    pub speaker: Option<String>,
    pub rig: Option<String>,
    pub fps: Option<u32>,
    pub seed: Option<u64>,
    pub threads: usize,
}

/// One script to render.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// The script's path where it was submitted (its name in messages and outputs).
    pub path: PathBuf,
    /// The script's text.
    pub script: String,
    /// The folder the outputs go to (absolute; shared by the submitter and the workers); unused
    /// with `store`.
    pub out: PathBuf,
    pub settings: JobSettings,
    /// The object store bucket the outputs go to instead of `out` (objects `<id>/<file>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

impl Job {
    /// A job with a fresh id.
    pub fn new(path: PathBuf, script: String, out: PathBuf, settings: JobSettings) -> Job {
        let id: u64 = rand::random();
        Job {
            id: format!("{id:016x}"),
            path,
            script,
            out,
            settings,
            store: None,
        }
    }

    /// The same job with its outputs going to object store bucket `bucket`.
    pub fn into_store(mut self, bucket: &str) -> Job {
        self.out = PathBuf::new();
        self.store = Some(bucket.to_string());
        self
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Rendering,
    Done,
    Failed,
}

/// The latest state of a job, as the status stream keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub path: PathBuf,
    pub out: PathBuf,
    pub state: JobState,
    /// The worker rendering it (or that rendered it).
    pub worker: Option<String>,
    /// Deliveries so far (more than one after a worker died).
    pub attempts: u64,
    pub error: Option<String>,
    /// The files written (names in `out`, or objects `<id>/<name>` in `store`).
    pub files: Vec<String>,
    /// The object store bucket holding the outputs (`None`: the folder `out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    #[error(
        "NATS {url}: {why} (the render queue needs nats-server with JetStream: `nats-server -js`)"
    )]
    Connect { url: String, why: String },
    #[error("render queue: {0}")]
    JetStream(String),
    #[error("job {id}: {why}")]
    Fetch { id: String, why: String },
    #[error("{path}: the script is {len} bytes; a queued job carries at most {max}")]
    TooLarge {
        path: String,
        len: usize,
        max: usize,
    },
}

fn js_err(e: impl std::fmt::Display) -> FarmError {
    FarmError::JetStream(e.to_string())
}

/// What a worker did with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(JobStatus),
    Failed(JobStatus),
    /// Delivered again after it was done: acknowledged, not rendered.
    AlreadyDone(String),
}

/// The job queue on one NATS server.
pub struct Queue {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    status: stream::Stream,
    ack_wait: Duration,
}

impl Queue {
    /// Connect and make the stream, the consumer and the status bucket where missing. `ack_wait`
    /// (how long a delivered job may go without word from its worker before it is delivered again)
    /// applies when this call creates the consumer.
    pub async fn open(url: &str, ack_wait: Duration) -> Result<Queue, FarmError> {
        let client = async_nats::ConnectOptions::new()
            .name("idol farm")
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| FarmError::Connect {
                url: url.to_string(),
                why: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![JOBS_SUBJECT.into()],
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .map_err(js_err)?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait,
                    ..Default::default()
                },
            )
            .await
            .map_err(js_err)?;
        let ack_wait = consumer.cached_info().config.ack_wait;
        let status = js
            .get_or_create_stream(stream::Config {
                name: STATUS_STREAM.into(),
                subjects: vec![status_subject("*")],
                max_messages_per_subject: 1,
                ..Default::default()
            })
            .await
            .map_err(js_err)?;
        Ok(Queue {
            client,
            js,
            stream,
            status,
            ack_wait,
        })
    }

    /// The consumer's `ack_wait`.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// Queue a job (its status first, so `idol jobs` lists it at once).
    pub async fn submit(&self, job: &Job) -> Result<(), FarmError> {
        if let Some(b) = &job.store {
            self.bucket(b).await?;
        }
        if job.script.len() > MAX_SCRIPT_BYTES {
            return Err(FarmError::TooLarge {
                path: job.path.display().to_string(),
                len: job.script.len(),
                max: MAX_SCRIPT_BYTES,
            });
        }
        self.put_status(&JobStatus {
            id: job.id.clone(),
            path: job.path.clone(),
            out: job.out.clone(),
            state: JobState::Queued,
            worker: None,
            attempts: 0,
            error: None,
            files: vec![],
            store: job.store.clone(),
        })
        .await?;
        let body = serde_json::to_vec(job).map_err(js_err)?;
        self.js
            .publish(JOBS_SUBJECT, body.into())
            .await
            .map_err(js_err)?
            .await
            .map_err(js_err)?;
        Ok(())
    }

    async fn put_status(&self, s: &JobStatus) -> Result<(), FarmError> {
        let body = serde_json::to_vec(s).map_err(js_err)?;
        self.js
            .publish(status_subject(&s.id), body.into())
            .await
            .map_err(js_err)?
            .await
            .map_err(js_err)?;
        Ok(())
    }

    /// Object store bucket `name`, made when missing.
    async fn bucket(
        &self,
        name: &str,
    ) -> Result<async_nats::jetstream::object_store::ObjectStore, FarmError> {
        match self.js.get_object_store(name).await {
            Ok(b) => Ok(b),
            Err(_) => self
                .js
                .create_object_store(async_nats::jetstream::object_store::Config {
                    bucket: name.to_string(),
                    description: Some("idol render outputs: <job id>/<file>".into()),
                    ..Default::default()
                })
                .await
                .map_err(|e| js_err(format!("object store bucket {name}: {e}"))),
        }
    }

    /// Put the files `names` of folder `dir` into `bucket` as job `id`'s outputs.
    async fn put_outputs(
        &self,
        bucket: &str,
        id: &str,
        dir: &std::path::Path,
        names: &[String],
    ) -> Result<(), FarmError> {
        let b = self.bucket(bucket).await?;
        for n in names {
            let path = dir.join(n);
            let bytes = std::fs::read(&path)
                .map_err(|e| js_err(format!("reading {}: {e}", path.display())))?;
            b.put(object_name(id, n).as_str(), &mut &bytes[..])
                .await
                .map_err(|e| js_err(format!("storing {}: {e}", object_name(id, n))))?;
        }
        Ok(())
    }

    /// Job `id`'s outputs from the object store, written into folder `out` (created if missing; a
    /// file is written under a temporary name, then renamed). The names of the files written.
    pub async fn fetch(&self, id: &str, out: &std::path::Path) -> Result<Vec<String>, FarmError> {
        use tokio::io::AsyncReadExt;
        let fetch_err = |why: String| FarmError::Fetch {
            id: id.to_string(),
            why,
        };
        let s = self
            .status(id)
            .await?
            .ok_or_else(|| fetch_err("no such job (see `idol jobs`)".into()))?;
        let Some(bucket) = &s.store else {
            return Err(fetch_err(format!(
                "its outputs went to the folder {}, not the object store",
                s.out.display()
            )));
        };
        if s.state != JobState::Done {
            return Err(fetch_err(format!(
                "it is {}, not done",
                serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )));
        }
        let b = self
            .js
            .get_object_store(bucket)
            .await
            .map_err(|e| fetch_err(format!("object store bucket {bucket}: {e}")))?;
        std::fs::create_dir_all(out)
            .map_err(|e| fetch_err(format!("creating {}: {e}", out.display())))?;
        let mut written = vec![];
        for n in &s.files {
            // Names come from the job's status: take plain file names only.
            if n.is_empty() || n.contains(['/', '\\']) || n.starts_with('.') {
                return Err(fetch_err(format!("bad output name {n:?}")));
            }
            let mut obj = b
                .get(object_name(id, n))
                .await
                .map_err(|e| fetch_err(format!("{}: {e}", object_name(id, n))))?;
            let part = out.join(format!(".{n}.part"));
            let io = |e: std::io::Error, p: &std::path::Path| {
                fetch_err(format!("writing {}: {e}", p.display()))
            };
            let mut f = std::fs::File::create(&part).map_err(|e| io(e, &part))?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let k = obj
                    .read(&mut buf)
                    .await
                    .map_err(|e| fetch_err(format!("{}: {e}", object_name(id, n))))?;
                if k == 0 {
                    break;
                }
                std::io::Write::write_all(&mut f, &buf[..k]).map_err(|e| io(e, &part))?;
            }
            drop(f);
            let dest = out.join(n);
            std::fs::rename(&part, &dest).map_err(|e| io(e, &dest))?;
            written.push(n.clone());
        }
        Ok(written)
    }

    /// A job's status.
    pub async fn status(&self, id: &str) -> Result<Option<JobStatus>, FarmError> {
        match self
            .status
            .get_last_raw_message_by_subject(&status_subject(id))
            .await
        {
            Ok(m) => Ok(serde_json::from_slice(&m.payload).ok()),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(js_err(e)),
        }
    }

    /// Every job's status, in no particular order: one pass of an ordered consumer over the
    /// status stream (it keeps one message per job), not a request per job.
    pub async fn statuses(&self) -> Result<Vec<JobStatus>, FarmError> {
        let total = self.status.get_info().await.map_err(js_err)?.state.messages;
        if total == 0 {
            return Ok(vec![]);
        }
        let consumer = self
            .status
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(js_err)?;
        let mut messages = consumer.messages().await.map_err(js_err)?;
        // A status written during the pass comes again later in it: the last one read counts.
        let mut by_id: std::collections::HashMap<String, JobStatus> = Default::default();
        while let Some(m) = messages.next().await {
            let m = m.map_err(js_err)?;
            let pending = m.info().map_err(js_err)?.pending;
            if let Ok(s) = serde_json::from_slice::<JobStatus>(&m.payload) {
                by_id.insert(s.id.clone(), s);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(by_id.into_values().collect())
    }

    /// Jobs waiting in the stream (not yet acknowledged).
    pub async fn pending(&mut self) -> Result<u64, FarmError> {
        Ok(self.stream.info().await.map_err(js_err)?.state.messages)
    }

    async fn event(&self, id: &str, v: serde_json::Value) {
        let _ = self
            .client
            .publish(format!("idol.jobs.events.{id}"), v.to_string().into())
            .await;
        // Out before the worker may exit.
        let _ = self.client.flush().await;
    }

    /// Take jobs one at a time and render each with `render(job, progress)` (blocking; it runs on
    /// this thread while the job is kept alive), which writes the outputs and returns their file
    /// names, or an error. Stops after `max_jobs` deliveries (`None`: never).
    pub async fn work<R>(
        &self,
        worker: &str,
        max_jobs: Option<usize>,
        mut render: R,
    ) -> Result<Vec<Outcome>, FarmError>
    where
        R: FnMut(&Job, &mut dyn FnMut(usize, usize)) -> Result<Vec<String>, String>,
    {
        let consumer: consumer::PullConsumer =
            self.stream.get_consumer(CONSUMER).await.map_err(js_err)?;
        let mut outcomes = vec![];
        while max_jobs.is_none_or(|m| outcomes.len() < m) {
            let mut batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .map_err(js_err)?;
            let Some(msg) = batch.next().await else {
                continue;
            };
            let msg = msg.map_err(js_err)?;
            outcomes.push(self.one(worker, msg, &mut render).await?);
        }
        Ok(outcomes)
    }

    async fn one<R>(
        &self,
        worker: &str,
        msg: jetstream::Message,
        render: &mut R,
    ) -> Result<Outcome, FarmError>
    where
        R: FnMut(&Job, &mut dyn FnMut(usize, usize)) -> Result<Vec<String>, String>,
    {
        let attempts = msg.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
        let job: Job = match serde_json::from_slice(&msg.payload) {
            Ok(j) => j,
            Err(e) => {
                log::error!("render queue: dropping a message that is not a job: {e}");
                let _ = msg.ack_with(AckKind::Term).await;
                return Ok(Outcome::Failed(JobStatus {
                    id: String::new(),
                    path: PathBuf::new(),
                    out: PathBuf::new(),
                    state: JobState::Failed,
                    worker: Some(worker.into()),
                    attempts,
                    error: Some(format!("not a job: {e}")),
                    files: vec![],
                    store: None,
                }));
            }
        };
        if let Some(s) = self.status(&job.id).await?
            && s.state == JobState::Done
        {
            msg.double_ack().await.map_err(js_err)?;
            return Ok(Outcome::AlreadyDone(job.id));
        }
        let mut status = JobStatus {
            id: job.id.clone(),
            path: job.path.clone(),
            out: job.out.clone(),
            state: JobState::Rendering,
            worker: Some(worker.into()),
            attempts,
            error: None,
            files: vec![],
            store: job.store.clone(),
        };
        self.put_status(&status).await?;
        self.event(
            &job.id,
            serde_json::json!({"event": "started", "worker": worker, "attempt": attempts}),
        )
        .await;
        // Keep the job while rendering, and pass progress on.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, usize)>();
        let keep = {
            let msg = msg.clone();
            let every = self.ack_wait / 3;
            let client = self.client.clone();
            let id = job.id.clone();
            let worker = worker.to_string();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let _ = msg.ack_with(AckKind::Progress).await;
                        }
                        p = rx.recv() => match p {
                            Some((done, total)) => {
                                let v = serde_json::json!({"event": "line", "worker": worker, "line": done, "lines": total});
                                let _ = client.publish(format!("idol.jobs.events.{id}"), v.to_string().into()).await;
                            }
                            None => break,
                        }
                    }
                }
            })
        };
        // A job for the object store renders into a private staging folder first.
        let staging = match &job.store {
            Some(_) => Some(
                tempfile::Builder::new()
                    .prefix("idol-job-")
                    .tempdir()
                    .map_err(|e| js_err(format!("a staging folder: {e}")))?,
            ),
            None => None,
        };
        let mut local = job.clone();
        if let Some(d) = &staging {
            local.out = d.path().join("out");
        }
        let result = tokio::task::block_in_place(|| {
            let mut progress = |done: usize, total: usize| {
                let _ = tx.send((done, total));
            };
            render(&local, &mut progress)
        });
        let result = match (result, &job.store) {
            (Ok(files), Some(bucket)) => {
                // Stored before the job is done: a worker dying here leaves it to be done again.
                self.put_outputs(bucket, &job.id, &local.out, &files)
                    .await?;
                Ok(files)
            }
            (r, _) => r,
        };
        drop(staging);
        drop(tx);
        let _ = keep.await;
        match result {
            Ok(files) => {
                status.state = JobState::Done;
                status.files = files;
                self.put_status(&status).await?;
                msg.double_ack().await.map_err(js_err)?;
                self.event(
                    &job.id,
                    serde_json::json!({"event": "done", "worker": worker, "files": status.files}),
                )
                .await;
                Ok(Outcome::Done(status))
            }
            Err(e) => {
                status.state = JobState::Failed;
                status.error = Some(e.clone());
                self.put_status(&status).await?;
                let _ = msg.ack_with(AckKind::Term).await;
                self.event(
                    &job.id,
                    serde_json::json!({"event": "failed", "worker": worker, "error": e}),
                )
                .await;
                Ok(Outcome::Failed(status))
            }
        }
    }
}
