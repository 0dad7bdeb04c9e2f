//! Smoke tests of the harness itself against each local backend: the mock
//! cluster, Apache Kafka and (ignored unless tansu is installed:
//! `WEIR_WITH_TANSU=1 scripts/setup`, then `cargo test -- --ignored`) a tansu
//! process. They use plain rdkafka, not Weir. Kafka's node control is in
//! `tests/kafka.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use weir_testkit::{BrokerKind, KafkaCluster, TansuStorage, TestRecord};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn keys_and_headers_round_trip(cluster: KafkaCluster) -> R {
    cluster.create_topic("smoke-rt", 3).await?;
    let records: Vec<TestRecord> = (0..30)
        .map(|i| {
            TestRecord::keyed(format!("k{}", i % 7), format!("v{i}"))
                .header("trace", format!("t{i}"))
                .header("n", "x")
        })
        .collect();
    let acks = cluster.produce("smoke-rt", records).await?;
    assert_eq!(acks.len(), 30);
    let got = cluster.read_to_end("smoke-rt").await?;
    assert_eq!(got.len(), 30, "every message read back");
    let mut key_partition: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    for m in &got {
        let v = String::from_utf8(m.payload.clone().unwrap())?;
        let i: usize = v[1..].parse()?;
        assert_eq!(m.key.as_deref(), Some(format!("k{}", i % 7).as_bytes()));
        assert_eq!(m.header("trace"), Some(format!("t{i}").as_bytes()));
        assert_eq!(m.headers.len(), 2, "header order and count kept");
        assert_eq!(m.headers[1].0, "n");
        // Same key, same partition.
        let p = *key_partition
            .entry(m.key.clone().unwrap())
            .or_insert(m.partition);
        assert_eq!(p, m.partition);
    }
    Ok(())
}

fn member(cluster: &KafkaCluster, group: &str) -> BaseConsumer {
    let mut c: ClientConfig = cluster.client_config();
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("max.poll.interval.ms", "10000");
    c.create().expect("consumer")
}

async fn group_splits_commits_and_resumes(cluster: KafkaCluster) -> R {
    let topic = "smoke-group";
    cluster.create_topic(topic, 4).await?;
    let records: Vec<TestRecord> = (0..40)
        .map(|i| TestRecord::unkeyed(format!("m{i}")).partition(i % 4))
        .collect();
    cluster.produce(topic, records).await?;
    let group = format!("smoke-{}", std::process::id());
    let a = member(&cluster, &group);
    let b = member(&cluster, &group);
    a.subscribe(&[topic])?;
    b.subscribe(&[topic])?;
    // Consume and commit every message, one at a time, until all 40 are read and
    // both members hold partitions (the first member may start alone). A commit
    // can fail while the group rebalances; the message is then read again by the
    // partition's next owner, so distinct payloads are counted.
    let (seen, pa, pb) = tokio::task::spawn_blocking(move || {
        let members = [a, b];
        let mut seen = BTreeSet::new();
        let start = Instant::now();
        let mut settled_since: Option<Instant> = None;
        loop {
            for m in &members {
                if let Some(Ok(msg)) = m.poll(Duration::from_millis(20)) {
                    let owned: BTreeSet<i32> = m
                        .assignment()
                        .unwrap()
                        .elements()
                        .iter()
                        .map(|e| e.partition())
                        .collect();
                    assert!(
                        owned.contains(&msg.partition()),
                        "message from a partition this member does not own"
                    );
                    seen.insert(String::from_utf8_lossy(msg.payload().unwrap()).to_string());
                    if let Err(e) = m.commit_message(&msg, CommitMode::Sync) {
                        eprintln!(
                            "commit during rebalance failed (message will be redelivered): {e}"
                        );
                    }
                    settled_since = None;
                }
            }
            let na = members[0].assignment().unwrap().count();
            let nb = members[1].assignment().unwrap().count();
            if seen.len() >= 40 && na > 0 && nb > 0 && na + nb == 4 {
                // Let redeliveries of failed commits arrive and commit.
                let since = *settled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "read {}/40; assignment {na}+{nb}",
                seen.len()
            );
        }
        let parts = |m: &BaseConsumer| -> BTreeSet<i32> {
            m.assignment()
                .unwrap()
                .elements()
                .iter()
                .map(|e| e.partition())
                .collect()
        };
        let (pa, pb) = (parts(&members[0]), parts(&members[1]));
        drop(members);
        (seen, pa, pb)
    })
    .await?;
    assert_eq!(seen.len(), 40, "every message read");
    assert!(
        pa.is_disjoint(&pb),
        "members share partitions: {pa:?} {pb:?}"
    );
    assert_eq!(pa.union(&pb).count(), 4, "{pa:?} {pb:?}");

    let committed = cluster.committed_offsets(&group, topic).await?;
    assert_eq!(
        committed.values().cloned().collect::<Vec<_>>(),
        vec![Some(10); 4],
        "manual commits stored"
    );

    // New messages; a new member resumes from the committed offsets.
    let more: Vec<TestRecord> = (0..8)
        .map(|i| TestRecord::unkeyed(format!("n{i}")).partition(i % 4))
        .collect();
    cluster.produce(topic, more).await?;
    let c = member(&cluster, &group);
    if cluster.kind() == BrokerKind::Tansu {
        // tansu 0.6.0 can leave a group stuck after its leader leaves mid-rebalance
        // (docs/brokers.md): resume from the committed offsets by assignment.
        let committed = cluster.committed_offsets(&group, topic).await?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &committed {
            tpl.add_partition_offset(topic, *p, Offset::Offset(o.expect("committed")))?;
        }
        c.assign(&tpl)?;
    } else {
        c.subscribe(&[topic])?;
    }
    let got = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        let start = Instant::now();
        let mut last_report = Instant::now();
        while got.len() < 8 && start.elapsed() < Duration::from_secs(60) {
            match c.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    if got.is_empty() {
                        eprintln!("resumed member's first message after {:?}", start.elapsed());
                    }
                    got.push(String::from_utf8_lossy(m.payload().unwrap()).to_string())
                }
                Some(Err(e)) => eprintln!("poll error: {e}"),
                None => {}
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!(
                    "assignment {:?} position {:?}",
                    c.assignment().map(|a| a.count()),
                    c.position().map(|p| format!("{p:?}"))
                );
            }
        }
        // Nothing old comes after.
        let tail = Instant::now();
        while tail.elapsed() < Duration::from_millis(500) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                got.push(String::from_utf8_lossy(m.payload().unwrap()).to_string());
            }
        }
        got
    })
    .await?;
    assert_eq!(
        got.len(),
        8,
        "resumed member read only the new messages: {got:?}"
    );
    assert!(got.iter().all(|p| p.starts_with('n')), "{got:?}");
    Ok(())
}

#[tokio::test]
async fn mock_keys_and_headers_round_trip() -> R {
    keys_and_headers_round_trip(KafkaCluster::mock(1)?).await
}

#[ignore = "needs tansu: WEIR_WITH_TANSU=1 scripts/setup, then cargo test -- --ignored"]
#[tokio::test]
async fn tansu_keys_and_headers_round_trip() -> R {
    keys_and_headers_round_trip(KafkaCluster::tansu(TansuStorage::Sqlite).await?).await
}

#[ignore = "needs tansu: WEIR_WITH_TANSU=1 scripts/setup, then cargo test -- --ignored"]
#[tokio::test]
async fn tansu_memory_keys_and_headers_round_trip() -> R {
    keys_and_headers_round_trip(KafkaCluster::tansu(TansuStorage::Memory).await?).await
}

#[tokio::test]
async fn kafka_keys_and_headers_round_trip() -> R {
    keys_and_headers_round_trip(KafkaCluster::kafka(1).await?).await
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_group_splits_commits_and_resumes() -> R {
    group_splits_commits_and_resumes(KafkaCluster::kafka(1).await?).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mock_group_splits_commits_and_resumes() -> R {
    group_splits_commits_and_resumes(KafkaCluster::mock(1)?).await
}

#[ignore = "needs tansu: WEIR_WITH_TANSU=1 scripts/setup, then cargo test -- --ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn tansu_group_splits_commits_and_resumes() -> R {
    group_splits_commits_and_resumes(KafkaCluster::tansu(TansuStorage::Sqlite).await?).await
}

/// A CreateTopics the broker leaves unanswered past the fixture's 15 s request
/// timeout (tansu stalled with SIGSTOP for 18 s) is sent again, and the topic
/// is created once the broker answers (docs/brokers.md, seen in CI).
#[ignore = "needs tansu: WEIR_WITH_TANSU=1 scripts/setup, then cargo test -- --ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn tansu_create_topic_outlasts_an_unanswered_request() -> R {
    let cluster = KafkaCluster::tansu(TansuStorage::Memory).await?;
    let broker = cluster.tansu_broker().expect("tansu");
    broker.lock().await.stall()?;
    let stalled = Instant::now();
    let unstall = async {
        tokio::time::sleep(Duration::from_secs(18)).await;
        broker.lock().await.unstall()
    };
    let (created, unstalled) = tokio::join!(cluster.create_topic("late", 2), unstall);
    unstalled?;
    created?;
    assert!(
        stalled.elapsed() >= Duration::from_secs(18),
        "created only after the broker answered"
    );
    cluster
        .produce(
            "late",
            [
                TestRecord::keyed("a", "1").partition(0),
                TestRecord::keyed("b", "2").partition(1),
            ],
        )
        .await?;
    assert_eq!(
        cluster.read_to_end("late").await?.len(),
        2,
        "two partitions"
    );
    Ok(())
}

/// With SQLite storage, a SIGKILLed broker comes back with its messages and the
/// group's committed offsets.
#[ignore = "needs tansu: WEIR_WITH_TANSU=1 scripts/setup, then cargo test -- --ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn tansu_sqlite_survives_sigkill() -> R {
    let cluster = KafkaCluster::tansu(TansuStorage::Sqlite).await?;
    assert_eq!(cluster.kind(), BrokerKind::Tansu);
    cluster.create_topic("durable", 2).await?;
    let records: Vec<TestRecord> = (0..20)
        .map(|i| TestRecord::keyed(format!("k{i}"), format!("v{i}")).header("h", "1"))
        .collect();
    cluster.produce("durable", records).await?;
    // Commit offsets 5 and 7 for group g.
    let c = member(&cluster, "durable-group");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("durable", 0, Offset::Offset(5))?;
    tpl.add_partition_offset("durable", 1, Offset::Offset(7))?;
    let c = tokio::task::spawn_blocking(move || {
        c.assign(&tpl).unwrap();
        c.commit(&tpl, CommitMode::Sync).map(|_| c)
    })
    .await??;
    drop(c);
    let before = cluster.read_to_end("durable").await?;
    assert_eq!(before.len(), 20);

    {
        let mut broker = cluster.tansu_broker().unwrap().lock().await;
        let pid = broker.pid().unwrap();
        broker.kill()?;
        assert!(
            std::fs::metadata(format!("/proc/{pid}")).is_err() || {
                // A zombie is reaped by kill(); a live process would have a status file.
                let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                !s.contains("State:\tS") && !s.contains("State:\tR")
            }
        );
        broker.restart().await?;
    }
    let after = cluster.read_to_end("durable").await?;
    assert_eq!(
        after, before,
        "messages, keys and headers intact after SIGKILL"
    );
    let committed = cluster
        .committed_offsets("durable-group", "durable")
        .await?;
    assert_eq!(committed.get(&0), Some(&Some(5)));
    assert_eq!(committed.get(&1), Some(&Some(7)));
    Ok(())
}

/// Reproduces a tansu 0.6.0 group-coordinator bug (docs/brokers.md): when the
/// group leader leaves while the group is forming, the departed leader is kept
/// and a new member never receives an assignment. Passes on Apache Kafka and
/// the mock cluster; fails most runs on tansu 0.6.0.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "tansu 0.6.0 bug: group stuck after its leader leaves mid-rebalance"]
async fn tansu_group_rejoin_after_members_leave() -> R {
    group_rejoin_after_members_leave(KafkaCluster::tansu(TansuStorage::Sqlite).await?).await
}

/// The same scenario on Apache Kafka, the reference: a new member gets its assignment.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_group_rejoin_after_members_leave() -> R {
    group_rejoin_after_members_leave(KafkaCluster::kafka(1).await?).await
}

async fn group_rejoin_after_members_leave(cluster: KafkaCluster) -> R {
    cluster.create_topic("rejoin", 2).await?;
    cluster
        .produce(
            "rejoin",
            (0..4).map(|i| TestRecord::unkeyed("x").partition(i % 2)),
        )
        .await?;
    let a = member(&cluster, "rejoin-g");
    let b = member(&cluster, "rejoin-g");
    a.subscribe(&["rejoin"])?;
    b.subscribe(&["rejoin"])?;
    let ok = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            a.poll(Duration::from_millis(20));
            b.poll(Duration::from_millis(20));
        }
        drop((a, b));
        let c = member(&cluster, "rejoin-g");
        c.subscribe(&["rejoin"]).unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            c.poll(Duration::from_millis(50));
            if c.assignment().unwrap().count() > 0 {
                return true;
            }
        }
        false
    })
    .await?;
    assert!(ok, "a new member got no assignment within 30 s");
    Ok(())
}

#[tokio::test]
async fn postgres_fresh_database_is_created_and_dropped() -> R {
    let name;
    {
        let db = weir_testkit::PostgresDb::fresh().await?;
        name = db.name().to_string();
        let one: (i32,) = sqlx::query_as("SELECT 1").fetch_one(db.pool()).await?;
        assert_eq!(one.0, 1);
        assert!(db.url().ends_with(&name));
    }
    let admin = weir_testkit::PostgresDb::fresh().await?;
    let exists: Option<(String,)> =
        sqlx::query_as("SELECT datname::text FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(admin.pool())
            .await?;
    assert!(exists.is_none(), "database {name} was dropped");
    Ok(())
}

#[tokio::test]
async fn sqlite_fresh_database_works() -> R {
    let db = weir_testkit::SqliteDb::fresh()?;
    let pool = sqlx::SqlitePool::connect(db.url()).await?;
    sqlx::query("CREATE TABLE t (x INTEGER)")
        .execute(&pool)
        .await?;
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&pool)
        .await?;
    let n: (i64,) = sqlx::query_as("SELECT count(*) FROM t")
        .fetch_one(&pool)
        .await?;
    assert_eq!(n.0, 1);
    assert!(db.path().exists());
    Ok(())
}

#[tokio::test]
async fn mock_fault_injection_broker_down_up() -> R {
    let cluster = KafkaCluster::mock(1)?;
    cluster.create_topic("faults", 1).await?;
    let faults = cluster.mock_faults().expect("mock has faults");
    faults.broker_down(1)?;
    let producer = cluster.producer()?;
    let send = tokio::spawn(async move {
        let started = Instant::now();
        let r = producer
            .send(
                rdkafka::producer::FutureRecord::<str, str>::to("faults").payload("x"),
                Duration::from_secs(20),
            )
            .await;
        (r.is_ok(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    faults.broker_up(1)?;
    let (ok, took) = send.await?;
    assert!(ok, "delivered after the broker came back");
    assert!(
        took >= Duration::from_millis(1000),
        "delivery waited for the broker ({took:?})"
    );
    let got = cluster.read_to_end("faults").await?;
    assert_eq!(got.len(), 1);
    Ok(())
}

#[test]
fn broker_names_parse_and_unknown_ones_are_clear_errors() {
    assert_eq!(BrokerKind::parse(None).unwrap(), BrokerKind::Mock);
    assert_eq!(BrokerKind::parse(Some("")).unwrap(), BrokerKind::Mock);
    for kind in [
        BrokerKind::Mock,
        BrokerKind::Kafka,
        BrokerKind::Tansu,
        BrokerKind::External,
        BrokerKind::Docker,
    ] {
        assert_eq!(BrokerKind::parse(Some(kind.name())).unwrap(), kind);
    }
    let e = BrokerKind::parse(Some("kafak")).unwrap_err().to_string();
    assert!(
        e.contains("kafak") && e.contains("mock, kafka, tansu, external, docker"),
        "{e}"
    );
}

#[test]
fn external_without_bootstrap_is_a_clear_error() {
    if std::env::var_os("KAFKA_BOOTSTRAP_SERVERS").is_some() {
        return; // a real cluster is configured: nothing to check here
    }
    let e = KafkaCluster::external().unwrap_err().to_string();
    assert!(e.contains("KAFKA_BOOTSTRAP_SERVERS"), "{e}");
}
