//! The safety valves and the commit holder against real brokers (mock
//! cluster and Apache Kafka): a burst of poison halts a partition at its DLQ
//! limit, an outage of a shared dependency pauses the consumer at its retry
//! budget instead of filling the tiers, and a blocked key is reported as what
//! holds the commit.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use parking_lot::Mutex;
use weir::inspect::HolderState;
use weir::retry::RetryTopics;
use weir::valves::{DlqLimit, RetryBudget};
use weir::{Consumer, Message, ProcessError, StringCodec, processor_fn};
use weir_testkit::{BrokerKind, TestRecord};

use common::{R, pre_create, wait_until};

broker_tests!(
    a_burst_of_poison_halts_the_partition_at_its_dlq_limit,
    an_outage_pauses_at_the_retry_budget_instead_of_filling_the_tiers,
    a_blocked_key_is_reported_as_the_holder_of_the_commit,
);

/// A bad deploy: every message fails as terminal. Without a limit all 300
/// would be dead-lettered; with 20 in a row the partition halts after at most
/// 20 plus what was already running, the commit stops at the first message
/// not started, and a fixed consumer of the same group processes the rest.
async fn a_burst_of_poison_halts_the_partition_at_its_dlq_limit(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("deploys", 1).await?;
    let n = 300;
    cluster
        .produce(
            "deploys",
            (0..n).map(|i| TestRecord::keyed(format!("k{i}"), format!("v{i}"))),
        )
        .await?;
    let rt = RetryTopics::tiers([Duration::from_millis(200)]);
    pre_create(&cluster, kind, &rt, "deploys", 1).await?;
    let mut cfg = common::config(&cluster, "deploys-g", &["deploys"]);
    cfg.max_in_flight_per_partition = 8;
    cfg.max_buffered_per_partition = 64;
    cfg.dlq_limit = DlqLimit {
        max_share: Some(0.5),
        window: 50,
        max_consecutive: Some(20),
    };
    let bad = processor_fn(|_m: Message<String>| async {
        Err::<(), _>(
            ProcessError::terminal(std::io::Error::other("field `amount` is gone"))
                .with_class("schema"),
        )
    });
    let consumer = Consumer::builder(cfg.clone())
        .codec(StringCodec)
        .retry_topics(rt.clone())
        .build(bad)?;
    let (handle, run) = common::start(consumer);
    wait_until("the DLQ limit trips", Duration::from_secs(60), || {
        handle.stats().dlq_limit_trips() == 1
    })
    .await;
    // What was running when it tripped finishes; nothing new starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dead = handle.stats().dlq_published();
    eprintln!("dlq limit: {dead} of {n} dead-lettered before the halt");
    assert!(
        (20..=20 + 8).contains(&dead),
        "halted after 20 in a row plus at most the 8 in flight: {dead} dead-lettered"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(handle.stats().dlq_published(), dead, "nothing more started");
    let report = common::stop(&handle, run).await?;
    assert_eq!(report.exit_code(), 4);
    assert_eq!(report.halted.len(), 1);
    assert_eq!(report.halted[0].class, "dlq_limit");
    assert!(
        report.halted[0].error.contains("in a row"),
        "{:?}",
        report.halted[0]
    );
    assert_eq!(
        common::committed(&cluster, "deploys-g", "deploys").await,
        vec![dead as i64],
        "committed up to the first message not started"
    );
    assert_eq!(
        cluster.read_to_end("deploys.dlq").await?.len() as u64,
        dead,
        "every dead letter is in the DLQ"
    );
    // The fixed deploy: the same group processes everything after the halt.
    let (seen, fixed) = common::recording::<String>();
    let consumer = Consumer::builder(cfg)
        .codec(StringCodec)
        .retry_topics(rt)
        .build(fixed)?;
    let (handle, run) = common::start(consumer);
    wait_until("the rest processed", Duration::from_secs(60), || {
        seen.lock().len() as u64 >= n - dead
    })
    .await;
    let report = common::stop(&handle, run).await?;
    assert!(report.halted.is_empty());
    let seen: BTreeSet<String> = seen.lock().iter().cloned().collect();
    let want: BTreeSet<String> = (dead..n).map(|i| format!("v{i}")).collect();
    assert_eq!(seen, want, "nothing lost, nothing dead-lettered twice");
    Ok(())
}

/// A shared downstream is down: every message fails as retryable. With a
/// budget of 30% (at least 20 retries in 2 s), the consumer stops sending
/// copies to the tier after a few dozen, holds the rest in place, and
/// processes everything once the downstream is back: nothing lost, and the
/// tier holds a fraction of the topic.
async fn an_outage_pauses_at_the_retry_budget_instead_of_filling_the_tiers(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("calls", 2).await?;
    let n = 400u64;
    cluster
        .produce(
            "calls",
            (0..n).map(|i| TestRecord::keyed(format!("k{i}"), format!("v{i}"))),
        )
        .await?;
    // A long tier: its copies come back after the downstream recovered.
    let rt = RetryTopics::tiers([Duration::from_secs(8)]).jitter(0.0);
    pre_create(&cluster, kind, &rt, "calls", 2).await?;
    let mut cfg = common::config(&cluster, "calls-g", &["calls"]);
    cfg.max_in_flight = 16;
    cfg.max_in_flight_per_partition = 8;
    cfg.retry_budget = RetryBudget {
        max_share: Some(0.3),
        window: Duration::from_secs(2),
        min_retries: 20,
    };
    let down = Arc::new(AtomicBool::new(true));
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (d, s) = (down.clone(), seen.clone());
    let processor = processor_fn(move |m: Message<String>| {
        let (d, s) = (d.clone(), s.clone());
        async move {
            if d.load(SeqCst) {
                // Timeouts of 50-400 ms against the dead dependency: runs
                // that started before the budget was spent fail after it,
                // and wait in place.
                let ms = 50 + (m.offset() as u64 * 37) % 350;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                return Err(
                    ProcessError::retryable(std::io::Error::other("503")).with_class("http_503")
                );
            }
            s.lock().insert(m.value().clone());
            Ok(())
        }
    });
    let consumer = Consumer::builder(cfg)
        .codec(StringCodec)
        .retry_topics(rt)
        .build(processor)?;
    let (handle, run) = common::start(consumer);
    wait_until("the budget is spent", Duration::from_secs(60), || {
        handle.stats().retry_budget_spent() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let published = handle.stats().retry_published();
    eprintln!(
        "retry budget: {published} of {n} copied to the tier in the outage, {} in-place waits",
        handle.stats().retry_budget_waits()
    );
    assert!(
        published < 150,
        "the tier got a fraction of the {n} messages, not all of them: {published}"
    );
    assert!(
        handle.stats().retry_budget_waits() > 0,
        "runs that failed after the budget was spent waited in place"
    );
    let snapshot = handle.inspect().expect("a snapshot");
    let held: usize = snapshot.partitions.iter().map(|p| p.unfinished).sum();
    assert!(held > 0, "messages are held, not retried: {snapshot:?}");
    down.store(false, SeqCst);
    wait_until("everything processed", Duration::from_secs(60), || {
        seen.lock().len() as u64 == n
    })
    .await;
    wait_until("the budget recovered", Duration::from_secs(30), || {
        handle.stats().retry_budget_spent() == 0
    })
    .await;
    let report = common::stop(&handle, run).await?;
    assert!(report.halted.is_empty(), "{report:?}");
    assert_eq!(handle.stats().dlq_published(), 0, "nothing dead-lettered");
    let tier = cluster.read_to_end("calls.retry.8s").await?;
    assert_eq!(tier.len() as u64, handle.stats().retry_published());
    let want: BTreeSet<String> = (0..n).map(|i| format!("v{i}")).collect();
    assert_eq!(*seen.lock(), want, "nothing lost");
    Ok(())
}

/// One key blocks for 30 s while other keys flow: the snapshot names that
/// message as the holder of the commit, with its key and a growing wait, and
/// the finished messages behind it pile up uncommitted.
async fn a_blocked_key_is_reported_as_the_holder_of_the_commit(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("work", 1).await?;
    cluster
        .produce("work", [TestRecord::keyed("stuck", "blocks")])
        .await?;
    let (seen, _) = common::recording::<String>();
    let s = seen.clone();
    let processor = processor_fn(move |m: Message<String>| {
        let s = s.clone();
        async move {
            if m.key() == Some(b"stuck") {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    _ = m.cancellation().cancelled() => {}
                }
            } else {
                s.lock().push(m.value().clone());
            }
            Ok::<_, ProcessError>(())
        }
    });
    let cfg = common::config(&cluster, "work-g", &["work"]);
    let consumer = Consumer::builder(cfg).codec(StringCodec).build(processor)?;
    let (handle, run) = common::start(consumer);
    let holder_of = |h: &weir::ConsumerHandle| {
        h.inspect()
            .and_then(|s| s.partition("work", 0).cloned())
            .and_then(|p| p.holder.clone().map(|holder| (p, holder)))
    };
    wait_until(
        "the blocked message holds the commit",
        Duration::from_secs(60),
        || holder_of(&handle).is_some_and(|(_, h)| h.key.as_deref() == Some("stuck")),
    )
    .await;
    let mut finished_before = 0;
    let mut waited_before = 0;
    for round in 1..=3u64 {
        cluster
            .produce(
                "work",
                (0..50)
                    .map(|i| TestRecord::keyed(format!("k{round}-{i}"), format!("v{round}-{i}"))),
            )
            .await?;
        wait_until("the other keys flow", Duration::from_secs(30), || {
            seen.lock().len() as u64 == 50 * round
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (p, h) = holder_of(&handle).expect("still held");
        assert_eq!((h.offset, h.key.as_deref()), (0, Some("stuck")));
        assert_eq!(h.state, HolderState::Running);
        assert_eq!(h.attempt, 1);
        assert!(
            h.waiting_ms > waited_before + 1000,
            "the wait grows: {} after {waited_before}",
            h.waiting_ms
        );
        assert!(h.age_ms.is_some(), "Kafka timestamps the message");
        assert_eq!(
            p.finished_above as u64,
            50 * round,
            "finished behind the holder, uncommitted"
        );
        assert!(p.finished_above > finished_before);
        assert_eq!(p.committable, Some(0));
        finished_before = p.finished_above;
        waited_before = h.waiting_ms;
    }
    assert_eq!(
        common::committed(&cluster, "work-g", "work").await,
        vec![0],
        "the commit waits for the holder"
    );
    let _ = common::stop(&handle, run).await?;
    Ok(())
}

/// A retry budget has nothing to limit without tiers that publish: refused
/// at build time, naming what to do.
#[test]
fn a_retry_budget_without_retry_tiers_is_refused() {
    let mut cfg = weir::ConsumerConfig::new("localhost:9092", "g", &["t"]);
    cfg.retry_budget.max_share = Some(0.3);
    let p = || processor_fn(|_m: Message<String>| async { Ok::<_, ProcessError>(()) });
    let err = Consumer::builder(cfg.clone())
        .codec(StringCodec)
        .build(p())
        .unwrap_err();
    assert!(err.to_string().contains("retry_budget"), "{err}");
    let err = Consumer::builder(cfg.clone())
        .codec(StringCodec)
        .retry_topics(RetryTopics::tiers([Duration::from_secs(1)]).keep_key_order())
        .build(p())
        .unwrap_err();
    assert!(err.to_string().contains("keep_key_order"), "{err}");
    Consumer::builder(cfg)
        .codec(StringCodec)
        .retry_topics(RetryTopics::tiers([Duration::from_secs(1)]))
        .build(p())
        .expect("with tiers that publish");
}
