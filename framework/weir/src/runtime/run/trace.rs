//! The outermost step: one `weir.process` span per message, with the W3C
//! context of its headers as parent, around everything the runner does to it
//! (the decode, every attempt, the failure sink's publish: a DLQ or tier copy
//! carries this span's context on). Keys and payloads only on request.

use std::sync::Arc;

use crate::message::RawMessage;

/// Turns a payload into the redacted text recorded as `weir.payload` in spans.
pub type PayloadHook = Arc<dyn Fn(&[u8]) -> String + Send + Sync>;

/// What a span records beyond coordinates and IDs: both off by default
/// (keys are often user IDs; payloads may hold personal data).
#[derive(Clone, Default)]
pub(crate) struct Spans {
    /// Record the key (UTF-8, lossy) as `messaging.kafka.message.key`.
    pub(crate) key: bool,
    /// Record `hook(payload)` as `weir.payload`.
    pub(crate) payload: Option<PayloadHook>,
}

impl Spans {
    /// The span of `raw`'s run in `group`. With no tracing subscriber at all,
    /// `tracing` would still build the span for its `log` fallback: evaluate
    /// every field (header scans) per message and, with a `log` logger at
    /// info, print a line per message. Weir's span is for subscribers only.
    pub(crate) fn span(&self, raw: &RawMessage, group: &str) -> tracing::Span {
        if !tracing::dispatcher::has_been_set() {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            "weir.process",
            otel.name = %format_args!("{} process", raw.topic),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %raw.topic,
            messaging.destination.partition.id = raw.partition,
            messaging.kafka.offset = raw.offset,
            messaging.consumer.group.name = %group,
            messaging.message.id = raw.message_id().unwrap_or_default(),
            weir.attempt = crate::wire::delivery_attempt(raw),
            messaging.kafka.message.key = tracing::field::Empty,
            weir.payload = tracing::field::Empty,
        );
        if span.is_disabled() {
            return span;
        }
        crate::trace::attach(&span, &raw.headers);
        if self.key
            && let Some(k) = raw.key.as_deref()
        {
            span.record(
                "messaging.kafka.message.key",
                String::from_utf8_lossy(k).as_ref(),
            );
        }
        if let (Some(hook), Some(p)) = (&self.payload, raw.payload.as_deref()) {
            span.record("weir.payload", hook(p).as_str());
        }
        span
    }
}
