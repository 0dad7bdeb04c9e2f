//! What the dispatcher asks of librdkafka, as a small trait: commit
//! positions, pause, resume and seek one partition. The consumer implements
//! it; tests implement it with a recorder, so that assign, revoke,
//! backpressure and shutdown are unit tested without a broker.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka;
use crate::message::TopicPartition;
use crate::runtime::poller::WeirContext;

/// The partition controls the dispatcher uses. `commit` blocks until the
/// broker answered (the dispatcher calls it on a blocking thread); the others
/// return at once. Errors are librdkafka's message, for logs.
pub(crate) trait PartitionControl: Send + Sync + 'static {
    /// Commits each partition's next offset synchronously.
    fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<(), String>;
    /// Stops fetching a partition.
    fn pause(&self, tp: &TopicPartition) -> Result<(), String>;
    /// Fetches a paused partition again.
    fn resume(&self, tp: &TopicPartition) -> Result<(), String>;
    /// Moves a partition's fetch position (asynchronously).
    fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<(), String>;
}

impl PartitionControl for BaseConsumer<WeirContext> {
    fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<(), String> {
        kafka::commit_sync(
            self,
            offsets
                .iter()
                .map(|(tp, next)| (&*tp.topic, tp.partition, *next)),
        )
        .map_err(|e| e.to_string())
    }

    fn pause(&self, tp: &TopicPartition) -> Result<(), String> {
        Consumer::pause(self, &kafka::one_partition(tp)).map_err(|e| e.to_string())
    }

    fn resume(&self, tp: &TopicPartition) -> Result<(), String> {
        Consumer::resume(self, &kafka::one_partition(tp)).map_err(|e| e.to_string())
    }

    fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<(), String> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(offset))
            .map_err(|e| e.to_string())?;
        self.seek_partitions(tpl, Duration::ZERO)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
