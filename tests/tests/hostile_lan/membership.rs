//! Attacks on membership (issue 12, findings 1, 2, 3 and 8): clocks that
//! disagree, a heartbeat with the largest sequence number, a recorded
//! heartbeat stream replayed after its sender died, a VIP pushed to every
//! node at once, and what status says about all that.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flatlan_l2::frame::ArpPacket;
use flatlan_l2::socket::{FrameSocket, PacketSocket};
use flatlan_speaker::wire;
use netns_testkit::speaker_fleet::SpeakerFleet;
use netns_testkit::{Lab, Netns, ProcHandle};

use crate::*;

/// `env` that runs the speaker with its wall clock shifted by `skew`
/// (libfaketime, e.g. `-1h`); its monotonic clock stays real. `env` execs,
/// so the PID the fleet signals is the speaker's (the `faketime` wrapper
/// would fork and leave the speaker behind on a SIGKILL).
fn faketime(skew: &str) -> Vec<String> {
    let lib = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is not installed: run scripts/setup-deps");
    vec![
        "env".into(),
        format!("LD_PRELOAD={}", lib.display()),
        format!("FAKETIME={skew}"),
        "DONT_FAKE_MONOTONIC=1".into(),
    ]
}

fn all_names(n: usize) -> Vec<String> {
    (0..n).map(name).collect()
}

/// Waits until the fleet is settled and stays so for [`STABLE`]: a
/// handover holds a VIP on both nodes for one heartbeat interval
/// (make-before-break), which is not a split brain.
fn wait_settled(fleet: &mut SpeakerFleet, running: &[String], vips: &[IpAddr], what: &str) {
    wait_settled_within(fleet, running, vips, what, SETTLE);
}

/// [`wait_settled`], failing after `within`.
fn wait_settled_within(
    fleet: &mut SpeakerFleet,
    running: &[String],
    vips: &[IpAddr],
    what: &str,
    within: Duration,
) {
    let since = std::cell::Cell::new(None::<Instant>);
    wait_statuses_within(fleet, what, within, |v| {
        if !settled(v, running, vips) {
            since.set(None);
            return false;
        }
        let t = since.get().unwrap_or_else(Instant::now);
        since.set(Some(t));
        t.elapsed() >= STABLE
    });
}

/// How long a fleet must stay settled to count as settled.
const STABLE: Duration = Duration::from_millis(600);

/// Watches for `dur` that the fleet stays settled (a split brain or a
/// member wrongly dropped shows within a few dead intervals).
fn hold_settled(
    fleet: &mut SpeakerFleet,
    running: &[String],
    vips: &[IpAddr],
    dur: Duration,
    what: &str,
) {
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let views = fleet.statuses();
        let ok: std::collections::BTreeMap<_, _> = views
            .into_iter()
            .filter_map(|(n, v)| Some((n, v.ok()?)))
            .collect();
        assert!(
            settled(&ok, running, vips),
            "{what}: the fleet came apart: {ok:#?}\n{}",
            fleet.log_tails(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One recorded heartbeat: when it was seen, and its UDP payload.
#[derive(Clone)]
struct Recorded {
    at: Duration,
    payload: Vec<u8>,
}

/// Records `count` heartbeats speaker `from` sends to speaker `at`, as
/// `at`'s node receives them (tcpdump on its `br0`).
fn record(lab: &Lab, at: usize, from: usize, count: usize) -> Vec<Recorded> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hb.pcap");
    let filter = format!(
        "udp and src host {} and dst port {PORT}",
        lab.nodes[from].ip
    );
    let file_s = file.to_string_lossy().into_owned();
    let count_s = count.to_string();
    let argv = [
        "tcpdump",
        "-i",
        "br0",
        "-n",
        "--immediate-mode",
        "-U",
        "-c",
        &count_s,
        "-w",
        &file_s,
        &filter,
    ];
    let mut tcpdump: ProcHandle = lab.nodes[at].ns.spawn(&argv).expect("tcpdump");
    // Ten heartbeats a second; a generous bound for a loaded machine.
    let limit = Duration::from_millis(100) * u32::try_from(count).unwrap() * 5;
    let done = tcpdump.wait_timeout(limit + Duration::from_secs(5));
    assert!(
        done.is_some(),
        "tcpdump did not see {count} heartbeats:\n{}",
        tcpdump.log()
    );
    let bytes = std::fs::read(&file).expect("the capture file");
    let out = udp_payloads(&bytes);
    assert_eq!(out.len(), count, "heartbeats recorded:\n{}", tcpdump.log());
    out
}

/// The UDP payloads of an Ethernet/IPv4 pcap file.
fn udp_payloads(pcap: &[u8]) -> Vec<Recorded> {
    let u32_at = |b: &[u8], at: usize, le: bool| {
        let a: [u8; 4] = b[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let le = pcap[..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let mut at = 24;
    let mut first: Option<Duration> = None;
    let mut out = Vec::new();
    while at + 16 <= pcap.len() {
        let ts = Duration::new(
            u64::from(u32_at(pcap, at, le)),
            u32_at(pcap, at + 4, le) * 1000,
        );
        let len = u32_at(pcap, at + 8, le) as usize;
        let frame = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        at += 16 + len;
        // Ethernet (14), IPv4 (IHL words), UDP (8).
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        let payload = &frame[(14 + ihl + 8).min(frame.len())..];
        let t0 = *first.get_or_insert(ts);
        out.push(Recorded {
            at: ts.saturating_sub(t0),
            payload: payload.to_vec(),
        });
    }
    out
}

/// Sends `bytes` to `to` from a UDP socket in `ns`.
fn send_from(ns: &Netns, to: SocketAddr, bytes: &[u8]) {
    ns.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp");
        s.send_to(bytes, to).expect("send");
    })
    .expect("enter the namespace");
}

/// Replays `rec` to `to` from `ns`, at its recorded pace, over and over
/// until `stop` is set.
fn replay(
    ns: Netns,
    to: SocketAddr,
    rec: Vec<Recorded>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        ns.run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").expect("udp");
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                for r in &rec {
                    if let Some(wait) = (start + r.at).checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    s.send_to(&r.payload, to).expect("send");
                    sent += 1;
                }
            }
            sent
        })
        .expect("enter the namespace")
    })
}

fn heartbeat_addr(lab: &Lab, i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(lab.nodes[i].ip), PORT)
}

/// Finding 1: a node restarted with its wall clock an hour behind (a
/// Raspberry Pi before NTP), then an hour ahead, is a member like any
/// other: one owner per VIP, both see each other.
#[test]
fn clock_skew_in_either_direction_splits_nothing() {
    let lab = lab(2);
    let vips = vips_spread(2, 2);
    let mut fleet = SpeakerFleet::new(&lab, speaker_bin(), vips.clone()).unwrap();
    fleet.start_all(START).unwrap();
    let all = all_names(2);
    wait_settled(&mut fleet, &all, &vips, "two members");
    for skew in ["-1h", "+1h"] {
        fleet.crash(1).unwrap();
        let wrapper = faketime(skew);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        fleet.start_wrapped(1, &wrapper, START).unwrap();
        let what = format!("node2 restarted with its clock {skew}");
        wait_settled(&mut fleet, &all, &vips, &what);
        hold_settled(&mut fleet, &all, &vips, Duration::from_secs(1), &what);
        assert_one_responder(&lab, &fleet, &vips, &what);
    }
    assert_logs_bounded(&fleet, "clock skew");
    // node2 (an hour ahead) owns vips[2]: its peer takes over in time.
    let (_, killed) = kill_owner_and_time_failover(&lab, &mut fleet, vips[2]);
    assert_eq!(killed, 1);
}

/// Finding 2: one heartbeat carrying node2's name and seq = 2^64-1 (and
/// one with the largest boot nonce too), signed with the group key by a
/// LAN host that has it, excludes node2 from nobody's view.
#[test]
fn a_heartbeat_with_the_largest_seq_silences_nobody() {
    let lab = lab(2);
    let vips = vips_spread(2, 1);
    let mut fleet = SpeakerFleet::new(&lab, speaker_bin(), vips.clone()).unwrap();
    fleet.start_all(START).unwrap();
    let all = all_names(2);
    wait_settled(&mut fleet, &all, &vips, "two members");
    // A real heartbeat of node2's as node1 gets it, sent on at once: it
    // even proves its freshness.
    let rec = record(&lab, 0, 1, 2);
    let real = wire::decode(&rec[rec.len() - 1].payload, SECRET).expect("node2's heartbeat");
    assert_eq!(real.node, name(1));
    let mut max_seq = real.clone();
    max_seq.seq = u64::MAX;
    let mut max_both = real;
    max_both.seq = u64::MAX;
    max_both.nonce = u64::MAX;
    for hb in [max_seq, max_both] {
        send_from(
            &lab.client,
            heartbeat_addr(&lab, 0),
            &wire::encode(&hb, SECRET).unwrap(),
        );
        // Far longer than a dead interval (300 ms).
        hold_settled(
            &mut fleet,
            &all,
            &vips,
            Duration::from_secs(2),
            "after a max-seq heartbeat",
        );
    }
    assert_one_responder(&lab, &fleet, &vips, "after max-seq heartbeats");
    assert_logs_bounded(&fleet, "max seq");
    kill_owner_and_time_failover(&lab, &mut fleet, vips[1]);
}

/// Finding 3: node2's heartbeats, recorded on node1, are replayed after
/// node2 died: node1 takes node2's VIPs over in time anyway, and, when
/// node1 restarts and the recording is replayed to it from the start
/// (every sequence number new to the restarted node), node2 is no member
/// of its new life either: node1 owns every VIP as soon as its start
/// allows, not when the recording runs out.
#[test]
fn a_replayed_recording_keeps_no_dead_node_alive() {
    let lab = lab(2);
    let vips = vips_spread(2, 2);
    let mut fleet = SpeakerFleet::new(&lab, speaker_bin(), vips.clone()).unwrap();
    fleet.start_all(START).unwrap();
    let all = all_names(2);
    wait_settled(&mut fleet, &all, &vips, "two members");
    let rec = record(&lab, 0, 1, 40);
    // Replayed later: a second on, every challenge it echoes is old.
    std::thread::sleep(Duration::from_secs(1));
    let stop = Arc::new(AtomicBool::new(false));
    let replayer = replay(
        lab.nodes[1].ns.clone(),
        heartbeat_addr(&lab, 0),
        rec.clone(),
        stop.clone(),
    );
    let (_, killed) = kill_owner_and_time_failover(&lab, &mut fleet, vips[2]);
    assert_eq!(killed, 1);
    let alone = vec![name(0)];
    wait_settled(&mut fleet, &alone, &vips, "node1 alone during the replay");
    hold_settled(
        &mut fleet,
        &alone,
        &vips,
        Duration::from_secs(1),
        "node1 during the replay",
    );
    stop.store(true, Ordering::Relaxed);
    assert!(replayer.join().unwrap() >= 10, "the replay ran");
    // The listener restarts, and the 4 s recording is replayed to it
    // from its start.
    fleet.crash(0).unwrap();
    fleet.start(0, START).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let replayer = replay(
        lab.nodes[1].ns.clone(),
        heartbeat_addr(&lab, 0),
        rec,
        stop.clone(),
    );
    let what = "node1 restarted during the replay";
    wait_settled_within(&mut fleet, &alone, &vips, what, Duration::from_secs(2));
    hold_settled(&mut fleet, &alone, &vips, Duration::from_secs(1), what);
    let macs = assert_one_responder(&lab, &fleet, &vips, "during the replay");
    let node1 = node_macs(&lab)[&name(0)].clone();
    assert!(macs.values().all(|m| *m == node1), "{macs:?}");
    stop.store(true, Ordering::Relaxed);
    let sent = replayer.join().unwrap();
    assert!(sent >= 30, "only {sent} heartbeats replayed");
    assert_logs_bounded(&fleet, "replay");
}

/// The ARP probes and gratuitous ARPs for `vip` the client sees in `dur`:
/// (probing MACs, announcing MACs).
fn probers_and_announcers(
    client: Netns,
    vip: Ipv4Addr,
    dur: Duration,
) -> std::thread::JoinHandle<(BTreeSet<String>, BTreeSet<String>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        client
            .run(move || {
                let sock = PacketSocket::open("eth0").expect("AF_PACKET on the client");
                tx.send(()).unwrap();
                let (mut probes, mut garps) = (BTreeSet::new(), BTreeSet::new());
                let end = Instant::now() + dur;
                let mut buf = [0u8; 2048];
                while let Some(left) = end.checked_duration_since(Instant::now()) {
                    let Some(n) = sock.recv_timeout(&mut buf, left).expect("capture") else {
                        continue;
                    };
                    let Ok((_, arp)) = ArpPacket::parse_frame(&buf[..n]) else {
                        continue;
                    };
                    if arp.spa.is_unspecified() && arp.tpa == vip {
                        probes.insert(arp.sha.to_string());
                    } else if arp.spa == vip && arp.is_gratuitous() {
                        garps.insert(arp.sha.to_string());
                    }
                }
                (probes, garps)
            })
            .expect("enter the client's namespace")
    });
    rx.recv().unwrap();
    h
}

/// Finding 8: a VIP pushed to every node by one SIGHUP each, at once, is
/// probed and claimed by one node only.
#[test]
fn a_vip_added_everywhere_at_once_is_probed_and_claimed_once() {
    let lab = lab(2);
    let vips = vips_spread(2, 1);
    let mut fleet = SpeakerFleet::new(&lab, speaker_bin(), vips.clone()).unwrap();
    fleet.start_all(START).unwrap();
    let all = all_names(2);
    wait_settled(&mut fleet, &all, &vips, "two members");
    let new = Ipv4Addr::new(192, 168, 2, 199);
    let cap = probers_and_announcers(lab.client.clone(), new, Duration::from_secs(2));
    let mut more = vips.clone();
    more.push(IpAddr::V4(new));
    fleet.reload_vips(more.clone()).unwrap();
    let (probes, garps) = cap.join().unwrap();
    assert_eq!(
        probes.len(),
        1,
        "probed by {probes:?}\n{}",
        fleet.log_tails(30)
    );
    assert_eq!(
        garps,
        probes,
        "announced by {garps:?}\n{}",
        fleet.log_tails(30)
    );
    wait_settled(&mut fleet, &all, &more, "the new VIP owned once");
    assert_one_responder(&lab, &fleet, &more, "after the reload");
    assert_logs_bounded(&fleet, "simultaneous reload");
    kill_owner_and_time_failover(&lab, &mut fleet, IpAddr::V4(new));
}

/// Finding 8: a VIP another LAN device holds is refused by its owner, and
/// the other node does not name that owner: it shows the conflict too.
#[test]
fn a_refused_vip_has_no_owner_anywhere_and_shows_the_conflict() {
    let lab = lab(2);
    let vip = IpAddr::V4(Ipv4Addr::new(192, 168, 2, 198));
    lab.device
        .exec_ok(&["ip", "addr", "add", &format!("{vip}/24"), "dev", "eth0"])
        .unwrap();
    let device_mac = lab.device.link_mac("eth0").unwrap().to_ascii_lowercase();
    let mut fleet = SpeakerFleet::new(&lab, speaker_bin(), vec![vip]).unwrap();
    fleet.start_all(START).unwrap();
    let members: Vec<(String, BTreeSet<IpAddr>)> = all_names(2)
        .into_iter()
        .map(|n| (n, BTreeSet::from([vip])))
        .collect();
    let owner = flatlan_speaker::ownership::owners(&members, &[vip])[&vip].clone();
    wait_statuses(&mut fleet, "the conflict shown on both nodes", |views| {
        views.len() == 2
            && views.values().all(|s| {
                let v = &s.vips[&vip];
                let note = v.conflict.as_deref().unwrap_or_default();
                v.owner.is_none()
                    && note.contains(&device_mac)
                    && (s.node == owner || note.contains(&owner))
                    && !v.held()
            })
    });
    let macs = assert_one_responder(&lab, &fleet, &[vip], "a VIP a LAN device holds");
    assert_eq!(macs[&vip], device_mac);
    assert_logs_bounded(&fleet, "conflict");
}

/// Finding 8: a node that handed a VIP over shows it as standby, with no
/// MAC and no last GARP from when it was its own.
#[test]
fn a_standby_row_shows_no_stale_announcement() {
    let lab = lab(2);
    let vips = vips_spread(2, 1);
    // vips[1] is node2's: node1 announces it alone, then hands it over.
    let vip = vips[1];
    let mut fleet = SpeakerFleet::new(&lab, speaker_bin(), vec![vip]).unwrap();
    fleet.start(0, START).unwrap();
    wait_settled(&mut fleet, &[name(0)], &[vip], "node1 alone");
    fleet.start(1, START).unwrap();
    wait_settled(&mut fleet, &all_names(2), &[vip], "node2 took its VIP");
    wait_statuses(&mut fleet, "node1's row to be plain standby", |views| {
        let v = &views[&name(0)].vips[&vip];
        v.state == "standby" && v.owner.as_deref() == Some("node2")
    });
    let row = fleet.status(0).unwrap().vips[&vip].clone();
    assert_eq!((&row.mac, row.last_garp_unix_ms), (&None, None), "{row:?}");
}
