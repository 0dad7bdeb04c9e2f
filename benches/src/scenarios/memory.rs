//! `memory`: a backlog with a slow handler: resident memory stays bounded by the caps.

use crate::*;

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
pub(crate) async fn memory(
    args: &Args,
    cluster: &KafkaCluster,
) -> anyhow::Result<serde_json::Value> {
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
