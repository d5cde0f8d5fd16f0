//! Making the owner accept traffic for its VIPs in static mode.
//!
//! Announcing a VIP only steers the LAN's frames to the owner's MAC; without
//! kube-proxy (static mode) the owner's kernel must also consider the VIP a
//! local address. With `assign: true` (the default) the speaker:
//!
//! - adds the VIP as a host address (`/32`, `/128`) to `lo` while it owns it
//!   and removes it on release (and, at start, removes leftovers from a
//!   previous run that was killed), through rtnetlink ([`crate::netlink`]:
//!   one pipelined netlink round per batch, no process), and puts it back
//!   if someone removes it while it is owned (the engine sees that in the
//!   address events of [`crate::link_events`], see [`lost`]);
//! - sets `net.ipv4.conf.<if>.arp_ignore=1` on the announcing interface
//!   and on `all` (every other interface, see [`crate::sysctls`]), so the
//!   kernel answers ARP only for addresses configured *on the receiving
//!   interface* and never for the VIP on `lo`. Otherwise every node that
//!   ever held the VIP would answer, and so would a second NIC of the
//!   owner, and the LAN's caches would flap between them: only the speaker
//!   answers, and only on the owner's announcing interface;
//! - sets `arp_announce=2`, so the kernel never uses the VIP as the sender
//!   address of its own ARP requests (which would poison caches with a
//!   non-owner's MAC).
//!
//! IPv6 needs no sysctl: Linux answers an NS only for addresses on the
//! receiving interface, so a VIP on `lo` is answered by the speaker alone.
//! The sysctls are runtime settings; a host that re-applies sysctl.d files
//! (systemd-sysctl) may revert them, so deployments should also ship them
//! in `/etc/sysctl.d/` (STYLE "Pitfalls"). The speaker records the values
//! it replaced (in `stateDir`, so a crash does not lose them) and puts them
//! back on a clean exit, so stopping it leaves the host as it found it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::iface::IfaceInfo;
use crate::netlink::HostRoutes;
use crate::sysctls::{record_path, ArpSysctls};

/// The host operations `assign` needs, behind a trait so the engine can be
/// run with a recorder (or with `assign: false`).
pub trait HostAddrs: Send {
    /// Sets `arp_ignore`/`arp_announce` on the announcing interface and
    /// remembers the values it replaced, for [`Self::restore_ifaces`]. The
    /// engine calls it once per interface (again only if the interface was
    /// recreated, with a new ifindex, whose fresh values are then the ones
    /// to restore; not for a new MAC on the same device).
    fn prepare_iface(&mut self, iface: &str) -> Result<()>;
    /// Puts back the sysctl values [`Self::prepare_iface`] replaced (clean
    /// exit, once nothing is assigned any more).
    fn restore_ifaces(&mut self) {}
    /// Adds VIPs to `lo`, all at once (a claim burst after a failover can
    /// move hundreds), and returns the ones that could not be added: the
    /// caller must not announce those. Nothing to add costs nothing.
    fn add_many(&mut self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)>;
    /// Removes VIPs from `lo` and returns the ones that could not be
    /// removed (absent ones are fine and not returned). One failure does
    /// not stop the others. Nothing to remove costs nothing.
    fn del_many(&mut self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)>;
}

/// Does nothing (`assign: false`, e.g. when kube-proxy handles the VIP).
#[derive(Debug, Default)]
pub struct NoAssign;

impl HostAddrs for NoAssign {
    fn prepare_iface(&mut self, _: &str) -> Result<()> {
        Ok(())
    }
    fn add_many(&mut self, _: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        Vec::new()
    }
    fn del_many(&mut self, _: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        Vec::new()
    }
}

/// The real thing: rtnetlink for the address, `/proc/sys` for sysctls
/// (both act on the caller's network namespace; see [`ArpSysctls`]).
#[derive(Debug)]
pub struct LoopbackAssign {
    sysctls: ArpSysctls,
    lo: HostRoutes,
}

impl LoopbackAssign {
    /// Opens the rtnetlink connection for `lo`, records the sysctl
    /// originals in `state_dir`, and restores what a crashed run recorded
    /// there; the sysctls are those under `sysctl_root` (`/proc/sys`).
    pub fn new(state_dir: &std::path::Path, sysctl_root: &std::path::Path) -> Result<Self> {
        Ok(LoopbackAssign {
            sysctls: ArpSysctls::with_root(sysctl_root.into(), record_path(state_dir)),
            lo: HostRoutes::open("lo")?,
        })
    }
}

impl HostAddrs for LoopbackAssign {
    fn prepare_iface(&mut self, iface: &str) -> Result<()> {
        self.sysctls.prepare(iface)
    }

    fn restore_ifaces(&mut self) {
        self.sysctls.restore();
    }

    fn add_many(&mut self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        self.lo.add_many(vips)
    }

    fn del_many(&mut self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        self.lo.del_many(vips)
    }
}

/// The VIPs of `assigned` (on `lo` by our doing) that `lo` no longer
/// has: someone removed them (an `ip addr flush`, a network manager), and
/// the kernel drops their traffic while we still announce them. The
/// engine puts them back. An absent `lo` loses nothing: no table to judge.
pub fn lost(assigned: &BTreeSet<IpAddr>, lo: Option<&IfaceInfo>) -> Vec<IpAddr> {
    let Some(lo) = lo else {
        return Vec::new();
    };
    let on_lo: BTreeSet<IpAddr> = lo
        .nets
        .iter()
        .filter(|n| n.prefix_len() == n.max_prefix_len())
        .map(|n| n.addr())
        .collect();
    assigned.difference(&on_lo).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flatlan_l2::mac::MacAddr;

    #[test]
    fn a_vip_missing_from_lo_is_lost() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let lo = IfaceInfo {
            name: "lo".into(),
            index: 1,
            mac: MacAddr::ZERO,
            running: true,
            nets: ["127.0.0.1/8", "10.0.0.1/32", "fd00::1/128", "10.0.0.3/24"]
                .iter()
                .map(|n| n.parse().unwrap())
                .collect(),
        };
        let assigned: BTreeSet<IpAddr> = ["10.0.0.1", "fd00::1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|s| ip(s))
            .collect();
        // 10.0.0.3 is there, but as a /24: not our host address.
        assert_eq!(
            lost(&assigned, Some(&lo)),
            vec![ip("10.0.0.2"), ip("10.0.0.3")]
        );
        assert!(lost(&assigned, None).is_empty());
        assert!(lost(&BTreeSet::new(), Some(&lo)).is_empty());
    }
}
