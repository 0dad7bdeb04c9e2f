//! The producer helper against real brokers: every record gets a message ID
//! (a given one is kept), key and headers arrive intact, and the delivery
//! reports the stored coordinates.

mod common;

use std::collections::BTreeSet;

use weir::producer::{Producer, Record};
use weir::{MESSAGE_ID_HEADER, ProduceError};
use weir_testkit::BrokerKind;

use common::R;

broker_tests!(
    producer_stamps_message_ids,
    producing_to_a_missing_topic_is_a_clear_error
);

async fn producer_stamps_message_ids(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("orders", 2).await?;
    let producer = Producer::new(cluster.bootstrap_servers())?;
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let mut r = Record::to("orders")
            .key(format!("k{}", i % 3))
            .payload(format!("order {i}"))
            .header("trace", "t1");
        if i == 0 {
            r = r.message_id("order-0");
        }
        deliveries.push(producer.send(r).await?);
    }
    assert_eq!(deliveries[0].message_id, "order-0");
    let ids: BTreeSet<_> = deliveries.iter().map(|d| d.message_id.clone()).collect();
    assert_eq!(ids.len(), 10, "unique ids");

    let read = cluster.read_to_end("orders").await?;
    assert_eq!(read.len(), 10);
    for m in &read {
        let d = deliveries
            .iter()
            .find(|d| d.partition == m.partition && d.offset == m.offset)
            .expect("delivery reports the stored coordinates");
        let id = std::str::from_utf8(m.header(MESSAGE_ID_HEADER).expect("id header"))?;
        assert_eq!(id, d.message_id);
        assert_eq!(m.header("trace"), Some(&b"t1"[..]));
        assert!(m.key.is_some());
    }
    Ok(())
}

async fn producing_to_a_missing_topic_is_a_clear_error(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("exists", 1).await?;
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", cluster.bootstrap_servers())
        .set("allow.auto.create.topics", "false")
        .set("message.timeout.ms", "3000");
    let producer = Producer::from_client_config(c)?;
    match producer
        .send(Record::to("no-such-topic").payload("x"))
        .await
    {
        Err(e @ ProduceError::Kafka { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("no-such-topic"), "{msg}");
        }
        Ok(d) => panic!("a record to a missing topic was acknowledged: {d:?}"),
        Err(e) => panic!("unexpected error: {e}"),
    }
    Ok(())
}
