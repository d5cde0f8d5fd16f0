//! Ethernet II (DIX) header: destination MAC, source MAC, EtherType.

use super::{ensure_room, read_array, read_u16, FrameError};
use crate::mac::MacAddr;

/// Offset of the destination MAC.
pub const DST_OFFSET: usize = 0;
/// Offset of the source MAC.
pub const SRC_OFFSET: usize = 6;
/// Offset of the EtherType.
pub const ETHERTYPE_OFFSET: usize = 12;
/// Offset of the payload; also the header length.
pub const PAYLOAD_OFFSET: usize = 14;
/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = PAYLOAD_OFFSET;

/// The EtherTypes flatlan speaks (IEEE registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4, 0x0800.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP, 0x0806 (RFC 826).
    pub const ARP: EtherType = EtherType(0x0806);
    /// IPv6, 0x86DD (RFC 2464); NDP rides on it.
    pub const IPV6: EtherType = EtherType(0x86dd);
}

/// A parsed or to-be-written Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetHeader {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// EtherType (values < 0x0600 would be 802.3 lengths; they are returned
    /// as-is and left to the caller to reject).
    pub ethertype: EtherType,
}

impl EthernetHeader {
    /// Writes the 14-byte header at the start of `buf`; returns
    /// [`HEADER_LEN`].
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, FrameError> {
        ensure_room(buf, HEADER_LEN)?;
        Ok(self.write_unchecked(buf))
    }

    /// [`Self::write`] for callers that already checked `buf.len() >=
    /// HEADER_LEN` (indexes would panic otherwise).
    pub(crate) fn write_unchecked(&self, buf: &mut [u8]) -> usize {
        buf[DST_OFFSET..SRC_OFFSET].copy_from_slice(&self.dst.0);
        buf[SRC_OFFSET..ETHERTYPE_OFFSET].copy_from_slice(&self.src.0);
        buf[ETHERTYPE_OFFSET..PAYLOAD_OFFSET].copy_from_slice(&self.ethertype.0.to_be_bytes());
        HEADER_LEN
    }

    /// Parses the header; returns it and the payload that follows.
    pub fn parse(frame: &[u8]) -> Result<(EthernetHeader, &[u8]), FrameError> {
        let dst = MacAddr(read_array(frame, DST_OFFSET)?);
        let src = MacAddr(read_array(frame, SRC_OFFSET)?);
        let ethertype = EtherType(read_u16(frame, ETHERTYPE_OFFSET)?);
        let payload = frame.get(PAYLOAD_OFFSET..).unwrap_or_default();
        Ok((
            EthernetHeader {
                dst,
                src,
                ethertype,
            },
            payload,
        ))
    }

    /// Parses the header and checks its EtherType.
    pub fn parse_expecting(
        frame: &[u8],
        expected: EtherType,
    ) -> Result<(EthernetHeader, &[u8]), FrameError> {
        let (hdr, payload) = Self::parse(frame)?;
        if hdr.ethertype != expected {
            return Err(FrameError::WrongEtherType {
                expected: expected.0,
                found: hdr.ethertype.0,
            });
        }
        Ok((hdr, payload))
    }
}

/// The EtherType of a frame, without parsing the rest: the cheap userspace
/// filter the packet socket applies to every received frame.
pub fn peek_ethertype(frame: &[u8]) -> Option<EtherType> {
    read_u16(frame, ETHERTYPE_OFFSET).ok().map(EtherType)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_header() {
        let hdr = EthernetHeader {
            dst: MacAddr::BROADCAST,
            src: MacAddr([0x02, 0, 0, 0, 0, 0x01]),
            ethertype: EtherType::ARP,
        };
        let mut buf = [0u8; 14];
        assert_eq!(hdr.write(&mut buf), Ok(14));
        assert_eq!(
            buf,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06]
        );
        assert_eq!(EthernetHeader::parse(&buf), Ok((hdr, &[][..])));
    }

    #[test]
    fn short_inputs_are_errors() {
        let hdr = EthernetHeader {
            dst: MacAddr::BROADCAST,
            src: MacAddr::ZERO,
            ethertype: EtherType::IPV6,
        };
        assert!(matches!(
            hdr.write(&mut [0u8; 13]),
            Err(FrameError::BufferTooSmall {
                needed: 14,
                got: 13
            })
        ));
        for len in 0..14 {
            assert!(matches!(
                EthernetHeader::parse(&[0u8; 14][..len]),
                Err(FrameError::Truncated { .. })
            ));
        }
        assert_eq!(peek_ethertype(&[0u8; 13]), None);
    }

    #[test]
    fn wrong_ethertype() {
        let mut buf = [0u8; 20];
        buf[12] = 0x08;
        assert_eq!(
            EthernetHeader::parse_expecting(&buf, EtherType::ARP).map(|_| ()),
            Err(FrameError::WrongEtherType {
                expected: 0x0806,
                found: 0x0800
            })
        );
    }
}
