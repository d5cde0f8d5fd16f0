//! The probe itself: send RFC 5227 ARP probes / RFC 4862 DAD solicitations,
//! listen, and classify what comes back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant, SystemTime};

use flatlan_l2::evidence::{sighting, Evidence, Sighting};
use flatlan_l2::frame::{
    solicited_node_multicast, solicited_node_multicast_mac, ArpPacket, Frame, NeighborSolicitation,
};
use flatlan_l2::mac::MacAddr;
use flatlan_l2::socket::FrameSocket;

use super::{ProbeConfig, ProbeError};

/// The verdict for one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Nobody answered within the configured time.
    Free,
    /// Some other host uses, or is at this moment claiming, the address.
    InUse {
        /// The other host's MAC (for the operator: "who is it?").
        mac: MacAddr,
        /// Wall-clock time the evidence arrived (for status output and
        /// quarantine bookkeeping).
        seen_at: SystemTime,
        /// What was seen.
        evidence: Evidence,
    },
}

impl ProbeOutcome {
    /// True for [`ProbeOutcome::Free`].
    pub fn is_free(&self) -> bool {
        matches!(self, ProbeOutcome::Free)
    }
}

/// Probes one IPv4 address with RFC 5227 ARP probes.
pub fn probe_ipv4<S: FrameSocket + ?Sized>(
    sock: &S,
    candidate: Ipv4Addr,
    cfg: ProbeConfig,
) -> Result<ProbeOutcome, ProbeError> {
    single(sock, IpAddr::V4(candidate), cfg)
}

/// Probes one IPv6 address with DAD-style Neighbor Solicitations (source
/// `::`, to the solicited-node group, RFC 4862 §5.4.2).
pub fn probe_ipv6<S: FrameSocket + ?Sized>(
    sock: &S,
    candidate: Ipv6Addr,
    cfg: ProbeConfig,
) -> Result<ProbeOutcome, ProbeError> {
    single(sock, IpAddr::V6(candidate), cfg)
}

fn single<S: FrameSocket + ?Sized>(
    sock: &S,
    candidate: IpAddr,
    cfg: ProbeConfig,
) -> Result<ProbeOutcome, ProbeError> {
    let mut out = probe_many(sock, &[candidate], cfg)?;
    Ok(out.pop().unwrap_or(ProbeOutcome::Free))
}

/// Probes a batch of addresses (IPv4 and IPv6 mixed) at once over one
/// socket, returning one outcome per candidate in input order.
///
/// All candidates share the same schedule, so the batch costs
/// [`ProbeConfig::duration`] in total rather than per address: the CNI
/// plugin probes its next few candidates together and takes the first
/// free one without serial waits. Candidates found in use get no further
/// probes, and the call returns early once every candidate is in use.
/// Duplicate candidates are allowed and get the same verdict. The call must
/// be the only receiver on `sock` while it runs (see [`FrameSocket`]).
pub fn probe_many<S: FrameSocket + ?Sized>(
    sock: &S,
    candidates: &[IpAddr],
    cfg: ProbeConfig,
) -> Result<Vec<ProbeOutcome>, ProbeError> {
    cfg.validate()?;
    for &c in candidates {
        check_candidate(c)?;
    }
    let ours = sock.mac();
    let mut outcomes: Vec<Option<ProbeOutcome>> = vec![None; candidates.len()];
    if candidates.is_empty() {
        return Ok(Vec::new());
    }

    // Build every probe frame up front: sending is then just syscalls.
    let frames = candidates
        .iter()
        .map(|&c| probe_frame(ours, c))
        .collect::<Result<Vec<Frame>, ProbeError>>()?;

    {
        // Left when this scope ends, whether `run` returns, fails or panics.
        let _groups = Memberships::join(sock, candidates);
        run(sock, candidates, &frames, cfg, &mut outcomes)?;
    }

    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(ProbeOutcome::Free))
        .collect())
}

/// Frames read after a round's deadline, at most: far more than a LAN
/// queues in one round's listening time, far less than a storm can send.
const DRAIN_LIMIT: usize = 256;

fn run<S: FrameSocket + ?Sized>(
    sock: &S,
    candidates: &[IpAddr],
    frames: &[Frame],
    cfg: ProbeConfig,
    outcomes: &mut [Option<ProbeOutcome>],
) -> Result<(), ProbeError> {
    let ours = sock.mac();
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    for round in 0..cfg.probes {
        for (frame, outcome) in frames.iter().zip(outcomes.iter()) {
            if outcome.is_none() {
                sock.send(frame)?;
            }
        }
        let last = round + 1 == cfg.probes;
        let offset = if last {
            cfg.interval
                .saturating_mul(u32::from(round))
                .saturating_add(cfg.wait)
        } else {
            cfg.interval.saturating_mul(u32::from(round) + 1)
        };
        // The schedule counts from the start, but a descheduled thread or a
        // slow send must not eat the listening time after the last probe:
        // that is when the answers arrive.
        let far = Instant::now() + Duration::from_secs(3600);
        let mut deadline = start.checked_add(offset).unwrap_or(far);
        if last {
            deadline = deadline.max(Instant::now().checked_add(cfg.wait).unwrap_or(far));
        }
        loop {
            let now = Instant::now();
            let Some(remaining) = deadline
                .checked_duration_since(now)
                .filter(|d| !d.is_zero())
            else {
                // Time is up, but what is already queued still counts; a
                // bounded look, so an ARP storm cannot stretch the probe.
                for _ in 0..DRAIN_LIMIT {
                    let Some(n) = sock.recv_timeout(&mut buf, Duration::ZERO)? else {
                        break;
                    };
                    classify(&buf[..n.min(buf.len())], ours, candidates, outcomes);
                }
                break;
            };
            let Some(n) = sock.recv_timeout(&mut buf, remaining)? else {
                continue;
            };
            classify(&buf[..n.min(buf.len())], ours, candidates, outcomes);
            if outcomes.iter().all(Option::is_some) {
                tracing::debug!(elapsed = ?start.elapsed(), "every candidate is in use");
                return Ok(());
            }
        }
    }
    Ok(())
}

fn check_candidate(addr: IpAddr) -> Result<(), ProbeError> {
    let reason = match addr {
        IpAddr::V4(a) if a.is_unspecified() => Some("the unspecified address"),
        IpAddr::V4(a) if a.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(a) if a.is_multicast() => Some("a multicast address"),
        IpAddr::V4(a) if a.is_loopback() => Some("a loopback address"),
        IpAddr::V6(a) if a.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(a) if a.is_multicast() => Some("a multicast address"),
        IpAddr::V6(a) if a.is_loopback() => Some("a loopback address"),
        _ => None,
    };
    match reason {
        Some(reason) => Err(ProbeError::InvalidCandidate { addr, reason }),
        None => Ok(()),
    }
}

fn probe_frame(ours: MacAddr, candidate: IpAddr) -> Result<Frame, ProbeError> {
    Ok(match candidate {
        IpAddr::V4(v4) => ArpPacket::probe(ours, v4).to_frame(),
        IpAddr::V6(v6) => {
            NeighborSolicitation::dad(v6).to_frame(ours, solicited_node_multicast_mac(v6))?
        }
    })
}

/// Decides, for one received frame, which undecided candidates it proves
/// to be in use (see [`sighting`]).
fn classify(
    frame: &[u8],
    ours: MacAddr,
    candidates: &[IpAddr],
    outcomes: &mut [Option<ProbeOutcome>],
) {
    let Some(Sighting {
        addr,
        mac,
        evidence,
    }) = sighting(frame, ours)
    else {
        return;
    };
    let seen_at = SystemTime::now();
    for (c, outcome) in candidates.iter().zip(outcomes.iter_mut()) {
        if *c == addr && outcome.is_none() {
            tracing::info!(%addr, %mac, ?evidence, "probe: address in use");
            *outcome = Some(ProbeOutcome::InUse {
                mac,
                seen_at,
                evidence,
            });
        }
    }
}

/// The solicited-node groups joined for a probe. They are left on drop, so
/// no exit from the probe (an error, a panic in a socket implementation)
/// leaves the interface subscribed: on a real socket a stale membership
/// keeps the NIC passing that group's traffic up, and makes the next join
/// of the same group fail with `EADDRINUSE`.
struct Memberships<'s, S: FrameSocket + ?Sized> {
    sock: &'s S,
    /// The targets whose groups were joined (the trait takes targets).
    joined: Vec<Ipv6Addr>,
}

impl<'s, S: FrameSocket + ?Sized> Memberships<'s, S> {
    /// Joins each distinct solicited-node group once (two candidates with
    /// the same low 24 bits share a group). A failure only loses the
    /// simultaneous-DAD check, not the main one (answers go to ff02::1,
    /// which every IPv6 interface receives), so it is logged, not fatal.
    fn join(sock: &'s S, candidates: &[IpAddr]) -> Self {
        let mut joined: Vec<Ipv6Addr> = Vec::new();
        let mut groups: Vec<Ipv6Addr> = Vec::new();
        for c in candidates {
            if let IpAddr::V6(v6) = c {
                let group = solicited_node_multicast(*v6);
                if groups.contains(&group) {
                    continue;
                }
                groups.push(group);
                match sock.join_solicited_node(*v6) {
                    Ok(()) => joined.push(*v6),
                    Err(e) => tracing::warn!(
                        target_addr = %v6,
                        error = %e,
                        "cannot join the solicited-node group; a simultaneous DAD by another host may go unnoticed"
                    ),
                }
            }
        }
        Memberships { sock, joined }
    }
}

impl<S: FrameSocket + ?Sized> Drop for Memberships<'_, S> {
    /// Best effort: no verdict depends on it, and on a real socket the
    /// kernel drops whatever we fail to leave when the socket closes.
    fn drop(&mut self) {
        for v6 in self.joined.drain(..) {
            if let Err(e) = self.sock.leave_solicited_node(v6) {
                tracing::debug!(target_addr = %v6, error = %e, "leaving solicited-node group");
            }
        }
    }
}
