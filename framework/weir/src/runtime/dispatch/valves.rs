//! The safety valves as the dispatcher applies them: the DLQ limit halts a
//! partition, the spent retry budget stops starting messages (see
//! [`crate::valves`] for the settings and the state machines).

use super::super::HaltedPartition;
use super::partition::PartitionState;
use super::{Dispatcher, PartitionControl, RunMessage};
use crate::stats::ConsumerStats;
use crate::valves::{BudgetChange, Tripped};

/// Halts `st` after the message at `offset` tripped its DLQ limit: the
/// message is in the DLQ; nothing after it starts, so the committed offset
/// stops at the first message not started.
pub(super) fn trip(
    stats: &ConsumerStats,
    group: &str,
    st: &mut PartitionState,
    offset: i64,
    why: &Tripped,
) {
    ConsumerStats::add(&stats.halted_partitions, 1);
    ConsumerStats::add(&stats.dlq_limit_trips, 1);
    tracing::error!(
        group, partition = %st.tp, offset, dead_lettered = why.dead_lettered, of = why.of,
        limit = why.limit,
        "{why}: partition halted (a bad deploy or an incompatible producer?); fix the cause, then restart: the partition resumes from its committed offset, and `weir dlq replay` returns what was dead-lettered"
    );
    st.halted = Some(HaltedPartition {
        partition: st.tp.clone(),
        offset: offset + 1,
        class: "dlq_limit".into(),
        error: why.to_string(),
    });
}

impl<R: RunMessage, K: PartitionControl> Dispatcher<R, K> {
    /// True while the retry budget is spent.
    pub(super) fn budget_spent(&self) -> bool {
        self.budget.as_ref().is_some_and(|b| b.spent())
    }

    /// Moves the retry budget's window to now and applies a change of state.
    pub(super) fn judge_budget(&mut self) {
        let Some(b) = &mut self.budget else { return };
        match b.evaluate(self.now_ms) {
            Some(BudgetChange::Spent { retried, finished }) => {
                ConsumerStats::set(&self.stats.retry_budget_spent, 1);
                tracing::warn!(
                    group = %self.group_id, retried, finished,
                    "retry budget spent: {retried} of {finished} messages finished in the window went to retry tiers (a shared dependency down?); new messages wait and failures retry in place until the share falls"
                );
            }
            Some(BudgetChange::Recovered { retried, finished }) => {
                ConsumerStats::set(&self.stats.retry_budget_spent, 0);
                tracing::info!(
                    group = %self.group_id, retried, finished,
                    "retry budget recovered: starting messages again"
                );
            }
            None => {}
        }
    }
}
