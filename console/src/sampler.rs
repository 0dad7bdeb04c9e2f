//! What the console samples while it runs: every group's total lag (the lag
//! charts) and the Weir endpoints' counters (retries and DLQ publishes per
//! minute).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::ClientConfig;

use crate::prom;

/// One sample of an endpoint's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Counters {
    pub(crate) at_ms: i64,
    pub(crate) retries: f64,
    pub(crate) dlq: f64,
}

/// The history the pages read.
#[derive(Default)]
pub(crate) struct History {
    /// group -> (epoch ms, total lag), oldest first.
    lag: Mutex<HashMap<String, VecDeque<(i64, i64)>>>,
    /// endpoint -> counter samples, oldest first.
    counters: Mutex<HashMap<String, VecDeque<Counters>>>,
    /// The last sampling error (brokers down), shown on the pages.
    pub(crate) last_error: Mutex<Option<String>>,
}

impl History {
    /// Records `group`'s lag at `at_ms`, dropping samples older than `keep_ms`.
    pub(crate) fn add_lag(&self, group: &str, at_ms: i64, lag: i64, keep_ms: i64) {
        let mut m = self.lag.lock();
        let q = m.entry(group.to_string()).or_default();
        q.push_back((at_ms, lag));
        while q.front().is_some_and(|(t, _)| *t < at_ms - keep_ms) {
            q.pop_front();
        }
    }

    /// `group`'s lag samples, oldest first.
    pub(crate) fn lag(&self, group: &str) -> Vec<(i64, i64)> {
        self.lag
            .lock()
            .get(group)
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Each group's latest lag.
    pub(crate) fn latest_lag(&self) -> BTreeMap<String, i64> {
        self.lag
            .lock()
            .iter()
            .filter_map(|(g, q)| q.back().map(|(_, l)| (g.clone(), *l)))
            .collect()
    }

    /// Records an endpoint's counters, keeping `keep_ms` of them.
    pub(crate) fn add_counters(&self, endpoint: &str, c: Counters, keep_ms: i64) {
        let mut m = self.counters.lock();
        let q = m.entry(endpoint.to_string()).or_default();
        q.push_back(c);
        while q.front().is_some_and(|x| x.at_ms < c.at_ms - keep_ms) {
            q.pop_front();
        }
    }

    /// Retries and DLQ publishes per minute at `endpoint`, over up to the
    /// last minute of samples (`None` before two samples). A counter that
    /// went down (the consumer restarted) counts from zero.
    pub(crate) fn per_minute(&self, endpoint: &str) -> Option<(f64, f64)> {
        let m = self.counters.lock();
        let q = m.get(endpoint)?;
        let last = *q.back()?;
        let first = q
            .iter()
            .find(|c| c.at_ms >= last.at_ms - 60_000 && c.at_ms < last.at_ms)?;
        let dt_min = (last.at_ms - first.at_ms) as f64 / 60_000.0;
        let rate = |a: f64, b: f64| {
            let d = if b >= a { b - a } else { b };
            d / dt_min
        };
        Some((rate(first.retries, last.retries), rate(first.dlq, last.dlq)))
    }
}

/// Normalises an endpoint to a base URL.
pub(crate) fn base_url(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

/// Total lag of every group on the cluster: (group, lag). Groups whose
/// topics cannot be told (no members, nothing committed) are left out.
pub(crate) fn all_lags(client: &ClientConfig) -> Result<Vec<(String, i64)>, weir::WeirError> {
    let groups = weir::groups::list_groups(client, None)?;
    let mut out = Vec::new();
    for g in groups.into_iter().filter(|g| g.state != "Dead") {
        let topics = topics_of(client, &g)?;
        if topics.is_empty() {
            continue;
        }
        let lag = weir::groups::lag(client, &g.name, &topics)?
            .iter()
            .map(|p| p.lag)
            .sum();
        out.push((g.name, lag));
    }
    Ok(out)
}

/// The topics a group consumes: its members' assignment, or (no members)
/// the topics it committed on.
pub(crate) fn topics_of(
    client: &ClientConfig,
    g: &weir::groups::GroupInfo,
) -> Result<Vec<String>, weir::WeirError> {
    let mut topics: Vec<String> = g
        .members
        .iter()
        .flat_map(|m| m.assignment.keys().cloned())
        .collect();
    topics.sort();
    topics.dedup();
    if topics.is_empty() {
        topics = weir::groups::committed_topics(client, &g.name)?;
    }
    Ok(topics)
}

/// Samples until the returned handle is dropped or aborted.
pub(crate) fn spawn(
    client: ClientConfig,
    http: reqwest::Client,
    endpoints: Vec<String>,
    every: Duration,
    keep: Duration,
    history: Arc<History>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let keep_ms = keep.as_millis() as i64;
        loop {
            let c = client.clone();
            let now = weir::clock::now_ms();
            match tokio::task::spawn_blocking(move || all_lags(&c)).await {
                Ok(Ok(lags)) => {
                    for (g, l) in lags {
                        history.add_lag(&g, now, l, keep_ms);
                    }
                    *history.last_error.lock() = None;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "sampling lag");
                    *history.last_error.lock() = Some(e.to_string());
                }
                Err(e) => tracing::warn!(error = %e, "the lag sampler's task failed"),
            }
            for e in &endpoints {
                let url = format!("{}/metrics", base_url(e));
                let Ok(resp) = http.get(&url).send().await else {
                    continue;
                };
                let Ok(text) = resp.text().await else {
                    continue;
                };
                let s = prom::parse(&text);
                history.add_counters(
                    e,
                    Counters {
                        at_ms: weir::clock::now_ms(),
                        retries: prom::sum(&s, "weir_retry_published_total").unwrap_or(0.0),
                        dlq: prom::sum(&s, "weir_dlq_published_total").unwrap_or(0.0),
                    },
                    keep_ms.max(120_000),
                );
            }
            tokio::time::sleep(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_history_keeps_the_window() {
        let h = History::default();
        for i in 0..10 {
            h.add_lag("g", i * 1000, i, 5000);
        }
        let l = h.lag("g");
        assert_eq!(l.first(), Some(&(4000, 4)));
        assert_eq!(l.last(), Some(&(9000, 9)));
        assert_eq!(h.latest_lag().get("g"), Some(&9));
        assert!(h.lag("other").is_empty());
    }

    #[test]
    fn rates_per_minute_survive_a_restart() {
        let h = History::default();
        assert!(h.per_minute("e").is_none());
        let c = |at_ms, retries, dlq| Counters {
            at_ms,
            retries,
            dlq,
        };
        h.add_counters("e", c(0, 10.0, 0.0), 600_000);
        assert!(h.per_minute("e").is_none(), "one sample is no rate");
        h.add_counters("e", c(30_000, 40.0, 5.0), 600_000);
        assert_eq!(h.per_minute("e"), Some((60.0, 10.0)));
        // Restarted: counters from zero.
        h.add_counters("e", c(60_000, 3.0, 1.0), 600_000);
        let (r, _) = h.per_minute("e").unwrap();
        assert!((r - 3.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn endpoints_become_urls() {
        assert_eq!(base_url("h:9464"), "http://h:9464");
        assert_eq!(base_url("https://h/"), "https://h");
    }
}
