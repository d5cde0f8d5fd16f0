//! flatlan's own API, `flatlan.dev/v1alpha1`: IPAddressPool and
//! L2Advertisement. Their specs keep MetalLB's field names and shapes, so
//! one mapping ([`crate::convert`]) serves both APIs and a MetalLB user
//! reads them without a dictionary; what flatlan adds is a cluster scope
//! (addresses are a cluster-wide resource), conditions on the pool, and
//! interface prefixes (`enp*`) in an advertisement.
//!
//! The YAML in deploy/crds/ is generated from these types by
//! `flatlan-crdgen`; a test fails when it drifts ([`crate::crdgen`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pool of LoadBalancer addresses.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flatlan.dev",
    version = "v1alpha1",
    kind = "IPAddressPool",
    doc = "A pool of addresses flatlan hands to LoadBalancer Services (cluster-scoped).",
    status = "IPAddressPoolStatus",
    shortname = "flpool",
    category = "flatlan",
    printcolumn = r#"{"name":"Auto","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#,
    printcolumn = r#"{"name":"Used IPv4","type":"integer","jsonPath":".status.assignedIPv4"}"#,
    printcolumn = r#"{"name":"Free IPv4","type":"integer","jsonPath":".status.availableIPv4"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// IPv4 and IPv6 CIDRs (192.168.1.240/28), ranges
    /// (192.168.1.240-192.168.1.250, fd00::10-fd00::1f) or single addresses.
    pub addresses: Vec<String>,
    /// Whether Services get addresses from this pool without asking for it
    /// by name (the address-pool annotation) or address. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
    /// Never hand out IPv4 addresses ending in .0 or .255.
    #[serde(
        default,
        rename = "avoidBuggyIPs",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub avoid_buggy_ips: bool,
    /// Which Services may use the pool, and its priority among pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocationSpec>,
}

/// MetalLB's `serviceAllocation`, in both APIs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocationSpec {
    /// Lower values are tried first; pools without a priority are tried
    /// after every pool that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Namespaces whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces, by label, whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services, by label, that may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the allocator reports on each pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IPAddressPoolStatus {
    /// `Valid`: True, or False with the reason (a range that does not
    /// parse, an overlap with an older pool, a duplicate name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(rename = "assignedIPv4", default)]
    pub assigned_ipv4: i64,
    #[serde(rename = "assignedIPv6", default)]
    pub assigned_ipv6: i64,
    /// Free addresses, saturating at i64::MAX for large IPv6 ranges.
    #[serde(rename = "availableIPv4", default)]
    pub available_ipv4: i64,
    #[serde(rename = "availableIPv6", default)]
    pub available_ipv6: i64,
}

/// Announces the addresses of some pools from some nodes and interfaces.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flatlan.dev",
    version = "v1alpha1",
    kind = "L2Advertisement",
    doc = "Which nodes and interfaces announce the addresses of which pools (cluster-scoped).",
    shortname = "fladv",
    category = "flatlan"
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools by name. With ipAddressPoolSelectors also empty: every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that may announce; empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce from (a trailing `*` matches a prefix);
    /// empty: the interface whose subnet holds the address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Services, by label, announced by this advertisement; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}
