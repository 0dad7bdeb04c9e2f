//! Records, deliveries and produce errors: what is sent, what the broker acknowledged, and why a send failed (transient or for good).

use crate::id::{MAX_MESSAGE_ID_LEN, MESSAGE_ID_HEADER, new_message_id};
use crate::message::Headers;
use bytes::Bytes;
use rdkafka::error::KafkaError;

/// A record to produce.
#[derive(Debug, Clone)]
pub struct Record {
    /// Destination topic.
    pub topic: String,
    /// Key (messages of one key land on one partition, in order).
    pub key: Option<Bytes>,
    /// Payload (`None` produces a tombstone).
    pub payload: Option<Bytes>,
    /// Headers. A [`MESSAGE_ID_HEADER`] here is kept; otherwise one is added.
    pub headers: Headers,
    /// Explicit partition; `None` lets the partitioner choose by key.
    pub partition: Option<i32>,
    /// Record timestamp in epoch milliseconds; `None` lets the producer set it.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// A record for `topic` with no key, payload or headers yet.
    pub fn to(topic: impl Into<String>) -> Self {
        Record {
            topic: topic.into(),
            key: None,
            payload: None,
            headers: Headers::default(),
            partition: None,
            timestamp_ms: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Serialises `value` as JSON into the payload.
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Result<Self, ProduceError> {
        let bytes = serde_json::to_vec(value).map_err(|e| ProduceError::Encode {
            topic: self.topic.clone(),
            message: e.to_string(),
        })?;
        self.payload = Some(bytes.into());
        Ok(self)
    }

    /// Encodes `value` with `encoder` (JSON, Avro through a schema registry…)
    /// into the payload. Schema-registry encoders derive the subject from the
    /// record's topic.
    ///
    /// ```no_run
    /// # async fn f(producer: weir::Producer) -> Result<(), Box<dyn std::error::Error>> {
    /// #[derive(serde::Serialize)]
    /// struct Click { link: String }
    /// let record = weir::Record::to("clicks")
    ///     .key("l1")
    ///     .value_with(&weir::JsonCodec::new(), &Click { link: "l1".into() })
    ///     .await?;
    /// producer.send(record).await?;
    /// # Ok(()) }
    /// ```
    pub async fn value_with<T: ?Sized + Sync, E: crate::codec::Encoder<T>>(
        mut self,
        encoder: &E,
        value: &T,
    ) -> Result<Self, crate::codec::EncodeError> {
        self.payload = Some(encoder.encode(&self.topic, value).await?);
        Ok(self)
    }

    /// Encodes `key` with `encoder` (a key encoder: for schema-registry
    /// encoders, one built for [`Part::Key`](crate::Part::Key)).
    pub async fn key_with<T: ?Sized + Sync, E: crate::codec::Encoder<T>>(
        mut self,
        encoder: &E,
        key: &T,
    ) -> Result<Self, crate::codec::EncodeError> {
        self.key = Some(encoder.encode(&self.topic, key).await?);
        Ok(self)
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(key, value);
        self
    }

    /// Sets the message ID (otherwise a fresh UUIDv7 is assigned on send).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.headers.0.retain(|h| h.key != MESSAGE_ID_HEADER);
        self.headers.push(MESSAGE_ID_HEADER, id.into());
        self
    }

    /// Pins the partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the record timestamp (epoch milliseconds).
    pub fn timestamp_ms(mut self, ts: i64) -> Self {
        self.timestamp_ms = Some(ts);
        self
    }

    /// Makes sure the record has a valid message ID and returns it.
    pub(super) fn ensure_message_id(&mut self) -> Result<String, ProduceError> {
        match self.headers.get(MESSAGE_ID_HEADER) {
            Some(v) => match std::str::from_utf8(v) {
                Ok(s) if !s.is_empty() && s.len() <= MAX_MESSAGE_ID_LEN => Ok(s.to_string()),
                _ => Err(ProduceError::InvalidMessageId {
                    topic: self.topic.clone(),
                }),
            },
            None => {
                let id = new_message_id();
                self.headers.push(MESSAGE_ID_HEADER, id.clone());
                Ok(id)
            }
        }
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The record's message ID.
    pub message_id: String,
}

/// A record could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// The broker refused the record or it timed out in the producer's queue.
    #[error(
        "producing to `{topic}` failed: {source} (check the topic exists and the brokers are reachable)"
    )]
    Kafka {
        /// Destination topic.
        topic: String,
        /// The librdkafka error.
        #[source]
        source: KafkaError,
    },
    /// The payload could not be serialised.
    #[error("encoding the payload for `{topic}` failed: {message}")]
    Encode {
        /// Destination topic.
        topic: String,
        /// The serialiser's message.
        message: String,
    },
    /// The brokers refuse this client's connections (wrong credentials, a SASL
    /// mechanism they do not offer, a certificate the client does not trust):
    /// reported at once instead of after `message.timeout.ms`.
    #[error(
        "producing to `{topic}` failed: the brokers refuse this producer's connection: {reason}"
    )]
    Refused {
        /// Destination topic.
        topic: String,
        /// What librdkafka reported, with what to fix.
        reason: String,
    },
    /// The record carries an empty, non-UTF-8 or over-long message ID header.
    #[error(
        "record for `{topic}` has an invalid `{MESSAGE_ID_HEADER}` header: it must be 1..={MAX_MESSAGE_ID_LEN} bytes of UTF-8"
    )]
    InvalidMessageId {
        /// Destination topic.
        topic: String,
    },
    /// [`TransactionalProducer::send`](super::TransactionalProducer::send)
    /// without an open transaction.
    #[error(
        "record for `{topic}` sent through transactional producer `{transactional_id}` without an open transaction: call begin() first"
    )]
    NoTransaction {
        /// Destination topic.
        topic: String,
        /// The producer's `transactional.id`.
        transactional_id: String,
    },
    /// [`RetryTopics::schedule`](crate::retry::RetryTopics::schedule) was
    /// asked to hold a record until a later time, and these `RetryTopics`
    /// have no delay tier to hold it in.
    #[error(
        "cannot schedule a record for `{topic}` later: {reason}; schedule through RetryTopics with delay tiers (and without keep_key_order), or send it now"
    )]
    Unschedulable {
        /// Destination topic.
        topic: String,
        /// Why: no tiers, or key-order mode (which has no tier topics).
        reason: &'static str,
    },
}

impl ProduceError {
    /// True when trying again later can succeed: broker or network trouble
    /// (leaders moving, replicas missing, timeouts, a full local queue,
    /// throttling), and a refused connection once the settings, users or ACLs
    /// are fixed. Everything else is permanent: the same record will be
    /// refused again (too large, invalid for the topic such as a keyless
    /// record on a compacted topic, a bad timestamp, a policy violation, a
    /// missing topic, missing authorisation, a fatal idempotent-producer
    /// state), so retrying it would loop forever; callers halt instead.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProduceError::Kafka { source, .. } => match source.rdkafka_error_code() {
                Some(code) => is_transient(code),
                // Not a broker or librdkafka error code (a client that is
                // being destroyed, a canceled future): try again.
                None => true,
            },
            ProduceError::Refused { .. } => true,
            ProduceError::Encode { .. }
            | ProduceError::InvalidMessageId { .. }
            | ProduceError::NoTransaction { .. }
            | ProduceError::Unschedulable { .. } => false,
        }
    }
}

/// Error codes after which the same record can succeed later.
pub(crate) fn is_transient(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        // librdkafka, local
        C::BrokerTransportFailure
            | C::Resolve
            | C::MessageTimedOut
            | C::AllBrokersDown
            | C::OperationTimedOut
            | C::QueueFull
            | C::TimedOutQueue
            | C::Retry
            | C::PurgeQueue
            | C::PurgeInflight
            | C::ISRInsufficient
            | C::NodeUpdate
            | C::WaitingForCoordinator
            | C::InProgress
            | C::Interrupted
            | C::UnknownPartition
            | C::SSL
            | C::Authentication
            | C::Fail
            // the broker's retriable errors
            | C::Unknown
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::RequestTimedOut
            | C::BrokerNotAvailable
            | C::ReplicaNotAvailable
            | C::NetworkException
            | C::CoordinatorLoadInProgress
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::NotController
            | C::ConcurrentTransactions
            | C::KafkaStorageError
            | C::ReassignmentInProgress
            | C::FencedLeaderEpoch
            | C::UnknownLeaderEpoch
            | C::OffsetNotAvailable
            | C::PreferredLeaderNotAvailable
            | C::EligibleLeadersNotAvailable
            | C::ThrottlingQuotaExceeded
            | C::UnknownTopicId
    )
}
