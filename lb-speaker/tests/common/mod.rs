//! The speaker's privileged tests' lab: netns-testkit's [`SpeakerLab`]
//! (a bare L2 segment: a switch namespace with a bridge, N node namespaces
//! and a client namespace, no router, so the multicast test finds its
//! interface without a default route), with panicking shorthands, since
//! in a test a failed step is a failed test. `flatlan-lab speaker-bench`
//! measures on the same lab.
//!
//! The parts are netns-testkit's: unique `fl<pid>l<n>-…` namespace names
//! (parallel tests do not collide, `cleanup_stale` finds leftovers),
//! deleted on drop, also when a test panics; every speaker is signalled by
//! PID only. Nothing touches the host namespace.
#![allow(dead_code)] // each test binary uses a different part

use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use netns_testkit::probe::{arp_neighbors, PingRun};
use netns_testkit::segment::{host_ip, host_ip6};
use netns_testkit::speaker::{SpeakerLab, StaticSpeaker};
use netns_testkit::speaker_fleet::{addresses, arping, ArpingReplies, SpeakerStatus};
use netns_testkit::Netns;
use nix::sys::signal::Signal;

pub const BIN: &str = env!("CARGO_BIN_EXE_flatlan-speaker");
pub const VIP4: &str = "10.77.0.100";
pub const VIP6: &str = "fd77::100";
pub const SECRET: &str = netns_testkit::speaker::SPEAKER_SECRET;
pub const CLIENT_IP: &str = "10.77.0.2";
pub const CLIENT_IP6: &str = "fd77::2";

pub fn node_ip(i: usize) -> String {
    host_ip(i).to_string()
}
pub fn node_ip6(i: usize) -> String {
    host_ip6(i).to_string()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not an IP: {e}"))
}

/// Panicking shorthands for [`Netns`]: in a test a failed command is a
/// failed test, and the error already carries the command's stderr.
pub trait NetnsExt {
    /// Runs `argv` in the namespace; its stdout. Panics unless it succeeds.
    fn ok(&self, argv: &[&str]) -> String;
    /// The MAC of `dev`, as `ip` prints it.
    fn mac(&self, dev: &str) -> String;
}

impl NetnsExt for Netns {
    fn ok(&self, argv: &[&str]) -> String {
        let out = self
            .exec_ok(argv)
            .unwrap_or_else(|e| panic!("in {}: {e}", self.name()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn mac(&self, dev: &str) -> String {
        self.link_mac(dev)
            .unwrap_or_else(|e| panic!("MAC of {dev} in {}: {e}", self.name()))
    }
}

/// A running (or exited) speaker, with panicking shorthands.
pub struct Speaker<'a> {
    inner: &'a mut StaticSpeaker,
    pub config: PathBuf,
}

impl Speaker<'_> {
    pub fn signal(&mut self, sig: Signal) {
        let _ = self.inner.signal(sig);
    }
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.inner.wait(timeout)
    }
    pub fn log_text(&self) -> String {
        self.inner.log()
    }
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }
    /// The last status file, if there is one and it parses.
    pub fn status(&self) -> Option<SpeakerStatus> {
        self.inner.status()
    }
    pub fn vip_state(&self, vip: &str) -> Option<String> {
        self.inner.vip_state(ip(vip))
    }
}

/// The lab: [`SpeakerLab`] (its `client`, `nodes`, `switch` and
/// `speakers`), with panicking methods.
pub struct Lab(SpeakerLab);

impl Deref for Lab {
    type Target = SpeakerLab;
    fn deref(&self) -> &SpeakerLab {
        &self.0
    }
}

impl DerefMut for Lab {
    fn deref_mut(&mut self) -> &mut SpeakerLab {
        &mut self.0
    }
}

impl Lab {
    /// Needs root: fails (never skips) without it.
    pub fn new(nodes: usize) -> Lab {
        Lab(SpeakerLab::new(BIN.as_ref(), nodes).unwrap_or_else(|e| panic!("speaker lab: {e}")))
    }

    /// Gives node `i` a second NIC, `eth1`, cabled to the same switch, with
    /// `ip4`/24 and `ip6`/64 (a wired and a wireless link on one LAN);
    /// returns its MAC.
    pub fn add_second_nic(&self, i: usize, ip4: &str, ip6: &str) -> String {
        let (IpAddr::V4(v4), IpAddr::V6(v6)) = (ip(ip4), ip(ip6)) else {
            panic!("{ip4} and {ip6}: one IPv4 and one IPv6 address");
        };
        self.0
            .add_second_nic(i, v4, v6)
            .unwrap_or_else(|e| panic!("second NIC on node {i}: {e}"))
    }

    pub fn node_name(i: usize) -> String {
        SpeakerLab::node_name(i)
    }

    pub fn start(&mut self, i: usize, vips: &[&str], extra: &str) {
        let text = self.config_text(i, vips, extra);
        self.start_text(i, &text);
    }

    /// Starts node `i`'s speaker with a config file of exactly `text`.
    pub fn start_text(&mut self, i: usize, text: &str) {
        self.0
            .start_text(i, text)
            .unwrap_or_else(|e| panic!("start the speaker on node {i}: {e}"));
    }

    pub fn speaker(&mut self, i: usize) -> Speaker<'_> {
        let inner = self.0.speaker(i).expect("speaker started");
        let config = inner.config().to_path_buf();
        Speaker { inner, config }
    }

    /// Waits until exactly one speaker reports `announcing` for `vip`;
    /// returns its index.
    pub fn wait_owner(&self, vip: &str, timeout: Duration) -> usize {
        self.0
            .wait_owner(ip(vip), timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn metrics(&self, i: usize) -> String {
        // The metrics endpoint listens on 127.0.0.1 inside the node's netns.
        self.nodes[i]
            .run(|| flatlan_speaker::http::get("127.0.0.1:7472".parse().expect("addr"), "/metrics"))
            .expect("enter the node's namespace")
            .unwrap_or_default()
    }
}

/// Captures the ARP and NDP (NS/NA) frames on `eth0` of `ns` for `dur`, on
/// a thread of its own so the test goes on meanwhile.
pub fn capture(ns: &Netns, dur: Duration) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    let ns = ns.clone();
    std::thread::spawn(move || {
        ns.run(|| {
            use flatlan_l2::socket::{FrameSocket, PacketSocket};
            let sock = PacketSocket::open("eth0").expect("AF_PACKET on eth0");
            let mut out = Vec::new();
            let mut buf = [0u8; 2048];
            let end = Instant::now() + dur;
            while let Some(left) = end.checked_duration_since(Instant::now()) {
                if let Some(n) = sock.recv_timeout(&mut buf, left).expect("capture") {
                    out.push(buf[..n].to_vec());
                }
            }
            out
        })
        .expect("enter the namespace")
    })
}

/// Parses `ping` output: (transmitted, received seqs).
pub fn ping_seqs(out: &str) -> (u32, Vec<u32>) {
    let run = PingRun::parse(out);
    (run.sent, run.seqs())
}

/// The longest run of missing sequence numbers.
pub fn longest_gap(seqs: &[u32]) -> u32 {
    PingRun {
        sent: 0,
        replies: seqs.iter().map(|s| (*s, f64::NAN)).collect(),
    }
    .longest_gap()
}

/// The MAC `ns`'s neighbour cache on `eth0` holds for `ip` (v4 or v6).
pub fn neigh_mac(ns: &Netns, ip_s: &str) -> Option<String> {
    let want = ip(ip_s);
    arp_neighbors(ns, "eth0")
        .unwrap_or_else(|e| panic!("neighbours in {}: {e}", ns.name()))
        .into_iter()
        .find(|n| n.ip == want)
        .and_then(|n| n.mac)
}

/// Who answers an `arping` for `vip` from the client, `count` probes
/// (each broadcast, so every responder is asked every time).
pub fn arp_responders(client: &Netns, vip: &str, count: &str) -> ArpingReplies {
    arping(client, "eth0", ip(vip), &["-c", count, "-w", count])
        .unwrap_or_else(|e| panic!("arping {vip}: {e}"))
}

/// True if `vip` is on `lo` in `ns`.
pub fn on_lo(ns: &Netns, vip: &str) -> bool {
    addresses(ns, "lo")
        .unwrap_or_else(|e| panic!("addresses of lo in {}: {e}", ns.name()))
        .contains(&ip(vip))
}
