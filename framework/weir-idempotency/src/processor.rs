//! Processors that de-duplicate: [`Idempotent`] wraps any processor,
//! [`Transactional`] gives a [`TxProcessor`] the claim's database transaction.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use weir::id::{MAX_MESSAGE_ID_LEN, MESSAGE_ID_HEADER};
use weir::{Message, ProcessError, Processor};

use crate::store::{Claim, IdempotencyStore, MarkerKey};

/// A function reading a message ID from a decoded message.
pub type ExtractFn<T> = Arc<dyn Fn(&Message<T>) -> Option<String> + Send + Sync>;

/// Where a message's identity comes from.
pub enum IdSource<T> {
    /// A header (UTF-8), by default [`MESSAGE_ID_HEADER`], optionally falling back to
    /// the coordinates `topic/partition@offset` when the header is missing.
    Header {
        /// Header name.
        name: String,
        /// Use the coordinates when the header is absent.
        fallback_to_coordinates: bool,
    },
    /// The coordinates only. Weaker: a re-published copy is a new identity.
    Coordinates,
    /// Your function of the decoded message (a payload field such as an event
    /// id), optionally falling back to the coordinates when it returns `None`.
    Custom {
        /// The extractor.
        extract: ExtractFn<T>,
        /// Use the coordinates when it returns `None`.
        fallback_to_coordinates: bool,
    },
}

impl<T> Clone for IdSource<T> {
    fn clone(&self) -> Self {
        match self {
            IdSource::Header {
                name,
                fallback_to_coordinates,
            } => IdSource::Header {
                name: name.clone(),
                fallback_to_coordinates: *fallback_to_coordinates,
            },
            IdSource::Coordinates => IdSource::Coordinates,
            IdSource::Custom {
                extract,
                fallback_to_coordinates,
            } => IdSource::Custom {
                extract: extract.clone(),
                fallback_to_coordinates: *fallback_to_coordinates,
            },
        }
    }
}

impl<T> std::fmt::Debug for IdSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdSource::Header {
                name,
                fallback_to_coordinates,
            } => f
                .debug_struct("Header")
                .field("name", name)
                .field("fallback_to_coordinates", fallback_to_coordinates)
                .finish(),
            IdSource::Coordinates => f.write_str("Coordinates"),
            IdSource::Custom {
                fallback_to_coordinates,
                ..
            } => f
                .debug_struct("Custom")
                .field("fallback_to_coordinates", fallback_to_coordinates)
                .finish_non_exhaustive(),
        }
    }
}

impl<T> Default for IdSource<T> {
    /// The Weir message ID header, else the coordinates.
    fn default() -> Self {
        IdSource::Header {
            name: MESSAGE_ID_HEADER.to_string(),
            fallback_to_coordinates: true,
        }
    }
}

impl<T> IdSource<T> {
    /// Only the header `name`: a message without it is a terminal
    /// `missing_message_id` failure (goes to the failure sink / DLQ).
    pub fn header(name: impl Into<String>) -> Self {
        IdSource::Header {
            name: name.into(),
            fallback_to_coordinates: false,
        }
    }

    /// Your function of the decoded message; `None` is a terminal
    /// `missing_message_id` failure unless you add [`or_coordinates`](Self::or_coordinates).
    pub fn from_fn(f: impl Fn(&Message<T>) -> Option<String> + Send + Sync + 'static) -> Self {
        IdSource::Custom {
            extract: Arc::new(f),
            fallback_to_coordinates: false,
        }
    }

    /// Falls back to the coordinates when the primary source has no ID.
    pub fn or_coordinates(self) -> Self {
        match self {
            IdSource::Header { name, .. } => IdSource::Header {
                name,
                fallback_to_coordinates: true,
            },
            IdSource::Custom { extract, .. } => IdSource::Custom {
                extract,
                fallback_to_coordinates: true,
            },
            IdSource::Coordinates => IdSource::Coordinates,
        }
    }

    /// The message's identity, or a terminal error naming what is wrong.
    pub fn extract<'m>(&self, msg: &'m Message<T>) -> Result<Cow<'m, str>, ProcessError> {
        let (primary, fallback) = match self {
            IdSource::Coordinates => (None, true),
            IdSource::Header {
                name,
                fallback_to_coordinates,
            } => {
                let v = msg
                    .headers()
                    .get(name)
                    .map(|b| std::str::from_utf8(b).map_err(|_| invalid_id("is not valid UTF-8")));
                (v.transpose()?.map(Cow::Borrowed), *fallback_to_coordinates)
            }
            IdSource::Custom {
                extract,
                fallback_to_coordinates,
            } => (extract(msg).map(Cow::Owned), *fallback_to_coordinates),
        };
        match primary {
            Some(id) if id.is_empty() => Err(invalid_id("is empty")),
            Some(id) if id.len() > MAX_MESSAGE_ID_LEN => {
                Err(invalid_id("is longer than 255 bytes"))
            }
            Some(id) => Ok(id),
            None if fallback => Ok(Cow::Owned(msg.coordinates())),
            None => Err(ProcessError::terminal(IdError(
                "message has no ID (configure IdSource::or_coordinates to accept foreign messages)"
                    .into(),
            ))
            .with_class("missing_message_id")),
        }
    }
}

/// A message ID is missing or unusable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdError(String);

fn invalid_id(what: &str) -> ProcessError {
    ProcessError::terminal(IdError(format!("message ID {what}"))).with_class("invalid_message_id")
}

/// Counters of a de-duplicating processor.
#[derive(Debug, Default)]
pub struct IdempotencyStats {
    fresh: AtomicU64,
    duplicates: AtomicU64,
    store_errors: AtomicU64,
}

impl IdempotencyStats {
    /// Messages processed for the first time (marker committed).
    pub fn fresh(&self) -> u64 {
        self.fresh.load(Relaxed)
    }
    /// Duplicates absorbed: deliveries skipped because the marker existed.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Relaxed)
    }
    /// Store failures (claims or commits that failed; the message is retried).
    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Relaxed)
    }
}

struct OwnedKey {
    id: String,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

/// What both wrappers share.
struct Dedup<S, T> {
    store: Arc<S>,
    group: Arc<str>,
    ids: IdSource<T>,
    stats: Arc<IdempotencyStats>,
}

/// `new`, `id_source` and `stats` of a wrapper with a [`Dedup`] in its
/// `dedup` field and what it wraps in the field named `$inner`.
macro_rules! dedup_methods {
    ($wrapper:ident, $inner:ident, $new_doc:literal) => {
        impl<X, S: IdempotencyStore, T> $wrapper<X, S, T> {
            #[doc = $new_doc]
            pub fn new($inner: X, store: impl Into<Arc<S>>, group: impl Into<Arc<str>>) -> Self {
                $wrapper {
                    $inner,
                    dedup: Dedup {
                        store: store.into(),
                        group: group.into(),
                        ids: IdSource::default(),
                        stats: Arc::default(),
                    },
                }
            }

            /// Chooses where message IDs come from.
            pub fn id_source(mut self, ids: IdSource<T>) -> Self {
                self.dedup.ids = ids;
                self
            }

            /// Live counters (fresh messages, duplicates absorbed, store errors).
            pub fn stats(&self) -> Arc<IdempotencyStats> {
                self.dedup.stats.clone()
            }
        }
    };
}

impl<S: IdempotencyStore, T> Dedup<S, T> {
    /// The marker key of `msg`, owned, so no borrow of the message is held
    /// across the claim's await (message values need not be `Sync`).
    fn key_of(&self, msg: &Message<T>) -> Result<OwnedKey, ProcessError> {
        Ok(OwnedKey {
            id: self.ids.extract(msg)?.into_owned(),
            topic: msg.raw().topic.clone(),
            partition: msg.partition(),
            offset: msg.offset(),
        })
    }

    async fn claim(&self, k: OwnedKey) -> Result<Option<S::Tx>, ProcessError> {
        let key = MarkerKey {
            group: &self.group,
            message_id: &k.id,
            topic: &k.topic,
            partition: k.partition,
            offset: k.offset,
        };
        match self.store.claim(key).await {
            Ok(Claim::Fresh(tx)) => Ok(Some(tx)),
            Ok(Claim::Duplicate) => {
                self.stats.duplicates.fetch_add(1, Relaxed);
                metrics::counter!("weir_idempotency_duplicates_total", "group" => self.group.to_string())
                    .increment(1);
                tracing::debug!(
                    group = %self.group, topic = %k.topic, partition = k.partition,
                    offset = k.offset, message_id = %k.id,
                    "duplicate delivery absorbed (already processed by this group)"
                );
                Ok(None)
            }
            Err(e) => Err(self.store_error(e)),
        }
    }

    fn store_error(&self, e: crate::StoreError) -> ProcessError {
        self.stats.store_errors.fetch_add(1, Relaxed);
        metrics::counter!("weir_idempotency_store_errors_total", "group" => self.group.to_string())
            .increment(1);
        e.into_process_error()
    }

    fn fresh(&self) {
        self.stats.fresh.fetch_add(1, Relaxed);
    }
}

/// Wraps a processor so each message ID is processed once per group.
///
/// The marker is claimed in a transaction before the handler runs, held while
/// it runs (a concurrent duplicate, say on a member that took over the
/// partition, waits), and committed after it succeeds. A handler error rolls
/// the claim back so the retry runs.
///
/// This protects effects that are themselves idempotent or that happen in
/// systems you cannot enlist in the transaction (an HTTP call): if the process
/// dies after the effect and before the marker commits, the message is
/// processed again. Pass [`Message::message_id`] as the idempotency key of such
/// calls, so the far side de-duplicates them too. For effects in the same
/// database use [`Transactional`], which commits effect and marker atomically.
pub struct Idempotent<P, S, T> {
    inner: P,
    dedup: Dedup<S, T>,
}

dedup_methods!(
    Idempotent,
    inner,
    "De-duplicates `inner` for consumer group `group` with the default [`IdSource`] (Weir message ID header, else the coordinates)."
);

impl<P, S, T> Processor<T> for Idempotent<P, S, T>
where
    T: Send + 'static,
    P: Processor<T>,
    S: IdempotencyStore,
{
    async fn process(&self, msg: Message<T>) -> Result<(), ProcessError> {
        let key = self.dedup.key_of(&msg)?;
        let Some(tx) = self.dedup.claim(key).await? else {
            return Ok(());
        };
        match self.inner.process(msg).await {
            Ok(()) => {
                self.dedup
                    .store
                    .commit(tx)
                    .await
                    .map_err(|e| self.dedup.store_error(e))?;
                self.dedup.fresh();
                Ok(())
            }
            Err(e) => {
                let _ = self.dedup.store.rollback(tx).await;
                Err(e)
            }
        }
    }

    fn wants_in_flight(&self) -> usize {
        self.inner.wants_in_flight()
    }
}

/// A processor that writes its effects in the de-duplication transaction.
///
/// ```no_run
/// use sqlx::{Postgres, Transaction};
/// use weir::{Message, ProcessError};
/// use weir_idempotency::TxProcessor;
///
/// struct RecordPayment;
///
/// impl TxProcessor<String, Postgres> for RecordPayment {
///     async fn process(&self, msg: Message<String>, tx: &mut Transaction<'static, Postgres>) -> Result<(), ProcessError> {
///         sqlx::query("UPDATE invoices SET status = 'paid' WHERE id = $1 AND status = 'pending'")
///             .bind(msg.value())
///             .execute(&mut **tx)
///             .await
///             .map_err(|e| ProcessError::retryable(e).with_class("db"))?;
///         Ok(())
///     }
/// }
/// ```
pub trait TxProcessor<T, DB: sqlx::Database>: Send + Sync + 'static {
    /// Processes `msg`, writing through `tx`. Returning `Ok` commits `tx`
    /// (effects and marker together); returning `Err` rolls both back.
    fn process(
        &self,
        msg: Message<T>,
        tx: &mut sqlx::Transaction<'static, DB>,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send;
}

/// Runs a [`TxProcessor`] in the claim's transaction: the handler's writes and
/// the marker commit atomically, so a redelivered message finds its marker and
/// is skipped, and a crash (or error) before the commit leaves neither.
/// This is exactly-once *effect* for effects in the store's database.
pub struct Transactional<H, S, T> {
    handler: H,
    dedup: Dedup<S, T>,
}

dedup_methods!(
    Transactional,
    handler,
    "Runs `handler` for consumer group `group` with the default [`IdSource`]."
);

impl<H, S, T, DB> Processor<T> for Transactional<H, S, T>
where
    T: Send + 'static,
    DB: sqlx::Database,
    S: IdempotencyStore<Tx = sqlx::Transaction<'static, DB>>,
    H: TxProcessor<T, DB>,
{
    async fn process(&self, msg: Message<T>) -> Result<(), ProcessError> {
        let key = self.dedup.key_of(&msg)?;
        let Some(mut tx) = self.dedup.claim(key).await? else {
            return Ok(());
        };
        match self.handler.process(msg, &mut tx).await {
            Ok(()) => {
                // If the commit's outcome is unknown (connection lost during
                // COMMIT), the redelivery finds the marker or redoes the work:
                // either way, one effect.
                self.dedup
                    .store
                    .commit(tx)
                    .await
                    .map_err(|e| self.dedup.store_error(e))?;
                self.dedup.fresh();
                Ok(())
            }
            Err(e) => {
                let _ = self.dedup.store.rollback(tx).await;
                Err(e)
            }
        }
    }
}

/// A batch processor that writes its effects in the batch's de-duplication
/// transaction (see [`TransactionalBatch`]).
pub trait TxBatchProcessor<T, DB: sqlx::Database>: Send + Sync + 'static {
    /// Processes the batch's fresh messages (duplicates already removed),
    /// writing through `tx`, and returns one outcome per message in order.
    /// Write nothing in `tx` for a message you report as failed: the
    /// transaction commits the successes' writes and markers, and the
    /// failures' markers are removed so their retries run. Returning `Err`
    /// rolls everything back and fails every message of the batch.
    fn process_batch(
        &self,
        batch: Vec<Message<T>>,
        tx: &mut sqlx::Transaction<'static, DB>,
    ) -> impl Future<Output = Result<weir::Outcomes, ProcessError>> + Send;
}

/// A message ID appeared twice in one batch (two copies of one message
/// released together, possible in `Unordered` mode). The later copy is retried
/// and then finds the first one's marker.
#[derive(Debug, thiserror::Error)]
#[error("message ID {0} is already in this batch; this copy is retried after it")]
pub struct SameIdInBatch(String);

/// [`Transactional`] for batches: one database transaction per batch holds
/// the markers of all its fresh messages and the handler's writes.
///
/// Before the handler runs, every message's marker is claimed in one
/// statement (PostgreSQL: one `INSERT … SELECT unnest(…) ON CONFLICT DO
/// NOTHING RETURNING`); messages already processed by the group are taken
/// out of the batch and finish as duplicates, so the handler sees fresh
/// messages only. The commit makes writes and markers durable together, so a
/// redelivered batch finds its markers and a crash before the commit leaves
/// neither. Use it as the [`weir::BatchProcessor`] of [`weir::Batched`].
pub struct TransactionalBatch<H, S, T> {
    handler: H,
    dedup: Dedup<S, T>,
}

dedup_methods!(
    TransactionalBatch,
    handler,
    "Runs `handler` (a [`TxBatchProcessor`]) for consumer group `group` with the default [`IdSource`]."
);

impl<H, S, T, DB> weir::BatchProcessor<T> for TransactionalBatch<H, S, T>
where
    T: Send + 'static,
    DB: sqlx::Database,
    S: crate::store::BatchClaim<Tx = sqlx::Transaction<'static, DB>>,
    H: TxBatchProcessor<T, DB>,
{
    async fn process_batch(&self, batch: Vec<Message<T>>) -> Result<weir::Outcomes, ProcessError> {
        let n = batch.len();
        let mut outcomes: Vec<Option<Result<(), ProcessError>>> = (0..n).map(|_| None).collect();
        // Identities; a message without a usable one fails on its own.
        let mut keyed: Vec<(usize, OwnedKey)> = Vec::with_capacity(n);
        let mut seen = std::collections::HashSet::with_capacity(n);
        for (i, msg) in batch.iter().enumerate() {
            match self.dedup.key_of(msg) {
                Ok(k) if !seen.insert(k.id.clone()) => {
                    outcomes[i] = Some(Err(ProcessError::retryable(SameIdInBatch(k.id))
                        .with_class("idempotency_same_id_in_batch")));
                }
                Ok(k) => keyed.push((i, k)),
                Err(e) => outcomes[i] = Some(Err(e)),
            }
        }
        let keys: Vec<MarkerKey<'_>> = keyed
            .iter()
            .map(|(_, k)| MarkerKey {
                group: &self.dedup.group,
                message_id: &k.id,
                topic: &k.topic,
                partition: k.partition,
                offset: k.offset,
            })
            .collect();
        let (mut tx, fresh) = self
            .dedup
            .store
            .claim_batch(&keys)
            .await
            .map_err(|e| self.dedup.store_error(e))?;
        drop(keys);
        let mut fresh_at = Vec::new();
        let mut fresh_ids = Vec::new();
        for ((i, k), is_fresh) in keyed.into_iter().zip(fresh) {
            if is_fresh {
                fresh_at.push(i);
                fresh_ids.push(k.id);
            } else {
                self.dedup.stats.duplicates.fetch_add(1, Relaxed);
                metrics::counter!("weir_idempotency_duplicates_total", "group" => self.dedup.group.to_string())
                    .increment(1);
                tracing::debug!(
                    group = %self.dedup.group, topic = %k.topic, partition = k.partition,
                    offset = k.offset, message_id = %k.id,
                    "duplicate delivery absorbed (already processed by this group)"
                );
                outcomes[i] = Some(Ok(()));
            }
        }
        if !fresh_at.is_empty() {
            let mut slots: Vec<Option<Message<T>>> = batch.into_iter().map(Some).collect();
            let fresh_msgs: Vec<Message<T>> =
                fresh_at.iter().filter_map(|&i| slots[i].take()).collect();
            let results = match self.handler.process_batch(fresh_msgs, &mut tx).await {
                Ok(r) if r.len() == fresh_at.len() => r.into_vec(),
                Ok(r) => {
                    let _ = self.dedup.store.rollback(tx).await;
                    return Err(ProcessError::terminal(weir::batch::OutcomeCountMismatch {
                        got: r.len(),
                        expected: fresh_at.len(),
                    })
                    .with_class("batch_outcomes"));
                }
                Err(e) => {
                    let _ = self.dedup.store.rollback(tx).await;
                    return Err(e);
                }
            };
            let failed: Vec<&str> = results
                .iter()
                .zip(&fresh_ids)
                .filter(|(r, _)| r.is_err())
                .map(|(_, id)| id.as_str())
                .collect();
            if !failed.is_empty()
                && let Err(e) = self
                    .dedup
                    .store
                    .release(&mut tx, &self.dedup.group, &failed)
                    .await
            {
                let _ = self.dedup.store.rollback(tx).await;
                return Err(self.dedup.store_error(e));
            }
            // If the commit's outcome is unknown, the redelivery finds the
            // markers or redoes the work: either way, one effect.
            self.dedup
                .store
                .commit(tx)
                .await
                .map_err(|e| self.dedup.store_error(e))?;
            let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
            self.dedup.stats.fresh.fetch_add(ok, Relaxed);
            for (i, r) in fresh_at.into_iter().zip(results) {
                outcomes[i] = Some(r);
            }
        } else {
            let _ = self.dedup.store.rollback(tx).await;
        }
        Ok(outcomes.into_iter().map(|o| o.unwrap_or(Ok(()))).collect())
    }
}
