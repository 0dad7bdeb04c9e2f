//! `weir console` as a person uses it: headless Chromium (Debian's
//! `chromium`, driven through `chromedriver` with fantoccini) against a
//! console on Apache Kafka. Log in (a wrong token is refused), see the
//! groups and a group's lag and chart, see a halted partition on the
//! consumers page, open the DLQ, filter by class, dry-run a replay, replay
//! (by filter, then one ticked message),
//! see the messages consumed again, reset a group's offsets by time (refused
//! while the group has a member, a dry run first), read the audit log; an
//! action without the CSRF token is refused; bad input and a cluster that is
//! down give a clear page. Screenshots of the main pages go to
//! `target/console-screenshots/` (and to `docs/console/` with
//! `WEIR_UPDATE_SCREENSHOTS=1`).

#[path = "../../framework/weir/tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use fantoccini::{Client, Locator};
use parking_lot::Mutex;
use weir::retry::RetryTopics;
use weir::{Consumer, Message, ProcessError, StringCodec, processor_fn};
use weir_console::{Console, Settings};
use weir_testkit::{BrokerKind, KafkaCluster, TestRecord};

use common::{R, wait_until};

/// `chromedriver` on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn find(names: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    for n in names {
        for dir in path.split(':') {
            let p = std::path::Path::new(dir).join(n);
            if p.is_file() {
                return Some(p.display().to_string());
            }
        }
    }
    None
}

async fn browser() -> Result<(Driver, Client), Box<dyn std::error::Error + Send + Sync>> {
    let driver = find(&["chromedriver"])
        .ok_or("chromedriver is not installed: scripts/setup installs Debian's chromium and chromium-driver")?;
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"])
        .ok_or("chromium is not installed: scripts/setup installs Debian's chromium")?;
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let d = Driver { child, port };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--hide-scrollbars"],
        }),
    );
    let url = format!("http://127.0.0.1:{}", d.port);
    let mut last = String::new();
    for _ in 0..100 {
        match fantoccini::ClientBuilder::rustls()?
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return Ok((d, c)),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("no WebDriver session from chromedriver: {last}").into())
}

/// The text of `css` on the current page; when it is missing, an error
/// with the page's URL and source.
async fn text(c: &Client, css: &str) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    match c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => Ok(e.text().await?),
        Err(e) => Err(format!(
            "`{css}` not found ({e}) on {}: {}",
            c.current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default(),
            c.source().await.unwrap_or_default()
        )
        .into()),
    }
}

/// Clicks `css` (a link or a submit button) and waits for the next page:
/// until the current page's root is gone, so that nothing is read from the
/// page the click left.
async fn click(c: &Client, css: &str) -> R {
    let old = c.find(Locator::Css("html")).await?;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await?
        .click()
        .await?;
    for _ in 0..200 {
        if old.tag_name().await.is_err() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("clicking `{css}` did not lead to another page").into())
}

/// Loads `url` until the text of `css` satisfies `ok`, for at most `limit`.
async fn reload_until(
    c: &Client,
    url: &str,
    css: &str,
    limit: Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let start = std::time::Instant::now();
    loop {
        c.goto(url).await?;
        let t = text(c, css).await.unwrap_or_default();
        if ok(&t) {
            return Ok(t);
        }
        if start.elapsed() > limit {
            return Err(format!(
                "{url}: `{css}` still reads {t:?} after {limit:?}; the page: {}",
                c.source().await.unwrap_or_default()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn screenshot(c: &Client, name: &str) -> R {
    let png = c.screenshot().await?;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{name}: a real screenshot ({} bytes)",
        png.len()
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target/console-screenshots");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.png")), &png)?;
    if std::env::var("WEIR_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let docs = root.join("docs/console");
        std::fs::create_dir_all(&docs)?;
        std::fs::write(docs.join(format!("{name}.png")), &png)?;
    }
    Ok(())
}

async fn total(cluster: &KafkaCluster, topic: &str) -> i64 {
    let n = cluster.partition_count(topic).await.unwrap_or(0);
    let mut sum = 0;
    for p in 0..n {
        sum += cluster.watermarks(topic, p).await.map(|w| w.1).unwrap_or(0);
    }
    sum
}

type Seen = Arc<Mutex<Vec<String>>>;

/// The shop's consumer: orders divisible by 5 fail (`unknown_product`), by
/// 7 (`invalid_price`), until `fixed`; the failures go to `orders.dlq`.
fn shop(
    cluster: &KafkaCluster,
    fixed: Arc<AtomicBool>,
    seen: Seen,
) -> Result<Consumer<StringCodec, impl weir::Processor<String>>, weir::WeirError> {
    let p = processor_fn(move |m: Message<String>| {
        let (fixed, seen) = (fixed.clone(), seen.clone());
        async move {
            let n: u32 = m.value().trim_start_matches('o').parse().unwrap_or(1);
            if !fixed.load(SeqCst) && n.is_multiple_of(5) {
                return Err(
                    ProcessError::terminal(std::io::Error::other("unknown product"))
                        .with_class("unknown_product"),
                );
            }
            if !fixed.load(SeqCst) && n.is_multiple_of(7) {
                return Err(
                    ProcessError::terminal(std::io::Error::other("price below zero"))
                        .with_class("invalid_price"),
                );
            }
            seen.lock().push(m.value().clone());
            Ok(())
        }
    });
    Consumer::builder(common::config(cluster, "shop", &["orders"]))
        .codec(StringCodec)
        .retry_topics(RetryTopics::dlq_only())
        .build(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_console_in_a_browser() -> R {
    common::init();
    let cluster = common::cluster(BrokerKind::Kafka).await?;
    cluster.create_topic("orders", 2).await?;
    cluster.create_topic("payments", 1).await?;
    cluster
        .produce(
            "orders",
            (0..20).map(|i| TestRecord::keyed(format!("k{i}"), format!("o{i}")).partition(i % 2)),
        )
        .await?;
    cluster
        .produce("payments", [TestRecord::keyed("acct-1", "poison")])
        .await?;

    // Two Weir consumers behind one telemetry endpoint: the shop (DLQ) and
    // payments, whose failure sink halts the partition.
    let fixed = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let (h1, run1) = common::start(shop(&cluster, fixed.clone(), seen.clone())?);
    let payments = Consumer::builder(common::config(&cluster, "payments", &["payments"]))
        .codec(StringCodec)
        .build(processor_fn(|_m: Message<String>| async {
            Err::<(), _>(
                ProcessError::terminal(std::io::Error::other("card declined"))
                    .with_class("card_declined"),
            )
        }))?;
    let (h2, run2) = common::start(payments);
    let telemetry = weir_telemetry::Telemetry::install()?;
    let (metrics_addr, _metrics) = telemetry
        .serve(
            "127.0.0.1:0".parse()?,
            vec![h1.clone(), h2.clone()],
            weir_telemetry::HealthOptions::default(),
        )
        .await?;
    wait_until("14 good orders", Duration::from_secs(60), || {
        seen.lock().len() >= 14
    })
    .await;
    wait_until(
        "the payments partition halted",
        Duration::from_secs(60),
        || h2.stats().halted_partitions() == 1,
    )
    .await;
    common::wait_until_async(
        "6 messages in orders.dlq",
        Duration::from_secs(60),
        || async { total(&cluster, "orders.dlq").await == 6 },
    )
    .await;

    // The console, with actions on.
    let dir = tempfile::tempdir()?;
    let settings = Settings {
        token: Some("s3cret".into()),
        actions: true,
        endpoints: vec![metrics_addr.to_string()],
        audit_log: dir.path().join("audit.jsonl"),
        sample_interval: Duration::from_millis(300),
        ..Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let console = Console::new(settings, cluster.client_config(), false, addr)?;
    let _serving = tokio::spawn(console.serve(listener, std::future::pending()));
    let base = format!("http://{addr}");

    let (_driver, c) = browser().await?;
    let result = journey(&c, &base, &cluster, &fixed, &seen, (h1, run1)).await;
    let _ = c.close().await;
    h2.shutdown();
    let _ = run2.await;
    result?;

    // The audit log on disk has the actions.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl"))?;
    for action in [
        "login_refused",
        "dlq_replay_dry_run",
        "\"dlq_replay\"",
        "refused",
        "offsets_reset_dry_run",
        "\"offsets_reset\"",
    ] {
        assert!(audit.contains(action), "audit log lacks {action}: {audit}");
    }

    http_checks(&base, &cluster).await?;
    Ok(())
}

async fn journey(
    c: &Client,
    base: &str,
    cluster: &KafkaCluster,
    fixed: &AtomicBool,
    seen: &Seen,
    (h1, run1): (weir::ConsumerHandle, common::RunHandle),
) -> R {
    // Not logged in: the login page. A wrong token is refused.
    c.goto(&format!("{base}/groups")).await?;
    assert_eq!(c.current_url().await?.path(), "/login");
    screenshot(c, "login").await?;
    c.find(Locator::Css("#token"))
        .await?
        .send_keys("wrong")
        .await?;
    click(c, "#login").await?;
    let page = c.source().await?;
    assert!(page.contains("Login refused"), "{page}");
    c.find(Locator::Css("#token"))
        .await?
        .send_keys("s3cret")
        .await?;
    click(c, "#login").await?;
    assert_eq!(
        c.current_url().await?.path(),
        "/groups",
        "back where we were going"
    );
    let groups = text(c, "#groups").await?;
    assert!(
        groups.contains("shop") && groups.contains("payments"),
        "{groups}"
    );

    // The consumers page: healthy, the halted partition and why.
    c.goto(&format!("{base}/consumers")).await?;
    let consumers = text(c, "#consumers").await?;
    assert!(consumers.contains("healthy"), "{consumers}");
    assert!(
        consumers.contains("payments/0") && consumers.contains("card_declined"),
        "the halted partition with its reason: {consumers}"
    );
    screenshot(c, "consumers").await?;

    // The shop stops; ten more orders arrive: lag 10, on the chart.
    let _ = common::stop(&h1, run1).await?;
    let before_late = weir::clock::now_ms();
    tokio::time::sleep(Duration::from_millis(50)).await;
    cluster
        .produce(
            "orders",
            (20..30).map(|i| TestRecord::keyed(format!("k{i}"), format!("o{i}")).partition(i % 2)),
        )
        .await?;
    let group_url = format!("{base}/groups/shop");
    reload_until(c, &group_url, "#total-lag", Duration::from_secs(30), |t| {
        t == "10"
    })
    .await?;
    reload_until(
        c,
        &group_url,
        "figure.chart figcaption",
        Duration::from_secs(30),
        |t| t.contains("now 10"),
    )
    .await?;
    assert!(
        c.source().await?.contains("<polyline"),
        "the chart has a line"
    );
    assert_eq!(text(c, "#state").await?, "Empty");
    let parts = text(c, "#partitions").await?;
    assert!(parts.contains("orders"), "{parts}");
    screenshot(c, "group").await?;
    c.goto(&format!("{base}/groups")).await?;
    reload_until(
        c,
        &format!("{base}/groups"),
        "#groups",
        Duration::from_secs(10),
        |t| t.contains("shop"),
    )
    .await?;
    screenshot(c, "groups").await?;

    // Retry tiers and DLQs, then the DLQ filtered by class.
    c.goto(&format!("{base}/dlq")).await?;
    let topics = text(c, "#topics").await?;
    assert!(
        topics.contains("orders.dlq") && topics.contains('6'),
        "{topics}"
    );
    click(c, "#topics a").await?;
    assert!(text(c, "#count").await?.starts_with("6 "), "all six");
    c.find(Locator::Css("#class"))
        .await?
        .send_keys("unknown_product")
        .await?;
    click(c, "#apply-filter").await?;
    assert!(
        text(c, "#count").await?.starts_with("4 "),
        "four of class unknown_product"
    );
    let rows = text(c, "#messages").await?;
    assert!(!rows.contains("invalid_price"), "{rows}");
    screenshot(c, "dlq").await?;
    let list_url = c.current_url().await?;
    // One message: failure, headers, payload hidden.
    click(c, "#messages a").await?;
    assert!(text(c, "#payload-hidden").await?.contains("hidden"));
    assert!(text(c, "#headers").await?.contains("weir-error-class"));
    assert!(
        !c.source().await?.contains(">o0<"),
        "no payload on the page"
    );
    screenshot(c, "dlq-message").await?;

    // Dry run, then replay: nothing sent by the dry run.
    c.goto(list_url.as_str()).await?;
    click(c, "#replay-dry-run").await?;
    let plan = text(c, "#plan").await?;
    assert!(plan.contains("would send 4 to orders"), "{plan}");
    assert_eq!(
        total(cluster, "orders").await,
        30,
        "a dry run sends nothing"
    );
    screenshot(c, "replay-dry-run").await?;
    click(c, "#confirm-replay").await?;
    assert_eq!(text(c, "#sent").await?, "4");
    assert_eq!(total(cluster, "orders").await, 34);

    // A replay of one selected message (ticked, not the whole filter).
    c.goto(&format!("{base}/dlq/orders.dlq?class=invalid_price"))
        .await?;
    assert!(text(c, "#count").await?.starts_with("2 "), "o7 and o14");
    c.find(Locator::Css("#messages input[name=sel]"))
        .await?
        .click()
        .await?;
    click(c, "#replay-dry-run").await?;
    let plan = text(c, "#plan").await?;
    assert!(plan.contains("would send 1 to orders"), "{plan}");
    click(c, "#confirm-replay").await?;
    assert_eq!(text(c, "#sent").await?, "1");
    assert_eq!(total(cluster, "orders").await, 35);

    // Fixed and restarted: the replayed orders are consumed again.
    fixed.store(true, SeqCst);
    let (h1, run1) = common::start(shop(
        cluster,
        Arc::new(AtomicBool::new(true)),
        seen.clone(),
    )?);
    wait_until(
        "the replayed and late orders",
        Duration::from_secs(60),
        || {
            let s = seen.lock();
            ["o0", "o5", "o10", "o15", "o29"]
                .iter()
                .all(|o| s.iter().any(|x| x == o))
                && s.iter().any(|x| x == "o7" || x == "o14")
        },
    )
    .await;
    reload_until(c, &group_url, "#total-lag", Duration::from_secs(30), |t| {
        t == "0"
    })
    .await?;

    // A reset while the shop runs is refused.
    reload_until(c, &group_url, "#members", Duration::from_secs(30), |t| {
        !t.is_empty()
    })
    .await?;
    c.find(Locator::Css("#target"))
        .await?
        .select_by_value("earliest")
        .await?;
    click(c, "#reset-dry-run").await?;
    click(c, "#confirm-reset").await?;
    let refused = text(c, "#refused").await?;
    assert!(refused.contains("active member"), "{refused}");

    // Stopped: reset to the time before the late orders, dry run first.
    let _ = common::stop(&h1, run1).await?;
    reload_until(c, &group_url, "#state", Duration::from_secs(30), |t| {
        t == "Empty"
    })
    .await?;
    let when = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(before_late as u64),
    )
    .to_string();
    c.find(Locator::Css("#target"))
        .await?
        .select_by_value("datetime")
        .await?;
    c.find(Locator::Css("#value"))
        .await?
        .send_keys(&when)
        .await?;
    click(c, "#reset-dry-run").await?;
    let result = text(c, "#result").await?;
    assert!(
        result.contains("15 processed again"),
        "10 late + 5 replayed: {result}"
    );
    assert_eq!(
        common::committed(cluster, "shop", "orders")
            .await
            .iter()
            .sum::<i64>(),
        35,
        "a dry run commits nothing"
    );
    screenshot(c, "reset-dry-run").await?;
    click(c, "#confirm-reset").await?;
    assert!(text(c, "#result").await?.contains("Committed"));
    assert_eq!(
        common::committed(cluster, "shop", "orders")
            .await
            .iter()
            .sum::<i64>(),
        20
    );
    reload_until(c, &group_url, "#total-lag", Duration::from_secs(30), |t| {
        t == "15"
    })
    .await?;

    // The audit page lists what was done, by whom.
    c.goto(&format!("{base}/audit")).await?;
    let audit = text(c, "#audit").await?;
    for a in ["dlq_replay", "offsets_reset", "refused", "login_refused"] {
        assert!(audit.contains(a), "audit page lacks {a}: {audit}");
    }
    assert!(audit.contains("token"), "{audit}");
    screenshot(c, "audit").await?;

    // Bad input gives a page that says what is wrong.
    c.goto(&format!("{base}/dlq/orders.dlq?since=last%20tuesday"))
        .await?;
    assert!(text(c, ".error").await?.contains("is not a time"));
    c.goto(&format!("{base}/groups/no-such-group")).await?;
    assert!(text(c, ".error").await?.contains("Unknown consumer group"));
    Ok(())
}

/// What a script (not a browser) meets: bearer tokens, CSRF, statuses.
async fn http_checks(base: &str, cluster: &KafkaCluster) -> R {
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = plain
        .get(format!("{base}/groups"))
        .bearer_auth("wrong")
        .send()
        .await?;
    assert_eq!(r.status(), 303, "a wrong token is sent to the login");
    let r = plain
        .get(format!("{base}/groups"))
        .bearer_auth("s3cret")
        .send()
        .await?;
    assert_eq!(r.status(), 200, "the token reads pages");
    // A bearer request cannot act: it has no CSRF token.
    let r = plain
        .post(format!("{base}/dlq/orders.dlq/replay"))
        .bearer_auth("s3cret")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=&confirm=yes")
        .send()
        .await?;
    assert_eq!(r.status(), 403);

    // A session without the CSRF token, or with a wrong one: refused.
    let browserish = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = browserish
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=s3cret&next=%2Fgroups")
        .send()
        .await?;
    assert_eq!(r.status(), 303);
    for body in ["confirm=yes", "csrf=forged&confirm=yes"] {
        let r = browserish
            .post(format!("{base}/dlq/orders.dlq/replay"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        assert_eq!(r.status(), 403, "{body}");
        let page = r.text().await?;
        assert!(page.contains("CSRF"), "{page}");
    }
    assert_eq!(total(cluster, "orders").await, 35, "nothing was replayed");
    let r = browserish
        .get(format!("{base}/dlq/orders.dlq?until=soon"))
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let r = browserish
        .get(format!("{base}/dlq/no-such.dlq"))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    assert!(r.text().await?.contains("does not exist"));

    // A console whose cluster is down: a page that says so, not a 500.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut dead = weir::dlq::client_config(&format!("127.0.0.1:{}", free_port()));
    dead.set("socket.connection.setup.timeout.ms", "2000");
    let console = Console::new(Settings::default(), dead, true, addr)?;
    let _serving = tokio::spawn(console.serve(listener, std::future::pending()));
    let r = plain.get(format!("http://{addr}/groups")).send().await?;
    assert_eq!(r.status(), 502);
    let page = r.text().await?;
    assert!(page.contains("Kafka did not answer"), "{page}");
    assert!(!page.contains("panicked"), "{page}");
    Ok(())
}
