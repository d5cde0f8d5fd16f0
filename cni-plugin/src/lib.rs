//! The flatlan CNI plugin: each pod becomes a host on the LAN bridge.
//!
//! `main.rs` only calls [`run`]. The runtime speaks the CNI protocol: the
//! verb and attachment in `CNI_*` variables, the network config on stdin, a
//! result or error JSON on stdout.

#![forbid(unsafe_code)]

pub mod apply;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod doctor;
pub mod env;
pub mod error;
pub mod flags;
pub mod hook;
pub mod install;
pub mod ipam;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod node_bridge;
pub mod plan;
pub mod result;
pub mod sysctl;
pub mod watch;

use std::io::{Read, Write};

use serde_json::{json, Value};
use tracing::debug;

use config::{NetConf, SUPPORTED_VERSIONS};
use env::{Command, Env};
use error::{Error, Result};

/// Runs one CNI invocation and returns the process exit code.
pub fn run() -> i32 {
    // Network configs are a few hundred bytes; one read takes them whole.
    // One byte past the cap tells a config at the cap from a larger one.
    let mut stdin = Vec::with_capacity(16 * 1024);
    let read = std::io::stdin()
        .take(config::MAX_STDIN as u64 + 1)
        .read_to_end(&mut stdin);
    let version = config::peek_version(&stdin).unwrap_or_else(|| "1.1.0".to_string());
    let out = read
        .map_err(|e| Error::io("read", "stdin", e))
        .and_then(|n| {
            if n > config::MAX_STDIN {
                return Err(Error::Decode(format!(
                    "stdin is larger than {} KiB, the most flatlan reads; a network config is a few KiB",
                    config::MAX_STDIN / 1024
                )));
            }
            dispatch(&stdin, &version)
        });
    let mut stdout = std::io::stdout().lock();
    match out {
        Ok(Some(v)) => {
            let _ = writeln!(stdout, "{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            tracing::error!("{e}");
            let j = serde_json::to_string(&e.to_json(&version)).unwrap_or_default();
            let _ = writeln!(stdout, "{j}");
            1
        }
    }
}

fn dispatch(stdin: &[u8], version: &str) -> Result<Option<Value>> {
    let env = Env::from_vars(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": version,
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    config::verb_allowed(env.command, &conf.cni_version)?;
    init_logging(conf.log_level.as_deref());
    debug!(command = ?env.command, container = %env.attachment.container_id, "invoked");
    let att = &env.attachment;
    // Each verb opens what it needs (namespaces, sockets) in its own file.
    match env.command {
        Command::Add => cmd::add::add(&conf, att, stdin).map(Some),
        Command::Del => cmd::del::del(&conf, att).map(|()| None),
        Command::Check => cmd::check::check(&conf, att).map(|()| None),
        Command::Status => cmd::status::status(&conf).map(|()| None),
        Command::Gc => cmd::gc::gc(&conf).map(|()| None),
        Command::Version => unreachable_version(),
    }
}

fn unreachable_version() -> Result<Option<Value>> {
    Err(Error::InvalidEnv {
        var: "CNI_COMMAND",
        reason: "VERSION is handled before config parsing".into(),
    })
}

/// Starts `flatlan ipam probe-ahead` detached: its own process group, no
/// stdout or stderr, so the runtime, which waits for our output pipes to
/// close, is not held up by it.
pub(crate) fn spawn_probe_ahead(conf: &[u8]) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let child = Command::new(exe)
        .args(["ipam", "probe-ahead"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    match child {
        // The config fits the pipe buffer, so this write does not block.
        Ok(mut c) => {
            if let Some(mut i) = c.stdin.take() {
                let _ = i.write_all(conf);
            }
        }
        Err(e) => tracing::warn!("cannot start the background probe-ahead: {e}"),
    }
}

/// Logs go to stderr, which runtimes capture; stdout is the protocol.
pub(crate) fn init_logging(level: Option<&str>) {
    let filter = std::env::var("FLATLAN_LOG")
        .ok()
        .or_else(|| level.map(str::to_string))
        .unwrap_or_else(|| "warn".to_string());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
}
