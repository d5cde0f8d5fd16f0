//! Privileged end-to-end tests: the real `flatlan-speaker` binary in
//! network namespaces (see `common`). They need root and fail without it.

mod common;

use std::time::Duration;

use common::*;
use flatlan_ipam::frame::{ArpOp, ArpPacket, NdpMessage};
use flatlan_ipam::mac::MacAddr;

fn mac(s: &str) -> MacAddr {
    s.parse().expect("mac")
}

/// GARP burst in both forms, client cache → owner MAC, one arping
/// responder, IPv6 ping with an O=1 NA.
#[test]
fn announces_v4_and_v6_from_exactly_one_node() {
    let mut lab = Lab::new(2);
    let cap = capture(&lab.client, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(100));
    lab.start(0, &[VIP4, VIP6], "");
    lab.start(1, &[VIP4, VIP6], "");
    let owner = lab.wait_owner(VIP4, Duration::from_secs(5));
    let owner_mac = lab.nodes[owner].mac("eth0");
    let frames = cap.join().expect("capture");

    let vip4: std::net::Ipv4Addr = VIP4.parse().unwrap();
    let garps: Vec<(ArpPacket, MacAddr)> = frames
        .iter()
        .filter_map(|f| ArpPacket::parse_frame(f).ok())
        .filter(|(_, a)| a.is_gratuitous() && a.spa == vip4)
        .map(|(e, a)| (a, e.dst))
        .collect();
    let req: Vec<_> = garps
        .iter()
        .filter(|(a, _)| a.op == ArpOp::Request)
        .collect();
    let rep: Vec<_> = garps.iter().filter(|(a, _)| a.op == ArpOp::Reply).collect();
    assert!(req.len() >= 3, "GARP requests seen: {garps:?}");
    assert!(rep.len() >= 3, "GARP replies seen: {garps:?}");
    for (a, dst) in &garps {
        assert_eq!(a.sha, mac(&owner_mac), "GARP from a non-owner: {a:?}");
        assert_eq!(a.tpa, vip4);
        assert!(dst.is_broadcast());
        match a.op {
            ArpOp::Request => assert_eq!(a.tha, MacAddr::ZERO),
            ArpOp::Reply => assert_eq!(a.tha, a.sha),
        }
    }
    let vip6: std::net::Ipv6Addr = VIP6.parse().unwrap();
    let nas: Vec<_> = frames
        .iter()
        .filter_map(|f| NdpMessage::parse_frame(f).ok())
        .filter_map(|(_, m)| match m {
            NdpMessage::Advertisement(na) if na.target == vip6 => Some(na),
            _ => None,
        })
        .collect();
    let owner6 = lab.wait_owner(VIP6, Duration::from_secs(2));
    assert!(!nas.is_empty(), "no unsolicited NA seen for {VIP6}");
    for na in &nas {
        assert!(na.override_flag, "NA without O=1: {na:?}");
        assert!(!na.solicited);
        assert_eq!(na.target_ll, Some(mac(&lab.nodes[owner6].mac("eth0"))));
    }

    // The client reaches the VIP, and its cache points at the owner.
    lab.client
        .ok(&["ping", "-c", "3", "-i", "0.2", "-W", "1", VIP4]);
    assert_eq!(
        neigh_mac(&lab.client, VIP4).as_deref(),
        Some(owner_mac.as_str())
    );
    let arping = lab
        .client
        .exec(&["arping", "-c", "3", "-w", "3", "-I", "eth0", VIP4]);
    let text = String::from_utf8_lossy(&arping.stdout).to_lowercase();
    let mut responders: Vec<String> = text
        .lines()
        .filter(|l| l.contains("reply from") || l.contains("bytes from"))
        .filter_map(|l| l.split(['[', ']']).nth(1).map(str::to_owned))
        .collect();
    responders.sort();
    responders.dedup();
    assert_eq!(
        responders,
        vec![owner_mac.clone()],
        "arping output:\n{text}"
    );

    lab.client
        .ok(&["ping", "-6", "-c", "3", "-i", "0.2", "-W", "1", VIP6]);
    let n6 = lab
        .client
        .ok(&["ip", "-6", "neigh", "show", VIP6, "dev", "eth0"]);
    assert!(n6.contains(&lab.nodes[owner6].mac("eth0")), "{n6}");

    let m = lab.metrics(owner);
    let garps_sent =
        flatlan_speaker::metrics::scrape(&m, "flatlan_speaker_garps_sent_total").unwrap_or(0.0);
    assert!(garps_sent >= 6.0, "{m}");
    let st = lab.nodes[owner].ok(&[BIN, "status"]);
    assert!(
        st.contains(VIP4) && st.contains("announcing") && st.contains(&owner_mac),
        "{st}"
    );
}
