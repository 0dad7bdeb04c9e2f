//! Consumer configuration: from code, a TOML file and `WEIR_*` environment variables.
//!
//! ```toml
//! brokers = "kafka-1:9092,kafka-2:9092"
//! group_id = "clicks-enricher"
//! topics = ["clicks"]
//! ordering = "key"               # partition | key | unordered
//! max_in_flight = 1024
//! max_in_flight_per_partition = 256
//! max_buffered_per_partition = 2000
//! handler_timeout = "30s"
//! max_header_bytes = 262144
//! inline_first_poll = true
//! partition_queues = true
//! commit_interval = "1s"
//! shutdown_deadline = "30s"
//! revoke_deadline = "20s"
//! auto_offset_reset = "earliest"
//! assignment = "cooperative-sticky"
//!
//! [retry]
//! max_attempts = 3
//! initial_backoff = "200ms"
//! max_backoff = "10s"
//!
//! [dlq_limit]                    # off unless a limit is set (see weir::valves)
//! max_share = 0.5                # halt a partition when >50% of its last `window`
//! window = 100                   #   finished messages went to the DLQ
//! max_consecutive = 20           # or 20 in a row
//!
//! [retry_budget]                 # off unless max_share is set
//! max_share = 0.3                # past 30% of finished messages going to retry tiers
//! window = "30s"
//! min_retries = 100              # (and at least 100 of them), failures wait in place
//!
//! [kafka]                        # any librdkafka property, passed through
//! "security.protocol" = "SASL_SSL"
//! "sasl.mechanism" = "SCRAM-SHA-512"
//! "sasl.username" = "weir"
//! "sasl.password" = "secret"     # redacted wherever config is printed
//! ```
//!
//! Environment variables override the file: `WEIR_BROKERS`, `WEIR_GROUP_ID`,
//! `WEIR_TOPICS` (comma-separated), `WEIR_ORDERING`, `WEIR_MAX_IN_FLIGHT`,
//! `WEIR_MAX_IN_FLIGHT_PER_PARTITION`, `WEIR_MAX_BUFFERED_PER_PARTITION`,
//! `WEIR_HANDLER_TIMEOUT`, `WEIR_MAX_HEADER_BYTES`, `WEIR_COMMIT_INTERVAL`, `WEIR_SHUTDOWN_DEADLINE`,
//! `WEIR_REVOKE_DEADLINE`, `WEIR_AUTO_OFFSET_RESET`, `WEIR_ASSIGNMENT`,
//! `WEIR_RETRY_MAX_ATTEMPTS`, `WEIR_RETRY_INITIAL_BACKOFF`,
//! `WEIR_RETRY_MAX_BACKOFF`, `WEIR_DLQ_LIMIT_MAX_SHARE`, `WEIR_DLQ_LIMIT_WINDOW`,
//! `WEIR_DLQ_LIMIT_MAX_CONSECUTIVE`, `WEIR_RETRY_BUDGET_MAX_SHARE`,
//! `WEIR_RETRY_BUDGET_WINDOW`, `WEIR_RETRY_BUDGET_MIN_RETRIES`, and `WEIR_KAFKA_<PROPERTY>` for a librdkafka
//! property with dots written as underscores (`WEIR_KAFKA_SASL_PASSWORD` sets
//! `sasl.password`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::error::ConfigError;
use crate::scheduler::Ordering;

/// Partition assignment strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignment {
    /// Incremental (cooperative) rebalancing: only moved partitions stop.
    #[default]
    CooperativeSticky,
    /// Eager range assignment (every rebalance revokes everything).
    Range,
    /// Eager round-robin assignment.
    Roundrobin,
}

impl Assignment {
    fn librdkafka_name(self) -> &'static str {
        match self {
            Assignment::CooperativeSticky => "cooperative-sticky",
            Assignment::Range => "range",
            Assignment::Roundrobin => "roundrobin",
        }
    }
}

impl std::str::FromStr for Assignment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cooperative-sticky" => Ok(Assignment::CooperativeSticky),
            "range" => Ok(Assignment::Range),
            "roundrobin" => Ok(Assignment::Roundrobin),
            other => Err(format!(
                "`{other}` is not one of cooperative-sticky, range, roundrobin"
            )),
        }
    }
}

/// In-process retries of retryable failures, before the failure sink sees them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of the delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Growth factor between attempts.
    pub multiplier: f64,
    /// Randomise each delay by ±50% so that retries do not stampede a downstream.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// No retries: the first failure goes to the failure sink.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The delay after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = self.initial_backoff.as_secs_f64() * exp;
        let capped = base.min(self.max_backoff.as_secs_f64());
        let d = if self.jitter {
            capped * rand::random_range(0.5..1.5)
        } else {
            capped
        };
        Duration::from_secs_f64(d.min(self.max_backoff.as_secs_f64()))
    }
}

/// Everything a consumer needs. Build it in code, or load it with
/// [`ConsumerConfig::load`] (TOML file, then `WEIR_*` environment).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Ordering mode.
    pub ordering: Ordering,
    /// Messages in flight across all partitions.
    pub max_in_flight: usize,
    /// Messages in flight per partition.
    pub max_in_flight_per_partition: usize,
    /// Messages held per partition (in flight, waiting for their key, or finished
    /// but behind an unfinished one) before Weir stops reading the partition (with `partition_queues`) or pauses it.
    pub max_buffered_per_partition: usize,
    /// A handler running longer is cancelled; counts as a retryable failure.
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Duration,
    /// Messages whose headers (names and values) exceed this many bytes fail
    /// as terminal `oversized_headers` without reaching the processor.
    pub max_header_bytes: usize,
    /// Poll each message's handler once on the dispatcher before spawning it:
    /// handlers that finish without waiting then cost no task spawn and no
    /// cross-thread wake-up. Handlers whose first poll takes long (CPU-heavy
    /// synchronous work) are detected and spawned directly. Set `false` to
    /// spawn every message (for handlers that block the thread, which they
    /// should not do in any case).
    pub inline_first_poll: bool,
    /// Read each assigned partition from its own librdkafka queue and take
    /// messages from it only while the partition has room
    /// (`max_buffered_per_partition`). Backpressure then never pauses the
    /// partition, so librdkafka keeps what it prefetched and no refetch is
    /// needed when room frees up. librdkafka's prefetch limits
    /// (`queued.min.messages`, `queued.max.messages.kbytes`) then apply per
    /// partition; unless set in `kafka`, Weir sets
    /// `queued.max.messages.kbytes` to 4096 (4 MiB per partition),
    /// `fetch.queue.backoff.ms` to 20 ms and, with its own queue limit,
    /// `fetch.max.bytes` to librdkafka's default 50 MiB (which librdkafka
    /// would otherwise lower to the 4 MiB queue limit). `false` reads every
    /// partition from the shared consumer queue and pauses full partitions.
    pub partition_queues: bool,
    /// How often finished offsets are committed (asynchronously).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// How long shutdown waits for in-flight messages.
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// How long a revoke waits for in-flight messages of revoked partitions.
    #[serde(with = "humantime_serde")]
    pub revoke_deadline: Duration,
    /// Where a group with no committed offset starts: `earliest`, `latest` or `error`.
    pub auto_offset_reset: String,
    /// Partition assignment strategy.
    pub assignment: Assignment,
    /// In-process retries.
    pub retry: RetryPolicy,
    /// Halts a partition when too much of it goes to the DLQ (off by default).
    pub dlq_limit: crate::valves::DlqLimit,
    /// Makes failures wait in place when retry tiers take too large a share (off by default).
    pub retry_budget: crate::valves::RetryBudget,
    /// librdkafka properties passed through (SASL, TLS, fetch sizes…).
    pub kafka: BTreeMap<String, String>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            brokers: String::new(),
            group_id: String::new(),
            topics: Vec::new(),
            ordering: Ordering::Key,
            max_in_flight: 1024,
            max_in_flight_per_partition: 256,
            max_buffered_per_partition: 2000,
            handler_timeout: Duration::from_secs(30),
            max_header_bytes: 256 * 1024,
            inline_first_poll: true,
            partition_queues: true,
            commit_interval: Duration::from_secs(1),
            shutdown_deadline: Duration::from_secs(30),
            revoke_deadline: Duration::from_secs(20),
            auto_offset_reset: "earliest".into(),
            assignment: Assignment::CooperativeSticky,
            retry: RetryPolicy::default(),
            dlq_limit: Default::default(),
            retry_budget: Default::default(),
            kafka: BTreeMap::new(),
        }
    }
}

/// Property names whose values are secrets (matched as substrings, lower-case).
const SECRET_MARKERS: &[&str] = &[
    "password",
    "secret",
    "sasl.jaas",
    "oauthbearer.config",
    "key.pem",
    "token",
];

/// True when a librdkafka property holds a secret that must never be printed.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|m| k.contains(m))
}

/// Properties Weir sets itself; passing them through would break its guarantees.
const OWNED_KEYS: &[(&str, &str)] = &[
    (
        "enable.auto.commit",
        "Weir commits only processed offsets; auto-commit would commit unprocessed ones",
    ),
    (
        "enable.auto.offset.store",
        "Weir stores offsets itself after processing",
    ),
    ("group.id", "use the `group_id` key"),
    ("bootstrap.servers", "use the `brokers` key"),
    ("metadata.broker.list", "use the `brokers` key"),
    ("enable.partition.eof", "Weir manages partition EOF events"),
    ("partition.assignment.strategy", "use the `assignment` key"),
    ("auto.offset.reset", "use the `auto_offset_reset` key"),
];

impl fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kafka: BTreeMap<&str, &str> = self
            .kafka
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret_key(k) { "***" } else { v.as_str() },
                )
            })
            .collect();
        f.debug_struct("ConsumerConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("ordering", &self.ordering)
            .field("max_in_flight", &self.max_in_flight)
            .field(
                "max_in_flight_per_partition",
                &self.max_in_flight_per_partition,
            )
            .field(
                "max_buffered_per_partition",
                &self.max_buffered_per_partition,
            )
            .field("handler_timeout", &self.handler_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("inline_first_poll", &self.inline_first_poll)
            .field("partition_queues", &self.partition_queues)
            .field("commit_interval", &self.commit_interval)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .field("revoke_deadline", &self.revoke_deadline)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("assignment", &self.assignment)
            .field("retry", &self.retry)
            .field("dlq_limit", &self.dlq_limit)
            .field("retry_budget", &self.retry_budget)
            .field("kafka", &kafka)
            .finish()
    }
}

fn parse_duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v).map_err(|e| {
        ConfigError::invalid(
            key,
            format!("`{v}` is not a duration ({e}); write e.g. `500ms`, `30s`, `5m`"),
        )
    })
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError::invalid(key, format!("`{v}` is not a valid number")))
}

impl ConsumerConfig {
    /// A config with defaults for everything but the three things every consumer needs.
    pub fn new(brokers: impl Into<String>, group_id: impl Into<String>, topics: &[&str]) -> Self {
        ConsumerConfig {
            brokers: brokers.into(),
            group_id: group_id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Sets a librdkafka property (passed through).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka.insert(key.into(), value.into());
        self
    }

    /// Sets the ordering mode.
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }

    /// Parses TOML text (unset keys keep their defaults). Does not validate.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::File {
            path: "<string>".into(),
            message: e.to_string(),
        })
    }

    /// Reads a TOML file (unset keys keep their defaults). Does not validate.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// File (if given), then the process environment, then validation.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let base = match path {
            Some(p) => Self::from_file(p)?,
            None => Self::default(),
        };
        let cfg = base.with_env(std::env::vars())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies `WEIR_*` variables from `vars` over this config. Unknown `WEIR_*`
    /// names are ignored (other tools share the prefix).
    pub fn with_env(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        for (name, v) in vars {
            let Some(rest) = name.strip_prefix("WEIR_") else {
                continue;
            };
            let key = rest.to_ascii_lowercase();
            match key.as_str() {
                "brokers" => self.brokers = v,
                "group_id" => self.group_id = v,
                "topics" => {
                    self.topics = v
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect()
                }
                "ordering" => {
                    self.ordering = v.parse().map_err(|e| ConfigError::invalid("ordering", e))?
                }
                "max_in_flight" => self.max_in_flight = parse_num(&key, &v)?,
                "max_in_flight_per_partition" => {
                    self.max_in_flight_per_partition = parse_num(&key, &v)?
                }
                "max_buffered_per_partition" => {
                    self.max_buffered_per_partition = parse_num(&key, &v)?
                }
                "handler_timeout" => self.handler_timeout = parse_duration(&key, &v)?,
                "max_header_bytes" => self.max_header_bytes = parse_num(&key, &v)?,
                "inline_first_poll" => self.inline_first_poll = parse_num(&key, &v)?,
                "partition_queues" => self.partition_queues = parse_num(&key, &v)?,
                "commit_interval" => self.commit_interval = parse_duration(&key, &v)?,
                "shutdown_deadline" => self.shutdown_deadline = parse_duration(&key, &v)?,
                "revoke_deadline" => self.revoke_deadline = parse_duration(&key, &v)?,
                "auto_offset_reset" => self.auto_offset_reset = v,
                "assignment" => {
                    self.assignment = v
                        .parse()
                        .map_err(|e| ConfigError::invalid("assignment", e))?
                }
                "retry_max_attempts" => {
                    self.retry.max_attempts = parse_num("retry.max_attempts", &v)?
                }
                "retry_initial_backoff" => {
                    self.retry.initial_backoff = parse_duration("retry.initial_backoff", &v)?
                }
                "retry_max_backoff" => {
                    self.retry.max_backoff = parse_duration("retry.max_backoff", &v)?
                }
                "dlq_limit_max_share" => {
                    self.dlq_limit.max_share = Some(parse_num("dlq_limit.max_share", &v)?)
                }
                "dlq_limit_window" => self.dlq_limit.window = parse_num("dlq_limit.window", &v)?,
                "dlq_limit_max_consecutive" => {
                    self.dlq_limit.max_consecutive =
                        Some(parse_num("dlq_limit.max_consecutive", &v)?)
                }
                "retry_budget_max_share" => {
                    self.retry_budget.max_share = Some(parse_num("retry_budget.max_share", &v)?)
                }
                "retry_budget_window" => {
                    self.retry_budget.window = parse_duration("retry_budget.window", &v)?
                }
                "retry_budget_min_retries" => {
                    self.retry_budget.min_retries = parse_num("retry_budget.min_retries", &v)?
                }
                _ => {
                    if let Some(prop) = key.strip_prefix("kafka_") {
                        self.kafka.insert(prop.replace('_', "."), v);
                    }
                }
            }
        }
        Ok(self)
    }

    /// Checks every value; the error names the key and says what to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "brokers",
                "missing: set `brokers = \"host:9092\"` or WEIR_BROKERS",
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "group_id",
                "missing: set `group_id` or WEIR_GROUP_ID",
            ));
        }
        if self.topics.is_empty() {
            return Err(ConfigError::invalid(
                "topics",
                "no topics: set `topics = [\"…\"]` or WEIR_TOPICS=a,b",
            ));
        }
        for t in &self.topics {
            let valid = !t.is_empty()
                && t.len() <= 249
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                return Err(ConfigError::invalid(
                    "topics",
                    format!("`{t}` is not a valid topic name (1-249 of [a-zA-Z0-9._-])"),
                ));
            }
        }
        let at_least_one = |key: &str, v: usize| {
            if v == 0 {
                Err(ConfigError::invalid(key, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        at_least_one("max_in_flight", self.max_in_flight)?;
        at_least_one(
            "max_in_flight_per_partition",
            self.max_in_flight_per_partition,
        )?;
        at_least_one("max_header_bytes", self.max_header_bytes)?;
        if self.max_buffered_per_partition < self.max_in_flight_per_partition {
            return Err(ConfigError::invalid(
                "max_buffered_per_partition",
                format!(
                    "{} is below max_in_flight_per_partition ({}): the buffer must hold at least what can run",
                    self.max_buffered_per_partition, self.max_in_flight_per_partition
                ),
            ));
        }
        if self.handler_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "handler_timeout",
                "must be above zero",
            ));
        }
        if self.commit_interval < Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                "commit_interval",
                "must be at least 10ms (commits are batched; per-message commits are ~25x slower)",
            ));
        }
        let max_poll_ms: u64 = match self.kafka.get("max.poll.interval.ms") {
            Some(v) => parse_num("kafka.max.poll.interval.ms", v)?,
            None => 300_000,
        };
        if self.revoke_deadline.as_millis() as u64 >= max_poll_ms {
            return Err(ConfigError::invalid(
                "revoke_deadline",
                format!(
                    "{:?} must be below max.poll.interval.ms ({max_poll_ms} ms)",
                    self.revoke_deadline
                ),
            ));
        }
        if !matches!(
            self.auto_offset_reset.as_str(),
            "earliest" | "latest" | "error"
        ) {
            return Err(ConfigError::invalid(
                "auto_offset_reset",
                format!(
                    "`{}` is not one of earliest, latest, error",
                    self.auto_offset_reset
                ),
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "retry.max_attempts",
                "must be at least 1 (1 means no retry)",
            ));
        }
        if !(self.retry.multiplier.is_finite() && self.retry.multiplier >= 1.0) {
            return Err(ConfigError::invalid(
                "retry.multiplier",
                "must be a finite number >= 1.0",
            ));
        }
        self.dlq_limit.validate()?;
        self.retry_budget.validate()?;
        for (k, why) in OWNED_KEYS {
            if self.kafka.contains_key(*k) {
                return Err(ConfigError::invalid(
                    format!("kafka.{k}"),
                    format!("remove it: {why}"),
                ));
            }
        }
        Ok(())
    }

    /// The librdkafka client config this consumer runs with.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.kafka {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set(
                "partition.assignment.strategy",
                self.assignment.librdkafka_name(),
            );
        // With a queue per partition librdkafka's prefetch limits count per
        // partition (not for the whole consumer): keep them near Weir's own
        // per-partition bound unless the user chose them.
        if self.partition_queues {
            let own_queue_limit = !self.kafka.contains_key("queued.max.messages.kbytes");
            if own_queue_limit {
                c.set("queued.max.messages.kbytes", "4096");
            }
            // A partition whose queue is at those limits is checked again
            // only after this backoff (librdkafka's default: 1 s, which would
            // leave a partition idle long after Weir has taken its messages).
            if !self.kafka.contains_key("fetch.queue.backoff.ms") {
                c.set("fetch.queue.backoff.ms", "20");
            }
            // librdkafka lowers `fetch.max.bytes` (the whole fetch response,
            // all partitions) to `queued.max.messages.kbytes` unless it is set:
            // 4 MiB per response halved a no-op consumer's rate on tansu
            // (docs/brokers.md). With Weir's own queue limit, keep
            // librdkafka's default (50 MiB; each partition is still capped by
            // `max.partition.fetch.bytes`). A queue limit, fetch size or
            // receive size the user chose is left to librdkafka's rule: a
            // small queue limit then also keeps fetches small (memory).
            if own_queue_limit
                && !self.kafka.contains_key("fetch.max.bytes")
                && !self.kafka.contains_key("receive.message.max.bytes")
            {
                c.set("fetch.max.bytes", "52428800");
            }
        }
        // Lag comes from librdkafka's statistics.
        if !self.kafka.contains_key("statistics.interval.ms") {
            c.set("statistics.interval.ms", "5000");
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn toml_then_env() {
        let c = ConsumerConfig::from_toml_str(
            r#"
            brokers = "a:9092"
            group_id = "g"
            topics = ["t1"]
            ordering = "partition"
            handler_timeout = "5s"
            [retry]
            max_attempts = 5
            [kafka]
            "fetch.min.bytes" = "10"
            "#,
        )
        .unwrap();
        assert_eq!(c.ordering, Ordering::Partition);
        assert_eq!(c.handler_timeout, Duration::from_secs(5));
        assert_eq!(c.retry.max_attempts, 5);
        let c = c
            .with_env(env(&[
                ("WEIR_TOPICS", "x, y"),
                ("WEIR_KAFKA_SASL_PASSWORD", "hunter2"),
                ("WEIR_TEST_BROKER", "tansu"),
                ("OTHER", "1"),
            ]))
            .unwrap();
        assert_eq!(c.topics, vec!["x", "y"]);
        assert_eq!(c.kafka["sasl.password"], "hunter2");
        c.validate().unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "secret leaked: {dbg}");
        assert!(dbg.contains("***"));
    }

    #[test]
    fn safety_valves_load_from_toml_and_env_and_are_off_by_default() {
        let c = ConsumerConfig::new("a:9092", "g", &["t"]);
        assert!(!c.dlq_limit.is_on() && !c.retry_budget.is_on());
        let c = ConsumerConfig::from_toml_str(
            r#"
            brokers = "a:9092"
            group_id = "g"
            topics = ["t"]
            [dlq_limit]
            max_share = 0.5
            window = 40
            [retry_budget]
            max_share = 0.25
            window = "10s"
            "#,
        )
        .unwrap()
        .with_env(env(&[
            ("WEIR_DLQ_LIMIT_MAX_CONSECUTIVE", "7"),
            ("WEIR_RETRY_BUDGET_MIN_RETRIES", "9"),
        ]))
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.dlq_limit.max_share, Some(0.5));
        assert_eq!(c.dlq_limit.window, 40);
        assert_eq!(c.dlq_limit.max_consecutive, Some(7));
        assert_eq!(c.retry_budget.max_share, Some(0.25));
        assert_eq!(c.retry_budget.window, Duration::from_secs(10));
        assert_eq!(c.retry_budget.min_retries, 9);
        let bad = c
            .with_env(env(&[("WEIR_RETRY_BUDGET_MAX_SHARE", "2")]))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(bad.to_string().contains("retry_budget.max_share"), "{bad}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = ConsumerConfig::from_toml_str("max_in_flight = \"lots\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_in_flight"), "{e}");
        let e = ConsumerConfig::from_toml_str("no_such_key = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no_such_key"), "{e}");
        let base = ConsumerConfig::new("b:1", "g", &["t"]);
        let e = base
            .clone()
            .with_env(env(&[("WEIR_HANDLER_TIMEOUT", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("handler_timeout") && e.contains("soon"), "{e}");
        let e = base
            .clone()
            .set("enable.auto.commit", "true")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("enable.auto.commit"), "{e}");
        let mut c = base.clone();
        c.max_in_flight = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_in_flight")
        );
        let mut c = base.clone();
        c.topics = vec!["bad topic!".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("not a valid topic name")
        );
        let mut c = base.clone();
        c.group_id.clear();
        assert!(c.validate().unwrap_err().to_string().contains("group_id"));
        let mut c = base;
        c.auto_offset_reset = "smallest-ish".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("auto_offset_reset")
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(400));
        assert_eq!(p.backoff(30), Duration::from_secs(10));
        let j = RetryPolicy::default();
        for _ in 0..100 {
            let d = j.backoff(2);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(600));
        }
    }

    #[test]
    fn secret_keys() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "ssl.keystore.password",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        assert!(!is_secret_key("sasl.username"));
    }

    #[test]
    fn partition_queues_keep_librdkafkas_fetch_size_unless_the_user_sized_it() {
        let base = ConsumerConfig::new("127.0.0.1:9", "g", &["t"]);
        let c = base.client_config();
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("4096"));
        assert_eq!(c.get("fetch.max.bytes"), Some("52428800"));
        // librdkafka accepts the combination (it checks fetch.max.bytes
        // against message.max.bytes and receive.message.max.bytes).
        let _: rdkafka::consumer::BaseConsumer = c.create().expect("valid config");

        let own = base.clone().set("fetch.max.bytes", "2097152");
        assert_eq!(own.client_config().get("fetch.max.bytes"), Some("2097152"));
        let small = base.clone().set("queued.max.messages.kbytes", "64");
        assert_eq!(
            small.client_config().get("fetch.max.bytes"),
            None,
            "a small queue limit keeps fetches small too"
        );
        let recv = base.clone().set("receive.message.max.bytes", "8000000");
        assert_eq!(recv.client_config().get("fetch.max.bytes"), None);
        let _: rdkafka::consumer::BaseConsumer =
            recv.client_config().create().expect("valid config");
        let mut shared = base;
        shared.partition_queues = false;
        assert_eq!(shared.client_config().get("fetch.max.bytes"), None);
        assert_eq!(
            shared.client_config().get("queued.max.messages.kbytes"),
            None
        );
    }
}
