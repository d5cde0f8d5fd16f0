//! The `arp_frame` check: shared by `fuzz/fuzz_targets/arp_frame.rs` and the
//! corpus replay in `ipam/tests/fuzz_corpus.rs`, so both run the same code.
//!
//! Input: one whole Ethernet frame, as an `AF_PACKET` socket delivers it.

use flatlan_l2::frame::ether::{self, peek_ethertype};
use flatlan_l2::frame::{arp, ArpPacket, EtherType, EthernetHeader};

/// Parses `data` as an ARP frame; whatever parses must rebuild into a frame
/// that parses back to the same packet, with the same header bytes.
pub fn check(data: &[u8]) {
    let parsed = ArpPacket::parse_frame(data);
    // The header-only parsers agree with the full one.
    let hdr = EthernetHeader::parse(data);
    assert_eq!(
        peek_ethertype(data),
        hdr.as_ref().ok().map(|(h, _)| h.ethertype)
    );
    let Ok((hdr, pkt)) = parsed else {
        return;
    };
    assert_eq!(hdr.ethertype, EtherType::ARP);
    assert_eq!(
        ArpPacket::parse(&data[ether::HEADER_LEN..]).as_ref(),
        Ok(&pkt)
    );
    // Cheap accessors never panic.
    let _ = (pkt.is_probe(), pkt.is_gratuitous(), pkt.eth_dst());

    // Rebuild to the parsed destination: the builder always sends from `sha`.
    let mut buf = [0u8; arp::ARP_FRAME_LEN];
    let n = pkt
        .write_frame_to(hdr.dst, &mut buf)
        .expect("a 60-byte buffer holds an ARP frame");
    assert_eq!(n, arp::ARP_FRAME_LEN);
    let end = ether::HEADER_LEN + arp::ARP_LEN;
    assert_eq!(&buf[..ether::SRC_OFFSET], &data[..ether::SRC_OFFSET]);
    assert_eq!(&buf[ether::SRC_OFFSET..ether::ETHERTYPE_OFFSET], &pkt.sha.0);
    assert_eq!(
        &buf[ether::ETHERTYPE_OFFSET..end],
        &data[ether::ETHERTYPE_OFFSET..end]
    );
    assert!(buf[end..].iter().all(|b| *b == 0), "padding is zero");
    let (hdr2, pkt2) = ArpPacket::parse_frame(&buf).expect("a rebuilt frame parses");
    assert_eq!(pkt2, pkt);
    assert_eq!(hdr2.dst, hdr.dst);
    assert_eq!(hdr2.src, pkt.sha);

    // The stack-built frame of the same packet parses back too.
    let f = pkt.to_frame();
    let (hdr3, pkt3) = ArpPacket::parse_frame(&f).expect("to_frame output parses");
    assert_eq!(pkt3, pkt);
    assert_eq!(hdr3.dst, pkt.eth_dst());
}
