//! The librdkafka adapter for commits and metadata: the one commit call
//! (interval, revoke, final and replay commits all go through
//! [`commit_sync`]) and the one rule for a missing topic
//! ([`topic_partitions`]), and where a partition without a commit starts
//! when a plug-in asks for its beginning ([`start`]). It knows nothing of processors, tiers or the
//! dispatcher's state; the dispatcher reaches it through its
//! `PartitionControl` trait (`runtime/dispatch/control.rs`).

mod start;

pub(crate) use start::uncommitted_from_beginning;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use crate::message::TopicPartition;

/// Commits each partition's next offset and waits for the broker's answer.
pub(crate) fn commit_sync<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: impl IntoIterator<Item = (impl AsRef<str>, i32, i64)>,
) -> KafkaResult<()> {
    consumer.commit(&partition_list(offsets)?, CommitMode::Sync)
}

/// Each partition's next offset, as librdkafka's list (for commits, in a
/// consumer or in a transaction).
pub(crate) fn partition_list(
    offsets: impl IntoIterator<Item = (impl AsRef<str>, i32, i64)>,
) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, next) in offsets {
        tpl.add_partition_offset(topic.as_ref(), partition, Offset::Offset(next))?;
    }
    Ok(tpl)
}

/// The partition ids of `topic`, or `None` when the topic does not exist for
/// this client: absent from the answer, answered with an error
/// (unknown topic, not authorised) or without partitions. `Err` is a failed
/// request (brokers unreachable, timeout).
pub(crate) fn topic_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<Option<Vec<i32>>> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .first()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect()))
}

/// A one-partition list, for pause and resume.
pub(crate) fn one_partition(tp: &TopicPartition) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.topic, tp.partition);
    tpl
}
