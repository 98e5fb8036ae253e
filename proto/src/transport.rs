//! tonic transport settings for Longshot's servers and channels, sized for multi-MiB messages
//! (overlap payloads, frames, latents). Measured in `EXCHANGE_TRANSPORT.md`: with hyper's default
//! HTTP/2 windows (1 MiB per stream on the server) a 1.9 MiB overlap waits for window updates,
//! and a listener handed to tonic as `TcpIncoming::from(listener)` accepts sockets with Nagle's
//! algorithm on, which stalls small HTTP/2 frames for tens of milliseconds.

use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};

/// HTTP/2 per-stream flow-control window: several overlap payloads, so a message never waits for
/// a WINDOW_UPDATE round trip.
pub const STREAM_WINDOW_BYTES: u32 = 16 << 20;
/// HTTP/2 connection window: room for two full streams, since one connection may carry the
/// exchanges of several boundaries.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// Largest HTTP/2 frame we accept (the protocol maximum), fewer frames per multi-MiB message.
pub const MAX_FRAME_BYTES: u32 = (1 << 24) - 1;

/// How often a server pings each connection, and how long it waits for the answer.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent requests on one connection (a CLI uses a few, a worker link a handful).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// A tonic server builder with Longshot's HTTP/2 settings; add services and serve.
pub fn server_builder() -> Server {
    Server::builder()
        // Pings find dead peers, and keep a live but quiet client's connection active
        // (`connections`: a peer that answers nothing is closed after the idle timeout, which
        // sets the interval: `server_for`).
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
}

/// [`server_builder`] for connections within `limits`: pings at least three times per idle
/// timeout, so a quiet client (a `watch` on a queued job) keeps its connection.
pub fn server_for(limits: &crate::connections::ConnectionLimits) -> Server {
    let interval = KEEPALIVE_INTERVAL
        .min(limits.idle_timeout / 3)
        .max(Duration::from_millis(100));
    server_builder().http2_keepalive_interval(Some(interval))
}

/// An already-bound listener as a tonic incoming stream, with `TCP_NODELAY` on the accepted
/// sockets (`TcpIncoming::from` leaves Nagle's algorithm on, and `Server::tcp_nodelay` does not
/// apply to `serve_with_incoming`).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A channel endpoint for `uri` (for example `"http://127.0.0.1:7001"`) with the same HTTP/2
/// settings as [`server_builder`]; callers add their own timeouts and connect.
pub fn endpoint(uri: impl Into<String>) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri.into())?
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES))
}
