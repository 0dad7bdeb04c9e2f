//! Under the consumer protocol (KIP-848), a member the broker does not admit
//! gets no partitions and no error: librdkafka 2.12 keeps retrying its first
//! heartbeat silently. The common cause is a live classic group Kafka
//! refuses to upgrade (its cooperative-sticky members' assignments carry
//! assignor userData, KAFKA-18134). This check looks the group up while the
//! member has no partitions and says so, once, in words an operator can act on.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use tokio_util::sync::CancellationToken;

use super::poller::WeirContext;
use crate::stats::ConsumerStats;

/// How long a member may have no partitions before the group is looked up.
const CHECK_EVERY: Duration = Duration::from_secs(10);

pub(super) fn spawn_check(
    consumer: Weak<BaseConsumer<WeirContext>>,
    stats: Arc<ConsumerStats>,
    group: String,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut told = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            if stats.assigned_partitions() > 0 {
                ConsumerStats::set(&stats.group_upgrade_refused, 0);
                continue;
            }
            let Some(c) = consumer.upgrade() else { return };
            let g = group.clone();
            let described = tokio::task::spawn_blocking(move || {
                weir_ffi::describe_consumer_groups(c.client(), &[&g], Duration::from_secs(10))
            })
            .await;
            let d = match described {
                Ok(Ok(mut d)) if !d.is_empty() => d.remove(0),
                Ok(Err(e)) => {
                    tracing::debug!(group = %group, error = %e, "describing the group failed");
                    continue;
                }
                _ => continue,
            };
            if d.group_type == weir_ffi::GroupType::Classic && !d.members.is_empty() {
                ConsumerStats::set(&stats.group_upgrade_refused, 1);
                if !told {
                    told = true;
                    tracing::error!(
                        group = %group,
                        classic_members = d.members.len(),
                        assignor = %d.assignor,
                        "the broker has not admitted this consumer-protocol member: the group is still a live classic group, which Kafka refuses to upgrade when its members' assignments carry assignor userData (librdkafka's cooperative-sticky does; the broker logs 'Cannot upgrade classic group'). Stop the classic members first (offline migration), see docs/group-protocols.md"
                    );
                }
            } else {
                ConsumerStats::set(&stats.group_upgrade_refused, 0);
            }
        }
    })
}
