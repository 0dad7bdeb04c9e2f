//! OpenTelemetry trace propagation for Weir: W3C `traceparent`/`tracestate`
//! and `baggage` in Kafka headers, consumer spans parented to the producer's
//! context, retries linked to the attempt they follow.
//!
//! ```no_run
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! // Your tracer provider (OTLP, stdout, …); Weir only needs the layer and the propagator.
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("my-service")));
//! tracing::subscriber::set_global_default(subscriber).unwrap();
//! weir_telemetry::otel::install_propagator();
//! ```

use std::sync::Arc;

use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use weir::Headers;
use weir::trace::{LINK_TRACEPARENT, Propagator};

struct HeaderInjector<'a>(&'a mut Headers);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.0.retain(|h| h.key != key);
        self.0.push(key, value);
    }
}

struct HeaderExtractor<'a>(&'a Headers);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get_str(key).ok().flatten()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key.as_str()).collect()
    }
}

/// Only the link header, read as a `traceparent`.
struct LinkExtractor<'a>(&'a Headers);

impl Extractor for LinkExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent")
            .then(|| self.0.get_str(LINK_TRACEPARENT).ok().flatten())
            .flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// W3C trace context + baggage, between `tracing` spans (through
/// `tracing-opentelemetry`) and message headers.
pub struct OtelPropagator {
    inner: TextMapCompositePropagator,
    trace: TraceContextPropagator,
}

impl std::fmt::Debug for OtelPropagator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtelPropagator")
    }
}

impl Default for OtelPropagator {
    fn default() -> Self {
        OtelPropagator {
            inner: TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ]),
            trace: TraceContextPropagator::new(),
        }
    }
}

impl Propagator for OtelPropagator {
    fn inject(&self, headers: &mut Headers) {
        let cx = tracing::Span::current().context();
        if cx.span().span_context().is_valid() {
            self.inner.inject_context(&cx, &mut HeaderInjector(headers));
        }
    }

    fn current_traceparent(&self) -> Option<String> {
        let cx = tracing::Span::current().context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }

    fn attach(&self, span: &tracing::Span, headers: &Headers) {
        let cx = self.inner.extract(&HeaderExtractor(headers));
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
        if headers.get(LINK_TRACEPARENT).is_some() {
            let lcx = self.trace.extract(&LinkExtractor(headers));
            let sc = lcx.span().span_context().clone();
            if sc.is_valid() {
                span.add_link(sc);
            }
        }
    }
}

/// Installs [`OtelPropagator`] for every Weir consumer and producer in the
/// process. Returns `false` if a propagator was installed before.
pub fn install_propagator() -> bool {
    weir::trace::set_propagator(Arc::new(OtelPropagator::default()))
}

/// A tracer provider exporting spans over OTLP/gRPC in batches, to the
/// endpoint in `OTEL_EXPORTER_OTLP_ENDPOINT` (default `http://localhost:4317`),
/// with `service.name` set. Add `tracing_opentelemetry::layer().with_tracer(provider.tracer(..))`
/// to your subscriber and call [`install_propagator`]; call
/// `provider.shutdown()` at exit to flush.
///
/// Call it inside a Tokio runtime (the gRPC channel's worker runs on it);
/// outside one it returns [`TelemetryError::Exporter`](crate::TelemetryError::Exporter).
#[cfg(feature = "otlp")]
pub fn otlp_tracer_provider(
    service_name: &str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, crate::TelemetryError> {
    build_otlp(service_name, None)
}

/// Like [`otlp_tracer_provider`], to an endpoint given in code
/// (`http://collector:4317`) instead of `OTEL_EXPORTER_OTLP_ENDPOINT`.
#[cfg(feature = "otlp")]
pub fn otlp_tracer_provider_with_endpoint(
    service_name: &str,
    endpoint: &str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, crate::TelemetryError> {
    build_otlp(service_name, Some(endpoint))
}

#[cfg(feature = "otlp")]
fn build_otlp(
    service_name: &str,
    endpoint: Option<&str>,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, crate::TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;

    // The gRPC channel spawns its worker on the current runtime; without one
    // the exporter would panic.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(crate::TelemetryError::Exporter(
            "the OTLP tracer provider must be built inside a Tokio runtime \
             (call it from async code or after `Runtime::enter`): its gRPC channel runs there"
                .into(),
        ));
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let exporter = builder
        .build()
        .map_err(|e| crate::TelemetryError::Exporter(e.to_string()))?;
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_string())
                .build(),
        )
        .build())
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    #[test]
    fn otlp_provider_outside_a_runtime_is_an_error_not_a_panic() {
        let err = super::otlp_tracer_provider_with_endpoint("svc", "http://127.0.0.1:4317")
            .expect_err("no runtime");
        assert!(err.to_string().contains("inside a Tokio runtime"), "{err}");
    }

    #[tokio::test]
    async fn otlp_provider_inside_a_runtime_builds() {
        let provider =
            super::otlp_tracer_provider_with_endpoint("svc", "http://127.0.0.1:4317").unwrap();
        let _ = provider.shutdown();
    }
}
