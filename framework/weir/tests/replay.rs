//! `Replay`: bounded re-processing by offset and by time, on the mock cluster
//! and tansu, leaving the production group's offsets alone.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use weir::replay::{Position, Replay};
use weir::{Consumer, ConsumerConfig, Message, ProcessError, StringCodec, processor_fn};
use weir_testkit::{BrokerKind, TestRecord};

use common::{R, wait_until};

broker_tests!(replays_a_range_and_leaves_production_alone);

async fn replays_a_range_and_leaves_production_alone(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("ledger", 2).await?;
    let rec = |i: i32| TestRecord::keyed(format!("k{i}"), format!("m{i}")).partition(i % 2);
    cluster.produce("ledger", (0..20).map(rec)).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cut = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.produce("ledger", (20..40).map(rec)).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cut2 = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.produce("ledger", (40..60).map(rec)).await?;

    // Production consumes everything and commits.
    let prod = Consumer::builder(common::config(&cluster, "prod", &["ledger"]))
        .codec(StringCodec)
        .build(processor_fn(|_m: Message<String>| async {
            Ok::<_, ProcessError>(())
        }))?;
    let (h, run) = common::start(prod);
    wait_until("production caught up", Duration::from_secs(30), || {
        h.stats().processed() >= 60
    })
    .await;
    h.shutdown();
    let _ = run.await??;
    assert_eq!(
        common::committed(&cluster, "prod", "ledger").await,
        vec![30, 30]
    );

    let replay_cfg = |group: &str| {
        let mut c = ConsumerConfig::new(cluster.bootstrap_servers(), group, &[]);
        c.retry.max_attempts = 1;
        c
    };
    // By offset: [5, end) of each partition.
    let seen: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let s = seen.clone();
    let last_progress: Arc<Mutex<(u64, u64)>> = Arc::default();
    let lp = last_progress.clone();
    let report = Replay::range(
        replay_cfg("replay-a"),
        "ledger",
        Position::Offset(5),
        Position::End,
    )
    .on_progress(move |d, t| *lp.lock() = (d, t))
    .run(
        StringCodec,
        processor_fn(move |m: Message<String>| {
            let s = s.clone();
            async move {
                s.lock().push((m.partition(), m.offset()));
                Ok::<_, ProcessError>(())
            }
        }),
    )
    .await?;
    assert_eq!(report.processed, 50);
    assert_eq!(
        *last_progress.lock(),
        (50, 50),
        "progress reaches the total"
    );
    let got: BTreeSet<(i32, i64)> = seen.lock().iter().copied().collect();
    let want: BTreeSet<(i32, i64)> = (0..2).flat_map(|p| (5..30).map(move |o| (p, o))).collect();
    assert_eq!(got, want, "exactly the range, once each");
    for p in 0..2 {
        let offs: Vec<i64> = seen
            .lock()
            .iter()
            .filter(|x| x.0 == p)
            .map(|x| x.1)
            .collect();
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "partition {p} in order"
        );
    }
    assert_eq!(
        common::committed(&cluster, "prod", "ledger").await,
        vec![30, 30],
        "production untouched"
    );
    if report.committed {
        assert_eq!(
            common::committed(&cluster, "replay-a", "ledger").await,
            vec![30, 30]
        );
    }

    // By time: only the second batch.
    let seen2: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen2.clone();
    let report = Replay::range(
        replay_cfg("replay-b"),
        "ledger",
        Position::Time(cut),
        Position::End,
    )
    .run(
        StringCodec,
        processor_fn(move |m: Message<String>| {
            let s2 = s2.clone();
            async move {
                s2.lock().push(m.value().clone());
                Ok::<_, ProcessError>(())
            }
        }),
    )
    .await?;
    if kind == BrokerKind::Mock {
        // The mock cluster answers ListOffsets-by-timestamp with "no offset"
        // (docs/brokers.md), which a replay reads as "from the end": nothing to do.
        assert_eq!(report.processed, 0, "{report:?}");
    } else {
        assert_eq!(report.processed, 40, "{report:?}");
        let names: BTreeSet<String> = seen2.lock().iter().cloned().collect();
        assert_eq!(names, (20..60).map(|i| format!("m{i}")).collect());
    }

    // From one time to another: exactly the middle batch, each partition in order.
    let seen3: Arc<Mutex<Vec<(i32, i64, String)>>> = Arc::default();
    let s3 = seen3.clone();
    let report = Replay::range(
        replay_cfg("replay-t2t"),
        "ledger",
        Position::Time(cut),
        Position::Time(cut2),
    )
    .run(
        StringCodec,
        processor_fn(move |m: Message<String>| {
            let s3 = s3.clone();
            async move {
                s3.lock()
                    .push((m.partition(), m.offset(), m.value().clone()));
                Ok::<_, ProcessError>(())
            }
        }),
    )
    .await?;
    if kind != BrokerKind::Mock {
        assert_eq!(report.processed, 20, "{report:?}");
        let got = seen3.lock().clone();
        let names: BTreeSet<String> = got.iter().map(|x| x.2.clone()).collect();
        assert_eq!(names, (20..40).map(|i| format!("m{i}")).collect());
        for p in 0..2 {
            let offs: Vec<i64> = got.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
            assert_eq!(
                offs,
                (10..20).collect::<Vec<i64>>(),
                "partition {p} in order"
            );
        }
        assert_eq!(
            common::committed(&cluster, "prod", "ledger").await,
            vec![30, 30],
            "production untouched"
        );
    }

    // A poison message halts its partition; the other completes.
    let report = Replay::range(
        replay_cfg("replay-c"),
        "ledger",
        Position::Earliest,
        Position::Offset(10),
    )
    .run(
        StringCodec,
        processor_fn(|m: Message<String>| async move {
            if m.value() == "m6" {
                return Err(ProcessError::terminal(std::io::Error::other("bad")));
            }
            Ok(())
        }),
    )
    .await?;
    assert_eq!(
        report.halted,
        vec![(0, 3)],
        "m6 is partition 0, offset 3: {report:?}"
    );
    assert_eq!(report.processed, 10 + 4, "{report:?}");
    Ok(())
}

/// Issue 21.12: a range whose last offset is a transaction marker (the log
/// end after a committed transaction) has no message at `end - 1`. Replay
/// used to wait for that offset forever; now it finishes on the partition's
/// position and commits the range end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_range_ending_on_a_transaction_marker_finishes() -> R {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    common::init();
    let cluster = weir_testkit::KafkaCluster::kafka(1).await?;
    cluster.create_topic("txn-ledger", 1).await?;
    let producer: ThreadedProducer<DefaultProducerContext> = cluster
        .client_config()
        .set("transactional.id", "replay-marker")
        .create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    producer.begin_transaction()?;
    for i in 0..5 {
        let key = format!("k{i}");
        producer
            .send(BaseRecord::to("txn-ledger").key(&key).payload("m"))
            .map_err(|(e, _)| e)?;
    }
    producer.commit_transaction(Duration::from_secs(30))?;
    // The commit returns once the coordinator has logged it; the marker is
    // written to the partition after that, and the read_committed end (the
    // last stable offset, which `watermarks` and Replay's `End` read) moves
    // only then: a CI run read (0, 0) right after the commit.
    common::wait_until_async("the commit marker", Duration::from_secs(30), || async {
        cluster
            .watermarks("txn-ledger", 0)
            .await
            .is_ok_and(|(_, high)| high >= 6)
    })
    .await;
    let (low, high) = cluster.watermarks("txn-ledger", 0).await?;
    assert_eq!((low, high), (0, 6), "5 records and the commit marker");
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s = seen.clone();
    let mut cfg = ConsumerConfig::new(cluster.bootstrap_servers(), "replay-marker-g", &[]);
    cfg.retry.max_attempts = 1;
    let replay = Replay::range(cfg, "txn-ledger", Position::Earliest, Position::End).run(
        StringCodec,
        processor_fn(move |_m: Message<String>| {
            let s = s.clone();
            async move {
                s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, ProcessError>(())
            }
        }),
    );
    let report = tokio::time::timeout(Duration::from_secs(30), replay)
        .await
        .map_err(|_| "the replay did not finish: it waited for the marker's offset")??;
    assert_eq!(report.ranges[&0], (0, 6));
    assert_eq!(report.processed, 5);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 5);
    assert!(report.committed);
    assert_eq!(
        common::committed(&cluster, "replay-marker-g", "txn-ledger").await,
        vec![6]
    );
    Ok(())
}
