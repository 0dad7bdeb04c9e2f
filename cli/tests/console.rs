//! `weir console` as a command: the `[console]` section of `--config` is
//! read (a consumer config in the same file is untouched), it refuses to
//! start without authentication (and `--no-auth` off loopback), and a started
//! console sends an anonymous request to the login. The pages themselves are
//! tested in a browser (`console/tests/browser.rs`).

mod run;

use std::process::{Command, Stdio};
use std::time::Duration;

use run::weir;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn refuses_to_start_without_authentication() {
    let o = weir(&[
        "console",
        "--brokers",
        "127.0.0.1:1",
        "--listen",
        "0.0.0.0:0",
        "--no-auth",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("loopback"), "{err}");
    let o = weir(&[
        "console",
        "--brokers",
        "127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no authentication configured"), "{err}");
}

#[test]
fn a_bad_console_section_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        "brokers = \"127.0.0.1:1\"\n[console]\ntokn = \"x\"\n",
    )
    .unwrap();
    let o = weir(&["console", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tokn") && err.contains("weir.toml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_with_the_token_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        format!(
            "brokers = \"127.0.0.1:1\"\ngroup_id = \"g\"\n[console]\ntoken = \"from-file\"\naudit_log = \"{}\"\n",
            dir.path().join("audit.jsonl").display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["console", "--config", path.to_str().unwrap(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run weir console");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let anonymous = http.get(format!("{base}/groups")).send().await;
    let login = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=from-file")
        .send()
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "the console answered /healthz");
    let anonymous = anonymous.unwrap();
    assert_eq!(anonymous.status(), 303);
    assert!(
        anonymous.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login"),
    );
    let login = login.unwrap();
    assert_eq!(login.status(), 303, "the file's token logs in");
    assert!(
        login.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("HttpOnly")
    );
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"login\""), "{audit}");
}
