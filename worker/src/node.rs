//! `WorkerNode`: one shard at a time, fenced by plan id; the loop runs on its own thread.

use crate::metrics::WorkerMetrics;
use crate::models::{ModelError, ModelSet};
use crate::nccl::NcclSupport;
use crate::net_exchange::{Link, NetExchange, ShardExchange};
use crate::trace::{StepSpans, TracedExchange, DEFAULT_TRACE_STEPS};
use futures::StreamExt;
use longshot_core::admission::{human_bytes, model_window_bytes, window_state_bytes};
use longshot_core::api::*;
use longshot_core::checkpoint::{check_resume, Checkpointing};
use longshot_core::codenoise::{
    decode_partition, denoise_partition_checkpointed, BlendMode, PartitionConfig, Progress,
};
use longshot_core::exchange::OverlapMessage;
use longshot_core::inputs::{video_frames_for, VideoSpan};
use longshot_core::repaint::KnownLatents;
use longshot_core::tensor::{LatentShape, Latents};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tracing::Instrument;

struct ShardSlot {
    job_id: String,
    plan_id: u64,
    cancel: Arc<AtomicBool>,
    /// Left-neighbour plumbing, handed to the exchange handler when the neighbour connects.
    left_in: Option<std_mpsc::Sender<OverlapMessage>>,
    left_out: Option<mpsc::UnboundedReceiver<OverlapEnvelope>>,
    done: Arc<AtomicBool>,
}

struct NodeInner {
    id: String,
    connector: Arc<dyn ExchangeConnector>,
    models: Arc<ModelSet>,
    nccl: NcclSupport,
    metrics: WorkerMetrics,
    slot: Mutex<Option<ShardSlot>>,
    /// Every how many steps a shard's step gets a trace span (0: none).
    trace_steps: AtomicUsize,
    /// Bytes of window state a shard may hold (`admission`; `u64::MAX`: no limit).
    budget_bytes: AtomicU64,
}

/// A worker's shard runner. Cheap to clone.
#[derive(Clone)]
pub struct WorkerNode {
    inner: Arc<NodeInner>,
}

impl WorkerNode {
    pub fn new(id: String, connector: Arc<dyn ExchangeConnector>, models: Arc<ModelSet>, nccl: NcclSupport) -> Self {
        Self::with_metrics(id, connector, models, nccl, WorkerMetrics::unregistered())
    }

    /// A node that records its shards in `metrics`.
    pub fn with_metrics(
        id: String,
        connector: Arc<dyn ExchangeConnector>,
        models: Arc<ModelSet>,
        nccl: NcclSupport,
        metrics: WorkerMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(NodeInner {
                id,
                connector,
                models,
                nccl,
                metrics,
                slot: Mutex::new(None),
                trace_steps: AtomicUsize::new(DEFAULT_TRACE_STEPS),
                budget_bytes: AtomicU64::new(u64::MAX),
            }),
        }
    }

    /// Refuses later shards whose windows' state exceeds `bytes` (0: no limit).
    pub fn set_budget(&self, bytes: u64) {
        let b = if bytes == 0 { u64::MAX } else { bytes };
        self.inner.budget_bytes.store(b, Ordering::Relaxed);
    }

    /// Traces every `every`th denoising step of later shards (0: none).
    pub fn set_trace_steps(&self, every: usize) {
        self.inner.trace_steps.store(every, Ordering::Relaxed);
    }

    /// What this worker serves.
    pub fn models(&self) -> &Arc<ModelSet> {
        &self.inner.models
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    fn lock(&self) -> MutexGuard<'_, Option<ShardSlot>> {
        self.inner.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job being run, if any.
    pub fn busy_job(&self) -> Option<String> {
        self.lock()
            .as_ref()
            .filter(|s| !s.done.load(Ordering::Relaxed))
            .map(|s| s.job_id.clone())
    }

    /// Stops whatever runs (shutdown).
    pub fn cancel_all(&self) {
        if let Some(s) = self.lock().as_ref() {
            s.cancel.store(true, Ordering::Relaxed);
        }
    }

    fn validate(&self, a: &ShardAssignment) -> Result<(), ApiError> {
        let models = &self.inner.models;
        let checked = match &a.prompts {
            None => models.check_conditioning(&a.model, &a.conditioning),
            Some(s) => models.check_scheduled(&a.model, s, &a.conditioning, &a.plan, a.windows.clone()),
        };
        match checked {
            Ok(()) => {}
            Err(e @ ModelError::NotServed(_)) => return Err(ApiError::invalid("model", e.to_string())),
            Err(e) => return Err(ApiError::invalid("conditioning", e.to_string())),
        }
        if a.left_address.is_some() != (a.windows.start > 0)
            || a.right_address.is_some() != (a.windows.end < a.plan.windows())
        {
            return Err(ApiError::invalid(
                "neighbours",
                "a neighbour address is required exactly where a neighbouring window exists",
            ));
        }
        if a.exchange_timeout.is_zero() {
            return Err(ApiError::invalid("exchange_timeout", "must be positive"));
        }
        // Before anything is allocated: no assignment makes this worker exceed its budget.
        let window = match self.inner.models.served().into_iter().find(|m| m.name == a.model) {
            Some(m) if m.latent_channels == a.channels => {
                model_window_bytes(&m, a.plan.window(), a.height, a.width, a.repaint.is_some())
            }
            _ => window_state_bytes(a.plan.window(), a.channels, a.height, a.width),
        };
        let need = window.saturating_mul(a.windows.len() as u64);
        let budget = self.inner.budget_bytes.load(Ordering::Relaxed);
        if need > budget {
            return Err(ApiError::invalid(
                "windows",
                format!(
                    "{} windows of {}×{}×{}×{} latents need {} of state; this worker's budget is {} (--memory-budget)",
                    a.windows.len(),
                    a.plan.window(),
                    a.channels,
                    a.height,
                    a.width,
                    human_bytes(need),
                    human_bytes(budget)
                ),
            ));
        }
        if let Some(states) = &a.resume {
            let shape = LatentShape::new(a.plan.window(), a.channels, a.height, a.width);
            check_resume(states, a.windows.clone(), shape, &a.schedule, a.first_step)
                .map_err(|e| ApiError::invalid("resume", e.to_string()))?;
        }
        self.validate_video(a)?;
        Self::validate_known(a)?;
        if let Some(g) = &a.nccl {
            if g.ranks < 2 || g.rank >= g.ranks || g.unique_id.len() != NCCL_UNIQUE_ID_BYTES {
                return Err(ApiError::invalid("nccl", format!("rank {} of {} with a {}-byte id: need 0 ≤ rank < ranks, ranks ≥ 2 and a {NCCL_UNIQUE_ID_BYTES}-byte id", g.rank, g.ranks, g.unique_id.len())));
            }
            if a.blend != BlendMode::CoDenoise || a.plan.overlap() == 0 {
                return Err(ApiError::invalid(
                    "nccl",
                    "only co-denoised windows with an overlap exchange velocities: send no NCCL group",
                ));
            }
            if self.inner.nccl.gpu().is_none() {
                return Err(ApiError::invalid("nccl", "this worker cannot join NCCL communicators (no GPU, no libnccl, or a build without CUDA): run the gang over TCP"));
            }
            if (g.rank > 0) != a.left_address.is_some() || (g.rank + 1 < g.ranks) != a.right_address.is_some() {
                return Err(ApiError::invalid("nccl.rank", format!("rank {} of {} does not match the neighbours of windows {:?}: ranks ± 1 must be exactly the left and right neighbours", g.rank, g.ranks, a.windows)));
            }
        }
        Ok(())
    }

    /// A rerender's shard: its mask inside the clip, the source latents of exactly its windows (on
    /// every run: the kept frames are replaced at every step), and no input video beside them.
    fn validate_known(a: &ShardAssignment) -> Result<(), ApiError> {
        let Some(mask) = &a.repaint else {
            return match a.known {
                Some(_) => Err(ApiError::invalid(
                    "known",
                    "known latents come only with a repaint mask (a rerender)",
                )),
                None => Ok(()),
            };
        };
        if mask.latent_frames != a.plan.latent_frames() {
            return Err(ApiError::invalid(
                "repaint",
                format!(
                    "the mask is for {} latent frames, the plan has {}",
                    mask.latent_frames,
                    a.plan.latent_frames()
                ),
            ));
        }
        if a.video.is_some() {
            return Err(ApiError::invalid(
                "video",
                "a rerender starts from its source's latents, not a video",
            ));
        }
        let Some(known) = a.known.as_deref() else {
            return Err(ApiError::invalid(
                "known",
                "a rerender's shard needs its windows' source latents",
            ));
        };
        let want = KnownLatents::span(&a.plan, &a.windows);
        let got = known.first..known.first + known.latents.shape().frames;
        let frame = LatentShape::new(1, a.channels, a.height, a.width);
        if got != want || known.latents.shape().with_frames(1) != frame {
            return Err(ApiError::invalid(
                "known",
                format!(
                    "latent frames {got:?} of {:?}; windows {:?} need frames {want:?} of {frame:?}",
                    known.latents.shape().with_frames(1),
                    a.windows
                ),
            ));
        }
        Ok(())
    }

    /// A video-to-video shard: a first step inside the schedule, and (unless it resumes) the
    /// frames its windows encode, at the clip's size, from a model that takes a video.
    fn validate_video(&self, a: &ShardAssignment) -> Result<(), ApiError> {
        if a.first_step >= a.schedule.steps() {
            return Err(ApiError::invalid(
                "first_step",
                format!(
                    "{} is not below the schedule's {} steps",
                    a.first_step,
                    a.schedule.steps()
                ),
            ));
        }
        let needs_video = a.first_step > 0 && a.resume.is_none();
        let Some(video) = a.video.as_deref() else {
            return match needs_video {
                true => Err(ApiError::invalid(
                    "video",
                    format!("a shard from step {} needs the input video's frames", a.first_step),
                )),
                false => Ok(()),
            };
        };
        let info = self.inner.models.served().into_iter().find(|m| m.name == a.model);
        let Some(info) = info else { return Ok(()) }; // refused as not served above
        let Some(warmup) = info.video_warmup else {
            return Err(ApiError::invalid(
                "video",
                format!("model {:?} renders from no input video", a.model),
            ));
        };
        video.validate().map_err(|m| ApiError::invalid("video", m))?;
        let s = info.spatial_compression;
        if (video.width as usize, video.height as usize) != (a.width * s, a.height * s) {
            return Err(ApiError::invalid(
                "video",
                format!(
                    "frames are {}x{}, the clip's latents {}x{} decode to {}x{}",
                    video.width,
                    video.height,
                    a.width,
                    a.height,
                    a.width * s,
                    a.height * s
                ),
            ));
        }
        let latents = a.plan.window_range(a.windows.start).start..a.plan.window_range(a.windows.end - 1).end;
        let want = video_frames_for(latents, warmup as usize, info.temporal_compression, video.video_frames);
        let got = video.first_frame..video.first_frame + video.frames();
        if got != want {
            return Err(ApiError::invalid(
                "video",
                format!(
                    "frames {got:?} were sent; windows {:?} encode frames {want:?}",
                    a.windows
                ),
            ));
        }
        Ok(())
    }

    async fn start_shard(&self, a: ShardAssignment) -> Result<BoxStream<ShardEvent>, ApiError> {
        self.validate(&a)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (left_in_tx, left_in_rx) = std_mpsc::channel();
        let (left_out_tx, left_out_rx) = mpsc::unbounded_channel();
        {
            let mut slot = self.lock();
            if let Some(s) = slot.as_ref().filter(|s| !s.done.load(Ordering::Relaxed)) {
                if s.job_id == a.job_id && s.plan_id > a.plan_id {
                    return Err(ApiError::FailedPrecondition(format!(
                        "stale assignment: plan {} of job {} is older than the running plan {}",
                        a.plan_id, a.job_id, s.plan_id
                    )));
                }
                if s.job_id != a.job_id {
                    return Err(ApiError::FailedPrecondition(format!(
                        "worker {} is busy with job {}",
                        self.inner.id, s.job_id
                    )));
                }
                // A newer plan of the same job supersedes the running one.
                s.cancel.store(true, Ordering::Relaxed);
            }
            *slot = Some(ShardSlot {
                job_id: a.job_id.clone(),
                plan_id: a.plan_id,
                cancel: cancel.clone(),
                left_in: Some(left_in_tx),
                left_out: Some(left_out_rx),
                done: done.clone(),
            });
        }
        let left = a.left_address.is_some().then(|| Link {
            outbound: left_out_tx,
            inbound: left_in_rx,
        });
        let right = a
            .right_address
            .as_ref()
            .map(|addr| self.connect_right(addr.clone(), &a));
        let (tx, rx) = mpsc::channel(64);
        let exchange = NetExchange {
            job_id: a.job_id.clone(),
            plan_id: a.plan_id,
            left,
            right,
            timeout: a.exchange_timeout,
            cancel: cancel.clone(),
            bytes_sent: 0,
        };
        let worker = self.inner.id.clone();
        let models = self.inner.models.clone();
        let nccl = self.inner.nccl.clone();
        let metrics = self.inner.metrics.clone();
        let trace_steps = self.inner.trace_steps.load(Ordering::Relaxed);
        // Created here, under the RunShard call's span (whose parent is the coordinator's plan
        // span), and entered on the shard's thread.
        let span = tracing::info_span!(
            "shard",
            job_id = %a.job_id,
            plan_id = a.plan_id,
            worker = %worker,
            windows = ?a.windows,
        );
        std::thread::Builder::new()
            .name(format!("shard-{}", a.job_id))
            .spawn(move || {
                let _span = span.entered();
                // Set even if the shard panics (e.g. a failed NCCL abort in cudarc's drop), so
                // the worker does not stay busy for good.
                let _done = DoneOnDrop(done);
                run_shard_blocking(&models, &nccl, &metrics, a, exchange, cancel, &tx, trace_steps);
            })
            .map_err(|e| ApiError::Internal(format!("worker {worker}: cannot start the shard thread: {e}")))?;
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Dials the right neighbour and pumps its messages into the loop's inbound channel.
    fn connect_right(&self, address: String, a: &ShardAssignment) -> Link {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = std_mpsc::channel();
        let connector = self.inner.connector.clone();
        let (job, plan) = (a.job_id.clone(), a.plan_id);
        tokio::spawn(async move {
            let outbound: BoxStream<OverlapEnvelope> = Box::pin(UnboundedReceiverStream::new(out_rx));
            let mut inbound = match connector.open(address.clone(), outbound).await {
                Ok(s) => s,
                Err(e) => {
                    // Dropping in_tx makes the loop report the neighbour as disconnected.
                    tracing::warn!(job = %job, "cannot open the overlap exchange to {address}: {e}");
                    return;
                }
            };
            pump(&mut inbound, &in_tx, &job, plan, "right").await;
        });
        Link {
            outbound: out_tx,
            inbound: in_rx,
        }
    }
}

/// Marks the shard slot done when the shard thread ends, however it ends.
struct DoneOnDrop(Arc<AtomicBool>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Forwards a neighbour's messages for (job, plan) to the loop; others are stale and dropped.
async fn pump(
    inbound: &mut BoxStream<Result<OverlapEnvelope, ApiError>>,
    to_loop: &std_mpsc::Sender<OverlapMessage>,
    job: &str,
    plan: u64,
    side: &str,
) {
    while let Some(item) = inbound.next().await {
        match item {
            Ok(env) if env.job_id == job && env.plan_id == plan => {
                if to_loop.send(env.message).is_err() {
                    return; // the loop is over
                }
            }
            Ok(env) => tracing::warn!(
                job = %job,
                "dropping a {side} overlap message for job {} plan {} (running {job} plan {plan})",
                env.job_id,
                env.plan_id
            ),
            Err(e) => {
                tracing::warn!(job = %job, "{side} overlap stream failed: {e}");
                return;
            }
        }
    }
}

/// Video-to-video: each window's clean latents, encoded from the frames the shard received.
fn encode_windows(
    models: &ModelSet,
    a: &ShardAssignment,
    cfg: &PartitionConfig,
    video: &VideoSpan,
) -> Result<Vec<Latents>, String> {
    let shape = LatentShape::new(cfg.plan.window(), cfg.channels, cfg.height, cfg.width);
    let started = Instant::now();
    let clean = a
        .windows
        .clone()
        .map(|k| {
            let data = models
                .encode_video(&a.model, video, cfg.plan.window_range(k))
                .map_err(|e| e.to_string())?;
            let got = data.len();
            Latents::from_vec(shape, data).ok_or_else(|| {
                format!(
                    "the video encode of window {k} gave {got} values, the window holds {}",
                    shape.len()
                )
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    tracing::info!(job = %a.job_id, windows = ?a.windows, frames = ?(video.first_frame..video.first_frame + video.frames()), secs = started.elapsed().as_secs_f64(), "encoded the input video");
    Ok(clean)
}

#[allow(clippy::too_many_arguments)]
fn run_shard_blocking(
    models: &ModelSet,
    nccl: &NcclSupport,
    metrics: &WorkerMetrics,
    a: ShardAssignment,
    tcp: NetExchange,
    cancel: Arc<AtomicBool>,
    tx: &mpsc::Sender<ShardEvent>,
    trace_steps: usize,
) {
    // If the coordinator stops listening, stop the work too.
    let emit = |e: ShardEvent| {
        if tx.blocking_send(e).is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    // A shard that cannot start: counted, reported, and the caller returns.
    let refuse = |reason: String| {
        metrics.shard_ended(&a.model, false);
        emit(ShardEvent::Failed {
            reason,
            transient: false,
        });
    };
    let exchange: Box<dyn ShardExchange> = match &a.nccl {
        None => Box::new(tcp),
        Some(group) => match nccl.exchange(group, tcp, a.exchange_timeout) {
            Ok(e) => e,
            Err(reason) => return refuse(reason),
        },
    };
    let started = Instant::now();
    let latent = [a.plan.latent_frames(), a.height, a.width];
    let instantiated = match &a.prompts {
        None => models.instantiate(&a.model, &a.conditioning, latent),
        Some(s) => models.instantiate_scheduled(&a.model, s, &a.conditioning, &a.plan, a.windows.clone(), latent),
    };
    let (mut denoiser, decoder) = match instantiated {
        Ok((denoiser, decoder)) => (metrics.timed_denoiser(denoiser), decoder),
        Err(e) => return refuse(e.to_string()),
    };
    let cfg = PartitionConfig {
        plan: a.plan,
        windows: a.windows.clone(),
        channels: a.channels,
        height: a.height,
        width: a.width,
        schedule: a.schedule.clone(),
        guidance: a.guidance,
        noise: a.noise.clone(),
        mode: a.blend,
        hash_every: a.hash_every,
        output_frames: a.output_frames,
        first_step: a.first_step,
        repaint: a.repaint.clone(),
    };
    let clean = match (&a.video, &a.resume, &a.known) {
        (_, _, Some(known)) => {
            let shape = LatentShape::new(cfg.plan.window(), cfg.channels, cfg.height, cfg.width);
            match a.windows.clone().map(|k| known.window(&cfg.plan, k, shape)).collect() {
                Ok(c) => Some(c),
                Err(reason) => return refuse(reason),
            }
        }
        (Some(video), None, None) => {
            let span = tracing::info_span!("encode_video", frames = video.frames(), first_frame = video.first_frame);
            match span.in_scope(|| encode_windows(models, &a, &cfg, video)) {
                Ok(c) => Some(c),
                Err(reason) => return refuse(reason),
            }
        }
        _ => None,
    };
    // Step spans start with the first step: the model's set-up and the video encode come before.
    let first = a
        .resume
        .as_ref()
        .and_then(|r| r.first())
        .map_or(a.first_step, |w| w.step);
    let last_window = a.windows.end.saturating_sub(1);
    let mut steps = StepSpans::start(trace_steps, a.schedule.steps(), last_window, first);
    let mut exchange: Box<dyn ShardExchange> = Box::new(TracedExchange::new(
        metrics.metered_exchange(exchange),
        steps.sampled_flag(),
    ));
    metrics.shard_started(exchange.transport());
    let mut clock = metrics.step_clock(&a.model);
    // The preview map is asked for only when the shard previews: a fitted one decodes once. A
    // model that cannot preview renders without previews.
    let preview_map = match a.preview_every {
        0 => None,
        _ => decoder
            .preview_map()
            .inspect_err(|e| tracing::warn!(job = %a.job_id, "no live previews: {e}"))
            .ok(),
    };
    let mut progress = |p: Progress| match p {
        Progress::Step { window, step, .. } => {
            clock.step_done(window);
            steps.window_done(window, step);
            emit(ShardEvent::StepDone {
                window: window as u32,
                step: step as u32,
            })
        }
        Progress::Checkpoint(w) => emit(ShardEvent::Checkpoint(w)),
        Progress::Preview { step, first_frame, x0 } => {
            let started = Instant::now();
            // Frame numbers fit in u32: assignments carry them as such.
            let projected = preview_map
                .as_ref()
                .map(|m| m.project(&x0, step as u32, first_frame as u32));
            match projected {
                Some(Ok(p)) => emit(ShardEvent::Preview(p)),
                // Previews are a courtesy: one that cannot be made is logged, the render goes on.
                Some(Err(e)) => tracing::warn!(job = %a.job_id, "live preview at step {step} skipped: {e}"),
                None => {}
            }
            metrics.previewed(&a.model, started.elapsed().as_secs_f64());
        }
    };
    let ckpt = Checkpointing {
        every: a.checkpoint_every,
        resume: a.resume.clone().map(Arc::unwrap_or_clone),
        preview_every: a.preview_every,
    };
    if let Some(r) = &ckpt.resume {
        tracing::info!(job = %a.job_id, windows = ?a.windows, step = r[0].step, "resuming from the job's checkpoint");
    }
    let denoised = denoise_partition_checkpointed(
        &cfg,
        ckpt,
        clean,
        denoiser.as_mut(),
        exchange.as_mut(),
        &cancel,
        &mut progress,
    );
    // A step cut short by an error or a cancel ends here.
    steps.close();
    let result = denoised.and_then(|out| {
        let (t, steps) = (out.timings, cfg.schedule.steps().max(1) as f64);
        let ms = |d: std::time::Duration| 1e3 * d.as_secs_f64() / steps;
        tracing::info!(
            job = %a.job_id,
            "denoised windows {:?}: per step model {:.1} ms, exchange wait {:.2} ms, blend {:.3} ms, scheduler {:.2} ms, hash {:.3} ms, preview {:.3} ms; sent {} overlap bytes ({:.0} per step, velocities over {})",
            a.windows, ms(t.model), ms(t.exchange), ms(t.blend), ms(t.scheduler), ms(t.verify), ms(t.preview), exchange.bytes_sent(), exchange.bytes_sent() as f64 / steps, exchange.transport()
        );
        emit(ShardEvent::Latents {
            first_frame: out.owned_start as u32,
            frames: out.owned.shape().frames as u32,
            data: out.owned.as_slice().to_vec(),
        });
        let decoding = Instant::now();
        let span = tracing::info_span!("decode", frames = out.owned.shape().frames, first_frame = out.owned_start);
        let decoded = span.in_scope(|| decode_partition(&cfg, &out, decoder.as_ref(), exchange.as_mut(), &mut |index, f| {
            emit(ShardEvent::Frame { index: index as u32, width: f.width as u32, height: f.height as u32, rgb8: f.to_rgb8() })
        }));
        metrics.decoded(&a.model, decoding.elapsed().as_secs_f64());
        decoded
    });
    metrics.shard_ended(&a.model, result.is_ok());
    match result {
        Ok(()) => {
            tracing::info!(job = %a.job_id, windows = ?a.windows, secs = started.elapsed().as_secs_f64(), "shard finished");
            emit(ShardEvent::Finished)
        }
        Err(e) => emit(ShardEvent::Failed {
            reason: e.to_string(),
            transient: e.is_transient(),
        }),
    }
}

impl WorkerApi for WorkerNode {
    fn run_shard(&self, assignment: ShardAssignment) -> BoxFuture<'_, Result<BoxStream<ShardEvent>, ApiError>> {
        Box::pin(self.start_shard(assignment))
    }

    fn encode_text(&self, r: EncodeTextRequest) -> BoxFuture<'_, Result<EncodedConditioning, ApiError>> {
        let span = tracing::info_span!("encode_text", job_id = %r.job_id, model = %r.model);
        Box::pin(
            async move {
                let models = self.inner.models.clone();
                if !models.serves(&r.model) {
                    return Err(ApiError::invalid("model", ModelError::NotServed(r.model).to_string()));
                }
                let started = Instant::now();
                // The encoder is heavy CPU (GPU later) work: never on the async runtime.
                let (model, job) = (r.model.clone(), r.job_id.clone());
                let result = tokio::task::spawn_blocking(move || {
                    models.encode_text(&r.model, &r.prompt, &r.negative_prompt, r.reference.as_ref())
                })
                .await
                .map_err(|e| {
                    ApiError::Internal(format!("worker {}: the text encoder task failed: {e}", self.inner.id))
                })?;
                let e = result.map_err(|e| match e {
                    ModelError::Invalid(m) => ApiError::invalid("reference", m),
                    e => ApiError::Internal(format!("worker {}: {e}", self.inner.id)),
                })?;
                let secs = started.elapsed().as_secs_f64();
                self.inner.metrics.text_encoded(&model, secs);
                tracing::info!(job = %job, model = %model, secs, "encoded the prompts");
                Ok(e)
            }
            .instrument(span),
        )
    }

    fn nccl_unique_id(&self, job_id: String, plan_id: u64) -> BoxFuture<'_, Result<Vec<u8>, ApiError>> {
        let nccl = self.inner.nccl.clone();
        Box::pin(async move {
            let id = tokio::task::spawn_blocking(move || nccl.create_id())
                .await
                .map_err(|e| ApiError::Internal(format!("NCCL id task: {e}")))?
                .map_err(ApiError::FailedPrecondition)?;
            tracing::info!(job = %job_id, plan_id, "created the NCCL id of the gang's communicator (rank 0)");
            Ok(id)
        })
    }

    fn cancel_shard(&self, job_id: String, plan_id: u64) -> BoxFuture<'_, Result<bool, ApiError>> {
        Box::pin(async move {
            let slot = self.lock();
            Ok(match slot.as_ref() {
                Some(s) if s.job_id == job_id && s.plan_id <= plan_id && !s.done.load(Ordering::Relaxed) => {
                    s.cancel.store(true, Ordering::Relaxed);
                    true
                }
                _ => false,
            })
        })
    }
}

/// How long an incoming neighbour stream waits for its shard's assignment to arrive.
const ROUTE_WAIT: Duration = Duration::from_secs(30);

impl ExchangeApi for WorkerNode {
    fn overlap(
        &self,
        mut inbound: BoxStream<Result<OverlapEnvelope, ApiError>>,
    ) -> BoxFuture<'_, Result<BoxStream<OverlapEnvelope>, ApiError>> {
        Box::pin(async move {
            // The first message names the shard this stream belongs to.
            let first = match inbound.next().await {
                Some(Ok(env)) => env,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(ApiError::invalid(
                        "overlap",
                        "the stream ended before its first message",
                    ))
                }
            };
            let (job, plan) = (first.job_id.clone(), first.plan_id);
            let deadline = Instant::now() + ROUTE_WAIT;
            let (to_loop, from_loop) = loop {
                {
                    let mut slot = self.lock();
                    match slot.as_mut() {
                        Some(s) if s.job_id == job && s.plan_id == plan => {
                            match (s.left_in.take(), s.left_out.take()) {
                                (Some(i), Some(o)) => break (i, o),
                                _ => {
                                    return Err(ApiError::FailedPrecondition(format!(
                                        "job {job} plan {plan} already has a left neighbour stream"
                                    )))
                                }
                            }
                        }
                        Some(s) if s.job_id == job && s.plan_id > plan => {
                            return Err(ApiError::FailedPrecondition(format!(
                                "stale overlap stream: plan {plan} of job {job} was superseded by plan {}",
                                s.plan_id
                            )))
                        }
                        _ => {}
                    }
                }
                if Instant::now() >= deadline {
                    return Err(ApiError::FailedPrecondition(format!(
                        "no shard of job {job} plan {plan} arrived on worker {} within {ROUTE_WAIT:?}",
                        self.inner.id
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if to_loop.send(first.message).is_ok() {
                tokio::spawn(async move { pump(&mut inbound, &to_loop, &job, plan, "left").await });
            }
            Ok(Box::pin(UnboundedReceiverStream::new(from_loop)) as BoxStream<OverlapEnvelope>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use longshot_core::plan::WindowPlan;
    use longshot_core::scheduler::{Schedule, Solver};

    /// The right neighbour is never dialled here: validation refuses first.
    struct Unreachable;

    impl ExchangeConnector for Unreachable {
        fn open(
            &self,
            address: String,
            _outbound: BoxStream<OverlapEnvelope>,
        ) -> BoxFuture<'static, Result<BoxStream<Result<OverlapEnvelope, ApiError>>, ApiError>> {
            Box::pin(async move { Err(ApiError::Unavailable(format!("no exchange at {address} in this test"))) })
        }
    }

    fn cpu_node() -> WorkerNode {
        let models = ModelSet::load(&[], &Device::Cpu).expect("the built-in model");
        WorkerNode::new(
            "w-test".into(),
            Arc::new(Unreachable),
            Arc::new(models),
            NcclSupport::detect(&Device::Cpu),
        )
    }

    fn assignment(nccl: Option<NcclGroup>) -> ShardAssignment {
        ShardAssignment {
            prompts: None,
            first_step: 0,
            video: None,
            repaint: None,
            known: None,
            job_id: "j".into(),
            plan_id: 1,
            model: longshot_models::ProceduralModel::NAME.into(),
            conditioning: longshot_core::denoiser::Conditioning::new("a prompt", ""),
            noise: longshot_core::noise::NoiseKeys::single(1),
            channels: 16,
            height: 2,
            width: 2,
            plan: WindowPlan::new(53, 21, 5).unwrap(),
            schedule: Schedule::new(Solver::UniPc, 2, 3.0).unwrap(),
            guidance: 5.0,
            windows: 1..2,
            left_address: Some("127.0.0.1:9".into()),
            right_address: Some("127.0.0.1:9".into()),
            exchange_timeout: Duration::from_secs(5),
            hash_every: 1,
            output_frames: 205,
            blend: Default::default(),
            nccl,
            checkpoint_every: 0,
            preview_every: 0,
            resume: None,
        }
    }

    /// Video-to-video shards that cannot run are refused before anything starts, naming why.
    #[tokio::test]
    async fn video_shards_are_checked_before_they_start() {
        let node = cpu_node();
        let span = longshot_core::inputs::VideoSpan {
            first_frame: 0,
            width: 16,
            height: 16,
            video_frames: 205,
            rgb: vec![0; 16 * 16 * 3],
        };
        for (first_step, video, says) in [
            (2, None, "first_step: 2 is not below the schedule's 2 steps"),
            (1, None, "video: a shard from step 1 needs the input video's frames"),
            (
                1,
                Some(span),
                "video: frames 0..1 were sent; windows 1..2 encode frames 61..145",
            ),
        ] {
            let e = node
                .run_shard(ShardAssignment {
                    first_step,
                    video: video.map(Arc::new),
                    ..assignment(None)
                })
                .await
                .err()
                .expect("refused");
            assert!(e.to_string().contains(says), "{e}");
        }
        assert_eq!(node.busy_job(), None, "a refused shard leaves nothing behind");
    }

    /// A CPU worker neither makes NCCL ids nor accepts an NCCL assignment, and says why.
    #[tokio::test]
    async fn a_cpu_worker_refuses_nccl_clearly() {
        let node = cpu_node();
        let refused = node.nccl_unique_id("j".into(), 1).await;
        assert!(
            matches!(&refused, Err(ApiError::FailedPrecondition(m)) if m.contains("cannot join NCCL communicators")),
            "{refused:?}"
        );
        let group = NcclGroup {
            unique_id: vec![0; NCCL_UNIQUE_ID_BYTES],
            rank: 1,
            ranks: 3,
        };
        let e = node.run_shard(assignment(Some(group))).await.err().expect("refused");
        assert!(
            e.to_string()
                .contains("nccl: this worker cannot join NCCL communicators"),
            "{e}"
        );
        // Malformed groups and groups for jobs that exchange nothing are refused before that.
        for (group, blend, says) in [
            (
                NcclGroup {
                    unique_id: vec![0; 5],
                    rank: 1,
                    ranks: 3,
                },
                BlendMode::CoDenoise,
                "need 0 ≤ rank < ranks",
            ),
            (
                NcclGroup {
                    unique_id: vec![0; NCCL_UNIQUE_ID_BYTES],
                    rank: 5,
                    ranks: 3,
                },
                BlendMode::CoDenoise,
                "need 0 ≤ rank < ranks",
            ),
            (
                NcclGroup {
                    unique_id: vec![0; NCCL_UNIQUE_ID_BYTES],
                    rank: 1,
                    ranks: 3,
                },
                BlendMode::Independent,
                "only co-denoised windows",
            ),
        ] {
            let e = node
                .run_shard(ShardAssignment {
                    blend,
                    ..assignment(Some(group))
                })
                .await
                .err()
                .expect("refused");
            assert!(e.to_string().contains(says), "{e}");
        }
        assert_eq!(node.busy_job(), None, "a refused shard leaves nothing behind");
    }

    /// A shard whose windows' state exceeds the worker's budget is refused before anything is
    /// allocated, naming the need and the budget; one that fits passes that check.
    #[tokio::test]
    async fn a_shard_above_the_budget_is_refused_before_any_allocation() {
        let node = cpu_node();
        // A 21×16×512×512 window: 352 MB of latents, 8 copies.
        let huge = ShardAssignment {
            height: 512,
            width: 512,
            windows: 0..3,
            left_address: None,
            right_address: None,
            ..assignment(None)
        };
        node.set_budget(8_000_000_000);
        let e = node.run_shard(huge.clone()).await.err().expect("refused");
        let text = e.to_string();
        assert!(
            text.contains("windows: 3 windows of 21×16×512×512 latents need 8.5 GB of state")
                && text.contains("budget is 8.0 GB (--memory-budget)"),
            "{text}"
        );
        assert_eq!(node.busy_job(), None, "a refused shard leaves nothing behind");
        // Within the budget the same shape gets past the check (and fails later, on purpose, at
        // its unreachable neighbour: that is not this check).
        node.set_budget(16 << 30);
        let small = ShardAssignment {
            windows: 0..1,
            right_address: Some("127.0.0.1:9".into()),
            ..huge
        };
        if let Err(e) = node.run_shard(small).await {
            assert!(!e.to_string().contains("--memory-budget"), "{e}");
        }
    }
}
