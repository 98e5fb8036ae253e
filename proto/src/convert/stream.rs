//! Received gRPC streams as domain streams.

use crate::status::from_status_at;
use futures::stream;
use longshot_core::api::{ApiError, BoxStream};
use tonic::Streaming;

/// `inbound` with every message converted by `convert`. A malformed message (the error `convert`
/// returns) or a transport error (named after `peer`, for example "the worker at
/// 10.0.0.2:7001") is yielded as the stream's last item: after either, what follows on the
/// stream cannot be trusted to be complete and in order.
pub(crate) fn domain_stream<P, D, F>(inbound: Streaming<P>, peer: String, convert: F) -> BoxStream<Result<D, ApiError>>
where
    P: Send + 'static,
    D: Send + 'static,
    F: Fn(P) -> Result<D, ApiError> + Send + 'static,
{
    // The state owns everything the next poll needs, so each step's future is 'static.
    Box::pin(stream::unfold(Some((inbound, peer, convert)), |state| async move {
        let (mut inbound, peer, convert) = state?;
        match inbound.message().await {
            Ok(Some(message)) => match convert(message) {
                Ok(item) => Some((Ok(item), Some((inbound, peer, convert)))),
                Err(err) => Some((Err(err), None)),
            },
            Ok(None) => None,
            Err(status) => Some((Err(from_status_at(&status, &peer)), None)),
        }
    }))
}
