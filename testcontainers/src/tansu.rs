//! A Tansu broker process (crate `tansu` 0.6.0) for tests that need a broker
//! that can be stopped, SIGKILLed, stalled and restarted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::TestkitError;

/// Where a tansu broker keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TansuStorage {
    /// In memory (`memory://tansu/`, needs the `dynostore` feature): lost on restart.
    Memory,
    /// SQLite in the broker's working directory (`sqlite://tansu.db`, needs the
    /// `libsql` feature): messages and committed offsets survive a restart.
    Sqlite,
    /// A PostgreSQL database URL (needs the `postgres` feature).
    Postgres(String),
}

impl TansuStorage {
    fn url(&self) -> String {
        match self {
            TansuStorage::Memory => "memory://tansu/".into(),
            TansuStorage::Sqlite => "sqlite://tansu.db".into(),
            TansuStorage::Postgres(url) => url.clone(),
        }
    }
}

/// A running tansu broker. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct TansuBroker {
    bin: PathBuf,
    port: u16,
    storage: TansuStorage,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
    advertised_port: Option<u16>,
}

/// Finds the tansu binary: `$WEIR_TANSU_BIN`, then `$PATH`, then `~/.cargo/bin/tansu`.
pub(crate) fn tansu_binary() -> Result<PathBuf, TestkitError> {
    if let Ok(p) = std::env::var("WEIR_TANSU_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let candidate = Path::new(&home).join(".cargo/bin/tansu");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(TestkitError::TansuNotInstalled)
}

use crate::ports::free_port;

impl TansuBroker {
    /// Starts a broker on a free loopback port and waits until it answers metadata.
    pub async fn start(storage: TansuStorage) -> Result<Self, TestkitError> {
        Self::start_with_args(storage, Vec::new()).await
    }

    /// Like [`TansuBroker::start`], with extra `tansu broker` arguments
    /// (for example `--authentication`, or `--cert`/`--key`).
    pub async fn start_with_args(
        storage: TansuStorage,
        extra_args: Vec<String>,
    ) -> Result<Self, TestkitError> {
        Self::launch(storage, extra_args, None).await
    }

    /// Like [`start_with_args`](Self::start_with_args), advertising
    /// `127.0.0.1:advertised_port` to clients instead of its own port (for a
    /// proxy in front of it, such as a TLS terminator).
    pub async fn start_advertised(
        storage: TansuStorage,
        extra_args: Vec<String>,
        advertised_port: u16,
    ) -> Result<Self, TestkitError> {
        Self::launch(storage, extra_args, Some(advertised_port)).await
    }

    async fn launch(
        storage: TansuStorage,
        extra_args: Vec<String>,
        advertised_port: Option<u16>,
    ) -> Result<Self, TestkitError> {
        let bin = tansu_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("weir-tansu-")
            .tempdir()
            .map_err(TestkitError::io("creating the tansu working directory"))?;
        let mut broker = TansuBroker {
            bin,
            port: free_port()?,
            storage,
            dir,
            child: None,
            extra_args,
            advertised_port,
        };
        broker.spawn().await?;
        Ok(broker)
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's log file (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    /// The broker's working directory (holds the SQLite file for [`TansuStorage::Sqlite`]).
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The storage engine it runs on.
    pub fn storage(&self) -> &TansuStorage {
        &self.storage
    }

    /// Operating-system process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    async fn spawn(&mut self) -> Result<(), TestkitError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(TestkitError::io("opening the tansu log"))?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!(
            "tcp://127.0.0.1:{}",
            self.advertised_port.unwrap_or(self.port)
        );
        let child = Command::new(&self.bin)
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&advertised)
            .arg("--storage-engine")
            .arg(self.storage.url())
            .args(&self.extra_args)
            .current_dir(self.dir.path())
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env(
                "RUST_LOG",
                std::env::var("WEIR_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(TestkitError::io("tansu log"))?)
            .stderr(log)
            .spawn()
            .map_err(TestkitError::io(format!("starting {}", self.bin.display())))?;
        self.child = Some(child);
        if self.advertised_port.is_some()
            || self
                .extra_args
                .iter()
                .any(|a| a == "--authentication" || a == "--cert")
        {
            // A secured listener refuses an anonymous metadata probe: wait for the port.
            return self.wait_for_port(Duration::from_secs(30)).await;
        }
        self.wait_ready(Duration::from_secs(30)).await
    }

    async fn wait_for_port(&self, limit: Duration) -> Result<(), TestkitError> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(self.not_ready(limit))
    }

    fn not_ready(&self, limit: Duration) -> TestkitError {
        TestkitError::TansuNotReady {
            bootstrap: self.bootstrap_servers(),
            secs: limit.as_secs(),
            log: self.log_path(),
        }
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), TestkitError> {
        self.wait_for_port(limit).await?;
        let bootstrap = self.bootstrap_servers();
        let ok = tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = match ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("log_level", "0")
                .create()
            {
                Ok(c) => c,
                Err(_) => return false,
            };
            let start = Instant::now();
            while start.elapsed() < limit {
                if consumer
                    .fetch_metadata(None, Duration::from_secs(2))
                    .is_ok()
                {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
        .await
        .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(self.not_ready(limit))
        }
    }

    fn signal(&mut self, sig: Signal) -> Result<(), TestkitError> {
        if let Some(child) = &self.child {
            kill(Pid::from_raw(child.id() as i32), sig)
                .map_err(|e| TestkitError::Other(format!("sending {sig} to tansu: {e}")))?;
        }
        Ok(())
    }

    fn reap(&mut self, limit: Duration) -> Result<(), TestkitError> {
        if let Some(mut child) = self.child.take() {
            let start = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => return Ok(()),
                    Ok(None) if start.elapsed() < limit => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Ok(());
                    }
                    Err(e) => return Err(TestkitError::io("waiting for tansu")(e)),
                }
            }
        }
        Ok(())
    }

    /// Stops the broker gracefully (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        self.signal(Signal::SIGTERM)?;
        self.reap(Duration::from_secs(10))
    }

    /// Kills the broker at once (SIGKILL): a crash.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        self.signal(Signal::SIGKILL)?;
        self.reap(Duration::from_secs(10))
    }

    /// Stalls the broker (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn stall(&mut self) -> Result<(), TestkitError> {
        self.signal(Signal::SIGSTOP)
    }

    /// Resumes a stalled broker (SIGCONT).
    pub fn unstall(&mut self) -> Result<(), TestkitError> {
        self.signal(Signal::SIGCONT)
    }

    /// Replaces the extra `tansu broker` arguments used by the next
    /// [`restart`](Self::restart) (for example to turn on `--authentication`
    /// after creating users on an open listener; SQLite storage keeps them).
    pub fn set_extra_args(&mut self, args: Vec<String>) {
        self.extra_args = args;
    }

    /// Creates a SCRAM-SHA-512 user through `tansu user create` (the listener
    /// must accept the request: create users before `--authentication`).
    pub async fn create_user(&self, name: &str, password: &str) -> Result<(), TestkitError> {
        let out = tokio::process::Command::new(&self.bin)
            .args(["user", "create", "--mechanism", "scram512", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .arg(name)
            .arg(password)
            .output()
            .await
            .map_err(TestkitError::io("running tansu user create"))?;
        if !out.status.success()
            || !out.stderr.is_empty() && String::from_utf8_lossy(&out.stderr).contains("Error")
        {
            return Err(TestkitError::io(format!("tansu user create {name}"))(
                std::io::Error::other(
                    String::from_utf8_lossy(&out.stderr).replace(password, "***"),
                ),
            ));
        }
        Ok(())
    }

    /// Starts the broker again on the same port and storage (after [`stop`](Self::stop)
    /// or [`kill`](Self::kill); a running broker is killed first).
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        if self.child.is_some() {
            self.kill()?;
        }
        self.spawn().await
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() || std::env::var_os("WEIR_KEEP_TANSU_DIR").is_some() {
            // Keep the log and data of a failed test for inspection.
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::TempDir::new().expect("temporary directory"),
            );
            eprintln!("tansu working directory kept at {}", dir.keep().display());
        }
    }
}
