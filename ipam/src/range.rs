//! Inclusive address ranges, parsed from the forms users write in configs.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An inclusive range of addresses of one family.
///
/// Written as `a.b.c.d` (one address), `a.b.c.d-e.f.g.h`, or a CIDR. A CIDR
/// range covers its own network and broadcast addresses: a node's slice of
/// the LAN is not a separate broadcast domain, so those are ordinary hosts
/// (DESIGN.md §3). Only the LAN subnet's own edges are excluded, by [`crate::Pool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpRange {
    start: IpAddr,
    end: IpAddr,
}

impl IpRange {
    pub fn new(start: IpAddr, end: IpAddr) -> Result<Self> {
        let text = format!("{start}-{end}");
        if start.is_ipv4() != end.is_ipv4() {
            return Err(Error::InvalidRange {
                range: text,
                reason: "start and end are of different address families".into(),
            });
        }
        if to_u128(start) > to_u128(end) {
            return Err(Error::InvalidRange {
                range: text,
                reason: "start is after end".into(),
            });
        }
        Ok(IpRange { start, end })
    }

    pub fn single(ip: IpAddr) -> Self {
        IpRange { start: ip, end: ip }
    }

    pub fn from_net(net: IpNet) -> Self {
        IpRange {
            start: net.network(),
            end: net.broadcast(),
        }
    }

    pub fn start(&self) -> IpAddr {
        self.start
    }

    pub fn end(&self) -> IpAddr {
        self.end
    }

    pub fn is_ipv4(&self) -> bool {
        self.start.is_ipv4()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// Number of addresses in the range (saturating for a whole IPv6 space).
    pub fn len(&self) -> u128 {
        (to_u128(self.end) - to_u128(self.start)).saturating_add(1)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub(crate) fn bounds(&self) -> (u128, u128) {
        (to_u128(self.start), to_u128(self.end))
    }
}

impl FromStr for IpRange {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = |reason: &str| Error::InvalidRange {
            range: s.to_string(),
            reason: reason.to_string(),
        };
        if s.contains('/') {
            let net: IpNet = s
                .parse()
                .map_err(|_| bad("not a valid CIDR (expected e.g. 192.168.2.208/28)"))?;
            return Ok(IpRange::from_net(net.trunc()));
        }
        if let Some((a, b)) = s.split_once('-') {
            let start: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| bad("start is not an IP address"))?;
            let end: IpAddr = b
                .trim()
                .parse()
                .map_err(|_| bad("end is not an IP address"))?;
            return IpRange::new(start, end);
        }
        let ip: IpAddr = s
            .parse()
            .map_err(|_| bad("expected an address, START-END, or a CIDR"))?;
        Ok(IpRange::single(ip))
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Serialize for IpRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub(crate) fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        // Callers only pass values derived from IPv4 bounds.
        IpAddr::V4((v as u32).into())
    } else {
        IpAddr::V6(v.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        let r: IpRange = "192.168.2.210-192.168.2.219".parse().unwrap();
        assert_eq!(r.len(), 10);
        let r: IpRange = "192.168.2.208/28".parse().unwrap();
        assert_eq!(r.to_string(), "192.168.2.208-192.168.2.223");
        let r: IpRange = "192.168.2.1".parse().unwrap();
        assert_eq!(r.len(), 1);
        let r: IpRange = "fd00::10-fd00::1f".parse().unwrap();
        assert_eq!(r.len(), 16);
    }

    #[test]
    fn rejects_garbage_with_reason() {
        for bad in [
            "",
            "x",
            "1.2.3.4-",
            "1.2.3.9-1.2.3.1",
            "1.2.3.4-fd00::1",
            "1.2.3.0/33",
        ] {
            let err = bad.parse::<IpRange>().unwrap_err().to_string();
            assert!(err.contains("invalid address range"), "{bad}: {err}");
        }
    }
}
