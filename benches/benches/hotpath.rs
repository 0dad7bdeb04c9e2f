//! Micro-benchmarks of the per-message hot path (criterion). Run with
//! `cargo bench -p weir-bench --bench hotpath`; each group reports time per
//! batch and, through its throughput, elements per second: divide the batch
//! time by the batch size for ns/message (the summary in `benches/README.md`).

use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::executor::block_on;
use weir::codec::Codec;
use weir::codec::Encoder;
use weir::internals::{KeyScheduler, Lane, OffsetTracker, hash_key};
use weir::{Headers, JsonCodec, Ordering, RawMessage, StringCodec};
use weir_avro::{AvroCodec, AvroSerializer, GenericAvroCodec, SchemaRegistry};

const N: u64 = 1_000;

fn offsets(c: &mut Criterion) {
    let mut g = c.benchmark_group("offset_tracker");
    g.throughput(Throughput::Elements(N));
    g.bench_function("track_finish_in_order", |b| {
        b.iter(|| {
            let mut t = OffsetTracker::new();
            for o in 0..N as i64 {
                t.track(o).unwrap();
            }
            for o in 0..N as i64 {
                t.finish(o);
            }
            t.committable()
        })
    });
    // Finishing out of order (every other offset first), as concurrent handlers do.
    g.bench_function("track_finish_interleaved", |b| {
        b.iter(|| {
            let mut t = OffsetTracker::new();
            for o in 0..N as i64 {
                t.track(o).unwrap();
            }
            for o in (1..N as i64).step_by(2) {
                t.finish(o);
            }
            for o in (0..N as i64).step_by(2) {
                t.finish(o);
            }
            t.committable()
        })
    });
    g.finish();
}

fn scheduler(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..N)
        .map(|i| format!("customer-{}", i % 200).into_bytes())
        .collect();
    let mut g = c.benchmark_group("key_scheduler");
    g.throughput(Throughput::Elements(N));
    g.bench_function("hash_key", |b| {
        b.iter(|| keys.iter().map(|k| hash_key(k)).fold(0u64, |a, h| a ^ h))
    });
    g.bench_function("admit_complete_200_keys", |b| {
        b.iter_batched(
            KeyScheduler::<u64>::new,
            |mut s| {
                let mut ran = 0u64;
                let lanes: Vec<Lane> = keys
                    .iter()
                    .map(|k| Lane::of(Ordering::Key, Some(k)))
                    .collect();
                for (i, lane) in lanes.iter().enumerate() {
                    if s.admit(*lane, i as u64).is_some() {
                        ran += 1;
                    }
                }
                for lane in &lanes {
                    while s.complete(*lane).is_some() {
                        ran += 1;
                    }
                }
                ran
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn message(payload: &[u8], headers: Headers) -> RawMessage {
    RawMessage {
        topic: Arc::from("orders"),
        partition: 3,
        offset: 42,
        timestamp_ms: Some(1),
        key: Some(Bytes::from_static(b"customer-7")),
        payload: Some(Bytes::copy_from_slice(payload)),
        headers,
    }
}

fn headers(c: &mut Criterion) {
    let mut h = Headers::default();
    h.push(
        weir::MESSAGE_ID_HEADER,
        "0193a0c4-7c1e-7b8e-9a55-3f1f0c2b9d11",
    );
    h.push(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    for (k, v) in [
        (weir::retry::headers::ORIGINAL_TOPIC, "orders"),
        (weir::retry::headers::ORIGINAL_PARTITION, "3"),
        (weir::retry::headers::ORIGINAL_OFFSET, "42"),
        (weir::retry::headers::ATTEMPT, "2"),
        (weir::retry::headers::DUE_MS, "1763800000000"),
        (weir::retry::headers::ERROR_CLASS, "http_503"),
    ] {
        h.push(k, v);
    }
    let mut g = c.benchmark_group("headers");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lookup_4_of_8", |b| {
        b.iter(|| {
            (
                h.get_str(weir::MESSAGE_ID_HEADER)
                    .ok()
                    .flatten()
                    .map(str::len),
                h.get_str(weir::retry::headers::ATTEMPT)
                    .ok()
                    .flatten()
                    .map(str::len),
                h.get_str(weir::retry::headers::DUE_MS)
                    .ok()
                    .flatten()
                    .map(str::len),
                h.get_str(weir::retry::headers::NOT_BEFORE_MS)
                    .ok()
                    .flatten()
                    .map(str::len),
            )
        })
    });
    g.bench_function("outbox_encode_decode_8", |b| {
        b.iter(|| {
            weir_outbox::codec::decode(&weir_outbox::codec::encode(&h))
                .unwrap()
                .len()
        })
    });
    g.finish();
}

#[derive(serde::Serialize, serde::Deserialize)]
#[allow(dead_code)]
struct Click {
    link: String,
    at_ms: i64,
    ip: String,
    user_agent: String,
    referrer: Option<String>,
}

const CLICK_AVRO: &str = r#"{"type":"record","name":"Click","namespace":"weir.bench","fields":[
  {"name":"link","type":"string"},{"name":"at_ms","type":"long"},
  {"name":"ip","type":"string"},{"name":"user_agent","type":"string"},
  {"name":"referrer","type":["null","string"],"default":null}]}"#;

fn codecs(c: &mut Criterion) {
    let json = br#"{"link":"l-123","at_ms":1763800000000,"ip":"203.0.113.9","user_agent":"Mozilla/5.0 (X11; Linux x86_64)","referrer":"https://example.com/a"}"#;
    let m = message(json, Headers::default());
    let mut g = c.benchmark_group("codec_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_with_input(BenchmarkId::new("json_struct", json.len()), &m, |b, m| {
        let codec = JsonCodec::<Click>::new();
        b.iter(|| block_on(codec.decode(m)).unwrap().at_ms)
    });
    g.bench_with_input(BenchmarkId::new("string", json.len()), &m, |b, m| {
        b.iter(|| block_on(StringCodec.decode(m)).unwrap().len())
    });

    // Avro in the Confluent wire format, against the in-process registry stub:
    // the first decode fetches the writer schema, every later one hits the
    // codec's cache (what a consumer does per message in steady state).
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (_fixture, registry, avro) = rt.block_on(async {
        let fixture = weir_testkit::SchemaRegistryFixture::stub().await;
        let registry = SchemaRegistry::builder(fixture.url())
            .build()
            .expect("registry client");
        fixture
            .register("orders-value", CLICK_AVRO)
            .await
            .expect("register the schema");
        let ser = AvroSerializer::<Click>::new(
            registry.clone(),
            apache_avro::Schema::parse_str(CLICK_AVRO).expect("schema"),
        );
        let click: Click = serde_json::from_slice(json).expect("click");
        let bytes = ser.encode("orders", &click).await.expect("encode");
        (fixture, registry, bytes)
    });
    let m = message(&avro, Headers::default());
    let typed = AvroCodec::<Click>::new(registry.clone());
    let generic = GenericAvroCodec::new(registry);
    rt.block_on(async {
        typed.decode(&m).await.expect("typed avro decode");
        generic.decode(&m).await.expect("generic avro decode");
    });
    g.bench_with_input(BenchmarkId::new("avro_struct", avro.len()), &m, |b, m| {
        b.iter(|| block_on(typed.decode(m)).unwrap().at_ms)
    });
    g.bench_with_input(BenchmarkId::new("avro_generic", avro.len()), &m, |b, m| {
        b.iter(|| block_on(generic.decode(m)).is_ok())
    });
    g.finish();
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(hotpath, offsets, scheduler, headers, codecs);
}
use group::hotpath;
criterion_main!(hotpath);
