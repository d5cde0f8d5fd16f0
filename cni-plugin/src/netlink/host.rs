//! Whole-host operations for `flatlan node bridge`: addresses and routes
//! with every attribute that moving them to another link must keep
//! (flags, lifetimes, labels, metrics, protocol, table), and the bridge
//! itself. Same socket and rules as the plugin's [`super::Netlink`]; a
//! second trait so the pod path's fake and op log stay as they are.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, CacheInfo};
use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::family;
use super::{Link, Netlink, Socket};
use crate::error::Result;

/// A valid or preferred lifetime of "forever".
pub const FOREVER: u32 = u32::MAX;
const LOCAL_TABLE: u32 = 255;
const RTN_UNICAST: u8 = 1;

/// An interface address as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    pub net: IpNet,
    /// IFA_F_* bits (IFA_FLAGS, which also carries those above 8).
    pub flags: u32,
    pub scope: u8,
    /// Seconds left; [`FOREVER`] for a static address.
    pub valid_lft: u32,
    pub preferred_lft: u32,
    /// IPv4 only; the kernel's default is the interface name.
    pub label: Option<String>,
    pub broadcast: Option<Ipv4Addr>,
    /// The metric of the address's prefix route (IFA_RT_PRIORITY).
    pub route_metric: Option<u32>,
}

impl Addr {
    /// A static address with the kernel's defaults, for tests and plans.
    pub fn new(net: IpNet) -> Addr {
        Addr {
            net,
            flags: 0,
            scope: 0,
            valid_lft: FOREVER,
            preferred_lft: FOREVER,
            label: None,
            broadcast: match net {
                IpNet::V4(v4) if v4.prefix_len() < 31 => Some(v4.broadcast()),
                _ => None,
            },
            route_metric: None,
        }
    }

    pub fn is_dynamic(&self) -> bool {
        self.valid_lft != FOREVER
    }
}

/// A unicast route through one interface (multipath and nexthop-object
/// routes are not reported: they name no single `oif`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub table: u32,
    pub metric: Option<u32>,
    /// RTPROT_*: kept, so a route moved back reads as it did.
    pub protocol: u8,
    pub scope: u8,
    pub tos: u8,
    pub prefsrc: Option<IpAddr>,
    pub onlink: bool,
}

/// RTPROT_KERNEL: a prefix route the kernel made for an address.
pub const PROTO_KERNEL: u8 = 2;
/// RTPROT_BOOT, what `ip route add` sets.
pub const PROTO_BOOT: u8 = 3;
/// RT_SCOPE_LINK.
pub const SCOPE_LINK: u8 = 253;

/// A new bridge that forwards at once: STP off, no forward delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    /// Pinned: the bridge keeps it whatever ports come and go.
    pub mac: [u8; 6],
    pub mtu: u32,
}

pub trait HostNetlink {
    fn host_links(&mut self) -> Result<Vec<Link>>;
    fn addrs(&mut self, index: u32) -> Result<Vec<Addr>>;
    /// Both families, every table but `local`.
    fn routes_via(&mut self, oif: u32) -> Result<Vec<Route>>;
    /// Created up, with `spec`'s MAC and MTU.
    fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<()>;
    fn delete_bridge(&mut self, name: &str) -> Result<bool>;
    /// `master` 0 releases the port.
    fn set_master(&mut self, index: u32, master: u32) -> Result<()>;
    fn add_addr(&mut self, index: u32, a: &Addr) -> Result<()>;
    /// False when the address was not there.
    fn del_addr(&mut self, index: u32, a: &Addr) -> Result<bool>;
    /// Through `r.oif`.
    fn add_route(&mut self, r: &Route) -> Result<()>;
    /// False when the route was not there.
    fn del_route(&mut self, r: &Route) -> Result<bool>;
    /// The links stacked on `index` (IFLA_LINK): name and kind.
    fn uppers(&mut self, index: u32) -> Result<Vec<(String, String)>>;
}

/// Flags the kernel accepts on a new address (the rest are state).
const SETTABLE_FLAGS: u32 = 0x02 | 0x10 | 0x100 | 0x200 | 0x400;

fn addr_message(index: u32, a: &Addr) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(a.net.addr());
    m.header.prefix_len = a.net.prefix_len();
    m.header.index = index;
    m.header.scope = a.scope.into();
    m.attributes.push(AddressAttribute::Local(a.net.addr()));
    m.attributes.push(AddressAttribute::Address(a.net.addr()));
    m
}

impl HostNetlink for Socket {
    fn host_links(&mut self) -> Result<Vec<Link>> {
        Netlink::links(self)
    }

    fn addrs(&mut self, index: u32) -> Result<Vec<Addr>> {
        let r = self.request(
            "dump addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in r {
            let RouteNetlinkMessage::NewAddress(m) = m else {
                continue;
            };
            if m.header.index != index {
                continue;
            }
            let (mut local, mut address) = (None, None);
            let mut a = Addr::new(IpNet::from(IpAddr::from(Ipv6Addr::UNSPECIFIED)));
            a.broadcast = None;
            a.flags = u32::from(m.header.flags.bits());
            a.scope = m.header.scope.into();
            for x in &m.attributes {
                match x {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    AddressAttribute::Label(l) => a.label = Some(l.clone()),
                    AddressAttribute::Broadcast(b) => a.broadcast = Some(*b),
                    AddressAttribute::Flags(f) => a.flags = f.bits(),
                    AddressAttribute::CacheInfo(c) => {
                        a.valid_lft = c.ifa_valid;
                        a.preferred_lft = c.ifa_preferred;
                    }
                    AddressAttribute::RoutePriority(p) => a.route_metric = Some(*p),
                    _ => {}
                }
            }
            // IFA_LOCAL is the interface's own address on point-to-point
            // links; IFA_ADDRESS otherwise.
            let Some(ip) = local.or(address) else {
                continue;
            };
            let Ok(net) = IpNet::new(ip, m.header.prefix_len) else {
                continue;
            };
            a.net = net;
            out.push(a);
        }
        Ok(out)
    }

    fn routes_via(&mut self, oif: u32) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = fam;
            let r = self.request("dump routes", RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)?;
            for m in r {
                let RouteNetlinkMessage::NewRoute(m) = m else {
                    continue;
                };
                if let Some(route) = parse_route(&m) {
                    if route.oif == oif
                        && route.table != LOCAL_TABLE
                        && u8::from(m.header.kind) == RTN_UNICAST
                    {
                        out.push(route);
                    }
                }
            }
        }
        Ok(out)
    }

    fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(spec.name.clone()));
        // Set at creation, the kernel marks the address as assigned
        // (NET_ADDR_SET) and the bridge never swaps it for a port's.
        m.attributes.push(LinkAttribute::Address(spec.mac.to_vec()));
        m.attributes.push(LinkAttribute::Mtu(spec.mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![
                InfoBridge::StpState(BridgeStpState::Disabled),
                InfoBridge::ForwardDelay(0),
            ])),
        ]));
        self.ack(
            &format!("create bridge {}", spec.name),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn delete_bridge(&mut self, name: &str) -> Result<bool> {
        Netlink::delete_link(self, name)
    }

    fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Controller(master));
        self.ack(
            &format!("set link {index} master {master}"),
            RouteNetlinkMessage::SetLink(m),
            0,
        )
    }

    fn add_addr(&mut self, index: u32, a: &Addr) -> Result<()> {
        let mut m = addr_message(index, a);
        if let Some(b) = a.broadcast {
            m.attributes.push(AddressAttribute::Broadcast(b));
        }
        if let Some(l) = &a.label {
            m.attributes.push(AddressAttribute::Label(l.clone()));
        }
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::from_bits_retain(
                a.flags & SETTABLE_FLAGS,
            )));
        if a.valid_lft != FOREVER || a.preferred_lft != FOREVER {
            let mut c = CacheInfo::default();
            c.ifa_valid = a.valid_lft;
            c.ifa_preferred = a.preferred_lft.min(a.valid_lft);
            m.attributes.push(AddressAttribute::CacheInfo(c));
        }
        if let Some(p) = a.route_metric {
            m.attributes.push(AddressAttribute::RoutePriority(p));
        }
        self.ack(
            &format!("add address {} to link {index}", a.net),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn del_addr(&mut self, index: u32, a: &Addr) -> Result<bool> {
        let m = addr_message(index, a);
        match self.ack(
            &format!("delete address {} from link {index}", a.net),
            RouteNetlinkMessage::DelAddress(m),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.errno(), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn add_route(&mut self, r: &Route) -> Result<()> {
        self.ack(
            &format!("add route {} via link {}", r.dst, r.oif),
            RouteNetlinkMessage::NewRoute(route_message(r)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn del_route(&mut self, r: &Route) -> Result<bool> {
        match self.ack(
            &format!("delete route {} via link {}", r.dst, r.oif),
            RouteNetlinkMessage::DelRoute(route_message(r)),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn uppers(&mut self, index: u32) -> Result<Vec<(String, String)>> {
        let r = self.request(
            "dump links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(r.iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => upper_of(l, index),
                _ => None,
            })
            .collect())
    }
}

/// The name and kind of a link stacked on `index`, from a GETLINK reply.
fn upper_of(m: &LinkMessage, index: u32) -> Option<(String, String)> {
    let mut name = None;
    let mut lower = None;
    let mut kind = String::new();
    for a in &m.attributes {
        match a {
            // Its lower link is in another namespace (a veth's peer in a
            // pod, a macvlan moved here): the index is that namespace's.
            LinkAttribute::LinkNetNsId(_) => return None,
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Link(l) => lower = Some(*l),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        kind = k.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    (lower == Some(index) && m.header.index != index).then_some((name?, kind))
}

fn route_message(r: &Route) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(r.dst.addr());
    m.header.destination_prefix_length = r.dst.prefix_len();
    m.header.tos = r.tos;
    // The header byte cannot hold tables above 255; the attribute can.
    m.header.table = u8::try_from(r.table).unwrap_or(0);
    m.header.protocol = r.protocol.into();
    m.header.scope = r.scope.into();
    m.header.kind = RTN_UNICAST.into();
    if r.onlink {
        m.header.flags = RouteFlags::Onlink;
    }
    if r.dst.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                r.dst.addr(),
            )));
    }
    if let Some(gw) = r.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(src) = r.prefsrc {
        m.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    if let Some(p) = r.metric {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    m.attributes.push(RouteAttribute::Oif(r.oif));
    m.attributes.push(RouteAttribute::Table(r.table));
    m
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// A reply as a [`Route`]; `None` for one without a single output link.
fn parse_route(m: &RouteMessage) -> Option<Route> {
    let v4 = m.header.address_family == AddressFamily::Inet;
    let unspecified: IpAddr = if v4 {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let mut r = Route {
        dst: IpNet::new(unspecified, 0).ok()?,
        gateway: None,
        oif: 0,
        table: u32::from(m.header.table),
        metric: None,
        protocol: m.header.protocol.into(),
        scope: m.header.scope.into(),
        tos: m.header.tos,
        prefsrc: None,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
    };
    let mut dst = unspecified;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip_of(d)?,
            RouteAttribute::Gateway(g) => r.gateway = ip_of(g),
            RouteAttribute::PrefSource(s) => r.prefsrc = ip_of(s),
            RouteAttribute::Oif(i) => r.oif = *i,
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            RouteAttribute::MultiPath(_) | RouteAttribute::NhId(_) => return None,
            _ => {}
        }
    }
    r.dst = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
    (r.oif != 0).then_some(r)
}
