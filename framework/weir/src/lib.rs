//! # Weir: Kafka consumers done right
//!
//! You write a [`Processor`]; Weir runs it as a member of a consumer group with
//! per-key ordered concurrency, commits only offsets whose messages have
//! finished, retries transient failures, and hands poison messages to a
//! [`FailureSink`] instead of skipping them or wedging the partition.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
//! use std::sync::Arc;
//! use rdkafka::mocking::MockCluster;
//! use rdkafka::producer::{FutureProducer, FutureRecord};
//! use rdkafka::ClientConfig;
//! use weir::{Consumer, ConsumerConfig, JsonCodec, Message, ProcessError, Processor};
//!
//! #[derive(serde::Deserialize)]
//! struct Click { link_id: u64 }
//!
//! struct CountClicks(Arc<AtomicUsize>);
//!
//! impl Processor<Click> for CountClicks {
//!     async fn process(&self, msg: Message<Click>) -> Result<(), ProcessError> {
//!         let _link = msg.value().link_id;      // your idempotent effect goes here
//!         self.0.fetch_add(1, SeqCst);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An in-process broker for the example; use your cluster's address in production.
//! let cluster = MockCluster::new(1)?;
//! cluster.create_topic("clicks", 2, 1)?;
//! let producer: FutureProducer = ClientConfig::new()
//!     .set("bootstrap.servers", cluster.bootstrap_servers())
//!     .create()?;
//! for i in 0..3u64 {
//!     let body = format!(r#"{{"link_id":{i}}}"#);
//!     let key = i.to_string();
//!     producer.send(FutureRecord::to("clicks").key(&key).payload(&body), None).await.map_err(|(e, _)| e)?;
//! }
//!
//! let seen = Arc::new(AtomicUsize::new(0));
//! let config = ConsumerConfig::new(cluster.bootstrap_servers(), "click-counter", &["clicks"]);
//! let consumer = Consumer::builder(config)
//!     .codec(JsonCodec::<Click>::new())
//!     .build(CountClicks(seen.clone()))?;
//! let handle = consumer.handle();
//! let run = tokio::spawn(consumer.run());
//! while seen.load(SeqCst) < 3 {
//!     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
//! }
//! handle.shutdown();                                // drain, commit, leave the group
//! let report = run.await??;
//! assert!(report.drained);
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//! - **Commit after processing**: per partition, only the position below which
//!   every message has finished (processed, or handed to the failure sink and
//!   acknowledged) is committed; asynchronously on `commit_interval`, and
//!   synchronously on revoke and shutdown. Never auto-commit.
//! - **Ordering** ([`Ordering`]): `Key` (default) runs different keys in parallel
//!   and each key strictly in offset order; `Partition` runs one message at a time
//!   per partition; `Unordered` runs everything in parallel.
//! - **Backpressure**: a partition whose window (oldest unfinished to newest
//!   fetched) reaches `max_buffered_per_partition` is paused until it drains to
//!   half; fetching and group heartbeats go on while handlers run.
//! - **Revoke**: revoked partitions stop dispatching, wait up to
//!   `revoke_deadline` for in-flight messages, commit what finished, and are
//!   released. Messages still running at the deadline are cancelled and
//!   processed again by the new owner (so handlers must be idempotent). Exactly:
//!   the commit made on revoke is the lowest unfinished offset of each revoked
//!   partition, so every message below it has finished, and every message at or
//!   above it (finished or not) is delivered again to the next owner. If that
//!   commit fails (the assignment was already lost, or the broker refuses it), the
//!   next owner starts from the previous commit: more redelivery, never a gap.
//! - **Shutdown**: stop fetching, drain up to `shutdown_deadline`, commit, leave
//!   the group; [`RunReport::exit_code`] says whether the drain completed.
//! - **Failures**: retryable errors are retried in place ([`RetryPolicy`]);
//!   terminal errors, exhausted retries, undecodable payloads and panics go to the
//!   [`FailureSink`] (default [`StopPartition`]: halt the partition, loudly).
//!   A handler that exceeds `handler_timeout` is cancelled and counts as retryable.
//!
//! ## Features
//! - `json` (default): [`JsonCodec`](codec::JsonCodec).
//! - `ops`: operations tooling that consumers do not need: reading and
//!   replaying DLQs (`weir::dlq`) and re-processing offset ranges
//!   (`weir::replay`). The `weir` CLI turns it on.

pub mod batch;
mod client;
pub mod clock;
pub mod codec;
pub mod config;
#[cfg(feature = "ops")]
pub mod dlq;
pub mod error;
pub mod failure;
#[cfg(test)]
mod fuzz;
#[cfg(feature = "ops")]
pub mod groups;
pub mod id;
pub mod inspect;
mod kafka;
pub mod message;
mod offsets;
pub mod processor;
pub mod producer;
pub mod retry;
/// Bounded re-processing of a topic range ([`Replay`](replay::Replay)); with
/// the `ops` feature.
#[cfg(feature = "ops")]
pub mod replay {
    pub use crate::runtime::replay::{Position, Replay, ReplayReport};
}
mod runtime;
mod scheduler;
pub mod stats;
pub mod trace;
pub mod valves;
pub mod wire;

#[doc(inline)]
pub use batch::{BatchConfig, BatchProcessor, Batched, Outcomes};
#[cfg(feature = "json")]
#[doc(inline)]
pub use codec::JsonCodec;
#[doc(inline)]
pub use codec::{
    BytesCodec, Codec, CodecExt, DecodeError, EncodeError, Encoder, Key, Part, StringCodec,
};
#[doc(inline)]
pub use config::{Assignment, ConsumerConfig, GroupProtocol, RetryPolicy};
#[doc(inline)]
pub use error::{ConfigError, ErrorKind, ProcessError, WeirError};
#[doc(inline)]
pub use failure::{Disposition, Failure, FailureSink, LogAndSkip, StopPartition};
#[doc(inline)]
pub use id::{MESSAGE_ID_HEADER, new_message_id};
#[doc(inline)]
pub use message::{Header, Headers, Message, MessageError, RawMessage, TopicPartition};
#[doc(inline)]
pub use processor::{Processor, ProcessorFn, processor_fn};
#[doc(inline)]
pub use producer::{Delivery, ProduceError, Producer, Record};
pub use runtime::{Consumer, ConsumerBuilder, ConsumerHandle, HaltedPartition, RunReport};
#[doc(inline)]
pub use scheduler::Ordering;
#[doc(inline)]
pub use stats::ConsumerStats;
pub use tokio_util::sync::CancellationToken;

/// The runtime's data structures, for Weir's own benchmarks and fuzzers.
/// Not a stable API: they change with the runtime.
#[doc(hidden)]
pub mod internals {
    pub use crate::offsets::{NextOffset, OffsetTracker};
    pub use crate::scheduler::{KeyScheduler, Lane, hash_key};
}
