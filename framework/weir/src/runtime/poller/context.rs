//! [`WeirContext`]: librdkafka's callbacks (rebalances, errors, statistics,
//! logs) turned into events for the dispatcher.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc::UnboundedSender;

use crate::client::{describe_fatal, fatal_poll_error, is_fatal, refused_connection};
use crate::message::{RawMessage, TopicPartition};
use crate::stats::ConsumerStats;

use super::*;

/// How long the poll thread waits for the ListOffsets answer that wakes
/// the fetchers after an incremental rebalance: the request is what wakes
/// them; the answer only has to arrive before this or is dropped.
const FETCHER_WAKE_WAIT: Duration = Duration::from_millis(20);

pub(crate) struct WeirContext {
    pub(super) events: UnboundedSender<Event>,
    pub(super) batch: Mutex<Vec<RawMessage>>,
    pub(super) revoke_wait: Duration,
    pub(crate) closing: AtomicBool,
    pub(super) stats: Arc<ConsumerStats>,
    pub(super) group_id: String,
    /// This member's static `group.instance.id`, named in fatal errors.
    pub(crate) instance_id: OnceLock<String>,
    /// The first fatal client error (authentication, untrusted certificate),
    /// so that start-up checks report it instead of a generic transport error.
    pub(super) fatal: Mutex<Option<String>>,
    /// The consumer, for splitting partition queues in the assign callback.
    pub(super) consumer: OnceLock<Weak<BaseConsumer<WeirContext>>>,
    pub(super) partition_queues: bool,
    /// Partition queues are read in batches through
    /// [`weir_ffi::PartitionReader`] (`batch_consume`); otherwise one
    /// message per rust-rdkafka poll.
    pub(crate) batch_consume: bool,
    pub(super) splits: Mutex<Vec<Split>>,
    pub(super) waker: Arc<PollWaker>,
    /// Topics whose partitions start at their beginning when the group has
    /// no commit there, whatever `auto_offset_reset` says (a plug-in's
    /// topics, such as retry tiers, whose records must never be skipped).
    pub(crate) from_beginning: OnceLock<std::collections::HashSet<String>>,
    /// Partitions assigned now, for the lag gauges: librdkafka's statistics
    /// keep reporting a partition as desired for a while after a revoke, and
    /// its gauge would keep its last value on a member that no longer owns it.
    pub(super) assigned: Mutex<std::collections::HashSet<(String, i32)>>,
    /// `consumer`, `classic-cooperative` or `classic-eager`, from the config:
    /// the rebalance callback's protocol (labels, incremental or not).
    pub(crate) group_protocol: OnceLock<&'static str>,
    /// Partitions the dispatcher asked to move back (an aborted
    /// transaction's input, processed again), served by the poll thread so
    /// that [`Event::Rewound`] separates what it fetched before the seek
    /// from what it fetches after.
    pub(super) rewinds: Mutex<Vec<(TopicPartition, i64)>>,
    /// Messages sent to the dispatcher and not yet taken off the channel by
    /// it. Without partition queues a full partition is paused by the
    /// dispatcher, which it can only do once it has seen the messages: while
    /// it is slow to take them (its thread busy, the machine loaded) the
    /// poll thread would go on moving whatever librdkafka fetches into the
    /// unbounded channel. It stops taking from the consumer queue at
    /// [`WeirContext::unclaimed_limit`] instead, so that what Weir holds
    /// stays bounded by the configuration, not by the dispatcher's speed.
    pub(super) unclaimed: AtomicU64,
    /// See [`WeirContext::unclaimed`]; 0: no limit (partition queues bound
    /// what is sent by credit).
    pub(crate) unclaimed_limit: u64,
}

impl WeirContext {
    pub(crate) fn new(
        events: UnboundedSender<Event>,
        revoke_wait: Duration,
        stats: Arc<ConsumerStats>,
        group_id: String,
        partition_queues: bool,
    ) -> Self {
        let waker = Arc::new(PollWaker::default());
        WeirContext {
            events,
            batch: Mutex::new(Vec::with_capacity(BATCH)),
            revoke_wait,
            closing: AtomicBool::new(false),
            stats,
            group_id,
            instance_id: OnceLock::new(),
            fatal: Mutex::new(None),
            consumer: OnceLock::new(),
            partition_queues,
            batch_consume: true,
            splits: Mutex::new(Vec::new()),
            waker,
            from_beginning: OnceLock::new(),
            assigned: Mutex::new(Default::default()),
            group_protocol: OnceLock::new(),
            rewinds: Mutex::new(Vec::new()),
            unclaimed: AtomicU64::new(0),
            unclaimed_limit: 0,
        }
    }

    /// The dispatcher took `n` messages off the channel; wakes the poll
    /// thread if it stopped at the limit.
    pub(crate) fn claimed(&self, n: usize) {
        let before = self.unclaimed.fetch_sub(n as u64, Relaxed);
        if self.unclaimed_limit > 0 && before >= self.unclaimed_limit {
            self.waker.wake();
        }
    }

    /// Whether the poll thread stops taking from the consumer queue: with
    /// `taken` more messages not yet sent, the dispatcher would have too many
    /// waiting for it (see [`WeirContext::unclaimed`]).
    pub(super) fn unclaimed_full(&self, taken: usize) -> bool {
        self.unclaimed_limit > 0
            && self.unclaimed.load(Relaxed) + taken as u64 >= self.unclaimed_limit
    }

    /// Asks the poll thread to move `to`'s partitions back (see
    /// [`Event::Rewound`]).
    pub(crate) fn request_rewind(&self, to: Vec<(TopicPartition, i64)>) {
        if to.is_empty() {
            return;
        }
        self.rewinds.lock().extend(to);
        self.waker.wake();
    }

    /// Serves the rewinds asked for: what was fetched before goes out first,
    /// then each owned partition's fetch position moves (librdkafka drops
    /// every message it fetched before the seek from then on: a version
    /// barrier), then [`Event::Rewound`] tells the dispatcher that what
    /// follows was fetched from the new position. A seek that fails for an
    /// owned partition is fatal: going on would skip the messages between the
    /// new position and the old one, whose outputs were aborted.
    pub(super) fn serve_rewinds(&self, consumer: &BaseConsumer<Self>) {
        let asked = std::mem::take(&mut *self.rewinds.lock());
        if asked.is_empty() {
            return;
        }
        self.flush();
        let mut done = Vec::with_capacity(asked.len());
        for (tp, offset) in asked {
            // Revoked meanwhile: its next owner starts from the last commit.
            if !self.owns(&tp) {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            let seek = tpl
                .add_partition_offset(&tp.topic, tp.partition, rdkafka::Offset::Offset(offset))
                .and_then(|()| consumer.seek_partitions(tpl, Duration::ZERO))
                .and_then(|out| match out.elements().first().map(|e| e.error()) {
                    // Not waited for: librdkafka has bumped the partition's
                    // version barrier, and fetches from `offset` next.
                    Some(Err(e))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::InProgress) =>
                    {
                        Ok(())
                    }
                    Some(Err(e)) => Err(e),
                    _ => Ok(()),
                });
            if let Err(e) = seek {
                self.fatal(format!(
                    "moving partition {tp} back to offset {offset} after an aborted transaction failed ({e}); the member stops so that the partition's next owner processes it from the last commit"
                ));
                return;
            }
            tracing::info!(group = %self.group_id, partition = %tp, offset, "partition moved back to the last transaction commit");
            done.push(tp);
        }
        let _ = self.events.send(Event::Rewound(done));
    }

    /// Whether `tp` is assigned to this member now.
    pub(crate) fn owns(&self, tp: &crate::message::TopicPartition) -> bool {
        self.assigned
            .lock()
            .contains(&(tp.topic.to_string(), tp.partition))
    }

    /// Hands the context its consumer (weakly), so that partitions can get
    /// their own queues when they are assigned; wakes the poll thread when the
    /// consumer queue (messages, rebalances, errors) becomes non-empty.
    pub(crate) fn attach(consumer: &mut Arc<BaseConsumer<WeirContext>>) {
        let waker = consumer.context().waker.clone();
        if let Some(c) = Arc::get_mut(consumer) {
            c.set_nonempty_callback(move || waker.wake());
        }
        let _ = consumer.context().consumer.set(Arc::downgrade(consumer));
    }

    /// Gives each newly assigned partition its own queue and a gate with no
    /// credit yet (the dispatcher grants it). `None` where splitting is off or
    /// failed: that partition is read from the consumer queue and paused when full.
    pub(super) fn split(&self, tps: &[TopicPartition]) -> Vec<Option<Arc<Gate>>> {
        // A closing member is still assigned partitions (another member left
        // meanwhile), and nothing will read them: a queue made now would hold
        // the consumer, which the poll thread waits to hold alone before it
        // leaves the group (it once waited for ever, and `run()` with it).
        if self.closing.load(Relaxed) {
            return vec![None; tps.len()];
        }
        let consumer = match self.consumer.get().and_then(Weak::upgrade) {
            Some(c) if self.partition_queues => c,
            _ => return vec![None; tps.len()],
        };
        let mut splits = self.splits.lock();
        tps.iter()
            .map(|tp| {
                // Drop an old handle first: dropping it disables the queue's
                // wake-up callback, which the new handle sets again.
                splits.retain(|s| s.tp != *tp);
                let mut queue = consumer.split_partition_queue(&tp.topic, tp.partition)?;
                let waker = self.waker.clone();
                queue.set_nonempty_callback(move || waker.wake());
                // A second handle on the queue just split, for batch reads;
                // without one the partition is read message by message.
                let reader = if self.batch_consume {
                    weir_ffi::PartitionReader::new(&consumer, &tp.topic, tp.partition)
                } else {
                    None
                };
                let gate = Arc::new(Gate {
                    room: AtomicI64::new(0),
                    waker: self.waker.clone(),
                });
                splits.push(Split {
                    tp: tp.clone(),
                    queue,
                    reader,
                    gate: gate.clone(),
                });
                Some(gate)
            })
            .collect()
    }

    /// Drops the queues of revoked partitions (what they still hold belongs
    /// to the next owner, which starts from the committed offset).
    pub(super) fn unsplit(&self, tps: &[TopicPartition]) {
        self.splits.lock().retain(|s| !tps.contains(&s.tp));
    }

    /// Takes messages from the partition queues that have credit. Returns
    /// whether any partition has its own queue, and whether there may be more
    /// to take right away.
    pub(super) fn poll_partitions(&self, copies: &mut Copies) -> (bool, bool) {
        let mut splits = self.splits.lock();
        let mut more = false;
        let Copies { arena, taken } = copies;
        for s in splits.iter_mut() {
            let room = s.gate.room.load(Relaxed);
            if room <= 0 {
                continue;
            }
            let want = (room as usize).min(BATCH);
            let mut took = 0;
            match &mut s.reader {
                Some(reader) => {
                    let topic = &s.tp.topic;
                    // (`on_poll_error` takes no lock held here.)
                    let n = reader.consume(want, |m| match m {
                        Ok(m) => {
                            took += 1;
                            taken.push(convert_fetched(topic.clone(), arena, &m));
                        }
                        Err(e) => self.on_poll_error(e),
                    });
                    more |= n == want;
                }
                None => {
                    while took < want {
                        match s.queue.poll(Duration::ZERO) {
                            Some(Ok(m)) => {
                                took += 1;
                                // The queue is the partition's own: its topic is known.
                                taken.push(convert_with(
                                    s.tp.topic.clone(),
                                    s.tp.partition,
                                    arena,
                                    &m,
                                ));
                            }
                            Some(Err(e)) => {
                                self.on_poll_error(e);
                                break;
                            }
                            None => break,
                        }
                    }
                }
            }
            if took > 0 {
                s.gate.room.fetch_sub(took as i64, Relaxed);
                self.push_all(taken);
            }
            more |= took == want;
        }
        (!splits.is_empty(), more)
    }

    /// `msg` with this member's group and static instance id, when it has one.
    fn with_instance(&self, msg: String) -> String {
        match self.instance_id.get() {
            Some(id) => format!("group `{}`, group_instance_id `{id}`: {msg}", self.group_id),
            None => msg,
        }
    }

    /// The `protocol` label of rebalance metrics, set from the config when
    /// the consumer is created: `consumer`, `classic-cooperative` or
    /// `classic-eager`. Known up front on purpose: asking librdkafka
    /// (`rd_kafka_rebalance_protocol`) from the rebalance callback waits on
    /// its group handler, which never answers while the consumer closes (a
    /// hang seen when a consumer was dropped during a revoke).
    fn protocol_label(&self) -> &'static str {
        self.group_protocol
            .get()
            .copied()
            .unwrap_or("classic-cooperative")
    }

    /// Counts a rebalance callback, the partitions it moved and the time it
    /// took (a revoke's includes draining and its commit).
    fn record_rebalance(
        &self,
        protocol: &'static str,
        event: &'static str,
        partitions: usize,
        took: Duration,
    ) {
        let g = self.group_id.clone();
        metrics::counter!("weir_rebalance_events_total", "group" => g.clone(), "protocol" => protocol, "event" => event)
            .increment(1);
        let moved = match event {
            "assign" => Some("weir_partitions_assigned_total"),
            "revoke" => Some("weir_partitions_revoked_total"),
            "lost" => Some("weir_partitions_lost_total"),
            _ => None,
        };
        if let Some(name) = moved {
            metrics::counter!(name, "group" => g.clone(), "protocol" => protocol)
                .increment(partitions as u64);
        }
        metrics::histogram!("weir_rebalance_callback_seconds", "group" => g, "protocol" => protocol, "event" => event)
            .record(took.as_secs_f64());
    }

    /// Refreshes the member epoch (consumer protocol) or generation (classic)
    /// gauge from librdkafka's group handler.
    pub(super) fn refresh_member_epoch(&self, consumer: &BaseConsumer<Self>) {
        if self.closing.load(Relaxed) {
            return;
        }
        if let Some(m) = weir_ffi::membership(consumer.client()) {
            self.stats
                .member_epoch
                .store(i64::from(m.generation), Relaxed);
        }
    }

    /// Wakes librdkafka's fetchers for the partitions this member keeps
    /// after an incremental rebalance event.
    ///
    /// librdkafka pauses every assigned partition while an incremental
    /// rebalance event waits for its callback and resumes them when the
    /// callback assigns or unassigns. A broker thread that found all its
    /// partitions paused has nothing to fetch and sleeps until its next
    /// tick (up to 1 s in librdkafka 2.12: `rd_kafka_max_block_ms`); the
    /// resume does not wake it, so the partitions that did not move stopped
    /// for up to a second on every join and leave (measured: 0.6-1.0 s,
    /// about one rebalance in three). A request to the partitions' leaders
    /// wakes their broker threads at once, which then see the resume: a
    /// ListOffsets for the latest offsets, sent and not waited for beyond a
    /// few milliseconds (its answer is not needed).
    ///
    /// The resume itself is not done by the time `incremental_(un)assign`
    /// returns: librdkafka's main thread queues one op per partition on its
    /// own queue while it handles the assign call, and serves them after
    /// replying. A broker thread woken before then still saw the partitions
    /// paused and slept on (a CI run: 1.006 s). `rd_kafka_assignment` goes
    /// through the same queue (first in, first out), so once it returns the
    /// partitions are resumed, and only then is the request sent.
    pub(super) fn wake_fetchers(&self, consumer: &BaseConsumer<Self>) {
        if self.closing.load(Relaxed) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in self.assigned.lock().iter() {
            let _ = tpl.add_partition_offset(topic, *partition, rdkafka::Offset::End);
        }
        if tpl.count() == 0 {
            return;
        }
        let started = std::time::Instant::now();
        // A round trip through librdkafka's main queue, behind the resumes.
        let _ = consumer.assignment();
        let _ = consumer.offsets_for_times(tpl, FETCHER_WAKE_WAIT);
        tracing::trace!(group = %self.group_id, took = ?started.elapsed(), "fetchers woken after a rebalance");
    }

    /// The first fatal client error seen, if any.
    pub(crate) fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().clone()
    }

    pub(super) fn fatal(&self, msg: String) {
        self.fatal.lock().get_or_insert_with(|| msg.clone());
        let _ = self.events.send(Event::Fatal(msg));
    }

    /// Copies a fetched message into the batch; sends the batch when full.
    pub(super) fn take(&self, topics: &mut Topics, arena: &mut Arena, m: &BorrowedMessage<'_>) {
        self.push(convert(topics, arena, m));
    }

    /// Adds a message to the batch; sends the batch when full.
    pub(super) fn push(&self, m: RawMessage) {
        self.add(|b| b.push(m));
    }

    /// Adds messages to the batch (emptying `ms`), under one lock; sends the
    /// batch when full. The messages are not copied again when it can be
    /// helped: into an empty batch, `ms` becomes the batch (and takes the
    /// empty one's room); a batch they would overflow is sent first, as
    /// growing it would copy every message in it.
    pub(super) fn push_all(&self, ms: &mut Vec<RawMessage>) {
        let mut b = self.batch.lock();
        if !b.is_empty() && b.len() + ms.len() > b.capacity() {
            let waiting = std::mem::replace(&mut *b, Vec::with_capacity(BATCH));
            drop(b);
            self.send(waiting);
        } else {
            drop(b);
        }
        self.add(|b| {
            if b.is_empty() {
                std::mem::swap(b, ms);
            } else {
                b.append(ms);
            }
        });
    }

    fn add(&self, f: impl FnOnce(&mut Vec<RawMessage>)) {
        let mut b = self.batch.lock();
        f(&mut b);
        let full = b.len() >= BATCH;
        drop(b);
        if full {
            self.flush();
        }
    }

    /// Sends the partial batch. Called before any rebalance event so that the
    /// dispatcher sees messages and assignment changes in fetch order.
    pub(super) fn flush(&self) {
        let mut b = self.batch.lock();
        if b.is_empty() {
            return;
        }
        let full = std::mem::replace(&mut *b, Vec::with_capacity(BATCH));
        drop(b);
        self.send(full);
    }

    /// Sends a batch taken out of `self.batch` to the dispatcher.
    fn send(&self, batch: Vec<RawMessage>) {
        let n = batch.len() as u64;
        ConsumerStats::add(&self.stats.received, n);
        self.unclaimed.fetch_add(n, Relaxed);
        let _ = self.events.send(Event::Batch(batch));
    }

    pub(super) fn on_poll_error(&self, e: KafkaError) {
        match fatal_poll_error(&e) {
            Some(code) => {
                tracing::error!(group = %self.group_id, error = %e, "fatal consumer error");
                let msg = self.with_instance(describe_fatal(code, &e));
                self.fatal(msg);
            }
            _ => {
                tracing::warn!(group = %self.group_id, error = %e, "consumer error (librdkafka retries it)")
            }
        }
    }
}

fn to_tps(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition {
            topic: Arc::from(e.topic()),
            partition: e.partition(),
        })
        .collect()
}

impl ClientContext for WeirContext {
    fn stats(&self, s: rdkafka::Statistics) {
        let mut total: i64 = 0;
        let assigned = self.assigned.lock();
        for (topic, t) in &s.topics {
            for (p, part) in &t.partitions {
                if *p < 0
                    || !part.desired
                    || part.consumer_lag < 0
                    || !assigned.contains(&(topic.clone(), *p))
                {
                    continue;
                }
                total += part.consumer_lag;
                metrics::gauge!(
                    "weir_consumer_lag",
                    "group" => self.group_id.clone(),
                    "topic" => topic.clone(),
                    "partition" => p.to_string()
                )
                .set(part.consumer_lag as f64);
            }
        }
        ConsumerStats::set(&self.stats.lag, total.max(0) as u64);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::client::log_to_tracing(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code()
            && is_fatal(code)
        {
            tracing::error!(group = %self.group_id, %error, reason, "fatal client error");
            let msg = self.with_instance(format!("{}: {reason}", describe_fatal(code, &error)));
            self.fatal(msg);
        } else if let Some(msg) = refused_connection(&error, reason) {
            // A broker certificate the client does not trust will not become
            // trusted by retrying: stop with a message that says what to fix.
            tracing::error!(group = %self.group_id, %error, reason, "fatal TLS error");
            self.fatal(msg);
        } else {
            tracing::warn!(group = %self.group_id, %error, reason, "client error (librdkafka retries it)");
        }
    }
}

impl ConsumerContext for WeirContext {
    /// rust-rdkafka's rebalance, with two changes on assign: partitions of
    /// [`WeirContext::from_beginning`] topics without a committed offset
    /// start at their beginning, and every assigned partition is
    /// resumed (a pause from before a revoke would otherwise outlive it).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr as E;
        let started = std::time::Instant::now();
        let protocol = self.protocol_label();
        let event = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => "assign",
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if consumer.assignment_lost() => "lost",
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => "revoke",
            _ => "error",
        };
        let moved = tpl.count();
        if event == "revoke" || event == "lost" {
            ConsumerStats::set(
                &self.stats.rebalancing_since_ms,
                crate::clock::now_ms().max(1) as u64,
            );
        }
        let rebalance = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(topics) = self.from_beginning.get() {
                    crate::kafka::uncommitted_from_beginning(consumer, tpl, topics, &self.group_id);
                }
                Rebalance::Assign(tpl)
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            other => Rebalance::Error(KafkaError::Rebalance(other.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        // Incremental (cooperative-sticky, and every rebalance of the
        // consumer protocol) or eager, as configured: see `protocol_label`.
        let cooperative = protocol != "classic-eager";
        let result = match (&rebalance, cooperative) {
            (Rebalance::Assign(tpl), true) => consumer.incremental_assign(tpl),
            (Rebalance::Assign(tpl), false) => consumer.assign(tpl),
            (_, true) => consumer.incremental_unassign(tpl),
            (_, false) => consumer.unassign(),
        };
        if let Err(e) = result {
            tracing::error!(group = %self.group_id, error = %e, "applying a rebalance failed");
        }
        // librdkafka keeps a partition's pause across a revoke and re-assign;
        // Weir's new state for it is unpaused, so it must be fetching too.
        if let Rebalance::Assign(tpl) = &rebalance
            && tpl.count() > 0
            && let Err(e) = consumer.resume(tpl)
        {
            tracing::warn!(group = %self.group_id, error = %e, "resuming newly assigned partitions failed");
        }
        self.post_rebalance(consumer, &rebalance);
        if cooperative {
            self.wake_fetchers(consumer);
        }
        ConsumerStats::set(&self.stats.rebalancing_since_ms, 0);
        self.record_rebalance(protocol, event, moved, started.elapsed());
        self.refresh_member_epoch(consumer);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        ConsumerStats::add(&self.stats.rebalances, 1);
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        self.flush();
        let partitions = to_tps(tpl);
        {
            let mut assigned = self.assigned.lock();
            for tp in &partitions {
                assigned.remove(&(tp.topic.to_string(), tp.partition));
            }
        }
        self.unsplit(&partitions);
        if self.closing.load(Relaxed) {
            return;
        }
        tracing::info!(group = %self.group_id, partitions = partitions.len(), "partitions revoked; draining");
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let deadline = std::time::Instant::now() + self.revoke_wait;
        if self
            .events
            .send(Event::Revoked {
                partitions,
                reply: tx,
                deadline,
            })
            .is_err()
        {
            return;
        }
        // The dispatcher answers by `deadline`; the grace covers its loop
        // coming round (one dispatch round, one commit under way).
        let wait = deadline.saturating_duration_since(std::time::Instant::now()) + REVOKE_GRACE;
        let offsets = match rx.recv_timeout(wait) {
            Ok(o) => o,
            Err(_) => {
                tracing::warn!(group = %self.group_id, "dispatcher did not answer the revoke in time; committing nothing");
                return;
            }
        };
        if offsets.is_empty() {
            return;
        }
        if consumer.assignment_lost() {
            tracing::warn!(group = %self.group_id, "assignment lost (session timed out): finished offsets cannot be committed; the new owner reprocesses them");
            return;
        }
        let positions = offsets
            .iter()
            .map(|(tp, next)| (&*tp.topic, tp.partition, next.0));
        match crate::kafka::commit_sync(consumer, positions) {
            Ok(()) => ConsumerStats::add(&self.stats.commits, 1),
            Err(e) => {
                ConsumerStats::add(&self.stats.commit_failures, 1);
                tracing::warn!(group = %self.group_id, error = %e, "commit on revoke failed; the new owner reprocesses from the last commit");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.flush();
                let partitions = to_tps(tpl);
                self.assigned.lock().extend(
                    partitions
                        .iter()
                        .map(|tp| (tp.topic.to_string(), tp.partition)),
                );
                tracing::info!(group = %self.group_id, partitions = partitions.len(), "partitions assigned");
                // A rewind asked for an earlier assignment of these: the new
                // one starts from the committed offsets anyway.
                self.rewinds
                    .lock()
                    .retain(|(tp, _)| !partitions.contains(tp));
                let gates = self.split(&partitions);
                let _ = self
                    .events
                    .send(Event::Assigned(partitions.into_iter().zip(gates).collect()));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group_id, error = %e, "rebalance error")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        // A request can succeed while single partitions fail (for example
        // REBALANCE_IN_PROGRESS): those count as failures and are retried.
        let partition_error = offsets.elements().iter().find_map(|e| e.error().err());
        let result = match (result, partition_error) {
            (Ok(()), Some(e)) => Err(e),
            (r, _) => r,
        };
        match result {
            Ok(()) => ConsumerStats::add(&self.stats.commits, 1),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                ConsumerStats::add(&self.stats.commit_failures, 1);
                tracing::warn!(group = %self.group_id, error = %e, "offset commit failed; retried on the next interval");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: i64) -> RawMessage {
        RawMessage {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp_ms: None,
            key: None,
            payload: None,
            headers: Default::default(),
        }
    }

    fn taken(offsets: std::ops::Range<i64>) -> Vec<RawMessage> {
        let mut v = Vec::with_capacity(BATCH);
        v.extend(offsets.map(message));
        v
    }

    fn offsets_of(e: Event) -> Vec<i64> {
        match e {
            Event::Batch(b) => b.iter().map(|m| m.offset).collect(),
            _ => panic!("not a batch"),
        }
    }

    #[test]
    fn push_all_moves_taken_messages_without_copying_them_and_keeps_their_order() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stats = Arc::new(ConsumerStats::default());
        let ctx = WeirContext::new(tx, Duration::ZERO, stats.clone(), "g".into(), true);

        // Into an empty batch: the taken vector becomes the batch.
        let mut ms = taken(0..10);
        let buffer = ms.as_ptr();
        ctx.push_all(&mut ms);
        assert_eq!(ctx.batch.lock().as_ptr(), buffer, "moved, not copied");
        assert!(
            ms.is_empty() && ms.capacity() >= BATCH,
            "took the empty batch's room"
        );

        // Messages the waiting batch has no room for: it is sent first (it
        // would have been grown, copying all of it), then they wait.
        let mut more = taken(10..(BATCH as i64 + 5));
        let buffer = more.as_ptr();
        ctx.push_all(&mut more);
        assert_eq!(
            offsets_of(rx.try_recv().expect("the waiting batch")),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(ctx.batch.lock().as_ptr(), buffer);
        assert!(rx.try_recv().is_err(), "nothing else sent yet");

        // Room left: appended in place (not grown), and the full batch is sent.
        let mut last = taken((BATCH as i64 + 5)..(BATCH as i64 + 10));
        ctx.push_all(&mut last);
        let Event::Batch(full) = rx.try_recv().expect("the full batch") else {
            panic!("not a batch")
        };
        assert_eq!(full.as_ptr(), buffer, "the same buffer");
        assert_eq!(full.capacity(), BATCH, "never grown");
        assert_eq!(
            full.iter().map(|m| m.offset).collect::<Vec<_>>(),
            (10..(BATCH as i64 + 10)).collect::<Vec<_>>()
        );
        assert!(ctx.batch.lock().is_empty());
        assert_eq!(stats.received(), BATCH as u64 + 10);
        assert_eq!(ctx.unclaimed.load(Relaxed), BATCH as u64 + 10);
    }
}
