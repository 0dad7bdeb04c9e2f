//! Retry tiers and the DLQ against real brokers (mock cluster and tansu).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use weir::retry::{RetryTopics, headers};
use weir::{Consumer, JsonCodec, Message, ProcessError, StringCodec, processor_fn};
use weir_testkit::{BrokerKind, TestRecord};

use common::{R, wait_until};

use common::pre_create;

broker_tests!(
    transient_failures_walk_the_tiers_in_order,
    poison_and_exhausted_messages_land_in_the_dlq,
    shutdown_mid_wait_keeps_the_retry,
    key_order_mode_keeps_a_key_in_order,
    scheduled_messages_wait_for_their_time,
    sigkill_mid_wait_keeps_the_retry,
    retry_topics_from_a_config_file_and_the_environment,
);

#[derive(Debug, Clone)]
struct Seen {
    payload: String,
    attempt: u32,
    topic: String,
    lateness_ms: Option<i64>,
}

use weir::clock::now_ms;

fn percentile(v: &mut [i64], p: f64) -> i64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Message `m{i}` fails transiently `i % 4` times, then succeeds.
async fn transient_failures_walk_the_tiers_in_order(kind: BrokerKind) -> R {
    const N: usize = 40;
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("orders", 2).await?;
    cluster
        .produce(
            "orders",
            (0..N).map(|i| {
                TestRecord::keyed(format!("k{}", i % 7), format!("m{i}"))
                    .header("traceparent", "00-t-s-01")
            }),
        )
        .await?;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s = seen.clone();
    let processor = processor_fn(move |msg: Message<String>| {
        let s = s.clone();
        async move {
            let i: u32 = msg.value().trim_start_matches('m').parse().unwrap();
            let lateness_ms = msg
                .headers()
                .get_str(headers::DUE_MS)
                .ok()
                .flatten()
                .map(|d| now_ms() - d.parse::<i64>().unwrap());
            assert_eq!(
                msg.headers().get_str("traceparent").unwrap(),
                Some("00-t-s-01")
            );
            s.lock().push(Seen {
                payload: msg.value().clone(),
                attempt: msg.attempt(),
                topic: msg.topic().to_string(),
                lateness_ms,
            });
            if msg.attempt() <= i % 4 {
                return Err(
                    ProcessError::retryable(std::io::Error::other("flaky")).with_class("flaky")
                );
            }
            Ok(())
        }
    });
    let tiers = [300, 600, 900].map(Duration::from_millis);
    let rt = RetryTopics::tiers(tiers).jitter(0.0);
    pre_create(&cluster, kind, &rt, "orders", 2).await?;
    let cfg = common::config(&cluster, "tiers", &["orders"]);
    let consumer = Consumer::builder(cfg)
        .codec(StringCodec)
        .retry_topics(rt)
        .build(processor)?;
    let (handle, run) = common::start(consumer);
    let expected: usize = (0..N).map(|i| i % 4 + 1).sum();
    wait_until("every delivery", Duration::from_secs(60), || {
        seen.lock().len() >= expected
    })
    .await;
    // Commits on tier topics catch up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = common::stop(&handle, run).await?;
    assert!(report.drained && report.halted.is_empty(), "{report:?}");

    let seen = seen.lock().clone();
    assert_eq!(seen.len(), expected, "no extra deliveries");
    let mut by_msg: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for s in &seen {
        by_msg.entry(s.payload.clone()).or_default().push(s.clone());
    }
    let names = [
        "orders",
        "orders.retry.300ms",
        "orders.retry.600ms",
        "orders.retry.900ms",
    ];
    let mut lateness = Vec::new();
    for (payload, ds) in &by_msg {
        let i: usize = payload.trim_start_matches('m').parse()?;
        let k = i % 4;
        let attempts: Vec<u32> = ds.iter().map(|d| d.attempt).collect();
        assert_eq!(
            attempts,
            (1..=k as u32 + 1).collect::<Vec<_>>(),
            "{payload}: attempts in order"
        );
        for (j, d) in ds.iter().enumerate() {
            assert_eq!(
                d.topic,
                names[j],
                "{payload}: delivery {} from tier {j}",
                j + 1
            );
            if j > 0 {
                let l = d.lateness_ms.expect("tier copies carry a due time");
                assert!(l >= -2, "{payload}: processed {l} ms before its due time");
                lateness.push(l);
            }
        }
    }
    let p50 = percentile(&mut lateness, 0.5);
    let p99 = percentile(&mut lateness, 0.99);
    eprintln!(
        "{kind:?}: {} redeliveries, lateness p50 {p50} ms, p99 {p99} ms",
        lateness.len()
    );
    assert!(
        p99 < 2000,
        "redeliveries not much later than due: p99 {p99} ms"
    );
    assert!(
        cluster.read_to_end("orders.dlq").await?.is_empty(),
        "nothing in the DLQ"
    );
    // Every source and tier offset is committed.
    for t in names {
        let mut high = Vec::new();
        for p in 0..cluster.partition_count(t).await? {
            high.push(cluster.watermarks(t, p).await?.1);
        }
        let committed = common::committed(&cluster, "tiers", t).await;
        assert_eq!(
            committed.iter().map(|c| c.max(&0)).sum::<i64>(),
            high.iter().sum::<i64>(),
            "{t} fully committed"
        );
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Order {
    id: u32,
}

async fn poison_and_exhausted_messages_land_in_the_dlq(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("orders", 1).await?;
    let mut recs: Vec<TestRecord> = (0..30)
        .map(|i| TestRecord::keyed("k", format!(r#"{{"id":{i}}}"#)))
        .collect();
    recs[5] = TestRecord::keyed("k", "{not json").header(weir::MESSAGE_ID_HEADER, "poison-5");
    cluster.produce("orders", recs).await?;
    let ok: Arc<Mutex<Vec<u32>>> = Arc::default();
    let o = ok.clone();
    let processor = processor_fn(move |msg: Message<Order>| {
        let o = o.clone();
        async move {
            match msg.value().id {
                7 => Err(
                    ProcessError::terminal(std::io::Error::other("order 7 is invalid"))
                        .with_class("invalid_order"),
                ),
                9 => Err(ProcessError::retryable(std::io::Error::other("always 503"))
                    .with_class("http_503")),
                id => {
                    o.lock().push(id);
                    Ok(())
                }
            }
        }
    });
    let mut rt = RetryTopics::tiers([200, 400].map(Duration::from_millis));
    rt.dlq_depth_interval = Duration::from_millis(200);
    pre_create(&cluster, kind, &rt, "orders", 1).await?;
    let cfg = common::config(&cluster, "dlq-g", &["orders"]);
    let consumer = Consumer::builder(cfg)
        .codec(JsonCodec::<Order>::new())
        .retry_topics(rt)
        .build(processor)?;
    let (handle, run) = common::start(consumer);
    wait_until("27 good orders", Duration::from_secs(30), || {
        ok.lock().len() >= 27
    })
    .await;
    let mut dlq = Vec::new();
    let start = std::time::Instant::now();
    while dlq.len() < 3 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        dlq = cluster.read_to_end("orders.dlq").await?;
    }
    wait_until("DLQ depth measured", Duration::from_secs(10), || {
        handle.stats().dlq_depth() == 3
    })
    .await;
    assert_eq!(handle.stats().dlq_published(), 3);
    assert_eq!(
        handle.stats().retry_published(),
        2,
        "the always-503 order went through both tiers"
    );
    let report = common::stop(&handle, run).await?;
    assert!(
        report.halted.is_empty(),
        "the source partition kept flowing: {report:?}"
    );
    assert_eq!(
        dlq.len(),
        3,
        "poison, terminal and exhausted messages in the DLQ"
    );
    let h = |m: &weir_testkit::ReadMessage, n: &str| {
        m.header(n)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let by_offset: BTreeMap<String, &weir_testkit::ReadMessage> = dlq
        .iter()
        .map(|m| (h(m, headers::ORIGINAL_OFFSET), m))
        .collect();
    let poison = by_offset["5"];
    assert_eq!(h(poison, headers::DLQ_REASON), "terminal");
    assert_eq!(h(poison, headers::ERROR_CLASS), "decode");
    assert_eq!(h(poison, headers::ATTEMPT), "1");
    assert_eq!(
        h(poison, weir::MESSAGE_ID_HEADER),
        "poison-5",
        "message id kept"
    );
    assert_eq!(
        poison.payload.as_deref(),
        Some(&b"{not json"[..]),
        "payload kept byte for byte"
    );
    let terminal = by_offset["7"];
    assert_eq!(h(terminal, headers::DLQ_REASON), "terminal");
    assert_eq!(h(terminal, headers::ERROR_CLASS), "invalid_order");
    assert!(h(terminal, headers::ERROR_MESSAGE).contains("order 7 is invalid"));
    let exhausted = by_offset["9"];
    assert_eq!(h(exhausted, headers::DLQ_REASON), "retries_exhausted");
    assert_eq!(h(exhausted, headers::ATTEMPT), "3");
    assert_eq!(h(exhausted, headers::ERROR_CLASS), "http_503");
    assert_eq!(h(exhausted, headers::ORIGINAL_TOPIC), "orders");
    assert_eq!(h(exhausted, headers::FAILED_GROUP), "dlq-g");
    assert_eq!(
        h(exhausted, weir::MESSAGE_ID_HEADER),
        "orders/0@9",
        "coordinates identity kept across hops"
    );
    for m in &dlq {
        assert_eq!(m.key.as_deref(), Some(&b"k"[..]));
        assert!(!h(m, headers::FIRST_FAILURE_MS).is_empty());
    }
    assert_eq!(
        common::committed(&cluster, "dlq-g", "orders").await,
        vec![30]
    );
    Ok(())
}

/// A consumer stopped while a retry waits for its due time: the tier offset is
/// not committed, so the next run delivers it, once, not before it is due.
async fn shutdown_mid_wait_keeps_the_retry(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("orders", 1).await?;
    cluster
        .produce("orders", [TestRecord::keyed("k", "m0")])
        .await?;
    let seen: Arc<Mutex<Vec<(u32, i64)>>> = Arc::default();
    let make = |seen: Arc<Mutex<Vec<(u32, i64)>>>| {
        processor_fn(move |msg: Message<String>| {
            let seen = seen.clone();
            async move {
                let due = msg
                    .headers()
                    .get_str(headers::DUE_MS)
                    .ok()
                    .flatten()
                    .map(|d| d.parse::<i64>().unwrap());
                seen.lock()
                    .push((msg.attempt(), now_ms() - due.unwrap_or(now_ms())));
                if msg.attempt() == 1 {
                    return Err(ProcessError::retryable(std::io::Error::other("once")));
                }
                Ok(())
            }
        })
    };
    let retry = RetryTopics::tiers([Duration::from_secs(4)]).jitter(0.0);
    pre_create(&cluster, kind, &retry, "orders", 1).await?;
    let c1 = Consumer::builder(common::config(&cluster, "wait-g", &["orders"]))
        .codec(StringCodec)
        .retry_topics(retry.clone())
        .build(make(seen.clone()))?;
    let (h1, run1) = common::start(c1);
    wait_until("first attempt", Duration::from_secs(30), || {
        !seen.lock().is_empty()
    })
    .await;
    wait_until("the retry is held", Duration::from_secs(30), || {
        h1.stats().delayed() == 1
    })
    .await;
    h1.shutdown();
    let r1 = run1.await??;
    assert!(r1.drained);
    assert_eq!(seen.lock().len(), 1, "not delivered before its due time");
    let held = common::committed(&cluster, "wait-g", "orders.retry.4s").await;
    assert!(
        held[0] <= 0,
        "the held retry (offset 0) was not committed past: {held:?}"
    );

    let c2 = Consumer::builder(common::config(&cluster, "wait-g", &["orders"]))
        .codec(StringCodec)
        .retry_topics(retry)
        .build(make(seen.clone()))?;
    let (h2, run2) = common::start(c2);
    wait_until("the retry after restart", Duration::from_secs(30), || {
        seen.lock().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h2.shutdown();
    let r2 = run2.await??;
    assert!(r2.drained && r2.halted.is_empty(), "{r2:?}");
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 2, "delivered once after the restart: {seen:?}");
    assert_eq!(seen[1].0, 2);
    assert!(seen[1].1 >= -2, "not before its due time: {seen:?}");
    Ok(())
}

/// Key-order mode: `K#1` fails twice; `K#2` and `K#3` wait behind it, `J`
/// messages do not.
async fn key_order_mode_keeps_a_key_in_order(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("orders", 1).await?;
    let mut recs = vec![TestRecord::keyed("K", "K#1")];
    recs.extend((1..=5).map(|i| TestRecord::keyed("J", format!("J#{i}"))));
    recs.push(TestRecord::keyed("K", "K#2"));
    recs.push(TestRecord::keyed("K", "K#3"));
    cluster.produce("orders", recs).await?;
    let log: Arc<Mutex<Vec<(String, u32, bool)>>> = Arc::default();
    let l = log.clone();
    let processor = processor_fn(move |msg: Message<String>| {
        let l = l.clone();
        async move {
            let v = msg.value().clone();
            let fail = v == "K#1" && msg.attempt() <= 2;
            l.lock().push((v, msg.attempt(), !fail));
            if fail {
                return Err(ProcessError::retryable(std::io::Error::other("busy")));
            }
            Ok(())
        }
    });
    let rt = RetryTopics::tiers([400, 400].map(Duration::from_millis)).keep_key_order();
    assert!(
        rt.retry_topics_of("orders").is_empty(),
        "no tier topics in key-order mode"
    );
    pre_create(&cluster, kind, &rt, "orders", 1).await?;
    let consumer = Consumer::builder(common::config(&cluster, "keyorder", &["orders"]))
        .codec(StringCodec)
        .retry_topics(rt)
        .build(processor)?;
    let (handle, run) = common::start(consumer);
    let mut peak_waits = 0;
    let start = std::time::Instant::now();
    while log.lock().iter().filter(|e| e.2).count() < 8 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {:?}",
            log.lock()
        );
        peak_waits = peak_waits.max(handle.stats().in_place_retry_waits());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = common::stop(&handle, run).await?;
    assert!(report.drained && report.halted.is_empty());
    let log = log.lock().clone();
    let ok: Vec<&str> = log.iter().filter(|e| e.2).map(|e| e.0.as_str()).collect();
    let pos = |v: &str| ok.iter().position(|x| *x == v).unwrap();
    assert!(
        pos("K#1") < pos("K#2") && pos("K#2") < pos("K#3"),
        "K in order: {ok:?}"
    );
    for i in 1..=5 {
        assert!(
            pos(&format!("J#{i}")) < pos("K#1"),
            "J does not wait for K: {ok:?}"
        );
    }
    let k1: Vec<u32> = log.iter().filter(|e| e.0 == "K#1").map(|e| e.1).collect();
    assert_eq!(k1, vec![1, 2, 3]);
    assert_eq!(handle.stats().retries(), 2);
    assert!(peak_waits >= 1, "the wait was visible in the stats");
    assert_eq!(
        handle.stats().retry_published(),
        0,
        "nothing went through tier topics"
    );
    Ok(())
}

/// A message scheduled 2.3 s ahead hops through the tiers and is processed
/// once, not before its time; one scheduled in the past is processed at once.
async fn scheduled_messages_wait_for_their_time(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("reminders", 2).await?;
    let rt = RetryTopics::tiers([500, 1000].map(Duration::from_millis));
    pre_create(&cluster, kind, &rt, "reminders", 2).await?;
    let seen: Arc<Mutex<Vec<(String, u32, i64)>>> = Arc::default();
    let s = seen.clone();
    let processor = processor_fn(move |msg: Message<String>| {
        let s = s.clone();
        async move {
            s.lock()
                .push((msg.value().clone(), msg.attempt(), now_ms()));
            Ok::<_, ProcessError>(())
        }
    });
    let consumer = Consumer::builder(common::config(&cluster, "reminders-g", &["reminders"]))
        .codec(StringCodec)
        .retry_topics(rt.clone())
        .build(processor)?;
    let (handle, run) = common::start(consumer);
    wait_until("assigned", Duration::from_secs(30), || {
        handle.stats().assigned_partitions() >= 6
    })
    .await;
    let producer = weir::Producer::new(cluster.bootstrap_servers())?;
    let at = std::time::SystemTime::now() + Duration::from_millis(2300);
    let not_before = now_ms() + 2300;
    rt.schedule(
        &producer,
        weir::Record::to("reminders").key("u1").payload("later"),
        at,
    )
    .await?;
    rt.schedule(
        &producer,
        weir::Record::to("reminders").key("u2").payload("now"),
        std::time::SystemTime::now() - Duration::from_secs(5),
    )
    .await?;
    wait_until("both delivered", Duration::from_secs(30), || {
        seen.lock().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let report = common::stop(&handle, run).await?;
    assert!(report.halted.is_empty());
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 2, "each processed once: {seen:?}");
    let later = seen.iter().find(|s| s.0 == "later").unwrap();
    let now = seen.iter().find(|s| s.0 == "now").unwrap();
    assert_eq!(later.1, 1, "a scheduled message is a first delivery");
    assert!(
        later.2 >= not_before,
        "not before its time ({} ms early)",
        not_before - later.2
    );
    assert!(
        later.2 - not_before < 1500,
        "not much later: {} ms",
        later.2 - not_before
    );
    assert!(now.2 < later.2);
    eprintln!(
        "{kind:?}: scheduled message processed {} ms after its time",
        later.2 - not_before
    );
    Ok(())
}

const KILL_CHILD: &str = "WEIR_RETRY_CHILD_BOOTSTRAP";

/// The retry consumer process of `sigkill_mid_wait_keeps_the_retry`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the retry kill test; started by it"]
async fn retry_child() -> R {
    let Ok(bootstrap) = std::env::var(KILL_CHILD) else {
        return Ok(());
    };
    let processor = processor_fn(|msg: Message<String>| async move {
        if msg.attempt() == 1 {
            return Err(ProcessError::retryable(std::io::Error::other(
                "first try fails",
            )));
        }
        panic!("the child must be killed before any retry is due");
    });
    let mut cfg = weir::ConsumerConfig::new(bootstrap, "kill-g", &["orders"])
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    cfg.commit_interval = Duration::from_millis(100);
    let _report = Consumer::builder(cfg)
        .codec(StringCodec)
        .retry_topics(RetryTopics::tiers([Duration::from_secs(5)]).jitter(0.0))
        .build(processor)?
        .run_until_signal()
        .await?;
    Ok(())
}

/// The retry consumer is SIGKILLed while five retries wait for their due time:
/// after a restart each is delivered once, not before it is due.
async fn sigkill_mid_wait_keeps_the_retry(kind: BrokerKind) -> R {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("orders", 2).await?;
    let rt = RetryTopics::tiers([Duration::from_secs(5)]).jitter(0.0);
    pre_create(&cluster, kind, &rt, "orders", 2).await?;
    cluster
        .produce(
            "orders",
            (0..5).map(|i| TestRecord::keyed(format!("k{i}"), format!("m{i}"))),
        )
        .await?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "retry_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(KILL_CHILD, cluster.bootstrap_servers())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let start = std::time::Instant::now();
    loop {
        let n = cluster.read_to_end("orders.retry.5s").await?.len();
        if n >= 5 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the child never sent the retries ({n})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let its source commit land, then kill it while the retries wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
    child.wait()?;
    let copies = cluster.read_to_end("orders.retry.5s").await?;
    let due: Vec<i64> = copies
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m.header(headers::DUE_MS).unwrap())
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        due.iter().all(|&d| d > now_ms()),
        "killed before the retries were due"
    );

    let seen: Arc<Mutex<Vec<(String, u32, i64)>>> = Arc::default();
    let s = seen.clone();
    let processor = processor_fn(move |msg: Message<String>| {
        let s = s.clone();
        async move {
            let d: i64 = msg
                .headers()
                .get_str(headers::DUE_MS)
                .ok()
                .flatten()
                .map_or(0, |v| v.parse().unwrap());
            s.lock()
                .push((msg.value().clone(), msg.attempt(), now_ms() - d));
            if msg.attempt() == 1 {
                return Err(ProcessError::retryable(std::io::Error::other(
                    "first try fails",
                )));
            }
            Ok(())
        }
    });
    let consumer = Consumer::builder(common::config(&cluster, "kill-g", &["orders"]))
        .codec(StringCodec)
        .retry_topics(rt)
        .build(processor)?;
    let (handle, run) = common::start(consumer);
    wait_until(
        "the five retries after the restart",
        Duration::from_secs(60),
        || seen.lock().iter().filter(|e| e.1 == 2).count() >= 5,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = common::stop(&handle, run).await?;
    assert!(report.halted.is_empty());
    let seen = seen.lock().clone();
    let retries: Vec<_> = seen.iter().filter(|e| e.1 == 2).collect();
    assert_eq!(retries.len(), 5, "each retry delivered once: {seen:?}");
    assert!(
        retries.iter().all(|e| e.2 >= -2),
        "none before its due time: {seen:?}"
    );
    let names: std::collections::BTreeSet<_> = retries.iter().map(|e| e.0.clone()).collect();
    assert_eq!(names.len(), 5);
    // The source offsets were committed by the killed member (the hand-off
    // finished them), so the source messages are not processed again, except
    // any whose commit had not landed.
    let again = seen.iter().filter(|e| e.1 == 1).count();
    eprintln!(
        "{kind:?}: {again} source messages re-read after the kill; retries delivered {:?} ms after due",
        retries.iter().map(|e| e.2).collect::<Vec<_>>()
    );
    Ok(())
}

/// Retry tiers from the `[retry_topics]` section of a TOML file, adjusted by
/// `WEIR_RETRY_TOPICS_*` variables, with no `RetryTopics` in code: a
/// transient failure goes through the file's tier, a terminal one to the
/// DLQ named by the environment's pattern.
async fn retry_topics_from_a_config_file_and_the_environment(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("invoices", 1).await?;
    cluster
        .produce(
            "invoices",
            ["flaky", "fine", "poison"].map(|v| TestRecord::keyed(v, v)),
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("weir.toml");
    std::fs::write(
        &file,
        r#"
        [retry_topics]
        tiers = ["300ms"]
        jitter = 0.0
        dlq_depth_interval = "200ms"
        "#,
    )?;
    let base = common::config(&cluster, "file-g", &["invoices"]);
    let mut cfg = weir::ConsumerConfig::from_file(&file)?.with_env([(
        "WEIR_RETRY_TOPICS_DLQ_TOPIC_PATTERN".to_string(),
        "dead.{topic}".to_string(),
    )])?;
    let rt = cfg.retry_topics.clone().expect("the file's section");
    assert_eq!(rt.retry_topics_of("invoices"), ["invoices.retry.300ms"]);
    assert_eq!(rt.dlq_topic("invoices"), "dead.invoices");
    pre_create(&cluster, kind, &rt, "invoices", 1).await?;
    cfg = weir::ConsumerConfig {
        retry_topics: cfg.retry_topics,
        ..base
    };
    let seen: Arc<Mutex<Vec<(String, u32, String)>>> = Arc::default();
    let s = seen.clone();
    let processor = processor_fn(move |msg: Message<String>| {
        let s = s.clone();
        async move {
            let v = msg.value().clone();
            s.lock()
                .push((v.clone(), msg.attempt(), msg.topic().to_string()));
            match (v.as_str(), msg.attempt()) {
                ("flaky", 1) => Err(ProcessError::retryable(std::io::Error::other("503"))),
                ("poison", _) => Err(ProcessError::terminal(std::io::Error::other("bad"))),
                _ => Ok(()),
            }
        }
    });
    let consumer = Consumer::builder(cfg).codec(StringCodec).build(processor)?;
    let (handle, run) = common::start(consumer);
    wait_until(
        "the flaky invoice retried from its tier",
        Duration::from_secs(30),
        || seen.lock().iter().any(|(v, a, _)| v == "flaky" && *a == 2),
    )
    .await;
    let mut dlq = Vec::new();
    let start = std::time::Instant::now();
    while dlq.is_empty() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        dlq = cluster.read_to_end("dead.invoices").await?;
    }
    let report = common::stop(&handle, run).await?;
    assert!(report.halted.is_empty(), "{report:?}");
    let seen = seen.lock().clone();
    assert!(
        seen.contains(&("flaky".into(), 2, "invoices.retry.300ms".into())),
        "the second attempt came from the file's tier: {seen:?}"
    );
    assert_eq!(handle.stats().retry_published(), 1);
    assert_eq!(dlq.len(), 1, "the poison invoice, in the environment's DLQ");
    assert_eq!(dlq[0].payload.as_deref(), Some(&b"poison"[..]));
    assert_eq!(
        common::committed(&cluster, "file-g", "invoices").await,
        vec![3]
    );
    Ok(())
}
