//! The planner alone: no socket, no runtime, no clock but the one passed.

use std::sync::Arc;
use std::time::Duration;

use flatlan_l2::mac::MacAddr;

use super::*;
use crate::announcer::Link;
use crate::metrics::Metrics;
use crate::wire::{Heartbeat, VipEntry};

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);

fn eth() -> IfaceInfo {
    IfaceInfo {
        name: "eth9".into(),
        index: 9,
        mac: MAC,
        running: true,
        nets: vec!["192.0.2.10/24".parse().unwrap()],
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The world one planner sees, owned, so each test changes what it needs.
struct World {
    timers: Timers,
    mine: BTreeMap<IpAddr, IfaceInfo>,
    membership: Membership,
    version: u64,
    announcer: Announcer,
    ifaces: BTreeMap<String, IfaceInfo>,
    heard_us: BTreeMap<String, Instant>,
    leaving: bool,
}

impl World {
    fn new(mine: &[IpAddr]) -> World {
        let timers = Timers::default();
        World {
            mine: mine.iter().map(|v| (*v, eth())).collect(),
            membership: Membership::new("me", timers.detector()),
            version: 0,
            announcer: Announcer::new(timers.clone(), Arc::new(Metrics::default())),
            ifaces: BTreeMap::from([("eth9".into(), eth())]),
            heard_us: BTreeMap::new(),
            leaving: false,
            timers,
        }
    }

    fn view(&self) -> View<'_> {
        View {
            me: "me",
            leaving: self.leaving,
            mine: &self.mine,
            membership: &self.membership,
            members_version: self.version,
            announcer: &self.announcer,
            ifaces: &self.ifaces,
            heard_us: &self.heard_us,
        }
    }

    /// A peer's heartbeat: eligible for `eligible`, announcing `owned`.
    fn peer(&mut self, now: Instant, name: &str, eligible: &[IpAddr], owned: &[IpAddr]) {
        let hb = Heartbeat {
            node: name.into(),
            nonce: 1,
            seq: 0,
            challenge: 0,
            echoes: Vec::new(),
            leaving: false,
            macs: vec![MacAddr([2, 0, 0, 0, 0, 0x77])],
            vips: eligible
                .iter()
                .map(|v| VipEntry {
                    addr: *v,
                    owned: owned.contains(v),
                    refused: None,
                })
                .collect(),
        };
        self.version += self.membership.observe(now, now, &hb).len() as u64;
    }

    /// Carries intents out on the announcer, as the executor would.
    fn apply(&mut self, now: Instant, intents: &[Intent]) {
        for i in intents {
            match i {
                Intent::Claim {
                    vip,
                    iface,
                    takeover,
                } => {
                    let link = Link {
                        iface: iface.name.clone(),
                        mac: iface.mac,
                    };
                    self.announcer
                        .claim(now, *vip, link, takeover.or(Some(now)));
                }
                Intent::Release(v) => {
                    self.announcer.release(*v);
                }
                Intent::Forget(v) => self.announcer.forget(*v),
                Intent::Reannounce(_) => {}
            }
        }
    }
}

fn claims(t: &Turn) -> Vec<IpAddr> {
    t.intents
        .iter()
        .filter_map(|i| match i {
            Intent::Claim { vip, .. } => Some(*vip),
            _ => None,
        })
        .collect()
}

fn releases(t: &Turn) -> Vec<IpAddr> {
    t.intents
        .iter()
        .filter_map(|i| match i {
            Intent::Release(v) => Some(*v),
            _ => None,
        })
        .collect()
}

#[test]
fn alone_it_claims_every_vip_it_may_own_once_the_listening_is_over() {
    let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
    let mut w = World::new(&[a]);
    let t0 = Instant::now();
    let mut p = Planner::new(w.timers.clone(), vec![a, b], t0);
    p.listen(t0);
    let turn = p.turn(t0, &w.view());
    assert!(claims(&turn).is_empty(), "listening: {turn:?}");
    assert!(turn.tell_peers, "our eligibility is news");
    let later = t0 + w.timers.heartbeat_interval * 2;
    assert_eq!(p.next_wake(t0), Some(later));
    let turn = p.turn(later, &w.view());
    // b: nobody may own it, so not us either.
    assert_eq!(claims(&turn), vec![a]);
    assert_eq!(p.owners().get(&a).map(String::as_str), Some("me"));
    assert_eq!(p.owners().get(&b), None);
    w.apply(later, &turn.intents);
    let turn = p.turn(later, &w.view());
    assert!(turn.intents.is_empty(), "claimed once: {turn:?}");
}

#[test]
fn a_takeover_from_a_dead_member_skips_the_probe() {
    let a = ip("192.0.2.1");
    let mut w = World::new(&[a]);
    let t0 = Instant::now();
    let mut p = Planner::new(w.timers.clone(), vec![a], t0);
    // The peer owns it (it wins the hash or not: it announces it).
    w.peer(t0, "peer", &[a], &[a]);
    let turn = p.turn(t0, &w.view());
    if p.owners()[&a] == "peer" {
        assert!(claims(&turn).is_empty());
        // It dies: we take over without a probe.
        let dead = t0 + w.timers.dead_interval() + Duration::from_millis(1);
        w.version += w.membership.expire(dead).len() as u64;
        let turn = p.turn(dead, &w.view());
        assert_eq!(
            turn.intents,
            vec![Intent::Claim {
                vip: a,
                iface: eth(),
                takeover: Some(t0)
            }]
        );
    } else {
        assert_eq!(claims(&turn), vec![a], "ours by hash");
    }
}

/// Make-before-break: a VIP whose owner is now a peer stays ours until the
/// peer's heartbeat says it announces it, then one interval more.
#[test]
fn a_vip_is_handed_over_only_after_its_successor_announces_it() {
    let vips: Vec<IpAddr> = (1..=20).map(|i| ip(&format!("192.0.2.{i}"))).collect();
    let mut w = World::new(&vips);
    let t0 = Instant::now();
    let mut p = Planner::new(w.timers.clone(), vips.clone(), t0);
    let turn = p.turn(t0, &w.view());
    assert_eq!(claims(&turn), vips, "alone: all ours");
    w.apply(t0, &turn.intents);
    // A peer joins, eligible for all: it wins some by hash.
    w.peer(t0, "peer", &vips, &[]);
    let turn = p.turn(t0, &w.view());
    let theirs: Vec<IpAddr> = vips
        .iter()
        .copied()
        .filter(|v| p.owners()[v] == "peer")
        .collect();
    assert!(!theirs.is_empty());
    assert!(releases(&turn).is_empty(), "held until it announces");
    assert!(theirs.iter().all(|v| p.handing_over(*v)));
    // It announces them: one interval of overlap.
    let t1 = t0 + Duration::from_millis(10);
    w.peer(t1, "peer", &vips, &theirs);
    assert!(releases(&p.turn(t1, &w.view())).is_empty(), "overlap");
    let t2 = t1 + w.timers.heartbeat_interval;
    assert_eq!(p.next_wake(t1), Some(t2));
    let turn = p.turn(t2, &w.view());
    assert_eq!(releases(&turn), theirs);
    assert!(turn.publish);
    assert!(!theirs.iter().any(|v| p.handing_over(*v)));
}

#[test]
fn a_successor_that_never_announces_gets_the_vip_at_the_handoff_timeout() {
    let vips: Vec<IpAddr> = (1..=20).map(|i| ip(&format!("192.0.2.{i}"))).collect();
    let mut w = World::new(&vips);
    let t0 = Instant::now();
    let mut p = Planner::new(w.timers.clone(), vips.clone(), t0);
    let turn = p.turn(t0, &w.view());
    w.apply(t0, &turn.intents);
    w.peer(t0, "peer", &vips, &[]);
    assert!(releases(&p.turn(t0, &w.view())).is_empty());
    let timeout = t0 + w.timers.handoff_timeout;
    w.peer(timeout, "peer", &vips, &[]);
    let turn = p.turn(timeout, &w.view());
    assert!(!releases(&turn).is_empty());
    assert!(releases(&turn).iter().all(|v| p.owners()[v] == "peer"));
}

/// The rehash follows the version: a turn with the same members version,
/// VIP list and eligibility does not hash again, and a bump does.
#[test]
fn ownership_is_rehashed_only_when_the_version_moves() {
    let vips: Vec<IpAddr> = (1..=20).map(|i| ip(&format!("192.0.2.{i}"))).collect();
    let mut w = World::new(&vips);
    let t0 = Instant::now();
    let mut p = Planner::new(w.timers.clone(), vips.clone(), t0);
    p.turn(t0, &w.view());
    p.turn(t0, &w.view());
    assert_eq!(p.rehashes(), 1);
    // A peer's eligibility changed but the version did not move: not seen.
    let before = p.owners().clone();
    w.membership.observe(
        t0,
        t0,
        &Heartbeat {
            node: "peer".into(),
            nonce: 1,
            seq: 0,
            challenge: 0,
            echoes: Vec::new(),
            leaving: false,
            macs: Vec::new(),
            vips: vips
                .iter()
                .map(|v| VipEntry {
                    addr: *v,
                    owned: false,
                    refused: None,
                })
                .collect(),
        },
    );
    p.turn(t0, &w.view());
    assert_eq!((p.rehashes(), p.owners()), (1, &before));
    w.version += 1;
    p.turn(t0, &w.view());
    assert_eq!(p.rehashes(), 2);
    assert!(p.owners().values().any(|o| o == "peer"));
    // Our own eligibility and the VIP list count too.
    w.mine.remove(&vips[0]);
    let turn = p.turn(t0, &w.view());
    assert_eq!(p.rehashes(), 3);
    assert!(turn.tell_peers, "peers hear what we may own at once");
    p.set_vips(t0, &vips[1..]);
    p.turn(t0, &w.view());
    assert_eq!(p.rehashes(), 4);
}

/// The first VIP of 192.0.2.0/24 (from .2) that `me` wins against "peer",
/// or loses.
fn vip_won(won: bool) -> IpAddr {
    (2..=250)
        .map(|i| ip(&format!("192.0.2.{i}")))
        .find(|v| (crate::ownership::score("me", *v) > crate::ownership::score("peer", *v)) == won)
        .unwrap()
}

/// Two nodes given the same new VIP by one SIGHUP each: neither claims it
/// before the other's heartbeat can say it may own it too.
#[test]
fn a_vip_the_source_adds_waits_until_peers_heard_of_it() {
    let (a, added) = (ip("192.0.2.1"), vip_won(true));
    let mut w = World::new(&[a, added]);
    let t0 = Instant::now();
    // Alone: nobody to wait for.
    let mut p = Planner::new(w.timers.clone(), vec![a], t0);
    assert!(p.set_vips(t0, &[a, added]));
    p.told(t0);
    assert!(claims(&p.turn(t0, &w.view())).contains(&added));

    // With a live peer: held until it echoes a challenge sent since the
    // heartbeat that listed the VIP, or for two intervals.
    w.peer(t0, "peer", &[], &[]);
    let mut p = Planner::new(w.timers.clone(), vec![a], t0);
    p.set_vips(t0, &[a, added]);
    let told = t0 + Duration::from_millis(1);
    p.told(told);
    assert!(!claims(&p.turn(told, &w.view())).contains(&added), "held");
    w.heard_us.insert("peer".into(), t0);
    assert!(
        !claims(&p.turn(told, &w.view())).contains(&added),
        "an answer to what it knew before"
    );
    w.heard_us.insert("peer".into(), told);
    assert!(claims(&p.turn(told, &w.view())).contains(&added));

    // Without an answer: two intervals at most.
    let mut p = Planner::new(w.timers.clone(), vec![a], t0);
    w.heard_us.clear();
    p.set_vips(t0, &[a, added]);
    p.told(t0);
    let i = w.timers.heartbeat_interval;
    assert!(!claims(&p.turn(t0 + i, &w.view())).contains(&added));
    assert_eq!(p.held().collect::<Vec<_>>(), vec![added]);
    assert!(claims(&p.turn(t0 + i * 2, &w.view())).contains(&added));
}

/// Issue 12 finding 8: one SIGHUP to every node lands a heartbeat apart.
/// The peer that has not reloaded yet echoes our heartbeat, but that says
/// nothing about whether it gets the VIP too; a VIP it would win is not
/// claimed on that echo, so when it reloads and lists the VIP, it alone
/// claims (and probes) it.
#[test]
fn a_new_vip_a_peer_would_win_is_not_claimed_on_its_echo_alone() {
    let (a, theirs) = (ip("192.0.2.1"), vip_won(false));
    let mut w = World::new(&[a, theirs]);
    let t0 = Instant::now();
    w.peer(t0, "peer", &[a], &[]);
    let mut p = Planner::new(w.timers.clone(), vec![a], t0);
    p.set_vips(t0, &[a, theirs]);
    p.told(t0);
    w.heard_us.insert("peer".into(), t0);
    let turn = p.turn(t0, &w.view());
    assert!(!claims(&turn).contains(&theirs), "{turn:?}");
    assert_eq!(p.held().collect::<Vec<_>>(), vec![theirs]);
    // The peer reloads within the hold: it lists the VIP and wins it.
    let t1 = t0 + w.timers.heartbeat_interval;
    w.peer(t1, "peer", &[a, theirs], &[]);
    assert!(!claims(&p.turn(t1, &w.view())).contains(&theirs));
    let after = t0 + w.timers.heartbeat_interval * 3;
    assert!(!claims(&p.turn(after, &w.view())).contains(&theirs));
    assert_eq!(p.owners()[&theirs], "peer");
    // A peer that never gets it: ours once the hold is over.
    let mut w = World::new(&[a, theirs]);
    w.peer(t0, "peer", &[a], &[]);
    w.heard_us.insert("peer".into(), t0);
    let mut p = Planner::new(w.timers.clone(), vec![a], t0);
    p.set_vips(t0, &[a, theirs]);
    p.told(t0);
    assert!(!claims(&p.turn(t0, &w.view())).contains(&theirs));
    let end = t0 + w.timers.heartbeat_interval * 2;
    assert!(claims(&p.turn(end, &w.view())).contains(&theirs));
}

/// A VIP the source drops is handed over like one we leave, and released
/// at once when no peer may take it; then it is forgotten.
#[test]
fn a_dropped_vip_is_held_for_its_successor_then_forgotten() {
    let (kept, handed, alone) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
    let mut w = World::new(&[kept, handed, alone]);
    let t0 = Instant::now();
    let mut p = Planner::new(w.timers.clone(), vec![kept, handed, alone], t0);
    let turn = p.turn(t0, &w.view());
    w.apply(t0, &turn.intents);
    assert_eq!(w.announcer.owned().count(), 3);
    // A peer that may take `handed` (not `alone`), and does not yet.
    w.peer(t0, "peer", &[handed], &[]);
    p.set_vips(t0, &[kept]);
    w.mine.retain(|v, _| *v == kept);
    let turn = p.turn(t0, &w.view());
    assert_eq!(releases(&turn), vec![alone]);
    assert!(turn.intents.contains(&Intent::Forget(alone)));
    w.apply(t0, &turn.intents);
    assert_eq!(p.vips(), &[kept, handed]);
    assert!(p.handing_over(handed));
    // The successor announces it: one interval of overlap, then gone.
    w.peer(t0, "peer", &[handed], &[handed]);
    assert!(p.turn(t0, &w.view()).intents.is_empty());
    let later = t0 + w.timers.heartbeat_interval;
    let turn = p.turn(later, &w.view());
    assert_eq!(
        turn.intents,
        vec![Intent::Release(handed), Intent::Forget(handed)]
    );
    assert_eq!(p.vips(), &[kept]);
}

#[test]
fn leaving_releases_what_is_left_at_the_timeout_in_one_batch_and_exits() {
    let vips = [ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3")];
    let mut w = World::new(&vips);
    let t0 = Instant::now();
    let mut p = Planner::new(w.timers.clone(), vips.to_vec(), t0);
    let turn = p.turn(t0, &w.view());
    w.apply(t0, &turn.intents);
    w.peer(t0, "peer", &vips, &[]);
    p.leave(t0);
    w.leaving = true;
    let turn = p.turn(t0, &w.view());
    assert!(!turn.exit && releases(&turn).is_empty(), "{turn:?}");
    let timeout = t0 + w.timers.handoff_timeout;
    w.peer(timeout, "peer", &vips, &[]);
    let turn = p.turn(timeout, &w.view());
    assert!(turn.exit);
    assert_eq!(releases(&turn), vips);
    // Nothing claimed while leaving: exit at once.
    let mut p = Planner::new(w.timers.clone(), vips.to_vec(), t0);
    let w = World::new(&vips);
    p.leave(t0);
    assert!(p.turn(t0, &w.view()).exit);
}

/// A probe "conflict" with a member's MAC (two speakers probing at once)
/// is retried at once: released and claimed again in the same turn.
#[test]
fn a_conflict_with_a_members_mac_is_retried() {
    let a = ip("192.0.2.1");
    let mut w = World::new(&[a]);
    let t0 = Instant::now();
    let mut p = Planner::new(w.timers.clone(), vec![a], t0);
    let acts = w.announcer.claim(
        t0,
        a,
        Link {
            iface: "eth9".into(),
            mac: MAC,
        },
        None,
    );
    assert!(!acts.is_empty());
    // The member's MAC answers our probe.
    let member = MacAddr([2, 0, 0, 0, 0, 0x77]);
    let reply = flatlan_l2::frame::ArpPacket::reply(
        member,
        match a {
            IpAddr::V4(v) => v,
            IpAddr::V6(_) => unreachable!(),
        },
        MAC,
        std::net::Ipv4Addr::UNSPECIFIED,
    )
    .to_frame();
    w.announcer
        .on_frame(t0, "eth9", reply.as_bytes(), &|_| false);
    assert_eq!(w.announcer.conflict_mac(a), Some(member));
    w.peer(t0, "peer", &[], &[]);
    let turn = p.turn(t0, &w.view());
    assert_eq!(turn.intents.first(), Some(&Intent::Release(a)));
    assert_eq!(claims(&turn), vec![a]);
}
