//! sentry_arroyo 2.49 as a peer of `weir-bench peers`, configured the way
//! arroyo's own examples and Sentry's consumers are: a `StreamProcessor` on
//! one topic, a `RunTask` step (the handler; here a no-op that counts) and
//! `CommitOffsets` as the last step, committing every 500 ms like Weir.
//!
//! The protocol every peer follows (`benches/src/scenarios/peers.rs`): the
//! scenario comes in `WEIR_BENCH_*` variables; once the peer has processed
//! `WEIR_BENCH_MESSAGES` messages it prints one JSON line to stdout
//! (`first_to_last_s`: seconds from the first message to the last) and
//! waits for stdin to close, so the harness can read its CPU time and peak
//! RSS from /proc before it exits.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sentry_arroyo::backends::kafka::InitialOffset;
use sentry_arroyo::backends::kafka::config::KafkaConfig;
use sentry_arroyo::backends::kafka::types::KafkaPayload;
use sentry_arroyo::processing::StreamProcessor;
use sentry_arroyo::processing::strategies::commit_offsets::CommitOffsets;
use sentry_arroyo::processing::strategies::run_task::RunTask;
use sentry_arroyo::processing::strategies::{
    ProcessingStrategy, ProcessingStrategyFactory, SubmitError,
};
use sentry_arroyo::types::{Message, Topic};

struct Shared {
    count: AtomicU64,
    /// When the first message came, and the process's CPU seconds by then.
    first: std::sync::Mutex<Option<(Instant, f64)>>,
    last: std::sync::Mutex<Option<Instant>>,
    target: u64,
}

struct Factory(Arc<Shared>);

impl ProcessingStrategyFactory<KafkaPayload> for Factory {
    fn create(&self) -> Box<dyn ProcessingStrategy<KafkaPayload>> {
        let shared = self.0.clone();
        let task = move |m: Message<KafkaPayload>| -> Result<Message<KafkaPayload>, SubmitError<KafkaPayload>> {
            let k = shared.count.fetch_add(1, Ordering::Relaxed) + 1;
            if k == 1 {
                *shared.first.lock().unwrap() = Some((Instant::now(), self_cpu_s()));
            }
            if k == shared.target {
                *shared.last.lock().unwrap() = Some(Instant::now());
            }
            std::hint::black_box(m.payload().payload().map(|p| p.len()));
            Ok(m)
        };
        Box::new(RunTask::new(
            task,
            CommitOffsets::new(Duration::from_millis(500)),
        ))
    }
}

/// This process's CPU seconds so far (utime + stime from /proc, 100 ticks a second).
fn self_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"))
}

fn main() {
    let bootstrap = var("WEIR_BENCH_BOOTSTRAP");
    let group = var("WEIR_BENCH_GROUP");
    let topic = var("WEIR_BENCH_TOPIC");
    let target: u64 = var("WEIR_BENCH_MESSAGES").parse().expect("a number");
    let shared = Arc::new(Shared {
        count: AtomicU64::new(0),
        first: Default::default(),
        last: Default::default(),
        target,
    });
    // `WEIR_BENCH_TUNED=1`: the fetch settings Weir sets by default instead
    // of librdkafka's (which arroyo keeps), to tell the two effects apart.
    let overrides = std::env::var("WEIR_BENCH_TUNED").ok().map(|_| {
        [
            ("fetch.wait.max.ms", "100"),
            ("fetch.queue.backoff.ms", "20"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    });
    let config = KafkaConfig::new_consumer_config(
        vec![bootstrap],
        group,
        InitialOffset::Earliest,
        false,
        30_000,
        overrides,
    );
    let mut processor =
        StreamProcessor::with_kafka(config, Factory(shared.clone()), Topic::new(&topic), None);
    let start = Instant::now();
    while shared.count.load(Ordering::Relaxed) < target {
        if start.elapsed() > Duration::from_secs(600) {
            eprintln!(
                "arroyo peer: {} of {target} in 600 s",
                shared.count.load(Ordering::Relaxed)
            );
            std::process::exit(1);
        }
        processor.run_once().expect("arroyo run_once");
    }
    let (first, cpu_before) = shared.first.lock().unwrap().expect("a first message");
    let last = shared.last.lock().unwrap().expect("the last message");
    println!(
        "{}",
        serde_json::json!({
            "first_to_last_s": (last - first).as_secs_f64(),
            "cpu_s_before_first": cpu_before,
            "processed": target,
        })
    );
    // Commits go on while the harness reads /proc; then it closes stdin.
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    processor.get_handle().signal_shutdown();
}
