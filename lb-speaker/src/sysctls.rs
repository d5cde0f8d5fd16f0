//! The ARP sysctls the speaker sets while it may announce, and putting
//! them back (see [`crate::assign`] for why they are needed).
//!
//! `arp_ignore=1` and `arp_announce=2` go on the announcing interface and
//! on `all`: the kernel applies the larger of the two, so `all` covers
//! every other interface too, also one created later. Without it a second
//! NIC answers ARP for a VIP on `lo` with its own MAC (issue 12, finding
//! 6). It is what kube-proxy's IPVS `strictARP` sets as well, and it
//! changes nothing for an address on the interface the request came in on.
//! IPv6 needs nothing: Linux answers an NS only for an address on the
//! receiving interface.
//!
//! The values replaced are written to `stateDir` (one file per network
//! namespace) before anything is changed, so that a run after a crash
//! restores the originals rather than the values the crashed run had set
//! (finding 7); a clean exit restores them and removes the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The sysctls and the values the speaker needs.
const SETTINGS: [(&str, &str); 2] = [("arp_ignore", "1"), ("arp_announce", "2")];

/// What was replaced, and where that is recorded.
#[derive(Debug)]
pub struct ArpSysctls {
    /// `/proc/sys` (a directory of fakes in tests).
    root: PathBuf,
    /// Sysctl path and the value it had before we set it.
    saved: BTreeMap<String, String>,
    /// Paths whose saved value came from the record of an earlier run:
    /// the current value is that run's, not the original.
    inherited: BTreeSet<String>,
    record: Option<PathBuf>,
}

impl Default for ArpSysctls {
    fn default() -> Self {
        ArpSysctls::with_root(PathBuf::from("/proc/sys"), None)
    }
}

/// The record file of the current network namespace in `state_dir`.
pub fn record_path(state_dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata("/proc/self/ns/net").ok()?.ino();
    Some(state_dir.join(format!("sysctl-netns-{ino}.json")))
}

impl ArpSysctls {
    /// Sysctls under `root`, recorded in `record` (read now, if an earlier
    /// run left one).
    pub fn with_root(root: PathBuf, record: Option<PathBuf>) -> Self {
        let mut s = ArpSysctls {
            root,
            saved: BTreeMap::new(),
            inherited: BTreeSet::new(),
            record,
        };
        if let Some(p) = &s.record {
            match std::fs::read(p) {
                Ok(bytes) => match serde_json::from_slice::<BTreeMap<String, String>>(&bytes) {
                    Ok(saved) => {
                        tracing::info!(record = %p.display(),
                            "an earlier run did not restore its sysctls: their originals are \
                             restored on exit");
                        s.inherited = saved.keys().cloned().collect();
                        s.saved = saved;
                    }
                    Err(e) => tracing::warn!(record = %p.display(), "unreadable, ignored: {e}"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(record = %p.display(), "cannot read: {e}"),
            }
        }
        s
    }

    /// Sets the sysctls for announcing on `iface` (and on `all`). The
    /// engine calls it again only for a recreated interface, whose fresh
    /// values are then the ones to restore.
    pub fn prepare(&mut self, iface: &str) -> Result<()> {
        let mut changes = Vec::new();
        for dev in ["all", iface] {
            for (key, val) in SETTINGS {
                let path = self
                    .root
                    .join(format!("net/ipv4/conf/{dev}/{key}"))
                    .display()
                    .to_string();
                // `all` is saved once per run; an interface's value is
                // current again once it was set in this run.
                let keep = self.inherited.remove(&path)
                    || (dev == "all" && self.saved.contains_key(&path));
                if !keep {
                    let old = std::fs::read_to_string(&path)
                        .map_err(|e| Error::sys(format!("read {path}"), e))?;
                    self.saved.insert(path.clone(), old.trim().to_owned());
                }
                changes.push((path, val));
            }
        }
        // Recorded before anything changes: a crash in between still
        // leaves the originals known.
        self.persist();
        for (path, val) in changes {
            std::fs::write(&path, val).map_err(|e| Error::sys(format!("write {path}"), e))?;
        }
        Ok(())
    }

    /// Puts back every value replaced (also those an earlier run left)
    /// and removes the record.
    pub fn restore(&mut self) {
        let mut failed = false;
        for (path, old) in std::mem::take(&mut self.saved) {
            match std::fs::write(&path, &old) {
                Ok(()) => tracing::debug!(%path, %old, "sysctl restored"),
                // The interface is gone: nothing left to restore.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    failed = true;
                    tracing::warn!(%path, %old, "cannot restore sysctl: {e}");
                }
            }
        }
        self.inherited.clear();
        if let (Some(p), false) = (&self.record, failed) {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(record = %p.display(), "cannot remove: {e}"),
            }
        }
    }

    fn persist(&self) {
        let Some(p) = &self.record else { return };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = p.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&self.saved).unwrap_or_default())?;
            std::fs::rename(&tmp, p)
        };
        if let Err(e) = write() {
            tracing::warn!(record = %p.display(),
                "cannot record the sysctl originals (a crash would leave ours): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(devs: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for dev in devs {
            let conf = d.path().join(format!("net/ipv4/conf/{dev}"));
            std::fs::create_dir_all(&conf).unwrap();
            std::fs::write(conf.join("arp_ignore"), "0\n").unwrap();
            std::fs::write(conf.join("arp_announce"), "0\n").unwrap();
        }
        d
    }

    fn values(root: &Path, dev: &str) -> String {
        let get = |k: &str| {
            std::fs::read_to_string(root.join(format!("net/ipv4/conf/{dev}/{k}")))
                .unwrap()
                .trim()
                .to_owned()
        };
        format!("{} {}", get("arp_ignore"), get("arp_announce"))
    }

    #[test]
    fn all_and_the_interface_are_set_and_restored() {
        let proc = fake_proc(&["all", "eth0", "eth1"]);
        let mut s = ArpSysctls::with_root(proc.path().into(), None);
        s.prepare("eth0").unwrap();
        s.prepare("eth1").unwrap();
        for dev in ["all", "eth0", "eth1"] {
            assert_eq!(values(proc.path(), dev), "1 2", "{dev}");
        }
        s.restore();
        for dev in ["all", "eth0", "eth1"] {
            assert_eq!(values(proc.path(), dev), "0 0", "{dev}");
        }
    }

    /// A run killed while the sysctls were set: the next run restores the
    /// originals, not the values the killed run had set.
    #[test]
    fn a_run_after_a_crash_restores_the_originals() {
        let proc = fake_proc(&["all", "eth0"]);
        let state = tempfile::tempdir().unwrap();
        let record = state.path().join("sysctl.json");
        let mut crashed = ArpSysctls::with_root(proc.path().into(), Some(record.clone()));
        crashed.prepare("eth0").unwrap();
        drop(crashed);
        assert!(record.exists());
        let mut next = ArpSysctls::with_root(proc.path().into(), Some(record.clone()));
        next.prepare("eth0").unwrap();
        // A recreated eth0 (fresh values) is prepared again: its fresh
        // value is the one to restore.
        for k in ["arp_ignore", "arp_announce"] {
            std::fs::write(proc.path().join(format!("net/ipv4/conf/eth0/{k}")), "0").unwrap();
        }
        next.prepare("eth0").unwrap();
        next.restore();
        assert_eq!(values(proc.path(), "all"), "0 0");
        assert_eq!(values(proc.path(), "eth0"), "0 0");
        assert!(!record.exists(), "removed on a clean exit");
        // Even a run that never prepares restores what a crash left.
        let mut crashed = ArpSysctls::with_root(proc.path().into(), Some(record.clone()));
        crashed.prepare("eth0").unwrap();
        drop(crashed);
        ArpSysctls::with_root(proc.path().into(), Some(record)).restore();
        assert_eq!(values(proc.path(), "eth0"), "0 0");
    }
}
