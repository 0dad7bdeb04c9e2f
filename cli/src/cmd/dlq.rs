//! `weir dlq list`, `show` and `replay`.

use crate::*;

/// Runs a `weir dlq` command.
pub(crate) async fn run(cmd: DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List { conn, filter, json } => list(conn, filter, json).await,
        DlqCmd::Show {
            conn,
            topic,
            partition,
            offset,
            payload,
            schema_registry,
            json,
        } => {
            show(
                conn,
                (topic, partition, offset),
                payload,
                schema_registry,
                json,
            )
            .await
        }
        DlqCmd::Replay {
            conn,
            filter,
            to,
            rate,
            keep_duplicates,
            execute,
            json,
        } => replay_cmd(conn, filter, to, rate, keep_duplicates, execute, json).await,
    }
}

async fn list(conn: Conn, filter: Filter, json: bool) -> anyhow::Result<()> {
    let (client, _) = client_config(&conn)?;
    let msgs = read_dlq(&client, &filter.topic, &dlq_filter(&filter)?, filter.limit).await?;
    let counts = counts_by_class(&msgs);
    let earlier = earlier_copies(&msgs);
    let copies = earlier.iter().filter(|e| e.is_some()).count();
    if json {
        let messages: Vec<_> = msgs
            .iter()
            .zip(&earlier)
            .map(|(m, e)| {
                let mut v = to_json(m, false);
                v["duplicate_of"] = serde_json::json!(e.map(|i| msgs[i].coordinates()));
                v
            })
            .collect();
        let v = serde_json::json!({
            "topic": filter.topic,
            "count": msgs.len(),
            "distinct": msgs.len() - copies,
            "by_class": counts,
            "messages": messages,
        });
        println!("{v}");
    } else {
        print_table(&msgs);
        print_counts(&counts, msgs.len());
        print_formats(&msgs);
        if copies > 0 {
            println!(
                "{copies} of them are later copies of a message listed above (same message ID, dead-lettered again); `dlq replay` sends the first copy only"
            );
        }
    }
    Ok(())
}

async fn show(
    conn: Conn,
    (topic, partition, offset): (String, i32, i64),
    payload: bool,
    schema_registry: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let registry = match (&schema_registry, payload) {
        (Some(url), true) => {
            let mut c = weir_registry::SchemaRegistryConfig::from_env()?.unwrap_or_default();
            c.url = url.clone();
            Some(weir_registry::SchemaRegistry::from_config(c).build()?)
        }
        _ => None,
    };
    let (client, _) = client_config(&conn)?;
    let f = DlqFilter {
        at: Some((partition, offset)),
        ..Default::default()
    };
    let msgs = read_dlq(&client, &topic, &f, Some(1)).await?;
    let Some(m) = msgs.first() else {
        return Err(NotFound(format!(
            "no message at {topic}/{partition}@{offset} (check the partition and that the offset is between the watermarks)"
        ))
        .into());
    };
    let mut v = to_json(m, payload);
    if let Some(r) = &registry {
        use weir::codec::Part;
        v["key_decoded"] = serde_json::json!(super::render::render(r, &m.raw, Part::Key).await);
        v["payload_decoded"] =
            serde_json::json!(super::render::render(r, &m.raw, Part::Value).await);
    }
    if json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
        if !payload {
            println!("(payload hidden: pass --payload to print it)");
        }
    }
    Ok(())
}

async fn replay_cmd(
    conn: Conn,
    filter: Filter,
    to: Option<String>,
    rate: Option<f64>,
    keep_duplicates: bool,
    execute: bool,
    json: bool,
) -> anyhow::Result<()> {
    let (client, _) = client_config(&conn)?;
    let msgs = read_dlq(&client, &filter.topic, &dlq_filter(&filter)?, filter.limit).await?;
    let opts = ReplayOptions {
        to_topic: to.clone(),
        rate_per_s: rate,
        keep_duplicates,
    };
    let weir::dlq::ReplayPlan {
        per_topic: plan,
        no_destination: nowhere,
        duplicates: copies,
    } = weir::dlq::plan_replay(&msgs, &opts);
    if !execute {
        if json {
            println!(
                "{}",
                serde_json::json!({"dry_run": true, "selected": msgs.len(), "plan": plan, "no_destination": nowhere, "duplicates": copies})
            );
        } else {
            println!(
                "dry run: {} message(s) selected from {}",
                msgs.len(),
                filter.topic
            );
            for (t, n) in &plan {
                println!("  would send {n} to {t}");
            }
            if !nowhere.is_empty() {
                println!(
                    "  {} without an original topic (use --to): {:?}",
                    nowhere.len(),
                    nowhere
                );
            }
            if !copies.is_empty() {
                println!(
                    "  {} later copies of a message selected above, not sent (--keep-duplicates sends them): {:?}",
                    copies.len(),
                    copies
                );
            }
            println!("run again with --execute to send them");
        }
        return Ok(());
    }
    let producer = weir::Producer::from_client_config(client.clone())?;
    let bar = indicatif::ProgressBar::new(msgs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = replay(&producer, &msgs, &opts, |done, _| {
        bar.set_position(done as u64)
    })
    .await;
    bar.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::json!({"dry_run": false, "sent": report.sent, "skipped": report.skipped, "duplicates": report.duplicates, "stopped": report.stopped})
        );
    } else {
        println!("replayed {} message(s)", report.sent);
        if !report.skipped.is_empty() {
            println!(
                "skipped (no original topic; use --to): {:?}",
                report.skipped
            );
        }
        if !report.duplicates.is_empty() {
            println!(
                "not sent, later copies of a message replayed above (--keep-duplicates sends them): {:?}",
                report.duplicates
            );
        }
    }
    if let Some(stop) = &report.stopped {
        anyhow::bail!(
            "replay stopped at {} after {} sent: {} ({} message(s) not tried; run it again from there)",
            stop.at,
            report.sent,
            stop.error,
            stop.remaining
        );
    }
    Ok(())
}

fn dlq_filter(f: &Filter) -> anyhow::Result<DlqFilter> {
    Ok(DlqFilter {
        error_class: f.class.clone(),
        reason: f.reason.clone(),
        original_topic: f.original_topic.clone(),
        key: f.key.as_ref().map(|k| k.as_bytes().to_vec()),
        since_ms: parse_time(&f.since, "since")?,
        until_ms: parse_time(&f.until, "until")?,
        partitions: f.partitions.clone(),
        at: None,
    })
}

fn fmt_ms(ms: Option<i64>) -> String {
    ms.and_then(|m| u64::try_from(m).ok())
        .map(|m| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(m),
            )
            .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn to_json(m: &DlqMessage, payload: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "topic": &*m.raw.topic,
        "partition": m.raw.partition,
        "offset": m.raw.offset,
        "message_id": m.message_id,
        "format": m.format,
        "lacks": m.format.lacks(),
        "key": m.raw.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "reason": m.reason,
        "error_class": m.error_class,
        "error_message": m.error_message,
        "attempts": m.attempts,
        "original_topic": m.original_topic,
        "original_partition": m.original_partition,
        "original_offset": m.original_offset,
        "failed_group": m.failed_group,
        "dlq_at_ms": m.dlq_at_ms,
        "payload_bytes": m.raw.payload.as_ref().map(|p| p.len()),
        "headers": m.raw.headers.iter().map(|h| serde_json::json!({
            "key": h.key,
            "value": h.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
        })).collect::<Vec<_>>(),
    });
    if payload {
        v["payload"] = serde_json::json!(
            m.raw
                .payload
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        );
    }
    v
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), ToString::to_string)
}

fn print_table(msgs: &[DlqMessage]) {
    println!(
        "{:<16} {:<22} {:<18} {:>8}  {:<28} {:<38} DEAD-LETTERED",
        "AT", "REASON", "CLASS", "ATTEMPTS", "ORIGINAL", "MESSAGE-ID"
    );
    for m in msgs {
        let original = match (&m.original_topic, m.original_partition, m.original_offset) {
            (None, None, None) => "-".into(),
            (t, p, o) => format!(
                "{}/{}@{}",
                t.as_deref().unwrap_or("?"),
                p.map_or_else(|| "?".to_string(), |v| v.to_string()),
                o.map_or_else(|| "?".to_string(), |v| v.to_string())
            ),
        };
        println!(
            "{:<16} {:<22} {:<18} {:>8}  {:<28} {:<38} {}",
            format!("{}@{}", m.raw.partition, m.raw.offset),
            opt(&m.reason),
            opt(&m.error_class),
            opt(&m.attempts),
            original,
            opt(&m.message_id),
            fmt_ms(m.dlq_at_ms),
        );
    }
}

/// Names the other frameworks' copies in the list and what their format lacks.
fn print_formats(msgs: &[DlqMessage]) {
    let mut by: BTreeMap<&'static str, (usize, &'static [&'static str])> = BTreeMap::new();
    for m in msgs {
        if m.format != weir::dlq::DlqFormat::Weir {
            by.entry(m.format.name()).or_insert((0, m.format.lacks())).0 += 1;
        }
    }
    for (name, (n, lacks)) in by {
        println!(
            "{n} written by {name}: its headers do not say {}",
            lacks.join(", ")
        );
    }
}

fn print_counts(counts: &BTreeMap<String, usize>, total: usize) {
    println!("\n{total} message(s)");
    for (class, n) in counts {
        println!("  {class}: {n}");
    }
}
