//! The [`IdempotencyStore`] trait and its error type.

use std::future::Future;
use std::time::Duration;

/// Which message a marker is for, and where it was read (kept for operators:
/// "which offset first processed this ID?").
#[derive(Debug, Clone, Copy)]
pub struct MarkerKey<'a> {
    /// Consumer group: markers are per group, so two groups processing the same
    /// topic each get their one effect.
    pub group: &'a str,
    /// The message ID (see [`weir::id`]).
    pub message_id: &'a str,
    /// Topic the message was read from.
    pub topic: &'a str,
    /// Partition it was read from.
    pub partition: i32,
    /// Offset it was read at.
    pub offset: i64,
}

/// The result of [`IdempotencyStore::claim`].
#[derive(Debug)]
pub enum Claim<Tx> {
    /// No marker existed: this caller holds the claim inside `Tx`. Committing
    /// `Tx` records the marker (and, for SQL stores, everything else written in
    /// it); rolling it back or dropping it releases the claim.
    Fresh(Tx),
    /// The message was already processed by this group: skip it.
    Duplicate,
}

/// A store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached (connection refused or lost, pool timed out,
    /// server shutting down). Processing waits for it; see
    /// [`weir::ErrorKind::Unavailable`].
    #[error(
        "idempotency store ({backend}) unavailable: {message} (check the database is up and reachable)"
    )]
    Unavailable {
        /// `postgres`, `sqlite` or `memory`.
        backend: &'static str,
        /// The driver's message.
        message: String,
    },
    /// Every connection of the pool stayed in use past its acquire timeout:
    /// more messages hold a transaction at once (`Transactional` keeps one
    /// open while the handler runs) than the pool has connections. Not an
    /// outage: processing waits in place like for one, under its own class.
    #[error(
        "idempotency store ({backend}) busy: {message} (every pool connection is in use: give the pool more connections, or lower max_in_flight)"
    )]
    Busy {
        /// `postgres` or `sqlite`.
        backend: &'static str,
        /// The driver's message.
        message: String,
    },
    /// A statement failed for another reason (serialization failure, deadlock,
    /// constraint, disk full…). Retryable: the whole transaction is rolled back.
    #[error("idempotency store ({backend}) error: {message}")]
    Query {
        /// `postgres`, `sqlite` or `memory`.
        backend: &'static str,
        /// The driver's message.
        message: String,
    },
    /// The schema could not be created.
    #[error(
        "idempotency store ({backend}) migration failed: {message} (does the user have CREATE rights?)"
    )]
    Migration {
        /// `postgres` or `sqlite`.
        backend: &'static str,
        /// The driver's message.
        message: String,
    },
}

impl StoreError {
    /// True when the store is unreachable rather than refusing a statement.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// The error as a [`weir::ProcessError`]: unavailable stores make processing
    /// wait (`unavailable`), other failures are retryable.
    pub fn into_process_error(self) -> weir::ProcessError {
        if self.is_unavailable() {
            weir::ProcessError::unavailable(self).with_class("idempotency_store_unavailable")
        } else if matches!(self, StoreError::Busy { .. }) {
            // Waits in place like an outage (the pool frees up), but is
            // counted and classed apart from one.
            weir::ProcessError::unavailable(self).with_class("idempotency_store_busy")
        } else {
            weir::ProcessError::retryable(self).with_class("idempotency_store")
        }
    }
}

/// Records which messages a consumer group has processed.
///
/// The contract every implementation keeps:
/// - [`claim`](Self::claim) returns [`Claim::Fresh`] to exactly one caller per
///   `(group, message_id)` until that caller commits or rolls back; a
///   concurrent claim of the same key waits, then sees `Duplicate` if the first
///   committed, or `Fresh` if it rolled back.
/// - A marker exists if and only if its claim was committed.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// The claim's transaction.
    type Tx: Send + 'static;

    /// Claims `key`: opens a transaction and inserts the marker in it.
    fn claim(
        &self,
        key: MarkerKey<'_>,
    ) -> impl Future<Output = Result<Claim<Self::Tx>, StoreError>> + Send;

    /// Commits a claim: the marker (and anything else written in `tx`) becomes durable.
    fn commit(&self, tx: Self::Tx) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Rolls a claim back: no marker, no effect.
    fn rollback(&self, tx: Self::Tx) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// True when `group` has a committed marker for `message_id`.
    fn is_processed(
        &self,
        group: &str,
        message_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes markers processed more than `age` ago; returns how many.
    fn purge_older_than(
        &self,
        age: Duration,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Stores that claim many markers in one transaction, for
/// [`TransactionalBatch`](crate::TransactionalBatch). The PostgreSQL and
/// SQLite stores implement it.
pub trait BatchClaim: IdempotencyStore {
    /// Opens one transaction and inserts every marker of `keys` that does not
    /// exist yet; returns the transaction and, per key in order, `true` when
    /// it was fresh (inserted here). All keys share one group. A key claimed
    /// by an uncommitted transaction elsewhere waits for it, as in
    /// [`IdempotencyStore::claim`].
    fn claim_batch(
        &self,
        keys: &[MarkerKey<'_>],
    ) -> impl Future<Output = Result<(Self::Tx, Vec<bool>), StoreError>> + Send;

    /// Removes markers inserted in `tx` again (for messages whose handling
    /// failed), so their retry is not taken for a duplicate.
    fn release(
        &self,
        tx: &mut Self::Tx,
        group: &str,
        message_ids: &[&str],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
