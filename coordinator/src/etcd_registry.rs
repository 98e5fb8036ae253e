//! Worker membership read from etcd: workers register themselves under
//! `/longshot/v1/workers/{id}` with a lease (`longshot_worker::etcd_membership`; the key and the
//! record are `longshot_etcd::schema`'s); this registry
//! lists that prefix, then watches it from the listed revision + 1 in a background task that keeps
//! an in-memory map, so `list()` never waits on etcd. A worker whose lease expires is deleted by
//! etcd, the watch removes it, and the job run loop fails whatever it was running.
//!
//! The watch does not recover by itself: when it breaks (etcd restarted, connection lost) the task
//! reconnects with bounded backoff, lists again, logs what changed meanwhile and watches on from
//! the new revision; when etcd cancels it because its revision was compacted away, it does the
//! same. While etcd is unreachable `list()` serves the last known workers: a running job keeps
//! going (its workers' own streams report a crash) instead of failing on an etcd hiccup.

use crate::registry::{validate_worker, Registry, RegistryError};
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use longshot_core::api::{BoxFuture, WorkerInfo, WorkerState};
use longshot_etcd::schema::{decode_worker_at, worker_id, WORKERS_PREFIX};
use longshot_etcd::{connect, connect_once, timed, Backoff, EtcdError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

type Workers = BTreeMap<String, WorkerInfo>;

#[derive(Default)]
struct Shared {
    workers: RwLock<Workers>,
    resyncs: AtomicU64,
    watch_restarts: AtomicU64,
    connected: AtomicBool,
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Workers> {
        // Writers replace whole entries; a poisoned map is still consistent.
        self.workers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Workers> {
        self.workers.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Membership from etcd (see the module doc).
pub struct EtcdRegistry {
    endpoints: Vec<String>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl EtcdRegistry {
    /// Connects (retrying for at most `patience`), lists the workers and starts following them.
    pub async fn start(endpoints: Vec<String>, patience: Duration) -> Result<Self, EtcdError> {
        Self::start_inner(endpoints, patience, None).await
    }

    /// Like [`EtcdRegistry::start`], but the first watch starts at `revision` instead of after the
    /// initial list. Tests use it to watch from an already compacted revision.
    #[doc(hidden)]
    pub async fn start_watching_from(
        endpoints: Vec<String>,
        patience: Duration,
        revision: i64,
    ) -> Result<Self, EtcdError> {
        Self::start_inner(endpoints, patience, Some(revision)).await
    }

    async fn start_inner(endpoints: Vec<String>, patience: Duration, from: Option<i64>) -> Result<Self, EtcdError> {
        let mut client = connect(&endpoints, patience).await?;
        let shared = Arc::new(Shared::default());
        let (workers, revision) = list_workers(&mut client).await?;
        tracing::info!(
            "etcd membership: {} workers registered at revision {revision}",
            workers.len()
        );
        *shared.write() = workers;
        shared.connected.store(true, Ordering::Relaxed);
        let follower = Follower {
            shared: shared.clone(),
            endpoints: endpoints.clone(),
            client: Some(client),
            next_revision: from.unwrap_or(revision + 1),
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            failures: 0,
        };
        let task = tokio::spawn(follower.run());
        Ok(Self {
            endpoints,
            shared,
            task,
        })
    }

    /// How many times the map was rebuilt from a fresh list after a compaction or a reconnect.
    pub fn resyncs(&self) -> u64 {
        self.shared.resyncs.load(Ordering::Relaxed)
    }

    /// How many times the watch broke and was started again (a healthy etcd connection never
    /// breaks it; a compaction is not counted).
    pub fn watch_restarts(&self) -> u64 {
        self.shared.watch_restarts.load(Ordering::Relaxed)
    }

    /// Whether the watch is established now (`list()` is current, not the last known state).
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    fn refuse(&self) -> RegistryError {
        RegistryError::EtcdMembership {
            endpoints: self.endpoints.join(","),
        }
    }
}

impl Drop for EtcdRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Registry for EtcdRegistry {
    fn register(&self, _worker: WorkerInfo) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move { Err(self.refuse()) })
    }

    fn heartbeat(&self, _id: &str, _state: WorkerState) -> BoxFuture<'_, Result<bool, RegistryError>> {
        Box::pin(async move { Err(self.refuse()) })
    }

    fn deregister(&self, _id: &str) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move { Err(self.refuse()) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<WorkerInfo>, RegistryError>> {
        Box::pin(async move { Ok(self.shared.read().values().cloned().collect()) })
    }

    fn shared(&self) -> bool {
        true
    }
}

/// A worker record, or `None` (logged) when a key under the prefix holds something else: a peer
/// must not be able to break membership by writing garbage.
fn decode(key: &[u8], value: &[u8]) -> Option<WorkerInfo> {
    let key = String::from_utf8_lossy(key);
    let worker = match decode_worker_at(&key, value) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("ignoring {key}: {e}");
            return None;
        }
    };
    if let Err(e) = validate_worker(&worker) {
        tracing::warn!("ignoring {key}: {e}");
        return None;
    }
    Some(worker)
}

async fn list_workers(client: &mut Client) -> Result<(Workers, i64), EtcdError> {
    let resp = timed(client.get(WORKERS_PREFIX, Some(GetOptions::new().with_prefix()))).await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let workers = resp
        .kvs()
        .iter()
        .filter_map(|kv| decode(kv.key(), kv.value()))
        .map(|w| (w.id.clone(), w))
        .collect();
    Ok((workers, revision))
}

/// Why a watch session ended without an error.
enum WatchEnd {
    /// etcd compacted the revision the watch needed next.
    Compacted(i64),
}

/// The background task: one watch session after another.
struct Follower {
    shared: Arc<Shared>,
    endpoints: Vec<String>,
    /// `None` after a failure: the next session builds a fresh client.
    client: Option<Client>,
    next_revision: i64,
    backoff: Backoff,
    failures: u32,
}

impl Follower {
    async fn run(mut self) {
        loop {
            match self.session().await {
                Ok(WatchEnd::Compacted(compacted)) => {
                    tracing::warn!(
                        "etcd compacted revision {compacted} before the worker watch reached revision {}; listing the workers again",
                        self.next_revision
                    );
                    // The next session lists again (it starts with next_revision unknown).
                    self.next_revision = 0;
                }
                Err(e) => {
                    self.failures += 1;
                    self.shared.watch_restarts.fetch_add(1, Ordering::Relaxed);
                    self.shared.connected.store(false, Ordering::Relaxed);
                    self.client = None;
                    self.next_revision = 0;
                    let delay = self.backoff.next_delay();
                    let known = self.shared.read().len();
                    tracing::warn!(
                        "etcd worker watch failed ({e}); reconnecting in {delay:?} (attempt {}), serving the last {known} known workers meanwhile",
                        self.failures
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Connects if needed, lists if the revision to resume from is unknown, then applies watch
    /// events until the watch ends.
    async fn session(&mut self) -> Result<WatchEnd, EtcdError> {
        if self.client.is_none() {
            self.client = Some(connect_once(&self.endpoints).await?);
        }
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| EtcdError::Request("no client".into()))?;
        if self.next_revision == 0 {
            let (fresh, revision) = list_workers(client).await?;
            let old = std::mem::replace(&mut *self.shared.write(), fresh.clone());
            log_diff(&old, &fresh, revision);
            self.shared.resyncs.fetch_add(1, Ordering::Relaxed);
            self.next_revision = revision + 1;
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.next_revision);
        let mut stream = timed(client.watch(WORKERS_PREFIX, Some(opts))).await?;
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return Err(EtcdError::Request("the watch stream ended".into())),
                Err(e) => return Err(e.into()),
            };
            if resp.created() {
                self.shared.connected.store(true, Ordering::Relaxed);
                if self.failures > 0 {
                    tracing::info!(
                        "etcd worker watch resumed at revision {} after {} failed attempts",
                        self.next_revision,
                        self.failures
                    );
                }
                self.failures = 0;
                self.backoff.reset();
            }
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    return Ok(WatchEnd::Compacted(resp.compact_revision()));
                }
                return Err(EtcdError::Request(format!(
                    "etcd cancelled the worker watch: {}",
                    resp.cancel_reason()
                )));
            }
            let mut workers = self.shared.write();
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                self.next_revision = self.next_revision.max(kv.mod_revision() + 1);
                let key = String::from_utf8_lossy(kv.key());
                let Some(id) = worker_id(&key) else { continue };
                match event.event_type() {
                    EventType::Put => match decode(kv.key(), kv.value()) {
                        Some(w) => {
                            if !workers.contains_key(id) {
                                tracing::info!(worker = %id, address = %w.address, "worker joined (etcd)");
                            }
                            workers.insert(id.to_string(), w);
                        }
                        None => {
                            workers.remove(id);
                        }
                    },
                    EventType::Delete => {
                        if workers.remove(id).is_some() {
                            tracing::info!(worker = %id, "worker left (etcd registration deleted or its lease expired)");
                        }
                    }
                }
            }
        }
    }
}

fn log_diff(old: &Workers, new: &Workers, revision: i64) {
    let joined: Vec<&str> = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .map(String::as_str)
        .collect();
    let left: Vec<&str> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(String::as_str)
        .collect();
    let changed: Vec<&str> = new
        .iter()
        .filter(|(k, w)| old.get(*k).is_some_and(|o| o != *w))
        .map(|(k, _)| k.as_str())
        .collect();
    tracing::info!(
        ?joined,
        ?left,
        ?changed,
        "listed {} workers from etcd at revision {revision}",
        new.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use longshot_tests::fixtures::worker_info;

    #[test]
    fn only_well_formed_records_are_workers() {
        let w = worker_info("w1");
        let json = serde_json::to_vec(&w).unwrap();
        assert_eq!(decode(b"/longshot/v1/workers/w1", &json), Some(w));
        assert_eq!(decode(b"/longshot/v1/workers/w2", &json), None, "key and id disagree");
        assert_eq!(decode(b"/longshot/v1/workers/w1", b"{not json"), None);
        assert_eq!(decode(b"/elsewhere/w1", &json), None);
        let mut bad = worker_info("w1");
        bad.address = "nohost".into();
        assert_eq!(
            decode(b"/longshot/v1/workers/w1", &serde_json::to_vec(&bad).unwrap()),
            None
        );
    }
}
