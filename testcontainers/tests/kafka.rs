//! The Apache Kafka fixture itself: a three-node cluster that keeps every
//! acknowledged message through a leader SIGKILL, controlled shutdown and
//! restart on the same data, stalls, and no JVM left behind by a test that
//! panics or aborts. Plain rdkafka, not Weir.

use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use weir_testkit::{ApicurioRegistry, BrokerKind, KafkaCluster, TestRecord};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn records(prefix: &str, n: usize) -> Vec<TestRecord> {
    (0..n)
        .map(|i| {
            TestRecord::keyed(format!("k{}", i % 5), format!("{prefix}{i}"))
                .partition((i % 3) as i32)
        })
        .collect()
}

/// Three voters, replication factor 3, `min.insync.replicas=2`: SIGKILL the
/// leader of a partition, keep producing with `acks=all` (two replicas are
/// enough), restart the node on its data, and read every message back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_acknowledged_messages_through_a_leader_sigkill() -> R {
    let started = Instant::now();
    let cluster = KafkaCluster::kafka(3).await?;
    eprintln!("three nodes ready in {:?}", started.elapsed());
    assert_eq!(cluster.kind(), BrokerKind::Kafka);
    assert_eq!(cluster.node_count(), 3);
    assert_eq!(cluster.bootstrap_servers().split(',').count(), 3);
    cluster.create_topic("replicated", 3).await?;
    cluster.produce("replicated", records("a", 30)).await?;

    let nodes = cluster.kafka_nodes().expect("kafka nodes");
    let leader = nodes
        .lock()
        .await
        .leader("replicated", 0)
        .await?
        .expect("a leader");
    let pid = nodes.lock().await.pid(leader).expect("running");
    nodes.lock().await.kill(leader)?;
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the JVM is gone"
    );
    // A new leader is elected among the two others.
    let start = Instant::now();
    loop {
        let l = nodes
            .lock()
            .await
            .leader("replicated", 0)
            .await
            .ok()
            .flatten();
        if matches!(l, Some(l) if l != leader) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no new leader for replicated/0"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.produce("replicated", records("b", 30)).await?;
    nodes.lock().await.restart(leader).await?;
    assert!(nodes.lock().await.is_running(leader));

    let all = cluster.read_to_end("replicated").await?;
    let mut payloads: Vec<String> = all
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload.as_deref().unwrap_or_default()).into_owned())
        .collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(all.len(), 60, "every acknowledged message, once");
    assert_eq!(payloads.len(), 60);
    Ok(())
}

/// One node: SIGTERM (controlled shutdown) and SIGKILL, each followed by a
/// restart on the same data directory, keep messages and committed offsets; a
/// stalled node answers nothing until it is resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_restarts_on_its_data_and_stalls() -> R {
    let cluster = KafkaCluster::kafka(1).await?;
    cluster.create_topic("durable", 2).await?;
    cluster
        .produce(
            "durable",
            records("v", 20)
                .into_iter()
                .map(|r| r.partition(0))
                .collect::<Vec<_>>(),
        )
        .await?;
    let mut c = cluster.client_config();
    c.set("group.id", "durable-group")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("durable", 0, Offset::Offset(7))?;
    let consumer = tokio::task::spawn_blocking(move || {
        consumer.assign(&tpl).unwrap();
        consumer.commit(&tpl, CommitMode::Sync).map(|_| consumer)
    })
    .await??;
    drop(consumer);
    let before = cluster.read_to_end("durable").await?;
    assert_eq!(before.len(), 20);

    let nodes = cluster.kafka_nodes().expect("kafka");
    nodes.lock().await.stop(1)?;
    assert!(!nodes.lock().await.is_running(1));
    nodes.lock().await.restart(1).await?;
    assert_eq!(
        cluster.read_to_end("durable").await?,
        before,
        "after SIGTERM + restart"
    );
    nodes.lock().await.kill(1)?;
    nodes.lock().await.restart(1).await?;
    assert_eq!(
        cluster.read_to_end("durable").await?,
        before,
        "after SIGKILL + restart"
    );
    let committed = cluster
        .committed_offsets("durable-group", "durable")
        .await?;
    assert_eq!(
        committed.get(&0),
        Some(&Some(7)),
        "committed offsets survive"
    );

    // Stalled: a send cannot be acknowledged until SIGCONT.
    nodes.lock().await.stall(1)?;
    let producer = cluster.producer()?;
    let stalled_at = Instant::now();
    let send = tokio::spawn(async move {
        producer
            .send(
                FutureRecord::<str, str>::to("durable")
                    .payload("late")
                    .partition(1),
                Duration::from_secs(30),
            )
            .await
            .map(|d| (d.partition, d.offset))
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!send.is_finished(), "a stalled broker acknowledges nothing");
    nodes.lock().await.unstall(1)?;
    let delivered = send.await?.map_err(|(e, _)| e)?;
    assert_eq!(delivered.0, 1);
    assert!(stalled_at.elapsed() >= Duration::from_secs(3));
    Ok(())
}

/// A cluster id that starts with `-` (1 in 64 random ids does) is formatted
/// like any other (it was once read as an option by the storage tool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_id_starting_with_a_dash_is_formatted() -> R {
    let id = std::iter::repeat_with(weir_testkit::cluster_id)
        .find(|id| id.starts_with('-'))
        .expect("ids");
    let cluster = KafkaCluster::kafka_with(weir_testkit::KafkaOptions {
        cluster_id: Some(id),
        ..weir_testkit::KafkaOptions::nodes(1)
    })
    .await?;
    cluster.create_topic("dash", 1).await?;
    Ok(())
}

/// Runs this test binary again with one of the helper tests below (ignored in
/// normal runs); the helper starts Kafka, writes the JVM's pid and fails.
fn run_helper(name: &str) -> u32 {
    let pid_file = std::env::temp_dir().join(format!("weir-leak-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&pid_file);
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", name, "--nocapture"])
        .env("WEIR_LEAK_PID_FILE", &pid_file)
        .output()
        .expect("run helper");
    assert!(!out.status.success(), "the helper fails on purpose");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|_| {
            panic!(
                "helper wrote no pid: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .trim()
        .parse()
        .expect("pid");
    let _ = std::fs::remove_file(&pid_file);
    pid
}

fn assert_gone(pid: u32, how: &str) {
    let start = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        if stat.is_empty() || state == Some('Z') {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the Kafka JVM {pid} outlived a test that {how}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_panicking_or_aborted_test_leaves_no_kafka_jvm() {
    let pid = run_helper("helper_starts_kafka_then_panics");
    assert_gone(pid, "panicked");
    let pid = run_helper("helper_starts_kafka_then_aborts");
    assert_gone(pid, "aborted (no destructor ran: the watchdog killed it)");
}

async fn start_and_record_pid() -> KafkaCluster {
    let cluster = KafkaCluster::kafka(1).await.expect("kafka");
    let pid = cluster.kafka_nodes().unwrap().lock().await.pid(1).unwrap();
    std::fs::write(
        std::env::var("WEIR_LEAK_PID_FILE").expect("pid file"),
        pid.to_string(),
    )
    .unwrap();
    cluster
}

#[tokio::test]
#[ignore = "helper of a_panicking_or_aborted_test_leaves_no_kafka_jvm"]
async fn helper_starts_kafka_then_panics() {
    let _cluster = start_and_record_pid().await;
    panic!("on purpose");
}

#[tokio::test]
#[ignore = "helper of a_panicking_or_aborted_test_leaves_no_kafka_jvm"]
async fn helper_starts_kafka_then_aborts() {
    let _cluster = start_and_record_pid().await;
    std::process::abort();
}

/// Apicurio Registry answers the Confluent-compatible API Weir uses:
/// register, look up by id, and the same schema gets the same id.
#[tokio::test]
async fn apicurio_serves_the_confluent_compatible_api() -> R {
    let reg = ApicurioRegistry::start().await?;
    assert!(reg.url().ends_with("/apis/ccompat/v7"));
    let fixture = &reg;
    let schema = r#"{"type":"record","name":"Click","fields":[{"name":"link","type":"string"}]}"#;
    let id = fixture.register("clicks-value", schema).await?;
    assert_eq!(
        fixture.register("clicks-value", schema).await?,
        id,
        "same schema, same id"
    );
    let other = fixture
        .register(
            "other-value",
            r#"{"type":"record","name":"Other","fields":[{"name":"n","type":"int"}]}"#,
        )
        .await?;
    assert_ne!(other, id);
    Ok(())
}
