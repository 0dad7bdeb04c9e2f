//! A schema registry outage holds Protobuf and JSON Schema consumers in
//! place exactly as it holds Avro ones (`weir-avro/tests/pipeline.rs`):
//! nothing decoded, nothing dead-lettered or sent to a retry tier, nothing
//! committed past the first undecoded message; when the registry returns,
//! every message is processed once, in order. Mock cluster, Apicurio Registry
//! behind a TCP proxy that cuts it off.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;
use weir::codec::Codec;
use weir::retry::RetryTopics;
use weir::{
    Consumer, ConsumerConfig, ConsumerHandle, Encoder, Message, ProcessError, RunReport,
    processor_fn,
};
use weir_jsonschema::{JsonSchemaCodec, JsonSchemaSerializer};
use weir_protobuf::{ProtoSchema, ProtobufCodec, ProtobufSerializer};
use weir_registry::SchemaRegistry;
use weir_testkit::{ApicurioRegistry, BrokerKind, KafkaCluster, TcpProxy, TestRecord};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone, PartialEq, prost::Message)]
struct Visit {
    #[prost(int64, tag = "1")]
    n: i64,
}
impl prost::Name for Visit {
    const NAME: &'static str = "Visit";
    const PACKAGE: &'static str = "shop";
}
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct JsonVisit {
    n: i64,
}

const PROTO: &str = "syntax = \"proto3\";\npackage shop;\nmessage Visit { int64 n = 1; }\n";
const JSON: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object",
  "properties":{"n":{"type":"integer"}},"required":["n"]}"#;
const N: i64 = 20;

type Running = (
    ConsumerHandle,
    tokio::task::JoinHandle<Result<RunReport, weir::WeirError>>,
    Arc<Mutex<Vec<i64>>>,
);

fn start<C, T>(
    cluster: &KafkaCluster,
    topic: &str,
    codec: C,
    n: fn(&T) -> i64,
) -> Result<Running, weir::WeirError>
where
    C: Codec<Value = T>,
    T: Clone + Send + Sync + 'static,
{
    let done: Arc<Mutex<Vec<i64>>> = Arc::default();
    let d = done.clone();
    let processor = processor_fn(move |m: Message<T>| {
        let d = d.clone();
        async move {
            d.lock().unwrap().push(n(m.value()));
            Ok::<_, ProcessError>(())
        }
    });
    let mut cfg = ConsumerConfig::new(cluster.bootstrap_servers(), format!("{topic}-g"), &[topic])
        .set("topic.metadata.refresh.interval.ms", "1300");
    cfg.commit_interval = Duration::from_millis(100);
    let consumer = Consumer::builder(cfg)
        .codec(codec)
        .retry_topics(RetryTopics::tiers([Duration::from_millis(200)]))
        .build(processor)?;
    let handle = consumer.handle();
    Ok((handle, tokio::spawn(consumer.run()), done))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_holds_protobuf_and_json_schema_consumers_in_place() -> R {
    weir_testkit::init_test_logging();
    let (cluster, sr) = tokio::try_join!(
        KafkaCluster::start(BrokerKind::Mock),
        ApicurioRegistry::start()
    )?;
    let direct = SchemaRegistry::builder(sr.url()).build()?;
    let url = sr.url();
    let (host_path, path) = url
        .trim_start_matches("http://")
        .split_once('/')
        .ok_or("registry URL without a path")?;
    let proxy = TcpProxy::start(host_path).await?;
    let proxied = SchemaRegistry::builder(format!("http://{}/{path}", proxy.addr()))
        .timeout(Duration::from_secs(1))
        .build()?;
    for t in ["visits.proto", "visits.json"] {
        cluster.create_topic(t, 1).await?;
        for d in [format!("{t}.retry.200ms"), format!("{t}.dlq")] {
            cluster.create_topic(&d, 1).await?;
        }
    }
    // Written while the registry is up, through its own client.
    let proto = ProtobufSerializer::<Visit>::new(
        direct.clone(),
        ProtoSchema::new("shop/visit.proto", PROTO),
    )?;
    let json = JsonSchemaSerializer::<JsonVisit>::new(direct, JSON)?;
    let mut p = Vec::new();
    let mut j = Vec::new();
    for n in 0..N {
        p.push(TestRecord::keyed(
            "k",
            &proto.encode("visits.proto", &Visit { n }).await?[..],
        ));
        j.push(TestRecord::keyed(
            "k",
            &json.encode("visits.json", &JsonVisit { n }).await?[..],
        ));
    }
    cluster.produce("visits.proto", p).await?;
    cluster.produce("visits.json", j).await?;

    proxy.cut();
    let consumers = [
        start(
            &cluster,
            "visits.proto",
            ProtobufCodec::<Visit>::new(proxied.clone()),
            |v: &Visit| v.n,
        )?,
        start(
            &cluster,
            "visits.json",
            JsonSchemaCodec::<JsonVisit>::new(proxied),
            |v: &JsonVisit| v.n,
        )?,
    ];
    let t0 = std::time::Instant::now();
    while consumers.iter().any(|c| c.0.stats().unavailable() < 3) {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "both consumers wait on the registry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for ((handle, _, done), topic) in consumers.iter().zip(["visits.proto", "visits.json"]) {
        assert!(
            done.lock().unwrap().is_empty(),
            "{topic}: nothing decoded while the registry is down"
        );
        let s = handle.stats();
        assert_eq!(s.dlq_published(), 0, "{topic}: an outage is not poison");
        assert_eq!(s.retry_published(), 0, "{topic}");
        assert_eq!(s.decode_errors(), 0, "{topic}");
        let c = cluster
            .committed_offsets(&format!("{topic}-g"), topic)
            .await?;
        assert!(
            c.values().all(|o| o.unwrap_or(-1) <= 0),
            "{topic}: nothing committed past message 0: {c:?}"
        );
    }
    proxy.restore();
    let t0 = std::time::Instant::now();
    while consumers
        .iter()
        .any(|c| c.2.lock().unwrap().len() < N as usize)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "all messages after the registry returns"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for ((handle, run, done), topic) in consumers.into_iter().zip(["visits.proto", "visits.json"]) {
        assert_eq!(
            *done.lock().unwrap(),
            (0..N).collect::<Vec<_>>(),
            "{topic}: in order, once each"
        );
        handle.shutdown();
        let report = run.await??;
        assert!(report.halted.is_empty(), "{report:?}");
        assert!(
            cluster
                .read_to_end(&format!("{topic}.dlq"))
                .await?
                .is_empty(),
            "{topic}"
        );
    }
    Ok(())
}
