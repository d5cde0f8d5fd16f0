//! What our heartbeat says, built from a [`Snapshot`]: the VIPs we may own
//! (and whether we announce each), the MACs we announce from, and the
//! peers' challenges we echo. The heartbeat thread ([`crate::heartbeat`])
//! sends the latest one every interval.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use flatlan_l2::mac::MacAddr;

use crate::config::MULTICAST_GROUP;
use crate::heartbeat::Outgoing;
use crate::snapshot::Snapshot;
use crate::wire::{self, Heartbeat, VipEntry};

/// Our heartbeat as of `s`.
pub fn build(s: &Snapshot) -> Outgoing {
    let owned: BTreeSet<IpAddr> = s.announcer.owned().collect();
    let mut vips: Vec<VipEntry> = s
        .mine
        .keys()
        .map(|v| VipEntry {
            addr: *v,
            owned: owned.contains(v),
            refused: s.announcer.conflict_mac(*v),
        })
        .collect();
    // While leaving we are eligible for nothing, but still report what we
    // announce, so successors see when we let go (peers drop a leaving
    // node from their view at once). A VIP dropped by a reload is not
    // reported while we hold it: peers take every VIP listed for one we
    // may own, and would leave it to us. Its successor probes it (our
    // answer comes from a member's MAC: no conflict) and announces it, and
    // then we let go.
    for v in &owned {
        if s.leaving && !s.mine.contains_key(v) {
            vips.push(VipEntry {
                addr: *v,
                owned: true,
                refused: None,
            });
        }
    }
    let mut macs: Vec<MacAddr> = s.mine.values().map(|i| i.mac).collect();
    macs.extend(s.announcer.vips().values().map(|st| st.link.mac));
    macs.sort();
    macs.dedup();
    macs.truncate(wire::MAX_MACS);
    let mut dests = s.cfg.peers.clone();
    if s.cfg.multicast {
        dests.push(SocketAddr::new(
            IpAddr::V4(MULTICAST_GROUP),
            s.cfg.listen.port(),
        ));
    }
    Outgoing {
        hb: Heartbeat {
            node: s.cfg.node_name.clone(),
            nonce: s.nonce,
            // Both set by the heartbeat thread as it sends.
            seq: 0,
            challenge: 0,
            echoes: s.echoes.clone(),
            leaving: s.leaving,
            macs,
            vips,
        },
        dests,
    }
}
