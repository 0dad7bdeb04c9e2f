//! The retry tiers' attempt plan: in key-order mode the tier delays are
//! waited in place; a scheduled message not due yet hops to its next delay
//! tier instead of reaching the processor; while the retry budget is spent a
//! retryable failure waits in place instead of joining a flood of tier copies.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::RetrySink;
use crate::config::RetryPolicy;
use crate::error::ProcessError;
use crate::failure::Disposition;
use crate::message::RawMessage;
use crate::runtime::AttemptPlan;
use crate::stats::ConsumerStats;

pub(crate) struct TierPlan {
    /// The config's policy (the attempts per delivery are the tiers'
    /// `in_place_attempts`, set by the builder).
    pub(crate) policy: RetryPolicy,
    /// Key-order mode: the tier delays, waited in place one after another.
    pub(crate) in_place: Option<Arc<[Duration]>>,
    /// Forwards scheduled messages that are not due yet.
    pub(crate) sink: Arc<RetrySink>,
    /// Present when the retry budget is on: its spent flag.
    pub(crate) budget: Option<Arc<ConsumerStats>>,
}

impl AttemptPlan for TierPlan {
    fn max_attempts(&self) -> u32 {
        match &self.in_place {
            Some(s) => s.len() as u32 + 1,
            None => self.policy.max_attempts.max(1),
        }
    }

    fn delay(&self, attempt: u32) -> Duration {
        match &self.in_place {
            Some(s) => s
                .get(attempt.saturating_sub(1) as usize)
                .copied()
                .unwrap_or_else(|| self.policy.backoff(attempt)),
            None => self.policy.backoff(attempt),
        }
    }

    fn holds(&self, e: &ProcessError) -> bool {
        e.is_retryable()
            && self
                .budget
                .as_ref()
                .is_some_and(|s| s.retry_budget_spent() > 0)
    }

    fn divert<'a>(&'a self, raw: &'a RawMessage) -> Option<BoxFuture<'a, Disposition>> {
        if !crate::wire::not_yet(raw) {
            return None;
        }
        Some(Box::pin(self.sink.reschedule(raw)))
    }
}
