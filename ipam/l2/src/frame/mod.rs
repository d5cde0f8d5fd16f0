//! ARP and NDP wire formats as pure byte functions (STYLE rule 9).
//!
//! Everything here works on byte slices and fixed-size stack buffers: no
//! sockets, no clocks, no allocation. Builders write whole Ethernet II
//! frames; parsers take whole Ethernet II frames (as an `AF_PACKET`
//! `SOCK_RAW` socket delivers them), validate every field they rely on, and
//! return an error instead of panicking on any input. The layout follows
//! firecracker's `dumbo` PDUs: named offset constants, then validating
//! constructors.
//!
//! 802.1Q-tagged frames are not parsed: Linux strips the VLAN tag before
//! `AF_PACKET` delivery on a VLAN sub-interface, and flatlan probes and
//! announces on the sub-interface, never on the trunk.

pub mod arp;
pub mod checksum;
pub mod ether;
pub mod ndp;

pub use arp::{ArpOp, ArpPacket};
pub use ether::{EtherType, EthernetHeader};
pub use ndp::{
    solicited_node_multicast, solicited_node_multicast_mac, NdpMessage, NeighborAdvertisement,
    NeighborSolicitation,
};

use std::ops::Deref;

/// Why a frame could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The input ended before a field the parser needs.
    #[error("truncated frame: need {needed} bytes, got {got}")]
    Truncated { needed: usize, got: usize },
    /// A builder's output buffer is too small.
    #[error("buffer too small: need {needed} bytes, have {got}")]
    BufferTooSmall { needed: usize, got: usize },
    /// The Ethernet II type is not the one this parser handles.
    #[error("wrong ethertype {found:#06x}, expected {expected:#06x}")]
    WrongEtherType { expected: u16, found: u16 },
    /// ARP hardware type is not Ethernet (1), RFC 826.
    #[error("ARP hardware type {0} is not Ethernet (1)")]
    BadHardwareType(u16),
    /// ARP protocol type is not IPv4 (0x0800), RFC 826.
    #[error("ARP protocol type {0:#06x} is not IPv4 (0x0800)")]
    BadProtocolType(u16),
    /// ARP hardware/protocol address lengths are not 6 and 4.
    #[error("ARP address lengths hlen={hlen} plen={plen}, expected 6 and 4")]
    BadAddressLength { hlen: u8, plen: u8 },
    /// ARP opcode other than request (1) or reply (2), e.g. RARP.
    #[error("unsupported ARP opcode {0}")]
    UnsupportedArpOp(u16),
    /// The IP version nibble is not 6.
    #[error("IP version {0}, expected 6")]
    BadIpVersion(u8),
    /// The IPv6 next header is not ICMPv6 (58). NDP messages with extension
    /// headers are not accepted.
    #[error("IPv6 next header {0}, expected ICMPv6 (58)")]
    NotIcmpv6(u8),
    /// The ICMPv6 type is not NS (135) or NA (136).
    #[error("ICMPv6 type {0} is not a neighbor solicitation or advertisement")]
    NotNdp(u8),
    /// ICMPv6 code is not 0 (RFC 4861 §7.1.1, §7.1.2).
    #[error("ICMPv6 code {0}, expected 0")]
    BadIcmpCode(u8),
    /// NDP must arrive with hop limit 255, proving it was not forwarded by a
    /// router (RFC 4861 §7.1.1, §7.1.2).
    #[error("NDP hop limit {0}, expected 255")]
    BadHopLimit(u8),
    /// The ICMPv6 checksum over the pseudo-header does not verify.
    #[error("bad ICMPv6 checksum {found:#06x}, expected {expected:#06x}")]
    BadChecksum { expected: u16, found: u16 },
    /// A zero-length option, or an option running past the message
    /// (RFC 4861 §4.6: such packets MUST be silently discarded).
    #[error("malformed NDP option at offset {offset}")]
    BadOptionLength { offset: usize },
    /// A link-layer address option whose length is not 1 (8 bytes), the
    /// only valid length on Ethernet (RFC 2464 §6).
    #[error("link-layer address option of type {kind} has length {len} units, expected 1")]
    BadLinkLayerOption { kind: u8, len: u8 },
    /// An NDP field that violates a validity rule of RFC 4861 §7.1.
    #[error("invalid NDP message: {0}")]
    InvalidNdp(&'static str),
}

/// Capacity of [`Frame`]: the largest frame any builder here produces
/// (an NA with one link-layer option is 86 bytes) with room to spare.
pub const FRAME_CAPACITY: usize = 128;

/// The minimum Ethernet frame length without FCS (IEEE 802.3 §3.2.7):
/// 64 bytes on the wire minus the 4-byte FCS the NIC appends. Shorter
/// frames are padded with zeros.
pub const ETH_MIN_FRAME: usize = 60;

/// A built frame on the stack: no allocation per packet on the send path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    buf: [u8; FRAME_CAPACITY],
    len: usize,
}

impl Frame {
    /// An empty frame.
    pub const fn empty() -> Self {
        Frame {
            buf: [0; FRAME_CAPACITY],
            len: 0,
        }
    }

    /// The frame bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Fills the frame by running `write` over the whole (zeroed) buffer;
    /// `write` returns the number of bytes used, and the frame is then
    /// padded to [`ETH_MIN_FRAME`]. Callers only write fixed layouts that
    /// are shorter than [`FRAME_CAPACITY`] (checked by the golden tests).
    pub(crate) fn build(write: impl FnOnce(&mut [u8; FRAME_CAPACITY]) -> usize) -> Self {
        let mut frame = Frame::empty();
        let len = write(&mut frame.buf);
        // The buffer started zeroed, so padding is just a longer length.
        frame.len = len.clamp(ETH_MIN_FRAME, FRAME_CAPACITY);
        frame
    }
}

impl Default for Frame {
    fn default() -> Self {
        Frame::empty()
    }
}

impl Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame[{}](", self.len)?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// Returns `buf[start..start + N]` as an array, or [`FrameError::Truncated`].
pub(crate) fn read_array<const N: usize>(buf: &[u8], start: usize) -> Result<[u8; N], FrameError> {
    let end = start.checked_add(N).ok_or(FrameError::Truncated {
        needed: usize::MAX,
        got: buf.len(),
    })?;
    buf.get(start..end)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(FrameError::Truncated {
            needed: end,
            got: buf.len(),
        })
}

/// Reads a big-endian u16 at `start`.
pub(crate) fn read_u16(buf: &[u8], start: usize) -> Result<u16, FrameError> {
    read_array::<2>(buf, start).map(u16::from_be_bytes)
}

/// Fails with [`FrameError::BufferTooSmall`] unless `buf` holds `needed` bytes.
pub(crate) fn ensure_room(buf: &[u8], needed: usize) -> Result<(), FrameError> {
    if buf.len() < needed {
        return Err(FrameError::BufferTooSmall {
            needed,
            got: buf.len(),
        });
    }
    Ok(())
}
