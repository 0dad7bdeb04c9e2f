//! The click pipeline: a URL shortener's redirect service writes each click to
//! a transactional outbox, a relay publishes it to Kafka, and a worker group
//! enriches it and stores it exactly once, with retry tiers and a DLQ.
//!
//! ```text
//! cargo run --release -p weir-examples --bin clicks -- --events 2000 --json
//! ```
//! With no `KAFKA_BOOTSTRAP_SERVERS` it runs on librdkafka's in-process mock
//! cluster; with no `DATABASE_URL` on SQLite in a temporary directory.
//! `lost` and `duplicate_effects` are computed from the `clicks` table itself.
//! Exit code 1 if anything was lost or applied twice, or the DLQ does not hold
//! exactly the poison events.

mod db;
mod enrich;
mod load;
mod verdict;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Sqlite, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weir::retry::RetryTopics;
use weir::{Consumer, ConsumerConfig, ConsumerHandle, JsonCodec, Message, ProcessError, Processor};
use weir_idempotency::{IdempotencyStats, Transactional, TxProcessor};
use weir_outbox::{OutboxRecord, PostgresOutbox, Relay, RelayConfig, SqliteOutbox};
use weir_testkit::KafkaCluster;

use db::Db;
use enrich::{Geo, enrich};

const TOPIC: &str = "clicks";
const GROUP: &str = "click-enricher";
const LINKS: usize = 50;

#[derive(Parser, Debug)]
#[command(
    about = "The click pipeline: redirect service -> outbox -> relay -> Kafka -> enriching worker"
)]
struct Args {
    /// Redirect requests the load driver sends.
    #[arg(long, default_value_t = 2000)]
    events: usize,
    /// Share of events whose payload is malformed (they must end in the DLQ).
    #[arg(long, default_value_t = 0.02)]
    poison_share: f64,
    /// Share of events re-published with the same message ID (must be absorbed).
    #[arg(long, default_value_t = 0.03)]
    duplicate_share: f64,
    /// Share of events whose enrichment fails on the first try (retried through a tier).
    #[arg(long, default_value_t = 0.05)]
    failure_rate: f64,
    /// Concurrent HTTP requests of the load driver.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// A MaxMind GeoIP2/GeoLite2 Country database (default: a small bundled table).
    #[arg(long)]
    geoip_db: Option<std::path::PathBuf>,
    /// Give up waiting for the pipeline to drain after this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout_s: u64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Serve Prometheus `/metrics`, `/healthz` and `/readyz` here while running (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
}

/// The event the redirect service enqueues.
#[derive(Debug, Serialize, Deserialize)]
struct ClickEvent {
    link: String,
    at_ms: i64,
    ip: String,
    user_agent: String,
    referrer: Option<String>,
}

use weir::clock::now_ms;

/// Deterministic "does this event's first enrichment fail?" (FNV-1a of the id).
fn fails_first(id: &str, rate: f64) -> bool {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    ((h % 10_000) as f64) < rate * 10_000.0
}

struct Worker {
    geo: Geo,
    failure_rate: f64,
    retried: AtomicU64,
}

impl Worker {
    /// Enriches, or fails transiently (a geo service timing out) on the first try of some events.
    fn enrich(
        &self,
        msg: &Message<ClickEvent>,
    ) -> Result<(String, enrich::Enriched), ProcessError> {
        let id = msg.message_id().unwrap_or_default().to_string();
        if msg.attempt() > 1 {
            self.retried.fetch_add(1, Relaxed);
        } else if fails_first(&id, self.failure_rate) {
            return Err(
                ProcessError::retryable(std::io::Error::other("geo lookup timed out"))
                    .with_class("geo_timeout"),
            );
        }
        let e = msg.value();
        Ok((id, enrich(&self.geo, &e.ip, &e.user_agent)))
    }
}

fn db_err(e: sqlx::Error) -> ProcessError {
    ProcessError::retryable(e).with_class("db")
}

impl TxProcessor<ClickEvent, Postgres> for Arc<Worker> {
    async fn process(
        &self,
        msg: Message<ClickEvent>,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), ProcessError> {
        let (id, en) = self.enrich(&msg)?;
        let e = msg.value();
        sqlx::query(
            "INSERT INTO clicks (event_id, link_code, clicked_at_ms, processed_at_ms, ip, browser, os, device, country, referrer) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(&e.link)
        .bind(e.at_ms)
        .bind(now_ms())
        .bind(&e.ip)
        .bind(en.browser)
        .bind(en.os)
        .bind(en.device)
        .bind(en.country)
        .bind(&e.referrer)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

impl TxProcessor<ClickEvent, Sqlite> for Arc<Worker> {
    async fn process(
        &self,
        msg: Message<ClickEvent>,
        tx: &mut Transaction<'static, Sqlite>,
    ) -> Result<(), ProcessError> {
        let (id, en) = self.enrich(&msg)?;
        let e = msg.value();
        sqlx::query(
            "INSERT INTO clicks (event_id, link_code, clicked_at_ms, processed_at_ms, ip, browser, os, device, country, referrer) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(&e.link)
        .bind(e.at_ms)
        .bind(now_ms())
        .bind(&e.ip)
        .bind(en.browser)
        .bind(en.os)
        .bind(en.device)
        .bind(en.country)
        .bind(&e.referrer)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

/// The redirect service's state.
struct App {
    db: Db,
    wake: Arc<Notify>,
}

/// `GET /{code}`: 302 to the target at once; the click goes to the outbox in
/// the same transaction as the hit counter. Never waits for Kafka.
async fn redirect(
    State(app): State<Arc<App>>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let event = ClickEvent {
        link: code.clone(),
        at_ms: now_ms(),
        ip: h("x-forwarded-for").unwrap_or_else(|| "0.0.0.0".into()),
        user_agent: h("user-agent").unwrap_or_default(),
        referrer: h("referer"),
    };
    let mut rec = OutboxRecord::to(TOPIC).key(code.clone());
    rec = if h("x-demo-poison").is_some() {
        // A buggy client version: the event is not valid JSON.
        rec.payload(format!(r#"{{"link":"{code}","at_ms":"#))
    } else {
        match rec.json(&event) {
            Ok(r) => r,
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    };
    if let Some(tp) = h("traceparent") {
        rec = rec.header("traceparent", tp);
    }
    match app.db.redirect(&code, rec).await {
        Ok(Some((target, id))) => {
            app.wake.notify_one();
            (
                StatusCode::FOUND,
                [
                    (header::LOCATION, target),
                    (header::HeaderName::from_static("x-click-id"), id),
                ],
            )
                .into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "unknown link").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "redirect failed");
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
    }
}

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15",
    "curl/8.4.0",
];
const IPS: &[&str] = &[
    "192.0.2.10",
    "198.51.100.20",
    "203.0.113.30",
    "100.64.1.2",
    "8.8.8.8",
];

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn start_worker<P: Processor<ClickEvent>>(
    cfg: ConsumerConfig,
    rt: RetryTopics,
    p: P,
) -> anyhow::Result<(
    ConsumerHandle,
    tokio::task::JoinHandle<Result<weir::RunReport, weir::WeirError>>,
)> {
    let c = Consumer::builder(cfg)
        .codec(JsonCodec::<ClickEvent>::new())
        .retry_topics(rt)
        .build(p)?;
    let h = c.handle();
    Ok((h, tokio::spawn(c.run())))
}

fn dlq_depth(client: &rdkafka::consumer::BaseConsumer, topic: &str, partitions: i32) -> i64 {
    use rdkafka::consumer::Consumer as _;
    (0..partitions)
        .filter_map(|p| {
            client
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .ok()
        })
        .map(|(lo, hi)| hi - lo)
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let started = Instant::now();

    // Kafka: the configured cluster, or an in-process mock cluster.
    let cluster = match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(b) => KafkaCluster::external_at(&b),
        Err(_) => KafkaCluster::mock(1)?,
    };
    let brokers = cluster.bootstrap_servers().to_string();
    let partitions = 4;
    let retry =
        RetryTopics::tiers([Duration::from_millis(200), Duration::from_secs(1)]).jitter(0.0);
    let mut wanted = vec![TOPIC.to_string(), retry.dlq_topic(TOPIC)];
    wanted.extend(retry.retry_topics_of(TOPIC));
    for t in &wanted {
        // The mock cluster cannot create topics over the protocol; elsewhere a
        // topic that already exists is fine.
        if let Err(e) = cluster.create_topic(t, partitions).await {
            tracing::debug!(topic = %t, error = %e, "create topic");
        }
    }

    // Database: DATABASE_URL, or SQLite in a temporary directory.
    let dir = tempfile::Builder::new().prefix("weir-clicks-").tempdir()?;
    let (db, db_desc) = Db::open(std::env::var("DATABASE_URL").ok().as_deref(), dir.path()).await?;
    db.migrate().await?;
    db.reset().await?;
    db.seed_links(LINKS).await?;
    eprintln!(
        "clicks: kafka {}, database {db_desc}",
        if std::env::var("KAFKA_BOOTSTRAP_SERVERS").is_ok() {
            brokers.as_str()
        } else {
            "in-process mock cluster"
        }
    );

    // Metric handles are bound when consumers start: install the recorder first.
    let telemetry = match args.metrics_addr {
        Some(_) => Some(weir_telemetry::Telemetry::install()?),
        None => None,
    };
    let stop = CancellationToken::new();
    let producer = weir::Producer::new(&brokers)?;
    let relay_cfg = RelayConfig {
        poll_interval: Duration::from_millis(500),
        ..Default::default()
    };
    let geo = match &args.geoip_db {
        Some(p) => Geo::maxmind(p).with_context(|| format!("opening {}", p.display()))?,
        None => Geo::bundled()?,
    };
    let worker = Arc::new(Worker {
        geo,
        failure_rate: args.failure_rate,
        retried: AtomicU64::new(0),
    });
    let mut cfg = ConsumerConfig::new(&brokers, GROUP, &[TOPIC])
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        // Low latency over fewer fetch requests: a click is worth seeing quickly.
        .set("fetch.wait.max.ms", "50");
    cfg.commit_interval = Duration::from_millis(200);
    cfg.max_in_flight = 64;

    let (wake, relay_task, dedup, handle, run): (Arc<Notify>, _, Arc<IdempotencyStats>, _, _) =
        match &db {
            Db::Pg(pool) => {
                let relay = Arc::new(Relay::new(
                    PostgresOutbox::new(pool.clone()),
                    producer,
                    relay_cfg,
                ));
                let (r, s) = (relay.clone(), stop.clone());
                let t = tokio::spawn(async move { r.run(s).await });
                let p = Transactional::new(
                    worker.clone(),
                    weir_idempotency::PostgresStore::new(pool.clone()),
                    GROUP,
                );
                let st = p.stats();
                let (h, run) = start_worker(cfg, retry.clone(), p).await?;
                (relay.waker(), t, st, h, run)
            }
            Db::Lite(pool) => {
                let relay = Arc::new(Relay::new(
                    SqliteOutbox::new(pool.clone()),
                    producer,
                    relay_cfg,
                ));
                let (r, s) = (relay.clone(), stop.clone());
                let t = tokio::spawn(async move { r.run(s).await });
                let p = Transactional::new(
                    worker.clone(),
                    weir_idempotency::SqliteStore::new(pool.clone()),
                    GROUP,
                );
                let st = p.stats();
                let (h, run) = start_worker(cfg, retry.clone(), p).await?;
                (relay.waker(), t, st, h, run)
            }
        };

    if let (Some(t), Some(addr)) = (&telemetry, args.metrics_addr) {
        let (bound, _server) = t
            .serve(addr, vec![handle.clone()], Default::default())
            .await?;
        eprintln!("clicks: metrics on http://{bound}/metrics");
    }
    // Measure the steady state: start the traffic once the worker has its partitions.
    let join_deadline = Instant::now() + Duration::from_secs(60);
    while handle.stats().assigned_partitions() < (partitions as u64) * 3
        && Instant::now() < join_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The redirect service.
    let app = Arc::new(App {
        db,
        wake: wake.clone(),
    });
    let router = axum::Router::new()
        .route("/{code}", axum::routing::get(redirect))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await
    });

    // The load driver.
    let load::Load {
        mut redirect_ms,
        expected,
        poison_count,
    } = load::drive(addr, &args).await?;
    // Duplicate deliveries: re-publish some events with their message IDs.
    let n_dup = (args.events as f64 * args.duplicate_share).round() as usize;
    let dup_ids: Vec<String> = expected
        .iter()
        .step_by((expected.len() / n_dup.max(1)).max(1))
        .take(n_dup)
        .cloned()
        .collect();
    let duplicates_sent = app.db.republish(&dup_ids).await?;
    wake.notify_one();

    // Wait until the pipeline drains: every valid event in `clicks`, every poison event in the DLQ.
    let meta: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let dlq_topic = retry.dlq_topic(TOPIC);
    let bar = indicatif::ProgressBar::new(expected.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} {bar:40} {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("processed");
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    loop {
        let rows = app.db.clicks().await?;
        let seen: BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let done = expected
            .iter()
            .filter(|id| seen.contains(id.as_str()))
            .count();
        bar.set_position(done as u64);
        let dlq_now = tokio::task::block_in_place(|| dlq_depth(&meta, &dlq_topic, partitions));
        let absorbed_all = dedup.duplicates() >= duplicates_sent as u64;
        if (done == expected.len() && dlq_now >= poison_count && absorbed_all)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish_and_clear();
    // Let in-flight commits land, then stop everything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.shutdown();
    let report = run.await??;
    stop.cancel();
    relay_task.await??;
    server.await??;

    // The verdict, from the table and the DLQ topic themselves.
    let ok = verdict::report(verdict::Inputs {
        args: &args,
        db: &app.db,
        db_desc: &db_desc,
        expected: &expected,
        poison_count,
        dlq: tokio::task::block_in_place(|| dlq_depth(&meta, &dlq_topic, partitions)),
        redirect_ms: &mut redirect_ms,
        retried: worker.retried.load(Relaxed),
        duplicates_sent,
        duplicates_absorbed: dedup.duplicates(),
        drained: report.drained,
        started,
    })
    .await?;
    if !ok {
        eprintln!("FAILED: something was lost, applied twice, or misrouted");
        std::process::exit(1);
    }
    Ok(())
}
