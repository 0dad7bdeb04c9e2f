//! `peers`: Weir against other consumer frameworks and the raw client, each
//! as its own process on the same Apache Kafka topic and data, fresh group
//! each, alternating in rounds.
//!
//! Every system follows one protocol: the scenario comes in `WEIR_BENCH_*`
//! variables; once it has processed `WEIR_BENCH_MESSAGES` messages it prints
//! one JSON line (`first_to_last_s`) and waits for its stdin to close. The
//! harness then reads the process's CPU time (utime + stime, all threads)
//! and peak RSS (`VmHWM`) from /proc before letting it exit, so every
//! language is measured the same way. Weir and the raw librdkafka loop are
//! this binary; the peers are built by `benches/peers/build`.
//!
//! Scenarios (`--peer-scenarios`), each on its own topic:
//! - `noop`: 12 partitions, 100-byte records, a handler that does nothing,
//!   commits every 500 ms or the peer's default.
//! - `keyed-5ms`: 1 partition, 5,000 keys, a 5 ms wait per message,
//!   concurrency 200: the rate against the ideal (200 / 5 ms) and per-key
//!   order violations, checked by every system's handler the same way.
//! - `slow-partition`: 12 partitions, partition 0's handler takes 200 ms,
//!   the others' nothing: the rate of the other 11 partitions (head-of-line
//!   isolation).
//! - `retry`: 12 partitions, every tenth record fails its first attempt and
//!   is retried after 1 s without blocking the others (Weir's retry tier,
//!   Spring Kafka's retry topic, Parallel Consumer's retry delay): the rate
//!   of the healthy 90% while the retries are pending, and the retries'
//!   delay p50/p99 from the failure to the second attempt. The raw loop and
//!   arroyo have no non-blocking retry and are reported as unable.
//!
//! A system far slower than the others (a sequential loop with a 5 ms
//! handler) reports what it counted in `--time-box-s` after its first
//! message instead of running for minutes.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64};

use super::overhead::median;
use crate::*;

/// Set in a child process: which system it runs.
const PEER_ENV: &str = "WEIR_BENCH_PEER";

/// The systems `--peers` may name.
const SYSTEMS: [&str; 8] = [
    "raw",
    "raw-tuned",
    "weir",
    "arroyo",
    "arroyo-tuned",
    "parallel-consumer",
    "spring-kafka",
    "consumer-perf",
];

/// Baselines, not peers: a Weir / best-peer ratio leaves them out.
const BASELINES: [&str; 3] = ["raw", "raw-tuned", "consumer-perf"];

/// The Java peers and baseline: (system, Maven module, main class).
const JAVA_PEERS: [(&str, &str, &str); 3] = [
    (
        "parallel-consumer",
        "parallel-consumer",
        "weir.peers.ParallelConsumerPeer",
    ),
    ("spring-kafka", "spring-kafka", "weir.peers.SpringKafkaPeer"),
    // Apache Kafka's own consumer benchmark (kafka-consumer-perf-test).
    (
        "consumer-perf",
        "consumer-perf",
        "weir.peers.ConsumerPerfPeer",
    ),
];

/// Partitions of the `noop` topic.
const PARTITIONS: i32 = 12;

/// One scenario of `peers`: the topic, the data and what every system's
/// handler does with it.
#[derive(Clone, Copy, Debug)]
struct Spec {
    name: &'static str,
    partitions: i32,
    /// Record `j` has key `key-{j % keys}` and goes to partition
    /// `j % partitions`; with `keys % partitions == 0` a key stays in one
    /// partition, as a key-hashing producer keeps it.
    keys: u64,
    /// Records produced when `--messages` does not say.
    default_messages: u64,
    /// Every message's handler waits this long (ms).
    delay_ms: u64,
    /// This partition's handler waits `slow_ms`; only the other partitions'
    /// messages count towards the figure.
    slow_partition: Option<i32>,
    slow_ms: u64,
    /// In-flight limit of a system that has one (Weir's `max_in_flight`,
    /// Parallel Consumer's `maxConcurrency`, arroyo's `RunTaskInThreads`).
    concurrency: usize,
    /// Check per-key order in every system's handler the same way.
    check_order: bool,
    /// Record `j` with `j % fail_every == 0` fails its first attempt and is
    /// retried after `retry_ms` (0: nothing fails). Those records are counted
    /// apart: the figure is the rate of the others.
    fail_every: u64,
    retry_ms: u64,
}

/// The scenarios `--peer-scenarios` may name.
const SPECS: [Spec; 4] = [
    Spec {
        name: "noop",
        partitions: PARTITIONS,
        keys: 10_000,
        default_messages: 1_000_000,
        delay_ms: 0,
        slow_partition: None,
        slow_ms: 0,
        concurrency: 1024,
        check_order: false,
        fail_every: 0,
        retry_ms: 0,
    },
    Spec {
        name: "keyed-5ms",
        partitions: 1,
        keys: 5_000,
        default_messages: 100_000,
        delay_ms: 5,
        slow_partition: None,
        slow_ms: 0,
        concurrency: 200,
        check_order: true,
        fail_every: 0,
        retry_ms: 0,
    },
    Spec {
        name: "slow-partition",
        partitions: PARTITIONS,
        keys: 4_800,
        default_messages: 120_000,
        delay_ms: 0,
        slow_partition: Some(0),
        slow_ms: 200,
        concurrency: 1024,
        check_order: true,
        fail_every: 0,
        retry_ms: 0,
    },
    Spec {
        name: "retry",
        partitions: PARTITIONS,
        keys: 10_000,
        default_messages: 100_000,
        delay_ms: 0,
        slow_partition: None,
        slow_ms: 0,
        concurrency: 1024,
        check_order: false,
        fail_every: 10,
        retry_ms: 1000,
    },
];

impl Spec {
    /// Whether record `j` fails its first attempt.
    fn fails(&self, j: u64) -> bool {
        self.fail_every > 0 && j.is_multiple_of(self.fail_every)
    }

    /// The messages a system counts of `n` produced: all but the slow
    /// partition's and those that fail once.
    fn counted(&self, n: u64) -> u64 {
        (0..n)
            .filter(|j| {
                self.slow_partition
                    .is_none_or(|p| (j % self.partitions as u64) as i32 != p)
            })
            .filter(|j| !self.fails(*j))
            .count() as u64
    }

    /// The messages that fail once and are retried.
    fn retried(&self, n: u64) -> u64 {
        (0..n).filter(|j| self.fails(*j)).count() as u64
    }

    /// Why `system` cannot run this scenario, if it cannot.
    fn unable(&self, system: &str) -> Option<&'static str> {
        if system == "consumer-perf" && self.name != "noop" {
            return Some(
                "Kafka's ConsumerPerformance measures consumption only: it has no handler to wait, check order or fail",
            );
        }
        if self.fail_every == 0 {
            return None;
        }
        match system {
            "raw" | "raw-tuned" => Some(
                "a poll loop has no non-blocking retry: a failed message is retried in place, holding its partition",
            ),
            "arroyo" | "arroyo-tuned" => Some(
                "sentry_arroyo has no retry topic or delayed redelivery: a failed message is retried in place (holding its partition) or sent to its DLQ",
            ),
            _ => None,
        }
    }

    /// The rate if every handler ran at its nominal wait with the
    /// concurrency allowed (None when nothing waits).
    fn ideal_msgs_per_s(&self) -> Option<f64> {
        (self.delay_ms > 0).then(|| self.concurrency as f64 * 1000.0 / self.delay_ms as f64)
    }
}

/// In a child started by [`peers`]: runs the system it was asked for.
pub(crate) async fn peer_if_asked() -> Option<anyhow::Result<()>> {
    let system = std::env::var(PEER_ENV).ok()?;
    Some(child(&system).await)
}

fn env_var(k: &str) -> anyhow::Result<String> {
    std::env::var(k).with_context(|| format!("{k} not set"))
}

/// A child's side of the protocol: what its handler does with each message
/// (the scenario's wait, the per-key order check) and the count it reports.
/// The arroyo and Java peers implement the same rules
/// (`benches/peers/arroyo/src/main.rs`, `benches/peers/java/protocol`).
pub(crate) struct Work {
    bootstrap: String,
    group: String,
    topic: String,
    /// Messages to count before reporting.
    target: u64,
    keys: u64,
    delay: Duration,
    slow_partition: i32,
    slow: Duration,
    check_order: bool,
    concurrency: usize,
    /// Report what was counted this long after the first message even if
    /// `target` is not reached (a system far slower than the others).
    time_box: Duration,
    count: AtomicU64,
    violations: AtomicU64,
    /// Per key: the sequence number of the last message whose handler finished (-1: none).
    done: Vec<AtomicI64>,
    /// Set as the first message's handler starts (any partition: a system
    /// that handles the slow partition's messages first pays for it).
    started: AtomicBool,
    first: Mutex<Option<(Instant, f64)>>,
    last: Mutex<Option<Instant>>,
    /// Records with `seq % fail_every == 0` fail their first attempt (0: none).
    fail_every: u64,
    /// How many of those to wait for before reporting.
    retried_target: u64,
    /// When each failed record's first attempt failed.
    failed_at: Mutex<HashMap<u64, Instant>>,
    /// From each first failure to the second attempt (ms).
    retry_delays_ms: Mutex<Vec<f64>>,
    retried: AtomicU64,
}

impl Work {
    fn from_env() -> anyhow::Result<Self> {
        let num = |k: &str, default: u64| -> anyhow::Result<u64> {
            match std::env::var(k) {
                Ok(v) => v.parse().with_context(|| format!("{k}={v}: not a number")),
                Err(_) => Ok(default),
            }
        };
        let keys = num("WEIR_BENCH_KEYS", 1)?.max(1);
        let check_order = num("WEIR_BENCH_CHECK_ORDER", 0)? == 1;
        Ok(Work {
            bootstrap: env_var("WEIR_BENCH_BOOTSTRAP")?,
            group: env_var("WEIR_BENCH_GROUP")?,
            topic: env_var("WEIR_BENCH_TOPIC")?,
            target: env_var("WEIR_BENCH_MESSAGES")?.parse()?,
            keys,
            delay: Duration::from_millis(num("WEIR_BENCH_DELAY_MS", 0)?),
            slow_partition: std::env::var("WEIR_BENCH_SLOW_PARTITION")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1),
            slow: Duration::from_millis(num("WEIR_BENCH_SLOW_MS", 0)?),
            check_order,
            concurrency: num("WEIR_BENCH_CONCURRENCY", 1024)? as usize,
            time_box: Duration::from_secs(num("WEIR_BENCH_TIME_BOX_S", 600)?),
            count: AtomicU64::new(0),
            violations: AtomicU64::new(0),
            done: if check_order {
                (0..keys).map(|_| AtomicI64::new(-1)).collect()
            } else {
                Vec::new()
            },
            started: AtomicBool::new(false),
            first: Mutex::new(None),
            last: Mutex::new(None),
            fail_every: num("WEIR_BENCH_FAIL_EVERY", 0)?,
            retried_target: num("WEIR_BENCH_RETRIED", 0)?,
            failed_at: Mutex::new(HashMap::new()),
            retry_delays_ms: Mutex::new(Vec::new()),
            retried: AtomicU64::new(0),
        })
    }

    /// For a record that fails once: `true` on its first attempt (the
    /// handler fails it), `false` on the retry, whose delay is recorded.
    fn first_attempt_fails(&self, seq: Option<u64>) -> bool {
        let Some(seq) = seq.filter(|s| self.fail_every > 0 && s.is_multiple_of(self.fail_every))
        else {
            return false;
        };
        let now = Instant::now();
        let mut failed = self.failed_at.lock();
        match failed.get(&seq) {
            None => {
                failed.insert(seq, now);
                true
            }
            Some(t) => {
                self.retry_delays_ms
                    .lock()
                    .push((now - *t).as_secs_f64() * 1000.0);
                false
            }
        }
    }

    /// True for a record that fails once (counted apart from the others).
    fn is_retried(&self, seq: Option<u64>) -> bool {
        seq.is_some_and(|s| self.fail_every > 0 && s.is_multiple_of(self.fail_every))
    }

    /// How long the handler of a message on `partition` waits.
    fn wait(&self, partition: i32) -> Duration {
        if partition == self.slow_partition {
            self.slow
        } else {
            self.delay
        }
    }

    /// A handler starts on a message: with the order check on, the
    /// previous message of its key (sequence number minus `keys`) must have
    /// finished, and no later one. Returns the sequence number to pass to
    /// [`Work::end`].
    fn begin(&self, payload: Option<&[u8]>) -> Option<u64> {
        if !self.started.load(SeqCst) && !self.started.swap(true, SeqCst) {
            *self.first.lock() = Some((Instant::now(), self_cpu_s()));
        }
        if !self.check_order && self.fail_every == 0 {
            return None;
        }
        let seq: Option<u64> = payload
            .and_then(|p| p.split(|&b| b == b' ').next())
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok());
        let Some(seq) = seq else {
            self.violations.fetch_add(1, SeqCst);
            return None;
        };
        if !self.check_order {
            return Some(seq);
        }
        let expected = seq.checked_sub(self.keys).map_or(-1, |p| p as i64);
        if self.done[(seq % self.keys) as usize].load(SeqCst) != expected {
            self.violations.fetch_add(1, SeqCst);
        }
        Some(seq)
    }

    /// A handler finished a message on `partition`.
    fn end(&self, partition: i32, seq: Option<u64>) {
        if let Some(seq) = seq
            && self.check_order
        {
            self.done[(seq % self.keys) as usize].store(seq as i64, SeqCst);
        }
        if self.is_retried(seq) {
            self.retried.fetch_add(1, SeqCst);
            return;
        }
        if partition == self.slow_partition {
            return;
        }
        let k = self.count.fetch_add(1, SeqCst) + 1;
        if k == self.target {
            *self.last.lock() = Some(Instant::now());
        }
    }

    /// Waits until `target` messages are counted or the time box is over
    /// (or fails after 600 s); then what to report.
    async fn finished(&self) -> anyhow::Result<serde_json::Value> {
        let start = Instant::now();
        loop {
            let first = *self.first.lock();
            if let (Some((f, cpu)), Some(l)) = (first, *self.last.lock())
                && self.retried.load(SeqCst) >= self.retried_target
            {
                return Ok(self.report((l - f).as_secs_f64(), cpu, false));
            }
            if let Some((f, cpu)) = first
                && f.elapsed() >= self.time_box
            {
                return Ok(self.report(f.elapsed().as_secs_f64(), cpu, true));
            }
            if start.elapsed() > Duration::from_secs(600) {
                bail!(
                    "counted {} of {} messages in 600 s",
                    self.count.load(SeqCst),
                    self.target
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn report(&self, secs: f64, cpu_before: f64, time_boxed: bool) -> serde_json::Value {
        let mut delays = self.retry_delays_ms.lock().clone();
        delays.sort_by(f64::total_cmp);
        let q = |q: f64| {
            delays
                .get(((q * delays.len() as f64) as usize).min(delays.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        json!({
            "first_to_last_s": secs,
            "cpu_s_before_first": cpu_before,
            "processed": if time_boxed { self.count.load(SeqCst) } else { self.target },
            "order_violations": self.violations.load(SeqCst),
            "time_boxed": time_boxed,
            "retried": delays.len(),
            "retry_delay_ms_p50": q(0.5),
            "retry_delay_ms_p99": q(0.99),
        })
    }
}

async fn child(system: &str) -> anyhow::Result<()> {
    let work = Arc::new(Work::from_env()?);
    let w = work.clone();
    let linger: Box<dyn FnOnce() + Send> = match system {
        "raw" => tokio::task::spawn_blocking(move || raw_child(w, false)).await??,
        "raw-tuned" => tokio::task::spawn_blocking(move || raw_child(w, true)).await??,
        "weir" => weir_child(w).await?,
        other => bail!("unknown peer {other}"),
    };
    let report = work.finished().await?;
    println!("{report}");
    std::io::stdout().flush()?;
    // Alive (and committing) until the harness has read /proc.
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await?;
    linger();
    Ok(())
}

/// The raw librdkafka loop: poll, handle (the scenario's wait, one message
/// at a time), commit the consumer's positions every 500 ms (asynchronously,
/// like librdkafka's auto-commit). `tuned`: with the fetch settings Weir
/// sets by default (`fetch.wait.max.ms` 100, `fetch.queue.backoff.ms` 20),
/// so that a difference between Weir and the loop is not only librdkafka's
/// defaults. It runs on its own thread until the harness lets it go.
fn raw_child(w: Arc<Work>, tuned: bool) -> anyhow::Result<Box<dyn FnOnce() + Send>> {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &w.bootstrap)
        .set("group.id", &w.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    if tuned {
        config
            .set("fetch.wait.max.ms", "100")
            .set("fetch.queue.backoff.ms", "20");
    }
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(&[&w.topic])?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut bytes = 0usize;
        let mut last_commit = Instant::now();
        while !s.load(SeqCst) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                bytes += m.payload().map_or(0, |p| p.len());
                let seq = w.begin(m.payload());
                let wait = w.wait(m.partition());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                w.end(m.partition(), seq);
            }
            if last_commit.elapsed() >= Duration::from_millis(500) {
                let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Async);
                last_commit = Instant::now();
            }
        }
        std::hint::black_box(bytes);
    });
    Ok(Box::new(move || {
        stop.store(true, SeqCst);
        let _ = thread.join();
    }))
}

/// Weir with the scenario's handler, its defaults (key ordering) and a
/// 500 ms commit interval; `max_in_flight` = the scenario's concurrency.
async fn weir_child(w: Arc<Work>) -> anyhow::Result<Box<dyn FnOnce() + Send>> {
    use futures::future::Either;
    let w2 = w.clone();
    let processor = processor_fn(move |m: Message<Option<bytes::Bytes>>| {
        let partition = m.partition();
        let seq = w2.begin(m.value().as_deref());
        if w2.first_attempt_fails(seq) {
            return Either::Left(futures::future::ready(Err(weir::ProcessError::retryable(
                std::io::Error::other("first attempt fails (weir-bench retry scenario)"),
            ))));
        }
        let wait = w2.wait(partition);
        if wait.is_zero() {
            std::hint::black_box(m.value().as_ref().map(|p| p.len()));
            w2.end(partition, seq);
            Either::Left(futures::future::ready(Ok(())))
        } else {
            let w = w2.clone();
            Either::Right(async move {
                async_io::Timer::after(wait).await;
                w.end(partition, seq);
                Ok(())
            })
        }
    });
    let mut cfg = ConsumerConfig::new(&w.bootstrap, &w.group, &[w.topic.as_str()]);
    cfg.commit_interval = Duration::from_millis(500);
    cfg.max_in_flight = w.concurrency;
    if !w.delay.is_zero() {
        // As `weir-bench keyed`: room
        // for the messages waiting for their key, so that one busy key does
        // not stop the partition's reads.
        cfg.max_in_flight_per_partition = w.concurrency;
        cfg.max_buffered_per_partition = cfg.max_buffered_per_partition.max(w.concurrency * 20);
    }
    let cfg = cfg.with_env(std::env::vars())?;
    let retry_ms = std::env::var("WEIR_BENCH_RETRY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut builder = Consumer::builder(cfg);
    if w.fail_every > 0 {
        // One retry tier: a retryable failure goes to `<topic>.retry.1s`
        // at once (no in-process attempt) and comes back when due.
        // Without Weir's default jitter (up to +10% of the delay, against
        // retry storms): the peers have none, and the figure is the
        // mechanism's lateness.
        builder = builder.retry_topics(
            weir::retry::RetryTopics::tiers([Duration::from_millis(retry_ms)]).jitter(0.0),
        );
    }
    let consumer = builder.build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    Ok(Box::new(move || {
        handle.shutdown();
        drop(run);
    }))
}

/// What one run of one system measured.
#[derive(Clone, Debug)]
struct Run {
    msgs_per_s: f64,
    /// The whole process's CPU time.
    cpu_s: f64,
    /// CPU time spent before the first message (start-up, the group join;
    /// a JVM's class loading): `cpu_s` minus this is the processing's.
    cpu_s_before_first: f64,
    peak_rss_mb: f64,
    /// Messages counted (all of them, or fewer when time-boxed).
    processed: u64,
    order_violations: u64,
    time_boxed: bool,
    /// Retry scenario: records retried, and their delay from the first
    /// failure to the second attempt (ms).
    retried: u64,
    retry_p50_ms: f64,
    retry_p99_ms: f64,
    /// CPU seconds and context switches per thread name, read when the
    /// system reported (who is busy, and how often threads hand off).
    threads: Vec<ThreadUsage>,
}

/// One thread name's share of a run (threads of the same name summed:
/// tokio's workers, librdkafka's broker threads per broker).
#[derive(Clone, Debug)]
struct ThreadUsage {
    name: String,
    count: usize,
    cpu_s: f64,
    /// Voluntary context switches: the thread slept (a wait, a wake-up).
    voluntary: u64,
    /// Involuntary ones: the scheduler took the core away.
    involuntary: u64,
}

impl Run {
    fn cpu_s_per_million(&self) -> f64 {
        self.cpu_s * 1e6 / self.processed.max(1) as f64
    }

    fn processing_cpu_s_per_million(&self) -> f64 {
        (self.cpu_s - self.cpu_s_before_first) * 1e6 / self.processed.max(1) as f64
    }
}

/// The command that runs `system`, or why it cannot run here.
fn command(system: &str) -> Result<Command, String> {
    match system {
        "raw" | "raw-tuned" | "weir" => {
            let mut c = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
            c.env(PEER_ENV, system);
            Ok(c)
        }
        "arroyo" | "arroyo-tuned" => {
            let bin = std::env::var_os("WEIR_PEER_ARROYO")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("peers/arroyo/target/release/weir-peer-arroyo")
                });
            if !bin.exists() {
                return Err(format!(
                    "not built ({}): run benches/peers/build",
                    bin.display()
                ));
            }
            let mut c = Command::new(bin);
            if system == "arroyo-tuned" {
                c.env("WEIR_BENCH_TUNED", "1");
            }
            Ok(c)
        }
        java if JAVA_PEERS.iter().any(|(s, _, _)| *s == java) => {
            let (_, module, class) = JAVA_PEERS
                .iter()
                .find(|(s, _, _)| *s == java)
                .expect("checked");
            let dir = std::env::var_os("WEIR_PEERS_JAVA")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/java"))
                .join(module)
                .join("target");
            if !dir.join("classes").exists() || !dir.join("lib").exists() {
                return Err(format!(
                    "not built ({}): run benches/peers/build",
                    dir.display()
                ));
            }
            let mut c = Command::new("java");
            c.arg("-cp")
                .arg(format!(
                    "{}:{}/*",
                    dir.join("classes").display(),
                    dir.join("lib").display()
                ))
                .arg(class);
            Ok(c)
        }
        other => Err(format!(
            "unknown system {other} (known: {})",
            SYSTEMS.join(", ")
        )),
    }
}

/// Runs `system` once on the scenario's topic with a fresh group.
fn run_once(
    system: &str,
    spec: &Spec,
    bootstrap: &str,
    n: u64,
    time_box_s: u64,
    round: usize,
) -> anyhow::Result<Run> {
    let mut cmd = command(system).map_err(anyhow::Error::msg)?;
    let group = format!(
        "peers-{}-{system}-{}-{round}",
        spec.name,
        std::process::id()
    );
    let target = spec.counted(n);
    cmd.env("WEIR_BENCH_BOOTSTRAP", bootstrap)
        .env("WEIR_BENCH_GROUP", &group)
        .env("WEIR_BENCH_TOPIC", topic_of(spec))
        .env("WEIR_BENCH_SCENARIO", spec.name)
        .env("WEIR_BENCH_MESSAGES", target.to_string())
        .env("WEIR_BENCH_PARTITIONS", spec.partitions.to_string())
        .env("WEIR_BENCH_KEYS", spec.keys.to_string())
        .env("WEIR_BENCH_DELAY_MS", spec.delay_ms.to_string())
        .env(
            "WEIR_BENCH_SLOW_PARTITION",
            spec.slow_partition.unwrap_or(-1).to_string(),
        )
        .env("WEIR_BENCH_SLOW_MS", spec.slow_ms.to_string())
        .env(
            "WEIR_BENCH_CHECK_ORDER",
            u8::from(spec.check_order).to_string(),
        )
        .env("WEIR_BENCH_TIME_BOX_S", time_box_s.to_string())
        .env("WEIR_BENCH_CONCURRENCY", spec.concurrency.to_string())
        .env("WEIR_BENCH_FAIL_EVERY", spec.fail_every.to_string())
        .env("WEIR_BENCH_RETRY_MS", spec.retry_ms.to_string())
        .env("WEIR_BENCH_RETRIED", spec.retried(n).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().with_context(|| format!("starting {system}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    // The child's JSON line is the last thing it prints before waiting; a
    // peer may print other lines first (a JVM's banner).
    let mut reader = BufReader::new(stdout);
    let reported: serde_json::Value = loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            let status = child.wait()?;
            bail!("{system} ended ({status}) without reporting");
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim())
            && v.get("first_to_last_s").is_some()
        {
            break v;
        }
    };
    let (cpu_s, peak_rss_mb) = proc_usage(child.id())?;
    let threads = thread_usage(child.id());
    drop(child.stdin.take());
    let status = child.wait()?;
    if !status.success() {
        bail!("{system} exited with {status}");
    }
    let secs = reported["first_to_last_s"]
        .as_f64()
        .context("first_to_last_s")?;
    let processed = reported["processed"]
        .as_u64()
        .or_else(|| reported["processed"].as_str()?.parse().ok())
        .unwrap_or(target);
    Ok(Run {
        msgs_per_s: processed.saturating_sub(1) as f64 / secs.max(1e-9),
        cpu_s,
        cpu_s_before_first: reported["cpu_s_before_first"].as_f64().unwrap_or(0.0),
        peak_rss_mb,
        processed,
        order_violations: reported["order_violations"].as_u64().unwrap_or(0),
        time_boxed: reported["time_boxed"].as_bool().unwrap_or(false),
        retried: reported["retried"].as_u64().unwrap_or(0),
        retry_p50_ms: reported["retry_delay_ms_p50"].as_f64().unwrap_or(0.0),
        retry_p99_ms: reported["retry_delay_ms_p99"].as_f64().unwrap_or(0.0),
        threads,
    })
}

/// CPU time and context switches of a live process's threads, summed per
/// thread name with trailing digits dropped (`rdk:broker3` and
/// `rdk:broker1001` are one `rdk:broker`), busiest first. Empty if /proc
/// cannot say (a thread may end while it is read: it is skipped).
fn thread_usage(pid: u32) -> Vec<ThreadUsage> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut by_name: Vec<ThreadUsage> = Vec::new();
    for task in tasks.flatten() {
        let dir = task.path();
        let (Ok(stat), Ok(status)) = (
            std::fs::read_to_string(dir.join("stat")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue;
        };
        let Some((name, cpu)) = stat_cpu(&stat) else {
            continue;
        };
        let name = name
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string();
        let vol = status_number(&status, "voluntary_ctxt_switches:").unwrap_or(0);
        let invol = status_number(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
        match by_name.iter_mut().find(|t| t.name == name) {
            Some(t) => {
                t.count += 1;
                t.cpu_s += cpu;
                t.voluntary += vol;
                t.involuntary += invol;
            }
            None => by_name.push(ThreadUsage {
                name,
                count: 1,
                cpu_s: cpu,
                voluntary: vol,
                involuntary: invol,
            }),
        }
    }
    by_name.sort_by(|a, b| b.cpu_s.total_cmp(&a.cpu_s));
    by_name
}

fn topic_of(spec: &Spec) -> String {
    format!("peers-{}", spec.name)
}

/// This process's CPU seconds so far (0 if /proc cannot say).
fn self_cpu_s() -> f64 {
    proc_usage(std::process::id()).map_or(0.0, |(cpu, _)| cpu)
}

/// CPU seconds (user + system, all threads) and peak RSS (MB) of a live process.
fn proc_usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, cpu_s) = stat_cpu(&stat).context("/proc stat: utime, stime")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kb = status_number(&status, "VmHWM:").context("VmHWM")?;
    Ok((cpu_s, hwm_kb as f64 / 1024.0))
}

/// The command name and CPU seconds (user + system) of a `/proc` `stat`
/// file (a process's or a thread's). The name may hold spaces and
/// parentheses: the fields are those after its last `)`.
fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some((name, (utime + stime) / ticks))
}

/// The number that starts the value of line `key` of a `/proc` `status` file.
fn status_number(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(crate) async fn peers(
    args: &Args,
    cluster: &KafkaCluster,
) -> anyhow::Result<serde_json::Value> {
    let systems: Vec<String> = args
        .peers
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut specs = Vec::new();
    for name in args.peer_scenarios.split(',').map(str::trim) {
        match SPECS.iter().find(|s| s.name == name) {
            Some(s) => specs.push(*s),
            None => bail!(
                "unknown peers scenario {name} (known: {})",
                SPECS.map(|s| s.name).join(", ")
            ),
        }
    }
    let mut skipped: HashMap<String, String> = HashMap::new();
    for s in &systems {
        if let Err(why) = command(s) {
            println!("peers: {s} skipped: {why}");
            skipped.insert(s.clone(), why);
        }
    }
    let mut out = serde_json::Map::new();
    for spec in &specs {
        let r = scenario(args, cluster, spec, &systems, &skipped).await?;
        out.insert(spec.name.to_string(), r);
    }
    Ok(serde_json::Value::Object(out))
}

/// Runs one scenario: produces its data once, then every system in turn,
/// `--rounds` times.
async fn scenario(
    args: &Args,
    cluster: &KafkaCluster,
    spec: &Spec,
    systems: &[String],
    skipped: &HashMap<String, String>,
) -> anyhow::Result<serde_json::Value> {
    let name = spec.name;
    let n = args.messages.unwrap_or(spec.default_messages);
    let topic = topic_of(spec);
    cluster.create_topic(&topic, spec.partitions).await?;
    if spec.fail_every > 0 && cluster.kind() == weir_testkit::BrokerKind::Mock {
        // The mock cluster has no CreateTopics: Weir's tier and DLQ up front
        // (on Kafka Weir creates them).
        let rt = weir::retry::RetryTopics::tiers([Duration::from_millis(spec.retry_ms)]);
        for t in rt.retry_topics_of(&topic) {
            cluster.create_topic(&t, spec.partitions).await?;
        }
        cluster
            .create_topic(&rt.dlq_topic(&topic), spec.partitions)
            .await?;
    }
    let started = Instant::now();
    produce(cluster, &topic, n, spec.keys, spec.partitions).await?;
    println!(
        "peers {name}: {n} records of ~100 bytes, {} keys on {} partitions, produced in {:.1} s",
        spec.keys,
        spec.partitions,
        started.elapsed().as_secs_f64()
    );
    let mut runs: HashMap<String, Vec<Run>> = HashMap::new();
    let bootstrap = cluster.bootstrap_servers().to_string();
    let time_box = args.time_box_s;
    let unable: HashMap<String, &str> = systems
        .iter()
        .filter_map(|s| spec.unable(s).map(|why| (s.clone(), why)))
        .collect();
    for (s, why) in &unable {
        println!("peers {name}: {s} cannot run it: {why}");
    }
    // A peer that fails (it crashed, or ended without reporting) is
    // reported with why and left out of the later rounds; the others still
    // run. Weir failing fails the command.
    let mut failed: HashMap<String, String> = HashMap::new();
    for round in 0..args.rounds.max(1) {
        // Each round starts one system further along the list, so that no
        // system always runs first (on a cold page cache and JIT) or right
        // after the same neighbour.
        for s in systems
            .iter()
            .cycle()
            .skip(round % systems.len().max(1))
            .take(systems.len())
            .filter(|s| !skipped.contains_key(*s) && !unable.contains_key(*s))
        {
            if failed.contains_key(s) {
                continue;
            }
            let (s2, b, sp) = (s.clone(), bootstrap.clone(), *spec);
            let r = match tokio::task::spawn_blocking(move || {
                run_once(&s2, &sp, &b, n, time_box, round)
            })
            .await?
            {
                Ok(r) => r,
                Err(e) if s != "weir" => {
                    println!("peers {name} round {}: {s} failed: {e:#}", round + 1);
                    failed.insert(s.clone(), format!("round {}: {e:#}", round + 1));
                    continue;
                }
                Err(e) => return Err(e),
            };
            println!(
                "peers {name} round {}: {s:>17} {:>9.0} msg/s{}, CPU s per million {:>6.2} (processing {:>5.2}), peak RSS {:>6.1} MB{}",
                round + 1,
                r.msgs_per_s,
                if r.time_boxed {
                    format!(" ({} in the {time_box} s box)", r.processed)
                } else {
                    String::new()
                },
                r.cpu_s_per_million(),
                r.processing_cpu_s_per_million(),
                r.peak_rss_mb,
                if spec.check_order {
                    format!(", order violations {}", r.order_violations)
                } else {
                    String::new()
                },
            );
            if !r.threads.is_empty() {
                // Per million messages: CPU s, then voluntary/involuntary
                // context switches (thousands).
                let per_m = 1e6 / r.processed.max(1) as f64;
                println!(
                    "peers {name} round {}: {s:>17} threads per million: {}",
                    round + 1,
                    r.threads
                        .iter()
                        .filter(|t| t.cpu_s * per_m >= 0.01)
                        .map(|t| format!(
                            "{}x{} {:.2} s {:.0}k/{:.0}k cs",
                            t.name,
                            t.count,
                            t.cpu_s * per_m,
                            t.voluntary as f64 * per_m / 1e3,
                            t.involuntary as f64 * per_m / 1e3
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if spec.fail_every > 0 {
                println!(
                    "peers {name} round {}: {s:>17} retried {} after p50 {:.0} ms, p99 {:.0} ms (asked: {} ms)",
                    round + 1,
                    r.retried,
                    r.retry_p50_ms,
                    r.retry_p99_ms,
                    spec.retry_ms
                );
            }
            runs.entry(s.clone()).or_default().push(r);
        }
    }
    let ideal = spec.ideal_msgs_per_s();
    let mut table = serde_json::Map::new();
    for (s, rs) in &runs {
        let rate = median(&rs.iter().map(|r| r.msgs_per_s).collect::<Vec<_>>());
        let mut row = json!({
            "msgs_per_s": rate.round(),
            "cpu_s_per_million": median(&rs.iter().map(Run::cpu_s_per_million).collect::<Vec<_>>()),
            "processing_cpu_s_per_million": median(&rs.iter().map(Run::processing_cpu_s_per_million).collect::<Vec<_>>()),
            "peak_rss_mb": rs.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max),
            "rounds": rs.iter().map(|r| r.msgs_per_s.round()).collect::<Vec<_>>(),
            "time_boxed": rs.iter().any(|r| r.time_boxed),
            "threads_per_round": rs.iter().map(|r| r.threads.iter().map(|t| json!({
                "name": t.name, "count": t.count, "cpu_s": t.cpu_s,
                "voluntary_switches": t.voluntary, "involuntary_switches": t.involuntary,
            })).collect::<Vec<_>>()).collect::<Vec<_>>(),
        });
        if spec.check_order {
            row["order_violations"] = json!(rs.iter().map(|r| r.order_violations).sum::<u64>());
        }
        if let Some(ideal) = ideal {
            row["ratio_vs_ideal"] = json!(rate / ideal);
        }
        if spec.fail_every > 0 {
            row["retried"] = json!(rs.iter().map(|r| r.retried).min().unwrap_or(0));
            row["retry_delay_ms_p50"] = json!(median(
                &rs.iter().map(|r| r.retry_p50_ms).collect::<Vec<_>>()
            ));
            row["retry_delay_ms_p99"] = json!(median(
                &rs.iter().map(|r| r.retry_p99_ms).collect::<Vec<_>>()
            ));
        }
        table.insert(s.clone(), row);
    }
    let rate = |s: &str| table.get(s).and_then(|v| v["msgs_per_s"].as_f64());
    let best_peer = table
        .keys()
        .filter(|s| s.as_str() != "weir" && !BASELINES.contains(&s.as_str()))
        .filter_map(|s| rate(s).map(|r| (s.clone(), r)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let weir = rate("weir");
    let vs_peer = weir.zip(best_peer.as_ref()).map(|(w, (_, p))| w / p);
    let vs_raw = weir.zip(rate("raw")).map(|(w, r)| w / r);
    let vs_raw_tuned = weir.zip(rate("raw-tuned")).map(|(w, r)| w / r);
    let vs_consumer_perf = weir.zip(rate("consumer-perf")).map(|(w, r)| w / r);
    let show = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.3}"));
    println!(
        "peers {name} (median of {} rounds): weir / best peer ({}) {}, weir / raw librdkafka loop {} (with Weir's fetch settings {}), weir / Kafka's ConsumerPerformance {}{}",
        args.rounds.max(1),
        best_peer.as_ref().map_or("none", |(s, _)| s.as_str()),
        show(vs_peer),
        show(vs_raw),
        show(vs_raw_tuned),
        show(vs_consumer_perf),
        ideal.map_or(String::new(), |i| format!(", ideal {i:.0} msg/s")),
    );
    Ok(json!({
        "partitions": spec.partitions,
        "keys": spec.keys,
        "messages": n,
        "counted": spec.counted(n),
        "handler_ms": spec.delay_ms,
        "slow_partition": spec.slow_partition,
        "slow_ms": spec.slow_ms,
        "concurrency": spec.concurrency,
        "ideal_msgs_per_s": ideal,
        "time_box_s": time_box,
        "fail_every": spec.fail_every,
        "retry_ms": spec.retry_ms,
        "retried": spec.retried(n),
        "systems": table,
        "skipped": skipped,
        "unable": unable,
        "failed": failed,
        "best_peer": best_peer.map(|(s, _)| s),
        "weir_vs_best_peer": vs_peer,
        "weir_vs_raw": vs_raw,
        "weir_vs_raw_tuned": vs_raw_tuned,
        "weir_vs_consumer_performance": vs_consumer_perf,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_fields_are_read_after_the_name() {
        // A command name with a space and a `)` of its own; utime and
        // stime are the 14th and 15th fields (11 and 12 after the name).
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let stat = "42 (we ir) x) S 1 2 3 4 5 6 7 8 9 10 300 200 0 0";
        let (name, cpu) = stat_cpu(stat).expect("parsed");
        assert_eq!(name, "we ir) x");
        assert_eq!(cpu, 500.0 / ticks);
        assert_eq!(stat_cpu("42 (short) S 1 2"), None);
        let status = "Name:\tw\nVmHWM:\t  2048 kB\nvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_number(status, "VmHWM:"), Some(2048));
        assert_eq!(status_number(status, "voluntary_ctxt_switches:"), Some(7));
        assert_eq!(status_number(status, "nonvoluntary_ctxt_switches:"), None);
    }

    #[test]
    fn thread_usage_sums_threads_of_one_name_and_sees_their_cpu() {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spin = |name: &str| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
                .expect("spawn")
        };
        let threads = [spin("usage-spin1"), spin("usage-spin22")];
        // Enough CPU for several clock ticks each.
        let started = Instant::now();
        let seen = loop {
            let all = thread_usage(std::process::id());
            if let Some(t) = all.iter().find(|t| t.name == "usage-spin")
                && t.count == 2
                && t.cpu_s >= 0.05
            {
                break t.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the two spinning threads never showed as one name with CPU: {all:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in threads {
            t.join().expect("join");
        }
        assert_eq!(seen.count, 2, "trailing digits dropped: one name");
        assert!(
            thread_usage(u32::MAX).is_empty(),
            "no such process: nothing"
        );
    }
}
