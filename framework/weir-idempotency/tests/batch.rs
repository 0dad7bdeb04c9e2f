//! Batch processors with the idempotency store, against real brokers (the
//! mock cluster and Apache Kafka) and PostgreSQL:
//! - `TransactionalBatch` writes a batch's effects with one multi-row insert
//!   in the transaction holding its markers; copies of processed messages are
//!   taken out before the handler sees the batch;
//! - failures reported per message go their own way (in-place retry, then
//!   the failure sink), without a marker, and are applied once on retry;
//! - `Ordering::Key` holds: a batch never holds two messages of one key, and
//!   each key's messages are handled in offset order;
//! - a second run of the topic under the same idempotency group finds every
//!   marker: no new effect.

#[path = "../../weir/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use sqlx::{Postgres, Transaction};
use weir::batch::{BatchConfig, Batched, Outcomes};
use weir::{Consumer, ConsumerConfig, Message, ProcessError, StringCodec};
use weir_idempotency::{PostgresStore, TransactionalBatch, TxBatchProcessor};
use weir_testkit::{BrokerKind, KafkaCluster, PostgresDb, TestRecord};

use common::{R, wait_until_async};

const TOPIC: &str = "payments";
const MARKER_GROUP: &str = "ledger";
const N: usize = 600;
const COPIES: usize = 60;
const KEYS: usize = 50;

broker_tests!(batches_write_once_keep_key_order_and_retry_failures_alone);

#[derive(Default)]
struct Seen {
    /// Last offset handled per (partition, key).
    last: parking_lot::Mutex<HashMap<(i32, String), i64>>,
    order_violations: AtomicU64,
    same_key_in_batch: AtomicU64,
    batches: AtomicUsize,
    largest: AtomicUsize,
}

/// One `INSERT … SELECT unnest(…)` per batch; the first attempt of every
/// tenth payment fails (reported for that message only, nothing written).
struct BulkLedger(Arc<Seen>);

impl TxBatchProcessor<String, Postgres> for BulkLedger {
    async fn process_batch(
        &self,
        batch: Vec<Message<String>>,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<Outcomes, ProcessError> {
        let seen = &self.0;
        seen.batches.fetch_add(1, SeqCst);
        seen.largest.fetch_max(batch.len(), SeqCst);
        let mut keys = std::collections::HashSet::new();
        let mut ids = Vec::new();
        let mut offsets = Vec::new();
        let mut outcomes = Vec::new();
        for m in &batch {
            let key = m.key_str().unwrap_or_default().to_string();
            if !keys.insert((m.partition(), key.clone())) {
                seen.same_key_in_batch.fetch_add(1, SeqCst);
            }
            let mut last = seen.last.lock();
            let prev = last.entry((m.partition(), key)).or_insert(-1);
            if m.offset() < *prev {
                seen.order_violations.fetch_add(1, SeqCst);
            }
            *prev = (*prev).max(m.offset());
            let id = m.message_id().unwrap_or_default().to_string();
            let n: usize = id.trim_start_matches("pay-").parse().unwrap_or(1);
            if n.is_multiple_of(10) && m.attempt() == 1 {
                outcomes.push(Err(ProcessError::retryable(std::io::Error::other(
                    "downstream 503",
                ))
                .with_class("http_503")));
            } else {
                ids.push(id);
                offsets.push(m.offset());
                outcomes.push(Ok(()));
            }
        }
        sqlx::query(
            "INSERT INTO effects (message_id, \"offset\") \
             SELECT * FROM unnest($1::text[], $2::bigint[])",
        )
        .bind(&ids)
        .bind(&offsets)
        .execute(&mut **tx)
        .await
        .map_err(|e| ProcessError::retryable(e).with_class("db"))?;
        Ok(Outcomes::new(outcomes))
    }
}

fn config(cluster: &KafkaCluster, group: &str) -> ConsumerConfig {
    let mut c = common::config(cluster, group, &[TOPIC]);
    c.max_in_flight = 256;
    c.retry.initial_backoff = Duration::from_millis(10);
    c.retry.max_attempts = 3;
    c
}

async fn produce(cluster: &KafkaCluster) -> anyhow::Result<()> {
    let rec = |i: usize| {
        TestRecord::keyed(format!("acct-{}", i % KEYS), format!("pay-{i}"))
            .header(weir::MESSAGE_ID_HEADER, format!("pay-{i}"))
    };
    cluster.produce(TOPIC, (0..N).map(rec)).await?;
    // Re-published copies (a producer retried): same ID, later offset.
    cluster
        .produce(TOPIC, (0..COPIES).map(|i| rec(i * 7 % N)))
        .await?;
    Ok(())
}

async fn run_once(
    cluster: &KafkaCluster,
    pg: &PostgresDb,
    kafka_group: &str,
    until: impl Fn(&weir_idempotency::IdempotencyStats) -> bool,
) -> anyhow::Result<(Arc<Seen>, weir::ConsumerHandle, weir::RunReport)> {
    let seen = Arc::new(Seen::default());
    let handler = TransactionalBatch::new(
        BulkLedger(seen.clone()),
        PostgresStore::new(pg.pool().clone()),
        MARKER_GROUP,
    );
    let stats = handler.stats();
    let batch = BatchConfig {
        max_batch: 100,
        max_wait: Duration::from_millis(20),
        ..BatchConfig::default()
    };
    let processor = Batched::new(handler, batch)?.group_label(kafka_group);
    let c = Consumer::builder(config(cluster, kafka_group))
        .codec(StringCodec)
        .build(processor)?;
    let handle = c.handle();
    let run = tokio::spawn(c.run());
    wait_until_async("every message handled", Duration::from_secs(90), || async {
        until(&stats)
    })
    .await;
    handle.shutdown();
    let report = run.await??;
    Ok((seen, handle, report))
}

async fn batches_write_once_keep_key_order_and_retry_failures_alone(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    cluster.create_topic(TOPIC, 3).await?;
    produce(&cluster).await?;
    let pg = PostgresDb::fresh().await?;
    PostgresStore::new(pg.pool().clone()).migrate().await?;
    sqlx::query("CREATE TABLE effects (message_id TEXT NOT NULL, \"offset\" BIGINT NOT NULL)")
        .execute(pg.pool())
        .await?;

    let (seen, handle, report) = run_once(&cluster, &pg, "ledger-a", |s| {
        s.fresh() >= N as u64 && s.duplicates() >= COPIES as u64
    })
    .await?;
    assert!(report.drained && report.halted.is_empty(), "{report:?}");
    let effects: Vec<(String, i64)> =
        sqlx::query_as("SELECT message_id, count(*) FROM effects GROUP BY message_id")
            .fetch_all(pg.pool())
            .await?;
    assert_eq!(effects.len(), N, "one effect per message ID");
    assert!(
        effects.iter().all(|(_, c)| *c == 1),
        "an ID written twice: {:?}",
        effects.iter().filter(|(_, c)| *c > 1).collect::<Vec<_>>()
    );
    let markers: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_messages")
        .fetch_one(pg.pool())
        .await?;
    assert_eq!(markers, N as i64);
    assert_eq!(
        handle.stats().retries(),
        (N / 10) as u64,
        "each failed message retried alone, once"
    );
    assert_eq!(seen.order_violations.load(SeqCst), 0, "key order broken");
    assert_eq!(
        seen.same_key_in_batch.load(SeqCst),
        0,
        "two messages of one key in a batch"
    );
    let batches = seen.batches.load(SeqCst);
    let largest = seen.largest.load(SeqCst);
    eprintln!(
        "batches of the first run: {batches} for {} deliveries, largest {largest}",
        N + COPIES
    );
    // 50 keys: with Key ordering up to 50 messages can be released at once.
    assert!(largest >= 10, "messages were batched (largest {largest})");
    assert!(
        batches * 4 <= N + COPIES + N / 10,
        "{batches} batches for {} deliveries",
        N + COPIES
    );

    // The whole topic again, under a new Kafka group but the same markers:
    // every message is a duplicate, no effect is added, the handler sees none.
    let (seen2, _, report) = run_once(&cluster, &pg, "ledger-b", |s| {
        s.duplicates() >= (N + COPIES) as u64
    })
    .await?;
    assert!(report.drained && report.halted.is_empty(), "{report:?}");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(pg.pool())
        .await?;
    assert_eq!(total, N as i64, "a replay added effects");
    assert_eq!(
        seen2.batches.load(SeqCst),
        0,
        "the handler saw already-processed messages"
    );
    Ok(())
}
