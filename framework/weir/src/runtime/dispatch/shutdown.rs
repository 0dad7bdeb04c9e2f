//! Shutdown: stop fetching, drop what has not started, drain in-flight runs
//! up to `shutdown_deadline` (still answering revokes at their deadline and
//! awaiting the commit under way), cancel the rest, commit once more.

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
        self.final_commit().await;
        let halted = self
            .parts
            .values()
            .filter_map(|s| s.halted.clone())
            .collect();
        self.stats.in_flight_now(0);
        RunReport {
            drained,
            unfinished,
            halted,
        }
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
    /// commits what finished since, synchronously.
    async fn final_commit(&mut self) {
        if let Some(pending) = self.commit_pending.take() {
            let done = pending.await;
            self.on_commit_done(done);
        }
        self.finish_revokes(true);
        let (list, _) = self.commit_list();
        if list.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        match tokio::task::spawn_blocking(move || consumer.commit(&list)).await {
            Ok(Ok(())) => ConsumerStats::add(&self.stats.commits, 1),
            Ok(Err(e)) => {
                ConsumerStats::add(&self.stats.commit_failures, 1);
                tracing::warn!(group = %self.group_id, error = %e, "final commit failed; messages after the last commit are processed again");
            }
            Err(e) => tracing::warn!(error = %e, "final commit task failed"),
        }
    }
}
