//! What the speaker knows at one instant, borrowed from the engine's
//! parts: the input of the heartbeat builder ([`crate::outgoing`]) and of
//! the status document ([`crate::status::Status::of`]), both plain
//! functions of it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::announcer::Announcer;
use crate::config::Config;
use crate::iface::IfaceInfo;
use crate::membership::Membership;
use crate::plan::Planner;
use crate::source::DesiredVip;

/// A read-only view of the engine.
pub struct Snapshot<'a> {
    /// The running configuration (node name, peers, listen port).
    pub cfg: &'a Config,
    /// Our boot nonce.
    pub nonce: u64,
    /// Shutting down.
    pub leaving: bool,
    /// The VIPs this node may own now, with their interfaces.
    pub mine: &'a BTreeMap<IpAddr, IfaceInfo>,
    /// The VIPs the source wants, with their eligibility.
    pub desired: &'a [DesiredVip],
    /// The interfaces (status shows where an unclaimed VIP would go).
    pub ifaces: &'a BTreeMap<String, IfaceInfo>,
    /// The local assignment.
    pub announcer: &'a Announcer,
    /// The peers.
    pub membership: &'a Membership,
    /// The VIPs decided about, their owners, the handovers.
    pub planner: &'a Planner,
    /// The peers' challenges our heartbeat echoes.
    pub echoes: Vec<u64>,
}
