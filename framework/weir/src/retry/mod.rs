//! Retry topics with backoff tiers, and the dead-letter queue.
//!
//! A retryable failure is not retried by sleeping in the handler (which blocks
//! the partition and risks `max.poll.interval.ms`): the message is published to
//! a **tier topic** (`orders.retry.10s`) with a due time, and the source offset
//! counts as finished once the broker acknowledged that copy. The same
//! consumer also reads the tier topics; a tier partition's messages are held,
//! in offset order, until their due time (the dispatcher sleeps until the head
//! is due; the fetcher pauses only when the buffer is full), then go through the
//! same processor with [`Message::attempt`](crate::Message::attempt) counting
//! every delivery. After the last tier, on a terminal error or an undecodable
//! payload, the message goes to the **DLQ** (`orders.dlq`) with the reason.
//! Nothing loops forever: a copy whose retry headers are missing or corrupt
//! goes to the DLQ too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), weir::WeirError> {
//! use std::time::Duration;
//! use weir::retry::RetryTopics;
//! use weir::{Consumer, ConsumerConfig, processor_fn, Message, ProcessError};
//!
//! let config = ConsumerConfig::new("kafka:9092", "billing", &["orders"]);
//! let retry = RetryTopics::tiers([Duration::from_secs(1), Duration::from_secs(10), Duration::from_secs(60)]);
//! let consumer = Consumer::builder(config)
//!     .retry_topics(retry)          // subscribes to orders.retry.{1s,10s,1m}, DLQ orders.dlq
//!     .build(processor_fn(|msg: Message<Option<bytes::Bytes>>| async move {
//!         let _ = msg.attempt();    // 1 on the first delivery, 2 from orders.retry.1s, …
//!         Ok::<_, ProcessError>(())
//!     }))?;
//! consumer.run_until_signal().await?;
//! # Ok(()) }
//! ```
//!
//! **Ordering.** A retried message leaves its key's order: later messages of the
//! same key are processed while it waits in a tier. Use in-place retries
//! ([`RetryPolicy`](crate::RetryPolicy)) for keys whose order matters more than
//! the partition's progress.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::clock::now_ms;
use crate::error::{ErrorKind, ProcessError};
use crate::failure::{Disposition, Failure, FailureSink};
use crate::message::{Header, Headers, RawMessage};
use crate::producer::{Producer, Record};
use crate::wire;
pub(crate) use crate::wire::{delivery_attempt, due_at, not_yet};

mod admin;
pub(crate) use admin::ensure_topics;

pub use crate::wire::headers;

/// Longest error message copied into [`headers::ERROR_MESSAGE`].
pub const MAX_ERROR_MESSAGE_BYTES: usize = 512;

/// Clock skew allowed between the member that stamped a due time and the one
/// holding the copy, on top of the tier's delay and jitter.
pub const HOLD_SKEW_ALLOWANCE: Duration = Duration::from_secs(5);

/// Default `retention.ms` of created DLQ topics: 30 days.
pub const DEFAULT_DLQ_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

pub use crate::wire::MAX_DELIVERY_ATTEMPT;

/// The tier for a wait of `remaining`: the longest delay not above it, else the
/// shortest; and the due time (never past `not_before`).
fn pick_tier(delays: &[Duration], remaining: Duration) -> Option<Duration> {
    let fit = delays.iter().copied().filter(|d| *d <= remaining).max();
    fit.or_else(|| delays.iter().copied().min())
}

/// How the delay of each retry is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// One tier per delay, in order: `[1s, 10s, 1m]` retries three times.
    Tiers(Vec<Duration>),
    /// `base * factor^n`, capped at `max_delay`, for `max_attempts - 1` retries.
    /// Delays that hit the cap share one topic.
    Exponential {
        /// First retry's delay.
        base: Duration,
        /// Growth per retry.
        factor: f64,
        /// Cap.
        max_delay: Duration,
        /// Deliveries in all, including the first (so `max_attempts - 1` retries).
        max_attempts: u32,
    },
}

impl Backoff {
    /// The delay of each retry, in order.
    pub fn delays(&self) -> Vec<Duration> {
        match self {
            Backoff::Tiers(t) => t.clone(),
            Backoff::Exponential {
                base,
                factor,
                max_delay,
                max_attempts,
            } => (0..max_attempts.saturating_sub(1))
                .map(|n| {
                    let d = base.as_secs_f64() * factor.powi(n.min(64) as i32);
                    Duration::from_millis((d.min(max_delay.as_secs_f64()) * 1000.0).round() as u64)
                })
                .collect(),
        }
    }
}

/// Formats a delay for a topic name: `500ms`, `1s`, `10m`, `2h`.
pub fn delay_label(d: Duration) -> String {
    let ms = d.as_millis();
    if ms > 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms > 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms > 0 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Retry-topic configuration. Build with [`RetryTopics::tiers`] or
/// [`RetryTopics::exponential`], adjust, and pass to
/// [`ConsumerBuilder::retry_topics`](crate::ConsumerBuilder::retry_topics).
#[derive(Debug, Clone)]
pub struct RetryTopics {
    /// Delay policy.
    pub backoff: Backoff,
    /// Randomise each due time by up to this fraction of its delay (0.0 to 1.0;
    /// default 0.1), so a burst of failures does not return as a burst.
    pub jitter: f64,
    /// Tier topic name pattern; `{topic}` and `{delay}` are replaced. Default `{topic}.retry.{delay}`.
    pub retry_topic_pattern: String,
    /// DLQ topic name pattern; `{topic}` is replaced. Default `{topic}.dlq`.
    pub dlq_topic_pattern: String,
    /// Create missing tier and DLQ topics at start with the source's partition
    /// count (default true); when false, missing topics are a start-up error.
    pub create_topics: bool,
    /// Replication factor for created topics; `None` uses the broker default.
    pub replication_factor: Option<i32>,
    /// In-place attempts on each delivery before the message moves to the next
    /// tier (default 1: a retryable failure goes straight to the tier).
    pub in_place_attempts: u32,
    /// How often the DLQ depth is measured (default 30 s).
    pub dlq_depth_interval: Duration,
    /// Keep each key's order (see [`keep_key_order`](Self::keep_key_order)).
    pub keep_key_order: bool,
    /// `retention.ms` of DLQ topics Weir creates (default 30 days; `None`:
    /// keep forever). Entries must outlive the fix they wait for: an existing
    /// DLQ that deletes sooner is warned about at start-up.
    pub dlq_retention: Option<Duration>,
    /// `cleanup.policy` of DLQ topics Weir creates (default `delete`: a
    /// compacted DLQ keeps one entry per key and refuses keyless copies).
    pub dlq_cleanup_policy: String,
}

impl RetryTopics {
    /// Fixed tiers, one topic each.
    pub fn tiers(delays: impl IntoIterator<Item = Duration>) -> Self {
        Self::with_backoff(Backoff::Tiers(delays.into_iter().collect()))
    }

    /// Exponential delays (`base * factor^n` capped at `max_delay`) for
    /// `max_attempts` deliveries in all.
    pub fn exponential(
        base: Duration,
        factor: f64,
        max_delay: Duration,
        max_attempts: u32,
    ) -> Self {
        Self::with_backoff(Backoff::Exponential {
            base,
            factor,
            max_delay,
            max_attempts,
        })
    }

    fn with_backoff(backoff: Backoff) -> Self {
        RetryTopics {
            backoff,
            jitter: 0.1,
            retry_topic_pattern: "{topic}.retry.{delay}".into(),
            dlq_topic_pattern: "{topic}.dlq".into(),
            create_topics: true,
            replication_factor: None,
            in_place_attempts: 1,
            dlq_depth_interval: Duration::from_secs(30),
            keep_key_order: false,
            dlq_retention: Some(DEFAULT_DLQ_RETENTION),
            dlq_cleanup_policy: "delete".into(),
        }
    }

    /// No retry tiers: failures go to the DLQ at once.
    pub fn dlq_only() -> Self {
        Self::tiers([])
    }

    /// Per-key ordered retries: a retryable failure waits out the tier delays
    /// **in place** (in the runtime, not in your handler) instead of moving to
    /// a tier topic, so the later messages of its key wait behind it (with
    /// [`Ordering::Key`](crate::Ordering::Key)) while other keys and the
    /// partition's fetching go on. After the last delay, or on a terminal
    /// error, the message goes to the DLQ as usual. Bounded: a key waits at
    /// most the sum of the delays, and a partition buffers at most
    /// `max_buffered_per_partition` messages (then it is paused). Counted by
    /// `ConsumerStats::in_place_retry_waits`. The trade-off: the retry state
    /// is not durable (a restart begins the message's attempts again; its
    /// offset is not committed meanwhile, so nothing is lost), and no tier
    /// topics are used.
    pub fn keep_key_order(mut self) -> Self {
        self.keep_key_order = true;
        self
    }

    /// Sets the `retention.ms` of created DLQ topics (`None`: forever).
    pub fn dlq_retention(mut self, retention: Option<Duration>) -> Self {
        self.dlq_retention = retention;
        self
    }

    /// Sets the jitter fraction.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// Sets the tier and DLQ name patterns.
    pub fn topic_patterns(mut self, retry: impl Into<String>, dlq: impl Into<String>) -> Self {
        self.retry_topic_pattern = retry.into();
        self.dlq_topic_pattern = dlq.into();
        self
    }

    /// Validates that the topics exist instead of creating them.
    pub fn require_existing_topics(mut self) -> Self {
        self.create_topics = false;
        self
    }

    /// The tier topic of `source` for `delay`.
    pub fn retry_topic(&self, source: &str, delay: Duration) -> String {
        self.retry_topic_pattern
            .replace("{topic}", source)
            .replace("{delay}", &delay_label(delay))
    }

    /// The DLQ topic of `source`.
    pub fn dlq_topic(&self, source: &str) -> String {
        self.dlq_topic_pattern.replace("{topic}", source)
    }

    /// The tier topics of `sources` with the longest hold a due time gets on
    /// each: the tier's delay, plus jitter, plus [`HOLD_SKEW_ALLOWANCE`].
    pub(crate) fn tier_holds(&self, sources: &[String]) -> HashMap<String, Duration> {
        let mut out = HashMap::new();
        if self.keep_key_order {
            return out;
        }
        for s in sources {
            for d in self.backoff.delays() {
                let hold = d.mul_f64(1.0 + self.jitter.clamp(0.0, 1.0)) + HOLD_SKEW_ALLOWANCE;
                let e = out.entry(self.retry_topic(s, d)).or_insert(hold);
                *e = (*e).max(hold);
            }
        }
        out
    }

    /// Every tier topic of `source`, without duplicates, in tier order (none
    /// in [`keep_key_order`](Self::keep_key_order) mode).
    pub fn retry_topics_of(&self, source: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if self.keep_key_order {
            return out;
        }
        for d in self.backoff.delays() {
            let t = self.retry_topic(source, d);
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// Publishes `record` to be processed not before `not_before` ("send the
    /// reminder in 24 hours"): it goes to the delay tier of `record.topic`
    /// whose delay fits best, and hops from tier to tier until its time, then
    /// is processed by the topic's consumer (configured with these same
    /// `RetryTopics`) with attempt 1. A time already past sends it to the topic
    /// itself; a later time with no tiers (or in key-order mode, which has no
    /// tier topics) is [`ProduceError::Unschedulable`](crate::producer::ProduceError::Unschedulable),
    /// never a silent send. Precision is that of the tiers' wake-ups (milliseconds), but a
    /// message waits behind earlier ones of the same tier partition, so keep
    /// tiers for long delays (`1m`, `10m`, `1h`) if you schedule far ahead.
    pub async fn schedule(
        &self,
        producer: &Producer,
        mut record: Record,
        not_before: SystemTime,
    ) -> Result<crate::producer::Delivery, crate::producer::ProduceError> {
        let nb = not_before
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let now = now_ms();
        if nb <= now {
            return producer.send(record).await;
        }
        let delays = self.backoff.delays();
        let unschedulable = |reason| {
            Err(crate::producer::ProduceError::Unschedulable {
                topic: record.topic.clone(),
                reason,
            })
        };
        if self.keep_key_order {
            return unschedulable("keep_key_order mode waits in place and has no tier topics");
        }
        let Some(delay) = pick_tier(&delays, Duration::from_millis((nb - now) as u64)) else {
            return unschedulable("no delay tiers are configured");
        };
        let remaining = Duration::from_millis((nb - now) as u64);
        let due = now + delay.min(remaining).as_millis() as i64;
        record.headers.0.retain(|h| {
            h.key != headers::DUE_MS && h.key != headers::NOT_BEFORE_MS && h.key != headers::ATTEMPT
        });
        record.headers.push(headers::NOT_BEFORE_MS, nb.to_string());
        record.headers.push(headers::DUE_MS, due.to_string());
        record
            .headers
            .push(headers::ORIGINAL_TOPIC, record.topic.clone());
        record.topic = self.retry_topic(&record.topic, delay);
        producer.send(record).await
    }

    /// Checks the configuration; the message says what to fix.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        let bad = |k: &str, p: &str| Err(crate::ConfigError::invalid(k, p));
        if !self.retry_topic_pattern.contains("{topic}")
            || !self.retry_topic_pattern.contains("{delay}")
        {
            return bad("retry_topic_pattern", "must contain {topic} and {delay}");
        }
        if !self.dlq_topic_pattern.contains("{topic}") {
            return bad("dlq_topic_pattern", "must contain {topic}");
        }
        if self.backoff.delays().iter().any(|d| d.is_zero()) {
            return bad("retry tiers", "every delay must be above zero");
        }
        if self.in_place_attempts == 0 {
            return bad("in_place_attempts", "must be at least 1");
        }
        if let Backoff::Exponential { factor, .. } = self.backoff
            && !(factor.is_finite() && factor >= 1.0)
        {
            return bad("retry factor", "must be a finite number >= 1");
        }
        Ok(())
    }
}

/// Where a failed message goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Retry {
        topic: String,
        delay: Duration,
        next_attempt: u32,
    },
    Dlq {
        topic: String,
        reason: &'static str,
    },
}

/// Tier topic name -> source topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicMap {
    tier_sources: HashMap<String, String>,
    pub(crate) partitions: HashMap<String, i32>,
}

/// The failure sink that implements retry tiers and the DLQ.
pub(crate) struct RetrySink {
    cfg: RetryTopics,
    delays: Vec<Duration>,
    map: TopicMap,
    producer: Producer,
    stats: Arc<crate::stats::ConsumerStats>,
}

impl RetrySink {
    pub(crate) fn new(
        cfg: RetryTopics,
        sources: &[String],
        partitions: HashMap<String, i32>,
        producer: Producer,
        stats: Arc<crate::stats::ConsumerStats>,
    ) -> Self {
        let mut tier_sources = HashMap::new();
        for s in sources {
            for t in cfg.retry_topics_of(s) {
                tier_sources.insert(t, s.clone());
            }
        }
        RetrySink {
            delays: cfg.backoff.delays(),
            cfg,
            map: TopicMap {
                tier_sources,
                partitions,
            },
            producer,
            stats,
        }
    }

    /// Decides the next hop of a failed delivery.
    pub(crate) fn route(&self, msg: &RawMessage, error: &ProcessError, attempt: u32) -> Route {
        let in_tier = self.map.tier_sources.get(&*msg.topic);
        let source = match in_tier {
            Some(s) => s.clone(),
            None => msg.topic.to_string(),
        };
        let dlq = |reason| Route::Dlq {
            topic: self.cfg.dlq_topic(&source),
            reason,
        };
        // A copy from a tier must say which attempt it is; otherwise it could
        // loop through the tiers forever.
        let scheduled = msg.headers.get(headers::NOT_BEFORE_MS).is_some();
        let min_attempt = if scheduled { 1 } else { 2 };
        let attempt_header = wire::header_i64(&msg.headers, headers::ATTEMPT);
        let valid = if scheduled {
            attempt_header.is_none_or(|a| a >= min_attempt)
        } else {
            attempt_header.is_some_and(|a| a >= min_attempt)
        };
        if in_tier.is_some() && !valid {
            return dlq("invalid_retry_headers");
        }
        match error.kind() {
            ErrorKind::Terminal => dlq("terminal"),
            // Never routed here (the runner waits), but be safe.
            ErrorKind::Unavailable | ErrorKind::Retryable => {
                let idx = attempt.saturating_sub(1) as usize;
                match self.delays.get(idx) {
                    Some(&delay) => Route::Retry {
                        topic: self.cfg.retry_topic(&source, delay),
                        delay,
                        next_attempt: attempt.saturating_add(1),
                    },
                    None => dlq("retries_exhausted"),
                }
            }
        }
    }

    /// Forwards a scheduled message that is not due yet to its next delay tier.
    pub(crate) async fn reschedule(&self, m: &RawMessage) -> Disposition {
        let source = self
            .map
            .tier_sources
            .get(&*m.topic)
            .cloned()
            .unwrap_or_else(|| m.topic.to_string());
        let mut backoff = Duration::from_millis(100);
        loop {
            let now = now_ms();
            let nb = wire::header_i64(&m.headers, headers::NOT_BEFORE_MS).unwrap_or(now);
            let remaining = Duration::from_millis((nb - now).max(0) as u64);
            let Some(delay) = pick_tier(&self.delays, remaining) else {
                return Disposition::Stop;
            };
            let topic = self.cfg.retry_topic(&source, delay);
            let mut hs: Vec<Header> = m
                .headers
                .iter()
                .filter(|h| h.key != headers::DUE_MS)
                .cloned()
                .collect();
            hs.push(Header {
                key: headers::DUE_MS.into(),
                value: Some(Bytes::from(
                    (now + delay.min(remaining).as_millis() as i64).to_string(),
                )),
            });
            let mut r = Record::to(topic.clone());
            r.key = m.key.clone();
            r.payload = m.payload.clone();
            r.headers = Headers(hs);
            if let Some(&n) = self.map.partitions.get(&topic)
                && n > 0
            {
                r.partition = Some(m.partition.rem_euclid(n));
            }
            match self.producer.send(r).await {
                Ok(_) => return Disposition::Handled,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(topic = %m.topic, partition = m.partition, offset = m.offset, error = %e, "forwarding a scheduled message failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::error!(topic = %m.topic, partition = m.partition, offset = m.offset, error = %e, "cannot forward a scheduled message; partition halted");
                    return Disposition::Stop;
                }
            }
        }
    }

    /// The copy to publish for `route`.
    pub(crate) fn record(&self, f: &Failure<'_>, route: &Route, now: i64) -> Record {
        let m = f.message;
        let mut hs: Vec<Header> = m
            .headers
            .iter()
            .filter(|h| !headers::FAILURE_STATE.contains(&h.key.as_str()))
            .cloned()
            .collect();
        let mut out = Headers(Vec::new());
        std::mem::swap(&mut out.0, &mut hs);
        // The identity the idempotency layer gave the original (its id, else
        // its coordinates) stays its identity on every copy; an invalid id is
        // kept aside so that the copy can be sent.
        crate::id::repair_message_id(&mut out, || m.coordinates());
        let has = |name: &str| out.get(name).is_some();
        let mut add: Vec<(&str, String)> = Vec::new();
        if !has(headers::ORIGINAL_TOPIC) {
            add.push((headers::ORIGINAL_TOPIC, m.topic.to_string()));
            add.push((headers::ORIGINAL_PARTITION, m.partition.to_string()));
            add.push((headers::ORIGINAL_OFFSET, m.offset.to_string()));
            if let Some(ts) = m.timestamp_ms {
                add.push((headers::ORIGINAL_TIMESTAMP, ts.to_string()));
            }
        }
        if !has(headers::FIRST_FAILURE_MS) {
            add.push((headers::FIRST_FAILURE_MS, now.to_string()));
        }
        if let Some(tp) = crate::trace::current_traceparent() {
            out.0.retain(|h| h.key != crate::trace::LINK_TRACEPARENT);
            add.push((crate::trace::LINK_TRACEPARENT, tp));
        }
        add.push((headers::ERROR_CLASS, f.error.class().to_string()));
        add.push((
            headers::ERROR_MESSAGE,
            truncate(&f.error.to_string(), MAX_ERROR_MESSAGE_BYTES),
        ));
        let topic = match route {
            Route::Retry {
                topic,
                delay,
                next_attempt,
            } => {
                let jitter = if self.cfg.jitter > 0.0 {
                    delay.as_secs_f64() * self.cfg.jitter * rand::random_range(0.0..1.0)
                } else {
                    0.0
                };
                let due = now + delay.as_millis() as i64 + (jitter * 1000.0) as i64;
                add.push((headers::ATTEMPT, next_attempt.to_string()));
                add.push((headers::DUE_MS, due.to_string()));
                add.push((headers::FOR_GROUP, f.group_id.to_string()));
                topic
            }
            Route::Dlq { topic, reason } => {
                add.push((headers::ATTEMPT, f.attempts.to_string()));
                add.push((headers::DLQ_REASON, (*reason).to_string()));
                add.push((headers::FAILED_GROUP, f.group_id.to_string()));
                add.push((headers::DLQ_AT_MS, now.to_string()));
                topic
            }
        };
        for (k, v) in add {
            out.push(k, Bytes::from(v));
        }
        let mut r = Record::to(topic.clone());
        r.key = m.key.clone();
        r.payload = m.payload.clone();
        r.headers = out;
        // Same partition number as the source keeps a key's copies together.
        let original_partition = wire::header_i64(&m.headers, headers::ORIGINAL_PARTITION)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(m.partition);
        if let Some(&n) = self.map.partitions.get(topic)
            && n > 0
        {
            r.partition = Some(original_partition.rem_euclid(n));
        }
        r
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl FailureSink for RetrySink {
    fn on_failure<'a>(&'a self, f: Failure<'a>) -> BoxFuture<'a, Disposition> {
        Box::pin(async move {
            let route = self.route(f.message, f.error, f.attempts);
            let mut backoff = Duration::from_millis(100);
            loop {
                let record = self.record(&f, &route, now_ms());
                match self.producer.send(record).await {
                    Ok(d) => {
                        match &route {
                            Route::Retry { .. } => {
                                crate::stats::ConsumerStats::add(&self.stats.retry_published, 1);
                                metrics::counter!("weir_retry_published_total", "topic" => d.topic.clone()).increment(1);
                            }
                            Route::Dlq { reason, .. } => {
                                crate::stats::ConsumerStats::add(&self.stats.dlq_published, 1);
                                metrics::counter!("weir_dlq_published_total", "topic" => d.topic.clone(), "reason" => *reason).increment(1);
                            }
                        }
                        match &route {
                            Route::Retry {
                                delay,
                                next_attempt,
                                ..
                            } => tracing::debug!(
                                group = f.group_id, topic = %f.message.topic, partition = f.message.partition,
                                offset = f.message.offset, to = %d.topic, to_partition = d.partition, to_offset = d.offset,
                                ?delay, next_attempt, class = f.error.class(), "sent to retry tier"
                            ),
                            Route::Dlq { reason, .. } => tracing::warn!(
                                group = f.group_id, topic = %f.message.topic, partition = f.message.partition,
                                offset = f.message.offset, to = %d.topic, to_partition = d.partition, to_offset = d.offset,
                                reason, attempts = f.attempts, class = f.error.class(), error = %f.error,
                                "sent to the DLQ"
                            ),
                        }
                        return Disposition::Handled;
                    }
                    Err(e) if e.is_retryable() => {
                        // The broker is unwell: keep the message (its offset stays
                        // unfinished) and try again; revoke/shutdown deadlines
                        // cancel this wait.
                        tracing::warn!(
                            group = f.group_id, topic = %f.message.topic, partition = f.message.partition,
                            offset = f.message.offset, error = %e, ?backoff,
                            "publishing to the retry tier / DLQ failed; retrying"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                    Err(e) => {
                        tracing::error!(
                            group = f.group_id, topic = %f.message.topic, partition = f.message.partition,
                            offset = f.message.offset, error = %e,
                            "cannot publish to the retry tier / DLQ; partition halted at this message"
                        );
                        return Disposition::Stop;
                    }
                }
            }
        })
    }
}

/// Refreshes the DLQ depth (high minus low watermark, all partitions) every
/// `every` until `stop`: `ConsumerStats::dlq_depth` and the
/// `weir_dlq_depth{topic}` gauge (alert on its growth).
pub(crate) fn spawn_dlq_depth(
    config: &crate::ConsumerConfig,
    dlq_topics: Vec<String>,
    stats: Arc<crate::stats::ConsumerStats>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let mut cc = config.client_config();
    cc.remove("group.id");
    let client: BaseConsumer = cc.create().ok()?;
    let client = Arc::new(client);
    Some(tokio::spawn(async move {
        loop {
            let c = client.clone();
            let topics = dlq_topics.clone();
            let depths = tokio::task::spawn_blocking(move || {
                topics
                    .into_iter()
                    .map(|t| {
                        let n = c
                            .fetch_metadata(Some(&t), Duration::from_secs(5))
                            .ok()
                            .and_then(|md| md.topics().first().map(|x| x.partitions().len() as i32))
                            .unwrap_or(0);
                        let depth: i64 = (0..n)
                            .filter_map(|p| c.fetch_watermarks(&t, p, Duration::from_secs(5)).ok())
                            .map(|(lo, hi)| (hi - lo).max(0))
                            .sum();
                        (t, depth)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let mut total = 0;
            for (t, d) in depths {
                metrics::gauge!("weir_dlq_depth", "topic" => t).set(d as f64);
                total += d as u64;
            }
            crate::stats::ConsumerStats::set(&stats.dlq_depth, total);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::MESSAGE_ID_HEADER;

    fn raw(topic: &str, hs: &[(&str, &str)]) -> RawMessage {
        let mut h = Headers::default();
        for (k, v) in hs {
            h.push(*k, v.to_string());
        }
        RawMessage {
            topic: topic.into(),
            partition: 2,
            offset: 41,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(Bytes::from_static(b"k")),
            payload: Some(Bytes::from_static(b"p")),
            headers: h,
        }
    }

    fn sink(cfg: RetryTopics) -> RetrySink {
        let producer = Producer::new("127.0.0.1:1").unwrap();
        let mut parts = HashMap::new();
        for t in cfg.retry_topics_of("orders") {
            parts.insert(t, 4);
        }
        parts.insert(cfg.dlq_topic("orders"), 4);
        RetrySink::new(
            cfg,
            &["orders".to_string()],
            parts,
            producer,
            Default::default(),
        )
    }

    #[test]
    fn labels_and_names() {
        assert_eq!(delay_label(Duration::from_millis(500)), "500ms");
        assert_eq!(delay_label(Duration::from_secs(1)), "1s");
        assert_eq!(delay_label(Duration::from_secs(90)), "90s");
        assert_eq!(delay_label(Duration::from_secs(600)), "10m");
        assert_eq!(delay_label(Duration::from_secs(7200)), "2h");
        let r = RetryTopics::tiers([Duration::from_secs(1), Duration::from_secs(10)]);
        assert_eq!(
            r.retry_topics_of("orders"),
            ["orders.retry.1s", "orders.retry.10s"]
        );
        assert_eq!(r.dlq_topic("orders"), "orders.dlq");
    }

    #[test]
    fn exponential_delays_cap_and_share_topics() {
        let r = RetryTopics::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(5), 6);
        assert_eq!(
            r.backoff.delays(),
            [1, 2, 4, 5, 5].map(Duration::from_secs).to_vec()
        );
        assert_eq!(
            r.retry_topics_of("o").len(),
            4,
            "capped delays share a topic"
        );
    }

    #[test]
    fn routes_through_tiers_then_dlq() {
        let s = sink(RetryTopics::tiers([
            Duration::from_secs(1),
            Duration::from_secs(10),
        ]));
        let e = ProcessError::retryable(std::io::Error::other("503"));
        let m = raw("orders", &[]);
        assert_eq!(
            s.route(&m, &e, 1),
            Route::Retry {
                topic: "orders.retry.1s".into(),
                delay: Duration::from_secs(1),
                next_attempt: 2
            }
        );
        let m2 = raw("orders.retry.1s", &[(headers::ATTEMPT, "2")]);
        assert_eq!(
            s.route(&m2, &e, 2),
            Route::Retry {
                topic: "orders.retry.10s".into(),
                delay: Duration::from_secs(10),
                next_attempt: 3
            }
        );
        let m3 = raw("orders.retry.10s", &[(headers::ATTEMPT, "3")]);
        assert_eq!(
            s.route(&m3, &e, 3),
            Route::Dlq {
                topic: "orders.dlq".into(),
                reason: "retries_exhausted"
            }
        );
        let t = ProcessError::terminal(std::io::Error::other("bad"));
        assert_eq!(
            s.route(&m, &t, 1),
            Route::Dlq {
                topic: "orders.dlq".into(),
                reason: "terminal"
            }
        );
        // A tier copy without a valid attempt header cannot loop.
        for bad in [
            vec![],
            vec![(headers::ATTEMPT, "x")],
            vec![(headers::ATTEMPT, "1")],
        ] {
            let m = raw("orders.retry.1s", &bad);
            assert_eq!(
                s.route(&m, &e, 1),
                Route::Dlq {
                    topic: "orders.dlq".into(),
                    reason: "invalid_retry_headers"
                }
            );
        }
    }

    #[test]
    fn copies_carry_origin_and_failure_headers() {
        let s = sink(RetryTopics::tiers([Duration::from_secs(1)]).jitter(0.0));
        let e =
            ProcessError::retryable(std::io::Error::other("x".repeat(2000))).with_class("http_503");
        let m = raw("orders", &[("traceparent", "00-abc-def-01")]);
        let f = Failure {
            message: &m,
            error: &e,
            attempts: 1,
            group_id: "g",
        };
        let route = s.route(&m, &e, 1);
        let r = s.record(&f, &route, 1000);
        assert_eq!(r.topic, "orders.retry.1s");
        assert_eq!(r.partition, Some(2));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        let h = &r.headers;
        assert_eq!(h.get_str("traceparent").unwrap(), Some("00-abc-def-01"));
        assert_eq!(h.get_str(MESSAGE_ID_HEADER).unwrap(), Some("orders/2@41"));
        assert_eq!(h.get_str(headers::ORIGINAL_TOPIC).unwrap(), Some("orders"));
        assert_eq!(h.get_str(headers::ORIGINAL_PARTITION).unwrap(), Some("2"));
        assert_eq!(h.get_str(headers::ORIGINAL_OFFSET).unwrap(), Some("41"));
        assert_eq!(
            h.get_str(headers::ORIGINAL_TIMESTAMP).unwrap(),
            Some("1700000000000")
        );
        assert_eq!(h.get_str(headers::ATTEMPT).unwrap(), Some("2"));
        assert_eq!(h.get_str(headers::DUE_MS).unwrap(), Some("2000"));
        assert_eq!(h.get_str(headers::ERROR_CLASS).unwrap(), Some("http_503"));
        assert!(h.get(headers::ERROR_MESSAGE).unwrap().len() <= MAX_ERROR_MESSAGE_BYTES + 3);
        assert_eq!(h.get_str(headers::FIRST_FAILURE_MS).unwrap(), Some("1000"));

        // The next hop keeps origin and first failure, replaces the failure state.
        let mut m2 = raw("orders.retry.1s", &[]);
        m2.headers = r.headers.clone();
        m2.partition = 2;
        let f2 = Failure {
            message: &m2,
            error: &e,
            attempts: 2,
            group_id: "g",
        };
        let route2 = s.route(&m2, &e, 2);
        let r2 = s.record(&f2, &route2, 5000);
        assert_eq!(r2.topic, "orders.dlq");
        let h2 = &r2.headers;
        assert_eq!(h2.get_str(headers::ORIGINAL_OFFSET).unwrap(), Some("41"));
        assert_eq!(h2.get_str(headers::FIRST_FAILURE_MS).unwrap(), Some("1000"));
        assert_eq!(
            h2.get_str(headers::DLQ_REASON).unwrap(),
            Some("retries_exhausted")
        );
        assert_eq!(h2.get_str(headers::FAILED_GROUP).unwrap(), Some("g"));
        assert_eq!(h2.iter().filter(|h| h.key == headers::ATTEMPT).count(), 1);
        assert_eq!(h2.iter().filter(|h| h.key == headers::DUE_MS).count(), 0);
        assert_eq!(h2.iter().filter(|h| h.key == MESSAGE_ID_HEADER).count(), 1);
    }

    #[test]
    fn picks_the_longest_fitting_tier() {
        let d = [1, 10, 60].map(Duration::from_secs);
        assert_eq!(
            pick_tier(&d, Duration::from_secs(30)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            pick_tier(&d, Duration::from_secs(3600)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            pick_tier(&d, Duration::from_millis(300)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(pick_tier(&[], Duration::from_secs(1)), None);
    }

    #[test]
    fn a_scheduled_copy_in_a_tier_is_valid_at_attempt_one() {
        let s = sink(RetryTopics::tiers([
            Duration::from_secs(1),
            Duration::from_secs(10),
        ]));
        let e = ProcessError::retryable(std::io::Error::other("503"));
        let m = raw("orders.retry.1s", &[(headers::NOT_BEFORE_MS, "5")]);
        assert_eq!(
            s.route(&m, &e, 1),
            Route::Retry {
                topic: "orders.retry.1s".into(),
                delay: Duration::from_secs(1),
                next_attempt: 2
            }
        );
        assert!(!not_yet(&m), "a past not-before is due");
        let future = (now_ms() + 60_000).to_string();
        assert!(not_yet(&raw(
            "orders.retry.1s",
            &[(headers::NOT_BEFORE_MS, &future)]
        )));
    }

    #[test]
    fn truncates_on_char_boundaries() {
        let s = "é".repeat(400);
        let t = truncate(&s, 511);
        assert!(t.len() <= 514);
        assert!(t.ends_with('…'));
    }

    #[tokio::test]
    async fn scheduling_without_tiers_is_an_error_not_a_send() {
        // An address nothing listens on: a send would wait, an error returns at once.
        let cfg = crate::ConsumerConfig::new("127.0.0.1:9", "g", &["t"]);
        let producer = Producer::for_consumer(&cfg).unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        for rt in [
            RetryTopics::dlq_only(),
            RetryTopics::tiers([Duration::from_secs(1)]).keep_key_order(),
        ] {
            let err = tokio::time::timeout(
                Duration::from_secs(5),
                rt.schedule(&producer, Record::to("t").payload("x"), later),
            )
            .await
            .expect("answers at once")
            .unwrap_err();
            assert!(
                matches!(err, crate::producer::ProduceError::Unschedulable { .. }),
                "{err}"
            );
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn tier_holds_cover_each_tier_with_jitter_and_skew() {
        let rt = RetryTopics::tiers([Duration::from_secs(1), Duration::from_secs(10)]).jitter(0.5);
        let holds = rt.tier_holds(&["orders".to_string()]);
        assert_eq!(holds.len(), 2);
        assert_eq!(
            holds["orders.retry.1s"],
            Duration::from_millis(1500) + HOLD_SKEW_ALLOWANCE
        );
        assert_eq!(
            holds["orders.retry.10s"],
            Duration::from_secs(15) + HOLD_SKEW_ALLOWANCE
        );
        assert!(
            !holds.contains_key("orders"),
            "the source topic holds nothing"
        );
        assert!(
            rt.keep_key_order()
                .tier_holds(&["orders".to_string()])
                .is_empty()
        );
    }
}
