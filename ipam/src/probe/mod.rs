//! RFC 5227-style conflict probes (DAD-style for IPv6): is an address
//! already used by some host on the LAN?
//!
//! Used by the CNI plugin before handing an address to a pod, and by the
//! speaker before it first claims a VIP (DESIGN §3 "Conflict probe", §4
//! "Safety"). An address that answers is reported as
//! [`ProbeOutcome::InUse`]; quarantining it and rate-limiting re-probes
//! (RFC 5227 §2.1.1 MAX_CONFLICTS / RATE_LIMIT_INTERVAL) is the caller's
//! policy.
//!
//! The probe logic in [`conflict`] is written against flatlan-l2's
//! [`FrameSocket`] trait: `PacketSocket` there is the real `AF_PACKET`
//! implementation, `FakeSocket` an in-memory one for tests without root
//! (STYLE rule 9). What a received frame proves is decided by the pure
//! [`flatlan_l2::evidence`] classifier, which the speaker shares.
//!
//! [`FrameSocket`]: flatlan_l2::socket::FrameSocket

pub mod conflict;

pub use conflict::{probe_ipv4, probe_ipv6, probe_many, ProbeOutcome};

use std::net::IpAddr;
use std::time::Duration;

use flatlan_l2::frame::FrameError;

/// Why a probe could not be run. (A conflict is not an error: it is
/// [`ProbeOutcome::InUse`].)
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The packet socket failed (flatlan-l2 says why).
    #[error(transparent)]
    Socket(#[from] flatlan_l2::Error),
    /// The address cannot be probed (unspecified, multicast, broadcast…).
    #[error("cannot probe {addr}: {reason}")]
    InvalidCandidate { addr: IpAddr, reason: &'static str },
    /// The configuration is unusable.
    #[error("invalid probe configuration: {0}")]
    InvalidConfig(&'static str),
    /// A probe frame could not be built.
    #[error("building a probe frame: {0}")]
    Frame(#[from] FrameError),
}

/// How long and how hard to probe.
///
/// Probes go out at `t = 0, interval, 2·interval, …` (`probes` of them) and
/// the verdict is [`ProbeOutcome::Free`] if nothing answered by
/// `(probes - 1)·interval + wait`. RFC 5227's random 0–1 s PROBE_WAIT
/// before the first probe is skipped: it exists to de-synchronise hosts
/// booting together after a power cut, and flatlan's probers are a handful
/// of nodes that additionally pick from disjoint slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Number of probes per address (at least 1).
    pub probes: u8,
    /// Gap between probes.
    pub interval: Duration,
    /// How long to keep listening after the last probe.
    pub wait: Duration,
}

impl ProbeConfig {
    /// The CNI plugin's default: 2 probes 20 ms apart, then 60 ms of
    /// listening, so an ADD pays about 80 ms (for any number of candidates
    /// probed together with [`probe_many`]).
    ///
    /// Why not RFC 5227's 3 probes 1–2 s apart and 2 s ANNOUNCE_WAIT
    /// (≈ 7 s)? A pod ADD is latency-critical: the reference bridge +
    /// host-local ADD takes 10–16 ms (LAB-NOTES), kubelet serialises
    /// sandbox creation behind it, and the RFC's timers were sized for
    /// 2008-era hubs and slow embedded stacks. Linux, Windows, macOS and
    /// common routers answer an ARP probe on a wired LAN in well under
    /// 1 ms (between veths, tests/probe_netns.rs measured 0.05–0.12 ms
    /// from first probe to verdict), so 60 ms of listening leaves a >10x margin
    /// for a busy switch or a loaded host. The second probe covers a single
    /// lost frame. What this misses: Wi-Fi clients in power save, whose
    /// AP buffers broadcasts until the next DTIM beacon (100–300 ms). Those
    /// get their addresses by DHCP, and the pool already excludes the
    /// router's DHCP range (DESIGN §3), so the probe is a guard against
    /// mis-configured *static* hosts, which are almost always wired.
    pub const FAST: ProbeConfig = ProbeConfig {
        probes: 2,
        interval: Duration::from_millis(20),
        wait: Duration::from_millis(60),
    };

    /// The speaker's default before the first claim of a VIP: nothing
    /// waits on it, so it also catches dozing Wi-Fi clients (3 probes 100
    /// ms apart, 400 ms listening ≈ 600 ms, past two DTIM intervals).
    pub const THOROUGH: ProbeConfig = ProbeConfig {
        probes: 3,
        interval: Duration::from_millis(100),
        wait: Duration::from_millis(400),
    };

    /// RFC 5227 §1.1's timing without the random jitter: PROBE_NUM 3,
    /// PROBE_MAX 2 s between probes, ANNOUNCE_WAIT 2 s.
    pub const RFC5227: ProbeConfig = ProbeConfig {
        probes: 3,
        interval: Duration::from_secs(2),
        wait: Duration::from_secs(2),
    };

    /// Total time a probe that finds nothing takes.
    pub fn duration(&self) -> Duration {
        self.interval
            .saturating_mul(u32::from(self.probes.saturating_sub(1)))
            .saturating_add(self.wait)
    }

    /// Rejects configurations that cannot work.
    pub fn validate(&self) -> Result<(), ProbeError> {
        if self.probes == 0 {
            return Err(ProbeError::InvalidConfig("probes must be at least 1"));
        }
        if self.wait.is_zero() {
            return Err(ProbeError::InvalidConfig(
                "wait must be positive, or no answer could ever be seen",
            ));
        }
        Ok(())
    }
}

impl Default for ProbeConfig {
    /// [`ProbeConfig::FAST`]: the default is the latency-critical case.
    fn default() -> Self {
        ProbeConfig::FAST
    }
}
