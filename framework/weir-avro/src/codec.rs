//! Avro codecs (consumer side) and serializers (producer and outbox side).

use std::collections::HashMap;
use std::io::Cursor;
use std::marker::PhantomData;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::error::Details;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use weir::codec::{Codec, DecodeError, EncodeError, Encoder, Part};
use weir::message::RawMessage;

use crate::registry::{Registration, RegistryError, SchemaRegistry, schema_full_name};

/// The magic byte that starts every schema-registry frame.
pub const MAGIC_BYTE: u8 = 0;
/// Magic byte plus 4-byte big-endian schema id.
pub const HEADER_LEN: usize = 5;

/// Splits a Confluent wire-format frame into schema id and body.
///
/// ```
/// use weir_avro::split_frame;
/// assert_eq!(split_frame(&[0, 0, 0, 1, 2, 6]).unwrap(), (258, &[6u8][..]));
/// ```
pub fn split_frame(bytes: &[u8]) -> Result<(u32, &[u8]), FrameError> {
    match bytes.first() {
        None => Err(FrameError::Empty),
        Some(&b) if b != MAGIC_BYTE => Err(FrameError::WrongMagicByte(b)),
        Some(_) if bytes.len() < HEADER_LEN => Err(FrameError::ShortHeader(bytes.len())),
        Some(_) => {
            let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
            Ok((id, &bytes[HEADER_LEN..]))
        }
    }
}

/// Prefixes `body` with the magic byte and `id`.
pub fn frame(id: u32, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_LEN + body.len());
    b.put_u8(MAGIC_BYTE);
    b.put_u32(id);
    b.put_slice(body);
    b.freeze()
}

/// Why bytes are not a schema-registry frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No bytes at all.
    #[error("0 bytes: a schema-registry frame needs at least 5 (magic byte and 4-byte schema id)")]
    Empty,
    /// The first byte is not 0.
    #[error("first byte is {0:#04x}, not the magic byte 0")]
    WrongMagicByte(u8),
    /// Fewer than 5 bytes.
    #[error(
        "{0} bytes: a schema-registry frame needs at least 5 (magic byte and 4-byte schema id)"
    )]
    ShortHeader(usize),
}

/// How the subject a schema is registered under is named (Confluent's
/// subject name strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectNameStrategy {
    /// `<topic>-key` / `<topic>-value` (Confluent's default).
    #[default]
    TopicName,
    /// The record's full name: several topics share one subject.
    RecordName,
    /// `<topic>-<record full name>`: several record types on one topic.
    TopicRecordName,
}

impl SubjectNameStrategy {
    /// The subject for `topic`, `part` and the schema's full name.
    pub fn subject(
        self,
        topic: &str,
        part: Part,
        record: Option<&str>,
    ) -> Result<String, EncodeError> {
        let need = || EncodeError::Invalid {
            topic: topic.to_string(),
            target: "subject",
            detail: format!(
                "{self:?} needs a named schema (record, enum or fixed); use TopicName for primitive schemas"
            ),
        };
        Ok(match self {
            SubjectNameStrategy::TopicName => format!("{topic}-{}", part.as_str()),
            SubjectNameStrategy::RecordName => record.ok_or_else(need)?.to_string(),
            SubjectNameStrategy::TopicRecordName => {
                format!("{topic}-{}", record.ok_or_else(need)?)
            }
        })
    }
}

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
        let writer = self.registry.schema_by_id(id).await.map_err(|e| match e {
            RegistryError::NotFound { .. } => DecodeError::UnknownSchemaId { part, id },
            RegistryError::Unsupported { detail, .. } => DecodeError::IncompatibleSchema {
                part,
                writer_id: id,
                detail,
            },
            RegistryError::Unavailable { detail, .. }
            | RegistryError::Rejected { detail, .. }
            | RegistryError::Config(detail) => DecodeError::Unavailable {
                what: format!("schema registry {}", self.registry.url()),
                detail,
            },
        })?;
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

enum ReadError {
    Avro(apache_avro::Error),
    Trailing(usize),
}

fn read_datum(writer: &Schema, reader: Option<&Schema>, body: &[u8]) -> Result<Value, ReadError> {
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
        let map_err = |e: RegistryError, subject: &str| match e {
            RegistryError::NotFound { detail, .. } => EncodeError::SchemaRejected {
                subject: subject.to_string(),
                detail: format!(
                    "not registered ({detail}): register it in your deployment pipeline or enable auto_register"
                ),
            },
            RegistryError::Rejected { detail, .. } => EncodeError::SchemaRejected {
                subject: subject.to_string(),
                detail: format!(
                    "{detail}: the schema breaks the subject's compatibility rules (add defaults to new fields)"
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
        };
        let reg = match &self.source {
            WriterSource::Given {
                schema,
                raw,
                registration,
            } => self
                .registry
                .writer_id(&subject, schema, raw, *registration)
                .await
                .map_err(|e| map_err(e, &subject))?,
            WriterSource::Latest { cache } => {
                if let Some(r) = cache.lock().get(&subject) {
                    return Ok((subject, r.clone()));
                }
                let r = self
                    .registry
                    .latest(&subject)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_split_and_join() {
        assert_eq!(&frame(7, &[1, 2])[..], &[0, 0, 0, 0, 7, 1, 2]);
        assert_eq!(split_frame(&[]), Err(FrameError::Empty));
        assert_eq!(
            split_frame(b"{\"a\":1}"),
            Err(FrameError::WrongMagicByte(b'{'))
        );
        assert_eq!(split_frame(&[0, 0, 1]), Err(FrameError::ShortHeader(3)));
        assert_eq!(split_frame(&[0, 0, 0, 0, 1]).unwrap(), (1, &[][..]));
    }

    #[test]
    fn subjects() {
        let s = SubjectNameStrategy::TopicName;
        assert_eq!(
            s.subject("clicks", Part::Value, None).unwrap(),
            "clicks-value"
        );
        assert_eq!(s.subject("clicks", Part::Key, None).unwrap(), "clicks-key");
        let r = SubjectNameStrategy::RecordName;
        assert_eq!(
            r.subject("clicks", Part::Value, Some("a.Click")).unwrap(),
            "a.Click"
        );
        assert!(r.subject("clicks", Part::Value, None).is_err());
        let tr = SubjectNameStrategy::TopicRecordName;
        assert_eq!(
            tr.subject("clicks", Part::Value, Some("a.Click")).unwrap(),
            "clicks-a.Click"
        );
    }

    const FUZZ_SCHEMAS: &[&str] = &[
        r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":"long"},{"name":"s","type":"string"},
            {"name":"u","type":["null","string"]},{"name":"m","type":{"type":"map","values":"bytes"}}]}"#,
        r#"{"type":"record","name":"N","fields":[
            {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
            {"name":"f","type":{"type":"fixed","name":"F","size":4}},
            {"name":"arr","type":{"type":"array","items":"double"}},
            {"name":"next","type":["null","N"]}]}"#,
        r#"["null","int","string",{"type":"array","items":"string"}]"#,
    ];

    fn fuzz_cases() -> ProptestConfig {
        let n = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        ProptestConfig::with_cases(n)
    }

    proptest! {
        #![proptest_config(fuzz_cases())]

        /// Any bytes: split_frame never panics, and frame/split round-trips.
        #[test]
        fn frame_round_trip(id in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..64),
                            junk in proptest::collection::vec(any::<u8>(), 0..16)) {
            let f = frame(id, &body);
            let (i, b) = split_frame(&f).unwrap();
            prop_assert_eq!(i, id);
            prop_assert_eq!(b, &body[..]);
            let _ = split_frame(&junk);
        }

        /// Any body bytes read with real schemas (records, unions, maps, arrays,
        /// enums, fixed, recursion), with and without a reader schema: an error
        /// or a value, never a panic, and allocations bounded by the limit.
        #[test]
        fn datum_reader_never_panics(which in 0..FUZZ_SCHEMAS.len(), body in proptest::collection::vec(any::<u8>(), 0..96)) {
            crate::set_max_allocation_bytes(crate::DEFAULT_MAX_ALLOCATION_BYTES);
            let schema = Schema::parse_str(FUZZ_SCHEMAS[which]).unwrap();
            let _ = read_datum(&schema, None, &body);
            let _ = read_datum(&schema, Some(&schema), &body);
        }
    }
}
