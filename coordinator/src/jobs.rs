//! The job table and the client-facing API (`JobApi`) and worker-facing registration API
//! (`RegistryApi`) of the coordinator.

use crate::assembly::file_name;
use crate::job_store::{recover, Change, JobRecord, JobStore, NoJobStore};
use crate::registry::{Registry, RegistryError};
use futures::StreamExt;
use longshot_core::api::*;
use longshot_core::denoiser::ModelInfo;
use longshot_core::job::{FieldError, JobSpec, OutputKind, ResolvedJob};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, watch, Notify};
use tokio_stream::wrappers::BroadcastStream;

/// Coordinator settings.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Where job outputs are written (`<data_dir>/jobs/<job id>/`).
    pub data_dir: PathBuf,
    /// How long a worker waits for a neighbour's overlap before failing its shard.
    pub exchange_timeout: Duration,
    /// Overlap hashes are compared every this many steps.
    pub hash_every: usize,
    pub heartbeat_interval: Duration,
    /// At most this many workers per job (0: as many as there are windows).
    pub max_workers_per_job: usize,
    /// How long the worker asked to encode a job's prompts may take (a real umT5-XXL on a CPU,
    /// loaded on first use, takes minutes).
    pub encode_timeout: Duration,
    /// How gangs exchange overlap velocities (NCCL only where the whole gang can).
    pub overlap_transport: crate::nccl_gang::OverlapTransport,
}

impl CoordinatorConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            exchange_timeout: Duration::from_secs(120),
            hash_every: 5,
            heartbeat_interval: Duration::from_secs(2),
            max_workers_per_job: 0,
            encode_timeout: Duration::from_secs(1800),
            overlap_transport: crate::nccl_gang::OverlapTransport::Tcp,
        }
    }
}

pub(crate) struct Job {
    pub seq: u64,
    pub status: JobStatus,
    pub resolved: ResolvedJob,
    pub model: ModelInfo,
    pub events: broadcast::Sender<JobEvent>,
    pub cancel: watch::Sender<bool>,
    pub dir: PathBuf,
}

#[derive(Default)]
pub(crate) struct State {
    pub jobs: HashMap<String, Job>,
    pub seq: u64,
    /// worker id → job id, for workers running a shard.
    pub busy: HashMap<String, String>,
    /// Workers that recently refused a shard as busy, and when (see `dispatch`).
    pub refused: HashMap<String, std::time::Instant>,
    pub plan_ids: u64,
}

pub(crate) struct Inner {
    pub cfg: CoordinatorConfig,
    pub registry: Arc<dyn Registry>,
    pub connector: Arc<dyn WorkerConnector>,
    pub store: Arc<dyn JobStore>,
    pub state: Mutex<State>,
    pub wake: Notify,
}

impl Inner {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections only mutate plain maps; a poisoned lock still holds a consistent table.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves `job`'s record after a change (never blocks: see `JobStore::save`).
    pub fn persist(&self, job: &Job, change: Change) {
        self.store.save(&job.status.job_id, change, &|| job.record());
    }
}

impl Job {
    pub fn record(&self) -> JobRecord {
        JobRecord { seq: self.seq, status: self.status.clone(), resolved: self.resolved.clone(), model: self.model.clone(), dir: self.dir.clone() }
    }

    fn restore(r: JobRecord) -> Job {
        let (events, _) = broadcast::channel(1024);
        let (cancel, _) = watch::channel(false);
        Job { seq: r.seq, status: r.status, resolved: r.resolved, model: r.model, events, cancel, dir: r.dir }
    }
}

/// The coordinator service. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl State {
    /// Queued jobs in run order: priority (high first), then submission order.
    pub fn queue(&self) -> Vec<String> {
        let mut q: Vec<(&String, &Job)> = self.jobs.iter().filter(|(_, j)| j.status.state == JobState::Queued).collect();
        q.sort_by_key(|(_, j)| (-j.status.spec.priority, j.seq));
        q.into_iter().map(|(id, _)| id.clone()).collect()
    }

    pub fn refresh_positions(&mut self) {
        for (pos, id) in self.queue().into_iter().enumerate() {
            if let Some(j) = self.jobs.get_mut(&id) {
                j.status.queue_position = pos as u32;
            }
        }
    }
}

impl Coordinator {
    /// Starts the coordinator's scheduling loop on the current tokio runtime; jobs live in memory.
    pub fn start(cfg: CoordinatorConfig, registry: Arc<dyn Registry>, connector: Arc<dyn WorkerConnector>) -> Self {
        Self::start_with(cfg, registry, connector, Arc::new(NoJobStore), Vec::new())
    }

    /// Like [`Coordinator::start`], saving job records to `store` and resuming from `records`
    /// (loaded from it): queued jobs queue again, interrupted ones fail (`job_store::recover`).
    pub fn start_with(
        cfg: CoordinatorConfig,
        registry: Arc<dyn Registry>,
        connector: Arc<dyn WorkerConnector>,
        store: Arc<dyn JobStore>,
        records: Vec<JobRecord>,
    ) -> Self {
        let recovery = recover(records, now_ms());
        let mut state = State { seq: recovery.max_seq, ..State::default() };
        for r in recovery.jobs {
            state.jobs.insert(r.status.job_id.clone(), Job::restore(r));
        }
        state.refresh_positions();
        for id in &recovery.interrupted {
            if let Some(job) = state.jobs.get(id) {
                store.save(id, Change::State, &|| job.record());
            }
        }
        if !state.jobs.is_empty() {
            let queued = state.queue().len();
            tracing::info!(jobs = state.jobs.len(), queued, interrupted = recovery.interrupted.len(), "restored the job table");
        }
        let inner = Arc::new(Inner { cfg, registry, connector, store, state: Mutex::new(state), wake: Notify::new() });
        tokio::spawn(crate::dispatch::scheduling_loop(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Models served by live workers (the first worker's description of each name wins).
    async fn served_models(&self) -> Result<Vec<ModelInfo>, ApiError> {
        let workers = self.inner.registry.list().await.map_err(registry_err)?;
        let mut models: Vec<ModelInfo> = Vec::new();
        for m in workers.into_iter().flat_map(|w| w.models) {
            if !models.iter().any(|x| x.name == m.name) {
                models.push(m);
            }
        }
        models.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(models)
    }

    async fn submit_job(&self, spec: JobSpec) -> Result<SubmitResult, ApiError> {
        let mut errors = spec.validate();
        if spec.outputs.iter().any(|o| o == "prores") && !longshot_media::ffmpeg_available() {
            errors.push(FieldError::new("outputs", "prores needs ffmpeg on the coordinator's PATH (mp4, png and latents do not)"));
        }
        let models = self.served_models().await?;
        let model = models.iter().find(|m| m.name == spec.model).cloned();
        if model.is_none() && !spec.model.trim().is_empty() {
            let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            let allowed = if names.is_empty() { "none: no worker is registered yet".to_string() } else { names.join(", ") };
            errors.push(FieldError::new("model", format!("{:?} is not served by any worker; available: {allowed}", spec.model)));
        }
        if !errors.is_empty() {
            return Err(ApiError::InvalidArgument(errors));
        }
        let model = model.expect("checked above");
        let resolved = spec.resolve(&model, rand::random()).map_err(ApiError::InvalidArgument)?;
        let plan = plan_summary(&resolved, &model, 0);
        let (events, _) = broadcast::channel(1024);
        let (cancel, _) = watch::channel(false);
        let seq = {
            let mut st = self.inner.lock();
            st.seq += 1;
            st.seq
        };
        let job_id = format!("job-{seq:04}-{:08x}", rand::random::<u32>());
        let status = JobStatus {
            job_id: job_id.clone(),
            state: JobState::Queued,
            spec: resolved.spec.clone(),
            seed: resolved.seed,
            plan: Some(plan),
            queue_position: 0,
            steps_done: 0,
            steps_total: plan.windows as u64 * resolved.schedule.steps() as u64,
            outputs: Vec::new(),
            error: None,
            submitted_unix_ms: now_ms(),
            finished_unix_ms: 0,
        };
        let dir = self.inner.cfg.data_dir.join("jobs").join(&job_id);
        let seed = resolved.seed;
        let job = Job { seq, status, resolved, model, events, cancel, dir };
        // A job the client is told about must survive a coordinator restart: store it first.
        self.inner.store.create(job.record()).await.map_err(|e| ApiError::Unavailable(format!("job not accepted: {e}")))?;
        let mut st = self.inner.lock();
        st.jobs.insert(job_id.clone(), job);
        st.refresh_positions();
        let position = st.jobs[&job_id].status.queue_position;
        let _ = st.jobs[&job_id].events.send(JobEvent::Queued { position });
        drop(st);
        self.inner.wake.notify_one();
        Ok(SubmitResult { job_id, seed, plan })
    }

    fn status_of(&self, job_id: &str) -> Result<JobStatus, ApiError> {
        let st = self.inner.lock();
        st.jobs.get(job_id).map(|j| j.status.clone()).ok_or_else(|| not_found(job_id))
    }
}

pub(crate) fn plan_summary(r: &ResolvedJob, m: &ModelInfo, workers: u32) -> PlanSummary {
    PlanSummary {
        windows: r.plan.windows() as u32,
        latent_frames: r.latent_frames as u32,
        output_frames: r.frames,
        rendered_frames: r.rendered_frames,
        workers,
        overlap: r.plan.overlap() as u32,
        window: m.window_frames as u32,
        padded_latent_frames: r.plan.padded_frames() as u32,
    }
}

fn not_found(job_id: &str) -> ApiError {
    ApiError::NotFound(format!("no job {job_id:?}"))
}

pub(crate) fn registry_err(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Unavailable(m) => ApiError::Unavailable(format!("registry unavailable: {m}")),
        other => ApiError::FailedPrecondition(other.to_string()),
    }
}

/// The event that describes a job's current state, for a watcher that joins late.
fn snapshot_event(s: &JobStatus) -> JobEvent {
    match s.state {
        JobState::Queued => JobEvent::Queued { position: s.queue_position },
        JobState::Running | JobState::Decoding => JobEvent::Planned(s.plan.unwrap_or_default()),
        JobState::Done => JobEvent::Done { outputs: s.outputs.clone() },
        JobState::Failed => JobEvent::Failed { reason: s.error.clone().unwrap_or_default() },
        JobState::Cancelled => JobEvent::Cancelled,
    }
}

impl JobApi for Coordinator {
    fn submit(&self, spec: JobSpec) -> BoxFuture<'_, Result<SubmitResult, ApiError>> {
        Box::pin(self.submit_job(spec))
    }

    fn get(&self, job_id: String) -> BoxFuture<'_, Result<JobStatus, ApiError>> {
        Box::pin(async move { self.status_of(&job_id) })
    }

    fn list(&self, state: Option<JobState>, limit: usize) -> BoxFuture<'_, Result<Vec<JobStatus>, ApiError>> {
        Box::pin(async move {
            let st = self.inner.lock();
            let mut jobs: Vec<&Job> = st.jobs.values().filter(|j| state.is_none_or(|s| j.status.state == s)).collect();
            jobs.sort_by_key(|j| std::cmp::Reverse(j.seq));
            let limit = if limit == 0 { 100 } else { limit };
            Ok(jobs.into_iter().take(limit).map(|j| j.status.clone()).collect())
        })
    }

    fn cancel(&self, job_id: String) -> BoxFuture<'_, Result<JobState, ApiError>> {
        Box::pin(async move {
            let mut st = self.inner.lock();
            let job = st.jobs.get_mut(&job_id).ok_or_else(|| not_found(&job_id))?;
            match job.status.state {
                JobState::Queued => {
                    job.status.state = JobState::Cancelled;
                    job.status.finished_unix_ms = now_ms();
                    let _ = job.events.send(JobEvent::Cancelled);
                    self.inner.persist(job, Change::State);
                    st.refresh_positions();
                    Ok(JobState::Cancelled)
                }
                JobState::Running | JobState::Decoding => {
                    // The job's run task stops its shards and marks it cancelled.
                    let _ = job.cancel.send(true);
                    Ok(job.status.state)
                }
                terminal => Ok(terminal),
            }
        })
    }

    fn watch(&self, job_id: String) -> BoxFuture<'_, Result<BoxStream<JobEvent>, ApiError>> {
        Box::pin(async move {
            let st = self.inner.lock();
            let job = st.jobs.get(&job_id).ok_or_else(|| not_found(&job_id))?;
            let first = snapshot_event(&job.status);
            if first.is_terminal() {
                return Ok(Box::pin(futures::stream::iter([first])) as BoxStream<JobEvent>);
            }
            let rest = BroadcastStream::new(job.events.subscribe()).filter_map(|e| async move { e.ok() });
            // Stop right after the terminal event.
            let stream = futures::stream::iter([first]).chain(rest).scan(false, |done, e| {
                let out = if *done { None } else { Some(e.clone()) };
                *done = *done || e.is_terminal();
                futures::future::ready(out)
            });
            Ok(Box::pin(stream) as BoxStream<JobEvent>)
        })
    }

    fn fetch(&self, job_id: String, format: OutputKind) -> BoxFuture<'_, Result<BoxStream<Result<OutputChunk, ApiError>>, ApiError>> {
        Box::pin(async move {
            let (state, outputs, dir) = {
                let st = self.inner.lock();
                let job = st.jobs.get(&job_id).ok_or_else(|| not_found(&job_id))?;
                (job.status.state, job.status.outputs.clone(), job.dir.clone())
            };
            if state != JobState::Done {
                return Err(ApiError::FailedPrecondition(format!("job {job_id} is {state}; outputs exist once it is done")));
            }
            if !outputs.iter().any(|o| o.format == format) {
                let have: Vec<&str> = outputs.iter().map(|o| o.format.as_str()).collect();
                return Err(ApiError::invalid("format", format!("job {job_id} has no {format} output; it has: {}", have.join(", "))));
            }
            let path = dir.join(file_name(format));
            let files: Vec<(String, PathBuf)> = if format == OutputKind::Png {
                let mut names: Vec<String> = std::fs::read_dir(&path)
                    .map_err(|e| ApiError::Internal(format!("reading {}: {e}", path.display())))?
                    .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .filter(|n| n.ends_with(".png"))
                    .collect();
                names.sort();
                names.into_iter().map(|n| (n.clone(), path.join(n))).collect()
            } else {
                vec![(file_name(format).to_string(), path)]
            };
            Ok(crate::dispatch::file_chunks(files))
        })
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerInfo>, ApiError>> {
        Box::pin(async move {
            let mut workers = self.inner.registry.list().await.map_err(registry_err)?;
            let st = self.inner.lock();
            for w in &mut workers {
                if st.busy.contains_key(&w.id) {
                    w.state = WorkerState::Busy;
                }
            }
            Ok(workers)
        })
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, ApiError>> {
        Box::pin(self.served_models())
    }
}

impl RegistryApi for Coordinator {
    fn register(&self, worker: WorkerInfo) -> BoxFuture<'_, Result<RegisterAck, ApiError>> {
        Box::pin(async move {
            let id = worker.id.clone();
            self.inner.registry.register(worker).await.map_err(registry_err)?;
            tracing::info!(worker = %id, "worker registered");
            self.inner.wake.notify_one();
            Ok(RegisterAck { worker_id: id, heartbeat_interval: self.inner.cfg.heartbeat_interval })
        })
    }

    fn heartbeat(&self, worker_id: String, state: WorkerState, _busy: Option<String>) -> BoxFuture<'_, Result<bool, ApiError>> {
        Box::pin(async move { self.inner.registry.heartbeat(&worker_id, state).await.map_err(registry_err) })
    }

    fn deregister(&self, worker_id: String) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            self.inner.registry.deregister(&worker_id).await.map_err(registry_err)?;
            tracing::info!(worker = %worker_id, "worker deregistered");
            Ok(())
        })
    }
}
