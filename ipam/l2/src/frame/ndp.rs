//! IPv6 Neighbor Discovery (RFC 4861) Neighbor Solicitation and Neighbor
//! Advertisement over Ethernet (RFC 2464), as used for duplicate address
//! detection (RFC 4862 §5.4) and for announcing VIPs.
//!
//! Frame layout:
//!
//! ```text
//! Ethernet (14) | IPv6 header (40)                       | ICMPv6
//!               | 6/tc/flow | plen | nh=58 | hlim=255    | type | code | cksum | flags/reserved (4) | target (16) | options…
//!               | src (16)  | dst (16)                   |
//! ```
//!
//! Builders and the parser apply the same validity rules (RFC 4861 §7.1.1,
//! §7.1.2), so anything we build, we would also accept.

use std::net::Ipv6Addr;

use super::checksum::{icmpv6_checksum, NEXT_HEADER_ICMPV6};
use super::ether::{self, EtherType, EthernetHeader};
use super::{ensure_room, Frame, FrameError};
use crate::mac::MacAddr;

/// Offset of the version / traffic class / flow label word in the IPv6 header.
pub const IP6_VTF_OFFSET: usize = 0;
/// Offset of the payload length.
pub const IP6_PLEN_OFFSET: usize = 4;
/// Offset of the next header.
pub const IP6_NEXT_HEADER_OFFSET: usize = 6;
/// Offset of the hop limit.
pub const IP6_HOP_LIMIT_OFFSET: usize = 7;
/// Offset of the source address.
pub const IP6_SRC_OFFSET: usize = 8;
/// Offset of the destination address.
pub const IP6_DST_OFFSET: usize = 24;
/// Length of the fixed IPv6 header.
pub const IP6_HEADER_LEN: usize = 40;

/// Offset of the ICMPv6 type (from the start of the ICMPv6 message).
pub const ICMP_TYPE_OFFSET: usize = 0;
/// Offset of the ICMPv6 code.
pub const ICMP_CODE_OFFSET: usize = 1;
/// Offset of the ICMPv6 checksum.
pub const ICMP_CHECKSUM_OFFSET: usize = 2;
/// Offset of the NA flags byte (reserved in an NS).
pub const NDP_FLAGS_OFFSET: usize = 4;
/// Offset of the target address.
pub const NDP_TARGET_OFFSET: usize = 8;
/// Offset of the first option; also the minimum NS/NA length (RFC 4861
/// §7.1.1: "ICMP length (derived from the IP length) is 24 or more octets").
pub const NDP_OPTIONS_OFFSET: usize = 24;
/// Length of an Ethernet link-layer address option (RFC 2464 §6): one
/// 8-octet unit.
pub const LL_OPTION_LEN: usize = 8;

/// ICMPv6 type Neighbor Solicitation.
pub const ICMP_NS: u8 = 135;
/// ICMPv6 type Neighbor Advertisement.
pub const ICMP_NA: u8 = 136;
/// Option type Source Link-Layer Address (RFC 4861 §4.6.1).
pub const OPT_SOURCE_LL: u8 = 1;
/// Option type Target Link-Layer Address (RFC 4861 §4.6.1).
pub const OPT_TARGET_LL: u8 = 2;
/// NA Router flag.
pub const NA_FLAG_ROUTER: u8 = 0x80;
/// NA Solicited flag.
pub const NA_FLAG_SOLICITED: u8 = 0x40;
/// NA Override flag.
pub const NA_FLAG_OVERRIDE: u8 = 0x20;
/// NDP is only valid with hop limit 255 (RFC 4861 §7.1): a packet that
/// crossed a router would have a lower one, so off-link forgeries are
/// rejected.
pub const NDP_HOP_LIMIT: u8 = 255;

/// The all-nodes multicast group ff02::1, where unsolicited NAs and the
/// answers to DAD go (RFC 4861 §7.2.4, §7.2.6).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The solicited-node multicast group of `addr`: ff02::1:ff00:0/104 plus
/// the low 24 bits of `addr` (RFC 4291 §2.7.1).
pub const fn solicited_node_multicast(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | o[13] as u16,
        (o[14] as u16) << 8 | o[15] as u16,
    )
}

/// True if `addr` is in ff02::1:ff00:0/104.
pub fn is_solicited_node_multicast(addr: Ipv6Addr) -> bool {
    let o = addr.octets();
    o[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]
}

/// The Ethernet address of an IPv6 multicast group: 33:33 followed by the
/// group's last 32 bits (RFC 2464 §7).
pub const fn ipv6_multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The Ethernet address of `addr`'s solicited-node group: 33:33:ff:XX:XX:XX.
pub const fn solicited_node_multicast_mac(addr: Ipv6Addr) -> MacAddr {
    ipv6_multicast_mac(solicited_node_multicast(addr))
}

/// A Neighbor Solicitation (RFC 4861 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborSolicitation {
    /// IPv6 source; `::` during duplicate address detection.
    pub src: Ipv6Addr,
    /// IPv6 destination: the target's solicited-node group, or the target
    /// itself for unicast reachability checks.
    pub dst: Ipv6Addr,
    /// The address being asked about.
    pub target: Ipv6Addr,
    /// Source link-layer address option; must be absent when `src` is `::`.
    pub source_ll: Option<MacAddr>,
}

/// A Neighbor Advertisement (RFC 4861 §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborAdvertisement {
    /// IPv6 source: an address of the advertising interface.
    pub src: Ipv6Addr,
    /// IPv6 destination: the solicitor, or ff02::1.
    pub dst: Ipv6Addr,
    /// The address being advertised.
    pub target: Ipv6Addr,
    /// R: the sender is a router.
    pub router: bool,
    /// S: sent in response to a solicitation. Must be clear when `dst` is
    /// multicast.
    pub solicited: bool,
    /// O: override existing cache entries. The speaker always sets it so a
    /// failover replaces the old owner's MAC in LAN caches at once.
    pub override_flag: bool,
    /// Target link-layer address option.
    pub target_ll: Option<MacAddr>,
}

/// A parsed NS or NA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NdpMessage {
    /// Neighbor Solicitation.
    Solicitation(NeighborSolicitation),
    /// Neighbor Advertisement.
    Advertisement(NeighborAdvertisement),
}

/// Length of an NS/NA frame with zero or one link-layer option.
const fn frame_len(has_ll_option: bool) -> usize {
    ether::HEADER_LEN
        + IP6_HEADER_LEN
        + NDP_OPTIONS_OFFSET
        + if has_ll_option { LL_OPTION_LEN } else { 0 }
}
const _: () = assert!(frame_len(true) <= super::FRAME_CAPACITY);

impl NeighborSolicitation {
    /// The DAD probe for `target` (RFC 4862 §5.4.2): source `::`,
    /// destination the target's solicited-node group, no source link-layer
    /// option (RFC 4861 §4.3 forbids it with an unspecified source).
    pub const fn dad(target: Ipv6Addr) -> Self {
        NeighborSolicitation {
            src: Ipv6Addr::UNSPECIFIED,
            dst: solicited_node_multicast(target),
            target,
            source_ll: None,
        }
    }

    /// Multicast address resolution for `target` (RFC 4861 §7.2.2).
    pub const fn resolve(src: Ipv6Addr, src_mac: MacAddr, target: Ipv6Addr) -> Self {
        NeighborSolicitation {
            src,
            dst: solicited_node_multicast(target),
            target,
            source_ll: Some(src_mac),
        }
    }

    /// True for a DAD probe (source `::`).
    pub fn is_dad(&self) -> bool {
        self.src.is_unspecified()
    }

    /// The Ethernet destination for a multicast `dst`; `None` for a unicast
    /// destination, whose MAC the caller must know.
    pub fn multicast_eth_dst(&self) -> Option<MacAddr> {
        multicast_eth_dst(self.dst)
    }

    /// Checks the RFC 4861 §7.1.1 rules that concern the fields.
    pub fn validate(&self) -> Result<(), FrameError> {
        if self.target.is_multicast() {
            return Err(FrameError::InvalidNdp("NS target is a multicast address"));
        }
        if self.src.is_unspecified() {
            if !is_solicited_node_multicast(self.dst) {
                return Err(FrameError::InvalidNdp(
                    "NS from :: must go to a solicited-node multicast address",
                ));
            }
            if self.source_ll.is_some() {
                return Err(FrameError::InvalidNdp(
                    "NS from :: must not carry a source link-layer address option",
                ));
            }
        }
        Ok(())
    }

    /// Writes the whole Ethernet frame into `buf`; returns its length.
    pub fn write_frame(
        &self,
        eth_src: MacAddr,
        eth_dst: MacAddr,
        buf: &mut [u8],
    ) -> Result<usize, FrameError> {
        self.wire(eth_src, eth_dst)?.write(buf)
    }

    /// The whole Ethernet frame, on the stack. `eth_dst` is usually
    /// [`Self::multicast_eth_dst`].
    pub fn to_frame(&self, eth_src: MacAddr, eth_dst: MacAddr) -> Result<Frame, FrameError> {
        Ok(self.wire(eth_src, eth_dst)?.to_frame())
    }

    fn wire(&self, eth_src: MacAddr, eth_dst: MacAddr) -> Result<Wire, FrameError> {
        Wire::of(&NdpMessage::Solicitation(*self), eth_src, eth_dst)
    }
}

impl NeighborAdvertisement {
    /// An unsolicited NA announcing `target` at `mac` to all nodes
    /// (RFC 4861 §7.2.6): S=0 (it answers no solicitation), O=1 so that
    /// LAN caches replace the previous owner's MAC immediately instead of
    /// waiting for NUD (the IPv6 equivalent of a GARP), and the target
    /// link-layer option set.
    pub const fn unsolicited(src: Ipv6Addr, mac: MacAddr, target: Ipv6Addr) -> Self {
        NeighborAdvertisement {
            src,
            dst: ALL_NODES,
            target,
            router: false,
            solicited: false,
            override_flag: true,
            target_ll: Some(mac),
        }
    }

    /// A solicited NA answering an NS from `to` (RFC 4861 §7.2.4): S=1,
    /// O=1, with the target link-layer option. An NS from `::` (DAD) must
    /// be answered to all-nodes with S=0; this constructor does that.
    pub fn solicited_reply(src: Ipv6Addr, mac: MacAddr, target: Ipv6Addr, to: Ipv6Addr) -> Self {
        let dad = to.is_unspecified();
        NeighborAdvertisement {
            src,
            dst: if dad { ALL_NODES } else { to },
            target,
            router: false,
            solicited: !dad,
            override_flag: true,
            target_ll: Some(mac),
        }
    }

    /// The Ethernet destination for a multicast `dst`.
    pub fn multicast_eth_dst(&self) -> Option<MacAddr> {
        multicast_eth_dst(self.dst)
    }

    fn flags(&self) -> u8 {
        (if self.router { NA_FLAG_ROUTER } else { 0 })
            | (if self.solicited { NA_FLAG_SOLICITED } else { 0 })
            | (if self.override_flag {
                NA_FLAG_OVERRIDE
            } else {
                0
            })
    }

    /// Checks the RFC 4861 §7.1.2 rules that concern the fields.
    pub fn validate(&self) -> Result<(), FrameError> {
        if self.target.is_multicast() {
            return Err(FrameError::InvalidNdp("NA target is a multicast address"));
        }
        if self.dst.is_multicast() && self.solicited {
            return Err(FrameError::InvalidNdp(
                "NA to a multicast address has the Solicited flag set",
            ));
        }
        Ok(())
    }

    /// Writes the whole Ethernet frame into `buf`; returns its length.
    pub fn write_frame(
        &self,
        eth_src: MacAddr,
        eth_dst: MacAddr,
        buf: &mut [u8],
    ) -> Result<usize, FrameError> {
        self.wire(eth_src, eth_dst)?.write(buf)
    }

    /// The whole Ethernet frame, on the stack.
    pub fn to_frame(&self, eth_src: MacAddr, eth_dst: MacAddr) -> Result<Frame, FrameError> {
        Ok(self.wire(eth_src, eth_dst)?.to_frame())
    }

    fn wire(&self, eth_src: MacAddr, eth_dst: MacAddr) -> Result<Wire, FrameError> {
        Wire::of(&NdpMessage::Advertisement(*self), eth_src, eth_dst)
    }
}

/// The Ethernet destination of a multicast IPv6 `dst`, `None` if unicast.
fn multicast_eth_dst(dst: Ipv6Addr) -> Option<MacAddr> {
    dst.is_multicast().then(|| ipv6_multicast_mac(dst))
}

/// Everything that goes on the wire for an NS or NA, already validated.
/// NS and NA share one layout and differ only in a few of these fields, so
/// both reduce to a `Wire` and one writer assembles the frame: there is a
/// single place where the layout (and its checksum) can go wrong, and the
/// golden tests pin it for both.
struct Wire {
    eth_src: MacAddr,
    eth_dst: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_type: u8,
    /// The first byte of the flags/reserved word (0 for an NS).
    flags: u8,
    target: Ipv6Addr,
    /// The link-layer option: its type and the address it carries.
    ll: Option<(u8, MacAddr)>,
}

impl Wire {
    /// Validates `msg` and lays out its fields. The only per-message
    /// decisions (type, flags, which link-layer option) are made here, in
    /// one place; an NS has no flags (the word is reserved, RFC 4861 §4.3).
    fn of(msg: &NdpMessage, eth_src: MacAddr, eth_dst: MacAddr) -> Result<Wire, FrameError> {
        let (src, dst, icmp_type, flags, ll) = match msg {
            NdpMessage::Solicitation(ns) => {
                ns.validate()?;
                let ll = ns.source_ll.map(|m| (OPT_SOURCE_LL, m));
                (ns.src, ns.dst, ICMP_NS, 0, ll)
            }
            NdpMessage::Advertisement(na) => {
                na.validate()?;
                let ll = na.target_ll.map(|m| (OPT_TARGET_LL, m));
                (na.src, na.dst, ICMP_NA, na.flags(), ll)
            }
        };
        Ok(Wire {
            eth_src,
            eth_dst,
            src,
            dst,
            icmp_type,
            flags,
            target: msg.target(),
            ll,
        })
    }

    /// Writes into a caller buffer, checking its size first.
    fn write(&self, buf: &mut [u8]) -> Result<usize, FrameError> {
        ensure_room(buf, frame_len(self.ll.is_some()))?;
        Ok(self.write_unchecked(buf))
    }

    /// Builds on the stack; [`FRAME_CAPACITY`](super::FRAME_CAPACITY)
    /// always fits (asserted at compile time next to `frame_len`).
    fn to_frame(&self) -> Frame {
        Frame::build(|buf| self.write_unchecked(buf))
    }

    /// Writes Ethernet + IPv6 + ICMPv6; `buf` must hold `frame_len(..)` bytes.
    fn write_unchecked(&self, buf: &mut [u8]) -> usize {
        let eth = EthernetHeader {
            dst: self.eth_dst,
            src: self.eth_src,
            ethertype: EtherType::IPV6,
        };
        let ip_at = eth.write_unchecked(buf);
        let icmp_at = ip_at + IP6_HEADER_LEN;
        let icmp_len = NDP_OPTIONS_OFFSET + if self.ll.is_some() { LL_OPTION_LEN } else { 0 };
        let end = icmp_at + icmp_len;

        let ip = &mut buf[ip_at..icmp_at];
        ip[IP6_VTF_OFFSET..IP6_PLEN_OFFSET].copy_from_slice(&[0x60, 0, 0, 0]);
        // icmp_len is 24 or 32.
        ip[IP6_PLEN_OFFSET..IP6_NEXT_HEADER_OFFSET]
            .copy_from_slice(&(icmp_len as u16).to_be_bytes());
        ip[IP6_NEXT_HEADER_OFFSET] = NEXT_HEADER_ICMPV6;
        ip[IP6_HOP_LIMIT_OFFSET] = NDP_HOP_LIMIT;
        ip[IP6_SRC_OFFSET..IP6_DST_OFFSET].copy_from_slice(&self.src.octets());
        ip[IP6_DST_OFFSET..IP6_HEADER_LEN].copy_from_slice(&self.dst.octets());

        let icmp = &mut buf[icmp_at..end];
        icmp[ICMP_TYPE_OFFSET] = self.icmp_type;
        icmp[ICMP_CODE_OFFSET] = 0;
        icmp[ICMP_CHECKSUM_OFFSET..NDP_FLAGS_OFFSET].fill(0);
        icmp[NDP_FLAGS_OFFSET..NDP_TARGET_OFFSET].copy_from_slice(&[self.flags, 0, 0, 0]);
        icmp[NDP_TARGET_OFFSET..NDP_OPTIONS_OFFSET].copy_from_slice(&self.target.octets());
        if let Some((kind, mac)) = self.ll {
            icmp[NDP_OPTIONS_OFFSET] = kind;
            icmp[NDP_OPTIONS_OFFSET + 1] = 1; // length in units of 8 octets
            icmp[NDP_OPTIONS_OFFSET + 2..NDP_OPTIONS_OFFSET + LL_OPTION_LEN]
                .copy_from_slice(&mac.0);
        }
        let cksum = icmpv6_checksum(self.src, self.dst, icmp);
        icmp[ICMP_CHECKSUM_OFFSET..NDP_FLAGS_OFFSET].copy_from_slice(&cksum.to_be_bytes());
        end
    }
}

mod parse;
#[cfg(test)]
mod tests;
