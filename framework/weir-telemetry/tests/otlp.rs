//! OTLP export end to end, on the mock cluster and tansu: the provider from
//! `otel::otlp_tracer_provider_with_endpoint` sends Weir's consumer spans over
//! gRPC to a collector (a `TraceService` kept in this test), with the service
//! name, the producer's trace and parent, the messaging attributes and no
//! payload. Needs the `otlp` feature (`scripts/test` runs it with it).

#[path = "../../weir/tests/common/mod.rs"]
#[allow(unused_macros)]
mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use opentelemetry_sdk::trace::SdkTracerProvider;
use parking_lot::Mutex;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use weir::{Consumer, Message, ProcessError, Record, StringCodec, processor_fn};
use weir_testkit::BrokerKind;

use common::{R, wait_until};

const SERVICE: &str = "weir-otlp-test";

/// A received span with its resource's `service.name`.
type Received = (Option<String>, Span);

/// What the collector received.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "service.name"));
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.clone()),
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(i)),
            }) => Some(i.to_string()),
            _ => None,
        })
}

struct Otlp {
    collector: Collector,
    provider: SdkTracerProvider,
    /// Runs the collector and the exporter's gRPC channel for the whole binary
    /// (each test has its own runtime, which ends with the test).
    _runtime: tokio::runtime::Runtime,
}

fn otlp() -> &'static Otlp {
    static OTLP: OnceLock<Otlp> = OnceLock::new();
    // Built on a thread of its own: the tests call this inside their runtime,
    // where another runtime cannot block.
    OTLP.get_or_init(|| std::thread::spawn(start).join().expect("OTLP set-up"))
}

fn start() -> Otlp {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let collector = Collector::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let provider = runtime
        .block_on(async {
            weir_telemetry::otel::otlp_tracer_provider_with_endpoint(
                SERVICE,
                &format!("http://{addr}"),
            )
        })
        .expect("OTLP provider");
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("weir-otlp")));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
    assert!(weir_telemetry::otel::install_propagator());
    Otlp {
        collector,
        provider,
        _runtime: runtime,
    }
}

macro_rules! both {
    ($($name:ident),*) => {
        mod mock { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> crate::common::R { super::otlp(); super::$name(weir_testkit::BrokerKind::Mock).await }
        )* }
        mod kafka { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> crate::common::R { super::otlp(); super::$name(weir_testkit::BrokerKind::Kafka).await }
        )* }
    };
}

both!(consumer_spans_reach_the_collector);

async fn consumer_spans_reach_the_collector(kind: BrokerKind) -> R {
    let topic = format!("otlp-{kind:?}").to_lowercase();
    let group = format!("{topic}-g");
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(&topic, 1).await?;
    let producer = weir::Producer::new(cluster.bootstrap_servers())?;
    let root = tracing::info_span!("http.request");
    let sc = root.context().span().span_context().clone();
    let (trace, root_id) = (sc.trace_id().to_bytes(), sc.span_id().to_bytes());
    producer
        .send(
            Record::to(&topic)
                .key("user-7")
                .payload("secret-payload-91"),
        )
        .instrument(root.clone())
        .await?;
    drop(root);

    let consumer = Consumer::builder(common::config(&cluster, &group, &[topic.as_str()]))
        .codec(StringCodec)
        .build(processor_fn(|_m: Message<String>| async {
            Ok::<_, ProcessError>(())
        }))?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_until("processed", Duration::from_secs(30), || {
        handle.stats().processed() >= 1
    })
    .await;
    handle.shutdown();
    let _ = run.await??;

    // The batch processor exports on its own schedule; flushing makes it now.
    let o = otlp();
    let provider = o.provider.clone();
    tokio::task::spawn_blocking(move || provider.force_flush()).await??;
    let name = format!("{topic} process");
    let received = o.collector.0.lock().clone();
    let mine: Vec<&Received> = received
        .iter()
        .filter(|(_, s)| s.trace_id == trace)
        .collect();
    let (service, span) = mine
        .iter()
        .find(|(_, s)| s.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no `{name}` span of the producer's trace reached the collector; got {:?}",
                mine.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(service.as_deref(), Some(SERVICE), "resource service.name");
    assert_eq!(
        span.parent_span_id, root_id,
        "child of the producer's span, across Kafka headers and OTLP"
    );
    assert_eq!(span.kind, SpanKind::Consumer as i32);
    assert_eq!(
        string_attr(&span.attributes, "messaging.system").as_deref(),
        Some("kafka")
    );
    assert_eq!(
        string_attr(&span.attributes, "messaging.destination.name").as_deref(),
        Some(topic.as_str())
    );
    assert_eq!(
        string_attr(&span.attributes, "messaging.consumer.group.name").as_deref(),
        Some(group.as_str())
    );
    assert!(
        span.end_time_unix_nano > span.start_time_unix_nano,
        "a finished span with a duration"
    );
    let dump = format!("{mine:?}");
    assert!(
        !dump.contains("secret-payload-91") && !dump.contains("user-7"),
        "neither payload nor key leaves the process: {dump}"
    );
    Ok(())
}
