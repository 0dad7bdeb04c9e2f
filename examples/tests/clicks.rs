//! The README's main job, run as a user runs it: the `clicks` binary, on the
//! embedded defaults (mock cluster, SQLite) and on Apache Kafka with PostgreSQL.

use std::process::Command;

use weir_testkit::{KafkaCluster, PostgresDb};

fn check(out: std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "clicks failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("output");
    let v: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicate_effects"], 0, "{v}");
    assert_eq!(v["dlq"], v["expected_dlq"], "{v}");
    assert!(
        v["expected_dlq"].as_i64().unwrap() > 0,
        "poison events were sent: {v}"
    );
    assert!(
        v["duplicates_absorbed"].as_u64().unwrap() >= v["duplicates_sent"].as_u64().unwrap(),
        "{v}"
    );
    assert!(
        v["retried"].as_u64().unwrap() > 0,
        "transient failures went through a tier: {v}"
    );
    v
}

#[test]
fn clicks_on_embedded_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_clicks"))
        .args(["--events", "400", "--json"])
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run clicks");
    let v = check(out);
    assert_eq!(v["kafka"], "mock");
    assert_eq!(v["processed"], 392);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_on_kafka_and_postgres() {
    let cluster = KafkaCluster::kafka(1).await.expect("kafka");
    let db = PostgresDb::fresh().await.expect("postgres");
    let (b, url) = (
        cluster.bootstrap_servers().to_string(),
        db.url().to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_clicks"))
            .args(["--events", "400", "--json"])
            .env("KAFKA_BOOTSTRAP_SERVERS", b)
            .env("DATABASE_URL", url)
            .output()
            .expect("run clicks")
    })
    .await
    .unwrap();
    let v = check(out);
    assert_eq!(v["kafka"], "external");
    assert_eq!(v["database"], "postgres");
}
