//! The console's settings: the `[console]` section of a Weir config file and
//! `WEIR_CONSOLE_*` variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::ConsoleError;

/// The `[console]` section of `weir.toml`. Every field has a default: a
/// console with an empty section is read-only and hides payloads.
///
/// ```toml
/// [console]
/// token = "a-long-random-string"        # or WEIR_CONSOLE_TOKEN
/// actions = true                        # DLQ replay and offset resets
/// endpoints = ["http://billing-0:9464"] # Weir consumers' weir-telemetry endpoints
/// audit_log = "/var/log/weir-console-audit.jsonl"
/// ```
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// A bearer token: typed on the login page, or sent as
    /// `Authorization: Bearer …` by scripts (read-only pages).
    pub token: Option<String>,
    /// Basic credentials (with `password`), for a login by name.
    pub username: Option<String>,
    /// The password of `username`.
    pub password: Option<String>,
    /// Mutating actions (DLQ replay, offset resets). Off by default.
    pub actions: bool,
    /// Show DLQ payloads (they may hold personal data). Off by default.
    pub show_payloads: bool,
    /// Weir consumers' `weir-telemetry` endpoints (`http://host:port` or
    /// `host:port`), for the consumers page.
    pub endpoints: Vec<String>,
    /// DLQ topics to show. Empty: every topic whose name ends in `.dlq`.
    pub dlq_topics: Vec<String>,
    /// Where the audit log (JSON lines) is appended.
    pub audit_log: PathBuf,
    /// How often the console samples every group's lag and the endpoints'
    /// counters (the lag chart's resolution).
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    /// How much lag history the charts keep.
    #[serde(with = "humantime_serde")]
    pub history: Duration,
    /// At most this many DLQ messages on one page.
    pub dlq_page_limit: usize,
    /// A session lasts this long after login.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            token: None,
            username: None,
            password: None,
            actions: false,
            show_payloads: false,
            endpoints: Vec::new(),
            dlq_topics: Vec::new(),
            audit_log: PathBuf::from("weir-console-audit.jsonl"),
            sample_interval: Duration::from_secs(30),
            history: Duration::from_secs(3600),
            dlq_page_limit: 500,
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("Settings")
            .field("token", &hidden(&self.token))
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("actions", &self.actions)
            .field("show_payloads", &self.show_payloads)
            .field("endpoints", &self.endpoints)
            .field("dlq_topics", &self.dlq_topics)
            .field("audit_log", &self.audit_log)
            .field("sample_interval", &self.sample_interval)
            .field("history", &self.history)
            .field("dlq_page_limit", &self.dlq_page_limit)
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

impl Settings {
    /// The `[console]` section of a Weir config file's text (other sections
    /// are left to the consumer config); defaults when there is none.
    pub fn from_toml_str(text: &str) -> Result<Settings, ConsoleError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConsoleError::Config {
            message: e.to_string(),
        })?;
        match table.get("console") {
            None => Ok(Settings::default()),
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| ConsoleError::Config {
                    message: format!("[console]: {e}"),
                }),
        }
    }

    /// Reads the `[console]` section of `path`.
    pub fn from_file(path: &std::path::Path) -> Result<Settings, ConsoleError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConsoleError::Config {
            message: format!("reading {}: {e}", path.display()),
        })?;
        Settings::from_toml_str(&text).map_err(|e| match e {
            ConsoleError::Config { message } => ConsoleError::Config {
                message: format!("{}: {message}", path.display()),
            },
            other => other,
        })
    }

    /// Applies `WEIR_CONSOLE_TOKEN`, `WEIR_CONSOLE_USERNAME`,
    /// `WEIR_CONSOLE_PASSWORD`, `WEIR_CONSOLE_ACTIONS`,
    /// `WEIR_CONSOLE_SHOW_PAYLOADS`, `WEIR_CONSOLE_ENDPOINTS` (comma-separated)
    /// and `WEIR_CONSOLE_AUDIT_LOG` from `vars`.
    pub fn with_env(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConsoleError> {
        let flag = |k: &str, v: &str| match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConsoleError::Config {
                message: format!("{k}=`{v}`: expected true or false"),
            }),
        };
        for (k, v) in vars {
            match k.as_str() {
                "WEIR_CONSOLE_TOKEN" => self.token = Some(v),
                "WEIR_CONSOLE_USERNAME" => self.username = Some(v),
                "WEIR_CONSOLE_PASSWORD" => self.password = Some(v),
                "WEIR_CONSOLE_ACTIONS" => self.actions = flag(&k, &v)?,
                "WEIR_CONSOLE_SHOW_PAYLOADS" => self.show_payloads = flag(&k, &v)?,
                "WEIR_CONSOLE_ENDPOINTS" => {
                    self.endpoints = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                }
                "WEIR_CONSOLE_AUDIT_LOG" => self.audit_log = PathBuf::from(v),
                _ => {}
            }
        }
        Ok(self)
    }

    /// Checks the settings for a console listening on `listen`: some
    /// authentication is configured, unless `no_auth` on a loopback address.
    pub fn validate(&self, listen: SocketAddr, no_auth: bool) -> Result<(), ConsoleError> {
        if self.token.as_deref() == Some("") {
            return Err(ConsoleError::Config {
                message: "[console] token is empty: set a long random string, or remove it".into(),
            });
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(ConsoleError::Config {
                message: "[console] username and password go together: set both or neither".into(),
            });
        }
        if self.sample_interval < Duration::from_millis(100) {
            return Err(ConsoleError::Config {
                message: "[console] sample_interval must be at least 100ms".into(),
            });
        }
        if no_auth {
            if !listen.ip().is_loopback() {
                return Err(ConsoleError::Config {
                    message: format!(
                        "--no-auth is allowed only on a loopback address (127.0.0.1, ::1), not {listen}: configure [console] token (or username and password)"
                    ),
                });
            }
            return Ok(());
        }
        if self.token.is_none() && self.username.is_none() {
            return Err(ConsoleError::Config {
                message: "no authentication configured: set [console] token (or WEIR_CONSOLE_TOKEN), or username and password; on a loopback address --no-auth starts it without".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_the_console_section_and_ignores_the_rest() {
        let s = Settings::from_toml_str(
            "brokers = \"k:9092\"\n[kafka]\n\"security.protocol\" = \"SSL\"\n[console]\ntoken = \"t\"\nactions = true\nsample_interval = \"5s\"\nendpoints = [\"h:9464\"]\n",
        )
        .unwrap();
        assert_eq!(s.token.as_deref(), Some("t"));
        assert!(s.actions);
        assert!(!s.show_payloads);
        assert_eq!(s.sample_interval, Duration::from_secs(5));
        assert_eq!(s.endpoints, vec!["h:9464".to_string()]);
        let none = Settings::from_toml_str("brokers = \"k\"\n").unwrap();
        assert!(!none.actions && none.token.is_none());
    }

    #[test]
    fn unknown_keys_and_bad_flags_are_errors_that_name_them() {
        let e = Settings::from_toml_str("[console]\ntokn = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("tokn"), "{e}");
        let e = Settings::default()
            .with_env([("WEIR_CONSOLE_ACTIONS".to_string(), "maybe".to_string())])
            .unwrap_err();
        assert!(e.to_string().contains("WEIR_CONSOLE_ACTIONS"), "{e}");
    }

    #[test]
    fn env_overrides_the_file() {
        let s = Settings::default()
            .with_env([
                ("WEIR_CONSOLE_TOKEN".to_string(), "env".to_string()),
                ("WEIR_CONSOLE_ACTIONS".to_string(), "true".to_string()),
                ("WEIR_CONSOLE_ENDPOINTS".to_string(), "a:1, b:2".to_string()),
            ])
            .unwrap();
        assert_eq!(s.token.as_deref(), Some("env"));
        assert!(s.actions);
        assert_eq!(s.endpoints, vec!["a:1".to_string(), "b:2".to_string()]);
    }

    #[test]
    fn authentication_is_required_except_on_loopback_with_no_auth() {
        let open = Settings::default();
        assert!(open.validate(addr("127.0.0.1:9600"), false).is_err());
        assert!(open.validate(addr("127.0.0.1:9600"), true).is_ok());
        assert!(open.validate(addr("[::1]:9600"), true).is_ok());
        let e = open.validate(addr("0.0.0.0:9600"), true).unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        let with_token = Settings {
            token: Some("t".into()),
            ..Settings::default()
        };
        assert!(with_token.validate(addr("0.0.0.0:9600"), false).is_ok());
        let half = Settings {
            username: Some("u".into()),
            ..Settings::default()
        };
        assert!(half.validate(addr("127.0.0.1:1"), false).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let s = Settings {
            token: Some("sekrit-token".into()),
            password: Some("pw-value".into()),
            ..Settings::default()
        };
        let d = format!("{s:?}");
        assert!(
            !d.contains("sekrit-token") && !d.contains("pw-value"),
            "{d}"
        );
    }
}
