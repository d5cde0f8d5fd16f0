//! Glue between the CNI config and `flatlan-ipam`: builds this node's pools
//! and takes or gives back addresses under the store lock.

use std::net::IpAddr;

use flatlan_ipam::frame::EtherType;
use flatlan_ipam::mac::MacAddr;
use flatlan_ipam::node_range::NodeRange;
use flatlan_ipam::probe::{probe_many, PacketSocket, ProbeOutcome};
use flatlan_ipam::store::{now_secs, read_boot_id};
use flatlan_ipam::{Allocation, IpRange, Pool, Store, Want};
use ipnet::IpNet;
use tracing::{info, warn};

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

/// What [`allocate`] took, and what still needs a conflict probe.
struct Allocated {
    assigned: Vec<Assigned>,
    /// Addresses no probe (or recent use of ours) has shown free.
    unverified: Vec<IpAddr>,
    /// Fewer verified candidates are waiting than the probe-ahead keeps.
    want_ahead: bool,
}

/// At most this many conflicting addresses are skipped in one ADD; more
/// means something on the LAN answers for everything (a proxy-ARP router).
const MAX_CONFLICTS: usize = 8;

/// A probe-ahead that has not finished within this long is presumed dead.
const AHEAD_LEASE_SECS: u64 = 5;

/// Allocates, probes the LAN for what is not yet known to be free, and
/// quarantines and skips addresses some LAN host answers for. Returns the
/// addresses and whether a background probe-ahead should run.
pub fn allocate_checked(
    conf: &NetConf,
    att: &Attachment,
    node_ips: &[IpAddr],
    requested: &[IpAddr],
    bridge: &str,
) -> Result<(Vec<Assigned>, bool)> {
    let probe = &conf.ipam.probe;
    let pools = pools(conf, node_ips)?;
    for _ in 0..=MAX_CONFLICTS {
        let a = allocate(conf, att, &pools, requested)?;
        if !probe.enabled || a.unverified.is_empty() {
            return Ok((a.assigned, a.want_ahead));
        }
        crate::hook::maybe_abort("allocated-unprobed");
        let conflicts = match probe_lan(bridge, &a.unverified, probe.sync_config()) {
            Ok(c) => c,
            Err(e) => {
                // The probe's failure is what the runtime must see; a failed
                // release only adds a log line (DEL or GC frees it later).
                if let Err(r) = release(conf, &att.container_id, &att.ifname) {
                    warn!("releasing after a failed probe: {r}");
                }
                return Err(e);
            }
        };
        if conflicts.is_empty() {
            return Ok((a.assigned, a.want_ahead));
        }
        let now = now_secs();
        let mut locked = store(conf)?.lock()?;
        locked.state.release(&att.container_id, &att.ifname, now);
        if a.want_ahead {
            // This attempt claimed the probe-ahead but will not start it;
            // the retry must be free to.
            locked.state.ahead_started = None;
        }
        for (ip, mac) in &conflicts {
            warn!(%ip, %mac, "a LAN host answers for this address; quarantined");
            locked
                .state
                .quarantine_ip(*ip, mac.to_string(), now, now + probe.quarantine_seconds);
        }
        locked.commit()?;
        if let Some((ip, mac)) = conflicts.iter().find(|(ip, _)| requested.contains(ip)) {
            return Err(flatlan_ipam::Error::RequestedInUse {
                ip: *ip,
                owner: format!("a LAN host with MAC {mac} (it answered the conflict probe)"),
            }
            .into());
        }
    }
    Err(Error::TryAgain(format!(
        "{MAX_CONFLICTS} candidate addresses in a row are answered by LAN hosts; check `flatlan ipam ls` for quarantined addresses"
    )))
}

/// Probes `ips` from the node's bridge; returns those someone answers for.
fn probe_lan(
    bridge: &str,
    ips: &[IpAddr],
    cfg: flatlan_ipam::probe::ProbeConfig,
) -> Result<Vec<(IpAddr, MacAddr)>> {
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
    let sock = PacketSocket::open_filtered(bridge, &families).map_err(flatlan_ipam::Error::from)?;
    let outcomes = probe_many(&sock, ips, cfg).map_err(flatlan_ipam::Error::from)?;
    Ok(ips
        .iter()
        .zip(outcomes)
        .filter_map(|(ip, o)| match o {
            ProbeOutcome::InUse { mac, .. } => Some((*ip, mac)),
            ProbeOutcome::Free => None,
        })
        .collect())
}

/// The background half of the probe: verifies the next candidates with a
/// long, RFC 5227-minded probe and records the verdicts, so later ADDs
/// skip the synchronous probe. Runs detached from the runtime.
pub fn probe_ahead(conf: &NetConf, node_ips: &[IpAddr]) -> Result<usize> {
    let probe = &conf.ipam.probe;
    let now = now_secs();
    let pools = pools(conf, node_ips)?;
    let candidates: Vec<IpAddr> = {
        let state = store(conf)?.peek()?;
        pools
            .iter()
            .flat_map(|(s, pool)| {
                let cursor = state.cursors.get(&s.subnet.to_string()).copied();
                pool.candidates_after(cursor)
                    .filter(|ip| {
                        state.owner_of(*ip, now).is_none()
                            && !state.is_verified(*ip, now, probe.verified_ttl_seconds)
                    })
                    .take(probe.ahead)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    if candidates.is_empty() {
        let mut locked = store(conf)?.lock()?;
        locked.state.ahead_started = None;
        locked.commit()?;
        return Ok(0);
    }
    let conflicts = probe_lan(&conf.bridge, &candidates, probe.ahead_config())?;
    let now = now_secs();
    let mut locked = store(conf)?.lock()?;
    locked.state.ahead_started = None;
    for ip in &candidates {
        // An ADD may have taken the address while we probed it, and its pod
        // answered; the pod may even be DELeted again by now. Either way the
        // answer was ours: no verdict at all, so the next ADD probes it.
        let allocated = locked.state.allocations.iter().any(|a| a.ip == *ip);
        let conflict = conflicts.iter().find(|(c, _)| c == ip);
        if allocated || conflict.is_some_and(|(_, mac)| is_ours(&locked.state, *ip, *mac)) {
            continue;
        }
        match conflict {
            Some((_, mac)) => locked.state.quarantine_ip(
                *ip,
                mac.to_string(),
                now,
                now + probe.quarantine_seconds,
            ),
            None => {
                locked.state.verified.insert(*ip, now);
            }
        }
    }
    locked.commit()?;
    Ok(candidates.len())
}

/// A MAC of this node's pods: one the store records, or flatlan's derived
/// MAC for `ip` (a pod of ours that was added and deleted while we looked).
/// Only this node allocates from its slice, so on a slice address such a
/// MAC is one of ours.
pub fn is_ours(state: &flatlan_ipam::State, ip: IpAddr, mac: MacAddr) -> bool {
    mac.is_pod_mac_for(ip) || state.allocations.iter().any(|a| a.mac == mac.to_string())
}

/// Allocates one address per configured subnet, durably, before any link
/// exists: a crash after this point leaves a store entry that DEL or GC
/// frees, never an interface with an address the store does not know.
fn allocate(
    conf: &NetConf,
    att: &Attachment,
    pools: &[(&SubnetConf, Pool)],
    requested: &[IpAddr],
) -> Result<Allocated> {
    for ip in requested {
        if !pools.iter().any(|(s, _)| s.subnet.contains(ip)) {
            return Err(flatlan_ipam::Error::RequestedOutsideRange {
                ip: *ip,
                pool: pools
                    .iter()
                    .map(|(_, p)| p.describe())
                    .collect::<Vec<_>>()
                    .join("; "),
            }
            .into());
        }
    }
    let boot_id = read_boot_id(&conf.ipam.boot_id_path)?;
    let pod = att.pod();
    let key = pod.as_ref().map(|p| p.key());
    let now = now_secs();

    let mut locked = store(conf)?.lock()?;
    let ttl = conf.ipam.probe.verified_ttl_seconds;
    locked.state.prune(now, ttl);
    let reclaimed = locked.state.reclaim_other_boots(&boot_id, now);
    if !reclaimed.is_empty() {
        info!(
            count = reclaimed.len(),
            "reclaimed allocations from before a reboot"
        );
    }
    if let Some(a) = locked.state.find(&att.container_id, &att.ifname).first() {
        return Err(Error::InterfaceExists(format!(
            "container {} already has {} on {}; DEL it before adding it again",
            att.container_id, a.ip, att.ifname
        )));
    }
    let adder = flatlan_ipam::store::ProcId::current();
    let mut out = Vec::new();
    let mut unverified = Vec::new();
    let mut want_ahead = false;
    let reserved = locked.state.reserved_for_others(key.as_deref());
    for (s, pool) in pools {
        let v4 = s.subnet.addr().is_ipv4();
        let state = &locked.state;
        let sticky = key
            .as_ref()
            .and_then(|k| state.sticky.get(k))
            .and_then(|st| st.ips.iter().copied().find(|ip| ip.is_ipv4() == v4));
        let cursor = state.cursors.get(&s.subnet.to_string()).copied();
        let want = Want {
            required: requested.iter().copied().find(|ip| s.subnet.contains(ip)),
            sticky,
            cursor,
            prefer: freshly_verified(state, pool, cursor, now, ttl),
        };
        let ip = flatlan_ipam::allocate(
            pool,
            &want,
            |ip| state.owner_of(ip, now),
            |ip| reserved.contains(&ip),
        )?;
        let address = IpNet::new(ip, s.subnet.prefix_len())
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        out.push(Assigned {
            address,
            gateway: s.gateway,
        });
        // An address someone asked for by name (`IP=`, `ips`, or a pod
        // identity coming back to its old one) was chosen without regard to
        // any verdict, and is the likeliest to be what a LAN host took after
        // our pod let it go: it is always probed (DESIGN §3).
        let asked_for = want.required == Some(ip) || want.sticky == Some(ip);
        if asked_for || !state.is_verified(ip, now, ttl) {
            unverified.push(ip);
        }
        let ready = pool
            .candidates_after(Some(ip))
            .take(conf.ipam.probe.ahead)
            .filter(|c| state.owner_of(*c, now).is_none() && state.is_verified(*c, now, ttl))
            .count();
        want_ahead |= ready < conf.ipam.probe.ahead / 2;
        locked.state.cursors.insert(s.subnet.to_string(), ip);
        locked.state.allocations.push(Allocation {
            ip,
            prefix_len: s.subnet.prefix_len(),
            // Filled in below, once every family is allocated.
            mac: String::new(),
            container_id: att.container_id.clone(),
            ifname: att.ifname.clone(),
            pod: pod.clone(),
            boot_id: boot_id.clone(),
            since: now,
            adder,
        });
    }
    // The pod's MAC follows its IPv4 address whatever the order of
    // `subnets`; an IPv6-first list must not record a MAC derived from the
    // IPv6 address, which the pod never has, on any of its allocations.
    let mac = crate::plan::pod_mac(conf, att, &out).to_string();
    for a in locked
        .state
        .allocations
        .iter_mut()
        .filter(|a| a.is_for(&att.container_id, &att.ifname))
    {
        a.mac.clone_from(&mac);
    }
    // Remembered addresses are a preference, never a reservation: once
    // given to a pod, they are remembered for no one (issue 10, item 11).
    locked
        .state
        .handed_out(key.as_deref(), out.iter().map(|a| a.address.addr()));
    let running = locked
        .state
        .ahead_started
        .is_some_and(|t| now.saturating_sub(t) < AHEAD_LEASE_SECS);
    want_ahead &= conf.ipam.probe.enabled && !running;
    if want_ahead {
        locked.state.ahead_started = Some(now);
    }
    locked.commit()?;
    Ok(Allocated {
        assigned: out,
        unverified,
        want_ahead,
    })
}

/// The free address nearest after `cursor` (round-robin order, wrapping)
/// that a probe showed free within `ttl`: ADD takes it without probing.
fn freshly_verified(
    state: &flatlan_ipam::State,
    pool: &Pool,
    cursor: Option<IpAddr>,
    now: u64,
    ttl: u64,
) -> Option<IpAddr> {
    let fresh = |ip: &IpAddr| {
        state.is_verified(*ip, now, ttl)
            && pool.is_usable(*ip)
            && state.owner_of(*ip, now).is_none()
    };
    let after = |ip: &&IpAddr| cursor.is_none_or(|c| **ip > c);
    let mut usable = state.verified.keys().filter(|ip| fresh(ip));
    let first = usable.clone().next().copied();
    usable.find(after).copied().or(first)
}

/// The MAC follows the first address (IPv4 when dual-stack).
pub fn first_ip(assigned: &[Assigned]) -> IpAddr {
    assigned
        .iter()
        .find(|a| a.address.addr().is_ipv4())
        .or(assigned.first())
        .map(|a| a.address.addr())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

pub fn release(conf: &NetConf, container_id: &str, ifname: &str) -> Result<Vec<Allocation>> {
    let mut locked = store(conf)?.lock()?;
    let gone = locked.state.release(container_id, ifname, now_secs());
    if !gone.is_empty() {
        locked.commit()?;
    }
    Ok(gone)
}

pub fn find(conf: &NetConf, container_id: &str, ifname: &str) -> Result<Vec<Allocation>> {
    let state = store(conf)?.peek()?;
    Ok(state
        .find(container_id, ifname)
        .into_iter()
        .cloned()
        .collect())
}
