//! Protobuf through real brokers (mock cluster and Apache Kafka) and Apicurio
//! Registry: keys and values produced with `ProtobufSerializer` (an import
//! registered as a reference, the message second in its file, two schema
//! versions), consumed with the older reader, decoded with the newer one and
//! the dynamic codec, and every decoding failure class in the DLQ.
#![allow(missing_docs)]

#[path = "../../weir/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use weir::Encoder;
use weir::codec::Codec;
use weir::message::RawMessage;
use weir::retry::{RetryTopics, headers};
use weir::{Consumer, Message, ProcessError, Producer, Record, processor_fn};
use weir_protobuf::prost_reflect::ReflectMessage;
use weir_protobuf::{DynamicProtobufCodec, ProtoSchema, ProtobufCodec, ProtobufSerializer};
use weir_registry::{SchemaRegistry, frame};
use weir_testkit::{BrokerKind, SchemaRegistryFixture, TestRecord};

use common::{R, wait_until};

broker_tests!(protobuf_pipeline_with_references_evolution_and_classified_dlq);

const MONEY: &str = r#"syntax = "proto3";
package shop;
message Money { int64 cents = 1; string currency = 2; }
"#;
const CLICK_V1: &str = r#"syntax = "proto3";
package shop;
import "shop/money.proto";
message Other { string x = 1; }
message Click {
  string link = 1;
  int64 at_ms = 2;
  Money price = 3;
  message Meta { string source = 1; }
}
"#;
const CLICK_V2: &str = r#"syntax = "proto3";
package shop;
import "shop/money.proto";
message Other { string x = 1; }
message Click {
  string link = 1;
  int64 at_ms = 2;
  Money price = 3;
  message Meta { string source = 1; }
  string referrer = 4;
}
"#;
const KEY: &str = r#"syntax = "proto3";
package shop;
message ClickKey { string link = 1; }
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct Money {
    #[prost(int64, tag = "1")]
    cents: i64,
    #[prost(string, tag = "2")]
    currency: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct ClickV1 {
    #[prost(string, tag = "1")]
    link: String,
    #[prost(int64, tag = "2")]
    at_ms: i64,
    #[prost(message, optional, tag = "3")]
    price: Option<Money>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct ClickV2 {
    #[prost(string, tag = "1")]
    link: String,
    #[prost(int64, tag = "2")]
    at_ms: i64,
    #[prost(message, optional, tag = "3")]
    price: Option<Money>,
    #[prost(string, tag = "4")]
    referrer: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct ClickKey {
    #[prost(string, tag = "1")]
    link: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Other {
    #[prost(string, tag = "1")]
    x: String,
}
macro_rules! named {
    ($t:ty, $n:literal) => {
        impl prost::Name for $t {
            const NAME: &'static str = $n;
            const PACKAGE: &'static str = "shop";
        }
    };
}
named!(ClickV1, "Click");
named!(ClickV2, "Click");
named!(ClickKey, "ClickKey");
named!(Other, "Other");

fn click_schema(src: &str) -> ProtoSchema {
    ProtoSchema::new("shop/click.proto", src).import("shop/money.proto", MONEY)
}

fn raw(topic: &str, m: &weir_testkit::ReadMessage) -> RawMessage {
    RawMessage {
        topic: topic.into(),
        partition: m.partition,
        offset: m.offset,
        timestamp_ms: None,
        key: m.key.clone().map(Into::into),
        payload: m.payload.clone().map(Into::into),
        headers: Default::default(),
    }
}

const N: i64 = 30;

/// A client with empty caches.
fn fresh(sr: &SchemaRegistryFixture) -> Result<SchemaRegistry, weir_registry::RegistryError> {
    SchemaRegistry::builder(sr.url()).build()
}

async fn protobuf_pipeline_with_references_evolution_and_classified_dlq(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    let sr = SchemaRegistryFixture::real().await?;
    let registry = SchemaRegistry::builder(sr.url()).build()?;
    let topic = "clicks";
    cluster.create_topic(topic, 2).await?;

    let producer = Producer::new(cluster.bootstrap_servers())?;
    let keys = ProtobufSerializer::<ClickKey>::new(
        registry.clone(),
        ProtoSchema::new("shop/key.proto", KEY),
    )?
    .for_key();
    let v1 = ProtobufSerializer::<ClickV1>::new(registry.clone(), click_schema(CLICK_V1))?;
    let v2 = ProtobufSerializer::<ClickV2>::new(registry.clone(), click_schema(CLICK_V2))?;
    for i in 0..N {
        let link = format!("l{}", i % 5);
        let price = Some(Money {
            cents: i * 100,
            currency: "EUR".into(),
        });
        let rec = Record::to(topic)
            .message_id(format!("good-{i}"))
            .key_with(&keys, &ClickKey { link: link.clone() })
            .await?;
        let rec = if i % 3 == 0 {
            let c = ClickV2 {
                link,
                at_ms: i,
                price,
                referrer: "ad".into(),
            };
            rec.value_with(&v2, &c).await?
        } else {
            rec.value_with(
                &v1,
                &ClickV1 {
                    link,
                    at_ms: i,
                    price,
                },
            )
            .await?
        };
        producer.send(rec).await?;
    }
    // The import is registered as its own subject, referenced by the file.
    let subjects = sr.subjects().await?;
    for s in ["shop/money.proto", "clicks-value", "clicks-key"] {
        assert!(subjects.iter().any(|x| x == s), "{s} in {subjects:?}");
    }
    // Lookup only (schemas registered by a pipeline): the registered file
    // and its import are found and give the same id; an unregistered one is
    // refused with what to do.
    let sample = ClickV1 {
        link: "x".into(),
        at_ms: 1,
        price: None,
    };
    let registered = v1.encode(topic, &sample).await?;
    let lookup = ProtobufSerializer::<ClickV1>::new(fresh(&sr)?, click_schema(CLICK_V1))?
        .auto_register(false);
    assert_eq!(lookup.encode(topic, &sample).await?, registered);
    let e = lookup.encode("nowhere", &sample).await.unwrap_err();
    assert!(e.to_string().contains("auto_register"), "{e}");
    // The record-name strategy registers under the message's full name.
    ProtobufSerializer::<ClickV1>::new(registry.clone(), click_schema(CLICK_V1))?
        .subject_name_strategy(weir_registry::SubjectNameStrategy::RecordName)
        .encode(topic, &sample)
        .await?;
    assert!(sr.subjects().await?.iter().any(|x| x == "shop.Click"));

    // One of each decoding failure class.
    let other = ProtobufSerializer::<Other>::new(registry.clone(), click_schema(CLICK_V1))?;
    let other_bytes = other.encode("elsewhere", &Other { x: "o".into() }).await?;
    let click_id = u32::from_be_bytes(other_bytes[1..5].try_into()?);
    let json_id = sr
        .register_typed(
            "not-proto-value",
            r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object"}"#,
            "JSON",
        )
        .await?;
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("decode_wrong_magic_byte", br#"{"link":"json"}"#.to_vec()),
        (
            "decode_unknown_schema_id",
            frame(4_000_000, &[0, 0x0a]).to_vec(),
        ),
        ("decode_truncated", frame(click_id, &[4, 2]).to_vec()),
        (
            "decode_unknown_message_index",
            frame(click_id, &[2, 14, 0x0a, 1, b'x']).to_vec(),
        ),
        ("decode_type_mismatch", other_bytes.to_vec()),
        (
            "decode_invalid_body",
            frame(click_id, &[2, 2, 0x0a, 0x7f, b'x']).to_vec(),
        ),
        (
            "decode_incompatible_schema",
            frame(json_id, &[0, 0x0a, 0]).to_vec(),
        ),
    ];
    let good_key = keys.encode(topic, &ClickKey { link: "p".into() }).await?;
    let recs: Vec<TestRecord> = poison
        .iter()
        .map(|(class, bytes)| {
            TestRecord::keyed(&good_key[..], bytes.clone()).header(weir::MESSAGE_ID_HEADER, *class)
        })
        .collect();
    cluster.produce(topic, recs).await?;

    // The consumer reads with the older schema: v2's referrer is skipped.
    let seen: Arc<Mutex<Vec<(ClickKey, ClickV1)>>> = Arc::default();
    let s = seen.clone();
    let processor = processor_fn(move |m: Message<(ClickKey, ClickV1)>| {
        let s = s.clone();
        async move {
            s.lock().push(m.value().clone());
            Ok::<_, ProcessError>(())
        }
    });
    let rt = RetryTopics::tiers([Duration::from_millis(300)]);
    common::pre_create(&cluster, kind, &rt, topic, 2).await?;
    let consumer = Consumer::builder(common::config(&cluster, "proto-g", &[topic]))
        .codec((
            ProtobufCodec::<ClickKey>::new(registry.clone()).for_key(),
            ProtobufCodec::<ClickV1>::new(registry.clone()),
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
    let by_at: HashMap<i64, &(ClickKey, ClickV1)> = seen.iter().map(|x| (x.1.at_ms, x)).collect();
    assert_eq!(seen.len(), N as usize, "each click once");
    assert_eq!(by_at.len(), N as usize, "no duplicates");
    for i in 0..N {
        let (k, c) = by_at[&i];
        assert_eq!(k.link, format!("l{}", i % 5));
        assert_eq!(c.link, k.link);
        assert_eq!(
            c.price.as_ref().map(|p| (p.cents, p.currency.as_str())),
            Some((i * 100, "EUR"))
        );
    }

    // The newer reader on the same bytes: v1 data gets the default referrer.
    let all = cluster.read_to_end(topic).await?;
    let newer = ProtobufCodec::<ClickV2>::new(registry.clone());
    let dynamic = DynamicProtobufCodec::new(registry.clone());
    let mut decoded = 0;
    for m in &all {
        let id = m
            .header(weir::MESSAGE_ID_HEADER)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if !id.as_deref().unwrap_or("").starts_with("good-") {
            continue;
        }
        let r = raw(topic, m);
        let c = newer.decode(&r).await?;
        let want = if c.at_ms % 3 == 0 { "ad" } else { "" };
        assert_eq!(c.referrer, want, "click {}", c.at_ms);
        let d = dynamic.decode(&r).await?;
        assert_eq!(d.descriptor().full_name(), "shop.Click");
        let json = serde_json::to_value(&d)?;
        assert_eq!(json["link"], c.link.as_str(), "{json}");
        assert_eq!(json["price"]["currency"], "EUR", "{json}");
        decoded += 1;
    }
    assert_eq!(decoded, N);

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
        assert_eq!(h(m, headers::DLQ_REASON), "terminal");
        assert_eq!(m.payload.as_deref(), Some(&bytes[..]), "bytes kept");
    }
    let committed: i64 = common::committed(&cluster, "proto-g", topic)
        .await
        .iter()
        .sum();
    assert_eq!(committed, N + poison.len() as i64, "everything committed");
    Ok(())
}
