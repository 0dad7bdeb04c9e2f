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
//! Scenarios: `noop` (12 partitions, 100-byte records, a handler that does
//! nothing, commits every 500 ms or the peer's default).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::overhead::median;
use crate::*;

/// Set in a child process: which system it runs.
const PEER_ENV: &str = "WEIR_BENCH_PEER";

/// The systems `--peers` may name.
const SYSTEMS: [&str; 7] = [
    "raw",
    "raw-tuned",
    "weir",
    "arroyo",
    "arroyo-tuned",
    "parallel-consumer",
    "spring-kafka",
];

/// The Java peers: (system, Maven module, main class).
const JAVA_PEERS: [(&str, &str, &str); 2] = [
    (
        "parallel-consumer",
        "parallel-consumer",
        "weir.peers.ParallelConsumerPeer",
    ),
    ("spring-kafka", "spring-kafka", "weir.peers.SpringKafkaPeer"),
];

/// Partitions of the `noop` topic.
const PARTITIONS: i32 = 12;

/// In a child started by [`peers`]: runs the system it was asked for.
pub(crate) async fn peer_if_asked() -> Option<anyhow::Result<()>> {
    let system = std::env::var(PEER_ENV).ok()?;
    Some(child(&system).await)
}

struct ChildArgs {
    bootstrap: String,
    group: String,
    topic: String,
    messages: u64,
}

impl ChildArgs {
    fn from_env() -> anyhow::Result<Self> {
        let var = |k: &str| std::env::var(k).with_context(|| format!("{k} not set"));
        Ok(ChildArgs {
            bootstrap: var("WEIR_BENCH_BOOTSTRAP")?,
            group: var("WEIR_BENCH_GROUP")?,
            topic: var("WEIR_BENCH_TOPIC")?,
            messages: var("WEIR_BENCH_MESSAGES")?.parse()?,
        })
    }
}

/// What a child reports once done: seconds from the first message to the
/// last, CPU seconds before the first, and what to do once the harness has
/// read its usage (stop the consumer).
type Finished = (f64, f64, Box<dyn FnOnce() + Send>);

async fn child(system: &str) -> anyhow::Result<()> {
    let a = ChildArgs::from_env()?;
    let (secs, cpu_before, linger): Finished = match system {
        "raw" => tokio::task::spawn_blocking(move || raw_child(&a, false)).await??,
        "raw-tuned" => tokio::task::spawn_blocking(move || raw_child(&a, true)).await??,
        "weir" => weir_child(&a).await?,
        other => bail!("unknown peer {other}"),
    };
    println!(
        "{}",
        json!({
            "first_to_last_s": secs,
            "cpu_s_before_first": cpu_before,
            "processed": std::env::var("WEIR_BENCH_MESSAGES")?,
        })
    );
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

/// The raw librdkafka loop: poll, count, commit the consumer's positions
/// every 500 ms (asynchronously, like librdkafka's auto-commit). `tuned`:
/// with the fetch settings Weir sets by default (`fetch.wait.max.ms` 100,
/// `fetch.queue.backoff.ms` 20), so that a difference between Weir and the
/// loop is not only librdkafka's defaults.
fn raw_child(a: &ChildArgs, tuned: bool) -> anyhow::Result<Finished> {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &a.bootstrap)
        .set("group.id", &a.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    if tuned {
        config
            .set("fetch.wait.max.ms", "100")
            .set("fetch.queue.backoff.ms", "20");
    }
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(&[&a.topic])?;
    let (mut seen, mut bytes, mut first) = (0u64, 0usize, None);
    let mut cpu_before = 0.0;
    let mut last_commit = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < a.messages {
        if Instant::now() > deadline {
            bail!("raw consumer read {seen}/{}", a.messages);
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            if first.is_none() {
                cpu_before = self_cpu_s();
                first = Some(Instant::now());
            }
            bytes += m.payload().map_or(0, |p| p.len());
            seen += 1;
        }
        if last_commit.elapsed() >= Duration::from_millis(500) {
            let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    let secs = first.context("no message")?.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
    Ok((secs, cpu_before, Box::new(move || drop(consumer))))
}

/// Weir with a no-op processor, its defaults and a 500 ms commit interval.
async fn weir_child(a: &ChildArgs) -> anyhow::Result<Finished> {
    let n = a.messages;
    let count = Arc::new(AtomicU64::new(0));
    let first: Arc<Mutex<Option<(Instant, f64)>>> = Default::default();
    let last: Arc<Mutex<Option<Instant>>> = Default::default();
    let (c, f, l) = (count.clone(), first.clone(), last.clone());
    let processor = processor_fn(move |m: Message<Option<bytes::Bytes>>| {
        let k = c.fetch_add(1, SeqCst) + 1;
        if k == 1 {
            *f.lock() = Some((Instant::now(), self_cpu_s()));
        }
        if k == n {
            *l.lock() = Some(Instant::now());
        }
        std::hint::black_box(m.value().as_ref().map(|p| p.len()));
        async { Ok(()) }
    });
    let mut cfg = ConsumerConfig::new(&a.bootstrap, &a.group, &[a.topic.as_str()]);
    cfg.commit_interval = Duration::from_millis(500);
    let cfg = cfg.with_env(std::env::vars())?;
    let consumer = Consumer::builder(cfg).build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    wait_for("peers (weir)", &count, n, Duration::from_secs(600), &handle).await?;
    let (first, cpu_before) = first.lock().context("first")?;
    let secs = (last.lock().context("last")? - first).as_secs_f64();
    Ok((
        secs,
        cpu_before,
        Box::new(move || {
            handle.shutdown();
            drop(run);
        }),
    ))
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

/// Runs `system` once on `topic` with a fresh group.
fn run_once(
    system: &str,
    bootstrap: &str,
    topic: &str,
    n: u64,
    round: usize,
) -> anyhow::Result<Run> {
    let mut cmd = command(system).map_err(anyhow::Error::msg)?;
    let group = format!("peers-{system}-{}-{round}", std::process::id());
    cmd.env("WEIR_BENCH_BOOTSTRAP", bootstrap)
        .env("WEIR_BENCH_GROUP", &group)
        .env("WEIR_BENCH_TOPIC", topic)
        .env("WEIR_BENCH_MESSAGES", n.to_string())
        .env("WEIR_BENCH_PARTITIONS", PARTITIONS.to_string())
        // The in-flight limit a peer with one gets: Weir's default `max_in_flight`.
        .env("WEIR_BENCH_CONCURRENCY", "1024")
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
    drop(child.stdin.take());
    let status = child.wait()?;
    if !status.success() {
        bail!("{system} exited with {status}");
    }
    let secs = reported["first_to_last_s"]
        .as_f64()
        .context("first_to_last_s")?;
    Ok(Run {
        msgs_per_s: (n - 1) as f64 / secs,
        cpu_s,
        cpu_s_before_first: reported["cpu_s_before_first"].as_f64().unwrap_or(0.0),
        peak_rss_mb,
    })
}

/// This process's CPU seconds so far (0 if /proc cannot say).
fn self_cpu_s() -> f64 {
    proc_usage(std::process::id()).map_or(0.0, |(cpu, _)| cpu)
}

/// CPU seconds (user + system, all threads) and peak RSS (MB) of a live process.
fn proc_usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .context("/proc stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let utime: f64 = rest.get(11).context("utime")?.parse()?;
    let stime: f64 = rest.get(12).context("stime")?.parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmHWM")?
        .parse()?;
    Ok(((utime + stime) / ticks, hwm_kb / 1024.0))
}

pub(crate) async fn peers(
    args: &Args,
    cluster: &KafkaCluster,
) -> anyhow::Result<serde_json::Value> {
    let n = args.messages.unwrap_or(1_000_000);
    let partitions = PARTITIONS;
    let topic = "peers-noop";
    let systems: Vec<String> = args
        .peers
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    cluster.create_topic(topic, partitions).await?;
    let started = Instant::now();
    produce(cluster, topic, n, 10_000, partitions).await?;
    println!(
        "peers noop: {n} records of ~100 bytes on {partitions} partitions, produced in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut runs: HashMap<String, Vec<Run>> = HashMap::new();
    let mut skipped: HashMap<String, String> = HashMap::new();
    for s in &systems {
        if let Err(why) = command(s) {
            println!("peers noop: {s} skipped: {why}");
            skipped.insert(s.clone(), why);
        }
    }
    let bootstrap = cluster.bootstrap_servers().to_string();
    for round in 0..args.rounds.max(1) {
        for s in systems.iter().filter(|s| !skipped.contains_key(*s)) {
            let (s2, b, t) = (s.clone(), bootstrap.clone(), topic.to_string());
            let r = tokio::task::spawn_blocking(move || run_once(&s2, &b, &t, n, round)).await??;
            println!(
                "peers noop round {}: {s:>17} {:>9.0} msg/s, CPU s per million {:>6.2} (processing {:>5.2}), peak RSS {:>6.1} MB",
                round + 1,
                r.msgs_per_s,
                r.cpu_s * 1e6 / n as f64,
                (r.cpu_s - r.cpu_s_before_first) * 1e6 / n as f64,
                r.peak_rss_mb
            );
            runs.entry(s.clone()).or_default().push(r);
        }
    }
    let mut table = serde_json::Map::new();
    for (s, rs) in &runs {
        table.insert(
            s.clone(),
            json!({
                "msgs_per_s": median(&rs.iter().map(|r| r.msgs_per_s).collect::<Vec<_>>()).round(),
                "cpu_s_per_million": median(&rs.iter().map(|r| r.cpu_s * 1e6 / n as f64).collect::<Vec<_>>()),
                "processing_cpu_s_per_million": median(&rs.iter().map(|r| (r.cpu_s - r.cpu_s_before_first) * 1e6 / n as f64).collect::<Vec<_>>()),
                "peak_rss_mb": rs.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max),
                "rounds": rs.iter().map(|r| r.msgs_per_s.round()).collect::<Vec<_>>(),
            }),
        );
    }
    let rate = |s: &str| table.get(s).and_then(|v| v["msgs_per_s"].as_f64());
    let best_peer = table
        .keys()
        .filter(|s| !matches!(s.as_str(), "weir" | "raw" | "raw-tuned"))
        .filter_map(|s| rate(s).map(|r| (s.clone(), r)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let weir = rate("weir");
    let vs_peer = weir.zip(best_peer.as_ref()).map(|(w, (_, p))| w / p);
    let vs_raw = weir.zip(rate("raw")).map(|(w, r)| w / r);
    let vs_raw_tuned = weir.zip(rate("raw-tuned")).map(|(w, r)| w / r);
    let show = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.3}"));
    println!(
        "peers noop (median of {} rounds): weir / best peer ({}) {}, weir / raw librdkafka loop {} (with Weir's fetch settings {})",
        args.rounds.max(1),
        best_peer.as_ref().map_or("none", |(s, _)| s.as_str()),
        show(vs_peer),
        show(vs_raw),
        show(vs_raw_tuned),
    );
    Ok(json!({
        "noop": {
            "partitions": partitions,
            "systems": table,
            "skipped": skipped,
            "best_peer": best_peer.map(|(s, _)| s),
            "weir_vs_best_peer": vs_peer,
            "weir_vs_raw": vs_raw,
            "weir_vs_raw_tuned": vs_raw_tuned,
        }
    }))
}
