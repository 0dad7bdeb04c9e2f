//! `retry`: every message fails once and goes through a 1 s tier: how late the redelivery is.

use super::baseline::*;
use crate::*;

pub(crate) async fn retry(
    args: &Args,
    cluster: &KafkaCluster,
) -> anyhow::Result<serde_json::Value> {
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
