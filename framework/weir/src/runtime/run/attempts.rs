//! In-place attempts: repeats one [`Attempt`] as the [`AttemptPlan`] says
//! (attempts per delivery, the wait before each), waits out an unavailable
//! dependency without spending attempts, and keeps a failure the plan holds
//! back waiting in place. Returns the last error and the delivery attempt it
//! came from once nothing is left to try: the failure sink takes it from there.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::super::plugin::AttemptPlan;
use crate::config::RetryPolicy;
use crate::error::ProcessError;
use crate::message::RawMessage;
use crate::stats::ConsumerStats;

/// One try at a raw message (decode and process).
pub(crate) trait Attempt: Send + Sync + 'static {
    /// Tries `raw` as delivery attempt `attempt` (what
    /// [`Message::attempt`](crate::Message::attempt) shows).
    fn attempt(
        &self,
        raw: &Arc<RawMessage>,
        attempt: u32,
        cancel: &Arc<CancellationToken>,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send;
}

/// A message that failed for good on this delivery.
#[derive(Debug)]
pub(crate) struct GaveUp {
    pub(crate) error: ProcessError,
    /// The delivery attempt of the last try (tier hops included).
    pub(crate) attempts: u32,
}

pub(crate) struct InPlace<A> {
    pub(crate) inner: A,
    pub(crate) plan: Arc<dyn AttemptPlan>,
    /// The backoff of outage waits and held failures (the config's `retry`).
    pub(crate) waits: RetryPolicy,
    pub(crate) stats: Arc<ConsumerStats>,
    /// When the last "dependency unavailable" warning was logged (epoch ms):
    /// one warning per consumer every 5 s, however many messages wait.
    unavailable_warned_ms: AtomicU64,
}

impl<A: Attempt> InPlace<A> {
    pub(crate) fn new(
        inner: A,
        plan: Arc<dyn AttemptPlan>,
        waits: RetryPolicy,
        stats: Arc<ConsumerStats>,
    ) -> Self {
        InPlace {
            inner,
            plan,
            waits,
            stats,
            unavailable_warned_ms: AtomicU64::new(0),
        }
    }

    pub(crate) async fn run(
        &self,
        raw: &Arc<RawMessage>,
        cancel: &Arc<CancellationToken>,
    ) -> Result<(), GaveUp> {
        let max_attempts = self.plan.max_attempts();
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
            let delivery = base.saturating_add(attempt - 1);
            let e = match self.inner.attempt(raw, delivery, cancel).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if e.is_unavailable() {
                // A dependency is down: wait for it without spending the
                // message's attempts; the partition stops advancing meanwhile.
                outage = outage.saturating_add(1);
                ConsumerStats::add(&self.stats.unavailable, 1);
                let delay = self.waits.backoff(outage.min(32));
                self.warn_unavailable(raw, outage, &e, delay);
                tokio::time::sleep(delay).await;
            } else if e.is_retryable() && attempt < max_attempts {
                ConsumerStats::add(&self.stats.retries, 1);
                let delay = self.plan.delay(attempt);
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
            } else if self.plan.holds(&e) {
                // The plan holds this failure back from the sink (the retry
                // budget is spent): it retries in place, attempts not spent.
                held = held.saturating_add(1);
                ConsumerStats::add(&self.stats.retry_budget_waits, 1);
                let _waiting = WaitGuard::new(&self.stats);
                tokio::time::sleep(self.waits.backoff(held.min(32))).await;
            } else {
                return Err(GaveUp {
                    error: e,
                    attempts: delivery,
                });
            }
        }
    }

    /// Logs that a dependency is unavailable: one warning per consumer every
    /// 5 s, however many messages wait.
    fn warn_unavailable(&self, raw: &RawMessage, outage: u32, e: &ProcessError, delay: Duration) {
        let now = crate::clock::now_ms().max(0) as u64;
        let last = self.unavailable_warned_ms.load(Relaxed);
        if now.saturating_sub(last) >= 5_000
            && self
                .unavailable_warned_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
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
}

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

/// Counts a message waiting in place; the count drops when the wait ends or
/// is cancelled.
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
