//! The README's main job, run as a user runs it: the `clicks` binary, on the
//! embedded defaults (mock cluster, SQLite) and on Apache Kafka with
//! PostgreSQL: the default run, and the scenarios that check the article's
//! claims (latency A/B, worker outage, broker outage, spike) with their report.

use std::process::Command;

use weir_testkit::{KafkaCluster, PostgresDb};

/// The two scenario runs take turns: each judges redirect latency during
/// outages and a 5x spike, and two pipelines (one with a Kafka node) on the
/// two cores of a CI machine measured each other (a spike's p99 once went
/// over its bound that way).
static SCENARIOS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// Checks every scenario's claims in the JSON of `clicks --all --json`, and
/// the report it wrote.
fn check_scenarios(out: std::process::Output, report: &std::path::Path) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "clicks --all failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("output")).expect("last line is JSON");
    assert_eq!(v["ok"], true, "{v}");
    let s = &v["scenarios"];
    for name in ["latency_ab", "worker_outage", "broker_outage", "spike"] {
        let x = &s[name];
        assert_eq!(x["lost"], 0, "{name}: {x}");
        assert_eq!(x["duplicate_effects"], 0, "{name}: {x}");
        assert_eq!(x["not_302"], 0, "{name}: every redirect answered 302: {x}");
        assert_eq!(x["drained"], true, "{name}: {x}");
        assert_eq!(x["dlq"], x["expected_dlq"], "{name}: {x}");
        assert!(x["requests"].as_u64().unwrap() > 100, "{name}: {x}");
    }
    for name in ["worker_outage", "broker_outage", "spike"] {
        let x = &s[name];
        assert_eq!(
            x["backlog_rose"], true,
            "{name}: the queue held the work: {x}"
        );
        // Redirects never wait for Kafka or the worker: an outage does not
        // make them slow (they would wait for seconds, or fail, if they did).
        assert!(x["p99_during_ms"].as_f64().unwrap() < 1000.0, "{name}: {x}");
    }
    let broker = &s["broker_outage"];
    assert!(
        broker["outbox_peak"].as_i64().unwrap() > 50,
        "clicks waited in the outbox while the brokers were down: {broker}"
    );
    assert!(
        broker["outbox_empty_after_s"].as_f64().is_some(),
        "the relay caught up: {broker}"
    );
    let ab = &s["latency_ab"];
    let ratio = ab["p99_ratio"].as_f64().unwrap();
    assert!(
        ratio > 0.0 && ratio < 4.0,
        "the outbox write costs a redirect little next to the baseline: {ab}"
    );
    let page = std::fs::read_to_string(report).expect("the report");
    assert!(page.contains("<svg"), "a picture");
    for label in [
        "latency_ab",
        "worker_outage",
        "broker_outage",
        "spike",
        "brokers down",
        "worker down",
    ] {
        assert!(page.contains(label), "{label} in the report");
    }
    assert!(
        !page.contains("src=") && !page.contains("href="),
        "self-contained: nothing to fetch"
    );
    v
}

fn scenario_args(report: &std::path::Path) -> Vec<String> {
    [
        "--all",
        "--duration",
        "6s",
        "--rate",
        "60",
        "--json",
        "--report",
    ]
    .map(String::from)
    .into_iter()
    .chain([report.display().to_string()])
    .collect()
}

#[test]
fn scenarios_on_embedded_defaults() {
    let _turn = SCENARIOS.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("run.html");
    let out = Command::new(env!("CARGO_BIN_EXE_clicks"))
        .args(scenario_args(&report))
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run clicks");
    let v = check_scenarios(out, &report);
    assert_eq!(v["kafka"], "mock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_on_kafka_and_postgres() {
    let _turn = SCENARIOS.lock().await;
    let db = PostgresDb::fresh().await.expect("postgres");
    let url = db.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("run.svg");
    let args = scenario_args(&report);
    let out = tokio::task::spawn_blocking(move || {
        // `--broker kafka`: the binary starts its own Apache Kafka node, so
        // that the broker outage can stop it.
        Command::new(env!("CARGO_BIN_EXE_clicks"))
            .args(args)
            .args(["--broker", "kafka"])
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .env("DATABASE_URL", url)
            .output()
            .expect("run clicks")
    })
    .await
    .unwrap();
    let v = check_scenarios(out, &report);
    assert_eq!(v["kafka"], "kafka");
    assert_eq!(v["database"], "postgres");
}

#[test]
fn a_broker_outage_needs_brokers_it_can_stop() {
    let out = Command::new(env!("CARGO_BIN_EXE_clicks"))
        .args(["--broker-outage", "2s", "--broker", "external"])
        .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run clicks");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--broker mock or --broker kafka"), "{err}");
}
