//! Decoding: the frame, the message-index list, the writer schema (fetched
//! once per id), a check that the writer's message is the one asked for, the body.

use std::marker::PhantomData;

use prost_reflect::{DynamicMessage, MessageDescriptor};
use weir::codec::{Codec, DecodeError, Part};
use weir::message::RawMessage;
use weir_registry::{FrameError, SchemaRegistry, split_frame};

use crate::index::{IndexError, decode_indexes};
use crate::schema::{message_at, writer};

/// Frame, indexes and the writer's message descriptor.
struct DecodeCore {
    registry: SchemaRegistry,
    part: Part,
}

/// A frame read up to the body.
struct Framed<'a> {
    id: u32,
    descriptor: MessageDescriptor,
    body: &'a [u8],
}

impl DecodeCore {
    async fn frame<'a>(&self, message: &'a RawMessage) -> Result<Framed<'a>, DecodeError> {
        let part = self.part;
        let bytes = part.bytes(message).ok_or(DecodeError::Missing(part))?;
        let (id, rest) = split_frame(bytes).map_err(|e| match e {
            FrameError::WrongMagicByte(found) => DecodeError::WrongMagicByte { part, found },
            e => DecodeError::Truncated {
                part,
                detail: e.to_string(),
            },
        })?;
        let (indexes, body) = decode_indexes(rest).map_err(|e| match e {
            IndexError::Truncated => DecodeError::Truncated {
                part,
                detail: e.to_string(),
            },
            e => DecodeError::UnknownMessageIndex {
                part,
                writer_id: id,
                indexes: "?".into(),
                detail: e.to_string(),
            },
        })?;
        let w = writer(&self.registry, id)
            .await
            .map_err(|e| e.into_decode_error(part, id))?;
        let descriptor = message_at(&w.pool, &w.file, &indexes).ok_or_else(|| {
            DecodeError::UnknownMessageIndex {
                part,
                writer_id: id,
                indexes: format!("{indexes:?}"),
                detail: "the writer schema has no message at that path".into(),
            }
        })?;
        Ok(Framed {
            id,
            descriptor,
            body,
        })
    }
}

/// Decodes Confluent-framed Protobuf into a `prost` type `T`.
///
/// The writer schema's message (named by the frame's message-index list)
/// must be `T`'s message (same full name), else the message is terminal with
/// `decode_type_mismatch`: a topic carrying several message types wants
/// [`DynamicProtobufCodec`] or one codec per type behind `ByTopic`. Fields
/// the writer has and `T` lacks are skipped, fields `T` has and the writer
/// lacks keep their defaults (Protobuf's own evolution rules).
pub struct ProtobufCodec<T> {
    core: DecodeCore,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ProtobufCodec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtobufCodec")
            .field("registry", &self.core.registry.url())
            .field("part", &self.core.part)
            .finish()
    }
}

impl<T: prost::Message + prost::Name + Default> ProtobufCodec<T> {
    /// A value codec reading writer schemas from `registry`.
    pub fn new(registry: SchemaRegistry) -> Self {
        ProtobufCodec {
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

impl<T: prost::Message + prost::Name + Default + 'static> Codec for ProtobufCodec<T> {
    type Value = T;

    async fn decode(&self, message: &RawMessage) -> Result<T, DecodeError> {
        let f = self.core.frame(message).await?;
        let part = self.core.part;
        if f.descriptor.full_name() != T::full_name() {
            return Err(DecodeError::TypeMismatch {
                part,
                target: std::any::type_name::<T>(),
                detail: format!(
                    "schema id {} names message `{}`, not `{}`",
                    f.id,
                    f.descriptor.full_name(),
                    T::full_name()
                ),
            });
        }
        T::decode(f.body).map_err(|e| DecodeError::InvalidBody {
            part,
            writer_id: f.id,
            detail: format!("not a valid `{}`: {e}", T::full_name()),
        })
    }
}

/// Decodes Confluent-framed Protobuf of any message type into a
/// [`DynamicMessage`] described by the writer schema: for tools, and topics
/// that carry several message types. `serde_json::to_value(&message)`
/// renders it as Protobuf's canonical JSON.
pub struct DynamicProtobufCodec {
    core: DecodeCore,
}

impl std::fmt::Debug for DynamicProtobufCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicProtobufCodec")
            .field("registry", &self.core.registry.url())
            .field("part", &self.core.part)
            .finish()
    }
}

impl DynamicProtobufCodec {
    /// A value codec reading writer schemas from `registry`.
    pub fn new(registry: SchemaRegistry) -> Self {
        DynamicProtobufCodec {
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

impl Codec for DynamicProtobufCodec {
    type Value = DynamicMessage;

    async fn decode(&self, message: &RawMessage) -> Result<DynamicMessage, DecodeError> {
        let f = self.core.frame(message).await?;
        let name = f.descriptor.full_name().to_string();
        DynamicMessage::decode(f.descriptor, f.body).map_err(|e| DecodeError::InvalidBody {
            part: self.core.part,
            writer_id: f.id,
            detail: format!("not a valid `{name}`: {e}"),
        })
    }
}
