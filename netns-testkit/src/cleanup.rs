//! Removing what crashed or killed test processes left behind.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::Result;
use crate::names::{owner_pid, state_dir, NAME_PREFIX};
use crate::netns::{delete_by_name, list_names, NETNS_RUN_DIR};

fn is_dead(pid: u32) -> bool {
    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// True if `name` was made by a testkit process that no longer exists and
/// matches `filter` (a name prefix; `None` means any testkit name).
fn is_stale(name: &str, filter: Option<&str>) -> bool {
    let matches = name.starts_with(filter.unwrap_or(NAME_PREFIX));
    matches && owner_pid(name).is_some_and(is_dead)
}

/// Removes namespaces (and scratch files) left by testkit processes that
/// have died, e.g. a test run killed with SIGKILL, where no `Drop` ran.
/// Namespaces of live processes are never touched, so this is safe to run
/// while other tests are building labs.
///
/// Testkit daemons still running inside a stale namespace (an avahi-daemon
/// whose parent test died) are killed by PID, since a namespace lives on,
/// unnamed, as long as a process is in it. Any other process there is left
/// alone and logged.
///
/// Returns the names of the namespaces removed.
pub fn cleanup_stale(prefix_filter: Option<&str>) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_names()? {
        if !is_stale(&name, prefix_filter) {
            continue;
        }
        kill_processes_in(&Path::new(NETNS_RUN_DIR).join(&name));
        delete_by_name(&name);
        tracing::info!(ns = %name, "removed stale namespace");
        removed.push(name);
    }
    if let Ok(dir) = std::fs::read_dir(state_dir()) {
        for entry in dir.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_stale(&name, prefix_filter) {
                continue;
            }
            let path = entry.path();
            let res = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = res {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove stale file");
            }
        }
    }
    Ok(removed)
}

/// Process names (`/proc/PID/comm`) of what the lab, the demo and the bench
/// start inside their namespaces.
const TESTKIT_DAEMONS: &[&str] = &[
    "avahi-daemon",
    "dnsmasq",
    "iperf3",
    "flatlan-speaker",
    "flatlan",
];

/// The processes (PID, `comm`) whose network namespace is the one bound at
/// `ns_path`: what `ip netns pids` finds, without running a process.
pub fn processes_in(ns_path: &Path) -> Vec<(i32, String)> {
    let Ok(target) = std::fs::metadata(ns_path) else {
        return Vec::new();
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in procs.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(ns) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if ns.ino() == target.ino() && ns.dev() == target.dev() {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            out.push((pid, comm.trim().to_owned()));
        }
    }
    out
}

/// SIGKILLs the testkit daemons in the network namespace bound at `ns_path`.
fn kill_processes_in(ns_path: &Path) {
    for (pid, comm) in processes_in(ns_path) {
        // Only the daemons the testkit itself starts are ended; anything
        // else (someone's `ip netns exec bash`) is left alone and named.
        if !TESTKIT_DAEMONS.contains(&comm.as_str()) {
            tracing::warn!(pid, comm, ns = %ns_path.display(), "not ours to kill; left running");
            continue;
        }
        tracing::info!(pid, comm, ns = %ns_path.display(), "killing testkit daemon left in stale namespace");
        if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGKILL) {
            tracing::warn!(pid, error = %e, "cannot kill");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_owners_are_stale() {
        let me = std::process::id();
        assert!(!is_stale(&format!("fl{me}l0-switch"), None));
        // i32::MAX is above the kernel's pid_max (at most 2^22), so never alive.
        assert!(is_stale(&format!("fl{}l3-node1", i32::MAX), None));
        assert!(!is_stale("cni-1234-5678", None));
        assert!(!is_stale(&format!("fl{}l3-node1", i32::MAX), Some("fl1l")));
        assert!(is_stale(
            &format!("fl{}l3-node1", i32::MAX),
            Some(&format!("fl{}l3", i32::MAX))
        ));
    }
}
