//! `weir dlq` end to end on the mock cluster and tansu: poison messages land in
//! the DLQ, `list` shows them with counts per class, `replay` is a dry run
//! unless `--execute`, a replay after the fix is processed, and replaying the
//! same messages twice has one effect (idempotent processor).

#[path = "../../framework/weir/tests/common/mod.rs"]
mod common;
mod run;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use parking_lot::Mutex;
use weir::retry::RetryTopics;
use weir::{Consumer, Message, ProcessError, StringCodec, processor_fn};
use weir_idempotency::{Idempotent, InMemoryStore};
use weir_testkit::{BrokerKind, TestRecord};

use common::{R, wait_until};
use run::weir;

broker_tests!(
    dlq_list_replay_and_idempotent_rereplay,
    cli_errors_have_exit_codes
);

/// `weir dlq list --topic orders.dlq --json`, parsed.
fn list_json(brokers: &str) -> serde_json::Value {
    let out = weir(&[
        "dlq",
        "list",
        "--brokers",
        brokers,
        "--topic",
        "orders.dlq",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

async fn dlq_list_replay_and_idempotent_rereplay(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    let b = cluster.bootstrap_servers().to_string();
    cluster.create_topic("orders", 2).await?;
    let rt = RetryTopics::dlq_only();
    if kind == BrokerKind::Mock {
        cluster.create_topic("orders.dlq", 2).await?;
    }
    cluster
        .produce(
            "orders",
            (0..12).map(|i| {
                TestRecord::keyed(format!("k{i}"), format!("o{i}"))
                    .header(weir::MESSAGE_ID_HEADER, format!("id-{i}"))
            }),
        )
        .await?;
    // Orders 3, 6 and 9 fail until "fixed".
    let fixed = Arc::new(AtomicBool::new(false));
    let effects: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let (f, e) = (fixed.clone(), effects.clone());
    let inner = processor_fn(move |msg: Message<String>| {
        let (f, e) = (f.clone(), e.clone());
        async move {
            let n: u32 = msg.value().trim_start_matches('o').parse().unwrap();
            if n.is_multiple_of(3) && n > 0 && !f.load(SeqCst) {
                return Err(
                    ProcessError::terminal(std::io::Error::other("unknown product"))
                        .with_class("unknown_product"),
                );
            }
            *e.lock().entry(msg.value().clone()).or_default() += 1;
            Ok(())
        }
    });
    let processor = Idempotent::new(inner, InMemoryStore::new(), "shop");
    let stats = processor.stats();
    let consumer = Consumer::builder(common::config(&cluster, "shop", &["orders"]))
        .codec(StringCodec)
        .retry_topics(rt)
        .build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_until("9 good orders", Duration::from_secs(30), || {
        effects.lock().len() >= 9
    })
    .await;
    let mut listed = serde_json::Value::Null;
    for _ in 0..50 {
        listed = list_json(&b);
        if listed["count"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(listed["count"], 3, "{listed}");
    assert_eq!(listed["by_class"]["unknown_product"], 3);
    for m in listed["messages"].as_array().unwrap() {
        assert_eq!(m["reason"], "terminal");
        assert_eq!(m["original_topic"], "orders");
        assert!(m.get("payload").is_none(), "payloads are not listed");
    }
    // The table form names the class and the counts.
    let out = weir(&[
        "dlq",
        "list",
        "--brokers",
        &b,
        "--topic",
        "orders.dlq",
        "--class",
        "unknown_product",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("3 message(s)") && table.contains("unknown_product: 3"),
        "{table}"
    );

    // A consumer that stopped after publishing a DLQ copy and before
    // committing dead-letters that message again: a second copy, same headers.
    let first = cluster.read_to_end("orders.dlq").await?.remove(0);
    let again = TestRecord {
        key: first.key.clone(),
        payload: first.payload.clone(),
        headers: first.headers.clone(),
        partition: Some(first.partition),
    };
    cluster.produce("orders.dlq", [again]).await?;
    let listed = list_json(&b);
    assert_eq!(listed["count"], 4, "{listed}");
    assert_eq!(listed["distinct"], 3, "{listed}");
    let copies: Vec<_> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["duplicate_of"].is_null())
        .collect();
    assert_eq!(copies.len(), 1, "{listed}");
    assert_eq!(
        copies[0]["duplicate_of"],
        format!("orders.dlq/{}@{}", first.partition, first.offset)
    );

    // Dry run by default: nothing is sent.
    let before = cluster.read_to_end("orders").await?.len();
    let out = weir(&[
        "dlq",
        "replay",
        "--brokers",
        &b,
        "--topic",
        "orders.dlq",
        "--json",
    ]);
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        plan["plan"]["orders"], 3,
        "the later copy is not planned: {plan}"
    );
    assert_eq!(plan["duplicates"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        cluster.read_to_end("orders").await?.len(),
        before,
        "a dry run sends nothing"
    );

    // Fix, replay: processed once each.
    fixed.store(true, SeqCst);
    let out = weir(&[
        "dlq",
        "replay",
        "--brokers",
        &b,
        "--topic",
        "orders.dlq",
        "--execute",
        "--json",
        "--rate",
        "100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(rep["sent"], 3, "{rep}");
    assert_eq!(rep["duplicates"].as_array().map(Vec::len), Some(1), "{rep}");
    wait_until("replayed orders processed", Duration::from_secs(30), || {
        effects.lock().len() >= 12
    })
    .await;

    // Replaying again: the ids are kept, so the idempotent processor absorbs them.
    let dup_before = stats.duplicates();
    let out = weir(&[
        "dlq",
        "replay",
        "--brokers",
        &b,
        "--topic",
        "orders.dlq",
        "--execute",
        "--json",
    ]);
    assert!(out.status.success());
    wait_until("second replay absorbed", Duration::from_secs(30), || {
        stats.duplicates() >= dup_before + 3
    })
    .await;
    handle.shutdown();
    let report = run.await??;
    assert!(report.halted.is_empty());
    let effects = effects.lock().clone();
    assert_eq!(effects.len(), 12);
    assert!(
        effects.values().all(|&n| n == 1),
        "one effect each: {effects:?}"
    );
    let replayed = cluster.read_to_end("orders").await?;
    let from: Vec<_> = replayed
        .iter()
        .filter_map(|m| m.header(weir::retry::headers::REPLAYED_FROM))
        .collect();
    assert_eq!(
        from.len(),
        6,
        "each replayed copy names its DLQ coordinates; the duplicate copy was never sent"
    );
    Ok(())
}

async fn cli_errors_have_exit_codes(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    let b = cluster.bootstrap_servers().to_string();
    cluster.create_topic("exists", 1).await?;
    let out = weir(&["dlq", "list", "--brokers", &b, "--topic", "nope.dlq"]);
    assert_eq!(out.status.code(), Some(3), "unknown topic");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.dlq"));

    let out = weir(&[
        "dlq",
        "show",
        "--brokers",
        &b,
        "--topic",
        "exists",
        "--partition",
        "0",
        "--offset",
        "5",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "no such message: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Brokers from WEIR_BROKERS, like the runtime's config: reaches the broker.
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["dlq", "list", "--topic", "nope.dlq"])
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env("WEIR_BROKERS", &b)
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = weir(&["dlq", "list", "--topic", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--brokers"),
        "says how to give brokers"
    );

    let dead = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = dead.local_addr()?.to_string();
    drop(dead);
    let out = weir(&["dlq", "list", "--brokers", &addr, "--topic", "x"]);
    assert_eq!(out.status.code(), Some(4), "unreachable brokers");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&addr),
        "names the address tried"
    );

    let out = weir(&[
        "dlq",
        "list",
        "--brokers",
        &b,
        "--topic",
        "exists",
        "--since",
        "yesterday",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    Ok(())
}
