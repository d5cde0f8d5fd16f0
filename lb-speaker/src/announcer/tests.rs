use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

use flatlan_l2::frame::ndp::{ipv6_multicast_mac, ALL_NODES};
use flatlan_l2::frame::{
    solicited_node_multicast_mac, ArpOp, ArpPacket, NdpMessage, NeighborAdvertisement,
    NeighborSolicitation,
};
use flatlan_l2::mac::MacAddr;

const OURS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x99]);
const MEMBER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

fn link() -> Link {
    Link {
        iface: "eth0".into(),
        mac: OURS,
    }
}

fn ann() -> (Announcer, Arc<Metrics>) {
    let m = Arc::new(Metrics::default());
    (Announcer::new(Timers::default(), m.clone()), m)
}

fn sent(acts: &[Action]) -> Vec<Vec<u8>> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Send { frame, .. } => Some(frame.as_bytes().to_vec()),
            _ => None,
        })
        .collect()
}

/// The first 42 bytes, in hex, of a broadcast GARP from `OURS` for
/// `VIP` with ARP opcode `op` and target hardware address `tha`.
fn garp_hex(op: &str, tha: &str) -> String {
    [
        "ffffffffffff",
        "020000000001",
        "0806", // broadcast, from us, ARP
        "0001",
        "0800",
        "06",
        "04", // Ethernet/IPv4
        op,
        "020000000001",
        "0a000064", // sha, spa = VIP
        tha,
        "0a000064", // tpa = VIP
    ]
    .concat()
}

fn member(m: MacAddr) -> bool {
    m == MEMBER
}

#[test]
fn first_claim_probes_then_announces_both_forms() {
    let (mut a, m) = ann();
    let t0 = Instant::now();
    let acts = a.claim(t0, IpAddr::V4(VIP), link(), None);
    let f = sent(&acts);
    assert_eq!(f.len(), 1);
    let (eth, arp) = ArpPacket::parse_frame(&f[0]).unwrap();
    assert!(arp.is_probe() && eth.dst.is_broadcast() && arp.tpa == VIP);
    assert!(!a.is_owned(IpAddr::V4(VIP)));
    // Second probe half-way, then the claim.
    assert_eq!(sent(&a.due(t0 + Duration::from_millis(50))).len(), 1);
    let acts = a.due(t0 + Duration::from_millis(100));
    assert_eq!(acts[0], Action::Assign(IpAddr::V4(VIP)));
    let f = sent(&acts);
    // Golden bytes of the two GARP forms: a request with tha = 0, and
    // a reply with tha = sha.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&f[0][..42]), garp_hex("0001", "000000000000"));
    assert_eq!(hex(&f[1][..42]), garp_hex("0002", "020000000001"));
    assert_eq!(m.garps_sent.get(), 2);
    // garpCount rounds, the late rounds past 1 s, then refreshes.
    let t1 = t0 + Duration::from_millis(100);
    assert_eq!(sent(&a.due(t1 + Duration::from_millis(100))).len(), 2);
    assert_eq!(sent(&a.due(t1 + Duration::from_millis(200))).len(), 2);
    assert!(sent(&a.due(t1 + Duration::from_millis(300))).is_empty());
    let mut at = Vec::new();
    while let Some(t) = a.next_deadline() {
        if t > t1 + Duration::from_secs(100) {
            break;
        }
        assert_eq!(sent(&a.due(t)).len(), 2);
        at.push(t.duration_since(t1).as_millis());
    }
    assert_eq!(at, [1100, 2200, 4400, 34_400, 64_400, 94_400]);
}

/// A burst longer than the first late rounds skips those, and a
/// re-announcement (link back, partition healed) repeats them all.
#[test]
fn late_rounds_follow_any_burst_and_every_reannouncement() {
    let timers = Timers {
        garp_count: 15,
        ..Timers::default()
    };
    let m = Arc::new(Metrics::default());
    let mut a = Announcer::new(timers, m);
    let t0 = Instant::now();
    a.claim(t0, IpAddr::V4(VIP), link(), Some(t0));
    let mut at = Vec::new();
    let mut run = |a: &mut Announcer, from: Instant, until: Duration| {
        at.clear();
        while let Some(t) = a.next_deadline() {
            if t > from + until {
                break;
            }
            a.due(t);
            at.push(t.duration_since(from).as_millis());
        }
        at.clone()
    };
    let first = run(&mut a, t0, Duration::from_secs(5));
    assert_eq!(first.len(), 14 + 2, "{first:?}");
    assert_eq!(first[13..], [1400, 2200, 4400]);
    let t2 = t0 + Duration::from_secs(100);
    a.reannounce(t2, None);
    let again = run(&mut a, t2, Duration::from_secs(5));
    assert_eq!(again, first);
}

/// A flood of spoofed ARP claims (any pod on the bridge can send
/// them) is counted one by one but logged once per period.
#[test]
fn a_flood_of_foreign_claims_is_counted_and_logged_once() {
    let (mut a, m, t0) = owned();
    let g = ArpPacket::gratuitous_reply(CLIENT, VIP).to_frame();
    for i in 0..1000 {
        a.on_frame(t0 + Duration::from_millis(i), "eth0", &g, &member);
    }
    assert_eq!(m.foreign_answers.get(), 1000);
    assert_eq!(m.log_suppressed.get(), 999);
}

#[test]
fn probe_answer_from_a_foreign_mac_refuses() {
    let (mut a, m) = ann();
    let t0 = Instant::now();
    a.claim(t0, IpAddr::V4(VIP), link(), None);
    // Linux answers a probe: op=2, spa=VIP, to our MAC.
    let reply = ArpPacket::reply(CLIENT, VIP, OURS, Ipv4Addr::UNSPECIFIED).to_frame();
    assert!(a.on_frame(t0, "eth0", &reply, &member).is_empty());
    assert_eq!(a.conflict_mac(IpAddr::V4(VIP)), Some(CLIENT));
    assert!(a.due(t0 + Duration::from_millis(200)).is_empty());
    assert!(!a.is_owned(IpAddr::V4(VIP)));
    assert_eq!(m.conflicts.get(), 1);
    // Retried later.
    assert_eq!(sent(&a.due(t0 + Timers::default().conflict_retry)).len(), 1);
}

/// What refuses a probed VIP is the IPAM probe's evidence, from a
/// non-member on the VIP's interface.
#[test]
fn probe_conflicts_follow_the_ipam_probe_rules() {
    let v4 = IpAddr::V4(VIP);
    let probing = || {
        let (mut a, m) = ann();
        a.claim(Instant::now(), v4, link(), None);
        (a, m)
    };
    let refused = |frame: &[u8], iface: &str| {
        let (mut a, m) = probing();
        a.on_frame(Instant::now(), iface, frame, &member);
        (a.conflict_mac(v4), m.conflicts.get())
    };
    // Another host probing for it at the same moment (RFC 5227 §2.1.1).
    let probe = ArpPacket::probe(CLIENT, VIP).to_frame();
    assert_eq!(refused(&probe, "eth0"), (Some(CLIENT), 1));
    // ... but not on another link, and not another speaker.
    assert_eq!(refused(&probe, "eth1"), (None, 0));
    let member_probe = ArpPacket::probe(MEMBER, VIP).to_frame();
    assert_eq!(refused(&member_probe, "eth0"), (None, 0));
    // Someone asking for the VIP proves nothing.
    let ask = ArpPacket::request(CLIENT, Ipv4Addr::new(10, 0, 0, 2), VIP).to_frame();
    assert_eq!(refused(&ask, "eth0"), (None, 0));

    let vip: Ipv6Addr = "fd00::100".parse().unwrap();
    let refused6 = |frame: &[u8]| {
        let (mut a, _) = ann();
        a.claim(Instant::now(), IpAddr::V6(vip), link(), None);
        a.on_frame(Instant::now(), "eth0", frame, &member);
        a.conflict_mac(IpAddr::V6(vip))
    };
    let group = solicited_node_multicast_mac(vip);
    let na = NeighborAdvertisement::unsolicited(vip, CLIENT, vip)
        .to_frame(CLIENT, ipv6_multicast_mac(ALL_NODES))
        .unwrap();
    assert_eq!(refused6(&na), Some(CLIENT));
    let dad = NeighborSolicitation::dad(vip)
        .to_frame(CLIENT, group)
        .unwrap();
    assert_eq!(refused6(&dad), Some(CLIENT));
    let client: Ipv6Addr = "fd00::2".parse().unwrap();
    let resolve = NeighborSolicitation::resolve(client, CLIENT, vip)
        .to_frame(CLIENT, group)
        .unwrap();
    assert_eq!(refused6(&resolve), None);
}

#[test]
fn takeover_skips_the_probe_and_counts_a_failover() {
    let (mut a, m) = ann();
    let t0 = Instant::now();
    let acts = a.claim(
        t0,
        IpAddr::V4(VIP),
        link(),
        Some(t0 - Duration::from_millis(300)),
    );
    assert_eq!(sent(&acts).len(), 2);
    assert_eq!(m.failovers_total.get(), 1);
    assert_eq!(m.failover_seconds.count(), 1);
}

fn owned() -> (Announcer, Arc<Metrics>, Instant) {
    let (mut a, m) = ann();
    let t0 = Instant::now();
    a.claim(t0, IpAddr::V4(VIP), link(), Some(t0));
    (a, m, t0)
}

#[test]
fn answers_broadcast_and_our_mac_requests_only() {
    let (mut a, m, t0) = owned();
    let asker = Ipv4Addr::new(10, 0, 0, 2);
    let req = ArpPacket::request(CLIENT, asker, VIP);
    let f = sent(&a.on_frame(t0, "eth0", &req.to_frame(), &member));
    assert_eq!(f.len(), 1);
    let (eth, r) = ArpPacket::parse_frame(&f[0]).unwrap();
    assert_eq!(eth.dst, CLIENT, "the reply is unicast");
    assert_eq!(
        (r.op, r.sha, r.spa, r.tha, r.tpa),
        (ArpOp::Reply, OURS, VIP, CLIENT, asker)
    );
    // Unicast to us: answered (a cache refresh).
    let mut buf = [0u8; 64];
    req.write_frame_to(OURS, &mut buf).unwrap();
    assert_eq!(sent(&a.on_frame(t0, "eth0", &buf[..60], &member)).len(), 1);
    // Unicast to someone else: not ours to answer.
    req.write_frame_to(MEMBER, &mut buf).unwrap();
    assert!(a.on_frame(t0, "eth0", &buf[..60], &member).is_empty());
    // Other interface or other IP: silent.
    assert!(a.on_frame(t0, "eth1", &req.to_frame(), &member).is_empty());
    let other = ArpPacket::request(CLIENT, asker, Ipv4Addr::new(10, 0, 0, 7));
    assert!(a
        .on_frame(t0, "eth0", &other.to_frame(), &member)
        .is_empty());
    assert_eq!(m.arp_replies_sent.get(), 2);
    // Released: silent.
    assert_eq!(
        a.release(IpAddr::V4(VIP)),
        vec![Action::Unassign(IpAddr::V4(VIP))]
    );
    assert!(a.on_frame(t0, "eth0", &req.to_frame(), &member).is_empty());
}

#[test]
fn foreign_garp_raises_an_alarm_but_a_member_does_not() {
    let (mut a, m, t0) = owned();
    let g = ArpPacket::gratuitous_reply(MEMBER, VIP).to_frame();
    assert!(a.on_frame(t0, "eth0", &g, &member).is_empty());
    assert_eq!(m.foreign_answers.get(), 0);
    let g = ArpPacket::gratuitous_request(CLIENT, VIP).to_frame();
    let defend = sent(&a.on_frame(t0, "eth0", &g, &member));
    assert_eq!(defend.len(), 2, "one defence round");
    assert_eq!(m.foreign_answers.get(), 1);
    assert_eq!(
        a.vips()[&IpAddr::V4(VIP)].foreign.map(|f| f.0),
        Some(CLIENT)
    );
    // Rate-limited defence.
    assert!(a.on_frame(t0, "eth0", &g, &member).is_empty());
    assert_eq!(m.foreign_answers.get(), 2);
}

/// A foreign claim while the VIP is held for a successor is counted and
/// remembered, but not defended: our GARP would pull the LAN back here
/// just before the release (the successor defends it).
#[test]
fn a_vip_held_for_its_successor_is_not_defended() {
    let (mut a, m, t0) = owned();
    a.set_handing_over(t0, IpAddr::V4(VIP), true);
    let g = ArpPacket::gratuitous_request(CLIENT, VIP).to_frame();
    assert!(sent(&a.on_frame(t0, "eth0", &g, &member)).is_empty());
    assert_eq!(m.foreign_answers.get(), 1);
    assert_eq!(
        a.vips()[&IpAddr::V4(VIP)].foreign.map(|f| f.0),
        Some(CLIENT)
    );
}

#[test]
fn ipv6_unsolicited_na_has_override_and_ns_gets_solicited_na() {
    let (mut a, m) = ann();
    let t0 = Instant::now();
    let vip: Ipv6Addr = "fd00::100".parse().unwrap();
    let acts = a.claim(t0, IpAddr::V6(vip), link(), Some(t0));
    assert!(acts.contains(&Action::JoinSolicitedNode {
        iface: "eth0".into(),
        vip
    }));
    let f = sent(&acts);
    let (eth, msg) = NdpMessage::parse_frame(&f[0]).unwrap();
    let NdpMessage::Advertisement(na) = msg else {
        panic!("not an NA")
    };
    assert!(na.override_flag && !na.solicited);
    assert_eq!(na.dst, ALL_NODES);
    assert_eq!(eth.dst, MacAddr([0x33, 0x33, 0, 0, 0, 1]));
    assert_eq!(na.target_ll, Some(OURS));

    let client: Ipv6Addr = "fd00::2".parse().unwrap();
    let ns = NeighborSolicitation::resolve(client, CLIENT, vip)
        .to_frame(CLIENT, solicited_node_multicast_mac(vip))
        .unwrap();
    let f = sent(&a.on_frame(t0, "eth0", &ns, &member));
    let (eth, msg) = NdpMessage::parse_frame(&f[0]).unwrap();
    let NdpMessage::Advertisement(na) = msg else {
        panic!("not an NA")
    };
    assert!(na.override_flag && na.solicited);
    assert_eq!((eth.dst, na.dst, na.target), (CLIENT, client, vip));
    assert_eq!(m.ns_received.get(), 1);
}

#[test]
fn every_frame_names_its_vip() {
    let v4 = IpAddr::V4(VIP);
    let v6: IpAddr = "fd00::100".parse().unwrap();
    for vip in [v4, v6] {
        let frames: Vec<Action> = probe_frames(vip, &link())
            .into_iter()
            .chain(announce_frames(vip, &link()))
            .collect();
        assert!(!frames.is_empty());
        for a in frames {
            assert_eq!(a.vip(), Some(vip), "{a:?}");
        }
    }
    // An ARP reply for an owned VIP names the VIP, not the asker.
    let (mut a, _, t0) = owned();
    let req = ArpPacket::request(CLIENT, Ipv4Addr::new(10, 0, 0, 2), VIP).to_frame();
    let acts = a.on_frame(t0, "eth0", &req, &member);
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].vip(), Some(v4));
}

#[test]
fn many_probes_ending_together_announce_each_vip_once() {
    let (mut a, m) = ann();
    let t0 = Instant::now();
    for i in 0..1000u32 {
        a.claim(
            t0,
            IpAddr::V4(Ipv4Addr::from(0x0a4e_0000 + i)),
            link(),
            None,
        );
    }
    let acts = a.due(t0 + Duration::from_millis(100));
    assert_eq!(sent(&acts).len(), 2000);
    assert_eq!(m.garps_sent.get(), 2000);
    assert_eq!(a.owned().count(), 1000);
}

/// Regression (issue 14, a rolling update on the real cluster): the old
/// owner, holding the VIP for the new pod that had just announced it, sent
/// its late round 20 ms later, pulled the LAN back, then released the VIP:
/// 2 pings at 20 ms lost. Held for a successor, a VIP is still answered
/// but no round, late round or refresh announces it.
#[test]
fn a_vip_held_for_its_successor_is_answered_but_not_announced() {
    let (mut a, m, t0) = owned();
    let vip = IpAddr::V4(VIP);
    // The burst (3 rounds, 100 ms apart).
    while let Some(t) = a.next_deadline() {
        if t > t0 + Duration::from_millis(500) {
            break;
        }
        a.due(t);
    }
    let announced = m.garps_sent.get();
    assert_eq!(announced, 6, "the burst: 3 rounds of 2 GARPs");
    let t1 = t0 + Duration::from_millis(600);
    a.set_handing_over(t1, vip, true);
    a.set_handing_over(t1, vip, true);
    // The late rounds (1.1, 2.2, 4.4 s) and a refresh (30 s) pass silently.
    let mut due = Vec::new();
    while let Some(t) = a.next_deadline() {
        if t > t0 + Duration::from_secs(40) {
            break;
        }
        assert!(
            sent(&a.due(t)).is_empty(),
            "announced at {:?} while handing over",
            t - t0
        );
        due.push(t.duration_since(t0).as_millis());
    }
    assert_eq!(due[..3], [1100, 2200, 4400], "{due:?}");
    assert!(due.len() >= 4, "no refresh came due: {due:?}");
    assert_eq!(m.garps_sent.get(), announced);
    // Still answered: packets on their way still find it here.
    let req = ArpPacket::request(CLIENT, Ipv4Addr::new(10, 0, 0, 5), VIP);
    let t2 = t0 + Duration::from_secs(41);
    assert_eq!(
        sent(&a.on_frame(t2, "eth0", &req.to_frame(), &member)).len(),
        1
    );
    // Called off: a full burst at once, both GARP forms.
    a.set_handing_over(t2, vip, false);
    assert_eq!(sent(&a.due(t2)).len(), 2);
    assert_eq!(
        a.next_deadline(),
        Some(t2 + Timers::default().garp_interval)
    );
}
