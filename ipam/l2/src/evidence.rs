//! What a received ARP or NDP frame proves about an address: the pure
//! classifier behind the conflict probe, public so that the speaker judges
//! answers to its own probes (and foreign claims on its VIPs) by the same
//! rules.
//!
//! A frame "sights" at most one address: the one it claims (ARP sender, NA
//! target) or, for another host's probe, the one that host is choosing
//! (ARP target of a probe, DAD NS target). Whether that address is one the
//! caller cares about is the caller's business.

use std::net::IpAddr;

use crate::frame::ether::peek_ethertype;
use crate::frame::{ArpOp, ArpPacket, EtherType, EthernetHeader, NdpMessage};
use crate::mac::MacAddr;

/// What convinced the probe that an address is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Evidence {
    /// An ARP reply from the address (the usual answer to a probe).
    ArpReply,
    /// An ARP request (announcement, gratuitous ARP or ordinary request)
    /// whose sender IP is the address: RFC 5227 §2.1.1 counts any ARP
    /// packet with that sender address.
    ArpSender,
    /// Another host's ARP probe for the same address: both hosts are
    /// choosing it right now (RFC 5227 §2.1.1), so both must back off.
    SimultaneousArpProbe,
    /// A Neighbor Advertisement for the address (RFC 4862 §5.4.4).
    NeighborAdvertisement,
    /// Another host's DAD solicitation for the same address (RFC 4862
    /// §5.4.3).
    SimultaneousDad,
    /// A Neighbor Solicitation whose source is the address: the host uses
    /// it to resolve someone else. Only [`ns_sender_sighting`] reports it;
    /// the probe and the speaker do not ask for it.
    SolicitationSender,
}

/// Another host using or claiming an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    /// The address.
    pub addr: IpAddr,
    /// The other host's MAC.
    pub mac: MacAddr,
    /// What was seen.
    pub evidence: Evidence,
}

impl Evidence {
    /// True for evidence that the address is configured and answering
    /// (a reply, an announcement, an NA), as opposed to another host
    /// merely probing for it.
    pub fn is_claim(self) -> bool {
        matches!(
            self,
            Evidence::ArpReply
                | Evidence::ArpSender
                | Evidence::NeighborAdvertisement
                | Evidence::SolicitationSender
        )
    }
}

/// Classifies one whole Ethernet frame received by a host whose MAC is
/// `ours`; `None` for anything that is not evidence (or does not parse).
pub fn sighting(frame: &[u8], ours: MacAddr) -> Option<Sighting> {
    match peek_ethertype(frame) {
        Some(EtherType::ARP) => {
            let (eth, p) = ArpPacket::parse_frame(frame).ok()?;
            arp_sighting(&eth, &p, ours)
        }
        Some(EtherType::IPV6) => {
            let (eth, m) = NdpMessage::parse_frame(frame).ok()?;
            ndp_sighting(&eth, &m, ours)
        }
        _ => None,
    }
}

/// [`sighting`] for an already parsed ARP packet.
///
/// RFC 5227 §2.1.1: any ARP packet with the address as sender IP shows it
/// in use; another host's probe (sender IP 0) for it shows that host
/// choosing it. An ordinary request *for* the address from a configured
/// host is not evidence: someone merely looking for it does not mean it
/// exists. Frames from our own MAC are ignored: they are our own probes
/// coming back (a hairpinning bridge, a reflecting switch port), not a
/// second host.
pub fn arp_sighting(eth: &EthernetHeader, p: &ArpPacket, ours: MacAddr) -> Option<Sighting> {
    if eth.src == ours || p.sha == ours {
        return None;
    }
    let (addr, evidence) = if !p.spa.is_unspecified() {
        let evidence = match p.op {
            ArpOp::Reply => Evidence::ArpReply,
            ArpOp::Request => Evidence::ArpSender,
        };
        (p.spa, evidence)
    } else if p.is_probe() {
        (p.tpa, Evidence::SimultaneousArpProbe)
    } else {
        return None;
    };
    Some(Sighting {
        addr: IpAddr::V4(addr),
        mac: p.sha,
        evidence,
    })
}

/// [`sighting`] for an already parsed NS or NA.
///
/// RFC 4862 §5.4.3-5.4.4: an NA for the target means it is in use (the
/// MAC is the NA's target link-layer address, or its Ethernet source
/// without one); an NS from `::` for it is another host's simultaneous
/// DAD. An NS from a real source is address resolution by someone else and
/// proves nothing. Our own frames, and NAs naming our MAC, are ignored.
pub fn ndp_sighting(eth: &EthernetHeader, m: &NdpMessage, ours: MacAddr) -> Option<Sighting> {
    if eth.src == ours {
        return None;
    }
    let (mac, evidence) = match m {
        NdpMessage::Advertisement(na) => {
            let mac = na.target_ll.unwrap_or(eth.src);
            if mac == ours {
                return None;
            }
            (mac, Evidence::NeighborAdvertisement)
        }
        NdpMessage::Solicitation(ns) if ns.is_dad() => (eth.src, Evidence::SimultaneousDad),
        NdpMessage::Solicitation(_) => return None,
    };
    Some(Sighting {
        addr: IpAddr::V6(m.target()),
        mac,
        evidence,
    })
}

/// The IPv6 counterpart of an ARP request's sender address, for the
/// passive watcher (`crate::watch`): a Neighbor Solicitation from a real
/// source shows that source in use by the sender (RFC 4861 §7.2.2 puts the
/// sender's own address there), as an ARP request's sender IP does for
/// IPv4. [`sighting`] leaves it out because it reports what a frame says
/// about its target, and this is about the source.
pub fn ns_sender_sighting(frame: &[u8], ours: MacAddr) -> Option<Sighting> {
    if peek_ethertype(frame) != Some(EtherType::IPV6) {
        return None;
    }
    let (eth, m) = NdpMessage::parse_frame(frame).ok()?;
    let NdpMessage::Solicitation(ns) = m else {
        return None;
    };
    let mac = ns.source_ll.unwrap_or(eth.src);
    let link_local = ns.src.segments()[0] & 0xffc0 == 0xfe80;
    if eth.src == ours || mac == ours || ns.src.is_unspecified() || link_local {
        return None;
    }
    Some(Sighting {
        addr: IpAddr::V6(ns.src),
        mac,
        evidence: Evidence::SolicitationSender,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::ndp::{ipv6_multicast_mac, ALL_NODES};
    use crate::frame::{solicited_node_multicast_mac, NeighborAdvertisement, NeighborSolicitation};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const US: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const THEM: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5);

    fn seen(frame: &[u8]) -> Option<(IpAddr, MacAddr, Evidence)> {
        sighting(frame, US).map(|s| (s.addr, s.mac, s.evidence))
    }

    #[test]
    fn arp_claims_and_probes_are_evidence_requests_are_not() {
        let reply = ArpPacket::reply(THEM, IP, US, Ipv4Addr::UNSPECIFIED).to_frame();
        assert_eq!(seen(&reply), Some((IP.into(), THEM, Evidence::ArpReply)));
        let garp = ArpPacket::gratuitous_request(THEM, IP).to_frame();
        assert_eq!(seen(&garp), Some((IP.into(), THEM, Evidence::ArpSender)));
        let probe = ArpPacket::probe(THEM, IP).to_frame();
        let sim = Some((IP.into(), THEM, Evidence::SimultaneousArpProbe));
        assert_eq!(seen(&probe), sim);
        // Someone asking for IP says nothing about IP; it does show the
        // asker's own address in use.
        let asker = Ipv4Addr::new(10, 0, 0, 9);
        let ask = ArpPacket::request(THEM, asker, IP).to_frame();
        assert_eq!(seen(&ask), Some((asker.into(), THEM, Evidence::ArpSender)));
        // Our own probe coming back.
        assert_eq!(seen(&ArpPacket::probe(US, IP).to_frame()), None);
    }

    #[test]
    fn na_and_dad_are_evidence_resolution_is_not() {
        let na = NeighborAdvertisement::unsolicited(IP6, THEM, IP6)
            .to_frame(THEM, ipv6_multicast_mac(ALL_NODES))
            .expect("valid");
        let claim = seen(&na);
        assert_eq!(
            claim,
            Some((IP6.into(), THEM, Evidence::NeighborAdvertisement))
        );
        assert!(claim.is_some_and(|(_, _, e)| e.is_claim()));
        let group = solicited_node_multicast_mac(IP6);
        let dad = NeighborSolicitation::dad(IP6)
            .to_frame(THEM, group)
            .expect("valid");
        let sim = seen(&dad);
        assert_eq!(sim, Some((IP6.into(), THEM, Evidence::SimultaneousDad)));
        assert!(sim.is_some_and(|(_, _, e)| !e.is_claim()));
        let src = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9);
        let resolve = NeighborSolicitation::resolve(src, THEM, IP6)
            .to_frame(THEM, group)
            .expect("valid");
        assert_eq!(seen(&resolve), None);
        // ...but it shows its source in use, for the watcher.
        let sender = ns_sender_sighting(&resolve, US).map(|s| (s.addr, s.mac, s.evidence));
        assert_eq!(
            sender,
            Some((src.into(), THEM, Evidence::SolicitationSender))
        );
        assert_eq!(ns_sender_sighting(&dad, US), None, "DAD has no source");
        assert_eq!(ns_sender_sighting(&resolve, THEM), None, "our own");
        // An NA naming our MAC, even relayed by someone else, is us.
        let ours = NeighborAdvertisement::unsolicited(IP6, US, IP6)
            .to_frame(THEM, ipv6_multicast_mac(ALL_NODES))
            .expect("valid");
        assert_eq!(seen(&ours), None);
    }
}
