//! Running one message: decode, call the processor under a timeout with panics
//! caught, retry retryable failures in place, and hand final failures to the sink.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::codec::Codec;
use crate::config::RetryPolicy;
use crate::error::{HandlerPanic, HandlerTimeout, ProcessError};
use crate::failure::{Disposition, Failure, FailureSink};
use crate::message::{Message, MessageError, RawMessage};
use crate::processor::{CatchPanic, CatchPanicLayer, Layer as _, Processor, Timeout, TimeoutLayer};
use crate::stats::ConsumerStats;

/// What became of a finished message, for the safety valves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// The processor succeeded.
    Processed,
    /// Skipped or handled otherwise (another group's copy, a sink's `Handled`).
    Handled,
    /// Published to a retry tier.
    Retried,
    /// Published to a DLQ.
    DeadLettered,
}

/// How a message's run ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Processed, or handled by the failure sink: the offset is finished.
    Finished(Fate),
    /// The failure sink halted the partition at this message.
    Halted { class: String, error: String },
    /// The runtime stopped waiting (revoke/shutdown deadline): not finished.
    Cancelled,
}

/// The layers the runtime puts around every processor, innermost first: a
/// panic becomes a terminal `panic` failure, an attempt over
/// `handler_timeout` a retryable `timeout` one. Assembled in [`Runner::new`].
pub(crate) type RuntimeStack<P> = Timeout<CatchPanic<P>>;

pub(crate) struct Runner<C, P> {
    pub(crate) codec: C,
    pub(crate) processor: RuntimeStack<P>,
    pub(crate) sink: Arc<dyn FailureSink>,
    pub(crate) retry: RetryPolicy,
    pub(crate) max_header_bytes: usize,
    pub(crate) stats: Arc<ConsumerStats>,
    pub(crate) group_id: Arc<str>,
    /// In-place delays per attempt (retry tiers in key-order mode); overrides `retry`.
    pub(crate) schedule: Option<Arc<[Duration]>>,
    /// Forwards scheduled messages that are not due yet to the next delay tier.
    pub(crate) rescheduler: Option<Arc<crate::retry::RetrySink>>,
    /// Processing time of each attempt (`weir_processing_seconds{group}`).
    pub(crate) latency: metrics::Histogram,
    /// Opt-in: what of the payload to record in spans (after your redaction).
    pub(crate) payload_in_spans: Option<PayloadHook>,
    /// Opt-in: record message keys in spans.
    pub(crate) key_in_spans: bool,
    /// When the last "dependency unavailable" warning was logged (epoch ms):
    /// one warning per consumer every 5 s, however many messages wait.
    pub(crate) unavailable_warned_ms: std::sync::atomic::AtomicU64,
    /// Retry tiers publish and the retry budget is on: a failure that would
    /// go to a tier waits in place while the budget is spent.
    pub(crate) budget_gate: bool,
}

impl<C, P> Runner<C, P> {
    /// A runner with `config`'s retry policy, deadline and header limit, and
    /// no tiers, rescheduling or span extras (the consumer adds those).
    pub(crate) fn new(
        codec: C,
        processor: P,
        sink: Arc<dyn FailureSink>,
        config: &crate::config::ConsumerConfig,
        stats: Arc<ConsumerStats>,
        latency: metrics::Histogram,
    ) -> Self {
        Runner {
            codec,
            processor: TimeoutLayer::new(config.handler_timeout)
                .layer(CatchPanicLayer.layer(processor)),
            sink,
            retry: config.retry.clone(),
            max_header_bytes: config.max_header_bytes,
            stats,
            group_id: Arc::from(config.group_id.as_str()),
            schedule: None,
            rescheduler: None,
            latency,
            payload_in_spans: None,
            key_in_spans: false,
            unavailable_warned_ms: std::sync::atomic::AtomicU64::new(0),
            budget_gate: false,
        }
    }
}

/// Turns a payload into the redacted text recorded as `weir.payload` in spans.
pub type PayloadHook = Arc<dyn Fn(&[u8]) -> String + Send + Sync>;

/// A message's in-place attempt on the inspect board, removed when its run ends.
struct BoardEntry<'a> {
    board: &'a crate::inspect::Board,
    raw: &'a RawMessage,
    noted: bool,
}

impl BoardEntry<'_> {
    fn note(&mut self, attempt: u32) {
        self.board.note_attempt(self.raw, attempt);
        self.noted = true;
    }
}

impl Drop for BoardEntry<'_> {
    fn drop(&mut self) {
        if self.noted {
            self.board.forget(self.raw);
        }
    }
}

/// Counts a message waiting for an in-place retry; the count drops when the
/// wait ends or is cancelled.
struct WaitGuard<'a>(&'a ConsumerStats);

impl<'a> WaitGuard<'a> {
    fn new(s: &'a ConsumerStats) -> Self {
        ConsumerStats::add(&s.in_place_retry_waits, 1);
        WaitGuard(s)
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        ConsumerStats::sub(&self.0.in_place_retry_waits, 1);
    }
}

pub(crate) fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

impl<C, P> Runner<C, P>
where
    C: Codec,
    P: Processor<C::Value>,
{
    pub(crate) async fn run(
        self: Arc<Self>,
        raw: Arc<RawMessage>,
        cancel: Arc<CancellationToken>,
    ) -> Outcome {
        // With no tracing subscriber at all, `tracing` would still build the
        // span for its `log` fallback: evaluate every field (header scans)
        // per message and, with a `log` logger at info, print a line per
        // message. Weir's span is for tracing subscribers only.
        let span = if tracing::dispatcher::has_been_set() {
            tracing::info_span!(
                "weir.process",
                otel.name = %format_args!("{} process", raw.topic),
                otel.kind = "consumer",
                messaging.system = "kafka",
                messaging.operation.type = "process",
                messaging.destination.name = %raw.topic,
                messaging.destination.partition.id = raw.partition,
                messaging.kafka.offset = raw.offset,
                messaging.consumer.group.name = %self.group_id,
                messaging.message.id = raw.message_id().unwrap_or_default(),
                weir.attempt = crate::wire::delivery_attempt(&raw),
                messaging.kafka.message.key = tracing::field::Empty,
                weir.payload = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        if !span.is_disabled() {
            crate::trace::attach(&span, &raw.headers);
            if self.key_in_spans
                && let Some(k) = raw.key.as_deref()
            {
                span.record(
                    "messaging.kafka.message.key",
                    String::from_utf8_lossy(k).as_ref(),
                );
            }
            if let (Some(hook), Some(p)) = (&self.payload_in_spans, raw.payload.as_deref()) {
                span.record("weir.payload", hook(p).as_str());
            }
        }
        // The work is polled first, so a handler waiting on its cancellation
        // signal runs its clean-up before the runtime stops waiting for it.
        let work = async {
            tokio::select! {
                biased;
                o = self.run_attempts(&raw, &cancel) => o,
                _ = cancel.cancelled() => Outcome::Cancelled,
            }
        };
        tracing::Instrument::instrument(work, span).await
    }

    async fn run_attempts(
        &self,
        raw: &Arc<RawMessage>,
        cancel: &Arc<CancellationToken>,
    ) -> Outcome {
        if let Some(done) = self.not_for_the_processor(raw).await {
            return done;
        }
        let max_attempts = match &self.schedule {
            Some(s) => s.len() as u32 + 1,
            None => self.retry.max_attempts,
        };
        // A message redelivered by a retry tier carries its delivery attempt.
        let base = crate::wire::delivery_attempt(raw);
        let mut attempt = 1;
        let mut outage: u32 = 0;
        let mut held: u32 = 0;
        // Shows the attempt of a message retrying in place to `weir inspect`;
        // written only on that slow path.
        let mut board = BoardEntry {
            board: &self.stats.inspect,
            raw,
            noted: false,
        };
        loop {
            match self
                .attempt(raw, base.saturating_add(attempt - 1), cancel)
                .await
            {
                Ok(()) => {
                    ConsumerStats::add(&self.stats.processed, 1);
                    return Outcome::Finished(Fate::Processed);
                }
                Err(e) if e.is_unavailable() => {
                    // A dependency is down: wait for it without spending the
                    // message's attempts; the partition stops advancing meanwhile.
                    outage = outage.saturating_add(1);
                    ConsumerStats::add(&self.stats.unavailable, 1);
                    let delay = self.retry.backoff(outage.min(32));
                    self.warn_unavailable(raw, outage, &e, delay);
                    tokio::time::sleep(delay).await;
                }
                Err(e) if e.is_retryable() && attempt < max_attempts => {
                    ConsumerStats::add(&self.stats.retries, 1);
                    let delay = match &self.schedule {
                        Some(s) => s[(attempt - 1) as usize],
                        None => self.retry.backoff(attempt),
                    };
                    tracing::debug!(
                        topic = %raw.topic, partition = raw.partition, offset = raw.offset,
                        attempt, class = e.class(), ?delay, "retryable failure; retrying in place"
                    );
                    {
                        let _waiting = WaitGuard::new(&self.stats);
                        tokio::time::sleep(delay).await;
                    }
                    attempt += 1;
                    board.note(base.saturating_add(attempt - 1));
                }
                Err(e) if self.held_by_budget(&e) => {
                    // The retry budget is spent: the message retries in place
                    // (attempts not spent) instead of joining a flood of
                    // copies in the retry tiers.
                    held = held.saturating_add(1);
                    ConsumerStats::add(&self.stats.retry_budget_waits, 1);
                    let _waiting = WaitGuard::new(&self.stats);
                    tokio::time::sleep(self.retry.backoff(held.min(32))).await;
                }
                Err(e) => {
                    return self
                        .give_up(raw, &e, base.saturating_add(attempt - 1))
                        .await;
                }
            }
        }
    }

    /// Messages that do not reach the processor: a retry-tier copy or DLQ
    /// replay meant for another consumer group (tiers and source topics are
    /// shared by every group reading them), and a scheduled message that
    /// reached the end of a delay tier before its time (it goes on to the
    /// next tier).
    async fn not_for_the_processor(&self, raw: &RawMessage) -> Option<Outcome> {
        if let Some(g) = crate::wire::for_group(&raw.headers)
            && g != self.group_id.as_bytes()
        {
            ConsumerStats::add(&self.stats.other_group_skipped, 1);
            return Some(Outcome::Finished(Fate::Handled));
        }
        let rs = self.rescheduler.as_ref()?;
        if !crate::wire::not_yet(raw) {
            return None;
        }
        // Boxed: the producer's send future is large, and keeping it out of
        // line keeps every message's future small (it is moved into its box,
        // and polled inline, once per message).
        Some(match Box::pin(rs.reschedule(raw)).await {
            Disposition::Stop => Outcome::Halted {
                class: "reschedule".into(),
                error: "could not forward a scheduled message to its next delay tier".into(),
            },
            _ => Outcome::Finished(Fate::Handled),
        })
    }

    /// Whether the spent retry budget holds back `e`'s hand-off to a retry tier.
    fn held_by_budget(&self, e: &ProcessError) -> bool {
        self.budget_gate && e.is_retryable() && self.stats.retry_budget_spent() > 0
    }

    /// Logs that a dependency is unavailable: one warning per consumer every
    /// 5 s, however many messages wait.
    fn warn_unavailable(&self, raw: &RawMessage, outage: u32, e: &ProcessError, delay: Duration) {
        let now = crate::clock::now_ms().max(0) as u64;
        let last = self
            .unavailable_warned_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= 5_000
            && self
                .unavailable_warned_ms
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::warn!(
                topic = %raw.topic, partition = raw.partition, offset = raw.offset,
                tries = outage, class = e.class(), error = %e, ?delay,
                waits_total = self.stats.unavailable(),
                "dependency unavailable; retrying in place until it returns (one warning per 5 s)"
            );
        }
    }

    /// Hands a message whose attempts ended in `e` to the failure sink.
    async fn give_up(&self, raw: &Arc<RawMessage>, e: &ProcessError, attempts: u32) -> Outcome {
        ConsumerStats::add(&self.stats.failed, 1);
        metrics::counter!(
            "weir_errors_total",
            "group" => self.group_id.to_string(),
            "class" => e.class().to_string()
        )
        .increment(1);
        let failure = Failure {
            message: raw,
            error: e,
            attempts,
            group_id: &self.group_id,
        };
        match self.sink.on_failure(failure).await {
            Disposition::Handled => Outcome::Finished(Fate::Handled),
            Disposition::Retried => Outcome::Finished(Fate::Retried),
            Disposition::DeadLettered => Outcome::Finished(Fate::DeadLettered),
            Disposition::Stop => Outcome::Halted {
                class: e.class().to_string(),
                error: e.to_string(),
            },
        }
    }

    async fn attempt(
        &self,
        raw: &Arc<RawMessage>,
        attempt: u32,
        cancel: &Arc<CancellationToken>,
    ) -> Result<(), ProcessError> {
        if let Some(index) = raw.headers.get(crate::message::UNREADABLE_HEADER_NAME) {
            let index = std::str::from_utf8(index)
                .ok()
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            return Err(MessageError::InvalidHeaderName { index }.into());
        }
        let size = raw.headers.byte_size();
        if size > self.max_header_bytes {
            return Err(MessageError::OversizedHeaders {
                size,
                limit: self.max_header_bytes,
            }
            .into());
        }
        // A codec must not panic; one that does fails this message, not the consumer.
        let decoded = AssertUnwindSafe(self.codec.decode(raw))
            .catch_unwind()
            .await;
        let value = match decoded {
            Ok(v) => v.inspect_err(|e| {
                if !e.is_unavailable() {
                    ConsumerStats::add(&self.stats.decode_errors, 1);
                }
            })?,
            Err(p) => {
                ConsumerStats::add(&self.stats.decode_errors, 1);
                ConsumerStats::add(&self.stats.panics, 1);
                return Err(ProcessError::terminal(HandlerPanic(format!(
                    "the codec panicked: {}",
                    panic_message(p)
                )))
                .with_class("decode_panic"));
            }
        };
        let msg = Message::with_shared_cancel(value, raw.clone(), attempt, cancel.clone());
        let started = tokio::time::Instant::now();
        let result = self.processor.process(msg).await;
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
