//! Cross-checks the frame builders against Wireshark's dissectors.
//!
//! It needs `tshark` on PATH, which scripts/setup-deps installs; without
//! it the tests fail rather than skip.
//! It writes every builder's output to a pcap and asserts on tshark's
//! verdicts (gratuitous-ARP detection, checksum status, NDP flags), so an
//! error in our hand-written golden bytes and the builders together would
//! still be caught by an independent implementation.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use flatlan_l2::frame::{ArpPacket, NeighborAdvertisement, NeighborSolicitation};
use flatlan_l2::mac::MacAddr;

const MAC: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
const PEER: MacAddr = MacAddr([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]);

/// A classic libpcap file (LINKTYPE_ETHERNET), one record per frame.
fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        let len = u32::try_from(f.len()).expect("small frame");
        out.extend_from_slice(&u32::try_from(i).expect("few frames").to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::File::create(path)
        .and_then(|mut file| file.write_all(&out))
        .expect("write pcap");
}

fn tshark(path: &std::path::Path, fields: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(path);
    if fields.is_empty() {
        // One summary line per frame.
    } else {
        cmd.args(["-T", "fields", "-E", "separator=|"]);
        for f in fields {
            cmd.args(["-e", f]);
        }
    }
    let out = cmd
        .output()
        .expect("tshark is not installed: run scripts/setup-deps (apt-get install -y tshark)");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn tshark_agrees_with_arp_builders() {
    let vip = Ipv4Addr::new(192, 168, 1, 240);
    let frames: Vec<Vec<u8>> = [
        ArpPacket::probe(MAC, vip),
        ArpPacket::announcement(MAC, vip),
        ArpPacket::gratuitous_reply(MAC, vip),
        ArpPacket::request(MAC, vip, Ipv4Addr::new(192, 168, 1, 10)),
        ArpPacket::reply(MAC, vip, PEER, Ipv4Addr::new(192, 168, 1, 10)),
    ]
    .iter()
    .map(|p| p.to_frame().to_vec())
    .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("arp.pcap");
    write_pcap(&pcap, &frames);
    let summary = tshark(&pcap, &[]);
    for l in &summary {
        eprintln!("{l}");
    }
    let fields = tshark(
        &pcap,
        &[
            "eth.dst",
            "arp.opcode",
            "arp.isgratuitous",
            "arp.isprobe",
            "arp.isannouncement",
            "eth.padding",
        ],
    );
    for l in &fields {
        eprintln!("{l}");
    }
    assert_eq!(summary.len(), 5);
    assert!(
        summary[0].contains("Who has 192.168.1.240? (ARP Probe)"),
        "{}",
        summary[0]
    );
    // Wireshark names the tha=00 request form after RFC 5227 ("ARP
    // Announcement") but still flags it arp.isgratuitous (checked below);
    // only the arping -U variant with tha=ff is titled "Gratuitous ARP".
    assert!(
        summary[1].contains("ARP Announcement for 192.168.1.240"),
        "{}",
        summary[1]
    );
    assert!(
        summary[2].contains("Gratuitous ARP for 192.168.1.240 (Reply)"),
        "{}",
        summary[2]
    );
    assert!(
        summary[3].contains("Who has 192.168.1.10? Tell 192.168.1.240"),
        "{}",
        summary[3]
    );
    assert!(
        summary[4].contains("192.168.1.240 is at 02:00:5e:10:00:01"),
        "{}",
        summary[4]
    );
    let rows: Vec<Vec<&str>> = fields.iter().map(|l| l.split('|').collect()).collect();
    // Wireshark's own RFC 5227 classification of probe and announcement,
    // and its gratuitous-ARP flag for both GARP forms.
    assert_eq!(rows[0][3], "1", "probe: {:?}", rows[0]);
    assert_eq!(rows[1][2..5], ["1", "", "1"], "announcement: {:?}", rows[1]);
    assert_eq!(rows[2][1..3], ["2", "1"], "GARP reply: {:?}", rows[2]);
    assert_eq!(rows[4][0], "00:11:22:33:44:55", "reply is unicast");
    for r in &rows {
        assert_eq!(r[5], "00".repeat(18), "zero padding to 60 bytes: {r:?}");
    }
}

#[test]
fn tshark_agrees_with_ndp_builders() {
    let target: Ipv6Addr = "2001:db8::5".parse().expect("v6");
    let ll: Ipv6Addr = "fe80::ff:fe10:1".parse().expect("v6");
    let peer: Ipv6Addr = "fe80::211:22ff:fe33:4455".parse().expect("v6");
    let dad = NeighborSolicitation::dad(target);
    let res = NeighborSolicitation::resolve(ll, MAC, target);
    let una = NeighborAdvertisement::unsolicited(ll, MAC, target);
    let sna = NeighborAdvertisement::solicited_reply(ll, MAC, target, peer);
    let frames: Vec<Vec<u8>> = vec![
        dad.to_frame(MAC, dad.multicast_eth_dst().expect("mc"))
            .expect("ns")
            .to_vec(),
        res.to_frame(MAC, res.multicast_eth_dst().expect("mc"))
            .expect("ns")
            .to_vec(),
        una.to_frame(MAC, una.multicast_eth_dst().expect("mc"))
            .expect("na")
            .to_vec(),
        sna.to_frame(MAC, PEER).expect("na").to_vec(),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("ndp.pcap");
    write_pcap(&pcap, &frames);
    for l in tshark(&pcap, &[]) {
        eprintln!("{l}");
    }
    let fields = tshark(
        &pcap,
        &[
            "eth.dst",
            "ipv6.src",
            "ipv6.dst",
            "ipv6.hlim",
            "icmpv6.type",
            "icmpv6.checksum.status",
            "icmpv6.nd.na.flag.r",
            "icmpv6.nd.na.flag.s",
            "icmpv6.nd.na.flag.o",
            "icmpv6.nd.ns.target_address",
            "icmpv6.nd.na.target_address",
            "icmpv6.opt.linkaddr",
            "_ws.expert",
        ],
    );
    for l in &fields {
        eprintln!("{l}");
    }
    let rows: Vec<Vec<&str>> = fields.iter().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 4);
    // Checksums verified "Good" (PROTO_CHECKSUM_E_GOOD = 1) by Wireshark.
    for r in &rows {
        assert_eq!(r[3], "255", "hop limit: {r:?}");
        assert_eq!(r[5], "1", "checksum status: {r:?}");
        assert_eq!(r[12], "", "expert info: {r:?}");
    }
    assert_eq!(
        rows[0][..5],
        ["33:33:ff:00:00:05", "::", "ff02::1:ff00:5", "255", "135"]
    );
    assert_eq!(rows[0][11], "", "DAD NS carries no SLLA");
    assert_eq!(rows[1][11], "02:00:5e:10:00:01");
    assert_eq!(
        rows[2][..5],
        [
            "33:33:00:00:00:01",
            "fe80::ff:fe10:1",
            "ff02::1",
            "255",
            "136"
        ]
    );
    assert_eq!(
        rows[2][6..9],
        ["0", "0", "1"],
        "unsolicited NA: R=0 S=0 O=1"
    );
    assert_eq!(rows[3][6..9], ["0", "1", "1"], "solicited NA: R=0 S=1 O=1");
    assert_eq!(rows[3][0], "00:11:22:33:44:55");
}
