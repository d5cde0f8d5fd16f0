//! What a configuration reload (SIGHUP in static mode) may change in a
//! running speaker.
//!
//! A running speaker takes a new VIP list, peer list and interface allow
//! list without a restart: the engine reads those at decision time, so a
//! new VIP is probed and announced in one probe window (no warm-up listen,
//! which only a starting daemon needs), and a dropped VIP is handed over
//! make-before-break like the VIPs of a leaving node: still announced here
//! until the peer that takes it announces it too, or released at once when
//! no peer has it. Everything else
//! (node name, sockets, secret, timers, `assign`, endpoints) is fixed at
//! start: changing it live would need the sockets or the peers' view
//! rebuilt, so such changes are reported and ignored until a restart.
//!
//! The new file is validated as a whole first ([`crate::Config::load`]); a
//! bad file changes nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::config::Config;

/// The outcome of comparing the running config with a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// VIPs in the new file and not in the running config.
    pub added: Vec<IpAddr>,
    /// VIPs in the running config and not in the new file.
    pub removed: Vec<IpAddr>,
    /// Fields that differ but need a restart; the running values stay.
    pub needs_restart: Vec<&'static str>,
}

/// Compares `old` with `new` and returns what applying `new` changes, and
/// `old` with the live-applicable fields of `new` ([`apply`]).
pub fn plan(old: &Config, new: &Config) -> Plan {
    let before: BTreeSet<IpAddr> = old.vips.iter().map(|v| v.address).collect();
    let after: BTreeSet<IpAddr> = new.vips.iter().map(|v| v.address).collect();
    let mut needs_restart = Vec::new();
    let fixed: [(&'static str, bool); 11] = [
        (
            "node",
            old.node_name != new.node_name || old.node_address != new.node_address,
        ),
        ("listen", old.listen != new.listen),
        ("multicast", old.multicast != new.multicast),
        ("secret", old.secret != new.secret),
        ("timers", old.timers != new.timers),
        ("assign", old.assign != new.assign),
        ("metricsAddr", old.metrics_addr != new.metrics_addr),
        ("statusFile", old.status_file != new.status_file),
        ("stateDir", old.state_dir != new.state_dir),
        ("sysctlRoot", old.sysctl_root != new.sysctl_root),
        // A VIP pinned to another interface moves like a dropped-and-added
        // one would; simpler to ask for a restart than to half-move it.
        (
            "vips[].interface",
            old.vips.iter().any(|o| {
                new.vips
                    .iter()
                    .any(|n| n.address == o.address && n.interface != o.interface)
            }),
        ),
    ];
    for (name, differs) in fixed {
        if differs {
            needs_restart.push(name);
        }
    }
    Plan {
        added: after.difference(&before).copied().collect(),
        removed: before.difference(&after).copied().collect(),
        needs_restart,
    }
}

/// The config to run with after a reload: `old` with `new`'s VIPs, peers
/// and interface allow list.
pub fn apply(old: &Config, new: &Config) -> Config {
    let mut c = old.clone();
    c.peers = new.peers.clone();
    c.interfaces = new.interfaces.clone();
    c.vips = new
        .vips
        .iter()
        .map(|n| {
            // Keep the running interface pin of a VIP that stays (see
            // `needs_restart`).
            old.vips
                .iter()
                .find(|o| o.address == n.address)
                .unwrap_or(n)
                .clone()
        })
        .collect();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let y = format!("node: {{ name: a }}\nsecret: \"0123456789abcdef\"\n{extra}\n");
        Config::from_yaml(&y, &|_| Err(std::io::ErrorKind::NotFound.into()))
            .expect("valid test config")
    }

    #[test]
    fn vips_peers_and_interfaces_apply_live() {
        let old = cfg("vips: [{address: 10.0.0.1}, {address: 10.0.0.2}]\npeers: [10.0.0.9:7946]");
        let new = cfg(
            "vips: [{address: 10.0.0.2}, {address: 10.0.0.3}]\npeers: [10.0.0.8:7946]\ninterfaces: [eth1]",
        );
        let p = plan(&old, &new);
        assert_eq!(p.added, vec!["10.0.0.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(p.removed, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(p.needs_restart.is_empty(), "{:?}", p.needs_restart);
        let c = apply(&old, &new);
        assert_eq!(c.vips, new.vips);
        assert_eq!(c.peers, new.peers);
        assert_eq!(c.interfaces, vec!["eth1".to_string()]);
    }

    #[test]
    fn fixed_fields_are_reported_and_kept() {
        let old = cfg("vips: [{address: 10.0.0.1}]\nheartbeatInterval: 100ms");
        let new = cfg(
            "vips: [{address: 10.0.0.1, interface: eth1}]\nheartbeatInterval: 50ms\nlisten: 0.0.0.0:7000",
        );
        let p = plan(&old, &new);
        assert_eq!(
            p.needs_restart,
            vec!["listen", "timers", "vips[].interface"]
        );
        assert!(p.added.is_empty() && p.removed.is_empty());
        let c = apply(&old, &new);
        assert_eq!(c.timers, old.timers);
        assert_eq!(c.listen, old.listen);
        assert_eq!(c.vips, old.vips, "the running interface pin stays");
    }
}
