//! Clients of the coordinator: [`JobClient`] implements `JobApi` for the CLI, [`RegistryClient`]
//! implements `RegistryApi` for workers.

use super::{connect, endpoint_for, malformed, url_of, CONNECT_TIMEOUT};
use crate::convert::stream::domain_stream;
use crate::convert::{job_state_from_pb, models_from_pb, nest, worker_state_from_pb, workers_from_pb};
use crate::pb;
use crate::pb::job_service_client::JobServiceClient;
use crate::pb::registry_service_client::RegistryServiceClient;
use crate::status::from_status_at;
use crate::tls::Peer;
use crate::trace_context::traced;
use futures::{future, StreamExt};
use longshot_core::api::{
    ApiError, BoxFuture, BoxStream, JobApi, JobEstimate, JobEvent, JobFilter, JobState, JobStatus, OutputChunk,
    RegisterAck, RegistryApi, SubmitResult, WorkerInfo, WorkerState,
};
use longshot_core::denoiser::ModelInfo;
use longshot_core::inputs::{InputDigest, InputInfo};
use longshot_core::job::{JobSpec, OutputKind};
use std::error::Error as _;
use std::time::Duration;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Per-call limit on registry calls: a hung coordinator must not stall a worker's heartbeat loop.
const REGISTRY_CALL_TIMEOUT: Duration = Duration::from_secs(10);

// ---- JobClient ------------------------------------------------------------------------------

/// [`JobApi`] over gRPC, for the CLI and other clients of the coordinator. Cheap to clone.
#[derive(Clone, Debug)]
pub struct JobClient {
    client: JobServiceClient<Channel>,
    /// "the coordinator at http://…", for error messages.
    peer: String,
    /// Every call's bound (until its response starts), if any.
    timeout: Option<Duration>,
    /// `Bearer <token>`, sent with every call when the coordinator requires client tokens.
    authorization: Option<AsciiMetadataValue>,
}

impl JobClient {
    /// Connects now, so a wrong address or a stopped coordinator fails here, clearly, and not at
    /// the first call. `endpoint` is `host:port` or a URL (`http://host:port`).
    pub async fn connect(endpoint: &str) -> Result<Self, ApiError> {
        Self::connect_with_timeout(endpoint, None).await
    }

    /// Like [`JobClient::connect`], with every call (until its response starts: a watch or a
    /// download then streams unbounded) and the connection bounded by `timeout`, so a peer that
    /// accepts but never answers cannot hang the caller.
    pub async fn connect_with_timeout(endpoint: &str, timeout: Option<Duration>) -> Result<Self, ApiError> {
        let url = url_of(endpoint);
        let peer = format!("the coordinator at {url}");
        let mut ep = endpoint_for(&url, &peer, Peer::Server)?;
        if let Some(t) = timeout {
            ep = ep.connect_timeout(t.min(CONNECT_TIMEOUT)).timeout(t);
        }
        let channel = connect(ep, &peer).await?;
        Ok(Self {
            client: sized!(JobServiceClient::new(channel)),
            peer,
            timeout,
            authorization: None,
        })
    }

    /// Sends `token` (a client token, `lst_…`) with every call.
    pub fn with_token(mut self, token: &str) -> Result<Self, ApiError> {
        let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
            ApiError::invalid(
                "token",
                "must be printable ASCII without spaces, as `longshot tokens new` prints it",
            )
        })?;
        self.authorization = Some(value);
        Ok(self)
    }

    /// `request` with the client token, if any.
    fn authorized<T>(&self, mut request: Request<T>) -> Request<T> {
        if let Some(v) = &self.authorization {
            request.metadata_mut().insert("authorization", v.clone());
        }
        request
    }

    fn request<T>(&self, message: T) -> Request<T> {
        self.authorized(Request::new(message))
    }

    /// tonic clients take `&mut self`; clones share the channel, so one per call is cheap.
    fn client(&self) -> JobServiceClient<Channel> {
        self.client.clone()
    }

    fn failed(&self, status: Status) -> ApiError {
        match self.timeout {
            // The channel's own deadline (tonic's `TimeoutExpired`), not an answer of the peer.
            Some(t) if status.source().is_some() && status.message().contains("Timeout expired") => {
                ApiError::Unavailable(format!("{} did not answer within {}", self.peer, humantime(t)))
            }
            _ => from_status_at(&status, &self.peer),
        }
    }
}

/// `2s`, `1.5s`.
fn humantime(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

impl JobApi for JobClient {
    /// `owner` is not sent: the coordinator records the name of the client's token.
    fn submit(&self, spec: JobSpec, _owner: String) -> BoxFuture<'_, Result<SubmitResult, ApiError>> {
        Box::pin(async move {
            let request = pb::SubmitJobRequest {
                spec: Some(spec.into()),
            };
            let r = self
                .client()
                .submit_job(self.authorized(traced(request)))
                .await
                .map_err(|s| self.failed(s))?;
            SubmitResult::try_from(r.into_inner()).map_err(|e| malformed(&self.peer, e))
        })
    }

    fn estimate(&self, spec: JobSpec) -> BoxFuture<'_, Result<JobEstimate, ApiError>> {
        Box::pin(async move {
            let request = pb::SubmitJobRequest {
                spec: Some(spec.into()),
            };
            let r = self.client().estimate_job(self.request(request)).await;
            let estimate = r.map_err(|s| self.failed(s))?.into_inner();
            JobEstimate::try_from(estimate).map_err(|e| malformed(&self.peer, e))
        })
    }

    fn get(&self, job_id: String) -> BoxFuture<'_, Result<JobStatus, ApiError>> {
        Box::pin(async move {
            let r = self.client().get_job(self.request(pb::GetJobRequest { job_id })).await;
            let status = r.map_err(|s| self.failed(s))?.into_inner();
            JobStatus::try_from(status).map_err(|e| malformed(&self.peer, e))
        })
    }

    fn list(&self, filter: JobFilter) -> BoxFuture<'_, Result<Vec<JobStatus>, ApiError>> {
        Box::pin(async move {
            let request = pb::ListJobsRequest {
                state: filter.state.map_or(pb::JobState::Unspecified, Into::into) as i32,
                limit: u32::try_from(filter.limit).unwrap_or(u32::MAX),
                owner: filter.owner.unwrap_or_default(),
            };
            let r = self
                .client()
                .list_jobs(self.request(request))
                .await
                .map_err(|s| self.failed(s))?;
            r.into_inner()
                .jobs
                .into_iter()
                .enumerate()
                .map(|(i, j)| JobStatus::try_from(j).map_err(|e| nest(&format!("jobs[{i}]"), e)))
                .collect::<Result<_, _>>()
                .map_err(|e| malformed(&self.peer, e))
        })
    }

    fn cancel(&self, job_id: String) -> BoxFuture<'_, Result<JobState, ApiError>> {
        Box::pin(async move {
            let r = self
                .client()
                .cancel_job(self.request(pb::CancelJobRequest { job_id }))
                .await;
            let state = r.map_err(|s| self.failed(s))?.into_inner().state;
            job_state_from_pb(state, "state").map_err(|e| malformed(&self.peer, e))
        })
    }

    /// The watch is progress display: after a transport error or a malformed event the stream
    /// ends (the error is logged), and the caller asks `get` for the job's final word.
    fn watch(&self, job_id: String) -> BoxFuture<'_, Result<BoxStream<JobEvent>, ApiError>> {
        Box::pin(async move {
            let r = self
                .client()
                .watch_job(self.request(pb::WatchJobRequest { job_id }))
                .await;
            let inbound = r.map_err(|s| self.failed(s))?.into_inner();
            let peer = self.peer.clone();
            let events = domain_stream(inbound, peer.clone(), move |e| {
                JobEvent::try_from(e).map_err(|e| malformed(&peer, e))
            });
            let events = events.scan((), |_, item| {
                future::ready(match item {
                    Ok(event) => Some(event),
                    Err(err) => {
                        tracing::warn!("job watch stream ended early: {err}");
                        None
                    }
                })
            });
            Ok(Box::pin(events) as BoxStream<JobEvent>)
        })
    }

    fn fetch(
        &self,
        job_id: String,
        format: OutputKind,
        shot: Option<u32>,
    ) -> BoxFuture<'_, Result<BoxStream<Result<OutputChunk, ApiError>>, ApiError>> {
        Box::pin(async move {
            let request = pb::FetchOutputRequest {
                job_id,
                format: format.as_str().to_string(),
                shot,
            };
            let r = self.client().fetch_output(self.request(request)).await;
            let inbound = r.map_err(|s| self.failed(s))?.into_inner();
            let peer = self.peer.clone();
            Ok(domain_stream(inbound, peer.clone(), move |c| {
                OutputChunk::try_from(c).map_err(|e| malformed(&peer, e))
            }))
        })
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerInfo>, ApiError>> {
        Box::pin(async move {
            let r = self
                .client()
                .list_workers(self.request(pb::ListWorkersRequest {}))
                .await;
            let workers = r.map_err(|s| self.failed(s))?.into_inner().workers;
            workers_from_pb(workers, "workers").map_err(|e| malformed(&self.peer, e))
        })
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, ApiError>> {
        Box::pin(async move {
            let r = self.client().list_models(self.request(pb::ListModelsRequest {})).await;
            let models = r.map_err(|s| self.failed(s))?.into_inner().models;
            models_from_pb(models, "models").map_err(|e| malformed(&self.peer, e))
        })
    }

    fn drain(&self, worker_id: String, drain: bool) -> BoxFuture<'_, Result<WorkerState, ApiError>> {
        Box::pin(async move {
            let request = pb::DrainWorkerRequest {
                worker_id,
                undo: !drain,
            };
            let r = self.client().drain_worker(self.request(request)).await;
            let state = r.map_err(|s| self.failed(s))?.into_inner().state;
            worker_state_from_pb(state, "state").map_err(|e| malformed(&self.peer, e))
        })
    }

    /// Sends the chunks until the first error, which then fails the upload here, whatever the
    /// coordinator made of the bytes before it.
    fn upload_input(
        &self,
        chunks: BoxStream<Result<Vec<u8>, ApiError>>,
        expected: Option<InputDigest>,
    ) -> BoxFuture<'_, Result<InputInfo, ApiError>> {
        Box::pin(async move {
            let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
            // Sent from a task through a channel: tonic needs a 'static stream of messages.
            let (tx, messages) = futures::channel::mpsc::channel(2);
            tokio::spawn(forward_upload(chunks, expected, tx, failure.clone()));
            let r = self.client().upload_input(self.request(messages)).await;
            if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(e);
            }
            let r = r.map_err(|s| self.failed(s))?.into_inner();
            let digest = InputDigest::try_from(r.sha256)
                .map_err(|m| malformed(&self.peer, crate::convert::invalid("sha256", m)))?;
            Ok(InputInfo {
                digest,
                size_bytes: r.size_bytes,
            })
        })
    }
}

/// Sends `chunks` as `InputChunk`s (the first with the digest) until the first error, which is
/// kept in `failure` for the caller and ends the upload.
async fn forward_upload(
    mut chunks: BoxStream<Result<Vec<u8>, ApiError>>,
    expected: Option<InputDigest>,
    mut tx: futures::channel::mpsc::Sender<pb::InputChunk>,
    failure: std::sync::Arc<std::sync::Mutex<Option<ApiError>>>,
) {
    use futures::SinkExt;
    let mut sha256 = expected.map(String::from).unwrap_or_default();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(data) => {
                let message = pb::InputChunk {
                    data: data.into(),
                    sha256: std::mem::take(&mut sha256),
                };
                if tx.send(message).await.is_err() {
                    return; // the call ended: its status says why
                }
            }
            Err(e) => {
                *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return;
            }
        }
    }
}

// ---- RegistryClient -------------------------------------------------------------------------

/// [`RegistryApi`] over gRPC, for workers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    client: RegistryServiceClient<Channel>,
    peer: String,
}

impl RegistryClient {
    /// A lazy channel: nothing is dialled until the first call, and a coordinator that is not up
    /// yet answers each call with `Unavailable`, which the worker's registration loop retries.
    /// Must be called inside a Tokio runtime (the channel spawns its connection task).
    pub fn connect_lazy(endpoint: &str) -> Result<Self, ApiError> {
        let url = url_of(endpoint);
        let peer = format!("the coordinator at {url}");
        let channel = endpoint_for(&url, &peer, Peer::Member)?
            .timeout(REGISTRY_CALL_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            client: sized!(RegistryServiceClient::new(channel)),
            peer,
        })
    }

    fn failed(&self, status: Status) -> ApiError {
        from_status_at(&status, &self.peer)
    }
}

impl RegistryApi for RegistryClient {
    fn register(&self, worker: WorkerInfo) -> BoxFuture<'_, Result<RegisterAck, ApiError>> {
        Box::pin(async move {
            let r = self.client.clone().register(pb::WorkerInfo::from(worker)).await;
            let response = r.map_err(|s| self.failed(s))?.into_inner();
            // A refusal (`accepted = false`) arrives as FailedPrecondition and passes through.
            RegisterAck::try_from(response).map_err(|e| match e {
                ApiError::InvalidArgument(_) => malformed(&self.peer, e),
                refused => refused,
            })
        })
    }

    fn heartbeat(
        &self,
        worker_id: String,
        state: WorkerState,
        busy_job: Option<String>,
    ) -> BoxFuture<'_, Result<bool, ApiError>> {
        Box::pin(async move {
            let request = pb::HeartbeatRequest {
                worker_id,
                state: pb::WorkerState::from(state) as i32,
                busy_job_id: busy_job.unwrap_or_default(),
            };
            let r = self.client.clone().heartbeat(request).await;
            Ok(r.map_err(|s| self.failed(s))?.into_inner().known)
        })
    }

    fn deregister(&self, worker_id: String) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            let r = self
                .client
                .clone()
                .deregister(pb::DeregisterRequest { worker_id })
                .await;
            r.map_err(|s| self.failed(s))?;
            Ok(())
        })
    }
}
