//! Membership: a pure state machine fed with time and authenticated,
//! fresh heartbeats (STYLE rule 10). It never does I/O; the engine feeds it
//! and acts on the [`Event`]s it returns. Only heartbeats that prove their
//! freshness ([`crate::freshness`]) get here, each with its *proof*: the
//! issue time (our monotonic clock) of the newest challenge of ours it
//! echoes. Nothing here is a high-water mark of anything the sender says:
//! whatever one heartbeat changes, the sender's next one changes back.
//!
//! - A member is live from its first heartbeat until the failure detector
//!   ([`crate::detector`]) says its newest proof is too old: `deadAfter`
//!   intervals on a clean link, up to `maxDeadTime` on a lossy or busy one.
//!   Liveness is the proof's time, not the time a heartbeat arrived: a
//!   recording replayed later proves only what the live peer had proven,
//!   so it cannot keep a dead peer alive for a moment longer.
//! - Heartbeats that arrive out of order (an older proof than the newest
//!   one we took, or one already too old to keep anyone alive) change
//!   nothing: a late or replayed heartbeat cannot roll a member's state
//!   back.
//! - A heartbeat with the leaving flag removes the member at once, so its
//!   successor claims while the leaving node still answers
//!   (make-before-break).
//! - A member seen again after being declared dead is reported as
//!   [`Event::Rejoined`]: a healed partition, after which every owner
//!   re-announces, because during the partition both sides may have claimed
//!   and LAN caches may point at either.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use flatlan_l2::mac::MacAddr;

use crate::detector::{Detector, Link};
use crate::wire::Heartbeat;

/// What we know about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// When it last proved it was alive: the issue time of the newest
    /// challenge of ours it echoed (not when that heartbeat arrived).
    pub last_seen: Instant,
    /// Its boot nonce.
    pub nonce: u64,
    /// The VIPs it is eligible for.
    pub eligible: BTreeSet<IpAddr>,
    /// The VIPs it says it announces.
    pub owned: BTreeSet<IpAddr>,
    /// The MACs it announces from.
    pub macs: Vec<MacAddr>,
    /// The VIPs it refuses, with the MAC that answered its probe.
    pub refused: BTreeMap<IpAddr, MacAddr>,
}

/// Why a member stopped being live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// It said it was leaving.
    Left,
    /// Its newest proof of life grew older than the detector allows.
    Died,
}

/// A former member, kept so that a takeover from it is recognised as such.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    /// The member as it was last seen.
    pub member: Member,
    /// When it was removed.
    pub at: Instant,
    /// Why.
    pub why: Gone,
}

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new member (or a restarted one: new nonce).
    Joined(String),
    /// A member declared dead (or gone) is back: a healed partition.
    Rejoined(String),
    /// A member's eligibility or owned set changed.
    Changed(String),
    /// A member announced it is leaving.
    Left(String),
    /// A member's newest proof of life grew too old.
    Died(String),
}

/// The membership view of one speaker.
#[derive(Debug, Clone)]
pub struct Membership {
    me: String,
    detector: Detector,
    live: BTreeMap<String, Member>,
    departed: BTreeMap<String, Departed>,
    /// Per node name, live or departed: what the detector knows of its
    /// link, kept across restarts and deaths (it describes the LAN path,
    /// not the process).
    links: BTreeMap<String, Link>,
}

impl Membership {
    /// An empty view for node `me`; heartbeats from `me` are ignored.
    pub fn new(me: impl Into<String>, detector: Detector) -> Self {
        Membership {
            me: me.into(),
            detector,
            live: BTreeMap::new(),
            departed: BTreeMap::new(),
            links: BTreeMap::new(),
        }
    }

    /// The failure detector.
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// How long `node` may now stay without a newer proof, if we know its
    /// link.
    pub fn timeout(&self, node: &str) -> Option<Duration> {
        self.links.get(node).map(|l| self.detector.timeout(l))
    }

    /// Feeds an authenticated, fresh heartbeat that arrived at `now`;
    /// `proof` is the issue time of the newest challenge of ours it
    /// echoes. One with an older proof than the newest taken from its
    /// sender, or too old to keep anyone alive, changes nothing.
    pub fn observe(&mut self, now: Instant, proof: Instant, hb: &Heartbeat) -> Vec<Event> {
        if hb.node == self.me {
            return Vec::new();
        }
        let link = self.links.get(&hb.node);
        if link.is_some_and(|l| proof < l.proof()) || self.detector.too_old(link, proof, now) {
            return Vec::new();
        }
        let was_live = self
            .live
            .get(&hb.node)
            .is_some_and(|m| m.nonce == hb.nonce && !hb.leaving);
        match self.links.get_mut(&hb.node) {
            Some(l) => self.detector.advance(l, now, proof, was_live),
            None => {
                self.links.insert(hb.node.clone(), Link::new(proof));
            }
        }
        let member = Member {
            last_seen: proof,
            nonce: hb.nonce,
            eligible: hb.vips.iter().map(|v| v.addr).collect(),
            owned: hb.vips.iter().filter(|v| v.owned).map(|v| v.addr).collect(),
            macs: hb.macs.clone(),
            refused: hb
                .vips
                .iter()
                .filter_map(|v| Some((v.addr, v.refused?)))
                .collect(),
        };
        if hb.leaving {
            return match self.live.remove(&hb.node) {
                Some(_) => {
                    self.departed.insert(
                        hb.node.clone(),
                        Departed {
                            member,
                            at: now,
                            why: Gone::Left,
                        },
                    );
                    vec![Event::Left(hb.node.clone())]
                }
                None => {
                    // Keep its latest owned set: it tells successors when
                    // a leaving node has let go.
                    if let Some(d) = self.departed.get_mut(&hb.node) {
                        d.member = member;
                    }
                    Vec::new()
                }
            };
        }
        match self.live.get_mut(&hb.node) {
            Some(m) => {
                let restarted = m.nonce != hb.nonce;
                let changed = m.eligible != member.eligible
                    || m.owned != member.owned
                    || m.refused != member.refused;
                *m = member;
                if restarted {
                    vec![Event::Joined(hb.node.clone())]
                } else if changed {
                    vec![Event::Changed(hb.node.clone())]
                } else {
                    Vec::new()
                }
            }
            None => {
                self.live.insert(hb.node.clone(), member);
                match self.departed.remove(&hb.node) {
                    Some(d) if d.member.nonce == hb.nonce => {
                        vec![Event::Rejoined(hb.node.clone())]
                    }
                    _ => vec![Event::Joined(hb.node.clone())],
                }
            }
        }
    }

    /// When `node`, if live, is dead unless a newer proof arrives.
    fn deadline(&self, node: &str, m: &Member) -> Instant {
        match self.links.get(node) {
            Some(l) => self.detector.deadline(l),
            None => m.last_seen + self.detector.min(),
        }
    }

    /// Declares members dead whose newest proof is older than the
    /// detector's timeout for their link.
    pub fn expire(&mut self, now: Instant) -> Vec<Event> {
        let dead: Vec<String> = self
            .live
            .iter()
            .filter(|(n, m)| now > self.deadline(n, m))
            .map(|(n, _)| n.clone())
            .collect();
        let mut events = Vec::with_capacity(dead.len());
        for name in dead {
            if let Some(member) = self.live.remove(&name) {
                self.departed.insert(
                    name.clone(),
                    Departed {
                        member,
                        at: now,
                        why: Gone::Died,
                    },
                );
                events.push(Event::Died(name));
            }
        }
        events
    }

    /// The earliest instant at which [`Self::expire`] can change something.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.live.iter().map(|(n, m)| self.deadline(n, m)).min()
    }

    /// Live peers (not including this node).
    pub fn live(&self) -> &BTreeMap<String, Member> {
        &self.live
    }

    /// Former members.
    pub fn departed(&self) -> &BTreeMap<String, Departed> {
        &self.departed
    }

    /// True if `mac` belongs to a live or former member: an answer from it
    /// for one of our VIPs is a handoff, not a foreign device.
    pub fn is_member_mac(&self, mac: MacAddr) -> bool {
        self.live.values().any(|m| m.macs.contains(&mac))
            || self.departed.values().any(|d| d.member.macs.contains(&mac))
    }

    /// The live or departed member that last said it owned `vip`, if any,
    /// with the time we last heard from it. Used to tell a takeover (which
    /// skips the probe: the previous owner would answer it) from a first
    /// claim, and to measure failover latency.
    pub fn previous_owner(&self, vip: IpAddr) -> Option<(&str, Instant)> {
        self.live
            .iter()
            .filter(|(_, m)| m.owned.contains(&vip))
            .map(|(n, m)| (n.as_str(), m.last_seen))
            .chain(
                self.departed
                    .iter()
                    .filter(|(_, d)| d.member.owned.contains(&vip))
                    .map(|(n, d)| (n.as_str(), d.member.last_seen)),
            )
            .max_by_key(|(_, t)| *t)
    }

    /// The live member that refuses `vip` (another device answered its
    /// probe), with the MAC that answered.
    pub fn refused_by(&self, vip: IpAddr) -> Option<(&str, MacAddr)> {
        self.live
            .iter()
            .find_map(|(n, m)| Some((n.as_str(), *m.refused.get(&vip)?)))
    }

    /// Forgets departed members older than `keep`, so the map stays small.
    pub fn prune(&mut self, now: Instant, keep: Duration) {
        self.departed
            .retain(|_, d| now.saturating_duration_since(d.at) <= keep);
        let (live, departed) = (&self.live, &self.departed);
        self.links
            .retain(|n, _| live.contains_key(n) || departed.contains_key(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::VipEntry;

    fn hb(node: &str, nonce: u64, leaving: bool, owned: &[&str]) -> Heartbeat {
        Heartbeat {
            node: node.into(),
            nonce,
            seq: 0,
            challenge: 0,
            echoes: Vec::new(),
            leaving,
            macs: vec![MacAddr([2, 0, 0, 0, 0, nonce as u8])],
            vips: ["10.0.0.1", "10.0.0.2"]
                .iter()
                .map(|a| VipEntry {
                    addr: a.parse().unwrap(),
                    owned: owned.contains(a),
                    refused: None,
                })
                .collect(),
        }
    }

    const MS: Duration = Duration::from_millis(1);

    fn det() -> Detector {
        Detector::new(100 * MS, 300 * MS, 800 * MS)
    }

    #[test]
    fn join_die_rejoin() {
        let t0 = Instant::now();
        let mut m = Membership::new("me", det());
        assert!(m.observe(t0, t0, &hb("me", 1, false, &[])).is_empty());
        assert_eq!(
            m.observe(t0, t0, &hb("b", 1, false, &[])),
            vec![Event::Joined("b".into())]
        );
        assert!(m
            .observe(t0 + 100 * MS, t0 + 100 * MS, &hb("b", 1, false, &[]))
            .is_empty());
        assert!(m.expire(t0 + 400 * MS).is_empty());
        assert_eq!(m.next_expiry(), Some(t0 + 400 * MS));
        assert_eq!(m.expire(t0 + 401 * MS), vec![Event::Died("b".into())]);
        assert!(m.live().is_empty());
        assert_eq!(
            m.observe(t0 + 900 * MS, t0 + 900 * MS, &hb("b", 1, false, &[])),
            vec![Event::Rejoined("b".into())]
        );
        // A restart is a join, not a heal.
        assert_eq!(
            m.observe(t0 + 950 * MS, t0 + 950 * MS, &hb("b", 2, false, &[])),
            vec![Event::Joined("b".into())]
        );
    }

    #[test]
    fn leaving_removes_at_once_and_tracks_release() {
        let t0 = Instant::now();
        let mut m = Membership::new("me", det());
        m.observe(t0, t0, &hb("b", 1, false, &["10.0.0.1"]));
        assert_eq!(
            m.previous_owner("10.0.0.1".parse().unwrap()).map(|x| x.0),
            Some("b")
        );
        assert_eq!(
            m.observe(t0 + MS, t0 + MS, &hb("b", 1, true, &["10.0.0.1"])),
            vec![Event::Left("b".into())]
        );
        assert!(m.live().is_empty());
        assert_eq!(m.departed()["b"].why, Gone::Left);
        assert!(m.is_member_mac(MacAddr([2, 0, 0, 0, 0, 1])));
        // Later leaving heartbeats update what it still holds.
        assert!(m
            .observe(t0 + 2 * MS, t0 + 2 * MS, &hb("b", 1, true, &[]))
            .is_empty());
        assert!(m.previous_owner("10.0.0.1".parse().unwrap()).is_none());
        m.prune(t0 + 10_000 * MS, 1000 * MS);
        assert!(m.departed().is_empty());
    }

    #[test]
    fn changes_are_reported() {
        let t0 = Instant::now();
        let mut m = Membership::new("me", det());
        m.observe(t0, t0, &hb("b", 1, false, &[]));
        assert_eq!(
            m.observe(t0, t0, &hb("b", 1, false, &["10.0.0.2"])),
            vec![Event::Changed("b".into())]
        );
        let vip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut refusing = hb("b", 1, false, &["10.0.0.2"]);
        refusing.vips[0].refused = Some(MacAddr([2, 0, 0, 0, 0, 0xee]));
        assert_eq!(
            m.observe(t0, t0, &refusing),
            vec![Event::Changed("b".into())]
        );
        assert_eq!(
            m.refused_by(vip),
            Some(("b", MacAddr([2, 0, 0, 0, 0, 0xee])))
        );
    }

    /// Boot nonces are random: a restart is a restart whichever nonce is
    /// larger (the wall-clock nonce of old made a node that restarted with
    /// its clock behind a stranger whose heartbeats were all "replays").
    /// And a single odd heartbeat (a huge seq, a leaving flag, a new
    /// nonce) excludes nobody beyond the sender's next heartbeat.
    #[test]
    fn no_single_heartbeat_excludes_a_member_and_nonces_have_no_order() {
        let t0 = Instant::now();
        let mut m = Membership::new("me", det());
        m.observe(t0, t0, &hb("b", 1000, false, &[]));
        assert_eq!(
            m.observe(t0 + MS, t0 + MS, &hb("b", 3, false, &[])),
            vec![Event::Joined("b".into())],
            "a smaller nonce is a restart too"
        );
        let mut odd = hb("b", 3, true, &[]);
        odd.seq = u64::MAX;
        assert_eq!(
            m.observe(t0 + 2 * MS, t0 + 2 * MS, &odd),
            vec![Event::Left("b".into())]
        );
        assert_eq!(
            m.observe(t0 + 100 * MS, t0 + 100 * MS, &hb("b", 3, false, &[])),
            vec![Event::Rejoined("b".into())]
        );
        assert!(m.live().contains_key("b"));
    }

    /// Review finding: liveness was the time a fresh heartbeat arrived, so
    /// a recording replayed while its echoes were still within the
    /// freshness window kept a dead peer alive ~3 dead intervals. Now it
    /// is the echoed challenge's issue time: a replay proves only what the
    /// live peer had proven, and the peer dies on time.
    #[test]
    fn a_replayed_recording_keeps_a_dead_peer_alive_not_a_moment_longer() {
        let t0 = Instant::now();
        let mut m = Membership::new("me", det());
        let mut recording = Vec::new();
        for i in 0..=10u32 {
            // Our challenge of t0 + 100 i, echoed in a heartbeat that
            // arrives 30 ms later.
            let proof = t0 + 100 * MS * i;
            let h = hb("b", 1, false, &["10.0.0.1"]);
            m.observe(proof + 30 * MS, proof, &h);
            recording.push((proof, h));
        }
        // b dies after its last heartbeat; its recording is replayed every
        // 10 ms, each heartbeat with the challenge it echoed.
        let last = t0 + 1000 * MS;
        let mut died_at = None;
        for k in 0..100u32 {
            let now = last + 30 * MS + 10 * MS * k;
            let (proof, h) = &recording[(k as usize) % recording.len()];
            assert!(m.observe(now, *proof, h).is_empty(), "a replay is no news");
            if !m.expire(now).is_empty() {
                died_at = Some(now);
                break;
            }
        }
        let died_at = died_at.expect("the replay kept b alive");
        assert!(died_at <= last + 310 * MS, "{:?}", died_at - last);
        assert_eq!(m.departed()["b"].why, Gone::Died);
        // Nor does it bring b back.
        let (proof, h) = &recording[10];
        assert!(m.observe(died_at + MS, *proof, h).is_empty());
        assert!(m.live().is_empty());
    }

    /// Review finding: two fresh heartbeats that arrive out of order used
    /// to leave the older one's state (here: owning nothing). The older
    /// proof is dropped.
    #[test]
    fn an_older_heartbeat_arriving_late_rolls_nothing_back() {
        let t0 = Instant::now();
        let mut m = Membership::new("me", det());
        m.observe(t0, t0, &hb("b", 1, false, &[]));
        let newer = hb("b", 1, false, &["10.0.0.1"]);
        assert_eq!(
            m.observe(t0 + 150 * MS, t0 + 100 * MS, &newer),
            vec![Event::Changed("b".into())]
        );
        let older = hb("b", 1, false, &[]);
        assert!(m.observe(t0 + 160 * MS, t0 + 50 * MS, &older).is_empty());
        assert!(m.live()["b"].owned.contains(&"10.0.0.1".parse().unwrap()));
        assert_eq!(m.live()["b"].last_seen, t0 + 100 * MS);
        // A leaving flag that is older than what we know changes nothing
        // either; the same proof (another heartbeat echoing the same
        // challenge) is news.
        assert!(m
            .observe(t0 + 170 * MS, t0 + 50 * MS, &hb("b", 1, true, &[]))
            .is_empty());
        assert_eq!(
            m.observe(t0 + 180 * MS, t0 + 100 * MS, &hb("b", 1, true, &[])),
            vec![Event::Left("b".into())]
        );
    }

    /// The timeout adapts to the link: a member whose proofs keep coming
    /// late gets longer, within the bound, and the next expiry says so.
    #[test]
    fn a_late_link_gets_a_longer_timeout_within_the_bound() {
        let t0 = Instant::now();
        let mut m = Membership::new("me", det());
        m.observe(t0, t0, &hb("b", 1, false, &[]));
        assert_eq!(m.timeout("b"), Some(300 * MS));
        let mut t = t0;
        for _ in 0..50 {
            // Every proof 450 ms after the previous: 2.5 intervals late.
            t += 450 * MS;
            m.observe(t, t, &hb("b", 1, false, &[]));
        }
        let timeout = m.timeout("b").unwrap();
        assert!(timeout > 300 * MS && timeout <= 800 * MS, "{timeout:?}");
        assert_eq!(m.next_expiry(), Some(t + timeout));
        assert!(m.expire(t + timeout).is_empty());
        assert_eq!(m.expire(t + timeout + MS), vec![Event::Died("b".into())]);
        // A restart (new nonce) keeps what we know of the link.
        m.observe(t + 2000 * MS, t + 2000 * MS, &hb("b", 2, false, &[]));
        assert_eq!(m.timeout("b"), Some(timeout));
    }
}
