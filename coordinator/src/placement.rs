//! Which idle workers render which queued job: gang placement, as a pure function.
//!
//! Jobs are served in run order (priority, high first, then submission order). Each job gets the
//! largest group of idle workers that serve its exact model (name and weights) and share one
//! build and one device kind and name — bit-identical output needs identical arithmetic, and
//! GEMM kernels differ between GPU generations and CPU instruction sets — capped at the job's
//! window count and the per-job limit. The gang's workers, sorted by id, take the shards
//! ([`longshot_core::takes::assign`]: contiguous window ranges of each take) in order; a job with
//! more takes than workers runs its shards in waves, shard `j` on worker `j mod n`. Workers
//! excluded from a job (they failed it twice) are never placed on it. A gang forms only if every
//! shard fits its worker's memory budget.

use longshot_core::admission::budget_of;
use longshot_core::api::WorkerInfo;
use longshot_core::denoiser::ModelInfo;
use longshot_core::plan::WindowPlan;
use longshot_core::takes::{assign, Shard};
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// A queued job, as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedJob {
    pub job_id: String,
    pub priority: i32,
    /// Submission order.
    pub seq: u64,
    pub model: ModelInfo,
    /// Every take's window grid (one for a job without cuts).
    pub plans: Vec<WindowPlan>,
    /// Workers left out of this job (they failed it twice).
    pub excluded: Vec<String>,
    /// Bytes a worker holds per window (`longshot_core::admission`): a gang forms only where
    /// every worker's share fits its budget.
    pub window_bytes: u64,
}

/// Placement limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlacementConfig {
    /// At most this many workers per job (0: as many as the job has windows).
    pub max_workers_per_job: usize,
}

/// Workers for one job: `workers[j mod n]` renders `shards[j]`, in waves of `n` shards.
#[derive(Clone, Debug, PartialEq)]
pub struct Gang {
    pub job_id: String,
    pub workers: Vec<WorkerInfo>,
    pub shards: Vec<Shard>,
}

/// The run-order key: sorting by it puts high priority first, then earlier submissions.
pub fn run_order(priority: i32, seq: u64) -> (Reverse<i32>, u64) {
    (Reverse(priority), seq)
}

/// Places `queue` (any order) on `idle` workers; gangs come back in run order, and a job that
/// cannot start now is left out. No worker is placed twice.
pub fn place(queue: &[QueuedJob], idle: &[WorkerInfo], config: PlacementConfig) -> Vec<Gang> {
    let mut jobs: Vec<&QueuedJob> = queue.iter().collect();
    jobs.sort_by_key(|j| run_order(j.priority, j.seq));
    let mut free: Vec<&WorkerInfo> = idle.iter().collect();
    let mut gangs = Vec::new();
    for job in jobs {
        // Keyed by build, device kind and device name; a BTreeMap so ties go the same way each time.
        let mut by_build: BTreeMap<(&str, &str, &str), Vec<&WorkerInfo>> = BTreeMap::new();
        let eligible = free
            .iter()
            .filter(|w| w.models.contains(&job.model) && !job.excluded.contains(&w.id));
        for w in eligible {
            by_build
                .entry((w.version.as_str(), w.device_kind.as_str(), w.device_name.as_str()))
                .or_default()
                .push(w);
        }
        // The largest group; among equal sizes, the first key.
        let Some(group) = by_build.into_values().rev().max_by_key(|g| g.len()) else {
            continue;
        };
        let windows: usize = job.plans.iter().map(WindowPlan::windows).sum();
        let cap = match config.max_workers_per_job {
            0 => windows,
            n => n.min(windows),
        };
        let mut chosen: Vec<WorkerInfo> = group.into_iter().cloned().collect();
        chosen.sort_by(|a, b| a.id.cmp(&b.id));
        chosen.truncate(cap);
        let Ok(shards) = assign(&job.plans, chosen.len()) else {
            continue;
        };
        // The largest group gives the smallest shares; if they do not fit, the job waits for
        // more workers rather than overflow one.
        let fits = shards.iter().enumerate().all(|(j, s)| {
            (s.windows.len() as u64).saturating_mul(job.window_bytes) <= budget_of(&chosen[j % chosen.len()])
        });
        if !fits {
            continue;
        }
        free.retain(|w| !chosen.iter().any(|c| c.id == w.id));
        gangs.push(Gang {
            job_id: job.job_id.clone(),
            workers: chosen,
            shards,
        });
    }
    gangs
}
