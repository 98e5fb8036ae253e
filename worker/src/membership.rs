//! Registration and heartbeats with the coordinator.
//!
//! The heartbeat runs as its own task and only awaits short RPCs, so a busy shard (which runs on
//! its own thread) can never starve it.

use crate::node::WorkerNode;
use longshot_core::api::{ApiError, RegisterAck, RegistryApi, WorkerInfo, WorkerState};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Registers, retrying unreachable coordinators with exponential backoff for at most `patience`.
/// A refusal (duplicate id, bad address) is returned at once: retrying cannot fix it.
pub async fn register(
    registry: &dyn RegistryApi,
    info: &WorkerInfo,
    patience: Duration,
) -> Result<RegisterAck, ApiError> {
    let deadline = Instant::now() + patience;
    let mut backoff = Duration::from_millis(100);
    loop {
        match registry.register(info.clone()).await {
            Ok(ack) => return Ok(ack),
            Err(ApiError::Unavailable(m)) if Instant::now() + backoff < deadline => {
                tracing::info!("coordinator not reachable yet ({m}); retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(ApiError::Unavailable(m)) => {
                return Err(ApiError::Unavailable(format!(
                    "coordinator unreachable for {patience:?}: {m}"
                )))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Heartbeats until `shutdown` flips, re-registering if the coordinator forgot this worker
/// (it restarted); deregisters on shutdown.
pub async fn heartbeat_loop(
    registry: Arc<dyn RegistryApi>,
    info: WorkerInfo,
    node: WorkerNode,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => break,
        }
        let state = if node.busy_job().is_some() {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        };
        match registry.heartbeat(info.id.clone(), state, node.busy_job()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the coordinator does not know this worker any more; registering again");
                if let Err(e) = registry.register(info.clone()).await {
                    tracing::warn!("re-registration failed: {e}");
                }
            }
            Err(e) => tracing::warn!("heartbeat failed: {e}"),
        }
    }
    if let Err(e) = tokio::time::timeout(Duration::from_secs(3), registry.deregister(info.id.clone()))
        .await
        .unwrap_or(Ok(()))
    {
        tracing::warn!("deregistration failed: {e}");
    }
}
