//! Does the gateway answer through a link? An ARP probe (IPv4) or a
//! DAD-style Neighbour Solicitation (IPv6) from a packet socket on it:
//! flatlan's own conflict probe, where "in use" means "it answered". No
//! ICMP: routers that drop pings still answer ARP, and the answer must
//! come in through this very link, which a socket bound to it proves.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use flatlan_ipam::probe::{probe_many, ProbeConfig, ProbeOutcome};
use flatlan_l2::frame::EtherType;
use flatlan_l2::mac::MacAddr;
use flatlan_l2::socket::PacketSocket;

use crate::error::Result;

/// One try: 3 probes 250 ms apart, then a second of listening (≈1.5 s).
/// Generous for a wired LAN (answers take well under a millisecond), and
/// long enough for a slow or dozing host (a Wi-Fi AP buffering broadcasts
/// until its next beacon, 100-300 ms).
pub const TRY: ProbeConfig = ProbeConfig {
    probes: 3,
    interval: Duration::from_millis(250),
    wait: Duration::from_secs(1),
};

/// Tries after the migration before rolling back (≈4.5 s at most).
pub const TRIES: u32 = 3;

/// The gateway's MAC and how long it took to answer, or `None` when it
/// did not within `tries` tries of [`TRY`].
pub fn answers(ifname: &str, gateway: IpAddr, tries: u32) -> Result<Option<(MacAddr, Duration)>> {
    let family = if gateway.is_ipv4() {
        EtherType::ARP
    } else {
        EtherType::IPV6
    };
    let sock = PacketSocket::open_filtered(ifname, &[family]).map_err(flatlan_ipam::Error::from)?;
    let start = Instant::now();
    for n in 1..=tries {
        let out = probe_many(&sock, &[gateway], TRY).map_err(flatlan_ipam::Error::from)?;
        if let Some(ProbeOutcome::InUse { mac, .. }) = out.first() {
            return Ok(Some((*mac, start.elapsed())));
        }
        tracing::info!(%gateway, ifname, attempt = n, "no answer from the gateway yet");
    }
    Ok(None)
}

/// How long [`answers`] waits at most.
pub fn budget(tries: u32) -> Duration {
    TRY.duration().saturating_mul(tries)
}
