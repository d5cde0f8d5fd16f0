//! What the speaker knows of an interface, and the pure choice of the
//! announcing interface. The table itself comes from rtnetlink dumps,
//! refreshed on link and address events ([`crate::link_events`]); a link
//! that comes back (`IFF_RUNNING` again) triggers a re-announcement.

use std::collections::BTreeMap;

use flatlan_l2::mac::MacAddr;
use ipnet::IpNet;

use crate::config::{Config, VipConfig};

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
