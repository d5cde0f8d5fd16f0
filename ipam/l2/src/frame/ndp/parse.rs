//! The NS/NA parser: RFC 4861 §7.1's validity checks on received frames.

use std::net::Ipv6Addr;

use super::*;
use crate::frame::checksum::{icmpv6_checksum, icmpv6_checksum_of_message, NEXT_HEADER_ICMPV6};
use crate::frame::ether::{EtherType, EthernetHeader};
use crate::frame::{read_array, read_u16, FrameError};
use crate::mac::MacAddr;

impl NdpMessage {
    /// Parses a whole Ethernet frame carrying an NS or NA.
    pub fn parse_frame(frame: &[u8]) -> Result<(EthernetHeader, NdpMessage), FrameError> {
        let (hdr, payload) = EthernetHeader::parse_expecting(frame, EtherType::IPV6)?;
        Ok((hdr, Self::parse_ipv6(payload)?))
    }

    /// Parses an IPv6 packet carrying an NS or NA, enforcing RFC 4861
    /// §7.1: hop limit 255, ICMP code 0, a valid checksum, ICMP length of at
    /// least 24, every option of non-zero length and inside the message,
    /// and the per-message rules of [`NeighborSolicitation::validate`] and
    /// [`NeighborAdvertisement::validate`]. Unknown options are skipped, as
    /// RFC 4861 §4.6 requires; bytes after the IPv6 payload length
    /// (Ethernet padding) are ignored.
    pub fn parse_ipv6(packet: &[u8]) -> Result<NdpMessage, FrameError> {
        let [vtf0] = read_array::<1>(packet, IP6_VTF_OFFSET)?;
        let version = vtf0 >> 4;
        if version != 6 {
            return Err(FrameError::BadIpVersion(version));
        }
        let plen = usize::from(read_u16(packet, IP6_PLEN_OFFSET)?);
        let [next_header, hop_limit] = read_array::<2>(packet, IP6_NEXT_HEADER_OFFSET)?;
        if next_header != NEXT_HEADER_ICMPV6 {
            return Err(FrameError::NotIcmpv6(next_header));
        }
        let src = Ipv6Addr::from(read_array::<16>(packet, IP6_SRC_OFFSET)?);
        let dst = Ipv6Addr::from(read_array::<16>(packet, IP6_DST_OFFSET)?);
        let end = IP6_HEADER_LEN + plen;
        let icmp = packet
            .get(IP6_HEADER_LEN..end)
            .ok_or(FrameError::Truncated {
                needed: end,
                got: packet.len(),
            })?;

        let [icmp_type, code] = read_array::<2>(icmp, ICMP_TYPE_OFFSET)?;
        if icmp_type != ICMP_NS && icmp_type != ICMP_NA {
            return Err(FrameError::NotNdp(icmp_type));
        }
        if hop_limit != NDP_HOP_LIMIT {
            return Err(FrameError::BadHopLimit(hop_limit));
        }
        if code != 0 {
            return Err(FrameError::BadIcmpCode(code));
        }
        if icmp.len() < NDP_OPTIONS_OFFSET {
            return Err(FrameError::Truncated {
                needed: IP6_HEADER_LEN + NDP_OPTIONS_OFFSET,
                got: IP6_HEADER_LEN + icmp.len(),
            });
        }
        // Summing a message including its checksum yields 0 when valid.
        if icmpv6_checksum(src, dst, icmp) != 0 {
            return Err(FrameError::BadChecksum {
                expected: icmpv6_checksum_of_message(src, dst, icmp),
                found: read_u16(icmp, ICMP_CHECKSUM_OFFSET)?,
            });
        }

        let [flags] = read_array::<1>(icmp, NDP_FLAGS_OFFSET)?;
        let target = Ipv6Addr::from(read_array::<16>(icmp, NDP_TARGET_OFFSET)?);
        let wanted = if icmp_type == ICMP_NS {
            OPT_SOURCE_LL
        } else {
            OPT_TARGET_LL
        };
        let ll = parse_options(icmp, wanted)?;

        let msg = if icmp_type == ICMP_NS {
            let ns = NeighborSolicitation {
                src,
                dst,
                target,
                source_ll: ll,
            };
            ns.validate()?;
            NdpMessage::Solicitation(ns)
        } else {
            let na = NeighborAdvertisement {
                src,
                dst,
                target,
                router: flags & NA_FLAG_ROUTER != 0,
                solicited: flags & NA_FLAG_SOLICITED != 0,
                override_flag: flags & NA_FLAG_OVERRIDE != 0,
                target_ll: ll,
            };
            na.validate()?;
            NdpMessage::Advertisement(na)
        };
        Ok(msg)
    }

    /// The target address of either message.
    pub fn target(&self) -> Ipv6Addr {
        match self {
            NdpMessage::Solicitation(ns) => ns.target,
            NdpMessage::Advertisement(na) => na.target,
        }
    }
}

/// Walks the options of an NS/NA (starting at offset 24), rejecting any of
/// zero length or running past the end (RFC 4861 §4.6, §7.1), and returns
/// the first link-layer address option of type `wanted`. The other
/// link-layer type and unknown options are skipped.
fn parse_options(icmp: &[u8], wanted: u8) -> Result<Option<MacAddr>, FrameError> {
    let mut at = NDP_OPTIONS_OFFSET;
    let mut found = None;
    while at < icmp.len() {
        let [kind, units] = read_array::<2>(icmp, at).map_err(|_| FrameError::BadOptionLength {
            offset: IP6_HEADER_LEN + at,
        })?;
        let len = usize::from(units) * 8;
        if len == 0 || at + len > icmp.len() {
            return Err(FrameError::BadOptionLength {
                offset: IP6_HEADER_LEN + at,
            });
        }
        if kind == OPT_SOURCE_LL || kind == OPT_TARGET_LL {
            if units != 1 {
                return Err(FrameError::BadLinkLayerOption { kind, len: units });
            }
            if kind == wanted && found.is_none() {
                found = Some(MacAddr(read_array(icmp, at + 2)?));
            }
        }
        at += len;
    }
    Ok(found)
}
