//! Registry errors, settings (TOML, environment) and the builder that turns them into a [`SchemaRegistry`](super::SchemaRegistry).

use parking_lot::Mutex;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use weir::codec::{DecodeError, EncodeError, Part};

use crate::client::{Inner, SchemaRegistry, redact_url};

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
    /// The schema exists but is not one the codec can use (another format,
    /// or text that does not parse).
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
    pub(crate) config: SchemaRegistryConfig,
    pub(crate) ca_pem: Vec<Vec<u8>>,
    pub(crate) identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) accept_invalid_certs: bool,
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
        let urls = registry_urls(&c.url)?;
        let first = &urls[0];
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
        let client = self.http_client()?;
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
                settings,
                subjects: Mutex::new(HashMap::new()),
                ids: Mutex::new(HashMap::new()),
                versions: Mutex::new(HashMap::new()),
                parsed: Mutex::new(HashMap::new()),
                requests: AtomicU64::new(0),
            }),
        })
    }
}

impl SchemaRegistryBuilder {
    /// The HTTP client with the configured CA certificates, client identity
    /// and certificate checking.
    fn http_client(&self) -> Result<reqwest::ClientBuilder, RegistryError> {
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
        Ok(client)
    }
}

/// The registry URLs of `url` (comma-separated), checked: at least one, each http(s).
fn registry_urls(url: &str) -> Result<Vec<String>, RegistryError> {
    let urls: Vec<String> = url
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(RegistryError::Config(
            "no schema registry URL: set `url` (WEIR_SCHEMA_REGISTRY_URL), e.g. http://registry:8081"
                .into(),
        ));
    }
    for u in &urls {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(RegistryError::Config(format!(
                "schema registry URL `{}` must start with http:// or https://",
                redact_url(u)
            )));
        }
    }
    Ok(urls)
}

impl RegistryError {
    /// What a consumer's codec makes of this error while decoding `part`
    /// framed with schema `id`: an unknown id and an unusable schema are the
    /// message's fault (terminal, classified); anything else means the
    /// registry is unavailable (retried in place, never the DLQ).
    pub fn into_decode_error(self, part: Part, id: u32) -> DecodeError {
        match self {
            RegistryError::NotFound { .. } => DecodeError::UnknownSchemaId { part, id },
            RegistryError::Unsupported { detail, .. } => DecodeError::IncompatibleSchema {
                part,
                writer_id: id,
                detail,
            },
            RegistryError::Unavailable { url, detail } => DecodeError::Unavailable {
                what: format!("schema registry {url}"),
                detail,
            },
            RegistryError::Rejected { url, detail } => DecodeError::Unavailable {
                what: format!("schema registry {url}"),
                detail,
            },
            RegistryError::Config(detail) => DecodeError::Unavailable {
                what: "schema registry".into(),
                detail,
            },
        }
    }

    /// What a producer's serializer makes of this error for `subject`.
    pub fn into_encode_error(self, subject: &str) -> EncodeError {
        match self {
            RegistryError::NotFound { detail, .. } => EncodeError::SchemaRejected {
                subject: subject.to_string(),
                detail: format!(
                    "not registered ({detail}): register it in your deployment pipeline or enable auto_register"
                ),
            },
            RegistryError::Rejected { detail, .. } => EncodeError::SchemaRejected {
                subject: subject.to_string(),
                detail: format!(
                    "{detail}: the schema breaks the subject's compatibility rules (add defaults or optional fields)"
                ),
            },
            RegistryError::Unsupported { detail, .. } | RegistryError::Config(detail) => {
                EncodeError::SchemaRejected {
                    subject: subject.to_string(),
                    detail,
                }
            }
            RegistryError::Unavailable { url, detail } => EncodeError::Unavailable {
                what: format!("schema registry {url}"),
                detail,
            },
        }
    }
}
