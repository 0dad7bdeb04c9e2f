//! Trace propagation with an in-memory span exporter, on the mock cluster and
//! tansu: a message produced inside a span is consumed in a child span of it;
//! retries through two tiers stay in the trace and link to the attempt before;
//! across the outbox relay the request's trace reaches the consumer, and the
//! relay's publish span links to the request; a batch processor's span is a
//! root linked to the span of every message in the batch.

#[path = "../../weir/tests/common/mod.rs"]
#[allow(unused_macros)]
mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use parking_lot::Mutex;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use weir::retry::RetryTopics;
use weir::{Consumer, Message, ProcessError, Record, StringCodec, processor_fn};
use weir_outbox::{OutboxRecord, PostgresOutbox, Relay, RelayConfig};
use weir_testkit::{BrokerKind, PostgresDb};

use common::{R, wait_until};

fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("weir-tests")));
            tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
            assert!(weir_telemetry::otel::install_propagator());
            (exporter, provider)
        })
        .0
}

fn spans_of(trace: TraceId) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

fn attr(s: &SpanData, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn ids(span: &tracing::Span) -> (TraceId, SpanId) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.trace_id(), sc.span_id())
}

macro_rules! both {
    ($($name:ident),*) => {
        mod mock { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> crate::common::R { super::exporter(); super::$name(weir_testkit::BrokerKind::Mock).await }
        )* }
        mod kafka { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> crate::common::R { super::exporter(); super::$name(weir_testkit::BrokerKind::Kafka).await }
        )* }
    };
}

both!(
    consumer_span_is_a_child_of_the_producer,
    retries_stay_in_the_trace_and_link,
    outbox_carries_the_request_trace,
    a_batch_span_links_to_each_message_span
);

async fn consumer_span_is_a_child_of_the_producer(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("traced", 1).await?;
    let producer = weir::Producer::new(cluster.bootstrap_servers())?;
    let root = tracing::info_span!("http.request");
    let (trace, root_id) = ids(&root);
    producer
        .send(Record::to("traced").key("k").payload("hello"))
        .instrument(root.clone())
        .await?;
    drop(root);
    let done = Arc::new(Mutex::new(0));
    let d = done.clone();
    let consumer = Consumer::builder(common::config(&cluster, "traced-g", &["traced"]))
        .codec(StringCodec)
        .build(processor_fn(move |_m: Message<String>| {
            let d = d.clone();
            async move {
                *d.lock() += 1;
                Ok::<_, ProcessError>(())
            }
        }))?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_until("processed", Duration::from_secs(30), || *done.lock() >= 1).await;
    wait_until("span exported", Duration::from_secs(10), || {
        spans_of(trace).iter().any(|s| s.name == "traced process")
    })
    .await;
    handle.shutdown();
    let _ = run.await??;
    let spans = spans_of(trace);
    let c = spans.iter().find(|s| s.name == "traced process").unwrap();
    assert_eq!(
        c.parent_span_id, root_id,
        "consumer span is a child of the producer's span"
    );
    assert_eq!(c.span_kind, opentelemetry::trace::SpanKind::Consumer);
    assert_eq!(attr(c, "messaging.system").as_deref(), Some("kafka"));
    assert_eq!(
        attr(c, "messaging.destination.name").as_deref(),
        Some("traced")
    );
    assert_eq!(
        attr(c, "messaging.consumer.group.name").as_deref(),
        Some("traced-g")
    );
    assert_eq!(attr(c, "messaging.kafka.offset").as_deref(), Some("0"));
    assert!(
        attr(c, "weir.payload").is_none(),
        "payloads are not recorded by default"
    );
    assert!(
        attr(c, "messaging.kafka.message.key").is_none(),
        "keys are not recorded by default"
    );
    Ok(())
}

async fn retries_stay_in_the_trace_and_link(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("flaky", 1).await?;
    let rt = RetryTopics::tiers([200, 400].map(Duration::from_millis)).jitter(0.0);
    if kind == BrokerKind::Mock {
        for t in rt.retry_topics_of("flaky") {
            cluster.create_topic(&t, 1).await?;
        }
        cluster.create_topic(&rt.dlq_topic("flaky"), 1).await?;
    }
    let producer = weir::Producer::new(cluster.bootstrap_servers())?;
    let root = tracing::info_span!("job.enqueue");
    let (trace, root_id) = ids(&root);
    producer
        .send(Record::to("flaky").key("k").payload("x"))
        .instrument(root.clone())
        .await?;
    drop(root);
    let done = Arc::new(Mutex::new(false));
    let d = done.clone();
    let consumer = Consumer::builder(common::config(&cluster, "flaky-g", &["flaky"]))
        .codec(StringCodec)
        .retry_topics(rt)
        .key_in_spans(true)
        .payload_in_spans(|p| format!("<{} bytes redacted>", p.len()))
        .build(processor_fn(move |m: Message<String>| {
            let d = d.clone();
            async move {
                if m.attempt() < 3 {
                    return Err(ProcessError::retryable(std::io::Error::other("flaky")));
                }
                *d.lock() = true;
                Ok(())
            }
        }))?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_until("third attempt succeeded", Duration::from_secs(30), || {
        *done.lock()
    })
    .await;
    wait_until("three consumer spans", Duration::from_secs(10), || {
        spans_of(trace)
            .iter()
            .filter(|s| s.name.ends_with(" process"))
            .count()
            >= 3
    })
    .await;
    handle.shutdown();
    let _ = run.await??;
    let spans = spans_of(trace);
    let by = |n: &str| {
        spans.iter().find(|s| s.name == n).unwrap_or_else(|| {
            panic!(
                "no span {n}: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let (a1, a2, a3) = (
        by("flaky process"),
        by("flaky.retry.200ms process"),
        by("flaky.retry.400ms process"),
    );
    for s in [a1, a2, a3] {
        assert_eq!(
            s.parent_span_id, root_id,
            "every attempt is a child of the producer's span"
        );
    }
    assert_eq!(attr(a3, "weir.attempt").as_deref(), Some("3"));
    assert_eq!(
        attr(a1, "messaging.kafka.message.key").as_deref(),
        Some("k"),
        "opt-in key"
    );
    assert_eq!(
        attr(a1, "weir.payload").as_deref(),
        Some("<1 bytes redacted>"),
        "opt-in payload, redacted"
    );
    let links = |s: &SpanData| {
        s.links
            .links
            .iter()
            .map(|l| l.span_context.span_id())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        links(a2),
        vec![a1.span_context.span_id()],
        "attempt 2 links to attempt 1"
    );
    assert_eq!(
        links(a3),
        vec![a2.span_context.span_id()],
        "attempt 3 links to attempt 2"
    );
    Ok(())
}

async fn outbox_carries_the_request_trace(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("boxed", 1).await?;
    let db = PostgresDb::fresh().await?;
    let outbox = PostgresOutbox::new(db.pool().clone());
    outbox.migrate().await?;
    let request = tracing::info_span!("http.request");
    let (trace, request_id) = ids(&request);
    async {
        let mut tx = db.pool().begin().await?;
        PostgresOutbox::enqueue(&mut tx, OutboxRecord::to("boxed").key("k").payload("click"))
            .await?;
        tx.commit().await?;
        anyhow::Ok(())
    }
    .instrument(request.clone())
    .await?;
    drop(request);
    // The relay runs outside the request (as it would in its own process).
    let relay = Relay::new(
        outbox,
        weir::Producer::new(cluster.bootstrap_servers())?,
        RelayConfig::default(),
    );
    assert_eq!(relay.relay_once().await?, 1);
    let msgs = cluster.read_to_end("boxed").await?;
    assert!(
        msgs[0].header("traceparent").is_some(),
        "context captured at enqueue time"
    );
    let done = Arc::new(Mutex::new(false));
    let d = done.clone();
    let consumer = Consumer::builder(common::config(&cluster, "boxed-g", &["boxed"]))
        .codec(StringCodec)
        .build(processor_fn(move |_m: Message<String>| {
            let d = d.clone();
            async move {
                *d.lock() = true;
                Ok::<_, ProcessError>(())
            }
        }))?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_until("consumed", Duration::from_secs(30), || *done.lock()).await;
    wait_until("consumer span", Duration::from_secs(10), || {
        spans_of(trace).iter().any(|s| s.name == "boxed process")
    })
    .await;
    handle.shutdown();
    let _ = run.await??;
    let c = spans_of(trace)
        .into_iter()
        .find(|s| s.name == "boxed process")
        .unwrap();
    assert_eq!(
        c.parent_span_id, request_id,
        "the request's trace reaches the consumer"
    );
    let publish = exporter()
        .get_finished_spans()?
        .into_iter()
        .find(|s| {
            s.name == "boxed publish"
                && s.links
                    .links
                    .iter()
                    .any(|l| l.span_context.trace_id() == trace)
        })
        .expect("a relay publish span linked to the request");
    assert_eq!(publish.span_kind, opentelemetry::trace::SpanKind::Producer);
    assert_eq!(publish.links.links[0].span_context.span_id(), request_id);
    Ok(())
}

/// Records the batch sizes it sees; every message succeeds.
struct CountBatches(Arc<Mutex<Vec<usize>>>);

impl weir::BatchProcessor<String> for CountBatches {
    async fn process_batch(
        &self,
        batch: Vec<Message<String>>,
    ) -> Result<weir::Outcomes, ProcessError> {
        self.0.lock().push(batch.len());
        Ok(weir::Outcomes::all_ok(batch.len()))
    }
}

async fn a_batch_span_links_to_each_message_span(kind: BrokerKind) -> R {
    const N: usize = 3;
    // The exporter is shared by the mock and Kafka runs: a group of its own.
    let group = format!("batched-{kind:?}");
    let cluster = common::cluster(kind).await?;
    cluster.create_topic("batched", 1).await?;
    let producer = weir::Producer::new(cluster.bootstrap_servers())?;
    // Three requests, three traces; one message each.
    let mut traces = Vec::new();
    for i in 0..N {
        let root = tracing::info_span!("http.request");
        traces.push(ids(&root).0);
        producer
            .send(Record::to("batched").key(format!("k{i}")).payload("x"))
            .instrument(root)
            .await?;
    }
    let batches = Arc::new(Mutex::new(Vec::new()));
    // One batch of all three: full at 3, and a linger long enough for the
    // last message to arrive.
    let processor = weir::Batched::new(
        CountBatches(batches.clone()),
        weir::BatchConfig {
            max_batch: N,
            max_wait: Duration::from_secs(5),
            linger: Duration::from_secs(2),
            ..weir::BatchConfig::default()
        },
    )?
    .group_label(group.clone());
    let consumer = Consumer::builder(common::config(&cluster, &group, &["batched"]))
        .codec(StringCodec)
        .build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    let msg_spans = || -> Vec<SpanData> {
        traces
            .iter()
            .filter_map(|t| {
                spans_of(*t)
                    .into_iter()
                    .find(|s| s.name == "batched process")
            })
            .collect()
    };
    wait_until("message spans exported", Duration::from_secs(30), || {
        msg_spans().len() == N
    })
    .await;
    handle.shutdown();
    let _ = run.await??;
    assert_eq!(
        *batches.lock(),
        vec![N],
        "the three messages made one batch"
    );
    let batch_span = exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .find(|s| {
            s.name == "batch process"
                && attr(s, "messaging.consumer.group.name").as_deref() == Some(group.as_str())
        })
        .expect("a batch span");
    assert_eq!(
        batch_span.parent_span_id,
        SpanId::INVALID,
        "a batch holds many traces: its span is a root"
    );
    assert!(
        !traces.contains(&batch_span.span_context.trace_id()),
        "the batch span is in none of the messages' traces"
    );
    assert_eq!(
        attr(&batch_span, "messaging.batch.message_count").as_deref(),
        Some("3")
    );
    let mut linked: Vec<String> = batch_span
        .links
        .links
        .iter()
        .map(|l| format!("{}-{}", l.span_context.trace_id(), l.span_context.span_id()))
        .collect();
    let mut expected: Vec<String> = msg_spans()
        .iter()
        .map(|s| format!("{}-{}", s.span_context.trace_id(), s.span_context.span_id()))
        .collect();
    linked.sort();
    expected.sort();
    assert_eq!(linked, expected, "one link per message span");
    Ok(())
}
