//! `PartitionReader`: batch reads of a split partition queue, against the
//! mock cluster and Apache Kafka. Every field of every message is compared
//! with what rust-rdkafka's own poll returns for the same message, including
//! a hostile producer's header name that is not UTF-8. These tests also run
//! under valgrind memcheck (`scripts/memcheck`): a message not destroyed, or
//! destroyed twice, fails there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message as _};
use weir_ffi::PartitionReader;
use weir_testkit::{BrokerKind, KafkaCluster, RawRecord};

mod common;
use common::{R, cluster_with, consumer, read_each};

/// What both paths read of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn records() -> Vec<RawRecord> {
    vec![
        RawRecord {
            key: Some(b"k0".to_vec()),
            value: Some(b"p0".to_vec()),
            headers: vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"null".to_vec(), None),
                (b"a".to_vec(), Some(Vec::new())),
            ],
            timestamp_ms: 1_700_000_000_000,
        },
        // A tombstone without a key or headers.
        RawRecord {
            key: None,
            value: None,
            headers: vec![],
            timestamp_ms: 1_700_000_000_001,
        },
        // Empty key and payload are not null.
        RawRecord {
            key: Some(Vec::new()),
            value: Some(Vec::new()),
            headers: vec![(b"h".to_vec(), Some(b"v".to_vec()))],
            timestamp_ms: 1_700_000_000_002,
        },
        // A hostile producer: a header name that is not UTF-8.
        RawRecord {
            key: Some(b"k3".to_vec()),
            value: Some(vec![0u8; 3000]),
            headers: vec![
                (b"fine".to_vec(), Some(b"x".to_vec())),
                (vec![0xff, 0xfe], Some(b"y".to_vec())),
            ],
            timestamp_ms: 1_700_000_000_003,
        },
    ]
}

fn want() -> Vec<Seen> {
    records()
        .into_iter()
        .enumerate()
        .map(|(i, r)| Seen {
            offset: i as i64,
            timestamp: Some(r.timestamp_ms),
            key: r.key,
            payload: r.value,
            headers: r.headers,
        })
        .collect()
}

/// A consumer that owns `topic`/0 from its start, with the partition's
/// queue split off as Weir's poll thread does.
async fn produce(
    kind: BrokerKind,
    topic: &str,
) -> Result<KafkaCluster, Box<dyn std::error::Error + Send + Sync>> {
    cluster_with(kind, topic, &records()).await
}

/// Reads `n` messages with `PartitionReader`, `max` at a time.
fn read_batches(c: &Arc<BaseConsumer>, topic: &str, n: usize, max: usize) -> Vec<Seen> {
    let mut reader = PartitionReader::new(c, topic, 0).expect("reader");
    let mut out = Vec::new();
    let t0 = Instant::now();
    while out.len() < n {
        // The consumer queue still needs serving (group and fetch events).
        let _ = c.poll(Duration::from_millis(10));
        let took = reader.consume(max, |m| {
            let m = m.expect("no error on this partition");
            let mut headers = Vec::new();
            let count = m.headers(|i, name, value| {
                assert_eq!(i, headers.len(), "headers come in index order");
                headers.push((name.to_vec(), value.map(<[u8]>::to_vec)));
            });
            assert_eq!(count, headers.len());
            assert_eq!(m.partition(), 0);
            out.push(Seen {
                offset: m.offset(),
                timestamp: m.timestamp_ms(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        });
        assert!(took <= max, "took {took} with max {max}");
        assert!(t0.elapsed() < Duration::from_secs(30), "read {out:?}");
    }
    out
}

/// Reads `n` messages with rust-rdkafka's `PartitionQueue::poll`, header
/// names as rust-rdkafka hands them (it panics on a name that is not UTF-8,
/// so those are taken as bytes from the raw record instead).
fn read_polls(
    q: &rdkafka::consumer::base_consumer::PartitionQueue<DefaultConsumerContext>,
    c: &BaseConsumer,
    n: usize,
) -> Vec<Seen> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    while out.len() < n {
        let _ = c.poll(Duration::from_millis(10));
        while let Some(m) = q.poll(Duration::from_millis(10)) {
            let m = m.expect("no error");
            let mut headers = Vec::new();
            if let Some(hs) = m.headers() {
                for i in 0..hs.count() {
                    let h = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        hs.try_get(i)
                            .map(|h| (h.key.as_bytes().to_vec(), h.value.map(<[u8]>::to_vec)))
                    }));
                    match h {
                        Ok(Some(h)) => headers.push(h),
                        Ok(None) => {}
                        Err(_) => headers.push(records()[m.offset() as usize].headers[i].clone()),
                    }
                }
            }
            out.push(Seen {
                offset: m.offset(),
                timestamp: m.timestamp().to_millis(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "read {out:?}");
    }
    out
}

async fn batches_read_what_polls_read(kind: BrokerKind) -> R {
    let topic = "ffi-fetch";
    let cluster = produce(kind, topic).await?;
    // One at a time, then all in one batch: the same messages either way.
    for max in [1, 64] {
        let (c, _q) = consumer(cluster.bootstrap_servers(), topic, false);
        let got = read_batches(&c, topic, 4, max);
        assert_eq!(got, want(), "batches of {max}");
    }
    let (c, q) = consumer(cluster.bootstrap_servers(), topic, false);
    assert_eq!(read_polls(&q, &c, 4), want(), "rust-rdkafka's poll");
    // Nothing to take, or no room: nothing taken, nothing waited for.
    let mut reader = PartitionReader::new(&c, topic, 0).expect("reader");
    let t0 = Instant::now();
    assert_eq!(reader.consume(0, |_| panic!("no room, no message")), 0);
    assert_eq!(reader.consume(16, |_| panic!("all were read")), 0);
    assert!(t0.elapsed() < Duration::from_secs(1), "consume never waits");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_batches_read_what_polls_read() -> R {
    batches_read_what_polls_read(BrokerKind::Mock).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_batches_read_what_polls_read() -> R {
    batches_read_what_polls_read(BrokerKind::Kafka).await
}

/// A callback that panics: the messages after it in the batch are still
/// destroyed (memcheck reports them otherwise), and the consumer can be
/// dropped (librdkafka waits for every message of a client to be destroyed,
/// so one left over would hang the drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_a_panicking_callback_leaks_nothing() -> R {
    let topic = "ffi-fetch-panic";
    let cluster = produce(BrokerKind::Mock, topic).await?;
    let (c, q) = consumer(cluster.bootstrap_servers(), topic, false);
    let mut reader = PartitionReader::new(&c, topic, 0).expect("reader");
    // Wait until all four are fetched, so the panic comes mid-batch.
    let t0 = Instant::now();
    while reader.len() < 4 {
        let _ = c.poll(Duration::from_millis(10));
        assert!(t0.elapsed() < Duration::from_secs(30), "never fetched");
    }
    let mut seen = 0;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reader.consume(64, |m| {
            seen += 1;
            if m.expect("a message").offset() == 1 {
                panic!("a handler bug");
            }
        })
    }));
    assert!(r.is_err(), "the panic reaches the caller");
    assert_eq!(seen, 2, "the callback stopped at the panic");
    // The batch took all four: the reader goes on after them.
    assert_eq!(reader.consume(64, |_| panic!("nothing left")), 0);
    assert_eq!(reader.len(), 0);
    let dropped = std::thread::spawn(move || {
        drop(reader);
        drop(q);
        drop(c);
    });
    let t0 = Instant::now();
    while !dropped.is_finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "dropping the consumer hangs: a message was never destroyed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// librdkafka's errors on a partition arrive in the batch, in order: with
/// `enable.partition.eof`, the end of the partition after its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_errors_arrive_in_the_batch_in_order() -> R {
    let topic = "ffi-fetch-eof";
    let cluster = produce(BrokerKind::Mock, topic).await?;
    let (c, _q) = consumer(cluster.bootstrap_servers(), topic, true);
    let mut reader = PartitionReader::new(&c, topic, 0).expect("reader");
    let mut offsets = Vec::new();
    let mut eof = None;
    let t0 = Instant::now();
    while eof.is_none() {
        let _ = c.poll(Duration::from_millis(10));
        reader.consume(64, |m| match m {
            Ok(m) => offsets.push(m.offset()),
            Err(KafkaError::PartitionEOF(p)) => eof = Some((p, offsets.len())),
            Err(e) => panic!("unexpected {e}"),
        });
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no EOF: {offsets:?}"
        );
    }
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    assert_eq!(eof, Some((0, 4)), "EOF of partition 0 after all four");
    Ok(())
}

#[test]
fn a_topic_name_with_a_nul_byte_gives_no_reader() {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("group.id", "g")
        .create()
        .expect("consumer");
    let c = Arc::new(c);
    assert!(PartitionReader::new(&c, "a\0b", 0).is_none());
    // A partition librdkafka does not know yet: a reader with nothing to read.
    let mut r = PartitionReader::new(&c, "unknown", 3).expect("a reader");
    assert_eq!(r.consume(8, |_| panic!("nothing to read")), 0);
}

/// Records for the header peek: with and without headers, and 64 headers,
/// whose count (zigzag 128) takes a two-byte varint.
fn peek_records() -> Vec<RawRecord> {
    let many = (0..64)
        .map(|i| (format!("h{i}").into_bytes(), Some(vec![i as u8])))
        .collect();
    let mut out = records();
    out.push(RawRecord {
        key: Some(b"k4".to_vec()),
        value: Some(b"p4".to_vec()),
        headers: many,
        timestamp_ms: 1_700_000_000_004,
    });
    out.push(RawRecord {
        key: Some(b"k5".to_vec()),
        value: Some(b"p5".to_vec()),
        headers: vec![],
        timestamp_ms: 1_700_000_000_005,
    });
    out
}

/// `surely_headerless` says "no headers" exactly for the records without
/// any, on both read paths, and `Fetched::headers` still reads every header
/// of the others. A peek that always said "no headers" loses headers here;
/// one that never did (or was not built) fails the first assertions.
async fn the_header_peek_agrees_with_librdkafka(kind: BrokerKind) -> R {
    assert!(
        weir_ffi::header_peek_active(),
        "built against rdkafka-sys's own librdkafka, the peek must be on"
    );
    let topic = "ffi-peek";
    let recs = peek_records();
    let cluster = cluster_with(kind, topic, &recs).await?;

    let (c, q) = consumer(cluster.bootstrap_servers(), topic, false);
    let seen = read_each(&c, topic, recs.len(), |m| {
        let r = &recs[m.offset() as usize];
        let peek = m.surely_headerless();
        let count = m.headers(|_, _, _| {});
        assert_eq!(peek, r.headers.is_empty(), "offset {}", m.offset());
        assert_eq!(count, r.headers.len(), "offset {}", m.offset());
        (m.offset(), peek, count)
    });
    assert_eq!(
        seen.iter().filter(|(_, peek, _)| *peek).count(),
        2,
        "the tombstone and the last record have no headers: {seen:?}"
    );

    // rust-rdkafka's poll path: the same answer, and after its parse too.
    let (c, q2) = {
        drop(q);
        consumer(cluster.bootstrap_servers(), topic, false)
    };
    let mut n = 0;
    let t0 = Instant::now();
    while n < recs.len() {
        let _ = c.poll(Duration::from_millis(10));
        while let Some(m) = q2.poll(Duration::from_millis(10)) {
            let m = m.expect("a message");
            let none = recs[m.offset() as usize].headers.is_empty();
            assert_eq!(
                weir_ffi::surely_headerless(&m),
                none,
                "offset {}",
                m.offset()
            );
            assert_eq!(m.headers().is_none(), none);
            // The same answer once librdkafka has parsed the headers.
            assert_eq!(weir_ffi::surely_headerless(&m), none);
            n += 1;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "read {n}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_the_header_peek_agrees_with_librdkafka() -> R {
    the_header_peek_agrees_with_librdkafka(BrokerKind::Mock).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_the_header_peek_agrees_with_librdkafka() -> R {
    the_header_peek_agrees_with_librdkafka(BrokerKind::Kafka).await
}

/// A producer's message is never taken for a headerless consumed one (its
/// struct holds producer fields where a consumer's holds the header
/// section): the peek answers "read them" in a delivery report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_a_producer_message_is_never_peeked() -> R {
    use rdkafka::producer::{
        BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
    };
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<bool>>);
    impl rdkafka::ClientContext for Seen {}
    impl ProducerContext for Seen {
        type DeliveryOpaque = ();
        fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
            let m = r.as_ref().expect("delivered");
            self.0
                .lock()
                .expect("lock")
                .push(weir_ffi::surely_headerless(m));
        }
    }

    let topic = "ffi-peek-producer";
    let cluster = KafkaCluster::start(BrokerKind::Mock).await?;
    cluster.create_topic(topic, 1).await?;
    let p: ThreadedProducer<Seen> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create_with_context(Seen::default())?;
    for i in 0..3u8 {
        p.send(
            BaseRecord::<[u8], [u8]>::to(topic)
                .payload(&[i][..])
                .key(&[i][..]),
        )
        .map_err(|(e, _)| e)?;
    }
    p.flush(Duration::from_secs(10))?;
    let seen = p.context().0.lock().expect("lock").clone();
    assert_eq!(seen, vec![false; 3], "a producer's message is never peeked");
    Ok(())
}
