//! Logins, sessions and CSRF tokens.
//!
//! A login (token, or name and password) opens a server-side session named
//! by a random cookie (`HttpOnly`, `SameSite=Strict`). Each session has its
//! own CSRF token, which every mutating form carries and every POST must
//! present. Scripts may read pages with `Authorization: Bearer <token>`;
//! actions always need a session and its CSRF token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::RngCore as _;
use subtle::ConstantTimeEq as _;

use crate::config::Settings;

/// The session cookie's name.
pub const COOKIE: &str = "weir_console_session";

/// A logged-in session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who: `token` for a token login, the user name, or `anonymous` under `--no-auth`.
    pub who: String,
    /// The session's CSRF token.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// A request authenticated by a bearer token: it may read pages, and has
    /// no CSRF token, so no action passes.
    pub(crate) fn bearer() -> Session {
        Session {
            who: "token (bearer)".into(),
            csrf: String::new(),
            expires: Instant::now() + Duration::from_secs(60),
        }
    }
}

/// At most this many live sessions.
const MAX_SESSIONS: usize = 10_000;

/// Sessions by cookie value.
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    ttl: Duration,
}

fn random_hex() -> String {
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

impl Sessions {
    pub(crate) fn new(ttl: Duration) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Opens a session for `who`: (cookie value, session).
    pub(crate) fn open(&self, who: &str) -> (String, Session) {
        let id = random_hex();
        let s = Session {
            who: who.to_string(),
            csrf: random_hex(),
            expires: Instant::now() + self.ttl,
        };
        let mut map = self.map.lock();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        // Bounded: clients that never send their cookie back (scripts on a
        // `--no-auth` console) cannot grow the map without end; the
        // sessions closest to expiry make room.
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(id.clone(), s.clone());
        (id, s)
    }

    /// The live session named by `cookie`.
    pub(crate) fn get(&self, cookie: &str) -> Option<Session> {
        let map = self.map.lock();
        map.get(cookie)
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    /// Ends the session named by `cookie`.
    pub(crate) fn close(&self, cookie: &str) {
        self.map.lock().remove(cookie);
    }
}

/// Checks a login form against the settings: the name to audit it under.
pub(crate) fn check_login(
    settings: &Settings,
    token: Option<&str>,
    username: Option<&str>,
    password: Option<&str>,
) -> Option<String> {
    if let (Some(want), Some(got)) = (settings.token.as_deref(), token)
        && !got.is_empty()
        && same(want, got)
    {
        return Some("token".into());
    }
    if let (Some(wu), Some(wp), Some(u), Some(p)) = (
        settings.username.as_deref(),
        settings.password.as_deref(),
        username,
        password,
    ) {
        // Both compared, whatever the first gives: no early exit to time.
        let ok = same(wu, u) & same(wp, p);
        if ok {
            return Some(u.to_string());
        }
    }
    None
}

/// The value of `name` in a `Cookie` header.
pub(crate) fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A bearer token from an `Authorization` header that matches the settings.
pub(crate) fn bearer_ok(settings: &Settings, header: &str) -> bool {
    match (settings.token.as_deref(), header.strip_prefix("Bearer ")) {
        (Some(want), Some(got)) => !got.is_empty() && same(want, got.trim()),
        _ => false,
    }
}

/// True when `presented` is the session's CSRF token.
pub(crate) fn csrf_ok(session: &Session, presented: Option<&str>) -> bool {
    !session.csrf.is_empty() && presented.is_some_and(|p| same(&session.csrf, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            token: Some("s3cret".into()),
            username: Some("oncall".into()),
            password: Some("pw".into()),
            ..Settings::default()
        }
    }

    #[test]
    fn logins_by_token_or_credentials_and_nothing_else() {
        let s = settings();
        assert_eq!(
            check_login(&s, Some("s3cret"), None, None).as_deref(),
            Some("token")
        );
        assert_eq!(
            check_login(&s, None, Some("oncall"), Some("pw")).as_deref(),
            Some("oncall")
        );
        assert!(check_login(&s, Some("s3cre"), None, None).is_none());
        assert!(check_login(&s, Some(""), None, None).is_none());
        assert!(check_login(&s, None, Some("oncall"), Some("PW")).is_none());
        assert!(check_login(&s, None, Some("root"), Some("pw")).is_none());
        let token_only = Settings {
            token: Some("t".into()),
            ..Settings::default()
        };
        assert!(check_login(&token_only, None, Some(""), Some("")).is_none());
    }

    #[test]
    fn sessions_expire_and_close() {
        let ss = Sessions::new(Duration::from_millis(50));
        let (id, s) = ss.open("token");
        assert_eq!(ss.get(&id).unwrap().csrf, s.csrf);
        assert!(ss.get("other").is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(ss.get(&id).is_none(), "expired");
        let ss = Sessions::new(Duration::from_secs(60));
        let (id, _) = ss.open("token");
        ss.close(&id);
        assert!(ss.get(&id).is_none());
    }

    #[test]
    fn sessions_are_bounded_and_the_oldest_make_room() {
        let ss = Sessions::new(Duration::from_secs(60));
        let (first, _) = ss.open("a");
        for _ in 0..MAX_SESSIONS {
            ss.open("a");
        }
        assert_eq!(ss.map.lock().len(), MAX_SESSIONS);
        assert!(ss.get(&first).is_none(), "the oldest made room");
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        let ss = Sessions::new(Duration::from_secs(60));
        let (_, a) = ss.open("a");
        let (_, b) = ss.open("b");
        assert_ne!(a.csrf, b.csrf);
        assert!(csrf_ok(&a, Some(&a.csrf)));
        assert!(!csrf_ok(&a, Some(&b.csrf)));
        assert!(!csrf_ok(&a, None));
        assert!(!csrf_ok(&a, Some("")));
    }

    #[test]
    fn cookies_and_bearer_headers() {
        assert_eq!(
            cookie("a=1; weir_console_session=xyz; b=2", COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie("a=1", COOKIE), None);
        assert!(bearer_ok(&settings(), "Bearer s3cret"));
        assert!(!bearer_ok(&settings(), "Bearer nope"));
        assert!(!bearer_ok(&settings(), "Basic s3cret"));
        assert!(!bearer_ok(&Settings::default(), "Bearer "));
    }
}
