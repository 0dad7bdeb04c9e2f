//! Avro on top of [`weir_registry`]: writer schemas parsed once per client
//! (with their references: named types registered under other subjects),
//! registration of Avro schemas, the subject's latest schema.

use std::sync::Arc;

use apache_avro::Schema;
use weir_registry::{NewSchema, RawSchema, Registration, SchemaFormat};

pub use weir_registry::{
    RegistryError, SchemaRegistry, SchemaRegistryBuilder, SchemaRegistryConfig,
};

/// A writer schema with its registry id.
#[derive(Debug, Clone)]
pub struct RegisteredSchema {
    /// The id written into every message.
    pub id: u32,
    /// The parsed schema.
    pub schema: Arc<Schema>,
}

/// A parsed Avro writer schema, as kept in the registry client's cache.
struct Parsed(Arc<Schema>);

/// The Avro writer schema with `id` (parsed once per registry client).
pub(crate) async fn schema_by_id(
    registry: &SchemaRegistry,
    id: u32,
) -> Result<Arc<Schema>, RegistryError> {
    let parsed = registry
        .parsed(
            id,
            |raw| async move { parse(registry, &raw).await.map(Parsed) },
        )
        .await?;
    Ok(parsed.0.clone())
}

/// Parses `raw` as Avro, with the named types of its references.
async fn parse(registry: &SchemaRegistry, raw: &RawSchema) -> Result<Arc<Schema>, RegistryError> {
    let unsupported = |detail: String| RegistryError::Unsupported {
        url: registry.url().to_string(),
        detail,
    };
    if raw.format != SchemaFormat::Avro {
        return Err(unsupported(format!(
            "schema id {} is a {} schema, not Avro: read it with that format's codec",
            raw.id,
            raw.format.as_str()
        )));
    }
    // References first (depth first, each once), then the schema itself.
    let mut texts: Vec<String> = Vec::new();
    let mut pending: Vec<(String, u32)> = raw
        .references
        .iter()
        .map(|r| (r.subject.clone(), r.version))
        .collect();
    let mut seen = std::collections::HashSet::new();
    while let Some((subject, version)) = pending.pop() {
        if !seen.insert((subject.clone(), version)) || seen.len() > 256 {
            continue;
        }
        let r = registry.schema_by_version(&subject, version).await?;
        pending.extend(r.references.iter().map(|r| (r.subject.clone(), r.version)));
        texts.insert(0, r.schema.clone());
    }
    let bad = |e: apache_avro::Error| {
        unsupported(format!(
            "schema id {} cannot be parsed as Avro: {e}",
            raw.id
        ))
    };
    if texts.is_empty() {
        return Schema::parse_str(&raw.schema).map(Arc::new).map_err(bad);
    }
    // With references, every schema is a named type: parsed together, the
    // last one is the writer's.
    texts.push(raw.schema.clone());
    let mut schemas = Schema::parse_list(texts.iter().map(String::as_str)).map_err(bad)?;
    schemas
        .pop()
        .map(Arc::new)
        .ok_or_else(|| unsupported(format!("schema id {} is empty", raw.id)))
}

/// Registers `schema` under `subject` (or finds it) and returns its id.
pub(crate) async fn writer_id(
    registry: &SchemaRegistry,
    subject: &str,
    schema: &Arc<Schema>,
    raw: &str,
    registration: Registration,
) -> Result<RegisteredSchema, RegistryError> {
    let mut new = NewSchema::new(SchemaFormat::Avro, raw);
    new.name = schema_full_name(schema);
    let id = registry.register(subject, &new, registration).await?.id;
    Ok(RegisteredSchema {
        id,
        schema: schema.clone(),
    })
}

/// The latest Avro schema registered under `subject`.
pub(crate) async fn latest(
    registry: &SchemaRegistry,
    subject: &str,
) -> Result<RegisteredSchema, RegistryError> {
    let raw = registry.latest(subject).await?;
    let schema = parse(registry, &raw).await?;
    Ok(RegisteredSchema { id: raw.id, schema })
}

/// The full name of a named schema (record, enum, fixed).
pub(crate) fn schema_full_name(schema: &Schema) -> Option<String> {
    match schema {
        Schema::Record(r) => Some(r.name.fullname(None)),
        Schema::Enum(e) => Some(e.name.fullname(None)),
        Schema::Fixed(f) => Some(f.name.fullname(None)),
        _ => None,
    }
}
