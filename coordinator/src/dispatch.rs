//! Gang scheduling: the loop that starts queued jobs on idle workers, and the run of one job
//! (shards, progress, assembly, failure and cancellation).

use crate::assembly::{AssemblyPlan, Assembler};
use crate::job_store::Change;
use crate::nccl_gang::{nccl_decision, OverlapTransport};
use crate::jobs::{now_ms, plan_summary, registry_err, Inner};
use futures::stream::{self, SelectAll, StreamExt};
use longshot_core::api::*;
use longshot_core::codenoise::BlendMode;
use longshot_core::denoiser::{Conditioning, ModelInfo, TextEmbeddings};
use longshot_core::job::ResolvedJob;
use longshot_media::VideoMeta;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// How long a worker-reported failure waits for a directly observed worker loss (the root cause).
const FAILURE_GRACE: Duration = Duration::from_secs(1);

pub(crate) async fn scheduling_loop(weak: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if let Err(e) = dispatch_once(&inner).await {
            tracing::warn!("scheduling: {e}");
        }
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Starts every queued job that can start now, in queue order.
async fn dispatch_once(inner: &Arc<Inner>) -> Result<(), ApiError> {
    let workers = inner.registry.list().await.map_err(registry_err)?;
    let shared = inner.registry.shared();
    let mut st = inner.lock();
    st.refused.retain(|_, at| at.elapsed() < REFUSAL_COOLDOWN);
    let mut idle: Vec<WorkerInfo> = workers
        .into_iter()
        .filter(|w| !st.busy.contains_key(&w.id) && !st.refused.contains_key(&w.id))
        .filter(|w| w.state == WorkerState::Idle || (w.state == WorkerState::Busy && !shared))
        .collect();
    for job_id in st.queue() {
        let job = &st.jobs[&job_id];
        let model = job.model.clone();
        // Bit-identical output needs identical arithmetic: only gang workers of one version on
        // one kind of device (GEMM kernels differ between GPU generations and CPU instruction
        // sets, so the device's name is part of the key).
        let mut by_build: HashMap<(&str, &str, &str), Vec<&WorkerInfo>> = HashMap::new();
        for w in idle.iter().filter(|w| w.models.contains(&model)) {
            by_build.entry((w.version.as_str(), w.device_kind.as_str(), w.device_name.as_str())).or_default().push(w);
        }
        let Some(group) = by_build.into_values().max_by_key(|g| g.len()) else { continue };
        let windows = job.resolved.plan.windows();
        let cap = if inner.cfg.max_workers_per_job == 0 { windows } else { inner.cfg.max_workers_per_job.min(windows) };
        let mut chosen: Vec<WorkerInfo> = group.into_iter().cloned().collect();
        chosen.sort_by(|a, b| a.id.cmp(&b.id));
        chosen.truncate(cap);
        idle.retain(|w| !chosen.iter().any(|c| c.id == w.id));
        for w in &chosen {
            st.busy.insert(w.id.clone(), job_id.clone());
        }
        st.plan_ids += 1;
        let plan_id = st.plan_ids;
        let job = st.jobs.get_mut(&job_id).expect("queued job exists");
        let summary = plan_summary(&job.resolved, &model, chosen.len() as u32);
        job.status.state = JobState::Running;
        job.status.plan = Some(summary);
        let _ = job.events.send(JobEvent::Planned(summary));
        inner.persist(job, Change::State);
        let run = JobRun {
            inner: inner.clone(),
            job_id: job_id.clone(),
            plan_id,
            workers: chosen,
            resolved: job.resolved.clone(),
            model,
            dir: job.dir.clone(),
            cancel: job.cancel.subscribe(),
        };
        tracing::info!(job = %job_id, plan_id, workers = run.workers.len(), "job started");
        tokio::spawn(run.run());
    }
    st.refresh_positions();
    Ok(())
}

enum RunError {
    Failed(String),
    Cancelled,
    /// A worker turned the shard down as busy (or the plan as stale) before any work started:
    /// it is running something this coordinator did not assign (another coordinator's job, or a
    /// shard of this coordinator's predecessor winding down). The job queues again.
    Refused { worker: String, reason: String },
}

/// How long rank 0 may take to create a gang's `ncclUniqueId` (it opens a socket, no more).
const NCCL_ID_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a worker that refused a shard is left out of scheduling.
const REFUSAL_COOLDOWN: Duration = Duration::from_secs(1);

struct JobRun {
    inner: Arc<Inner>,
    job_id: String,
    plan_id: u64,
    workers: Vec<WorkerInfo>,
    resolved: ResolvedJob,
    model: ModelInfo,
    dir: PathBuf,
    cancel: watch::Receiver<bool>,
}

impl JobRun {
    async fn run(mut self) {
        let mut clients = Vec::new();
        let result = self.execute(&mut clients).await;
        if result.is_err() {
            self.cancel_shards(&clients).await;
        }
        let mut st = self.inner.lock();
        for w in &self.workers {
            st.busy.remove(&w.id);
        }
        let event = match result {
            Err(RunError::Refused { worker, reason }) => {
                tracing::warn!(job = %self.job_id, "worker {worker} refused its shard ({reason}); the job queues again");
                st.refused.insert(worker, std::time::Instant::now());
                if let Some(job) = st.jobs.get_mut(&self.job_id) {
                    job.status.state = JobState::Queued;
                    job.status.plan = Some(plan_summary(&job.resolved, &job.model, 0));
                }
                st.refresh_positions();
                st.jobs.get(&self.job_id).map(|job| JobEvent::Queued { position: job.status.queue_position })
            }
            result => st.jobs.get_mut(&self.job_id).map(|job| {
                job.status.finished_unix_ms = now_ms();
                match result {
                    Ok(outputs) => {
                        job.status.state = JobState::Done;
                        job.status.outputs = outputs.clone();
                        JobEvent::Done { outputs }
                    }
                    Err(RunError::Cancelled) => {
                        job.status.state = JobState::Cancelled;
                        JobEvent::Cancelled
                    }
                    Err(RunError::Failed(reason) | RunError::Refused { reason, .. }) => {
                        tracing::warn!(job = %self.job_id, "job failed: {reason}");
                        job.status.state = JobState::Failed;
                        job.status.error = Some(reason.clone());
                        JobEvent::Failed { reason }
                    }
                }
            }),
        };
        if let (Some(event), Some(job)) = (event, st.jobs.get(&self.job_id)) {
            let _ = job.events.send(event);
            self.inner.persist(job, Change::State);
        }
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Shard `i` of `ranks`; `nccl_id`: the gang's communicator when it exchanges over NCCL.
    fn assignment(&self, i: usize, ranks: usize, windows: std::ops::Range<usize>, conditioning: &Conditioning, nccl_id: Option<&[u8]>) -> ShardAssignment {
        let r = &self.resolved;
        ShardAssignment {
            job_id: self.job_id.clone(),
            plan_id: self.plan_id,
            model: self.model.name.clone(),
            conditioning: conditioning.clone(),
            seed: r.seed,
            channels: self.model.latent_channels,
            height: r.latent_height,
            width: r.latent_width,
            plan: r.plan,
            schedule: r.schedule.clone(),
            guidance: r.spec.guidance,
            windows,
            left_address: (i > 0).then(|| self.workers[i - 1].address.clone()),
            right_address: self.workers.get(i + 1).map(|w| w.address.clone()),
            exchange_timeout: self.inner.cfg.exchange_timeout,
            hash_every: self.inner.cfg.hash_every,
            output_frames: r.frames as usize,
            blend: r.spec.blend,
            nccl: nccl_id.map(|id| NcclGroup { unique_id: id.to_vec(), rank: i, ranks }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut JobStatus) -> Option<JobEvent>) {
        let mut st = self.inner.lock();
        if let Some(job) = st.jobs.get_mut(&self.job_id) {
            let before = job.status.state;
            if let Some(e) = f(&mut job.status) {
                let _ = job.events.send(e);
            }
            let change = if job.status.state == before { Change::Progress } else { Change::State };
            self.inner.persist(job, change);
        }
    }

    async fn execute(&mut self, clients: &mut Vec<Arc<dyn WorkerApi>>) -> Result<Vec<OutputInfo>, RunError> {
        let r = &self.resolved;
        let ranges = r.plan.assign(self.workers.len()).map_err(|e| RunError::Failed(e.to_string()))?;
        for w in &self.workers {
            let c = self.inner.connector.connect(w.address.clone()).await;
            clients.push(c.map_err(|e| RunError::Failed(format!("worker {} at {}: {e}", w.id, w.address)))?);
        }
        // Text embeddings once per job, on the first worker; every assignment carries them.
        let embeddings = self.encode_prompts(clients[0].clone()).await?;
        let nccl_id = self.nccl_unique_id(clients[0].clone()).await?;
        let r = &self.resolved;
        let spec = &r.spec;
        let conditioning = Conditioning { prompt: spec.prompt.clone(), negative_prompt: spec.negative_prompt.clone(), embeddings };
        // Each stream ends with `None` so a worker that vanishes without `Finished` is noticed.
        let mut events: SelectAll<BoxStream<(usize, Option<ShardEvent>)>> = SelectAll::new();
        let ranks = ranges.len();
        for (i, (client, windows)) in clients.iter().zip(ranges).enumerate() {
            let s = client.run_shard(self.assignment(i, ranks, windows, &conditioning, nccl_id.as_deref())).await.map_err(|e| match e {
                ApiError::FailedPrecondition(reason) => RunError::Refused { worker: self.workers[i].id.clone(), reason },
                e => RunError::Failed(format!("worker {} refused its shard: {e}", self.workers[i].id)),
            })?;
            events.push(Box::pin(s.map(move |e| (i, Some(e))).chain(stream::once(async move { (i, None) }))));
        }
        // Outputs are opened only once every worker took its shard: a refused plan (the job
        // queues again) must not leave files that the next plan of the job would write too.
        let assembler = Assembler::start(AssemblyPlan {
            dir: self.dir.clone(),
            outputs: r.outputs.clone(),
            meta: VideoMeta { width: spec.width, height: spec.height, fps: spec.fps },
            total_frames: r.frames,
            latent_shape: [r.latent_frames, self.model.latent_channels, r.latent_height, r.latent_width],
            latent_metadata: vec![
                ("model".into(), self.model.name.clone()),
                ("seed".into(), r.seed.to_string()),
                ("prompt".into(), spec.prompt.clone()),
                ("negative_prompt".into(), spec.negative_prompt.clone()),
                ("fps".into(), spec.fps.to_string()),
                ("job_id".into(), self.job_id.clone()),
            ],
        })
        .map_err(|e| RunError::Failed(format!("cannot start output assembly: {e}")))?;
        // Per worker: its stream delivered a verdict (Finished or Failed), so its end is expected.
        let mut finished = vec![false; self.workers.len()];
        let mut frames_done = 0u32;
        let total_frames = r.frames;
        let steps = r.schedule.steps() as u32;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // A failure a worker reports is often a consequence (its neighbour died). Wait briefly for
        // the coordinator's own observation of a lost worker, which names the root cause.
        let mut reported: Option<(String, tokio::time::Instant)> = None;
        let then = |reported: &Option<(String, tokio::time::Instant)>| reported.as_ref().map(|(r, _)| format!(" (then {r})")).unwrap_or_default();
        loop {
            let grace_over = reported.as_ref().map_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600), |r| r.1);
            tokio::select! {
                ev = events.next() => {
                    let Some((i, ev)) = ev else { break };
                    let worker = &self.workers[i];
                    match ev {
                        Some(ShardEvent::StepDone { window, step }) => self.update(|s| {
                            s.steps_done += 1;
                            Some(JobEvent::StepProgress { window, step, total_steps: steps, worker_id: worker.id.clone() })
                        }),
                        Some(ShardEvent::Frame { index, rgb8, .. }) => {
                            frames_done += 1;
                            let done = frames_done;
                            self.update(|s| {
                                s.state = JobState::Decoding;
                                (done == 1 || done % 8 == 0 || done == total_frames)
                                    .then_some(JobEvent::Decoding { frames_done: done, frames_total: total_frames })
                            });
                            assembler.frame(index, rgb8).await.map_err(|e| RunError::Failed(format!("assembling frames: {e}")))?;
                        }
                        Some(ShardEvent::Latents { first_frame, frames, data }) => {
                            assembler.latents(first_frame, frames, data).await.map_err(|e| RunError::Failed(format!("assembling latents: {e}")))?;
                        }
                        Some(ShardEvent::Finished) => finished[i] = true,
                        Some(ShardEvent::Failed { reason }) => {
                            // Its stream ends next: that end is not a disconnection.
                            finished[i] = true;
                            if reported.is_none() {
                                let msg = format!("worker {} ({}) failed: {reason}", worker.id, worker.address);
                                reported = Some((msg, tokio::time::Instant::now() + FAILURE_GRACE));
                            }
                        }
                        Some(ShardEvent::Lost { reason }) => {
                            return Err(RunError::Failed(format!("worker {} ({}) was lost: {reason}{}", worker.id, worker.address, then(&reported))));
                        }
                        None if !finished[i] => {
                            return Err(RunError::Failed(format!(
                                "worker {} ({}) disconnected before finishing its shard{}", worker.id, worker.address, then(&reported)
                            )));
                        }
                        None => {}
                    }
                }
                _ = tokio::time::sleep_until(grace_over), if reported.is_some() => {
                    return Err(RunError::Failed(reported.take().map(|(r, _)| r).unwrap_or_default()));
                }
                _ = self.cancel.changed() => return Err(RunError::Cancelled),
                _ = tick.tick() => {
                    if let Some(gone) = self.departed().await? {
                        return Err(RunError::Failed(format!("{gone}{}", then(&reported))));
                    }
                }
            }
        }
        if let Some((reason, _)) = reported {
            // Every stream ended before the grace period ran out: no lost worker was seen.
            return Err(RunError::Failed(reason));
        }
        assembler.finish().await.map_err(|e| RunError::Failed(format!("writing outputs: {e}")))
    }

    /// A worker of this gang that is no longer registered, described for the job's error.
    async fn departed(&self) -> Result<Option<String>, RunError> {
        let live = self.inner.registry.list().await.map_err(|e| RunError::Failed(e.to_string()))?;
        Ok(self
            .workers
            .iter()
            .find(|w| !live.iter().any(|l| l.id == w.id))
            .map(|w| format!("worker {} ({}) left the cluster (registration expired or removed)", w.id, w.address)))
    }

    /// Asks `client` (the gang's first worker) for the job's text embeddings, watching for a
    /// cancel and for the worker leaving the cluster meanwhile (a frozen worker never answers).
    async fn encode_prompts(&mut self, client: Arc<dyn WorkerApi>) -> Result<Option<TextEmbeddings>, RunError> {
        let spec = &self.resolved.spec;
        let request = EncodeTextRequest {
            job_id: self.job_id.clone(),
            model: self.model.name.clone(),
            prompt: spec.prompt.clone(),
            negative_prompt: spec.negative_prompt.clone(),
        };
        let w = self.workers[0].clone();
        let started = std::time::Instant::now();
        let call = client.encode_text(request);
        tokio::pin!(call);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let limit = self.inner.cfg.encode_timeout;
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                _ = self.cancel.changed() => return Err(RunError::Cancelled),
                _ = &mut deadline => {
                    return Err(RunError::Failed(format!(
                        "worker {} ({}) did not encode the prompts within {limit:?} (coordinator --encode-timeout)",
                        w.id, w.address
                    )));
                }
                _ = tick.tick() => {
                    if let Some(gone) = self.departed().await? {
                        return Err(RunError::Failed(format!("{gone} while encoding the prompts")));
                    }
                }
            }
        };
        let embeddings = result.map_err(|e| RunError::Failed(format!("worker {} ({}) could not encode the prompts: {e}", w.id, w.address)))?;
        if let Some(e) = &embeddings {
            tracing::info!(job = %self.job_id, worker = %w.id, rows = e.rows, dim = e.dim, secs = started.elapsed().as_secs_f64(), "prompts encoded");
        }
        Ok(embeddings)
    }

    /// The gang's `ncclUniqueId`, from rank 0, when it exchanges overlaps over NCCL
    /// ([`nccl_decision`]). A rank 0 that cannot make one costs only the fast path: the gang
    /// falls back to TCP, which every worker speaks.
    async fn nccl_unique_id(&mut self, client: Arc<dyn WorkerApi>) -> Result<Option<Vec<u8>>, RunError> {
        let transport = self.inner.cfg.overlap_transport;
        let coupled = self.resolved.spec.blend == BlendMode::CoDenoise && self.resolved.plan.overlap() > 0;
        if let Err(why) = nccl_decision(transport, coupled, &self.workers) {
            if transport == OverlapTransport::Nccl {
                tracing::info!(job = %self.job_id, "overlaps over TCP: {why}");
            }
            return Ok(None);
        }
        let w = &self.workers[0];
        let call = tokio::time::timeout(NCCL_ID_TIMEOUT, client.nccl_unique_id(self.job_id.clone(), self.plan_id));
        tokio::select! {
            r = call => Ok(match r {
                Ok(Ok(id)) => {
                    tracing::info!(job = %self.job_id, ranks = self.workers.len(), "overlaps over NCCL (rank 0: worker {})", w.id);
                    Some(id)
                }
                Ok(Err(e)) => {
                    tracing::warn!(job = %self.job_id, "overlaps over TCP: worker {} could not create the NCCL id: {e}", w.id);
                    None
                }
                Err(_) => {
                    tracing::warn!(job = %self.job_id, "overlaps over TCP: worker {} did not create the NCCL id within {NCCL_ID_TIMEOUT:?}", w.id);
                    None
                }
            }),
            _ = self.cancel.changed() => Err(RunError::Cancelled),
        }
    }

    async fn cancel_shards(&self, clients: &[Arc<dyn WorkerApi>]) {
        let calls = clients.iter().map(|c| {
            let c = c.clone();
            let job = self.job_id.clone();
            let plan = self.plan_id;
            async move { tokio::time::timeout(Duration::from_secs(5), c.cancel_shard(job, plan)).await }
        });
        futures::future::join_all(calls).await;
    }
}

/// Streams files in 1 MiB chunks, one file after another, reading as the client consumes.
pub(crate) fn file_chunks(files: Vec<(String, PathBuf)>) -> BoxStream<Result<OutputChunk, ApiError>> {
    const CHUNK: usize = 1 << 20;
    let per_file = |(name, path): (String, PathBuf)| {
        stream::unfold(Some((None::<(tokio::fs::File, u64)>, 0u64)), move |st| {
            let (name, path) = (name.clone(), path.clone());
            async move {
                let (file, offset) = st?;
                let (mut f, total) = match file {
                    Some(ft) => ft,
                    None => match open(&path).await {
                        Ok(ft) => ft,
                        Err(e) => return Some((Err(e), None)),
                    },
                };
                let mut buf = vec![0u8; CHUNK];
                let n = match f.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => return Some((Err(ApiError::Internal(format!("reading {}: {e}", path.display()))), None)),
                };
                if n == 0 && offset > 0 {
                    return None;
                }
                buf.truncate(n);
                let chunk = OutputChunk { name, offset, total_size: total, data: buf };
                // An empty file still yields one (empty) chunk so the client creates it.
                let next = (n > 0).then_some((Some((f, total)), offset + n as u64));
                Some((Ok(chunk), next))
            }
        })
    };
    Box::pin(stream::iter(files).flat_map(per_file))
}

async fn open(path: &std::path::Path) -> Result<(tokio::fs::File, u64), ApiError> {
    let f = tokio::fs::File::open(path).await.map_err(|e| ApiError::Internal(format!("opening {}: {e}", path.display())))?;
    let total = f.metadata().await.map_err(|e| ApiError::Internal(format!("reading {}: {e}", path.display())))?.len();
    Ok((f, total))
}
