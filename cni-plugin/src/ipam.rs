//! Glue between the CNI config and `flatlan-ipam`: builds this node's pools
//! and takes or gives back addresses under the store lock.

use std::net::IpAddr;

use flatlan_ipam::mac::MacAddr;
use flatlan_ipam::node_range::NodeRange;
use flatlan_ipam::store::{now_secs, read_boot_id};
use flatlan_ipam::{Allocation, IpRange, Pool, Store, Want};
use ipnet::IpNet;
use tracing::{error, info};

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

/// This node's pool for one LAN subnet. Gateways and node IPs are always
/// excluded, whatever the ranges say.
pub fn pool(conf: &NetConf, s: &SubnetConf, node_ips: &[IpAddr]) -> Result<Pool> {
    let mut ranges = s.ranges.clone();
    if ranges.is_empty() {
        if let Some(path) = &conf.ipam.range_file {
            let nr = NodeRange::load(path)?;
            ranges = nr
                .ranges
                .into_iter()
                .filter(|r| r.is_ipv4() == s.subnet.addr().is_ipv4())
                .collect();
            if ranges.is_empty() {
                return Err(Error::InvalidConfig(format!(
                    "node range file {} has no range in subnet {}",
                    path.display(),
                    s.subnet
                )));
            }
        }
    }
    let mut exclude = s.exclude.clone();
    exclude.extend(s.gateway.map(IpRange::single));
    exclude.extend(node_ips.iter().copied().map(IpRange::single));
    Ok(Pool::new(s.subnet, &ranges, &exclude)?)
}

/// Allocates one address per configured subnet, durably, before any link
/// exists: a crash after this point leaves a store entry that DEL or GC
/// frees, never an interface with an address the store does not know.
pub fn allocate(
    conf: &NetConf,
    att: &Attachment,
    node_ips: &[IpAddr],
    requested: &[IpAddr],
) -> Result<Vec<Assigned>> {
    let subnets = conf.subnets();
    let pools: Vec<(SubnetConf, Pool)> = subnets
        .into_iter()
        .map(|s| pool(conf, &s, node_ips).map(|p| (s, p)))
        .collect::<Result<_>>()?;
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
    if let Some(e) = locked.recovered.take() {
        error!("{e}");
    }
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
    let mut out = Vec::new();
    for (s, pool) in &pools {
        let v4 = s.subnet.addr().is_ipv4();
        let state = &locked.state;
        let sticky = key
            .as_ref()
            .and_then(|k| state.sticky.get(k))
            .and_then(|st| st.ips.iter().copied().find(|ip| ip.is_ipv4() == v4));
        let want = Want {
            required: requested.iter().copied().find(|ip| s.subnet.contains(ip)),
            sticky,
            cursor: state.cursors.get(&s.subnet.to_string()).copied(),
        };
        let ip = flatlan_ipam::allocate(
            pool,
            &want,
            |ip| state.owner_of(ip, now),
            |ip| state.reserved_for_other(ip, key.as_deref()),
        )?;
        let address = IpNet::new(ip, s.subnet.prefix_len())
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        out.push(Assigned {
            address,
            gateway: s.gateway,
        });
        locked.state.cursors.insert(s.subnet.to_string(), ip);
        locked.state.allocations.push(Allocation {
            ip,
            prefix_len: s.subnet.prefix_len(),
            mac: MacAddr::from_ip(first_ip(&out)).to_string(),
            container_id: att.container_id.clone(),
            ifname: att.ifname.clone(),
            pod: pod.clone(),
            boot_id: boot_id.clone(),
            since: now,
        });
    }
    if let Some(k) = &key {
        // The pod holds its addresses again; they are no longer "remembered".
        locked.state.sticky.remove(k);
    }
    locked.commit()?;
    Ok(out)
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
