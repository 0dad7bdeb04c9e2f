use super::*;

// ---- The dispatcher without a broker: a recording `PartitionControl` and a
// scripted `RunMessage`.

use std::sync::Mutex;

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::sync::{Semaphore, oneshot};

mod transactions;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Commit(Vec<(TopicPartition, i64)>),
    Pause(TopicPartition),
    Resume(TopicPartition),
    Seek(TopicPartition, i64),
    Rewind(Vec<(TopicPartition, i64)>),
}

#[derive(Default)]
struct FakeControl {
    calls: Mutex<Vec<Call>>,
    /// Commits that fail before one succeeds.
    failing_commits: Mutex<u32>,
    /// The injected failures are for good (not a passing refusal).
    failing_for_good: bool,
    /// Partitions this member no longer owns.
    lost: Mutex<Vec<TopicPartition>>,
    /// The whole assignment is lost (librdkafka's `assignment_lost`).
    assignment_lost: std::sync::atomic::AtomicBool,
}

impl FakeControl {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The last committed next offset of `tp`.
    fn committed(&self, tp: &TopicPartition) -> Option<i64> {
        self.calls().iter().rev().find_map(|c| match c {
            Call::Commit(list) => list.iter().find(|(t, _)| t == tp).map(|(_, o)| *o),
            _ => None,
        })
    }
}

impl PartitionControl for FakeControl {
    fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<(), CommitError> {
        let mut failing = self.failing_commits.lock().unwrap();
        if *failing > 0 {
            *failing -= 1;
            return Err(CommitError {
                message: "injected commit failure".into(),
                transient: !self.failing_for_good,
            });
        }
        self.calls
            .lock()
            .unwrap()
            .push(Call::Commit(offsets.to_vec()));
        Ok(())
    }
    fn owns(&self, tp: &TopicPartition) -> bool {
        !self.lost.lock().unwrap().contains(tp)
    }
    fn pause(&self, tp: &TopicPartition) -> Result<(), String> {
        self.calls.lock().unwrap().push(Call::Pause(tp.clone()));
        Ok(())
    }
    fn resume(&self, tp: &TopicPartition) -> Result<(), String> {
        self.calls.lock().unwrap().push(Call::Resume(tp.clone()));
        Ok(())
    }
    fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Seek(tp.clone(), offset));
        Ok(())
    }
    fn rewind(&self, to: Vec<(TopicPartition, i64)>) {
        self.calls.lock().unwrap().push(Call::Rewind(to));
    }
    fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        None
    }
    fn assignment_lost(&self) -> bool {
        self.assignment_lost
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Payload `slow` waits for a permit of `release` (or its cancellation),
/// `poison` halts, anything else finishes at once.
struct Script {
    release: Arc<Semaphore>,
    cancelled: Arc<std::sync::atomic::AtomicUsize>,
    /// Offsets whose runs started, in order.
    started: Arc<Mutex<Vec<i64>>>,
    /// Messages with payload `keep`, kept past their run (as a processor
    /// may keep a message it was given).
    kept: Arc<Mutex<Vec<Arc<RawMessage>>>>,
}

impl RunMessage for Script {
    async fn run_message(
        self: Arc<Self>,
        raw: Arc<RawMessage>,
        cancel: Arc<CancellationToken>,
    ) -> Outcome {
        self.started.lock().unwrap().push(raw.offset);
        if raw.payload.as_deref() == Some(b"keep") {
            self.kept.lock().unwrap().push(raw.clone());
        }
        match raw.payload.as_deref() {
            Some(b"slow") => tokio::select! {
                p = self.release.acquire() => { p.unwrap().forget(); Outcome::Finished(Fate::Processed) }
                _ = cancel.cancelled() => {
                    self.cancelled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Outcome::Cancelled
                }
            },
            Some(b"poison") => Outcome::Halted {
                class: "terminal".into(),
                error: "poison".into(),
            },
            Some(b"dlq") => Outcome::Finished(Fate::DeadLettered),
            Some(b"retried") => Outcome::Finished(Fate::Retried),
            _ => Outcome::Finished(Fate::Processed),
        }
    }
}

fn tp() -> TopicPartition {
    TopicPartition {
        topic: "t".into(),
        partition: 0,
    }
}

fn msg(offset: i64, payload: &'static str) -> RawMessage {
    RawMessage {
        topic: "t".into(),
        partition: 0,
        offset,
        timestamp_ms: None,
        key: Some(bytes::Bytes::from(format!("k{offset}"))),
        payload: Some(bytes::Bytes::from_static(payload.as_bytes())),
        headers: Default::default(),
    }
}

/// [`msg`] with key `key`.
fn keyed(offset: i64, key: &str, payload: &'static str) -> RawMessage {
    RawMessage {
        key: Some(bytes::Bytes::from(key.to_string())),
        ..msg(offset, payload)
    }
}

struct Harness {
    control: Arc<FakeControl>,
    release: Arc<Semaphore>,
    cancelled: Arc<std::sync::atomic::AtomicUsize>,
    events: UnboundedSender<Event>,
    shutdown: CancellationToken,
    stats: Arc<ConsumerStats>,
    started: Arc<Mutex<Vec<i64>>>,
    kept: Arc<Mutex<Vec<Arc<RawMessage>>>>,
    run: tokio::task::JoinHandle<Result<RunReport, WeirError>>,
}

fn limits(max_buffered: usize, shutdown_deadline: Duration) -> Limits {
    Limits {
        ordering: Ordering::Key,
        max_in_flight: 100,
        max_in_flight_per_partition: 100,
        max_buffered_per_partition: max_buffered,
        inline_first_poll: true,
        inline_first_poll_limit: Duration::from_micros(50),
        commit_interval: Duration::from_millis(20),
        shutdown_deadline,
        admission: None,
        dlq_limit: Default::default(),
        retry_budget: None,
    }
}

fn start(limits: Limits, control: FakeControl) -> Harness {
    start_with(limits, control, None)
}

fn start_with(
    limits: Limits,
    control: FakeControl,
    tx: Option<Arc<dyn transaction::TxControl>>,
) -> Harness {
    let control = Arc::new(control);
    let release = Arc::new(Semaphore::new(0));
    let cancelled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::new(Mutex::new(Vec::new()));
    let runner = Arc::new(Script {
        release: release.clone(),
        cancelled: cancelled.clone(),
        started: started.clone(),
        kept: kept.clone(),
    });
    let stats = Arc::new(ConsumerStats::default());
    let shutdown = CancellationToken::new();
    let (events, rx) = unbounded_channel();
    let d = Dispatcher::new(
        control.clone(),
        runner,
        limits,
        stats.clone(),
        shutdown.clone(),
        Arc::new(AtomicBool::new(false)),
        "g".into(),
    );
    let d = match tx {
        Some(tx) => d.with_transactions(tx),
        None => d,
    };
    events.send(Event::Assigned(vec![(tp(), None)])).unwrap();
    Harness {
        control,
        release,
        cancelled,
        events,
        shutdown,
        stats,
        started,
        kept,
        run: tokio::spawn(d.run(rx)),
    }
}

impl Harness {
    /// Cancels the run and returns its report.
    async fn stop(&mut self) -> RunReport {
        self.shutdown.cancel();
        (&mut self.run).await.unwrap().unwrap()
    }
}

/// A revoke's answer, waited for off the runtime (the poll thread's side
/// of the revoke protocol blocks on it).
async fn answer_within(
    answer: std::sync::mpsc::Receiver<Vec<(TopicPartition, NextOffset)>>,
    limit: Duration,
) -> Option<Vec<(TopicPartition, NextOffset)>> {
    tokio::task::spawn_blocking(move || answer.recv_timeout(limit).ok())
        .await
        .unwrap()
}

#[test]
fn a_finished_message_allocation_is_used_again_only_when_nothing_holds_it() {
    let d = Dispatcher::new(
        Arc::new(FakeControl::default()),
        Arc::new(Script {
            release: Arc::new(Semaphore::new(0)),
            cancelled: Default::default(),
            started: Default::default(),
            kept: Default::default(),
        }),
        limits(10, Duration::from_secs(1)),
        Arc::new(ConsumerStats::default()),
        CancellationToken::new(),
        Arc::new(AtomicBool::new(false)),
        "g".into(),
    );
    let mut d = d;
    type D = Dispatcher<Script, FakeControl>;
    // Nothing else holds it: emptied at once, and the next message goes in it.
    let first = D::share(&mut d.spare_messages, msg(1, "a"));
    let at = Arc::as_ptr(&first);
    d.recycle(first);
    assert_eq!(d.spare_messages.len(), 1);
    assert_eq!(d.spare_messages[0].payload, None, "its bytes are freed now");
    let second = D::share(&mut d.spare_messages, msg(2, "b"));
    assert_eq!(Arc::as_ptr(&second), at, "the allocation is used again");
    assert_eq!(
        (second.offset, second.payload.as_deref()),
        (2, Some(&b"b"[..]))
    );
    // A processor keeps a clone, or the holder view a weak reference: not reused.
    let kept = second.clone();
    d.recycle(second);
    let weak_only = D::share(&mut d.spare_messages, msg(3, "c"));
    let weak = Arc::downgrade(&weak_only);
    d.recycle(weak_only);
    assert!(d.spare_messages.is_empty());
    assert_eq!((kept.offset, kept.payload.as_deref()), (2, Some(&b"b"[..])));
    assert_eq!(weak.upgrade().map(|m| m.offset), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_a_processor_keeps_is_never_overwritten_by_a_later_one() {
    let mut h = start(limits(1000, Duration::from_secs(5)), FakeControl::default());
    for round in 0..4i64 {
        let batch = (0..100)
            .map(|i| {
                let o = round * 100 + i;
                msg(o, if o % 3 == 0 { "keep" } else { "x" })
            })
            .collect();
        h.events.send(Event::Batch(batch)).unwrap();
    }
    until("all 400 started", || h.started.lock().unwrap().len() == 400).await;
    until("committed to 400", || {
        h.control.committed(&tp()) == Some(400)
    })
    .await;
    let kept = h.kept.lock().unwrap().clone();
    assert_eq!(kept.len(), 134);
    for m in &kept {
        assert_eq!(m.payload.as_deref(), Some(&b"keep"[..]), "{}", m.offset);
        assert_eq!(m.key, Some(bytes::Bytes::from(format!("k{}", m.offset))));
        assert_eq!(m.offset % 3, 0);
    }
    assert!(h.stop().await.drained);
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends offsets 0 (`ok`), 1 (`slow`) and 2 (`ok`), then a revoke of the
/// partition with `deadline`; returns where its answer arrives.
fn ok_slow_ok_then_revoke(
    h: &Harness,
    deadline: std::time::Instant,
) -> std::sync::mpsc::Receiver<Vec<(TopicPartition, NextOffset)>> {
    h.events
        .send(Event::Batch(vec![
            msg(0, "ok"),
            msg(1, "slow"),
            msg(2, "ok"),
        ]))
        .unwrap();
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    h.events
        .send(Event::Revoked {
            partitions: vec![tp()],
            reply,
            deadline,
        })
        .unwrap();
    answer
}

/// Waits several commit intervals and checks nothing moved past `offset`.
async fn stays(h: &Harness, offset: Option<i64>) {
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(h.control.committed(&tp()), offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_stop_below_the_first_unfinished_offset() {
    let mut h = start(limits(100, Duration::from_secs(5)), FakeControl::default());
    let batch = vec![
        msg(0, "ok"),
        msg(1, "ok"),
        msg(2, "slow"),
        msg(3, "ok"),
        msg(4, "ok"),
    ];
    h.events.send(Event::Batch(batch)).unwrap();
    until("the first commit", || h.control.committed(&tp()).is_some()).await;
    stays(&h, Some(2)).await;
    h.release.add_permits(1);
    until("the commit past the slow message", || {
        h.control.committed(&tp()) == Some(5)
    })
    .await;
    let report = h.stop().await;
    assert!(report.drained && report.unfinished == 0 && report.halted.is_empty());
    assert!(h.stats.commits() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_waits_for_its_runs_then_answers_the_finished_position() {
    let mut h = start(limits(100, Duration::from_secs(5)), FakeControl::default());
    let answer = ok_slow_ok_then_revoke(&h, std::time::Instant::now() + Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(answer.try_recv().is_err(), "answered while a run was going");
    h.release.add_permits(1);
    let offsets = answer_within(answer, Duration::from_secs(5))
        .await
        .expect("the revoke is answered once its run finished");
    assert_eq!(offsets, vec![(tp(), NextOffset(3))]);
    assert_eq!(h.cancelled.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Released: a message of the revoked partition fetched late is dropped.
    h.events.send(Event::Batch(vec![msg(3, "ok")])).unwrap();
    until("the late message dropped", || {
        h.stats.dropped_on_revoke() == 1
    })
    .await;
    let _ = h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_at_its_deadline_cancels_the_run_and_answers_what_finished() {
    let mut h = start(limits(100, Duration::from_secs(5)), FakeControl::default());
    let started = std::time::Instant::now();
    let answer = ok_slow_ok_then_revoke(&h, started + Duration::from_millis(300));
    let offsets = answer_within(answer, Duration::from_secs(5))
        .await
        .expect("answered at the deadline");
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "answered before the deadline"
    );
    assert_eq!(
        offsets,
        vec![(tp(), NextOffset(1))],
        "nothing past the unfinished run"
    );
    until("the run cancelled", || {
        h.cancelled.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let _ = h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_partition_is_paused_and_resumed_at_half_with_a_seek() {
    let mut h = start(limits(4, Duration::from_secs(5)), FakeControl::default());
    let batch = (0..4).map(|o| msg(o, "slow")).collect();
    h.events.send(Event::Batch(batch)).unwrap();
    until("the pause", || {
        h.control.calls().contains(&Call::Pause(tp()))
    })
    .await;
    assert_eq!(h.stats.paused_partitions(), 1);
    // One finished: the window (4 -> 3) is still above half; no resume.
    h.release.add_permits(1);
    until("the first commit", || h.control.committed(&tp()) == Some(1)).await;
    assert!(!h.control.calls().contains(&Call::Resume(tp())));
    h.release.add_permits(1);
    until("the resume", || {
        h.control.calls().contains(&Call::Resume(tp()))
    })
    .await;
    assert!(
        h.control.calls().contains(&Call::Seek(tp(), 4)),
        "fetching starts again at the first offset not received: {:?}",
        h.control.calls()
    );
    assert_eq!(h.stats.paused_partitions(), 0);
    h.release.add_permits(2);
    let report = h.stop().await;
    assert!(report.drained);
    assert_eq!(h.control.committed(&tp()), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_retried_on_the_next_interval() {
    let control = FakeControl {
        failing_commits: Mutex::new(2),
        ..Default::default()
    };
    let mut h = start(limits(100, Duration::from_secs(5)), control);
    h.events
        .send(Event::Batch(vec![msg(0, "ok"), msg(1, "ok")]))
        .unwrap();
    until("a commit after two failures", || {
        h.control.committed(&tp()) == Some(2)
    })
    .await;
    assert_eq!(h.stats.commit_failures(), 2);
    let _ = h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_at_its_deadline_and_commits_what_finished() {
    let h = start(
        limits(100, Duration::from_millis(200)),
        FakeControl::default(),
    );
    h.events
        .send(Event::Batch(vec![
            msg(0, "ok"),
            msg(1, "slow"),
            msg(2, "ok"),
        ]))
        .unwrap();
    until("the first commit", || h.control.committed(&tp()) == Some(1)).await;
    let (done_tx, done_rx) = oneshot::channel();
    let started = std::time::Instant::now();
    h.shutdown.cancel();
    tokio::spawn(async move {
        let _ = done_tx.send(h.run.await);
    });
    let report = done_rx.await.unwrap().unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert!(!report.drained);
    assert_eq!(report.unfinished, 1);
    assert_eq!(
        h.control.committed(&tp()),
        Some(1),
        "never past the unfinished run"
    );
    assert_eq!(h.cancelled.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_stops_the_partition_and_is_reported() {
    let mut h = start(limits(100, Duration::from_secs(5)), FakeControl::default());
    h.events
        .send(Event::Batch(vec![
            msg(0, "ok"),
            msg(1, "poison"),
            msg(2, "ok"),
        ]))
        .unwrap();
    until("the halt", || h.stats.halted_partitions() == 1).await;
    until("the pause", || {
        h.control.calls().contains(&Call::Pause(tp()))
    })
    .await;
    stays(&h, Some(1)).await;
    let report = h.stop().await;
    assert_eq!(report.halted.len(), 1);
    assert_eq!(report.halted[0].offset, 1);
    assert_eq!(report.halted[0].class, "terminal");
}

/// A dispatcher whose interval commit never comes round again after its
/// first tick (at start, with nothing to commit): only the final commit commits.
async fn final_commit_only(control: FakeControl) -> Harness {
    let h = start(
        Limits {
            commit_interval: Duration::from_secs(3600),
            ..limits(100, Duration::from_secs(3))
        },
        control,
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_commit_refused_for_a_moment_is_retried_before_the_consumer_stops() {
    let control = FakeControl {
        failing_commits: Mutex::new(3),
        ..Default::default()
    };
    let mut h = final_commit_only(control).await;
    h.events
        .send(Event::Batch(vec![msg(0, "ok"), msg(1, "ok")]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(h.control.committed(&tp()), None, "nothing committed yet");
    let report = h.stop().await;
    assert!(report.drained);
    assert_eq!(
        h.control.committed(&tp()),
        Some(2),
        "the final commit got through after a rebalance-like refusal"
    );
    assert_eq!(h.stats.commit_failures(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_commit_refused_for_good_or_for_a_lost_partition_is_not_retried() {
    let control = FakeControl {
        failing_commits: Mutex::new(3),
        failing_for_good: true,
        ..Default::default()
    };
    let mut h = final_commit_only(control).await;
    h.events.send(Event::Batch(vec![msg(0, "ok")])).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // (The interval's first tick may have tried, and failed, once already.)
    let before = h.stats.commit_failures();
    let started = std::time::Instant::now();
    let _ = h.stop().await;
    assert_eq!(h.stats.commit_failures(), before + 1, "one try");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(h.control.committed(&tp()), None);

    let control = FakeControl::default();
    control.lost.lock().unwrap().push(tp());
    let mut h = final_commit_only(control).await;
    h.events.send(Event::Batch(vec![msg(0, "ok")])).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _ = h.stop().await;
    assert_eq!(
        h.control.committed(&tp()),
        None,
        "a partition another member owns now is not committed over it"
    );
}

mod valves;
