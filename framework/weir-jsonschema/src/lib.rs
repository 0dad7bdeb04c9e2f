//! # weir-jsonschema: JSON Schema payloads through a Confluent-compatible schema registry
//!
//! Messages use Confluent's JSON Schema wire format: magic byte `0`, the
//! writer schema's id as 4 bytes big-endian, then the JSON document. The
//! bytes are the ones Confluent's serializers (Java, Python, Go) write and read.
//!
//! - Consumers: [`JsonSchemaCodec<T>`] for serde types, [`GenericJsonSchemaCodec`]
//!   for [`serde_json::Value`]; every payload is validated against its
//!   writer schema (fetched by id, compiled once per registry client).
//! - Producers and the outbox: [`JsonSchemaSerializer<T>`] registers the
//!   schema (or only looks it up) and validates each value before it is
//!   sent (turn off with [`validate(false)`](JsonSchemaSerializer::validate)).
//! - Decoding failures are terminal and classified (the message goes to the
//!   DLQ): `decode_wrong_magic_byte`, `decode_truncated`,
//!   `decode_unknown_schema_id`, `decode_invalid_body` (not JSON),
//!   `decode_schema_violation` (JSON that breaks the schema: the message
//!   names the instance path and the rule, never the value),
//!   `decode_incompatible_schema` (the id is not a usable JSON Schema),
//!   `decode_type_mismatch` (valid, but not the Rust type). An unreachable
//!   registry is `schema_registry_unavailable`: retried in place.
//! - Remote `$ref`s are not fetched (a hostile schema cannot make a consumer
//!   call out); `$ref`s inside the schema resolve.
//!
//! ```no_run
//! use weir::{Consumer, ConsumerConfig, Message, ProcessError, Record, processor_fn};
//! use weir_jsonschema::{JsonSchemaCodec, JsonSchemaSerializer};
//! use weir_registry::SchemaRegistry;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Click { link: String, at_ms: i64 }
//!
//! const CLICK: &str = r#"{"title":"shop.Click","type":"object",
//!   "properties":{"link":{"type":"string"},"at_ms":{"type":"integer"}},
//!   "required":["link","at_ms"]}"#;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = SchemaRegistry::builder("http://registry:8081").build()?;
//! let serializer = JsonSchemaSerializer::<Click>::new(registry.clone(), CLICK)?;
//! let producer = weir::Producer::new("kafka:9092")?;
//! let click = Click { link: "l1".into(), at_ms: 1 };
//! producer
//!     .send(Record::to("clicks").key("l1").value_with(&serializer, &click).await?)
//!     .await?;
//!
//! let consumer = Consumer::builder(ConsumerConfig::new("kafka:9092", "stats", &["clicks"]))
//!     .codec(JsonSchemaCodec::<Click>::new(registry))
//!     .build(processor_fn(|m: Message<Click>| async move {
//!         println!("{}", m.value().link);
//!         Ok::<_, ProcessError>(())
//!     }))?;
//! consumer.run().await?;
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use jsonschema::Validator;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use weir::codec::{Codec, DecodeError, EncodeError, Encoder, Part};
use weir::message::RawMessage;
use weir_registry::{
    FrameError, MAGIC_BYTE, NewSchema, RawSchema, Registration, RegistryError, SchemaFormat,
    SchemaRegistry, SubjectNameStrategy, split_frame,
};

/// Why a JSON Schema given in code cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("JSON schema is not usable: {0}")]
pub struct JsonSchemaError(String);

/// A compiled writer schema, kept in the registry client's cache.
struct Compiled(Validator);

fn compile(text: &str) -> Result<Validator, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    jsonschema::validator_for(&v).map_err(|e| {
        format!(
            "not a valid JSON Schema at {}: {}",
            e.schema_path(),
            e.kind().keyword()
        )
    })
}

/// Where a value breaks the schema: instance path and rule, never the value.
fn violations(validator: &Validator, value: &Value) -> Option<String> {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .take(3)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            format!(
                "at {at}: breaks `{}` ({})",
                e.kind().keyword(),
                e.schema_path()
            )
        })
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

async fn writer(registry: &SchemaRegistry, id: u32) -> Result<Arc<Compiled>, RegistryError> {
    registry
        .parsed(id, |raw: Arc<RawSchema>| async move {
            let unsupported = |detail: String| RegistryError::Unsupported {
                url: registry.url().to_string(),
                detail,
            };
            if raw.format != SchemaFormat::Json {
                return Err(unsupported(format!(
                    "schema id {} is a {} schema, not JSON Schema: read it with that format's codec",
                    raw.id,
                    raw.format.as_str()
                )));
            }
            if !raw.references.is_empty() {
                return Err(unsupported(format!(
                    "schema id {} refers to other subjects; weir-jsonschema reads self-contained schemas only",
                    raw.id
                )));
            }
            compile(&raw.schema)
                .map(Compiled)
                .map_err(|e| unsupported(format!("schema id {}: {e}", raw.id)))
        })
        .await
}

struct DecodeCore {
    registry: SchemaRegistry,
    part: Part,
}

impl DecodeCore {
    async fn decode(&self, message: &RawMessage) -> Result<Value, DecodeError> {
        let part = self.part;
        let bytes = part.bytes(message).ok_or(DecodeError::Missing(part))?;
        let (id, body) = split_frame(bytes).map_err(|e| match e {
            FrameError::WrongMagicByte(found) => DecodeError::WrongMagicByte { part, found },
            e => DecodeError::Truncated {
                part,
                detail: e.to_string(),
            },
        })?;
        let compiled = writer(&self.registry, id)
            .await
            .map_err(|e| e.into_decode_error(part, id))?;
        let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError::InvalidBody {
            part,
            writer_id: id,
            detail: format!(
                "not JSON ({:?} at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        })?;
        if let Some(detail) = violations(&compiled.0, &value) {
            return Err(DecodeError::SchemaViolation {
                part,
                writer_id: id,
                detail,
            });
        }
        Ok(value)
    }
}

/// Decodes Confluent-framed JSON into a serde type `T`, validated against
/// the writer schema first.
pub struct JsonSchemaCodec<T> {
    core: DecodeCore,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for JsonSchemaCodec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchemaCodec")
            .field("registry", &self.core.registry.url())
            .field("part", &self.core.part)
            .finish()
    }
}

impl<T: DeserializeOwned> JsonSchemaCodec<T> {
    /// A value codec reading writer schemas from `registry`.
    pub fn new(registry: SchemaRegistry) -> Self {
        JsonSchemaCodec {
            core: DecodeCore {
                registry,
                part: Part::Value,
            },
            _t: PhantomData,
        }
    }

    /// Decodes message keys instead of values.
    pub fn for_key(mut self) -> Self {
        self.core.part = Part::Key;
        self
    }
}

impl<T: DeserializeOwned + Send + 'static> Codec for JsonSchemaCodec<T> {
    type Value = T;

    async fn decode(&self, message: &RawMessage) -> Result<T, DecodeError> {
        let v = self.core.decode(message).await?;
        serde_json::from_value(v).map_err(|e| DecodeError::TypeMismatch {
            part: self.core.part,
            target: std::any::type_name::<T>(),
            detail: type_detail(&e),
        })
    }
}

/// serde's message without the value it quotes (`invalid type: string "x"`).
fn type_detail(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(['"', '`']) {
        Some(i) if s.starts_with("invalid") => format!("{}…", &s[..i]),
        _ => s,
    }
}

/// Decodes Confluent-framed JSON into a [`serde_json::Value`], validated
/// against the writer schema (tools, and topics of several shapes).
pub struct GenericJsonSchemaCodec {
    core: DecodeCore,
}

impl std::fmt::Debug for GenericJsonSchemaCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenericJsonSchemaCodec")
            .field("registry", &self.core.registry.url())
            .field("part", &self.core.part)
            .finish()
    }
}

impl GenericJsonSchemaCodec {
    /// A value codec reading writer schemas from `registry`.
    pub fn new(registry: SchemaRegistry) -> Self {
        GenericJsonSchemaCodec {
            core: DecodeCore {
                registry,
                part: Part::Value,
            },
        }
    }

    /// Decodes message keys instead of values.
    pub fn for_key(mut self) -> Self {
        self.core.part = Part::Key;
        self
    }
}

impl Codec for GenericJsonSchemaCodec {
    type Value = Value;

    async fn decode(&self, message: &RawMessage) -> Result<Value, DecodeError> {
        self.core.decode(message).await
    }
}

/// Encodes a serde type `T` as Confluent-framed JSON with a registered JSON
/// Schema, validating each value against it first (unless turned off).
pub struct JsonSchemaSerializer<T> {
    registry: SchemaRegistry,
    schema: NewSchema,
    validator: Option<Arc<Validator>>,
    part: Part,
    strategy: SubjectNameStrategy,
    registration: Registration,
    _t: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for JsonSchemaSerializer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchemaSerializer")
            .field("registry", &self.registry.url())
            .field("title", &self.schema.name)
            .field("part", &self.part)
            .field("validate", &self.validator.is_some())
            .finish()
    }
}

impl<T: Serialize> JsonSchemaSerializer<T> {
    /// A value serializer with `schema` (JSON text). Its `title`, when
    /// present, is the record name for the record-name strategies. Fails
    /// when the schema is not JSON or not a valid JSON Schema.
    pub fn new(registry: SchemaRegistry, schema: &str) -> Result<Self, JsonSchemaError> {
        let validator = compile(schema).map_err(JsonSchemaError)?;
        let title = serde_json::from_str::<Value>(schema)
            .ok()
            .and_then(|v| v.get("title").and_then(Value::as_str).map(str::to_string));
        let mut new = NewSchema::new(SchemaFormat::Json, schema);
        new.name = title;
        Ok(JsonSchemaSerializer {
            registry,
            schema: new,
            validator: Some(Arc::new(validator)),
            part: Part::Value,
            strategy: SubjectNameStrategy::TopicName,
            registration: Registration::Auto,
            _t: PhantomData,
        })
    }

    /// Encodes message keys (subject `<topic>-key` with [`SubjectNameStrategy::TopicName`]).
    pub fn for_key(mut self) -> Self {
        self.part = Part::Key;
        self
    }

    /// The subject name strategy (default [`SubjectNameStrategy::TopicName`]).
    pub fn subject_name_strategy(mut self, strategy: SubjectNameStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// With `false`, the schema must already be registered. Default `true`.
    pub fn auto_register(mut self, yes: bool) -> Self {
        self.registration = if yes {
            Registration::Auto
        } else {
            Registration::LookupOnly
        };
        self
    }

    /// With `false`, values are sent without validation (faster; a consumer
    /// still validates). Default `true`.
    pub fn validate(mut self, yes: bool) -> Self {
        if !yes {
            self.validator = None;
        } else if self.validator.is_none() {
            self.validator = compile(&self.schema.schema).ok().map(Arc::new);
        }
        self
    }
}

impl<T: Serialize + Sync> Encoder<T> for JsonSchemaSerializer<T> {
    async fn encode(&self, topic: &str, value: &T) -> Result<Bytes, EncodeError> {
        let invalid = |detail: String| EncodeError::Invalid {
            topic: topic.to_string(),
            target: std::any::type_name::<T>(),
            detail,
        };
        let json = serde_json::to_value(value).map_err(|e| invalid(type_detail(&e)))?;
        if let Some(v) = &self.validator
            && let Some(detail) = violations(v, &json)
        {
            return Err(invalid(format!("the value breaks the schema: {detail}")));
        }
        let subject = self
            .strategy
            .subject(topic, self.part, self.schema.name.as_deref())?;
        let id = self
            .registry
            .register(&subject, &self.schema, self.registration)
            .await
            .map_err(|e| e.into_encode_error(&subject))?
            .id;
        let mut out = vec![MAGIC_BYTE];
        out.extend_from_slice(&id.to_be_bytes());
        serde_json::to_writer(&mut out, &json).map_err(|e| invalid(type_detail(&e)))?;
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type":"object","properties":{"n":{"type":"integer","minimum":0},"s":{"type":"string"}},"required":["n"]}"#;

    #[test]
    fn violations_name_the_path_and_rule_never_the_value() {
        let v = compile(SCHEMA).unwrap();
        assert_eq!(violations(&v, &serde_json::json!({"n": 3})), None);
        let e = violations(&v, &serde_json::json!({"n": -7, "s": "secret-email@x"})).unwrap();
        assert!(e.contains("/n") && e.contains("minimum"), "{e}");
        assert!(!e.contains("-7") && !e.contains("secret"), "{e}");
        let e = violations(&v, &serde_json::json!({"s": 5})).unwrap();
        assert!(e.contains("required") && e.contains("/s"), "{e}");
    }

    #[test]
    fn bad_schemas_are_refused_at_construction() {
        let r = SchemaRegistry::builder("http://127.0.0.1:9")
            .build()
            .unwrap();
        let e = JsonSchemaSerializer::<Value>::new(r.clone(), "{nope").unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
        let e = JsonSchemaSerializer::<Value>::new(r, r#"{"type": 12}"#).unwrap_err();
        assert!(e.to_string().contains("not a valid JSON Schema"), "{e}");
    }

    #[test]
    fn type_errors_do_not_quote_values() {
        let e = serde_json::from_value::<u8>(serde_json::json!("secret")).unwrap_err();
        assert!(!type_detail(&e).contains("secret"), "{}", type_detail(&e));
    }
}
