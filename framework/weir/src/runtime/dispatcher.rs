//! The dispatcher: one task that owns every partition's state (offset tracker,
//! key lanes, ready queue), so the hot path takes no lock.
//!
//! It admits fetched messages, starts them within the global and per-partition
//! caps, collects completions, commits finished offsets on an interval, pauses
//! partitions whose buffer is full, and drains partitions on revoke and shutdown.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::poller::{Event, Gate, RevokeReply, WeirContext};
use super::task::Outcome;
use super::{HaltedPartition, RunReport};
use crate::error::WeirError;
use crate::message::{RawMessage, TopicPartition};
use crate::offsets::{NextOffset, OffsetTracker};
use crate::scheduler::{KeyScheduler, Lane, Ordering};
use crate::stats::ConsumerStats;

/// Runs one message to an [`Outcome`]; implemented by the runtime's `Runner`.
pub(crate) trait RunMessage: Send + Sync + 'static {
    fn run_message(
        self: Arc<Self>,
        raw: Arc<RawMessage>,
        cancel: Arc<CancellationToken>,
    ) -> impl Future<Output = Outcome> + Send + 'static;
}

pub(crate) struct Limits {
    pub(crate) ordering: Ordering,
    pub(crate) max_in_flight: usize,
    pub(crate) max_in_flight_per_partition: usize,
    pub(crate) max_buffered_per_partition: usize,
    pub(crate) inline_first_poll: bool,
    pub(crate) commit_interval: Duration,
    pub(crate) shutdown_deadline: Duration,
    /// Retry-tier topics and the longest hold a due time gets on each; a due
    /// time on any other topic is not honoured.
    pub(crate) tier_holds: std::collections::HashMap<String, Duration>,
}

/// Most messages started by one dispatch round before the loop looks at its
/// other inputs (fetched batches, commits, revokes) again.
const DISPATCH_BUDGET: usize = 4096;

/// Decides whether to poll a message's run inline before spawning it: yes
/// while first polls are cheap (a moving average under `LIMIT`); when they are
/// not (CPU-heavy handlers), every `PROBE`-th message is still tried so the
/// average follows the handler when it becomes cheap again.
struct InlinePolicy {
    avg_ns: u64,
    skipped: u32,
    /// Counts tried first polls, so that one in `SAMPLE` is timed.
    tried: u32,
}

impl InlinePolicy {
    const LIMIT_NS: u64 = 50_000;
    const PROBE: u32 = 64;
    /// One first poll in this many is timed (two clock reads per timed poll);
    /// while first polls are slow (spawning most), every probe is timed.
    const SAMPLE: u32 = 8;

    fn new() -> Self {
        InlinePolicy {
            avg_ns: 0,
            skipped: 0,
            tried: 0,
        }
    }

    /// Whether to time this first poll.
    fn sample(&mut self) -> bool {
        if self.avg_ns >= Self::LIMIT_NS {
            return true;
        }
        self.tried = self.tried.wrapping_add(1);
        self.tried.is_multiple_of(Self::SAMPLE)
    }

    fn should_try(&mut self) -> bool {
        if self.avg_ns < Self::LIMIT_NS {
            return true;
        }
        self.skipped += 1;
        if self.skipped >= Self::PROBE {
            self.skipped = 0;
            return true;
        }
        false
    }

    fn record(&mut self, took: Duration) {
        let ns = took.as_nanos().min(u128::from(u64::MAX / 16)) as u64;
        // Exponential moving average with weight 1/8.
        self.avg_ns = self.avg_ns - self.avg_ns / 8 + ns / 8;
    }
}

struct Completion {
    epoch: u64,
    /// The partition state's generation when the run started: a run of an
    /// offset from before a backwards position move finishes nothing in the
    /// tracker that replaced it.
    generation: u64,
    offset: i64,
    lane: Lane,
    outcome: Outcome,
}

struct PartitionState {
    tp: TopicPartition,
    tracker: OffsetTracker,
    /// Messages are shared (`Arc`) from admission on: the handler needs them
    /// shared anyway, and lanes and queues then move a pointer, not the message.
    lanes: KeyScheduler<Arc<RawMessage>>,
    ready: VecDeque<(Lane, Arc<RawMessage>)>,
    /// Messages not due yet (retry tiers), in offset order: the partition's
    /// processing is gated on the head's due time (FIFO, like the tier itself).
    delayed: VecDeque<(Instant, Arc<RawMessage>)>,
    /// (offset, timestamp) of admitted messages in offset order, pruned below
    /// the committable position as messages finish: the front is the oldest
    /// unprocessed message, for its age.
    timestamps: VecDeque<(i64, i64)>,
    in_flight: usize,
    in_runnable: bool,
    /// Held back: paused in librdkafka, or (with its own queue) out of credit.
    paused: bool,
    /// The partition's own queue's credit; `None`: read from the consumer
    /// queue, paused when full.
    gate: Option<Arc<Gate>>,
    /// Credit granted and messages received (with a gate), so that what is on
    /// its way from the poll thread counts against the bound.
    granted: i64,
    received: i64,
    revoking: bool,
    halted: Option<HaltedPartition>,
    cancel: Arc<CancellationToken>,
    last_committed: Option<NextOffset>,
    /// Bumped when the position moved backwards and the tracker started over.
    generation: u64,
    /// Where Weir's own seek after a resume (pause mode) started fetching
    /// again: offsets from here up to the tracker's high mark may arrive a
    /// second time and are dropped as copies. Below it (or with no seek), an
    /// offset under the high mark is a backwards move of the log itself.
    refetch_from: Option<i64>,
}

/// What [`Dispatcher::resync`] dropped that the dispatcher counts.
struct Resynced {
    delayed: usize,
}

struct PendingRevoke {
    /// The revoked partitions with the assignment epoch each had when the
    /// revoke arrived: answering it releases those epochs only, never a
    /// later assignment of the same partition.
    partitions: Vec<(TopicPartition, u64)>,
    reply: RevokeReply,
    deadline: Instant,
}

pub(crate) struct Dispatcher<R> {
    consumer: Arc<BaseConsumer<WeirContext>>,
    runner: Arc<R>,
    limits: Limits,
    parts: HashMap<u64, PartitionState>,
    by_tp: HashMap<TopicPartition, u64>,
    last_lookup: Option<(Arc<str>, i32, u64)>,
    runnable: VecDeque<u64>,
    tasks: JoinSet<Completion>,
    in_flight: usize,
    next_epoch: u64,
    revokes: Vec<PendingRevoke>,
    stats: Arc<ConsumerStats>,
    shutdown: CancellationToken,
    stop_poller: Arc<AtomicBool>,
    group_id: Arc<str>,
    /// The interval commit under way, if any: (partition epoch, position) pairs and the result.
    commit_pending: Option<tokio::task::JoinHandle<CommitResult>>,
    /// Messages held in `delayed` queues across partitions.
    delayed_total: usize,
    /// Earliest due time among the delayed queues' heads.
    next_due: Option<Instant>,
    inline: InlinePolicy,
    /// Completions of inline runs, reused between dispatch rounds.
    inline_done: Vec<Completion>,
}

type CommitResult = (Vec<(u64, NextOffset)>, rdkafka::error::KafkaResult<()>);

impl<R: RunMessage> Dispatcher<R> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        consumer: Arc<BaseConsumer<WeirContext>>,
        runner: Arc<R>,
        limits: Limits,
        stats: Arc<ConsumerStats>,
        shutdown: CancellationToken,
        stop_poller: Arc<AtomicBool>,
        group_id: Arc<str>,
    ) -> Self {
        Dispatcher {
            consumer,
            runner,
            limits,
            parts: HashMap::default(),
            by_tp: HashMap::default(),
            last_lookup: None,
            runnable: VecDeque::new(),
            tasks: JoinSet::new(),
            in_flight: 0,
            next_epoch: 0,
            revokes: Vec::new(),
            stats,
            shutdown,
            stop_poller,
            group_id,
            commit_pending: None,
            delayed_total: 0,
            next_due: None,
            inline: InlinePolicy::new(),
            inline_done: Vec::new(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut events: UnboundedReceiver<Event>,
    ) -> Result<RunReport, WeirError> {
        let mut commit_tick = tokio::time::interval(self.limits.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.shutdown.clone();
        let mut fatal = None;
        loop {
            let revoke_deadline = self.revokes.iter().map(|r| r.deadline).min();
            // Unbiased on purpose: under load completions and fetched batches are
            // always ready, and a biased order would starve commits and revokes.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = self.on_join(done) { fatal = Some(e); break; }
                    // Drain whatever else finished without another select round.
                    while let Some(done) = self.tasks.try_join_next() {
                        if let Err(e) = self.on_join(done) { fatal = Some(e); break; }
                    }
                    if fatal.is_some() { break; }
                }
                ev = events.recv() => match ev {
                    Some(Event::Batch(batch)) => {
                        for m in batch { self.admit(m); }
                    }
                    Some(Event::Assigned(tps)) => self.assign(tps),
                    Some(Event::Revoked { partitions, reply, deadline }) => self.begin_revoke(partitions, reply, deadline),
                    Some(Event::Fatal(e)) => { fatal = Some(WeirError::Fatal(e)); break; }
                    None => { fatal = Some(WeirError::Internal("the poll thread stopped unexpectedly".into())); break; }
                },
                _ = commit_tick.tick(), if self.commit_pending.is_none() => self.start_commit(),
                done = async { self.commit_pending.as_mut().expect("guarded").await }, if self.commit_pending.is_some() => {
                    self.commit_pending = None;
                    self.on_commit_done(done);
                }
                _ = tokio::time::sleep_until(revoke_deadline.unwrap_or_else(Instant::now)), if revoke_deadline.is_some() => {}
                _ = tokio::time::sleep_until(self.next_due.unwrap_or_else(Instant::now)), if self.next_due.is_some() => {}
                // The dispatch budget ran out with work left: come back after
                // letting the other branches (and other tasks) run.
                _ = tokio::task::yield_now(), if self.more_ready() => {}
            }
            self.finish_revokes(false);
            self.release_due();
            ConsumerStats::set(
                &self.stats.loop_heartbeat_ms,
                crate::clock::now_ms().max(0) as u64,
            );
            if let Err(e) = self.dispatch_ready() {
                fatal = Some(e);
                break;
            }
        }
        let report = self.shut_down(&mut events).await;
        match fatal {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    fn lookup(&mut self, topic: &Arc<str>, partition: i32) -> Option<u64> {
        if let Some((t, p, e)) = &self.last_lookup
            && *p == partition
            && Arc::ptr_eq(t, topic)
        {
            return Some(*e);
        }
        let tp = TopicPartition {
            topic: topic.clone(),
            partition,
        };
        let e = *self.by_tp.get(&tp)?;
        self.last_lookup = Some((topic.clone(), partition, e));
        Some(e)
    }

    fn admit(&mut self, m: RawMessage) {
        let Some(epoch) = self.lookup(&m.topic, m.partition) else {
            // Fetched before a revoke took effect: the next owner gets it.
            ConsumerStats::add(&self.stats.dropped_on_revoke, 1);
            return;
        };
        let st = self.parts.get_mut(&epoch).expect("by_tp and parts agree");
        st.received += 1;
        if st.revoking {
            ConsumerStats::add(&self.stats.dropped_on_revoke, 1);
            return;
        }
        if let Err(e) = st.tracker.track(m.offset) {
            if st.refetch_from.is_some_and(|from| m.offset >= from) {
                // Fetched again after Weir's seek on resume: already ours.
                ConsumerStats::add(&self.stats.refetched_duplicates, 1);
                return;
            }
            // Not a copy of anything tracked: the log moved backwards.
            let dropped = Self::resync(st, &self.stats, e.highest, m.offset);
            self.delayed_total -= dropped.delayed;
            ConsumerStats::sub(&self.stats.delayed, dropped.delayed as u64);
            // A fresh tracker takes any offset.
            let _ = st.tracker.track(m.offset);
        }
        if let Some(ts) = m.timestamp_ms {
            st.timestamps.push_back((m.offset, ts));
        }
        let due = self
            .limits
            .tier_holds
            .get(&*m.topic)
            .and_then(|max| crate::retry::due_at(&m, *max));
        let m = Arc::new(m);
        if due.is_some() || !st.delayed.is_empty() {
            let at = due.unwrap_or_else(Instant::now);
            if st.delayed.is_empty() {
                self.next_due = Some(self.next_due.map_or(at, |d| d.min(at)));
            }
            st.delayed.push_back((at, m));
            self.delayed_total += 1;
            ConsumerStats::add(&self.stats.delayed, 1);
        } else {
            Self::enqueue(self.limits.ordering, &mut self.runnable, epoch, st, m);
        }
        self.check_pause(epoch);
    }

    /// Starts a partition's state over at `offset`, below the `highest`
    /// offset it tracked: the topic was deleted and created again, the log was
    /// truncated (an unclean leader election) or the position was reset while
    /// assigned. Messages not started yet are dropped (what the log still
    /// holds from `offset` on is fetched again); runs already going finish,
    /// keep their keys' order and release their lanes, but move nothing in
    /// the new tracker. The next commit is the new position, even though it
    /// is lower than the last one.
    fn resync(
        st: &mut PartitionState,
        stats: &ConsumerStats,
        highest: i64,
        offset: i64,
    ) -> Resynced {
        let queued = st.lanes.drop_queued();
        let ready = st.ready.len();
        for (lane, _) in std::mem::take(&mut st.ready) {
            let _ = st.lanes.complete(lane);
        }
        let delayed = st.delayed.len();
        st.delayed.clear();
        tracing::warn!(
            partition = %st.tp,
            offset,
            highest,
            in_flight = st.in_flight,
            dropped = queued + ready + delayed,
            "the partition's position moved backwards below what this member tracked (topic deleted and re-created, log truncated, or offset reset): starting its state over from this offset"
        );
        ConsumerStats::add(&stats.position_resets, 1);
        st.tracker = OffsetTracker::new();
        st.timestamps.clear();
        st.generation += 1;
        st.refetch_from = None;
        st.last_committed = None;
        Resynced { delayed }
    }

    fn enqueue(
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

    /// Moves delayed messages whose due time has come to their lanes, and
    /// computes the next wake-up. The dispatcher sleeps until then: no handler
    /// sleeps, nothing polls in a loop, and the poll thread keeps the member alive.
    fn release_due(&mut self) {
        if self.delayed_total == 0 {
            self.next_due = None;
            return;
        }
        let now = Instant::now();
        if self.next_due.is_some_and(|d| d > now) {
            return;
        }
        let mut next: Option<Instant> = None;
        for (&epoch, st) in self.parts.iter_mut() {
            if st.revoking || st.halted.is_some() {
                continue;
            }
            while let Some((at, _)) = st.delayed.front() {
                if *at > now {
                    next = Some(next.map_or(*at, |n| n.min(*at)));
                    break;
                }
                let (_, m) = st.delayed.pop_front().expect("front exists");
                self.delayed_total -= 1;
                ConsumerStats::sub(&self.stats.delayed, 1);
                Self::enqueue(self.limits.ordering, &mut self.runnable, epoch, st, m);
            }
        }
        self.next_due = next;
    }

    /// Starts ready messages within the caps. Each message's run is polled once
    /// right here first: a handler that completes without waiting (a no-op, a
    /// cache hit, a cheap transformation) finishes without a task spawn, a
    /// cross-thread wake-up and a join; one that waits is spawned onto the
    /// runtime as before. Handlers that run long on their first poll (CPU-heavy
    /// synchronous work) are detected and spawned directly, so they keep
    /// running in parallel on every worker thread.
    fn dispatch_ready(&mut self) -> Result<(), WeirError> {
        let mut budget = DISPATCH_BUDGET;
        let mut done = std::mem::take(&mut self.inline_done);
        // The box of a future that finished inline, reused for the next
        // message (no allocation per message while handlers finish inline).
        let mut spare = None;
        loop {
            let mut visits = self.runnable.len();
            while visits > 0 && self.in_flight < self.limits.max_in_flight && budget > 0 {
                visits -= 1;
                let Some(epoch) = self.runnable.pop_front() else {
                    break;
                };
                let Some(st) = self.parts.get_mut(&epoch) else {
                    continue;
                };
                if st.revoking || st.halted.is_some() {
                    st.in_runnable = false;
                    continue;
                }
                while self.in_flight < self.limits.max_in_flight
                    && st.in_flight < self.limits.max_in_flight_per_partition
                    && budget > 0
                    && let Some((lane, m)) = st.ready.pop_front()
                {
                    budget -= 1;
                    st.in_flight += 1;
                    self.in_flight += 1;
                    let offset = m.offset;
                    let generation = st.generation;
                    // Boxed before the first poll (a polled future cannot move);
                    // wrapped into a task only if it has to wait.
                    let run = self.runner.clone().run_message(m, st.cancel.clone());
                    let mut fut = match spare.take() {
                        Some(mut b) => {
                            Pin::set(&mut b, run);
                            b
                        }
                        None => Box::pin(run),
                    };
                    if self.limits.inline_first_poll && self.inline.should_try() {
                        let started = self.inline.sample().then(std::time::Instant::now);
                        let mut cx = Context::from_waker(Waker::noop());
                        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            fut.as_mut().poll(&mut cx)
                        }));
                        if let Some(started) = started {
                            self.inline.record(started.elapsed());
                        }
                        match polled {
                            Ok(Poll::Ready(outcome)) => {
                                done.push(Completion {
                                    epoch,
                                    generation,
                                    offset,
                                    lane,
                                    outcome,
                                });
                                spare = Some(fut);
                                continue;
                            }
                            Ok(Poll::Pending) => {}
                            Err(p) => {
                                self.inline_done = done;
                                return Err(WeirError::Internal(format!(
                                    "message run panicked outside the handler: {}",
                                    super::task::panic_message(p)
                                )));
                            }
                        }
                    }
                    // Pending (or not tried): the task polls it again with its
                    // own waker, which replaces the no-op one of the first poll.
                    self.tasks.spawn(async move {
                        Completion {
                            epoch,
                            generation,
                            offset,
                            lane,
                            outcome: fut.await,
                        }
                    });
                }
                if st.ready.is_empty() {
                    st.in_runnable = false;
                } else {
                    self.runnable.push_back(epoch);
                }
            }
            if done.is_empty() {
                break;
            }
            for c in done.drain(..) {
                self.on_completion(c);
            }
            if budget == 0 {
                break;
            }
        }
        self.inline_done = done;
        self.stats.in_flight_now(self.in_flight as u64);
        Ok(())
    }

    /// Whether ready messages are waiting that the caps would let start now
    /// (the dispatch budget ran out): the loop comes back without blocking.
    fn more_ready(&self) -> bool {
        self.in_flight < self.limits.max_in_flight
            && self.runnable.iter().any(|e| {
                self.parts.get(e).is_some_and(|st| {
                    !st.ready.is_empty()
                        && st.in_flight < self.limits.max_in_flight_per_partition
                        && !st.revoking
                        && st.halted.is_none()
                })
            })
    }

    fn on_join(
        &mut self,
        done: Result<Completion, tokio::task::JoinError>,
    ) -> Result<(), WeirError> {
        match done {
            Ok(c) => {
                self.on_completion(c);
                Ok(())
            }
            Err(e) if e.is_cancelled() => Ok(()),
            // Runner catches handler panics; reaching this is a Weir bug. The
            // message's offset stays unfinished, so nothing is committed past it.
            Err(e) => Err(WeirError::Internal(format!("message task failed: {e}"))),
        }
    }

    fn on_completion(&mut self, c: Completion) {
        self.in_flight -= 1;
        let Some(st) = self.parts.get_mut(&c.epoch) else {
            return; // partition already released
        };
        st.in_flight -= 1;
        match c.outcome {
            Outcome::Finished => {
                if c.generation == st.generation {
                    st.tracker.finish(c.offset);
                    // Everything below the committable position has finished.
                    let next = st.tracker.committable().map_or(i64::MAX, |n| n.0);
                    while st.timestamps.front().is_some_and(|(o, _)| *o < next) {
                        st.timestamps.pop_front();
                    }
                }
                if !st.revoking
                    && let Some(next) = st.lanes.complete(c.lane)
                {
                    st.ready.push_back((c.lane, next));
                }
            }
            Outcome::Halted { class, error } => {
                if st.halted.is_none() {
                    ConsumerStats::add(&self.stats.halted_partitions, 1);
                    st.halted = Some(HaltedPartition {
                        partition: st.tp.clone(),
                        offset: c.offset,
                        class,
                        error,
                    });
                }
            }
            Outcome::Cancelled => {}
        }
        if !st.ready.is_empty() && !st.in_runnable && st.halted.is_none() {
            st.in_runnable = true;
            self.runnable.push_back(c.epoch);
        }
        self.check_pause(c.epoch);
    }

    /// Keeps a partition's window under `max_buffered_per_partition`: with its
    /// own queue by granting credit, otherwise by pausing it when full and
    /// resuming it at half.
    fn check_pause(&mut self, epoch: u64) {
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
    fn publish_partition_counts(&self) {
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
    fn pause_or_resume(
        consumer: &BaseConsumer<WeirContext>,
        st: &mut PartitionState,
        cap: usize,
    ) -> bool {
        let window = st.tracker.window_len();
        let want_paused = st.halted.is_some() || window >= cap || (st.paused && window > cap / 2);
        if want_paused == st.paused {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&st.tp.topic, st.tp.partition);
        let res = if want_paused {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl).map(|()| {
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
                    let mut seek = TopicPartitionList::new();
                    let _ = seek.add_partition_offset(
                        &st.tp.topic,
                        st.tp.partition,
                        Offset::Offset(next),
                    );
                    if let Err(e) = consumer.seek_partitions(seek, Duration::ZERO) {
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

    fn assign(&mut self, tps: Vec<(TopicPartition, Option<Arc<Gate>>)>) {
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
            self.parts.insert(
                epoch,
                PartitionState {
                    tp,
                    tracker: OffsetTracker::new(),
                    lanes: KeyScheduler::new(),
                    ready: VecDeque::new(),
                    delayed: VecDeque::new(),
                    timestamps: VecDeque::new(),
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
                },
            );
        }
        self.last_lookup = None;
        self.publish_partition_counts();
        // First credit for partitions with their own queue.
        for epoch in epochs {
            self.check_pause(epoch);
        }
    }

    fn begin_revoke(
        &mut self,
        partitions: Vec<TopicPartition>,
        reply: RevokeReply,
        deadline: std::time::Instant,
    ) {
        let mut held = Vec::with_capacity(partitions.len());
        for tp in partitions {
            if let Some(&epoch) = self.by_tp.get(&tp)
                && let Some(st) = self.parts.get_mut(&epoch)
            {
                held.push((tp, epoch));
                st.revoking = true;
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
        });
    }

    /// Answers revokes whose partitions are idle (or whose deadline passed, or all with `force`):
    /// cancels stragglers, releases the partitions and returns their finished offsets
    /// to the poll thread, which commits them before librdkafka lets them go.
    fn finish_revokes(&mut self, force: bool) {
        if self.revokes.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.revokes.len() {
            let r = &self.revokes[i];
            let late = force || now >= r.deadline;
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
                let Some(st) = self.parts.remove(&epoch) else {
                    continue;
                };
                if self.by_tp.get(&tp) == Some(&epoch) {
                    self.by_tp.remove(&tp);
                }
                st.cancel.cancel();
                if !self.by_tp.contains_key(&tp) {
                    self.clear_partition_gauges(&tp);
                }
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

    /// Sets the per-partition gauges of a partition this member no longer
    /// owns to 0, so that alerts on them do not fire for a partition another
    /// member now reports (the `metrics` facade cannot remove a series).
    fn clear_partition_gauges(&self, tp: &TopicPartition) {
        for name in ["weir_oldest_unprocessed_age_seconds", "weir_consumer_lag"] {
            metrics::gauge!(
                name,
                "group" => self.group_id.to_string(),
                "topic" => tp.topic.to_string(),
                "partition" => tp.partition.to_string()
            )
            .set(0.0);
        }
    }

    /// Positions that moved since the last commit; marks them as committed
    /// (a failed commit un-marks them, so the next interval retries).
    fn commit_list(&mut self) -> (TopicPartitionList, Vec<(u64, NextOffset)>) {
        let mut tpl = TopicPartitionList::new();
        let mut marks = Vec::new();
        for (epoch, st) in self.parts.iter_mut() {
            if st.revoking {
                continue;
            }
            if let Some(c) = st.tracker.committable()
                && Some(c) > st.last_committed
            {
                let _ =
                    tpl.add_partition_offset(&st.tp.topic, st.tp.partition, Offset::Offset(c.0));
                st.last_committed = Some(c);
                marks.push((*epoch, c));
            }
        }
        (tpl, marks)
    }

    /// Commits on a blocking thread so the dispatcher never waits on the broker,
    /// and so the outcome is known (librdkafka's async commit callback is not
    /// delivered through this consumer's queue). One commit at a time.
    /// Age of each partition's oldest unfinished message, as gauges and the max in the stats.
    fn publish_ages(&self) {
        let now = crate::clock::now_ms();
        let mut max = 0i64;
        for st in self.parts.values() {
            let age = st
                .tracker
                .committable()
                .and_then(|c| st.timestamps.front().filter(|(o, _)| *o == c.0))
                .map_or(0, |(_, ts)| crate::clock::age_ms(now, *ts));
            max = max.max(age);
            metrics::gauge!(
                "weir_oldest_unprocessed_age_seconds",
                "group" => self.group_id.to_string(),
                "topic" => st.tp.topic.to_string(),
                "partition" => st.tp.partition.to_string()
            )
            .set(age as f64 / 1000.0);
        }
        ConsumerStats::set(&self.stats.oldest_unprocessed_age_ms, max as u64);
    }

    fn start_commit(&mut self) {
        self.publish_ages();
        let (tpl, marks) = self.commit_list();
        if marks.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        let group = self.group_id.to_string();
        self.commit_pending = Some(tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let r = consumer.commit(&tpl, CommitMode::Sync);
            metrics::histogram!("weir_commit_seconds", "group" => group)
                .record(started.elapsed().as_secs_f64());
            (marks, r)
        }));
    }

    fn on_commit_done(&mut self, done: Result<CommitResult, tokio::task::JoinError>) {
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

    /// Stops fetching, drops what has not started, waits for in-flight messages
    /// up to `shutdown_deadline`, cancels the rest, and commits synchronously.
    async fn shut_down(mut self, events: &mut UnboundedReceiver<Event>) -> RunReport {
        self.stop_poller.store(true, Relaxed);
        for st in self.parts.values_mut() {
            st.ready.clear();
            st.lanes.clear();
            st.delayed.clear();
        }
        self.delayed_total = 0;
        ConsumerStats::set(&self.stats.delayed, 0);
        self.runnable.clear();
        let deadline = Instant::now() + self.limits.shutdown_deadline;
        while self.in_flight > 0 {
            let revoke_deadline = self.revokes.iter().map(|r| r.deadline).min();
            tokio::select! {
                Some(done) = self.tasks.join_next() => {
                    if let Err(e) = self.on_join(done) {
                        tracing::error!(error = %e, "during shutdown");
                    }
                }
                ev = events.recv() => match ev {
                    Some(Event::Revoked { partitions, reply, deadline }) => self.begin_revoke(partitions, reply, deadline),
                    Some(_) => {}
                    None => {}
                },
                // A revoke waiting here is answered once the commit under way
                // is done (or at its deadline): the poll thread is waiting
                // for it, and gives up at that deadline.
                done = async { self.commit_pending.as_mut().expect("guarded").await }, if self.commit_pending.is_some() => {
                    self.commit_pending = None;
                    self.on_commit_done(done);
                }
                _ = tokio::time::sleep_until(revoke_deadline.unwrap_or(deadline)), if revoke_deadline.is_some_and(|r| r < deadline) => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
            // Drop anything admitted-but-queued by completions.
            for st in self.parts.values_mut() {
                st.ready.clear();
            }
            self.finish_revokes(false);
        }
        let unfinished = self.in_flight;
        let drained = unfinished == 0;
        if !drained {
            tracing::warn!(
                group = %self.group_id, in_flight = unfinished,
                "shutdown deadline passed: cancelling unfinished messages; they are processed again after restart"
            );
            for st in self.parts.values() {
                st.cancel.cancel();
            }
            // Cancelled runs end at their next poll; give them a moment, then abort.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while self.tasks.join_next().await.is_some() {}
            })
            .await;
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        if let Some(pending) = self.commit_pending.take() {
            let done = pending.await;
            self.on_commit_done(done);
        }
        self.finish_revokes(true);
        let (tpl, _) = self.commit_list();
        if tpl.count() > 0 {
            let consumer = self.consumer.clone();
            let res =
                tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
            match res {
                Ok(Ok(())) => ConsumerStats::add(&self.stats.commits, 1),
                Ok(Err(e)) => {
                    ConsumerStats::add(&self.stats.commit_failures, 1);
                    tracing::warn!(group = %self.group_id, error = %e, "final commit failed; messages after the last commit are processed again");
                }
                Err(e) => tracing::warn!(error = %e, "final commit task failed"),
            }
        }
        let halted = self
            .parts
            .values()
            .filter_map(|s| s.halted.clone())
            .collect();
        self.stats.in_flight_now(0);
        RunReport {
            drained,
            unfinished,
            halted,
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn inline_policy_times_one_cheap_first_poll_in_eight_and_every_probe() {
        let mut p = InlinePolicy::new();
        let timed = (0..800).filter(|_| p.sample()).count();
        assert_eq!(timed, 100, "cheap first polls: one in SAMPLE is timed");
        // One slow timed poll is enough to leave inline mode, so a CPU-heavy
        // handler is detected within SAMPLE messages.
        p.record(Duration::from_millis(2));
        assert!(!p.should_try(), "slow first poll detected");
        assert!(p.sample(), "while slow, every probe is timed");
    }

    #[test]
    fn inline_policy_backs_off_for_slow_first_polls_and_probes() {
        let mut p = InlinePolicy::new();
        for _ in 0..100 {
            assert!(p.should_try(), "cheap first polls stay inline");
            p.record(Duration::from_micros(1));
        }
        for _ in 0..50 {
            if p.should_try() {
                p.record(Duration::from_millis(2));
            }
        }
        let tried = (0..640).filter(|_| p.should_try()).count();
        assert_eq!(
            tried, 10,
            "slow handlers: only every 64th message is probed"
        );
        // Cheap again: the probes bring the average down and inline comes back.
        let mut tries = 0;
        while !(0..4).all(|_| p.should_try()) {
            p.record(Duration::from_nanos(500));
            tries += 1;
            assert!(tries < 10_000, "never returned to inline polling");
        }
    }
}
