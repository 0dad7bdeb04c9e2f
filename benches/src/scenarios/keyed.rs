//! `keyed`: one partition, many keys, a fixed-latency handler: per-key concurrency against the ideal and against sequential processing.

use crate::*;

pub(crate) async fn keyed(
    args: &Args,
    cluster: &KafkaCluster,
) -> anyhow::Result<serde_json::Value> {
    let n = args.messages.unwrap_or(20_000);
    let keys = 5_000;
    let handler = Duration::from_millis(5);
    let topic = "bench-keyed";
    cluster.create_topic(topic, 1).await?;
    produce(cluster, topic, n, keys, 1).await?;

    // Partition-sequential baseline: one message at a time, same handler, first 200 messages.
    let seq_n = 200u64.min(n);
    let consumer: BaseConsumer = cluster
        .client_config()
        .set("group.id", "seq-baseline")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut done = 0u64;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while done < seq_n {
        if Instant::now() > deadline {
            bail!("sequential baseline: {done} of {seq_n} messages in 120 s");
        }
        if let Some(Ok(_m)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            args.handler_timer.wait(handler).await;
            done += 1;
        }
    }
    let sequential = seq_n as f64 / first.context("no message")?.elapsed().as_secs_f64();
    drop(consumer);

    let order: Arc<Mutex<HashMap<String, Vec<u64>>>> = Default::default();
    let count = Arc::new(AtomicU64::new(0));
    let times: Arc<Mutex<(Option<Instant>, Option<Instant>)>> = Default::default();
    // What the handler really takes (tokio's timer rounds a 5 ms sleep up to
    // its next millisecond tick): the achievable rate is concurrency / this.
    let timer = args.handler_timer;
    let slept_ns = Arc::new(AtomicU64::new(0));
    let (o, c, t, sl) = (
        order.clone(),
        count.clone(),
        times.clone(),
        slept_ns.clone(),
    );
    let processor = processor_fn(move |m: Message<String>| {
        let (o, c, t, sl) = (o.clone(), c.clone(), t.clone(), sl.clone());
        async move {
            if c.load(SeqCst) == 0 {
                t.lock().0.get_or_insert_with(Instant::now);
            }
            let slept = Instant::now();
            timer.wait(handler).await;
            sl.fetch_add(slept.elapsed().as_nanos() as u64, SeqCst);
            let seq: u64 = m
                .value()
                .split(' ')
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            o.lock()
                .entry(m.key_str()?.to_string())
                .or_default()
                .push(seq);
            if c.fetch_add(1, SeqCst) + 1 == n {
                t.lock().1 = Some(Instant::now());
            }
            Ok(())
        }
    });
    let mut cfg = weir_config(cluster, "weir-keyed", topic).ordering(Ordering::Key);
    cfg.max_in_flight = args.concurrency;
    cfg.max_in_flight_per_partition = args.concurrency;
    cfg.max_buffered_per_partition = cfg.max_buffered_per_partition.max(args.concurrency * 20);
    let consumer = Consumer::builder(cfg)
        .codec(weir::StringCodec)
        .build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_for("keyed", &count, n, Duration::from_secs(300), &handle).await?;
    let refetched = handle.stats().refetched_duplicates();
    let received = handle.stats().received();
    handle.shutdown();
    let _ = run.await?;
    let (a, b) = *times.lock();
    println!(
        "keyed: weir received {received} messages for {n} ({refetched} re-fetched duplicates dropped)"
    );
    let weir = n as f64 / (b.unwrap() - a.unwrap()).as_secs_f64();
    let ideal = args.concurrency as f64 / handler.as_secs_f64();
    let handler_mean_s = slept_ns.load(SeqCst) as f64 / 1e9 / n as f64;
    let ideal_measured = args.concurrency as f64 / handler_mean_s;
    let violations: usize = order
        .lock()
        .values()
        .map(|v| v.windows(2).filter(|w| w[0] > w[1]).count())
        .sum();
    println!(
        "keyed: weir {weir:.0} msg/s at concurrency {}, sequential {sequential:.0} msg/s, ideal {ideal:.0} msg/s; \
         ratio_vs_ideal {:.3}, speedup_vs_sequential {:.1}, order violations {violations}",
        args.concurrency,
        weir / ideal,
        weir / sequential
    );
    println!(
        "keyed: the handler's 5 ms wait ({:?} timer) took {:.2} ms on average: \
         ideal at that latency {ideal_measured:.0} msg/s, ratio {:.3}",
        args.handler_timer,
        handler_mean_s * 1e3,
        weir / ideal_measured
    );
    Ok(json!({
        "weir_msgs_per_s": weir.round(), "sequential_msgs_per_s": sequential.round(), "ideal_msgs_per_s": ideal.round(),
        "ratio_vs_ideal": weir / ideal, "speedup_vs_sequential": weir / sequential, "order_violations": violations,
        "concurrency": args.concurrency, "handler_ms": 5,
        "handler_timer": format!("{:?}", args.handler_timer).to_lowercase(),
        "handler_mean_ms": handler_mean_s * 1e3, "ideal_at_measured_latency_msgs_per_s": ideal_measured.round(),
        "ratio_vs_ideal_at_measured_latency": weir / ideal_measured,
    }))
}
