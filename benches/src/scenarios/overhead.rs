//! `overhead`: a no-op processor against a raw `BaseConsumer` loop, same topic, same run.

use crate::*;

/// Raw rdkafka loop: rate from the first message to the n-th.
fn raw_rate(cluster: &KafkaCluster, topic: &str, n: u64, round: usize) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = cluster
        .client_config()
        .set("group.id", format!("raw-{}-{round}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut seen = 0u64;
    let mut bytes = 0usize;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen < n {
        if Instant::now() > deadline {
            bail!("raw consumer read {seen}/{n}");
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, |p| p.len());
            seen += 1;
        }
    }
    let secs = first.context("no message")?.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok((n - 1) as f64 / secs)
}

pub(crate) async fn overhead(
    args: &Args,
    cluster: &KafkaCluster,
) -> anyhow::Result<serde_json::Value> {
    let n = args.messages.unwrap_or(40_000);
    let topic = "bench-overhead";
    cluster.create_topic(topic, 8).await?;
    produce(cluster, topic, n, 10_000, 8).await?;
    let (mut raws, mut weirs) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        let c2 = cluster.bootstrap_servers().to_string();
        let raw = {
            let cl = KafkaCluster::external_at(&c2);
            tokio::task::spawn_blocking(move || raw_rate(&cl, topic, n, round)).await??
        };
        let weir = weir_noop_rate(cluster, topic, n, round).await?;
        println!(
            "overhead round {}: raw rdkafka {raw:.0} msg/s, weir {weir:.0} msg/s, ratio {:.3}",
            round + 1,
            weir / raw
        );
        raws.push(raw);
        weirs.push(weir);
    }
    let ratios: Vec<f64> = raws.iter().zip(&weirs).map(|(r, w)| w / r).collect();
    let (raw, weir, ratio) = (median(&raws), median(&weirs), median(&ratios));
    println!(
        "overhead (median of {}): raw rdkafka {raw:.0} msg/s, weir {weir:.0} msg/s, ratio {ratio:.3}",
        ratios.len()
    );
    Ok(json!({
        "raw_msgs_per_s": raw.round(),
        "weir_msgs_per_s": weir.round(),
        "ratio": ratio,
        "rounds": ratios.len(),
        "round_ratios": ratios,
    }))
}

/// The median of `v` (0 when empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Weir with a no-op processor (real commits): rate from the first message to the n-th.
async fn weir_noop_rate(
    cluster: &KafkaCluster,
    topic: &str,
    n: u64,
    round: usize,
) -> anyhow::Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let first: Arc<Mutex<Option<Instant>>> = Default::default();
    let last: Arc<Mutex<Option<Instant>>> = Default::default();
    let (c, f, l) = (count.clone(), first.clone(), last.clone());
    let processor = processor_fn(move |_m: Message<Option<bytes::Bytes>>| {
        let (c, f, l) = (c.clone(), f.clone(), l.clone());
        async move {
            let k = c.fetch_add(1, SeqCst) + 1;
            if k == 1 {
                *f.lock() = Some(Instant::now());
            }
            if k == n {
                *l.lock() = Some(Instant::now());
            }
            Ok(())
        }
    });
    let group = format!("weir-overhead-{round}");
    let consumer = Consumer::builder(weir_config(cluster, &group, topic)).build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_for("overhead", &count, n, Duration::from_secs(300), &handle).await?;
    handle.shutdown();
    let _ = run.await?;
    let secs = (last.lock().unwrap() - first.lock().unwrap()).as_secs_f64();
    Ok((n - 1) as f64 / secs)
}
