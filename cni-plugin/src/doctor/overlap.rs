//! Which address sets on the LAN must not share addresses, and the fix
//! when two do. Pure: the inputs are what the other checks read from the
//! node and its configs.
//!
//! The severities follow what flatlan does about each pair: the gateway
//! and the node's own addresses are always excluded from a slice at ADD
//! (ipam::pools), so those overlaps only waste an address (WARN); a pod,
//! a LoadBalancer IP and a router's DHCP lease have no such arbiter, and
//! two of them on one address means two MACs answering ARP for it (FAIL).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flatlan_ipam::IpRange;
use ipnet::IpNet;

use super::finding::{Finding, Severity};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// This node's pod range (the node slice or the conflist's ranges).
    Slice,
    NodeIp,
    Gateway,
    LbPool,
    DhcpPool,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Slice => "pod range",
            Kind::NodeIp => "node address",
            Kind::Gateway => "gateway",
            Kind::LbPool => "LB pool",
            Kind::DhcpPool => "DHCP pool",
        }
    }
}

/// One set of addresses and where it came from (a file, a flag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub kind: Kind,
    pub range: IpRange,
    pub source: String,
}

impl Span {
    pub fn new(kind: Kind, range: IpRange, source: impl Into<String>) -> Span {
        Span {
            kind,
            range,
            source: source.into(),
        }
    }

    fn label(&self) -> String {
        format!("{} {} ({})", self.kind.noun(), self.range, self.source)
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

fn bounds(r: &IpRange) -> (u128, u128) {
    (to_u128(r.start()), to_u128(r.end()))
}

/// The addresses two ranges share, if any.
pub fn intersection(a: &IpRange, b: &IpRange) -> Option<IpRange> {
    if a.is_ipv4() != b.is_ipv4() {
        return None;
    }
    let ((a0, a1), (b0, b1)) = (bounds(a), bounds(b));
    let (lo, hi) = (a0.max(b0), a1.min(b1));
    (lo <= hi).then(|| {
        IpRange::new(from_u128(a.is_ipv4(), lo), from_u128(a.is_ipv4(), hi))
            .unwrap_or_else(|_| IpRange::single(from_u128(a.is_ipv4(), lo)))
    })
}

/// `a` without the addresses of `b`: zero, one or two ranges.
pub fn subtract(a: &IpRange, b: &IpRange) -> Vec<IpRange> {
    let Some(cut) = intersection(a, b) else {
        return vec![*a];
    };
    let v4 = a.is_ipv4();
    let ((a0, a1), (c0, c1)) = (bounds(a), bounds(&cut));
    let mut out = Vec::new();
    if c0 > a0 {
        out.extend(IpRange::new(from_u128(v4, a0), from_u128(v4, c0 - 1)).ok());
    }
    if c1 < a1 {
        out.extend(IpRange::new(from_u128(v4, c1 + 1), from_u128(v4, a1)).ok());
    }
    out
}

/// How bad it is when `a` and `b` share an address; `None`: not checked
/// (a node that got its address from the router's DHCP pool is normal).
fn rule(a: Kind, b: Kind) -> Option<Severity> {
    use Kind::*;
    let pair = |x, y| (a == x && b == y) || (a == y && b == x);
    if pair(Slice, LbPool)
        || pair(Slice, DhcpPool)
        || pair(LbPool, DhcpPool)
        || pair(Gateway, LbPool)
        || pair(NodeIp, LbPool)
        || pair(NodeIp, Gateway)
    {
        Some(Severity::Fail)
    } else if pair(Slice, NodeIp)
        || pair(Slice, Gateway)
        || pair(Gateway, DhcpPool)
        || pair(LbPool, LbPool)
    {
        Some(Severity::Warn)
    } else {
        None
    }
}

fn why(a: Kind, b: Kind) -> &'static str {
    use Kind::*;
    match (a, b) {
        (Slice, NodeIp) | (NodeIp, Slice) | (Slice, Gateway) | (Gateway, Slice) => {
            "flatlan never hands out the gateway or a node address, so this only costs the slice an address; but a slice is meant to hold pods only, and the plan that made it may be off by more"
        }
        (LbPool, LbPool) => "two pools (or a pool and a static VIP) hand out the same address: two Services could get it",
        (Gateway, DhcpPool) | (DhcpPool, Gateway) => "the router could lease its own address to a device",
        _ => "two hosts would answer ARP for one address: traffic goes to whichever answered last, and connections break at random",
    }
}

fn fix(a: &Span, b: &Span) -> String {
    // Move the thing that is easiest to change: a pool or the DHCP pool,
    // never the gateway or a node address.
    let movable = |k: Kind| match k {
        Kind::LbPool => 3,
        Kind::DhcpPool => 2,
        Kind::Slice => 1,
        Kind::NodeIp | Kind::Gateway => 0,
    };
    let (m, other) = if movable(a.kind) >= movable(b.kind) {
        (a, b)
    } else {
        (b, a)
    };
    let rest: Vec<String> = subtract(&m.range, &other.range)
        .iter()
        .map(ToString::to_string)
        .collect();
    let to = if rest.is_empty() {
        "a range outside it".to_string()
    } else {
        rest.join(" and ")
    };
    match m.kind {
        Kind::LbPool => format!(
            "change {} from {} to {to} (the IPAddressPool's spec.addresses, or the speaker config's vips)",
            m.source, m.range
        ),
        Kind::DhcpPool => format!(
            "shrink the router's DHCP pool from {} to {to} (its web UI or dnsmasq's dhcp-range)",
            m.range
        ),
        Kind::Slice => format!(
            "move the pod range off {}: narrow k3s --cluster-cidr (or the conflist's ipam.ranges) so that this node's slice is {to}, or add ipam.exclude: [\"{}\"] to the conflist",
            other.range, other.range
        ),
        Kind::NodeIp | Kind::Gateway => format!(
            "give the node an address outside {} (the router is the LAN's gateway, not a node)",
            other.range
        ),
    }
}

/// One finding per overlapping pair; an OK finding when there is none.
pub fn overlaps(spans: &[Span]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let Some(sev) = rule(a.kind, b.kind) else {
                continue;
            };
            if a.kind == b.kind && a.source == b.source {
                continue;
            }
            let Some(shared) = intersection(&a.range, &b.range) else {
                continue;
            };
            let what = format!("{} overlaps {}: {shared}", a.label(), b.label());
            let why = why(a.kind, b.kind);
            let fix = fix(a, b);
            out.push(match sev {
                Severity::Fail => Finding::fail("overlap", what, why, fix),
                _ => Finding::warn("overlap", what, why, fix),
            });
        }
    }
    if out.is_empty() {
        let list: Vec<String> = spans.iter().map(Span::label).collect();
        out.push(Finding::ok(
            "overlap",
            format!("no overlaps among {}", list.join(", ")),
        ));
    }
    out
}

/// Pods, the gateway and the pools belong on the LAN subnet of their
/// family: a gateway off-link cannot be reached, a pool off-subnet is
/// announced on no interface.
pub fn outside_subnet(subnets: &[IpNet], spans: &[Span]) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in spans {
        if s.kind == Kind::NodeIp {
            continue;
        }
        let inside = subnets.iter().any(|n| {
            let r = IpRange::from_net(n.trunc());
            intersection(&r, &s.range) == Some(s.range)
        });
        let same_family = subnets
            .iter()
            .any(|n| n.addr().is_ipv4() == s.range.is_ipv4());
        if inside || !same_family {
            continue;
        }
        let nets: Vec<String> = subnets.iter().map(ToString::to_string).collect();
        let nets = nets.join(", ");
        let (sev, why, fix) = match s.kind {
            Kind::Gateway => (
                Severity::Fail,
                "pods send everything off-LAN to the gateway; one outside the LAN subnet is not reachable on the bridge".to_string(),
                format!("set ipam.gateway in the conflist to the router's address inside {nets}"),
            ),
            Kind::Slice => (
                Severity::Fail,
                "pods would get addresses the LAN does not route to this bridge".to_string(),
                format!("make k3s --cluster-cidr a part of {nets}"),
            ),
            _ => (
                Severity::Warn,
                "the speaker announces an address on the interface whose subnet holds it; outside the LAN subnet no neighbour looks for it there".to_string(),
                format!("use addresses inside {nets} for {}", s.source),
            ),
        };
        let what = format!("{} is not inside the LAN subnet {nets}", s.label());
        out.push(Finding {
            check: "subnet",
            severity: sev,
            what,
            why,
            fix,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> IpRange {
        s.parse().expect("range")
    }

    #[test]
    fn intersection_and_subtraction() {
        assert_eq!(
            intersection(&r("10.0.0.0/24"), &r("10.0.0.250-10.0.1.5")),
            Some(r("10.0.0.250-10.0.0.255"))
        );
        assert_eq!(intersection(&r("10.0.0.1"), &r("10.0.0.2")), None);
        assert_eq!(intersection(&r("10.0.0.1"), &r("fd00::1")), None);
        assert_eq!(
            subtract(&r("10.0.0.240-10.0.0.250"), &r("10.0.0.245")),
            vec![r("10.0.0.240-10.0.0.244"), r("10.0.0.246-10.0.0.250")]
        );
        assert_eq!(
            subtract(&r("10.0.0.240-10.0.0.250"), &r("10.0.0.0/24")),
            vec![]
        );
        assert_eq!(
            subtract(&r("10.0.0.240-10.0.0.250"), &r("10.0.0.200-10.0.0.241")),
            vec![r("10.0.0.242-10.0.0.250")]
        );
        assert_eq!(
            subtract(&r("fd00::10-fd00::1f"), &r("fd00::1f")),
            vec![r("fd00::10-fd00::1e")]
        );
        assert_eq!(
            subtract(&r("10.0.0.1"), &r("10.0.0.2")),
            vec![r("10.0.0.1")]
        );
    }

    #[test]
    fn each_pair_gets_its_severity_and_a_fix() {
        let spans = [
            Span::new(Kind::Slice, r("192.168.2.208/28"), "node-range.json"),
            Span::new(Kind::NodeIp, r("192.168.2.10"), "br0"),
            Span::new(Kind::Gateway, r("192.168.2.1"), "conflist"),
            Span::new(Kind::LbPool, r("192.168.2.224-192.168.2.230"), "pool lan"),
            Span::new(
                Kind::DhcpPool,
                r("192.168.2.100-192.168.2.199"),
                "--dhcp-pool",
            ),
        ];
        let f = overlaps(&spans);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Ok);

        // The pool reaches into the slice: FAIL, and the fix moves the pool.
        let mut bad = spans.to_vec();
        bad[3].range = r("192.168.2.215-192.168.2.230");
        let f = overlaps(&bad);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Fail);
        assert!(
            f[0].what.contains("192.168.2.215-192.168.2.223"),
            "{}",
            f[0].what
        );
        assert!(
            f[0].fix.contains("to 192.168.2.224-192.168.2.230"),
            "{}",
            f[0].fix
        );

        // The gateway in a pool: FAIL, split around it.
        let mut bad = spans.to_vec();
        bad[3].range = r("192.168.2.0-192.168.2.5");
        let f = overlaps(&bad);
        assert_eq!(f[0].severity, Severity::Fail);
        assert!(
            f[0].fix.contains("192.168.2.0 and 192.168.2.2-192.168.2.5"),
            "{}",
            f[0].fix
        );

        // A pool inside the DHCP pool: FAIL, the pool moves (not the router's).
        let mut bad = spans.to_vec();
        bad[3].range = r("192.168.2.150-192.168.2.160");
        let f = overlaps(&bad);
        assert_eq!(f[0].severity, Severity::Fail);
        assert!(f[0].fix.contains("change pool lan"), "{}", f[0].fix);

        // The slice holding the node's address: only a WARN (excluded at ADD).
        let mut bad = spans.to_vec();
        bad[1].range = r("192.168.2.210");
        let f = overlaps(&bad);
        assert_eq!(f[0].severity, Severity::Warn);

        // A node address inside the DHCP pool is how DHCP works: no finding.
        let mut fine = spans.to_vec();
        fine[1].range = r("192.168.2.150");
        assert_eq!(overlaps(&fine)[0].severity, Severity::Ok);
    }

    #[test]
    fn off_subnet_gateway_fails_and_other_families_are_left_alone() {
        let nets: Vec<IpNet> = vec!["192.168.2.0/24".parse().expect("net")];
        let spans = [
            Span::new(Kind::Gateway, r("192.168.3.1"), "conflist"),
            Span::new(Kind::LbPool, r("fd00::10-fd00::1f"), "pool v6"),
            Span::new(Kind::LbPool, r("192.168.2.250-192.168.3.4"), "pool wide"),
        ];
        let f = outside_subnet(&nets, &spans);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].severity, Severity::Fail);
        assert!(f[0].fix.contains("ipam.gateway"));
        assert_eq!(f[1].severity, Severity::Warn);
    }
}
