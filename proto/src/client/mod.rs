//! The domain service traits over gRPC: what the CLI, the worker and the coordinator hold instead
//! of tonic clients.
//!
//! Every channel uses the crate's [`crate::endpoint`] settings and [`crate::MAX_MESSAGE_BYTES`].
//! Errors name the peer: a refused connection is `Unavailable("cannot reach the coordinator at
//! http://…: …")`, and a response that does not convert is `Internal("… sent a malformed
//! response: …")` rather than `InvalidArgument`, which would blame the caller's request.
//!
//! - `coordinator`: [`JobClient`] (CLI → coordinator) and [`RegistryClient`] (worker →
//!   coordinator).
//! - `worker`: [`GrpcWorkerConnector`] (coordinator → worker) and [`GrpcExchangeConnector`]
//!   (worker → neighbour worker), with keep-alive pings and streams that end cleanly on loss.

mod coordinator;
mod worker;

pub use coordinator::{JobClient, RegistryClient};
pub use worker::{GrpcExchangeConnector, GrpcWorkerConnector};

use crate::status::unreachable;
use crate::tls::Peer;
use longshot_core::api::ApiError;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long establishing a TCP + HTTP/2 connection may take before the peer counts as down.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on worker links: a worker machine that vanishes without closing its sockets
/// would otherwise leave the shard stream (and the gang waiting on it) hanging until TCP gives up.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// `address` as a URL: unchanged if it names a scheme, else with `https://` in a process that
/// uses TLS ([`crate::tls`]) and `http://` in one that does not.
fn url_of(address: &str) -> String {
    let address = address.trim();
    if address.contains("://") {
        address.to_string()
    } else if crate::tls::tls_by_default() {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    }
}

/// An endpoint for `url`: TLS for `https://` (verifying `kind` of peer), plaintext for
/// `http://`; any other scheme is refused.
fn endpoint_for(url: &str, peer: &str, kind: Peer) -> Result<Endpoint, ApiError> {
    let scheme = url.split("://").next().unwrap_or_default();
    if scheme != "http" && scheme != "https" {
        return Err(ApiError::Unavailable(format!(
            "cannot reach {peer}: the address must start with https:// (TLS) or http:// (a server run with --insecure), not {scheme}://"
        )));
    }
    let mut endpoint = crate::endpoint(url.to_string()).map_err(|e| unreachable(peer, &e))?;
    if scheme == "https" {
        endpoint = endpoint
            .tls_config(crate::tls::client_config(kind))
            .map_err(|e| unreachable(peer, &e))?;
    }
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT))
}

/// An endpoint for a link between members (a worker's shard or exchange stream), with
/// keep-alive pings.
fn worker_endpoint(url: &str, peer: &str) -> Result<Endpoint, ApiError> {
    Ok(endpoint_for(url, peer, Peer::Member)?
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// Dials `endpoint` now.
async fn connect(endpoint: Endpoint, peer: &str) -> Result<Channel, ApiError> {
    endpoint.connect().await.map_err(|e| unreachable(peer, &e))
}

/// A response from `peer` that does not convert: the peer is broken, not the caller's request.
fn malformed(peer: &str, err: ApiError) -> ApiError {
    let detail = match err {
        ApiError::InvalidArgument(errors) => errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    };
    ApiError::Internal(format!("{peer} sent a malformed response: {detail}"))
}
