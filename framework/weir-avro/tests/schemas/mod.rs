//! Schemas and types shared by the Avro integration tests.
#![allow(dead_code)]

pub const CLICK_V1: &str = r#"{"type":"record","name":"Click","namespace":"weir.test","fields":[
  {"name":"link","type":"string"},{"name":"at_ms","type":"long"}]}"#;
/// v2 adds an optional field with a default: backward compatible.
pub const CLICK_V2: &str = r#"{"type":"record","name":"Click","namespace":"weir.test","fields":[
  {"name":"link","type":"string"},{"name":"at_ms","type":"long"},
  {"name":"referrer","type":["null","string"],"default":null}]}"#;
/// v3 changes a field's type: incompatible with v1/v2 readers.
pub const CLICK_V3_BAD: &str = r#"{"type":"record","name":"Click","namespace":"weir.test","fields":[
  {"name":"link","type":"string"},{"name":"at_ms","type":"string"}]}"#;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClickV1 {
    pub link: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClickV2 {
    pub link: String,
    pub at_ms: i64,
    pub referrer: Option<String>,
}
