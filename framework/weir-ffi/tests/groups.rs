//! `membership` and `describe_consumer_groups` against real groups: the mock
//! cluster (membership; it does not answer DescribeGroups) and Apache Kafka
//! (both, under both group protocols). These tests also run under valgrind
//! memcheck: `scripts/memcheck`.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use weir_ffi::{GroupType, Partition, describe_consumer_groups, membership};
use weir_testkit::{BrokerKind, KafkaCluster};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn consumer(bootstrap: &str, group: &str, protocol: &str, instance: Option<&str>) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("client.id", format!("ffi-{protocol}"))
        .set("enable.auto.commit", "false");
    if protocol == "classic" {
        c.set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
    }
    if let Some(i) = instance {
        c.set("group.instance.id", i);
    }
    let c: BaseConsumer = c.create().expect("consumer");
    c.subscribe(&["ffi-topic"]).expect("subscribe");
    c
}

/// Polls until the consumer owns `n` partitions.
fn poll_until_assigned(c: &BaseConsumer, n: usize) {
    let t0 = Instant::now();
    loop {
        let _ = c.poll(Duration::from_millis(100));
        if c.assignment().map(|a| a.count()).unwrap_or(0) == n {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never assigned {n} partitions"
        );
    }
}

async fn membership_of_a_member(kind: BrokerKind, protocol: &str) -> R {
    let cluster = KafkaCluster::start(kind).await?;
    cluster.create_topic("ffi-topic", 2).await?;
    let group = format!("ffi-{protocol}");
    let c = consumer(cluster.bootstrap_servers(), &group, protocol, Some("pod-0"));
    let before = membership(c.client()).expect("a consumer has a group handler");
    assert_eq!(before.group_id, group);
    assert_eq!(before.group_instance_id.as_deref(), Some("pod-0"));
    poll_until_assigned(&c, 2);
    let m = membership(c.client()).expect("membership");
    assert!(!m.member_id.is_empty(), "{m:?}");
    assert!(
        m.generation >= 1,
        "joined: a generation or member epoch, {m:?}"
    );
    // A second member joins: under the consumer protocol the first member's
    // epoch moves on as its assignment changes; under classic the generation does.
    let d = consumer(cluster.bootstrap_servers(), &group, protocol, Some("pod-1"));
    let t0 = Instant::now();
    loop {
        let _ = c.poll(Duration::from_millis(50));
        let _ = d.poll(Duration::from_millis(50));
        let a = c.assignment().map(|a| a.count()).unwrap_or(0);
        let b = d.assignment().map(|a| a.count()).unwrap_or(0);
        if a == 1 && b == 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never split: {a}/{b}"
        );
    }
    let later = membership(c.client()).expect("membership");
    assert_eq!(later.member_id, m.member_id, "same member");
    assert!(later.generation > m.generation, "{m:?} then {later:?}");
    let md = membership(d.client()).expect("membership");
    assert_ne!(md.member_id, m.member_id);
    eprintln!("{kind:?} {protocol}: {m:?} -> {later:?}; second {md:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_membership_classic() -> R {
    membership_of_a_member(BrokerKind::Mock, "classic").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_membership_consumer() -> R {
    membership_of_a_member(BrokerKind::Mock, "consumer").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_membership_classic() -> R {
    membership_of_a_member(BrokerKind::Kafka, "classic").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_membership_consumer() -> R {
    membership_of_a_member(BrokerKind::Kafka, "consumer").await
}

/// Both protocols' groups on one Kafka, described in one call, with a group
/// that does not exist: types, states, assignors, members and assignments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_describe_both_protocols() -> R {
    let cluster = KafkaCluster::start(BrokerKind::Kafka).await?;
    cluster.create_topic("ffi-topic", 2).await?;
    let classic = consumer(
        cluster.bootstrap_servers(),
        "g-classic",
        "classic",
        Some("c-0"),
    );
    let modern = consumer(cluster.bootstrap_servers(), "g-consumer", "consumer", None);
    poll_until_assigned(&classic, 2);
    poll_until_assigned(&modern, 2);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()?;
    let both = [
        Partition {
            topic: "ffi-topic".into(),
            partition: 0,
        },
        Partition {
            topic: "ffi-topic".into(),
            partition: 1,
        },
    ];
    // Keep the members alive (polling) while describing from another thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let pollers = std::thread::spawn(move || {
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = classic.poll(Duration::from_millis(50));
            let _ = modern.poll(Duration::from_millis(50));
        }
        (classic, modern)
    });
    let groups = describe_consumer_groups(
        admin.inner(),
        &["g-classic", "g-consumer", "g-never"],
        Duration::from_secs(10),
    )?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (classic, modern) = pollers.join().expect("pollers");
    assert_eq!(groups.len(), 3, "{groups:#?}");
    let by = |id: &str| groups.iter().find(|g| g.group_id == id).expect(id);

    let c = by("g-classic");
    assert_eq!(c.group_type, GroupType::Classic, "{c:#?}");
    assert_eq!(c.state, "Stable", "{c:#?}");
    assert_eq!(c.assignor, "cooperative-sticky");
    assert_eq!(c.members.len(), 1);
    assert_eq!(c.members[0].assignment, both);
    assert_eq!(c.members[0].group_instance_id.as_deref(), Some("c-0"));
    assert_eq!(c.members[0].client_id, "ffi-classic");
    assert!(c.coordinator.is_some());

    let m = by("g-consumer");
    assert_eq!(m.group_type, GroupType::Consumer, "{m:#?}");
    assert_eq!(m.state, "Stable", "{m:#?}");
    assert!(
        ["uniform", "range"].contains(&m.assignor.as_str()),
        "{m:#?}"
    );
    assert_eq!(m.members.len(), 1);
    assert_eq!(m.members[0].assignment, both);
    assert_eq!(m.members[0].target_assignment.as_deref(), Some(&both[..]));
    assert_eq!(m.members[0].client_id, "ffi-consumer");

    let n = by("g-never");
    assert!(
        n.state == "Dead" || n.error.is_some(),
        "an unknown group is dead or an error: {n:#?}"
    );
    assert!(n.members.is_empty());
    drop((classic, modern));
    Ok(())
}

/// `consumer_queue_len` counts what waits in the consumer queue (here five
/// fetched messages of an assigned partition), drops as they are polled, and
/// is `None` for clients without a consumer queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_consumer_queue_len_counts_waiting_events() -> R {
    use rdkafka::producer::{FutureProducer, Producer as _};
    use weir_ffi::consumer_queue_len;
    use weir_testkit::TestRecord;

    let cluster = KafkaCluster::start(BrokerKind::Mock).await?;
    cluster.create_topic("ffi-queue", 1).await?;
    cluster
        .produce(
            "ffi-queue",
            (0..5).map(|i| TestRecord::keyed(format!("k{i}"), "v").partition(0)),
        )
        .await?;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "ffi-queue")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    assert_eq!(consumer_queue_len(c.client()), Some(0));
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("ffi-queue", 0, rdkafka::Offset::Beginning)?;
    c.assign(&tpl)?;
    // Nothing polls: the fetched messages (and librdkafka's own ops, such
    // as the fetch start) wait in the consumer queue.
    let t0 = Instant::now();
    let queued = loop {
        match consumer_queue_len(c.client()) {
            Some(n) if n >= 5 => break n,
            other => assert!(
                t0.elapsed() < Duration::from_secs(30),
                "never 5 queued: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = c.poll(Duration::ZERO).expect("a message")?;
    assert_eq!(rdkafka::Message::offset(&first), 0);
    drop(first);
    let after_one = consumer_queue_len(c.client()).expect("a consumer queue");
    assert!(after_one < queued, "{after_one} < {queued}");
    let mut offsets = vec![0];
    while let Some(m) = c.poll(Duration::ZERO) {
        offsets.push(rdkafka::Message::offset(&m?));
    }
    assert_eq!(offsets, [0, 1, 2, 3, 4]);
    assert_eq!(consumer_queue_len(c.client()), Some(0));

    // No consumer queue: a consumer without a group, a producer.
    let no_group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()?;
    assert_eq!(consumer_queue_len(no_group.client()), None);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()?;
    assert_eq!(consumer_queue_len(producer.client()), None);
    Ok(())
}
