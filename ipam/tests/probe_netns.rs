//! Privileged tests: the real `AF_PACKET` probe against real Linux kernels
//! answering ARP and NDP, inside two network namespaces joined by a veth
//! pair. Needs root; fails loudly without it (never a silent pass).
//!
//! ```text
//!   netns A (prober)                     netns B (the "LAN host")
//!   va 02:99:00:00:00:0a  <--veth-->  vb 02:99:00:00:00:0b
//!                                        10.99.0.5/24, fd99::5/64 nodad
//! ```
//!
//! Everything happens inside namespaces this file creates with unique
//! names; the host namespace is never touched, and a Drop guard deletes
//! the namespaces (which destroys the veth pair) even when a test panics.
//! Probes run on fresh threads that `setns` into a namespace, never on the
//! test's own thread.
//!
//! Run with `cargo test -p flatlan-ipam --test probe_netns -- --nocapture`
//! to see the measured timings.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use flatlan_ipam::probe::{probe_ipv4, probe_ipv6, probe_many, ProbeConfig, ProbeOutcome};
use flatlan_l2::evidence::Evidence;
use flatlan_l2::frame::{solicited_node_multicast_mac, ArpPacket, NeighborSolicitation};
use flatlan_l2::mac::MacAddr;
use flatlan_l2::socket::{FrameSocket, PacketSocket};
use nix::sched::{setns, CloneFlags};

const MAC_A: MacAddr = MacAddr([0x02, 0x99, 0, 0, 0, 0x0a]);
const MAC_B: MacAddr = MacAddr([0x02, 0x99, 0, 0, 0, 0x0b]);
const USED4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 5);
const FREE4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 6);

fn used6() -> Ipv6Addr {
    Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 5)
}
fn free6() -> Ipv6Addr {
    Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 6)
}

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "probe_netns tests create network namespaces and raw sockets and must run as root \
         (CAP_SYS_ADMIN + CAP_NET_ADMIN + CAP_NET_RAW); they do not skip themselves. \
         Run them as root, or leave this test target out \
         (`cargo test -p flatlan-ipam --lib --test probe_fake`)."
    );
}

/// Runs `ip args…`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the `ip` command (iproute2) must be installed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_output(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the `ip` command (iproute2) must be installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct Lab {
    a: String,
    b: String,
    created: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        require_root();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("flprobe{}x{n}", std::process::id());
        let mut lab = Lab {
            a: format!("{tag}a"),
            b: format!("{tag}b"),
            created: Vec::new(),
        };
        // Record each namespace before anything else can fail, so Drop
        // removes exactly what exists.
        for ns in [lab.a.clone(), lab.b.clone()] {
            ip(&["netns", "add", &ns]);
            lab.created.push(ns);
        }
        let (a, b) = (lab.a.as_str(), lab.b.as_str());
        // Created inside A with its peer moved straight into B: the veth
        // never exists in the host namespace.
        ip(&[
            "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b,
        ]);
        ip(&["-n", a, "link", "set", "va", "address", &MAC_A.to_string()]);
        ip(&["-n", b, "link", "set", "vb", "address", &MAC_B.to_string()]);
        ip(&["-n", b, "addr", "add", "10.99.0.5/24", "dev", "vb"]);
        ip(&["-n", b, "addr", "add", "fd99::5/64", "dev", "vb", "nodad"]);
        ip(&["-n", a, "link", "set", "va", "up"]);
        ip(&["-n", b, "link", "set", "vb", "up"]);
        lab.wait_for_carrier();
        lab
    }

    fn wait_for_carrier(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            let a = ip_output(&["-n", &self.a, "-br", "link", "show", "va"]);
            let b = ip_output(&["-n", &self.b, "-br", "link", "show", "vb"]);
            if a.contains(" UP ") && b.contains(" UP ") {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("veth pair never came up");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            // Best effort, and never panic in drop (we may be unwinding).
            match Command::new("ip").args(["netns", "del", ns]).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "cleanup: ip netns del {ns}: {}",
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("cleanup: ip netns del {ns}: {e}"),
            }
        }
    }
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`.
/// The thread ends with `f`, so no other code ever runs in that namespace
/// by accident (STYLE rule 4). Panics inside `f` propagate.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let fd = File::open(format!("/run/netns/{ns}")).expect("namespace file exists");
            setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
            f()
        });
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn in_use(o: &ProbeOutcome) -> (MacAddr, Evidence) {
    match o {
        ProbeOutcome::InUse { mac, evidence, .. } => (*mac, *evidence),
        ProbeOutcome::Free => panic!("expected InUse, got Free"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn ipv4_probe_finds_the_kernel_answering_and_not_a_free_address() {
    let lab = Lab::new();
    let cfg = ProbeConfig::FAST;
    let (used, t_used, free, t_free) = in_netns(&lab.a, || {
        let sock = PacketSocket::open("va").expect("open AF_PACKET on va");
        assert_eq!(sock.mac(), MAC_A);
        let t = Instant::now();
        let used = probe_ipv4(&sock, USED4, cfg).expect("probe runs");
        let t_used = t.elapsed();
        let t = Instant::now();
        let free = probe_ipv4(&sock, FREE4, cfg).expect("probe runs");
        (used, t_used, free, t.elapsed())
    });
    eprintln!(
        "ipv4: in-use verdict after {:.2} ms, free verdict after {:.2} ms (schedule {:.0} ms)",
        ms(t_used),
        ms(t_free),
        ms(cfg.duration())
    );
    assert_eq!(in_use(&used), (MAC_B, Evidence::ArpReply));
    assert_eq!(free, ProbeOutcome::Free);
    assert!(
        t_used < cfg.interval,
        "in-use should be decided by the first probe's answer"
    );
    assert!(t_free >= cfg.duration());
    assert!(
        t_free < cfg.duration() + Duration::from_millis(25),
        "{t_free:?}"
    );
}

#[test]
fn ipv6_probe_finds_the_kernel_answering_and_not_a_free_address() {
    let lab = Lab::new();
    let cfg = ProbeConfig::FAST;
    let (used, t_used, free, t_free) = in_netns(&lab.a, || {
        let sock = PacketSocket::open("va").expect("open AF_PACKET on va");
        let t = Instant::now();
        let used = probe_ipv6(&sock, used6(), cfg).expect("probe runs");
        let t_used = t.elapsed();
        let t = Instant::now();
        let free = probe_ipv6(&sock, free6(), cfg).expect("probe runs");
        (used, t_used, free, t.elapsed())
    });
    eprintln!(
        "ipv6: in-use verdict after {:.2} ms, free verdict after {:.2} ms",
        ms(t_used),
        ms(t_free)
    );
    assert_eq!(in_use(&used), (MAC_B, Evidence::NeighborAdvertisement));
    assert_eq!(free, ProbeOutcome::Free);
    assert!(t_free >= cfg.duration());
}

#[test]
fn batch_probe_costs_one_schedule() {
    let lab = Lab::new();
    let cfg = ProbeConfig::FAST;
    let candidates = [
        IpAddr::V4(FREE4),
        IpAddr::V4(USED4),
        IpAddr::V6(free6()),
        IpAddr::V6(used6()),
        IpAddr::V4(Ipv4Addr::new(10, 99, 0, 7)),
        IpAddr::V4(Ipv4Addr::new(10, 99, 0, 8)),
    ];
    let (out, took) = in_netns(&lab.a, || {
        let sock = PacketSocket::open("va").expect("open AF_PACKET on va");
        let t = Instant::now();
        let out = probe_many(&sock, &candidates, cfg).expect("probe runs");
        (out, t.elapsed())
    });
    eprintln!(
        "batch of {}: {:.2} ms (one schedule is {:.0} ms)",
        candidates.len(),
        ms(took),
        ms(cfg.duration())
    );
    assert!(out[0].is_free());
    assert_eq!(in_use(&out[1]), (MAC_B, Evidence::ArpReply));
    assert!(out[2].is_free());
    assert_eq!(in_use(&out[3]), (MAC_B, Evidence::NeighborAdvertisement));
    assert!(out[4].is_free() && out[5].is_free());
    assert!(
        took < cfg.duration() + Duration::from_millis(25),
        "{took:?}"
    );
}

/// Sets the flag when dropped, so a thread polling it stops however the
/// scope that owns the guard is left, by a panic too.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How long B's prober may take to start, and how long it keeps sending
/// before deciding A is stuck. Both are far beyond the few milliseconds
/// they take; they only turn a failure into a message instead of a hang.
const B_START: Duration = Duration::from_secs(10);
const B_WATCHDOG: Duration = Duration::from_secs(30);

/// Another host probing the same address at the same moment (RFC 5227
/// §2.1.1): both must treat it as in use. B's prober runs its own
/// PacketSocket in namespace B.
///
/// No wait here is unbounded: B reports on a channel that it is sending
/// (or, by dropping it, that it died first), and B's loop stops when A is
/// done, when A panics (the guard), or after B_WATCHDOG.
#[test]
fn simultaneous_probes_from_another_host_are_detected() {
    let lab = Lab::new();
    let target4 = Ipv4Addr::new(10, 99, 0, 9);
    let target6 = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 9);
    let stop = &AtomicBool::new(false);
    let (started, started_rx) = mpsc::channel::<()>();
    let netns_b = lab.b.as_str();
    let (v4, v6) = std::thread::scope(|s| {
        // Stops B when this closure ends, with A's verdicts or by a panic
        // anywhere in it; only then does the scope join B.
        let _stop_b = SetOnDrop(stop);
        s.spawn(move || {
            in_netns(netns_b, move || {
                let sock = PacketSocket::open("vb").expect("open AF_PACKET on vb");
                let arp = ArpPacket::probe(MAC_B, target4).to_frame();
                let ns = NeighborSolicitation::dad(target6)
                    .to_frame(MAC_B, solicited_node_multicast_mac(target6))
                    .expect("valid NS");
                // If the test already gave up on us, there is no one to tell.
                let _ = started.send(());
                let t = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    assert!(
                        t.elapsed() < B_WATCHDOG,
                        "prober A did not finish within {B_WATCHDOG:?}; B stops sending"
                    );
                    sock.send(&arp).expect("send ARP probe");
                    sock.send(&ns).expect("send DAD NS");
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        });
        match started_rx.recv_timeout(B_START) {
            Ok(()) => {}
            Err(RecvTimeoutError::Disconnected) => {
                panic!("prober B failed before it started sending (its panic is above)")
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("prober B did not start sending within {B_START:?}")
            }
        }
        in_netns(&lab.a, || {
            let sock = PacketSocket::open("va").expect("open AF_PACKET on va");
            let cfg = ProbeConfig::FAST;
            (
                probe_ipv4(&sock, target4, cfg).expect("probe runs"),
                probe_ipv6(&sock, target6, cfg).expect("probe runs"),
            )
        })
    });
    assert_eq!(in_use(&v4), (MAC_B, Evidence::SimultaneousArpProbe));
    assert_eq!(in_use(&v6), (MAC_B, Evidence::SimultaneousDad));
}

/// The DAD group join really programs the interface's multicast list (so
/// a NIC that filters multicast would pass 33:33:ff:xx:xx:xx up), and the
/// probe leaves it again.
#[test]
fn solicited_node_membership_is_joined_and_left() {
    let lab = Lab::new();
    let target = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0x12, 0x3456);
    let a = lab.a.clone();
    let maddr = move || ip_output(&["-n", &a, "-6", "maddr", "show", "dev", "va"]);
    let (during, after) = in_netns(&lab.a, || {
        let sock = PacketSocket::open("va").expect("open AF_PACKET on va");
        sock.join_solicited_node(target).expect("join");
        let during = maddr();
        sock.leave_solicited_node(target).expect("leave");
        (during, maddr())
    });
    assert!(during.contains("ff02::1:ff12:3456"), "{during}");
    assert!(!after.contains("ff02::1:ff12:3456"), "{after}");
}

#[test]
fn sockets_belong_to_the_namespace_they_were_opened_in() {
    let lab = Lab::new();
    // vb lives in B, so from A it does not exist.
    let err = in_netns(&lab.a, || PacketSocket::open("vb").map(|_| ()));
    assert!(
        matches!(err, Err(flatlan_l2::Error::NoSuchInterface(ref n)) if n == "vb"),
        "{err:?}"
    );
}

/// Repeats the FAST probe to report its latency distribution.
#[test]
fn measure_fast_profile() {
    let lab = Lab::new();
    let cfg = ProbeConfig::FAST;
    let (mut used, mut free) = in_netns(&lab.a, || {
        let sock = PacketSocket::open("va").expect("open AF_PACKET on va");
        let mut used = Vec::new();
        let mut free = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            assert!(!probe_ipv4(&sock, USED4, cfg).expect("probe runs").is_free());
            used.push(t.elapsed());
            let t = Instant::now();
            assert!(probe_ipv4(&sock, FREE4, cfg).expect("probe runs").is_free());
            free.push(t.elapsed());
        }
        (used, free)
    });
    used.sort();
    free.sort();
    eprintln!(
        "FAST ipv4 x20: in-use p50 {:.3} ms max {:.3} ms; free p50 {:.2} ms max {:.2} ms",
        ms(used[10]),
        ms(used[19]),
        ms(free[10]),
        ms(free[19])
    );
    assert!(used[10] < Duration::from_millis(10));
}

/// Reads `sock` until `last` says a frame was the last one wanted, or for
/// at most 5 s; returns everything read.
fn read_until(sock: &PacketSocket, last: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut buf = [0u8; 2048];
    let end = Instant::now() + Duration::from_secs(5);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Some(n) = sock.recv_timeout(&mut buf, left).expect("recv") else {
            break;
        };
        frames.push(buf[..n].to_vec());
        if last(&buf[..n]) {
            break;
        }
    }
    frames
}

/// The kernel filter (SO_ATTACH_FILTER) of the NDP socket: of IPv6, only
/// Neighbor Solicitations and Advertisements reach userspace. B sends, from
/// its own packet socket so the bytes are exactly these, a UDP packet, an
/// ICMPv6 echo request, a Router Solicitation and an NS behind a Hop-by-Hop
/// header, then a plain NS and an ARP probe. A's NDP sockets must see the
/// NS and none of the others, its ARP-only socket the probe and only ARP. The
/// userspace filter lets any IPv6 frame through, so only the BPF program
/// can have dropped them (and whatever else B's kernel sends: MLD reports
/// and Router Solicitations when vb comes up).
#[test]
fn ndp_socket_receives_only_neighbor_solicitations_and_advertisements() {
    use flatlan_l2::frame::ether::HEADER_LEN;
    use flatlan_l2::frame::ndp::{IP6_HEADER_LEN, IP6_NEXT_HEADER_OFFSET, IP6_PLEN_OFFSET};
    use flatlan_l2::frame::{EtherType, NdpMessage};

    let lab = Lab::new();
    let target = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0x77, 1);
    let ns = NeighborSolicitation::dad(target)
        .to_frame(MAC_B, solicited_node_multicast_mac(target))
        .expect("valid NS")
        .to_vec();
    let next_header = HEADER_LEN + IP6_NEXT_HEADER_OFFSET;
    let icmp_type = HEADER_LEN + IP6_HEADER_LEN;
    let edit = |at: usize, value: u8| {
        let mut f = ns.clone();
        f[at] = value;
        f
    };
    // The same NS behind an 8-byte Hop-by-Hop header (next header 58,
    // length 0, PadN of 4): valid IPv6, and filtered on purpose.
    let mut hop_by_hop = ns.clone();
    hop_by_hop[next_header] = 0;
    let plen = HEADER_LEN + IP6_PLEN_OFFSET;
    let len = u16::from_be_bytes([ns[plen], ns[plen + 1]]) + 8;
    hop_by_hop[plen..plen + 2].copy_from_slice(&len.to_be_bytes());
    hop_by_hop.splice(icmp_type..icmp_type, [58, 0, 1, 4, 0, 0, 0, 0]);
    let others = [
        edit(next_header, 17),
        edit(icmp_type, 128),
        edit(icmp_type, 133),
        hop_by_hop,
    ];
    let is_ours = |f: &[u8]| NdpMessage::parse_frame(f).is_ok_and(|(_, m)| m.target() == target);
    let arp_probe = ArpPacket::probe(MAC_B, Ipv4Addr::new(10, 99, 0, 7))
        .to_frame()
        .to_vec();

    let (ready, ready_rx) = mpsc::channel::<()>();
    let (ndp_only, arp_and_ndp, arp_only) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            in_netns(&lab.a, || {
                let ndp = PacketSocket::open_filtered("va", &[EtherType::IPV6]).expect("open");
                let both = PacketSocket::open("va").expect("open");
                let arp = PacketSocket::open_filtered("va", &[EtherType::ARP]).expect("open");
                ready.send(()).expect("the test waits for A");
                let ndp_frames = read_until(&ndp, is_ours);
                let both_frames = read_until(&both, is_ours);
                let arp_frames = read_until(&arp, |f| f == arp_probe.as_slice());
                (ndp_frames, both_frames, arp_frames)
            })
        });
        if ready_rx.recv_timeout(B_START).is_ok() {
            in_netns(&lab.b, || {
                let sock = PacketSocket::open("vb").expect("open AF_PACKET on vb");
                // The ARP probe goes last: A's NDP and combined readers stop
                // at the NS, and the ARP-only one must see the probe alone.
                for f in others.iter().chain([&ns, &arp_probe]) {
                    sock.send(f).expect("send");
                }
            });
        }
        match a.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });

    for frames in [&ndp_only, &arp_and_ndp] {
        assert!(frames.iter().any(|f| is_ours(f)), "our NS never arrived");
        for f in frames {
            assert!(!others.contains(f), "a filtered frame arrived: {f:02x?}");
            assert_eq!(f[12..14], EtherType::IPV6.0.to_be_bytes(), "{f:02x?}");
            assert_eq!(f[next_header], 58, "{f:02x?}");
            assert!(matches!(f[icmp_type], 135 | 136), "{f:02x?}");
        }
    }
    assert!(
        arp_only.contains(&arp_probe),
        "the ARP-only socket never saw B's ARP probe: {arp_only:02x?}"
    );
    for f in &arp_only {
        assert_eq!(f[12..14], EtherType::ARP.0.to_be_bytes(), "{f:02x?}");
    }
}
