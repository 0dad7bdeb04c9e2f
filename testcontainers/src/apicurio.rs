//! Apicurio Registry (`io.apicurio:apicurio-registry-app`, in-memory storage)
//! as a real schema registry: Weir talks to its Confluent-compatible API at
//! `/apis/ccompat/v7`. Apicurio 3.3 needs Java 21 or newer ([`crate::dist::java`]).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestkitError;
use crate::dist;
use crate::process::Supervised;

/// A running Apicurio Registry process on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct ApicurioRegistry {
    port: u16,
    dir: tempfile::TempDir,
    process: Option<Supervised>,
}

impl ApicurioRegistry {
    /// Resolves the app (once), starts it and waits until its ccompat API
    /// answers. A port taken between choosing it and binding it (tests start
    /// registries in parallel) is retried on another port, up to three times.
    pub async fn start() -> Result<Self, TestkitError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::start_once().await {
                Err(e) if tries < 3 && e.to_string().contains("Address already in use") => {
                    eprintln!("weir-testkit: Apicurio's port was taken; starting it on another");
                }
                other => return other,
            }
        }
    }

    async fn start_once() -> Result<Self, TestkitError> {
        let (java, app) = tokio::task::spawn_blocking(|| {
            Ok::<_, TestkitError>((dist::java(21)?, dist::apicurio_app()?))
        })
        .await
        .map_err(|e| TestkitError::Other(e.to_string()))??;
        let [port, management_port] = crate::ports::free_ports(2)?[..] else {
            unreachable!("free_ports(2) returns two ports")
        };
        let dir = tempfile::Builder::new()
            .prefix("weir-apicurio-")
            .tempdir()
            .map_err(TestkitError::io("creating the Apicurio working directory"))?;
        let log_path = dir.path().join("apicurio.log");
        let log = std::fs::File::create(&log_path)
            .map_err(TestkitError::io("opening the Apicurio log"))?;
        let mut cmd = Command::new(&java);
        cmd.args(
            std::env::var("WEIR_APICURIO_JVM_OPTS")
                .unwrap_or_else(|_| {
                    "-Xms64m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1".into()
                })
                .split_whitespace(),
        )
        .arg(format!("-Dquarkus.http.port={port}"))
        .arg("-Dquarkus.http.host=127.0.0.1")
        // Its management interface binds 0.0.0.0:9000 by default (and cannot
        // be turned off at run time): a second registry, as tests run in
        // parallel, could not start. A free loopback port of its own instead.
        .arg(format!("-Dquarkus.management.port={management_port}"))
        .arg("-Dquarkus.management.host=127.0.0.1")
        .arg("-Dquarkus.log.level=WARN")
        .arg("-jar")
        .arg(app.join("quarkus-run.jar"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(TestkitError::io("Apicurio log"))?)
        .stderr(log);
        let mut reg = ApicurioRegistry {
            port,
            dir,
            process: Some(Supervised::spawn(cmd, "Apicurio Registry")?),
        };
        reg.wait_ready(Duration::from_secs(120)).await?;
        Ok(reg)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), TestkitError> {
        let start = Instant::now();
        let url = format!("{}/subjects", self.url());
        loop {
            if let Ok((200, _)) = http("GET", &url, None).await {
                tracing::info!(secs = start.elapsed().as_secs_f64(), url = %self.url(), "Apicurio ready");
                return Ok(());
            }
            if let Some(p) = &mut self.process
                && let Some(status) = p.exited()
            {
                return Err(self.failed(format!("exited during start-up ({status})")));
            }
            if start.elapsed() > limit {
                return Err(
                    self.failed(format!("did not answer {url} within {}s", limit.as_secs()))
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn failed(&self, what: String) -> TestkitError {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        TestkitError::Other(format!(
            "Apicurio Registry {what}; last lines of {}:\n{}",
            self.log_path().display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        ))
    }

    /// The Confluent-compatible base URL (`http://127.0.0.1:PORT/apis/ccompat/v7`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/apis/ccompat/v7", self.port)
    }

    /// Registers `schema` (Avro JSON) under `subject` and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, String> {
        register(&self.url(), subject, schema, "AVRO").await
    }

    /// The registry's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("apicurio.log")
    }
}

/// `POST {url}/subjects/{subject}/versions` and the id from the answer.
pub(crate) async fn register(
    url: &str,
    subject: &str,
    schema: &str,
    schema_type: &str,
) -> Result<u32, String> {
    let body = format!(
        "{{\"schema\":{},\"schemaType\":{}}}",
        json_string(schema),
        json_string(schema_type)
    );
    let url = format!("{url}/subjects/{}/versions", subject.replace('/', "%2F"));
    let (status, text) = http("POST", &url, Some(&body)).await?;
    if status != 200 {
        return Err(format!("register {subject}: HTTP {status}: {text}"));
    }
    // {"id":N}
    text.split("\"id\"")
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest
                .trim_start_matches([':', ' '])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .ok_or_else(|| format!("register {subject}: no id in {text}"))
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A minimal HTTP/1.1 request over a TCP stream (the fixtures' own setup
/// calls; Weir's client under test uses reqwest). Returns status and body.
pub(crate) async fn http(
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported by the fixture: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect {host}: {e}"))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/vnd.schemaregistry.v1+json, application/json\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad HTTP response: {text}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// Joins the chunks of a chunked HTTP body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(
            super::json_string(r#"{"a":"b\c"}"#),
            r#""{\"a\":\"b\\c\"}""#
        );
        assert_eq!(super::json_string("x\ny"), r#""x\ny""#);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            super::dechunk("4\r\n{\"id\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n"),
            "{\"id\":1}"
        );
        assert_eq!(super::dechunk("0\r\n\r\n"), "");
    }
}
