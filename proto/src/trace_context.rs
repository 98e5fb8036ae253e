//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata.
//!
//! Clients put the current `tracing` span's OpenTelemetry context on the requests that start
//! traced work ([`traced`]); server adapters read it back and run the call inside a span whose
//! parent it is ([`server_span`]). The domain code behind the adapters knows no transport: it
//! continues the caller's trace simply by creating its spans inside the current one.
//!
//! The propagator is OpenTelemetry's global one, a no-op until the binary installs the W3C
//! propagator together with an exporter: without one, nothing is written or read.

use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::Request;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// `message` as a request that carries the current span's trace context.
pub(crate) fn traced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(request.metadata_mut()))
    });
    request
}

/// The span a traced call runs in on the server (`method`: `Service/Method`), a child of the
/// caller's span when the request carries a trace context.
pub(crate) fn server_span<T>(method: &'static str, request: &Request<T>) -> tracing::Span {
    let span = tracing::info_span!("rpc", otel.name = method, otel.kind = "server", rpc.system = "grpc");
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(request.metadata())));
    // Fails only without an OpenTelemetry layer (nothing is exported then) or for a disabled span.
    let _ = span.set_parent(parent);
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

    /// A W3C propagator writes `traceparent` through the injector and reads it back through the
    /// extractor unchanged (the SDK's propagator is not a dependency here: a minimal one).
    #[test]
    fn traceparent_round_trips_through_metadata() {
        #[derive(Debug)]
        struct W3c;
        impl TextMapPropagator for W3c {
            fn inject_context(&self, cx: &opentelemetry::Context, injector: &mut dyn Injector) {
                let sc = cx.span().span_context().clone();
                injector.set(
                    "traceparent",
                    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()),
                );
            }
            fn extract_with_context(
                &self,
                cx: &opentelemetry::Context,
                extractor: &dyn Extractor,
            ) -> opentelemetry::Context {
                let v = extractor.get("traceparent").unwrap_or_default();
                let parts: Vec<&str> = v.split('-').collect();
                let sc = SpanContext::new(
                    TraceId::from_hex(parts[1]).unwrap(),
                    SpanId::from_hex(parts[2]).unwrap(),
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::default(),
                );
                cx.with_remote_span_context(sc)
            }
            fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
                opentelemetry::propagation::text_map_propagator::FieldIter::new(&[])
            }
        }
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(sc.clone());
        let mut map = MetadataMap::new();
        W3c.inject_context(&cx, &mut MetadataInjector(&mut map));
        assert_eq!(
            map.get("traceparent").unwrap().to_str().unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(MetadataExtractor(&map).keys(), vec!["traceparent"]);
        let back = W3c.extract(&MetadataExtractor(&map));
        assert_eq!(back.span().span_context().trace_id(), sc.trace_id());
        assert_eq!(back.span().span_context().span_id(), sc.span_id());
    }
}
