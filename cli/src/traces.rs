//! Traces over OTLP/gRPC, only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: the SDK's batch
//! exporter (configured by the standard `OTEL_*` variables), the W3C `traceparent` propagator the
//! proto clients and servers use, and the layer that turns `tracing` spans into OpenTelemetry
//! spans. Without the variable none of this exists and no span leaves the process.
//!
//! The exporter's tonic client lives here, in the binary, not in `proto`: it speaks the OTLP
//! collector's protocol, not Longshot's API.

use anyhow::{Context as _, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The tracer provider when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; `service` is the resource's
/// `service.name` unless `OTEL_SERVICE_NAME` says otherwise. Must run inside the tokio runtime
/// (the exporter's channel is driven by it).
pub fn provider(service: &str) -> Result<Option<SdkTracerProvider>> {
    if std::env::var_os(ENDPOINT_VAR).is_none_or(|v| v.is_empty()) {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("cannot set up the OTLP trace exporter")?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_string());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Some(provider))
}

/// The layer exporting Longshot's own spans (info and above; dependencies' spans stay out).
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let ours = Targets::new().with_target("longshot", tracing::Level::INFO);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("longshot"))
        .with_filter(ours)
}

/// Exports the spans still queued and stops the exporter. The batch processor's thread needs the
/// runtime to make its last export, so the blocking wait runs off the runtime's workers.
pub async fn shutdown(provider: SdkTracerProvider) {
    match tokio::task::spawn_blocking(move || provider.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: not every trace span was exported: {e}"),
        Err(e) => eprintln!("warning: the trace exporter's shutdown failed: {e}"),
    }
}
