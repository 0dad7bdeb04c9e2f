//! The loss, duplicate, wedge and panic paths of issue 21, each shown by a
//! test that failed before its fix (mock cluster and Apache Kafka).

mod common;

/// Tests that need one broker's particular fault injection (named by prefix).
mod kafka_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tier_and_dlq_topics_get_explicit_settings_and_bad_ones_are_refused() -> crate::common::R
    {
        crate::common::init();
        super::tier_and_dlq_topics_get_explicit_settings_and_bad_ones_are_refused().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mock_a_revoke_during_shutdown_is_answered_and_committed() -> crate::common::R {
        crate::common::init();
        super::a_revoke_during_shutdown_is_answered_and_committed().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_position_moved_backwards_is_resynchronised_not_dropped() -> crate::common::R {
        crate::common::init();
        super::a_position_moved_backwards_is_resynchronised_not_dropped().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_permanent_dlq_publish_error_halts_the_partition_loudly() -> crate::common::R {
        crate::common::init();
        super::a_permanent_dlq_publish_error_halts_the_partition_loudly().await
    }
}

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use weir::retry::{RetryTopics, headers};
use weir::{
    Codec, Consumer, DecodeError, Disposition, Failure, FailureSink, Message, ProcessError,
    RawMessage, StringCodec, processor_fn,
};
use weir_testkit::{BrokerKind, RawRecord, TestRecord, produce_raw};

use common::{R, committed, config, wait_until, wait_until_async};

broker_tests!(
    both_read_paths_hand_over_the_same_messages,
    a_header_name_that_is_not_utf8_reaches_the_sink_and_the_partition_goes_on,
    a_panicking_codec_fails_only_that_message,
    dropping_the_run_future_stops_the_poll_thread,
    hostile_numbers_in_headers_neither_panic_nor_hold,
    an_invalid_message_id_is_kept_aside_and_the_copy_gets_a_valid_one,
    a_due_time_holds_only_tier_topics_and_only_about_their_delay,
    latest_reset_does_not_skip_retries_waiting_in_a_tier,
    two_groups_on_one_topic_do_not_process_each_others_retries,
    a_paused_partition_assigned_back_is_fetched_again,
    a_late_revoke_answer_keeps_the_next_assignment_and_cancels_old_runs,
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

use weir::clock::now_ms;

/// Issue 21.1: rust-rdkafka's header accessor unwraps the name as UTF-8, so a
/// hostile producer's header name `ff fe` used to panic Weir's poll thread.
/// Now the message reaches the failure sink as `invalid_header_name`, the
/// messages after it are processed, and everything is committed.
async fn a_header_name_that_is_not_utf8_reaches_the_sink_and_the_partition_goes_on(
    kind: BrokerKind,
) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("hostile", 1).await?;
    let addr = common::first_broker(&cluster);
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
    let (seen, recorder) = common::recording::<String>();
    let (h, run) = common::start(
        Consumer::builder(config(&cluster, "hostile-g", &["hostile"]))
            .codec(StringCodec)
            .failure_sink(sink.clone())
            .build(recorder)?,
    );
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

/// What a processor sees of a raw message, comparable.
type Seen = (
    i64,
    Option<i64>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn seen(m: &RawMessage) -> Seen {
    (
        m.offset,
        m.timestamp_ms,
        m.key.as_deref().map(<[u8]>::to_vec),
        m.payload.as_deref().map(<[u8]>::to_vec),
        m.headers
            .iter()
            .map(|h| (h.key.clone(), h.value.as_deref().map(<[u8]>::to_vec)))
            .collect(),
    )
}

/// `batch_consume` (partition queues read in batches through weir-ffi, the
/// default) and the rust-rdkafka path hand the processor the same
/// messages, field for field, and send the same hostile one (a header name
/// that is not UTF-8) to the failure sink.
async fn both_read_paths_hand_over_the_same_messages(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("paths", 1).await?;
    let addr = common::first_broker(&cluster);
    let t = 1_700_000_000_000;
    let records = vec![
        RawRecord {
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"n".to_vec(), None),
                (b"a".to_vec(), Some(Vec::new())),
            ],
            timestamp_ms: t,
        },
        RawRecord {
            key: None,
            value: None,
            headers: vec![],
            timestamp_ms: t + 1,
        },
        RawRecord {
            key: Some(Vec::new()),
            value: Some(vec![7u8; 5000]),
            headers: vec![],
            timestamp_ms: t + 2,
        },
        RawRecord {
            key: Some(b"bad".to_vec()),
            value: Some(b"x".to_vec()),
            headers: vec![(vec![0xff, 0xfe], Some(b"y".to_vec()))],
            timestamp_ms: t + 3,
        },
        RawRecord {
            key: Some(b"last".to_vec()),
            value: Some(b"z".to_vec()),
            headers: vec![("ünï".as_bytes().to_vec(), Some(vec![0xff]))],
            timestamp_ms: t + 4,
        },
    ];
    produce_raw(&addr, "paths", 0, &records).await?;
    let want: Vec<Seen> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(i, r)| {
            (
                i as i64,
                Some(r.timestamp_ms),
                r.key.clone(),
                r.value.clone(),
                r.headers
                    .iter()
                    .map(|(k, v)| (String::from_utf8(k.clone()).expect("UTF-8"), v.clone()))
                    .collect(),
            )
        })
        .collect();
    for batch in [true, false] {
        let group = format!("paths-{batch}");
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let processor = processor_fn(move |msg: Message<Option<bytes::Bytes>>| {
            let g = g.clone();
            async move {
                g.lock().push(seen(msg.raw()));
                Ok(())
            }
        });
        let sink = Recording::default();
        let mut cfg = config(&cluster, &group, &["paths"]);
        cfg.batch_consume = batch;
        let (h, run) = common::start(
            Consumer::builder(cfg)
                .codec(weir::BytesCodec)
                .failure_sink(sink.clone())
                .build(processor)?,
        );
        wait_until("all five settled", Duration::from_secs(30), || {
            got.lock().len() + sink.0.lock().len() >= 5 || run.is_finished()
        })
        .await;
        h.shutdown();
        let report = run.await??;
        assert!(report.halted.is_empty(), "{report:?}");
        let mut got = got.lock().clone();
        got.sort();
        assert_eq!(got, want, "batch_consume = {batch}");
        assert_eq!(
            sink.0.lock().clone(),
            vec![(3, "invalid_header_name".to_string())],
            "batch_consume = {batch}"
        );
    }
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
    let (seen, recorder) = common::recording::<String>();
    let (h, run) = common::start(
        Consumer::builder(config(&cluster, "panicky-g", &["panicky"]))
            .codec(PanickyCodec)
            .failure_sink(sink.clone())
            .build(recorder)?,
    );
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
    // Thread names are cut to 15 bytes: "weir-poll-dr-mo" / "weir-poll-dr-ka",
    // distinct per broker kind so that the two tests can run side by side.
    let group = format!("dr-{}", kind.name());
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

/// Runs a consumer that records every value until `n` were processed; returns
/// the values, the sink's (offset, class) list and the run report.
async fn consume_n(
    cluster: &weir_testkit::KafkaCluster,
    group: &str,
    topics: &[&str],
    rt: Option<RetryTopics>,
    n: usize,
    limit: Duration,
) -> Result<
    (Vec<String>, Vec<(i64, String)>, weir::RunReport),
    Box<dyn std::error::Error + Send + Sync>,
> {
    let sink = Recording::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let mut b = Consumer::builder(config(cluster, group, topics))
        .codec(StringCodec)
        .failure_sink(sink.clone());
    if let Some(rt) = rt {
        b = b.retry_topics(rt);
    }
    let c = b.build(processor_fn(move |m: Message<String>| {
        let s = s.clone();
        async move {
            if m.value().starts_with("fail") {
                return Err(ProcessError::terminal(std::io::Error::other("bad")).with_class("bad"));
            }
            s.lock().push(m.value().clone());
            Ok::<_, ProcessError>(())
        }
    }))?;
    let (h, run) = common::start(c);
    wait_until(&format!("{n} processed"), limit, || {
        seen.lock().len() >= n || run.is_finished()
    })
    .await;
    assert!(!run.is_finished(), "run() ended early: {:?}", run.await);
    h.shutdown();
    let report = run.await??;
    let values = seen.lock().clone();
    let failures = sink.0.lock().clone();
    Ok((values, failures, report))
}

/// Issue 21.3: `weir-attempt: 4294967295` and `weir-due-ms` at `i64::MIN` or
/// `i64::MAX` overflowed header arithmetic (a panic in debug builds, outside
/// any `catch_unwind`; a wrap in release). Now they saturate: every message is
/// processed, none is held, nothing halts.
async fn hostile_numbers_in_headers_neither_panic_nor_hold(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("numbers", 1).await?;
    let rec = |p: &str, h: &str, v: &str| TestRecord::keyed("k", p).header(h, v).partition(0);
    cluster
        .produce(
            "numbers",
            [
                rec("a", headers::ATTEMPT, "4294967295"),
                rec("b", headers::ATTEMPT, "-9223372036854775808"),
                rec("c", headers::DUE_MS, "-9223372036854775808"),
                rec("d", headers::DUE_MS, "9223372036854775807"),
                rec("e", headers::NOT_BEFORE_MS, "9223372036854775807"),
            ],
        )
        .await?;
    let (values, failures, report) = consume_n(
        &cluster,
        "numbers-g",
        &["numbers"],
        None,
        5,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(
        values,
        ["a", "b", "c", "d", "e"],
        "all processed, none held"
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(report.halted.is_empty(), "{report:?}");
    Ok(())
}

/// Issue 21.4: a message whose `weir-message-id` is empty, over-long or not
/// UTF-8 used to make its DLQ copy unsendable (the producer refuses such an
/// id, not retryably), so the sink halted the partition. Now the copy keeps the
/// bad value under `weir-invalid-message-id` and gets a valid id (the
/// original's coordinates); nothing halts.
async fn an_invalid_message_id_is_kept_aside_and_the_copy_gets_a_valid_one(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("ids", 1).await?;
    let rt = RetryTopics::dlq_only();
    cluster.create_topic(&rt.dlq_topic("ids"), 1).await?;
    let long = "x".repeat(300);
    cluster
        .produce(
            "ids",
            [
                TestRecord::keyed("k", "fail-empty").header(weir::MESSAGE_ID_HEADER, ""),
                TestRecord::keyed("k", "fail-long").header(weir::MESSAGE_ID_HEADER, &long),
                TestRecord::keyed("k", "fail-bytes")
                    .header(weir::MESSAGE_ID_HEADER, [0xffu8, 0x00]),
                TestRecord::keyed("k", "ok"),
            ]
            .map(|r| r.partition(0)),
        )
        .await?;
    let sink_free = {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let c = Consumer::builder(config(&cluster, "ids-g", &["ids"]))
            .codec(StringCodec)
            .retry_topics(rt.clone())
            .build(processor_fn(move |m: Message<String>| {
                let s = s.clone();
                async move {
                    if m.value().starts_with("fail") {
                        return Err(ProcessError::terminal(std::io::Error::other("bad")));
                    }
                    s.lock().push(m.value().clone());
                    Ok::<_, ProcessError>(())
                }
            }))?;
        let (h, run) = common::start(c);
        wait_until("ok processed", Duration::from_secs(30), || {
            !seen.lock().is_empty() || run.is_finished()
        })
        .await;
        let mut dlq = Vec::new();
        for _ in 0..100 {
            dlq = cluster.read_to_end(&rt.dlq_topic("ids")).await?;
            if dlq.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        h.shutdown();
        let report = run.await??;
        assert!(report.halted.is_empty(), "nothing halted: {report:?}");
        dlq
    };
    assert_eq!(sink_free.len(), 3, "three DLQ copies");
    let originals: Vec<Vec<u8>> = vec![vec![], long.into_bytes(), vec![0xff, 0x00]];
    for (m, original) in sink_free.iter().zip(originals) {
        let id = std::str::from_utf8(m.header(weir::MESSAGE_ID_HEADER).expect("an id")).unwrap();
        assert!(id.starts_with("ids/0@"), "the coordinates as the id: {id}");
        assert_eq!(
            m.header("weir-invalid-message-id"),
            Some(original.as_slice())
        );
    }
    Ok(())
}

/// Issue 21.6: `weir-due-ms` used to hold a partition of any topic for up to
/// 7 days. Now it holds only on a retry tier's topic, and there at most about
/// the tier's delay (plus jitter and a 5 s clock-skew allowance).
async fn a_due_time_holds_only_tier_topics_and_only_about_their_delay(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("due", 1).await?;
    let rt = RetryTopics::tiers([Duration::from_millis(500)]).jitter(0.0);
    let tier = rt.retry_topic("due", Duration::from_millis(500));
    for t in rt.retry_topics_of("due") {
        cluster.create_topic(&t, 1).await?;
    }
    cluster.create_topic(&rt.dlq_topic("due"), 1).await?;
    let in_an_hour = (now_ms() + 3_600_000).to_string();
    cluster
        .produce(
            "due",
            [TestRecord::keyed("k", "source").header(headers::DUE_MS, &in_an_hour)],
        )
        .await?;
    cluster
        .produce(
            &tier,
            [TestRecord::keyed("k", "tier")
                .header(headers::DUE_MS, &in_an_hour)
                .header(headers::ATTEMPT, "2")],
        )
        .await?;
    let started = std::time::Instant::now();
    let (values, failures, _) = consume_n(
        &cluster,
        "due-g",
        &["due"],
        Some(rt),
        2,
        Duration::from_secs(40),
    )
    .await?;
    let mut values = values;
    values.sort();
    assert_eq!(values, ["source", "tier"]);
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "held about the tier's delay, not an hour: {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Issue 21.5: every produce error but five codes counted as transient, so a
/// DLQ copy the broker refuses for good (here INVALID_RECORD: a keyless copy
/// to a compacted DLQ) was retried every 10 s forever, with `halted` empty and
/// exit code 0. Now the partition halts at that message, loudly, and the
/// report says why. Kafka only: the mock cluster does not compact.
async fn a_permanent_dlq_publish_error_halts_the_partition_loudly() -> R {
    let cluster = common::cluster(BrokerKind::Kafka).await?;
    cluster.create_topic("keyless", 1).await?;
    let rt = RetryTopics::dlq_only();
    cluster
        .create_topic_with(
            &rt.dlq_topic("keyless"),
            1,
            &[("cleanup.policy", "compact")],
        )
        .await?;
    cluster
        .produce("keyless", [TestRecord::unkeyed("fail-no-key").partition(0)])
        .await?;
    let c = Consumer::builder(config(&cluster, "keyless-g", &["keyless"]))
        .codec(StringCodec)
        .retry_topics(rt)
        .build(processor_fn(|_m: Message<String>| async {
            Err::<(), _>(ProcessError::terminal(std::io::Error::other("bad")))
        }))?;
    let (h, run) = common::start(c);
    wait_until("the partition to halt", Duration::from_secs(40), || {
        h.stats().halted_partitions() >= 1
    })
    .await;
    h.shutdown();
    let report = run.await??;
    assert_eq!(report.halted.len(), 1, "{report:?}");
    assert_ne!(
        report.exit_code(),
        0,
        "a halted partition is not a clean exit"
    );
    let committed = common::committed(&cluster, "keyless-g", "keyless").await;
    assert!(
        committed == [-1] || committed == [0],
        "nothing committed past it: {committed:?}"
    );
    Ok(())
}

async fn topic_config(
    cluster: &weir_testkit::KafkaCluster,
    topic: &str,
) -> Result<std::collections::HashMap<String, String>, Box<dyn std::error::Error + Send + Sync>> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        cluster.client_config().create()?;
    let r = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await?;
    let res = r
        .into_iter()
        .next()
        .unwrap()
        .map_err(|e| format!("{e:?}"))?;
    Ok(res
        .entries
        .into_iter()
        .filter_map(|e| e.value.map(|v| (e.name, v)))
        .collect())
}

/// Issue 21.13: tier and DLQ topics were created with the cluster's defaults
/// (a 24 h retention deletes unreplayed DLQ entries; a compacted default keeps
/// one per key). Now the DLQ gets `cleanup.policy=delete` and 30 days, each
/// tier `delete` and a retention far above its delay, and an existing tier
/// that would delete copies before they are due is a clear start-up error.
async fn tier_and_dlq_topics_get_explicit_settings_and_bad_ones_are_refused() -> R {
    let cluster = common::cluster(BrokerKind::Kafka).await?;
    cluster.create_topic("adm", 1).await?;
    let rt = RetryTopics::tiers([Duration::from_secs(1)]);
    let c = Consumer::builder(config(&cluster, "adm-g", &["adm"]))
        .codec(StringCodec)
        .retry_topics(rt.clone())
        .build(processor_fn(|_m: Message<String>| async {
            Ok::<_, ProcessError>(())
        }))?;
    let (h, run) = common::start(c);
    wait_until("assignment", Duration::from_secs(30), || {
        h.stats().assigned_partitions() >= 1
    })
    .await;
    let dlq = topic_config(&cluster, &rt.dlq_topic("adm")).await?;
    assert_eq!(dlq["cleanup.policy"], "delete");
    assert_eq!(dlq["retention.ms"], (30u64 * 24 * 3600 * 1000).to_string());
    let tier = topic_config(&cluster, &rt.retry_topic("adm", Duration::from_secs(1))).await?;
    assert_eq!(tier["cleanup.policy"], "delete");
    assert!(
        tier["retention.ms"].parse::<u64>()? >= 7 * 24 * 3600 * 1000,
        "{tier:?}"
    );
    h.shutdown();
    let _ = run.await??;

    cluster.create_topic("adm2", 1).await?;
    cluster
        .create_topic_with(
            &rt.retry_topic("adm2", Duration::from_secs(1)),
            1,
            &[("retention.ms", "500")],
        )
        .await?;
    let c = Consumer::builder(config(&cluster, "adm2-g", &["adm2"]))
        .codec(StringCodec)
        .retry_topics(rt)
        .build(processor_fn(|_m: Message<String>| async {
            Ok::<_, ProcessError>(())
        }))?;
    let err = tokio::time::timeout(Duration::from_secs(30), c.run())
        .await?
        .expect_err("a tier that deletes copies before they are due is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("adm2.retry.1s") && msg.contains("retention.ms"),
        "{msg}"
    );
    Ok(())
}

/// Issue 21.10: with `auto_offset_reset = "latest"`, a tier partition that has
/// no committed offset yet started at its end, skipping copies whose source
/// offset was already committed: a member that left while a copy waited in
/// the tier lost it for the next member. Now tier partitions without a commit
/// start at their beginning.
async fn latest_reset_does_not_skip_retries_waiting_in_a_tier(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("late", 1).await?;
    let rt = RetryTopics::tiers([Duration::from_secs(4)]).jitter(0.0);
    for t in rt.retry_topics_of("late") {
        cluster.create_topic(&t, 1).await?;
    }
    cluster.create_topic(&rt.dlq_topic("late"), 1).await?;
    let seen = Arc::new(Mutex::new(Vec::<(String, u32)>::new()));
    let member = |seen: Arc<Mutex<Vec<(String, u32)>>>| -> Result<_, weir::WeirError> {
        let mut cfg = config(&cluster, "late-g", &["late"]);
        cfg.auto_offset_reset = "latest".into();
        Consumer::builder(cfg)
            .codec(StringCodec)
            .retry_topics(rt.clone())
            .build(processor_fn(move |m: Message<String>| {
                let s = seen.clone();
                async move {
                    s.lock().push((m.value().clone(), m.attempt()));
                    if m.attempt() == 1 {
                        return Err(ProcessError::retryable(std::io::Error::other("flaky")));
                    }
                    Ok(())
                }
            }))
    };
    let a = member(seen.clone())?;
    let (ha, run_a) = common::start(a);
    wait_until("assignment", Duration::from_secs(30), || {
        ha.stats().assigned_partitions() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster
        .produce("late", [TestRecord::keyed("k", "m").partition(0)])
        .await?;
    wait_until("the copy in the tier", Duration::from_secs(30), || {
        ha.stats().retry_published() >= 1
    })
    .await;
    // Leave while the copy waits out its 4 s in the tier.
    ha.shutdown();
    let _ = run_a.await??;
    assert_eq!(seen.lock().clone(), [("m".to_string(), 1)]);
    let b = member(seen.clone())?;
    let (hb, run_b) = common::start(b);
    wait_until(
        "the retry, by the next member",
        Duration::from_secs(30),
        || seen.lock().len() >= 2,
    )
    .await;
    hb.shutdown();
    let _ = run_b.await??;
    assert_eq!(seen.lock()[1], ("m".to_string(), 2));
    Ok(())
}

/// Issue 21.14: tier topics are named after the source topic only, so every
/// group with tiers on a topic reads the same tiers; group B used to process
/// group A's retries (a duplicate effect, attempts counted across groups). Now
/// each copy says which group it is for (`weir-for-group`) and other groups
/// skip it.
async fn two_groups_on_one_topic_do_not_process_each_others_retries(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("shared", 1).await?;
    let rt = RetryTopics::tiers([Duration::from_millis(300)]).jitter(0.0);
    for t in rt.retry_topics_of("shared") {
        cluster.create_topic(&t, 1).await?;
    }
    cluster.create_topic(&rt.dlq_topic("shared"), 1).await?;
    cluster
        .produce(
            "shared",
            (0..5).map(|i| TestRecord::keyed(format!("k{i}"), format!("m{i}"))),
        )
        .await?;
    let start = |group: &'static str, fail_first: bool| -> Result<_, weir::WeirError> {
        let seen = Arc::new(Mutex::new(Vec::<(String, u32)>::new()));
        let s = seen.clone();
        let c = Consumer::builder(config(&cluster, group, &["shared"]))
            .codec(StringCodec)
            .retry_topics(rt.clone())
            .build(processor_fn(move |m: Message<String>| {
                let s = s.clone();
                async move {
                    s.lock().push((m.value().clone(), m.attempt()));
                    if fail_first && m.attempt() == 1 {
                        return Err(ProcessError::retryable(std::io::Error::other("flaky")));
                    }
                    Ok(())
                }
            }))?;
        let h = c.handle();
        Ok((seen, h, tokio::spawn(c.run())))
    };
    let (seen_a, ha, run_a) = start("group-a", true)?;
    let (seen_b, hb, run_b) = start("group-b", false)?;
    wait_until("A's five retries", Duration::from_secs(40), || {
        seen_a.lock().len() >= 10
    })
    .await;
    wait_until("B's five", Duration::from_secs(20), || {
        seen_b.lock().len() >= 5
    })
    .await;
    // Give B time to (wrongly) read A's copies from the shared tier.
    wait_until("B to skip A's copies", Duration::from_secs(20), || {
        hb.stats().other_group_skipped() >= 5
    })
    .await;
    ha.shutdown();
    hb.shutdown();
    let _ = run_a.await??;
    let _ = run_b.await??;
    let b = seen_b.lock().clone();
    assert_eq!(b.len(), 5, "B processed each message once: {b:?}");
    assert!(b.iter().all(|(_, attempt)| *attempt == 1), "{b:?}");
    let a = seen_a.lock().clone();
    assert_eq!(
        a.iter().filter(|(_, at)| *at == 2).count(),
        5,
        "A retried its own: {a:?}"
    );
    Ok(())
}

/// Issue 21.8: with `partition_queues = false` Weir pauses a full partition;
/// librdkafka keeps that pause across a revoke and re-assign (an eager
/// rebalance), while Weir's new partition state thought it unpaused, so the
/// partition was never fetched again. Now every assigned partition is resumed
/// on assign.
async fn a_paused_partition_assigned_back_is_fetched_again(kind: BrokerKind) -> R {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("paused", 2).await?;
    let n = 100usize;
    cluster
        .produce(
            "paused",
            (0..n).map(|i| {
                TestRecord::keyed(format!("k{i}"), format!("m{i}")).partition((i % 2) as i32)
            }),
        )
        .await?;
    let done = Arc::new(AtomicUsize::new(0));
    // Handlers wait for this: both of A's partitions fill their window and pause.
    let released = Arc::new(AtomicBool::new(false));
    let member = || -> Result<_, weir::WeirError> {
        let mut cfg = config(&cluster, "paused-g", &["paused"])
            .set("queued.max.messages.kbytes", "64")
            .set("max.partition.fetch.bytes", "4096");
        cfg.partition_queues = false;
        cfg.assignment = weir::Assignment::Range;
        cfg.max_buffered_per_partition = 8;
        cfg.max_in_flight_per_partition = 2;
        cfg.revoke_deadline = Duration::from_secs(1);
        let (d, r) = (done.clone(), released.clone());
        let c = Consumer::builder(cfg)
            .codec(StringCodec)
            .build(processor_fn(move |_m: Message<String>| {
                let (d, r) = (d.clone(), r.clone());
                async move {
                    while !r.load(SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    d.fetch_add(1, SeqCst);
                    Ok::<_, ProcessError>(())
                }
            }))?;
        let h = c.handle();
        Ok((h, tokio::spawn(c.run())))
    };
    let (ha, run_a) = member()?;
    wait_until("both partitions paused", Duration::from_secs(30), || {
        ha.stats().paused_partitions() >= 2
    })
    .await;
    // A second member: the eager rebalance revokes both partitions from A
    // (their in-flight work is cancelled at the revoke deadline) and gives one back.
    let rebalances = ha.stats().rebalances();
    let (hb, run_b) = member()?;
    wait_until("the rebalance", Duration::from_secs(60), || {
        hb.stats().assigned_partitions() >= 1 && ha.stats().rebalances() >= rebalances + 2
    })
    .await;
    released.store(true, SeqCst);
    wait_until(
        &format!("all {n} processed"),
        Duration::from_secs(60),
        || done.load(SeqCst) >= n,
    )
    .await;
    ha.shutdown();
    hb.shutdown();
    let _ = run_a.await??;
    let _ = run_b.await??;
    Ok(())
}

/// Issue 21.9: a revoke the dispatcher answers after the poll thread gave up
/// on it. A handler that blocks its thread (a user bug, or a slow synchronous
/// call) holds the dispatcher for 15 s; meanwhile a second member joins, the
/// eager rebalance revokes both partitions from A, A's poll thread stops
/// waiting and A gets one partition back. The stale revoke, keyed by
/// topic-partition, used to remove that new assignment when it was finally
/// answered (A then dropped every later message of the partition), and the
/// old assignment's runs went on beside the new ones. Now revokes are keyed by
/// assignment epoch, a re-assign cancels the old epoch's runs, and both sides
/// use one deadline.
async fn a_late_revoke_answer_keeps_the_next_assignment_and_cancels_old_runs(
    kind: BrokerKind,
) -> R {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("late", 2).await?;
    cluster
        .produce(
            "late",
            [
                TestRecord::keyed("a", "long").partition(0),
                TestRecord::keyed("b", "long").partition(1),
                TestRecord::keyed("c", "block").partition(0),
            ],
        )
        .await?;
    let started_long = Arc::new(AtomicUsize::new(0));
    // First runs of a "long" message that slept to their end (not cancelled).
    let long_completed = Arc::new(AtomicUsize::new(0));
    let blocking = Arc::new(AtomicBool::new(false));
    let unblocked = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let member = || -> Result<_, weir::WeirError> {
        let mut cfg = config(&cluster, "late-g", &["late"]);
        cfg.assignment = weir::Assignment::Range;
        cfg.revoke_deadline = Duration::from_secs(1);
        let (started, completed, blocking, seen, unblocked) = (
            started_long.clone(),
            long_completed.clone(),
            blocking.clone(),
            seen.clone(),
            unblocked.clone(),
        );
        let c = Consumer::builder(cfg)
            .codec(StringCodec)
            .build(processor_fn(move |m: Message<String>| {
                let (started, completed, blocking, seen, unblocked) = (
                    started.clone(),
                    completed.clone(),
                    blocking.clone(),
                    seen.clone(),
                    unblocked.clone(),
                );
                async move {
                    match m.value().as_str() {
                        "long" => {
                            // Only the first two runs (one per partition) are long.
                            if started.fetch_add(1, SeqCst) < 2 {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                completed.fetch_add(1, SeqCst);
                            }
                        }
                        "block" => {
                            if !blocking.swap(true, SeqCst) {
                                std::thread::sleep(Duration::from_secs(15));
                                unblocked.store(true, SeqCst);
                            }
                        }
                        other => {
                            seen.lock().insert(other.to_string());
                        }
                    }
                    Ok::<_, ProcessError>(())
                }
            }))?;
        let h = c.handle();
        Ok((h, tokio::spawn(c.run())))
    };
    let (ha, run_a) = member()?;
    wait_until("the blocking handler", Duration::from_secs(30), || {
        blocking.load(SeqCst)
    })
    .await;
    let long_started_at = std::time::Instant::now();
    let (hb, run_b) = member()?;
    wait_until("B assigned a partition", Duration::from_secs(60), || {
        hb.stats().assigned_partitions() == 1
    })
    .await;
    wait_until(
        "the blocking handler to return",
        Duration::from_secs(30),
        || unblocked.load(SeqCst),
    )
    .await;
    // The old assignment's revoke deadline passes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = 20;
    cluster
        .produce(
            "late",
            (0..n)
                .map(|i| TestRecord::keyed(format!("k{i}"), format!("after-{i}")).partition(i % 2)),
        )
        .await?;
    wait_until(
        &format!("all {n} later messages processed (A's partition wedged?)"),
        Duration::from_secs(40),
        || seen.lock().len() == n as usize,
    )
    .await;
    // Past the end of the long first runs: had they not been cancelled, they
    // would have completed by now.
    let rest = Duration::from_secs(32).saturating_sub(long_started_at.elapsed());
    tokio::time::sleep(rest).await;
    assert_eq!(
        long_completed.load(SeqCst),
        0,
        "the old assignment's runs were cancelled, not left running beside the new ones"
    );
    for (name, h, run) in [("B", hb, run_b), ("A", ha, run_a)] {
        h.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .map_err(|_| format!("member {name} did not shut down in 30 s"))???;
    }
    Ok(())
}

/// Issue 21.18: shutdown while a revoke waits. The group coordinator answers
/// slowly (1.5 s per request on the mock cluster), so an interval commit is
/// under way most of the time; a second member joins, the eager rebalance
/// revokes both of A's partitions, and A is shut down while a long message
/// holds partition 0. The drain used to answer revokes only after the commit
/// under way, which it awaited only after the drain: the long message ran on
/// past the revoke deadline, the poll thread gave up, and partition 1's
/// finished offsets since the last interval commit were never committed (the
/// next owner processed them again). Now the drain awaits the commit and
/// answers the revoke at its deadline (and the poll thread commits what
/// it returns).
async fn a_revoke_during_shutdown_is_answered_and_committed() -> R {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::SeqCst};
    let cluster = weir_testkit::KafkaCluster::mock(3)?;
    let faults = cluster.mock_faults().expect("mock").clone();
    cluster.create_topic("shut", 2).await?;
    faults.partition_leader("shut", 0, 1)?;
    faults.partition_leader("shut", 1, 1)?;
    faults.group_coordinator("shut-g", 3)?;
    cluster
        .produce("shut", [TestRecord::keyed("a", "long").partition(0)])
        .await?;
    // A steady stream on partition 1 while the test runs.
    let streaming = Arc::new(AtomicBool::new(true));
    let producer = cluster.producer()?;
    let stream = {
        let streaming = streaming.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while streaming.load(SeqCst) {
                let key = format!("k{i}");
                let rec = rdkafka::producer::FutureRecord::to("shut")
                    .partition(1)
                    .key(&key)
                    .payload("fast");
                let _ = producer.send(rec, Duration::from_secs(5)).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let long_started = Arc::new(AtomicBool::new(false));
    // One past the highest offset of partition 1 that A finished.
    let p1_done = Arc::new(AtomicI64::new(0));
    let mut cfg = config(&cluster, "shut-g", &["shut"]);
    cfg.assignment = weir::Assignment::Range;
    cfg.revoke_deadline = Duration::from_secs(2);
    cfg.shutdown_deadline = Duration::from_secs(30);
    let (started, done) = (long_started.clone(), p1_done.clone());
    let c = Consumer::builder(cfg)
        .codec(StringCodec)
        .build(processor_fn(move |m: Message<String>| {
            let (started, done) = (started.clone(), done.clone());
            async move {
                if m.value() == "long" {
                    started.store(true, SeqCst);
                    tokio::time::sleep(Duration::from_secs(25)).await;
                } else {
                    done.fetch_max(m.raw().offset + 1, SeqCst);
                }
                Ok::<_, ProcessError>(())
            }
        }))?;
    let (ha, run_a) = common::start(c);
    wait_until(
        "the long message and partition 1 running",
        Duration::from_secs(30),
        || long_started.load(SeqCst) && p1_done.load(SeqCst) > 20,
    )
    .await;
    faults.round_trip_time(3, Duration::from_millis(1500))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // B: a plain member that joins and never commits, so that the committed
    // offsets afterwards are A's alone.
    let rebalances = ha.stats().rebalances();
    let b_stop = Arc::new(AtomicBool::new(false));
    let b = {
        let stop = b_stop.clone();
        let mut cc = cluster.client_config();
        cc.set("group.id", "shut-g")
            .set("enable.auto.commit", "false")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
        let consumer: BaseConsumer = cc.create()?;
        consumer.subscribe(&["shut"])?;
        std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                let _ = consumer.poll(Duration::from_millis(50));
            }
        })
    };
    wait_until("A's revoke", Duration::from_secs(30), || {
        ha.stats().rebalances() > rebalances
    })
    .await;
    let asked = std::time::Instant::now();
    ha.shutdown();
    let ran = tokio::time::timeout(Duration::from_secs(40), run_a).await;
    let took = asked.elapsed();
    streaming.store(false, SeqCst);
    b_stop.store(true, SeqCst);
    let _ = ran.map_err(|_| format!("shutdown did not end within {took:?}"))???;
    streaming.store(false, SeqCst);
    let _ = stream.await;
    faults.round_trip_time(3, Duration::ZERO)?;
    let committed = committed(&cluster, "shut-g", "shut").await;
    b_stop.store(true, SeqCst);
    let _ = b.join();
    // The mock coordinator refuses every commit while the group rebalances
    // (REBALANCE_IN_PROGRESS; Apache Kafka accepts a commit of the current
    // generation then), so the revoke's commit is refused here: what this
    // test can see is that the revoke was answered at its deadline, inside
    // the drain, with the long message cancelled. Never past what A finished:
    assert!(
        committed[1] <= p1_done.load(SeqCst),
        "never committed past what A finished on partition 1 (committed {committed:?})"
    );
    assert!(
        took < Duration::from_secs(15),
        "the revoke deadline (2 s) cancelled the long message during shutdown; shutdown took {took:?}"
    );
    Ok(())
}

/// Issue 21.11: the topic is deleted and created again while a member has its
/// partition: the new log starts at offset 0, below everything the member
/// tracked. Weir used to take every offset below its high mark for a
/// re-fetch and drop it (`refetched_duplicates`), so the new topic's first
/// messages were never processed and the commit stayed at the old position.
/// Now a backwards move that is not a re-fetch of tracked offsets
/// resynchronises the partition and is processed.
async fn a_position_moved_backwards_is_resynchronised_not_dropped() -> R {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use std::collections::HashSet;
    let cluster = weir_testkit::KafkaCluster::kafka(1).await?;
    cluster.create_topic("moved", 1).await?;
    let old = 50;
    cluster
        .produce(
            "moved",
            (0..old).map(|i| TestRecord::keyed(format!("k{i}"), format!("old-{i}"))),
        )
        .await?;
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut cfg = config(&cluster, "moved-g", &["moved"])
        // The member must not notice the deletion through metadata (a
        // rebalance would give it a fresh partition state): only its fetches
        // see the topic change.
        .set("topic.metadata.refresh.interval.ms", "600000");
    cfg.commit_interval = Duration::from_millis(100);
    let s = seen.clone();
    let c = Consumer::builder(cfg)
        .codec(StringCodec)
        .build(processor_fn(move |m: Message<String>| {
            let s = s.clone();
            async move {
                s.lock().insert(m.value().clone());
                Ok::<_, ProcessError>(())
            }
        }))?;
    let (h, run) = common::start(c);
    wait_until("the old messages", Duration::from_secs(30), || {
        seen.lock().len() == old
    })
    .await;
    let admin: AdminClient<DefaultClientContext> = cluster.client_config().create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.delete_topics(&["moved"], &opts).await? {
        r.map_err(|(t, e)| format!("deleting {t}: {e}"))?;
    }
    wait_until_async("the topic gone", Duration::from_secs(30), || async {
        matches!(cluster.partition_count("moved").await, Ok(0) | Err(_))
    })
    .await;
    cluster.create_topic("moved", 1).await?;
    let new = 10;
    cluster
        .produce(
            "moved",
            (0..new).map(|i| TestRecord::keyed(format!("k{i}"), format!("new-{i}"))),
        )
        .await?;
    let got = || seen.lock().iter().filter(|v| v.starts_with("new-")).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while got() < new && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (n, dropped) = (got(), h.stats().refetched_duplicates());
    let resets = h.stats().position_resets();
    h.shutdown();
    let _ = run.await??;
    assert_eq!(
        n, new,
        "every message of the re-created topic processed ({dropped} dropped as re-fetches)"
    );
    assert_eq!(resets, 1, "the backwards move was seen and counted once");
    assert_eq!(
        committed(&cluster, "moved-g", "moved").await,
        vec![new as i64],
        "the commit follows the new log (lower than the old position)"
    );
    Ok(())
}
