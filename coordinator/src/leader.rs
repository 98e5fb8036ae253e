//! With etcd, several coordinators may run on one data dir (a shared volume: outputs and
//! checkpoints live there); one leads. Each candidate holds an etcd lease (renewed every third of
//! its TTL) and campaigns with etcd's election API under [`LEADER_ELECTION`], its advertised
//! address as the value. The winner loads the job records and schedules; every record it writes
//! is conditional on its leader key ([`LeaderGuard`]), so a deposed leader's late writes fail.
//! A standby answers the job API with [`ApiError::NotLeader`], naming the leader.
//!
//! A killed leader's lease expires after its TTL, when the next candidate wins: fail-over takes
//! at most the TTL plus loading the records.

use crate::job_store::LeaderGuard;
use crate::service::Coordinator;
use etcd_client::{Client, LeaderKey};
use longshot_core::api::*;
use longshot_core::denoiser::ModelInfo;
use longshot_core::inputs::{InputDigest, InputInfo};
use longshot_core::job::{JobSpec, OutputKind};
use longshot_etcd::schema::LEADER_ELECTION;
use longshot_etcd::{connect_once, timed, Backoff, EtcdError};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// The leader lease's default TTL: a killed leader is replaced within it (etcd's own election
/// timeout is 1 s, so leases of seconds are safe).
pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(10);

/// This coordinator leads until [`Leadership::lost`] resolves.
pub struct Leadership {
    pub guard: LeaderGuard,
    key: LeaderKey,
    lease: i64,
    endpoints: Vec<String>,
    lost: watch::Receiver<Option<String>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Resolves with the reason once the lease is gone (etcd said it expired).
    pub async fn lost(&mut self) -> String {
        loop {
            if let Some(why) = self.lost.borrow().clone() {
                return why;
            }
            if self.lost.changed().await.is_err() {
                return "the lease keeper stopped".into();
            }
        }
    }

    /// Steps down at once (a clean shutdown), so a standby need not wait for the lease to expire.
    pub async fn resign(self) {
        self.keeper.abort();
        if let Ok(mut c) = connect_once(&self.endpoints).await {
            let opts = etcd_client::ResignOptions::new().with_leader(self.key);
            let _ = timed(c.resign(Some(opts))).await;
            let _ = timed(c.lease_revoke(self.lease)).await;
        }
    }
}

/// Campaigns until elected (retrying etcd failures with backoff); `advertise` is the address
/// clients should use for this coordinator.
pub async fn campaign(endpoints: &[String], advertise: &str, ttl: Duration) -> Leadership {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    loop {
        match campaign_once(endpoints, advertise, ttl).await {
            Ok(l) => return l,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!("campaigning for leadership failed ({e}); again in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn campaign_once(endpoints: &[String], advertise: &str, ttl: Duration) -> Result<Leadership, EtcdError> {
    let mut client = connect_once(endpoints).await?;
    let lease = timed(client.lease_grant(ttl.as_secs().max(2) as i64, None)).await?.id();
    let (lost_tx, mut lost) = watch::channel(None);
    let keeper = tokio::spawn(keep_alive(endpoints.to_vec(), lease, ttl, lost_tx));
    tracing::info!(
        lease = format!("{lease:x}"),
        "campaigning for leadership as {advertise}"
    );
    // No deadline: the call returns when this candidate is elected.
    let won = tokio::select! {
        r = client.campaign(LEADER_ELECTION, advertise, lease) => r,
        _ = lost.changed() => {
            keeper.abort();
            return Err(EtcdError::Request("the lease expired while campaigning".into()));
        }
    };
    let key = match won.map(|r| r.leader().cloned()) {
        Ok(Some(key)) => key,
        other => {
            keeper.abort();
            let _ = timed(client.lease_revoke(lease)).await;
            return Err(match other {
                Err(e) => e.into(),
                _ => EtcdError::Request("the election answered without a leader key".into()),
            });
        }
    };
    tracing::info!(key = %String::from_utf8_lossy(key.key()), "elected leader");
    Ok(Leadership {
        guard: LeaderGuard {
            key: key.key().to_vec(),
            create_revision: key.rev(),
        },
        key,
        lease,
        endpoints: endpoints.to_vec(),
        lost,
        keeper,
    })
}

/// Renews `lease` every third of `ttl`; reports loss only when etcd says the lease is gone (while
/// etcd is unreachable nobody else can be elected either).
async fn keep_alive(endpoints: Vec<String>, lease: i64, ttl: Duration, lost: watch::Sender<Option<String>>) {
    let mut client: Option<Client> = None;
    loop {
        tokio::time::sleep(ttl / 3).await;
        if client.is_none() {
            client = connect_once(&endpoints).await.ok();
        }
        let Some(c) = client.as_mut() else { continue };
        match renew(c, lease).await {
            Ok(left) if left > 0 => {}
            Ok(_) => {
                let _ = lost.send(Some(format!("the leadership lease {lease:x} expired")));
                return;
            }
            Err(e) => {
                tracing::warn!("renewing the leadership lease failed: {e}");
                client = None;
            }
        }
    }
}

/// One renewal; the TTL left (0: the lease is gone).
async fn renew(c: &mut Client, lease: i64) -> Result<i64, EtcdError> {
    let (mut keeper, mut stream) = timed(c.lease_keep_alive(lease)).await?;
    timed(keeper.keep_alive()).await?;
    match timed(stream.message()).await? {
        Some(r) => Ok(r.ttl()),
        None => Err(EtcdError::Request("the keep-alive stream closed".into())),
    }
}

/// The API a coordinator serves with etcd: a standby's answers until it leads, then the
/// coordinator's.
pub struct Gate {
    endpoints: Vec<String>,
    leader: OnceLock<Coordinator>,
    client: Mutex<Option<Client>>,
}

impl Gate {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            leader: OnceLock::new(),
            client: Mutex::new(None),
        }
    }

    /// From now on this process leads.
    pub fn lead(&self, c: Coordinator) {
        let _ = self.leader.set(c);
    }

    /// The leader's advertised address, if one is elected.
    async fn leader_address(&self) -> Option<String> {
        let cached = self.client.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut c = match cached {
            Some(c) => c,
            None => connect_once(&self.endpoints).await.ok()?,
        };
        match timed(c.leader(LEADER_ELECTION)).await {
            Ok(r) => {
                *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
                r.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            }
            Err(e) => {
                tracing::debug!("no leader known: {e}");
                None
            }
        }
    }

    fn standby<T: Send + 'static>(&self) -> BoxFuture<'_, Result<T, ApiError>> {
        Box::pin(async move {
            Err(ApiError::NotLeader {
                leader: self.leader_address().await,
            })
        })
    }
}

impl JobApi for Gate {
    fn submit(&self, spec: JobSpec, owner: String) -> BoxFuture<'_, Result<SubmitResult, ApiError>> {
        match self.leader.get() {
            Some(c) => c.submit(spec, owner),
            None => self.standby(),
        }
    }

    fn get(&self, job_id: String) -> BoxFuture<'_, Result<JobStatus, ApiError>> {
        match self.leader.get() {
            Some(c) => c.get(job_id),
            None => self.standby(),
        }
    }

    fn list(&self, filter: JobFilter) -> BoxFuture<'_, Result<Vec<JobStatus>, ApiError>> {
        match self.leader.get() {
            Some(c) => c.list(filter),
            None => self.standby(),
        }
    }

    fn cancel(&self, job_id: String) -> BoxFuture<'_, Result<JobState, ApiError>> {
        match self.leader.get() {
            Some(c) => c.cancel(job_id),
            None => self.standby(),
        }
    }

    fn drain(&self, worker_id: String, drain: bool) -> BoxFuture<'_, Result<WorkerState, ApiError>> {
        match self.leader.get() {
            Some(c) => c.drain(worker_id, drain),
            None => self.standby(),
        }
    }

    fn upload_input(
        &self,
        chunks: BoxStream<Result<Vec<u8>, ApiError>>,
        expected: Option<InputDigest>,
    ) -> BoxFuture<'_, Result<InputInfo, ApiError>> {
        match self.leader.get() {
            Some(c) => c.upload_input(chunks, expected),
            None => self.standby(),
        }
    }

    fn watch(&self, job_id: String) -> BoxFuture<'_, Result<BoxStream<JobEvent>, ApiError>> {
        match self.leader.get() {
            Some(c) => c.watch(job_id),
            None => self.standby(),
        }
    }

    fn fetch(
        &self,
        job_id: String,
        format: OutputKind,
        shot: Option<u32>,
    ) -> BoxFuture<'_, Result<BoxStream<Result<OutputChunk, ApiError>>, ApiError>> {
        match self.leader.get() {
            Some(c) => c.fetch(job_id, format, shot),
            None => self.standby(),
        }
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerInfo>, ApiError>> {
        match self.leader.get() {
            Some(c) => c.workers(),
            None => self.standby(),
        }
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, ApiError>> {
        match self.leader.get() {
            Some(c) => c.models(),
            None => self.standby(),
        }
    }

    fn estimate(&self, spec: JobSpec) -> BoxFuture<'_, Result<JobEstimate, ApiError>> {
        match self.leader.get() {
            Some(c) => c.estimate(spec),
            None => self.standby(),
        }
    }
}

impl RegistryApi for Gate {
    fn register(&self, worker: WorkerInfo) -> BoxFuture<'_, Result<RegisterAck, ApiError>> {
        match self.leader.get() {
            Some(c) => c.register(worker),
            None => self.standby(),
        }
    }

    fn heartbeat(
        &self,
        worker_id: String,
        state: WorkerState,
        busy: Option<String>,
    ) -> BoxFuture<'_, Result<bool, ApiError>> {
        match self.leader.get() {
            Some(c) => c.heartbeat(worker_id, state, busy),
            None => self.standby(),
        }
    }

    fn deregister(&self, worker_id: String) -> BoxFuture<'_, Result<(), ApiError>> {
        match self.leader.get() {
            Some(c) => c.deregister(worker_id),
            None => self.standby(),
        }
    }
}
