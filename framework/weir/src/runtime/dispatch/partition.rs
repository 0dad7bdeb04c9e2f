//! One assigned partition's state (offset tracker, key lanes, ready and
//! delayed queues, credit) and the moves that only touch it: enqueueing a
//! message in its lane, and starting over after a backwards position move.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::super::HaltedPartition;
use super::super::poller::Gate;
use super::super::run::Outcome;
use super::{Dispatcher, PartitionControl, RunMessage};
use crate::message::{RawMessage, TopicPartition};
use crate::offsets::{NextOffset, OffsetTracker};
use crate::scheduler::{KeyScheduler, Lane, Ordering};
use crate::stats::ConsumerStats;
use crate::valves::Breaker;

pub(super) struct Completion {
    pub(super) epoch: u64,
    /// The partition state's generation when the run started: a run of an
    /// offset from before a backwards position move finishes nothing in the
    /// tracker that replaced it.
    pub(super) generation: u64,
    pub(super) offset: i64,
    pub(super) lane: Lane,
    pub(super) outcome: Outcome,
    /// The message, back from its run: when nothing else holds it any more,
    /// its allocation is used again for a later message
    /// ([`Dispatcher::share`](super::Dispatcher)).
    pub(super) message: Arc<RawMessage>,
}

pub(super) struct PartitionState {
    pub(super) tp: TopicPartition,
    pub(super) tracker: OffsetTracker,
    /// Messages are shared (`Arc`) from admission on: the handler needs them
    /// shared anyway, and lanes and queues then move a pointer, not the message.
    pub(super) lanes: KeyScheduler<Arc<RawMessage>>,
    pub(super) ready: VecDeque<(Lane, Arc<RawMessage>)>,
    /// Messages not due yet (retry tiers), in offset order: the partition's
    /// processing is gated on the head's due time (FIFO, like the tier itself).
    pub(super) delayed: VecDeque<(Instant, Arc<RawMessage>)>,
    /// Admitted messages in offset order, pruned below the committable
    /// position as messages finish: the front is the oldest unprocessed
    /// message (the holder of the commit), for its age and the inspect view.
    pub(super) admitted: VecDeque<Admitted>,
    /// The DLQ limit's count of this partition's outcomes.
    pub(super) breaker: Breaker,
    pub(super) in_flight: usize,
    pub(super) in_runnable: bool,
    /// Held back: paused in librdkafka, or (with its own queue) out of credit.
    pub(super) paused: bool,
    /// The partition's own queue's credit; `None`: read from the consumer
    /// queue, paused when full.
    pub(super) gate: Option<Arc<Gate>>,
    /// Credit granted and messages received (with a gate), so that what is on
    /// its way from the poll thread counts against the bound.
    pub(super) granted: i64,
    pub(super) received: i64,
    pub(super) revoking: bool,
    pub(super) halted: Option<HaltedPartition>,
    pub(super) cancel: Arc<CancellationToken>,
    pub(super) last_committed: Option<NextOffset>,
    /// Bumped when the position moved backwards and the tracker started over.
    pub(super) generation: u64,
    /// Where Weir's own seek after a resume (pause mode) started fetching
    /// again: offsets from here up to the tracker's high mark may arrive a
    /// second time and are dropped as copies. Below it (or with no seek), an
    /// offset under the high mark is a backwards move of the log itself.
    pub(super) refetch_from: Option<i64>,
    /// The highest offset started (transaction mode: the next close's cut).
    pub(super) max_started: Option<i64>,
    /// Transaction mode, while closing: only offsets up to here start.
    pub(super) cut: Option<i64>,
    /// Transaction mode: where the open transaction's work on this partition
    /// begins (the last commit's position, or the first offset tracked in
    /// this assignment), which an aborted transaction moves back to.
    pub(super) tx_start: Option<i64>,
    /// Transaction mode: the position the last successful commit stored.
    pub(super) tx_committed: Option<NextOffset>,
    /// Moved back after an aborted transaction and waiting for the poll
    /// thread's [`Event::Rewound`](super::super::poller::Event::Rewound):
    /// what arrives before it was fetched before the seek, and is dropped.
    pub(super) rewinding: bool,
}

/// A message admitted to a partition, as the holder view needs it. The
/// message itself is held weakly: a finished message's payload is freed at
/// once, not when the holder below it finishes.
pub(super) struct Admitted {
    pub(super) offset: i64,
    /// Its timestamp (epoch ms), if any.
    pub(super) timestamp_ms: Option<i64>,
    /// When this member admitted it (epoch ms).
    pub(super) admitted_ms: i64,
    pub(super) message: Weak<RawMessage>,
}

/// What [`Dispatcher::resync`] dropped that the dispatcher counts.
pub(super) struct Resynced {
    pub(super) delayed: usize,
}

impl PartitionState {
    /// A partition just assigned: nothing tracked, nothing committed.
    pub(super) fn new(tp: TopicPartition, gate: Option<Arc<Gate>>) -> Self {
        PartitionState {
            tp,
            tracker: OffsetTracker::new(),
            lanes: KeyScheduler::new(),
            ready: VecDeque::new(),
            delayed: VecDeque::new(),
            admitted: VecDeque::new(),
            breaker: Breaker::default(),
            in_flight: 0,
            in_runnable: false,
            paused: false,
            gate,
            granted: 0,
            received: 0,
            revoking: false,
            halted: None,
            cancel: Arc::new(CancellationToken::new()),
            last_committed: None,
            generation: 0,
            refetch_from: None,
            max_started: None,
            cut: None,
            tx_start: None,
            tx_committed: None,
            rewinding: false,
        }
    }
}

impl<R: RunMessage, K: PartitionControl> Dispatcher<R, K> {
    /// Starts a partition's state over at `offset`, below the `highest`
    /// offset it tracked: the topic was deleted and created again, the log was
    /// truncated (an unclean leader election) or the position was reset while
    /// assigned. Messages not started yet are dropped (what the log still
    /// holds from `offset` on is fetched again); runs already going finish,
    /// keep their keys' order and release their lanes, but move nothing in
    /// the new tracker. The next commit is the new position, even though it
    /// is lower than the last one.
    pub(super) fn resync(
        st: &mut PartitionState,
        stats: &ConsumerStats,
        highest: i64,
        offset: i64,
    ) -> Resynced {
        let (dropped, delayed) = Self::start_over(st);
        tracing::warn!(
            partition = %st.tp,
            offset,
            highest,
            in_flight = st.in_flight,
            dropped,
            "the partition's position moved backwards below what this member tracked (topic deleted and re-created, log truncated, or offset reset): starting its state over from this offset"
        );
        ConsumerStats::add(&stats.position_resets, 1);
        st.last_committed = None;
        st.tx_committed = None;
        st.tx_start = None;
        Resynced { delayed }
    }

    /// Drops what `st` holds that has not started and starts its tracker
    /// over; runs already going finish, keep their keys' order and release
    /// their lanes, but move nothing in the new tracker. Returns how many
    /// messages were dropped, and how many of them were delayed.
    pub(super) fn start_over(st: &mut PartitionState) -> (usize, usize) {
        let queued = st.lanes.drop_queued();
        let ready = st.ready.len();
        for (lane, _) in std::mem::take(&mut st.ready) {
            let _ = st.lanes.complete(lane);
        }
        let delayed = st.delayed.len();
        st.delayed.clear();
        st.tracker = OffsetTracker::new();
        st.admitted.clear();
        st.generation += 1;
        st.refetch_from = None;
        st.max_started = None;
        st.cut = None;
        (queued + ready + delayed, delayed)
    }

    pub(super) fn enqueue(
        ordering: Ordering,
        runnable: &mut VecDeque<u64>,
        epoch: u64,
        st: &mut PartitionState,
        m: Arc<RawMessage>,
    ) {
        let lane = Lane::of(ordering, m.key.as_deref());
        if let Some(m) = st.lanes.admit(lane, m) {
            st.ready.push_back((lane, m));
            if !st.in_runnable {
                st.in_runnable = true;
                runnable.push_back(epoch);
            }
        }
    }
}
