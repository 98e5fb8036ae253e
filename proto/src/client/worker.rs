//! Clients of workers: [`GrpcWorkerConnector`] (the coordinator's `WorkerConnector`) and
//! [`GrpcExchangeConnector`] (a worker's `ExchangeConnector` to its right neighbour).

use super::{connect, malformed, url_of, worker_endpoint};
use crate::convert::stream::domain_stream;
use crate::pb;
use crate::pb::exchange_service_client::ExchangeServiceClient;
use crate::pb::worker_service_client::WorkerServiceClient;
use crate::status::{from_status_at, status_cause};
use crate::trace_context::traced;
use futures::stream::{self, StreamExt};
use longshot_core::api::{
    ApiError, BoxFuture, BoxStream, EncodeTextRequest, EncodedConditioning, ExchangeConnector, OverlapEnvelope,
    ShardAssignment, ShardEvent, WorkerApi, WorkerConnector,
};
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::Streaming;

// ---- workers --------------------------------------------------------------------------------

/// [`WorkerConnector`] over gRPC: dials `http://{address}` with keep-alive pings.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcWorkerConnector;

impl WorkerConnector for GrpcWorkerConnector {
    fn connect(&self, address: String) -> BoxFuture<'static, Result<Arc<dyn WorkerApi>, ApiError>> {
        Box::pin(async move {
            let peer = format!("the worker at {address}");
            let channel = connect(worker_endpoint(&url_of(&address), &peer)?, &peer).await?;
            let client = sized!(WorkerServiceClient::new(channel));
            Ok(Arc::new(GrpcWorker { client, address, peer }) as Arc<dyn WorkerApi>)
        })
    }
}

/// One connected worker.
struct GrpcWorker {
    client: WorkerServiceClient<Channel>,
    address: String,
    peer: String,
}

impl WorkerApi for GrpcWorker {
    fn run_shard(&self, assignment: ShardAssignment) -> BoxFuture<'_, Result<BoxStream<ShardEvent>, ApiError>> {
        Box::pin(async move {
            let (resume, video, known) = (
                assignment.resume.clone(),
                assignment.video.clone(),
                assignment.known.clone(),
            );
            let r = if resume.is_none() && video.is_none() && known.is_none() {
                self.client
                    .clone()
                    .run_shard(traced(pb::ShardAssignment::from(assignment)))
                    .await
            } else {
                use pb::resume_shard_request::Part;
                let first = Part::Assignment(pb::ShardAssignment::from(assignment));
                // One frame, then one window's state, per message, encoded as the stream is sent.
                let frames = video.into_iter().flat_map(|v| {
                    let fb = v.frame_bytes();
                    (0..v.frames()).map(move |i| {
                        Part::VideoFrame(pb::VideoFrame {
                            rgb: v.rgb[i * fb..(i + 1) * fb].to_vec().into(),
                        })
                    })
                });
                let known = known.into_iter().flat_map(|k| {
                    let n = k.latents.shape().frames;
                    (0..n).map(move |l| {
                        let bytes: Vec<u8> = k
                            .latents
                            .frames(l..l + 1)
                            .iter()
                            .flat_map(|v| v.to_le_bytes())
                            .collect();
                        Part::KnownFrame(pb::KnownLatentFrame { data: bytes.into() })
                    })
                });
                let states = resume.unwrap_or_default();
                let windows = (0..states.len()).map(move |i| Part::Window(states[i].clone().into()));
                let parts = stream::iter(std::iter::once(first).chain(frames).chain(known).chain(windows))
                    .map(|p| pb::ResumeShardRequest { part: Some(p) });
                self.client.clone().resume_shard(traced(parts)).await
            };
            let inbound = r.map_err(|s| from_status_at(&s, &self.peer))?.into_inner();
            Ok(shard_events(inbound, self.address.clone()))
        })
    }

    fn encode_text(&self, request: EncodeTextRequest) -> BoxFuture<'_, Result<EncodedConditioning, ApiError>> {
        Box::pin(async move {
            let r = self
                .client
                .clone()
                .encode_text(traced(pb::EncodeTextRequest::from(request)))
                .await;
            let response = r.map_err(|s| from_status_at(&s, &self.peer))?.into_inner();
            crate::convert::embeddings_from_pb(response).map_err(|e| malformed(&self.peer, e))
        })
    }

    fn nccl_unique_id(&self, job_id: String, plan_id: u64) -> BoxFuture<'_, Result<Vec<u8>, ApiError>> {
        Box::pin(async move {
            let r = self
                .client
                .clone()
                .create_nccl_id(pb::CreateNcclIdRequest { job_id, plan_id })
                .await;
            let id = r.map_err(|s| from_status_at(&s, &self.peer))?.into_inner();
            crate::convert::nccl_unique_id_from_pb(id.unique_id.to_vec(), "unique_id")
                .map_err(|e| malformed(&self.peer, e))
        })
    }

    fn cancel_shard(&self, job_id: String, plan_id: u64) -> BoxFuture<'_, Result<bool, ApiError>> {
        Box::pin(async move {
            let r = self
                .client
                .clone()
                .cancel_shard(pb::CancelShardRequest { job_id, plan_id })
                .await;
            Ok(r.map_err(|s| from_status_at(&s, &self.peer))?.into_inner().cancelled)
        })
    }
}

/// The shard's events, always ending in exactly one `Finished`, `Failed` or `Lost`: the coordinator fails
/// the gang on `Failed`, so a lost connection, a malformed event or a stream that stops without
/// a verdict each become a final `Failed` that says so.
fn shard_events(inbound: Streaming<pb::ShardEvent>, address: String) -> BoxStream<ShardEvent> {
    Box::pin(stream::unfold(Some((inbound, address)), |state| async move {
        let (mut inbound, address) = state?;
        let failed = |reason: String| {
            Some((
                ShardEvent::Failed {
                    reason,
                    transient: false,
                },
                None,
            ))
        };
        let lost = |reason: String| Some((ShardEvent::Lost { reason }, None));
        match inbound.message().await {
            Ok(Some(event)) => match ShardEvent::try_from(event) {
                Ok(event) => {
                    let last = matches!(event, ShardEvent::Finished | ShardEvent::Failed { .. });
                    Some((event, (!last).then_some((inbound, address))))
                }
                Err(e) => failed(malformed(&format!("the worker at {address}"), e).to_string()),
            },
            Ok(None) => lost(format!(
                "the worker at {address} ended the shard stream without finishing it"
            )),
            Err(status) => lost(format!(
                "lost the connection to worker at {address}: {}",
                status_cause(&status)
            )),
        }
    }))
}

// ---- exchange -------------------------------------------------------------------------------

/// [`ExchangeConnector`] over gRPC: opens `ExchangeService.Overlap` at `http://{address}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcExchangeConnector;

impl ExchangeConnector for GrpcExchangeConnector {
    fn open(
        &self,
        address: String,
        outbound: BoxStream<OverlapEnvelope>,
    ) -> BoxFuture<'static, Result<BoxStream<Result<OverlapEnvelope, ApiError>>, ApiError>> {
        Box::pin(async move {
            let peer = format!("the neighbour worker at {address}");
            let channel = connect(worker_endpoint(&url_of(&address), &peer)?, &peer).await?;
            let mut client = sized!(ExchangeServiceClient::new(channel));
            // The request body streams concurrently with waiting for the response headers, which
            // the neighbour only sends once our first message has arrived.
            let r = client.overlap(OutboundFrames(outbound)).await;
            let inbound = r.map_err(|s| from_status_at(&s, &peer))?.into_inner();
            Ok(domain_stream(inbound, peer, OverlapEnvelope::try_from))
        })
    }
}

/// The outbound envelopes as frames. A named type rather than `outbound.map(…)` or a boxed
/// `dyn Stream`: with a trait object inside tonic's request future, rustc (1.9x) fails to prove
/// the future `Send` ("higher-ranked lifetime error"), and the connector must return a `Send`
/// future.
struct OutboundFrames(BoxStream<OverlapEnvelope>);

impl futures::Stream for OutboundFrames {
    type Item = pb::OverlapFrame;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<pb::OverlapFrame>> {
        self.0.as_mut().poll_next(cx).map(|e| e.map(pb::OverlapFrame::from))
    }
}
