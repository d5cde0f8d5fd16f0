//! Golden bytes, round trips and the RFC 4861 §7.1 rejections of the NS/NA
//! builders and parser.

use super::*;
use crate::frame::{read_array, read_u16};

const MAC: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("valid IPv6 literal")
}

#[test]
fn solicited_node_group() {
    let a = v6("2001:db8::abcd:12:3456");
    assert_eq!(solicited_node_multicast(a), v6("ff02::1:ff12:3456"));
    assert!(is_solicited_node_multicast(solicited_node_multicast(a)));
    assert!(!is_solicited_node_multicast(ALL_NODES));
    assert_eq!(
        solicited_node_multicast_mac(a),
        MacAddr([0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
    );
    assert_eq!(
        ipv6_multicast_mac(ALL_NODES),
        MacAddr([0x33, 0x33, 0, 0, 0, 1])
    );
}

const PEER_MAC: MacAddr = MacAddr([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]);

// Checksums below were computed independently (a 10-line Python RFC 1071
// implementation over the RFC 8200 §8.1 pseudo-header) and confirmed
// "Good" by tshark 4.0 (see tests/frames_tshark.rs).

#[test]
fn golden_dad_ns() {
    let ns = NeighborSolicitation::dad(v6("2001:db8::5"));
    let f = ns
        .to_frame(MAC, ns.multicast_eth_dst().expect("multicast"))
        .expect("valid");
    #[rustfmt::skip]
    let want: [u8; 78] = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x05,             // dst: solicited-node MAC
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,             // src
        0x86, 0xdd,                                     // IPv6
        0x60, 0x00, 0x00, 0x00,                         // v6, tc 0, flow 0
        0x00, 0x18, 0x3a, 0xff,                         // plen 24, ICMPv6, hlim 255
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // src ::
        0xff, 0x02, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0x01, 0xff, 0x00, 0x00, 0x05,          // dst ff02::1:ff00:5
        0x87, 0x00, 0x4c, 0xe5,                         // NS, code 0, checksum
        0x00, 0x00, 0x00, 0x00,                         // reserved
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0x05,                      // target 2001:db8::5
                                                        // no SLLA (RFC 4861 §4.3)
    ];
    assert_eq!(&f[..], &want[..]);
}

#[test]
fn golden_resolve_ns() {
    let ns = NeighborSolicitation::resolve(v6("fe80::ff:fe10:1"), MAC, v6("2001:db8::5"));
    let f = ns
        .to_frame(MAC, ns.multicast_eth_dst().expect("multicast"))
        .expect("valid");
    #[rustfmt::skip]
    let want: [u8; 86] = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x05,
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,
        0x86, 0xdd,
        0x60, 0x00, 0x00, 0x00,
        0x00, 0x20, 0x3a, 0xff,                         // plen 32
        0xfe, 0x80, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0xff, 0xfe, 0x10, 0x00, 0x01,          // src fe80::ff:fe10:1
        0xff, 0x02, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0x01, 0xff, 0x00, 0x00, 0x05,
        0x87, 0x00, 0xee, 0x38,
        0x00, 0x00, 0x00, 0x00,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0x05,
        0x01, 0x01, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // SLLA, 1 unit, MAC
    ];
    assert_eq!(&f[..], &want[..]);
}

#[test]
fn golden_unsolicited_na() {
    let na = NeighborAdvertisement::unsolicited(v6("fe80::ff:fe10:1"), MAC, v6("2001:db8::5"));
    let f = na
        .to_frame(MAC, na.multicast_eth_dst().expect("multicast"))
        .expect("valid");
    #[rustfmt::skip]
    let want: [u8; 86] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01,             // all-nodes MAC
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,
        0x86, 0xdd,
        0x60, 0x00, 0x00, 0x00,
        0x00, 0x20, 0x3a, 0xff,
        0xfe, 0x80, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0xff, 0xfe, 0x10, 0x00, 0x01,
        0xff, 0x02, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0x01,                      // dst ff02::1
        0x88, 0x00, 0xcb, 0x3e,                         // NA, code 0, checksum
        0x20, 0x00, 0x00, 0x00,                         // R=0 S=0 O=1
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0x05,
        0x02, 0x01, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // TLLA
    ];
    assert_eq!(&f[..], &want[..]);
}

#[test]
fn golden_solicited_na() {
    let na = NeighborAdvertisement::solicited_reply(
        v6("fe80::ff:fe10:1"),
        MAC,
        v6("2001:db8::5"),
        v6("fe80::211:22ff:fe33:4455"),
    );
    let f = na.to_frame(MAC, PEER_MAC).expect("valid");
    #[rustfmt::skip]
    let want: [u8; 86] = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,
        0x86, 0xdd,
        0x60, 0x00, 0x00, 0x00,
        0x00, 0x20, 0x3a, 0xff,
        0xfe, 0x80, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0xff, 0xfe, 0x10, 0x00, 0x01,
        0xfe, 0x80, 0, 0, 0, 0, 0, 0,
        0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55,
        0x88, 0x00, 0x24, 0x28,
        0x60, 0x00, 0x00, 0x00,                         // R=0 S=1 O=1
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0x05,
        0x02, 0x01, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,
    ];
    assert_eq!(&f[..], &want[..]);
}

#[test]
fn dad_reply_goes_to_all_nodes_without_s() {
    let na = NeighborAdvertisement::solicited_reply(
        v6("fe80::1"),
        MAC,
        v6("2001:db8::5"),
        Ipv6Addr::UNSPECIFIED,
    );
    assert_eq!(na.dst, ALL_NODES);
    assert!(!na.solicited && na.override_flag);
}

#[test]
fn write_frame_matches_to_frame() {
    let na = NeighborAdvertisement::unsolicited(v6("fe80::1"), MAC, v6("2001:db8::5"));
    let mut buf = [0u8; 86];
    assert_eq!(na.write_frame(MAC, PEER_MAC, &mut buf), Ok(86));
    assert_eq!(&buf[..], &na.to_frame(MAC, PEER_MAC).expect("valid")[..]);
    assert!(matches!(
        na.write_frame(MAC, PEER_MAC, &mut [0u8; 85]),
        Err(FrameError::BufferTooSmall { needed: 86, .. })
    ));
    let ns = NeighborSolicitation::dad(v6("2001:db8::5"));
    assert_eq!(ns.write_frame(MAC, PEER_MAC, &mut buf), Ok(78));
}

#[test]
fn builders_refuse_invalid_messages() {
    let mut ns = NeighborSolicitation::dad(v6("2001:db8::5"));
    ns.source_ll = Some(MAC);
    assert!(matches!(
        ns.to_frame(MAC, PEER_MAC),
        Err(FrameError::InvalidNdp(_))
    ));
    let mut ns = NeighborSolicitation::dad(v6("2001:db8::5"));
    ns.dst = ALL_NODES;
    assert!(matches!(
        ns.to_frame(MAC, PEER_MAC),
        Err(FrameError::InvalidNdp(_))
    ));
    let ns = NeighborSolicitation::dad(v6("ff02::1"));
    assert!(matches!(
        ns.to_frame(MAC, PEER_MAC),
        Err(FrameError::InvalidNdp(_))
    ));
    let mut na = NeighborAdvertisement::unsolicited(v6("fe80::1"), MAC, v6("2001:db8::5"));
    na.solicited = true;
    assert!(matches!(
        na.to_frame(MAC, PEER_MAC),
        Err(FrameError::InvalidNdp(_))
    ));
}

/// Recomputes the ICMPv6 checksum of a frame built by hand edits, so a
/// test reaches the validation step it targets.
fn fix_checksum(f: &mut [u8]) {
    let ip = ether::HEADER_LEN;
    let icmp = ip + IP6_HEADER_LEN;
    let src = Ipv6Addr::from(read_array::<16>(f, ip + IP6_SRC_OFFSET).expect("src"));
    let dst = Ipv6Addr::from(read_array::<16>(f, ip + IP6_DST_OFFSET).expect("dst"));
    let plen = usize::from(read_u16(f, ip + IP6_PLEN_OFFSET).expect("plen"));
    let end = (icmp + plen).min(f.len());
    f[icmp + 2] = 0;
    f[icmp + 3] = 0;
    let c = icmpv6_checksum(src, dst, &f[icmp..end]);
    f[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
}

fn unsolicited_na_frame() -> Vec<u8> {
    let na = NeighborAdvertisement::unsolicited(v6("fe80::1"), MAC, v6("2001:db8::5"));
    na.to_frame(MAC, na.multicast_eth_dst().expect("mc"))
        .expect("valid")
        .to_vec()
}

fn parse_edited(edit: impl FnOnce(&mut Vec<u8>), fix: bool) -> Result<NdpMessage, FrameError> {
    let mut f = unsolicited_na_frame();
    edit(&mut f);
    if fix {
        fix_checksum(&mut f);
    }
    NdpMessage::parse_frame(&f).map(|(_, m)| m)
}

// Offsets into the whole frame.
const IP: usize = 14;
const ICMP: usize = IP + IP6_HEADER_LEN;
const OPT: usize = ICMP + NDP_OPTIONS_OFFSET;

#[test]
fn parse_round_trip_both_messages() {
    let f = unsolicited_na_frame();
    let (hdr, msg) = NdpMessage::parse_frame(&f).expect("parses");
    assert_eq!(hdr.src, MAC);
    assert_eq!(
        msg,
        NdpMessage::Advertisement(NeighborAdvertisement::unsolicited(
            v6("fe80::1"),
            MAC,
            v6("2001:db8::5")
        ))
    );
    assert_eq!(msg.target(), v6("2001:db8::5"));
    let ns = NeighborSolicitation::dad(v6("2001:db8::5"));
    let f = ns.to_frame(MAC, PEER_MAC).expect("valid");
    assert_eq!(
        NdpMessage::parse_frame(&f).map(|x| x.1),
        Ok(NdpMessage::Solicitation(ns))
    );
}

#[test]
fn parse_rejects_bad_checksum() {
    match parse_edited(|f| f[ICMP + 3] ^= 0x01, false) {
        Err(FrameError::BadChecksum { expected, found }) => assert_eq!(found, expected ^ 1),
        other => panic!("unexpected {other:?}"),
    }
    // Any payload bit flip is caught too.
    assert!(matches!(
        parse_edited(|f| f[ICMP + NDP_TARGET_OFFSET] ^= 0x80, false),
        Err(FrameError::BadChecksum { .. })
    ));
}

#[test]
fn parse_reports_expected_checksum() {
    let good = unsolicited_na_frame();
    let want = read_u16(&good, ICMP + ICMP_CHECKSUM_OFFSET).expect("cksum");
    match parse_edited(|f| f[ICMP + 2..ICMP + 4].copy_from_slice(&[0, 0]), false) {
        Err(FrameError::BadChecksum { expected, found }) => {
            assert_eq!((expected, found), (want, 0));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn parse_rejects_hop_limit_below_255() {
    assert_eq!(
        parse_edited(|f| f[IP + IP6_HOP_LIMIT_OFFSET] = 254, true),
        Err(FrameError::BadHopLimit(254))
    );
}

#[test]
fn parse_rejects_zero_length_option() {
    assert_eq!(
        parse_edited(|f| f[OPT + 1] = 0, true),
        Err(FrameError::BadOptionLength { offset: 64 })
    );
}

/// An option length of 32 units or more (256+ bytes) is an error, not an
/// overflow: pnet_packet 0.35 computes `len * 8` in `u8` and panics on it
/// in a debug build (docs/ARCHITECTURE.md, "Frames and packet sockets").
#[test]
fn parse_rejects_an_option_of_256_bytes_or_more() {
    for units in [32, 255] {
        assert_eq!(
            parse_edited(|f| f[OPT + 1] = units, true),
            Err(FrameError::BadOptionLength { offset: 64 })
        );
    }
}

#[test]
fn parse_rejects_option_past_end() {
    assert_eq!(
        parse_edited(|f| f[OPT + 1] = 2, true),
        Err(FrameError::BadOptionLength { offset: 64 })
    );
    // A lone option-type byte with no length byte.
    assert_eq!(
        parse_edited(
            |f| {
                f.push(7);
                f[IP + IP6_PLEN_OFFSET + 1] += 1;
            },
            true
        ),
        Err(FrameError::BadOptionLength { offset: 72 })
    );
}

#[test]
fn parse_rejects_long_link_layer_option_and_skips_unknown() {
    assert_eq!(
        parse_edited(
            |f| {
                f[OPT + 1] = 2;
                f.extend_from_slice(&[0; 8]);
                f[IP + IP6_PLEN_OFFSET + 1] += 8;
            },
            true
        ),
        Err(FrameError::BadLinkLayerOption { kind: 2, len: 2 })
    );
    // An unknown option type (here 14, a nonce-like option) is skipped.
    let msg = parse_edited(
        |f| {
            f.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
            f[IP + IP6_PLEN_OFFSET + 1] += 8;
        },
        true,
    )
    .expect("parses");
    assert!(matches!(msg, NdpMessage::Advertisement(na) if na.target_ll == Some(MAC)));
}

#[test]
fn parse_rejects_other_headers_and_types() {
    assert_eq!(
        parse_edited(|f| f[IP] = 0x40, false),
        Err(FrameError::BadIpVersion(4))
    );
    assert_eq!(
        parse_edited(|f| f[IP + IP6_NEXT_HEADER_OFFSET] = 0, false),
        Err(FrameError::NotIcmpv6(0))
    );
    assert_eq!(
        parse_edited(|f| f[ICMP] = 128, true),
        Err(FrameError::NotNdp(128))
    );
    assert_eq!(
        parse_edited(|f| f[ICMP + 1] = 1, true),
        Err(FrameError::BadIcmpCode(1))
    );
    assert!(matches!(
        parse_edited(|f| f[12] = 0x08, false),
        Err(FrameError::WrongEtherType { .. })
    ));
}

#[test]
fn parse_applies_message_rules() {
    // NA with S set to a multicast destination.
    assert!(matches!(
        parse_edited(|f| f[ICMP + NDP_FLAGS_OFFSET] |= NA_FLAG_SOLICITED, true),
        Err(FrameError::InvalidNdp(_))
    ));
    // Multicast target.
    assert!(matches!(
        parse_edited(|f| f[ICMP + NDP_TARGET_OFFSET] = 0xff, true),
        Err(FrameError::InvalidNdp(_))
    ));
    // NS from :: that carries an SLLA: build a resolve NS, blank its source.
    let ns = NeighborSolicitation::resolve(v6("fe80::1"), MAC, v6("2001:db8::5"));
    let mut f = ns.to_frame(MAC, PEER_MAC).expect("valid").to_vec();
    f[IP + IP6_SRC_OFFSET..IP + IP6_DST_OFFSET].fill(0);
    fix_checksum(&mut f);
    assert!(matches!(
        NdpMessage::parse_frame(&f),
        Err(FrameError::InvalidNdp(_))
    ));
}

#[test]
fn parse_rejects_truncation_everywhere() {
    let f = unsolicited_na_frame();
    for len in 0..f.len() {
        assert!(
            NdpMessage::parse_frame(&f[..len]).is_err(),
            "len {len} must not parse"
        );
    }
    // Payload length shorter than the NS/NA minimum.
    let msg = parse_edited(|f| f[IP + IP6_PLEN_OFFSET + 1] = 20, false);
    assert!(matches!(msg, Err(FrameError::Truncated { .. })), "{msg:?}");
    // Padding after the payload is ignored.
    let mut padded = f.clone();
    padded.extend_from_slice(&[0xee; 10]);
    assert!(NdpMessage::parse_frame(&padded).is_ok());
}
