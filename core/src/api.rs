//! The cluster's API in domain types, independent of any transport.
//!
//! The `proto` crate converts these to and from the gRPC messages at its edge; the coordinator,
//! worker and CLI only ever see these types. Field meanings match `proto/longshot/v1/*.proto`.

use crate::checkpoint::WindowState;
use crate::codenoise::BlendMode;
use crate::denoiser::{Conditioning, ModelInfo, TextEmbeddings};
use crate::exchange::OverlapMessage;
use crate::inputs::{ImageEmbeddings, InputInfo, ReferenceImages, VideoSpan};
use crate::job::{FieldError, JobSpec, OutputKind};
use crate::noise::NoiseKeys;
use crate::plan::WindowPlan;
use crate::preview::PreviewFrames;
use crate::prompt_schedule::PromptSchedule;
use crate::repaint::{KnownLatents, RepaintMask};
use crate::scheduler::Schedule;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Decoding,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Decoding => "decoding",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's window plan as reported to clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub windows: u32,
    pub latent_frames: u32,
    /// Frames in the output: exactly what the job asked for.
    pub output_frames: u32,
    /// Frames the model renders (the `c·k + 1` grid covering `output_frames`; its tail is trimmed).
    #[serde(default)]
    pub rendered_frames: u32,
    pub workers: u32,
    pub overlap: u32,
    pub window: u32,
    pub padded_latent_frames: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputInfo {
    pub name: String,
    pub format: OutputKind,
    pub size_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job_id: String,
    pub state: JobState,
    pub spec: JobSpec,
    pub seed: u64,
    pub plan: Option<PlanSummary>,
    pub queue_position: u32,
    pub steps_done: u64,
    pub steps_total: u64,
    pub outputs: Vec<OutputInfo>,
    pub error: Option<String>,
    pub submitted_unix_ms: u64,
    pub finished_unix_ms: u64,
    /// Interruptions survived so far (lost workers, coordinator restarts) and what resumes from.
    #[serde(default)]
    pub recovery: JobRecovery,
    /// Who submitted the job: its client token's name ("" on a coordinator without tokens).
    #[serde(default)]
    pub owner: String,
    /// Device time the job has used so far, summed over its workers.
    #[serde(default)]
    pub cost: JobCost,
}

/// Device time a job used, summed over its workers: each worker counts from the moment it
/// accepted a shard of the job to the end of that shard (finished, failed, or cut short by an
/// interruption: work done again after a resume is paid twice). GPU workers count GPU-seconds,
/// CPU workers CPU-seconds (a worker's whole device: its cores, not one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobCost {
    pub gpu_seconds: f64,
    pub cpu_seconds: f64,
}

impl JobCost {
    /// Adds `seconds` on a worker whose device kind is `device_kind` (`cuda` or `cpu`).
    pub fn add(&mut self, device_kind: &str, seconds: f64) {
        match device_kind {
            "cpu" => self.cpu_seconds += seconds,
            _ => self.gpu_seconds += seconds,
        }
    }
}

/// How a job has survived faults: it resumes from its last complete checkpoint, on whichever
/// workers are available, and produces the same bits as an undisturbed run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecovery {
    /// Times the job went back to the queue after its run was interrupted.
    pub resumes: u32,
    /// Why the last interruption happened.
    pub last_interruption: Option<String>,
    /// Steps of the last complete checkpoint (every window at that step); 0: none yet.
    pub checkpoint_step: u32,
    /// Workers left out of this job because they failed it twice.
    pub excluded_workers: Vec<String>,
}

impl JobStatus {
    /// Wall seconds from submission to the end, for a job that ended.
    pub fn wall_seconds(&self) -> Option<f64> {
        (self.finished_unix_ms > 0).then(|| self.finished_unix_ms.saturating_sub(self.submitted_unix_ms) as f64 / 1e3)
    }

    /// Seconds of video the job renders (its output frames at its fps).
    pub fn video_seconds(&self) -> f64 {
        f64::from(self.plan.map_or(0, |p| p.output_frames)) / f64::from(self.spec.fps.max(1))
    }

    /// Wall seconds per second of video, for a job that is done.
    pub fn realtime_factor(&self) -> Option<f64> {
        let video = self.video_seconds();
        (self.state == JobState::Done && video > 0.0).then_some(self.wall_seconds()? / video)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum JobEvent {
    Queued {
        position: u32,
    },
    Planned(PlanSummary),
    StepProgress {
        window: u32,
        step: u32,
        total_steps: u32,
        worker_id: String,
    },
    Decoding {
        frames_done: u32,
        frames_total: u32,
    },
    Done {
        outputs: Vec<OutputInfo>,
    },
    /// Live previews of latent frames ([`crate::preview`]); `clip_frames` latent frames in all.
    /// A watcher that joins late first gets the newest preview of every frame.
    Preview {
        total_steps: u32,
        clip_frames: u32,
        frames: PreviewFrames,
    },
    /// The run was interrupted; the job is queued again and resumes from step `from_step` (0:
    /// from the start, no complete checkpoint yet).
    Resuming {
        reason: String,
        from_step: u32,
    },
    Failed {
        reason: String,
    },
    Cancelled,
}

impl JobEvent {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEvent::Done { .. } | JobEvent::Failed { .. } | JobEvent::Cancelled
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitResult {
    pub job_id: String,
    pub seed: u64,
    pub plan: PlanSummary,
}

/// What a job would take on the cluster as it is now (`longshot estimate`): the plan it would
/// get on the workers serving its model, and a prediction from the measured times of recent
/// finished jobs of the same model, size and device kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobEstimate {
    /// The plan it would run with (every serving worker free).
    pub plan: PlanSummary,
    /// `cuda` or `cpu`: the kind of the workers it would run on.
    pub device_kind: String,
    /// Jobs queued or running that it would wait for.
    pub jobs_ahead: u32,
    /// `None` when no finished job of this model, size and device kind is known yet.
    pub prediction: Option<Prediction>,
}

/// A job's predicted run: `overhead + Σ over waves of the slowest shard`, where a shard takes
/// `window_step_seconds` per lockstep window-step (its take's widest shard's windows × steps) and
/// `frame_seconds` per decoded output frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// From the job's start to its end (not counting the wait for `jobs_ahead`).
    pub wall_seconds: f64,
    /// Device time summed over its workers, as [`JobStatus::cost`] will count it.
    pub cost: JobCost,
    /// Finished jobs the rates come from.
    pub jobs: u32,
    pub window_step_seconds: f64,
    pub frame_seconds: f64,
    /// Per run: connecting, text encoding, NCCL set-up and closing the outputs.
    pub overhead_seconds: f64,
}

/// A chunk of an output file.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputChunk {
    pub name: String,
    pub offset: u64,
    pub total_size: u64,
    pub data: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Idle,
    Busy,
    Draining,
    Offline,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    /// `host:port` serving WorkerService and ExchangeService.
    pub address: String,
    /// `cpu` or `cuda`.
    pub device_kind: String,
    pub device_name: String,
    pub memory_bytes: u64,
    /// The bytes of job state (windows' latents, `admission`) this worker takes on; 0: not
    /// stated (no limit).
    #[serde(default)]
    pub budget_bytes: u64,
    pub models: Vec<ModelInfo>,
    pub version: String,
    pub state: WorkerState,
    /// The UUID of the GPU this worker would join an NCCL communicator with (`GPU-…`); `None`
    /// when it cannot (no GPU, no libnccl, or the CPU backend).
    pub nccl_gpu: Option<String>,
}

/// What the coordinator asks one worker to run.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardAssignment {
    pub job_id: String,
    /// Fencing token: increases per job; a stale plan never disturbs a newer one.
    pub plan_id: u64,
    pub model: String,
    /// The job's conditioning; with a shot list, its reference images only (the prompts are in
    /// `prompts`).
    pub conditioning: Conditioning,
    /// Shot lists: every prompt and each window's mix of them.
    pub prompts: Option<Arc<PromptSchedule>>,
    /// The initial noise's keys (the job's seed, or per shot).
    pub noise: NoiseKeys,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub plan: WindowPlan,
    pub schedule: Schedule,
    pub guidance: f32,
    pub windows: Range<usize>,
    /// Exchange address of the worker running window `windows.start − 1`.
    pub left_address: Option<String>,
    /// Exchange address of the worker running window `windows.end`.
    pub right_address: Option<String>,
    pub exchange_timeout: Duration,
    pub hash_every: usize,
    /// Output frames of the clip: decoded frames from this index on are never emitted.
    pub output_frames: usize,
    pub blend: BlendMode,
    /// Overlap velocities over NCCL instead of the exchange addresses (which still carry the
    /// latent hashes and decode halos); `None`: everything over TCP.
    pub nccl: Option<NcclGroup>,
    /// Stream every window's state every this many steps and after the last (0: never).
    pub checkpoint_every: usize,
    /// Stream a live preview of the owned frames every this many steps (0: never).
    pub preview_every: usize,
    /// Resume from these states (the shard's windows, in order, all at one step) instead of noise.
    pub resume: Option<Arc<Vec<WindowState>>>,
    /// The first step that runs (video-to-video; 0 otherwise).
    pub first_step: usize,
    /// Video-to-video: the input video's frames this shard's windows encode
    /// ([`crate::inputs::video_frames_for`]); sent unless the shard resumes from a checkpoint.
    pub video: Option<Arc<VideoSpan>>,
    /// A rerender: the frames regenerated and how they join the kept ones.
    pub repaint: Option<RepaintMask>,
    /// A rerender: the source job's final latents of this shard's windows
    /// ([`KnownLatents::span`]); sent with every run of the shard, resumed or not.
    pub known: Option<Arc<KnownLatents>>,
}

/// One gang's NCCL communicator, as a shard joins it: rank `i` runs the gang's `i`-th window
/// range, so its overlap neighbours are ranks `i − 1` and `i + 1`.
#[derive(Clone, PartialEq, Eq)]
pub struct NcclGroup {
    /// The `ncclUniqueId` (128 bytes) that rank 0 created (`WorkerApi::nccl_unique_id`).
    pub unique_id: Vec<u8>,
    pub rank: usize,
    pub ranks: usize,
}

/// Length of an `ncclUniqueId`.
pub const NCCL_UNIQUE_ID_BYTES: usize = 128;

impl std::fmt::Debug for NcclGroup {
    /// The id's first bytes only: enough to tell communicators apart in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head: String = self.unique_id.iter().take(8).map(|b| format!("{b:02x}")).collect();
        write!(f, "NcclGroup(rank {} of {}, id {head}…)", self.rank, self.ranks)
    }
}

/// What the coordinator asks one worker to encode for a job.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodeTextRequest {
    /// For the worker's logs.
    pub job_id: String,
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    /// Image-to-video: the reference images, for the model's image encoder.
    pub reference: Option<ReferenceImages>,
}

/// What a worker's encoders made of a job's conditioning: `None` where the model takes none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedConditioning {
    pub text: Option<TextEmbeddings>,
    pub image: Option<ImageEmbeddings>,
}

/// What a worker streams back while running a shard.
#[derive(Clone, Debug, PartialEq)]
pub enum ShardEvent {
    StepDone {
        window: u32,
        step: u32,
    },
    /// One decoded output frame (8-bit RGB, row-major).
    Frame {
        index: u32,
        width: u32,
        height: u32,
        rgb8: Vec<u8>,
    },
    /// Final latents of owned frames, frame-major f32.
    Latents {
        first_frame: u32,
        frames: u32,
        data: Vec<f32>,
    },
    /// One window's state for the job's checkpoint (`ShardAssignment::checkpoint_every`).
    Checkpoint(WindowState),
    /// A live preview of the owned latent frames (`ShardAssignment::preview_every`); frame
    /// numbers are the shard's take's.
    Preview(PreviewFrames),
    Finished,
    /// The worker reported a failure (possibly caused by a neighbour).
    Failed {
        reason: String,
        /// The overlap exchange with a neighbour broke (timeout, disconnection): the shard could
        /// succeed if run again, unlike a model or protocol error.
        transient: bool,
    },
    /// The coordinator lost the worker itself (connection dropped, stream cut): never sent by a
    /// worker, produced by the client that observed the loss. It is the root cause when a
    /// neighbour reports a failure at about the same time.
    Lost {
        reason: String,
    },
}

/// An overlap message with the routing that the network adds.
#[derive(Clone, Debug, PartialEq)]
pub struct OverlapEnvelope {
    pub job_id: String,
    pub plan_id: u64,
    pub message: OverlapMessage,
}

/// Errors any service can answer with; `proto` maps each to a gRPC status code.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum ApiError {
    #[error("invalid job: {}", join(.0))]
    InvalidArgument(Vec<FieldError>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// The caller is not allowed this call (a client without a cluster member's certificate, a
    /// token whose role does not cover it).
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller did not prove who it is (no client token, or one the server does not know).
    #[error("{0}")]
    Unauthenticated(String),
    /// Bytes arrived damaged (an upload whose content does not hash to the digest the client sent).
    #[error("{0}")]
    DataLoss(String),
    /// A standby coordinator: only the leader (at `leader`'s address, if one is elected) serves.
    #[error("{}", not_leader(.leader))]
    NotLeader { leader: Option<String> },
}

fn not_leader(leader: &Option<String>) -> String {
    match leader {
        Some(a) => format!("this coordinator is a standby, not the leader; the leader is at {a}"),
        None => "this coordinator is a standby and no leader is elected yet; retry shortly".into(),
    }
}

fn join(errors: &[FieldError]) -> String {
    errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![FieldError::new(field, message)])
    }
}

/// A boxed stream, as the service traits return them.
pub type BoxStream<T> = std::pin::Pin<Box<dyn futures_core::Stream<Item = T> + Send + 'static>>;
/// A boxed future, so the service traits stay object-safe.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Registration acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterAck {
    pub worker_id: String,
    pub heartbeat_interval: Duration,
}

/// What the coordinator serves to clients (gRPC `JobService`).
pub trait JobApi: Send + Sync + 'static {
    /// Queues `spec`. `owner` is who the serving side authenticated (a client token's name; "" with
    /// no tokens): a remote client's is set by the coordinator from its token, not sent.
    fn submit(&self, spec: JobSpec, owner: String) -> BoxFuture<'_, Result<SubmitResult, ApiError>>;
    fn get(&self, job_id: String) -> BoxFuture<'_, Result<JobStatus, ApiError>>;
    /// Newest first.
    fn list(&self, filter: JobFilter) -> BoxFuture<'_, Result<Vec<JobStatus>, ApiError>>;
    /// The job's state after the cancel.
    fn cancel(&self, job_id: String) -> BoxFuture<'_, Result<JobState, ApiError>>;
    /// The current state as a first event, then every event until a terminal one.
    fn watch(&self, job_id: String) -> BoxFuture<'_, Result<BoxStream<JobEvent>, ApiError>>;
    /// Output `format` of a finished job: the whole clip, or with `shot` that shot's own file
    /// (jobs with `split_shots`).
    fn fetch(
        &self,
        job_id: String,
        format: OutputKind,
        shot: Option<u32>,
    ) -> BoxFuture<'_, Result<BoxStream<Result<OutputChunk, ApiError>>, ApiError>>;
    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerInfo>, ApiError>>;
    fn models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, ApiError>>;
    /// What `spec` would take if submitted now: checked as [`JobApi::submit`] checks it (its
    /// inputs' contents aside), nothing queued.
    fn estimate(&self, spec: JobSpec) -> BoxFuture<'_, Result<JobEstimate, ApiError>>;
    /// Stops placing new jobs on a worker (`drain`), or lets it take them again; a job running
    /// there runs on. The worker's state as `workers` now reports it.
    fn drain(&self, worker_id: String, drain: bool) -> BoxFuture<'_, Result<WorkerState, ApiError>>;
    /// Stores an input's bytes (chunks of at most [`crate::inputs::UPLOAD_CHUNK_BYTES`]) under
    /// their SHA-256; `expected`, when given, must be that digest. Jobs then name it by digest.
    fn upload_input(
        &self,
        chunks: BoxStream<Result<Vec<u8>, ApiError>>,
        expected: Option<crate::inputs::InputDigest>,
    ) -> BoxFuture<'_, Result<InputInfo, ApiError>>;
}

/// Which jobs [`JobApi::list`] answers with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs this token name submitted.
    pub owner: Option<String>,
    /// At most this many; 0 means the server's default.
    pub limit: usize,
}

/// What the coordinator serves to workers (gRPC `RegistryService`).
pub trait RegistryApi: Send + Sync + 'static {
    fn register(&self, worker: WorkerInfo) -> BoxFuture<'_, Result<RegisterAck, ApiError>>;
    /// `Ok(false)` when the worker is unknown (it must register again).
    fn heartbeat(
        &self,
        worker_id: String,
        state: WorkerState,
        busy_job: Option<String>,
    ) -> BoxFuture<'_, Result<bool, ApiError>>;
    fn deregister(&self, worker_id: String) -> BoxFuture<'_, Result<(), ApiError>>;
}

/// What a worker serves to the coordinator (gRPC `WorkerService`).
pub trait WorkerApi: Send + Sync + 'static {
    fn run_shard(&self, assignment: ShardAssignment) -> BoxFuture<'_, Result<BoxStream<ShardEvent>, ApiError>>;
    /// Encodes a job's prompt and negative prompt with `model`'s text encoder (and its reference
    /// images with the image encoder), once per job on one worker; the coordinator sends the
    /// result with every assignment. Text `None` when the model takes no embeddings (it
    /// conditions on the prompt text itself).
    fn encode_text(&self, request: EncodeTextRequest) -> BoxFuture<'_, Result<EncodedConditioning, ApiError>>;
    /// Creates the `ncclUniqueId` of a gang's communicator (asked of the gang's rank 0, whose
    /// process then hosts NCCL's bootstrap root). Workers that cannot join NCCL communicators
    /// (their `WorkerInfo::nccl_gpu` is `None`) refuse.
    fn nccl_unique_id(&self, job_id: String, plan_id: u64) -> BoxFuture<'_, Result<Vec<u8>, ApiError>> {
        let _ = plan_id;
        Box::pin(async move {
            Err(ApiError::FailedPrecondition(format!(
                "job {job_id}: this worker cannot create NCCL communicators"
            )))
        })
    }
    /// `Ok(false)` when no shard of that job with that plan id (or older) was running.
    fn cancel_shard(&self, job_id: String, plan_id: u64) -> BoxFuture<'_, Result<bool, ApiError>>;
}

/// What a worker serves to its left neighbour (gRPC `ExchangeService`): the neighbour's messages
/// come in on `inbound`; the returned stream carries this worker's messages back.
pub trait ExchangeApi: Send + Sync + 'static {
    fn overlap(
        &self,
        inbound: BoxStream<Result<OverlapEnvelope, ApiError>>,
    ) -> BoxFuture<'_, Result<BoxStream<OverlapEnvelope>, ApiError>>;
}

/// Opens a `WorkerApi` to a worker address (the gRPC client in production).
pub trait WorkerConnector: Send + Sync + 'static {
    fn connect(&self, address: String) -> BoxFuture<'static, Result<std::sync::Arc<dyn WorkerApi>, ApiError>>;
}

/// Opens the overlap stream to a right-hand neighbour at `address`: this worker's messages go out
/// on `outbound`, the neighbour's come back on the returned stream.
pub trait ExchangeConnector: Send + Sync + 'static {
    fn open(
        &self,
        address: String,
        outbound: BoxStream<OverlapEnvelope>,
    ) -> BoxFuture<'static, Result<BoxStream<Result<OverlapEnvelope, ApiError>>, ApiError>>;
}
