//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and crash
//! regressions (`fuzz/regressions/<target>/`) through the very checks the
//! cargo-fuzz targets run (`fuzz/checks/*.rs`, included below), so a plain
//! `cargo test` on stable exercises every committed input without libFuzzer.
//!
//! The ARP/NDP seed frames are built here from the crate's own builders:
//! `FLATLAN_WRITE_FUZZ_SEEDS=1 cargo test -p flatlan-ipam --test fuzz_corpus`
//! rewrites them; otherwise the committed seeds must match.

use std::net::{Ipv4Addr, Ipv6Addr};

use flatlan_l2::frame::{
    ArpPacket, EtherType, EthernetHeader, NeighborAdvertisement, NeighborSolicitation,
};
use flatlan_l2::mac::MacAddr;

#[path = "../../fuzz/checks/arp_frame.rs"]
mod arp_frame;
#[path = "../../fuzz/checks/ndp_frame.rs"]
mod ndp_frame;
#[path = "../../fuzz/checks/replay.rs"]
mod replay;
#[path = "../../fuzz/checks/store_file.rs"]
mod store_file;

use replay::{fuzz_dir, replay, seeds};

const OURS: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
const PEER: MacAddr = MacAddr([0xb8, 0x27, 0xeb, 0x12, 0x34, 0x56]);

fn arp_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let vip = Ipv4Addr::new(192, 168, 2, 240);
    let peer = Ipv4Addr::new(192, 168, 2, 1);
    let mut out = vec![
        ("probe", ArpPacket::probe(OURS, vip).to_frame().to_vec()),
        (
            "announcement",
            ArpPacket::announcement(OURS, vip).to_frame().to_vec(),
        ),
        (
            "garp-reply",
            ArpPacket::gratuitous_reply(OURS, vip).to_frame().to_vec(),
        ),
        (
            "request",
            ArpPacket::request(PEER, peer, vip).to_frame().to_vec(),
        ),
        (
            "reply",
            ArpPacket::reply(OURS, vip, PEER, peer).to_frame().to_vec(),
        ),
    ];
    // `arping -U`: the request form with tha=ff:ff:ff:ff:ff:ff.
    let mut arping = ArpPacket::announcement(PEER, peer);
    arping.tha = MacAddr::BROADCAST;
    out.push(("arping-u", arping.to_frame().to_vec()));
    // A frame relayed by a bridge that rewrote the Ethernet source, with
    // no padding (as a sender's own socket sees it).
    let mut relayed = ArpPacket::request(PEER, peer, vip).to_frame().to_vec();
    relayed[6..12].copy_from_slice(&OURS.0);
    relayed.truncate(42);
    out.push(("relayed-unpadded", relayed));
    out
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("IPv6 literal")
}

fn ndp_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let target = v6("fd00:2::1:10");
    let me = v6("fe80::5e:10ff:fe00:1");
    let frame = |r: Result<flatlan_l2::frame::Frame, _>| r.expect("valid NDP").to_vec();
    let dad = NeighborSolicitation::dad(target);
    let resolve = NeighborSolicitation::resolve(me, OURS, target);
    let unsolicited = NeighborAdvertisement::unsolicited(target, OURS, target);
    let reply = NeighborAdvertisement::solicited_reply(target, OURS, target, me);
    let mut out = vec![
        (
            "dad-ns",
            frame(dad.to_frame(OURS, dad.multicast_eth_dst().expect("mcast"))),
        ),
        (
            "resolve-ns",
            frame(resolve.to_frame(OURS, resolve.multicast_eth_dst().expect("mcast"))),
        ),
        (
            "unsolicited-na",
            frame(unsolicited.to_frame(OURS, MacAddr([0x33, 0x33, 0, 0, 0, 1]))),
        ),
        ("solicited-na", frame(reply.to_frame(OURS, PEER))),
    ];
    // An NA with an unknown option (type 14, nonce) after the target
    // link-layer option, and Ethernet padding after the payload.
    let mut f = frame(unsolicited.to_frame(OURS, MacAddr([0x33, 0x33, 0, 0, 0, 1])));
    f.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
    let plen = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f.extend_from_slice(&[0; 4]);
    out.push((
        "na-unknown-option",
        ndp_frame::with_fixed_checksum(&f).expect("long enough"),
    ));
    out
}

#[test]
fn arp_frame_corpus() {
    let seeds_ = arp_seeds();
    for (name, f) in &seeds_ {
        let (hdr, _) = ArpPacket::parse_frame(f).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(hdr.ethertype, EtherType::ARP);
    }
    seeds("arp_frame", &seeds_, arp_frame::check);
    assert!(replay("arp_frame", arp_frame::check) >= seeds_.len());
}

#[test]
fn ndp_frame_corpus() {
    let seeds_ = ndp_seeds();
    for (name, f) in &seeds_ {
        flatlan_l2::frame::NdpMessage::parse_frame(f).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (hdr, _) = EthernetHeader::parse(f).expect("header");
        assert_eq!(hdr.ethertype, EtherType::IPV6);
    }
    seeds("ndp_frame", &seeds_, ndp_frame::check);
    assert!(replay("ndp_frame", ndp_frame::check) >= seeds_.len());
}

#[test]
fn store_file_corpus() {
    // The hand-written seeds are valid store files.
    for name in [
        "seed-empty.json",
        "seed-fresh.json",
        "seed-one-alloc.json",
        "seed-full.json",
    ] {
        let bytes = std::fs::read(fuzz_dir().join("corpus/store_file").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        serde_json::from_slice::<flatlan_ipam::State>(&bytes)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(replay("store_file", store_file::check) >= 4);
}
