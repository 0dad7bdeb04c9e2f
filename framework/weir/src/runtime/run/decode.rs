//! One attempt at a raw message: the header limits, the codec (a panic in it
//! fails this message, not the consumer), then the processor stack
//! (`CatchPanic<P>`, your layers inside `P`) within `handler_timeout`, timed
//! for `weir_processing_seconds` (one clock read serves the deadline and the
//! timing). What [`InPlace`](super::attempts::InPlace) repeats.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::attempts::Attempt;
use crate::codec::Codec;
use crate::error::{HandlerPanic, HandlerTimeout, ProcessError};
use crate::message::{Message, MessageError, RawMessage};
use crate::processor::Processor;
use crate::stats::ConsumerStats;

pub(crate) struct Decode<C, P> {
    pub(crate) codec: C,
    pub(crate) processor: P,
    /// Each attempt's deadline (`handler_timeout`).
    pub(crate) handler_timeout: std::time::Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) stats: Arc<ConsumerStats>,
    /// Processing time of each attempt (`weir_processing_seconds{group}`).
    pub(crate) latency: metrics::Histogram,
}

impl<C: Codec, P: Processor<C::Value>> Decode<C, P> {
    /// A message the consumer cannot read at all: a header name that is not
    /// UTF-8 (the poller marked it) or headers over the limit.
    fn unreadable(&self, raw: &RawMessage) -> Option<ProcessError> {
        if let Some(index) = raw.headers.get(crate::message::UNREADABLE_HEADER_NAME) {
            let index = std::str::from_utf8(index)
                .ok()
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            return Some(MessageError::InvalidHeaderName { index }.into());
        }
        let size = raw.headers.byte_size();
        (size > self.max_header_bytes).then(|| {
            MessageError::OversizedHeaders {
                size,
                limit: self.max_header_bytes,
            }
            .into()
        })
    }

    async fn decode(&self, raw: &RawMessage) -> Result<C::Value, ProcessError> {
        match AssertUnwindSafe(self.codec.decode(raw))
            .catch_unwind()
            .await
        {
            Ok(v) => v
                .inspect_err(|e| {
                    if !e.is_unavailable() {
                        ConsumerStats::add(&self.stats.decode_errors, 1);
                    }
                })
                .map_err(Into::into),
            Err(p) => {
                ConsumerStats::add(&self.stats.decode_errors, 1);
                ConsumerStats::add(&self.stats.panics, 1);
                Err(ProcessError::terminal(HandlerPanic(format!(
                    "the codec panicked: {}",
                    super::panic_message(p)
                )))
                .with_class("decode_panic"))
            }
        }
    }
}

impl<C: Codec, P: Processor<C::Value>> Attempt for Decode<C, P> {
    async fn attempt(
        &self,
        raw: &Arc<RawMessage>,
        attempt: u32,
        cancel: &Arc<CancellationToken>,
    ) -> Result<(), ProcessError> {
        if let Some(e) = self.unreadable(raw) {
            return Err(e);
        }
        let value = self.decode(raw).await?;
        let msg = Message::with_shared_cancel(value, raw.clone(), attempt, cancel.clone());
        let started = tokio::time::Instant::now();
        let deadline = started.checked_add(self.handler_timeout);
        let result =
            crate::processor::within(deadline, self.handler_timeout, self.processor.process(msg))
                .await;
        self.latency.record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            let cause = e.source_error();
            if cause.downcast_ref::<HandlerTimeout>().is_some() {
                ConsumerStats::add(&self.stats.timeouts, 1);
            } else if cause.downcast_ref::<HandlerPanic>().is_some() {
                ConsumerStats::add(&self.stats.panics, 1);
            }
        }
        result
    }
}
