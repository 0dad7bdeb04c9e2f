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

/// The book's pages (`docs/`), included so that `cargo test --doc` compiles
/// every Rust snippet in them: the documentation cannot drift from the code.
#[cfg(doctest)]
pub mod book {
    #[doc = include_str!("../../docs/introduction.md")]
    pub struct Introduction;
    #[doc = include_str!("../../docs/concepts.md")]
    pub struct Concepts;
    #[doc = include_str!("../../docs/guide-first-processor.md")]
    pub struct FirstProcessor;
    #[doc = include_str!("../../docs/codecs.md")]
    pub struct Codecs;
    #[doc = include_str!("../../docs/idempotency.md")]
    pub struct Idempotency;
    #[doc = include_str!("../../docs/retries.md")]
    pub struct Retries;
    #[doc = include_str!("../../docs/outbox.md")]
    pub struct Outbox;
    #[doc = include_str!("../../docs/telemetry.md")]
    pub struct Telemetry;
    #[doc = include_str!("../../docs/deploying.md")]
    pub struct Deploying;
    #[doc = include_str!("../../docs/scaling.md")]
    pub struct Scaling;
    #[doc = include_str!("../../docs/runbook-dlq.md")]
    pub struct RunbookDlq;
    #[doc = include_str!("../../docs/runbook-replay.md")]
    pub struct RunbookReplay;
    #[doc = include_str!("../../docs/reference-config.md")]
    pub struct ReferenceConfig;
    #[doc = include_str!("../../docs/reference-headers.md")]
    pub struct ReferenceHeaders;
    #[doc = include_str!("../../docs/reference-metrics.md")]
    pub struct ReferenceMetrics;
    #[doc = include_str!("../../docs/cli.md")]
    pub struct Cli;
    #[doc = include_str!("../../docs/brokers.md")]
    pub struct Brokers;
    #[doc = include_str!("../../docs/bad-input.md")]
    pub struct BadInput;
    #[doc = include_str!("../../docs/reliability.md")]
    pub struct Reliability;
}
