//! Raw rdkafka producer baselines shared by the `retry` and `outbox` scenarios.

use crate::*;

/// Every message fails its first delivery (retryable) and goes through a 1 s
/// tier; lateness = second delivery's start minus its due time.
/// A raw idempotent `acks=all` producer with Weir's producer settings.
pub(crate) fn raw_producer(
    cluster: &KafkaCluster,
) -> anyhow::Result<rdkafka::producer::FutureProducer> {
    Ok(cluster
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?)
}

/// Sends `n` records of a 100-byte payload at once and waits for every ack.
/// `record(i)` gives the i-th record's key and, optionally, its partition.
pub(crate) async fn raw_burst(
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
pub(crate) async fn raw_delivery_latency(
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
