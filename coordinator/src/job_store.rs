//! Durable job records, so a coordinator restart loses no job.
//!
//! A [`JobRecord`] is small JSON: the resolved spec, the status and the output directory, never
//! frames or latents (those stay in the data dir). [`EtcdJobStore`] keeps one record per job under
//! `/longshot/v1/jobs/{id}`; [`NoJobStore`] (the default, for `render` and `up`) keeps nothing.
//!
//! The coordinator saves a record on every state change and at most every
//! [`PROGRESS_WRITE_INTERVAL`] for progress alone. `save` never blocks (it is called with the job
//! table locked): records go to one writer task, which coalesces them per job (the latest wins)
//! and retries with backoff while etcd is unreachable, so a record written during an etcd restart
//! lands once etcd is back. [`recover`] decides what a restarted coordinator does with what it
//! loads.

use crate::checkpoints::CheckpointRef;
use crate::lifecycle::{self, Transition};
use etcd_client::{Client, GetOptions};
use longshot_core::api::{BoxFuture, JobState, JobStatus};
use longshot_core::denoiser::ModelInfo;
use longshot_core::job::ResolvedJob;
use longshot_etcd::schema::{job_key, JOBS_PREFIX};
use longshot_etcd::{connect, connect_once, prefix_end, timed, Backoff, EtcdError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// The reason given to jobs that were running when their coordinator died.
pub const INTERRUPTED: &str = "interrupted: the coordinator restarted while this job was running";

/// Progress-only changes of one job are written at most this often.
pub const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_secs(2);

/// How long a submission waits for its record to be stored before it is refused.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Records read per request when loading (a record with a long prompt and 1000 steps is ~60 KB).
const LOAD_PAGE: i64 = 32;

/// Everything needed to report a job again or run it from the start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Submission order on its coordinator (queue order within a priority, and the job id).
    pub seq: u64,
    pub status: JobStatus,
    pub resolved: ResolvedJob,
    pub model: ModelInfo,
    /// Where the job's outputs are written (`<data dir>/jobs/<id>`).
    pub dir: PathBuf,
    /// The last complete checkpoint, which a resumed run starts from.
    #[serde(default)]
    pub checkpoint: Option<CheckpointRef>,
}

/// What changed, which decides whether a save may be skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Queued, started, decoding, done, failed, cancelled: always written.
    State,
    /// Steps or frames done: written at most every [`PROGRESS_WRITE_INTERVAL`] per job.
    Progress,
}

#[derive(Debug, Error)]
pub enum JobStoreError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("the job record could not be stored within {0:?} (is etcd reachable?)")]
    NotStored(Duration),
}

/// Where job records live.
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new job's record and waits until it is stored (at most [`CREATE_TIMEOUT`]): a job
    /// is accepted only once a coordinator restart cannot lose it.
    fn create(&self, record: JobRecord) -> BoxFuture<'_, Result<(), JobStoreError>>;
    /// Saves the record `record()` builds for `job_id`, unless `change` is progress written
    /// recently. Never blocks; `record` is only called when the record will be written.
    fn save(&self, job_id: &str, change: Change, record: &dyn Fn() -> JobRecord);
    /// This coordinator's records, in submission order.
    fn load(&self) -> BoxFuture<'_, Result<Vec<JobRecord>, JobStoreError>>;
    /// Waits until every record saved so far is stored; `false` if that took longer than `timeout`.
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, bool>;
}

/// No persistence: the job table itself is the only copy (local clusters).
pub struct NoJobStore;

impl JobStore for NoJobStore {
    fn create(&self, _record: JobRecord) -> BoxFuture<'_, Result<(), JobStoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn save(&self, _job_id: &str, _change: Change, _record: &dyn Fn() -> JobRecord) {}

    fn load(&self) -> BoxFuture<'_, Result<Vec<JobRecord>, JobStoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

/// What a restarted coordinator starts from.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every loaded job, in submission order, with interrupted ones marked failed.
    pub jobs: Vec<JobRecord>,
    /// Jobs that were running or decoding and are now failed (their records must be saved).
    pub interrupted: Vec<String>,
    /// The largest sequence number: new jobs continue after it.
    pub max_seq: u64,
}

/// Queued jobs stay queued (the job table orders them by priority and `seq` as before); jobs that
/// were running or decoding fail with [`INTERRUPTED`] (resuming them is a later feature); finished
/// jobs are kept as they were.
pub fn recover(mut records: Vec<JobRecord>, now_unix_ms: u64) -> Recovery {
    records.sort_by_key(|r| r.seq);
    let mut interrupted = Vec::new();
    for r in &mut records {
        if matches!(r.status.state, JobState::Running | JobState::Decoding) {
            lifecycle::apply(&mut r.status, Transition::Fail(INTERRUPTED.to_string()), now_unix_ms)
                .expect("running and decoding jobs may fail");
            interrupted.push(r.status.job_id.clone());
        }
    }
    let max_seq = records.iter().map(|r| r.seq).max().unwrap_or(0);
    Recovery {
        jobs: records,
        interrupted,
        max_seq,
    }
}

/// A record as stored: the owning coordinator's data dir and the record. Several coordinators
/// may share one etcd; each loads only the records of its own data dir.
#[derive(Serialize)]
struct StoredRef<'a> {
    data_dir: &'a Path,
    record: &'a JobRecord,
}

#[derive(Deserialize)]
struct Stored {
    data_dir: PathBuf,
    record: JobRecord,
}

enum Write {
    /// `stored` is told once this value (or a newer one of the same job) is in etcd.
    Put {
        job_id: String,
        value: Vec<u8>,
        stored: Option<oneshot::Sender<()>>,
    },
    /// Drops a job's unwritten value (its submission was refused).
    Forget(String),
    Flush(oneshot::Sender<()>),
}

/// Job records in etcd (see the module doc).
pub struct EtcdJobStore {
    data_dir: PathBuf,
    client: Client,
    writes: mpsc::UnboundedSender<Write>,
    last_write: Mutex<HashMap<String, Instant>>,
    writer: tokio::task::JoinHandle<()>,
}

impl EtcdJobStore {
    /// Connects (retrying for at most `patience`) and starts the writer. `data_dir` identifies
    /// this coordinator's records: pass the same (absolute) path after a restart.
    pub async fn open(endpoints: Vec<String>, data_dir: PathBuf, patience: Duration) -> Result<Self, EtcdError> {
        let client = connect(&endpoints, patience).await?;
        let (writes, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(
            Writer {
                endpoints,
                client: Some(client.clone()),
                pending: HashMap::new(),
                flushes: Vec::new(),
            }
            .run(rx),
        );
        Ok(Self {
            data_dir,
            client,
            writes,
            last_write: Mutex::new(HashMap::new()),
            writer,
        })
    }

    /// Whether a change of `job_id` is written now; notes the write.
    fn due(&self, job_id: &str, change: Change) -> bool {
        let mut last = self.last_write.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if change == Change::Progress
            && last
                .get(job_id)
                .is_some_and(|t| now.duration_since(*t) < PROGRESS_WRITE_INTERVAL)
        {
            return false;
        }
        last.insert(job_id.to_string(), now);
        true
    }

    fn encode(&self, record: &JobRecord) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&StoredRef {
            data_dir: &self.data_dir,
            record,
        })
    }

    /// A finished job makes no more progress: forget its last write time.
    fn finished(&self, job_id: &str) {
        self.last_write.lock().unwrap_or_else(|p| p.into_inner()).remove(job_id);
    }
}

impl Drop for EtcdJobStore {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl JobStore for EtcdJobStore {
    fn create(&self, record: JobRecord) -> BoxFuture<'_, Result<(), JobStoreError>> {
        Box::pin(async move {
            let job_id = record.status.job_id.clone();
            let value = self
                .encode(&record)
                .map_err(|e| JobStoreError::Etcd(EtcdError::Request(format!("encoding the job record: {e}"))))?;
            self.due(&job_id, Change::State);
            let (tx, rx) = oneshot::channel();
            let _ = self.writes.send(Write::Put {
                job_id: job_id.clone(),
                value,
                stored: Some(tx),
            });
            match tokio::time::timeout(CREATE_TIMEOUT, rx).await {
                Ok(Ok(())) => Ok(()),
                _ => {
                    // Refused jobs must not reappear after a restart; a write already under way
                    // may still land (the submitter was told the job was not accepted).
                    let _ = self.writes.send(Write::Forget(job_id));
                    Err(JobStoreError::NotStored(CREATE_TIMEOUT))
                }
            }
        })
    }

    fn save(&self, job_id: &str, change: Change, record: &dyn Fn() -> JobRecord) {
        if !self.due(job_id, change) {
            return;
        }
        let record = record();
        if record.status.state.is_terminal() {
            self.finished(job_id);
        }
        match self.encode(&record) {
            Ok(value) => {
                let _ = self.writes.send(Write::Put {
                    job_id: job_id.to_string(),
                    value,
                    stored: None,
                });
            }
            Err(e) => tracing::error!(job = %job_id, "cannot encode the job record: {e}"),
        }
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<JobRecord>, JobStoreError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let end = prefix_end(JOBS_PREFIX);
            let mut from = JOBS_PREFIX.as_bytes().to_vec();
            let mut revision = 0;
            let (mut records, mut foreign, mut broken) = (Vec::new(), HashMap::<PathBuf, usize>::new(), 0usize);
            loop {
                // Every page reads the same revision, so the pages form one consistent snapshot.
                let mut opts = GetOptions::new().with_range(end.clone()).with_limit(LOAD_PAGE);
                if revision > 0 {
                    opts = opts.with_revision(revision);
                }
                let resp = timed(client.get(from.clone(), Some(opts))).await?;
                if revision == 0 {
                    revision = resp.header().map_or(0, |h| h.revision());
                }
                for kv in resp.kvs() {
                    let key = String::from_utf8_lossy(kv.key());
                    match serde_json::from_slice::<Stored>(kv.value()) {
                        Ok(s) if key.strip_prefix(JOBS_PREFIX) != Some(s.record.status.job_id.as_str()) => {
                            tracing::error!("job record {key} holds job {:?}; ignoring it", s.record.status.job_id);
                            broken += 1;
                        }
                        Ok(s) if s.data_dir == self.data_dir => records.push(s.record),
                        Ok(s) => *foreign.entry(s.data_dir).or_default() += 1,
                        Err(e) => {
                            tracing::error!("job record {key} cannot be read ({e}); ignoring it");
                            broken += 1;
                        }
                    }
                }
                match resp.kvs().last() {
                    Some(last) if resp.more() => {
                        from = last.key().to_vec();
                        from.push(0);
                    }
                    _ => break,
                }
            }
            for (dir, n) in &foreign {
                tracing::info!(
                    "{n} job records in etcd belong to the coordinator with data dir {}; left alone",
                    dir.display()
                );
            }
            if broken > 0 {
                tracing::error!(
                    "{broken} job records in etcd could not be used (see above); they are left in etcd untouched"
                );
            }
            records.sort_by_key(|r| r.seq);
            Ok(records)
        })
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        let (tx, rx) = oneshot::channel();
        let sent = self.writes.send(Write::Flush(tx)).is_ok();
        Box::pin(async move { sent && matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(()))) })
    }
}

/// The one task that writes records, in order, coalesced per job.
struct Writer {
    endpoints: Vec<String>,
    client: Option<Client>,
    /// Per job: the latest unwritten value and whom to tell once it is written.
    pending: HashMap<String, (Vec<u8>, Vec<oneshot::Sender<()>>)>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Write>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut failures = 0u32;
        loop {
            if self.pending.is_empty() {
                for f in self.flushes.drain(..) {
                    let _ = f.send(());
                }
                match rx.recv().await {
                    Some(w) => self.absorb(w),
                    None => return,
                }
            }
            while let Ok(w) = rx.try_recv() {
                self.absorb(w);
            }
            match self.write_pending().await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!("job records are being written to etcd again after {failures} failed attempts");
                    }
                    failures = 0;
                    backoff.reset();
                }
                Err(e) => {
                    failures += 1;
                    self.client = None;
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        "writing {} job records to etcd failed ({e}); retrying in {delay:?} (attempt {failures})",
                        self.pending.len()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn absorb(&mut self, w: Write) {
        match w {
            Write::Put { job_id, value, stored } => {
                let entry = self.pending.entry(job_id).or_default();
                entry.0 = value;
                entry.1.extend(stored);
            }
            Write::Forget(job_id) => {
                self.pending.remove(&job_id);
            }
            Write::Flush(tx) => self.flushes.push(tx),
        }
    }

    async fn write_pending(&mut self) -> Result<(), EtcdError> {
        if self.client.is_none() {
            self.client = Some(connect_once(&self.endpoints).await?);
        }
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| EtcdError::Request("no client".into()))?;
        let ids: Vec<String> = self.pending.keys().cloned().collect();
        for id in ids {
            let Some((value, _)) = self.pending.get(&id) else {
                continue;
            };
            timed(client.put(job_key(&id), value.clone(), None)).await?;
            for tx in self.pending.remove(&id).map(|p| p.1).unwrap_or_default() {
                let _ = tx.send(());
            }
        }
        Ok(())
    }
}
