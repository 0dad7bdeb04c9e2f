//! A child process in a process group of its own that cannot outlive the test
//! process: the group is killed on drop (panics included), and a watchdog
//! (`sh`, reading a pipe from this process) kills it when this process dies
//! without dropping it (abort, SIGKILL).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::TestkitError;

/// A supervised child process (see the module docs).
#[derive(Debug)]
pub(crate) struct Supervised {
    child: Child,
    watchdog: Option<Child>,
    what: String,
}

impl Supervised {
    /// Spawns `cmd` as the leader of a new process group, with its watchdog.
    pub(crate) fn spawn(mut cmd: Command, what: &str) -> Result<Self, TestkitError> {
        let child = cmd
            .process_group(0)
            .spawn()
            .map_err(TestkitError::io(format!("starting {what}")))?;
        let pgid = child.id();
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while read -r _; do :; done; kill -9 -{pgid} 2>/dev/null"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let watchdog = match watchdog {
            Ok(w) => Some(w),
            Err(e) => {
                let mut s = Supervised {
                    child,
                    watchdog: None,
                    what: what.to_string(),
                };
                s.kill_now();
                return Err(TestkitError::io(format!(
                    "starting the watchdog of {what} (sh)"
                ))(e));
            }
        };
        Ok(Supervised {
            child,
            watchdog,
            what: what.to_string(),
        })
    }

    /// The group leader's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the whole process group.
    pub(crate) fn signal(&self, sig: Signal) -> Result<(), TestkitError> {
        kill(Pid::from_raw(-(self.child.id() as i32)), sig)
            .map_err(|e| TestkitError::Other(format!("sending {sig} to {}: {e}", self.what)))
    }

    /// The exit status, if the process has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for the process to exit, then SIGKILLs the group.
    pub(crate) fn reap(mut self, limit: Duration) -> Result<(), TestkitError> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if start.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    self.kill_now();
                    return Ok(());
                }
                Err(e) => return Err(TestkitError::io(format!("waiting for {}", self.what))(e)),
            }
        }
    }

    fn kill_now(&mut self) {
        let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill_now();
        }
        if let Some(mut w) = self.watchdog.take() {
            drop(w.stdin.take());
            let _ = w.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A reaped process is gone; kill(pid, 0) fails with ESRCH.
        kill(Pid::from_raw(pid as i32), None).is_ok()
    }

    #[test]
    fn drop_kills_the_whole_group() {
        // sh starts a grandchild (sleep) in the same group, then waits.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("sleep 300 & echo $! > \"$0\"; wait")
            .arg(std::env::temp_dir().join(format!("weir-supervised-{}", std::process::id())));
        let s = Supervised::spawn(cmd, "a test shell").unwrap();
        let pid_file = std::env::temp_dir().join(format!("weir-supervised-{}", std::process::id()));
        let start = Instant::now();
        let grandchild = loop {
            if let Ok(t) = std::fs::read_to_string(&pid_file)
                && let Ok(p) = t.trim().parse::<u32>()
            {
                break p;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no pid file");
            std::thread::sleep(Duration::from_millis(10));
        };
        let leader = s.pid();
        assert!(alive(grandchild));
        drop(s);
        // The grandchild is not our child: it is reparented and reaped by init,
        // or left a zombie for a moment; wait for it to disappear or die.
        let start = Instant::now();
        while alive(grandchild) && !is_zombie(grandchild) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "grandchild {grandchild} survived drop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(leader) || is_zombie(leader));
        let _ = std::fs::remove_file(pid_file);
    }

    fn is_zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    }

    #[test]
    fn reap_returns_the_exit_and_signal_reaches_the_group() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("sleep 300");
        let mut s = Supervised::spawn(cmd, "a test shell").unwrap();
        assert!(s.exited().is_none());
        s.signal(Signal::SIGTERM).unwrap();
        let start = Instant::now();
        while s.exited().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "SIGTERM did not end it"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        s.reap(Duration::from_secs(1)).unwrap();
    }
}
