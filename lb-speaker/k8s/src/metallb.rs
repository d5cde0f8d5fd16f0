//! MetalLB's layer-2 API as users already write it: `metallb.io/v1beta1`
//! IPAddressPool and L2Advertisement (the fields MetalLB documents, learnt
//! from its `api/v1beta1` types, not copied), and the legacy
//! `metallb-system/config` ConfigMap that MetalLB dropped in 0.13. They map
//! onto the model in [`crate::convert`]; docs/migrate-from-metallb.md has
//! the table.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::crd::ServiceAllocationSpec;

/// MetalLB's API group and version, as `apiVersion` spells it.
pub const API_VERSION: &str = "metallb.io/v1beta1";

// The spec types repeat flatlan's (crd.rs) field for field: kube's derive
// binds a spec type to one group and version, so each API needs its own;
// convert.rs folds both back into one path.

/// MetalLB's IPAddressPool, unchanged (namespaced, as MetalLB's is).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    doc = "MetalLB's IPAddressPool, served by flatlan (layer 2).",
    namespaced,
    status = "IPAddressPoolStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
    #[serde(
        default,
        rename = "avoidBuggyIPs",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub avoid_buggy_ips: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocationSpec>,
}

/// MetalLB's pool status: address counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IPAddressPoolStatus {
    #[serde(rename = "assignedIPv4", default)]
    pub assigned_ipv4: i64,
    #[serde(rename = "assignedIPv6", default)]
    pub assigned_ipv6: i64,
    #[serde(rename = "availableIPv4", default)]
    pub available_ipv4: i64,
    #[serde(rename = "availableIPv6", default)]
    pub available_ipv6: i64,
}

/// MetalLB's L2Advertisement, unchanged.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    doc = "MetalLB's L2Advertisement, served by flatlan.",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    /// Accepted so that the YAML applies; flatlan picks the announcing
    /// node by its hash among eligible nodes and says so in a warning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

/// A weighted node preference (MetalLB's `preferredNodeSelectors` item).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PreferredNodeSelector {
    pub weight: i32,
    pub preference: LabelSelector,
}

/// The legacy ConfigMap's `config` key.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "kebab-case")]
pub struct LegacyConfig {
    #[serde(default)]
    pub address_pools: Vec<LegacyPool>,
    /// `peers`, `bgp-communities`, `bfd-profiles` and anything else: BGP
    /// or unknown, warned about by key.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// One entry of `address-pools:`.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "kebab-case")]
pub struct LegacyPool {
    pub name: String,
    pub protocol: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub auto_assign: Option<bool>,
    #[serde(default)]
    pub avoid_buggy_ips: bool,
    /// BGP only; warned about on a layer2 pool.
    #[serde(default)]
    pub bgp_advertisements: Vec<serde_yaml::Value>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// MetalLB's kinds that flatlan does not implement, with why; the watcher
/// turns an object of one of them into a warning Event.
pub fn unsupported_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "BGPPeer" | "BGPAdvertisement" | "BFDProfile" | "Community" => {
            "flatlan announces addresses on the LAN with ARP and NDP (layer 2) only; BGP is not implemented"
        }
        "ServiceL2Status" | "ServiceBGPStatus" => {
            "this is MetalLB's own status output; `flatlan-speaker status` reports the announcing node"
        }
        _ => return None,
    })
}

/// The Service annotation prefixes MetalLB reads, newest first.
pub const ANNOTATION_PREFIXES: [&str; 2] = ["metallb.io", "metallb.universe.tf"];
