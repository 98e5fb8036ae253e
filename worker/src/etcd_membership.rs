//! Worker membership in etcd: the worker registers itself under `/longshot/v1/workers/{id}` (its
//! `WorkerInfo` as a worker record of `longshot_etcd::schema`) bound to a lease that it keeps
//! alive, so every coordinator watching that prefix sees it come, change state and go. A worker
//! that stops renewing (crash, freeze, network partition) disappears when its lease expires; a
//! graceful shutdown revokes the lease at once.
//!
//! The lease lives on its own OS thread with a current-thread tokio runtime: a worker whose main
//! runtime is saturated (frames streaming, overlap traffic) must never miss a renewal, or the
//! coordinators would drop it mid-shard. etcd-client's `LeaseKeeper` does not renew by itself and
//! none of its streams survive an etcd restart, so the loop here sends a renewal every TTL/3, reads
//! each answer, rebuilds the client with backoff when a stream breaks, and registers again under a
//! new lease when etcd reports the old one expired.

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use longshot_core::api::{WorkerInfo, WorkerState};
use longshot_etcd::schema::{decode_worker, encode_worker, worker_key, RecordError};
use longshot_etcd::{connect, timed, validate_endpoints, EtcdError, REQUEST_TIMEOUT};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::oneshot;

mod keeper;
use keeper::Keeper;

/// Reports the worker's current state, published to etcd when it changes.
pub type StateFn = Arc<dyn Fn() -> WorkerState + Send + Sync>;

#[derive(Debug, Error)]
pub enum MembershipError {
    #[error("lease ttl {0:?} is not in 2..=3600 seconds")]
    BadTtl(Duration),
    #[error("worker id {id:?} is already registered in etcd by a live worker at {address}; pick another --id or stop that worker (a crashed worker restarted at its own address takes its registration over at once; otherwise it expires with its lease)")]
    Duplicate { id: String, address: String },
    /// Endpoints, reachability and request failures.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("cannot start the etcd lease thread: {0}")]
    Thread(String),
}

/// How a worker joins an etcd cluster.
#[derive(Clone, Debug)]
pub struct EtcdMembershipConfig {
    /// `http://host:port` of one or more etcd members.
    pub endpoints: Vec<String>,
    /// The registration disappears this long after the last renewal (whole seconds, 2..=3600).
    pub lease_ttl: Duration,
    /// How long to retry an unreachable etcd at start-up before giving up.
    pub connect_patience: Duration,
}

impl EtcdMembershipConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            lease_ttl: Duration::from_secs(10),
            connect_patience: Duration::from_secs(10),
        }
    }

    fn ttl_secs(&self) -> Result<i64, MembershipError> {
        let secs = self.lease_ttl.as_secs_f64().ceil();
        // etcd rounds shorter leases up to its own minimum (1.5 × election timeout, 2 s by default).
        if (2.0..=3600.0).contains(&secs) {
            Ok(secs as i64)
        } else {
            Err(MembershipError::BadTtl(self.lease_ttl))
        }
    }
}

/// How often the worker's state is checked for a change to publish.
const STATE_POLL: Duration = Duration::from_millis(250);

/// Grants a lease and puts the worker's key if no key of that id exists, or if the key there
/// advertises this worker's own address: two live processes cannot listen on one address, so that
/// record is this worker's previous life (killed before it could revoke its lease), and waiting for
/// its lease to expire would only keep a healthy worker out. The takeover is a transaction on the
/// record's revision, bound to the new lease; the old lease is left to expire (it holds nothing
/// any more). Another address keeps the duplicate refusal.
async fn register_once(client: &mut Client, info: &WorkerInfo, ttl_secs: i64) -> Result<i64, MembershipError> {
    let lease = timed(client.lease_grant(ttl_secs, None)).await?.id();
    let mut result = Ok(false);
    // The record may change between reading and claiming it (a lease expiring): read again.
    for _ in 0..3 {
        result = claim(client, info, lease).await;
        if !matches!(result, Ok(false)) {
            break;
        }
    }
    match result {
        Ok(true) => Ok(lease),
        other => {
            let _ = timed(client.lease_revoke(lease)).await;
            Err(other.err().unwrap_or_else(|| {
                MembershipError::Etcd(EtcdError::Request(format!(
                    "the record of worker {:?} kept changing during registration",
                    info.id
                )))
            }))
        }
    }
}

/// Puts the record under `lease` if the key is free, or held by this worker's address; `false`
/// when the record changed meanwhile.
async fn claim(client: &mut Client, info: &WorkerInfo, lease: i64) -> Result<bool, MembershipError> {
    let key = worker_key(&info.id);
    let value = encode_worker(info)?;
    let put = TxnOp::put(key.clone(), value, Some(PutOptions::new().with_lease(lease)));
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([put.clone()])
        .or_else([TxnOp::get(key.clone(), None)]);
    let resp = timed(client.txn(txn)).await?;
    if resp.succeeded() {
        return Ok(true);
    }
    let held = resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| (kv.mod_revision(), kv.value().to_vec())),
        _ => None,
    });
    let Some((revision, value)) = held else {
        // Deleted between the two reads (its lease just expired): the key is free again.
        return Ok(false);
    };
    let address = decode_worker(&value).map_or_else(|_| "an unknown address".to_string(), |w| w.address);
    if address != info.address {
        return Err(MembershipError::Duplicate {
            id: info.id.clone(),
            address,
        });
    }
    let takeover = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
        .and_then([put]);
    if timed(client.txn(takeover)).await?.succeeded() {
        tracing::info!(
            "took over the registration of worker {} at {address} left by its previous process",
            info.id
        );
        return Ok(true);
    }
    Ok(false)
}

/// A worker's registration in etcd. Dropping it stops the renewals and revokes the lease in the
/// background; [`EtcdMembership::shutdown`] waits for the revocation.
pub struct EtcdMembership {
    lease: Arc<AtomicI64>,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
}

impl EtcdMembership {
    /// Connects (retrying for `connect_patience`), registers `info` under a new lease, and starts
    /// the renewals. A duplicate id is refused at once.
    pub async fn start(cfg: EtcdMembershipConfig, info: WorkerInfo, state: StateFn) -> Result<Self, MembershipError> {
        let ttl_secs = cfg.ttl_secs()?;
        validate_endpoints(&cfg.endpoints)?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let lease = Arc::new(AtomicI64::new(0));
        let shared = lease.clone();
        std::thread::Builder::new()
            .name("etcd-lease".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(MembershipError::Thread(e.to_string())));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut client = match connect(&cfg.endpoints, cfg.connect_patience).await {
                        Ok(c) => c,
                        Err(e) => return drop(ready_tx.send(Err(e.into()))),
                    };
                    let id = match register_once(&mut client, &info, ttl_secs).await {
                        Ok(id) => id,
                        Err(e) => return drop(ready_tx.send(Err(e))),
                    };
                    shared.store(id, Ordering::Relaxed);
                    let _ = ready_tx.send(Ok(()));
                    let keeper = Keeper {
                        cfg,
                        info,
                        state,
                        ttl_secs,
                        lease: shared,
                        client: Some(client),
                        stream: None,
                    };
                    keeper.run(stop_rx).await;
                    let _ = stopped_tx.send(());
                });
            })
            .map_err(|e| MembershipError::Thread(e.to_string()))?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Self {
                lease,
                stop: Some(stop_tx),
                stopped: Some(stopped_rx),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MembershipError::Thread(
                "the lease thread stopped during registration".into(),
            )),
        }
    }

    /// The lease the registration is bound to now (it changes when the worker registers again).
    pub fn lease_id(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }

    /// Stops the renewals and revokes the lease, so coordinators drop this worker at once.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            // The revocation itself is bounded by REQUEST_TIMEOUT; this is a safety margin.
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 3, stopped).await;
        }
    }
}

impl Drop for EtcdMembership {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_ttl_are_validated() {
        assert!(validate_endpoints(&["http://127.0.0.1:2379".into(), "http://etcd-1:2379/".into()]).is_ok());
        let membership = |e: &[String]| validate_endpoints(e).map_err(MembershipError::from);
        assert!(matches!(
            membership(&[]),
            Err(MembershipError::Etcd(EtcdError::NoEndpoint))
        ));
        for bad in ["127.0.0.1:2379", "ftp://h:1", "http://:2379", "http://h:0", "http://h"] {
            let e = membership(&[bad.into()]);
            assert!(
                matches!(e, Err(MembershipError::Etcd(EtcdError::BadEndpoint(_)))),
                "{bad}"
            );
        }
        let mut cfg = EtcdMembershipConfig::new(vec!["http://h:1".into()]);
        assert_eq!(cfg.ttl_secs().ok(), Some(10));
        cfg.lease_ttl = Duration::from_millis(2500);
        assert_eq!(cfg.ttl_secs().ok(), Some(3));
        cfg.lease_ttl = Duration::from_secs(1);
        assert_eq!(
            cfg.ttl_secs().unwrap_err().to_string(),
            "lease ttl 1s is not in 2..=3600 seconds"
        );
    }
}
