//! `weir groups list` and `weir groups describe`.

use crate::*;

/// `weir groups list`.
pub(crate) async fn list(conn: Conn, json: bool) -> anyhow::Result<()> {
    let (client, _) = client_config(&conn)?;
    let gs = blocking(move || groups::list_groups(&client, None)).await??;
    if json {
        println!("{}", serde_json::json!({ "groups": gs }));
    } else {
        println!(
            "{:<40} {:<9} {:<20} {:>8}",
            "GROUP", "TYPE", "STATE", "MEMBERS"
        );
        for g in &gs {
            println!(
                "{:<40} {:<9} {:<20} {:>8}",
                g.name,
                g.group_type,
                g.state,
                g.members.len()
            );
        }
    }
    Ok(())
}

/// `weir groups describe`.
pub(crate) async fn describe(
    conn: Conn,
    group: String,
    topic: Vec<String>,
    json: bool,
) -> anyhow::Result<()> {
    let (client, _) = client_config(&conn)?;
    let c2 = client.clone();
    let g = group.clone();
    let (info, membership_error) =
        match blocking(move || groups::list_groups(&c2, Some(&g))).await? {
            Ok(gs) => (
                gs.into_iter()
                    .find(|x| x.name == group && x.state != "Dead"),
                None,
            ),
            // Some brokers (tansu, librdkafka's mock) do not answer
            // ListGroups: report positions and lag without membership.
            Err(e) if !topic.is_empty() => (None, Some(e.to_string())),
            Err(e) => return Err(e.into()),
        };
    let mut topics = topic.clone();
    if topics.is_empty()
        && let Some(i) = &info
    {
        let set: std::collections::BTreeSet<String> = i
            .members
            .iter()
            .flat_map(|m| m.assignment.keys().cloned())
            .collect();
        topics = set.into_iter().collect();
    }
    if info.is_none() && topic.is_empty() {
        return Err(NotFound(format!(
            "consumer group `{group}` is unknown to the brokers (it never committed, or its offsets expired); pass --topic to see its position anyway"
        ))
        .into());
    }
    if topics.is_empty() {
        return Err(NotFound(format!(
            "group `{group}` has no members, so its topics are unknown: pass --topic T"
        ))
        .into());
    }
    let g = group.clone();
    let lags = blocking(move || groups::describe_lag(&client, &g, &topics)).await??;
    let total: i64 = lags.iter().map(|l| l.lag).sum();
    if json {
        println!(
            "{}",
            serde_json::json!({ "group": group, "info": info, "membership_error": membership_error, "lag": total, "partitions": lags })
        );
    } else {
        match &info {
            Some(i) => println!(
                "group {group}: {} ({} protocol, {} member(s), assignor {})",
                i.state,
                i.group_type,
                i.members.len(),
                i.protocol
            ),
            None => match &membership_error {
                Some(e) => println!("group {group}: membership unavailable ({e})"),
                None => println!("group {group}: not known to the brokers"),
            },
        }
        if let Some(i) = &info {
            for m in &i.members {
                let instance = m
                    .instance_id
                    .as_deref()
                    .map(|id| format!(" instance {id}"))
                    .unwrap_or_default();
                print!(
                    "  member {}@{}{instance} owns {:?}",
                    m.client_id, m.host, m.assignment
                );
                match &m.target_assignment {
                    Some(t) if *t != m.assignment => println!(" (reconciling to {t:?})"),
                    _ => println!(),
                }
            }
        }
        println!(
            "{:<30} {:>5} {:>12} {:>12} {:>10} {:>14}",
            "TOPIC", "PART", "COMMITTED", "LOG-END", "LAG", "OLDEST-AGE"
        );
        for l in &lags {
            println!(
                "{:<30} {:>5} {:>12} {:>12} {:>10} {:>14}",
                l.topic,
                l.partition,
                l.committed.map_or("-".into(), |c| c.to_string()),
                l.high,
                l.lag,
                l.oldest_unconsumed_age_ms
                    .map_or("-".into(), |a| format!("{:.1}s", a as f64 / 1000.0))
            );
        }
        println!("total lag {total}");
    }
    Ok(())
}
