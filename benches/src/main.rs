//! `weir-bench`: Weir measured against a baseline in the same run, on the same data.
//!
//! ```text
//! cargo run --release -p weir-bench -- overhead [--broker mock|tansu] [--messages N] [--json]
//! cargo run --release -p weir-bench -- keyed    [--broker mock|tansu] [--messages N] [--concurrency C] [--json]
//! cargo run --release -p weir-bench -- retry    [--broker mock|tansu] [--messages N] [--json]
//! cargo run --release -p weir-bench -- outbox   [--broker mock|tansu] [--messages N] [--json]   (needs PostgreSQL)
//! cargo run --release -p weir-bench -- memory   [--broker mock|tansu] [--messages N] [--json]
//! ```
//! Prints a readable report and, with `--json`, a last line with one JSON object.

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
    /// A backlog consumed by a slow handler: memory stays bounded by the caps, not the backlog.
    Memory,
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
    let mut i = 0;
    while i < n {
        let end = (i + 5000).min(n);
        let batch: Vec<TestRecord> = (i..end)
            .map(|j| {
                TestRecord::keyed(format!("key-{}", j % keys), format!("{j} {payload}"))
                    .partition((j % partitions as u64) as i32)
            })
            .collect();
        cluster.produce(topic, batch).await?;
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

/// Raw rdkafka loop: rate from the first message to the n-th.
fn raw_rate(cluster: &KafkaCluster, topic: &str, n: u64, round: usize) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = cluster
        .client_config()
        .set("group.id", format!("raw-{}-{round}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut seen = 0u64;
    let mut bytes = 0usize;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen < n {
        if Instant::now() > deadline {
            bail!("raw consumer read {seen}/{n}");
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, |p| p.len());
            seen += 1;
        }
    }
    let secs = first.context("no message")?.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok((n - 1) as f64 / secs)
}

async fn overhead(args: &Args, cluster: &KafkaCluster) -> anyhow::Result<serde_json::Value> {
    let n = args.messages.unwrap_or(40_000);
    let topic = "bench-overhead";
    cluster.create_topic(topic, 8).await?;
    produce(cluster, topic, n, 10_000, 8).await?;
    let (mut raws, mut weirs) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        let c2 = cluster.bootstrap_servers().to_string();
        let raw = {
            let cl = KafkaCluster::external_at(&c2);
            tokio::task::spawn_blocking(move || raw_rate(&cl, topic, n, round)).await??
        };
        let weir = weir_noop_rate(cluster, topic, n, round).await?;
        println!(
            "overhead round {}: raw rdkafka {raw:.0} msg/s, weir {weir:.0} msg/s, ratio {:.3}",
            round + 1,
            weir / raw
        );
        raws.push(raw);
        weirs.push(weir);
    }
    let ratios: Vec<f64> = raws.iter().zip(&weirs).map(|(r, w)| w / r).collect();
    let (raw, weir, ratio) = (median(&raws), median(&weirs), median(&ratios));
    println!(
        "overhead (median of {}): raw rdkafka {raw:.0} msg/s, weir {weir:.0} msg/s, ratio {ratio:.3}",
        ratios.len()
    );
    Ok(json!({
        "raw_msgs_per_s": raw.round(),
        "weir_msgs_per_s": weir.round(),
        "ratio": ratio,
        "rounds": ratios.len(),
        "round_ratios": ratios,
    }))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Weir with a no-op processor (real commits): rate from the first message to the n-th.
async fn weir_noop_rate(
    cluster: &KafkaCluster,
    topic: &str,
    n: u64,
    round: usize,
) -> anyhow::Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let first: Arc<Mutex<Option<Instant>>> = Default::default();
    let last: Arc<Mutex<Option<Instant>>> = Default::default();
    let (c, f, l) = (count.clone(), first.clone(), last.clone());
    let processor = processor_fn(move |_m: Message<Option<bytes::Bytes>>| {
        let (c, f, l) = (c.clone(), f.clone(), l.clone());
        async move {
            let k = c.fetch_add(1, SeqCst) + 1;
            if k == 1 {
                *f.lock() = Some(Instant::now());
            }
            if k == n {
                *l.lock() = Some(Instant::now());
            }
            Ok(())
        }
    });
    let group = format!("weir-overhead-{round}");
    let consumer = Consumer::builder(weir_config(cluster, &group, topic)).build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_for("overhead", &count, n, Duration::from_secs(300), &handle).await?;
    handle.shutdown();
    let _ = run.await?;
    let secs = (last.lock().unwrap() - first.lock().unwrap()).as_secs_f64();
    Ok((n - 1) as f64 / secs)
}

async fn keyed(args: &Args, cluster: &KafkaCluster) -> anyhow::Result<serde_json::Value> {
    let n = args.messages.unwrap_or(20_000);
    let keys = 5_000;
    let handler = Duration::from_millis(5);
    let topic = "bench-keyed";
    cluster.create_topic(topic, 1).await?;
    produce(cluster, topic, n, keys, 1).await?;

    // Partition-sequential baseline: one message at a time, same handler, first 200 messages.
    let seq_n = 200u64.min(n);
    let consumer: BaseConsumer = cluster
        .client_config()
        .set("group.id", "seq-baseline")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut done = 0u64;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while done < seq_n {
        if Instant::now() > deadline {
            bail!("sequential baseline: {done} of {seq_n} messages in 120 s");
        }
        if let Some(Ok(_m)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            args.handler_timer.wait(handler).await;
            done += 1;
        }
    }
    let sequential = seq_n as f64 / first.context("no message")?.elapsed().as_secs_f64();
    drop(consumer);

    let order: Arc<Mutex<HashMap<String, Vec<u64>>>> = Default::default();
    let count = Arc::new(AtomicU64::new(0));
    let times: Arc<Mutex<(Option<Instant>, Option<Instant>)>> = Default::default();
    // What the handler really takes (tokio's timer rounds a 5 ms sleep up to
    // its next millisecond tick): the achievable rate is concurrency / this.
    let timer = args.handler_timer;
    let slept_ns = Arc::new(AtomicU64::new(0));
    let (o, c, t, sl) = (
        order.clone(),
        count.clone(),
        times.clone(),
        slept_ns.clone(),
    );
    let processor = processor_fn(move |m: Message<String>| {
        let (o, c, t, sl) = (o.clone(), c.clone(), t.clone(), sl.clone());
        async move {
            if c.load(SeqCst) == 0 {
                t.lock().0.get_or_insert_with(Instant::now);
            }
            let slept = Instant::now();
            timer.wait(handler).await;
            sl.fetch_add(slept.elapsed().as_nanos() as u64, SeqCst);
            let seq: u64 = m
                .value()
                .split(' ')
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            o.lock()
                .entry(m.key_str()?.to_string())
                .or_default()
                .push(seq);
            if c.fetch_add(1, SeqCst) + 1 == n {
                t.lock().1 = Some(Instant::now());
            }
            Ok(())
        }
    });
    let mut cfg = weir_config(cluster, "weir-keyed", topic).ordering(Ordering::Key);
    cfg.max_in_flight = args.concurrency;
    cfg.max_in_flight_per_partition = args.concurrency;
    cfg.max_buffered_per_partition = cfg.max_buffered_per_partition.max(args.concurrency * 20);
    let consumer = Consumer::builder(cfg)
        .codec(weir::StringCodec)
        .build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_for("keyed", &count, n, Duration::from_secs(300), &handle).await?;
    let refetched = handle.stats().refetched_duplicates();
    let received = handle.stats().received();
    handle.shutdown();
    let _ = run.await?;
    let (a, b) = *times.lock();
    println!(
        "keyed: weir received {received} messages for {n} ({refetched} re-fetched duplicates dropped)"
    );
    let weir = n as f64 / (b.unwrap() - a.unwrap()).as_secs_f64();
    let ideal = args.concurrency as f64 / handler.as_secs_f64();
    let handler_mean_s = slept_ns.load(SeqCst) as f64 / 1e9 / n as f64;
    let ideal_measured = args.concurrency as f64 / handler_mean_s;
    let violations: usize = order
        .lock()
        .values()
        .map(|v| v.windows(2).filter(|w| w[0] > w[1]).count())
        .sum();
    println!(
        "keyed: weir {weir:.0} msg/s at concurrency {}, sequential {sequential:.0} msg/s, ideal {ideal:.0} msg/s; \
         ratio_vs_ideal {:.3}, speedup_vs_sequential {:.1}, order violations {violations}",
        args.concurrency,
        weir / ideal,
        weir / sequential
    );
    println!(
        "keyed: the handler's 5 ms wait ({:?} timer) took {:.2} ms on average: \
         ideal at that latency {ideal_measured:.0} msg/s, ratio {:.3}",
        args.handler_timer,
        handler_mean_s * 1e3,
        weir / ideal_measured
    );
    Ok(json!({
        "weir_msgs_per_s": weir.round(), "sequential_msgs_per_s": sequential.round(), "ideal_msgs_per_s": ideal.round(),
        "ratio_vs_ideal": weir / ideal, "speedup_vs_sequential": weir / sequential, "order_violations": violations,
        "concurrency": args.concurrency, "handler_ms": 5,
        "handler_timer": format!("{:?}", args.handler_timer).to_lowercase(),
        "handler_mean_ms": handler_mean_s * 1e3, "ideal_at_measured_latency_msgs_per_s": ideal_measured.round(),
        "ratio_vs_ideal_at_measured_latency": weir / ideal_measured,
    }))
}

/// Every message fails its first delivery (retryable) and goes through a 1 s
/// tier; lateness = second delivery's start minus its due time.
/// A raw idempotent `acks=all` producer with Weir's producer settings.
fn raw_producer(cluster: &KafkaCluster) -> anyhow::Result<rdkafka::producer::FutureProducer> {
    Ok(cluster
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?)
}

/// Sends `n` records of a 100-byte payload at once and waits for every ack.
/// `record(i)` gives the i-th record's key and, optionally, its partition.
async fn raw_burst(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    n: u64,
    record: impl Fn(u64) -> (String, Option<i32>),
) -> anyhow::Result<()> {
    let payload = "x".repeat(100);
    let sends = (0..n).map(|i| {
        let (producer, payload) = (producer.clone(), payload.clone());
        let (key, partition) = record(i);
        async move {
            let mut r = rdkafka::producer::FutureRecord::to(topic)
                .key(&key)
                .payload(&payload);
            if let Some(p) = partition {
                r = r.partition(p);
            }
            producer
                .send(r, Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        }
    });
    for r in futures::future::join_all(sends).await {
        r?;
    }
    Ok(())
}

/// The broker's own delivery latency for a burst like the retry tier's: a raw
/// consumer, already fetching the (empty) topic, reads `n` messages that an
/// idempotent `acks=all` producer (the retry producer's settings) sends at
/// once; latency = consume time minus the message's create time. Returns the
/// sorted latencies in ms.
async fn raw_delivery_latency(
    cluster: &KafkaCluster,
    topic: &str,
    n: u64,
    partitions: i32,
) -> anyhow::Result<Vec<i64>> {
    cluster.create_topic(topic, partitions).await?;
    let consumer: BaseConsumer = cluster
        .client_config()
        .set("group.id", format!("raw-latency-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<i64>> {
        let mut lat = Vec::with_capacity(n as usize);
        let deadline = Instant::now() + Duration::from_secs(120);
        while (lat.len() as u64) < n {
            if Instant::now() > deadline {
                bail!("raw delivery baseline: read {} of {n}", lat.len());
            }
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
                && let Some(ts) = m.timestamp().to_millis()
            {
                lat.push(now_ms() - ts);
            }
        }
        lat.sort_unstable();
        Ok(lat)
    });
    // Let the consumer's first fetches go out, as the retry topic's do.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let producer = raw_producer(cluster)?;
    raw_burst(&producer, topic, n, |i| {
        (
            format!("key-{}", i % 1000),
            Some((i % partitions as u64) as i32),
        )
    })
    .await?;
    reader.await?
}

use weir::clock::now_ms;

/// The `p`-quantile of sorted values (0 when empty).
fn quantile(sorted: &[i64], p: f64) -> i64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(0)
}

async fn retry(args: &Args, cluster: &KafkaCluster) -> anyhow::Result<serde_json::Value> {
    use weir::retry::{RetryTopics, headers};
    let n = args.messages.unwrap_or(2_000);
    let topic = "bench-retry";
    let partitions = 4;
    let rt = RetryTopics::tiers([Duration::from_secs(1)]).jitter(0.0);
    cluster.create_topic(topic, partitions).await?;
    for t in rt.retry_topics_of(topic) {
        cluster.create_topic(&t, partitions).await?;
    }
    cluster
        .create_topic(&rt.dlq_topic(topic), partitions)
        .await?;
    produce(cluster, topic, n, 1000, partitions).await?;
    let lateness: Arc<Mutex<Vec<i64>>> = Arc::default();
    let done: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let (l, d) = (lateness.clone(), done.clone());
    let processor = processor_fn(move |msg: Message<Option<bytes::Bytes>>| {
        let (l, d) = (l.clone(), d.clone());
        async move {
            if msg.attempt() == 1 {
                return Err(weir::ProcessError::retryable(std::io::Error::other(
                    "first try fails",
                )));
            }
            let now = now_ms();
            if let Some(due) = msg
                .headers()
                .get_str(headers::DUE_MS)
                .ok()
                .flatten()
                .and_then(|v| v.parse::<i64>().ok())
            {
                l.lock().push(now - due);
            }
            let payload = msg.value().as_deref().unwrap_or_default();
            let id = String::from_utf8_lossy(payload)
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_string();
            d.lock().insert(id);
            Ok(())
        }
    });
    let consumer = Consumer::builder(weir_config(cluster, "weir-retry", topic))
        .retry_topics(rt.clone())
        .build(processor)?;
    let handle = consumer.handle();
    let start = Instant::now();
    let run = tokio::spawn(consumer.run());
    let deadline = Instant::now() + Duration::from_secs(120 + n / 50);
    while (done.lock().len() as u64) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    handle.shutdown();
    let _report = run.await??;
    let processed = done.lock().len() as u64;
    let dlq = cluster.read_to_end(&rt.dlq_topic(topic)).await?.len();
    let mut lat = lateness.lock().clone();
    lat.sort_unstable();
    let (p50, p99, max) = (
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
    );
    let early = lat.iter().filter(|&&x| x < 0).count();
    let lost = n - processed;
    println!(
        "retry: {processed}/{n} processed after one 1 s tier in {elapsed:.1} s; lateness p50 {p50} ms, p99 {p99} ms, max {max} ms; {early} early; {lost} lost; {dlq} in DLQ"
    );
    // Baseline: how long the broker itself takes to deliver such a burst.
    let base = raw_delivery_latency(cluster, "bench-retry-baseline", n, partitions).await?;
    let (b50, b99) = (quantile(&base, 0.5), quantile(&base, 0.99));
    println!(
        "baseline: raw producer -> raw consumer, same burst of {n}: delivery latency p50 {b50} ms, p99 {b99} ms"
    );
    Ok(json!({
        "p50_lateness_ms": p50, "p99_lateness_ms": p99, "max_lateness_ms": max,
        "early": early, "lost": lost, "dlq": dlq, "tier_ms": 1000, "elapsed_s": elapsed,
        "raw_delivery_p50_ms": b50, "raw_delivery_p99_ms": b99,
    }))
}

/// Four writers commit rows (10 per transaction) to the PostgreSQL outbox
/// while the relay publishes them; latency = row insert to marked published
/// (after the broker's ack). Baseline: the same records sent by a raw
/// idempotent producer as fast as it acknowledges them.
async fn outbox(args: &Args, cluster: &KafkaCluster) -> anyhow::Result<serde_json::Value> {
    use weir_outbox::{OutboxRecord, PostgresOutbox, Relay, RelayConfig};
    let n = args.messages.unwrap_or(20_000) as usize;
    let topic = "bench-outbox";
    cluster.create_topic(topic, 4).await?;
    cluster.create_topic("bench-outbox-raw", 4).await?;
    let db = weir_testkit::PostgresDb::fresh().await?;
    let outbox = PostgresOutbox::new(db.pool().clone());
    outbox.migrate().await?;

    // Baseline: raw producer, same payloads, waiting for every ack.
    let raw = raw_producer(cluster)?;
    let t = Instant::now();
    raw_burst(&raw, "bench-outbox-raw", n as u64, |i| {
        (format!("k{}", i % 500), None)
    })
    .await?;
    let raw_rate = n as f64 / t.elapsed().as_secs_f64();
    let payload = "x".repeat(100);

    let relay = Arc::new(Relay::new(
        outbox,
        weir::Producer::new(cluster.bootstrap_servers())?,
        RelayConfig {
            batch_size: 1000,
            poll_interval: Duration::from_millis(200),
            ..Default::default()
        },
    ));
    let stats = relay.stats();
    let stop = tokio_util::sync::CancellationToken::new();
    let (r, s) = (relay.clone(), stop.clone());
    let relay_task = tokio::spawn(async move { r.run(s).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let writers = args.writers.max(1);
    // The writers' own pool, one connection each (the harness pool has 8).
    let writer_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(writers as u32)
        .connect(db.url())
        .await?;
    let single = args.single_enqueue;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let pool = writer_pool.clone();
        let payload = payload.clone();
        let waker = relay.waker();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                let mut tx = pool.begin().await?;
                let mut rows = Vec::with_capacity(10);
                for _ in 0..10 {
                    if i >= n {
                        break;
                    }
                    rows.push(
                        OutboxRecord::to(topic)
                            .key(format!("k{}", i % 500))
                            .payload(payload.clone()),
                    );
                    i += writers;
                }
                if single {
                    for rec in rows {
                        PostgresOutbox::enqueue(&mut tx, rec).await?;
                    }
                } else {
                    PostgresOutbox::enqueue_many(&mut tx, rows).await?;
                }
                tx.commit().await?;
                waker.notify_one();
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let committed_s = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    while (stats.published() as usize) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.cancel();
    relay_task.await??;
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lat), percentile_cont(0.99) WITHIN GROUP (ORDER BY lat) \
         FROM (SELECT extract(epoch FROM published_at - created_at) * 1000 AS lat FROM weir_outbox WHERE published_at IS NOT NULL) l",
    )
    .fetch_one(db.pool())
    .await?;
    // Drain capacity: a backlog of n rows committed while no relay runs.
    {
        let mut tx = db.pool().begin().await?;
        for i in 0..n {
            let rec = OutboxRecord::to("bench-outbox-raw")
                .key(format!("k{}", i % 500))
                .payload(payload.clone());
            PostgresOutbox::enqueue(&mut tx, rec).await?;
        }
        tx.commit().await?;
    }
    let drain_relay = Relay::new(
        PostgresOutbox::new(db.pool().clone()),
        weir::Producer::new(cluster.bootstrap_servers())?,
        RelayConfig {
            batch_size: 1000,
            ..Default::default()
        },
    );
    let t = Instant::now();
    let mut drained = 0;
    while drained < n {
        let k = drain_relay.relay_once().await?;
        anyhow::ensure!(k > 0, "drain stalled at {drained}/{n}");
        drained += k;
    }
    let drain_rate = n as f64 / t.elapsed().as_secs_f64();
    println!("outbox: a backlog of {n} rows drained at {drain_rate:.0} rows/s (batches of 1000)");

    let msgs = cluster.read_to_end(topic).await?;
    let ids: std::collections::HashSet<Vec<u8>> = msgs
        .iter()
        .filter_map(|m| m.header(weir::MESSAGE_ID_HEADER).map(<[u8]>::to_vec))
        .collect();
    let lost = n.saturating_sub(ids.len());
    let rate = n as f64 / elapsed;
    println!(
        "outbox: {n} rows by {writers} writers committed in {committed_s:.2} s, relayed at {rate:.0} rows/s (raw producer {raw_rate:.0} msg/s, ratio {:.2}); \
         insert-to-published p50 {p50:.1} ms, p99 {p99:.1} ms; {lost} lost",
        rate / raw_rate
    );
    Ok(json!({
        "rows_per_s": rate, "raw_producer_msgs_per_s": raw_rate, "ratio": rate / raw_rate,
        "p50_latency_ms": p50, "p99_latency_ms": p99, "lost": lost,
        "commit_s": committed_s, "writers": writers,
        "enqueue": if single { "single" } else { "many" }, "drain_rows_per_s": drain_rate,
    }))
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Consumes a backlog of `backlog` 1 KiB messages with a 10 ms handler for
/// `secs` seconds; returns (RSS before consuming, peak RSS while consuming, processed).
async fn memory_phase(
    cluster: &KafkaCluster,
    topic: &str,
    backlog: u64,
    secs: u64,
) -> anyhow::Result<(f64, f64, u64)> {
    cluster.create_topic(topic, 8).await?;
    let payload = "x".repeat(1024);
    let mut i = 0;
    while i < backlog {
        let end = (i + 5000).min(backlog);
        cluster
            .produce(
                topic,
                (i..end).map(|j| {
                    TestRecord::keyed(format!("k{}", j % 1000), payload.clone())
                        .partition((j % 8) as i32)
                }),
            )
            .await?;
        i = end;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_mb();
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let mut cfg = weir_config(cluster, &format!("{topic}-g"), topic);
    cfg.max_in_flight = 256;
    let consumer =
        Consumer::builder(cfg).build(processor_fn(move |_m: Message<Option<bytes::Bytes>>| {
            let d = d.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                d.fetch_add(1, SeqCst);
                Ok::<_, weir::ProcessError>(())
            }
        }))?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    let mut peak = before;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_mb());
    }
    handle.shutdown();
    let _ = run.await??;
    Ok((before, peak, done.load(SeqCst)))
}

/// Memory must be bounded by the caps (`max_buffered_per_partition`, in-flight),
/// not by the backlog: the same consumer over a backlog 4x larger must not use
/// 4x the memory. Weir's own memory is the peak minus the RSS before consuming
/// (with the mock cluster the broker's log lives in this process too).
async fn memory(args: &Args, cluster: &KafkaCluster) -> anyhow::Result<serde_json::Value> {
    let n = args.messages.unwrap_or(80_000);
    let secs = 8;
    let (b1, p1, d1) = memory_phase(cluster, "bench-memory-small", n / 4, secs).await?;
    let (b2, p2, d2) = memory_phase(cluster, "bench-memory-large", n, secs).await?;
    let (small, large) = (p1 - b1, p2 - b2);
    println!(
        "memory: backlog {} -> consumer grew {small:.1} MB ({d1} processed); backlog {n} -> grew {large:.1} MB ({d2} processed); \
         ratio {:.2} for 4x the backlog (peak RSS {p2:.1} MB)",
        n / 4,
        large / small.max(0.1)
    );
    Ok(json!({
        "peak_rss_mb": p2, "backlog": n, "consumer_growth_mb": large,
        "consumer_growth_mb_quarter_backlog": small, "growth_ratio_for_4x_backlog": large / small.max(0.1),
        "processed": d2, "handler_ms": 10, "seconds": secs,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let cluster = cluster(args.broker, args.tansu_storage).await?;
    let mut out = match args.scenario {
        Scenario::Overhead => overhead(&args, &cluster).await?,
        Scenario::Keyed => keyed(&args, &cluster).await?,
        Scenario::Retry => retry(&args, &cluster).await?,
        Scenario::Outbox => outbox(&args, &cluster).await?,
        Scenario::Memory => memory(&args, &cluster).await?,
    };
    let obj = out.as_object_mut().expect("object");
    obj.insert(
        "scenario".into(),
        json!(format!("{:?}", args.scenario).to_lowercase()),
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
