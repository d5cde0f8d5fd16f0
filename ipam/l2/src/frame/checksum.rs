//! The Internet checksum (RFC 1071) and the ICMPv6 pseudo-header
//! (RFC 8200 §8.1, RFC 4443 §2.3).

use std::net::Ipv6Addr;

/// IPv6 next-header value of ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;

/// Adds `data` as big-endian 16-bit words to a running 32-bit sum, padding
/// an odd trailing byte with zero (RFC 1071 §4.1).
pub fn sum_words(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([pair[0], pair[1]])));
        // Fold early so that even huge inputs cannot overflow u32.
        if sum > 0xffff_0000 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// Folds the carries and takes the one's complement.
pub fn finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Truncation is exact after folding.
    !(sum as u16)
}

/// The sum of the ICMPv6 pseudo-header: source, destination, upper-layer
/// length (32 bits) and next header 58 (RFC 8200 §8.1).
pub fn icmpv6_pseudo_header_sum(src: Ipv6Addr, dst: Ipv6Addr, icmp_len: u32) -> u32 {
    let mut sum = sum_words(0, &src.octets());
    sum = sum_words(sum, &dst.octets());
    sum = sum_words(sum, &icmp_len.to_be_bytes());
    sum_words(sum, &[0, 0, 0, NEXT_HEADER_ICMPV6])
}

/// The ICMPv6 checksum of `icmp` (with its checksum field zeroed when
/// computing, or as received when verifying: then a valid message yields 0).
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    // ICMP messages in a frame are far below 4 GiB; saturate rather than cast.
    let len = u32::try_from(icmp.len()).unwrap_or(u32::MAX);
    finish(sum_words(icmpv6_pseudo_header_sum(src, dst, len), icmp))
}

/// The checksum an ICMPv6 message should carry, ignoring whatever its
/// checksum field (bytes 2..4) holds now. Used to report what was expected
/// when verification fails.
pub fn icmpv6_checksum_of_message(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let len = u32::try_from(icmp.len()).unwrap_or(u32::MAX);
    let sum = icmpv6_pseudo_header_sum(src, dst, len);
    // Skipping the 2-byte field keeps the remaining words aligned.
    let sum = sum_words(sum, icmp.get(..2).unwrap_or(icmp));
    finish(sum_words(sum, icmp.get(4..).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 worked example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum_words(0, &data)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum_words(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn large_input_does_not_overflow() {
        let data = vec![0xffu8; 1 << 20];
        assert_eq!(finish(sum_words(0, &data)), 0);
    }
}
