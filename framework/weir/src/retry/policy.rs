//! The retry policy: backoff tiers (fixed or exponential), topic names,
//! loading from configuration, and scheduling a message for later.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::clock::now_ms;
use crate::producer::{Producer, Record};

/// The tier for a wait of `remaining`: the longest delay not above it, else the
/// shortest; and the due time (never past `not_before`).
pub(super) fn pick_tier(delays: &[Duration], remaining: Duration) -> Option<Duration> {
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
