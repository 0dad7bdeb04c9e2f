//! `weir-chaos`: Jepsen-style accounting for Weir under abuse.
//!
//! Starts a broker (Apache Kafka with three nodes by default, tansu, or the
//! mock cluster: `--broker`) and a fresh PostgreSQL
//! database, produces `--messages` messages with unique IDs over several
//! partitions and keys (a share poison, a share failing transiently), runs
//! three consumer **processes** (a test processor writing its effect through
//! `weir_idempotency::Transactional` into PostgreSQL), and while they work:
//! SIGKILLs a random worker `--kills` times and restarts it, restarts the
//! broker `--broker-restarts` times (on Kafka: SIGKILLs the leader of a source
//! partition, then starts it on the same data; on tansu the one broker) and
//! stalls it (SIGSTOP/SIGCONT; on Kafka a random node, past its broker
//! session timeout) `--stalls` times, and bounces every Kafka node in turn
//! (SIGTERM, restart) `--rolling-bounces` times. Every action is drawn from
//! `--seed`, so a failing run can be replayed.
//!
//! `--eos` (Apache Kafka only): the workers run in Kafka transactions
//! (`ConsumerBuilder::transactions`) and their effect is an output record per
//! good message on `chaos-out` instead of a database row; broker restarts
//! SIGKILL the transaction coordinator of a random worker's
//! `transactional.id`. The accounting reads `chaos-out` as a
//! `read_committed` consumer: `lost` and `duplicate_outputs`.
//!
//! At the end it reads the effects table, the delivery log, the DLQ topic and
//! the committed offsets, prints a report and, with `--json`, a last line with
//! `messages`, `kills`, `broker_restarts`, `stalls`, `lost`,
//! `duplicate_effects`, `dlq`, `expected_dlq`, `dlq_missing`,
//! `unexpected_dlq`, `redeliveries`, `uncommitted`, `duration_s`, `seed`.
//! Exit code 1 on any loss, duplicate effect, missing or unexpected DLQ entry.
//!
//! ```text
//! cargo run --release -p weir-chaos -- --messages 5000 --kills 5 --broker-restarts 1 --json
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};
use weir::producer::{Record, TransactionalProducer};
use weir::retry::RetryTopics;
use weir::{Consumer, ConsumerConfig, JsonCodec, Message, ProcessError, Processor};
use weir_idempotency::{PostgresStore, Transactional, TxProcessor};
use weir_testkit::{KafkaCluster, KafkaOptions, PostgresDb, TansuStorage, TestRecord};

const TOPIC: &str = "chaos";
/// The output topic of `--eos`.
const OUT_TOPIC: &str = "chaos-out";
const GROUP: &str = "chaos-workers";
const WORKERS: usize = 3;

#[derive(Parser, Debug)]
#[command(
    name = "weir-chaos",
    about = "Kill consumers and restart the broker while Weir works; count every message."
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Messages to produce.
    #[arg(long, default_value_t = 5000)]
    messages: usize,
    /// Worker SIGKILLs (each followed by a restart of that worker).
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Broker restarts (SIGKILL, then start on the same port and storage).
    #[arg(long, default_value_t = 1)]
    broker_restarts: usize,
    /// Broker stalls (SIGSTOP, then SIGCONT: 1-3 s on tansu; on Kafka longer
    /// than the 6 s broker session timeout, so the controller fences the node).
    #[arg(long, default_value_t = 1)]
    stalls: usize,
    /// Rolling bounces of a Kafka cluster: each node in turn stopped with
    /// SIGTERM (controlled shutdown) and started again (Kafka only).
    #[arg(long, default_value_t = 0)]
    rolling_bounces: usize,
    /// Nodes of the Kafka cluster (`--broker kafka`).
    #[arg(long, default_value_t = 3)]
    kafka_nodes: usize,
    /// Seed for every random choice (payload kinds, keys, timing, victims).
    #[arg(long)]
    seed: Option<u64>,
    /// Partitions of the source topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Percentage of poison messages (undecodable: must end in the DLQ).
    #[arg(long, default_value_t = 1.0)]
    poison_percent: f64,
    /// Percentage of messages that fail once with a retryable error (retry tier).
    #[arg(long, default_value_t = 5.0)]
    transient_percent: f64,
    /// Give up (and count what is missing as lost) after this many seconds.
    #[arg(long, default_value_t = 900)]
    deadline_s: u64,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// The broker: `kafka` (Apache Kafka, `--kafka-nodes` KRaft nodes;
    /// restarts SIGKILL a partition leader, stalls SIGSTOP a node), `tansu`
    /// (SQLite storage; restarts are SIGKILL + start, stalls SIGSTOP/SIGCONT)
    /// or `mock` (librdkafka's mock cluster in this process, which workers
    /// reach over TCP; restarts are every broker down then up, stalls a 1-3 s
    /// round-trip time: connection-level faults, no process).
    #[arg(long, default_value = "kafka")]
    broker: String,
    /// Consumer `session.timeout.ms`. Tansu 0.6's SQLite storage answers every
    /// request on one queue and its fetches scan the record table, so on big
    /// logs group heartbeats can wait seconds behind fetches: raise this for
    /// large runs (a killed worker's partitions then wait this long).
    #[arg(long, default_value_t = 6000)]
    session_timeout_ms: u32,
    /// Harness self-check: workers write effects without the idempotency
    /// store (with `--eos`: outputs without transactions), so redeliveries
    /// after kills must show up as duplicate effects (outputs).
    #[arg(long, hide = true)]
    unsafe_no_idempotency: bool,
    /// Workers run in Kafka transactions and write an output record per good
    /// message (`chaos-out`); broker restarts kill a transaction coordinator.
    /// Needs `--broker kafka`.
    #[arg(long)]
    eos: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One consumer process (started by the harness).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        db: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        unsafe_no_idempotency: bool,
        #[arg(long, default_value_t = 6000)]
        session_timeout_ms: u32,
        #[arg(long)]
        eos: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    id: String,
    seq: u64,
    transient: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    broker: String,
    messages: usize,
    kills: usize,
    broker_restarts: usize,
    stalls: usize,
    rolling_bounces: usize,
    lost: usize,
    duplicate_effects: i64,
    /// `--eos`: outputs a `read_committed` reader finds more than once.
    duplicate_outputs: i64,
    eos: bool,
    dlq: usize,
    dlq_copies: usize,
    expected_dlq: usize,
    dlq_missing: usize,
    unexpected_dlq: usize,
    redeliveries: i64,
    retried: usize,
    uncommitted: i64,
    duration_s: f64,
    seed: u64,
    lost_sample: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match &args.cmd {
        Some(Cmd::Worker {
            bootstrap,
            db,
            name,
            unsafe_no_idempotency,
            session_timeout_ms,
            eos,
        }) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            rt.block_on(worker(
                bootstrap,
                db,
                name,
                *unsafe_no_idempotency,
                *session_timeout_ms,
                *eos,
            ))
        }
        None => {
            let report = rt.block_on(orchestrate(&args))?;
            let bad = report.lost > 0
                || report.duplicate_effects > 0
                || report.duplicate_outputs > 0
                || report.dlq_missing > 0
                || report.unexpected_dlq > 0;
            if bad {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------- worker

/// The effect: one row per processing, written in the idempotency
/// transaction. `chaos_effects` has no unique constraint on purpose: a
/// duplicate effect would show up as two rows.
#[derive(Clone)]
struct Sink {
    name: Arc<str>,
}

impl TxProcessor<Event, Postgres> for Sink {
    async fn process(
        &self,
        msg: Message<Event>,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), ProcessError> {
        let e = msg.value();
        if e.transient && msg.attempt() == 1 {
            return Err(ProcessError::retryable(std::io::Error::other(
                "injected transient failure",
            ))
            .with_class("injected"));
        }
        sqlx::query(
            "INSERT INTO chaos_effects (message_id, seq, worker, attempt, topic, part, off) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&e.id)
        .bind(e.seq as i64)
        .bind(&*self.name)
        .bind(msg.attempt() as i32)
        .bind(&*msg.raw().topic)
        .bind(msg.raw().partition)
        .bind(msg.raw().offset)
        .execute(&mut **tx)
        .await
        .map_err(|e| ProcessError::retryable(e).with_class("db"))?;
        Ok(())
    }
}

/// Logs every delivery (outside any transaction) before the idempotent
/// processor runs, so redeliveries can be counted from the database.
struct Logged<P> {
    inner: P,
    pool: PgPool,
    name: Arc<str>,
}

impl<P: Processor<Event>> Processor<Event> for Logged<P> {
    async fn process(&self, msg: Message<Event>) -> Result<(), ProcessError> {
        sqlx::query(
            "INSERT INTO chaos_deliveries (message_id, worker, attempt) VALUES ($1, $2, $3)",
        )
        .bind(&msg.value().id)
        .bind(&*self.name)
        .bind(msg.attempt() as i32)
        .execute(&self.pool)
        .await
        .map_err(|e| ProcessError::unavailable(e).with_class("db"))?;
        self.inner.process(msg).await
    }
}

/// `--eos`: the effect is an output record (`{"id", "attempt"}`), sent with
/// the worker's transactional producer, so it commits with the offset.
struct Output {
    producer: OutputProducer,
}

/// The worker's producer of outputs: transactional, or (the harness
/// self-check) plain.
enum OutputProducer {
    Tx(TransactionalProducer),
    Plain(weir::Producer),
}

impl Processor<Event> for Output {
    async fn process(&self, msg: Message<Event>) -> Result<(), ProcessError> {
        let e = msg.value();
        if e.transient && msg.attempt() == 1 {
            return Err(ProcessError::retryable(std::io::Error::other(
                "injected transient failure",
            ))
            .with_class("injected"));
        }
        let body = serde_json::json!({ "id": e.id, "attempt": msg.attempt() });
        let record = Record::to(OUT_TOPIC)
            .key(msg.raw().key.clone().unwrap_or_default())
            .payload(body.to_string());
        match &self.producer {
            OutputProducer::Tx(p) => p.send(record).await,
            OutputProducer::Plain(p) => p.send(record).await,
        }
        .map_err(|e| ProcessError::retryable(e).with_class("produce"))?;
        Ok(())
    }
}

fn retry_topics() -> RetryTopics {
    let mut rt = RetryTopics::tiers([Duration::from_millis(500)]);
    rt.create_topics = false;
    rt
}

/// The harness self-check's processor: the same effect in a transaction of
/// its own, with no idempotency marker.
struct Unsafe {
    sink: Sink,
    pool: PgPool,
}

impl Processor<Event> for Unsafe {
    async fn process(&self, msg: Message<Event>) -> Result<(), ProcessError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| ProcessError::unavailable(e).with_class("db"))?;
        self.sink.process(msg, &mut tx).await?;
        tx.commit()
            .await
            .map_err(|e| ProcessError::retryable(e).with_class("db"))
    }
}

async fn worker(
    bootstrap: &str,
    db: &str,
    name: &str,
    unsafe_no_idempotency: bool,
    session_timeout_ms: u32,
    eos: bool,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(5))
        .connect(db)
        .await?;
    let mut cfg = ConsumerConfig::new(bootstrap, GROUP, &[TOPIC])
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_timeout_ms / 10).to_string(),
        )
        .set(
            "max.poll.interval.ms",
            (session_timeout_ms * 4).max(20000).to_string(),
        )
        .set("topic.metadata.refresh.interval.ms", "2000")
        .set("reconnect.backoff.max.ms", "1000");
    cfg.commit_interval = Duration::from_millis(300);
    cfg.revoke_deadline = Duration::from_secs(5);
    cfg.shutdown_deadline = Duration::from_secs(5);
    cfg.retry.initial_backoff = Duration::from_millis(50);
    cfg.retry.max_backoff = Duration::from_millis(500);
    let name: Arc<str> = Arc::from(name);
    if eos && unsafe_no_idempotency {
        let inner = Output {
            producer: OutputProducer::Plain(weir::Producer::for_consumer(&cfg)?),
        };
        return run_worker(cfg, Logged { inner, pool, name }, None).await;
    }
    if eos {
        // One transactional.id per worker slot: a restarted worker fences
        // the one it replaces and aborts what that one left open.
        let producer = TransactionalProducer::for_consumer(&cfg, &format!("chaos-eos-{name}"))
            .await
            .context("starting the transactional producer")?;
        let inner = Output {
            producer: OutputProducer::Tx(producer.clone()),
        };
        return run_worker(cfg, Logged { inner, pool, name }, Some(producer)).await;
    }
    let sink = Sink { name: name.clone() };
    if unsafe_no_idempotency {
        let inner = Unsafe {
            sink,
            pool: pool.clone(),
        };
        return run_worker(cfg, Logged { inner, pool, name }, None).await;
    }
    let inner = Transactional::new(sink, PostgresStore::new(pool.clone()), GROUP);
    run_worker(cfg, Logged { inner, pool, name }, None).await
}

async fn run_worker(
    cfg: ConsumerConfig,
    processor: impl Processor<Event>,
    transactions: Option<TransactionalProducer>,
) -> anyhow::Result<()> {
    let builder = Consumer::builder(cfg)
        .codec(JsonCodec::<Event>::new())
        .retry_topics(retry_topics());
    let builder = match transactions {
        Some(p) => builder.transactions(p),
        None => builder,
    };
    let consumer = builder.build(processor)?;
    let handle = consumer.handle();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        term.recv().await;
        handle.shutdown();
    });
    let report = consumer.run().await?;
    if !report.halted.is_empty() {
        bail!("worker halted partitions: {:?}", report.halted);
    }
    Ok(())
}

// ---------------------------------------------------------------- orchestrator

struct Workers {
    exe: PathBuf,
    bootstrap: String,
    db: String,
    logs: PathBuf,
    unsafe_no_idempotency: bool,
    session_timeout_ms: u32,
    eos: bool,
    children: Vec<Option<Child>>,
    starts: Vec<usize>,
}

impl Workers {
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        self.starts[i] += 1;
        let log =
            std::fs::File::create(self.logs.join(format!("worker-{i}-{}.log", self.starts[i])))?;
        let mut cmd = Command::new(&self.exe);
        cmd.args([
            "worker",
            "--bootstrap",
            &self.bootstrap,
            "--db",
            &self.db,
            "--name",
            &format!("w{i}"),
        ]);
        if self.unsafe_no_idempotency {
            cmd.arg("--unsafe-no-idempotency");
        }
        if self.eos {
            cmd.arg("--eos");
        }
        cmd.args(["--session-timeout-ms", &self.session_timeout_ms.to_string()]);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a worker process")?;
        self.children[i] = Some(child);
        Ok(())
    }

    fn sigkill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    fn stop_all(&mut self) {
        for c in self.children.iter().flatten() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for slot in self.children.iter_mut() {
            if let Some(mut c) = slot.take() {
                loop {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    if Instant::now() > deadline {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Restarts any worker that died on its own (it should not; counted).
    fn reap_dead(&mut self) -> anyhow::Result<usize> {
        let mut n = 0;
        for i in 0..self.children.len() {
            let dead = match &mut self.children[i] {
                Some(c) => matches!(c.try_wait(), Ok(Some(_))),
                None => false,
            };
            if dead {
                eprintln!("[chaos] worker {i} exited on its own; restarting it");
                self.children[i] = None;
                self.spawn(i)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.sigkill(i);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    KillWorker,
    RestartBroker,
    StallBroker,
    RollingBounce,
}

/// Crashes the broker side: on Kafka the leader of `partition` of the source
/// topic (SIGKILL, restart on the same data after `pause_ms`), on tansu its one
/// process, on the mock every broker (down, then up).
async fn restart_broker(
    cluster: &KafkaCluster,
    partition: i32,
    pause_ms: u64,
    say: &impl Fn(String),
    done: i64,
    expected: i64,
) -> anyhow::Result<()> {
    let pause = Duration::from_millis(pause_ms);
    if let Some(nodes) = cluster.kafka_nodes() {
        let leader = nodes
            .lock()
            .await
            .leader(TOPIC, partition)
            .await?
            .unwrap_or(1);
        say(format!(
            "SIGKILL node {leader}, leader of {TOPIC}/{partition}, at {done}/{expected}"
        ));
        nodes.lock().await.kill(leader)?;
        tokio::time::sleep(pause).await;
        nodes.lock().await.restart(leader).await?;
    } else if let Some(broker) = cluster.tansu_broker() {
        say(format!("SIGKILL broker at {done}/{expected}"));
        broker.lock().await.kill()?;
        tokio::time::sleep(pause).await;
        broker.lock().await.restart().await?;
    } else {
        say(format!("all mock brokers down at {done}/{expected}"));
        cluster.kill_brokers().await?;
        tokio::time::sleep(pause).await;
        cluster.restart_brokers().await?;
    }
    say(format!("broker back after {pause_ms} ms down"));
    Ok(())
}

/// Stalls the broker side for `pause_ms`: one Kafka node or tansu SIGSTOPped,
/// or the mock's round-trip time raised.
async fn stall_broker(cluster: &KafkaCluster, node: u32, pause_ms: u64) -> anyhow::Result<()> {
    let pause = Duration::from_millis(pause_ms);
    if let Some(nodes) = cluster.kafka_nodes() {
        nodes.lock().await.stall(node)?;
        tokio::time::sleep(pause).await;
        nodes.lock().await.unstall(node)?;
    } else if let Some(broker) = cluster.tansu_broker() {
        broker.lock().await.stall()?;
        tokio::time::sleep(pause).await;
        broker.lock().await.unstall()?;
    } else {
        let faults = cluster.mock_faults().context("mock faults")?;
        for b in 1..=faults.brokers() {
            faults.round_trip_time(b, pause)?;
        }
        tokio::time::sleep(pause).await;
        for b in 1..=faults.brokers() {
            faults.round_trip_time(b, Duration::ZERO)?;
        }
    }
    Ok(())
}

async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await?)
}

async fn orchestrate(args: &Args) -> anyhow::Result<Report> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let say = |m: String| eprintln!("[chaos {:>6.1}s] {m}", started.elapsed().as_secs_f64());
    say(format!(
        "seed {seed}: {} messages, {} kills, {} broker restarts, {} stalls",
        args.messages, args.kills, args.broker_restarts, args.stalls
    ));
    let (db, cluster) = start_services(args).await?;
    let pool = db.pool().clone();
    let dlq_topic = create_topics(&cluster, &pool, args.partitions).await?;
    let data = produce_data(&cluster, args, &mut rng).await?;
    say(format!(
        "produced {} ({} poison, {} transient)",
        args.messages,
        data.poison.len(),
        data.transient
    ));
    let logs = tempdir_keep()?;
    let mut workers = Workers {
        exe: std::env::current_exe()?,
        bootstrap: cluster.bootstrap_servers().to_string(),
        db: db.url().to_string(),
        logs: logs.clone(),
        unsafe_no_idempotency: args.unsafe_no_idempotency,
        session_timeout_ms: args.session_timeout_ms,
        eos: args.eos,
        children: (0..WORKERS).map(|_| None).collect(),
        starts: vec![0; WORKERS],
    };
    for i in 0..WORKERS {
        workers.spawn(i)?;
    }
    let deadline = started + Duration::from_secs(args.deadline_s);
    let chaos = Chaos {
        args,
        cluster: &cluster,
        pool: &pool,
        say: &say,
        dlq_topic: &dlq_topic,
    };
    let self_exits = chaos
        .run_schedule(&mut workers, &data, &mut rng, deadline)
        .await?;
    chaos.settle_commits(deadline).await;
    workers.stop_all();
    say(format!(
        "workers stopped (restarted on their own: {self_exits})"
    ));
    let report = chaos.account(&data, seed, started).await?;
    let committed = cluster.committed_offsets(GROUP, TOPIC).await?;
    print_report(&report, &committed, &logs);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(report)
}

/// The PostgreSQL database and the brokers of `--broker`.
async fn start_services(args: &Args) -> anyhow::Result<(PostgresDb, KafkaCluster)> {
    let db = PostgresDb::fresh().await?;
    let cluster = match args.broker.as_str() {
        "kafka" => {
            // Brokers that the controller fences quickly when stalled.
            KafkaCluster::kafka_with(
                KafkaOptions::nodes(args.kafka_nodes)
                    .property("broker.session.timeout.ms", "6000")
                    .property("broker.heartbeat.interval.ms", "1000"),
            )
            .await?
        }
        "tansu" => KafkaCluster::tansu(TansuStorage::Sqlite).await?,
        "mock" => KafkaCluster::mock(3)?,
        other => bail!("--broker {other}: use kafka, tansu or mock"),
    };
    if args.eos && cluster.kafka_nodes().is_none() {
        bail!("--eos needs --broker kafka (the mock cluster writes no transaction markers)");
    }
    if args.rolling_bounces > 0 && cluster.kafka_nodes().is_none() {
        bail!("--rolling-bounces needs --broker kafka");
    }
    Ok((db, cluster))
}

/// The effect tables, and the source topic with its retry tier and DLQ
/// (pre-created so three workers starting at once do not race to create
/// them); returns the DLQ topic.
async fn create_topics(
    cluster: &KafkaCluster,
    pool: &PgPool,
    partitions: i32,
) -> anyhow::Result<String> {
    PostgresStore::new(pool.clone()).migrate().await?;
    sqlx::query(
        "CREATE TABLE chaos_effects (id BIGSERIAL PRIMARY KEY, message_id TEXT NOT NULL, seq BIGINT NOT NULL, worker TEXT NOT NULL, attempt INT NOT NULL, topic TEXT NOT NULL, part INT NOT NULL, off BIGINT NOT NULL)",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "CREATE TABLE chaos_deliveries (id BIGSERIAL PRIMARY KEY, message_id TEXT NOT NULL, worker TEXT NOT NULL, attempt INT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let rt = retry_topics();
    cluster.create_topic(TOPIC, partitions).await?;
    for t in rt.retry_topics_of(TOPIC) {
        cluster.create_topic(&t, partitions).await?;
    }
    let dlq_topic = rt.dlq_topic(TOPIC);
    cluster.create_topic(&dlq_topic, partitions).await?;
    cluster.create_topic(OUT_TOPIC, partitions).await?;
    Ok(dlq_topic)
}

/// What was produced: the IDs that must have an effect, those that must end
/// in the DLQ, and how many fail once before they succeed.
struct Data {
    good: HashSet<String>,
    poison: HashSet<String>,
    transient: usize,
}

/// Unique IDs, many keys, a share poison and a share transient.
async fn produce_data(
    cluster: &KafkaCluster,
    args: &Args,
    rng: &mut StdRng,
) -> anyhow::Result<Data> {
    let mut data = Data {
        good: HashSet::new(),
        poison: HashSet::new(),
        transient: 0,
    };
    let mut records = Vec::with_capacity(args.messages);
    for seq in 0..args.messages as u64 {
        let id = format!("m-{seq:07}");
        let key = format!("k{}", rng.random_range(0..500));
        let roll: f64 = rng.random_range(0.0..100.0);
        let rec = if roll < args.poison_percent {
            data.poison.insert(id.clone());
            TestRecord::keyed(&key, format!("{{\"id\":\"{id}\",\"seq\":not-json"))
        } else {
            let t = roll < args.poison_percent + args.transient_percent;
            data.transient += t as usize;
            data.good.insert(id.clone());
            let e = Event {
                id: id.clone(),
                seq,
                transient: t,
            };
            TestRecord::keyed(&key, serde_json::to_vec(&e)?)
        };
        records.push(rec.header(weir::MESSAGE_ID_HEADER, &id));
    }
    for chunk in records.chunks(1000) {
        cluster.produce(TOPIC, chunk.to_vec()).await?;
    }
    Ok(data)
}

/// One chaos run's shared context.
struct Chaos<'a, S: Fn(String)> {
    args: &'a Args,
    cluster: &'a KafkaCluster,
    pool: &'a PgPool,
    say: &'a S,
    dlq_topic: &'a str,
}

impl<S: Fn(String)> Chaos<'_, S> {
    /// Fires the actions in random order, each once progress passes its
    /// threshold (so they land while work is going on), plus jitter; returns
    /// when every good message has an effect and every poison one is in the
    /// DLQ (or at the deadline), with how many workers exited on their own.
    async fn run_schedule(
        &self,
        workers: &mut Workers,
        data: &Data,
        rng: &mut StdRng,
        deadline: Instant,
    ) -> anyhow::Result<usize> {
        let args = self.args;
        let mut actions: Vec<Action> = std::iter::repeat_n(Action::KillWorker, args.kills)
            .chain(std::iter::repeat_n(
                Action::RestartBroker,
                args.broker_restarts,
            ))
            .chain(std::iter::repeat_n(Action::StallBroker, args.stalls))
            .chain(std::iter::repeat_n(
                Action::RollingBounce,
                args.rolling_bounces,
            ))
            .collect();
        actions.shuffle(rng);
        let n_actions = actions.len();
        let thresholds: Vec<f64> = (0..n_actions)
            .map(|j| (j as f64 + 0.5) / (n_actions as f64 + 0.5) * 0.9)
            .collect();
        let expected_good = data.good.len() as i64;
        let mut next = 0;
        let mut not_before = Instant::now();
        let mut dlq_seen = 0usize;
        let mut last_dlq_read = Instant::now();
        let mut self_exits = 0;
        loop {
            let done = self.progress().await?;
            if next < n_actions
                && Instant::now() >= not_before
                && done as f64 >= thresholds[next] * expected_good as f64
            {
                let jitter = rng.random_range(0..400);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                self.act(actions[next], workers, rng, done, expected_good)
                    .await?;
                next += 1;
                not_before = Instant::now() + Duration::from_millis(rng.random_range(300..2500));
                continue;
            }
            self_exits += workers.reap_dead()?;
            if done >= expected_good && next >= n_actions {
                if last_dlq_read.elapsed() > Duration::from_secs(2) {
                    dlq_seen = dlq_ids(self.cluster, self.dlq_topic)
                        .await
                        .map(|s| s.len())
                        .unwrap_or(0);
                    last_dlq_read = Instant::now();
                }
                if dlq_seen >= data.poison.len() {
                    break;
                }
            }
            if Instant::now() > deadline {
                (self.say)("deadline reached: stopping with what is there".into());
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(self_exits)
    }

    /// One action of the schedule.
    async fn act(
        &self,
        action: Action,
        workers: &mut Workers,
        rng: &mut StdRng,
        done: i64,
        expected_good: i64,
    ) -> anyhow::Result<()> {
        let (cluster, say) = (self.cluster, self.say);
        match action {
            Action::KillWorker => {
                let i = rng.random_range(0..WORKERS);
                say(format!("SIGKILL worker {i} at {done}/{expected_good}"));
                workers.sigkill(i);
                let pause = rng.random_range(0..2000);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                workers.spawn(i)?;
                say(format!("worker {i} restarted after {pause} ms"));
            }
            Action::RestartBroker if self.args.eos => {
                let pause = rng.random_range(200..1500);
                let worker = rng.random_range(0..WORKERS);
                kill_coordinator(cluster, worker, pause, say, done, expected_good).await?;
            }
            Action::RestartBroker => {
                let pause = rng.random_range(200..1500);
                let partition = rng.random_range(0..self.args.partitions);
                restart_broker(cluster, partition, pause, say, done, expected_good).await?;
            }
            Action::StallBroker => {
                let pause = if cluster.kafka_nodes().is_some() {
                    rng.random_range(7000..9000)
                } else {
                    rng.random_range(1000..3000)
                };
                let node = rng.random_range(0..self.args.kafka_nodes.max(1)) as u32 + 1;
                say(format!(
                    "stalling the broker for {pause} ms at {done}/{expected_good}"
                ));
                stall_broker(cluster, node, pause).await?;
            }
            Action::RollingBounce => {
                let nodes = cluster.kafka_nodes().context("Kafka nodes")?;
                let ids = nodes.lock().await.node_ids();
                for id in ids {
                    say(format!(
                        "rolling bounce: SIGTERM node {id} at {done}/{expected_good}"
                    ));
                    let mut n = nodes.lock().await;
                    n.stop(id)?;
                    n.restart(id).await?;
                    say(format!("rolling bounce: node {id} back"));
                }
            }
        }
        Ok(())
    }

    /// Messages not yet committed: the end of each partition minus its
    /// committed offset.
    async fn uncommitted(&self) -> anyhow::Result<i64> {
        let committed = self.cluster.committed_offsets(GROUP, TOPIC).await?;
        let mut uncommitted = 0i64;
        for (p, c) in &committed {
            let (_, high) = self.cluster.watermarks(TOPIC, *p).await?;
            uncommitted += high - c.unwrap_or(0);
        }
        Ok(uncommitted)
    }

    /// Lets the last commits land before the workers stop: a worker killed
    /// late leaves the group rebalancing (its session has to time out), and
    /// commits made meanwhile are refused; the running workers commit once
    /// it settles. Waits until everything is committed, at most 20 s (and
    /// not past the deadline by more than that): what is still uncommitted
    /// then is reported, not hidden.
    async fn settle_commits(&self, deadline: Instant) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let until =
            (Instant::now() + Duration::from_secs(20)).min(deadline + Duration::from_secs(20));
        while Instant::now() < until {
            match self.uncommitted().await {
                Ok(0) => return,
                Ok(n) => (self.say)(format!("waiting for the last commits: {n} uncommitted")),
                Err(e) => (self.say)(format!("reading committed offsets: {e}")),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Good messages with an effect so far: rows, or with `--eos` outputs a
    /// `read_committed` reader finds.
    async fn progress(&self) -> anyhow::Result<i64> {
        if self.args.eos {
            return Ok(outputs(self.cluster).await?.len() as i64);
        }
        count(
            self.pool,
            "SELECT count(DISTINCT message_id) FROM chaos_effects",
        )
        .await
    }

    /// The accounting, from the effect tables and the topics, not from counters.
    async fn account(&self, data: &Data, seed: u64, started: Instant) -> anyhow::Result<Report> {
        let (args, pool) = (self.args, self.pool);
        let (effects, retried_outputs) = if args.eos {
            let outputs = outputs(self.cluster).await?;
            let retried = outputs.values().filter(|(_, a)| *a > 1).count();
            (
                outputs.into_iter().map(|(id, (n, _))| (id, n)).collect(),
                Some(retried),
            )
        } else {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT message_id, count(*) FROM chaos_effects GROUP BY message_id",
            )
            .fetch_all(pool)
            .await?;
            (rows.into_iter().collect::<HashMap<String, i64>>(), None)
        };
        let duplicates: i64 = effects.values().map(|c| c - 1).sum();
        let (duplicate_effects, duplicate_outputs) = if args.eos {
            (0, duplicates)
        } else {
            (duplicates, 0)
        };
        let mut lost: Vec<String> = data
            .good
            .iter()
            .filter(|id| !effects.contains_key(*id))
            .cloned()
            .collect();
        lost.sort();
        let stray = effects.keys().filter(|id| !data.good.contains(*id)).count();
        if stray > 0 {
            bail!("{stray} effects for IDs that were never produced as good messages");
        }
        let copies = dlq_copies(self.cluster, self.dlq_topic).await?;
        let dlq_copies = copies.len();
        let dlq: HashSet<String> = copies.into_iter().collect();
        let dlq_missing = data.poison.iter().filter(|id| !dlq.contains(*id)).count();
        let unexpected_dlq = dlq.iter().filter(|id| !data.poison.contains(*id)).count();
        let deliveries = count(pool, "SELECT count(*) FROM chaos_deliveries").await?;
        let delivered = count(
            pool,
            "SELECT count(*) FROM (SELECT DISTINCT message_id, attempt FROM chaos_deliveries) d",
        )
        .await?;
        let retried = match retried_outputs {
            Some(n) => n,
            None => {
                count(
                    pool,
                    "SELECT count(DISTINCT message_id) FROM chaos_effects WHERE attempt > 1",
                )
                .await? as usize
            }
        };
        Ok(Report {
            scenario: "chaos",
            broker: args.broker.clone(),
            messages: args.messages,
            kills: args.kills,
            broker_restarts: args.broker_restarts,
            stalls: args.stalls,
            rolling_bounces: args.rolling_bounces,
            lost: lost.len(),
            duplicate_effects,
            duplicate_outputs,
            eos: args.eos,
            dlq: dlq.len(),
            dlq_copies,
            expected_dlq: data.poison.len(),
            dlq_missing,
            unexpected_dlq,
            redeliveries: deliveries - delivered,
            retried,
            uncommitted: self.uncommitted().await?,
            duration_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            seed,
            lost_sample: lost.iter().take(10).cloned().collect(),
        })
    }
}

/// `--eos`: per message ID on the output topic, as a `read_committed`
/// reader finds them: how many outputs, and the highest attempt.
async fn outputs(cluster: &KafkaCluster) -> anyhow::Result<HashMap<String, (i64, u64)>> {
    let mut out: HashMap<String, (i64, u64)> = HashMap::new();
    for m in cluster.read_to_end(OUT_TOPIC).await? {
        let v: serde_json::Value = serde_json::from_slice(m.payload.as_deref().unwrap_or_default())
            .context("an output that is not the workers' JSON")?;
        let id = v["id"]
            .as_str()
            .context("an output without id")?
            .to_string();
        let e = out.entry(id).or_default();
        e.0 += 1;
        e.1 = e.1.max(v["attempt"].as_u64().unwrap_or(1));
    }
    Ok(out)
}

/// `--eos`: SIGKILLs the broker leading the transaction state partition of
/// `worker`'s `transactional.id` (its transaction coordinator), and starts
/// it again on the same data after `pause_ms`.
async fn kill_coordinator(
    cluster: &KafkaCluster,
    worker: usize,
    pause_ms: u64,
    say: &impl Fn(String),
    done: i64,
    expected: i64,
) -> anyhow::Result<()> {
    let nodes = cluster.kafka_nodes().context("--eos runs on Kafka")?;
    let id = format!("chaos-eos-w{worker}");
    let partition = transaction_state_partition(&id, TRANSACTION_STATE_PARTITIONS);
    let leader = nodes
        .lock()
        .await
        .leader("__transaction_state", partition)
        .await?
        .unwrap_or(1);
    say(format!(
        "SIGKILL node {leader}, transaction coordinator of {id} (__transaction_state/{partition}), at {done}/{expected}"
    ));
    nodes.lock().await.kill(leader)?;
    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    nodes.lock().await.restart(leader).await?;
    say(format!(
        "coordinator node {leader} back after {pause_ms} ms down"
    ));
    Ok(())
}

/// `transaction.state.log.num.partitions` of the testkit's Kafka.
const TRANSACTION_STATE_PARTITIONS: i32 = 2;

/// Kafka's partition of `__transaction_state` for a transactional id:
/// `Utils.abs(id.hashCode()) % partitions` (Java's `String.hashCode` over
/// UTF-16 code units; `Utils.abs` masks the sign bit).
fn transaction_state_partition(id: &str, partitions: i32) -> i32 {
    let hash = id
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (hash & 0x7fff_ffff) % partitions
}

async fn dlq_ids(cluster: &KafkaCluster, topic: &str) -> anyhow::Result<HashSet<String>> {
    Ok(dlq_copies(cluster, topic).await?.into_iter().collect())
}

/// Every message ID in the DLQ, once per copy (a poison message redelivered
/// before its offset was committed is dead-lettered again).
async fn dlq_copies(cluster: &KafkaCluster, topic: &str) -> anyhow::Result<Vec<String>> {
    Ok(cluster
        .read_to_end(topic)
        .await?
        .iter()
        .filter_map(|m| m.header(weir::MESSAGE_ID_HEADER))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect())
}

fn tempdir_keep() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("weir-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn print_report(r: &Report, committed: &BTreeMap<i32, Option<i64>>, logs: &std::path::Path) {
    eprintln!();
    eprintln!("  messages            {}", r.messages);
    eprintln!(
        "  chaos               {} worker kills, {} broker restarts, {} stalls (seed {})",
        r.kills, r.broker_restarts, r.stalls, r.seed
    );
    eprintln!("  lost                {}", r.lost);
    if r.eos {
        eprintln!(
            "  duplicate outputs   {} (read_committed, Kafka transactions)",
            r.duplicate_outputs
        );
    } else {
        eprintln!("  duplicate effects   {}", r.duplicate_effects);
    }
    eprintln!(
        "  DLQ                 {} of {} expected ({} missing, {} unexpected; {} copies)",
        r.dlq, r.expected_dlq, r.dlq_missing, r.unexpected_dlq, r.dlq_copies
    );
    eprintln!(
        "  redeliveries        {} ({})",
        r.redeliveries,
        if r.eos {
            "their outputs in aborted transactions"
        } else {
            "absorbed by the idempotency store"
        }
    );
    eprintln!("  retried via tier    {}", r.retried);
    eprintln!(
        "  uncommitted         {} (committed: {committed:?})",
        r.uncommitted
    );
    eprintln!("  duration            {:.1} s", r.duration_s);
    eprintln!("  worker logs         {}", logs.display());
    if !r.lost_sample.is_empty() {
        eprintln!("  lost (first 10)     {:?}", r.lost_sample);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transaction_state_partition_is_the_brokers() {
        // Java: "hello".hashCode() == 99162322, and
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE (masked to 0).
        assert_eq!(
            super::transaction_state_partition("hello", 50),
            99_162_322 % 50
        );
        assert_eq!(
            super::transaction_state_partition("polygenelubricants", 50),
            0
        );
        assert_eq!(super::transaction_state_partition("", 2), 0);
    }
}
