//! The article's claims, one scenario each, under an open-loop load (requests
//! sent on a schedule, however slow the answers): the redirect's latency with
//! and without its outbox write (A/B), a worker outage, a broker outage and a
//! spike. Each scenario records a [`Timeline`] and judges its claims from the
//! `clicks` table, the outbox and the DLQ themselves.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::pipeline::Pipeline;
use crate::timeline::{Route, Sample, Sent, Timeline, Window, spawn_sampler};
use crate::{AGENTS, Args, IPS, LINKS, pct};

/// A scenario of the main job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ab,
    WorkerOutage,
    BrokerOutage,
    Spike,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Ab => "latency_ab",
            Kind::WorkerOutage => "worker_outage",
            Kind::BrokerOutage => "broker_outage",
            Kind::Spike => "spike",
        }
    }
}

/// A scenario's result: its timeline, its figures and whether its claims held.
pub(crate) struct Outcome {
    pub(crate) kind: Kind,
    pub(crate) timeline: Timeline,
    pub(crate) figures: Value,
    pub(crate) ok: bool,
}

/// The open-loop schedule: `rate` requests per second, times `factor` inside
/// the spike window.
#[derive(Debug, Clone, Copy)]
struct Load {
    rate: f64,
    duration: f64,
    spike: Option<(f64, f64, f64)>,
    ab: bool,
    poison_every: usize,
}

impl Load {
    fn rate_at(&self, t: f64) -> f64 {
        match self.spike {
            Some((from, to, factor)) if t >= from && t < to => self.rate * factor,
            _ => self.rate,
        }
    }
}

/// Runs `kind` on `p` (its worker group running) and judges it.
pub(crate) async fn run(kind: Kind, p: &mut Pipeline, args: &Args) -> anyhow::Result<Outcome> {
    let duration = match kind {
        Kind::Ab => args.ab_duration,
        _ => args.duration,
    }
    .as_secs_f64();
    let at = duration / 3.0;
    let outage = |d: Option<Duration>| d.unwrap_or(Duration::from_secs(5)).as_secs_f64();
    let (window, spike) = match kind {
        Kind::Ab => (None, None),
        Kind::WorkerOutage => (
            Some(("worker down", at, at + outage(args.worker_outage))),
            None,
        ),
        Kind::BrokerOutage => (
            Some(("brokers down", at, at + outage(args.broker_outage))),
            None,
        ),
        Kind::Spike => {
            let (factor, secs) = args.spike.unwrap_or((5.0, 3.0));
            (
                Some(("spike", at, at + secs)),
                Some((at, at + secs, factor)),
            )
        }
    };
    let load = Load {
        rate: args.rate,
        duration: duration.max(window.map_or(0.0, |w| w.2 + 1.0)),
        spike,
        ab: kind == Kind::Ab,
        poison_every: poison_every(args.poison_share),
    };
    let dlq_before = depth(p);
    let started = Instant::now();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let stop_sampling = CancellationToken::new();
    let sampler = spawn_sampler(p, started, sent.clone(), stop_sampling.clone());
    let driver = tokio::spawn(drive(p.addr, load, started, sent.clone()));
    let events = disturb(kind, p, window, started).await?;
    driver.await??;
    let drain = drain(p, &sent, dlq_before, Duration::from_secs(args.timeout_s)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_sampling.cancel();
    let samples = sampler.await?;
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let timeline = Timeline {
        sent,
        samples,
        windows: window
            .map(|(label, from_s, _)| Window {
                label: label.to_string(),
                from_s,
                to_s: events.map_or(from_s, |e| e.0),
            })
            .into_iter()
            .collect(),
    };
    let mut o = judge(kind, timeline, drain, p).await?;
    if kind == Kind::WorkerOutage
        && let Some((_, rejoin)) = events
    {
        o.figures["rejoin_s"] = serde_json::json!((rejoin * 10.0).round() / 10.0);
    }
    Ok(o)
}

/// The DLQ's depth, read on a blocking thread.
fn depth(p: &Pipeline) -> i64 {
    tokio::task::block_in_place(|| p.dlq_depth())
}

fn poison_every(share: f64) -> usize {
    if share > 0.0 {
        (1.0 / share).round().max(1.0) as usize
    } else {
        usize::MAX
    }
}

/// Sends requests on the schedule of `load`, each on its own task.
async fn drive(
    addr: std::net::SocketAddr,
    load: Load,
    started: Instant,
    sent: Arc<Mutex<Vec<Sent>>>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()?;
    let mut tasks = tokio::task::JoinSet::new();
    let (mut t, mut i, mut outbox) = (0.0_f64, 0usize, 0usize);
    while t < load.duration {
        tokio::time::sleep_until((started + Duration::from_secs_f64(t)).into()).await;
        let route = if load.ab && i % 2 == 1 {
            Route::Baseline
        } else {
            Route::Outbox
        };
        let poison = route == Route::Outbox && outbox % load.poison_every == load.poison_every / 2;
        if route == Route::Outbox {
            outbox += 1;
        }
        tasks.spawn(request(
            http.clone(),
            addr,
            i,
            route,
            poison,
            t,
            sent.clone(),
        ));
        i += 1;
        t += 1.0 / load.rate_at(t).max(1.0);
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// One redirect request, recorded in `sent`.
async fn request(
    http: reqwest::Client,
    addr: std::net::SocketAddr,
    i: usize,
    route: Route,
    poison: bool,
    at_s: f64,
    sent: Arc<Mutex<Vec<Sent>>>,
) -> anyhow::Result<()> {
    let path = match route {
        Route::Outbox => format!("http://{addr}/l{}", i % LINKS),
        Route::Baseline => format!("http://{addr}/b/l{}", i % LINKS),
    };
    let mut req = http
        .get(path)
        .header("user-agent", AGENTS[i % AGENTS.len()])
        .header("x-forwarded-for", IPS[i % IPS.len()]);
    if poison {
        req = req.header("x-demo-poison", "1");
    }
    let begun = Instant::now();
    let resp = req.send().await;
    let ms = begun.elapsed().as_secs_f64() * 1000.0;
    let (found, id) = match resp {
        Ok(r) => (
            r.status() == reqwest::StatusCode::FOUND,
            r.headers()
                .get("x-click-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        Err(_) => (false, None),
    };
    sent.lock().unwrap().push(Sent {
        at_s,
        ms,
        route,
        found,
        id,
        poison,
    });
    Ok(())
}

/// Takes the worker or the brokers away for the window and brings them
/// back. Returns when the window ended (seconds after `started`: the
/// restart of the worker, or the brokers answering again) and how long the
/// worker took to get its partitions back.
async fn disturb(
    kind: Kind,
    p: &mut Pipeline,
    window: Option<(&str, f64, f64)>,
    started: Instant,
) -> anyhow::Result<Option<(f64, f64)>> {
    let Some((_, from, to)) = window else {
        return Ok(None);
    };
    let at = |s: f64| tokio::time::sleep_until((started + Duration::from_secs_f64(s)).into());
    let now = || started.elapsed().as_secs_f64();
    at(from).await;
    Ok(Some(match kind {
        Kind::WorkerOutage => {
            p.stop_worker().await?;
            at(to).await;
            let back = now();
            p.start_worker().await?;
            (back, now() - back)
        }
        Kind::BrokerOutage => {
            p.cluster.kill_brokers().await?;
            at(to).await;
            p.cluster.restart_brokers().await?;
            (now(), 0.0)
        }
        Kind::Spike | Kind::Ab => {
            at(to).await;
            (now(), 0.0)
        }
    }))
}

/// Waits until every click sent is stored and every poison event is in the
/// DLQ; returns false at `timeout`.
async fn drain(
    p: &Pipeline,
    sent: &Mutex<Vec<Sent>>,
    dlq_before: i64,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let (expected, poison): (Vec<String>, HashSet<String>) = {
        let s = sent.lock().unwrap();
        (
            s.iter()
                .filter_map(|x| x.stored_id().map(str::to_owned))
                .collect(),
            s.iter()
                .filter_map(|x| x.poison_id().map(str::to_owned))
                .collect(),
        )
    };
    let deadline = Instant::now() + timeout;
    loop {
        let stored: HashSet<String> = p.app.db.click_ids().await?.into_iter().collect();
        let all = expected.iter().all(|id| stored.contains(id));
        // The depth first (cheap); the DLQ's ids only once it could hold them all.
        if all
            && depth(p) - dlq_before >= poison.len() as i64
            && dead_lettered(p, &poison).await? == poison.len()
        {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many of `ids` the DLQ holds (a redelivered poison event may be
/// dead-lettered twice: at least once, so counted by id).
async fn dead_lettered(p: &Pipeline, ids: &HashSet<String>) -> anyhow::Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let dlq = p
        .cluster
        .read_to_end(&p.retry.dlq_topic(crate::TOPIC))
        .await?;
    let found: HashSet<&[u8]> = dlq
        .iter()
        .filter_map(|m| m.header(weir::MESSAGE_ID_HEADER))
        .collect();
    Ok(ids
        .iter()
        .filter(|id| found.contains(id.as_bytes()))
        .count())
}

/// The scenario's figures and whether its claims held.
async fn judge(
    kind: Kind,
    timeline: Timeline,
    drained: bool,
    p: &Pipeline,
) -> anyhow::Result<Outcome> {
    let stored = p.app.db.click_ids().await?;
    let mut counts = std::collections::HashMap::<&str, u32>::new();
    for id in &stored {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let lost = timeline
        .sent
        .iter()
        .filter_map(Sent::stored_id)
        .filter(|id| !counts.contains_key(id))
        .count();
    let poison: HashSet<String> = timeline
        .sent
        .iter()
        .filter_map(|s| s.poison_id().map(str::to_owned))
        .collect();
    let dead_lettered = dead_lettered(p, &poison).await?;
    let duplicate_effects: u32 = counts.values().map(|c| c - 1).sum();
    let not_302 = timeline.sent.iter().filter(|s| !s.found).count();
    let mut figures = json!({
        "requests": timeline.sent.len(),
        "not_302": not_302,
        "lost": lost,
        "duplicate_effects": duplicate_effects,
        "dlq": dead_lettered,
        "expected_dlq": poison.len(),
        "drained": drained,
    });
    let mut ok = lost == 0
        && duplicate_effects == 0
        && not_302 == 0
        && drained
        && dead_lettered == poison.len();
    match (kind, timeline.windows.first()) {
        (Kind::Ab, _) => ab_figures(&timeline, &mut figures),
        (_, Some(w)) => ok &= window_figures(&timeline, w, &mut figures),
        (_, None) => {}
    }
    Ok(Outcome {
        kind,
        timeline,
        figures,
        ok,
    })
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The A/B's latencies: p50 and p99 of each route over the whole run.
fn ab_figures(t: &Timeline, figures: &mut Value) {
    let end = t.sent.iter().map(|s| s.at_s).fold(0.0, f64::max) + 1.0;
    let at = |route, q| round(pct(&mut t.latencies(route, 0.0, end), q));
    let (out, base) = (at(Route::Outbox, 0.99), at(Route::Baseline, 0.99));
    figures["redirect_p99_ms"] = json!(out);
    figures["baseline_p99_ms"] = json!(base);
    figures["redirect_p50_ms"] = json!(at(Route::Outbox, 0.5));
    figures["baseline_p50_ms"] = json!(at(Route::Baseline, 0.5));
    figures["p99_ratio"] = json!((out / base.max(0.1) * 100.0).round() / 100.0);
}

/// An outage's or a spike's figures: latency before and during the window,
/// the backlog's peak and how soon it drained; true when the backlog rose
/// (the queue held the work).
fn window_figures(t: &Timeline, w: &Window, figures: &mut Value) -> bool {
    let p99 = |a, b| round(pct(&mut t.latencies(Route::Outbox, a, b), 0.99));
    figures["p99_before_ms"] = json!(p99(0.0, w.from_s));
    figures["p99_during_ms"] = json!(p99(w.from_s, w.to_s));
    let samples = || t.samples.iter().filter(|s| s.t_s >= w.from_s);
    let peak = samples()
        .map(|s| s.lag.unwrap_or(0).max(s.outbox_backlog))
        .max()
        .unwrap_or(0);
    figures["backlog_peak_messages"] = json!(peak);
    figures["outbox_peak"] = json!(samples().map(|s| s.outbox_backlog).max().unwrap_or(0));
    let oldest = samples()
        .map(|s| s.oldest_unprocessed_ms)
        .max()
        .unwrap_or(0);
    figures["oldest_unprocessed_peak_s"] = json!(round(oldest as f64 / 1000.0));
    // Drained: the backlog back at its level before the window (new clicks
    // keep arriving meanwhile); unknown while the brokers cannot say.
    let level = |s: &Sample| s.lag.unwrap_or(i64::MAX / 2) + s.outbox_backlog;
    let steady = t
        .samples
        .iter()
        .filter(|s| s.t_s < w.from_s)
        .map(level)
        .max()
        .unwrap_or(0)
        + 5;
    let after = |f: &dyn Fn(&Sample) -> bool| {
        samples()
            .find(|s| s.t_s >= w.to_s && f(s))
            .map(|s| round(s.t_s - w.to_s))
    };
    figures["backlog_drained_after_s"] = json!(after(&|s| level(s) <= steady));
    // The outbox empty again (the relay caught up).
    figures["outbox_empty_after_s"] = json!(after(&|s| s.outbox_backlog == 0));
    figures["backlog_rose"] = json!(peak > 0);
    peak > 0
}
