//! Databases for tests: a fresh PostgreSQL database per test, or an embedded SQLite file.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;

use crate::TestkitError;

/// Default server when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A uniquely named PostgreSQL database, dropped (with `FORCE`) when this value is dropped.
#[derive(Debug)]
pub struct PostgresDb {
    admin_url: String,
    name: String,
    url: String,
    pool: PgPool,
}

impl PostgresDb {
    /// Creates `weir_test_<uuid>` on the server of `DATABASE_URL`
    /// (default [`DEFAULT_DATABASE_URL`]) and connects a pool to it.
    pub async fn fresh() -> Result<Self, TestkitError> {
        let admin_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string());
        let admin_opts = PgConnectOptions::from_str(&admin_url).map_err(TestkitError::db(
            format!("parsing DATABASE_URL {admin_url}"),
        ))?;
        let mut admin = admin_opts
            .connect()
            .await
            .map_err(TestkitError::db(format!(
                "connecting to {admin_url} (is PostgreSQL running? `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`)"
            )))?;
        let name = format!("weir_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .map_err(TestkitError::db(format!("creating database {name}")))?;
        let _ = admin.close().await;
        let opts = admin_opts.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .map_err(TestkitError::db(format!("connecting to {name}")))?;
        let url = replace_database(&admin_url, &name);
        Ok(PostgresDb {
            admin_url,
            name,
            url,
            pool,
        })
    }

    /// Connection URL of the fresh database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection URL with `host:port` replaced by `addr` (for a [`TcpProxy`](crate::TcpProxy) in front).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        replace_host_port(&self.url, &addr.to_string())
    }

    /// A connection pool to it.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Replaces the `host:port` of a `postgres://user@host:port/db` URL.
fn replace_host_port(url: &str, host_port: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let auth_end = rest.find('/').unwrap_or(rest.len());
    let auth = &rest[..auth_end];
    let userinfo = auth.rfind('@').map(|i| &auth[..=i]).unwrap_or("");
    format!(
        "{}{}{}{}",
        &url[..scheme_end],
        userinfo,
        host_port,
        &rest[auth_end..]
    )
}

/// Replaces the database path of a `postgres://` URL.
fn replace_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..host_end], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime that is blocked here: use a private
        // runtime on a thread, and let `WITH (FORCE)` end the pool's connections
        // (closing the pool from here would wait on the blocked runtime).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let opts = PgConnectOptions::from_str(&admin_url).ok()?;
                let mut admin = opts.connect().await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()?;
                Some(())
            })
        })
        .join();
    }
}

/// An embedded SQLite database file in a temporary directory, removed when dropped.
#[derive(Debug)]
pub struct SqliteDb {
    dir: tempfile::TempDir,
    url: String,
}

impl SqliteDb {
    /// A new empty database file (`sqlite://…/weir.db?mode=rwc`).
    pub fn fresh() -> Result<Self, TestkitError> {
        let dir = tempfile::Builder::new()
            .prefix("weir-sqlite-")
            .tempdir()
            .map_err(TestkitError::io("creating a temporary directory"))?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("weir.db").display());
        Ok(SqliteDb { dir, url })
    }

    /// Connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Path of the database file.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("weir.db")
    }
}

#[cfg(test)]
mod tests {
    use super::{replace_database, replace_host_port};

    #[test]
    fn replaces_host_and_port() {
        assert_eq!(
            replace_host_port(
                "postgres://postgres@127.0.0.1:5432/db?x=1",
                "127.0.0.1:6000"
            ),
            "postgres://postgres@127.0.0.1:6000/db?x=1"
        );
        assert_eq!(
            replace_host_port("postgres://h/db", "a:1"),
            "postgres://a:1/db"
        );
    }

    #[test]
    fn replaces_database_in_url() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u:p@h:1?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
    }
}
