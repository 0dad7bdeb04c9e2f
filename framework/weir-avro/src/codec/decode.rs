//! Decoding: the Confluent frame, the writer schema (cached), an optional reader schema with a cached compatibility verdict per writer id, the datum.

use crate::registry::SchemaRegistry;
use apache_avro::Schema;
use apache_avro::error::Details;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Cursor;
use std::marker::PhantomData;
use std::sync::Arc;
use weir::codec::{Codec, DecodeError, Part};
use weir::message::RawMessage;

use super::*;

/// Shared decoding: frame, writer schema (cached), optional reader schema
/// with a cached compatibility verdict per writer id, datum.
struct DecodeCore {
    registry: SchemaRegistry,
    part: Part,
    reader: Option<Arc<Schema>>,
    compat: Mutex<HashMap<u32, Result<(), String>>>,
    verbose_errors: bool,
}

impl DecodeCore {
    fn new(registry: SchemaRegistry) -> Self {
        crate::set_max_allocation_bytes(crate::DEFAULT_MAX_ALLOCATION_BYTES);
        DecodeCore {
            registry,
            part: Part::Value,
            reader: None,
            compat: Mutex::new(HashMap::new()),
            verbose_errors: false,
        }
    }

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
        let writer = crate::registry::schema_by_id(&self.registry, id)
            .await
            .map_err(|e| e.into_decode_error(part, id))?;
        if let Some(reader) = &self.reader {
            self.check_compatible(id, &writer, reader)?;
        }
        match read_datum(&writer, self.reader.as_deref(), body) {
            Ok(v) => Ok(v),
            Err(e) if self.reader.is_some() && read_datum(&writer, None, body).is_ok() => {
                // Valid for its writer, but not resolvable to the reader (an enum
                // symbol the reader lacks, say): the schemas disagree.
                Err(DecodeError::IncompatibleSchema {
                    part,
                    writer_id: id,
                    detail: self.detail(&e, "the value cannot be resolved to the reader schema"),
                })
            }
            Err(e) => Err(self.body_error(id, e)),
        }
    }

    fn check_compatible(
        &self,
        id: u32,
        writer: &Schema,
        reader: &Schema,
    ) -> Result<(), DecodeError> {
        let verdict = {
            let mut m = self.compat.lock();
            m.entry(id)
                .or_insert_with(|| {
                    SchemaCompatibility::can_read(writer, reader)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .clone()
        };
        verdict.map_err(|detail| DecodeError::IncompatibleSchema {
            part: self.part,
            writer_id: id,
            detail,
        })
    }

    fn body_error(&self, id: u32, e: ReadError) -> DecodeError {
        let part = self.part;
        match e {
            ReadError::Trailing(n) => DecodeError::InvalidBody {
                part,
                writer_id: id,
                detail: format!(
                    "{n} bytes left after the datum: the body does not match schema id {id}"
                ),
            },
            ReadError::Avro(e) => {
                if is_eof(&e) {
                    return DecodeError::Truncated {
                        part,
                        detail: format!(
                            "the Avro body ends before the datum for schema id {id} is complete"
                        ),
                    };
                }
                let safe = match e.details() {
                    Details::MemoryAllocation { desired, maximum } => format!(
                        "a length prefix asks for {} bytes (limit {maximum})",
                        desired.map_or("too many".to_string(), |d| d.to_string())
                    ),
                    Details::GetUnionVariant {
                        index,
                        num_variants,
                    } => format!("union branch {index} does not exist ({num_variants} branches)"),
                    Details::ConvertToUtf8(_) | Details::ConvertToUtf8Error(_) => {
                        "a string is not valid UTF-8".into()
                    }
                    Details::BoolValue(b) => format!("invalid boolean byte {b}"),
                    Details::IntegerOverflow => "an integer overflows".into(),
                    _ => "the bytes are not a valid Avro encoding".into(),
                };
                DecodeError::InvalidBody {
                    part,
                    writer_id: id,
                    detail: if self.verbose_errors {
                        format!("{safe} ({e})")
                    } else {
                        safe
                    },
                }
            }
        }
    }

    /// A detail message: the library's text only with `verbose_errors`, as it
    /// may quote field values.
    fn detail(&self, e: &ReadError, safe: &str) -> String {
        match (self.verbose_errors, e) {
            (true, ReadError::Avro(e)) => format!("{safe}: {e}"),
            _ => safe.to_string(),
        }
    }
}

pub(super) enum ReadError {
    Avro(apache_avro::Error),
    Trailing(usize),
}

pub(super) fn read_datum(
    writer: &Schema,
    reader: Option<&Schema>,
    body: &[u8],
) -> Result<Value, ReadError> {
    let mut cursor = Cursor::new(body);
    let v = GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()
        .and_then(|r| r.read_value(&mut cursor))
        .map_err(ReadError::Avro)?;
    let left = body.len() - cursor.position() as usize;
    if left > 0 {
        return Err(ReadError::Trailing(left));
    }
    Ok(v)
}

fn is_eof(e: &apache_avro::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::UnexpectedEof
        {
            return true;
        }
        src = s.source();
    }
    false
}

fn parse_reader(schema: &str) -> Result<Arc<Schema>, apache_avro::Error> {
    Schema::parse_str(schema).map(Arc::new)
}

/// Decodes Avro (Confluent wire format) into a serde type `T`.
///
/// The writer schema comes from the registry by the id in each message; with
/// a [`reader_schema`](Self::reader_schema) the value is resolved to it first
/// (schema evolution: a consumer on v2 reads v1 data, filling defaults).
///
/// Failures are terminal and classified (see [`DecodeError::class`]):
/// wrong magic byte, truncated frame or body, unknown schema id, incompatible
/// schema, invalid body, value not fitting `T`. A registry that cannot be
/// reached is [`DecodeError::Unavailable`]: retried in place, never DLQ'd.
pub struct AvroCodec<T> {
    core: DecodeCore,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for AvroCodec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroCodec")
            .field("target", &std::any::type_name::<T>())
            .field("part", &self.core.part)
            .field("registry", &self.core.registry.url())
            .field("reader_schema", &self.core.reader.is_some())
            .finish()
    }
}

macro_rules! decoder_builders {
    () => {
        /// Decodes the message key instead of the value.
        pub fn for_key(mut self) -> Self {
            self.core.part = Part::Key;
            self
        }

        /// Resolves every value to this reader schema (schema evolution).
        pub fn reader_schema(mut self, schema: Schema) -> Self {
            self.core.reader = Some(Arc::new(schema));
            self
        }

        /// Parses `schema` (JSON) as the reader schema.
        pub fn reader_schema_str(self, schema: &str) -> Result<Self, apache_avro::Error> {
            let s = parse_reader(schema)?;
            Ok(self.reader_schema((*s).clone()))
        }

        /// Adds the Avro library's own error text to decode errors. It can quote
        /// field values (personal data): off by default, for debugging only.
        pub fn verbose_errors(mut self, yes: bool) -> Self {
            self.core.verbose_errors = yes;
            self
        }
    };
}

impl<T> AvroCodec<T> {
    /// A value codec for `T` on `registry`.
    pub fn new(registry: SchemaRegistry) -> Self {
        AvroCodec {
            core: DecodeCore::new(registry),
            _t: PhantomData,
        }
    }

    decoder_builders!();
}

impl<T> Codec for AvroCodec<T>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    type Value = T;

    async fn decode(&self, message: &RawMessage) -> Result<T, DecodeError> {
        let v = self.core.decode(message).await?;
        apache_avro::from_value::<T>(&v).map_err(|e| DecodeError::TypeMismatch {
            part: self.core.part,
            target: std::any::type_name::<T>(),
            detail: if self.core.verbose_errors {
                e.to_string()
            } else {
                "the decoded record does not fit the Rust type (field names or types differ; enable verbose_errors to see the library's message)".into()
            },
        })
    }
}

/// Decodes Avro (Confluent wire format) into generic [`Value`]s, for
/// processors that handle many record types or forward data unchanged.
pub struct GenericAvroCodec {
    core: DecodeCore,
}

impl std::fmt::Debug for GenericAvroCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenericAvroCodec")
            .field("part", &self.core.part)
            .field("registry", &self.core.registry.url())
            .field("reader_schema", &self.core.reader.is_some())
            .finish()
    }
}

impl GenericAvroCodec {
    /// A value codec on `registry`.
    pub fn new(registry: SchemaRegistry) -> Self {
        GenericAvroCodec {
            core: DecodeCore::new(registry),
        }
    }

    decoder_builders!();
}

impl Codec for GenericAvroCodec {
    type Value = Value;

    async fn decode(&self, message: &RawMessage) -> Result<Value, DecodeError> {
        self.core.decode(message).await
    }
}
