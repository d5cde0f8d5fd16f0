//! Passive watching (DESIGN §3 "Never a duplicate address"): an address of
//! this node's pools that a foreign MAC is seen using on the bridge is
//! quarantined as soon as it is seen, without waiting for an ADD to probe
//! it. Issue 10: a released address was handed out again although a LAN
//! host had taken it meanwhile.
//!
//! What counts as use is what the conflict probe counts ([`evidence`]): an
//! ARP packet with the address as sender (requests, replies, gratuitous
//! ARP), another host's RFC 5227 ARP probe for it (a DHCP client about to
//! take it), a Neighbor Advertisement for it, and another host's DAD
//! solicitation; and, IPv6's ARP sender, a Neighbor Solicitation from it.
//! Frames from this node's own pods are not foreign: pods
//! have flatlan's derived `0a:58:…` MACs, and the store records each
//! allocation's MAC.
//!
//! Pure: [`Watch`] classifies frames and updates a [`State`] it is handed;
//! the daemon around it owns the socket and the store lock. A flood of
//! frames costs no store writes: sightings are coalesced per address
//! until the caller's next [`Watch::apply`], and an address already
//! quarantined for that MAC (with at least half its time left) is not
//! written again.
//!
//! [`evidence`]: flatlan_l2::evidence

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::store::State;
use flatlan_l2::evidence::ns_sender_sighting;
use flatlan_l2::evidence::{sighting, Sighting};
use flatlan_l2::mac::MacAddr;

/// At most this many distinct addresses wait for the next write; more in
/// one interval is a flood, and its excess is counted, not stored.
pub const MAX_PENDING: usize = 1024;

/// How long an (address, MAC) pair of one of our allocations stays "ours"
/// after the allocation is gone: its last frames may still be on the way.
const RECENT_SECS: u64 = 300;

/// What [`Watch::apply`] did to the store.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Newly quarantined (or renewed) addresses.
    pub quarantined: Vec<Sighting>,
    /// Foreign use of an address a pod of ours holds right now, with the
    /// allocation's description: a live duplicate the operator must see.
    pub pod_conflicts: Vec<(Sighting, String)>,
}

impl Applied {
    /// Whether the state changed and must be committed.
    pub fn changed(&self) -> bool {
        !self.quarantined.is_empty() || !self.pod_conflicts.is_empty()
    }
}

/// The watcher's memory between frames.
#[derive(Debug)]
pub struct Watch {
    /// The bridge's MAC: our own probes and announcements.
    bridge: MacAddr,
    pending: BTreeMap<IpAddr, Sighting>,
    /// (address, MAC) of our allocations, with when last seen in the store.
    recent: BTreeMap<(IpAddr, MacAddr), u64>,
    /// MACs of our current allocations (custom MACs included).
    pod_macs: BTreeSet<MacAddr>,
    /// Current quarantines: address → (MAC, until).
    quarantined: BTreeMap<IpAddr, (MacAddr, u64)>,
    quarantine_secs: u64,
    /// Sightings dropped because [`MAX_PENDING`] addresses were waiting.
    pub dropped: u64,
}

impl Watch {
    pub fn new(bridge: MacAddr, quarantine_secs: u64) -> Watch {
        Watch {
            bridge,
            pending: BTreeMap::new(),
            recent: BTreeMap::new(),
            pod_macs: BTreeSet::new(),
            quarantined: BTreeMap::new(),
            quarantine_secs,
            dropped: 0,
        }
    }

    /// Classifies one received frame. A sighting of an address `in_scope`
    /// accepts (this node's pools), by a foreign MAC, that the store does
    /// not already hold quarantined, is queued for [`Watch::apply`] and
    /// returned.
    pub fn observe(
        &mut self,
        frame: &[u8],
        now: u64,
        in_scope: impl Fn(IpAddr) -> bool,
    ) -> Option<Sighting> {
        let s = sighting(frame, self.bridge).or_else(|| ns_sender_sighting(frame, self.bridge))?;
        if !in_scope(s.addr) || self.is_ours(s.addr, s.mac) || self.known(&s, now) {
            return None;
        }
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&s.addr) {
            self.dropped += 1;
            return None;
        }
        self.pending.insert(s.addr, s);
        Some(s)
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Learns our allocations and the quarantines from a (fresh) state.
    pub fn note_state(&mut self, state: &State, now: u64) {
        self.pod_macs.clear();
        for a in &state.allocations {
            if let Ok(mac) = a.mac.parse::<MacAddr>() {
                self.pod_macs.insert(mac);
                self.recent.insert((a.ip, mac), now);
            }
        }
        self.recent
            .retain(|_, seen| now.saturating_sub(*seen) <= RECENT_SECS);
        self.quarantined = state
            .quarantine
            .iter()
            .filter(|q| q.until > now)
            .filter_map(|q| Some((q.ip, (q.mac.parse().ok()?, q.until))))
            .collect();
    }

    /// Quarantines what is pending in `state` (the locked store), checked
    /// again against it: it is fresher than what [`Watch::observe`] knew.
    pub fn apply(&mut self, state: &mut State, now: u64) -> Applied {
        self.note_state(state, now);
        let mut out = Applied::default();
        for (ip, s) in std::mem::take(&mut self.pending) {
            if self.is_ours(ip, s.mac) || self.known(&s, now) {
                continue;
            }
            if let Some(a) = state.allocations.iter().find(|a| a.ip == ip) {
                out.pod_conflicts.push((s, a.describe()));
            }
            state.quarantine_ip(ip, s.mac.to_string(), now, now + self.quarantine_secs);
            out.quarantined.push(s);
        }
        self.note_state(state, now);
        out
    }

    /// A frame of this node's pods: flatlan's derived MAC (only this node
    /// allocates from its slice), or the MAC one of our allocations has or
    /// had moments ago.
    fn is_ours(&self, ip: IpAddr, mac: MacAddr) -> bool {
        mac.is_pod_mac_for(ip)
            || self.pod_macs.contains(&mac)
            || self.recent.contains_key(&(ip, mac))
    }

    /// Already quarantined for this MAC, with at least half its time left:
    /// writing it again would change nothing that matters.
    fn known(&self, s: &Sighting, now: u64) -> bool {
        self.quarantined.get(&s.addr).is_some_and(|(mac, until)| {
            *mac == s.mac && until.saturating_sub(now) >= self.quarantine_secs / 2
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::store::Allocation;
    use flatlan_l2::evidence::Evidence;
    use flatlan_l2::frame::ndp::{ipv6_multicast_mac, ALL_NODES};
    use flatlan_l2::frame::{
        solicited_node_multicast_mac, ArpPacket, NeighborAdvertisement, NeighborSolicitation,
    };

    const BRIDGE: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const HOST: MacAddr = MacAddr([0x3c, 0x2a, 0xf4, 0x11, 0x09, 0x7e]);
    const IP: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 210);
    const Q: u64 = 3600;
    const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 1);

    fn scope(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4.octets()[..3] == [192, 168, 2] && v4.octets()[3] >= 208,
            IpAddr::V6(v6) => v6.segments()[0] == 0xfd00,
        }
    }

    fn alloc(ip: Ipv4Addr, mac: &str) -> Allocation {
        Allocation {
            ip: ip.into(),
            prefix_len: 24,
            mac: mac.into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            pod: None,
            boot_id: "b".into(),
            since: 1,
            adder: None,
        }
    }

    #[test]
    fn every_kind_of_foreign_use_is_quarantined() {
        let ip6 = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 1, 5);
        let frames = [
            (
                ArpPacket::gratuitous_request(HOST, IP).to_frame(),
                IP.into(),
                Evidence::ArpSender,
            ),
            (
                ArpPacket::reply(HOST, IP, BRIDGE, Ipv4Addr::UNSPECIFIED).to_frame(),
                IP.into(),
                Evidence::ArpReply,
            ),
            // A DHCP client's RFC 5227 probe: it is about to take the address.
            (
                ArpPacket::probe(HOST, IP).to_frame(),
                IP.into(),
                Evidence::SimultaneousArpProbe,
            ),
            (
                NeighborAdvertisement::unsolicited(ip6, HOST, ip6)
                    .to_frame(HOST, ipv6_multicast_mac(ALL_NODES))
                    .expect("valid"),
                ip6.into(),
                Evidence::NeighborAdvertisement,
            ),
            // The host resolving its router from the address: IPv6's ARP sender.
            (
                NeighborSolicitation::resolve(ip6, HOST, ROUTER6)
                    .to_frame(HOST, solicited_node_multicast_mac(ROUTER6))
                    .expect("valid"),
                ip6.into(),
                Evidence::SolicitationSender,
            ),
        ];
        for (frame, addr, evidence) in frames {
            let mut w = Watch::new(BRIDGE, Q);
            let s = w.observe(&frame, 100, scope).expect("a sighting");
            assert_eq!((s.addr, s.mac, s.evidence), (addr, HOST, evidence));
            let mut state = State::default();
            state.verified.insert(addr, 99);
            let applied = w.apply(&mut state, 101);
            assert_eq!(applied.quarantined.len(), 1);
            assert_eq!(state.quarantine[0].mac, HOST.to_string());
            assert_eq!(state.quarantine[0].until, 101 + Q);
            assert!(state.owner_of(addr, 101).is_some());
            assert!(!state.is_verified(addr, 101, 30), "the verdict is gone");
        }
    }

    #[test]
    fn our_pods_our_probes_and_other_addresses_are_not_foreign() {
        let mut w = Watch::new(BRIDGE, Q);
        let pod = MacAddr::from_ip(IP.into());
        let custom = MacAddr([0x02, 0x42, 0, 0, 0, 7]);
        let mut state = State::default();
        state
            .allocations
            .push(alloc(Ipv4Addr::new(192, 168, 2, 211), &custom.to_string()));
        w.note_state(&state, 100);
        let quiet = [
            ArpPacket::gratuitous_request(pod, IP).to_frame(),
            ArpPacket::probe(BRIDGE, IP).to_frame(),
            ArpPacket::gratuitous_request(custom, Ipv4Addr::new(192, 168, 2, 211)).to_frame(),
            // The gateway, a LAN device: outside the pools.
            ArpPacket::gratuitous_request(HOST, Ipv4Addr::new(192, 168, 2, 1)).to_frame(),
            // Someone asking *for* the address proves nothing about it.
            ArpPacket::request(HOST, Ipv4Addr::new(192, 168, 2, 60), IP).to_frame(),
        ];
        for f in &quiet {
            assert_eq!(w.observe(f, 100, scope), None);
        }
        // A custom-MAC pod deleted a moment ago: its last frames are ours.
        state.allocations.clear();
        w.note_state(&state, 101);
        let late = ArpPacket::gratuitous_request(custom, Ipv4Addr::new(192, 168, 2, 211));
        assert_eq!(w.observe(&late.to_frame(), 102, scope), None);
        assert!(!w.has_pending());
    }

    #[test]
    fn a_flood_is_coalesced_and_a_known_quarantine_is_not_rewritten() {
        let mut w = Watch::new(BRIDGE, Q);
        let garp = ArpPacket::gratuitous_request(HOST, IP).to_frame();
        for _ in 0..10_000 {
            w.observe(&garp, 100, scope);
        }
        let mut state = State::default();
        assert_eq!(w.apply(&mut state, 100).quarantined.len(), 1);
        // Known now: the next flood queues nothing, so nothing is written.
        for _ in 0..10_000 {
            assert_eq!(w.observe(&garp, 200, scope), None);
        }
        assert!(!w.apply(&mut state, 200).changed());
        // Past half its time, the quarantine is renewed once.
        let late = 100 + Q / 2 + 1;
        assert!(w.observe(&garp, late, scope).is_some());
        assert!(w.apply(&mut state, late).changed());
        assert_eq!(state.quarantine.len(), 1);
        assert_eq!(state.quarantine[0].until, late + Q);
        // Many distinct addresses at once: bounded.
        let mut w = Watch::new(BRIDGE, Q);
        let wide = |_: IpAddr| true;
        for i in 0..(MAX_PENDING as u32 + 10) {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            w.observe(&ArpPacket::gratuitous_request(HOST, ip).to_frame(), 1, wide);
        }
        assert_eq!(w.dropped, 10);
        assert_eq!(w.pending.len(), MAX_PENDING);
    }

    #[test]
    fn foreign_use_of_a_live_pods_address_is_reported_and_quarantined() {
        let mut w = Watch::new(BRIDGE, Q);
        let mut state = State::default();
        state
            .allocations
            .push(alloc(IP, &MacAddr::from_ip(IP.into()).to_string()));
        w.note_state(&state, 100);
        let garp = ArpPacket::gratuitous_request(HOST, IP).to_frame();
        assert!(w.observe(&garp, 100, scope).is_some());
        let applied = w.apply(&mut state, 100);
        assert_eq!(applied.pod_conflicts.len(), 1);
        assert!(applied.pod_conflicts[0].1.contains("c1"));
        // Skipped once the pod is gone, not handed out again.
        state.allocations.clear();
        assert!(state.owner_of(IP.into(), 101).is_some());
    }
}
