//! Running the `weir` binary from the CLI's integration tests.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `weir args…` (without the caller's `KAFKA_BOOTSTRAP_SERVERS`).
pub fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .output()
        .expect("run weir")
}

/// Its standard output; fails the test, showing standard error, unless it succeeded.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "weir failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
