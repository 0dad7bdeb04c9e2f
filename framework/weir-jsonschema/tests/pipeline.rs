//! JSON Schema through real brokers (mock cluster and Apache Kafka) and
//! Apicurio Registry: keys and values produced with `JsonSchemaSerializer`
//! on two schema versions, consumed into one Rust type, a value that breaks
//! the schema refused before it is sent, and every decoding failure class
//! in the DLQ.
#![allow(missing_docs)]

#[path = "../../weir/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use weir::retry::{RetryTopics, headers};
use weir::{Consumer, Encoder, Message, ProcessError, Producer, Record, processor_fn};
use weir_jsonschema::{JsonSchemaCodec, JsonSchemaSerializer};
use weir_registry::{SchemaRegistry, frame};
use weir_testkit::{BrokerKind, SchemaRegistryFixture, TestRecord};

use common::{R, wait_until};

broker_tests!(json_schema_pipeline_with_evolution_validation_and_classified_dlq);

const CLICK_V1: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","title":"shop.Click","type":"object",
  "properties":{"link":{"type":"string"},"at_ms":{"type":"integer","minimum":0}},
  "required":["link","at_ms"]}"#;
const CLICK_V2: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","title":"shop.Click","type":"object",
  "properties":{"link":{"type":"string"},"at_ms":{"type":"integer","minimum":0},"referrer":{"type":"string"}},
  "required":["link","at_ms"]}"#;
const KEY: &str =
    r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"string","maxLength":64}"#;
const ANYTHING: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object"}"#;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct ClickV1 {
    link: String,
    at_ms: i64,
}
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct ClickV2 {
    link: String,
    at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    referrer: Option<String>,
}

const N: i64 = 30;

async fn json_schema_pipeline_with_evolution_validation_and_classified_dlq(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    let sr = SchemaRegistryFixture::real().await?;
    let registry = SchemaRegistry::builder(sr.url()).build()?;
    let topic = "clicks";
    cluster.create_topic(topic, 2).await?;

    let producer = Producer::new(cluster.bootstrap_servers())?;
    let keys = JsonSchemaSerializer::<String>::new(registry.clone(), KEY)?.for_key();
    let v1 = JsonSchemaSerializer::<ClickV1>::new(registry.clone(), CLICK_V1)?;
    let v2 = JsonSchemaSerializer::<ClickV2>::new(registry.clone(), CLICK_V2)?;
    for i in 0..N {
        let link = format!("l{}", i % 5);
        let rec = Record::to(topic)
            .message_id(format!("good-{i}"))
            .key_with(&keys, &link)
            .await?;
        let rec = if i % 3 == 0 {
            let c = ClickV2 {
                link,
                at_ms: i,
                referrer: Some("ad".into()),
            };
            rec.value_with(&v2, &c).await?
        } else {
            rec.value_with(&v1, &ClickV1 { link, at_ms: i }).await?
        };
        producer.send(rec).await?;
    }
    // A value that breaks the schema is refused before it is sent, and the
    // error names the rule, not the value.
    let bad = ClickV1 {
        link: "secret".into(),
        at_ms: -41,
    };
    let e = v1.encode(topic, &bad).await.unwrap_err();
    assert!(
        e.to_string().contains("/at_ms") && e.to_string().contains("minimum"),
        "{e}"
    );
    assert!(!e.to_string().contains("-41"), "{e}");

    // One of each decoding failure class.
    let click_id = u32::from_be_bytes(
        v1.encode(
            topic,
            &ClickV1 {
                link: "x".into(),
                at_ms: 1,
            },
        )
        .await?[1..5]
            .try_into()?,
    );
    let loose_id = sr.register_typed("loose-value", ANYTHING, "JSON").await?;
    let avro_id = sr.register("avro-value", r#"{"type":"string"}"#).await?;
    let poison: Vec<(&str, Vec<u8>)> = vec![
        (
            "decode_wrong_magic_byte",
            br#"{"link":"json","at_ms":1}"#.to_vec(),
        ),
        ("decode_unknown_schema_id", frame(4_000_000, b"{}").to_vec()),
        ("decode_truncated", vec![0, 0, 0]),
        (
            "decode_invalid_body",
            frame(click_id, br#"{"link":"#).to_vec(),
        ),
        (
            "decode_schema_violation",
            frame(click_id, br#"{"link":"x","at_ms":-3}"#).to_vec(),
        ),
        (
            "decode_type_mismatch",
            frame(loose_id, br#"{"link":5,"at_ms":1}"#).to_vec(),
        ),
        (
            "decode_incompatible_schema",
            frame(avro_id, br#""s""#).to_vec(),
        ),
    ];
    let good_key = keys.encode(topic, &"p".to_string()).await?;
    let recs: Vec<TestRecord> = poison
        .iter()
        .map(|(class, bytes)| {
            TestRecord::keyed(&good_key[..], bytes.clone()).header(weir::MESSAGE_ID_HEADER, *class)
        })
        .collect();
    cluster.produce(topic, recs).await?;

    let seen: Arc<Mutex<Vec<(String, ClickV2)>>> = Arc::default();
    let s = seen.clone();
    let processor = processor_fn(move |m: Message<(String, ClickV2)>| {
        let s = s.clone();
        async move {
            s.lock().push(m.value().clone());
            Ok::<_, ProcessError>(())
        }
    });
    let rt = RetryTopics::tiers([Duration::from_millis(300)]);
    common::pre_create(&cluster, kind, &rt, topic, 2).await?;
    let consumer = Consumer::builder(common::config(&cluster, "json-g", &[topic]))
        .codec((
            JsonSchemaCodec::<String>::new(registry.clone()).for_key(),
            JsonSchemaCodec::<ClickV2>::new(registry.clone()),
        ))
        .retry_topics(rt)
        .build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_until("all good clicks", Duration::from_secs(60), || {
        seen.lock().len() >= N as usize
    })
    .await;
    let mut dlq = Vec::new();
    let start = std::time::Instant::now();
    while dlq.len() < poison.len() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        dlq = cluster.read_to_end("clicks.dlq").await?;
    }
    handle.shutdown();
    let report = run.await??;
    assert!(report.halted.is_empty(), "{report:?}");

    let seen = seen.lock().clone();
    let by_at: HashMap<i64, &(String, ClickV2)> = seen.iter().map(|x| (x.1.at_ms, x)).collect();
    assert_eq!(seen.len(), N as usize, "each click once");
    assert_eq!(by_at.len(), N as usize, "no duplicates");
    for i in 0..N {
        let (k, c) = by_at[&i];
        assert_eq!(k, &format!("l{}", i % 5));
        assert_eq!(&c.link, k);
        let want = (i % 3 == 0).then_some("ad");
        assert_eq!(c.referrer.as_deref(), want, "click {i}");
    }

    assert_eq!(dlq.len(), poison.len(), "every poison message in the DLQ");
    let h = |m: &weir_testkit::ReadMessage, n: &str| {
        m.header(n)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let by_id: BTreeMap<String, &weir_testkit::ReadMessage> = dlq
        .iter()
        .map(|m| (h(m, weir::MESSAGE_ID_HEADER), m))
        .collect();
    for (class, bytes) in &poison {
        let m = by_id
            .get(*class)
            .unwrap_or_else(|| panic!("{class} not in the DLQ"));
        assert_eq!(&h(m, headers::ERROR_CLASS), class);
        assert_eq!(m.payload.as_deref(), Some(&bytes[..]), "bytes kept");
    }
    let committed: i64 = common::committed(&cluster, "json-g", topic)
        .await
        .iter()
        .sum();
    assert_eq!(committed, N + poison.len() as i64, "everything committed");
    Ok(())
}
