//! The load driver: redirect requests against the service, a share of them
//! marked poison.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Instant;

use futures::StreamExt;

use crate::{AGENTS, Args, IPS, LINKS};

/// What the load driver sent: redirect latencies, the click IDs that must be
/// processed, and how many poison events must end in the DLQ.
pub(crate) struct Load {
    pub(crate) redirect_ms: Vec<f64>,
    pub(crate) expected: BTreeSet<String>,
    pub(crate) poison_count: i64,
}

/// Sends `args.events` redirect requests to `addr`, `args.concurrency` at a time.
pub(crate) async fn drive(addr: SocketAddr, args: &Args) -> anyhow::Result<Load> {
    let poison_every = if args.poison_share > 0.0 {
        (1.0 / args.poison_share).round() as usize
    } else {
        usize::MAX
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let bar = indicatif::ProgressBar::new(args.events as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} {bar:40} {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("requests");
    let results: Vec<anyhow::Result<(f64, bool, String)>> = futures::stream::iter(0..args.events)
        .map(|i| {
            let http = http.clone();
            let bar = bar.clone();
            async move {
                let poison = i % poison_every == poison_every / 2;
                let mut req = http
                    .get(format!("http://{addr}/l{}", i % LINKS))
                    .header("user-agent", AGENTS[i % AGENTS.len()])
                    .header("x-forwarded-for", IPS[i % IPS.len()])
                    .header("referer", "https://news.example/");
                if poison {
                    req = req.header("x-demo-poison", "1");
                }
                let t = Instant::now();
                let resp = req.send().await?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                anyhow::ensure!(
                    resp.status() == reqwest::StatusCode::FOUND,
                    "redirect answered {}",
                    resp.status()
                );
                let id = resp
                    .headers()
                    .get("x-click-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                bar.inc(1);
                Ok((ms, poison, id))
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let mut redirect_ms = Vec::new();
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut poison_count = 0i64;
    for r in results {
        let (ms, poison, id) = r?;
        redirect_ms.push(ms);
        if poison {
            poison_count += 1;
        } else {
            expected.insert(id);
        }
    }
    Ok(Load {
        redirect_ms,
        expected,
        poison_count,
    })
}
