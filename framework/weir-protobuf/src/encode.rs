//! Encoding: the writer schema id (registered with its imports as
//! references, or looked up), the frame, the message-index list, the body.

use std::marker::PhantomData;

use bytes::Bytes;
use weir::codec::{EncodeError, Encoder, Part};
use weir_registry::{
    MAGIC_BYTE, NewSchema, Registration, SchemaFormat, SchemaRegistry, SubjectNameStrategy,
};

use crate::index::encode_indexes;
use crate::schema::{ProtoSchema, ProtoSchemaError};

/// Encodes a `prost` type `T` in Confluent's Protobuf wire format, byte for
/// byte as Confluent's own serializers do: magic byte, schema id, the
/// message-index list of `T` in its file, the body.
///
/// The schema is the `.proto` file that defines `T` (and its imports);
/// imports are registered first under subjects named as the import paths
/// (Confluent's default reference strategy), then the file with references
/// to them. With [`auto_register(false)`](Self::auto_register) all of them
/// must already be registered.
pub struct ProtobufSerializer<T> {
    registry: SchemaRegistry,
    schema: NewSchema,
    indexes: Vec<u8>,
    part: Part,
    strategy: SubjectNameStrategy,
    registration: Registration,
    _t: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for ProtobufSerializer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtobufSerializer")
            .field("registry", &self.registry.url())
            .field("message", &self.schema.name)
            .field("part", &self.part)
            .finish()
    }
}

impl<T: prost::Message + prost::Name> ProtobufSerializer<T> {
    /// A value serializer for `T`, defined in `schema`. Fails when the files
    /// do not compile or do not define `T` (by its full name).
    pub fn new(registry: SchemaRegistry, schema: ProtoSchema) -> Result<Self, ProtoSchemaError> {
        let path = schema.message_indexes(&T::full_name())?;
        let mut indexes = Vec::new();
        encode_indexes(&path, &mut indexes);
        let mut new = NewSchema::new(SchemaFormat::Protobuf, schema.source());
        new.name = Some(T::full_name());
        new.references = schema.references()?;
        Ok(ProtobufSerializer {
            registry,
            schema: new,
            indexes,
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

    /// The subject name strategy (default [`SubjectNameStrategy::TopicName`];
    /// the record name is the message's full name).
    pub fn subject_name_strategy(mut self, strategy: SubjectNameStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// With `false`, the schema and its imports must already be registered
    /// (schemas registered by the deployment pipeline). Default `true`.
    pub fn auto_register(mut self, yes: bool) -> Self {
        self.registration = if yes {
            Registration::Auto
        } else {
            Registration::LookupOnly
        };
        self
    }
}

impl<T: prost::Message + prost::Name> Encoder<T> for ProtobufSerializer<T> {
    async fn encode(&self, topic: &str, value: &T) -> Result<Bytes, EncodeError> {
        let subject = self
            .strategy
            .subject(topic, self.part, self.schema.name.as_deref())?;
        let id = self
            .registry
            .register(&subject, &self.schema, self.registration)
            .await
            .map_err(|e| e.into_encode_error(&subject))?
            .id;
        let mut out = Vec::with_capacity(5 + self.indexes.len() + value.encoded_len());
        out.push(MAGIC_BYTE);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&self.indexes);
        value.encode(&mut out).map_err(|e| EncodeError::Invalid {
            topic: topic.to_string(),
            target: std::any::type_name::<T>(),
            detail: e.to_string(),
        })?;
        Ok(Bytes::from(out))
    }
}
