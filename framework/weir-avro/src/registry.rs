//! The schema registry client: lookups by id (cached, one request per id
//! however many messages wait for it), registration and lookup by subject,
//! authentication and TLS options.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apache_avro::Schema;
use parking_lot::Mutex;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, perform_sr_call, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    RawError, SchemaType, SrCall, SuppliedSchema,
};

/// Why a registry call failed, classified for the caller.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry answered that the schema, subject or version does not exist.
    #[error("schema registry {url}: not found ({detail})")]
    NotFound {
        /// The registry URL (credentials removed).
        url: String,
        /// The registry's error code and message.
        detail: String,
    },
    /// The registry refused the schema (incompatible with the subject's
    /// compatibility level, or invalid).
    #[error("schema registry {url} refused the schema: {detail}")]
    Rejected {
        /// The registry URL (credentials removed).
        url: String,
        /// The registry's error code and message.
        detail: String,
    },
    /// The schema exists but is not an Avro schema this client can use.
    #[error("schema registry {url}: {detail}")]
    Unsupported {
        /// The registry URL (credentials removed).
        url: String,
        /// What is wrong with the schema.
        detail: String,
    },
    /// The registry cannot be reached, timed out, is overloaded, or refused the
    /// credentials. Retrying later can help.
    #[error("schema registry {url} is unavailable: {detail}")]
    Unavailable {
        /// The registry URL (credentials removed).
        url: String,
        /// What happened and what to check.
        detail: String,
    },
    /// The client could not be configured (bad certificate, bad URL).
    #[error("schema registry client configuration: {0}")]
    Config(String),
}

/// Settings for a schema registry client. Field names follow Confluent's
/// client properties; [`from_env`](Self::from_env) reads them from `WEIR_SCHEMA_REGISTRY_*`.
///
/// `Debug` never prints the password or the token.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL(s), comma separated: `http://registry:8081`. Tried in order.
    pub url: String,
    /// Basic auth as `user:password` (Confluent's `basic.auth.user.info`).
    pub basic_auth_user_info: Option<String>,
    /// Bearer token (Confluent's `bearer.auth.token`).
    pub bearer_auth_token: Option<String>,
    /// PEM file with the CA certificate(s) to trust for `https` URLs.
    pub ssl_ca_location: Option<String>,
    /// PEM file with the client certificate (mutual TLS).
    pub ssl_certificate_location: Option<String>,
    /// PEM file with the client's PKCS#8 private key (mutual TLS).
    pub ssl_key_location: Option<String>,
    /// Per-request timeout (humantime, e.g. `5s`). Default 10 s.
    #[serde(with = "humantime_opt", default)]
    pub timeout: Option<Duration>,
}

mod humantime_opt {
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = serde::Deserialize::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl fmt::Debug for SchemaRegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &redact_url(&self.url))
            .field(
                "basic_auth_user_info",
                &self
                    .basic_auth_user_info
                    .as_deref()
                    .map(|u| format!("{}:***", u.split(':').next().unwrap_or(""))),
            )
            .field(
                "bearer_auth_token",
                &self.bearer_auth_token.as_ref().map(|_| "***"),
            )
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SchemaRegistryConfig {
    /// A config for `url` with no authentication.
    pub fn new(url: impl Into<String>) -> Self {
        SchemaRegistryConfig {
            url: url.into(),
            ..Default::default()
        }
    }

    /// Reads `WEIR_SCHEMA_REGISTRY_URL` (required), `…_BASIC_AUTH_USER_INFO`,
    /// `…_BEARER_AUTH_TOKEN`, `…_SSL_CA_LOCATION`, `…_SSL_CERTIFICATE_LOCATION`,
    /// `…_SSL_KEY_LOCATION` and `…_TIMEOUT`. Returns `Ok(None)` when the URL is not set.
    pub fn from_env() -> Result<Option<Self>, RegistryError> {
        let var = |k: &str| std::env::var(format!("WEIR_SCHEMA_REGISTRY_{k}")).ok();
        let Some(url) = var("URL") else {
            return Ok(None);
        };
        let timeout = var("TIMEOUT")
            .map(|t| {
                humantime::parse_duration(&t).map_err(|e| {
                    RegistryError::Config(format!(
                        "WEIR_SCHEMA_REGISTRY_TIMEOUT `{t}` is not a duration such as `5s`: {e}"
                    ))
                })
            })
            .transpose()?;
        Ok(Some(SchemaRegistryConfig {
            url,
            basic_auth_user_info: var("BASIC_AUTH_USER_INFO"),
            bearer_auth_token: var("BEARER_AUTH_TOKEN"),
            ssl_ca_location: var("SSL_CA_LOCATION"),
            ssl_certificate_location: var("SSL_CERTIFICATE_LOCATION"),
            ssl_key_location: var("SSL_KEY_LOCATION"),
            timeout,
        }))
    }
}

/// Builds a [`SchemaRegistry`].
#[derive(Debug)]
pub struct SchemaRegistryBuilder {
    config: SchemaRegistryConfig,
    ca_pem: Vec<Vec<u8>>,
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    accept_invalid_certs: bool,
}

impl SchemaRegistryBuilder {
    /// Basic authentication.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.config.basic_auth_user_info = Some(format!("{user}:{password}"));
        self
    }

    /// Bearer token authentication.
    pub fn bearer_token(mut self, token: &str) -> Self {
        self.config.bearer_auth_token = Some(token.to_string());
        self
    }

    /// Trusts the CA certificate(s) in `pem` for `https` URLs.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem.push(pem.into());
        self
    }

    /// Presents a client certificate (mutual TLS): certificate chain and
    /// PKCS#8 private key, both PEM.
    pub fn client_identity_pem(
        mut self,
        certificate: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity_pem = Some((certificate.into(), key.into()));
        self
    }

    /// Skips certificate verification. Only for development against a
    /// self-signed registry; never in production.
    pub fn danger_accept_invalid_certs(mut self, yes: bool) -> Self {
        self.accept_invalid_certs = yes;
        self
    }

    /// Per-request timeout (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// Builds the client. Fails on unreadable certificate files or bad PEM.
    pub fn build(mut self) -> Result<SchemaRegistry, RegistryError> {
        let c = &self.config;
        let urls: Vec<String> = c
            .url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        let Some(first) = urls.first() else {
            return Err(RegistryError::Config(
                "no schema registry URL: set `url` (WEIR_SCHEMA_REGISTRY_URL), e.g. http://registry:8081"
                    .into(),
            ));
        };
        for u in &urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(RegistryError::Config(format!(
                    "schema registry URL `{}` must start with http:// or https://",
                    redact_url(u)
                )));
            }
        }
        let read = |what: &str, path: &str| {
            std::fs::read(path).map_err(|e| RegistryError::Config(format!("{what} `{path}`: {e}")))
        };
        if let Some(p) = &c.ssl_ca_location {
            let pem = read("ssl_ca_location", p)?;
            self.ca_pem.push(pem);
        }
        if let (Some(cert), Some(key)) = (&c.ssl_certificate_location, &c.ssl_key_location) {
            self.identity_pem = Some((
                read("ssl_certificate_location", cert)?,
                read("ssl_key_location", key)?,
            ));
        } else if c.ssl_certificate_location.is_some() != c.ssl_key_location.is_some() {
            return Err(RegistryError::Config(
                "mutual TLS needs both ssl_certificate_location and ssl_key_location".into(),
            ));
        }
        let mut client = reqwest::Client::builder();
        for pem in &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                RegistryError::Config(format!("CA certificate is not valid PEM: {e}"))
            })?;
            if certs.is_empty() {
                return Err(RegistryError::Config(
                    "CA certificate PEM holds no certificate".into(),
                ));
            }
            for cert in certs {
                client = client.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.identity_pem {
            let id = reqwest::Identity::from_pkcs8_pem(cert, key).map_err(|e| {
                RegistryError::Config(format!(
                    "client certificate/key are not a valid PEM certificate and PKCS#8 key: {e}"
                ))
            })?;
            client = client.identity(id);
        }
        if self.accept_invalid_certs {
            client = client.danger_accept_invalid_certs(true);
        }
        let mut b = SrSettings::new_builder(first.clone());
        for u in &urls[1..] {
            b.add_url(u.clone());
        }
        if let Some(info) = &c.basic_auth_user_info {
            let (user, pass) = match info.split_once(':') {
                Some((u, p)) => (u.to_string(), Some(p.to_string())),
                None => (info.clone(), None),
            };
            b.set_basic_authorization(&user, pass.as_deref());
        }
        if let Some(t) = &c.bearer_auth_token {
            b.set_token_authorization(t);
        }
        b.set_timeout(c.timeout.unwrap_or(Duration::from_secs(10)));
        let settings = b
            .build_with(client)
            .map_err(|e| RegistryError::Config(e.to_string()))?;
        let display = urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",");
        Ok(SchemaRegistry {
            inner: Arc::new(Inner {
                url: display,
                decoder: AvroDecoder::new(settings.clone()),
                settings,
                subjects: Mutex::new(HashMap::new()),
                ids: Mutex::new(HashMap::new()),
                requests: AtomicU64::new(0),
            }),
        })
    }
}

/// A writer schema with its registry id.
#[derive(Debug, Clone)]
pub struct RegisteredSchema {
    /// The id written into every message.
    pub id: u32,
    /// The parsed schema.
    pub schema: Arc<Schema>,
}

/// A schema registry client, cheap to clone and share between codecs.
///
/// Schemas by id are cached for the life of the client (ids are immutable in
/// a registry); concurrent misses for one id share one request. Transient
/// failures are not cached.
#[derive(Clone)]
pub struct SchemaRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    settings: SrSettings,
    decoder: AvroDecoder,
    subjects: Mutex<HashMap<(String, String), RegisteredSchema>>,
    ids: Mutex<HashMap<u32, Arc<Schema>>>,
    requests: AtomicU64,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

/// How the producer side finds the writer schema id for a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registration {
    /// Register the schema (idempotent when it is already there).
    Auto,
    /// Look the schema up under the subject; fail when it is not registered.
    LookupOnly,
}

impl SchemaRegistry {
    /// Starts a client for `url` (comma-separated for several registries).
    pub fn builder(url: impl Into<String>) -> SchemaRegistryBuilder {
        Self::from_config(SchemaRegistryConfig::new(url))
    }

    /// Starts a client from a [`SchemaRegistryConfig`].
    pub fn from_config(config: SchemaRegistryConfig) -> SchemaRegistryBuilder {
        SchemaRegistryBuilder {
            config,
            ca_pem: Vec::new(),
            identity_pem: None,
            accept_invalid_certs: false,
        }
    }

    /// The registry URL(s), credentials removed.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Lookups that missed this client's cache (each reached the registry or
    /// joined a request in flight).
    pub fn lookups(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The writer schema with `id` (cached).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = self.inner.ids.lock().get(&id) {
            return Ok(s.clone());
        }
        // Misses go through the library's single-flight cache: concurrent
        // misses for one id share one HTTP request.
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let d = &self.inner.decoder;
        match d.get_schema(id).await {
            Ok(s) => {
                let parsed = Arc::new(s.parsed.clone());
                self.inner.ids.lock().insert(id, parsed.clone());
                Ok(parsed)
            }
            Err(e) => {
                let err = self.classify(&e);
                if matches!(err, RegistryError::Unavailable { .. }) {
                    // An auth or proxy problem is cached by the library as
                    // permanent; we retry it, so drop it from the cache.
                    d.remove_errors_from_cache();
                }
                Err(err)
            }
        }
    }

    /// Registers `schema` under `subject` (or finds it, when `registration`
    /// is lookup-only) and returns its id. Cached per (subject, schema).
    pub(crate) async fn writer_id(
        &self,
        subject: &str,
        schema: &Schema,
        raw: &str,
        registration: Registration,
    ) -> Result<RegisteredSchema, RegistryError> {
        let key = (subject.to_string(), raw.to_string());
        if let Some(r) = self.inner.subjects.lock().get(&key) {
            return Ok(r.clone());
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let id = match registration {
            Registration::Auto => {
                let supplied = SuppliedSchema::new(
                    schema_full_name(schema),
                    SchemaType::Avro,
                    raw.to_string(),
                );
                post_schema(&self.inner.settings, subject.to_string(), supplied)
                    .await
                    .map_err(|e| self.classify(&e))?
                    .id
            }
            Registration::LookupOnly => {
                let body = serde_json::json!({ "schema": raw, "schemaType": "AVRO" }).to_string();
                let r =
                    perform_sr_call(&self.inner.settings, SrCall::PostForVersion(subject, &body))
                        .await
                        .map_err(|e| self.classify(&e))?;
                r.id.ok_or_else(|| RegistryError::Unavailable {
                    url: self.inner.url.clone(),
                    detail: format!("lookup of subject `{subject}` returned no id"),
                })?
            }
        };
        let reg = RegisteredSchema {
            id,
            schema: Arc::new(schema.clone()),
        };
        self.inner.subjects.lock().insert(key, reg.clone());
        Ok(reg)
    }

    /// The latest schema registered under `subject` (not cached: call it at start-up).
    pub async fn latest(&self, subject: &str) -> Result<RegisteredSchema, RegistryError> {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let r = perform_sr_call(&self.inner.settings, SrCall::GetLatest(subject))
            .await
            .map_err(|e| self.classify(&e))?;
        let (Some(id), Some(raw)) = (r.id, r.schema) else {
            return Err(RegistryError::Unavailable {
                url: self.inner.url.clone(),
                detail: format!("latest version of `{subject}` came without id or schema"),
            });
        };
        let schema = Schema::parse_str(&raw).map_err(|e| RegistryError::Unsupported {
            url: self.inner.url.clone(),
            detail: format!("latest schema of `{subject}` (id {id}) is not valid Avro: {e}"),
        })?;
        Ok(RegisteredSchema {
            id,
            schema: Arc::new(schema),
        })
    }

    /// Maps the library's error to what a caller can act on.
    fn classify(&self, e: &SRCError) -> RegistryError {
        let url = self.inner.url.clone();
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(s) = src {
            if let Some(raw) = s.downcast_ref::<RawError>() {
                let detail = format!("error_code {}: {}", raw.error_code, raw.message);
                return match raw.error_code {
                    // Confluent: 40401 subject, 40402 version, 40403 schema not found.
                    40401..=40403 => RegistryError::NotFound { url, detail },
                    409 | 42201 | 42202 | 42203 => RegistryError::Rejected { url, detail },
                    401 | 403 | 40101 | 40301 => RegistryError::Unavailable {
                        url,
                        detail: format!(
                            "credentials refused ({detail}): check basic auth / bearer token settings"
                        ),
                    },
                    0 if e.error.contains("404") => RegistryError::Unavailable {
                        url,
                        detail: "HTTP 404 without a registry error code: is the URL (and its path prefix) right?".into(),
                    },
                    _ => RegistryError::Unavailable {
                        url,
                        detail: format!("{} ({detail})", e.error),
                    },
                };
            }
            if let Some(r) = s.downcast_ref::<reqwest::Error>() {
                let what = if r.is_timeout() {
                    "request timed out"
                } else if r.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                };
                let mut root = String::new();
                let mut inner = std::error::Error::source(r);
                while let Some(i) = inner {
                    root = i.to_string();
                    inner = i.source();
                }
                let detail = if root.is_empty() {
                    what.to_string()
                } else {
                    format!("{what}: {root}")
                };
                return RegistryError::Unavailable { url, detail };
            }
            src = s.source();
        }
        if e.retriable {
            return RegistryError::Unavailable {
                url,
                detail: e.error.clone(),
            };
        }
        let msg = e.error.clone();
        if msg.contains("is not correct") || msg.contains("is not supported") {
            return RegistryError::Unsupported {
                url,
                detail: format!("the schema is not an Avro schema ({msg})"),
            };
        }
        if msg.contains("cant be turned into a Schema") || msg.contains("failed to parse Avro") {
            return RegistryError::Unsupported {
                url,
                detail: "the registered schema cannot be parsed as Avro".into(),
            };
        }
        RegistryError::Unavailable { url, detail: msg }
    }
}

/// The full name of a named schema (record, enum, fixed).
pub(crate) fn schema_full_name(schema: &Schema) -> Option<String> {
    match schema {
        Schema::Record(r) => Some(r.name.fullname(None)),
        Schema::Enum(e) => Some(e.name.fullname(None)),
        Schema::Fixed(f) => Some(f.name.fullname(None)),
        _ => None,
    }
}

/// Removes `user:password@` from a URL for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((_, host)) = rest.split_once('@')
    {
        return format!("{scheme}://***@{host}");
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_urls_hide_secrets() {
        let mut c = SchemaRegistryConfig::new("https://u:topsecret@sr:8081");
        c.basic_auth_user_info = Some("alice:hunter2".into());
        c.bearer_auth_token = Some("tok-123".into());
        let d = format!("{c:?}");
        for secret in ["topsecret", "hunter2", "tok-123"] {
            assert!(!d.contains(secret), "{secret} leaked: {d}");
        }
        assert!(d.contains("alice:***"), "{d}");
        let r = SchemaRegistry::from_config(c).build().unwrap();
        assert_eq!(r.url(), "https://***@sr:8081");
        assert!(!format!("{r:?}").contains("topsecret"));
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let e = SchemaRegistry::builder("").build().unwrap_err();
        assert!(e.to_string().contains("WEIR_SCHEMA_REGISTRY_URL"), "{e}");
        let e = SchemaRegistry::builder("sr:8081").build().unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        let e = SchemaRegistry::builder("https://sr")
            .ca_certificate_pem(b"not a pem".to_vec())
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("CA certificate"), "{e}");
        let mut c = SchemaRegistryConfig::new("https://sr");
        c.ssl_certificate_location = Some("/nonexistent.pem".into());
        let e = SchemaRegistry::from_config(c).build().unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
    }
}
