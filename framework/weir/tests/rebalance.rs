//! Rebalances under load: three members join and leave during a 20,000-message
//! run. Nothing is lost, and an idempotent sink applies each effect once.
//!
//! Runs on the mock cluster and Apache Kafka. (tansu 0.6.0 keeps a departed
//! leader while its group re-forms and then never assigns partitions again,
//! docs/brokers.md, so it is not run there.)

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use weir::{Consumer, ConsumerHandle, Message, RunReport, WeirError, processor_fn};
use weir_testkit::{KafkaCluster, TestRecord};

use common::{R, committed, config, wait_until};

const N: u64 = 20_000;

#[derive(Default)]
struct Sink {
    deliveries: HashMap<u64, u32>,
    effects: u64,
}

type Member = (
    ConsumerHandle,
    tokio::task::JoinHandle<Result<RunReport, WeirError>>,
);

fn start(cluster: &KafkaCluster, sink: &Arc<Mutex<Sink>>) -> Result<Member, WeirError> {
    let s = sink.clone();
    let processor = processor_fn(move |msg: Message<String>| {
        let s = s.clone();
        async move {
            if rand::random_range(0..10) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let id: u64 = msg.value().parse().expect("id");
            let mut s = s.lock();
            let n = s.deliveries.entry(id).or_default();
            *n += 1;
            if *n == 1 {
                s.effects += 1; // idempotent: the effect applies on first delivery only
            }
            Ok(())
        }
    });
    let mut cfg = config(cluster, "rebalance-g", &["rebalance"]);
    cfg.max_in_flight = 256;
    let consumer = Consumer::builder(cfg)
        .codec(weir::StringCodec)
        .build(processor)?;
    let h = consumer.handle();
    Ok((h, tokio::spawn(consumer.run())))
}

async fn stop(m: Member) -> R {
    m.0.shutdown();
    let report = m.1.await??;
    assert!(report.drained, "a leaving member drains");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_three_members_join_and_leave_under_load() -> R {
    common::init();
    three_members_join_and_leave_under_load(KafkaCluster::mock(1)?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_three_members_join_and_leave_under_load() -> R {
    common::init();
    three_members_join_and_leave_under_load(KafkaCluster::kafka(1).await?).await
}

async fn three_members_join_and_leave_under_load(cluster: KafkaCluster) -> R {
    cluster.create_topic("rebalance", 6).await?;
    cluster
        .produce(
            "rebalance",
            (0..N).map(|i| TestRecord::keyed(format!("k{}", i % 500), i.to_string())),
        )
        .await?;
    let sink: Arc<Mutex<Sink>> = Default::default();
    let effects = || sink.lock().effects;

    let a = start(&cluster, &sink)?;
    wait_until("2000", Duration::from_secs(60), || effects() >= 2_000).await;
    let b = start(&cluster, &sink)?;
    wait_until("5000", Duration::from_secs(60), || effects() >= 5_000).await;
    let c = start(&cluster, &sink)?;
    wait_until("8000", Duration::from_secs(60), || effects() >= 8_000).await;
    stop(a).await?;
    wait_until("11000", Duration::from_secs(60), || effects() >= 11_000).await;
    let a2 = start(&cluster, &sink)?;
    wait_until("14000", Duration::from_secs(60), || effects() >= 14_000).await;
    stop(b).await?;
    wait_until("all", Duration::from_secs(120), || effects() >= N).await;
    let total: Vec<i64> = {
        let mut t = Vec::new();
        for p in 0..6 {
            t.push(cluster.watermarks("rebalance", p).await?.1);
        }
        t
    };
    let start = std::time::Instant::now();
    loop {
        let got = committed(&cluster, "rebalance-g", "rebalance").await;
        if got == total {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "committed {got:?}, log ends {total:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(c).await?;
    stop(a2).await?;

    let s = sink.lock();
    assert_eq!(s.deliveries.len() as u64, N, "nothing lost");
    assert_eq!(s.effects, N, "each effect applied once");
    let redelivered: u32 = s.deliveries.values().map(|n| n - 1).sum();
    eprintln!("rebalance: {N} messages, {redelivered} redeliveries across 5 membership changes");
    Ok(())
}
