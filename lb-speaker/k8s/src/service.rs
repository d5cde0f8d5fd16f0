//! A Kubernetes Service onto a [`ServiceRequest`]: which Services are
//! ours, what they ask for (`spec.loadBalancerIP`, MetalLB's annotations in
//! both spellings, ipFamilies/ipFamilyPolicy), and what their status
//! already holds.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use crate::error::{Error, Result};
use crate::metallb::ANNOTATION_PREFIXES;
use crate::model::{FamilyPolicy, Port, ServiceKey, ServiceRequest};
use crate::selector::Labels;

/// flatlan's `spec.loadBalancerClass`.
pub const LOAD_BALANCER_CLASS: &str = "flatlan.dev/l2";

/// Whether flatlan serves this Service: type LoadBalancer, and flatlan's
/// class, or no class when flatlan is the cluster's default.
pub fn is_ours(svc: &Service, flatlan_is_default: bool) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer")
        && match spec.load_balancer_class.as_deref() {
            Some(c) => c == LOAD_BALANCER_CLASS,
            None => flatlan_is_default,
        }
}

/// The addresses in `status.loadBalancer.ingress` (hostnames are skipped:
/// flatlan never writes them).
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .iter()
        .filter_map(|s| s.load_balancer.as_ref())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// The annotation `name` under either of MetalLB's prefixes; both set to
/// different values is an error, not a silent pick.
fn annotation(svc: &Service, name: &str) -> Result<Option<(String, String)>> {
    let mut found: Option<(String, String)> = None;
    for prefix in ANNOTATION_PREFIXES {
        let key = format!("{prefix}/{name}");
        let Some(v) = svc.annotations().get(&key) else {
            continue;
        };
        let v = v.trim().to_string();
        match &found {
            Some((k, old)) if *old != v => {
                return Err(Error::ConflictingRequest {
                    a: format!("{k}: {old:?}"),
                    b: format!("{key}: {v:?}"),
                })
            }
            Some(_) => {}
            None => found = Some((key, v)),
        }
    }
    Ok(found)
}

/// What the Service asks the allocator for. `namespace_labels` are its
/// Namespace's labels (for pools' namespaceSelectors).
pub fn request(svc: &Service, namespace_labels: &Labels) -> Result<ServiceRequest> {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut requested = Vec::new();
    let from_annotation = annotation(svc, "loadBalancerIPs")?;
    if let Some((key, v)) = &from_annotation {
        for part in v.split(',') {
            let ip: IpAddr = part.trim().parse().map_err(|_| Error::BadAnnotation {
                key: key.clone(),
                value: v.clone(),
                why: format!("has {:?}, which is not an IP address", part.trim()),
            })?;
            requested.push(ip);
        }
        let v4 = requested.iter().filter(|i| i.is_ipv4()).count();
        if v4 > 1 || requested.len() - v4 > 1 {
            return Err(Error::BadAnnotation {
                key: key.clone(),
                value: v.clone(),
                why: "lists more than one address of a family; list at most one IPv4 and one IPv6 address".into(),
            });
        }
    }
    if let Some(lb) = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()) {
        let ip: IpAddr = lb.parse().map_err(|_| Error::BadAnnotation {
            key: "spec.loadBalancerIP".into(),
            value: lb.into(),
            why: "is not an IP address".into(),
        })?;
        match &from_annotation {
            Some((key, v)) if requested != [ip] => {
                return Err(Error::ConflictingRequest {
                    a: format!("spec.loadBalancerIP: {lb:?}"),
                    b: format!("{key}: {v:?}"),
                })
            }
            Some(_) => {}
            None => requested.push(ip),
        }
    }
    let policy = match spec.ip_family_policy.as_deref() {
        None | Some("SingleStack") => FamilyPolicy::SingleStack,
        Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
        Some(other) => {
            return Err(Error::BadAnnotation {
                key: "spec.ipFamilyPolicy".into(),
                value: other.into(),
                why: "is not SingleStack, PreferDualStack or RequireDualStack".into(),
            })
        }
    };
    // The API server fills ipFamilies in; only hand-made objects lack it.
    let primary_v4 = !matches!(
        spec.ip_families.as_ref().and_then(|f| f.first()),
        Some(f) if f == "IPv6"
    );
    let non_empty = |o: Option<(String, String)>| o.map(|(_, v)| v).filter(|v| !v.is_empty());
    Ok(ServiceRequest {
        key: ServiceKey {
            namespace: svc.namespace().unwrap_or_else(|| "default".into()),
            name: svc.name_any(),
        },
        created: svc
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
        labels: svc.labels().clone(),
        namespace_labels: namespace_labels.clone(),
        requested,
        pool: non_empty(annotation(svc, "address-pool")?),
        sharing_key: non_empty(annotation(svc, "allow-shared-ip")?),
        policy,
        primary_v4,
        ports: spec
            .ports
            .iter()
            .flatten()
            .map(|p| Port {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: p.port,
            })
            .collect(),
        local: spec.external_traffic_policy.as_deref() == Some("Local"),
        selector: spec.selector.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests;
