//! `flatlan-speaker static` on every node of a lab, all with the same VIP
//! list, driven through the binary only (config file, status file,
//! signals), for soak and churn tests.
//!
//! ```no_run
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::Duration;
//! use netns_testkit::speaker_fleet::SpeakerFleet;
//! use netns_testkit::LabConfig;
//!
//! # fn main() -> netns_testkit::Result<()> {
//! let lab = LabConfig::new().nodes(3).build()?;
//! let vips = vec![IpAddr::V4(Ipv4Addr::new(192, 168, 2, 240))];
//! let mut fleet = SpeakerFleet::new(&lab, "target/debug/flatlan-speaker".into(), vips)?;
//! fleet.start_all(Duration::from_secs(20))?;
//! fleet.crash(1)?; // SIGKILL node2's speaker
//! let views = fleet.statuses(); // what every running speaker wrote
//! # drop(views);
//! # Ok(()) }
//! ```
//!
//! Every speaker is a [`ProcHandle`], signalled by PID only; the handles
//! stop what still runs (SIGTERM, then SIGKILL) before the lab deletes
//! the namespaces.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::lab::{Lab, Node};
use crate::netns::Netns;
use crate::process::ProcHandle;
use crate::scratch::ScratchDir;

/// The heartbeat key the fleet's speakers share (>= 16 bytes).
const SECRET: &str = "flatlan-lab-fleet-secret-0123456789";
/// The heartbeat port (the speaker's default).
const PORT: u16 = 7946;

/// What the fleet's speakers are configured with beyond their VIPs and
/// peers. The defaults are the speaker's own, written out so a change of
/// defaults does not silently change what a soak measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetOptions {
    /// `heartbeatInterval`, in ms.
    pub heartbeat_ms: u64,
    /// `deadAfter`, in missed heartbeats.
    pub dead_after: u32,
    /// `assign`: put owned VIPs on `lo` (and set `arp_ignore` and
    /// `arp_announce`), as static mode does by default. Without it the
    /// speaker only announces, as when kube-proxy accepts the VIPs.
    pub assign: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            heartbeat_ms: 100,
            dead_after: 3,
            assign: true,
        }
    }
}

/// One VIP's line in a speaker's status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipView {
    /// `announcing`, `probing`, `conflict`, `standby` or `releasing`.
    pub state: String,
    /// The owner in this speaker's view (`None`: nobody eligible).
    pub owner: Option<String>,
    /// The MAC this speaker announces it with, lower case (when it holds it).
    pub mac: Option<String>,
    /// The last GARP this speaker sent for it (Unix ms), when it holds it.
    pub last_garp_unix_ms: Option<u64>,
    /// Why it is refused, here or by its owner, if it is.
    pub conflict: Option<String>,
}

impl VipView {
    /// True if this speaker answers ARP for the VIP: it announces it, or
    /// still holds it while handing it over.
    pub fn held(&self) -> bool {
        self.state == "announcing" || self.state == "releasing"
    }
}

/// A speaker's status file (the schema of lb-speaker/src/status.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerStatus {
    /// The node name the speaker runs as.
    pub node: String,
    /// When the speaker wrote the file.
    pub updated_unix_ms: u64,
    /// The peers it considers live.
    pub members: BTreeSet<String>,
    /// It is shutting down.
    pub leaving: bool,
    /// Per VIP.
    pub vips: BTreeMap<IpAddr, VipView>,
}

impl SpeakerStatus {
    /// Parses a status document. Every field the soak relies on must be
    /// there with the right type: a renamed field must fail loudly, not
    /// read as "owns nothing".
    pub fn parse(json: &[u8]) -> Result<SpeakerStatus> {
        let what = "parse a flatlan-speaker status document";
        let raw: RawStatus = serde_json::from_slice(json).map_err(|source| Error::Json {
            what: what.to_owned(),
            source,
        })?;
        let mut vips = BTreeMap::new();
        for e in raw.vips {
            let view = VipView {
                state: e.state,
                owner: e.owner,
                mac: e.mac.map(|m| m.to_ascii_lowercase()),
                last_garp_unix_ms: e.last_garp_unix_ms,
                conflict: e.conflict,
            };
            if vips.insert(e.vip, view).is_some() {
                return Err(Error::Probe {
                    what: what.to_owned(),
                    detail: format!("{} is listed twice", e.vip),
                });
            }
        }
        Ok(SpeakerStatus {
            node: raw.node,
            updated_unix_ms: raw.updated_unix_ms,
            members: raw.members,
            leaving: raw.leaving,
            vips,
        })
    }

    /// The VIPs this speaker holds ([`VipView::held`]).
    pub fn held(&self) -> BTreeSet<IpAddr> {
        self.vips
            .iter()
            .filter(|(_, v)| v.held())
            .map(|(ip, _)| *ip)
            .collect()
    }
}

/// The status file as written; [`SpeakerStatus::parse`] checks it.
#[derive(serde::Deserialize)]
struct RawStatus {
    node: String,
    updated_unix_ms: u64,
    members: BTreeSet<String>,
    leaving: bool,
    vips: Vec<RawVip>,
}

#[derive(serde::Deserialize)]
struct RawVip {
    vip: IpAddr,
    state: String,
    owner: Option<String>,
    mac: Option<String>,
    last_garp_unix_ms: Option<u64>,
    conflict: Option<String>,
}

/// `flatlan-speaker static` on each of a lab's nodes, by node position
/// (0 = node1). All speakers announce the same VIPs and know each other as
/// unicast peers.
pub struct SpeakerFleet<'a> {
    lab: &'a Lab,
    bin: PathBuf,
    vips: Vec<IpAddr>,
    options: FleetOptions,
    dir: ScratchDir,
    procs: Vec<Option<ProcHandle>>,
    /// The last status parsed from each file, and which version of the
    /// file it came from.
    parsed: Vec<Option<(FileStamp, SpeakerStatus)>>,
}

/// Identifies one version of a file that is replaced by rename.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    len: u64,
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            len: m.len(),
        }
    }
}

impl<'a> SpeakerFleet<'a> {
    /// A fleet with no speaker running yet, with [`FleetOptions::default`].
    pub fn new(lab: &'a Lab, bin: PathBuf, vips: Vec<IpAddr>) -> Result<Self> {
        Self::with_options(lab, bin, vips, FleetOptions::default())
    }

    /// A fleet whose speakers use `options`.
    pub fn with_options(
        lab: &'a Lab,
        bin: PathBuf,
        vips: Vec<IpAddr>,
        options: FleetOptions,
    ) -> Result<Self> {
        if vips.is_empty() {
            return Err(Error::InvalidConfig("a speaker fleet needs VIPs".into()));
        }
        let dir = ScratchDir::new(&format!("{}-fleet", lab.name_prefix()))?;
        Ok(SpeakerFleet {
            lab,
            bin,
            vips,
            options,
            dir,
            procs: lab.nodes.iter().map(|_| None).collect(),
            parsed: lab.nodes.iter().map(|_| None).collect(),
        })
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// True if the lab has no nodes.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// The VIPs every speaker announces.
    pub fn vips(&self) -> &[IpAddr] {
        &self.vips
    }

    /// The lab node at position `i`.
    pub fn node(&self, i: usize) -> Result<&'a Node> {
        self.lab
            .nodes
            .get(i)
            .ok_or_else(|| Error::InvalidConfig(format!("lab has no node at position {i}")))
    }

    /// The speaker's node name: `node1` for position 0.
    pub fn name(&self, i: usize) -> String {
        self.node(i)
            .map(|n| format!("node{}", n.index))
            .unwrap_or_else(|_| format!("node?{i}"))
    }

    /// Where speaker `i` writes its status.
    fn status_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("status-{}.json", self.name(i)))
    }

    /// The config file of speaker `i` (the schema of lb-speaker/src/config.rs).
    fn config_yaml(&self, i: usize) -> Result<String> {
        let node = self.node(i)?;
        let peers: Vec<String> = self
            .lab
            .nodes
            .iter()
            .filter(|n| n.index != node.index)
            .map(|n| format!("\"{}:{PORT}\"", n.ip))
            .collect();
        Ok(fleet_yaml(
            &self.name(i),
            node.ip,
            &peers,
            &self.vips,
            self.options,
            &self.status_path(i),
        ))
    }

    /// Starts speaker `i` without waiting for it. Its old status file is
    /// removed first: a killed speaker's last one still lists what it held,
    /// and the new one must not be read before it has written its own.
    fn spawn(&mut self, i: usize) -> Result<()> {
        self.spawn_wrapped(i, &[])
    }

    /// Like [`Self::spawn`], with `wrapper` before the speaker's own argv
    /// (e.g. `env DONT_FAKE_MONOTONIC=1 faketime -f -1h`).
    fn spawn_wrapped(&mut self, i: usize, wrapper: &[&str]) -> Result<()> {
        if self.is_running(i) {
            return Err(Error::InvalidConfig(format!(
                "the speaker on {} is already running",
                self.name(i)
            )));
        }
        let yaml = self.config_yaml(i)?;
        let name = self.name(i);
        let config = self.dir.write(&format!("{name}.yaml"), &yaml)?;
        self.parsed[i] = None;
        match std::fs::remove_file(self.status_path(i)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove an old status file", e)),
        }
        let bin = self.bin.to_string_lossy().into_owned();
        let config = config.to_string_lossy().into_owned();
        let mut argv: Vec<&str> = wrapper.to_vec();
        argv.extend_from_slice(&[bin.as_str(), "static", "--config", config.as_str()]);
        let h = self.node(i)?.ns.spawn(&argv)?;
        self.procs[i] = Some(h);
        Ok(())
    }

    /// Waits until speaker `i` logged that it is ready (its sockets are
    /// bound and leftovers removed); fails early if it exits.
    fn wait_ready(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let name = self.name(i);
        self.procs
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or_else(|| Error::InvalidConfig(format!("no speaker on {name}")))?
            .wait_for_log("speaker ready", timeout)
    }

    /// Starts speaker `i` and waits until it is ready.
    pub fn start(&mut self, i: usize, timeout: Duration) -> Result<()> {
        self.spawn(i)?;
        self.wait_ready(i, timeout)
    }

    /// Starts speaker `i` under `wrapper` (see [`Self::spawn_wrapped`]) and
    /// waits until it is ready.
    pub fn start_wrapped(&mut self, i: usize, wrapper: &[&str], timeout: Duration) -> Result<()> {
        self.spawn_wrapped(i, wrapper)?;
        self.wait_ready(i, timeout)
    }

    /// Replaces the VIP list in every speaker's config file and sends each
    /// running speaker SIGHUP, one right after the other (a fleet-wide
    /// config push).
    pub fn reload_vips(&mut self, vips: Vec<IpAddr>) -> Result<()> {
        if vips.is_empty() {
            return Err(Error::InvalidConfig("a speaker fleet needs VIPs".into()));
        }
        self.vips = vips;
        for i in 0..self.len() {
            let yaml = self.config_yaml(i)?;
            self.dir.write(&format!("{}.yaml", self.name(i)), &yaml)?;
        }
        for h in self.procs.iter_mut().flatten() {
            h.kill(Signal::SIGHUP)?;
        }
        Ok(())
    }

    /// Starts every speaker at once, then waits for each to be ready.
    pub fn start_all(&mut self, timeout: Duration) -> Result<()> {
        for i in 0..self.len() {
            self.spawn(i)?;
        }
        for i in 0..self.len() {
            self.wait_ready(i, timeout)?;
        }
        Ok(())
    }

    /// True while speaker `i` runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.procs
            .get_mut(i)
            .and_then(Option::as_mut)
            .is_some_and(ProcHandle::is_running)
    }

    /// The PID of speaker `i` while it runs.
    pub fn pid(&mut self, i: usize) -> Option<u32> {
        let h = self.procs.get_mut(i)?.as_mut()?;
        h.is_running().then(|| h.pid())
    }

    fn signal_and_wait(&mut self, i: usize, sig: Signal, timeout: Duration) -> Result<ExitStatus> {
        let name = self.name(i);
        let h = self
            .procs
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or_else(|| Error::InvalidConfig(format!("no speaker on {name}")))?;
        h.kill(sig)?;
        h.wait_timeout(timeout).ok_or_else(|| Error::Timeout {
            what: format!("the speaker on {name} to exit after {sig}"),
            timeout,
        })
    }

    /// SIGKILLs speaker `i` (a crash: no goodbye, its VIPs stay on the
    /// node's `lo`) and waits for it to be gone.
    pub fn crash(&mut self, i: usize) -> Result<()> {
        self.signal_and_wait(i, Signal::SIGKILL, Duration::from_secs(5))
            .map(drop)
    }

    /// SIGTERMs speaker `i` (a graceful, make-before-break leave) and
    /// waits up to `timeout` for it to exit; returns how it exited.
    pub fn terminate(&mut self, i: usize, timeout: Duration) -> Result<ExitStatus> {
        self.signal_and_wait(i, Signal::SIGTERM, timeout)
    }

    /// Pulls (`up == false`) or plugs back node `i`'s cable: its uplink
    /// port goes down or up, and with it the carrier of its bridge.
    pub fn set_uplink(&self, i: usize, up: bool) -> Result<()> {
        let n = self.node(i)?;
        let state = if up { "up" } else { "down" };
        n.ns.exec_ok(&["ip", "link", "set", n.uplink, state])
            .map(drop)
    }

    /// What speaker `i` last wrote to its status file.
    pub fn status(&self, i: usize) -> Result<SpeakerStatus> {
        let p = self.status_path(i);
        let bytes = std::fs::read(&p).map_err(|e| Error::io(format!("read {}", p.display()), e))?;
        SpeakerStatus::parse(&bytes)
    }

    /// The status of every running speaker, by node name; a running
    /// speaker without a readable status file maps to its error. A file
    /// that was not rewritten since the last call is not parsed again:
    /// the speaker replaces it (rename) at least every second, and a
    /// 1,000-VIP document costs milliseconds to parse in a debug build,
    /// CPU the speakers under test need.
    pub fn statuses(&mut self) -> BTreeMap<String, Result<SpeakerStatus>> {
        let mut out = BTreeMap::new();
        for i in 0..self.len() {
            if !self.is_running(i) {
                continue;
            }
            let path = self.status_path(i);
            let stamp = std::fs::metadata(&path).ok().map(|m| FileStamp::of(&m));
            let cached = match (&stamp, &self.parsed[i]) {
                (Some(now), Some((then, st))) if now == then => Some(st.clone()),
                _ => None,
            };
            let st = match cached {
                Some(st) => Ok(st),
                None => self.status(i),
            };
            self.parsed[i] = match (&st, stamp) {
                (Ok(st), Some(stamp)) => Some((stamp, st.clone())),
                _ => None,
            };
            out.insert(self.name(i), st);
        }
        out
    }

    /// The positions of the running speakers whose status file says they
    /// announce `vip`.
    pub fn announcers(&mut self, vip: IpAddr) -> Vec<usize> {
        let running: Vec<usize> = (0..self.len()).filter(|i| self.is_running(*i)).collect();
        running
            .into_iter()
            .filter(|i| {
                self.status(*i)
                    .ok()
                    .and_then(|st| st.vips.get(&vip).cloned())
                    .is_some_and(|v| v.state == "announcing")
            })
            .collect()
    }

    /// Waits until exactly one running speaker announces `vip`; returns
    /// its position.
    pub fn wait_owner(&mut self, vip: IpAddr, timeout: Duration) -> Result<usize> {
        let fleet = std::cell::RefCell::new(self);
        crate::speaker::wait_single_owner(
            vip,
            timeout,
            || fleet.borrow_mut().announcers(vip),
            || fleet.borrow().log_tails(8),
        )
    }

    /// Everything speaker `i` logged (empty if it never ran).
    pub fn log(&self, i: usize) -> String {
        self.procs
            .get(i)
            .and_then(Option::as_ref)
            .map(ProcHandle::log)
            .unwrap_or_default()
    }

    /// The last `lines` lines of every speaker's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut s = String::new();
        for i in 0..self.procs.len() {
            let log = self.log(i);
            let all: Vec<&str> = log.lines().collect();
            let _ = writeln!(s, "--- {} speaker log (tail) ---", self.name(i));
            for l in &all[all.len().saturating_sub(lines)..] {
                let _ = writeln!(s, "    {l}");
            }
        }
        s
    }

    /// Stops every speaker still running: SIGTERM (a graceful leave), then
    /// the handles' drop SIGKILLs what did not exit in time and reaps it.
    pub fn stop_all(&mut self, timeout: Duration) {
        for h in self.procs.iter_mut().flatten() {
            let _ = h.kill(Signal::SIGTERM);
        }
        for h in self.procs.iter_mut().flatten() {
            let _ = h.wait_timeout(timeout);
        }
        self.procs.iter_mut().for_each(|p| *p = None);
    }
}

impl Drop for SpeakerFleet<'_> {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(5));
    }
}

/// The static-mode config of one fleet speaker.
fn fleet_yaml(
    name: &str,
    ip: std::net::Ipv4Addr,
    peers: &[String],
    vips: &[IpAddr],
    options: FleetOptions,
    status: &Path,
) -> String {
    let mut y = format!(
        "node: {{ name: {name}, address: {ip} }}\n\
         listen: \"0.0.0.0:{PORT}\"\n\
         peers: [{peers}]\n\
         secret: \"{SECRET}\"\n\
         heartbeatInterval: {hb}ms\n\
         deadAfter: {dead}\n\
         assign: {assign}\n\
         statusFile: \"{status}\"\n\
         stateDir: \"{state}\"\n\
         vips:\n",
        peers = peers.join(", "),
        hb = options.heartbeat_ms,
        dead = options.dead_after,
        assign = options.assign,
        status = status.display(),
        // The sysctl record stays in the fleet's scratch directory, not
        // in the host's /run.
        state = status.with_extension("state").display(),
    );
    for v in vips {
        let _ = writeln!(y, "  - address: \"{v}\"");
    }
    y
}

/// Resident set size of a process in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Number of open file descriptors of a process.
pub fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(Iterator::count)
}

/// The addresses on `dev` in `ns` (`ip -j addr show dev DEV`), without
/// loopback addresses (127/8, ::1).
pub fn addresses(ns: &Netns, dev: &str) -> Result<BTreeSet<IpAddr>> {
    let out = ns.exec_ok(&["ip", "-j", "addr", "show", "dev", dev])?;
    parse_addresses(&out.stdout)
}

fn parse_addresses(json: &[u8]) -> Result<BTreeSet<IpAddr>> {
    let v: Value = serde_json::from_slice(json).map_err(|source| Error::Json {
        what: "parse `ip -j addr` output".to_owned(),
        source,
    })?;
    let mut out = BTreeSet::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let Some(ip) = a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) else {
                continue;
            };
            if !ip.is_loopback() {
                out.insert(ip);
            }
        }
    }
    Ok(out)
}

/// What one `arping` run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpingReplies {
    /// The distinct responder MACs, lower case.
    pub macs: Vec<String>,
    /// How many replies came back.
    pub replies: usize,
    /// How long arping ran.
    pub elapsed: Duration,
}

/// `arping -b OPTIONS -I DEV IP` from `ns`: `-b` keeps broadcasting, so
/// every responder is asked each time (two responders both answer the
/// first probe). `options` picks the pace, e.g. `["-c", "2", "-w", "3"]`
/// (two probes a second apart, about 2 s) or `["-f", "-w", "10"]` (until
/// the first reply, at most 10 s). An arping that did not get to send
/// (bad option, no such device) is an error, not "no replies".
pub fn arping(ns: &Netns, dev: &str, ip: IpAddr, options: &[&str]) -> Result<ArpingReplies> {
    let ip = ip.to_string();
    let mut argv = vec!["arping", "-b"];
    argv.extend_from_slice(options);
    argv.extend_from_slice(&["-I", dev, ip.as_str()]);
    let started = std::time::Instant::now();
    let out = ns.exec_timeout(&argv, Duration::from_secs(30))?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains("Sent ") {
        return Err(Error::CommandFailed {
            cmd: argv.join(" "),
            status: out.status.to_string(),
            stdout: stdout.into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let (macs, replies) = parse_arping(&stdout);
    Ok(ArpingReplies {
        macs,
        replies,
        elapsed,
    })
}

fn parse_arping(out: &str) -> (Vec<String>, usize) {
    let replies: Vec<String> = out
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| l.split(['[', ']']).nth(1))
        .map(str::to_ascii_lowercase)
        .collect();
    let n = replies.len();
    let mut macs = replies;
    macs.sort();
    macs.dedup();
    (macs, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
      "node": "node1", "updated_unix_ms": 1700000000000,
      "members": ["node2", "node3"], "leaving": false,
      "vips": [
        {"vip": "10.77.1.1", "owner": "node1", "state": "announcing", "interface": "br0",
         "mac": "0A:58:C0:A8:02:0B", "last_garp_unix_ms": 1, "conflict": null, "foreign": null},
        {"vip": "10.77.1.2", "owner": "node2", "state": "standby", "interface": "br0",
         "mac": null, "last_garp_unix_ms": null, "conflict": null, "foreign": null},
        {"vip": "10.77.1.3", "owner": "node3", "state": "releasing", "interface": "br0",
         "mac": "0a:58:c0:a8:02:0b", "last_garp_unix_ms": 1, "conflict": null, "foreign": null},
        {"vip": "10.77.1.4", "owner": null, "state": "standby", "interface": null,
         "mac": null, "last_garp_unix_ms": null, "conflict": null, "foreign": null}
      ]}"#;

    #[test]
    fn parses_a_status_document() {
        let s = SpeakerStatus::parse(DOC.as_bytes()).unwrap();
        assert_eq!(s.node, "node1");
        assert_eq!(s.updated_unix_ms, 1_700_000_000_000);
        assert_eq!(
            s.members.iter().map(String::as_str).collect::<Vec<_>>(),
            ["node2", "node3"]
        );
        assert!(!s.leaving);
        assert_eq!(s.vips.len(), 4);
        let v1: IpAddr = "10.77.1.1".parse().unwrap();
        assert_eq!(s.vips[&v1].mac.as_deref(), Some("0a:58:c0:a8:02:0b"));
        assert_eq!(s.vips[&v1].owner.as_deref(), Some("node1"));
        let held: Vec<String> = s.held().iter().map(ToString::to_string).collect();
        assert_eq!(held, ["10.77.1.1", "10.77.1.3"]);
        let v4: IpAddr = "10.77.1.4".parse().unwrap();
        assert_eq!(s.vips[&v4].owner, None);
    }

    #[test]
    fn a_changed_schema_fails_loudly() {
        for (from, to) in [
            ("\"members\"", "\"peers\""),
            ("\"state\": \"standby\"", "\"phase\": \"standby\""),
            ("\"updated_unix_ms\"", "\"updated\""),
            ("\"owner\": \"node2\"", "\"owner\": 2"),
            ("\"vip\": \"10.77.1.2\"", "\"vip\": \"10.77.1.1\""),
        ] {
            let doc = DOC.replacen(from, to, 1);
            assert_ne!(doc, DOC);
            assert!(SpeakerStatus::parse(doc.as_bytes()).is_err(), "{from}");
        }
        assert!(SpeakerStatus::parse(b"{\"node\": \"n\"").is_err());
    }

    #[test]
    fn fleet_config_lists_peers_vips_and_status() {
        let vips: Vec<IpAddr> = vec!["10.77.1.1".parse().unwrap(), "10.77.1.2".parse().unwrap()];
        let y = fleet_yaml(
            "node1",
            "192.168.2.11".parse().unwrap(),
            &[
                "\"192.168.2.12:7946\"".into(),
                "\"192.168.2.13:7946\"".into(),
            ],
            &vips,
            FleetOptions::default(),
            Path::new("/tmp/s.json"),
        );
        assert!(y.contains("name: node1, address: 192.168.2.11"), "{y}");
        assert!(
            y.contains("peers: [\"192.168.2.12:7946\", \"192.168.2.13:7946\"]"),
            "{y}"
        );
        assert!(
            y.ends_with("vips:\n  - address: \"10.77.1.1\"\n  - address: \"10.77.1.2\"\n"),
            "{y}"
        );
        assert!(y.contains("statusFile: \"/tmp/s.json\""), "{y}");
        assert!(
            y.contains("heartbeatInterval: 100ms\ndeadAfter: 3\nassign: true\n"),
            "{y}"
        );
    }

    #[test]
    fn parses_ip_addr_json_and_arping_output() {
        let j = br#"[{"ifindex":1,"ifname":"lo","addr_info":[
            {"family":"inet","local":"127.0.0.1","prefixlen":8},
            {"family":"inet","local":"10.77.1.1","prefixlen":32},
            {"family":"inet6","local":"::1","prefixlen":128}]}]"#;
        let a = parse_addresses(j).unwrap();
        assert_eq!(
            a.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.77.1.1"]
        );
        assert!(parse_addresses(b"not json").is_err());

        let out = "ARPING 10.77.1.1 from 10.77.0.60 eth0\n\
                   Unicast reply from 10.77.1.1 [0A:58:C0:A8:02:0B]  0.6ms\n\
                   Unicast reply from 10.77.1.1 [0a:58:c0:a8:02:0b]  0.5ms\n\
                   Sent 2 probes (2 broadcast(s))\nReceived 2 response(s)\n";
        assert_eq!(parse_arping(out), (vec!["0a:58:c0:a8:02:0b".to_owned()], 2));
        let two = format!("{out}Unicast reply from 10.77.1.1 [AA:BB:CC:DD:EE:FF]  1ms\n");
        assert_eq!(parse_arping(&two).0.len(), 2);
        assert_eq!(parse_arping("Sent 2 probes\nReceived 0 response(s)\n").1, 0);
    }

    #[test]
    fn reads_own_rss_and_fds() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        assert!(fd_count(me).is_some_and(|n| n >= 3));
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
