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
//! group_protocol = "classic"     # or "consumer" (KIP-848, Kafka 4.0+)
//! group_instance_id_from_hostname = false  # static membership (or group_instance_id = "orders-0")
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
//! [retry_topics]                 # off unless set (see weir::retry)
//! tiers = ["1s", "10s", "1m"]    # orders.retry.1s, … then orders.dlq
//! in_place_attempts = 1
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
//! `WEIR_GROUP_PROTOCOL`, `WEIR_GROUP_INSTANCE_ID`, `WEIR_GROUP_INSTANCE_ID_FROM_HOSTNAME`,
//! `WEIR_RETRY_MAX_ATTEMPTS`, `WEIR_RETRY_INITIAL_BACKOFF`,
//! `WEIR_RETRY_MAX_BACKOFF`, `WEIR_DLQ_LIMIT_MAX_SHARE`, `WEIR_DLQ_LIMIT_WINDOW`,
//! `WEIR_DLQ_LIMIT_MAX_CONSECUTIVE`, `WEIR_RETRY_BUDGET_MAX_SHARE`,
//! `WEIR_RETRY_BUDGET_WINDOW`, `WEIR_RETRY_BUDGET_MIN_RETRIES`,
//! `WEIR_RETRY_TOPICS_TIERS` (comma-separated delays; creates the section),
//! `WEIR_RETRY_TOPICS_<KEY>` for the section's other keys, and `WEIR_KAFKA_<PROPERTY>` for a librdkafka
//! property with dots written as underscores (`WEIR_KAFKA_SASL_PASSWORD` sets
//! `sasl.password`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::error::ConfigError;
use crate::scheduler::Ordering;

mod env;
mod validate;

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

/// The consumer group protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupProtocol {
    /// The classic protocol (JoinGroup/SyncGroup): the client's assignor
    /// ([`Assignment`]), `session.timeout.ms` and `heartbeat.interval.ms` on
    /// the client.
    #[default]
    Classic,
    /// KIP-848's consumer protocol (Kafka 4.0+): the broker assigns
    /// (`group.remote.assignor`), timeouts live on the broker
    /// (`group.consumer.*`) or in the group's config, and every rebalance is
    /// incremental.
    Consumer,
}

impl GroupProtocol {
    /// librdkafka's `group.protocol` value.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

impl std::str::FromStr for GroupProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            other => Err(format!("`{other}` is not one of classic, consumer")),
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
    /// With `inline_first_poll`: first polls that take longer than this on
    /// average (sampled) mark the handler CPU-heavy, and its messages are
    /// spawned. Raise it under a profiler or an emulator, where every poll
    /// is many times slower than on the machine it will run on.
    #[serde(with = "humantime_serde")]
    pub inline_first_poll_limit: Duration,
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
    /// With `partition_queues`: read each partition's queue in batches
    /// (librdkafka's `rd_kafka_consume_batch_queue`, through `weir-ffi`)
    /// instead of one message per poll. Same messages, same order, less CPU
    /// per message; `false` is the path through rust-rdkafka alone.
    pub batch_consume: bool,
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
    /// Partition assignment strategy (classic protocol only: under
    /// `group_protocol = "consumer"` the broker assigns).
    pub assignment: Assignment,
    /// The group protocol: `classic` (default) or `consumer` (KIP-848).
    pub group_protocol: GroupProtocol,
    /// Static membership: this member's `group.instance.id`. A member that
    /// restarts within the session timeout with the same id gets its
    /// partitions back without a rebalance. Must be unique in the group: a
    /// second member with the same id is fenced (a fatal error).
    pub group_instance_id: Option<String>,
    /// Use the host name as `group_instance_id` when none is set (a
    /// StatefulSet pod's name is stable across restarts: `orders-0`).
    pub group_instance_id_from_hostname: bool,
    /// In-process retries.
    pub retry: RetryPolicy,
    /// Halts a partition when too much of it goes to the DLQ (off by default).
    pub dlq_limit: crate::valves::DlqLimit,
    /// Makes failures wait in place when retry tiers take too large a share (off by default).
    pub retry_budget: crate::valves::RetryBudget,
    /// Retry tiers and a DLQ from the `[retry_topics]` section (off unless
    /// set; see [`crate::retry`]). The same as passing them to
    /// [`ConsumerBuilder::retry_topics`](crate::ConsumerBuilder::retry_topics),
    /// which refuses to be given them twice.
    pub retry_topics: Option<crate::retry::RetryTopics>,
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
            inline_first_poll_limit: Duration::from_micros(50),
            partition_queues: true,
            batch_consume: true,
            commit_interval: Duration::from_secs(1),
            shutdown_deadline: Duration::from_secs(30),
            revoke_deadline: Duration::from_secs(20),
            auto_offset_reset: "earliest".into(),
            assignment: Assignment::CooperativeSticky,
            group_protocol: GroupProtocol::Classic,
            group_instance_id: None,
            group_instance_id_from_hostname: false,
            retry: RetryPolicy::default(),
            dlq_limit: Default::default(),
            retry_budget: Default::default(),
            retry_topics: None,
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
    ("group.protocol", "use the `group_protocol` key"),
    (
        "group.instance.id",
        "use the `group_instance_id` key (or `group_instance_id_from_hostname`)",
    ),
];

/// Client properties the consumer protocol does not accept (librdkafka
/// refuses them under `group.protocol=consumer`), and what replaces each.
pub(crate) const CLASSIC_ONLY_KEYS: &[(&str, &str)] = &[
    (
        "session.timeout.ms",
        "under the consumer protocol the session timeout is the broker's `group.consumer.session.timeout.ms` (or the group config `consumer.session.timeout.ms`)",
    ),
    (
        "heartbeat.interval.ms",
        "under the consumer protocol the broker sets it: `group.consumer.heartbeat.interval.ms` (or the group config `consumer.heartbeat.interval.ms`)",
    ),
    (
        "group.protocol.type",
        "the consumer protocol has no protocol type",
    ),
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
            .field("inline_first_poll_limit", &self.inline_first_poll_limit)
            .field("partition_queues", &self.partition_queues)
            .field("batch_consume", &self.batch_consume)
            .field("commit_interval", &self.commit_interval)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .field("revoke_deadline", &self.revoke_deadline)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("assignment", &self.assignment)
            .field("group_protocol", &self.group_protocol)
            .field("group_instance_id", &self.group_instance_id)
            .field(
                "group_instance_id_from_hostname",
                &self.group_instance_id_from_hostname,
            )
            .field("retry", &self.retry)
            .field("dlq_limit", &self.dlq_limit)
            .field("retry_budget", &self.retry_budget)
            .field("retry_topics", &self.retry_topics)
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
    /// A `[console]` section (`weir console`'s settings, which may share the
    /// file) is left out; any other unknown key is an error.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse_toml(text, "<string>")
    }

    fn parse_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::File {
            path: path.to_string(),
            message,
        };
        // Parsed from the text (line and column in errors) unless a
        // `[console]` section has to be taken out first.
        let has_console = toml::from_str::<toml::Table>(text)
            .map(|t| t.contains_key("console"))
            .unwrap_or(false);
        if has_console {
            let mut table: toml::Table = toml::from_str(text).map_err(|e| err(e.to_string()))?;
            table.remove("console");
            table
                .try_into()
                .map_err(|e: toml::de::Error| err(e.to_string()))
        } else {
            toml::from_str(text).map_err(|e| err(e.to_string()))
        }
    }

    /// Reads a TOML file (unset keys keep their defaults). Does not validate.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse_toml(&text, &path.display().to_string())
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

    /// This member's static `group.instance.id`: `group_instance_id`, else
    /// the host name when `group_instance_id_from_hostname` is set, else none.
    pub fn instance_id(&self) -> Result<Option<String>, ConfigError> {
        if let Some(id) = &self.group_instance_id {
            return Ok(Some(id.clone()));
        }
        if !self.group_instance_id_from_hostname {
            return Ok(None);
        }
        host_name().map(Some).ok_or_else(|| {
            ConfigError::invalid(
                "group_instance_id_from_hostname",
                "no host name found (HOSTNAME is unset and /proc/sys/kernel/hostname unreadable): set `group_instance_id` or WEIR_GROUP_INSTANCE_ID",
            )
        })
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
            .set("group.protocol", self.group_protocol.librdkafka_name());
        match self.group_protocol {
            GroupProtocol::Classic => {
                c.set(
                    "partition.assignment.strategy",
                    self.assignment.librdkafka_name(),
                );
            }
            // librdkafka refuses the classic protocol's properties here
            // (validate() names them); the broker assigns.
            GroupProtocol::Consumer => {
                for (k, _) in CLASSIC_ONLY_KEYS {
                    c.remove(k);
                }
            }
        }
        if let Ok(Some(id)) = self.instance_id() {
            c.set("group.instance.id", id);
        }
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
        // With librdkafka's default long poll (500 ms) the partitions that
        // did not move stopped for 0.5-1 s at each rebalance (measured on
        // the mock cluster under both protocols and on Kafka under the
        // consumer protocol: the fetch under way when the assignment changes
        // is waited out); with 100 ms they stop about 50 ms
        // (docs/scaling.md). The price: up to 10 empty fetches a second per
        // broker while the topics are idle, instead of 2.
        if !self.kafka.contains_key("fetch.wait.max.ms") {
            c.set("fetch.wait.max.ms", "100");
        }
        // Lag comes from librdkafka's statistics.
        if !self.kafka.contains_key("statistics.interval.ms") {
            c.set("statistics.interval.ms", "5000");
        }
        c
    }
}

/// The host name: `HOSTNAME`, else the kernel's.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests;
