//! Byte compatibility with Confluent's own serializers: Confluent's Python
//! client (confluent-kafka from PyPI, installed by `scripts/setup`) and Weir
//! on the same Apache Kafka and Apicurio Registry, for Avro, Protobuf and
//! JSON Schema, keys and values, on two schema versions each:
//!
//! - records Python writes are decoded by Weir's codecs (with an older and a
//!   newer reader than some writers);
//! - records Weir writes are decoded by Python's deserializers;
//! - Weir's DLQ and retry-tier copies are read by a plain Python consumer,
//!   which finds the documented headers with the documented values, and the
//!   original bytes.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use apache_avro::Schema;
use serde_json::{Value, json};
use weir::codec::Codec;
use weir::message::RawMessage;
use weir::retry::RetryTopics;
use weir::{Consumer, ConsumerConfig, Message, ProcessError, Producer, Record, processor_fn};
use weir_avro::{AvroCodec, AvroSerializer};
use weir_jsonschema::{JsonSchemaCodec, JsonSchemaSerializer};
use weir_protobuf::{DynamicProtobufCodec, ProtoSchema, ProtobufCodec, ProtobufSerializer};
use weir_registry::SchemaRegistry;
use weir_testkit::{ApicurioRegistry, BrokerKind, KafkaCluster, ReadMessage};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const N: i64 = 12;

const AVRO_V1: &str = r#"{"type":"record","name":"Click","namespace":"shop","fields":[
  {"name":"link","type":"string"},{"name":"at_ms","type":"long"}]}"#;
const AVRO_V2: &str = r#"{"type":"record","name":"Click","namespace":"shop","fields":[
  {"name":"link","type":"string"},{"name":"at_ms","type":"long"},
  {"name":"referrer","type":["null","string"],"default":null}]}"#;
const JSON_V1: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","title":"shop.Click","type":"object",
  "properties":{"link":{"type":"string"},"at_ms":{"type":"integer","minimum":0}},"required":["link","at_ms"]}"#;
const JSON_V2: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","title":"shop.Click","type":"object",
  "properties":{"link":{"type":"string"},"at_ms":{"type":"integer","minimum":0},"referrer":{"type":"string"}},
  "required":["link","at_ms"]}"#;
const JSON_KEY: &str =
    r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"string","maxLength":64}"#;
const MONEY: &str = "syntax = \"proto3\";\npackage shop;\nmessage Money { int64 cents = 1; string currency = 2; }\n";
const PROTO_V1: &str = "syntax = \"proto3\";\npackage shop;\nimport \"shop/money.proto\";\n\
message Other { string x = 1; }\n\
message Click { string link = 1; int64 at_ms = 2; Money price = 3; }\n";
const PROTO_V2: &str = "syntax = \"proto3\";\npackage shop;\nimport \"shop/money.proto\";\n\
message Other { string x = 1; }\n\
message Click { string link = 1; int64 at_ms = 2; Money price = 3; string referrer = 4; }\n";
const PROTO_KEY: &str =
    "syntax = \"proto3\";\npackage shop;\nmessage ClickKey { string link = 1; }\n";

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Click {
    link: String,
    at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    referrer: Option<String>,
}
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct ClickV1 {
    link: String,
    at_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Money {
    #[prost(int64, tag = "1")]
    cents: i64,
    #[prost(string, tag = "2")]
    currency: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoClickV1 {
    #[prost(string, tag = "1")]
    link: String,
    #[prost(int64, tag = "2")]
    at_ms: i64,
    #[prost(message, optional, tag = "3")]
    price: Option<Money>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoClickV2 {
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
impl prost::Name for ProtoClickV1 {
    const NAME: &'static str = "Click";
    const PACKAGE: &'static str = "shop";
}
impl prost::Name for ProtoClickV2 {
    const NAME: &'static str = "Click";
    const PACKAGE: &'static str = "shop";
}
impl prost::Name for ClickKey {
    const NAME: &'static str = "ClickKey";
    const PACKAGE: &'static str = "shop";
}

fn proto(src: &str) -> ProtoSchema {
    ProtoSchema::new("shop/click.proto", src).import("shop/money.proto", MONEY)
}

fn link(i: i64) -> String {
    format!("l{}", i % 5)
}

fn raw(topic: &str, m: &ReadMessage) -> RawMessage {
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

/// Runs the Python script; its stdout as JSON lines.
async fn python(args: &[&str]) -> Result<Vec<Value>, Box<dyn std::error::Error + Send + Sync>> {
    let path = weir_testkit::dist::confluent_kafka_python()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/confluent_compat.py");
    weir_testkit::stage(format!("python {}", args.first().unwrap_or(&"")));
    // Well inside hang_watchdog's 600 s, so that a hung script is an error
    // naming its subcommand.
    let child = tokio::process::Command::new("python3")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .map_err(|_| format!("python {args:?} did not end in 300 s (killed)"))??;
    if !out.status.success() {
        return Err(format!(
            "python {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// Weir writes the three topics Python reads.
async fn weir_writes(cluster: &KafkaCluster, registry: &SchemaRegistry) -> R {
    let producer = Producer::new(cluster.bootstrap_servers())?;
    let avro_key =
        AvroSerializer::<String>::new(registry.clone(), Schema::parse_str(r#""string""#)?)
            .for_key();
    let avro_v1 = AvroSerializer::<ClickV1>::new(registry.clone(), Schema::parse_str(AVRO_V1)?);
    let avro_v2 = AvroSerializer::<Click>::new(registry.clone(), Schema::parse_str(AVRO_V2)?);
    let pkey = ProtobufSerializer::<ClickKey>::new(
        registry.clone(),
        ProtoSchema::new("shop/key.proto", PROTO_KEY),
    )?
    .for_key();
    let pv1 = ProtobufSerializer::<ProtoClickV1>::new(registry.clone(), proto(PROTO_V1))?;
    let pv2 = ProtobufSerializer::<ProtoClickV2>::new(registry.clone(), proto(PROTO_V2))?;
    let jkey = JsonSchemaSerializer::<String>::new(registry.clone(), JSON_KEY)?.for_key();
    let jv1 = JsonSchemaSerializer::<ClickV1>::new(registry.clone(), JSON_V1)?;
    let jv2 = JsonSchemaSerializer::<Click>::new(registry.clone(), JSON_V2)?;
    for i in 0..N {
        let k = link(i);
        let v2 = i % 3 == 0;
        let c1 = ClickV1 {
            link: k.clone(),
            at_ms: i,
        };
        let c2 = Click {
            link: k.clone(),
            at_ms: i,
            referrer: Some("ad".into()),
        };
        let price = Some(Money {
            cents: i * 100,
            currency: "EUR".into(),
        });
        let r = Record::to("weir.avro").key_with(&avro_key, &k).await?;
        let r = if v2 {
            r.value_with(&avro_v2, &c2).await?
        } else {
            r.value_with(&avro_v1, &c1).await?
        };
        producer.send(r).await?;
        let r = Record::to("weir.proto")
            .key_with(&pkey, &ClickKey { link: k.clone() })
            .await?;
        let r = if v2 {
            let m = ProtoClickV2 {
                link: k.clone(),
                at_ms: i,
                price,
                referrer: "ad".into(),
            };
            r.value_with(&pv2, &m).await?
        } else {
            let m = ProtoClickV1 {
                link: k.clone(),
                at_ms: i,
                price,
            };
            r.value_with(&pv1, &m).await?
        };
        producer.send(r).await?;
        let r = Record::to("weir.json").key_with(&jkey, &k).await?;
        let r = if v2 {
            r.value_with(&jv2, &c2).await?
        } else {
            r.value_with(&jv1, &c1).await?
        };
        producer.send(r).await?;
    }
    Ok(())
}

/// Python reads what Weir wrote: Avro with the v1 reader (v2's referrer
/// dropped), Protobuf with the v2 class (v1's referrer empty), JSON as written.
fn check_python_read(lines: &[Value]) {
    let mut by_topic: HashMap<&str, Vec<&Value>> = HashMap::new();
    for l in lines {
        by_topic
            .entry(l["topic"].as_str().unwrap_or("?"))
            .or_default()
            .push(l);
    }
    for topic in ["weir.avro", "weir.proto", "weir.json"] {
        let got = by_topic.get(topic).cloned().unwrap_or_default();
        assert_eq!(got.len(), N as usize, "{topic}: {got:?}");
        let mut ats: Vec<i64> = Vec::new();
        for l in got {
            let v = &l["value"];
            let at = v["at_ms"]
                .as_i64()
                .or_else(|| v["at_ms"].as_str().and_then(|s| s.parse().ok()))
                .unwrap_or_else(|| panic!("{topic}: no at_ms in {l}"));
            ats.push(at);
            assert_eq!(l["key"], json!(link(at)), "{topic}: {l}");
            assert_eq!(v["link"], json!(link(at)), "{topic}: {l}");
            match topic {
                "weir.avro" => assert!(v.get("referrer").is_none(), "v1 reader: {l}"),
                "weir.proto" => {
                    let want = if at % 3 == 0 { "ad" } else { "" };
                    assert_eq!(v["referrer"], json!(want), "{l}");
                    assert_eq!(v["price"]["currency"], json!("EUR"), "{l}");
                }
                _ => {
                    let want = (at % 3 == 0).then_some("ad");
                    assert_eq!(v["referrer"].as_str(), want, "{l}");
                }
            }
        }
        ats.sort();
        assert_eq!(ats, (0..N).collect::<Vec<_>>(), "{topic}");
    }
}

/// Weir reads what Python wrote, with both an older and a newer reader.
async fn check_weir_reads(cluster: &KafkaCluster, registry: &SchemaRegistry) -> R {
    let key = AvroCodec::<String>::new(registry.clone()).for_key();
    let newer = AvroCodec::<Click>::new(registry.clone()).reader_schema_str(AVRO_V2)?;
    let older = AvroCodec::<ClickV1>::new(registry.clone()).reader_schema_str(AVRO_V1)?;
    let avro_v1 = AvroSerializer::<ClickV1>::new(registry.clone(), Schema::parse_str(AVRO_V1)?);
    let avro_v2 = AvroSerializer::<Click>::new(registry.clone(), Schema::parse_str(AVRO_V2)?);
    let msgs = cluster.read_to_end("py.avro").await?;
    assert_eq!(msgs.len(), N as usize);
    for m in &msgs {
        let r = raw("py.avro", m);
        let c = newer.decode(&r).await?;
        assert_eq!(key.decode(&r).await?, link(c.at_ms));
        assert_eq!(c.link, link(c.at_ms));
        let want = (c.at_ms % 3 == 0).then(|| "ad".to_string());
        assert_eq!(c.referrer, want, "avro {}", c.at_ms);
        assert_eq!(older.decode(&r).await?.at_ms, c.at_ms);
        // The Avro body after the schema id is the same bytes Weir writes.
        let ours = if c.at_ms % 3 == 0 {
            weir::Encoder::encode(&avro_v2, "py.avro", &c).await?
        } else {
            weir::Encoder::encode(&avro_v1, "py.avro", &older.decode(&r).await?).await?
        };
        assert_eq!(
            &ours[5..],
            &m.payload.as_deref().unwrap_or_default()[5..],
            "avro {}",
            c.at_ms
        );
    }

    let key = ProtobufCodec::<ClickKey>::new(registry.clone()).for_key();
    let v1 = ProtobufCodec::<ProtoClickV1>::new(registry.clone());
    let v2 = ProtobufCodec::<ProtoClickV2>::new(registry.clone());
    let dynamic = DynamicProtobufCodec::new(registry.clone());
    let enc = (
        ProtobufSerializer::<ProtoClickV1>::new(registry.clone(), proto(PROTO_V1))?,
        ProtobufSerializer::<ProtoClickV2>::new(registry.clone(), proto(PROTO_V2))?,
        ProtobufSerializer::<ClickKey>::new(
            registry.clone(),
            ProtoSchema::new("shop/key.proto", PROTO_KEY),
        )?
        .for_key(),
    );
    let msgs = cluster.read_to_end("py.proto").await?;
    assert_eq!(msgs.len(), N as usize);
    let mut ats = Vec::new();
    for m in &msgs {
        let r = raw("py.proto", m);
        let c = v2.decode(&r).await?;
        ats.push(c.at_ms);
        assert_eq!(key.decode(&r).await?.link, link(c.at_ms));
        assert_eq!(c.link, link(c.at_ms));
        assert_eq!(c.price.as_ref().map(|p| p.cents), Some(c.at_ms * 100));
        let want = if c.at_ms % 3 == 0 { "ad" } else { "" };
        assert_eq!(c.referrer, want, "proto {}", c.at_ms);
        assert_eq!(v1.decode(&r).await?.at_ms, c.at_ms);
        let d = serde_json::to_value(dynamic.decode(&r).await?)?;
        assert_eq!(d["link"], json!(c.link), "{d}");
        // Byte for byte after the schema id: Weir writes the message-index
        // list (`[1]`: Click is the file's second message) and the body
        // exactly as Python did.
        let py = m.payload.as_deref().unwrap_or_default();
        assert_eq!(&py[5..7], &[2, 2], "Python's index list for [1]");
        let ours = if c.at_ms % 3 == 0 {
            weir::Encoder::encode(&enc.1, "py.proto", &c).await?
        } else {
            weir::Encoder::encode(&enc.0, "py.proto", &v1.decode(&r).await?).await?
        };
        assert_eq!(&ours[5..], &py[5..], "proto value {}", c.at_ms);
        let ours = weir::Encoder::encode(&enc.2, "py.proto", &key.decode(&r).await?).await?;
        assert_eq!(
            &ours[5..],
            &m.key.as_deref().unwrap_or_default()[5..],
            "proto key"
        );
    }
    ats.sort();
    assert_eq!(ats, (0..N).collect::<Vec<_>>());

    let key = JsonSchemaCodec::<String>::new(registry.clone()).for_key();
    let value = JsonSchemaCodec::<Click>::new(registry.clone());
    let msgs = cluster.read_to_end("py.json").await?;
    assert_eq!(msgs.len(), N as usize);
    for m in &msgs {
        let r = raw("py.json", m);
        let c = value.decode(&r).await?;
        assert_eq!(key.decode(&r).await?, link(c.at_ms));
        let want = (c.at_ms % 3 == 0).then(|| "ad".to_string());
        assert_eq!(c.referrer, want, "json {}", c.at_ms);
    }
    Ok(())
}

/// Weir sends one undecodable and one failing message to its DLQ and one
/// flaky message through a retry tier; a plain Python consumer reads the
/// copies and their headers.
async fn check_dlq_for_python(cluster: &KafkaCluster, registry: &SchemaRegistry) -> R {
    let topic = "orders";
    let serializer = AvroSerializer::<Click>::new(registry.clone(), Schema::parse_str(AVRO_V2)?);
    let producer = Producer::new(cluster.bootstrap_servers())?;
    let good = Click {
        link: "refused".into(),
        at_ms: 7,
        referrer: None,
    };
    producer
        .send(
            Record::to(topic)
                .key("k-refused")
                .message_id("m-refused")
                .value_with(&serializer, &good)
                .await?,
        )
        .await?;
    producer
        .send(
            Record::to(topic)
                .key("k-garbage")
                .message_id("m-garbage")
                .payload(&b"not avro"[..]),
        )
        .await?;
    let flaky = Click {
        link: "flaky".into(),
        at_ms: 8,
        referrer: None,
    };
    producer
        .send(
            Record::to(topic)
                .key("k-flaky")
                .message_id("m-flaky")
                .value_with(&serializer, &flaky)
                .await?,
        )
        .await?;
    let processor = processor_fn(|m: Message<Click>| async move {
        if m.value().link == "flaky" {
            if m.attempt() == 1 {
                return Err(
                    ProcessError::retryable(std::io::Error::other("pricing 503"))
                        .with_class("http_503"),
                );
            }
            return Ok(());
        }
        Err::<(), _>(
            ProcessError::terminal(std::io::Error::other(format!(
                "order {} refused",
                m.value().at_ms
            )))
            .with_class("order_refused"),
        )
    });
    let config = ConsumerConfig::new(cluster.bootstrap_servers(), "orders-g", &[topic]);
    let consumer = Consumer::builder(config)
        .codec(AvroCodec::<Click>::new(registry.clone()))
        .retry_topics(RetryTopics::tiers([Duration::from_millis(200)]))
        .build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    let start = std::time::Instant::now();
    while (handle.stats().dlq_published() < 2 || handle.stats().retry_published() < 1)
        && start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    handle.shutdown();
    let report = run.await??;
    assert!(report.halted.is_empty(), "{report:?}");

    let lines = python(&["dlq", cluster.bootstrap_servers(), "orders.dlq", "2"]).await?;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let by_id: HashMap<String, &Value> = lines
        .iter()
        .map(|l| {
            (
                l["headers"]["weir-message-id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                l,
            )
        })
        .collect();
    let refused = by_id["m-refused"];
    let garbage = by_id["m-garbage"];
    for (l, class, key) in [
        (refused, "order_refused", "k-refused"),
        (garbage, "decode_wrong_magic_byte", "k-garbage"),
    ] {
        let h = &l["headers"];
        assert_eq!(h["weir-error-class"], json!(class), "{l}");
        assert_eq!(h["weir-dlq-reason"], json!("terminal"), "{l}");
        assert_eq!(h["weir-original-topic"], json!(topic), "{l}");
        assert_eq!(h["weir-failed-group"], json!("orders-g"), "{l}");
        assert_eq!(h["weir-attempt"], json!("1"), "{l}");
        for epoch_ms in [
            "weir-dlq-at-ms",
            "weir-first-failure-ms",
            "weir-original-timestamp",
        ] {
            let v: i64 = h[epoch_ms]
                .as_str()
                .unwrap_or("x")
                .parse()
                .unwrap_or_else(|_| panic!("{epoch_ms} in {l}"));
            assert!(v > 1_600_000_000_000, "{epoch_ms} is epoch ms: {l}");
        }
        let _: i32 = h["weir-original-partition"]
            .as_str()
            .unwrap_or("x")
            .parse()?;
        let _: i64 = h["weir-original-offset"].as_str().unwrap_or("x").parse()?;
        assert!(h["weir-error-message"].is_string(), "{l}");
        assert_eq!(l["key"], json!(hex(key.as_bytes())), "key kept: {l}");
    }
    assert_eq!(garbage["payload"], json!(hex(b"not avro")), "bytes kept");
    let refused_bytes = weir::Encoder::encode(&serializer, topic, &good).await?;
    assert_eq!(refused["payload"], json!(hex(&refused_bytes)), "bytes kept");
    // The retry tier's copy, read by the same plain consumer.
    let lines = python(&[
        "dlq",
        cluster.bootstrap_servers(),
        "orders.retry.200ms",
        "1",
    ])
    .await?;
    let l = &lines[0];
    let h = &l["headers"];
    assert_eq!(h["weir-message-id"], json!("m-flaky"), "{l}");
    assert_eq!(h["weir-attempt"], json!("2"), "{l}");
    assert_eq!(h["weir-error-class"], json!("http_503"), "{l}");
    assert_eq!(h["weir-original-topic"], json!(topic), "{l}");
    assert_eq!(h["weir-for-group"], json!("orders-g"), "{l}");
    let due: i64 = h["weir-due-ms"].as_str().unwrap_or("x").parse()?;
    let first: i64 = h["weir-first-failure-ms"].as_str().unwrap_or("x").parse()?;
    assert!(due >= first + 200, "due one tier after the failure: {l}");
    let flaky_bytes = weir::Encoder::encode(&serializer, topic, &flaky).await?;
    assert_eq!(l["payload"], json!(hex(&flaky_bytes)), "bytes kept");
    // The error message names the failure, never the payload.
    let msg = refused["headers"]["weir-error-message"]
        .as_str()
        .unwrap_or("");
    assert!(
        msg.contains("order 7 refused") && !msg.contains("refused\""),
        "{msg}"
    );
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_python_client_and_weir_read_each_others_records() -> R {
    weir_testkit::init_test_logging();
    weir_testkit::stage("starting Apache Kafka and Apicurio Registry");
    let (cluster, sr) = tokio::try_join!(
        KafkaCluster::start(BrokerKind::Kafka),
        ApicurioRegistry::start()
    )?;
    let url = sr.url();
    let registry = SchemaRegistry::builder(&url).build()?;
    for t in [
        "weir.avro",
        "weir.proto",
        "weir.json",
        "py.avro",
        "py.proto",
        "py.json",
        "orders",
    ] {
        weir_testkit::stage(format!("creating topic {t}"));
        cluster.create_topic(t, 2).await?;
    }
    // The .proto files, compiled, for Python's message classes.
    let dir = tempfile::tempdir()?;
    for (name, schema) in [
        ("v1.bin", proto(PROTO_V1)),
        ("v2.bin", proto(PROTO_V2)),
        ("key.bin", ProtoSchema::new("shop/key.proto", PROTO_KEY)),
    ] {
        std::fs::write(dir.path().join(name), schema.compile()?.encode_to_vec())?;
    }
    let descriptors = dir.path().to_str().ok_or("temp dir is not UTF-8")?;
    let n = N.to_string();

    weir_testkit::stage("Weir writes");
    weir_writes(&cluster, &registry).await?;
    let lines = python(&[
        "consume",
        cluster.bootstrap_servers(),
        &url,
        descriptors,
        &n,
    ])
    .await?;
    check_python_read(&lines);

    python(&[
        "produce",
        cluster.bootstrap_servers(),
        &url,
        descriptors,
        &n,
    ])
    .await?;
    weir_testkit::stage("Weir reads what Python wrote");
    check_weir_reads(&cluster, &registry).await?;
    weir_testkit::stage("Weir's DLQ and retry copies");

    check_dlq_for_python(&cluster, &registry).await?;
    Ok(())
}
