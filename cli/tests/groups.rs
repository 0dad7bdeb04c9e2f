//! `weir groups list/describe` and `weir offsets reset` on the mock cluster and
//! Apache Kafka: positions, lag, oldest age, reset plans, `--force` commits,
//! the refusal when membership cannot be checked (the mock answers no
//! ListGroups), and the exit codes; on Kafka also membership (`groups list`,
//! members and their assignment in `describe`), the refusal of `reset
//! --execute` while a member is active, and a reset by datetime.

#[path = "../../framework/weir/tests/common/mod.rs"]
mod common;
mod run;

use std::time::Duration;

use weir::{Consumer, Message, ProcessError, StringCodec, processor_fn};
use weir_testkit::{BrokerKind, TestRecord};

use common::{R, wait_until};
use run::weir;

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
    if kind == BrokerKind::Mock {
        assert!(
            d["membership_error"].is_string(),
            "the mock cluster does not answer ListGroups: {d}"
        );
    } else {
        assert!(d["membership_error"].is_null(), "{d}");
        assert_eq!(d["info"]["state"], "Empty", "the consumer left: {d}");
    }

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

    if kind == BrokerKind::Kafka {
        // Kafka answers the membership check: an empty group may be reset
        // without --force (a shift by 0 keeps the positions the test expects).
        let ok = weir(&[
            "offsets",
            "reset",
            "--brokers",
            &b,
            "--group",
            "reporting",
            "--topic",
            "events",
            "--shift-by",
            "0",
            "--execute",
            "--json",
        ]);
        assert_eq!(json(&ok)["executed"], true);
    }
    // Executing needs the membership check; the mock cannot answer it.
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
    if kind == BrokerKind::Mock {
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
    } else {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            common::committed(&cluster, "reporting", "events").await,
            vec![0, 0],
            "reset to earliest"
        );
        // Back to 15/15 for the rest of the test.
        json(&weir(&[
            "offsets",
            "reset",
            "--brokers",
            &b,
            "--group",
            "reporting",
            "--topic",
            "events",
            "--to-offset",
            "15",
            "--execute",
            "--json",
        ]));
    }
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

/// Kafka only: `groups list` and `describe` show the live member and its
/// assignment, `reset --execute` is refused (exit 5) while it is active and
/// nothing moves, and once it has left, a reset by datetime moves each
/// partition to its first message at or after that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_membership_refusal_and_datetime_reset() -> R {
    membership_refusal_and_datetime_reset(weir::GroupProtocol::Classic).await
}

/// The same for a group on the consumer protocol (KIP-848): `groups list`
/// and `describe` show its type, assignor and members with their current and
/// target assignment (librdkafka's DescribeConsumerGroups; the classic
/// DescribeGroups shows nothing for it), and `offsets reset` refuses it
/// while a member is active, exactly as it refuses a classic group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_protocol_group_membership_refusal_and_datetime_reset() -> R {
    membership_refusal_and_datetime_reset(weir::GroupProtocol::Consumer).await
}

async fn membership_refusal_and_datetime_reset(protocol: weir::GroupProtocol) -> R {
    common::init();
    let cluster = common::cluster(BrokerKind::Kafka).await?;
    let b = cluster.bootstrap_servers().to_string();
    cluster.create_topic("events", 2).await?;
    cluster
        .produce(
            "events",
            (0..20).map(|i| TestRecord::keyed("k", format!("early{i}")).partition(i % 2)),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cut = rfc3339_now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster
        .produce(
            "events",
            (0..10).map(|i| TestRecord::keyed("k", format!("late{i}")).partition(i % 2)),
        )
        .await?;
    let mut cfg = common::config(&cluster, "live", &["events"]);
    cfg.group_protocol = protocol;
    if protocol == weir::GroupProtocol::Consumer {
        // The classic-only properties the test helper sets are refused here.
        cfg.kafka
            .retain(|k, _| !k.starts_with("session.") && !k.starts_with("heartbeat."));
    }
    let c = Consumer::builder(cfg)
        .codec(StringCodec)
        .build(processor_fn(|_m: Message<String>| async {
            Ok::<_, ProcessError>(())
        }))?;
    let h = c.handle();
    let run = tokio::spawn(c.run());
    wait_until("30 processed", Duration::from_secs(60), || {
        h.stats().processed() >= 30
    })
    .await;
    common::wait_until_async("commits of 15/15", Duration::from_secs(30), || async {
        common::committed(&cluster, "live", "events").await == vec![15, 15]
    })
    .await;

    let list = json(&weir(&["groups", "list", "--brokers", &b, "--json"]));
    let g = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "live")
        .unwrap_or_else(|| panic!("live in {list}"))
        .clone();
    assert_eq!(g["state"], "Stable", "{g}");
    assert_eq!(g["members"].as_array().unwrap().len(), 1, "{g}");
    let want_type = protocol.librdkafka_name();
    assert_eq!(g["type"], want_type, "{g}");
    let d = json(&weir(&[
        "groups",
        "describe",
        "live",
        "--brokers",
        &b,
        "--json",
    ]));
    assert!(d["membership_error"].is_null(), "{d}");
    assert_eq!(
        d["info"]["members"][0]["assignment"]["events"],
        serde_json::json!([0, 1]),
        "{d}"
    );
    assert_eq!(d["lag"], 0, "topics taken from the assignment: {d}");
    assert_eq!(d["info"]["type"], want_type, "{d}");
    if protocol == weir::GroupProtocol::Consumer {
        assert_eq!(
            d["info"]["members"][0]["target_assignment"]["events"],
            serde_json::json!([0, 1]),
            "the consumer protocol's target assignment: {d}"
        );
        assert!(
            ["uniform", "range"].contains(&d["info"]["protocol"].as_str().unwrap_or("")),
            "the broker's assignor: {d}"
        );
    } else {
        assert_eq!(d["info"]["protocol"], "cooperative-sticky", "{d}");
    }
    let text = weir(&["groups", "describe", "live", "--brokers", &b]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&format!("{want_type} protocol, 1 member(s)")),
        "{text}"
    );

    let refused = weir(&[
        "offsets",
        "reset",
        "--brokers",
        &b,
        "--group",
        "live",
        "--topic",
        "events",
        "--to-earliest",
        "--execute",
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("1 active member"), "{stderr}");
    // --force does not override an active member.
    let forced = weir(&[
        "offsets",
        "reset",
        "--brokers",
        &b,
        "--group",
        "live",
        "--topic",
        "events",
        "--to-earliest",
        "--execute",
        "--force",
    ]);
    assert_eq!(
        forced.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(
        common::committed(&cluster, "live", "events").await,
        vec![15, 15],
        "nothing moved"
    );

    h.shutdown();
    let _ = run.await??;
    let reset = json(&weir(&[
        "offsets",
        "reset",
        "--brokers",
        &b,
        "--group",
        "live",
        "--topic",
        "events",
        "--to-datetime",
        &cut,
        "--execute",
        "--json",
    ]));
    assert_eq!(reset["executed"], true, "{reset}");
    assert_eq!(
        common::committed(&cluster, "live", "events").await,
        vec![10, 10],
        "each partition at its first message after {cut}"
    );
    Ok(())
}

/// Now as RFC 3339 (UTC, milliseconds).
fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
