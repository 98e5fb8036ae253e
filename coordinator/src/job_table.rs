//! The job table: every job the coordinator knows, and the one place a job changes.
//!
//! [`JobTable::transition`] moves a job through the state machine ([`crate::lifecycle`]), saves
//! its record and tells its watchers; [`JobTable::progress`] does the same for steps and frames,
//! which never change the state except that the first frame moves a job to decoding. Nothing
//! else writes a job's status.

use crate::checkpoints::{CheckpointRef, CheckpointStore};
use crate::estimate::RunTiming;
use crate::job_store::{Change, JobRecord, JobStore};
use crate::lifecycle::{self, IllegalTransition, Transition};
use crate::metrics::CoordinatorMetrics;
use crate::placement::{run_order, QueuedJob};
use longshot_core::api::{JobEvent, JobState, JobStatus, PlanSummary, WorkerInfo, WorkerState};
use longshot_core::denoiser::ModelInfo;
use longshot_core::job::ResolvedJob;
use longshot_core::preview::{PreviewClip, PreviewError, PreviewFrames};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, watch};

/// How many events a slow watcher may fall behind before it misses some.
const EVENT_BUFFER: usize = 1024;

/// Resumes from one checkpoint a job gets: the next interruption without a newer checkpoint fails
/// it, since every gang breaks before it gets further and retrying forever would hide that.
pub(crate) const MAX_STALLED_RESUMES: u32 = 3;

/// Failures of one job on one worker after which that worker is left out of the job.
pub(crate) const EXCLUDE_AFTER_FAILURES: u32 = 2;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The plan as reported to clients, for a gang of `workers` (0 while queued).
pub(crate) fn plan_summary(r: &ResolvedJob, m: &ModelInfo, workers: u32) -> PlanSummary {
    PlanSummary {
        windows: r.windows() as u32,
        latent_frames: r.latent_frames as u32,
        output_frames: r.frames,
        rendered_frames: r.rendered_frames,
        workers,
        overlap: r.plan.overlap() as u32,
        window: m.window_frames as u32,
        padded_latent_frames: r.padded_latent_frames() as u32,
    }
}

/// One job: its status (written only through [`JobTable`]) and what runs it.
pub(crate) struct Job {
    pub seq: u64,
    status: JobStatus,
    pub resolved: ResolvedJob,
    pub model: ModelInfo,
    events: broadcast::Sender<JobEvent>,
    pub cancel: watch::Sender<bool>,
    pub dir: PathBuf,
    /// The job's trace span, from submission to its end: created inside the submit call, so it
    /// continues the client's trace; each plan's span is its child. Closed (dropped) when the job
    /// ends, which is when it is exported. `Span::none()` for jobs restored from a store.
    pub span: tracing::Span,
    /// The last complete checkpoint (persisted with the record).
    pub checkpoint: Option<CheckpointRef>,
    /// How its successful run spent its time (persisted with the record): `longshot estimate`'s
    /// measurements.
    pub timing: Option<RunTiming>,
    /// The plan id of the job's current (or last) run: only it may checkpoint.
    pub plan_id: u64,
    /// The running plan's live previews (not persisted: a new run starts a new clip).
    preview: Option<PreviewClip>,
    /// Interruptions blamed on each worker.
    failures: HashMap<String, u32>,
    /// Interruptions in a row without a newer checkpoint, and the checkpoint step at the last one.
    stalled: u32,
    stalled_at: u32,
}

impl Job {
    /// A newly accepted job, queued.
    pub fn queued(
        seq: u64,
        job_id: String,
        owner: String,
        resolved: ResolvedJob,
        model: ModelInfo,
        dir: PathBuf,
        now_ms: u64,
    ) -> Job {
        let plan = plan_summary(&resolved, &model, 0);
        let status = JobStatus {
            job_id,
            state: JobState::Queued,
            spec: resolved.spec.clone(),
            seed: resolved.seed,
            plan: Some(plan),
            queue_position: 0,
            // Video-to-video skips the schedule's first steps: they count as done.
            steps_done: plan.windows as u64 * resolved.first_step as u64,
            steps_total: plan.windows as u64 * resolved.schedule.steps() as u64,
            outputs: Vec::new(),
            error: None,
            submitted_unix_ms: now_ms,
            finished_unix_ms: 0,
            recovery: Default::default(),
            owner,
            cost: Default::default(),
        };
        Job::restore(JobRecord {
            seq,
            status,
            resolved,
            model,
            dir,
            checkpoint: None,
            timing: None,
        })
    }

    pub fn restore(r: JobRecord) -> Job {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (cancel, _) = watch::channel(false);
        Job {
            seq: r.seq,
            status: r.status,
            resolved: r.resolved,
            model: r.model,
            events,
            cancel,
            dir: r.dir,
            span: tracing::Span::none(),
            checkpoint: r.checkpoint,
            timing: r.timing,
            plan_id: 0,
            preview: None,
            failures: HashMap::new(),
            stalled: 0,
            stalled_at: 0,
        }
    }

    pub fn status(&self) -> &JobStatus {
        &self.status
    }

    pub fn id(&self) -> &str {
        &self.status.job_id
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    pub fn record(&self) -> JobRecord {
        JobRecord {
            seq: self.seq,
            status: self.status.clone(),
            resolved: self.resolved.clone(),
            model: self.model.clone(),
            dir: self.dir.clone(),
            checkpoint: self.checkpoint.clone(),
            timing: self.timing.clone(),
        }
    }

    /// The newest preview of every frame previewed so far, for a watcher that joins now.
    pub fn preview_events(&self) -> Vec<JobEvent> {
        let Some(clip) = &self.preview else { return Vec::new() };
        clip.runs()
            .into_iter()
            .map(|frames| self.preview_event(frames))
            .collect()
    }

    fn preview_event(&self, frames: PreviewFrames) -> JobEvent {
        JobEvent::Preview {
            total_steps: self.resolved.schedule.steps() as u32,
            clip_frames: self.resolved.latent_frames as u32,
            frames,
        }
    }

    fn publish(&self, event: JobEvent) {
        // No watcher is not an error.
        let _ = self.events.send(event);
    }
}

/// Work reported by a running job, which is not a change of state.
pub(crate) enum Progress {
    /// One window finished one denoising step.
    Step {
        window: u32,
        step: u32,
        total_steps: u32,
        worker_id: String,
    },
    /// `done` of `total` frames were decoded.
    Frames { done: u32, total: u32 },
}

/// The event that describes a job's current state, for a watcher that joins now.
pub(crate) fn snapshot_event(s: &JobStatus) -> JobEvent {
    match s.state {
        JobState::Queued => JobEvent::Queued {
            position: s.queue_position,
        },
        JobState::Running | JobState::Decoding => JobEvent::Planned(s.plan.unwrap_or_default()),
        JobState::Done => JobEvent::Done {
            outputs: s.outputs.clone(),
        },
        JobState::Failed => JobEvent::Failed {
            reason: s.error.clone().unwrap_or_default(),
        },
        JobState::Cancelled => JobEvent::Cancelled,
    }
}

/// Every job, and which workers are running which.
pub(crate) struct JobTable {
    jobs: HashMap<String, Job>,
    store: Arc<dyn JobStore>,
    metrics: CoordinatorMetrics,
    /// The last submission sequence number handed out.
    seq: u64,
    /// worker id → job id, for workers running a shard.
    pub busy: HashMap<String, String>,
    /// Workers that recently refused a shard as busy, and when (see `dispatch`).
    pub refused: HashMap<String, Instant>,
    /// Registered workers that recently could not be reached, and when (see `dispatch`).
    pub unreachable: HashMap<String, Instant>,
    /// Workers an admin drained: no new job is placed on them (kept in this process only).
    pub drained: HashSet<String>,
    /// The last plan id handed out; a plan id fences one attempt at a job.
    pub plan_ids: u64,
    /// Where checkpoint blobs live; a job's are removed when it ends.
    checkpoints: CheckpointStore,
    /// Finished jobs removed by retention, so `status` can say they expired.
    expired: HashSet<String>,
    /// Jobs queued, and running or decoding: the gauges, kept without scanning the table.
    counts: [usize; 2],
}

/// Workers outlive coordinators and refuse a plan older than the one they run, so a restarted or
/// standby coordinator's plan ids must exceed every earlier coordinator's: they start from the wall
/// clock in ms, shifted to leave 65,536 plans per ms of the old coordinator's life.
pub(crate) fn first_plan_id(now_ms: u64) -> u64 {
    now_ms << 16
}

/// Which job gauge a state counts in.
fn gauge_slot(s: JobState) -> Option<usize> {
    match s {
        JobState::Queued => Some(0),
        JobState::Running | JobState::Decoding => Some(1),
        JobState::Done | JobState::Failed | JobState::Cancelled => None,
    }
}

impl JobTable {
    /// A table holding `jobs` (restored records), saving changes to `store`.
    pub fn new(
        store: Arc<dyn JobStore>,
        checkpoints: CheckpointStore,
        metrics: CoordinatorMetrics,
        jobs: Vec<JobRecord>,
        max_seq: u64,
    ) -> Self {
        let jobs = jobs
            .into_iter()
            .map(|r| (r.status.job_id.clone(), Job::restore(r)))
            .collect();
        let mut table = JobTable {
            jobs,
            store,
            metrics,
            seq: max_seq,
            busy: HashMap::new(),
            refused: HashMap::new(),
            unreachable: HashMap::new(),
            drained: HashSet::new(),
            plan_ids: first_plan_id(now_ms()),
            checkpoints,
            expired: HashSet::new(),
            counts: [0; 2],
        };
        table.refresh_positions();
        table.count_jobs();
        table
    }

    pub fn metrics(&self) -> &CoordinatorMetrics {
        &self.metrics
    }

    /// Sets the queued/running gauges from the table (a scan: only on restore; later changes
    /// adjust them by the one job that moved, see [`Self::recount`]).
    fn count_jobs(&mut self) {
        self.counts = [0; 2];
        for j in self.jobs.values() {
            if let Some(i) = gauge_slot(j.status.state) {
                self.counts[i] += 1;
            }
        }
        self.metrics.job_counts(self.counts[0], self.counts[1]);
    }

    /// One job moved from `from` (None: it is new) to `to`.
    fn recount(&mut self, from: Option<JobState>, to: JobState) {
        if let Some(i) = from.and_then(gauge_slot) {
            self.counts[i] -= 1;
        }
        if let Some(i) = gauge_slot(to) {
            self.counts[i] += 1;
        }
        self.metrics.job_counts(self.counts[0], self.counts[1]);
    }

    /// Whether `w` is running a shard: placed by this coordinator, or reporting itself busy.
    pub fn is_busy(&self, w: &WorkerInfo) -> bool {
        self.busy.contains_key(&w.id) || w.state == WorkerState::Busy
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn get(&self, job_id: &str) -> Option<&Job> {
        self.jobs.get(job_id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// Whether `job_id` was removed by retention.
    pub fn is_expired(&self, job_id: &str) -> bool {
        self.expired.contains(job_id)
    }

    /// Removes the jobs that finished more than `retain` before `now_ms` from the table and the
    /// store; returns their output directories, for the caller to delete off the lock.
    pub fn expire(&mut self, now_ms: u64, retain: Duration) -> Vec<PathBuf> {
        let cutoff = now_ms.saturating_sub(retain.as_millis() as u64);
        let old: Vec<String> = self
            .jobs
            .values()
            .filter(|j| j.status.state.is_terminal() && j.status.finished_unix_ms <= cutoff)
            .map(|j| j.id().to_string())
            .collect();
        let mut dirs = Vec::new();
        for id in old {
            if let Some(job) = self.jobs.remove(&id) {
                self.store.remove(&id);
                dirs.push(job.dir);
                self.expired.insert(id);
            }
        }
        dirs
    }

    /// Adds a newly accepted (already stored) job and announces its queue position.
    pub fn insert(&mut self, job: Job) {
        let id = job.id().to_string();
        self.metrics.submitted(&job.model.name);
        self.jobs.insert(id.clone(), job);
        self.refresh_positions();
        self.recount(None, JobState::Queued);
        let job = &self.jobs[&id];
        job.publish(JobEvent::Queued {
            position: job.status.queue_position,
        });
    }

    /// Queued jobs in run order: priority (high first), then submission order.
    pub fn queue(&self) -> Vec<&Job> {
        let mut q: Vec<&Job> = self
            .jobs
            .values()
            .filter(|j| j.status.state == JobState::Queued)
            .collect();
        q.sort_by_key(|j| run_order(j.status.spec.priority, j.seq));
        q
    }

    /// The queue as placement sees it.
    pub fn queued_jobs(&self) -> Vec<QueuedJob> {
        self.queue()
            .into_iter()
            .map(|j| QueuedJob {
                job_id: j.id().to_string(),
                priority: j.status.spec.priority,
                seq: j.seq,
                model: j.model.clone(),
                plans: j.resolved.take_plans(),
                excluded: j.status.recovery.excluded_workers.clone(),
                window_bytes: crate::admission::window_bytes(&j.resolved, &j.model),
            })
            .collect()
    }

    fn refresh_positions(&mut self) {
        let order: Vec<String> = self.queue().into_iter().map(|j| j.id().to_string()).collect();
        for (pos, id) in order.into_iter().enumerate() {
            if let Some(j) = self.jobs.get_mut(&id) {
                j.status.queue_position = pos as u32;
            }
        }
    }

    /// Moves `job_id` through the state machine, saves its record and tells its watchers.
    pub fn transition(&mut self, job_id: &str, t: Transition) -> Result<(), TableError> {
        let job = self
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| TableError::NoJob(job_id.to_string()))?;
        let from = job.status.state;
        let now = now_ms();
        lifecycle::apply(&mut job.status, t.clone(), now)?;
        self.metrics.transition(&job.status, &job.model.name, &t, now);
        let to = job.status.state;
        if from == JobState::Queued || to == JobState::Queued {
            self.refresh_positions();
        }
        self.recount(Some(from), to);
        if to.is_terminal() || to == JobState::Queued {
            // A later run's previews start from its own steps, not behind this run's.
            if let Some(job) = self.jobs.get_mut(job_id) {
                job.preview = None;
            }
        }
        if to.is_terminal() {
            // Ends the job's span (once the last plan span under it has closed too).
            if let Some(job) = self.jobs.get_mut(job_id) {
                job.span = tracing::Span::none();
                if job.checkpoint.take().is_some() || job.status.recovery.checkpoint_step > 0 {
                    self.remove_checkpoints(job_id);
                }
            }
        }
        let job = &self.jobs[job_id];
        if let Transition::Interrupt(reason) = t {
            job.publish(JobEvent::Resuming {
                reason,
                from_step: job.status.recovery.checkpoint_step,
            });
        }
        // Decoding is announced by the frame progress that caused it.
        if to != JobState::Decoding {
            job.publish(snapshot_event(&job.status));
        }
        self.store.save(job_id, Change::State, &|| job.record());
        Ok(())
    }

    /// Takes in live previews of the job's latent frames (numbered across takes) and passes them
    /// to its watchers. Previews are not saved: they only matter while the job runs.
    pub fn preview(&mut self, job_id: &str, frames: PreviewFrames) -> Result<(), TableError> {
        let job = self
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| TableError::NoJob(job_id.to_string()))?;
        // Sized by the job, not by what a worker sends: a preview of another size is refused.
        let r = &job.resolved;
        let (clip_frames, width, height) = (r.latent_frames, r.latent_width as u32, r.latent_height as u32);
        job.preview
            .get_or_insert_with(|| PreviewClip::new(clip_frames, width, height))
            .update(&frames)?;
        job.publish(job.preview_event(frames));
        Ok(())
    }

    /// Removes a finished job's checkpoint blobs, off the async runtime when there is one.
    fn remove_checkpoints(&self, job_id: &str) {
        let (store, id) = (self.checkpoints.clone(), job_id.to_string());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || store.remove_job(&id))),
            Err(_) => store.remove_job(&id),
        }
    }

    /// Notes that plan `plan_id` runs `job_id` now: only it may checkpoint the job.
    pub fn start_plan(&mut self, job_id: &str, plan_id: u64) {
        if let Some(job) = self.jobs.get_mut(job_id) {
            job.plan_id = plan_id;
        }
    }

    /// Makes `r` the job's last complete checkpoint and saves the record; `false` (nothing
    /// changes) when `r` comes from a plan that no longer runs the job, or is not newer.
    pub fn checkpointed(&mut self, job_id: &str, r: CheckpointRef) -> Result<bool, TableError> {
        let job = self
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| TableError::NoJob(job_id.to_string()))?;
        let running = matches!(job.status.state, JobState::Running | JobState::Decoding);
        let newer = job.checkpoint.as_ref().is_none_or(|c| r.step > c.step);
        if !running || r.plan_id != job.plan_id || !newer {
            return Ok(false);
        }
        job.status.recovery.checkpoint_step = r.step;
        job.checkpoint = Some(r);
        let job = &self.jobs[job_id];
        self.store.save(job_id, Change::State, &|| job.record());
        Ok(true)
    }

    /// Adds `seconds` of a worker of device kind `device` to the job's cost
    /// ([`longshot_core::api::JobCost`]).
    pub fn charge(&mut self, job_id: &str, device: &str, seconds: f64) {
        let Some(job) = self.jobs.get_mut(job_id) else { return };
        job.status.cost.add(device, seconds);
        self.metrics.device_time(&job.model.name, device, seconds);
        let job = &self.jobs[job_id];
        self.store.save(job_id, Change::Progress, &|| job.record());
    }

    /// Records how `job_id`'s successful run spent its time (saved with its record when it
    /// finishes, which follows at once).
    pub fn timed(&mut self, job_id: &str, timing: RunTiming) {
        if let Some(job) = self.jobs.get_mut(job_id) {
            job.timing = Some(timing);
        }
    }

    /// The timings of finished jobs of `model` at `width`×`height` on `device_kind` workers,
    /// most recently finished first.
    pub fn timings(&self, model: &ModelInfo, width: u32, height: u32, device_kind: &str) -> Vec<RunTiming> {
        let mut done: Vec<(u64, &RunTiming)> = self
            .jobs
            .values()
            .filter(|j| j.status.state == JobState::Done && j.model == *model)
            .filter(|j| (j.resolved.spec.width, j.resolved.spec.height) == (width, height))
            .filter_map(|j| j.timing.as_ref().map(|t| (j.status.finished_unix_ms, t)))
            .filter(|(_, t)| t.device_kind == device_kind)
            .collect();
        done.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        done.into_iter().map(|(_, t)| t.clone()).collect()
    }

    /// Forgets `job_id`'s checkpoint (it could not be read): the next run starts from noise.
    pub fn drop_checkpoint(&mut self, job_id: &str) {
        if let Some(job) = self.jobs.get_mut(job_id) {
            job.checkpoint = None;
            job.status.recovery.checkpoint_step = 0;
            let job = &self.jobs[job_id];
            self.store.save(job_id, Change::State, &|| job.record());
        }
    }

    /// What an interrupted run of `job_id` leads to: back to the queue to resume, or a failure
    /// when it keeps being interrupted without a newer checkpoint. `blame`: the worker whose loss
    /// interrupted it; a worker blamed [`EXCLUDE_AFTER_FAILURES`] times is left out of the job.
    pub fn interruption(&mut self, job_id: &str, reason: String, blame: Option<&str>) -> Transition {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return Transition::Fail(reason);
        };
        if let Some(w) = blame {
            let n = job.failures.entry(w.to_string()).or_default();
            *n += 1;
            let excluded = &mut job.status.recovery.excluded_workers;
            if *n >= EXCLUDE_AFTER_FAILURES && !excluded.iter().any(|e| e == w) {
                tracing::warn!(job = %job_id, "worker {w} failed this job {n} times: it is left out of it");
                excluded.push(w.to_string());
            }
        }
        // Interruptions since the job last reached a newer checkpoint, this one included.
        let step = job.status.recovery.checkpoint_step;
        job.stalled = if step > job.stalled_at { 1 } else { job.stalled + 1 };
        job.stalled_at = step;
        if job.stalled > MAX_STALLED_RESUMES {
            return Transition::Fail(format!(
                "{reason} (interrupted {} times without reaching a newer checkpoint than step {step}; giving up)",
                job.stalled
            ));
        }
        Transition::Interrupt(reason)
    }

    /// Records work done by a running job and tells its watchers (frames only now and then).
    pub fn progress(&mut self, job_id: &str, p: Progress) -> Result<(), TableError> {
        let job = self
            .jobs
            .get(job_id)
            .ok_or_else(|| TableError::NoJob(job_id.to_string()))?;
        if matches!(p, Progress::Frames { .. }) && job.status.state == JobState::Running {
            self.transition(job_id, Transition::Decode)?;
        }
        let job = self
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| TableError::NoJob(job_id.to_string()))?;
        let event = match p {
            Progress::Step {
                window,
                step,
                total_steps,
                worker_id,
            } => {
                job.status.steps_done += 1;
                Some(JobEvent::StepProgress {
                    window,
                    step,
                    total_steps,
                    worker_id,
                })
            }
            Progress::Frames { done, total } => {
                (done == 1 || done % 8 == 0 || done == total).then_some(JobEvent::Decoding {
                    frames_done: done,
                    frames_total: total,
                })
            }
        };
        if let Some(e) = event {
            job.publish(e);
        }
        let job = &self.jobs[job_id];
        self.store.save(job_id, Change::Progress, &|| job.record());
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TableError {
    #[error("no job {0:?} in the job table")]
    NoJob(String),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error(transparent)]
    Preview(#[from] PreviewError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job_store::NoJobStore;

    fn table_with_job(dir: &std::path::Path) -> JobTable {
        let model = longshot_worker::models::ModelSet::builtin().served().remove(0);
        let spec = crate::test_spec::spec(&model.name, 209);
        let resolved = spec.resolve(&model, 1).unwrap();
        let mut t = JobTable::new(
            Arc::new(NoJobStore),
            CheckpointStore::new(dir),
            CoordinatorMetrics::unregistered(),
            Vec::new(),
            0,
        );
        t.insert(Job::queued(
            1,
            "j".into(),
            String::new(),
            resolved,
            model,
            dir.join("jobs/j"),
            0,
        ));
        t
    }

    fn start(t: &mut JobTable, plan_id: u64) {
        let plan = t.get("j").unwrap().status().plan.unwrap();
        t.start_plan("j", plan_id);
        t.transition("j", Transition::Start(plan)).unwrap();
    }

    fn ckpt(plan_id: u64, step: u32) -> CheckpointRef {
        CheckpointRef {
            plan_id,
            step,
            windows: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    #[test]
    fn only_the_running_plan_checkpoints_and_only_forwards() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = table_with_job(dir.path());
        start(&mut t, 7);
        assert!(
            !t.checkpointed("j", ckpt(6, 2)).unwrap(),
            "a late message of an older plan"
        );
        assert!(t.checkpointed("j", ckpt(7, 2)).unwrap());
        assert!(!t.checkpointed("j", ckpt(7, 1)).unwrap(), "not newer");
        assert_eq!(t.get("j").unwrap().status().recovery.checkpoint_step, 2);
        assert_eq!(t.get("j").unwrap().record().checkpoint, Some(ckpt(7, 2)));
        let back = t.interruption("j", "worker w1 was lost".into(), Some("w1"));
        t.transition("j", back).unwrap();
        assert!(
            !t.checkpointed("j", ckpt(7, 3)).unwrap(),
            "a queued job takes no checkpoint"
        );
        let s = t.get("j").unwrap().status();
        assert_eq!(
            (s.state, s.steps_done, s.recovery.resumes),
            (JobState::Queued, 2 * 3, 1)
        );
        start(&mut t, 8);
        t.transition("j", Transition::Finish(Vec::new())).unwrap();
        assert_eq!(t.get("j").unwrap().record().checkpoint, None, "gone when the job ends");
    }

    #[test]
    fn previews_fit_the_job_reach_watchers_and_end_with_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = table_with_job(dir.path());
        start(&mut t, 7);
        let (w, h, frames) = {
            let r = &t.get("j").unwrap().resolved;
            (r.latent_width as u32, r.latent_height as u32, r.latent_frames as u32)
        };
        let mut events = t.get("j").unwrap().subscribe();
        let preview = |first_frame, frames, width| PreviewFrames {
            step: 3,
            first_frame,
            frames,
            width,
            height: h,
            rgb8: vec![9; (frames * width * h * 3) as usize],
        };
        t.preview("j", preview(2, 4, w)).unwrap();
        match events.try_recv().unwrap() {
            JobEvent::Preview {
                clip_frames, frames: f, ..
            } => {
                assert_eq!((clip_frames, f.first_frame, f.frames), (frames, 2, 4))
            }
            other => panic!("expected a preview, got {other:?}"),
        }
        // A worker's preview of another size, or past the clip, is refused and not kept.
        assert!(matches!(
            t.preview("j", preview(0, 1, w + 1)),
            Err(TableError::Preview(PreviewError::Resolution { .. }))
        ));
        assert!(matches!(
            t.preview("j", preview(frames - 1, 2, w)),
            Err(TableError::Preview(PreviewError::Range { .. }))
        ));
        assert!(events.try_recv().is_err(), "a refused preview is not published");
        // A watcher that joins now gets the clip as it stands.
        let late = t.get("j").unwrap().preview_events();
        assert!(matches!(&late[..], [JobEvent::Preview { frames: f, .. }] if f.first_frame == 2 && f.frames == 4));
        // A requeued job's next run previews from scratch.
        let back = t.interruption("j", "worker w1 was lost".into(), Some("w1"));
        t.transition("j", back).unwrap();
        assert!(t.get("j").unwrap().preview_events().is_empty());
    }

    /// Runs plan `plan_id` and interrupts it (blaming `blame`), after a checkpoint at `step` if given.
    fn interrupt(t: &mut JobTable, plan_id: u64, blame: &str, step: Option<u32>) -> Transition {
        start(t, plan_id);
        if let Some(step) = step {
            assert!(t.checkpointed("j", ckpt(plan_id, step)).unwrap());
        }
        let next = t.interruption("j", format!("worker {blame} was lost"), Some(blame));
        t.transition("j", next.clone()).unwrap();
        next
    }

    #[test]
    fn a_worker_failing_twice_is_left_out_and_stalled_resumes_fail() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = table_with_job(dir.path());
        assert!(matches!(interrupt(&mut t, 1, "w1", None), Transition::Interrupt(_)));
        assert!(t.queued_jobs()[0].excluded.is_empty());
        assert!(matches!(interrupt(&mut t, 2, "w1", None), Transition::Interrupt(_)));
        assert_eq!(t.queued_jobs()[0].excluded, vec!["w1".to_string()]);
        assert_eq!(
            t.get("j").unwrap().status().recovery.excluded_workers,
            vec!["w1".to_string()]
        );
        // A newer checkpoint starts the count of resumes without progress again.
        assert!(matches!(interrupt(&mut t, 3, "w2", Some(2)), Transition::Interrupt(_)));
        assert!(matches!(interrupt(&mut t, 4, "w3", None), Transition::Interrupt(_)));
        assert!(matches!(interrupt(&mut t, 5, "w4", None), Transition::Interrupt(_)));
        let last = interrupt(&mut t, 6, "w5", None);
        let Transition::Fail(reason) = last else {
            panic!("{last:?}")
        };
        assert!(
            reason.contains("interrupted 4 times without reaching a newer checkpoint than step 2"),
            "{reason}"
        );
        let s = t.get("j").unwrap().status();
        assert_eq!((s.state, s.recovery.resumes), (JobState::Failed, 5));
    }
}
