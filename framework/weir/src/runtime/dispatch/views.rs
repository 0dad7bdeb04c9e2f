//! What each partition's commit waits for, published every commit interval:
//! the [`crate::inspect`] snapshot and the per-partition gauges (age of the
//! oldest unfinished message, the holder, the finished messages behind it and
//! the longest key queues).

use super::partition::PartitionState;
use super::{Dispatcher, PartitionControl, RunMessage};
use crate::inspect::{Holder, HolderState, KeyDepth, PartitionView, Snapshot, TOP_KEYS};
use crate::stats::ConsumerStats;

/// Key queue depths exported as `weir_key_queue_depth{rank}` (1 = longest):
/// a bounded number of series per partition, whatever the keys.
pub(super) const RANKED_KEYS: usize = 3;

/// The per-partition gauges this file sets (cleared when a partition leaves).
pub(super) const PARTITION_GAUGES: [&str; 6] = [
    "weir_oldest_unprocessed_age_seconds",
    "weir_consumer_lag",
    "weir_commit_holder_offset",
    "weir_commit_holder_attempt",
    "weir_commit_holder_waiting_seconds",
    "weir_uncommitted_finished",
];

impl<R: RunMessage, K: PartitionControl> Dispatcher<R, K> {
    /// Builds the snapshot and sets the gauges; the max age goes to the stats.
    pub(super) fn publish_views(&self) {
        let now = crate::clock::now_ms();
        let board = &self.stats.inspect;
        let mut max_age = 0i64;
        let mut partitions = Vec::with_capacity(self.parts.len());
        for st in self.parts.values() {
            if st.revoking {
                continue;
            }
            let view = view_of(st, now, |m| board.attempt_of(m));
            let age = view.holder.as_ref().and_then(|h| h.age_ms).unwrap_or(0);
            max_age = max_age.max(age);
            self.set_gauges(st, &view, age);
            partitions.push(view);
        }
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        ConsumerStats::set(&self.stats.oldest_unprocessed_age_ms, max_age as u64);
        board.publish(Snapshot {
            group: self.group_id.to_string(),
            taken_at_ms: now,
            partitions,
        });
    }

    fn set_gauges(&self, st: &PartitionState, view: &PartitionView, age_ms: i64) {
        let labels = [
            ("group", self.group_id.to_string()),
            ("topic", st.tp.topic.to_string()),
            ("partition", st.tp.partition.to_string()),
        ];
        let set = |name: &'static str, v: f64| metrics::gauge!(name, &labels).set(v);
        set(
            "weir_oldest_unprocessed_age_seconds",
            age_ms as f64 / 1000.0,
        );
        let h = view.holder.as_ref();
        set(
            "weir_commit_holder_offset",
            h.map_or(-1.0, |h| h.offset as f64),
        );
        set(
            "weir_commit_holder_attempt",
            h.map_or(0.0, |h| f64::from(h.attempt)),
        );
        set(
            "weir_commit_holder_waiting_seconds",
            h.map_or(0.0, |h| h.waiting_ms as f64 / 1000.0),
        );
        set("weir_uncommitted_finished", view.finished_above as f64);
        for rank in 0..RANKED_KEYS {
            let depth = view.top_keys.get(rank).map_or(0, |k| k.queued);
            let mut l = labels.to_vec();
            l.push(("rank", (rank + 1).to_string()));
            metrics::gauge!("weir_key_queue_depth", &l).set(depth as f64);
        }
    }
}

/// The view of one partition at `now` (epoch ms); `attempt_of` gives the
/// in-place attempt of a message retrying in place.
fn view_of(
    st: &PartitionState,
    now: i64,
    attempt_of: impl Fn(&crate::message::RawMessage) -> Option<u32>,
) -> PartitionView {
    let committable = st.tracker.committable();
    let holder_offset = st.tracker.oldest_unfinished();
    let holder = holder_offset.and_then(|offset| {
        let a = st.admitted.front().filter(|a| a.offset == offset)?;
        let m = a.message.upgrade();
        let state = if st.halted.as_ref().is_some_and(|h| h.offset <= offset) {
            HolderState::Halted
        } else if st.delayed.front().is_some_and(|(_, d)| d.offset == offset) {
            HolderState::Delayed
        } else if st.ready.iter().any(|(_, r)| r.offset == offset) {
            HolderState::Ready
        } else {
            HolderState::Running
        };
        let key = m.as_ref().and_then(|m| m.key.as_deref());
        Some(Holder {
            offset,
            key: key.map(crate::inspect::key_text),
            key_hash: key.map(crate::inspect::key_hash),
            attempt: m.as_ref().map_or(1, |m| {
                attempt_of(m).unwrap_or_else(|| crate::wire::delivery_attempt(m))
            }),
            state,
            waiting_ms: crate::clock::age_ms(now, a.admitted_ms),
            age_ms: a.timestamp_ms.map(|ts| crate::clock::age_ms(now, ts)),
        })
    });
    let unfinished = st.tracker.unfinished();
    PartitionView {
        topic: st.tp.topic.to_string(),
        partition: st.tp.partition,
        committed: st.last_committed.map(|c| c.0),
        committable: committable.map(|c| c.0),
        holder,
        finished_above: st.tracker.window_len() - unfinished,
        unfinished,
        in_flight: st.in_flight,
        delayed: st.delayed.len(),
        paused: st.paused,
        halted: st
            .halted
            .as_ref()
            .map(|h| format!("at offset {} ({}): {}", h.offset, h.class, h.error)),
        top_keys: st
            .lanes
            .deepest(TOP_KEYS)
            .into_iter()
            .map(|(queued, m)| {
                let key = m.key.as_deref();
                KeyDepth {
                    key: key.map(crate::inspect::key_text),
                    key_hash: key.map(crate::inspect::key_hash),
                    queued,
                }
            })
            .collect(),
    }
}
