//! # Transactional outbox for Weir
//!
//! Publishing to Kafka inside a request is a classic pitfall: the database
//! write can commit while the publish fails (or the reverse). With an outbox,
//! the request writes its business rows **and** the message to publish in one
//! database transaction; a relay publishes committed rows to Kafka afterwards.
//!
//! - **Enqueue** ([`PostgresOutbox::enqueue`], [`SqliteOutbox::enqueue`]) inside
//!   your own transaction. Each row gets a UUIDv7 message ID (the
//!   [`weir::MESSAGE_ID_HEADER`] header), so consumers can de-duplicate.
//! - **Relay** ([`Relay`]): claims unpublished rows in id order in batches,
//!   publishes them with an idempotent producer (`enable.idempotence`,
//!   `acks=all`), waits for every acknowledgement, then marks them published
//!   (or deletes them) in the claim's transaction. A crash between publish and
//!   mark re-publishes the same rows with the same message IDs: consumers with
//!   `weir-idempotency` absorb them.
//! - **Wake-ups**: PostgreSQL `LISTEN/NOTIFY` from an insert trigger (delivered
//!   at commit), an in-process [`Relay::waker`], and a polling fallback.
//! - **Per-key order**, even with several relay processes: enqueue takes a
//!   per-key transaction lock (PostgreSQL advisory lock on topic+key), so rows
//!   of one key get ids in commit order and a visible row's lower-id siblings
//!   are already committed; and only one relay publishes at a time (the claim
//!   takes a transaction-level advisory lock; others stand by and take over
//!   when it dies). SQLite has one writer, which gives both for free.
//! - **Broker down**: the publish fails, the claim is rolled back (rows stay
//!   unpublished, `attempts` and `last_error` recorded), the relay backs off
//!   and resumes. Nothing is lost.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use weir_outbox::{OutboxRecord, PostgresOutbox, Relay, RelayConfig};
//!
//! let outbox = PostgresOutbox::new(pool.clone());
//! outbox.migrate().await?;
//!
//! // In the request handler, in the same transaction as the business write:
//! let mut tx = pool.begin().await?;
//! sqlx::query("UPDATE links SET clicks = clicks + 1 WHERE code = $1").bind("abc").execute(&mut *tx).await?;
//! PostgresOutbox::enqueue(&mut tx, OutboxRecord::to("clicks").key("abc").json(&serde_json::json!({"code": "abc"}))?).await?;
//! tx.commit().await?;
//!
//! // In the relay process (or task):
//! let relay = Relay::new(outbox, weir::Producer::new("kafka:9092")?, RelayConfig::default());
//! relay.run(tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

pub mod codec;
#[cfg(feature = "postgres")]
mod pg;
mod relay;
#[cfg(feature = "sqlite")]
mod sqlite;

use bytes::Bytes;
use weir::{Headers, MESSAGE_ID_HEADER};

pub use codec::{HeaderCodecError, decode as decode_headers, encode as encode_headers};
#[cfg(feature = "postgres")]
pub use pg::PostgresOutbox;
pub use relay::{Backend, Claimed, MarkMode, Publish, Relay, RelayConfig, RelayStats};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteOutbox;

/// A message to publish later.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    /// Destination topic.
    pub topic: String,
    /// Key (partitioning and per-key order).
    pub key: Option<Bytes>,
    /// Payload (`None` is a tombstone).
    pub payload: Option<Bytes>,
    /// Headers. A [`MESSAGE_ID_HEADER`] here is kept; otherwise a UUIDv7 is added.
    pub headers: Headers,
}

impl OutboxRecord {
    /// A record for `topic`.
    pub fn to(topic: impl Into<String>) -> Self {
        OutboxRecord {
            topic: topic.into(),
            key: None,
            payload: None,
            headers: Headers::default(),
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Serialises `value` as JSON into the payload.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Result<Self, OutboxError> {
        let v = serde_json::to_vec(value).map_err(|e| OutboxError::Encode(e.to_string()))?;
        self.payload = Some(v.into());
        Ok(self)
    }

    /// Encodes `value` with a [`weir::Encoder`] (JSON, Avro through a schema
    /// registry…) into the payload. Call it before `enqueue`, inside the
    /// transaction: a registry outage fails the business write instead of
    /// leaving an undecodable row.
    pub async fn value_with<T: ?Sized + Sync, E: weir::Encoder<T>>(
        mut self,
        encoder: &E,
        value: &T,
    ) -> Result<Self, OutboxError> {
        let b = encoder
            .encode(&self.topic, value)
            .await
            .map_err(|e| OutboxError::Encode(e.to_string()))?;
        self.payload = Some(b);
        Ok(self)
    }

    /// Encodes the key with a key [`weir::Encoder`].
    pub async fn key_with<T: ?Sized + Sync, E: weir::Encoder<T>>(
        mut self,
        encoder: &E,
        key: &T,
    ) -> Result<Self, OutboxError> {
        let b = encoder
            .encode(&self.topic, key)
            .await
            .map_err(|e| OutboxError::Encode(e.to_string()))?;
        self.key = Some(b);
        Ok(self)
    }

    /// Adds a header (for example the W3C `traceparent` of the request).
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(key, value);
        self
    }

    /// The message ID (assigning a fresh UUIDv7 if there is none). Also
    /// captures the current trace context (W3C `traceparent`) at enqueue time.
    pub(crate) fn ensure_id(&mut self) -> Result<String, OutboxError> {
        weir::trace::inject(&mut self.headers);
        match self.headers.get_str(MESSAGE_ID_HEADER) {
            Ok(Some(id)) if !id.is_empty() && id.len() <= weir::id::MAX_MESSAGE_ID_LEN => {
                Ok(id.to_string())
            }
            Ok(None) => {
                let id = weir::new_message_id();
                self.headers.push(MESSAGE_ID_HEADER, id.clone());
                Ok(id)
            }
            _ => Err(OutboxError::Encode(format!(
                "invalid `{MESSAGE_ID_HEADER}` header: 1..=255 bytes of UTF-8 expected"
            ))),
        }
    }
}

/// Outbox failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The database failed (unreachable, or a statement failed).
    #[error("outbox database ({backend}): {message}")]
    Database {
        /// `postgres` or `sqlite`.
        backend: &'static str,
        /// The driver's message.
        message: String,
    },
    /// The record could not be encoded.
    #[error("outbox record: {0}")]
    Encode(String),
    /// Publishing failed; the rows stay unpublished and are retried.
    #[error("publishing outbox rows failed: {0}")]
    Publish(#[from] weir::ProduceError),
}

impl OutboxError {
    pub(crate) fn db(backend: &'static str) -> impl Fn(sqlx::Error) -> OutboxError {
        move |e| OutboxError::Database {
            backend,
            message: e.to_string(),
        }
    }
}
