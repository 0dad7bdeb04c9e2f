//! SQLite outbox (the embedded default).

use std::time::Duration;

use sqlx::sqlite::SqlitePool;
use sqlx::{Row as _, SqliteConnection};

use crate::relay::{Backend, Claimed, MarkMode, Row, now_ms};
use crate::{OutboxError, OutboxRecord};

const BACKEND: &str = "sqlite";

/// The outbox in SQLite (`weir_outbox`, schema in `migrations/sqlite/0001_outbox.sql`).
///
/// SQLite has one writer, so rows get ids in commit order. The relay reads
/// rows without holding the write lock while it publishes (a broker outage
/// must not block the application's writes) and marks them in a short
/// transaction afterwards; run one relay per database file.
#[derive(Debug, Clone)]
pub struct SqliteOutbox {
    pool: SqlitePool,
}

impl SqliteOutbox {
    /// The schema.
    pub const MIGRATION: &'static str = include_str!("../migrations/sqlite/0001_outbox.sql");

    /// An outbox on `pool` (open it with WAL and a busy timeout).
    pub fn new(pool: SqlitePool) -> Self {
        SqliteOutbox { pool }
    }

    /// Creates the table and indexes if missing.
    pub async fn migrate(&self) -> Result<(), OutboxError> {
        sqlx::raw_sql(Self::MIGRATION)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(OutboxError::db(BACKEND))
    }

    /// Enqueues `record` on `conn` (inside your transaction: `&mut *tx`).
    /// Returns the message ID.
    pub async fn enqueue(
        conn: &mut SqliteConnection,
        mut record: OutboxRecord,
    ) -> Result<String, OutboxError> {
        let id = record.ensure_id()?;
        sqlx::query(
            "INSERT INTO weir_outbox (topic, msg_key, payload, headers, message_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&record.topic)
        .bind(record.key.as_deref())
        .bind(record.payload.as_deref())
        .bind(crate::codec::encode(&record.headers))
        .bind(&id)
        .bind(now_ms())
        .execute(&mut *conn)
        .await
        .map_err(OutboxError::db(BACKEND))?;
        Ok(id)
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl Backend for SqliteOutbox {
    type Claim = ();

    async fn claim(&self, limit: usize) -> Result<Option<Claimed<()>>, OutboxError> {
        let rows = sqlx::query(
            "SELECT id, topic, msg_key, payload, headers, created_at FROM weir_outbox \
             WHERE published_at IS NULL ORDER BY id LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(OutboxError::db(BACKEND))?;
        let rows = rows
            .into_iter()
            .map(|r| Row {
                id: r.get("id"),
                topic: r.get("topic"),
                key: r.get("msg_key"),
                payload: r.get("payload"),
                headers: r.get("headers"),
                created_ms: r.get("created_at"),
            })
            .collect();
        Ok(Some(Claimed { claim: (), rows }))
    }

    async fn complete(
        &self,
        _: (),
        ids: Vec<i64>,
        mode: MarkMode,
        poison: Vec<(i64, String)>,
        failed: Vec<(i64, String)>,
    ) -> Result<(), OutboxError> {
        let db = OutboxError::db(BACKEND);
        if ids.is_empty() && poison.is_empty() && failed.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(&db)?;
        let now = now_ms();
        for (id, err) in failed {
            sqlx::query(
                "UPDATE weir_outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
            )
            .bind(err.chars().take(1000).collect::<String>())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(&db)?;
        }
        for id in ids {
            let q = match mode {
                MarkMode::MarkPublished => sqlx::query(
                    "UPDATE weir_outbox SET published_at = ?, attempts = attempts + 1 WHERE id = ?",
                )
                .bind(now)
                .bind(id),
                MarkMode::Delete => sqlx::query("DELETE FROM weir_outbox WHERE id = ?").bind(id),
            };
            q.execute(&mut *tx).await.map_err(&db)?;
        }
        for (id, err) in poison {
            sqlx::query("UPDATE weir_outbox SET published_at = ?, last_error = ? WHERE id = ?")
                .bind(now)
                .bind(format!("not published: {err}"))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(&db)?;
        }
        tx.commit().await.map_err(&db)
    }

    async fn backlog(&self) -> Result<(i64, Option<i64>), OutboxError> {
        let r = sqlx::query("SELECT count(*) AS n, min(created_at) AS oldest FROM weir_outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(OutboxError::db(BACKEND))?;
        Ok((r.get("n"), r.get("oldest")))
    }

    async fn purge_published(&self, age: Duration) -> Result<u64, OutboxError> {
        let cutoff = now_ms() - age.as_millis() as i64;
        sqlx::query("DELETE FROM weir_outbox WHERE published_at IS NOT NULL AND published_at < ?")
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(OutboxError::db(BACKEND))
    }
}
