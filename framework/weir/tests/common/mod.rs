//! Shared helpers for Weir's integration tests (mock cluster and Apache Kafka).
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use std::sync::Arc;

use parking_lot::Mutex;
use weir::codec::Codec;
use weir::{
    Consumer, ConsumerConfig, ConsumerHandle, Message, ProcessError, Processor, RunReport,
    WeirError,
};
use weir_testkit::{BrokerKind, KafkaCluster, TansuStorage};

pub type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Generates `mock::<name>` and `kafka::<name>` tests calling `name(BrokerKind)`.
#[macro_export]
macro_rules! broker_tests {
    ($($name:ident),* $(,)?) => {
        mod mock {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> $crate::common::R {
                    $crate::common::init();
                    super::$name(weir_testkit::BrokerKind::Mock).await
                }
            )*
        }
        mod kafka {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> $crate::common::R {
                    $crate::common::init();
                    super::$name(weir_testkit::BrokerKind::Kafka).await
                }
            )*
        }
    };
}

pub fn init() {
    weir_testkit::init_test_logging();
}

pub async fn cluster(kind: BrokerKind) -> Result<KafkaCluster, weir_testkit::TestkitError> {
    match kind {
        BrokerKind::Tansu => KafkaCluster::tansu(TansuStorage::Sqlite).await,
        other => KafkaCluster::start(other).await,
    }
}

/// The first broker's `host:port`, for raw protocol requests
/// (`weir_testkit::produce_raw`).
pub fn first_broker(cluster: &KafkaCluster) -> String {
    cluster
        .bootstrap_servers()
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A consumer config with test-friendly timings.
pub fn config(cluster: &KafkaCluster, group: &str, topics: &[&str]) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(cluster.bootstrap_servers(), group, topics)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("max.poll.interval.ms", "10000")
        // Not a divisor of the mock cluster's 5 s rejoin delay: with 1000 ms
        // the periodic metadata refresh could land, every cycle, between a
        // leader's JoinGroup answer and its assignor's own metadata answer,
        // which makes librdkafka 2.12.1 rejoin instead of assigning; the group
        // then never got partitions (docs/brokers.md).
        .set("topic.metadata.refresh.interval.ms", "1300");
    c.commit_interval = Duration::from_millis(100);
    c.revoke_deadline = Duration::from_secs(5);
    c.shutdown_deadline = Duration::from_secs(5);
    c.retry.initial_backoff = Duration::from_millis(20);
    c.retry.max_backoff = Duration::from_millis(100);
    c
}

/// Waits until `cond` holds, polling every 20 ms; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`wait_until`] with an async condition.
pub async fn wait_until_async<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Committed offsets of `group` on `topic`, with `None` (nothing committed) as -1.
pub async fn committed(cluster: &KafkaCluster, group: &str, topic: &str) -> Vec<i64> {
    cluster
        .committed_offsets(group, topic)
        .await
        .expect("committed offsets")
        .values()
        .map(|o| o.unwrap_or(-1))
        .collect()
}

pub type RunHandle = tokio::task::JoinHandle<Result<RunReport, WeirError>>;

/// A processor that records every value it is given, and the shared list.
pub fn recording<T: Clone + Send + Sync + 'static>() -> (Arc<Mutex<Vec<T>>>, impl Processor<T>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let p = weir::processor_fn(move |m: Message<T>| {
        let s = s.clone();
        async move {
            s.lock().push(m.value().clone());
            Ok::<_, ProcessError>(())
        }
    });
    (seen, p)
}

/// Starts `consumer` on a task of its own: its handle and its run.
pub fn start<C, P>(consumer: Consumer<C, P>) -> (ConsumerHandle, RunHandle)
where
    C: Codec + Send + Sync + 'static,
    P: Processor<C::Value>,
{
    let h = consumer.handle();
    (h, tokio::spawn(consumer.run()))
}

/// librdkafka's mock cluster does not implement CreateTopics: create the tier
/// and DLQ topics of `source` up front there (Kafka exercises Weir's own creation).
pub async fn pre_create(
    cluster: &KafkaCluster,
    kind: BrokerKind,
    rt: &weir::retry::RetryTopics,
    source: &str,
    n: i32,
) -> R {
    if kind == BrokerKind::Mock {
        for t in rt.retry_topics_of(source) {
            cluster.create_topic(&t, n).await?;
        }
        cluster.create_topic(&rt.dlq_topic(source), n).await?;
    }
    Ok(())
}

/// Asks the consumer of `handle` to stop and waits for `run` to end: its
/// report, or why it failed.
pub async fn stop(
    handle: &ConsumerHandle,
    run: RunHandle,
) -> Result<RunReport, Box<dyn std::error::Error + Send + Sync>> {
    handle.shutdown();
    Ok(run.await??)
}
