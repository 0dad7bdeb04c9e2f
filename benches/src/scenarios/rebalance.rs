//! `rebalance`: what a rebalance costs, per group protocol. Three members
//! (child processes of this binary, so that one can be SIGKILLed) consume 12
//! partitions under steady load with a 1 ms handler; then a fourth member
//! joins, leaves cleanly (SIGTERM: Weir drains, commits and leaves), and one
//! of the original three is SIGKILLed. For each protocol (classic eager
//! `range`, classic `cooperative-sticky`, `consumer`) and event:
//!
//! - `unmoved_pause_p99_ms`: over the partitions that stayed with their
//!   member, the p99 of each one's longest processing gap in the event's
//!   window (the goal: at most the commit interval, 500 ms, under
//!   cooperative-sticky and consumer);
//! - `moved_gap_ms`: the longest time from a moved partition's last message
//!   processed by its old owner to its first processed by the new one;
//! - `redelivered`: messages processed a second time in the window (the
//!   goal: no more than the work in flight or uncommitted at the move: 0 for
//!   a clean leave);
//! - `rebalance_ms`: from the event until every partition is processed by
//!   its new owner.
//!
//! Members print one line per processed message (`P partition offset
//! epoch_ms`, flushed per line, so a SIGKILLed member loses none); the
//! parent reads them.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

use crate::*;

const PARTITIONS: i32 = 12;
const COMMIT_MS: i64 = 500;
const MEMBER_ENV: &str = "WEIR_BENCH_REBALANCE_MEMBER";

/// One processed message: (member, partition, offset, epoch ms).
type Event = (u8, i32, i64, i64);

/// Runs as a member when the parent started this binary as one; `None`
/// otherwise.
pub(crate) async fn member_if_asked() -> Option<anyhow::Result<()>> {
    let id = std::env::var(MEMBER_ENV).ok()?;
    Some(member(id).await)
}

async fn member(id: String) -> anyhow::Result<()> {
    let var = |k: &str| std::env::var(k).with_context(|| format!("{k} not set"));
    let (bootstrap, group, topic, protocol) = (
        var("WEIR_BENCH_BOOTSTRAP")?,
        var("WEIR_BENCH_GROUP")?,
        var("WEIR_BENCH_TOPIC")?,
        var("WEIR_BENCH_PROTOCOL")?,
    );
    let mut cfg = ConsumerConfig::new(&bootstrap, &group, &[topic.as_str()]);
    cfg.commit_interval = Duration::from_millis(COMMIT_MS as u64);
    cfg.revoke_deadline = Duration::from_secs(5);
    cfg.shutdown_deadline = Duration::from_secs(5);
    match protocol.as_str() {
        "consumer" => cfg.group_protocol = weir::GroupProtocol::Consumer,
        classic => {
            cfg.assignment = if classic == "classic-eager" {
                weir::Assignment::Range
            } else {
                weir::Assignment::CooperativeSticky
            };
            cfg = cfg
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500");
        }
    }
    // WEIR_* variables reach the members too (WEIR_KAFKA_DEBUG=cgrp, …).
    let cfg = cfg.with_env(std::env::vars())?;
    let processor = processor_fn(|m: Message<Option<bytes::Bytes>>| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        println!("P {} {} {}", m.raw().partition, m.raw().offset, now_ms());
        Ok::<_, weir::ProcessError>(())
    });
    let consumer = Consumer::builder(cfg)
        .codec(weir::codec::BytesCodec)
        .build(processor)?;
    eprintln!("member {id}: started");
    let report = consumer.run_until_signal().await?;
    eprintln!(
        "member {id}: stopped, {} partition(s) halted",
        report.halted.len()
    );
    Ok(())
}

struct Members {
    children: HashMap<u8, Child>,
    events: Arc<Mutex<Vec<Event>>>,
    env: Vec<(String, String)>,
}

impl Members {
    fn start(&mut self, id: u8) -> anyhow::Result<()> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(MEMBER_ENV, id.to_string())
            .envs(self.env.iter().cloned())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // WEIR_BENCH_MEMBER_LOGS=DIR: each member logs to DIR/member-<id>.log
        // (filter: WEIR_BENCH_MEMBER_RUST_LOG, default info).
        if let Some(dir) = std::env::var_os("WEIR_BENCH_MEMBER_LOGS") {
            let path = std::path::Path::new(&dir).join(format!("member-{id}.log"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let filter = std::env::var("WEIR_BENCH_MEMBER_RUST_LOG").unwrap_or("info".into());
            cmd.env("RUST_LOG", filter).stderr(file);
        }
        let mut child = cmd.spawn().context("starting a member process")?;
        let stdout = child.stdout.take().expect("piped");
        let events = self.events.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let f: Vec<&str> = line.split(' ').collect();
                if let ["P", p, o, t] = f[..]
                    && let (Ok(p), Ok(o), Ok(t)) = (p.parse(), o.parse(), t.parse())
                {
                    events.lock().push((id, p, o, t));
                }
            }
        });
        self.children.insert(id, child);
        Ok(())
    }

    fn signal(&mut self, id: u8, kill: bool) -> anyhow::Result<()> {
        let mut child = self.children.remove(&id).context("no such member")?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let signal = if kill {
            nix::sys::signal::Signal::SIGKILL
        } else {
            nix::sys::signal::Signal::SIGTERM
        };
        nix::sys::signal::kill(pid, signal).context("signalling a member")?;
        // A clean leave drains within the member's 5 s deadlines; one that
        // hangs is killed rather than hanging the benchmark.
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!("member {id} did not stop within 20 s of SIGTERM: killed");
                child.kill()?;
                child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn stop_all(&mut self) {
        let ids: Vec<u8> = self.children.keys().copied().collect();
        for id in ids {
            let _ = self.signal(id, false);
        }
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until every partition has a message processed after `since` (by a
/// member in `by`, when given).
async fn all_processed(
    events: &Mutex<Vec<Event>>,
    since: i64,
    by: Option<&[u8]>,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let seen: std::collections::HashSet<i32> = events
            .lock()
            .iter()
            .filter(|(m, _, _, t)| *t > since && by.is_none_or(|b| b.contains(m)))
            .map(|e| e.1)
            .collect();
        if seen.len() == PARTITIONS as usize {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {PARTITIONS} partitions processed in {limit:?}",
                seen.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until each member in `ids` has processed a message after `since`
/// (the group has settled with every member owning partitions).
async fn members_processing(
    events: &Mutex<Vec<Event>>,
    ids: &[u8],
    since: i64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let busy: std::collections::HashSet<u8> = events
            .lock()
            .iter()
            .filter(|e| e.3 > since)
            .map(|e| e.0)
            .collect();
        if ids.iter().all(|id| busy.contains(id)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("members {ids:?}: only {busy:?} processed within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The figures of one event's window `[t0, t1]` (epoch ms).
fn window(events: &[Event], event: &str, protocol: &str, t0: i64, t1: i64) -> serde_json::Value {
    let mut seen_before: std::collections::HashSet<(i32, i64)> = Default::default();
    let mut redelivered = 0u64;
    for (_, p, o, t) in events.iter().filter(|e| e.3 <= t1) {
        if !seen_before.insert((*p, *o)) && *t >= t0 {
            redelivered += 1;
        }
    }
    let mut unmoved_pauses = Vec::new();
    // The longest unmoved pause: (gap, its start after the event, member, partition).
    let mut worst: Option<(i64, i64, u8, i32)> = None;
    let (mut moved, mut moved_gap, mut settled) = (0, 0i64, 0i64);
    for p in 0..PARTITIONS {
        let mut before: Option<&Event> = None;
        let mut inside: Vec<&Event> = Vec::new();
        for e in events.iter().filter(|e| e.1 == p) {
            if e.3 < t0 {
                if before.is_none_or(|b| e.3 >= b.3) {
                    before = Some(e);
                }
            } else if e.3 <= t1 {
                inside.push(e);
            }
        }
        inside.sort_by_key(|e| e.3);
        let (Some(before), Some(last)) = (before, inside.last()) else {
            continue;
        };
        let owner_after = last.0;
        let first_by_new = inside
            .iter()
            .find(|e| e.0 == owner_after)
            .map(|e| e.3)
            .unwrap_or(t1);
        settled = settled.max(first_by_new - t0);
        if before.0 == owner_after && inside.iter().all(|e| e.0 == owner_after) {
            let mut prev = before.3;
            let (mut gap, mut gap_from) = (0, prev);
            for e in &inside {
                if e.3 - prev > gap {
                    (gap, gap_from) = (e.3 - prev, prev);
                }
                prev = e.3;
            }
            unmoved_pauses.push(gap);
            if worst.is_none_or(|w: (i64, i64, u8, i32)| gap > w.0) {
                worst = Some((gap, gap_from - t0, owner_after, p));
            }
        } else {
            moved += 1;
            let last_old = inside
                .iter()
                .filter(|e| e.0 == before.0 && e.3 < first_by_new)
                .map(|e| e.3)
                .max()
                .unwrap_or(before.3);
            moved_gap = moved_gap.max(first_by_new - last_old);
        }
    }
    unmoved_pauses.sort_unstable();
    json!({
        "protocol": protocol,
        "event": event,
        "unmoved_partitions": unmoved_pauses.len(),
        "unmoved_pause_p99_ms": quantile(&unmoved_pauses, 0.99),
        "unmoved_pause_max_ms": unmoved_pauses.last().copied().unwrap_or(0),
        "moved_partitions": moved,
        "moved_gap_ms": moved_gap,
        "redelivered": redelivered,
        "rebalance_ms": settled,
        "event_at_epoch_ms": t0,
        "longest_unmoved_pause": worst.map(|(gap, from, member, partition)| json!({
            "member": member,
            "partition": partition,
            "from_ms_after_event": from,
            "ms": gap,
        })),
    })
}

pub(crate) async fn rebalance(
    args: &Args,
    cluster: &KafkaCluster,
) -> anyhow::Result<serde_json::Value> {
    let protocols: Vec<&str> = args.protocols.split(',').map(str::trim).collect();
    for p in &protocols {
        if !["classic-eager", "classic-cooperative", "consumer"].contains(p) {
            bail!("unknown protocol {p:?}: classic-eager, classic-cooperative or consumer");
        }
    }
    let mut rows = Vec::new();
    let mut lost_total = 0u64;
    for protocol in protocols {
        let topic = format!("rebalance-{protocol}");
        cluster.create_topic(&topic, PARTITIONS).await?;
        let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "1")
            .create()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, t) = (stop.clone(), topic.clone());
        let rate = args.rate;
        let load = tokio::spawn(async move {
            let mut sent = 0u64;
            let every = Duration::from_secs_f64(PARTITIONS as f64 / rate as f64);
            while !s.load(SeqCst) {
                let recs: Vec<TestRecord> = (0..PARTITIONS)
                    .map(|p| TestRecord::keyed(format!("k{sent}-{p}"), "v").partition(p))
                    .collect();
                weir_testkit::produce_with(&producer, &t, recs).await?;
                sent += PARTITIONS as u64;
                tokio::time::sleep(every).await;
            }
            Ok::<u64, weir_testkit::TestkitError>(sent)
        });
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let mut members = Members {
            children: HashMap::new(),
            events: events.clone(),
            env: vec![
                (
                    "WEIR_BENCH_BOOTSTRAP".into(),
                    cluster.bootstrap_servers().into(),
                ),
                ("WEIR_BENCH_GROUP".into(), format!("bench-{protocol}")),
                ("WEIR_BENCH_TOPIC".into(), topic.clone()),
                ("WEIR_BENCH_PROTOCOL".into(), protocol.into()),
            ],
        };
        for id in 0..3 {
            members.start(id)?;
        }
        // Settled: every partition and every member busy for a while, so
        // that the first event does not land on the group still forming.
        members_processing(&events, &[0, 1, 2], now_ms(), Duration::from_secs(90)).await?;
        all_processed(&events, now_ms() + 2_000, None, Duration::from_secs(90)).await?;
        members_processing(&events, &[0, 1, 2], now_ms(), Duration::from_secs(30)).await?;
        let settle = Duration::from_millis(args.settle_ms);
        let mut marks = Vec::new();
        for event in args.events.split(',').map(str::trim) {
            let t0 = now_ms();
            match event {
                "join" => {
                    members.start(3)?;
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !events.lock().iter().any(|e| e.0 == 3) {
                        if Instant::now() > deadline {
                            bail!("{protocol}: the joining member got no partition in 60 s");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    all_processed(&events, now_ms(), None, Duration::from_secs(60)).await?;
                    members_processing(&events, &[0, 1, 2, 3], t0, Duration::from_secs(60)).await?;
                }
                "leave" => {
                    members.signal(3, false)?;
                    all_processed(&events, now_ms(), None, Duration::from_secs(60)).await?;
                }
                "kill" => {
                    members.signal(2, true)?;
                    let alive: Vec<u8> = members.children.keys().copied().collect();
                    all_processed(&events, t0, Some(&alive), Duration::from_secs(90)).await?;
                }
                other => bail!("unknown event {other:?}: join, leave or kill"),
            }
            tokio::time::sleep(settle).await;
            marks.push((event.to_string(), t0, now_ms()));
        }
        stop.store(true, SeqCst);
        let sent = load.await??;
        let deadline = Instant::now() + Duration::from_secs(60);
        let distinct = |ev: &[Event]| {
            ev.iter()
                .map(|e| (e.1, e.2))
                .collect::<std::collections::HashSet<_>>()
                .len() as u64
        };
        while distinct(&events.lock()) < sent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        members.stop_all();
        let ev = events.lock().clone();
        let lost = sent.saturating_sub(distinct(&ev));
        lost_total += lost;
        for (event, t0, t1) in &marks {
            let row = window(&ev, event, protocol, *t0, *t1);
            println!(
                "{protocol:>20} {event:>5}: unmoved pause p99 {:>5} ms ({} partitions), moved {} (gap {} ms), redelivered {}, all processed again after {} ms",
                row["unmoved_pause_p99_ms"],
                row["unmoved_partitions"],
                row["moved_partitions"],
                row["moved_gap_ms"],
                row["redelivered"],
                row["rebalance_ms"]
            );
            rows.push(row);
        }
        println!("{protocol:>20}: {sent} records, {lost} lost");
    }
    let goal = |r: &serde_json::Value| -> bool {
        let p = r["protocol"].as_str().unwrap_or("");
        p == "classic-eager" || r["unmoved_pause_p99_ms"].as_i64().unwrap_or(0) <= COMMIT_MS
    };
    let goals_met = rows.iter().all(goal);
    println!(
        "goal (unmoved pause p99 <= commit interval {COMMIT_MS} ms under cooperative-sticky and consumer): {}",
        if goals_met { "met" } else { "NOT met" }
    );
    Ok(json!({
        "rows": rows,
        "lost": lost_total,
        "commit_interval_ms": COMMIT_MS,
        "partitions": PARTITIONS,
        "rate_per_s": args.rate,
        "unmoved_pause_goal_met": goals_met,
    }))
}
