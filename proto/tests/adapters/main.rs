//! The server adapters and client wrappers over real loopback TCP: `serve_coordinator` and
//! `serve_worker` on 127.0.0.1:0 with tiny in-test domain implementations, driven through
//! `JobClient`, `RegistryClient`, `GrpcWorkerConnector` and `GrpcExchangeConnector`.
//!
//! This file holds the fakes and server helpers; `coordinator` and `worker` hold the tests.

mod coordinator;
mod worker;

use anyhow::{ensure, Context, Result};
use futures::{stream, StreamExt};
use longshot_core::api::*;
use longshot_core::denoiser::{ModelInfo, TextEmbeddings};
use longshot_core::exchange::{OverlapMessage, Payload};
use longshot_core::job::{ClipLength, JobSpec, OutputKind};
use longshot_core::scheduler::Solver;
use longshot_proto::client::{GrpcExchangeConnector, GrpcWorkerConnector, JobClient, RegistryClient};
use longshot_proto::pb;
use longshot_proto::server::{serve_coordinator, serve_worker};
use longshot_tests::fixtures::{worker_info, FakeWorker};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const OUTPUT: &[u8] = b"not really an mp4, but bytes all the same";

/// A coordinator that accepts valid specs, remembers them, and streams canned events and output.
#[derive(Default)]
struct FakeCoordinator {
    submitted: Mutex<Vec<JobSpec>>,
    /// Every upload's chunk sizes and whole bytes.
    uploads: Mutex<Vec<(Vec<usize>, Vec<u8>)>>,
}

fn plan() -> PlanSummary {
    PlanSummary {
        windows: 2,
        latent_frames: 30,
        output_frames: 117,
        rendered_frames: 117,
        workers: 1,
        overlap: 4,
        window: 21,
        padded_latent_frames: 38,
    }
}

fn events() -> Vec<JobEvent> {
    vec![
        JobEvent::Queued { position: 0 },
        JobEvent::Planned(plan()),
        JobEvent::StepProgress {
            window: 1,
            step: 1,
            total_steps: 2,
            worker_id: "w-1".into(),
        },
        JobEvent::Done {
            outputs: vec![OutputInfo {
                name: "clip.mp4".into(),
                format: OutputKind::Mp4,
                size_bytes: OUTPUT.len() as u64,
            }],
        },
    ]
}

fn model() -> ModelInfo {
    ModelInfo {
        video_warmup: None,
        name: "procedural".into(),
        window_frames: 21,
        latent_channels: 4,
        temporal_compression: 4,
        spatial_compression: 8,
        default_overlap: 4,
        weights: String::new(),
        reference_images: 0,
    }
}

impl JobApi for FakeCoordinator {
    fn submit(&self, spec: JobSpec, _owner: String) -> BoxFuture<'_, Result<SubmitResult, ApiError>> {
        Box::pin(async move {
            let errors = spec.validate();
            if !errors.is_empty() {
                return Err(ApiError::InvalidArgument(errors));
            }
            let seed = spec.seed.unwrap_or(7);
            self.submitted.lock().expect("lock").push(spec);
            Ok(SubmitResult {
                job_id: "j-1".into(),
                seed,
                plan: plan(),
            })
        })
    }
    fn get(&self, job_id: String) -> BoxFuture<'_, Result<JobStatus, ApiError>> {
        Box::pin(async move { Err(ApiError::NotFound(format!("no job {job_id}"))) })
    }
    fn list(&self, filter: JobFilter) -> BoxFuture<'_, Result<Vec<JobStatus>, ApiError>> {
        Box::pin(async move {
            let want = JobFilter {
                state: Some(JobState::Running),
                owner: Some("alice".into()),
                limit: 3,
            };
            if filter != want {
                return Err(ApiError::Internal(format!("unexpected filter {filter:?}")));
            }
            Ok(Vec::new())
        })
    }
    fn cancel(&self, _job_id: String) -> BoxFuture<'_, Result<JobState, ApiError>> {
        Box::pin(async { Ok(JobState::Cancelled) })
    }
    fn watch(&self, _job_id: String) -> BoxFuture<'_, Result<BoxStream<JobEvent>, ApiError>> {
        Box::pin(async { Ok(Box::pin(stream::iter(events())) as BoxStream<JobEvent>) })
    }
    fn fetch(
        &self,
        _job_id: String,
        format: OutputKind,
        _shot: Option<u32>,
    ) -> BoxFuture<'_, Result<BoxStream<Result<OutputChunk, ApiError>>, ApiError>> {
        Box::pin(async move {
            let total = OUTPUT.len() as u64;
            let chunk = |offset: usize, end: usize| {
                Ok(OutputChunk {
                    name: "clip.mp4".into(),
                    offset: offset as u64,
                    total_size: total,
                    data: OUTPUT[offset..end].to_vec(),
                })
            };
            let items = match format {
                OutputKind::Mp4 => vec![chunk(0, 10), chunk(10, OUTPUT.len())],
                // A failure after the first chunk: the client must see it as an error item.
                OutputKind::Latents => vec![chunk(0, 10), Err(ApiError::Internal("the output file vanished".into()))],
                _ => return Err(ApiError::FailedPrecondition(format!("job j-1 has no {format} output"))),
            };
            Ok(Box::pin(stream::iter(items)) as BoxStream<_>)
        })
    }
    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerInfo>, ApiError>> {
        Box::pin(async { Ok(vec![worker("w-1")]) })
    }
    fn models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, ApiError>> {
        Box::pin(async { Ok(vec![model()]) })
    }
    /// One plan; a prediction only for the model "measured".
    fn estimate(&self, spec: JobSpec) -> BoxFuture<'_, Result<JobEstimate, ApiError>> {
        Box::pin(async move {
            let prediction = (spec.model == "measured").then_some(Prediction {
                wall_seconds: 12.5,
                cost: JobCost {
                    gpu_seconds: 30.0,
                    cpu_seconds: 0.0,
                },
                jobs: 3,
                window_step_seconds: 0.25,
                frame_seconds: 0.01,
                overhead_seconds: 1.5,
            });
            Ok(JobEstimate {
                plan: PlanSummary {
                    windows: 3,
                    workers: 2,
                    ..Default::default()
                },
                device_kind: "cuda".into(),
                jobs_ahead: 1,
                prediction,
            })
        })
    }
    fn drain(&self, worker_id: String, drain: bool) -> BoxFuture<'_, Result<WorkerState, ApiError>> {
        Box::pin(async move {
            match (worker_id.as_str(), drain) {
                ("w1", true) => Ok(WorkerState::Draining),
                ("w1", false) => Ok(WorkerState::Idle),
                _ => Err(ApiError::NotFound(format!("no worker {worker_id:?} is registered"))),
            }
        })
    }

    /// Keeps what arrived and answers as the coordinator's store does (digest of the bytes,
    /// DATA_LOSS when it is not the one the client named).
    fn upload_input(
        &self,
        mut chunks: BoxStream<Result<Vec<u8>, ApiError>>,
        expected: Option<longshot_core::inputs::InputDigest>,
    ) -> BoxFuture<'_, Result<longshot_core::inputs::InputInfo, ApiError>> {
        Box::pin(async move {
            let (mut sizes, mut bytes) = (Vec::new(), Vec::new());
            while let Some(c) = chunks.next().await {
                let c = c?;
                sizes.push(c.len());
                bytes.extend(c);
            }
            let digest = longshot_core::inputs::InputDigest::of(&bytes);
            let size_bytes = bytes.len() as u64;
            self.uploads.lock().expect("lock").push((sizes, bytes));
            if expected.is_some_and(|e| e != digest) {
                return Err(ApiError::DataLoss("the bytes hash to something else".into()));
            }
            Ok(longshot_core::inputs::InputInfo { digest, size_bytes })
        })
    }
}

fn worker(id: &str) -> WorkerInfo {
    WorkerInfo {
        models: vec![model()],
        ..worker_info(id)
    }
}

impl RegistryApi for FakeCoordinator {
    fn register(&self, worker: WorkerInfo) -> BoxFuture<'_, Result<RegisterAck, ApiError>> {
        Box::pin(async move {
            if worker.version != "0.1.0" {
                return Err(ApiError::FailedPrecondition(format!(
                    "version {} is not the cluster's 0.1.0",
                    worker.version
                )));
            }
            Ok(RegisterAck {
                worker_id: worker.id,
                heartbeat_interval: Duration::from_millis(1500),
            })
        })
    }
    fn heartbeat(
        &self,
        worker_id: String,
        state: WorkerState,
        busy_job: Option<String>,
    ) -> BoxFuture<'_, Result<bool, ApiError>> {
        Box::pin(
            async move { Ok(worker_id == "w-1" && state == WorkerState::Busy && busy_job.as_deref() == Some("j-1")) },
        )
    }
    fn deregister(&self, _worker_id: String) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The worker's exchange: answers every message with its negation (velocity and halo values
/// negated, hash inverted).
struct MirrorExchange;

fn mirrored(mut env: OverlapEnvelope) -> OverlapEnvelope {
    env.message.payload = match env.message.payload {
        Payload::Velocity(v) => Payload::Velocity(v.iter().map(|x| -x).collect()),
        Payload::Halo(v) => Payload::Halo(v.iter().map(|x| -x).collect()),
        Payload::LatentHash(h) => Payload::LatentHash(!h),
    };
    env
}

impl ExchangeApi for MirrorExchange {
    fn overlap(
        &self,
        mut inbound: BoxStream<Result<OverlapEnvelope, ApiError>>,
    ) -> BoxFuture<'_, Result<BoxStream<OverlapEnvelope>, ApiError>> {
        Box::pin(async move {
            // Like the real worker: the first message names the shard, so wait for it before
            // answering; the client must be sending while it waits for our response headers.
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
            let rest = inbound.filter_map(|r| async move { r.ok() });
            Ok(Box::pin(stream::once(async move { first }).chain(rest).map(mirrored)) as BoxStream<_>)
        })
    }
}

/// A worker whose shards stream `shard_events` (job `hang`: the first one, then silence, for the
/// test to cut the connection under it) and which reports plan 3 cancelled.
///
/// CreateNcclId: job `gpu`: a 128-byte id; `short`: a malformed 5-byte one; anything else:
/// refused as a worker without NCCL refuses.
///
/// EncodeText: `wan`: 2×3 embeddings derived from the prompt lengths; `procedural`: none; `nan`:
/// a malformed answer; anything else: not served.
fn fake_worker(shard_events: Vec<ShardEvent>) -> FakeWorker {
    FakeWorker::new()
        .with_shards(move |assignment| {
            let events = stream::iter(shard_events.clone());
            if assignment.job_id == "hang" {
                return Ok(Box::pin(events.take(1).chain(stream::pending())) as BoxStream<_>);
            }
            Ok(Box::pin(events) as BoxStream<_>)
        })
        .with_cancel(|_job_id, plan_id| plan_id == 3)
        .with_nccl_ids(|job_id, plan_id| match job_id {
            "gpu" => Ok((0..128).map(|i| (i as u64 + plan_id) as u8).collect()),
            "short" => Ok(vec![1; 5]),
            _ => Err(ApiError::FailedPrecondition(
                "this worker cannot create NCCL communicators".into(),
            )),
        })
        .with_encoder(|r| {
            match r.model.as_str() {
                "procedural" => Ok(None),
                "wan" | "nan" => {
                    let p = r.prompt.len() as f32;
                    let n = if r.model == "nan" {
                        f32::NAN
                    } else {
                        r.negative_prompt.len() as f32
                    };
                    Ok(Some(TextEmbeddings {
                        rows: 2,
                        dim: 3,
                        prompt: vec![p, -0.0, 1e-40, 0.1, 0.2, 0.3],
                        negative: vec![n; 6],
                    }))
                }
                m => Err(ApiError::invalid(
                    "model",
                    format!("{m:?} is not served by this worker"),
                )),
            }
            .into()
        })
}

/// A running server: its address, and the handle that stops it.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), longshot_proto::ProtoError>>,
}

impl Running {
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task).await???;
        Ok(())
    }
}

async fn start_coordinator(fake: Arc<FakeCoordinator>) -> Result<Running> {
    start_coordinator_leading(fake, tokio::sync::watch::channel(true).1).await
}

async fn start_coordinator_leading(
    fake: Arc<FakeCoordinator>,
    leading: tokio::sync::watch::Receiver<bool>,
) -> Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, rx) = oneshot::channel::<()>();
    let limits = longshot_proto::connections::ConnectionLimits::default();
    let task = tokio::spawn(serve_coordinator(
        listener,
        fake.clone(),
        fake,
        leading,
        longshot_proto::server::ServeOptions {
            limits,
            ..Default::default()
        },
        async {
            let _ = rx.await;
        },
    ));
    Ok(Running { addr, stop, task })
}

async fn start_worker(fake: Arc<FakeWorker>) -> Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_worker(
        listener,
        fake,
        Arc::new(MirrorExchange),
        Default::default(),
        async {
            let _ = rx.await;
        },
    ));
    Ok(Running { addr, stop, task })
}

fn spec() -> JobSpec {
    JobSpec {
        shots: Vec::new(),
        rerender: None,
        split_shots: false,
        strength: None,
        draft: None,
        preview_every: 0,
        model: "procedural".into(),
        prompt: "a lighthouse at dusk".into(),
        negative_prompt: String::new(),
        seed: Some(3),
        length: ClipLength::Frames(117),
        fps: 16,
        width: 256,
        height: 160,
        steps: 2,
        guidance: 0.0,
        shift: 3.0,
        solver: Solver::Euler,
        overlap: Some(4),
        outputs: vec![OutputKind::Mp4],
        priority: 0,
        blend: Default::default(),
        inputs: Default::default(),
    }
}
