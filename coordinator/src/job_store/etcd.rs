//! Job records in etcd, one small JSON value per job under `/longshot/v1/jobs/{id}`, each naming
//! the data dir of the coordinator that owns it. Written by the shared writer
//! ([`super::writer`]); with a leader guard every write is a transaction on the leader key's
//! create revision, so a deposed leader's late writes fail.

use super::writer::{Batch, Sink, SinkError, WriteQueue};
use super::{Change, JobRecord, JobStore, JobStoreError};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use longshot_core::api::BoxFuture;
use longshot_etcd::schema::{job_key, JOBS_PREFIX};
use longshot_etcd::{connect, connect_once, prefix_end, timed, EtcdError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// Records read per request when loading (a record with a long prompt and 1000 steps is ~60 KB).
const LOAD_PAGE: i64 = 32;

/// The leader key (and its create revision) that every write is conditional on.
#[derive(Clone, Debug)]
pub struct LeaderGuard {
    pub key: Vec<u8>,
    pub create_revision: i64,
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

/// Job records in etcd (see the module doc).
pub struct EtcdJobStore {
    data_dir: PathBuf,
    client: Client,
    queue: WriteQueue,
}

impl EtcdJobStore {
    /// Connects (retrying for at most `patience`) and starts the writer. `data_dir` identifies
    /// this coordinator's records: pass the same (absolute) path after a restart.
    pub async fn open(endpoints: Vec<String>, data_dir: PathBuf, patience: Duration) -> Result<Self, EtcdError> {
        Self::open_guarded(endpoints, data_dir, patience, None).await
    }

    /// Like [`EtcdJobStore::open`], writing only while `guard` (this coordinator's leader key)
    /// still exists with the same create revision.
    pub async fn open_guarded(
        endpoints: Vec<String>,
        data_dir: PathBuf,
        patience: Duration,
        guard: Option<LeaderGuard>,
    ) -> Result<Self, EtcdError> {
        let client = connect(&endpoints, patience).await?;
        let sink = EtcdSink {
            endpoints,
            client: Some(client.clone()),
            guard,
        };
        Ok(Self {
            data_dir,
            client,
            queue: WriteQueue::start(sink, "is etcd reachable?"),
        })
    }

    /// Why this store stopped writing: its leader key is gone (another coordinator leads).
    pub fn fenced(&self) -> watch::Receiver<Option<String>> {
        self.queue.fenced()
    }

    fn encode(&self, record: &JobRecord) -> Option<Vec<u8>> {
        let stored = StoredRef {
            data_dir: &self.data_dir,
            record,
        };
        serde_json::to_vec(&stored)
            .map_err(|e| tracing::error!(job = %record.status.job_id, "cannot encode the job record: {e}"))
            .ok()
    }
}

impl JobStore for EtcdJobStore {
    fn create(&self, record: JobRecord) -> BoxFuture<'_, Result<(), JobStoreError>> {
        Box::pin(async move {
            let value = self.encode(&record).ok_or(JobStoreError::Encode)?;
            self.queue.create(record.status.job_id, value).await
        })
    }

    fn save(&self, job_id: &str, change: Change, record: &dyn Fn() -> JobRecord) {
        self.queue.save(job_id, change, record, |r| self.encode(r));
    }

    fn remove(&self, job_id: &str) {
        self.queue.remove(job_id);
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
        self.queue.flush(timeout)
    }
}

struct EtcdSink {
    endpoints: Vec<String>,
    /// `None` after a failure: etcd-client's channels do not recover from an etcd restart.
    client: Option<Client>,
    guard: Option<LeaderGuard>,
}

impl EtcdSink {
    async fn write_all(&mut self, batch: Batch) -> Result<(), SinkError> {
        let retry = |e: EtcdError| SinkError::Retry(e.to_string());
        if self.client.is_none() {
            self.client = Some(connect_once(&self.endpoints).await.map_err(retry)?);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(SinkError::Retry("no client".into()));
        };
        for (id, value) in batch {
            let op = match value {
                Some(v) => TxnOp::put(job_key(&id), v, None),
                None => TxnOp::delete(job_key(&id), None),
            };
            let mut txn = Txn::new();
            if let Some(g) = &self.guard {
                txn = txn.when([Compare::create_revision(
                    g.key.clone(),
                    CompareOp::Equal,
                    g.create_revision,
                )]);
            }
            let resp = timed(client.txn(txn.and_then([op]))).await.map_err(retry)?;
            if !resp.succeeded() {
                return Err(SinkError::Fenced(format!(
                    "this coordinator's leader key {} is gone: another coordinator leads",
                    String::from_utf8_lossy(&self.guard.as_ref().map(|g| g.key.clone()).unwrap_or_default())
                )));
            }
        }
        Ok(())
    }
}

impl Sink for EtcdSink {
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let r = self.write_all(batch).await;
            if matches!(r, Err(SinkError::Retry(_))) {
                self.client = None;
            }
            r
        })
    }
}
