//! # weir-avro: Avro payloads through a Confluent-compatible schema registry
//!
//! Messages use the Confluent wire format: magic byte `0`, the writer
//! schema's id as 4 bytes big-endian, then the Avro binary body. Consumers
//! get typed values ([`AvroCodec<T>`] for serde types, [`GenericAvroCodec`] for
//! generic [`Value`]s); producers and the outbox encode with
//! [`AvroSerializer<T>`] / [`GenericAvroSerializer`] (any [`weir::Encoder`]).
//!
//! - Writer schemas are fetched by id and cached (ids are immutable);
//!   concurrent misses share one request.
//! - Schema evolution: give the consumer a [`reader_schema`](AvroCodec::reader_schema)
//!   and data written with an older compatible schema is resolved to it
//!   (defaults filled, removed fields dropped).
//! - Subject name strategies: topic name (default), record name, topic-record name.
//!   Registration on the producer side is on by default and can be turned off
//!   ([`auto_register(false)`](AvroSerializer::auto_register)) so producers only
//!   look schemas up.
//! - Keys and values are independent: `.for_key()` on any codec or serializer,
//!   and a pair `(key_codec, value_codec)` decodes both.
//! - Decoding failures are terminal and classified, so the message goes to the
//!   DLQ with an error class that says why: `decode_wrong_magic_byte`,
//!   `decode_truncated`, `decode_unknown_schema_id`, `decode_incompatible_schema`,
//!   `decode_invalid_body`, `decode_type_mismatch`. A registry that cannot be
//!   reached (or refuses the credentials) is `schema_registry_unavailable`:
//!   retried in place, the partition waits, nothing goes to the DLQ.
//! - Basic auth, bearer tokens, custom CAs and client certificates
//!   ([`SchemaRegistryBuilder`]), also from `WEIR_SCHEMA_REGISTRY_*`
//!   ([`SchemaRegistryConfig::from_env`]).
//!
//! Error messages never quote payload bytes or field values (they may be
//! personal data) unless a codec is built with `verbose_errors(true)`.
//!
//! ```no_run
//! use weir::{Consumer, ConsumerConfig, Message, ProcessError, Record, processor_fn};
//! use weir_avro::{AvroCodec, AvroSerializer, SchemaRegistry};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Click { link: String, at_ms: i64 }
//!
//! const CLICK_V1: &str = r#"{"type":"record","name":"Click","namespace":"shop",
//!   "fields":[{"name":"link","type":"string"},{"name":"at_ms","type":"long"}]}"#;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = SchemaRegistry::builder("http://registry:8081")
//!     .basic_auth("weir", "secret")
//!     .build()?;
//!
//! // Producer side: registers the schema under `clicks-value` on first use.
//! let serializer = AvroSerializer::<Click>::new(
//!     registry.clone(),
//!     apache_avro::Schema::parse_str(CLICK_V1)?,
//! );
//! let producer = weir::Producer::new("kafka:9092")?;
//! let click = Click { link: "l1".into(), at_ms: 1 };
//! producer
//!     .send(Record::to("clicks").key("l1").value_with(&serializer, &click).await?)
//!     .await?;
//!
//! // Consumer side: writer schema by id from the registry.
//! let consumer = Consumer::builder(ConsumerConfig::new("kafka:9092", "stats", &["clicks"]))
//!     .codec(AvroCodec::<Click>::new(registry))
//!     .build(processor_fn(|m: Message<Click>| async move {
//!         println!("{}", m.value().link);
//!         Ok::<_, ProcessError>(())
//!     }))?;
//! consumer.run().await?;
//! # Ok(()) }
//! ```

mod codec;
mod registry;

pub use apache_avro;
pub use apache_avro::types::Value;
pub use codec::{
    AvroCodec, AvroSerializer, FrameError, GenericAvroCodec, GenericAvroSerializer, HEADER_LEN,
    MAGIC_BYTE, SubjectNameStrategy, frame, split_frame,
};
pub use registry::{
    RegisteredSchema, RegistryError, SchemaRegistry, SchemaRegistryBuilder, SchemaRegistryConfig,
};
pub use weir_registry;

/// The largest single allocation the Avro decoder makes for one length
/// prefix (strings, bytes, arrays) unless [`set_max_allocation_bytes`] ran
/// first: a corrupt or hostile length prefix cannot make a consumer allocate
/// more than this. Kafka's default maximum message size is 1 MiB.
pub const DEFAULT_MAX_ALLOCATION_BYTES: usize = 64 * 1024 * 1024;

/// Sets the Avro decoder's allocation limit for this process. Only the first
/// call (or the first codec built) takes effect; returns the limit in force.
pub fn set_max_allocation_bytes(bytes: usize) -> usize {
    apache_avro::util::max_allocation_bytes(bytes)
}
