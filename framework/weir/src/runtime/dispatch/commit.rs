//! Interval commits: the positions that moved since the last commit, one
//! commit at a time on a blocking thread (the dispatcher never waits on the
//! broker), un-marked when it fails so the next interval retries.

use super::{CommitResult, Dispatcher, PartitionControl, RunMessage};
use crate::message::TopicPartition;
use crate::offsets::NextOffset;
use crate::stats::ConsumerStats;

/// Next offsets to commit, per partition.
pub(super) type Positions = Vec<(TopicPartition, i64)>;

impl<R: RunMessage, K: PartitionControl> Dispatcher<R, K> {
    /// Positions that moved since the last commit; marks them as committed
    /// (a failed commit un-marks them, so the next interval retries).
    pub(super) fn commit_list(&mut self) -> (Positions, Vec<(u64, NextOffset)>) {
        self.positions_moved(false)
    }

    /// [`commit_list`](Self::commit_list), with revoking partitions too when
    /// `revoking` (a transaction commits theirs: their revoke waits for it).
    pub(super) fn positions_moved(
        &mut self,
        revoking: bool,
    ) -> (Positions, Vec<(u64, NextOffset)>) {
        let mut list = Vec::new();
        let mut marks = Vec::new();
        for (epoch, st) in self.parts.iter_mut() {
            if st.revoking && !revoking {
                continue;
            }
            if let Some(c) = st.tracker.committable()
                && Some(c) > st.last_committed
            {
                list.push((st.tp.clone(), c.0));
                st.last_committed = Some(c);
                marks.push((*epoch, c));
            }
        }
        (list, marks)
    }

    /// Commits on a blocking thread so the dispatcher never waits on the broker,
    /// and so the outcome is known (librdkafka's async commit callback is not
    /// delivered through this consumer's queue). One commit at a time. The
    /// per-partition views are refreshed on the same tick.
    pub(super) fn start_commit(&mut self) {
        self.publish_views();
        let (list, marks) = self.commit_list();
        if marks.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        let group = self.group_id.to_string();
        self.commit_pending = Some(tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let r = consumer.commit(&list);
            metrics::histogram!("weir_commit_seconds", "group" => group)
                .record(started.elapsed().as_secs_f64());
            (marks, r)
        }));
    }

    pub(super) fn on_commit_done(&mut self, done: Result<CommitResult, tokio::task::JoinError>) {
        let (marks, result) = match done {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "commit task failed");
                for st in self.parts.values_mut() {
                    st.last_committed = None;
                }
                return;
            }
        };
        match result {
            Ok(()) => ConsumerStats::add(&self.stats.commits, 1),
            Err(e) => {
                ConsumerStats::add(&self.stats.commit_failures, 1);
                tracing::warn!(group = %self.group_id, error = %e, "offset commit failed; retried on the next interval");
                for (epoch, off) in marks {
                    if let Some(st) = self.parts.get_mut(&epoch)
                        && st.last_committed == Some(off)
                    {
                        st.last_committed = None;
                    }
                }
            }
        }
    }
}
