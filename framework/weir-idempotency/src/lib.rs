//! # Exactly-once effect for Weir consumers
//!
//! Kafka delivers at least once: after a crash, a rebalance or a lost commit a
//! message is delivered again. This crate makes the *effect* happen once:
//!
//! - **Identity**: every message Weir produces carries a UUIDv7 in the
//!   [`weir::MESSAGE_ID_HEADER`] header; [`IdSource`] picks it (or a header of
//!   your own, a payload field, or the weaker `topic/partition@offset` fallback
//!   for foreign producers).
//! - **Store** ([`IdempotencyStore`]): markers keyed by (consumer group,
//!   message ID) in [`PostgresStore`] (production), [`SqliteStore`] (the
//!   embedded default) or [`InMemoryStore`] (tests).
//! - **Processors**: [`Transactional`] runs your [`TxProcessor`] inside the
//!   marker's database transaction, so effect and marker commit together (the
//!   strong form); [`Idempotent`] wraps any [`weir::Processor`] whose effect
//!   lives elsewhere (at-least-once effect across a crash at the worst moment:
//!   pass [`weir::Message::message_id`] to the far side as its idempotency key).
//! - **Retention**: [`spawn_retention`] deletes markers older than a window.
//!   Choose a window longer than the longest time a message can be redelivered:
//!   the topic's `retention.ms` bounds replays from the log, and add the time a
//!   DLQ replay may take. A marker purged too early lets a late redelivery
//!   through.
//!
//! An unreachable store makes processing wait (a
//! [`weir::ErrorKind::Unavailable`] error: retried in place without an attempt
//! limit), so a database outage pauses the partition instead of sending
//! messages to the DLQ, and no offset moves past an unprocessed message.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
//! use std::sync::Arc;
//! use rdkafka::mocking::MockCluster;
//! use weir::producer::{Producer, Record};
//! use weir::{Consumer, ConsumerConfig, Message, ProcessError, Processor, StringCodec};
//! use weir_idempotency::{Idempotent, InMemoryStore};
//!
//! struct SendEmail(Arc<AtomicUsize>);
//!
//! impl Processor<String> for SendEmail {
//!     async fn process(&self, msg: Message<String>) -> Result<(), ProcessError> {
//!         // Use msg.message_id() as the mail provider's idempotency key.
//!         let _key = msg.message_id();
//!         self.0.fetch_add(1, SeqCst);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = MockCluster::new(1)?;
//! cluster.create_topic("signups", 1, 1)?;
//! let producer = Producer::new(&cluster.bootstrap_servers())?;
//! // The same logical message published twice (a producer retried after a timeout).
//! for _ in 0..2 {
//!     producer.send(Record::to("signups").key("u1").payload("ada@example.com").message_id("signup-1")).await?;
//! }
//!
//! let sent = Arc::new(AtomicUsize::new(0));
//! let config = ConsumerConfig::new(cluster.bootstrap_servers(), "mailer", &["signups"]);
//! let processor = Idempotent::new(SendEmail(sent.clone()), InMemoryStore::new(), "mailer");
//! let stats = processor.stats();
//! let consumer = Consumer::builder(config).codec(StringCodec).build(processor)?;
//! let handle = consumer.handle();
//! let run = tokio::spawn(consumer.run());
//! while stats.fresh() + stats.duplicates() < 2 {
//!     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
//! }
//! handle.shutdown();
//! run.await??;
//! assert_eq!(sent.load(SeqCst), 1);
//! assert_eq!(stats.duplicates(), 1);
//! # Ok(()) }
//! ```

mod memory;
mod processor;
mod sql;
mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use memory::{InMemoryStore, MemoryTx};
pub use processor::{
    ExtractFn, IdError, IdSource, IdempotencyStats, Idempotent, SameIdInBatch, Transactional,
    TransactionalBatch, TxBatchProcessor, TxProcessor,
};
#[cfg(feature = "postgres")]
pub use sql::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteStore;
pub use store::{BatchClaim, Claim, IdempotencyStore, MarkerKey, StoreError};

/// Starts a task that deletes markers older than `window` every `every`, until
/// `stop` fires. Failures are logged and retried at the next tick.
pub fn spawn_retention<S: IdempotencyStore>(
    store: Arc<S>,
    window: Duration,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match store.purge_older_than(window).await {
                Ok(n) => {
                    metrics::counter!("weir_idempotency_markers_purged_total").increment(n);
                    tracing::debug!(purged = n, ?window, "idempotency retention ran");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency retention failed; retrying next tick")
                }
            }
        }
    })
}
