//! The pipeline's parts, started and stopped as a run needs them: the Kafka
//! cluster (an in-process mock, an Apache Kafka node of its own, or an
//! external one), the database, the outbox relay, the redirect service and
//! the worker group (stopped and started again for a worker outage).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir::batch::{BatchConfig, Batched};
use weir::retry::RetryTopics;
use weir::{Consumer, ConsumerConfig, ConsumerHandle, JsonCodec, Processor, RunReport, WeirError};
use weir_idempotency::{IdempotencyStats, TransactionalBatch};
use weir_outbox::{PostgresOutbox, Relay, RelayConfig, SqliteOutbox};
use weir_testkit::KafkaCluster;

use crate::db::Db;
use crate::enrich::Geo;
use crate::service::App;
use crate::worker::Worker;
use crate::{Args, ClickEvent, GROUP, LINKS, TOPIC};

/// Longest wait between reconnects to a broker (librdkafka's default: 10 s).
const RECONNECT_MAX_MS: &str = "1000";

/// Partitions of the click topic (and its tiers and DLQ).
pub(crate) const PARTITIONS: i32 = 4;

/// Where the pipeline's Kafka runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Broker {
    /// librdkafka's in-process mock cluster.
    Mock,
    /// One Apache Kafka node started for the run (Java 17+; jars resolved into the cache).
    Kafka,
    /// The cluster at `KAFKA_BOOTSTRAP_SERVERS` (cannot be taken down for a broker outage).
    External,
}

type WorkerRun = (ConsumerHandle, JoinHandle<Result<RunReport, WeirError>>);

pub(crate) struct Pipeline {
    pub(crate) broker: Broker,
    pub(crate) brokers: String,
    pub(crate) app: Arc<App>,
    pub(crate) addr: SocketAddr,
    pub(crate) db_desc: String,
    pub(crate) worker: Arc<Worker>,
    pub(crate) retry: RetryTopics,
    pub(crate) wake: Arc<Notify>,
    /// Reads watermarks and the worker group's committed offsets (never joins it).
    pub(crate) meta: Arc<BaseConsumer>,
    cfg: ConsumerConfig,
    running: Option<WorkerRun>,
    dedup: Vec<Arc<IdempotencyStats>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
    /// Last: dropped after every client of it.
    pub(crate) cluster: KafkaCluster,
}

impl Pipeline {
    /// Starts everything but the worker group.
    pub(crate) async fn start(args: &Args) -> anyhow::Result<Pipeline> {
        let broker = args.broker();
        let cluster = match broker {
            Broker::External => KafkaCluster::external_at(
                &std::env::var("KAFKA_BOOTSTRAP_SERVERS")
                    .context("--broker external needs KAFKA_BOOTSTRAP_SERVERS")?,
            ),
            Broker::Mock => KafkaCluster::mock(1)?,
            Broker::Kafka => KafkaCluster::kafka(1).await?,
        };
        let brokers = cluster.bootstrap_servers().to_string();
        let retry =
            RetryTopics::tiers([Duration::from_millis(200), Duration::from_secs(1)]).jitter(0.0);
        let mut wanted = vec![TOPIC.to_string(), retry.dlq_topic(TOPIC)];
        wanted.extend(retry.retry_topics_of(TOPIC));
        for t in &wanted {
            // The mock cluster cannot create topics over the protocol; elsewhere a
            // topic that already exists is fine.
            if let Err(e) = cluster.create_topic(t, PARTITIONS).await {
                tracing::debug!(topic = %t, error = %e, "create topic");
            }
        }
        // Database: DATABASE_URL, or SQLite in a temporary directory.
        let dir = tempfile::Builder::new().prefix("weir-clicks-").tempdir()?;
        let (db, db_desc) =
            Db::open(std::env::var("DATABASE_URL").ok().as_deref(), dir.path()).await?;
        db.migrate().await?;
        db.reset().await?;
        db.seed_links(LINKS).await?;
        let geo = match &args.geoip_db {
            Some(p) => Geo::maxmind(p).with_context(|| format!("opening {}", p.display()))?,
            None => Geo::bundled()?,
        };
        let worker = Arc::new(Worker {
            geo,
            failure_rate: args.failure_rate,
            retried: AtomicU64::new(0),
        });
        let meta: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", GROUP)
            .set("reconnect.backoff.max.ms", RECONNECT_MAX_MS)
            .create()?;
        let stop = CancellationToken::new();
        let (relay, wake) = start_relay(&db, &brokers, stop.clone())?;
        let app = Arc::new(App {
            db,
            wake: wake.clone(),
        });
        let mut p = Pipeline {
            cfg: worker_config(&brokers)?,
            cluster,
            broker,
            brokers,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            app,
            db_desc,
            worker,
            retry,
            wake,
            meta: Arc::new(meta),
            running: None,
            dedup: Vec::new(),
            stop,
            tasks: vec![relay],
            _dir: dir,
        };
        p.serve().await?;
        Ok(p)
    }

    /// The redirect service on a free loopback port.
    async fn serve(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        self.addr = listener.local_addr()?;
        let router = crate::service::router(self.app.clone());
        let stop = self.stop.clone();
        self.tasks.push(tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await?;
            Ok(())
        }));
        Ok(())
    }

    /// Starts the worker group (one member) and waits until it has its
    /// partitions (source, two tiers), at most 60 s.
    pub(crate) async fn start_worker(&mut self) -> anyhow::Result<ConsumerHandle> {
        // Batches of enriched clicks: one transaction and one multi-row
        // insert per batch (docs/idempotency.md, "Batches").
        let batch = BatchConfig {
            max_batch: 256,
            max_wait: Duration::from_millis(20),
            ..BatchConfig::default()
        };
        let run = match &self.app.db {
            Db::Pg(pool) => {
                let store = weir_idempotency::PostgresStore::new(pool.clone());
                let tx = TransactionalBatch::new(self.worker.clone(), store, GROUP);
                self.dedup.push(tx.stats());
                self.spawn_worker(Batched::new(tx, batch)?.group_label(GROUP))?
            }
            Db::Lite(pool) => {
                let store = weir_idempotency::SqliteStore::new(pool.clone());
                let tx = TransactionalBatch::new(self.worker.clone(), store, GROUP);
                self.dedup.push(tx.stats());
                self.spawn_worker(Batched::new(tx, batch)?.group_label(GROUP))?
            }
        };
        let handle = run.0.clone();
        self.running = Some(run);
        let deadline = Instant::now() + Duration::from_secs(60);
        while handle.stats().assigned_partitions() < (PARTITIONS as u64) * 3
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(handle)
    }

    fn spawn_worker<P: Processor<ClickEvent>>(&mut self, p: P) -> anyhow::Result<WorkerRun> {
        let c = Consumer::builder(self.cfg.clone())
            .codec(JsonCodec::<ClickEvent>::new())
            .retry_topics(self.retry.clone())
            .build(p)?;
        let h = c.handle();
        Ok((h, tokio::spawn(c.run())))
    }

    /// Stops the worker group: drains, commits and leaves.
    pub(crate) async fn stop_worker(&mut self) -> anyhow::Result<Option<RunReport>> {
        let Some((handle, run)) = self.running.take() else {
            return Ok(None);
        };
        handle.shutdown();
        Ok(Some(run.await??))
    }

    /// Duplicates the worker's idempotency store absorbed, over every start.
    pub(crate) fn duplicates_absorbed(&self) -> u64 {
        self.dedup.iter().map(|s| s.duplicates()).sum()
    }

    /// Messages in the DLQ.
    pub(crate) fn dlq_depth(&self) -> i64 {
        depth(&self.meta, &self.retry.dlq_topic(TOPIC))
    }

    /// The broker's name in summaries.
    pub(crate) fn kafka_name(&self) -> &'static str {
        match self.broker {
            Broker::Mock => "mock",
            Broker::Kafka => "kafka",
            Broker::External => "external",
        }
    }

    /// Stops the worker, the relay and the service.
    pub(crate) async fn shutdown(mut self) -> anyhow::Result<Option<RunReport>> {
        let report = self.stop_worker().await?;
        self.stop.cancel();
        for t in self.tasks.drain(..) {
            t.await??;
        }
        Ok(report)
    }
}

/// Messages in `topic` (the sum of its partitions' watermark spans;
/// partitions that do not answer count 0).
pub(crate) fn depth(meta: &BaseConsumer, topic: &str) -> i64 {
    (0..PARTITIONS)
        .filter_map(|p| {
            meta.fetch_watermarks(topic, p, Duration::from_millis(800))
                .ok()
        })
        .map(|(lo, hi)| (hi - lo).max(0))
        .sum()
}

/// The worker group's lag on the click topic: end offsets minus its commits
/// (a partition without a commit counts from its start). `None` while the
/// brokers do not answer.
pub(crate) fn group_lag(meta: &BaseConsumer) -> Option<i64> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(TOPIC, p);
    }
    let committed = meta
        .committed_offsets(tpl, Duration::from_millis(800))
        .ok()?;
    let mut lag = 0;
    for p in 0..PARTITIONS {
        let (lo, hi) = meta
            .fetch_watermarks(TOPIC, p, Duration::from_millis(800))
            .ok()?;
        let from = match committed.find_partition(TOPIC, p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(c)) => c,
            _ => lo,
        };
        lag += (hi - from).max(0);
    }
    Some(lag)
}

/// The outbox relay and the waker a redirect notifies.
fn start_relay(
    db: &Db,
    brokers: &str,
    stop: CancellationToken,
) -> anyhow::Result<(JoinHandle<anyhow::Result<()>>, Arc<Notify>)> {
    // librdkafka waits up to 10 s between reconnects by default: after a
    // broker outage a click pipeline wants its clicks flowing within a second.
    let producer = weir::Producer::from_client_config(
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("reconnect.backoff.max.ms", RECONNECT_MAX_MS)
            .clone(),
    )?;
    let cfg = RelayConfig {
        poll_interval: Duration::from_millis(500),
        // A click is worth publishing soon after a broker outage.
        max_backoff: Duration::from_secs(2),
        ..Default::default()
    };
    Ok(match db {
        Db::Pg(pool) => {
            let relay = Arc::new(Relay::new(PostgresOutbox::new(pool.clone()), producer, cfg));
            let r = relay.clone();
            (
                tokio::spawn(async move { Ok(r.run(stop).await?) }),
                relay.waker(),
            )
        }
        Db::Lite(pool) => {
            let relay = Arc::new(Relay::new(SqliteOutbox::new(pool.clone()), producer, cfg));
            let r = relay.clone();
            (
                tokio::spawn(async move { Ok(r.run(stop).await?) }),
                relay.waker(),
            )
        }
    })
}

/// The worker group's consumer config; `WEIR_*` variables adjust it
/// (`WEIR_GROUP_PROTOCOL=consumer` runs the workers on KIP-848's protocol).
fn worker_config(brokers: &str) -> anyhow::Result<ConsumerConfig> {
    let mut cfg = ConsumerConfig::new(brokers, GROUP, &[TOPIC])
        // Low latency over fewer fetch requests: a click is worth seeing quickly.
        .set("fetch.wait.max.ms", "50")
        .set("reconnect.backoff.max.ms", RECONNECT_MAX_MS);
    cfg.commit_interval = Duration::from_millis(200);
    // Room for full batches (max_batch 256, two in flight).
    cfg.max_in_flight = 512;
    let mut cfg = cfg.with_env(std::env::vars())?;
    // The classic protocol's timeouts live on the client; the consumer
    // protocol's on the broker.
    if cfg.group_protocol == weir::GroupProtocol::Classic {
        cfg = cfg
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
    }
    Ok(cfg)
}
