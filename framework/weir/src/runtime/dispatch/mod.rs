//! The dispatcher: one task that owns every partition's state (offset tracker,
//! key lanes, ready queue), so the hot path takes no lock.
//!
//! It admits fetched messages, starts them within the global and per-partition
//! caps, collects completions, commits finished offsets on an interval, pauses
//! partitions whose buffer is full, and drains partitions on revoke and shutdown.

//!
//! Split by concern: [`partition`] (one partition's state), [`inline`] (the
//! dispatch round and its inline first poll), [`backpressure`] (credit and
//! pause), [`rebalance`] (assign and revoke), [`commit`] (interval commits and
//! ages), [`shutdown`] (the drain). The dispatcher reaches librdkafka only
//! through [`PartitionControl`](control::PartitionControl) and runs messages
//! only through [`RunMessage`]: both have fakes, so the logic here is unit
//! tested without a broker. It must not decode, retry or know tiers exist.

mod backpressure;
mod commit;
pub(crate) mod control;
mod inline;
mod partition;
mod rebalance;
mod shutdown;
#[cfg(test)]
mod tests;
pub(crate) mod transaction;
mod valves;
mod views;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rustc_hash::FxHashMap as HashMap;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::poller::{Event, RevokeReply, WeirContext};
use super::run::{Fate, Outcome};
use super::{HaltedPartition, RunReport};
use crate::error::WeirError;
use crate::message::{RawMessage, TopicPartition};
use crate::offsets::NextOffset;
use crate::scheduler::Ordering;
use crate::stats::ConsumerStats;
#[cfg(test)]
use control::CommitError;
use control::PartitionControl;
use inline::InlinePolicy;
use partition::{Completion, PartitionState};

/// Runs one message to an [`Outcome`]; implemented by the runtime's `Runner`.
pub(crate) trait RunMessage: Send + Sync + 'static {
    fn run_message(
        self: Arc<Self>,
        raw: Arc<RawMessage>,
        cancel: Arc<CancellationToken>,
    ) -> impl Future<Output = Outcome> + Send + 'static;
}

/// A plug-in's say on when an admitted message may run. The dispatcher holds
/// a message with a time here in its partition's queue of delayed messages,
/// in offset order, and sleeps until the head is due: it knows nothing of
/// why (retry tiers and their due times, in [`crate::retry`]).
pub(crate) trait Admission: Send + Sync + 'static {
    /// When `m` may run, if not now.
    fn hold_until(&self, m: &RawMessage) -> Option<Instant>;
}

pub(crate) struct Limits {
    pub(crate) ordering: Ordering,
    pub(crate) max_in_flight: usize,
    pub(crate) max_in_flight_per_partition: usize,
    pub(crate) max_buffered_per_partition: usize,
    pub(crate) inline_first_poll: bool,
    pub(crate) inline_first_poll_limit: Duration,
    pub(crate) commit_interval: Duration,
    pub(crate) shutdown_deadline: Duration,
    /// Decides at admission whether a message waits before it runs (the
    /// retry tiers plug in here); `None`: every message runs when its lane is free.
    pub(crate) admission: Option<Arc<dyn Admission>>,
    /// Halts a partition when too much of it goes to the DLQ.
    pub(crate) dlq_limit: crate::valves::DlqLimit,
    /// The retry budget, when retry tiers publish and it is on.
    pub(crate) retry_budget: Option<crate::valves::RetryBudget>,
}

impl Limits {
    /// The caps and intervals of `config`; no tier holds (retry tiers add theirs).
    pub(crate) fn from_config(config: &crate::config::ConsumerConfig) -> Self {
        Limits {
            ordering: config.ordering,
            max_in_flight: config.max_in_flight,
            max_in_flight_per_partition: config.max_in_flight_per_partition,
            max_buffered_per_partition: config.max_buffered_per_partition,
            inline_first_poll: config.inline_first_poll,
            inline_first_poll_limit: config.inline_first_poll_limit,
            commit_interval: config.commit_interval,
            shutdown_deadline: config.shutdown_deadline,
            admission: None,
            dlq_limit: config.dlq_limit.clone(),
            retry_budget: None,
        }
    }
}

/// Most messages started by one dispatch round before the loop looks at its
/// other inputs (fetched batches, commits, revokes) again.
const DISPATCH_BUDGET: usize = 4096;

/// Most emptied message allocations kept for later messages.
const SPARE_MESSAGES: usize = 1024;

struct PendingRevoke {
    /// The revoked partitions with the assignment epoch each had when the
    /// revoke arrived: answering it releases those epochs only, never a
    /// later assignment of the same partition.
    partitions: Vec<(TopicPartition, u64)>,
    reply: RevokeReply,
    deadline: Instant,
    /// Transaction mode: answered once this many transaction commits are
    /// done (the one covering these partitions).
    after_commit: u64,
}

pub(crate) struct Dispatcher<R, K = BaseConsumer<WeirContext>> {
    consumer: Arc<K>,
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
    /// The clock (epoch ms) as of the loop's last turn or fetched batch.
    now_ms: i64,
    /// The retry budget's window, when it is on.
    budget: Option<crate::valves::Budget>,
    /// Kafka transactions, when the consumer runs in them.
    tx: Option<transaction::TxMode>,
    /// Allocations of finished messages that nothing else held, emptied,
    /// for the next admitted messages: admitting a message then allocates
    /// nothing (a batch's worth of allocations and frees in a row is the
    /// slow path of the system allocator).
    spare_messages: Vec<Arc<RawMessage>>,
}

type CommitResult = (Vec<(u64, NextOffset)>, Result<(), control::CommitError>);

impl<R: RunMessage, K: PartitionControl> Dispatcher<R, K> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        consumer: Arc<K>,
        runner: Arc<R>,
        limits: Limits,
        stats: Arc<ConsumerStats>,
        shutdown: CancellationToken,
        stop_poller: Arc<AtomicBool>,
        group_id: Arc<str>,
    ) -> Self {
        let budget = limits.retry_budget.clone().map(crate::valves::Budget::new);
        let inline = InlinePolicy::new(limits.inline_first_poll_limit);
        Dispatcher {
            consumer,
            runner,
            limits,
            now_ms: crate::clock::now_ms(),
            budget,
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
            inline,
            inline_done: Vec::new(),
            tx: None,
            spare_messages: Vec::new(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut events: UnboundedReceiver<Event>,
    ) -> Result<RunReport, WeirError> {
        let mut commit_tick = tokio::time::interval(self.limits.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.shutdown.clone();
        let mut fatal = self.tx_begin_first().err();
        while fatal.is_none() {
            let tx_commit = self.tx.as_ref().is_some_and(|t| t.commit.is_some());
            let revoke_deadline = self.revokes.iter().map(|r| r.deadline).min();
            // Unbiased on purpose: under load completions and fetched batches are
            // always ready, and a biased order would starve commits and revokes.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if self.budget.is_some() { self.now_ms = crate::clock::now_ms(); }
                    if let Err(e) = self.on_join(done) { fatal = Some(e); break; }
                    // Drain whatever else finished without another select round.
                    while let Some(done) = self.tasks.try_join_next() {
                        if let Err(e) = self.on_join(done) { fatal = Some(e); break; }
                    }
                    if fatal.is_some() { break; }
                }
                ev = events.recv() => match ev {
                    Some(Event::Batch(batch)) => {
                        self.consumer.claimed(batch.len());
                        self.now_ms = crate::clock::now_ms();
                        self.admit_batch(batch);
                    }
                    Some(Event::Assigned(tps)) => self.assign(tps),
                    Some(Event::Revoked { partitions, reply, deadline }) => self.begin_revoke(partitions, reply, deadline),
                    Some(Event::Rewound(tps)) => self.rewound(tps),
                    Some(Event::Fatal(e)) => { fatal = Some(WeirError::Fatal(e)); break; }
                    None => { fatal = Some(WeirError::Internal("the poll thread stopped unexpectedly".into())); break; }
                },
                _ = commit_tick.tick(), if self.commit_pending.is_none() => {
                    if self.tx.is_some() { self.begin_close() } else { self.start_commit() }
                }
                done = async { self.tx.as_mut().and_then(|t| t.commit.as_mut()).expect("guarded").await }, if tx_commit => {
                    if let Err(e) = self.on_tx_commit_done(done, true).await { fatal = Some(e); break; }
                }
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
            if let Some(e) = self.tx_failure() {
                fatal = Some(e);
                break;
            }
            self.release_due();
            self.now_ms = crate::clock::now_ms();
            ConsumerStats::set(&self.stats.loop_heartbeat_ms, self.now_ms.max(0) as u64);
            self.judge_budget();
            if let Err(e) = self.dispatch_ready() {
                fatal = Some(e);
                break;
            }
            self.tx_maybe_commit();
        }
        if fatal.is_some() {
            // Nothing of the open transaction may commit now.
            self.tx_abort().await;
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

    /// Admits a fetched batch. Each partition's credit and pause state is
    /// looked at once per run of its messages (a batch is mostly one
    /// partition's), not once per message.
    fn admit_batch(&mut self, batch: Vec<RawMessage>) {
        let mut touched = None;
        for m in batch {
            if let Some(epoch) = self.admit(m) {
                self.touch(&mut touched, Some(epoch));
            }
        }
        self.touch(&mut touched, None);
    }

    /// For a run of messages of one partition at a time: looks at the
    /// credit and pause state of the partition in `touched` when the run
    /// moves on to `next` (another partition, or `None`: the end).
    fn touch(&mut self, touched: &mut Option<u64>, next: Option<u64>) {
        if let Some(before) = std::mem::replace(touched, next)
            && Some(before) != next
        {
            self.check_pause(before);
        }
    }

    /// Admits one message; the partition it counted against, whose credit
    /// and pause state the caller looks at ([`Self::check_pause`]).
    fn admit(&mut self, m: RawMessage) -> Option<u64> {
        let tx_mode = self.tx.is_some();
        let Some(epoch) = self.lookup(&m.topic, m.partition) else {
            // Fetched before a revoke took effect: the next owner gets it.
            ConsumerStats::add(&self.stats.dropped_on_revoke, 1);
            return None;
        };
        let st = self.parts.get_mut(&epoch).expect("by_tp and parts agree");
        st.received += 1;
        if st.revoking {
            ConsumerStats::add(&self.stats.dropped_on_revoke, 1);
            return Some(epoch);
        }
        if st.rewinding {
            // Fetched before the seek back (an aborted transaction): it
            // comes again from the new position.
            ConsumerStats::add(&self.stats.refetched_duplicates, 1);
            return Some(epoch);
        }
        if let Err(e) = st.tracker.track(m.offset) {
            if st.refetch_from.is_some_and(|from| m.offset >= from) {
                // Fetched again after Weir's seek on resume: already ours.
                ConsumerStats::add(&self.stats.refetched_duplicates, 1);
                return Some(epoch);
            }
            // Not a copy of anything tracked: the log moved backwards.
            let dropped = Self::resync(st, &self.stats, e.highest, m.offset);
            self.delayed_total -= dropped.delayed;
            ConsumerStats::sub(&self.stats.delayed, dropped.delayed as u64);
            // A fresh tracker takes any offset.
            let _ = st.tracker.track(m.offset);
        }
        if tx_mode && st.tx_start.is_none() {
            st.tx_start = Some(m.offset);
        }
        let due = self
            .limits
            .admission
            .as_ref()
            .and_then(|a| a.hold_until(&m));
        let m = Self::share(&mut self.spare_messages, m);
        st.admitted.push_back(partition::Admitted {
            offset: m.offset,
            timestamp_ms: m.timestamp_ms,
            admitted_ms: self.now_ms,
            message: Arc::downgrade(&m),
        });
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
        Some(epoch)
    }

    /// `m`, shared, in a spare allocation when there is one.
    fn share(spare: &mut Vec<Arc<RawMessage>>, m: RawMessage) -> Arc<RawMessage> {
        match spare.pop() {
            Some(mut a) => match Arc::get_mut(&mut a) {
                Some(slot) => {
                    *slot = m;
                    a
                }
                None => Arc::new(m),
            },
            None => Arc::new(m),
        }
    }

    /// Keeps `m`'s allocation for a later message if nothing else holds
    /// it (a processor may keep a clone, the holder view a weak reference),
    /// emptied at once: its bytes are freed now, not when it is used again.
    fn recycle(&mut self, mut m: Arc<RawMessage>) {
        if self.spare_messages.len() < SPARE_MESSAGES
            && let Some(raw) = Arc::get_mut(&mut m)
        {
            raw.key = None;
            raw.payload = None;
            raw.headers = crate::message::Headers::default();
            self.spare_messages.push(m);
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

    /// Whether ready messages are waiting that the caps would let start now
    /// (the dispatch budget ran out): the loop comes back without blocking.
    fn more_ready(&self) -> bool {
        let closing = self.tx_closing();
        !self.budget_spent()
            && self.in_flight < self.limits.max_in_flight
            && self.runnable.iter().any(|e| {
                self.parts.get(e).is_some_and(|st| {
                    transaction::may_start(st, closing)
                        && st.in_flight < self.limits.max_in_flight_per_partition
                        && (!st.revoking || closing)
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
                let epoch = c.epoch;
                self.on_completion(c);
                self.check_pause(epoch);
                Ok(())
            }
            Err(e) if e.is_cancelled() => Ok(()),
            // Runner catches handler panics; reaching this is a Weir bug. The
            // message's offset stays unfinished, so nothing is committed past it.
            Err(e) => Err(WeirError::Internal(format!("message task failed: {e}"))),
        }
    }

    /// Records a finished run. The caller then looks at the partition's
    /// credit and pause state ([`Self::check_pause`]), once for a run of
    /// completions of the same partition.
    fn on_completion(&mut self, c: Completion) {
        self.in_flight -= 1;
        let Some(st) = self.parts.get_mut(&c.epoch) else {
            return; // partition already released
        };
        let message = c.message;
        st.in_flight -= 1;
        match c.outcome {
            Outcome::Finished(fate) => {
                if c.generation == st.generation {
                    st.tracker.finish(c.offset);
                    // Everything below the committable position has finished.
                    let next = st.tracker.committable().map_or(i64::MAX, |n| n.0);
                    while st.admitted.front().is_some_and(|a| a.offset < next) {
                        st.admitted.pop_front();
                    }
                }
                if let Some(b) = &mut self.budget {
                    b.record(self.now_ms, fate == Fate::Retried);
                }
                if let Some(t) = st
                    .breaker
                    .record(&self.limits.dlq_limit, fate == Fate::DeadLettered)
                    && st.halted.is_none()
                {
                    valves::trip(&self.stats, &self.group_id, st, c.offset, &t);
                }
                // In transaction mode a revoking partition runs what it
                // started up to its cut (see `transaction`).
                if (!st.revoking || self.tx.is_some())
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
        self.recycle(message);
    }
}
