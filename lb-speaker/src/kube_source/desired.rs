//! What the cluster wants announced, from what the watchers read: pure.
//!
//! The VIPs are the addresses in the `status.loadBalancer.ingress` of
//! flatlan's Services (the allocator writes them); each is announced only
//! if it lies in a valid pool, and this node is eligible per
//! [`flatlan_k8s::eligibility`]. Pools and advertisements from flatlan's
//! CRDs, MetalLB's CRDs and MetalLB's legacy ConfigMap all count.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use flatlan_k8s::allocator::Allocator;
use flatlan_k8s::convert::Collected;
use flatlan_k8s::eligibility::{eligibility, Eligibility, Interfaces, Node};
use flatlan_k8s::model::{ServiceKey, ServiceRequest};
use flatlan_k8s::selector::Labels;
use flatlan_k8s::{crd, metallb, service};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::config::VipConfig;
use crate::link_events::Ifaces;
use crate::source::DesiredVip;

/// Everything the watchers hold, at one moment.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    pub node: String,
    pub node_labels: Labels,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub flatlan_pools: Vec<Arc<crd::IPAddressPool>>,
    pub flatlan_ads: Vec<Arc<crd::L2Advertisement>>,
    pub metallb_pools: Vec<Arc<metallb::IPAddressPool>>,
    pub metallb_ads: Vec<Arc<metallb::L2Advertisement>>,
    pub config_maps: Vec<Arc<ConfigMap>>,
    /// Serve LoadBalancer Services without a class.
    pub default_class: bool,
}

/// A Service on an address, as an Event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub key: ServiceKey,
    pub uid: Option<String>,
}

/// What is known about one address: its pool, its Services and this
/// node's standing (for Events and `status --cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipInfo {
    pub pool: String,
    pub services: Vec<ServiceRef>,
    pub here: Eligibility,
}

/// Every announced address, by address.
pub type Index = BTreeMap<IpAddr, VipInfo>;

/// The Service's request; one that does not parse (a bad annotation) still
/// holds the addresses its status lists, with its labels and ETP.
fn request_of(svc: &Service) -> ServiceRequest {
    service::request(svc, &Labels::new()).unwrap_or_else(|_| ServiceRequest {
        key: ServiceKey {
            namespace: svc.namespace().unwrap_or_else(|| "default".into()),
            name: svc.name_any(),
        },
        labels: svc.labels().clone(),
        local: svc
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local"),
        ..Default::default()
    })
}

/// The interface to pin and whether this node is eligible. Several
/// allowed names (or a prefix) are narrowed to the one whose subnet holds
/// the address, as the engine would pick it.
fn place(address: IpAddr, here: &Eligibility, ifaces: &Ifaces) -> (Option<String>, bool) {
    let Eligibility::Eligible(allowed) = here else {
        return (None, false);
    };
    if let Interfaces::Any = allowed {
        return (None, true);
    }
    if let Some(p) = allowed.pinned() {
        return (Some(p.to_owned()), true);
    }
    let on_subnet = ifaces.values().find(|i| {
        allowed.allows(&i.name)
            && i.nets
                .iter()
                .any(|n| n.prefix_len() < n.max_prefix_len() && n.contains(&address))
    });
    match on_subnet {
        Some(i) => (Some(i.name.clone()), true),
        None => (None, false),
    }
}

/// The desired set (address order) and the index behind it.
pub fn compute(input: &Inputs, ifaces: &Ifaces) -> (Vec<DesiredVip>, Index) {
    let mut col = Collected::default();
    for p in &input.flatlan_pools {
        col.flatlan_pool(p);
    }
    for p in &input.metallb_pools {
        col.metallb_pool(p);
    }
    for a in &input.flatlan_ads {
        col.flatlan_advertisement(a);
    }
    for a in &input.metallb_ads {
        col.metallb_advertisement(a);
    }
    for cm in &input.config_maps {
        col.metallb_config_map(cm);
    }
    // Warnings are the allocator's to report (it owns the pools' Events).
    let (alloc, _) = Allocator::new(col.pools);
    let mut by_ip: BTreeMap<IpAddr, Vec<(ServiceRequest, ServiceRef)>> = BTreeMap::new();
    for svc in &input.services {
        if !service::is_ours(svc, input.default_class) {
            continue;
        }
        let ips = service::status_ips(svc);
        if ips.is_empty() {
            continue;
        }
        let req = request_of(svc);
        let r = ServiceRef {
            key: req.key.clone(),
            uid: svc.uid(),
        };
        for ip in ips {
            by_ip.entry(ip).or_default().push((req.clone(), r.clone()));
        }
    }
    let slices: Vec<EndpointSlice> = input.slices.iter().map(|s| (**s).clone()).collect();
    let node = Node {
        name: &input.node,
        labels: &input.node_labels,
    };
    let mut vips = Vec::new();
    let mut index = Index::new();
    for (address, holders) in by_ip {
        // An address outside every valid pool is never announced: the
        // allocator re-assigns its Service.
        let Some(pool) = alloc.pool_of(address) else {
            continue;
        };
        let reqs: Vec<&ServiceRequest> = holders.iter().map(|(q, _)| q).collect();
        let here = eligibility(node, pool, &reqs, &col.advertisements, &slices);
        if here == Eligibility::NotAdvertised {
            continue;
        }
        let (interface, eligible) = place(address, &here, ifaces);
        vips.push(DesiredVip {
            vip: VipConfig { address, interface },
            eligible,
        });
        index.insert(
            address,
            VipInfo {
                pool: pool.name.clone(),
                services: holders.into_iter().map(|(_, r)| r).collect(),
                here,
            },
        );
    }
    (vips, index)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::iface::IfaceInfo;
    use flatlan_l2::mac::MacAddr;
    use serde_json::json;

    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn input(interfaces: &[&str], class: Option<&str>, ip: &str) -> Inputs {
        let mut spec = json!({"type": "LoadBalancer"});
        if let Some(c) = class {
            spec["loadBalancerClass"] = json!(c);
        }
        Inputs {
            node: "n1".into(),
            services: vec![parse(json!({
                "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
                "spec": spec,
                "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}))],
            flatlan_pools: vec![parse(json!({
                "apiVersion": "flatlan.dev/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": "lan"}, "spec": {"addresses": ["10.0.0.240/28"]}}))],
            flatlan_ads: vec![parse(json!({
                "apiVersion": "flatlan.dev/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"name": "a"}, "spec": {"interfaces": interfaces}}))],
            ..Default::default()
        }
    }

    fn ifaces() -> Ifaces {
        let i = |name: &str, net: &str| IfaceInfo {
            name: name.into(),
            index: 1,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            running: true,
            nets: vec![net.parse().unwrap()],
        };
        [i("eth0", "192.168.9.2/24"), i("eth1", "10.0.0.2/24")]
            .into_iter()
            .map(|i| (i.name.clone(), i))
            .collect()
    }

    fn one(input: &Inputs) -> (Option<String>, bool) {
        let (vips, index) = compute(input, &ifaces());
        assert_eq!(vips.len(), 1, "{vips:?}");
        let info = &index[&vips[0].vip.address];
        assert_eq!(info.pool, "lan");
        assert_eq!(info.services[0].key.to_string(), "shop/web");
        assert_eq!(info.services[0].uid.as_deref(), Some("u1"));
        (vips[0].vip.interface.clone(), vips[0].eligible)
    }

    #[test]
    fn interfaces_are_pinned_or_narrowed_by_subnet() {
        let class = Some("flatlan.dev/l2");
        assert_eq!(one(&input(&[], class, "10.0.0.241")), (None, true));
        assert_eq!(
            one(&input(&["wlan0"], class, "10.0.0.241")),
            (Some("wlan0".into()), true)
        );
        // A prefix or several names: the one whose subnet holds the VIP.
        assert_eq!(
            one(&input(&["eth*"], class, "10.0.0.241")),
            (Some("eth1".into()), true)
        );
        // Allowed interfaces none of which is on the VIP's subnet.
        assert_eq!(
            one(&input(&["eth0", "wlan*"], class, "10.0.0.241")),
            (None, false)
        );
    }

    #[test]
    fn only_our_services_and_pool_addresses_are_sent() {
        let (vips, _) = compute(&input(&[], Some("other.io/lb"), "10.0.0.241"), &ifaces());
        assert!(vips.is_empty());
        let (vips, _) = compute(&input(&[], None, "10.0.0.241"), &ifaces());
        assert!(vips.is_empty());
        let mut default = input(&[], None, "10.0.0.241");
        default.default_class = true;
        assert_eq!(one(&default), (None, true));
        // Outside every pool: never announced.
        let (vips, _) = compute(&input(&[], Some("flatlan.dev/l2"), "10.9.9.9"), &ifaces());
        assert!(vips.is_empty());
        // No advertisement covers it: nobody announces it.
        let mut bare = input(&[], Some("flatlan.dev/l2"), "10.0.0.241");
        bare.flatlan_ads.clear();
        assert!(compute(&bare, &ifaces()).0.is_empty());
    }
}
