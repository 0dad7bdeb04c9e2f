//! Snapshot tests of the CLI's help texts and of its table and JSON output
//! (`insta`; review changes with `cargo insta review`). Values that change
//! between runs (broker ports, times, ages) are filtered out.

#[path = "../../framework/weir/tests/common/mod.rs"]
mod common;

use std::process::Command;

use weir::retry::headers;
use weir_testkit::{KafkaCluster, TestRecord};

fn weir(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env("COLUMNS", "100")
        .output()
        .expect("running weir");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.stderr.is_empty() {
        s.push_str("--- stderr ---\n");
        s.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    s
}

#[test]
fn help_texts() {
    for args in [
        vec!["--help"],
        vec!["dlq", "--help"],
        vec!["dlq", "list", "--help"],
        vec!["dlq", "show", "--help"],
        vec!["dlq", "replay", "--help"],
        vec!["outbox", "relay", "--help"],
        vec!["groups", "list", "--help"],
        vec!["groups", "describe", "--help"],
        vec!["offsets", "reset", "--help"],
        vec!["replay", "--help"],
        vec!["inspect", "--help"],
        vec!["console", "--help"],
    ] {
        let name = format!("help_{}", args[..args.len() - 1].join("_"));
        let name = if name == "help_" {
            "help_weir".to_string()
        } else {
            name
        };
        insta::assert_snapshot!(name, weir(&args));
    }
}

/// A DLQ with fixed failure headers, listed as a table and as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_table_and_json() -> common::R {
    common::init();
    let cluster = KafkaCluster::mock(1)?;
    cluster.create_topic("orders.dlq", 1).await?;
    let rec = |i: u32, class: &str, reason: &str| {
        TestRecord::keyed(format!("customer-{i}"), format!("secret payload {i}"))
            .header(weir::MESSAGE_ID_HEADER, format!("id-{i}"))
            .header(headers::ORIGINAL_TOPIC, "orders")
            .header(headers::ORIGINAL_PARTITION, "0")
            .header(headers::ORIGINAL_OFFSET, (i * 10).to_string())
            .header(
                headers::ATTEMPT,
                if reason == "terminal" { "1" } else { "4" },
            )
            .header(headers::ERROR_CLASS, class)
            .header(headers::ERROR_MESSAGE, format!("{class} on order {i}"))
            .header(headers::FIRST_FAILURE_MS, "1763800000000")
            .header(headers::DLQ_REASON, reason)
            .header(headers::FAILED_GROUP, "billing")
            .header(headers::DLQ_AT_MS, "1763800060000")
    };
    cluster
        .produce(
            "orders.dlq",
            vec![
                rec(1, "invalid_currency", "terminal"),
                rec(2, "http_503", "retries_exhausted"),
                rec(3, "invalid_currency", "terminal"),
            ],
        )
        .await?;
    let b = cluster.bootstrap_servers().to_string();
    let filters = vec![
        (r"127\.0\.0\.1:\d+", "[brokers]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[time]"),
        (r#""timestamp_ms": \d+"#, r#""timestamp_ms": [ms]"#),
        (r#""age_s": \d+"#, r#""age_s": [age]"#),
    ];
    insta::with_settings!({ filters => filters.clone() }, {
        insta::assert_snapshot!("dlq_list_table", weir(&["dlq", "list", "--brokers", &b, "--topic", "orders.dlq"]));
        insta::assert_snapshot!("dlq_list_json", weir(&["dlq", "list", "--brokers", &b, "--topic", "orders.dlq", "--json"]));
        insta::assert_snapshot!("dlq_list_class_filter", weir(&["dlq", "list", "--brokers", &b, "--topic", "orders.dlq", "--class", "http_503"]));
        insta::assert_snapshot!("dlq_replay_dry_run", weir(&["dlq", "replay", "--brokers", &b, "--topic", "orders.dlq"]));
    });
    Ok(())
}
