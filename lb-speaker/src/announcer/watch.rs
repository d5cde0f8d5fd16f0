//! What the announcer does with a received frame: answer requests for
//! owned VIPs, and watch for other devices claiming them.

use std::net::IpAddr;
use std::time::Instant;

use flatlan_l2::evidence::{arp_sighting, ndp_sighting, Evidence, Sighting};
use flatlan_l2::frame::ndp::{ipv6_multicast_mac, ALL_NODES};
use flatlan_l2::frame::{
    ArpOp, ArpPacket, EtherType, EthernetHeader, NdpMessage, NeighborAdvertisement,
};
use flatlan_l2::mac::MacAddr;

use super::{announce_frames, v6_src, Action, Announcer, Phase, DEFEND_INTERVAL};
use crate::log_limit::EVERY as LOG_EVERY;

impl Announcer {
    /// Handles one received Ethernet frame from `iface`. `is_member` says
    /// whether a MAC belongs to another speaker.
    pub fn on_frame(
        &mut self,
        now: Instant,
        iface: &str,
        frame: &[u8],
        is_member: &dyn Fn(MacAddr) -> bool,
    ) -> Vec<Action> {
        match flatlan_l2::frame::ether::peek_ethertype(frame) {
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
        // Held for a successor: the successor defends it. Our defence GARP
        // would pull the LAN back here just before we release the VIP, the
        // loss the hold exists to prevent (see `Announcer::round`).
        if st.handing_over {
            return Vec::new();
        }
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
    /// rules ([`flatlan_l2::evidence`]; `sight` runs them for the
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
