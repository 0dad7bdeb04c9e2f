//! What a failure-handling plug-in (the retry tiers of [`crate::retry`])
//! gives a consumer, in the runtime's own words: a failure sink, topics to
//! read as well, an admission hook, an attempt plan, a retry budget and a
//! background task. The runtime uses an [`Extension`] without knowing what a
//! tier, a due time or a tier header is; nothing in `runtime/` names them.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::Admission;
use crate::config::RetryPolicy;
use crate::error::ProcessError;
use crate::failure::{Disposition, FailureSink};
use crate::message::RawMessage;

/// How a message is tried on one delivery: how many attempts in place, how
/// long each wait is, which failures wait in place without spending an
/// attempt, and which messages do not reach the processor at all. The
/// runner asks; the default is [`PolicyPlan`], the config's `retry` policy.
pub(crate) trait AttemptPlan: Send + Sync + 'static {
    /// Attempts on this delivery, the first included (at least 1).
    fn max_attempts(&self) -> u32;

    /// The wait after failed attempt `attempt` (1-based), before the next.
    fn delay(&self, attempt: u32) -> Duration;

    /// Whether `e`, which would go to the failure sink, waits in place
    /// instead (attempts not spent), checked again after each wait.
    fn holds(&self, _e: &ProcessError) -> bool {
        false
    }

    /// A message the processor must not see now: the plan takes it
    /// elsewhere and says what became of it. `None`: process it.
    fn divert<'a>(&'a self, _raw: &'a RawMessage) -> Option<BoxFuture<'a, Disposition>> {
        None
    }
}

/// The config's `retry` policy as an [`AttemptPlan`]: `max_attempts` tries
/// with its exponential backoff, nothing held or diverted.
pub(crate) struct PolicyPlan(pub(crate) RetryPolicy);

impl AttemptPlan for PolicyPlan {
    fn max_attempts(&self) -> u32 {
        self.0.max_attempts.max(1)
    }

    fn delay(&self, attempt: u32) -> Duration {
        self.0.backoff(attempt)
    }
}

/// What a plug-in adds to a consumer (see the module docs).
pub(crate) struct Extension {
    /// Replaces the consumer's failure sink.
    pub(crate) sink: Arc<dyn FailureSink>,
    /// Topics to read as well; their partitions start at their beginning
    /// when the group has no commit there (their records must not be skipped).
    pub(crate) topics: Vec<String>,
    /// When an admitted message may run (`None`: at once).
    pub(crate) admission: Option<Arc<dyn Admission>>,
    /// Replaces the config's retry policy as the runner's attempt plan.
    pub(crate) plan: Arc<dyn AttemptPlan>,
    /// The retry budget the dispatcher keeps, when the plug-in takes part in one.
    pub(crate) retry_budget: Option<crate::valves::RetryBudget>,
    /// Runs until the consumer stops, then is aborted.
    pub(crate) background: Option<tokio::task::JoinHandle<()>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_plan_is_the_config_retry_policy() {
        let policy = RetryPolicy {
            max_attempts: 4,
            jitter: false,
            ..RetryPolicy::default()
        };
        let plan = PolicyPlan(policy.clone());
        assert_eq!(plan.max_attempts(), 4);
        for a in 1..4 {
            assert_eq!(plan.delay(a), policy.backoff(a));
        }
        let e = ProcessError::retryable(std::io::Error::other("503"));
        assert!(!plan.holds(&e));
        assert!(plan.divert(&crate::message::test_raw("t", &[])).is_none());
    }
}
