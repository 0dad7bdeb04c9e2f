//! Batch processors: a [`BatchProcessor`] receives up to `max_batch` messages
//! at once (a bulk insert, one HTTP call for many records) and returns an
//! outcome per message. [`Batched`] turns it into a [`Processor`], so
//! everything the runtime does for one message (ordering, in-place retries,
//! retry tiers, the failure sink, commits) is unchanged and per message.
//!
//! ```
//! use std::time::Duration;
//! use weir::batch::{BatchConfig, BatchProcessor, Batched, Outcomes};
//! use weir::{Message, ProcessError};
//!
//! struct BulkInsert;
//!
//! impl BatchProcessor<String> for BulkInsert {
//!     async fn process_batch(&self, batch: Vec<Message<String>>) -> Result<Outcomes, ProcessError> {
//!         // One multi-row INSERT for the whole batch; an error fails every
//!         // message of it (each is retried on its own afterwards).
//!         let rows: Vec<&str> = batch.iter().map(|m| m.value().as_str()).collect();
//!         let _ = rows;
//!         Ok(Outcomes::all_ok(batch.len()))
//!     }
//! }
//!
//! let config = BatchConfig { max_batch: 500, max_wait: Duration::from_millis(20), ..BatchConfig::default() };
//! let processor = Batched::new(BulkInsert, config).expect("valid batch config");
//! # let _ = processor;
//! // Consumer::builder(consumer_config).codec(StringCodec).build(processor)
//! ```
//!
//! ## How batches are formed, and why
//! A batch is made of the messages the runtime has released to the processor
//! (the same messages a single-message processor would be running at that
//! moment), across all partitions and topics of the consumer. So ordering modes
//! keep their meaning by construction:
//! - [`Ordering::Key`](crate::Ordering::Key) (the default) releases one message
//!   per key at a time: a batch never holds two messages of one key, and a
//!   key's next message is only released once the batch holding its previous
//!   one has finished it.
//! - [`Ordering::Partition`](crate::Ordering::Partition) releases one message
//!   per partition: a batch holds at most one message per assigned partition.
//!   Use `Key` or `Unordered` when batches matter.
//! - [`Ordering::Unordered`](crate::Ordering::Unordered): any messages.
//!
//! Batches span partitions because a sink does not care where rows come
//! from: per-partition batches would be small on quiet partitions and wait
//! for `max_wait` there, while commits stay per partition and per offset
//! whatever the batch holds.
//!
//! A batch is sent when it holds `max_batch` messages, when its oldest
//! message has waited `max_wait`, or when no message has arrived for `linger`
//! (the runtime has released all it had). At most `max_batches_in_flight`
//! batches run at once; while they run the next batch fills, so batches grow
//! with the load. Give the consumer `max_in_flight` of at least `max_batch`
//! times `max_batches_in_flight` so batches can fill.
//!
//! ## Tracing
//! Each message keeps its `weir.process` span (a child of its producer's
//! trace). The batch runs in a `weir.batch` span (OpenTelemetry name `batch
//! process`, `messaging.batch.message_count`) that is a root, since its
//! messages belong to many traces, with a link to every message's span (a
//! `follows_from`, which `tracing-opentelemetry` exports as a link).
//!
//! ## Failures
//! An `Err` from [`BatchProcessor::process_batch`] fails every message of the
//! batch with a copy of that error ([`ProcessError::shared`]); a panic fails
//! every message as a terminal `panic`. Each message then goes its own way
//! through in-place retries (a retried message joins a later batch), retry
//! tiers and the failure sink. `handler_timeout` applies to each message's
//! wait for its batch.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::error::{ConfigError, HandlerPanic, ProcessError};
use crate::message::Message;
use crate::processor::Processor;

/// Handles a batch of messages. Implement it with an `async fn`; see the
/// [module documentation](self).
pub trait BatchProcessor<T>: Send + Sync + 'static {
    /// Processes `batch` and returns one outcome per message, in the batch's
    /// order ([`Outcomes`]), or an error that fails all of them.
    fn process_batch(
        &self,
        batch: Vec<Message<T>>,
    ) -> impl Future<Output = Result<Outcomes, ProcessError>> + Send;
}

/// One outcome per message of a batch, in the batch's order.
#[derive(Debug)]
pub struct Outcomes(Vec<Result<(), ProcessError>>);

impl Outcomes {
    /// `n` successes.
    pub fn all_ok(n: usize) -> Self {
        Outcomes((0..n).map(|_| Ok(())).collect())
    }

    /// Outcomes from a vector, one per message in the batch's order.
    pub fn new(results: Vec<Result<(), ProcessError>>) -> Self {
        Outcomes(results)
    }

    /// How many outcomes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The outcomes, in order.
    pub fn into_vec(self) -> Vec<Result<(), ProcessError>> {
        self.0
    }

    /// The outcomes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Result<(), ProcessError>> {
        self.0.iter()
    }
}

impl FromIterator<Result<(), ProcessError>> for Outcomes {
    fn from_iter<I: IntoIterator<Item = Result<(), ProcessError>>>(iter: I) -> Self {
        Outcomes(iter.into_iter().collect())
    }
}

/// How batches are formed (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// The most messages in one batch. Default 500.
    pub max_batch: usize,
    /// The longest the oldest message of a batch waits for the batch to fill.
    /// Default 50 ms.
    pub max_wait: Duration,
    /// A batch is sent early when no message has arrived for this long.
    /// Default 2 ms; at most `max_wait`.
    pub linger: Duration,
    /// Batches running at once. Default 2.
    pub max_batches_in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 500,
            max_wait: Duration::from_millis(50),
            linger: Duration::from_millis(2),
            max_batches_in_flight: 2,
        }
    }
}

impl BatchConfig {
    /// Checks the settings, naming the one to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_batch == 0 {
            return Err(ConfigError::invalid(
                "batch.max_batch",
                "must be at least 1",
            ));
        }
        if self.max_wait.is_zero() {
            return Err(ConfigError::invalid(
                "batch.max_wait",
                "must be more than 0 (a few milliseconds is typical)",
            ));
        }
        if self.linger > self.max_wait {
            return Err(ConfigError::invalid(
                "batch.linger",
                format!(
                    "is {:?}, longer than batch.max_wait ({:?}): make it at most max_wait",
                    self.linger, self.max_wait
                ),
            ));
        }
        if self.max_batches_in_flight == 0 {
            return Err(ConfigError::invalid(
                "batch.max_batches_in_flight",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A message's batch was dropped before it answered (the batch task was
/// aborted, say at shutdown). Retryable: the message runs again.
#[derive(Debug, thiserror::Error)]
#[error("the batch holding this message ended without an outcome for it")]
pub struct BatchDropped;

/// A batch processor returned the wrong number of outcomes: a bug in it.
#[derive(Debug, thiserror::Error)]
#[error(
    "batch processor returned {got} outcomes for a batch of {expected} messages (return one per message, in order)"
)]
pub struct OutcomeCountMismatch {
    /// Outcomes returned.
    pub got: usize,
    /// Messages in the batch.
    pub expected: usize,
}

struct Pending<T> {
    msg: Message<T>,
    reply: oneshot::Sender<Result<(), ProcessError>>,
    at: Instant,
    /// The message's span (`weir.process`): the batch span links to it.
    span: tracing::Span,
}

struct Shared<B, T> {
    processor: B,
    queue: parking_lot::Mutex<VecDeque<Pending<T>>>,
    arrived: Notify,
    permits: Arc<Semaphore>,
    config: BatchConfig,
    group_label: String,
}

/// When the queue's batch is due.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Empty,
    Now,
    At(Instant),
}

fn due<T>(queue: &VecDeque<Pending<T>>, config: &BatchConfig, now: Instant) -> Due {
    let (Some(first), Some(last)) = (queue.front(), queue.back()) else {
        return Due::Empty;
    };
    let full_at = first.at + config.max_wait;
    let idle_at = last.at + config.linger;
    if queue.len() >= config.max_batch || now >= full_at || now >= idle_at {
        Due::Now
    } else {
        Due::At(full_at.min(idle_at))
    }
}

/// Aborts the flusher task when the [`Batched`] processor is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a [`BatchProcessor`] as a [`Processor`]: each message waits for the
/// batch it joins, and gets its own outcome. See the [module documentation](self).
pub struct Batched<B, T> {
    shared: Arc<Shared<B, T>>,
    flusher: OnceLock<AbortOnDrop>,
}

impl<B, T> std::fmt::Debug for Batched<B, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<B, T> Batched<B, T>
where
    B: BatchProcessor<T>,
    T: Send + 'static,
{
    /// Batches for `processor` as `config` says; an invalid config is an error
    /// naming the setting.
    pub fn new(processor: B, config: BatchConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Batched {
            shared: Arc::new(Shared {
                processor,
                queue: parking_lot::Mutex::new(VecDeque::new()),
                arrived: Notify::new(),
                permits: Arc::new(Semaphore::new(config.max_batches_in_flight)),
                config,
                group_label: String::new(),
            }),
            flusher: OnceLock::new(),
        })
    }

    /// Labels the batch metrics with a consumer group
    /// (`weir_batch_size{group}`, `weir_batch_seconds{group}`).
    pub fn group_label(mut self, group: impl Into<String>) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            s.group_label = group.into();
        }
        self
    }

    /// The batch settings.
    pub fn config(&self) -> &BatchConfig {
        &self.shared.config
    }

    fn ensure_flusher(&self) {
        self.flusher.get_or_init(|| {
            let shared = self.shared.clone();
            AbortOnDrop(tokio::spawn(flush_loop(shared)))
        });
    }
}

impl<B, T> Processor<T> for Batched<B, T>
where
    B: BatchProcessor<T>,
    T: Send + 'static,
{
    async fn process(&self, msg: Message<T>) -> Result<(), ProcessError> {
        self.ensure_flusher();
        let (reply, answer) = oneshot::channel();
        self.shared.queue.lock().push_back(Pending {
            msg,
            reply,
            at: Instant::now(),
            span: tracing::Span::current(),
        });
        self.shared.arrived.notify_one();
        match answer.await {
            Ok(outcome) => outcome,
            Err(_) => Err(ProcessError::retryable(BatchDropped).with_class("batch_dropped")),
        }
    }

    /// Whole batches: `max_batch` × `max_batches_in_flight`.
    fn wants_in_flight(&self) -> usize {
        let c = &self.shared.config;
        c.max_batch.saturating_mul(c.max_batches_in_flight)
    }
}

async fn flush_loop<B, T>(shared: Arc<Shared<B, T>>)
where
    B: BatchProcessor<T>,
    T: Send + 'static,
{
    loop {
        while shared.queue.lock().is_empty() {
            shared.arrived.notified().await;
        }
        let Ok(permit) = shared.permits.clone().acquire_owned().await else {
            return;
        };
        let batch = loop {
            let now = Instant::now();
            let state = {
                let mut q = shared.queue.lock();
                // Messages whose wait was cancelled (timeout, revoke) leave.
                q.retain(|p| !p.reply.is_closed());
                match due(&q, &shared.config, now) {
                    Due::Now => {
                        let n = q.len().min(shared.config.max_batch);
                        break Some(q.drain(..n).collect::<Vec<_>>());
                    }
                    other => other,
                }
            };
            match state {
                Due::Empty => break None,
                Due::At(at) => {
                    tokio::select! {
                        _ = shared.arrived.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                Due::Now => unreachable!("handled above"),
            }
        };
        let Some(batch) = batch else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            run_batch(&shared, batch).await;
            drop(permit);
        });
    }
}

async fn run_batch<B, T>(shared: &Shared<B, T>, batch: Vec<Pending<T>>)
where
    B: BatchProcessor<T>,
    T: Send + 'static,
{
    let n = batch.len();
    // A root span for the batch, linked to each message's span (OpenTelemetry
    // links through `tracing-opentelemetry`): a batch holds messages of many
    // traces, so it is the child of none of them.
    let span = tracing::info_span!(
        parent: None,
        "weir.batch",
        otel.name = "batch process",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.batch.message_count = n,
        messaging.consumer.group.name = %shared.group_label,
    );
    let mut replies = Vec::with_capacity(n);
    let mut msgs = Vec::with_capacity(n);
    for p in batch {
        span.follows_from(&p.span);
        replies.push(p.reply);
        msgs.push(p.msg);
    }
    let started = Instant::now();
    let ran = AssertUnwindSafe(shared.processor.process_batch(msgs).instrument(span))
        .catch_unwind()
        .await;
    let results: Vec<Result<(), ProcessError>> = match ran {
        Ok(Ok(outcomes)) if outcomes.len() == n => outcomes.into_vec(),
        Ok(Ok(outcomes)) => fail_all(
            ProcessError::terminal(OutcomeCountMismatch {
                got: outcomes.len(),
                expected: n,
            })
            .with_class("batch_outcomes"),
            n,
        ),
        Ok(Err(e)) => fail_all(e, n),
        Err(panic) => fail_all(
            ProcessError::terminal(HandlerPanic(crate::runtime::panic_message(panic)))
                .with_class("panic"),
            n,
        ),
    };
    let group = shared.group_label.clone();
    metrics::histogram!("weir_batch_size", "group" => group.clone()).record(n as f64);
    metrics::histogram!("weir_batch_seconds", "group" => group)
        .record(started.elapsed().as_secs_f64());
    for (reply, outcome) in replies.into_iter().zip(results) {
        let _ = reply.send(outcome);
    }
}

fn fail_all(e: ProcessError, n: usize) -> Vec<Result<(), ProcessError>> {
    e.shared(n).into_iter().map(Err).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::RawMessage;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tokio_util::sync::CancellationToken;

    fn msg(i: i64) -> Message<i64> {
        let raw = RawMessage {
            topic: Arc::from("t"),
            partition: 0,
            offset: i,
            key: None,
            payload: None,
            headers: Default::default(),
            timestamp_ms: None,
        };
        Message::new(i, Arc::new(raw), 1, CancellationToken::new())
    }

    /// Records batch sizes; fails odd values when `fail_odd`.
    struct Record {
        sizes: parking_lot::Mutex<Vec<usize>>,
        fail_odd: bool,
        calls: AtomicUsize,
    }

    impl BatchProcessor<i64> for Record {
        async fn process_batch(&self, batch: Vec<Message<i64>>) -> Result<Outcomes, ProcessError> {
            self.calls.fetch_add(1, SeqCst);
            self.sizes.lock().push(batch.len());
            Ok(batch
                .iter()
                .map(|m| {
                    if self.fail_odd && m.value() % 2 == 1 {
                        Err(ProcessError::terminal(std::io::Error::other("odd")).with_class("odd"))
                    } else {
                        Ok(())
                    }
                })
                .collect())
        }
    }

    fn record(fail_odd: bool) -> Record {
        Record {
            sizes: Default::default(),
            fail_odd,
            calls: AtomicUsize::new(0),
        }
    }

    #[test]
    fn config_errors_name_the_setting() {
        let bad = [
            BatchConfig {
                max_batch: 0,
                ..Default::default()
            },
            BatchConfig {
                max_wait: Duration::ZERO,
                linger: Duration::ZERO,
                ..Default::default()
            },
            BatchConfig {
                linger: Duration::from_secs(1),
                ..Default::default()
            },
            BatchConfig {
                max_batches_in_flight: 0,
                ..Default::default()
            },
        ];
        let names = [
            "batch.max_batch",
            "batch.max_wait",
            "batch.linger",
            "batch.max_batches_in_flight",
        ];
        for (c, name) in bad.iter().zip(names) {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(name), "{e} should name {name}");
        }
        assert!(BatchConfig::default().validate().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_messages_share_one_batch_and_get_their_own_outcome() {
        let b = Arc::new(Batched::new(record(true), BatchConfig::default()).unwrap());
        let futs = (0..10).map(|i| {
            let b = b.clone();
            async move { b.process(msg(i)).await }
        });
        let results = futures::future::join_all(futs).await;
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_err(), i % 2 == 1, "message {i}: {r:?}");
        }
        assert_eq!(results[1].as_ref().unwrap_err().class(), "odd");
        assert_eq!(*b.shared.processor.sizes.lock(), vec![10]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once_and_the_rest_follows() {
        let config = BatchConfig {
            max_batch: 4,
            ..Default::default()
        };
        let b = Arc::new(Batched::new(record(false), config).unwrap());
        let futs = (0..10).map(|i| {
            let b = b.clone();
            async move { b.process(msg(i)).await }
        });
        let results = futures::future::join_all(futs).await;
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(*b.shared.processor.sizes.lock(), vec![4, 4, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_message_waits_at_most_linger_and_a_trickle_at_most_max_wait() {
        let config = BatchConfig {
            max_batch: 100,
            max_wait: Duration::from_millis(50),
            linger: Duration::from_millis(10),
            max_batches_in_flight: 1,
        };
        let b = Arc::new(Batched::new(record(false), config).unwrap());
        let t0 = Instant::now();
        b.process(msg(0)).await.unwrap();
        let lone = t0.elapsed();
        assert!(
            lone >= Duration::from_millis(10) && lone < Duration::from_millis(12),
            "{lone:?}"
        );

        // One message every 5 ms: never idle for 10 ms, so max_wait sends it.
        let t0 = Instant::now();
        let b2 = b.clone();
        let trickle = tokio::spawn(async move {
            let mut handles = Vec::new();
            for i in 0..20 {
                let b = b2.clone();
                handles.push(tokio::spawn(async move { b.process(msg(i)).await }));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for h in handles {
                h.await.unwrap().unwrap();
            }
        });
        trickle.await.unwrap();
        let sizes = b.shared.processor.sizes.lock().clone();
        assert_eq!(sizes[0], 1);
        assert_eq!(
            sizes[1], 10,
            "first trickle batch sent at max_wait: {sizes:?}"
        );
        assert!(t0.elapsed() < Duration::from_millis(160));
    }

    struct Fails(&'static str);
    impl BatchProcessor<i64> for Fails {
        async fn process_batch(&self, batch: Vec<Message<i64>>) -> Result<Outcomes, ProcessError> {
            match self.0 {
                "error" => {
                    Err(ProcessError::retryable(std::io::Error::other("db down")).with_class("db"))
                }
                "panic" => panic!("batch handler bug"),
                _ => Ok(Outcomes::all_ok(batch.len() + 1)),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_error_a_panic_and_a_miscount_fail_every_message_with_its_class() {
        for (mode, class, retryable) in [
            ("error", "db", true),
            ("panic", "panic", false),
            ("count", "batch_outcomes", false),
        ] {
            let b = Arc::new(Batched::new(Fails(mode), BatchConfig::default()).unwrap());
            let futs = (0..3).map(|i| {
                let b = b.clone();
                async move { b.process(msg(i)).await }
            });
            for r in futures::future::join_all(futs).await {
                let e = r.unwrap_err();
                assert_eq!(e.class(), class, "{mode}");
                assert_eq!(e.is_retryable(), retryable, "{mode}");
                if mode == "error" {
                    assert!(e.to_string().contains("db down"), "{e}");
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_leaves_the_batch_and_in_flight_batches_are_bounded() {
        struct Slow(AtomicUsize, AtomicUsize, parking_lot::Mutex<Vec<i64>>);
        impl BatchProcessor<i64> for Slow {
            async fn process_batch(
                &self,
                batch: Vec<Message<i64>>,
            ) -> Result<Outcomes, ProcessError> {
                let now = self.0.fetch_add(1, SeqCst) + 1;
                self.1.fetch_max(now, SeqCst);
                self.2.lock().extend(batch.iter().map(|m| *m.value()));
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.0.fetch_sub(1, SeqCst);
                Ok(Outcomes::all_ok(batch.len()))
            }
        }
        let config = BatchConfig {
            max_batch: 2,
            max_batches_in_flight: 2,
            ..Default::default()
        };
        let b = Arc::new(
            Batched::new(
                Slow(AtomicUsize::new(0), AtomicUsize::new(0), Default::default()),
                config,
            )
            .unwrap(),
        );
        // Message 99 gives up before any batch forms.
        let gone = tokio::time::timeout(Duration::from_micros(10), b.process(msg(99))).await;
        assert!(gone.is_err());
        let futs = (0..8).map(|i| {
            let b = b.clone();
            async move { b.process(msg(i)).await }
        });
        let t0 = Instant::now();
        for r in futures::future::join_all(futs).await {
            r.unwrap();
        }
        assert_eq!(
            b.shared.processor.1.load(SeqCst),
            2,
            "at most 2 batches at once"
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(200),
            "4 batches, 2 at a time"
        );
        assert!(
            !b.shared.processor.2.lock().contains(&99),
            "a cancelled message is not processed"
        );
    }
}
