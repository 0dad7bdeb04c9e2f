//! # weir-protobuf: Protobuf payloads through a Confluent-compatible schema registry
//!
//! Messages use Confluent's Protobuf wire format: magic byte `0`, the writer
//! schema's id as 4 bytes big-endian, the message-index list (which message
//! of the `.proto` file the body is), then the Protobuf body. The bytes are
//! the ones Confluent's own serializers (Java, Python, Go) write and read;
//! the compatibility tests run Confluent's Python client against the same
//! Kafka and registry.
//!
//! - Consumers: [`ProtobufCodec<T>`] for `prost` types, [`DynamicProtobufCodec`]
//!   for any message type (tools, topics with several types), `.for_key()` for keys.
//! - Producers and the outbox: [`ProtobufSerializer<T>`] (any [`weir::Encoder`]),
//!   given the `.proto` file that defines `T` and its imports ([`ProtoSchema`]);
//!   imports are registered as schema references.
//! - Writer schemas are fetched by id once per registry client, with their
//!   references, as `.proto` text or as the base64 `FileDescriptorProto`
//!   Confluent's Python client registers.
//! - Decoding failures are terminal and classified (the message goes to the
//!   DLQ): `decode_wrong_magic_byte`, `decode_truncated`,
//!   `decode_unknown_schema_id`, `decode_unknown_message_index`,
//!   `decode_incompatible_schema` (the id is not a usable Protobuf schema),
//!   `decode_type_mismatch` (another message type), `decode_invalid_body`.
//!   An unreachable registry is `schema_registry_unavailable`: retried in
//!   place, never the DLQ.
//!
//! ```no_run
//! use weir::{Consumer, ConsumerConfig, Message, ProcessError, Record, processor_fn};
//! use weir_protobuf::{ProtoSchema, ProtobufCodec, ProtobufSerializer};
//! use weir_registry::SchemaRegistry;
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct Click {
//!     #[prost(string, tag = "1")]
//!     link: String,
//!     #[prost(int64, tag = "2")]
//!     at_ms: i64,
//! }
//! impl prost::Name for Click {
//!     const NAME: &'static str = "Click";
//!     const PACKAGE: &'static str = "shop";
//! }
//!
//! const CLICK_PROTO: &str =
//!     "syntax = \"proto3\"; package shop; message Click { string link = 1; int64 at_ms = 2; }";
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = SchemaRegistry::builder("http://registry:8081").build()?;
//! let serializer =
//!     ProtobufSerializer::<Click>::new(registry.clone(), ProtoSchema::new("shop/click.proto", CLICK_PROTO))?;
//! let producer = weir::Producer::new("kafka:9092")?;
//! let click = Click { link: "l1".into(), at_ms: 1 };
//! producer
//!     .send(Record::to("clicks").key("l1").value_with(&serializer, &click).await?)
//!     .await?;
//!
//! let consumer = Consumer::builder(ConsumerConfig::new("kafka:9092", "stats", &["clicks"]))
//!     .codec(ProtobufCodec::<Click>::new(registry))
//!     .build(processor_fn(|m: Message<Click>| async move {
//!         println!("{}", m.value().link);
//!         Ok::<_, ProcessError>(())
//!     }))?;
//! consumer.run().await?;
//! # Ok(()) }
//! ```

mod decode;
mod encode;
pub mod index;
mod schema;

pub use decode::{DynamicProtobufCodec, ProtobufCodec};
pub use encode::ProtobufSerializer;
pub use prost;
pub use prost_reflect;
pub use schema::{ProtoSchema, ProtoSchemaError};
