//! Invoking CNI plugins exactly as a container runtime does: the plugin
//! binary runs on the node (here: inside the node's namespace, via `ip
//! netns exec`, which also gives it that namespace's /sys), with its
//! parameters in CNI_* environment variables and the network
//! configuration on stdin.

mod conflist;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::command;
use crate::error::{Error, Result};
use crate::netns::Netns;

pub use conflist::{Attachment, CniNetwork};

/// Where Debian's containernetworking-plugins live.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";
/// The PATH a plugin gets; the rest of the environment is cleared so a
/// plugin cannot depend on the test runner's environment by accident.
pub const PLUGIN_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Deadline for one plugin execution.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The CNI_COMMAND values of CNI 1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Status => "STATUS",
            CniCommand::Gc => "GC",
            CniCommand::Version => "VERSION",
        }
    }
}

/// A plugin's error output, as the CNI spec defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniErrorJson {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cni_version: Option<String>,
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// How the plugin process is started inside the node's namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Launcher {
    /// `ip netns exec NODE plugin`: simple and debuggable, but it adds a
    /// process, a mount namespace and a /sys remount (~2-3 ms) per call.
    #[default]
    IpNetnsExec,
    /// Forked from a thread that has `setns`'d into the node, as containerd
    /// or CRI-O exec a plugin from a process already in the host namespace:
    /// what the plugin itself costs. The bench uses it for both plugins.
    Direct,
}

/// One execution of one plugin.
#[derive(Debug, Clone)]
pub struct CniInvocation {
    pub plugin: PathBuf,
    pub command: CniCommand,
    pub container_id: String,
    /// CNI_NETNS, e.g. a pod's [`Netns::path`].
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// CNI_ARGS, joined as `K=V;K=V`.
    pub args: Vec<(String, String)>,
    /// CNI_PATH, where chained/delegated plugins (IPAM) are looked up.
    pub path_dirs: Vec<PathBuf>,
    /// The network configuration, sent on stdin.
    pub config: Value,
    pub timeout: Duration,
    pub launcher: Launcher,
}

impl CniInvocation {
    /// An invocation with `ifname` eth0, no container or netns, and
    /// CNI_PATH set to the plugin's own directory.
    pub fn new(plugin: impl Into<PathBuf>, command: CniCommand, config: Value) -> Self {
        let plugin = plugin.into();
        let dir = plugin.parent().map(Path::to_path_buf).unwrap_or_default();
        CniInvocation {
            plugin,
            command,
            container_id: String::new(),
            netns: None,
            ifname: "eth0".to_owned(),
            args: Vec::new(),
            path_dirs: vec![dir],
            config,
            timeout: PLUGIN_TIMEOUT,
            launcher: Launcher::default(),
        }
    }

    /// The plugin's environment. Like libcni, all six CNI_* variables are
    /// always set, empty when they do not apply (STATUS, GC, VERSION).
    pub fn env(&self) -> Vec<(String, String)> {
        let args = self
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let path = self
            .path_dirs
            .iter()
            .map(|p| p.to_string_lossy())
            .collect::<Vec<_>>()
            .join(":");
        let netns = self
            .netns
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec![
            ("PATH".into(), PLUGIN_PATH_ENV.into()),
            ("CNI_COMMAND".into(), self.command.as_str().into()),
            ("CNI_CONTAINERID".into(), self.container_id.clone()),
            ("CNI_NETNS".into(), netns),
            ("CNI_ARGS".into(), args),
            ("CNI_IFNAME".into(), self.ifname.clone()),
            ("CNI_PATH".into(), path),
        ]
    }

    /// Runs the plugin inside `node` and returns what it did, whatever the
    /// exit code; only failing to run it at all is an error.
    pub fn run(&self, node: &Netns) -> Result<CniOutcome> {
        self.run_timed(node).map(|(o, _)| o)
    }

    /// [`CniInvocation::run`] plus the wall-clock time, including the
    /// ~1 ms of `ip netns exec` (the same for every plugin compared).
    pub fn run_timed(&self, node: &Netns) -> Result<(CniOutcome, Duration)> {
        let stdin = serde_json::to_vec(&self.config).map_err(|source| Error::Json {
            what: "serialize CNI config".to_owned(),
            source,
        })?;
        let started = Instant::now();
        let out = match self.launcher {
            Launcher::IpNetnsExec => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", node.name()])
                    .arg(&self.plugin)
                    .env_clear()
                    .envs(self.env());
                command::run(cmd, Some(&stdin), self.timeout)?
            }
            Launcher::Direct => {
                let mut cmd = Command::new(&self.plugin);
                cmd.env_clear().envs(self.env());
                let timeout = self.timeout;
                // fork() copies the calling thread's namespaces, so the child
                // starts in the node; the mount namespace stays the host's.
                node.run(move || command::run(cmd, Some(&stdin), timeout))??
            }
        };
        let elapsed = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stdout_json = serde_json::from_str(&stdout).ok();
        let outcome = CniOutcome {
            plugin: self.plugin.clone(),
            command: self.command,
            exit_code: out.status.code().unwrap_or(-1),
            stdout,
            stdout_json,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        tracing::debug!(
            plugin = %self.plugin.display(),
            command = self.command.as_str(),
            exit = outcome.exit_code,
            ?elapsed,
            "CNI plugin ran"
        );
        Ok((outcome, elapsed))
    }
}

/// What one plugin execution produced.
#[derive(Debug, Clone)]
pub struct CniOutcome {
    pub plugin: PathBuf,
    pub command: CniCommand,
    /// -1 if it was killed by a signal.
    pub exit_code: i32,
    pub stdout: String,
    pub stdout_json: Option<Value>,
    pub stderr: String,
}

impl CniOutcome {
    /// Exit 0: the result JSON (`Null` when the plugin printed nothing, as
    /// DEL may). Otherwise [`Error::Cni`] with the parsed error JSON.
    pub fn result(&self) -> Result<Value> {
        if self.exit_code == 0 {
            if self.stdout.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&self.stdout).map_err(|source| Error::Json {
                what: format!("{} {} result", self.plugin.display(), self.command.as_str()),
                source,
            });
        }
        Err(Error::Cni(Box::new(CniFailure {
            plugin: self.plugin.clone(),
            command: self.command,
            exit_code: self.exit_code,
            error: self
                .stdout_json
                .clone()
                .and_then(|v| serde_json::from_value(v).ok()),
            stdout: self.stdout.clone(),
            stderr: self.stderr.clone(),
        })))
    }
}

/// A plugin that exited non-zero, with its parsed error JSON when it
/// printed one, as the spec requires.
#[derive(Debug, Clone)]
pub struct CniFailure {
    pub plugin: PathBuf,
    pub command: CniCommand,
    pub exit_code: i32,
    pub error: Option<CniErrorJson>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for CniFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CNI {} via {} failed (exit {}): ",
            self.command.as_str(),
            self.plugin.display(),
            self.exit_code
        )?;
        match &self.error {
            Some(e) => {
                write!(f, "code {}: {}", e.code, e.msg)?;
                match &e.details {
                    Some(d) if !d.is_empty() => write!(f, " ({d})"),
                    _ => Ok(()),
                }
            }
            None => write!(
                f,
                "no CNI error JSON on stdout; stderr: {}",
                self.stderr.trim()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_is_what_libcni_sets() {
        let mut inv = CniInvocation::new("/usr/lib/cni/bridge", CniCommand::Add, json!({}));
        inv.container_id = "abc".into();
        inv.netns = Some("/run/netns/x".into());
        inv.args = vec![
            ("K8S_POD_NAME".into(), "web".into()),
            ("IgnoreUnknown".into(), "1".into()),
        ];
        inv.path_dirs.push("/opt/cni/bin".into());
        let env = inv.env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CNI_COMMAND"), Some("ADD"));
        assert_eq!(get("CNI_CONTAINERID"), Some("abc"));
        assert_eq!(get("CNI_NETNS"), Some("/run/netns/x"));
        assert_eq!(get("CNI_IFNAME"), Some("eth0"));
        assert_eq!(get("CNI_ARGS"), Some("K8S_POD_NAME=web;IgnoreUnknown=1"));
        assert_eq!(get("CNI_PATH"), Some("/usr/lib/cni:/opt/cni/bin"));
        let status = CniInvocation::new("/x/flatlan", CniCommand::Status, json!({})).env();
        assert!(status.iter().any(|(k, v)| k == "CNI_NETNS" && v.is_empty()));
    }

    fn outcome(code: i32, stdout: &str) -> CniOutcome {
        CniOutcome {
            plugin: "/x/p".into(),
            command: CniCommand::Add,
            exit_code: code,
            stdout: stdout.into(),
            stdout_json: serde_json::from_str(stdout).ok(),
            stderr: "boom".into(),
        }
    }

    #[test]
    fn result_parses_success_and_cni_errors() {
        assert_eq!(
            outcome(0, r#"{"ips":[]}"#).result().expect("ok"),
            json!({"ips": []})
        );
        assert_eq!(outcome(0, "").result().expect("ok"), Value::Null);
        assert!(outcome(0, "not json").result().is_err());
        let err = outcome(
            1,
            r#"{"cniVersion":"1.0.0","code":11,"msg":"try again","details":"locked"}"#,
        )
        .result()
        .expect_err("fails");
        assert_eq!(err.cni_code(), Some(11));
        assert!(err.to_string().contains("try again (locked)"), "{err}");
        let err = outcome(2, "garbage").result().expect_err("fails");
        assert_eq!(err.cni_code(), None);
        assert!(err.to_string().contains("boom"), "{err}");
    }
}
