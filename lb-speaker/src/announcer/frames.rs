//! The frames the announcer sends and the [`Action`]s it returns.

use std::net::{IpAddr, Ipv6Addr};

use flatlan_l2::frame::ndp::{ipv6_multicast_mac, ALL_NODES};
use flatlan_l2::frame::{
    solicited_node_multicast_mac, ArpPacket, EtherType, Frame, NdpMessage, NeighborAdvertisement,
    NeighborSolicitation,
};

use super::Link;

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
    match flatlan_l2::frame::ether::peek_ethertype(frame) {
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

pub(super) fn v6_src(vip: Ipv6Addr) -> Ipv6Addr {
    // The NA's IPv6 source: the VIP itself. RFC 4861 §7.2.4 asks for "an
    // address assigned to the interface"; the VIP is the only address we
    // know is ours on every interface, and receivers do not check.
    vip
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
