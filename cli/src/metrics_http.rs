//! `--metrics-listen`: a process's Prometheus registry on `GET /metrics`, in the text exposition
//! format, on its own port (so scraping never competes with the gRPC services).

use anyhow::{Context, Result};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// `--metrics-listen`: an address, or `None` for `off`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen(pub Option<String>);

pub fn parse_listen(s: &str) -> Result<Listen, String> {
    match s {
        "off" => Ok(Listen(None)),
        a if a
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
        {
            Ok(Listen(Some(a.into())))
        }
        a => Err(format!("{a:?} is not host:port or off")),
    }
}

/// Binds `listen` and serves `registry` until the process ends; returns the bound address.
pub async fn serve(listen: &str, registry: Registry) -> Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("--metrics-listen: cannot listen on {listen} (another process there? pass another address, or off)")
    })?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut body = Vec::new();
                let encoder = TextEncoder::new();
                match encoder.encode(&registry.gather(), &mut body) {
                    Ok(()) => ([(CONTENT_TYPE, encoder.format_type().to_string())], body).into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics: {e}")).into_response(),
                }
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics endpoint stopped: {e}");
        }
    });
    tracing::info!("metrics on http://{addr}/metrics");
    Ok(addr)
}
