//! `weir console`.

use crate::*;

/// `weir console`: serves the web console until SIGTERM or Ctrl-C.
pub(crate) async fn run(
    conn: Conn,
    listen: std::net::SocketAddr,
    no_auth: bool,
) -> anyhow::Result<()> {
    let (client, brokers) = client_config(&conn)?;
    let settings = match &conn.config {
        Some(path) => weir_console::Settings::from_file(path)?,
        None => weir_console::Settings::default(),
    }
    .with_env(std::env::vars())?;
    let console = weir_console::Console::new(settings, client, no_auth, listen)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} (is the port taken?)"))?;
    eprintln!(
        "weir console on http://{} for {brokers} (SIGTERM or Ctrl-C to stop)",
        listener.local_addr()?
    );
    console
        .serve(listener, async {
            #[cfg(unix)]
            {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
