//! The run of one job on its gang: prompts, shards (in waves when a job's takes outnumber its
//! workers), progress, checkpoints, output assembly, and how a run ends: done, failed, cancelled,
//! queued again when a worker refuses its shard or cannot be reached, or interrupted by a lost
//! worker, after which the job resumes from its last complete checkpoint on whichever workers
//! are available.

use crate::assembly::{Assembler, AssemblyPlan};
use crate::checkpoints::CheckpointRef;
use crate::context::Inner;
use crate::estimate::{self, RunTiming};
use crate::job_table::{plan_summary, Job, Progress};
use crate::lifecycle::Transition;
use crate::nccl_gang::{nccl_decision, OverlapTransport};
use crate::placement::Gang;
use futures::stream::{self, SelectAll, StreamExt};
use longshot_core::api::*;
use longshot_core::checkpoint::WindowState;
use longshot_core::codenoise::BlendMode;
use longshot_core::denoiser::{Conditioning, ModelInfo};
use longshot_core::inputs::{video_frames_for, InputDigest, ReferenceImages, VideoHeader, VideoSpan};
use longshot_core::job::{OutputKind, ResolvedJob};
use longshot_core::output::LATENTS_TENSOR;
use longshot_core::prompt_schedule::PromptSchedule;
use longshot_core::repaint::KnownLatents;
use longshot_core::takes::{Shard, Take};
use longshot_core::tensor::{LatentShape, Latents};
use longshot_media::VideoMeta;
use std::collections::{BTreeMap, HashMap};
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

/// How long connecting to a placed worker may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a worker may take to accept its shard (a resumed shard's states, a video-to-video
/// shard's frames travel with it).
const SHARD_START_TIMEOUT: Duration = Duration::from_secs(120);

enum RunError {
    Failed(String),
    Cancelled,
    /// The run broke for a reason outside the job (a lost worker, a broken stream): the job goes
    /// back to the queue and resumes from its last complete checkpoint. `blame`: the lost worker.
    Interrupted {
        reason: String,
        blame: Option<String>,
    },
    /// A placed worker could not be reached before any work started: it is left out of
    /// scheduling for a while and the job queues again at once.
    Unreachable {
        worker: String,
        reason: String,
    },
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
    /// The job's shards: `shards[j]` runs on `workers[j mod n]`, in waves of `n` shards.
    shards: Vec<Shard>,
    /// The job's takes (one for a job without cuts); a shard's windows are its take's.
    takes: Vec<Take>,
    /// Each distinct (prompt, negative prompt)'s embeddings, encoded once per run across takes.
    encoded: HashMap<(String, String), EncodedConditioning>,
    /// Frames delivered so far, over every wave.
    frames_done: u32,
    /// Per worker of the running wave: when it accepted its shard, stepped last and ended (the
    /// job's cost counts accepted to end), and what it did.
    held: Vec<Held>,
    /// How this run spent its time so far (recorded with the job when the run succeeds).
    timing: RunTiming,
    /// The sum over finished waves of the slowest shard's seconds.
    waves_seconds: f64,
    /// Checkpoint step → blob of each window (the job's numbering) at that step, until every
    /// window has one; kept across waves, whose takes reach a step at different times.
    partial: BTreeMap<usize, Vec<Option<String>>>,
    resolved: ResolvedJob,
    model: ModelInfo,
    dir: PathBuf,
    /// The checkpoint this run resumes from.
    resume: Option<CheckpointRef>,
    /// Checkpoint interval in steps (0: none).
    checkpoint_every: usize,
    cancel: watch::Receiver<bool>,
    /// This run's span (`plan`), a child of the job's: the worker calls are made inside it, so
    /// their clients carry it to the workers.
    span: tracing::Span,
}

/// One worker's shard of the running wave, as the job's cost and timing count it.
#[derive(Clone, Debug, Default)]
struct Held {
    accepted: Option<Instant>,
    /// Its last step, and its steps (one per window per step) and frames so far.
    last_step: Option<Instant>,
    steps: u64,
    frames: u64,
    end: Option<Instant>,
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
        let checkpoint_every = inner.cfg.checkpoint_interval(job.resolved.schedule.steps());
        let device_kind = gang.workers.first().map(|w| w.device_kind.clone()).unwrap_or_default();
        JobRun {
            inner,
            job_id: gang.job_id,
            plan_id,
            workers: gang.workers,
            shards: gang.shards,
            takes: job.resolved.take_list(),
            encoded: HashMap::new(),
            frames_done: 0,
            held: Vec::new(),
            timing: RunTiming {
                // Placement gangs only workers of one device kind.
                device_kind,
                ..Default::default()
            },
            waves_seconds: 0.0,
            partial: BTreeMap::new(),
            resolved: job.resolved.clone(),
            model: job.model.clone(),
            dir: job.dir.clone(),
            resume: job.checkpoint.clone(),
            checkpoint_every,
            cancel: job.cancel.subscribe(),
            span,
        }
    }

    pub async fn run(mut self) {
        let mut clients = Vec::new();
        let span = self.span.clone();
        let started = Instant::now();
        let result = self.execute(&mut clients).instrument(span.clone()).await;
        if result.is_err() {
            // A lost worker is not asked: a frozen one would hold the resume up for the whole
            // cancel timeout, and its shard's plan is fenced off anyway.
            let lost = match &result {
                Err(RunError::Interrupted { blame, .. }) => blame.clone(),
                _ => None,
            };
            self.cancel_shards(&clients, lost.as_deref()).instrument(span).await;
        }
        if let Err(RunError::Interrupted { .. }) = &result {
            // Partial outputs of this run; the resumed run writes them all again.
            let dir = self.dir.clone();
            let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("{}: {e}", dir.display())),
                _ => Ok(()),
            })
            .await;
            if let Ok(Err(e)) = removed {
                tracing::warn!(job = %self.job_id, "cannot remove the interrupted run's partial outputs in {e}");
            }
        }
        let mut table = self.inner.lock();
        for w in &self.workers {
            table.busy.remove(&w.id);
        }
        let transition = match result {
            Ok(outputs) => {
                // A rerender's held windows step without the model: its times would mislead.
                if self.resolved.spec.rerender.is_none() && self.timing.window_steps > 0 {
                    self.timing.overhead_seconds = (started.elapsed().as_secs_f64() - self.waves_seconds).max(0.0);
                    table.timed(&self.job_id, std::mem::take(&mut self.timing));
                }
                Transition::Finish(outputs)
            }
            Err(RunError::Cancelled) => Transition::Cancel,
            Err(RunError::Refused { worker, reason }) => {
                tracing::warn!(job = %self.job_id, "worker {worker} refused its shard ({reason}); the job queues again");
                table.refused.insert(worker, Instant::now());
                Transition::Requeue(plan_summary(&self.resolved, &self.model, 0))
            }
            Err(RunError::Unreachable { worker, reason }) => {
                tracing::warn!(job = %self.job_id, "worker {worker} cannot be reached ({reason}); it is left out for {:?} and the job queues again", crate::dispatch::UNREACHABLE_COOLDOWN);
                table.unreachable.insert(worker, Instant::now());
                Transition::Requeue(plan_summary(&self.resolved, &self.model, 0))
            }
            Err(RunError::Interrupted { reason, blame }) => {
                let t = table.interruption(&self.job_id, reason, blame.as_deref());
                match &t {
                    Transition::Interrupt(r) => {
                        tracing::warn!(job = %self.job_id, plan_id = self.plan_id, "run interrupted: {r}; the job resumes from its last checkpoint")
                    }
                    _ => tracing::warn!(job = %self.job_id, "job failed: {t:?}"),
                }
                t
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

    /// Shard `j` of wave `wave`; `nccl`: its take's communicator and its rank in it when the
    /// take exchanges over NCCL; `inputs`: what streams to it after the assignment.
    fn assignment(
        &self,
        j: usize,
        wave: &Range<usize>,
        (conditioning, prompts): &(Conditioning, Option<Arc<PromptSchedule>>),
        nccl: Option<NcclGroup>,
        inputs: ShardInputs,
    ) -> ShardAssignment {
        let shard = &self.shards[j];
        let r = &self.takes[shard.take].job;
        // Neighbours: the shards beside it in the wave that render the same take.
        let neighbour = |k: usize| {
            (wave.contains(&k) && self.shards[k].take == shard.take)
                .then(|| self.workers[k - wave.start].address.clone())
        };
        ShardAssignment {
            first_step: r.first_step,
            video: inputs.video.map(Arc::new),
            job_id: self.job_id.clone(),
            plan_id: self.plan_id,
            model: self.model.name.clone(),
            conditioning: conditioning.clone(),
            prompts: prompts.clone(),
            noise: r.noise_keys(self.model.temporal_compression),
            channels: self.model.latent_channels,
            height: r.latent_height,
            width: r.latent_width,
            plan: r.plan,
            schedule: r.schedule.clone(),
            guidance: r.spec.guidance,
            windows: shard.windows.clone(),
            left_address: j.checked_sub(1).and_then(neighbour),
            right_address: neighbour(j + 1),
            exchange_timeout: self.inner.cfg.exchange_timeout,
            hash_every: self.inner.cfg.hash_every,
            output_frames: r.frames as usize,
            blend: r.spec.blend,
            nccl,
            checkpoint_every: self.checkpoint_every,
            preview_every: r.spec.preview_every as usize,
            resume: inputs.resume.map(Arc::new),
            repaint: self
                .resolved
                .take_repaint(&self.takes[shard.take], self.model.temporal_compression),
            known: inputs.known.map(Arc::new),
        }
    }

    /// Adds the running wave's device time to the job's cost (each worker from accepting its
    /// shard to the shard's end: now, for a shard cut short) and its times to the run's timing.
    fn charge_wave(&mut self, wave: &Range<usize>) {
        let now = Instant::now();
        let mut slowest = 0.0f64;
        let held = std::mem::take(&mut self.held);
        let mut table = self.inner.lock();
        for (i, h) in held.iter().enumerate() {
            let Some(start) = h.accepted else { continue };
            let end = h.end.unwrap_or(now);
            let secs = end.duration_since(start).as_secs_f64();
            table.charge(&self.job_id, &self.workers[i].device_kind, secs);
            slowest = slowest.max(secs);
            let (j, t) = (wave.start + i, &mut self.timing);
            if let Some(last) = h.last_step {
                let own = self.shards[j].windows.len().max(1) as u64;
                let lockstep = estimate::widest(&self.shards, j, self.workers.len()) as u64;
                t.window_steps += lockstep * (h.steps / own);
                t.denoise_seconds += last.duration_since(start).as_secs_f64();
                t.frames += h.frames;
                t.decode_seconds += end.saturating_duration_since(last).as_secs_f64();
            }
        }
        self.waves_seconds += slowest;
    }

    /// The states of shard `j`'s windows in the checkpoint this run resumes from, numbered within
    /// its take as the shard numbers them. A checkpoint that cannot be read any more is dropped:
    /// the job then starts again from noise (the same bits, more work).
    async fn resume_states(&self, j: usize) -> Result<Option<Vec<WindowState>>, RunError> {
        let Some(ckpt) = &self.resume else { return Ok(None) };
        let (store, job) = (self.inner.checkpoints.clone(), self.job_id.clone());
        let first = self.takes[self.shards[j].take].windows.start;
        let range = first + self.shards[j].windows.start..first + self.shards[j].windows.end;
        let hashes: Vec<String> = ckpt.windows[range].to_vec();
        let loaded = tokio::task::spawn_blocking(move || {
            hashes.iter().map(|h| store.get(&job, h)).collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| RunError::Failed(format!("checkpoint loading task: {e}")))?;
        match loaded {
            Ok(states) => Ok(Some(
                states
                    .into_iter()
                    .map(|s| WindowState {
                        window: s.window.saturating_sub(first),
                        ..s
                    })
                    .collect(),
            )),
            Err(e) => {
                self.inner.lock().drop_checkpoint(&self.job_id);
                Err(RunError::Interrupted {
                    reason: format!("cannot read the job's checkpoint ({e}); it resumes from the start"),
                    blame: None,
                })
            }
        }
    }

    fn progress(&self, p: Progress) {
        if let Err(e) = self.inner.lock().progress(&self.job_id, p) {
            tracing::error!(job = %self.job_id, "progress of job {}: {e}", self.job_id);
        }
    }

    async fn execute(&mut self, clients: &mut Vec<Arc<dyn WorkerApi>>) -> Result<Vec<OutputInfo>, RunError> {
        // All connections first: a worker still registered but gone is found before any work
        // starts, and the job is placed again without it.
        for w in &self.workers {
            let unreachable = |reason: String| RunError::Unreachable {
                worker: w.id.clone(),
                reason: format!("{} at {}: {reason}", w.id, w.address),
            };
            let c = tokio::time::timeout(CONNECT_TIMEOUT, self.inner.connector.connect(w.address.clone()))
                .await
                .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?;
            clients.push(c.map_err(|e| unreachable(e.to_string()))?);
        }
        let n = self.workers.len();
        let mut assembler: Option<Assembler> = None;
        let mut result = Ok(());
        for first in (0..self.shards.len()).step_by(n) {
            let wave = first..(first + n).min(self.shards.len());
            self.held = vec![Held::default(); wave.len()];
            let started = self.start_shards(clients, &wave).await;
            if started.is_err() {
                self.charge_wave(&wave);
            }
            let events = match started {
                Ok(events) => events,
                // After the first wave, outputs exist: a refusal or a lost worker now interrupts
                // the run (its files go; the job resumes from its checkpoint).
                Err(e) if first > 0 => {
                    result = Err(later_wave(e));
                    break;
                }
                Err(e) => return Err(e),
            };
            // Outputs are opened only once every worker took its first shard: a refused plan
            // (the job queues again) must not leave files that the next plan would write too.
            if assembler.is_none() {
                match Assembler::start(self.assembly_plan()) {
                    Ok(a) => assembler = Some(a),
                    Err(e) => {
                        result = Err(RunError::Failed(format!("cannot start output assembly: {e}")));
                        break;
                    }
                }
            }
            result = self
                .follow(events, assembler.as_ref().expect("opened above"), &wave)
                .await;
            self.charge_wave(&wave);
            if result.is_err() {
                break;
            }
        }
        // Joined whatever happened, so no encoder thread outlives the run (its files are
        // removed when the run was interrupted).
        let written = match assembler {
            Some(a) => Some(a.finish().await),
            None => None,
        };
        result?;
        match written {
            Some(w) => w.map_err(|e| RunError::Failed(format!("writing outputs: {e}"))),
            None => Err(RunError::Failed("the gang has no shards".into())),
        }
    }

    /// Encodes the prompts, sets up NCCL where a take's shards can use it, and hands every worker
    /// of the wave its shard. Each event stream (tagged with the worker's index) ends with
    /// `None`, so a worker that vanishes without `Finished` is noticed.
    async fn start_shards(
        &mut self,
        clients: &[Arc<dyn WorkerApi>],
        wave: &Range<usize>,
    ) -> Result<ShardEvents, RunError> {
        // Text (and image) embeddings once per job (once per distinct prompt of a shot list,
        // whichever takes use it), on the first worker; every assignment carries its take's, and
        // the reference images.
        let reference = self.reference_images().await?;
        let mut conditioning: BTreeMap<usize, (Conditioning, Option<Arc<PromptSchedule>>)> = BTreeMap::new();
        let mut nccl: BTreeMap<usize, Option<Vec<u8>>> = BTreeMap::new();
        for j in wave.clone() {
            let t = self.shards[j].take;
            if conditioning.contains_key(&t) {
                continue;
            }
            let take = self.takes[t].job.clone();
            conditioning.insert(
                t,
                self.encode_conditioning(&take, clients[0].clone(), reference.clone())
                    .await?,
            );
            // A take's shards in this wave form its NCCL group; rank 0 is its first.
            let group: Vec<usize> = wave.clone().filter(|&k| self.shards[k].take == t).collect();
            let workers: Vec<WorkerInfo> = group.iter().map(|&k| self.workers[k - wave.start].clone()).collect();
            let id = self
                .nccl_unique_id(clients[group[0] - wave.start].clone(), &workers)
                .await?;
            nccl.insert(t, id);
        }
        // Video-to-video: checked whole again (the store may have lost or damaged it since the
        // submit), then each shard gets just the frames its windows encode. A resumed run starts
        // from the checkpoint's latents and needs none.
        let video = match &self.resume {
            None => self.video_header().await?,
            Some(_) => None,
        };
        let mut events: ShardEvents = SelectAll::new();
        if let Some(c) = &self.resume {
            tracing::info!(job = %self.job_id, plan_id = self.plan_id, step = c.step, workers = clients.len(), "resuming from the checkpoint at step {}", c.step);
        }
        if self.shards.len() > self.workers.len() {
            tracing::info!(job = %self.job_id, plan_id = self.plan_id, shards = ?wave, of = self.shards.len(), "the job's takes outnumber its workers: starting the next wave of shards");
        }
        for j in wave.clone() {
            let i = j - wave.start;
            let (client, w) = (&clients[i], &self.workers[i]);
            let t = self.shards[j].take;
            // One shard's states at a time: the coordinator never holds a whole clip's.
            let resume = self.resume_states(j).await?;
            let span = match &video {
                Some(h) if resume.is_none() => Some(self.video_span(j, h).await?),
                _ => None,
            };
            let known = match &self.resolved.spec.rerender {
                Some(r) => Some(self.known_latents(j, &r.source).await?),
                None => None,
            };
            let inputs = ShardInputs {
                resume,
                video: span,
                known,
            };
            let group: Vec<usize> = wave.clone().filter(|&k| self.shards[k].take == t).collect();
            let group_nccl = nccl[&t].as_ref().map(|id| NcclGroup {
                unique_id: id.clone(),
                rank: group.iter().position(|&k| k == j).expect("in its group"),
                ranks: group.len(),
            });
            let assignment = self.assignment(j, wave, &conditioning[&t], group_nccl, inputs);
            let call = client.run_shard(assignment);
            let s = tokio::time::timeout(SHARD_START_TIMEOUT, call)
                .await
                .map_err(|_| RunError::Interrupted {
                    reason: format!(
                        "worker {} ({}) did not accept its shard within {SHARD_START_TIMEOUT:?}",
                        w.id, w.address
                    ),
                    blame: Some(w.id.clone()),
                })?
                .map_err(|e| match e {
                    ApiError::FailedPrecondition(reason) => RunError::Refused {
                        worker: w.id.clone(),
                        reason,
                    },
                    ApiError::Unavailable(reason) => RunError::Interrupted {
                        reason: format!(
                            "worker {} ({}) could not be reached for its shard: {reason}",
                            w.id, w.address
                        ),
                        blame: Some(w.id.clone()),
                    },
                    e => RunError::Failed(format!("worker {} refused its shard: {e}", w.id)),
                })?;
            self.held[i].accepted = Some(Instant::now());
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
            latent_shape: r.latent_shape(self.model.latent_channels),
            latent_metadata: vec![
                ("model".into(), self.model.name.clone()),
                ("seed".into(), r.seed.to_string()),
                ("prompt".into(), spec.prompt.clone()),
                ("negative_prompt".into(), spec.negative_prompt.clone()),
                ("fps".into(), spec.fps.to_string()),
                ("job_id".into(), self.job_id.clone()),
            ],
            workers: self.workers.len(),
            shot_files: r.shot_files(),
        }
    }

    /// Follows the shards until every worker delivered its verdict, feeding progress to the job
    /// table and frames to the assembler. A failure a worker reports is often a consequence (its
    /// neighbour died): it waits briefly for the coordinator's own observation of a lost worker,
    /// which names the root cause. When every reported failure is a broken exchange and no worker
    /// was lost (a partition between workers), the run is interrupted, not failed: the job resumes
    /// from its checkpoint (and fails if that keeps happening, `JobTable::interruption`).
    async fn follow(
        &mut self,
        mut events: ShardEvents,
        assembler: &Assembler,
        wave: &Range<usize>,
    ) -> Result<(), RunError> {
        // Per worker: its stream delivered a verdict (Finished or Failed), so its end is expected.
        let mut finished = vec![false; wave.len()];
        let total_frames = self.resolved.frames;
        let steps = self.resolved.schedule.steps() as u32;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The first failure a worker reported, when the grace period ends, and whether every
        // reported failure so far was transient.
        let mut reported: Option<(String, tokio::time::Instant, bool)> = None;
        let then = |reported: &Option<(String, tokio::time::Instant, bool)>| {
            reported
                .as_ref()
                .map(|(r, ..)| format!(" (then {r})"))
                .unwrap_or_default()
        };
        let verdict = |(reason, _, transient): (String, tokio::time::Instant, bool)| match transient {
            true => RunError::Interrupted { reason, blame: None },
            false => RunError::Failed(reason),
        };
        loop {
            let grace_over = reported
                .as_ref()
                .map_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600), |r| r.1);
            tokio::select! {
                ev = events.next() => {
                    let Some((i, ev)) = ev else { break };
                    let worker = &self.workers[i];
                    // The shard's take: its windows, frames and latents start at these in the job's.
                    let take = &self.takes[self.shards[wave.start + i].take];
                    let (windows, frames, latents) = (take.windows.start as u32, take.frames.start, take.latents.start as u32);
                    // The assembler bounds the whole clip; a shard may only write its own take.
                    if let Some(why) = ev.as_ref().and_then(|e| outside_take(e, take)) {
                        return Err(RunError::Failed(format!("worker {} ({}) {why}", worker.id, worker.address)));
                    }
                    match ev {
                        Some(ShardEvent::StepDone { window, step }) => {
                            self.held[i].steps += 1;
                            self.held[i].last_step = Some(Instant::now());
                            self.progress(Progress::Step { window: windows + window, step, total_steps: steps, worker_id: worker.id.clone() })
                        }
                        Some(ShardEvent::Frame { index, rgb8, .. }) => {
                            self.frames_done += 1;
                            self.held[i].frames += 1;
                            self.progress(Progress::Frames { done: self.frames_done, total: total_frames });
                            assembler.frame(frames + index, rgb8).await.map_err(|e| RunError::Failed(format!("assembling frames: {e}")))?;
                        }
                        Some(ShardEvent::Latents { first_frame, frames, data }) => {
                            assembler.latents(latents + first_frame, frames, data).await.map_err(|e| RunError::Failed(format!("assembling latents: {e}")))?;
                        }
                        Some(ShardEvent::Checkpoint(state)) => {
                            self.checkpoint(wave.start + i, state).await?;
                        }
                        Some(ShardEvent::Preview(mut p)) => {
                            p.first_frame += latents;
                            // A preview that does not fit costs only itself.
                            if let Err(e) = self.inner.lock().preview(&self.job_id, p) {
                                tracing::warn!(job = %self.job_id, "preview from worker {} dropped: {e}", worker.id);
                            }
                        }
                        Some(ShardEvent::Finished) => {
                            finished[i] = true;
                            self.held[i].end.get_or_insert_with(Instant::now);
                        }
                        Some(ShardEvent::Failed { reason, transient }) => {
                            // Its stream ends next: that end is not a disconnection.
                            finished[i] = true;
                            self.held[i].end.get_or_insert_with(Instant::now);
                            match &mut reported {
                                None => {
                                    let msg = format!("worker {} ({}) failed: {reason}", worker.id, worker.address);
                                    reported = Some((msg, tokio::time::Instant::now() + FAILURE_GRACE, transient));
                                }
                                Some((.., all_transient)) => *all_transient &= transient,
                            }
                        }
                        Some(ShardEvent::Lost { reason }) => {
                            return Err(RunError::Interrupted {
                                reason: format!("worker {} ({}) was lost: {reason}{}", worker.id, worker.address, then(&reported)),
                                blame: Some(worker.id.clone()),
                            });
                        }
                        None if !finished[i] => {
                            return Err(RunError::Interrupted {
                                reason: format!("worker {} ({}) disconnected before finishing its shard{}", worker.id, worker.address, then(&reported)),
                                blame: Some(worker.id.clone()),
                            });
                        }
                        None => {}
                    }
                }
                _ = tokio::time::sleep_until(grace_over), if reported.is_some() => {
                    if let Some(r) = reported.take() {
                        return Err(verdict(r));
                    }
                }
                _ = self.cancel.changed() => return Err(RunError::Cancelled),
                _ = tick.tick() => {
                    if let Some((id, gone)) = self.departed().await? {
                        return Err(RunError::Interrupted { reason: format!("{gone}{}", then(&reported)), blame: Some(id) });
                    }
                }
            }
        }
        match reported {
            // Every stream ended before the grace period ran out: no lost worker was seen.
            Some(r) => Err(verdict(r)),
            None => Ok(()),
        }
    }

    /// Stores one window's state; once every window has one at a step, that step becomes the
    /// job's checkpoint (if this plan still runs the job) and older blobs go. A state that cannot
    /// be stored costs only that checkpoint.
    async fn checkpoint(&mut self, j: usize, mut state: WindowState) -> Result<(), RunError> {
        let (shard, w) = (&self.shards[j], &self.workers[j % self.workers.len()]);
        if !shard.windows.contains(&state.window) {
            return Err(RunError::Failed(format!(
                "worker {} ({}) sent the checkpoint of window {}, outside its windows {:?}",
                w.id, w.address, state.window, shard.windows
            )));
        }
        // Stored under the job's window number, across takes.
        state.window += self.takes[shard.take].windows.start;
        let (window, step) = (state.window, state.step);
        let (store, job) = (self.inner.checkpoints.clone(), self.job_id.clone());
        let put = tokio::task::spawn_blocking(move || store.put(&job, &state)).await;
        let hash = match put {
            Ok(Ok(hash)) => hash,
            Ok(Err(e)) => {
                tracing::warn!(job = %self.job_id, "checkpoint at step {step} skipped: {e}");
                self.partial.remove(&step);
                return Ok(());
            }
            Err(e) => return Err(RunError::Failed(format!("checkpoint task: {e}"))),
        };
        let windows = self.resolved.windows();
        let partial = &mut self.partial;
        let slots = partial.entry(step).or_insert_with(|| vec![None; windows]);
        slots[window] = Some(hash);
        if slots.iter().any(Option::is_none) {
            return Ok(());
        }
        let blobs: Vec<String> = partial.remove(&step).into_iter().flatten().flatten().collect();
        // Steps before a complete one can never complete now.
        partial.retain(|&s, _| s > step);
        let r = CheckpointRef {
            plan_id: self.plan_id,
            step: step as u32,
            windows: blobs.clone(),
        };
        let taken = self.inner.lock().checkpointed(&self.job_id, r);
        if matches!(taken, Ok(true)) {
            tracing::debug!(job = %self.job_id, step, "checkpoint complete");
            let mut keep = blobs;
            keep.extend(partial.values().flatten().flatten().cloned());
            let (store, job) = (self.inner.checkpoints.clone(), self.job_id.clone());
            let _ = tokio::task::spawn_blocking(move || store.retain(&job, &keep)).await;
        }
        Ok(())
    }

    /// A worker of this gang that is no longer registered: its id and a description for the
    /// job's error.
    async fn departed(&self) -> Result<Option<(String, String)>, RunError> {
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
                let why = format!(
                    "worker {} ({}) left the cluster (registration expired or removed)",
                    w.id, w.address
                );
                (w.id.clone(), why)
            }))
    }

    /// The job's reference images, read and decoded from the input store (checked at submit;
    /// a failure now means the store lost them).
    async fn reference_images(&self) -> Result<Option<ReferenceImages>, RunError> {
        let (store, spec) = (self.inner.inputs(), self.resolved.spec.clone());
        tokio::task::spawn_blocking(move || store.reference_images(&spec.inputs, spec.width, spec.height))
            .await
            .map_err(|e| RunError::Failed(format!("reading the job's inputs: {e}")))?
            .map_err(|errors| {
                let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
                RunError::Failed(format!("the job's inputs: {}", why.join("; ")))
            })
    }

    /// The job's input video (video-to-video), checked whole in the input store: its digest and
    /// header.
    async fn video_header(&self) -> Result<Option<(InputDigest, VideoHeader)>, RunError> {
        let (store, spec, frames) = (self.inner.inputs(), self.resolved.spec.clone(), self.resolved.frames);
        let checked = tokio::task::spawn_blocking(move || {
            let header = store.video(&spec.inputs, spec.width, spec.height, frames)?;
            Ok(spec.inputs.video.zip(header))
        });
        checked
            .await
            .map_err(|e| RunError::Failed(format!("reading the job's input video: {e}")))?
            .map_err(|e: longshot_core::job::FieldError| RunError::Failed(format!("the job's inputs: {e}")))
    }

    /// The input video's frames shard `j`'s windows encode, with the model's warm-up before them
    /// (a job with a video has one take).
    async fn video_span(&self, j: usize, (digest, header): &(InputDigest, VideoHeader)) -> Result<VideoSpan, RunError> {
        let (plan, windows) = (&self.resolved.plan, &self.shards[j].windows);
        let latents = plan.window_range(windows.start).start..plan.window_range(windows.end - 1).end;
        let warmup = self.model.video_warmup.unwrap_or(0) as usize;
        let frames = video_frames_for(latents, warmup, self.model.temporal_compression, header.frames as usize);
        let (store, digest, header) = (self.inner.inputs(), digest.clone(), *header);
        tokio::task::spawn_blocking(move || store.video_span(&digest, &header, frames))
            .await
            .map_err(|e| RunError::Failed(format!("reading the job's input video: {e}")))?
            .map_err(|e| RunError::Failed(format!("the job's inputs: {e}")))
    }

    /// A rerender's source latents of shard `j`'s windows (numbered within its take), read from
    /// the source job's latents output, where its take's lie (checked at submit; a failure now
    /// means the source expired or its file was lost).
    async fn known_latents(&self, j: usize, source: &str) -> Result<KnownLatents, RunError> {
        let take = &self.takes[self.shards[j].take];
        let (plan, r) = (&take.job.plan, &take.job);
        let span = KnownLatents::span(plan, &self.shards[j].windows);
        let dir = self.inner.lock().get(source).map(|j| j.dir.clone()).ok_or_else(|| {
            RunError::Failed(format!(
                "rerender.source: job {source:?} expired and its latents are gone; render the clip again"
            ))
        })?;
        let path = OutputKind::Latents.job_path(&dir, None);
        let shape = self.resolved.latent_shape(self.model.latent_channels);
        let frames = take.latents.start + span.start..take.latents.start + span.end;
        let data = tokio::task::spawn_blocking(move || {
            longshot_media::read_latent_frames(&path, LATENTS_TENSOR, &shape, frames)
        })
        .await
        .map_err(|e| RunError::Failed(format!("reading the source job's latents: {e}")))?
        .map_err(|e| RunError::Failed(format!("rerender.source: job {source:?}'s latents: {e}")))?;
        let shape = LatentShape::new(span.len(), self.model.latent_channels, r.latent_height, r.latent_width);
        let latents = Latents::from_vec(shape, data).expect("read whole frames");
        Ok(KnownLatents {
            first: span.start,
            latents,
        })
    }

    /// A take's conditioning (`take`: the take as a job): one prompt's, or for a shot list every
    /// distinct prompt in a [`PromptSchedule`], the reference images (if any) once with the
    /// first. Each distinct prompt is encoded once per run, whichever takes use it.
    async fn encode_conditioning(
        &mut self,
        take: &ResolvedJob,
        client: Arc<dyn WorkerApi>,
        reference: Option<ReferenceImages>,
    ) -> Result<(Conditioning, Option<Arc<PromptSchedule>>), RunError> {
        let spec = &take.spec;
        let Some(mut schedule) = take.prompt_schedule(self.model.temporal_compression) else {
            let pair = (spec.prompt.clone(), spec.negative_prompt.clone());
            let encoded = self.encode_prompts(client, pair.clone(), reference.clone()).await?;
            let conditioning = Conditioning {
                embeddings: encoded.text,
                image_embeddings: encoded.image,
                reference,
                ..Conditioning::new(pair.0, pair.1)
            };
            return Ok((conditioning, None));
        };
        // The reference images (image-to-video) are encoded once, with the first prompt; every
        // window's conditioning takes their embeddings from the base.
        let mut image_embeddings = None;
        for (i, p) in schedule.prompts.iter_mut().enumerate() {
            let pair = (p.prompt.clone(), p.negative_prompt.clone());
            let images = if i == 0 { reference.clone() } else { None };
            let encoded = match self.encoded.get(&pair) {
                Some(e) if images.is_none() => e.clone(),
                _ => self.encode_prompts(client.clone(), pair.clone(), images).await?,
            };
            self.encoded.insert(pair, encoded.clone());
            p.embeddings = encoded.text;
            if i == 0 {
                image_embeddings = encoded.image;
            }
        }
        let conditioning = Conditioning {
            reference,
            image_embeddings,
            ..Conditioning::default()
        };
        Ok((conditioning, Some(Arc::new(schedule))))
    }

    /// Asks `client` (the gang's first worker) for one prompt's text (and image) embeddings,
    /// watching for a cancel and for the worker leaving the cluster meanwhile (a frozen worker
    /// never answers).
    async fn encode_prompts(
        &mut self,
        client: Arc<dyn WorkerApi>,
        (prompt, negative_prompt): (String, String),
        reference: Option<ReferenceImages>,
    ) -> Result<EncodedConditioning, RunError> {
        let request = EncodeTextRequest {
            job_id: self.job_id.clone(),
            model: self.model.name.clone(),
            prompt,
            negative_prompt,
            reference,
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
                    if let Some((id, gone)) = self.departed().await? {
                        return Err(RunError::Interrupted { reason: format!("{gone} while encoding the prompts"), blame: Some(id) });
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
        if let Some(e) = &embeddings.text {
            tracing::info!(job = %self.job_id, worker = %w.id, rows = e.rows, dim = e.dim, secs = started.elapsed().as_secs_f64(), "prompts encoded");
        }
        if let Some(e) = &embeddings.image {
            tracing::info!(job = %self.job_id, worker = %w.id, rows = e.rows, dim = e.dim, "reference images encoded");
        }
        Ok(embeddings)
    }

    /// The `ncclUniqueId` of a take's shards in one wave (`workers`, in rank order; `client`:
    /// rank 0's), when they exchange overlaps over NCCL ([`nccl_decision`]). A rank 0 that cannot
    /// make one costs only the fast path: the take falls back to TCP, which every worker speaks.
    async fn nccl_unique_id(
        &mut self,
        client: Arc<dyn WorkerApi>,
        workers: &[WorkerInfo],
    ) -> Result<Option<Vec<u8>>, RunError> {
        let transport = self.inner.cfg.overlap_transport;
        let coupled = self.resolved.spec.blend == BlendMode::CoDenoise && self.resolved.plan.overlap() > 0;
        if let Err(why) = nccl_decision(transport, coupled, workers) {
            if transport == OverlapTransport::Nccl {
                tracing::info!(job = %self.job_id, "overlaps over TCP: {why}");
            }
            return Ok(None);
        }
        let w = &workers[0];
        let call = tokio::time::timeout(
            NCCL_ID_TIMEOUT,
            client.nccl_unique_id(self.job_id.clone(), self.plan_id),
        );
        tokio::select! {
            r = call => Ok(match r {
                Ok(Ok(id)) => {
                    tracing::info!(job = %self.job_id, ranks = workers.len(), "overlaps over NCCL (rank 0: worker {})", w.id);
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

    async fn cancel_shards(&self, clients: &[Arc<dyn WorkerApi>], skip: Option<&str>) {
        let asked = clients
            .iter()
            .zip(&self.workers)
            .filter(|(_, w)| Some(w.id.as_str()) != skip);
        let calls = asked.map(|(c, _)| {
            let c = c.clone();
            let job = self.job_id.clone();
            let plan = self.plan_id;
            async move { tokio::time::timeout(Duration::from_secs(5), c.cancel_shard(job, plan)).await }
        });
        futures::future::join_all(calls).await;
    }
}

/// A later wave's start failure: outputs of earlier waves exist, so a worker's refusal or absence
/// interrupts the run (its files are removed and the job resumes from its checkpoint) instead of
/// queueing the job again as before any work.
fn later_wave(e: RunError) -> RunError {
    match e {
        RunError::Refused { worker, reason } => RunError::Interrupted {
            reason: format!("worker {worker} refused its shard of the next wave: {reason}"),
            blame: None,
        },
        RunError::Unreachable { worker, reason } => RunError::Interrupted {
            reason: format!("worker {worker} could not be reached for the next wave: {reason}"),
            blame: Some(worker),
        },
        e => e,
    }
}

/// Why `event` lies outside `take`, when it does: a frame or latent frames past the take's own.
fn outside_take(event: &ShardEvent, take: &Take) -> Option<String> {
    let (what, end, len) = match event {
        ShardEvent::Frame { index, .. } => ("frame", u64::from(*index) + 1, take.frames.len() as u64),
        ShardEvent::Latents {
            first_frame, frames, ..
        } => (
            "latent frames",
            u64::from(*first_frame) + u64::from(*frames),
            take.latents.len() as u64,
        ),
        ShardEvent::Preview(p) => (
            "previews of latent frames",
            u64::from(p.first_frame) + u64::from(p.frames),
            take.latents.len() as u64,
        ),
        _ => return None,
    };
    (end > len).then(|| format!("sent {what} up to {end}, past its take's {len}"))
}

/// What a shard receives after its assignment (`ResumeShard`'s later messages).
struct ShardInputs {
    /// Its windows' states when the run resumes from a checkpoint.
    resume: Option<Vec<WindowState>>,
    /// The input video's frames its windows encode (video-to-video, unless it resumes).
    video: Option<VideoSpan>,
    /// A rerender's source latents of its windows (every run).
    known: Option<KnownLatents>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use longshot_core::job::JobSpec;
    use longshot_core::shots::{Shot, Transition};

    /// A worker may only write its own take: the assembler's whole-clip bound would let a
    /// take-0 shard overwrite take 1's frames.
    #[test]
    fn a_shard_event_past_its_take_is_named() {
        let model = longshot_worker::models::ModelSet::builtin().served().remove(0);
        let spec = JobSpec {
            shots: vec![Shot::new("a", 41, Some(Transition::Cut)), Shot::new("b", 81, None)],
            prompt: String::new(),
            steps: 2,
            ..crate::test_spec::spec(&model.name, 122)
        };
        let job = spec.resolve(&model, 1).unwrap();
        let take = &job.takes[0];
        assert_eq!((take.frames.len(), take.latents.len()), (41, 11));
        let frame = |index| ShardEvent::Frame {
            index,
            width: 32,
            height: 32,
            rgb8: Vec::new(),
        };
        let latents = |first_frame, frames| ShardEvent::Latents {
            first_frame,
            frames,
            data: Vec::new(),
        };
        assert_eq!(outside_take(&frame(40), take), None);
        assert_eq!(
            outside_take(&frame(41), take).as_deref(),
            Some("sent frame up to 42, past its take's 41")
        );
        assert_eq!(outside_take(&latents(5, 6), take), None);
        assert_eq!(
            outside_take(&latents(5, 7), take).as_deref(),
            Some("sent latent frames up to 12, past its take's 11")
        );
        assert!(outside_take(&latents(u32::MAX, u32::MAX), take).is_some());
        assert_eq!(outside_take(&ShardEvent::Finished, take), None);
    }
}
