//! The planner: which VIPs this node claims and releases, decided from a
//! snapshot ([`View`]) with no I/O, no clock and no runtime, so that
//! claims, releases and make-before-break handovers are unit-tested on
//! their own (`plan/tests.rs`).
//!
//! Each turn the engine gathers (heartbeats, frames, source updates,
//! interfaces), asks [`Planner::turn`] what to do, and carries the
//! returned [`Intent`]s out once. The planner keeps only decision state:
//! who owns what (rehashed when the membership version, the VIP list or
//! our own eligibility changed), the handovers under way, the listening
//! window after a start or a link coming back, and the VIPs a reload added
//! (held until peers heard of them) or dropped (held until handed over).
//!
//! Handover (make-before-break), for a VIP we hold but no longer should:
//! it stays claimed until its successor's heartbeat says it announces it,
//! then one heartbeat interval more (packets already on their way still
//! find it here), or until `handoffTimeout`; it goes at once when it is
//! not announced yet, its link is gone, or nobody may take it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use crate::announcer::Announcer;
use crate::config::Timers;
use crate::iface::IfaceInfo;
use crate::membership::Membership;
use crate::ownership::owners;

#[cfg(test)]
mod tests;

/// What the planner sees of the world in one turn.
pub struct View<'a> {
    /// This node's name.
    pub me: &'a str,
    /// Shutting down: eligible for nothing, handing everything over.
    pub leaving: bool,
    /// The VIPs this node may own now, with the interface of each (from
    /// the VIP source's eligibility, the interfaces, and assign backoffs).
    pub mine: &'a BTreeMap<IpAddr, IfaceInfo>,
    /// The live peers.
    pub membership: &'a Membership,
    /// Bumped on every membership event: the peers' eligibility can have
    /// changed only when it moved.
    pub members_version: u64,
    /// The local assignment: what is claimed, owned, refused, and where.
    pub announcer: &'a Announcer,
    /// The interfaces (a dropped VIP is held only while its link runs).
    pub ifaces: &'a BTreeMap<String, IfaceInfo>,
    /// Per peer: when the newest of our challenges it echoed was issued.
    pub heard_us: &'a BTreeMap<String, Instant>,
}

/// Something the engine is to do; carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Open the sockets of `iface` and claim `vip` on it. `takeover` is
    /// when the previous owner (a member) was last heard from: no probe.
    /// The probe window starts when the claim is carried out, not at the
    /// turn's `now`: socket setup earlier in the turn can take longer than
    /// the whole window on a busy node.
    Claim {
        /// The VIP.
        vip: IpAddr,
        /// Its interface.
        iface: IfaceInfo,
        /// See above.
        takeover: Option<Instant>,
    },
    /// Stop announcing `vip` and take it off the host.
    Release(IpAddr),
    /// Forget a VIP the source dropped, once nothing here claims it.
    Forget(IpAddr),
    /// Announce again what we own, on one interface or all (a link came
    /// back, a partition healed).
    Reannounce(Option<String>),
}

/// One turn's decisions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Turn {
    /// What to do, in order.
    pub intents: Vec<Intent>,
    /// Peers should hear our heartbeat now (our eligibility changed).
    pub tell_peers: bool,
    /// Owners or handovers changed: publish the status now.
    pub publish: bool,
    /// Leaving, and nothing is left to hand over: the speaker may exit.
    pub exit: bool,
}

/// The planner's decision state.
#[derive(Debug)]
pub struct Planner {
    timers: Timers,
    /// The VIPs decided about: the source's, plus dropped ones
    /// (`retiring`) until they are handed over or released.
    vips: Vec<IpAddr>,
    /// Bumped when `vips` changes.
    vips_version: u64,
    /// VIPs the source dropped and still claimed here.
    retiring: BTreeSet<IpAddr>,
    /// No new claims before this (see [`Planner::listen`]).
    listen_until: Instant,
    /// VIPs the source added: not claimed before this, unless every live
    /// peer heard of them first (see [`Planner::set_vips`]).
    claim_after: BTreeMap<IpAddr, Instant>,
    /// When the heartbeat that lists them was handed to the sender.
    told_at: Option<Instant>,
    /// The owner of each VIP in our view.
    owners: BTreeMap<IpAddr, String>,
    /// What `owners` was computed from: (members version, VIPs version);
    /// `None` before the first turn.
    owners_from: Option<(u64, u64)>,
    /// Our own eligible set as of the last rehash.
    my_eligible: BTreeSet<IpAddr>,
    /// How many times the owners were recomputed (for tests and logs).
    rehashes: u64,
    /// VIPs we hold but should hand over: since when.
    handover_since: BTreeMap<IpAddr, Instant>,
    /// VIPs whose successor was seen announcing: since when.
    successor_seen: BTreeMap<IpAddr, Instant>,
    /// When we began leaving.
    leaving_since: Option<Instant>,
}

impl Planner {
    /// A planner for `vips`, listening until `now` (see [`Self::listen`]).
    pub fn new(timers: Timers, vips: Vec<IpAddr>, now: Instant) -> Self {
        Planner {
            timers,
            vips,
            vips_version: 0,
            retiring: BTreeSet::new(),
            listen_until: now,
            claim_after: BTreeMap::new(),
            told_at: None,
            owners: BTreeMap::new(),
            owners_from: None,
            my_eligible: BTreeSet::new(),
            rehashes: 0,
            handover_since: BTreeMap::new(),
            successor_seen: BTreeMap::new(),
            leaving_since: None,
        }
    }

    /// The VIPs decided about (the source's and the retiring ones).
    pub fn vips(&self) -> &[IpAddr] {
        &self.vips
    }

    /// The owner of each VIP in our view.
    pub fn owners(&self) -> &BTreeMap<IpAddr, String> {
        &self.owners
    }

    /// True if we hold `vip` for a successor.
    pub fn handing_over(&self, vip: IpAddr) -> bool {
        self.handover_since.contains_key(&vip)
    }

    /// How many times the owners were recomputed.
    pub fn rehashes(&self) -> u64 {
        self.rehashes
    }

    /// VIPs the source added that are not to be claimed yet.
    pub fn held(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.claim_after.keys().copied()
    }

    /// Claims nothing new for two heartbeat intervals, while heartbeats go
    /// out and come in: learning the live members first avoids claiming
    /// (as a probe-less takeover, if we had declared them dead) VIPs a live
    /// peer owns. At start, and when a link comes back: a node whose cable
    /// was out has declared every peer dead and would otherwise take over
    /// all their VIPs at once, then hand them back seconds later.
    pub fn listen(&mut self, now: Instant) {
        self.listen_until = now + self.timers.heartbeat_interval * 2;
    }

    /// Starts handing everything over (SIGTERM/SIGINT).
    pub fn leave(&mut self, now: Instant) {
        self.leaving_since.get_or_insert(now);
    }

    /// Takes the source's new VIP list: added VIPs are decided about from
    /// the next turn (held, see below), dropped ones are handed over like
    /// a leaving node's. Returns true if a VIP was added: the caller hands
    /// peers a heartbeat that lists it and reports when ([`Self::told`]).
    ///
    /// A VIP new to us may be new to every node at once (one SIGHUP to
    /// all): claimed at once, each would be its only eligible node and all
    /// would probe and claim it. So it is held until every live peer has
    /// answered the heartbeat that lists it (they answer a changed member
    /// at once) and this node would own it even if every live peer got
    /// it too, or else for as long as a start listens: a peer that got it
    /// too has said so by then, and the hash picks one. With no peer to
    /// wait for, that is no wait at all.
    pub fn set_vips(&mut self, now: Instant, new: &[IpAddr]) -> bool {
        let hold = now + self.timers.heartbeat_interval * 2;
        let mut added = false;
        for v in new {
            self.retiring.remove(v);
            if !self.vips.contains(v) {
                self.vips.push(*v);
                self.claim_after.insert(*v, hold);
                added = true;
            }
        }
        for v in &self.vips {
            if !new.contains(v) {
                self.retiring.insert(*v);
            }
        }
        self.vips_version += 1;
        added
    }

    /// The heartbeat listing the added VIPs was handed to the sender at
    /// `at`: a peer that echoes a challenge issued since has heard of them.
    pub fn told(&mut self, at: Instant) {
        self.told_at = Some(at);
    }

    /// The next instant a turn can decide something new without any input.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        [
            self.leaving_since.map(|t| t + self.timers.handoff_timeout),
            (now < self.listen_until).then_some(self.listen_until),
            self.handover_since
                .values()
                .map(|t| *t + self.timers.handoff_timeout)
                .min(),
            self.successor_seen
                .values()
                .map(|t| *t + self.timers.heartbeat_interval)
                .min(),
            self.claim_after.values().min().copied(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Recomputes the owners when the members, the VIP list or our own
    /// eligibility changed: with 1,000 VIPs and three members every turn
    /// would cost 3,000 SHA-256s, and turns come with every heartbeat and
    /// interface poll. Returns (rehashed, our eligibility changed).
    fn rehash(&mut self, v: &View) -> (bool, bool) {
        let mine: BTreeSet<IpAddr> = if v.leaving {
            BTreeSet::new()
        } else {
            v.mine.keys().copied().collect()
        };
        let mine_changed = mine != self.my_eligible;
        let from = (v.members_version, self.vips_version);
        if self.owners_from == Some(from) && !mine_changed {
            return (false, false);
        }
        let mut members: Vec<(&str, &BTreeSet<IpAddr>)> = v
            .membership
            .live()
            .iter()
            .map(|(n, m)| (n.as_str(), &m.eligible))
            .collect();
        if !v.leaving {
            members.push((v.me, &mine));
        }
        self.owners = owners(&members, &self.vips);
        self.owners_from = Some(from);
        self.my_eligible = mine;
        self.rehashes += 1;
        (true, mine_changed)
    }

    /// One turn: who should own what, and what to claim and release.
    pub fn turn(&mut self, now: Instant, v: &View) -> Turn {
        let (rehashed, mine_changed) = self.rehash(v);
        let mut turn = Turn {
            // Peers learn at once what we may own (an assign backoff that
            // starts or ends, an interface down or back).
            tell_peers: mine_changed,
            ..Turn::default()
        };
        let handovers = self.handover_since.len();
        let listening = now < self.listen_until;
        self.claim_after.retain(|_, t| now < *t);
        let all_heard = self.told_at.is_some_and(|told| {
            v.membership
                .live()
                .keys()
                .all(|m| v.heard_us.get(m).is_some_and(|t| *t >= told))
        });
        if all_heard {
            // Every live peer heard of the new VIPs, but one that has not
            // reloaded yet cannot say it gets them too (one SIGHUP to all
            // lands a heartbeat apart): its echo is no answer. So only a
            // VIP we own even if every live peer becomes eligible for it is
            // free now; one a peer would win waits out the hold, by when
            // that peer, if it got it, lists it and the hash gives it to
            // that peer alone (issue 12 finding 8).
            self.claim_after
                .retain(|vip, _| !wins_if_all_eligible(v, *vip));
        }
        if self.claim_after.is_empty() {
            self.told_at = None;
        }
        let ann = v.announcer;
        // Released in this turn: no longer claimed when what follows runs.
        let mut released = BTreeSet::new();
        for vip in self.vips.clone() {
            let want = self.owners.get(&vip).map(String::as_str) == Some(v.me);
            // A "conflict" with a MAC that turned out to be another
            // speaker's (two speakers probing at start, before they heard
            // each other) is not a foreign device: start over.
            if ann
                .conflict_mac(vip)
                .is_some_and(|m| v.membership.is_member_mac(m))
            {
                tracing::info!(%vip, "the conflicting MAC belongs to a member: retrying");
                turn.intents.push(Intent::Release(vip));
                released.insert(vip);
            }
            let claimed = ann.is_claimed(vip) && !released.contains(&vip);
            if want {
                self.handover_since.remove(&vip);
                self.successor_seen.remove(&vip);
                if listening || self.claim_after.contains_key(&vip) || claimed {
                    continue;
                }
                let Some(i) = v.mine.get(&vip) else {
                    continue;
                };
                let takeover = v
                    .membership
                    .previous_owner(vip)
                    .filter(|(n, _)| *n != v.me)
                    .map(|(n, t)| {
                        tracing::info!(%vip, from = %n, "taking over");
                        t
                    });
                tracing::info!(%vip, iface = %i.name, probe = takeover.is_none(), "claiming");
                turn.intents.push(Intent::Claim {
                    vip,
                    iface: i.clone(),
                    takeover,
                });
                continue;
            }
            if !claimed {
                continue;
            }
            if self.hand_over(now, v, vip) {
                turn.intents.push(Intent::Release(vip));
                released.insert(vip);
            }
        }
        // Forgets dropped VIPs once nothing here claims them any more.
        for vip in self.retiring.clone() {
            if !ann.is_claimed(vip) || released.contains(&vip) {
                self.retiring.remove(&vip);
                self.vips.retain(|x| *x != vip);
                self.vips_version += 1;
                self.owners.remove(&vip);
                self.handover_since.remove(&vip);
                self.successor_seen.remove(&vip);
                turn.intents.push(Intent::Forget(vip));
            }
        }
        if let Some(since) = self.leaving_since {
            let left: Vec<IpAddr> = self
                .vips
                .iter()
                .copied()
                .filter(|x| ann.is_claimed(*x) && !released.contains(x))
                .collect();
            if left.is_empty() {
                turn.exit = true;
            } else if now.saturating_duration_since(since) >= self.timers.handoff_timeout {
                // In one batch: one host call, not one per VIP.
                tracing::warn!("handoff timeout: releasing the remaining VIPs");
                turn.intents.extend(left.into_iter().map(Intent::Release));
                turn.exit = true;
            }
        }
        // The status shows owners, members and handovers: publish as soon
        // as they change, so nobody reads a settled fleet that is not.
        turn.publish =
            rehashed || !turn.intents.is_empty() || self.handover_since.len() != handovers;
        turn
    }

    /// Decides whether to let go of `vip`, which we claim but no longer
    /// should own (see the module doc); keeps the handover's clocks.
    fn hand_over(&mut self, now: Instant, v: &View, vip: IpAddr) -> bool {
        let owned = v.announcer.is_owned(vip);
        let succ = self.owners.get(&vip);
        // A VIP dropped by the source is handed over like one we leave:
        // held while its link still runs, until the successor announces.
        let link_ok = v.mine.contains_key(&vip) || v.leaving || self.retiring_link_runs(v, vip);
        let succ_announces = succ.is_some_and(|s| {
            v.membership
                .live()
                .get(s)
                .is_some_and(|m| m.owned.contains(&vip))
        });
        let since = *self.handover_since.entry(vip).or_insert(now);
        let mut release = !owned || !link_ok || succ.is_none();
        if succ_announces {
            let seen = *self.successor_seen.entry(vip).or_insert(now);
            // One interval of overlap: packets already on their way to
            // us still find the VIP here.
            if now.saturating_duration_since(seen) >= self.timers.heartbeat_interval {
                release = true;
            }
        }
        if now.saturating_duration_since(since) >= self.timers.handoff_timeout {
            release = true;
        }
        if release {
            tracing::info!(%vip, successor = succ.map(String::as_str).unwrap_or("-"),
                handed_over = succ_announces, "releasing");
            self.handover_since.remove(&vip);
            self.successor_seen.remove(&vip);
        }
        release
    }

    /// True if `vip` was dropped by the source and the link it is claimed
    /// on still runs, so it can be held until it is handed over.
    fn retiring_link_runs(&self, v: &View, vip: IpAddr) -> bool {
        self.retiring.contains(&vip)
            && v.announcer
                .vips()
                .get(&vip)
                .and_then(|s| v.ifaces.get(&s.link.iface))
                .is_some_and(|i| i.running)
    }
}

/// True if this node owns `vip` even when every live peer may own it too.
fn wins_if_all_eligible(v: &View, vip: IpAddr) -> bool {
    let everyone = BTreeSet::from([vip]);
    let mut members: Vec<(&str, &BTreeSet<IpAddr>)> = v
        .membership
        .live()
        .keys()
        .map(|n| (n.as_str(), &everyone))
        .collect();
    members.push((v.me, &everyone));
    owners(&members, &[vip]).get(&vip).map(String::as_str) == Some(v.me)
}
