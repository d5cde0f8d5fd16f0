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

    /// The stable pod MAC for `ip`: `0a:58:` followed by the four IPv4
    /// octets, or by the last four octets of an IPv6 address.
    ///
    /// For IPv6 only the low 32 bits fit; two pods whose addresses differ
    /// only above the low 32 bits would share a MAC. flatlan's IPv6 pools
    /// are single LAN prefixes (/64 or longer), so within one L2 segment
    /// the low 32 bits already identify the pod. A dual-stack pod should
    /// derive its MAC from its IPv4 address, so that the MAC matches what
    /// kubenet/OVN would pick.
    pub fn from_ip(ip: IpAddr) -> Self {
        let low = match ip {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                [o[12], o[13], o[14], o[15]]
            }
        };
        let [p0, p1] = Self::POD_PREFIX;
        MacAddr([p0, p1, low[0], low[1], low[2], low[3]])
    }
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
    fn pod_mac_from_ipv6_uses_low_32_bits() {
        let ip: Ipv6Addr = "2001:db8:1:2::c0a8:117".parse().expect("valid v6");
        let mac = MacAddr::from_ip(IpAddr::V6(ip));
        assert_eq!(mac.to_string(), "0a:58:c0:a8:01:17");
        let ip: Ipv6Addr = "fd00::1:2:3:4".parse().expect("valid v6");
        assert_eq!(
            MacAddr::from_ip(IpAddr::V6(ip)),
            MacAddr([0x0a, 0x58, 0, 3, 0, 4])
        );
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
