//! `.proto` files: the ones a producer gives in code (compiled once, at
//! construction) and the writer schemas a consumer fetches by id (with their
//! imports, registered as references), in the two forms registries hold:
//! `.proto` source, or a base64 `FileDescriptorProto` as Confluent's Python
//! client registers it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine;
use prost_reflect::{DescriptorPool, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use weir_registry::{NewReference, RawSchema, RegistryError, SchemaFormat, SchemaRegistry};

/// Why a `.proto` schema cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProtoSchemaError {
    /// The files do not compile (syntax, unknown type, missing import).
    #[error("protobuf schema `{file}` does not compile: {detail}")]
    Compile {
        /// The root file.
        file: String,
        /// The compiler's message.
        detail: String,
    },
    /// The message type is not in the file.
    #[error(
        "message `{message}` is not defined in `{file}` (give the file that defines it, with its imports)"
    )]
    NoSuchMessage {
        /// The message's full name.
        message: String,
        /// The root file.
        file: String,
    },
}

/// A `.proto` file and the files it imports, as source text. Well-known
/// types (`google/protobuf/*.proto`) resolve on their own and are not
/// registered (as Confluent's serializers skip them).
///
/// ```
/// use weir_protobuf::ProtoSchema;
/// let schema = ProtoSchema::new("shop/click.proto", r#"
///     syntax = "proto3";
///     package shop;
///     import "shop/money.proto";
///     message Click { string link = 1; Money price = 2; }
/// "#)
/// .import("shop/money.proto", r#"syntax = "proto3"; package shop; message Money { int64 cents = 1; }"#);
/// assert_eq!(schema.message_indexes("shop.Click").unwrap(), vec![0]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoSchema {
    name: String,
    source: String,
    imports: Vec<(String, String)>,
}

impl ProtoSchema {
    /// The root file: `name` is its import path, `source` its text.
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Self {
        ProtoSchema {
            name: name.into(),
            source: source.into(),
            imports: Vec::new(),
        }
    }

    /// A file the root (or another import) imports, by the path the
    /// `import` statement uses. Registered under a subject of that name.
    pub fn import(mut self, name: impl Into<String>, source: impl Into<String>) -> Self {
        self.imports.push((name.into(), source.into()));
        self
    }

    /// The root file's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root file's source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Compiles the files into a descriptor pool.
    pub fn compile(&self) -> Result<DescriptorPool, ProtoSchemaError> {
        let mut files: HashMap<String, Source> = HashMap::new();
        files.insert(self.name.clone(), Source::Text(self.source.clone()));
        for (n, s) in &self.imports {
            files.insert(n.clone(), Source::Text(s.clone()));
        }
        compile(&self.name, files)
    }

    /// The message-index path of `message` (full name, `package.Message`) in
    /// the root file.
    pub fn message_indexes(&self, message: &str) -> Result<Vec<i32>, ProtoSchemaError> {
        let pool = self.compile()?;
        let d = pool
            .get_message_by_name(message)
            .filter(|d| d.parent_file().name() == self.name)
            .ok_or_else(|| ProtoSchemaError::NoSuchMessage {
                message: message.to_string(),
                file: self.name.clone(),
            })?;
        Ok(index_path(&d))
    }

    /// The imports as registry references, each under a subject named as the
    /// import (Confluent's default reference subject strategy), nested as the
    /// files import each other.
    pub(crate) fn references(&self) -> Result<Vec<NewReference>, ProtoSchemaError> {
        let pool = self.compile()?;
        let sources: HashMap<&str, &str> = self
            .imports
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_str()))
            .collect();
        let refs_of = |file: &str| -> Vec<String> {
            pool.get_file_by_name(file)
                .map(|f| {
                    f.dependencies()
                        .map(|d| d.name().to_string())
                        .filter(|n| sources.contains_key(n.as_str()))
                        .collect()
                })
                .unwrap_or_default()
        };
        fn build(
            name: &str,
            sources: &HashMap<&str, &str>,
            refs_of: &dyn Fn(&str) -> Vec<String>,
            depth: usize,
        ) -> NewReference {
            NewReference {
                name: name.to_string(),
                subject: name.to_string(),
                schema: sources.get(name).copied().unwrap_or_default().to_string(),
                references: if depth > 32 {
                    Vec::new()
                } else {
                    refs_of(name)
                        .iter()
                        .map(|n| build(n, sources, refs_of, depth + 1))
                        .collect()
                },
            }
        }
        Ok(refs_of(&self.name)
            .iter()
            .map(|n| build(n, &sources, &refs_of, 0))
            .collect())
    }
}

/// The message-index path of a message: its position among its siblings,
/// from the file's top level down.
pub(crate) fn index_path(d: &MessageDescriptor) -> Vec<i32> {
    let mut path = Vec::new();
    let mut cur = d.clone();
    loop {
        let parent = cur.parent_message();
        let siblings: Vec<MessageDescriptor> = match &parent {
            Some(p) => p.child_messages().collect(),
            None => cur.parent_file().messages().collect(),
        };
        let pos = siblings
            .iter()
            .position(|s| s.full_name() == cur.full_name())
            .unwrap_or(0);
        path.push(pos as i32);
        match parent {
            Some(p) => cur = p,
            None => break,
        }
    }
    path.reverse();
    path
}

/// The message an index path names in `file` of `pool`.
pub(crate) fn message_at(
    pool: &DescriptorPool,
    file: &str,
    indexes: &[i32],
) -> Option<MessageDescriptor> {
    let f = pool.get_file_by_name(file)?;
    let (first, rest) = indexes.split_first()?;
    let mut m = f.messages().nth(usize::try_from(*first).ok()?)?;
    for i in rest {
        let next = m.child_messages().nth(usize::try_from(*i).ok()?)?;
        m = next;
    }
    Some(m)
}

enum Source {
    Text(String),
    Descriptor(Box<File>),
}

struct Files(HashMap<String, Source>);

impl FileResolver for Files {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(Source::Text(s)) => File::from_source(name, s),
            Some(Source::Descriptor(f)) => Ok((**f).clone()),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

fn compile(root: &str, files: HashMap<String, Source>) -> Result<DescriptorPool, ProtoSchemaError> {
    let mut chain = ChainFileResolver::new();
    chain.add(Files(files));
    chain.add(GoogleFileResolver::new());
    let mut c = protox::Compiler::with_file_resolver(chain);
    c.include_imports(true);
    c.open_file(root).map_err(|e| ProtoSchemaError::Compile {
        file: root.to_string(),
        detail: e.to_string(),
    })?;
    Ok(c.descriptor_pool())
}

/// A writer schema fetched by id: its pool and the root file's name.
pub(crate) struct WriterProto {
    pub(crate) pool: DescriptorPool,
    pub(crate) file: String,
}

/// The Protobuf writer schema with `id` (compiled once per registry client).
pub(crate) async fn writer(
    registry: &SchemaRegistry,
    id: u32,
) -> Result<Arc<WriterProto>, RegistryError> {
    registry
        .parsed(id, |raw| async move { load(registry, &raw).await })
        .await
}

async fn load(registry: &SchemaRegistry, raw: &RawSchema) -> Result<WriterProto, RegistryError> {
    let unsupported = |detail: String| RegistryError::Unsupported {
        url: registry.url().to_string(),
        detail,
    };
    if raw.format != SchemaFormat::Protobuf {
        return Err(unsupported(format!(
            "schema id {} is a {} schema, not Protobuf: read it with that format's codec",
            raw.id,
            raw.format.as_str()
        )));
    }
    let mut files = HashMap::new();
    let root_fallback = format!("weir-schema-{}.proto", raw.id);
    let root = add_file(&mut files, &root_fallback, &raw.schema);
    // References, depth first; each (subject, version) once.
    let mut pending: Vec<_> = raw.references.clone();
    let mut seen = HashSet::new();
    while let Some(r) = pending.pop() {
        if !seen.insert((r.subject.clone(), r.version)) || seen.len() > 256 {
            continue;
        }
        let dep = registry.schema_by_version(&r.subject, r.version).await?;
        add_file(&mut files, &r.name, &dep.schema);
        pending.extend(dep.references.iter().cloned());
    }
    let pool = compile(&root, files)
        .map_err(|e| unsupported(format!("schema id {} is not usable Protobuf: {e}", raw.id)))?;
    Ok(WriterProto { pool, file: root })
}

/// Adds a file as text, or as the base64 descriptor Confluent's Python
/// client registers (named as the descriptor says); returns its name.
fn add_file(files: &mut HashMap<String, Source>, name: &str, schema: &str) -> String {
    let trimmed = schema.trim();
    let looks_base64 = !trimmed.is_empty()
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if looks_base64
        && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(trimmed)
        && let Ok(f) = File::decode_file_descriptor_proto(bytes.as_slice())
    {
        // A reference keeps the name its importer uses.
        let own = f.name().to_string();
        let n = if own.is_empty() || name.ends_with(".proto") && !name.starts_with("weir-schema-") {
            name.to_string()
        } else {
            own
        };
        let f = if n == f.name() {
            f
        } else {
            let mut proto = f.file_descriptor_proto().clone();
            proto.name = Some(n.clone());
            File::from_file_descriptor_proto(proto)
        };
        files.insert(n.clone(), Source::Descriptor(Box::new(f)));
        return n;
    }
    files.insert(name.to_string(), Source::Text(schema.to_string()));
    name.to_string()
}
