//! One claimed batch: rows to records, sends chained per key, and what
//! became of each row (published, failed, quarantined).

use bytes::Bytes;
use weir::producer::{Delivery, ProduceError, Record};

use super::*;

/// What became of a batch's sends.
pub(super) struct Outcome {
    /// Delivered rows to mark, with their creation time.
    pub(super) published: Vec<(i64, i64)>,
    /// Rows the broker refuses for good: marked with their error.
    pub(super) quarantined: Vec<(i64, String)>,
    /// Rows to try again: those that failed transiently, and every later row
    /// of their keys (a key stops at its first unsent row).
    pub(super) failed: Vec<(i64, String)>,
    /// The first transient error, for the caller's back-off.
    pub(super) first_error: Option<weir::producer::ProduceError>,
}

/// Sorts a batch's results in id order: a delivered row is published unless an
/// earlier row of its key is to be sent again; a permanent error quarantines
/// its row; a transient error leaves the row, and the rest of its key, for
/// the next claim.
pub(super) fn settle(
    records: &[(i64, i64, Record)],
    results: Vec<Option<Result<Delivery, ProduceError>>>,
) -> Outcome {
    let mut out = Outcome {
        published: Vec::new(),
        quarantined: Vec::new(),
        failed: Vec::new(),
        first_error: None,
    };
    let mut stopped: std::collections::HashMap<(String, Bytes), String> = Default::default();
    for ((id, created, rec), res) in records.iter().zip(results) {
        let key = rec.key.clone().map(|k| (rec.topic.clone(), k));
        if let Some(why) = key.as_ref().and_then(|k| stopped.get(k)) {
            out.failed
                .push((*id, format!("waits for an earlier row of its key: {why}")));
            continue;
        }
        let Some(res) = res else {
            out.failed.push((
                *id,
                "not sent: an earlier row of its key was not sent".into(),
            ));
            continue;
        };
        match res {
            Ok(_) => out.published.push((*id, *created)),
            Err(e) if !e.is_retryable() => out.quarantined.push((*id, e.to_string())),
            Err(e) => {
                let msg = e.to_string();
                if let Some(k) = key {
                    stopped.insert(k, msg.clone());
                }
                out.failed.push((*id, msg));
                if out.first_error.is_none() {
                    out.first_error = Some(e);
                }
            }
        }
    }
    out
}

/// A batch's rows (indices, in id order) grouped into chains that are sent
/// one row after another: one chain per (topic, key), one per keyless row.
pub(super) fn key_chains(records: &[(i64, i64, Record)]) -> Vec<Vec<usize>> {
    let mut chains: Vec<Vec<usize>> = Vec::new();
    let mut by_key: std::collections::HashMap<(&str, &[u8]), usize> = Default::default();
    for (i, (_, _, rec)) in records.iter().enumerate() {
        match rec.key.as_deref() {
            Some(k) => {
                let at = *by_key.entry((rec.topic.as_str(), k)).or_insert_with(|| {
                    chains.push(Vec::new());
                    chains.len() - 1
                });
                chains[at].push(i);
            }
            None => chains.push(vec![i]),
        }
    }
    chains
}

/// A claimed row ready to send: its id, creation time (epoch ms) and record.
pub(super) type Sendable = (i64, i64, Record);

/// The records of claimed rows (id, creation time, record), and the rows
/// whose stored headers are corrupt (marked with their error, never sent).
pub(super) fn to_records(rows: &[Row]) -> (Vec<Sendable>, Vec<(i64, String)>) {
    let mut poison = Vec::new();
    let mut records = Vec::with_capacity(rows.len());
    for r in rows {
        match crate::codec::decode(&r.headers) {
            Ok(headers) => {
                let mut rec = Record::to(r.topic.clone());
                rec.key = r.key.clone().map(Bytes::from);
                rec.payload = r.payload.clone().map(Bytes::from);
                rec.headers = headers;
                records.push((r.id, r.created_ms, rec));
            }
            Err(e) => {
                tracing::error!(id = r.id, topic = %r.topic, error = %e, "outbox row has corrupt headers; marked and skipped, not published");
                poison.push((r.id, e.to_string()));
            }
        }
    }
    (records, poison)
}

/// One producer span per row, linked to the request that enqueued it; the
/// message keeps the request's context, so the consumer's span joins the
/// request's trace.
pub(super) fn publish_span(id: i64, rec: &Record) -> tracing::Span {
    let span = tracing::info_span!(
        "weir.outbox.publish",
        otel.name = %format_args!("{} publish", rec.topic),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %rec.topic,
        weir.outbox.id = id,
    );
    if !span.is_disabled()
        && let Some(tp) = rec.headers.get(weir::trace::TRACEPARENT)
    {
        let mut link = weir::Headers::default();
        link.push(
            weir::trace::LINK_TRACEPARENT,
            bytes::Bytes::copy_from_slice(tp),
        );
        weir::trace::attach(&span, &link);
    }
    span
}
