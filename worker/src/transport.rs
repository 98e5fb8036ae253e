//! [`WorkerTransport`]: how a worker is reached and reaches the rest of its cluster. Only the
//! `proto` crate knows the wire (gRPC), so the binary passes its implementation in, as it passes
//! the coordinator its `WorkerConnector`.

use longshot_core::api::{ApiError, BoxFuture, ExchangeApi, ExchangeConnector, RegistryApi, WorkerApi};
use std::sync::Arc;
use tokio::net::TcpListener;

/// A failure of the server itself (not of a request it served).
pub type ServerError = Box<dyn std::error::Error + Send + Sync>;

pub trait WorkerTransport: Send + Sync {
    /// Opens overlap streams to neighbour workers.
    fn exchange_connector(&self) -> Arc<dyn ExchangeConnector>;

    /// The coordinator's registry at `endpoint`; connects lazily (registration retries).
    fn registry(&self, endpoint: &str) -> Result<Arc<dyn RegistryApi>, ApiError>;

    /// Serves `worker` and `exchange` on `listener` until `shutdown` resolves, refusing requests
    /// over `max_request_bytes`.
    fn serve(
        &self,
        listener: TcpListener,
        max_request_bytes: u64,
        worker: Arc<dyn WorkerApi>,
        exchange: Arc<dyn ExchangeApi>,
        shutdown: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, Result<(), ServerError>>;
}
