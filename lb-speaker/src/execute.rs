//! Carrying out a turn: the planner's [`Intent`]s become the announcer's
//! [`Action`]s, and those become frames on the packet sockets, VIPs added
//! to or taken off `lo`, and solicited-node group joins. Everything one
//! loop iteration decided is carried out here, once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::announcer::{Action, Announcer, Link, Phase};
use crate::assign::{self, HostAddrs};
use crate::iface::IfaceInfo;
use crate::log_limit::EngineNoise;
use crate::metrics::Metrics;
use crate::plan::Intent;
use crate::sockets::Sockets;

/// The host side of the speaker: `lo`, the interfaces' sysctls, the
/// packet sockets.
pub struct Executor {
    host: Box<dyn HostAddrs>,
    /// Whether VIPs go on `lo` (and interfaces get the ARP sysctls).
    assign: bool,
    sockets: Sockets,
    /// Interfaces whose sysctls are set.
    prepared: BTreeSet<String>,
    metrics: Arc<Metrics>,
    noise: EngineNoise,
    /// When this executor last put each VIP on `lo` (see
    /// [`Self::reassign_lost`]).
    added_at: BTreeMap<IpAddr, Instant>,
    /// When a VIP missing from a table that may have predated its add
    /// is to be looked at again, against the table of then.
    recheck_at: Option<Instant>,
}

/// How long after we add a VIP an interface table may still predate the
/// add: the rtnetlink dump runs on its own task, and one that started
/// before a burst of adds (100 Services created at once on a real
/// cluster) arrives without them. A VIP missing from such a table is
/// looked at again once the window has passed ([`Executor::recheck_at`]),
/// against the newest table: by then it shows our add, so one still
/// missing was really removed.
const ADD_SETTLE: Duration = Duration::from_secs(1);

impl Executor {
    /// An executor with no sockets open and no interface prepared.
    pub fn new(
        host: Box<dyn HostAddrs>,
        assign: bool,
        sockets: Sockets,
        metrics: Arc<Metrics>,
    ) -> Self {
        Executor {
            host,
            assign,
            sockets,
            prepared: BTreeSet::new(),
            metrics,
            noise: EngineNoise::default(),
            added_at: BTreeMap::new(),
            recheck_at: None,
        }
    }

    /// Turns `intents` into announcer actions, in order. A claim opens its
    /// interface's sockets (and sets its sysctls) first; one that cannot is
    /// skipped and tried again next turn.
    pub fn apply(&mut self, intents: Vec<Intent>, announcer: &mut Announcer) -> Vec<Action> {
        let mut acts = Vec::new();
        for intent in intents {
            match intent {
                Intent::Claim {
                    vip,
                    iface,
                    takeover,
                } => {
                    if let Err(e) = self.ensure_sockets(&iface, vip.is_ipv6()) {
                        tracing::error!(%vip, iface = %iface.name, "cannot open packet socket: {e}");
                        continue;
                    }
                    let link = Link {
                        iface: iface.name.clone(),
                        mac: iface.mac,
                    };
                    // The clock now, not the turn's: see `Intent::Claim`.
                    acts.extend(announcer.claim(Instant::now(), vip, link, takeover));
                }
                Intent::Release(vip) => acts.extend(announcer.release(vip)),
                Intent::Forget(vip) => {
                    announcer.forget(vip);
                    tracing::info!(%vip, "VIP removed from the source: no longer handled");
                }
                Intent::Reannounce(iface) => {
                    acts.extend(announcer.reannounce(Instant::now(), iface.as_deref()))
                }
            }
        }
        acts
    }

    /// Prepares `i` for claiming a VIP of the family `v6` says: sysctls,
    /// the ARP socket, and the IPv6 socket once an IPv6 VIP is claimed on it.
    pub fn ensure_sockets(&mut self, i: &IfaceInfo, v6: bool) -> crate::Result<()> {
        if self.assign && !self.prepared.contains(&i.name) {
            self.host.prepare_iface(&i.name)?;
            self.prepared.insert(i.name.clone());
        }
        self.sockets.ensure(i, v6)
    }

    /// Carries out `acts`; true if the host refused a VIP (we are no
    /// longer eligible for it: peers should hear so at once).
    pub fn execute(&mut self, announcer: &mut Announcer, acts: Vec<Action>) -> bool {
        let now = Instant::now();
        let acts = net_assignments(acts);
        for a in &acts {
            if let Action::Assign(v) = a {
                self.added_at.insert(*v, now);
            }
        }
        let (acts, failed) =
            assign_or_release(now, announcer, &mut *self.host, &self.metrics, acts);
        let mut unassign = Vec::new();
        for a in acts {
            match a {
                Action::Send { iface, frame } => {
                    match self.sockets.send(&iface, frame.as_bytes()) {
                        None => tracing::debug!(%iface, "no socket to send on"),
                        Some(Ok(())) => {}
                        Some(Err(e)) => {
                            self.metrics.frame_send_errors.inc();
                            if let Some(held) = self.noise.send.pass(Instant::now(), &self.metrics)
                            {
                                tracing::warn!(%iface, more_since_last = held, "send: {e}");
                            }
                        }
                    }
                }
                Action::Assign(_) => {}
                Action::Unassign(vip) => unassign.push(vip),
                Action::JoinSolicitedNode { iface, vip } => self.sockets.group(&iface, vip, true),
                Action::LeaveSolicitedNode { iface, vip } => self.sockets.group(&iface, vip, false),
            }
        }
        // After the frames: a VIP stops being answered before the kernel
        // stops accepting its traffic.
        unassign_all(&mut *self.host, &unassign);
        failed
    }

    /// Keeps the packet sockets of the interfaces a VIP is claimed on, and
    /// only those (see [`Sockets::sync`]). An interface that vanished may
    /// come back as a new device, with default sysctls: prepared again then.
    pub fn sync_sockets(&mut self, announcer: &Announcer, ifaces: &BTreeMap<String, IfaceInfo>) {
        let mut claimed: BTreeMap<String, bool> = BTreeMap::new();
        for (vip, s) in announcer.vips() {
            if !matches!(s.phase, Phase::Idle) {
                *claimed.entry(s.link.iface.clone()).or_default() |= vip.is_ipv6();
            }
        }
        self.sockets.sync(&claimed, ifaces);
        self.prepared.retain(|name| ifaces.contains_key(name));
    }

    /// A new device with this name: its sysctls are the defaults again.
    pub fn recreated(&mut self, name: &str) {
        self.prepared.remove(name);
    }

    /// The interfaces with packet sockets open.
    pub fn socket_ifaces(&self) -> Vec<String> {
        self.sockets.ifaces().map(str::to_owned).collect()
    }

    /// Puts back on `lo` the owned VIPs that are no longer there
    /// ([`assign::lost`]: someone removed them). VIPs we added less than
    /// [`ADD_SETTLE`] before `now` are not judged: the table may predate them.
    pub fn reassign_lost(&mut self, now: Instant, announcer: &Announcer, lo: Option<&IfaceInfo>) {
        if !self.assign {
            return;
        }
        self.added_at
            .retain(|_, t| now.saturating_duration_since(*t) < ADD_SETTLE);
        let owned: BTreeSet<IpAddr> = announcer.owned().collect();
        let (unsure, lost): (Vec<IpAddr>, Vec<IpAddr>) = assign::lost(&owned, lo)
            .into_iter()
            .partition(|v| self.added_at.contains_key(v));
        self.recheck_at = unsure
            .iter()
            .filter_map(|v| self.added_at.get(v))
            .min()
            .map(|t| *t + ADD_SETTLE);
        if lost.is_empty() {
            return;
        }
        tracing::warn!(vips = ?lost, "owned VIPs were removed from lo by someone else: adding them again");
        let failed: BTreeSet<IpAddr> = self
            .host
            .add_many(&lost)
            .into_iter()
            .map(|(vip, e)| {
                tracing::error!(%vip, "cannot add the VIP to lo again: {e}");
                vip
            })
            .collect();
        // Put back now: a table dumped before this add is no removal either.
        for vip in lost.into_iter().filter(|v| !failed.contains(v)) {
            self.added_at.insert(vip, now);
        }
    }

    /// When [`Self::reassign_lost`] wants to look again (a VIP was missing
    /// from a table that may have predated its add).
    pub fn recheck_at(&self) -> Option<Instant> {
        self.recheck_at
    }

    /// Removes `vips` from `lo` (leftovers of a previous run at start).
    pub fn remove_leftovers(&mut self, vips: &[IpAddr]) {
        for (vip, e) in self.host.del_many(vips) {
            tracing::warn!(%vip, "cannot remove a leftover VIP from lo: {e}");
        }
    }

    /// On a clean exit: puts back the interface sysctls we changed, but
    /// only once no VIP is left on `lo`. With `arp_ignore` back at 0 the
    /// kernel would answer ARP for a leftover VIP on the LAN and draw its
    /// traffic here.
    pub fn restore_host(&mut self, vips: &[IpAddr]) {
        let left = self.host.del_many(vips);
        if left.is_empty() {
            self.host.restore_ifaces();
            return;
        }
        for (vip, e) in left {
            tracing::warn!(%vip, "cannot remove the VIP from lo: {e}; keeping arp_ignore/arp_announce");
        }
    }
}

/// Keeps, for each VIP, only its last `Assign` or `Unassign` in `acts`: a
/// batch may release and claim the same VIP (an interface recreated, a
/// conflict retried), and since assigns run first and unassigns last, an
/// earlier `Unassign` would otherwise undo a later `Assign`.
pub(crate) fn net_assignments(acts: Vec<Action>) -> Vec<Action> {
    let mut last: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (i, a) in acts.iter().enumerate() {
        if let Action::Assign(v) | Action::Unassign(v) = a {
            last.insert(*v, i);
        }
    }
    acts.into_iter()
        .enumerate()
        .filter(|(i, a)| match a {
            Action::Assign(v) | Action::Unassign(v) => last.get(v) == Some(i),
            _ => true,
        })
        .map(|(_, a)| a)
        .collect()
}

/// Carries out the `Assign`s among `acts` first, in one batch, so traffic
/// attracted by the announcements is accepted, and returns what is left to
/// do, with the first announcements of the VIPs the host accepted, and
/// whether any failed. A VIP that could not be added to `lo` is not
/// announced: an announced VIP the kernel does not accept draws the LAN's
/// traffic to a node that drops it. It backs off for `conflictRetry`,
/// during which this node is not eligible for it, so the next node by
/// hash announces it; then it is claimed again, so a passing failure heals
/// by itself.
pub(crate) fn assign_or_release(
    now: Instant,
    announcer: &mut Announcer,
    host: &mut dyn HostAddrs,
    metrics: &Metrics,
    mut acts: Vec<Action>,
) -> (Vec<Action>, bool) {
    let assign: Vec<IpAddr> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Assign(v) => Some(*v),
            _ => None,
        })
        .collect();
    let failed: BTreeSet<IpAddr> = host
        .add_many(&assign)
        .into_iter()
        .map(|(vip, e)| {
            tracing::error!(%vip, "cannot add the VIP to lo: {e}; not announcing it, \
                leaving it to another node for a while");
            vip
        })
        .collect();
    metrics.assign_failures.add(failed.len() as u64);
    // Frames for a refused VIP (an announcer that did not wait for the
    // host) are not sent.
    acts.retain(|a| {
        !matches!(a, Action::Send { .. }) || !a.vip().is_some_and(|v| failed.contains(&v))
    });
    for vip in assign {
        if failed.contains(&vip) {
            acts.extend(announcer.assign_failed(now, vip));
        } else {
            acts.extend(announcer.assigned(now, vip));
        }
    }
    (acts, !failed.is_empty())
}

/// Takes `vips` off `lo`. Most batches (every received frame, most turns)
/// release nothing, which costs nothing ([`HostAddrs`]).
pub(crate) fn unassign_all(host: &mut dyn HostAddrs, vips: &[IpAddr]) {
    for (vip, e) in host.del_many(vips) {
        tracing::warn!(%vip, "cannot remove the VIP from lo: {e}");
    }
}
