//! Helpers shared by weir-ffi's integration tests: a cluster with records
//! on partition 0 of one topic, and a consumer assigned to that partition
//! with the partition's own queue split off.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use weir_ffi::{Fetched, PartitionReader};
use weir_testkit::{BrokerKind, KafkaCluster, RawRecord, produce_raw};

/// A test's result.
pub type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Starts a cluster of `kind` with `topic` (one partition) holding
/// `records`, written as raw record batches (header names need not be
/// UTF-8).
pub async fn cluster_with(
    kind: BrokerKind,
    topic: &str,
    records: &[RawRecord],
) -> Result<KafkaCluster, Box<dyn std::error::Error + Send + Sync>> {
    let cluster = KafkaCluster::start(kind).await?;
    cluster.create_topic(topic, 1).await?;
    let addr = cluster
        .bootstrap_servers()
        .split(',')
        .next()
        .expect("an address")
        .to_string();
    produce_raw(&addr, topic, 0, records).await?;
    Ok(cluster)
}

/// A consumer of partition 0 of `topic` from the beginning, its partition
/// queue split off (read it with the queue or a `PartitionReader`).
pub fn consumer(
    bootstrap: &str,
    topic: &str,
    eof: bool,
) -> (Arc<BaseConsumer>, PartitionQueue<DefaultConsumerContext>) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("fetch-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", if eof { "true" } else { "false" })
        .create()
        .expect("consumer");
    let c = Arc::new(c);
    let q = c.split_partition_queue(topic, 0).expect("split");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    (c, q)
}

/// Reads `n` messages of partition 0 of `topic` with a `PartitionReader`,
/// serving the consumer queue meanwhile; `f` gets each message and returns
/// what is kept of it. Fails after 30 s.
pub fn read_each<T: std::fmt::Debug>(
    c: &Arc<BaseConsumer>,
    topic: &str,
    n: usize,
    mut f: impl FnMut(Fetched<'_>) -> T,
) -> Vec<T> {
    let mut reader = PartitionReader::new(c, topic, 0).expect("reader");
    let mut out = Vec::new();
    let t0 = Instant::now();
    while out.len() < n {
        // The consumer queue still needs serving (group and fetch events).
        let _ = c.poll(Duration::from_millis(10));
        reader.consume(64, |m| out.push(f(m.expect("a message"))));
        assert!(t0.elapsed() < Duration::from_secs(30), "read {out:?}");
    }
    out
}
