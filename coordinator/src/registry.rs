//! Worker membership behind a trait: in memory for a local cluster (workers register and heartbeat
//! over gRPC), etcd for a real one ([`crate::etcd_registry`]).

use longshot_core::api::{ApiError, BoxFuture, WorkerInfo, WorkerState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// How often the registry notes that the coordinator runs (see [`Members::note_awake`]).
const TICK: Duration = Duration::from_millis(100);
/// A gap between two of those notes longer than this means the coordinator did not run.
const STALL: Duration = Duration::from_secs(1);

/// The workers with the time of their last heartbeat, and when the coordinator last ran.
struct Members {
    workers: HashMap<String, (WorkerInfo, Instant)>,
    awake: Instant,
}

impl Members {
    /// A worker is expired for silence only while the coordinator could hear it: when the
    /// coordinator itself did not run for a while (SIGSTOP, a suspended VM, a starved machine),
    /// the heartbeats sent meanwhile are still queued, so that gap is added to every worker's last
    /// heartbeat instead of being counted as the worker's silence. Every operation and a ticker
    /// call this first, so whichever runs first after the gap applies it.
    fn note_awake(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.awake);
        if gap > STALL {
            tracing::warn!(
                "the coordinator did not run for {gap:.1?}; not counting that time against the {} workers' heartbeats",
                self.workers.len()
            );
            for (_, seen) in self.workers.values_mut() {
                *seen += gap;
            }
        }
        self.awake = self.awake.max(now);
    }
}

struct Shared {
    ttl: Duration,
    members: Mutex<Members>,
}

impl Shared {
    /// The members, after the time the coordinator did not run was accounted for.
    fn lock(&self) -> (std::sync::MutexGuard<'_, Members>, Instant) {
        // A panic while holding this lock cannot leave the map half-updated (single inserts/removes).
        let mut m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        m.note_awake(now);
        (m, now)
    }
}

/// In-memory membership with heartbeat expiry that never counts time the coordinator did not run.
pub struct InMemoryRegistry {
    shared: Arc<Shared>,
}

impl InMemoryRegistry {
    /// Workers that miss heartbeats for `ttl` (of the coordinator's running time) are dropped.
    pub fn new(ttl: Duration) -> Self {
        let shared = Arc::new(Shared {
            ttl,
            members: Mutex::new(Members {
                workers: HashMap::new(),
                awake: Instant::now(),
            }),
        });
        // A plain thread, so the ticks do not depend on the async runtime's load; it ends with the
        // registry.
        let weak = Arc::downgrade(&shared);
        let spawned = std::thread::Builder::new()
            .name("registry-tick".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(s) => drop(s.lock()),
                    None => return,
                }
            });
        if let Err(e) = spawned {
            // Without ticks an idle stretch looks like a pause: dead workers expire later, never early.
            tracing::warn!("cannot start the registry's tick thread: {e}");
        }
        Self { shared }
    }

    fn lock(&self) -> (std::sync::MutexGuard<'_, Members>, Instant) {
        self.shared.lock()
    }
}

impl Registry for InMemoryRegistry {
    fn register(&self, worker: WorkerInfo) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            validate_worker(&worker)?;
            let ttl = self.shared.ttl;
            let (mut m, now) = self.lock();
            if let Some((old, seen)) = m.workers.get(&worker.id) {
                if old.address != worker.address && now.duration_since(*seen) < ttl {
                    return Err(RegistryError::Duplicate {
                        id: worker.id.clone(),
                        address: old.address.clone(),
                    });
                }
            }
            m.workers.insert(worker.id.clone(), (worker, now));
            Ok(())
        })
    }

    fn heartbeat(&self, id: &str, state: WorkerState) -> BoxFuture<'_, Result<bool, RegistryError>> {
        let id = id.to_string();
        Box::pin(async move {
            let ttl = self.shared.ttl;
            let (mut m, now) = self.lock();
            match m.workers.get_mut(&id) {
                Some((w, seen)) if now.duration_since(*seen) < ttl => {
                    *seen = now;
                    w.state = state;
                    Ok(true)
                }
                Some(_) => {
                    m.workers.remove(&id);
                    Ok(false)
                }
                None => Ok(false),
            }
        })
    }

    fn deregister(&self, id: &str) -> BoxFuture<'_, Result<(), RegistryError>> {
        let id = id.to_string();
        Box::pin(async move {
            self.lock().0.workers.remove(&id);
            Ok(())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<WorkerInfo>, RegistryError>> {
        Box::pin(async move {
            let ttl = self.shared.ttl;
            let (mut m, now) = self.lock();
            m.workers.retain(|_, (_, seen)| now.duration_since(*seen) < ttl);
            let mut v: Vec<WorkerInfo> = m.workers.values().map(|(w, _)| w.clone()).collect();
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

    fn members(t0: Instant) -> Members {
        let mut workers = HashMap::new();
        workers.insert("w1".to_string(), (worker("w1", "127.0.0.1:1"), t0));
        Members { workers, awake: t0 }
    }

    fn age(m: &Members, now: Instant) -> Duration {
        now.duration_since(m.workers["w1"].1)
    }

    #[test]
    fn time_the_coordinator_did_not_run_is_not_a_workers_silence() {
        let t0 = Instant::now();
        // Regular ticks: the worker's silence counts in full.
        let mut m = members(t0);
        for i in 1..=50 {
            m.note_awake(t0 + TICK * i);
        }
        assert_eq!(age(&m, t0 + TICK * 50), TICK * 50);
        // The coordinator stopped for 25 s right after the heartbeat: on waking, the worker has
        // been silent for none of the coordinator's running time.
        let mut m = members(t0);
        let woke = t0 + Duration::from_secs(25);
        m.note_awake(woke);
        assert_eq!(age(&m, woke), Duration::ZERO);
        assert_eq!(m.awake, woke);
        // Silence before and after the pause still counts: 2 s before, 1.5 s after.
        let mut m = members(t0);
        for i in 1..=20 {
            m.note_awake(t0 + TICK * i);
        }
        let woke = t0 + TICK * 20 + Duration::from_secs(25);
        m.note_awake(woke);
        for i in 1..=15 {
            m.note_awake(woke + TICK * i);
        }
        assert_eq!(age(&m, woke + TICK * 15), TICK * 35);
        // A late tick within STALL (a busy machine) is the worker's silence as usual.
        let mut m = members(t0);
        m.note_awake(t0 + STALL);
        assert_eq!(age(&m, t0 + STALL), STALL);
        // Clocks read out of order never move `awake` back.
        m.note_awake(t0);
        assert_eq!(m.awake, t0 + STALL);
    }
}
