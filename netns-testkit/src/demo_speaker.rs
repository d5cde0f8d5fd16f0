//! The L2 load-balancer part of `flatlan-lab demo`: `flatlan-speaker
//! static` on both lab nodes announcing one VIP, checked from the LAN
//! client the way a phone on the LAN would see it.
//!
//! The speaker is driven through its binary only (config file, status
//! file, signals), so netns-testkit does not depend on the speaker crate.
//! Every speaker is a [`ProcHandle`]: it is signalled by PID, and the
//! handles drop (stopping whatever still runs) before the lab deletes the
//! namespaces.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::demo::Report;
use crate::error::{Error, Result};
use crate::lab::{Lab, Node};
use crate::names::validate_label;
use crate::probe::{arp_neighbors, ping};
use crate::process::ProcHandle;
use crate::scratch::ScratchDir;

/// The demo's VIP: on the LAN, outside the router's DHCP pool and outside
/// both nodes' pod slices (.208/28, .224/28).
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 240);
/// The heartbeat key the demo's speakers share (>= 16 bytes).
const SECRET: &str = "flatlan-lab-demo-secret-0123456789";
const HEARTBEAT_MS: u64 = 100;
const DEAD_AFTER: u32 = 3;
/// The client pings every 20 ms, so a lost ping is 20 ms of outage.
const PING_INTERVAL_MS: u64 = 20;

/// Generous bounds: the demo runs on shared 2-core machines, and a slow
/// step must not turn into a failed check. The real figures come from the
/// bench.
const START: Duration = Duration::from_secs(15);
const OWNER: Duration = Duration::from_secs(10);
const EXIT: Duration = Duration::from_secs(5);
/// A graceful handoff that loses more pings than this did not work as
/// make-before-break: a hard failover (3 missed heartbeats, then a claim)
/// loses ~15 or more, so 10 (200 ms) separates the two cleanly while
/// tolerating scheduling hiccups on a busy machine. The target is 0.
const GRACEFUL_MAX_LOST: u32 = 10;

/// The speakers on the lab's nodes, by node position (0 = node1).
struct Speakers<'a> {
    lab: &'a Lab,
    bin: PathBuf,
    dir: ScratchDir,
    procs: Vec<Option<ProcHandle>>,
}

impl<'a> Speakers<'a> {
    fn new(lab: &'a Lab, bin: PathBuf) -> Result<Self> {
        let dir = ScratchDir::new(&format!("{}-speaker", lab.name_prefix()))?;
        Ok(Speakers {
            lab,
            bin,
            dir,
            procs: lab.nodes.iter().map(|_| None).collect(),
        })
    }

    fn node(&self, i: usize) -> Result<&'a Node> {
        self.lab
            .nodes
            .get(i)
            .ok_or_else(|| Error::InvalidConfig(format!("lab has no node at position {i}")))
    }

    fn name(&self, i: usize) -> String {
        self.node(i)
            .map(|n| format!("node{}", n.index))
            .unwrap_or_else(|_| format!("node?{i}"))
    }

    fn status_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("status-{}.json", self.name(i)))
    }

    fn start(&mut self, i: usize) -> Result<()> {
        let node = self.node(i)?;
        let peers: Vec<String> = self
            .lab
            .nodes
            .iter()
            .filter(|n| n.index != node.index)
            .map(|n| format!("\"{}:7946\"", n.ip))
            .collect();
        let name = self.name(i);
        validate_label(&name)?;
        let status = self.status_path(i);
        let yaml = config_yaml(&name, node.ip, &peers, node.bridge, &status);
        let config = self.dir.write(&format!("{name}.yaml"), &yaml)?;
        // A killed speaker's last status file still says "announcing";
        // the restarted one must not be mistaken for an owner before it
        // has written its own.
        let _ = std::fs::remove_file(&status);
        let bin = self.bin.to_string_lossy().into_owned();
        let config = config.to_string_lossy().into_owned();
        let mut h = node
            .ns
            .spawn(&[bin.as_str(), "static", "--config", config.as_str()])?;
        let ready = h.wait_for_log("speaker ready", START);
        // Keep the handle even on error: dropping it stops the process.
        self.procs[i] = Some(h);
        ready
    }

    fn running(&mut self, i: usize) -> bool {
        self.procs
            .get_mut(i)
            .and_then(Option::as_mut)
            .is_some_and(ProcHandle::is_running)
    }

    /// This node's view of the VIP from its status file: (state, MAC).
    fn vip_state(&self, i: usize) -> Option<(String, Option<String>)> {
        let text = std::fs::read(self.status_path(i)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
        let vip = VIP.to_string();
        v["vips"]
            .as_array()?
            .iter()
            .find(|e| e["vip"].as_str() == Some(vip.as_str()))
            .map(|e| {
                (
                    e["state"].as_str().unwrap_or_default().to_owned(),
                    e["mac"].as_str().map(str::to_owned),
                )
            })
    }

    /// Waits until exactly one running speaker announces the VIP.
    fn wait_owner(&mut self, timeout: Duration) -> Result<usize> {
        let deadline = crate::process::deadline_after(timeout);
        loop {
            let mut owners = Vec::new();
            for i in 0..self.procs.len() {
                if self.running(i) && self.vip_state(i).is_some_and(|(s, _)| s == "announcing") {
                    owners.push(i);
                }
            }
            if let [one] = owners.as_slice() {
                return Ok(*one);
            }
            if Instant::now() >= deadline {
                return Err(Error::Probe {
                    what: format!("waiting for one owner of {VIP}"),
                    detail: format!(
                        "owners after {timeout:?}: {:?}\n{}",
                        owners.iter().map(|i| self.name(*i)).collect::<Vec<_>>(),
                        self.logs()
                    ),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&mut self, i: usize, sig: Signal) -> Result<()> {
        match self.procs.get_mut(i).and_then(Option::as_mut) {
            Some(h) => h.kill(sig),
            None => Err(Error::InvalidConfig(format!(
                "no speaker on {}",
                self.name(i)
            ))),
        }
    }

    fn wait_exit(&mut self, i: usize, timeout: Duration) -> Result<std::process::ExitStatus> {
        let name = self.name(i);
        self.procs
            .get_mut(i)
            .and_then(Option::as_mut)
            .and_then(|h| h.wait_timeout(timeout))
            .ok_or_else(|| Error::Timeout {
                what: format!("the speaker on {name} to exit"),
                timeout,
            })
    }

    fn log(&self, i: usize) -> String {
        self.procs
            .get(i)
            .and_then(Option::as_ref)
            .map(ProcHandle::log)
            .unwrap_or_default()
    }

    /// The last lines of every speaker's log, for failed checks.
    fn logs(&self) -> String {
        let mut s = String::new();
        for i in 0..self.procs.len() {
            let log = self.log(i);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(8)..];
            let _ = writeln!(s, "--- {} speaker log (tail) ---", self.name(i));
            for l in tail {
                let _ = writeln!(s, "        {l}");
            }
        }
        s
    }

    /// Stops every speaker still running: SIGTERM (a graceful leave), then
    /// the handle's drop SIGKILLs what did not exit in time and reaps it.
    fn stop_all(&mut self) {
        for i in 0..self.procs.len() {
            let _ = self.signal(i, Signal::SIGTERM);
        }
        for h in self.procs.iter_mut().flatten() {
            let _ = h.wait_timeout(EXIT);
        }
        self.procs.iter_mut().for_each(|p| *p = None);
    }
}

impl Drop for Speakers<'_> {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The static-mode config of one demo node (the schema of
/// lb-speaker/src/config.rs).
fn config_yaml(name: &str, ip: Ipv4Addr, peers: &[String], iface: &str, status: &Path) -> String {
    format!(
        "node: {{ name: {name}, address: {ip} }}\n\
         listen: \"0.0.0.0:7946\"\n\
         peers: [{peers}]\n\
         secret: \"{SECRET}\"\n\
         vips:\n  - address: \"{VIP}\"\n    interface: {iface}\n\
         heartbeatInterval: {HEARTBEAT_MS}ms\n\
         deadAfter: {DEAD_AFTER}\n\
         statusFile: \"{status}\"\n",
        peers = peers.join(", "),
        status = status.display(),
    )
}

/// The MAC of `dev` in `ns` (`ip -br link`: name, state, MAC, flags).
fn link_mac(node: &Node, dev: &str) -> Result<String> {
    let out = node
        .ns
        .exec_ok(&["ip", "-br", "link", "show", "dev", dev])?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .map(str::to_owned)
        .ok_or_else(|| Error::Probe {
            what: format!("MAC of {dev} in {}", node.ns.name()),
            detail: "no MAC in `ip -br link` output".into(),
        })
}

/// The MAC `ns` (the client or the router) has cached for the VIP on
/// its LAN interface, `eth0`.
fn neighbour_mac(ns: &crate::netns::Netns) -> Result<Option<String>> {
    Ok(arp_neighbors(ns, "eth0")?
        .into_iter()
        .find(|n| n.ip == IpAddr::V4(VIP))
        .and_then(|n| n.mac))
}

/// What a background `ping -D` printed.
#[derive(Debug, Default, PartialEq)]
struct PingRun {
    sent: u32,
    /// Answered sequence numbers with the reply's `-D` timestamp (seconds),
    /// sorted by sequence number, duplicates removed.
    replies: Vec<(u32, f64)>,
}

impl PingRun {
    /// Parses ping output (with or without `-D` timestamps).
    fn parse(out: &str) -> PingRun {
        let mut run = PingRun::default();
        for l in out.lines() {
            if l.contains("bytes from") {
                let t = l
                    .strip_prefix('[')
                    .and_then(|r| r.split(']').next())
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(f64::NAN);
                if let Some(i) = l.find("icmp_seq=") {
                    let n: String = l[i + 9..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(n) = n.parse() {
                        run.replies.push((n, t));
                    }
                }
            }
            if let Some(i) = l.find(" packets transmitted") {
                run.sent = l[..i].trim().parse().unwrap_or(0);
            }
        }
        run.replies.sort_by_key(|r| r.0);
        run.replies.dedup_by_key(|r| r.0);
        run
    }

    fn received(&self) -> u32 {
        u32::try_from(self.replies.len()).unwrap_or(u32::MAX)
    }

    fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.received())
    }

    /// The longest run of missing sequence numbers between two answered ones.
    fn longest_gap(&self) -> u32 {
        self.replies
            .windows(2)
            .map(|w| w[1].0.saturating_sub(w[0].0).saturating_sub(1))
            .max()
            .unwrap_or(0)
    }

    /// The longest time between two consecutive replies, in ms: the
    /// outage as the client lives it. Counting lost pings alone would
    /// assume ping keeps its 20 ms pace, which it does not quite on a
    /// loaded machine.
    fn longest_silence_ms(&self) -> f64 {
        self.replies
            .windows(2)
            .map(|w| (w[1].1 - w[0].1) * 1000.0)
            .filter(|d| d.is_finite())
            .fold(0.0, f64::max)
    }

    /// True if the last replies came back: the run ended with service.
    fn resumed(&self) -> bool {
        self.replies.last().is_some_and(|l| l.0 + 10 >= self.sent)
    }
}

/// The distinct responder MACs in iputils `arping` output, lower case
/// ("Unicast reply from 192.168.2.240 [AA:BB:..]  0.6ms").
fn arping_responders(out: &str) -> Vec<String> {
    let mut macs: Vec<String> = out
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| l.split(['[', ']']).nth(1))
        .map(str::to_lowercase)
        .collect();
    macs.sort();
    macs.dedup();
    macs
}

/// A ping from the LAN client to the VIP every 20 ms for `secs`, in the
/// background.
fn ping_background(lab: &Lab, secs: u32) -> Result<ProcHandle> {
    let interval = format!("{:.3}", PING_INTERVAL_MS as f64 / 1000.0);
    let deadline = secs.to_string();
    let vip = VIP.to_string();
    lab.client.spawn(&[
        "ping",
        "-n",
        "-D",
        "-i",
        interval.as_str(),
        "-W",
        "0.5",
        "-w",
        deadline.as_str(),
        vip.as_str(),
    ])
}

/// Waits for a background ping and parses what it printed.
fn ping_finish(mut h: ProcHandle, secs: u32) -> Result<PingRun> {
    let timeout = Duration::from_secs(u64::from(secs) + 10);
    if h.wait_timeout(timeout).is_none() {
        return Err(Error::Timeout {
            what: format!("`{}`", h.command()),
            timeout,
        });
    }
    Ok(PingRun::parse(&h.log()))
}

/// Runs the speaker checks on `lab`'s first two nodes and adds them to
/// `report`. Every check runs even if an earlier one failed.
pub(crate) fn run(lab: &Lab, bin: Result<PathBuf>, report: &mut Report) {
    let bin = match bin {
        Ok(b) => b,
        Err(e) => {
            report.check("speaker: flatlan-speaker binary", || Err(e));
            return;
        }
    };
    let mut sp = match Speakers::new(lab, bin) {
        Ok(s) => s,
        Err(e) => {
            report.check("speaker: scratch directory", || Err(e));
            return;
        }
    };
    report.speaker.push(format!(
        "flatlan-speaker static on node1 and node2: VIP {VIP} on br0, unicast heartbeats \
         every {HEARTBEAT_MS} ms (HMAC, shared secret), dead after {DEAD_AFTER} missed"
    ));
    let mut owner: Option<usize> = None;

    report.check(
        format!("speaker: node1 and node2 elect one owner of {VIP}"),
        || {
            let started = Instant::now();
            for i in 0..sp.procs.len() {
                sp.start(i)?;
            }
            let o = sp.wait_owner(OWNER)?;
            owner = Some(o);
            let mac = sp.vip_state(o).and_then(|(_, m)| m).unwrap_or_default();
            Ok(format!(
                "{} announces it on br0 as {mac}, {:.0?} after the speakers started",
                sp.name(o),
                started.elapsed()
            ))
        },
    );

    report.check(
        "speaker: client pings the VIP; its ARP entry is the owner's br0 MAC",
        || {
            let o = owner.ok_or_else(no_owner)?;
            let want = link_mac(sp.node(o)?, "br0")?;
            let r = ping(&lab.client, VIP.into(), 3, Duration::from_secs(10))?;
            let got = neighbour_mac(&lab.client)?;
            if got.as_deref() != Some(want.as_str()) {
                return Err(Error::Probe {
                    what: format!("client's neighbour entry for {VIP}"),
                    detail: format!("{got:?}, but {} owns it with {want}", sp.name(o)),
                });
            }
            Ok(format!(
                "{}/{} replies; {VIP} lladdr {want} ({} br0)",
                r.received,
                r.transmitted,
                sp.name(o)
            ))
        },
    );

    report.check(
        format!("speaker: arping {VIP} from the client: exactly one responder"),
        || {
            let o = owner.ok_or_else(no_owner)?;
            let want = link_mac(sp.node(o)?, "br0")?;
            let vip = VIP.to_string();
            let out = lab.client.exec_timeout(
                &["arping", "-c", "3", "-w", "5", "-I", "eth0", vip.as_str()],
                Duration::from_secs(15),
            )?;
            let text = String::from_utf8_lossy(&out.stdout);
            let macs = arping_responders(&text);
            if macs != [want.clone()] {
                return Err(Error::Probe {
                    what: "arping responders".into(),
                    detail: format!("{macs:?}, expected only {want}; output:\n{text}"),
                });
            }
            let replies = text.lines().filter(|l| l.contains("reply from")).count();
            Ok(format!(
                "`arping -c 3 -I eth0 {VIP}`: {replies} replies, all from {want} ({})",
                sp.name(o)
            ))
        },
    );

    report.check(
        "speaker: the router's ARP entry for the VIP is the owner's br0 MAC",
        || {
            let o = owner.ok_or_else(no_owner)?;
            let want = link_mac(sp.node(o)?, "br0")?;
            // The router resolves the VIP like any LAN host would when it
            // has traffic for it (replies to the internet come back this way).
            let r = ping(&lab.router, VIP.into(), 2, Duration::from_secs(10))?;
            let got = neighbour_mac(&lab.router)?;
            if got.as_deref() != Some(want.as_str()) {
                return Err(Error::Probe {
                    what: format!("router's neighbour entry for {VIP}"),
                    detail: format!("{got:?}, but {} owns it with {want}", sp.name(o)),
                });
            }
            Ok(format!(
                "{}/{} replies; router eth0: {VIP} lladdr {want} ({})",
                r.received,
                r.transmitted,
                sp.name(o)
            ))
        },
    );

    report.check(
        "speaker: owner crashes (SIGKILL, cable out): failover seen by the client",
        || {
            let old = owner.ok_or_else(no_owner)?;
            let old_node = sp.node(old)?;
            const SECS: u32 = 6;
            let pinger = ping_background(lab, SECS)?;
            thread::sleep(Duration::from_secs(1));
            sp.signal(old, Signal::SIGKILL)?;
            // A dead machine neither answers nor forwards: pull its cable,
            // and take the VIP off its `lo` as a crash would (a SIGKILLed
            // speaker leaves it there, and the node would keep answering
            // pings for it until the GARP moves the client, hiding the
            // failover time; lb-speaker/tests/lab.rs does the same).
            let vip_host = format!("{VIP}/32");
            old_node
                .ns
                .exec_ok(&["ip", "link", "set", old_node.uplink, "down"])?;
            old_node
                .ns
                .exec_ok(&["ip", "addr", "del", vip_host.as_str(), "dev", "lo"])?;
            sp.wait_exit(old, EXIT)?;
            let run = ping_finish(pinger, SECS)?;
            let new = sp.wait_owner(OWNER)?;
            owner = Some(new);
            if new == old {
                return Err(Error::Probe {
                    what: "failover".into(),
                    detail: format!("{} still owns {VIP}", sp.name(old)),
                });
            }
            // Resumed: the last answered ping is near the end of the run.
            if !run.resumed() {
                return Err(Error::Probe {
                    what: "pings to the VIP after the crash".into(),
                    detail: format!(
                        "did not resume: {} of {} answered, last seq {:?}\n{}",
                        run.received(),
                        run.sent,
                        run.replies.last().map(|r| r.0),
                        sp.logs()
                    ),
                });
            }
            let want = link_mac(sp.node(new)?, "br0")?;
            let got = neighbour_mac(&lab.client)?;
            if got.as_deref() != Some(want.as_str()) {
                return Err(Error::Probe {
                    what: format!("client's neighbour entry for {VIP} after the failover"),
                    detail: format!("{got:?}, but {} owns it with {want}", sp.name(new)),
                });
            }
            let ms = run.longest_silence_ms();
            Ok(format!(
                "{} -> {}: {:.0} ms without replies ({} pings lost in a row; \
                 target <= 1000 ms: {}); {}/{} answered; client now caches {want}",
                sp.name(old),
                sp.name(new),
                ms,
                run.longest_gap(),
                if ms <= 1000.0 { "met" } else { "missed" },
                run.received(),
                run.sent,
            ))
        },
    );

    report.check(
        "speaker: graceful handoff (SIGTERM the owner): lost pings",
        || {
            // The crashed node comes back: cable in, speaker restarted. It
            // may win the VIP back (rendezvous hashing), itself a
            // make-before-break move; let that settle first.
            let cur = owner.ok_or_else(no_owner)?;
            for i in 0..sp.procs.len() {
                if !sp.running(i) {
                    let n = sp.node(i)?;
                    n.ns.exec_ok(&["ip", "link", "set", n.uplink, "up"])?;
                    sp.start(i)?;
                }
            }
            // Two heartbeats of listening, the takeover, then the status
            // file; 2 s covers it with room to spare.
            thread::sleep(Duration::from_secs(2));
            let from = sp.wait_owner(OWNER)?;
            owner = Some(from);
            const SECS: u32 = 4;
            let pinger = ping_background(lab, SECS)?;
            thread::sleep(Duration::from_secs(1));
            sp.signal(from, Signal::SIGTERM)?;
            let st = sp.wait_exit(from, EXIT)?;
            let run = ping_finish(pinger, SECS)?;
            let to = sp.wait_owner(OWNER)?;
            owner = Some(to);
            let (lost, sent) = (run.lost(), run.sent);
            let handed_over = sp.log(from).contains("handed_over=true");
            let back = if cur == from {
                String::new()
            } else {
                format!("{} took the VIP back on restart; ", sp.name(from))
            };
            let detail = format!(
                "{back}{} -> {}: {lost} of {sent} pings lost (target 0), longest silence \
                 {:.0} ms; old owner exited with {st}, make-before-break: {handed_over}",
                sp.name(from),
                sp.name(to),
                run.longest_silence_ms(),
            );
            if to == from || !st.success() || !handed_over || lost > GRACEFUL_MAX_LOST {
                return Err(Error::Probe {
                    what: "graceful handoff".into(),
                    detail: format!("{detail}\n{}", sp.logs()),
                });
            }
            Ok(detail)
        },
    );

    sp.stop_all();
}

fn no_owner() -> Error {
    Error::Probe {
        what: format!("owner of {VIP}"),
        detail: "no speaker announces it (see the first speaker check)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_output_and_gaps() {
        let out = "PING 192.168.2.240 (192.168.2.240) 56(84) bytes of data.\n\
                   [100.000] 64 bytes from 192.168.2.240: icmp_seq=1 ttl=64 time=0.05 ms\n\
                   [100.020] 64 bytes from 192.168.2.240: icmp_seq=2 ttl=64 time=0.05 ms\n\
                   [100.021] 64 bytes from 192.168.2.240: icmp_seq=2 ttl=64 time=0.07 ms (DUP!)\n\
                   [100.130] 64 bytes from 192.168.2.240: icmp_seq=7 ttl=64 time=0.05 ms\n\
                   \n--- 192.168.2.240 ping statistics ---\n\
                   8 packets transmitted, 3 received, 62.5% packet loss, time 140ms\n";
        let run = PingRun::parse(out);
        assert_eq!(run.sent, 8);
        let seqs: Vec<u32> = run.replies.iter().map(|r| r.0).collect();
        assert_eq!(seqs, vec![1, 2, 7]);
        assert_eq!(run.longest_gap(), 4);
        assert_eq!(run.lost(), 5);
        assert!((run.longest_silence_ms() - 110.0).abs() < 1e-6);
        assert!(run.resumed());
        assert_eq!(PingRun::parse("").longest_gap(), 0);
        assert!(!PingRun::parse("").resumed());
        // Without -D there are no timestamps, and no made-up silence.
        let plain = PingRun::parse("64 bytes from x: icmp_seq=1\n64 bytes from x: icmp_seq=3\n");
        assert_eq!(plain.longest_silence_ms(), 0.0);
    }

    #[test]
    fn counts_distinct_arping_responders() {
        let out = "ARPING 192.168.2.240 from 192.168.2.60 eth0\n\
                   Unicast reply from 192.168.2.240 [0A:58:C0:A8:02:0B]  0.6ms\n\
                   Unicast reply from 192.168.2.240 [0A:58:C0:A8:02:0B]  0.5ms\n\
                   Sent 2 probes (1 broadcast(s))\nReceived 2 response(s)\n";
        assert_eq!(arping_responders(out), vec!["0a:58:c0:a8:02:0b"]);
        let two = format!("{out}Unicast reply from 192.168.2.240 [AA:BB:CC:DD:EE:FF]  1ms\n");
        assert_eq!(arping_responders(&two).len(), 2);
    }

    #[test]
    fn config_names_vip_peers_and_status() {
        let y = config_yaml(
            "node1",
            Ipv4Addr::new(192, 168, 2, 11),
            &["\"192.168.2.12:7946\"".to_owned()],
            "br0",
            Path::new("/tmp/s.json"),
        );
        assert!(y.contains("name: node1, address: 192.168.2.11"));
        assert!(y.contains("peers: [\"192.168.2.12:7946\"]"));
        assert!(y.contains("- address: \"192.168.2.240\"\n    interface: br0"));
        assert!(y.contains("statusFile: \"/tmp/s.json\""));
    }
}
