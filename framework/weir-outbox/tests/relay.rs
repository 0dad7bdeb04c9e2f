//! The outbox relay against real brokers (mock cluster, Apache Kafka) and real
//! databases (PostgreSQL, SQLite).

#[path = "../../weir/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir::MESSAGE_ID_HEADER;
use weir_outbox::{OutboxRecord, PostgresOutbox, Relay, RelayConfig, SqliteOutbox};
use weir_testkit::{BrokerKind, KafkaCluster, PostgresDb, ReadMessage, SqliteDb};

use common::{R, wait_until};

broker_tests!(
    postgres_committed_rows_are_published_in_key_order,
    two_relays_and_concurrent_writers_keep_key_order,
    notify_wakes_the_relay_within_milliseconds,
    a_row_the_broker_refuses_is_quarantined_and_the_rest_flow,
    a_failed_send_does_not_let_a_later_row_of_its_key_ahead,
);

mod more {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_committed_rows_are_published_in_key_order_mock() -> crate::common::R {
        crate::common::init();
        super::sqlite_committed_rows_are_published(weir_testkit::BrokerKind::Mock).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broker_outage_loses_nothing_mock() -> crate::common::R {
        crate::common::init();
        super::broker_outage_loses_nothing(weir_testkit::BrokerKind::Mock).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broker_outage_loses_nothing_kafka() -> crate::common::R {
        crate::common::init();
        super::broker_outage_loses_nothing(weir_testkit::BrokerKind::Kafka).await
    }
}

const TOPIC: &str = "clicks";

fn seq_of(m: &ReadMessage) -> (String, u64) {
    let p = String::from_utf8_lossy(m.payload.as_deref().unwrap_or_default()).into_owned();
    let (k, n) = p.split_once('#').expect("key#seq payload");
    (k.to_string(), n.parse().expect("seq"))
}

/// Asserts every key's sequence numbers arrive strictly increasing.
fn assert_key_order(msgs: &[ReadMessage]) {
    let mut by_part: BTreeMap<i32, Vec<&ReadMessage>> = BTreeMap::new();
    for m in msgs {
        by_part.entry(m.partition).or_default().push(m);
    }
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for ms in by_part.values() {
        let mut ms = ms.clone();
        ms.sort_by_key(|m| m.offset);
        for m in ms {
            let (k, n) = seq_of(m);
            if let Some(prev) = last.get(&k) {
                assert!(n > *prev, "key {k}: {n} published after {prev}");
            }
            last.insert(k, n);
        }
    }
}

fn producer(cluster: &KafkaCluster) -> weir::Producer {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", cluster.bootstrap_servers())
        .set("message.timeout.ms", "5000");
    weir::Producer::from_client_config(c).expect("producer")
}

async fn postgres_committed_rows_are_published_in_key_order(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 3).await?;
    let db = PostgresDb::fresh().await?;
    let outbox = PostgresOutbox::new(db.pool().clone());
    outbox.migrate().await?;
    outbox.migrate().await?;
    let mut ids = BTreeSet::new();
    let mut seq: BTreeMap<String, u64> = BTreeMap::new();
    for t in 0..30 {
        let mut tx = db.pool().begin().await?;
        let mut these = Vec::new();
        let mut batch = Vec::new();
        for i in 0..10 {
            let k = format!("link-{}", (t + i) % 7);
            let n = seq.entry(k.clone()).or_default();
            *n += 1;
            let rec = OutboxRecord::to(TOPIC)
                .key(k.clone())
                .payload(format!("{k}#{n}"))
                .header("traceparent", "00-x-y-01");
            // Every other transaction enqueues its ten rows in one batch.
            if t % 2 == 0 {
                these.push(PostgresOutbox::enqueue(&mut tx, rec).await?);
            } else {
                batch.push(rec);
            }
        }
        if !batch.is_empty() {
            let ids = PostgresOutbox::enqueue_many(&mut tx, batch).await?;
            assert_eq!(ids.len(), 10, "an ID per record");
            these.extend(ids);
        }
        if t == 13 {
            tx.rollback().await?; // never published
        } else {
            tx.commit().await?;
            ids.extend(these);
        }
    }
    let relay = Relay::new(
        outbox.clone(),
        producer(&cluster),
        RelayConfig {
            batch_size: 64,
            ..Default::default()
        },
    );
    let stats = relay.stats();
    let stop = CancellationToken::new();
    let relay = Arc::new(relay);
    let r = relay.clone();
    let s = stop.clone();
    let task = tokio::spawn(async move { r.run(s).await });
    wait_until("all rows published", Duration::from_secs(30), || {
        stats.published() >= ids.len() as u64
    })
    .await;
    stop.cancel();
    task.await??;

    let msgs = cluster.read_to_end(TOPIC).await?;
    assert_eq!(msgs.len(), ids.len(), "committed rows only, each once");
    let got: BTreeSet<String> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(m.header(MESSAGE_ID_HEADER).expect("id")).into_owned())
        .collect();
    assert_eq!(got, ids, "message ids are the enqueued ones");
    assert!(
        msgs.iter()
            .all(|m| m.header("traceparent") == Some(&b"00-x-y-01"[..]))
    );
    // Within a key, rows arrive in id (= commit) order. The rolled-back
    // transaction leaves gaps in the sequence, never reversals.
    assert_key_order(&msgs);
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM weir_outbox WHERE published_at IS NULL")
            .fetch_one(db.pool())
            .await?;
    assert_eq!(unpublished, 0);

    // A crash between publish and mark: the rows go out again with the same IDs.
    sqlx::query("UPDATE weir_outbox SET published_at = NULL WHERE id IN (SELECT id FROM weir_outbox ORDER BY id LIMIT 5)")
        .execute(db.pool())
        .await?;
    let relay2 = Relay::new(outbox, producer(&cluster), RelayConfig::default());
    assert_eq!(relay2.relay_once().await?, 5);
    let again = cluster.read_to_end(TOPIC).await?;
    assert_eq!(again.len(), ids.len() + 5);
    let ids_again: BTreeSet<String> = again
        .iter()
        .map(|m| String::from_utf8_lossy(m.header(MESSAGE_ID_HEADER).unwrap()).into_owned())
        .collect();
    assert_eq!(
        ids_again, ids,
        "the re-published copies carry the same message IDs"
    );
    eprintln!(
        "{kind:?}: {} rows, last commit-to-ack latency {} ms",
        ids.len(),
        stats.last_latency_ms()
    );
    Ok(())
}

/// A fresh SQLite outbox (WAL, 10 s busy timeout), migrated; keep the
/// `SqliteDb` alive as long as the pool.
async fn sqlite_outbox()
-> Result<(SqliteDb, sqlx::SqlitePool, SqliteOutbox), Box<dyn std::error::Error + Send + Sync>> {
    let db = SqliteDb::fresh()?;
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            db.url()
                .parse::<sqlx::sqlite::SqliteConnectOptions>()?
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10)),
        )
        .await?;
    let outbox = SqliteOutbox::new(pool.clone());
    outbox.migrate().await?;
    Ok((db, pool, outbox))
}

async fn sqlite_committed_rows_are_published(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 2).await?;
    let (_db, pool, outbox) = sqlite_outbox().await?;
    let mut n = 0;
    for t in 0..10 {
        let mut tx = pool.begin().await?;
        for i in 0..10 {
            let k = format!("k{}", (t * 3 + i) % 4);
            SqliteOutbox::enqueue(
                &mut tx,
                OutboxRecord::to(TOPIC)
                    .key(k.clone())
                    .payload(format!("{k}#{}", t * 10 + i)),
            )
            .await?;
        }
        if t == 4 {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
            n += 10;
        }
    }
    let relay = Relay::new(
        outbox,
        producer(&cluster),
        RelayConfig {
            batch_size: 16,
            ..Default::default()
        },
    );
    let mut total = 0;
    loop {
        let k = relay.relay_once().await?;
        if k == 0 {
            break;
        }
        total += k;
    }
    assert_eq!(total, n);
    let msgs = cluster.read_to_end(TOPIC).await?;
    assert_eq!(msgs.len(), n);
    assert_key_order(&msgs);
    Ok(())
}

/// Two relay instances and four concurrent writers on the same keys: every
/// row published once, each key in order, and only one relay leads at a time.
async fn two_relays_and_concurrent_writers_keep_key_order(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 3).await?;
    let db = PostgresDb::fresh().await?;
    let outbox = PostgresOutbox::new(db.pool().clone());
    outbox.migrate().await?;
    let stop = CancellationToken::new();
    let mut relays = Vec::new();
    let mut stats = Vec::new();
    for _ in 0..2 {
        let r = Arc::new(Relay::new(
            outbox.clone(),
            producer(&cluster),
            RelayConfig {
                batch_size: 20,
                poll_interval: Duration::from_millis(50),
                ..Default::default()
            },
        ));
        stats.push(r.stats());
        let s = stop.clone();
        relays.push(tokio::spawn(async move { r.run(s).await }));
    }
    // Writers: each key's sequence is taken under the same per-key lock the
    // outbox uses, so "sequence order" is the order the rows must come out in.
    let counters: Arc<parking_lot::Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let pool = db.pool().clone();
        let counters = counters.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..60 {
                let k = format!("link-{}", (w + i) % 5);
                let mut tx = pool.begin().await.unwrap();
                // enqueue takes the key lock first; number the row after it.
                let rec = OutboxRecord::to(TOPIC).key(k.clone());
                let mut rec2 = rec.clone();
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || encode($2, 'hex'), 7))")
                    .bind(TOPIC)
                    .bind(k.as_bytes())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                let n = {
                    let mut c = counters.lock();
                    let e = c.entry(k.clone()).or_default();
                    *e += 1;
                    *e
                };
                rec2 = rec2.payload(format!("{k}#{n}"));
                PostgresOutbox::enqueue(&mut tx, rec2).await.unwrap();
                if i % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                tx.commit().await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await?;
    }
    let total = 4 * 60;
    wait_until("all published", Duration::from_secs(60), || {
        stats.iter().map(|s| s.published()).sum::<u64>() >= total
    })
    .await;
    stop.cancel();
    for r in relays {
        r.await??;
    }
    let msgs = cluster.read_to_end(TOPIC).await?;
    assert_eq!(msgs.len() as u64, total, "each row once");
    assert_key_order(&msgs);
    eprintln!(
        "{kind:?}: relay A published {}, relay B published {}",
        stats[0].published(),
        stats[1].published()
    );
    Ok(())
}

/// With a 30 s polling interval, a committed row still goes out in well under
/// a second: the insert trigger's NOTIFY wakes the relay.
async fn notify_wakes_the_relay_within_milliseconds(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 1).await?;
    let db = PostgresDb::fresh().await?;
    let outbox = PostgresOutbox::new(db.pool().clone());
    outbox.migrate().await?;
    let relay = Arc::new(Relay::new(
        outbox,
        producer(&cluster),
        RelayConfig {
            poll_interval: Duration::from_secs(30),
            ..Default::default()
        },
    ));
    let stats = relay.stats();
    let stop = CancellationToken::new();
    let (r, s) = (relay.clone(), stop.clone());
    let task = tokio::spawn(async move { r.run(s).await });
    tokio::time::sleep(Duration::from_millis(500)).await; // LISTEN is up, relay idle
    let mut lat = Vec::new();
    for i in 0..5u64 {
        let start = Instant::now();
        let mut tx = db.pool().begin().await?;
        PostgresOutbox::enqueue(
            &mut tx,
            OutboxRecord::to(TOPIC).key("k").payload(format!("k#{i}")),
        )
        .await?;
        tx.commit().await?;
        wait_until("published", Duration::from_secs(10), || {
            stats.published() > i
        })
        .await;
        lat.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await??;
    eprintln!("{kind:?}: commit-to-ack latencies {lat:?}");
    assert!(
        lat.iter().all(|l| *l < Duration::from_secs(3)),
        "woken by NOTIFY, not the 30 s poll: {lat:?}"
    );
    Ok(())
}

/// The broker goes down: rows accumulate, the relay backs off, then
/// everything is published when it returns. Nothing lost.
async fn broker_outage_loses_nothing(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 1).await?;
    let db = PostgresDb::fresh().await?;
    let outbox = PostgresOutbox::new(db.pool().clone());
    outbox.migrate().await?;
    let relay = Arc::new(Relay::new(
        outbox.clone(),
        producer(&cluster),
        RelayConfig {
            poll_interval: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..Default::default()
        },
    ));
    let stats = relay.stats();
    let stop = CancellationToken::new();
    let (r, s) = (relay.clone(), stop.clone());
    let task = tokio::spawn(async move { r.run(s).await });
    // Mock: the broker refuses connections; Kafka: the node is SIGKILLed (its
    // log keeps the topic) and restarted later.
    cluster.kill_brokers().await?;
    for i in 0..50 {
        let mut tx = db.pool().begin().await?;
        PostgresOutbox::enqueue(
            &mut tx,
            OutboxRecord::to(TOPIC)
                .key(format!("k{}", i % 3))
                .payload(format!("k{}#{i}", i % 3)),
        )
        .await?;
        tx.commit().await?;
    }
    wait_until("a failed publish", Duration::from_secs(30), || {
        stats.publish_errors() >= 1
    })
    .await;
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM weir_outbox WHERE published_at IS NULL")
            .fetch_one(db.pool())
            .await?;
    assert_eq!(pending, 50, "rows accumulate while the broker is down");
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM weir_outbox ORDER BY id LIMIT 1")
            .fetch_one(db.pool())
            .await?;
    assert!(last_error.is_some(), "the failure is recorded on the rows");
    cluster.restart_brokers().await?;
    wait_until(
        "all published after the outage",
        Duration::from_secs(60),
        || stats.published() >= 50,
    )
    .await;
    stop.cancel();
    task.await??;
    let msgs = cluster.read_to_end(TOPIC).await?;
    let ids: BTreeSet<_> = msgs
        .iter()
        .map(|m| m.header(MESSAGE_ID_HEADER).unwrap().to_vec())
        .collect();
    assert_eq!(
        ids.len(),
        50,
        "every row arrived (duplicates allowed, losses not)"
    );
    eprintln!(
        "outage: {} publish errors, {} messages for 50 rows",
        stats.publish_errors(),
        msgs.len()
    );
    Ok(())
}

/// Issue 21.15: one row that can never be sent (here larger than the
/// producer's `message.max.bytes`) used to roll the whole batch back: the
/// same rows were claimed again on every cycle, the batch's other rows were
/// re-published each time (duplicates) and nothing after them was ever sent.
/// Now that row is quarantined with its error, the rows that were acked are
/// marked, and every other row is published once.
async fn a_row_the_broker_refuses_is_quarantined_and_the_rest_flow(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 1).await?;
    let db = PostgresDb::fresh().await?;
    let outbox = PostgresOutbox::new(db.pool().clone());
    outbox.migrate().await?;
    let mut tx = db.pool().begin().await?;
    let rows = [
        ("a", "a#1".to_string()),
        ("b", "x".repeat(2_000_000)),
        ("a", "a#2".to_string()),
        ("c", "c#1".to_string()),
    ];
    for (k, p) in &rows {
        PostgresOutbox::enqueue(&mut tx, OutboxRecord::to(TOPIC).key(*k).payload(p.clone()))
            .await?;
    }
    tx.commit().await?;
    let relay = Arc::new(Relay::new(
        outbox.clone(),
        producer(&cluster),
        RelayConfig {
            poll_interval: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..Default::default()
        },
    ));
    let stats = relay.stats();
    let stop = CancellationToken::new();
    let (r, s) = (relay.clone(), stop.clone());
    let task = tokio::spawn(async move { r.run(s).await });
    wait_until(
        "three published, one quarantined",
        Duration::from_secs(30),
        || stats.published() >= 3 && stats.quarantined() >= 1,
    )
    .await;
    // A few more cycles: nothing is published again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    task.await??;
    let got = cluster.read_to_end(TOPIC).await?;
    let mut payloads: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload.as_deref().unwrap_or_default()).into_owned())
        .collect();
    payloads.sort();
    assert_eq!(
        payloads,
        ["a#1", "a#2", "c#1"],
        "each once, the refused row not at all"
    );
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM weir_outbox WHERE published_at IS NULL")
            .fetch_one(db.pool())
            .await?;
    assert_eq!(pending, 0, "nothing left to block the relay");
    let err: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM weir_outbox WHERE msg_key = 'b'")
            .fetch_one(db.pool())
            .await?;
    assert!(
        err.is_some_and(|e| e.contains("not published")),
        "the error is on the row"
    );
    Ok(())
}

/// Sends through a real producer, except that the payloads in `fail` fail
/// once with a transient local error (a full producer queue), after a
/// moment, as librdkafka reports one.
struct FailOnce {
    inner: weir::Producer,
    fail: parking_lot::Mutex<BTreeSet<String>>,
    attempts: parking_lot::Mutex<Vec<String>>,
}

impl weir_outbox::Publish for FailOnce {
    fn publish(
        &self,
        record: weir::producer::Record,
    ) -> impl std::future::Future<
        Output = Result<weir::producer::Delivery, weir::producer::ProduceError>,
    > + Send {
        let payload =
            String::from_utf8_lossy(record.payload.as_deref().unwrap_or_default()).into_owned();
        self.attempts.lock().push(payload.clone());
        let fail = self.fail.lock().remove(&payload);
        let inner = self.inner.clone();
        async move {
            if fail {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(weir::producer::ProduceError::Kafka {
                    topic: record.topic,
                    source: rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                });
            }
            inner.send(record).await
        }
    }
}

/// Issue 21.17: a relay batch sent every row at once, so when an early row
/// of a key failed transiently (queue full, local timeout) a later row of
/// the same key was delivered anyway; the early row, sent again on the next
/// claim, landed after it. Now a key's rows go one after another and a key
/// stops at its first failed row; other keys are not held up.
async fn a_failed_send_does_not_let_a_later_row_of_its_key_ahead(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 2).await?;
    let (_db, pool, outbox) = sqlite_outbox().await?;
    let mut tx = pool.begin().await?;
    for seq in 0..5 {
        for k in ["k0", "k1", "k2"] {
            SqliteOutbox::enqueue(
                &mut tx,
                OutboxRecord::to(TOPIC).key(k).payload(format!("{k}#{seq}")),
            )
            .await?;
        }
    }
    tx.commit().await?;
    let publisher = Arc::new(FailOnce {
        inner: producer(&cluster),
        fail: parking_lot::Mutex::new(BTreeSet::from(["k0#1".to_string()])),
        attempts: Default::default(),
    });
    struct Shared(Arc<FailOnce>);
    impl weir_outbox::Publish for Shared {
        fn publish(
            &self,
            record: weir::producer::Record,
        ) -> impl std::future::Future<
            Output = Result<weir::producer::Delivery, weir::producer::ProduceError>,
        > + Send {
            self.0.publish(record)
        }
    }
    let relay = Relay::new(outbox, Shared(publisher.clone()), RelayConfig::default());
    let first = relay.relay_once().await;
    assert!(first.is_err(), "the failed row is reported: {first:?}");
    let tried: Vec<String> = publisher.attempts.lock().clone();
    assert!(
        !tried
            .iter()
            .any(|p| p.starts_with("k0#") && p.as_str() > "k0#1"),
        "no later row of k0 was sent while k0#1 failed: {tried:?}"
    );
    assert!(
        tried.contains(&"k1#4".to_string()) && tried.contains(&"k2#4".to_string()),
        "the other keys were not held up: {tried:?}"
    );
    let mut cycles = 0;
    while relay.relay_once().await? > 0 {
        cycles += 1;
        assert!(cycles < 10, "the relay does not drain");
    }
    let msgs = cluster.read_to_end(TOPIC).await?;
    assert_key_order(&msgs);
    assert_eq!(msgs.len(), 15, "each row once");
    Ok(())
}
