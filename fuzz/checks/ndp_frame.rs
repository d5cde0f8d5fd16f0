//! The `ndp_frame` check: shared by `fuzz/fuzz_targets/ndp_frame.rs` and the
//! corpus replay in `ipam/tests/fuzz_corpus.rs`, so both run the same code.
//!
//! Input: one whole Ethernet frame. Each input is parsed twice: as given,
//! and with its ICMPv6 checksum recomputed, so that mutations reach the
//! option walk and the RFC 4861 validity rules behind the checksum.

use std::net::Ipv6Addr;

use flatlan_l2::frame::checksum::icmpv6_checksum_of_message;
use flatlan_l2::frame::ether::HEADER_LEN;
use flatlan_l2::frame::ndp::{
    ICMP_CHECKSUM_OFFSET, IP6_DST_OFFSET, IP6_HEADER_LEN, IP6_PLEN_OFFSET, IP6_SRC_OFFSET,
};
use flatlan_l2::frame::{EtherType, NdpMessage};

pub fn check(data: &[u8]) {
    check_one(data);
    if let Some(fixed) = with_fixed_checksum(data) {
        check_one(&fixed);
    }
}

/// `data` with the ICMPv6 checksum rewritten to the right value, when the
/// frame is long enough to have one.
pub fn with_fixed_checksum(data: &[u8]) -> Option<Vec<u8>> {
    let ip = HEADER_LEN;
    let icmp_at = ip + IP6_HEADER_LEN;
    let plen = u16::from_be_bytes(
        data.get(ip + IP6_PLEN_OFFSET..ip + IP6_PLEN_OFFSET + 2)?
            .try_into()
            .ok()?,
    );
    let end = icmp_at + usize::from(plen);
    if usize::from(plen) < ICMP_CHECKSUM_OFFSET + 2 || data.len() < end {
        return None;
    }
    let addr = |at: usize| -> Option<Ipv6Addr> {
        let o: [u8; 16] = data.get(ip + at..ip + at + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(o))
    };
    let (src, dst) = (addr(IP6_SRC_OFFSET)?, addr(IP6_DST_OFFSET)?);
    let mut out = data.to_vec();
    let sum = icmpv6_checksum_of_message(src, dst, &out[icmp_at..end]);
    let ck = icmp_at + ICMP_CHECKSUM_OFFSET;
    out[ck..ck + 2].copy_from_slice(&sum.to_be_bytes());
    Some(out)
}

fn check_one(data: &[u8]) {
    // The passive watcher (ipam/src/watch.rs) classifies every frame a LAN
    // host puts on the bridge; an NS-sender sighting is the NS's source.
    let ours = flatlan_l2::mac::MacAddr([0x02, 0, 0, 0, 0, 1]);
    let _ = flatlan_ipam::watch::Watch::new(ours, 3600).observe(data, 1, |_| true);
    let sender = flatlan_l2::evidence::ns_sender_sighting(data, ours);
    let Ok((hdr, msg)) = NdpMessage::parse_frame(data) else {
        assert!(
            sender.is_none(),
            "a sighting from a frame that does not parse"
        );
        return;
    };
    if let Some(s) = sender {
        assert!(
            matches!(&msg, NdpMessage::Solicitation(ns)
                if std::net::IpAddr::V6(ns.src) == s.addr && !ns.src.is_unspecified()),
            "{s:?} is not the source of {msg:?}"
        );
    }
    assert_eq!(hdr.ethertype, EtherType::IPV6);
    assert_eq!(
        NdpMessage::parse_ipv6(&data[HEADER_LEN..]).as_ref(),
        Ok(&msg)
    );
    // Anything we accept, we could also have built: the builders apply the
    // same validity rules, and the rebuilt frame parses to the same message
    // (unknown options and padding are not carried over).
    let rebuilt = match msg {
        NdpMessage::Solicitation(ns) => {
            let _ = (ns.is_dad(), ns.multicast_eth_dst());
            ns.to_frame(hdr.src, hdr.dst)
        }
        NdpMessage::Advertisement(na) => {
            let _ = na.multicast_eth_dst();
            na.to_frame(hdr.src, hdr.dst)
        }
    }
    .expect("a parsed NS/NA passes the builder's validation");
    let (hdr2, msg2) = NdpMessage::parse_frame(&rebuilt).expect("a rebuilt frame parses");
    assert_eq!(hdr2, hdr);
    assert_eq!(msg2, msg);
    assert_eq!(msg2.target(), msg.target());
    // The rebuilt frame is canonical: rebuilding it again changes nothing.
    let again = match msg2 {
        NdpMessage::Solicitation(ns) => ns.to_frame(hdr.src, hdr.dst),
        NdpMessage::Advertisement(na) => na.to_frame(hdr.src, hdr.dst),
    }
    .expect("rebuilds");
    assert_eq!(again.as_bytes(), rebuilt.as_bytes());
}
