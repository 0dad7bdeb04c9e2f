//! Safety valves: the DLQ limit (a circuit breaker per partition) and the
//! retry budget (a brake on retry tiers for the whole consumer).
//!
//! Both stop a bad moment from becoming a bad day. After a bad deploy or a
//! schema change every message fails: without a limit, the whole topic is
//! dead-lettered in minutes and has to be replayed. When a shared downstream
//! is down, every message fails as retryable: without a budget, the retry
//! tiers fill with copies of the whole topic. The DLQ limit halts the
//! partition instead (loudly: a log line, a metric, [`RunReport::halted`]);
//! the retry budget makes new failures wait in place and stops starting new
//! messages until the share of retries falls again.
//!
//! Both are off by default: what share of dead letters or retries is normal
//! depends on the topic, and a halt is an outage the team must choose. These
//! settings (the book's "A safety valve tripped" runbook explains them) are a
//! good start:
//!
//! ```
//! use std::time::Duration;
//! use weir::ConsumerConfig;
//! use weir::valves::{DlqLimit, RetryBudget};
//!
//! let mut config = ConsumerConfig::new("kafka:9092", "billing", &["orders"]);
//! // Halt a partition when 50 of its last 100 messages, or 20 in a row, went to the DLQ.
//! config.dlq_limit = DlqLimit { max_share: Some(0.5), window: 100, max_consecutive: Some(20) };
//! // Past 100 retries in 30 s, and more than 30% of what finished, wait instead of retrying.
//! config.retry_budget = RetryBudget { max_share: Some(0.3), window: Duration::from_secs(30), min_retries: 100 };
//! config.validate().unwrap();
//! ```
//!
//! [`RunReport::halted`]: crate::RunReport::halted

use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// Halts a partition when too much of it goes to the DLQ (TOML `[dlq_limit]`).
///
/// Counted per partition over the messages that finished there (processed,
/// handed to a retry tier or dead-lettered), as Sentry Arroyo's `DlqLimit`
/// does; the message that trips it is already safe in the DLQ, and nothing
/// after it is started. Messages already running finish. Restart the
/// consumer (after the fix) to resume: the partition starts again from its
/// committed offset, the first message not started.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DlqLimit {
    /// Trip when more than this share (0 < share <= 1) of the last `window`
    /// finished messages of a partition went to the DLQ. Judged only once the
    /// window is full. `None`: no share limit (default).
    pub max_share: Option<f64>,
    /// Messages in the share window (default 100).
    pub window: usize,
    /// Trip when this many consecutive finished messages of a partition went
    /// to the DLQ. `None`: no limit (default).
    pub max_consecutive: Option<u32>,
}

impl Default for DlqLimit {
    fn default() -> Self {
        DlqLimit {
            max_share: None,
            window: 100,
            max_consecutive: None,
        }
    }
}

impl DlqLimit {
    /// True when either limit is set.
    pub fn is_on(&self) -> bool {
        self.max_share.is_some() || self.max_consecutive.is_some()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(s) = self.max_share
            && !(s > 0.0 && s <= 1.0)
        {
            return Err(ConfigError::invalid(
                "dlq_limit.max_share",
                format!("{s} is not a share: use a number above 0 and at most 1 (0.5 = half)"),
            ));
        }
        if self.max_share.is_some() && !(1..=100_000).contains(&self.window) {
            return Err(ConfigError::invalid(
                "dlq_limit.window",
                format!("{} messages: use 1 to 100000", self.window),
            ));
        }
        if self.max_consecutive == Some(0) {
            return Err(ConfigError::invalid(
                "dlq_limit.max_consecutive",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        Ok(())
    }
}

/// Makes new retryable failures wait in place instead of going to a retry
/// tier when retries are a large share of what the consumer finishes (TOML
/// `[retry_budget]`; applies with [`RetryTopics`](crate::retry::RetryTopics)
/// that publish to tier topics).
///
/// While the budget is spent, the consumer starts no new message, and a
/// message whose attempts ran out retries in place (with the
/// [`RetryPolicy`](crate::RetryPolicy) backoff, without spending attempts)
/// instead of being published to a tier. The budget is judged over the last
/// `window`: as old retries leave it, or waiting messages succeed, it
/// recovers by itself and the consumer goes on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudget {
    /// Spent when more than this share (0 < share <= 1) of the messages
    /// finished over `window` went to a retry tier. `None`: no budget (default).
    pub max_share: Option<f64>,
    /// The window (default 30 s).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Hand-offs to retry tiers within `window` below which the budget is
    /// never spent: a few retries say nothing (default 50).
    pub min_retries: u64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            max_share: None,
            window: Duration::from_secs(30),
            min_retries: 50,
        }
    }
}

impl RetryBudget {
    /// True when a share is set.
    pub fn is_on(&self) -> bool {
        self.max_share.is_some()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(s) = self.max_share
            && !(s > 0.0 && s <= 1.0)
        {
            return Err(ConfigError::invalid(
                "retry_budget.max_share",
                format!("{s} is not a share: use a number above 0 and at most 1 (0.3 = 30%)"),
            ));
        }
        if self.is_on()
            && !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.window)
        {
            return Err(ConfigError::invalid(
                "retry_budget.window",
                format!("{:?}: use 1s to 1h", self.window),
            ));
        }
        Ok(())
    }
}

/// Why a [`Breaker`] tripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tripped {
    /// Dead letters in the window (or in a row).
    pub(crate) dead_lettered: usize,
    /// Out of this many finished messages.
    pub(crate) of: usize,
    /// `share` or `consecutive`.
    pub(crate) limit: &'static str,
}

impl std::fmt::Display for Tripped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.limit {
            "consecutive" => write!(
                f,
                "DLQ limit tripped: {} messages in a row went to the DLQ",
                self.dead_lettered
            ),
            _ => write!(
                f,
                "DLQ limit tripped: {} of the last {} messages went to the DLQ",
                self.dead_lettered, self.of
            ),
        }
    }
}

/// One partition's DLQ limit state: the last `window` outcomes and the
/// current run of dead letters. O(1) per finished message; nothing is
/// allocated while the limit is off.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    recent: VecDeque<bool>,
    dead_in_window: usize,
    consecutive: u32,
}

impl Breaker {
    /// Records a finished message; `Some` when the limit trips with it.
    pub(crate) fn record(&mut self, limit: &DlqLimit, dead_lettered: bool) -> Option<Tripped> {
        if !limit.is_on() {
            return None;
        }
        self.consecutive = if dead_lettered {
            self.consecutive.saturating_add(1)
        } else {
            0
        };
        if let Some(max) = limit.max_consecutive
            && self.consecutive >= max
        {
            return Some(Tripped {
                dead_lettered: self.consecutive as usize,
                of: self.consecutive as usize,
                limit: "consecutive",
            });
        }
        let max_share = limit.max_share?;
        self.recent.push_back(dead_lettered);
        self.dead_in_window += usize::from(dead_lettered);
        if self.recent.len() > limit.window
            && let Some(old) = self.recent.pop_front()
        {
            self.dead_in_window -= usize::from(old);
        }
        let full = self.recent.len() >= limit.window;
        (full && self.dead_in_window as f64 > max_share * self.recent.len() as f64).then_some(
            Tripped {
                dead_lettered: self.dead_in_window,
                of: self.recent.len(),
                limit: "share",
            },
        )
    }
}

/// The consumer's retry budget: per-second counts of finished messages and
/// of hand-offs to retry tiers over the window.
#[derive(Debug)]
pub(crate) struct Budget {
    cfg: RetryBudget,
    /// (second, finished, retried), oldest first.
    buckets: VecDeque<(i64, u64, u64)>,
    finished: u64,
    retried: u64,
    spent: bool,
}

/// A change of a [`Budget`]'s state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BudgetChange {
    /// Retries passed the budget: `retried` of `finished` in the window.
    Spent { retried: u64, finished: u64 },
    /// Back under the budget.
    Recovered { retried: u64, finished: u64 },
}

impl Budget {
    pub(crate) fn new(cfg: RetryBudget) -> Self {
        Budget {
            cfg,
            buckets: VecDeque::new(),
            finished: 0,
            retried: 0,
            spent: false,
        }
    }

    /// Records a finished message at `now_ms`: `retried` when it went to a tier.
    pub(crate) fn record(&mut self, now_ms: i64, retried: bool) {
        let sec = now_ms.div_euclid(1000);
        match self.buckets.back_mut() {
            Some(b) if b.0 >= sec => {
                b.1 += 1;
                b.2 += u64::from(retried);
            }
            _ => self.buckets.push_back((sec, 1, u64::from(retried))),
        }
        self.finished += 1;
        self.retried += u64::from(retried);
    }

    /// Drops what left the window and decides; `Some` when the state changed.
    pub(crate) fn evaluate(&mut self, now_ms: i64) -> Option<BudgetChange> {
        let share = self.cfg.max_share?;
        let oldest = now_ms.div_euclid(1000) - self.cfg.window.as_secs().max(1) as i64;
        while self.buckets.front().is_some_and(|b| b.0 < oldest) {
            let (_, f, r) = self.buckets.pop_front().expect("front exists");
            self.finished -= f;
            self.retried -= r;
        }
        let over = self.retried >= self.cfg.min_retries
            && self.retried as f64 > share * self.finished as f64;
        let (retried, finished) = (self.retried, self.finished);
        match (self.spent, over) {
            (false, true) => {
                self.spent = true;
                Some(BudgetChange::Spent { retried, finished })
            }
            (true, false) => {
                self.spent = false;
                Some(BudgetChange::Recovered { retried, finished })
            }
            _ => None,
        }
    }

    /// True while the budget is spent.
    pub(crate) fn spent(&self) -> bool {
        self.spent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn share(s: f64, window: usize) -> DlqLimit {
        DlqLimit {
            max_share: Some(s),
            window,
            max_consecutive: None,
        }
    }

    #[test]
    fn an_off_limit_never_trips_and_holds_nothing() {
        let mut b = Breaker::default();
        for _ in 0..10_000 {
            assert_eq!(b.record(&DlqLimit::default(), true), None);
        }
        assert_eq!(b.recent.capacity(), 0);
    }

    #[test]
    fn consecutive_dead_letters_trip_and_a_success_resets_the_run() {
        let limit = DlqLimit {
            max_consecutive: Some(3),
            ..DlqLimit::default()
        };
        let mut b = Breaker::default();
        assert_eq!(b.record(&limit, true), None);
        assert_eq!(b.record(&limit, true), None);
        assert_eq!(b.record(&limit, false), None, "a success ends the run");
        assert_eq!(b.record(&limit, true), None);
        assert_eq!(b.record(&limit, true), None);
        let t = b.record(&limit, true).expect("third in a row trips");
        assert_eq!((t.dead_lettered, t.limit), (3, "consecutive"));
        assert!(t.to_string().contains("3 messages in a row"), "{t}");
    }

    #[test]
    fn the_share_is_judged_on_a_full_window_only() {
        let limit = share(0.5, 10);
        let mut b = Breaker::default();
        for i in 0..9 {
            assert_eq!(b.record(&limit, true), None, "window not full at {i}");
        }
        let t = b.record(&limit, true).expect("10 of 10 > 50%");
        assert_eq!((t.dead_lettered, t.of), (10, 10));
    }

    #[test]
    fn a_normal_share_of_poison_never_trips() {
        let limit = share(0.5, 20);
        let mut b = Breaker::default();
        for i in 0..10_000 {
            assert_eq!(b.record(&limit, i % 5 == 0), None, "20% poison at {i}");
        }
    }

    proptest! {
        /// The window share the breaker judges equals the share in the last
        /// `window` outcomes, for any sequence.
        #[test]
        fn the_window_counts_exactly_the_last_outcomes(
            outcomes in proptest::collection::vec(any::<bool>(), 1..400),
            window in 1usize..50,
        ) {
            let limit = share(1.0, window);
            let mut b = Breaker::default();
            for (i, &o) in outcomes.iter().enumerate() {
                prop_assert_eq!(b.record(&limit, o), None, "share 1.0 never trips");
                let from = (i + 1).saturating_sub(window);
                let want = outcomes[from..=i].iter().filter(|d| **d).count();
                prop_assert_eq!(b.dead_in_window, want);
                prop_assert_eq!(b.recent.len(), i + 1 - from);
            }
        }
    }

    fn budget(share: f64, min: u64) -> Budget {
        Budget::new(RetryBudget {
            max_share: Some(share),
            window: Duration::from_secs(10),
            min_retries: min,
        })
    }

    #[test]
    fn the_budget_is_spent_past_its_share_and_recovers_as_the_window_moves() {
        let mut b = budget(0.3, 10);
        let t0 = 1_000_000;
        for i in 0..100 {
            b.record(t0 + i, i % 10 == 0); // 10% retries
        }
        assert_eq!(b.evaluate(t0 + 100), None, "10 of 100 is under 30%");
        for i in 0..40 {
            b.record(t0 + 200 + i, true);
        }
        assert_eq!(
            b.evaluate(t0 + 300),
            Some(BudgetChange::Spent {
                retried: 50,
                finished: 140
            })
        );
        assert!(b.spent());
        assert_eq!(b.evaluate(t0 + 5_000), None, "still in the window");
        assert_eq!(
            b.evaluate(t0 + 12_000),
            Some(BudgetChange::Recovered {
                retried: 0,
                finished: 0
            }),
            "the window moved past every retry"
        );
        assert!(!b.spent());
    }

    #[test]
    fn a_few_retries_never_spend_the_budget() {
        let mut b = budget(0.1, 50);
        for i in 0..49 {
            b.record(i, true);
        }
        assert_eq!(b.evaluate(100), None, "49 retries are under min_retries");
        b.record(101, true);
        assert!(matches!(b.evaluate(102), Some(BudgetChange::Spent { .. })));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let e = DlqLimit {
            max_share: Some(1.5),
            ..DlqLimit::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("dlq_limit.max_share"), "{e}");
        let e = DlqLimit {
            max_consecutive: Some(0),
            ..DlqLimit::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("max_consecutive"), "{e}");
        let e = RetryBudget {
            max_share: Some(0.0),
            ..RetryBudget::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("retry_budget.max_share"), "{e}");
        let e = RetryBudget {
            max_share: Some(0.2),
            window: Duration::from_millis(10),
            ..RetryBudget::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("retry_budget.window"), "{e}");
    }
}
