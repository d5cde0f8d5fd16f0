//! The crate's one error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::cni::CniFailure;

/// Everything that can go wrong while building a lab, running a command in
/// it or probing it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Namespaces, veths and mounts need CAP_SYS_ADMIN and CAP_NET_ADMIN.
    #[error("not running as root (euid {euid}): the lab needs CAP_SYS_ADMIN and CAP_NET_ADMIN")]
    NotRoot { euid: u32 },

    /// A name that cannot be a namespace, interface or host name.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// A lab configuration that cannot be built.
    #[error("invalid lab configuration: {0}")]
    InvalidConfig(String),

    /// The command could not be started at all (missing binary, EPERM...).
    #[error("cannot start `{cmd}`: {source}")]
    Spawn { cmd: String, source: io::Error },

    /// The command ran and exited unsuccessfully.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    CommandFailed {
        cmd: String,
        status: String,
        stdout: String,
        stderr: String,
    },

    /// The command did not finish in time and was killed.
    #[error("`{cmd}` did not finish within {timeout:?} and was killed")]
    CommandTimeout { cmd: String, timeout: Duration },

    /// A probe (ping, TCP, UDP, mDNS...) got no answer in time.
    #[error("{what}: no answer within {timeout:?}")]
    Timeout { what: String, timeout: Duration },

    /// A probe got an answer, but the wrong one.
    #[error("{what}: {detail}")]
    Probe { what: String, detail: String },

    /// File-system or socket I/O.
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },

    /// A system call made through nix.
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },

    /// Output that should have been JSON was not.
    #[error("{what}: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },

    /// A DNS/mDNS packet that does not parse.
    #[error("malformed DNS packet at offset {offset}: {reason}")]
    Dns { offset: usize, reason: &'static str },

    /// A CNI network configuration (list) that libcni would also reject.
    #[error("invalid CNI configuration: {0}")]
    CniConfig(String),

    /// No executable for a CNI plugin type in CNI_PATH.
    #[error("CNI plugin {plugin:?} not found in {path:?}")]
    CniPluginNotFound { plugin: String, path: Vec<PathBuf> },

    /// A CNI plugin exited non-zero (boxed: it carries all the output).
    #[error("{0}")]
    Cni(Box<CniFailure>),
}

impl Error {
    /// The CNI error code when this is a plugin failure with error JSON.
    pub fn cni_code(&self) -> Option<u32> {
        match self {
            Error::Cni(f) => f.error.as_ref().map(|e| e.code),
            _ => None,
        }
    }

    /// True for the "nothing answered in time" family of errors.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::CommandTimeout { .. })
    }

    /// An [`Error::Io`] saying what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// An [`Error::Sys`] saying what was being done.
    pub fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            what: what.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
