//! What a scenario records: every request the open-loop driver sent (when,
//! how long, which route, its answer) and, four times a second, the
//! pipeline's state (outbox backlog, the worker group's lag, the oldest click
//! not yet stored, the DLQ depth).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Pipeline;

/// The route a request took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Route {
    /// `/{code}`: hit counter and outbox write in one transaction.
    Outbox,
    /// `/b/{code}`: hit counter only.
    Baseline,
}

/// One request of the open-loop driver.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    /// Seconds after the scenario started, when it was due (not when it went:
    /// an open loop does not wait for the server).
    pub(crate) at_s: f64,
    pub(crate) ms: f64,
    pub(crate) route: Route,
    /// Answered 302.
    pub(crate) found: bool,
    /// The click id (outbox route, 302).
    pub(crate) id: Option<String>,
    /// A malformed event: it must end in the DLQ, not in `clicks`.
    pub(crate) poison: bool,
}

impl Sent {
    /// The id of a click that must be stored.
    pub(crate) fn stored_id(&self) -> Option<&str> {
        self.id.as_deref().filter(|_| !self.poison)
    }

    /// The id of a poison event that must be dead-lettered.
    pub(crate) fn poison_id(&self) -> Option<&str> {
        self.id.as_deref().filter(|_| self.poison)
    }
}

/// The pipeline's state at one moment.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub(crate) t_s: f64,
    pub(crate) outbox_backlog: i64,
    pub(crate) outbox_oldest_ms: i64,
    /// `None` while the brokers cannot answer.
    pub(crate) lag: Option<i64>,
    /// Age of the oldest click sent but not yet in the `clicks` table.
    pub(crate) oldest_unprocessed_ms: i64,
    pub(crate) dlq: i64,
}

/// A shaded window of the timeline (an outage, a spike).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Window {
    pub(crate) label: String,
    pub(crate) from_s: f64,
    pub(crate) to_s: f64,
}

/// One scenario's record.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    pub(crate) sent: Vec<Sent>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) windows: Vec<Window>,
}

/// Per second: requests sent, and p50/p99 of each route's latency.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Second {
    pub(crate) t_s: u64,
    pub(crate) requests: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) baseline_p99_ms: Option<f64>,
}

impl Timeline {
    /// Latencies of `route` for requests due in `[from_s, to_s)`.
    pub(crate) fn latencies(&self, route: Route, from_s: f64, to_s: f64) -> Vec<f64> {
        self.sent
            .iter()
            .filter(|s| s.route == route && s.at_s >= from_s && s.at_s < to_s)
            .map(|s| s.ms)
            .collect()
    }

    pub(crate) fn seconds(&self) -> Vec<Second> {
        let last = self.sent.iter().map(|s| s.at_s as u64).max().unwrap_or(0);
        (0..=last)
            .map(|t| {
                let (a, b) = (t as f64, t as f64 + 1.0);
                let mut out = self.latencies(Route::Outbox, a, b);
                let mut base = self.latencies(Route::Baseline, a, b);
                Second {
                    t_s: t,
                    requests: out.len() + base.len(),
                    p50_ms: crate::pct(&mut out, 0.5),
                    p99_ms: crate::pct(&mut out, 0.99),
                    baseline_p99_ms: (!base.is_empty()).then(|| crate::pct(&mut base, 0.99)),
                }
            })
            .collect()
    }
}

/// Samples `p` every 250 ms until `stop`; `sent` is the driver's record so
/// far (for the oldest unprocessed click).
pub(crate) fn spawn_sampler(
    p: &Pipeline,
    started: Instant,
    sent: Arc<Mutex<Vec<Sent>>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    let app = p.app.clone();
    let probe = Probe {
        meta: p.meta.clone(),
        dlq_topic: p.retry.dlq_topic(crate::TOPIC),
    };
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !stop.is_cancelled() {
            tick.tick().await;
            let (backlog, oldest) = app.db.outbox_backlog().await.unwrap_or((0, 0));
            let stored: HashSet<String> = app
                .db
                .click_ids()
                .await
                .unwrap_or_default()
                .into_iter()
                .collect();
            let t_s = started.elapsed().as_secs_f64();
            let oldest_unprocessed_ms = sent
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.stored_id().is_some_and(|id| !stored.contains(id)))
                .map(|s| ((t_s - s.at_s) * 1000.0) as i64)
                .max()
                .unwrap_or(0);
            let pr = probe.clone();
            let (lag, dlq) = tokio::task::spawn_blocking(move || (pr.lag(), pr.dlq()))
                .await
                .unwrap_or((None, 0));
            out.push(Sample {
                t_s,
                outbox_backlog: backlog,
                outbox_oldest_ms: oldest,
                lag,
                oldest_unprocessed_ms,
                dlq,
            });
        }
        out
    })
}

/// The broker-side probes, on a blocking thread.
#[derive(Clone)]
struct Probe {
    meta: Arc<rdkafka::consumer::BaseConsumer>,
    dlq_topic: String,
}

impl Probe {
    fn lag(&self) -> Option<i64> {
        crate::pipeline::group_lag(&self.meta)
    }
    fn dlq(&self) -> i64 {
        crate::pipeline::depth(&self.meta, &self.dlq_topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(at_s: f64, ms: f64, route: Route) -> Sent {
        Sent {
            at_s,
            ms,
            route,
            found: true,
            id: Some(format!("{at_s}")),
            poison: false,
        }
    }

    #[test]
    fn seconds_bin_each_routes_latency_by_when_it_was_due() {
        let t = Timeline {
            sent: vec![
                sent(0.1, 10.0, Route::Outbox),
                sent(0.5, 30.0, Route::Outbox),
                sent(0.6, 5.0, Route::Baseline),
                sent(1.2, 7.0, Route::Outbox),
            ],
            ..Default::default()
        };
        let s = t.seconds();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].requests, s[0].p99_ms, s[0].baseline_p99_ms),
            (3, 30.0, Some(5.0))
        );
        assert_eq!(
            (s[1].requests, s[1].p50_ms, s[1].baseline_p99_ms),
            (1, 7.0, None)
        );
        assert_eq!(t.latencies(Route::Outbox, 0.0, 1.0), [10.0, 30.0]);
    }

    #[test]
    fn poison_ids_are_not_clicks_to_store() {
        let mut p = sent(1.0, 1.0, Route::Outbox);
        assert_eq!(p.stored_id(), Some("1"));
        p.poison = true;
        assert_eq!((p.stored_id(), p.poison_id()), (None, Some("1")));
    }
}
