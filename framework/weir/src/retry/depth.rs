//! The DLQ depth gauge, refreshed in the background.

use std::sync::Arc;
use std::time::Duration;

/// Refreshes the DLQ depth (high minus low watermark, all partitions) every
/// `every` until `stop`: `ConsumerStats::dlq_depth` and the
/// `weir_dlq_depth{topic}` gauge (alert on its growth).
pub(crate) fn spawn_dlq_depth(
    config: &crate::ConsumerConfig,
    dlq_topics: Vec<String>,
    stats: Arc<crate::stats::ConsumerStats>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let mut cc = config.client_config();
    cc.remove("group.id");
    let client: BaseConsumer = cc.create().ok()?;
    let client = Arc::new(client);
    Some(tokio::spawn(async move {
        loop {
            let c = client.clone();
            let topics = dlq_topics.clone();
            let depths = tokio::task::spawn_blocking(move || {
                topics
                    .into_iter()
                    .map(|t| {
                        let parts = crate::kafka::topic_partitions(&c, &t, Duration::from_secs(5))
                            .ok()
                            .flatten()
                            .unwrap_or_default();
                        let depth: i64 = parts
                            .into_iter()
                            .filter_map(|p| c.fetch_watermarks(&t, p, Duration::from_secs(5)).ok())
                            .map(|(lo, hi)| (hi - lo).max(0))
                            .sum();
                        (t, depth)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let mut total = 0;
            for (t, d) in depths {
                metrics::gauge!("weir_dlq_depth", "topic" => t).set(d as f64);
                total += d as u64;
            }
            crate::stats::ConsumerStats::set(&stats.dlq_depth, total);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }))
}
