//! An in-memory [`Netlink`] that records every operation, for unit tests of
//! the command logic without root.

use std::collections::BTreeMap;

use ipnet::IpNet;

use flatlan_l2::mac::MacAddr;

use super::{Link, Netlink, RouteSpec, VethSpec};
use crate::error::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct Fake {
    pub links: BTreeMap<String, Link>,
    pub addrs: Vec<(u32, IpNet)>,
    pub routes: Vec<RouteSpec>,
    /// Every mutating call, in order, as a short string.
    pub log: Vec<String>,
    /// When set, the named operation fails with EPERM.
    pub fail_on: Option<String>,
    next_index: u32,
}

impl Fake {
    pub fn with_bridge(name: &str) -> Fake {
        let mut f = Fake::default();
        f.insert(name, Some("bridge"));
        f
    }

    pub fn insert(&mut self, name: &str, kind: Option<&str>) -> u32 {
        self.next_index += 1;
        let index = self.next_index + 1;
        self.links.insert(
            name.to_string(),
            Link {
                index,
                name: name.to_string(),
                mac: Some([2, 0, 0, 0, 0, index as u8]),
                mtu: 1500,
                master: None,
                up: true,
                kind: kind.map(str::to_string),
            },
        );
        index
    }

    fn record(&mut self, op: String) -> Result<()> {
        if self.fail_on.as_deref().is_some_and(|f| op.starts_with(f)) {
            return Err(Error::netlink(
                op,
                std::io::Error::from_raw_os_error(libc::EPERM),
            ));
        }
        self.log.push(op);
        Ok(())
    }
}

impl Netlink for Fake {
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        Ok(self.links.get(name).cloned())
    }

    fn links(&mut self) -> Result<Vec<Link>> {
        Ok(self.links.values().cloned().collect())
    }

    fn create_veth(&mut self, spec: &VethSpec) -> Result<()> {
        self.record(format!(
            "create_veth {} peer {}",
            spec.host_name, spec.peer_name
        ))?;
        if self.links.contains_key(&spec.host_name) {
            return Err(Error::netlink(
                "create veth",
                std::io::Error::from_raw_os_error(libc::EEXIST),
            ));
        }
        self.insert(&spec.host_name, Some("veth"));
        if let Some(l) = self.links.get_mut(&spec.host_name) {
            l.master = Some(spec.bridge_index);
            l.mac = Some(spec.host_mac);
        }
        Ok(())
    }

    fn delete_link(&mut self, name: &str) -> Result<bool> {
        self.record(format!("delete_link {name}"))?;
        Ok(self.links.remove(name).is_some())
    }

    fn set_up(&mut self, index: u32) -> Result<()> {
        self.record(format!("set_up {index}"))
    }

    fn set_hairpin(&mut self, name: &str) -> Result<()> {
        self.record(format!("set_hairpin {name}"))
    }

    fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.record(format!("set_mac {index} {}", MacAddr(mac)))
    }

    fn add_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        self.record(format!("add_address {index} {addr}"))?;
        self.addrs.push((index, addr));
        Ok(())
    }

    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>> {
        Ok(self
            .addrs
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, a)| *a)
            .collect())
    }

    fn add_route(&mut self, route: &RouteSpec) -> Result<()> {
        self.record(format!("add_route {} via {:?}", route.dst, route.gateway))?;
        self.routes.push(route.clone());
        Ok(())
    }

    fn routes(&mut self, ipv4: bool) -> Result<Vec<RouteSpec>> {
        Ok(self
            .routes
            .iter()
            .filter(|r| r.dst.addr().is_ipv4() == ipv4)
            .cloned()
            .collect())
    }
}

/// A borrowed fake, so a test can hand a verb the pod's socket and read
/// its op log afterwards.
impl Netlink for &mut Fake {
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        (**self).link_by_name(name)
    }
    fn links(&mut self) -> Result<Vec<Link>> {
        (**self).links()
    }
    fn create_veth(&mut self, spec: &VethSpec) -> Result<()> {
        (**self).create_veth(spec)
    }
    fn delete_link(&mut self, name: &str) -> Result<bool> {
        (**self).delete_link(name)
    }
    fn set_up(&mut self, index: u32) -> Result<()> {
        (**self).set_up(index)
    }
    fn set_hairpin(&mut self, name: &str) -> Result<()> {
        (**self).set_hairpin(name)
    }
    fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        (**self).set_mac(index, mac)
    }
    fn add_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        (**self).add_address(index, addr)
    }
    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>> {
        (**self).addresses(index)
    }
    fn add_route(&mut self, route: &RouteSpec) -> Result<()> {
        (**self).add_route(route)
    }
    fn routes(&mut self, ipv4: bool) -> Result<Vec<RouteSpec>> {
        (**self).routes(ipv4)
    }
}
