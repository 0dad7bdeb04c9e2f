//! `batch-sink`: a PostgreSQL sink with idempotency markers, written one
//! message per transaction (`Transactional`) vs one batch per transaction
//! (`Batched` + `TransactionalBatch`), against a plain multi-row insert loop
//! of the same rows without Kafka or markers.

use std::sync::OnceLock;

use sqlx::{Postgres, Transaction};
use weir::batch::{BatchConfig, Batched, Outcomes};
use weir::{MESSAGE_ID_HEADER, ProcessError, StringCodec};
use weir_idempotency::{
    IdempotencyStats, PostgresStore, Transactional, TransactionalBatch, TxBatchProcessor,
    TxProcessor,
};

use crate::*;

/// The sink tables: same shape for the three paths (primary key included, so
/// each path maintains the same index).
const TABLE: &str = "(id BIGINT PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL)";

/// When the first message reached a handler: throughput is measured from
/// there to the last row, so neither consumer pays for its group join.
#[derive(Default)]
struct Clock(OnceLock<Instant>);

impl Clock {
    fn start(&self) {
        let _ = self.0.get_or_init(Instant::now);
    }
}

/// A row of the sink: the message's number (first word of the value), key
/// and value.
fn row(m: &Message<String>) -> Result<(i64, String, String), ProcessError> {
    let id = m
        .value()
        .split(' ')
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| {
            ProcessError::terminal(std::io::Error::other("value does not start with a number"))
                .with_class("bad_row")
        })?;
    Ok((
        id,
        m.key_str().unwrap_or_default().to_string(),
        m.value().clone(),
    ))
}

fn db_err(e: sqlx::Error) -> ProcessError {
    ProcessError::retryable(e).with_class("db")
}

/// One `INSERT` per message, in the marker's transaction.
struct Single(Arc<Clock>);

impl TxProcessor<String, Postgres> for Single {
    async fn process(
        &self,
        msg: Message<String>,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), ProcessError> {
        self.0.start();
        let (id, k, v) = row(&msg)?;
        sqlx::query("INSERT INTO sink_single (id, k, v) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(k)
            .bind(v)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

/// One `INSERT … SELECT unnest(…)` per batch, in the batch's transaction.
struct Bulk {
    clock: Arc<Clock>,
    batches: AtomicU64,
}

/// The batch handler (shares its counters with the scenario).
struct BulkHandler(Arc<Bulk>);

impl TxBatchProcessor<String, Postgres> for BulkHandler {
    async fn process_batch(
        &self,
        batch: Vec<Message<String>>,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<Outcomes, ProcessError> {
        self.0.clock.start();
        self.0.batches.fetch_add(1, SeqCst);
        let (mut ids, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
        let outcomes: Outcomes = batch
            .iter()
            .map(|m| {
                let (id, k, v) = row(m)?;
                ids.push(id);
                ks.push(k);
                vs.push(v);
                Ok(())
            })
            .collect();
        insert_many("sink_batch", &ids, &ks, &vs, &mut **tx)
            .await
            .map_err(db_err)?;
        Ok(outcomes)
    }
}

async fn insert_many<'c>(
    table: &str,
    ids: &[i64],
    ks: &[String],
    vs: &[String],
    conn: impl sqlx::PgExecutor<'c>,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO {table} (id, k, v) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])"
    ))
    .bind(ids)
    .bind(ks)
    .bind(vs)
    .execute(conn)
    .await?;
    Ok(())
}

/// Runs one consumer over the topic until `n` messages are fresh in the
/// store; returns rows per second from its first handler call.
async fn consume(
    cluster: &KafkaCluster,
    group: &str,
    n: u64,
    processor: impl weir::Processor<String>,
    stats: Arc<IdempotencyStats>,
    clock: &Clock,
    max_batch: usize,
) -> anyhow::Result<f64> {
    let mut cfg = weir_config(cluster, group, TOPIC);
    // Room for the batches in the database and the next ones filling
    // (WEIR_MAX_IN_FLIGHT overrides).
    if std::env::var_os("WEIR_MAX_IN_FLIGHT").is_none() {
        cfg.max_in_flight = cfg.max_in_flight.max(4 * max_batch);
    }
    let consumer = Consumer::builder(cfg).codec(StringCodec).build(processor)?;
    let handle = consumer.handle();
    let run = tokio::spawn(consumer.run());
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.fresh() < n {
        if Instant::now() > deadline || run.is_finished() {
            handle.shutdown();
            bail!(
                "{group}: {} of {n} rows written in 600 s (received {}, store errors {})",
                stats.fresh(),
                handle.stats().received(),
                stats.store_errors()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = clock
        .0
        .get()
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(f64::NAN);
    handle.shutdown();
    let report = run.await??;
    if !report.drained {
        bail!("{group}: the consumer did not drain: {report:?}");
    }
    Ok(n as f64 / secs)
}

const TOPIC: &str = "bench-batch-sink";

pub(crate) async fn batch_sink(
    args: &Args,
    cluster: &KafkaCluster,
) -> anyhow::Result<serde_json::Value> {
    let n = args.messages.unwrap_or(20_000);
    let max_batch = args.max_batch;
    cluster.create_topic(TOPIC, 4).await?;
    let payload = "x".repeat(100);
    let value = |i: u64| format!("{i} {payload}");
    let key = |i: u64| format!("key-{}", i % 500);
    let mut i = 0;
    while i < n {
        let end = (i + 5000).min(n);
        cluster
            .produce(
                TOPIC,
                (i..end).map(|j| {
                    TestRecord::keyed(key(j), value(j))
                        .partition((j % 4) as i32)
                        .header(MESSAGE_ID_HEADER, format!("m-{j}"))
                }),
            )
            .await?;
        i = end;
    }
    let db = weir_testkit::PostgresDb::fresh().await?;
    let store = Arc::new(PostgresStore::new(db.pool().clone()));
    store.migrate().await?;
    for t in [
        "sink_plain",
        "sink_plain_markers",
        "sink_batch",
        "sink_single",
    ] {
        sqlx::query(&format!("CREATE TABLE {t} {TABLE}"))
            .execute(db.pool())
            .await?;
    }

    // Plain: the same rows, `max_batch` per statement, one connection, no
    // Kafka, no markers.
    // The rows of each statement (built inside the timed loops, as the Weir
    // paths build theirs from messages).
    let chunks: Vec<std::ops::Range<u64>> = (0..n)
        .step_by(max_batch)
        .map(|i| i..(i + max_batch as u64).min(n))
        .collect();
    let rows_of = |r: &std::ops::Range<u64>| {
        (
            r.clone().map(|j| j as i64).collect::<Vec<i64>>(),
            r.clone().map(key).collect::<Vec<String>>(),
            r.clone().map(value).collect::<Vec<String>>(),
        )
    };
    let t = Instant::now();
    let mut conn = db.pool().acquire().await?;
    for r in &chunks {
        let (ids, ks, vs) = rows_of(r);
        insert_many("sink_plain", &ids, &ks, &vs, &mut *conn).await?;
    }
    let plain = n as f64 / t.elapsed().as_secs_f64();

    // Plain with markers: the SQL of `TransactionalBatch` without Kafka (one
    // transaction per `max_batch` rows: markers claimed, rows inserted).
    let t = Instant::now();
    for r in &chunks {
        let (ids, ks, vs) = rows_of(r);
        let marker_ids: Vec<String> = r.clone().map(|j| format!("m-{j}")).collect();
        let partitions: Vec<i32> = r.clone().map(|j| (j % 4) as i32).collect();
        let mut tx = db.pool().begin().await?;
        let claimed: Vec<String> = sqlx::query_scalar(
            "INSERT INTO processed_messages \
             (consumer_group, message_id, topic, \"partition\", \"offset\") \
             SELECT 'bench-plain', u.id, $2, u.p, u.o \
             FROM unnest($1::text[], $3::int[], $4::bigint[]) AS u(id, p, o) \
             ORDER BY u.id \
             ON CONFLICT (consumer_group, message_id) DO NOTHING \
             RETURNING message_id",
        )
        .bind(&marker_ids)
        .bind(TOPIC)
        .bind(&partitions)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        if claimed.len() != ids.len() {
            bail!(
                "plain with markers: {} of {} markers claimed",
                claimed.len(),
                ids.len()
            );
        }
        insert_many("sink_plain_markers", &ids, &ks, &vs, &mut *tx).await?;
        tx.commit().await?;
    }
    drop(conn);
    let plain_markers = n as f64 / t.elapsed().as_secs_f64();

    // Batch: Batched(TransactionalBatch).
    let bulk = Arc::new(Bulk {
        clock: Arc::default(),
        batches: AtomicU64::new(0),
    });
    let handler = TransactionalBatch::<_, PostgresStore, _>::new(
        BulkHandler(bulk.clone()),
        store.clone(),
        "bench-batch",
    );
    let stats = handler.stats();
    let processor = Batched::new(
        handler,
        BatchConfig {
            max_batch,
            max_wait: Duration::from_millis(20),
            ..BatchConfig::default()
        },
    )?
    .group_label("bench-batch");
    let batch = consume(
        cluster,
        "bench-batch",
        n,
        processor,
        stats.clone(),
        &bulk.clock,
        max_batch,
    )
    .await?;
    let batches = bulk.batches.load(SeqCst);

    // Single: Transactional, one transaction per message.
    let clock = Arc::new(Clock::default());
    let handler = Transactional::<_, PostgresStore, _>::new(
        Single(clock.clone()),
        store.clone(),
        "bench-single",
    );
    let single_stats = handler.stats();
    let single = consume(
        cluster,
        "bench-single",
        n,
        handler,
        single_stats.clone(),
        &clock,
        max_batch,
    )
    .await?;

    // Every path wrote every row once, and the Weir paths one marker each.
    for t in [
        "sink_plain",
        "sink_plain_markers",
        "sink_batch",
        "sink_single",
    ] {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}"))
            .fetch_one(db.pool())
            .await?;
        if rows != n as i64 {
            bail!("{t} holds {rows} rows, expected {n}");
        }
    }
    let markers: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_messages")
        .fetch_one(db.pool())
        .await?;
    if markers != 3 * n as i64 {
        bail!("{markers} markers, expected {}", 3 * n);
    }

    let mean_batch = n as f64 / batches.max(1) as f64;
    println!(
        "batch-sink: {n} rows (100-byte values, 500 keys, 4 partitions) into PostgreSQL\n\
         \x20 plain multi-row insert loop, {max_batch} rows/statement, no Kafka, no markers: {plain:>9.0} rows/s\n\
         \x20 the same with markers, one transaction per statement (TransactionalBatch's SQL): {plain_markers:>9.0} rows/s\n\
         \x20 Weir Batched(TransactionalBatch), max_batch {max_batch}:                     {batch:>9.0} rows/s  ({batches} batches, mean {mean_batch:.0})\n\
         \x20 Weir Transactional, one transaction per message:                  {single:>9.0} rows/s\n\
         \x20 batch / single = {:.1}x (goal >= 5), batch / plain = {:.2} (goal >= 0.8), batch / plain with markers = {:.2}",
        batch / single,
        batch / plain,
        batch / plain_markers
    );
    Ok(json!({
        "rows_per_s": {"plain": plain.round(), "plain_markers": plain_markers.round(), "batch": batch.round(), "single": single.round()},
        "ratio": {"batch_vs_single": batch / single, "batch_vs_plain": batch / plain, "batch_vs_plain_markers": batch / plain_markers},
        "batches": batches,
        "mean_batch": mean_batch,
        "max_batch": max_batch,
    }))
}
