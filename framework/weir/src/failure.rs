//! What happens to a message whose processing failed for good (terminal error,
//! or retryable error after the last in-process attempt).
//!
//! A [`FailureSink`] decides a [`Disposition`]: `Handled`, `Retried` and
//! `DeadLettered` let the partition's committed offset move past the message
//! (the sink has put it somewhere safe: a retry topic, a DLQ; the last two
//! say which, for the [safety valves](crate::valves)); `Stop` halts the
//! partition at that message. The
//! default, [`StopPartition`], never skips silently.

use futures::future::BoxFuture;

use crate::error::ProcessError;
use crate::message::RawMessage;

/// A failed message and why.
#[derive(Debug)]
pub struct Failure<'a> {
    /// The message, undecoded.
    pub message: &'a RawMessage,
    /// The last error.
    pub error: &'a ProcessError,
    /// The delivery attempt that failed last, counting earlier deliveries
    /// through retry tiers (1 = the first delivery's first try).
    pub attempts: u32,
    /// The consumer group.
    pub group_id: &'a str,
}

/// What the sink did with a failed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The message is taken care of (acknowledged by a DLQ or retry topic, or
    /// deliberately dropped): its offset counts as finished.
    Handled,
    /// Handled: published to a retry tier (counts against the
    /// [retry budget](crate::valves::RetryBudget)).
    Retried,
    /// Handled: published to a DLQ (counts against the
    /// [DLQ limit](crate::valves::DlqLimit)).
    DeadLettered,
    /// Halt the partition at this message: nothing at or after its offset is committed.
    Stop,
}

/// Receives messages whose processing failed for good.
pub trait FailureSink: Send + Sync + 'static {
    /// Decides what happens to `failure`. Must not return `Handled` before the
    /// message is safe elsewhere (a DLQ publish acknowledged, for example).
    fn on_failure<'a>(&'a self, failure: Failure<'a>) -> BoxFuture<'a, Disposition>;
}

/// Default sink: logs the failure with its coordinates and error class (never
/// the payload) and halts the partition.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopPartition;

impl FailureSink for StopPartition {
    fn on_failure<'a>(&'a self, f: Failure<'a>) -> BoxFuture<'a, Disposition> {
        tracing::error!(
            group = f.group_id,
            topic = %f.message.topic,
            partition = f.message.partition,
            offset = f.message.offset,
            attempts = f.attempts,
            class = f.error.class(),
            error = %f.error,
            "message failed for good; partition halted at this offset (configure a DLQ or fix and restart)"
        );
        Box::pin(async { Disposition::Stop })
    }
}

/// Logs the failure at error level and moves on. An explicit opt-in for
/// consumers whose messages may be lost (metrics, telemetry).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogAndSkip;

impl FailureSink for LogAndSkip {
    fn on_failure<'a>(&'a self, f: Failure<'a>) -> BoxFuture<'a, Disposition> {
        tracing::error!(
            group = f.group_id,
            topic = %f.message.topic,
            partition = f.message.partition,
            offset = f.message.offset,
            attempts = f.attempts,
            class = f.error.class(),
            error = %f.error,
            "message failed for good; skipped (LogAndSkip sink)"
        );
        Box::pin(async { Disposition::Handled })
    }
}
