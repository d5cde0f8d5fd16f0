//! The few sysctls flatlan needs in the node's namespace.
//!
//! A pod's reply to DNATed traffic (ClusterIP via another node, or a
//! LoadBalancer IP with externalTrafficPolicy Local) is bridged, not routed,
//! when both ends sit on the LAN. Without bridge-nf-call-iptables the reply
//! skips conntrack, is not un-NATed, and the client resets the connection.
//! systemd-sysctl may revert runtime values; deploy/ ships a sysctl.d file.

use std::fs;

use crate::error::{Error, Result};

const BRIDGE_NF: &[&str] = &[
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];

/// Turns the bridge netfilter hooks on, writing only when needed.
pub fn ensure_br_netfilter() -> Result<()> {
    for path in BRIDGE_NF {
        match fs::read_to_string(path) {
            Ok(v) if v.trim() == "1" => {}
            Ok(_) => fs::write(path, "1").map_err(|e| Error::io("write", path, e))?,
            Err(e) => {
                return Err(Error::NotReady(format!(
                "{path} is unavailable ({e}); load the br_netfilter module (modprobe br_netfilter)"
            )))
            }
        }
    }
    Ok(())
}

/// Reports whether the hooks are on, without changing anything.
pub fn br_netfilter_problem() -> Option<String> {
    BRIDGE_NF
        .iter()
        .find_map(|path| match fs::read_to_string(path) {
            Ok(v) if v.trim() == "1" => None,
            Ok(v) => Some(format!("{path} is {} (must be 1)", v.trim())),
            Err(e) => Some(format!("{path} is unavailable ({e}); load br_netfilter")),
        })
}

const FORWARD_V4: &str = "/proc/sys/net/ipv4/ip_forward";
const FORWARD_V6: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// The forwarding switches a pod's Service traffic needs: kube-proxy DNATs
/// a ClusterIP in the node, and a backend on another node (or the LAN) is
/// then reached by routing. Only the families of the Service CIDRs count.
fn forwarding_paths(service_cidrs: &[ipnet::IpNet]) -> impl Iterator<Item = &'static str> {
    let v4 = service_cidrs.iter().any(|c| c.addr().is_ipv4());
    let v6 = service_cidrs.iter().any(|c| c.addr().is_ipv6());
    [(v4, FORWARD_V4), (v6, FORWARD_V6)]
        .into_iter()
        .filter_map(|(on, p)| on.then_some(p))
}

/// Turns forwarding on for the Service CIDRs' families, as the reference
/// bridge plugin's `isGateway` does; one read per family when it is on.
pub fn ensure_forwarding(service_cidrs: &[ipnet::IpNet]) -> Result<()> {
    for path in forwarding_paths(service_cidrs) {
        match fs::read_to_string(path) {
            Ok(v) if v.trim() == "1" => {}
            _ => fs::write(path, "1").map_err(|e| Error::io("write", path, e))?,
        }
    }
    Ok(())
}

/// Reports forwarding that is off, without changing anything.
pub fn forwarding_problem(service_cidrs: &[ipnet::IpNet]) -> Option<String> {
    forwarding_paths(service_cidrs).find_map(|path| match fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => None,
        Ok(v) => Some(format!(
            "{path} is {} (must be 1 for pods to reach Service CIDRs)",
            v.trim()
        )),
        Err(e) => Some(format!("{path} is unavailable ({e})")),
    })
}

/// Pod-side IPv6 policy, set before the interface comes up (RA processing
/// starts at link-up). The pod must not pick SLAAC addresses from the LAN
/// router's RAs: they would be unreported in the CNI result and untracked
/// by IPAM. RA routes are accepted only when flatlan installs no IPv6
/// default route itself, so the routing table is deterministic.
/// Runs on a thread inside the pod namespace: /proc/sys/net resolves to the
/// calling thread's namespace.
pub fn pod_ipv6_policy(ifname: &str, accept_ra: bool) -> Result<()> {
    let base = format!("/proc/sys/net/ipv6/conf/{ifname}");
    for (key, value) in [
        ("autoconf", "0"),
        ("accept_ra", if accept_ra { "1" } else { "0" }),
    ] {
        let path = format!("{base}/{key}");
        match fs::write(&path, value) {
            Ok(()) => {}
            // A kernel booted with ipv6.disable=1 has no IPv6 sysctls at
            // all: nothing to police.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && !std::path::Path::new("/proc/sys/net/ipv6").exists() =>
            {
                return Ok(())
            }
            // Otherwise a missing `conf/<ifname>` means this thread is not
            // in the namespace holding the pod's interface. Skipping would
            // leave SLAAC on in the pod, so refuse instead.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let why = format!("{ifname} is not in the pod's network namespace ({e})");
                return Err(Error::io("write", path, std::io::Error::new(e.kind(), why)));
            }
            Err(e) => return Err(Error::io("write", path, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_follows_the_service_cidrs_families() {
        let nets =
            |v: &[&str]| -> Vec<ipnet::IpNet> { v.iter().map(|s| s.parse().unwrap()).collect() };
        let paths = |v: &[&str]| forwarding_paths(&nets(v)).collect::<Vec<_>>();
        assert!(paths(&[]).is_empty(), "no Service CIDRs, no forwarding");
        assert_eq!(paths(&["10.43.0.0/16"]), [FORWARD_V4]);
        assert_eq!(paths(&["fd00:43::/112"]), [FORWARD_V6]);
        assert_eq!(
            paths(&["fd00:43::/112", "10.43.0.0/16", "10.44.0.0/16"]),
            [FORWARD_V4, FORWARD_V6]
        );
    }
}
