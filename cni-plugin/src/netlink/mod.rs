//! The only module that speaks netlink. Drivers use these typed operations
//! and never build messages themselves (STYLE.md rule 3); tests use the
//! recording fake.

use std::net::IpAddr;
use std::os::fd::RawFd;

use ipnet::IpNet;

use crate::error::Result;

// Tests only: never compiled into the shipped plugin.
#[cfg(any(test, feature = "test-fakes"))]
pub mod fake;
// The same, for the whole-host operations of `flatlan node bridge`.
#[cfg(any(test, feature = "test-fakes"))]
pub mod fake_host;
pub mod host;
mod link_reply;
mod peer;
mod socket;

pub use peer::VethPeer;
pub use socket::Socket;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub master: Option<u32>,
    pub up: bool,
    pub kind: Option<String>,
}

/// A veth pair whose host end joins `bridge_index` and whose peer is
/// created directly inside the pod namespace: no rename, no move, no window
/// where a half-built interface sits in the host namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethSpec {
    pub host_name: String,
    pub host_mac: [u8; 6],
    pub bridge_index: u32,
    pub mtu: u32,
    pub peer_name: String,
    pub peer_mac: [u8; 6],
    pub peer_netns_fd: RawFd,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
}

pub trait Netlink {
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>>;
    fn links(&mut self) -> Result<Vec<Link>>;
    fn create_veth(&mut self, spec: &VethSpec) -> Result<()>;
    /// Returns false when the link did not exist (DEL is idempotent).
    fn delete_link(&mut self, name: &str) -> Result<bool>;
    fn set_up(&mut self, index: u32) -> Result<()>;
    fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()>;
    /// Hairpin mode on a bridge port: frames may leave by the port they
    /// came in on, which a pod's DNATed packet to its own Service does.
    fn set_hairpin(&mut self, name: &str) -> Result<()>;
    /// IPv6 addresses are added with NODAD: the conflict probe already ran,
    /// and waiting out DAD would stall ADD (DESIGN.md §2).
    fn add_address(&mut self, index: u32, addr: IpNet) -> Result<()>;
    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>>;
    fn add_route(&mut self, route: &RouteSpec) -> Result<()>;
    /// Routes of every table but `local`, filtered on the table attribute,
    /// not the header byte (netavark #1381). Not just `main`: `sbr`, chained
    /// after flatlan, moves the pod's routes into a per-interface table,
    /// where they still route the pod's traffic through its policy rule.
    fn routes(&mut self, ipv4: bool) -> Result<Vec<RouteSpec>>;
}
