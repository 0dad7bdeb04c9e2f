//! `weir offsets reset`.

use crate::*;

/// `weir offsets reset`.
pub(crate) async fn run(cmd: OffsetsCmd) -> anyhow::Result<()> {
    let OffsetsCmd::Reset {
        conn,
        group,
        topic,
        partitions,
        to_earliest,
        to_latest,
        to_datetime,
        to_offset,
        shift_by,
        execute,
        force,
        json,
    } = cmd;
    let (client, _) = client_config(&conn)?;
    let to = if to_earliest {
        groups::ResetTo::Earliest
    } else if to_latest {
        groups::ResetTo::Latest
    } else if let Some(d) = &to_datetime {
        groups::ResetTo::Datetime(parse_time(&Some(d.clone()), "to-datetime")?.unwrap_or(0))
    } else if let Some(o) = to_offset {
        groups::ResetTo::Offset(o)
    } else if let Some(s) = shift_by {
        groups::ResetTo::ShiftBy(s)
    } else {
        anyhow::bail!(
            "choose a target: --to-earliest, --to-latest, --to-datetime, --to-offset or --shift-by"
        );
    };
    let (g, t) = (group.clone(), topic.clone());
    let plan = blocking(move || {
        groups::reset_offsets(&client, &g, &t, partitions.as_deref(), &to, execute, force)
    })
    .await??;
    let plan = match plan {
        Ok(p) => p,
        Err(why) if why.contains("does not exist") => return Err(NotFound(why).into()),
        Err(why) => return Err(Refused(why).into()),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "group": group, "topic": topic, "executed": execute, "plan": plan })
        );
    } else {
        println!(
            "{} for group {group} on {topic}:",
            if execute {
                "reset"
            } else {
                "dry run (add --execute to commit)"
            }
        );
        println!(
            "{:>5} {:>12} {:>12} {:>12} {:>10}  NOTE",
            "PART", "OLD", "NEW", "REPROCESSED", "SKIPPED"
        );
        for l in &plan {
            println!(
                "{:>5} {:>12} {:>12} {:>12} {:>10}  {}",
                l.partition,
                l.old.map_or("-".into(), |o| o.to_string()),
                l.new,
                l.reprocessed,
                l.skipped,
                l.note.clone().unwrap_or_default()
            );
        }
    }
    Ok(())
}
