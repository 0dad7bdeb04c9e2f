//! `weir console`: a web console for the people on call.
//!
//! Server-rendered pages (no script, nothing fetched from the internet) over
//! the same engines as the `weir` CLI:
//! - **Groups**: every consumer group with its protocol, state and members;
//!   per partition the committed offset, log end, lag and the oldest
//!   unconsumed message's age; a lag chart of the last hour, sampled by the
//!   console while it runs.
//! - **Consumers**: Weir members' `weir-telemetry` endpoints: health,
//!   in-flight, halted partitions and why, retries and DLQ publishes per
//!   minute, processing latency p50/p99.
//! - **Retry tiers and DLQs**: depth per topic; a DLQ's messages filtered by
//!   time, error class, reason, key and original topic; each message's
//!   coordinates, failure and headers (payloads only when allowed).
//! - **Actions** (off unless `actions = true`): DLQ replay
//!   ([`weir::dlq::replay`]) and offset resets ([`weir::groups::reset_offsets`]),
//!   each a dry run first and then a confirmation; resets are refused while
//!   the group has members. Every action goes to the audit log.
//!
//! Logins use a token or a name and password from [`Settings`]; without
//! either the console starts only on a loopback address with `no_auth`.
//! Mutating requests need the session's CSRF token.
//!
//! ```no_run
//! # async fn demo() -> Result<(), weir_console::ConsoleError> {
//! use weir_console::{Console, Settings};
//!
//! let settings = Settings {
//!     token: Some("a-long-random-string".into()),
//!     actions: true,
//!     ..Settings::default()
//! };
//! let client = weir::dlq::client_config("kafka:9092");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9600").await?;
//! Console::new(settings, client, false, listener.local_addr()?)?
//!     .serve(listener, std::future::pending())
//!     .await
//! # }
//! ```

mod audit;
mod auth;
mod chart;
mod config;
mod consumers;
mod dlq;
mod groups;
pub mod prom;
mod sampler;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;

pub use audit::Entry as AuditEntry;
pub use config::Settings;

/// What can stop the console from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The settings are wrong; the message says which and how to fix it.
    #[error("console config: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// Listening or serving failed.
    #[error("serving the console: {0}")]
    Io(#[from] std::io::Error),
}

/// The shared state of every page.
pub(crate) struct App {
    pub(crate) settings: Settings,
    pub(crate) no_auth: bool,
    pub(crate) client: rdkafka::ClientConfig,
    pub(crate) sessions: auth::Sessions,
    pub(crate) audit: audit::AuditLog,
    pub(crate) history: Arc<sampler::History>,
    pub(crate) http: reqwest::Client,
}

/// A console, ready to serve.
pub struct Console {
    app: Arc<App>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("settings", &self.app.settings)
            .field("no_auth", &self.app.no_auth)
            .finish()
    }
}

impl Console {
    /// A console for the cluster `client` connects to (`bootstrap.servers`
    /// and any SASL/TLS properties), listening on `listen` (checked with
    /// [`Settings::validate`]).
    pub fn new(
        settings: Settings,
        client: rdkafka::ClientConfig,
        no_auth: bool,
        listen: SocketAddr,
    ) -> Result<Console, ConsoleError> {
        settings.validate(listen, no_auth)?;
        if client.get("bootstrap.servers").is_none() {
            return Err(ConsoleError::Config {
                message: "no brokers: set `brokers` in the config file, WEIR_BROKERS or --brokers"
                    .into(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()
            .map_err(|e| ConsoleError::Config {
                message: format!("building the HTTP client for the endpoints: {e}"),
            })?;
        Ok(Console {
            app: Arc::new(App {
                sessions: auth::Sessions::new(settings.session_ttl),
                audit: audit::AuditLog::open(settings.audit_log.clone()),
                history: Arc::default(),
                no_auth,
                client,
                http,
                settings,
            }),
        })
    }

    /// Serves on `listener` until `shutdown` completes, sampling lag and
    /// the endpoints' counters in the background meanwhile.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ConsoleError> {
        let a = &self.app;
        let sampler = sampler::spawn(
            a.client.clone(),
            a.http.clone(),
            a.settings.endpoints.clone(),
            a.settings.sample_interval,
            a.settings.history,
            a.history.clone(),
        );
        let router = web::router(self.app.clone());
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        sampler.abort();
        Ok(served?)
    }
}
