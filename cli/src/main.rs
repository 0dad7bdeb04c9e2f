//! `weir`: operate Weir consumers. This release has the DLQ tools:
//!
//! ```text
//! weir dlq list    --topic orders.dlq [filters] [--json]
//! weir dlq show    --topic orders.dlq --partition 0 --offset 12 [--payload]
//! weir dlq replay  --topic orders.dlq [filters] [--to TOPIC] [--rate N] [--execute]
//! weir outbox relay --database-url postgres://… --brokers kafka:9092
//! weir replay --topic T --from (offset|earliest|RFC3339) [--to (offset|end|RFC3339)] --group G --copy-to T2
//! weir groups list | describe GROUP [--topic T]
//! weir offsets reset --group G --topic T (--to-earliest|--to-latest|--to-datetime D|--to-offset N|--shift-by N) [--execute]
//! ```
//!
//! Exit codes: 0 success; 2 bad usage; 3 unknown topic, group, partition or
//! message; 4 Kafka error (unreachable brokers, authorization); 5 refused as
//! unsafe (offset reset while the group has members); 1 anything else.

mod groups;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use weir::WeirError;
use weir::dlq::{
    DlqFilter, DlqMessage, ReplayOptions, counts_by_class, earlier_copies, read_dlq, replay,
    replay_record,
};

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Operate Weir consumers: DLQ inspection and replay"
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
    /// Move a group's committed offsets (dry run unless `--execute`).
    Offsets {
        #[command(subcommand)]
        cmd: OffsetsCmd,
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

fn dlq_filter(f: &Filter) -> anyhow::Result<DlqFilter> {
    Ok(DlqFilter {
        error_class: f.class.clone(),
        reason: f.reason.clone(),
        original_topic: f.original_topic.clone(),
        key: f.key.as_ref().map(|k| k.as_bytes().to_vec()),
        since_ms: parse_time(&f.since, "since")?,
        until_ms: parse_time(&f.until, "until")?,
        partitions: f.partitions.clone(),
        at: None,
    })
}

fn fmt_ms(ms: Option<i64>) -> String {
    ms.and_then(|m| u64::try_from(m).ok())
        .map(|m| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(m),
            )
            .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn to_json(m: &DlqMessage, payload: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "topic": &*m.raw.topic,
        "partition": m.raw.partition,
        "offset": m.raw.offset,
        "message_id": m.message_id,
        "key": m.raw.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "reason": m.reason,
        "error_class": m.error_class,
        "error_message": m.error_message,
        "attempts": m.attempts,
        "original_topic": m.original_topic,
        "original_partition": m.original_partition,
        "original_offset": m.original_offset,
        "failed_group": m.failed_group,
        "dlq_at_ms": m.dlq_at_ms,
        "payload_bytes": m.raw.payload.as_ref().map(|p| p.len()),
        "headers": m.raw.headers.iter().map(|h| serde_json::json!({
            "key": h.key,
            "value": h.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
        })).collect::<Vec<_>>(),
    });
    if payload {
        v["payload"] = serde_json::json!(
            m.raw
                .payload
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        );
    }
    v
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), ToString::to_string)
}

fn print_table(msgs: &[DlqMessage]) {
    println!(
        "{:<16} {:<22} {:<18} {:>8}  {:<28} {:<38} DEAD-LETTERED",
        "AT", "REASON", "CLASS", "ATTEMPTS", "ORIGINAL", "MESSAGE-ID"
    );
    for m in msgs {
        let original = match (&m.original_topic, m.original_partition, m.original_offset) {
            (Some(t), Some(p), Some(o)) => format!("{t}/{p}@{o}"),
            _ => "-".into(),
        };
        println!(
            "{:<16} {:<22} {:<18} {:>8}  {:<28} {:<38} {}",
            format!("{}@{}", m.raw.partition, m.raw.offset),
            opt(&m.reason),
            opt(&m.error_class),
            opt(&m.attempts),
            original,
            opt(&m.message_id),
            fmt_ms(m.dlq_at_ms),
        );
    }
}

fn print_counts(counts: &BTreeMap<String, usize>, total: usize) {
    println!("\n{total} message(s)");
    for (class, n) in counts {
        println!("  {class}: {n}");
    }
}

async fn outbox_relay(
    conn: Conn,
    database_url: String,
    batch_size: usize,
    poll_interval: std::time::Duration,
    delete: bool,
) -> anyhow::Result<()> {
    use weir_outbox::{MarkMode, PostgresOutbox, Relay, RelayConfig, SqliteOutbox};
    let (client, _) = client_config(&conn)?;
    let producer = weir::Producer::from_client_config(client)?;
    let cfg = RelayConfig {
        batch_size,
        poll_interval,
        mark: if delete {
            MarkMode::Delete
        } else {
            MarkMode::MarkPublished
        },
        ..Default::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    if database_url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&database_url)
            .await
            .context("connecting to the outbox database")?;
        let outbox = PostgresOutbox::new(pool);
        outbox.migrate().await?;
        eprintln!("relaying the PostgreSQL outbox (SIGTERM to stop)");
        Relay::new(outbox, producer, cfg).run(stop).await?;
    } else {
        let opts: sqlx::sqlite::SqliteConnectOptions = database_url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .context("parsing the SQLite URL")?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(30));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .context("opening the outbox database")?;
        let outbox = SqliteOutbox::new(pool);
        outbox.migrate().await?;
        eprintln!("relaying the SQLite outbox (SIGTERM to stop)");
        Relay::new(outbox, producer, cfg).run(stop).await?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f).await?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Replay { args, copy_to } => {
            let Some(target) = copy_to else {
                anyhow::bail!(
                    "`weir replay` needs a processor: pass --copy-to TOPIC to copy the range, or build your own binary with `weir_cli::run_replay(args, codec, your_processor)`"
                );
            };
            // The same brokers, credentials and TLS settings as the replay's consumer.
            let producer = weir::Producer::for_consumer(&args.consumer_config()?)?;
            let processor = weir::processor_fn(move |m: weir::Message<Option<bytes::Bytes>>| {
                let producer = producer.clone();
                let target = target.clone();
                async move {
                    let raw = m.raw();
                    let mut r = weir::Record::to(target);
                    r.key = raw.key.clone();
                    r.payload = raw.payload.clone();
                    r.headers = raw.headers.clone();
                    producer
                        .send(r)
                        .await
                        .map_err(|e| weir::ProcessError::retryable(e).with_class("copy"))?;
                    Ok(())
                }
            });
            weir_cli::run_replay(args, weir::BytesCodec, processor).await?;
            Ok(())
        }
        Cmd::Groups {
            cmd: GroupsCmd::List { conn, json },
        } => {
            let (client, _) = client_config(&conn)?;
            let gs = blocking(move || groups::list_groups(&client, None)).await??;
            if json {
                println!("{}", serde_json::json!({ "groups": gs }));
            } else {
                println!("{:<40} {:<20} {:>8}", "GROUP", "STATE", "MEMBERS");
                for g in &gs {
                    println!("{:<40} {:<20} {:>8}", g.name, g.state, g.members.len());
                }
            }
            Ok(())
        }
        Cmd::Groups {
            cmd:
                GroupsCmd::Describe {
                    conn,
                    group,
                    topic,
                    json,
                },
        } => {
            let (client, _) = client_config(&conn)?;
            let c2 = client.clone();
            let g = group.clone();
            let (info, membership_error) =
                match blocking(move || groups::list_groups(&c2, Some(&g))).await? {
                    Ok(gs) => (
                        gs.into_iter()
                            .find(|x| x.name == group && x.state != "Dead"),
                        None,
                    ),
                    // Some brokers (tansu, librdkafka's mock) do not answer
                    // ListGroups: report positions and lag without membership.
                    Err(e) if !topic.is_empty() => (None, Some(e.to_string())),
                    Err(e) => return Err(e.into()),
                };
            let mut topics = topic.clone();
            if topics.is_empty()
                && let Some(i) = &info
            {
                let set: std::collections::BTreeSet<String> = i
                    .members
                    .iter()
                    .flat_map(|m| m.assignment.keys().cloned())
                    .collect();
                topics = set.into_iter().collect();
            }
            if info.is_none() && topic.is_empty() {
                return Err(NotFound(format!(
                    "consumer group `{group}` is unknown to the brokers (it never committed, or its offsets expired); pass --topic to see its position anyway"
                ))
                .into());
            }
            if topics.is_empty() {
                return Err(NotFound(format!(
                    "group `{group}` has no members, so its topics are unknown: pass --topic T"
                ))
                .into());
            }
            let g = group.clone();
            let lags = blocking(move || groups::describe_lag(&client, &g, &topics)).await??;
            let total: i64 = lags.iter().map(|l| l.lag).sum();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "group": group, "info": info, "membership_error": membership_error, "lag": total, "partitions": lags })
                );
            } else {
                match &info {
                    Some(i) => println!(
                        "group {group}: {} ({} member(s), protocol {})",
                        i.state,
                        i.members.len(),
                        i.protocol
                    ),
                    None => match &membership_error {
                        Some(e) => println!("group {group}: membership unavailable ({e})"),
                        None => println!("group {group}: not known to the brokers"),
                    },
                }
                if let Some(i) = &info {
                    for m in &i.members {
                        println!("  member {}@{} {:?}", m.client_id, m.host, m.assignment);
                    }
                }
                println!(
                    "{:<30} {:>5} {:>12} {:>12} {:>10} {:>14}",
                    "TOPIC", "PART", "COMMITTED", "LOG-END", "LAG", "OLDEST-AGE"
                );
                for l in &lags {
                    println!(
                        "{:<30} {:>5} {:>12} {:>12} {:>10} {:>14}",
                        l.topic,
                        l.partition,
                        l.committed.map_or("-".into(), |c| c.to_string()),
                        l.high,
                        l.lag,
                        l.oldest_unconsumed_age_ms
                            .map_or("-".into(), |a| format!("{:.1}s", a as f64 / 1000.0))
                    );
                }
                println!("total lag {total}");
            }
            Ok(())
        }
        Cmd::Offsets {
            cmd:
                OffsetsCmd::Reset {
                    conn,
                    group,
                    topic,
                    partitions,
                    to_earliest,
                    to_latest,
                    to_datetime,
                    to_offset,
                    shift_by,
                    execute,
                    force,
                    json,
                },
        } => {
            let (client, _) = client_config(&conn)?;
            let to = if to_earliest {
                groups::ResetTo::Earliest
            } else if to_latest {
                groups::ResetTo::Latest
            } else if let Some(d) = &to_datetime {
                groups::ResetTo::Datetime(parse_time(&Some(d.clone()), "to-datetime")?.unwrap_or(0))
            } else if let Some(o) = to_offset {
                groups::ResetTo::Offset(o)
            } else if let Some(s) = shift_by {
                groups::ResetTo::ShiftBy(s)
            } else {
                anyhow::bail!(
                    "choose a target: --to-earliest, --to-latest, --to-datetime, --to-offset or --shift-by"
                );
            };
            let (g, t) = (group.clone(), topic.clone());
            let plan = blocking(move || {
                groups::reset_offsets(&client, &g, &t, partitions.as_deref(), &to, execute, force)
            })
            .await??;
            let plan = match plan {
                Ok(p) => p,
                Err(why) if why.contains("does not exist") => return Err(NotFound(why).into()),
                Err(why) => return Err(Refused(why).into()),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "group": group, "topic": topic, "executed": execute, "plan": plan })
                );
            } else {
                println!(
                    "{} for group {group} on {topic}:",
                    if execute {
                        "reset"
                    } else {
                        "dry run (add --execute to commit)"
                    }
                );
                println!(
                    "{:>5} {:>12} {:>12} {:>12} {:>10}  NOTE",
                    "PART", "OLD", "NEW", "REPROCESSED", "SKIPPED"
                );
                for l in &plan {
                    println!(
                        "{:>5} {:>12} {:>12} {:>12} {:>10}  {}",
                        l.partition,
                        l.old.map_or("-".into(), |o| o.to_string()),
                        l.new,
                        l.reprocessed,
                        l.skipped,
                        l.note.clone().unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        Cmd::Outbox {
            cmd:
                OutboxCmd::Relay {
                    conn,
                    database_url,
                    batch_size,
                    poll_interval,
                    delete,
                },
        } => outbox_relay(conn, database_url, batch_size, poll_interval.into(), delete).await,
        Cmd::Dlq { cmd } => match cmd {
            DlqCmd::List { conn, filter, json } => {
                let (client, _) = client_config(&conn)?;
                let msgs =
                    read_dlq(&client, &filter.topic, &dlq_filter(&filter)?, filter.limit).await?;
                let counts = counts_by_class(&msgs);
                let earlier = earlier_copies(&msgs);
                let copies = earlier.iter().filter(|e| e.is_some()).count();
                if json {
                    let messages: Vec<_> = msgs
                        .iter()
                        .zip(&earlier)
                        .map(|(m, e)| {
                            let mut v = to_json(m, false);
                            v["duplicate_of"] = serde_json::json!(e.map(|i| msgs[i].coordinates()));
                            v
                        })
                        .collect();
                    let v = serde_json::json!({
                        "topic": filter.topic,
                        "count": msgs.len(),
                        "distinct": msgs.len() - copies,
                        "by_class": counts,
                        "messages": messages,
                    });
                    println!("{v}");
                } else {
                    print_table(&msgs);
                    print_counts(&counts, msgs.len());
                    if copies > 0 {
                        println!(
                            "{copies} of them are later copies of a message listed above (same message ID, dead-lettered again); `dlq replay` sends the first copy only"
                        );
                    }
                }
                Ok(())
            }
            DlqCmd::Show {
                conn,
                topic,
                partition,
                offset,
                payload,
                json,
            } => {
                let (client, _) = client_config(&conn)?;
                let f = DlqFilter {
                    at: Some((partition, offset)),
                    ..Default::default()
                };
                let msgs = read_dlq(&client, &topic, &f, Some(1)).await?;
                let Some(m) = msgs.first() else {
                    return Err(NotFound(format!(
                        "no message at {topic}/{partition}@{offset} (check the partition and that the offset is between the watermarks)"
                    ))
                    .into());
                };
                if json {
                    println!("{}", to_json(m, payload));
                } else {
                    let v = to_json(m, payload);
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    if !payload {
                        println!("(payload hidden: pass --payload to print it)");
                    }
                }
                Ok(())
            }
            DlqCmd::Replay {
                conn,
                filter,
                to,
                rate,
                keep_duplicates,
                execute,
                json,
            } => {
                let (client, _) = client_config(&conn)?;
                let msgs =
                    read_dlq(&client, &filter.topic, &dlq_filter(&filter)?, filter.limit).await?;
                let mut plan: BTreeMap<String, usize> = BTreeMap::new();
                let mut nowhere = Vec::new();
                let mut copies = Vec::new();
                for (m, e) in msgs.iter().zip(earlier_copies(&msgs)) {
                    if e.is_some() && !keep_duplicates {
                        copies.push(m.coordinates());
                        continue;
                    }
                    match replay_record(m, to.as_deref()) {
                        Some(r) => *plan.entry(r.topic).or_default() += 1,
                        None => nowhere.push(m.coordinates()),
                    }
                }
                if !execute {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"dry_run": true, "selected": msgs.len(), "plan": plan, "no_destination": nowhere, "duplicates": copies})
                        );
                    } else {
                        println!(
                            "dry run: {} message(s) selected from {}",
                            msgs.len(),
                            filter.topic
                        );
                        for (t, n) in &plan {
                            println!("  would send {n} to {t}");
                        }
                        if !nowhere.is_empty() {
                            println!(
                                "  {} without an original topic (use --to): {:?}",
                                nowhere.len(),
                                nowhere
                            );
                        }
                        if !copies.is_empty() {
                            println!(
                                "  {} later copies of a message selected above, not sent (--keep-duplicates sends them): {:?}",
                                copies.len(),
                                copies
                            );
                        }
                        println!("run again with --execute to send them");
                    }
                    return Ok(());
                }
                let producer = weir::Producer::from_client_config(client.clone())?;
                let bar = indicatif::ProgressBar::new(msgs.len() as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} {per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                let report = replay(
                    &producer,
                    &msgs,
                    &ReplayOptions {
                        to_topic: to.clone(),
                        rate_per_s: rate,
                        keep_duplicates,
                    },
                    |done, _| bar.set_position(done as u64),
                )
                .await;
                bar.finish_and_clear();
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"dry_run": false, "sent": report.sent, "skipped": report.skipped, "duplicates": report.duplicates, "stopped": report.stopped})
                    );
                } else {
                    println!("replayed {} message(s)", report.sent);
                    if !report.skipped.is_empty() {
                        println!(
                            "skipped (no original topic; use --to): {:?}",
                            report.skipped
                        );
                    }
                    if !report.duplicates.is_empty() {
                        println!(
                            "not sent, later copies of a message replayed above (--keep-duplicates sends them): {:?}",
                            report.duplicates
                        );
                    }
                }
                if let Some(stop) = &report.stopped {
                    anyhow::bail!(
                        "replay stopped at {} after {} sent: {} ({} message(s) not tried; run it again from there)",
                        stop.at,
                        report.sent,
                        stop.error,
                        stop.remaining
                    );
                }
                Ok(())
            }
        },
    }
}
