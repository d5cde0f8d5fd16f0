//! Named network namespaces, as `ip netns` makes them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::mount::{umount2, MntFlags};
use nix::sched::{setns, CloneFlags};

use crate::command::{self, DEFAULT_TIMEOUT};
use crate::error::{Error, Result};
use crate::names::{new_prefix, require_root, validate_label};
use crate::process::ProcHandle;

/// Where `ip netns` bind-mounts named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A named network namespace (`/run/netns/NAME`), deleted when the last
/// handle is dropped.
///
/// Handles are cheap to clone and `Send + Sync`, so a namespace can be
/// shared with worker threads or kept by both a [`crate::Lab`] and a test.
#[derive(Clone, Debug)]
pub struct Netns {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
}

impl Netns {
    /// Creates a namespace named `fl<pid>l<n>-<role>` with loopback up.
    pub fn new(role: &str) -> Result<Netns> {
        require_root()?;
        validate_label(role)?;
        let name = format!("{}-{role}", new_prefix());
        let mut created = Self::create_many(std::slice::from_ref(&name))?;
        let ns = created.pop().ok_or_else(|| {
            Error::InvalidConfig("namespace creation returned nothing".to_owned())
        })?;
        ns.ip_batch("link set lo up\n")?;
        Ok(ns)
    }

    /// Creates several namespaces with one `ip -batch` (one process instead
    /// of one per namespace). Handles exist before the command runs, so a
    /// partial failure still removes whatever was created.
    pub fn create_many(names: &[String]) -> Result<Vec<Netns>> {
        let handles: Vec<Netns> = names
            .iter()
            .map(|n| Netns {
                inner: Arc::new(Inner { name: n.clone() }),
            })
            .collect();
        let script: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
        let mut cmd = Command::new("ip");
        cmd.args(["-batch", "-"]);
        command::run_ok(cmd, Some(script.as_bytes()), DEFAULT_TIMEOUT)?;
        tracing::debug!(?names, "created namespaces");
        for ns in &handles {
            ns.run(reset_inherited_sysctls)?
                .map_err(|e| Error::io(format!("reset sysctls in {}", ns.name()), e))?;
        }
        Ok(handles)
    }

    /// The name under /run/netns.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `/run/netns/NAME`, what CNI_NETNS and `setns` want.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.inner.name)
    }

    fn exec_command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name()]).args(argv);
        cmd
    }

    /// Runs `argv` inside the namespace (`ip netns exec`) and returns its
    /// output whatever the exit status. Killed after 30 s.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        self.exec_timeout(argv, DEFAULT_TIMEOUT)
    }

    /// [`Netns::exec`] with an explicit deadline.
    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> Result<Output> {
        command::run(self.exec_command(argv), None, timeout)
    }

    /// Like [`Netns::exec`], but a non-zero exit is an error carrying stderr.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<Output> {
        command::run_ok(self.exec_command(argv), None, DEFAULT_TIMEOUT)
    }

    /// The MAC address of link `dev` in this namespace, as sysfs shows it
    /// (lowercase, colon-separated).
    pub fn link_mac(&self, dev: &str) -> Result<String> {
        let out = self.exec_ok(&["cat", &format!("/sys/class/net/{dev}/address")])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Feeds `script` to `ip -n NAME -batch -`: many link/addr/route
    /// changes for the price of one process.
    pub fn ip_batch(&self, script: &str) -> Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", self.name(), "-batch", "-"]);
        command::run_ok(cmd, Some(script.as_bytes()), DEFAULT_TIMEOUT).map_err(|e| match e {
            Error::CommandFailed {
                cmd,
                status,
                stdout,
                stderr,
            } => Error::CommandFailed {
                cmd,
                status,
                stdout,
                stderr: format!("{stderr}\n--- script ---\n{script}"),
            },
            other => other,
        })?;
        Ok(())
    }

    /// Starts `argv` in the background inside the namespace. Its stdout and
    /// stderr go to a log file ([`ProcHandle::log`]); the process is killed
    /// by PID and reaped when the handle drops.
    pub fn spawn(&self, argv: &[&str]) -> Result<ProcHandle> {
        ProcHandle::spawn(self.exec_command(argv), self.name())
    }

    /// Runs `f` on a fresh OS thread that has joined this namespace, so any
    /// socket `f` creates belongs here, and stays here after `f` returns
    /// (a socket keeps the namespace it was created in). The thread is
    /// never reused, which is why it is safe to `setns` it: a pooled
    /// thread would carry the namespace into unrelated work. A panic in
    /// `f` is propagated to the caller.
    pub fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = self.path();
        let file =
            File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        thread::scope(|s| {
            let handle = thread::Builder::new()
                .name(format!("ns-{}", self.name()))
                .spawn_scoped(s, move || -> Result<T> {
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::sys(format!("setns {}", path.display()), e))?;
                    drop(file);
                    Ok(f())
                })
                .map_err(|e| Error::io("spawn namespace thread", e))?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Inner {
    /// What `ip netns del` does, without a process: detach the bind mount
    /// that keeps the namespace alive, then remove the mount point. The
    /// kernel frees the namespace (and the veths in it) once no process is
    /// left inside.
    fn drop(&mut self) {
        let path = Path::new(NETNS_RUN_DIR).join(&self.name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::ENOENT) | Err(nix::Error::EINVAL) => {}
            Err(e) => tracing::warn!(ns = %self.name, error = %e, "cannot unmount namespace"),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!(ns = %self.name, "deleted namespace"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(ns = %self.name, error = %e, "cannot remove namespace"),
        }
    }
}

/// Names of all namespaces under /run/netns.
pub(crate) fn list_names() -> Result<Vec<String>> {
    let dir = match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {NETNS_RUN_DIR}"), e)),
    };
    Ok(dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

/// Deletes a namespace by name; used for stale leftovers we hold no handle to.
pub(crate) fn delete_by_name(name: &str) {
    drop(Inner {
        name: name.to_owned(),
    });
}

/// A new namespace copies IPv4 forwarding and the `all`/`default` ARP
/// settings from the host's (net.core.devconf_inherit_init_net=0, the
/// default), so a lab's behaviour would depend on the machine:
/// - forwarding: on a machine running Docker or the real-cluster harness
///   every lab host became a router, and the speaker bench's crash trials
///   saw no outage at all (2 in 3 trials "failed");
/// - arp_ignore/arp_announce: a host whose speaker (ours, kube-vip,
///   MetalLB with kube-proxy's strictARP) set 1/2 made every lab node
///   strict too, and the hardening tests, which check that the speaker
///   restores the namespace's originals, saw "1 2" where they set "0 0".
///
/// Hosts on a home LAN neither forward nor filter ARP; a lab that needs
/// either turns it on itself. Kernel defaults, written in the calling
/// thread's namespace (public so a test can prove it on a namespace it
/// dirtied, whatever the host's own values are).
pub fn reset_inherited_sysctls() -> std::io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "0")?;
    for conf in ["all", "default"] {
        for key in ["arp_ignore", "arp_announce"] {
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{conf}/{key}"), "0")?;
        }
    }
    Ok(())
}
