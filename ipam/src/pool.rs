//! A pool: the LAN subnet, the ranges flatlan may hand out, and what it must never touch.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::range::{from_u128, to_u128, IpRange};

/// How far a single allocation scans before declaring a pool exhausted. An
/// IPv6 slice can be 2^64 addresses; scanning it whole would hang ADD.
const MAX_SCAN: u128 = 1 << 20;

/// Addresses flatlan may allocate for one family on one node.
///
/// Exclusions always win over ranges (DESIGN.md §3): the gateway, node IPs,
/// the router's DHCP pool and reserved addresses are never handed out, even
/// when a node's slice covers them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    subnet: IpNet,
    ranges: Vec<(u128, u128)>,
    exclude: Vec<(u128, u128)>,
}

impl Pool {
    pub fn new(subnet: IpNet, ranges: &[IpRange], exclude: &[IpRange]) -> Result<Pool> {
        let subnet = subnet.trunc();
        let v4 = matches!(subnet, IpNet::V4(_));
        if ranges.is_empty() {
            return Err(Error::InvalidRange {
                range: String::new(),
                reason: format!("no ranges given for subnet {subnet}"),
            });
        }
        for r in ranges {
            if r.is_ipv4() != v4 || !subnet.contains(&r.start()) || !subnet.contains(&r.end()) {
                return Err(Error::RangeOutsideSubnet {
                    range: r.to_string(),
                    subnet: subnet.to_string(),
                });
            }
        }
        let mut exclude: Vec<(u128, u128)> = exclude
            .iter()
            .filter(|r| r.is_ipv4() == v4)
            .map(IpRange::bounds)
            .collect();
        // The LAN's own network and broadcast addresses are not hosts. IPv6 has no
        // broadcast, but the all-zero host is the subnet-router anycast (RFC 4291 §2.6.1).
        let net = to_u128(subnet.network());
        exclude.push((net, net));
        if v4 {
            let bcast = to_u128(subnet.broadcast());
            exclude.push((bcast, bcast));
        }
        Ok(Pool {
            subnet,
            ranges: merge(ranges.iter().map(IpRange::bounds).collect()),
            exclude: merge(exclude),
        })
    }

    pub fn subnet(&self) -> IpNet {
        self.subnet
    }

    pub fn is_ipv4(&self) -> bool {
        matches!(self.subnet, IpNet::V4(_))
    }

    /// A short human description, used in error messages.
    pub fn describe(&self) -> String {
        let v4 = self.is_ipv4();
        let ranges: Vec<String> = self
            .ranges
            .iter()
            .map(|&(a, b)| {
                IpRange::new(from_u128(a, v4), from_u128(b, v4))
                    .map(|r| r.to_string())
                    .unwrap_or_default()
            })
            .collect();
        format!("{} in {}", ranges.join(","), self.subnet)
    }

    pub fn is_usable(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.is_ipv4() {
            return false;
        }
        let v = to_u128(ip);
        contains(&self.ranges, v) && !contains(&self.exclude, v)
    }

    /// Usable addresses in allocation order, starting just after `cursor`
    /// and wrapping around once, so freed addresses are reused last (as
    /// host-local does): LAN hosts' ARP caches then rarely meet a reused IP.
    pub fn candidates_after(&self, cursor: Option<IpAddr>) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self.is_ipv4();
        let cur = cursor
            .filter(|c| c.is_ipv4() == v4)
            .map(to_u128)
            .unwrap_or(0);
        let after = self.walk(Some(cur), None);
        let before = self.walk(None, Some(cur));
        after
            .chain(before)
            .take(MAX_SCAN as usize)
            .map(move |v| from_u128(v, v4))
    }

    /// Count of usable addresses, capped at the scan limit.
    pub fn usable_count(&self) -> u128 {
        self.walk(None, None).take(MAX_SCAN as usize).count() as u128
    }

    /// Walks range values strictly above `above` and at or below `upto`, skipping exclusions.
    fn walk(&self, above: Option<u128>, upto: Option<u128>) -> impl Iterator<Item = u128> + '_ {
        self.ranges.iter().flat_map(move |&(a, b)| {
            let lo = match above {
                Some(c) if c >= a => c.saturating_add(1),
                _ => a,
            };
            let hi = upto.map_or(b, |u| u.min(b));
            // Whole exclusions are stepped over, not tested one address at
            // a time: an IPv6 exclusion can cover 2^64 addresses, and
            // filtering those would hang ADD before the scan cap applies.
            free_spans(&self.exclude, lo, hi).flat_map(|(x, y)| x..=y)
        })
    }
}

/// The maximal spans of `lo..=hi` outside `exclude` (sorted, merged), in
/// order. Empty when `lo > hi`.
fn free_spans(
    exclude: &[(u128, u128)],
    lo: u128,
    hi: u128,
) -> impl Iterator<Item = (u128, u128)> + '_ {
    let mut next = Some(lo);
    let mut ex = exclude.iter().copied().peekable();
    std::iter::from_fn(move || loop {
        let start = next.filter(|s| *s <= hi)?;
        while ex.next_if(|&(_, e)| e < start).is_some() {}
        match ex.peek().copied() {
            // `start` is excluded: resume after the exclusion.
            Some((s, e)) if s <= start => next = e.checked_add(1),
            // Free up to the next exclusion, which begins inside the span.
            Some((s, _)) if s <= hi => {
                next = Some(s);
                return Some((start, s - 1));
            }
            _ => {
                next = None;
                return Some((start, hi));
            }
        }
    })
}

fn merge(mut v: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    v.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn contains(sorted: &[(u128, u128)], v: u128) -> bool {
    let i = sorted.partition_point(|&(a, _)| a <= v);
    i > 0 && sorted[i - 1].1 >= v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(subnet: &str, ranges: &[&str], exclude: &[&str]) -> Pool {
        let r: Vec<IpRange> = ranges.iter().map(|s| s.parse().unwrap()).collect();
        let e: Vec<IpRange> = exclude.iter().map(|s| s.parse().unwrap()).collect();
        Pool::new(subnet.parse().unwrap(), &r, &e).unwrap()
    }

    #[test]
    fn slice_edges_are_usable_but_lan_edges_are_not() {
        let p = pool(
            "192.168.2.0/24",
            &["192.168.2.208/28", "192.168.2.240-192.168.2.255"],
            &[],
        );
        assert!(p.is_usable("192.168.2.208".parse().unwrap()));
        assert!(p.is_usable("192.168.2.223".parse().unwrap()));
        assert!(!p.is_usable("192.168.2.255".parse().unwrap()));
        let p = pool("192.168.2.0/24", &["192.168.2.0/24"], &[]);
        assert!(!p.is_usable("192.168.2.0".parse().unwrap()));
        assert_eq!(p.usable_count(), 254);
    }

    #[test]
    fn exclusions_win() {
        let p = pool(
            "192.168.2.0/24",
            &["192.168.2.0/24"],
            &["192.168.2.1", "192.168.2.100-192.168.2.199"],
        );
        assert!(!p.is_usable("192.168.2.1".parse().unwrap()));
        assert!(!p.is_usable("192.168.2.150".parse().unwrap()));
        assert!(p.is_usable("192.168.2.200".parse().unwrap()));
        assert_eq!(p.usable_count(), 254 - 1 - 100);
    }

    #[test]
    fn candidates_wrap_after_cursor() {
        let p = pool("10.0.0.0/24", &["10.0.0.10-10.0.0.13"], &["10.0.0.12"]);
        let got: Vec<String> = p
            .candidates_after(Some("10.0.0.11".parse().unwrap()))
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.13", "10.0.0.10", "10.0.0.11"]);
    }

    #[test]
    fn range_outside_subnet_is_rejected() {
        let r: Vec<IpRange> = vec!["192.168.3.10-192.168.3.20".parse().unwrap()];
        let err = Pool::new("192.168.2.0/24".parse().unwrap(), &r, &[]).unwrap_err();
        assert!(matches!(err, Error::RangeOutsideSubnet { .. }), "{err}");
    }

    /// Found with the `cni_config` fuzz target (a libFuzzer timeout): the
    /// config validated, then walking its pool never ended, because
    /// exclusions covering most of a /64 were filtered one address at a time.
    #[test]
    fn huge_ipv6_exclusions_are_stepped_over() {
        let p = pool("fd00:2::/64", &["fd00:2::/64"], &["fd00:2::/64"]);
        assert_eq!(p.usable_count(), 0);
        assert_eq!(p.candidates_after(None).next(), None);
        let p = pool(
            "fd00:2::/64",
            &["fd00:2::/64"],
            &["fd00:2::/65", "fd00:2::8000:0:0:1"],
        );
        let got: Vec<String> = p
            .candidates_after(None)
            .take(2)
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(got, ["fd00:2:0:0:8000::", "fd00:2::8000:0:0:2"]);
        let cur = "fd00:2::ffff:ffff:ffff:ffff".parse().unwrap();
        let first = p.candidates_after(Some(cur)).next().unwrap();
        assert_eq!(first.to_string(), "fd00:2:0:0:8000::");
        assert_eq!(p.usable_count(), MAX_SCAN);
    }

    #[test]
    fn free_spans_skip_exclusions() {
        let ex = [(2, 3), (6, 6), (9, 20)];
        let got: Vec<(u128, u128)> = free_spans(&ex, 0, 10).collect();
        assert_eq!(got, [(0, 1), (4, 5), (7, 8)]);
        assert_eq!(free_spans(&ex, 3, 3).count(), 0);
        assert_eq!(free_spans(&ex, 5, 4).count(), 0);
        assert_eq!(free_spans(&[(0, u128::MAX)], 0, u128::MAX).count(), 0);
        let all: Vec<(u128, u128)> = free_spans(&[(0, 9)], 0, u128::MAX).collect();
        assert_eq!(all, [(10, u128::MAX)]);
    }

    #[test]
    fn huge_ipv6_range_is_lazy() {
        let p = pool("fd00::/64", &["fd00::/64"], &[]);
        let first = p.candidates_after(None).next().unwrap();
        assert_eq!(first.to_string(), "fd00::1");
    }
}
