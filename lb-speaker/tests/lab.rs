//! Privileged end-to-end tests: the real `flatlan-speaker` binary in
//! network namespaces (see `common`). They need root and fail without it.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;
use flatlan_l2::frame::{ArpOp, ArpPacket, NdpMessage};
use flatlan_l2::mac::MacAddr;
use netns_testkit::{Netns, ProcHandle};
use nix::sys::signal::Signal;

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
    let arping = arp_responders(&lab.client, VIP4, "3");
    assert_eq!(arping.macs, vec![owner_mac.clone()], "{arping:?}");

    lab.client
        .ok(&["ping", "-6", "-c", "3", "-i", "0.2", "-W", "1", VIP6]);
    assert_eq!(
        neigh_mac(&lab.client, VIP6),
        Some(lab.nodes[owner6].mac("eth0"))
    );

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

/// A 20 ms ping from the client, running for `secs` (its `-w`).
struct BackgroundPing {
    proc: ProcHandle,
    secs: u32,
}

fn ping_bg(lab: &Lab, vip: &str, secs: u32, v6: bool) -> BackgroundPing {
    let mut args = vec!["ping"];
    if v6 {
        args.push("-6");
    }
    let w = secs.to_string();
    args.extend_from_slice(&["-n", "-i", "0.02", "-W", "0.5", "-w", &w, vip]);
    let proc = lab.client.spawn(&args).expect("ping");
    BackgroundPing { proc, secs }
}

/// Waits for the ping to end (its `-w`, and a margin); (transmitted,
/// received seqs).
fn ping_result(mut ping: BackgroundPing) -> (u32, Vec<u32>) {
    let limit = Duration::from_secs(u64::from(ping.secs) + 5);
    ping.proc
        .wait_timeout(limit)
        .expect("ping ends after its deadline");
    ping_seqs(&ping.proc.log())
}

fn failover_after_kill(v6: bool) {
    let vip = if v6 { VIP6 } else { VIP4 };
    let mut lab = Lab::new(3);
    for i in 0..3 {
        lab.start(i, &[VIP4, VIP6], "");
    }
    let owner = lab.wait_owner(vip, Duration::from_secs(5));
    // The client must know the VIP first (arp_accept=0 ignores GARP for
    // unknown IPs; LAB-NOTES).
    let mut warm = vec!["ping", "-c", "2", "-i", "0.2", "-W", "1", vip];
    if v6 {
        warm.insert(1, "-6");
    }
    let out = lab.client.exec(&warm).expect("run ping");
    if !out.status.success() {
        let n = lab.client.ok(&["ip", "-6", "neigh"]);
        panic!(
            "warm-up ping failed: {}\nclient neigh: {n}\n{}",
            String::from_utf8_lossy(&out.stdout),
            lab.logs()
        );
    }
    let ping = ping_bg(&lab, vip, 5, v6);
    std::thread::sleep(Duration::from_millis(1000));
    lab.speaker(owner).signal(Signal::SIGKILL);
    // A crashed machine's kernel stops answering too; after a bare SIGKILL
    // the VIP would stay on the old owner's `lo` and keep answering until
    // the GARP moves the client, hiding the failover time.
    let host = if v6 {
        format!("{vip}/128")
    } else {
        format!("{vip}/32")
    };
    lab.nodes[owner].ok(&["ip", "addr", "del", &host, "dev", "lo"]);
    lab.speaker(owner)
        .wait(Duration::from_secs(2))
        .expect("owner died");
    let (sent, seqs) = ping_result(ping);
    let gap = longest_gap(&seqs);
    let outage = Duration::from_millis(20 * u64::from(gap));
    eprintln!(
        "failover ({}): {gap} pings lost in a row = {outage:?}; sent {sent}, received {}",
        if v6 { "v6" } else { "v4" },
        seqs.len()
    );
    assert!(
        seqs.last().is_some_and(|l| *l + 10 >= sent),
        "pings did not resume: {seqs:?}"
    );
    assert!(outage < Duration::from_secs(3), "outage {outage:?}");
    // The new owner is one of the survivors and the client's cache has
    // moved to it.
    let new_owner = lab.wait_owner(vip, Duration::from_secs(2));
    assert_ne!(new_owner, owner);
    assert_eq!(
        neigh_mac(&lab.client, vip),
        Some(lab.nodes[new_owner].mac("eth0"))
    );
    let m = lab.metrics(new_owner);
    assert!(
        flatlan_speaker::metrics::scrape(&m, "flatlan_speaker_failovers_total").unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
}

/// The owner crashes (SIGKILL, and its VIP stops answering): the client
/// pinging every 20 ms resumes against a survivor.
#[test]
fn sigkill_failover_v4() {
    failover_after_kill(false);
}

/// The same for an IPv6 VIP (NA with O=1 moves the client's cache).
#[test]
fn sigkill_failover_v6() {
    failover_after_kill(true);
}

/// Link down on the owner: peers declare it dead and a survivor takes
/// over; the old owner releases (it is no longer eligible).
#[test]
fn link_down_failover() {
    let mut lab = Lab::new(2);
    lab.start(0, &[VIP4], "");
    lab.start(1, &[VIP4], "");
    let owner = lab.wait_owner(VIP4, Duration::from_secs(5));
    lab.client
        .ok(&["ping", "-c", "2", "-i", "0.2", "-W", "1", VIP4]);
    let ping = ping_bg(&lab, VIP4, 4, false);
    std::thread::sleep(Duration::from_millis(800));
    lab.nodes[owner].ok(&["ip", "link", "set", "eth0", "down"]);
    let (sent, seqs) = ping_result(ping);
    let gap = longest_gap(&seqs);
    eprintln!(
        "link-down failover: {gap} pings lost in a row (sent {sent}, received {})",
        seqs.len()
    );
    assert!(
        seqs.last().is_some_and(|l| *l + 10 >= sent),
        "pings did not resume"
    );
    assert!(gap * 20 < 3000);
    let other = 1 - owner;
    assert_eq!(
        lab.speakers[other]
            .as_ref()
            .and_then(|s| s.vip_state(ip(VIP4)))
            .as_deref(),
        Some("announcing")
    );
    // The link comes back: still exactly one owner.
    lab.nodes[owner].ok(&["ip", "link", "set", "eth0", "up"]);
    std::thread::sleep(Duration::from_millis(1500));
    lab.wait_owner(VIP4, Duration::from_secs(3));
}

/// `arp_ignore arp_announce` of eth0 in `ns`.
fn arp_sysctls(ns: &Netns) -> String {
    let get = |k: &str| ns.ok(&["cat", &format!("/proc/sys/net/ipv4/conf/eth0/{k}")]);
    format!(
        "{} {}",
        get("arp_ignore").trim(),
        get("arp_announce").trim()
    )
}

/// SIGTERM on the owner hands over make-before-break. Three trials; the
/// restarted node wins the VIP back (another make-before-break move).
#[test]
fn graceful_handoff_loses_at_most_one_ping() {
    let mut lab = Lab::new(2);
    lab.start(0, &[VIP4], "");
    lab.start(1, &[VIP4], "");
    let mut losses = Vec::new();
    for _trial in 0..3 {
        let owner = lab.wait_owner(VIP4, Duration::from_secs(5));
        lab.client
            .ok(&["ping", "-c", "2", "-i", "0.2", "-W", "1", VIP4]);
        let ping = ping_bg(&lab, VIP4, 3, false);
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(arp_sysctls(&lab.nodes[owner]), "1 2", "set while owning");
        lab.speaker(owner).signal(Signal::SIGTERM);
        let st = lab
            .speaker(owner)
            .wait(Duration::from_secs(3))
            .expect("owner exited");
        assert!(st.success(), "graceful exit status {st:?}");
        // A clean exit puts back what the speaker changed, and leaves no
        // VIP on lo.
        assert_eq!(arp_sysctls(&lab.nodes[owner]), "0 0", "restored on exit");
        assert!(!on_lo(&lab.nodes[owner], VIP4), "VIP left on lo");
        let (sent, seqs) = ping_result(ping);
        let lost = sent.saturating_sub(seqs.len() as u32);
        losses.push(lost);
        let new_owner = lab.wait_owner(VIP4, Duration::from_secs(2));
        assert_ne!(new_owner, owner);
        let log = lab.speakers[owner]
            .as_ref()
            .map(|s| s.log())
            .unwrap_or_default();
        assert!(
            log.contains("handed_over=true"),
            "no make-before-break:\n{log}"
        );
        lab.start(owner, &[VIP4], "");
        std::thread::sleep(Duration::from_millis(800));
    }
    eprintln!("graceful handoff: lost pings per trial {losses:?}");
    assert!(losses.iter().all(|l| *l <= 1), "lost pings {losses:?}");
}

/// Heartbeats with the wrong key, or a correctly signed but stale
/// "leaving" heartbeat for the owner (a replay from an earlier life), move
/// no VIP and are counted.
#[test]
fn forged_and_replayed_heartbeats_move_nothing() {
    use flatlan_speaker::wire::{encode, Heartbeat, VipEntry};
    let mut lab = Lab::new(2);
    lab.start(0, &[VIP4], "");
    lab.start(1, &[VIP4], "");
    let owner = lab.wait_owner(VIP4, Duration::from_secs(5));
    let other = 1 - owner;
    let vip: std::net::IpAddr = VIP4.parse().unwrap();
    // A name that outscores both nodes for the VIP.
    let intruder = (0..1000)
        .map(|i| format!("intruder-{i}"))
        .find(|n| {
            (0..2).all(|j| {
                flatlan_speaker::ownership::score(n, vip)
                    > flatlan_speaker::ownership::score(&Lab::node_name(j), vip)
            })
        })
        .expect("a winning name");
    let forged = encode(
        &Heartbeat {
            node: intruder,
            nonce: u64::MAX / 2,
            seq: 1,
            challenge: 1,
            echoes: vec![],
            leaving: false,
            macs: vec![],
            vips: vec![VipEntry {
                addr: vip,
                owned: true,
                refused: None,
            }],
        },
        b"not-the-lab-secret-at-all",
    )
    .unwrap();
    let replay = encode(
        &Heartbeat {
            node: Lab::node_name(owner),
            nonce: 1,
            seq: 1,
            challenge: 1,
            // Echoes no challenge the other node ever issued: a recording.
            echoes: vec![1, 2, 3],
            leaving: true,
            macs: vec![],
            vips: vec![],
        },
        SECRET.as_bytes(),
    )
    .unwrap();
    let targets: Vec<String> = (0..2).map(|j| format!("{}:7946", node_ip(j))).collect();
    lab.client
        .run(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
            for _ in 0..20 {
                for t in &targets {
                    s.send_to(&forged, t).expect("send");
                    s.send_to(&replay, t).expect("send");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .expect("send from the client's namespace");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lab.wait_owner(VIP4, Duration::from_secs(1)),
        owner,
        "the VIP moved"
    );
    let m = lab.metrics(other);
    let auth =
        flatlan_speaker::metrics::scrape(&m, "flatlan_speaker_heartbeat_auth_failures_total")
            .unwrap_or(0.0);
    let replays = flatlan_speaker::metrics::scrape(&m, "flatlan_speaker_heartbeat_replays_total")
        .unwrap_or(0.0);
    assert!(auth >= 20.0 && replays >= 20.0, "{m}");
    assert!(!lab.speakers[other]
        .as_ref()
        .map(|s| s.log())
        .unwrap_or_default()
        .contains("member is leaving"));
}

/// A LAN device already holding the VIP: the speaker probes, refuses, and
/// says why (log, status, metric).
#[test]
fn refuses_a_vip_another_device_holds() {
    let mut lab = Lab::new(1);
    lab.client
        .ok(&["ip", "addr", "add", &format!("{VIP4}/24"), "dev", "eth0"]);
    let client_mac = lab.client.mac("eth0");
    lab.start(0, &[VIP4], "");
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.speaker(0).vip_state(VIP4).as_deref() != Some("conflict") {
        assert!(
            Instant::now() < deadline,
            "no conflict reported:\n{}",
            lab.speaker(0).log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = lab.nodes[0].ok(&[BIN, "status"]);
    assert!(st.contains("conflict") && st.contains(&client_mac), "{st}");
    let log = lab.speaker(0).log_text();
    assert!(
        log.contains("refusing to announce") && log.contains(&client_mac),
        "{log}"
    );
    let m = lab.metrics(0);
    assert!(
        flatlan_speaker::metrics::scrape(&m, "flatlan_speaker_conflicts_total").unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        flatlan_speaker::metrics::scrape(&m, "flatlan_speaker_garps_sent_total"),
        Some(0.0)
    );
}

/// A lab of one node, which owns [`VIP4`].
fn one_node_owning_vip4() -> Lab {
    let mut lab = Lab::new(1);
    lab.start(0, &[VIP4], "");
    lab.wait_owner(VIP4, Duration::from_secs(5));
    lab
}

/// The owner's eth0 is deleted and recreated (new ifindex, new MAC), as a
/// veth or VLAN re-setup does. The speaker must not keep announcing a VIP
/// on the old device's socket: it claims it again on the new one, with the
/// new MAC and the sysctls set anew.
#[test]
fn recreated_interface_is_claimed_again() {
    let mut lab = one_node_owning_vip4();
    let old_mac = lab.nodes[0].mac("eth0");
    assert_eq!(arp_sysctls(&lab.nodes[0]), "1 2");

    // Recreate the node's end of the link, in the lab's own namespaces.
    let node = lab.nodes[0].name().to_owned();
    lab.switch.ok(&["ip", "link", "del", "p0"]);
    lab.switch.ok(&[
        "ip", "link", "add", "p0", "type", "veth", "peer", "name", "eth0", "netns", &node,
    ]);
    lab.switch
        .ok(&["ip", "link", "set", "p0", "master", "br0", "up"]);
    let ip = format!("{}/24", node_ip(0));
    lab.nodes[0].ok(&["ip", "addr", "add", &ip, "dev", "eth0"]);
    lab.nodes[0].ok(&["ip", "link", "set", "eth0", "up"]);
    let new_mac = lab.nodes[0].mac("eth0");
    assert_ne!(old_mac, new_mac);

    let vip4: std::net::IpAddr = VIP4.parse().unwrap();
    let announced_mac = |lab: &mut Lab| {
        lab.speaker(0).status().and_then(|s| {
            s.vips
                .get(&vip4)
                .filter(|v| v.state == "announcing")
                .and_then(|v| v.mac.clone())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while announced_mac(&mut lab).as_deref() != Some(new_mac.as_str()) {
        assert!(
            Instant::now() < deadline,
            "VIP not announced with the new MAC {new_mac}: {:?}\n{}",
            lab.speaker(0).status(),
            lab.speaker(0).log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        arp_sysctls(&lab.nodes[0]),
        "1 2",
        "sysctls set on the new device"
    );
    // The client, with its old entry gone, resolves the VIP to the new MAC.
    lab.client.ok(&["ip", "neigh", "flush", "dev", "eth0"]);
    lab.client
        .ok(&["ping", "-c", "2", "-i", "0.2", "-W", "1", VIP4]);
    assert_eq!(
        neigh_mac(&lab.client, VIP4).as_deref(),
        Some(new_mac.as_str())
    );
}

/// The owner's link goes down and comes back: the VIP is announced again
/// and the speaker still answers ARP requests on that link. (A packet
/// socket reports ENETDOWN once when its link goes down; a reader that
/// gave up on that error left the speaker deaf on the link for good.)
#[test]
fn answers_arp_after_a_link_flap() {
    let mut lab = one_node_owning_vip4();
    let mac0 = lab.nodes[0].mac("eth0");
    lab.nodes[0].ok(&["ip", "link", "set", "eth0", "down"]);
    std::thread::sleep(Duration::from_millis(500));
    lab.nodes[0].ok(&["ip", "link", "set", "eth0", "up"]);
    lab.wait_owner(VIP4, Duration::from_secs(5));
    // arping asks by broadcast whatever the client's cache says, and the
    // node's kernel does not answer for a VIP on lo (arp_ignore): a reply
    // can only come from the speaker.
    let arping = arp_responders(&lab.client, VIP4, "3");
    assert!(
        arping.macs.contains(&mac0),
        "no ARP reply from the owner after the link flap: {arping:?}\n{}",
        lab.speaker(0).log_text()
    );
}
