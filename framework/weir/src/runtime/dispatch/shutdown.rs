//! Shutdown: stop fetching, drop what has not started, drain in-flight runs
//! up to `shutdown_deadline` (still answering revokes at their deadline and
//! awaiting the commit under way), cancel the rest, commit once more (again
//! while the broker refuses it for a moment).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::super::RunReport;
use super::super::poller::Event;
use super::{Dispatcher, PartitionControl, RunMessage};
use crate::stats::ConsumerStats;

impl<R: RunMessage, K: PartitionControl> Dispatcher<R, K> {
    /// Stops fetching, drops what has not started, waits for in-flight messages
    /// up to `shutdown_deadline`, cancels the rest, and commits synchronously.
    pub(super) async fn shut_down(mut self, events: &mut UnboundedReceiver<Event>) -> RunReport {
        self.stop_poller.store(true, Relaxed);
        if self.tx.is_some() {
            return self.shut_down_in_transactions(events).await;
        }
        for st in self.parts.values_mut() {
            st.ready.clear();
            st.lanes.clear();
            st.delayed.clear();
        }
        self.delayed_total = 0;
        ConsumerStats::set(&self.stats.delayed, 0);
        self.runnable.clear();
        let deadline = Instant::now() + self.limits.shutdown_deadline;
        while self.in_flight > 0 {
            let revoke_deadline = self.revokes.iter().map(|r| r.deadline).min();
            tokio::select! {
                Some(done) = self.tasks.join_next() => {
                    if let Err(e) = self.on_join(done) {
                        tracing::error!(error = %e, "during shutdown");
                    }
                }
                ev = events.recv() => match ev {
                    Some(Event::Revoked { partitions, reply, deadline }) => self.begin_revoke(partitions, reply, deadline),
                    Some(_) => {}
                    None => {}
                },
                // A revoke waiting here is answered once the commit under way
                // is done (or at its deadline): the poll thread is waiting
                // for it, and gives up at that deadline.
                done = async { self.commit_pending.as_mut().expect("guarded").await }, if self.commit_pending.is_some() => {
                    self.commit_pending = None;
                    self.on_commit_done(done);
                }
                _ = tokio::time::sleep_until(revoke_deadline.unwrap_or(deadline)), if revoke_deadline.is_some_and(|r| r < deadline) => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
            // Drop anything admitted-but-queued by completions.
            for st in self.parts.values_mut() {
                st.ready.clear();
            }
            self.finish_revokes(false);
        }
        let unfinished = self.in_flight;
        let drained = unfinished == 0;
        if !drained {
            self.cancel_unfinished(unfinished).await;
        }
        self.final_commit(deadline).await;
        let halted = self.halted_partitions();
        self.stats.in_flight_now(0);
        RunReport {
            drained,
            unfinished,
            halted,
        }
    }

    /// [`shut_down`](Self::shut_down) in transaction mode: the last close
    /// and commit, or an abort when they cannot finish in time.
    async fn shut_down_in_transactions(
        mut self,
        events: &mut UnboundedReceiver<Event>,
    ) -> RunReport {
        let committed = self.tx_shut_down(events).await;
        let unfinished = self.in_flight;
        if unfinished > 0 {
            self.cancel_unfinished(unfinished).await;
        }
        // Revokes still waiting: answered (their partitions' work is
        // committed, or aborted and processed again by the next owner).
        if let Some(tx) = &mut self.tx
            && !committed
        {
            tx.done = u64::MAX;
        }
        self.finish_revokes(true);
        let halted = self.halted_partitions();
        self.stats.in_flight_now(0);
        RunReport {
            drained: committed && unfinished == 0,
            unfinished,
            halted,
        }
    }

    /// The partitions halted by the failure sink, for the run's report.
    fn halted_partitions(&self) -> Vec<crate::runtime::HaltedPartition> {
        self.parts
            .values()
            .filter_map(|s| s.halted.clone())
            .collect()
    }

    /// The shutdown deadline passed: cancels the runs still going, gives
    /// them a moment to end at their next poll, then aborts them.
    async fn cancel_unfinished(&mut self, unfinished: usize) {
        tracing::warn!(
            group = %self.group_id, in_flight = unfinished,
            "shutdown deadline passed: cancelling unfinished messages; they are processed again after restart"
        );
        for st in self.parts.values() {
            st.cancel.cancel();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits for the interval commit under way, answers the revokes left, and
    /// commits what finished since, synchronously. A passing refusal (a
    /// rebalance under way, the coordinator moving) is tried again until the
    /// shutdown deadline, or [`FINAL_COMMIT_GRACE`] when the drain used it
    /// up; partitions this member no longer owns are left to their new owner.
    async fn final_commit(&mut self, deadline: Instant) {
        if let Some(pending) = self.commit_pending.take() {
            let done = pending.await;
            self.on_commit_done(done);
        }
        self.finish_revokes(true);
        let (list, _) = self.commit_list();
        let deadline = deadline.max(Instant::now() + FINAL_COMMIT_GRACE);
        let mut backoff = Duration::from_millis(50);
        let mut list = list;
        loop {
            list.retain(|(tp, _)| {
                let ours = self.consumer.owns(tp);
                if !ours {
                    tracing::info!(group = %self.group_id, partition = %tp, "not committing a partition this member lost while stopping; its new owner goes on from the last commit");
                }
                ours
            });
            if list.is_empty() {
                return;
            }
            let consumer = self.consumer.clone();
            let to_commit = list.clone();
            let e = match tokio::task::spawn_blocking(move || consumer.commit(&to_commit)).await {
                Ok(Ok(())) => return ConsumerStats::add(&self.stats.commits, 1),
                Ok(Err(e)) => e,
                Err(e) => return tracing::warn!(error = %e, "final commit task failed"),
            };
            ConsumerStats::add(&self.stats.commit_failures, 1);
            if !e.transient || Instant::now() + backoff > deadline {
                tracing::warn!(group = %self.group_id, error = %e, "final commit failed; messages after the last commit are processed again");
                return;
            }
            tracing::debug!(group = %self.group_id, error = %e, ?backoff, "final commit refused for now; trying again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// How long a refused final commit is tried again when the drain used up the
/// shutdown deadline (a rebalance under way usually settles within it).
const FINAL_COMMIT_GRACE: Duration = Duration::from_secs(3);
