//! PostgreSQL outbox.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use sqlx::{PgConnection, Postgres, Row as _, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::relay::{Backend, Claimed, MarkMode, Row};
use crate::{OutboxError, OutboxRecord};

const BACKEND: &str = "postgres";
/// The relay leader lock: (ASCII "WEIR", 1), two-int advisory key space.
const LEADER_LOCK: (i32, i32) = (0x5745_4952, 1);

/// The outbox in PostgreSQL (`weir_outbox` table, schema in
/// `migrations/postgres/0001_outbox.sql`).
#[derive(Debug, Clone)]
pub struct PostgresOutbox {
    pool: PgPool,
}

impl PostgresOutbox {
    /// The schema.
    pub const MIGRATION: &'static str = include_str!("../migrations/postgres/0001_outbox.sql");

    /// An outbox on `pool`.
    pub fn new(pool: PgPool) -> Self {
        PostgresOutbox { pool }
    }

    /// Creates the table, indexes and the NOTIFY trigger if missing (serialised
    /// with an advisory lock, so instances starting together do not collide).
    pub async fn migrate(&self) -> Result<(), OutboxError> {
        let db = OutboxError::db(BACKEND);
        let mut tx = self.pool.begin().await.map_err(&db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, 2)")
            .bind(LEADER_LOCK.0)
            .execute(&mut *tx)
            .await
            .map_err(&db)?;
        sqlx::raw_sql(Self::MIGRATION)
            .execute(&mut *tx)
            .await
            .map_err(&db)?;
        tx.commit().await.map_err(&db)
    }

    /// Enqueues `record` on `conn`, which should be inside your transaction
    /// (`&mut *tx`): the row becomes visible to the relay only when you commit.
    /// Takes a transaction lock on (topic, key) so rows of one key get ids in
    /// commit order. Returns the message ID.
    pub async fn enqueue(
        conn: &mut PgConnection,
        mut record: OutboxRecord,
    ) -> Result<String, OutboxError> {
        let db = OutboxError::db(BACKEND);
        let id = record.ensure_id()?;
        if let Some(k) = &record.key {
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || encode($2, 'hex'), 7))",
            )
            .bind(&record.topic)
            .bind(k.as_ref())
            .execute(&mut *conn)
            .await
            .map_err(&db)?;
        }
        sqlx::query(
            "INSERT INTO weir_outbox (topic, msg_key, payload, headers, message_id) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&record.topic)
        .bind(record.key.as_deref())
        .bind(record.payload.as_deref())
        .bind(crate::codec::encode(&record.headers))
        .bind(&id)
        .execute(&mut *conn)
        .await
        .map_err(&db)?;
        Ok(id)
    }

    /// Enqueues several records on `conn` (inside your transaction) in two
    /// round trips, whatever their number: one takes the (topic, key) locks
    /// [`enqueue`](Self::enqueue) takes, in a fixed order (so concurrent
    /// batches cannot deadlock each other), one inserts the rows. Rows get ids
    /// in the order given, so a key's records keep that order. Returns the
    /// message IDs in the same order.
    pub async fn enqueue_many(
        conn: &mut PgConnection,
        records: impl IntoIterator<Item = OutboxRecord>,
    ) -> Result<Vec<String>, OutboxError> {
        let db = OutboxError::db(BACKEND);
        let mut topics = Vec::new();
        let mut keys: Vec<Option<Vec<u8>>> = Vec::new();
        let mut payloads: Vec<Option<Vec<u8>>> = Vec::new();
        let mut headers = Vec::new();
        let mut ids = Vec::new();
        for mut r in records {
            ids.push(r.ensure_id()?);
            headers.push(crate::codec::encode(&r.headers));
            keys.push(r.key.as_deref().map(<[u8]>::to_vec));
            payloads.push(r.payload.as_deref().map(<[u8]>::to_vec));
            topics.push(r.topic);
        }
        if ids.is_empty() {
            return Ok(ids);
        }
        // Same lock keys as `enqueue`; sorted in a subquery so that they are
        // taken in that order.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(h) FROM ( \
               SELECT DISTINCT hashtextextended(t || ':' || encode(k, 'hex'), 7) AS h \
               FROM unnest($1::text[], $2::bytea[]) AS u(t, k) WHERE k IS NOT NULL ORDER BY h) locks",
        )
        .bind(&topics)
        .bind(&keys)
        .execute(&mut *conn)
        .await
        .map_err(&db)?;
        sqlx::query(
            "INSERT INTO weir_outbox (topic, msg_key, payload, headers, message_id) \
             SELECT t, k, p, h, m FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bytea[], $5::text[]) \
             WITH ORDINALITY AS u(t, k, p, h, m, n) ORDER BY n",
        )
        .bind(&topics)
        .bind(&keys)
        .bind(&payloads)
        .bind(&headers)
        .bind(&ids)
        .execute(&mut *conn)
        .await
        .map_err(&db)?;
        Ok(ids)
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Backend for PostgresOutbox {
    type Claim = Transaction<'static, Postgres>;

    async fn claim(&self, limit: usize) -> Result<Option<Claimed<Self::Claim>>, OutboxError> {
        let db = OutboxError::db(BACKEND);
        let mut tx = self.pool.begin().await.map_err(&db)?;
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
            .bind(LEADER_LOCK.0)
            .bind(LEADER_LOCK.1)
            .fetch_one(&mut *tx)
            .await
            .map_err(&db)?;
        if !leader {
            let _ = tx.rollback().await;
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT id, topic, msg_key, payload, headers, \
                    (extract(epoch FROM created_at) * 1000)::bigint AS created_ms \
             FROM weir_outbox WHERE published_at IS NULL \
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(&db)?;
        let rows = rows
            .into_iter()
            .map(|r| Row {
                id: r.get("id"),
                topic: r.get("topic"),
                key: r.get("msg_key"),
                payload: r.get("payload"),
                headers: r.get("headers"),
                created_ms: r.get("created_ms"),
            })
            .collect();
        Ok(Some(Claimed { claim: tx, rows }))
    }

    async fn complete(
        &self,
        mut claim: Self::Claim,
        ids: Vec<i64>,
        mode: MarkMode,
        poison: Vec<(i64, String)>,
        failed: Vec<(i64, String)>,
    ) -> Result<(), OutboxError> {
        let db = OutboxError::db(BACKEND);
        for (id, err) in failed {
            sqlx::query(
                "UPDATE weir_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(err.chars().take(1000).collect::<String>())
            .execute(&mut *claim)
            .await
            .map_err(&db)?;
        }
        if !ids.is_empty() {
            let sql = match mode {
                MarkMode::MarkPublished => {
                    "UPDATE weir_outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1)"
                }
                MarkMode::Delete => "DELETE FROM weir_outbox WHERE id = ANY($1)",
            };
            sqlx::query(sql)
                .bind(&ids)
                .execute(&mut *claim)
                .await
                .map_err(&db)?;
        }
        for (id, err) in poison {
            sqlx::query(
                "UPDATE weir_outbox SET published_at = now(), last_error = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(format!("not published: {err}"))
            .execute(&mut *claim)
            .await
            .map_err(&db)?;
        }
        claim.commit().await.map_err(&db)
    }

    async fn backlog(&self) -> Result<(i64, Option<i64>), OutboxError> {
        let r = sqlx::query(
            "SELECT count(*) AS n, (extract(epoch FROM min(created_at)) * 1000)::bigint AS oldest \
             FROM weir_outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(OutboxError::db(BACKEND))?;
        Ok((r.get("n"), r.get("oldest")))
    }

    async fn purge_published(&self, age: Duration) -> Result<u64, OutboxError> {
        sqlx::query(
            "DELETE FROM weir_outbox WHERE published_at < now() - make_interval(secs => $1)",
        )
        .bind(age.as_secs_f64())
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(OutboxError::db(BACKEND))
    }

    fn listen(
        &self,
        wake: Arc<Notify>,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let pool = self.pool.clone();
        Some(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "outbox LISTEN connect failed; polling meanwhile");
                        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
                    }
                };
                if let Err(e) = listener.listen("weir_outbox").await {
                    tracing::debug!(error = %e, "outbox LISTEN failed; polling meanwhile");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
                }
                // A wake-up after (re)connecting covers notifications missed meanwhile.
                wake.notify_one();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        n = listener.recv() => match n {
                            Ok(_) => wake.notify_one(),
                            Err(e) => {
                                tracing::debug!(error = %e, "outbox LISTEN connection lost; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
        }))
    }
}
