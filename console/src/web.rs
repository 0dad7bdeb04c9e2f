//! The router, the login, the page layout and errors.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::App;
use crate::auth::{self, COOKIE, Session};

pub(crate) type AppState = State<Arc<App>>;

pub(crate) fn router(app: Arc<App>) -> Router {
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/groups") }))
        .route("/groups", get(crate::groups::list))
        .route("/groups/{group}", get(crate::groups::show))
        .route("/groups/{group}/reset", post(crate::groups::reset))
        .route("/consumers", get(crate::consumers::page))
        .route("/dlq", get(crate::dlq::topics))
        .route("/dlq/{topic}", get(crate::dlq::list))
        .route("/dlq/{topic}/replay", post(crate::dlq::replay))
        .route("/dlq/{topic}/{partition}/{offset}", get(crate::dlq::show))
        .route("/audit", get(audit_page))
        .route("/logout", post(logout))
        .layer(middleware::from_fn_with_state(app.clone(), require_login));
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/healthz", get(|| async { "ok" }))
        .merge(pages)
        .fallback(not_found)
        .layer(middleware::map_response(security_headers))
        .with_state(app)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn session_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict")
}

/// Lets a request through with its [`Session`] (from the cookie, a bearer
/// token for reads, or an anonymous one under `--no-auth`); otherwise sends
/// a page read to the login and refuses anything else.
async fn require_login(State(app): AppState, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let from_cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| auth::cookie(c, COOKIE))
        .and_then(|id| app.sessions.get(id));
    if let Some(s) = from_cookie {
        req.extensions_mut().insert(s);
        return next.run(req).await;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| auth::bearer_ok(&app.settings, h));
    if bearer {
        // Reads only: no CSRF token, so no action passes.
        req.extensions_mut().insert(Session::bearer());
        return next.run(req).await;
    }
    if app.no_auth {
        let (id, s) = app.sessions.open("anonymous");
        req.extensions_mut().insert(s);
        let mut resp = next.run(req).await;
        if let Ok(v) = HeaderValue::from_str(&session_cookie(&id)) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        return resp;
    }
    if req.method() == axum::http::Method::GET {
        let next_path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let to = format!(
            "/login?next={}",
            form_urlencoded::byte_serialize(next_path.as_bytes()).collect::<String>()
        );
        return Redirect::to(&to).into_response();
    }
    PageError::new(
        StatusCode::UNAUTHORIZED,
        "Not logged in",
        "Log in first: this action needs a session.",
    )
    .into_response()
}

/// A page that did not work out: a status and a message for a person, never
/// a stack trace.
#[derive(Debug)]
pub(crate) struct PageError {
    pub(crate) status: StatusCode,
    pub(crate) title: String,
    pub(crate) message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, title: &str, message: impl Into<String>) -> Self {
        PageError {
            status,
            title: title.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn bad_input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad input", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Refused", message)
    }
}

impl From<weir::WeirError> for PageError {
    fn from(e: weir::WeirError) -> Self {
        match &e {
            weir::WeirError::UnknownTopic { topic, .. } => {
                PageError::not_found(format!("topic `{topic}` does not exist on this cluster"))
            }
            _ => PageError::new(
                StatusCode::BAD_GATEWAY,
                "Kafka did not answer",
                format!("{e}. Check that the brokers are up and reachable from the console."),
            ),
        }
    }
}

impl From<tokio::task::JoinError> for PageError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "a console task failed");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "The request's task failed; the console log has the details.",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = layout(
            &self.title,
            None,
            html! {
                div.error role="alert" {
                    h2 { (self.title) }
                    p.message { (self.message) }
                    p { a href="/groups" { "Back to the groups" } }
                }
            },
        );
        (self.status, body).into_response()
    }
}

pub(crate) type Page = Result<Markup, PageError>;

/// Runs a blocking Kafka call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, weir::WeirError> + Send + 'static,
) -> Result<T, PageError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// A form body's fields, in order (repeated names kept).
pub(crate) fn form(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of `name` in a form, trimmed, `None` when empty.
pub(crate) fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Refuses a mutating request without actions enabled or without the
/// session's CSRF token.
pub(crate) fn check_action(
    app: &App,
    session: &Session,
    f: &[(String, String)],
) -> Result<(), PageError> {
    if !auth::csrf_ok(session, field(f, "csrf")) {
        return Err(PageError::forbidden(
            "The form's CSRF token is missing or does not match your session: reload the page and try again.",
        ));
    }
    if !app.settings.actions {
        return Err(PageError::forbidden(
            "Actions are off: set `actions = true` in the [console] section (or WEIR_CONSOLE_ACTIONS=true) to allow replays and offset resets.",
        ));
    }
    Ok(())
}

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header a{color:#cfd8ea;text-decoration:none}header a:hover{color:#fff}
header .brand{font-weight:700;color:#fff;font-size:16px}header form{margin-left:auto}
main{padding:16px 24px;max-width:1200px}
h1{font-size:20px;margin:8px 0 12px}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;background:#fff;margin:8px 0;min-width:50%}
th,td{border:1px solid #dde1e8;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eef1f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#667}
.error{background:#fdecea;border:1px solid #f5c2c0;padding:8px 16px;border-radius:4px}
.notice{background:#e8f0fe;border:1px solid #c6dafc;padding:8px 16px;border-radius:4px}
.warn{background:#fff4e5;border:1px solid #ffd699;padding:8px 16px;border-radius:4px}
form.inline{display:inline}fieldset{border:1px solid #dde1e8;background:#fff;margin:8px 0}
label{margin-right:12px}input,select{font:inherit;padding:2px 6px}
button{font:inherit;padding:4px 12px;border:1px solid #1a56db;background:#1a56db;color:#fff;border-radius:4px;cursor:pointer}
button.danger{background:#b3261e;border-color:#b3261e}button.plain{background:#fff;color:#1a56db}
.chart svg{width:100%;max-width:720px;background:#fff;border:1px solid #dde1e8}
.chart .grid{stroke:#e5e8ee}.chart .axis{font-size:11px;fill:#667}.chart .line{stroke:#1a56db;stroke-width:2}
.chart .area{fill:#1a56db22}.chart .empty{fill:#889}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#fff;border:1px solid #dde1e8;padding:8px 16px;min-width:320px}
code{background:#eef1f6;padding:0 3px}
"#;

/// The page frame: navigation, the session's logout, the body.
pub(crate) fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · weir console" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    a.brand href="/groups" { "weir console" }
                    a href="/groups" { "Groups" }
                    a href="/consumers" { "Consumers" }
                    a href="/dlq" { "Retry tiers & DLQs" }
                    a href="/audit" { "Audit log" }
                    @if let Some(s) = session {
                        @if !s.csrf.is_empty() && s.who != "anonymous" {
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                span.muted { (s.who) " " }
                                button.plain type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The hidden CSRF field of a mutating form.
pub(crate) fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A notice of the last sampling error, if any.
pub(crate) fn sampling_notice(app: &App) -> Markup {
    let e = app.history.last_error.lock().clone();
    html! {
        @if let Some(e) = e {
            p.warn { "The lag sampler could not read the cluster: " (e) }
        }
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/groups".into(),
    }
}

fn login_form(app: &App, next: &str, error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                @if app.settings.token.is_some() {
                    fieldset {
                        legend { "With the console token" }
                        label for="token" { "Token" }
                        input id="token" type="password" name="token" autocomplete="off";
                    }
                }
                @if app.settings.username.is_some() {
                    fieldset {
                        legend { "With a name and password" }
                        label for="username" { "Name" }
                        input id="username" type="text" name="username";
                        label for="password" { "Password" }
                        input id="password" type="password" name="password";
                    }
                }
                @if app.settings.token.is_none() && app.settings.username.is_none() {
                    p.notice { "This console runs without authentication (--no-auth): open " a href="/groups" { "the groups" } "." }
                }
                button #login type="submit" { "Log in" }
            }
        },
    )
}

async fn login_page(State(app): AppState, Query(q): Query<LoginQuery>) -> Markup {
    login_form(&app, &safe_next(q.next.as_deref()), None)
}

async fn login(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: String,
) -> Response {
    let f = form(&body);
    let next = safe_next(field(&f, "next"));
    let who = auth::check_login(
        &app.settings,
        field(&f, "token"),
        field(&f, "username"),
        field(&f, "password"),
    );
    match who {
        Some(who) => {
            let (id, _) = app.sessions.open(&who);
            audit(
                &app,
                &who,
                "login",
                "",
                serde_json::json!({ "from": peer.to_string() }),
                "ok",
            );
            let mut resp = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&session_cookie(&id)) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        None => {
            let user = field(&f, "username").unwrap_or("");
            audit(
                &app,
                &peer.ip().to_string(),
                "login_refused",
                "",
                serde_json::json!({ "username": user }),
                "wrong token or credentials",
            );
            (
                StatusCode::UNAUTHORIZED,
                login_form(
                    &app,
                    &next,
                    Some("Login refused: wrong token or credentials."),
                ),
            )
                .into_response()
        }
    }
}

async fn logout(
    State(app): AppState,
    axum::Extension(s): axum::Extension<Session>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let f = form(&body);
    if !auth::csrf_ok(&s, field(&f, "csrf")) {
        return PageError::forbidden(
            "The form's CSRF token is missing or does not match your session.",
        )
        .into_response();
    }
    if let Some(id) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| auth::cookie(c, COOKIE))
    {
        app.sessions.close(id);
    }
    let mut resp = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}=; Path=/; Max-Age=0")) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// Writes an audit entry; a log that cannot be written is logged loudly.
pub(crate) fn audit(
    app: &App,
    who: &str,
    action: &str,
    target: &str,
    params: serde_json::Value,
    result: &str,
) {
    if let Err(e) = app.audit.record(who, action, target, params, result) {
        tracing::error!(error = %e, path = %app.settings.audit_log.display(), "writing the audit log");
    }
}

async fn audit_page(State(app): AppState, axum::Extension(s): axum::Extension<Session>) -> Markup {
    let entries = app.audit.recent();
    layout(
        "Audit log",
        Some(&s),
        html! {
            h1 { "Audit log" }
            p.muted { "Newest first; appended to " code { (app.settings.audit_log.display()) } "." }
            table #audit {
                tr { th { "When" } th { "Who" } th { "Action" } th { "Target" } th { "Parameters" } th { "Result" } }
                @for e in &entries {
                    tr {
                        td { (e.at) } td { (e.who) } td { (e.action) } td { (e.target) }
                        td { code { (e.params) } } td { (e.result) }
                    }
                }
            }
            @if entries.is_empty() { p.muted { "Nothing yet." } }
        },
    )
}

async fn not_found() -> PageError {
    PageError::not_found("There is no such page.")
}

/// Milliseconds as a short duration (`1.2s`, `3m 4s`).
pub(crate) fn age(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(std::time::Duration::from_secs((ms / 1000) as u64)).to_string()
    }
}

/// Epoch ms as RFC 3339 (seconds).
pub(crate) fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/dlq/x?class=a")), "/dlq/x?class=a");
        assert_eq!(safe_next(Some("//evil.example")), "/groups");
        assert_eq!(safe_next(Some("https://evil.example")), "/groups");
        assert_eq!(safe_next(Some("/\\evil")), "/groups");
        assert_eq!(safe_next(None), "/groups");
    }

    #[test]
    fn forms_keep_repeated_fields() {
        let f = form("sel=0%3A1&sel=1%3A2&csrf=x&to=+");
        assert_eq!(f.iter().filter(|(k, _)| k == "sel").count(), 2);
        assert_eq!(field(&f, "sel"), Some("0:1"));
        assert_eq!(field(&f, "to"), None, "blank is absent");
    }

    #[test]
    fn ages_and_times() {
        assert_eq!(age(1234), "1.2s");
        assert_eq!(age(-5), "0.0s");
        assert_eq!(age(125_000), "2m 5s");
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
    }
}
