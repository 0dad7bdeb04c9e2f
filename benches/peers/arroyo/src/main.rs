//! sentry_arroyo 2.49 as a peer of `weir-bench peers`, configured the way
//! arroyo's own examples and Sentry's consumers are: a `StreamProcessor` on
//! one topic, the handler step and `CommitOffsets` as the last step,
//! committing every 500 ms like Weir. The handler step is `RunTask` when the
//! handler does not wait (`noop`), and `RunTaskInThreads` (arroyo's step for
//! concurrent handlers: up to `WEIR_BENCH_CONCURRENCY` futures in flight,
//! forwarded in offset order) when it does.
//!
//! The protocol every peer follows (`benches/src/scenarios/peers.rs`): the
//! scenario comes in `WEIR_BENCH_*` variables; once the peer has counted
//! `WEIR_BENCH_MESSAGES` messages (or `WEIR_BENCH_TIME_BOX_S` after the
//! first) it prints one JSON line to stdout and waits for stdin to close, so
//! the harness can read its CPU time and peak RSS from /proc. The handler's
//! rules (the wait, the slow partition, the per-key order check) are the
//! same as in `Work` there.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sentry_arroyo::backends::kafka::InitialOffset;
use sentry_arroyo::backends::kafka::config::KafkaConfig;
use sentry_arroyo::backends::kafka::types::KafkaPayload;
use sentry_arroyo::processing::StreamProcessor;
use sentry_arroyo::processing::strategies::commit_offsets::CommitOffsets;
use sentry_arroyo::processing::strategies::run_task::RunTask;
use sentry_arroyo::processing::strategies::run_task_in_threads::{
    ConcurrencyConfig, RunTaskError, RunTaskFunc, RunTaskInThreads,
};
use sentry_arroyo::processing::strategies::{
    ProcessingStrategy, ProcessingStrategyFactory, SubmitError,
};
use sentry_arroyo::types::{InnerMessage, Message, Topic};

struct Shared {
    count: AtomicU64,
    violations: AtomicU64,
    /// Per key: the sequence number of the last finished message (-1: none).
    done: Vec<AtomicI64>,
    /// When the first message came, and the process's CPU seconds by then.
    first: std::sync::Mutex<Option<(Instant, f64)>>,
    started: std::sync::atomic::AtomicBool,
    last: std::sync::Mutex<Option<Instant>>,
    target: u64,
    keys: u64,
    delay: Duration,
    slow_partition: i32,
    slow: Duration,
    check_order: bool,
    concurrency: usize,
}

impl Shared {
    fn wait(&self, partition: i32) -> Duration {
        if partition == self.slow_partition {
            self.slow
        } else {
            self.delay
        }
    }

    fn begin(&self, payload: Option<&[u8]>) -> Option<u64> {
        if !self.started.load(Ordering::SeqCst) && !self.started.swap(true, Ordering::SeqCst) {
            *self.first.lock().unwrap() = Some((Instant::now(), self_cpu_s()));
        }
        if !self.check_order {
            return None;
        }
        let seq: Option<u64> = payload
            .and_then(|p| p.split(|&b| b == b' ').next())
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok());
        let Some(seq) = seq else {
            self.violations.fetch_add(1, Ordering::SeqCst);
            return None;
        };
        let expected = seq.checked_sub(self.keys).map_or(-1, |p| p as i64);
        if self.done[(seq % self.keys) as usize].load(Ordering::SeqCst) != expected {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        Some(seq)
    }

    fn end(&self, partition: i32, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.done[(seq % self.keys) as usize].store(seq as i64, Ordering::SeqCst);
        }
        if partition == self.slow_partition {
            return;
        }
        let k = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if k == self.target {
            *self.last.lock().unwrap() = Some(Instant::now());
        }
    }
}

struct Factory {
    shared: Arc<Shared>,
    /// The runtime `RunTaskInThreads` spawns its futures on (two workers:
    /// the handlers only wait).
    runtime: tokio::runtime::Handle,
}

impl ProcessingStrategyFactory<KafkaPayload> for Factory {
    fn create(&self) -> Box<dyn ProcessingStrategy<KafkaPayload>> {
        let shared = self.shared.clone();
        let commit = CommitOffsets::new(Duration::from_millis(500));
        if shared.delay.is_zero() && shared.slow.is_zero() {
            let task = move |m: Message<KafkaPayload>| -> Result<Message<KafkaPayload>, SubmitError<KafkaPayload>> {
                let partition = partition_of(&m);
                let seq = shared.begin(m.payload().payload().map(|p| p.as_slice()));
                std::hint::black_box(m.payload().payload().map(|p| p.len()));
                shared.end(partition, seq);
                Ok(m)
            };
            return Box::new(RunTask::new(task, commit));
        }
        let concurrency = ConcurrencyConfig::with_runtime(shared.concurrency, self.runtime.clone());
        let runner = move |m: Message<KafkaPayload>| -> RunTaskFunc<KafkaPayload, Never> {
            let shared = shared.clone();
            Box::pin(async move {
                let partition = partition_of(&m);
                let seq = shared.begin(m.payload().payload().map(|p| p.as_slice()));
                let wait = shared.wait(partition);
                if !wait.is_zero() {
                    // The same timer as Weir's handler (timerfd-backed).
                    async_io::Timer::after(wait).await;
                }
                shared.end(partition, seq);
                Ok::<_, RunTaskError<Never>>(m)
            })
        };
        Box::new(RunTaskInThreads::new(commit, runner, &concurrency, None))
    }
}

/// The partition a message came from (-1 for a message arroyo built itself).
fn partition_of(m: &Message<KafkaPayload>) -> i32 {
    match &m.inner_message {
        InnerMessage::BrokerMessage(b) => i32::from(b.partition.index),
        InnerMessage::AnyMessage(_) => -1,
    }
}

/// The error type of the handler's future: it never fails.
#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

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

fn num(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{k}={v}: not a number")))
        .unwrap_or(default)
}

fn main() {
    let bootstrap = var("WEIR_BENCH_BOOTSTRAP");
    let group = var("WEIR_BENCH_GROUP");
    let topic = var("WEIR_BENCH_TOPIC");
    let target: u64 = var("WEIR_BENCH_MESSAGES").parse().expect("a number");
    let keys = num("WEIR_BENCH_KEYS", 1).max(1);
    let check_order = num("WEIR_BENCH_CHECK_ORDER", 0) == 1;
    let time_box = Duration::from_secs(num("WEIR_BENCH_TIME_BOX_S", 600));
    let shared = Arc::new(Shared {
        count: AtomicU64::new(0),
        violations: AtomicU64::new(0),
        done: if check_order {
            (0..keys).map(|_| AtomicI64::new(-1)).collect()
        } else {
            Vec::new()
        },
        first: Default::default(),
        started: Default::default(),
        last: Default::default(),
        target,
        keys,
        delay: Duration::from_millis(num("WEIR_BENCH_DELAY_MS", 0)),
        slow_partition: std::env::var("WEIR_BENCH_SLOW_PARTITION")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1),
        slow: Duration::from_millis(num("WEIR_BENCH_SLOW_MS", 0)),
        check_order,
        concurrency: num("WEIR_BENCH_CONCURRENCY", 1024) as usize,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let factory = Factory {
        shared: shared.clone(),
        runtime: runtime.handle().clone(),
    };
    let mut processor = StreamProcessor::with_kafka(config, factory, Topic::new(&topic), None);
    let start = Instant::now();
    let (secs, cpu_before, processed, boxed) = loop {
        let first = *shared.first.lock().unwrap();
        if let (Some((f, cpu)), Some(l)) = (first, *shared.last.lock().unwrap()) {
            break ((l - f).as_secs_f64(), cpu, target, false);
        }
        if let Some((f, cpu)) = first
            && f.elapsed() >= time_box
        {
            let n = shared.count.load(Ordering::SeqCst);
            break (f.elapsed().as_secs_f64(), cpu, n, true);
        }
        if start.elapsed() > Duration::from_secs(600) {
            eprintln!(
                "arroyo peer: {} of {target} in 600 s",
                shared.count.load(Ordering::SeqCst)
            );
            std::process::exit(1);
        }
        processor.run_once().expect("arroyo run_once");
    };
    println!(
        "{}",
        serde_json::json!({
            "first_to_last_s": secs,
            "cpu_s_before_first": cpu_before,
            "processed": processed,
            "order_violations": shared.violations.load(Ordering::SeqCst),
            "time_boxed": boxed,
        })
    );
    // Commits go on while the harness reads /proc; then it closes stdin.
    let mut handle = processor.get_handle();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read(&mut [0u8; 1]);
        handle.signal_shutdown();
    });
    let _ = processor.run();
}
