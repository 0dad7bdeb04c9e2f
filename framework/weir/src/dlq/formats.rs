//! Other frameworks' DLQs: which one wrote a copy (by its headers), and its
//! failure headers mapped to Weir's fields. Teams migrate: `weir dlq
//! list/show/replay` reads a DLQ that Spring Kafka, Karafka, Watermill or
//! Sentry Arroyo wrote. Every value is parsed defensively (a hostile or
//! broken producer chooses them): garbage is `None`, never an error.

use crate::message::Headers;

/// The framework that wrote a DLQ copy, known by its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DlqFormat {
    /// Weir (`weir-*` headers).
    Weir,
    /// Spring for Apache Kafka's `DeadLetterPublishingRecoverer` (`kafka_dlt-*`).
    SpringKafka,
    /// Karafka's (Pro, enhanced) dead letter queue (`source_*`).
    Karafka,
    /// Watermill's `PoisonQueue` middleware (`*_poisoned`).
    Watermill,
    /// Sentry Arroyo's `KafkaDlqProducer` (`original_partition`, `original_offset`).
    Arroyo,
    /// No known failure headers.
    Unknown,
}

/// Spring Kafka's header names (`KafkaHeaders.DLT_*`; partition a 4-byte
/// big-endian int, offset and timestamp 8-byte big-endian longs).
pub mod spring {
    /// Original topic.
    pub const ORIGINAL_TOPIC: &str = "kafka_dlt-original-topic";
    /// Original partition (4-byte big-endian).
    pub const ORIGINAL_PARTITION: &str = "kafka_dlt-original-partition";
    /// Original offset (8-byte big-endian).
    pub const ORIGINAL_OFFSET: &str = "kafka_dlt-original-offset";
    /// Original timestamp (8-byte big-endian epoch ms).
    pub const ORIGINAL_TIMESTAMP: &str = "kafka_dlt-original-timestamp";
    /// The consumer group that failed.
    pub const ORIGINAL_CONSUMER_GROUP: &str = "kafka_dlt-original-consumer-group";
    /// The exception's class name.
    pub const EXCEPTION_FQCN: &str = "kafka_dlt-exception-fqcn";
    /// The exception's cause's class name.
    pub const EXCEPTION_CAUSE_FQCN: &str = "kafka_dlt-exception-cause-fqcn";
    /// The exception's message.
    pub const EXCEPTION_MESSAGE: &str = "kafka_dlt-exception-message";
    /// Attempts, on `@RetryableTopic` copies (4-byte big-endian).
    pub const RETRY_ATTEMPTS: &str = "retry_topic-attempts";
    /// Every header of a Spring DLT copy starts with this.
    pub const PREFIX: &str = "kafka_dlt-";
}

/// Karafka's header names (strings).
pub mod karafka {
    /// Source topic.
    pub const SOURCE_TOPIC: &str = "source_topic";
    /// Source partition.
    pub const SOURCE_PARTITION: &str = "source_partition";
    /// Source offset.
    pub const SOURCE_OFFSET: &str = "source_offset";
    /// The consumer group.
    pub const SOURCE_CONSUMER_GROUP: &str = "source_consumer_group";
    /// Attempts made.
    pub const SOURCE_ATTEMPTS: &str = "source_attempts";
    /// The headers a Karafka DLQ copy carries.
    pub const ALL: &[&str] = &[
        SOURCE_TOPIC,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
        SOURCE_CONSUMER_GROUP,
        SOURCE_ATTEMPTS,
        "source_key",
        "source_trace_id",
    ];
}

/// Watermill's metadata keys (Kafka headers through its marshaler).
pub mod watermill {
    /// The error.
    pub const REASON: &str = "reason_poisoned";
    /// The topic it was consumed from.
    pub const TOPIC: &str = "topic_poisoned";
    /// The handler that failed.
    pub const HANDLER: &str = "handler_poisoned";
    /// The subscriber.
    pub const SUBSCRIBER: &str = "subscriber_poisoned";
    /// The message UUID.
    pub const UUID: &str = "_watermill_message_uuid";
    /// The failure headers of a Watermill poison copy.
    pub const ALL: &[&str] = &[REASON, TOPIC, HANDLER, SUBSCRIBER];
}

/// Sentry Arroyo's header names (decimal strings).
pub mod arroyo {
    /// Original partition.
    pub const ORIGINAL_PARTITION: &str = "original_partition";
    /// Original offset.
    pub const ORIGINAL_OFFSET: &str = "original_offset";
    /// Original topic (only some producers write it).
    pub const ORIGINAL_TOPIC: &str = "original_topic";
    /// The failure headers of an Arroyo DLQ copy.
    pub const ALL: &[&str] = &[ORIGINAL_PARTITION, ORIGINAL_OFFSET, ORIGINAL_TOPIC];
}

/// The failure fields of one copy, whatever wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) reason: Option<String>,
    pub(crate) error_class: Option<String>,
    pub(crate) error_message: Option<String>,
    pub(crate) original_topic: Option<String>,
    pub(crate) original_partition: Option<i32>,
    pub(crate) original_offset: Option<i64>,
    pub(crate) attempts: Option<u32>,
    pub(crate) failed_group: Option<String>,
    pub(crate) dlq_at_ms: Option<i64>,
    pub(crate) message_id: Option<String>,
}

impl DlqFormat {
    /// Which framework wrote a copy with these headers.
    pub fn detect(h: &Headers) -> DlqFormat {
        let has = |n: &str| h.get(n).is_some();
        if has(crate::wire::headers::DLQ_REASON) || has(crate::wire::headers::ORIGINAL_TOPIC) {
            DlqFormat::Weir
        } else if h.iter().any(|x| x.key.starts_with(spring::PREFIX)) {
            DlqFormat::SpringKafka
        } else if has(karafka::SOURCE_TOPIC) && has(karafka::SOURCE_OFFSET) {
            DlqFormat::Karafka
        } else if has(watermill::REASON) {
            DlqFormat::Watermill
        } else if has(arroyo::ORIGINAL_OFFSET) && has(arroyo::ORIGINAL_PARTITION) {
            DlqFormat::Arroyo
        } else {
            DlqFormat::Unknown
        }
    }

    /// A name for people (`Spring Kafka`).
    pub fn name(self) -> &'static str {
        match self {
            DlqFormat::Weir => "Weir",
            DlqFormat::SpringKafka => "Spring Kafka",
            DlqFormat::Karafka => "Karafka",
            DlqFormat::Watermill => "Watermill",
            DlqFormat::Arroyo => "Sentry Arroyo",
            DlqFormat::Unknown => "unknown",
        }
    }

    /// The [`DlqMessage`](super::DlqMessage) fields this format never carries.
    pub fn lacks(self) -> &'static [&'static str] {
        match self {
            DlqFormat::Weir => &[],
            DlqFormat::SpringKafka => &["reason", "dlq_at_ms"],
            DlqFormat::Karafka => &["reason", "error_class", "error_message", "dlq_at_ms"],
            DlqFormat::Watermill => &[
                "reason",
                "error_class",
                "original_partition",
                "original_offset",
                "attempts",
                "failed_group",
                "dlq_at_ms",
            ],
            DlqFormat::Arroyo => &[
                "reason",
                "error_class",
                "error_message",
                "original_topic",
                "attempts",
                "failed_group",
                "dlq_at_ms",
            ],
            DlqFormat::Unknown => &[
                "reason",
                "error_class",
                "error_message",
                "original_topic",
                "original_partition",
                "original_offset",
                "attempts",
                "failed_group",
                "dlq_at_ms",
            ],
        }
    }

    /// Whether a replay drops header `name` (this format's failure state).
    pub(crate) fn is_failure_header(self, name: &str) -> bool {
        match self {
            DlqFormat::Weir | DlqFormat::Unknown => false,
            DlqFormat::SpringKafka => {
                name.starts_with(spring::PREFIX) || name.starts_with("retry_topic-")
            }
            DlqFormat::Karafka => karafka::ALL.contains(&name),
            DlqFormat::Watermill => watermill::ALL.contains(&name),
            DlqFormat::Arroyo => arroyo::ALL.contains(&name),
        }
    }

    /// The failure fields of a copy in this format.
    pub(crate) fn fields(self, h: &Headers) -> Fields {
        let s = |n: &str| text(h, n);
        let i = |n: &str| crate::wire::header_i64(h, n);
        let id = || s(crate::id::MESSAGE_ID_HEADER);
        use crate::wire::headers as w;
        match self {
            DlqFormat::Weir | DlqFormat::Unknown => Fields {
                reason: s(w::DLQ_REASON),
                error_class: s(w::ERROR_CLASS),
                error_message: s(w::ERROR_MESSAGE),
                original_topic: s(w::ORIGINAL_TOPIC),
                original_partition: i(w::ORIGINAL_PARTITION).and_then(|v| i32::try_from(v).ok()),
                original_offset: i(w::ORIGINAL_OFFSET),
                attempts: i(w::ATTEMPT).and_then(|v| u32::try_from(v).ok()),
                failed_group: s(w::FAILED_GROUP),
                dlq_at_ms: i(w::DLQ_AT_MS),
                message_id: id(),
            },
            DlqFormat::SpringKafka => Fields {
                reason: None,
                error_class: s(spring::EXCEPTION_FQCN).or_else(|| s(spring::EXCEPTION_CAUSE_FQCN)),
                error_message: s(spring::EXCEPTION_MESSAGE).map(|m| truncate(&m)),
                original_topic: s(spring::ORIGINAL_TOPIC),
                original_partition: be_or_decimal(h, spring::ORIGINAL_PARTITION)
                    .and_then(|v| i32::try_from(v).ok()),
                original_offset: be_or_decimal(h, spring::ORIGINAL_OFFSET),
                attempts: be_or_decimal(h, spring::RETRY_ATTEMPTS)
                    .and_then(|v| u32::try_from(v).ok()),
                failed_group: s(spring::ORIGINAL_CONSUMER_GROUP),
                dlq_at_ms: None,
                message_id: id(),
            },
            DlqFormat::Karafka => Fields {
                original_topic: s(karafka::SOURCE_TOPIC),
                original_partition: i(karafka::SOURCE_PARTITION)
                    .and_then(|v| i32::try_from(v).ok()),
                original_offset: i(karafka::SOURCE_OFFSET),
                attempts: i(karafka::SOURCE_ATTEMPTS).and_then(|v| u32::try_from(v).ok()),
                failed_group: s(karafka::SOURCE_CONSUMER_GROUP),
                message_id: id(),
                ..Fields::default()
            },
            DlqFormat::Watermill => Fields {
                error_message: s(watermill::REASON).map(|m| truncate(&m)),
                original_topic: s(watermill::TOPIC),
                message_id: id().or_else(|| s(watermill::UUID)),
                ..Fields::default()
            },
            DlqFormat::Arroyo => Fields {
                original_topic: s(arroyo::ORIGINAL_TOPIC),
                original_partition: i(arroyo::ORIGINAL_PARTITION)
                    .and_then(|v| i32::try_from(v).ok()),
                original_offset: i(arroyo::ORIGINAL_OFFSET),
                message_id: id(),
                ..Fields::default()
            },
        }
    }
}

/// A header as UTF-8 text (`None` when missing, empty or not UTF-8).
fn text(h: &Headers, name: &str) -> Option<String> {
    crate::wire::header_str(h, name)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An integer Spring writes big-endian (4 or 8 bytes); a decimal string
/// (some producers copy the headers as text) is read too.
fn be_or_decimal(h: &Headers, name: &str) -> Option<i64> {
    let v = h.get(name)?;
    match v.len() {
        4 => Some(i64::from(i32::from_be_bytes(v.try_into().ok()?))),
        8 => {
            // Eight ASCII digits are a decimal number, not a long.
            if v.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(v).ok()?.parse().ok()
            } else {
                Some(i64::from_be_bytes(v.try_into().ok()?))
            }
        }
        _ => std::str::from_utf8(v).ok()?.trim().parse().ok(),
    }
}

fn truncate(s: &str) -> String {
    crate::retry::truncate_error_message(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> Headers {
        let mut h = Headers::default();
        for (k, v) in pairs {
            h.push(*k, bytes::Bytes::copy_from_slice(v));
        }
        h
    }

    #[test]
    fn spring_headers_are_read_big_endian() {
        let h = headers(&[
            (spring::ORIGINAL_TOPIC, b"orders"),
            (spring::ORIGINAL_PARTITION, &3i32.to_be_bytes()),
            (spring::ORIGINAL_OFFSET, &12_345_678_901i64.to_be_bytes()),
            (
                spring::EXCEPTION_FQCN,
                b"org.springframework.kafka.listener.ListenerExecutionFailedException",
            ),
            (spring::EXCEPTION_MESSAGE, b"boom"),
            (spring::ORIGINAL_CONSUMER_GROUP, b"billing"),
            (spring::RETRY_ATTEMPTS, &4i32.to_be_bytes()),
        ]);
        assert_eq!(DlqFormat::detect(&h), DlqFormat::SpringKafka);
        let f = DlqFormat::SpringKafka.fields(&h);
        assert_eq!(f.original_topic.as_deref(), Some("orders"));
        assert_eq!(f.original_partition, Some(3));
        assert_eq!(f.original_offset, Some(12_345_678_901));
        assert_eq!(f.attempts, Some(4));
        assert_eq!(f.failed_group.as_deref(), Some("billing"));
        assert!(
            f.error_class
                .unwrap()
                .ends_with("ListenerExecutionFailedException")
        );
        assert!(DlqFormat::SpringKafka.is_failure_header(spring::ORIGINAL_OFFSET));
        assert!(!DlqFormat::SpringKafka.is_failure_header("traceparent"));
    }

    #[test]
    fn karafka_watermill_and_arroyo_are_told_apart() {
        let k = headers(&[
            (karafka::SOURCE_TOPIC, b"events"),
            (karafka::SOURCE_PARTITION, b"1"),
            (karafka::SOURCE_OFFSET, b"77"),
            (karafka::SOURCE_CONSUMER_GROUP, b"app"),
            (karafka::SOURCE_ATTEMPTS, b"3"),
        ]);
        assert_eq!(DlqFormat::detect(&k), DlqFormat::Karafka);
        let f = DlqFormat::Karafka.fields(&k);
        assert_eq!(
            (f.original_partition, f.original_offset, f.attempts),
            (Some(1), Some(77), Some(3))
        );
        let w = headers(&[
            (watermill::REASON, b"handler failed"),
            (watermill::TOPIC, b"payments"),
            (watermill::UUID, b"5f0c"),
        ]);
        assert_eq!(DlqFormat::detect(&w), DlqFormat::Watermill);
        let f = DlqFormat::Watermill.fields(&w);
        assert_eq!(f.original_topic.as_deref(), Some("payments"));
        assert_eq!(f.message_id.as_deref(), Some("5f0c"));
        assert_eq!(f.error_message.as_deref(), Some("handler failed"));
        let a = headers(&[
            (arroyo::ORIGINAL_PARTITION, b"2"),
            (arroyo::ORIGINAL_OFFSET, b"9"),
        ]);
        assert_eq!(DlqFormat::detect(&a), DlqFormat::Arroyo);
        assert_eq!(DlqFormat::Arroyo.fields(&a).original_offset, Some(9));
        assert_eq!(
            DlqFormat::detect(&headers(&[("x", b"y")])),
            DlqFormat::Unknown
        );
        // Weir wins when both are present (a Weir copy of a Spring copy).
        let both = headers(&[
            (crate::wire::headers::DLQ_REASON, b"terminal"),
            (spring::ORIGINAL_TOPIC, b"orders"),
        ]);
        assert_eq!(DlqFormat::detect(&both), DlqFormat::Weir);
    }

    #[test]
    fn hostile_values_are_none_not_errors() {
        let h = headers(&[
            (spring::ORIGINAL_TOPIC, &[0xff, 0xfe]),
            (spring::ORIGINAL_PARTITION, &[1, 2, 3]),
            (spring::ORIGINAL_OFFSET, b"12345678"),
            (spring::EXCEPTION_MESSAGE, &vec![b'x'; 10_000]),
        ]);
        let f = DlqFormat::SpringKafka.fields(&h);
        assert_eq!(f.original_topic, None, "not UTF-8");
        assert_eq!(f.original_partition, None, "three bytes are no int");
        assert_eq!(
            f.original_offset,
            Some(12_345_678),
            "eight digits read as text"
        );
        assert!(f.error_message.unwrap().len() < 600, "truncated");
        let k = headers(&[
            (karafka::SOURCE_TOPIC, b"t"),
            (karafka::SOURCE_OFFSET, b"-x"),
            (karafka::SOURCE_PARTITION, b"99999999999"),
        ]);
        let f = DlqFormat::Karafka.fields(&k);
        assert_eq!((f.original_offset, f.original_partition), (None, None));
    }
}
