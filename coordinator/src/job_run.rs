//! The run of one job on its gang: prompts, shards, progress, output assembly, and how a run
//! ends (done, failed, cancelled, or queued again when a worker refuses its shard).

use crate::assembly::{Assembler, AssemblyPlan};
use crate::context::Inner;
use crate::job_table::{plan_summary, Job, Progress};
use crate::lifecycle::Transition;
use crate::nccl_gang::{nccl_decision, OverlapTransport};
use crate::placement::Gang;
use futures::stream::{self, SelectAll, StreamExt};
use longshot_core::api::*;
use longshot_core::codenoise::BlendMode;
use longshot_core::denoiser::{Conditioning, ModelInfo, TextEmbeddings};
use longshot_core::job::ResolvedJob;
use longshot_media::VideoMeta;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// How long a worker-reported failure waits for a directly observed worker loss (the root cause).
const FAILURE_GRACE: Duration = Duration::from_secs(1);

/// Every shard's events, tagged with the worker's index; `None` marks the end of a stream.
type ShardEvents = SelectAll<BoxStream<(usize, Option<ShardEvent>)>>;

enum RunError {
    Failed(String),
    Cancelled,
    /// A worker turned the shard down as busy (or the plan as stale) before any work started:
    /// it is running something this coordinator did not assign (another coordinator's job, or a
    /// shard of this coordinator's predecessor winding down). The job queues again.
    Refused {
        worker: String,
        reason: String,
    },
}

/// How long rank 0 may take to create a gang's `ncclUniqueId` (it opens a socket, no more).
const NCCL_ID_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct JobRun {
    inner: Arc<Inner>,
    pub job_id: String,
    plan_id: u64,
    pub workers: Vec<WorkerInfo>,
    /// `windows[i]`: the window range `workers[i]` renders.
    windows: Vec<Range<usize>>,
    resolved: ResolvedJob,
    model: ModelInfo,
    dir: PathBuf,
    cancel: watch::Receiver<bool>,
    /// This run's span (`plan`), a child of the job's: the worker calls are made inside it, so
    /// their clients carry it to the workers.
    span: tracing::Span,
}

impl JobRun {
    pub fn new(inner: Arc<Inner>, job: &Job, plan_id: u64, gang: Gang) -> Self {
        let span = tracing::info_span!(
            parent: &job.span,
            "plan",
            job_id = %gang.job_id,
            plan_id,
            workers = gang.workers.len(),
        );
        JobRun {
            inner,
            job_id: gang.job_id,
            plan_id,
            workers: gang.workers,
            windows: gang.windows,
            resolved: job.resolved.clone(),
            model: job.model.clone(),
            dir: job.dir.clone(),
            cancel: job.cancel.subscribe(),
            span,
        }
    }

    pub async fn run(mut self) {
        let mut clients = Vec::new();
        let span = self.span.clone();
        let result = self.execute(&mut clients).instrument(span.clone()).await;
        if result.is_err() {
            self.cancel_shards(&clients).instrument(span).await;
        }
        let mut table = self.inner.lock();
        for w in &self.workers {
            table.busy.remove(&w.id);
        }
        let transition = match result {
            Ok(outputs) => Transition::Finish(outputs),
            Err(RunError::Cancelled) => Transition::Cancel,
            Err(RunError::Refused { worker, reason }) => {
                tracing::warn!(job = %self.job_id, "worker {worker} refused its shard ({reason}); the job queues again");
                table.refused.insert(worker, Instant::now());
                Transition::Requeue(plan_summary(&self.resolved, &self.model, 0))
            }
            Err(RunError::Failed(reason)) => {
                tracing::warn!(job = %self.job_id, "job failed: {reason}");
                Transition::Fail(reason)
            }
        };
        if let Err(e) = table.transition(&self.job_id, transition) {
            tracing::error!(job = %self.job_id, "ending the run of job {}: {e}", self.job_id);
        }
        drop(table);
        self.inner.wake.notify_one();
    }

    /// Shard `i` of `ranks`; `nccl_id`: the gang's communicator when it exchanges over NCCL.
    fn assignment(&self, i: usize, conditioning: &Conditioning, nccl_id: Option<&[u8]>) -> ShardAssignment {
        let r = &self.resolved;
        let ranks = self.workers.len();
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
            windows: self.windows[i].clone(),
            left_address: (i > 0).then(|| self.workers[i - 1].address.clone()),
            right_address: self.workers.get(i + 1).map(|w| w.address.clone()),
            exchange_timeout: self.inner.cfg.exchange_timeout,
            hash_every: self.inner.cfg.hash_every,
            output_frames: r.frames as usize,
            blend: r.spec.blend,
            nccl: nccl_id.map(|id| NcclGroup {
                unique_id: id.to_vec(),
                rank: i,
                ranks,
            }),
        }
    }

    fn progress(&self, p: Progress) {
        if let Err(e) = self.inner.lock().progress(&self.job_id, p) {
            tracing::error!(job = %self.job_id, "progress of job {}: {e}", self.job_id);
        }
    }

    async fn execute(&mut self, clients: &mut Vec<Arc<dyn WorkerApi>>) -> Result<Vec<OutputInfo>, RunError> {
        for w in &self.workers {
            let c = self.inner.connector.connect(w.address.clone()).await;
            clients.push(c.map_err(|e| RunError::Failed(format!("worker {} at {}: {e}", w.id, w.address)))?);
        }
        let events = self.start_shards(clients).await?;
        // Outputs are opened only once every worker took its shard: a refused plan (the job
        // queues again) must not leave files that the next plan of the job would write too.
        let assembler = Assembler::start(self.assembly_plan())
            .map_err(|e| RunError::Failed(format!("cannot start output assembly: {e}")))?;
        self.follow(events, &assembler).await?;
        assembler
            .finish()
            .await
            .map_err(|e| RunError::Failed(format!("writing outputs: {e}")))
    }

    /// Encodes the prompts, sets up NCCL where the gang can use it, and hands every worker its
    /// shard. Each event stream ends with `None`, so a worker that vanishes without `Finished`
    /// is noticed.
    async fn start_shards(&mut self, clients: &[Arc<dyn WorkerApi>]) -> Result<ShardEvents, RunError> {
        // Text embeddings once per job, on the first worker; every assignment carries them.
        let embeddings = self.encode_prompts(clients[0].clone()).await?;
        let nccl_id = self.nccl_unique_id(clients[0].clone()).await?;
        let spec = &self.resolved.spec;
        let conditioning = Conditioning {
            prompt: spec.prompt.clone(),
            negative_prompt: spec.negative_prompt.clone(),
            embeddings,
        };
        let mut events: ShardEvents = SelectAll::new();
        for (i, client) in clients.iter().enumerate() {
            let s = client
                .run_shard(self.assignment(i, &conditioning, nccl_id.as_deref()))
                .await
                .map_err(|e| match e {
                    ApiError::FailedPrecondition(reason) => RunError::Refused {
                        worker: self.workers[i].id.clone(),
                        reason,
                    },
                    e => RunError::Failed(format!("worker {} refused its shard: {e}", self.workers[i].id)),
                })?;
            events.push(Box::pin(
                s.map(move |e| (i, Some(e)))
                    .chain(stream::once(async move { (i, None) })),
            ));
        }
        Ok(events)
    }

    fn assembly_plan(&self) -> AssemblyPlan {
        let r = &self.resolved;
        let spec = &r.spec;
        AssemblyPlan {
            dir: self.dir.clone(),
            outputs: r.outputs.clone(),
            meta: VideoMeta {
                width: spec.width,
                height: spec.height,
                fps: spec.fps,
            },
            total_frames: r.frames,
            latent_shape: [
                r.latent_frames,
                self.model.latent_channels,
                r.latent_height,
                r.latent_width,
            ],
            latent_metadata: vec![
                ("model".into(), self.model.name.clone()),
                ("seed".into(), r.seed.to_string()),
                ("prompt".into(), spec.prompt.clone()),
                ("negative_prompt".into(), spec.negative_prompt.clone()),
                ("fps".into(), spec.fps.to_string()),
                ("job_id".into(), self.job_id.clone()),
            ],
            workers: self.workers.len(),
        }
    }

    /// Follows the shards until every worker delivered its verdict, feeding progress to the job
    /// table and frames to the assembler. A failure a worker reports is often a consequence (its
    /// neighbour died): it waits briefly for the coordinator's own observation of a lost worker,
    /// which names the root cause.
    async fn follow(&mut self, mut events: ShardEvents, assembler: &Assembler) -> Result<(), RunError> {
        // Per worker: its stream delivered a verdict (Finished or Failed), so its end is expected.
        let mut finished = vec![false; self.workers.len()];
        let mut frames_done = 0u32;
        let total_frames = self.resolved.frames;
        let steps = self.resolved.schedule.steps() as u32;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut reported: Option<(String, tokio::time::Instant)> = None;
        let then = |reported: &Option<(String, tokio::time::Instant)>| {
            reported
                .as_ref()
                .map(|(r, _)| format!(" (then {r})"))
                .unwrap_or_default()
        };
        loop {
            let grace_over = reported
                .as_ref()
                .map_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600), |r| r.1);
            tokio::select! {
                ev = events.next() => {
                    let Some((i, ev)) = ev else { break };
                    let worker = &self.workers[i];
                    match ev {
                        Some(ShardEvent::StepDone { window, step }) => {
                            self.progress(Progress::Step { window, step, total_steps: steps, worker_id: worker.id.clone() })
                        }
                        Some(ShardEvent::Frame { index, rgb8, .. }) => {
                            frames_done += 1;
                            self.progress(Progress::Frames { done: frames_done, total: total_frames });
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
        match reported {
            // Every stream ended before the grace period ran out: no lost worker was seen.
            Some((reason, _)) => Err(RunError::Failed(reason)),
            None => Ok(()),
        }
    }

    /// A worker of this gang that is no longer registered, described for the job's error.
    async fn departed(&self) -> Result<Option<String>, RunError> {
        let live = self
            .inner
            .registry
            .list()
            .await
            .map_err(|e| RunError::Failed(e.to_string()))?;
        Ok(self
            .workers
            .iter()
            .find(|w| !live.iter().any(|l| l.id == w.id))
            .map(|w| {
                format!(
                    "worker {} ({}) left the cluster (registration expired or removed)",
                    w.id, w.address
                )
            }))
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
        let embeddings = result.map_err(|e| {
            RunError::Failed(format!(
                "worker {} ({}) could not encode the prompts: {e}",
                w.id, w.address
            ))
        })?;
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
        let call = tokio::time::timeout(
            NCCL_ID_TIMEOUT,
            client.nccl_unique_id(self.job_id.clone(), self.plan_id),
        );
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
