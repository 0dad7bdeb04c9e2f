//! The producer helper: an idempotent producer that stamps every record with a
//! message ID and waits for the broker's acknowledgement.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use weir::producer::{Producer, Record};
//!
//! let producer = Producer::new("localhost:9092")?;
//! let delivery = producer
//!     .send(Record::to("orders").key("order-42").payload(r#"{"total":12}"#))
//!     .await?;
//! println!("stored at {}/{}@{} as {}", delivery.topic, delivery.partition, delivery.offset, delivery.message_id);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header as RdHeader, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use tokio::sync::Notify;

use crate::config::ConsumerConfig;
use crate::error::WeirError;
use crate::id::{MAX_MESSAGE_ID_LEN, MESSAGE_ID_HEADER, new_message_id};
use crate::message::Headers;

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
    fn ensure_message_id(&mut self) -> Result<String, ProduceError> {
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

/// How long a refused connection keeps failing sends after librdkafka last
/// reported it. librdkafka retries the connection at most
/// `reconnect.backoff.max.ms` (10 s by default) apart and reports every
/// refusal, so while the settings are wrong every send fails at once; once the
/// brokers accept the client again, sends go through after this window.
const REFUSAL_HOLD: Duration = Duration::from_secs(30);

/// The [`Producer`]'s librdkafka context: logs through `tracing` (target
/// `librdkafka`) and remembers the last refused connection (wrong credentials,
/// an unoffered SASL mechanism, an untrusted broker certificate), so that sends
/// fail at once with [`ProduceError::Refused`], saying what to fix, instead of
/// each waiting out `message.timeout.ms`.
#[derive(Default)]
pub struct ProducerContext {
    refusals: Arc<Refusals>,
}

/// The last refused connection, shared by the context and the [`Producer`].
#[derive(Default)]
struct Refusals {
    last: Mutex<Option<(Instant, String)>>,
    notify: Notify,
}

impl Refusals {
    /// The refusal librdkafka reported within the last 30 s, if any.
    fn recent(&self) -> Option<String> {
        self.last
            .lock()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < REFUSAL_HOLD)
            .map(|(_, reason)| reason.clone())
    }

    /// Resolves when a refusal is reported (or one is recent already).
    async fn next(&self) -> String {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.recent() {
                return reason;
            }
            notified.await;
        }
    }

    fn report(&self, reason: String) {
        *self.last.lock() = Some((Instant::now(), reason));
        self.notify.notify_waiters();
    }
}

impl ClientContext for ProducerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::client::log_to_tracing(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(why) = crate::client::refused_connection(&error, reason) {
            tracing::error!(%error, reason, "the brokers refuse the producer's connection; sends fail until they accept it");
            self.refusals.report(why);
        } else {
            tracing::warn!(%error, reason, "producer client error (librdkafka retries it)");
        }
    }
}

/// An idempotent producer (`enable.idempotence=true`, `acks=all`) that assigns
/// message IDs and resolves each send when the broker has acknowledged it.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<ProducerContext>,
    queue_timeout: Duration,
    refusals: Arc<Refusals>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer for `brokers` with Weir's defaults.
    pub fn new(brokers: &str) -> Result<Self, WeirError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers);
        Self::from_client_config(c)
    }

    /// A producer sharing a consumer's brokers and pass-through properties that
    /// apply to producers too (`security.*`, `sasl.*`, `ssl.*`, `client.*`,
    /// `socket.*`, `broker.*`), so SASL/TLS settings are given once.
    pub fn for_consumer(config: &ConsumerConfig) -> Result<Self, WeirError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &config.brokers);
        for (k, v) in &config.kafka {
            if [
                "security.",
                "sasl.",
                "ssl.",
                "client.",
                "socket.",
                "broker.",
            ]
            .iter()
            .any(|p| k.starts_with(p))
            {
                c.set(k, v);
            }
        }
        Self::from_client_config(c)
    }

    /// A producer from a librdkafka config. Idempotence and `acks=all` are set
    /// unless the config sets them; `linger.ms` defaults to 5.
    pub fn from_client_config(mut c: ClientConfig) -> Result<Self, WeirError> {
        for (k, v) in [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
        ] {
            if c.get(k).is_none() {
                c.set(k, v);
            }
        }
        let context = ProducerContext::default();
        let refusals = context.refusals.clone();
        let inner = c
            .create_with_context(context)
            .map_err(|source| WeirError::Kafka {
                context: "creating the producer".into(),
                source,
            })?;
        Ok(Producer {
            inner,
            queue_timeout: Duration::from_secs(30),
            refusals,
        })
    }

    /// How long a send may wait for room in a full producer queue (default 30 s).
    pub fn with_queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Produces `record` and waits for the acknowledgement. Assigns a message ID
    /// unless the record has one. Retries inside librdkafka up to
    /// `delivery.timeout.ms` (default 2 minutes) before failing; fails at once
    /// with [`ProduceError::Refused`] while the brokers refuse the connection
    /// (a record already queued then may still be delivered later, when they
    /// accept it: at least once).
    pub async fn send(&self, mut record: Record) -> Result<Delivery, ProduceError> {
        let message_id = record.ensure_message_id()?;
        if let Some(reason) = self.refusals.recent() {
            return Err(ProduceError::Refused {
                topic: record.topic,
                reason,
            });
        }
        crate::trace::inject(&mut record.headers);
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for h in record.headers.iter() {
            headers = headers.insert(RdHeader {
                key: &h.key,
                value: h.value.as_deref(),
            });
        }
        let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic).headers(headers);
        if let Some(k) = record.key.as_deref() {
            fr = fr.key(k);
        }
        if let Some(p) = record.payload.as_deref() {
            fr = fr.payload(p);
        }
        if let Some(p) = record.partition {
            fr = fr.partition(p);
        }
        if let Some(ts) = record.timestamp_ms {
            fr = fr.timestamp(ts);
        }
        // `send` waits up to the queue timeout for room in a full queue, then
        // resolves on the delivery report.
        let result = tokio::select! {
            biased;
            r = self.inner.send(fr, Timeout::After(self.queue_timeout)) => r,
            reason = self.refusals.next() => {
                return Err(ProduceError::Refused { topic: record.topic, reason });
            }
        };
        match result {
            Err((source, _)) => Err(ProduceError::Kafka {
                topic: record.topic,
                source,
            }),
            Ok(d) => Ok(Delivery {
                topic: record.topic,
                partition: d.partition,
                offset: d.offset,
                message_id,
            }),
        }
    }

    /// Waits until every queued record is acknowledged (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.flush(Timeout::After(timeout))
    }

    /// Why the brokers refuse this producer's connection, if librdkafka
    /// reported a refusal in the last 30 s (for health checks; sends fail with
    /// [`ProduceError::Refused`] meanwhile).
    pub fn refused_connection(&self) -> Option<String> {
        self.refusals.recent()
    }

    /// The underlying rdkafka producer.
    pub fn inner(&self) -> &FutureProducer<ProducerContext> {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
