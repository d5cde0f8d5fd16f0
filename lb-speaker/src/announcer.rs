//! The announcer: a pure state machine per VIP that decides which frames to
//! send (STYLE rules 9 and 10). It never touches a socket; it returns
//! [`Action`]s that the engine carries out, so every behaviour below is
//! unit-tested without root.
//!
//! Claiming a VIP:
//! 1. **Probe** (first claim only, RFC 5227 §2.1.1 for IPv4, RFC 4862 §5.4
//!    DAD for IPv6): an ARP probe (sender IP 0.0.0.0) or a DAD NS (source
//!    `::`), then listen for `probeTimeout`. If any other MAC answers for the
//!    VIP, the VIP is *refused*: not announced, logged, counted, shown in
//!    status, and probed again after `conflictRetry`. A takeover from a known
//!    member skips the probe, because the previous owner (possibly still
//!    answering during a graceful handoff) would answer it; that also keeps
//!    failover inside the one-second budget.
//! 2. **Announce**: `garpCount` rounds `garpInterval` apart, then rounds at
//!    1.1, 2.2 and 4.4 s ([`LATE_ROUNDS`]): hosts that ignore an update
//!    within 1 s of the previous one (Linux's `locktime` without its GARP
//!    exception) take one of those. IPv4 sends
//!    gratuitous ARP in *both* forms each round, request (RFC 5227 §2.3
//!    announcement) and reply (RFC 5944 §4.6), because some clients only
//!    act on one of them (kube-vip #82), and repeats them because a single
//!    GARP is easily lost (MetalLB #123). IPv6 sends an unsolicited NA to
//!    ff02::1 with Override=1 (RFC 4861 §7.2.6: without O a receiver keeps
//!    its cached, now wrong, link-layer address) and joins the VIP's
//!    solicited-node multicast group, where NS for it arrive (RFC 4861
//!    §7.2.1).
//! 3. **Answer**: ARP requests for owned VIPs get a unicast reply, but only
//!    requests sent to broadcast or to our MAC (a request to another MAC is
//!    not for us, RFC 826). NS get a solicited NA with O=1 (RFC 4861 §7.2.4).
//! 4. **Refresh** at `refreshInterval` (30 s; at most 150 s, well inside
//!    the 300 s a switch keeps a MAC), and re-announce in full when the link
//!    comes back or a partition heals.
//! 5. **Watch**: an ARP packet claiming the VIP from a MAC that is neither
//!    ours nor a member's, or an NA for it with another link-layer address,
//!    raises an alarm (log, metric, status) and is defended with one
//!    announcement round at most every 10 s (RFC 5227 §2.4 (b)).
//!
//! What counts as an answer to the probe (1) or a foreign claim (5) is
//! decided by flatlan-ipam's probe classifier
//! ([`flatlan_l2::evidence`]), the rules the CNI plugin's probe
//! applies; this module adds what only a speaker knows: which interface the
//! VIP is on, and that other speakers' MACs are not foreign.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flatlan_l2::mac::MacAddr;

use crate::config::Timers;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;

/// How often a foreign claim is defended at most (RFC 5227 DEFEND_INTERVAL).
pub const DEFEND_INTERVAL: Duration = Duration::from_secs(10);

/// Announcement rounds after the burst, counted from its first round.
/// Linux ignores a neighbour update that comes within `locktime` (1 s) of
/// the previous one unless it takes the GARP exception, and so do some
/// embedded stacks: every round of a 100 ms burst falls inside that
/// window. These come after it, spaced out in case one is lost.
pub const LATE_ROUNDS: [Duration; 3] = [
    Duration::from_millis(1100),
    Duration::from_millis(2200),
    Duration::from_millis(4400),
];

mod frames;
#[cfg(test)]
mod tests;
mod watch;

use frames::v6_src;
pub use frames::{announce_frames, probe_frames, Action};

/// Where a VIP is announced from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface name.
    pub iface: String,
    /// Its MAC.
    pub mac: MacAddr,
}

/// The lifecycle of one VIP on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not claimed.
    Idle,
    /// Owned, waiting for the host to accept the VIP ([`Action::Assign`])
    /// before anything is announced (see [`Announcer::confirming_assign`]).
    Assigning,
    /// Probing before the first claim.
    Probing {
        /// When the probe window closes.
        deadline: Instant,
        /// When the second probe goes out, if still pending.
        second_probe: Option<Instant>,
    },
    /// Announcing and answering.
    Owned {
        /// Burst rounds still to send.
        rounds_left: u32,
        /// When the next round (or refresh) is due.
        next: Instant,
        /// When the burst started: [`LATE_ROUNDS`] count from here.
        burst: Instant,
        /// How many of [`LATE_ROUNDS`] are done (or skipped).
        late: usize,
    },
    /// Refused: another device answered the probe.
    Conflict {
        /// Who answered.
        mac: MacAddr,
        /// When to probe again.
        retry_at: Instant,
    },
}

impl Phase {
    /// An owned VIP starts a full burst of `count` rounds at `now` (the
    /// link came back, a partition healed, a handover was called off);
    /// any other phase is left alone.
    fn restart_burst(&mut self, now: Instant, count: u32) {
        if let Phase::Owned {
            rounds_left,
            next,
            burst,
            late,
        } = self
        {
            *rounds_left = count;
            *next = now;
            *burst = now;
            *late = 0;
        }
    }
}

/// One VIP's state.
#[derive(Debug, Clone)]
pub struct VipState {
    /// Where it is announced.
    pub link: Link,
    /// Lifecycle.
    pub phase: Phase,
    /// When the last GARP/NA went out.
    pub last_announce: Option<Instant>,
    /// The last foreign MAC seen claiming it while we owned it.
    pub foreign: Option<(MacAddr, Instant)>,
    /// The last refusal, kept for status after a retry.
    pub conflict: Option<(MacAddr, Instant)>,
    last_defend: Option<Instant>,
    /// Set on a takeover, cleared when the first announcement is sent: the
    /// time the previous owner was last heard from, for the latency metric.
    failover_from: Option<Instant>,
    probed: bool,
    /// The host refused the VIP ([`Announcer::assign_failed`]): not claimed
    /// again before this. Kept across a release.
    assign_retry_at: Option<Instant>,
    /// Held for a successor ([`Announcer::set_handing_over`]): still
    /// answered, no longer announced.
    handing_over: bool,
}

/// All VIPs this node claims or has claimed.
#[derive(Debug)]
pub struct Announcer {
    timers: Timers,
    metrics: Arc<Metrics>,
    vips: BTreeMap<IpAddr, VipState>,
    /// Announce a VIP only once its `Assign` is confirmed.
    confirm_assign: bool,
    /// Foreign claims and conflicts are packets from outside: their
    /// warnings are rate-limited ([`crate::log_limit`]).
    foreign_log: LogLimit,
    conflict_log: LogLimit,
}

impl Announcer {
    /// An announcer with no VIPs.
    pub fn new(timers: Timers, metrics: Arc<Metrics>) -> Self {
        Announcer {
            timers,
            metrics,
            vips: BTreeMap::new(),
            confirm_assign: false,
            foreign_log: LogLimit::default(),
            conflict_log: LogLimit::default(),
        }
    }

    /// An announcer whose claims stop at [`Action::Assign`] until the
    /// caller reports the host's answer with [`Self::assigned`] or
    /// [`Self::assign_failed`]: nothing is sent or counted for a VIP the
    /// host would not accept. Without it the `Assign` is taken as done.
    pub fn confirming_assign(mut self) -> Self {
        self.confirm_assign = true;
        self
    }

    /// The VIPs and their states.
    pub fn vips(&self) -> &BTreeMap<IpAddr, VipState> {
        &self.vips
    }

    /// True if the VIP is claimed (probing, owned or refused).
    pub fn is_claimed(&self, vip: IpAddr) -> bool {
        self.vips
            .get(&vip)
            .is_some_and(|s| !matches!(s.phase, Phase::Idle))
    }

    /// True if the VIP is being announced and answered for.
    pub fn is_owned(&self, vip: IpAddr) -> bool {
        self.vips
            .get(&vip)
            .is_some_and(|s| matches!(s.phase, Phase::Owned { .. }))
    }

    /// True if the host refused the VIP and it is not to be claimed before
    /// the retry time (see [`Self::assign_failed`]).
    pub fn backing_off(&self, vip: IpAddr, now: Instant) -> bool {
        self.vips
            .get(&vip)
            .and_then(|s| s.assign_retry_at)
            .is_some_and(|t| now < t)
    }

    /// The MAC that made the VIP's claim fail, if it is refused now.
    pub fn conflict_mac(&self, vip: IpAddr) -> Option<MacAddr> {
        match self.vips.get(&vip)?.phase {
            Phase::Conflict { mac, .. } => Some(mac),
            _ => None,
        }
    }

    /// The VIPs currently announced.
    pub fn owned(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.vips
            .iter()
            .filter(|(_, s)| matches!(s.phase, Phase::Owned { .. }))
            .map(|(v, _)| *v)
    }

    /// Claims `vip` on `link`. `takeover` is the time the previous owner
    /// (a member) was last heard from, if there was one: then the probe is
    /// skipped and the claim counts as a failover.
    pub fn claim(
        &mut self,
        now: Instant,
        vip: IpAddr,
        link: Link,
        takeover: Option<Instant>,
    ) -> Vec<Action> {
        let probed = self.vips.get(&vip).is_some_and(|s| s.probed);
        let st = self.vips.entry(vip).or_insert_with(|| VipState {
            link: link.clone(),
            phase: Phase::Idle,
            last_announce: None,
            foreign: None,
            conflict: None,
            last_defend: None,
            failover_from: None,
            probed: false,
            assign_retry_at: None,
            handing_over: false,
        });
        if !matches!(st.phase, Phase::Idle) || st.assign_retry_at.is_some_and(|t| now < t) {
            return Vec::new();
        }
        st.link = link;
        st.failover_from = takeover;
        if takeover.is_some() || probed || self.timers.probe_timeout.is_zero() {
            return self.own(now, vip);
        }
        self.start_probe(now, vip)
    }

    fn start_probe(&mut self, now: Instant, vip: IpAddr) -> Vec<Action> {
        let Some(st) = self.vips.get_mut(&vip) else {
            return Vec::new();
        };
        let half = self.timers.probe_timeout / 2;
        st.phase = Phase::Probing {
            deadline: now + self.timers.probe_timeout,
            second_probe: Some(now + half),
        };
        self.metrics.probes_sent.inc();
        probe_frames(vip, &st.link)
    }

    /// Takes the VIP: asks the host to accept it, and (unless that must be
    /// confirmed first) starts announcing it.
    fn own(&mut self, now: Instant, vip: IpAddr) -> Vec<Action> {
        let Some(st) = self.vips.get_mut(&vip) else {
            return Vec::new();
        };
        st.probed = true;
        st.phase = Phase::Assigning;
        let mut out = vec![Action::Assign(vip)];
        if !self.confirm_assign {
            out.extend(self.assigned(now, vip));
        }
        out
    }

    /// The host accepted the VIP ([`Action::Assign`] succeeded): announce
    /// it. Only now is the claim counted (announcement, failover).
    pub fn assigned(&mut self, now: Instant, vip: IpAddr) -> Vec<Action> {
        let Some(st) = self.vips.get_mut(&vip) else {
            return Vec::new();
        };
        if st.phase != Phase::Assigning {
            return Vec::new();
        }
        st.assign_retry_at = None;
        st.phase = Phase::Owned {
            rounds_left: self.timers.garp_count,
            next: now,
            burst: now,
            late: 0,
        };
        let mut out = Vec::new();
        if let IpAddr::V6(v6) = vip {
            out.push(Action::JoinSolicitedNode {
                iface: st.link.iface.clone(),
                vip: v6,
            });
        }
        if st.failover_from.is_some() {
            self.metrics.failovers_total.inc();
        }
        self.metrics.announcements.inc();
        // The first round goes out now, not at the next tick: it is what
        // moves the clients. Only this VIP's round: calling `due` here
        // would recurse through every other VIP whose probe also ended.
        out.extend(self.round(now, vip));
        out
    }

    /// The host did not accept the VIP: it is not announced, and not
    /// claimed again for `conflictRetry` (the engine meanwhile leaves it out
    /// of what this node is eligible for, so another node takes it).
    /// Nothing was added, so there is nothing to take off the host either
    /// (unless the `Assign` was taken as done, without confirmation).
    pub fn assign_failed(&mut self, now: Instant, vip: IpAddr) -> Vec<Action> {
        let retry_at = now + self.timers.conflict_retry;
        let Some(st) = self.vips.get_mut(&vip) else {
            return Vec::new();
        };
        st.failover_from = None;
        st.assign_retry_at = Some(retry_at);
        if st.phase == Phase::Assigning {
            st.phase = Phase::Idle;
            return Vec::new();
        }
        self.release(vip)
    }

    /// Sends one announcement round for an owned VIP if it is due.
    fn round(&mut self, now: Instant, vip: IpAddr) -> Vec<Action> {
        let Some(st) = self.vips.get_mut(&vip) else {
            return Vec::new();
        };
        let Phase::Owned {
            rounds_left,
            next,
            burst,
            late,
        } = st.phase
        else {
            return Vec::new();
        };
        if now < next {
            return Vec::new();
        }
        // A round due while the VIP is held for its successor keeps its
        // place in the schedule but sends nothing: the successor has
        // announced it (or is about to), and a late round or refresh of
        // ours would pull the LAN back here just before we release it.
        // Seen on the real cluster: a late round 20 ms after the new
        // pod's GARP, then the release, lost 2 pings at 20 ms.
        let out = if st.handing_over {
            Vec::new()
        } else {
            self.metrics.count_announce(vip);
            st.last_announce = Some(now);
            announce_frames(vip, &st.link)
        };
        if let Some(from) = st.failover_from.take() {
            let took = now.saturating_duration_since(from);
            self.metrics.failover_seconds.observe(took.as_secs_f64());
            tracing::info!(%vip, latency_ms = took.as_millis() as u64, "failover: announced");
        }
        let (rounds_left, next, late) = if rounds_left > 1 {
            (rounds_left - 1, now + self.timers.garp_interval, late)
        } else {
            // The late rounds still ahead (a long burst may have passed
            // some), then refreshes.
            match LATE_ROUNDS
                .iter()
                .enumerate()
                .skip(late)
                .find(|(_, d)| burst + **d > now)
            {
                Some((i, d)) => (0, burst + *d, i + 1),
                None => (0, now + self.timers.refresh_interval, LATE_ROUNDS.len()),
            }
        };
        st.phase = Phase::Owned {
            rounds_left,
            next,
            burst,
            late,
        };
        out
    }

    /// Marks `vip` as held for a successor (make-before-break) or not:
    /// while held it is still answered but no longer announced (see
    /// [`Self::round`]). A handover called off (the successor is gone, or
    /// we win it back) announces it again at once, with a full burst: the
    /// LAN may have followed the successor meanwhile.
    pub fn set_handing_over(&mut self, now: Instant, vip: IpAddr, on: bool) {
        let count = self.timers.garp_count;
        let Some(st) = self.vips.get_mut(&vip) else {
            return;
        };
        if std::mem::replace(&mut st.handing_over, on) == on || on {
            return;
        }
        st.phase.restart_burst(now, count);
    }

    /// Stops announcing `vip`: no more answers, and the address is
    /// unassigned.
    pub fn release(&mut self, vip: IpAddr) -> Vec<Action> {
        let Some(st) = self.vips.get_mut(&vip) else {
            return Vec::new();
        };
        let was = std::mem::replace(&mut st.phase, Phase::Idle);
        let mut out = Vec::new();
        // Assigning: the `Assign` may be in the caller's batch still; this
        // cancels it.
        if let Phase::Assigning = was {
            out.push(Action::Unassign(vip));
        }
        if let Phase::Owned { .. } = was {
            out.push(Action::Unassign(vip));
            if let IpAddr::V6(v6) = vip {
                out.push(Action::LeaveSolicitedNode {
                    iface: st.link.iface.clone(),
                    vip: v6,
                });
            }
        }
        out
    }

    /// Drops the state of a VIP that left the configuration; a claimed one
    /// must be released first, so this never silences an announced VIP.
    pub fn forget(&mut self, vip: IpAddr) {
        if !self.is_claimed(vip) {
            self.vips.remove(&vip);
        }
    }

    /// Re-announces every owned VIP (on `iface`, or all if `None`) with a
    /// full burst: the link came back, or a partition healed.
    pub fn reannounce(&mut self, now: Instant, iface: Option<&str>) -> Vec<Action> {
        // Only timers change here; `due` then sends the first round.
        let count = self.timers.garp_count;
        for st in self.vips.values_mut() {
            if iface.is_some_and(|i| i != st.link.iface) {
                continue;
            }
            st.phase.restart_burst(now, count);
        }
        self.due(now)
    }

    /// The earliest time [`Self::due`] has work (or a VIP's assign backoff
    /// ends, which changes what this node is eligible for).
    pub fn next_deadline(&self) -> Option<Instant> {
        let backoff = self.vips.values().filter_map(|s| s.assign_retry_at);
        self.vips
            .values()
            .filter_map(|s| match &s.phase {
                Phase::Idle | Phase::Assigning => None,
                Phase::Probing {
                    deadline,
                    second_probe,
                } => Some(second_probe.map_or(*deadline, |p| p.min(*deadline))),
                Phase::Owned { next, .. } => Some(*next),
                Phase::Conflict { retry_at, .. } => Some(*retry_at),
            })
            .chain(backoff)
            .min()
    }

    /// Runs every timer that is due at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let vips: Vec<IpAddr> = self.vips.keys().copied().collect();
        for vip in vips {
            let Some(st) = self.vips.get_mut(&vip) else {
                continue;
            };
            if st.assign_retry_at.is_some_and(|t| now >= t) {
                st.assign_retry_at = None;
            }
            match st.phase.clone() {
                Phase::Idle | Phase::Assigning => {}
                Phase::Probing {
                    deadline,
                    second_probe,
                } => {
                    if now >= deadline {
                        tracing::info!(%vip, iface = %st.link.iface, "probe: no answer, claiming");
                        out.extend(self.own(now, vip));
                    } else if second_probe.is_some_and(|p| now >= p) {
                        st.phase = Phase::Probing {
                            deadline,
                            second_probe: None,
                        };
                        self.metrics.probes_sent.inc();
                        out.extend(probe_frames(vip, &st.link));
                    }
                }
                Phase::Owned { .. } => out.extend(self.round(now, vip)),
                Phase::Conflict { retry_at, .. } => {
                    if now >= retry_at {
                        out.extend(self.start_probe(now, vip));
                    }
                }
            }
        }
        out
    }
}
