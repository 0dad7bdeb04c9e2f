//! Reading and replaying a dead-letter topic (the library behind `weir dlq`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use weir::dlq::{DlqFilter, read_dlq, replay, ReplayOptions};
//! use weir::producer::Producer;
//!
//! let client = weir::dlq::client_config("kafka:9092");
//! let filter = DlqFilter { error_class: Some("http_503".into()), ..Default::default() };
//! let msgs = read_dlq(&client, "orders.dlq", &filter, None).await?;
//! let producer = Producer::new("kafka:9092")?;
//! let report = replay(&producer, &msgs, &ReplayOptions::default(), |_done, _total| {}).await;
//! println!("replayed {}", report.sent);
//! if let Some(stop) = report.stopped {
//!     eprintln!("stopped at {}: {} ({} not tried)", stop.at, stop.error, stop.remaining);
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::WeirError;
use crate::message::{Header, Headers, RawMessage};
use crate::producer::{Producer, Record};
use crate::wire::headers;

pub mod formats;
pub use formats::DlqFormat;

/// A message in a DLQ, with its failure headers parsed: Weir's, or those of
/// the framework that wrote it ([`DlqFormat`]), mapped to the same fields.
#[derive(Debug, Clone)]
pub struct DlqMessage {
    /// The message as stored in the DLQ.
    pub raw: RawMessage,
    /// Which framework wrote it; [`DlqFormat::lacks`] lists the fields it never carries.
    pub format: DlqFormat,
    /// `terminal`, `retries_exhausted`, `invalid_retry_headers` (or `None` if not written by Weir).
    pub reason: Option<String>,
    /// Class of the last error.
    pub error_class: Option<String>,
    /// The last error's message (truncated).
    pub error_message: Option<String>,
    /// Where it was first consumed.
    pub original_topic: Option<String>,
    /// Its partition there.
    pub original_partition: Option<i32>,
    /// Its offset there.
    pub original_offset: Option<i64>,
    /// Deliveries made before it was dead-lettered.
    pub attempts: Option<u32>,
    /// The group that gave up.
    pub failed_group: Option<String>,
    /// When it was dead-lettered (epoch ms).
    pub dlq_at_ms: Option<i64>,
    /// Its message ID.
    pub message_id: Option<String>,
}

impl DlqMessage {
    /// Parses the failure headers of `raw`, in the format of the framework
    /// that wrote them (missing or malformed ones are `None`).
    pub fn from_raw(raw: RawMessage) -> Self {
        let format = DlqFormat::detect(&raw.headers);
        let f = format.fields(&raw.headers);
        DlqMessage {
            format,
            reason: f.reason,
            error_class: f.error_class,
            error_message: f.error_message,
            original_topic: f.original_topic,
            original_partition: f.original_partition,
            original_offset: f.original_offset,
            attempts: f.attempts,
            failed_group: f.failed_group,
            dlq_at_ms: f.dlq_at_ms,
            message_id: f.message_id,
            raw,
        }
    }

    /// `dlq-topic/partition@offset`.
    pub fn coordinates(&self) -> String {
        self.raw.coordinates()
    }

    /// Which message this copy stands for: its message ID (kept through retry
    /// tiers and replays; Weir gives a message without one its original
    /// coordinates), else its original coordinates when Weir wrote them. Two
    /// copies with one identity are one message dead-lettered twice, for
    /// example by a consumer that stopped after publishing the copy and before
    /// committing the offset (at-least-once), or a replayed message that
    /// failed again; `None` for a copy without either.
    pub fn identity(&self) -> Option<String> {
        self.message_id.clone().or_else(|| {
            match (
                &self.original_topic,
                self.original_partition,
                self.original_offset,
            ) {
                (Some(t), Some(p), Some(o)) => Some(format!("{t}/{p}@{o}")),
                _ => None,
            }
        })
    }
}

/// For each of `msgs`, the index of an earlier copy of the same message
/// ([`DlqMessage::identity`]), or `None` for a first copy.
pub fn earlier_copies(msgs: &[DlqMessage]) -> Vec<Option<usize>> {
    let mut first: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            let id = m.identity()?;
            match first.entry(id) {
                std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                    None
                }
            }
        })
        .collect()
}

/// Which DLQ messages to select. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter {
    /// Error class equals.
    pub error_class: Option<String>,
    /// DLQ reason equals.
    pub reason: Option<String>,
    /// Original topic equals.
    pub original_topic: Option<String>,
    /// Key equals (bytes).
    pub key: Option<Vec<u8>>,
    /// Dead-lettered at or after (epoch ms; falls back to the record timestamp).
    pub since_ms: Option<i64>,
    /// Dead-lettered before (epoch ms).
    pub until_ms: Option<i64>,
    /// Only these DLQ partitions.
    pub partitions: Option<Vec<i32>>,
    /// Only this exact message (partition, offset).
    pub at: Option<(i32, i64)>,
}

impl DlqFilter {
    /// True when `m` is selected.
    pub fn matches(&self, m: &DlqMessage) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_deref() == Some(w.as_str()))
        };
        let when = m.dlq_at_ms.or(m.raw.timestamp_ms);
        eq(&self.error_class, &m.error_class)
            && eq(&self.reason, &m.reason)
            && eq(&self.original_topic, &m.original_topic)
            && self
                .key
                .as_ref()
                .is_none_or(|k| m.raw.key.as_deref() == Some(k.as_slice()))
            && self.since_ms.is_none_or(|s| when.is_some_and(|w| w >= s))
            && self.until_ms.is_none_or(|u| when.is_some_and(|w| w < u))
            && self
                .partitions
                .as_ref()
                .is_none_or(|ps| ps.contains(&m.raw.partition))
            && self
                .at
                .is_none_or(|(p, o)| m.raw.partition == p && m.raw.offset == o)
    }
}

/// A client config for the DLQ tools: `bootstrap.servers` set; add SASL/TLS
/// properties to it as needed.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Messages the DLQ reader keeps ready ahead of the one being handled: the
/// memory a [`DlqStream`] holds, however long the DLQ is.
pub const DLQ_STREAM_AHEAD: usize = 64;

/// The messages of a DLQ as they are read, in partition-offset order within
/// each partition. The reader thread stays at most [`DLQ_STREAM_AHEAD`]
/// selected messages ahead of the consumer of the stream, so a DLQ of any
/// length is read in constant memory; dropping the stream stops the reader.
pub struct DlqStream {
    rx: tokio::sync::mpsc::Receiver<Result<DlqMessage, WeirError>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for DlqStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlqStream")
            .field("read", &self.read())
            .finish()
    }
}

impl DlqStream {
    /// Messages the reader has fetched from the DLQ so far (selected or not).
    pub fn read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl futures::Stream for DlqStream {
    type Item = Result<DlqMessage, WeirError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for DlqStream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads `dlq_topic` from its low to its high watermark (as of the call) and
/// returns the messages `filter` selects, at most `limit`, all in memory.
/// Uses no consumer group: it commits nothing and disturbs no one. For a DLQ
/// that may be large, [`stream_dlq`] reads it in constant memory.
pub async fn read_dlq(
    client: &ClientConfig,
    dlq_topic: &str,
    filter: &DlqFilter,
    limit: Option<usize>,
) -> Result<Vec<DlqMessage>, WeirError> {
    use futures::StreamExt as _;
    let mut stream = stream_dlq(client, dlq_topic, filter, limit)?;
    let mut out = Vec::new();
    while let Some(m) = stream.next().await {
        out.push(m?);
    }
    Ok(out)
}

/// Like [`read_dlq`], as a [`DlqStream`]: messages arrive as they are read,
/// at most [`DLQ_STREAM_AHEAD`] of them held at a time. Errors (unreachable
/// brokers, an unknown topic, a stalled read) arrive as the stream's last item.
pub fn stream_dlq(
    client: &ClientConfig,
    dlq_topic: &str,
    filter: &DlqFilter,
    limit: Option<usize>,
) -> Result<DlqStream, WeirError> {
    let mut c = client.clone();
    c.set("group.id", "weir-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let brokers = c.get("bootstrap.servers").unwrap_or_default().to_string();
    let consumer: BaseConsumer = c.create().map_err(|source| WeirError::Kafka {
        context: "creating the DLQ reader".into(),
        source,
    })?;
    let consumer = Arc::new(consumer);
    let topic = dlq_topic.to_string();
    let filter = filter.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(DLQ_STREAM_AHEAD);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (reader_stop, reader_read) = (stop.clone(), read.clone());
    let read_all = move |tx: &tokio::sync::mpsc::Sender<Result<DlqMessage, WeirError>>| -> Result<(), WeirError> {
        let timeout = Duration::from_secs(10);
        let parts = crate::kafka::topic_partitions(&consumer, &topic, timeout)
            .map_err(|source| WeirError::Kafka {
                context: format!("fetching metadata of `{topic}` from {brokers} (are the brokers reachable?)"),
                source,
            })?
            .ok_or_else(|| WeirError::UnknownTopic {
                topic: topic.clone(),
                brokers: brokers.clone(),
            })?;
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in parts {
            if filter.partitions.as_ref().is_some_and(|ps| !ps.contains(&p)) {
                continue;
            }
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, timeout)
                .map_err(|source| WeirError::Kafka {
                    context: format!("fetching watermarks of {topic}/{p}"),
                    source,
                })?;
            let start = match filter.at {
                Some((ap, ao)) if ap == p => ao.max(low),
                Some(_) => continue,
                None => low,
            };
            if high > start {
                ends.insert(p, high);
                tpl.add_partition_offset(&topic, p, Offset::Offset(start))
                    .map_err(|source| WeirError::Kafka {
                        context: "building the assignment".into(),
                        source,
                    })?;
            }
        }
        if let Some((ap, _)) = filter.at
            && !ends.contains_key(&ap)
        {
            return Ok(());
        }
        consumer.assign(&tpl).map_err(|source| WeirError::Kafka {
            context: format!("reading `{topic}`"),
            source,
        })?;
        let topic_arc: Arc<str> = Arc::from(topic.as_str());
        let mut sent = 0usize;
        let mut idle = std::time::Instant::now();
        while !ends.is_empty() && !reader_stop.load(std::sync::atomic::Ordering::Relaxed) {
            if limit.is_some_and(|l| sent >= l) {
                break;
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {
                    if idle.elapsed() > Duration::from_secs(30) {
                        return Err(WeirError::Internal(format!(
                            "reading `{topic}` stalled: no message for 30 s before the end offsets {ends:?}"
                        )));
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "reading the DLQ"),
                Some(Ok(m)) => {
                    idle = std::time::Instant::now();
                    reader_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let p = m.partition();
                    let raw = RawMessage {
                        topic: topic_arc.clone(),
                        partition: p,
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        key: m.key().map(Bytes::copy_from_slice),
                        payload: m.payload().map(Bytes::copy_from_slice),
                        headers: crate::runtime::poller::read_headers(&m),
                    };
                    if let Some(&end) = ends.get(&p)
                        && m.offset() + 1 >= end
                    {
                        ends.remove(&p);
                    }
                    let dm = DlqMessage::from_raw(raw);
                    if filter.matches(&dm) {
                        // Waits while the stream's reader is DLQ_STREAM_AHEAD
                        // behind; a dropped stream ends the read.
                        if tx.blocking_send(Ok(dm)).is_err() {
                            return Ok(());
                        }
                        sent += 1;
                        if filter.at.is_some() {
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    };
    std::thread::Builder::new()
        .name("weir-dlq-reader".into())
        .spawn(move || {
            if let Err(e) = read_all(&tx) {
                let _ = tx.blocking_send(Err(e));
            }
        })
        .map_err(|e| WeirError::Internal(format!("spawning the DLQ reader thread: {e}")))?;
    Ok(DlqStream { rx, stop, read })
}

/// Messages per error class.
pub fn counts_by_class(msgs: &[DlqMessage]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for d in msgs {
        *m.entry(d.error_class.clone().unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
    }
    m
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::MESSAGE_ID_HEADER;

    fn dlq_msg(hs: &[(&str, &str)]) -> DlqMessage {
        let mut h = Headers::default();
        for (k, v) in hs {
            h.push(*k, v.to_string());
        }
        DlqMessage::from_raw(RawMessage {
            topic: "orders.dlq".into(),
            partition: 1,
            offset: 9,
            timestamp_ms: Some(5_000),
            key: Some(Bytes::from_static(b"k")),
            payload: Some(Bytes::from_static(b"p")),
            headers: h,
        })
    }

    #[test]
    fn parses_and_filters() {
        let m = dlq_msg(&[
            (headers::ERROR_CLASS, "http_503"),
            (headers::DLQ_REASON, "retries_exhausted"),
            (headers::ORIGINAL_TOPIC, "orders"),
            (headers::ORIGINAL_PARTITION, "3"),
            (headers::ATTEMPT, "4"),
            (headers::DLQ_AT_MS, "10000"),
        ]);
        assert_eq!(m.attempts, Some(4));
        assert_eq!(m.original_partition, Some(3));
        assert!(DlqFilter::default().matches(&m));
        let f = |f: DlqFilter| f.matches(&m);
        assert!(f(DlqFilter {
            error_class: Some("http_503".into()),
            ..Default::default()
        }));
        assert!(!f(DlqFilter {
            error_class: Some("decode".into()),
            ..Default::default()
        }));
        assert!(f(DlqFilter {
            key: Some(b"k".to_vec()),
            ..Default::default()
        }));
        assert!(!f(DlqFilter {
            key: Some(b"x".to_vec()),
            ..Default::default()
        }));
        assert!(f(DlqFilter {
            since_ms: Some(10_000),
            until_ms: Some(10_001),
            ..Default::default()
        }));
        assert!(!f(DlqFilter {
            since_ms: Some(10_001),
            ..Default::default()
        }));
        assert!(f(DlqFilter {
            at: Some((1, 9)),
            ..Default::default()
        }));
        assert!(!f(DlqFilter {
            at: Some((1, 8)),
            ..Default::default()
        }));
        // Malformed headers parse as None, never panic.
        let bad = dlq_msg(&[
            (headers::ATTEMPT, "many"),
            (headers::ORIGINAL_PARTITION, "99999999999"),
        ]);
        assert_eq!(bad.attempts, None);
        assert_eq!(bad.original_partition, None);
    }

    #[tokio::test]
    async fn a_failed_send_stops_the_replay_with_a_partial_report() {
        let cfg = crate::ConsumerConfig::new("127.0.0.1:9", "g", &["orders"]);
        let producer = Producer::for_consumer(&cfg).unwrap();
        let mut big = dlq_msg(&[(headers::ORIGINAL_TOPIC, "orders")]);
        big.raw.payload = Some(Bytes::from(vec![b'x'; 2_000_000]));
        let msgs = vec![big, dlq_msg(&[(headers::ORIGINAL_TOPIC, "orders")])];
        let report = tokio::time::timeout(
            Duration::from_secs(10),
            replay(&producer, &msgs, &ReplayOptions::default(), |_, _| {}),
        )
        .await
        .expect("a local size error answers at once");
        assert_eq!(report.sent, 0);
        let stop = report.stopped.expect("stopped");
        assert_eq!(stop.at, "orders.dlq/1@9");
        assert_eq!(stop.remaining, 2);
        assert!(!stop.error.is_empty());
    }

    #[test]
    fn replay_record_goes_back_to_the_failed_group_only() {
        let m = dlq_msg(&[
            (MESSAGE_ID_HEADER, "id-1"),
            (headers::ORIGINAL_TOPIC, "orders"),
            (headers::FAILED_GROUP, "billing"),
            (headers::FOR_GROUP, "stale"),
        ]);
        let r = replay_record(&m, None).unwrap();
        let for_group: Vec<_> = r
            .headers
            .iter()
            .filter(|h| h.key == headers::FOR_GROUP)
            .collect();
        assert_eq!(for_group.len(), 1);
        assert_eq!(
            r.headers.get_str(headers::FOR_GROUP).unwrap(),
            Some("billing")
        );
        let unknown = dlq_msg(&[(headers::ORIGINAL_TOPIC, "orders")]);
        assert!(
            replay_record(&unknown, None)
                .unwrap()
                .headers
                .get(headers::FOR_GROUP)
                .is_none()
        );
    }

    #[test]
    fn replay_record_resets_failure_state_and_keeps_identity() {
        let m = dlq_msg(&[
            (MESSAGE_ID_HEADER, "id-1"),
            ("traceparent", "00-a-b-01"),
            (headers::ORIGINAL_TOPIC, "orders"),
            (headers::ORIGINAL_PARTITION, "3"),
            (headers::ATTEMPT, "4"),
            (headers::ERROR_CLASS, "x"),
            (headers::DLQ_REASON, "terminal"),
            (headers::FIRST_FAILURE_MS, "1"),
        ]);
        let r = replay_record(&m, None).unwrap();
        assert_eq!(r.topic, "orders");
        assert_eq!(r.partition, Some(3));
        assert_eq!(r.headers.get_str(MESSAGE_ID_HEADER).unwrap(), Some("id-1"));
        assert_eq!(r.headers.get_str("traceparent").unwrap(), Some("00-a-b-01"));
        assert_eq!(
            r.headers.get_str(headers::REPLAYED_FROM).unwrap(),
            Some("orders.dlq/1@9")
        );
        for gone in [
            headers::ATTEMPT,
            headers::ERROR_CLASS,
            headers::DLQ_REASON,
            headers::FIRST_FAILURE_MS,
        ] {
            assert!(r.headers.get(gone).is_none(), "{gone} removed");
        }
        let r2 = replay_record(&m, Some("orders-fixed")).unwrap();
        assert_eq!(r2.topic, "orders-fixed");
        assert_eq!(r2.partition, None);
        assert!(
            replay_record(&dlq_msg(&[]), None).is_none(),
            "nowhere to send"
        );
        let anon = replay_record(&dlq_msg(&[]), Some("t")).unwrap();
        assert_eq!(
            anon.headers.get_str(MESSAGE_ID_HEADER).unwrap(),
            Some("orders.dlq/1@9")
        );
    }

    #[test]
    fn copies_of_one_message_are_found_by_id_then_original_coordinates() {
        let coords = |t: &str, p: &str, o: &str| {
            vec![
                (headers::ORIGINAL_TOPIC, t.to_string()),
                (headers::ORIGINAL_PARTITION, p.to_string()),
                (headers::ORIGINAL_OFFSET, o.to_string()),
            ]
        };
        let with = |hs: Vec<(&str, String)>| {
            let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            dlq_msg(&hs)
        };
        let mut a1 = coords("orders", "0", "5");
        a1.push((MESSAGE_ID_HEADER, "id-a".into()));
        // The same message replayed and failed again: new coordinates, same ID.
        let mut a2 = coords("orders", "1", "40");
        a2.push((MESSAGE_ID_HEADER, "id-a".into()));
        let b = coords("orders", "0", "6");
        let b_again = coords("orders", "0", "6");
        let msgs = vec![
            with(a1),
            with(b),
            with(a2),
            with(vec![]),
            with(b_again),
            with(vec![]),
        ];
        assert_eq!(msgs[0].identity().as_deref(), Some("id-a"));
        assert_eq!(msgs[1].identity().as_deref(), Some("orders/0@6"));
        assert_eq!(msgs[3].identity(), None, "nothing to tell it by");
        assert_eq!(
            earlier_copies(&msgs),
            vec![None, None, Some(0), None, Some(1), None],
            "copies without an identity are never merged"
        );
    }
}
