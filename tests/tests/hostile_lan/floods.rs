//! Floods (issue 12, findings 4 and 5): packets from the LAN that each
//! trigger a warning must not turn into a log flood, and idle connections
//! to the metrics endpoint must not delay a failover.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use flatlan_l2::frame::ArpPacket;
use flatlan_l2::mac::MacAddr;
use flatlan_l2::socket::{FrameSocket, PacketSocket};
use netns_testkit::speaker_fleet::SpeakerFleet;
use netns_testkit::Netns;

use super::*;

/// How much a speaker may log during a flood of [`FLOOD`]: a warning per
/// kind per 10 s, and what the membership changes around it log.
const FLOOD_LOG_LIMIT: usize = 16 * 1024;
/// How long each flood lasts.
const FLOOD: Duration = Duration::from_secs(5);
/// About how many packets a second the flood sends.
const FLOOD_PPS: f64 = 5000.0;

/// The UDP payloads to or from port [`PORT`] seen on `dev` in `ns` for
/// `secs` seconds (tcpdump), with their IPv4 source.
fn capture_heartbeats(ns: &Netns, dev: &str, secs: u32) -> Vec<(Ipv4Addr, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("heartbeats.pcap");
    let (secs, pcap_s, filter) = (
        secs.to_string(),
        pcap.display().to_string(),
        format!("udp port {PORT}"),
    );
    ns.exec_timeout(
        &[
            "timeout", &secs, "tcpdump", "-i", dev, "-n", "-U", "-w", &pcap_s, &filter,
        ],
        Duration::from_secs(30),
    )
    .expect("tcpdump");
    let bytes = std::fs::read(&pcap).expect("the capture");
    let frames = pcap_frames(&bytes);
    let out: Vec<_> = frames.iter().filter_map(|f| udp_payload(f)).collect();
    assert!(
        !out.is_empty(),
        "no heartbeats in {} frames, {} bytes captured",
        frames.len(),
        bytes.len()
    );
    out
}

/// The frames of a classic pcap file written on this (little-endian) host.
fn pcap_frames(b: &[u8]) -> Vec<Vec<u8>> {
    let u32_at = |i: usize| {
        b.get(i..i + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    assert_eq!(u32_at(0), Some(0xa1b2_c3d4), "not a little-endian pcap");
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(len) = u32_at(at + 8) {
        let start = at + 16;
        let Some(f) = b.get(start..start + len as usize) else {
            break;
        };
        out.push(f.to_vec());
        at = start + len as usize;
    }
    out
}

/// An Ethernet/IPv4/UDP frame to or from [`PORT`]: its source and payload.
fn udp_payload(f: &[u8]) -> Option<(Ipv4Addr, Vec<u8>)> {
    if f.len() < 14 + 20 + 8 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 17 || ip.len() < ihl + 8 {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let udp = &ip[ihl..];
    let (sport, dport) = (
        u16::from_be_bytes([udp[0], udp[1]]),
        u16::from_be_bytes([udp[2], udp[3]]),
    );
    if sport != PORT && dport != PORT {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    Some((src, udp.get(8..len)?.to_vec()))
}

/// A metric of speaker `i` (its endpoint listens on loopback in its node).
fn metric(lab: &Lab, i: usize, metric: &str) -> f64 {
    let text = lab.nodes[i]
        .ns
        .run(|| flatlan_speaker::http::get(SocketAddr::from(([127, 0, 0, 1], 7472)), "/metrics"))
        .expect("enter the node's namespace")
        .unwrap_or_else(|e| panic!("metrics of {}: {e}", name(i)));
    flatlan_speaker::metrics::scrape(&text, metric)
        .unwrap_or_else(|| panic!("no {metric} in\n{text}"))
}

fn start<'a>(lab: &'a Lab, bin: std::path::PathBuf, vips: &[IpAddr]) -> SpeakerFleet<'a> {
    let mut fleet = SpeakerFleet::new(lab, bin, vips.to_vec()).unwrap();
    fleet.start_all(START).unwrap();
    let running: Vec<String> = (0..fleet.len()).map(name).collect();
    wait_statuses(&mut fleet, "the fleet to settle", |v| {
        settled(v, &running, vips)
    });
    fleet
}

/// Replayed heartbeats (a peer's, and a node's own from before its
/// restart, which claim its name) and spoofed ARP claims for every VIP,
/// sent as fast as the client can for [`FLOOD`]: every event is counted,
/// the logs stay small, one MAC answers for each VIP, and a failover
/// right after still takes at most a second.
#[test]
fn a_packet_flood_is_counted_not_logged_line_by_line() {
    let lab = lab(2);
    let vips = vips_spread(2, 2);
    let mut fleet = start(&lab, speaker_bin(), &vips);
    // Both nodes' heartbeats, as node1 sends and receives them.
    let recorded = capture_heartbeats(&lab.nodes[0].ns, "br0", 2);
    let from = |ip: Ipv4Addr| recorded.iter().filter(move |(s, _)| *s == ip).count();
    assert!(
        from(lab.nodes[0].ip) >= 3 && from(lab.nodes[1].ip) >= 3,
        "heartbeats recorded: {} from node1, {} from node2",
        from(lab.nodes[0].ip),
        from(lab.nodes[1].ip)
    );
    // node1 restarts: its recorded heartbeats are now an earlier life's,
    // which claim node1's name and are stale for node2.
    fleet.crash(0).unwrap();
    fleet.start(0, START).unwrap();
    let running = [name(0), name(1)];
    wait_statuses(&mut fleet, "the fleet to settle after the restart", |v| {
        settled(v, &running, &vips)
    });
    let logged: Vec<usize> = (0..2).map(|i| fleet.log(i).len()).collect();
    let targets: Vec<SocketAddr> = lab
        .nodes
        .iter()
        .map(|n| SocketAddr::from((n.ip, PORT)))
        .collect();
    let payloads: Vec<Vec<u8>> = recorded.into_iter().map(|(_, p)| p).collect();
    let vip4s: Vec<Ipv4Addr> = vips
        .iter()
        .filter_map(|v| match v {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect();
    let liar = MacAddr([0x02, 0xba, 0xd0, 0, 0, 1]);
    let client = lab.client.clone();
    let sent = client
        .run(move || {
            let udp = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
            let raw = PacketSocket::open("eth0").expect("AF_PACKET on the client");
            let claims: Vec<_> = vip4s
                .iter()
                .map(|v| ArpPacket::gratuitous_reply(liar, *v).to_frame())
                .collect();
            let end = Instant::now() + FLOOD;
            let mut sent = (0u64, 0u64);
            // Paced, so the speakers under test (and the other cases of
            // this suite) keep their CPU: a few thousand packets a second
            // wrote megabytes of log before.
            let batch = payloads.len() * targets.len() + claims.len();
            let pause = Duration::from_secs_f64(batch as f64 / FLOOD_PPS);
            while Instant::now() < end {
                std::thread::sleep(pause);
                for p in &payloads {
                    for t in &targets {
                        if udp.send_to(p, t).is_ok() {
                            sent.0 += 1;
                        }
                    }
                }
                for c in &claims {
                    if raw.send(c.as_bytes()).is_ok() {
                        sent.1 += 1;
                    }
                }
            }
            sent
        })
        .expect("flood from the client");
    std::thread::sleep(Duration::from_millis(300));
    for (i, before) in logged.iter().enumerate() {
        let grew = fleet.log(i).len() - before;
        assert!(
            grew <= FLOOD_LOG_LIMIT,
            "{} logged {grew} bytes during a {FLOOD:?} flood ({sent:?} datagrams, claims):\n{}",
            name(i),
            fleet.log_tails(30)
        );
    }
    // The flood arrived, and was counted.
    let stale: f64 = (0..2)
        .map(|i| {
            metric(&lab, i, "flatlan_speaker_heartbeat_replays_total")
                + metric(&lab, i, "flatlan_speaker_heartbeat_own_name_total")
        })
        .sum();
    let claims: f64 = (0..2)
        .map(|i| metric(&lab, i, "flatlan_speaker_foreign_answers_total"))
        .sum();
    assert!(
        stale >= 1000.0,
        "stale heartbeats counted: {stale} of {sent:?}"
    );
    assert!(
        claims >= 500.0 && claims >= sent.1 as f64 / 2.0,
        "foreign claims counted: {claims} of {sent:?}"
    );
    assert!(metric(&lab, 0, "flatlan_speaker_log_suppressed_total") >= 1.0);
    assert_one_responder(&lab, &fleet, &vips, "after the flood");
    let (took, _) = kill_owner_and_time_failover(&lab, &mut fleet, vips[0]);
    eprintln!("failover after the packet flood: {took:?}");
    assert_logs_bounded(&fleet, "after the flood");
}

/// Opens `n` TCP connections to `addr` from inside `ns` without waiting
/// for them to be accepted, and keeps them (idle) until dropped.
fn idle_connections(ns: &Netns, addr: SocketAddr, n: usize) -> Vec<socket2::Socket> {
    ns.run(move || {
        (0..n)
            .filter_map(|_| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .ok()?;
                s.set_nonblocking(true).ok()?;
                // EINPROGRESS: the handshake completes (or waits in the
                // listen backlog) on its own.
                let _ = s.connect(&addr.into());
                Some(s)
            })
            .collect()
    })
    .expect("enter the node's namespace")
}

/// Raises this process's open-file limit: the test holds thousands of
/// client sockets.
fn raise_own_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // Root may raise the hard limit too, on a machine that keeps it low.
    let want = hard.max(16_384);
    setrlimit(Resource::RLIMIT_NOFILE, want, want)
        .or_else(|_| setrlimit(Resource::RLIMIT_NOFILE, hard, hard))
        .unwrap();
}

/// 2,000 idle connections to each node's metrics endpoint, with the
/// speakers started under the common soft limit of 1,024 open files (as
/// systemd starts services): the endpoint holds a bounded number, the
/// failover that follows still takes at most a second, and the VIP is
/// assigned (no "Too many open files").
#[test]
fn idle_connections_to_the_endpoint_do_not_delay_a_failover() {
    raise_own_fd_limit();
    let lab = lab(2);
    let vips = vips_spread(2, 1);
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("flatlan-speaker-1024");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec prlimit --nofile=1024: -- {} \"$@\"\n",
            speaker_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut fleet = start(&lab, wrapper, &vips);
    let endpoint = SocketAddr::from(([127, 0, 0, 1], 7472));
    let held: Vec<Vec<socket2::Socket>> = (0..2)
        .map(|i| idle_connections(&lab.nodes[i].ns, endpoint, 2000))
        .collect();
    assert!(held.iter().all(|h| h.len() == 2000), "clients opened");
    std::thread::sleep(Duration::from_millis(500));
    let (took, killed) = kill_owner_and_time_failover(&lab, &mut fleet, vips[0]);
    eprintln!("failover under 2,000 idle connections: {took:?}");
    let survivor = 1 - killed;
    let pid = fleet.pid(survivor).expect("running");
    let fds = netns_testkit::speaker_fleet::fd_count(pid).unwrap_or(0);
    assert!(
        fds < 200,
        "{} holds {fds} descriptors under the connection flood",
        name(survivor)
    );
    let log = fleet.log(survivor);
    assert!(
        !log.contains("Too many open files") && !log.contains("cannot add the VIP"),
        "{log}"
    );
    let on_lo = netns_testkit::speaker_fleet::addresses(&lab.nodes[survivor].ns, "lo").unwrap();
    assert!(on_lo.contains(&vips[0]), "the VIP is on the survivor's lo");
    assert_one_responder(&lab, &fleet, &vips, "after the failover");
    assert_logs_bounded(&fleet, "after the connection flood");
    drop(held);
}
