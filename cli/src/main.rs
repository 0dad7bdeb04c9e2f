//! `weir`: operate Weir consumers. This release has the DLQ tools:
//!
//! ```text
//! weir dlq list    --topic orders.dlq [filters] [--json]
//! weir dlq show    --topic orders.dlq --partition 0 --offset 12 [--payload]
//! weir dlq replay  --topic orders.dlq [filters] [--to TOPIC] [--rate N] [--execute]
//! weir outbox relay --database-url postgres://… --brokers kafka:9092
//! weir replay --topic T --from (offset|earliest|RFC3339) [--to (offset|end|RFC3339)] --group G --copy-to T2
//! weir groups list | describe GROUP [--topic T]
//! weir inspect HOST:PORT [--json] [--watch 2s]
//! weir offsets reset --group G --topic T (--to-earliest|--to-latest|--to-datetime D|--to-offset N|--shift-by N) [--execute]
//! weir console --config weir.toml [--listen 127.0.0.1:9600] [--no-auth]
//! ```
//!
//! Exit codes: 0 success; 2 bad usage; 3 unknown topic, group, partition or
//! message; 4 Kafka error (unreachable brokers, authorization); 5 refused as
//! unsafe (offset reset while the group has members); 1 anything else.

mod cmd;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use weir::WeirError;
use weir::dlq::{
    DlqFilter, DlqMessage, ReplayOptions, counts_by_class, earlier_copies, read_dlq, replay,
};
use weir::groups;

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Operate Weir consumers: DLQs, replays, groups, offsets, the outbox relay and live inspection"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Inspect and replay dead-letter topics.
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// The transactional outbox.
    Outbox {
        #[command(subcommand)]
        cmd: OutboxCmd,
    },
    /// Re-process a bounded range of a topic with a replay group (the production
    /// group's offsets are untouched). This binary can copy the range to another
    /// topic (`--copy-to`); to run your own processor, build a binary with
    /// `weir_cli::run_replay`.
    Replay {
        #[command(flatten)]
        args: weir_cli::ReplayArgs,
        /// Re-publish each message (key, payload, headers, message ID) to this topic.
        #[arg(long)]
        copy_to: Option<String>,
    },
    /// Consumer groups: state, members, lag.
    Groups {
        #[command(subcommand)]
        cmd: GroupsCmd,
    },
    /// What holds each partition's commit in a running consumer: the oldest
    /// unfinished message (offset, key, attempt, wait), the finished messages
    /// behind it and the longest key queues. Reads the consumer's
    /// weir-telemetry endpoint (`/inspect`).
    Inspect {
        /// The consumer's telemetry endpoint: `host:port` or a URL.
        endpoint: String,
        /// Print the endpoint's JSON.
        #[arg(long)]
        json: bool,
        /// Refresh every INTERVAL (e.g. `2s`) until Ctrl-C.
        #[arg(long)]
        watch: Option<humantime::Duration>,
    },
    /// Move a group's committed offsets (dry run unless `--execute`).
    Offsets {
        #[command(subcommand)]
        cmd: OffsetsCmd,
    },
    /// A web console for the people on call: groups and their lag over time,
    /// Weir consumers' health, retry tiers and DLQs; DLQ replay and offset
    /// resets (dry run first) when `[console] actions = true`. Settings come
    /// from the `[console]` section of `--config` and `WEIR_CONSOLE_*`.
    Console {
        #[command(flatten)]
        conn: Conn,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9600")]
        listen: std::net::SocketAddr,
        /// Start without authentication (only on a loopback address).
        #[arg(long)]
        no_auth: bool,
    },
}

#[derive(Subcommand, Debug)]
enum GroupsCmd {
    /// Lists consumer groups with their state and member count.
    List {
        #[command(flatten)]
        conn: Conn,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// A group's state, members and assignment, and per partition: committed
    /// offset, log end, lag and the age of the oldest unconsumed message.
    Describe {
        #[command(flatten)]
        conn: Conn,
        /// The group.
        group: String,
        /// Topics to report (default: those assigned to its members; required for an empty group).
        #[arg(long, value_delimiter = ',')]
        topic: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum OffsetsCmd {
    /// Plans (default) or executes an offset reset for one topic of a group.
    Reset {
        #[command(flatten)]
        conn: Conn,
        /// The group.
        #[arg(long)]
        group: String,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// Only these partitions (comma-separated).
        #[arg(long, value_delimiter = ',')]
        partitions: Option<Vec<i32>>,
        /// To the earliest retained offset.
        #[arg(long, group = "target")]
        to_earliest: bool,
        /// To the log end (skip everything not yet consumed).
        #[arg(long, group = "target")]
        to_latest: bool,
        /// To the first message at or after this time (RFC 3339).
        #[arg(long, group = "target")]
        to_datetime: Option<String>,
        /// To this offset (clamped to the retained range).
        #[arg(long, group = "target")]
        to_offset: Option<i64>,
        /// Move by this many messages (negative: re-process).
        #[arg(long, group = "target", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Commit the new offsets (refused while the group has active members).
        #[arg(long)]
        execute: bool,
        /// With `--execute`: commit even when the broker cannot say whether the
        /// group has members (stop its consumers first).
        #[arg(long)]
        force: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum OutboxCmd {
    /// Relays committed outbox rows to Kafka until SIGTERM/SIGINT (deploy it as its own process).
    /// On PostgreSQL several instances are safe (one leads, the others stand by); on SQLite run
    /// exactly one: SQLite has no leader lock.
    Relay {
        #[command(flatten)]
        conn: Conn,
        /// `postgres://…` or `sqlite://path` (creates the table if missing).
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Rows per batch.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Polling fallback interval (wake-ups come from LISTEN/NOTIFY on PostgreSQL).
        #[arg(long, default_value = "1s")]
        poll_interval: humantime::Duration,
        /// Delete rows once published instead of marking them.
        #[arg(long)]
        delete: bool,
    },
}

#[derive(Args, Debug, Clone)]
struct Conn {
    /// Bootstrap servers (`host:port,…`).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    brokers: Option<String>,
    /// A Weir config file (TOML): `brokers` and the `[kafka]` properties (SASL, TLS) are used.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// A librdkafka property, `key=value` (repeatable), e.g. `-X security.protocol=SASL_SSL`.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    property: Vec<String>,
}

#[derive(Args, Debug, Clone)]
struct Filter {
    /// The DLQ topic.
    #[arg(long)]
    topic: String,
    /// Only this error class.
    #[arg(long)]
    class: Option<String>,
    /// Only this DLQ reason (`terminal`, `retries_exhausted`, `invalid_retry_headers`).
    #[arg(long)]
    reason: Option<String>,
    /// Only messages first consumed from this topic.
    #[arg(long)]
    original_topic: Option<String>,
    /// Only this key (UTF-8).
    #[arg(long)]
    key: Option<String>,
    /// Dead-lettered at or after (RFC 3339, e.g. 2026-11-20T10:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Dead-lettered before (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Only these DLQ partitions (comma-separated).
    #[arg(long, value_delimiter = ',')]
    partitions: Option<Vec<i32>>,
    /// At most this many messages.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum DlqCmd {
    /// Lists DLQ messages with their failure headers, and counts per error class.
    List {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        filter: Filter,
        /// One JSON object on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one DLQ message: coordinates, failure and all headers (payload only with `--payload`).
    Show {
        #[command(flatten)]
        conn: Conn,
        /// The DLQ topic.
        #[arg(long)]
        topic: String,
        /// Partition.
        #[arg(long)]
        partition: i32,
        /// Offset.
        #[arg(long)]
        offset: i64,
        /// Print the payload too (it may hold personal data).
        #[arg(long)]
        payload: bool,
        /// With `--payload`: a Confluent-compatible schema registry, to render
        /// Avro, Protobuf and JSON Schema keys and payloads as JSON
        /// (credentials and TLS from `WEIR_SCHEMA_REGISTRY_*`).
        #[arg(long, env = "WEIR_SCHEMA_REGISTRY_URL", value_name = "URL")]
        schema_registry: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Sends selected DLQ messages back to their original topic (or `--to`), with
    /// a fresh attempt count and a `weir-replayed-from` header. Dry run unless `--execute`.
    Replay {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        filter: Filter,
        /// Send to this topic instead of each message's original topic.
        #[arg(long)]
        to: Option<String>,
        /// At most this many messages per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Also send later copies of a message already selected (same message
        /// ID: dead-lettered twice); by default only the first copy is sent.
        #[arg(long)]
        keep_duplicates: bool,
        /// Really send (the default is a dry run that prints the plan).
        #[arg(long)]
        execute: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Exit codes scripts can rely on.
mod exit {
    pub const OTHER: u8 = 1;
    pub const NOT_FOUND: u8 = 3;
    pub const KAFKA: u8 = 4;
    pub const REFUSED: u8 = 5;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = match e.downcast_ref::<WeirError>() {
                Some(WeirError::UnknownTopic { .. }) => exit::NOT_FOUND,
                Some(WeirError::Kafka { .. } | WeirError::Fatal(_)) => exit::KAFKA,
                _ if e.downcast_ref::<NotFound>().is_some() => exit::NOT_FOUND,
                _ if e.downcast_ref::<Refused>().is_some() => exit::REFUSED,
                _ if e.downcast_ref::<weir::ProduceError>().is_some() => exit::KAFKA,
                _ if e.downcast_ref::<weir_outbox::OutboxError>().is_some() => exit::OTHER,
                _ => exit::OTHER,
            };
            ExitCode::from(code)
        }
    }
}

#[derive(Debug)]
struct NotFound(String);
impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NotFound {}

#[derive(Debug)]
struct Refused(String);
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Refused {}

fn client_config(conn: &Conn) -> anyhow::Result<(rdkafka::ClientConfig, String)> {
    let mut c = rdkafka::ClientConfig::new();
    let mut brokers = None;
    // Same sources as the runtime: the file, then `WEIR_*` variables
    // (`WEIR_BROKERS`, `WEIR_KAFKA_SASL_USERNAME`…), then flags.
    let base = match &conn.config {
        Some(path) => weir::ConsumerConfig::from_file(path)?,
        None => weir::ConsumerConfig::default(),
    };
    let cfg = base.with_env(std::env::vars())?;
    for (k, v) in &cfg.kafka {
        c.set(k, v);
    }
    if !cfg.brokers.is_empty() {
        brokers = Some(cfg.brokers.clone());
    }
    if let Some(b) = &conn.brokers {
        brokers = Some(b.clone());
    }
    for p in &conn.property {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("-X `{p}`: expected key=value"))?;
        c.set(k.trim(), v.trim());
    }
    let brokers = brokers.context(
        "no brokers: pass --brokers host:port, set KAFKA_BOOTSTRAP_SERVERS or WEIR_BROKERS, or give --config with `brokers`",
    )?;
    c.set("bootstrap.servers", &brokers);
    // Fail in seconds, not minutes, when the brokers are unreachable.
    if c.get("socket.connection.setup.timeout.ms").is_none() {
        c.set("socket.connection.setup.timeout.ms", "5000");
    }
    Ok((c, brokers))
}

fn parse_time(s: &Option<String>, what: &str) -> anyhow::Result<Option<i64>> {
    s.as_ref()
        .map(|v| {
            humantime::parse_rfc3339_weak(v)
                .with_context(|| {
                    format!("--{what} `{v}`: expected RFC 3339, e.g. 2026-11-20T10:00:00Z")
                })
                .map(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0)
                })
        })
        .transpose()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f).await?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Replay { args, copy_to } => cmd::replay::run(args, copy_to).await,
        Cmd::Groups {
            cmd: GroupsCmd::List { conn, json },
        } => cmd::groups::list(conn, json).await,
        Cmd::Groups {
            cmd:
                GroupsCmd::Describe {
                    conn,
                    group,
                    topic,
                    json,
                },
        } => cmd::groups::describe(conn, group, topic, json).await,
        Cmd::Offsets { cmd } => cmd::offsets::run(cmd).await,
        Cmd::Inspect {
            endpoint,
            json,
            watch,
        } => cmd::inspect::run(endpoint, json, watch).await,
        Cmd::Outbox {
            cmd:
                OutboxCmd::Relay {
                    conn,
                    database_url,
                    batch_size,
                    poll_interval,
                    delete,
                },
        } => cmd::outbox::relay(conn, database_url, batch_size, poll_interval.into(), delete).await,
        Cmd::Dlq { cmd } => cmd::dlq::run(cmd).await,
        Cmd::Console {
            conn,
            listen,
            no_auth,
        } => cmd::console::run(conn, listen, no_auth).await,
    }
}
