//! An in-memory [`HostNetlink`]: a host with links, addresses and routes,
//! recording every change, for `flatlan node bridge`'s tests without root.

use super::host::{Addr, BridgeSpec, HostNetlink, Route};
use super::Link;
use crate::error::{Error, Result};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FakeHost {
    pub links: Vec<Link>,
    pub addrs: Vec<(u32, Addr)>,
    pub routes: Vec<Route>,
    /// Every change, in order, as a short string.
    pub log: Vec<String>,
    /// The first change whose log line starts with this fails (EPERM),
    /// once...
    pub fail_on: Option<String>,
    /// ...after this many matching changes succeeded.
    pub fail_after: usize,
    /// Links stacked on others: (lower index, name, kind).
    pub uppers: Vec<(u32, String, String)>,
}

impl FakeHost {
    /// Adds a link; returns its index.
    pub fn add_link(&mut self, name: &str, kind: Option<&str>, mac: [u8; 6]) -> u32 {
        let index = self.links.iter().map(|l| l.index).max().unwrap_or(1) + 1;
        self.links.push(Link {
            index,
            name: name.to_string(),
            mac: Some(mac),
            mtu: 1500,
            master: None,
            up: true,
            kind: kind.map(str::to_string),
        });
        index
    }

    /// The state without the log, to compare a host before and after.
    pub fn state(&self) -> FakeHost {
        FakeHost {
            links: self.links.clone(),
            addrs: self.addrs.clone(),
            routes: self.routes.clone(),
            ..FakeHost::default()
        }
    }

    fn record(&mut self, op: String) -> Result<()> {
        if let Some(f) = &self.fail_on {
            if op.starts_with(f.as_str()) {
                if self.fail_after == 0 {
                    self.fail_on = None;
                    return Err(Error::netlink(
                        op,
                        std::io::Error::from_raw_os_error(libc::EPERM),
                    ));
                }
                self.fail_after -= 1;
            }
        }
        self.log.push(op);
        Ok(())
    }

    fn exists(errno: i32, op: String) -> Error {
        Error::netlink(op, std::io::Error::from_raw_os_error(errno))
    }
}

impl HostNetlink for FakeHost {
    fn host_links(&mut self) -> Result<Vec<Link>> {
        Ok(self.links.clone())
    }

    fn addrs(&mut self, index: u32) -> Result<Vec<Addr>> {
        Ok(self
            .addrs
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, a)| a.clone())
            .collect())
    }

    fn routes_via(&mut self, oif: u32) -> Result<Vec<Route>> {
        Ok(self
            .routes
            .iter()
            .filter(|r| r.oif == oif)
            .cloned()
            .collect())
    }

    fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<()> {
        self.record(format!("create_bridge {}", spec.name))?;
        if self.links.iter().any(|l| l.name == spec.name) {
            return Err(Self::exists(libc::EEXIST, "create bridge".into()));
        }
        let i = self.add_link(&spec.name, Some("bridge"), spec.mac);
        if let Some(l) = self.links.iter_mut().find(|l| l.index == i) {
            l.mtu = spec.mtu;
        }
        Ok(())
    }

    fn delete_bridge(&mut self, name: &str) -> Result<bool> {
        self.record(format!("delete_bridge {name}"))?;
        let Some(pos) = self.links.iter().position(|l| l.name == name) else {
            return Ok(false);
        };
        let gone = self.links.remove(pos).index;
        // As the kernel does: its ports are released, its addresses and
        // routes go with it.
        for l in &mut self.links {
            if l.master == Some(gone) {
                l.master = None;
            }
        }
        self.addrs.retain(|(i, _)| *i != gone);
        self.routes.retain(|r| r.oif != gone);
        Ok(true)
    }

    fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        self.record(format!("set_master {index} {master}"))?;
        let l = self
            .links
            .iter_mut()
            .find(|l| l.index == index)
            .ok_or_else(|| Self::exists(libc::ENODEV, "set master".into()))?;
        l.master = (master != 0).then_some(master);
        Ok(())
    }

    fn add_addr(&mut self, index: u32, a: &Addr) -> Result<()> {
        self.record(format!("add_addr {index} {}", a.net))?;
        if self
            .addrs
            .iter()
            .any(|(i, x)| *i == index && x.net == a.net)
        {
            return Err(Self::exists(libc::EEXIST, "add address".into()));
        }
        self.addrs.push((index, a.clone()));
        Ok(())
    }

    fn del_addr(&mut self, index: u32, a: &Addr) -> Result<bool> {
        self.record(format!("del_addr {index} {}", a.net))?;
        let before = self.addrs.len();
        self.addrs.retain(|(i, x)| !(*i == index && x.net == a.net));
        Ok(self.addrs.len() < before)
    }

    fn add_route(&mut self, r: &Route) -> Result<()> {
        self.record(format!("add_route {} {} via {:?}", r.oif, r.dst, r.gateway))?;
        if self
            .routes
            .iter()
            .any(|x| x.dst == r.dst && x.table == r.table && x.metric == r.metric)
        {
            return Err(Self::exists(libc::EEXIST, "add route".into()));
        }
        self.routes.push(r.clone());
        Ok(())
    }

    fn del_route(&mut self, r: &Route) -> Result<bool> {
        self.record(format!("del_route {} {} via {:?}", r.oif, r.dst, r.gateway))?;
        let before = self.routes.len();
        self.routes.retain(|x| x != r);
        Ok(self.routes.len() < before)
    }

    fn uppers(&mut self, index: u32) -> Result<Vec<(String, String)>> {
        Ok(self
            .uppers
            .iter()
            .filter(|(i, ..)| *i == index)
            .map(|(_, n, k)| (n.clone(), k.clone()))
            .collect())
    }
}
