//! The schema registry client: lookups by id (cached, one request per id
//! however many messages wait for it), registration and lookup by subject,
//! authentication and TLS options.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

mod config;
pub use config::*;
#[cfg(test)]
mod tests;

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
