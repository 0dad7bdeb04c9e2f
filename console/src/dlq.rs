//! Retry tiers and DLQs: depths, a DLQ's messages, one message, replays.

use std::collections::HashMap;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use maud::{Markup, html};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use weir::dlq::{DlqFilter, DlqMessage, ReplayOptions, counts_by_class, earlier_copies};

use crate::App;
use crate::auth::Session;
use crate::groups::enc;
use crate::web::{
    AppState, Page, PageError, audit, blocking, check_action, csrf_field, field, form, layout, time,
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A retry tier or DLQ and how many messages it holds.
struct TopicDepth {
    name: String,
    dlq: bool,
    partitions: usize,
    depth: i64,
}

fn is_dlq(app: &App, t: &str) -> bool {
    if app.settings.dlq_topics.is_empty() {
        t.ends_with(".dlq")
    } else {
        app.settings.dlq_topics.iter().any(|d| d == t)
    }
}

pub(crate) async fn topics(State(app): AppState, Extension(s): Extension<Session>) -> Page {
    let c = app.client.clone();
    let configured = app.settings.dlq_topics.clone();
    let all = blocking(move || {
        let mut cc = c.clone();
        cc.set("group.id", "weir-console");
        let consumer: BaseConsumer = cc.create().map_err(|source| weir::WeirError::Kafka {
            context: "creating the console's client".into(),
            source,
        })?;
        let md =
            consumer
                .fetch_metadata(None, TIMEOUT)
                .map_err(|source| weir::WeirError::Kafka {
                    context: "fetching the cluster's topics".into(),
                    source,
                })?;
        let mut out = Vec::new();
        for t in md.topics() {
            let name = t.name();
            let wanted = name.contains(".retry.")
                || name.ends_with(".dlq")
                || configured.iter().any(|d| d == name);
            if !wanted || t.error().is_some() {
                continue;
            }
            let mut depth = 0;
            for p in t.partitions() {
                if let Ok((lo, hi)) = consumer.fetch_watermarks(name, p.id(), TIMEOUT) {
                    depth += (hi - lo).max(0);
                }
            }
            out.push((name.to_string(), t.partitions().len(), depth));
        }
        out.sort();
        Ok(out)
    })
    .await?;
    let rows: Vec<TopicDepth> = all
        .into_iter()
        .map(|(name, partitions, depth)| TopicDepth {
            dlq: is_dlq(&app, &name),
            name,
            partitions,
            depth,
        })
        .collect();
    Ok(layout(
        "Retry tiers & DLQs",
        Some(&s),
        html! {
            h1 { "Retry tiers and DLQs" }
            table #topics {
                tr { th { "Topic" } th { "Kind" } th { "Partitions" } th { "Depth" } }
                @for r in &rows {
                    tr {
                        td { @if r.dlq { a href=(format!("/dlq/{}", enc(&r.name))) { (r.name) } } @else { (r.name) } }
                        td { @if r.dlq { "DLQ" } @else { "retry tier" } }
                        td.num { (r.partitions) }
                        td.num { (r.depth) }
                    }
                }
            }
            @if rows.is_empty() { p.muted { "No retry tier (`*.retry.*`) or DLQ (`*.dlq`) topic on this cluster." } }
            p.muted { "Depth: messages retained (high minus low watermark, all partitions), as Weir's " code { "weir_dlq_depth" } " counts them." }
        },
    ))
}

/// The filter of a DLQ page's query (or form): parsed with messages for a person.
fn parse_filter(q: &[(String, String)]) -> Result<DlqFilter, PageError> {
    let t = |name: &str| -> Result<Option<i64>, PageError> {
        field(q, name)
            .map(|v| {
                humantime::parse_rfc3339_weak(v)
                    .map(|t| {
                        t.duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as i64)
                            .unwrap_or(0)
                    })
                    .map_err(|_| {
                        PageError::bad_input(format!(
                            "{name} `{v}` is not a time: use RFC 3339, such as 2026-12-06T10:00:00Z"
                        ))
                    })
            })
            .transpose()
    };
    let s = |name: &str| field(q, name).map(String::from);
    Ok(DlqFilter {
        error_class: s("class"),
        reason: s("reason"),
        original_topic: s("original_topic"),
        key: field(q, "key").map(|k| k.as_bytes().to_vec()),
        since_ms: t("since")?,
        until_ms: t("until")?,
        ..DlqFilter::default()
    })
}

const FILTER_FIELDS: [&str; 6] = ["class", "reason", "original_topic", "key", "since", "until"];

async fn read(
    app: &App,
    topic: &str,
    filter: DlqFilter,
    limit: usize,
) -> Result<Vec<DlqMessage>, PageError> {
    Ok(weir::dlq::read_dlq(&app.client, topic, &filter, Some(limit)).await?)
}

fn key_text(m: &DlqMessage) -> String {
    match &m.raw.key {
        None => String::new(),
        Some(k) => {
            let s = String::from_utf8_lossy(k);
            s.chars().take(64).collect()
        }
    }
}

pub(crate) async fn list(
    State(app): AppState,
    Extension(s): Extension<Session>,
    Path(topic): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Page {
    let filter = parse_filter(&q)?;
    let limit = app.settings.dlq_page_limit;
    let msgs = read(&app, &topic, filter, limit + 1).await?;
    let truncated = msgs.len() > limit;
    let msgs = &msgs[..msgs.len().min(limit)];
    let counts = counts_by_class(msgs);
    let earlier = earlier_copies(msgs);
    let v = |name: &str| field(&q, name).unwrap_or("").to_string();
    Ok(layout(
        &topic,
        Some(&s),
        html! {
            h1 { "DLQ " code { (topic) } }
            form #filter method="get" action=(format!("/dlq/{}", enc(&topic))) {
                fieldset {
                    legend { "Filter" }
                    label { "Class " input #class type="text" name="class" value=(v("class")); }
                    label { "Reason " input type="text" name="reason" value=(v("reason")) placeholder="terminal, retries_exhausted"; }
                    label { "Original topic " input type="text" name="original_topic" value=(v("original_topic")); }
                    label { "Key " input type="text" name="key" value=(v("key")); }
                    label { "Since " input type="text" name="since" value=(v("since")) placeholder="RFC 3339"; }
                    label { "Until " input type="text" name="until" value=(v("until")) placeholder="RFC 3339"; }
                    button #apply-filter type="submit" { "Filter" }
                }
            }
            p #count { strong { (msgs.len()) } " message(s)" @if truncated { " (the first " (limit) "; narrow the filter)" } }
            table #classes {
                tr { th { "Error class" } th { "Messages" } }
                @for (c, n) in &counts { tr { td { (c) } td.num { (n) } } }
            }
            form #replay method="post" action=(format!("/dlq/{}/replay", enc(&topic))) {
                (csrf_field(&s))
                @for name in FILTER_FIELDS {
                    @if let Some(val) = field(&q, name) { input type="hidden" name=(name) value=(val); }
                }
                table #messages {
                    tr {
                        @if app.settings.actions { th { "Select" } }
                        th { "Coordinates" } th { "Dead-lettered" } th { "Class" } th { "Reason" }
                        th { "Original" } th { "Attempts" } th { "Key" } th { "Error" }
                    }
                    @for (m, e) in msgs.iter().zip(&earlier) {
                        tr {
                            @if app.settings.actions {
                                td { input type="checkbox" name="sel" value=(format!("{}:{}", m.raw.partition, m.raw.offset)); }
                            }
                            td { a href=(format!("/dlq/{}/{}/{}", enc(&topic), m.raw.partition, m.raw.offset)) { (m.coordinates()) } }
                            td { (m.dlq_at_ms.or(m.raw.timestamp_ms).map(time).unwrap_or_default()) }
                            td.class { (m.error_class.clone().unwrap_or_default()) }
                            td { (m.reason.clone().unwrap_or_default()) }
                            td { @if let (Some(t), Some(p), Some(o)) = (&m.original_topic, m.original_partition, m.original_offset) { (format!("{t}/{p}@{o}")) } }
                            td.num { (m.attempts.map(|a| a.to_string()).unwrap_or_default()) }
                            td { (key_text(m)) }
                            td { (m.error_message.clone().unwrap_or_default())
                                 @if e.is_some() { " " span.muted { "(a later copy of a message above)" } } }
                        }
                    }
                }
                @if app.settings.actions {
                    fieldset {
                        legend { "Replay: a dry run first, nothing is sent until you confirm" }
                        p.muted { "The selected messages, or with none selected every message the filter shows." }
                        label { "To topic " input type="text" name="to" placeholder="each message's original topic"; }
                        button #replay-dry-run type="submit" { "Dry run replay" }
                    }
                }
            }
        },
    ))
}

/// Parses `partition:offset` selections.
fn parse_selection(f: &[(String, String)]) -> Result<Vec<(i32, i64)>, PageError> {
    f.iter()
        .filter(|(k, _)| k == "sel")
        .map(|(_, v)| {
            v.split_once(':')
                .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
                .ok_or_else(|| {
                    PageError::bad_input(format!("selection `{v}`: expected partition:offset"))
                })
        })
        .collect()
}

pub(crate) async fn replay(
    State(app): AppState,
    Extension(s): Extension<Session>,
    Path(topic): Path<String>,
    body: String,
) -> Page {
    let f = form(&body);
    check_action(&app, &s, &f)?;
    let filter = parse_filter(&f)?;
    let selection = parse_selection(&f)?;
    let to = field(&f, "to").map(String::from);
    let execute = field(&f, "confirm") == Some("yes");
    let mut msgs = read(&app, &topic, filter, app.settings.dlq_page_limit).await?;
    if !selection.is_empty() {
        msgs.retain(|m| selection.contains(&(m.raw.partition, m.raw.offset)));
    }
    let params = serde_json::json!({
        "filter": FILTER_FIELDS.iter().filter_map(|n| field(&f, n).map(|v| (n.to_string(), v.to_string()))).collect::<HashMap<_, _>>(),
        "selected": selection.iter().map(|(p, o)| format!("{p}:{o}")).collect::<Vec<_>>(),
        "to": to,
    });
    let opts = ReplayOptions {
        to_topic: to.clone(),
        rate_per_s: None,
        keep_duplicates: false,
    };
    let weir::dlq::ReplayPlan {
        per_topic: plan,
        no_destination: nowhere,
        duplicates: copies,
    } = weir::dlq::plan_replay(&msgs, &opts);
    let back = html! { p { a href=(format!("/dlq/{}", enc(&topic))) { "Back to " (topic) } } };
    if !execute {
        let summary = plan
            .iter()
            .map(|(t, n)| format!("{n} to {t}"))
            .collect::<Vec<_>>()
            .join(", ");
        audit(
            &app,
            &s.who,
            "dlq_replay_dry_run",
            &topic,
            params,
            &format!("would send {summary}"),
        );
        return Ok(layout(
            "Replay: dry run",
            Some(&s),
            html! {
                h1 { "Dry run: replay from " code { (topic) } }
                p.notice #result { "Nothing is sent yet. " (msgs.len()) " message(s) selected." }
                ul #plan {
                    @for (t, n) in &plan { li { "would send " strong { (n) } " to " code { (t) } } }
                }
                @if !nowhere.is_empty() {
                    p.warn { (nowhere.len()) " without an original topic (give a target topic): " (nowhere.join(", ")) }
                }
                @if !copies.is_empty() {
                    p.muted { (copies.len()) " later copies of a message selected above are not sent: " (copies.join(", ")) }
                }
                table {
                    tr { th { "Coordinates" } th { "Class" } th { "Original" } }
                    @for m in &msgs {
                        tr { td { (m.coordinates()) } td { (m.error_class.clone().unwrap_or_default()) }
                             td { (m.original_topic.clone().unwrap_or_default()) } }
                    }
                }
                @if !plan.is_empty() {
                    form #confirm method="post" action=(format!("/dlq/{}/replay", enc(&topic))) {
                        (csrf_field(&s))
                        @for (k, v) in &f {
                            @if k != "csrf" && k != "confirm" { input type="hidden" name=(k) value=(v); }
                        }
                        input type="hidden" name="confirm" value="yes";
                        button.danger #confirm-replay type="submit" { "Send them" }
                        " " a href=(format!("/dlq/{}", enc(&topic))) { "Cancel" }
                    }
                }
                (back)
            },
        ));
    }
    let producer = weir::Producer::from_client_config(app.client.clone()).map_err(|e| {
        PageError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "Kafka did not answer",
            format!("creating the replay producer: {e}"),
        )
    })?;
    let report = weir::dlq::replay(&producer, &msgs, &opts, |_, _| {}).await;
    let result = match &report.stopped {
        None => format!("sent {}", report.sent),
        Some(stop) => format!(
            "sent {}, stopped at {}: {} ({} not tried)",
            report.sent, stop.at, stop.error, stop.remaining
        ),
    };
    audit(&app, &s.who, "dlq_replay", &topic, params, &result);
    Ok(layout(
        "Replayed",
        Some(&s),
        html! {
            h1 { "Replay from " code { (topic) } }
            @match &report.stopped {
                None => { p.notice #result { "Sent " strong #sent { (report.sent) } " message(s)." } },
                Some(stop) => { p.error #result role="alert" {
                    "Sent " strong #sent { (report.sent) } ", then stopped at " (stop.at) ": " (stop.error)
                    " (" (stop.remaining) " not tried). Run the replay again from there."
                } },
            }
            @if !report.skipped.is_empty() { p.warn { "Skipped (no destination): " (report.skipped.join(", ")) } }
            @if !report.duplicates.is_empty() { p.muted { "Later copies not sent: " (report.duplicates.join(", ")) } }
            (back)
        },
    ))
}

pub(crate) async fn show(
    State(app): AppState,
    Extension(s): Extension<Session>,
    Path((topic, partition, offset)): Path<(String, String, String)>,
) -> Page {
    let bad = || {
        PageError::bad_input(format!(
            "`{partition}/{offset}`: a partition and an offset are whole numbers"
        ))
    };
    let p: i32 = partition.parse().map_err(|_| bad())?;
    let o: i64 = offset.parse().map_err(|_| bad())?;
    let filter = DlqFilter {
        at: Some((p, o)),
        ..DlqFilter::default()
    };
    let msgs = read(&app, &topic, filter, 1).await?;
    let m = msgs.first().ok_or_else(|| {
        PageError::not_found(format!(
            "No message at {topic}/{p}@{o}: check the partition, and that the offset is still retained."
        ))
    })?;
    Ok(message_page(&app, &s, &topic, m))
}

fn message_page(app: &App, s: &Session, topic: &str, m: &DlqMessage) -> Markup {
    let payload_len = m.raw.payload.as_ref().map_or(0, |p| p.len());
    layout(
        &m.coordinates(),
        Some(s),
        html! {
            h1 { "Message " code { (m.coordinates()) } }
            table #failure {
                tr { th { "Written by" } td { (m.format.name()) } }
                tr { th { "Reason" } td { (m.reason.clone().unwrap_or_default()) } }
                tr { th { "Error class" } td { (m.error_class.clone().unwrap_or_default()) } }
                tr { th { "Error" } td { (m.error_message.clone().unwrap_or_default()) } }
                tr { th { "Original" } td { @if let (Some(t), Some(p), Some(o)) = (&m.original_topic, m.original_partition, m.original_offset) { (format!("{t}/{p}@{o}")) } } }
                tr { th { "Attempts" } td { (m.attempts.map(|a| a.to_string()).unwrap_or_default()) } }
                tr { th { "Group that gave up" } td { (m.failed_group.clone().unwrap_or_default()) } }
                tr { th { "Dead-lettered" } td { (m.dlq_at_ms.map(time).unwrap_or_default()) } }
                tr { th { "Message ID" } td { (m.message_id.clone().unwrap_or_default()) } }
                tr { th { "Key" } td { (key_text(m)) } }
            }
            h2 { "Headers" }
            table #headers {
                tr { th { "Name" } th { "Value" } }
                @for h in m.raw.headers.0.iter() {
                    tr { td { (h.key) } td { (h.value.as_ref().map(|v| String::from_utf8_lossy(v).chars().take(512).collect::<String>()).unwrap_or_else(|| "(null)".into())) } }
                }
            }
            h2 { "Payload" }
            @if app.settings.show_payloads {
                pre #payload { (m.raw.payload.as_ref().map(|p| String::from_utf8_lossy(p).chars().take(65_536).collect::<String>()).unwrap_or_default()) }
            } @else {
                p.muted #payload-hidden { (payload_len) " bytes, hidden: payloads may hold personal data. Set " code { "show_payloads = true" } " in [console] to show them." }
            }
            p { a href=(format!("/dlq/{}", enc(topic))) { "Back to " (topic) } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_parse_and_bad_times_say_how_to_fix_them() {
        let f = parse_filter(&q(&[
            ("class", "x"),
            ("key", "k1"),
            ("since", "1970-01-01T00:00:02Z"),
            ("until", ""),
        ]))
        .unwrap();
        assert_eq!(f.error_class.as_deref(), Some("x"));
        assert_eq!(f.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(f.since_ms, Some(2000));
        assert_eq!(f.until_ms, None, "blank is no filter");
        let e = parse_filter(&q(&[("since", "last tuesday")])).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains("RFC 3339"), "{}", e.message);
    }

    fn app(show_payloads: bool, dir: &std::path::Path) -> App {
        let settings = crate::Settings {
            show_payloads,
            audit_log: dir.join("audit.jsonl"),
            ..crate::Settings::default()
        };
        App {
            sessions: crate::auth::Sessions::new(settings.session_ttl),
            audit: crate::audit::AuditLog::open(settings.audit_log.clone()),
            history: Default::default(),
            no_auth: true,
            client: weir::dlq::client_config("127.0.0.1:1"),
            http: reqwest::Client::new(),
            settings,
        }
    }

    #[test]
    fn payloads_show_only_when_allowed_and_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let raw = weir::message::RawMessage {
            topic: "orders.dlq".into(),
            partition: 0,
            offset: 7,
            timestamp_ms: Some(0),
            key: Some(bytes::Bytes::from_static(b"acct-1")),
            payload: Some(bytes::Bytes::from_static(b"<script>card 4111</script>")),
            headers: weir::message::Headers(vec![weir::message::Header {
                key: "weir-error-class".into(),
                value: Some(bytes::Bytes::from_static(b"bad<class>")),
            }]),
        };
        let m = DlqMessage::from_raw(raw);
        let s = Session::bearer();
        let hidden = message_page(&app(false, dir.path()), &s, "orders.dlq", &m).into_string();
        assert!(!hidden.contains("4111"), "payload hidden by default");
        assert!(hidden.contains("26 bytes, hidden"), "{hidden}");
        assert!(hidden.contains("bad&lt;class&gt;"), "headers escaped");
        let shown = message_page(&app(true, dir.path()), &s, "orders.dlq", &m).into_string();
        assert!(
            shown.contains("&lt;script&gt;card 4111"),
            "shown, escaped: {shown}"
        );
        assert!(!shown.contains("<script>"));
    }

    #[test]
    fn selections_parse() {
        assert_eq!(
            parse_selection(&q(&[("sel", "0:5"), ("sel", "1:7"), ("x", "y")])).unwrap(),
            vec![(0, 5), (1, 7)]
        );
        assert!(parse_selection(&q(&[("sel", "0-5")])).is_err());
    }
}
