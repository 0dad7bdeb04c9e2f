//! Weir consumers: what their `weir-telemetry` endpoints say.

use axum::Extension;
use axum::extract::State;
use maud::{Markup, html};

use crate::App;
use crate::auth::Session;
use crate::prom;
use crate::sampler::base_url;
use crate::web::{AppState, Page, layout};

/// One endpoint, as read now.
pub(crate) struct EndpointView {
    pub(crate) endpoint: String,
    /// `Ok(())` healthy, `Err(why)` unhealthy or unreachable.
    pub(crate) health: Result<(), String>,
    pub(crate) in_flight: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) processed: Option<f64>,
    /// (topic/partition, why) of each halted partition.
    pub(crate) halted: Vec<(String, String)>,
    pub(crate) groups: Vec<String>,
    /// Retries and DLQ publishes per minute (from the console's samples).
    pub(crate) per_minute: Option<(f64, f64)>,
}

async fn read(app: &App, endpoint: &str) -> EndpointView {
    let base = base_url(endpoint);
    let mut v = EndpointView {
        endpoint: endpoint.to_string(),
        health: Ok(()),
        in_flight: None,
        p50_ms: None,
        p99_ms: None,
        processed: None,
        halted: Vec::new(),
        groups: Vec::new(),
        per_minute: app.history.per_minute(endpoint),
    };
    match app.http.get(format!("{base}/healthz")).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            v.health = Err(format!(
                "{status}: {}",
                body.chars().take(300).collect::<String>()
            ));
        }
        Err(e) => {
            v.health = Err(format!("unreachable: {e}"));
            return v;
        }
    }
    if let Ok(r) = app.http.get(format!("{base}/metrics")).send().await
        && let Ok(text) = r.text().await
    {
        let s = prom::parse(&text);
        v.in_flight = prom::sum(&s, "weir_in_flight");
        v.processed = prom::sum(&s, "weir_messages_processed_total");
        v.p50_ms = prom::quantile(&s, "weir_processing_seconds", "0.5").map(|x| x * 1000.0);
        v.p99_ms = prom::quantile(&s, "weir_processing_seconds", "0.99").map(|x| x * 1000.0);
    }
    if let Ok(r) = app.http.get(format!("{base}/inspect")).send().await
        && let Ok(j) = r.json::<serde_json::Value>().await
    {
        let snaps: Vec<weir::inspect::Snapshot> = j["consumers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| serde_json::from_value(s.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        for snap in snaps {
            v.groups.push(snap.group.clone());
            for p in snap.partitions {
                if let Some(why) = p.halted {
                    v.halted.push((format!("{}/{}", p.topic, p.partition), why));
                }
            }
        }
    }
    v
}

fn num(x: Option<f64>, digits: usize) -> Markup {
    html! {
        @match x {
            Some(x) => (format!("{x:.digits$}")),
            None => span.muted { "-" },
        }
    }
}

pub(crate) async fn page(State(app): AppState, Extension(s): Extension<Session>) -> Page {
    let views =
        futures::future::join_all(app.settings.endpoints.iter().map(|e| read(&app, e))).await;
    Ok(layout(
        "Consumers",
        Some(&s),
        html! {
            h1 { "Weir consumers" }
            @if views.is_empty() {
                p.muted { "No endpoints configured: list your consumers' weir-telemetry endpoints in " code { "[console] endpoints" } " (or WEIR_CONSOLE_ENDPOINTS)." }
            }
            div.cards #consumers {
                @for v in &views {
                    div.card.consumer {
                        h2 { code { (v.endpoint) } }
                        p { "Health: "
                            @match &v.health {
                                Ok(()) => { span.ok.health { "healthy" } },
                                Err(e) => { span.bad.health { "unhealthy" } " " span.muted { (e) } },
                            }
                        }
                        @if !v.groups.is_empty() { p { "Groups: " (v.groups.join(", ")) } }
                        table {
                            tr { th { "In flight" } td.num.in-flight { (num(v.in_flight, 0)) } }
                            tr { th { "Processed" } td.num { (num(v.processed, 0)) } }
                            tr { th { "Latency p50 (ms)" } td.num { (num(v.p50_ms, 1)) } }
                            tr { th { "Latency p99 (ms)" } td.num { (num(v.p99_ms, 1)) } }
                            tr { th { "Retries / min" } td.num { (num(v.per_minute.map(|p| p.0), 1)) } }
                            tr { th { "DLQ publishes / min" } td.num { (num(v.per_minute.map(|p| p.1), 1)) } }
                        }
                        @if v.halted.is_empty() {
                            p.ok { "No halted partition." }
                        } @else {
                            h2 { "Halted partitions" }
                            table.halted {
                                tr { th { "Partition" } th { "Why" } }
                                @for (p, why) in &v.halted { tr { td { (p) } td { (why) } } }
                            }
                        }
                    }
                }
            }
        },
    ))
}
