//! The one internal model that flatlan's CRDs, MetalLB's CRDs, MetalLB's
//! legacy ConfigMap and MetalLB's Service annotations all map onto
//! (docs/migrate-from-metallb.md). The allocator and eligibility read only
//! these types.

use std::fmt;
use std::net::IpAddr;

use flatlan_ipam::IpRange;

use crate::error::{Error, Result};
use crate::selector::{any_match, Labels, Selector};

/// Names a Kubernetes object, for the Event or condition a [`Warning`]
/// becomes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {} {ns}/{}", self.api_version, self.kind, self.name),
            None => write!(f, "{} {} {}", self.api_version, self.kind, self.name),
        }
    }
}

/// Something about one object that its owner must hear of: a warning Event
/// (unsupported, ignored) or an invalid condition, never silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub object: ObjectRef,
    pub problem: Error,
}

impl Warning {
    /// The Event (or condition) reason.
    pub fn reason(&self) -> &'static str {
        self.problem.reason()
    }
}

/// Where a pool or advertisement was written (for the tie-break between
/// pools created in the same second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// `flatlan.dev/v1alpha1`.
    Flatlan,
    /// `metallb.io/v1beta1`.
    MetalLb,
    /// The legacy `metallb-system/config` ConfigMap.
    MetalLbConfigMap,
}

/// An address pool, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub object: ObjectRef,
    pub source: Source,
    /// Older pools win overlaps; seconds since the epoch, 0 when unknown.
    pub created: i64,
    pub labels: Labels,
    pub ranges: Vec<IpRange>,
    pub auto_assign: bool,
    /// Never hand out IPv4 addresses ending in .0 or .255 (old clients
    /// take them for network or broadcast addresses).
    pub avoid_buggy_ips: bool,
    pub alloc: ServiceAllocation,
}

/// Which Services a pool serves, and in which order pools are tried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAllocation {
    /// Lower is tried first; pools without one come after all that have one.
    pub priority: Option<i32>,
    pub namespaces: Vec<String>,
    pub namespace_selectors: Vec<Selector>,
    pub service_selectors: Vec<Selector>,
}

impl Pool {
    /// Parses `addresses` entries (CIDR, `first-last` or one address).
    pub fn parse_ranges(addresses: &[String]) -> Result<Vec<IpRange>> {
        if addresses.is_empty() {
            return Err(Error::NoAddresses);
        }
        let ranges: Vec<IpRange> = addresses
            .iter()
            .map(|a| a.parse().map_err(|e| Error::BadAddress(format!("{e}"))))
            .collect::<Result<_>>()?;
        for (i, a) in ranges.iter().enumerate() {
            if let Some(b) = ranges[i + 1..].iter().find(|b| overlap(a, b)) {
                return Err(Error::BadAddress(format!("{a} and {b} overlap")));
            }
        }
        Ok(ranges)
    }

    /// Whether an address belongs to this pool (avoided .0/.255 excluded).
    pub fn contains(&self, ip: IpAddr) -> bool {
        !self.avoids(ip) && self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether this pool never hands out `ip`.
    pub fn avoids(&self, ip: IpAddr) -> bool {
        self.avoid_buggy_ips && matches!(ip, IpAddr::V4(v4) if matches!(v4.octets()[3], 0 | 255))
    }

    /// Whether the pool has addresses of this family.
    pub fn has_family(&self, v4: bool) -> bool {
        self.ranges.iter().any(|r| r.is_ipv4() == v4)
    }

    /// Whether this pool's serviceAllocation admits the Service.
    pub fn serves(&self, svc: &ServiceRequest) -> bool {
        let a = &self.alloc;
        let ns_ok = (a.namespaces.is_empty() && a.namespace_selectors.is_empty())
            || a.namespaces.contains(&svc.key.namespace)
            || a.namespace_selectors
                .iter()
                .any(|s| s.matches(&svc.namespace_labels));
        ns_ok && any_match(&a.service_selectors, &svc.labels)
    }
}

/// Where and for which pools VIPs are announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub object: ObjectRef,
    /// Pools by name; with `pool_selectors` also empty, every pool.
    pub pools: Vec<String>,
    pub pool_selectors: Vec<Selector>,
    pub node_selectors: Vec<Selector>,
    pub service_selectors: Vec<Selector>,
    /// Interface names; a trailing `*` matches a prefix. Empty: any.
    pub interfaces: Vec<String>,
}

impl Advertisement {
    /// MetalLB's rule: named or selected pools, or all when it names none.
    pub fn covers(&self, pool: &Pool) -> bool {
        if self.pools.is_empty() && self.pool_selectors.is_empty() {
            return true;
        }
        self.pools.contains(&pool.name)
            || self.pool_selectors.iter().any(|s| s.matches(&pool.labels))
    }
}

/// A Service, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FamilyPolicy {
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// A port a Service uses on its address; two Services sharing an address
/// must not use the same one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub protocol: String,
    pub port: i32,
}

/// What one LoadBalancer Service asks of the allocator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRequest {
    pub key: ServiceKey,
    /// Older Services keep their addresses when two statuses collide on a
    /// rebuild; seconds since the epoch, 0 when unknown.
    pub created: i64,
    pub labels: Labels,
    pub namespace_labels: Labels,
    /// `spec.loadBalancerIP` or the `loadBalancerIPs` annotation.
    pub requested: Vec<IpAddr>,
    /// The `address-pool` annotation.
    pub pool: Option<String>,
    /// The `allow-shared-ip` annotation.
    pub sharing_key: Option<String>,
    pub policy: FamilyPolicy,
    /// `spec.ipFamilies[0]` is IPv4 (the cluster's default when unset).
    pub primary_v4: bool,
    pub ports: Vec<Port>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// The pod selector: Services with `Local` share an address only with
    /// the same one, so that one node has endpoints for all of them.
    pub selector: Labels,
}

impl Default for ServiceKey {
    fn default() -> Self {
        ServiceKey {
            namespace: "default".into(),
            name: String::new(),
        }
    }
}

/// An address as a number, to compare and step through ranges.
pub(crate) fn ip_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => v6.into(),
    }
}

/// Whether two ranges share an address.
pub(crate) fn overlap(a: &IpRange, b: &IpRange) -> bool {
    a.is_ipv4() == b.is_ipv4()
        && ip_num(a.start()) <= ip_num(b.end())
        && ip_num(b.start()) <= ip_num(a.end())
}
