//! Whether this node may announce a VIP (DESIGN.md §4): an advertisement
//! covers the address's pool and Service and selects this node, and under
//! `externalTrafficPolicy: Local` the node has a ready endpoint per the
//! EndpointSlices. The owner among eligible nodes is still the engine's
//! hash; this only says who is in the running, so no API write ever sits
//! on the failover path.
//!
//! The output, [`DesiredVip`], is what the Kubernetes VIP source hands the
//! engine (flatlan-speaker's `source::DesiredVip`): every address the
//! cluster wants announced, and whether this node is eligible for it and
//! on which interfaces. The source maps `here` onto the engine's
//! `eligible` with [`Eligibility::on`] for the interface `iface::choose`
//! picks by subnet, and pins the interface when an advertisement names
//! exactly one ([`Interfaces::pinned`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::allocator::Allocator;
use crate::model::{Advertisement, Pool, ServiceKey, ServiceRequest};
use crate::selector::{any_match, Labels};

/// Nodes with this label never announce (as in kube's service controller
/// and MetalLB).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The node asking.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub name: &'a str,
    pub labels: &'a Labels,
}

impl<'a> Node<'a> {
    /// The node as the API returns it.
    pub fn of(node: &'a k8s_openapi::api::core::v1::Node) -> Self {
        static NONE: Labels = Labels::new();
        Node {
            name: node.metadata.name.as_deref().unwrap_or_default(),
            labels: node.metadata.labels.as_ref().unwrap_or(&NONE),
        }
    }
}

/// The interfaces an eligible node may announce from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interfaces {
    /// Whichever interface's subnet holds the address (the engine's
    /// `iface::choose`).
    Any,
    /// Only these names; a trailing `*` matches a prefix.
    Only(Vec<String>),
}

impl Interfaces {
    /// The one interface to announce from, when the advertisements name
    /// exactly one (no prefix): the engine's pinned `interface`.
    pub fn pinned(&self) -> Option<&str> {
        match self {
            Interfaces::Only(names) if names.len() == 1 && !names[0].ends_with('*') => {
                Some(names[0].as_str())
            }
            _ => None,
        }
    }

    /// Whether the node may announce from `iface`.
    pub fn allows(&self, iface: &str) -> bool {
        match self {
            Interfaces::Any => true,
            Interfaces::Only(names) => names.iter().any(|n| match n.strip_suffix('*') {
                Some(prefix) => iface.starts_with(prefix),
                None => n == iface,
            }),
        }
    }
}

/// This node's standing for one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eligibility {
    /// In the running, from these interfaces.
    Eligible(Interfaces),
    /// No advertisement covers the pool (or the Service): the address is
    /// allocated but nobody announces it, as in MetalLB.
    NotAdvertised,
    /// The node carries [`EXCLUDE_LABEL`].
    Excluded,
    /// No covering advertisement's nodeSelectors select this node.
    NodeNotSelected,
    /// `externalTrafficPolicy: Local` and no ready endpoint on this node.
    NoReadyEndpoint,
}

impl Eligibility {
    /// Whether the node may announce the VIP from `iface` (the interface
    /// the engine chose by subnet).
    pub fn on(&self, iface: &str) -> bool {
        matches!(self, Eligibility::Eligible(i) if i.allows(iface))
    }
}

/// One address the cluster wants announced, with this node's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVip {
    pub address: IpAddr,
    pub pool: String,
    /// Every Service on the address (several when shared).
    pub services: Vec<ServiceKey>,
    pub here: Eligibility,
}

/// This node's eligibility for an address of `pool` held by `services`.
pub fn eligibility(
    node: Node,
    pool: &Pool,
    services: &[&ServiceRequest],
    ads: &[Advertisement],
    slices: &[EndpointSlice],
) -> Eligibility {
    let covering: Vec<&Advertisement> = ads
        .iter()
        .filter(|a| {
            a.covers(pool)
                && services
                    .iter()
                    .any(|s| any_match(&a.service_selectors, &s.labels))
        })
        .collect();
    if covering.is_empty() {
        return Eligibility::NotAdvertised;
    }
    if node.labels.contains_key(EXCLUDE_LABEL) {
        return Eligibility::Excluded;
    }
    let mine: Vec<&&Advertisement> = covering
        .iter()
        .filter(|a| any_match(&a.node_selectors, node.labels))
        .collect();
    if mine.is_empty() {
        return Eligibility::NodeNotSelected;
    }
    let local: Vec<&&ServiceRequest> = services.iter().filter(|s| s.local).collect();
    if !local.is_empty()
        && !local
            .iter()
            .any(|s| has_ready_endpoint(node.name, &s.key, slices))
    {
        return Eligibility::NoReadyEndpoint;
    }
    if mine.iter().any(|a| a.interfaces.is_empty()) {
        return Eligibility::Eligible(Interfaces::Any);
    }
    let mut names: Vec<String> = mine
        .iter()
        .flat_map(|a| a.interfaces.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    Eligibility::Eligible(Interfaces::Only(names))
}

/// Whether an EndpointSlice of the Service lists a ready endpoint on the
/// node. An unset `ready` counts as ready (the API's own rule).
pub fn has_ready_endpoint(node: &str, svc: &ServiceKey, slices: &[EndpointSlice]) -> bool {
    slices
        .iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(svc.namespace.as_str())
                && s.labels().get(SERVICE_NAME_LABEL) == Some(&svc.name)
        })
        .flat_map(|s| &s.endpoints)
        .any(|e| {
            e.node_name.as_deref() == Some(node)
                && e.conditions.as_ref().and_then(|c| c.ready) != Some(false)
        })
}

/// Every allocated address with this node's standing, in address order.
/// `requests` are the Services' current requests (labels, ETP).
pub fn desired_vips(
    node: Node,
    alloc: &Allocator,
    requests: &BTreeMap<ServiceKey, ServiceRequest>,
    ads: &[Advertisement],
    slices: &[EndpointSlice],
) -> Vec<DesiredVip> {
    let mut by_ip: BTreeMap<IpAddr, Vec<&ServiceKey>> = BTreeMap::new();
    for (key, a) in alloc.assignments() {
        for ip in &a.ips {
            by_ip.entry(*ip).or_default().push(key);
        }
    }
    by_ip
        .into_iter()
        .filter_map(|(address, keys)| {
            let pool = alloc.pool_of(address)?;
            let reqs: Vec<&ServiceRequest> = keys.iter().filter_map(|k| requests.get(*k)).collect();
            Some(DesiredVip {
                address,
                pool: pool.name.clone(),
                services: keys.into_iter().cloned().collect(),
                here: eligibility(node, pool, &reqs, ads, slices),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
