//! After an incremental rebalance Weir wakes librdkafka's fetchers with a
//! ListOffsets request to the partitions' leaders (a broker thread that saw
//! all its partitions paused sleeps up to a second; see
//! `WeirContext::wake_fetchers`). The wake is useful only once librdkafka
//! has resumed the partitions, which its main thread does with one op per
//! partition queued while it handles the `incremental_(un)assign` call. A
//! wake sent before those ops were served found the partitions still
//! paused: a CI run saw a partition that never moved stop for 1.006 s.
//!
//! This reads librdkafka's own debug log, in the order librdkafka wrote it
//! (its log events travel on the consumer queue): for member 1, every
//! partition whose resume was queued before a ListOffsets request was
//! built must have been resumed by then. 256 partitions make the main
//! thread's resumes take long enough that a wake sent without waiting for
//! them overtakes them: without the wait this failed three runs in three
//! (66 to 94 of member 1's 128 partitions still paused); with 64
//! partitions, one in three. The mock cluster only: the race is inside
//! librdkafka, and the check reads one member's lines by the thread that
//! polled them, so one scenario per process.
//!
//! Its own test binary: it takes `librdkafka` at debug level for the
//! process and records every log line with the thread that served it.

mod common;
#[path = "common/steady.rs"]
mod steady;

use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use parking_lot::Mutex;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use weir::GroupProtocol;
use weir_testkit::BrokerKind;

use common::{R, wait_until};
use steady::{Log, member_config, start};

/// librdkafka's log lines, with the thread that polled them.
type Lines = Arc<Mutex<Vec<(ThreadId, String)>>>;

struct Capture(Lines);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        if event.metadata().target() != "librdkafka" {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0.lock().push((std::thread::current().id(), text.0));
    }
}

/// A resume in a log line: `(queued, partition)`. `Resume steady [p]
/// (v<n>)` is written as the op is queued; `Resuming steady [p]: at ...`,
/// `Not resuming stopped steady [p]...` and `Not resuming steady [p]: ...`
/// as the main thread serves it.
fn resume(line: &str) -> Option<(bool, i32)> {
    let served = [
        "Resuming steady [",
        "resuming stopped steady [",
        "Not resuming steady [",
    ];
    let (queued, rest) = match served.iter().find_map(|s| line.split(s).nth(1)) {
        Some(rest) => (false, rest),
        None => (true, line.split("Resume steady [").nth(1)?),
    };
    Some((queued, rest.split(']').next()?.parse().ok()?))
}

/// For each ListOffsets request built in `lines` from line `from` on: the
/// partitions whose resume was queued before it and not yet served.
fn overtaken(lines: &[String], from: usize) -> Vec<(usize, Vec<i32>)> {
    let mut pending = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some((queued, p)) = resume(line) {
            if queued {
                pending.insert(p);
            } else {
                pending.remove(&p);
            }
        } else if line.contains("ListOffsetsRequest (v") && i >= from {
            out.push((i, pending.iter().copied().collect()));
        }
    }
    out
}

#[test]
fn resume_lines_are_read() {
    assert_eq!(
        resume("[thrd:app]: Resume steady [12] (v5)"),
        Some((true, 12))
    );
    assert_eq!(
        resume(
            "[thrd:main]: Resuming steady [3]: at offset 7 (leader epoch -1) (state active, v5)"
        ),
        Some((false, 3))
    );
    assert_eq!(
        resume("[thrd:main]: Not resuming stopped steady [4]: at offset INVALID (state none, v2)"),
        Some((false, 4))
    );
    assert_eq!(resume("[thrd:main]: Pause steady [4] (v2)"), None);
    let lines: Vec<String> = [
        "Resume steady [1] (v2)",
        "Resume steady [2] (v2)",
        "Resuming steady [1]: at offset 0 (state active, v2)",
        "ListOffsetsRequest (v7, opv 0) for 1 topic(s) and 2 partition(s)",
        "Resuming steady [2]: at offset 0 (state active, v2)",
        "ListOffsetsRequest (v7, opv 0) for 1 topic(s) and 2 partition(s)",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(overtaken(&lines, 0), vec![(3, vec![2]), (5, vec![])]);
    assert_eq!(overtaken(&lines, 4), vec![(5, vec![])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_fetchers_are_woken_only_once_librdkafka_resumed_the_partitions() -> R {
    let lines: Lines = Arc::default();
    let _ = tracing_subscriber::registry()
        .with(
            Capture(lines.clone())
                .with_filter(tracing_subscriber::EnvFilter::new("librdkafka=debug")),
        )
        .try_init();
    weir_testkit::hang_watchdog();
    let partitions = 256;
    let cluster = common::cluster(BrokerKind::Mock).await?;
    cluster.create_topic("steady", partitions).await?;
    let config =
        || member_config(&cluster, GroupProtocol::Classic, "wake-order").set("debug", "topic");
    let log: Arc<Mutex<Log>> = Arc::default();
    let a = start(config(), 1, &log)?;
    wait_until("member 1 assigned", Duration::from_secs(60), || {
        a.0.stats().assigned_partitions() == partitions as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every line so far came through member 1's poll thread.
    let (first, joined_at) = {
        let g = lines.lock();
        let threads: std::collections::HashSet<ThreadId> = g.iter().map(|(t, _)| *t).collect();
        assert_eq!(threads.len(), 1, "one member, one poll thread");
        (g[0].0, g.len())
    };
    let b = start(config(), 2, &log)?;
    wait_until("half each", Duration::from_secs(60), || {
        a.0.stats().assigned_partitions() == partitions as u64 / 2
            && b.0.stats().assigned_partitions() == partitions as u64 / 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (h, run) in [b, a] {
        h.shutdown();
        let report = run.await??;
        assert!(report.halted.is_empty(), "{report:?}");
    }
    let g = lines.lock();
    let member1: Vec<String> = g
        .iter()
        .filter(|(t, _)| *t == first)
        .map(|(_, l)| l.clone())
        .collect();
    let from = g[..joined_at].iter().filter(|(t, _)| *t == first).count();
    let requests = overtaken(&member1, from);
    eprintln!(
        "member 1: {} log lines, ListOffsets requests after the join: {:?}",
        member1.len(),
        requests
            .iter()
            .map(|(i, p)| (*i, p.len()))
            .collect::<Vec<_>>()
    );
    assert!(
        !requests.is_empty(),
        "member 1 woke its fetchers after the rebalance"
    );
    for (i, still_paused) in &requests {
        assert!(
            still_paused.is_empty(),
            "line {i}: a ListOffsets request was built while the resume of partitions {still_paused:?} was still queued"
        );
    }
    Ok(())
}
