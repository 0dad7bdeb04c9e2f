//! The loss, duplicate, wedge and panic paths of issue 21, each shown by a
//! test that failed before its fix (mock cluster and Apache Kafka).

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use weir::{
    Codec, Consumer, DecodeError, Disposition, Failure, FailureSink, Message, ProcessError,
    RawMessage, StringCodec, processor_fn,
};
use weir_testkit::{BrokerKind, RawRecord, TestRecord, produce_raw};

use common::{R, committed, config, wait_until, wait_until_async};

broker_tests!(
    a_header_name_that_is_not_utf8_reaches_the_sink_and_the_partition_goes_on,
    a_panicking_codec_fails_only_that_message,
    dropping_the_run_future_stops_the_poll_thread,
);

/// Records (offset, class) and lets the partition move on.
#[derive(Default, Clone)]
struct Recording(Arc<Mutex<Vec<(i64, String)>>>);

impl FailureSink for Recording {
    fn on_failure<'a>(&'a self, f: Failure<'a>) -> BoxFuture<'a, Disposition> {
        self.0
            .lock()
            .push((f.message.offset, f.error.class().to_string()));
        Box::pin(async { Disposition::Handled })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Issue 21.1: rust-rdkafka's header accessor unwraps the name as UTF-8, so a
/// hostile producer's header name `ff fe` used to panic Weir's poll thread.
/// Now the message reaches the failure sink as `invalid_header_name`, the
/// messages after it are processed, and everything is committed.
async fn a_header_name_that_is_not_utf8_reaches_the_sink_and_the_partition_goes_on(
    kind: BrokerKind,
) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("hostile", 1).await?;
    let addr = cluster
        .bootstrap_servers()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    produce_raw(
        &addr,
        "hostile",
        0,
        &[RawRecord {
            key: Some(b"k".to_vec()),
            value: Some(b"bad".to_vec()),
            headers: vec![
                (b"fine".to_vec(), Some(b"1".to_vec())),
                (vec![0xff, 0xfe], Some(b"x".to_vec())),
            ],
            timestamp_ms: now_ms(),
        }],
    )
    .await?;
    cluster
        .produce(
            "hostile",
            (0..5).map(|i| TestRecord::keyed("k", format!("ok{i}")).partition(0)),
        )
        .await?;
    let sink = Recording::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let c = Consumer::builder(config(&cluster, "hostile-g", &["hostile"]))
        .codec(StringCodec)
        .failure_sink(sink.clone())
        .build(processor_fn(move |m: Message<String>| {
            let s = s.clone();
            async move {
                s.lock().push(m.value().clone());
                Ok::<_, ProcessError>(())
            }
        }))?;
    let h = c.handle();
    let run = tokio::spawn(c.run());
    wait_until("the five good messages", Duration::from_secs(30), || {
        seen.lock().len() >= 5 || run.is_finished()
    })
    .await;
    assert!(
        !run.is_finished(),
        "the consumer is still running: {:?}",
        run.await
    );
    assert_eq!(
        sink.0.lock().clone(),
        vec![(0, "invalid_header_name".to_string())],
        "the hostile message went to the sink with its class"
    );
    wait_until_async("committed past it", Duration::from_secs(20), || async {
        committed(&cluster, "hostile-g", "hostile").await == vec![6]
    })
    .await;
    h.shutdown();
    let report = run.await??;
    assert!(report.halted.is_empty(), "{report:?}");
    Ok(())
}

/// A codec whose decode panics on one payload.
struct PanickyCodec;

impl Codec for PanickyCodec {
    type Value = String;
    async fn decode(&self, m: &RawMessage) -> Result<String, DecodeError> {
        let text = String::from_utf8_lossy(m.payload.as_deref().unwrap_or_default()).into_owned();
        if text == "boom" {
            panic!("a Deserialize impl that panics");
        }
        Ok(text)
    }
}

/// Issue 21.2: a codec that panics used to make `run()` fail (and the consumer
/// crash-loop on restart). Now that message is a terminal failure (`decode_panic`),
/// and the partition goes on.
async fn a_panicking_codec_fails_only_that_message(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("panicky", 1).await?;
    cluster
        .produce(
            "panicky",
            ["a", "boom", "b", "c"].map(|p| TestRecord::keyed("k", p).partition(0)),
        )
        .await?;
    let sink = Recording::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let c = Consumer::builder(config(&cluster, "panicky-g", &["panicky"]))
        .codec(PanickyCodec)
        .failure_sink(sink.clone())
        .build(processor_fn(move |m: Message<String>| {
            let s = s.clone();
            async move {
                s.lock().push(m.value().clone());
                Ok::<_, ProcessError>(())
            }
        }))?;
    let h = c.handle();
    let run = tokio::spawn(c.run());
    wait_until("three good messages", Duration::from_secs(30), || {
        seen.lock().len() >= 3 || run.is_finished()
    })
    .await;
    assert!(!run.is_finished(), "run() ended: {:?}", run.await);
    assert_eq!(sink.0.lock().clone(), vec![(1, "decode_panic".to_string())]);
    h.shutdown();
    let report = run.await??;
    assert!(report.halted.is_empty(), "{report:?}");
    Ok(())
}

fn poll_threads(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .map(|c| c.trim().starts_with(prefix))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Issue 21.7: dropping the `run()` future (a `select!` that lost, an aborted
/// task) used to leave the poll thread heartbeating as a member that
/// processes nothing. Now the poll thread stops and the member leaves.
async fn dropping_the_run_future_stops_the_poll_thread(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("dropped", 1).await?;
    cluster
        .produce(
            "dropped",
            (0..3).map(|i| TestRecord::keyed("k", format!("m{i}"))),
        )
        .await?;
    let seen = Arc::new(Mutex::new(0usize));
    let s = seen.clone();
    // Thread names are cut to 15 bytes: "weir-poll-drop-" + the kind's first letter.
    let group = format!("drop-{}", kind.name());
    let prefix: String = format!("weir-poll-{group}").chars().take(15).collect();
    let c = Consumer::builder(config(&cluster, &group, &["dropped"]))
        .codec(StringCodec)
        .build(processor_fn(move |_m: Message<String>| {
            let s = s.clone();
            async move {
                *s.lock() += 1;
                Ok::<_, ProcessError>(())
            }
        }))?;
    let run = tokio::spawn(c.run());
    wait_until("processing", Duration::from_secs(30), || *seen.lock() >= 3).await;
    assert_eq!(poll_threads(&prefix), 1, "one poll thread while running");
    run.abort();
    let _ = run.await;
    wait_until("the poll thread to stop", Duration::from_secs(15), || {
        poll_threads(&prefix) == 0
    })
    .await;
    Ok(())
}
