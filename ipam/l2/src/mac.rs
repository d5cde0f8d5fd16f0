//! Ethernet MAC addresses, and the stable MAC flatlan gives each pod.
//!
//! A pod's MAC is derived from its IP so that the ARP/neighbour caches of
//! LAN hosts stay valid when a pod is restarted with the same (sticky)
//! address: a restarted pod would otherwise get a random veth MAC, and every
//! LAN client would keep sending to the old MAC until its cache entry expires
//! (DESIGN §3 "Sticky identity"). kubenet and OVN-Kubernetes use the same
//! `0a:58:` + IPv4 scheme.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::Error;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`, e.g. the unknown target hardware address of an
    /// ARP request (RFC 826) or probe (RFC 5227 §2.1.1).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The first two octets of every pod MAC: `0x0a` has the
    /// locally-administered bit (0x02) set and the group bit (0x01) clear, so
    /// it can never collide with a vendor (OUI) address nor be a multicast.
    pub const POD_PREFIX: [u8; 2] = [0x0a, 0x58];

    /// Wraps six octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }

    /// The six octets, in transmission order.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// True for group (multicast and broadcast) addresses: the I/G bit, the
    /// least significant bit of the first octet (IEEE 802-2014 §8.2).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// True for `00:00:00:00:00:00`.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// True for unicast addresses that are not all-zero.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// True if the U/L bit (0x02 of the first octet) marks the address as
    /// locally administered.
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// The first octet of an IPv6-only pod's MAC: locally administered
    /// unicast like `0a`, and distinct from both `0a` (IPv4 pods) and `0e`
    /// (their host veths, [`POD_PREFIX`](Self::POD_PREFIX) with bit 2 set).
    pub const POD_V6_PREFIX: u8 = 0x06;

    /// The stable pod MAC for `ip`.
    ///
    /// - IPv4: `0a:58:` followed by the four address octets (as kubenet and
    ///   OVN-Kubernetes). A dual-stack pod takes this form, from its IPv4
    ///   address.
    /// - IPv6 (an IPv6-only pod): `06:` followed by 40 bits: the low 40 bits
    ///   of the address XOR the top 40 bits of FNV-1a-64 over its first 11
    ///   octets. Only 46 bits of a MAC are free and nodes' slices may differ
    ///   anywhere in the interface ID, so no rule is injective; this one
    ///   never gives one MAC to two addresses of the same /88 (every slice
    ///   differing only in the low 40 bits, such as the /112s of one /64),
    ///   and two addresses that differ above that collide with odds of one
    ///   in 2^40. Taking just the low 32 bits, as before, gave a whole
    ///   slice the same MACs as another node's (issue 10, item 17).
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                let [p0, p1] = Self::POD_PREFIX;
                MacAddr([p0, p1, a, b, c, d])
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let high = fnv1a64(&o[..11]) >> 24;
                let low = u64::from_be_bytes([0, 0, 0, o[11], o[12], o[13], o[14], o[15]]);
                let [_, _, _, a, b, c, d, e] = (low ^ high).to_be_bytes();
                MacAddr([Self::POD_V6_PREFIX, a, b, c, d, e])
            }
        }
    }

    /// Whether this is the MAC flatlan derives for a pod that has `ip`.
    /// For IPv4 only exactly `0a:58:<ip>`: kubenet and OVN pods of another
    /// cluster on the LAN, or anyone who picks such a MAC, use the same
    /// prefix, and a claim from one of them on a pool address must still
    /// be quarantined. For IPv6 any `0a:58:…` (a dual-stack pod's IPv6
    /// frames carry the MAC of its IPv4 address), or the IPv6-only form of
    /// exactly `ip`. Not just the `06` prefix: LAN devices with random
    /// (locally administered) MACs have it one time in 64.
    pub fn is_pod_mac_for(&self, ip: IpAddr) -> bool {
        *self == Self::from_ip(ip) || (ip.is_ipv6() && self.0[..2] == Self::POD_PREFIX)
    }
}

/// FNV-1a, 64-bit (the published offset basis and prime): fixed forever,
/// since pods' MACs must not change between flatlan versions.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> Self {
        mac.0
    }
}

impl AsRef<[u8]> for MacAddr {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl FromStr for MacAddr {
    /// Always [`Error::InvalidMac`].
    type Err = Error;

    /// Accepts exactly `xx:xx:xx:xx:xx:xx` (either case). Other notations
    /// (`-` separators, dotted Cisco form, single-digit octets) are rejected
    /// so that a config value has a single canonical spelling.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || Error::InvalidMac {
            input: s.chars().take(64).collect(),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for slot in out.iter_mut() {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MacAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MAC address string like \"aa:bb:cc:dd:ee:ff\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MacAddr, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn display_and_parse_round_trip() {
        let mac = MacAddr([0xaa, 0xbb, 0x0c, 0x0d, 0xee, 0x0f]);
        assert_eq!(mac.to_string(), "aa:bb:0c:0d:ee:0f");
        assert_eq!("aa:bb:0c:0d:ee:0f".parse::<MacAddr>().ok(), Some(mac));
        assert_eq!("AA:BB:0C:0D:EE:0F".parse::<MacAddr>().ok(), Some(mac));
    }

    #[test]
    fn parse_rejects_bad_input() {
        for bad in [
            "",
            ":",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:f",
            "aa:bb:cc:dd:ee:fff",
            "aa-bb-cc-dd-ee-ff",
            "gg:bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:ff:",
            " aa:bb:cc:dd:ee:ff",
            "aa::cc:dd:ee:ff",
            "é:bb:cc:dd:ee:ff",
            "ab\u{e9}:cc:dd:ee:ff:00",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn parse_error_message_is_bounded() {
        let long = "x".repeat(10_000);
        match long.parse::<MacAddr>() {
            Err(Error::InvalidMac { input }) => assert_eq!(input, "x".repeat(64)),
            other => panic!("expected InvalidMac, got {other:?}"),
        }
    }

    #[test]
    fn predicates() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr([0x33, 0x33, 0, 0, 0, 1]).is_multicast());
        assert!(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!MacAddr([0x0a, 0x58, 1, 2, 3, 4]).is_multicast());
        assert!(MacAddr::ZERO.is_zero());
        assert!(!MacAddr::ZERO.is_unicast());
        assert!(MacAddr([0x0a, 0x58, 1, 2, 3, 4]).is_unicast());
        assert!(MacAddr([0x0a, 0x58, 1, 2, 3, 4]).is_local());
        assert!(!MacAddr([0x00, 0x1b, 0x21, 1, 2, 3]).is_local());
    }

    #[test]
    fn pod_mac_from_ipv4() {
        let mac = MacAddr::from_ip(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 23)));
        assert_eq!(mac.to_string(), "0a:58:c0:a8:01:17");
        assert!(mac.is_local() && mac.is_unicast());
    }

    #[test]
    fn pod_mac_from_ipv6_is_pinned() {
        // Golden values, computed apart from this code (Python's ipaddress
        // and FNV-1a by hand): a change here changes running pods' MACs.
        for (ip, mac) in [
            ("fd00:2::1:5", "06:18:1a:da:6d:4f"),
            ("2001:db8:1:2::c0a8:117", "06:a6:7a:25:f6:ce"),
            ("fd00::1:2:3:4", "06:d8:28:b0:5b:30"),
        ] {
            let ip: Ipv6Addr = ip.parse().expect("valid v6");
            assert_eq!(MacAddr::from_ip(IpAddr::V6(ip)).to_string(), mac, "{ip}");
        }
    }

    /// Issue 10, item 17: two nodes' slices that differ only above the low
    /// 32 bits gave their pods the same MACs (`0a:58:00:00:00:00` twice).
    #[test]
    fn ipv6_slices_of_different_nodes_never_share_a_mac() {
        use std::collections::HashSet;
        let mut seen = HashSet::new();
        // Slices differing in the low 40 bits (/112s of a /64), above them
        // (bits 40-63), and in the prefix: 16 x 4096 addresses.
        for slice in [
            "fd00:2::1:0",
            "fd00:2::2:0",
            "fd00:2::ff:0",
            "fd00:2::1:0:0",
            "fd00:2::1:0:0:0",
            "fd00:2::2:0:0:0",
            "fd00:2:0:0:100::",
            "fd00:2:0:0:200::",
            "fd00:3::1:0",
            "fd00:3::1:0:0:0",
            "2001:db8::1:0",
            "2001:db8:0:1::1:0",
            "2001:db8::100:0:0",
            "2001:db8::200:0:0",
            "fd00::",
            "fd00:0:0:1::",
        ] {
            let base = u128::from(slice.parse::<Ipv6Addr>().expect("valid v6"));
            for i in 0..4096u128 {
                let ip = Ipv6Addr::from(base + i);
                let mac = MacAddr::from_ip(IpAddr::V6(ip));
                assert!(mac.is_local() && mac.is_unicast(), "{ip}: {mac}");
                assert_eq!(mac.0[0], MacAddr::POD_V6_PREFIX, "{ip}");
                assert!(seen.insert(mac), "{ip} shares {mac} with another address");
            }
        }
    }

    #[test]
    fn pod_macs_are_recognised_by_address() {
        let v6: IpAddr = "fd00:2::1:5".parse().expect("valid v6");
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 168, 2, 210));
        assert!(MacAddr::from_ip(v6).is_pod_mac_for(v6));
        assert!(MacAddr::from_ip(v4).is_pod_mac_for(v6), "a dual-stack pod");
        assert!(MacAddr::from_ip(v4).is_pod_mac_for(v4));
        let other: IpAddr = "fd00:2::1:6".parse().expect("valid v6");
        assert!(!MacAddr::from_ip(other).is_pod_mac_for(v6));
        assert!(!MacAddr([0x06, 1, 2, 3, 4, 5]).is_pod_mac_for(v6));
        let other_v4 = IpAddr::V4(Ipv4Addr::new(192, 168, 2, 99));
        assert!(
            !MacAddr::from_ip(other_v4).is_pod_mac_for(v4),
            "another host's 0a:58 MAC claiming an IPv4 pool address"
        );
    }

    #[test]
    fn ipv6_pod_macs_never_look_like_ipv4_ones() {
        let v4 = MacAddr::from_ip(IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)));
        let v6 = MacAddr::from_ip(IpAddr::V6("::".parse().expect("valid v6")));
        assert_ne!(v4.0[0], v6.0[0]);
        assert_ne!(v4.0[0] ^ 0x04, v6.0[0], "nor like a host veth's");
    }

    #[test]
    fn pod_mac_is_stable_and_never_multicast() {
        for ip in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::BROADCAST),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::from([0xff; 16])),
        ] {
            let mac = MacAddr::from_ip(ip);
            assert!(!mac.is_multicast());
            assert!(mac.is_local());
        }
    }

    #[test]
    fn serde_as_string() {
        let mac = MacAddr([0x0a, 0x58, 0x0a, 0x00, 0x00, 0x05]);
        let json = serde_json::to_string(&mac).expect("serialize");
        assert_eq!(json, "\"0a:58:0a:00:00:05\"");
        let back: MacAddr = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, mac);
        assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
        assert!(serde_json::from_str::<MacAddr>("[1,2,3,4,5,6]").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = s.parse::<MacAddr>();
        }

        #[test]
        fn display_parse_round_trip(octets in proptest::array::uniform6(proptest::num::u8::ANY)) {
            let mac = MacAddr(octets);
            proptest::prop_assert_eq!(mac.to_string().parse::<MacAddr>().ok(), Some(mac));
        }
    }
}
