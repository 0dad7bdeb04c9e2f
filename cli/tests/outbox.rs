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
