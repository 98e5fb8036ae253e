//! tonic servers for the domain service traits: each adapter implements a generated server trait
//! by converting the request, calling the `Arc<dyn …Api>` it wraps and converting the answer, with
//! errors mapped by [`crate::status`]. [`serve_coordinator`] and [`serve_worker`] are what the
//! binaries run: an already-bound listener and a shutdown future in, the tuned HTTP/2 settings,
//! [`crate::MAX_MESSAGE_BYTES`], health and reflection included.

use crate::auth::{Principal, Role, Tokens};
use crate::connections::{limited_incoming, ConnectionLimits};
use crate::convert::stream::domain_stream;
use crate::convert::{
    invalid, job_event_to_pb, job_state_filter_from_pb, non_empty, output_kind_from_pb, register_refusal_to_pb,
    worker_state_from_pb,
};
use crate::pb;
use crate::pb::exchange_service_server::{ExchangeService, ExchangeServiceServer};
use crate::pb::job_service_server::{JobService, JobServiceServer};
use crate::pb::registry_service_server::{RegistryService, RegistryServiceServer};
use crate::pb::worker_service_server::{WorkerService, WorkerServiceServer};
use crate::status::{error_chain, to_status};
use crate::submit_rate::{SubmitLimiter, SubmitRate};
use crate::tls::MemberTls;
use crate::trace_context::server_span;
use futures::{Stream, StreamExt};
use longshot_core::api::{
    ApiError, EncodeTextRequest, ExchangeApi, JobApi, JobFilter, JobStatus, OverlapEnvelope, RegistryApi,
    ShardAssignment, WorkerApi, WorkerInfo,
};
use longshot_core::inputs::{InputDigest, UPLOAD_CHUNK_BYTES};
use longshot_core::job::{FieldError, JobSpec};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::ServingStatus;
use tracing::Instrument;

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("the grpc server failed: {}", error_chain(.0))]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A response stream as the generated server traits want it.
type PbStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn reply<T>(result: Result<T, ApiError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(to_status)
}

fn missing(field: &str) -> Status {
    to_status(ApiError::invalid(field, "is required"))
}

// ---- JobService -----------------------------------------------------------------------------

/// `JobService` over a [`JobApi`] (the coordinator). With `tokens`, every call needs a client
/// token, and what it shows and touches follows the token's role ([`crate::auth::Role`]).
pub struct JobServiceAdapter {
    jobs: Arc<dyn JobApi>,
    submit_limiter: Option<SubmitLimiter>,
    tokens: Option<Arc<Tokens>>,
}

impl JobServiceAdapter {
    /// The caller, or `None` on a coordinator without client tokens (everyone may do everything).
    fn caller<T>(&self, request: &Request<T>) -> Result<Option<Principal>, Status> {
        match &self.tokens {
            None => Ok(None),
            Some(tokens) => tokens.authenticate(request.metadata()).map(Some).map_err(to_status),
        }
    }

    /// The job if `caller` may see it; a job it may not see is reported as not found.
    async fn visible_job(&self, caller: &Option<Principal>, job_id: String) -> Result<JobStatus, ApiError> {
        let status = self.jobs.get(job_id.clone()).await;
        let Some(p) = caller else { return status };
        match status {
            Ok(s) => p.visible(s),
            // A missing job reads the same as another token's, so ids reveal nothing.
            Err(ApiError::NotFound(_)) if p.role == Role::Submit => Err(p.hidden(&job_id)),
            Err(e) => Err(e),
        }
    }
}

#[tonic::async_trait]
impl JobService for JobServiceAdapter {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let caller = self.caller(&request)?;
        if let Some(p) = &caller {
            p.check_submit().map_err(to_status)?;
        }
        // The job's span is created inside `submit`, under this one: the caller's trace goes on.
        if let (Some(limiter), Some(addr)) = (&self.submit_limiter, request.remote_addr()) {
            if let Err(wait) = limiter.check(addr.ip()) {
                return Err(Status::resource_exhausted(limiter.refusal(addr.ip(), wait)));
            }
        }
        let span = server_span("longshot.v1.JobService/SubmitJob", &request);
        async move {
            let spec = request.into_inner().spec.ok_or_else(|| missing("spec"))?;
            let spec = JobSpec::try_from(spec).map_err(to_status)?;
            // A rerender reads its source's latents: only a caller who may see that job may.
            if let (Some(r), Some(_)) = (&spec.rerender, &caller) {
                if let Err(e) = self.visible_job(&caller, r.source.clone()).await {
                    let why = match e {
                        ApiError::NotFound(m) => m,
                        e => e.to_string(),
                    };
                    return Err(to_status(ApiError::InvalidArgument(vec![FieldError::new(
                        "rerender.source",
                        why,
                    )])));
                }
            }
            let owner = caller.map(|p| p.name).unwrap_or_default();
            reply(self.jobs.submit(spec, owner).await.map(Into::into))
        }
        .instrument(span)
        .await
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::JobStatus>, Status> {
        let caller = self.caller(&request)?;
        reply(
            self.visible_job(&caller, request.into_inner().job_id)
                .await
                .map(Into::into),
        )
    }

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let state = job_state_filter_from_pb(r.state, "state").map_err(to_status)?;
        let mut owner = (!r.owner.is_empty()).then_some(r.owner);
        if let Some(p) = caller.filter(|p| p.role == Role::Submit) {
            if owner.as_ref().is_some_and(|o| *o != p.name) {
                return Err(to_status(ApiError::PermissionDenied(format!(
                    "token {:?} has role submit, which lists only its own jobs: leave out --owner, or use a \
                     read or admin token",
                    p.name
                ))));
            }
            owner = Some(p.name);
        }
        let filter = JobFilter {
            state,
            owner,
            limit: r.limit as usize,
        };
        let jobs = self.jobs.list(filter).await.map_err(to_status)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(Into::into).collect(),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let caller = self.caller(&request)?;
        let job_id = request.into_inner().job_id;
        if let Some(p) = &caller {
            let job = self.visible_job(&caller, job_id.clone()).await.map_err(to_status)?;
            p.check_cancel(&job.owner).map_err(to_status)?;
        }
        let state = self.jobs.cancel(job_id).await.map_err(to_status)?;
        Ok(Response::new(pb::CancelJobResponse {
            state: pb::JobState::from(state) as i32,
        }))
    }

    type WatchJobStream = PbStream<pb::JobEvent>;

    async fn watch_job(&self, request: Request<pb::WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        let caller = self.caller(&request)?;
        let job_id = request.into_inner().job_id;
        if caller.is_some() {
            self.visible_job(&caller, job_id.clone()).await.map_err(to_status)?;
        }
        let events = self.jobs.watch(job_id.clone()).await.map_err(to_status)?;
        let events = events.map(move |e| Ok(job_event_to_pb(job_id.clone(), e)));
        Ok(Response::new(Box::pin(events)))
    }

    type FetchOutputStream = PbStream<pb::OutputChunk>;

    async fn fetch_output(
        &self,
        request: Request<pb::FetchOutputRequest>,
    ) -> Result<Response<Self::FetchOutputStream>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let format = output_kind_from_pb(&r.format, "format").map_err(to_status)?;
        if caller.is_some() {
            self.visible_job(&caller, r.job_id.clone()).await.map_err(to_status)?;
        }
        let chunks = self.jobs.fetch(r.job_id, format, r.shot).await.map_err(to_status)?;
        let chunks = chunks.map(|c| c.map(pb::OutputChunk::from).map_err(to_status));
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        self.caller(&request)?;
        let workers = self.jobs.workers().await.map_err(to_status)?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: workers.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        self.caller(&request)?;
        let models = self.jobs.models().await.map_err(to_status)?;
        Ok(Response::new(pb::ListModelsResponse {
            models: models.into_iter().map(Into::into).collect(),
        }))
    }

    async fn estimate_job(&self, request: Request<pb::SubmitJobRequest>) -> Result<Response<pb::JobEstimate>, Status> {
        // Queues nothing and reads no input: any caller may ask, unmetered.
        self.caller(&request)?;
        let spec = request.into_inner().spec.ok_or_else(|| missing("spec"))?;
        let spec = JobSpec::try_from(spec).map_err(to_status)?;
        reply(self.jobs.estimate(spec).await.map(Into::into))
    }

    async fn drain_worker(
        &self,
        request: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::DrainWorkerResponse>, Status> {
        if let Some(p) = self.caller(&request)? {
            p.check_drain().map_err(to_status)?;
        }
        let r = request.into_inner();
        let state = self.jobs.drain(r.worker_id, !r.undo).await.map_err(to_status)?;
        Ok(Response::new(pb::DrainWorkerResponse {
            state: pb::WorkerState::from(state) as i32,
        }))
    }

    async fn upload_input(
        &self,
        request: Request<Streaming<pb::InputChunk>>,
    ) -> Result<Response<pb::UploadInputResponse>, Status> {
        if let Some(p) = self.caller(&request)? {
            p.check_submit().map_err(to_status)?;
        }
        let span = server_span("longshot.v1.JobService/UploadInput", &request);
        let peer = request
            .remote_addr()
            .map_or_else(|| "the client".to_string(), |a| format!("the client at {a}"));
        async move {
            let mut inbound = request.into_inner();
            let first = inbound
                .message()
                .await?
                .ok_or_else(|| to_status(invalid("data", "the upload ended before its first chunk")))?;
            let expected = non_empty(first.sha256)
                .map(InputDigest::try_from)
                .transpose()
                .map_err(|m| to_status(invalid("sha256", m)))?;
            let head = upload_chunk(first.data, "").map_err(to_status)?;
            let rest = domain_stream(inbound, peer, |c: pb::InputChunk| upload_chunk(c.data, &c.sha256));
            let chunks = futures::stream::once(futures::future::ready(Ok(head))).chain(rest);
            let info = self.jobs.upload_input(Box::pin(chunks), expected).await;
            reply(info.map(|i| pb::UploadInputResponse {
                sha256: i.digest.into(),
                size_bytes: i.size_bytes,
            }))
        }
        .instrument(span)
        .await
    }
}

/// One upload chunk's bytes: at most `UPLOAD_CHUNK_BYTES`, and only the first names the digest.
fn upload_chunk(data: bytes::Bytes, sha256: &str) -> Result<Vec<u8>, ApiError> {
    if data.len() > UPLOAD_CHUNK_BYTES {
        return Err(invalid(
            "data",
            format!("a chunk of {} bytes is larger than {UPLOAD_CHUNK_BYTES}", data.len()),
        ));
    }
    if !sha256.is_empty() {
        return Err(invalid("sha256", "only the first chunk may carry the digest"));
    }
    Ok(data.to_vec())
}

// ---- RegistryService ------------------------------------------------------------------------

/// `RegistryService` over a [`RegistryApi`] (the coordinator's worker registry).
pub struct RegistryServiceAdapter {
    pub registry: Arc<dyn RegistryApi>,
    /// Answer only callers with a certificate the cluster CA signed (the coordinator serves TLS
    /// with client certificates optional, and rustls has verified any certificate it shows).
    pub members_only: bool,
}

impl RegistryServiceAdapter {
    fn check_member<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.members_only && request.peer_certs().is_none_or(|certs| certs.is_empty()) {
            return Err(to_status(ApiError::PermissionDenied(
                "only cluster members may register, heartbeat or deregister workers: connect with a certificate \
                 signed by the cluster's CA (`longshot certs issue`, then --ca, --cert and --key)"
                    .into(),
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RegistryService for RegistryServiceAdapter {
    async fn register(&self, request: Request<pb::WorkerInfo>) -> Result<Response<pb::RegisterResponse>, Status> {
        self.check_member(&request)?;
        let worker = WorkerInfo::try_from(request.into_inner()).map_err(to_status)?;
        let id = worker.id.clone();
        match self.registry.register(worker).await {
            Ok(ack) => Ok(Response::new(ack.into())),
            // The proto's refusal is `accepted = false` with a reason, not an error status.
            Err(ApiError::FailedPrecondition(reason)) => Ok(Response::new(register_refusal_to_pb(id, reason))),
            Err(e) => Err(to_status(e)),
        }
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.check_member(&request)?;
        let r = request.into_inner();
        let state = worker_state_from_pb(r.state, "state").map_err(to_status)?;
        let busy = (!r.busy_job_id.is_empty()).then_some(r.busy_job_id);
        let known = self
            .registry
            .heartbeat(r.worker_id, state, busy)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::HeartbeatResponse { known }))
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        self.check_member(&request)?;
        self.registry
            .deregister(request.into_inner().worker_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeregisterResponse {}))
    }
}

// ---- WorkerService --------------------------------------------------------------------------

/// `WorkerService` over a [`WorkerApi`] (a worker node).
pub struct WorkerServiceAdapter(pub Arc<dyn WorkerApi>);

#[tonic::async_trait]
impl WorkerService for WorkerServiceAdapter {
    type RunShardStream = PbStream<pb::ShardEvent>;

    async fn run_shard(&self, request: Request<pb::ShardAssignment>) -> Result<Response<Self::RunShardStream>, Status> {
        let span = server_span("longshot.v1.WorkerService/RunShard", &request);
        async move {
            let assignment = ShardAssignment::try_from(request.into_inner()).map_err(to_status)?;
            let events = self.0.run_shard(assignment).await.map_err(to_status)?;
            Ok(Response::new(
                Box::pin(events.map(|e| Ok(pb::ShardEvent::from(e)))) as Self::RunShardStream
            ))
        }
        .instrument(span)
        .await
    }

    type ResumeShardStream = PbStream<pb::ShardEvent>;

    async fn resume_shard(
        &self,
        request: Request<Streaming<pb::ResumeShardRequest>>,
    ) -> Result<Response<Self::ResumeShardStream>, Status> {
        let span = server_span("longshot.v1.WorkerService/ResumeShard", &request);
        async move {
            let assignment = crate::convert::read_resume(request.into_inner())
                .await
                .map_err(to_status)?;
            let events = self.0.run_shard(assignment).await.map_err(to_status)?;
            Ok(Response::new(
                Box::pin(events.map(|e| Ok(pb::ShardEvent::from(e)))) as Self::ResumeShardStream
            ))
        }
        .instrument(span)
        .await
    }

    async fn encode_text(
        &self,
        request: Request<pb::EncodeTextRequest>,
    ) -> Result<Response<pb::EncodeTextResponse>, Status> {
        let span = server_span("longshot.v1.WorkerService/EncodeText", &request);
        async move {
            let r = EncodeTextRequest::try_from(request.into_inner()).map_err(to_status)?;
            let embeddings = self.0.encode_text(r.clone()).await.map_err(to_status)?;
            Ok(Response::new(crate::convert::embeddings_to_pb(&r, embeddings)))
        }
        .instrument(span)
        .await
    }

    async fn create_nccl_id(
        &self,
        request: Request<pb::CreateNcclIdRequest>,
    ) -> Result<Response<pb::CreateNcclIdResponse>, Status> {
        let r = request.into_inner();
        let unique_id = self.0.nccl_unique_id(r.job_id, r.plan_id).await.map_err(to_status)?;
        Ok(Response::new(pb::CreateNcclIdResponse {
            unique_id: unique_id.into(),
        }))
    }

    async fn cancel_shard(
        &self,
        request: Request<pb::CancelShardRequest>,
    ) -> Result<Response<pb::CancelShardResponse>, Status> {
        let r = request.into_inner();
        let cancelled = self.0.cancel_shard(r.job_id, r.plan_id).await.map_err(to_status)?;
        Ok(Response::new(pb::CancelShardResponse { cancelled }))
    }

    /// `WorkerApi` has no status query (the coordinator learns a worker's state from its
    /// heartbeats), so this answers the empty, idle-looking response rather than UNIMPLEMENTED,
    /// which keeps generic gRPC probes green.
    async fn worker_status(
        &self,
        _request: Request<pb::WorkerStatusRequest>,
    ) -> Result<Response<pb::WorkerStatusResponse>, Status> {
        Ok(Response::new(pb::WorkerStatusResponse::default()))
    }
}

// ---- ExchangeService ------------------------------------------------------------------------

/// `ExchangeService` over an [`ExchangeApi`] (a worker node, answering its left neighbour).
pub struct ExchangeServiceAdapter(pub Arc<dyn ExchangeApi>);

#[tonic::async_trait]
impl ExchangeService for ExchangeServiceAdapter {
    type OverlapStream = PbStream<pb::OverlapFrame>;

    async fn overlap(
        &self,
        request: Request<Streaming<pb::OverlapFrame>>,
    ) -> Result<Response<Self::OverlapStream>, Status> {
        let peer = match request.remote_addr() {
            Some(addr) => format!("the exchange peer at {addr}"),
            None => "the exchange peer".to_string(),
        };
        let inbound = domain_stream(request.into_inner(), peer, OverlapEnvelope::try_from);
        let outbound = self.0.overlap(inbound).await.map_err(to_status)?;
        Ok(Response::new(Box::pin(outbound.map(|e| Ok(pb::OverlapFrame::from(e))))))
    }
}

// ---- entry points ---------------------------------------------------------------------------

/// The health service name that is SERVING only while this coordinator leads (always, without
/// etcd): a Kubernetes readiness probe on it sends the Service's traffic to the leader alone.
pub const LEADER_HEALTH_SERVICE: &str = "longshot.v1.Leader";

/// How a server takes connections.
#[derive(Debug, Default)]
pub struct ServeOptions {
    /// Connection caps and timeouts.
    pub limits: ConnectionLimits,
    /// TLS with this member's certificate (`None`: plaintext, `--insecure`).
    pub tls: Option<MemberTls>,
    /// A listener for the health service alone, in plaintext (`--health-listen`).
    pub health: Option<TcpListener>,
    /// Jobs a client address may submit (a coordinator's; `None`: unlimited).
    pub submit_rate: Option<SubmitRate>,
    /// Client tokens the coordinator's JobService requires (`None`: open to every client).
    pub tokens: Option<Arc<Tokens>>,
    /// Largest request a worker's port decodes (`None`: [`crate::MAX_MESSAGE_BYTES`]); never
    /// above that. A worker sets it from its budget
    /// (`longshot_core::admission::largest_worker_message`).
    pub max_request_bytes: Option<usize>,
}

/// Serves only `grpc.health.v1` (the same statuses as the main port) in plaintext on `listener`,
/// for probes that cannot speak TLS (Kubernetes' gRPC probes). Health says nothing secret; the
/// task ends with the process.
fn spawn_plain_health<H: Health>(listener: Option<TcpListener>, health: HealthServer<H>) {
    let Some(listener) = listener else { return };
    tokio::spawn(async move {
        let limits = ConnectionLimits::default();
        let served = crate::transport::server_for(&limits)
            .add_service(health)
            .serve_with_incoming(limited_incoming(listener, limits))
            .await;
        if let Err(e) = served {
            tracing::error!("the health port stopped: {}", error_chain(&e));
        }
    });
}

/// Serves `JobService` and `RegistryService` (plus health, with both marked SERVING and
/// [`LEADER_HEALTH_SERVICE`] following `leading`, and reflection) on `listener`'s connections
/// within `limits` until `shutdown` completes. Requests are at most
/// [`crate::MAX_CLIENT_REQUEST_BYTES`]. With `tls`, connections are TLS and the RegistryService
/// answers only callers showing a member certificate.
pub async fn serve_coordinator(
    listener: TcpListener,
    jobs: Arc<dyn JobApi>,
    registry: Arc<dyn RegistryApi>,
    mut leading: tokio::sync::watch::Receiver<bool>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProtoError> {
    let ServeOptions {
        limits,
        tls,
        health: health_listener,
        submit_rate,
        tokens,
        max_request_bytes: _,
    } = options;
    let (reporter, health) = crate::health_service();
    reporter.set_serving::<JobServiceServer<JobServiceAdapter>>().await;
    reporter
        .set_serving::<RegistryServiceServer<RegistryServiceAdapter>>()
        .await;
    let leader_health = reporter.clone();
    tokio::spawn(async move {
        loop {
            let status = if *leading.borrow_and_update() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            leader_health.set_service_status(LEADER_HEALTH_SERVICE, status).await;
            if leading.changed().await.is_err() {
                return;
            }
        }
    });
    let mut server = crate::transport::server_for(&limits);
    if let Some(tls) = &tls {
        server = server.tls_config(tls.server_config(true))?;
    }
    let registry = RegistryServiceAdapter {
        registry,
        members_only: tls.is_some(),
    };
    spawn_plain_health(health_listener, health.clone());
    server
        .add_service(health)
        .add_service(crate::reflection_service()?)
        .add_service(crate::reflection_service_v1alpha()?)
        .add_service(
            sized!(JobServiceServer::new(JobServiceAdapter {
                jobs,
                submit_limiter: submit_rate.map(SubmitLimiter::new),
                tokens,
            }))
            .max_decoding_message_size(crate::MAX_CLIENT_REQUEST_BYTES),
        )
        .add_service(
            sized!(RegistryServiceServer::new(registry)).max_decoding_message_size(crate::MAX_CLIENT_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(limited_incoming(listener, limits), shutdown)
        .await?;
    Ok(())
}

/// Serves `WorkerService` and `ExchangeService` (plus health, with both marked SERVING, and
/// reflection) on `listener` until `shutdown` completes. With `tls`, only callers showing a
/// member certificate connect.
pub async fn serve_worker(
    listener: TcpListener,
    worker: Arc<dyn WorkerApi>,
    exchange: Arc<dyn ExchangeApi>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProtoError> {
    let ServeOptions {
        limits,
        tls,
        health: health_listener,
        submit_rate: _,
        tokens: _,
        max_request_bytes,
    } = options;
    let max_request = max_request_bytes.map_or(crate::MAX_MESSAGE_BYTES, |b| b.min(crate::MAX_MESSAGE_BYTES));
    let (reporter, health) = crate::health_service();
    reporter
        .set_serving::<WorkerServiceServer<WorkerServiceAdapter>>()
        .await;
    reporter
        .set_serving::<ExchangeServiceServer<ExchangeServiceAdapter>>()
        .await;
    let mut server = crate::transport::server_for(&limits);
    if let Some(tls) = &tls {
        // Only members reach a worker: a client without a certificate the CA signed fails the
        // handshake.
        server = server.tls_config(tls.server_config(false))?;
    }
    spawn_plain_health(health_listener, health.clone());
    server
        .add_service(health)
        .add_service(crate::reflection_service()?)
        .add_service(crate::reflection_service_v1alpha()?)
        .add_service(
            sized!(WorkerServiceServer::new(WorkerServiceAdapter(worker))).max_decoding_message_size(max_request),
        )
        .add_service(
            sized!(ExchangeServiceServer::new(ExchangeServiceAdapter(exchange))).max_decoding_message_size(max_request),
        )
        .serve_with_incoming_shutdown(limited_incoming(listener, limits), shutdown)
        .await?;
    Ok(())
}
