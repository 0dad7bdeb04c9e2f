//! `weir dlq` reads other frameworks' DLQs (mock cluster and Apache Kafka):
//! records carrying the documented headers of Spring Kafka, Karafka,
//! Watermill and Sentry Arroyo are listed with their fields mapped to Weir's,
//! say what their format lacks, and replay to their original topics with
//! their failure headers removed.

#[path = "../../framework/weir/tests/common/mod.rs"]
mod common;
mod run;

use weir_testkit::{BrokerKind, TestRecord};

use common::R;
use run::{ok, weir};

broker_tests!(other_frameworks_dlqs_are_listed_and_replayed);

/// One copy per framework, headers as each writes them.
fn legacy_copies() -> Vec<TestRecord> {
    vec![
        TestRecord::keyed("s", "spring-payload")
            .header("kafka_dlt-original-topic", "orders")
            .header("kafka_dlt-original-partition", 1i32.to_be_bytes())
            .header("kafka_dlt-original-offset", 41i64.to_be_bytes())
            .header(
                "kafka_dlt-original-timestamp",
                1_700_000_000_000i64.to_be_bytes(),
            )
            .header("kafka_dlt-original-consumer-group", "billing-spring")
            .header(
                "kafka_dlt-exception-fqcn",
                "org.springframework.kafka.listener.ListenerExecutionFailedException",
            )
            .header(
                "kafka_dlt-exception-message",
                "Listener failed; amount missing",
            )
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        TestRecord::keyed("k", "karafka-payload")
            .header("source_topic", "orders")
            .header("source_partition", "0")
            .header("source_offset", "7")
            .header("source_consumer_group", "billing-karafka")
            .header("source_attempts", "3"),
        TestRecord::keyed("w", "watermill-payload")
            .header("reason_poisoned", "cannot decode payment")
            .header("topic_poisoned", "orders")
            .header("handler_poisoned", "payments_handler")
            .header("subscriber_poisoned", "kafka")
            .header(
                "_watermill_message_uuid",
                "4b0d0b8e-1f7e-4a57-9b1e-7e0c5a3f2d11",
            ),
        TestRecord::keyed("a", "arroyo-payload")
            .header("original_partition", "0")
            .header("original_offset", "99"),
    ]
}

async fn other_frameworks_dlqs_are_listed_and_replayed(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    let b = cluster.bootstrap_servers().to_string();
    cluster.create_topic("orders", 2).await?;
    cluster.create_topic("orders.retry-here", 1).await?;
    cluster.create_topic("legacy.dlq", 1).await?;
    cluster.produce("legacy.dlq", legacy_copies()).await?;

    let v: serde_json::Value = serde_json::from_str(&ok(weir(&[
        "dlq",
        "list",
        "--brokers",
        &b,
        "--topic",
        "legacy.dlq",
        "--json",
    ])))?;
    let m = v["messages"].as_array().expect("messages");
    assert_eq!(m.len(), 4);
    let spring = &m[0];
    assert_eq!(spring["format"], "spring_kafka");
    assert_eq!(spring["original_topic"], "orders");
    assert_eq!(spring["original_partition"], 1);
    assert_eq!(spring["original_offset"], 41);
    assert_eq!(spring["failed_group"], "billing-spring");
    assert_eq!(
        spring["error_class"],
        "org.springframework.kafka.listener.ListenerExecutionFailedException"
    );
    assert_eq!(spring["error_message"], "Listener failed; amount missing");
    assert_eq!(spring["lacks"], serde_json::json!(["reason", "dlq_at_ms"]));
    let karafka = &m[1];
    assert_eq!(karafka["format"], "karafka");
    assert_eq!(
        (
            karafka["original_topic"].as_str(),
            karafka["original_partition"].as_i64(),
            karafka["original_offset"].as_i64(),
            karafka["attempts"].as_i64()
        ),
        (Some("orders"), Some(0), Some(7), Some(3))
    );
    assert_eq!(karafka["failed_group"], "billing-karafka");
    let watermill = &m[2];
    assert_eq!(watermill["format"], "watermill");
    assert_eq!(watermill["original_topic"], "orders");
    assert_eq!(watermill["error_message"], "cannot decode payment");
    assert_eq!(
        watermill["message_id"],
        "4b0d0b8e-1f7e-4a57-9b1e-7e0c5a3f2d11"
    );
    assert!(
        watermill["lacks"]
            .as_array()
            .unwrap()
            .contains(&"original_offset".into())
    );
    let arroyo = &m[3];
    assert_eq!(arroyo["format"], "arroyo");
    assert_eq!(arroyo["original_offset"], 99);
    assert!(arroyo["original_topic"].is_null());
    assert!(
        arroyo["lacks"]
            .as_array()
            .unwrap()
            .contains(&"original_topic".into())
    );

    let table = ok(weir(&[
        "dlq",
        "list",
        "--brokers",
        &b,
        "--topic",
        "legacy.dlq",
    ]));
    assert!(table.contains("orders/1@41"), "{table}");
    assert!(
        table.contains("orders/?@?"),
        "Watermill has no coordinates: {table}"
    );
    assert!(table.contains("?/0@99"), "Arroyo has no topic: {table}");
    assert!(
        table.contains("1 written by Spring Kafka: its headers do not say reason, dlq_at_ms"),
        "{table}"
    );
    let show = ok(weir(&[
        "dlq",
        "show",
        "--brokers",
        &b,
        "--topic",
        "legacy.dlq",
        "--partition",
        "0",
        "--offset",
        "1",
    ]));
    assert!(show.contains("\"karafka\""), "{show}");

    // Replay: three go back to `orders`; Arroyo's has no topic and needs --to.
    let dry: serde_json::Value = serde_json::from_str(&ok(weir(&[
        "dlq",
        "replay",
        "--brokers",
        &b,
        "--topic",
        "legacy.dlq",
        "--json",
    ])))?;
    assert_eq!(dry["plan"]["orders"], 3);
    assert_eq!(dry["no_destination"].as_array().map(Vec::len), Some(1));
    let done: serde_json::Value = serde_json::from_str(&ok(weir(&[
        "dlq",
        "replay",
        "--brokers",
        &b,
        "--topic",
        "legacy.dlq",
        "--execute",
        "--json",
    ])))?;
    assert_eq!(done["sent"], 3);
    let back = cluster.read_to_end("orders").await?;
    assert_eq!(back.len(), 3);
    for r in &back {
        for h in &r.headers {
            let k = h.0.as_str();
            assert!(
                !(k.starts_with("kafka_dlt-")
                    || k.starts_with("source_")
                    || k.ends_with("_poisoned")),
                "failure header {k} replayed"
            );
            assert_ne!(
                k,
                weir::retry::headers::FOR_GROUP,
                "another framework's group is no Weir group"
            );
        }
        assert!(r.header(weir::retry::headers::REPLAYED_FROM).is_some());
    }
    let spring_back = back
        .iter()
        .find(|r| r.payload.as_deref() == Some(&b"spring-payload"[..]))
        .expect("the Spring copy");
    assert_eq!(spring_back.partition, 1, "back to its original partition");
    assert!(
        spring_back.header("traceparent").is_some(),
        "other headers kept"
    );
    let watermill_back = back
        .iter()
        .find(|r| r.payload.as_deref() == Some(&b"watermill-payload"[..]))
        .expect("the Watermill copy");
    assert_eq!(
        watermill_back.header(weir::MESSAGE_ID_HEADER),
        Some(&b"4b0d0b8e-1f7e-4a57-9b1e-7e0c5a3f2d11"[..]),
        "its UUID becomes the message ID an idempotent processor keys on"
    );
    // Arroyo's copy, to a topic given.
    let sent: serde_json::Value = serde_json::from_str(&ok(weir(&[
        "dlq",
        "replay",
        "--brokers",
        &b,
        "--topic",
        "legacy.dlq",
        "--key",
        "a",
        "--to",
        "orders.retry-here",
        "--execute",
        "--json",
    ])))?;
    assert_eq!(sent["sent"], 1);
    let arroyo_back = cluster.read_to_end("orders.retry-here").await?;
    assert_eq!(arroyo_back.len(), 1);
    assert_eq!(
        arroyo_back[0].payload.as_deref(),
        Some(&b"arroyo-payload"[..])
    );
    assert!(arroyo_back[0].header("original_offset").is_none());
    Ok(())
}
