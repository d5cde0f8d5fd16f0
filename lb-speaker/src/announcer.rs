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
//! ([`flatlan_ipam::probe::evidence`]), the rules the CNI plugin's probe
//! applies; this module adds what only a speaker knows: which interface the
//! VIP is on, and that other speakers' MACs are not foreign.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flatlan_ipam::frame::ndp::{ipv6_multicast_mac, ALL_NODES};
use flatlan_ipam::frame::{
    solicited_node_multicast_mac, ArpOp, ArpPacket, EtherType, EthernetHeader, Frame, NdpMessage,
    NeighborAdvertisement, NeighborSolicitation,
};
use flatlan_ipam::mac::MacAddr;
use flatlan_ipam::probe::evidence::{arp_sighting, ndp_sighting, Evidence, Sighting};

use crate::config::Timers;
use crate::log_limit::{LogLimit, EVERY as LOG_EVERY};
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

/// Something the engine must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a whole Ethernet frame on an interface.
    Send {
        /// Interface name.
        iface: String,
        /// The frame.
        frame: Frame,
    },
    /// Start accepting traffic for the VIP (see [`crate::assign`]).
    Assign(IpAddr),
    /// Stop accepting traffic for the VIP.
    Unassign(IpAddr),
    /// Receive the NS for an IPv6 VIP: join its solicited-node multicast
    /// group on the interface (VIPs whose low 24 bits match share one).
    JoinSolicitedNode {
        /// Interface name.
        iface: String,
        /// The VIP.
        vip: Ipv6Addr,
    },
    /// Undo [`Action::JoinSolicitedNode`] for this VIP.
    LeaveSolicitedNode {
        /// Interface name.
        iface: String,
        /// The VIP.
        vip: Ipv6Addr,
    },
}

impl Action {
    /// The VIP this action is about: for a frame, the address it claims,
    /// probes or answers for (ARP sender or target, NDP target).
    pub fn vip(&self) -> Option<IpAddr> {
        match self {
            Action::Assign(v) | Action::Unassign(v) => Some(*v),
            Action::Send { frame, .. } => frame_vip(frame.as_bytes()),
            Action::JoinSolicitedNode { vip, .. } | Action::LeaveSolicitedNode { vip, .. } => {
                Some(IpAddr::V6(*vip))
            }
        }
    }
}

/// The address an ARP or NDP frame is about, as [`Action::vip`] describes.
fn frame_vip(frame: &[u8]) -> Option<IpAddr> {
    match flatlan_ipam::frame::ether::peek_ethertype(frame) {
        Some(EtherType::ARP) => {
            let (_, arp) = ArpPacket::parse_frame(frame).ok()?;
            // A probe's sender is 0.0.0.0; what it asks about is the target.
            let about = if arp.spa.is_unspecified() {
                arp.tpa
            } else {
                arp.spa
            };
            Some(IpAddr::V4(about))
        }
        Some(EtherType::IPV6) => {
            let (_, msg) = NdpMessage::parse_frame(frame).ok()?;
            Some(IpAddr::V6(msg.target()))
        }
        _ => None,
    }
}

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

fn v6_src(vip: Ipv6Addr) -> Ipv6Addr {
    // The NA's IPv6 source: the VIP itself. RFC 4861 §7.2.4 asks for "an
    // address assigned to the interface"; the VIP is the only address we
    // know is ours on every interface, and receivers do not check.
    vip
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
        let out = announce_frames(vip, &st.link);
        self.metrics.count_announce(vip);
        st.last_announce = Some(now);
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
            if let Phase::Owned {
                rounds_left,
                next,
                burst,
                late,
            } = &mut st.phase
            {
                *rounds_left = count;
                *next = now;
                *burst = now;
                *late = 0;
            }
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

    /// Handles one received Ethernet frame from `iface`. `is_member` says
    /// whether a MAC belongs to another speaker.
    pub fn on_frame(
        &mut self,
        now: Instant,
        iface: &str,
        frame: &[u8],
        is_member: &dyn Fn(MacAddr) -> bool,
    ) -> Vec<Action> {
        match flatlan_ipam::frame::ether::peek_ethertype(frame) {
            Some(EtherType::ARP) => match ArpPacket::parse_frame(frame) {
                Ok((eth, arp)) => self.on_arp(now, iface, eth, arp, is_member),
                Err(_) => Vec::new(),
            },
            Some(EtherType::IPV6) => match NdpMessage::parse_frame(frame) {
                Ok((eth, msg)) => self.on_ndp(now, iface, eth, msg, is_member),
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn conflict(&mut self, now: Instant, vip: IpAddr, mac: MacAddr, how: &str) {
        let retry = self.timers.conflict_retry;
        if let Some(st) = self.vips.get_mut(&vip) {
            if let Some(held) = self.conflict_log.pass(now, &self.metrics) {
                tracing::warn!(%vip, %mac, iface = %st.link.iface, how, more_since_last = held,
                    "conflict: another device answers for this VIP; refusing to announce it \
                     (logged at most every {LOG_EVERY:?}, all counted in \
                     flatlan_speaker_conflicts_total)");
            }
            st.phase = Phase::Conflict {
                mac,
                retry_at: now + retry,
            };
            st.conflict = Some((mac, now));
            self.metrics.conflicts.inc();
        }
    }

    /// A foreign claim while we own the VIP: alarm, and defend at most once
    /// per [`DEFEND_INTERVAL`].
    fn foreign(&mut self, now: Instant, vip: IpAddr, mac: MacAddr, how: &str) -> Vec<Action> {
        let Some(st) = self.vips.get_mut(&vip) else {
            return Vec::new();
        };
        if let Some(held) = self.foreign_log.pass(now, &self.metrics) {
            tracing::warn!(%vip, %mac, iface = %st.link.iface, how, more_since_last = held,
                "alarm: a foreign device claims a VIP we announce (logged at most every \
                 {LOG_EVERY:?}, all counted in flatlan_speaker_foreign_answers_total)");
        }
        self.metrics.foreign_answers.inc();
        st.foreign = Some((mac, now));
        if st
            .last_defend
            .is_some_and(|t| now.saturating_duration_since(t) < DEFEND_INTERVAL)
        {
            return Vec::new();
        }
        st.last_defend = Some(now);
        st.last_announce = Some(now);
        self.metrics.count_announce(vip);
        announce_frames(vip, &st.link)
    }

    fn on_arp(
        &mut self,
        now: Instant,
        iface: &str,
        eth: EthernetHeader,
        arp: ArpPacket,
        is_member: &dyn Fn(MacAddr) -> bool,
    ) -> Vec<Action> {
        // Who is this about? The claimed address (spa) or, for a probe, the
        // one being chosen (tpa): the address the classifier sights.
        let about = if arp.spa.is_unspecified() {
            arp.tpa
        } else {
            arp.spa
        };
        let asks = IpAddr::V4(arp.tpa);
        // Someone else asserting the address (reply, GARP, probe answer)
        // or probing for it too?
        let mut out = self.watch(
            now,
            iface,
            IpAddr::V4(about),
            |ours| arp_sighting(&eth, &arp, ours),
            is_member,
        );

        // A request we should answer?
        if arp.op == ArpOp::Request && !arp.is_gratuitous() {
            if let Some(st) = self.vips.get(&asks) {
                let for_us = eth.dst.is_broadcast() || eth.dst == st.link.mac;
                if matches!(st.phase, Phase::Owned { .. })
                    && st.link.iface == iface
                    && for_us
                    && arp.sha != st.link.mac
                    && arp.sha.is_unicast()
                {
                    self.metrics.arp_requests_received.inc();
                    let reply = ArpPacket::reply(st.link.mac, arp.tpa, arp.sha, arp.spa);
                    // `eth_dst()` of a reply is the asker's MAC (unicast),
                    // also for probes (spa 0.0.0.0): the reply still names
                    // the VIP, which is the defence.
                    let frame = reply.to_frame();
                    self.metrics.arp_replies_sent.inc();
                    out.push(Action::Send {
                        iface: iface.to_owned(),
                        frame,
                    });
                }
            }
        }
        out
    }

    fn on_ndp(
        &mut self,
        now: Instant,
        iface: &str,
        eth: EthernetHeader,
        msg: NdpMessage,
        is_member: &dyn Fn(MacAddr) -> bool,
    ) -> Vec<Action> {
        let vip = IpAddr::V6(msg.target());
        let out = self.watch(
            now,
            iface,
            vip,
            |ours| ndp_sighting(&eth, &msg, ours),
            is_member,
        );
        // What is left is answering an NS for a VIP we own.
        let NdpMessage::Solicitation(ns) = msg else {
            return out;
        };
        let Some(st) = self.vips.get(&vip) else {
            return out;
        };
        if st.link.iface != iface
            || eth.src == st.link.mac
            || !matches!(st.phase, Phase::Owned { .. })
        {
            return out;
        }
        // An NS is never a claim, so `out` is empty here.
        self.metrics.ns_received.inc();
        let IpAddr::V6(v6) = vip else {
            return out;
        };
        let na = NeighborAdvertisement::solicited_reply(v6_src(v6), st.link.mac, v6, ns.src);
        let dst = if ns.is_dad() {
            ipv6_multicast_mac(ALL_NODES)
        } else {
            ns.source_ll.unwrap_or(eth.src)
        };
        match na.to_frame(st.link.mac, dst) {
            Ok(frame) => {
                self.metrics.na_sent.inc();
                vec![Action::Send {
                    iface: iface.to_owned(),
                    frame,
                }]
            }
            Err(e) => {
                tracing::debug!(%vip, "cannot build NA: {e}");
                out
            }
        }
    }

    /// Another device using or claiming `about`, judged by the IPAM probe's
    /// rules ([`flatlan_ipam::probe::evidence`]; `sight` runs them for the
    /// VIP's own MAC, whose frames are never evidence). While the VIP is
    /// probed, any evidence refuses it: an answer to our probe, or another
    /// host probing for it at the same moment (RFC 5227 §2.1.1, RFC 4862
    /// §5.4.3). While it is owned, a claim (reply, announcement, NA)
    /// raises the alarm; a probe for it is answered instead (by the
    /// caller). Evidence from another interface is about another link, and
    /// members' MACs are not foreign: speakers claim VIPs from each other.
    fn watch(
        &mut self,
        now: Instant,
        iface: &str,
        about: IpAddr,
        sight: impl FnOnce(MacAddr) -> Option<Sighting>,
        is_member: &dyn Fn(MacAddr) -> bool,
    ) -> Vec<Action> {
        let Some(st) = self.vips.get(&about) else {
            return Vec::new();
        };
        if st.link.iface != iface {
            return Vec::new();
        }
        let Some(s) = sight(st.link.mac).filter(|s| s.addr == about && !is_member(s.mac)) else {
            return Vec::new();
        };
        match st.phase {
            Phase::Probing { .. } => {
                self.conflict(now, about, s.mac, how(s.evidence));
                Vec::new()
            }
            Phase::Owned { .. } if s.evidence.is_claim() => {
                self.foreign(now, about, s.mac, how(s.evidence))
            }
            _ => Vec::new(),
        }
    }
}

/// How a conflict was seen, for the log.
fn how(e: Evidence) -> &'static str {
    match e {
        Evidence::ArpReply => "ARP reply",
        Evidence::ArpSender => "ARP",
        Evidence::SimultaneousArpProbe => "simultaneous probe",
        Evidence::NeighborAdvertisement => "NA",
        Evidence::SimultaneousDad => "simultaneous DAD",
        Evidence::SolicitationSender => "NS",
    }
}

/// The probe frames for a VIP.
pub fn probe_frames(vip: IpAddr, link: &Link) -> Vec<Action> {
    let frame = match vip {
        IpAddr::V4(v4) => ArpPacket::probe(link.mac, v4).to_frame(),
        IpAddr::V6(v6) => {
            let ns = NeighborSolicitation::dad(v6);
            match ns.to_frame(link.mac, solicited_node_multicast_mac(v6)) {
                Ok(f) => f,
                Err(_) => return Vec::new(),
            }
        }
    };
    vec![Action::Send {
        iface: link.iface.clone(),
        frame,
    }]
}

/// One announcement round: GARP request + reply (IPv4), or an unsolicited
/// NA with O=1 to all-nodes (IPv6).
pub fn announce_frames(vip: IpAddr, link: &Link) -> Vec<Action> {
    let frames: Vec<Frame> = match vip {
        IpAddr::V4(v4) => vec![
            ArpPacket::gratuitous_request(link.mac, v4).to_frame(),
            ArpPacket::gratuitous_reply(link.mac, v4).to_frame(),
        ],
        IpAddr::V6(v6) => {
            let na = NeighborAdvertisement::unsolicited(v6_src(v6), link.mac, v6);
            match na.to_frame(link.mac, ipv6_multicast_mac(ALL_NODES)) {
                Ok(f) => vec![f],
                Err(_) => Vec::new(),
            }
        }
    };
    frames
        .into_iter()
        .map(|frame| Action::Send {
            iface: link.iface.clone(),
            frame,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const OURS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x99]);
    const MEMBER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

    fn link() -> Link {
        Link {
            iface: "eth0".into(),
            mac: OURS,
        }
    }

    fn ann() -> (Announcer, Arc<Metrics>) {
        let m = Arc::new(Metrics::default());
        (Announcer::new(Timers::default(), m.clone()), m)
    }

    fn sent(acts: &[Action]) -> Vec<Vec<u8>> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Send { frame, .. } => Some(frame.as_bytes().to_vec()),
                _ => None,
            })
            .collect()
    }

    /// The first 42 bytes, in hex, of a broadcast GARP from `OURS` for
    /// `VIP` with ARP opcode `op` and target hardware address `tha`.
    fn garp_hex(op: &str, tha: &str) -> String {
        [
            "ffffffffffff",
            "020000000001",
            "0806", // broadcast, from us, ARP
            "0001",
            "0800",
            "06",
            "04", // Ethernet/IPv4
            op,
            "020000000001",
            "0a000064", // sha, spa = VIP
            tha,
            "0a000064", // tpa = VIP
        ]
        .concat()
    }

    fn member(m: MacAddr) -> bool {
        m == MEMBER
    }

    #[test]
    fn first_claim_probes_then_announces_both_forms() {
        let (mut a, m) = ann();
        let t0 = Instant::now();
        let acts = a.claim(t0, IpAddr::V4(VIP), link(), None);
        let f = sent(&acts);
        assert_eq!(f.len(), 1);
        let (eth, arp) = ArpPacket::parse_frame(&f[0]).unwrap();
        assert!(arp.is_probe() && eth.dst.is_broadcast() && arp.tpa == VIP);
        assert!(!a.is_owned(IpAddr::V4(VIP)));
        // Second probe half-way, then the claim.
        assert_eq!(sent(&a.due(t0 + Duration::from_millis(50))).len(), 1);
        let acts = a.due(t0 + Duration::from_millis(100));
        assert_eq!(acts[0], Action::Assign(IpAddr::V4(VIP)));
        let f = sent(&acts);
        // Golden bytes of the two GARP forms: a request with tha = 0, and
        // a reply with tha = sha.
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&f[0][..42]), garp_hex("0001", "000000000000"));
        assert_eq!(hex(&f[1][..42]), garp_hex("0002", "020000000001"));
        assert_eq!(m.garps_sent.get(), 2);
        // garpCount rounds, the late rounds past 1 s, then refreshes.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(sent(&a.due(t1 + Duration::from_millis(100))).len(), 2);
        assert_eq!(sent(&a.due(t1 + Duration::from_millis(200))).len(), 2);
        assert!(sent(&a.due(t1 + Duration::from_millis(300))).is_empty());
        let mut at = Vec::new();
        while let Some(t) = a.next_deadline() {
            if t > t1 + Duration::from_secs(100) {
                break;
            }
            assert_eq!(sent(&a.due(t)).len(), 2);
            at.push(t.duration_since(t1).as_millis());
        }
        assert_eq!(at, [1100, 2200, 4400, 34_400, 64_400, 94_400]);
    }

    /// A burst longer than the first late rounds skips those, and a
    /// re-announcement (link back, partition healed) repeats them all.
    #[test]
    fn late_rounds_follow_any_burst_and_every_reannouncement() {
        let timers = Timers {
            garp_count: 15,
            ..Timers::default()
        };
        let m = Arc::new(Metrics::default());
        let mut a = Announcer::new(timers, m);
        let t0 = Instant::now();
        a.claim(t0, IpAddr::V4(VIP), link(), Some(t0));
        let mut at = Vec::new();
        let mut run = |a: &mut Announcer, from: Instant, until: Duration| {
            at.clear();
            while let Some(t) = a.next_deadline() {
                if t > from + until {
                    break;
                }
                a.due(t);
                at.push(t.duration_since(from).as_millis());
            }
            at.clone()
        };
        let first = run(&mut a, t0, Duration::from_secs(5));
        assert_eq!(first.len(), 14 + 2, "{first:?}");
        assert_eq!(first[13..], [1400, 2200, 4400]);
        let t2 = t0 + Duration::from_secs(100);
        a.reannounce(t2, None);
        let again = run(&mut a, t2, Duration::from_secs(5));
        assert_eq!(again, first);
    }

    /// A flood of spoofed ARP claims (any pod on the bridge can send
    /// them) is counted one by one but logged once per period.
    #[test]
    fn a_flood_of_foreign_claims_is_counted_and_logged_once() {
        let (mut a, m, t0) = owned();
        let g = ArpPacket::gratuitous_reply(CLIENT, VIP).to_frame();
        for i in 0..1000 {
            a.on_frame(t0 + Duration::from_millis(i), "eth0", &g, &member);
        }
        assert_eq!(m.foreign_answers.get(), 1000);
        assert_eq!(m.log_suppressed.get(), 999);
    }

    #[test]
    fn probe_answer_from_a_foreign_mac_refuses() {
        let (mut a, m) = ann();
        let t0 = Instant::now();
        a.claim(t0, IpAddr::V4(VIP), link(), None);
        // Linux answers a probe: op=2, spa=VIP, to our MAC.
        let reply = ArpPacket::reply(CLIENT, VIP, OURS, Ipv4Addr::UNSPECIFIED).to_frame();
        assert!(a.on_frame(t0, "eth0", &reply, &member).is_empty());
        assert_eq!(a.conflict_mac(IpAddr::V4(VIP)), Some(CLIENT));
        assert!(a.due(t0 + Duration::from_millis(200)).is_empty());
        assert!(!a.is_owned(IpAddr::V4(VIP)));
        assert_eq!(m.conflicts.get(), 1);
        // Retried later.
        assert_eq!(sent(&a.due(t0 + Timers::default().conflict_retry)).len(), 1);
    }

    /// What refuses a probed VIP is the IPAM probe's evidence, from a
    /// non-member on the VIP's interface.
    #[test]
    fn probe_conflicts_follow_the_ipam_probe_rules() {
        let v4 = IpAddr::V4(VIP);
        let probing = || {
            let (mut a, m) = ann();
            a.claim(Instant::now(), v4, link(), None);
            (a, m)
        };
        let refused = |frame: &[u8], iface: &str| {
            let (mut a, m) = probing();
            a.on_frame(Instant::now(), iface, frame, &member);
            (a.conflict_mac(v4), m.conflicts.get())
        };
        // Another host probing for it at the same moment (RFC 5227 §2.1.1).
        let probe = ArpPacket::probe(CLIENT, VIP).to_frame();
        assert_eq!(refused(&probe, "eth0"), (Some(CLIENT), 1));
        // ... but not on another link, and not another speaker.
        assert_eq!(refused(&probe, "eth1"), (None, 0));
        let member_probe = ArpPacket::probe(MEMBER, VIP).to_frame();
        assert_eq!(refused(&member_probe, "eth0"), (None, 0));
        // Someone asking for the VIP proves nothing.
        let ask = ArpPacket::request(CLIENT, Ipv4Addr::new(10, 0, 0, 2), VIP).to_frame();
        assert_eq!(refused(&ask, "eth0"), (None, 0));

        let vip: Ipv6Addr = "fd00::100".parse().unwrap();
        let refused6 = |frame: &[u8]| {
            let (mut a, _) = ann();
            a.claim(Instant::now(), IpAddr::V6(vip), link(), None);
            a.on_frame(Instant::now(), "eth0", frame, &member);
            a.conflict_mac(IpAddr::V6(vip))
        };
        let group = solicited_node_multicast_mac(vip);
        let na = NeighborAdvertisement::unsolicited(vip, CLIENT, vip)
            .to_frame(CLIENT, ipv6_multicast_mac(ALL_NODES))
            .unwrap();
        assert_eq!(refused6(&na), Some(CLIENT));
        let dad = NeighborSolicitation::dad(vip)
            .to_frame(CLIENT, group)
            .unwrap();
        assert_eq!(refused6(&dad), Some(CLIENT));
        let client: Ipv6Addr = "fd00::2".parse().unwrap();
        let resolve = NeighborSolicitation::resolve(client, CLIENT, vip)
            .to_frame(CLIENT, group)
            .unwrap();
        assert_eq!(refused6(&resolve), None);
    }

    #[test]
    fn takeover_skips_the_probe_and_counts_a_failover() {
        let (mut a, m) = ann();
        let t0 = Instant::now();
        let acts = a.claim(
            t0,
            IpAddr::V4(VIP),
            link(),
            Some(t0 - Duration::from_millis(300)),
        );
        assert_eq!(sent(&acts).len(), 2);
        assert_eq!(m.failovers_total.get(), 1);
        assert_eq!(m.failover_seconds.count(), 1);
    }

    fn owned() -> (Announcer, Arc<Metrics>, Instant) {
        let (mut a, m) = ann();
        let t0 = Instant::now();
        a.claim(t0, IpAddr::V4(VIP), link(), Some(t0));
        (a, m, t0)
    }

    #[test]
    fn answers_broadcast_and_our_mac_requests_only() {
        let (mut a, m, t0) = owned();
        let asker = Ipv4Addr::new(10, 0, 0, 2);
        let req = ArpPacket::request(CLIENT, asker, VIP);
        let f = sent(&a.on_frame(t0, "eth0", &req.to_frame(), &member));
        assert_eq!(f.len(), 1);
        let (eth, r) = ArpPacket::parse_frame(&f[0]).unwrap();
        assert_eq!(eth.dst, CLIENT, "the reply is unicast");
        assert_eq!(
            (r.op, r.sha, r.spa, r.tha, r.tpa),
            (ArpOp::Reply, OURS, VIP, CLIENT, asker)
        );
        // Unicast to us: answered (a cache refresh).
        let mut buf = [0u8; 64];
        req.write_frame_to(OURS, &mut buf).unwrap();
        assert_eq!(sent(&a.on_frame(t0, "eth0", &buf[..60], &member)).len(), 1);
        // Unicast to someone else: not ours to answer.
        req.write_frame_to(MEMBER, &mut buf).unwrap();
        assert!(a.on_frame(t0, "eth0", &buf[..60], &member).is_empty());
        // Other interface or other IP: silent.
        assert!(a.on_frame(t0, "eth1", &req.to_frame(), &member).is_empty());
        let other = ArpPacket::request(CLIENT, asker, Ipv4Addr::new(10, 0, 0, 7));
        assert!(a
            .on_frame(t0, "eth0", &other.to_frame(), &member)
            .is_empty());
        assert_eq!(m.arp_replies_sent.get(), 2);
        // Released: silent.
        assert_eq!(
            a.release(IpAddr::V4(VIP)),
            vec![Action::Unassign(IpAddr::V4(VIP))]
        );
        assert!(a.on_frame(t0, "eth0", &req.to_frame(), &member).is_empty());
    }

    #[test]
    fn foreign_garp_raises_an_alarm_but_a_member_does_not() {
        let (mut a, m, t0) = owned();
        let g = ArpPacket::gratuitous_reply(MEMBER, VIP).to_frame();
        assert!(a.on_frame(t0, "eth0", &g, &member).is_empty());
        assert_eq!(m.foreign_answers.get(), 0);
        let g = ArpPacket::gratuitous_request(CLIENT, VIP).to_frame();
        let defend = sent(&a.on_frame(t0, "eth0", &g, &member));
        assert_eq!(defend.len(), 2, "one defence round");
        assert_eq!(m.foreign_answers.get(), 1);
        assert_eq!(
            a.vips()[&IpAddr::V4(VIP)].foreign.map(|f| f.0),
            Some(CLIENT)
        );
        // Rate-limited defence.
        assert!(a.on_frame(t0, "eth0", &g, &member).is_empty());
        assert_eq!(m.foreign_answers.get(), 2);
    }

    #[test]
    fn ipv6_unsolicited_na_has_override_and_ns_gets_solicited_na() {
        let (mut a, m) = ann();
        let t0 = Instant::now();
        let vip: Ipv6Addr = "fd00::100".parse().unwrap();
        let acts = a.claim(t0, IpAddr::V6(vip), link(), Some(t0));
        assert!(acts.contains(&Action::JoinSolicitedNode {
            iface: "eth0".into(),
            vip
        }));
        let f = sent(&acts);
        let (eth, msg) = NdpMessage::parse_frame(&f[0]).unwrap();
        let NdpMessage::Advertisement(na) = msg else {
            panic!("not an NA")
        };
        assert!(na.override_flag && !na.solicited);
        assert_eq!(na.dst, ALL_NODES);
        assert_eq!(eth.dst, MacAddr([0x33, 0x33, 0, 0, 0, 1]));
        assert_eq!(na.target_ll, Some(OURS));

        let client: Ipv6Addr = "fd00::2".parse().unwrap();
        let ns = NeighborSolicitation::resolve(client, CLIENT, vip)
            .to_frame(CLIENT, solicited_node_multicast_mac(vip))
            .unwrap();
        let f = sent(&a.on_frame(t0, "eth0", &ns, &member));
        let (eth, msg) = NdpMessage::parse_frame(&f[0]).unwrap();
        let NdpMessage::Advertisement(na) = msg else {
            panic!("not an NA")
        };
        assert!(na.override_flag && na.solicited);
        assert_eq!((eth.dst, na.dst, na.target), (CLIENT, client, vip));
        assert_eq!(m.ns_received.get(), 1);
    }

    #[test]
    fn every_frame_names_its_vip() {
        let v4 = IpAddr::V4(VIP);
        let v6: IpAddr = "fd00::100".parse().unwrap();
        for vip in [v4, v6] {
            let frames: Vec<Action> = probe_frames(vip, &link())
                .into_iter()
                .chain(announce_frames(vip, &link()))
                .collect();
            assert!(!frames.is_empty());
            for a in frames {
                assert_eq!(a.vip(), Some(vip), "{a:?}");
            }
        }
        // An ARP reply for an owned VIP names the VIP, not the asker.
        let (mut a, _, t0) = owned();
        let req = ArpPacket::request(CLIENT, Ipv4Addr::new(10, 0, 0, 2), VIP).to_frame();
        let acts = a.on_frame(t0, "eth0", &req, &member);
        assert_eq!(acts.len(), 1);
        assert_eq!(acts[0].vip(), Some(v4));
    }

    #[test]
    fn many_probes_ending_together_announce_each_vip_once() {
        let (mut a, m) = ann();
        let t0 = Instant::now();
        for i in 0..1000u32 {
            a.claim(
                t0,
                IpAddr::V4(Ipv4Addr::from(0x0a4e_0000 + i)),
                link(),
                None,
            );
        }
        let acts = a.due(t0 + Duration::from_millis(100));
        assert_eq!(sent(&acts).len(), 2000);
        assert_eq!(m.garps_sent.get(), 2000);
        assert_eq!(a.owned().count(), 1000);
    }
}
