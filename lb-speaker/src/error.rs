//! The crate's one error type.

use std::io;

/// Everything that can go wrong in the speaker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The static-mode configuration is invalid; `path` names the offending
    /// field the way a user would find it in the YAML (`vips[2].address`).
    #[error("{path}: {msg}")]
    Config { path: String, msg: String },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: io::Error,
    },

    /// The node agent could not read its Node from the API.
    #[error("reading Node {node}: {source}")]
    Kube {
        node: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// A request to the Kubernetes API failed (`what` names it).
    #[error("Kubernetes API, {what}: {source}")]
    KubeApi {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// The Node's spec carries something that is not a CIDR.
    #[error("Node {node} has podCIDR {cidr:?}, which is not a CIDR")]
    BadPodCidr { node: String, cidr: String },

    /// A system call or helper command failed.
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: io::Error,
    },

    /// A raw (`AF_PACKET`) socket could not be opened or used; the message
    /// names the interface and the system call.
    #[error(transparent)]
    Socket(#[from] flatlan_l2::Error),

    /// A heartbeat is shorter than its own length fields say.
    #[error("heartbeat truncated")]
    Truncated,
    /// Not a flatlan heartbeat (wrong magic).
    #[error("not a heartbeat (bad magic)")]
    BadMagic,
    /// A heartbeat version this build does not speak.
    #[error("unsupported heartbeat version {0}")]
    BadVersion(u8),
    /// A structurally invalid heartbeat (after authentication).
    #[error("malformed heartbeat: {0}")]
    Malformed(&'static str),
    /// The HMAC does not verify: wrong key or tampered bytes.
    #[error("heartbeat authentication failed")]
    BadMac,
    /// A heartbeat cannot be encoded (name too long, too many VIPs).
    #[error("cannot encode heartbeat: {0}")]
    Encode(&'static str),

    /// The status endpoint or file could not be read.
    #[error("status: {0}")]
    Status(String),

    /// The bench could not build its lab or take a measurement.
    #[error("bench: {0}")]
    Bench(String),
}

impl Error {
    /// A configuration error at `path`.
    pub fn config(path: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A failed system operation.
    pub fn sys(op: impl Into<String>, source: io::Error) -> Self {
        Error::Sys {
            op: op.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
