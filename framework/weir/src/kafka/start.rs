//! Where a partition of an "every record counts" topic starts when the group
//! has never committed there: at its beginning, whatever `auto_offset_reset`
//! says. A plug-in names such topics (the retry tiers do: with `latest`, a
//! tier partition first assigned after a copy was written to it, by a member
//! that left while it waited, would otherwise start past the copy, whose
//! source offset is already committed, and the retry would be lost).

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

/// Sets `Offset::Beginning` in `tpl` for the partitions of `topics` that have
/// no committed offset. When the committed offsets cannot be read, those
/// partitions start at the beginning too (at least once: a record processed
/// again is absorbed by idempotency; a skipped one would be lost).
pub(crate) fn uncommitted_from_beginning<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &mut TopicPartitionList,
    topics: &HashSet<String>,
    group: &str,
) {
    let mut ask = TopicPartitionList::new();
    for e in tpl.elements() {
        if topics.contains(e.topic()) && matches!(e.offset(), Offset::Invalid | Offset::Stored) {
            ask.add_partition(e.topic(), e.partition());
        }
    }
    if ask.count() == 0 {
        return;
    }
    let uncommitted: Vec<(String, i32)> = match consumer
        .committed_offsets(ask.clone(), Duration::from_secs(10))
    {
        Ok(got) => got
            .elements()
            .iter()
            .filter(|e| !matches!(e.offset(), Offset::Offset(_)))
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect(),
        Err(e) => {
            tracing::warn!(group, error = %e, "cannot read the committed offsets of partitions that must start at their beginning when uncommitted; they start there");
            ask.elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect()
        }
    };
    for (topic, partition) in uncommitted {
        if let Err(e) = tpl.set_partition_offset(&topic, partition, Offset::Beginning) {
            tracing::warn!(group, topic, partition, error = %e, "cannot start an uncommitted partition at its beginning");
        } else {
            tracing::debug!(
                group,
                topic,
                partition,
                "partition has no commit: starts at its beginning"
            );
        }
    }
}
