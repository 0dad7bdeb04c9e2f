//! Encoding: the writer schema id (registered, looked up, or the subject's latest), the frame and the datum.

use crate::registry::{RegistryError, SchemaRegistry, schema_full_name};
use apache_avro::Schema;
use apache_avro::types::Value;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use weir::codec::{EncodeError, Encoder, Part};
use weir_registry::Registration;

use super::*;

/// How a serializer finds its writer schema id.
enum WriterSource {
    /// A schema given in code: registered (auto) or looked up under the subject.
    Given {
        schema: Arc<Schema>,
        raw: String,
        registration: Registration,
    },
    /// The subject's latest registered schema, fetched once per subject.
    Latest {
        cache: Mutex<HashMap<String, crate::registry::RegisteredSchema>>,
    },
}

struct EncodeCore {
    registry: SchemaRegistry,
    part: Part,
    strategy: SubjectNameStrategy,
    source: WriterSource,
    record_name: Option<String>,
}

impl EncodeCore {
    async fn writer(
        &self,
        topic: &str,
    ) -> Result<(String, crate::registry::RegisteredSchema), EncodeError> {
        let subject = self
            .strategy
            .subject(topic, self.part, self.record_name.as_deref())?;
        let map_err = |e: RegistryError, subject: &str| e.into_encode_error(subject);
        let reg = match &self.source {
            WriterSource::Given {
                schema,
                raw,
                registration,
            } => crate::registry::writer_id(&self.registry, &subject, schema, raw, *registration)
                .await
                .map_err(|e| map_err(e, &subject))?,
            WriterSource::Latest { cache } => {
                if let Some(r) = cache.lock().get(&subject) {
                    return Ok((subject, r.clone()));
                }
                let r = crate::registry::latest(&self.registry, &subject)
                    .await
                    .map_err(|e| map_err(e, &subject))?;
                cache.lock().insert(subject.clone(), r.clone());
                r
            }
        };
        Ok((subject, reg))
    }

    async fn encode_value(
        &self,
        topic: &str,
        value: Value,
        target: &'static str,
    ) -> Result<Bytes, EncodeError> {
        let (_, reg) = self.writer(topic).await?;
        let invalid = |detail: String| EncodeError::Invalid {
            topic: topic.to_string(),
            target,
            detail,
        };
        let resolved = value.resolve(&reg.schema).map_err(|_| {
            invalid(format!(
                "the value does not match writer schema id {} (field names, types or union branches differ)",
                reg.id
            ))
        })?;
        let body = apache_avro::writer::datum::GenericDatumWriter::builder(&reg.schema)
            .build()
            .and_then(|w| w.write_value_to_vec(resolved))
            .map_err(|_| invalid(format!("cannot write the value with schema id {}", reg.id)))?;
        Ok(frame(reg.id, &body))
    }
}

macro_rules! encoder_builders {
    () => {
        /// Encodes message keys (subject `<topic>-key` with [`SubjectNameStrategy::TopicName`]).
        pub fn for_key(mut self) -> Self {
            self.core.part = Part::Key;
            self
        }

        /// The subject name strategy (default [`SubjectNameStrategy::TopicName`]).
        pub fn subject_name_strategy(mut self, strategy: SubjectNameStrategy) -> Self {
            self.core.strategy = strategy;
            self
        }

        /// With `false`, the schema must already be registered under the subject
        /// (the usual production setting: schemas are registered by the deployment
        /// pipeline, producers only look them up). Default `true`.
        pub fn auto_register(mut self, yes: bool) -> Self {
            if let WriterSource::Given { registration, .. } = &mut self.core.source {
                *registration = if yes {
                    Registration::Auto
                } else {
                    Registration::LookupOnly
                };
            }
            self
        }
    };
}

fn given(registry: SchemaRegistry, schema: Schema) -> EncodeCore {
    // The full JSON (defaults, docs, aliases kept: the registry's compatibility
    // checks need the defaults, which the canonical form drops).
    let raw = serde_json::to_string(&schema).unwrap_or_else(|_| schema.canonical_form());
    let record_name = schema_full_name(&schema);
    EncodeCore {
        registry,
        part: Part::Value,
        strategy: SubjectNameStrategy::TopicName,
        source: WriterSource::Given {
            schema: Arc::new(schema),
            raw,
            registration: Registration::Auto,
        },
        record_name,
    }
}

fn latest(registry: SchemaRegistry, record_name: Option<String>) -> EncodeCore {
    EncodeCore {
        registry,
        part: Part::Value,
        strategy: SubjectNameStrategy::TopicName,
        source: WriterSource::Latest {
            cache: Mutex::new(HashMap::new()),
        },
        record_name,
    }
}

/// Encodes serde values of `T` as Avro in the Confluent wire format.
///
/// Use it with [`weir::Record::value_with`] or to fill an outbox row's payload.
pub struct AvroSerializer<T: ?Sized> {
    core: EncodeCore,
    _t: PhantomData<fn(&T)>,
}

impl<T: ?Sized> std::fmt::Debug for AvroSerializer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroSerializer")
            .field("target", &std::any::type_name::<T>())
            .field("part", &self.core.part)
            .field("strategy", &self.core.strategy)
            .finish_non_exhaustive()
    }
}

impl<T: ?Sized> AvroSerializer<T> {
    /// Writes with `schema`, registered under the subject on first use
    /// (see [`auto_register`](Self::auto_register)).
    pub fn new(registry: SchemaRegistry, schema: Schema) -> Self {
        AvroSerializer {
            core: given(registry, schema),
            _t: PhantomData,
        }
    }

    /// Writes with the latest schema registered under the subject (fetched once
    /// per subject). `record_name` is needed for the record name strategies.
    pub fn latest(registry: SchemaRegistry, record_name: Option<String>) -> Self {
        AvroSerializer {
            core: latest(registry, record_name),
            _t: PhantomData,
        }
    }

    encoder_builders!();
}

impl<T> Encoder<T> for AvroSerializer<T>
where
    T: serde::Serialize + Sync + ?Sized,
{
    async fn encode(&self, topic: &str, value: &T) -> Result<Bytes, EncodeError> {
        let v = apache_avro::to_value(value).map_err(|_| EncodeError::Invalid {
            topic: topic.to_string(),
            target: std::any::type_name::<T>(),
            detail: "serde could not turn the value into an Avro value".into(),
        })?;
        self.core
            .encode_value(topic, v, std::any::type_name::<T>())
            .await
    }
}

/// Encodes generic Avro [`Value`]s in the Confluent wire format.
pub struct GenericAvroSerializer {
    core: EncodeCore,
}

impl std::fmt::Debug for GenericAvroSerializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenericAvroSerializer")
            .field("part", &self.core.part)
            .field("strategy", &self.core.strategy)
            .finish_non_exhaustive()
    }
}

impl GenericAvroSerializer {
    /// Writes with `schema` (see [`AvroSerializer::new`]).
    pub fn new(registry: SchemaRegistry, schema: Schema) -> Self {
        GenericAvroSerializer {
            core: given(registry, schema),
        }
    }

    /// Writes with the subject's latest schema (see [`AvroSerializer::latest`]).
    pub fn latest(registry: SchemaRegistry, record_name: Option<String>) -> Self {
        GenericAvroSerializer {
            core: latest(registry, record_name),
        }
    }

    encoder_builders!();
}

impl Encoder<Value> for GenericAvroSerializer {
    async fn encode(&self, topic: &str, value: &Value) -> Result<Bytes, EncodeError> {
        self.core
            .encode_value(topic, value.clone(), "apache_avro::types::Value")
            .await
    }
}
