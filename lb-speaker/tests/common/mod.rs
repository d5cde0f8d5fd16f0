//! A small L2 lab for the speaker's privileged tests: a switch namespace
//! with a bridge, N node namespaces and a client namespace, each with an
//! `eth0` veth into the switch. The nodes have no default route, as on a
//! LAN segment without a gateway (the multicast test relies on that), which
//! is why this is not netns-testkit's home-LAN `Lab`.
//!
//! The parts are netns-testkit's: [`Netns`] gives unique `fl<pid>l<n>-…`
//! names (parallel tests do not collide, `cleanup_stale` finds leftovers)
//! and deletes the namespace on drop, also when a test panics; every
//! speaker is a [`ProcHandle`], signalled by PID only. Nothing touches the
//! host namespace: veths are created inside the switch namespace and moved
//! straight into their node.
#![allow(dead_code)] // each test binary uses a different part

use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use netns_testkit::probe::arp_neighbors;
use netns_testkit::speaker_fleet::{addresses, arping, ArpingReplies, SpeakerStatus};
use netns_testkit::{Netns, ProcHandle};
use nix::sys::signal::Signal;

pub const BIN: &str = env!("CARGO_BIN_EXE_flatlan-speaker");
pub const VIP4: &str = "10.77.0.100";
pub const VIP6: &str = "fd77::100";
pub const SECRET: &str = "lab-secret-0123456789";
pub const CLIENT_IP: &str = "10.77.0.2";
pub const CLIENT_IP6: &str = "fd77::2";

pub fn node_ip(i: usize) -> String {
    format!("10.77.0.{}", 11 + i)
}
pub fn node_ip6(i: usize) -> String {
    format!("fd77::{}", 11 + i)
}

fn ip(s: &str) -> IpAddr {
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

/// A running (or exited) speaker.
pub struct Speaker {
    proc: ProcHandle,
    /// Set once [`Speaker::wait`] has seen it exit: from then on it is no
    /// owner, whatever its last status file says.
    exited: Option<ExitStatus>,
    pub config: PathBuf,
    status: PathBuf,
}

impl Speaker {
    pub fn signal(&mut self, sig: Signal) {
        let _ = self.proc.kill(sig);
    }
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let st = self.proc.wait_timeout(timeout);
        if st.is_some() {
            self.exited = st;
        }
        st
    }
    pub fn log_text(&self) -> String {
        self.proc.log()
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    /// The last status file, if there is one and it parses.
    pub fn status(&self) -> Option<SpeakerStatus> {
        SpeakerStatus::parse(&fs::read(&self.status).ok()?).ok()
    }
    pub fn vip_state(&self, vip: &str) -> Option<String> {
        let vip = ip(vip);
        self.status()?.vips.get(&vip).map(|v| v.state.clone())
    }
    fn announces(&self, vip: &str) -> bool {
        self.exited.is_none() && self.vip_state(vip).as_deref() == Some("announcing")
    }
}

impl Drop for Speaker {
    /// SIGKILL, not the handle's SIGTERM: a graceful leave would spend the
    /// teardown handing VIPs to peers that are about to go too.
    fn drop(&mut self) {
        let _ = self.proc.kill(Signal::SIGKILL);
        let _ = self.proc.wait_timeout(Duration::from_secs(5));
    }
}

/// The lab. `speakers` is the first field, so they are gone before the
/// namespaces (a namespace with a process in it outlives its name).
pub struct Lab {
    pub speakers: Vec<Option<Speaker>>,
    pub client: Netns,
    pub nodes: Vec<Netns>,
    pub switch: Netns,
    dir: tempfile::TempDir,
}

fn netns(role: &str) -> Netns {
    Netns::new(role).unwrap_or_else(|e| panic!("namespace {role}: {e}"))
}

/// Addresses and link state of a host's `eth0`. No DAD on the lab's fresh
/// links: until the link-local address leaves "tentative", Linux sends no
/// NS at all (ndisc_send_ns needs a usable link-local source), so IPv6
/// replies would stall for the first ~2 s of every test.
fn attach(ns: &Netns, ip4: &str, ip6: &str) {
    // /proc/sys/net is the calling thread's namespace: no process, and
    // the host's value is never touched.
    ns.run(|| fs::write("/proc/sys/net/ipv6/conf/eth0/accept_dad", "0"))
        .unwrap_or_else(|e| panic!("enter {}: {e}", ns.name()))
        .unwrap_or_else(|e| panic!("accept_dad=0 in {}: {e}", ns.name()));
    ns.ip_batch(&format!(
        "addr add {ip4}/24 dev eth0\naddr add {ip6}/64 dev eth0 nodad\nlink set eth0 up\n"
    ))
    .unwrap_or_else(|e| panic!("{}: {e}", ns.name()));
}

impl Lab {
    /// Needs root: fails (never skips) without it.
    pub fn new(nodes: usize) -> Lab {
        let switch = netns("spk-switch");
        let client = netns("spk-client");
        let node_ns: Vec<Netns> = (0..nodes).map(|i| netns(&format!("spk-node{i}"))).collect();
        // No multicast snooping: NS to solicited-node groups are flooded,
        // like on a typical home switch.
        let mut script =
            String::from("link add br0 type bridge mcast_snooping 0\nlink set br0 up\n");
        let ports = std::iter::once(("pc".to_owned(), &client)).chain(
            node_ns
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("p{i}"), n)),
        );
        for (port, host) in ports {
            let _ = writeln!(
                script,
                "link add {port} type veth peer name eth0 netns {}\nlink set {port} master br0 up",
                host.name()
            );
        }
        switch
            .ip_batch(&script)
            .unwrap_or_else(|e| panic!("switch: {e}"));
        attach(&client, CLIENT_IP, CLIENT_IP6);
        for (i, n) in node_ns.iter().enumerate() {
            attach(n, &node_ip(i), &node_ip6(i));
        }
        Lab {
            speakers: (0..nodes).map(|_| None).collect(),
            client,
            nodes: node_ns,
            switch,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Gives node `i` a second NIC, `eth1`, cabled to the same switch, with
    /// `ip4`/24 and `ip6`/64 (a wired and a wireless link on one LAN);
    /// returns its MAC.
    pub fn add_second_nic(&self, i: usize, ip4: &str, ip6: &str) -> String {
        let node = &self.nodes[i];
        self.switch
            .ip_batch(&format!(
                "link add q{i} type veth peer name eth1 netns {}\nlink set q{i} master br0 up\n",
                node.name()
            ))
            .unwrap_or_else(|e| panic!("switch: {e}"));
        node.ip_batch(&format!(
            "addr add {ip4}/24 dev eth1\naddr add {ip6}/64 dev eth1 nodad\nlink set eth1 up\n"
        ))
        .unwrap_or_else(|e| panic!("{}: {e}", node.name()));
        node.mac("eth1")
    }

    pub fn node_name(i: usize) -> String {
        format!("node-{i}")
    }

    pub fn config_text(&self, i: usize, vips: &[&str], extra: &str) -> String {
        let peers: Vec<String> = (0..self.nodes.len())
            .filter(|j| *j != i)
            .map(|j| format!("\"{}:7946\"", node_ip(j)))
            .collect();
        let vips: Vec<String> = vips
            .iter()
            .map(|v| format!("  - address: \"{v}\"\n"))
            .collect();
        format!(
            "node: {{ name: {}, address: {} }}\nlisten: \"0.0.0.0:7946\"\npeers: [{}]\nsecret: \"{SECRET}\"\nvips:\n{}statusFile: {}\nheartbeatInterval: 100ms\ndeadAfter: 3\nstateDir: {}\n{extra}",
            Self::node_name(i),
            node_ip(i),
            peers.join(", "),
            vips.concat(),
            self.status_path(i).display(),
            self.dir.path().join(format!("state-{i}")).display(),
        )
    }

    fn status_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("status-{i}.json"))
    }

    pub fn start(&mut self, i: usize, vips: &[&str], extra: &str) {
        let text = self.config_text(i, vips, extra);
        self.start_text(i, &text);
    }

    /// Starts node `i`'s speaker with a config file of exactly `text`.
    pub fn start_text(&mut self, i: usize, text: &str) {
        let config = self.dir.path().join(format!("config-{i}.yaml"));
        fs::write(&config, text).expect("config");
        let proc = self.nodes[i]
            .spawn(&[BIN, "static", "--config", config.to_str().expect("utf8")])
            .expect("spawn the speaker");
        self.speakers[i] = Some(Speaker {
            proc,
            exited: None,
            config,
            status: self.status_path(i),
        });
    }

    pub fn speaker(&mut self, i: usize) -> &mut Speaker {
        self.speakers[i].as_mut().expect("speaker started")
    }

    /// Every speaker's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.speakers.iter().enumerate() {
            if let Some(s) = s {
                let _ = writeln!(out, "----- node {i} -----\n{}", s.log_text());
            }
        }
        out
    }

    /// Waits until exactly one speaker reports `announcing` for `vip`;
    /// returns its index.
    pub fn wait_owner(&self, vip: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let owners: Vec<usize> = self
                .speakers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.as_ref().is_some_and(|s| s.announces(vip)))
                .map(|(i, _)| i)
                .collect();
            if owners.len() == 1 {
                return owners[0];
            }
            if Instant::now() > deadline {
                panic!(
                    "no single owner for {vip} (owners {owners:?}); logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
            use flatlan_ipam::probe::{FrameSocket, PacketSocket};
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
    let mut seqs = Vec::new();
    let mut sent = 0;
    for l in out.lines() {
        if let Some(i) = l.find("icmp_seq=") {
            if l.contains("bytes from") {
                let n: String = l[i + 9..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                if let Ok(n) = n.parse() {
                    seqs.push(n);
                }
            }
        }
        if let Some(i) = l.find(" packets transmitted") {
            sent = l[..i].trim().parse().unwrap_or(0);
        }
    }
    (sent, seqs)
}

/// The longest run of missing sequence numbers.
pub fn longest_gap(seqs: &[u32]) -> u32 {
    seqs.windows(2)
        .map(|w| w[1].saturating_sub(w[0]).saturating_sub(1))
        .max()
        .unwrap_or(0)
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
