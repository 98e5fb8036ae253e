//! Durable job records, so a coordinator restart loses no job.
//!
//! A [`JobRecord`] is small JSON: the resolved spec, the status and the output directory, never
//! frames or latents (those stay in the data dir). [`EtcdJobStore`] keeps one record per job under
//! `/longshot/v1/jobs/{id}`; [`EmbeddedJobStore`] in `<data dir>/jobs.redb` (a coordinator without
//! etcd); [`NoJobStore`] (for `render` and `up`) keeps nothing.
//!
//! The coordinator saves a record on every state change and at most every
//! [`PROGRESS_WRITE_INTERVAL`] for progress alone. `save` never blocks (it is called with the job
//! table locked): both durable stores hand records to one writer task (`writer`), which coalesces
//! them per job (the latest wins) and retries with backoff while the store fails, so a record
//! written during an etcd restart lands once etcd is back. [`recover`] decides what a restarted
//! coordinator does with what it loads.

mod embedded;
mod etcd;
mod writer;

pub use embedded::EmbeddedJobStore;
pub use etcd::{EtcdJobStore, LeaderGuard};

use crate::checkpoints::CheckpointRef;
use crate::estimate::RunTiming;
use crate::lifecycle::{self, Transition};
use longshot_core::api::{BoxFuture, JobState, JobStatus};
use longshot_core::denoiser::ModelInfo;
use longshot_core::job::ResolvedJob;
use longshot_etcd::EtcdError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// The reason given to jobs that were running when their coordinator died (they run again).
pub const INTERRUPTED: &str = "the coordinator restarted while this job was running";

/// Progress-only changes of one job are written at most this often.
pub const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_secs(2);

/// How long a submission waits for its record to be stored before it is refused.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// How its successful run spent its time (`longshot estimate`'s measurements).
    #[serde(default)]
    pub timing: Option<RunTiming>,
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
    #[error("the job record could not be stored within {0:?} ({1})")]
    NotStored(Duration, &'static str),
    #[error("job store: {0}")]
    Embedded(String),
    #[error("the job record cannot be encoded")]
    Encode,
}

/// Where job records live.
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new job's record and waits until it is stored (at most [`CREATE_TIMEOUT`]): a job
    /// is accepted only once a coordinator restart cannot lose it.
    fn create(&self, record: JobRecord) -> BoxFuture<'_, Result<(), JobStoreError>>;
    /// Saves the record `record()` builds for `job_id`, unless `change` is progress written
    /// recently. Never blocks; `record` is only called when the record will be written.
    fn save(&self, job_id: &str, change: Change, record: &dyn Fn() -> JobRecord);
    /// Deletes a job's record (it expired). Never blocks.
    fn remove(&self, job_id: &str);
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

    fn remove(&self, _job_id: &str) {}

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
    /// Every loaded job, in submission order, with interrupted ones queued again.
    pub jobs: Vec<JobRecord>,
    /// Jobs that were running or decoding and are queued again (their records must be saved).
    pub interrupted: Vec<String>,
    /// The largest sequence number: new jobs continue after it.
    pub max_seq: u64,
}

/// Queued jobs stay queued (the job table orders them by priority and `seq` as before); jobs that
/// were running or decoding are interrupted with [`INTERRUPTED`]: queued again in their old place,
/// to resume from their last checkpoint; finished jobs are kept as they were.
pub fn recover(mut records: Vec<JobRecord>, now_unix_ms: u64) -> Recovery {
    records.sort_by_key(|r| r.seq);
    let mut interrupted = Vec::new();
    for r in &mut records {
        if matches!(r.status.state, JobState::Running | JobState::Decoding) {
            lifecycle::apply(
                &mut r.status,
                Transition::Interrupt(INTERRUPTED.to_string()),
                now_unix_ms,
            )
            .expect("running and decoding jobs may be interrupted");
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
