//! Running external commands with captured output and a hard deadline.
//!
//! Every command the lab runs goes through [`run`], so nothing can hang a
//! test: a command that overruns its deadline is killed (by the PID of the
//! child we still own, so the PID cannot have been recycled).

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Deadline for commands that build or inspect topology; generous because
/// the machines are shared and noisy.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long we wait for stdout/stderr to reach EOF after the child exited.
/// A grandchild that inherited the pipes (a daemon started by a script)
/// would otherwise keep us waiting forever.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// `program arg arg...` for error messages and logs.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error just truncates the captured output.
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` to completion, feeding `stdin`, and returns its output
/// whatever the exit status. Fails only if it cannot start or overruns.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let what = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        cmd: what.clone(),
        source,
    })?;
    tracing::trace!(cmd = %what, pid = child.id(), "spawned");

    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        // Written from a thread: a large script and a chatty child could
        // otherwise deadlock on full pipes.
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out_rx = child.stdout.take().map(spawn_reader);
    let err_rx = child.stderr.take().map(spawn_reader);

    let status = wait_deadline(&mut child, crate::process::deadline_after(timeout));
    let status = match status {
        Some(s) => s,
        None => {
            // Still our un-reaped child, so this PID is still the one we started.
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::CommandTimeout { cmd: what, timeout });
        }
    };
    let collect = |rx: Option<mpsc::Receiver<Vec<u8>>>| {
        rx.and_then(|rx| rx.recv_timeout(DRAIN_GRACE).ok())
            .unwrap_or_default()
    };
    let output = Output {
        status,
        stdout: collect(out_rx),
        stderr: collect(err_rx),
    };
    tracing::trace!(cmd = %what, ?status, elapsed = ?started.elapsed(), "finished");
    Ok(output)
}

/// Waits until the child exits or the deadline passes (then it is killed
/// and `None` returned).
///
/// The wait is a blocking `waitid(WNOWAIT)`, so elapsed times measured
/// around [`run`] are exact (the CNI bench compares millisecond plugins;
/// polling would round them up by up to a poll interval). WNOWAIT leaves
/// the child un-reaped until the watchdog thread is gone, so the
/// watchdog's SIGKILL can only ever hit our own child, running or zombie,
/// never a recycled PID.
fn wait_deadline(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let Ok(raw) = i32::try_from(child.id()) else {
        return poll_deadline(child, deadline);
    };
    let pid = Pid::from_raw(raw);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let watchdog = thread::Builder::new()
        .name("cmd-watchdog".into())
        .spawn(move || {
            let left = deadline.saturating_duration_since(Instant::now());
            match stop_rx.recv_timeout(left) {
                Err(mpsc::RecvTimeoutError::Timeout) => kill(pid, Signal::SIGKILL).is_ok(),
                _ => false,
            }
        });
    let Ok(watchdog) = watchdog else {
        return poll_deadline(child, deadline);
    };
    let waited = loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    let _ = stop_tx.send(());
    // A watchdog that cannot be joined is treated as having fired.
    let killed = watchdog.join().unwrap_or(true);
    if let Err(e) = waited {
        tracing::warn!(error = %e, "waitid failed; polling instead");
        return poll_deadline(child, deadline);
    }
    match child.wait() {
        Ok(_) if killed => None,
        Ok(status) => Some(status),
        Err(e) => {
            tracing::warn!(error = %e, "wait failed after waitid; polling instead");
            poll_deadline(child, deadline)
        }
    }
}

/// The fallback: polls the child (starting at 100 µs) until it exits or
/// the deadline passes.
fn poll_deadline(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_micros(100);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "try_wait failed; treating the child as still running");
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Like [`run`], but a non-zero exit is an error that carries stderr.
pub(crate) fn run_ok(cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let what = describe(&cmd);
    let out = run(cmd, stdin, timeout)?;
    check(&what, out)
}

pub(crate) fn check(what: &str, out: Output) -> Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::CommandFailed {
            cmd: what.to_owned(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let mut c = Command::new("sh");
        c.args(["-c", "cat; echo oops >&2; exit 3"]);
        let out = run(c, Some(b"hello"), Duration::from_secs(5)).expect("runs");
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn run_ok_reports_stderr() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo bad thing >&2; exit 1"]);
        let err = run_ok(c, None, Duration::from_secs(5)).expect_err("fails");
        assert!(err.to_string().contains("bad thing"), "{err}");
    }

    #[test]
    fn overrunning_command_is_killed() {
        let mut c = Command::new("sleep");
        c.arg("10");
        let t = Instant::now();
        let err = run(c, None, Duration::from_millis(100)).expect_err("times out");
        assert!(err.is_timeout(), "{err}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn missing_binary_is_a_spawn_error() {
        let c = Command::new("/nonexistent/flatlan-nothing");
        let err = run(c, None, Duration::from_secs(1)).expect_err("no binary");
        assert!(matches!(err, Error::Spawn { .. }), "{err}");
    }
}
