//! Why a payload could not be decoded, or a value encoded: classified, and
//! never quoting payload bytes.

use super::Part;

/// Why a payload could not be decoded.
///
/// Every variant but [`Unavailable`](Self::Unavailable) is terminal: the
/// message goes to the failure sink with [`class`](Self::class) as its error
/// class. Messages never quote payload bytes (they may hold personal data).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message has no payload and the codec needs one.
    #[error("message has no {0} (null key or tombstone) and the codec needs one")]
    Missing(Part),
    /// The payload is not valid UTF-8.
    #[error("payload is not valid UTF-8 at byte {valid_up_to}")]
    InvalidUtf8 {
        /// Bytes that were valid.
        valid_up_to: usize,
    },
    /// JSON could not be parsed into the target type.
    #[cfg(feature = "json")]
    #[error("payload is not valid JSON for {target}: {message} (line {line}, column {column})")]
    Json {
        /// The Rust type expected.
        target: &'static str,
        /// The parser's message (never the payload).
        message: String,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
    /// Schema-registry framing: the first byte is not the magic byte 0, so the
    /// bytes were not written by a schema-registry serializer (plain JSON,
    /// another format, or a producer with the wrong serializer).
    #[error(
        "{part} does not start with the schema registry magic byte 0 (found {found:#04x}): it was not written with a schema-registry serializer"
    )]
    WrongMagicByte {
        /// Key or value.
        part: Part,
        /// The first byte found.
        found: u8,
    },
    /// The bytes end before the frame or the body is complete.
    #[error("{part} is truncated: {detail}")]
    Truncated {
        /// Key or value.
        part: Part,
        /// What was cut short (never the bytes themselves).
        detail: String,
    },
    /// The registry has no schema with the id the message names (HTTP 404 with
    /// error code 40403): written against another registry, or the schema was
    /// hard-deleted.
    #[error(
        "{part} names schema id {id}, which the schema registry does not know (written against another registry, or the schema was hard-deleted)"
    )]
    UnknownSchemaId {
        /// Key or value.
        part: Part,
        /// The schema id from the frame.
        id: u32,
    },
    /// The writer's schema cannot be read with the consumer's reader schema.
    #[error(
        "{part} was written with schema id {writer_id}, which the reader schema cannot read: {detail}"
    )]
    IncompatibleSchema {
        /// Key or value.
        part: Part,
        /// Writer schema id.
        writer_id: u32,
        /// Why (field names and types, never values).
        detail: String,
    },
    /// The body is not a valid encoding for its writer schema (corrupt bytes,
    /// trailing bytes, or a schema id that does not match the body).
    #[error("{part} body is not valid for writer schema id {writer_id}: {detail}")]
    InvalidBody {
        /// Key or value.
        part: Part,
        /// Writer schema id.
        writer_id: u32,
        /// What is wrong (never the bytes).
        detail: String,
    },
    /// Protobuf: the frame's message-index list names no message in the
    /// writer schema (or cannot be read).
    #[error("{part} names message index {indexes} of schema id {writer_id}: {detail}")]
    UnknownMessageIndex {
        /// Key or value.
        part: Part,
        /// Writer schema id.
        writer_id: u32,
        /// The index path as read, e.g. `[1, 0]`.
        indexes: String,
        /// Why it names no message.
        detail: String,
    },
    /// JSON Schema: the payload is valid JSON that breaks its writer schema.
    #[error("{part} breaks JSON schema id {writer_id}: {detail}")]
    SchemaViolation {
        /// Key or value.
        part: Part,
        /// Writer schema id.
        writer_id: u32,
        /// Where and which rule (instance and schema paths, never values).
        detail: String,
    },
    /// The decoded value does not fit the Rust type the processor asked for.
    #[error("{part} does not fit {target}: {detail}")]
    TypeMismatch {
        /// Key or value.
        part: Part,
        /// The Rust type expected.
        target: &'static str,
        /// What did not fit (field names, never values).
        detail: String,
    },
    /// A dependency of the codec (the schema registry) cannot be reached or
    /// refused the request. Not the message's fault: retried in place (see
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)), never sent to the DLQ.
    #[error("{what} is unavailable: {detail}")]
    Unavailable {
        /// What could not be reached, e.g. `schema registry http://sr:8081`.
        what: String,
        /// The error, with what to check.
        detail: String,
    },
    /// Any other codec's failure.
    #[error("{0}")]
    Other(String),
}

impl DecodeError {
    /// The error class used in metrics, logs and the `weir-error-class` header:
    /// `decode` for plain format errors, `decode_<reason>` for the
    /// schema-registry classes, `schema_registry_unavailable` for outages.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::WrongMagicByte { .. } => "decode_wrong_magic_byte",
            DecodeError::Truncated { .. } => "decode_truncated",
            DecodeError::UnknownSchemaId { .. } => "decode_unknown_schema_id",
            DecodeError::IncompatibleSchema { .. } => "decode_incompatible_schema",
            DecodeError::InvalidBody { .. } => "decode_invalid_body",
            DecodeError::TypeMismatch { .. } => "decode_type_mismatch",
            DecodeError::UnknownMessageIndex { .. } => "decode_unknown_message_index",
            DecodeError::SchemaViolation { .. } => "decode_schema_violation",
            DecodeError::Unavailable { .. } => "schema_registry_unavailable",
            _ => "decode",
        }
    }

    /// True when retrying can help ([`Unavailable`](Self::Unavailable)).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DecodeError::Unavailable { .. })
    }
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The value does not fit the schema or format.
    #[error("cannot encode {target} for topic `{topic}`: {detail}")]
    Invalid {
        /// Topic the bytes were for.
        topic: String,
        /// The Rust type encoded.
        target: &'static str,
        /// What did not fit (field names, never values).
        detail: String,
    },
    /// The schema registry refused the schema (incompatible with the subject's
    /// compatibility rules, or not registered while auto-registration is off).
    #[error("schema registry refused the schema for subject `{subject}`: {detail}")]
    SchemaRejected {
        /// The subject.
        subject: String,
        /// The registry's answer and what to do.
        detail: String,
    },
    /// A dependency (the schema registry) cannot be reached: retry later.
    #[error("{what} is unavailable: {detail}")]
    Unavailable {
        /// What could not be reached.
        what: String,
        /// The error.
        detail: String,
    },
}

impl EncodeError {
    /// True when retrying can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, EncodeError::Unavailable { .. })
    }
}
