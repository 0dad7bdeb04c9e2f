//! Exactly-once effect against real brokers (mock cluster and tansu) and real
//! databases (PostgreSQL, SQLite):
//! - a member SIGKILLed between its effects and its offset commit: the
//!   redelivered messages find their markers, one effect each;
//! - a zombie member (SIGSTOPped mid-transaction, evicted, resumed) and its
//!   successor process the same message concurrently: one effect, the loser
//!   counted as a duplicate, not an error (mock cluster; see `zombie_*`);
//! - a database outage mid-run: processing waits, no offset passes an
//!   unprocessed message, the run completes when the database returns.

#[path = "../../weir/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::{Postgres, Sqlite, Transaction};
use weir::{Consumer, ConsumerConfig, Message, ProcessError, StringCodec};
use weir_idempotency::{PostgresStore, SqliteStore, Transactional, TxProcessor};
use weir_testkit::{BrokerKind, KafkaCluster, PostgresDb, SqliteDb, TcpProxy, TestRecord};

use common::{R, wait_until_async};

const CHILD_MODE: &str = "WEIR_EO_CHILD";
const TOPIC: &str = "payments";
const GROUP: &str = "ledger";

broker_tests!(
    crash_between_effect_and_commit_postgres,
    database_outage_pauses_and_resumes,
    failed_transaction_leaves_nothing_and_retry_applies_once,
);

mod more {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_between_effect_and_commit_sqlite_mock() -> crate::common::R {
        crate::common::init();
        super::crash_between_effect_and_commit(weir_testkit::BrokerKind::Mock, super::Db::Sqlite)
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zombie_and_successor_yield_one_effect_mock() -> crate::common::R {
        crate::common::init();
        super::zombie_and_successor_yield_one_effect(weir_testkit::BrokerKind::Mock).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zombie_and_successor_yield_one_effect_kafka() -> crate::common::R {
        crate::common::init();
        super::zombie_and_successor_yield_one_effect(weir_testkit::BrokerKind::Kafka).await
    }
}

const SCHEMA_PG: &str = "CREATE TABLE IF NOT EXISTS effects (
    message_id TEXT NOT NULL, \"partition\" INTEGER NOT NULL, \"offset\" BIGINT NOT NULL)";
const SCHEMA_LITE: &str = "CREATE TABLE IF NOT EXISTS effects (
    message_id TEXT NOT NULL, \"partition\" INTEGER NOT NULL, \"offset\" INTEGER NOT NULL)";

/// The effect: one row per processing, deliberately without a unique
/// constraint, so a second effect for one message would show.
struct Ledger {
    delay: Duration,
    /// File created once the handler has written the effect for `slow_id` and
    /// is about to hold its transaction open (zombie test).
    slow: Option<(String, std::path::PathBuf)>,
}

impl Ledger {
    async fn after_write(&self, id: &str) {
        if let Some((slow_id, flag)) = &self.slow
            && slow_id == id
        {
            std::fs::write(flag, b"inside").expect("flag file");
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        tokio::time::sleep(self.delay).await;
    }
}

fn id_of(msg: &Message<String>) -> Result<String, ProcessError> {
    msg.message_id()
        .map(str::to_owned)
        .ok_or_else(|| ProcessError::terminal(std::io::Error::other("no id")))
}

impl TxProcessor<String, Postgres> for Ledger {
    async fn process(
        &self,
        msg: Message<String>,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), ProcessError> {
        let id = id_of(&msg)?;
        sqlx::query(
            "INSERT INTO effects (message_id, \"partition\", \"offset\") VALUES ($1, $2, $3)",
        )
        .bind(&id)
        .bind(msg.partition())
        .bind(msg.offset())
        .execute(&mut **tx)
        .await
        .map_err(|e| ProcessError::unavailable(e).with_class("db"))?;
        self.after_write(&id).await;
        Ok(())
    }
}

impl TxProcessor<String, Sqlite> for Ledger {
    async fn process(
        &self,
        msg: Message<String>,
        tx: &mut Transaction<'static, Sqlite>,
    ) -> Result<(), ProcessError> {
        let id = id_of(&msg)?;
        sqlx::query("INSERT INTO effects (message_id, \"partition\", \"offset\") VALUES (?, ?, ?)")
            .bind(&id)
            .bind(msg.partition())
            .bind(msg.offset())
            .execute(&mut **tx)
            .await
            .map_err(|e| ProcessError::unavailable(e).with_class("db"))?;
        self.after_write(&id).await;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    Postgres,
    Sqlite,
}

fn consumer_config(bootstrap: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(bootstrap, GROUP, &[TOPIC])
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("max.poll.interval.ms", "20000")
        // Not a divisor of the mock cluster's 5 s rejoin delay (see
        // weir/tests/common/mod.rs and docs/brokers.md).
        .set("topic.metadata.refresh.interval.ms", "1300");
    c.revoke_deadline = Duration::from_secs(5);
    c.shutdown_deadline = Duration::from_secs(5);
    c.max_in_flight = 32;
    c
}

/// Runs a ledger consumer until SIGTERM/SIGKILL. Used by the child processes.
async fn run_member(bootstrap: &str, db: Db, url: &str, cfg_commit: Duration, ledger: Ledger) -> R {
    let mut cfg = consumer_config(bootstrap);
    cfg.commit_interval = cfg_commit;
    let report = match db {
        Db::Postgres => {
            let store = PostgresStore::connect(url).await?;
            let p = Transactional::new(ledger, store, GROUP);
            Consumer::builder(cfg)
                .codec(StringCodec)
                .build(p)?
                .run_until_signal()
                .await?
        }
        Db::Sqlite => {
            let store = SqliteStore::open(url).await?;
            let p = Transactional::new(ledger, store, GROUP);
            Consumer::builder(cfg)
                .codec(StringCodec)
                .build(p)?
                .run_until_signal()
                .await?
        }
    };
    eprintln!("child report: {report:?}");
    Ok(())
}

/// The member process, started by the tests below with `CHILD_MODE` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the exactly-once tests; started by them"]
async fn eo_child() -> R {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return Ok(());
    };
    let bootstrap = std::env::var("WEIR_EO_BOOTSTRAP")?;
    let url = std::env::var("WEIR_EO_DB_URL")?;
    let db = if url.starts_with("sqlite:") {
        Db::Sqlite
    } else {
        Db::Postgres
    };
    let slow = std::env::var("WEIR_EO_SLOW_ID")
        .ok()
        .zip(std::env::var("WEIR_EO_FLAG").ok().map(Into::into));
    let ledger = Ledger {
        delay: Duration::from_millis(if mode == "crash" { 4 } else { 0 }),
        slow,
    };
    // Commit offsets only on revoke/shutdown: a SIGKILL then always lands
    // between effects and their offset commit.
    run_member(&bootstrap, db, &url, Duration::from_secs(3600), ledger).await
}

fn spawn_child(
    mode: &str,
    bootstrap: &str,
    url: &str,
    extra: &[(&str, String)],
) -> std::io::Result<Child> {
    let mut c = Command::new(std::env::current_exe()?);
    c.args([
        "--exact",
        "eo_child",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_MODE, mode)
    .env("WEIR_EO_BOOTSTRAP", bootstrap)
    .env("WEIR_EO_DB_URL", url)
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    for (k, v) in extra {
        c.env(k, v);
    }
    c.spawn()
}

/// Effects per message id.
async fn effects(db: &Db2) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = match db {
        Db2::Pg(d) => {
            sqlx::query_as("SELECT message_id, count(*) FROM effects GROUP BY message_id")
                .fetch_all(d.pool())
                .await
                .unwrap_or_default()
        }
        Db2::Lite(pool, _) => {
            sqlx::query_as("SELECT message_id, count(*) FROM effects GROUP BY message_id")
                .fetch_all(pool)
                .await
                .unwrap_or_default()
        }
    };
    rows.into_iter().collect()
}

enum Db2 {
    Pg(PostgresDb),
    Lite(sqlx::SqlitePool, SqliteDb),
}

impl Db2 {
    async fn new(db: Db) -> anyhow::Result<Self> {
        Ok(match db {
            Db::Postgres => {
                let d = PostgresDb::fresh().await?;
                let s = PostgresStore::new(d.pool().clone());
                s.migrate().await?;
                sqlx::query(SCHEMA_PG).execute(d.pool()).await?;
                Db2::Pg(d)
            }
            Db::Sqlite => {
                let d = SqliteDb::fresh()?;
                let s = SqliteStore::open(d.url()).await?;
                s.migrate().await?;
                sqlx::query(SCHEMA_LITE).execute(s.pool()).await?;
                Db2::Lite(s.pool().clone(), d)
            }
        })
    }

    fn url(&self) -> String {
        match self {
            Db2::Pg(d) => d.url().to_string(),
            Db2::Lite(_, d) => d.url().to_string(),
        }
    }
}

/// 600 payments with unique message ids, plus 60 re-published copies (same id).
async fn produce_payments(cluster: &KafkaCluster, n: usize, copies: usize) -> anyhow::Result<()> {
    let rec = |i: usize| {
        TestRecord::keyed(format!("acct-{}", i % 50), format!("pay-{i}"))
            .header(weir::MESSAGE_ID_HEADER, format!("pay-{i}"))
    };
    cluster.produce(TOPIC, (0..n).map(rec)).await?;
    cluster
        .produce(TOPIC, (0..copies).map(|i| rec(i * 7 % n)))
        .await?;
    Ok(())
}

async fn crash_between_effect_and_commit_postgres(kind: BrokerKind) -> R {
    crash_between_effect_and_commit(kind, Db::Postgres).await
}

async fn crash_between_effect_and_commit(kind: BrokerKind, db: Db) -> R {
    const N: usize = 600;
    const COPIES: usize = 60;
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 3).await?;
    produce_payments(&cluster, N, COPIES).await?;
    let dbx = Db2::new(db).await?;

    // First member: process about half, then SIGKILL (no offset was committed).
    let mut first = spawn_child("crash", cluster.bootstrap_servers(), &dbx.url(), &[])?;
    wait_until_async(
        "first member's effects",
        Duration::from_secs(90),
        || async { effects(&dbx).await.len() >= N / 3 },
    )
    .await;
    kill(Pid::from_raw(first.id() as i32), Signal::SIGKILL)?;
    first.wait()?;
    let before = effects(&dbx).await;
    let committed_at_kill = common::committed(&cluster, GROUP, TOPIC).await;
    eprintln!(
        "{kind:?}/{db:?}: killed after {} effects; committed {committed_at_kill:?}",
        before.len()
    );
    assert!(before.len() < N, "the kill happened mid-run");
    assert!(before.values().all(|&c| c == 1));

    // Second member, in this process: everything is redelivered.
    let cfg = {
        let mut c = consumer_config(cluster.bootstrap_servers());
        c.commit_interval = Duration::from_millis(200);
        c
    };
    let (stats, handle, run) = match db {
        Db::Postgres => {
            let p = Transactional::new(
                Ledger {
                    delay: Duration::ZERO,
                    slow: None,
                },
                PostgresStore::connect(&dbx.url()).await?,
                GROUP,
            );
            let stats = p.stats();
            let c = Consumer::builder(cfg).codec(StringCodec).build(p)?;
            (stats, c.handle(), tokio::spawn(c.run()))
        }
        Db::Sqlite => {
            let p = Transactional::new(
                Ledger {
                    delay: Duration::ZERO,
                    slow: None,
                },
                SqliteStore::open(&dbx.url()).await?,
                GROUP,
            );
            let stats = p.stats();
            let c = Consumer::builder(cfg).codec(StringCodec).build(p)?;
            (stats, c.handle(), tokio::spawn(c.run()))
        }
    };
    let consumer_stats = handle.stats();
    wait_until_async(
        "all deliveries handled",
        Duration::from_secs(90),
        || async { stats.fresh() + stats.duplicates() >= (N + COPIES) as u64 },
    )
    .await;
    handle.shutdown();
    let report = run.await??;
    assert!(report.drained && report.halted.is_empty(), "{report:?}");

    let after = effects(&dbx).await;
    assert_eq!(after.len(), N, "every payment has an effect");
    let doubles: Vec<_> = after.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        doubles.is_empty(),
        "exactly one effect per message: {doubles:?}"
    );
    eprintln!(
        "{kind:?}/{db:?}: second member: {} fresh, {} duplicates absorbed",
        stats.fresh(),
        stats.duplicates()
    );
    // A COMMIT the killed member sent just before dying can still land after
    // `before` was read, so the successor may find a few more markers.
    assert!(stats.fresh() <= (N - before.len()) as u64);
    assert_eq!(
        stats.fresh() as usize + after.len() - stats.fresh() as usize,
        N
    );
    assert!(
        stats.duplicates() >= before.len() as u64 + COPIES as u64 - 60,
        "the redelivered messages were absorbed as duplicates"
    );
    assert_eq!(consumer_stats.failed(), 0, "duplicates are not errors");
    Ok(())
}

/// A zombie (SIGSTOPped while holding a claim with its effect written, evicted
/// from the group) and its successor process the same message concurrently.
async fn zombie_and_successor_yield_one_effect(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 1).await?;
    produce_payments(&cluster, 20, 0).await?;
    let dbx = Db2::new(Db::Postgres).await?;
    let dir = tempfile::tempdir()?;
    let flag = dir.path().join("inside");
    let slow_id = "pay-5".to_string();

    let mut zombie = spawn_child(
        "zombie",
        cluster.bootstrap_servers(),
        &dbx.url(),
        &[
            ("WEIR_EO_SLOW_ID", slow_id.clone()),
            ("WEIR_EO_FLAG", flag.display().to_string()),
        ],
    )?;
    common::wait_until(
        "the zombie is inside pay-5",
        Duration::from_secs(60),
        || flag.exists(),
    )
    .await;
    let zpid = Pid::from_raw(zombie.id() as i32);
    kill(zpid, Signal::SIGSTOP)?;

    // The successor: gets the partition once the zombie's session expires, and
    // reaches pay-5 while the zombie's transaction still holds its marker row.
    let mut cfg = consumer_config(cluster.bootstrap_servers());
    cfg.commit_interval = Duration::from_millis(200);
    let p = Transactional::new(
        Ledger {
            delay: Duration::ZERO,
            slow: None,
        },
        PostgresStore::connect(&dbx.url()).await?,
        GROUP,
    );
    let stats = p.stats();
    let c = Consumer::builder(cfg).codec(StringCodec).build(p)?;
    let handle = c.handle();
    let consumer_stats = handle.stats();
    let run = tokio::spawn(c.run());

    // Wait until the successor is blocked on the zombie's row lock.
    let pg_pool = match &dbx {
        Db2::Pg(d) => d.pool().clone(),
        Db2::Lite(..) => unreachable!(),
    };
    wait_until_async("the successor waits on the zombie's marker", Duration::from_secs(60), || {
        let pool = pg_pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                >= 1
        }
    })
    .await;
    // Both hold pay-5 now. Let the zombie finish and commit.
    kill(zpid, Signal::SIGCONT)?;
    wait_until_async(
        "the successor handled all 20",
        Duration::from_secs(60),
        || async { stats.fresh() + stats.duplicates() >= 20 },
    )
    .await;
    kill(zpid, Signal::SIGKILL)?;
    zombie.wait()?;
    handle.shutdown();
    let report = run.await??;
    assert!(report.halted.is_empty(), "{report:?}");

    let after = effects(&dbx).await;
    assert_eq!(
        after.get(&slow_id),
        Some(&1),
        "one effect for the contested message"
    );
    assert_eq!(after.len(), 20);
    assert!(after.values().all(|&c| c == 1), "{after:?}");
    assert!(stats.duplicates() >= 1, "the loser counted a duplicate");
    assert_eq!(consumer_stats.failed(), 0, "and not an error");
    Ok(())
}

/// The database goes away mid-run (a proxy cuts every connection for 4 s).
async fn database_outage_pauses_and_resumes(kind: BrokerKind) -> R {
    const N: usize = 400;
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 3).await?;
    produce_payments(&cluster, N, 0).await?;
    let dbx = Db2::new(Db::Postgres).await?;
    let Db2::Pg(pg) = &dbx else { unreachable!() };
    let proxy = TcpProxy::start("127.0.0.1:5432").await?;
    let store = PostgresStore::connect(&pg.url_via(proxy.addr())).await?;

    let mut cfg = consumer_config(cluster.bootstrap_servers());
    cfg.commit_interval = Duration::from_millis(100);
    let p = Transactional::new(
        Ledger {
            delay: Duration::from_millis(5),
            slow: None,
        },
        store,
        GROUP,
    );
    let stats = p.stats();
    let c = Consumer::builder(cfg).codec(StringCodec).build(p)?;
    let handle = c.handle();
    let consumer_stats = handle.stats();
    let run = tokio::spawn(c.run());

    wait_until_async("100 effects", Duration::from_secs(60), || async {
        effects(&dbx).await.len() >= 100
    })
    .await;
    proxy.cut();
    let cut_at = effects(&dbx).await.len();
    // During the outage: nothing is processed, and no committed offset passes
    // a message without its effect.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let committed = common::committed(&cluster, GROUP, TOPIC).await;
        let coords: std::collections::BTreeSet<(i32, i64)> =
            sqlx::query_as("SELECT \"partition\", \"offset\" FROM effects")
                .fetch_all(pg.pool())
                .await?
                .into_iter()
                .collect();
        for (p, &c) in committed.iter().enumerate() {
            for o in 0..c.max(0) {
                assert!(
                    coords.contains(&(p as i32, o)),
                    "offset {p}/{o} committed during the outage without its effect"
                );
            }
        }
        assert!(
            coords.len() <= cut_at + 32,
            "processing continued without the database"
        );
    }
    assert!(stats.fresh() < N as u64);
    proxy.restore();

    wait_until_async(
        "all effects after the outage",
        Duration::from_secs(90),
        || async { effects(&dbx).await.len() >= N },
    )
    .await;
    // Let the last commits land, then stop.
    wait_until_async("all offsets committed", Duration::from_secs(30), || async {
        common::committed(&cluster, GROUP, TOPIC)
            .await
            .iter()
            .map(|&c| c.max(0))
            .sum::<i64>()
            == N as i64
    })
    .await;
    handle.shutdown();
    let report = run.await??;
    assert!(report.drained && report.halted.is_empty(), "{report:?}");
    let after = effects(&dbx).await;
    assert!(
        after.values().all(|&c| c == 1),
        "one effect each after the outage"
    );
    eprintln!(
        "{kind:?}: outage waits {} (in-place), store errors {}, refused connections {}",
        consumer_stats.unavailable(),
        stats.store_errors(),
        proxy.refused()
    );
    assert!(
        consumer_stats.unavailable() > 0,
        "the outage was seen and waited out"
    );
    assert_eq!(
        consumer_stats.failed(),
        0,
        "no message failed because of the outage"
    );
    Ok(())
}

/// Writes its effect, then fails the first attempt of every third message.
struct FailsAfterWriting;

impl TxProcessor<String, Postgres> for FailsAfterWriting {
    async fn process(
        &self,
        msg: Message<String>,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), ProcessError> {
        let id = id_of(&msg)?;
        let n: usize = id.trim_start_matches("pay-").parse().unwrap_or(0);
        sqlx::query("INSERT INTO attempts (message_id, attempt) VALUES ($1, $2)")
            .bind(&id)
            .bind(msg.attempt() as i32)
            .execute(&mut **tx)
            .await
            .map_err(|e| ProcessError::unavailable(e).with_class("db"))?;
        if n.is_multiple_of(3) && msg.attempt() == 1 {
            return Err(
                ProcessError::retryable(std::io::Error::other("downstream 503"))
                    .with_class("http_503"),
            );
        }
        Ok(())
    }
}

/// A handler error after its write rolls back effect and marker; the in-place
/// retry then applies it once.
async fn failed_transaction_leaves_nothing_and_retry_applies_once(kind: BrokerKind) -> R {
    const N: usize = 90;
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 2).await?;
    produce_payments(&cluster, N, 0).await?;
    let dbx = Db2::new(Db::Postgres).await?;
    let Db2::Pg(pg) = &dbx else { unreachable!() };
    sqlx::query("CREATE TABLE attempts (message_id TEXT NOT NULL, attempt INTEGER NOT NULL)")
        .execute(pg.pool())
        .await?;
    let mut cfg = consumer_config(cluster.bootstrap_servers());
    cfg.retry.initial_backoff = Duration::from_millis(10);
    cfg.retry.max_attempts = 3;
    let p = Transactional::new(
        FailsAfterWriting,
        PostgresStore::new(pg.pool().clone()),
        GROUP,
    );
    let stats = p.stats();
    let c = Consumer::builder(cfg).codec(StringCodec).build(p)?;
    let handle = c.handle();
    let run = tokio::spawn(c.run());
    wait_until_async("all processed", Duration::from_secs(60), || async {
        stats.fresh() >= N as u64
    })
    .await;
    handle.shutdown();
    let report = run.await??;
    assert!(report.drained && report.halted.is_empty(), "{report:?}");
    assert_eq!(
        handle.stats().retries(),
        (N / 3) as u64,
        "one retry per failing message"
    );

    let rows: Vec<(String, i32)> = sqlx::query_as("SELECT message_id, attempt FROM attempts")
        .fetch_all(pg.pool())
        .await?;
    assert_eq!(rows.len(), N, "one surviving effect per message: {rows:?}");
    for (id, attempt) in &rows {
        let n: usize = id.trim_start_matches("pay-").parse()?;
        let expected = if n.is_multiple_of(3) { 2 } else { 1 };
        assert_eq!(
            *attempt, expected,
            "{id}: the failed attempt's write was rolled back"
        );
    }
    let markers: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_messages")
        .fetch_one(pg.pool())
        .await?;
    assert_eq!(markers, N as i64);
    Ok(())
}
