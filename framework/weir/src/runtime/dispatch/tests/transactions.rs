//! Transaction mode without a broker: a recording `TxControl`.

use super::*;
use crate::producer::TransactionError;
use futures::future::BoxFuture;
use transaction::TxControl;

/// A transaction's offsets, and the runs started by the time of its commit.
type Committed = (Vec<(TopicPartition, i64)>, Vec<i64>);

#[derive(Debug, Clone, PartialEq)]
enum TxCall {
    Begin,
    /// The offsets, and the runs started by the time of the commit.
    Commit(Vec<(TopicPartition, i64)>, Vec<i64>),
    /// A commit the group refused (it moved on).
    Refused(Vec<(TopicPartition, i64)>, Vec<i64>),
    Abort,
}

#[derive(Default)]
struct FakeTx {
    calls: Mutex<Vec<TxCall>>,
    /// The runs started so far (the harness's).
    started: Mutex<Option<Arc<Mutex<Vec<i64>>>>>,
    /// Commits fail for good.
    refuse: bool,
    /// Commits refused, before one goes through, because the group moved
    /// (ILLEGAL_GENERATION).
    group_moved: Mutex<u32>,
}

impl FakeTx {
    fn calls(&self) -> Vec<TxCall> {
        self.calls.lock().unwrap().clone()
    }

    fn commits(&self) -> Vec<Committed> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                TxCall::Commit(o, s) => Some((o, s)),
                _ => None,
            })
            .collect()
    }
}

fn refused() -> TransactionError {
    TransactionError::State {
        transactional_id: "t".into(),
        what: "refused by the test",
    }
}

/// What librdkafka answers a transaction whose offsets reached the group
/// after a rebalance bumped its generation.
fn group_moved() -> TransactionError {
    TransactionError::MustAbort {
        transactional_id: "t".into(),
        source: rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::IllegalGeneration,
        ),
    }
}

impl TxControl for FakeTx {
    fn begin(&self) -> Result<(), TransactionError> {
        self.calls.lock().unwrap().push(TxCall::Begin);
        Ok(())
    }
    fn id(&self) -> String {
        "fake-tx".into()
    }
    fn commit(
        &self,
        offsets: Vec<(TopicPartition, i64)>,
        _group: Option<rdkafka::consumer::ConsumerGroupMetadata>,
    ) -> BoxFuture<'static, Result<(), TransactionError>> {
        let started = self
            .started
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| s.lock().unwrap().clone())
            .unwrap_or_default();
        if self.refuse {
            return Box::pin(async { Err(refused()) });
        }
        {
            let mut moved = self.group_moved.lock().unwrap();
            if *moved > 0 {
                *moved -= 1;
                self.calls
                    .lock()
                    .unwrap()
                    .push(TxCall::Refused(offsets, started));
                return Box::pin(async { Err(group_moved()) });
            }
        }
        self.calls
            .lock()
            .unwrap()
            .push(TxCall::Commit(offsets, started));
        Box::pin(async { Ok(()) })
    }
    fn abort(&self) -> BoxFuture<'static, Result<(), TransactionError>> {
        self.calls.lock().unwrap().push(TxCall::Abort);
        Box::pin(async { Ok(()) })
    }
}

fn start_tx(tx: FakeTx, shutdown_deadline: Duration) -> (Harness, Arc<FakeTx>) {
    let tx = Arc::new(tx);
    let h = start_with(
        limits(100, shutdown_deadline),
        FakeControl::default(),
        Some(tx.clone()),
    );
    *tx.started.lock().unwrap() = Some(h.started.clone());
    (h, tx)
}

/// Revokes partition 0 with a 5 s deadline; the poll thread's side of the answer.
fn revoke_partition_0(h: &Harness) -> std::sync::mpsc::Receiver<Vec<(TopicPartition, NextOffset)>> {
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    h.events
        .send(Event::Revoked {
            partitions: vec![tp()],
            reply,
            deadline: std::time::Instant::now() + Duration::from_secs(5),
        })
        .unwrap();
    answer
}

fn sorted(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_never_holds_a_message_past_the_offsets_it_commits() {
    let (mut h, tx) = start_tx(FakeTx::default(), Duration::from_secs(5));
    // Key a: 0 (slow) then 2, queued behind it; key b: 1.
    h.events
        .send(Event::Batch(vec![
            keyed(0, "a", "slow"),
            keyed(1, "b", "ok"),
            keyed(2, "a", "ok"),
        ]))
        .unwrap();
    until("0 and 1 started", || h.started.lock().unwrap().len() == 2).await;
    // Several commit ticks: the close waits for 0, and nothing new starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.events
        .send(Event::Batch(vec![keyed(3, "c", "ok")]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(tx.commits(), vec![], "0 is still running");
    assert_eq!(
        sorted(h.started.lock().unwrap().clone()),
        vec![0, 1],
        "3 (fetched while closing) waits for the commit"
    );
    h.release.add_permits(1);
    until("two transactions", || tx.commits().len() >= 2).await;
    let commits = tx.commits();
    // The first holds 0 and 1 only: 2 and 3 (above the cut at 1) had not
    // started; its offsets end right after them.
    assert_eq!(commits[0], (vec![(tp(), 2)], vec![0, 1]));
    assert_eq!(commits[1].0, vec![(tp(), 4)]);
    assert_eq!(sorted(commits[1].1.clone()), vec![0, 1, 2, 3]);
    assert_eq!(tx.calls()[0], TxCall::Begin, "a transaction opens first");
    let report = h.stop().await;
    assert!(report.drained);
    assert!(!tx.calls().contains(&TxCall::Abort), "{:?}", tx.calls());
    assert_eq!(
        h.control.calls(),
        vec![],
        "the consumer commits nothing itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_is_answered_after_the_transaction_that_covers_it() {
    let (mut h, tx) = start_tx(FakeTx::default(), Duration::from_secs(5));
    let answer = ok_slow_ok_then_revoke(&h, std::time::Instant::now() + Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        matches!(answer.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)),
        "not answered while 1 runs"
    );
    assert!(
        tx.commits()
            .iter()
            .all(|(o, _)| o.iter().all(|(_, n)| *n <= 1)),
        "nothing past the slow message commits: {:?}",
        tx.commits()
    );
    h.release.add_permits(1);
    let got = answer_within(answer, Duration::from_secs(5)).await;
    assert_eq!(got, Some(vec![]), "the poll thread commits nothing");
    let commits = tx.commits();
    assert_eq!(
        commits.last().map(|c| c.0.clone()),
        Some(vec![(tp(), 3)]),
        "the revoked partition's offsets are in the transaction: {commits:?}"
    );
    let _ = h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_whose_deadline_passes_first_ends_the_run_and_aborts() {
    let (h, tx) = start_tx(FakeTx::default(), Duration::from_secs(5));
    let answer = ok_slow_ok_then_revoke(&h, std::time::Instant::now() + Duration::from_millis(200));
    let got = answer_within(answer, Duration::from_secs(5)).await;
    assert_eq!(got, Some(vec![]), "answered at its deadline");
    let r = h.run.await.unwrap();
    let e = r.expect_err("the run ends");
    assert!(e.to_string().contains("revoke"), "{e}");
    assert!(tx.calls().contains(&TxCall::Abort), "{:?}", tx.calls());
    assert!(
        tx.commits()
            .iter()
            .all(|(o, _)| o.iter().all(|(_, n)| *n <= 1)),
        "nothing past the slow message commits: {:?}",
        tx.commits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_commit_ends_the_run_and_aborts() {
    let (h, tx) = start_tx(
        FakeTx {
            refuse: true,
            ..FakeTx::default()
        },
        Duration::from_secs(5),
    );
    h.events
        .send(Event::Batch(vec![msg(0, "ok"), msg(1, "ok")]))
        .unwrap();
    let e = h.run.await.unwrap().expect_err("the run ends");
    assert!(e.to_string().contains("refused by the test"), "{e}");
    assert_eq!(tx.calls(), vec![TxCall::Begin, TxCall::Abort]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_the_last_transaction_or_aborts_it_at_the_deadline() {
    let (mut h, tx) = start_tx(FakeTx::default(), Duration::from_secs(5));
    h.events
        .send(Event::Batch(vec![msg(0, "ok"), msg(1, "ok")]))
        .unwrap();
    until("both ran", || h.started.lock().unwrap().len() == 2).await;
    let report = h.stop().await;
    assert!(report.drained);
    let calls = tx.calls();
    assert!(
        matches!(calls.last(), Some(TxCall::Commit(..))),
        "ends with a commit, no transaction opened after it: {calls:?}"
    );
    let last = tx
        .commits()
        .iter()
        .rev()
        .find_map(|(o, _)| o.first().map(|(_, n)| *n));
    assert_eq!(last, Some(2), "{calls:?}");

    // A message still running at the deadline: the transaction is aborted.
    let (mut h, tx) = start_tx(FakeTx::default(), Duration::from_millis(100));
    h.events
        .send(Event::Batch(vec![msg(0, "ok"), msg(1, "slow")]))
        .unwrap();
    until("both started", || h.started.lock().unwrap().len() == 2).await;
    let report = h.stop().await;
    assert!(!report.drained);
    assert_eq!(report.unfinished, 1);
    assert_eq!(tx.calls().last(), Some(&TxCall::Abort), "{:?}", tx.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_partitions_abort_the_transaction_and_commit_nothing() {
    let (h, tx) = start_tx(FakeTx::default(), Duration::from_secs(5));
    h.events
        .send(Event::Batch(vec![msg(0, "ok"), msg(1, "slow")]))
        .unwrap();
    until("both started", || h.started.lock().unwrap().len() == 2).await;
    let before = tx.commits().len();
    // The session timed out: librdkafka drops the membership and revokes
    // the partitions as lost.
    h.control
        .assignment_lost
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let answer = revoke_partition_0(&h);
    h.release.add_permits(1);
    let e = h.run.await.unwrap().expect_err("the run ends");
    assert!(e.to_string().contains("lost its partitions"), "{e}");
    assert_eq!(
        tx.commits().len(),
        before,
        "nothing committed after the loss"
    );
    assert_eq!(tx.calls().last(), Some(&TxCall::Abort), "{:?}", tx.calls());
    let _ = answer_within(answer, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_due_after_the_assignment_was_lost_is_not_sent() {
    let (h, tx) = start_tx(FakeTx::default(), Duration::from_secs(5));
    h.control
        .assignment_lost
        .store(true, std::sync::atomic::Ordering::SeqCst);
    h.events
        .send(Event::Batch(vec![msg(0, "ok"), msg(1, "ok")]))
        .unwrap();
    let e = h.run.await.unwrap().expect_err("the run ends");
    assert!(e.to_string().contains("lost its partitions"), "{e}");
    assert_eq!(tx.commits(), vec![], "no commit sent");
    assert_eq!(tx.calls(), vec![TxCall::Begin, TxCall::Abort]);
}

fn rewinds(h: &Harness) -> Vec<Vec<(TopicPartition, i64)>> {
    h.control
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Rewind(to) => Some(to),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_refused_as_the_group_moved_aborts_rewinds_and_processes_again() {
    let (mut h, tx) = start_tx(
        FakeTx {
            group_moved: Mutex::new(1),
            ..FakeTx::default()
        },
        Duration::from_secs(5),
    );
    h.events
        .send(Event::Batch(vec![msg(5, "ok"), msg(6, "ok"), msg(7, "ok")]))
        .unwrap();
    until("moved back", || !rewinds(&h).is_empty()).await;
    assert_eq!(
        rewinds(&h),
        vec![vec![(tp(), 5)]],
        "back to where the transaction began"
    );
    let calls = tx.calls();
    assert_eq!(calls[0], TxCall::Begin);
    assert!(
        matches!(&calls[1], TxCall::Refused(o, _) if *o == vec![(tp(), 8)]),
        "{calls:?}"
    );
    assert_eq!(calls[2..], [TxCall::Abort, TxCall::Begin], "{calls:?}");
    // Fetched before the seek (still on their way): dropped, not run.
    h.events
        .send(Event::Batch(vec![msg(8, "ok"), msg(9, "ok")]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(sorted(h.started.lock().unwrap().clone()), vec![5, 6, 7]);
    // The poll thread moved it back: from here on, the new position.
    h.events.send(Event::Rewound(vec![tp()])).unwrap();
    h.events
        .send(Event::Batch(vec![
            msg(5, "ok"),
            msg(6, "ok"),
            msg(7, "ok"),
            msg(8, "ok"),
        ]))
        .unwrap();
    let moved = |c: &Committed| !c.0.is_empty();
    until("committed", || tx.commits().iter().any(moved)).await;
    let (offsets, started) = tx.commits().into_iter().find(moved).unwrap();
    assert_eq!(offsets, vec![(tp(), 9)], "{:?}", tx.calls());
    assert_eq!(
        sorted(started),
        vec![5, 5, 6, 6, 7, 7, 8],
        "the aborted input ran again, once"
    );
    assert_eq!(h.stats.transactions_aborted(), 1);
    let report = h.stop().await;
    assert!(report.drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_refuses_commits_without_end_stops_the_member() {
    let (h, tx) = start_tx(
        FakeTx {
            group_moved: Mutex::new(u32::MAX),
            ..FakeTx::default()
        },
        Duration::from_secs(5),
    );
    let events = h.events.clone();
    // The poll thread's part: each rewind is served and the input comes again.
    let control = h.control.clone();
    let feeder = tokio::spawn(async move {
        let mut served = 0;
        let _ = events.send(Event::Batch(vec![msg(0, "ok"), msg(1, "ok")]));
        loop {
            let n = control
                .calls()
                .iter()
                .filter(|c| matches!(c, Call::Rewind(_)))
                .count();
            if n > served {
                served = n;
                let _ = events.send(Event::Rewound(vec![tp()]));
                let _ = events.send(Event::Batch(vec![msg(0, "ok"), msg(1, "ok")]));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let e = tokio::time::timeout(Duration::from_secs(20), h.run)
        .await
        .expect("the run ends")
        .unwrap()
        .expect_err("with an error");
    feeder.abort();
    assert!(e.to_string().contains("in a row"), "{e}");
    assert!(
        tx.commits().iter().all(|c| c.0.is_empty()),
        "{:?}",
        tx.calls()
    );
    assert_eq!(h.stats.transactions_aborted(), 10);
    assert_eq!(tx.calls().last(), Some(&TxCall::Abort));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_waiting_for_a_refused_commit_is_answered_and_the_rest_moves_back() {
    let (mut h, tx) = start_tx(
        FakeTx {
            group_moved: Mutex::new(1),
            ..FakeTx::default()
        },
        Duration::from_secs(5),
    );
    let other = TopicPartition {
        topic: "t".into(),
        partition: 1,
    };
    h.events
        .send(Event::Assigned(vec![(other.clone(), None)]))
        .unwrap();
    let mut m = msg(3, "ok");
    m.partition = 1;
    h.events
        .send(Event::Batch(vec![msg(0, "slow"), m]))
        .unwrap();
    until("both started", || h.started.lock().unwrap().len() == 2).await;
    let answer = revoke_partition_0(&h);
    h.release.add_permits(1);
    let got = answer_within(answer, Duration::from_secs(5)).await;
    assert_eq!(
        got,
        Some(vec![]),
        "answered, nothing committed by the poll thread"
    );
    until("moved back", || !rewinds(&h).is_empty()).await;
    assert_eq!(
        rewinds(&h),
        vec![vec![(other, 3)]],
        "only the partition still owned moves back"
    );
    assert!(
        tx.commits().iter().all(|c| c.0.is_empty()),
        "{:?}",
        tx.calls()
    );
    let _ = h.stop().await;
}
