//! Avro through real brokers (mock cluster and Apache Kafka) with Apicurio
//! Registry (or `SCHEMA_REGISTRY_URL`; the stub where an outage is injected): produced with `AvroSerializer` through
//! `weir::Producer`, consumed with a newer reader schema, transient failures
//! retried through a tier (the copy keeps its schema id and decodes the same),
//! every decoding failure class in the DLQ with its class, and a registry
//! outage that holds the partition without sending anything to the DLQ.
#![allow(missing_docs)]

#[path = "../../weir/tests/common/mod.rs"]
mod common;

mod schemas;
use schemas::{CLICK_V1, CLICK_V2, CLICK_V3_BAD, ClickV1, ClickV2};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use parking_lot::Mutex;
use weir::retry::{RetryTopics, headers};
use weir::{Consumer, Message, ProcessError, Producer, Record, processor_fn};
use weir_avro::{AvroCodec, AvroSerializer, SchemaRegistry, frame};
use weir_testkit::{BrokerKind, SchemaRegistryFixture, TcpProxy, TestRecord};

use common::{R, wait_until};

broker_tests!(
    avro_pipeline_with_evolution_retries_and_classified_dlq,
    registry_outage_holds_the_partition,
    avro_rows_through_the_outbox,
);

async fn pre_create(
    cluster: &weir_testkit::KafkaCluster,
    kind: BrokerKind,
    rt: &RetryTopics,
    source: &str,
) -> R {
    if kind == BrokerKind::Mock {
        for t in rt.retry_topics_of(source) {
            cluster.create_topic(&t, 2).await?;
        }
        cluster.create_topic(&rt.dlq_topic(source), 2).await?;
    }
    Ok(())
}

const N: usize = 60;

async fn avro_pipeline_with_evolution_retries_and_classified_dlq(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    let sr = SchemaRegistryFixture::real().await?;
    let registry = SchemaRegistry::builder(sr.url()).build()?;
    let topic = "clicks";
    cluster.create_topic(topic, 2).await?;

    // Producers on v1 (most) and v2 (every 10th), through weir::Producer.
    let producer = Producer::new(cluster.bootstrap_servers())?;
    let v1 = AvroSerializer::<ClickV1>::new(registry.clone(), Schema::parse_str(CLICK_V1)?);
    let v2 = AvroSerializer::<ClickV2>::new(registry.clone(), Schema::parse_str(CLICK_V2)?);
    for i in 0..N {
        let key = format!("link-{}", i % 7);
        let rec = Record::to(topic).key(key).message_id(format!("good-{i}"));
        let rec = if i % 10 == 0 {
            rec.value_with(
                &v2,
                &ClickV2 {
                    link: format!("l{i}"),
                    at_ms: i as i64,
                    referrer: Some("ad".into()),
                },
            )
            .await?
        } else {
            rec.value_with(
                &v1,
                &ClickV1 {
                    link: format!("l{i}"),
                    at_ms: i as i64,
                },
            )
            .await?
        };
        producer.send(rec).await?;
    }
    // One of each decoding failure class.
    let id1 = sr.register("clicks-value", CLICK_V1).await?;
    let id3 = sr.register("clicks-legacy", CLICK_V3_BAD).await?;
    let mut truncated = frame(id1, &[0x0a, b'a', b'b']).to_vec();
    truncated.truncate(7);
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("decode_wrong_magic_byte", br#"{"link":"json"}"#.to_vec()),
        (
            "decode_unknown_schema_id",
            frame(4_000_000, &[0x00, 0x02]).to_vec(),
        ),
        ("decode_truncated", truncated),
        (
            "decode_incompatible_schema",
            frame(id3, &[0x02, b'x', 0x02, b'1']).to_vec(),
        ),
        (
            "decode_invalid_body",
            frame(id1, &[0x00, 0x02, 0xff, 0xff]).to_vec(),
        ),
    ];
    let recs: Vec<TestRecord> = poison
        .iter()
        .map(|(class, bytes)| {
            TestRecord::keyed("poison", bytes.clone()).header(weir::MESSAGE_ID_HEADER, *class)
        })
        .collect();
    cluster.produce(topic, recs).await?;

    let seen: Arc<Mutex<Vec<(ClickV2, u32, String)>>> = Arc::default();
    let s = seen.clone();
    let processor = processor_fn(move |m: Message<ClickV2>| {
        let s = s.clone();
        async move {
            // Every 4th click fails once: the tier copy must decode the same.
            if m.value().at_ms % 4 == 1 && m.attempt() == 1 {
                return Err(
                    ProcessError::retryable(std::io::Error::other("enrichment 503"))
                        .with_class("http_503"),
                );
            }
            s.lock()
                .push((m.value().clone(), m.attempt(), m.raw().topic.to_string()));
            Ok(())
        }
    });
    let mut rt = RetryTopics::tiers([Duration::from_millis(300)]);
    rt.dlq_depth_interval = Duration::from_millis(200);
    pre_create(&cluster, kind, &rt, topic).await?;
    let cfg = common::config(&cluster, "avro-g", &[topic]);
    let consumer = Consumer::builder(cfg)
        .codec(AvroCodec::<ClickV2>::new(registry.clone()).reader_schema_str(CLICK_V2)?)
        .retry_topics(rt)
        .build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_until("all good clicks", Duration::from_secs(60), || {
        seen.lock().len() >= N
    })
    .await;
    let mut dlq = Vec::new();
    let start = std::time::Instant::now();
    while dlq.len() < poison.len() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        dlq = cluster.read_to_end("clicks.dlq").await?;
    }
    wait_until("offsets committed", Duration::from_secs(30), || {
        handle.stats().dlq_published() == poison.len() as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle.shutdown();
    let report = run.await??;
    assert!(report.halted.is_empty(), "{report:?}");

    let seen = seen.lock().clone();
    assert_eq!(seen.len(), N, "each good click processed once");
    let by_at: HashMap<i64, &(ClickV2, u32, String)> =
        seen.iter().map(|x| (x.0.at_ms, x)).collect();
    assert_eq!(by_at.len(), N, "no duplicates");
    for i in 0..N as i64 {
        let (c, attempt, t) = by_at[&i];
        assert_eq!(c.link, format!("l{i}"));
        // v1 data read with the v2 reader: referrer takes its default.
        let want = if i % 10 == 0 { Some("ad") } else { None };
        assert_eq!(c.referrer.as_deref(), want, "click {i}");
        if i % 4 == 1 {
            assert_eq!(*attempt, 2, "click {i} retried once");
            assert_eq!(t, "clicks.retry.300ms", "decoded from the tier copy");
        } else {
            assert_eq!(*attempt, 1);
        }
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
        assert_eq!(h(m, headers::DLQ_REASON), "terminal");
        assert_eq!(m.payload.as_deref(), Some(&bytes[..]), "bytes kept");
    }
    assert_eq!(handle.stats().decode_errors(), poison.len() as u64);
    let committed: i64 = common::committed(&cluster, "avro-g", topic)
        .await
        .iter()
        .sum();
    assert_eq!(
        committed as usize,
        N + poison.len(),
        "all offsets committed"
    );
    Ok(())
}

async fn registry_outage_holds_the_partition(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    let sr = SchemaRegistryFixture::stub().await;
    let id = sr.register("visits-value", CLICK_V1).await?;
    let proxy = TcpProxy::start(sr.url().trim_start_matches("http://")).await?;
    let registry = SchemaRegistry::builder(format!("http://{}", proxy.addr()))
        .timeout(Duration::from_secs(1))
        .build()?;
    let topic = "visits";
    cluster.create_topic(topic, 1).await?;
    let rt = RetryTopics::tiers([Duration::from_millis(200)]);
    pre_create(&cluster, kind, &rt, topic).await?;
    proxy.cut();
    let recs: Vec<TestRecord> = (0..20)
        .map(|i| TestRecord::keyed("k", &frame(id, &[0x02, b'v', (i as u8) * 2])[..]))
        .collect();
    cluster.produce(topic, recs).await?;
    let done: Arc<Mutex<Vec<i64>>> = Arc::default();
    let d = done.clone();
    let processor = processor_fn(move |m: Message<ClickV1>| {
        let d = d.clone();
        async move {
            d.lock().push(m.value().at_ms);
            Ok::<_, ProcessError>(())
        }
    });
    let cfg = common::config(&cluster, "visits-g", &[topic]);
    let consumer = Consumer::builder(cfg)
        .codec(AvroCodec::<ClickV1>::new(registry))
        .retry_topics(rt)
        .build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_until("in-place waits", Duration::from_secs(30), || {
        handle.stats().unavailable() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        done.lock().is_empty(),
        "nothing decoded while the registry is down"
    );
    assert_eq!(handle.stats().dlq_published(), 0, "an outage is not poison");
    assert_eq!(handle.stats().retry_published(), 0);
    assert_eq!(handle.stats().decode_errors(), 0);
    let c = common::committed(&cluster, "visits-g", topic).await;
    assert!(
        c.iter().all(|&o| o <= 0),
        "no offset committed past the undecoded message 0: {c:?}"
    );
    proxy.restore();
    wait_until(
        "all 20 after the registry returns",
        Duration::from_secs(30),
        || done.lock().len() == 20,
    )
    .await;
    let got = done.lock().clone();
    assert_eq!(got, (0..20).collect::<Vec<i64>>(), "in order, once each");
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle.shutdown();
    let _ = run.await??;
    assert_eq!(
        common::committed(&cluster, "visits-g", topic).await,
        vec![20]
    );
    assert!(cluster.read_to_end("visits.dlq").await?.is_empty());
    Ok(())
}

/// Outbox rows encoded with the Avro serializer inside the business
/// transaction, relayed, and decoded by a consumer: the same bytes end to end.
async fn avro_rows_through_the_outbox(kind: BrokerKind) -> R {
    use weir_outbox::{OutboxRecord, Relay, RelayConfig, SqliteOutbox};
    let cluster = common::cluster(kind).await?;
    let topic = "outbox-clicks";
    cluster.create_topic(topic, 2).await?;
    let sr = SchemaRegistryFixture::real().await?;
    let registry = SchemaRegistry::builder(sr.url()).build()?;
    let ser = AvroSerializer::<ClickV1>::new(registry.clone(), Schema::parse_str(CLICK_V1)?);
    let db = weir_testkit::SqliteDb::fresh()?;
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            db.url()
                .parse::<sqlx::sqlite::SqliteConnectOptions>()?
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal),
        )
        .await?;
    let outbox = SqliteOutbox::new(pool.clone());
    outbox.migrate().await?;
    let mut tx = pool.begin().await?;
    for i in 0..25i64 {
        let rec = OutboxRecord::to(topic)
            .key(format!("k{}", i % 5))
            .value_with(
                &ser,
                &ClickV1 {
                    link: format!("o{i}"),
                    at_ms: i,
                },
            )
            .await?;
        SqliteOutbox::enqueue(&mut tx, rec).await?;
    }
    tx.commit().await?;
    let relay = Relay::new(
        outbox,
        Producer::new(cluster.bootstrap_servers())?,
        RelayConfig::default(),
    );
    let mut total = 0;
    loop {
        let k = relay.relay_once().await?;
        if k == 0 {
            break;
        }
        total += k;
    }
    assert_eq!(total, 25);
    let got: Arc<Mutex<Vec<ClickV1>>> = Arc::default();
    let g = got.clone();
    let consumer = Consumer::builder(common::config(&cluster, "outbox-avro", &[topic]))
        .codec(AvroCodec::<ClickV1>::new(registry))
        .build(processor_fn(move |m: Message<ClickV1>| {
            let g = g.clone();
            async move {
                g.lock().push(m.into_value());
                Ok::<_, ProcessError>(())
            }
        }))?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_until("25 relayed clicks decoded", Duration::from_secs(30), || {
        got.lock().len() >= 25
    })
    .await;
    handle.shutdown();
    let _ = run.await??;
    let mut ats: Vec<i64> = got.lock().iter().map(|c| c.at_ms).collect();
    ats.sort();
    assert_eq!(ats, (0..25).collect::<Vec<i64>>());
    assert!(got.lock().iter().all(|c| c.link == format!("o{}", c.at_ms)));
    Ok(())
}
