//! ARP (RFC 826) for Ethernet and IPv4, including the RFC 5227 probe and
//! announcement and both forms of gratuitous ARP.
//!
//! Packet layout (28 bytes after the Ethernet header):
//!
//! ```text
//!  0      2      4    5    6      8                14         18                24        28
//!  | htype | ptype | hlen| plen| oper | sha (6)        | spa (4)  | tha (6)        | tpa (4) |
//! ```

use std::net::Ipv4Addr;

use super::ether::{self, EtherType, EthernetHeader};
use super::{ensure_room, read_array, read_u16, Frame, FrameError};
use crate::mac::MacAddr;

/// Offset of the hardware type.
pub const HTYPE_OFFSET: usize = 0;
/// Offset of the protocol type.
pub const PTYPE_OFFSET: usize = 2;
/// Offset of the hardware address length.
pub const HLEN_OFFSET: usize = 4;
/// Offset of the protocol address length.
pub const PLEN_OFFSET: usize = 5;
/// Offset of the operation.
pub const OPER_OFFSET: usize = 6;
/// Offset of the sender hardware address.
pub const SHA_OFFSET: usize = 8;
/// Offset of the sender protocol address.
pub const SPA_OFFSET: usize = 14;
/// Offset of the target hardware address.
pub const THA_OFFSET: usize = 18;
/// Offset of the target protocol address.
pub const TPA_OFFSET: usize = 24;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;
/// Length of the (padded) Ethernet frame carrying it: 14 + 28 = 42 bytes,
/// padded to the 60-byte minimum.
pub const ARP_FRAME_LEN: usize = super::ETH_MIN_FRAME;

/// Hardware type Ethernet (RFC 826, IANA "Hardware Types").
pub const HTYPE_ETHERNET: u16 = 1;
/// Protocol type IPv4.
pub const PTYPE_IPV4: u16 = 0x0800;

/// The ARP operations flatlan sends and understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOp {
    /// `ares_op$REQUEST` = 1.
    Request,
    /// `ares_op$REPLY` = 2.
    Reply,
}

impl ArpOp {
    /// The on-the-wire opcode.
    pub const fn code(self) -> u16 {
        match self {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
        }
    }

    /// The operation for a wire opcode; other opcodes (RARP 3/4, InARP
    /// 8/9 …) are rejected.
    pub const fn from_code(code: u16) -> Result<Self, FrameError> {
        match code {
            1 => Ok(ArpOp::Request),
            2 => Ok(ArpOp::Reply),
            other => Err(FrameError::UnsupportedArpOp(other)),
        }
    }
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpPacket {
    /// Request or reply.
    pub op: ArpOp,
    /// Sender hardware address.
    pub sha: MacAddr,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: MacAddr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl ArpPacket {
    /// An ordinary request: who has `tpa`? Tell `spa`. The target hardware
    /// address is unknown and sent as zeros (RFC 826 leaves it unused in
    /// requests; RFC 5227 §2.1.1 says SHOULD be zero).
    pub const fn request(sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Self {
        ArpPacket {
            op: ArpOp::Request,
            sha,
            spa,
            tha: MacAddr::ZERO,
            tpa,
        }
    }

    /// An ordinary reply: `spa` is at `sha`, sent back to the requester
    /// (`tha`, `tpa`).
    pub const fn reply(sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr) -> Self {
        ArpPacket {
            op: ArpOp::Reply,
            sha,
            spa,
            tha,
            tpa,
        }
    }

    /// An RFC 5227 §2.1.1 ARP Probe for `candidate`: a request with sender
    /// IP 0.0.0.0, so that probing neither claims the address nor pollutes
    /// anybody's ARP cache, and target hardware address zero.
    pub const fn probe(sha: MacAddr, candidate: Ipv4Addr) -> Self {
        Self::request(sha, Ipv4Addr::UNSPECIFIED, candidate)
    }

    /// An RFC 5227 §2.3 ARP Announcement: a request with sender and target
    /// IP both the claimed address and target hardware address zero.
    /// This is byte-for-byte the request form of gratuitous ARP.
    pub const fn announcement(sha: MacAddr, ip: Ipv4Addr) -> Self {
        Self::request(sha, ip, ip)
    }

    /// Gratuitous ARP, request form (op=1, spa=tpa=`ip`, tha=00:…:00): the
    /// same as [`Self::announcement`], which RFC 5227 §3 prefers over the
    /// reply form. Every RFC 5227-era stack updates an existing cache entry
    /// from it. tshark titles this form "ARP Announcement" and sets
    /// `arp.isgratuitous` (`arping -U` sends tha=ff:…:ff instead, which
    /// tshark titles "Gratuitous ARP (Request)"; receivers treat both alike).
    pub const fn gratuitous_request(sha: MacAddr, ip: Ipv4Addr) -> Self {
        Self::announcement(sha, ip)
    }

    /// Gratuitous ARP, reply form (op=2, spa=tpa=`ip`, sent to broadcast).
    ///
    /// Choice: the target hardware address is our own MAC, as RFC 5944
    /// §4.6 specifies for a gratuitous reply ("the Target Hardware Address
    /// is also set to the link-layer address to which this cache entry
    /// should be updated") and as `arping -A` sends it; tha=ff:…:ff is the
    /// other form seen in the wild, and receivers update from either. Some
    /// clients only act on the reply form, which is why the speaker sends
    /// both forms (kube-vip #82). tshark titles it "Gratuitous ARP for X
    /// (Reply)".
    pub const fn gratuitous_reply(sha: MacAddr, ip: Ipv4Addr) -> Self {
        Self::reply(sha, ip, sha, ip)
    }

    /// True for an RFC 5227 probe: a request from 0.0.0.0.
    pub fn is_probe(&self) -> bool {
        self.op == ArpOp::Request && self.spa.is_unspecified()
    }

    /// True for a gratuitous ARP / announcement in either form.
    pub fn is_gratuitous(&self) -> bool {
        self.spa == self.tpa && !self.spa.is_unspecified()
    }

    /// The Ethernet destination this packet is sent to: broadcast for
    /// requests (probes and announcements included, RFC 5227 §2.1.1,
    /// §2.3) and for replies whose target hardware address is not a
    /// usable unicast address or is our own (the gratuitous reply);
    /// otherwise the requester's MAC.
    pub fn eth_dst(&self) -> MacAddr {
        match self.op {
            ArpOp::Request => MacAddr::BROADCAST,
            ArpOp::Reply if self.tha.is_unicast() && self.tha != self.sha => self.tha,
            ArpOp::Reply => MacAddr::BROADCAST,
        }
    }

    /// Writes the 28-byte ARP packet (no Ethernet header) into `buf`.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, FrameError> {
        ensure_room(buf, ARP_LEN)?;
        Ok(self.write_unchecked(buf))
    }

    fn write_unchecked(&self, buf: &mut [u8]) -> usize {
        buf[HTYPE_OFFSET..PTYPE_OFFSET].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        buf[PTYPE_OFFSET..HLEN_OFFSET].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
        buf[HLEN_OFFSET] = 6;
        buf[PLEN_OFFSET] = 4;
        buf[OPER_OFFSET..SHA_OFFSET].copy_from_slice(&self.op.code().to_be_bytes());
        buf[SHA_OFFSET..SPA_OFFSET].copy_from_slice(&self.sha.0);
        buf[SPA_OFFSET..THA_OFFSET].copy_from_slice(&self.spa.octets());
        buf[THA_OFFSET..TPA_OFFSET].copy_from_slice(&self.tha.0);
        buf[TPA_OFFSET..ARP_LEN].copy_from_slice(&self.tpa.octets());
        ARP_LEN
    }

    /// Writes a whole Ethernet frame from `sha` to [`Self::eth_dst`] into
    /// `buf`, zero-padded to 60 bytes. Returns the frame length (60).
    pub fn write_frame(&self, buf: &mut [u8]) -> Result<usize, FrameError> {
        self.write_frame_to(self.eth_dst(), buf)
    }

    /// Like [`Self::write_frame`] with an explicit Ethernet destination.
    pub fn write_frame_to(&self, eth_dst: MacAddr, buf: &mut [u8]) -> Result<usize, FrameError> {
        ensure_room(buf, ARP_FRAME_LEN)?;
        Ok(self.write_frame_unchecked(eth_dst, buf))
    }

    fn write_frame_unchecked(&self, eth_dst: MacAddr, buf: &mut [u8]) -> usize {
        let hdr = EthernetHeader {
            dst: eth_dst,
            src: self.sha,
            ethertype: EtherType::ARP,
        };
        let n = hdr.write_unchecked(buf);
        let n = n + self.write_unchecked(&mut buf[n..]);
        buf[n..ARP_FRAME_LEN].fill(0);
        ARP_FRAME_LEN
    }

    /// The whole Ethernet frame, on the stack.
    pub fn to_frame(&self) -> Frame {
        let dst = self.eth_dst();
        Frame::build(|buf| self.write_frame_unchecked(dst, buf))
    }

    /// Parses the 28-byte ARP packet after the Ethernet header. Trailing
    /// bytes (Ethernet padding) are ignored. Only Ethernet/IPv4 request and
    /// reply packets are accepted.
    pub fn parse(payload: &[u8]) -> Result<ArpPacket, FrameError> {
        let htype = read_u16(payload, HTYPE_OFFSET)?;
        let ptype = read_u16(payload, PTYPE_OFFSET)?;
        let [hlen, plen] = read_array::<2>(payload, HLEN_OFFSET)?;
        let oper = read_u16(payload, OPER_OFFSET)?;
        if htype != HTYPE_ETHERNET {
            return Err(FrameError::BadHardwareType(htype));
        }
        if ptype != PTYPE_IPV4 {
            return Err(FrameError::BadProtocolType(ptype));
        }
        if (hlen, plen) != (6, 4) {
            return Err(FrameError::BadAddressLength { hlen, plen });
        }
        let op = ArpOp::from_code(oper)?;
        Ok(ArpPacket {
            op,
            sha: MacAddr(read_array(payload, SHA_OFFSET)?),
            spa: Ipv4Addr::from(read_array::<4>(payload, SPA_OFFSET)?),
            tha: MacAddr(read_array(payload, THA_OFFSET)?),
            tpa: Ipv4Addr::from(read_array::<4>(payload, TPA_OFFSET)?),
        })
    }

    /// Parses a whole Ethernet frame carrying ARP.
    pub fn parse_frame(frame: &[u8]) -> Result<(EthernetHeader, ArpPacket), FrameError> {
        let (hdr, payload) = EthernetHeader::parse_expecting(frame, EtherType::ARP)?;
        Ok((hdr, Self::parse(payload)?))
    }
}

// Keep the header length in one place for readers of this module.
const _: () = assert!(ether::HEADER_LEN + ARP_LEN <= ARP_FRAME_LEN);
const _: () = assert!(ARP_FRAME_LEN <= super::FRAME_CAPACITY);

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 240);

    /// Ethernet header + ARP fixed part (htype 1, ptype 0x0800, hlen 6,
    /// plen 4), then the opcode, per RFC 826.
    fn expected(
        dst: [u8; 6],
        op: u8,
        sha: [u8; 6],
        spa: [u8; 4],
        tha: [u8; 6],
        tpa: [u8; 4],
    ) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&dst);
        v.extend_from_slice(&sha);
        v.extend_from_slice(&[0x08, 0x06]); // EtherType ARP
        v.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, op]);
        v.extend_from_slice(&sha);
        v.extend_from_slice(&spa);
        v.extend_from_slice(&tha);
        v.extend_from_slice(&tpa);
        v.resize(60, 0); // padding to the Ethernet minimum
        v
    }

    const SHA: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];

    #[test]
    fn golden_probe() {
        let f = ArpPacket::probe(OURS, VIP).to_frame();
        #[rustfmt::skip]
        let want: [u8; 60] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,   // dst: broadcast
            0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,   // src
            0x08, 0x06,                           // ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04,   // Ethernet / IPv4 / 6 / 4
            0x00, 0x01,                           // request
            0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,   // sha
            0x00, 0x00, 0x00, 0x00,               // spa 0.0.0.0 (RFC 5227 probe)
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00,   // tha zero
            0xc0, 0xa8, 0x01, 0xf0,               // tpa 192.168.1.240
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
        ];
        assert_eq!(&f[..], &want[..]);
        assert_eq!(f.len(), 60);
    }

    #[test]
    fn golden_announcement_and_garp_request() {
        let want = expected(
            [0xff; 6],
            1,
            SHA,
            [192, 168, 1, 240],
            [0; 6],
            [192, 168, 1, 240],
        );
        assert_eq!(
            &ArpPacket::announcement(OURS, VIP).to_frame()[..],
            &want[..]
        );
        assert_eq!(
            &ArpPacket::gratuitous_request(OURS, VIP).to_frame()[..],
            &want[..]
        );
    }

    #[test]
    fn golden_garp_reply() {
        let want = expected(
            [0xff; 6],
            2,
            SHA,
            [192, 168, 1, 240],
            SHA,
            [192, 168, 1, 240],
        );
        assert_eq!(
            &ArpPacket::gratuitous_reply(OURS, VIP).to_frame()[..],
            &want[..]
        );
    }

    #[test]
    fn golden_request_and_reply() {
        let peer = MacAddr([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]);
        let peer_ip = Ipv4Addr::new(192, 168, 1, 10);
        let want = expected(
            [0xff; 6],
            1,
            SHA,
            [192, 168, 1, 240],
            [0; 6],
            [192, 168, 1, 10],
        );
        assert_eq!(
            &ArpPacket::request(OURS, VIP, peer_ip).to_frame()[..],
            &want[..]
        );
        // A reply goes unicast to the requester.
        let want = expected(
            peer.0,
            2,
            SHA,
            [192, 168, 1, 240],
            peer.0,
            [192, 168, 1, 10],
        );
        assert_eq!(
            &ArpPacket::reply(OURS, VIP, peer, peer_ip).to_frame()[..],
            &want[..]
        );
    }

    #[test]
    fn write_frame_into_caller_buffer() {
        let p = ArpPacket::probe(OURS, VIP);
        let mut buf = [0xaau8; 64];
        assert_eq!(p.write_frame(&mut buf), Ok(60));
        assert_eq!(&buf[..60], &p.to_frame()[..]);
        assert_eq!(buf[60..], [0xaa; 4]);
        assert!(matches!(
            p.write_frame(&mut [0u8; 59]),
            Err(FrameError::BufferTooSmall {
                needed: 60,
                got: 59
            })
        ));
        assert!(p.write(&mut [0u8; 27]).is_err());
    }

    #[test]
    fn classification() {
        assert!(ArpPacket::probe(OURS, VIP).is_probe());
        assert!(!ArpPacket::probe(OURS, VIP).is_gratuitous());
        assert!(ArpPacket::announcement(OURS, VIP).is_gratuitous());
        assert!(ArpPacket::gratuitous_reply(OURS, VIP).is_gratuitous());
        assert!(!ArpPacket::gratuitous_reply(OURS, VIP).is_probe());
    }

    #[test]
    fn parse_round_trip_and_padding() {
        let p = ArpPacket::gratuitous_reply(OURS, VIP);
        let f = p.to_frame();
        let (hdr, back) = ArpPacket::parse_frame(&f).expect("parses");
        assert_eq!(back, p);
        assert_eq!(hdr.src, OURS);
        assert_eq!(hdr.dst, MacAddr::BROADCAST);
        // Unpadded 42-byte frames (as seen on the sending host) parse too.
        assert_eq!(ArpPacket::parse_frame(&f[..42]).map(|x| x.1), Ok(p));
    }

    #[test]
    fn parse_rejects_malformed() {
        let good = ArpPacket::probe(OURS, VIP).to_frame();
        let with = |edit: &dyn Fn(&mut [u8])| {
            let mut b = good.as_bytes().to_vec();
            edit(&mut b);
            ArpPacket::parse_frame(&b).map(|x| x.1)
        };
        assert_eq!(with(&|b| b[15] = 6), Err(FrameError::BadHardwareType(6)));
        assert_eq!(
            with(&|b| b[16] = 0x86),
            Err(FrameError::BadProtocolType(0x8600))
        );
        assert_eq!(
            with(&|b| b[18] = 8),
            Err(FrameError::BadAddressLength { hlen: 8, plen: 4 })
        );
        assert_eq!(
            with(&|b| b[19] = 16),
            Err(FrameError::BadAddressLength { hlen: 6, plen: 16 })
        );
        assert_eq!(with(&|b| b[21] = 3), Err(FrameError::UnsupportedArpOp(3)));
        assert!(matches!(
            with(&|b| b[13] = 0x00),
            Err(FrameError::WrongEtherType {
                expected: 0x0806,
                found: 0x0800
            })
        ));
        for len in 0..42 {
            assert!(
                matches!(
                    ArpPacket::parse_frame(&good[..len]),
                    Err(FrameError::Truncated { .. })
                ),
                "len {len}"
            );
        }
    }
}
