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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::lab::{Lab, Node};
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

mod probe;
mod status;

pub use probe::{addresses, arping, fd_count, rss_kib, ArpingReplies};
pub use status::{SpeakerStatus, VipView};

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

#[cfg(test)]
mod tests;
