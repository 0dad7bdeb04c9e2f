//! Backpressure: keeps each partition's window under
//! `max_buffered_per_partition`, by credit for a partition with its own
//! queue and by pause/resume for one read from the consumer queue.

use super::{Dispatcher, PartitionControl, PartitionState, RunMessage};
use crate::stats::ConsumerStats;

impl<R: RunMessage, K: PartitionControl> Dispatcher<R, K> {
    /// Keeps a partition's window under `max_buffered_per_partition`: with its
    /// own queue by granting credit, otherwise by pausing it when full and
    /// resuming it at half.
    pub(super) fn check_pause(&mut self, epoch: u64) {
        let Some(st) = self.parts.get_mut(&epoch) else {
            return;
        };
        if st.revoking {
            return;
        }
        let cap = self.limits.max_buffered_per_partition;
        let changed = if st.gate.is_some() {
            Self::grant_credit(st, cap)
        } else {
            Self::pause_or_resume(&self.consumer, st, cap)
        };
        if changed {
            self.publish_partition_counts();
        }
    }

    /// Sets the assigned / own-queue / held-back partition gauges.
    pub(super) fn publish_partition_counts(&self) {
        let count = |f: fn(&PartitionState) -> bool| self.parts.values().filter(|s| f(s)).count();
        ConsumerStats::set(&self.stats.assigned_partitions, self.parts.len() as u64);
        ConsumerStats::set(
            &self.stats.own_queue_partitions,
            count(|s| s.gate.is_some()) as u64,
        );
        ConsumerStats::set(&self.stats.paused_partitions, count(|s| s.paused) as u64);
    }

    /// Grants a partition with its own queue the room under `cap` (window and
    /// messages on their way counted). Returns whether its held-back state changed.
    fn grant_credit(st: &mut PartitionState, cap: usize) -> bool {
        let Some(gate) = &st.gate else {
            return false;
        };
        let window = st.tracker.window_len();
        // Messages that came through the consumer queue (fetched before
        // the split) were not granted: they do not make credit negative.
        st.granted = st.granted.max(st.received);
        let on_the_way = st.granted - st.received;
        let room = cap as i64 - window as i64 - on_the_way;
        // Grant in chunks of at least a quarter of the bound, so that the
        // poll thread takes batches rather than single messages. The room
        // always gets there: the window only holds messages that finish.
        let chunk = (cap as i64 / 4).max(1);
        let mut granted_now = false;
        if st.halted.is_none() && room >= chunk {
            gate.grant(room);
            st.granted += room;
            granted_now = true;
        }
        let held = st.halted.is_some() || (on_the_way == 0 && !granted_now);
        if held == st.paused {
            return false;
        }
        tracing::debug!(partition = %st.tp, window, held, "backpressure (partition queue)");
        st.paused = held;
        true
    }

    /// Pauses a partition read from the consumer queue when its window is full
    /// (or it halted) and resumes it at half. Returns whether its state changed.
    fn pause_or_resume(consumer: &K, st: &mut PartitionState, cap: usize) -> bool {
        let window = st.tracker.window_len();
        let want_paused = st.halted.is_some() || window >= cap || (st.paused && window > cap / 2);
        if want_paused == st.paused {
            return false;
        }
        let res = if want_paused {
            consumer.pause(&st.tp)
        } else {
            consumer.resume(&st.tp).map(|()| {
                // librdkafka dropped what it had prefetched for the paused
                // partition; left alone, it fetches again only when its broker
                // thread next wakes up, up to a second later (measured: the
                // keyed benchmark sat idle 0.8 s after every resume). An
                // asynchronous seek to the first offset Weir has not received
                // starts the fetch now. Messages from that offset still on their
                // way from the poll thread arrive twice; the tracker drops the
                // second copies (`refetched_duplicates`).
                if let Some(next) = st.tracker.high() {
                    st.refetch_from = Some(next);
                    if let Err(e) = consumer.seek(&st.tp, next) {
                        tracing::debug!(partition = %st.tp, error = %e, "seek after resume failed; fetching resumes on librdkafka's schedule");
                    }
                }
            })
        };
        match res {
            Ok(()) => {
                tracing::debug!(partition = %st.tp, window, paused = want_paused, "backpressure");
                st.paused = want_paused;
                true
            }
            Err(e) => {
                tracing::warn!(partition = %st.tp, error = %e, "pause/resume failed");
                false
            }
        }
    }
}
