//! `weir outbox relay` as its own process: rows committed to PostgreSQL reach
//! Kafka, and SIGTERM stops it cleanly.

#[path = "../../framework/weir/tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use weir_outbox::{OutboxRecord, PostgresOutbox};
use weir_testkit::{BrokerKind, PostgresDb};

use common::{R, wait_until_async};

broker_tests!(relay_process_publishes_and_stops_on_sigterm);

async fn relay_process_publishes_and_stops_on_sigterm(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("clicks", 2).await?;
    let db = PostgresDb::fresh().await?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "outbox",
            "relay",
            "--brokers",
            cluster.bootstrap_servers(),
            "--database-url",
            db.url(),
            "--poll-interval",
            "200ms",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    // The relay creates the table; wait for it.
    wait_until_async("outbox table", Duration::from_secs(30), || async {
        sqlx::query("SELECT 1 FROM weir_outbox LIMIT 1")
            .fetch_optional(db.pool())
            .await
            .is_ok()
    })
    .await;
    let mut tx = db.pool().begin().await?;
    for i in 0..20 {
        PostgresOutbox::enqueue(
            &mut tx,
            OutboxRecord::to("clicks")
                .key(format!("k{}", i % 4))
                .payload(format!("c{i}")),
        )
        .await?;
    }
    tx.commit().await?;
    wait_until_async("20 published", Duration::from_secs(30), || async {
        cluster
            .read_to_end("clicks")
            .await
            .map(|m| m.len())
            .unwrap_or(0)
            >= 20
    })
    .await;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    let status = child.wait()?;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM weir_outbox WHERE published_at IS NULL")
            .fetch_one(db.pool())
            .await?;
    assert_eq!(unpublished, 0);
    assert_eq!(cluster.read_to_end("clicks").await?.len(), 20);
    Ok(())
}

mod chaos {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relay_sigkilled_repeatedly_loses_nothing_mock() -> crate::common::R {
        crate::common::init();
        super::relay_sigkilled_repeatedly_loses_nothing(weir_testkit::BrokerKind::Mock).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relay_sigkilled_repeatedly_loses_nothing_kafka() -> crate::common::R {
        crate::common::init();
        super::relay_sigkilled_repeatedly_loses_nothing(weir_testkit::BrokerKind::Kafka).await
    }
}

/// 10,000 rows; the relay process is SIGKILLed and restarted every few hundred
/// milliseconds while it works. Every row reaches Kafka at least once, each
/// key's first deliveries are in order, and an idempotent consumer applies
/// each row exactly once.
async fn relay_sigkilled_repeatedly_loses_nothing(kind: BrokerKind) -> R {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;

    const ROWS: usize = 10_000;
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("orders", 4).await?;
    let db = PostgresDb::fresh().await?;
    PostgresOutbox::new(db.pool().clone()).migrate().await?;
    // One writer: a key's sequence order is its id order.
    let mut seq: BTreeMap<String, u64> = BTreeMap::new();
    for b in 0..ROWS / 200 {
        let mut tx = db.pool().begin().await?;
        for i in 0..200 {
            let k = format!("k{}", (b * 200 + i) % 50);
            let n = seq.entry(k.clone()).or_default();
            *n += 1;
            PostgresOutbox::enqueue(
                &mut tx,
                OutboxRecord::to("orders")
                    .key(k.clone())
                    .payload(format!("{k}#{n}")),
            )
            .await?;
        }
        tx.commit().await?;
    }
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([
                "outbox",
                "relay",
                "--brokers",
                cluster.bootstrap_servers(),
                "--database-url",
                db.url(),
                "--batch-size",
                "250",
                "--poll-interval",
                "100ms",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    let unpublished = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM weir_outbox WHERE published_at IS NULL")
            .fetch_one(db.pool())
            .await
            .unwrap_or(i64::MAX)
    };
    // Kill each relay process once it has made some progress (so every run
    // dies mid-work, whatever the broker's speed), until everything is out.
    let mut kills = 0;
    let start = std::time::Instant::now();
    let step = (ROWS / 8) as i64;
    loop {
        let before = unpublished().await;
        if before == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "relay made no progress"
        );
        let mut child = spawn()?;
        let run_start = std::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(10 + rand_ms() / 10)).await;
            let now = unpublished().await;
            if now == 0 || before - now >= step || run_start.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        if unpublished().await == 0 {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
            child.wait()?;
            break;
        }
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
        child.wait()?;
        kills += 1;
    }
    let msgs = cluster.read_to_end("orders").await?;
    // At least once, in order per key (first deliveries).
    let mut first: HashMap<Vec<u8>, ()> = HashMap::new();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_part: BTreeMap<i32, Vec<&weir_testkit::ReadMessage>> = BTreeMap::new();
    for m in &msgs {
        by_part.entry(m.partition).or_default().push(m);
    }
    for ms in by_part.values_mut() {
        ms.sort_by_key(|m| m.offset);
        for m in ms.iter() {
            let id = m.header(weir::MESSAGE_ID_HEADER).expect("id").to_vec();
            if first.insert(id, ()).is_some() {
                continue; // a re-published copy
            }
            let p = String::from_utf8_lossy(m.payload.as_deref().unwrap()).into_owned();
            let (k, n) = p.split_once('#').unwrap();
            let n: u64 = n.parse()?;
            if let Some(prev) = last.get(k) {
                assert!(n > *prev, "key {k}: {n} first published after {prev}");
            }
            last.insert(k.to_string(), n);
        }
    }
    assert_eq!(first.len(), ROWS, "every row reached Kafka");
    eprintln!(
        "{kind:?}: {kills} relay kills, {} messages for {ROWS} rows",
        msgs.len()
    );
    assert!(kills >= 3, "the relay was killed mid-run ({kills} times)");

    // An idempotent consumer applies each row once.
    let effects: Arc<parking_lot::Mutex<HashMap<String, u32>>> = Arc::default();
    let e = effects.clone();
    let inner = weir::processor_fn(move |m: weir::Message<String>| {
        let e = e.clone();
        async move {
            *e.lock().entry(m.value().clone()).or_default() += 1;
            Ok::<_, weir::ProcessError>(())
        }
    });
    let p =
        weir_idempotency::Idempotent::new(inner, weir_idempotency::InMemoryStore::new(), "sink");
    let stats = p.stats();
    let consumer = weir::Consumer::builder(common::config(&cluster, "sink", &["orders"]))
        .codec(weir::StringCodec)
        .build(p)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    let total = msgs.len() as u64;
    common::wait_until("all deliveries handled", Duration::from_secs(60), || {
        stats.fresh() + stats.duplicates() >= total
    })
    .await;
    handle.shutdown();
    let _ = run.await??;
    let effects = effects.lock();
    assert_eq!(effects.len(), ROWS);
    assert!(
        effects.values().all(|&c| c == 1),
        "exactly one effect per row"
    );
    assert_eq!(stats.duplicates(), total - ROWS as u64);
    Ok(())
}

fn rand_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) % 200)
        .unwrap_or(0)
}
