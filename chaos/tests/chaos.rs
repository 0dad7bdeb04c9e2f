//! The CI configuration of the reliability harness, and a self-check that
//! its accounting catches duplicate effects when idempotency is off.
#![allow(missing_docs)]

use std::process::Command;

fn run(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir-chaos"))
        .args(args)
        .arg("--json")
        .output()
        .expect("running weir-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no JSON line; stderr:\n{stderr}"));
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}\n{stderr}"));
    (out.status.success(), v, stderr)
}

/// 5,000 messages, 5 worker SIGKILLs, 1 broker restart, 1 stall: nothing lost,
/// nothing applied twice, every poison message in the DLQ and nothing else.
#[test]
fn ci_configuration_loses_nothing_and_applies_nothing_twice() {
    let (ok, r, stderr) = run(&[
        "--messages",
        "5000",
        "--kills",
        "5",
        "--broker-restarts",
        "1",
        "--stalls",
        "1",
        "--seed",
        "42",
    ]);
    eprintln!("{stderr}");
    assert_eq!(r["messages"], 5000);
    assert_eq!(r["kills"], 5);
    assert_eq!(r["broker_restarts"], 1);
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicate_effects"], 0, "{r}");
    assert_eq!(r["dlq_missing"], 0, "{r}");
    assert_eq!(r["unexpected_dlq"], 0, "{r}");
    assert_eq!(r["dlq"], r["expected_dlq"], "{r}");
    assert!(
        r["expected_dlq"].as_u64().unwrap() > 0,
        "the run had poison"
    );
    assert!(r["retried"].as_u64().unwrap() > 0, "the run had retries");
    assert_eq!(
        r["uncommitted"], 0,
        "every offset committed at the end: {r}"
    );
    assert!(ok, "exit code 0 on a clean run");
}

/// With the idempotency store off, the redeliveries that kills cause become
/// duplicate effects, the harness reports them and exits non-zero: its
/// accounting can fail. 8,000 messages: since consumers fetch up to 50 MiB
/// per response on tansu (2026-12-01), 3,000 were all processed before the
/// second kill, and no kill landed on uncommitted work.
#[test]
fn harness_detects_duplicates_without_idempotency() {
    let (ok, r, stderr) = run(&[
        "--messages",
        "8000",
        "--kills",
        "4",
        "--broker-restarts",
        "0",
        "--stalls",
        "0",
        "--seed",
        "7",
        "--unsafe-no-idempotency",
    ]);
    assert!(
        r["redeliveries"].as_i64().unwrap() > 0,
        "kills cause redeliveries: {r}\n{stderr}"
    );
    assert!(
        r["duplicate_effects"].as_i64().unwrap() > 0,
        "redeliveries without idempotency must be duplicate effects: {r}\n{stderr}"
    );
    assert!(!ok, "non-zero exit on duplicate effects");
}

/// `--eos`: workers in Kafka transactions, 3 worker SIGKILLs and a
/// transaction coordinator SIGKILLed: a read_committed reader finds every
/// good message's output once, and the DLQ holds exactly the poison.
#[test]
fn eos_run_loses_nothing_and_repeats_no_output() {
    let (ok, r, stderr) = run(&[
        "--eos",
        "--messages",
        "3000",
        "--kills",
        "3",
        "--broker-restarts",
        "1",
        "--stalls",
        "0",
        "--seed",
        "7",
    ]);
    eprintln!("{stderr}");
    assert_eq!(r["eos"], true);
    assert_eq!(r["kills"], 3);
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicate_outputs"], 0, "{r}");
    assert_eq!(r["dlq_missing"], 0, "{r}");
    assert_eq!(r["unexpected_dlq"], 0, "{r}");
    assert!(r["retried"].as_u64().unwrap() > 0, "the run had retries");
    assert!(
        stderr.contains("transaction coordinator of"),
        "a coordinator was killed"
    );
    assert_eq!(
        r["uncommitted"], 0,
        "every offset committed at the end: {r}"
    );
    assert!(ok, "exit code 0 on a clean run");
}
