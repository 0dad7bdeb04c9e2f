//! The relay: claim committed rows in id order, publish, wait for the acks, mark.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weir::producer::{Delivery, ProduceError, Producer, Record};

use crate::OutboxError;

mod batch;
use batch::{key_chains, publish_span, settle, to_records};

/// One unpublished row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Row id (publish order).
    pub id: i64,
    /// Destination topic.
    pub topic: String,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Option<Vec<u8>>,
    /// Encoded headers (see [`crate::encode_headers`]).
    pub headers: Vec<u8>,
    /// When the row was committed (epoch ms).
    pub created_ms: i64,
}

/// Rows claimed inside a backend transaction.
#[derive(Debug)]
pub struct Claimed<C> {
    /// The claim (a database transaction holding the rows).
    pub claim: C,
    /// Rows in id order.
    pub rows: Vec<Row>,
}

/// What happens to published rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MarkMode {
    /// Set `published_at` (keep the row for audits; the cleanup job deletes it later).
    #[default]
    MarkPublished,
    /// Delete the row at once.
    Delete,
}

/// A database the relay reads. Implemented for [`PostgresOutbox`](crate::PostgresOutbox)
/// and [`SqliteOutbox`](crate::SqliteOutbox).
pub trait Backend: Send + Sync + 'static {
    /// The claim's transaction.
    type Claim: Send;

    /// Claims up to `limit` unpublished rows in id order; `None` when another
    /// relay holds the lead.
    fn claim(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Claimed<Self::Claim>>, OutboxError>> + Send;

    /// Marks (or deletes) `ids` as published, records the failure of each row
    /// in `failed` (attempts and last error; they stay unpublished), and
    /// commits the claim: all in the claim's transaction, so that no other
    /// relay can claim a later row of a failed row's key in between. Rows in
    /// `poison` (undecodable headers, or a publish error that cannot recover)
    /// are marked published with their error, so they never block the queue.
    fn complete(
        &self,
        claim: Self::Claim,
        ids: Vec<i64>,
        mode: MarkMode,
        poison: Vec<(i64, String)>,
        failed: Vec<(i64, String)>,
    ) -> impl Future<Output = Result<(), OutboxError>> + Send;

    /// Unpublished rows and the oldest one's creation time (epoch ms).
    fn backlog(&self) -> impl Future<Output = Result<(i64, Option<i64>), OutboxError>> + Send;

    /// Deletes published rows older than `age`; returns how many.
    fn purge_published(
        &self,
        age: Duration,
    ) -> impl Future<Output = Result<u64, OutboxError>> + Send;

    /// Starts a task that calls `wake.notify_one()` when rows are committed
    /// (PostgreSQL `LISTEN`); `None` when the backend has no such signal.
    fn listen(
        &self,
        _wake: Arc<Notify>,
        _stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        None
    }
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows per claim (default 500).
    pub batch_size: usize,
    /// Polling fallback when no wake-up arrives (default 1 s).
    pub poll_interval: Duration,
    /// Longest back-off after failures (default 10 s).
    pub max_backoff: Duration,
    /// Mark or delete published rows.
    pub mark: MarkMode,
    /// Delete published rows older than this (default 7 days); `None` keeps them.
    pub retention: Option<Duration>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            mark: MarkMode::MarkPublished,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// Live relay counters.
#[derive(Debug, Default)]
pub struct RelayStats {
    published: AtomicU64,
    publish_errors: AtomicU64,
    batches: AtomicU64,
    poison: AtomicU64,
    quarantined: AtomicU64,
    backlog: AtomicI64,
    oldest_age_ms: AtomicI64,
    last_latency_ms: AtomicI64,
}

impl RelayStats {
    /// Rows published and marked.
    pub fn published(&self) -> u64 {
        self.published.load(Relaxed)
    }
    /// Failed publish attempts (a batch each).
    pub fn publish_errors(&self) -> u64 {
        self.publish_errors.load(Relaxed)
    }
    /// Batches published.
    pub fn batches(&self) -> u64 {
        self.batches.load(Relaxed)
    }
    /// Rows the broker refused for good (too large, invalid for the topic,
    /// unauthorised…): marked with their error instead of blocking the relay.
    pub fn quarantined(&self) -> u64 {
        self.quarantined.load(Relaxed)
    }
    /// Rows skipped because their headers could not be decoded.
    pub fn poison(&self) -> u64 {
        self.poison.load(Relaxed)
    }
    /// Unpublished rows at the last check.
    pub fn backlog(&self) -> i64 {
        self.backlog.load(Relaxed)
    }
    /// Age of the oldest unpublished row at the last check (ms; 0 when none).
    pub fn oldest_age_ms(&self) -> i64 {
        self.oldest_age_ms.load(Relaxed)
    }
    /// Commit-to-ack latency of the last published row (ms).
    pub fn last_latency_ms(&self) -> i64 {
        self.last_latency_ms.load(Relaxed)
    }
}

pub(crate) use weir::clock::now_ms;

/// Where a relay sends its rows: [`weir::Producer`] (the default), or a
/// wrapper around one (to count, to shape traffic, or to inject faults in a
/// test). A send resolves when the broker acknowledged the record or it
/// failed for good; [`ProduceError::is_retryable`] sorts the failures.
pub trait Publish: Send + Sync + 'static {
    /// Sends one record and waits for its acknowledgement.
    fn publish(
        &self,
        record: Record,
    ) -> impl Future<Output = Result<Delivery, ProduceError>> + Send;
}

impl Publish for Producer {
    fn publish(
        &self,
        record: Record,
    ) -> impl Future<Output = Result<Delivery, ProduceError>> + Send {
        self.send(record)
    }
}

/// Publishes outbox rows to Kafka. See the [crate docs](crate).
pub struct Relay<B, P = Producer> {
    backend: Arc<B>,
    producer: P,
    cfg: RelayConfig,
    stats: Arc<RelayStats>,
    wake: Arc<Notify>,
}

impl<B, P> std::fmt::Debug for Relay<B, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("cfg", &self.cfg).finish()
    }
}

impl<B: Backend, P: Publish> Relay<B, P> {
    /// A relay reading `backend` and publishing with `producer` (use an
    /// idempotent producer: [`weir::Producer`] is one).
    pub fn new(backend: impl Into<Arc<B>>, producer: P, cfg: RelayConfig) -> Self {
        Relay {
            backend: backend.into(),
            producer,
            cfg,
            stats: Arc::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Call `notify_one()` on this after committing rows in the same process to
    /// wake the relay at once (PostgreSQL also wakes it through `LISTEN`).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Claims and publishes one batch; returns the rows published (0 when
    /// there was nothing to do or another relay leads).
    pub async fn relay_once(&self) -> Result<usize, OutboxError> {
        let Some(Claimed { claim, rows }) = self.backend.claim(self.cfg.batch_size).await? else {
            return Ok(0);
        };
        if rows.is_empty() {
            self.backend
                .complete(claim, Vec::new(), self.cfg.mark, Vec::new(), Vec::new())
                .await?;
            return Ok(0);
        }
        let (records, mut poison) = to_records(&rows);
        // A key's rows are sent one after another, each once the previous
        // one is acknowledged, and a key stops at its first transient
        // failure: sent concurrently, a later row could be delivered while an
        // earlier one failed (a full local queue, a local timeout), and the
        // earlier one, sent again next claim, would land after it. Different
        // keys (and keyless rows) are sent concurrently.
        let send_one = |i: usize| {
            let (id, _, rec) = &records[i];
            tracing::Instrument::instrument(
                self.producer.publish(rec.clone()),
                publish_span(*id, rec),
            )
        };
        let chains = key_chains(&records);
        let sends = chains.into_iter().map(|chain| {
            let send_one = &send_one;
            async move {
                let mut out = Vec::with_capacity(chain.len());
                for i in chain {
                    let r = send_one(i).await;
                    let stop = matches!(&r, Err(e) if e.is_retryable());
                    out.push((i, r));
                    if stop {
                        break;
                    }
                }
                out
            }
        });
        let mut results: Vec<Option<Result<Delivery, ProduceError>>> =
            (0..records.len()).map(|_| None).collect();
        for (i, r) in futures::future::join_all(sends).await.into_iter().flatten() {
            results[i] = Some(r);
        }
        let outcome = settle(&records, results);
        for (_, created) in &outcome.published {
            let lat = now_ms() - created;
            self.stats.last_latency_ms.store(lat, Relaxed);
            metrics::histogram!("weir_outbox_publish_latency_seconds").record(lat as f64 / 1000.0);
        }
        for (id, err) in &outcome.quarantined {
            tracing::error!(id, error = %err, "outbox row cannot be published (the broker refuses it for good); quarantined with its error, not retried");
        }
        let ids: Vec<i64> = outcome.published.iter().map(|(id, _)| *id).collect();
        let n = ids.len();
        let quarantined = outcome.quarantined.len() as u64;
        self.stats.poison.fetch_add(poison.len() as u64, Relaxed);
        self.stats.quarantined.fetch_add(quarantined, Relaxed);
        metrics::counter!("weir_outbox_quarantined_total").increment(quarantined);
        poison.extend(outcome.quarantined);
        let failed = outcome.failed.clone();
        let recorded = self
            .backend
            .complete(claim, ids, self.cfg.mark, poison, failed)
            .await;
        self.stats.published.fetch_add(n as u64, Relaxed);
        metrics::counter!("weir_outbox_published_total").increment(n as u64);
        if let Some(e) = outcome.first_error {
            // Counted once the failure is on the rows (or recording it
            // failed), so that whoever sees the counter sees the rows' error.
            self.stats.publish_errors.fetch_add(1, Relaxed);
            metrics::counter!("weir_outbox_publish_errors_total").increment(1);
            recorded?;
            return Err(e.into());
        }
        recorded?;
        self.stats.batches.fetch_add(1, Relaxed);
        Ok(n)
    }

    async fn refresh_backlog(&self) {
        match self.backend.backlog().await {
            Ok((n, oldest)) => {
                let age = oldest.map_or(0, |o| (now_ms() - o).max(0));
                self.stats.backlog.store(n, Relaxed);
                self.stats.oldest_age_ms.store(age, Relaxed);
                metrics::gauge!("weir_outbox_backlog").set(n as f64);
                metrics::gauge!("weir_outbox_oldest_unpublished_age_seconds")
                    .set(age as f64 / 1000.0);
            }
            Err(e) => tracing::debug!(error = %e, "outbox backlog check failed"),
        }
    }

    /// Relays until `stop` fires: publishes full batches back to back, then
    /// waits for a wake-up (LISTEN, [`waker`](Self::waker)) or the polling
    /// interval; backs off exponentially on failures; checks the backlog and
    /// runs the retention cleanup periodically.
    pub async fn run(&self, stop: CancellationToken) -> Result<(), OutboxError> {
        let listener = self.backend.listen(self.wake.clone(), stop.child_token());
        let mut backoff = Duration::from_millis(100);
        let mut last_housekeeping = tokio::time::Instant::now() - Duration::from_secs(3600);
        while !stop.is_cancelled() {
            if last_housekeeping.elapsed() >= Duration::from_secs(5) {
                last_housekeeping = tokio::time::Instant::now();
                self.refresh_backlog().await;
                if let Some(age) = self.cfg.retention {
                    match self.backend.purge_published(age).await {
                        Ok(n) if n > 0 => tracing::debug!(purged = n, "outbox cleanup"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "outbox cleanup failed"),
                    }
                }
            }
            match self.relay_once().await {
                Ok(n) if n >= self.cfg.batch_size => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "outbox relay failed; rows stay unpublished; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
        }
        if let Some(l) = listener {
            l.abort();
        }
        Ok(())
    }
}
