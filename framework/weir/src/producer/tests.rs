use super::*;
use crate::id::{MAX_MESSAGE_ID_LEN, MESSAGE_ID_HEADER};

#[test]
fn permanent_produce_errors_are_not_retried() {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as C;
    let err = |code| ProduceError::Kafka {
        topic: "t".into(),
        source: KafkaError::MessageProduction(code),
    };
    for permanent in [
        C::InvalidRecord,
        C::InvalidTimestamp,
        C::PolicyViolation,
        C::Fatal,
        C::MessageSizeTooLarge,
        C::MessageBatchTooLarge,
        C::TopicAuthorizationFailed,
        C::ClusterAuthorizationFailed,
        C::UnknownTopicOrPartition,
        C::UnknownTopic,
        C::InvalidRequiredAcks,
        C::UnsupportedForMessageFormat,
        C::InvalidArgument,
        C::OutOfOrderSequenceNumber,
        C::InvalidProducerEpoch,
        C::ProducerFenced,
    ] {
        assert!(!err(permanent).is_retryable(), "{permanent:?} is permanent");
    }
    for transient in [
        C::MessageTimedOut,
        C::QueueFull,
        C::AllBrokersDown,
        C::NotLeaderForPartition,
        C::NotEnoughReplicas,
        C::RequestTimedOut,
        C::ThrottlingQuotaExceeded,
        C::KafkaStorageError,
    ] {
        assert!(err(transient).is_retryable(), "{transient:?} is transient");
    }
}

#[test]
fn keeps_a_given_id_and_assigns_one_otherwise() {
    let mut r = Record::to("t").message_id("abc");
    assert_eq!(r.ensure_message_id().unwrap(), "abc");
    assert_eq!(
        r.headers
            .iter()
            .filter(|h| h.key == MESSAGE_ID_HEADER)
            .count(),
        1
    );

    let mut r = Record::to("t");
    let id = r.ensure_message_id().unwrap();
    assert_eq!(
        r.headers.get_str(MESSAGE_ID_HEADER).unwrap(),
        Some(id.as_str())
    );
    // Idempotent: a second call keeps the same id.
    assert_eq!(r.ensure_message_id().unwrap(), id);
}

#[test]
fn rejects_bad_ids() {
    for bad in [vec![], vec![0xff, 0xfe], vec![b'a'; MAX_MESSAGE_ID_LEN + 1]] {
        let mut r = Record::to("t").header(MESSAGE_ID_HEADER, bad);
        assert!(matches!(
            r.ensure_message_id(),
            Err(ProduceError::InvalidMessageId { .. })
        ));
    }
}
