//! The Confluent wire format's frame (magic byte, schema id) and the subject name strategies.

use bytes::{BufMut, Bytes, BytesMut};
use weir::codec::{EncodeError, Part};

/// The magic byte that starts every schema-registry frame.
pub const MAGIC_BYTE: u8 = 0;
/// Magic byte plus 4-byte big-endian schema id.
pub const HEADER_LEN: usize = 5;

/// Splits a Confluent wire-format frame into schema id and body.
///
/// ```
/// use weir_registry::split_frame;
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
