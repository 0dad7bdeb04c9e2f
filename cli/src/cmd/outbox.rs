//! `weir outbox relay`.

use crate::*;

/// `weir outbox relay`: relays the outbox until SIGTERM.
pub(crate) async fn relay(
    conn: Conn,
    database_url: String,
    batch_size: usize,
    poll_interval: std::time::Duration,
    delete: bool,
) -> anyhow::Result<()> {
    use weir_outbox::{MarkMode, PostgresOutbox, Relay, RelayConfig, SqliteOutbox};
    let (client, _) = client_config(&conn)?;
    let producer = weir::Producer::from_client_config(client)?;
    let cfg = RelayConfig {
        batch_size,
        poll_interval,
        mark: if delete {
            MarkMode::Delete
        } else {
            MarkMode::MarkPublished
        },
        ..Default::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    if database_url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&database_url)
            .await
            .context("connecting to the outbox database")?;
        let outbox = PostgresOutbox::new(pool);
        outbox.migrate().await?;
        eprintln!("relaying the PostgreSQL outbox (SIGTERM to stop)");
        Relay::new(outbox, producer, cfg).run(stop).await?;
    } else {
        let opts: sqlx::sqlite::SqliteConnectOptions = database_url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .context("parsing the SQLite URL")?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(30));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .context("opening the outbox database")?;
        let outbox = SqliteOutbox::new(pool);
        outbox.migrate().await?;
        eprintln!("relaying the SQLite outbox (SIGTERM to stop)");
        Relay::new(outbox, producer, cfg).run(stop).await?;
    }
    Ok(())
}
