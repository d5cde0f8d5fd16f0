//! The crate's one error type. Every message names the thing a user must fix.

use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid address range {range:?}: {reason}")]
    InvalidRange { range: String, reason: String },

    #[error(
        "range {range} is outside the LAN subnet {subnet}; every range must lie inside `subnet`"
    )]
    RangeOutsideSubnet { range: String, subnet: String },

    #[error("address pool {pool} is exhausted: all {usable} usable addresses are allocated or quarantined; widen the range or free addresses with `flatlan ipam release`")]
    Exhausted { pool: String, usable: u128 },

    #[error("requested address {ip} is not in this node's range ({pool}); request an address inside the node's slice")]
    RequestedOutsideRange { ip: IpAddr, pool: String },

    #[error("requested address {ip} is already allocated to {owner}")]
    RequestedInUse { ip: IpAddr, owner: String },

    #[error(
        "container {container_id} already has {ip} on {ifname}; DEL it before adding it again"
    )]
    AlreadyAttached {
        container_id: String,
        ip: IpAddr,
        ifname: String,
    },

    #[error("{0} candidate addresses in a row are answered by LAN hosts; check `flatlan ipam ls` for quarantined addresses; try again")]
    ConflictsInARow(usize),

    #[error("network name {0:?} is not usable as a directory name: use 1-128 characters of [A-Za-z0-9._-]")]
    InvalidNetworkName(String),

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("allocation store {path} is corrupt ({reason}); {action}")]
    Corrupt {
        path: PathBuf,
        reason: String,
        /// What happened to it, or what the operator can do.
        action: String,
    },

    #[error("allocation store {path} has format version {found}, but this flatlan reads only version {supported}: a newer flatlan wrote it. Reinstall that newer flatlan on this node, or move {path} aside to start an empty store (flatlan then probes every address before handing it out, and GC frees what the old store held)")]
    StoreVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error("node range file {path}: {reason}")]
    RangeFile { path: PathBuf, reason: String },

    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

// A packet-socket failure during a probe or watch is a probe error (the
// CNI plugin maps every one to its PROBE code).
impl From<flatlan_l2::Error> for Error {
    fn from(e: flatlan_l2::Error) -> Self {
        Error::Probe(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
