//! `weir dlq show --payload --schema-registry URL` renders Avro, Protobuf
//! and JSON Schema keys and payloads as JSON (Apache Kafka and Apicurio
//! Registry), shows why bytes that are not a registry payload cannot be
//! rendered, and shows nothing of the payload without `--payload`.
#![allow(missing_docs)]

mod run;

use serde_json::{Value, json};
use weir::{Encoder, Producer, Record};
use weir_avro::{AvroSerializer, apache_avro::Schema};
use weir_jsonschema::JsonSchemaSerializer;
use weir_protobuf::{ProtoSchema, ProtobufSerializer};
use weir_registry::SchemaRegistry;
use weir_testkit::{ApicurioRegistry, BrokerKind, KafkaCluster};

use run::{ok, weir};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[derive(serde::Serialize)]
struct Click {
    link: String,
    at_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Order {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(int64, tag = "2")]
    cents: i64,
}
impl prost::Name for Order {
    const NAME: &'static str = "Order";
    const PACKAGE: &'static str = "shop";
}

const AVRO: &str = r#"{"type":"record","name":"Click","namespace":"shop","fields":[
  {"name":"link","type":"string"},{"name":"at_ms","type":"long"}]}"#;
const PROTO: &str =
    "syntax = \"proto3\";\npackage shop;\nmessage Order { string id = 1; int64 cents = 2; }\n";
const JSON: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object",
  "properties":{"link":{"type":"string"}},"required":["link"]}"#;

fn show(b: &str, url: &str, offset: i64, payload: bool) -> Value {
    let offset = offset.to_string();
    let mut args = vec![
        "dlq",
        "show",
        "--brokers",
        b,
        "--topic",
        "mixed.dlq",
        "--partition",
        "0",
        "--offset",
        &offset,
        "--json",
        "--schema-registry",
        url,
    ];
    if payload {
        args.push("--payload");
    }
    serde_json::from_str(&ok(weir(&args))).expect("JSON from dlq show")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_show_renders_registry_payloads_as_json() -> R {
    weir_testkit::init_test_logging();
    let (cluster, sr) = tokio::try_join!(
        KafkaCluster::start(BrokerKind::Kafka),
        ApicurioRegistry::start()
    )?;
    let url = sr.url();
    let b = cluster.bootstrap_servers().to_string();
    cluster.create_topic("mixed.dlq", 1).await?;
    let registry = SchemaRegistry::builder(&url).build()?;
    let avro = AvroSerializer::<Click>::new(registry.clone(), Schema::parse_str(AVRO)?);
    let avro_key =
        AvroSerializer::<String>::new(registry.clone(), Schema::parse_str(r#""string""#)?)
            .for_key();
    let proto = ProtobufSerializer::<Order>::new(
        registry.clone(),
        ProtoSchema::new("shop/order.proto", PROTO),
    )?;
    let js = JsonSchemaSerializer::<Value>::new(registry.clone(), JSON)?.validate(false);
    // A DLQ holds copies from several source topics: each payload's
    // subject is its source topic's (one format per subject).
    let t = "mixed.dlq";
    let producer = Producer::new(&b)?;
    let click = Click {
        link: "l1".into(),
        at_ms: 5,
    };
    producer
        .send(
            Record::to(t)
                .key(avro_key.encode("clicks", &"l1".to_string()).await?)
                .payload(avro.encode("clicks", &click).await?),
        )
        .await?;
    let order = Order {
        id: "o-9".into(),
        cents: 1250,
    };
    producer
        .send(
            Record::to(t)
                .key("o-9")
                .payload(proto.encode("orders", &order).await?),
        )
        .await?;
    // Breaks its schema (no `link`): shown as written all the same.
    producer
        .send(Record::to(t).payload(js.encode("visits", &json!({"other": 1})).await?))
        .await?;
    producer
        .send(Record::to(t).payload(&b"plain text"[..]))
        .await?;

    let v = show(&b, &url, 0, true);
    assert_eq!(v["payload_decoded"]["format"], "AVRO", "{v}");
    assert_eq!(
        v["payload_decoded"]["value"],
        json!({"link": "l1", "at_ms": 5}),
        "{v}"
    );
    assert_eq!(v["key_decoded"]["value"], json!("l1"), "{v}");

    let v = show(&b, &url, 1, true);
    assert_eq!(v["payload_decoded"]["format"], "PROTOBUF", "{v}");
    assert_eq!(
        v["payload_decoded"]["value"],
        json!({"id": "o-9", "cents": "1250"}),
        "{v}"
    );
    assert_eq!(
        v["key_decoded"]["error_class"], "decode_wrong_magic_byte",
        "a plain key says why it is not rendered: {v}"
    );

    let v = show(&b, &url, 2, true);
    assert_eq!(v["payload_decoded"]["format"], "JSON", "{v}");
    assert_eq!(v["payload_decoded"]["value"], json!({"other": 1}), "{v}");

    let v = show(&b, &url, 3, true);
    assert_eq!(
        v["payload_decoded"]["error_class"], "decode_wrong_magic_byte",
        "{v}"
    );
    assert_eq!(v["payload"], "plain text", "{v}");

    // Payloads stay hidden without --payload, registry or not.
    let v = show(&b, &url, 1, false);
    assert!(
        v.get("payload").is_none() && v.get("payload_decoded").is_none(),
        "{v}"
    );
    assert!(!v.to_string().contains("1250"), "{v}");
    Ok(())
}
