//! `weir inspect`: what holds each partition's commit in a running consumer,
//! read from its `weir-telemetry` endpoint (`/inspect`).

use std::time::Duration;

use anyhow::Context;
use weir::inspect::{KeyDepth, PartitionView, Snapshot};

/// The `/inspect` URL of `endpoint` (`host:port`, `http://host:port` or the full URL).
pub(crate) fn inspect_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    let e = if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    };
    if e.ends_with("/inspect") {
        e
    } else {
        format!("{e}/inspect")
    }
}

/// `weir inspect ENDPOINT [--json] [--watch INTERVAL]`.
pub(crate) async fn run(
    endpoint: String,
    json: bool,
    watch: Option<humantime::Duration>,
) -> anyhow::Result<()> {
    let url = inspect_url(&endpoint);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    loop {
        let body = fetch(&client, &url).await?;
        if json {
            println!("{body}");
        } else {
            let snaps = parse(&body)?;
            print!("{}", render(&snaps, weir::clock::now_ms()));
        }
        let Some(every) = watch else { return Ok(()) };
        tokio::select! {
            _ = tokio::time::sleep(*every) => println!(),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let resp = client.get(url).send().await.with_context(|| {
        format!("cannot reach {url}: is the consumer serving weir-telemetry's endpoint there?")
    })?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .with_context(|| format!("reading {url}"))?;
    if !status.is_success() {
        anyhow::bail!(
            "{url} answered {status}: {} (an endpoint from an older weir-telemetry has no /inspect)",
            body.chars().take(200).collect::<String>()
        );
    }
    Ok(body)
}

/// The snapshots in an `/inspect` answer (`None`: a consumer with none yet).
pub(crate) fn parse(body: &str) -> anyhow::Result<Vec<Option<Snapshot>>> {
    #[derive(serde::Deserialize)]
    struct Answer {
        consumers: Vec<Option<Snapshot>>,
    }
    let a: Answer =
        serde_json::from_str(body).context("the endpoint's answer is not an /inspect document")?;
    Ok(a.consumers)
}

fn key_of(key: &Option<String>, hash: &Option<String>) -> String {
    match (key, hash) {
        (Some(k), _) => k.clone(),
        (None, Some(h)) => format!("#{}", &h[..h.len().min(12)]),
        (None, None) => "-".into(),
    }
}

fn seconds(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn top_keys(keys: &[KeyDepth]) -> String {
    if keys.is_empty() {
        return "-".into();
    }
    keys.iter()
        .map(|k| format!("{}:{}", key_of(&k.key, &k.key_hash), k.queued))
        .collect::<Vec<_>>()
        .join(" ")
}

fn row(p: &PartitionView) -> String {
    let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    let (offset, state, key, attempt, waiting) = match &p.holder {
        Some(h) => (
            h.offset.to_string(),
            format!("{:?}", h.state).to_lowercase(),
            key_of(&h.key, &h.key_hash),
            h.attempt.to_string(),
            seconds(h.waiting_ms),
        ),
        None => (
            "-".into(),
            "idle".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ),
    };
    let mut line = format!(
        "{:<28} {:>4} {:>10} {:>10} {:<8} {:<24} {:>7} {:>9} {:>8} {:>9}  {}",
        p.topic,
        p.partition,
        opt(p.committed),
        offset,
        state,
        key,
        attempt,
        waiting,
        p.finished_above,
        p.in_flight,
        top_keys(&p.top_keys)
    );
    if let Some(h) = &p.halted {
        line.push_str(&format!("\n{:>33} HALTED {h}", ""));
    }
    line
}

/// The table `weir inspect` prints, as of `now_ms`.
pub(crate) fn render(snaps: &[Option<Snapshot>], now_ms: i64) -> String {
    let mut out = String::new();
    for (i, s) in snaps.iter().enumerate() {
        let Some(s) = s else {
            out.push_str(&format!(
                "consumer {i}: no snapshot yet (not started, or before its first commit interval)\n"
            ));
            continue;
        };
        out.push_str(&format!(
            "consumer {i}: group {} ({} ago)\n",
            s.group,
            seconds((now_ms - s.taken_at_ms).max(0))
        ));
        out.push_str(&format!(
            "{:<28} {:>4} {:>10} {:>10} {:<8} {:<24} {:>7} {:>9} {:>8} {:>9}  {}\n",
            "TOPIC",
            "PART",
            "COMMITTED",
            "HOLDER",
            "STATE",
            "KEY",
            "ATTEMPT",
            "WAITING",
            "FINISHED",
            "IN_FLIGHT",
            "TOP_KEYS(queued)"
        ));
        for p in &s.partitions {
            out.push_str(&row(p));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_inspect_urls() {
        assert_eq!(inspect_url("host:9464"), "http://host:9464/inspect");
        assert_eq!(inspect_url("http://h:1/"), "http://h:1/inspect");
        assert_eq!(inspect_url("https://h/inspect"), "https://h/inspect");
    }

    #[test]
    fn a_foreign_answer_is_a_clear_error() {
        let e = parse("<html>").unwrap_err();
        assert!(e.to_string().contains("not an /inspect document"), "{e}");
        assert_eq!(parse(r#"{"consumers":[null]}"#).unwrap(), vec![None]);
    }
}
