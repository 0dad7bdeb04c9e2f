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

/// A refused commit: librdkafka's message, and whether the refusal passes
/// by itself (a rebalance under way, the coordinator moving or loading, a
/// timeout, a broken connection), so that the same commit may go through in
/// a moment.
#[derive(Debug, Clone)]
pub(crate) struct CommitError {
    pub(crate) message: String,
    pub(crate) transient: bool,
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<rdkafka::error::KafkaError> for CommitError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        use rdkafka::types::RDKafkaErrorCode as C;
        // The consumer protocol (KIP-848): STALE_MEMBER_EPOCH means the
        // broker bumped the member's epoch while the commit was on its way;
        // the member keeps its partitions and the same commit goes through
        // with the new epoch. UNKNOWN_MEMBER_ID and FENCED_MEMBER_EPOCH mean
        // the membership is gone: the partitions' next owner starts from
        // the last commit (docs/reliability.md).
        // The classic protocol: ILLEGAL_GENERATION answers a commit the
        // broker read after the group moved to a new generation. Kafka reads
        // one connection's requests in order, so a commit sent while this
        // member's JoinGroup waits is read only when the join has ended;
        // librdkafka, joining, keeps the partitions (cooperative) and the
        // commit goes through in the new generation. Had the member lost its
        // partitions instead, librdkafka revokes them as lost, and Weir
        // commits again only what it still owns.
        let transient = matches!(
            e.rdkafka_error_code(),
            Some(
                C::StaleMemberEpoch
                    | C::IllegalGeneration
                    | C::RebalanceInProgress
                    | C::CoordinatorLoadInProgress
                    | C::CoordinatorNotAvailable
                    | C::NotCoordinator
                    | C::RequestTimedOut
                    | C::OperationTimedOut
                    | C::NetworkException
                    | C::BrokerTransportFailure
                    | C::AllBrokersDown
            )
        );
        CommitError {
            message: e.to_string(),
            transient,
        }
    }
}

/// The partition controls the dispatcher uses. `commit` blocks until the
/// broker answered (the dispatcher calls it on a blocking thread); the others
/// return at once. Errors are librdkafka's message, for logs.
pub(crate) trait PartitionControl: Send + Sync + 'static {
    /// Commits each partition's next offset synchronously.
    fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<(), CommitError>;
    /// Whether this member still owns `tp` (a rebalance under way may have
    /// taken it, and a late commit must not land over its new owner's).
    fn owns(&self, tp: &TopicPartition) -> bool;
    /// Stops fetching a partition.
    fn pause(&self, tp: &TopicPartition) -> Result<(), String>;
    /// Fetches a paused partition again.
    fn resume(&self, tp: &TopicPartition) -> Result<(), String>;
    /// Moves a partition's fetch position (asynchronously).
    fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<(), String>;
    /// Asks the poll thread to move these partitions back (an aborted
    /// transaction's input is processed again); it answers with
    /// [`Event::Rewound`](crate::runtime::poller::Event::Rewound) once what
    /// follows comes from the new positions.
    fn rewind(&self, to: Vec<(TopicPartition, i64)>);
    /// The member's group metadata now (for offsets committed in a Kafka
    /// transaction); `None` outside a group.
    fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata>;
    /// Whether librdkafka considers the assignment lost (the session timed
    /// out, the member was fenced): nothing of it may be committed.
    fn assignment_lost(&self) -> bool;
    /// The dispatcher took `n` messages off the channel from the poll thread
    /// (which, without partition queues, stops reading while too many wait
    /// there: see `WeirContext::unclaimed`).
    fn claimed(&self, _n: usize) {}
}

impl PartitionControl for BaseConsumer<WeirContext> {
    fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<(), CommitError> {
        kafka::commit_sync(
            self,
            offsets
                .iter()
                .map(|(tp, next)| (&*tp.topic, tp.partition, *next)),
        )
        .map_err(CommitError::from)
    }

    fn owns(&self, tp: &TopicPartition) -> bool {
        !Consumer::assignment_lost(self) && self.context().owns(tp)
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

    fn rewind(&self, to: Vec<(TopicPartition, i64)>) {
        self.context().request_rewind(to);
    }

    fn claimed(&self, n: usize) {
        self.context().claimed(n);
    }

    fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        Consumer::group_metadata(self)
    }

    fn assignment_lost(&self) -> bool {
        Consumer::assignment_lost(self)
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as C;

    use super::CommitError;

    #[test]
    fn passing_refusals_are_transient_and_lost_membership_is_not() {
        for code in [
            C::RebalanceInProgress,
            C::NotCoordinator,
            C::CoordinatorLoadInProgress,
            C::RequestTimedOut,
            C::StaleMemberEpoch,
            C::IllegalGeneration,
        ] {
            assert!(
                CommitError::from(KafkaError::ConsumerCommit(code)).transient,
                "{code:?}"
            );
        }
        for code in [
            C::UnknownMemberId,
            C::FencedInstanceId,
            C::FencedMemberEpoch,
            C::OffsetMetadataTooLarge,
        ] {
            let e = CommitError::from(KafkaError::ConsumerCommit(code));
            assert!(!e.transient, "{code:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}
