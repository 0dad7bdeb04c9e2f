//! SQL stores: PostgreSQL for production, SQLite as the embedded default.
//!
//! Both keep markers in a `processed_messages` table keyed by
//! `(consumer_group, message_id)`. The schema ships with the crate in
//! `migrations/` (for your own migration tool) and is applied by `migrate()`,
//! which is idempotent and safe to call from every instance at start-up.
//!
//! A claim is an `INSERT … ON CONFLICT DO NOTHING` inside a transaction: zero
//! rows inserted means the message was processed already. A second member
//! claiming the same message concurrently blocks on the first one's
//! uncommitted row (PostgreSQL's unique index; SQLite's single writer) and then
//! sees the outcome: a duplicate if the first committed, a fresh claim if it
//! rolled back.

use std::time::Duration;

use crate::store::StoreError;

/// Maps an error from taking a connection of `pool`: a timeout while every
/// connection the pool may open is open and in use is `Busy` (more messages
/// in flight than connections, not an outage); a timeout with room to open
/// more means new connections fail, `Unavailable`; the rest as [`classify`].
fn classify_acquire<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    backend: &'static str,
    e: sqlx::Error,
) -> StoreError {
    let saturated = pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0;
    if matches!(e, sqlx::Error::PoolTimedOut) && saturated {
        return StoreError::Busy {
            backend,
            message: e.to_string(),
        };
    }
    classify(backend, e)
}

/// Maps a sqlx error: connection trouble (a pool that cannot open a
/// connection in time included) is `Unavailable`, the rest is `Query`.
fn classify(backend: &'static str, e: sqlx::Error) -> StoreError {
    let unavailable = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match backend {
                // 08xxx connection exception, 57P01-03 shutdown / cannot connect now,
                // 53300 too many connections.
                "postgres" => code.starts_with("08") || code.starts_with("57P0") || code == "53300",
                // SQLITE_IOERR (10), SQLITE_CANTOPEN (14) and their extended codes.
                _ => {
                    let n: i64 = code.parse().unwrap_or(0);
                    matches!(n & 0xff, 10 | 14)
                }
            }
        }
        _ => false,
    };
    let message = e.to_string();
    if unavailable {
        StoreError::Unavailable { backend, message }
    } else {
        StoreError::Query { backend, message }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(feature = "postgres")]
pub use pg::PostgresStore;

#[cfg(feature = "postgres")]
mod pg {
    use std::time::Duration;

    use sqlx::postgres::{PgPool, PgPoolOptions};
    use sqlx::{Postgres, Transaction};

    use super::{classify, classify_acquire};
    use crate::store::{Claim, IdempotencyStore, MarkerKey, StoreError};

    const BACKEND: &str = "postgres";

    /// Markers in PostgreSQL. Its transactions are `sqlx::Transaction<'static, Postgres>`,
    /// so a [`TxProcessor`](crate::TxProcessor) writes its effects in the same
    /// transaction as the marker.
    #[derive(Debug, Clone)]
    pub struct PostgresStore {
        pool: PgPool,
    }

    impl PostgresStore {
        /// The schema (`migrations/postgres/0001_processed_messages.sql`).
        pub const MIGRATION: &'static str =
            include_str!("../migrations/postgres/0001_processed_messages.sql");

        /// A store on an existing pool (share it with your own queries).
        pub fn new(pool: PgPool) -> Self {
            PostgresStore { pool }
        }

        /// Connects a pool to `url` (`postgres://user@host/db`): 16 connections,
        /// and a 5 s acquire timeout so an outage surfaces as
        /// [`StoreError::Unavailable`] quickly instead of hanging handlers.
        pub async fn connect(url: &str) -> Result<Self, StoreError> {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await
                .map_err(|e| match classify(BACKEND, e) {
                    StoreError::Unavailable { message, .. } | StoreError::Query { message, .. } => {
                        StoreError::Unavailable {
                            backend: BACKEND,
                            message: format!("connecting to {}: {message}", redact(url)),
                        }
                    }
                    other => other,
                })?;
            Ok(PostgresStore { pool })
        }

        /// Creates the table and index if missing. Serialised with an advisory
        /// lock, so concurrent instances starting together do not collide.
        pub async fn migrate(&self) -> Result<(), StoreError> {
            let mig = |e: sqlx::Error| StoreError::Migration {
                backend: BACKEND,
                message: e.to_string(),
            };
            let mut tx = self.pool.begin().await.map_err(mig)?;
            sqlx::query("SELECT pg_advisory_xact_lock(7365092183746501)")
                .execute(&mut *tx)
                .await
                .map_err(mig)?;
            sqlx::raw_sql(Self::MIGRATION)
                .execute(&mut *tx)
                .await
                .map_err(mig)?;
            tx.commit().await.map_err(mig)
        }

        /// The pool.
        pub fn pool(&self) -> &PgPool {
            &self.pool
        }
    }

    /// `postgres://user:secret@host/db` without the password, for error messages.
    fn redact(url: &str) -> String {
        match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let creds = &url[s + 3..at];
                let user = creds.split(':').next().unwrap_or("");
                format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
            }
            _ => url.to_string(),
        }
    }

    impl crate::store::BatchClaim for PostgresStore {
        async fn claim_batch(
            &self,
            keys: &[MarkerKey<'_>],
        ) -> Result<(Self::Tx, Vec<bool>), StoreError> {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(|e| classify_acquire(&self.pool, BACKEND, e))?;
            let Some(group) = keys.first().map(|k| k.group) else {
                return Ok((tx, Vec::new()));
            };
            // Sorted by ID, so two batches claiming overlapping IDs take the
            // row locks in the same order and cannot deadlock.
            let mut order: Vec<usize> = (0..keys.len()).collect();
            order.sort_by_key(|&i| keys[i].message_id);
            let ids: Vec<&str> = order.iter().map(|&i| keys[i].message_id).collect();
            let topics: Vec<&str> = order.iter().map(|&i| keys[i].topic).collect();
            let partitions: Vec<i32> = order.iter().map(|&i| keys[i].partition).collect();
            let offsets: Vec<i64> = order.iter().map(|&i| keys[i].offset).collect();
            let inserted: Vec<String> = sqlx::query_scalar(
                "INSERT INTO processed_messages \
                 (consumer_group, message_id, topic, \"partition\", \"offset\") \
                 SELECT $1, u.id, u.topic, u.p, u.o \
                 FROM unnest($2::text[], $3::text[], $4::int[], $5::bigint[]) AS u(id, topic, p, o) \
                 ORDER BY u.id \
                 ON CONFLICT (consumer_group, message_id) DO NOTHING \
                 RETURNING message_id",
            )
            .bind(group)
            .bind(&ids)
            .bind(&topics)
            .bind(&partitions)
            .bind(&offsets)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify(BACKEND, e))?;
            let inserted: std::collections::HashSet<&str> =
                inserted.iter().map(String::as_str).collect();
            Ok((
                tx,
                keys.iter()
                    .map(|k| inserted.contains(k.message_id))
                    .collect(),
            ))
        }

        async fn release(
            &self,
            tx: &mut Self::Tx,
            group: &str,
            message_ids: &[&str],
        ) -> Result<(), StoreError> {
            sqlx::query(
                "DELETE FROM processed_messages \
                 WHERE consumer_group = $1 AND message_id = ANY($2::text[])",
            )
            .bind(group)
            .bind(message_ids)
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(|e| classify(BACKEND, e))
        }
    }

    impl IdempotencyStore for PostgresStore {
        type Tx = Transaction<'static, Postgres>;

        async fn claim(&self, key: MarkerKey<'_>) -> Result<Claim<Self::Tx>, StoreError> {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(|e| classify_acquire(&self.pool, BACKEND, e))?;
            let inserted = sqlx::query(
                "INSERT INTO processed_messages \
                 (consumer_group, message_id, topic, \"partition\", \"offset\") \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (consumer_group, message_id) DO NOTHING",
            )
            .bind(key.group)
            .bind(key.message_id)
            .bind(key.topic)
            .bind(key.partition)
            .bind(key.offset)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(BACKEND, e))?
            .rows_affected();
            if inserted == 1 {
                Ok(Claim::Fresh(tx))
            } else {
                let _ = tx.rollback().await;
                Ok(Claim::Duplicate)
            }
        }

        async fn commit(&self, tx: Self::Tx) -> Result<(), StoreError> {
            tx.commit().await.map_err(|e| classify(BACKEND, e))
        }

        async fn rollback(&self, tx: Self::Tx) -> Result<(), StoreError> {
            tx.rollback().await.map_err(|e| classify(BACKEND, e))
        }

        async fn is_processed(&self, group: &str, message_id: &str) -> Result<bool, StoreError> {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM processed_messages \
                 WHERE consumer_group = $1 AND message_id = $2)",
            )
            .bind(group)
            .bind(message_id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(BACKEND, e))
        }

        async fn purge_older_than(&self, age: Duration) -> Result<u64, StoreError> {
            // In batches, so a large backlog of expired markers never holds
            // long locks or bloats one transaction.
            const BATCH: i64 = 10_000;
            let mut total = 0;
            loop {
                let n = sqlx::query(
                    "WITH doomed AS ( \
                       SELECT consumer_group, message_id FROM processed_messages \
                       WHERE processed_at < now() - make_interval(secs => $1) \
                       LIMIT $2 FOR UPDATE SKIP LOCKED) \
                     DELETE FROM processed_messages p USING doomed d \
                     WHERE p.consumer_group = d.consumer_group AND p.message_id = d.message_id",
                )
                .bind(age.as_secs_f64())
                .bind(BATCH)
                .execute(&self.pool)
                .await
                .map_err(|e| classify(BACKEND, e))?
                .rows_affected();
                total += n;
                if (n as i64) < BATCH {
                    return Ok(total);
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn redacts_passwords() {
            assert_eq!(
                super::redact("postgres://u:secret@h:5432/db"),
                "postgres://u@h:5432/db"
            );
            assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
        }
    }
}

#[cfg(feature = "sqlite")]
pub use lite::SqliteStore;

#[cfg(feature = "sqlite")]
mod lite {
    use std::str::FromStr;
    use std::time::Duration;

    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    };
    use sqlx::{Sqlite, Transaction};

    use super::{classify, classify_acquire, millis};
    use crate::store::{Claim, IdempotencyStore, MarkerKey, StoreError};

    const BACKEND: &str = "sqlite";

    use weir::clock::now_ms;

    /// Markers in an embedded SQLite file: the default when no PostgreSQL is
    /// configured. WAL journal, `synchronous=NORMAL` (a committed marker
    /// survives a process crash), a 30 s busy timeout. SQLite has one writer at
    /// a time, so claims, and the transactional handlers holding them, run one
    /// after another: fine for a single instance, use PostgreSQL for a group of
    /// several processes under load.
    #[derive(Debug, Clone)]
    pub struct SqliteStore {
        pool: SqlitePool,
    }

    impl SqliteStore {
        /// The schema (`migrations/sqlite/0001_processed_messages.sql`).
        pub const MIGRATION: &'static str =
            include_str!("../migrations/sqlite/0001_processed_messages.sql");

        /// A store on an existing pool.
        pub fn new(pool: SqlitePool) -> Self {
            SqliteStore { pool }
        }

        /// Opens (creating if missing) the database at `url`
        /// (`sqlite://path/to/file.db` or a plain path) with the settings above.
        pub async fn open(url: &str) -> Result<Self, StoreError> {
            let url = if url.starts_with("sqlite:") {
                url.to_string()
            } else {
                format!("sqlite://{url}")
            };
            let opts = SqliteConnectOptions::from_str(&url)
                .map_err(|e| StoreError::Unavailable {
                    backend: BACKEND,
                    message: format!("parsing {url}: {e}"),
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts)
                .await
                .map_err(|e| StoreError::Unavailable {
                    backend: BACKEND,
                    message: format!("opening {url}: {e}"),
                })?;
            Ok(SqliteStore { pool })
        }

        /// Creates the table and index if missing.
        pub async fn migrate(&self) -> Result<(), StoreError> {
            sqlx::raw_sql(Self::MIGRATION)
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::Migration {
                    backend: BACKEND,
                    message: e.to_string(),
                })
        }

        /// The pool.
        pub fn pool(&self) -> &SqlitePool {
            &self.pool
        }
    }

    impl crate::store::BatchClaim for SqliteStore {
        async fn claim_batch(
            &self,
            keys: &[MarkerKey<'_>],
        ) -> Result<(Self::Tx, Vec<bool>), StoreError> {
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| classify_acquire(&self.pool, BACKEND, e))?;
            let now = now_ms();
            let mut fresh = Vec::with_capacity(keys.len());
            for key in keys {
                let n = sqlx::query(
                    "INSERT INTO processed_messages \
                     (consumer_group, message_id, topic, \"partition\", \"offset\", processed_at) \
                     VALUES (?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (consumer_group, message_id) DO NOTHING",
                )
                .bind(key.group)
                .bind(key.message_id)
                .bind(key.topic)
                .bind(key.partition)
                .bind(key.offset)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(BACKEND, e))?
                .rows_affected();
                fresh.push(n == 1);
            }
            Ok((tx, fresh))
        }

        async fn release(
            &self,
            tx: &mut Self::Tx,
            group: &str,
            message_ids: &[&str],
        ) -> Result<(), StoreError> {
            for id in message_ids {
                sqlx::query(
                    "DELETE FROM processed_messages WHERE consumer_group = ? AND message_id = ?",
                )
                .bind(group)
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(|e| classify(BACKEND, e))?;
            }
            Ok(())
        }
    }

    impl IdempotencyStore for SqliteStore {
        type Tx = Transaction<'static, Sqlite>;

        async fn claim(&self, key: MarkerKey<'_>) -> Result<Claim<Self::Tx>, StoreError> {
            // IMMEDIATE: take the write lock up front (waiting up to the busy
            // timeout), so the transaction never has to upgrade a stale read.
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| classify_acquire(&self.pool, BACKEND, e))?;
            let inserted = sqlx::query(
                "INSERT INTO processed_messages \
                 (consumer_group, message_id, topic, \"partition\", \"offset\", processed_at) \
                 VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (consumer_group, message_id) DO NOTHING",
            )
            .bind(key.group)
            .bind(key.message_id)
            .bind(key.topic)
            .bind(key.partition)
            .bind(key.offset)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(BACKEND, e))?
            .rows_affected();
            if inserted == 1 {
                Ok(Claim::Fresh(tx))
            } else {
                let _ = tx.rollback().await;
                Ok(Claim::Duplicate)
            }
        }

        async fn commit(&self, tx: Self::Tx) -> Result<(), StoreError> {
            tx.commit().await.map_err(|e| classify(BACKEND, e))
        }

        async fn rollback(&self, tx: Self::Tx) -> Result<(), StoreError> {
            tx.rollback().await.map_err(|e| classify(BACKEND, e))
        }

        async fn is_processed(&self, group: &str, message_id: &str) -> Result<bool, StoreError> {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM processed_messages \
                 WHERE consumer_group = ? AND message_id = ?)",
            )
            .bind(group)
            .bind(message_id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(BACKEND, e))
        }

        async fn purge_older_than(&self, age: Duration) -> Result<u64, StoreError> {
            let cutoff = now_ms().saturating_sub(millis(age));
            sqlx::query("DELETE FROM processed_messages WHERE processed_at < ?")
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| classify(BACKEND, e))
        }
    }
}
