//! Avro codecs against a schema registry over real HTTP: Apicurio Registry's
//! Confluent-compatible API (or the registry at `SCHEMA_REGISTRY_URL`), and
//! the in-process stub of the Confluent REST API
//! (`weir_testkit::SchemaRegistryFixture::stub`) where a test injects faults,
//! auth refusals or counts requests.
#![allow(missing_docs)]

mod schemas;
use schemas::{CLICK_V1, CLICK_V2, CLICK_V3_BAD, ClickV1, ClickV2};

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;
use bytes::Bytes;
use weir::codec::{Codec, DecodeError, EncodeError, Encoder, Part};
use weir::{ErrorKind, ProcessError, RawMessage};
use weir_avro::{
    AvroCodec, AvroSerializer, GenericAvroCodec, GenericAvroSerializer, SchemaRegistry,
    SubjectNameStrategy, frame,
};
use weir_testkit::{SchemaRegistryFixture, TcpProxy};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn msg(topic: &str, key: Option<Bytes>, payload: Option<Bytes>) -> RawMessage {
    RawMessage {
        topic: Arc::from(topic),
        partition: 0,
        offset: 0,
        timestamp_ms: None,
        key,
        payload,
        headers: Default::default(),
    }
}

fn registry(f: &SchemaRegistryFixture) -> SchemaRegistry {
    SchemaRegistry::builder(f.url()).build().unwrap()
}

fn unique(topic: &str) -> String {
    format!("{topic}-{}", uuid_like())
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test]
async fn wire_bytes_match_the_confluent_format() -> R {
    let f = SchemaRegistryFixture::real().await?;
    let reg = registry(&f);
    let topic = unique("clicks");
    let ser = AvroSerializer::<ClickV1>::new(reg.clone(), Schema::parse_str(CLICK_V1)?);
    let bytes = ser
        .encode(
            &topic,
            &ClickV1 {
                link: "ab".into(),
                at_ms: 1,
            },
        )
        .await?;
    let id = f.register(&format!("{topic}-value"), CLICK_V1).await?;
    let mut expected = vec![0u8];
    expected.extend_from_slice(&id.to_be_bytes());
    // string "ab": zigzag length 2 -> 0x04, then the bytes; long 1 -> zigzag 0x02.
    expected.extend_from_slice(&[0x04, b'a', b'b', 0x02]);
    assert_eq!(
        &bytes[..],
        &expected[..],
        "magic byte, schema id, Avro body"
    );
    // A known vector decodes: long -3 is zigzag 5, string "" is length 0.
    let v: ClickV1 = AvroCodec::new(reg)
        .decode(&msg(&topic, None, Some(frame(id, &[0x00, 0x05]))))
        .await?;
    assert_eq!(
        v,
        ClickV1 {
            link: String::new(),
            at_ms: -3
        }
    );
    Ok(())
}

#[tokio::test]
async fn round_trips_typed_generic_and_keys_independently() -> R {
    let f = SchemaRegistryFixture::real().await?;
    let reg = registry(&f);
    let topic = unique("orders");
    let key_ser =
        GenericAvroSerializer::new(reg.clone(), Schema::parse_str(r#""string""#)?).for_key();
    let val_ser = AvroSerializer::<ClickV1>::new(reg.clone(), Schema::parse_str(CLICK_V1)?);
    let click = ClickV1 {
        link: "l-7".into(),
        at_ms: 1_700_000_000_000,
    };
    let key = key_ser.encode(&topic, &Value::String("k-7".into())).await?;
    let value = val_ser.encode(&topic, &click).await?;
    let m = msg(&topic, Some(key), Some(value));

    let typed = AvroCodec::<ClickV1>::new(reg.clone());
    assert_eq!(typed.decode(&m).await?, click);
    let generic = GenericAvroCodec::new(reg.clone());
    match generic.decode(&m).await? {
        Value::Record(fields) => {
            assert_eq!(fields[0], ("link".to_string(), Value::String("l-7".into())));
        }
        other => panic!("expected a record, got {other:?}"),
    }
    let pair = (
        GenericAvroCodec::new(reg.clone()).for_key(),
        AvroCodec::<ClickV1>::new(reg.clone()),
    );
    let (k, v) = pair.decode(&m).await?;
    assert_eq!(k, Value::String("k-7".into()));
    assert_eq!(v, click);
    // A JSON key beside an Avro value: independent codecs.
    let mut m2 = m.clone();
    m2.key = Some(Bytes::from_static(br#"{"shop":3}"#));
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct ShopKey {
        shop: u32,
    }
    let (k, _) = (
        weir::Key(weir::JsonCodec::<ShopKey>::new()),
        AvroCodec::<ClickV1>::new(reg.clone()),
    )
        .decode(&m2)
        .await?;
    assert_eq!(k, ShopKey { shop: 3 });
    if f.is_stub() {
        let reqs = f.requests();
        assert!(
            reqs.iter()
                .any(|r| r == &format!("POST /subjects/{topic}-key/versions")),
            "key schema registered under <topic>-key: {reqs:?}"
        );
        assert!(
            reqs.iter()
                .any(|r| r == &format!("POST /subjects/{topic}-value/versions")),
            "{reqs:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn schema_lookups_are_cached_and_shared() -> R {
    let f = SchemaRegistryFixture::stub().await;
    let reg = registry(&f);
    let id = f.register("c-value", CLICK_V1).await?;
    let codec = Arc::new(AvroCodec::<ClickV1>::new(reg.clone()));
    let m = Arc::new(msg("c", None, Some(frame(id, &[0x02, b'x', 0x04]))));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (c, m) = (codec.clone(), m.clone());
            tokio::spawn(async move { c.decode(&m).await.map(|v| v.at_ms) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await??, 2);
    }
    for _ in 0..100 {
        codec.decode(&m).await?;
    }
    let gets = f
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /schemas/ids/"))
        .count();
    assert_eq!(gets, 1, "150 decodes, one registry request");
    Ok(())
}

#[tokio::test]
async fn reader_schema_reads_older_and_newer_data() -> R {
    let f = SchemaRegistryFixture::real().await?;
    let reg = registry(&f);
    let topic = unique("evo");
    let v1 = AvroSerializer::<ClickV1>::new(reg.clone(), Schema::parse_str(CLICK_V1)?);
    let v2 = AvroSerializer::<ClickV2>::new(reg.clone(), Schema::parse_str(CLICK_V2)?);
    let old = v1
        .encode(
            &topic,
            &ClickV1 {
                link: "old".into(),
                at_ms: 5,
            },
        )
        .await?;
    let new = v2
        .encode(
            &topic,
            &ClickV2 {
                link: "new".into(),
                at_ms: 6,
                referrer: Some("search".into()),
            },
        )
        .await?;
    assert_ne!(old[1..5], new[1..5], "two writer schema ids");

    // A consumer upgraded to v2 reads v1 data: the new field takes its default.
    let reader_v2 = AvroCodec::<ClickV2>::new(reg.clone()).reader_schema_str(CLICK_V2)?;
    assert_eq!(
        reader_v2
            .decode(&msg(&topic, None, Some(old.clone())))
            .await?,
        ClickV2 {
            link: "old".into(),
            at_ms: 5,
            referrer: None
        }
    );
    assert_eq!(
        reader_v2
            .decode(&msg(&topic, None, Some(new.clone())))
            .await?
            .referrer
            .as_deref(),
        Some("search")
    );
    // A consumer still on v1 reads v2 data: the unknown field is dropped.
    let reader_v1 = AvroCodec::<ClickV1>::new(reg.clone()).reader_schema_str(CLICK_V1)?;
    assert_eq!(
        reader_v1.decode(&msg(&topic, None, Some(new))).await?,
        ClickV1 {
            link: "new".into(),
            at_ms: 6
        }
    );
    Ok(())
}

fn assert_class(e: &DecodeError, class: &str) {
    assert_eq!(e.class(), class, "{e}");
    assert!(!e.is_unavailable(), "terminal, goes to the DLQ: {e}");
}

#[tokio::test]
async fn every_decoding_failure_is_classified() -> R {
    let f = SchemaRegistryFixture::real().await?;
    let reg = registry(&f);
    let topic = unique("bad");
    let id1 = f.register(&format!("{topic}-value"), CLICK_V1).await?;
    let id3 = f.register(&format!("{topic}-other"), CLICK_V3_BAD).await?;
    let codec = AvroCodec::<ClickV1>::new(reg.clone()).reader_schema_str(CLICK_V1)?;
    let dec = |b: &'static [u8]| msg(&topic, None, Some(Bytes::from_static(b)));

    let e = codec.decode(&dec(br#"{"link":"x"}"#)).await.unwrap_err();
    assert_class(&e, "decode_wrong_magic_byte");
    assert!(e.to_string().contains("0x7b"), "{e}");
    let e = codec.decode(&dec(&[0, 0, 1])).await.unwrap_err();
    assert_class(&e, "decode_truncated");
    let e = codec.decode(&dec(&[])).await.unwrap_err();
    assert_class(&e, "decode_truncated");
    // Body cut in the middle of the string.
    let mut cut = frame(id1, &[0x0a, b'a', b'b']).to_vec();
    cut.truncate(7);
    let e = codec
        .decode(&msg(&topic, None, Some(cut.into())))
        .await
        .unwrap_err();
    assert_class(&e, "decode_truncated");
    let e = codec
        .decode(&msg(&topic, None, Some(frame(987_654, &[0x00, 0x02]))))
        .await
        .unwrap_err();
    assert_class(&e, "decode_unknown_schema_id");
    assert!(e.to_string().contains("987654"), "{e}");
    // Written with an incompatible schema (at_ms as a string).
    let e = codec
        .decode(&msg(
            &topic,
            None,
            Some(frame(id3, &[0x02, b'x', 0x02, b'1'])),
        ))
        .await
        .unwrap_err();
    assert_class(&e, "decode_incompatible_schema");
    // Trailing garbage after a valid datum.
    let e = codec
        .decode(&msg(&topic, None, Some(frame(id1, &[0x00, 0x02, 0xff]))))
        .await
        .unwrap_err();
    assert_class(&e, "decode_invalid_body");
    // A length prefix far beyond the body and the allocation limit.
    let e = codec
        .decode(&msg(
            &topic,
            None,
            Some(frame(id1, &[0xfe, 0xff, 0xff, 0xff, 0x0f])),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(e.class(), "decode_invalid_body" | "decode_truncated"),
        "{e}"
    );
    // Valid Avro that does not fit the Rust type.
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Wrong {
        nope: bool,
    }
    let e = AvroCodec::<Wrong>::new(reg.clone())
        .decode(&msg(&topic, None, Some(frame(id1, &[0x02, b'q', 0x02]))))
        .await
        .unwrap_err();
    assert_class(&e, "decode_type_mismatch");
    assert!(
        !e.to_string().contains("\"q\""),
        "no field values in errors: {e}"
    );
    // Missing payload (tombstone).
    let e = codec.decode(&msg(&topic, None, None)).await.unwrap_err();
    assert!(matches!(e, DecodeError::Missing(Part::Value)), "{e}");
    if f.is_stub() {
        let pid = f
            .register_typed(
                &format!("{topic}-proto"),
                "syntax = \"proto3\";",
                "PROTOBUF",
            )
            .await?;
        let e = codec
            .decode(&msg(&topic, None, Some(frame(pid, &[0x00]))))
            .await
            .unwrap_err();
        assert_class(&e, "decode_incompatible_schema");
    }
    Ok(())
}

#[tokio::test]
async fn unreachable_registry_is_unavailable_not_poison() -> R {
    let f = SchemaRegistryFixture::stub().await;
    let id = f.register("t-value", CLICK_V1).await?;
    let target = f.url().trim_start_matches("http://").to_string();
    let proxy = TcpProxy::start(&target).await?;
    let reg = SchemaRegistry::builder(format!("http://{}", proxy.addr()))
        .timeout(std::time::Duration::from_secs(2))
        .build()?;
    let codec = AvroCodec::<ClickV1>::new(reg.clone());
    let m = msg("t", None, Some(frame(id, &[0x02, b'z', 0x08])));
    proxy.cut();
    let e = codec.decode(&m).await.unwrap_err();
    assert_eq!(e.class(), "schema_registry_unavailable", "{e}");
    let pe = ProcessError::from(e);
    assert_eq!(
        pe.kind(),
        ErrorKind::Unavailable,
        "retried in place, never DLQ'd"
    );
    // Not cached as a failure: once the registry is back, the same message decodes.
    proxy.restore();
    assert_eq!(codec.decode(&m).await?.at_ms, 4);

    // Nothing listening at all.
    let dead = SchemaRegistry::builder("http://127.0.0.1:9").build()?;
    let e = AvroCodec::<ClickV1>::new(dead)
        .decode(&m)
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("127.0.0.1:9"), "names the URL: {e}");
    let e = AvroSerializer::<ClickV1>::new(
        SchemaRegistry::builder("http://127.0.0.1:9").build()?,
        Schema::parse_str(CLICK_V1)?,
    )
    .encode(
        "t",
        &ClickV1 {
            link: "a".into(),
            at_ms: 1,
        },
    )
    .await
    .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    Ok(())
}

#[tokio::test]
async fn basic_and_bearer_auth_are_sent() -> R {
    let f = SchemaRegistryFixture::stub().await;
    let id = f.register("a-value", CLICK_V1).await?;
    f.require_basic_auth("weir", "s3cret-pw");
    let m = msg("a", None, Some(frame(id, &[0x02, b'z', 0x08])));
    let good = SchemaRegistry::builder(f.url())
        .basic_auth("weir", "s3cret-pw")
        .build()?;
    assert_eq!(AvroCodec::<ClickV1>::new(good).decode(&m).await?.at_ms, 4);
    let bad = SchemaRegistry::builder(f.url())
        .basic_auth("weir", "wrong-pw")
        .build()?;
    let codec = AvroCodec::<ClickV1>::new(bad);
    let e = codec.decode(&m).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("credentials refused"), "{e}");
    assert!(!e.to_string().contains("wrong-pw"), "secret leaked: {e}");
    assert!(!format!("{codec:?}").contains("wrong-pw"));
    // Retried, not cached: a second call asks the registry again.
    let before = f.requests().len();
    let _ = codec.decode(&m).await;
    assert!(f.requests().len() > before, "auth failures are not cached");

    f.require_bearer("tok-42");
    let bearer = SchemaRegistry::builder(f.url())
        .bearer_token("tok-42")
        .build()?;
    assert_eq!(AvroCodec::<ClickV1>::new(bearer).decode(&m).await?.at_ms, 4);
    Ok(())
}

#[tokio::test]
async fn producer_side_registration_modes_and_strategies() -> R {
    let f = SchemaRegistryFixture::stub().await;
    let reg = registry(&f);
    let click = ClickV1 {
        link: "a".into(),
        at_ms: 1,
    };
    // Lookup only: the schema must be registered first.
    let lookup = AvroSerializer::<ClickV1>::new(reg.clone(), Schema::parse_str(CLICK_V1)?)
        .auto_register(false);
    let e = lookup.encode("pay", &click).await.unwrap_err();
    assert!(matches!(e, EncodeError::SchemaRejected { .. }), "{e}");
    assert!(
        e.to_string().contains("auto_register"),
        "says what to do: {e}"
    );
    let id = f.register("pay-value", CLICK_V1).await?;
    let bytes = lookup.encode("pay", &click).await?;
    assert_eq!(&bytes[1..5], &id.to_be_bytes());
    // Registry refuses an incompatible schema.
    f.reject_subject("strict-value");
    let e = AvroSerializer::<ClickV1>::new(reg.clone(), Schema::parse_str(CLICK_V1)?)
        .encode("strict", &click)
        .await
        .unwrap_err();
    assert!(matches!(e, EncodeError::SchemaRejected { .. }), "{e}");
    assert!(!e.is_retryable());
    // Latest: no schema in code.
    let latest = AvroSerializer::<ClickV1>::latest(reg.clone(), None);
    assert_eq!(
        &latest.encode("pay", &click).await?[1..5],
        &id.to_be_bytes()
    );
    // Record-name strategies.
    for (strategy, subject) in [
        (SubjectNameStrategy::RecordName, "weir.test.Click"),
        (SubjectNameStrategy::TopicRecordName, "rn-weir.test.Click"),
    ] {
        AvroSerializer::<ClickV1>::new(reg.clone(), Schema::parse_str(CLICK_V1)?)
            .subject_name_strategy(strategy)
            .encode("rn", &click)
            .await?;
        assert!(
            f.requests()
                .contains(&format!("POST /subjects/{subject}/versions")),
            "{subject}: {:?}",
            f.requests()
        );
    }
    // A value that does not fit the schema: a clear error, no value quoted.
    let e = GenericAvroSerializer::new(reg.clone(), Schema::parse_str(CLICK_V1)?)
        .encode("pay", &Value::Record(vec![("link".into(), Value::Int(5))]))
        .await
        .unwrap_err();
    assert!(matches!(e, EncodeError::Invalid { .. }), "{e}");
    Ok(())
}
