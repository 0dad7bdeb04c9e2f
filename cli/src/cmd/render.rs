//! Schema-registry payloads rendered as JSON for `weir dlq show --payload
//! --schema-registry URL`: Avro, Protobuf and JSON Schema, found by the
//! schema id in the frame. Only ever called when the operator asked for
//! payloads.

use weir::codec::{Codec, DecodeError, Part};
use weir::message::RawMessage;
use weir_avro::GenericAvroCodec;
use weir_protobuf::DynamicProtobufCodec;
use weir_registry::{SchemaFormat, SchemaRegistry, split_frame};

/// `{"schema_id", "format", "value"}`, or `{"error", "error_class"}` when
/// the bytes are not a schema-registry payload this tool can read.
pub(crate) async fn render(
    registry: &SchemaRegistry,
    raw: &RawMessage,
    part: Part,
) -> Option<serde_json::Value> {
    let bytes = part.bytes(raw)?;
    let failed =
        |e: DecodeError| serde_json::json!({ "error": e.to_string(), "error_class": e.class() });
    let id = match split_frame(bytes) {
        Ok((id, _)) => id,
        Err(e) => {
            return Some(serde_json::json!({
                "error": format!("not a schema-registry payload: {e}"),
                "error_class": "decode_wrong_magic_byte",
            }));
        }
    };
    let format = match registry.schema_by_id(id).await {
        Ok(s) => s.format.clone(),
        Err(e) => return Some(failed(e.into_decode_error(part, id))),
    };
    let value =
        match &format {
            SchemaFormat::Avro => {
                let codec = GenericAvroCodec::new(registry.clone());
                let codec = if part == Part::Key {
                    codec.for_key()
                } else {
                    codec
                };
                codec.decode(raw).await.and_then(|v| {
                    serde_json::Value::try_from(v).map_err(|e| DecodeError::Other(e.to_string()))
                })
            }
            SchemaFormat::Protobuf => {
                let codec = DynamicProtobufCodec::new(registry.clone());
                let codec = if part == Part::Key {
                    codec.for_key()
                } else {
                    codec
                };
                codec.decode(raw).await.and_then(|m| {
                    serde_json::to_value(&m).map_err(|e| DecodeError::Other(e.to_string()))
                })
            }
            // Shown as written, even when it breaks its schema (that may be
            // why it is in the DLQ).
            SchemaFormat::Json => serde_json::from_slice(&bytes[weir_registry::HEADER_LEN..])
                .map_err(|e| DecodeError::InvalidBody {
                    part,
                    writer_id: id,
                    detail: format!("not JSON (line {}, column {})", e.line(), e.column()),
                }),
            SchemaFormat::Other(f) => Err(DecodeError::Other(format!(
                "schema id {id} is of format {f}, which weir cannot render"
            ))),
        };
    Some(match value {
        Ok(v) => serde_json::json!({ "schema_id": id, "format": format.as_str(), "value": v }),
        Err(e) => failed(e),
    })
}
