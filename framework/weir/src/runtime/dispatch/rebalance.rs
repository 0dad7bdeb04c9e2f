//! Rebalances: a partition assigned gets a fresh state (cancelling what an
//! old epoch of it still runs); a revoke drops what has not started, waits
//! for runs up to its deadline and answers with the finished offsets.

use std::sync::Arc;

use tokio::time::Instant;

use super::super::poller::{Gate, RevokeReply};
use super::{Dispatcher, PartitionControl, PartitionState, PendingRevoke, RunMessage};
use crate::message::TopicPartition;
use crate::stats::ConsumerStats;

impl<R: RunMessage, K: PartitionControl> Dispatcher<R, K> {
    pub(super) fn assign(&mut self, tps: Vec<(TopicPartition, Option<Arc<Gate>>)>) {
        let mut epochs = Vec::with_capacity(tps.len());
        for (tp, gate) in tps {
            if let Some(old) = self.by_tp.remove(&tp)
                && let Some(st) = self.parts.remove(&old)
            {
                // Assigned again before the old assignment was released (its
                // revoke answered late): its runs stop, so that no message
                // runs twice at once, once per epoch.
                st.cancel.cancel();
                if st.in_flight > 0 {
                    tracing::warn!(
                        partition = %tp, in_flight = st.in_flight,
                        "partition assigned again while runs of its previous assignment were still going: cancelling them"
                    );
                }
                self.delayed_total -= st.delayed.len();
                ConsumerStats::sub(&self.stats.delayed, st.delayed.len() as u64);
            }
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            epochs.push(epoch);
            self.by_tp.insert(tp.clone(), epoch);
            self.parts.insert(epoch, PartitionState::new(tp, gate));
        }
        self.last_lookup = None;
        self.publish_partition_counts();
        // First credit for partitions with their own queue.
        for epoch in epochs {
            self.check_pause(epoch);
        }
    }

    pub(super) fn begin_revoke(
        &mut self,
        partitions: Vec<TopicPartition>,
        reply: RevokeReply,
        deadline: std::time::Instant,
    ) {
        // Transaction mode: the revoked partitions run what is at or below
        // their cut and are answered after the commit covering them.
        let after_commit = self.tx_revoke_needs();
        let tx = self.tx.is_some();
        let mut held = Vec::with_capacity(partitions.len());
        for tp in partitions {
            if let Some(&epoch) = self.by_tp.get(&tp)
                && let Some(st) = self.parts.get_mut(&epoch)
            {
                held.push((tp, epoch));
                st.revoking = true;
                if tx {
                    // Not started yet: never past the cut, dropped with the
                    // state once the revoke is answered.
                    self.delayed_total -= st.delayed.len();
                    ConsumerStats::sub(&self.stats.delayed, st.delayed.len() as u64);
                    st.delayed.clear();
                    continue;
                }
                let dropped = st.ready.len() + st.lanes.queued() + st.delayed.len();
                ConsumerStats::add(&self.stats.dropped_on_revoke, dropped as u64);
                st.ready.clear();
                st.lanes.clear();
                self.delayed_total -= st.delayed.len();
                ConsumerStats::sub(&self.stats.delayed, st.delayed.len() as u64);
                st.delayed.clear();
            }
        }
        self.revokes.push(PendingRevoke {
            partitions: held,
            reply,
            deadline: Instant::from_std(deadline),
            after_commit,
        });
    }

    /// Answers revokes whose partitions are idle (or whose deadline passed, or all with `force`):
    /// cancels stragglers, releases the partitions and returns their finished offsets
    /// to the poll thread, which commits them before librdkafka lets them go.
    pub(super) fn finish_revokes(&mut self, force: bool) {
        if self.revokes.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.revokes.len() {
            let r = &self.revokes[i];
            let late = force || now >= r.deadline;
            if self.tx.is_some() {
                let after = r.after_commit;
                if !self.tx_revoke_answerable(after, late) {
                    i += 1;
                    continue;
                }
                // Committed in the transaction (or the run ends): the poll
                // thread commits nothing.
                let r = self.revokes.swap_remove(i);
                for (tp, epoch) in r.partitions {
                    let _ = self.release(&tp, epoch);
                }
                self.last_lookup = None;
                self.publish_partition_counts();
                let _ = r.reply.send(Vec::new());
                continue;
            }
            let busy: usize = r
                .partitions
                .iter()
                .filter_map(|(_, e)| self.parts.get(e))
                .map(|st| st.in_flight)
                .sum();
            // An interval commit still under way could reach the broker after
            // the revoke's commit and move the position back: answer once it
            // is done, unless the deadline came (the poll thread stops
            // waiting then; a position moved back costs duplicates, an
            // unanswered revoke the whole commit).
            if (busy > 0 || self.commit_pending.is_some()) && !late {
                i += 1;
                continue;
            }
            let r = self.revokes.swap_remove(i);
            if busy > 0 {
                tracing::warn!(
                    group = %self.group_id, in_flight = busy,
                    "revoke deadline passed: cancelling unfinished messages; the new owner processes them again"
                );
            }
            let mut offsets = Vec::new();
            for (tp, epoch) in r.partitions {
                // Already gone: assigned again since (the new epoch stays).
                let Some(st) = self.release(&tp, epoch) else {
                    continue;
                };
                if let Some(c) = st.tracker.committable()
                    && Some(c) > st.last_committed
                {
                    offsets.push((tp, c));
                }
            }
            self.last_lookup = None;
            self.publish_partition_counts();
            let _ = r.reply.send(offsets);
        }
    }

    /// Drops the state of `tp`'s assignment `epoch` (none when it is gone
    /// already), cancelling what it still runs; a later assignment of `tp`
    /// stays.
    fn release(&mut self, tp: &TopicPartition, epoch: u64) -> Option<PartitionState> {
        let st = self.parts.remove(&epoch)?;
        if self.by_tp.get(tp) == Some(&epoch) {
            self.by_tp.remove(tp);
        }
        st.cancel.cancel();
        if !self.by_tp.contains_key(tp) {
            self.clear_partition_gauges(tp);
        }
        Some(st)
    }

    /// Sets the per-partition gauges of a partition this member no longer
    /// owns to 0, so that alerts on them do not fire for a partition another
    /// member now reports (the `metrics` facade cannot remove a series).
    fn clear_partition_gauges(&self, tp: &TopicPartition) {
        let labels = [
            ("group", self.group_id.to_string()),
            ("topic", tp.topic.to_string()),
            ("partition", tp.partition.to_string()),
        ];
        for name in super::views::PARTITION_GAUGES {
            metrics::gauge!(name, &labels).set(0.0);
        }
        for rank in 1..=super::views::RANKED_KEYS {
            let mut l = labels.to_vec();
            l.push(("rank", rank.to_string()));
            metrics::gauge!("weir_key_queue_depth", &l).set(0.0);
        }
    }
}
