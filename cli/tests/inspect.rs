//! `weir inspect` against a running consumer's telemetry endpoint (mock
//! cluster and Apache Kafka): one key blocks while others flow; the command
//! names the holder of the commit with its key only when the endpoint serves
//! keys, and the holder gauges are on `/metrics`.

#[path = "../../framework/weir/tests/common/mod.rs"]
mod common;
mod run;

use std::time::Duration;

use weir::{Consumer, Message, ProcessError, StringCodec, processor_fn};
use weir_telemetry::{HealthOptions, Telemetry};
use weir_testkit::{BrokerKind, TestRecord};

use common::{R, wait_until};
use run::{ok, weir};

broker_tests!(inspect_names_the_holder_of_the_commit);

async fn inspect_names_the_holder_of_the_commit(kind: BrokerKind) -> R {
    let telemetry = Telemetry::install()?;
    let cluster = common::cluster(kind).await?;
    let topic = format!("inspect-{}", kind.name());
    cluster.create_topic(&topic, 1).await?;
    cluster
        .produce(&topic, [TestRecord::keyed("user-42", "blocks")])
        .await?;
    let (seen, _) = common::recording::<String>();
    let s = seen.clone();
    let processor = processor_fn(move |m: Message<String>| {
        let s = s.clone();
        async move {
            if m.key() == Some(b"user-42") {
                m.cancellation().cancelled().await;
            } else {
                s.lock().push(m.value().clone());
            }
            Ok::<_, ProcessError>(())
        }
    });
    let group = format!("inspect-g-{}", kind.name());
    let consumer = Consumer::builder(common::config(&cluster, &group, &[&topic]))
        .codec(StringCodec)
        .build(processor)?;
    let handle = consumer.handle();
    let with_keys = HealthOptions {
        inspect_keys: true,
        ..HealthOptions::default()
    };
    let (open, _s1) = telemetry
        .serve("127.0.0.1:0".parse()?, vec![handle.clone()], with_keys)
        .await?;
    let (hidden, _s2) = telemetry
        .serve(
            "127.0.0.1:0".parse()?,
            vec![handle.clone()],
            HealthOptions::default(),
        )
        .await?;
    let run = tokio::spawn(consumer.run());
    wait_until("the holder in a snapshot", Duration::from_secs(60), || {
        handle
            .inspect()
            .and_then(|s| s.partition(&topic, 0).and_then(|p| p.holder.clone()))
            .is_some()
    })
    .await;
    cluster
        .produce(
            &topic,
            (0..20).map(|i| TestRecord::keyed(format!("k{i}"), format!("v{i}"))),
        )
        .await?;
    wait_until("the other keys flow", Duration::from_secs(30), || {
        seen.lock().len() == 20
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let json: serde_json::Value =
        serde_json::from_str(&ok(weir(&["inspect", &open.to_string(), "--json"])))?;
    let p = &json["consumers"][0]["partitions"][0];
    assert_eq!(p["topic"], topic.as_str());
    assert_eq!(p["holder"]["offset"], 0);
    assert_eq!(p["holder"]["key"], "user-42");
    assert_eq!(p["holder"]["state"], "running");
    assert_eq!(p["finished_above"], 20);
    assert!(p["holder"]["waiting_ms"].as_i64().unwrap() >= 500, "{p}");

    let table = ok(weir(&["inspect", &format!("http://{open}")]));
    assert!(table.contains(&format!("group {group}")), "{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with(&topic))
        .expect("a row for the partition");
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[3], "0", "holder offset: {line}");
    assert_eq!(cols[4], "running", "{line}");
    assert_eq!(cols[5], "user-42", "{line}");
    assert_eq!(cols[8], "20", "finished behind the holder: {line}");

    // Keys stay private unless the endpoint is told to serve them.
    let private = ok(weir(&["inspect", &hidden.to_string(), "--json"]));
    assert!(!private.contains("user-42"), "{private}");
    let v: serde_json::Value = serde_json::from_str(&private)?;
    let hash = v["consumers"][0]["partitions"][0]["holder"]["key_hash"]
        .as_str()
        .expect("a key hash")
        .to_string();
    let table = ok(weir(&["inspect", &hidden.to_string()]));
    assert!(table.contains(&format!("#{}", &hash[..12])), "{table}");
    assert!(!table.contains("user-42"), "{table}");

    // The same on /metrics, as numbers.
    let metrics = telemetry.render();
    let labels = [
        format!("group=\"{group}\""),
        format!("topic=\"{topic}\""),
        "partition=\"0\"".to_string(),
    ];
    let gauge = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x.as_str())))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(gauge("weir_commit_holder_offset{"), Some(0.0), "{metrics}");
    assert_eq!(gauge("weir_uncommitted_finished{"), Some(20.0));
    assert_eq!(gauge("weir_commit_holder_attempt{"), Some(1.0));
    assert!(gauge("weir_commit_holder_waiting_seconds{").unwrap() >= 0.5);

    // Not running: a clear error, not a panic.
    let down = weir(&["inspect", "127.0.0.1:1"]);
    assert!(!down.status.success());
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot reach"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    handle.shutdown();
    let _ = run.await??;
    Ok(())
}
