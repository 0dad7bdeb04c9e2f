//! `transactions`: the same consume-transform-produce (one output record per
//! input, keyed like it) run plain (an idempotent producer, offsets
//! committed after processing: at least once) and in Kafka transactions
//! (`ConsumerBuilder::transactions`: exactly once for `read_committed`
//! readers), at several commit intervals, in one run on the same data.
//!
//! Each run is timed from its first handler call until `run()` returned
//! (drained, final commit or transaction committed), and the outputs a
//! `read_committed` reader finds are counted: every input's output once for
//! the transactional runs (the scenario fails otherwise), at least once for
//! the plain ones.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use weir::producer::{Producer, Record, TransactionalProducer};
use weir::{ProcessError, StringCodec};

use crate::*;

const TOPIC: &str = "bench-tx-in";
const PARTITIONS: i32 = 4;

/// One run's result.
struct RunResult {
    msgs_per_s: f64,
    /// Outputs a `read_committed` reader finds, and how many distinct inputs
    /// they stand for.
    outputs: usize,
    distinct: usize,
    commits: u64,
}

/// Where a run sends its outputs: plainly or in the member's transactions.
#[derive(Clone)]
enum Out {
    Plain(Producer),
    Tx(TransactionalProducer),
}

impl Out {
    async fn send(&self, r: Record) -> Result<(), ProcessError> {
        match self {
            Out::Plain(p) => p.send(r).await,
            Out::Tx(p) => p.send(r).await,
        }
        .map(|_| ())
        .map_err(ProcessError::retryable)
    }
}

async fn run_once(
    cluster: &KafkaCluster,
    n: u64,
    interval: Duration,
    transactional: bool,
) -> anyhow::Result<RunResult> {
    let ms = interval.as_millis();
    let kind = if transactional { "tx" } else { "plain" };
    let group = format!("bench-tx-{kind}-{ms}");
    let out_topic = format!("bench-tx-out-{kind}-{ms}");
    cluster.create_topic(&out_topic, PARTITIONS).await?;
    let mut cfg = weir_config(cluster, &group, TOPIC);
    cfg.commit_interval = interval;
    let out = if transactional {
        Out::Tx(TransactionalProducer::for_consumer(&cfg, &format!("{group}-0")).await?)
    } else {
        Out::Plain(Producer::for_consumer(&cfg)?)
    };
    let first: Arc<OnceLock<Instant>> = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let (o, f, d, t) = (out.clone(), first.clone(), done.clone(), out_topic.clone());
    let processor = processor_fn(move |m: Message<String>| {
        let (o, f, d, t) = (o.clone(), f.clone(), d.clone(), t.clone());
        async move {
            let _ = f.get_or_init(Instant::now);
            let mut r = Record::to(t).payload(m.value().clone());
            if let Some(k) = m.raw().key.clone() {
                r = r.key(k);
            }
            o.send(r).await?;
            d.fetch_add(1, SeqCst);
            Ok(())
        }
    });
    let builder = Consumer::builder(cfg).codec(StringCodec);
    let builder = match &out {
        Out::Tx(p) => builder.transactions(p.clone()),
        Out::Plain(_) => builder,
    };
    let consumer = builder.build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_for(&group, &done, n, Duration::from_secs(600), &handle).await?;
    handle.shutdown();
    let report = run.await??;
    let secs = first
        .get()
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(f64::NAN);
    if !report.drained {
        bail!("{group}: the consumer did not drain: {report:?}");
    }
    let read = cluster.read_to_end(&out_topic).await?;
    let distinct: std::collections::HashSet<Vec<u8>> =
        read.iter().filter_map(|m| m.payload.clone()).collect();
    Ok(RunResult {
        msgs_per_s: n as f64 / secs,
        outputs: read.len(),
        distinct: distinct.len(),
        commits: handle.stats().commits(),
    })
}

pub(crate) async fn transactions(
    args: &Args,
    cluster: &KafkaCluster,
) -> anyhow::Result<serde_json::Value> {
    let n = args.messages.unwrap_or(20_000);
    let intervals: Vec<Duration> = args
        .commit_intervals
        .split(',')
        .map(|s| s.trim().parse::<u64>().map(Duration::from_millis))
        .collect::<Result<_, _>>()
        .context("--commit-intervals: comma-separated milliseconds")?;
    cluster.create_topic(TOPIC, PARTITIONS).await?;
    produce(cluster, TOPIC, n, 500, PARTITIONS).await?;
    let mut rows = Vec::new();
    println!("transactions: {n} messages, {PARTITIONS} partitions, 500 keys, one output each");
    for interval in intervals {
        let plain = run_once(cluster, n, interval, false).await?;
        let tx = run_once(cluster, n, interval, true).await?;
        if tx.outputs != n as usize || tx.distinct != n as usize {
            bail!(
                "transactional run at {interval:?}: {} outputs for {} distinct inputs, expected {n} each once",
                tx.outputs,
                tx.distinct
            );
        }
        if plain.distinct != n as usize {
            bail!(
                "plain run at {interval:?}: outputs for {} of {n} inputs",
                plain.distinct
            );
        }
        let ratio = tx.msgs_per_s / plain.msgs_per_s;
        println!(
            "  commit every {:>5} ms: plain {:>9.0} msg/s, transactional {:>9.0} msg/s ({} transactions), ratio {ratio:.3}",
            interval.as_millis(),
            plain.msgs_per_s,
            tx.msgs_per_s,
            tx.commits
        );
        rows.push(json!({
            "commit_interval_ms": interval.as_millis() as u64,
            "plain_msgs_per_s": plain.msgs_per_s,
            "transactional_msgs_per_s": tx.msgs_per_s,
            "ratio": ratio,
            "transactions": tx.commits,
            "plain_outputs": plain.outputs,
            "transactional_outputs": tx.outputs,
        }));
    }
    Ok(json!({ "intervals": rows }))
}
