//! Debian's podman (4.3) as a real CNI runtime inside a lab node.
//!
//! podman's CNI backend calls plugins through libcni, the way a user's
//! podman host would: `CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=<name>` (no
//! namespace), `IP=`/`MAC=` for `--ip`/`--mac-address`, the `portMappings`
//! capability for `-p`, and DEL with the cached result as prevResult.
//!
//! Everything podman writes lives in a per-instance scratch directory
//! (storage, run dirs, containers.conf, the CNI config dir), plus two
//! tmpfs mounts in a private mount namespace: /run (netns bind mounts,
//! runc's state) and /var/lib (libcni's result cache, which podman puts in
//! /var/lib/cni with no setting to move it). That mount namespace is held
//! by a `sleep` process and entered with `nsenter --mount` by every podman
//! command, so `run -d` and a later `rm` see the same /run. The network
//! namespace is entered with `nsenter --net`, not `ip netns exec`: that
//! remounts /sys, and runc then finds no cgroup hierarchy.
//!
//! Nothing is pulled: containers run busybox-static from a `--rootfs`
//! directory built here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::command;
use crate::error::{Error, Result};
use crate::names::new_prefix;
use crate::netns::Netns;
use crate::process::ProcHandle;
use crate::scratch::ScratchDir;

/// busybox-static: no libc needed in the rootfs.
const BUSYBOX: &str = "/bin/busybox";
/// podman waits for runc and the CNI plugins; a cold vfs store is slow.
const PODMAN_TIMEOUT: Duration = Duration::from_secs(90);
const HOLDER_READY: &str = "mount-namespace-ready";

/// A CGI script for busybox httpd: replies with the TCP peer's address, so
/// a test can see whether hostPort traffic was masqueraded.
const PEER_CGI: &str = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n";

/// One podman "host": its configuration, storage and private mounts.
#[derive(Debug)]
pub struct Podman {
    node_netns: PathBuf,
    holder: ProcHandle,
    dir: ScratchDir,
}

/// One plugin invocation as podman made it, recorded by the shim that
/// [`Podman::new`] puts in front of the plugin under test.
#[derive(Debug, Clone)]
pub struct CniCall {
    pub command: String,
    pub container_id: String,
    pub args: String,
    /// The network configuration podman sent on stdin.
    pub config: Value,
}

impl Podman {
    /// A podman instance in `node`'s network namespace. `plugin_dirs` is
    /// the CNI plugin search path; `recorded`, if given, is a plugin binary
    /// whose every call is logged (see [`Podman::calls`]) before it runs.
    pub fn new(node: &Netns, plugin_dirs: &[PathBuf], recorded: Option<&Path>) -> Result<Podman> {
        let dir = ScratchDir::new(&format!("{}-podman", new_prefix()))?;
        let d = dir.path().to_path_buf();
        build_rootfs(&d.join("rootfs"))?;
        for sub in [
            "cni", "storage", "runroot", "tmp", "static", "volumes", "calls",
        ] {
            mkdir(&d.join(sub))?;
        }
        let mut dirs = Vec::new();
        if let Some(real) = recorded {
            let shim_dir = d.join("shim");
            mkdir(&shim_dir)?;
            let name = real
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::InvalidConfig(format!("plugin {}", real.display())))?;
            write_executable(&shim_dir.join(name), &shim_script(&d.join("calls"), real))?;
            dirs.push(shim_dir);
        }
        dirs.extend(plugin_dirs.iter().cloned());
        dir.write("containers.conf", &containers_conf(&d, &dirs))?;
        dir.write(
            "storage.conf",
            &format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                d.join("storage").display(),
                d.join("runroot").display()
            ),
        )?;

        let node_netns = node.path();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", node_netns.display()))
            .args(["unshare", "-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib \
                 && echo {HOLDER_READY} && exec sleep infinity"
            ));
        let mut holder = ProcHandle::spawn(cmd, &format!("podman-{}", node.name()))?;
        holder.wait_for_log(HOLDER_READY, Duration::from_secs(10))?;
        Ok(Podman {
            node_netns,
            holder,
            dir,
        })
    }

    /// The busybox root file system for `run ... --rootfs`.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Installs a CNI network (a conflist with a `name`) for `--network`.
    pub fn add_network(&self, conflist: &Value) -> Result<()> {
        let name = conflist["name"]
            .as_str()
            .ok_or_else(|| Error::CniConfig("the conflist has no name".into()))?;
        self.dir
            .write(&format!("cni/{name}.conflist"), &conflist.to_string())?;
        Ok(())
    }

    /// `podman ARGS`, whatever the exit status.
    pub fn podman(&self, args: &[&str]) -> Result<Output> {
        command::run(self.command(args), None, PODMAN_TIMEOUT)
    }

    /// `podman ARGS`; a non-zero exit is an error with podman's stderr.
    /// Returns stdout, trimmed.
    pub fn podman_ok(&self, args: &[&str]) -> Result<String> {
        let out = command::run_ok(self.command(args), None, PODMAN_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `podman run -d --name NAME --network NET OPTS --rootfs ROOTFS CMD`:
    /// podman reads every option after `--rootfs` as the command, so the
    /// options come first. Returns the container ID.
    pub fn run(&self, name: &str, network: &str, opts: &[&str], cmd: &[&str]) -> Result<String> {
        let rootfs = self.rootfs().display().to_string();
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["--rootfs", &rootfs]);
        args.extend_from_slice(cmd);
        self.podman_ok(&args)
    }

    /// `podman rm -f -t 0 NAMES`: busybox as PID 1 ignores SIGTERM.
    pub fn rm(&self, names: &[&str]) -> Result<()> {
        let mut args = vec!["rm", "-f", "-t", "0"];
        args.extend_from_slice(names);
        self.podman_ok(&args).map(|_| ())
    }

    /// `podman exec NAME ARGV`, stdout trimmed.
    pub fn exec(&self, name: &str, argv: &[&str]) -> Result<String> {
        let mut args = vec!["exec", name];
        args.extend_from_slice(argv);
        self.podman_ok(&args)
    }

    /// Every call of the recorded plugin so far, oldest first.
    pub fn calls(&self) -> Result<Vec<CniCall>> {
        let calls = self.dir.path().join("calls");
        let mut names: Vec<String> = std::fs::read_dir(&calls)
            .map_err(|e| Error::io(format!("read {}", calls.display()), e))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".env").map(str::to_owned))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let read = |ext: &str| {
                    let p = calls.join(format!("{n}.{ext}"));
                    std::fs::read_to_string(&p)
                        .map_err(|e| Error::io(format!("read {}", p.display()), e))
                };
                let env = read("env")?;
                let mut lines = env.lines().map(str::to_owned);
                let mut next = || lines.next().unwrap_or_default();
                let (command, container_id, args) = (next(), next(), next());
                let stdin = read("stdin")?;
                let config = serde_json::from_str(&stdin).map_err(|source| Error::Json {
                    what: format!("CNI config podman sent for {command}"),
                    source,
                })?;
                Ok(CniCall {
                    command,
                    container_id,
                    args,
                    config,
                })
            })
            .collect()
    }

    fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.pid()))
            .arg(format!("--net={}", self.node_netns.display()))
            .arg("podman")
            .arg(format!("--root={}", d.join("storage").display()))
            .arg(format!("--runroot={}", d.join("runroot").display()))
            .arg("--storage-driver=vfs")
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"));
        cmd
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers keep the mount namespace (and conmon) alive; remove
        // them, which also runs CNI DEL, before the holder goes.
        match self.podman(&["rm", "-a", "-f", "-t", "0"]) {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::warn!(
                stderr = %String::from_utf8_lossy(&o.stderr),
                "podman rm -a failed"
            ),
            Err(e) => tracing::warn!(error = %e, "podman rm -a failed"),
        }
    }
}

fn containers_conf(d: &Path, plugin_dirs: &[PathBuf]) -> String {
    let dirs: Vec<String> = plugin_dirs
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    // Ulimits below any sane hard limit: podman's rootful default raises
    // nofile and nproc to the maximum, which needs CAP_SYS_RESOURCE, and
    // runc fails "setting rlimit" without it (as in these CI containers).
    format!(
        r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[network]
network_backend = "cni"
cni_plugin_dirs = [{dirs}]
network_config_dir = "{cni}"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
tmp_dir = "{tmp}"
static_dir = "{stat}"
volume_path = "{vol}"
"#,
        dirs = dirs.join(", "),
        cni = d.join("cni").display(),
        events = d.join("events.log").display(),
        tmp = d.join("tmp").display(),
        stat = d.join("static").display(),
        vol = d.join("volumes").display(),
    )
}

/// Logs the call's variables and stdin, then runs the real plugin on the
/// same stdin. File names sort in call order (nanosecond clock, then PID).
fn shim_script(calls: &Path, real: &Path) -> String {
    format!(
        "#!/bin/sh\nf={calls}/$(date +%s%N)-$$\ncat > \"$f.stdin\"\n\
         printf '%s\\n%s\\n%s\\n' \"$CNI_COMMAND\" \"$CNI_CONTAINERID\" \"$CNI_ARGS\" > \"$f.env.tmp\"\n\
         mv \"$f.env.tmp\" \"$f.env\"\nexec {real} < \"$f.stdin\"\n",
        calls = calls.display(),
        real = real.display()
    )
}

/// busybox and a link per applet, the mount points runc needs, and a
/// `/www/cgi-bin/peer` for httpd.
fn build_rootfs(root: &Path) -> Result<()> {
    for sub in [
        "bin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "www/cgi-bin",
    ] {
        mkdir(&root.join(sub))?;
    }
    let bin = root.join("bin");
    std::fs::copy(BUSYBOX, bin.join("busybox")).map_err(|e| {
        Error::io(
            format!("copy {BUSYBOX} (install busybox-static: scripts/setup-deps)"),
            e,
        )
    })?;
    let mut list = Command::new(BUSYBOX);
    list.arg("--list");
    let applets = command::run_ok(list, None, command::DEFAULT_TIMEOUT)?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", bin.join(applet))
                .map_err(|e| Error::io(format!("link applet {applet}"), e))?;
        }
    }
    write_executable(&root.join("www/cgi-bin/peer"), PEER_CGI)
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(format!("create {}", p.display()), e))
}

fn write_executable(p: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, contents).map_err(|e| Error::io(format!("write {}", p.display()), e))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(format!("chmod {}", p.display()), e))
}
