//! The kernel-side filter of a [`super::PacketSocket`]: a classic BPF
//! program (`SO_ATTACH_FILTER`) built from the EtherTypes the socket wants,
//! so that only frames the probe and the speaker read are copied to
//! userspace.
//!
//! An `AF_PACKET` socket gets a copy of every frame of its protocol on the
//! interface. For ARP that is little, but an IPv6 socket (or an `ETH_P_ALL`
//! one serving ARP and NDP) would copy all of the host's IPv6 traffic, and
//! a long-lived speaker would wake up for each packet only to drop it. The
//! program lets through:
//!
//! * every frame of a wanted EtherType other than IPv6 (ARP: the parsers
//!   need nothing narrower);
//! * of IPv6, only ICMPv6 Neighbor Solicitations (135) and Advertisements
//!   (136) directly after the fixed IPv6 header: what
//!   [`crate::frame::NdpMessage::parse_frame`] accepts. Router
//!   Solicitations/Advertisements, Redirects, MLD and all other traffic stay
//!   in the kernel.
//!
//! NDP behind an IPv6 extension header is dropped. Classic BPF has no
//! backward jumps, so it cannot walk a header chain; the frame parser
//! rejects such messages anyway (`FrameError::NotIcmpv6`); and they do not
//! occur in practice: RFC 6980 §5 forbids fragmenting NDP and makes
//! receivers drop fragmented NDP, and no NDP use (Linux, SEND's RFC 3971
//! options included) puts another header in front of the ICMPv6 message.
//!
//! The hop limit, code and checksum are left to the parser (RFC 4861 §7.1):
//! the filter only needs to keep the flood out, not to validate.
//!
//! The offsets count from the start of the Ethernet header: for a
//! `SOCK_RAW` packet socket the kernel runs the filter on the frame with
//! its link-layer header (`packet_rcv`).

use super::Error;
use crate::frame::checksum::NEXT_HEADER_ICMPV6;
use crate::frame::ether::{ETHERTYPE_OFFSET, HEADER_LEN};
use crate::frame::ndp::{ICMP_NA, ICMP_NS, IP6_HEADER_LEN, IP6_NEXT_HEADER_OFFSET};
use crate::frame::EtherType;

/// One classic BPF instruction: `struct sock_filter` (linux/filter.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Forward jump when a conditional jump's test is true.
    pub jt: u8,
    /// Forward jump when it is false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

// Opcodes (linux/bpf_common.h); libc has the parts as u32.
/// `A = u16 at [k]` (network order).
const LD_H_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
/// `A = u8 at [k]`.
const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
/// `pc += (A == k) ? jt : jf`.
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
/// `return k`: the number of bytes to keep, 0 to drop the frame.
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// The whole frame (the kernel keeps min(frame length, this)).
const ACCEPT: u32 = u32::MAX;
const DROP: u32 = 0;

/// Offset of the IPv6 next header in the frame.
const IP6_NEXT_HEADER: u32 = (HEADER_LEN + IP6_NEXT_HEADER_OFFSET) as u32;
/// Offset of the ICMPv6 type when no extension header precedes it.
const ICMP6_TYPE: u32 = (HEADER_LEN + IP6_HEADER_LEN) as u32;

/// More distinct EtherTypes than any ARP/NDP socket needs; the limit keeps
/// every jump within a `u8`.
const MAX_ETHERTYPES: usize = 32;

/// Where a jump goes, before the program's length is known.
#[derive(Clone, Copy)]
enum To {
    Next,
    Accept,
    Drop,
}

/// The filter for a socket receiving `ethertypes` (IPv6 meaning NS and NA
/// only, see the module docs).
pub fn program(ethertypes: &[EtherType]) -> Result<Vec<Insn>, Error> {
    let mut others: Vec<u16> = ethertypes
        .iter()
        .filter(|t| **t != EtherType::IPV6)
        .map(|t| t.0)
        .collect();
    others.sort_unstable();
    others.dedup();
    let ndp = ethertypes.contains(&EtherType::IPV6);
    if others.is_empty() && !ndp {
        return Err(Error::InvalidFilter(
            "a packet socket must receive at least one EtherType",
        ));
    }
    if others.len() > MAX_ETHERTYPES {
        return Err(Error::InvalidFilter(
            "too many EtherTypes for one packet socket",
        ));
    }

    // (code, jt, jf, k) with symbolic targets; drop and accept come last.
    let mut body: Vec<(u16, To, To, u32)> =
        vec![(LD_H_ABS, To::Next, To::Next, ETHERTYPE_OFFSET as u32)];
    for t in others {
        body.push((JEQ_K, To::Accept, To::Next, u32::from(t)));
    }
    if ndp {
        body.extend([
            (JEQ_K, To::Next, To::Drop, u32::from(EtherType::IPV6.0)),
            (LD_B_ABS, To::Next, To::Next, IP6_NEXT_HEADER),
            (JEQ_K, To::Next, To::Drop, u32::from(NEXT_HEADER_ICMPV6)),
            (LD_B_ABS, To::Next, To::Next, ICMP6_TYPE),
            (JEQ_K, To::Accept, To::Next, u32::from(ICMP_NS)),
            (JEQ_K, To::Accept, To::Drop, u32::from(ICMP_NA)),
        ]);
    }
    // Without NDP the last comparison falls through to the drop below.
    let drop_at = body.len();
    let accept_at = drop_at + 1;
    let mut prog = Vec::with_capacity(accept_at + 1);
    for (i, (code, jt, jf, k)) in body.into_iter().enumerate() {
        let off = |to: To| -> Result<u8, Error> {
            let target = match to {
                To::Next => i + 1,
                To::Accept => accept_at,
                To::Drop => drop_at,
            };
            u8::try_from(target - (i + 1))
                .map_err(|_| Error::InvalidFilter("packet filter jump out of range"))
        };
        prog.push(Insn {
            code,
            jt: off(jt)?,
            jf: off(jf)?,
            k,
        });
    }
    prog.push(Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: DROP,
    });
    prog.push(Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: ACCEPT,
    });
    Ok(prog)
}

/// The program in the form `SO_ATTACH_FILTER` takes.
pub(super) fn to_sock_filters(prog: &[Insn]) -> Vec<socket2::SockFilter> {
    prog.iter()
        .map(|i| socket2::SockFilter::new(i.code, i.jt, i.jf, i.k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::ndp::{ipv6_multicast_mac, ALL_NODES};
    use crate::frame::{
        solicited_node_multicast_mac, ArpPacket, NeighborAdvertisement, NeighborSolicitation,
    };
    use crate::mac::MacAddr;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Runs `prog` over `frame` the way the kernel does for the opcodes
    /// [`program`] uses: a load past the end of the frame drops it.
    fn run(prog: &[Insn], frame: &[u8]) -> u32 {
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let k = i.k as usize;
            pc += 1;
            match i.code {
                LD_H_ABS => match frame.get(k..k + 2) {
                    Some(b) => a = u32::from(u16::from_be_bytes([b[0], b[1]])),
                    None => return 0,
                },
                LD_B_ABS => match frame.get(k) {
                    Some(b) => a = u32::from(*b),
                    None => return 0,
                },
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                RET_K => return i.k,
                other => panic!("opcode {other:#x} not expected"),
            }
        }
    }

    /// What the kernel's checker (`bpf_check_classic`) insists on: every
    /// jump lands inside the program, and it ends with a return.
    fn assert_valid(prog: &[Insn]) {
        assert!(prog.len() <= 4096);
        assert_eq!(prog.last().map(|i| i.code), Some(RET_K));
        for (pc, i) in prog.iter().enumerate() {
            if i.code == JEQ_K {
                assert!(
                    pc + 1 + usize::from(i.jt.max(i.jf)) < prog.len(),
                    "{pc}: {i:?}"
                );
            }
        }
    }

    /// [`program`] for `ethertypes`, checked as the kernel would.
    fn valid_program(ethertypes: &[EtherType]) -> Vec<Insn> {
        let prog = program(ethertypes).expect("program");
        assert_valid(&prog);
        prog
    }

    const US: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const THEM: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().expect("literal")
    }

    fn ns() -> Vec<u8> {
        let t = v6("fd00::5");
        NeighborSolicitation::dad(t)
            .to_frame(THEM, solicited_node_multicast_mac(t))
            .expect("valid")
            .to_vec()
    }

    fn na() -> Vec<u8> {
        NeighborAdvertisement::unsolicited(v6("fd00::5"), THEM, v6("fd00::5"))
            .to_frame(THEM, ipv6_multicast_mac(ALL_NODES))
            .expect("valid")
            .to_vec()
    }

    fn arp() -> Vec<u8> {
        ArpPacket::probe(US, Ipv4Addr::new(10, 0, 0, 5))
            .to_frame()
            .to_vec()
    }

    /// `ns()` with one byte changed.
    fn ns_with(at: u32, value: u8) -> Vec<u8> {
        let mut f = ns();
        f[at as usize] = value;
        f
    }

    #[test]
    fn ndp_socket_passes_ns_and_na_only() {
        let prog = valid_program(&[EtherType::IPV6]);
        assert_eq!(run(&prog, &ns()), ACCEPT);
        assert_eq!(run(&prog, &na()), ACCEPT);
        // Router Solicitation, echo request, MLDv2 report: other ICMPv6.
        for t in [133, 128, 143] {
            assert_eq!(run(&prog, &ns_with(ICMP6_TYPE, t)), DROP, "type {t}");
        }
        // UDP, and NDP behind a Hop-by-Hop header (next header 0).
        assert_eq!(run(&prog, &ns_with(IP6_NEXT_HEADER, 17)), DROP);
        assert_eq!(run(&prog, &ns_with(IP6_NEXT_HEADER, 0)), DROP);
        assert_eq!(run(&prog, &arp()), DROP);
        // Truncated frames, down to an empty one.
        for len in [0, 13, 14, 20, ICMP6_TYPE as usize] {
            assert_eq!(run(&prog, &ns()[..len]), DROP, "{len} bytes");
        }
    }

    #[test]
    fn arp_socket_passes_arp_only() {
        let prog = valid_program(&[EtherType::ARP]);
        assert_eq!(run(&prog, &arp()), ACCEPT);
        assert_eq!(run(&prog, &ns()), DROP);
        let mut ipv4 = arp();
        ipv4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(run(&prog, &ipv4), DROP);
    }

    #[test]
    fn arp_and_ndp_socket_passes_both() {
        let prog = valid_program(&[EtherType::ARP, EtherType::IPV6, EtherType::ARP]);
        assert_eq!(run(&prog, &arp()), ACCEPT);
        assert_eq!(run(&prog, &ns()), ACCEPT);
        assert_eq!(run(&prog, &na()), ACCEPT);
        assert_eq!(run(&prog, &ns_with(ICMP6_TYPE, 134)), DROP);
        assert_eq!(run(&prog, &ns_with(12, 0x08)), DROP);
    }

    #[test]
    fn nothing_or_too_much_to_receive_is_refused() {
        assert!(matches!(program(&[]), Err(Error::InvalidFilter(_))));
        let many: Vec<EtherType> = (0..=MAX_ETHERTYPES as u16)
            .map(|i| EtherType(0x0900 + i))
            .collect();
        assert!(matches!(program(&many), Err(Error::InvalidFilter(_))));
        let most = valid_program(&many[..MAX_ETHERTYPES]);
        let mut last = ns();
        last[12..14].copy_from_slice(&(0x0900 + MAX_ETHERTYPES as u16 - 1).to_be_bytes());
        assert_eq!(run(&most, &last), ACCEPT);
    }
}
