//! `weir groups describe` and `weir offsets reset` on the mock cluster and tansu.
//! Neither test broker answers ListGroups/DescribeGroups (docs/brokers.md), so
//! membership (`groups list`, members in `describe`, the active-member check of
//! `reset --execute`) is not exercised here; what is: positions, lag, oldest
//! age, reset plans, `--force` commits, the refusal when membership cannot be
//! checked, and the exit codes.

#[path = "../../framework/weir/tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use weir::{Consumer, Message, ProcessError, StringCodec, processor_fn};
use weir_testkit::{BrokerKind, TestRecord};

use common::{R, wait_until};

fn weir(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .output()
        .expect("run weir")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

broker_tests!(describe_and_reset);

async fn describe_and_reset(kind: BrokerKind) -> R {
    let cluster = common::cluster(kind).await?;
    let b = cluster.bootstrap_servers().to_string();
    cluster.create_topic("events", 2).await?;
    cluster
        .produce(
            "events",
            (0..30).map(|i| TestRecord::keyed(format!("k{i}"), format!("e{i}")).partition(i % 2)),
        )
        .await?;
    let c = Consumer::builder(common::config(&cluster, "reporting", &["events"]))
        .codec(StringCodec)
        .build(processor_fn(|_m: Message<String>| async {
            Ok::<_, ProcessError>(())
        }))?;
    let h = c.handle();
    let run = tokio::spawn(c.run());
    wait_until("30 processed", Duration::from_secs(30), || {
        h.stats().processed() >= 30
    })
    .await;
    h.shutdown();
    let _ = run.await??;

    let d = json(&weir(&[
        "groups",
        "describe",
        "reporting",
        "--brokers",
        &b,
        "--topic",
        "events",
        "--json",
    ]));
    assert_eq!(d["lag"], 0, "caught up: {d}");
    assert!(
        d["membership_error"].is_string(),
        "these brokers do not answer ListGroups: {d}"
    );

    // New messages: lag and the oldest unconsumed age.
    cluster
        .produce(
            "events",
            (0..10).map(|i| TestRecord::keyed("k", format!("late{i}")).partition(0)),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = json(&weir(&[
        "groups",
        "describe",
        "reporting",
        "--brokers",
        &b,
        "--topic",
        "events",
        "--json",
    ]));
    assert_eq!(d["lag"], 10, "{d}");
    let p0 = &d["partitions"][0];
    assert_eq!(p0["committed"], 15);
    assert_eq!(p0["high"], 25);
    assert!(p0["oldest_unconsumed_age_ms"].as_i64().unwrap() >= 0, "{d}");
    let table = weir(&[
        "groups",
        "describe",
        "reporting",
        "--brokers",
        &b,
        "--topic",
        "events",
    ]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("total lag 10"));

    // Dry run by default: plan only.
    let plan = json(&weir(&[
        "offsets",
        "reset",
        "--brokers",
        &b,
        "--group",
        "reporting",
        "--topic",
        "events",
        "--shift-by",
        "-5",
        "--json",
    ]));
    assert_eq!(plan["executed"], false);
    assert_eq!(plan["plan"][0]["new"], 10);
    assert_eq!(plan["plan"][0]["reprocessed"], 5);
    assert_eq!(
        common::committed(&cluster, "reporting", "events").await,
        vec![15, 15],
        "a dry run commits nothing"
    );

    // Executing needs the membership check; these brokers cannot answer it.
    let out = weir(&[
        "offsets",
        "reset",
        "--brokers",
        &b,
        "--group",
        "reporting",
        "--topic",
        "events",
        "--to-earliest",
        "--execute",
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        common::committed(&cluster, "reporting", "events").await,
        vec![15, 15]
    );
    let forced = weir(&[
        "offsets",
        "reset",
        "--brokers",
        &b,
        "--group",
        "reporting",
        "--topic",
        "events",
        "--partitions",
        "1",
        "--to-earliest",
        "--execute",
        "--force",
        "--json",
    ]);
    if kind == BrokerKind::Mock {
        // The mock cluster refuses commits from a client that is not a group
        // member (UnknownMemberId), unlike Kafka for an empty group: exit 4, nothing moved.
        assert_eq!(
            forced.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&forced.stderr)
        );
        assert_eq!(
            common::committed(&cluster, "reporting", "events").await,
            vec![15, 15]
        );
        return Ok(());
    }
    json(&forced);
    assert_eq!(
        common::committed(&cluster, "reporting", "events").await,
        vec![15, 0]
    );
    let plan = json(&weir(&[
        "offsets",
        "reset",
        "--brokers",
        &b,
        "--group",
        "reporting",
        "--topic",
        "events",
        "--to-offset",
        "999",
        "--json",
    ]));
    assert_eq!(plan["plan"][1]["new"], 15, "clamped to the log end");
    assert!(
        plan["plan"][1]["note"]
            .as_str()
            .unwrap()
            .contains("clamped")
    );

    // Errors scripts can rely on.
    assert_eq!(
        weir(&[
            "offsets",
            "reset",
            "--brokers",
            &b,
            "--group",
            "reporting",
            "--topic",
            "nope",
            "--to-latest"
        ])
        .status
        .code(),
        Some(3)
    );
    assert_eq!(
        weir(&[
            "offsets",
            "reset",
            "--brokers",
            &b,
            "--group",
            "reporting",
            "--topic",
            "events",
            "--partitions",
            "7",
            "--to-latest"
        ])
        .status
        .code(),
        Some(3)
    );
    assert_eq!(
        weir(&[
            "offsets",
            "reset",
            "--brokers",
            &b,
            "--group",
            "reporting",
            "--topic",
            "events"
        ])
        .status
        .code(),
        Some(1),
        "no target"
    );
    Ok(())
}
