//! The audit log: one JSON line per action (who, what, when, result),
//! appended to a file and kept in memory for the audit page.

use std::io::Write as _;
use std::path::PathBuf;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// One audited action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who: `token`, the user name, `anonymous` (`--no-auth`), or the address of a refused login.
    pub who: String,
    /// What: `login`, `login_refused`, `dlq_replay_dry_run`, `dlq_replay`,
    /// `offsets_reset_dry_run`, `offsets_reset`, `refused`.
    pub action: String,
    /// On what (a DLQ topic, a group and topic).
    pub target: String,
    /// The parameters (filters, selection, reset target).
    pub params: serde_json::Value,
    /// The outcome: counts sent, the plan, the refusal's reason.
    pub result: String,
}

/// The log: the file, and the newest entries in memory.
pub(crate) struct AuditLog {
    path: PathBuf,
    recent: Mutex<Vec<Entry>>,
}

const KEEP: usize = 500;

impl AuditLog {
    /// Opens `path` (created on the first entry), loading its last entries.
    pub(crate) fn open(path: PathBuf) -> Self {
        let mut recent: Vec<Entry> = std::fs::read_to_string(&path)
            .map(|t| {
                t.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .unwrap_or_default();
        let skip = recent.len().saturating_sub(KEEP);
        recent.drain(..skip);
        AuditLog {
            path,
            recent: Mutex::new(recent),
        }
    }

    /// Appends an entry. A log that cannot be written is reported (and the
    /// entry kept in memory): the action has happened either way.
    pub(crate) fn record(
        &self,
        who: &str,
        action: &str,
        target: &str,
        params: serde_json::Value,
        result: impl Into<String>,
    ) -> Result<(), std::io::Error> {
        let e = Entry {
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            who: who.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            params,
            result: result.into(),
        };
        tracing::info!(who, action, target, result = %e.result, "console action");
        let line = serde_json::to_string(&e).unwrap_or_default();
        {
            let mut r = self.recent.lock();
            r.push(e);
            if r.len() > KEEP {
                r.remove(0);
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(f, "{line}")?;
        f.flush()
    }

    /// The newest entries, newest first.
    pub(crate) fn recent(&self) -> Vec<Entry> {
        self.recent.lock().iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_json_lines_and_reloads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(path.clone());
        log.record(
            "token",
            "dlq_replay",
            "orders.dlq",
            serde_json::json!({"class": "x"}),
            "sent 4",
        )
        .unwrap();
        log.record(
            "oncall",
            "offsets_reset",
            "g/orders",
            serde_json::json!({}),
            "ok",
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let again = AuditLog::open(path);
        let r = again.recent();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].who, "oncall", "newest first");
        assert_eq!(r[1].result, "sent 4");
        assert_eq!(r[1].params["class"], "x");
    }

    #[test]
    fn an_unwritable_log_is_an_error_but_the_entry_is_kept() {
        let log = AuditLog::open(PathBuf::from("/nonexistent-dir/audit.jsonl"));
        assert!(
            log.record("t", "a", "b", serde_json::json!({}), "r")
                .is_err()
        );
        assert_eq!(log.recent().len(), 1);
    }
}
