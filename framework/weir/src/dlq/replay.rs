//! Replaying DLQ messages to their original topics (or another one), each
//! message ID once.

use std::time::Duration;

use bytes::Bytes;

use super::{DlqFormat, DlqMessage, earlier_copies};
use crate::message::{Header, Headers};
use crate::producer::{Producer, Record};
use crate::wire::headers;

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Send to this topic instead of each message's original topic.
    pub to_topic: Option<String>,
    /// At most this many messages per second (`None`: as fast as acknowledged).
    pub rate_per_s: Option<f64>,
    /// Send every copy even when several are copies of one message (see
    /// [`DlqMessage::identity`]); by default only the first copy is sent.
    pub keep_duplicates: bool,
}

/// What a replay of some messages would send, before sending anything (the
/// dry run of `weir dlq replay` and of the console).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayPlan {
    /// Messages per destination topic.
    pub per_topic: std::collections::BTreeMap<String, usize>,
    /// DLQ coordinates of messages with nowhere to go (no original topic
    /// and no target topic).
    pub no_destination: Vec<String>,
    /// DLQ coordinates of later copies of a message planned already, not
    /// sent unless [`ReplayOptions::keep_duplicates`].
    pub duplicates: Vec<String>,
}

/// What [`replay`] would send for `msgs` with `opts` (see [`ReplayPlan`]).
pub fn plan_replay(msgs: &[DlqMessage], opts: &ReplayOptions) -> ReplayPlan {
    let mut plan = ReplayPlan::default();
    for (m, e) in msgs.iter().zip(earlier_copies(msgs)) {
        if e.is_some() && !opts.keep_duplicates {
            plan.duplicates.push(m.coordinates());
            continue;
        }
        match replay_record(m, opts.to_topic.as_deref()) {
            Some(r) => *plan.per_topic.entry(r.topic).or_default() += 1,
            None => plan.no_destination.push(m.coordinates()),
        }
    }
    plan
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Messages sent and acknowledged.
    pub sent: usize,
    /// Messages skipped because their original topic is unknown and no target was given.
    pub skipped: Vec<String>,
    /// DLQ coordinates of later copies of a message already sent in this
    /// replay (not sent unless [`ReplayOptions::keep_duplicates`]).
    pub duplicates: Vec<String>,
    /// Where the replay stopped, when a send failed: the DLQ coordinates of
    /// the message, the error, and how many messages were not tried. Every
    /// message before it was sent (and is counted in `sent`); run the replay
    /// again from there.
    pub stopped: Option<ReplayStop>,
}

/// Why and where a replay stopped early.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplayStop {
    /// DLQ coordinates (`topic/partition@offset`) of the message whose send failed.
    pub at: String,
    /// The send error.
    pub error: String,
    /// Messages not tried, that one included.
    pub remaining: usize,
}

/// The record a replay sends for `m`: same key, payload and message ID, the
/// failure state removed (Weir's, or the failure headers of the framework
/// that wrote it: a fresh attempt count), and
/// [`headers::REPLAYED_FROM`] naming the DLQ coordinates. `None` when there is
/// nowhere to send it (no original topic and no target).
pub fn replay_record(m: &DlqMessage, to_topic: Option<&str>) -> Option<Record> {
    let topic = to_topic
        .map(str::to_owned)
        .or_else(|| m.original_topic.clone())?;
    let hs: Vec<Header> = m
        .raw
        .headers
        .iter()
        .filter(|h| {
            !headers::FAILURE_STATE.contains(&h.key.as_str())
                && h.key != headers::FIRST_FAILURE_MS
                && h.key != headers::REPLAYED_FROM
                && !m.format.is_failure_header(&h.key)
        })
        .cloned()
        .collect();
    let mut hs = Headers(hs);
    // Another framework's message ID (Watermill's UUID) becomes Weir's, so
    // an idempotent processor keys on it.
    if hs.get(crate::id::MESSAGE_ID_HEADER).is_none()
        && let Some(id) = &m.message_id
    {
        hs.push(crate::id::MESSAGE_ID_HEADER, id.clone());
    }
    crate::id::repair_message_id(&mut hs, || m.coordinates());
    // Back to the group that gave up on it only: other groups on the topic
    // processed it already (a DLQ without a failed group: every group sees it).
    // Another framework's group name is not a Weir group's: a team migrating
    // runs Weir under a group of its own, which must see the message.
    if let Some(g) = &m.failed_group
        && m.format == DlqFormat::Weir
    {
        hs.push(headers::FOR_GROUP, g.clone());
    }
    let mut hs = hs.0;
    hs.push(Header {
        key: headers::REPLAYED_FROM.into(),
        value: Some(Bytes::from(m.coordinates())),
    });
    let mut r = Record::to(topic.clone());
    r.key = m.raw.key.clone();
    r.payload = m.raw.payload.clone();
    r.headers = Headers(hs);
    // Back to the partition it came from, so its key's order is where it was.
    if Some(topic.as_str()) == m.original_topic.as_deref() {
        r.partition = m.original_partition;
    }
    Some(r)
}

/// Replays `msgs` (see [`replay_record`]), waiting for each acknowledgement,
/// stopping at the first failed send with a partial report
/// ([`ReplayReport::stopped`]),
/// calling `progress(done, total)` as it goes. Later copies of a message sent
/// already are skipped (listed in [`ReplayReport::duplicates`]) unless
/// [`ReplayOptions::keep_duplicates`]. With an idempotent processor,
/// replaying the same messages twice has one effect: the message ID is kept.
pub async fn replay(
    producer: &Producer,
    msgs: &[DlqMessage],
    opts: &ReplayOptions,
    mut progress: impl FnMut(usize, usize),
) -> ReplayReport {
    let mut report = ReplayReport::default();
    let earlier = earlier_copies(msgs);
    let start = tokio::time::Instant::now();
    let mut paced = 0usize;
    for (i, m) in msgs.iter().enumerate() {
        if earlier[i].is_some() && !opts.keep_duplicates {
            report.duplicates.push(m.coordinates());
            progress(i + 1, msgs.len());
            continue;
        }
        if let Some(rate) = opts.rate_per_s.filter(|r| *r > 0.0) {
            tokio::time::sleep_until(start + Duration::from_secs_f64(paced as f64 / rate)).await;
        }
        paced += 1;
        match replay_record(m, opts.to_topic.as_deref()) {
            Some(r) => match producer.send(r).await {
                Ok(_) => report.sent += 1,
                Err(e) => {
                    report.stopped = Some(ReplayStop {
                        at: m.coordinates(),
                        error: e.to_string(),
                        remaining: msgs.len() - i,
                    });
                    return report;
                }
            },
            None => report.skipped.push(m.coordinates()),
        }
        progress(i + 1, msgs.len());
    }
    report
}
