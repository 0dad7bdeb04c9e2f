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
    Abort,
}

#[derive(Default)]
struct FakeTx {
    calls: Mutex<Vec<TxCall>>,
    /// The runs started so far (the harness's).
    started: Mutex<Option<Arc<Mutex<Vec<i64>>>>>,
    /// Commits fail for good.
    refuse: bool,
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
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    h.events
        .send(Event::Revoked {
            partitions: vec![tp()],
            reply,
            deadline: std::time::Instant::now() + Duration::from_secs(5),
        })
        .unwrap();
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
