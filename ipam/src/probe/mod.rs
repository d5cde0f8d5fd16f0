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
//! The probe logic in [`conflict`] is written against the [`FrameSocket`]
//! trait: [`packet_socket::PacketSocket`] is the real `AF_PACKET`
//! implementation (with its kernel filter in [`bpf`]), `fake::FakeSocket`
//! an in-memory one for tests without root (STYLE rule 9), compiled only
//! for tests (`cfg(test)` or the `test-fakes` feature). What a received
//! frame proves is decided by the pure [`evidence`] classifier, which the
//! speaker shares.

#[cfg(feature = "tokio")]
pub mod async_socket;
pub(crate) mod bpf;
pub mod conflict;
pub mod evidence;
#[cfg(any(test, feature = "test-fakes"))]
pub mod fake;
pub mod packet_socket;

#[cfg(feature = "tokio")]
pub use async_socket::AsyncPacketSocket;
pub use conflict::{probe_ipv4, probe_ipv6, probe_many, ProbeOutcome};
pub use evidence::{sighting, Evidence, Sighting};
#[cfg(any(test, feature = "test-fakes"))]
pub use fake::{FakeSocket, GroupEvent};
pub use packet_socket::PacketSocket;

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use crate::frame::FrameError;
use crate::mac::MacAddr;

/// Why a probe could not be run. (A conflict is not an error: it is
/// [`ProbeOutcome::InUse`].)
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No interface of that name in the current network namespace.
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchInterface(String),
    /// ARP and NDP probes only make sense on Ethernet-like links.
    #[error("interface {ifname:?} is not Ethernet (ARP hardware type {hatype})")]
    NotEthernet { ifname: String, hatype: u16 },
    /// A socket system call failed.
    #[error("{op} on interface {ifname:?}: {source}")]
    Socket {
        op: &'static str,
        ifname: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// Joining a multicast group failed.
    #[error("joining {group} on interface index {ifindex}: {source}")]
    Multicast {
        group: Ipv6Addr,
        ifindex: u32,
        #[source]
        source: std::io::Error,
    },
    /// The interface name no longer has the index the caller looked up: it
    /// was deleted and created again in between.
    #[error("interface {ifname:?} has index {found}, not {expected}: it was recreated")]
    InterfaceChanged {
        ifname: String,
        expected: u32,
        found: u32,
    },
    /// The interface has no (or an all-zero) hardware address.
    #[error("interface {0:?} has no MAC address to probe from")]
    NoMac(String),
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

/// A raw Ethernet socket bound to one interface.
///
/// Every method takes `&self`, so one thread can send while another
/// receives on the same socket. The trait itself promises no thread
/// safety (it has no `Send`/`Sync` bound, and a test double may be
/// `!Sync`); [`PacketSocket`] and `FakeSocket` are both `Send + Sync`,
/// which is checked at compile time below. The fake locks a mutex;
/// [`PacketSocket`] locks nothing: each call is one system call on one
/// file descriptor, and the kernel sends and dequeues whole frames, so
/// concurrent calls never see or write half a frame.
///
/// What sharing does not give: each received frame goes to exactly one
/// [`Self::recv_timeout`] caller, so two threads receiving on one socket
/// split the traffic and each misses answers meant for it. A probe must be
/// the only receiver on its socket while it runs; concurrent probes need a
/// socket each (every `AF_PACKET` socket gets its own copy of each frame).
/// Two concurrent probes for the same IPv6 target on one socket would also
/// share one solicited-node membership, which the first to finish leaves.
pub trait FrameSocket {
    /// Sends one whole Ethernet frame (header included, FCS excluded).
    fn send(&self, frame: &[u8]) -> Result<(), ProbeError>;

    /// Waits up to `timeout` for the next frame received on the interface
    /// (never frames this socket itself sent) and copies it into `buf`,
    /// truncating if needed. `Ok(None)` on timeout.
    fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>, ProbeError>;

    /// The interface's MAC: the source of our frames, and how our own
    /// frames are recognised if the network reflects them.
    fn mac(&self) -> MacAddr;

    /// The interface index.
    fn ifindex(&self) -> u32;

    /// Makes the interface receive frames sent to `target`'s solicited-node
    /// multicast group, so a simultaneous DAD probe from another host
    /// (RFC 4862 §5.4.3) is seen even through NICs that filter multicast
    /// and MLD-snooping switches. Sockets that see everything (the fake) need
    /// not do anything.
    fn join_solicited_node(&self, target: Ipv6Addr) -> Result<(), ProbeError> {
        let _ = target;
        Ok(())
    }

    /// Undoes [`Self::join_solicited_node`].
    fn leave_solicited_node(&self, target: Ipv6Addr) -> Result<(), ProbeError> {
        let _ = target;
        Ok(())
    }
}

// The sharing described on `FrameSocket`, held to: both implementations
// can be used from several threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PacketSocket>();
    #[cfg(any(test, feature = "test-fakes"))]
    assert_send_sync::<FakeSocket>();
};

impl<T: FrameSocket + ?Sized> FrameSocket for &T {
    fn send(&self, frame: &[u8]) -> Result<(), ProbeError> {
        (**self).send(frame)
    }
    fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>, ProbeError> {
        (**self).recv_timeout(buf, timeout)
    }
    fn mac(&self) -> MacAddr {
        (**self).mac()
    }
    fn ifindex(&self) -> u32 {
        (**self).ifindex()
    }
    fn join_solicited_node(&self, target: Ipv6Addr) -> Result<(), ProbeError> {
        (**self).join_solicited_node(target)
    }
    fn leave_solicited_node(&self, target: Ipv6Addr) -> Result<(), ProbeError> {
        (**self).leave_solicited_node(target)
    }
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
