//! `flatlan-speaker kubernetes` processes on a [`Segment`], their API a
//! [`FakeApi`] in the segment's client namespace (reached over the lab's
//! LAN at [`SEGMENT_CLIENT_IP`]): issue 13's API-outage scenario with the
//! real binary. Each speaker runs without allocator and node agent (the
//! fake's Services already carry their `status.loadBalancer.ingress`), with
//! unicast peers and a fixed secret, and writes a status file the test
//! reads.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::fake_api::FakeApi;
use crate::netns::Netns;
use crate::process::ProcHandle;
use crate::scratch::ScratchDir;
use crate::segment::{host_ip, Segment, SEGMENT_CLIENT_IP};
use crate::speaker::SPEAKER_SECRET;
use crate::speaker_fleet::SpeakerStatus;

/// One running `flatlan-speaker kubernetes`; SIGKILLed and reaped on drop.
pub struct KubeSpeaker {
    proc: ProcHandle,
    status: PathBuf,
    killed: bool,
}

impl KubeSpeaker {
    /// Its last status file, if there is one and it parses.
    pub fn status(&self) -> Option<SpeakerStatus> {
        SpeakerStatus::parse(&std::fs::read(&self.status).ok()?).ok()
    }

    /// True while it runs and its status says it announces `vip`.
    pub fn announces(&self, vip: IpAddr) -> bool {
        !self.killed
            && self
                .status()
                .and_then(|s| s.vips.get(&vip).map(|v| v.state == "announcing"))
                .unwrap_or(false)
    }

    /// SIGKILL, as a crashed node.
    pub fn crash(&mut self) -> Result<()> {
        self.killed = true;
        self.proc.kill(Signal::SIGKILL)?;
        let _ = self.proc.wait_timeout(Duration::from_secs(5));
        Ok(())
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }
}

impl Drop for KubeSpeaker {
    fn drop(&mut self) {
        let _ = self.proc.kill(Signal::SIGKILL);
        let _ = self.proc.wait_timeout(Duration::from_secs(5));
    }
}

/// The lab. Fields drop in order: speakers, the fake, then the namespaces.
pub struct KubeLab {
    pub speakers: Vec<Option<KubeSpeaker>>,
    pub api: FakeApi,
    pub client: Netns,
    pub nodes: Vec<Netns>,
    pub switch: Netns,
    bin: PathBuf,
    dir: ScratchDir,
}

impl KubeLab {
    /// A segment with `nodes` hosts and the fake API; no speaker yet.
    /// Needs root: fails (never skips) without it.
    pub fn new(bin: &Path, nodes: usize) -> Result<KubeLab> {
        let seg = Segment::new(nodes)?;
        let dir = ScratchDir::new(&format!("{}-kube", seg.switch.name()))?;
        let api = FakeApi::start_in(&seg.client, SEGMENT_CLIENT_IP.into())?;
        dir.write("kubeconfig", &api.kubeconfig())?;
        Ok(KubeLab {
            speakers: (0..nodes).map(|_| None).collect(),
            api,
            client: seg.client,
            nodes: seg.nodes,
            switch: seg.switch,
            bin: bin.to_path_buf(),
            dir,
        })
    }

    /// The kubeconfig that points at the fake.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Node `i`'s name, as its Node object and `--node` say.
    pub fn node_name(i: usize) -> String {
        format!("node-{i}")
    }

    /// Starts node `i`'s speaker (`timers`: YAML lines such as
    /// `heartbeatInterval: 100ms\n`).
    pub fn start(&mut self, i: usize, timers: &str) -> Result<()> {
        let node = self
            .nodes
            .get(i)
            .ok_or_else(|| Error::InvalidConfig(format!("the lab has no node {i}")))?;
        let peers: Vec<String> = (0..self.nodes.len())
            .filter(|j| *j != i)
            .map(|j| format!("\"{}:7946\"", host_ip(j)))
            .collect();
        let status = self.dir.path().join(format!("status-{i}.json"));
        let _ = std::fs::remove_file(&status);
        let mut text = String::new();
        let _ = write!(
            text,
            "listen: \"0.0.0.0:7946\"\npeers: [{}]\nsecret: \"{SPEAKER_SECRET}\"\n\
             statusFile: {}\nstateDir: {}\n{timers}",
            peers.join(", "),
            status.display(),
            self.dir.path().join(format!("state-{i}")).display(),
        );
        let config = self.dir.write(&format!("config-{i}.yaml"), &text)?;
        let kubeconfig = format!(
            "KUBECONFIG={}",
            self.dir.path().join("kubeconfig").display()
        );
        let bin = self.bin.to_string_lossy().into_owned();
        let name = Self::node_name(i);
        let addr = host_ip(i).to_string();
        let cfg = config.to_string_lossy().into_owned();
        self.speakers[i] = None;
        let proc = node.spawn(&[
            "env",
            &kubeconfig,
            &bin,
            "kubernetes",
            "--config",
            &cfg,
            "--node",
            &name,
            "--node-address",
            &addr,
            "--range-file",
            "none",
            "--no-allocator",
        ])?;
        self.speakers[i] = Some(KubeSpeaker {
            proc,
            status,
            killed: false,
        });
        Ok(())
    }

    /// Node `i`'s speaker.
    pub fn speaker(&mut self, i: usize) -> Result<&mut KubeSpeaker> {
        self.speakers
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or_else(|| Error::InvalidConfig(format!("no speaker on node {i}")))
    }

    /// The running speakers that announce `vip`.
    pub fn announcers(&self, vip: IpAddr) -> Vec<usize> {
        self.speakers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.announces(vip)))
            .map(|(i, _)| i)
            .collect()
    }

    /// Every speaker's log and the fake's request count, for failures.
    pub fn logs(&self) -> String {
        let mut out = format!("fake API: {} requests\n", self.api.seen().len());
        for (i, s) in self.speakers.iter().enumerate() {
            if let Some(s) = s {
                let _ = writeln!(out, "----- node {i} -----\n{}", s.log());
            }
        }
        out
    }
}
