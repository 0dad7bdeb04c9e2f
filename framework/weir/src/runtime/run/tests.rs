//! The runner's steps without a broker: a scripted processor, a recording
//! failure sink and hand-made raw messages, on tokio's paused clock (waits
//! cost no real time).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use futures::future::BoxFuture;

use super::*;
use crate::codec::BytesCodec;
use crate::config::{ConsumerConfig, RetryPolicy};
use crate::error::ProcessError;
use crate::message::{Message, test_raw};
use crate::wire::headers;

/// One scripted answer.
type Answer = fn() -> Result<(), ProcessError>;

/// Answers each call with the next scripted result (then `Ok`), and records
/// the attempt each call saw.
#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Answer>>,
    seen: Mutex<Vec<u32>>,
}

impl Processor<Option<bytes::Bytes>> for Arc<Script> {
    async fn process(&self, msg: Message<Option<bytes::Bytes>>) -> Result<(), ProcessError> {
        self.seen.lock().unwrap().push(msg.attempt());
        match self.answers.lock().unwrap().pop_front() {
            Some(f) => f(),
            None => Ok(()),
        }
    }
}

fn retryable() -> Result<(), ProcessError> {
    Err(ProcessError::retryable(std::io::Error::other("503")))
}
fn unavailable() -> Result<(), ProcessError> {
    Err(ProcessError::unavailable(std::io::Error::other("db down")))
}
fn terminal() -> Result<(), ProcessError> {
    Err(ProcessError::terminal(std::io::Error::other("bad")))
}
fn panics() -> Result<(), ProcessError> {
    panic!("boom")
}

/// Records what it was given and answers `disposition`.
struct Sink {
    got: Mutex<Vec<(String, u32)>>,
    disposition: Disposition,
}

impl FailureSink for Arc<Sink> {
    fn on_failure<'a>(&'a self, f: Failure<'a>) -> BoxFuture<'a, Disposition> {
        self.got
            .lock()
            .unwrap()
            .push((f.error.class().to_string(), f.attempts));
        Box::pin(async { self.disposition.clone() })
    }
}

struct Fixture {
    script: Arc<Script>,
    sink: Arc<Sink>,
    runner: Arc<Runner<BytesCodec, Arc<Script>>>,
}

fn fixture(
    answers: &[Answer],
    max_attempts: u32,
    disposition: Disposition,
    plan: Option<Arc<dyn AttemptPlan>>,
) -> Fixture {
    let script = Arc::new(Script::default());
    script
        .answers
        .lock()
        .unwrap()
        .extend(answers.iter().copied());
    let sink = Arc::new(Sink {
        got: Mutex::new(Vec::new()),
        disposition,
    });
    let mut config = ConsumerConfig::new("unused:9092", "g", &["t"]);
    config.retry = RetryPolicy {
        max_attempts,
        jitter: false,
        ..RetryPolicy::default()
    };
    config.max_header_bytes = 64;
    let mut runner = Runner::new(
        BytesCodec,
        script.clone(),
        Arc::new(sink.clone()),
        &config,
        Arc::default(),
        metrics::Histogram::noop(),
    );
    if let Some(p) = plan {
        runner.set_plan(p);
    }
    Fixture {
        script,
        sink,
        runner: Arc::new(runner),
    }
}

impl Fixture {
    async fn run(&self, raw: RawMessage) -> Outcome {
        self.runner
            .clone()
            .run(Arc::new(raw), Arc::new(CancellationToken::new()))
            .await
    }
    fn seen(&self) -> Vec<u32> {
        self.script.seen.lock().unwrap().clone()
    }
    fn given(&self) -> Vec<(String, u32)> {
        self.sink.got.lock().unwrap().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_are_retried_as_the_plan_says_then_given_up() {
    let f = fixture(
        &[retryable, retryable, retryable],
        3,
        Disposition::DeadLettered,
        None,
    );
    let started = tokio::time::Instant::now();
    let o = f.run(test_raw("t", &[])).await;
    assert!(matches!(o, Outcome::Finished(Fate::DeadLettered)), "{o:?}");
    assert_eq!(f.seen(), [1, 2, 3], "each attempt sees its number");
    assert_eq!(f.given(), [("retryable".to_string(), 3)]);
    // 200 ms then 400 ms of backoff (no jitter), on the paused clock.
    assert_eq!(started.elapsed(), Duration::from_millis(600));
    assert_eq!(f.runner.stats.retries(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_tier_copy_counts_from_its_delivery_attempt() {
    let f = fixture(&[retryable, retryable], 2, Disposition::Retried, None);
    let o = f
        .run(test_raw("t.retry.1s", &[(headers::ATTEMPT, "3")]))
        .await;
    assert!(matches!(o, Outcome::Finished(Fate::Retried)), "{o:?}");
    assert_eq!(f.seen(), [3, 4]);
    assert_eq!(f.given(), [("retryable".to_string(), 4)]);
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_dependency_is_waited_out_without_spending_attempts() {
    let f = fixture(
        &[unavailable, unavailable, unavailable, retryable],
        2,
        Disposition::Stop,
        None,
    );
    let o = f.run(test_raw("t", &[])).await;
    assert_eq!(f.seen(), [1, 1, 1, 1, 2], "outage waits keep the attempt");
    assert!(f.given().is_empty(), "the second attempt succeeded");
    assert!(matches!(o, Outcome::Finished(Fate::Processed)), "{o:?}");
    assert_eq!(f.runner.stats.unavailable(), 3);
}

#[tokio::test(start_paused = true)]
async fn terminal_failures_and_panics_go_to_the_sink_at_once() {
    let f = fixture(&[terminal], 5, Disposition::Stop, None);
    match f.run(test_raw("t", &[])).await {
        Outcome::Halted { class, .. } => assert_eq!(class, "terminal"),
        o => panic!("{o:?}"),
    }
    assert_eq!(f.given(), [("terminal".to_string(), 1)]);
    let f = fixture(&[panics], 5, Disposition::Handled, None);
    let o = f.run(test_raw("t", &[])).await;
    assert!(matches!(o, Outcome::Finished(Fate::Handled)), "{o:?}");
    assert_eq!(f.given(), [("panic".to_string(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn unreadable_messages_never_reach_the_processor() {
    let f = fixture(&[], 3, Disposition::DeadLettered, None);
    let big = "x".repeat(100);
    f.run(test_raw("t", &[("h", &big)])).await;
    f.run(test_raw(
        "t",
        &[(crate::message::UNREADABLE_HEADER_NAME, "0")],
    ))
    .await;
    assert!(f.seen().is_empty());
    assert_eq!(
        f.given(),
        [
            ("oversized_headers".to_string(), 1),
            ("invalid_header_name".to_string(), 1)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn another_groups_copy_is_skipped() {
    let f = fixture(&[terminal], 3, Disposition::Stop, None);
    let o = f.run(test_raw("t", &[(headers::FOR_GROUP, "other")])).await;
    assert!(matches!(o, Outcome::Finished(Fate::Handled)), "{o:?}");
    assert!(f.seen().is_empty() && f.given().is_empty());
    assert_eq!(f.runner.stats.other_group_skipped(), 1);
    let o = f.run(test_raw("t", &[(headers::FOR_GROUP, "g")])).await;
    assert!(
        matches!(o, Outcome::Halted { .. }),
        "ours is processed: {o:?}"
    );
}

/// A plan with its own delays, a switchable hold and a diversion of
/// messages whose topic starts with `later`.
struct Plan {
    hold: Arc<std::sync::atomic::AtomicBool>,
    diverted: AtomicU32,
    answer: Disposition,
}

impl AttemptPlan for Plan {
    fn max_attempts(&self) -> u32 {
        3
    }
    fn delay(&self, attempt: u32) -> Duration {
        Duration::from_secs(10 * attempt as u64)
    }
    fn holds(&self, e: &ProcessError) -> bool {
        e.is_retryable() && self.hold.load(SeqCst)
    }
    fn divert<'a>(&'a self, raw: &'a RawMessage) -> Option<BoxFuture<'a, Disposition>> {
        if !raw.topic.starts_with("later") {
            return None;
        }
        self.diverted.fetch_add(1, SeqCst);
        Some(Box::pin(async { self.answer.clone() }))
    }
}

fn plan(answer: Disposition) -> (Arc<Plan>, Arc<std::sync::atomic::AtomicBool>) {
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let p = Arc::new(Plan {
        hold: hold.clone(),
        diverted: AtomicU32::new(0),
        answer,
    });
    (p, hold)
}

#[tokio::test(start_paused = true)]
async fn the_plans_attempts_and_delays_replace_the_policy() {
    let (p, _) = plan(Disposition::Handled);
    let f = fixture(
        &[retryable, retryable, retryable],
        1,
        Disposition::DeadLettered,
        Some(p),
    );
    let started = tokio::time::Instant::now();
    f.run(test_raw("t", &[])).await;
    assert_eq!(f.seen(), [1, 2, 3], "3 attempts, not the policy's 1");
    assert_eq!(started.elapsed(), Duration::from_secs(30), "10 s + 20 s");
}

#[tokio::test(start_paused = true)]
async fn a_held_failure_waits_in_place_until_the_plan_lets_it_go() {
    let (p, hold) = plan(Disposition::Handled);
    hold.store(true, SeqCst);
    let f = Arc::new(fixture(
        &[retryable as Answer; 40],
        1,
        Disposition::Retried,
        Some(p),
    ));
    let run = tokio::spawn({
        let f = f.clone();
        async move { f.run(test_raw("t", &[])).await }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(f.given().is_empty(), "held: nothing reached the sink");
    assert!(
        f.seen().len() >= 4,
        "it keeps trying in place: {:?}",
        f.seen()
    );
    assert_eq!(*f.seen().last().unwrap(), 3, "held tries spend no attempt");
    hold.store(false, SeqCst);
    let o = run.await.unwrap();
    assert!(matches!(o, Outcome::Finished(Fate::Retried)), "{o:?}");
    assert_eq!(f.given(), [("retryable".to_string(), 3)]);
    assert!(f.runner.stats.retry_budget_waits() >= 1);
}

#[tokio::test(start_paused = true)]
async fn a_diverted_message_never_reaches_the_processor() {
    let (p, _) = plan(Disposition::Handled);
    let f = fixture(&[], 1, Disposition::Stop, Some(p.clone()));
    let o = f.run(test_raw("later.t", &[])).await;
    assert!(matches!(o, Outcome::Finished(Fate::Handled)), "{o:?}");
    assert!(f.seen().is_empty());
    assert_eq!(p.diverted.load(SeqCst), 1);
    let (p, _) = plan(Disposition::Stop);
    let f = fixture(&[], 1, Disposition::Stop, Some(p));
    match f.run(test_raw("later.t", &[])).await {
        Outcome::Halted { class, .. } => assert_eq!(class, "reschedule"),
        o => panic!("{o:?}"),
    }
    f.run(test_raw("t", &[])).await;
    assert_eq!(f.seen(), [1], "other messages are processed");
}

#[tokio::test(start_paused = true)]
async fn cancellation_ends_a_wait_without_giving_up() {
    let f = fixture(&[retryable, retryable], 3, Disposition::Stop, None);
    let cancel = Arc::new(CancellationToken::new());
    let run = tokio::spawn(
        f.runner
            .clone()
            .run(Arc::new(test_raw("t", &[])), cancel.clone()),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    let o = run.await.unwrap();
    assert!(matches!(o, Outcome::Cancelled), "{o:?}");
    assert!(f.given().is_empty(), "a cancelled message is not a failure");
}
