//! The crate's one error type. Most variants describe one bad object or one
//! Service that cannot be served; their text is what the caller puts in a
//! Kubernetes Event or a pool's condition, so each says how to fix it.

use std::net::IpAddr;

/// Everything that can be wrong with a pool, an advertisement, a Service
/// or the CRD files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An entry of `addresses` does not parse.
    #[error("addresses: {0}; write a CIDR (192.168.1.240/28), a range (192.168.1.240-192.168.1.250) or one address")]
    BadAddress(String),

    /// A pool lists no addresses at all.
    #[error("addresses is empty; list at least one CIDR or range")]
    NoAddresses,

    /// A label selector cannot be evaluated.
    #[error("{field}: {why}")]
    BadSelector { field: String, why: String },

    /// Two pools share addresses; the later one is refused as a whole so
    /// that Services already in the older one keep their addresses.
    #[error("pool {pool} overlaps pool {other} at {range}; remove the overlap (pool {other} keeps its addresses)")]
    PoolOverlap {
        pool: String,
        other: String,
        range: String,
    },

    /// Two pools (from flatlan, MetalLB or the legacy ConfigMap) have one name.
    #[error("a pool named {name} already exists ({kept}); rename one of them")]
    DuplicateName { name: String, kept: String },

    /// Something flatlan does not do (BGP, a protocol, a field); it is
    /// ignored, and said so.
    #[error("{what} is not supported by flatlan and is ignored: {why}")]
    Unsupported { what: String, why: String },

    /// The legacy `metallb-system/config` ConfigMap cannot be read.
    #[error("ConfigMap {name}: {why}")]
    BadConfigMap { name: String, why: String },

    /// A Service annotation or field has a value that cannot be used.
    #[error("{key}: {value:?} {why}")]
    BadAnnotation {
        key: String,
        value: String,
        why: String,
    },

    /// Two places of a Service ask for different things.
    #[error("{a} and {b} disagree; keep only one of them")]
    ConflictingRequest { a: String, b: String },

    /// The `address-pool` annotation names a pool that does not exist or is
    /// invalid.
    #[error("no valid pool named {0}; check the address-pool annotation and the pool's status")]
    NoSuchPool(String),

    /// The named pool exists, but its namespace or Service selectors exclude
    /// this Service.
    #[error("pool {0} does not serve this Service (its serviceAllocation namespaces or selectors exclude it)")]
    PoolExcludes(String),

    /// No pool may serve this Service automatically.
    #[error("no pool serves this Service automatically (none with autoAssign for its namespace and labels{family}); add one, or name one with the address-pool annotation")]
    NoPool { family: String },

    /// Every pool that could serve the Service is full.
    #[error("pool exhausted: {pools} has no free {family} address; add addresses to a pool or delete an unused LoadBalancer Service")]
    PoolExhausted { pools: String, family: String },

    /// A requested address lies in no valid pool.
    #[error("requested IP {0} is outside every pool; request an address from a pool's addresses or add a pool for it")]
    OutsidePools(IpAddr),

    /// A requested address lies in a pool other than the named one.
    #[error("requested IP {ip} is not in pool {pool} named by the address-pool annotation")]
    NotInNamedPool { ip: IpAddr, pool: String },

    /// A requested address is held by a Service that does not share.
    #[error("requested IP {ip} is taken by Service {by}; request another address, or give both Services the same allow-shared-ip key")]
    Taken { ip: IpAddr, by: String },

    /// Both Services share, but not compatibly.
    #[error("sharing conflict on {ip} with Service {with}: {why}")]
    SharingConflict {
        ip: IpAddr,
        with: String,
        why: String,
    },

    /// The requested addresses do not fit the Service's IP families.
    #[error("{0}")]
    Families(String),

    /// An advertisement names a pool that is missing or refused.
    #[error("spec.ipAddressPools names pool {0}, which does not exist or is invalid; this advertisement announces nothing of it")]
    UnknownPool(String),

    /// On a rebuild: the addresses in the Service's status are not the
    /// ones it now requests; it is given the requested ones.
    #[error("the Service holds {held} but now requests {requested}; it is given the requested addresses")]
    RequestChanged { held: String, requested: String },

    /// A CRD could not be rendered or written.
    #[error("{path}: {why}")]
    CrdFile { path: String, why: String },
}

impl Error {
    /// The Event reason (or the condition reason) for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::BadAddress(_)
            | Error::NoAddresses
            | Error::PoolOverlap { .. }
            | Error::DuplicateName { .. } => "InvalidPool",
            Error::BadSelector { .. } => "InvalidSelector",
            Error::UnknownPool(_) => "InvalidAdvertisement",
            Error::RequestChanged { .. } => "Reallocated",
            Error::Unsupported { .. } => "Unsupported",
            Error::BadConfigMap { .. } => "InvalidConfig",
            Error::CrdFile { .. } => "CrdFile",
            Error::BadAnnotation { .. }
            | Error::ConflictingRequest { .. }
            | Error::NoSuchPool(_)
            | Error::PoolExcludes(_)
            | Error::NoPool { .. }
            | Error::PoolExhausted { .. }
            | Error::OutsidePools(_)
            | Error::NotInNamedPool { .. }
            | Error::Taken { .. }
            | Error::SharingConflict { .. }
            | Error::Families(_) => "AllocationFailed",
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
