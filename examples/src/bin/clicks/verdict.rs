//! The verdict: lost, duplicated and misrouted events, computed from the
//! `clicks` table and the DLQ topic themselves, and the summary printed.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::db::Db;
use crate::{Args, pct};

/// What the verdict is computed from.
pub(crate) struct Inputs<'a> {
    pub(crate) args: &'a Args,
    pub(crate) db: &'a Db,
    pub(crate) db_desc: &'a str,
    /// `mock`, `kafka` or `external`.
    pub(crate) kafka: &'a str,
    pub(crate) expected: &'a BTreeSet<String>,
    pub(crate) poison_count: i64,
    pub(crate) dlq: i64,
    pub(crate) redirect_ms: &'a mut Vec<f64>,
    pub(crate) retried: u64,
    pub(crate) duplicates_sent: usize,
    pub(crate) duplicates_absorbed: u64,
    pub(crate) drained: bool,
    pub(crate) started: Instant,
}

/// Prints the summary (and its JSON with `--json`); true when nothing was
/// lost, applied twice or misrouted.
pub(crate) async fn report(i: Inputs<'_>) -> anyhow::Result<bool> {
    let rows = i.db.clicks().await?;
    let mut counts: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    let mut e2e = Vec::new();
    for (id, clicked, processed) in &rows {
        *counts.entry(id.as_str()).or_default() += 1;
        e2e.push((processed - clicked) as f64);
    }
    let duplicate_effects: i64 = counts.values().map(|c| c - 1).sum();
    let lost = i
        .expected
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    let unexpected = counts
        .keys()
        .filter(|id| !i.expected.contains(**id))
        .count();
    let dlq = i.dlq;
    let summary = serde_json::json!({
        "events": i.args.events,
        "processed": counts.len(),
        "retried": i.retried,
        "dlq": dlq,
        "expected_dlq": i.poison_count,
        "duplicates_sent": i.duplicates_sent,
        "duplicates_absorbed": i.duplicates_absorbed,
        "duplicate_effects": duplicate_effects,
        "lost": lost,
        "unexpected": unexpected,
        "redirect_p50_ms": (pct(i.redirect_ms, 0.5) * 10.0).round() / 10.0,
        "redirect_p99_ms": (pct(i.redirect_ms, 0.99) * 10.0).round() / 10.0,
        "end_to_end_p50_ms": pct(&mut e2e, 0.5),
        "end_to_end_p99_ms": pct(&mut e2e, 0.99),
        "drained": i.drained,
        "database": i.db_desc,
        "kafka": i.kafka,
        "duration_s": (i.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    println!("click pipeline summary");
    for k in [
        "events",
        "processed",
        "retried",
        "dlq",
        "expected_dlq",
        "duplicates_sent",
        "duplicates_absorbed",
        "duplicate_effects",
        "lost",
        "redirect_p50_ms",
        "redirect_p99_ms",
        "end_to_end_p50_ms",
        "end_to_end_p99_ms",
        "duration_s",
    ] {
        println!("  {k:<22} {}", summary[k]);
    }
    if i.args.json {
        println!("{summary}");
    }
    Ok(lost == 0 && duplicate_effects == 0 && unexpected == 0 && dlq == i.poison_count)
}
