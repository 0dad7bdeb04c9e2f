use std::path::PathBuf;

/// Errors from the test fixtures. Each message says what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// `WEIR_TEST_BROKER` has a value this crate does not know.
    #[error("WEIR_TEST_BROKER={0:?} is not one of mock, kafka, tansu, external, docker")]
    UnknownBroker(String),
    /// `external` was asked for without `KAFKA_BOOTSTRAP_SERVERS`.
    #[error("WEIR_TEST_BROKER=external needs KAFKA_BOOTSTRAP_SERVERS=host:port[,host:port]")]
    MissingBootstrap,
    /// The tansu binary was not found.
    #[error(
        "the tansu broker binary was not found (looked at $WEIR_TANSU_BIN, $PATH and ~/.cargo/bin); \
         install it with `cargo install tansu --version 0.6.0 --locked --features dynostore,libsql,postgres`"
    )]
    TansuNotInstalled,
    /// The tansu process did not answer metadata requests in time.
    #[error(
        "tansu on {bootstrap} did not answer a metadata request within {secs}s; its log is {log}"
    )]
    TansuNotReady {
        /// Address it was started on.
        bootstrap: String,
        /// Seconds waited.
        secs: u64,
        /// Path of the broker's log file.
        log: PathBuf,
    },
    /// A feature is not available on this backend.
    #[error("{what} is not supported by the {backend} backend")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
        /// The backend asked.
        backend: &'static str,
    },
    /// The `docker` backend was asked for without the `docker` cargo feature.
    #[error(
        "WEIR_TEST_BROKER=docker needs weir-testkit built with the `docker` cargo feature and a running Docker engine"
    )]
    DockerFeatureOff,
    /// A Kafka client call failed.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The librdkafka error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A database call failed.
    #[error("database: {context}: {source}")]
    Database {
        /// What was being done.
        context: String,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// Waiting for something took too long.
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// Seconds waited.
        secs: u64,
    },
    /// Process or file system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else, with a message.
    #[error("{0}")]
    Other(String),
}

impl TestkitError {
    pub(crate) fn kafka(
        context: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let context = context.into();
        move |source| TestkitError::Kafka { context, source }
    }
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| TestkitError::Io { context, source }
    }
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Self {
        let context = context.into();
        move |source| TestkitError::Database { context, source }
    }
}
