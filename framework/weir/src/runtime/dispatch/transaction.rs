//! Kafka transactions (consume-transform-produce, exactly once inside Kafka):
//! the member's outputs, retry-tier and DLQ copies go through one
//! transactional producer, and each commit interval ends its transaction
//! together with the offsets of what it finished.
//!
//! A transaction may only commit the outputs of messages whose offsets it
//! commits: otherwise a crash after the commit would process a message
//! again whose outputs are already visible. Messages of one partition finish
//! out of order (keys run in parallel), so at a commit tick the dispatcher
//! *closes*: each partition's cut is the highest offset it has started, only
//! messages at or below their cut start from then on (lanes keep key order,
//! so every message below the cut gets its turn), and once every one of them
//! has finished, the finished offsets are exactly a prefix of each partition
//! up to its cut. The transaction then commits them with those positions
//! and the member's group metadata (KIP-447: a member the group has moved
//! past cannot commit), a new transaction begins and the close ends.
//!
//! A revoke closes at once and is answered after the commit that covers its
//! partitions (the poll thread commits nothing itself then).
//!
//! A commit the group refuses because it moved on while the offsets were on
//! their way (a rebalance bumped the generation: ILLEGAL_GENERATION,
//! REBALANCE_IN_PROGRESS, STALE_MEMBER_EPOCH) is not the member's end: the
//! transaction is aborted, each partition with work in it moves back to
//! where the transaction began (the poll thread seeks and then sends
//! [`Event::Rewound`](super::super::poller::Event::Rewound); what it fetched
//! before is dropped), and that input is processed again in the next
//! transaction. What cannot commit otherwise (a fenced producer, lost
//! partitions, a transaction that must abort for another reason, a revoke
//! whose deadline passed first, the group refusing ten commits in a row)
//! ends the run with an error: the member leaves the group, the open
//! transaction is aborted (by Weir, or by the broker when the next producer
//! with the same `transactional.id` starts), and the partitions' next owner
//! processes everything after the last commit again, whose outputs no
//! `read_committed` reader ever saw.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::consumer::ConsumerGroupMetadata;
use tokio::time::Instant;

use super::{Dispatcher, PartitionControl, PartitionState, RunMessage};
use crate::error::WeirError;
use crate::message::TopicPartition;
use crate::offsets::NextOffset;
use crate::producer::{TransactionError, TransactionalProducer};
use crate::stats::ConsumerStats;

/// What the dispatcher asks of a transactional producer; the producer
/// implements it, tests implement it with a recorder.
pub(crate) trait TxControl: Send + Sync + 'static {
    fn begin(&self) -> Result<(), TransactionError>;
    /// The producer's `transactional.id` (for errors).
    fn id(&self) -> String;
    fn commit(
        &self,
        offsets: Vec<(TopicPartition, i64)>,
        group: Option<ConsumerGroupMetadata>,
    ) -> BoxFuture<'static, Result<(), TransactionError>>;
    fn abort(&self) -> BoxFuture<'static, Result<(), TransactionError>>;
}

impl TxControl for TransactionalProducer {
    fn begin(&self) -> Result<(), TransactionError> {
        TransactionalProducer::begin(self)
    }

    fn id(&self) -> String {
        self.transactional_id().to_string()
    }

    fn commit(
        &self,
        offsets: Vec<(TopicPartition, i64)>,
        group: Option<ConsumerGroupMetadata>,
    ) -> BoxFuture<'static, Result<(), TransactionError>> {
        let p = self.clone();
        Box::pin(async move { p.commit(&offsets, group).await })
    }

    fn abort(&self) -> BoxFuture<'static, Result<(), TransactionError>> {
        let p = self.clone();
        Box::pin(async move {
            if p.in_transaction() {
                p.abort().await
            } else {
                Ok(())
            }
        })
    }
}

/// How long a commit answered "try again" is tried again.
const COMMIT_RETRY_FOR: Duration = Duration::from_secs(30);

/// Transactions aborted in a row because the group moved (each moves its
/// partitions back) before the member stops: a group that never settles.
const MAX_ABORTS_IN_A_ROW: u32 = 10;

pub(super) type TxCommitResult = (Vec<(u64, NextOffset)>, Result<(), TransactionError>);

/// The dispatcher's transaction state.
pub(super) struct TxMode {
    pub(super) control: Arc<dyn TxControl>,
    /// A close is under way: only messages at or below their partition's
    /// cut start.
    pub(super) closing: bool,
    /// The transaction's commit under way.
    pub(super) commit: Option<tokio::task::JoinHandle<TxCommitResult>>,
    /// Commits started and finished: a revoke waits for the commit that
    /// covers its partitions.
    pub(super) started: u64,
    pub(super) done: u64,
    /// Why the run must end (a revoke's deadline passed before its commit).
    pub(super) failed: Option<String>,
    /// The open transaction was aborted: nothing commits any more.
    pub(super) aborted: bool,
    /// Transactions aborted since the last commit because the group moved.
    pub(super) aborts_in_a_row: u32,
}

impl TxMode {
    pub(super) fn new(control: Arc<dyn TxControl>) -> Self {
        TxMode {
            control,
            closing: false,
            commit: None,
            started: 0,
            done: 0,
            failed: None,
            aborted: false,
            aborts_in_a_row: 0,
        }
    }
}

/// Whether `st` has a message ready that may start now.
pub(super) fn may_start(st: &PartitionState, closing: bool) -> bool {
    if closing {
        st.cut
            .is_some_and(|cut| st.ready.iter().any(|(_, m)| m.offset <= cut))
    } else {
        !st.ready.is_empty()
    }
}

/// The next ready message of `st` that may start: the first one, or while
/// closing the first at or below the cut.
pub(super) fn next_ready(
    st: &mut PartitionState,
    closing: bool,
) -> Option<(crate::scheduler::Lane, Arc<crate::message::RawMessage>)> {
    if !closing {
        return st.ready.pop_front();
    }
    let cut = st.cut?;
    let i = st.ready.iter().position(|(_, m)| m.offset <= cut)?;
    st.ready.remove(i)
}

impl<R: RunMessage, K: PartitionControl> Dispatcher<R, K> {
    /// Runs in transactions through `control` (see the module docs).
    pub(crate) fn with_transactions(mut self, control: Arc<dyn TxControl>) -> Self {
        self.tx = Some(TxMode::new(control));
        self
    }

    pub(super) fn tx_closing(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| t.closing)
    }

    /// Opens the first transaction.
    pub(super) fn tx_begin_first(&mut self) -> Result<(), WeirError> {
        match &self.tx {
            Some(tx) => tx
                .control
                .begin()
                .map_err(|e| fatal("beginning a transaction", e)),
            None => Ok(()),
        }
    }

    /// Starts a close: each partition's cut is the highest offset it started.
    pub(super) fn begin_close(&mut self) {
        let Some(tx) = &mut self.tx else {
            return;
        };
        if tx.closing {
            return;
        }
        tx.closing = true;
        for st in self.parts.values_mut() {
            st.cut = st.max_started;
        }
    }

    /// Every message at or below its partition's cut has finished (a halted
    /// partition's runs have ended).
    fn close_complete(&self) -> bool {
        self.parts.values().all(|st| {
            if st.halted.is_some() {
                return st.in_flight == 0;
            }
            match st.cut {
                None => true,
                Some(cut) => st.tracker.committable().is_some_and(|c| c.0 > cut),
            }
        })
    }

    /// Starts the transaction's commit once the close is complete.
    pub(super) fn tx_maybe_commit(&mut self) {
        let ready = match &self.tx {
            Some(tx) => tx.closing && tx.commit.is_none() && tx.failed.is_none(),
            None => false,
        };
        if !ready || !self.close_complete() {
            return;
        }
        self.publish_views();
        let (list, marks) = self.positions_moved(true);
        let consumer = self.consumer.clone();
        let group = self.group_id.to_string();
        let tx = self.tx.as_mut().expect("checked");
        let control = tx.control.clone();
        tx.started += 1;
        tx.commit = Some(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut backoff = Duration::from_millis(50);
            let r = loop {
                // The metadata first, then the check: metadata read after
                // librdkafka dropped the membership must not be used (the
                // broker takes offsets without a member id as an admin's).
                let metadata = consumer.group_metadata();
                if consumer.assignment_lost() {
                    break Err(TransactionError::PartitionsLost {
                        transactional_id: control.id(),
                    });
                }
                match control.commit(list.clone(), metadata).await {
                    Err(e @ TransactionError::Retry { .. }) => {
                        if started.elapsed() + backoff > COMMIT_RETRY_FOR {
                            break Err(e);
                        }
                        tracing::debug!(group, error = %e, "transaction commit: trying again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                    r => break r,
                }
            };
            metrics::histogram!("weir_commit_seconds", "group" => group)
                .record(started.elapsed().as_secs_f64());
            (marks, r)
        }));
    }

    /// The commit ended: on success the close ends and, when `reopen`, the
    /// next transaction begins. A commit the group refused because it moved
    /// on (a rebalance while the offsets were on their way) is aborted and
    /// its partitions move back to the last commit (see
    /// [`tx_abort_and_rewind`](Self::tx_abort_and_rewind)); any other
    /// failure ends the run.
    pub(super) async fn on_tx_commit_done(
        &mut self,
        done: Result<TxCommitResult, tokio::task::JoinError>,
        reopen: bool,
    ) -> Result<(), WeirError> {
        let tx = self.tx.as_mut().expect("transaction mode");
        tx.commit = None;
        let (marks, result) = match done {
            Ok(r) => r,
            Err(e) => {
                return Err(WeirError::Fatal(format!(
                    "the transaction's commit task failed: {e}"
                )));
            }
        };
        if let Err(e) = result {
            ConsumerStats::add(&self.stats.commit_failures, 1);
            let passing = reopen && e.group_moved() && !self.consumer.assignment_lost();
            if passing && tx.aborts_in_a_row < MAX_ABORTS_IN_A_ROW {
                return self.tx_abort_and_rewind(e).await;
            }
            if passing {
                return Err(fatal(
                    &format!(
                        "committing a transaction ({MAX_ABORTS_IN_A_ROW} refused in a row as the group moved: is the group rebalancing without end?)"
                    ),
                    e,
                ));
            }
            return Err(fatal("committing a transaction", e));
        }
        ConsumerStats::add(&self.stats.commits, 1);
        tx.aborts_in_a_row = 0;
        for (epoch, c) in marks {
            if let Some(st) = self.parts.get_mut(&epoch) {
                st.tx_start = Some(c.0);
                st.tx_committed = Some(c);
            }
        }
        self.tx_close_ended(reopen)
    }

    /// The close ended (committed, or aborted and moved back): the next
    /// transaction begins when `reopen`, and a revoke that came meanwhile
    /// starts the next close.
    fn tx_close_ended(&mut self, reopen: bool) -> Result<(), WeirError> {
        let tx = self.tx.as_mut().expect("transaction mode");
        tx.done += 1;
        tx.closing = false;
        for st in self.parts.values_mut() {
            st.cut = None;
        }
        if reopen {
            let tx = self.tx.as_ref().expect("transaction mode");
            tx.control
                .begin()
                .map_err(|e| fatal("beginning the next transaction", e))?;
            // A revoke that came while this commit ran waits for the next.
            if self
                .revokes
                .iter()
                .any(|r| r.after_commit > self.tx.as_ref().map_or(0, |t| t.done))
            {
                self.begin_close();
            }
        }
        Ok(())
    }

    /// The group refused the commit because it moved on while the offsets
    /// were on their way (its generation or the member's epoch changed):
    /// the member may still own its partitions, so instead of stopping it
    /// aborts the transaction (no `read_committed` reader ever sees its
    /// records) and moves each partition with work in it back to where the
    /// transaction began, to process that input again in the next one.
    /// Nothing runs now: the close had finished everything up to its cuts and
    /// started nothing past them. Revoked partitions waiting for this commit
    /// are answered (their next owner starts from the last commit).
    async fn tx_abort_and_rewind(&mut self, e: TransactionError) -> Result<(), WeirError> {
        let tx = self.tx.as_mut().expect("transaction mode");
        tracing::warn!(
            group = %self.group_id,
            error = %e,
            "the group moved on while the transaction committed: aborting it and processing its input again from the last commit"
        );
        tx.control
            .abort()
            .await
            .map_err(|a| fatal("aborting a transaction the group refused", a))?;
        tx.aborts_in_a_row += 1;
        ConsumerStats::add(&self.stats.transactions_aborted, 1);
        let mut rewinds = Vec::new();
        let mut epochs = Vec::new();
        for (&epoch, st) in self.parts.iter_mut() {
            st.last_committed = st.tx_committed;
            if st.revoking {
                continue;
            }
            let Some(from) = st.tx_start else {
                continue;
            };
            // Nothing of this partition finished in the aborted transaction.
            if st.tracker.committable().is_none_or(|c| c.0 <= from) {
                continue;
            }
            let (_, delayed) = Self::start_over(st);
            self.delayed_total -= delayed;
            ConsumerStats::sub(&self.stats.delayed, delayed as u64);
            st.rewinding = true;
            rewinds.push((st.tp.clone(), from));
            epochs.push(epoch);
        }
        tracing::info!(group = %self.group_id, partitions = rewinds.len(), "moving partitions back to the last transaction commit");
        self.consumer.rewind(rewinds);
        self.tx_close_ended(true)?;
        for epoch in epochs {
            self.check_pause(epoch);
        }
        Ok(())
    }

    /// The poll thread moved `tps` back: what arrives of them from now on
    /// comes from the new positions.
    pub(super) fn rewound(&mut self, tps: Vec<TopicPartition>) {
        for tp in tps {
            if let Some(st) = self.by_tp.get(&tp).and_then(|e| self.parts.get_mut(e)) {
                st.rewinding = false;
            }
        }
    }

    /// The commit a revoke arriving now waits for (closing if need be).
    pub(super) fn tx_revoke_needs(&mut self) -> u64 {
        let lost = self.consumer.assignment_lost();
        let Some(tx) = &mut self.tx else {
            return 0;
        };
        if lost && tx.failed.is_none() {
            // Nothing of the open transaction may commit now.
            tx.failed = Some(
                TransactionError::PartitionsLost {
                    transactional_id: tx.control.id(),
                }
                .to_string(),
            );
        }
        if tx.commit.is_some() {
            // Its close was complete: nothing has started since, so it
            // covers everything these partitions finished.
            tx.started
        } else {
            let next = tx.started + 1;
            self.begin_close();
            next
        }
    }

    /// Whether the transaction's commit a revoke waits for is done; a revoke
    /// whose deadline passed first ends the run.
    pub(super) fn tx_revoke_answerable(&mut self, after_commit: u64, late: bool) -> bool {
        let Some(tx) = &mut self.tx else {
            return true;
        };
        if tx.done >= after_commit {
            return true;
        }
        if late && tx.failed.is_none() {
            tx.failed = Some(
                "a revoke's deadline passed before the transaction covering its partitions \
                 committed (raise revoke_deadline above the time a commit interval's messages \
                 take, or shorten commit_interval); the member stops and the transaction is \
                 aborted, so the partitions' next owner processes them again"
                    .into(),
            );
        }
        late
    }

    /// Why the run must end, if it must.
    pub(super) fn tx_failure(&mut self) -> Option<WeirError> {
        self.tx
            .as_mut()
            .and_then(|t| t.failed.take())
            .map(WeirError::Fatal)
    }

    /// Aborts the open transaction (best effort: the broker aborts it anyway
    /// when the next producer with the same id starts, or at its timeout).
    pub(super) async fn tx_abort(&mut self) {
        let Some(tx) = &mut self.tx else {
            return;
        };
        if tx.aborted {
            return;
        }
        tx.aborted = true;
        if let Some(pending) = tx.commit.take() {
            pending.abort();
        }
        if let Err(e) = tx.control.abort().await {
            tracing::warn!(group = %self.group_id, error = %e, "aborting the transaction failed; the broker aborts it when the member's next producer starts or at transaction.timeout.ms");
        }
    }

    /// Shutdown in transaction mode: close (within `shutdown_deadline`),
    /// commit, and abort instead when the close or the commit cannot finish.
    pub(super) async fn tx_shut_down(
        &mut self,
        events: &mut tokio::sync::mpsc::UnboundedReceiver<super::super::poller::Event>,
    ) -> bool {
        use super::super::poller::Event;
        for st in self.parts.values_mut() {
            st.delayed.clear();
        }
        self.delayed_total = 0;
        ConsumerStats::set(&self.stats.delayed, 0);
        if self.tx.as_ref().is_some_and(|t| t.aborted) {
            return false;
        }
        let deadline = Instant::now() + self.limits.shutdown_deadline;
        // A close under way keeps its cuts; a commit under way is awaited.
        self.begin_close();
        let committed = loop {
            let before = self.tx.as_ref().map_or(0, |t| t.done);
            if let Err(e) = self.dispatch_ready() {
                tracing::error!(error = %e, "during shutdown");
            }
            self.tx_maybe_commit();
            let pending = self.tx.as_ref().is_some_and(|t| t.commit.is_some());
            tokio::select! {
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = self.on_join(done) {
                        tracing::error!(error = %e, "during shutdown");
                    }
                }
                ev = events.recv() => if let Some(Event::Revoked { partitions, reply, deadline }) = ev {
                    self.begin_revoke(partitions, reply, deadline);
                },
                done = async { self.tx.as_mut().and_then(|t| t.commit.as_mut()).expect("guarded").await }, if pending => {
                    match self.on_tx_commit_done(done, false).await {
                        Ok(()) => {}
                        Err(e) => {
                            tracing::warn!(group = %self.group_id, error = %e, "final transaction commit failed: it is aborted; messages after the last commit are processed again");
                            break false;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break false,
            }
            self.finish_revokes(false);
            if self.tx.as_ref().map_or(0, |t| t.done) > before {
                break true;
            }
        };
        if !committed {
            self.tx_abort().await;
        }
        committed
    }
}

fn fatal(doing: &str, e: TransactionError) -> WeirError {
    WeirError::Fatal(format!(
        "{doing}: {e}. The member stops; the open transaction is aborted and its input processed again by the partitions' next owner"
    ))
}
