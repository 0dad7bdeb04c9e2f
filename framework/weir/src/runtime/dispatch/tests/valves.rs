//! The safety valves and the inspect view, without a broker.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dlq_limit_halts_the_partition_after_the_message_that_tripped_it() {
    let mut l = limits(100, Duration::from_secs(5));
    l.dlq_limit = crate::valves::DlqLimit {
        max_consecutive: Some(3),
        ..Default::default()
    };
    let mut h = start(l, FakeControl::default());
    let first = vec![msg(0, "ok"), msg(1, "dlq"), msg(2, "dlq"), msg(3, "dlq")];
    h.events.send(Event::Batch(first)).unwrap();
    until("the trip", || h.stats.dlq_limit_trips() == 1).await;
    // Fetched after the trip: never started, never committed.
    h.events
        .send(Event::Batch(vec![msg(4, "ok"), msg(5, "ok")]))
        .unwrap();
    until("the commit up to the trip", || {
        h.control.committed(&tp()) == Some(4)
    })
    .await;
    stays(&h, Some(4)).await;
    let report = h.stop().await;
    assert_eq!(report.halted.len(), 1);
    let halt = &report.halted[0];
    assert_eq!((halt.offset, halt.class.as_str()), (4, "dlq_limit"));
    assert!(halt.error.contains("3 messages in a row"), "{}", halt.error);
    assert_eq!(h.stats.halted_partitions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_share_under_the_limit_never_halts() {
    let mut l = limits(100, Duration::from_secs(5));
    l.dlq_limit = crate::valves::DlqLimit {
        max_share: Some(0.5),
        window: 10,
        max_consecutive: Some(3),
    };
    let mut h = start(l, FakeControl::default());
    // Every third message poison: a third of the window, never three in a row.
    let batch = (0..60)
        .map(|o| msg(o, if o % 3 == 0 { "dlq" } else { "ok" }))
        .collect();
    h.events.send(Event::Batch(batch)).unwrap();
    until("everything committed", || {
        h.control.committed(&tp()) == Some(60)
    })
    .await;
    let report = h.stop().await;
    assert!(report.halted.is_empty());
    assert_eq!(h.stats.dlq_limit_trips(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_retry_budget_starts_nothing_until_the_window_moves_on() {
    let mut l = limits(100, Duration::from_secs(5));
    l.retry_budget = Some(crate::valves::RetryBudget {
        max_share: Some(0.5),
        window: Duration::from_secs(1),
        min_retries: 3,
    });
    let mut h = start(l, FakeControl::default());
    let retried = (0..6).map(|o| msg(o, "retried")).collect();
    h.events.send(Event::Batch(retried)).unwrap();
    until("the budget spent", || h.stats.retry_budget_spent() == 1).await;
    let spent_at = std::time::Instant::now();
    h.events
        .send(Event::Batch(vec![msg(6, "ok"), msg(7, "ok")]))
        .unwrap();
    until("the retried messages committed", || {
        h.control.committed(&tp()) == Some(6)
    })
    .await;
    stays(&h, Some(6)).await;
    until("the budget recovered", || h.stats.retry_budget_spent() == 0).await;
    assert!(
        spent_at.elapsed() >= Duration::from_millis(500),
        "recovered before the window moved: {:?}",
        spent_at.elapsed()
    );
    until("the held messages processed", || {
        h.control.committed(&tp()) == Some(8)
    })
    .await;
    let _ = h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspect_view_names_the_holder_its_key_and_the_finished_messages_behind_it() {
    let mut h = start(limits(100, Duration::from_secs(5)), FakeControl::default());
    let batch = vec![
        keyed(0, "fine", "ok"),
        keyed(1, "stuck", "slow"),
        keyed(2, "stuck", "ok"),
        keyed(3, "stuck", "ok"),
        keyed(4, "other", "ok"),
        keyed(5, "more", "ok"),
    ];
    h.events.send(Event::Batch(batch)).unwrap();
    until("a view with the holder", || {
        h.stats
            .inspect
            .latest()
            .and_then(|s| s.partition("t", 0).and_then(|p| p.holder.clone()))
            .is_some_and(|holder| holder.offset == 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    let s = h.stats.inspect.latest().unwrap();
    assert_eq!(&*s.group, "g");
    let p = s.partition("t", 0).unwrap();
    let holder = p.holder.as_ref().unwrap();
    assert_eq!(holder.key.as_deref(), Some("stuck"));
    assert_eq!(holder.state, crate::inspect::HolderState::Running);
    assert_eq!(holder.attempt, 1);
    assert!(holder.waiting_ms >= 50, "{holder:?}");
    assert_eq!(p.committable, Some(1));
    assert_eq!(p.finished_above, 2, "offsets 4 and 5 finished behind it");
    assert_eq!(
        p.unfinished, 3,
        "the holder and its key's two queued messages"
    );
    assert_eq!(p.top_keys.len(), 1);
    assert_eq!(
        (p.top_keys[0].key.as_deref(), p.top_keys[0].queued),
        (Some("stuck"), 2)
    );
    h.release.add_permits(1);
    until("no holder once it finished", || {
        h.stats
            .inspect
            .latest()
            .and_then(|s| s.partition("t", 0).cloned())
            .is_some_and(|p| p.holder.is_none() && p.committable == Some(6))
    })
    .await;
    let _ = h.stop().await;
}
