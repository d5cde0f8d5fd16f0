//! What the daemon gives up before it starts: every capability it does
//! not need, and the soft limit on open files that an HTTP client could
//! otherwise use up (issue 12, findings 5 and 7).
//!
//! The speaker needs `CAP_NET_RAW` (its `AF_PACKET` sockets) and
//! `CAP_NET_ADMIN` (the VIPs on `lo` through rtnetlink, the ARP sysctls),
//! and `CAP_NET_BIND_SERVICE` only if a port it binds is below 1024. It
//! runs as root (it writes `/proc/sys`), so without this it would hold
//! every capability. The bounding set is narrowed too: a root process that
//! execs gets its bounding set back as permitted capabilities. The speaker
//! execs nothing (no `ip` since issue 11 item 2), so nothing is passed on:
//! the inheritable and ambient sets are emptied, also for a non-root
//! speaker that was given the two capabilities as ambient ones.
//!
//! Capabilities belong to a thread: this runs before the runtime and the
//! heartbeat thread exist, so every thread inherits the narrowed sets.

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::config::Config;
use crate::error::{Error, Result};

/// The capabilities the speaker keeps with `cfg`.
pub fn needed(cfg: &Config) -> CapsHashSet {
    let mut keep = CapsHashSet::from([Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN]);
    let low = |port: u16| port != 0 && port < 1024;
    if low(cfg.listen.port()) || cfg.metrics_addr.is_some_and(|a| low(a.port())) {
        keep.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    keep
}

/// Drops every capability but [`needed`] from the bounding, inheritable,
/// ambient, permitted and effective sets. Call it while the process has
/// one thread.
pub fn drop_capabilities(cfg: &Config) -> Result<()> {
    let keep = needed(cfg);
    let err = |what: &str, e: caps::errors::CapsError| {
        Error::sys(
            format!("drop capabilities: {what}"),
            std::io::Error::other(e.to_string()),
        )
    };
    // The ambient set is absent on old kernels: nothing to clear then.
    if let Err(e) = caps::clear(None, CapSet::Ambient) {
        tracing::debug!("ambient capabilities: {e}");
    }
    // Narrowing the bounding set needs CAP_SETPCAP, which root has; a
    // non-root speaker given only what it needs has nothing to narrow
    // that matters (it cannot regain capabilities by exec).
    let bounding = caps::read(None, CapSet::Bounding).map_err(|e| err("read bounding set", e))?;
    for cap in bounding.difference(&keep) {
        if let Err(e) = caps::drop(None, CapSet::Bounding, *cap) {
            tracing::debug!(%cap, "cannot drop from the bounding set: {e}");
            break;
        }
    }
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| err("read permitted", e))?;
    let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(|e| err("inheritable", e))?;
    caps::set(None, CapSet::Effective, &kept).map_err(|e| err("effective", e))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| err("permitted", e))?;
    for cap in keep.difference(&kept) {
        tracing::warn!(%cap, "missing capability: the speaker will fail where it needs it");
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: the endpoint
/// caps its connections, and this leaves room for the engine's sockets.
/// Returns the new soft limit.
pub fn raise_fd_limit() -> Result<u64> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| Error::sys("getrlimit", e.into()))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .map_err(|e| Error::sys("setrlimit RLIMIT_NOFILE", e.into()))?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_below_1024_keep_net_bind_service() {
        let no_files = |_: &std::path::Path| Err(std::io::ErrorKind::NotFound.into());
        let yaml = |extra: &str| {
            format!(
                "node: {{ name: a }}\nsecret: \"0123456789abcdef0123\"\n\
                 vips: [{{ address: 10.0.0.1 }}]\n{extra}"
            )
        };
        let base = Config::from_yaml(&yaml(""), &no_files).unwrap();
        assert_eq!(
            needed(&base),
            CapsHashSet::from([Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN])
        );
        let low = Config::from_yaml(&yaml("metricsAddr: 127.0.0.1:80\n"), &no_files).unwrap();
        assert!(needed(&low).contains(&Capability::CAP_NET_BIND_SERVICE));
    }
}
