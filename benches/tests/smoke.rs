//! A tiny run of each benchmark scenario on the mock cluster, so CI notices a
//! broken benchmark. These check correctness fields (nothing lost, no order
//! violation), never speed: rates on shared machines are noise.

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    run_with(args, &[])
}

/// [`run`] with environment variables set for weir-bench.
fn run_with(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_weir-bench"))
        .args(args)
        .args(["--broker", "mock", "--json"])
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("run weir-bench");
    assert!(
        out.status.success(),
        "weir-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("output")).expect("JSON last line");
    assert_eq!(v["broker"], "mock");
    assert!(v["cores"].as_u64().unwrap() >= 1);
    v
}

#[test]
fn overhead_smoke() {
    let v = run(&["overhead", "--messages", "2000", "--rounds", "2"]);
    assert!(v["weir_msgs_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(v["rounds"], 2);
    assert_eq!(v["round_ratios"].as_array().map(Vec::len), Some(2));
}

#[test]
fn keyed_smoke() {
    let v = run(&["keyed", "--messages", "600", "--concurrency", "50"]);
    assert_eq!(v["order_violations"], 0);
    assert_eq!(v["handler_timer"], "precise");
    let mean = v["handler_mean_ms"].as_f64().unwrap();
    assert!(
        (5.0..50.0).contains(&mean),
        "the handler waits at least its 5 ms: {mean} ms"
    );
}

#[test]
fn retry_smoke() {
    let v = run(&["retry", "--messages", "100"]);
    assert_eq!(v["lost"], 0);
    assert_eq!(v["early"], 0);
}

#[test]
fn outbox_smoke() {
    let v = run(&["outbox", "--messages", "500"]);
    assert_eq!(v["lost"], 0);
}

#[test]
fn rebalance_smoke() {
    // Member processes join and leave a consumer-protocol group (the mock
    // cluster answers KIP-848 heartbeats); no SIGKILL here: the mock's
    // consumer-group session timeout is 45 s.
    let v = run(&[
        "rebalance",
        "--protocols",
        "consumer",
        "--events",
        "join,leave",
        "--rate",
        "120",
        "--settle-ms",
        "500",
    ]);
    assert_eq!(v["lost"], 0, "{v}");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{v}");
    for r in rows {
        assert!(r["moved_partitions"].as_u64().unwrap() > 0, "{r}");
        assert!(r["rebalance_ms"].as_i64().unwrap() > 0, "{r}");
    }
    assert_eq!(rows[1]["event"], "leave");
    assert_eq!(rows[1]["redelivered"], 0, "a clean leave commits: {v}");
}

#[test]
fn batch_sink_smoke() {
    // The scenario itself fails unless every path wrote every row once and
    // each Weir path one marker per message.
    let v = run(&["batch-sink", "--messages", "1000", "--max-batch", "64"]);
    assert_eq!(v["scenario"], "batch-sink");
    for path in ["plain", "plain_markers", "batch", "single"] {
        assert!(v["rows_per_s"][path].as_f64().unwrap() > 0.0, "{v}");
    }
    let batches = v["batches"].as_u64().unwrap();
    assert!(
        (16..1000).contains(&batches),
        "1,000 messages in batches of at most 64: {batches} batches"
    );
}

#[test]
fn transactions_smoke() {
    // The scenario itself fails unless each transactional run's outputs are
    // every input once for a read_committed reader.
    let v = run(&[
        "transactions",
        "--messages",
        "400",
        "--commit-intervals",
        "100",
    ]);
    assert_eq!(v["scenario"], "transactions");
    let row = &v["intervals"][0];
    assert_eq!(row["commit_interval_ms"], 100, "{v}");
    assert_eq!(row["transactional_outputs"], 400, "{v}");
    assert!(row["transactions"].as_u64().unwrap() >= 1, "{v}");
    assert!(row["ratio"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn peers_smoke() {
    // The peers are not built in CI: they are reported as skipped, with why.
    let v = run_with(
        &[
            "peers",
            "--messages",
            "3000",
            "--rounds",
            "1",
            "--peers",
            "raw,weir,arroyo,arroyo-tuned,parallel-consumer,spring-kafka,consumer-perf",
            "--time-box-s",
            "3",
        ],
        &[
            ("WEIR_PEER_ARROYO", "/nonexistent/weir-peer-arroyo"),
            ("WEIR_PEERS_JAVA", "/nonexistent/java"),
        ],
    );
    assert_eq!(v["scenario"], "peers");
    let noop = &v["noop"];
    for system in ["raw", "weir"] {
        let s = &noop["systems"][system];
        assert!(s["msgs_per_s"].as_f64().unwrap() > 0.0, "{v}");
        // Read from the child's /proc entry: a real process's peak RSS.
        assert!(s["peak_rss_mb"].as_f64().unwrap() > 1.0, "{v}");
    }
    for peer in [
        "arroyo",
        "arroyo-tuned",
        "parallel-consumer",
        "spring-kafka",
        "consumer-perf",
    ] {
        assert!(
            noop["skipped"][peer]
                .as_str()
                .unwrap()
                .contains("benches/peers/build"),
            "{peer}: {v}"
        );
    }
    assert!(noop["weir_vs_raw"].as_f64().unwrap() > 0.0, "{v}");
    assert!(noop["weir_vs_best_peer"].is_null(), "no peer ran: {v}");

    // keyed-5ms: the sequential loop manages about 200 msg/s (3000 would
    // take 15 s), so it reports what it counted in the 3 s box; Weir runs
    // 200 handlers at once and keeps each key's order.
    let keyed = &v["keyed-5ms"];
    let (weir, raw) = (&keyed["systems"]["weir"], &keyed["systems"]["raw"]);
    assert_eq!(raw["time_boxed"], true, "{v}");
    assert_eq!(weir["time_boxed"], false, "{v}");
    assert_eq!(weir["order_violations"], 0, "{v}");
    assert_eq!(raw["order_violations"], 0, "{v}");
    assert!(weir["ratio_vs_ideal"].as_f64().unwrap() > 0.0, "{v}");
    assert!(keyed["weir_vs_raw"].as_f64().unwrap() > 5.0, "{v}");

    // slow-partition: partition 0's 250 messages take 200 ms each (50 s one
    // after another); Weir's other partitions finish within the 3 s box.
    // (Whether the sequential loop meets partition 0 before the others
    // depends on the order fetches return in: no assertion on it.)
    let slow = &v["slow-partition"];
    assert_eq!(slow["counted"], 2750, "{v}");
    assert_eq!(slow["systems"]["weir"]["order_violations"], 0, "{v}");
    assert_eq!(slow["systems"]["weir"]["time_boxed"], false, "{v}");

    // retry: every tenth of the 3000 records fails once and comes back
    // through Weir's 1 s tier, never before it is due, while the healthy
    // 2700 are counted; the raw loop is reported as unable.
    let retry = &v["retry"];
    assert_eq!(retry["counted"], 2700, "{v}");
    assert_eq!(retry["retried"], 300, "{v}");
    let w = &retry["systems"]["weir"];
    assert_eq!(w["time_boxed"], false, "{v}");
    assert_eq!(w["retried"], 300, "{v}");
    let p50 = w["retry_delay_ms_p50"].as_f64().unwrap();
    assert!((1000.0..3000.0).contains(&p50), "due after 1 s: {p50} {v}");
    assert!(
        retry["unable"]["raw"]
            .as_str()
            .unwrap()
            .contains("non-blocking"),
        "{v}"
    );
    assert!(retry["systems"]["raw"].is_null(), "{v}");
}
