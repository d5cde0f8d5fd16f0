//! Interface discovery and the pure choice of announcing interface.
//!
//! Discovery uses `getifaddrs(3)` (netlink underneath), which reports the
//! caller's network namespace, unlike `/sys/class/net`, which shows the
//! namespace sysfs was mounted in. It is polled; a link that comes back
//! (`IFF_RUNNING` again) triggers a re-announcement.

use std::collections::BTreeMap;
use std::net::IpAddr;

use flatlan_l2::mac::MacAddr;
use ipnet::IpNet;
use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

use crate::config::{Config, VipConfig};
use crate::error::{Error, Result};

/// What the speaker needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Name.
    pub name: String,
    /// Index.
    pub index: u32,
    /// MAC (zero if none).
    pub mac: MacAddr,
    /// Administratively up and with carrier.
    pub running: bool,
    /// Its addresses with prefix lengths.
    pub nets: Vec<IpNet>,
}

/// Lists the interfaces of the current network namespace.
pub fn discover() -> Result<BTreeMap<String, IfaceInfo>> {
    let mut out: BTreeMap<String, IfaceInfo> = BTreeMap::new();
    let addrs = getifaddrs().map_err(|e| Error::sys("getifaddrs", e.into()))?;
    for a in addrs {
        let e = out
            .entry(a.interface_name.clone())
            .or_insert_with(|| IfaceInfo {
                name: a.interface_name.clone(),
                index: 0,
                mac: MacAddr::ZERO,
                running: false,
                nets: Vec::new(),
            });
        e.running = a.flags.contains(InterfaceFlags::IFF_UP)
            && a.flags.contains(InterfaceFlags::IFF_RUNNING);
        let Some(addr) = a.address else { continue };
        if let Some(link) = addr.as_link_addr() {
            e.index = link.ifindex() as u32;
            if let Some(mac) = link.addr() {
                e.mac = MacAddr(mac);
            }
            continue;
        }
        let prefix = |ip: IpAddr| -> u8 {
            a.netmask
                .as_ref()
                .and_then(|m| {
                    if let Some(m4) = m.as_sockaddr_in() {
                        Some(u32::from(m4.ip()).count_ones() as u8)
                    } else {
                        m.as_sockaddr_in6()
                            .map(|m6| u128::from(m6.ip()).count_ones() as u8)
                    }
                })
                .unwrap_or(if ip.is_ipv4() { 32 } else { 128 })
        };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if let Ok(net) = IpNet::new(ip, prefix(ip)) {
            e.nets.push(net);
        }
    }
    for e in out.values_mut() {
        if e.index == 0 {
            if let Ok(i) = nix::net::if_::if_nametoindex(e.name.as_str()) {
                e.index = i;
            }
        }
    }
    Ok(out)
}

/// The interface `vip` is announced on: the configured one if set (and
/// present), else the first allowed interface (by name) with an address in
/// a subnet that contains the VIP. Host routes (/32, /128) do not count:
/// they are how `assign` puts the VIP on `lo`.
pub fn choose<'a>(
    cfg: &Config,
    vip: &VipConfig,
    ifaces: &'a BTreeMap<String, IfaceInfo>,
) -> Option<&'a IfaceInfo> {
    if let Some(name) = &vip.interface {
        return ifaces.get(name);
    }
    ifaces.values().find(|i| {
        cfg.interface_allowed(&i.name)
            && i.nets
                .iter()
                .any(|n| n.prefix_len() < n.max_prefix_len() && n.contains(&vip.address))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, nets: &[&str]) -> IfaceInfo {
        IfaceInfo {
            name: name.into(),
            index: 1,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            running: true,
            nets: nets.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn chooses_by_subnet_and_skips_plumbing() {
        let cfg = Config::from_yaml(
            "node: {name: a}\nsecret: 0123456789abcdef\nvips: [{address: 10.0.0.100}, {address: 'fd00::9'}, {address: 10.9.0.1, interface: eth9}]\n",
            &|_| Ok(Vec::new()),
        )
        .unwrap();
        let mut m = BTreeMap::new();
        for i in [
            iface("lo", &["127.0.0.1/8", "10.0.0.100/32"]),
            iface("cni0", &["10.0.0.1/24"]),
            iface("veth1", &["10.0.0.2/24"]),
            iface("eth0", &["10.0.0.2/24", "fd00::2/64"]),
            iface("eth1", &["10.0.1.2/24"]),
        ] {
            m.insert(i.name.clone(), i);
        }
        assert_eq!(choose(&cfg, &cfg.vips[0], &m).unwrap().name, "eth0");
        assert_eq!(choose(&cfg, &cfg.vips[1], &m).unwrap().name, "eth0");
        assert!(choose(&cfg, &cfg.vips[2], &m).is_none());
        m.remove("eth0");
        assert!(choose(&cfg, &cfg.vips[0], &m).is_none());
    }
}
