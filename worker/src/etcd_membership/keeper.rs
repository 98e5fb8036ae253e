//! The renewal loop of a worker's etcd registration, on the lease thread: a renewal every TTL/3
//! whose answer is read (etcd-client's `LeaseKeeper` sends but never checks), a fresh client with
//! backoff after any failure, a new registration when etcd reports the lease gone, state changes
//! published while the registration is still ours, and the revocation at shutdown.

use super::{register_once, EtcdMembershipConfig, MembershipError, StateFn, STATE_POLL};
use etcd_client::{Client, Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp};
use longshot_core::api::WorkerInfo;
use longshot_etcd::schema::{encode_worker, worker_key};
use longshot_etcd::{connect_once, timed, EtcdError};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What one renewal found.
enum Renewal {
    Alive,
    Expired,
    Failed(MembershipError),
}

/// The renewal loop's state, on the lease thread.
pub(super) struct Keeper {
    pub cfg: EtcdMembershipConfig,
    pub info: WorkerInfo,
    pub state: StateFn,
    pub ttl_secs: i64,
    pub lease: Arc<AtomicI64>,
    /// `None` after a failure: the next attempt builds a fresh client (an old one may never
    /// reconnect once etcd restarted).
    pub client: Option<Client>,
    pub stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl Keeper {
    pub async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let tick = Duration::from_secs(self.ttl_secs as u64) / 3;
        let mut next_renewal = Instant::now() + tick;
        let mut retry = Duration::from_millis(200);
        let mut healthy = true;
        loop {
            // Between renewals the state is polled often (a local check; etcd is written only on a
            // change), so a shard's end is visible to the coordinators within a fraction of a second.
            let nap = next_renewal.saturating_duration_since(Instant::now()).min(STATE_POLL);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = &mut stop => break,
            }
            if Instant::now() < next_renewal {
                if healthy {
                    self.publish_state().await;
                }
                continue;
            }
            let failure = match self.renew(tick).await {
                Renewal::Alive => {
                    self.publish_state().await;
                    None
                }
                Renewal::Expired => {
                    tracing::warn!(worker = %self.info.id, "the etcd lease expired (no renewal reached etcd within {} s); registering again", self.ttl_secs);
                    self.register_again().await.err()
                }
                Renewal::Failed(e) => Some(e),
            };
            healthy = failure.is_none();
            next_renewal = Instant::now()
                + match failure {
                    None => {
                        retry = Duration::from_millis(200);
                        tick
                    }
                    Some(e) => {
                        tracing::warn!(worker = %self.info.id, "etcd lease renewal failed: {e}; retrying in {retry:?}");
                        self.client = None;
                        self.stream = None;
                        let wait = retry;
                        retry = (retry * 2).min(tick);
                        wait
                    }
                };
        }
        self.revoke().await;
    }

    async fn client(&mut self) -> Result<&mut Client, MembershipError> {
        if self.client.is_none() {
            self.client = Some(connect_once(&self.cfg.endpoints).await?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| EtcdError::Request("no client".into()).into())
    }

    async fn renew(&mut self, tick: Duration) -> Renewal {
        let lease = self.lease.load(Ordering::Relaxed);
        if let Some((keeper, stream)) = self.stream.as_mut() {
            if let Err(e) = keeper.keep_alive().await {
                return Renewal::Failed(EtcdError::from(e).into());
            }
            return match tokio::time::timeout(tick, stream.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => Renewal::Alive,
                Ok(Ok(Some(_))) => Renewal::Expired,
                Ok(Ok(None)) => Renewal::Failed(EtcdError::Request("the keep-alive stream ended".into()).into()),
                Ok(Err(e)) => Renewal::Failed(EtcdError::from(e).into()),
                Err(_) => Renewal::Failed(EtcdError::Request(format!("no keep-alive answer within {tick:?}")).into()),
            };
        }
        // A new stream: opening it sends the first renewal and reads its answer.
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return Renewal::Failed(e),
        };
        match timed(client.lease_keep_alive(lease)).await {
            Ok(pair) => {
                self.stream = Some(pair);
                Renewal::Alive
            }
            // "lease not found" and a broken connection look alike here: ask etcd directly.
            Err(open_err) => match timed(client.lease_time_to_live(lease, None)).await {
                Ok(ttl) if ttl.ttl() <= 0 => Renewal::Expired,
                Ok(_) => Renewal::Failed(open_err.into()),
                Err(e) => Renewal::Failed(e.into()),
            },
        }
    }

    async fn register_again(&mut self) -> Result<(), MembershipError> {
        self.stream = None;
        let mut info = self.info.clone();
        info.state = (self.state)();
        let ttl = self.ttl_secs;
        let client = self.client().await?;
        let lease = register_once(client, &info, ttl).await?;
        self.lease.store(lease, Ordering::Relaxed);
        self.info = info;
        tracing::info!(worker = %self.info.id, lease, "registered again in etcd");
        Ok(())
    }

    /// Rewrites the record when the worker's state changed, only while it is still bound to our
    /// lease (never over another worker's registration).
    async fn publish_state(&mut self) {
        let now = (self.state)();
        if now == self.info.state {
            return;
        }
        let mut info = self.info.clone();
        info.state = now;
        let Ok(value) = encode_worker(&info) else { return };
        let lease = self.lease.load(Ordering::Relaxed);
        let key = worker_key(&info.id);
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
            .and_then([TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)))]);
        let Ok(client) = self.client().await else { return };
        match timed(client.txn(txn)).await {
            Ok(r) if r.succeeded() => self.info = info,
            Ok(_) => {
                tracing::warn!(worker = %self.info.id, "the etcd record is no longer bound to this worker's lease; state not published")
            }
            Err(e) => tracing::warn!(worker = %self.info.id, "publishing the worker state to etcd failed: {e}"),
        }
    }

    async fn revoke(&mut self) {
        let lease = self.lease.load(Ordering::Relaxed);
        self.stream = None;
        let result = match self.client().await {
            Ok(client) => timed(client.lease_revoke(lease))
                .await
                .map(|_| ())
                .map_err(MembershipError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => tracing::info!(worker = %self.info.id, "etcd lease revoked; deregistered"),
            Err(e) => {
                tracing::warn!(worker = %self.info.id, "revoking the etcd lease failed ({e}); the registration expires within {} s", self.ttl_secs)
            }
        }
    }
}
