//! The bench's own small L2 lab: a switch namespace with a bridge, N node
//! namespaces and a client namespace, each with an `eth0` veth into the
//! switch. The privileged tests' lab (tests/common) does the same with
//! panics; this one returns errors, because it runs from the shipped
//! binary.
//!
//! Names are `spkb<pid>x<n>-<role>`, unique per process. Nothing touches
//! the host namespace: every veth is created inside the switch namespace
//! and moved straight into its node. Dropping the lab kills its speakers
//! by PID first (a namespace with a process in it outlives its name), then
//! deletes the namespaces and the scratch directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};

pub(super) const VIP4: &str = "10.77.0.100";
pub(super) const CLIENT_IP: &str = "10.77.0.2";
const SECRET: &str = "bench-secret-0123456789";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn bench_err(what: impl Into<String>) -> Error {
    Error::Bench(what.into())
}

fn run_cmd(argv: &[&str]) -> Result<Output> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| bench_err("empty command"))?;
    Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| Error::sys(argv.join(" "), e))
}

fn must(argv: &[&str]) -> Result<String> {
    let out = run_cmd(argv)?;
    if !out.status.success() {
        return Err(bench_err(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn node_ip(i: usize) -> String {
    format!("10.77.0.{}", 11 + i)
}

/// A named network namespace, deleted on drop.
pub(super) struct Ns {
    pub(super) name: String,
}

impl Ns {
    fn new(name: String) -> Result<Ns> {
        must(&["ip", "netns", "add", &name])?;
        // The handle exists from here on, so an error below still deletes it.
        let ns = Ns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn argv<'a>(&'a self, argv: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", self.name.as_str()];
        v.extend_from_slice(argv);
        v
    }

    /// Runs `argv` in the namespace; a non-zero exit is an error.
    pub(super) fn ok(&self, argv: &[&str]) -> Result<String> {
        must(&self.argv(argv))
    }

    /// A background command in the namespace with stdout piped.
    pub(super) fn spawn_piped(&self, argv: &[&str]) -> Result<Child> {
        let v = self.argv(argv);
        Command::new(v[0])
            .args(&v[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::sys(v.join(" "), e))
    }

    fn spawn_logged(&self, argv: &[&str], log: &Path) -> Result<Child> {
        let file = |p: &Path| {
            fs::File::create(p).map_err(|e| Error::File {
                path: p.display().to_string(),
                source: e,
            })
        };
        let out = file(log)?;
        let err = out.try_clone().map_err(|e| Error::sys("dup log", e))?;
        let v = self.argv(argv);
        Command::new(v[0])
            .args(&v[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::sys(v.join(" "), e))
    }

    /// Runs `f` on a fresh thread that has entered this namespace; the
    /// thread is never reused, so the namespace switch cannot leak into
    /// unrelated work.
    pub(super) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> thread::JoinHandle<Result<T>> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let fd = fs::File::open(&path).map_err(|e| Error::File {
                path: path.clone(),
                source: e,
            })?;
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::sys(format!("setns {path}"), e.into()))?;
            f()
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run_cmd(&["ip", "netns", "del", &self.name]);
    }
}

/// Joins a namespace thread, turning a panic into an error.
pub(super) fn join<T>(h: thread::JoinHandle<Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| bench_err("namespace thread panicked"))?
}

/// A running speaker; killed by PID and reaped on drop.
pub(super) struct Speaker {
    child: Option<Child>,
    log: PathBuf,
    status: PathBuf,
}

impl Speaker {
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(super) fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let Some(c) = &self.child else { return Ok(()) };
        let pid = i32::try_from(c.id()).map_err(|_| bench_err("pid out of range"))?;
        // The child is not reaped yet (we hold it), so the PID is ours.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .map_err(|e| Error::sys(format!("kill {pid}"), e.into()))
    }

    pub(super) fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            } else {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    pub(super) fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(super) fn status(&self) -> Option<Value> {
        let b = fs::read(&self.status).ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn vip_state(&self, vip: &str) -> Option<String> {
        self.status()?["vips"]
            .as_array()?
            .iter()
            .find(|v| v["vip"] == vip)
            .and_then(|v| v["state"].as_str().map(str::to_owned))
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

/// The lab. `speakers` come first so they are gone before the namespaces.
pub(super) struct Lab {
    speakers: Vec<Option<Speaker>>,
    bin: PathBuf,
    dir: PathBuf,
    pub(super) client: Ns,
    pub(super) nodes: Vec<Ns>,
    _switch: Ns,
}

impl Lab {
    pub(super) fn new(bin: &Path, nodes: usize) -> Result<Lab> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("spkb{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("flatlan-speaker-{prefix}"));
        fs::create_dir_all(&dir).map_err(|e| Error::File {
            path: dir.display().to_string(),
            source: e,
        })?;
        let switch = Ns::new(format!("{prefix}-sw"))?;
        switch.ok(&["ip", "link", "add", "br0", "type", "bridge"])?;
        // No multicast snooping, like a typical home switch.
        switch.ok(&[
            "ip",
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        switch.ok(&["ip", "link", "set", "br0", "up"])?;
        let attach = |ns: &Ns, port: &str, ip4: &str| -> Result<()> {
            switch.ok(&[
                "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns.name,
            ])?;
            switch.ok(&["ip", "link", "set", port, "master", "br0", "up"])?;
            ns.ok(&["ip", "addr", "add", &format!("{ip4}/24"), "dev", "eth0"])?;
            ns.ok(&["ip", "link", "set", "eth0", "up"])?;
            Ok(())
        };
        let client = Ns::new(format!("{prefix}-cl"))?;
        attach(&client, "pc", CLIENT_IP)?;
        let mut ns = Vec::new();
        for i in 0..nodes {
            let node = Ns::new(format!("{prefix}-n{i}"))?;
            attach(&node, &format!("p{i}"), &node_ip(i))?;
            ns.push(node);
        }
        Ok(Lab {
            speakers: (0..nodes).map(|_| None).collect(),
            bin: bin.to_path_buf(),
            dir,
            client,
            nodes: ns,
            _switch: switch,
        })
    }

    fn node_name(i: usize) -> String {
        format!("node-{i}")
    }

    fn config_text(&self, i: usize, vips: &[&str]) -> String {
        let peers: Vec<String> = (0..self.nodes.len())
            .filter(|j| *j != i)
            .map(|j| format!("\"{}:7946\"", node_ip(j)))
            .collect();
        let vips: String = vips
            .iter()
            .map(|v| format!("  - address: \"{v}\"\n"))
            .collect();
        format!(
            "node: {{ name: {}, address: {} }}\nlisten: \"0.0.0.0:7946\"\npeers: [{}]\n\
             secret: \"{SECRET}\"\nvips:\n{vips}statusFile: {}\nheartbeatInterval: 100ms\n\
             deadAfter: 3\nstateDir: {}\n",
            Self::node_name(i),
            node_ip(i),
            peers.join(", "),
            self.dir.join(format!("status-{i}.json")).display(),
            // The sysctl record of its killed speakers stays here, not
            // in the host's /run.
            self.dir.join(format!("state-{i}")).display(),
        )
    }

    /// Writes node `i`'s config file with `vips` and returns its path.
    fn write_config(&self, i: usize, vips: &[&str]) -> Result<PathBuf> {
        let config = self.dir.join(format!("config-{i}.yaml"));
        fs::write(&config, self.config_text(i, vips)).map_err(|e| Error::File {
            path: config.display().to_string(),
            source: e,
        })?;
        Ok(config)
    }

    /// Starts (or restarts) the speaker on node `i`.
    pub(super) fn start(&mut self, i: usize, vips: &[&str]) -> Result<()> {
        let config = self.write_config(i, vips)?;
        let status = self.dir.join(format!("status-{i}.json"));
        // A killed speaker's last status still says "announcing".
        let _ = fs::remove_file(&status);
        let log = self.dir.join(format!("speaker-{i}.log"));
        let bin = self.bin.to_string_lossy().into_owned();
        let cfg = config.to_string_lossy().into_owned();
        let node = self
            .nodes
            .get(i)
            .ok_or_else(|| bench_err(format!("no node {i}")))?;
        let child = node.spawn_logged(&[&bin, "static", "--config", &cfg], &log)?;
        self.speakers[i] = Some(Speaker {
            child: Some(child),
            log,
            status,
        });
        Ok(())
    }

    /// Rewrites node `i`'s config with `vips` and sends SIGHUP; returns
    /// when the signal is sent.
    pub(super) fn reconfigure(&mut self, i: usize, vips: &[&str]) -> Result<()> {
        self.write_config(i, vips)?;
        self.speaker(i)?.signal(nix::sys::signal::Signal::SIGHUP)
    }

    pub(super) fn speaker(&mut self, i: usize) -> Result<&mut Speaker> {
        self.speakers
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or_else(|| bench_err(format!("no speaker on node {i}")))
    }

    /// Waits until exactly one running speaker announces `vip`.
    pub(super) fn wait_owner(&self, vip: &str, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let owners: Vec<usize> = self
                .speakers
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.as_ref().is_some_and(|s| {
                        s.running() && s.vip_state(vip).as_deref() == Some("announcing")
                    })
                })
                .map(|(i, _)| i)
                .collect();
            if let [one] = owners.as_slice() {
                return Ok(*one);
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .speakers
                    .iter()
                    .flatten()
                    .map(Speaker::log_text)
                    .collect();
                return Err(bench_err(format!(
                    "no single owner for {vip} within {timeout:?} (owners {owners:?}); logs:\n{}",
                    logs.join("\n-----\n")
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Speakers first (by PID, reaped), then the files; the namespaces
        // drop after this.
        self.speakers.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
