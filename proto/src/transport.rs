//! tonic transport settings for Longshot's servers and channels, sized for multi-MiB messages
//! (overlap payloads, frames, latents). Measured in `EXCHANGE_TRANSPORT.md`: with hyper's default
//! HTTP/2 windows (1 MiB per stream on the server) a 1.9 MiB overlap waits for window updates,
//! and a listener handed to tonic as `TcpIncoming::from(listener)` accepts sockets with Nagle's
//! algorithm on, which stalls small HTTP/2 frames for tens of milliseconds.

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

/// A tonic server builder with Longshot's HTTP/2 settings; add services and serve.
pub fn server_builder() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
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
