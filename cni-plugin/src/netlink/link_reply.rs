//! Reads the few fields flatlan uses straight out of an RTM_NEWLINK reply.
//!
//! netlink-packet-route decodes every attribute of a link into owned values
//! (the bridge's whole configuration, both address families' per-device
//! settings); for br0 that was most of the user-space time of an ADD's two
//! GETLINKs. Walking the attributes and keeping five is enough, and the
//! full decoder stays the test oracle.

use netlink_packet_core::{DecodeError, NlaBuffer, NlasIterator};
use netlink_packet_route::link::{LinkFlags, LinkHeader};

use super::Link;

/// `struct ifinfomsg` precedes the attributes.
pub(super) const HEADER_LEN: usize = 16;
// linux/if_link.h
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;

/// Parses the payload of one RTM_NEWLINK message.
pub fn parse(payload: &[u8]) -> Result<Link, DecodeError> {
    let header = LinkHeader::parse(payload)?;
    let mut link = Link {
        index: header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        master: None,
        up: header.flags.contains(LinkFlags::Up),
        kind: None,
    };
    let attrs = payload.get(HEADER_LEN..).unwrap_or_default();
    for nla in NlasIterator::new(attrs) {
        let nla = nla?;
        let v = nla.value();
        match nla.kind() {
            IFLA_IFNAME => link.name = c_string(v)?,
            IFLA_ADDRESS => link.mac = <[u8; 6]>::try_from(v).ok(),
            IFLA_MTU => link.mtu = u32_of(v)?,
            IFLA_MASTER => link.master = Some(u32_of(v)?),
            IFLA_LINKINFO => link.kind = info_kind(v)?,
            _ => {}
        }
    }
    Ok(link)
}

fn info_kind(nested: &[u8]) -> Result<Option<String>, DecodeError> {
    for nla in NlasIterator::new(nested) {
        let nla: NlaBuffer<&[u8]> = nla?;
        if nla.kind() == IFLA_INFO_KIND {
            return c_string(nla.value()).map(Some);
        }
    }
    Ok(None)
}

fn c_string(v: &[u8]) -> Result<String, DecodeError> {
    let s = v.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8(s.to_vec()).map_err(|e| DecodeError::from(e.to_string()))
}

fn u32_of(v: &[u8]) -> Result<u32, DecodeError> {
    v.get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| DecodeError::from(format!("a u32 attribute of {} bytes", v.len())))
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;
    use netlink_packet_route::link::{
        AfSpecInet, AfSpecUnspec, InfoBridge, InfoData, InfoKind, LinkAttribute, LinkInfo,
        LinkMessage, State,
    };

    use super::*;

    /// What the full decoder makes of the same message: the oracle.
    fn oracle(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            master: None,
            up: m.header.flags.contains(LinkFlags::Up),
            kind: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(b) => link.mac = <[u8; 6]>::try_from(&b[..]).ok(),
                LinkAttribute::Mtu(x) => link.mtu = *x,
                LinkAttribute::Controller(i) => link.master = Some(*i),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            link.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    fn bytes(m: &LinkMessage) -> Vec<u8> {
        let mut b = vec![0; m.buffer_len()];
        m.emit(&mut b);
        b
    }

    fn bridge() -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = 7;
        m.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        m.attributes = vec![
            LinkAttribute::IfName("br0".into()),
            LinkAttribute::Mtu(1500),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Address(vec![0x0e, 0x58, 0xc0, 0xa8, 0x02, 0x0b]),
            LinkAttribute::Broadcast(vec![0xff; 6]),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Bridge),
                LinkInfo::Data(InfoData::Bridge(vec![
                    InfoBridge::ForwardDelay(0),
                    InfoBridge::Priority(32768),
                ])),
            ]),
            LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![AfSpecInet::DevConf(
                Default::default(),
            )])]),
        ];
        m
    }

    #[test]
    fn a_bridge_reads_as_the_full_decoder_reads_it() {
        let m = bridge();
        let got = parse(&bytes(&m)).expect("parse");
        assert_eq!(got, oracle(&m));
        assert_eq!(got.name, "br0");
        assert_eq!(got.kind.as_deref(), Some("bridge"));
        assert_eq!(got.mtu, 1500);
        assert!(got.up);
    }

    #[test]
    fn a_down_veth_port_with_a_master_reads_as_the_full_decoder_reads_it() {
        let mut m = LinkMessage::default();
        m.header.index = 12;
        m.attributes = vec![
            LinkAttribute::IfName("fl0123456789ab".into()),
            LinkAttribute::Controller(7),
            LinkAttribute::Mtu(9000),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let got = parse(&bytes(&m)).expect("parse");
        assert_eq!(got, oracle(&m));
        assert_eq!(got.master, Some(7));
        assert!(!got.up);
        assert_eq!(got.mac, None);
    }

    #[test]
    fn truncated_and_garbage_replies_are_errors_not_panics() {
        let b = bytes(&bridge());
        for cut in 0..b.len() {
            let _ = parse(&b[..cut]);
        }
        assert!(parse(&b[..8]).is_err(), "shorter than ifinfomsg");
        let mut bad = b.clone();
        // An attribute claiming to run past the end of the message.
        bad[HEADER_LEN] = 0xff;
        bad[HEADER_LEN + 1] = 0xff;
        assert!(parse(&bad).is_err());
    }
}
