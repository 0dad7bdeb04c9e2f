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

use rdkafka::ClientConfig;

use crate::message::RawMessage;

pub mod formats;
mod read;
mod replay;

pub use formats::DlqFormat;
pub use read::{DLQ_STREAM_AHEAD, DlqStream, read_dlq, stream_dlq};
pub use replay::{
    ReplayOptions, ReplayPlan, ReplayReport, ReplayStop, plan_replay, replay, replay_record,
};

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

/// Messages per error class.
pub fn counts_by_class(msgs: &[DlqMessage]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for d in msgs {
        *m.entry(d.error_class.clone().unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::MESSAGE_ID_HEADER;
    use crate::message::Headers;
    use crate::producer::Producer;
    use crate::wire::headers;
    use bytes::Bytes;
    use std::time::Duration;

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
