//! The coordinator's client-facing API (`JobApi`: submit, status, cancel, watch, fetch) and its
//! worker-facing registration API (`RegistryApi`).

use crate::admission;
use crate::checkpoints::CheckpointStore;
use crate::config::CoordinatorConfig;
use crate::context::Inner;
use crate::disk_space::available_bytes;
use crate::estimate;
use crate::job_store::{recover, Change, JobRecord, JobStore, NoJobStore};
use crate::job_table::{now_ms, plan_summary, snapshot_event, Job, JobTable};
use crate::lifecycle::Transition;
use crate::metrics::CoordinatorMetrics;
use crate::outputs::{file_chunks, output_files};
use crate::placement::{place, QueuedJob};
use crate::registry::Registry;
use futures::StreamExt;
use longshot_core::api::*;
use longshot_core::denoiser::ModelInfo;
use longshot_core::inputs::{InputDigest, InputInfo};
use longshot_core::job::{FieldError, JobSpec, OutputKind, ResolvedJob};
use longshot_core::output::LATENTS_TENSOR;
use longshot_media::read_latent_frames;
use std::sync::Arc;
use tokio_stream::wrappers::BroadcastStream;

/// The coordinator service. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) inner: Arc<Inner>,
}

impl Coordinator {
    /// Starts the coordinator's scheduling loop on the current tokio runtime; jobs live in memory.
    pub fn start(cfg: CoordinatorConfig, registry: Arc<dyn Registry>, connector: Arc<dyn WorkerConnector>) -> Self {
        Self::start_with(cfg, registry, connector, Arc::new(NoJobStore), Vec::new())
    }

    /// Like [`Coordinator::start`], saving job records to `store` and resuming from `records`
    /// (loaded from it): queued jobs queue again, interrupted ones are queued to resume
    /// (`job_store::recover`).
    pub fn start_with(
        cfg: CoordinatorConfig,
        registry: Arc<dyn Registry>,
        connector: Arc<dyn WorkerConnector>,
        store: Arc<dyn JobStore>,
        records: Vec<JobRecord>,
    ) -> Self {
        let recovery = recover(records, now_ms());
        let (jobs, queued) = (
            recovery.jobs.len(),
            recovery
                .jobs
                .iter()
                .filter(|r| r.status.state == JobState::Queued)
                .count(),
        );
        let metrics = match &cfg.metrics {
            Some(registry) => CoordinatorMetrics::register(registry, &cfg.version).unwrap_or_else(|e| {
                tracing::error!("coordinator metrics are not exported: {e}");
                CoordinatorMetrics::unregistered()
            }),
            None => CoordinatorMetrics::unregistered(),
        };
        let table = JobTable::new(
            store.clone(),
            CheckpointStore::new(&cfg.data_dir),
            metrics,
            recovery.jobs,
            recovery.max_seq,
        );
        for id in &recovery.interrupted {
            if let Some(job) = table.get(id) {
                store.save(id, Change::State, &|| job.record());
            }
        }
        if jobs > 0 {
            tracing::info!(
                jobs,
                queued,
                interrupted = recovery.interrupted.len(),
                "restored the job table"
            );
        }
        let inner = Arc::new(Inner::new(cfg, registry, connector, store, table));
        tokio::spawn(crate::dispatch::scheduling_loop(Arc::downgrade(&inner)));
        tokio::spawn(crate::retention::retention_loop(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Models served by live workers (the first worker's description of each name wins).
    async fn served_models(&self) -> Result<Vec<ModelInfo>, ApiError> {
        let workers = self.inner.registry.list().await?;
        Ok(models_of(&workers))
    }

    async fn submit_job(&self, spec: JobSpec, owner: String) -> Result<SubmitResult, ApiError> {
        let (resolved, model, _) = self.checked(spec).await?;
        // Reference images are read and decoded off the runtime; only their checks matter here
        // (a run decodes them again from the store: nothing decoded is persisted).
        let (store, spec, frames) = (self.inner.inputs(), resolved.spec.clone(), resolved.frames);
        tokio::task::spawn_blocking(move || {
            store.reference_images(&spec.inputs, spec.width, spec.height)?;
            store
                .video(&spec.inputs, spec.width, spec.height, frames)
                .map_err(|e| vec![e])
        })
        .await
        .map_err(|e| ApiError::Internal(format!("checking the job's inputs: {e}")))?
        .map_err(ApiError::InvalidArgument)?;
        if let Some(r) = &resolved.spec.rerender {
            let path = self
                .rerender_source(&resolved.spec, &r.source)
                .map_err(|e| ApiError::InvalidArgument(vec![e]))?;
            let shape = resolved.latent_shape(model.latent_channels);
            let source = r.source.clone();
            tokio::task::spawn_blocking(move || read_latent_frames(&path, LATENTS_TENSOR, &shape, 0..0))
                .await
                .map_err(|e| ApiError::Internal(format!("checking the source job's latents: {e}")))?
                .map_err(|e| {
                    ApiError::InvalidArgument(vec![FieldError::new(
                        "rerender.source",
                        format!("job {source:?}'s latents cannot be read: {e}"),
                    )])
                })?;
        }
        self.admit(resolved, model, owner).await
    }

    /// What `spec` would take if submitted now: the plan placement would give it on every
    /// worker serving its model (busy ones as if free; drained ones left out), and the run predicted from finished jobs' timings.
    async fn estimate_job(&self, spec: JobSpec) -> Result<JobEstimate, ApiError> {
        let (resolved, model, mut serving) = self.checked(spec).await?;
        // Drained workers take no new job.
        serving.retain(|w| !self.inner.lock().drained.contains(&w.id));
        let queued = QueuedJob {
            job_id: String::new(),
            priority: resolved.spec.priority,
            seq: 0,
            model: model.clone(),
            plans: resolved.take_plans(),
            excluded: Vec::new(),
            window_bytes: admission::window_bytes(&resolved, &model),
        };
        let gang = place(&[queued], &serving, self.inner.cfg.placement())
            .pop()
            .ok_or_else(|| ApiError::FailedPrecondition(format!(
                "no group of workers serving {} can hold this job's shards (admission accepts it, but placement needs workers of one build and device that fit it)",
                model.name
            )))?;
        let n = gang.workers.len();
        let device_kind = gang.workers[0].device_kind.clone();
        let takes = resolved.take_list();
        let loads = estimate::loads(&resolved, &model, &takes, &gang.shards, n);
        let table = self.inner.lock();
        let runs = table.timings(&model, resolved.spec.width, resolved.spec.height, &device_kind);
        let jobs_ahead = table.jobs().filter(|j| !j.status().state.is_terminal()).count() as u32;
        Ok(JobEstimate {
            plan: plan_summary(&resolved, &model, n as u32),
            prediction: estimate::predict(&runs, &loads, n, &device_kind),
            device_kind,
            jobs_ahead,
        })
    }

    /// The checks every submission passes, inputs' contents and a rerender's source aside: the
    /// spec's fields, the model, the plan, admission. The resolved job, its model, and the live
    /// workers serving it.
    async fn checked(&self, spec: JobSpec) -> Result<(ResolvedJob, ModelInfo, Vec<WorkerInfo>), ApiError> {
        // The spec's own fields and what the cluster offers are reported together, so a client
        // fixes its request in one round trip.
        let valid = spec.clone().validated();
        let mut errors = valid.as_ref().err().cloned().unwrap_or_default();
        if let Some(o) = spec.outputs.iter().find(|o| o.needs_ffmpeg()) {
            if !longshot_media::ffmpeg_available() {
                errors.push(FieldError::new(
                    "outputs",
                    format!("{o} needs ffmpeg on the coordinator's PATH (mp4, png and latents do not)"),
                ));
            }
        }
        let workers = self.inner.registry.list().await?;
        let models = models_of(&workers);
        let model = models.iter().find(|m| m.name == spec.model).cloned();
        if model.is_none() && !spec.model.trim().is_empty() {
            let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            let allowed = if names.is_empty() {
                "none: no worker is registered yet".to_string()
            } else {
                names.join(", ")
            };
            errors.push(FieldError::new(
                "model",
                format!("{:?} is not served by any worker; available: {allowed}", spec.model),
            ));
        }
        let (Ok(valid), Some(model), true) = (valid, model, errors.is_empty()) else {
            return Err(ApiError::InvalidArgument(errors));
        };
        let resolved = valid
            .resolve(&model, rand::random())
            .map_err(ApiError::InvalidArgument)?;
        let serving: Vec<WorkerInfo> = workers.into_iter().filter(|w| w.models.contains(&model)).collect();
        let free = available_bytes(&self.inner.cfg.data_dir)
            .map_err(|e| tracing::warn!("cannot read the free space of the data dir: {e}"))
            .ok();
        let refs: Vec<&WorkerInfo> = serving.iter().collect();
        let refused = admission::check(&resolved, &model, &refs, &self.inner.cfg.limits, free);
        if !refused.is_empty() {
            return Err(ApiError::InvalidArgument(refused));
        }
        Ok((resolved, model, serving))
    }

    /// Queues an admitted job: stored first, then in the table.
    async fn admit(&self, resolved: ResolvedJob, model: ModelInfo, owner: String) -> Result<SubmitResult, ApiError> {
        let seq = self.inner.lock().next_seq();
        let job_id = format!("job-{seq:04}-{:08x}", rand::random::<u32>());
        let dir = self.inner.cfg.data_dir.join("jobs").join(&job_id);
        let mut job = Job::queued(seq, job_id.clone(), owner, resolved, model, dir, now_ms());
        // Inside the submit call, so its parent is the caller's span (the gRPC adapter's).
        job.span = tracing::info_span!(
            "job",
            job_id = %job_id,
            model = %job.model.name,
            frames = job.resolved.frames,
            steps = job.resolved.schedule.steps(),
            windows = job.resolved.windows(),
        );
        let (seed, plan) = (job.status().seed, job.status().plan.unwrap_or_default());
        // A job the client is told about must survive a coordinator restart: store it first.
        self.inner
            .store
            .create(job.record())
            .await
            .map_err(|e| ApiError::Unavailable(format!("job not accepted: {e}")))?;
        self.inner.lock().insert(job);
        self.inner.wake.notify_one();
        Ok(SubmitResult { job_id, seed, plan })
    }

    /// The latents file of a rerender's source: a finished job of the same clip (model, length,
    /// size, steps, …) that kept its latents.
    fn rerender_source(&self, spec: &JobSpec, source: &str) -> Result<std::path::PathBuf, FieldError> {
        let field = "rerender.source";
        let st = self.inner.lock();
        let Some(job) = st.get(source) else {
            let why = match self.not_found(&st, source) {
                ApiError::NotFound(m) => m,
                e => e.to_string(),
            };
            return Err(FieldError::new(field, why));
        };
        let status = job.status();
        if status.state != JobState::Done {
            return Err(FieldError::new(
                field,
                format!(
                    "job {source:?} is {}: only a finished job can be re-rendered",
                    status.state
                ),
            ));
        }
        if let Some(e) = spec.rerender_mismatch(&status.spec) {
            return Err(e);
        }
        if !status.spec.outputs.contains(&OutputKind::Latents) {
            return Err(FieldError::new(
                field,
                format!("job {source:?} did not keep its latents: render with the latents output (--format latents) to re-render ranges of it later"),
            ));
        }
        Ok(OutputKind::Latents.job_path(&job.dir, None))
    }

    fn status_of(&self, job_id: &str) -> Result<JobStatus, ApiError> {
        let st = self.inner.lock();
        st.get(job_id)
            .map(|j| j.status().clone())
            .ok_or_else(|| self.not_found(&st, job_id))
    }

    fn not_found(&self, table: &JobTable, job_id: &str) -> ApiError {
        if table.is_expired(job_id) {
            let days = self.inner.cfg.retain_finished.as_secs_f64() / 86_400.0;
            return ApiError::NotFound(format!(
                "job {job_id:?} expired: finished jobs and their outputs are kept for {:?} ({days:.2} days, \
                 --retain-finished)",
                self.inner.cfg.retain_finished
            ));
        }
        ApiError::NotFound(format!("no job {job_id:?}"))
    }
}

impl JobApi for Coordinator {
    fn submit(&self, spec: JobSpec, owner: String) -> BoxFuture<'_, Result<SubmitResult, ApiError>> {
        Box::pin(self.submit_job(spec, owner))
    }

    fn estimate(&self, spec: JobSpec) -> BoxFuture<'_, Result<JobEstimate, ApiError>> {
        Box::pin(self.estimate_job(spec))
    }

    fn get(&self, job_id: String) -> BoxFuture<'_, Result<JobStatus, ApiError>> {
        Box::pin(async move { self.status_of(&job_id) })
    }

    fn list(&self, filter: JobFilter) -> BoxFuture<'_, Result<Vec<JobStatus>, ApiError>> {
        Box::pin(async move {
            let st = self.inner.lock();
            let mut jobs: Vec<&Job> = st
                .jobs()
                .filter(|j| filter.state.is_none_or(|s| j.status().state == s))
                .filter(|j| filter.owner.as_ref().is_none_or(|o| j.status().owner == *o))
                .collect();
            jobs.sort_by_key(|j| std::cmp::Reverse(j.seq));
            let limit = if filter.limit == 0 { 100 } else { filter.limit };
            Ok(jobs.into_iter().take(limit).map(|j| j.status().clone()).collect())
        })
    }

    fn cancel(&self, job_id: String) -> BoxFuture<'_, Result<JobState, ApiError>> {
        Box::pin(async move {
            let mut table = self.inner.lock();
            let job = table.get(&job_id).ok_or_else(|| self.not_found(&table, &job_id))?;
            match job.status().state {
                JobState::Queued => {
                    table
                        .transition(&job_id, Transition::Cancel)
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    Ok(JobState::Cancelled)
                }
                JobState::Running | JobState::Decoding => {
                    // The job's run task stops its shards and marks it cancelled.
                    let _ = job.cancel.send(true);
                    Ok(job.status().state)
                }
                terminal => Ok(terminal),
            }
        })
    }

    fn watch(&self, job_id: String) -> BoxFuture<'_, Result<BoxStream<JobEvent>, ApiError>> {
        Box::pin(async move {
            let st = self.inner.lock();
            let job = st.get(&job_id).ok_or_else(|| self.not_found(&st, &job_id))?;
            let first = snapshot_event(job.status());
            if first.is_terminal() {
                return Ok(Box::pin(futures::stream::iter([first])) as BoxStream<JobEvent>);
            }
            let rest = BroadcastStream::new(job.subscribe()).filter_map(|e| async move { e.ok() });
            let mut head = vec![first];
            head.extend(job.preview_events());
            // Stop right after the terminal event.
            let stream = futures::stream::iter(head).chain(rest).scan(false, |done, e| {
                let out = if *done { None } else { Some(e.clone()) };
                *done = *done || e.is_terminal();
                futures::future::ready(out)
            });
            Ok(Box::pin(stream) as BoxStream<JobEvent>)
        })
    }

    fn fetch(
        &self,
        job_id: String,
        format: OutputKind,
        shot: Option<u32>,
    ) -> BoxFuture<'_, Result<BoxStream<Result<OutputChunk, ApiError>>, ApiError>> {
        Box::pin(async move {
            let (state, outputs, dir, shots) = {
                let st = self.inner.lock();
                let job = st.get(&job_id).ok_or_else(|| self.not_found(&st, &job_id))?;
                let shots = job.resolved.shot_files().len();
                (job.status().state, job.status().outputs.clone(), job.dir.clone(), shots)
            };
            if state != JobState::Done {
                return Err(ApiError::FailedPrecondition(format!(
                    "job {job_id} is {state}; outputs exist once it is done"
                )));
            }
            if !outputs.iter().any(|o| o.format == format) {
                let have: Vec<&str> = outputs.iter().map(|o| o.format.as_str()).collect();
                return Err(ApiError::invalid(
                    "format",
                    format!("job {job_id} has no {format} output; it has: {}", have.join(", ")),
                ));
            }
            if let Some(s) = shot {
                if !format.is_video() || s as usize >= shots {
                    let why = match (shots, format.is_video()) {
                        (_, false) => "the latents are one file for the whole clip".to_string(),
                        (0, _) => format!("job {job_id} wrote no per-shot files (submit with --split-shots)"),
                        (n, _) => format!("{s} is not one of job {job_id}'s shots 0..{n}"),
                    };
                    return Err(ApiError::invalid("shot", why));
                }
            }
            Ok(file_chunks(output_files(&dir, format, shot)?))
        })
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerInfo>, ApiError>> {
        Box::pin(async move {
            let mut workers = self.inner.registry.list().await?;
            let st = self.inner.lock();
            for w in &mut workers {
                w.state = reported_state(&st, w);
            }
            Ok(workers)
        })
    }

    fn drain(&self, worker_id: String, drain: bool) -> BoxFuture<'_, Result<WorkerState, ApiError>> {
        Box::pin(async move {
            let workers = self.inner.registry.list().await?;
            let Some(worker) = workers.iter().find(|w| w.id == worker_id) else {
                let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
                return Err(ApiError::NotFound(format!(
                    "no worker {worker_id:?} is registered; workers: {}",
                    if ids.is_empty() {
                        "none".to_string()
                    } else {
                        ids.join(", ")
                    }
                )));
            };
            let state = {
                let mut st = self.inner.lock();
                if drain {
                    st.drained.insert(worker_id.clone());
                } else {
                    st.drained.remove(&worker_id);
                }
                reported_state(&st, worker)
            };
            tracing::info!(worker = %worker_id, drained = drain, "worker {}", if drain { "drained" } else { "takes jobs again" });
            self.inner.wake.notify_one();
            Ok(state)
        })
    }

    fn upload_input(
        &self,
        chunks: BoxStream<Result<Vec<u8>, ApiError>>,
        expected: Option<InputDigest>,
    ) -> BoxFuture<'_, Result<InputInfo, ApiError>> {
        Box::pin(async move {
            let stored = self.inner.inputs().put(chunks, expected).await;
            let metrics = self.inner.lock().metrics().clone();
            metrics.uploaded(stored.as_ref().ok().map(|i| i.size_bytes));
            let info = stored?;
            tracing::info!(digest = %info.digest, bytes = info.size_bytes, "stored an input");
            Ok(info)
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
            self.inner.registry.register(worker).await?;
            tracing::info!(worker = %id, "worker registered");
            self.inner.wake.notify_one();
            Ok(RegisterAck {
                worker_id: id,
                heartbeat_interval: self.inner.cfg.heartbeat_interval,
            })
        })
    }

    fn heartbeat(
        &self,
        worker_id: String,
        state: WorkerState,
        _busy: Option<String>,
    ) -> BoxFuture<'_, Result<bool, ApiError>> {
        Box::pin(async move { Ok(self.inner.registry.heartbeat(&worker_id, state).await?) })
    }

    fn deregister(&self, worker_id: String) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            self.inner.registry.deregister(&worker_id).await?;
            tracing::info!(worker = %worker_id, "worker deregistered");
            Ok(())
        })
    }
}

/// The distinct models `workers` serve, by name.
/// A worker's state as clients see it: drained by an admin, running one of this coordinator's
/// shards, or as it last reported.
fn reported_state(table: &JobTable, w: &WorkerInfo) -> WorkerState {
    if table.drained.contains(&w.id) {
        WorkerState::Draining
    } else if table.is_busy(w) {
        WorkerState::Busy
    } else {
        w.state
    }
}

fn models_of(workers: &[WorkerInfo]) -> Vec<ModelInfo> {
    let mut models: Vec<ModelInfo> = Vec::new();
    for m in workers.iter().flat_map(|w| w.models.iter()) {
        if !models.iter().any(|x| x.name == m.name) {
            models.push(m.clone());
        }
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    models
}
