//! Metrics asserted, not just exposed, on the mock cluster and tansu: readiness
//! flips when partitions are assigned, the oldest-unprocessed age grows while a
//! handler is blocked, the DLQ counter counts a poison message, lag reaches zero
//! when caught up, and health stays green; a handler that blocks its thread
//! wedges the dispatch loop, and `/healthz` and `/readyz` report it until it
//! returns.

#[path = "../../weir/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use weir::retry::RetryTopics;
use weir::{Consumer, Message, ProcessError, StringCodec, processor_fn};
use weir_telemetry::{HealthOptions, Telemetry};
use weir_testkit::{BrokerKind, TestRecord};

use common::{R, wait_until_async};

broker_tests!(
    metrics_and_health_follow_the_consumer,
    a_wedged_dispatch_loop_fails_health,
    per_partition_gauges_drop_to_zero_when_the_partition_is_revoked
);

/// Sum of the samples of `name` whose labels contain `label`.
fn sample(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) || !rest.contains(label) {
            continue;
        }
        let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + v);
    }
    found
}

/// Serves the endpoints for `handle` on a free port; returns the base URL and
/// the server task (keep it).
async fn serve(
    telemetry: &Telemetry,
    handle: &weir::ConsumerHandle,
    opts: HealthOptions,
) -> Result<(String, tokio::task::JoinHandle<()>), Box<dyn std::error::Error + Send + Sync>> {
    let (addr, server) = telemetry
        .serve("127.0.0.1:0".parse()?, vec![handle.clone()], opts)
        .await?;
    Ok((format!("http://{addr}"), server))
}

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

async fn metrics_and_health_follow_the_consumer(kind: BrokerKind) -> R {
    let telemetry = Telemetry::install()?;
    let cluster = common::cluster(kind).await?;
    let group = format!("telemetry-{kind:?}").to_lowercase();
    cluster.create_topic("events", 2).await?;
    let rt = RetryTopics::dlq_only();
    if kind == BrokerKind::Mock {
        cluster.create_topic("events.dlq", 2).await?;
    }
    let release = Arc::new(Notify::new());
    let r = release.clone();
    let processor = processor_fn(move |m: Message<String>| {
        let r = r.clone();
        async move {
            match m.value().as_str() {
                "block" => r.notified().await,
                "poison" => {
                    return Err(ProcessError::terminal(std::io::Error::other("bad event"))
                        .with_class("bad_event"));
                }
                _ => {}
            }
            Ok(())
        }
    });
    let mut cfg =
        common::config(&cluster, &group, &["events"]).set("statistics.interval.ms", "300");
    cfg.handler_timeout = Duration::from_secs(60);
    let consumer = Consumer::builder(cfg)
        .codec(StringCodec)
        .retry_topics(rt)
        .build(processor)?;
    let handle = consumer.handle();
    let (base, _server) = serve(&telemetry, &handle, HealthOptions::default()).await?;
    let (code, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(code, 503, "not ready before start: {body}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);

    let run = tokio::spawn(consumer.run());
    wait_until_async("ready", Duration::from_secs(30), || async {
        get(&format!("{base}/readyz")).await.0 == 200
    })
    .await;

    let mut recs: Vec<TestRecord> = (0..40)
        .map(|i| TestRecord::keyed(format!("k{i}"), format!("e{i}")))
        .collect();
    recs.push(TestRecord::keyed("kb", "block").partition(0));
    recs.push(TestRecord::keyed("kp", "poison").partition(1));
    cluster.produce("events", recs).await?;
    let lbl = format!("group=\"{group}\"");

    // The DLQ counter counts the poison message.
    wait_until_async("DLQ counter", Duration::from_secs(30), || async {
        let text = get(&format!("{base}/metrics")).await.1;
        sample(&text, "weir_dlq_published_total", "topic=\"events.dlq\"").unwrap_or(0.0) >= 1.0
            && sample(&text, "weir_errors_total", "class=\"bad_event\"").unwrap_or(0.0) >= 1.0
    })
    .await;
    // The blocked handler makes the oldest-unprocessed age grow.
    wait_until_async("age above 1 s", Duration::from_secs(30), || async {
        let text = get(&format!("{base}/metrics")).await.1;
        sample(&text, "weir_oldest_unprocessed_age_seconds", &lbl).unwrap_or(0.0) > 1.0
    })
    .await;
    let a1 = sample(
        &get(&format!("{base}/metrics")).await.1,
        "weir_oldest_unprocessed_age_seconds",
        &lbl,
    )
    .unwrap();
    // It keeps growing while the handler stays blocked (the gauge refreshes
    // with each commit interval).
    let mut a2 = a1;
    let grow_start = std::time::Instant::now();
    while a2 <= a1 + 0.5 {
        assert!(
            grow_start.elapsed() < Duration::from_secs(15),
            "age grows while blocked: {a1} -> {a2}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        a2 = sample(
            &get(&format!("{base}/metrics")).await.1,
            "weir_oldest_unprocessed_age_seconds",
            &lbl,
        )
        .unwrap_or(0.0);
    }
    let lag_blocked = handle.stats().lag();

    release.notify_waiters();
    // Caught up: lag reaches zero and the age falls back.
    wait_until_async("lag zero and age zero", Duration::from_secs(30), || async {
        let text = get(&format!("{base}/metrics")).await.1;
        sample(&text, "weir_consumer_lag", &lbl) == Some(0.0)
            && sample(&text, "weir_oldest_unprocessed_age_seconds", &lbl) == Some(0.0)
    })
    .await;
    // Counters are published every second.
    wait_until_async("processed counter", Duration::from_secs(10), || async {
        let text = get(&format!("{base}/metrics")).await.1;
        sample(&text, "weir_messages_processed_total", &lbl).unwrap_or(0.0) >= 41.0
    })
    .await;
    let text = get(&format!("{base}/metrics")).await.1;
    assert!(
        sample(&text, "weir_processing_seconds_count", &lbl).unwrap_or(0.0) >= 42.0,
        "latency histogram"
    );
    assert!(
        text.contains("weir_processing_seconds{") && text.contains("quantile=\"0.99\""),
        "p99 readable"
    );
    assert!(
        sample(&text, "weir_commit_seconds_count", &lbl).unwrap_or(0.0) >= 1.0,
        "commit latency"
    );
    assert!(sample(&text, "weir_assigned_partitions", &lbl).unwrap_or(0.0) >= 2.0);
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    eprintln!("{kind:?}: lag while blocked {lag_blocked}; oldest age {a1:.1}s -> {a2:.1}s");
    handle.shutdown();
    let report = run.await??;
    assert!(report.halted.is_empty());
    Ok(())
}

/// A handler that blocks its thread (a synchronous call inside `async`) holds
/// the dispatch loop while Weir polls it inline: the loop's heartbeat stops,
/// `/healthz` and `/readyz` answer 503 naming the idle time, and both turn
/// green again once the handler returns.
async fn a_wedged_dispatch_loop_fails_health(kind: BrokerKind) -> R {
    let telemetry = Telemetry::install()?;
    let cluster = common::cluster(kind).await?;
    let group = format!("wedge-{kind:?}").to_lowercase();
    cluster.create_topic("jobs", 1).await?;
    let processor = processor_fn(|m: Message<String>| async move {
        if m.value() == "block" {
            // Deliberately wrong: blocks the thread that polls the handler.
            std::thread::sleep(Duration::from_secs(5));
        }
        Ok::<_, ProcessError>(())
    });
    let consumer = Consumer::builder(common::config(&cluster, &group, &["jobs"]))
        .codec(StringCodec)
        .build(processor)?;
    let handle = consumer.handle();
    let stale = HealthOptions {
        stale_after: Duration::from_secs(2),
        ..HealthOptions::default()
    };
    let (base, _server) = serve(&telemetry, &handle, stale).await?;
    let run = tokio::spawn(consumer.run());
    wait_until_async("ready", Duration::from_secs(30), || async {
        get(&format!("{base}/readyz")).await.0 == 200
    })
    .await;
    // Idle but not wedged: the loop's timers keep the heartbeat fresh.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get(&format!("{base}/healthz")).await.0,
        200,
        "idle is healthy"
    );

    cluster
        .produce(
            "jobs",
            [
                TestRecord::keyed("a", "ok"),
                TestRecord::keyed("b", "block"),
            ],
        )
        .await?;
    let start = std::time::Instant::now();
    let wedged = loop {
        let answer = get(&format!("{base}/healthz")).await;
        if answer.0 == 503 {
            break answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "healthz never reported the blocked loop: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(wedged.1.contains("dispatch loop idle for"), "{}", wedged.1);
    let (code, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(code, 503, "readyz too: {body}");
    assert!(body.contains("dispatch loop idle"), "{body}");

    // The handler returns: healthy again, and both messages were processed.
    wait_until_async(
        "healthz 200 after the handler returns",
        Duration::from_secs(20),
        || async { get(&format!("{base}/healthz")).await.0 == 200 },
    )
    .await;
    wait_until_async("2 processed", Duration::from_secs(10), || async {
        handle.stats().processed() >= 2
    })
    .await;
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    handle.shutdown();
    let report = run.await??;
    assert!(report.halted.is_empty());
    Ok(())
}

/// Issue 21.21: the per-partition gauges (`weir_oldest_unprocessed_age_seconds`,
/// `weir_consumer_lag`) kept their last value after a revoke, so alerts fired
/// for partitions this member no longer owned. Now a released partition's
/// gauges are set to 0. The second member is a plain librdkafka consumer, so
/// that only Weir writes these series in this process.
async fn per_partition_gauges_drop_to_zero_when_the_partition_is_revoked(kind: BrokerKind) -> R {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let telemetry = Telemetry::install()?;
    let cluster = common::cluster(kind).await?;
    let group = format!("gauges-{kind:?}").to_lowercase();
    cluster.create_topic("gauged", 2).await?;
    let release = Arc::new(Notify::new());
    let r = release.clone();
    let processor = processor_fn(move |_m: Message<String>| {
        let r = r.clone();
        async move {
            r.notified().await;
            Ok::<_, ProcessError>(())
        }
    });
    let mut cfg =
        common::config(&cluster, &group, &["gauged"]).set("statistics.interval.ms", "300");
    cfg.assignment = weir::Assignment::Range;
    cfg.revoke_deadline = Duration::from_secs(1);
    cfg.handler_timeout = Duration::from_secs(120);
    let consumer = Consumer::builder(cfg).codec(StringCodec).build(processor)?;
    let handle = consumer.handle();
    let (base, _server) = serve(&telemetry, &handle, HealthOptions::default()).await?;
    let run = tokio::spawn(consumer.run());
    cluster
        .produce(
            "gauged",
            (0..20).map(|i| TestRecord::keyed(format!("k{i}"), format!("e{i}")).partition(i % 2)),
        )
        .await?;
    let series = |text: &str, name: &str, p: i32| -> f64 {
        let want = [
            format!("group=\"{group}\""),
            format!("partition=\"{p}\""),
            "topic=\"gauged\"".to_string(),
        ];
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| want.iter().all(|w| l.contains(w.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    wait_until_async(
        "age and lag above 0 on both partitions",
        Duration::from_secs(30),
        || async {
            let text = get(&format!("{base}/metrics")).await.1;
            (0..2).all(|p| {
                series(&text, "weir_oldest_unprocessed_age_seconds", p) > 0.5
                    && series(&text, "weir_consumer_lag", p) > 0.0
            })
        },
    )
    .await;
    // B joins: the eager rebalance takes one partition from the Weir member.
    let stop = Arc::new(AtomicBool::new(false));
    let mut cc = cluster.client_config();
    cc.set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "range")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    let b: Arc<BaseConsumer> = Arc::new(cc.create()?);
    b.subscribe(&["gauged"])?;
    let poller = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                let _ = b.poll(Duration::from_millis(50));
            }
        })
    };
    let mut lost = None;
    let start = std::time::Instant::now();
    // The revoke waits for the blocked handlers (up to `revoke_deadline`):
    // meanwhile `/readyz` says this member is rebalancing.
    let mut rebalancing_seen = None;
    while lost.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "B never got a partition"
        );
        let (code, body) = get(&format!("{base}/readyz")).await;
        if code == 503 && body.contains("rebalancing") {
            rebalancing_seen.get_or_insert(body);
        }
        if let Ok(a) = b.assignment()
            && a.count() == 1
            && handle.stats().assigned_partitions() == 1
        {
            lost = Some(a.elements()[0].partition());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lost = lost.unwrap();
    let kept = 1 - lost;
    // Past a few gauge refreshes (commit interval, statistics interval).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = get(&format!("{base}/metrics")).await.1;
    let (age_lost, lag_lost) = (
        series(&text, "weir_oldest_unprocessed_age_seconds", lost),
        series(&text, "weir_consumer_lag", lost),
    );
    let age_kept = series(&text, "weir_oldest_unprocessed_age_seconds", kept);
    // The rebalance, counted: an eager revoke of both partitions that waited
    // out the 1-s revoke deadline, then one partition assigned back.
    let g = format!("group=\"{group}\"");
    let revoke_events =
        sample(&text, "weir_rebalance_events_total", "event=\"revoke\"").unwrap_or(0.0);
    let revoked = sample(&text, "weir_partitions_revoked_total", &g).unwrap_or(0.0);
    let assigned = sample(&text, "weir_partitions_assigned_total", &g).unwrap_or(0.0);
    let revoke_time = sample(
        &text,
        "weir_rebalance_callback_seconds_sum",
        "event=\"revoke\"",
    )
    .unwrap_or(0.0);
    let epoch = sample(&text, "weir_member_epoch", &g).unwrap_or(0.0);
    let ready_after = get(&format!("{base}/readyz")).await;
    release.notify_waiters();
    stop.store(true, SeqCst);
    let _ = poller.join();
    handle.shutdown();
    // Handlers still blocked are cancelled at the shutdown deadline.
    let _ = run.await?;
    assert_eq!(
        (age_lost, lag_lost),
        (0.0, 0.0),
        "the revoked partition {lost} reports nothing"
    );
    assert!(
        age_kept > 0.0,
        "the kept partition {kept} still reports its blocked message's age"
    );
    let body = rebalancing_seen.expect("/readyz said 503 rebalancing while the revoke drained");
    assert!(body.contains("draining revoked partitions"), "{body}");
    assert_eq!(
        ready_after.0, 200,
        "ready again once assigned: {}",
        ready_after.1
    );
    assert!(revoke_events >= 1.0, "revoke counted: {text}");
    assert!(revoked >= 2.0, "eager: both partitions revoked ({revoked})");
    assert!(assigned >= 3.0, "2 assigned, then 1 back ({assigned})");
    assert!(
        revoke_time >= 0.9,
        "the revoke's time includes waiting for the blocked handlers: {revoke_time}"
    );
    assert!(epoch >= 1.0, "member generation exported: {epoch}");
    Ok(())
}
