//! The schema registry client: lookups by id (cached, one request per id
//! however many messages wait for it), registration and lookup by subject,
//! authentication and TLS options.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, perform_sr_call, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    RawError, RawRegisteredSchema, SchemaType, SrCall, SuppliedReference, SuppliedSchema,
};
use tokio::sync::OnceCell;

use crate::config::*;

/// The format of a registered schema (the registry's `schemaType`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SchemaFormat {
    /// `AVRO` (also what a registry means when it leaves `schemaType` out).
    Avro,
    /// `PROTOBUF`.
    Protobuf,
    /// `JSON` (JSON Schema).
    Json,
    /// Anything else the registry names.
    Other(String),
}

impl SchemaFormat {
    /// The registry's name for the format.
    pub fn as_str(&self) -> &str {
        match self {
            SchemaFormat::Avro => "AVRO",
            SchemaFormat::Protobuf => "PROTOBUF",
            SchemaFormat::Json => "JSON",
            SchemaFormat::Other(s) => s,
        }
    }

    fn parse(s: Option<&str>) -> Self {
        match s.map(|s| s.to_ascii_uppercase()).as_deref() {
            None | Some("AVRO") => SchemaFormat::Avro,
            Some("PROTOBUF") => SchemaFormat::Protobuf,
            Some("JSON") => SchemaFormat::Json,
            Some(_) => SchemaFormat::Other(s.unwrap_or_default().to_string()),
        }
    }

    fn library(&self) -> SchemaType {
        match self {
            SchemaFormat::Avro => SchemaType::Avro,
            SchemaFormat::Protobuf => SchemaType::Protobuf,
            SchemaFormat::Json => SchemaType::Json,
            SchemaFormat::Other(s) => SchemaType::Other(s.clone()),
        }
    }
}

/// A reference from one registered schema to another (a Protobuf import, an
/// Avro named type or a JSON Schema `$ref` held under another subject).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaReference {
    /// The name the referring schema uses (for Protobuf, the import path).
    pub name: String,
    /// The subject the referenced schema is registered under.
    pub subject: String,
    /// Its version under that subject.
    pub version: u32,
}

/// A schema as the registry holds it: the text, its format and references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSchema {
    /// The id (for a lookup by subject and version, the id the registry gave).
    pub id: u32,
    /// The format.
    pub format: SchemaFormat,
    /// The schema text as registered (Avro JSON, `.proto` source or a
    /// base64 `FileDescriptorProto` as Confluent's Python client registers
    /// it, JSON Schema).
    pub schema: String,
    /// The schemas it refers to.
    pub references: Vec<SchemaReference>,
}

/// A schema to register: its text, format, the name record-name strategies
/// use, and the schemas it refers to (registered first, under their own subjects).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewSchema {
    /// The format.
    pub format: SchemaFormat,
    /// The schema text.
    pub schema: String,
    /// The record or message full name, where the format has one.
    pub name: Option<String>,
    /// Schemas this one refers to, registered before it.
    pub references: Vec<NewReference>,
}

impl NewSchema {
    /// A schema of `format` without references.
    pub fn new(format: SchemaFormat, schema: impl Into<String>) -> Self {
        NewSchema {
            format,
            schema: schema.into(),
            name: None,
            references: Vec::new(),
        }
    }
}

/// A schema another one refers to, to register under `subject`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewReference {
    /// The name the referring schema uses (for Protobuf, the import path).
    pub name: String,
    /// The subject to register it under.
    pub subject: String,
    /// Its text.
    pub schema: String,
    /// What it refers to in turn.
    pub references: Vec<NewReference>,
}

impl NewReference {
    fn supplied(&self) -> SuppliedReference {
        SuppliedReference::new(self.name.clone(), self.subject.clone(), self.schema.clone())
            .with_references(self.references.iter().map(NewReference::supplied).collect())
    }
}

/// A schema id registered (or found) under a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterId {
    /// The id written into every message.
    pub id: u32,
}

/// A schema registry client, cheap to clone and share between codecs of
/// every format.
///
/// Schemas by id are cached for the life of the client (ids are immutable in
/// a registry); concurrent misses for one id share one request. Transient
/// failures are not cached. Codecs keep what they parse from a schema in
/// [`parsed`](Self::parsed), so one client parses each schema once.
#[derive(Clone)]
pub struct SchemaRegistry {
    pub(crate) inner: Arc<Inner>,
}

type Cell = Arc<OnceCell<Arc<RawSchema>>>;

pub(crate) struct Inner {
    pub(crate) url: String,
    pub(crate) settings: SrSettings,
    pub(crate) subjects: Mutex<HashMap<(String, NewSchema), u32>>,
    pub(crate) ids: Mutex<HashMap<u32, Cell>>,
    pub(crate) versions: Mutex<HashMap<(String, u32), Cell>>,
    pub(crate) parsed: Mutex<HashMap<(TypeId, u32), Arc<dyn Any + Send + Sync>>>,
    pub(crate) requests: AtomicU64,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

/// How the producer side finds the writer schema id for a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Registration {
    /// Register the schema (idempotent when it is already there).
    #[default]
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

    /// Requests this client sent to the registry (cache misses).
    pub fn lookups(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The schema with `id` (cached; concurrent misses share one request).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<RawSchema>, RegistryError> {
        let cell = self.inner.ids.lock().entry(id).or_default().clone();
        cell.get_or_try_init(|| async {
            let r = self.call(SrCall::GetById(id)).await?;
            self.raw(r, Some(id), &format!("schema id {id}"))
        })
        .await
        .cloned()
    }

    /// The schema registered under `subject` as `version` (cached: versions
    /// are immutable).
    pub async fn schema_by_version(
        &self,
        subject: &str,
        version: u32,
    ) -> Result<Arc<RawSchema>, RegistryError> {
        let cell = self
            .inner
            .versions
            .lock()
            .entry((subject.to_string(), version))
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let r = self
                .call(SrCall::GetBySubjectAndVersion(subject, version))
                .await?;
            self.raw(r, None, &format!("`{subject}` version {version}"))
        })
        .await
        .cloned()
    }

    /// The latest schema registered under `subject` (not cached: call it at start-up).
    pub async fn latest(&self, subject: &str) -> Result<RawSchema, RegistryError> {
        let r = self.call(SrCall::GetLatest(subject)).await?;
        self.raw(r, None, &format!("the latest version of `{subject}`"))
            .map(Arc::unwrap_or_clone)
    }

    /// Registers `schema` under `subject` (its references first, each under
    /// its own subject), or only looks it up with
    /// [`Registration::LookupOnly`], and returns its id. Cached per (subject, schema).
    pub async fn register(
        &self,
        subject: &str,
        schema: &NewSchema,
        registration: Registration,
    ) -> Result<WriterId, RegistryError> {
        let key = (subject.to_string(), schema.clone());
        if let Some(id) = self.inner.subjects.lock().get(&key) {
            return Ok(WriterId { id: *id });
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let id = match registration {
            Registration::Auto => {
                let mut supplied = SuppliedSchema::new(
                    schema.name.clone(),
                    schema.format.library(),
                    schema.schema.clone(),
                );
                supplied.references = schema
                    .references
                    .iter()
                    .map(NewReference::supplied)
                    .collect();
                post_schema(&self.inner.settings, subject.to_string(), supplied)
                    .await
                    .map_err(|e| self.classify(&e))?
                    .id
            }
            Registration::LookupOnly => {
                let mut references = Vec::new();
                for r in &schema.references {
                    references.push(self.lookup_reference(r).await?);
                }
                let mut body = serde_json::json!({
                    "schema": schema.schema,
                    "schemaType": schema.format.as_str(),
                });
                if !references.is_empty() {
                    body["references"] = serde_json::Value::Array(references);
                }
                let body = body.to_string();
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
        self.inner.subjects.lock().insert(key, id);
        Ok(WriterId { id })
    }

    /// A registered reference's `{name, subject, version}` (looked up, never registered).
    fn lookup_reference<'a>(
        &'a self,
        r: &'a NewReference,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<serde_json::Value, RegistryError>> + Send + 'a>,
    > {
        Box::pin(async move {
            let mut nested = Vec::new();
            for n in &r.references {
                nested.push(self.lookup_reference(n).await?);
            }
            let mut body = serde_json::json!({ "schema": r.schema });
            if !nested.is_empty() {
                body["references"] = serde_json::Value::Array(nested);
            }
            let body = body.to_string();
            self.inner.requests.fetch_add(1, Ordering::Relaxed);
            let found = perform_sr_call(
                &self.inner.settings,
                SrCall::PostForVersion(&r.subject, &body),
            )
            .await
            .map_err(|e| self.classify(&e))?;
            let version = found.version.ok_or_else(|| RegistryError::Unavailable {
                url: self.inner.url.clone(),
                detail: format!(
                    "lookup of reference subject `{}` returned no version",
                    r.subject
                ),
            })?;
            Ok(serde_json::json!({ "name": r.name, "subject": r.subject, "version": version }))
        })
    }

    /// What a codec parsed from schema `id`, parsing it with `parse` the first
    /// time (per type `T`; concurrent first calls may both parse, and one result stays).
    pub async fn parsed<T, F, Fut>(&self, id: u32, parse: F) -> Result<Arc<T>, RegistryError>
    where
        T: Send + Sync + 'static,
        F: FnOnce(Arc<RawSchema>) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let key = (TypeId::of::<T>(), id);
        if let Some(p) = self.inner.parsed.lock().get(&key).cloned()
            && let Ok(t) = p.downcast::<T>()
        {
            return Ok(t);
        }
        let raw = self.schema_by_id(id).await?;
        let t = Arc::new(parse(raw).await?);
        self.inner.parsed.lock().insert(key, t.clone());
        Ok(t)
    }

    /// One registry call, counted.
    async fn call(&self, call: SrCall<'_>) -> Result<RawRegisteredSchema, RegistryError> {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        perform_sr_call(&self.inner.settings, call)
            .await
            .map_err(|e| self.classify(&e))
    }

    fn raw(
        &self,
        r: RawRegisteredSchema,
        id: Option<u32>,
        what: &str,
    ) -> Result<Arc<RawSchema>, RegistryError> {
        let (Some(id), Some(schema)) = (id.or(r.id), r.schema) else {
            return Err(RegistryError::Unavailable {
                url: self.inner.url.clone(),
                detail: format!("{what} came without id or schema"),
            });
        };
        Ok(Arc::new(RawSchema {
            id,
            format: SchemaFormat::parse(r.schema_type.as_deref()),
            schema,
            references: r
                .references
                .unwrap_or_default()
                .into_iter()
                .map(|r| SchemaReference {
                    name: r.name,
                    subject: r.subject,
                    version: r.version,
                })
                .collect(),
        }))
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
        RegistryError::Unavailable {
            url,
            detail: e.error.clone(),
        }
    }
}

/// Removes `user:password@` from a URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((_, host)) = rest.split_once('@')
    {
        return format!("{scheme}://***@{host}");
    }
    url.to_string()
}
