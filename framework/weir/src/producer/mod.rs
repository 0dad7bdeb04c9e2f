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

mod record;
mod transactional;
pub use record::*;
pub use transactional::{TransactionError, TransactionalProducer};
#[cfg(test)]
mod tests;

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
        Self::from_client_config(Self::client_config_for(config))
    }

    /// The librdkafka config of [`for_consumer`](Self::for_consumer).
    pub(crate) fn client_config_for(config: &ConsumerConfig) -> ClientConfig {
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
        c
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
