//! A schema registry for tests: the real one at `SCHEMA_REGISTRY_URL`, or an
//! in-process HTTP stub of the Confluent Schema Registry endpoints Weir calls.
//!
//! There is no Confluent Schema Registry on the CI machines, so the stub
//! (built on `wiremock`) answers the same REST API over real HTTP: the client
//! code path is the production one. It implements:
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /schemas/ids/{id}` | `{"schema": …}`, or 404 with `error_code` 40403 |
//! | `POST /subjects/{s}/versions` | registers (same schema → same id), `{"id": n}`; 409 when the subject is marked incompatible |
//! | `POST /subjects/{s}` | looks a schema up: `{"subject","id","version","schema"}`, or 404 40403 / 40401 |
//! | `GET /subjects/{s}/versions/latest` | the latest version, or 404 40401 |
//! | `GET /subjects` | subject names |
//!
//! Optional basic-auth or bearer requirement (401 with `error_code` 40101
//! otherwise), and a request log for asserting caching.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A registry to test against.
pub struct SchemaRegistryFixture {
    url: String,
    stub: Option<(MockServer, Arc<Mutex<State>>)>,
    /// Held so that the process lives as long as the fixture.
    _apicurio: Option<crate::ApicurioRegistry>,
}

impl std::fmt::Debug for SchemaRegistryFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryFixture")
            .field("url", &self.url)
            .field("stub", &self.stub.is_some())
            .finish()
    }
}

#[derive(Default)]
struct State {
    /// (schema JSON normalised, schemaType) by id.
    schemas: Vec<(String, String)>,
    /// The schema text as registered, by id - 1.
    raw: Vec<String>,
    /// Ids by subject, in version order.
    subjects: HashMap<String, Vec<u32>>,
    incompatible: Vec<String>,
    auth: Option<String>,
    requests: Vec<String>,
}

/// Compares schemas like a registry does: Avro by parsing canonical form,
/// others by normalised JSON.
fn normalise(schema: &str) -> String {
    if let Ok(s) = apache_avro::Schema::parse_str(schema) {
        return s.canonical_form();
    }
    serde_json::from_str::<serde_json::Value>(schema)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| schema.to_string())
}

fn json(status: u16, body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/vnd.schemaregistry.v1+json")
        .set_body_string(body.to_string())
}

fn error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    json(
        status,
        serde_json::json!({ "error_code": code, "message": message }),
    )
}

struct Responder(Arc<Mutex<State>>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.0.lock();
        let path = req.url.path().to_string();
        st.requests.push(format!("{} {}", req.method, path));
        if let Some(expected) = &st.auth {
            let got = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if got != Some(expected.as_str()) {
                return error(401, 40101, "Unauthorized");
            }
        }
        let segs: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| s.replace("%2F", "/"))
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let method = req.method.as_str();
        let body = || -> Option<(String, String, String)> {
            let v: serde_json::Value = serde_json::from_slice(&req.body).ok()?;
            let schema = v.get("schema")?.as_str()?.to_string();
            let ty = v
                .get("schemaType")
                .and_then(|t| t.as_str())
                .unwrap_or("AVRO")
                .to_string();
            Some((normalise(&schema), ty, schema))
        };
        match (method, segs.as_slice()) {
            ("GET", ["schemas", "ids", id]) => {
                let Ok(id) = id.parse::<usize>() else {
                    return error(404, 40403, "Schema not found");
                };
                match id.checked_sub(1).and_then(|i| st.schemas.get(i)) {
                    Some((_, ty)) if ty == "AVRO" => {
                        json(200, serde_json::json!({ "schema": st.raw[id - 1] }))
                    }
                    Some((_, ty)) => json(
                        200,
                        serde_json::json!({ "schema": st.raw[id - 1], "schemaType": ty }),
                    ),
                    None => error(404, 40403, &format!("Schema {id} not found")),
                }
            }
            ("GET", ["subjects"]) => {
                let mut names: Vec<&String> = st.subjects.keys().collect();
                names.sort();
                json(200, serde_json::json!(names))
            }
            ("POST", ["subjects", subject, "versions"]) => {
                let Some((schema, ty, raw)) = body() else {
                    return error(422, 42201, "Invalid schema");
                };
                if st.incompatible.iter().any(|s| s == subject) {
                    return error(
                        409,
                        409,
                        "Schema being registered is incompatible with an earlier schema",
                    );
                }
                let id = match st
                    .schemas
                    .iter()
                    .position(|(s, t)| *s == schema && *t == ty)
                {
                    Some(i) => i as u32 + 1,
                    None => {
                        st.schemas.push((schema, ty));
                        st.raw.push(raw);
                        st.schemas.len() as u32
                    }
                };
                let versions = st.subjects.entry(subject.to_string()).or_default();
                if !versions.contains(&id) {
                    versions.push(id);
                }
                json(200, serde_json::json!({ "id": id }))
            }
            ("POST", ["subjects", subject]) => {
                let Some((schema, ty, _)) = body() else {
                    return error(422, 42201, "Invalid schema");
                };
                let Some(versions) = st.subjects.get(*subject) else {
                    return error(404, 40401, &format!("Subject '{subject}' not found."));
                };
                for (v, id) in versions.iter().enumerate() {
                    let (s, t) = &st.schemas[*id as usize - 1];
                    if *s == schema && *t == ty {
                        let s = &st.raw[*id as usize - 1];
                        return json(
                            200,
                            serde_json::json!({"subject": subject, "id": id, "version": v + 1, "schema": s}),
                        );
                    }
                }
                error(404, 40403, "Schema not found")
            }
            ("GET", ["subjects", subject, "versions", "latest"]) => {
                match st
                    .subjects
                    .get(*subject)
                    .and_then(|v| v.last().map(|id| (v.len(), *id)))
                {
                    Some((version, id)) => {
                        let s = &st.raw[id as usize - 1];
                        json(
                            200,
                            serde_json::json!({"subject": subject, "id": id, "version": version, "schema": s}),
                        )
                    }
                    None => error(404, 40401, &format!("Subject '{subject}' not found.")),
                }
            }
            _ => error(404, 404, "HTTP 404 Not Found"),
        }
    }
}

impl SchemaRegistryFixture {
    /// The registry at `SCHEMA_REGISTRY_URL` when set, otherwise a fresh stub.
    pub async fn from_env() -> Self {
        match std::env::var("SCHEMA_REGISTRY_URL") {
            Ok(url) if !url.is_empty() => SchemaRegistryFixture {
                url,
                stub: None,
                _apicurio: None,
            },
            _ => Self::stub().await,
        }
    }

    /// A real registry: `SCHEMA_REGISTRY_URL` when set, otherwise a fresh
    /// Apicurio Registry process ([`crate::ApicurioRegistry`]).
    pub async fn real() -> Result<Self, crate::TestkitError> {
        match std::env::var("SCHEMA_REGISTRY_URL") {
            Ok(url) if !url.is_empty() => Ok(SchemaRegistryFixture {
                url,
                stub: None,
                _apicurio: None,
            }),
            _ => Self::apicurio().await,
        }
    }

    /// A fresh Apicurio Registry process, used through its Confluent-compatible API.
    pub async fn apicurio() -> Result<Self, crate::TestkitError> {
        let reg = crate::ApicurioRegistry::start().await?;
        Ok(SchemaRegistryFixture {
            url: reg.url(),
            stub: None,
            _apicurio: Some(reg),
        })
    }

    /// A fresh in-process stub on a free loopback port.
    pub async fn stub() -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any())
            .respond_with(Responder(state.clone()))
            .mount(&server)
            .await;
        SchemaRegistryFixture {
            url: server.uri(),
            stub: Some((server, state)),
            _apicurio: None,
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True for the stub (tests that need stub-only controls check this).
    pub fn is_stub(&self) -> bool {
        self.stub.is_some()
    }

    fn state(&self) -> &Arc<Mutex<State>> {
        &self
            .stub
            .as_ref()
            .expect("stub-only control used against a real registry: check is_stub() first")
            .1
    }

    /// Requires `Authorization: Basic base64(user:password)` on every request (stub only).
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.state().lock().auth = Some(format!("Basic {token}"));
    }

    /// Requires `Authorization: Bearer {token}` on every request (stub only).
    pub fn require_bearer(&self, token: &str) {
        self.state().lock().auth = Some(format!("Bearer {token}"));
    }

    /// Makes registrations under `subject` fail with 409 (stub only).
    pub fn reject_subject(&self, subject: &str) {
        self.state().lock().incompatible.push(subject.to_string());
    }

    /// Registers `schema` (Avro JSON) under `subject` through the REST API and
    /// returns its id (works against a real registry too).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, String> {
        self.register_typed(subject, schema, "AVRO").await
    }

    /// Like [`register`](Self::register) for another schema type (`PROTOBUF`, `JSON`).
    pub async fn register_typed(
        &self,
        subject: &str,
        schema: &str,
        schema_type: &str,
    ) -> Result<u32, String> {
        crate::apicurio::register(&self.url, subject, schema, schema_type).await
    }

    /// The registry's subjects (`GET /subjects`; works against a real registry too).
    pub async fn subjects(&self) -> Result<Vec<String>, String> {
        let (status, text) =
            crate::apicurio::http("GET", &format!("{}/subjects", self.url), None).await?;
        if status != 200 {
            return Err(format!("GET /subjects: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET /subjects: {e}: {text}"))
    }

    /// Requests the stub has answered, as `METHOD /path` (stub only).
    pub fn requests(&self) -> Vec<String> {
        self.state().lock().requests.clone()
    }
}
