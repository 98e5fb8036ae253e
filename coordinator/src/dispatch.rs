//! The scheduling loop: starts every queued job that can start now on idle workers.

use crate::context::Inner;
use crate::job_run::JobRun;
use crate::job_table::plan_summary;
use crate::lifecycle::Transition;
use crate::placement::place;
use longshot_core::api::{ApiError, WorkerInfo, WorkerState};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long a worker that refused a shard is left out of scheduling.
pub(crate) const REFUSAL_COOLDOWN: Duration = Duration::from_secs(1);

/// How long a registered worker that could not be reached is left out of scheduling (its
/// registration may outlive it by a heartbeat timeout or an etcd lease).
pub(crate) const UNREACHABLE_COOLDOWN: Duration = Duration::from_secs(5);

/// How often the loop looks again when nothing woke it.
const IDLE_POLL: Duration = Duration::from_millis(500);

pub(crate) async fn scheduling_loop(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if let Err(e) = dispatch_once(&inner).await {
            tracing::warn!("scheduling: {e}");
        }
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
}

/// Places the queue on the idle workers and starts a run per gang.
async fn dispatch_once(inner: &Arc<Inner>) -> Result<(), ApiError> {
    let workers = inner.registry.list().await?;
    let shared = inner.registry.shared();
    let mut table = inner.lock();
    let busy = workers.iter().filter(|w| table.is_busy(w)).count();
    table.metrics().worker_counts(workers.len() - busy, busy);
    table.refused.retain(|_, at| at.elapsed() < REFUSAL_COOLDOWN);
    table.unreachable.retain(|_, at| at.elapsed() < UNREACHABLE_COOLDOWN);
    let idle: Vec<WorkerInfo> = workers
        .into_iter()
        .filter(|w| {
            !table.busy.contains_key(&w.id)
                && !table.refused.contains_key(&w.id)
                && !table.unreachable.contains_key(&w.id)
                && !table.drained.contains(&w.id)
        })
        .filter(|w| w.state == WorkerState::Idle || (w.state == WorkerState::Busy && !shared))
        .collect();
    for gang in place(&table.queued_jobs(), &idle, inner.cfg.placement()) {
        for w in &gang.workers {
            table.busy.insert(w.id.clone(), gang.job_id.clone());
        }
        table.plan_ids += 1;
        let plan_id = table.plan_ids;
        table.start_plan(&gang.job_id, plan_id);
        let Some(job) = table.get(&gang.job_id) else { continue };
        let summary = plan_summary(&job.resolved, &job.model, gang.workers.len() as u32);
        let run = JobRun::new(inner.clone(), job, plan_id, gang);
        if let Err(e) = table.transition(&run.job_id, Transition::Start(summary)) {
            tracing::error!(job = %run.job_id, "not starting: {e}");
            for w in &run.workers {
                table.busy.remove(&w.id);
            }
            continue;
        }
        tracing::info!(job = %run.job_id, plan_id, workers = run.workers.len(), "job started");
        tokio::spawn(run.run());
    }
    Ok(())
}
