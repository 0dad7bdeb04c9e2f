//! Trace context in message headers, without depending on OpenTelemetry.
//!
//! Weir creates one `tracing` span per consumed message (`weir.process`,
//! OpenTelemetry messaging conventions: `otel.kind = "consumer"`,
//! `messaging.system = "kafka"`, destination, partition, offset, consumer
//! group, operation, attempt, message ID) and asks the installed
//! [`Propagator`] to parent it to the context in the message's headers (W3C
//! `traceparent`/`tracestate`/`baggage`) and to link it to the failed attempt a
//! retry copy came from. Every message Weir produces (producer helper, retry
//! tiers, DLQ, outbox) gets the current context injected. `weir-telemetry`
//! provides the OpenTelemetry implementation; with none installed all of this
//! costs a pointer check. Payloads are never recorded.

use std::sync::{Arc, OnceLock};

use crate::message::Headers;

/// The W3C trace-context header.
pub const TRACEPARENT: &str = "traceparent";
/// On a retry or DLQ copy: the context of the failed attempt, so the next
/// attempt's span links to it.
pub const LINK_TRACEPARENT: &str = "weir-link-traceparent";

/// Moves trace context between `tracing` spans and message headers.
pub trait Propagator: Send + Sync + 'static {
    /// Writes the current span's context into `headers` (replacing any).
    fn inject(&self, headers: &mut Headers);
    /// The current span's context as a `traceparent` value, if any.
    fn current_traceparent(&self) -> Option<String>;
    /// Parents `span` to the context in `headers` and links it to
    /// [`LINK_TRACEPARENT`] when present.
    fn attach(&self, span: &tracing::Span, headers: &Headers);
}

static PROPAGATOR: OnceLock<Arc<dyn Propagator>> = OnceLock::new();

/// Installs the process-wide propagator (once; later calls are ignored and
/// return `false`).
pub fn set_propagator(p: Arc<dyn Propagator>) -> bool {
    PROPAGATOR.set(p).is_ok()
}

/// Injects the current context into `headers` when a propagator is installed
/// and `headers` has no `traceparent` yet.
pub fn inject(headers: &mut Headers) {
    if let Some(p) = PROPAGATOR.get()
        && headers.get(TRACEPARENT).is_none()
    {
        p.inject(headers);
    }
}

/// The current context as a `traceparent` value.
pub fn current_traceparent() -> Option<String> {
    PROPAGATOR.get().and_then(|p| p.current_traceparent())
}

/// Parents and links `span` from `headers`.
pub fn attach(span: &tracing::Span, headers: &Headers) {
    if let Some(p) = PROPAGATOR.get() {
        p.attach(span, headers);
    }
}
