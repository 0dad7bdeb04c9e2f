//! Running one message, as steps over the raw message, outermost first:
//!
//! 1. [`trace`]: the `weir.process` span, around all that follows;
//! 2. the gate ([`Runner::not_for_the_processor`]): another group's copy is
//!    skipped, a message the attempt plan diverts goes where the plan says;
//! 3. [`attempts`]: in-place attempts as the [`AttemptPlan`] says, outage
//!    waits, held failures;
//! 4. [`decode`]: header limits and the codec, then the processor stack
//!    [`RuntimeStack`] (`CatchPanic<P>`, your layers inside `P`) within
//!    `handler_timeout`;
//! 5. the failure sink, for what failed for good ([`Runner::give_up`]).
//!
//! Steps 1 to 3 are not [`Layer`](crate::processor::Layer)s on purpose: a
//! layer sees a decoded [`Message`](crate::Message), and these act on the raw
//! message, before and around the decode (a registry outage waits in place;
//! an undecodable payload reaches the sink inside its span), and report the
//! attempt count to the sink. Everything a processor may want is a layer
//! inside `P`. This room must not know offsets, partitions' state or tiers.

mod attempts;
mod decode;
#[cfg(test)]
mod tests;
mod trace;

use std::future::Future as _;
use std::sync::Arc;
use std::task::Poll;

use tokio_util::sync::CancellationToken;

use super::plugin::{AttemptPlan, PolicyPlan};
use crate::codec::Codec;
use crate::failure::{Disposition, Failure, FailureSink};
use crate::message::RawMessage;
use crate::processor::{CatchPanic, CatchPanicLayer, Layer as _, Processor};
use crate::stats::ConsumerStats;
use attempts::{GaveUp, InPlace};
use decode::Decode;
pub(crate) use trace::Spans;

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

/// The layer the runtime puts around every processor: a panic becomes a
/// terminal `panic` failure. Around it, [`decode`] fails an attempt over
/// `handler_timeout` as a retryable `timeout` (the same clock read serves
/// the deadline and `weir_processing_seconds`). Assembled in [`Runner::new`].
pub(crate) type RuntimeStack<P> = CatchPanic<P>;

pub(crate) struct Runner<C, P> {
    attempts: InPlace<Decode<C, RuntimeStack<P>>>,
    /// Where what failed for good goes.
    pub(crate) sink: Arc<dyn FailureSink>,
    /// What spans record beyond coordinates.
    pub(crate) spans: Spans,
    stats: Arc<ConsumerStats>,
    group_id: Arc<str>,
}

impl<C, P> Runner<C, P>
where
    C: Codec,
    P: Processor<C::Value>,
{
    /// A runner with `config`'s retry policy as its attempt plan, deadline
    /// and header limit, and no span extras (the consumer adds those and a
    /// plug-in's plan).
    pub(crate) fn new(
        codec: C,
        processor: P,
        sink: Arc<dyn FailureSink>,
        config: &crate::config::ConsumerConfig,
        stats: Arc<ConsumerStats>,
        latency: metrics::Histogram,
    ) -> Self {
        let decode = Decode {
            codec,
            processor: CatchPanicLayer.layer(processor),
            handler_timeout: config.handler_timeout,
            max_header_bytes: config.max_header_bytes,
            stats: stats.clone(),
            latency,
        };
        Runner {
            attempts: InPlace::new(
                decode,
                Arc::new(PolicyPlan(config.retry.clone())),
                config.retry.clone(),
                stats.clone(),
            ),
            sink,
            spans: Spans::default(),
            stats,
            group_id: Arc::from(config.group_id.as_str()),
        }
    }

    /// Replaces the attempt plan (a plug-in's).
    pub(crate) fn set_plan(&mut self, plan: Arc<dyn AttemptPlan>) {
        self.attempts.plan = plan;
    }

    pub(crate) async fn run(
        self: Arc<Self>,
        raw: Arc<RawMessage>,
        cancel: Arc<CancellationToken>,
    ) -> Outcome {
        let span = self.spans.span(&raw, &self.group_id);
        // The work is polled first, so a handler waiting on its cancellation
        // signal runs its clean-up before the runtime stops waiting for it.
        // The wait for the signal is made only once the work has to wait: a
        // run that finishes on its first poll (most do) makes and drops none.
        // (`processor::within` does the same with its timer. One generic
        // helper for both was tried: it cost about 300 instructions per
        // message more, measured with callgrind, so each is written out.)
        let work = async {
            let mut run = std::pin::pin!(self.run_inside(&raw, &cancel));
            let mut cancelled = std::pin::pin!(None);
            std::future::poll_fn(|cx| {
                if let Poll::Ready(o) = run.as_mut().poll(cx) {
                    return Poll::Ready(o);
                }
                if cancelled.is_none() {
                    cancelled.set(Some(cancel.cancelled()));
                }
                match cancelled.as_mut().as_pin_mut().map(|c| c.poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Outcome::Cancelled),
                    _ => Poll::Pending,
                }
            })
            .await
        };
        // A span no subscriber wants (or none at all) is not entered and
        // left at every poll. (Pinned here, so that neither arm moves the
        // large future: a copy cost more than the span.)
        let work = std::pin::pin!(work);
        if span.is_disabled() {
            work.await
        } else {
            tracing::Instrument::instrument(work, span).await
        }
    }

    async fn run_inside(&self, raw: &Arc<RawMessage>, cancel: &Arc<CancellationToken>) -> Outcome {
        if let Some(done) = self.not_for_the_processor(raw).await {
            return done;
        }
        match self.attempts.run(raw, cancel).await {
            Ok(()) => {
                ConsumerStats::add(&self.stats.processed, 1);
                Outcome::Finished(Fate::Processed)
            }
            Err(gave_up) => self.give_up(raw, gave_up).await,
        }
    }

    /// Messages that do not reach the processor: a copy meant for another
    /// consumer group (`weir-for-group`: retry copies and DLQ replays go to
    /// topics every group reads), and what the attempt plan diverts (a
    /// scheduled message not due yet goes on to its next hop).
    async fn not_for_the_processor(&self, raw: &RawMessage) -> Option<Outcome> {
        if let Some(g) = crate::wire::for_group(&raw.headers)
            && g != self.group_id.as_bytes()
        {
            ConsumerStats::add(&self.stats.other_group_skipped, 1);
            return Some(Outcome::Finished(Fate::Handled));
        }
        // Boxed by the plan: the producer's send future is large, and keeping
        // it out of line keeps every message's future small.
        Some(match self.attempts.plan.divert(raw)?.await {
            Disposition::Stop => Outcome::Halted {
                class: "reschedule".into(),
                error: "could not forward a scheduled message to its next hop".into(),
            },
            _ => Outcome::Finished(Fate::Handled),
        })
    }

    /// Hands a message whose attempts ended to the failure sink.
    async fn give_up(&self, raw: &Arc<RawMessage>, g: GaveUp) -> Outcome {
        let e = &g.error;
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
            attempts: g.attempts,
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
