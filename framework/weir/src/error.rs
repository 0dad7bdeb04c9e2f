//! Error types: what a processor returns, what the runtime reports, what config validation says.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Whether retrying a failed message can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Transient (network blip, deadlock, a downstream 503): worth retrying.
    Retryable,
    /// A bug or poison input: retrying gives the same result. Goes to the failure sink at once.
    Terminal,
    /// A dependency every message needs (the database, the idempotency store) is
    /// down. Not the message's fault: it is retried in place with capped backoff,
    /// without an attempt limit, until the dependency returns or the runtime stops
    /// waiting (revoke, shutdown). It never reaches the failure sink, so an outage
    /// does not flood the DLQ; the partition simply stops advancing.
    Unavailable,
}

/// A processing failure, classified as [`ErrorKind::Retryable`] or
/// [`ErrorKind::Terminal`], with a short error class (`"timeout"`, `"decode"`,
/// `"http_503"`…) used in metrics, logs and failure headers.
pub struct ProcessError {
    kind: ErrorKind,
    class: Cow<'static, str>,
    source: BoxError,
}

impl ProcessError {
    /// A transient failure, worth retrying. Class `"retryable"` unless set with [`with_class`](Self::with_class).
    pub fn retryable(source: impl Into<BoxError>) -> Self {
        ProcessError {
            kind: ErrorKind::Retryable,
            class: Cow::Borrowed("retryable"),
            source: source.into(),
        }
    }

    /// A permanent failure (bug or poison input). Class `"terminal"` unless set.
    pub fn terminal(source: impl Into<BoxError>) -> Self {
        ProcessError {
            kind: ErrorKind::Terminal,
            class: Cow::Borrowed("terminal"),
            source: source.into(),
        }
    }

    /// A dependency is down (see [`ErrorKind::Unavailable`]). Class `"unavailable"` unless set.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        ProcessError {
            kind: ErrorKind::Unavailable,
            class: Cow::Borrowed("unavailable"),
            source: source.into(),
        }
    }

    /// Sets the error class: a short, low-cardinality name such as `"http_503"`.
    pub fn with_class(mut self, class: impl Into<Cow<'static, str>>) -> Self {
        self.class = class.into();
        self
    }

    /// Retryable or terminal.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// True for [`ErrorKind::Retryable`].
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }

    /// True for [`ErrorKind::Unavailable`].
    pub fn is_unavailable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }

    /// The error class.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// The underlying error.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// `n` copies of this error, for the `n` messages one failure applies to
    /// (a batch whose database write failed): same kind, class and message,
    /// one shared source.
    pub fn shared(self, n: usize) -> Vec<ProcessError> {
        if n <= 1 {
            return if n == 1 { vec![self] } else { Vec::new() };
        }
        let source = Arc::new(self.source);
        (0..n)
            .map(|_| ProcessError {
                kind: self.kind,
                class: self.class.clone(),
                source: Box::new(SharedSource(source.clone())),
            })
            .collect()
    }
}

/// One error standing for several messages' failure ([`ProcessError::shared`]).
struct SharedSource(Arc<BoxError>);

impl fmt::Debug for SharedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self.0, f)
    }
}

impl fmt::Display for SharedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self.0, f)
    }
}

impl std::error::Error for SharedSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl fmt::Debug for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessError")
            .field("kind", &self.kind)
            .field("class", &self.class)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Retryable => "retryable",
            ErrorKind::Terminal => "terminal",
            ErrorKind::Unavailable => "unavailable",
        };
        write!(f, "{kind} error [{}]: {}", self.class, self.source)
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl From<crate::codec::DecodeError> for ProcessError {
    fn from(e: crate::codec::DecodeError) -> Self {
        let class = e.class();
        if e.is_unavailable() {
            ProcessError::unavailable(e).with_class(class)
        } else {
            ProcessError::terminal(e).with_class(class)
        }
    }
}

impl From<crate::message::MessageError> for ProcessError {
    fn from(e: crate::message::MessageError) -> Self {
        let class = e.class();
        ProcessError::terminal(e).with_class(class)
    }
}

/// The handler ran longer than `handler_timeout` and was cancelled.
#[derive(Debug, thiserror::Error)]
#[error(
    "handler did not finish within {0:?} and was cancelled (raise `handler_timeout` or make the handler faster)"
)]
pub struct HandlerTimeout(pub std::time::Duration);

/// The handler panicked.
#[derive(Debug, thiserror::Error)]
#[error("handler panicked: {0}")]
pub struct HandlerPanic(pub String);

/// A configuration value is missing or wrong. The message names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is invalid.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// The key, as written in the TOML file (`WEIR_<KEY>` in the environment).
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The TOML file could not be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// File path.
        path: String,
        /// Parser or I/O message (includes the offending key and line).
        message: String,
    },
}

impl ConfigError {
    /// A value is invalid: `key` names it, `problem` says what to fix.
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Errors that stop a consumer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeirError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Kafka client could not be created or subscribed.
    #[error("kafka client: {context}: {source}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The librdkafka error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A subscribed topic does not exist.
    #[error(
        "topic `{topic}` does not exist on {brokers}: create it first (Weir does not auto-create source topics)"
    )]
    UnknownTopic {
        /// Topic name.
        topic: String,
        /// Bootstrap servers asked.
        brokers: String,
    },
    /// The client hit an error it cannot recover from (authentication, authorization, fatal idempotence errors).
    #[error("fatal kafka error: {0}")]
    Fatal(String),
    /// An internal task failed.
    #[error("internal: {0}")]
    Internal(String),
}
