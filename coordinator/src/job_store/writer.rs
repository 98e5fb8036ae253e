//! The write path every durable store shares: `save` never blocks (it is called with the job table
//! locked), so records go to one writer task that coalesces them per job (the latest wins), writes
//! them in batches to a [`Sink`] and retries with backoff while the sink fails; a submission waits
//! until its record is written.

use super::{Change, JobRecord, JobStoreError, CREATE_TIMEOUT, PROGRESS_WRITE_INTERVAL};
use longshot_core::api::BoxFuture;
use longshot_etcd::Backoff;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// One record to write (`Some`) or delete (`None`), by job id.
pub(crate) type Batch = Vec<(String, Option<Vec<u8>>)>;

/// Why a batch was not written.
#[derive(Debug)]
pub(crate) enum SinkError {
    /// Worth retrying (etcd unreachable, a full disk).
    Retry(String),
    /// This store may no longer write (a deposed leader): pending records are dropped.
    Fenced(String),
}

/// Where a store's records end up.
pub(crate) trait Sink: Send + 'static {
    /// Writes the whole batch; a failed batch is written again whole, so writes are idempotent.
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), SinkError>>;
}

enum Write {
    /// `stored` is told once this value (or a newer one of the same job) is written.
    Put {
        job_id: String,
        value: Option<Vec<u8>>,
        stored: Option<oneshot::Sender<()>>,
    },
    /// Drops a job's unwritten value (its submission was refused).
    Forget(String),
    Flush(oneshot::Sender<()>),
}

/// The front of the write path: throttling, the queue to the writer task, and what fenced it.
pub(crate) struct WriteQueue {
    writes: mpsc::UnboundedSender<Write>,
    last_write: Mutex<HashMap<String, Instant>>,
    fenced: watch::Receiver<Option<String>>,
    writer: tokio::task::JoinHandle<()>,
    /// Names the store in errors ("is etcd reachable?").
    hint: &'static str,
}

impl WriteQueue {
    pub fn start(sink: impl Sink, hint: &'static str) -> Self {
        let (writes, rx) = mpsc::unbounded_channel();
        let (fenced_tx, fenced) = watch::channel(None);
        let writer = tokio::spawn(
            Writer {
                sink,
                pending: HashMap::new(),
                flushes: Vec::new(),
                fenced: fenced_tx,
                hint,
            }
            .run(rx),
        );
        Self {
            writes,
            last_write: Mutex::new(HashMap::new()),
            fenced,
            writer,
            hint,
        }
    }

    /// Why this store stopped writing, once it has (see [`SinkError::Fenced`]).
    pub fn fenced(&self) -> watch::Receiver<Option<String>> {
        self.fenced.clone()
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

    /// Queues a new job's record and waits until it is written (at most [`CREATE_TIMEOUT`]).
    pub async fn create(&self, job_id: String, value: Vec<u8>) -> Result<(), JobStoreError> {
        self.due(&job_id, Change::State);
        let (tx, rx) = oneshot::channel();
        let _ = self.writes.send(Write::Put {
            job_id: job_id.clone(),
            value: Some(value),
            stored: Some(tx),
        });
        match tokio::time::timeout(CREATE_TIMEOUT, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                // Refused jobs must not reappear after a restart; a write already under way
                // may still land (the submitter was told the job was not accepted).
                let _ = self.writes.send(Write::Forget(job_id));
                Err(JobStoreError::NotStored(CREATE_TIMEOUT, self.hint))
            }
        }
    }

    /// Queues the record `record()` builds, encoded, unless `change` is progress written recently.
    pub fn save(
        &self,
        job_id: &str,
        change: Change,
        record: &dyn Fn() -> JobRecord,
        encode: impl FnOnce(&JobRecord) -> Option<Vec<u8>>,
    ) {
        if !self.due(job_id, change) {
            return;
        }
        let record = record();
        if record.status.state.is_terminal() {
            // A finished job makes no more progress.
            self.last_write.lock().unwrap_or_else(|p| p.into_inner()).remove(job_id);
        }
        if let Some(value) = encode(&record) {
            let _ = self.writes.send(Write::Put {
                job_id: job_id.to_string(),
                value: Some(value),
                stored: None,
            });
        }
    }

    pub fn remove(&self, job_id: &str) {
        self.last_write.lock().unwrap_or_else(|p| p.into_inner()).remove(job_id);
        let _ = self.writes.send(Write::Put {
            job_id: job_id.to_string(),
            value: None,
            stored: None,
        });
    }

    pub fn flush(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        let (tx, rx) = oneshot::channel();
        let sent = self.writes.send(Write::Flush(tx)).is_ok();
        Box::pin(async move { sent && matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(()))) })
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

/// Per job: the latest unwritten value and whom to tell once it is written.
type Pending = (Option<Vec<u8>>, Vec<oneshot::Sender<()>>);

/// The one task that writes records, coalesced per job.
struct Writer<S> {
    sink: S,
    pending: HashMap<String, Pending>,
    flushes: Vec<oneshot::Sender<()>>,
    fenced: watch::Sender<Option<String>>,
    hint: &'static str,
}

impl<S: Sink> Writer<S> {
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
            if self.fenced.borrow().is_some() {
                // Nothing is written any more: creates and flushes fail.
                self.pending.clear();
                self.flushes.clear();
                continue;
            }
            let taken: Vec<(String, Pending)> = self.pending.drain().collect();
            let batch = taken.iter().map(|(id, (v, _))| (id.clone(), v.clone())).collect();
            match self.sink.write(batch).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!("job records are written again after {failures} failed attempts");
                    }
                    failures = 0;
                    backoff.reset();
                    for tx in taken.into_iter().flat_map(|(_, (_, stored))| stored) {
                        let _ = tx.send(());
                    }
                }
                Err(SinkError::Fenced(why)) => {
                    tracing::error!("job records are no longer written: {why}");
                    let _ = self.fenced.send(Some(why));
                }
                Err(SinkError::Retry(e)) => {
                    // Values saved meanwhile are newer than the failed ones.
                    for (id, (value, stored)) in taken {
                        let entry = self.pending.entry(id).or_insert((value, Vec::new()));
                        entry.1.extend(stored);
                    }
                    failures += 1;
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        "writing {} job records failed ({e}; {}); retrying in {delay:?} (attempt {failures})",
                        self.pending.len(),
                        self.hint
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
}
