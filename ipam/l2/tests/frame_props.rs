//! Property tests for the wire formats: every builder round-trips through
//! its parser, and no input (random, or a valid frame with random damage)
//! makes a parser panic. The mutation strategies matter: uniformly random
//! bytes almost never get past the EtherType check, while a valid frame
//! with a few flipped bytes (and, for NDP, a re-fixed checksum) reaches
//! every validation branch.

use std::net::{Ipv4Addr, Ipv6Addr};

use flatlan_l2::frame::checksum::icmpv6_checksum;
use flatlan_l2::frame::{
    ArpOp, ArpPacket, EthernetHeader, NdpMessage, NeighborAdvertisement, NeighborSolicitation,
};
use flatlan_l2::mac::MacAddr;
use proptest::prelude::*;

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

/// Unicast (never multicast) IPv6 addresses, as NDP targets must be.
fn ipv6_target() -> impl Strategy<Value = Ipv6Addr> {
    ipv6().prop_filter("NDP targets are not multicast", |a| !a.is_multicast())
}

fn arp_packet() -> impl Strategy<Value = ArpPacket> {
    (
        prop_oneof![Just(ArpOp::Request), Just(ArpOp::Reply)],
        mac(),
        ipv4(),
        mac(),
        ipv4(),
    )
        .prop_map(|(op, sha, spa, tha, tpa)| ArpPacket {
            op,
            sha,
            spa,
            tha,
            tpa,
        })
}

/// Every valid NS shape: DAD, multicast resolution, and unicast NUD.
fn neighbor_solicitation() -> impl Strategy<Value = NeighborSolicitation> {
    prop_oneof![
        ipv6_target().prop_map(NeighborSolicitation::dad),
        (ipv6(), mac(), ipv6_target()).prop_filter_map("src must not be ::", |(s, m, t)| {
            (!s.is_unspecified()).then(|| NeighborSolicitation::resolve(s, m, t))
        }),
        (ipv6(), ipv6(), ipv6_target(), proptest::option::of(mac())).prop_filter_map(
            "unicast NUD from a real source",
            |(src, dst, target, source_ll)| {
                (!src.is_unspecified()).then_some(NeighborSolicitation {
                    src,
                    dst,
                    target,
                    source_ll,
                })
            }
        ),
    ]
}

fn neighbor_advertisement() -> impl Strategy<Value = NeighborAdvertisement> {
    (
        ipv6(),
        ipv6(),
        ipv6_target(),
        any::<[bool; 3]>(),
        proptest::option::of(mac()),
    )
        .prop_map(
            |(src, dst, target, [r, s, o], target_ll)| NeighborAdvertisement {
                src,
                dst,
                target,
                router: r,
                // RFC 4861 §7.1.2: S must be clear for a multicast destination.
                solicited: s && !dst.is_multicast(),
                override_flag: o,
                target_ll,
            },
        )
}

/// Byte edits applied to a valid frame: (index, xor mask), index modulo length.
fn damage() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), 1u8..=255), 1..6)
}

fn apply(frame: &mut [u8], edits: &[(usize, u8)]) {
    for &(at, mask) in edits {
        let len = frame.len();
        frame[at % len] ^= mask;
    }
}

/// Recomputes the ICMPv6 checksum of an Ethernet+IPv6 frame if its lengths
/// allow, so damaged NDP frames get past checksum verification.
fn refix_checksum(f: &mut [u8]) {
    if f.len() < 14 + 40 + 4 {
        return;
    }
    let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
    let end = 54 + plen;
    if end > f.len() || plen < 4 {
        return;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).expect("16 bytes"));
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).expect("16 bytes"));
    f[56] = 0;
    f[57] = 0;
    let c = icmpv6_checksum(src, dst, &f[54..end]);
    f[56..58].copy_from_slice(&c.to_be_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arp_round_trip(p in arp_packet()) {
        let f = p.to_frame();
        prop_assert_eq!(f.len(), 60);
        let (hdr, back) = ArpPacket::parse_frame(&f).expect("own frame parses");
        prop_assert_eq!(back, p);
        prop_assert_eq!(hdr.src, p.sha);
        prop_assert_eq!(hdr.dst, p.eth_dst());
    }

    #[test]
    fn ns_round_trip(ns in neighbor_solicitation(), src in mac(), dst in mac()) {
        let f = ns.to_frame(src, dst).expect("valid by construction");
        let (hdr, back) = NdpMessage::parse_frame(&f).expect("own frame parses");
        prop_assert_eq!(back, NdpMessage::Solicitation(ns));
        prop_assert_eq!((hdr.src, hdr.dst), (src, dst));
    }

    #[test]
    fn na_round_trip(na in neighbor_advertisement(), src in mac(), dst in mac()) {
        let f = na.to_frame(src, dst).expect("valid by construction");
        let (_, back) = NdpMessage::parse_frame(&f).expect("own frame parses");
        prop_assert_eq!(back, NdpMessage::Advertisement(na));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = EthernetHeader::parse(&bytes);
        let _ = ArpPacket::parse_frame(&bytes);
        let _ = ArpPacket::parse(&bytes);
        let _ = NdpMessage::parse_frame(&bytes);
        let _ = NdpMessage::parse_ipv6(&bytes);
    }

    #[test]
    fn damaged_arp_never_panics(p in arp_packet(), edits in damage(), cut in 0usize..=60) {
        let mut f = p.to_frame().to_vec();
        apply(&mut f, &edits);
        let _ = ArpPacket::parse_frame(&f);
        let _ = ArpPacket::parse_frame(&f[..cut]);
    }

    #[test]
    fn damaged_ndp_never_panics(
        ns in neighbor_solicitation(),
        na in neighbor_advertisement(),
        edits in damage(),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
        cut in any::<usize>(),
    ) {
        for frame in [
            ns.to_frame(MacAddr::ZERO, MacAddr::BROADCAST).expect("valid"),
            na.to_frame(MacAddr::ZERO, MacAddr::BROADCAST).expect("valid"),
        ] {
            let mut f = frame.to_vec();
            // Random options appended and declared in the payload length.
            f.extend_from_slice(&tail);
            let plen = u16::from_be_bytes([f[18], f[19]]) + u16::try_from(tail.len()).expect("small");
            f[18..20].copy_from_slice(&plen.to_be_bytes());
            apply(&mut f, &edits);
            let _ = NdpMessage::parse_frame(&f);
            refix_checksum(&mut f);
            let _ = NdpMessage::parse_frame(&f);
            let _ = NdpMessage::parse_frame(&f[..cut % (f.len() + 1)]);
        }
    }

    /// Options built from random (type, length, body) triples: the walker
    /// either accepts them or returns an error, and a zero length is always
    /// an error (RFC 4861 §4.6).
    #[test]
    fn random_options_are_validated(
        na in neighbor_advertisement(),
        opts in proptest::collection::vec((any::<u8>(), 0u8..4), 0..5),
    ) {
        let mut f = na.to_frame(MacAddr::ZERO, MacAddr::BROADCAST).expect("valid").to_vec();
        let mut any_zero = false;
        for (kind, units) in &opts {
            any_zero |= *units == 0;
            f.push(*kind);
            f.push(*units);
            f.extend(std::iter::repeat_n(0xab, (usize::from(*units) * 8).max(2) - 2));
        }
        let plen = u16::try_from(f.len() - 54).expect("small");
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        refix_checksum(&mut f);
        let parsed = NdpMessage::parse_frame(&f);
        if any_zero {
            prop_assert!(parsed.is_err());
        }
    }
}
