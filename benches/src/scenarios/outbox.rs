//! `outbox`: PostgreSQL outbox -> relay -> Kafka against a raw producer.

use crate::*;

use super::baseline::*;

/// Four writers commit rows (10 per transaction) to the PostgreSQL outbox
/// while the relay publishes them; latency = row insert to marked published
/// (after the broker's ack). Baseline: the same records sent by a raw
/// idempotent producer as fast as it acknowledges them.
pub(crate) async fn outbox(
    args: &Args,
    cluster: &KafkaCluster,
) -> anyhow::Result<serde_json::Value> {
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
