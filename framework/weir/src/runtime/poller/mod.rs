//! The poll thread and the librdkafka context.
//!
//! One OS thread owns the polling: it keeps fetching (so group heartbeats and
//! `max.poll.interval.ms` stay healthy while handlers run) and serves the
//! rebalance callbacks. Messages go to the dispatcher in batches over an
//! unbounded channel; memory is bounded by credit (with partition queues) or
//! by a limit on what the dispatcher has still to take (without), never by
//! blocking this thread on the channel.
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
//! A partition's queue is read in batches (`batch_consume`, the default:
//! `weir_ffi::PartitionReader`, one `rd_kafka_consume_batch_queue` call for
//! up to the partition's credit), or one message per rust-rdkafka poll.
//! Either way each message is copied into a [`RawMessage`] on this thread
//! and librdkafka's message is destroyed here.
//!
//! The thread sleeps in `park` and is woken by librdkafka (a queue became
//! non-empty) or by the dispatcher (a partition got credit).
//!
//! A revoke callback blocks this thread until the dispatcher has drained the
//! revoked partitions (bounded by `revoke_deadline`), then commits their
//! finished offsets synchronously before librdkafka releases them.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, base_consumer::PartitionQueue};
use rdkafka::message::Message as _;

use crate::message::{RawMessage, TopicPartition};
use crate::offsets::NextOffset;

mod context;
mod convert;

pub(crate) use context::WeirContext;
#[cfg(feature = "ops")]
pub(crate) use convert::read_headers;
pub(crate) use convert::{Arena, Topics, convert};
use convert::{Copies, convert_fetched, convert_with};

/// Most messages moved to the dispatcher in one batch.
const BATCH: usize = 1024;

/// Most events served from the consumer queue before the partition queues
/// get their turn.
const EVENTS_PER_ROUND: usize = 4096;

/// How long past a revoke's deadline the poll thread still waits for the
/// dispatcher's answer. A dispatcher later than this is blocked (a handler
/// blocking its thread): the partitions are released uncommitted, and the
/// late answer, keyed by assignment epoch, touches nothing assigned since.
const REVOKE_GRACE: Duration = Duration::from_secs(2);

/// How often a poll thread still waiting to leave the group says so.
const STILL_CLOSING_EVERY: Duration = Duration::from_secs(10);

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
    /// Batch reads of the same queue (`batch_consume`); `queue` still
    /// carries the wake-up callback.
    reader: Option<weir_ffi::PartitionReader<WeirContext>>,
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
    /// The poll thread moved these partitions back as the dispatcher asked
    /// (an aborted transaction): what it sent of them before this event was
    /// fetched before the seek and is dropped; what follows starts at the
    /// new position.
    Rewound(Vec<TopicPartition>),
    Fatal(String),
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
            crate::runtime::run::panic_message(p)
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
    // The poll thread's copying room: where keys, payloads and header values
    // are copied to, and the partition batch being taken.
    let mut copies = Copies::default();
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
        // `poll` answers `None` for an empty queue and also right after
        // serving a log, statistics, commit or rebalance event while more
        // is queued (rust-rdkafka routes librdkafka's logs into this
        // queue), so the queue's length decides when it is drained. A
        // queue left non-empty never wakes this thread again: with debug
        // logging on, rebalance events once waited seconds behind the logs
        // while librdkafka held every partition paused for them. A long
        // burst is served in rounds so that the partition queues are not
        // starved; the thread then does not park.
        let mut served = 0;
        let mut backlog = false;
        ctx.serve_rewinds(&consumer);
        // Without partition queues: while the dispatcher has too many of
        // our messages still to take (`WeirContext::unclaimed`), wait for it
        // (it wakes this thread) instead of reading more. Rebalance events
        // wait meanwhile, as they would behind those messages anyway.
        if ctx.unclaimed_full(0) {
            std::thread::park_timeout(Duration::from_millis(10));
            continue;
        }
        let mut taken = 0;
        loop {
            match consumer.poll(timeout) {
                None => {
                    if weir_ffi::consumer_queue_len(consumer.client()).unwrap_or(0) == 0 {
                        break;
                    }
                }
                Some(Err(e)) => ctx.on_poll_error(e),
                Some(Ok(m)) => {
                    ctx.take(&mut topics, &mut copies.arena, &m);
                    taken += 1;
                    if ctx.unclaimed_full(taken) {
                        break;
                    }
                }
            }
            timeout = Duration::ZERO;
            served += 1;
            if served >= EVENTS_PER_ROUND {
                backlog = true;
                break;
            }
        }
        let (has_splits, more) = ctx.poll_partitions(&mut copies);
        splits = has_splits;
        ctx.flush();
        if !more && !blocking && !backlog {
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
    let waiting_since = std::time::Instant::now();
    let mut warned = Duration::ZERO;
    while Arc::strong_count(&consumer) > 1 {
        // Partitions assigned while closing get no queue (see `split`); a
        // queue left from before would keep this loop going for ever.
        ctx.splits.lock().clear();
        let waited = waiting_since.elapsed();
        if waited >= warned + STILL_CLOSING_EVERY {
            warned = waited;
            tracing::warn!(
                group = %ctx.group_id,
                ?waited,
                others = Arc::strong_count(&consumer) - 1,
                "still waiting to leave the group: other references to the consumer remain (a commit under way?)"
            );
        }
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
