//! # Metrics and health endpoints for Weir consumers
//!
//! [`Telemetry::install`] installs a Prometheus recorder for the `metrics`
//! facade that Weir (and your code) writes to; [`Telemetry::serve`] answers:
//!
//! - `GET /metrics`: Prometheus text format: consumer lag per partition
//!   (`weir_consumer_lag`), age of the oldest unprocessed message per partition
//!   (`weir_oldest_unprocessed_age_seconds`), processing time
//!   (`weir_processing_seconds`, quantiles 0.5/0.95/0.99), messages in/out,
//!   errors by class (`weir_errors_total{class}`), retries per tier
//!   (`weir_retry_published_total{group,topic}`), DLQ publishes and depth, in-flight,
//!   paused partitions, rebalances, commits and commit failures, outbox backlog
//!   and age (when the relay runs in the process);
//! - `GET /healthz`: 200 while every consumer's dispatch loop has run within
//!   `stale_after` (a wedged loop fails it: restart the pod), 503 otherwise;
//! - `GET /readyz`: 200 once every consumer has partitions assigned, is not
//!   wedged and is not in a rebalance that holds its partitions (a revoke
//!   draining them), 503 otherwise;
//! - `GET /inspect`: JSON, what holds each partition's commit
//!   ([`weir::inspect`]): `{"consumers": [snapshot, …]}`, one per consumer
//!   (`null` before its first commit interval). Keys are left out (their
//!   hashes kept) unless [`HealthOptions::inspect_keys`]. `weir inspect`
//!   reads it.
//!
//! Install it **before** building consumers: metric handles made before a
//! recorder exists stay no-ops.
//!
//! ```no_run
//! # async fn demo(consumer_handle: weir::ConsumerHandle) -> Result<(), Box<dyn std::error::Error>> {
//! let telemetry = weir_telemetry::Telemetry::install()?;
//! let (addr, _server) = telemetry
//!     .serve("0.0.0.0:9464".parse()?, vec![consumer_handle], Default::default())
//!     .await?;
//! println!("metrics on http://{addr}/metrics");
//! # Ok(()) }
//! ```

pub mod otel;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use weir::ConsumerHandle;

/// Telemetry failed to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// Another `metrics` recorder is installed in this process.
    #[error(
        "a different metrics recorder is already installed: {0} (install Weir's once, at start-up)"
    )]
    Recorder(String),
    /// The span exporter could not be built.
    #[error("building the span exporter: {0}")]
    Exporter(String),
    /// The endpoint could not listen.
    #[error("cannot listen on {addr}: {source} (is the port free?)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Health thresholds.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// A consumer whose dispatch loop has not run for this long is wedged (default 30 s).
    pub stale_after: Duration,
    /// Serve message keys on `/inspect` (default `false`: keys are often user
    /// or account IDs; their stable hashes are served instead).
    pub inspect_keys: bool,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            stale_after: Duration::from_secs(30),
            inspect_keys: false,
        }
    }
}

/// The installed Prometheus recorder.
#[derive(Clone)]
pub struct Telemetry {
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

static INSTALLED: OnceLock<PrometheusHandle> = OnceLock::new();

impl Telemetry {
    /// Installs the Prometheus recorder (once per process; later calls return it again).
    pub fn install() -> Result<Telemetry, TelemetryError> {
        // Serialised: two threads installing at once must both get the one recorder.
        static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = INSTALLED.get() {
            return Ok(Telemetry { handle: h.clone() });
        }
        let handle = PrometheusBuilder::new()
            .set_quantiles(&[0.5, 0.95, 0.99])
            .map_err(|e| TelemetryError::Recorder(e.to_string()))?
            .install_recorder()
            .map_err(|e| TelemetryError::Recorder(e.to_string()))?;
        let h = INSTALLED.get_or_init(|| handle);
        Ok(Telemetry { handle: h.clone() })
    }

    /// The current metrics in Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Serves `/metrics`, `/healthz`, `/readyz` and `/inspect` on `addr` (port 0 picks a
    /// free one); returns the bound address and the server task.
    pub async fn serve(
        &self,
        addr: SocketAddr,
        consumers: Vec<ConsumerHandle>,
        opts: HealthOptions,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), TelemetryError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Listen { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| TelemetryError::Listen { addr, source })?;
        let state = Arc::new(AppState {
            telemetry: self.clone(),
            consumers,
            opts,
        });
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics_route))
            .route("/healthz", axum::routing::get(healthz))
            .route("/readyz", axum::routing::get(readyz))
            .route("/inspect", axum::routing::get(inspect))
            .with_state(state);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "telemetry endpoint stopped");
            }
        });
        Ok((bound, task))
    }
}

struct AppState {
    telemetry: Telemetry,
    consumers: Vec<ConsumerHandle>,
    opts: HealthOptions,
}

fn now_ms() -> u64 {
    weir::clock::now_ms().max(0) as u64
}

/// Why a consumer is wedged, if it is. A consumer that has not started its
/// loop yet (heartbeat 0) is not wedged.
fn wedged(c: &ConsumerHandle, stale_after: Duration) -> Option<String> {
    if c.stats().run_failed() > 0 {
        return Some("the consumer stopped with an error".into());
    }
    let hb = c.stats().loop_heartbeat_ms();
    if hb == 0 {
        return None;
    }
    let idle = now_ms().saturating_sub(hb);
    (idle > stale_after.as_millis() as u64).then(|| format!("dispatch loop idle for {idle} ms"))
}

async fn metrics_route(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.telemetry.render(),
    )
}

async fn healthz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let problems: Vec<String> = s
        .consumers
        .iter()
        .filter_map(|c| wedged(c, s.opts.stale_after))
        .collect();
    if problems.is_empty() {
        (StatusCode::OK, "ok".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("; "))
    }
}

async fn inspect(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let consumers: Vec<Option<weir::inspect::Snapshot>> = s
        .consumers
        .iter()
        .map(|c| {
            c.inspect().map(|snap| {
                if s.opts.inspect_keys {
                    snap
                } else {
                    snap.without_keys()
                }
            })
        })
        .collect();
    let body = serde_json::json!({ "consumers": consumers });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn readyz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let mut problems = Vec::new();
    for (i, c) in s.consumers.iter().enumerate() {
        if c.stats().loop_heartbeat_ms() == 0 {
            problems.push(format!("consumer {i}: not started"));
        } else if c.stats().assigned_partitions() == 0 {
            problems.push(format!("consumer {i}: no partitions assigned"));
        }
        if c.stats().group_upgrade_refused() > 0 {
            problems.push(format!(
                "consumer {i}: not admitted: its group is a live classic group the broker refuses to upgrade to the consumer protocol (stop the classic members first)"
            ));
        }
        let since = c.stats().rebalancing_since_ms();
        if since > 0 {
            let for_ms = (weir::clock::now_ms().max(0) as u64).saturating_sub(since);
            problems.push(format!(
                "consumer {i}: rebalancing: draining revoked partitions for {for_ms} ms"
            ));
        }
        if let Some(w) = wedged(c, s.opts.stale_after) {
            problems.push(format!("consumer {i}: {w}"));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("; "))
    }
}
