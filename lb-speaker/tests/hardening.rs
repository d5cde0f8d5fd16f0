//! What the speaker leaves on and takes from its host, and who answers for
//! a VIP (issue 12, findings 6, 7 and 9): the capabilities it keeps, the
//! sysctls it restores even after a crash, a second NIC that must stay
//! silent for the VIP, the claim schedule on the wire, and unicast
//! Neighbour Solicitations. Needs root; each test builds its own lab.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::*;
use flatlan_l2::frame::{solicited_node_multicast_mac, NdpMessage, NeighborSolicitation};
use flatlan_l2::mac::MacAddr;
use flatlan_l2::socket::{FrameSocket, PacketSocket};
use netns_testkit::Netns;
use nix::sys::signal::Signal;

/// `arp_ignore arp_announce` of `dev` in `ns`.
fn arp_sysctls(ns: &Netns, dev: &str) -> String {
    let get = |k: &str| ns.ok(&["cat", &format!("/proc/sys/net/ipv4/conf/{dev}/{k}")]);
    format!(
        "{} {}",
        get("arp_ignore").trim(),
        get("arp_announce").trim()
    )
}

/// A capability set line (`CapEff:` ...) of /proc/PID/status.
fn cap_set(pid: u32, which: &str) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status of the speaker");
    let hex = st
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{which}:")))
        .unwrap_or_else(|| panic!("no {which} in\n{st}"));
    u64::from_str_radix(hex.trim(), 16).expect("hex")
}

/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13).
const NET_ADMIN_AND_RAW: u64 = (1 << 12) | (1 << 13);

#[test]
fn the_daemon_keeps_only_net_admin_and_net_raw() {
    let mut lab = Lab::new(1);
    lab.start(0, &[VIP4, VIP6], "");
    lab.wait_owner(VIP4, Duration::from_secs(5));
    lab.wait_owner(VIP6, Duration::from_secs(5));
    let pid = lab.speaker(0).pid();
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            cap_set(pid, set),
            NET_ADMIN_AND_RAW,
            "{set} of the speaker: {:#x}",
            cap_set(pid, set)
        );
    }
    assert_eq!(cap_set(pid, "CapInh"), 0);
    assert_eq!(cap_set(pid, "CapAmb"), 0);
    // What it kept is enough: the VIPs are on lo and answered.
    assert!(on_lo(&lab.nodes[0], VIP4) && on_lo(&lab.nodes[0], VIP6));
    let r = arp_responders(&lab.client, VIP4, "2");
    assert_eq!(r.macs, vec![lab.nodes[0].mac("eth0")]);
    lab.speaker(0).signal(Signal::SIGTERM);
    let st = lab.speaker(0).wait(Duration::from_secs(3)).expect("exit");
    assert!(st.success(), "{st:?}\n{}", lab.speaker(0).log_text());
    assert!(!on_lo(&lab.nodes[0], VIP4), "removed on exit");
}

/// A speaker SIGKILLed while the ARP sysctls were set, restarted, then
/// stopped cleanly: the host gets its original values back, on the
/// interface and on `all`, not the ones the killed run had set.
#[test]
fn a_clean_exit_after_a_crash_restores_the_original_sysctls() {
    let mut lab = Lab::new(1);
    let node = lab.nodes[0].clone();
    assert_eq!(arp_sysctls(&node, "eth0"), "0 0");
    assert_eq!(arp_sysctls(&node, "all"), "0 0");
    lab.start(0, &[VIP4], "");
    lab.wait_owner(VIP4, Duration::from_secs(5));
    assert_eq!(arp_sysctls(&node, "eth0"), "1 2", "set while owning");
    lab.speaker(0).signal(Signal::SIGKILL);
    lab.speaker(0).wait(Duration::from_secs(3)).expect("killed");
    lab.start(0, &[VIP4], "");
    // Its predecessor's status file still says "announcing": wait for
    // this run's own claim.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab.speaker(0).log_text().contains("claiming") {
        assert!(Instant::now() < deadline, "{}", lab.speaker(0).log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(arp_sysctls(&node, "eth0"), "1 2", "set again");
    lab.speaker(0).signal(Signal::SIGTERM);
    let st = lab.speaker(0).wait(Duration::from_secs(3)).expect("exit");
    assert!(st.success(), "{st:?}");
    let log = lab.speaker(0).log_text();
    assert_eq!(arp_sysctls(&node, "eth0"), "0 0", "restored:\n{log}");
    assert_eq!(arp_sysctls(&node, "all"), "0 0", "restored:\n{log}");
    assert!(!on_lo(&node, VIP4));
}

/// The NAs for `target` that answer `frame`, sent from the client's eth0,
/// within `wait`: (Ethernet source, solicited flag) of each.
fn ndp_answers(
    client: &Netns,
    frame: Vec<u8>,
    target: Ipv6Addr,
    wait: Duration,
) -> BTreeSet<(String, bool)> {
    client
        .run(move || {
            let sock = PacketSocket::open("eth0").expect("AF_PACKET on the client");
            sock.send(&frame).expect("send the NS");
            let mut out = BTreeSet::new();
            let mut buf = [0u8; 2048];
            let end = Instant::now() + wait;
            while let Some(left) = end.checked_duration_since(Instant::now()) {
                let Some(n) = sock.recv_timeout(&mut buf, left).expect("receive") else {
                    continue;
                };
                if let Ok((eth, NdpMessage::Advertisement(na))) = NdpMessage::parse_frame(&buf[..n])
                {
                    if na.target == target {
                        out.insert((eth.src.to_string(), na.solicited));
                    }
                }
            }
            out
        })
        .expect("enter the client's namespace")
}

fn v6(s: &str) -> Ipv6Addr {
    Ipv6Addr::from_str(s).expect("IPv6 literal")
}

/// The owner has a second NIC on the same LAN, outside the allow list:
/// only the announcing interface answers ARP and NS for the VIPs, and the
/// speaker raises no alarm against its own NIC.
#[test]
fn only_the_announcing_interface_answers_for_a_vip() {
    let mut lab = Lab::new(1);
    let eth1 = lab.add_second_nic(0, "10.77.0.31", "fd77::31");
    let eth0 = lab.nodes[0].mac("eth0");
    lab.start(0, &[VIP4, VIP6], "interfaces: [eth0]\n");
    lab.wait_owner(VIP4, Duration::from_secs(5));
    lab.wait_owner(VIP6, Duration::from_secs(5));
    let r = arp_responders(&lab.client, VIP4, "3");
    assert_eq!(r.macs, vec![eth0.clone()], "eth1 is {eth1}");
    let client_mac = MacAddr::from_str(&lab.client.mac("eth0")).expect("MAC");
    let vip6 = v6(VIP6);
    let ns = NeighborSolicitation::resolve(v6(CLIENT_IP6), client_mac, vip6)
        .to_frame(client_mac, solicited_node_multicast_mac(vip6))
        .expect("NS");
    let answers = ndp_answers(
        &lab.client,
        ns.as_bytes().to_vec(),
        vip6,
        Duration::from_secs(1),
    );
    let macs: BTreeSet<&str> = answers.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(macs, BTreeSet::from([eth0.as_str()]), "eth1 is {eth1}");
    std::thread::sleep(Duration::from_millis(300));
    let log = lab.speaker(0).log_text();
    assert!(!log.contains("foreign device"), "{log}");
    lab.speaker(0).signal(Signal::SIGTERM);
    lab.speaker(0).wait(Duration::from_secs(3)).expect("exit");
    assert_eq!(arp_sysctls(&lab.nodes[0], "all"), "0 0");
}

/// A unicast NS for the IPv6 VIP (a neighbour-cache reachability check,
/// sent to the owner's MAC and to the VIP itself; metallb#2920) is
/// answered with a solicited NA, with and without a source link-layer
/// option.
#[test]
fn a_unicast_neighbour_solicitation_is_answered() {
    let mut lab = Lab::new(1);
    lab.start(0, &[VIP6], "");
    lab.wait_owner(VIP6, Duration::from_secs(5));
    let owner = MacAddr::from_str(&lab.nodes[0].mac("eth0")).expect("MAC");
    let client_mac = MacAddr::from_str(&lab.client.mac("eth0")).expect("MAC");
    let vip6 = v6(VIP6);
    for source_ll in [None, Some(client_mac)] {
        let ns = NeighborSolicitation {
            src: v6(CLIENT_IP6),
            dst: vip6,
            target: vip6,
            source_ll,
        };
        let frame = ns.to_frame(client_mac, owner).expect("NS");
        let answers = ndp_answers(
            &lab.client,
            frame.as_bytes().to_vec(),
            vip6,
            Duration::from_millis(700),
        );
        assert!(
            answers.contains(&(owner.to_string(), true)),
            "no solicited NA for a unicast NS ({source_ll:?}): {answers:?}\n{}",
            lab.speaker(0).log_text()
        );
    }
}

/// Seconds since the first of `times`, rounded to 10 ms, of the first
/// frame of each round: frames within 50 ms of the previous one belong to
/// its round.
fn rounds(times: &[f64]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    let mut last = f64::NEG_INFINITY;
    for t in times {
        if t - last > 0.05 {
            out.push(*t);
        }
        last = *t;
    }
    let first = out.first().copied().unwrap_or(0.0);
    out.iter()
        .map(|t| ((t - first) * 100.0).round() / 100.0)
        .collect()
}

/// The claim burst is followed by rounds past 1 s (1.1, 2.2, 4.4 s), which
/// a host that ignores updates within 1 s of the last one (Linux's
/// locktime) takes; captured with tcpdump on the client's link.
#[test]
fn the_claim_schedule_repeats_past_one_second() {
    let mut lab = Lab::new(1);
    let client = lab.client.clone();
    let filter = format!("arp and host {VIP4}");
    let tcpdump = std::thread::spawn(move || {
        client
            .exec_timeout(
                &[
                    "timeout", "8", "tcpdump", "-i", "eth0", "-n", "-tt", "-l", &filter,
                ],
                Duration::from_secs(20),
            )
            .expect("tcpdump")
    });
    // tcpdump needs a moment before it captures.
    std::thread::sleep(Duration::from_millis(1500));
    lab.start(0, &[VIP4], "");
    let out = tcpdump.join().expect("capture thread");
    let text = String::from_utf8_lossy(&out.stdout);
    // GARPs: a request "who-has VIP tell VIP" and a reply "VIP is-at";
    // the probes ("tell 0.0.0.0") come before.
    let garps: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.contains(&format!("who-has {VIP4} tell {VIP4}"))
                || l.contains(&format!("Reply {VIP4} is-at"))
        })
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let r = rounds(&garps);
    let want = [0.0, 0.1, 0.2, 1.1, 2.2, 4.4];
    assert_eq!(r.len(), want.len(), "rounds at {r:?}; capture:\n{text}");
    for (got, want) in r.iter().zip(want) {
        assert!(
            (got - want).abs() <= 0.15,
            "rounds at {r:?}, want {want:?}; capture:\n{text}"
        );
    }
    assert_eq!(garps.len(), 2 * want.len(), "two GARP forms per round");
}

/// Run as an unprivileged user given only NET_ADMIN and NET_RAW (ambient,
/// as a container or a systemd unit with `AmbientCapabilities=` grants
/// them), the speaker puts the VIP on `lo` through rtnetlink with its own
/// effective set, and sets and restores the sysctls; it passes nothing on
/// (it execs nothing), so its inheritable and ambient sets are empty.
#[test]
fn an_unprivileged_speaker_with_the_two_capabilities_works() {
    use std::os::unix::fs::PermissionsExt as _;
    let lab = Lab::new(1);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let config = dir.path().join("speaker.yaml");
    std::fs::write(
        &config,
        format!(
            "node: {{ name: solo }}\nsecret: \"{SECRET}\"\nvips: [{{ address: \"{VIP4}\" }}]\n\
             statusFile: {0}/status.json\nstateDir: {0}/state\n",
            dir.path().display()
        ),
    )
    .expect("config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let caps = "+net_admin,+net_raw";
    let mut proc = lab.nodes[0]
        .spawn(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            BIN,
            "static",
            "--config",
            config.to_str().expect("utf8"),
        ])
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !on_lo(&lab.nodes[0], VIP4) {
        assert!(Instant::now() < deadline, "VIP not on lo:\n{}", proc.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(arp_sysctls(&lab.nodes[0], "all"), "1 2");
    let r = arp_responders(&lab.client, VIP4, "2");
    assert_eq!(r.macs, vec![lab.nodes[0].mac("eth0")]);
    assert_eq!(cap_set(proc.pid(), "CapEff"), NET_ADMIN_AND_RAW);
    assert_eq!(cap_set(proc.pid(), "CapInh"), 0);
    assert_eq!(cap_set(proc.pid(), "CapAmb"), 0);
    proc.kill(Signal::SIGTERM).expect("SIGTERM");
    let st = proc.wait_timeout(Duration::from_secs(3)).expect("exit");
    assert!(st.success(), "{st:?}\n{}", proc.log());
    assert!(!on_lo(&lab.nodes[0], VIP4), "{}", proc.log());
    assert_eq!(arp_sysctls(&lab.nodes[0], "all"), "0 0");
    assert_eq!(arp_sysctls(&lab.nodes[0], "eth0"), "0 0");
}
