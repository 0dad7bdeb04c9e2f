//! The poll thread and the librdkafka context.
//!
//! One OS thread owns the polling: it keeps fetching (so group heartbeats and
//! `max.poll.interval.ms` stay healthy while handlers run) and serves the
//! rebalance callbacks. Messages go to the dispatcher in batches over an
//! unbounded channel; memory is bounded by credit, never by blocking this
//! thread.
//!
//! With `partition_queues` (the default) every assigned partition is split
//! into its own librdkafka queue when it is assigned. The dispatcher grants
//! each partition credit (room under `max_buffered_per_partition`, counting
//! what is already on its way) through a [`Gate`]; this thread takes from a
//! partition's queue only as much as its credit. A full partition is simply
//! not read: librdkafka keeps its prefetch (bounded per partition by
//! `queued.max.messages.kbytes`, which Weir sets to 4 MiB unless configured)
//! and nothing has to be fetched again when room frees up. Without partition queues, full
//! partitions are paused instead (see the dispatcher).
//!
//! The thread sleeps in `park` and is woken by librdkafka (a queue became
//! non-empty) or by the dispatcher (a partition got credit).
//!
//! A revoke callback blocks this thread until the dispatcher has drained the
//! revoked partitions (bounded by `revoke_deadline`), then commits their
//! finished offsets synchronously before librdkafka releases them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, Rebalance, base_consumer::PartitionQueue,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc::UnboundedSender;

use crate::client::{describe_fatal, is_fatal, refused_connection};
use crate::message::{Header, Headers, RawMessage, TopicPartition, UNREADABLE_HEADER_NAME};
use crate::offsets::NextOffset;
use crate::stats::ConsumerStats;

/// Most messages moved to the dispatcher in one batch.
const BATCH: usize = 1024;

/// How long past a revoke's deadline the poll thread still waits for the
/// dispatcher's answer. A dispatcher later than this is blocked (a handler
/// blocking its thread): the partitions are released uncommitted, and the
/// late answer, keyed by assignment epoch, touches nothing assigned since.
const REVOKE_GRACE: Duration = Duration::from_secs(2);

pub(crate) type RevokeReply = std::sync::mpsc::SyncSender<Vec<(TopicPartition, NextOffset)>>;

/// Wakes the poll thread: a queue became non-empty or a partition got credit.
#[derive(Default)]
pub(crate) struct PollWaker(OnceLock<std::thread::Thread>);

impl PollWaker {
    pub(crate) fn wake(&self) {
        if let Some(t) = self.0.get() {
            t.unpark();
        }
    }
}

/// Credit for one partition read from its own queue: how many more messages
/// the poll thread may take from it. The dispatcher adds, the poll thread
/// subtracts what it took.
pub(crate) struct Gate {
    room: AtomicI64,
    waker: Arc<PollWaker>,
}

impl Gate {
    /// Lets the poll thread take `n` more messages of this partition.
    pub(crate) fn grant(&self, n: i64) {
        if n > 0 {
            self.room.fetch_add(n, Relaxed);
            self.waker.wake();
        }
    }
}

struct Split {
    tp: TopicPartition,
    queue: PartitionQueue<WeirContext>,
    gate: Arc<Gate>,
}

pub(crate) enum Event {
    Batch(Vec<RawMessage>),
    /// Newly assigned partitions, each with its gate when it has its own queue.
    Assigned(Vec<(TopicPartition, Option<Arc<Gate>>)>),
    Revoked {
        partitions: Vec<TopicPartition>,
        reply: RevokeReply,
        /// When the dispatcher must answer at the latest (cancelling what is
        /// still running): the same instant the poll thread waits for, so
        /// the two sides never disagree about whether the revoke was answered.
        deadline: std::time::Instant,
    },
    Fatal(String),
}

pub(crate) struct WeirContext {
    events: UnboundedSender<Event>,
    batch: Mutex<Vec<RawMessage>>,
    revoke_wait: Duration,
    pub(crate) closing: AtomicBool,
    stats: Arc<ConsumerStats>,
    group_id: String,
    /// The first fatal client error (authentication, untrusted certificate),
    /// so that start-up checks report it instead of a generic transport error.
    fatal: Mutex<Option<String>>,
    /// The consumer, for splitting partition queues in the assign callback.
    consumer: OnceLock<Weak<BaseConsumer<WeirContext>>>,
    partition_queues: bool,
    splits: Mutex<Vec<Split>>,
    waker: Arc<PollWaker>,
    /// Retry-tier topics whose partitions start at their beginning when the
    /// group has no commit there (set when `auto_offset_reset` is not
    /// `earliest`, so that a tier's waiting copies are never skipped).
    pub(crate) tiers_from_beginning: OnceLock<std::collections::HashSet<String>>,
    /// Partitions assigned now, for the lag gauges: librdkafka's statistics
    /// keep reporting a partition as desired for a while after a revoke, and
    /// its gauge would keep its last value on a member that no longer owns it.
    assigned: Mutex<std::collections::HashSet<(String, i32)>>,
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
            fatal: Mutex::new(None),
            consumer: OnceLock::new(),
            partition_queues,
            splits: Mutex::new(Vec::new()),
            waker,
            tiers_from_beginning: OnceLock::new(),
            assigned: Mutex::new(Default::default()),
        }
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
    fn split(&self, tps: &[TopicPartition]) -> Vec<Option<Arc<Gate>>> {
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
                let gate = Arc::new(Gate {
                    room: AtomicI64::new(0),
                    waker: self.waker.clone(),
                });
                splits.push(Split {
                    tp: tp.clone(),
                    queue,
                    gate: gate.clone(),
                });
                Some(gate)
            })
            .collect()
    }

    /// Drops the queues of revoked partitions (what they still hold belongs
    /// to the next owner, which starts from the committed offset).
    fn unsplit(&self, tps: &[TopicPartition]) {
        self.splits.lock().retain(|s| !tps.contains(&s.tp));
    }

    /// Takes messages from the partition queues that have credit. Returns
    /// whether any partition has its own queue, and whether there may be more
    /// to take right away.
    fn poll_partitions(&self) -> (bool, bool) {
        let splits = self.splits.lock();
        let mut more = false;
        for s in splits.iter() {
            let room = s.gate.room.load(Relaxed);
            if room <= 0 {
                continue;
            }
            let want = (room as usize).min(BATCH);
            let mut took = 0;
            while took < want {
                match s.queue.poll(Duration::ZERO) {
                    Some(Ok(m)) => {
                        took += 1;
                        // The queue is the partition's own: its topic is known.
                        self.push(convert_with(s.tp.topic.clone(), s.tp.partition, &m));
                    }
                    Some(Err(e)) => {
                        self.on_poll_error(e);
                        break;
                    }
                    None => break,
                }
            }
            if took > 0 {
                s.gate.room.fetch_sub(took as i64, Relaxed);
            }
            more |= took == want;
        }
        (!splits.is_empty(), more)
    }

    /// The first fatal client error seen, if any.
    pub(crate) fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().clone()
    }

    fn fatal(&self, msg: String) {
        self.fatal.lock().get_or_insert_with(|| msg.clone());
        let _ = self.events.send(Event::Fatal(msg));
    }

    /// Copies a fetched message into the batch; sends the batch when full.
    fn take(&self, topics: &mut Topics, m: &BorrowedMessage<'_>) {
        self.push(convert(topics, m));
    }

    /// Adds a message to the batch; sends the batch when full.
    fn push(&self, m: RawMessage) {
        let mut b = self.batch.lock();
        b.push(m);
        let full = b.len() >= BATCH;
        drop(b);
        if full {
            self.flush();
        }
    }

    /// Sends the partial batch. Called before any rebalance event so that the
    /// dispatcher sees messages and assignment changes in fetch order.
    fn flush(&self) {
        let mut b = self.batch.lock();
        if b.is_empty() {
            return;
        }
        let n = b.len() as u64;
        let full = std::mem::replace(&mut *b, Vec::with_capacity(BATCH));
        drop(b);
        ConsumerStats::add(&self.stats.received, n);
        let _ = self.events.send(Event::Batch(full));
    }

    fn on_poll_error(&self, e: KafkaError) {
        match e.rdkafka_error_code() {
            Some(code) if is_fatal(code) => {
                tracing::error!(group = %self.group_id, error = %e, "fatal consumer error");
                let _ = self.events.send(Event::Fatal(describe_fatal(code, &e)));
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
            self.fatal(format!("{}: {reason}", describe_fatal(code, &error)));
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
    /// rust-rdkafka's rebalance, with two changes on assign: retry-tier
    /// partitions without a committed offset start at their beginning (see
    /// [`WeirContext::tiers_from_beginning`]), and every assigned partition is
    /// resumed (a pause from before a revoke would otherwise outlive it).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr as E;
        let rebalance = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(tiers) = self.tiers_from_beginning.get() {
                    super::tier_start::from_beginning(consumer, tpl, tiers, &self.group_id);
                }
                Rebalance::Assign(tpl)
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            other => Rebalance::Error(KafkaError::Rebalance(other.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
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

/// Topic names shared as `Arc<str>`; owned by the poll thread, so no lock.
/// Consecutive messages usually share a topic: that case is a string compare.
#[derive(Default)]
pub(crate) struct Topics {
    last: Option<Arc<str>>,
    all: HashMap<String, Arc<str>>,
}

impl Topics {
    pub(crate) fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some(last) = &self.last
            && &**last == topic
        {
            return last.clone();
        }
        let a = match self.all.get(topic) {
            Some(a) => a.clone(),
            None => {
                let a: Arc<str> = Arc::from(topic);
                self.all.insert(topic.to_string(), a.clone());
                a
            }
        };
        self.last = Some(a.clone());
        a
    }
}

pub(crate) fn convert(topics: &mut Topics, m: &BorrowedMessage<'_>) -> RawMessage {
    convert_with(topics.intern(m.topic()), m.partition(), m)
}

/// Copies a message's headers out of librdkafka, never panicking on what a
/// producer sent: rust-rdkafka's accessor unwraps every header name as UTF-8
/// (`BorrowedHeaders::try_get`), so a name that is not UTF-8 panics inside
/// it. Such a header is replaced by [`UNREADABLE_HEADER_NAME`] with the
/// header's index as its value, and the runner sends the message to the
/// failure sink as `invalid_header_name`. The panic stays inside this call.
pub(crate) fn read_headers(m: &BorrowedMessage<'_>) -> Headers {
    let Some(hs) = m.headers() else {
        return Headers::default();
    };
    let mut out = Vec::with_capacity(hs.count());
    for i in 0..hs.count() {
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            hs.try_get(i).map(|h| Header {
                key: h.key.to_string(),
                value: h.value.map(Bytes::copy_from_slice),
            })
        }));
        match got {
            Ok(Some(h)) => out.push(h),
            Ok(None) => {}
            Err(_) => {
                tracing::warn!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    index = i,
                    "a header name is not valid UTF-8; the message goes to the failure sink"
                );
                out.push(Header {
                    key: UNREADABLE_HEADER_NAME.to_string(),
                    value: Some(Bytes::from(i.to_string())),
                });
            }
        }
    }
    Headers(out)
}

/// Copies a message out of librdkafka whose topic and partition are known.
fn convert_with(topic: Arc<str>, partition: i32, m: &BorrowedMessage<'_>) -> RawMessage {
    let headers = read_headers(m);
    RawMessage {
        topic,
        partition,
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().map(Bytes::copy_from_slice),
        payload: m.payload().map(Bytes::copy_from_slice),
        headers,
    }
}

/// Runs [`poll_loop`]; a panic in it (a bug: the loop handles every error it
/// knows) is reported to the dispatcher as a fatal error, so `run()` ends with
/// it instead of waiting for a poll thread that is gone.
pub(crate) fn poll_thread(consumer: Arc<BaseConsumer<WeirContext>>, stop: Arc<AtomicBool>) {
    let ctx = consumer.context().clone();
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poll_loop(consumer, stop)));
    if let Err(p) = result {
        let msg = format!(
            "the poll thread panicked ({}); the consumer stops: restart it, and report this as a bug",
            crate::runtime::task::panic_message(p)
        );
        tracing::error!(group = %ctx.group_id, "{msg}");
        let _ = ctx.events.send(Event::Fatal(msg));
    }
}

/// Runs until `stop` is set, then waits to hold the last reference to the
/// consumer and drops it here, so that leaving the group (which serves the
/// final rebalance callbacks) happens on this thread.
pub(crate) fn poll_loop(consumer: Arc<BaseConsumer<WeirContext>>, stop: Arc<AtomicBool>) {
    let ctx = consumer.context().clone();
    let _ = ctx.waker.0.set(std::thread::current());
    let mut topics = Topics::default();
    // No partition has its own queue before the first assignment.
    let mut splits = false;
    while !stop.load(Relaxed) {
        // The consumer queue first: rebalance callbacks, errors, and messages
        // of partitions without a queue of their own (or fetched before their
        // queue was split, which must reach the dispatcher before anything
        // from the new queue). Drained completely, in batches.
        // Without partition queues there is nothing else to wait for: block
        // in librdkafka as long as the consumer queue is empty.
        let blocking = !splits;
        let mut timeout = if blocking {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        // `poll` also answers `None` right after serving a commit or
        // rebalance event while more is queued, so one `None` does not mean
        // empty; several in a row do.
        let mut nones = 0;
        while nones < 4 {
            match consumer.poll(timeout) {
                None => nones += 1,
                Some(Err(e)) => {
                    nones = 0;
                    ctx.on_poll_error(e)
                }
                Some(Ok(m)) => {
                    nones = 0;
                    ctx.take(&mut topics, &m);
                }
            }
            timeout = Duration::ZERO;
        }
        let (has_splits, more) = ctx.poll_partitions();
        splits = has_splits;
        ctx.flush();
        if !more && !blocking {
            // Woken by librdkafka (a queue became non-empty) or by the
            // dispatcher (credit); the timeout is only a safety net.
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
    ctx.flush();
    ctx.closing.store(true, Relaxed);
    // The partition queues hold references to the consumer.
    ctx.splits.lock().clear();
    // Keep serving the consumer queue meanwhile: a synchronous commit still
    // running elsewhere can wait on a rebalance callback (after
    // max.poll.interval.ms without a poll, librdkafka revokes), and with
    // nobody polling it would wait forever, holding its reference. Messages
    // polled now are not processed, so not committed: the next owner gets them.
    while Arc::strong_count(&consumer) > 1 {
        match consumer.poll(Duration::from_millis(5)) {
            Some(Ok(m)) => tracing::trace!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                "not processed: stopping"
            ),
            Some(Err(e)) => tracing::debug!(error = %e, "while stopping"),
            None => {}
        }
    }
    drop(consumer);
}
