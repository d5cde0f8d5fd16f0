//! `flatlan-speaker static` processes on a [`Segment`], driven through the
//! binary only (config file, status file, signals): the lab of the
//! speaker's privileged tests (lb-speaker/tests/common wraps it with
//! panics) and of its bench (`flatlan-lab speaker-bench`).
//!
//! ```no_run
//! use std::time::Duration;
//! use netns_testkit::speaker::SpeakerLab;
//!
//! # fn main() -> netns_testkit::Result<()> {
//! let mut lab = SpeakerLab::new("target/debug/flatlan-speaker".as_ref(), 2)?;
//! lab.start(0, &["10.77.0.100"], "")?;
//! lab.start(1, &["10.77.0.100"], "")?;
//! let owner = lab.wait_owner("10.77.0.100".parse().unwrap(), Duration::from_secs(5))?;
//! # drop(owner);
//! # Ok(()) }
//! ```
//!
//! Unlike [`crate::speaker_fleet::SpeakerFleet`] (one VIP list for the
//! home-LAN lab's nodes), each speaker here gets its own VIPs and any
//! extra config lines.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::process::{deadline_after, ProcHandle};
use crate::scratch::ScratchDir;
use crate::segment::{host_ip, second_nic, Segment};
use crate::speaker_fleet::SpeakerStatus;

/// The heartbeat key the lab's speakers share (>= 16 bytes).
pub const SPEAKER_SECRET: &str = "lab-secret-0123456789";

/// Waits until `announcers` names exactly one speaker for `vip`; returns
/// its position. On timeout the error carries `logs()`.
pub fn wait_single_owner(
    vip: IpAddr,
    timeout: Duration,
    mut announcers: impl FnMut() -> Vec<usize>,
    logs: impl Fn() -> String,
) -> Result<usize> {
    let deadline = deadline_after(timeout);
    loop {
        let owners = announcers();
        if let [one] = owners.as_slice() {
            return Ok(*one);
        }
        if Instant::now() >= deadline {
            return Err(Error::Probe {
                what: format!("waiting for one owner of {vip}"),
                detail: format!("owners after {timeout:?}: {owners:?}; logs:\n{}", logs()),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One running (or exited) `flatlan-speaker static`. Dropping it SIGKILLs
/// and reaps it: a graceful leave would spend the teardown handing VIPs to
/// peers that are about to go too.
pub struct StaticSpeaker {
    proc: ProcHandle,
    /// Set once [`StaticSpeaker::wait`] has seen it exit: from then on it
    /// is no owner, whatever its last status file says.
    exited: Option<ExitStatus>,
    config: PathBuf,
    status: PathBuf,
}

impl StaticSpeaker {
    /// Starts `bin static --config CONFIG` in `ns`. A status file left at
    /// `status` by an earlier speaker is removed first: a killed speaker's
    /// last one still says "announcing".
    pub fn spawn(ns: &Netns, bin: &Path, config: PathBuf, status: PathBuf) -> Result<Self> {
        match std::fs::remove_file(&status) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove an old status file", e)),
        }
        let bin = bin.to_string_lossy().into_owned();
        let cfg = config.to_string_lossy().into_owned();
        let proc = ns.spawn(&[bin.as_str(), "static", "--config", cfg.as_str()])?;
        Ok(StaticSpeaker {
            proc,
            exited: None,
            config,
            status,
        })
    }

    /// Its config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Sends `sig` (by PID, while it is ours to signal).
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        self.proc.kill(sig)
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let st = self.proc.wait_timeout(timeout);
        if st.is_some() {
            self.exited = st;
        }
        st
    }

    /// True until [`StaticSpeaker::wait`] has seen it exit.
    pub fn running(&self) -> bool {
        self.exited.is_none()
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Its last status file, if there is one and it parses.
    pub fn status(&self) -> Option<SpeakerStatus> {
        SpeakerStatus::parse(&std::fs::read(&self.status).ok()?).ok()
    }

    /// The state its status file gives `vip` (`announcing`, `standby`...).
    pub fn vip_state(&self, vip: IpAddr) -> Option<String> {
        self.status()?.vips.get(&vip).map(|v| v.state.clone())
    }

    /// True if it runs and announces `vip`.
    pub fn announces(&self, vip: IpAddr) -> bool {
        self.running() && self.vip_state(vip).as_deref() == Some("announcing")
    }
}

impl Drop for StaticSpeaker {
    fn drop(&mut self) {
        let _ = self.proc.kill(Signal::SIGKILL);
        let _ = self.proc.wait_timeout(Duration::from_secs(5));
    }
}

/// A [`Segment`] with a speaker slot per host. `speakers` is the first
/// field, so they are gone before the namespaces (a namespace with a
/// process in it outlives its name).
pub struct SpeakerLab {
    pub speakers: Vec<Option<StaticSpeaker>>,
    pub client: Netns,
    pub nodes: Vec<Netns>,
    pub switch: Netns,
    bin: PathBuf,
    dir: ScratchDir,
    /// The timer lines of every config (see [`SpeakerLab::set_timers`]).
    timers: String,
}

/// The timers the tests run with unless told otherwise: fixed, so a change
/// of the daemon's defaults does not move every test's timing.
const LAB_TIMERS: &str = "heartbeatInterval: 100ms\ndeadAfter: 3\n";

impl SpeakerLab {
    /// A segment with `nodes` hosts and no speaker running yet. Needs
    /// root: fails (never skips) without it.
    pub fn new(bin: &Path, nodes: usize) -> Result<SpeakerLab> {
        let seg = Segment::new(nodes)?;
        let dir = ScratchDir::new(&format!("{}-speakers", seg.switch.name()))?;
        Ok(SpeakerLab {
            speakers: (0..nodes).map(|_| None).collect(),
            client: seg.client,
            nodes: seg.nodes,
            switch: seg.switch,
            bin: bin.to_path_buf(),
            dir,
            timers: LAB_TIMERS.into(),
        })
    }

    /// Replaces the timer lines of the configs written from now on (YAML
    /// lines, each ending in a newline); `""` runs the daemon's defaults,
    /// as the bench does.
    pub fn set_timers(&mut self, yaml: &str) {
        self.timers = yaml.to_owned();
    }

    /// Speaker `i`'s node name: `node-0`, `node-1`, ...
    pub fn node_name(i: usize) -> String {
        format!("node-{i}")
    }

    /// Gives node `i` a second NIC on the segment ([`Segment::add_second_nic`]).
    pub fn add_second_nic(
        &self,
        i: usize,
        ip4: std::net::Ipv4Addr,
        ip6: std::net::Ipv6Addr,
    ) -> Result<String> {
        second_nic(&self.switch, &self.nodes, i, ip4, ip6)
    }

    fn file(&self, what: &str, i: usize, ext: &str) -> PathBuf {
        self.dir.path().join(format!("{what}-{i}{ext}"))
    }

    /// Node `i`'s config: every other node a unicast peer, 100 ms
    /// heartbeats, dead after 3 (or the timers [`Self::set_timers`] gave),
    /// its status file and state directory in the lab's scratch directory,
    /// then `extra` lines.
    pub fn config_text(&self, i: usize, vips: &[&str], extra: &str) -> String {
        let peers: Vec<String> = (0..self.nodes.len())
            .filter(|j| *j != i)
            .map(|j| format!("\"{}:7946\"", host_ip(j)))
            .collect();
        let mut vip_lines = String::new();
        for v in vips {
            let _ = writeln!(vip_lines, "  - address: \"{v}\"");
        }
        format!(
            "node: {{ name: {}, address: {} }}\nlisten: \"0.0.0.0:7946\"\npeers: [{}]\n\
             secret: \"{SPEAKER_SECRET}\"\nvips:\n{vip_lines}statusFile: {}\n\
             {}stateDir: {}\n{extra}",
            Self::node_name(i),
            host_ip(i),
            peers.join(", "),
            self.file("status", i, ".json").display(),
            self.timers,
            self.file("state", i, "").display(),
        )
    }

    /// Starts (or restarts) node `i`'s speaker with [`Self::config_text`].
    pub fn start(&mut self, i: usize, vips: &[&str], extra: &str) -> Result<()> {
        let text = self.config_text(i, vips, extra);
        self.start_text(i, &text)
    }

    /// Starts (or restarts) node `i`'s speaker with a config file of
    /// exactly `text`.
    pub fn start_text(&mut self, i: usize, text: &str) -> Result<()> {
        let config = self.write_config(i, text)?;
        let node = self
            .nodes
            .get(i)
            .ok_or_else(|| Error::InvalidConfig(format!("the lab has no node {i}")))?;
        // The old one (if any) goes first: it holds the same port.
        self.speakers[i] = None;
        let sp = StaticSpeaker::spawn(node, &self.bin, config, self.file("status", i, ".json"))?;
        self.speakers[i] = Some(sp);
        Ok(())
    }

    fn write_config(&self, i: usize, text: &str) -> Result<PathBuf> {
        self.dir.write(&format!("config-{i}.yaml"), text)
    }

    /// Rewrites node `i`'s config with `vips` and sends SIGHUP; returns
    /// once the signal is sent.
    pub fn reconfigure(&mut self, i: usize, vips: &[&str], extra: &str) -> Result<()> {
        let text = self.config_text(i, vips, extra);
        self.write_config(i, &text)?;
        self.speaker(i)?.signal(Signal::SIGHUP)
    }

    /// Node `i`'s speaker.
    pub fn speaker(&mut self, i: usize) -> Result<&mut StaticSpeaker> {
        self.speakers
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or_else(|| Error::InvalidConfig(format!("no speaker on node {i}")))
    }

    /// Every speaker's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.speakers.iter().enumerate() {
            if let Some(s) = s {
                let _ = writeln!(out, "----- node {i} -----\n{}", s.log());
            }
        }
        out
    }

    /// Waits until exactly one running speaker announces `vip`; returns
    /// its node.
    pub fn wait_owner(&self, vip: IpAddr, timeout: Duration) -> Result<usize> {
        let announcers = || {
            self.speakers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.as_ref().is_some_and(|s| s.announces(vip)))
                .map(|(i, _)| i)
                .collect()
        };
        wait_single_owner(vip, timeout, announcers, || self.logs())
    }
}
