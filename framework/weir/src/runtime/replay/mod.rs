//! Bounded re-processing of a topic range with your processor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::poller::{Arena, Topics, convert};
use super::run::{Outcome, Runner};
use crate::codec::Codec;
use crate::config::ConsumerConfig;
use crate::error::WeirError;
use crate::failure::{FailureSink, StopPartition};
use crate::message::RawMessage;
use crate::processor::Processor;
use crate::stats::ConsumerStats;

#[cfg(test)]
mod tests;

/// One end of a replay range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The earliest retained offset.
    Earliest,
    /// The log end when the replay starts (a `to` bound).
    End,
    /// An offset (`from`: inclusive; `to`: exclusive), clamped to the retained range.
    Offset(i64),
    /// The first message at or after this time (`from`: inclusive; `to`: exclusive).
    Time(SystemTime),
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Per partition: (start, end) offsets replayed, end exclusive.
    pub ranges: BTreeMap<i32, (i64, i64)>,
    /// Messages processed (including those handed to the failure sink).
    pub processed: u64,
    /// Partitions stopped by the failure sink, with the offset.
    pub halted: Vec<(i32, i64)>,
    /// Whether the replay group's offsets were committed at the end (some
    /// brokers refuse commits from a client that never joined the group).
    pub committed: bool,
}

/// A bounded re-processing run over `[from, to)` of one topic, with its own
/// consumer group, so the production group's offsets are untouched.
///
/// ```no_run
/// # async fn demo(processor: impl weir::Processor<Option<bytes::Bytes>>) -> Result<(), weir::WeirError> {
/// use weir::replay::{Position, Replay};
/// let cfg = weir::ConsumerConfig::new("kafka:9092", "orders-replay-2026-11-22", &[]);
/// let report = Replay::range(cfg, "orders", Position::Offset(1_000), Position::End)
///     .on_progress(|done, total| eprintln!("{done}/{total}"))
///     .run(weir::BytesCodec, processor)
///     .await?;
/// println!("{} messages re-processed", report.processed);
/// # Ok(()) }
/// ```
///
/// Each partition is processed in offset order (one message at a time per
/// partition, partitions in parallel), with the runtime's decoding, timeout,
/// panic handling and in-place retries; failures go to the failure sink
/// (default: stop that partition). At the end the replay group's offsets are
/// committed at the range ends, so a second run of the same group resumes
/// nothing already done.
pub struct Replay {
    config: ConsumerConfig,
    topic: String,
    from: Position,
    to: Position,
    progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>>,
    sink: Arc<dyn FailureSink>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("topic", &self.topic)
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn kafka(context: String) -> impl FnOnce(rdkafka::error::KafkaError) -> WeirError {
    move |source| WeirError::Kafka { context, source }
}

impl Replay {
    /// Replays `[from, to)` of `topic`. `config` gives the brokers, the
    /// pass-through properties (SASL, TLS), the timeouts and retry policy, and
    /// the **replay** group id (use a dedicated one, never the production group).
    pub fn range(config: ConsumerConfig, topic: &str, from: Position, to: Position) -> Self {
        Replay {
            config,
            topic: topic.to_string(),
            from,
            to,
            progress: None,
            sink: Arc::new(StopPartition),
        }
    }

    /// Called about five times a second with (messages done, messages in the range).
    pub fn on_progress(mut self, f: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Where messages that fail for good go (default: stop that partition).
    pub fn failure_sink(mut self, sink: impl FailureSink) -> Self {
        self.sink = Arc::new(sink);
        self
    }

    fn resolve(&self, c: &BaseConsumer) -> Result<BTreeMap<i32, (i64, i64)>, WeirError> {
        let timeout = Duration::from_secs(10);
        let t = &self.topic;
        let parts = crate::kafka::topic_partitions(c, t, timeout)
            .map_err(kafka(format!(
                "fetching metadata of `{t}` from {}",
                self.config.brokers
            )))?
            .ok_or_else(|| WeirError::UnknownTopic {
                topic: t.clone(),
                brokers: self.config.brokers.clone(),
            })?;
        let by_time = |when: SystemTime| -> Result<BTreeMap<i32, i64>, WeirError> {
            let mut tpl = TopicPartitionList::new();
            for p in &parts {
                let _ = tpl.add_partition_offset(t, *p, Offset::Offset(ms(when)));
            }
            Ok(c.offsets_for_times(tpl, timeout)
                .map_err(kafka("looking up offsets by time".into()))?
                .elements()
                .iter()
                .map(|e| {
                    let o = match e.offset() {
                        Offset::Offset(o) => o,
                        _ => -1,
                    };
                    (e.partition(), o)
                })
                .collect())
        };
        let from_t = match self.from {
            Position::Time(w) => Some(by_time(w)?),
            _ => None,
        };
        let to_t = match self.to {
            Position::Time(w) => Some(by_time(w)?),
            _ => None,
        };
        let mut out = BTreeMap::new();
        for p in &parts {
            let (low, high) = c
                .fetch_watermarks(t, *p, timeout)
                .map_err(kafka(format!("fetching watermarks of {t}/{p}")))?;
            let at = |pos: Position, times: &Option<BTreeMap<i32, i64>>| -> i64 {
                match pos {
                    Position::Earliest => low,
                    Position::End => high,
                    Position::Offset(o) => o.clamp(low, high),
                    Position::Time(_) => match times.as_ref().and_then(|m| m.get(p)).copied() {
                        Some(o) if o >= 0 => o.clamp(low, high),
                        _ => high,
                    },
                }
            };
            let (s, e) = (at(self.from, &from_t), at(self.to, &to_t));
            if s < e {
                out.insert(*p, (s, e));
            }
        }
        Ok(out)
    }

    /// Runs the replay to the end of the range.
    pub async fn run<C, P>(self, codec: C, processor: P) -> Result<ReplayReport, WeirError>
    where
        C: Codec,
        P: Processor<C::Value>,
    {
        let consumer = replay_consumer(&self.config)?;
        let c = consumer.clone();
        let this = Arc::new(self);
        let me = this.clone();
        let ranges = tokio::task::spawn_blocking(move || me.resolve(&c))
            .await
            .map_err(|e| WeirError::Internal(e.to_string()))??;
        let total: u64 = ranges.values().map(|(s, e)| (e - s) as u64).sum();
        let mut report = ReplayReport {
            ranges: ranges.clone(),
            ..Default::default()
        };
        if ranges.is_empty() {
            return Ok(report);
        }
        let stats = Arc::new(ConsumerStats::default());
        let runner = Arc::new(Runner::new(
            codec,
            processor,
            this.sink.clone(),
            &this.config,
            stats.clone(),
            metrics::histogram!("weir_replay_processing_seconds"),
        ));
        assign_ranges(&consumer, &this.topic, &ranges)?;

        // One worker per partition, in offset order; the poll thread feeds them.
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = BTreeMap::new();
        let mut workers = Vec::new();
        for (p, (start, _)) in &ranges {
            let (tx, rx) = tokio::sync::mpsc::channel::<RawMessage>(512);
            senders.insert(*p, tx);
            workers.push(spawn_worker(runner.clone(), *p, *start, rx, done.clone()));
        }
        let poller = spawn_poller(
            consumer.clone(),
            this.topic.clone(),
            ranges.clone(),
            senders,
            stop.clone(),
        )?;
        let ticker = this.progress.clone().map(|f| {
            let done = done.clone();
            tokio::spawn(async move {
                loop {
                    f(done.load(Relaxed), total);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        });
        let mut ends = Vec::with_capacity(workers.len());
        for w in workers {
            ends.push(w.await.map_err(|e| WeirError::Internal(e.to_string()))?);
        }
        stop.store(true, Relaxed);
        let polled = tokio::task::spawn_blocking(move || poller.join())
            .await
            .map_err(|e| WeirError::Internal(e.to_string()))?
            .unwrap_or_else(|p| Err(super::run::panic_message(p)));
        if let Some(t) = ticker {
            t.abort();
        }
        if let Some(f) = &this.progress {
            f(done.load(Relaxed), total);
        }
        let finished = polled.as_ref().cloned().unwrap_or_default();
        let commit: Vec<(String, i32, i64)> = commit_positions(&report.ranges, &ends, &finished)
            .into_iter()
            .map(|(p, next)| (this.topic.clone(), p, next))
            .collect();
        report.halted = ends
            .iter()
            .filter_map(|e| e.halted.map(|o| (e.partition, o)))
            .collect();
        report.committed = commit_replay(consumer.clone(), commit).await;
        report.processed = done.load(Relaxed);
        if let Err(why) = polled {
            return Err(WeirError::Internal(format!(
                "the replay's poll thread died ({why}); what was processed is committed for group `{}`, so running the replay again goes on from there",
                this.config.group_id
            )));
        }
        Ok(report)
    }
}

/// The replay's own consumer (its own group: the production group's offsets
/// are untouched).
fn replay_consumer(config: &ConsumerConfig) -> Result<Arc<BaseConsumer>, WeirError> {
    if config.brokers.trim().is_empty() || config.group_id.trim().is_empty() {
        return Err(crate::ConfigError::invalid(
            "brokers / group_id",
            "a replay needs the brokers and its own group id (not the production group)",
        )
        .into());
    }
    let mut cc = config.client_config();
    cc.set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cc
        .create()
        .map_err(kafka("creating the replay consumer".into()))?;
    Ok(Arc::new(consumer))
}

/// Assigns each replayed partition from the start of its range.
fn assign_ranges(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &BTreeMap<i32, (i64, i64)>,
) -> Result<(), WeirError> {
    let mut tpl = TopicPartitionList::new();
    for (p, (s, _)) in ranges {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*s))
            .map_err(kafka("building the assignment".into()))?;
    }
    consumer
        .assign(&tpl)
        .map_err(kafka(format!("assigning `{topic}`")))
}

/// Starts the thread that polls the replayed range and feeds the workers;
/// its result is the position each partition was read to (or why it died).
fn spawn_poller(
    consumer: Arc<BaseConsumer>,
    topic: String,
    ranges: BTreeMap<i32, (i64, i64)>,
    senders: BTreeMap<i32, tokio::sync::mpsc::Sender<RawMessage>>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<std::collections::BTreeSet<i32>, String>>, WeirError> {
    std::thread::Builder::new()
        .name("weir-replay-poll".into())
        .spawn(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                replay_poll(&consumer, &topic, &ranges, senders, &stop)
            }))
            .map_err(super::run::panic_message)
        })
        .map_err(|e| WeirError::Internal(format!("spawning the replay poll thread: {e}")))
}

/// One partition's worker: runs its messages in offset order until the
/// poll thread closes its channel or a message halts the partition.
fn spawn_worker<C, P>(
    runner: Arc<Runner<C, P>>,
    partition: i32,
    start: i64,
    mut rx: tokio::sync::mpsc::Receiver<RawMessage>,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<WorkerEnd>
where
    C: Codec,
    P: Processor<C::Value>,
{
    tokio::spawn(async move {
        // One past the last offset processed: what may be committed.
        let mut next = start;
        while let Some(m) = rx.recv().await {
            let offset = m.offset;
            let outcome = runner
                .clone()
                .run(Arc::new(m), Arc::new(CancellationToken::new()))
                .await;
            done.fetch_add(1, Relaxed);
            if let Outcome::Halted { .. } = outcome {
                return WorkerEnd {
                    partition,
                    next,
                    halted: Some(offset),
                };
            }
            next = offset + 1;
        }
        WorkerEnd {
            partition,
            next,
            halted: None,
        }
    })
}

/// Commits the replay group's positions; whether it worked (the replay itself
/// is complete either way).
async fn commit_replay(consumer: Arc<BaseConsumer>, commit: Vec<(String, i32, i64)>) -> bool {
    match tokio::task::spawn_blocking(move || crate::kafka::commit_sync(&consumer, commit)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "committing the replay group's offsets failed; the replay itself is complete");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "replay commit task failed");
            false
        }
    }
}

/// How a partition's worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WorkerEnd {
    partition: i32,
    /// One past the last offset it processed (the range start when none).
    next: i64,
    /// The offset the failure sink stopped at.
    halted: Option<i64>,
}

/// The offsets to commit at the end of a replay: a halted partition at its
/// halt, a partition the poll thread saw through to the range end at the end
/// (gaps at the end, a transaction marker or compacted offsets, hold no
/// message), any other (the poll thread died) at what its worker processed.
fn commit_positions(
    ranges: &BTreeMap<i32, (i64, i64)>,
    ends: &[WorkerEnd],
    finished: &std::collections::BTreeSet<i32>,
) -> Vec<(i32, i64)> {
    ends.iter()
        .map(|e| {
            let at = match e.halted {
                Some(o) => o,
                None if finished.contains(&e.partition) => {
                    ranges.get(&e.partition).map_or(e.next, |r| r.1.max(e.next))
                }
                None => e.next,
            };
            (e.partition, at)
        })
        .collect()
}

/// Feeds each partition's worker its messages below the range end, and
/// closes a partition when its range is done: the last offset seen, an
/// offset at or past the end seen, or the consumer's position at or past the
/// end (a range ending on a transaction marker or compacted-away offsets has
/// no message at `end - 1`). Returns the partitions it saw through to the
/// end; a partition whose worker stopped (halted) is not among them.
fn replay_poll(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &BTreeMap<i32, (i64, i64)>,
    mut senders: BTreeMap<i32, tokio::sync::mpsc::Sender<RawMessage>>,
    stop: &AtomicBool,
) -> std::collections::BTreeSet<i32> {
    let mut topics = Topics::default();
    let mut arena = Arena::default();
    let mut open: BTreeMap<i32, i64> = ranges.iter().map(|(p, (_, e))| (*p, *e)).collect();
    let mut finished = std::collections::BTreeSet::new();
    let mut close =
        |p: i32,
         complete: bool,
         open: &mut BTreeMap<i32, i64>,
         senders: &mut BTreeMap<i32, tokio::sync::mpsc::Sender<RawMessage>>| {
            open.remove(&p);
            senders.remove(&p);
            if complete {
                finished.insert(p);
            }
            let mut t = TopicPartitionList::new();
            t.add_partition(topic, p);
            let _ = consumer.pause(&t);
        };
    let mut last_position_check = std::time::Instant::now();
    while !open.is_empty() && !stop.load(Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "replay fetch error (retried)"),
            Some(Ok(m)) => {
                let raw = convert(&mut topics, &mut arena, &m);
                let p = raw.partition;
                let Some(&end) = open.get(&p) else { continue };
                if raw.offset >= end {
                    close(p, true, &mut open, &mut senders);
                    continue;
                }
                let last = raw.offset + 1 >= end;
                if let Some(tx) = senders.get(&p)
                    && tx.blocking_send(raw).is_err()
                {
                    // Its worker stopped (halted).
                    close(p, false, &mut open, &mut senders);
                    continue;
                }
                if last {
                    close(p, true, &mut open, &mut senders);
                }
            }
        }
        // What has been consumed moves the position past control records and
        // gaps; checked a few times a second, not per message.
        if last_position_check.elapsed() >= Duration::from_millis(200) && !open.is_empty() {
            last_position_check = std::time::Instant::now();
            if let Ok(pos) = consumer.position() {
                for e in pos.elements_for_topic(topic) {
                    let p = e.partition();
                    if let (Some(&end), Offset::Offset(o)) = (open.get(&p), e.offset())
                        && o >= end
                    {
                        close(p, true, &mut open, &mut senders);
                    }
                }
            }
        }
    }
    finished
}
