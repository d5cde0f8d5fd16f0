//! The conflict probe against the in-memory socket: every rule of RFC 5227
//! §2.1.1 and RFC 4862 §5.4.3-5.4.4 that the probe implements, without root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use flatlan_ipam::probe::{
    probe_ipv4, probe_ipv6, probe_many, ProbeConfig, ProbeError, ProbeOutcome,
};
use flatlan_l2::evidence::Evidence;
use flatlan_l2::frame::{
    solicited_node_multicast_mac, ArpPacket, NdpMessage, NeighborAdvertisement,
    NeighborSolicitation,
};
use flatlan_l2::mac::MacAddr;
use flatlan_l2::socket::{FakeSocket, GroupEvent};
use GroupEvent::{Join, Leave};

const OURS: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0x63, 0x00, 0x01]);
const OTHER: MacAddr = MacAddr([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]);
const THIRD: MacAddr = MacAddr([0x00, 0x11, 0x22, 0x33, 0x44, 0x66]);

/// Short timers so the suite stays fast; 25 ms when nothing answers.
const CFG: ProbeConfig = ProbeConfig {
    probes: 2,
    interval: Duration::from_millis(5),
    wait: Duration::from_millis(20),
};

const V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 5);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("valid IPv6 literal")
}

fn sock() -> FakeSocket {
    FakeSocket::new(OURS, 7)
}

/// The probe joined exactly the solicited-node `group`, then left it.
#[track_caller]
fn assert_joined_then_left(s: &FakeSocket, group: &str) {
    let group = v6(group);
    assert_eq!(s.group_events(), [Join(group), Leave(group)]);
    assert_eq!(s.joined(), Vec::<Ipv6Addr>::new());
}

fn in_use(o: &ProbeOutcome) -> (MacAddr, Evidence) {
    match o {
        ProbeOutcome::InUse { mac, evidence, .. } => (*mac, *evidence),
        ProbeOutcome::Free => panic!("expected InUse, got Free"),
    }
}

#[test]
fn defaults_are_the_fast_profile() {
    assert_eq!(ProbeConfig::default(), ProbeConfig::FAST);
    assert_eq!(ProbeConfig::FAST.duration(), Duration::from_millis(80));
    assert_eq!(ProbeConfig::THOROUGH.duration(), Duration::from_millis(600));
    assert_eq!(ProbeConfig::RFC5227.duration(), Duration::from_secs(6));
    for cfg in [
        ProbeConfig::FAST,
        ProbeConfig::THOROUGH,
        ProbeConfig::RFC5227,
    ] {
        cfg.validate().expect("built-in profiles are valid");
    }
}

#[test]
fn silence_means_free_after_the_full_schedule() {
    let s = sock();
    let t = Instant::now();
    let out = probe_ipv4(&s, V4, CFG).expect("probe runs");
    let took = t.elapsed();
    assert_eq!(out, ProbeOutcome::Free);
    assert!(took >= CFG.duration(), "returned after {took:?}");
    // Exactly `probes` RFC 5227 probes, byte-identical to the builder's.
    let sent = s.sent();
    assert_eq!(sent.len(), 2);
    for f in &sent {
        assert_eq!(&f[..], &ArpPacket::probe(OURS, V4).to_frame()[..]);
    }
    assert_eq!(
        s.group_events(),
        Vec::<GroupEvent>::new(),
        "an IPv4 probe joins no IPv6 group"
    );
}

#[test]
fn arp_reply_means_in_use_and_stops_early() {
    let s = sock();
    s.add_host(IpAddr::V4(V4), OTHER, Duration::from_millis(1));
    let t = Instant::now();
    let out = probe_ipv4(&s, V4, CFG).expect("probe runs");
    assert_eq!(in_use(&out), (OTHER, Evidence::ArpReply));
    assert!(t.elapsed() < CFG.duration(), "should not wait once decided");
    assert_eq!(s.sent().len(), 1, "no second probe once the answer is in");
}

#[test]
fn answer_to_the_second_probe_counts() {
    let s = sock();
    let mut seen = 0;
    s.respond_with(move |frame| {
        seen += 1;
        let Ok((_, p)) = ArpPacket::parse_frame(frame) else {
            return vec![];
        };
        if seen == 1 {
            return vec![]; // the first probe is "lost"
        }
        let reply = ArpPacket::reply(OTHER, p.tpa, p.sha, p.spa);
        vec![(Duration::ZERO, reply.to_frame().to_vec())]
    });
    let out = probe_ipv4(&s, V4, CFG).expect("probe runs");
    assert_eq!(in_use(&out), (OTHER, Evidence::ArpReply));
    assert_eq!(s.sent().len(), 2);
}

#[test]
fn late_answer_after_the_wait_is_missed() {
    let s = sock();
    s.add_host(IpAddr::V4(V4), OTHER, Duration::from_millis(200));
    assert_eq!(
        probe_ipv4(&s, V4, CFG).expect("probe runs"),
        ProbeOutcome::Free
    );
}

#[test]
fn simultaneous_probe_from_another_host_means_in_use() {
    let s = sock();
    s.inject(
        &ArpPacket::probe(OTHER, V4).to_frame(),
        Duration::from_millis(2),
    );
    let out = probe_ipv4(&s, V4, CFG).expect("probe runs");
    assert_eq!(in_use(&out), (OTHER, Evidence::SimultaneousArpProbe));
}

#[test]
fn announcement_or_request_from_the_address_means_in_use() {
    for p in [
        ArpPacket::announcement(OTHER, V4),
        ArpPacket::gratuitous_reply(OTHER, V4),
        ArpPacket::request(OTHER, V4, Ipv4Addr::new(10, 99, 0, 1)),
    ] {
        let s = sock();
        s.inject(&p.to_frame(), Duration::from_millis(1));
        let out = probe_ipv4(&s, V4, CFG).expect("probe runs");
        assert_eq!(in_use(&out).0, OTHER, "{p:?}");
    }
}

#[test]
fn someone_merely_asking_for_the_address_is_not_evidence() {
    let s = sock();
    let asking = ArpPacket::request(OTHER, Ipv4Addr::new(10, 99, 0, 1), V4);
    s.inject(&asking.to_frame(), Duration::from_millis(1));
    assert_eq!(
        probe_ipv4(&s, V4, CFG).expect("probe runs"),
        ProbeOutcome::Free
    );
}

#[test]
fn our_own_reflected_probes_are_ignored() {
    let s = sock();
    s.respond_with(|frame| vec![(Duration::ZERO, frame.to_vec())]);
    assert_eq!(
        probe_ipv4(&s, V4, CFG).expect("probe runs"),
        ProbeOutcome::Free
    );
    let s = sock();
    s.respond_with(|frame| {
        let mut f = frame.to_vec();
        if let Ok((_, NdpMessage::Solicitation(_))) = NdpMessage::parse_frame(frame) {
            f[6..12].copy_from_slice(&OURS.0);
        }
        vec![(Duration::ZERO, f)]
    });
    let t = v6("fd99::5");
    assert_eq!(
        probe_ipv6(&s, t, CFG).expect("probe runs"),
        ProbeOutcome::Free
    );
}

#[test]
fn noise_is_ignored() {
    let s = sock();
    s.inject(&[], Duration::ZERO);
    s.inject(&[0xff; 7], Duration::ZERO);
    s.inject(&[0u8; 60], Duration::ZERO);
    let mut corrupt = ArpPacket::gratuitous_reply(OTHER, V4).to_frame().to_vec();
    corrupt[15] = 6; // token ring: rejected by the parser
    s.inject(&corrupt, Duration::ZERO);
    let mut ipv4 = vec![0u8; 60];
    ipv4[12] = 0x08;
    s.inject(&ipv4, Duration::ZERO);
    assert_eq!(
        probe_ipv4(&s, V4, CFG).expect("probe runs"),
        ProbeOutcome::Free
    );
}

#[test]
fn ipv6_na_means_in_use_and_dad_ns_is_what_we_send() {
    let s = sock();
    let t = v6("fd99::5");
    s.add_host(IpAddr::V6(t), OTHER, Duration::from_millis(1));
    let out = probe_ipv6(&s, t, CFG).expect("probe runs");
    assert_eq!(in_use(&out), (OTHER, Evidence::NeighborAdvertisement));
    let sent = s.sent();
    assert_eq!(sent.len(), 1);
    let (hdr, msg) = NdpMessage::parse_frame(&sent[0]).expect("our NS parses");
    assert_eq!(hdr.dst, solicited_node_multicast_mac(t));
    assert_eq!(msg, NdpMessage::Solicitation(NeighborSolicitation::dad(t)));
    // fd99::5's solicited-node group was joined for the probe, then left.
    assert_joined_then_left(&s, "ff02::1:ff00:5");
}

#[test]
fn ipv6_na_without_tlla_reports_the_ethernet_source() {
    let s = sock();
    let t = v6("fd99::5");
    let mut na = NeighborAdvertisement::unsolicited(v6("fe80::1"), OTHER, t);
    na.target_ll = None;
    let f = na
        .to_frame(OTHER, na.multicast_eth_dst().expect("mc"))
        .expect("valid");
    s.inject(&f, Duration::from_millis(1));
    let out = probe_ipv6(&s, t, CFG).expect("probe runs");
    assert_eq!(in_use(&out), (OTHER, Evidence::NeighborAdvertisement));
}

#[test]
fn ipv6_simultaneous_dad_means_in_use_but_resolution_does_not() {
    let t = v6("fd99::5");
    let s = sock();
    let dad = NeighborSolicitation::dad(t);
    s.inject(
        &dad.to_frame(OTHER, solicited_node_multicast_mac(t))
            .expect("valid"),
        Duration::from_millis(1),
    );
    let out = probe_ipv6(&s, t, CFG).expect("probe runs");
    assert_eq!(in_use(&out), (OTHER, Evidence::SimultaneousDad));

    let s = sock();
    let res = NeighborSolicitation::resolve(v6("fd99::1"), OTHER, t);
    s.inject(
        &res.to_frame(OTHER, solicited_node_multicast_mac(t))
            .expect("valid"),
        Duration::from_millis(1),
    );
    assert_eq!(
        probe_ipv6(&s, t, CFG).expect("probe runs"),
        ProbeOutcome::Free
    );
}

#[test]
fn probe_many_interleaves_and_costs_one_schedule() {
    let s = sock();
    let used4 = Ipv4Addr::new(10, 99, 0, 6);
    let used6 = v6("fd99::6");
    s.add_host(IpAddr::V4(used4), OTHER, Duration::from_millis(1));
    s.add_host(IpAddr::V6(used6), THIRD, Duration::from_millis(2));
    let candidates = [
        IpAddr::V4(V4),
        IpAddr::V4(used4),
        IpAddr::V6(used6),
        IpAddr::V6(v6("fd99::7")),
        IpAddr::V4(V4), // duplicates get the same verdict
    ];
    let t = Instant::now();
    let out = probe_many(&s, &candidates, CFG).expect("probe runs");
    let took = t.elapsed();
    assert_eq!(out.len(), 5);
    assert!(out[0].is_free());
    assert_eq!(in_use(&out[1]), (OTHER, Evidence::ArpReply));
    assert_eq!(in_use(&out[2]), (THIRD, Evidence::NeighborAdvertisement));
    assert!(out[3].is_free());
    assert!(out[4].is_free());
    assert!(
        took < CFG.duration() * 2,
        "a batch takes one schedule, took {took:?}"
    );
    // Round 1: five probes; round 2: only the three undecided ones.
    assert_eq!(s.sent().len(), 5 + 3);
    // One group per IPv6 candidate, all joined before the first probe and
    // left after the verdict; none for the IPv4 ones.
    let (g6, g7) = (v6("ff02::1:ff00:6"), v6("ff02::1:ff00:7"));
    assert_eq!(s.group_events(), [Join(g6), Join(g7), Leave(g6), Leave(g7)]);
    assert_eq!(s.joined(), Vec::<Ipv6Addr>::new());
}

#[test]
fn probe_many_returns_early_when_everything_is_taken() {
    let s = sock();
    let a = Ipv4Addr::new(10, 99, 0, 6);
    let b = v6("fd99::6");
    s.add_host(IpAddr::V4(a), OTHER, Duration::ZERO);
    s.add_host(IpAddr::V6(b), OTHER, Duration::ZERO);
    let t = Instant::now();
    let out = probe_many(&s, &[IpAddr::V4(a), IpAddr::V6(b)], CFG).expect("probe runs");
    assert!(out.iter().all(|o| !o.is_free()));
    assert!(t.elapsed() < CFG.interval * 2);
    assert!(probe_many(&s, &[], CFG).expect("empty batch").is_empty());
}

#[test]
fn shared_solicited_node_group_is_joined_once() {
    // Same low 24 bits, so the same group: a second join fails with
    // EADDRINUSE on a real socket, and on the fake, which logs it.
    let s = sock();
    let out = probe_many(
        &s,
        &[IpAddr::V6(v6("fd99::1:5")), IpAddr::V6(v6("fd98::1:5"))],
        CFG,
    )
    .expect("probe runs");
    assert!(out.iter().all(ProbeOutcome::is_free));
    assert_joined_then_left(&s, "ff02::1:ff01:5");
}

#[test]
fn bad_inputs_are_errors_not_verdicts() {
    let s = sock();
    for bad in [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(v6("ff02::1")),
    ] {
        assert!(
            matches!(
                probe_many(&s, &[bad], CFG),
                Err(ProbeError::InvalidCandidate { .. })
            ),
            "{bad}"
        );
    }
    let zero = ProbeConfig { probes: 0, ..CFG };
    assert!(matches!(
        probe_ipv4(&s, V4, zero),
        Err(ProbeError::InvalidConfig(_))
    ));
    let no_wait = ProbeConfig {
        wait: Duration::ZERO,
        ..CFG
    };
    assert!(matches!(
        probe_ipv4(&s, V4, no_wait),
        Err(ProbeError::InvalidConfig(_))
    ));
    assert!(s.sent().is_empty(), "nothing is sent for invalid input");
}

#[test]
fn send_failure_is_an_error_and_groups_are_left() {
    let s = sock();
    s.fail_sends();
    let err = probe_ipv6(&s, v6("fd99::5"), CFG).expect_err("interface down");
    assert!(
        matches!(
            err,
            ProbeError::Socket(flatlan_l2::Error::Socket { op: "send", .. })
        ),
        "{err}"
    );
    assert_joined_then_left(&s, "ff02::1:ff00:5");
}

#[test]
fn groups_are_left_when_the_socket_panics() {
    let s = sock();
    // Expect a "socket blew up" panic message in the test output.
    s.respond_with(|_| panic!("socket blew up"));
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        probe_ipv6(&s, v6("fd99::5"), CFG)
    }));
    assert!(unwound.is_err(), "the panic propagates to the caller");
    assert_joined_then_left(&s, "ff02::1:ff00:5");
}

#[test]
fn seen_at_is_wall_clock_now() {
    let s = sock();
    s.add_host(IpAddr::V4(V4), OTHER, Duration::ZERO);
    let before = std::time::SystemTime::now();
    match probe_ipv4(&s, V4, CFG).expect("probe runs") {
        ProbeOutcome::InUse { seen_at, .. } => {
            assert!(seen_at >= before && seen_at <= std::time::SystemTime::now());
        }
        ProbeOutcome::Free => panic!("expected InUse"),
    }
}
