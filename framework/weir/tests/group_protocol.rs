//! Consumer groups under both protocols (classic cooperative-sticky and
//! KIP-848's `consumer`), on the mock cluster and Apache Kafka:
//!
//! - under steady load, a member joins and later leaves cleanly: nothing is
//!   lost, nothing is processed twice, and the partitions that did not move
//!   keep being processed (no gap longer than the commit interval while the
//!   others move): rebalances are incremental;
//! - static membership: a second member with the same `group_instance_id`
//!   ends with a fatal error that names the id (Kafka);
//! - stopping during a rebalance (Kafka): a member assigned partitions while
//!   it stops still ends, and a final commit read after a join is committed
//!   again in the new generation.

mod common;
#[path = "common/steady.rs"]
mod steady;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use weir::GroupProtocol;
use weir_testkit::{BrokerKind, KafkaCluster};

use common::{R, wait_until};
use steady::{
    Load, Log, Member, PARTITIONS, join_and_leave_under_load, member_config, start, start_holding,
    steady_load,
};

async fn classic_cooperative(kind: BrokerKind) -> R {
    join_and_leave_under_load(kind, GroupProtocol::Classic).await
}

async fn consumer_protocol(kind: BrokerKind) -> R {
    join_and_leave_under_load(kind, GroupProtocol::Consumer).await
}

broker_tests!(classic_cooperative, consumer_protocol);

/// Two members with one `group_instance_id`: one of them ends with a fatal
/// error that names static membership; it is never a silent split.
async fn duplicate_instance_id(protocol: GroupProtocol) -> R {
    common::init();
    let cluster = common::cluster(BrokerKind::Kafka).await?;
    cluster.create_topic("steady", PARTITIONS).await?;
    let group = format!("static-{protocol:?}").to_lowercase();
    let log: Arc<Mutex<Log>> = Arc::default();
    let mut cfg = member_config(&cluster, protocol, &group);
    cfg.group_instance_id = Some("orders-0".into());
    let a = start(cfg.clone(), 1, &log)?;
    wait_until("member 1 assigned", Duration::from_secs(60), || {
        a.0.stats().assigned_partitions() == PARTITIONS as u64
    })
    .await;
    let b = start(cfg, 2, &log)?;
    let t0 = Instant::now();
    let ended = loop {
        if a.1.is_finished() {
            break (a, b);
        }
        if b.1.is_finished() {
            break (b, a);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "a duplicate instance id ends one member"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (done, other) = ended;
    let e = done
        .1
        .await?
        .expect_err("a fenced member ends with an error");
    let msg = e.to_string();
    assert!(
        msg.contains("group_instance_id") && msg.contains("orders-0"),
        "{msg}"
    );
    other.0.shutdown();
    let _ = other.1.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_duplicate_instance_id_is_fatal_under_the_consumer_protocol() -> R {
    duplicate_instance_id(GroupProtocol::Consumer).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_duplicate_instance_id_is_fatal_under_the_classic_protocol() -> R {
    duplicate_instance_id(GroupProtocol::Classic).await
}

/// A rolling restart of three static members, each back within the session
/// timeout: the other members see no rebalance at all, each member gets its
/// own partitions back, and nothing is processed twice.
async fn rolling_restart_of_static_members(protocol: GroupProtocol) -> R {
    common::init();
    let cluster = common::cluster(BrokerKind::Kafka).await?;
    let partitions = 6;
    cluster.create_topic("steady", partitions).await?;
    let group = format!("rolling-{protocol:?}").to_lowercase();
    let log: Arc<Mutex<Log>> = Arc::default();
    let cfg = |i: usize| {
        let mut c = member_config(&cluster, protocol, &group);
        c.group_instance_id = Some(format!("orders-{i}"));
        c
    };
    let (stop, load) = steady_load(&cluster, partitions)?;
    let mut members: Vec<Member> = Vec::new();
    for i in 0..3 {
        members.push(start(cfg(i), i as u8, &log)?);
    }
    wait_until("two partitions each", Duration::from_secs(60), || {
        members
            .iter()
            .all(|m| m.0.stats().assigned_partitions() == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let owned = |log: &Log, id: u8, since: Instant| -> BTreeSet<i32> {
        log.timeline
            .iter()
            .filter(|(_, e)| e.iter().any(|(t, m, _)| *m == id && *t >= since))
            .map(|(p, _)| *p)
            .collect()
    };
    let before: Vec<BTreeSet<i32>> = {
        let since = Instant::now() - Duration::from_millis(500);
        let g = log.lock();
        (0..3).map(|i| owned(&g, i, since)).collect()
    };
    for (i, own) in before.iter().enumerate() {
        let others = |members: &[Member]| -> Vec<u64> {
            (0..3)
                .filter(|j| *j != i)
                .map(|j| members[j].0.stats().rebalances())
                .collect()
        };
        let quiet = others(&members);
        let (handle, run) = members.remove(i);
        handle.shutdown();
        let report = run.await??;
        assert!(report.halted.is_empty(), "{report:?}");
        // A restart takes a while (a new pod): 2 s, within the 6 s session.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let back = Instant::now();
        members.insert(i, start(cfg(i), 10 + i as u8, &log)?);
        wait_until(
            "the restarted member processes again",
            Duration::from_secs(30),
            || {
                let g = log.lock();
                owned(&g, 10 + i as u8, back).len() == 2
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            others(&members),
            quiet,
            "{protocol:?}: restarting member {i} caused a rebalance on the others"
        );
        let g = log.lock();
        assert_eq!(
            &owned(&g, 10 + i as u8, back),
            own,
            "{protocol:?}: member {i} got its own partitions back"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.await??;
    let log2 = log.clone();
    wait_until(
        "every record processed",
        Duration::from_secs(60),
        move || log2.lock().seen.len() as u64 >= sent,
    )
    .await;
    for (handle, run) in members {
        handle.shutdown();
        let _ = run.await??;
    }
    let g = log.lock();
    assert_eq!(g.seen.len() as u64, sent, "nothing lost");
    let twice = g.seen.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "{protocol:?}: nothing processed twice");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_rolling_restart_of_static_members_moves_nothing_classic() -> R {
    rolling_restart_of_static_members(GroupProtocol::Classic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_rolling_restart_of_static_members_moves_nothing_consumer() -> R {
    rolling_restart_of_static_members(GroupProtocol::Consumer).await
}

/// The broker's description of `group` (both protocols).
async fn describe(
    cluster: &KafkaCluster,
    group: &str,
) -> Result<weir_ffi::GroupDescription, Box<dyn std::error::Error + Send + Sync>> {
    let bootstrap = cluster.bootstrap_servers().to_string();
    let group = group.to_string();
    let d = tokio::task::spawn_blocking(move || {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()?;
        let mut d =
            weir_ffi::describe_consumer_groups(admin.inner(), &[&group], Duration::from_secs(10))?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(d.remove(0))
    })
    .await??;
    Ok(d)
}

/// Waits until the group is `Stable` with `n` members.
async fn settled(cluster: &KafkaCluster, group: &str, n: usize) -> R {
    let t0 = Instant::now();
    loop {
        let d = describe(cluster, group).await?;
        if d.state == "Stable" && d.members.len() == n {
            return Ok(());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never settled: {d:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether member `id` processed anything since `since`.
fn processed_since(log: &Log, id: u8, since: Instant) -> bool {
    log.timeline
        .values()
        .any(|e| e.iter().any(|(t, m, _)| *m == id && *t >= since))
}

/// Stops the load, waits for every record, stops the members; asserts
/// nothing lost and nothing processed twice.
async fn finish(
    log: &Arc<Mutex<Log>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    load: Load,
    members: Vec<Member>,
    what: &str,
) -> R {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.await??;
    let log2 = log.clone();
    wait_until(
        "every record processed",
        Duration::from_secs(60),
        move || log2.lock().seen.len() as u64 >= sent,
    )
    .await;
    for (handle, run) in members {
        handle.shutdown();
        let report = run.await??;
        assert!(report.halted.is_empty(), "{report:?}");
    }
    let g = log.lock();
    assert_eq!(g.seen.len() as u64, sent, "{what}: nothing lost");
    let twice = g.seen.values().filter(|n| **n > 1).count();
    eprintln!("{what}: {sent} records, {twice} processed twice");
    assert_eq!(twice, 0, "{what}: nothing processed twice");
    Ok(())
}

/// Online migration (KIP-848's upgrade, `group.consumer.migration.policy`
/// `bidirectional`, Kafka 4's default) of a group whose classic members use
/// an eager assignor (`range`: no userData in their assignments), one member
/// at a time under steady load: after the first consumer-protocol member the
/// broker describes a consumer group of three (the classic members served
/// through its compatibility path), every step ends with every partition
/// processed again, and nothing is lost or processed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_online_migration_of_a_range_group_loses_nothing() -> R {
    common::init();
    let cluster = common::cluster(BrokerKind::Kafka).await?;
    let partitions = 6;
    cluster.create_topic("steady", partitions).await?;
    let group = "migrating-range";
    let log: Arc<Mutex<Log>> = Arc::default();
    let (stop, load) = steady_load(&cluster, partitions)?;
    let classic = || {
        let mut c = member_config(&cluster, GroupProtocol::Classic, group);
        c.assignment = weir::Assignment::Range;
        c
    };
    let mut members: Vec<Member> = Vec::new();
    for i in 0..3u8 {
        members.push(start(classic(), i, &log)?);
    }
    wait_until("two partitions each", Duration::from_secs(60), || {
        members
            .iter()
            .all(|m| m.0.stats().assigned_partitions() == 2)
    })
    .await;
    // Every partition is processed after `since`.
    let all_going = |log: &Log, since: Instant| {
        log.timeline.len() == partitions as usize
            && log
                .timeline
                .values()
                .all(|e| e.last().is_some_and(|(t, _, _)| *t > since))
    };
    // One of three first, then all of them.
    for i in 0..3usize {
        let (handle, run) = members.remove(i);
        handle.shutdown();
        let report = run.await??;
        assert!(report.halted.is_empty(), "{report:?}");
        settled(&cluster, group, 2).await?;
        let back = Instant::now();
        let id = 10 + i as u8;
        members.insert(
            i,
            start(
                member_config(&cluster, GroupProtocol::Consumer, group),
                id,
                &log,
            )?,
        );
        let t0 = Instant::now();
        while !processed_since(&log.lock(), id, back) && t0.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            processed_since(&log.lock(), id, back),
            "member {i} on the consumer protocol processes: {:#?}",
            describe(&cluster, group).await?
        );
        wait_until(
            "every partition processed again",
            Duration::from_secs(60),
            || all_going(&log.lock(), Instant::now() - Duration::from_millis(300)),
        )
        .await;
        eprintln!(
            "online migration, member {i} on consumer: every partition going after {:?}",
            back.elapsed()
        );
        let d = describe(&cluster, group).await?;
        assert_eq!(d.group_type, weir_ffi::GroupType::Consumer, "{d:#?}");
        assert_eq!(d.members.len(), 3, "{d:#?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    wait_until(
        "two partitions each on the consumer protocol",
        Duration::from_secs(60),
        || {
            members
                .iter()
                .all(|m| m.0.stats().assigned_partitions() == 2)
        },
    )
    .await;
    finish(&log, stop, load, members, "online migration (range)").await
}

/// A cooperative-sticky group cannot be upgraded online: librdkafka 2.12
/// echoes each member's sticky-assignor userData into its assignment, and
/// Kafka 4.1 refuses to convert a group whose assignments carry userData
/// ("userData from a custom assignor would be lost", KAFKA-18134). The
/// consumer-protocol member is then silently left out (librdkafka keeps
/// retrying its first heartbeat and reports nothing; Weir looks the group
/// up and reports it: an error log, `group_upgrade_refused`, `/readyz`).
/// This test pins that down, then migrates offline: once the classic members have left, the
/// waiting member converts the empty group and takes every partition from
/// the committed offsets; nothing is lost or processed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cooperative_group_is_refused_online_and_migrates_offline() -> R {
    common::init();
    let cluster = common::cluster(BrokerKind::Kafka).await?;
    let partitions = 6;
    cluster.create_topic("steady", partitions).await?;
    let group = "migrating-sticky";
    let log: Arc<Mutex<Log>> = Arc::default();
    let (stop, load) = steady_load(&cluster, partitions)?;
    let mut members: Vec<Member> = Vec::new();
    for i in 0..3u8 {
        members.push(start(
            member_config(&cluster, GroupProtocol::Classic, group),
            i,
            &log,
        )?);
    }
    wait_until("two partitions each", Duration::from_secs(60), || {
        members
            .iter()
            .all(|m| m.0.stats().assigned_partitions() == 2)
    })
    .await;
    // A second generation: the members rejoin with their sticky userData.
    let (handle, run) = members.remove(0);
    handle.shutdown();
    let _ = run.await??;
    settled(&cluster, group, 2).await?;
    wait_until("three partitions each", Duration::from_secs(60), || {
        members
            .iter()
            .all(|m| m.0.stats().assigned_partitions() == 3)
    })
    .await;
    let joined = Instant::now();
    let waiting = start(
        member_config(&cluster, GroupProtocol::Consumer, group),
        10,
        &log,
    )?;
    // librdkafka reports nothing; Weir looks the group up and says so.
    wait_until(
        "Weir reports the refused upgrade",
        Duration::from_secs(40),
        || waiting.0.stats().group_upgrade_refused() == 1,
    )
    .await;
    let d = describe(&cluster, group).await?;
    assert_eq!(
        (d.group_type, d.members.len()),
        (weir_ffi::GroupType::Classic, 2),
        "the upgrade is refused: {d:#?}"
    );
    assert!(
        !processed_since(&log.lock(), 10, joined),
        "the consumer-protocol member got nothing"
    );
    assert_eq!(waiting.0.stats().assigned_partitions(), 0);
    let refused_for = joined.elapsed();
    // Offline: the classic members leave; the waiting member's next
    // heartbeat replaces the empty classic group.
    let left = Instant::now();
    for (handle, run) in members.drain(..) {
        handle.shutdown();
        let report = run.await??;
        assert!(report.halted.is_empty(), "{report:?}");
    }
    wait_until(
        "the consumer-protocol member takes every partition",
        Duration::from_secs(60),
        || waiting.0.stats().assigned_partitions() == partitions as u64,
    )
    .await;
    eprintln!(
        "offline migration: every partition on the consumer protocol {:?} after the last classic member left",
        left.elapsed()
    );
    let d = describe(&cluster, group).await?;
    assert_eq!(d.group_type, weir_ffi::GroupType::Consumer, "{d:#?}");
    wait_until(
        "the refusal is cleared once admitted",
        Duration::from_secs(30),
        || waiting.0.stats().group_upgrade_refused() == 0,
    )
    .await;
    eprintln!("refused upgrade reported after {refused_for:?}");
    let mut members = vec![waiting];
    for i in 1..3u8 {
        members.push(start(
            member_config(&cluster, GroupProtocol::Consumer, group),
            10 + i,
            &log,
        )?);
    }
    wait_until("two partitions each", Duration::from_secs(60), || {
        members
            .iter()
            .all(|m| m.0.stats().assigned_partitions() == 2)
    })
    .await;
    finish(
        &log,
        stop,
        load,
        members,
        "offline migration (cooperative-sticky)",
    )
    .await
}

/// librdkafka 2.12 under the consumer protocol, a member that stops polling
/// for longer than `max.poll.interval.ms` (its heartbeats go on: librdkafka
/// sends them from its own thread): librdkafka leaves the group and rejoins
/// on the next poll. The 2.12 release is said to fence such a member with a
/// fatal `INVALID_REQUEST` instead (fixed in 2.15.0); this shows what 2.12.1
/// does on Kafka 4.1 (a raw consumer: Weir's poll thread does not stop
/// polling while handlers run).
async fn max_poll_interval_exceeded(instance: Option<&str>) -> R {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    common::init();
    let cluster = common::cluster(BrokerKind::Kafka).await?;
    cluster.create_topic("maxpoll", 2).await?;
    let bootstrap = cluster.bootstrap_servers().to_string();
    let instance = instance.map(str::to_string);
    let outcome = tokio::task::spawn_blocking(move || {
        let mut cfg = rdkafka::ClientConfig::new();
        cfg.set("bootstrap.servers", &bootstrap)
            .set("group.id", "maxpoll")
            .set("group.protocol", "consumer")
            .set("enable.auto.commit", "false")
            .set("max.poll.interval.ms", "3000");
        if let Some(i) = &instance {
            cfg.set("group.instance.id", i);
        }
        let c: BaseConsumer = cfg.create()?;
        c.subscribe(&["maxpoll"])?;
        let assigned = |c: &BaseConsumer| c.assignment().map(|a| a.count()).unwrap_or(0);
        let t0 = Instant::now();
        while assigned(&c) < 2 {
            let _ = c.poll(Duration::from_millis(100));
            assert!(t0.elapsed() < Duration::from_secs(60), "never assigned");
        }
        let epoch_before = weir_ffi::membership(c.client()).map(|m| m.generation);
        // Stop polling past max.poll.interval.ms.
        std::thread::sleep(Duration::from_millis(5000));
        let mut errors = Vec::new();
        let t1 = Instant::now();
        let mut back_after = None;
        while t1.elapsed() < Duration::from_secs(30) {
            if let Some(Err(e)) = c.poll(Duration::from_millis(100)) {
                errors.push(e.to_string());
            }
            if let Some(fatal) = c.client().fatal_error() {
                errors.push(format!("FATAL {fatal:?}"));
                break;
            }
            if back_after.is_none() && assigned(&c) == 2 && t1.elapsed() > Duration::from_secs(1) {
                back_after = Some(t1.elapsed());
                break;
            }
        }
        let epoch_after = weir_ffi::membership(c.client()).map(|m| m.generation);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((
            errors,
            back_after,
            epoch_before,
            epoch_after,
        ))
    })
    .await??;
    eprintln!("max.poll.interval.ms exceeded: {outcome:?}");
    let (errors, back_after, _, _) = outcome;
    assert!(
        errors.iter().any(|e| e.contains("poll interval")),
        "the member is told it exceeded max.poll.interval.ms: {errors:?}"
    );
    assert!(
        !errors.iter().any(|e| e.starts_with("FATAL")),
        "librdkafka 2.12.1 fenced the member fatally: {errors:?}"
    );
    assert!(back_after.is_some(), "the member rejoined: {errors:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_max_poll_interval_exceeded_under_the_consumer_protocol() -> R {
    max_poll_interval_exceeded(None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_max_poll_interval_exceeded_by_a_static_member_under_the_consumer_protocol() -> R {
    max_poll_interval_exceeded(Some("maxpoll-0")).await
}

/// A classic member stopped while its JoinGroup waits at the broker: Kafka
/// answers the requests of one connection in order, so the final commit
/// sent meanwhile is read only once the join has ended, against the new
/// generation, and answered `ILLEGAL_GENERATION`; librdkafka, joining that
/// generation, keeps the member's partitions. Weir must commit again there
/// (given up, the partitions' next owner processed up to a commit interval
/// of records again). Member 2 heartbeats every 5 s, so the join waits up
/// to 5 s for it after member 0 leaves; member 1 is stopped inside that
/// window (the broker still says `PreparingRebalance` 800 ms after member 1
/// heard of it at its 500 ms heartbeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_final_commit_read_after_a_join_is_committed_again() -> R {
    common::init();
    let cluster = common::cluster(BrokerKind::Kafka).await?;
    let partitions = 6;
    cluster.create_topic("steady", partitions).await?;
    let group = "final-commit-behind-a-join";
    let log: Arc<Mutex<Log>> = Arc::default();
    let (stop, load) = steady_load(&cluster, partitions)?;
    let config = || member_config(&cluster, GroupProtocol::Classic, group);
    let slow = config()
        .set("session.timeout.ms", "30000")
        .set("heartbeat.interval.ms", "5000");
    let mut leaving = start(config(), 0, &log)?;
    let stopped = start(config(), 1, &log)?;
    let mut members = vec![start(slow, 2, &log)?];
    let mut next = 3u8;
    let mut caught = false;
    for attempt in 0..5 {
        let all = [&leaving, &stopped, &members[0]];
        wait_until("two partitions each", Duration::from_secs(60), || {
            all.iter().all(|m| m.0.stats().assigned_partitions() == 2)
        })
        .await;
        settled(&cluster, group, 3).await?;
        // Work past the last commit (commits are 1 s apart).
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (handle, run) = leaving;
        handle.shutdown();
        let _ = run.await??;
        let t0 = Instant::now();
        while describe(&cluster, group).await?.state != "PreparingRebalance" {
            assert!(t0.elapsed() < Duration::from_secs(10), "no rebalance");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        if describe(&cluster, group).await?.state == "PreparingRebalance" {
            caught = true;
            break;
        }
        eprintln!("attempt {attempt}: member 2 rejoined early; again");
        leaving = start(config(), next, &log)?;
        next += 1;
    }
    assert!(caught, "never stopped member 1 inside the join");
    let (handle, run) = stopped;
    handle.shutdown();
    let report = run.await??;
    assert!(report.halted.is_empty(), "{report:?}");
    members.push(start(config(), next, &log)?);
    finish(
        &log,
        stop,
        load,
        members,
        "a final commit read after a join",
    )
    .await
}

/// A member stopping while a handler still runs is assigned partitions
/// (another member left meanwhile). Its poll thread, already closing, made
/// queues for them, and each queue holds the consumer: the thread then
/// waited for ever to hold the last reference, and `run()` never returned
/// (a CI run hung on it). The stopping member's `run()` ends, and nothing
/// is lost or processed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_partitions_assigned_while_stopping_do_not_keep_run_from_ending() -> R {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    common::init();
    let cluster = common::cluster(BrokerKind::Kafka).await?;
    cluster.create_topic("steady", PARTITIONS).await?;
    let group = "assigned-while-stopping";
    let log: Arc<Mutex<Log>> = Arc::default();
    let (stop, load) = steady_load(&cluster, PARTITIONS)?;
    let config = || member_config(&cluster, GroupProtocol::Classic, group);
    let leaving = start(config(), 0, &log)?;
    let hold = Arc::new(AtomicBool::new(false));
    let mut slow = config();
    slow.shutdown_deadline = Duration::from_secs(20);
    let stopping = start_holding(slow, 1, &log, hold.clone())?;
    wait_until("two partitions each", Duration::from_secs(60), || {
        [&leaving, &stopping]
            .iter()
            .all(|m| m.0.stats().assigned_partitions() == 2)
    })
    .await;
    hold.store(true, Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (handle, run) = stopping;
    handle.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    leaving.0.shutdown();
    let report = leaving.1.await??;
    assert!(report.halted.is_empty(), "{report:?}");
    // Member 1 hears of the rebalance at its next heartbeat (500 ms) and is
    // assigned member 0's partitions while its handler still waits.
    settled(&cluster, group, 1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    hold.store(false, Relaxed);
    let t0 = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .map_err(|_| "run() of the member assigned partitions while stopping never ended")???;
    assert!(report.halted.is_empty(), "{report:?}");
    eprintln!(
        "run() ended {:?} after the handler was let go",
        t0.elapsed()
    );
    let rest = start(config(), 2, &log)?;
    finish(
        &log,
        stop,
        load,
        vec![rest],
        "partitions assigned while stopping",
    )
    .await
}
