//! # weir-registry: a Confluent-compatible schema registry client for Weir's codecs
//!
//! The pieces every schema-registry format shares, so `weir-avro`,
//! `weir-protobuf` and `weir-jsonschema` behave alike:
//!
//! - the wire format's frame: magic byte `0`, the writer schema's id as 4
//!   bytes big-endian, then the body ([`frame`], [`split_frame`]);
//! - [`SchemaRegistry`]: schemas by id and by subject version, cached (ids
//!   and versions are immutable) with one request per id however many
//!   messages wait for it; registration with references (Protobuf imports)
//!   or lookup only; the latest version of a subject; a per-codec cache of
//!   parsed schemas ([`SchemaRegistry::parsed`]);
//! - [`SubjectNameStrategy`]: topic name, record name, topic-record name;
//! - errors classified for the caller ([`RegistryError`]): not found,
//!   rejected, unsupported, unavailable (retry later), configuration;
//! - basic auth, bearer tokens, custom CAs and client certificates
//!   ([`SchemaRegistryBuilder`]), also from `WEIR_SCHEMA_REGISTRY_*`
//!   ([`SchemaRegistryConfig::from_env`]).
//!
//! ```no_run
//! use weir_registry::{NewSchema, Registration, SchemaFormat, SchemaRegistry};
//!
//! # async fn run() -> Result<(), weir_registry::RegistryError> {
//! let registry = SchemaRegistry::builder("http://registry:8081").build()?;
//! let schema = NewSchema::new(SchemaFormat::Json, r#"{"type":"object"}"#);
//! let id = registry.register("clicks-value", &schema, Registration::Auto).await?.id;
//! let raw = registry.schema_by_id(id).await?;
//! assert_eq!(raw.format, SchemaFormat::Json);
//! # Ok(()) }
//! ```

mod client;
mod config;
mod frame;
#[cfg(test)]
mod tests;

pub use client::{
    NewReference, NewSchema, RawSchema, Registration, SchemaFormat, SchemaReference,
    SchemaRegistry, WriterId, redact_url,
};
pub use config::{RegistryError, SchemaRegistryBuilder, SchemaRegistryConfig};
pub use frame::{FrameError, HEADER_LEN, MAGIC_BYTE, SubjectNameStrategy, frame, split_frame};
