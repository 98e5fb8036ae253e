//! Job records in an embedded database, `<data dir>/jobs.redb`, for a coordinator without etcd.
//! One JSON record per job (the same [`JobRecord`] etcd holds), written by the shared writer
//! ([`super::writer`]) in one transaction per batch on a blocking thread. redb locks the file, so
//! a second coordinator on the same data dir is refused. After an I/O error (a full disk) redb
//! refuses every later transaction until the database is reopened, so the writer reopens it
//! before its next attempt: a full disk costs the writes made while it was full, not every later
//! one.

use super::writer::{Batch, Sink, SinkError, WriteQueue};
use super::{Change, JobRecord, JobStore, JobStoreError};
use longshot_core::api::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The file in the data dir.
pub const FILE: &str = "jobs.redb";

/// Job id → the record as JSON.
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

/// Job records in `<data dir>/jobs.redb` (see the module doc).
pub struct EmbeddedJobStore {
    db: Arc<Handle>,
    path: PathBuf,
    queue: WriteQueue,
}

/// The open database, reopened after an I/O error.
struct Handle {
    path: PathBuf,
    db: Mutex<Option<Arc<Database>>>,
}

impl Handle {
    /// The open database, opening it again if an I/O error closed it. Blocking.
    fn get(&self) -> Result<Arc<Database>, redb::Error> {
        let mut slot = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let db = Arc::new(Database::create(&self.path)?);
        tracing::info!("reopened {} after an i/o error", self.path.display());
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Closes the database after `e` if redb needs it reopened to go on.
    fn after(&self, e: &redb::Error) {
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
            *self.db.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

impl EmbeddedJobStore {
    /// Opens (or creates) the database in `data_dir`.
    pub async fn open(data_dir: &Path) -> Result<Self, JobStoreError> {
        let path = data_dir.join(FILE);
        let p = path.clone();
        let db = tokio::task::spawn_blocking(move || -> Result<Database, redb::Error> {
            let db = Database::create(&p)?;
            // The table exists from the start, so a read never meets a missing one.
            let tx = db.begin_write()?;
            tx.open_table(JOBS)?;
            tx.commit()?;
            Ok(db)
        })
        .await
        .map_err(|e| JobStoreError::Embedded(format!("the open task failed: {e}")))?
        .map_err(|e| JobStoreError::Embedded(format!("cannot open {}: {e}", path.display())))?;
        let db = Arc::new(Handle {
            path: path.clone(),
            db: Mutex::new(Some(Arc::new(db))),
        });
        let queue = WriteQueue::start(RedbSink { db: db.clone() }, "is the data dir writable?");
        Ok(Self { db, path, queue })
    }

    fn encode(record: &JobRecord) -> Option<Vec<u8>> {
        serde_json::to_vec(record)
            .map_err(|e| tracing::error!(job = %record.status.job_id, "cannot encode the job record: {e}"))
            .ok()
    }
}

impl JobStore for EmbeddedJobStore {
    fn create(&self, record: JobRecord) -> BoxFuture<'_, Result<(), JobStoreError>> {
        Box::pin(async move {
            let value = Self::encode(&record).ok_or(JobStoreError::Encode)?;
            self.queue.create(record.status.job_id, value).await
        })
    }

    fn save(&self, job_id: &str, change: Change, record: &dyn Fn() -> JobRecord) {
        self.queue.save(job_id, change, record, Self::encode);
    }

    fn remove(&self, job_id: &str) {
        self.queue.remove(job_id);
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<JobRecord>, JobStoreError>> {
        let (db, path) = (self.db.clone(), self.path.clone());
        Box::pin(async move {
            let read = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Vec<u8>)>, redb::Error> {
                let tx = db.get()?.begin_read()?;
                let table = tx.open_table(JOBS)?;
                let mut out = Vec::new();
                for item in table.iter()? {
                    let (k, v) = item?;
                    out.push((k.value().to_string(), v.value().to_vec()));
                }
                Ok(out)
            })
            .await
            .map_err(|e| JobStoreError::Embedded(format!("the load task failed: {e}")))?
            .map_err(|e| JobStoreError::Embedded(format!("cannot read {}: {e}", path.display())))?;
            let mut records = Vec::new();
            for (id, value) in read {
                match serde_json::from_slice::<JobRecord>(&value) {
                    Ok(r) if r.status.job_id == id => records.push(r),
                    Ok(r) => tracing::error!("job record {id} holds job {:?}; ignoring it", r.status.job_id),
                    Err(e) => tracing::error!("job record {id} cannot be read ({e}); ignoring it"),
                }
            }
            records.sort_by_key(|r| r.seq);
            Ok(records)
        })
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        self.queue.flush(timeout)
    }
}

struct RedbSink {
    db: Arc<Handle>,
}

impl Sink for RedbSink {
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), SinkError>> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
                let write = || -> Result<(), redb::Error> {
                    let tx = db.get()?.begin_write()?;
                    {
                        let mut table = tx.open_table(JOBS)?;
                        for (id, value) in &batch {
                            if let Some(v) = value {
                                table.insert(id.as_str(), v.as_slice())?;
                            } else {
                                table.remove(id.as_str())?;
                            }
                        }
                    }
                    tx.commit()?;
                    Ok(())
                };
                write().inspect_err(|e| db.after(e))
            })
            .await
            .map_err(|e| SinkError::Retry(format!("the write task failed: {e}")))?
            .map_err(|e| SinkError::Retry(e.to_string()))
        })
    }
}
