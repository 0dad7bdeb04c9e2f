//! Groups: the list, one group's partitions and lag chart, offset resets.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use weir::groups::{GroupInfo, PartitionLag, ResetLine, ResetTo};

use crate::App;
use crate::auth::Session;
use crate::web::{
    AppState, Page, PageError, age, audit, blocking, check_action, csrf_field, field, form, layout,
    sampling_notice,
};

pub(crate) async fn list(State(app): AppState, Extension(s): Extension<Session>) -> Page {
    let c = app.client.clone();
    let groups = blocking(move || weir::groups::list_groups(&c, None)).await?;
    let lags = app.history.latest_lag();
    Ok(layout(
        "Groups",
        Some(&s),
        html! {
            h1 { "Consumer groups" }
            (sampling_notice(&app))
            table #groups {
                tr { th { "Group" } th { "Protocol" } th { "Assignor" } th { "State" } th { "Members" } th { "Lag" } }
                @for g in &groups {
                    tr {
                        td { a href=(format!("/groups/{}", enc(&g.name))) { (g.name) } }
                        td { (g.group_type) }
                        td { (g.protocol) }
                        td { (g.state) }
                        td.num { (g.members.len()) }
                        td.num { @match lags.get(&g.name) { Some(l) => (l), None => span.muted { "…" } } }
                    }
                }
            }
            @if groups.is_empty() { p.muted { "No consumer groups on this cluster." } }
            p.muted { "Lag is the last sample (every " (humantime::format_duration(app.settings.sample_interval)) "); open a group for live figures." }
        },
    ))
}

/// Percent-encodes a path segment.
pub(crate) fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

struct GroupView {
    info: GroupInfo,
    topics: Vec<String>,
    lags: Vec<PartitionLag>,
}

async fn load(app: &App, group: &str) -> Result<GroupView, PageError> {
    let c = app.client.clone();
    let g = group.to_string();
    blocking(move || {
        let found = weir::groups::list_groups(&c, Some(&g))?
            .into_iter()
            .find(|x| x.name == g && x.state != "Dead");
        let Some(info) = found else {
            return Ok(None);
        };
        let topics = crate::sampler::topics_of(&c, &info)?;
        let lags = weir::groups::describe_lag(&c, &g, &topics)?;
        Ok(Some(GroupView { info, topics, lags }))
    })
    .await?
    .ok_or_else(|| {
        PageError::not_found(format!(
            "Unknown consumer group `{group}`: the brokers know no member and no committed offset of it (it never committed, or its offsets expired)."
        ))
    })
}

pub(crate) async fn show(
    State(app): AppState,
    Extension(s): Extension<Session>,
    Path(group): Path<String>,
) -> Page {
    let v = load(&app, &group).await?;
    let total: i64 = v.lags.iter().map(|l| l.lag).sum();
    let now = weir::clock::now_ms();
    app.history
        .add_lag(&group, now, total, app.settings.history.as_millis() as i64);
    let points = app.history.lag(&group);
    let i = &v.info;
    Ok(layout(
        &group,
        Some(&s),
        html! {
            h1 { "Group " code { (group) } }
            (sampling_notice(&app))
            p #summary {
                "State " strong #state { (i.state) } " · " (i.group_type) " protocol"
                @if !i.protocol.is_empty() { " · assignor " (i.protocol) }
                " · " (i.members.len()) " member(s) · total lag " strong #total-lag { (total) }
            }
            (crate::chart::lag_chart(&format!("Lag of {group}"), &points, now, app.settings.history.as_millis() as i64))
            h2 { "Members" }
            @if i.members.is_empty() {
                p.muted { "No members: no consumer of this group is running." }
            } @else {
                table #members {
                    tr { th { "Client" } th { "Host" } th { "Instance" } th { "Owns" } }
                    @for m in &i.members {
                        tr {
                            td { (m.client_id) } td { (m.host) }
                            td { (m.instance_id.clone().unwrap_or_default()) }
                            td { (assignment(&m.assignment))
                                 @if let Some(t) = &m.target_assignment { @if *t != m.assignment { " (moving to " (assignment(t)) ")" } } }
                        }
                    }
                }
            }
            h2 { "Partitions" }
            table #partitions {
                tr { th { "Topic" } th { "Partition" } th { "Committed" } th { "Log end" } th { "Lag" } th { "Oldest unconsumed" } }
                @for l in &v.lags {
                    tr {
                        td { (l.topic) } td.num { (l.partition) }
                        td.num { @match l.committed { Some(c) => (c), None => span.muted { "none" } } }
                        td.num { (l.high) } td.num { (l.lag) }
                        td.num { @match l.oldest_unconsumed_age_ms { Some(a) => (age(a)), None => "-" } }
                    }
                }
            }
            @if v.lags.is_empty() { p.muted { "No topics: the group has no members and no committed offsets." } }
            (reset_form(&app, &s, &group, &v.topics))
        },
    ))
}

fn assignment(a: &std::collections::BTreeMap<String, Vec<i32>>) -> String {
    a.iter()
        .map(|(t, ps)| {
            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
            format!("{t} [{}]", ps.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn reset_form(app: &App, s: &Session, group: &str, topics: &[String]) -> Markup {
    html! {
        h2 { "Reset offsets" }
        @if !app.settings.actions {
            p.muted { "Actions are off (read-only console): set " code { "actions = true" } " in [console] to reset offsets here." }
        } @else if topics.is_empty() {
            p.muted { "No topic to reset." }
        } @else {
            form #reset method="post" action=(format!("/groups/{}/reset", enc(group))) {
                (csrf_field(s))
                fieldset {
                    legend { "A dry run first: nothing is committed until you confirm" }
                    label { "Topic " select name="topic" { @for t in topics { option value=(t) { (t) } } } }
                    label { "To " select #target name="target" {
                        option value="datetime" { "a time (RFC 3339)" }
                        option value="earliest" { "the earliest offset" }
                        option value="latest" { "the log end" }
                        option value="offset" { "an offset" }
                        option value="shift" { "a shift by N" }
                    } }
                    label { "Value " input #value type="text" name="value" placeholder="2026-12-06T10:00:00Z, 1200 or -50"; }
                    label { "Partitions " input type="text" name="partitions" placeholder="all, or 0,3"; }
                    button #reset-dry-run type="submit" { "Dry run" }
                }
            }
        }
    }
}

fn parse_target(target: Option<&str>, value: Option<&str>) -> Result<ResetTo, PageError> {
    let need =
        |what: &str| value.ok_or_else(|| PageError::bad_input(format!("Give a value: {what}.")));
    match target {
        Some("earliest") => Ok(ResetTo::Earliest),
        Some("latest") => Ok(ResetTo::Latest),
        Some("datetime") => {
            let v = need("a time such as 2026-12-06T10:00:00Z")?;
            let t = humantime::parse_rfc3339_weak(v).map_err(|_| {
                PageError::bad_input(format!(
                    "`{v}` is not a time: use RFC 3339, such as 2026-12-06T10:00:00Z"
                ))
            })?;
            let ms = t
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            Ok(ResetTo::Datetime(ms))
        }
        Some("offset") => {
            let v = need("an offset")?;
            v.parse().map(ResetTo::Offset).map_err(|_| {
                PageError::bad_input(format!("`{v}` is not an offset (a whole number)"))
            })
        }
        Some("shift") => {
            let v = need("a shift such as -50")?;
            v.parse().map(ResetTo::ShiftBy).map_err(|_| {
                PageError::bad_input(format!(
                    "`{v}` is not a shift (a whole number, negative to process again)"
                ))
            })
        }
        other => Err(PageError::bad_input(format!(
            "Unknown reset target {:?}: choose datetime, earliest, latest, offset or shift",
            other.unwrap_or("")
        ))),
    }
}

fn parse_partitions(p: Option<&str>) -> Result<Option<Vec<i32>>, PageError> {
    let Some(p) = p.filter(|p| *p != "all") else {
        return Ok(None);
    };
    p.split(',')
        .map(|x| {
            x.trim().parse::<i32>().map_err(|_| {
                PageError::bad_input(format!(
                    "`{p}`: partitions are numbers separated by commas, such as 0,3"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn plan_table(plan: &[ResetLine]) -> Markup {
    html! {
        table #plan {
            tr { th { "Partition" } th { "Committed now" } th { "New" } th { "Processed again" } th { "Skipped" } th { "Note" } }
            @for l in plan {
                tr {
                    td.num { (l.partition) }
                    td.num { @match l.old { Some(o) => (o), None => span.muted { "none" } } }
                    td.num { (l.new) } td.num { (l.reprocessed) } td.num { (l.skipped) }
                    td { (l.note.clone().unwrap_or_default()) }
                }
            }
        }
    }
}

pub(crate) async fn reset(
    State(app): AppState,
    Extension(s): Extension<Session>,
    Path(group): Path<String>,
    body: String,
) -> Result<(StatusCode, Markup), PageError> {
    let f = form(&body);
    check_action(&app, &s, &f)?;
    let topic = field(&f, "topic")
        .ok_or_else(|| PageError::bad_input("Choose a topic."))?
        .to_string();
    let to = parse_target(field(&f, "target"), field(&f, "value"))?;
    let partitions = parse_partitions(field(&f, "partitions"))?;
    let execute = field(&f, "confirm") == Some("yes");
    let params = serde_json::json!({
        "topic": topic,
        "target": field(&f, "target"),
        "value": field(&f, "value"),
        "partitions": partitions,
    });
    let target = format!("{group}/{topic}");
    let (c, g, t, ps, to2) = (
        app.client.clone(),
        group.clone(),
        topic.clone(),
        partitions.clone(),
        to.clone(),
    );
    let outcome = blocking(move || {
        weir::groups::reset_offsets(&c, &g, &t, ps.as_deref(), &to2, execute, false)
    })
    .await?;
    let plan = match outcome {
        Ok(plan) => plan,
        Err(why) => {
            audit(&app, &s.who, "refused", &target, params, &why);
            let status = if why.contains("does not exist") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::CONFLICT
            };
            return Ok((
                status,
                layout(
                    "Reset refused",
                    Some(&s),
                    html! {
                        h1 { "Reset refused" }
                        p.error #refused role="alert" { (why) }
                        p { a href=(format!("/groups/{}", enc(&group))) { "Back to " (group) } }
                    },
                ),
            ));
        }
    };
    let again: i64 = plan.iter().map(|l| l.reprocessed).sum();
    let skipped: i64 = plan.iter().map(|l| l.skipped).sum();
    let summary = format!("{again} processed again, {skipped} skipped");
    audit(
        &app,
        &s.who,
        if execute {
            "offsets_reset"
        } else {
            "offsets_reset_dry_run"
        },
        &target,
        params,
        &summary,
    );
    let body = if execute {
        html! {
            h1 { "Offsets reset" }
            p.notice #result { "Committed for " code { (group) } " on " code { (topic) } ": " (summary) "." }
            (plan_table(&plan))
            p { a href=(format!("/groups/{}", enc(&group))) { "Back to " (group) } }
        }
    } else {
        html! {
            h1 { "Dry run: reset " code { (group) } " on " code { (topic) } }
            p.notice #result { "Nothing is committed yet. Committing would mean " (summary) "." }
            (plan_table(&plan))
            form #confirm method="post" action=(format!("/groups/{}/reset", enc(&group))) {
                (csrf_field(&s))
                @for (k, v) in &f {
                    @if k != "csrf" && k != "confirm" { input type="hidden" name=(k) value=(v); }
                }
                input type="hidden" name="confirm" value="yes";
                p { "The group must have no active members: stop its consumers first. " }
                button.danger #confirm-reset type="submit" { "Commit these offsets" }
                " " a href=(format!("/groups/{}", enc(&group))) { "Cancel" }
            }
        }
    };
    Ok((StatusCode::OK, layout("Reset offsets", Some(&s), body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_parse_with_clear_errors() {
        assert!(matches!(
            parse_target(Some("earliest"), None),
            Ok(ResetTo::Earliest)
        ));
        assert!(matches!(
            parse_target(Some("shift"), Some("-5")),
            Ok(ResetTo::ShiftBy(-5))
        ));
        assert!(matches!(
            parse_target(Some("datetime"), Some("1970-01-01T00:00:01Z")),
            Ok(ResetTo::Datetime(1000))
        ));
        let e = parse_target(Some("datetime"), Some("yesterday")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("RFC 3339"), "{}", e.message);
        assert!(
            parse_target(Some("offset"), None)
                .unwrap_err()
                .message
                .contains("value")
        );
        assert!(parse_target(Some("drop"), None).is_err());
        assert_eq!(parse_partitions(Some("0, 3")).unwrap(), Some(vec![0, 3]));
        assert_eq!(parse_partitions(Some("all")).unwrap(), None);
        assert!(parse_partitions(Some("0;3")).is_err());
    }

    #[test]
    fn names_are_encoded_in_links() {
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
