//! Blocking rtnetlink over netlink-sys: the CNI binary lives for a few
//! milliseconds, so an async runtime would be pure overhead (netavark moved
//! the same way, commit 96993f4f).

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    DecodeError, ErrorBuffer, ErrorMessage, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, Parseable, ParseableParametrized, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NLMSG_OVERRUN, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth, LinkAttribute, LinkExtentMask,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket as NlSocket, SocketAddr};

use super::host::HostNetlink;
use super::{link_reply, Link, Netlink, RouteSpec, VethSpec};
use crate::error::{Error, Result};

const MAIN_TABLE: u32 = 254;
const LOCAL_TABLE: u32 = 255;
// linux/rtnetlink.h
const RTM_NEWLINK: u16 = 16;

pub struct Socket {
    sock: NlSocket,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// Opens a route socket in the calling thread's network namespace.
    pub fn new() -> Result<Socket> {
        let mut sock =
            NlSocket::new(NETLINK_ROUTE).map_err(|e| Error::netlink("open socket", e))?;
        sock.bind_auto().map_err(|e| Error::netlink("bind", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::netlink("connect", e))?;
        // Extended acks give the kernel's own reason for a refusal.
        let _ = sock.set_ext_ack(true);
        Ok(Socket {
            sock,
            seq: 0,
            // Received into spare capacity: never zeroed, and only the pages
            // a reply lands on are ever touched.
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends one request and collects the replies: the ack for a change, or
    /// every part of a dump.
    pub(super) fn request(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut replies = Vec::new();
        self.exchange(op, msg, flags, |kind, payload| {
            replies.push(RouteNetlinkMessage::parse_with_param(payload, kind)?);
            Ok(())
        })?;
        Ok(replies)
    }

    /// Like [`Socket::request`] for GETLINK, with the lean link reader.
    fn request_links(&mut self, op: &str, m: LinkMessage, flags: u16) -> Result<Vec<Link>> {
        let mut links = Vec::new();
        self.exchange(
            op,
            RouteNetlinkMessage::GetLink(m),
            flags,
            |kind, payload| {
                if kind == RTM_NEWLINK {
                    links.push(link_reply::parse(payload)?);
                }
                Ok(())
            },
        )?;
        Ok(links)
    }

    /// Sends one request and hands each reply's type and payload to `each`,
    /// until the ack, the end of a dump, or the one reply of a GET.
    pub(super) fn exchange(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(u16, &[u8]) -> std::result::Result<(), DecodeError>,
    ) -> Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock
            .send(&out, 0)
            .map_err(|e| Error::netlink(op.to_string(), e))?;

        let invalid = |e: DecodeError| {
            Error::netlink(
                op.to_string(),
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        };
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        loop {
            self.buf.clear();
            let n = self
                .sock
                .recv(&mut self.buf, 0)
                .map_err(|e| Error::netlink(op.to_string(), e))?
                .min(self.buf.len());
            let mut off = 0;
            while off < n {
                let nl = NetlinkBuffer::new_checked(&self.buf[off..n]).map_err(invalid)?;
                let len = nl.length() as usize;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                if nl.sequence_number() != self.seq {
                    continue;
                }
                match nl.message_type() {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let payload = nl.payload();
                        let e = ErrorMessage::parse(
                            &ErrorBuffer::new_checked(&payload).map_err(invalid)?,
                        )
                        .map_err(invalid)?;
                        if e.code.is_none() {
                            return Ok(());
                        }
                        return Err(Error::netlink(op.to_string(), e.to_io()));
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    kind => {
                        each(kind, nl.payload()).map_err(invalid)?;
                        if !dump {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Each link's index and whether it has a carrier (IFF_LOWER_UP), for
    /// `flatlan doctor`; the lean [`Link`] the plugin reads leaves it out.
    pub fn carriers(&mut self) -> Result<Vec<(u32, bool)>> {
        let mut m = LinkMessage::default();
        m.attributes.push(skip_stats());
        let replies = self.request("dump links", RouteNetlinkMessage::GetLink(m), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => {
                    Some((l.header.index, l.header.flags.contains(LinkFlags::LowerUp)))
                }
                _ => None,
            })
            .collect())
    }

    pub(super) fn ack(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.request(op, msg, flags | NLM_F_ACK).map(|_| ())
    }
}

/// Link replies without their counters: flatlan never reads them, and the
/// kernel sums per-CPU statistics to fill them, for every link of a dump.
pub(super) fn skip_stats() -> LinkAttribute {
    LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats])
}

pub(super) fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

impl Netlink for Socket {
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(skip_stats());
        match self.request_links(&format!("get link {name}"), m, 0) {
            Ok(links) => Ok(links.into_iter().next()),
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn links(&mut self) -> Result<Vec<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(skip_stats());
        self.request_links("dump links", m, NLM_F_DUMP)
    }

    fn create_veth(&mut self, spec: &VethSpec) -> Result<()> {
        // The peer cannot be created up: veth_open() fails with ENOTCONN
        // until both halves exist. ADD raises it after addressing it.
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(spec.peer_name.clone()));
        peer.attributes
            .push(LinkAttribute::Address(spec.peer_mac.to_vec()));
        peer.attributes.push(LinkAttribute::Mtu(spec.mtu));
        peer.attributes
            .push(LinkAttribute::NetNsFd(spec.peer_netns_fd));

        let mut m = LinkMessage::default();
        // The host end is created enslaved and up in the same message, so the
        // kernel does it under one RTNL hold instead of three round trips.
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes
            .push(LinkAttribute::IfName(spec.host_name.clone()));
        // Without it the kernel picks a random MAC, and the result would
        // report one the host end does not have.
        m.attributes
            .push(LinkAttribute::Address(spec.host_mac.to_vec()));
        m.attributes.push(LinkAttribute::Mtu(spec.mtu));
        m.attributes
            .push(LinkAttribute::Controller(spec.bridge_index));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.ack(
            &format!("create veth {}", spec.host_name),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn delete_link(&mut self, name: &str) -> Result<bool> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.ack(
            &format!("delete link {name}"),
            RouteNetlinkMessage::DelLink(m),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn set_up(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.ack(
            &format!("set link {index} up"),
            RouteNetlinkMessage::SetLink(m),
            0,
        )
    }

    fn set_hairpin(&mut self, name: &str) -> Result<()> {
        // Bridge-port options are the master's "slave data", which the
        // kernel applies only to an existing port (__rtnl_newlink ignores
        // it on create), so this cannot ride in the create message. A
        // NEWLINK without NLM_F_CREATE finds the port by name.
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::PortData(
                InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)]),
            )]));
        self.ack(
            &format!("set hairpin on {name}"),
            RouteNetlinkMessage::NewLink(m),
            0,
        )
    }

    fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.ack(
            &format!("set link {index} address"),
            RouteNetlinkMessage::SetLink(m),
            0,
        )
    }

    fn add_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(addr.addr());
        m.header.prefix_len = addr.prefix_len();
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr.addr()));
        m.attributes.push(AddressAttribute::Address(addr.addr()));
        if let IpNet::V4(v4) = addr {
            m.attributes
                .push(AddressAttribute::Broadcast(v4.broadcast()));
        } else {
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.ack(
            &format!("add address {addr}"),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>> {
        // One dump-and-parse of RTM_NEWADDR (IFA_LOCAL before IFA_ADDRESS)
        // for both: the node bridge's full Addr and the plugin's prefixes.
        Ok(HostNetlink::addrs(self, index)?
            .into_iter()
            .map(|a| a.net)
            .collect())
    }

    fn add_route(&mut self, route: &RouteSpec) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(route.dst.addr());
        m.header.destination_prefix_length = route.dst.prefix_len();
        m.header.table = MAIN_TABLE as u8;
        m.header.protocol = RouteProtocol::Boot;
        m.header.kind = RouteType::Unicast;
        m.header.scope = if route.gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if route.dst.prefix_len() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    route.dst.addr(),
                )));
        }
        if let Some(gw) = route.gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        m.attributes.push(RouteAttribute::Oif(route.oif));
        m.attributes.push(RouteAttribute::Table(MAIN_TABLE));
        self.ack(
            &format!("add route {}", route.dst),
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn routes(&mut self, ipv4: bool) -> Result<Vec<RouteSpec>> {
        let mut q = RouteMessage::default();
        q.header.address_family = if ipv4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let r = self.request("dump routes", RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for m in r {
            let RouteNetlinkMessage::NewRoute(rt) = m else {
                continue;
            };
            let mut table = rt.header.table as u32;
            let mut dst = None;
            let mut gateway = None;
            let mut oif = 0;
            for a in &rt.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                        dst = Some(IpAddr::V4(*ip))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => {
                        dst = Some(IpAddr::V6(*ip))
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => {
                        gateway = Some(IpAddr::V4(*ip))
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => {
                        gateway = Some(IpAddr::V6(*ip))
                    }
                    RouteAttribute::Oif(i) => oif = *i,
                    _ => {}
                }
            }
            // The local table holds the kernel's own address routes, never
            // a pod route; every other table counts (see the trait).
            if table == LOCAL_TABLE {
                continue;
            }
            let unspecified: IpAddr = if ipv4 {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            let Ok(dst) = IpNet::new(
                dst.unwrap_or(unspecified),
                rt.header.destination_prefix_length,
            ) else {
                continue;
            };
            out.push(RouteSpec { dst, gateway, oif });
        }
        Ok(out)
    }
}
