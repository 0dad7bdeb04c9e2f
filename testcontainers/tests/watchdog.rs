//! `hang_watchdog`: a test still running after its limit ends its test
//! binary with status 124, its name and its last stage; a test that ended is never blamed.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
#[ignore = "child process of the watchdog tests; started by them"]
fn hanging_child() {
    weir_testkit::hang_watchdog();
    weir_testkit::stage("waiting for the first record");
    weir_testkit::stage("waiting for the second record");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
#[ignore = "child process of the watchdog tests; started by them"]
fn quick_child() {
    weir_testkit::hang_watchdog();
}

#[test]
#[ignore = "child process of the watchdog tests; started by them"]
fn sleepy_unwatched_child() {
    std::thread::sleep(Duration::from_secs(3));
}

fn child(tests: &[&str]) -> std::process::Output {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args(tests)
        .args(["--exact", "--ignored", "--test-threads", "2"])
        .env("WEIR_TEST_TIMEOUT_S", "1")
        .output()
        .expect("run the child")
}

#[test]
fn a_hanging_test_ends_its_binary_and_is_named() {
    let t0 = Instant::now();
    let out = child(&["hanging_child"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{err}");
    assert!(
        err.contains("`hanging_child` is still running after 1s"),
        "{err}"
    );
    assert!(
        err.contains("(last stage: waiting for the second record)"),
        "the last stage is named: {err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}

#[test]
fn a_test_that_ended_is_not_blamed_while_others_run() {
    // The quick test ends at once; the binary lives on for 3 s, past the
    // quick test's 1 s limit.
    let out = child(&["quick_child", "sleepy_unwatched_child"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("2 passed"), "{text}");
}
