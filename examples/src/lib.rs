//! Helpers shared by Weir's examples: an embedded broker when none is configured.

use std::time::Duration;

use weir::ConsumerHandle;
use weir_testkit::{KafkaCluster, TestRecord};

/// The brokers to use: `KAFKA_BOOTSTRAP_SERVERS`, or an in-process mock cluster
/// (returned so that it lives as long as the example) with a few demo orders.
pub async fn brokers_with_demo_orders(
    topic: &str,
) -> anyhow::Result<(String, Option<KafkaCluster>)> {
    if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        return Ok((b, None));
    }
    let cluster = KafkaCluster::mock(1)?;
    cluster.create_topic(topic, 3).await?;
    let orders = (1..=10).map(|i| {
        let amount = if i == 7 { -5 } else { i * 100 };
        TestRecord::keyed(
            format!("customer-{}", i % 3),
            format!(r#"{{"id":{i},"amount_cents":{amount}}}"#),
        )
    });
    cluster.produce(topic, orders).await?;
    Ok((cluster.bootstrap_servers().to_string(), Some(cluster)))
}

/// Shuts the consumer down once it has been idle for two seconds after processing something.
pub async fn stop_when_idle(handle: ConsumerHandle) {
    let mut last = (0, 0);
    let mut idle = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = handle.stats();
        let now = (s.processed(), s.failed());
        if now != (0, 0) && now == last {
            idle += 1;
            if idle >= 8 {
                handle.shutdown();
                return;
            }
        } else {
            idle = 0;
        }
        last = now;
    }
}
