//! The example's database: PostgreSQL when `DATABASE_URL` is set, else SQLite
//! in a temporary directory. Tables: `links`, `clicks`, plus the outbox and the
//! idempotency markers.

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use weir_outbox::{OutboxRecord, PostgresOutbox, SqliteOutbox};

pub enum Db {
    Pg(PgPool),
    Lite(SqlitePool),
}

const CLICKS_COLUMNS: &str = "event_id TEXT NOT NULL, link_code TEXT NOT NULL, clicked_at_ms BIGINT NOT NULL, \
    processed_at_ms BIGINT NOT NULL, ip TEXT, browser TEXT, os TEXT, device TEXT, country TEXT, referrer TEXT";

impl Db {
    pub async fn open(url: Option<&str>, dir: &std::path::Path) -> anyhow::Result<(Db, String)> {
        match url {
            Some(u) if u.starts_with("postgres") => {
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(u)
                    .await
                    .with_context(|| "connecting to DATABASE_URL")?;
                Ok((Db::Pg(pool), "postgres".into()))
            }
            other => {
                let path = match other {
                    Some(u) => u.to_string(),
                    None => format!("sqlite://{}", dir.join("clicks.db").display()),
                };
                let opts: SqliteConnectOptions = path
                    .parse::<SqliteConnectOptions>()?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30));
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(opts)
                    .await
                    .with_context(|| format!("opening {path}"))?;
                Ok((Db::Lite(pool), format!("sqlite ({path})")))
            }
        }
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Pg(p) => {
                sqlx::raw_sql(&format!(
                    "CREATE TABLE IF NOT EXISTS links (code TEXT PRIMARY KEY, target TEXT NOT NULL, hits BIGINT NOT NULL DEFAULT 0);
                     CREATE TABLE IF NOT EXISTS clicks ({CLICKS_COLUMNS});
                     CREATE INDEX IF NOT EXISTS clicks_event_id ON clicks (event_id);"
                ))
                .execute(p)
                .await?;
                PostgresOutbox::new(p.clone()).migrate().await?;
                weir_idempotency::PostgresStore::new(p.clone())
                    .migrate()
                    .await?;
            }
            Db::Lite(p) => {
                sqlx::raw_sql(&format!(
                    "CREATE TABLE IF NOT EXISTS links (code TEXT PRIMARY KEY, target TEXT NOT NULL, hits INTEGER NOT NULL DEFAULT 0);
                     CREATE TABLE IF NOT EXISTS clicks ({CLICKS_COLUMNS});
                     CREATE INDEX IF NOT EXISTS clicks_event_id ON clicks (event_id);"
                ))
                .execute(p)
                .await?;
                SqliteOutbox::new(p.clone()).migrate().await?;
                weir_idempotency::SqliteStore::new(p.clone())
                    .migrate()
                    .await?;
            }
        }
        Ok(())
    }

    /// Forgets earlier runs (an external database may be reused).
    pub async fn reset(&self) -> anyhow::Result<()> {
        let sql = "DELETE FROM clicks; DELETE FROM links; DELETE FROM weir_outbox; DELETE FROM processed_messages;";
        match self {
            Db::Pg(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ())?,
            Db::Lite(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ())?,
        }
        Ok(())
    }

    pub async fn seed_links(&self, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            let (code, target) = (format!("l{i}"), format!("https://example.com/article/{i}"));
            match self {
                Db::Pg(p) => {
                    sqlx::query(
                        "INSERT INTO links (code, target) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(code)
                    .bind(target)
                    .execute(p)
                    .await?;
                }
                Db::Lite(p) => {
                    sqlx::query("INSERT OR IGNORE INTO links (code, target) VALUES (?, ?)")
                        .bind(code)
                        .bind(target)
                        .execute(p)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The redirect's transaction: count the hit and enqueue the click event,
    /// atomically. `None` for an unknown code. Returns (target, message id).
    pub async fn redirect(
        &self,
        code: &str,
        event: OutboxRecord,
    ) -> anyhow::Result<Option<(String, String)>> {
        match self {
            Db::Pg(p) => {
                let mut tx = p.begin().await?;
                let target: Option<String> = sqlx::query_scalar(
                    "UPDATE links SET hits = hits + 1 WHERE code = $1 RETURNING target",
                )
                .bind(code)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(target) = target else {
                    return Ok(None);
                };
                let id = PostgresOutbox::enqueue(&mut tx, event).await?;
                tx.commit().await?;
                Ok(Some((target, id)))
            }
            Db::Lite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let target: Option<String> = sqlx::query_scalar(
                    "UPDATE links SET hits = hits + 1 WHERE code = ? RETURNING target",
                )
                .bind(code)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(target) = target else {
                    return Ok(None);
                };
                let id = SqliteOutbox::enqueue(&mut tx, event).await?;
                tx.commit().await?;
                Ok(Some((target, id)))
            }
        }
    }

    /// Re-publishes `n` already enqueued events through the outbox with the
    /// same message ID: the duplicate deliveries the worker must absorb.
    pub async fn republish(&self, ids: &[String]) -> anyhow::Result<usize> {
        let mut n = 0;
        for id in ids {
            let r = match self {
                Db::Pg(p) => sqlx::query(
                    "INSERT INTO weir_outbox (topic, msg_key, payload, headers, message_id) \
                     SELECT topic, msg_key, payload, headers, message_id FROM weir_outbox WHERE message_id = $1 ORDER BY id LIMIT 1",
                )
                .bind(id)
                .execute(p)
                .await?
                .rows_affected(),
                Db::Lite(p) => sqlx::query(
                    "INSERT INTO weir_outbox (topic, msg_key, payload, headers, message_id, created_at) \
                     SELECT topic, msg_key, payload, headers, message_id, created_at FROM weir_outbox WHERE message_id = ? ORDER BY id LIMIT 1",
                )
                .bind(id)
                .execute(p)
                .await?
                .rows_affected(),
            };
            n += r as usize;
        }
        Ok(n)
    }

    /// (event id, clicked at, processed at) of every row in `clicks`.
    pub async fn clicks(&self) -> anyhow::Result<Vec<(String, i64, i64)>> {
        let sql = "SELECT event_id, clicked_at_ms, processed_at_ms FROM clicks";
        Ok(match self {
            Db::Pg(p) => sqlx::query_as(sql).fetch_all(p).await?,
            Db::Lite(p) => sqlx::query_as(sql).fetch_all(p).await?,
        })
    }

    /// The A/B baseline's transaction: the same hit counter update as a
    /// redirect, without the outbox write. The target, or `None`.
    pub async fn hit(&self, code: &str) -> anyhow::Result<Option<String>> {
        Ok(match self {
            Db::Pg(p) => {
                let mut tx = p.begin().await?;
                let t = sqlx::query_scalar(
                    "UPDATE links SET hits = hits + 1 WHERE code = $1 RETURNING target",
                )
                .bind(code)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                t
            }
            Db::Lite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let t = sqlx::query_scalar(
                    "UPDATE links SET hits = hits + 1 WHERE code = ? RETURNING target",
                )
                .bind(code)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                t
            }
        })
    }

    /// The outbox backlog: rows not yet published, and the age of the oldest (ms).
    pub async fn outbox_backlog(&self) -> anyhow::Result<(i64, i64)> {
        Ok(match self {
            Db::Pg(p) => sqlx::query_as(
                "SELECT count(*), COALESCE((EXTRACT(EPOCH FROM (clock_timestamp() - min(created_at))) * 1000)::BIGINT, 0) \
                 FROM weir_outbox WHERE published_at IS NULL",
            )
            .fetch_one(p)
            .await?,
            Db::Lite(p) => {
                let (n, oldest): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT count(*), min(created_at) FROM weir_outbox WHERE published_at IS NULL",
                )
                .fetch_one(p)
                .await?;
                (n, oldest.map_or(0, |o| (weir::clock::now_ms() - o).max(0)))
            }
        })
    }

    /// The event ids in `clicks`.
    pub async fn click_ids(&self) -> anyhow::Result<Vec<String>> {
        let sql = "SELECT event_id FROM clicks";
        Ok(match self {
            Db::Pg(p) => sqlx::query_scalar(sql).fetch_all(p).await?,
            Db::Lite(p) => sqlx::query_scalar(sql).fetch_all(p).await?,
        })
    }
}
