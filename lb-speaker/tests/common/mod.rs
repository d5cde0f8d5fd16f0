//! A small L2 lab for the speaker's privileged tests: a switch namespace
//! with a bridge, N node namespaces and a client namespace, each with an
//! `eth0` veth into the switch. Names are unique per process and test
//! (`spk<pid>x<n>-<role>`), so tests run in parallel; everything is removed
//! on drop, also when a test panics. Nothing touches the host namespace:
//! veths are created inside the switch namespace and moved straight into
//! their node namespace.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_flatlan-speaker");
pub const VIP4: &str = "10.77.0.100";
pub const VIP6: &str = "fd77::100";
pub const SECRET: &str = "lab-secret-0123456789";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Fails (never skips) when not root: a test that cannot run must not pass.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this privileged test needs root (it creates network namespaces)"
    );
}

pub fn sh(argv: &[&str]) -> Output {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    out
}

pub fn must(argv: &[&str]) -> String {
    let out = sh(argv);
    assert!(
        out.status.success(),
        "{argv:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    fn new(name: String) -> Ns {
        must(&["ip", "netns", "add", &name]);
        let ns = Ns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }
    pub fn exec(&self, argv: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(argv);
        sh(&v)
    }
    pub fn ok(&self, argv: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", self.name.as_str()];
        v.extend_from_slice(argv);
        must(&v)
    }
    pub fn spawn(&self, argv: &[&str], log: &Path) -> Child {
        let f = fs::File::create(log).expect("log file");
        let f2 = f.try_clone().expect("log file");
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .stdout(f)
            .stderr(f2)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn")
    }
    pub fn mac(&self, dev: &str) -> String {
        let out = self.ok(&["cat", &format!("/sys/class/net/{dev}/address")]);
        out.trim().to_owned()
    }
    /// Runs `f` on a fresh thread that has entered this namespace (never on
    /// a thread anybody else reuses).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = fs::File::open(&path).expect("open netns");
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A running speaker; SIGKILLed on drop if still running.
pub struct Speaker {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub config: PathBuf,
    pub status: PathBuf,
}

impl Speaker {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }
    pub fn signal(&mut self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn status(&self) -> Option<serde_json::Value> {
        let b = fs::read(&self.status).ok()?;
        serde_json::from_slice(&b).ok()
    }
    pub fn vip_state(&self, vip: &str) -> Option<String> {
        let s = self.status()?;
        s["vips"]
            .as_array()?
            .iter()
            .find(|v| v["vip"] == vip)
            .map(|v| v["state"].as_str().unwrap_or("").to_owned())
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub switch: Ns,
    pub nodes: Vec<Ns>,
    pub client: Ns,
    pub speakers: Vec<Option<Speaker>>,
}

pub fn node_ip(i: usize) -> String {
    format!("10.77.0.{}", 11 + i)
}
pub fn node_ip6(i: usize) -> String {
    format!("fd77::{}", 11 + i)
}
pub const CLIENT_IP: &str = "10.77.0.2";

impl Lab {
    pub fn new(nodes: usize) -> Lab {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("spk{}x{n}", std::process::id());
        let switch = Ns::new(format!("{prefix}-sw"));
        switch.ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        // No multicast snooping: NS to solicited-node groups are flooded,
        // like on a typical home switch.
        switch.ok(&[
            "ip",
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        switch.ok(&["ip", "link", "set", "br0", "up"]);
        let attach = |ns: &Ns, port: &str, ip4: &str, ip6: &str| {
            switch.ok(&[
                "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns.name,
            ]);
            switch.ok(&["ip", "link", "set", port, "master", "br0", "up"]);
            // No DAD on the lab's fresh links: until the link-local address
            // leaves "tentative", Linux sends no NS at all (ndisc_send_ns
            // needs a usable link-local source), so IPv6 replies would
            // stall for the first ~2 s of every test.
            ns.ok(&["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"]);
            ns.ok(&["ip", "addr", "add", &format!("{ip4}/24"), "dev", "eth0"]);
            ns.ok(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{ip6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            ns.ok(&["ip", "link", "set", "eth0", "up"]);
        };
        let client = Ns::new(format!("{prefix}-cl"));
        attach(&client, "pc", CLIENT_IP, "fd77::2");
        let mut ns = Vec::new();
        for i in 0..nodes {
            let node = Ns::new(format!("{prefix}-n{i}"));
            attach(&node, &format!("p{i}"), &node_ip(i), &node_ip6(i));
            ns.push(node);
        }
        Lab {
            dir: tempfile::tempdir().expect("tempdir"),
            switch,
            nodes: ns,
            client,
            speakers: (0..nodes).map(|_| None).collect(),
        }
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
            "node: {{ name: {}, address: {} }}\nlisten: \"0.0.0.0:7946\"\npeers: [{}]\nsecret: \"{SECRET}\"\nvips:\n{}statusFile: {}\nheartbeatInterval: 100ms\ndeadAfter: 3\n{extra}",
            Self::node_name(i),
            node_ip(i),
            peers.join(", "),
            vips.concat(),
            self.dir.path().join(format!("status-{i}.json")).display(),
        )
    }

    pub fn start(&mut self, i: usize, vips: &[&str], extra: &str) {
        let text = self.config_text(i, vips, extra);
        self.start_text(i, &text);
    }

    /// Starts node `i`'s speaker with a config file of exactly `text`.
    pub fn start_text(&mut self, i: usize, text: &str) {
        let config = self.dir.path().join(format!("config-{i}.yaml"));
        fs::File::create(&config)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("config");
        let log = self.dir.path().join(format!("speaker-{i}.log"));
        let child = self.nodes[i].spawn(
            &[BIN, "static", "--config", config.to_str().expect("utf8")],
            &log,
        );
        self.speakers[i] = Some(Speaker {
            child: Some(child),
            log,
            config,
            status: self.dir.path().join(format!("status-{i}.json")),
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
                .filter(|(_, s)| {
                    s.as_ref().is_some_and(|s| {
                        s.child.is_some() && s.vip_state(vip).as_deref() == Some("announcing")
                    })
                })
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
        let h = self.nodes[i].run(|| {
            flatlan_speaker::http::get("127.0.0.1:7472".parse().expect("addr"), "/metrics")
        });
        h.join().expect("thread").unwrap_or_default()
    }
}

/// Captures the ARP and NDP (NS/NA) frames on `eth0` of `ns` for `dur`.
pub fn capture(ns: &Ns, dur: Duration) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    let h = capture_timed(ns, dur);
    std::thread::spawn(move || {
        h.join()
            .expect("capture")
            .into_iter()
            .map(|(_, f)| f)
            .collect()
    })
}

/// Like [`capture`], with each frame's arrival time.
pub fn capture_timed(ns: &Ns, dur: Duration) -> std::thread::JoinHandle<Vec<(Instant, Vec<u8>)>> {
    ns.run(move || {
        use flatlan_ipam::probe::{FrameSocket, PacketSocket};
        let sock = PacketSocket::open("eth0").expect("AF_PACKET on eth0");
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        let end = Instant::now() + dur;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if let Some(n) = sock.recv_timeout(&mut buf, left).expect("capture") {
                out.push((Instant::now(), buf[..n].to_vec()));
            }
        }
        out
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

pub fn neigh_mac(ns: &Ns, ip: &str) -> Option<String> {
    let out = ns.ok(&["ip", "neigh", "show", ip, "dev", "eth0"]);
    let mut it = out.split_whitespace();
    while let Some(w) = it.next() {
        if w == "lladdr" {
            return it.next().map(str::to_owned);
        }
    }
    None
}

pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// The distinct MACs that answer an `arping` for `vip` from the client,
/// and arping's output (for failure messages).
pub fn arp_responders(client: &Ns, vip: &str, count: &str) -> (Vec<String>, String) {
    let out = client.exec(&["arping", "-c", count, "-w", count, "-I", "eth0", vip]);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let mut r: Vec<String> = text
        .lines()
        .filter(|l| l.contains("reply from") || l.contains("bytes from"))
        .filter_map(|l| l.split(['[', ']']).nth(1).map(str::to_owned))
        .collect();
    r.sort();
    r.dedup();
    (r, text)
}
