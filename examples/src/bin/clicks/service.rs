//! The redirect service: `GET /{code}` answers 302 at once and writes the
//! click to the outbox in the hit counter's transaction; `GET /b/{code}` is
//! the baseline of the latency A/B, the same redirect with the hit counter
//! only.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;
use weir::clock::now_ms;
use weir_outbox::OutboxRecord;

use crate::db::Db;
use crate::{ClickEvent, TOPIC};

/// The redirect service's state.
pub(crate) struct App {
    pub(crate) db: Db,
    pub(crate) wake: Arc<Notify>,
}

/// `GET /{code}`: 302 to the target at once; the click goes to the outbox in
/// the same transaction as the hit counter. Never waits for Kafka.
pub(crate) async fn redirect(
    State(app): State<Arc<App>>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let event = ClickEvent {
        link: code.clone(),
        at_ms: now_ms(),
        ip: h("x-forwarded-for").unwrap_or_else(|| "0.0.0.0".into()),
        user_agent: h("user-agent").unwrap_or_default(),
        referrer: h("referer"),
    };
    let mut rec = OutboxRecord::to(TOPIC).key(code.clone());
    rec = if h("x-demo-poison").is_some() {
        // A buggy client version: the event is not valid JSON.
        rec.payload(format!(r#"{{"link":"{code}","at_ms":"#))
    } else {
        match rec.json(&event) {
            Ok(r) => r,
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    };
    if let Some(tp) = h("traceparent") {
        rec = rec.header("traceparent", tp);
    }
    match app.db.redirect(&code, rec).await {
        Ok(Some((target, id))) => {
            app.wake.notify_one();
            (
                StatusCode::FOUND,
                [
                    (header::LOCATION, target),
                    (header::HeaderName::from_static("x-click-id"), id),
                ],
            )
                .into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "unknown link").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "redirect failed");
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
    }
}

/// `GET /b/{code}`: the latency A/B's baseline, a redirect that only counts
/// the hit (no outbox write), answered the same way.
pub(crate) async fn baseline(State(app): State<Arc<App>>, Path(code): Path<String>) -> Response {
    match app.db.hit(&code).await {
        Ok(Some(target)) => (StatusCode::FOUND, [(header::LOCATION, target)]).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "unknown link").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "baseline redirect failed");
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
    }
}

/// The redirect service's routes.
pub(crate) fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/{code}", axum::routing::get(redirect))
        .route("/b/{code}", axum::routing::get(baseline))
        .with_state(app)
}
