//! The plugin's one error type and its single mapping to CNI error codes.
//!
//! Codes 1-99 are the CNI spec's (SPEC.md "Error"); 100+ are flatlan's own
//! and are listed in the README so users can act on them.

use std::io;

use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("incompatible CNI version {version}; this plugin supports {supported}")]
    IncompatibleVersion { version: String, supported: String },

    #[error("cniVersion {version} has no {verb}; it needs cniVersion {need} or later")]
    VerbNotInVersion {
        verb: &'static str,
        version: String,
        need: &'static str,
    },

    #[error("unsupported field in network configuration: {0}")]
    UnsupportedField(String),

    #[error("container network namespace {0} does not exist")]
    UnknownContainer(String),

    #[error("invalid environment variable {var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("cannot decode the network configuration on stdin: {0}")]
    Decode(String),

    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),

    #[error("{0}; try again")]
    TryAgain(String),

    #[error("plugin not ready: {0}")]
    NotReady(String),

    #[error("bridge {0:?} not found on this node; create it (netplan/networkd, see README) or set `bridge` in the CNI config")]
    BridgeNotFound(String),

    #[error("`bridge` {name:?} is a {kind}, not a Linux bridge; nothing was changed. Set `bridge` to the bridge that holds the node's NIC (see README)")]
    NotABridge { name: String, kind: String },

    #[error(transparent)]
    Ipam(#[from] flatlan_ipam::Error),

    #[error("{0}")]
    InterfaceExists(String),

    #[error("netlink {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: io::Error,
    },

    #[error("CHECK failed: {0}")]
    CheckFailed(String),

    /// Operator CLI misuse (`flatlan ipam ...`); never a CNI reply.
    #[error("{0}")]
    Usage(String),

    /// `flatlan node bridge` would not start (an owning network manager,
    /// an uplink it cannot move): the message says why and what to do
    /// instead. Nothing was changed.
    #[error("node bridge: {0}")]
    NodeBridge(String),

    /// `flatlan node bridge` failed midway, or the gateway did not answer
    /// through the bridge; `rollback` says whether the host is back as it
    /// was, or what is left to undo by hand.
    #[error("node bridge: moving {uplink} into {bridge} failed: {reason}\n{rollback}")]
    BridgeMigration {
        uplink: String,
        bridge: String,
        reason: String,
        rollback: String,
        /// The undo left steps to do by hand: its own exit code.
        incomplete: bool,
    },
}

/// flatlan's own codes (SPEC.md reserves 100+ for plugins).
pub mod code {
    pub const BRIDGE_NOT_FOUND: u32 = 100;
    pub const POOL_EXHAUSTED: u32 = 101;
    pub const INTERFACE_EXISTS: u32 = 102;
    pub const NETLINK: u32 = 103;
    pub const CHECK_FAILED: u32 = 104;
    pub const ADDRESS_UNAVAILABLE: u32 = 105;
    pub const STORE: u32 = 106;
    pub const PROBE: u32 = 107;
}

impl Error {
    pub fn io(op: &'static str, path: impl std::fmt::Display, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_string(),
            source,
        }
    }

    pub fn netlink(op: impl Into<String>, source: io::Error) -> Self {
        Error::Netlink {
            op: op.into(),
            source,
        }
    }

    /// The kernel's errno behind a netlink failure, for the callers that
    /// treat one (ENODEV, ESRCH, ...) as an answer rather than an error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The CNI error code. The only place codes are decided.
    pub fn code(&self) -> u32 {
        use flatlan_ipam::Error as I;
        match self {
            Error::IncompatibleVersion { .. } | Error::VerbNotInVersion { .. } => 1,
            Error::UnsupportedField(_) => 2,
            Error::UnknownContainer(_) => 3,
            Error::InvalidEnv { .. } => 4,
            Error::Io { .. } => 5,
            Error::Decode(_) => 6,
            Error::InvalidConfig(_) => 7,
            Error::TryAgain(_) => 11,
            Error::NotReady(_) => 50,
            Error::BridgeNotFound(_) | Error::NotABridge { .. } => code::BRIDGE_NOT_FOUND,
            Error::Ipam(e) => match e {
                I::InvalidRange { .. }
                | I::RangeOutsideSubnet { .. }
                | I::InvalidNetworkName(_)
                | I::RangeFile { .. } => 7,
                I::Exhausted { .. } => code::POOL_EXHAUSTED,
                I::RequestedOutsideRange { .. } | I::RequestedInUse { .. } => {
                    code::ADDRESS_UNAVAILABLE
                }
                I::AlreadyAttached { .. } => code::INTERFACE_EXISTS,
                I::ConflictsInARow(_) => 11,
                I::Io { .. } | I::Corrupt { .. } | I::StoreVersion { .. } => code::STORE,
                I::Probe(_) => code::PROBE,
            },
            Error::InterfaceExists(_) => code::INTERFACE_EXISTS,
            Error::Netlink { .. } => code::NETLINK,
            Error::CheckFailed(_) => code::CHECK_FAILED,
            // Operator commands, never a CNI reply.
            Error::Usage(_) | Error::NodeBridge(_) | Error::BridgeMigration { .. } => 4,
        }
    }

    /// The error JSON the runtime reads from stdout.
    pub fn to_json(&self, cni_version: &str) -> ErrorJson {
        let details = std::error::Error::source(self)
            .map(|s| s.to_string())
            .unwrap_or_default();
        ErrorJson {
            cni_version: cni_version.to_string(),
            code: self.code(),
            msg: self.to_string(),
            details,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorJson {
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}
