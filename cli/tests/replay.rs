//! `weir replay --copy-to` on the mock cluster and tansu.

#[path = "../../framework/weir/tests/common/mod.rs"]
mod common;
mod run;

use weir_testkit::{BrokerKind, TestRecord};

use common::R;
use run::weir;

broker_tests!(replay_copies_a_range);

async fn replay_copies_a_range(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    let b = cluster.bootstrap_servers().to_string();
    cluster.create_topic("src", 2).await?;
    cluster.create_topic("dst", 2).await?;
    cluster
        .produce(
            "src",
            (0..40).map(|i| {
                TestRecord::keyed(format!("k{i}"), format!("m{i}"))
                    .partition(i % 2)
                    .header("h", "v")
            }),
        )
        .await?;
    let out = weir(&[
        "replay",
        "--brokers",
        &b,
        "--topic",
        "src",
        "--from",
        "5",
        "--group",
        "copy-1",
        "--copy-to",
        "dst",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["processed"], 30, "{v}");
    let copied = cluster.read_to_end("dst").await?;
    assert_eq!(copied.len(), 30);
    assert!(
        copied
            .iter()
            .all(|m| m.header("h") == Some(&b"v"[..]) && m.key.is_some())
    );
    let payloads: std::collections::BTreeSet<String> = copied
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload.as_deref().unwrap()).into_owned())
        .collect();
    assert!(
        !payloads.contains("m0") && payloads.contains("m39"),
        "offsets 0..5 of each partition skipped"
    );

    let out = weir(&[
        "replay",
        "--brokers",
        &b,
        "--topic",
        "src",
        "--from",
        "5",
        "--group",
        "copy-2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run_replay"),
        "says how to register a processor"
    );
    let out = weir(&[
        "replay",
        "--brokers",
        &b,
        "--topic",
        "src",
        "--from",
        "yesterday",
        "--group",
        "g",
        "--copy-to",
        "dst",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    let out = weir(&[
        "replay",
        "--brokers",
        &b,
        "--topic",
        "nope",
        "--from",
        "0",
        "--group",
        "g",
        "--copy-to",
        "dst",
    ]);
    assert_eq!(out.status.code(), Some(3), "unknown topic");
    Ok(())
}
