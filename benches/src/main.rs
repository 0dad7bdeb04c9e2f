//! `weir-bench`: Weir measured against a baseline in the same run, on the same data.
//!
//! ```text
//! cargo run --release -p weir-bench -- overhead [--broker mock|tansu] [--messages N] [--json]
//! cargo run --release -p weir-bench -- keyed    [--broker mock|tansu] [--messages N] [--concurrency C] [--json]
//! cargo run --release -p weir-bench -- retry    [--broker mock|tansu] [--messages N] [--json]
//! cargo run --release -p weir-bench -- outbox   [--broker mock|tansu] [--messages N] [--json]   (needs PostgreSQL)
//! cargo run --release -p weir-bench -- batch-sink [--broker mock|kafka] [--messages N] [--max-batch B] [--json]   (needs PostgreSQL)
//! cargo run --release -p weir-bench -- transactions [--broker mock|kafka] [--messages N] [--commit-intervals 100,500,1000] [--json]
//! cargo run --release -p weir-bench -- memory   [--broker mock|tansu] [--messages N] [--json]
//! cargo run --release -p weir-bench -- peers    [--broker kafka] [--messages N] [--rounds R] [--peers raw,weir,arroyo] [--peer-scenarios noop,keyed-5ms,slow-partition] [--time-box-s S] [--json]   (benches/peers/build first)
//! cargo run --release -p weir-bench -- rebalance [--broker kafka] [--protocols classic-eager,classic-cooperative,consumer] [--events join,leave,kill] [--json]
//! ```
//! Prints a readable report and, with `--json`, a last line with one JSON object.

mod scenarios;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use serde_json::json;
use weir::{Consumer, ConsumerConfig, ConsumerHandle, Message, Ordering, processor_fn};
use weir_testkit::{BrokerKind, KafkaCluster, TansuStorage, TestRecord};

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Scenario {
    /// No-op processor with real commits vs a raw rdkafka BaseConsumer loop.
    Overhead,
    /// One partition, thousands of keys, 5 ms handler: per-key mode vs partition-sequential and the ideal.
    Keyed,
    /// Every message fails once and returns through a 1 s retry tier: lateness of the redelivery.
    Retry,
    /// Rows committed to PostgreSQL by concurrent writers, relayed to Kafka; vs a raw producer.
    Outbox,
    /// A PostgreSQL sink with idempotency markers: one transaction per message vs per batch, vs a plain multi-row insert loop.
    BatchSink,
    /// One output per input, produced plainly vs in Kafka transactions, per commit interval.
    Transactions,
    /// A backlog consumed by a slow handler: memory stays bounded by the caps, not the backlog.
    Memory,
    /// Three member processes under steady load; a member joins, leaves, is SIGKILLed: pauses, gaps, redelivery per group protocol.
    Rebalance,
    /// Weir against other frameworks (sentry_arroyo) and the raw librdkafka loop, each its own process on the same topic: msgs/s, CPU, peak RSS.
    Peers,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Broker {
    Mock,
    /// Apache Kafka 4.1, one KRaft node (weir-testkit).
    Kafka,
    Tansu,
}

/// How the keyed scenario's handler waits its 5 ms.
#[derive(Copy, Clone, Debug, ValueEnum)]
enum HandlerTimer {
    /// `async_io::Timer` (its reactor sleeps on a timerfd): about 5 ms.
    Precise,
    /// `tokio::time::sleep`: tokio's 1 ms timer wheel rounds the deadline up
    /// to its next tick and adds the worker's wake-up, about 6.4 ms here.
    Tokio,
}

impl HandlerTimer {
    async fn wait(self, d: Duration) {
        match self {
            HandlerTimer::Precise => {
                async_io::Timer::after(d).await;
            }
            HandlerTimer::Tokio => tokio::time::sleep(d).await,
        }
    }
}

/// tansu's storage engine (`--broker tansu`).
#[derive(Copy, Clone, Debug, ValueEnum)]
enum Storage {
    Sqlite,
    Memory,
}

#[derive(Parser, Debug)]
#[command(about = "Weir benchmarks against in-run baselines")]
struct Args {
    scenario: Scenario,
    #[arg(long, value_enum, default_value = "mock")]
    broker: Broker,
    /// tansu's storage engine (with `--broker tansu`).
    #[arg(long, value_enum, default_value = "sqlite")]
    tansu_storage: Storage,
    /// Messages to process (default: 40000 for overhead, 20000 for keyed).
    #[arg(long)]
    messages: Option<u64>,
    /// In-flight messages for the keyed scenario.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// How the keyed scenario's 5 ms handler waits (both the baseline's and
    /// Weir's); the handler's measured mean is reported either way.
    #[arg(long, value_enum, default_value = "precise")]
    handler_timer: HandlerTimer,
    /// Rounds of the overhead scenario: baseline and Weir alternate, medians
    /// are reported (shared machines are noisy).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent writer tasks of the outbox scenario, each committing
    /// transactions of 10 rows (the load generator: too few writers measure
    /// PostgreSQL's commit latency, not the relay).
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Outbox writers enqueue row by row (`enqueue`) instead of one
    /// `enqueue_many` per transaction.
    #[arg(long)]
    single_enqueue: bool,
    /// Group protocols of the rebalance scenario (comma-separated).
    #[arg(long, default_value = "classic-eager,classic-cooperative,consumer")]
    protocols: String,
    /// Events of the rebalance scenario, in order (comma-separated).
    #[arg(long, default_value = "join,leave,kill")]
    events: String,
    /// Records per second of the rebalance scenario's steady load.
    #[arg(long, default_value_t = 600)]
    rate: u64,
    /// How long the rebalance scenario watches after each event has settled (ms).
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Rows per batch of the batch-sink scenario (and per statement of its plain loop).
    #[arg(long, default_value_t = 256)]
    max_batch: usize,
    /// Commit intervals of the transactions scenario, in ms (comma-separated).
    #[arg(long, default_value = "100,500,1000")]
    commit_intervals: String,
    /// Systems of the peers scenario (comma-separated; `raw`, `raw-tuned`,
    /// `weir`, `arroyo`, `arroyo-tuned`, `parallel-consumer`, `spring-kafka`,
    /// `consumer-perf` (Kafka's ConsumerPerformance, noop only); `-tuned`:
    /// with Weir's fetch settings).
    #[arg(
        long,
        default_value = "raw,raw-tuned,weir,arroyo,arroyo-tuned,parallel-consumer,spring-kafka,consumer-perf"
    )]
    peers: String,
    /// Scenarios of the peers scenario (comma-separated; `noop`,
    /// `keyed-5ms`, `slow-partition`, `retry`). `--messages` sets every
    /// one's count.
    #[arg(long, default_value = "noop,keyed-5ms,slow-partition,retry")]
    peer_scenarios: String,
    /// In the peers scenario, a system reports what it counted this many
    /// seconds after its first message if it has not finished by then.
    #[arg(long, default_value_t = 30)]
    time_box_s: u64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

async fn cluster(b: Broker, storage: Storage) -> anyhow::Result<KafkaCluster> {
    Ok(match (b, storage) {
        (Broker::Mock, _) => KafkaCluster::mock(1)?,
        // The JIT matters for throughput: no C1-only flag here.
        (Broker::Kafka, _) => KafkaCluster::kafka(1).await?,
        (Broker::Tansu, Storage::Sqlite) => KafkaCluster::tansu(TansuStorage::Sqlite).await?,
        (Broker::Tansu, Storage::Memory) => KafkaCluster::tansu(TansuStorage::Memory).await?,
    })
}

async fn produce(
    cluster: &KafkaCluster,
    topic: &str,
    n: u64,
    keys: u64,
    partitions: i32,
) -> anyhow::Result<()> {
    let payload = "x".repeat(100);
    // One producer for every batch: a new idempotent producer per batch
    // (connect, InitProducerId) made 1,000,000 records take about 115 s on
    // Kafka.
    let producer = cluster.producer()?;
    let mut i = 0;
    while i < n {
        let end = (i + 5000).min(n);
        let batch: Vec<TestRecord> = (i..end)
            .map(|j| {
                TestRecord::keyed(format!("key-{}", j % keys), format!("{j} {payload}"))
                    .partition((j % partitions as u64) as i32)
            })
            .collect();
        weir_testkit::produce_with(&producer, topic, batch).await?;
        i = end;
    }
    Ok(())
}

fn weir_config(cluster: &KafkaCluster, group: &str, topic: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(cluster.bootstrap_servers(), group, &[topic]);
    c.commit_interval = Duration::from_millis(500);
    // WEIR_* variables tune the Weir side for experiments (WEIR_MAX_BUFFERED_PER_PARTITION,
    // WEIR_KAFKA_FETCH_QUEUE_BACKOFF_MS, …); the baselines use librdkafka defaults.
    c.with_env(std::env::vars())
        .expect("valid WEIR_* variables")
}

/// Waits until the processor has counted `n` messages; fails with the counts
/// after `limit` instead of hanging.
async fn wait_for(
    what: &str,
    count: &AtomicU64,
    n: u64,
    limit: Duration,
    handle: &ConsumerHandle,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while count.load(SeqCst) < n {
        if Instant::now() > deadline {
            bail!(
                "{what}: weir processed {} of {n} messages in {limit:?} (received {})",
                count.load(SeqCst),
                handle.stats().received()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

use weir::clock::now_ms;

/// The `p`-quantile of sorted values (0 when empty).
fn quantile(sorted: &[i64], p: f64) -> i64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    // The rebalance scenario's member processes are this binary too.
    if let Some(r) = scenarios::rebalance::member_if_asked().await {
        return r;
    }
    // So are the peers scenario's Weir and raw-loop processes.
    if let Some(r) = scenarios::peers::peer_if_asked().await {
        return r;
    }
    let args = Args::parse();
    let cluster = cluster(args.broker, args.tansu_storage).await?;
    let mut out = match args.scenario {
        Scenario::Overhead => scenarios::overhead::overhead(&args, &cluster).await?,
        Scenario::Keyed => scenarios::keyed::keyed(&args, &cluster).await?,
        Scenario::Retry => scenarios::retry::retry(&args, &cluster).await?,
        Scenario::Outbox => scenarios::outbox::outbox(&args, &cluster).await?,
        Scenario::Memory => scenarios::memory::memory(&args, &cluster).await?,
        Scenario::BatchSink => scenarios::batch_sink::batch_sink(&args, &cluster).await?,
        Scenario::Transactions => scenarios::transactions::transactions(&args, &cluster).await?,
        Scenario::Rebalance => scenarios::rebalance::rebalance(&args, &cluster).await?,
        Scenario::Peers => scenarios::peers::peers(&args, &cluster).await?,
    };
    let obj = out.as_object_mut().expect("object");
    obj.insert(
        "scenario".into(),
        json!(
            args.scenario
                .to_possible_value()
                .map(|v| v.get_name().to_string())
                .unwrap_or_default()
        ),
    );
    obj.insert(
        "broker".into(),
        json!(match args.broker {
            Broker::Mock => "mock".to_string(),
            Broker::Kafka => "kafka".to_string(),
            Broker::Tansu => format!("tansu-{:?}", args.tansu_storage).to_lowercase(),
        }),
    );
    obj.insert(
        "messages".into(),
        json!(args.messages.unwrap_or(match args.scenario {
            Scenario::Overhead => 40_000,
            Scenario::Keyed => 20_000,
            Scenario::Retry => 2_000,
            Scenario::Outbox => 20_000,
            Scenario::Memory => 80_000,
            Scenario::BatchSink => 20_000,
            Scenario::Transactions => 20_000,
            Scenario::Rebalance => 0,
            Scenario::Peers => 0,
        })),
    );
    obj.insert(
        "cores".into(),
        json!(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        ),
    );
    if args.json {
        println!("{out}");
    }
    let _ = BrokerKind::Mock;
    Ok(())
}
