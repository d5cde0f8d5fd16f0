//! Background processes started inside a namespace.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::command::describe;
use crate::error::{Error, Result};
use crate::names::state_dir;
use crate::scratch::ScratchDir;

static LOG_COUNTER: AtomicU32 = AtomicU32::new(0);

/// `now + timeout`, saturating: a caller's "wait forever"
/// (`Duration::MAX`) must not panic on `Instant` overflow.
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// How long a process gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(500);

/// A process we started. Dropping the handle terminates it (SIGTERM, then
/// SIGKILL), reaps it and removes its log.
///
/// The PID is only signalled while the child is un-reaped, so it can never
/// hit a recycled PID belonging to someone else.
#[derive(Debug)]
pub struct ProcHandle {
    child: Child,
    cmd: String,
    log: PathBuf,
    exited: Option<ExitStatus>,
    /// Files the process uses (configs, leases); removed after it is gone.
    scratch: Option<ScratchDir>,
}

impl ProcHandle {
    pub(crate) fn spawn(mut cmd: Command, label: &str) -> Result<ProcHandle> {
        let what = describe(&cmd);
        let dir = state_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let n = LOG_COUNTER.fetch_add(1, Ordering::Relaxed);
        let log = dir.join(format!("{label}-{n}.log"));
        let out =
            File::create(&log).map_err(|e| Error::io(format!("create {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("dup {}", log.display()), e))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            cmd: what.clone(),
            source,
        })?;
        tracing::debug!(cmd = %what, pid = child.id(), log = %log.display(), "started");
        Ok(ProcHandle {
            child,
            cmd: what,
            log,
            exited: None,
            scratch: None,
        })
    }

    pub(crate) fn keep_dir(&mut self, dir: ScratchDir) {
        self.scratch = Some(dir);
    }

    /// The process ID (of the final program: `ip netns exec`, `unshare`
    /// and `sh -c 'exec ...'` all exec in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.cmd
    }

    /// Its exit status if it has exited (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s);
            }
        }
        self.exited
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends `signal` (e.g. SIGKILL to simulate a node dying). A process
    /// that already exited is not signalled and this returns Ok.
    pub fn kill(&mut self, signal: Signal) -> Result<()> {
        if self.try_status().is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id())
            .map_err(|_| Error::InvalidConfig(format!("pid {} out of range", self.child.id())))?;
        kill(Pid::from_raw(pid), signal).map_err(|e| Error::sys(format!("kill {pid}"), e))
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = deadline_after(timeout);
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the log contains `needle` (a daemon's "ready" line).
    /// Fails early, with the log, if the process exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = deadline_after(timeout);
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_status() {
                // It may have written the line just before exiting.
                if self.log().contains(needle) {
                    return Ok(());
                }
                return Err(Error::Probe {
                    what: format!("waiting for {needle:?} from `{}`", self.cmd),
                    detail: format!("process exited ({status}); log:\n{}", self.log()),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "waiting for {needle:?} from `{}`; log so far:\n{}",
                        self.cmd,
                        self.log()
                    ),
                    timeout,
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ProcHandle {
    fn drop(&mut self) {
        if let Some(status) = self.try_status() {
            // It died on its own before we stopped it: worth a line in the
            // test output.
            tracing::debug!(cmd = %self.cmd, %status, log = %self.log(), "process had already exited");
        } else {
            if let Err(e) = self.kill(Signal::SIGTERM) {
                tracing::warn!(cmd = %self.cmd, error = %e, "SIGTERM failed");
            }
            if self.wait_timeout(TERM_GRACE).is_none() {
                let _ = self.child.kill();
                if let Err(e) = self.child.wait() {
                    tracing::warn!(cmd = %self.cmd, error = %e, "cannot reap process");
                }
            }
        }
        if std::env::var_os("FLATLAN_LAB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_for_ever_does_not_overflow() {
        let far = deadline_after(Duration::MAX);
        assert!(far > Instant::now() + Duration::from_secs(365 * 24 * 3600));
        let soon = deadline_after(Duration::from_millis(5));
        assert!(soon <= Instant::now() + Duration::from_millis(5));
    }
}
