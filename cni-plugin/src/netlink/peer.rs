//! What `flatlan ipam ls --wide` reads about a pod from the node's side:
//! the host veth's peer (its ifindex and the id the node's namespace gives
//! the pod's), the namespace id of a namespace file, and the peer link
//! itself, asked for by that id (IFLA_TARGET_NETNSID, Linux 4.20). No
//! setns, so the listing needs no thread per pod and cannot leave one
//! behind in a pod's namespace.

use std::fs::File;
use std::os::fd::AsRawFd;

use netlink_packet_core::{DecodeError, NlasIterator};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;

use super::socket::skip_stats;
use super::{link_reply, Link, Socket};
use crate::error::Result;

// linux/rtnetlink.h, linux/if_link.h
const RTM_NEWLINK: u16 = 16;
const IFLA_LINK: u16 = 5;
const IFLA_LINK_NETNSID: u16 = 37;

/// A link and where its peer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethPeer {
    /// The link itself (named for the usual case, the host end).
    pub host: Link,
    /// The peer's ifindex, in the peer's namespace.
    pub peer_index: Option<u32>,
    /// The peer namespace's id as the node's namespace numbers it; absent
    /// when the peer is in the node's own namespace.
    pub peer_nsid: Option<i32>,
}

/// IFLA_LINK and IFLA_LINK_NETNSID of one RTM_NEWLINK payload.
pub(super) fn peer_attrs(payload: &[u8]) -> Result<(Option<u32>, Option<i32>), DecodeError> {
    let mut index = None;
    let mut nsid = None;
    for nla in NlasIterator::new(payload.get(link_reply::HEADER_LEN..).unwrap_or_default()) {
        let nla = nla?;
        let four = nla
            .value()
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok());
        match (nla.kind(), four) {
            (IFLA_LINK, Some(b)) => index = Some(u32::from_ne_bytes(b)),
            (IFLA_LINK_NETNSID, Some(b)) => nsid = Some(i32::from_ne_bytes(b)),
            (IFLA_LINK | IFLA_LINK_NETNSID, None) => {
                return Err(DecodeError::from("a short IFLA_LINK attribute"))
            }
            _ => {}
        }
    }
    Ok((index, nsid))
}

impl Socket {
    /// The link `name` in this namespace with its peer's whereabouts, or
    /// None if there is no such link.
    pub fn veth_peer(&mut self, name: &str) -> Result<Option<VethPeer>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(skip_stats());
        self.get_veth_peer(&format!("get link {name}"), m)
    }

    /// The id this namespace gives the namespace behind `ns`, if it gave
    /// it one (RTM_GETNSID only reads; it never assigns).
    pub fn nsid_of(&mut self, ns: &File) -> Result<Option<i32>> {
        let mut m = NsidMessage::default();
        // A namespace fd is small and non-negative; the kernel reads u32.
        let fd = u32::try_from(ns.as_raw_fd()).unwrap_or(u32::MAX);
        m.attributes.push(NsidAttribute::Fd(fd));
        let replies = self.request("get nsid", RouteNetlinkMessage::GetNsId(m), 0)?;
        Ok(replies.into_iter().find_map(|r| match r {
            RouteNetlinkMessage::NewNsId(n) => n.attributes.into_iter().find_map(|a| match a {
                NsidAttribute::Id(id) if id >= 0 => Some(id),
                _ => None,
            }),
            _ => None,
        }))
    }

    /// Link `index` of the namespace this one numbers `nsid`, read without
    /// entering it, with its own peer's whereabouts; None if it has no such
    /// link. A kernel older than 4.15 ignores the target id and answers for
    /// link `index` of this namespace: callers check that the reply's peer
    /// is the link they came from.
    pub fn link_in_nsid(&mut self, nsid: i32, index: u32) -> Result<Option<VethPeer>> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfNetnsId(nsid));
        m.attributes.push(skip_stats());
        self.get_veth_peer(&format!("get link {index} of netns id {nsid}"), m)
    }

    /// One RTM_GETLINK for `m` read as a [`VethPeer`]; None for ENODEV.
    fn get_veth_peer(&mut self, what: &str, m: LinkMessage) -> Result<Option<VethPeer>> {
        let mut found = None;
        let r = self.exchange(what, RouteNetlinkMessage::GetLink(m), 0, |kind, payload| {
            if kind == RTM_NEWLINK {
                let (peer_index, peer_nsid) = peer_attrs(payload)?;
                found = Some(VethPeer {
                    host: link_reply::parse(payload)?,
                    peer_index,
                    peer_nsid,
                });
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(found),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;

    use super::*;

    fn bytes(m: &LinkMessage) -> Vec<u8> {
        let mut b = vec![0; m.buffer_len()];
        m.emit(&mut b);
        b
    }

    #[test]
    fn a_veth_with_its_peer_in_another_namespace() {
        let mut m = LinkMessage::default();
        m.header.index = 12;
        m.attributes = vec![
            LinkAttribute::IfName("fl0123456789ab".into()),
            LinkAttribute::Link(2),
            LinkAttribute::LinkNetNsId(3),
        ];
        assert_eq!(peer_attrs(&bytes(&m)).expect("parse"), (Some(2), Some(3)));
    }

    #[test]
    fn a_link_without_a_peer_has_neither() {
        let mut m = LinkMessage::default();
        m.attributes = vec![LinkAttribute::IfName("br0".into())];
        assert_eq!(peer_attrs(&bytes(&m)).expect("parse"), (None, None));
    }

    #[test]
    fn truncated_replies_are_errors_not_panics() {
        let mut m = LinkMessage::default();
        m.attributes = vec![LinkAttribute::Link(2), LinkAttribute::LinkNetNsId(3)];
        let b = bytes(&m);
        for cut in 0..b.len() {
            let _ = peer_attrs(&b[..cut]);
        }
        let mut short = b.clone();
        // IFLA_LINK claiming a 2-byte value (length 4 + 2).
        short[link_reply::HEADER_LEN] = 6;
        short[link_reply::HEADER_LEN + 1] = 0;
        assert!(peer_attrs(&short).is_err());
    }
}
