//! The plugin's side of IPAM: maps the CNI config onto flatlan-ipam's pools
//! and policy, and lends it a probe on the bridge. Which address a pod
//! gets, quarantines, remembered identities and the probe-ahead's verdicts
//! are flatlan-ipam's (`ipam/src/policy.rs`).

use std::net::IpAddr;

use flatlan_ipam::node_range::NodeRange;
use flatlan_ipam::policy::Conflicts;
use flatlan_ipam::probe::{probe_many, ProbeOutcome};
use flatlan_ipam::store::read_boot_id;
use flatlan_ipam::{Allocation, IpRange, Policy, Pool, Request, Store};
use flatlan_l2::frame::EtherType;
use flatlan_l2::mac::MacAddr;
use flatlan_l2::socket::PacketSocket;
use ipnet::IpNet;

use crate::config::{NetConf, SubnetConf};
use crate::env::Attachment;
use crate::error::{Error, Result};

/// An address given to the pod, with its LAN prefix and gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

pub fn store(conf: &NetConf) -> Result<Store> {
    Ok(Store::new(&conf.ipam.data_dir, &conf.name)?)
}

/// This node's pools, one per LAN subnet. Subnets without explicit
/// `ranges` take the node agent's range file, read once here. Gateways and
/// node IPs are always excluded, whatever the ranges say.
pub fn pools<'c>(conf: &'c NetConf, node_ips: &[IpAddr]) -> Result<Vec<(&'c SubnetConf, Pool)>> {
    let from_file = match &conf.ipam.range_file {
        Some(path) if conf.subnets().iter().any(|s| s.ranges.is_empty()) => {
            Some((path, NodeRange::load(path)?.ranges))
        }
        _ => None,
    };
    conf.subnets()
        .iter()
        .map(|s| {
            let v4 = s.subnet.addr().is_ipv4();
            let ranges: Vec<IpRange> = match (&from_file, s.ranges.is_empty()) {
                (Some((path, file)), true) => {
                    let r: Vec<IpRange> =
                        file.iter().copied().filter(|r| r.is_ipv4() == v4).collect();
                    if r.is_empty() {
                        return Err(Error::InvalidConfig(format!(
                            "node range file {} has no range in subnet {}",
                            path.display(),
                            s.subnet
                        )));
                    }
                    r
                }
                _ => s.ranges.clone(),
            };
            let mut exclude = s.exclude.clone();
            exclude.extend(s.gateway.map(IpRange::single));
            exclude.extend(node_ips.iter().copied().map(IpRange::single));
            Ok((s, Pool::new(s.subnet, &ranges, &exclude)?))
        })
        .collect()
}

/// The probe knobs of the config, as flatlan-ipam's allocation policy.
pub fn policy(conf: &NetConf) -> Policy {
    let p = &conf.ipam.probe;
    Policy {
        probe: p.enabled,
        verified_ttl: p.verified_ttl_seconds,
        ahead: p.ahead,
        quarantine_secs: p.quarantine_seconds,
    }
}

/// A durable reservation for one attachment.
#[derive(Clone, Debug)]
pub struct Reservation {
    /// One per configured subnet, in config order.
    pub assigned: Vec<Assigned>,
    /// The pod's MAC: the requested one, else derived from its addresses.
    pub mac: MacAddr,
    /// The caller should start a background probe-ahead.
    pub probe_ahead: bool,
}

/// Reserves one address per subnet for the attachment, durably, before
/// any link exists (a crash after this leaves a store entry that DEL or GC
/// frees, never an interface the store does not know), probing from
/// `bridge` what is not known to be free. The policy is flatlan-ipam's
/// (`Store::reserve`).
pub fn reserve(
    conf: &NetConf,
    att: &Attachment,
    node_ips: &[IpAddr],
    requested: &[IpAddr],
    mac: Option<MacAddr>,
    bridge: &str,
) -> Result<Reservation> {
    let pools = pools(conf, node_ips)?;
    let boot_id = read_boot_id(&conf.ipam.boot_id_path)?;
    let req = Request {
        container_id: &att.container_id,
        ifname: &att.ifname,
        pod: att.pod(),
        required: requested,
        mac,
        boot_id: &boot_id,
    };
    let bare: Vec<Pool> = pools.iter().map(|(_, p)| p.clone()).collect();
    let sync = conf.ipam.probe.sync_config();
    let reserved = store(conf)?.reserve(&bare, &req, &policy(conf), |ips| {
        crate::hook::maybe_abort("allocated-unprobed");
        probe_lan(bridge, ips, sync)
    })?;
    let assigned = pools
        .iter()
        .zip(&reserved.ips)
        .map(|((s, _), ip)| {
            let address = IpNet::new(*ip, s.subnet.prefix_len())
                .map_err(|e| Error::InvalidConfig(e.to_string()))?;
            Ok(Assigned {
                address,
                gateway: s.gateway,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Reservation {
        assigned,
        mac: reserved.mac,
        probe_ahead: reserved.want_ahead,
    })
}

/// Probes `ips` from the node's bridge; returns those someone answers for.
fn probe_lan(
    bridge: &str,
    ips: &[IpAddr],
    cfg: flatlan_ipam::probe::ProbeConfig,
) -> flatlan_ipam::Result<Conflicts> {
    if ips.is_empty() {
        return Ok(Vec::new());
    }
    // Only the families being probed: an IPv4-only ADD opens one ARP
    // socket, with no all-protocols tap and no IPv6 group socket.
    let mut families = Vec::new();
    if ips.iter().any(IpAddr::is_ipv4) {
        families.push(EtherType::ARP);
    }
    if ips.iter().any(IpAddr::is_ipv6) {
        families.push(EtherType::IPV6);
    }
    let sock = PacketSocket::open_filtered(bridge, &families)?;
    let outcomes = probe_many(&sock, ips, cfg)?;
    Ok(ips
        .iter()
        .zip(outcomes)
        .filter_map(|(ip, o)| match o {
            ProbeOutcome::InUse { mac, .. } => Some((*ip, mac)),
            ProbeOutcome::Free => None,
        })
        .collect())
}

/// The background half of the probe, run detached from the runtime
/// (`flatlan ipam probe-ahead`): verifies the next candidates with a long,
/// RFC 5227-minded probe so later ADDs skip theirs (`Store::probe_ahead`).
pub fn probe_ahead(conf: &NetConf, node_ips: &[IpAddr]) -> Result<usize> {
    let pools: Vec<Pool> = pools(conf, node_ips)?.into_iter().map(|(_, p)| p).collect();
    let cfg = conf.ipam.probe.ahead_config();
    Ok(store(conf)?.probe_ahead(&pools, &policy(conf), |ips| {
        probe_lan(&conf.bridge, ips, cfg)
    })?)
}

pub fn release(conf: &NetConf, container_id: &str, ifname: &str) -> Result<Vec<Allocation>> {
    Ok(store(conf)?.release(container_id, ifname)?)
}

pub fn find(conf: &NetConf, container_id: &str, ifname: &str) -> Result<Vec<Allocation>> {
    let state = store(conf)?.peek()?;
    Ok(state
        .find(container_id, ifname)
        .into_iter()
        .cloned()
        .collect())
}
