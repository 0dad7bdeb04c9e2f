//! The store contract, against real PostgreSQL and SQLite databases (and the
//! in-memory store): one fresh claim per key, concurrent claims wait for the
//! first and see its outcome, a failed transaction leaves no marker and no
//! effect, retention removes only expired markers.

use std::sync::Arc;
use std::time::Duration;

use weir_idempotency::{
    Claim, IdempotencyStore, InMemoryStore, MarkerKey, PostgresStore, SqliteStore,
};
use weir_testkit::{PostgresDb, SqliteDb};

type R = anyhow::Result<()>;

fn key(id: &str) -> MarkerKey<'_> {
    MarkerKey {
        group: "g",
        message_id: id,
        topic: "t",
        partition: 0,
        offset: 7,
    }
}

async fn fresh<S: IdempotencyStore>(s: &S, id: &str) -> S::Tx {
    match s.claim(key(id)).await.expect("claim") {
        Claim::Fresh(tx) => tx,
        Claim::Duplicate => panic!("claim of {id} must be fresh"),
    }
}

async fn contract<S: IdempotencyStore>(s: Arc<S>) -> R {
    // Fresh, then committed, then a duplicate; other groups are independent.
    let tx = fresh(&*s, "a").await;
    assert!(
        !s.is_processed("g", "a").await?,
        "uncommitted marker is invisible"
    );
    s.commit(tx).await?;
    assert!(s.is_processed("g", "a").await?);
    assert!(matches!(s.claim(key("a")).await?, Claim::Duplicate));
    let other = MarkerKey {
        group: "other",
        ..key("a")
    };
    let Claim::Fresh(tx) = s.claim(other).await? else {
        panic!("markers are per group")
    };
    s.rollback(tx).await?;

    // A concurrent claim waits for the holder, then sees the commit.
    let tx = fresh(&*s, "b").await;
    let s2 = s.clone();
    let waiter = tokio::spawn(async move { s2.claim(key("b")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "a concurrent claim must wait for the holder"
    );
    s.commit(tx).await?;
    assert!(matches!(waiter.await??, Claim::Duplicate));

    // A concurrent claim waits, then gets the key when the holder rolls back.
    let tx = fresh(&*s, "c").await;
    let s2 = s.clone();
    let waiter = tokio::spawn(async move { s2.claim(key("c")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    s.rollback(tx).await?;
    let Claim::Fresh(tx) = waiter.await?? else {
        panic!("after a rollback the waiting claim is fresh")
    };
    s.commit(tx).await?;
    assert!(s.is_processed("g", "c").await?);

    // A dropped (never committed) claim leaves no marker.
    let tx = fresh(&*s, "d").await;
    drop(tx);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!s.is_processed("g", "d").await?);
    let tx = fresh(&*s, "d").await;
    s.rollback(tx).await?;
    Ok(())
}

#[tokio::test]
async fn memory_store_keeps_the_contract() -> R {
    contract(Arc::new(InMemoryStore::new())).await
}

#[tokio::test]
async fn postgres_store_keeps_the_contract() -> R {
    let db = PostgresDb::fresh().await?;
    let s = PostgresStore::connect(db.url()).await?;
    s.migrate().await?;
    s.migrate().await?; // idempotent
    contract(Arc::new(s)).await
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract() -> R {
    let db = SqliteDb::fresh()?;
    let s = SqliteStore::open(db.url()).await?;
    s.migrate().await?;
    s.migrate().await?;
    contract(Arc::new(s)).await
}

/// Many claimants race for the same keys across connections: exactly one fresh
/// commit per key.
#[tokio::test]
async fn postgres_race_yields_one_winner_per_key() -> R {
    let db = PostgresDb::fresh().await?;
    let s = Arc::new(PostgresStore::connect(db.url()).await?);
    s.migrate().await?;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = 0u32;
            for k in 0..40 {
                let id = format!("k{}", (k + worker) % 40);
                if let Claim::Fresh(tx) = s.claim(key(&id)).await.unwrap() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    s.commit(tx).await.unwrap();
                    won += 1;
                }
            }
            won
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    assert_eq!(total, 40, "each of the 40 keys is won exactly once");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_messages")
        .fetch_one(s.pool())
        .await?;
    assert_eq!(n, 40);
    Ok(())
}

#[tokio::test]
async fn postgres_retention_removes_only_expired_markers() -> R {
    let db = PostgresDb::fresh().await?;
    let s = PostgresStore::connect(db.url()).await?;
    s.migrate().await?;
    for id in ["old1", "old2", "new1"] {
        let tx = fresh(&s, id).await;
        s.commit(tx).await?;
    }
    sqlx::query(
        "UPDATE processed_messages SET processed_at = now() - interval '2 hours' \
         WHERE message_id LIKE 'old%'",
    )
    .execute(s.pool())
    .await?;
    assert_eq!(s.purge_older_than(Duration::from_secs(3600)).await?, 2);
    assert!(!s.is_processed("g", "old1").await?);
    assert!(!s.is_processed("g", "old2").await?);
    assert!(s.is_processed("g", "new1").await?);
    assert_eq!(s.purge_older_than(Duration::from_secs(3600)).await?, 0);
    Ok(())
}

#[tokio::test]
async fn sqlite_retention_removes_only_expired_markers() -> R {
    let db = SqliteDb::fresh()?;
    let s = SqliteStore::open(db.url()).await?;
    s.migrate().await?;
    for id in ["old1", "new1"] {
        let tx = fresh(&s, id).await;
        s.commit(tx).await?;
    }
    sqlx::query(
        "UPDATE processed_messages SET processed_at = processed_at - 7200000 \
         WHERE message_id = 'old1'",
    )
    .execute(s.pool())
    .await?;
    assert_eq!(s.purge_older_than(Duration::from_secs(3600)).await?, 1);
    assert!(!s.is_processed("g", "old1").await?);
    assert!(s.is_processed("g", "new1").await?);
    Ok(())
}

#[tokio::test]
async fn retention_task_purges_on_its_schedule() -> R {
    let s = Arc::new(InMemoryStore::new());
    let tx = fresh(&*s, "a").await;
    s.commit(tx).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let task = weir_idempotency::spawn_retention(
        s.clone(),
        Duration::from_millis(50),
        Duration::from_millis(20),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!s.is_processed("g", "a").await?, "expired marker purged");
    stop.cancel();
    task.await?;
    Ok(())
}

#[tokio::test]
async fn unreachable_postgres_is_reported_as_unavailable() -> R {
    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    drop(l);
    let e = PostgresStore::connect(&format!("postgres://postgres:hunter2@127.0.0.1:{port}/x"))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&port.to_string()), "names the address: {msg}");
    assert!(!msg.contains("hunter2"), "never prints the password: {msg}");
    Ok(())
}

/// Issue 21.20: a pool whose connections are all held by open claims (more
/// messages in flight than connections) used to report `Unavailable`, the same
/// as a database outage. Now it is `Busy`: it still waits in place, under its
/// own class, and says what to change.
#[tokio::test]
async fn an_exhausted_pool_is_busy_not_an_outage() -> R {
    let db = PostgresDb::fresh().await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300))
        .connect(db.url())
        .await?;
    let s = PostgresStore::new(pool);
    s.migrate().await?;
    let held = fresh(&s, "holds-the-only-connection").await;
    let e = match s.claim(key("waits")).await {
        Err(e) => e,
        Ok(_) => panic!("the only connection is held"),
    };
    assert!(!e.is_unavailable(), "not an outage: {e}");
    assert!(
        e.to_string().contains("max_in_flight"),
        "says what to change: {e}"
    );
    let pe = e.into_process_error();
    assert!(pe.is_unavailable(), "still waits in place");
    assert_eq!(pe.class(), "idempotency_store_busy");
    drop(held);
    Ok(())
}
