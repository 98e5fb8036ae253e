//! Worker membership behind a trait: in memory for a local cluster (workers register and heartbeat
//! over gRPC), etcd for a real one ([`crate::etcd_registry`]).

use longshot_core::api::{ApiError, BoxFuture, WorkerInfo, WorkerState};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("worker id {id:?} is already registered from {address}; pick another --id or stop that worker")]
    Duplicate { id: String, address: String },
    #[error("worker id must be 1..=64 characters of [A-Za-z0-9._-], got {0:?}")]
    BadId(String),
    #[error("worker address {0:?} is not host:port")]
    BadAddress(String),
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    #[error("this coordinator uses etcd membership; start workers with --etcd {endpoints} (they register in etcd, not with the coordinator)")]
    EtcdMembership { endpoints: String },
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Unavailable(m) => ApiError::Unavailable(format!("registry unavailable: {m}")),
            other => ApiError::FailedPrecondition(other.to_string()),
        }
    }
}

/// Live worker membership.
pub trait Registry: Send + Sync + 'static {
    /// Adds a worker. Re-registering the same id from the same address refreshes it; from another
    /// address it is refused (two processes must never share an id).
    fn register(&self, worker: WorkerInfo) -> BoxFuture<'_, Result<(), RegistryError>>;
    /// Refreshes a worker's liveness; `false` if it is not (or no longer) registered.
    fn heartbeat(&self, id: &str, state: WorkerState) -> BoxFuture<'_, Result<bool, RegistryError>>;
    fn deregister(&self, id: &str) -> BoxFuture<'_, Result<(), RegistryError>>;
    /// Live workers, sorted by id.
    fn list(&self) -> BoxFuture<'_, Result<Vec<WorkerInfo>, RegistryError>>;
    /// Whether other coordinators may use the same workers. Then a worker's own `Busy` report
    /// means work this coordinator did not assign (another coordinator's, or a shard of this one's
    /// predecessor still winding down) and the worker is not scheduled. A private registry serves
    /// one coordinator, whose own assignments are authoritative: a worker's `Busy` there may only
    /// lag behind the end of its last shard.
    fn shared(&self) -> bool {
        false
    }
}

pub fn validate_worker(w: &WorkerInfo) -> Result<(), RegistryError> {
    let ok_id =
        !w.id.is_empty() && w.id.len() <= 64 && w.id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok_id {
        return Err(RegistryError::BadId(w.id.clone()));
    }
    match w.address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => Err(RegistryError::BadAddress(w.address.clone())),
    }
}

/// In-memory membership with heartbeat expiry.
pub struct InMemoryRegistry {
    ttl: Duration,
    workers: Mutex<HashMap<String, (WorkerInfo, Instant)>>,
}

impl InMemoryRegistry {
    /// Workers that miss heartbeats for `ttl` are dropped.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            workers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (WorkerInfo, Instant)>> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts/removes).
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Registry for InMemoryRegistry {
    fn register(&self, worker: WorkerInfo) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            validate_worker(&worker)?;
            let mut map = self.lock();
            let now = Instant::now();
            if let Some((old, seen)) = map.get(&worker.id) {
                if old.address != worker.address && now.duration_since(*seen) < self.ttl {
                    return Err(RegistryError::Duplicate {
                        id: worker.id.clone(),
                        address: old.address.clone(),
                    });
                }
            }
            map.insert(worker.id.clone(), (worker, now));
            Ok(())
        })
    }

    fn heartbeat(&self, id: &str, state: WorkerState) -> BoxFuture<'_, Result<bool, RegistryError>> {
        let id = id.to_string();
        Box::pin(async move {
            let mut map = self.lock();
            let now = Instant::now();
            match map.get_mut(&id) {
                Some((w, seen)) if now.duration_since(*seen) < self.ttl => {
                    *seen = now;
                    w.state = state;
                    Ok(true)
                }
                Some(_) => {
                    map.remove(&id);
                    Ok(false)
                }
                None => Ok(false),
            }
        })
    }

    fn deregister(&self, id: &str) -> BoxFuture<'_, Result<(), RegistryError>> {
        let id = id.to_string();
        Box::pin(async move {
            self.lock().remove(&id);
            Ok(())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<WorkerInfo>, RegistryError>> {
        Box::pin(async move {
            let mut map = self.lock();
            let now = Instant::now();
            map.retain(|_, (_, seen)| now.duration_since(*seen) < self.ttl);
            let mut v: Vec<WorkerInfo> = map.values().map(|(w, _)| w.clone()).collect();
            v.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use longshot_tests::fixtures::worker_info;

    fn worker(id: &str, address: &str) -> WorkerInfo {
        WorkerInfo {
            address: address.into(),
            ..worker_info(id)
        }
    }

    #[tokio::test]
    async fn register_expire_duplicate() {
        let r = InMemoryRegistry::new(Duration::from_millis(200));
        r.register(worker("w1", "127.0.0.1:1")).await.unwrap();
        assert_eq!(
            r.register(worker("w1", "127.0.0.1:2")).await,
            Err(RegistryError::Duplicate {
                id: "w1".into(),
                address: "127.0.0.1:1".into()
            })
        );
        r.register(worker("w1", "127.0.0.1:1")).await.unwrap();
        assert!(matches!(
            r.register(worker("bad id", "x:1")).await,
            Err(RegistryError::BadId(_))
        ));
        assert!(matches!(
            r.register(worker("w2", "nohost")).await,
            Err(RegistryError::BadAddress(_))
        ));
        assert!(r.heartbeat("w1", WorkerState::Busy).await.unwrap());
        assert_eq!(r.list().await.unwrap()[0].state, WorkerState::Busy);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(r.list().await.unwrap().is_empty());
        assert!(!r.heartbeat("w1", WorkerState::Idle).await.unwrap());
        // After expiry the id is free again, from any address.
        r.register(worker("w1", "127.0.0.1:2")).await.unwrap();
        r.deregister("w1").await.unwrap();
        assert!(r.list().await.unwrap().is_empty());
    }
}
